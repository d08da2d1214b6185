//! Taking the engine back: ENGINE_RESET, VFIO reset, interrupts, preemption and the
//! watchdog.

use super::*;

// ---- reset --------------------------------------------------------------------------

/// Raise `watchdog_ms` to its maximum for a test that is not about the watchdog but runs
/// long commands: the watchdog's clock is engine time, which a vCPU the host deschedules
/// stretches, and on a loaded host (debug kernel, CPU hog) a 1.5 s GEMM calibrated on a
/// quiet moment then tripped the default 2 s.
pub(super) fn quiet_watchdog(p: &Parent) -> TestResult {
    p.set_watchdog_ms("60000").ctx("watchdog_ms")
}

pub(super) fn long_gemm(g: &mut Gpu, target: Duration) -> Result<Gemm, Fail> {
    let ns = calibrate_dim(g, 16 * MIB, 128)?;
    Ok(Gemm::square(16 * MIB, gemm_dim_for(ns, target)))
}

/// Wait until the command at ring offset `at` is in flight (fetched: HEAD moved past it)
/// and has run (busy_ns grew), instead of sleeping and hoping it started.
fn wait_in_flight(g: &mut Gpu, at: u64) -> TestResult {
    let busy0 = g.inst.busy_ns()?;
    let mut head = at;
    let started = wait_for(FENCE_TIMEOUT, || {
        head = g.eng.head().unwrap_or(at);
        head != at && g.inst.busy_ns().is_ok_and(|b| b > busy0)
    });
    ensure!(
        started,
        "the command at ring offset {at:#x} never started (HEAD {head:#x})"
    );
    Ok(())
}

/// `g` used no engine time between two moments the engine was seen asleep (judged from
/// the kernel's counters: the engine's idle_ns grows only while it sleeps).
fn stays_idle(p: &Parent, g: &Gpu, what: &str) -> TestResult {
    let t = Duration::from_secs(30);
    wait_engine_asleep(p, t)?;
    let busy0 = g.inst.busy_ns()?;
    wait_engine_asleep(p, t)?;
    ensure_attr(g.inst.busy_ns(), busy0, &format!("busy_ns {what}"))
}

pub(super) fn engine_reset(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    quiet_watchdog(&p)?;
    let mut g = new_gpu(ctx, &p)?;
    g.write_words(DATA, &[0xfeed_f00d; 4])?;
    g.eng.submit(&[raw(0x55, 0, [0; 7])])?;
    g.eng.wait_stopped(Duration::from_secs(5))?;
    g.eng.reset()?;
    let r = g.eng.regs()?;
    ensure_eq!(
        (r.ctl & 1, r.status, r.error, r.head, r.tail, r.irq_status),
        (0, 0, 0, 0, 0, 0),
        "(ENABLE, STATUS, ERROR, HEAD, TAIL, IRQ_STATUS) after ENGINE_RESET"
    );
    ensure_eq!(
        g.read_words(DATA, 4)?,
        vec![0xfeed_f00d; 4],
        "VRAM kept by reset"
    );
    g.eng.setup(RING, RING_SIZE)?;
    g.run(&[Cmd::Fill {
        dst: DATA,
        len: 4,
        value: 1,
    }])?;
    ensure_eq!(g.read_words(DATA, 1)?[0], 1, "FILL after reset");
    // Reset in the middle of a long command: it stops, nothing more completes.
    let big = long_gemm(&mut g, Duration::from_millis(1500))?;
    let (f, seq) = g.eng.next_fence(false, None);
    g.eng.submit(&[big.cmd(), f])?;
    wait_in_flight(&mut g, 0)?;
    let jobs = g.inst.jobs()?;
    g.eng.reset()?;
    ensure_eq!(g.eng.status()?, 0, "STATUS after resetting a busy ring");
    // busy_ns is charged when the slice ends, just after the reset; then nothing runs.
    stays_idle(&p, &g, "after the reset (still running?)")?;
    ensure_attr(g.inst.jobs(), jobs, "jobs after the reset")?;
    ensure!(
        g.eng.fence_value()? < seq,
        "the reset GEMM's fence completed"
    );
    g.eng.setup(RING, RING_SIZE)?;
    g.run(&[Cmd::Nop])?;
    Ok(())
}

pub(super) fn vfio_reset(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    quiet_watchdog(&p)?;
    let mut g = new_gpu(ctx, &p)?;
    g.msi(reg::IRQ_ALL)?;
    g.write_words(DATA, &[0xfeed_f00d; 4])?;
    g.eng.submit(&[raw(0x55, 0, [0; 7])])?;
    g.eng.wait_stopped(Duration::from_secs(5))?;
    g.dev().reset().ctx("VFIO_DEVICE_RESET")?;
    let r = g.eng.regs()?;
    ensure_eq!(
        (
            r.ctl & 1,
            r.status,
            r.error,
            r.head,
            r.tail,
            r.irq_status,
            r.irq_mask
        ),
        (0, 0, 0, 0, 0, 0, 0),
        "(ENABLE, STATUS, ERROR, HEAD, TAIL, IRQ_STATUS, IRQ_MASK) after VFIO reset"
    );
    let msi_ctl = g
        .dev()
        .config_read_u16(u64::from(abi::MSI_CAP_OFFSET) + 2)?;
    ensure_eq!(msi_ctl & 1, 0, "MSI enable after VFIO reset");
    ensure_eq!(
        g.read_words(DATA, 4)?,
        vec![0xfeed_f00d; 4],
        "VRAM kept by VFIO reset"
    );
    g.eng.setup(RING, RING_SIZE)?;
    g.run(&[Cmd::Nop])?;
    // During a long command.
    let big = long_gemm(&mut g, Duration::from_millis(1500))?;
    let (f, seq) = g.eng.next_fence(false, None);
    g.eng.submit(&[big.cmd(), f])?;
    wait_in_flight(&mut g, 0)?;
    g.dev().reset().ctx("VFIO_DEVICE_RESET while busy")?;
    ensure_eq!(g.eng.status()?, 0, "STATUS after VFIO reset of a busy ring");
    stays_idle(&p, &g, "after the VFIO reset")?;
    ensure!(
        g.eng.fence_value()? < seq,
        "the reset GEMM's fence completed"
    );
    g.msi(reg::IRQ_FENCE)?;
    g.eng.setup(RING, RING_SIZE)?;
    let seq = g.eng.submit_fenced(&[Cmd::Nop], true)?;
    let efd = g.efd.as_ref().ok_or_else(|| Fail("no eventfd".into()))?;
    g.eng
        .wait_fence_irq(efd, seq, Duration::from_secs(10))
        .ctx("fence by MSI after VFIO reset")?;
    Ok(())
}

// ---- interrupts ---------------------------------------------------------------------

pub(super) fn irqs(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    g.msi(reg::IRQ_FENCE)?;
    let fence = |seq, irq| Cmd::Fence {
        seqno: seq,
        addr: 0,
        irq,
        write: false,
    };
    // FENCE with IRQ: MSI.
    g.eng.submit(&[fence(1, true)])?;
    g.eng.wait_fence(1, FENCE_TIMEOUT)?;
    ensure!(
        g.wait_irq(Duration::from_secs(2))?,
        "no MSI for a FENCE with IRQ"
    );
    ensure!(
        g.eng.irq_status()? & reg::IRQ_FENCE != 0,
        "IRQ_STATUS.FENCE not set"
    );
    g.eng.ack_irq(reg::IRQ_FENCE)?;
    ensure_eq!(
        g.eng.irq_status()? & reg::IRQ_FENCE,
        0,
        "IRQ_STATUS.FENCE after W1C"
    );
    // Without the flag: nothing.
    g.eng.submit(&[fence(2, false)])?;
    g.eng.wait_fence(2, FENCE_TIMEOUT)?;
    std::thread::sleep(Duration::from_millis(50));
    ensure!(!g.irq_fired(), "MSI for a FENCE without IRQ");
    ensure_eq!(
        g.eng.irq_status()?,
        0,
        "IRQ_STATUS after a FENCE without IRQ"
    );
    // Masked: the status bit, no interrupt.
    g.eng.set_irq_mask(0)?;
    g.eng.submit(&[fence(3, true)])?;
    g.eng.wait_fence(3, FENCE_TIMEOUT)?;
    std::thread::sleep(Duration::from_millis(50));
    ensure!(!g.irq_fired(), "MSI while IRQ_MASK is 0");
    ensure!(
        g.eng.irq_status()? & reg::IRQ_FENCE != 0,
        "IRQ_STATUS.FENCE while masked"
    );
    g.eng.ack_irq(reg::IRQ_ALL)?;
    // wait_fence_irq over many fences.
    g.eng.sync_seq()?;
    g.eng.set_irq_mask(reg::IRQ_FENCE)?;
    let efd = g.efd.take().ok_or_else(|| Fail("no eventfd".into()))?;
    for i in 0..20 {
        let seq = g.eng.submit_fenced(
            &[Cmd::Fill {
                dst: DATA,
                len: 4096,
                value: i,
            }],
            true,
        )?;
        g.eng
            .wait_fence_irq(&efd, seq, Duration::from_secs(10))
            .ctx(format!("fence {i} by MSI"))?;
    }
    // INTx when MSI is off.
    let cap = u64::from(abi::MSI_CAP_OFFSET);
    let ctl = g.dev().config_read_u16(cap + 2)?;
    g.dev().config_write_u16(cap + 2, ctl & !1)?;
    g.dev().disable_irq(irq::MSI)?;
    while efd.read().is_ok() {} // a late signal of the last fence above
    let intx = EventFd::new(EFD_NONBLOCK)?;
    g.dev()
        .set_irq_eventfds(irq::INTX, 0, &[std::os::fd::AsRawFd::as_raw_fd(&intx)])?;
    let cmd = g.dev().config_read_u16(0x04)?;
    g.dev().config_write_u16(0x04, cmd & !0x400)?;
    g.eng.ack_irq(reg::IRQ_ALL)?;
    g.eng.submit(&[fence(100, true)])?;
    g.eng.wait_fence(100, FENCE_TIMEOUT)?;
    ensure!(
        vgpu_vfio::engine::wait_eventfd(&intx, Duration::from_secs(2))?,
        "no INTx for a FENCE with IRQ (MSI disabled)"
    );
    ensure!(efd.read().is_err(), "MSI eventfd fired with MSI disabled");
    // INTX_DISABLE set: no INTx.
    g.eng.ack_irq(reg::IRQ_ALL)?;
    g.dev().config_write_u16(0x04, cmd | 0x400)?;
    g.eng.submit(&[fence(101, true)])?;
    g.eng.wait_fence(101, FENCE_TIMEOUT)?;
    std::thread::sleep(Duration::from_millis(50));
    ensure!(intx.read().is_err(), "INTx with INTX_DISABLE set");
    Ok(())
}

// ---- preemption and the watchdog ----------------------------------------------------

pub(super) fn preemption(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    p.set_watchdog_ms("60000").ctx("watchdog_ms")?;
    let mut a = new_gpu(ctx, &p)?;
    let mut b = new_gpu(ctx, &p)?;
    // This thread on the engine's CPU: an access that waits for the engine then waits
    // for the rest of its chunk, not for TCG to carry a wake-up across vCPUs (ms on a
    // loaded host, whatever the module does).
    let _pin = if cpu_count() >= 2 {
        Some(Pinned::engine_on(1, 1)?)
    } else {
        None
    };
    let ns = calibrate_dim(&mut a, 16 * MIB, 128)?;
    let d = gemm_dim_for(ns, Duration::from_millis(2000));
    let gm = Gemm::square(16 * MIB, d);
    let mut rng = Rng::new(9);
    let ma = rng.words((d * d) as usize);
    let mb = rng.words((d * d) as usize);
    a.write_words(gm.a, &ma)?;
    a.write_words(gm.b, &mb)?;
    ctx.note(format!(
        "{ns:.2} ns/MAC; GEMM {d}^3 ≈ {:.0} ms",
        ns * gm.macs() as f64 / 1e6
    ));
    let slices0 = a.inst.slices()?;
    let sw0 = p.switches()?;
    let busy_a0 = a.inst.busy_ns()?;
    let start = Instant::now();
    // A's fence also lands in VRAM, so its progress is seen without its registers.
    let done_at = DATA;
    a.vram().write_u64(done_at, 0)?;
    let (fa, seq_a) = a.eng.next_fence(false, Some(done_at));
    a.eng.submit(&[gm.cmd(), fa])?;
    let a_done = |a: &Gpu| a.vram().read_u64(done_at).map(|v| v == seq_a);
    ensure!(
        wait_for(Duration::from_secs(5), || a.inst.busy_ns().unwrap_or(0) > 0
            && a.eng.status().unwrap_or(0) & reg::STATUS_BUSY != 0),
        "A's GEMM did not start"
    );
    let mut lat = Vec::new();
    let mut during = 0;
    let mut reg_lat = Vec::new();
    // Accesses that take the instance's mutex, which the engine holds for each chunk of
    // A's GEMM: config space reads, and faults on untouched VRAM pages of A's mapping.
    let (mut cfg_lat, mut fault_lat) = (Vec::new(), Vec::new());
    for i in 0..60u32 {
        if a_done(&a)? {
            break;
        }
        let t = Instant::now();
        b.run_timeout(
            &[Cmd::Fill {
                dst: DATA,
                len: 256,
                value: i,
            }],
            Duration::from_secs(20),
        )
        .fctx(format!("B's job {i} next to A's GEMM"))?;
        lat.push(t.elapsed());
        if !a_done(&a)? {
            during += 1;
        }
        if i % 4 == 0 && !a_done(&a)? {
            // How long one of A's registers takes to read while A's ring runs.
            let t = Instant::now();
            a.eng.status()?;
            reg_lat.push(t.elapsed());
        }
        if !a_done(&a)? {
            let t = Instant::now();
            a.dev().config_read_u32(0)?;
            cfg_lat.push(t.elapsed());
            let t = Instant::now();
            a.vram().write_u32(64 * MIB + u64::from(i) * 4096, i)?;
            fault_lat.push(t.elapsed());
        }
    }
    for (what, v) in [
        ("config space read", &mut cfg_lat),
        ("first touch of a VRAM page", &mut fault_lat),
    ] {
        v.sort();
        let (p50, max) = (
            v.get(v.len() / 2).copied().unwrap_or_default(),
            v.last().copied().unwrap_or_default(),
        );
        ctx.note(format!(
            "A's {what} while its GEMM runs: {} samples, p50 {p50:?} max {max:?}",
            v.len()
        ));
        ctx.soft(
            if p50 < Duration::from_millis(5) && max < Duration::from_secs(1) {
                Ok(())
            } else {
                Err(Fail(format!(
                    "{what} of a busy instance: p50 {p50:?}, max {max:?}"
                )))
            },
        );
    }
    reg_lat.sort();
    lat.sort();
    let p50 = lat.get(lat.len() / 2).copied().unwrap_or_default();
    ctx.note(format!(
        "B: {during} jobs done while A's GEMM ran; latency p50 {p50:?} max {:?}",
        lat.last().copied().unwrap_or_default()
    ));
    let reg_p50 = reg_lat.get(reg_lat.len() / 2).copied().unwrap_or_default();
    ctx.note(format!(
        "A's STATUS read while its GEMM runs: {} samples, p50 {reg_p50:?} max {:?}",
        reg_lat.len(),
        reg_lat.last().copied().unwrap_or_default()
    ));
    let r = if reg_p50 < Duration::from_millis(20) {
        Ok(())
    } else {
        Err(Fail(format!(
            "reading a register of a busy instance takes {reg_p50:?} (p50)"
        )))
    };
    ctx.soft(r);
    let r = if during >= 10 {
        Ok(())
    } else {
        Err(Fail(format!(
            "B completed only {during} jobs while A's GEMM was running"
        )))
    };
    ctx.soft(r);
    let r = if p50 < Duration::from_millis(200) {
        Ok(())
    } else {
        Err(Fail(format!(
            "B's median latency {p50:?} next to a long GEMM"
        )))
    };
    ctx.soft(r);
    a.eng.wait_fence(seq_a, Duration::from_secs(120))?;
    ctx.note(format!(
        "A's GEMM took {:?} wall, {:.0} ms of engine time",
        start.elapsed(),
        (a.inst.busy_ns()? - busy_a0) as f64 / 1e6
    ));
    let (sl, sw) = (a.inst.slices()? - slices0, p.switches()? - sw0);
    ensure!(
        sl >= during && sw >= 2 * during,
        "A's GEMM ran in {sl} slices with {sw} switches while B completed {during} jobs"
    );
    let want = gemm(&ma, &mb, d as usize, d as usize, d as usize)
        .ok_or_else(|| Fail("test bug".into()))?;
    ensure!(
        a.read_words(gm.c, (d * d) as usize)? == want,
        "the preempted GEMM's result differs from the reference"
    );
    Ok(())
}

/// Start a JUMP-to-self loop on `g` (ring at RING).
pub(super) fn start_loop(g: &mut Gpu) -> TestResult {
    g.eng.write_at(0, &Cmd::Jump { target: 0 })?;
    g.eng.set_sw_tail(64);
    g.eng.kick()?;
    Ok(())
}

fn expect_watchdog(
    ctx: &mut Ctx,
    p: &Parent,
    g: &mut Gpu,
    busy0: u64,
    wd_ms: u64,
    head: Option<u32>,
    what: &str,
) -> TestResult {
    let t = Instant::now();
    let (code, eh, st) = g
        .eng
        .wait_stopped(Duration::from_millis(wd_ms * 10 + 5000))
        .ctx(format!("{what}: watchdog never fired"))?;
    ensure_code(code, &[ErrorCode::Watchdog], what)?;
    ensure!(
        st & reg::STATUS_HUNG != 0 && st & reg::STATUS_ERROR != 0,
        "{what}: STATUS {st:#x}, want HUNG|ERROR"
    );
    if let Some(h) = head {
        ensure_eq!(eh, h, "{what}: ERROR_HEAD");
    }
    ensure!(
        g.eng.irq_status()? & reg::IRQ_WATCHDOG != 0,
        "{what}: IRQ_STATUS.WATCHDOG not set"
    );
    ensure!(g.wait_irq(Duration::from_secs(2))?, "{what}: no MSI");
    let used = g.inst.busy_ns()?.saturating_sub(busy0) as f64 / 1e6;
    ctx.note(format!(
        "{what}: WATCHDOG after {used:.0} ms of engine time (watchdog_ms {wd_ms}), seen {:?} after the wait began",
        t.elapsed()
    ));
    let slice_ms = 1.0;
    ensure!(
        used >= wd_ms as f64 * 0.9 && used <= wd_ms as f64 + 5.0 * slice_ms + 100.0,
        "{what}: engine time until WATCHDOG {used:.0} ms, watchdog_ms {wd_ms}"
    );
    ensure!(
        g.inst.cmds_failed()? >= 1,
        "{what}: cmds_failed not incremented"
    );
    // Busy no more.
    stays_idle(p, g, &format!("{what}: after the watchdog"))?;
    // Reset recovers.
    g.eng.recover()?;
    g.run(&[Cmd::Fill {
        dst: DATA,
        len: 4,
        value: 3,
    }])
    .fctx(format!("{what}: after reset"))?;
    ensure_eq!(g.read_words(DATA, 1)?[0], 3, "{what}: FILL after reset");
    Ok(())
}

pub(super) fn watchdog_loop(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let wd = 300;
    p.set_watchdog_ms(&wd.to_string()).ctx("watchdog_ms")?;
    let nbr = Neighbour::start(new_gpu(ctx, &p)?, 80)?;
    let mut g = new_gpu(ctx, &p)?;
    g.msi(reg::IRQ_ERROR | reg::IRQ_WATCHDOG)?;
    let busy0 = g.inst.busy_ns()?;
    start_loop(&mut g)?;
    nbr.expect_progress(3, Duration::from_secs(10), "while A loops")?;
    expect_watchdog(ctx, &p, &mut g, busy0, wd, None, "JUMP-to-self loop")?;
    nbr.expect_progress(2, Duration::from_secs(10), "after A's watchdog")?;
    let (_, rep) = nbr.finish()?;
    ctx.note(format!("neighbour: {} rounds", rep.rounds));
    Ok(())
}

pub(super) fn watchdog_giant_job(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    quiet_watchdog(&p)?;
    let nbr = Neighbour::start(new_gpu(ctx, &p)?, 81)?;
    let mut g = new_gpu(ctx, &p)?;
    g.msi(reg::IRQ_ERROR | reg::IRQ_WATCHDOG)?;
    let wd = 300;
    // Sized far beyond the watchdog: a host stall during calibration inflates the
    // measured cost (a 4x margin once gave a GEMM that finished under watchdog_ms);
    // the watchdog stops it at watchdog_ms whatever its size.
    let big = long_gemm(&mut g, Duration::from_millis(wd * 20))?;
    p.set_watchdog_ms(&wd.to_string()).ctx("watchdog_ms")?;
    g.eng.recover()?;
    let busy0 = g.inst.busy_ns()?;
    g.eng.submit(&[Cmd::Nop, big.cmd(), Cmd::fence(1)])?;
    expect_watchdog(
        ctx,
        &p,
        &mut g,
        busy0,
        wd,
        Some(64),
        "a giant GEMM without a fence",
    )?;
    nbr.finish()?;
    Ok(())
}

pub(super) fn watchdog_keep_alive(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    quiet_watchdog(&p)?;
    let mut g = new_gpu(ctx, &p)?;
    let wd = 300u64;
    // A fence every ~wd/12 of engine time: a chunk stretched by a vCPU stall counts as
    // engine time (the watchdog's clock is the engine's), so the gap between fences
    // leaves room for a 12x stretch of one GEMM, not 4x as a fence every wd/4 did.
    let gm = long_gemm(&mut g, Duration::from_millis(wd / 12))?;
    p.set_watchdog_ms(&wd.to_string()).ctx("watchdog_ms")?;
    let busy0 = g.inst.busy_ns()?;
    // Batches of 24 (GEMM, FENCE) pairs until the stream used 2x watchdog_ms of engine
    // time in all (judged from busy_ns, not from the calibration: a calibration run
    // the host slowed down makes shorter GEMMs), never hung.
    let mut used = 0.0;
    let mut batches = 0;
    while used <= 2.0 * wd as f64 && batches < 20 {
        let mut cmds = Vec::new();
        let mut last = 0;
        for _ in 0..24 {
            cmds.push(gm.cmd());
            let (f, s) = g.eng.next_fence(false, None);
            cmds.push(f);
            last = s;
        }
        g.eng.submit(&cmds)?;
        g.eng
            .wait_fence(last, Duration::from_secs(120))
            .ctx("fenced stream longer than watchdog_ms")?;
        used = (g.inst.busy_ns()? - busy0) as f64 / 1e6;
        batches += 1;
    }
    ctx.note(format!(
        "{used:.0} ms of engine time in {batches} batches with a fence every ~{} ms",
        wd / 12
    ));
    ensure!(
        used > 2.0 * wd as f64,
        "the stream took only {used:.0} ms of engine time in {batches} batches"
    );
    ok_status(&g, "after a long fenced stream")
}
