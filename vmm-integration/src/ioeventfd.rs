//! Doorbells without a VMM round trip: one eventfd is both a KVM ioeventfd on the
//! guest-physical address of the engine's DOORBELL register (in BAR2) and the device's
//! `VFIO_DEVICE_IOEVENTFD` for that register. A guest's write at that address (KVM
//! matches any length and value: DOORBELL takes any) is then
//! completed by KVM inside KVM_RUN (no exit to userspace) and the signal reaches the
//! engine through vgpu_shim as a trapped doorbell write would (docs/device-abi.md,
//! "ioeventfd"). Writes to DOORBELL's other bytes, and every other BAR2 register, exit and
//! are forwarded as before. `--no-ioeventfd` leaves the doorbell trapped (for the
//! benchmark's comparison).
//!
//! Exits that reach userspace for a write to DOORBELL are counted ([`note_mmio_write`],
//! printed by `vgpu-vmm` at exit) so the rig can tell the two paths apart.

use std::sync::atomic::{AtomicU64, Ordering};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vgpu_vfio::abi::engine::DOORBELL;
use vgpu_vfio::Device;
use vmm_sys_util::eventfd::EventFd;

use crate::Error;

/// Guest-physical address of DOORBELL, or 0 before a vGPU is attached.
static DOORBELL_GPA: AtomicU64 = AtomicU64::new(0);
/// MMIO write exits to DOORBELL seen by the vCPU threads.
static DOORBELL_EXITS: AtomicU64 = AtomicU64::new(0);

/// DOORBELL's eventfd: registered with the device for the VM's life, and with KVM at
/// wherever the guest decodes BAR2 (`vgpu.rs` moves it with the BAR).
pub struct Doorbell {
    efd: EventFd,
}

/// Records where DOORBELL is for [`note_mmio_write`] (`None`: BAR2 not decoded), whether
/// or not the ioeventfd is used.
pub fn set_doorbell_gpa(bar2_gpa: Option<u64>) {
    DOORBELL_GPA.store(bar2_gpa.map_or(0, |a| a + DOORBELL), Ordering::Relaxed);
}

/// Called by a vCPU thread for every MMIO write exit.
pub fn note_mmio_write(addr: u64) {
    let db = DOORBELL_GPA.load(Ordering::Relaxed);
    if db != 0 && (db..db + 4).contains(&addr) {
        DOORBELL_EXITS.fetch_add(1, Ordering::Relaxed);
    }
}

/// MMIO write exits to DOORBELL so far.
pub fn doorbell_exits() -> u64 {
    DOORBELL_EXITS.load(Ordering::Relaxed)
}

impl Doorbell {
    /// A fresh eventfd, registered with the device (each signal = a 4-byte write of
    /// `DOORBELL_DATA` at DOORBELL). The device side first: a KVM ioeventfd nobody
    /// listens to would swallow doorbells.
    pub fn new(dev: &Device) -> Result<Self, Error> {
        let efd = EventFd::new(libc::EFD_NONBLOCK)
            .map_err(|e| Error::Setup(format!("eventfd (doorbell): {e}")))?;
        dev.set_doorbell_ioeventfd(&efd).map_err(|e| {
            Error::Setup(format!(
                "{}: {e} (a vgpu_shim without VFIO_DEVICE_IOEVENTFD? --no-ioeventfd traps the doorbell)",
                dev.name()
            ))
        })?;
        Ok(Doorbell { efd })
    }

    /// KVM: writes at `bar2_gpa + DOORBELL` (any length and value) signal the eventfd.
    pub fn register(&self, vm: &VmFd, bar2_gpa: u64) -> Result<(), kvm_ioctls::Error> {
        let gpa = bar2_gpa + DOORBELL;
        vm.register_ioevent(&self.efd, &IoEventAddress::Mmio(gpa), NoDatamatch)?;
        log::info!("doorbell at {gpa:#x}: KVM ioeventfd paired with VFIO_DEVICE_IOEVENTFD");
        Ok(())
    }

    /// Undoes [`Doorbell::register`] for the same `bar2_gpa`.
    pub fn unregister(&self, vm: &VmFd, bar2_gpa: u64) -> Result<(), kvm_ioctls::Error> {
        vm.unregister_ioevent(
            &self.efd,
            &IoEventAddress::Mmio(bar2_gpa + DOORBELL),
            NoDatamatch,
        )
    }
}
