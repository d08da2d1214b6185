//! `vgpu-rig-tests sysfuzz [--ops N] [--threads T] [--seed S] [--fail-inject] [--slots K]
//! [--engines E] [--check-every N] [--op-timeout S]`: a syscall-level, concurrent fuzzer
//! of vgpu_shim (in the spirit of syzkaller), run in the rig.
//!
//! T threads (default 4) race on K slots (default 6) of fuzzed instances spread over two
//! parents: VFIO ioctls with random flags, indexes, argsz and eventfds; pread/pwrite at
//! edge offsets and sizes on every region; mmap/munmap/mprotect and touching mappings
//! (SIGBUS/SIGSEGV recovered, probe.rs); config space, BAR2 and engine registers; small
//! command batches; sysfs writes of every knob, good and bad; create, remove while open,
//! open, close, group and container cycles; rmmod attempts. Every outcome is checked
//! against what no concurrency can change (model.rs). A canary instance per parent is
//! never touched and must never change.
//!
//! The main thread is the monitor: it scans the kernel log (any BUG, WARNING, KASAN,
//! lockdep, kmemleak... report stops the run), watches every operation (one running
//! longer than `--op-timeout` is a hang: it prints the operation, the threads' last
//! operations and the blocked tasks, and powers the guest off), lets go of the fds and
//! mappings of instances being removed, and every `--check-every` operations parks the
//! threads and checks the invariants of check.rs.
//!
//! With `--fail-inject` (debug kernel), allocations on the paths of create, first VRAM
//! touch, SET_IRQS, region info, the display copy, open and sysfs writes fail one at a
//! time through fail-nth, and so do the engine kthreads' (faults.rs): every failure must
//! be a clean error, the invariants must hold afterwards, and the rig's kmemleak scan
//! must find nothing.
//!
//! Operations are drawn from a per-thread generator seeded by `--seed`: each thread's
//! sequence is reproducible, their interleaving is not.

mod check;
mod dev;
mod faults;
mod knobs;
mod life;
mod mem;
mod model;
mod ops;
mod probe;
mod world;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use vgpu_vfio::sysfs::Parent;

use crate::harness::{clean_state, remove_with_timeout};
use crate::rng::Rng;
use crate::sys::{self, Kmsg};
use crate::tools::{num, ToolError, ToolResult};

use faults::{FailNth, Faults};
use ops::{code_name, Kind, Stats};
use world::{Slot, SlotState, World};

struct Args {
    ops: u64,
    threads: usize,
    seed: u64,
    fail_inject: bool,
    slots: usize,
    engines: u32,
    check_every: u64,
    op_timeout: Duration,
}

fn parse(args: &[String]) -> Result<Args, ToolError> {
    let mut a = Args {
        ops: 100_000,
        threads: 4,
        seed: 1,
        fail_inject: false,
        slots: 6,
        engines: 2,
        check_every: 0,
        op_timeout: Duration::from_secs(120),
    };
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1);
        match args[i].as_str() {
            "--ops" => a.ops = num("--ops", v)?,
            "--threads" => a.threads = num("--threads", v)?,
            "--seed" => a.seed = num("--seed", v)?,
            "--slots" => a.slots = num("--slots", v)?,
            "--engines" => a.engines = num("--engines", v)?,
            "--check-every" => a.check_every = num("--check-every", v)?,
            "--op-timeout" => a.op_timeout = Duration::from_secs(num("--op-timeout", v)?),
            "--fail-inject" => {
                a.fail_inject = true;
                i += 1;
                continue;
            }
            other => return Err(ToolError::Usage(format!("unknown argument {other:?}"))),
        }
        i += 2;
    }
    if a.threads == 0
        || a.threads > 64
        || a.slots == 0
        || a.slots > 32
        || !(1..=8).contains(&a.engines)
    {
        return Err(ToolError::Usage(
            "1-64 threads, 1-32 slots, 1-8 engines".into(),
        ));
    }
    if a.check_every == 0 {
        a.check_every = (a.ops / 20).clamp(2_000, 50_000);
    }
    Ok(a)
}

/// The subcommand.
pub fn main(args: &[String]) -> ToolResult {
    let a = parse(args)?;
    clean_state().map_err(|e| ToolError::Failed(format!("clean state: {}", e.0)))?;
    sys::load_module(&sys::ko_path(), &format!("parents=2 engines={}", a.engines))
        .map_err(|e| ToolError::Failed(format!("load vgpu_shim: {e}")))?;
    let r = run(&a);
    let c = clean_state();
    r?;
    c.map_err(|e| ToolError::Failed(format!("cleanup: {}", e.0)))?;
    Ok(())
}

/// Kernel log lines that are a finding.
const KERNEL_BAD: &[&str] = &[
    "BUG:",
    "WARNING:",
    "Oops",
    "general protection",
    "Call Trace",
    "KASAN",
    "UBSAN",
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "suspicious RCU usage",
    "sleeping function called from invalid context",
    "ODEBUG",
    "list_add corruption",
    "list_del corruption",
    "refcount_t:",
    "blocked for more than",
    "soft lockup",
    "unreferenced object",
    "INFO: task",
    "Bad page",
];

/// A VM_FAULT_OOM from a fault handler: the fault is retried rather than failed.
const FAULT_OOM: &str = "Huh VM_FAULT_OOM leaked out";

struct Monitor<'a> {
    w: &'a World,
    a: &'a Args,
    kmsg: Kmsg,
    rng: Rng,
    engines: Vec<(String, FailNth)>,
    eng_armed: u64,
    eng_injected: u64,
    checks: u64,
    kernel_reports: u64,
    fault_oom: u64,
    remove_res: BTreeMap<(bool, i32), u64>,
    remove_wait_max: Duration,
    remove_ok: HashMap<(usize, u64), bool>,
    released: HashMap<(usize, u64), Instant>,
    last_progress: Instant,
}

impl Monitor<'_> {
    fn tick(&mut self) {
        self.scan_kmsg();
        self.release_removing(Duration::from_millis(200));
        self.reap();
        self.watchdog();
        if self.w.fail_inject {
            self.arm_engines();
        }
        if self.last_progress.elapsed() >= Duration::from_secs(15) {
            self.last_progress = Instant::now();
            let n = self
                .w
                .ops_started
                .load(Ordering::Relaxed)
                .min(self.w.ops_target);
            let s = self.w.start.elapsed().as_secs_f64();
            println!(
                "sysfuzz: {n} operations after {s:.0} s ({:.0}/s), {} checks, {} reports",
                n as f64 / s,
                self.checks,
                self.w.report_count()
            );
        }
    }

    fn scan_kmsg(&mut self) {
        let lines = self.kmsg.drain();
        let mut bad_at = None;
        for (i, l) in lines.iter().enumerate() {
            if l.contains(FAULT_OOM) {
                self.fault_oom += 1;
                if !self.w.fail_inject {
                    bad_at.get_or_insert(i);
                }
            } else if KERNEL_BAD.iter().any(|p| l.contains(p)) {
                bad_at.get_or_insert(i);
            }
        }
        if let Some(i) = bad_at {
            self.kernel_reports += 1;
            let excerpt: Vec<&str> = lines[i..].iter().take(60).map(|s| s.as_str()).collect();
            self.w.report(format!(
                "KERNEL: {}\n{}\nlast operations:{}",
                lines[i],
                excerpt.join("\n"),
                self.w.history()
            ));
            self.w.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Let go of every fd and mapping of instances being removed for longer than `hold`.
    fn release_removing(&mut self, hold: Duration) {
        for (i, s) in self.w.slots.iter().enumerate() {
            let (h, m) = {
                let mut st = s.lock();
                let SlotState::Live(l) = &mut *st else {
                    continue;
                };
                let Some(since) = l.removing else { continue };
                if since.elapsed() < hold {
                    continue;
                }
                self.released.entry((i, l.gen)).or_insert_with(Instant::now);
                (std::mem::take(&mut l.handles), std::mem::take(&mut l.maps))
            };
            drop(h);
            drop(m);
        }
    }

    /// Collect finished remover threads; a slot whose removal completed becomes empty.
    /// Two writers of `remove` may race: one removes the device, the other finds it gone
    /// (ENOENT/ENODEV); at least one must succeed.
    fn reap(&mut self) {
        let done: Vec<world::Remover> = {
            let mut rs = self.w.removers.lock().unwrap_or_else(|p| p.into_inner());
            let (fin, run): (Vec<_>, Vec<_>) = rs.drain(..).partition(|r| r.handle.is_finished());
            *rs = run;
            fin
        };
        let mut keys = Vec::new();
        for r in done {
            let res = match r.handle.join() {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => e.errno().unwrap_or(libc::EIO),
                Err(_) => libc::EIO,
            };
            *self.remove_res.entry((r.first, res)).or_default() += 1;
            self.remove_wait_max = self.remove_wait_max.max(r.started.elapsed());
            let key = (r.slot, r.gen);
            *self.remove_ok.entry(key).or_default() |= res == 0;
            if res != 0 && !matches!(res, libc::ENOENT | libc::ENODEV) {
                self.w.report(format!(
                    "remove of slot {} (gen {}) after {:.1} s: {}",
                    r.slot,
                    r.gen,
                    r.started.elapsed().as_secs_f64(),
                    code_name(res)
                ));
            }
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        for key in keys {
            let running = self
                .w
                .removers
                .lock()
                .map(|rs| rs.iter().any(|o| (o.slot, o.gen) == key))
                .unwrap_or(false);
            if running {
                continue;
            }
            let ok = self.remove_ok.remove(&key).unwrap_or(false);
            self.released.remove(&key);
            let mut st = self.w.slots[key.0].lock();
            let SlotState::Live(l) = &mut *st else {
                continue;
            };
            if l.gen != key.1 {
                continue;
            }
            if !ok || l.inst.exists() {
                self.w.report(format!(
                    "{}: every write of remove returned and it {}",
                    l.inst.uuid(),
                    if l.inst.exists() {
                        "still exists"
                    } else {
                        "is gone, but none succeeded"
                    }
                ));
            }
            if l.inst.exists() {
                l.removing = None;
                l.removers = 0;
            } else {
                *st = SlotState::Empty;
            }
        }
    }

    fn watchdog(&mut self) {
        let limit = self.a.op_timeout;
        for i in 0..self.w.threads.len() {
            let cur = self.w.thread(i).cur;
            if let Some((n, at)) = cur {
                if at.elapsed() > limit {
                    self.hang(&format!(
                        "thread {i}: {n} has run for {:.0} s",
                        at.elapsed().as_secs_f64()
                    ));
                }
            }
        }
        let stuck: Vec<(usize, u64)> = self
            .w
            .removers
            .lock()
            .map(|rs| rs.iter().map(|r| (r.slot, r.gen)).collect())
            .unwrap_or_default();
        for k in stuck {
            if let Some(t) = self.released.get(&k) {
                if t.elapsed() > limit {
                    self.hang(&format!(
                        "remove of slot {} blocked {:.0} s after every fd and mapping of it was closed",
                        k.0,
                        t.elapsed().as_secs_f64()
                    ));
                }
            }
        }
    }

    /// Report a hang with what the kernel says about blocked tasks, then power off: a
    /// task stuck in the kernel cannot be joined, and the rig must not wait for it.
    fn hang(&mut self, what: &str) -> ! {
        self.w.report(format!(
            "HANG: {what}; last operations:{}",
            self.w.history()
        ));
        for i in 0..self.w.threads.len() {
            let tid = self.w.thread(i).tid;
            if let Ok(s) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stack")) {
                println!("sysfuzz: thread {i} (tid {tid}) kernel stack:\n{s}");
            }
        }
        let _ = std::fs::write("/proc/sysrq-trigger", "w");
        std::thread::sleep(Duration::from_secs(2));
        for l in self.kmsg.drain() {
            println!("sysfuzz: dmesg: {l}");
        }
        println!("sysfuzz: FAIL: hang ({what}); powering the guest off");
        // SAFETY: sync(2) has no arguments.
        unsafe { libc::sync() };
        let _ = std::fs::write("/proc/sysrq-trigger", "o");
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(1);
    }

    fn arm_engines(&mut self) {
        for (_, f) in &mut self.engines {
            if f.is_armed() {
                if f.left().ok() == Some(0) {
                    let _ = f.disarm();
                    self.eng_injected += 1;
                }
            } else if self.rng.chance(1, 4) && f.arm(self.rng.range(1, 3) as u32).is_ok() {
                self.eng_armed += 1;
            }
        }
    }

    fn disarm_engines(&mut self) {
        for (_, f) in &mut self.engines {
            if let Ok(true) = f.disarm() {
                self.eng_injected += 1;
            }
        }
    }

    /// Finish every pending removal (letting go of everything they wait for).
    fn drain_removals(&mut self) {
        let start = Instant::now();
        loop {
            self.release_removing(Duration::ZERO);
            self.reap();
            self.scan_kmsg();
            let left = self.w.removers.lock().map(|r| r.len()).unwrap_or(0);
            if left == 0 {
                return;
            }
            if start.elapsed() > self.a.op_timeout {
                self.hang("a remove did not complete after every fd and mapping was closed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Park the threads, complete the removals, stop the engines, check the invariants.
    fn quiesce_and_check(&mut self) {
        self.w.pause.store(true, Ordering::Release);
        if !self.w.wait_parked(self.w.threads.len(), self.a.op_timeout) {
            self.hang("the threads did not reach a quiescent point");
        }
        self.disarm_engines();
        self.drain_removals();
        check::stop_engines(self.w);
        for p in check::invariants(self.w) {
            self.w.report(format!("invariant: {p}"));
        }
        self.checks += 1;
        self.w.resume();
    }
}

fn run(a: &Args) -> Result<(), ToolError> {
    let failed = |m: String| ToolError::Failed(m);
    probe::install();
    let fi = if a.fail_inject {
        Some(Faults::setup().map_err(failed)?)
    } else {
        None
    };
    let r = fuzz(a, fi.is_some());
    if let Some(f) = fi {
        f.restore();
    }
    r
}

fn fuzz(a: &Args, fail_inject: bool) -> Result<(), ToolError> {
    let failed = |m: String| ToolError::Failed(m);
    let parents = vec![Parent::vgpu(0), Parent::vgpu(1)];
    let mut rng = Rng::new(a.seed ^ 0x5eed);
    let mut canaries = Vec::new();
    for (i, p) in parents.iter().enumerate() {
        canaries.push(check::make_canary(p, i as u32, a.seed, &mut rng).map_err(failed)?);
    }
    let kmsg = Kmsg::open_at_end().map_err(|e| failed(format!("/dev/kmsg: {e}")))?;
    let w = World {
        parents,
        slots: (0..a.slots)
            .map(|_| Slot {
                st: Mutex::new(SlotState::Empty),
            })
            .collect(),
        canaries,
        threads: (0..a.threads)
            .map(|_| Mutex::new(world::ThreadRec::default()))
            .collect(),
        removers: Mutex::new(Vec::new()),
        reports: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        pause: AtomicBool::new(false),
        parked: Mutex::new(0),
        parked_cv: Condvar::new(),
        resume_cv: Condvar::new(),
        ops_started: AtomicU64::new(0),
        ops_target: a.ops,
        next_gen: AtomicU64::new(1),
        fail_inject,
        start: Instant::now(),
        finished: AtomicU64::new(0),
    };
    let engines: Vec<(String, FailNth)> = if fail_inject {
        faults::engine_tasks()
            .into_iter()
            .filter_map(|(pid, comm)| FailNth::of_task(pid).ok().map(|f| (comm, f)))
            .collect()
    } else {
        Vec::new()
    };
    println!(
        "sysfuzz: seed {}, {} operations, {} threads, {} slots over 2 parents ({} engines each), checks every {} operations{}",
        a.seed,
        a.ops,
        a.threads,
        a.slots,
        a.engines,
        a.check_every,
        if fail_inject {
            format!(", fault injection on ({} engine kthreads)", engines.len())
        } else {
            String::new()
        }
    );
    let mut mon = Monitor {
        w: &w,
        a,
        kmsg,
        rng: Rng::new(a.seed ^ 0x3011),
        engines,
        eng_armed: 0,
        eng_injected: 0,
        checks: 0,
        kernel_reports: 0,
        fault_oom: 0,
        remove_res: BTreeMap::new(),
        remove_wait_max: Duration::ZERO,
        remove_ok: HashMap::new(),
        released: HashMap::new(),
        last_progress: Instant::now(),
    };
    let mut stats = Stats::default();
    std::thread::scope(|s| {
        let mut hs = Vec::new();
        for id in 0..a.threads {
            let w = &w;
            let h = std::thread::Builder::new()
                .name(format!("sysfuzz-{id}"))
                .spawn_scoped(s, move || match ops::Th::new(w, id, a.seed) {
                    Ok(mut th) => {
                        th.run();
                        th.stats
                    }
                    Err(e) => {
                        w.report(format!("thread {id}: set up: {e}"));
                        w.thread_finished();
                        Stats::default()
                    }
                });
            match h {
                Ok(h) => hs.push(h),
                Err(e) => {
                    w.report(format!("spawn thread {id}: {e}"));
                    w.thread_finished();
                }
            }
        }
        let mut next_check = a.check_every;
        while w.finished.load(Ordering::Relaxed) < a.threads as u64 {
            std::thread::sleep(Duration::from_millis(50));
            mon.tick();
            let n = w.ops_started.load(Ordering::Relaxed);
            if n >= next_check && !w.stop.load(Ordering::Relaxed) && n < a.ops {
                mon.quiesce_and_check();
                next_check = n + a.check_every;
            }
        }
        for h in hs {
            match h.join() {
                Ok(st) => stats.add(&st),
                Err(_) => w.report("a fuzzer thread panicked".into()),
            }
        }
    });
    let elapsed = w.start.elapsed();
    // Final check with every thread gone, then tear everything down.
    mon.disarm_engines();
    mon.drain_removals();
    check::stop_engines(&w);
    for p in check::invariants(&w) {
        w.report(format!("invariant (end): {p}"));
    }
    mon.checks += 1;
    teardown(&mut mon);
    print_report(&mon, &stats, elapsed);
    let Monitor {
        mut kmsg,
        kernel_reports,
        ..
    } = mon;
    let World {
        canaries,
        parents,
        reports,
        ..
    } = w;
    let mut reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
    for r in unload_and_check(canaries, &parents, &mut kmsg) {
        println!("sysfuzz: REPORT: {r}");
        reports.push(r);
    }
    println!(
        "sysfuzz: kernel log reports {kernel_reports}; reports in all {}",
        reports.len()
    );
    let n = reports.len();
    if n == 0 {
        println!("sysfuzz: PASS");
        Ok(())
    } else {
        println!("sysfuzz: FAIL: {n} reports");
        Err(ToolError::Failed(format!("{n} reports")))
    }
}

/// Remove every fuzzed instance (while open: the fds and mappings go after), then the
/// canaries; each parent's pool must be whole again and hold no page; unload.
fn teardown(mon: &mut Monitor) {
    let w = mon.w;
    for (i, s) in w.slots.iter().enumerate() {
        let mut st = s.lock();
        let SlotState::Live(l) = &mut *st else {
            continue;
        };
        if l.removing.is_some() {
            continue;
        }
        l.removing = Some(Instant::now());
        l.removers += 1;
        let inst = l.inst.clone();
        let gen = l.gen;
        drop(st);
        let spawned = std::thread::Builder::new()
            .name("sysfuzz-remove".into())
            .spawn(move || inst.remove());
        match spawned {
            Ok(handle) => {
                w.removers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(world::Remover {
                        first: true,
                        slot: i,
                        gen,
                        started: Instant::now(),
                        handle,
                    })
            }
            Err(e) => w.report(format!("spawn a remover: {e}")),
        }
    }
    mon.drain_removals();
    for c in &w.canaries {
        if let Err(e) = check::check_canary(c) {
            w.report(format!("invariant (end): {e}"));
        }
    }
    mon.scan_kmsg();
}

fn print_report(mon: &Monitor, stats: &Stats, elapsed: Duration) {
    let w = mon.w;
    let total = stats.total();
    let secs = elapsed.as_secs_f64();
    println!(
        "sysfuzz: {total} operations in {secs:.1} s ({:.0}/s) by {} threads",
        total as f64 / secs,
        w.threads.len()
    );
    println!("sysfuzz: {:<16} {:>9}  outcomes", "operation", "runs");
    for &(k, _) in Kind::ALL {
        let outs: Vec<(i32, u64)> = stats
            .res
            .iter()
            .filter(|((kk, _), _)| *kk == k)
            .map(|((_, c), n)| (*c, *n))
            .collect();
        let runs: u64 = outs.iter().map(|(_, n)| n).sum();
        let mut outs = outs;
        outs.sort_by_key(|o| std::cmp::Reverse(o.1));
        let text: Vec<String> = outs
            .iter()
            .map(|(c, n)| format!("{} {n}", code_name(*c)))
            .collect();
        println!("sysfuzz:   {:<16} {runs:>9}  {}", k.name(), text.join(", "));
    }
    let rem: Vec<String> = mon
        .remove_res
        .iter()
        .map(|((first, c), n)| {
            format!(
                "{} {} {n}",
                if *first { "first" } else { "second" },
                code_name(*c)
            )
        })
        .collect();
    println!(
        "sysfuzz: removes: {} (longest blocked {:.1} s while open)",
        rem.join(", "),
        mon.remove_wait_max.as_secs_f64()
    );
    println!(
        "sysfuzz: invariant checks {} (instances, pool accounting, vram_pages, canaries, module refs); faults recovered by the probe {}",
        mon.checks,
        probe::recovered()
    );
    if w.fail_inject {
        let inj: Vec<String> = stats
            .inj
            .iter()
            .map(|(k, (a, h))| format!("{} {h}/{a}", k.name()))
            .collect();
        println!(
            "sysfuzz: fault injection (injected/armed): {}",
            inj.join(", ")
        );
        println!(
            "sysfuzz: fault injection in engine kthreads: {} injected of {} armed; VM_FAULT_OOM retries logged {}",
            mon.eng_injected, mon.eng_armed, mon.fault_oom
        );
    }
}

/// Remove the canaries; every parent must then hold no instance, its whole pool and no
/// page; unload the module, which must report 0 pages outstanding.
fn unload_and_check(
    canaries: Vec<world::Canary>,
    parents: &[Parent],
    kmsg: &mut Kmsg,
) -> Vec<String> {
    let mut bad = Vec::new();
    for c in canaries {
        let inst = c.inst.clone();
        drop(c);
        if let Err(f) = remove_with_timeout(&inst, Duration::from_secs(120)) {
            bad.push(format!("remove canary: {}", f.0));
        }
    }
    for p in parents {
        let n = p.instances().map(|v| v.len()).unwrap_or(usize::MAX);
        let (pool, free, pages) = (p.pool_mb(), p.pool_free_mb(), p.vram_pages());
        match (pool, free, pages) {
            (Ok(pool), Ok(free), Ok(0)) if n == 0 && free == pool => {}
            r => bad.push(format!("{} after removing everything: {n} instances, (pool_mb, pool_free_mb, vram_pages) {r:?}", p.name())),
        }
    }
    let start = Instant::now();
    loop {
        match sys::unload_module(sys::MODULE) {
            Ok(()) => break,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                bad.push(format!("unload {}: {e}", sys::MODULE));
                return bad;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let lines = kmsg.drain();
    match lines
        .iter()
        .find_map(|l| l.split_once("unloaded, ").map(|(_, r)| r.to_string()))
    {
        Some(r) if r.starts_with("0 pages outstanding") => {}
        Some(r) => bad.push(format!("module unload: {r}")),
        None => bad.push("no unload message in the kernel log".into()),
    }
    for l in &lines {
        if KERNEL_BAD.iter().any(|p| l.contains(p)) {
            bad.push(format!("KERNEL (teardown): {l}"));
        }
    }
    bad
}
