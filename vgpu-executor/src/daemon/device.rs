//! The kernel's side for real: `/dev/vgpu-exec/<parent>` (docs/executor.md, "The
//! handoff queue"), and the signals that stop the daemon.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use vgpu_exec_queue::Device;

use super::queue::{Kernel, Mapping, QueueMem};

/// The per-parent character device, opened and its queue mapped.
pub struct DeviceKernel {
    dev: Device,
}

impl DeviceKernel {
    /// Open `path` (one daemon at a time: `EBUSY` otherwise), tell the kernel the
    /// largest VRAM binding `window` (`exec::IOC_SET_WINDOW`: it then cuts pieces of
    /// larger VRAMs to fit a window), and check the queue's header.
    pub fn open(path: &str, window: u64) -> Result<DeviceKernel, String> {
        let dev = Device::open(Path::new(path)).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => {
                format!("{path}: busy (EBUSY): another vgpu-executor serves this parent")
            }
            Some(libc::ENOENT) => format!(
                "{path}: no such device (is vgpu_shim loaded, and is this a parent name as \
                 in /dev/vgpu-exec/?)"
            ),
            _ => format!("{path}: {e}"),
        })?;
        // Right after the open: the kernel hands pieces as soon as the device is open.
        if let Err(e) = dev.set_window(window) {
            if e.raw_os_error() != Some(libc::ENOTTY) {
                return Err(format!("{path}: setting the window to {window:#x}: {e}"));
            }
            // A module from before IOC_SET_WINDOW: it does not cut pieces to fit, and a
            // piece no window holds is refused (its ring stops with EXECUTOR).
            log::warn!(
                "{path}: the module does not take IOC_SET_WINDOW (too old): pieces of VRAMs \
                 larger than {} MiB that no window holds will be refused",
                window >> 20
            );
        }
        dev.queue()
            .check_header()
            .map_err(|e| format!("{path}: {e}"))?;
        Ok(DeviceKernel { dev })
    }
}

impl Kernel for DeviceKernel {
    fn queue(&self) -> &QueueMem {
        self.dev.queue()
    }

    fn wait(&mut self, timeout_ms: i32) -> io::Result<()> {
        self.dev.poll(timeout_ms).map(|_| ())
    }

    fn kick(&mut self) -> io::Result<()> {
        self.dev.kick().map(|_| ())
    }

    fn map_vram(&mut self, id: u32, len: usize) -> io::Result<Mapping> {
        self.dev.map_vram(id, len)
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Make SIGTERM and SIGINT set the stop flag ([`stop_requested`]); without SA_RESTART,
/// so a `poll` in progress returns.
pub fn install_signal_handlers() -> io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic
        // (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Whether SIGTERM or SIGINT arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// `vgpu-executor --serve PATH`: open the device, pick the GPU, serve until SIGTERM or
/// SIGINT (the batch in hand is finished and completed first), log the counters.
pub fn serve(
    path: &str,
    sel: &crate::DeviceSelector,
    metrics_file: Option<&std::path::Path>,
    batch: usize,
) -> Result<(), String> {
    install_signal_handlers().map_err(|e| format!("signal handlers: {e}"))?;
    let parent = std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string());
    let ex = crate::Executor::new(sel).map_err(|e| e.to_string())?;
    if !ex.info().external_memory_host {
        return Err(format!(
            "{}: no VK_EXT_external_memory_host: the kernel's VRAM pages cannot be imported \
             (docs/executor.md)",
            ex.info().name
        ));
    }
    // Before the device is opened (the kernel hands pieces as soon as it is): the first
    // dispatch of each pipeline compiles it, seconds on lavapipe, which the first pieces
    // would otherwise wait for, up to the kernel's watchdog.
    let t = std::time::Instant::now();
    ex.warm_up().map_err(|e| format!("warm-up: {e}"))?;
    log::info!(
        "warm-up: every shader compiled and checked against the reference in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let k = DeviceKernel::open(path, ex.window_size())?;
    log::info!(
        "serving {path} (parent {parent}) on {}, up to {batch} pieces per submission, \
         VRAMs up to {} MiB, larger than {} MiB through windows",
        ex.info().name,
        ex.max_vram_size() >> 20,
        ex.window_size() >> 20
    );
    let mut d = super::Daemon::new(&ex, k, batch);
    let r = d.run(&stop_requested, metrics_file.map(|p| (p, parent.as_str())));
    log::info!("exiting: {}", d.metrics().summary());
    r.map_err(|e| format!("{path}: {e}"))
}
