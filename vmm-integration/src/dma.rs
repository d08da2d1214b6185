//! Guest RAM registered for the vGPU's DMA: each RAM range mapped into the device's
//! VFIO container (`VFIO_IOMMU_MAP_DMA`, type1) at iova = guest-physical address, as a
//! VMM does for any VFIO device, and unmapped when the VM ends.
//!
//! What it buys for vgpu_shim today: nothing the guest can see. The module's engine
//! works on VRAM only and never calls `vfio_pin_pages`/`vfio_dma_rw`, so no guest page
//! is pinned or read through these mappings (type1 with an mdev's emulated IOMMU only
//! records them: no IOMMU page tables, no pinning at map time). It is there so that an
//! mdev that does DMA into guest memory (a command that reads a guest buffer) finds the
//! guest's addresses translatable, and so that the container refuses a second mapping
//! of the same range (checked below, and logged: `RUST_LOG=info`).

use vgpu_vfio::Device;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::Error;

/// The ranges mapped, unmapped on drop.
pub struct DmaMap<'a> {
    dev: &'a Device,
    ranges: Vec<(u64, u64)>,
}

impl<'a> DmaMap<'a> {
    /// Maps every RAM region of `mem` at its guest-physical address; then checks that
    /// type1 holds the first one (a second map of its first page must fail).
    pub fn map(dev: &'a Device, mem: &GuestMemoryMmap) -> Result<Self, Error> {
        let container = dev.group().container();
        let mut m = DmaMap {
            dev,
            ranges: Vec::new(),
        };
        for r in mem.iter() {
            let (iova, len) = (r.start_addr().0, r.len());
            let host = mem
                .get_host_address(r.start_addr())
                .map_err(|e| Error::Setup(format!("guest RAM mapping: {e}")))?;
            // SAFETY: [host, host + len) is guest RAM owned by `mem`, which the caller
            // keeps until after this map is dropped (declared before it in `run_once`);
            // the drop unmaps the range.
            unsafe { container.map_dma(iova, host, len) }.map_err(|e| {
                Error::Setup(format!(
                    "{}: VFIO_IOMMU_MAP_DMA of guest RAM {iova:#x}+{len:#x}: {e}",
                    dev.name()
                ))
            })?;
            m.ranges.push((iova, len));
        }
        if let Some(&(iova, _)) = m.ranges.first() {
            let host = mem
                .get_host_address(vm_memory::GuestAddress(iova))
                .map_err(|e| Error::Setup(format!("guest RAM mapping: {e}")))?;
            // SAFETY: as above; type1 must refuse it (the range is mapped already), and
            // if it did not the drop unmaps everything from `iova` anyway.
            match unsafe { container.map_dma(iova, host, 4096) } {
                Err(_) => {}
                Ok(()) => {
                    return Err(Error::Setup(format!(
                        "{}: the container accepted a second DMA map of {iova:#x}: guest RAM is not mapped",
                        dev.name()
                    )))
                }
            }
        }
        let total: u64 = m.ranges.iter().map(|r| r.1).sum();
        if let Some(&(iova, _)) = m.ranges.first() {
            log::info!(
                "DMA: guest RAM mapped in {}'s container ({} range(s), {} MiB; a second map of {iova:#x} refused)",
                dev.name(),
                m.ranges.len(),
                total >> 20,
            );
        }
        Ok(m)
    }
}

impl Drop for DmaMap<'_> {
    fn drop(&mut self) {
        let container = self.dev.group().container();
        let mut n = 0u64;
        for &(iova, len) in &self.ranges {
            match container.unmap_dma(iova, len) {
                Ok(b) => n += b,
                Err(e) => log::warn!("VFIO_IOMMU_UNMAP_DMA {iova:#x}+{len:#x}: {e}"),
            }
        }
        log::info!("DMA: guest RAM unmapped ({} MiB)", n >> 20);
    }
}
