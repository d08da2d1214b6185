//! The vGPU as PCI device 00:01.0, through VFIO (the project's `vgpu-vfio` crate: it
//! already opens an mdev by its sysfs path with the container/group API that 6.1 and
//! 6.12 both have, and knows the vgpu regions; `vfio-ioctls` underneath).
//!
//! Config space goes to the VFIO config region as it is: the module emulates the BARs
//! (sizing, stored addresses), the command register and MSI. The VMM places the BARs
//! before boot (VRAM first, aligned to its size, then the MMIO BAR) in the 32-bit hole;
//! VRAM is mmapped from the device and registered as a KVM memory slot, so guest
//! accesses to it never exit; the MMIO BAR traps and is forwarded as region reads and
//! writes. A guest write to the MSI capability is passed on to the module and then
//! followed (`irq.rs`): MSI on → a KVM GSI route with the guest's address/data and the
//! device's VFIO MSI eventfd as its irqfd. Not yet: moving BARs (a guest that
//! reprograms BAR0 gets a warning and keeps the old mapping), DMA mapping, reset
//! (docs/vmm.md). The REQ interrupt is `req.rs`'s.

use std::path::Path;
use std::sync::Arc;

use kvm_ioctls::VmFd;
use vgpu_vfio::abi::MSI_CAP_OFFSET;
use vgpu_vfio::{region, Device, MappedRegion};

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

/// Where a guest access to a BAR lands.
pub struct Vgpu {
    dev: Device,
    /// BAR0 (VRAM) guest address and size.
    pub vram: (u64, u64),
    /// BAR2 (MMIO) guest address and size.
    pub mmio: (u64, u64),
    map: MappedRegion,
    msi: MsiIrq,
}

impl Vgpu {
    /// Opens the mdev at `path`, places its BARs, and maps its VRAM; its MSI will be
    /// routed in `vm`.
    pub fn open(path: &Path, vm: Arc<VmFd>) -> Result<Self, Error> {
        let err =
            |e: &dyn std::fmt::Display| Error::Setup(format!("--vgpu {}: {e}", path.display()));
        let dev = Device::open(path).map_err(|e| err(&e))?;
        let vram_size = dev.region_size(region::BAR0).map_err(|e| err(&e))?;
        let mmio_size = dev.region_size(region::BAR2).map_err(|e| err(&e))?;
        let (vram, mmio) = place_bars(vram_size, mmio_size).ok_or_else(|| {
            err(&format!(
                "BARs of {vram_size:#x} and {mmio_size:#x} bytes do not fit the 32-bit MMIO hole"
            ))
        })?;
        let w = |off: u64, v: u32| dev.config_write_u32(off, v).map_err(|e| err(&e));
        w(0x10, vram as u32)?;
        w(0x14, (vram >> 32) as u32)?;
        w(0x18, mmio as u32)?;
        let map = dev
            .mmap_region(region::BAR0, 0, vram_size)
            .map_err(|e| err(&e))?;
        log::info!(
            "vGPU {}: VRAM {vram_size:#x} at {vram:#x}, MMIO {mmio_size:#x} at {mmio:#x}",
            dev.name()
        );
        Ok(Vgpu {
            dev,
            vram: (vram, vram_size),
            mmio: (mmio, mmio_size),
            map,
            msi: MsiIrq::new(vm)?,
        })
    }

    /// The VFIO device.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// The VRAM mapping's host address (for the KVM memory slot).
    pub fn vram_host(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// A guest config read of `data.len()` bytes at `off`.
    pub fn config_read(&self, off: u64, data: &mut [u8]) {
        if self.dev.pread(region::CONFIG, off, data).ok() != Some(data.len()) {
            data.fill(0xff);
        }
    }

    /// A guest config write.
    pub fn config_write(&self, off: u64, data: &[u8]) {
        if self.dev.pwrite(region::CONFIG, off, data).ok() != Some(data.len()) {
            log::warn!("vGPU config write at {off:#x} failed");
            return;
        }
        if off < MSI_END && off + data.len() as u64 > u64::from(MSI_CAP_OFFSET) {
            self.follow_msi();
        }
        // Sizing writes all-ones with memory decode off (Linux does): judge the BAR only
        // when a write leaves decode on.
        if (0x04..0x18).contains(&off) {
            let mut cmd = [0u8; 2];
            let mut lo = [0u8; 4];
            let mut hi = [0u8; 4];
            self.config_read(0x04, &mut cmd);
            self.config_read(0x10, &mut lo);
            self.config_read(0x14, &mut hi);
            let bar0 = (u64::from(u32::from_le_bytes(hi)) << 32
                | u64::from(u32::from_le_bytes(lo)))
                & !0xf;
            if u16::from_le_bytes(cmd) & 0x2 != 0 && bar0 != self.vram.0 {
                log::warn!(
                    "the guest moved the VRAM BAR to {bar0:#x}: not supported yet, VRAM stays at {:#x}",
                    self.vram.0
                );
            }
        }
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
        let (base, size) = self.mmio;
        if addr < base || addr >= base + size {
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
