//! What the engine reports: GEMM work (macs) and submission latency (latency_hist).

use super::*;

// ---- GEMM work (macs) ---------------------------------------------------------------

fn gemm_at(a: u64, b: u64, c: u64, (m, n, k): (u64, u64, u64)) -> Cmd {
    Cmd::Gemm { a, b, c, m, n, k }
}

/// A d×d×d GEMM with C on top of A (the serial path) at DATA, from random A and B,
/// checked against the row-major in-place reference.
pub(super) fn gemm_c_is_a(g: &mut Gpu, rng: &mut Rng, d: u64) -> TestResult {
    let (a, b) = (rng.words((d * d) as usize), rng.words((d * d) as usize));
    g.write_words(DATA, &a)?;
    g.write_words(DATA + d * d * 4, &b)?;
    g.run(&[gemm_at(DATA, DATA + d * d * 4, DATA, (d, d, d))])?;
    let mut mem: Vec<u32> = a.iter().chain(&b).copied().collect();
    let (n, du) = ((d * d) as usize, d as usize);
    gemm_in_place(&mut mem, 0, n, 0, du, du, du)
        .ok_or_else(|| Fail("test bug: gemm_in_place".into()))?;
    ensure!(
        g.read_words(DATA, n)? == mem[..n],
        "GEMM with C == A differs from the row-major in-place reference (not the serial path?)"
    );
    Ok(())
}

fn macs_of(cmds: &[Cmd]) -> u64 {
    cmds.iter()
        .map(|c| match *c {
            Cmd::Gemm { m, n, k, .. } => m * n * k,
            _ => 0,
        })
        .sum()
}

pub(super) fn macs(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    quiet_watchdog(&p)?;
    ensure_attr(p.macs(), 0, "parent macs after loading")?;
    let mut a = new_gpu(ctx, &p)?;
    let mut b = new_gpu(ctx, &p)?;
    ensure_attr(a.inst.macs(), 0, "macs of a new instance")?;
    // C apart from A and B (the blocked path); one C row wider than a 1024-column
    // block, and the same GEMM twice.
    let (ao, bo, co) = (DATA, DATA + MIB, DATA + 2 * MIB);
    let apart: Vec<Cmd> = [
        (1, 1, 1),
        (3, 5, 7),
        (33, 17, 9),
        (2, 1100, 3),
        (32, 32, 32),
        (32, 32, 32),
    ]
    .into_iter()
    .map(|s| gemm_at(ao, bo, co, s))
    .collect();
    let mut want_a = macs_of(&apart);
    a.run(&apart)?;
    ensure_attr(a.inst.macs(), want_a, "macs after GEMMs with C apart")?;
    // C overlapping A or B (the serial path). C == A first, checked against the
    // row-major in-place reference so the serial path is known to have run.
    let mut rng = Rng::new(41);
    let d = 12u64;
    gemm_c_is_a(&mut a, &mut rng, d)?;
    want_a += d * d * d;
    ensure_attr(a.inst.macs(), want_a, "macs after a GEMM with C == A")?;
    // C on the last word of B; C a little past the start of A.
    let (m, n, k) = (4u64, 6u64, 5u64);
    let lb = k * n * 4;
    let serial = [
        gemm_at(ao, bo, bo + lb - 4, (m, n, k)),
        gemm_at(ao, bo, ao + 8, (5, 3, 4)),
    ];
    want_a += macs_of(&serial);
    a.run(&serial)?;
    ensure_attr(a.inst.macs(), want_a, "macs after GEMMs with C overlapping")?;
    // No other command adds any.
    a.run(&[
        Cmd::Fill {
            dst: DATA,
            len: 64 * KIB,
            value: 3,
        },
        Cmd::Copy {
            dst: DATA + 2 * MIB,
            src: DATA,
            len: 64 * KIB,
        },
        Cmd::Checksum {
            src: DATA,
            len: 4096,
            dst: DATA + 4 * MIB,
        },
        Cmd::Nop,
        Cmd::Nop,
    ])?;
    ensure_attr(
        a.inst.macs(),
        want_a,
        "macs after FILL/COPY/CHECKSUM/NOP/FENCE",
    )?;
    // Nor a GEMM the engine rejects.
    let vs = a.vram_size;
    for (what, bad) in [
        ("m = 0", gemm_at(ao, bo, co, (0, 8, 8))),
        ("A past VRAM", gemm_at(vs - 32, bo, co, (4, 4, 4))),
        ("C misaligned", gemm_at(ao, bo, co + 2, (4, 4, 4))),
    ] {
        a.eng.submit(&[bad]).ctx(what)?;
        a.eng
            .wait_stopped(Duration::from_secs(10))
            .ctx(format!("{what}: ring never stopped"))?;
        ensure_attr(
            a.inst.macs(),
            want_a,
            &format!("macs after a rejected GEMM ({what})"),
        )?;
        a.eng.recover().ctx(format!("{what}: recover"))?;
    }
    // Two instances at once: the parent's count is the sum of theirs.
    let sq = Gemm::square(DATA, 32);
    let odd = gemm_at(DATA + 4 * MIB, DATA + 5 * MIB, DATA + 6 * MIB, (20, 40, 24));
    let wa = [sq.cmd(); 4];
    let wb = [odd, sq.cmd(), odd];
    let sa = a.eng.submit_fenced(&wa, false)?;
    let sb = b.eng.submit_fenced(&wb, false)?;
    a.eng.wait_fence(sa, FENCE_TIMEOUT)?;
    b.eng.wait_fence(sb, FENCE_TIMEOUT)?;
    want_a += macs_of(&wa);
    let want_b = macs_of(&wb);
    ensure_attr(a.inst.macs(), want_a, "macs of A")?;
    ensure_attr(b.inst.macs(), want_b, "macs of B")?;
    ensure_attr(p.macs(), want_a + want_b, "parent macs (A + B)")?;
    // Resets keep it.
    a.eng.reset()?;
    ensure_attr(a.inst.macs(), want_a, "macs after ENGINE_RESET")?;
    a.eng.setup(RING, RING_SIZE)?;
    a.dev().reset().ctx("VFIO_DEVICE_RESET")?;
    ensure_attr(a.inst.macs(), want_a, "macs after VFIO reset")?;
    a.eng.setup(RING, RING_SIZE)?;
    a.run(&[sq.cmd()])?;
    want_a += sq.macs();
    ensure_attr(a.inst.macs(), want_a, "macs after resets and one more GEMM")?;
    // Counted as the work is done: seen part-way while a long GEMM runs, and a reset in
    // the middle leaves what was done. (The reset waits for the engine's lock, so on a
    // stalled host the GEMM may complete first: then try again.)
    let big = long_gemm(&mut a, Duration::from_millis(800))?;
    let total = big.macs();
    let mut caught = false;
    for attempt in 1..=3 {
        let (m0, p0, jobs0) = (a.inst.macs()?, p.macs()?, a.inst.jobs()?);
        ensure_eq!(p0, m0 + want_b, "parent macs before long GEMM {attempt}");
        a.eng.submit_fenced(&[big.cmd()], false)?;
        ensure!(
            wait_for(Duration::from_secs(10), || a
                .inst
                .macs()
                .is_ok_and(|x| x > m0)),
            "macs did not grow while a GEMM of {total} MACs ran"
        );
        let seen = a.inst.macs()? - m0;
        let t = Instant::now();
        a.eng.reset()?;
        let reset_took = t.elapsed();
        let done = a.inst.macs()? - m0;
        let completed = a.inst.jobs()? > jobs0;
        ensure!(
            seen <= done && done <= total,
            "macs grew by {seen} (running) then {done} (reset) for a GEMM of {total} MACs"
        );
        if completed {
            ensure_eq!(done, total, "macs of a GEMM that completed");
        } else {
            ensure!(
                done < total,
                "macs grew by the whole GEMM ({total}) though it was reset before completing"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        ensure_attr(
            a.inst.macs(),
            m0 + done,
            "macs after the reset GEMM (still running?)",
        )?;
        ensure_attr(p.macs(), p0 + done, "parent macs after the reset GEMM")?;
        want_a = m0 + done;
        a.eng.setup(RING, RING_SIZE)?;
        if seen < total && !completed {
            ctx.note(format!(
                "a {}^3 GEMM: {:.1}% of its MACs seen while it ran, {:.1}% done at the reset \
                 (the ENGINE_RESET write took {reset_took:?})",
                big.m,
                100.0 * seen as f64 / total as f64,
                100.0 * done as f64 / total as f64
            ));
            caught = true;
            break;
        }
        ctx.note(format!(
            "attempt {attempt}: the {}^3 GEMM completed before the reset",
            big.m
        ));
    }
    ensure!(
        caught,
        "a long GEMM was never caught part-way in 3 attempts"
    );
    // Read-only, at both levels; a write changes nothing.
    for (what, path) in [
        ("instance macs", a.inst.vgpu_attr("macs")),
        ("parent macs", p.vgpu_attr("macs")),
    ] {
        for v in ["0", "5"] {
            ctx.soft(expect_errno(
                vgpu_sysfs::io::write_value(&path, v),
                &[libc::EACCES, libc::EPERM, libc::EIO, libc::EINVAL],
                &format!("{what} <- {v:?}"),
            ));
        }
    }
    ensure_attr(a.inst.macs(), want_a, "macs after writes to it")?;
    ensure_attr(p.macs(), want_a + want_b, "parent macs after writes to it")?;
    // A removed instance's work stays in the parent's count; a new one starts at 0.
    let b_inst = b.inst.clone();
    drop(b);
    ctx.remove(&b_inst)?;
    ensure_attr(
        p.macs(),
        want_a + want_b,
        "parent macs after removing an instance",
    )?;
    let c = ctx.create(&p, T128)?;
    ensure_attr(c.macs(), 0, "macs of an instance created after")?;
    ensure_attr(p.macs(), want_a + want_b, "parent macs at the end")?;
    Ok(())
}

// ---- submission latency (latency_hist) ----------------------------------------------

/// The lower end of the latency_hist bucket whose upper bound is `ub`, or None if no
/// bucket has that upper bound (exact below 32 ns, then 16 per power of two, bounds
/// `((17 + sub) << s) - 1`, the last one 2^36 - 1).
fn lat_bucket_lower(ub: u64) -> Option<u64> {
    if ub < 16 {
        return Some(ub);
    }
    if ub >= 1 << 36 {
        return None;
    }
    let top = ub + 1;
    (0..36).find_map(|sh| {
        let q = top >> sh;
        ((17..=32).contains(&q) && q << sh == top).then_some((q - 1) << sh)
    })
}

fn show_hist(h: &LatencyHist) -> String {
    let mut s: Vec<String> = h
        .buckets
        .iter()
        .map(|(ub, c)| format!("{ub}:{c}"))
        .collect();
    if h.more != 0 {
        s.push(format!("more:{}", h.more));
    }
    format!("[{}]", s.join(" "))
}

/// Submit `cmds` and a FENCE with one doorbell and wait for the fence (polling).
/// Returns the time just before the submit and a lower bound of the kernel's sample:
/// from the doorbell's return to the last moment the fence was seen pending.
fn timed_batch(g: &mut Gpu, cmds: &[Cmd]) -> Result<(Instant, Duration), Fail> {
    let (f, seq) = g.eng.next_fence(false, None);
    let mut v = cmds.to_vec();
    v.push(f);
    ensure!(
        (v.len() as u64) < RING_SIZE / 64,
        "test bug: a batch of {} needs more than one doorbell",
        v.len()
    );
    let t_pre = Instant::now();
    g.eng.submit(&v).ctx("submit")?;
    let rung = Instant::now();
    let mut pending = rung;
    loop {
        let t = Instant::now();
        if g.eng.fence_value()? >= seq {
            break;
        }
        pending = t;
        g.eng.check().ctx(format!("waiting for fence {seq}"))?;
        ensure!(
            rung.elapsed() < FENCE_TIMEOUT,
            "fence {seq} not reached within {FENCE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok((t_pre, pending.saturating_duration_since(rung)))
}

/// Poll latency_hist until it holds `want` samples (a sample is recorded at the end of
/// the chunk that completed the batch, just after its fence became visible); fail if
/// it holds more, or fewer after 2 s. Returns it and when it was read.
fn hist_at(inst: &Instance, want: u64, what: &str) -> Result<(LatencyHist, Instant), Fail> {
    let start = Instant::now();
    loop {
        let h = inst.latency_hist().ctx("read latency_hist")?;
        let t = Instant::now();
        if h.total() >= want || start.elapsed() > Duration::from_secs(2) {
            ensure!(
                h.total() == want,
                "{what}: latency_hist holds {} samples, want {want}: {}",
                h.total(),
                show_hist(&h)
            );
            return Ok((h, t));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// latency_hist still holds `want` samples after a while.
fn hist_stays(inst: &Instance, want: u64, what: &str) -> Result<LatencyHist, Fail> {
    std::thread::sleep(Duration::from_millis(50));
    let h = inst.latency_hist().ctx("read latency_hist")?;
    ensure!(
        h.total() == want,
        "{what}: latency_hist holds {} samples, want {want}: {}",
        h.total(),
        show_hist(&h)
    );
    Ok(h)
}

/// `after` is `before` plus one sample, in a bucket that can hold a latency between
/// `lo` and `hi`.
fn check_sample(
    before: &LatencyHist,
    after: &LatencyHist,
    lo: Duration,
    hi: Duration,
    what: &str,
) -> TestResult {
    let d = after.since(before);
    ensure!(
        d.more == 0 && d.buckets.len() == 1 && d.buckets[0].1 == 1,
        "{what}: new samples {} (before {}, after {})",
        show_hist(&d),
        show_hist(before),
        show_hist(after)
    );
    let ub = d.buckets[0].0;
    let lower = lat_bucket_lower(ub)
        .ok_or_else(|| Fail(format!("{what}: {ub} is not a bucket upper bound")))?;
    ensure!(
        u128::from(ub) >= lo.as_nanos() && u128::from(lower) <= hi.as_nanos(),
        "{what}: sample in bucket [{lower}, {ub}] ns, but the batch was pending for at \
         least {lo:?} and all of it took at most {hi:?}"
    );
    Ok(())
}

/// Every bound is a bucket upper bound above 0 and below `max_ns`; no `more` line.
fn check_hist_shape(h: &LatencyHist, max_ns: u64, what: &str) -> TestResult {
    ensure_eq!(h.more, 0, "{what}: samples beyond the listed buckets");
    for &(ub, c) in &h.buckets {
        ensure!(c > 0, "{what}: empty bucket {ub} listed: {}", show_hist(h));
        ensure!(
            ub > 0 && ub < max_ns,
            "{what}: bucket {ub} ns out of (0, {max_ns}): {}",
            show_hist(h)
        );
        ensure!(
            lat_bucket_lower(ub).is_some(),
            "{what}: {ub} is not a bucket upper bound: {}",
            show_hist(h)
        );
    }
    Ok(())
}

pub(super) fn latency_hist(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    // Its last part runs three GEMMs and 19 NOPs with no FENCE: not a watchdog test, so
    // the longest watchdog (in external mode a slow executor, or a loaded host under a
    // thread-executor, made them reach the default 2 s).
    p.set_watchdog_ms("60000").ctx("watchdog_ms")?;
    let mut g = new_gpu(ctx, &p)?;
    let path = g.inst.vgpu_attr("latency_hist");
    let raw = std::fs::read_to_string(&path).ctx("read latency_hist")?;
    ensure_eq!(raw.as_str(), "", "latency_hist of a new instance");
    // Doorbells with an empty ring: nothing to time.
    g.eng.write_reg(reg::DOORBELL, 1)?;
    g.eng.kick()?;
    hist_stays(&g.inst, 0, "doorbells on an empty ring")?;
    // One sample per batch, each inside what this side saw of the batch.
    let small = Gemm::square(DATA, 32);
    let mid = Gemm::square(DATA + MIB, 96);
    let batches: Vec<Vec<Cmd>> = vec![
        vec![mid.cmd()],
        vec![Cmd::Nop],
        vec![
            Cmd::Fill {
                dst: DATA + 4 * MIB,
                len: 64 * KIB,
                value: 7,
            },
            Cmd::Copy {
                dst: DATA + 5 * MIB,
                src: DATA + 4 * MIB,
                len: 64 * KIB,
            },
            Cmd::Nop,
        ],
        vec![small.cmd(), small.cmd(), Cmd::Nop],
        vec![],
        vec![Cmd::Nop, mid.cmd(), small.cmd()],
    ];
    let k = batches.len() as u64;
    let mut h = LatencyHist::default();
    let mut lo_max = Duration::ZERO;
    for (i, b) in batches.iter().enumerate() {
        let what = format!("batch {i} ({} commands)", b.len() + 1);
        let (t_pre, lo) = timed_batch(&mut g, b).fctx(&what)?;
        let (h2, seen) = hist_at(&g.inst, i as u64 + 1, &what)?;
        check_sample(&h, &h2, lo, seen.duration_since(t_pre), &what)?;
        lo_max = lo_max.max(lo);
        h = h2;
    }
    let h = hist_stays(&g.inst, k, "after the batches")?;
    check_hist_shape(&h, 10_000_000_000, "after the batches")?;
    let raw = std::fs::read_to_string(&path).ctx("read latency_hist")?;
    ensure!(
        raw.ends_with('\n') && raw.lines().count() == h.buckets.len(),
        "latency_hist text {raw:?}"
    );
    ctx.note(format!(
        "{k} batches: {}; the longest was pending ≥ {lo_max:?}",
        show_hist(&h)
    ));
    // Doorbells that add nothing: on the idle ring, and while a batch runs.
    g.eng.write_reg(reg::DOORBELL, 1)?;
    g.eng.kick()?;
    hist_stays(&g.inst, k, "doorbells with nothing new (idle)")?;
    let seq = g.eng.submit_fenced(&[mid.cmd(), mid.cmd()], false)?;
    for _ in 0..3 {
        g.eng.kick()?;
    }
    if g.eng.fence_value()? >= seq {
        ctx.note("inconclusive: the batch completed before the extra doorbells");
    }
    g.eng.wait_fence(seq, FENCE_TIMEOUT)?;
    hist_at(&g.inst, k + 1, "a batch and 3 doorbells with nothing new")?;
    hist_stays(&g.inst, k + 1, "a batch and 3 doorbells with nothing new")?;
    // Two doorbells in flight, each adding commands: two samples.
    g.eng.submit_fenced(&[mid.cmd()], false)?;
    let seq = g.eng.submit_fenced(&[Cmd::Nop], false)?;
    g.eng.wait_fence(seq, FENCE_TIMEOUT)?;
    hist_at(&g.inst, k + 3, "two batches in flight")?;
    // A doorbell while a command is in flight counts that command too: its sample
    // lasts until the commands it added are done, not just the one in flight.
    let n = k + 3;
    let h0 = g.inst.latency_hist()?;
    let jobs0 = g.inst.jobs()?;
    let at = g.eng.sw_tail();
    let two = Gemm::square(DATA + 8 * MIB, 128);
    g.eng.submit(&[two.cmd()])?;
    let t = Instant::now();
    while g.eng.read_reg(reg::RING_HEAD)? == at as u32 {
        ensure!(
            t.elapsed() < Duration::from_secs(5),
            "the GEMM at {at:#x} was never fetched"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
    g.eng.submit(&[two.cmd()])?;
    let rung = Instant::now();
    let first_in_flight = g.inst.jobs()? == jobs0;
    let mut pending = rung;
    loop {
        let t = Instant::now();
        if g.inst.jobs()? >= jobs0 + 2 {
            break;
        }
        pending = t;
        g.eng.check().ctx("two GEMMs")?;
        ensure!(
            rung.elapsed() < FENCE_TIMEOUT,
            "two GEMMs not done within {FENCE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let lo = pending.saturating_duration_since(rung);
    let (h1, _) = hist_at(&g.inst, n + 2, "a doorbell behind a GEMM in flight")?;
    let d = h1.since(&h0);
    let top = d.buckets.last().map_or(0, |b| b.0);
    if first_in_flight {
        ensure!(
            u128::from(top) >= lo.as_nanos(),
            "a doorbell behind a GEMM in flight: samples {}, but its GEMM was pending \
             for at least {lo:?} after it",
            show_hist(&d)
        );
    } else {
        ctx.note("inconclusive: the first GEMM completed before the second doorbell");
    }
    // At most 16 doorbells timed at once: a long GEMM, then 19 doorbells of one NOP
    // each while nothing completes.
    let n0 = n + 2;
    let long = Gemm::square(DATA + 8 * MIB, 192);
    let jobs0 = g.inst.jobs()?;
    g.eng.submit(&[long.cmd()])?;
    for _ in 0..19 {
        g.eng.submit(&[Cmd::Nop])?;
    }
    let jobs1 = g.inst.jobs()?;
    g.eng.wait_idle(FENCE_TIMEOUT)?;
    ok_status(&g, "after 20 doorbells")?;
    if jobs1 == jobs0 {
        hist_at(&g.inst, n0 + 16, "20 doorbells in flight at once")?;
        hist_stays(&g.inst, n0 + 16, "20 doorbells in flight at once")?;
    } else {
        // Something completed while the doorbells were rung: slots were freed.
        std::thread::sleep(Duration::from_millis(50));
        let n = g.inst.latency_hist()?.total();
        ctx.note(format!(
            "inconclusive: {} commands completed during the 20 doorbells",
            jobs1 - jobs0
        ));
        ensure!(
            (n0 + 16..=n0 + 20).contains(&n),
            "20 doorbells with {} completions in between: {} samples",
            jobs1 - jobs0,
            n - n0
        );
    }
    let h = g.inst.latency_hist()?;
    check_hist_shape(&h, 10_000_000_000, "at the end")?;
    Ok(())
}

pub(super) fn latency_hist_dropped(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    quiet_watchdog(&p)?;
    let mut g = new_gpu(ctx, &p)?;
    let long = long_gemm(&mut g, Duration::from_millis(600))?;
    g.inst.clear_latency_hist().ctx("clear latency_hist")?;
    let mut n = 0;
    // Batches after a drop are longer than the dropped one: a doorbell that was kept
    // would be recorded when they complete.
    let after = [
        Cmd::Fill {
            dst: DATA,
            len: 4096,
            value: 3,
        },
        Cmd::Nop,
        Cmd::Nop,
    ];
    let resume = |g: &mut Gpu, n: &mut u64, what: &str| -> TestResult {
        for i in 0..2 {
            timed_batch(g, &after).fctx(format!("{what}: batch {i} after"))?;
            *n += 1;
            hist_at(&g.inst, *n, &format!("{what}: batch {i} after"))?;
        }
        hist_stays(&g.inst, *n, &format!("{what}: batches after"))?;
        Ok(())
    };
    resume(&mut g, &mut n, "before")?;
    // A batch that ends in a bad command: nothing for it, nor for a doorbell on the
    // stopped ring.
    g.eng.submit(&[
        Cmd::Fill {
            dst: DATA,
            len: 4096,
            value: 1,
        },
        Cmd::Nop,
        raw(0x55, 0, [0; 7]),
    ])?;
    let (code, _, _) = g.eng.wait_stopped(Duration::from_secs(10))?;
    ensure_code(code, &[ErrorCode::BadOpcode], "bad opcode")?;
    hist_stays(&g.inst, n, "a batch ending in a bad command")?;
    g.eng.write_reg(reg::DOORBELL, 1)?;
    hist_stays(&g.inst, n, "a doorbell on the stopped ring")?;
    g.eng.recover()?;
    resume(&mut g, &mut n, "ring error")?;
    // A batch that completed is recorded even when the next one, rung right behind it
    // (often run in the same chunk), fails: only doorbells still in flight are dropped.
    for i in 0..5 {
        let (f, _) = g.eng.next_fence(false, None);
        g.eng.submit(&[Cmd::Nop, f])?;
        g.eng.submit(&[raw(0x55, 0, [0; 7])])?;
        let (code, _, _) = g.eng.wait_stopped(Duration::from_secs(10))?;
        ensure_code(code, &[ErrorCode::BadOpcode], "bad batch behind a good one")?;
        n += 1;
        hist_stays(&g.inst, n, &format!("good batch {i} before a bad one"))?;
        g.eng.recover()?;
    }
    // A reset or a disable while a batch runs drops it. (They wait for the engine's
    // lock, so on a stalled host the batch may complete first: then it counts, and the
    // case is tried again.)
    for what in ["ENGINE_RESET", "RING_CTL disable", "VFIO reset"] {
        let mut attempt = 1;
        loop {
            let jobs0 = g.inst.jobs()?;
            g.eng.submit_fenced(&[long.cmd()], false)?;
            std::thread::sleep(Duration::from_millis(30));
            match what {
                "ENGINE_RESET" => g.eng.reset()?,
                "RING_CTL disable" => g.eng.disable()?,
                _ => g.dev().reset().ctx("VFIO_DEVICE_RESET")?,
            }
            let completed = g.inst.jobs()? - jobs0 == 2;
            if completed {
                n += 1;
            }
            hist_stays(&g.inst, n, what)?;
            g.eng.setup(RING, RING_SIZE).ctx(format!("{what}: setup"))?;
            hist_stays(&g.inst, n, &format!("{what}, ring enabled again"))?;
            if !completed {
                break;
            }
            ctx.note(format!(
                "{what}, attempt {attempt}: the batch completed before it"
            ));
            ensure!(
                attempt < 3,
                "{what}: the {}^3 GEMM was never caught running in 3 attempts",
                long.m
            );
            attempt += 1;
        }
        resume(&mut g, &mut n, what)?;
    }
    let h = g.inst.latency_hist()?;
    check_hist_shape(&h, 10_000_000_000, "at the end")?;
    Ok(())
}

/// A latency histogram as [`bad_writes`] compares and shows it. It cannot be written
/// back: its text starts with `hist` and the writer below ignores such "restores".
#[derive(PartialEq, Debug)]
struct HistView(LatencyHist);

impl std::fmt::Display for HistView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hist{}", show_hist(&self.0))
    }
}

pub(super) fn latency_hist_sysfs(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    let path = g.inst.vgpu_attr("latency_hist");
    for _ in 0..3 {
        g.run(&[Cmd::Nop])?;
    }
    hist_at(&g.inst, 3, "3 batches")?;
    // Bad writes: EINVAL, and the histogram is unchanged.
    let mut bad: Vec<&str> = COMMON_BAD.to_vec();
    bad.extend([
        "1", "5", "00x", "0x0", "-0", "+0", " 0", "0 ", "\n0", "0\t", "0\n\n", "0\0", "0.0", "0,",
    ]);
    for b in bad {
        if g.inst.latency_hist()?.total() == 0 {
            g.run(&[Cmd::Nop])?;
            hist_at(&g.inst, 1, "refill")?;
        }
        let write = |s: &str| {
            if s.starts_with("hist") {
                Ok(())
            } else {
                vgpu_sysfs::io::write_value(&path, s)
            }
        };
        let read = || g.inst.latency_hist().map(HistView);
        ctx.soft(bad_writes("latency_hist", &write, &read, &[b]));
    }
    // "0" and "0\n" clear it; samples are recorded again after.
    for v in ["0", "0\n"] {
        ensure!(
            g.inst.latency_hist()?.total() > 0,
            "test bug: nothing to clear"
        );
        vgpu_sysfs::io::write_value(&path, v).ctx(format!("latency_hist <- {v:?}"))?;
        let raw = std::fs::read_to_string(&path).ctx("read latency_hist")?;
        ensure_eq!(raw.as_str(), "", "latency_hist after writing {v:?}");
        g.run(&[Cmd::Nop])?;
        hist_at(&g.inst, 1, &format!("a batch after writing {v:?}"))?;
    }
    // Clearing forgets samples, not the doorbells being timed.
    let mid = Gemm::square(DATA, 96);
    let seq = g.eng.submit_fenced(&[mid.cmd()], false)?;
    g.inst.clear_latency_hist().ctx("clear")?;
    let cleared_early = g.eng.fence_value()? < seq;
    g.eng.wait_fence(seq, FENCE_TIMEOUT)?;
    if cleared_early {
        hist_at(&g.inst, 1, "a batch in flight across a clear")?;
    } else {
        ctx.note("inconclusive: the batch completed before the clear");
    }
    // "00" is a decimal 0, as for every numeric attribute: it clears too.
    g.run(&[Cmd::Nop])?;
    ensure!(
        g.inst.latency_hist()?.total() > 0,
        "test bug: nothing to clear"
    );
    vgpu_sysfs::io::write_value(&path, "00").ctx("latency_hist <- \"00\"")?;
    ensure_eq!(
        g.inst.latency_hist()?.total(),
        0,
        "samples after writing \"00\""
    );
    Ok(())
}
