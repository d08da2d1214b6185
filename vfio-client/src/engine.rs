//! The vgpu engine (docs/engine-abi.md) driven through VFIO: a ring driver over a
//! [`Device`] and a VRAM mapping, fences, interrupts and engine reset.
//!
//! * The command encoding ([`Cmd`], [`RawCmd`], [`ErrorCode`], [`EngineRegs`]) is the
//!   `vgpu-engine-abi` crate's; it is re-exported here so `vgpu_vfio::engine::Cmd` keeps
//!   working.
//! * [`Engine`] configures one instance's ring, writes commands into it through the VRAM
//!   mmap, advances TAIL, rings the DOORBELL, reads HEAD/FENCE/STATUS/ERROR and waits
//!   for fences (polling or through an MSI eventfd).
//! * [`DeviceAccess`] is the seam under it: the register file, and the device's
//!   interrupt. [`Device`] (VFIO, registers by pread/pwrite) and [`MsiDevice`] (VFIO
//!   with an MSI eventfd) implement it here; a VM's guest driver implements it in
//!   the engine client (`guest-driver/client`), so the same ring code runs over VFIO
//!   in a host and over the guest driver inside a VM.
//! * [`reference`](crate::reference) (`vgpu_engine_abi::reference`) has the reference
//!   math (CHECKSUM, GEMM) and a reference validator for checking what the engine did.

use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::abi::engine as reg;
use crate::device::{irq, region, Device};
use crate::error::{Error, Result};
use crate::mmap::MappedRegion;
use vmm_sys_util::eventfd::EventFd;

pub use vgpu_engine_abi::cmd::{error_name, Cmd, EngineRegs, ErrorCode, RawCmd};

/// How long [`Engine::submit`] waits for ring space before giving up.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// MSI address programmed by [`Engine::enable_msi`] (the x86 LAPIC window; any value
/// works for an emulated device).
pub const MSI_ADDRESS: u32 = 0xfee0_0000;

/// PCI command register bits set by [`Engine::enable_msi`]: MEMORY | MASTER.
const PCI_COMMAND_MEM_MASTER: u16 = 0x2 | 0x4;

/// How an engine driver reaches one device: its register file (BAR2) and its
/// interrupt. VRAM (BAR0) is a [`MappedRegion`] whoever maps it.
pub trait DeviceAccess {
    /// Read a 32-bit register (BAR2 offset).
    fn read_reg(&self, off: u64) -> Result<u32>;
    /// Write a 32-bit register (BAR2 offset).
    fn write_reg(&self, off: u64, v: u32) -> Result<()>;
    /// Wait up to `timeout` for the device's interrupt; returns how many arrived since
    /// the last call (0: none before the timeout).
    fn wait_irq(&self, timeout: Duration) -> Result<u64>;
}

impl DeviceAccess for Device {
    fn read_reg(&self, off: u64) -> Result<u32> {
        self.read_u32(region::BAR2, off)
    }

    fn write_reg(&self, off: u64, v: u32) -> Result<()> {
        self.write_u32(region::BAR2, off, v)
    }

    /// A bare [`Device`] has no interrupt eventfd: use [`MsiDevice`].
    fn wait_irq(&self, _timeout: Duration) -> Result<u64> {
        Err(Error::InvalidArgument(
            "no interrupt eventfd on a bare Device (use MsiDevice)".into(),
        ))
    }
}

/// A VFIO device with its MSI routed to an eventfd ([`MsiDevice::new`] programs it).
#[derive(Debug)]
pub struct MsiDevice {
    dev: Arc<Device>,
    efd: EventFd,
}

impl MsiDevice {
    /// Enable MSI on `dev` (command register, the capability, an eventfd on the MSI
    /// index); IRQ_MASK is left to the engine driver.
    pub fn new(dev: Arc<Device>) -> Result<Self> {
        let efd = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| Error::Ioctl {
            name: "eventfd",
            source,
        })?;
        program_msi(&dev, &efd)?;
        Ok(MsiDevice { dev, efd })
    }

    /// The VFIO device.
    pub fn vfio(&self) -> &Arc<Device> {
        &self.dev
    }
}

impl DeviceAccess for MsiDevice {
    fn read_reg(&self, off: u64) -> Result<u32> {
        self.dev.read_reg(off)
    }

    fn write_reg(&self, off: u64, v: u32) -> Result<()> {
        self.dev.write_reg(off, v)
    }

    fn wait_irq(&self, timeout: Duration) -> Result<u64> {
        if !wait_eventfd_ready(&self.efd, timeout)? {
            return Ok(0);
        }
        // A non-blocking eventfd may have been drained by someone else in between.
        Ok(self.efd.read().unwrap_or(0))
    }
}

/// Command register MEMORY|MASTER, the MSI capability programmed and enabled, `efd`
/// on the MSI index.
fn program_msi(dev: &Device, efd: &EventFd) -> Result<()> {
    let cap = u64::from(crate::abi::MSI_CAP_OFFSET);
    let cmd = dev.config_read_u16(0x04)?;
    dev.config_write_u16(0x04, cmd | PCI_COMMAND_MEM_MASTER)?;
    let ctl = dev.config_read_u16(cap + 2)?;
    dev.config_write_u32(cap + 4, MSI_ADDRESS)?;
    // 64-bit capability: address high at +8, data at +12.
    dev.config_write_u32(cap + 8, 0)?;
    dev.config_write_u16(cap + 12, 0x4041)?;
    dev.config_write_u16(cap + 2, ctl | 1)?;
    dev.set_irq_eventfds(irq::MSI, 0, &[efd.as_raw_fd()])
}

/// A driver for one instance's engine ring.
///
/// The ring lives in the instance's VRAM; commands are written through `vram`, a shared
/// mapping of region 0 (BAR0) that must cover the ring. The driver keeps a software
/// TAIL (the next free slot) and a cached HEAD to know the free space; registers are
/// accessed through [`DeviceAccess`] (for a [`Device`]: its BAR2 region, pread/pwrite).
#[derive(Debug)]
pub struct Engine<A: DeviceAccess = Device> {
    dev: Arc<A>,
    vram: Arc<MappedRegion>,
    base: u64,
    size: u64,
    tail: u64,
    head: u64,
    next_seq: u64,
    /// VRAM offset of the TAIL shadow word while it is enabled ([`Engine::enable_tail_shadow`]).
    tail_shadow: Option<u64>,
    /// VRAM offset where fenced submissions' FENCEs write their seqno
    /// ([`Engine::set_fence_write`]).
    fence_write: Option<u64>,
    /// IRQ_EDGE as last written.
    irq_edge: u32,
}

impl<A: DeviceAccess> Engine<A> {
    /// A driver over `dev` and `vram` (a mapping of region 0). No register is touched.
    pub fn new(dev: Arc<A>, vram: Arc<MappedRegion>) -> Result<Self> {
        if vram.region_index() != region::BAR0 {
            return Err(Error::InvalidArgument(format!(
                "engine needs a mapping of region 0, not {}",
                vram.region_index()
            )));
        }
        Ok(Engine {
            dev,
            vram,
            base: 0,
            size: 0,
            tail: 0,
            head: 0,
            next_seq: 1,
            tail_shadow: None,
            fence_write: None,
            irq_edge: 0,
        })
    }

    /// The device.
    pub fn device(&self) -> &Arc<A> {
        &self.dev
    }

    /// The VRAM mapping.
    pub fn vram(&self) -> &Arc<MappedRegion> {
        &self.vram
    }

    /// Ring base as last configured.
    pub fn ring_base(&self) -> u64 {
        self.base
    }

    /// Ring size as last configured.
    pub fn ring_size(&self) -> u64 {
        self.size
    }

    /// Slots in the ring (commands it can hold, one kept free).
    pub fn ring_slots(&self) -> u64 {
        self.size / reg::CMD_SIZE
    }

    /// The software TAIL (where the next command goes).
    pub fn sw_tail(&self) -> u64 {
        self.tail
    }

    /// Set the software TAIL without touching the register (for tests that place
    /// commands by hand).
    pub fn set_sw_tail(&mut self, tail: u64) {
        self.tail = tail;
    }

    /// Set the next fence sequence number (after the FENCE register was brought below
    /// it, e.g. by a FENCE with a small seqno).
    pub fn set_next_seq(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    /// The next fence sequence number [`Engine::next_fence`] will use.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Read a 32-bit engine register (BAR2 offset).
    pub fn read_reg(&self, off: u64) -> Result<u32> {
        self.dev.read_reg(off)
    }

    /// Write a 32-bit engine register (BAR2 offset).
    pub fn write_reg(&self, off: u64, v: u32) -> Result<()> {
        self.dev.write_reg(off, v)
    }

    /// Write RING_BASE_LO/HI and RING_SIZE (no checks: bad values are the device's
    /// business) and remember them.
    pub fn configure(&mut self, base: u64, size: u64) -> Result<()> {
        self.write_reg(reg::RING_BASE_LO, base as u32)?;
        self.write_reg(reg::RING_BASE_HI, (base >> 32) as u32)?;
        self.write_reg(reg::RING_SIZE, size as u32)?;
        self.base = base;
        self.size = size;
        Ok(())
    }

    /// Set RING_CTL.ENABLE (the device resets HEAD = TAIL = 0), and make the next
    /// fence seqno larger than the FENCE register (which survives ENGINE_RESET).
    pub fn enable(&mut self) -> Result<()> {
        self.write_reg(reg::RING_CTL, reg::CTL_ENABLE)?;
        self.tail = 0;
        self.head = 0;
        self.sync_seq()
    }

    /// Make [`Engine::next_fence`] continue above the current FENCE register (after a
    /// caller submitted FENCEs with seqnos of its own).
    pub fn sync_seq(&mut self) -> Result<()> {
        let f = self.fence_value()?;
        self.next_seq = self.next_seq.max(f.saturating_add(1));
        Ok(())
    }

    /// Clear RING_CTL.ENABLE.
    pub fn disable(&mut self) -> Result<()> {
        self.write_reg(reg::RING_CTL, 0)
    }

    /// Configure and enable, then check STATUS: ENABLED set, ERROR clear.
    pub fn setup(&mut self, base: u64, size: u64) -> Result<()> {
        self.configure(base, size)?;
        self.enable()?;
        let st = self.status()?;
        if st & reg::STATUS_ERROR != 0 || st & reg::STATUS_ENABLED == 0 {
            return Err(self.stopped_error(st));
        }
        Ok(())
    }

    /// Write ENGINE_RESET = 1 (ring stopped and disabled, HEAD = TAIL = 0).
    pub fn reset(&mut self) -> Result<()> {
        self.write_reg(reg::ENGINE_RESET, 1)?;
        self.tail = 0;
        self.head = 0;
        Ok(())
    }

    /// ENGINE_RESET, then re-enable the ring with the remembered base and size.
    pub fn recover(&mut self) -> Result<()> {
        self.reset()?;
        let (b, s) = (self.base, self.size);
        self.setup(b, s)
    }

    /// STATUS.
    pub fn status(&self) -> Result<u32> {
        self.read_reg(reg::STATUS)
    }

    /// ERROR.
    pub fn error(&self) -> Result<u32> {
        self.read_reg(reg::ERROR)
    }

    /// ERROR_HEAD.
    pub fn error_head(&self) -> Result<u32> {
        self.read_reg(reg::ERROR_HEAD)
    }

    /// RING_HEAD (and refresh the cached HEAD).
    pub fn head(&mut self) -> Result<u64> {
        let h = u64::from(self.read_reg(reg::RING_HEAD)?);
        self.head = h;
        Ok(h)
    }

    /// RING_TAIL as the device has it.
    pub fn tail_reg(&self) -> Result<u32> {
        self.read_reg(reg::RING_TAIL)
    }

    /// FENCE (64 bits, read HI/LO/HI so a carry between the halves is not torn).
    pub fn fence_value(&self) -> Result<u64> {
        loop {
            let hi = self.read_reg(reg::FENCE_HI)?;
            let lo = self.read_reg(reg::FENCE_LO)?;
            if self.read_reg(reg::FENCE_HI)? == hi {
                return Ok(u64::from(hi) << 32 | u64::from(lo));
            }
        }
    }

    /// IRQ_STATUS.
    pub fn irq_status(&self) -> Result<u32> {
        self.read_reg(reg::IRQ_STATUS)
    }

    /// Clear IRQ_STATUS bits (write 1 to clear).
    pub fn ack_irq(&self, bits: u32) -> Result<()> {
        self.write_reg(reg::IRQ_STATUS, bits)
    }

    /// Set IRQ_MASK.
    pub fn set_irq_mask(&self, bits: u32) -> Result<()> {
        self.write_reg(reg::IRQ_MASK, bits)
    }

    /// CMDS_DONE.
    pub fn cmds_done(&self) -> Result<u32> {
        self.read_reg(reg::CMDS_DONE)
    }

    /// Every register once.
    pub fn regs(&self) -> Result<EngineRegs> {
        Ok(EngineRegs {
            base: u64::from(self.read_reg(reg::RING_BASE_HI)?) << 32
                | u64::from(self.read_reg(reg::RING_BASE_LO)?),
            size: self.read_reg(reg::RING_SIZE)?,
            head: self.read_reg(reg::RING_HEAD)?,
            tail: self.read_reg(reg::RING_TAIL)?,
            ctl: self.read_reg(reg::RING_CTL)?,
            status: self.read_reg(reg::STATUS)?,
            error: self.read_reg(reg::ERROR)?,
            error_head: self.read_reg(reg::ERROR_HEAD)?,
            fence: self.fence_value()?,
            irq_status: self.read_reg(reg::IRQ_STATUS)?,
            irq_mask: self.read_reg(reg::IRQ_MASK)?,
            cmds_done: self.read_reg(reg::CMDS_DONE)?,
        })
    }

    fn stopped_error(&self, status: u32) -> Error {
        let code = self.error().unwrap_or(u32::MAX);
        Error::EngineStopped {
            code,
            name: error_name(code),
            head: self.error_head().unwrap_or(u32::MAX),
            status,
        }
    }

    /// Fail with [`Error::EngineStopped`] if STATUS.ERROR is set.
    pub fn check(&self) -> Result<u32> {
        let st = self.status()?;
        if st & reg::STATUS_ERROR != 0 {
            return Err(self.stopped_error(st));
        }
        Ok(st)
    }

    /// Free slots by the cached HEAD (one slot always stays free).
    fn free_cached(&self) -> u64 {
        if self.size == 0 {
            return 0;
        }
        let used = (self.tail + self.size - self.head) % self.size;
        (self.size - used) / reg::CMD_SIZE - 1
    }

    /// Free slots now (reads HEAD).
    pub fn free_slots(&mut self) -> Result<u64> {
        self.head()?;
        Ok(self.free_cached())
    }

    /// Commands written but not yet read by the engine, by HEAD (reads HEAD).
    pub fn pending(&mut self) -> Result<u64> {
        self.head()?;
        if self.size == 0 {
            return Ok(0);
        }
        Ok((self.tail + self.size - self.head) % self.size / reg::CMD_SIZE)
    }

    /// Write `cmd` at ring offset `ring_off` (no TAIL change, no space check).
    pub fn write_at(&self, ring_off: u64, cmd: &Cmd) -> Result<()> {
        self.write_raw_at(ring_off, &cmd.raw())
    }

    /// Write raw fields at ring offset `ring_off`.
    pub fn write_raw_at(&self, ring_off: u64, raw: &RawCmd) -> Result<()> {
        if ring_off
            .checked_add(reg::CMD_SIZE)
            .is_none_or(|e| e > self.size)
        {
            return Err(Error::OutOfBounds {
                offset: ring_off,
                len: reg::CMD_SIZE,
                size: self.size,
            });
        }
        let at = self.map_off(self.base + ring_off)?;
        self.vram.write_u64_slice(at, &raw.words())
    }

    /// Read the command at ring offset `ring_off` back from VRAM.
    pub fn read_at(&self, ring_off: u64) -> Result<RawCmd> {
        let mut w = [0u64; 8];
        let at = self.map_off(self.base + ring_off)?;
        self.vram.read_u64_slice(at, &mut w)?;
        Ok(RawCmd::from_words(&w))
    }

    /// Mapping offset of VRAM offset `vram_off`.
    pub fn map_off(&self, vram_off: u64) -> Result<u64> {
        vram_off
            .checked_sub(self.vram.region_offset())
            .ok_or(Error::OutOfBounds {
                offset: vram_off,
                len: 0,
                size: self.vram.len(),
            })
    }

    /// Put `cmd` at the software TAIL and advance it; [`Error::RingFull`] if no slot is
    /// free (HEAD is re-read before giving up). Returns the ring offset used.
    pub fn push(&mut self, cmd: &Cmd) -> Result<u64> {
        if self.size < reg::CMD_SIZE {
            return Err(Error::InvalidArgument("ring not configured".into()));
        }
        if self.free_cached() == 0 {
            self.head()?;
            if self.free_cached() == 0 {
                return Err(Error::RingFull {
                    slots: self.ring_slots(),
                });
            }
        }
        let at = self.tail;
        self.write_at(at, cmd)?;
        self.tail = (self.tail + reg::CMD_SIZE) % self.size;
        Ok(at)
    }

    /// Publish the software TAIL, then ring DOORBELL: through RING_TAIL, or, with the
    /// TAIL shadow enabled, by storing it in the shadow word in VRAM (no register
    /// write: in a VM no exit for it).
    pub fn kick(&self) -> Result<()> {
        self.publish_tail()?;
        self.write_reg(reg::DOORBELL, 1)
    }

    /// Publish the software TAIL without ringing the doorbell: write RING_TAIL, or with
    /// the TAIL shadow enabled store it in the shadow word (the next DOORBELL reads it).
    pub fn publish_tail(&self) -> Result<()> {
        // The commands went through a shared mapping; make them visible before the
        // device learns about them.
        fence(Ordering::SeqCst);
        match self.tail_shadow {
            Some(off) => {
                let at = self.map_off(off)?;
                self.vram.write_u32(at, self.tail as u32)?;
                fence(Ordering::SeqCst);
                Ok(())
            }
            None => self.write_reg(reg::RING_TAIL, self.tail as u32),
        }
    }

    /// Turn the TAIL shadow on with its word at VRAM offset `off` (4-aligned, inside
    /// VRAM and the mapping): [`Engine::kick`] then stores TAIL there and rings
    /// DOORBELL, which reads it (docs/engine-abi.md, "TAIL shadow"). The word is set
    /// to the software TAIL first. Returns false, and changes nothing, on a device
    /// without the shadow (the register reads back without ENABLE); an error if the
    /// device refused the offset (the ring is then stopped with BAD_RING).
    pub fn enable_tail_shadow(&mut self, off: u64) -> Result<bool> {
        let at = self.map_off(off)?;
        self.vram.write_u32(at, self.tail as u32)?;
        fence(Ordering::SeqCst);
        self.write_reg(reg::TAIL_SHADOW_HI, (off >> 32) as u32)?;
        self.write_reg(reg::TAIL_SHADOW_LO, off as u32 | reg::SHADOW_ENABLE)?;
        if self.read_reg(reg::TAIL_SHADOW_LO)? & reg::SHADOW_ENABLE == 0 {
            let st = self.status()?;
            if st & reg::STATUS_ERROR != 0 {
                return Err(self.stopped_error(st));
            }
            return Ok(false);
        }
        self.tail_shadow = Some(off);
        Ok(true)
    }

    /// Turn the TAIL shadow off (TAIL_SHADOW_LO = 0): kicks write RING_TAIL again.
    pub fn disable_tail_shadow(&mut self) -> Result<()> {
        self.write_reg(reg::TAIL_SHADOW_LO, 0)?;
        self.tail_shadow = None;
        Ok(())
    }

    /// The TAIL shadow's VRAM offset while [`Engine::kick`] uses it.
    pub fn tail_shadow(&self) -> Option<u64> {
        self.tail_shadow
    }

    /// Make [`Engine::submit_fenced`]'s FENCEs also write their seqno at VRAM offset
    /// `off` (8-aligned, inside the mapping), and [`Engine::wait_fence_msi`] read it
    /// there instead of FENCE_LO/HI (no register read). `None`: back to the register.
    pub fn set_fence_write(&mut self, off: Option<u64>) -> Result<()> {
        if let Some(o) = off {
            let at = self.map_off(o)?;
            // The FENCE register survives ENGINE_RESET; the word starts where it is.
            let f = self.fence_value()?;
            self.vram.write_u64(at, f)?;
        }
        self.fence_write = off;
        Ok(())
    }

    /// Write IRQ_EDGE (sources signalled at each event, not latched) and read it back;
    /// returns whether the device took it (false on a device without IRQ_EDGE).
    pub fn set_irq_edge(&mut self, bits: u32) -> Result<bool> {
        self.write_reg(reg::IRQ_EDGE, bits)?;
        let got = self.read_reg(reg::IRQ_EDGE)?;
        self.irq_edge = got;
        Ok(got == bits)
    }

    /// The last completed fence as [`Engine::wait_fence_msi`] sees it: the VRAM word of
    /// [`Engine::set_fence_write`] if set, else the FENCE register.
    fn fence_seen(&self) -> Result<u64> {
        match self.fence_write {
            Some(o) => self.vram.read_u64(self.map_off(o)?),
            None => self.fence_value(),
        }
    }

    /// Push every command (kicking and waiting for space when the ring is full) and
    /// kick. Fails early if the ring stops with an error.
    pub fn submit(&mut self, cmds: &[Cmd]) -> Result<()> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        for c in cmds {
            loop {
                match self.push(c) {
                    Ok(_) => break,
                    Err(Error::RingFull { .. }) => {
                        self.kick()?;
                        self.check()?;
                        if start.elapsed() > SUBMIT_TIMEOUT {
                            return Err(Error::Timeout {
                                what: "ring space".into(),
                                waited: start.elapsed(),
                            });
                        }
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.kick()
    }

    /// A FENCE with the next sequence number (IRQ flag as asked, WRITE when `write_addr`
    /// is given); returns it and the seqno.
    pub fn next_fence(&mut self, irq: bool, write_addr: Option<u64>) -> (Cmd, u64) {
        let seqno = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        (
            Cmd::Fence {
                seqno,
                addr: write_addr.unwrap_or(0),
                irq,
                write: write_addr.is_some(),
            },
            seqno,
        )
    }

    /// Submit `cmds` followed by a FENCE (writing its seqno to VRAM too after
    /// [`Engine::set_fence_write`]); returns the fence's seqno.
    pub fn submit_fenced(&mut self, cmds: &[Cmd], irq: bool) -> Result<u64> {
        let (f, seq) = self.next_fence(irq, self.fence_write);
        let mut v = Vec::with_capacity(cmds.len() + 1);
        v.extend_from_slice(cmds);
        v.push(f);
        self.submit(&v)?;
        Ok(seq)
    }

    /// Poll until FENCE ≥ `seq`; [`Error::EngineStopped`] if the ring stops first,
    /// [`Error::Timeout`] after `timeout`. Returns the time waited.
    pub fn wait_fence(&self, seq: u64, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            if self.fence_value()? >= seq {
                return Ok(start.elapsed());
            }
            self.check()?;
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("fence {seq} (FENCE is {})", self.fence_value()?),
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// Poll until STATUS.BUSY clears (or ERROR sets); returns STATUS.
    pub fn wait_idle(&self, timeout: Duration) -> Result<u32> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            let st = self.status()?;
            if st & reg::STATUS_BUSY == 0 || st & reg::STATUS_ERROR != 0 {
                return Ok(st);
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("engine idle (STATUS {st:#x})"),
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// Poll until STATUS.ERROR sets; returns (ERROR, ERROR_HEAD, STATUS).
    pub fn wait_stopped(&self, timeout: Duration) -> Result<(u32, u32, u32)> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            let st = self.status()?;
            if st & reg::STATUS_ERROR != 0 {
                return Ok((self.error()?, self.error_head()?, st));
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("ring to stop (STATUS {st:#x})"),
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// Poll until FENCE ≥ `seq`, sleeping on `efd` (MSI with IRQ_FENCE unmasked; the
    /// FENCE command needs its IRQ flag). IRQ_STATUS.FENCE is acknowledged before each
    /// check so a completion between the check and the sleep still signals.
    pub fn wait_fence_irq(&self, efd: &EventFd, seq: u64, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            self.ack_irq(reg::IRQ_FENCE)?;
            if self.fence_value()? >= seq {
                return Ok(start.elapsed());
            }
            self.check()?;
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!("fence {seq} by interrupt"),
                    waited: start.elapsed(),
                });
            }
            wait_eventfd(efd, left)?;
        }
    }

    /// Wait for FENCE ≥ `seq` by interrupt alone: sleep in [`DeviceAccess::wait_irq`]
    /// and read FENCE (or its VRAM word, [`Engine::set_fence_write`]) only when an
    /// interrupt came; once it is reached, acknowledge IRQ_STATUS.FENCE (unless FENCE
    /// is in IRQ_EDGE: nothing latched). With one IRQ fence outstanding at a time
    /// (IRQ_FENCE the only bit unmasked, IRQ_STATUS clear before it), every such fence
    /// raises exactly one interrupt: this returns (time waited, interrupts consumed),
    /// and a device whose interrupts never arrive gives [`Error::Timeout`] even though
    /// the fence passed.
    pub fn wait_fence_msi(&self, seq: u64, timeout: Duration) -> Result<(Duration, u64)> {
        let start = Instant::now();
        let mut irqs = 0;
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!(
                        "an interrupt for fence {seq} (FENCE is {}, IRQ_STATUS {:#x}, {irqs} interrupt(s) seen)",
                        self.fence_value()?,
                        self.irq_status()?
                    ),
                    waited: start.elapsed(),
                });
            }
            let n = self.dev.wait_irq(left)?;
            if n == 0 {
                continue;
            }
            irqs += n;
            if self.fence_seen()? >= seq {
                if self.irq_edge & reg::IRQ_FENCE == 0 {
                    self.ack_irq(reg::IRQ_FENCE)?;
                }
                return Ok((start.elapsed(), irqs));
            }
            self.check()?;
        }
    }
}

impl Engine<Device> {
    /// Route the instance's interrupt to `efd` through MSI: set MEMORY|MASTER in the
    /// command register, program and enable the MSI capability, attach the eventfd to
    /// the MSI index, and unmask `mask` in IRQ_MASK.
    pub fn enable_msi(&self, efd: &EventFd, mask: u32) -> Result<()> {
        program_msi(&self.dev, efd)?;
        self.set_irq_mask(mask)
    }
}

/// Wait until `efd` is readable or `timeout` passes; consume its count. Returns whether
/// it fired.
pub fn wait_eventfd(efd: &EventFd, timeout: Duration) -> Result<bool> {
    if !wait_eventfd_ready(efd, timeout)? {
        return Ok(false);
    }
    // A non-blocking eventfd may have been drained by someone else in between.
    Ok(efd.read().is_ok())
}

/// Wait until `efd` is readable or `timeout` passes (EINTR counts as not yet).
fn wait_eventfd_ready(efd: &EventFd, timeout: Duration) -> Result<bool> {
    poll_readable(efd.as_raw_fd(), timeout, "poll(eventfd)")
}

/// Wait until `fd` is readable (or hung up) or `timeout` passes; EINTR counts as not yet.
pub fn poll_readable(
    fd: std::os::fd::RawFd,
    timeout: Duration,
    what: &'static str,
) -> Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one valid pollfd that outlives the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(Error::Ioctl {
            name: what,
            source: e,
        });
    }
    Ok(r > 0)
}
