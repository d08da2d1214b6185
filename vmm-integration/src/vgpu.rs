//! The vGPU as PCI device 00:01.0, through VFIO (the project's `vgpu-vfio` crate: it
//! already opens an mdev by its sysfs path with the container/group API that 6.1 and
//! 6.12 both have, and knows the vgpu regions; `vfio-ioctls` underneath).
//!
//! Config space goes to the VFIO config region as it is: the module emulates the BARs
//! (sizing, stored addresses), the command register and MSI. The VMM places the BARs
//! before boot (VRAM first, aligned to its size, then the MMIO BAR) in the 32-bit hole
//! and then follows what the guest makes of them ([`Vgpu::config_write`]): while memory
//! decode is on, VRAM (mmapped from the device) is a KVM memory slot at BAR0's address,
//! so guest accesses to it never exit, and the MMIO BAR traps at BAR2's address and is
//! forwarded as region reads and writes, DOORBELL excepted (a KVM ioeventfd paired with
//! the device's `VFIO_DEVICE_IOEVENTFD`, `ioeventfd.rs`); a guest that moves a BAR gets
//! the slot, the trapped range and the ioeventfd moved, and memory decode off removes
//! all three. A guest write to the MSI capability is passed on to the module and then
//! followed (`irq.rs`): MSI on → a KVM GSI route with the guest's address/data and the
//! device's VFIO MSI eventfd as its irqfd. The REQ interrupt is `req.rs`'s; reset on VM
//! reset and the DMA mapping of guest RAM are `vm.rs`'s.

use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vgpu_vfio::abi::MSI_CAP_OFFSET;
use vgpu_vfio::{region, Device, MappedRegion};

use crate::ioeventfd::Doorbell;
use crate::irq::{MsiIrq, MsiMessage};
use crate::layout::{IOAPIC_ADDR, MMIO_HOLE_START};
use crate::Error;

/// The MSI capability's registers (64-bit, one vector): flags, address low/high, data.
const MSI_FLAGS: u64 = MSI_CAP_OFFSET as u64 + 2;
const MSI_ADDR_LO: u64 = MSI_CAP_OFFSET as u64 + 4;
const MSI_ADDR_HI: u64 = MSI_CAP_OFFSET as u64 + 8;
const MSI_DATA: u64 = MSI_CAP_OFFSET as u64 + 12;
/// One past the capability.
const MSI_END: u64 = MSI_CAP_OFFSET as u64 + 14;
/// Config space: the command register (bit 1: memory decode), BAR0 (64-bit: two
/// dwords) and BAR2.
const PCI_COMMAND: u64 = 0x04;
const CMD_MEMORY: u16 = 1 << 1;
const BAR0_LO: u64 = 0x10;
const BAR0_HI: u64 = 0x14;
const BAR2: u64 = 0x18;
/// The KVM memory slot of the vGPU's VRAM (RAM uses the first ones).
pub const VRAM_SLOT: u32 = 8;
/// A BAR is decoded only below this guest-physical address (a guest's BAR sizing
/// pattern left in place with decode on is not a place to map VRAM).
const MAX_BAR_END: u64 = 1 << 40;

/// Where the BARs are decoded now (`None`: not decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decode {
    /// BAR0 (VRAM): the guest address of the KVM memory slot.
    pub vram: Option<u64>,
    /// BAR2 (MMIO): the guest address of the trapped range and of DOORBELL's ioeventfd.
    pub mmio: Option<u64>,
}

/// Where a guest access to a BAR lands.
pub struct Vgpu {
    dev: Arc<Device>,
    vm: Arc<VmFd>,
    vram_size: u64,
    mmio_size: u64,
    map: MappedRegion,
    msi: MsiIrq,
    doorbell: Option<Doorbell>,
    /// What is decoded where; held across a config write and what follows it.
    decode: Mutex<Decode>,
    /// BAR moves and decode changes applied (for the log and the tests).
    pub moves: std::sync::atomic::AtomicU64,
}

impl Vgpu {
    /// Takes the opened mdev `dev` for the VM `vm`: places its BARs (not decoded until
    /// the guest turns memory decode on), maps its VRAM and, with `ioeventfd`, registers
    /// DOORBELL's ioeventfd with the device (the KVM side follows BAR2).
    pub fn new(dev: Arc<Device>, vm: Arc<VmFd>, ioeventfd: bool) -> Result<Self, Error> {
        let err = |e: &dyn std::fmt::Display| Error::Setup(format!("--vgpu {}: {e}", dev.name()));
        let vram_size = dev.region_size(region::BAR0).map_err(|e| err(&e))?;
        let mmio_size = dev.region_size(region::BAR2).map_err(|e| err(&e))?;
        let (vram, mmio) = place_bars(vram_size, mmio_size).ok_or_else(|| {
            err(&format!(
                "BARs of {vram_size:#x} and {mmio_size:#x} bytes do not fit the 32-bit MMIO hole"
            ))
        })?;
        let w = |off: u64, v: u32| dev.config_write_u32(off, v).map_err(|e| err(&e));
        w(BAR0_LO, vram as u32)?;
        w(BAR0_HI, (vram >> 32) as u32)?;
        w(BAR2, mmio as u32)?;
        let map = dev
            .mmap_region(region::BAR0, 0, vram_size)
            .map_err(|e| err(&e))?;
        let doorbell = if ioeventfd {
            Some(Doorbell::new(&dev)?)
        } else {
            None
        };
        log::info!(
            "vGPU {}: VRAM {vram_size:#x} at {vram:#x}, MMIO {mmio_size:#x} at {mmio:#x}",
            dev.name()
        );
        let v = Vgpu {
            msi: MsiIrq::new(vm.clone())?,
            dev,
            vm,
            vram_size,
            mmio_size,
            map,
            doorbell,
            decode: Mutex::new(Decode::default()),
            moves: Default::default(),
        };
        // The device's command register decides (decode is off after creation and reset).
        let mut d = v.decode.lock().unwrap_or_else(|p| p.into_inner());
        v.follow_bars(&mut d);
        drop(d);
        Ok(v)
    }

    /// The VFIO device.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Where the BARs are decoded now.
    pub fn decode(&self) -> Decode {
        *self.decode.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A guest config read of `data.len()` bytes at `off`.
    pub fn config_read(&self, off: u64, data: &mut [u8]) {
        if self.dev.pread(region::CONFIG, off, data).ok() != Some(data.len()) {
            data.fill(0xff);
        }
    }

    /// A guest config write.
    pub fn config_write(&self, off: u64, data: &[u8]) {
        let mut d = self.decode.lock().unwrap_or_else(|p| p.into_inner());
        if self.dev.pwrite(region::CONFIG, off, data).ok() != Some(data.len()) {
            log::warn!("vGPU config write at {off:#x} failed");
            return;
        }
        if off < MSI_END && off + data.len() as u64 > u64::from(MSI_CAP_OFFSET) {
            self.follow_msi();
        }
        if off < BAR2 + 4 && off + data.len() as u64 > PCI_COMMAND {
            self.follow_bars(&mut d);
        }
    }

    /// After a write to the command register or a BAR: read back what the module made
    /// of them and move (or remove, or add) the VRAM slot and the MMIO range.
    fn follow_bars(&self, cur: &mut Decode) {
        let want = match self.wanted_decode() {
            Ok(w) => w,
            Err(e) => {
                log::warn!("vGPU BARs: reading config space: {e}");
                return;
            }
        };
        if want.vram != cur.vram {
            if let Some(old) = cur.vram.take() {
                match self.set_vram_slot(old, 0) {
                    Ok(()) => log::info!("vGPU VRAM BAR: unmapped from {old:#x}"),
                    Err(e) => log::warn!("vGPU VRAM BAR: removing the slot at {old:#x}: {e}"),
                }
            }
            if let Some(new) = want.vram {
                match self.set_vram_slot(new, self.vram_size) {
                    Ok(()) => {
                        cur.vram = Some(new);
                        log::info!("vGPU VRAM BAR: mapped at {new:#x}");
                    }
                    Err(e) => log::warn!("vGPU VRAM BAR at {new:#x}: not mapped: {e}"),
                }
            }
            self.moves
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if want.mmio != cur.mmio {
            if let (Some(db), Some(old)) = (&self.doorbell, cur.mmio) {
                if let Err(e) = db.unregister(&self.vm, old) {
                    log::warn!("vGPU doorbell ioeventfd at BAR2 {old:#x}: {e}");
                }
            }
            cur.mmio = None;
            crate::ioeventfd::set_doorbell_gpa(None);
            if let Some(new) = want.mmio {
                if let Some(db) = &self.doorbell {
                    if let Err(e) = db.register(&self.vm, new) {
                        log::warn!("vGPU doorbell ioeventfd at BAR2 {new:#x}: {e}");
                    }
                }
                crate::ioeventfd::set_doorbell_gpa(Some(new));
                cur.mmio = Some(new);
                log::info!("vGPU MMIO BAR: decoded at {new:#x}");
            } else {
                log::info!("vGPU MMIO BAR: not decoded");
            }
            self.moves
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// What the device's config space says should be decoded.
    fn wanted_decode(&self) -> vgpu_vfio::Result<Decode> {
        if self.dev.config_read_u16(PCI_COMMAND)? & CMD_MEMORY == 0 {
            return Ok(Decode::default());
        }
        let lo = self.dev.config_read_u32(BAR0_LO)?;
        let hi = self.dev.config_read_u32(BAR0_HI)?;
        let bar0 = (u64::from(hi) << 32 | u64::from(lo)) & !0xf;
        let bar2 = u64::from(self.dev.config_read_u32(BAR2)? & !0xf);
        let ok = |a: u64, size: u64| {
            (a != 0 && a.checked_add(size).is_some_and(|e| e <= MAX_BAR_END)).then_some(a)
        };
        Ok(Decode {
            vram: ok(bar0, self.vram_size),
            mmio: ok(bar2, self.mmio_size),
        })
    }

    /// (Re)registers the VRAM slot at `gpa` (`size` 0 removes it).
    fn set_vram_slot(&self, gpa: u64, size: u64) -> Result<(), kvm_ioctls::Error> {
        let r = kvm_userspace_memory_region {
            slot: VRAM_SLOT,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: self.map.as_ptr() as u64,
        };
        // SAFETY: the mapping [map, + vram_size) is owned by `self`, and the slot is
        // removed in `drop` before the mapping goes.
        unsafe { self.vm.set_user_memory_region(r) }
    }

    /// After a guest write to the MSI capability: read back what the module made of it
    /// and route it.
    fn follow_msi(&self) {
        let r = |off: u64| self.dev.config_read_u32(off);
        let msg = (|| -> vgpu_vfio::Result<Option<MsiMessage>> {
            if self.dev.config_read_u16(MSI_FLAGS)? & 1 == 0 {
                return Ok(None);
            }
            Ok(Some(MsiMessage {
                addr: u64::from(r(MSI_ADDR_HI)?) << 32 | u64::from(r(MSI_ADDR_LO)?),
                data: r(MSI_DATA)? & 0xffff,
            }))
        })();
        let res = match msg {
            Ok(m) => self.msi.update(&self.dev, m),
            Err(e) => Err(format!("reading the MSI capability: {e}")),
        };
        if let Err(e) = res {
            log::warn!("vGPU MSI: {e}");
        }
    }

    /// How many times the MSI route was set up, changed or torn down.
    pub fn msi_updates(&self) -> u64 {
        self.msi.updates.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A guest MMIO access at `addr`; `false` if it is not in the MMIO BAR.
    pub fn mmio(&self, addr: u64, read: Option<&mut [u8]>, write: Option<&[u8]>) -> bool {
        let Some(base) = self.decode().mmio else {
            return false;
        };
        if addr < base || addr >= base + self.mmio_size {
            return false;
        }
        let off = addr - base;
        if let Some(d) = read {
            if self.dev.pread(region::BAR2, off, d).ok() != Some(d.len()) {
                d.fill(0xff);
            }
        }
        if let Some(d) = write {
            if self.dev.pwrite(region::BAR2, off, d).ok() != Some(d.len()) {
                log::warn!("vGPU MMIO write at {off:#x} failed");
            }
        }
        true
    }
}

impl Drop for Vgpu {
    /// Undoes what this VM set up on the device, which outlives it across a guest
    /// reboot (`vm.rs`): the VRAM slot (before the mapping goes), DOORBELL's ioeventfd
    /// (KVM's, then the device's), MSI.
    fn drop(&mut self) {
        let d = *self.decode.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = d.vram {
            if let Err(e) = self.set_vram_slot(a, 0) {
                log::warn!("vGPU VRAM BAR: removing the slot: {e}");
            }
        }
        if let Some(db) = &self.doorbell {
            if let Some(a) = d.mmio {
                let _ = db.unregister(&self.vm, a);
            }
            if let Err(e) = self.dev.clear_doorbell_ioeventfd() {
                log::warn!("vGPU doorbell: VFIO_DEVICE_IOEVENTFD removal: {e}");
            }
        }
        crate::ioeventfd::set_doorbell_gpa(None);
        if let Err(e) = self.msi.update(&self.dev, None) {
            log::warn!("vGPU MSI off: {e}");
        }
    }
}

/// BAR addresses `(vram, mmio)` in the 32-bit hole: VRAM aligned to its size first,
/// then MMIO aligned to its own; `None` if they do not fit below the IOAPIC.
pub fn place_bars(vram_size: u64, mmio_size: u64) -> Option<(u64, u64)> {
    let align = |a: u64, s: u64| {
        let s = s.max(4096).checked_next_power_of_two()?;
        a.checked_add(s - 1).map(|x| x & !(s - 1))
    };
    let vram = align(MMIO_HOLE_START, vram_size)?;
    let mmio = align(vram.checked_add(vram_size)?, mmio_size)?;
    (mmio.checked_add(mmio_size)? <= u64::from(IOAPIC_ADDR)).then_some((vram, mmio))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fit_the_hole_aligned() {
        assert_eq!(
            place_bars(256 << 20, 4096),
            Some((0xc000_0000, 0xd000_0000))
        );
        assert_eq!(
            place_bars(512 << 20, 4096),
            Some((0xc000_0000, 0xe000_0000))
        );
        assert_eq!(place_bars(1 << 30, 4096), None);
    }
}
