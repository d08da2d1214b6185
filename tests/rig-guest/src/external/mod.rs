//! Suite `external`: the kernel's side of the external executor (docs/executor.md),
//! driven by the reference executor (`execref`: every piece computed by
//! `vgpu_engine_abi::exec::apply_piece`): the device and its queue, results identical to
//! the CPU executor's, a daemon that dies holding a piece, no daemon at all, refusals,
//! garbage completions, the VRAM mapping revoked at close, the knob switched live.

mod daemon;
mod faults;
mod mapping;
mod program;

use vgpu_engine_abi::exec;
use vgpu_sysfs::handle::{Instance, Parent};

use crate::execref::{self, Queue};
use crate::harness::{Context, Ctx, Fail, Suite, Test, TestResult};
use crate::workload::{Gemm, Gpu, FENCE_TIMEOUT, MIB};
use crate::{ensure, ensure_eq};

use program::big_gemm;

pub fn suite() -> Suite {
    let t = |name, params, run| Test { name, params, run };
    Suite {
        name: "external",
        about: "external executor mode: handoff queue, re-queue, faults (reference executor)",
        tests: vec![
            t("device_and_queue", Some("parents=1"), device_and_queue),
            t("matches_cpu", Some("parents=2"), program::matches_cpu),
            t(
                "window_cuts_pieces",
                Some("parents=2"),
                program::window_cuts_pieces,
            ),
            t(
                "daemon_dies_requeued",
                Some("parents=1"),
                faults::daemon_dies_requeued,
            ),
            t(
                "daemon_killed_several",
                Some("parents=1 engines=2"),
                faults::daemon_killed_several,
            ),
            t(
                "no_daemon_watchdog",
                Some("parents=1"),
                faults::no_daemon_watchdog,
            ),
            t(
                "no_daemon_reset_in_time",
                Some("parents=1"),
                faults::no_daemon_reset_in_time,
            ),
            t(
                "refused_is_error",
                Some("parents=1"),
                faults::refused_is_error,
            ),
            t(
                "garbage_completions",
                Some("parents=1"),
                faults::garbage_completions,
            ),
            t(
                "close_revokes_mapping",
                Some("parents=1"),
                mapping::close_revokes_mapping,
            ),
            t(
                "ids_run_out",
                Some("parents=1 test_exec_id_start=2147483646"),
                mapping::ids_run_out,
            ),
            t("switch_live", Some("parents=1"), switch_live),
            t(
                "hostile_daemon",
                Some("parents=1 engines=2"),
                faults::hostile_daemon,
            ),
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

/// Set the longest watchdog (60 s) on `p`, for a test that judges the bytes an executor
/// writes, not time: the executor's time is engine time (docs/executor.md), and a
/// daemon that a loaded host stalls, or lavapipe in the TCG guest, can take longer than
/// the default 2 s between FENCEs.
pub(super) fn judge_bytes(p: &Parent) -> Result<(), Fail> {
    p.set_watchdog_ms("60000").ctx("watchdog_ms")
}

fn switch_live(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    external(&p)?;
    // a GEMM handed to a daemon stalled by a loaded host tripped the default watchdog
    // (on the debug kernel next to a CPU hog)
    judge_bytes(&p)?;
    let xd = daemon::Daemon::start(0)?;
    let inst = ctx.create(&p, TYPE)?;
    let mut g = open(&inst)?;
    let (gm, want) = big_gemm(&g)?;
    // the second GEMM writes a C of its own (right after the first's), so one run on
    // the other side cannot overwrite (and hide) the first's bytes
    let gm2 = Gemm {
        c: gm.c + 4 * want.len() as u64,
        ..gm
    };
    let mut flips = 0;
    for round in 0..12 {
        for c in [gm.c, gm2.c] {
            g.write_words(c, &vec![0xffff_ffff; want.len()])?;
        }
        let seq = g
            .eng
            .submit_fenced(&[gm.cmd(), gm2.cmd()], false)
            .ctx("submit")?;
        // flip the knob while the GEMMs run
        let mode = if round % 2 == 0 { "cpu" } else { "external" };
        p.set_executor(mode).ctx("flip")?;
        flips += 1;
        g.eng.wait_fence(seq, FENCE_TIMEOUT).ctx("fence")?;
        for (i, c) in [gm.c, gm2.c].into_iter().enumerate() {
            ensure!(
                g.read_words(c, want.len())? == want,
                "round {round}: C of GEMM {i} differs after switching to {mode}"
            );
        }
    }
    ensure_eq!(g.eng.error()?, 0, "ERROR");
    let pieces = xd.stop()?;
    ensure!(pieces > 0, "no piece ran on the daemon");
    ctx.note(format!(
        "{flips} switches with GEMMs in flight, {pieces} pieces on the daemon"
    ));
    Ok(())
}
