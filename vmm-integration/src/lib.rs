//! vgpu-vmm: the project's own VMM, built on rust-vmm crates. This first part boots a
//! Linux guest (PVH vmlinux or bzImage, initrd, command line) with N vCPUs, RAM, and a serial
//! console, and ends with an exit status a script can use ([`ExitStatus`]); a vGPU
//! attaches as a PCI device ([`vgpu`]). What is missing: docs/vmm.md.
//!
//! # Crates, and why each
//! * **kvm-ioctls / kvm-bindings**: safe wrappers for every KVM ioctl we use (VM, vCPU,
//!   memory slots, irqchip, PIT, irqfd, CPUID); the de-facto base of Firecracker and
//!   Cloud Hypervisor, so what we learn carries over.
//! * **vm-memory** (`backend-mmap`): guest RAM as mmapped regions with bounds-checked
//!   access; linux-loader writes into it directly, and the same regions later get mapped
//!   for VFIO DMA.
//! * **linux-loader** (`elf`, `bzimage`): loads the vmlinux at its ELF addresses and
//!   finds the PVH entry note, or loads a bzImage and hands back its setup header;
//!   builds the kernel command line; writes the PVH `hvm_start_info` with its memory
//!   map and module list, or the zero page. The boot protocol details stay in one
//!   audited crate.
//! * **vm-superio**: a tested 8250 UART model (registers, FIFO, interrupt logic); we
//!   only wire it to port I/O and an irqfd.
//! * **vmm-sys-util**: EventFd (irqfds, wake-ups), epoll, and signal helpers
//!   (pthread_kill for vCPU kicks, sigsets).
//! * **epoll rather than event-manager**: the main thread waits on two fds (the
//!   signalfd and the end-of-VM eventfd); event-manager's subscriber machinery would be
//!   more code than the loop it replaces; the vGPU's REQ eventfd (`req.rs`) is a third
//!   fd in the same loop. It is worth revisiting when serial input joins.
//! * **vgpu-vfio** (the project's VFIO client, on vfio-ioctls/vfio-bindings) rather
//!   than vfio-ioctls directly: it already opens an mdev by its sysfs path with the
//!   container/group API both rig kernels have, knows the vgpu regions, and is the code
//!   the rig tests exercise against the module.
//! * **clap** (derive): flags with ranges checked and clear errors; **log** +
//!   **env_logger**: `RUST_LOG=debug` shows the boot steps; **thiserror**: [`Error`].
//!
//! # Layout of the crate
//! [`config`] (flags), [`layout`] (memory map, e820), [`acpi`] (MADT for the vCPUs,
//! FADT/DSDT for power off and reset), [`boot`] (kernel, initrd, start info), [`cpu`]
//! (vCPU registers, CPUID), [`cpu_state`] (a vCPU's state when the VM is stopped from
//! outside), [`devices`] (serial, power, reset ports), [`pci`] (config mechanism #1,
//! host bridge), [`vgpu`] (the vGPU through VFIO), [`vcpu`] (the vCPU threads), [`vm`]
//! (one VM from start to end).

pub mod acpi;
pub mod boot;
pub mod config;
pub mod cpu;
pub mod cpu_state;
pub mod devices;
pub mod display;
pub mod dma;
pub mod domain_xml;
pub mod ioeventfd;
pub mod irq;
pub mod layout;
pub mod pci;
pub mod req;
pub mod vcpu;
pub mod vgpu;
pub mod vm;

use devices::GuestEvent;
use vcpu::VmEnd;

/// Everything that can go wrong before or while running a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration (flags that parse but make no sense, missing files).
    #[error("{0}")]
    Config(String),
    /// Loading the kernel, initrd or boot structures.
    #[error("{0}")]
    Boot(String),
    /// Setting up the host side (KVM device, memory, fds).
    #[error("{0}")]
    Setup(String),
    /// A KVM ioctl failed.
    #[error("{0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
}

/// The process exit status, for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: the guest powered off (ACPI S5).
    PowerOff,
    /// 1: the VMM failed: setup (no KVM, a kernel that does not load, too little
    /// memory for the initrd) or an ioctl while running.
    VmmError,
    /// 2: bad command-line arguments (clap's own status), including files that do not
    /// exist.
    Usage,
    /// 3: the guest reset: reboot, a panic with `panic=-1` (the default command line),
    /// a triple fault.
    Reset,
    /// 4: KVM could not run the guest (internal error, failed entry).
    Crashed,
    /// 5: the host asked for the vGPU back (VFIO REQ: `remove` of the instance while
    /// the VM ran); vgpu-vmm shut the VM down and released it.
    Released,
    /// 128 + n: stopped by signal n (SIGTERM: 143, SIGINT: 130).
    Signal(i32),
}

impl ExitStatus {
    /// The number the process exits with.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::PowerOff => 0,
            ExitStatus::VmmError => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Reset => 3,
            ExitStatus::Crashed => 4,
            ExitStatus::Released => 5,
            ExitStatus::Signal(n) => 128 + n,
        }
    }
}

impl From<&VmEnd> for ExitStatus {
    fn from(e: &VmEnd) -> Self {
        match e {
            VmEnd::Guest(GuestEvent::PowerOff) => ExitStatus::PowerOff,
            VmEnd::Guest(GuestEvent::Reset) => ExitStatus::Reset,
            VmEnd::Crashed(_) => ExitStatus::Crashed,
            VmEnd::Failed(_) => ExitStatus::VmmError,
            VmEnd::Signal(n) => ExitStatus::Signal(*n),
            VmEnd::Released => ExitStatus::Released,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_documented() {
        let all = [
            (VmEnd::Guest(GuestEvent::PowerOff), 0),
            (VmEnd::Failed("x".into()), 1),
            (VmEnd::Guest(GuestEvent::Reset), 3),
            (VmEnd::Crashed("x".into()), 4),
            (VmEnd::Released, 5),
            (VmEnd::Signal(libc::SIGTERM), 143),
            (VmEnd::Signal(libc::SIGINT), 130),
        ];
        for (end, code) in all {
            assert_eq!(ExitStatus::from(&end).code(), code, "{end:?}");
        }
        assert_eq!(ExitStatus::Usage.code(), 2);
    }
}
