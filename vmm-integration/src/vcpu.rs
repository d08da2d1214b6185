//! The vCPU threads: run KVM_RUN, hand port I/O to the [`PioBus`], and report the
//! first thing that ends the VM. A thread stops when the VM is stopping: the main
//! thread sets [`VmState::stopping`] and kicks each vCPU out of KVM_RUN with
//! [`KICK_SIGNAL`] (the flag is checked before every KVM_RUN, and the kick is
//! repeated until the thread has exited, so a kick that lands just before KVM_RUN
//! is not lost).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;

use crate::cpu_state::DeviceExit;
use crate::devices::{GuestEvent, PioBus};

/// The signal that kicks a vCPU thread out of KVM_RUN (its handler does nothing).
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}
/// Same, as a name for the docs.
pub const KICK_SIGNAL: &str = "SIGRTMIN";

/// Why a VM ended, decided by the vCPUs or the main thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEnd {
    /// A device or the CPU ended the guest.
    Guest(GuestEvent),
    /// KVM could not run the vCPU (internal error, failed entry, unexpected exit).
    Crashed(String),
    /// A KVM_RUN failed in a way that is the VMM's problem.
    Failed(String),
    /// The VMM was told to stop (the signal number).
    Signal(i32),
    /// The host asked for the vGPU back (VFIO REQ, `req.rs`): the VM was shut down to
    /// release it.
    Released,
}

/// What the vCPU threads and the main thread share.
pub struct VmState {
    /// Set once the VM is going down: vCPUs stop at their next chance.
    pub stopping: AtomicBool,
    /// The first reason the VM ended (later ones are dropped).
    pub end: Mutex<Option<VmEnd>>,
    /// Written when `end` is set: wakes the main thread.
    pub end_evt: EventFd,
}

impl VmState {
    /// Fresh state.
    pub fn new() -> std::io::Result<Self> {
        Ok(VmState {
            stopping: AtomicBool::new(false),
            end: Mutex::new(None),
            end_evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Records why the VM ends (if nothing did first), and starts stopping it.
    pub fn finish(&self, why: VmEnd) {
        let mut g = self.end.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            log::debug!("VM ends: {why:?}");
            *g = Some(why);
        }
        drop(g);
        self.stopping.store(true, Ordering::SeqCst);
        if let Err(e) = self.end_evt.write(1) {
            log::error!("waking the main thread: {e}");
        }
    }

    /// Why the VM ended, if it has.
    pub fn end(&self) -> Option<VmEnd> {
        self.end.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler; once per process, before the vCPU threads start.
pub fn install_kick_handler() -> Result<(), crate::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
        .map_err(|e| crate::Error::Setup(format!("installing the vCPU kick handler: {e}")))
}

/// Counts of a vCPU's exits to userspace, for `RUST_LOG=debug` (where the VMM's time
/// goes: each exit is a round trip through KVM and this thread).
#[derive(Default)]
struct ExitCounts {
    total: u64,
    mmio: u64,
    pio: std::collections::HashMap<u16, u64>,
    /// When the guest last exited to this thread for a device (not a kick), and why.
    last: Option<(std::time::Instant, DeviceExit)>,
}

impl ExitCounts {
    fn port(&mut self, port: u16) {
        *self.pio.entry(port).or_default() += 1;
        self.last = Some((std::time::Instant::now(), DeviceExit::Port(port)));
    }

    fn mmio(&mut self, addr: u64) {
        self.mmio += 1;
        self.last = Some((std::time::Instant::now(), DeviceExit::Mmio(addr)));
    }

    fn report(&self, id: u8) {
        let mut ports: Vec<_> = self.pio.iter().map(|(p, n)| (*n, *p)).collect();
        ports.sort_unstable_by(|a, b| b.cmp(a));
        let top: Vec<String> = ports
            .iter()
            .take(6)
            .map(|(n, p)| format!("{p:#x}:{n}"))
            .collect();
        log::debug!(
            "vCPU {id}: {} exits to userspace ({} MMIO); port I/O by port: {}",
            self.total,
            self.mmio,
            top.join(" ")
        );
    }
}

/// The vCPU thread's body: runs until the VM stops.
pub fn run(id: u8, mut vcpu: VcpuFd, bus: Arc<PioBus>, state: Arc<VmState>) {
    let mut first = true;
    let mut counts = ExitCounts::default();
    while !state.stopping.load(Ordering::SeqCst) {
        if first {
            log::debug!("vCPU {id}: first KVM_RUN");
            first = false;
        }
        let exit = vcpu.run();
        counts.total += 1;
        let end = match exit {
            Ok(VcpuExit::IoIn(port, data)) => {
                counts.port(port);
                bus.read(port, data);
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                counts.port(port);
                bus.write(port, data).map(VmEnd::Guest)
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                counts.mmio(addr);
                if !bus.pci().mmio_read(addr, data) {
                    log::trace!("vCPU {id}: MMIO read {addr:#x}: no device");
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                counts.mmio(addr);
                crate::ioeventfd::note_mmio_write(addr);
                if !bus.pci().mmio_write(addr, data) {
                    log::trace!("vCPU {id}: MMIO write {addr:#x}: no device");
                }
                None
            }
            // A triple fault: what a PC does is reset.
            Ok(VcpuExit::Shutdown) => Some(VmEnd::Guest(GuestEvent::Reset)),
            Ok(VcpuExit::SystemEvent(kind, _)) => Some(match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => VmEnd::Guest(GuestEvent::PowerOff),
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => VmEnd::Guest(GuestEvent::Reset),
                k => VmEnd::Crashed(format!("vCPU {id}: system event {k}")),
            }),
            Ok(VcpuExit::Hlt) => Some(VmEnd::Crashed(format!(
                "vCPU {id}: HLT exit (the in-kernel irqchip should handle it)"
            ))),
            Ok(VcpuExit::Intr) => None,
            Ok(VcpuExit::InternalError) => {
                Some(VmEnd::Crashed(format!("vCPU {id}: KVM internal error")))
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(VmEnd::Crashed(format!(
                "vCPU {id}: KVM entry failed (reason {reason:#x}, cpu {cpu})"
            ))),
            Ok(other) => Some(VmEnd::Crashed(format!(
                "vCPU {id}: unexpected exit {other:?}"
            ))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(VmEnd::Failed(format!("vCPU {id}: KVM_RUN: {e}"))),
        };
        if let Some(why) = end {
            state.finish(why);
        }
    }
    counts.report(id);
    if matches!(state.end(), Some(VmEnd::Signal(_))) {
        // Stopped from outside (an operator, or a test's timeout): where the guest was
        // is what tells a hung guest (halted, a timer due or a vector pending) from a
        // slow one.
        eprintln!(
            "vgpu-vmm: {}",
            crate::cpu_state::describe(id, &vcpu, counts.last)
        );
    }
    log::debug!("vCPU {id}: stopped");
}
