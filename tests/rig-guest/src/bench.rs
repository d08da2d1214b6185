//! `vgpu-rig-tests bench [--csv-dir DIR] [--quick]`: the scheduler benchmark.
//!
//! Every figure is a ratio of the kernel's own accounting (busy_ns, idle_ns, jobs,
//! slices, switches from sysfs) over guest wall time (CLOCK_MONOTONIC, the clock behind
//! ktime_get_ns). The rig runs under TCG, so absolute times say nothing about hardware;
//! ratios and shares do. Sections: share accuracy, overhead, isolation, cap accuracy,
//! slice sweep, and a timeline through a live weight change (DIR/timeline.csv, render it
//! with tests/bench/plot_shares.py). Comparisons between configurations interleave
//! their measurement windows, so a host whose speed drifts (TCG shares the host's
//! cores) affects both sides alike.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use vgpu_vfio::sysfs::{Instance, Parent, Policy};
use vgpu_vfio::Cmd;

use crate::harness::{clean_state, remove_with_timeout, Context, Fail, REMOVE_TIMEOUT};
use crate::sys;
use crate::tools::{ToolError, ToolResult};
use crate::workload::*;

const T128: &str = "vgpu_shim-128M";
const RING_SIZE: u64 = 16 * KIB;
const DATA: u64 = MIB;
const GEMM_TARGET: Duration = Duration::from_millis(3);
const WEIGHTS: [u64; 4] = [1, 2, 4, 8];

struct Bench {
    p: Parent,
    ns_per_mac: f64,
    dim: u64,
    quick: bool,
    /// (section, key, value, unit, target) rows.
    csv: Vec<(String, String, f64, String, String)>,
    failed_targets: Vec<String>,
}

impl Bench {
    fn window(&self) -> Duration {
        if self.quick {
            Duration::from_millis(1200)
        } else {
            Duration::from_secs(2)
        }
    }

    fn settle(&self) -> Duration {
        Duration::from_millis(if self.quick { 300 } else { 500 })
    }

    fn row(&mut self, section: &str, key: &str, value: f64, unit: &str, target: &str, ok: bool) {
        self.csv.push((
            section.into(),
            key.into(),
            value,
            unit.into(),
            target.into(),
        ));
        if !ok {
            self.failed_targets.push(format!(
                "{section} {key}: {value:.2} {unit} (target {target})"
            ));
        }
    }

    /// Create `n` instances with `weights` (cycled) and open their rings.
    fn make(&self, n: usize, weights: &[u64]) -> Result<Vec<Gpu>, Fail> {
        self.make_ring(n, weights, RING_SIZE)
    }

    /// As [`Bench::make`] with rings of `ring` bytes.
    fn make_ring(&self, n: usize, weights: &[u64], ring: u64) -> Result<Vec<Gpu>, Fail> {
        let t = self.p.mdev_type(T128);
        let mut v = Vec::new();
        for i in 0..n {
            let inst = t.create_new().ctx("create")?;
            inst.set_weight(&weights[i % weights.len()].to_string())
                .ctx("weight")?;
            v.push(Gpu::open_ring(&inst, 0, ring)?);
        }
        Ok(v)
    }

    fn saturate(&self, gpus: Vec<Gpu>) -> Vec<Saturator> {
        saturate_all(gpus, DATA, self.dim, 4, Duration::from_millis(40))
    }

    fn remove_all(&self) -> Result<(), Fail> {
        for i in self.p.instances().ctx("instances")? {
            remove_with_timeout(&i, REMOVE_TIMEOUT)?;
        }
        Ok(())
    }

    fn reset_knobs(&self) -> Result<(), Fail> {
        self.p.set_policy("best_effort").ctx("policy")?;
        self.p.set_slice_us("1000").ctx("slice_us")?;
        Ok(())
    }
}

fn alive(sats: &[Saturator]) -> Result<(), Fail> {
    if sats.iter().any(|s| s.finished()) {
        return Err(Fail("a saturated ring stopped (error?)".into()));
    }
    Ok(())
}

fn insts(gpus: &[Gpu]) -> Vec<Instance> {
    gpus.iter().map(|g| g.inst.clone()).collect()
}

/// Run `f` with saturators on `gpus`, then stop them and close the instances.
fn with_load<T>(
    b: &Bench,
    gpus: Vec<Gpu>,
    f: impl FnOnce(&[Instance]) -> Result<T, Fail>,
) -> Result<T, Fail> {
    with_sats(b, gpus, |is, _| f(is))
}

/// As [`with_load`]; `f` also gets the saturators (to pause them).
fn with_sats<T>(
    b: &Bench,
    gpus: Vec<Gpu>,
    f: impl FnOnce(&[Instance], &[Saturator]) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let is = insts(&gpus);
    let sats = b.saturate(gpus);
    let r = f(&is, &sats);
    let a = alive(&sats);
    let gpus = stop_all(sats)?;
    for mut g in gpus {
        let _ = g.eng.reset();
    }
    let v = r?;
    a?;
    Ok(v)
}

fn pctl(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn max_err(got: &[f64], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
}

// ---- sections -----------------------------------------------------------------------

fn share_accuracy(b: &mut Bench, out: &mut String) -> Result<(), Fail> {
    let _ = writeln!(
        out,
        "\n1. Share accuracy: N instances saturating with GEMM, weights cycling {WEIGHTS:?};\n   max |measured - configured share| of the engine's busy time (fixed_share: also of wall time)"
    );
    let _ = writeln!(
        out,
        "   {:>3}  {:>12} {:>12} {:>12}   target    fixed_share of wall",
        "N", "best_effort", "equal_share", "fixed_share"
    );
    let ns: &[usize] = if b.quick { &[2, 4] } else { &[2, 4, 8, 16] };
    for &n in ns {
        let gpus = b.make(n, &WEIGHTS)?;
        let weights: Vec<u64> = (0..n).map(|i| WEIGHTS[i % 4]).collect();
        let sw: u64 = weights.iter().sum();
        let (settle, win) = (b.settle(), b.window());
        let p = b.p.clone();
        // (share error per policy, fixed_share error of wall, engine busy % under it)
        let (errs, wall_err, util) = with_load(b, gpus, |is| {
            let mut errs = Vec::new();
            let (mut wall_err, mut util) = (0.0, 0.0);
            for pol in Policy::ALL {
                p.set_policy(pol.as_str()).ctx("policy")?;
                let w = measure(&p, is, settle, win)?;
                let want: Vec<f64> = match pol {
                    Policy::EqualShare => vec![100.0 / n as f64; n],
                    _ => weights
                        .iter()
                        .map(|x| 100.0 * *x as f64 / sw as f64)
                        .collect(),
                };
                errs.push(max_err(&w.shares(), &want));
                if pol == Policy::FixedShare {
                    wall_err = max_err(&w.utils(), &want);
                    util = w.parent_util();
                }
            }
            Ok((errs, wall_err, util))
        })?;
        b.remove_all()?;
        b.reset_knobs()?;
        let _ = writeln!(
            out,
            "   {n:>3}  {:>9.2} pp {:>9.2} pp {:>9.2} pp   <= 1 pp   {wall_err:.2} pp (engine busy {util:.1}% of wall)",
            errs[0], errs[1], errs[2]
        );
        for (pol, e) in Policy::ALL.iter().zip(&errs) {
            b.row("share", &format!("N={n} {pol}"), *e, "pp", "<=1", *e <= 1.0);
        }
        b.row(
            "share",
            &format!("N={n} fixed_share of wall"),
            wall_err,
            "pp",
            "",
            true,
        );
    }
    Ok(())
}

fn overhead(b: &mut Bench, out: &mut String) -> Result<(), Fail> {
    // 4 instances; rounds alternate "instance 0 alone" (the others paused and drained)
    // and "all 4 sharing".
    let gpus = b.make_ring(4, &[1], 4 * KIB)?;
    let rounds = if b.quick { 3 } else { 8 };
    let win = Duration::from_millis(600);
    let p = b.p.clone();
    let res = with_sats(b, gpus, |is, sats| {
        let mut v = Vec::new();
        for _ in 0..rounds {
            for s in &sats[1..] {
                s.set_paused(true);
            }
            let t = Instant::now();
            while is[1..].iter().any(|i| i.queue_depth().unwrap_or(0) > 0) {
                if t.elapsed() > Duration::from_secs(20) {
                    return Err(Fail("paused rings did not drain".into()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let w1 = measure(&p, is, Duration::from_millis(100), win)?;
            for s in &sats[1..] {
                s.set_paused(false);
            }
            let w4 = measure(&p, is, Duration::from_millis(300), win)?;
            let jobs = |w: &Window| w.jobs.iter().sum::<u64>() as f64;
            let busy = |w: &Window| w.busy.iter().sum::<f64>();
            v.push((
                jobs(&w1) / (w1.wall_ns / 1e9),
                jobs(&w4) / (w4.wall_ns / 1e9),
                jobs(&w1) / (busy(&w1) / 1e9),
                jobs(&w4) / (busy(&w4) / 1e9),
            ));
        }
        Ok(v)
    })?;
    b.remove_all()?;
    // Per-round ratios and their median: one disturbed round does not decide.
    let mut ratios: Vec<f64> = res.iter().map(|x| 100.0 * x.1 / x.0).collect();
    let mut ratios_b: Vec<f64> = res.iter().map(|x| 100.0 * x.3 / x.2).collect();
    let per_round: Vec<String> = ratios.iter().map(|x| format!("{x:.1}%")).collect();
    let n = res.len() as f64;
    let t1 = res.iter().map(|r| r.0).sum::<f64>() / n;
    let t4 = res.iter().map(|r| r.1).sum::<f64>() / n;
    let r = pctl(&mut ratios, 0.5);
    let rb = pctl(&mut ratios_b, 0.5);
    let _ = writeln!(
        out,
        "\n2. Overhead: aggregate GEMM throughput, 4 instances sharing vs 1 alone, {rounds} interleaved rounds\n   {t4:.1} vs {t1:.1} jobs/s on average; median ratio per wall second {r:.1}%   (target >= 98%; rounds: {})\n   median ratio per engine-busy second {rb:.1}%",
        per_round.join(" ")
    );
    b.row(
        "overhead",
        "4 vs 1 throughput (wall)",
        r,
        "%",
        ">=98",
        r >= 98.0,
    );
    b.row("overhead", "4 vs 1 throughput (busy)", rb, "%", "", true);
    Ok(())
}

/// A victim's small jobs, alone or next to a saturating neighbour: for each, the wall
/// latency from just before its TAIL write until its FENCE's write lands in VRAM (seen
/// by spinning on the mapping: no interrupt or sleep in the measurement), in slices,
/// and the slices the engine gave the neighbour meanwhile (from the kernel's counter,
/// so a slow or busy host does not inflate it).
fn victim_latencies(
    b: &Bench,
    with_neighbour: bool,
    samples: u32,
) -> Result<(Vec<f64>, Vec<f64>), Fail> {
    let slice_us = b.p.slice_us().ctx("slice_us")? as f64;
    let mut gpus = b.make_ring(if with_neighbour { 2 } else { 1 }, &[1], 4 * KIB)?;
    let mut victim = gpus.remove(0);
    let neighbour = gpus.first().map(|g| g.inst.clone());
    let flag = 2 * MIB;
    let mut run = |_: &[Instance]| -> Result<(Vec<f64>, Vec<f64>), Fail> {
        std::thread::sleep(Duration::from_millis(300));
        let (mut lat, mut waited) = (Vec::new(), Vec::new());
        for i in 0..samples {
            let (f, seq) = victim.eng.next_fence(false, Some(flag));
            let cmds = [
                Cmd::Fill {
                    dst: DATA,
                    len: 4096,
                    value: i,
                },
                f,
            ];
            let n0 = match &neighbour {
                Some(n) => n.slices().ctx("slices")?,
                None => 0,
            };
            let t = Instant::now();
            victim.eng.submit(&cmds)?;
            let mut spins = 0u32;
            while victim.vram().read_u64(flag)? != seq {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024) && t.elapsed() > Duration::from_secs(10) {
                    return Err(Fail(format!("victim job {i} not done after 10 s")));
                }
                std::hint::spin_loop();
            }
            lat.push(t.elapsed().as_secs_f64() * 1e6 / slice_us);
            if let Some(n) = &neighbour {
                // The neighbour's slice in progress at submission, plus any it started
                // before the victim's job completed (the read after completion may
                // catch one more, started after it).
                waited.push(1.0 + n.slices().ctx("slices")?.saturating_sub(n0) as f64);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((lat, waited))
    };
    let r = if with_neighbour {
        with_load(b, gpus, run)
    } else {
        run(&[])
    };
    let _ = victim.eng.reset();
    drop(victim);
    b.remove_all()?;
    r
}

fn isolation(b: &mut Bench, out: &mut String) -> Result<(), Fail> {
    let slice_us = b.p.slice_us().ctx("slice_us")?;
    let samples = if b.quick { 60 } else { 200 };
    let (mut alone, _) = victim_latencies(b, false, samples)?;
    let (mut next, mut waited) = victim_latencies(b, true, samples)?;
    let (a50, a99) = (pctl(&mut alone, 0.5), pctl(&mut alone, 0.99));
    let (n50, n99) = (pctl(&mut next, 0.5), pctl(&mut next, 0.99));
    let (w50, w99) = (pctl(&mut waited, 0.5), pctl(&mut waited, 0.99));
    let _ = writeln!(
        out,
        "\n3. Isolation: a victim submits FILL 4 KiB + FENCE every 20 ms, {samples} samples, next to a\n   neighbour saturating the engine with GEMMs of ~3 slices each (slice_us {slice_us}).\n   Latency from the victim's TAIL write until its fence's write is seen in VRAM (spinning), in slices;\n   under TCG it includes the worker's wake-up and any time the host takes the vCPUs away:\n     alone:                               p50 {a50:.2}  p99 {a99:.2}\n     next to the neighbour:               p50 {n50:.2}  p99 {n99:.2}   (target p99 <= 2 slices)\n     added by the neighbour (p50):        {:.2}\n   neighbour slices counted by the kernel from submission until the completion was seen,\n   plus the one running (an upper bound, it grows with the spinner's delays): p50 {w50:.0}  p99 {w99:.0}",
        n50 - a50
    );
    b.row(
        "isolation",
        "victim wall p50 alone",
        a50,
        "slices",
        "",
        true,
    );
    b.row(
        "isolation",
        "victim wall p99 alone",
        a99,
        "slices",
        "",
        true,
    );
    b.row(
        "isolation",
        "victim wall p50 with neighbour",
        n50,
        "slices",
        "",
        true,
    );
    b.row(
        "isolation",
        "victim wall p99 with neighbour",
        n99,
        "slices",
        "<=2",
        n99 <= 2.0,
    );
    b.row(
        "isolation",
        "victim slices counted p50",
        w50,
        "slices",
        "",
        true,
    );
    b.row(
        "isolation",
        "victim slices counted p99",
        w99,
        "slices",
        "",
        true,
    );
    Ok(())
}

fn caps(b: &mut Bench, out: &mut String) -> Result<(), Fail> {
    let caps = [10u64, 25, 50];
    let gpus = b.make(3, &[1])?;
    for (g, c) in gpus.iter().zip(caps) {
        g.inst.set_cap(&c.to_string()).ctx("cap")?;
    }
    let (settle, win) = (b.settle(), b.window() + Duration::from_secs(1));
    let p = b.p.clone();
    let w = with_load(b, gpus, |is| measure(&p, is, settle, win))?;
    b.remove_all()?;
    let u = w.utils();
    let _ = writeln!(
        out,
        "\n4. Cap accuracy: 3 capped instances saturating together (sum 85%, the engine otherwise idle)"
    );
    for (i, c) in caps.iter().enumerate() {
        let e = (u[i] - *c as f64).abs();
        let _ = writeln!(
            out,
            "   cap {c:>3}%: measured {:>5.1}% of wall, |error| {e:.2} pp, throttled {:.1}%   (target <= 1 pp)",
            u[i],
            100.0 * w.throttled[i] / w.wall_ns
        );
        b.row("cap", &format!("cap {c}"), e, "pp", "<=1", e <= 1.0);
    }
    Ok(())
}

fn slice_sweep(b: &mut Bench, out: &mut String) -> Result<(), Fail> {
    let slices = [100u64, 500, 1000, 2000, 10000];
    let gpus = b.make(4, &[1])?;
    let win = Duration::from_millis(600);
    let p = b.p.clone();
    // Up, down, up, down, averaged: a drifting host speed cancels out.
    let passes = if b.quick { 2 } else { 4 };
    let order: Vec<usize> = (0..passes)
        .flat_map(|i| {
            let v: Vec<usize> = if i % 2 == 0 {
                (0..slices.len()).collect()
            } else {
                (0..slices.len()).rev().collect()
            };
            v
        })
        .collect();
    let res = with_load(b, gpus, |is| {
        let mut acc = vec![(0.0, 0.0, 0.0, 0.0); slices.len()];
        let k_n = passes as f64;
        for &k in &order {
            p.set_slice_us(&slices[k].to_string()).ctx("slice_us")?;
            let w = measure(&p, is, Duration::from_millis(200), win)?;
            let jobs = w.jobs.iter().sum::<u64>() as f64;
            let busy: f64 = w.busy.iter().sum();
            let n = w.slices.iter().sum::<u64>().max(1) as f64;
            acc[k].0 += jobs / (w.wall_ns / 1e9) / k_n;
            acc[k].1 += jobs / (busy / 1e9) / k_n;
            acc[k].2 += w.switches as f64 / (w.wall_ns / 1e9) / k_n;
            acc[k].3 += busy / n / 1e3 / k_n;
        }
        Ok(acc)
    })?;
    b.remove_all()?;
    b.reset_knobs()?;
    let (base, base_b) = (res[slices.len() - 1].0, res[slices.len() - 1].1);
    let _ = writeln!(
        out,
        "\n5. Slice sweep: 4 equal instances saturating, each slice_us measured in {passes} passes (up and down);\n   throughput relative to slice_us 10000 per wall second (and per engine-busy second)"
    );
    for (s, (t, tb, sw, mean)) in slices.iter().zip(&res) {
        let rel = 100.0 * t / base;
        let relb = 100.0 * tb / base_b;
        let target = if *s == 100 { "   (target >= 97%)" } else { "" };
        let _ = writeln!(
            out,
            "   slice {s:>5} us: {t:>6.1} jobs/s = {rel:>5.1}% (busy: {relb:>5.1}%), {sw:>6.0} switches/s, mean slice {mean:>6.0} us{target}"
        );
        let tgt = if *s == 100 { ">=97" } else { "" };
        b.row(
            "slice",
            &format!("{s} us relative throughput"),
            rel,
            "%",
            tgt,
            *s != 100 || rel >= 97.0,
        );
        b.row(
            "slice",
            &format!("{s} us relative throughput per busy"),
            relb,
            "%",
            "",
            true,
        );
        b.row(
            "slice",
            &format!("{s} us mean slice"),
            *mean,
            "us",
            "",
            true,
        );
    }
    Ok(())
}

fn timeline(b: &mut Bench, out: &mut String, dir: Option<&str>) -> Result<(), Fail> {
    let weights = [1u64, 1, 2];
    let gpus = b.make(3, &weights)?;
    let total = if b.quick { 3.0 } else { 6.0 };
    let p = b.p.clone();
    let mut csv = String::from("t_ms,instance,weight,share_pct\n");
    let rows = with_load(b, gpus, |is| {
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        let mut prev = snap(&p, is)?;
        let mut w = weights;
        let mut changed = false;
        let mut rows = Vec::new();
        while t0.elapsed().as_secs_f64() < total {
            std::thread::sleep(Duration::from_millis(100));
            if !changed && t0.elapsed().as_secs_f64() >= total / 2.0 {
                is[0].set_weight("4").ctx("weight")?;
                w[0] = 4;
                changed = true;
            }
            let s = snap(&p, is)?;
            let win = window(&prev, &s);
            let t_ms = s.t.duration_since(t0).as_secs_f64() * 1e3;
            for (i, sh) in win.shares().iter().enumerate() {
                rows.push((t_ms, i, w[i], *sh));
            }
            prev = s;
        }
        Ok(rows)
    })?;
    b.remove_all()?;
    for (t, i, w, sh) in &rows {
        let _ = writeln!(csv, "{t:.0},vgpu{i},{w},{sh:.2}");
    }
    // Steady-state shares before and after the change (skip 300 ms after it).
    let mid = rows.iter().map(|r| r.0).fold(0.0, f64::max) / 2.0;
    let avg = |lo: f64, hi: f64, i: usize| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.1 == i && r.0 > lo && r.0 <= hi)
            .map(|r| r.3)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let before: Vec<f64> = (0..3).map(|i| avg(0.0, mid, i)).collect();
    let after: Vec<f64> = (0..3).map(|i| avg(mid + 300.0, f64::MAX, i)).collect();
    let _ = writeln!(
        out,
        "\n6. Timeline: 3 instances (weights 1,1,2) saturating, share sampled every 100 ms for {total:.0} s;\n   instance 0's weight 1 -> 4 at {:.1} s\n   mean shares before: {} (want 25.0% 25.0% 50.0%)\n   mean shares after:  {} (want 57.1% 14.3% 28.6%)",
        mid / 1e3,
        pcts(&before),
        pcts(&after)
    );
    match dir {
        Some(d) => {
            let path = std::path::Path::new(d).join("timeline.csv");
            std::fs::create_dir_all(d).ctx(format!("mkdir {d}"))?;
            std::fs::write(&path, &csv).ctx(format!("write {}", path.display()))?;
            let _ = writeln!(
                out,
                "   wrote {} ({} rows); render: tests/bench/plot_shares.py {} timeline.svg",
                path.display(),
                rows.len(),
                path.display()
            );
        }
        None => {
            let _ = writeln!(out, "   timeline.csv (no --csv-dir given):");
            for l in csv.lines() {
                let _ = writeln!(out, "   {l}");
            }
        }
    }
    for i in 0..3 {
        b.row(
            "timeline",
            &format!("vgpu{i} share before"),
            before[i],
            "%",
            "",
            true,
        );
        b.row(
            "timeline",
            &format!("vgpu{i} share after"),
            after[i],
            "%",
            "",
            true,
        );
    }
    Ok(())
}

/// The subcommand.
pub fn main(args: &[String]) -> ToolResult {
    let mut dir = None;
    let mut quick = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--csv-dir" => {
                dir = Some(
                    args.get(i + 1)
                        .ok_or_else(|| ToolError::Usage("--csv-dir DIR".into()))?
                        .clone(),
                );
                i += 2;
            }
            "--quick" => {
                quick = true;
                i += 1;
            }
            o => return Err(ToolError::Usage(format!("unknown argument {o:?}"))),
        }
    }
    clean_state().map_err(|e| ToolError::Failed(format!("clean state: {}", e.0)))?;
    sys::load_module(&sys::ko_path(), "pool_mb=4096")
        .map_err(|e| ToolError::Failed(format!("load vgpu_shim: {e}")))?;
    let r = run(dir.as_deref(), quick);
    let c = clean_state();
    r?;
    c.map_err(|e| ToolError::Failed(format!("cleanup: {}", e.0)))?;
    Ok(())
}

fn run(dir: Option<&str>, quick: bool) -> ToolResult {
    let start = Instant::now();
    let p = Parent::vgpu(0);
    let mut b = Bench {
        p: p.clone(),
        ns_per_mac: 1.0,
        dim: 16,
        quick,
        csv: Vec::new(),
        failed_targets: Vec::new(),
    };
    {
        let mut g = b.make(1, &[1])?;
        b.ns_per_mac = calibrate(&mut g[0], DATA)?;
        b.dim = gemm_dim_for(b.ns_per_mac, GEMM_TARGET);
        drop(g);
        b.remove_all()?;
    }
    println!("vgpu scheduler benchmark");
    println!(
        "All figures are ratios of the kernel's own accounting (sysfs busy_ns, idle_ns, jobs, slices,\nswitches) over guest wall time. The rig runs under TCG (software emulation): absolute\ntimes are not hardware figures, and guest wake-ups are slow."
    );
    println!(
        "engines {}, slice_us {}, GEMM {}^3 ≈ {:.1} ms of engine time ({:.2} ns/MAC), 4 GEMMs per FENCE",
        p.engines().unwrap_or(0),
        p.slice_us().unwrap_or(0),
        b.dim,
        b.ns_per_mac * (b.dim * b.dim * b.dim) as f64 / 1e6,
        b.ns_per_mac
    );
    type Section = fn(&mut Bench, &mut String) -> Result<(), Fail>;
    let sections: [(&str, Section); 5] = [
        ("share accuracy", share_accuracy),
        ("overhead", overhead),
        ("isolation", isolation),
        ("cap accuracy", caps),
        ("slice sweep", slice_sweep),
    ];
    let mut errors = Vec::new();
    for (name, f) in sections {
        let mut out = String::new();
        let t = Instant::now();
        let r = f(&mut b, &mut out);
        print!("{out}");
        println!("   ({name}: {:.0} s)", t.elapsed().as_secs_f64());
        if let Err(e) = r {
            println!("   {name}: ERROR {}", e.0);
            errors.push(format!("{name}: {}", e.0));
            let _ = b.remove_all();
            let _ = b.reset_knobs();
        }
    }
    let mut out = String::new();
    let r = timeline(&mut b, &mut out, dir);
    print!("{out}");
    if let Err(e) = r {
        println!("   timeline: ERROR {}", e.0);
        errors.push(format!("timeline: {}", e.0));
    }
    let mut csv = String::from("section,key,value,unit,target\n");
    for (s, k, v, u, t) in &b.csv {
        let _ = writeln!(csv, "{s},{k},{v:.3},{u},{t}");
    }
    println!("\nCSV:");
    for l in csv.lines() {
        println!("csv,{l}");
    }
    if let Some(d) = dir {
        let path = std::path::Path::new(d).join("bench.csv");
        std::fs::write(&path, &csv)
            .map_err(|e| ToolError::Failed(format!("write {}: {e}", path.display())))?;
        println!("wrote {}", path.display());
    }
    println!(
        "\nbench took {:.0} s; targets missed: {}",
        start.elapsed().as_secs_f64(),
        if b.failed_targets.is_empty() {
            "none".to_string()
        } else {
            b.failed_targets.join("; ")
        }
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ToolError::Failed(errors.join("; ")))
    }
}
