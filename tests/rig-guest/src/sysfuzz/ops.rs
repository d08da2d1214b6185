//! The operation kinds, a fuzzer thread's context and what the operations share: target
//! selection, raw syscalls, the fault-injection window, statistics and oracle failures.
//! The operations themselves are in `ioctl.rs`, `region.rs` and `engine.rs` (the device
//! fd), `mem.rs` (mmap and touching mappings), `life.rs` (create/remove/open/close,
//! groups, containers, rmmod) and `knobs.rs` (sysfs).

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use vgpu_vfio::{EventFd, EFD_NONBLOCK};

use super::faults::FailNth;
use super::world::{Handle, Live, Map, OpNote, Scratch, SlotState, World, Zones, HISTORY};
use super::{engine, ioctl, knobs, life, mem, region};
use crate::rng::Rng;

/// An operation's outcome: 0 success, > 0 an errno, < 0 one of these.
pub const SIGBUS: i32 = -1;
/// The access raised SIGSEGV.
pub const SIGSEGV: i32 = -2;
/// Nothing to run it on (no instance, no mapping...).
pub const SKIP: i32 = -3;
/// A partial transfer.
pub const SHORT: i32 = -4;

macro_rules! kinds {
    ($($k:ident $name:literal $w:literal $inj:literal,)*) => {
        /// What an operation does.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Kind { $($k,)* }
        impl Kind {
            /// Every kind with its weight in the mix.
            pub const ALL: &'static [(Kind, u32)] = &[$((Kind::$k, $w),)*];
            /// Its name in reports.
            pub fn name(self) -> &'static str {
                match self { $(Kind::$k => $name,)* }
            }
            /// Whether `--fail-inject` arms an allocation failure around its syscall.
            pub fn injectable(self) -> bool {
                match self { $(Kind::$k => $inj,)* }
            }
        }
    };
}

kinds! {
    GetInfo "get_info" 20 false,
    RegionInfo "region_info" 50 true,
    IrqInfo "irq_info" 25 false,
    SetIrqs "set_irqs" 80 true,
    Reset "reset" 15 false,
    GfxPlane "gfx_plane" 35 true,
    GfxDmabuf "gfx_dmabuf" 8 false,
    Ioeventfd "ioeventfd" 30 true,
    BadIoctl "bad_ioctl" 25 false,
    Pread "pread" 90 true,
    Pwrite "pwrite" 90 true,
    RwViaMmap "rw_via_mmap" 25 true,
    Mmap "mmap" 40 true,
    Munmap "munmap" 22 false,
    Mprotect "mprotect" 10 false,
    Touch "touch" 60 true,
    CfgWrite "cfg_write" 50 false,
    CfgRead "cfg_read" 20 false,
    MmioWrite "mmio_write" 45 false,
    MmioRead "mmio_read" 20 false,
    EngineReg "engine_reg" 60 false,
    EngineSubmit "engine_submit" 25 true,
    SysfsWrite "sysfs_write" 70 true,
    SysfsRead "sysfs_read" 40 false,
    Create "create" 10 true,
    Remove "remove" 6 false,
    Open "open" 15 true,
    Close "close" 10 false,
    GroupCycle "group_cycle" 6 false,
    ContainerCycle "container_cycle" 5 false,
    Rmmod "rmmod" 3 false,
}

/// fail-nth is drawn in 1..=N, N starting here and growing while failures at its top
/// are injected (the path has that many allocations), up to the limit.
const NMAX_START: u32 = 8;
const NMAX_LIMIT: u32 = 512;

/// A thread's counts.
#[derive(Default)]
pub struct Stats {
    /// (kind, outcome) → count.
    pub res: BTreeMap<(Kind, i32), u64>,
    /// kind → (armed, injected).
    pub inj: BTreeMap<Kind, (u64, u64)>,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        for (k, v) in &o.res {
            *self.res.entry(*k).or_default() += v;
        }
        for (k, (a, b)) in &o.inj {
            let e = self.inj.entry(*k).or_default();
            e.0 += a;
            e.1 += b;
        }
    }

    pub fn total(&self) -> u64 {
        self.res.values().sum()
    }
}

/// The device fd an operation works on, and what it needs to know about the instance.
pub struct Target {
    pub slot: usize,
    pub gen: u64,
    pub h: Arc<Handle>,
    pub parent: u32,
    pub vram: u64,
    pub disp: u64,
    pub removing: bool,
}

impl Target {
    pub fn zones(&self) -> Zones {
        Zones { size: self.vram }
    }
}

/// A fuzzer thread.
pub struct Th<'w> {
    pub w: &'w World,
    pub id: usize,
    pub rng: Rng,
    pub scratch: Scratch,
    pub efds: Vec<EventFd>,
    pub stats: Stats,
    nth: Option<FailNth>,
    nmax: BTreeMap<Kind, u32>,
    /// The operation in flight may take an injected failure (armed this time).
    pub armed: bool,
    /// The armed failure was injected.
    pub injected: bool,
    last_n: u32,
    kind: Kind,
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// ioctl(2) with a raw argument: Ok(return value) or Err(errno).
pub fn ioctl(fd: RawFd, req: u64, arg: u64) -> Result<i64, i32> {
    // SAFETY: the request's argument is either a value or a pointer into memory the
    // caller owns (the scratch buffer); the kernel validates everything else.
    let r = unsafe { libc::syscall(libc::SYS_ioctl, fd, req, arg) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// An outcome code from a syscall result.
pub fn code<T>(r: &Result<T, i32>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => *e,
    }
}

impl<'w> Th<'w> {
    pub fn new(w: &'w World, id: usize, seed: u64) -> std::io::Result<Th<'w>> {
        let mut efds = Vec::new();
        for _ in 0..3 {
            efds.push(EventFd::new(EFD_NONBLOCK)?);
        }
        Ok(Th {
            w,
            id,
            rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F)),
            scratch: Scratch::new()?,
            efds,
            stats: Stats::default(),
            nth: None,
            nmax: BTreeMap::new(),
            armed: false,
            injected: false,
            last_n: 0,
            kind: Kind::GetInfo,
        })
    }

    /// Run operations until the shared budget is used up or the run stops.
    pub fn run(&mut self) {
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        self.w.thread(self.id).tid = tid;
        if let Err(e) = super::probe::thread_init() {
            self.w
                .report(format!("thread {}: signal stack: {e}", self.id));
        }
        if self.w.fail_inject {
            match FailNth::this_thread() {
                Ok(f) => self.nth = Some(f),
                Err(e) => self
                    .w
                    .report(format!("thread {}: open fail-nth: {e}", self.id)),
            }
        }
        let total: u32 = Kind::ALL.iter().map(|(_, w)| w).sum();
        while !self.w.stop.load(Ordering::Relaxed) {
            self.w.park_if_paused();
            if self.w.ops_started.fetch_add(1, Ordering::Relaxed) >= self.w.ops_target {
                break;
            }
            let mut x = self.rng.below(u64::from(total)) as u32;
            let mut kind = Kind::GetInfo;
            for &(k, wt) in Kind::ALL {
                if x < wt {
                    kind = k;
                    break;
                }
                x -= wt;
            }
            self.kind = kind;
            self.armed = false;
            self.injected = false;
            self.w.thread(self.id).cur = Some((
                OpNote {
                    kind,
                    slot: -1,
                    a: 0,
                    b: 0,
                    c: 0,
                    fail_nth: 0,
                },
                Instant::now(),
            ));
            // Nothing to work on: open a device, map one, or create an instance instead.
            let (mut kind, mut c) = (kind, self.one(kind));
            while c == SKIP {
                let Some(k) = fallback(kind) else { break };
                kind = k;
                self.kind = k;
                if let Some((n, _)) = self.w.thread(self.id).cur.as_mut() {
                    n.kind = k;
                }
                c = self.one(k);
            }
            {
                let mut t = self.w.thread(self.id);
                if let Some((n, _)) = t.cur.take() {
                    if t.hist.len() == HISTORY {
                        t.hist.pop_back();
                    }
                    t.hist.push_front(n);
                }
            }
            if c == SKIP {
                // Not an operation: draw again.
                self.w.ops_started.fetch_sub(1, Ordering::Relaxed);
            } else {
                *self.stats.res.entry((kind, c)).or_default() += 1;
            }
        }
        self.w.thread_finished();
    }

    fn one(&mut self, kind: Kind) -> i32 {
        match kind {
            Kind::GetInfo => ioctl::get_info(self),
            Kind::RegionInfo => ioctl::region_info(self),
            Kind::IrqInfo => ioctl::irq_info(self),
            Kind::SetIrqs => ioctl::set_irqs(self),
            Kind::Reset => ioctl::reset(self),
            Kind::GfxPlane => ioctl::gfx_plane(self),
            Kind::GfxDmabuf => ioctl::gfx_dmabuf(self),
            Kind::Ioeventfd => ioctl::ioeventfd(self),
            Kind::BadIoctl => ioctl::bad_ioctl(self),
            Kind::Pread => region::region_rw(self, false),
            Kind::Pwrite => region::region_rw(self, true),
            Kind::CfgWrite => region::cfg_write(self),
            Kind::CfgRead => region::cfg_read(self),
            Kind::MmioWrite => region::mmio_write(self),
            Kind::MmioRead => region::mmio_read(self),
            Kind::EngineReg => engine::engine_reg(self),
            Kind::EngineSubmit => engine::engine_submit(self),
            Kind::RwViaMmap => mem::rw_via_mmap(self),
            Kind::Mmap => mem::mmap(self),
            Kind::Munmap => mem::munmap(self),
            Kind::Mprotect => mem::mprotect(self),
            Kind::Touch => mem::touch(self),
            Kind::SysfsWrite => knobs::write(self),
            Kind::SysfsRead => knobs::read(self),
            Kind::Create => life::create(self),
            Kind::Remove => life::remove(self),
            Kind::Open => life::open(self),
            Kind::Close => life::close(self),
            Kind::GroupCycle => life::group_cycle(self),
            Kind::ContainerCycle => life::container_cycle(self),
            Kind::Rmmod => life::rmmod(self),
        }
    }

    /// Name what the operation in flight works on (for the watchdog and reports).
    pub fn note(&self, slot: i64, a: u64, b: u64, c: u64) {
        if let Some((n, _)) = self.w.thread(self.id).cur.as_mut() {
            n.slot = slot;
            n.a = a;
            n.b = b;
            n.c = c;
        }
    }

    /// An oracle failure of the operation in flight.
    pub fn mismatch(&self, msg: String) {
        let note = self
            .w
            .thread(self.id)
            .cur
            .map(|(n, _)| n.to_string())
            .unwrap_or_default();
        let inj = if self.armed {
            if self.injected {
                " (an allocation failure was injected)"
            } else {
                " (armed, nothing injected)"
            }
        } else {
            ""
        };
        self.w
            .report(format!("thread {}: {note}: {msg}{inj}", self.id));
    }

    /// Before the operation's syscall: decide whether to inject, and arm fail-nth.
    /// Nothing may allocate between this and [`Th::inject_end`].
    pub fn inject_begin(&mut self) {
        self.inject_begin_upto(u32::MAX);
    }

    /// As [`Th::inject_begin`], failing at most the `limit`-th injection point.
    pub fn inject_begin_upto(&mut self, limit: u32) {
        self.armed = false;
        self.injected = false;
        if !self.kind.injectable() || limit == 0 || !self.rng.chance(1, 3) {
            return;
        }
        let max = (*self.nmax.entry(self.kind).or_insert(NMAX_START)).min(limit);
        let n = self.rng.range(1, u64::from(max)) as u32;
        if self.nth.is_none() {
            return;
        }
        // Count first: nothing may allocate once armed.
        self.stats.inj.entry(self.kind).or_default().0 += 1;
        self.last_n = n;
        if let Some((note, _)) = self.w.thread(self.id).cur.as_mut() {
            note.fail_nth = n;
        }
        if let Some(f) = self.nth.as_mut() {
            self.armed = f.arm(n).is_ok();
        }
        if !self.armed {
            self.stats.inj.entry(self.kind).or_default().0 -= 1;
        }
    }

    /// Right after the syscall: disarm; returns whether a failure was injected.
    pub fn inject_end(&mut self) -> bool {
        if !self.armed {
            return false;
        }
        let hit = self.nth.as_mut().map(|f| f.disarm()).unwrap_or(Ok(false));
        self.injected = matches!(hit, Ok(true));
        if self.injected {
            self.stats.inj.entry(self.kind).or_default().1 += 1;
            // The path has at least n injection points: explore deeper from now on.
            let m = self.nmax.entry(self.kind).or_insert(NMAX_START);
            if self.last_n + 4 > *m {
                *m = (self.last_n + 4).min(NMAX_LIMIT);
            }
        }
        self.injected
    }

    /// A random slot index; half the time one of the first two, so threads often work
    /// on the same instance at the same time.
    pub fn any_slot(&mut self) -> usize {
        let n = self.w.slots.len() as u64;
        let hot = if self.rng.chance(1, 2) { n.min(2) } else { n };
        self.rng.below(hot) as usize
    }

    /// A device fd of a live instance (a few slots are tried). On a slot being removed,
    /// this also lets go of one of its fds or mappings now and then, so the removal
    /// completes.
    pub fn target(&mut self) -> Option<Target> {
        for _ in 0..4 {
            let slot = self.any_slot();
            let mut drop_later: Vec<Arc<Handle>> = Vec::new();
            let mut drop_maps: Vec<Arc<Map>> = Vec::new();
            let t = {
                let mut st = self.w.slots[slot].lock();
                let SlotState::Live(l) = &mut *st else {
                    continue;
                };
                if l.removing.is_some() && self.rng.chance(1, 3) {
                    help_removal(l, &mut self.rng, &mut drop_later, &mut drop_maps);
                }
                if l.handles.is_empty() {
                    None
                } else {
                    let i = self.rng.below(l.handles.len() as u64) as usize;
                    Some(Target {
                        slot,
                        gen: l.gen,
                        h: l.handles[i].clone(),
                        parent: l.parent,
                        vram: l.vram,
                        disp: l.disp,
                        removing: l.removing.is_some(),
                    })
                }
            };
            drop(drop_later);
            drop(drop_maps);
            if let Some(t) = t {
                return Some(t);
            }
        }
        None
    }

    /// Whether slot `slot` still holds instance generation `gen`, not being removed.
    pub fn still_live(&self, slot: usize, gen: u64) -> bool {
        match &*self.w.slots[slot].lock() {
            SlotState::Live(l) => l.gen == gen && l.removing.is_none(),
            _ => false,
        }
    }

    /// A random eventfd of this thread.
    pub fn efd(&mut self) -> RawFd {
        use std::os::fd::AsRawFd;
        let i = self.rng.below(self.efds.len() as u64) as usize;
        self.efds[i].as_raw_fd()
    }
}

/// What to do instead of an operation that found nothing to work on.
fn fallback(k: Kind) -> Option<Kind> {
    match k {
        Kind::Touch | Kind::Munmap | Kind::Mprotect | Kind::RwViaMmap => Some(Kind::Mmap),
        Kind::Open => Some(Kind::Create),
        Kind::Create | Kind::Remove | Kind::Close | Kind::GroupCycle => None,
        Kind::SysfsWrite | Kind::SysfsRead | Kind::ContainerCycle | Kind::Rmmod => None,
        _ => Some(Kind::Open),
    }
}

/// Let go of one fd or mapping of an instance being removed.
pub fn help_removal(
    l: &mut Live,
    rng: &mut Rng,
    handles: &mut Vec<Arc<Handle>>,
    maps: &mut Vec<Arc<Map>>,
) {
    if !l.maps.is_empty() && (l.handles.is_empty() || rng.chance(1, 2)) {
        let i = rng.below(l.maps.len() as u64) as usize;
        maps.push(l.maps.swap_remove(i));
    } else if !l.handles.is_empty() {
        let i = rng.below(l.handles.len() as u64) as usize;
        handles.push(l.handles.swap_remove(i));
    }
}

/// Offsets and sizes near the interesting edges.
pub fn edge_u64(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => rng.below(16),
        1 => 1u64 << rng.below(64),
        2 => (1u64 << rng.below(64)).wrapping_sub(1 + rng.below(4)),
        3 => u64::MAX - rng.below(16),
        4 => u64::from(rng.next_u32()),
        _ => rng.next_u64(),
    }
}

/// Name of an outcome code.
pub fn code_name(c: i32) -> String {
    match c {
        0 => "ok".into(),
        SIGBUS => "SIGBUS".into(),
        SIGSEGV => "SIGSEGV".into(),
        SKIP => "skipped".into(),
        SHORT => "short".into(),
        libc::EACCES => "EACCES".into(),
        libc::EBADF => "EBADF".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::E2BIG => "E2BIG".into(),
        libc::EOVERFLOW => "EOVERFLOW".into(),
        e => crate::util::errno_name(e),
    }
}

pub fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

pub fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32_at(b, o)) | u64::from(u32_at(b, o + 4)) << 32
}

/// A header of `bufsz` bytes (at the end of scratch) starting with the u32 `words`.
pub fn put_words(th: &Th, words: &[u32], bufsz: usize) -> *mut u8 {
    let mut b = vec![0u8; bufsz];
    for (i, w) in words.iter().enumerate() {
        if let Some(s) = b.get_mut(4 * i..4 * i + 4) {
            s.copy_from_slice(&w.to_le_bytes());
        }
    }
    th.scratch.put(&b)
}

/// The outcome is `want`, or (with an injected allocation failure) ENOMEM.
pub fn expect(th: &Th, what: &str, got: i32, want: i32) -> bool {
    if got == want || (th.injected && got == libc::ENOMEM) {
        return true;
    }
    th.mismatch(format!(
        "{what}: {}, want {}",
        code_name(got),
        code_name(want)
    ));
    false
}
