//! `vgpu-rig-tests sysfuzz [--ops N] [--threads T] [--seed S] [--fail-inject] [--slots K]
//! [--engines E] [--check-every N] [--op-timeout S]`: a syscall-level, concurrent fuzzer
//! of vgpu_shim (in the spirit of syzkaller), run in the rig (docs/reliability.md).
//! `sysfuzz --fail-inject --repro-vfio-group-warn` only reproduces the VFIO core bug that
//! bounds fault injection into creates (faults.rs).
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
mod engine;
mod faults;
mod ioctl;
mod knobs;
mod life;
mod mem;
mod model;
mod monitor;
mod ops;
mod probe;
mod region;
mod world;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use vgpu_sysfs::handle::Parent;

use crate::harness::{clean_state, remove_with_timeout};
use crate::rng::Rng;
use crate::sys::{self, Kmsg};
use crate::tools::{num, ToolError, ToolResult};

use faults::{FailNth, Faults};
use monitor::{Monitor, KERNEL_BAD};
use ops::{code_name, Kind, Stats};
use world::{Slot, SlotState, World};

/// Creates measured to bound fault injection into creates.
const CALIBRATIONS: usize = 5;

struct Args {
    ops: u64,
    threads: usize,
    seed: u64,
    fail_inject: bool,
    slots: usize,
    engines: u32,
    check_every: u64,
    op_timeout: Duration,
    /// Only reproduce the VFIO core bug that bounds create injection (faults.rs).
    repro_vfio: bool,
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
        repro_vfio: false,
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
            "--repro-vfio-group-warn" => {
                a.repro_vfio = true;
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

fn run(a: &Args) -> Result<(), ToolError> {
    let failed = |m: String| ToolError::Failed(m);
    probe::install();
    let fi = if a.fail_inject {
        Some(Faults::setup().map_err(failed)?)
    } else {
        None
    };
    let r = if a.repro_vfio {
        repro_vfio(a)
    } else {
        fuzz(a, fi.is_some())
    };
    if let Some(f) = fi {
        f.restore();
    }
    r
}

/// `--fail-inject --repro-vfio-group-warn`: show the VFIO core bug (faults.rs).
fn repro_vfio(a: &Args) -> Result<(), ToolError> {
    if !a.fail_inject {
        return Err(ToolError::Usage(
            "--repro-vfio-group-warn needs --fail-inject".into(),
        ));
    }
    let mut rng = Rng::new(a.seed);
    let p = Parent::vgpu(0);
    match faults::repro_vfio_group_warn(&p, || life::uuid(&mut rng).to_string(), 200) {
        Ok(Some((n, lines))) => {
            println!("sysfuzz: VFIO core bug reproduced with injection point {n} of a create:");
            for l in lines {
                println!("sysfuzz:   {l}");
            }
            Err(ToolError::Failed(
                "vfio_group_release WARN_ON reproduced".into(),
            ))
        }
        Ok(None) => {
            println!("sysfuzz: not reproduced");
            Ok(())
        }
        Err(e) => Err(ToolError::Failed(e)),
    }
}

fn fuzz(a: &Args, fail_inject: bool) -> Result<(), ToolError> {
    let failed = |m: String| ToolError::Failed(m);
    let parents = vec![Parent::vgpu(0), Parent::vgpu(1)];
    let mut rng = Rng::new(a.seed ^ 0x5eed);
    let mut canaries = Vec::new();
    for (i, p) in parents.iter().enumerate() {
        canaries.push(check::make_canary(p, i as u32, a.seed, &mut rng).map_err(failed)?);
    }
    let create_inject_max = if fail_inject {
        // The count varies from create to create (a slab may need a new page): the
        // smallest of a few is the path's own length (faults::calibrate_create).
        let mut best: Option<u32> = None;
        let mut why = String::new();
        for _ in 0..CALIBRATIONS {
            let u = life::uuid(&mut rng).to_string();
            match faults::calibrate_create(&parents[0], &u) {
                Ok(n) => best = Some(best.map_or(n, |b| b.min(n))),
                Err(e) => why = e,
            }
        }
        best.unwrap_or_else(|| {
            println!("sysfuzz: creates get no injected failures: {why}");
            0
        })
    } else {
        0
    };
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
        reports: Mutex::new(world::Reports::default()),
        stop: AtomicBool::new(false),
        pause: AtomicBool::new(false),
        parked: Mutex::new(0),
        parked_cv: Condvar::new(),
        resume_cv: Condvar::new(),
        ops_started: AtomicU64::new(0),
        ops_target: a.ops,
        next_gen: AtomicU64::new(1),
        fail_inject,
        create_inject_max,
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
            format!(
                ", fault injection on ({} engine kthreads; creates up to point {create_inject_max})",
                engines.len()
            )
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
        reports.add(r);
    }
    println!(
        "sysfuzz: kernel log reports {kernel_reports}; reports {} ({} kinds)",
        reports.total,
        reports.kinds.len()
    );
    let n = reports.total;
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
