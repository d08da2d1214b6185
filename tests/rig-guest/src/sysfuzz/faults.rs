//! Fault injection for `sysfuzz --fail-inject` (needs CONFIG_FAILSLAB,
//! CONFIG_FAIL_PAGE_ALLOC and CONFIG_FAULT_INJECTION_DEBUG_FS, as in the debug kernel).
//!
//! The precise tool is `/proc/<tid>/fail-nth` (Documentation/fault-injection): writing N
//! makes the N-th fault-injection point the task reaches fail, once, whatever the
//! probability. The fuzzer arms it right before the syscall of an injected operation and
//! reads it back afterwards (0: the failure was injected), so each injected operation
//! fails exactly one allocation of its path: create, first VRAM touch, SET_IRQS, region
//! info, the display copy. The engine kthreads (`vgpu<N>/e<k>`) are armed the same way
//! through their own `fail-nth`, so a page allocation of the engine fails.
//!
//! Why not `require-start/require-end` (allocations from the module's text only): that
//! stack filter (CONFIG_FAULT_INJECTION_STACKTRACE_FILTER) `depends on !X86_64`, so x86-64
//! kernels cannot have it; fail-nth reaches the module's allocations from the syscalls
//! that lead to them instead.
//!
//! Global attributes: probability 0 (nothing fails at random), `ignore-gfp-wait` N (the
//! module allocates with GFP_KERNEL), `ignore-gfp-highmem` N and `min-order` 0 (VRAM pages
//! are order-0 GFP_HIGHUSER), `verbose` 0 (no call traces in dmesg: the rig fails on
//! those). The previous values are restored at the end.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const DEBUGFS: &str = "/sys/kernel/debug";

/// Attribute settings: (directory, attribute, value).
const SETTINGS: [(&str, &str, &str); 8] = [
    ("failslab", "probability", "0"),
    ("failslab", "verbose", "0"),
    ("failslab", "ignore-gfp-wait", "N"),
    ("fail_page_alloc", "probability", "0"),
    ("fail_page_alloc", "verbose", "0"),
    ("fail_page_alloc", "ignore-gfp-wait", "N"),
    ("fail_page_alloc", "ignore-gfp-highmem", "N"),
    ("fail_page_alloc", "min-order", "0"),
];

fn read_trim(p: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(p)?.trim().to_string())
}

fn write_value(p: &Path, v: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(p)?;
    f.write_all(v.as_bytes())
}

/// The global fault-injection configuration, restored on [`Faults::restore`].
pub struct Faults {
    saved: Vec<(PathBuf, String)>,
}

impl Faults {
    /// Mount debugfs if needed, check the fault-injection directories exist and configure
    /// them for fail-nth injection.
    pub fn setup() -> Result<Faults, String> {
        let root = Path::new(DEBUGFS);
        if !root.join("failslab").exists() {
            // Best effort: it may be mounted already, or not built in.
            let _ = std::process::Command::new("mount")
                .args(["-t", "debugfs", "debugfs", DEBUGFS])
                .status();
        }
        for d in ["failslab", "fail_page_alloc"] {
            if !root.join(d).is_dir() {
                return Err(format!(
                    "{DEBUGFS}/{d} missing: --fail-inject needs a kernel with CONFIG_FAILSLAB, \
                     CONFIG_FAIL_PAGE_ALLOC and CONFIG_FAULT_INJECTION_DEBUG_FS (rig.sh --kernel debug)"
                ));
            }
        }
        if !Path::new("/proc/self/fail-nth").exists() {
            return Err("/proc/self/fail-nth missing (CONFIG_FAULT_INJECTION)".into());
        }
        let mut saved = Vec::new();
        for (d, a, v) in SETTINGS {
            let p = root.join(d).join(a);
            let old = read_trim(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
            write_value(&p, v).map_err(|e| format!("write {v} to {}: {e}", p.display()))?;
            saved.push((p, old));
        }
        Ok(Faults { saved })
    }

    /// Put the attributes back as they were.
    pub fn restore(&self) {
        for (p, v) in self.saved.iter().rev() {
            let _ = write_value(p, v);
        }
    }
}

/// One task's `fail-nth` file. Arming and reading it back allocate nothing in the
/// calling process (stack buffers, raw syscalls): an allocation between arming and the
/// operation could itself take the injected failure (malloc's mmap failing aborts).
pub struct FailNth {
    file: File,
    armed: bool,
}

impl FailNth {
    /// The calling thread's.
    pub fn this_thread() -> std::io::Result<FailNth> {
        Self::open(Path::new("/proc/thread-self/fail-nth"))
    }

    /// Another task's (`/proc/<pid>/fail-nth`).
    pub fn of_task(pid: u32) -> std::io::Result<FailNth> {
        Self::open(&PathBuf::from(format!("/proc/{pid}/fail-nth")))
    }

    fn open(p: &Path) -> std::io::Result<FailNth> {
        let file = OpenOptions::new().read(true).write(true).open(p)?;
        Ok(FailNth { file, armed: false })
    }

    fn put(&self, n: u32) -> std::io::Result<()> {
        let mut buf = [0u8; 12];
        let mut i = buf.len();
        let mut v = n;
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let len = buf.len() - i;
        // SAFETY: writes `len` bytes from a live stack buffer to our fd.
        let r = unsafe {
            libc::pwrite(
                self.file.as_raw_fd(),
                buf[i..].as_ptr() as *const libc::c_void,
                len,
                0,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Make the `n`-th injection point of the task fail (n ≥ 1).
    pub fn arm(&mut self, n: u32) -> std::io::Result<()> {
        self.put(n)?;
        self.armed = true;
        Ok(())
    }

    /// Whether the armed failure was injected; disarms the rest. False if not armed.
    pub fn disarm(&mut self) -> std::io::Result<bool> {
        if !self.armed {
            return Ok(false);
        }
        self.armed = false;
        let left = self.left()?;
        if left != 0 {
            self.put(0)?;
        }
        Ok(left == 0)
    }

    /// Whether it is armed (as far as this handle knows).
    pub fn is_armed(&self) -> bool {
        self.armed
    }

    /// Injection points left before the armed failure (0: injected, or not armed).
    pub fn left(&self) -> std::io::Result<u64> {
        let mut buf = [0u8; 24];
        // SAFETY: reads at most buf.len() bytes into a live stack buffer.
        let r = unsafe {
            libc::pread(
                self.file.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut v = 0u64;
        for &b in &buf[..r as usize] {
            match b {
                b'0'..=b'9' => v = v * 10 + u64::from(b - b'0'),
                b'\n' => break,
                _ => return Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
            }
        }
        Ok(v)
    }
}

/// The engine kthreads of the module (`vgpu<N>/e<k>`), by pid.
pub fn engine_tasks() -> Vec<(u32, String)> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(comm) = read_trim(&e.path().join("comm")) else {
            continue;
        };
        if is_engine_comm(&comm) {
            v.push((pid, comm));
        }
    }
    v.sort();
    v
}

/// `vgpu<digits>/e<digits>`.
fn is_engine_comm(c: &str) -> bool {
    let Some(rest) = c.strip_prefix("vgpu") else {
        return false;
    };
    let Some((p, e)) = rest.split_once("/e") else {
        return false;
    };
    !p.is_empty()
        && !e.is_empty()
        && p.bytes().all(|b| b.is_ascii_digit())
        && e.bytes().all(|b| b.is_ascii_digit())
}

/// How many injection points a create passes through up to and including the module's
/// own allocations (vgpu_init_dev's page arrays), measured on this kernel: a create that
/// admission refuses (a 4G instance in a 1 GiB pool, ENOSPC from vgpu_init_dev before it
/// allocates anything) runs the same path up to that point, and fail-nth armed far away
/// tells how many points it passed (plus the few of its unwinding); the two page arrays
/// add one each. The count varies between creates, upwards only: a slab that needs a new
/// page is one more point (57 to 108 were measured for the same path), so the caller
/// takes the smallest of several, and a real create reaches VFIO's group at least as late
/// (about 35 points after the smallest count on this kernel).
///
/// Creates are injected only up to there because of a bug in the kernel's VFIO core,
/// not in the module: in 6.1 (and mainline as of this writing) vfio_create_group() takes
/// an iommu_group reference in vfio_group_alloc(), and when dev_set_name() or
/// cdev_device_add() then fail, its error path put_device()s the group with
/// group->iommu_group still set: vfio_group_release() hits WARN_ON(group->iommu_group)
/// (vfio_main.c:179) and the reference leaks. Injected there, it fails the run for a
/// bug the module cannot fix (see docs/reliability.md).
pub fn calibrate_create(parent: &vgpu_sysfs::handle::Parent, uuid: &str) -> Result<u32, String> {
    const FAR: u32 = 1_000_000;
    let t = parent.mdev_type("vgpu_shim-4G");
    let free = parent.pool_free_mb().map_err(|e| e.to_string())?;
    if free >= 4096 {
        return Err(format!(
            "calibration needs less than 4096 MiB free, {free} are"
        ));
    }
    let f = OpenOptions::new()
        .write(true)
        .open(t.path().join("create"))
        .map_err(|e| format!("open create: {e}"))?;
    let mut nth = FailNth::this_thread().map_err(|e| format!("fail-nth: {e}"))?;
    nth.arm(FAR).map_err(|e| format!("arm fail-nth: {e}"))?;
    // SAFETY: writes uuid.len() bytes from a live str to our fd.
    let r = unsafe {
        libc::write(
            f.as_raw_fd(),
            uuid.as_ptr() as *const libc::c_void,
            uuid.len(),
        )
    };
    let err = std::io::Error::last_os_error().raw_os_error();
    let left = nth.left().map_err(|e| format!("read fail-nth: {e}"))?;
    let _ = nth.disarm();
    if r >= 0 || err != Some(libc::ENOSPC) {
        return Err(format!(
            "calibration create: {r}, errno {err:?} (want ENOSPC)"
        ));
    }
    Ok((u64::from(FAR) - left) as u32 + 2)
}

/// Reproduce the VFIO core bug of [`calibrate_create`]: create 128M instances with the
/// n-th injection point failing, for n from just past the calibrated point, until the
/// kernel logs vfio_group_release's WARN_ON (or n passes `span` more points). Returns
/// the n that triggered it, and the kernel log lines from its WARNING on.
pub fn repro_vfio_group_warn(
    parent: &vgpu_sysfs::handle::Parent,
    mut uuid: impl FnMut() -> String,
    span: u32,
) -> Result<Option<(u32, Vec<String>)>, String> {
    let start = calibrate_create(parent, &uuid())?;
    let mut kmsg = crate::sys::Kmsg::open_at_end().map_err(|e| e.to_string())?;
    let t = parent.mdev_type("vgpu_shim-128M");
    let mut nth = FailNth::this_thread().map_err(|e| e.to_string())?;
    for n in start + 1..=start + span {
        let u = uuid();
        let f = OpenOptions::new()
            .write(true)
            .open(t.path().join("create"))
            .map_err(|e| format!("open create: {e}"))?;
        nth.arm(n).map_err(|e| e.to_string())?;
        // SAFETY: writes u.len() bytes from a live String to our fd.
        let r = unsafe { libc::write(f.as_raw_fd(), u.as_ptr() as *const libc::c_void, u.len()) };
        let err = std::io::Error::last_os_error();
        let injected = nth.disarm().map_err(|e| e.to_string())?;
        println!(
            "sysfuzz: create with injection point {n} failing: {} ({})",
            if r < 0 {
                err.to_string()
            } else {
                "created".into()
            },
            if injected { "injected" } else { "not reached" }
        );
        if r >= 0 {
            let inst = vgpu_sysfs::handle::Instance::new(u.parse().map_err(|e| format!("{e}"))?);
            inst.remove().map_err(|e| format!("remove: {e}"))?;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let lines = kmsg.drain();
        if let Some(i) = lines.iter().position(|l| l.contains("vfio_group_release")) {
            let from = i.saturating_sub(1);
            return Ok(Some((n, lines[from..].iter().take(30).cloned().collect())));
        }
        if !injected {
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_names() {
        assert!(is_engine_comm("vgpu0/e0"));
        assert!(is_engine_comm("vgpu7/e12"));
        assert!(!is_engine_comm("vgpu0/e"));
        assert!(!is_engine_comm("vgpu/e0"));
        assert!(!is_engine_comm("vgpu-rig-tests"));
        assert!(!is_engine_comm("kworker/0:1"));
    }
}
