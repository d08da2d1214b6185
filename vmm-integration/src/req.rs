//! The VFIO REQ interrupt: the host wants the vGPU back. `remove` of an mdev that is
//! open blocks in the kernel (`vfio_unregister_group_dev`) and calls the vendor
//! driver's `request` callback, at once and every 10 s, until the last fd is closed;
//! vgpu_shim signals the eventfd attached to `VFIO_PCI_REQ_IRQ_INDEX` then. vgpu-vmm
//! attaches one at start ([`ReqWatch::attach`]); the main thread waits on it next to
//! the signalfd and, when it fires, ends the VM ([`VmEnd::Released`]): the vCPUs are
//! stopped, the device's fds closed, and the blocked `remove` completes. There is no
//! hot-unplug in vgpu-vmm (no PCI hotplug controller for the guest to be told
//! through), so letting the device go means shutting the VM down; the guest gets no
//! warning, as with SIGTERM.
//!
//! [`VmEnd::Released`]: crate::vcpu::VmEnd::Released

use std::os::fd::{AsRawFd, RawFd};

use vgpu_vfio::{irq, Device};
use vmm_sys_util::eventfd::EventFd;

use crate::Error;

/// The REQ eventfd, attached to the device for the VM's life (the attachment goes
/// with the device fd).
pub struct ReqWatch {
    efd: EventFd,
}

impl ReqWatch {
    /// Attaches a fresh eventfd to the device's REQ vector (VFIO_DEVICE_SET_IRQS,
    /// ACTION_TRIGGER | DATA_EVENTFD).
    pub fn attach(dev: &Device) -> Result<Self, Error> {
        let efd = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| Error::Setup(format!("eventfd (REQ): {e}")))?;
        dev.set_irq_eventfds(irq::REQ, 0, &[efd.as_raw_fd()])
            .map_err(|e| {
                Error::Setup(format!(
                    "--vgpu {}: attaching the REQ eventfd: {e}",
                    dev.name()
                ))
            })?;
        Ok(ReqWatch { efd })
    }

    /// The fd to wait on.
    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Drains the eventfd; true if the host asked at least once since the last call.
    pub fn take(&self) -> bool {
        matches!(self.efd.read(), Ok(n) if n > 0)
    }
}
