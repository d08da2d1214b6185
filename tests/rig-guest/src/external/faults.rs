//! The `external` suite's fault cases: a daemon that dies, is killed, is absent, refuses,
//! answers garbage or is hostile.

use std::time::{Duration, Instant};

use vgpu_engine_abi::exec;
use vgpu_vfio::abi::engine as reg;
use vgpu_vfio::{Cmd, ErrorCode};

use crate::execref::{self, Behaviour, Queue, RefExecutor};
use crate::harness::{Context, Ctx, TestResult};
use crate::rng::Rng;
use crate::util::wait_for;
use crate::workload::FENCE_TIMEOUT;
use crate::{ensure, ensure_eq};

use super::daemon::Daemon;
use super::program::big_gemm;
use super::{external, open, AREA, TYPE};

/// A daemon that dies with a piece in hand: a new one gets it again (one requeue) and
/// the GEMM's bytes are the reference's. Judges bytes and the requeue, not time: the
/// engine's wait for a daemon is engine time, and between the death and the restart it
/// met the default 2 s watchdog once (a soak under a CPU hog, debug kernel, 2026-12-03).
pub(super) fn daemon_dies_requeued(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
    super::judge_bytes(&p)?;
    let inst = ctx.create(&p, TYPE)?;
    let mut g = open(&inst)?;
    let (gm, want) = big_gemm(&g)?;
    let dying = RefExecutor::start(
        0,
        Behaviour {
            die_after: Some(3),
            ..Default::default()
        },
    )
    .ctx("start the executor")?;
    let seq = g.eng.submit_fenced(&[gm.cmd()], false).ctx("submit")?;
    ensure!(
        wait_for(Duration::from_secs(20), || dying.finished()),
        "the executor did not take 3 pieces"
    );
    ensure_eq!(
        dying.stop().ctx("dead executor")?.pieces,
        2,
        "pieces before dying"
    );
    ensure!(
        wait_for(Duration::from_secs(5), || p.executor_connected().ok()
            == Some(0)),
        "still connected"
    );
    let r0 = p.executor_requeues().ctx("requeues")?;
    ensure!(g.eng.fence_value()? < seq, "fence passed with no executor");
    let xd = RefExecutor::start(0, Behaviour::default()).ctx("restart")?;
    g.eng
        .wait_fence(seq, FENCE_TIMEOUT)
        .ctx("fence after the restart")?;
    ensure_eq!(g.eng.error()?, 0, "ERROR");
    let got = g.read_words(gm.c, want.len())?;
    ensure!(
        got == want,
        "C differs from the reference after the re-queue"
    );
    let requeued = p.executor_requeues().ctx("requeues")? - r0;
    ensure!(
        requeued == 1,
        "requeues after the restart: {requeued}, want 1"
    );
    xd.stop().ctx("executor")?;
    Ok(())
}

/// A daemon process of its own (the reference executor's `exec-serve`, or vgpu-executor
/// with `--daemon vulkan`), killed with SIGKILL while three instances' GEMMs run on two
/// engines; a new one finishes them: every C right, nothing lost. A ring may instead
/// stop with the documented error (WATCHDOG, if the restart outlasts `watchdog_ms`),
/// but never with a wrong byte: each word of its C is then the reference's or the
/// marker it started with (the three GEMMs write the same C).
pub(super) fn daemon_killed_several(ctx: &mut Ctx) -> TestResult {
    const MARK: u32 = 0xdead_beef;
    let p = ctx.parent(0)?;
    external(&p)?;
    super::judge_bytes(&p)?;
    let first = Daemon::start(0)?;
    ensure!(
        wait_for(Duration::from_secs(10), || p.executor_connected().ok()
            == Some(1)),
        "the daemon did not connect"
    );
    let vulkan = first.is_vulkan();
    let mut gpus = Vec::new();
    let mut jobs = Vec::new();
    for _ in 0..3 {
        let inst = ctx.create(&p, TYPE)?;
        let mut g = open(&inst)?;
        let (gm, want) = big_gemm(&g)?;
        g.write_words(gm.c, &vec![MARK; want.len()])?;
        let seq = g
            .eng
            .submit_fenced(&[gm.cmd(), gm.cmd(), gm.cmd()], false)
            .ctx("submit")?;
        jobs.push((gm, want, seq));
        gpus.push(g);
    }
    let h0 = p.executor_handoffs().ctx("handoffs")?;
    ensure!(
        wait_for(Duration::from_secs(20), || p
            .executor_handoffs()
            .is_ok_and(|h| h >= h0 + 4)),
        "no pieces handed"
    );
    first.kill()?;
    ensure!(
        wait_for(Duration::from_secs(5), || p.executor_connected().ok()
            == Some(0)),
        "still connected after kill -9"
    );
    let done_before = gpus
        .iter()
        .zip(&jobs)
        .filter(|(g, (_, _, seq))| g.eng.fence_value().is_ok_and(|f| f >= *seq))
        .count();
    let r0 = p.executor_requeues().ctx("requeues")?;
    let second = Daemon::start(0)?;
    let mut stopped = 0;
    for (i, (g, (gm, want, seq))) in gpus.iter().zip(&jobs).enumerate() {
        let fenced = g.eng.wait_fence(*seq, FENCE_TIMEOUT);
        let err = g.eng.error()?;
        let c = g.read_words(gm.c, want.len())?;
        if fenced.is_err() && err == ErrorCode::Watchdog as u32 {
            // the documented stop: no byte other than the reference's or the marker
            if let Some(j) = (0..c.len()).find(|&j| c[j] != want[j] && c[j] != MARK) {
                return Err(crate::harness::Fail(format!(
                    "ring {i} stopped (WATCHDOG) with a wrong word at C[{j}]: {:#x}, want {:#x}",
                    c[j], want[j]
                )));
            }
            stopped += 1;
            continue;
        }
        fenced.ctx(format!("ring {i}: fence after the restart"))?;
        ensure_eq!(err, 0, "ring {i}: ERROR");
        if let Some(j) = (0..c.len()).find(|&j| c[j] != want[j]) {
            return Err(crate::harness::Fail(format!(
                "ring {i}: C differs from the reference after kill -9 and restart at C[{j}]: {:#x}, want {:#x}",
                c[j], want[j]
            )));
        }
    }
    let requeued = p.executor_requeues().ctx("requeues")? - r0;
    let pieces = second.stop()?;
    ctx.note(format!(
        "{} daemon: {done_before} of 3 rings done at the kill, {requeued} pieces handed again, \
         {stopped} rings stopped with WATCHDOG, {pieces} pieces on the restarted daemon",
        if vulkan { "vgpu-executor" } else { "reference" }
    ));
    ensure!(
        done_before < 3 && requeued >= 1,
        "nothing was in flight at the kill ({done_before} done, {requeued} requeued)"
    );
    Ok(())
}

pub(super) fn no_daemon_watchdog(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
    p.set_watchdog_ms("100").ctx("watchdog_ms")?;
    let inst = ctx.create(&p, TYPE)?;
    let mut g = open(&inst)?;
    let fill = Cmd::Fill {
        dst: AREA,
        len: 4096,
        value: 7,
    };
    let t = Instant::now();
    g.eng.submit_fenced(&[fill], false).ctx("submit")?;
    let (err, head, st) = g
        .eng
        .wait_stopped(Duration::from_secs(20))
        .ctx("the ring should stop")?;
    ensure_eq!(err, ErrorCode::Watchdog as u32, "ERROR (head {head:#x})");
    ensure!(st & reg::STATUS_HUNG != 0, "STATUS {st:#x} without HUNG");
    ensure_eq!(g.read_words(AREA, 1)?[0], 0, "FILL ran without an executor");
    ctx.note(format!("stopped after {:.2} s", t.elapsed().as_secs_f64()));
    drop(g);
    ctx.remove(&inst)
}

/// With no daemon and the longest watchdog, a reset and a close still get the
/// instance's lock at once: the engine does not wait for a daemon while tasks wait.
pub(super) fn no_daemon_reset_in_time(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
    p.set_watchdog_ms("60000").ctx("watchdog_ms")?;
    let inst = ctx.create(&p, TYPE)?;
    let mut g = open(&inst)?;
    let fill = Cmd::Fill {
        dst: AREA,
        len: 4096,
        value: 7,
    };
    g.eng.submit(&[fill]).ctx("submit")?;
    // the engine fetched the FILL (HEAD moved past it) and waits for a daemon
    ensure!(
        wait_for(Duration::from_secs(10), || g
            .eng
            .read_reg(reg::RING_HEAD)
            .is_ok_and(|h| h == 64)),
        "the engine never fetched the FILL"
    );
    let t = Instant::now();
    g.eng.reset().ctx("ENGINE_RESET")?;
    let reset = t.elapsed();
    let t = Instant::now();
    drop(g);
    let close = t.elapsed();
    ctx.note(format!(
        "ENGINE_RESET took {:.1} ms, the last close {:.1} ms",
        reset.as_secs_f64() * 1e3,
        close.as_secs_f64() * 1e3
    ));
    ensure!(
        reset < Duration::from_secs(5) && close < Duration::from_secs(5),
        "reset {reset:?}, close {close:?} with no daemon (watchdog 60 s)"
    );
    Ok(())
}

/// A refused piece stops the ring with EXECUTOR at its command (not WATCHDOG: the longest
/// watchdog, so a loaded host's slow refusal cannot turn into one).
pub(super) fn refused_is_error(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
    super::judge_bytes(&p)?;
    let xd = RefExecutor::start(
        0,
        Behaviour {
            refuse: true,
            ..Default::default()
        },
    )
    .ctx("start")?;
    let inst = ctx.create(&p, TYPE)?;
    let mut g = open(&inst)?;
    let e0 = p.executor_errors().ctx("errors")?;
    g.eng
        .submit(&[
            Cmd::Nop,
            Cmd::Fill {
                dst: AREA,
                len: 64,
                value: 1,
            },
        ])
        .ctx("submit")?;
    let (err, head, _) = g.eng.wait_stopped(Duration::from_secs(20)).ctx("stop")?;
    ensure_eq!(err, ErrorCode::Executor as u32, "ERROR");
    ensure_eq!(head, 64, "ERROR_HEAD (the FILL, ring offset)");
    ensure!(
        p.executor_errors().ctx("errors")? > e0,
        "executor_errors unchanged"
    );
    xd.stop().ctx("executor")?;
    Ok(())
}

/// Garbage completions beside the real ones are counted and dropped; the GEMM's bytes
/// are right (bytes, not time: the longest watchdog).
pub(super) fn garbage_completions(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
    super::judge_bytes(&p)?;
    let xd = RefExecutor::start(
        0,
        Behaviour {
            garbage: true,
            ..Default::default()
        },
    )
    .ctx("start")?;
    let inst = ctx.create(&p, TYPE)?;
    let mut g = open(&inst)?;
    let (gm, want) = big_gemm(&g)?;
    let e0 = p.executor_errors().ctx("errors")?;
    g.run(&[gm.cmd()])?;
    ensure!(
        g.read_words(gm.c, want.len())? == want,
        "C differs from the reference"
    );
    let st = xd.stop().ctx("executor")?;
    // per piece: one completion with an unknown seq, one absurd cq_tail
    let errs = p.executor_errors().ctx("errors")? - e0;
    ensure!(
        st.pieces > 1 && errs == 2 * st.pieces,
        "executor_errors grew by {errs} for {} pieces with 2 bad things each",
        st.pieces
    );
    Ok(())
}

/// A daemon that writes garbage everywhere it can (header indices, completions, entries),
/// kicks, maps random offsets and touches what maps, while two instances submit work:
/// the kernel neither crashes nor hangs (the debug kernel runs this under KASAN and
/// lockdep), the rings stop with a documented error or keep waiting, and once a sane
/// daemon connects, recovered rings compute the right bytes again.
pub(super) fn hostile_daemon(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
    p.set_watchdog_ms("200").ctx("watchdog_ms")?;
    let insts = [ctx.create(&p, TYPE)?, ctx.create(&p, TYPE)?];
    let mut gpus = Vec::new();
    for i in &insts {
        gpus.push(open(i)?);
    }
    let (gm, want) = big_gemm(&gpus[0])?;
    let q = Queue::open(0).ctx("open")?;
    let mut rng = Rng::new(0x0405_711e);
    let mut maps = Vec::new();
    let mut ops = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        for g in gpus.iter_mut() {
            if g.eng.status()? & reg::STATUS_BUSY == 0 {
                g.eng.recover().ctx("recover")?;
                g.eng
                    .submit(&[
                        gm.cmd(),
                        Cmd::Fill {
                            dst: AREA,
                            len: 4096,
                            value: 9,
                        },
                    ])
                    .ctx("submit")?;
            }
        }
        for _ in 0..50 {
            ops += 1;
            match rng.below(6) {
                0 => {
                    let off = [
                        exec::hdr::SQ_HEAD,
                        exec::hdr::CQ_TAIL,
                        exec::hdr::SQ_TAIL,
                        exec::hdr::CQ_HEAD,
                    ][rng.below(4) as usize];
                    q.set_hdr(off, rng.next_u64() as u32);
                }
                1 => {
                    let head = q.hdr(exec::hdr::SQ_TAIL);
                    let e = q.sqe(head.wrapping_sub(1 + rng.below(3) as u32));
                    let c = exec::Cqe {
                        seq: if rng.chance(1, 2) {
                            e.seq
                        } else {
                            rng.next_u64()
                        },
                        status: rng.below(5) as u32,
                        value: rng.next_u64(),
                        // any report, absurd ones included: it sizes pieces only
                        work_ns: rng.next_u64(),
                    };
                    q.put_cqe(rng.next_u64() as u32, &c);
                }
                2 => {
                    let _ = q.kick(q.hdr(exec::hdr::CQ_HEAD).wrapping_add(rng.below(70) as u32));
                }
                3 => {
                    let id = q.sqe(q.hdr(exec::hdr::SQ_TAIL).wrapping_sub(1)).id;
                    let id = if rng.chance(3, 4) {
                        id
                    } else {
                        rng.below(8) as u32
                    };
                    let off = exec::vram_offset(id) + rng.below(64) * 4096;
                    let len = (1 + rng.below(16)) as usize * 4096;
                    if let Ok(ptr) = execref::map(q.fd(), off, len) {
                        // SAFETY: inside a mapping of len bytes that lives until munmap.
                        unsafe {
                            std::ptr::write_volatile(ptr.add(rng.below(len as u64) as usize), 0xa5)
                        };
                        maps.push((ptr, len));
                    }
                }
                4 => {
                    let _ = q.poll(0);
                }
                _ => {
                    if let Some((ptr, len)) = maps.pop() {
                        // SAFETY: a mapping made above.
                        unsafe { libc::munmap(ptr.cast(), len) };
                    }
                }
            }
        }
    }
    for (ptr, len) in maps.drain(..) {
        // SAFETY: mappings made above.
        unsafe { libc::munmap(ptr.cast(), len) };
    }
    drop(q);
    let errs = p.executor_errors().ctx("errors")?;
    // a sane daemon: everything works again. What is judged now is the bytes: the
    // hostile phase's 200 ms watchdog tripped a GEMM of the sane daemon on the debug
    // kernel next to a CPU hog.
    super::judge_bytes(&p)?;
    let xd = RefExecutor::start(0, Behaviour::default()).ctx("start")?;
    for g in gpus.iter_mut() {
        g.eng.recover().ctx("recover")?;
    }
    let (gm2, want2) = big_gemm(&gpus[0])?;
    ensure!(gm2 == gm && want2 == want, "operands");
    gpus[0].run(&[gm.cmd()])?;
    ensure!(
        gpus[0].read_words(gm.c, want.len())? == want,
        "C differs after the hostile daemon"
    );
    gpus[1].run(&[Cmd::Fill {
        dst: AREA,
        len: 64,
        value: 3,
    }])?;
    ensure_eq!(
        gpus[1].read_words(AREA, 16)?,
        vec![3; 16],
        "FILL after the hostile daemon"
    );
    xd.stop().ctx("executor")?;
    ctx.note(format!("{ops} hostile operations, executor_errors {errs}"));
    Ok(())
}
