//! The preempt suite: wake-up preemption in the time-slice scheduler
//! (docs/scheduler.md, "Wake-up preemption"; parent `vgpu/preempt`, `vgpu/preemptions`,
//! instance `vgpu/preemptions`).
//!
//! Every verdict comes from the kernel's own counters (`preemptions`, `slices`,
//! `switches`, `busy_ns`, `latency_hist`), never from how fast the host is: a loaded
//! host can stretch a chunk past the end of a slice (which then ends by itself, no
//! preemption needed), so scripts/test runs the suite under QEMU -icount (one vCPU, the
//! guest clock counts guest instructions), where the counts are the module's alone.
//! With `--smp 2` the engine thread is pinned to CPU 1 and the submitters to CPU 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vgpu_sysfs::handle::Parent;
use vgpu_sysfs::LatencyHist;
use vgpu_vfio::Cmd;

use crate::engine::{expect_shares, fleet, new_gpu, with_saturated, DATA, SHARE_TOL, T128};
use crate::foundation::{bad_writes, COMMON_BAD};
use crate::harness::{Context, Ctx, Fail, Suite, Test, TestResult};
use crate::util::*;
use crate::workload::*;
use crate::{ensure, ensure_eq};

/// The default slice (slice_us 1000), ns.
const SLICE_NS: u64 = 1_000_000;
/// The preemption granularity at that slice: slice_us / 20 (VGPU_PREEMPT_GRAN_DIV).
const GRAN_NS: u64 = SLICE_NS / 20;
/// Victim jobs per measurement.
const VICTIM_JOBS: u32 = 60;
/// Where the victim's FILL and fence flag go.
const V_SCRATCH: u64 = DATA;
const V_FLAG: u64 = DATA + 64 * KIB;

/// The suite.
pub fn suite() -> Suite {
    let t = |name, params, run| Test { name, params, run };
    Suite {
        name: "preempt",
        about: "wake-up preemption: the knob, latency, caps, no thrash, weights",
        tests: vec![
            t("preempt_knob", Some(""), preempt_knob),
            t("preempt_param_off", Some("preempt=0"), preempt_param_off),
            t("preempt_victim", Some(""), preempt_victim),
            t("preempt_off", Some(""), preempt_off),
            t("preempt_capped", Some(""), preempt_capped),
            t("preempt_no_thrash", Some(""), preempt_no_thrash),
            t("preempt_weights", Some(""), preempt_weights),
        ],
    }
}

// ---- helpers ------------------------------------------------------------------------

/// With two vCPUs, the engine on CPU 1 and the test's threads on CPU 0; with one (the
/// icount rig), nothing to pin.
fn pin() -> Result<Option<Pinned>, Fail> {
    if cpu_count() >= 2 {
        Pinned::engine_apart().map(Some)
    } else {
        Ok(None)
    }
}

/// Samples of `h` at or below `ns` (whole buckets whose upper bound is at most `ns`).
fn count_le(h: &LatencyHist, ns: u64) -> u64 {
    h.buckets
        .iter()
        .filter(|(ub, _)| *ub <= ns)
        .map(|b| b.1)
        .sum()
}

fn show(h: &LatencyHist) -> String {
    let q = |p| {
        h.quantile_ns(p)
            .map(|v| format!("{:.0} us", v as f64 / 1e3))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "{} samples, p50 {} p99 {} max {}",
        h.total(),
        q(0.5),
        q(0.99),
        q(1.0)
    )
}

/// A neighbour saturating the engine with long GEMMs (each several slices: a slice
/// always ends inside one) while `f` runs.
fn with_neighbour<T>(
    ctx: &Ctx,
    p: &Parent,
    f: impl FnOnce(&[vgpu_sysfs::handle::Instance]) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let (gpus, ns) = fleet(ctx, p, &[1])?;
    with_saturated(gpus, ns, f).map(|(r, _)| r)
}

/// The victim's latency next to a saturating neighbour, with the parent's and the
/// instances' preemption counters over the run: (hist, parent preemptions, victim's
/// preemptions, neighbour's preemptions).
fn victim_next_to_neighbour(
    ctx: &mut Ctx,
    preempt: bool,
) -> Result<(LatencyHist, u64, u64, u64), Fail> {
    let p = ctx.parent(0)?;
    p.set_preempt(if preempt { "1" } else { "0" })
        .ctx("preempt")?;
    let mut v = new_gpu(ctx, &p)?;
    let _pin = pin()?;
    let (h, pp, vp, np) = with_neighbour(ctx, &p, |nb| {
        std::thread::sleep(Duration::from_millis(100));
        let (p0, v0) = (p.preemptions().ctx("preemptions")?, v.inst.preemptions()?);
        let n0 = nb[0].preemptions()?;
        let h = victim_latency(
            &mut v,
            VICTIM_JOBS,
            Duration::from_millis(2),
            V_SCRATCH,
            V_FLAG,
        )?;
        Ok((
            h,
            p.preemptions()? - p0,
            v.inst.preemptions()? - v0,
            nb[0].preemptions()? - n0,
        ))
    })?;
    ctx.note(format!(
        "preempt={}: victim {}; preemptions: parent {pp}, victim {vp}, neighbour {np}",
        u8::from(preempt),
        show(&h)
    ));
    Ok((h, pp, vp, np))
}

/// Remove every instance and load the module afresh (the harness's clean state).
fn harness_reload(ctx: &mut Ctx) -> TestResult {
    crate::harness::clean_state()?;
    ctx.load("")
}

// ---- the knob -----------------------------------------------------------------------

fn preempt_knob(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, T128)?;
    ensure_attr(p.preempt(), 1, "default preempt")?;
    ensure_attr(p.preemptions(), 0, "parent preemptions of a new parent")?;
    ensure_attr(inst.preemptions(), 0, "preemptions of a new instance")?;
    let bad: Vec<&str> = COMMON_BAD
        .iter()
        .chain(&["2", "10", "01x"])
        .copied()
        .collect();
    ctx.soft(bad_writes(
        "preempt",
        &|s| p.set_preempt(s),
        &|| p.preempt(),
        &bad,
    ));
    for (v, want) in [("0", 0), ("1\n", 1), ("0\n", 0), ("1", 1)] {
        p.set_preempt(v).ctx(format!("preempt <- {v:?}"))?;
        ensure_attr(p.preempt(), want, "preempt")?;
    }
    // the counters are read-only
    for path in [p.vgpu_attr("preemptions"), inst.vgpu_attr("preemptions")] {
        ensure!(
            vgpu_sysfs::io::write_attr(&path, "0").is_err(),
            "{} took a write",
            path.display()
        );
    }
    Ok(())
}

fn preempt_param_off(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    ensure_attr(
        p.preempt(),
        0,
        "preempt with the module parameter preempt=0",
    )?;
    p.set_preempt("1").ctx("preempt <- 1")?;
    ensure_attr(p.preempt(), 1, "preempt")
}

// ---- preemption happens, and the knob turns it off ----------------------------------

/// A victim's small jobs next to a neighbour's long GEMMs: each doorbell takes the
/// engine from the neighbour within the granularity plus a chunk, not at the end of
/// the neighbour's slice; compared with the same run with preemption off.
fn preempt_victim(ctx: &mut Ctx) -> TestResult {
    let (off, ..) = victim_next_to_neighbour(ctx, false)?;
    harness_reload(ctx)?;
    let (h, pp, vp, np) = victim_next_to_neighbour(ctx, true)?;
    let n = u64::from(VICTIM_JOBS);
    // A doorbell that comes in the last chunk of the neighbour's slice is served by
    // the slice end itself (no preemption): a few percent of them.
    ensure!(
        vp * 4 >= n * 3,
        "the victim preempted the neighbour {vp} times in {n} jobs (want >= 3/4)"
    );
    ensure_eq!(pp, vp, "parent preemptions vs the victim's");
    ensure_eq!(
        np,
        0,
        "the saturating neighbour's preemptions (its ring never idles)"
    );
    // Without preemption a doorbell waits for the rest of the neighbour's slice (on
    // one vCPU, nearly a whole slice; on two, uniform over the slice); with it, for
    // the granularity plus a chunk. The tail is the guest's CPU scheduler, not the
    // module (on one vCPU, 6.12's EEVDF above all, the engine thread may wait for the
    // CPU behind the submitters), so the verdict compares with preemption off: at
    // least a quarter of all jobs more within a quarter slice.
    let (quick, quick_off) = (count_le(&h, SLICE_NS / 4), count_le(&off, SLICE_NS / 4));
    ensure!(
        quick >= quick_off + n / 4,
        "{quick} of {n} victim jobs within a quarter slice with preemption ({}), {quick_off} without ({})",
        show(&h),
        show(&off)
    );
    Ok(())
}

/// The same with `preempt` 0: no preemption at all, the victim waits for slice ends.
fn preempt_off(ctx: &mut Ctx) -> TestResult {
    let (h, pp, vp, _) = victim_next_to_neighbour(ctx, false)?;
    ensure_eq!(pp, 0, "parent preemptions with preempt 0");
    ensure_eq!(vp, 0, "victim preemptions with preempt 0");
    ensure_eq!(h.total(), u64::from(VICTIM_JOBS), "victim samples");
    Ok(())
}

// ---- caps ---------------------------------------------------------------------------

/// A victim capped at 1 % of the engine (a bucket of 100 us, refilled at 10 us per ms)
/// submitting small jobs back to back next to a saturating neighbour: it is out of
/// budget at most wake-ups, and then it does not preempt; the neighbour's slices end
/// early only when the victim actually takes the engine, and the cap holds.
fn preempt_capped(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut v = new_gpu(ctx, &p)?;
    v.inst.set_cap("1").ctx("cap")?;
    let _pin = pin()?;
    let cap = 0.01;
    let depth_ns = 10e6 * cap; // max(2 slices, 10 ms) at 1 %
    let (w, pp, vp, jobs) = with_neighbour(ctx, &p, |nb| {
        std::thread::sleep(Duration::from_millis(100));
        let insts = [nb[0].clone(), v.inst.clone()];
        let a = snap(&p, &insts)?;
        let (p0, v0, j0) = (p.preemptions()?, v.inst.preemptions()?, v.inst.jobs()?);
        let t0 = Instant::now();
        // back-to-back small jobs, each waited for: one wake-up each
        let mut i = 0u32;
        while t0.elapsed() < Duration::from_millis(1500) {
            let (f, seq) = v.eng.next_fence(false, Some(V_FLAG));
            v.eng
                .submit(&[
                    Cmd::Fill {
                        dst: V_SCRATCH,
                        len: 64 * KIB,
                        value: i,
                    },
                    f,
                ])
                .ctx("victim submit")?;
            let t = Instant::now();
            while v.vram().read_u64(V_FLAG)? != seq {
                v.eng.check().ctx("victim ring")?;
                ensure!(
                    t.elapsed() < Duration::from_secs(20),
                    "victim job {i} hangs"
                );
                std::thread::sleep(Duration::from_micros(100));
            }
            i += 1;
        }
        let b = snap(&p, &insts)?;
        Ok((
            window(&a, &b),
            p.preemptions()? - p0,
            v.inst.preemptions()? - v0,
            v.inst.jobs()? - j0,
        ))
    })?;
    let wall = w.wall_ns;
    ctx.note(format!(
        "capped victim: {jobs} jobs, {vp} preemptions (parent {pp}), busy {:.2} ms in {:.0} ms wall \
         (cap {:.2} ms + bucket {:.2} ms); neighbour {} slices, {:.1} ms busy",
        w.busy[1] / 1e6,
        wall / 1e6,
        cap * wall / 1e6,
        depth_ns / 1e6,
        w.slices[0],
        w.busy[0] / 1e6
    ));
    // invariant 4 with preemption on: r·T + depth + a chunk (and one for the lag)
    let chunk_ns = 100e3;
    ensure!(
        w.busy[1] <= cap * wall + depth_ns + 2.0 * chunk_ns,
        "the capped victim ran {:.2} ms in {:.0} ms (cap 1 %)",
        w.busy[1] / 1e6,
        wall / 1e6
    );
    // Each job costs more engine time (~40 us) than the cap refills while the victim
    // turns around (10 us per ms), so it wakes out of budget most of the time and then
    // does not preempt (uncapped, it preempts at every wake-up: preempt_victim). A wake
    // after a long turnaround, or after a job that ended with budget left, has budget
    // and may preempt: the kernel's counters cannot tell those apart, hence the loose
    // bound. (An out-of-budget request could not hand the engine over anyway: the pick
    // skips a throttled instance; the check in the doorbell path only saves the
    // neighbour a needless slice end.)
    ensure!(
        vp * 2 <= jobs,
        "the capped victim preempted at {vp} of its {jobs} wake-ups (most come out of budget)"
    );
    ensure_eq!(pp, vp, "parent preemptions vs the victim's");
    Ok(())
}

// ---- no thrash ----------------------------------------------------------------------

/// A tenant that submits a batch of GEMMs, waits for its fence (polling VRAM, so the
/// instance's lock is not taken), and submits again: its ring idles between batches,
/// so every batch is a wake-up.
struct Bursty {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(Gpu, Result<u64, Fail>)>>,
}

impl Bursty {
    fn start(mut gpu: Gpu, gemm: Gemm, per_batch: usize, flag: u64) -> Bursty {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let r = (|| {
                let mut batches = 0;
                while !s2.load(Ordering::Relaxed) {
                    let (f, seq) = gpu.eng.next_fence(false, Some(flag));
                    let mut cmds = vec![gemm.cmd(); per_batch];
                    cmds.push(f);
                    gpu.eng.submit(&cmds).ctx("bursty submit")?;
                    let t = Instant::now();
                    while gpu.vram().read_u64(flag)? != seq {
                        gpu.eng.check().ctx("bursty ring")?;
                        ensure!(t.elapsed() < Duration::from_secs(30), "bursty batch hangs");
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    batches += 1;
                }
                Ok(batches)
            })();
            (gpu, r)
        });
        Bursty {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> Result<u64, Fail> {
        self.stop.store(true, Ordering::Relaxed);
        let h = self
            .handle
            .take()
            .ok_or_else(|| Fail("already stopped".into()))?;
        match h.join() {
            Ok((_, r)) => r,
            Err(_) => Err(Fail("bursty thread panicked".into())),
        }
    }
}

impl Drop for Bursty {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// No ping-pong. Two saturating tenants (rings never idle, so nothing wakes): no
/// preemption, and one switch per slice as without it. Two tenants that wake all the
/// time (batches of ~300 us of GEMMs, each waited for): preemptions at most one per
/// granularity (50 us) of engine time.
fn preempt_no_thrash(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let _pin = pin()?;
    let (gpus, ns) = fleet(ctx, &p, &[1, 1])?;
    let (sat, gpus) = with_saturated(gpus, ns, |is| {
        std::thread::sleep(Duration::from_millis(300));
        let p0 = p.preemptions()?;
        let a = snap(&p, is)?;
        std::thread::sleep(Duration::from_secs(2));
        let b = snap(&p, is)?;
        Ok((window(&a, &b), p.preemptions()? - p0))
    })?;
    let (w, pre) = sat;
    ctx.note(format!(
        "saturating: busy {:.0} ms, switches {}, slices {:?}, preemptions {pre}",
        w.parent_busy / 1e6,
        w.switches,
        w.slices
    ));
    ensure_eq!(pre, 0, "preemptions between two saturating tenants");
    let per_slice = w.parent_busy / SLICE_NS as f64 + 2.0;
    ensure!(
        (w.switches as f64) <= per_slice,
        "{} switches in {:.0} ms of engine time between two saturating tenants (slice 1 ms)",
        w.switches,
        w.parent_busy / 1e6
    );

    let mut gpus = gpus;
    let gemm = Gemm::square(DATA, gemm_dim_for(ns, Duration::from_micros(150)));
    let insts: Vec<_> = gpus.iter().map(|g| g.inst.clone()).collect();
    let flag = 32 * MIB;
    let b = gpus.pop().ok_or_else(|| Fail("fleet".into()))?;
    let a = gpus.pop().ok_or_else(|| Fail("fleet".into()))?;
    let ta = Bursty::start(a, gemm, 2, flag);
    let tb = Bursty::start(b, gemm, 2, flag);
    std::thread::sleep(Duration::from_millis(300));
    let p0 = p.preemptions()?;
    let a = snap(&p, &insts)?;
    std::thread::sleep(Duration::from_secs(2));
    let b = snap(&p, &insts)?;
    let pre = p.preemptions()? - p0;
    let (ba, bb) = (ta.stop()?, tb.stop()?);
    let w = window(&a, &b);
    let busy = w.parent_busy;
    ctx.note(format!(
        "waking: batches {ba} + {bb}; busy {:.0} ms, switches {}, slices {:?}, preemptions {pre}, shares {}",
        busy / 1e6,
        w.switches,
        w.slices,
        pcts(&w.shares())
    ));
    ensure!(ba > 0 && bb > 0, "a tenant made no progress ({ba}, {bb})");
    // busy_ns lags by at most a slice: one more granularity's worth each side
    let bound = (busy + 2.0 * SLICE_NS as f64) / GRAN_NS as f64;
    ensure!(
        (pre as f64) <= bound,
        "{pre} preemptions in {:.0} ms of engine time: more than one per granularity ({} us)",
        busy / 1e6,
        GRAN_NS / 1000
    );
    // (No share check here: a tenant that idles between batches is not owed an equal
    // share; preempt_weights checks shares with preemption on.)
    Ok(())
}

// ---- weights ------------------------------------------------------------------------

/// Saturating tenants of weights 1 and 3 keep their 25/75 split while a light
/// tenant's doorbells preempt them all the time.
fn preempt_weights(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut v = new_gpu(ctx, &p)?;
    let _pin = pin()?;
    let (gpus, ns) = fleet(ctx, &p, &[1, 3])?;
    // Preemption on, then off, over the same saturation (for comparison).
    let (ws, _) = with_saturated(gpus, ns, |is| {
        let mut ws = Vec::new();
        for on in ["1", "0"] {
            p.set_preempt(on).ctx("preempt")?;
            std::thread::sleep(Duration::from_millis(300));
            let a = snap(&p, is)?;
            let v0 = v.inst.preemptions()?;
            victim_latency(&mut v, 200, Duration::from_millis(5), V_SCRATCH, V_FLAG)?;
            let b = snap(&p, is)?;
            ws.push((window(&a, &b), v.inst.preemptions()? - v0));
        }
        Ok(ws)
    })?;
    for ((w, vp), on) in ws.iter().zip([1, 0]) {
        ctx.note(format!(
            "preempt={on}: {vp} preemptions by the light tenant over {:.0} ms; shares {}, slices {:?}",
            w.wall_ns / 1e6,
            pcts(&w.shares()),
            w.slices
        ));
    }
    let (w, vp) = &ws[0];
    ensure!(
        *vp >= 100,
        "the light tenant preempted only {vp} times in 200 jobs"
    );
    expect_shares(
        ctx,
        &w.shares(),
        &[25.0, 75.0],
        SHARE_TOL,
        "weights 1:3 with preemption",
    )
}
