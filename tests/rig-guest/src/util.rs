//! Generic helpers for rig tests: errno checks, patterns, DISPI access.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use vgpu_sysfs::handle::{Instance, Parent};
use vgpu_vfio::abi::{self, dispi};
use vgpu_vfio::{region, Device};

use crate::harness::{Context, Fail};
use crate::{ensure, ensure_eq};

/// Name of an errno for messages.
pub fn errno_name(e: i32) -> String {
    let n = match e {
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EBUSY => "EBUSY",
        libc::EAGAIN => "EAGAIN",
        libc::EFAULT => "EFAULT",
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTTY => "ENOTTY",
        libc::EPERM => "EPERM",
        libc::EIO => "EIO",
        libc::ERANGE => "ERANGE",
        libc::ENXIO => "ENXIO",
        _ => return format!("errno {e}"),
    };
    n.to_string()
}

/// Expect a vgpu_vfio error with one of `errnos`.
pub fn expect_errno<T: Debug, E: Into<vgpu_vfio::Error>>(
    r: Result<T, E>,
    errnos: &[i32],
    what: &str,
) -> Result<(), Fail> {
    match r {
        Ok(v) => Err(Fail(format!(
            "{what}: succeeded ({v:?}), want {}",
            names(errnos)
        ))),
        Err(e) => {
            let e: vgpu_vfio::Error = e.into();
            match e.errno() {
                Some(n) if errnos.contains(&n) => Ok(()),
                _ => Err(Fail(format!("{what}: {e}, want {}", names(errnos)))),
            }
        }
    }
}

/// Expect an io error with one of `errnos`.
pub fn expect_io_errno<T: Debug>(
    r: std::io::Result<T>,
    errnos: &[i32],
    what: &str,
) -> Result<(), Fail> {
    match r {
        Ok(v) => Err(Fail(format!(
            "{what}: succeeded ({v:?}), want {}",
            names(errnos)
        ))),
        Err(e) => match e.raw_os_error() {
            Some(n) if errnos.contains(&n) => Ok(()),
            _ => Err(Fail(format!("{what}: {e}, want {}", names(errnos)))),
        },
    }
}

fn names(errnos: &[i32]) -> String {
    errnos
        .iter()
        .map(|&e| errno_name(e))
        .collect::<Vec<_>>()
        .join("/")
}

/// A position-dependent 64-bit pattern, never zero.
pub fn pattern(seed: u64, off: u64) -> u64 {
    let mut x = off.wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x | 1
}

/// Byte `off` of [`pattern`] (little-endian within its u64).
pub fn pattern_byte(seed: u64, off: u64) -> u8 {
    pattern(seed, off & !7).to_le_bytes()[(off & 7) as usize]
}

/// Bytes `[off, off + len)` of [`pattern`].
pub fn pattern_bytes(seed: u64, off: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| pattern_byte(seed, off + i))
        .collect()
}

/// Write DISPI register `index` (16-bit access in BAR2).
pub fn dispi_write(dev: &Device, index: u16, v: u16) -> Result<(), Fail> {
    dev.write_u16(region::BAR2, dispi::offset(index), v)
        .ctx(format!("write DISPI[{index}]"))
}

/// Read DISPI register `index`.
pub fn dispi_read(dev: &Device, index: u16) -> Result<u16, Fail> {
    dev.read_u16(region::BAR2, dispi::offset(index))
        .ctx(format!("read DISPI[{index}]"))
}

/// A bochs mode.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    /// X resolution.
    pub xres: u16,
    /// Y resolution.
    pub yres: u16,
    /// Bits per pixel.
    pub bpp: u16,
    /// Virtual width (0: the default, XRES).
    pub virt_width: u16,
    /// X offset.
    pub x_off: u16,
    /// Y offset.
    pub y_off: u16,
}

impl Mode {
    /// Bytes per line.
    pub fn stride(&self) -> u64 {
        let vw = if self.virt_width == 0 {
            self.xres
        } else {
            self.virt_width
        };
        u64::from(vw) * u64::from(self.bpp) / 8
    }
    /// Bytes of the visible plane.
    pub fn size(&self) -> u64 {
        self.stride() * u64::from(self.yres)
    }
    /// VRAM offset of the scanout.
    pub fn start(&self) -> u64 {
        u64::from(self.y_off) * self.stride() + u64::from(self.x_off) * u64::from(self.bpp) / 8
    }
}

/// Program a mode the way bochs-drm does (disable, set, enable with LFB).
pub fn set_mode(dev: &Device, m: &Mode) -> Result<(), Fail> {
    dispi_write(dev, dispi::ENABLE, 0)?;
    dispi_write(dev, dispi::BPP, m.bpp)?;
    dispi_write(dev, dispi::XRES, m.xres)?;
    dispi_write(dev, dispi::YRES, m.yres)?;
    dispi_write(dev, dispi::BANK, 0)?;
    dispi_write(dev, dispi::VIRT_WIDTH, m.virt_width)?;
    dispi_write(dev, dispi::X_OFFSET, m.x_off)?;
    dispi_write(dev, dispi::Y_OFFSET, m.y_off)?;
    dispi_write(
        dev,
        dispi::ENABLE,
        dispi::ENABLED | dispi::LFB_ENABLED | dispi::NOCLEARMEM,
    )?;
    Ok(())
}

/// Check a parent's pool counters and every type's available_instances against the
/// instances present: pool_free == pool − Σ quotas, available == free / N.
pub fn check_pool(parent: &Parent, what: &str) -> Result<u64, Fail> {
    let pool = parent.pool_mb().ctx("pool_mb")?;
    let free = parent.pool_free_mb().ctx("pool_free_mb")?;
    let mut reserved = 0;
    for inst in parent.instances().ctx("instances")? {
        reserved += inst.vram_mb().ctx("vram_mb")?;
    }
    ensure_eq!(
        free,
        pool.saturating_sub(reserved),
        "{what}: {} pool_free_mb (pool {pool}, reserved {reserved})",
        parent.name()
    );
    for t in abi::TYPES {
        let avail = parent
            .mdev_type(t.id)
            .available_instances()
            .ctx(format!("{} available_instances", t.id))?;
        ensure_eq!(
            avail,
            free / t.vram_mb,
            "{what}: {} {} available_instances (free {free})",
            parent.name(),
            t.id
        );
    }
    Ok(free)
}

/// Number of mdev devices on the system.
pub fn mdev_count() -> Result<usize, Fail> {
    Ok(Instance::all().ctx("list mdev devices")?.len())
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Read a whole region range with pread (in chunks).
pub fn pread_all(dev: &Device, index: u32, off: u64, len: usize) -> Result<Vec<u8>, Fail> {
    let mut v = vec![0u8; len];
    for (i, chunk) in v.chunks_mut(1 << 20).enumerate() {
        let o = off + (i as u64) * (1 << 20);
        dev.read_region(index, o, chunk)
            .ctx(format!("pread region {index} at {o:#x}"))?;
    }
    Ok(v)
}

/// First differing index of two byte slices.
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Fail if `got` differs from `want`, naming the first differing byte.
pub fn ensure_bytes(got: &[u8], want: &[u8], what: &str) -> Result<(), Fail> {
    if let Some(i) = first_diff(got, want) {
        return Err(Fail(format!(
            "{what}: differs at byte {i:#x} (len {} vs {}): got {:02x?}, want {:02x?}",
            got.len(),
            want.len(),
            got.get(i..(i + 8).min(got.len())).unwrap_or(&[]),
            want.get(i..(i + 8).min(want.len())).unwrap_or(&[])
        )));
    }
    Ok(())
}

/// Ensure a value read from sysfs equals the expectation.
pub fn ensure_attr(got: vgpu_sysfs::Result<u64>, want: u64, what: &str) -> Result<(), Fail> {
    let g = got.ctx(what)?;
    ensure_eq!(g, want, "{what}");
    Ok(())
}

// ---- CPU placement ------------------------------------------------------------------

pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all-zero bytes are the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` is below CPU_SETSIZE (the rig has a handful of CPUs).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// sched_setaffinity of thread `tid` (0: the calling thread).
pub fn set_affinity(tid: libc::pid_t, set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn get_affinity() -> std::io::Result<libc::cpu_set_t> {
    let mut set = cpu_set(&[]);
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(set)
}

/// The pid of the kernel thread named `comm`.
pub fn kthread_pid(comm: &str) -> Result<libc::pid_t, Fail> {
    for e in std::fs::read_dir("/proc").ctx("read /proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == comm) {
            return Ok(pid);
        }
    }
    Err(Fail(format!("no thread named {comm}")))
}

/// The engine thread `vgpu0/e0` on one CPU and this thread (and every thread it starts
/// from now on: submitters, attackers, readers, hogs) on another, so what the test
/// measures is the module, not the guest's CPU scheduler sharing one CPU between the
/// engine and an attack. Restores this thread's affinity on drop.
pub struct Pinned {
    old: libc::cpu_set_t,
}

impl Pinned {
    /// The engine on CPU 1, this thread on CPU 0.
    pub fn engine_apart() -> Result<Pinned, Fail> {
        Self::engine_on(1, 0)
    }

    /// The engine thread on CPU `eng`, this thread on CPU `me`.
    pub fn engine_on(eng: usize, me: usize) -> Result<Pinned, Fail> {
        ensure!(cpu_count() >= 2, "needs 2 CPUs (run the rig with --smp 2)");
        let old = get_affinity().ctx("sched_getaffinity")?;
        let pid = kthread_pid("vgpu0/e0")?;
        set_affinity(pid, &cpu_set(&[eng])).ctx(format!("pin the engine thread to CPU {eng}"))?;
        set_affinity(0, &cpu_set(&[me])).ctx(format!("pin the test to CPU {me}"))?;
        Ok(Pinned { old })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = set_affinity(0, &self.old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_position_dependent_and_non_zero() {
        assert_ne!(pattern(1, 0), pattern(1, 8));
        assert_ne!(pattern(1, 0), pattern(2, 0));
        assert!((0..4096).step_by(8).all(|o| pattern(3, o) != 0));
        let b = pattern_bytes(5, 13, 11);
        let mut want = Vec::new();
        for o in 13..24u64 {
            want.push(pattern(5, o & !7).to_le_bytes()[(o & 7) as usize]);
        }
        assert_eq!(b, want);
    }

    #[test]
    fn mode_math() {
        let m = Mode {
            xres: 800,
            yres: 600,
            bpp: 16,
            virt_width: 1024,
            x_off: 16,
            y_off: 8,
        };
        assert_eq!(m.stride(), 2048);
        assert_eq!(m.size(), 2048 * 600);
        assert_eq!(m.start(), 8 * 2048 + 32);
        let d = Mode {
            virt_width: 0,
            x_off: 0,
            y_off: 0,
            bpp: 24,
            ..m
        };
        assert_eq!(d.stride(), 2400);
        assert_eq!(d.start(), 0);
    }

    #[test]
    fn diffs() {
        assert_eq!(first_diff(b"abc", b"abc"), None);
        assert_eq!(first_diff(b"abc", b"abd"), Some(2));
        assert_eq!(first_diff(b"ab", b"abc"), Some(2));
        assert!(ensure_bytes(b"ab", b"ab", "x").is_ok());
        assert!(ensure_bytes(b"ab", b"aa", "x").is_err());
    }
}
