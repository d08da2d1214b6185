//! Suite `external`: the kernel's side of the external executor (docs/executor.md),
//! driven by the reference executor (`execref`: every piece computed by
//! `vgpu_engine_abi::exec::apply_piece`): the device and its queue, results identical to
//! the CPU executor's, a daemon that dies holding a piece, no daemon at all, refusals,
//! garbage completions, the VRAM mapping revoked at close, the knob switched live.

use std::time::{Duration, Instant};

use vgpu_engine_abi::exec;
use vgpu_sysfs::handle::{Instance, Parent};
use vgpu_vfio::abi::engine as reg;
use vgpu_vfio::{Cmd, ErrorCode};

use crate::execref::{self, Behaviour, Queue, RefExecutor};
use crate::harness::{Context, Ctx, Fail, Suite, Test, TestResult};
use crate::rng::Rng;
use crate::util::{set_mode, wait_for, Mode};
use crate::workload::{Gemm, Gpu, FENCE_TIMEOUT, MIB};
use crate::{ensure, ensure_eq};

pub fn suite() -> Suite {
    let t = |name, params, run| Test { name, params, run };
    Suite {
        name: "external",
        about: "external executor mode: handoff queue, re-queue, faults (reference executor)",
        tests: vec![
            t("device_and_queue", Some("parents=1"), device_and_queue),
            t("matches_cpu", Some("parents=2"), matches_cpu),
            t(
                "daemon_dies_requeued",
                Some("parents=1"),
                daemon_dies_requeued,
            ),
            t("no_daemon_watchdog", Some("parents=1"), no_daemon_watchdog),
            t("refused_is_error", Some("parents=1"), refused_is_error),
            t(
                "garbage_completions",
                Some("parents=1"),
                garbage_completions,
            ),
            t(
                "close_revokes_mapping",
                Some("parents=1"),
                close_revokes_mapping,
            ),
            t("switch_live", Some("parents=1"), switch_live),
        ],
    }
}

const TYPE: &str = "vgpu_shim-128M";
/// The ring, after the scanout (at 0) and before the area.
const RING: u64 = 256 * 1024 + 64 * 1024;
const RING_SIZE: u64 = 64 * 1024;
/// Where the random programs work (above the ring).
const AREA: u64 = MIB;
const AREA_LEN: u64 = 3 * MIB;

fn external(p: &Parent) -> TestResult {
    p.set_executor("external").ctx("executor=external")?;
    ensure_eq!(
        p.executor().ctx("read executor")?,
        "external".to_string(),
        "{} executor",
        p.name()
    );
    Ok(())
}

fn open(inst: &Instance) -> Result<Gpu, Fail> {
    Gpu::open_ring(inst, RING, RING_SIZE)
}

fn device_and_queue(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    ensure_eq!(p.executor().ctx("executor")?, "cpu".to_string(), "default");
    ensure!(p.set_executor("gpu").is_err(), "executor=gpu accepted");
    ensure_eq!(
        p.executor().ctx("executor")?,
        "cpu".to_string(),
        "after a bad write"
    );
    ensure_eq!(p.executor_connected().ctx("connected")?, 0, "no daemon yet");

    let q = Queue::open(0).ctx("open the executor device")?;
    ensure_eq!(q.hdr(exec::hdr::MAGIC), exec::MAGIC, "magic");
    ensure_eq!(q.hdr(exec::hdr::VERSION), exec::VERSION, "version");
    ensure_eq!(q.hdr(exec::hdr::SQ_ENTRIES), exec::SQ_ENTRIES, "sq entries");
    ensure_eq!(q.hdr(exec::hdr::CQ_OFF) as usize, exec::CQ_OFF, "cq offset");
    ensure_eq!(
        p.executor_connected().ctx("connected")?,
        1,
        "daemon connected"
    );
    let second = Queue::open(0);
    ensure!(
        matches!(&second, Err(e) if e.raw_os_error() == Some(libc::EBUSY)),
        "a second open: {:?}, want EBUSY",
        second.as_ref().err()
    );
    // a queue mapping of the wrong size, VRAM of an id never handed here
    let bad = execref::map(q.fd(), 0, 4096);
    ensure!(
        matches!(&bad, Err(e) if e.raw_os_error() == Some(libc::EINVAL)),
        "a 4 KiB queue mapping: {bad:?}"
    );
    let inst = ctx.create(&p, TYPE)?;
    let _gpu = open(&inst)?;
    let bad = execref::map(q.fd(), exec::vram_offset(1), 4096);
    ensure!(
        matches!(&bad, Err(e) if e.raw_os_error() == Some(libc::EACCES)),
        "VRAM of an instance whose work was never handed: {bad:?}"
    );
    // SAFETY: an unknown ioctl on our own fd, no argument.
    let r = unsafe { libc::ioctl(q.fd(), 0x1234 as _) };
    let e = std::io::Error::last_os_error().raw_os_error();
    ensure!(
        r < 0 && e == Some(libc::ENOTTY),
        "unknown ioctl: {r}, {e:?}"
    );
    ensure_eq!(q.kick(0).ctx("empty kick")?, 0, "kick with nothing");
    drop(q);
    ensure_eq!(p.executor_connected().ctx("connected")?, 0, "after close");
    Ok(())
}

/// A random program over [AREA, AREA + AREA_LEN), every opcode, overlaps included.
fn program(rng: &mut Rng, mode: &Mode, n: usize) -> Vec<Cmd> {
    let mut cmds = Vec::new();
    let word = |rng: &mut Rng, max: u64| AREA + rng.below(max / 4) * 4;
    for _ in 0..n {
        let c = match rng.below(6) {
            0 => Cmd::Fill {
                dst: word(rng, AREA_LEN - 256 * 1024),
                len: 4 * rng.range(1, 64 * 1024),
                value: rng.next_u64() as u32,
            },
            1 => {
                let len = rng.range(1, 300 * 1024);
                let src = AREA + rng.below(AREA_LEN - len);
                // a third of them overlap, by a big or a small shift
                let dst = if rng.chance(1, 3) {
                    let shift = if rng.chance(1, 2) {
                        rng.range(1, 64)
                    } else {
                        rng.range(4096, len.max(4097))
                    };
                    if rng.chance(1, 2) && src + shift + len <= AREA + AREA_LEN {
                        src + shift
                    } else {
                        src.saturating_sub(shift).max(AREA)
                    }
                } else {
                    AREA + rng.below(AREA_LEN - len)
                };
                Cmd::Copy { dst, src, len }
            }
            2 => {
                let len = 4 * rng.range(1, 200 * 1024);
                Cmd::Checksum {
                    src: word(rng, AREA_LEN - len),
                    len,
                    dst: AREA + rng.below(AREA_LEN / 8) * 8,
                }
            }
            3 => {
                let (m, n, k) = (rng.range(1, 40), rng.range(1, 40), rng.range(1, 40));
                let a = word(rng, AREA_LEN / 2);
                let b = word(rng, AREA_LEN / 2);
                // sometimes C on top of A (the serial GEMM, kept on the CPU)
                let c = if rng.chance(1, 4) {
                    a
                } else {
                    AREA + AREA_LEN / 2 + rng.below(AREA_LEN / 8) * 4
                };
                Cmd::Gemm { a, b, c, m, n, k }
            }
            4 => {
                let (w, h) = (rng.range(1, u64::from(mode.xres)), rng.range(1, 40));
                Cmd::Blit {
                    src: AREA + rng.below(AREA_LEN / 2),
                    src_stride: w * 4 + rng.below(64),
                    width: w,
                    height: h,
                    dst_x: rng.below(u64::from(mode.xres) - w + 1),
                    dst_y: rng.below(u64::from(mode.yres) - h + 1),
                }
            }
            _ => Cmd::Nop,
        };
        cmds.push(c);
    }
    cmds
}

/// Seed VRAM, run `cmds` in batches with fences, return the area and the scanout.
fn run_program(g: &mut Gpu, mode: &Mode, cmds: &[Cmd]) -> Result<Vec<u8>, Fail> {
    set_mode(g.dev(), mode)?;
    let seed: Vec<u32> = (0..(AREA_LEN / 4) as u32)
        .map(|i| i.wrapping_mul(0x9e37_79b9) ^ 0x5a5a_0000)
        .collect();
    g.write_words(AREA, &seed)?;
    for batch in cmds.chunks(10) {
        g.run(batch)?;
    }
    let mut out = g.read_bytes(AREA, AREA_LEN as usize)?;
    out.extend(g.read_bytes(mode.start(), mode.size() as usize)?);
    Ok(out)
}

fn matches_cpu(ctx: &mut Ctx) -> TestResult {
    let (pe, pc) = (ctx.parent(0)?, ctx.parent(1)?);
    external(&pe)?;
    // what is judged here is the bytes; a slow (debug) kernel must not trip the watchdog
    for p in [&pe, &pc] {
        p.set_watchdog_ms("60000").ctx("watchdog_ms")?;
    }
    let xd = RefExecutor::start(0, Behaviour::default()).ctx("start the executor")?;
    let (ie, ic) = (ctx.create(&pe, TYPE)?, ctx.create(&pc, TYPE)?);
    let (mut ge, mut gc) = (open(&ie)?, open(&ic)?);
    let mode = Mode {
        xres: 320,
        yres: 200,
        bpp: 32,
        virt_width: 0,
        x_off: 0,
        y_off: 0,
    };
    let h0 = pe.executor_handoffs().ctx("handoffs")?;
    let mut rng = Rng::new(0x5eed_e7ec);
    let cmds = program(&mut rng, &mode, 400);
    let want = run_program(&mut gc, &mode, &cmds)?;
    let got = run_program(&mut ge, &mode, &cmds)?;
    if let Some(i) = crate::util::first_diff(&got, &want) {
        return Err(Fail(format!(
            "external and cpu differ at byte {i} of the area+scanout ({:#x} vs {:#x})",
            got[i], want[i]
        )));
    }
    for what in [reg::FENCE_LO, reg::CMDS_DONE, reg::STATUS] {
        ensure_eq!(
            ge.eng.read_reg(what)?,
            gc.eng.read_reg(what)?,
            "register {what:#x}"
        );
    }
    let handed = pe.executor_handoffs().ctx("handoffs")? - h0;
    let st = xd.stop().ctx("executor")?;
    ensure!(
        handed > 100 && st.pieces >= handed && st.refused == 0,
        "handoffs {handed}, executor pieces {}, refused {}",
        st.pieces,
        st.refused
    );
    ensure_eq!(
        pc.executor_handoffs().ctx("cpu parent")?,
        0,
        "cpu parent handoffs"
    );
    ctx.note(format!(
        "{} commands, {handed} pieces handed, identical bytes",
        cmds.len()
    ));
    Ok(())
}

/// A GEMM big enough for many pieces, and its reference result.
fn big_gemm(g: &Gpu) -> Result<(Gemm, Vec<u32>), Fail> {
    let gm = Gemm::square(AREA, 96);
    let (d, n) = (96usize, 96 * 96);
    let a: Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let b: Vec<u32> = (0..n as u32).map(|i| i ^ 0xdead_beef).collect();
    g.write_words(gm.a, &a)?;
    g.write_words(gm.b, &b)?;
    let want = vgpu_vfio::reference::gemm(&a, &b, d, d, d).ok_or(Fail("reference".into()))?;
    Ok((gm, want))
}

fn daemon_dies_requeued(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
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

fn no_daemon_watchdog(ctx: &mut Ctx) -> TestResult {
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

fn refused_is_error(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
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

fn garbage_completions(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
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

fn close_revokes_mapping(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
    let inst = ctx.create(&p, TYPE)?;
    let mut g = open(&inst)?;
    let q = Queue::open(0).ctx("open the device")?;
    g.eng
        .submit(&[Cmd::Fill {
            dst: AREA,
            len: 8,
            value: 0x1234_5678,
        }])
        .ctx("submit")?;
    ensure!(q.poll(10_000).ctx("poll")?, "no submission");
    let e = q.sqe(q.hdr(exec::hdr::SQ_HEAD));
    q.set_hdr(
        exec::hdr::SQ_HEAD,
        q.hdr(exec::hdr::SQ_HEAD).wrapping_add(1),
    );
    let len = e.vram_size as usize;
    let ptr = execref::map(q.fd(), exec::vram_offset(e.id), len).ctx("map VRAM")?;
    // SAFETY: the mapping is len bytes and lives until munmap below.
    let mem = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    exec::apply_piece(mem, &e).ok_or(Fail("the piece".into()))?;
    q.put_cqe(
        0,
        &exec::Cqe {
            seq: e.seq,
            status: 0,
            value: 0,
        },
    );
    q.kick(1).ctx("kick")?;
    ensure!(
        wait_for(Duration::from_secs(10), || g.eng.cmds_done().ok()
            == Some(1)),
        "the FILL did not complete"
    );
    ensure_eq!(
        g.read_words(AREA, 2)?,
        vec![0x1234_5678; 2],
        "FILL through the daemon"
    );
    drop(g); // the last close
    let tail = q.hdr(exec::hdr::SQ_TAIL);
    let r = q.sqe(tail.wrapping_sub(1));
    ensure!(
        r.kind == Some(exec::SqeKind::Retire) && r.id == e.id,
        "last submission {r:?}, want RETIRE of id {}",
        e.id
    );
    // touching the old mapping must fault (SIGBUS) in a child
    // SAFETY: the child only reads memory and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: reading the mapped byte (expected to raise SIGBUS), then _exit.
        unsafe {
            let v = std::ptr::read_volatile(ptr.add(AREA as usize));
            libc::_exit(i32::from(v));
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let sig = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    // SAFETY: unmapping what map() returned.
    unsafe { libc::munmap(ptr.cast(), len) };
    ensure_eq!(
        sig,
        Some(libc::SIGBUS),
        "the old mapping after close (status {status:#x})"
    );
    let again = execref::map(q.fd(), exec::vram_offset(e.id), 4096);
    ensure!(
        matches!(&again, Err(e) if e.raw_os_error() == Some(libc::EACCES)),
        "mapping a closed id: {again:?}"
    );
    // the next open is a new id, with zeroed VRAM
    let g2 = open(&inst)?;
    ensure_eq!(g2.read_words(AREA, 2)?, vec![0; 2], "VRAM after reopen");
    Ok(())
}

fn switch_live(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
    let xd = RefExecutor::start(0, Behaviour::default()).ctx("start")?;
    let inst = ctx.create(&p, TYPE)?;
    let mut g = open(&inst)?;
    let (gm, want) = big_gemm(&g)?;
    let mut flips = 0;
    for round in 0..12 {
        g.write_words(gm.c, &vec![0xffff_ffff; want.len()])?;
        let seq = g
            .eng
            .submit_fenced(&[gm.cmd(), gm.cmd()], false)
            .ctx("submit")?;
        // flip the knob while the GEMMs run
        let mode = if round % 2 == 0 { "cpu" } else { "external" };
        p.set_executor(mode).ctx("flip")?;
        flips += 1;
        g.eng.wait_fence(seq, FENCE_TIMEOUT).ctx("fence")?;
        ensure!(
            g.read_words(gm.c, want.len())? == want,
            "round {round}: C differs after switching to {mode}"
        );
    }
    ensure_eq!(g.eng.error()?, 0, "ERROR");
    xd.stop().ctx("executor")?;
    ctx.note(format!("{flips} switches with GEMMs in flight"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu_vfio::reference::{validate, Limits, ScanoutMode};

    #[test]
    fn programs_are_valid() {
        let mode = Mode {
            xres: 320,
            yres: 200,
            bpp: 32,
            virt_width: 0,
            x_off: 0,
            y_off: 0,
        };
        let lim = Limits {
            vram_size: 128 * MIB,
            ring_size: RING_SIZE,
            mode: Some(ScanoutMode {
                xres: 320,
                yres: 200,
                bytes_pp: 4,
                stride: mode.stride(),
                start: mode.start(),
            }),
        };
        let mut rng = Rng::new(0x5eed_e7ec);
        for (i, c) in program(&mut rng, &mode, 4000).iter().enumerate() {
            let v = validate(&c.raw(), &lim);
            assert!(v.is_valid(), "command {i}: {c:?}: {v:?}");
        }
    }
}
