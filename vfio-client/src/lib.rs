//! Userspace VFIO client for vgpu instances.
//!
//! Drives one vGPU (an mdev instance of `vgpu_shim`, see `docs/device-abi.md`) from
//! userspace through the VFIO container/group API:
//!
//! * [`Container`] / [`Group`] / [`Device`]: open `/dev/vfio/vfio`, attach the instance's
//!   (emulated) IOMMU group, set a type1 IOMMU, get the device fd;
//! * device and region info (capability chains included), region access with pread/pwrite
//!   at `index << 40` ([`Device::read_region`] bounds-checked, [`Device::pread`] raw),
//!   PCI config helpers, `VFIO_DEVICE_RESET`;
//! * [`MappedRegion`]: a shared mmap of a region (VRAM, display) with bounds-checked
//!   volatile accessors, unmapped on drop;
//! * IRQs: eventfds on INTx/MSI/REQ through `VFIO_DEVICE_SET_IRQS`, loopback triggers;
//! * `VFIO_DEVICE_QUERY_GFX_PLANE` for region planes;
//! * [`OpenInstance`]: open the VFIO device of a `vgpu_sysfs::handle::Instance` (the
//!   sysfs ABI itself, parents, types, instances, knobs and counters, is the
//!   `vgpu-sysfs` crate's);
//! * [`engine`]: a ring driver ([`Engine`]) over the device: submit, fences (polled or
//!   by MSI), errors, engine reset.
//!
//! The engine ABI itself (register and region layout, command encoding, reference
//! semantics) is the `vgpu-engine-abi` crate's, shared with guest-side code that has no
//! VFIO; it is re-exported here under its old paths: [`abi`] (its `layout`), [`Cmd`],
//! [`RawCmd`], [`ErrorCode`], [`EngineRegs`] (also as `engine::*`) and [`reference`](mod@reference).
//!
//! Errors are [`Error`]; [`Error::errno`] exposes the kernel's errno for tests.
//!
//! # Dependencies and why
//!
//! * `vfio-bindings` (rust-vmm): the UAPI structs and constants of `linux/vfio.h`,
//!   generated from the kernel header, so no hand-copied layouts.
//! * `vmm-sys-util` (rust-vmm): the `ioctl_io_nr!` request-number macro and typed `ioctl`
//!   wrappers (and `EventFd` for callers); the same crate `vfio-bindings` builds on.
//! * `libc`: pread/pwrite-free syscalls that std does not wrap: `mmap`/`munmap`,
//!   errno constants.
//! * `vgpu-sysfs` (this workspace): the sysfs model, for the instance to open.
//! * `vgpu-engine-abi` (this workspace): the engine ABI the [`Engine`] speaks.
//! * `thiserror`: the error enum's `Display`/`source` boilerplate.
//! * `log`: a warning when `munmap` fails in `Drop` (nowhere to return an error).
//!
//! # Why not `vfio-ioctls`
//!
//! rust-vmm's `vfio-ioctls` 0.10 (`VfioContainer`, `VfioDevice::new(sysfs_path, ..)`) does
//! open an mdev's emulated group with type1v2 on 6.1 (the rig's `vfio_ioctls_compat` test
//! checks this), but it does not fit a client that must see what the kernel answers:
//!
//! * `VfioDevice::drop` closes the device fd and then re-reads
//!   `<sysfs_path>/iommu_group` with `unwrap()`. When an mdev `remove` is pending (the
//!   remove-while-open flow vgpu must support: the user is asked through REQ to let go),
//!   `device_del` has already unlinked `/sys/bus/mdev/devices/<uuid>`, so the drop panics
//!   ("called `Result::unwrap()` on an `Err` value: InvalidPath", seen on the 6.1 rig);
//! * `region_read`/`region_write`/`reset` return `()` and log errors, and the IRQ helpers
//!   map every failure to one variant without errno, so `EINVAL`/`EFAULT` cannot be told
//!   apart;
//! * regions whose info ioctl fails are skipped, shifting later indexes in its cache;
//! * no `VFIO_DEVICE_QUERY_GFX_PLANE`, no REQ helper, no vendor region caps beyond type.
//!
//! The open sequence it performs is small, so this crate issues the same ioctls itself
//! (with `vfio-bindings`' structs) and keeps every errno.
#![deny(missing_docs)]

#[macro_use]
extern crate vmm_sys_util;

/// Constants of the vgpu device ABI: `vgpu_engine_abi::layout`, re-exported.
pub mod abi {
    pub use vgpu_engine_abi::layout::*;
}
mod container;
mod device;
pub mod engine;
mod error;
mod ioctls;
pub mod ioeventfd;
mod mmap;
/// Reference semantics of the engine: `vgpu_engine_abi::reference`, re-exported.
pub mod reference {
    pub use vgpu_engine_abi::reference::*;
}

pub use container::{Container, Group, CONTAINER_PATH};
pub use device::{
    check_aligned, check_bounds, irq, irq_set_buffer, parse_region_caps, region,
    region_file_offset, Device, DeviceInfo, GfxPlane, IrqInfo, RegionCap, RegionInfo,
    REGION_OFFSET_MASK, REGION_OFFSET_SHIFT,
};
pub use engine::{Cmd, DeviceAccess, Engine, EngineRegs, ErrorCode, MsiDevice, RawCmd};
pub use error::{Error, Result};

/// Opening a vgpu instance found through the sysfs model.
pub trait OpenInstance {
    /// The VFIO group number (its `iommu_group` link).
    fn iommu_group(&self) -> Result<u32>;
    /// Open the instance's VFIO device in a container of its own.
    fn open(&self) -> Result<Device>;
}

impl OpenInstance for vgpu_sysfs::handle::Instance {
    fn iommu_group(&self) -> Result<u32> {
        Group::id_of(self.path())
    }

    fn open(&self) -> Result<Device> {
        Device::open(self.path())
    }
}
pub use mmap::{MappedRegion, Mismatch};
pub use vfio_bindings::bindings::vfio as uapi;
pub use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
