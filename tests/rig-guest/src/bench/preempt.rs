//! Benchmark sections for wake-up preemption (issue 10, docs/scheduler.md): a victim's
//! latency with preemption on and off, frame times of an interactive tenant next to
//! saturating ones, the throughput cost, and the cost of the pick (and the share error)
//! as the number of instances grows.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use vgpu_sysfs::handle::Instance;
use vgpu_sysfs::io::{read_u64, write_attr};
use vgpu_sysfs::LatencyHist;
use vgpu_vfio::Cmd;

use super::{max_err, pctl, victim_latencies, with_load, Bench, DATA, WEIGHTS};
use crate::harness::{Context, Fail};
use crate::util::{set_mode, Mode};
use crate::workload::*;

const PARAMS: &str = "/sys/module/vgpu_shim/parameters";

fn in_slices(h: &LatencyHist, p: f64, slice_ns: f64) -> (f64, f64) {
    h.quantile_ns(p).map_or((f64::NAN, f64::NAN), |ns| {
        (ns as f64 / slice_ns, ns as f64 / 1e3)
    })
}

/// 3b. The victim of section 3 next to the saturating neighbour, preemption on and off.
pub(super) fn latency(b: &mut Bench, out: &mut String) -> Result<(), Fail> {
    let slice_ns = b.p.slice_us().ctx("slice_us")? as f64 * 1e3;
    let samples = if b.quick { 60 } else { 300 };
    let _ = writeln!(
        out,
        "\n3b. Wake-up preemption: the victim of section 3 next to the saturating neighbour,\n    vgpu/preempt 1 vs 0 (slice_us {:.0}); latency_hist quantiles in slices (and us)",
        slice_ns / 1e3
    );
    for on in ["1", "0"] {
        b.p.set_preempt(on).ctx("preempt")?;
        let p0 = b.p.preemptions().ctx("preemptions")?;
        let h = victim_latencies(b, true, samples)?;
        let pre = b.p.preemptions()? - p0;
        let q: Vec<(f64, f64)> = [0.5, 0.99, 1.0]
            .iter()
            .map(|p| in_slices(&h, *p, slice_ns))
            .collect();
        let _ = writeln!(
            out,
            "    preempt {on}: p50 {:.3} ({:.0} us)  p99 {:.3} ({:.0} us)  max {:.3} ({:.0} us)   preemptions {pre}{}",
            q[0].0,
            q[0].1,
            q[1].0,
            q[1].1,
            q[2].0,
            q[2].1,
            if on == "1" { "   (target p99 <= 0.1 slice)" } else { "" }
        );
        let key = |k: &str| format!("victim {k} preempt={on}");
        b.row("preempt", &key("p50"), q[0].0, "slices", "", true);
        let ok = on == "0" || q[1].0 <= 0.1;
        let tgt = if on == "1" { "<=0.1" } else { "" };
        b.row("preempt", &key("p99"), q[1].0, "slices", tgt, ok);
        b.row("preempt", &key("max"), q[2].0, "slices", "", true);
    }
    b.p.set_preempt("1").ctx("preempt")?;
    Ok(())
}

/// One interactive tenant's frames next to `k` saturating ones: a `w`x`h` BLIT (onto a
/// 1280x720x32 scanout) and a
/// small GEMM, one doorbell every 16.7 ms; the kernel's latency of each frame.
/// Returns the histogram and the frame's mean engine time (ms).
fn frames(
    b: &Bench,
    k: usize,
    frames: u32,
    (w, h): (u64, u64),
) -> Result<(LatencyHist, f64), Fail> {
    let period = Duration::from_micros(16_667);
    let mut gpus = b.make_ring(1 + k, &[1], 16 * KIB)?;
    let mut v = gpus.remove(0);
    // the ring is at 0 (make_ring): the scanout goes above it
    let (scan, src, flag) = (16 * MIB, 24 * MIB, 40 * MIB);
    let m = mode_720p_at(scan);
    let r = (|| {
        set_mode(v.dev(), &m)?;
        let g = Gemm::square(32 * MIB, 24);
        let frame = |v: &mut Gpu| -> Result<u64, Fail> {
            let (f, seq) = v.eng.next_fence(false, Some(flag));
            let cmds = [
                Cmd::Blit {
                    src,
                    src_stride: m.stride(),
                    width: w,
                    height: h,
                    dst_x: 0,
                    dst_y: 0,
                },
                g.cmd(),
                f,
            ];
            v.eng.submit(&cmds).ctx("frame submit")?;
            Ok(seq)
        };
        let wait = |v: &Gpu, seq: u64| -> Result<(), Fail> {
            let t = Instant::now();
            while v.vram().read_u64(flag).ctx("flag")? != seq {
                v.eng.check().ctx("frame ring")?;
                if t.elapsed() > Duration::from_secs(30) {
                    return Err(Fail("a frame did not complete in 30 s".into()));
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            Ok(())
        };
        // one frame alone: pages allocated
        let seq = frame(&mut v)?;
        wait(&v, seq)?;
        let run = |_: &[Instance]| -> Result<(LatencyHist, f64), Fail> {
            std::thread::sleep(Duration::from_millis(300));
            v.inst.clear_latency_hist().ctx("clear latency_hist")?;
            let busy0 = v.inst.busy_ns().ctx("busy_ns")?;
            let start = Instant::now();
            for i in 0..frames {
                let at = start + period * i;
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                let seq = frame(&mut v)?;
                wait(&v, seq)?;
            }
            let busy = v.inst.busy_ns().ctx("busy_ns")? - busy0;
            let h = v.inst.latency_hist().ctx("latency_hist")?;
            Ok((h, busy as f64 / 1e6 / f64::from(frames.max(1))))
        };
        with_load(b, gpus, run)
    })();
    let _ = v.eng.reset();
    drop(v);
    b.remove_all()?;
    r
}

/// A 1280x720 XRGB8888 mode whose scanout starts at VRAM offset `scan` (a whole number
/// of rows).
fn mode_720p_at(scan: u64) -> Mode {
    let m = Mode {
        xres: 1280,
        yres: 720,
        bpp: 32,
        virt_width: 0,
        x_off: 0,
        y_off: 0,
    };
    Mode {
        y_off: (scan / m.stride()) as u16,
        ..m
    }
}

/// Where a frame's engine time goes: each part alone on one instance, 5 runs timed by its
/// `busy_ns` (after a first run that allocates the pages); a BLIT against a COPY and a FILL of
/// as many bytes (per byte, and in guest instructions per byte at the icount clock's 4 ns).
fn frame_parts(b: &mut Bench, out: &mut String) -> Result<(), Fail> {
    let mut gpus = b.make_ring(1, &[1], 16 * KIB)?;
    let mut v = gpus.remove(0);
    let (scan, src, dst) = (16 * MIB, 24 * MIB, 48 * MIB);
    let m = mode_720p_at(scan);
    let blit = |w: u64, h: u64| Cmd::Blit {
        src,
        src_stride: m.stride(),
        width: w,
        height: h,
        dst_x: 0,
        dst_y: 0,
    };
    let full = m.stride() * 720;
    let copy = |src: u64| Cmd::Copy {
        dst,
        src,
        len: full,
    };
    let fill = |dst: u64| Cmd::Fill {
        dst,
        len: full,
        value: 7,
    };
    // The source is not written first (as in the frames below: pages never written read
    // as zeros), then written by "FILL source" and read again.
    let parts: [(&str, Cmd, u64); 10] = [
        ("BLIT 1280x720x32", blit(1280, 720), full),
        ("BLIT 320x180x32", blit(320, 180), 320 * 4 * 180),
        ("BLIT 1280x1 x720", blit(1280, 1), full),
        ("COPY 3600 KiB", copy(src), full),
        // src and dst 1 byte apart in their pages: the kernel's memmove takes its
        // 32-bytes-a-loop path instead of `rep movsq` (arch/x86/lib/memmove_64.S)
        ("COPY 3600 KiB +1", copy(src + 1), full),
        ("FILL 3600 KiB", fill(dst), full),
        ("FILL source", fill(src), full),
        ("BLIT 1280x720 src'", blit(1280, 720), full),
        ("COPY 3600 KiB src'", copy(src), full),
        ("GEMM 24^3", Gemm::square(32 * MIB, 24).cmd(), 0),
    ];
    let _ = writeln!(
        out,
        "    The frame's parts alone (busy_ns over 5 runs; instructions at 4 ns each):"
    );
    let r = (|| {
        set_mode(v.dev(), &m)?;
        for (name, c, bytes) in parts {
            // "BLIT 1280x1 x720": 720 one-row BLITs, the same bytes in 720 commands
            let cmds = if name.ends_with("x720") {
                vec![c; 720]
            } else {
                vec![c]
            };
            v.run(&cmds)?;
            std::thread::sleep(Duration::from_millis(20));
            let b0 = v.inst.busy_ns().ctx("busy_ns")?;
            for _ in 0..5 {
                v.run(&cmds)?;
            }
            std::thread::sleep(Duration::from_millis(20));
            let ns = (v.inst.busy_ns().ctx("busy_ns")? - b0) as f64 / 5.0;
            let per = if bytes > 0 {
                format!(
                    "; {:.2} ns per byte ({:.2} instructions)",
                    ns / bytes as f64,
                    ns / bytes as f64 / 4.0
                )
            } else {
                String::new()
            };
            let _ = writeln!(out, "      {name:<18} {:>7.3} ms{per}", ns / 1e6);
            b.row("frames", &format!("{name} alone"), ns / 1e6, "ms", "", true);
        }
        Ok(())
    })();
    let _ = v.eng.reset();
    drop(v);
    b.remove_all()?;
    r
}

/// 3c. Frame time.
pub(super) fn frame_time(b: &mut Bench, out: &mut String) -> Result<(), Fail> {
    let n = if b.quick { 30 } else { 120 };
    let _ = writeln!(
        out,
        "\n3c. Frame time: an interactive tenant submits a frame (BLIT + GEMM 24^3 + FENCE, one doorbell)\n    every 16.7 ms next to k tenants saturating with GEMMs, equal weights, {n} frames; on time =\n    completed within 16.7 ms of the doorbell (latency_hist, whole buckets). A 1280x720x32 BLIT\n    costs the emulated engine more than a frame period by itself (k=0), so also a frame scaled\n    to its speed: a 320x180 BLIT. The yardstick independent of the clock: p99 in units of the\n    frame's own cost alone (k=0); at equal weights, sharing the engine with k neighbours while it\n    runs, a frame needs about k+1 times that (no credit for idling), plus what it waits to start."
    );
    frame_parts(b, out)?;
    // (BLIT size, k values, preempt modes)
    type Plan = (
        &'static str,
        (u64, u64),
        &'static [usize],
        &'static [&'static str],
    );
    let plans: &[Plan] = if b.quick {
        &[("320x180", (320, 180), &[0, 1], &["1"])]
    } else {
        &[
            ("1280x720", (1280, 720), &[0, 1, 3, 7], &["1", "0"]),
            ("320x180", (320, 180), &[0, 1, 3, 7], &["1", "0"]),
        ]
    };
    for (name, size, ks, modes) in plans {
        // the frame's engine time alone (k = 0 comes first): the yardstick
        let mut alone = f64::NAN;
        for &k in *ks {
            let modes: &[&str] = if k == 0 { &["1"] } else { modes };
            for on in modes {
                b.p.set_preempt(on).ctx("preempt")?;
                let (h, cost) = frames(b, k, n, *size)?;
                let on_time = h
                    .buckets
                    .iter()
                    .filter(|(ub, _)| *ub <= 16_667_000)
                    .map(|x| x.1)
                    .sum::<u64>();
                let pct = 100.0 * on_time as f64 / h.total().max(1) as f64;
                let q = |p| h.quantile_ns(p).map_or(f64::NAN, |x| x as f64 / 1e6);
                let target = k == 7 && *on == "1";
                if k == 0 {
                    alone = cost;
                }
                let _ = writeln!(
                    out,
                    "    {name} k={k} preempt {on}: on time {pct:.1}%  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (frame: {cost:.2} ms of engine time; p99 = {:.2} x alone, k+1 = {}){}",
                    q(0.5),
                    q(0.99),
                    q(1.0),
                    q(0.99) / alone,
                    k + 1,
                    if target { "   (target >= 99.9% on time)" } else { "" }
                );
                let tgt = if target { ">=99.9" } else { "" };
                let ok = !target || pct >= 99.9;
                let key = format!("{name} k={k} preempt={on}");
                b.row("frames", &format!("{key} on time"), pct, "%", tgt, ok);
                b.row("frames", &format!("{key} p99"), q(0.99), "ms", "", true);
                b.row(
                    "frames",
                    &format!("{key} p99 in frames alone"),
                    q(0.99) / alone,
                    "x",
                    "",
                    true,
                );
            }
        }
    }
    b.p.set_preempt("1").ctx("preempt")?;
    Ok(())
}

/// 3d. The throughput cost: 4 saturating tenants' GEMM throughput while a light tenant
/// submits FILL 4 KiB every 2 ms, preemption on vs off, interleaved rounds.
pub(super) fn cost(b: &mut Bench, out: &mut String) -> Result<(), Fail> {
    let rounds = if b.quick { 1 } else { 4 };
    let mut gpus = b.make_ring(5, &[1], 16 * KIB)?;
    let mut v = gpus.remove(0);
    let p = b.p.clone();
    let r = with_load(b, gpus, |is| {
        let mut v_on = Vec::new();
        let mut v_off = Vec::new();
        for _ in 0..rounds {
            for on in ["1", "0"] {
                p.set_preempt(on).ctx("preempt")?;
                std::thread::sleep(Duration::from_millis(200));
                let a = snap(&p, is)?;
                let p0 = p.preemptions()?;
                victim_latency(&mut v, 200, Duration::from_millis(2), DATA, 2 * MIB)?;
                let z = snap(&p, is)?;
                let w = window(&a, &z);
                let rate = w.parent_macs as f64 / (w.wall_ns / 1e9);
                let x = (
                    rate,
                    w.switches as f64 / (w.wall_ns / 1e9),
                    p.preemptions()? - p0,
                );
                if on == "1" {
                    v_on.push(x);
                } else {
                    v_off.push(x);
                }
            }
        }
        Ok((v_on, v_off))
    });
    let _ = v.eng.reset();
    drop(v);
    b.remove_all()?;
    b.p.set_preempt("1").ctx("preempt")?;
    let (on, off) = r?;
    let mut ratios: Vec<f64> = on
        .iter()
        .zip(&off)
        .map(|(a, c)| 100.0 * a.0 / c.0)
        .collect();
    let r = pctl(&mut ratios, 0.5);
    let sw = |v: &[(f64, f64, u64)]| v.iter().map(|x| x.1).sum::<f64>() / v.len().max(1) as f64;
    let pre: u64 = on.iter().map(|x| x.2).sum();
    let _ = writeln!(
        out,
        "\n3d. Cost: 4 tenants saturating with GEMMs, a light one submitting FILL 4 KiB every 2 ms;\n    GEMM throughput (parent macs per second) with preemption on vs off, {rounds} interleaved rounds\n    median ratio {r:.2}%   (target >= 99.5%); switches/s {:.0} on vs {:.0} off; {pre} preemptions",
        sw(&on),
        sw(&off)
    );
    b.row(
        "preempt",
        "4 saturators throughput on/off",
        r,
        "%",
        ">=99.5",
        r >= 99.5,
    );
    Ok(())
}

/// Section 5b: the pick's cost, and the share error, against the number of instances: N tenants
/// saturating with GEMMs (weights cycling), slice_us 100 (the most picks); ns per pick
/// from the test hook test_pick_stats (the rig's build times every pick), under the
/// icount clock.
pub(super) fn pick_cost(b: &mut Bench, out: &mut String) -> Result<(), Fail> {
    let ns: &[usize] = if b.quick {
        &[1, 4, 16]
    } else {
        &[1, 2, 4, 8, 16, 32, 64]
    };
    let _ = writeln!(
        out,
        "\n5b. The pick vs N: N tenants saturating with GEMMs, weights cycling {WEIGHTS:?}, slice_us 100;\n    ns per pick (test hook test_pick_stats), slices/s, and best_effort's share error\n    {:>4} {:>10} {:>10} {:>10}",
        "N", "ns/pick", "picks/s", "share err"
    );
    let hook = format!("{PARAMS}/test_pick_stats");
    if write_attr(Path::new(&hook), "1").is_err() {
        let _ = writeln!(
            out,
            "    (no test_pick_stats: a module built without VGPU_TEST_HOOKS)"
        );
        return Ok(());
    }
    b.p.set_slice_us("100").ctx("slice_us")?;
    let r = (|| {
        for &n in ns {
            let gpus = b.make(n, &WEIGHTS)?;
            let weights: Vec<u64> = (0..n).map(|i| WEIGHTS[i % 4]).collect();
            let sw: u64 = weights.iter().sum();
            let want: Vec<f64> = weights
                .iter()
                .map(|x| 100.0 * *x as f64 / sw as f64)
                .collect();
            let (settle, win) = (b.settle(), b.window());
            let p = b.p.clone();
            let (w, dns, dpicks) = with_load(b, gpus, |is| {
                std::thread::sleep(settle);
                let ns0 =
                    read_u64(Path::new(&format!("{PARAMS}/test_pick_ns"))).ctx("test_pick_ns")?;
                let k0 = read_u64(Path::new(&format!("{PARAMS}/test_picks"))).ctx("test_picks")?;
                let w = measure(&p, is, Duration::ZERO, win)?;
                let ns1 =
                    read_u64(Path::new(&format!("{PARAMS}/test_pick_ns"))).ctx("test_pick_ns")?;
                let k1 = read_u64(Path::new(&format!("{PARAMS}/test_picks"))).ctx("test_picks")?;
                Ok((w, ns1 - ns0, k1 - k0))
            })?;
            b.remove_all()?;
            let per = dns as f64 / dpicks.max(1) as f64;
            let err = max_err(&w.shares(), &want);
            let _ = writeln!(
                out,
                "    {n:>4} {per:>10.0} {:>10.0} {err:>7.2} pp",
                dpicks as f64 / (w.wall_ns / 1e9)
            );
            b.row("pick", &format!("N={n} ns per pick"), per, "ns", "", true);
            b.row(
                "pick",
                &format!("N={n} share error"),
                err,
                "pp",
                "<=0.25",
                err <= 0.25,
            );
        }
        Ok(())
    })();
    let _ = write_attr(Path::new(&hook), "0");
    b.reset_knobs()?;
    r
}
