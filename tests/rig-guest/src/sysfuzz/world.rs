//! What the fuzzer threads share: slots of fuzzed instances with their open device fds
//! and mappings, the canaries, the VRAM zones the fuzzer may allocate in, and per-thread
//! records of the operation in flight (for the watchdog and for reports).

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use vgpu_sysfs::handle::{Instance, Parent};
use vgpu_vfio::Group;

use super::ops::Kind;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const PAGE: u64 = 4096;

/// An open device fd of a slot's instance. Its group (and container) stay open while any
/// handle of the instance does.
pub struct Handle {
    pub file: File,
    pub _group: Arc<Group>,
}

impl Handle {
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A mapping of a region of a slot's instance, unmapped on drop. Shared between threads
/// only through `Arc`, and its protection only changes while one thread owns it alone, so
/// `prot` is what the kernel has.
pub struct Map {
    ptr: NonNull<u8>,
    pub len: u64,
    pub prot: i32,
    pub index: u32,
    /// Region offset of the first byte.
    pub off: u64,
}

// SAFETY: the mapping is plain memory owned by this value; it is only ever accessed through
// the fault-recovering probes and syscalls (no Rust references into it).
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

impl Map {
    /// Take ownership of a mapping made with mmap.
    pub fn new(ptr: NonNull<u8>, len: u64, prot: i32, index: u32, off: u64) -> Map {
        Map {
            ptr,
            len,
            prot,
            index,
            off,
        }
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Unmap the first page (the caller owns the map alone); false if it is the only one.
    pub fn drop_first_page(&mut self) -> bool {
        if self.len <= PAGE {
            return false;
        }
        // SAFETY: the first page belongs to this mapping and nobody else uses it.
        let r = unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, PAGE as usize) };
        if r != 0 {
            return false;
        }
        // SAFETY: len > PAGE, so the next page is still inside the original mapping.
        self.ptr = unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(PAGE as usize)) };
        self.len -= PAGE;
        self.off += PAGE;
        true
    }

    /// Change the protection (the caller owns the map alone).
    pub fn protect(&mut self, prot: i32) -> std::io::Result<()> {
        // SAFETY: the range is exactly this mapping.
        let r = unsafe {
            libc::mprotect(
                self.ptr.as_ptr() as *mut libc::c_void,
                self.len as usize,
                prot,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.prot = prot;
        Ok(())
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe a mapping owned solely by this value.
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len as usize) };
    }
}

/// A fuzzed instance that exists.
pub struct Live {
    pub inst: Instance,
    pub parent: u32,
    pub vram: u64,
    pub disp: u64,
    /// Bumped for every instance a slot gets.
    pub gen: u64,
    pub group: Weak<Group>,
    pub handles: Vec<Arc<Handle>>,
    pub maps: Vec<Arc<Map>>,
    /// When `remove` was first written (no new fds or mappings from then on).
    pub removing: Option<Instant>,
    /// Remover threads started for it.
    pub removers: u32,
}

pub enum SlotState {
    Empty,
    /// A thread is writing `create` for it.
    Creating,
    Live(Live),
}

pub struct Slot {
    pub st: Mutex<SlotState>,
}

impl Slot {
    pub fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What an operation names, for the watchdog and reports.
#[derive(Clone, Copy, Debug)]
pub struct OpNote {
    pub kind: Kind,
    pub slot: i64,
    pub a: u64,
    pub b: u64,
    pub c: u64,
    /// The injection point armed to fail (0: none).
    pub fail_nth: u32,
}

impl std::fmt::Display for OpNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}(slot {}, {:#x}, {:#x}, {:#x})",
            self.kind.name(),
            self.slot,
            self.a,
            self.b,
            self.c
        )?;
        if self.fail_nth != 0 {
            write!(f, "[fail-nth {}]", self.fail_nth)?;
        }
        Ok(())
    }
}

/// A fuzzer thread as the monitor sees it.
#[derive(Default)]
pub struct ThreadRec {
    pub tid: i32,
    pub cur: Option<(OpNote, Instant)>,
    pub hist: VecDeque<OpNote>,
}

pub const HISTORY: usize = 8;

/// The problems found. The first few of each kind are printed and kept (a kind is the
/// message with its numbers blanked out); the rest are only counted.
#[derive(Default)]
pub struct Reports {
    pub kept: Vec<String>,
    pub kinds: std::collections::HashMap<String, u64>,
    pub total: u64,
}

/// Reports of one kind printed in full.
const KEEP_PER_KIND: u64 = 3;

impl Reports {
    pub fn add(&mut self, msg: String) {
        self.total += 1;
        let kind = signature(&msg);
        let n = self.kinds.entry(kind).or_default();
        *n += 1;
        if *n <= KEEP_PER_KIND {
            println!("sysfuzz: REPORT: {msg}");
            self.kept.push(msg);
        }
    }
}

/// A message with every number (decimal or hex) replaced by `#`.
pub fn signature(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or("");
    let mut out = String::new();
    let mut in_num = false;
    for c in first.chars() {
        let digit = c.is_ascii_digit() || (in_num && (c.is_ascii_hexdigit() || c == 'x'));
        if digit {
            if !in_num {
                out.push('#');
            }
            in_num = true;
        } else {
            in_num = false;
            out.push(c);
        }
    }
    out
}

/// A remover thread (writing `remove` blocks while the device is open).
pub struct Remover {
    /// The first writer of `remove` for this instance (a later one may find it gone).
    pub first: bool,
    pub slot: usize,
    pub gen: u64,
    pub started: Instant,
    pub handle: std::thread::JoinHandle<vgpu_sysfs::Result<()>>,
}

/// A canary instance: never fuzzed; its VRAM pattern must never change.
pub struct Canary {
    pub inst: Instance,
    pub parent: u32,
    pub handle: Handle,
    /// Ranges holding the pattern.
    pub ranges: Vec<(u64, u64)>,
    pub used_kb: u64,
    pub map: Map,
    /// Config space at creation.
    pub config: Vec<u8>,
    /// Seed of the pattern.
    pub seed: u64,
}

pub struct World {
    pub parents: Vec<Parent>,
    pub slots: Vec<Slot>,
    pub canaries: Vec<Canary>,
    pub threads: Vec<Mutex<ThreadRec>>,
    pub removers: Mutex<Vec<Remover>>,
    pub reports: Mutex<Reports>,
    pub stop: AtomicBool,
    pub pause: AtomicBool,
    pub parked: Mutex<usize>,
    pub parked_cv: Condvar,
    pub resume_cv: Condvar,
    pub ops_started: AtomicU64,
    pub ops_target: u64,
    pub next_gen: AtomicU64,
    pub fail_inject: bool,
    /// Injection points of a create up to the module's page arrays (0: none).
    pub create_inject_max: u32,
    pub start: Instant,
    /// Fuzzer threads that ended.
    pub finished: AtomicU64,
}

impl World {
    /// Record a problem (a kernel report, an oracle mismatch, a hang).
    pub fn report(&self, msg: String) {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(msg);
    }

    pub fn report_count(&self) -> u64 {
        self.reports.lock().map(|r| r.total).unwrap_or(0)
    }

    pub fn thread(&self, id: usize) -> MutexGuard<'_, ThreadRec> {
        self.threads[id].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last operations of every thread, for a report.
    pub fn history(&self) -> String {
        let mut s = String::new();
        for i in 0..self.threads.len() {
            let t = self.thread(i);
            let cur = t
                .cur
                .map(|(n, at)| format!("{n} for {:.1} s", at.elapsed().as_secs_f64()))
                .unwrap_or_else(|| "-".into());
            let hist: Vec<String> = t.hist.iter().map(|n| n.to_string()).collect();
            s.push_str(&format!(
                "\n  thread {i} (tid {}): now {cur}; before: {}",
                t.tid,
                hist.join(" <- ")
            ));
        }
        s
    }

    /// Wait until the fuzzer threads are parked (or finished).
    pub fn wait_parked(&self, want: usize, limit: Duration) -> bool {
        let start = Instant::now();
        let mut g = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        while *g < want {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return false;
            }
            g = self
                .parked_cv
                .wait_timeout(g, left.min(Duration::from_millis(200)))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    /// Called by a fuzzer thread between operations: block while paused.
    pub fn park_if_paused(&self) {
        if !self.pause.load(Ordering::Acquire) {
            return;
        }
        let mut g = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        *g += 1;
        self.parked_cv.notify_all();
        while self.pause.load(Ordering::Acquire) && !self.stop.load(Ordering::Relaxed) {
            g = self
                .resume_cv
                .wait_timeout(g, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *g -= 1;
    }

    /// A thread ended for good: it counts as parked from now on.
    pub fn thread_finished(&self) {
        let mut g = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        *g += 1;
        self.finished.fetch_add(1, Ordering::Relaxed);
        self.parked_cv.notify_all();
    }

    pub fn resume(&self) {
        let _g = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        self.pause.store(false, Ordering::Release);
        self.resume_cv.notify_all();
    }
}

/// The VRAM the fuzzer may allocate pages in: the first 3 MiB, the last MiB, 8 KiB each
/// side of every power of two, and 32 scattered pages. Everything else is only reached
/// by accesses that must fail (or by the engine's reads, which allocate nothing), so a
/// long run needs a bounded amount of guest memory per instance.
#[derive(Clone, Copy, Debug)]
pub struct Zones {
    pub size: u64,
}

pub const LOW: u64 = 3 * MIB;
/// Where generated low offsets start from (a copy of up to a MiB from there stays in LOW).
pub const LOW_GEN: u64 = 2 * MIB;
const HIGH: u64 = MIB;
const NEAR: u64 = 8 * KIB;
const SPARSE: u64 = 32;

impl Zones {
    fn sparse_page(&self, i: u64) -> u64 {
        let pages = self.size / PAGE;
        (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17) % pages * PAGE
    }

    /// Whether the page at `off` may be allocated.
    pub fn contains(&self, off: u64) -> bool {
        if off >= self.size {
            return false;
        }
        if off < LOW || off >= self.size.saturating_sub(HIGH) {
            return true;
        }
        let mut k = 12;
        while (1u64 << k) < self.size {
            let b = 1u64 << k;
            if off + NEAR >= b && off < b + NEAR {
                return true;
            }
            k += 1;
        }
        let page = off & !(PAGE - 1);
        (0..SPARSE).any(|i| self.sparse_page(i) == page)
    }

    /// An offset inside the zones and how many bytes from it stay inside.
    pub fn pick(&self, rng: &mut crate::rng::Rng) -> (u64, u64) {
        match rng.below(8) {
            0..=3 => {
                let off = rng.below(LOW_GEN.min(self.size));
                (off, LOW.min(self.size) - off)
            }
            4 | 5 => {
                let base = self.size.saturating_sub(HIGH);
                let off = base + rng.below(self.size - base);
                (off, self.size - off)
            }
            6 => {
                let top = 63 - self.size.leading_zeros() as u64;
                let b = 1u64 << rng.range(12, top.max(12));
                let off = (b - NEAR.min(b)) + rng.below(2 * NEAR);
                let off = off.min(self.size - 1);
                (off, (b + NEAR).min(self.size).saturating_sub(off).max(1))
            }
            _ => {
                let page = self.sparse_page(rng.below(SPARSE));
                let off = page + rng.below(PAGE);
                (off, page + PAGE - off)
            }
        }
    }
}

/// A per-thread scratch buffer of [`Scratch::LEN`] bytes followed by a PROT_NONE guard
/// page, so a syscall told to copy more than the buffer holds faults at its end instead
/// of corrupting the fuzzer.
pub struct Scratch {
    base: NonNull<u8>,
}

impl Scratch {
    pub const LEN: usize = 1 << 20;

    pub fn new() -> std::io::Result<Scratch> {
        let total = Self::LEN + PAGE as usize;
        // SAFETY: a fresh anonymous mapping; then the last page is made PROT_NONE.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the guard page is the last page of the mapping just made.
        let r = unsafe {
            libc::mprotect(
                (p as *mut u8).add(Self::LEN) as *mut libc::c_void,
                PAGE as usize,
                libc::PROT_NONE,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(p as *mut u8).ok_or_else(|| std::io::Error::other("mmap NULL"))?;
        Ok(Scratch { base })
    }

    /// A pointer to the last `n` bytes before the guard page (`n` ≤ LEN).
    pub fn tail(&self, n: usize) -> *mut u8 {
        let n = n.min(Self::LEN);
        // SAFETY: LEN - n is inside the usable part of the mapping.
        unsafe { self.base.as_ptr().add(Self::LEN - n) }
    }

    /// Copy `bytes` to the end of the buffer (right before the guard) and return a
    /// pointer to them.
    pub fn put(&self, bytes: &[u8]) -> *mut u8 {
        let p = self.tail(bytes.len());
        // SAFETY: `p` has bytes.len() (≤ LEN) writable bytes before the guard; no Rust
        // reference to the scratch memory exists.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len().min(Self::LEN)) };
        p
    }

    /// Copy `n` bytes out of the buffer at `p` (a pointer from [`Scratch::tail`] or
    /// [`Scratch::put`]).
    pub fn get(&self, p: *const u8, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        let start = p as usize - self.base.as_ptr() as usize;
        let n = n.min(Self::LEN.saturating_sub(start));
        // SAFETY: [p, p + n) lies inside the usable part of the buffer (checked above).
        unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n) };
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, owned by this value.
        unsafe {
            libc::munmap(
                self.base.as_ptr() as *mut libc::c_void,
                Self::LEN + PAGE as usize,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn zones_are_small_and_picks_stay_inside() {
        for size in [128 * MIB, 256 * MIB, 4096 * MIB] {
            let z = Zones { size };
            let mut rng = Rng::new(size);
            for _ in 0..20000 {
                let (off, max) = z.pick(&mut rng);
                assert!(off < size, "{off:#x}");
                assert!(max >= 1);
                assert!(z.contains(off), "{off:#x} of {size:#x}");
                assert!(z.contains(off + max - 1), "{off:#x}+{max:#x} of {size:#x}");
            }
            let pages = (0..size / PAGE).filter(|p| z.contains(p * PAGE)).count() as u64;
            assert!(pages * PAGE < 8 * MIB, "{size:#x}: {pages} pages");
            assert!(!z.contains(size));
        }
    }

    #[test]
    fn report_kinds() {
        assert_eq!(
            signature("thread 3: pread(slot 2, 0x7, 0x1f): EINVAL"),
            "thread #: pread(slot #, #, #): EINVAL"
        );
        let mut r = Reports::default();
        for i in 0..10 {
            r.add(format!("thread {i}: bad at {:#x}", i * 4096));
        }
        r.add("other".into());
        assert_eq!((r.total, r.kept.len(), r.kinds.len()), (11, 4, 2));
    }

    #[test]
    fn scratch_guard() {
        crate::sysfuzz::probe::install();
        let s = Scratch::new().expect("scratch");
        let p = s.put(&[1, 2, 3]);
        assert_eq!(s.get(p, 3), vec![1, 2, 3]);
        // SAFETY: p + 3 is the guard page; the probe recovers the fault.
        let t = unsafe { crate::sysfuzz::probe::load(p.add(3)) };
        assert_eq!(t, crate::sysfuzz::probe::Touch::Segv);
    }
}
