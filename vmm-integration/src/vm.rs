//! One VM from start to end: KVM, guest RAM, the in-kernel irqchip and PIT, the boot
//! image, the devices, the vCPU threads, and the main thread waiting for the end
//! (a guest event from a vCPU, or SIGTERM/SIGINT through a signalfd).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::config::VmConfig;
use crate::devices::{PioBus, SerialOut, COM1_IRQ};
use crate::layout::{MemoryLayout, KVM_TSS_ADDR, MIB};
use crate::vcpu::{self, VmEnd, VmState};
use crate::{boot, cpu, Error};

/// How a VM run went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Why it ended.
    pub end: VmEnd,
    /// From `started` (process start) to the vCPU threads being launched.
    pub setup: Duration,
    /// From the vCPU threads' launch to the VM's end.
    pub ran: Duration,
}

/// The signals that stop the VM (blocked in every thread, read from a signalfd).
const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// Blocks SIGTERM and SIGINT in this thread (and the threads it starts) and returns a
/// signalfd for them. Call first, so that a SIGTERM during setup is not lost.
pub fn stop_signalfd() -> Result<OwnedFd, Error> {
    let set = vmm_sys_util::signal::create_sigset(&STOP_SIGNALS)
        .map_err(|e| Error::Setup(format!("sigset: {e}")))?;
    // SAFETY: `set` is a valid, initialised sigset; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(Error::Setup(format!(
            "blocking SIGTERM/SIGINT: {}",
            std::io::Error::from_raw_os_error(rc)
        )));
    }
    // SAFETY: `set` is valid; -1 asks for a new fd, which we own from here on.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::Setup(format!(
            "signalfd: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Boots the VM described by `cfg` and runs it to its end. `signals` comes from
/// [`stop_signalfd`]; `started` is when the process started (for the setup time).
///
/// The vGPU is opened once and stays open for the process's life: a guest reboot
/// resets it (`VFIO_DEVICE_RESET`: engine stopped, registers, command register and MSI
/// back to their reset values; VRAM kept, as on a real GPU) before the VM exits or,
/// with `--on-reboot restart`, before the same kernel boots again on a fresh KVM VM.
/// Without that reset a restarted guest would find the previous boot's ring enabled
/// and its registers programmed, and the last close (which resets too) never comes.
pub fn run(cfg: &VmConfig, signals: OwnedFd, started: Instant) -> Result<Outcome, Error> {
    let dev = match &cfg.vgpu {
        Some(p) => {
            Some(Arc::new(vgpu_vfio::Device::open(p).map_err(|e| {
                Error::Setup(format!("--vgpu {}: {e}", p.display()))
            })?))
        }
        None => None,
    };
    let req = dev
        .as_deref()
        .map(crate::req::ReqWatch::attach)
        .transpose()?;
    let mut start = started;
    loop {
        let o = run_once(cfg, &signals, start, dev.as_ref(), req.as_ref())?;
        let reset = o.end == VmEnd::Guest(crate::devices::GuestEvent::Reset);
        if let (true, Some(d)) = (reset, &dev) {
            d.reset()
                .map_err(|e| Error::Setup(format!("VFIO_DEVICE_RESET of {}: {e}", d.name())))?;
            log::info!("guest reset: vGPU {} reset (VFIO_DEVICE_RESET)", d.name());
        }
        if !(reset && cfg.restart_on_reboot) {
            return Ok(o);
        }
        eprintln!(
            "vgpu-vmm: guest reset{}; restarting the VM",
            if dev.is_some() {
                ": vGPU reset (VFIO_DEVICE_RESET)"
            } else {
                ""
            }
        );
        start = Instant::now();
    }
}

/// One boot of the VM, from KVM_CREATE_VM to the last vCPU thread joined. `dev` (and
/// its REQ watch) outlive it.
fn run_once(
    cfg: &VmConfig,
    signals: &OwnedFd,
    started: Instant,
    dev: Option<&Arc<vgpu_vfio::Device>>,
    req: Option<&crate::req::ReqWatch>,
) -> Result<Outcome, Error> {
    let kvm_path = std::ffi::CString::new(cfg.kvm.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Config(format!("--kvm {}: NUL in path", cfg.kvm.display())))?;
    let kvm = Kvm::new_with_path(kvm_path).map_err(|e| {
        Error::Setup(format!(
            "{}: {e} (is kvm_intel/kvm_amd loaded?)",
            cfg.kvm.display()
        ))
    })?;
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(Error::Setup(format!(
                "{}: KVM lacks {name}",
                cfg.kvm.display()
            )));
        }
    }
    // Shared with the vGPU, which routes its MSI (irq.rs).
    let vm = Arc::new(
        kvm.create_vm()
            .map_err(|e| Error::Kvm("KVM_CREATE_VM", e))?,
    );
    vm.set_tss_address(KVM_TSS_ADDR as usize)
        .map_err(|e| Error::Kvm("KVM_SET_TSS_ADDR", e))?;
    vm.create_irq_chip()
        .map_err(|e| Error::Kvm("KVM_CREATE_IRQCHIP", e))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| Error::Kvm("KVM_CREATE_PIT2", e))?;

    let layout = MemoryLayout::new(cfg.memory_mib);
    let mem = guest_memory(&vm, &layout)?;
    let boot = boot::load(
        &mem,
        &layout,
        cfg.vcpus,
        &cfg.kernel,
        cfg.initrd.as_deref(),
        &cfg.cmdline,
    )?;

    let out: SerialOut = match &cfg.serial_file {
        Some(p) => Box::new(
            File::create(p)
                .map_err(|e| Error::Setup(format!("--serial-file {}: {e}", p.display())))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let irq =
        EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Setup(format!("eventfd: {e}")))?;
    vm.register_irqfd(&irq, COM1_IRQ)
        .map_err(|e| Error::Kvm("KVM_IRQFD (serial)", e))?;
    // Guest RAM for the device's DMA (type1, iova = guest-physical), for this boot.
    let _dma = match dev {
        Some(d) => Some(crate::dma::DmaMap::map(d, &mem)?),
        None => None,
    };
    let vgpu = match dev {
        Some(d) => Some(Arc::new(crate::vgpu::Vgpu::new(
            d.clone(),
            vm.clone(),
            cfg.ioeventfd,
        )?)),
        None => None,
    };
    let display = match (&cfg.display_png, &vgpu) {
        (Some(d), Some(v)) => Some(crate::display::Writer::start(d.clone(), v.clone())),
        _ => None,
    };
    let bus = Arc::new(PioBus::new(irq, out, vgpu));

    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| Error::Kvm("KVM_GET_SUPPORTED_CPUID", e))?;
    let opts = cpu::CpuidOpts {
        no_xsave: cfg.no_xsave,
        tsc_deadline: kvm.check_extension(Cap::TscDeadlineTimer),
    };
    let mut vcpus = Vec::with_capacity(usize::from(cfg.vcpus));
    for id in 0..cfg.vcpus {
        let v = vm
            .create_vcpu(u64::from(id))
            .map_err(|e| Error::Kvm("KVM_CREATE_VCPU", e))?;
        cpu::setup(&v, &cpuid, id, cfg.vcpus, &boot, opts)?;
        vcpus.push(v);
    }

    let state = Arc::new(VmState::new().map_err(|e| Error::Setup(format!("eventfd: {e}")))?);
    vcpu::install_kick_handler()?;
    let setup = started.elapsed();
    let launched = Instant::now();
    log::info!(
        "{} vCPU(s), {} MiB, setup {} ms",
        cfg.vcpus,
        layout.total() / MIB,
        setup.as_millis()
    );
    let mut threads = Vec::with_capacity(vcpus.len());
    for (id, v) in vcpus.into_iter().enumerate() {
        let (bus, st) = (bus.clone(), state.clone());
        let id = id as u8;
        let t = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || vcpu::run(id, v, bus, st));
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                state.finish(VmEnd::Failed(format!("starting vCPU {id}: {e}")));
                break;
            }
        }
    }

    if let Err(e) = wait_for_end(&state, signals, req) {
        state.finish(VmEnd::Failed(e));
    }
    stop_vcpus(&state, threads);
    let end = state
        .end()
        .unwrap_or_else(|| VmEnd::Failed("the VM stopped without a reason".into()));
    if let Some(d) = display {
        match d.finish() {
            Ok(true) => log::info!("--display-png: last frame written"),
            Ok(false) => eprintln!("vgpu-vmm: --display-png: the display was off, no frame"),
            Err(e) => eprintln!("vgpu-vmm: {e}"),
        }
    }
    Ok(Outcome {
        end,
        setup,
        ran: launched.elapsed(),
    })
}

/// Allocates the guest RAM and registers each range as a KVM memory slot.
fn guest_memory(vm: &VmFd, layout: &MemoryLayout) -> Result<GuestMemoryMmap, Error> {
    let ranges: Vec<(GuestAddress, usize)> = layout
        .ram
        .iter()
        .map(|&(a, s)| usize::try_from(s).map(|s| (a, s)))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::Setup("guest RAM size does not fit this host".into()))?;
    let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| {
        Error::Setup(format!(
            "cannot allocate {} MiB of guest RAM: {e}",
            layout.total() / MIB
        ))
    })?;
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| Error::Setup(format!("guest RAM mapping: {e}")))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the range [host, host + len) is a live mapping owned by `mem`, which
        // outlives the VM's use of it: `mem` is dropped only after the vCPU threads have
        // been joined (end of `run`), and the VM fd goes with it.
        unsafe { vm.set_user_memory_region(r) }
            .map_err(|e| Error::Kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(mem)
}

/// Waits for a vCPU to end the VM, for a stop signal, or for the host to ask for the
/// vGPU back (`req`, VFIO REQ).
fn wait_for_end(
    state: &VmState,
    signals: &OwnedFd,
    req: Option<&crate::req::ReqWatch>,
) -> Result<(), String> {
    const SIG: u64 = 1;
    const END: u64 = 2;
    const REQ: u64 = 3;
    let ep = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut fds = vec![(signals.as_raw_fd(), SIG), (state.end_evt.as_raw_fd(), END)];
    fds.extend(req.map(|r| (r.fd(), REQ)));
    for (fd, tag) in fds {
        ep.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, tag),
        )
        .map_err(|e| format!("epoll_ctl: {e}"))?;
    }
    let mut events = [EpollEvent::default(); 3];
    loop {
        let n = match ep.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        };
        for ev in &events[..n] {
            match ev.data() {
                SIG => {
                    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
                    // SAFETY: reading into a buffer of exactly one signalfd_siginfo.
                    let r = unsafe {
                        libc::read(signals.as_raw_fd(), info.as_mut_ptr().cast(), info.len())
                    };
                    if r == info.len() as isize {
                        let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
                        log::info!("signal {signo}: stopping the VM");
                        state.finish(VmEnd::Signal(signo));
                    }
                }
                REQ => {
                    if req.is_some_and(|r| r.take()) {
                        eprintln!(
                            "vgpu-vmm: the host asked for the vGPU back (VFIO REQ): shutting the VM down to release it"
                        );
                        state.finish(VmEnd::Released);
                    }
                }
                _ => {
                    // Only the flag matters; the counter is drained for tidiness.
                    let _ = state.end_evt.read();
                }
            }
        }
        if state.end().is_some() {
            return Ok(());
        }
    }
}

/// Kicks every vCPU thread out of KVM_RUN until it has exited, then joins it.
fn stop_vcpus(state: &VmState, threads: Vec<JoinHandle<()>>) {
    state
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        while !t.is_finished() {
            if let Err(e) = t.kill(vcpu::kick_signal()) {
                log::warn!("kicking a vCPU: {e}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.join().is_err() {
            state.finish(VmEnd::Failed("a vCPU thread panicked".into()));
        }
    }
}
