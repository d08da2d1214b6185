//! The vgpu engine (docs/engine-abi.md): command encoding, a ring driver over a
//! [`Device`] and a VRAM mapping, fences, interrupts and engine reset.
//!
//! * [`Cmd`] builds the eight commands and encodes them as the 64-byte little-endian
//!   `struct vgpu_cmd`; [`RawCmd`] is any 64 bytes (for fuzzing and bad-input tests).
//! * [`Engine`] configures one instance's ring, writes commands into it through the VRAM
//!   mmap, advances TAIL, rings the DOORBELL, reads HEAD/FENCE/STATUS/ERROR and waits
//!   for fences (polling or through an MSI eventfd).
//! * [`reference`](crate::reference) has the reference math (CHECKSUM, GEMM) and a
//!   reference validator for checking what the engine did.

use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::abi::engine as reg;
use crate::device::{irq, region, Device};
use crate::error::{Error, Result};
use crate::mmap::MappedRegion;
use vmm_sys_util::eventfd::EventFd;

/// An ERROR register value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum ErrorCode {
    /// No error.
    None = 0,
    /// Unknown opcode.
    BadOpcode = 1,
    /// Reserved bits or fields set.
    BadFlags = 2,
    /// An operand range is outside the instance's VRAM.
    OutOfRange = 3,
    /// Misaligned operand.
    BadAlign = 4,
    /// Zero, too large, or arithmetic overflow.
    BadSize = 5,
    /// Misconfigured ring, bad TAIL, bad JUMP target.
    BadRing = 6,
    /// BLIT without a displayable mode or outside it.
    BadMode = 7,
    /// Engine time without completing a FENCE exceeded watchdog_ms.
    Watchdog = 8,
}

impl ErrorCode {
    /// Every code, in register order.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::None,
        ErrorCode::BadOpcode,
        ErrorCode::BadFlags,
        ErrorCode::OutOfRange,
        ErrorCode::BadAlign,
        ErrorCode::BadSize,
        ErrorCode::BadRing,
        ErrorCode::BadMode,
        ErrorCode::Watchdog,
    ];

    /// The code for a register value, if it is one the ABI defines.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// The ABI's name (`BAD_OPCODE`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "NONE",
            ErrorCode::BadOpcode => "BAD_OPCODE",
            ErrorCode::BadFlags => "BAD_FLAGS",
            ErrorCode::OutOfRange => "OUT_OF_RANGE",
            ErrorCode::BadAlign => "BAD_ALIGN",
            ErrorCode::BadSize => "BAD_SIZE",
            ErrorCode::BadRing => "BAD_RING",
            ErrorCode::BadMode => "BAD_MODE",
            ErrorCode::Watchdog => "WATCHDOG",
        }
    }

    /// A one-bit mask for sets of codes.
    pub const fn bit(self) -> u16 {
        1 << self as u32
    }
}

/// The name of an ERROR register value (`"code 12"` if the ABI does not define it).
pub fn error_name(v: u32) -> &'static str {
    ErrorCode::from_u32(v).map_or("undefined", ErrorCode::name)
}

/// Any 64-byte command, as laid out in the ring (`struct vgpu_cmd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct RawCmd {
    /// Bits 0-7 opcode, 8-15 flags, 16-31 must be 0.
    pub op: u32,
    /// Must be 0.
    pub rsvd: u32,
    /// Operands.
    pub args: [u64; 7],
}

impl RawCmd {
    /// A command with `opcode`, `flags` and `args`, reserved fields zero.
    pub const fn new(opcode: u8, flags: u8, args: [u64; 7]) -> Self {
        RawCmd {
            op: opcode as u32 | (flags as u32) << 8,
            rsvd: 0,
            args,
        }
    }

    /// The opcode byte.
    pub const fn opcode(&self) -> u8 {
        (self.op & 0xff) as u8
    }

    /// The flags byte.
    pub const fn flags(&self) -> u8 {
        ((self.op >> 8) & 0xff) as u8
    }

    /// Bits 16-31 of `op` (must be 0).
    pub const fn op_high(&self) -> u16 {
        (self.op >> 16) as u16
    }

    /// Little-endian encoding.
    pub fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.op.to_le_bytes());
        b[4..8].copy_from_slice(&self.rsvd.to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        b
    }

    /// The encoding as eight little-endian u64 words (what is written to VRAM).
    pub fn words(&self) -> [u64; 8] {
        let mut w = [0u64; 8];
        w[0] = u64::from(self.op) | u64::from(self.rsvd) << 32;
        w[1..].copy_from_slice(&self.args);
        w
    }

    /// Decode 64 little-endian bytes.
    pub fn decode(b: &[u8; 64]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut args = [0u64; 7];
        for (i, a) in args.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[8 + 8 * i..16 + 8 * i]);
            *a = u64::from_le_bytes(w);
        }
        RawCmd {
            op: u32_at(0),
            rsvd: u32_at(4),
            args,
        }
    }

    /// Decode eight u64 words (as read from VRAM).
    pub fn from_words(w: &[u64; 8]) -> Self {
        let mut args = [0u64; 7];
        args.copy_from_slice(&w[1..]);
        RawCmd {
            op: w[0] as u32,
            rsvd: (w[0] >> 32) as u32,
            args,
        }
    }
}

/// One engine command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmd {
    /// Nothing.
    Nop,
    /// `dst[0..len) = value` repeated (u32 words).
    Fill {
        /// VRAM offset (4-aligned).
        dst: u64,
        /// Bytes (multiple of 4).
        len: u64,
        /// Value of every u32 word.
        value: u32,
    },
    /// memmove within the instance's VRAM.
    Copy {
        /// Destination offset.
        dst: u64,
        /// Source offset.
        src: u64,
        /// Bytes.
        len: u64,
    },
    /// FNV-1a-64 over the u32 words of `src[0..len)`, written as a u64 at `dst`.
    Checksum {
        /// Source offset (4-aligned).
        src: u64,
        /// Bytes (multiple of 4).
        len: u64,
        /// Where the u64 goes (8-aligned).
        dst: u64,
    },
    /// `C[m×n] = A[m×k]·B[k×n]` over u32, wrapping, row-major.
    Gemm {
        /// Offset of A.
        a: u64,
        /// Offset of B.
        b: u64,
        /// Offset of C.
        c: u64,
        /// Rows of A and C.
        m: u64,
        /// Columns of B and C.
        n: u64,
        /// Columns of A, rows of B.
        k: u64,
    },
    /// Copy a pixel rectangle into the bochs scanout.
    Blit {
        /// Source offset.
        src: u64,
        /// Source bytes per row.
        src_stride: u64,
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
        /// Destination x in the scanout.
        dst_x: u64,
        /// Destination y in the scanout.
        dst_y: u64,
    },
    /// FENCE = seqno; optionally write it to VRAM and raise IRQ_STATUS.FENCE.
    Fence {
        /// Sequence number.
        seqno: u64,
        /// VRAM offset for the WRITE flag (8-aligned); 0 without WRITE.
        addr: u64,
        /// Flag IRQ.
        irq: bool,
        /// Flag WRITE.
        write: bool,
    },
    /// HEAD = target.
    Jump {
        /// Ring offset (64-aligned, < RING_SIZE).
        target: u64,
    },
    /// Any 64 bytes.
    Raw(RawCmd),
}

impl Cmd {
    /// A FENCE without flags.
    pub const fn fence(seqno: u64) -> Self {
        Cmd::Fence {
            seqno,
            addr: 0,
            irq: false,
            write: false,
        }
    }

    /// The command as raw fields.
    pub fn raw(&self) -> RawCmd {
        match *self {
            Cmd::Nop => RawCmd::new(reg::OP_NOP, 0, [0; 7]),
            Cmd::Fill { dst, len, value } => {
                RawCmd::new(reg::OP_FILL, 0, [dst, len, u64::from(value), 0, 0, 0, 0])
            }
            Cmd::Copy { dst, src, len } => {
                RawCmd::new(reg::OP_COPY, 0, [dst, src, len, 0, 0, 0, 0])
            }
            Cmd::Checksum { src, len, dst } => {
                RawCmd::new(reg::OP_CHECKSUM, 0, [src, len, dst, 0, 0, 0, 0])
            }
            Cmd::Gemm { a, b, c, m, n, k } => RawCmd::new(reg::OP_GEMM, 0, [a, b, c, m, n, k, 0]),
            Cmd::Blit {
                src,
                src_stride,
                width,
                height,
                dst_x,
                dst_y,
            } => RawCmd::new(
                reg::OP_BLIT,
                0,
                [src, src_stride, width, height, dst_x, dst_y, 0],
            ),
            Cmd::Fence {
                seqno,
                addr,
                irq,
                write,
            } => {
                let mut f = 0;
                if irq {
                    f |= reg::FENCE_FLAG_IRQ;
                }
                if write {
                    f |= reg::FENCE_FLAG_WRITE;
                }
                RawCmd::new(reg::OP_FENCE, f, [seqno, addr, 0, 0, 0, 0, 0])
            }
            Cmd::Jump { target } => RawCmd::new(reg::OP_JUMP, 0, [target, 0, 0, 0, 0, 0, 0]),
            Cmd::Raw(r) => r,
        }
    }

    /// The 64-byte little-endian encoding.
    pub fn encode(&self) -> [u8; 64] {
        self.raw().encode()
    }

    /// Decode: a typed command when the bytes are the canonical encoding of one (known
    /// opcode, defined flags only, reserved fields and unused operands zero), else
    /// [`Cmd::Raw`].
    pub fn decode(b: &[u8; 64]) -> Self {
        Self::from_raw(RawCmd::decode(b))
    }

    /// As [`Cmd::decode`], from raw fields.
    pub fn from_raw(r: RawCmd) -> Self {
        let a = r.args;
        let typed = if r.rsvd != 0 || r.op_high() != 0 {
            None
        } else {
            let flags = r.flags();
            let zero_from = |i: usize| a[i..].iter().all(|&x| x == 0);
            match r.opcode() {
                reg::OP_NOP if flags == 0 && zero_from(0) => Some(Cmd::Nop),
                reg::OP_FILL if flags == 0 && zero_from(3) && a[2] >> 32 == 0 => Some(Cmd::Fill {
                    dst: a[0],
                    len: a[1],
                    value: a[2] as u32,
                }),
                reg::OP_COPY if flags == 0 && zero_from(3) => Some(Cmd::Copy {
                    dst: a[0],
                    src: a[1],
                    len: a[2],
                }),
                reg::OP_CHECKSUM if flags == 0 && zero_from(3) => Some(Cmd::Checksum {
                    src: a[0],
                    len: a[1],
                    dst: a[2],
                }),
                reg::OP_GEMM if flags == 0 && zero_from(6) => Some(Cmd::Gemm {
                    a: a[0],
                    b: a[1],
                    c: a[2],
                    m: a[3],
                    n: a[4],
                    k: a[5],
                }),
                reg::OP_BLIT if flags == 0 && zero_from(6) => Some(Cmd::Blit {
                    src: a[0],
                    src_stride: a[1],
                    width: a[2],
                    height: a[3],
                    dst_x: a[4],
                    dst_y: a[5],
                }),
                reg::OP_FENCE
                    if flags & !(reg::FENCE_FLAG_IRQ | reg::FENCE_FLAG_WRITE) == 0
                        && zero_from(2)
                        && (flags & reg::FENCE_FLAG_WRITE != 0 || a[1] == 0) =>
                {
                    Some(Cmd::Fence {
                        seqno: a[0],
                        addr: a[1],
                        irq: flags & reg::FENCE_FLAG_IRQ != 0,
                        write: flags & reg::FENCE_FLAG_WRITE != 0,
                    })
                }
                reg::OP_JUMP if flags == 0 && zero_from(1) => Some(Cmd::Jump { target: a[0] }),
                _ => None,
            }
        };
        typed.unwrap_or(Cmd::Raw(r))
    }

    /// Short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Cmd::Nop => "NOP",
            Cmd::Fill { .. } => "FILL",
            Cmd::Copy { .. } => "COPY",
            Cmd::Checksum { .. } => "CHECKSUM",
            Cmd::Gemm { .. } => "GEMM",
            Cmd::Blit { .. } => "BLIT",
            Cmd::Fence { .. } => "FENCE",
            Cmd::Jump { .. } => "JUMP",
            Cmd::Raw(_) => "RAW",
        }
    }
}

/// All engine registers read at one moment (one read each, not atomic as a whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EngineRegs {
    /// RING_BASE (HI:LO).
    pub base: u64,
    /// RING_SIZE.
    pub size: u32,
    /// RING_HEAD.
    pub head: u32,
    /// RING_TAIL.
    pub tail: u32,
    /// RING_CTL.
    pub ctl: u32,
    /// STATUS.
    pub status: u32,
    /// ERROR.
    pub error: u32,
    /// ERROR_HEAD.
    pub error_head: u32,
    /// FENCE (HI:LO).
    pub fence: u64,
    /// IRQ_STATUS.
    pub irq_status: u32,
    /// IRQ_MASK.
    pub irq_mask: u32,
    /// CMDS_DONE.
    pub cmds_done: u32,
}

/// How long [`Engine::submit`] waits for ring space before giving up.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// MSI address programmed by [`Engine::enable_msi`] (the x86 LAPIC window; any value
/// works for an emulated device).
pub const MSI_ADDRESS: u32 = 0xfee0_0000;

/// PCI command register bits set by [`Engine::enable_msi`]: MEMORY | MASTER.
const PCI_COMMAND_MEM_MASTER: u16 = 0x2 | 0x4;

/// A driver for one instance's engine ring.
///
/// The ring lives in the instance's VRAM; commands are written through `vram`, a shared
/// mapping of region 0 (BAR0) that must cover the ring. The driver keeps a software
/// TAIL (the next free slot) and a cached HEAD to know the free space; registers are
/// accessed through the device's BAR2 region (pread/pwrite).
#[derive(Debug)]
pub struct Engine {
    dev: Arc<Device>,
    vram: Arc<MappedRegion>,
    base: u64,
    size: u64,
    tail: u64,
    head: u64,
    next_seq: u64,
}

impl Engine {
    /// A driver over `dev` and `vram` (a mapping of region 0). No register is touched.
    pub fn new(dev: Arc<Device>, vram: Arc<MappedRegion>) -> Result<Self> {
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
        })
    }

    /// The device.
    pub fn device(&self) -> &Arc<Device> {
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
        self.dev.read_u32(region::BAR2, off)
    }

    /// Write a 32-bit engine register (BAR2 offset).
    pub fn write_reg(&self, off: u64, v: u32) -> Result<()> {
        self.dev.write_u32(region::BAR2, off, v)
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

    /// Publish the software TAIL: write RING_TAIL, then DOORBELL.
    pub fn kick(&self) -> Result<()> {
        // The commands went through a shared mapping; make them visible before the
        // device learns about them.
        fence(Ordering::SeqCst);
        self.write_reg(reg::RING_TAIL, self.tail as u32)?;
        self.write_reg(reg::DOORBELL, 1)
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

    /// Submit `cmds` followed by a FENCE; returns the fence's seqno.
    pub fn submit_fenced(&mut self, cmds: &[Cmd], irq: bool) -> Result<u64> {
        let (f, seq) = self.next_fence(irq, None);
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

    /// Route the instance's interrupt to `efd` through MSI: set MEMORY|MASTER in the
    /// command register, program and enable the MSI capability, attach the eventfd to
    /// the MSI index, and unmask `mask` in IRQ_MASK.
    pub fn enable_msi(&self, efd: &EventFd, mask: u32) -> Result<()> {
        let cap = u64::from(crate::abi::MSI_CAP_OFFSET);
        let cmd = self.dev.config_read_u16(0x04)?;
        self.dev
            .config_write_u16(0x04, cmd | PCI_COMMAND_MEM_MASTER)?;
        let ctl = self.dev.config_read_u16(cap + 2)?;
        self.dev.config_write_u32(cap + 4, MSI_ADDRESS)?;
        // 64-bit capability: address high at +8, data at +12.
        self.dev.config_write_u32(cap + 8, 0)?;
        self.dev.config_write_u16(cap + 12, 0x4041)?;
        self.dev.config_write_u16(cap + 2, ctl | 1)?;
        self.dev.set_irq_eventfds(irq::MSI, 0, &[efd.as_raw_fd()])?;
        self.set_irq_mask(mask)
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
}

/// Wait until `efd` is readable or `timeout` passes; consume its count. Returns whether
/// it fired.
pub fn wait_eventfd(efd: &EventFd, timeout: Duration) -> Result<bool> {
    let mut pfd = libc::pollfd {
        fd: efd.as_raw_fd(),
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
            name: "poll(eventfd)",
            source: e,
        });
    }
    if r == 0 {
        return Ok(false);
    }
    // A non-blocking eventfd may have been drained by someone else in between.
    Ok(efd.read().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_little_endian_struct_vgpu_cmd() {
        let c = Cmd::Fill {
            dst: 0x1122_3344_5566_7788,
            len: 0x40,
            value: 0xdead_beef,
        };
        let b = c.encode();
        assert_eq!(&b[0..4], &[0x01, 0, 0, 0]);
        assert_eq!(&b[4..8], &[0; 4]);
        assert_eq!(&b[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[16..24], &0x40u64.to_le_bytes());
        assert_eq!(&b[24..32], &[0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0]);
        assert!(b[32..].iter().all(|&x| x == 0));

        let f = Cmd::Fence {
            seqno: 7,
            addr: 0x1000,
            irq: true,
            write: true,
        }
        .encode();
        assert_eq!(&f[0..4], &[0x06, 0x03, 0, 0]);
        assert_eq!(&f[8..16], &7u64.to_le_bytes());
        assert_eq!(&f[16..24], &0x1000u64.to_le_bytes());

        let g = Cmd::Gemm {
            a: 1,
            b: 2,
            c: 3,
            m: 4,
            n: 5,
            k: 6,
        }
        .raw();
        assert_eq!(g.op, 4);
        assert_eq!(g.args, [1, 2, 3, 4, 5, 6, 0]);
        assert_eq!(Cmd::Jump { target: 0x40 }.raw().args[0], 0x40);
        assert_eq!(Cmd::Nop.encode(), [0u8; 64]);
        let bl = Cmd::Blit {
            src: 1,
            src_stride: 2,
            width: 3,
            height: 4,
            dst_x: 5,
            dst_y: 6,
        }
        .raw();
        assert_eq!((bl.op, bl.args), (5, [1, 2, 3, 4, 5, 6, 0]));
        assert_eq!(
            Cmd::Checksum {
                src: 8,
                len: 16,
                dst: 24
            }
            .raw()
            .args[..3],
            [8, 16, 24]
        );
        assert_eq!(
            Cmd::Copy {
                dst: 8,
                src: 16,
                len: 24
            }
            .raw()
            .args[..3],
            [8, 16, 24]
        );
    }

    #[test]
    fn decode_round_trips_and_flags_non_canonical() {
        let cmds = [
            Cmd::Nop,
            Cmd::Fill {
                dst: 4,
                len: 8,
                value: u32::MAX,
            },
            Cmd::Copy {
                dst: 1,
                src: 2,
                len: 3,
            },
            Cmd::Checksum {
                src: 4,
                len: 4,
                dst: 8,
            },
            Cmd::Gemm {
                a: 0,
                b: 4,
                c: 8,
                m: 1,
                n: 1,
                k: 1,
            },
            Cmd::Blit {
                src: 0,
                src_stride: 4,
                width: 1,
                height: 1,
                dst_x: 0,
                dst_y: 0,
            },
            Cmd::fence(9),
            Cmd::Fence {
                seqno: 9,
                addr: 64,
                irq: false,
                write: true,
            },
            Cmd::Jump { target: 128 },
        ];
        for c in cmds {
            assert_eq!(Cmd::decode(&c.encode()), c, "{c:?}");
            let r = c.raw();
            assert_eq!(RawCmd::from_words(&r.words()), r);
            assert_eq!(RawCmd::decode(&r.encode()), r);
        }
        // Reserved field, high op bits, unknown flag, unused operand: all raw.
        let mut r = Cmd::Nop.raw();
        r.rsvd = 1;
        assert!(matches!(Cmd::from_raw(r), Cmd::Raw(_)));
        let mut r = Cmd::Nop.raw();
        r.op |= 1 << 16;
        assert!(matches!(Cmd::from_raw(r), Cmd::Raw(_)));
        let r = RawCmd::new(reg::OP_FENCE, 4, [1, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(Cmd::from_raw(r), Cmd::Raw(_)));
        let r = RawCmd::new(reg::OP_FILL, 0, [0, 4, 0, 0, 0, 0, 1]);
        assert!(matches!(Cmd::from_raw(r), Cmd::Raw(_)));
        let r = RawCmd::new(8, 0, [0; 7]);
        assert!(matches!(Cmd::from_raw(r), Cmd::Raw(_)));
        assert_eq!(r.opcode(), 8);
        let r = RawCmd::new(6, 3, [0; 7]);
        assert_eq!((r.opcode(), r.flags(), r.op_high()), (6, 3, 0));
    }

    #[test]
    fn error_codes() {
        assert_eq!(ErrorCode::from_u32(8), Some(ErrorCode::Watchdog));
        assert_eq!(ErrorCode::from_u32(9), None);
        assert_eq!(ErrorCode::BadRing as u32, 6);
        assert_eq!(error_name(3), "OUT_OF_RANGE");
        assert_eq!(error_name(77), "undefined");
        assert_eq!(ErrorCode::BadAlign.bit(), 1 << 4);
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
