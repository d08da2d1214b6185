//! `VFIO_DEVICE_IOEVENTFD`: an eventfd whose every signal the device takes as a write of
//! fixed data at a fixed offset (include/uapi/linux/vfio.h). vgpu_shim accepts it for the
//! engine's DOORBELL only (docs/device-abi.md, "ioeventfd"); a VMM gives the same eventfd to
//! KVM (`KVM_IOEVENTFD` at the guest-physical address of DOORBELL), so a guest's doorbell
//! never exits to userspace.
//!
//! [`Device::ioeventfd_raw`] passes any request through (tests check the errors);
//! [`Device::set_ioeventfd`] / [`Device::clear_ioeventfd`] take a region index, an offset in
//! it and a size in bytes; [`Engine::doorbell_ioeventfd`] and
//! [`Engine::clear_doorbell_ioeventfd`] register the doorbell itself, and
//! [`Engine::publish_tail`] + [`Engine::kick_eventfd`] submit through it.

use std::os::fd::{AsRawFd, RawFd};

use vfio_bindings::bindings::vfio::{
    vfio_device_ioeventfd, VFIO_DEVICE_IOEVENTFD_16, VFIO_DEVICE_IOEVENTFD_32,
    VFIO_DEVICE_IOEVENTFD_64, VFIO_DEVICE_IOEVENTFD_8,
};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::ioctl::ioctl_with_ref;

use crate::abi::engine as reg;
use crate::device::{region, region_file_offset, Device};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ioctls::VFIO_DEVICE_IOEVENTFD;

/// The data an [`Engine`] doorbell ioeventfd writes (DOORBELL takes any value).
pub const DOORBELL_DATA: u64 = 1;

/// The `flags` size bit of a `size`-byte write (1, 2, 4 or 8), or `None`.
pub const fn size_flag(size: u32) -> Option<u32> {
    match size {
        1 => Some(VFIO_DEVICE_IOEVENTFD_8),
        2 => Some(VFIO_DEVICE_IOEVENTFD_16),
        4 => Some(VFIO_DEVICE_IOEVENTFD_32),
        8 => Some(VFIO_DEVICE_IOEVENTFD_64),
        _ => None,
    }
}

impl Device {
    /// `VFIO_DEVICE_IOEVENTFD` with the raw fields (`offset` is a device-fd offset, region
    /// index in the high bits); the OS error as-is, for tests of bad requests.
    pub fn ioeventfd_raw(
        &self,
        flags: u32,
        offset: u64,
        data: u64,
        fd: i32,
    ) -> std::io::Result<()> {
        let arg = vfio_device_ioeventfd {
            argsz: std::mem::size_of::<vfio_device_ioeventfd>() as u32,
            flags,
            offset,
            data,
            fd,
            ..Default::default()
        };
        // SAFETY: `arg` is a complete vfio_device_ioeventfd with argsz set, valid for the
        // call; the kernel only reads it.
        let r = unsafe { ioctl_with_ref(self, VFIO_DEVICE_IOEVENTFD(), &arg) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn ioeventfd(&self, index: u32, offset: u64, size: u32, data: u64, fd: i32) -> Result<()> {
        let flags = size_flag(size)
            .ok_or_else(|| Error::InvalidArgument(format!("ioeventfd size {size}")))?;
        let off = region_file_offset(index, offset)
            .ok_or_else(|| Error::InvalidArgument(format!("region {index} offset {offset:#x}")))?;
        self.ioeventfd_raw(flags, off, data, fd)
            .map_err(|source| Error::Ioctl {
                name: "VFIO_DEVICE_IOEVENTFD",
                source,
            })
    }

    /// Make every signal of `efd` a `size`-byte write of `data` at `offset` of region
    /// `index`.
    pub fn set_ioeventfd(
        &self,
        index: u32,
        offset: u64,
        size: u32,
        data: u64,
        efd: &impl AsRawFd,
    ) -> Result<()> {
        self.ioeventfd(index, offset, size, data, efd.as_raw_fd())
    }

    /// Remove the ioeventfd registered for exactly this write (fd -1).
    pub fn clear_ioeventfd(&self, index: u32, offset: u64, size: u32, data: u64) -> Result<()> {
        let none: RawFd = -1;
        self.ioeventfd(index, offset, size, data, none)
    }

    /// Register `efd` as the engine's doorbell: each signal is a 4-byte write of
    /// [`DOORBELL_DATA`] at DOORBELL.
    pub fn set_doorbell_ioeventfd(&self, efd: &impl AsRawFd) -> Result<()> {
        self.set_ioeventfd(region::BAR2, reg::DOORBELL, 4, DOORBELL_DATA, efd)
    }

    /// Remove the doorbell ioeventfd registered by [`Device::set_doorbell_ioeventfd`].
    pub fn clear_doorbell_ioeventfd(&self) -> Result<()> {
        self.clear_ioeventfd(region::BAR2, reg::DOORBELL, 4, DOORBELL_DATA)
    }
}

impl Engine {
    /// Register `efd` as this engine's doorbell: each signal is a 4-byte write of
    /// [`DOORBELL_DATA`] at DOORBELL.
    pub fn doorbell_ioeventfd(&self, efd: &impl AsRawFd) -> Result<()> {
        self.device().set_doorbell_ioeventfd(efd)
    }

    /// Remove the doorbell ioeventfd registered by [`Engine::doorbell_ioeventfd`].
    pub fn clear_doorbell_ioeventfd(&self) -> Result<()> {
        self.device().clear_doorbell_ioeventfd()
    }

    /// Publish TAIL, then ring the doorbell by signalling `efd` (registered with
    /// [`Engine::doorbell_ioeventfd`]) instead of writing DOORBELL.
    pub fn kick_eventfd(&self, efd: &EventFd) -> Result<()> {
        self.publish_tail()?;
        efd.write(1).map_err(|source| Error::Ioctl {
            name: "eventfd write",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_flags_match_uapi() {
        assert_eq!(size_flag(1), Some(1));
        assert_eq!(size_flag(2), Some(2));
        assert_eq!(size_flag(4), Some(4));
        assert_eq!(size_flag(8), Some(8));
        assert_eq!(size_flag(3), None);
        assert_eq!(size_flag(0), None);
    }
}
