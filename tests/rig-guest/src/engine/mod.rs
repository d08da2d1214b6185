//! The engine suite: commands, validation, isolation, reset, interrupts, preemption,
//! the watchdog and the time-slice scheduler (docs/engine-abi.md, docs/scheduler.md).
//!
//! Timing-dependent checks use the kernel's own accounting (busy_ns, slices, ...) with
//! tolerances sized for the TCG rig; run it with `--smp 2` so submitters have a CPU
//! next to the engine thread.

use crate::foundation::{bad_writes, COMMON_BAD};
use std::time::{Duration, Instant};

use vgpu_sysfs::handle::{Instance, Parent};
use vgpu_sysfs::{LatencyHist, Policy};
use vgpu_vfio::abi::engine as reg;
use vgpu_vfio::abi::{self, drm};
use vgpu_vfio::engine::error_name;
use vgpu_vfio::reference::{copy_in_place, fnv1a64_bytes, gemm, gemm_in_place};
use vgpu_vfio::{irq, Cmd, EngineRegs, ErrorCode, EventFd, RawCmd, EFD_NONBLOCK};

use crate::harness::{Context, Ctx, Fail, FailContext, Suite, Test, TestResult};
use crate::rng::Rng;
use crate::util::*;
use crate::workload::*;
use crate::{ensure, ensure_eq};

mod commands;
mod control;
mod metrics;
mod parents;
mod sched;
mod validation;

use commands::*;
use control::*;
use metrics::*;
use parents::*;
pub(crate) use sched::*;
use validation::*;

pub(crate) const T128: &str = "vgpu_shim-128M";
pub(crate) const RING: u64 = 0;
pub(crate) const RING_SIZE: u64 = 4096;
pub(crate) const DATA: u64 = MIB;
/// Ring of the saturated instances in scheduler tests.
const SAT_RING: u64 = 16 * KIB;
/// Target engine time of one saturating GEMM.
const SAT_GEMM: Duration = Duration::from_millis(3);
/// Windows [`check_rates`] measures at most before it judges a rate too low.
const RATE_ATTEMPTS: usize = 10;
/// Windows [`check_rates`] measures at least (the upper bound is judged over all).
const RATE_MIN: usize = 4;
/// Tolerance of share checks, percentage points (TCG).
pub(crate) const SHARE_TOL: f64 = 5.0;

/// The suite.
pub fn suite() -> Suite {
    let t = |name, params, run| Test { name, params, run };
    Suite {
        name: "engine",
        about: "engine commands, validation, isolation, reset, IRQs, watchdog, scheduler",
        tests: vec![
            t("registers", Some(""), registers),
            t("nop_fence", Some(""), nop_fence),
            t("fill", Some(""), fill),
            t("copy", Some(""), copy),
            t("checksum", Some(""), checksum),
            t("gemm", Some(""), gemm_test),
            t("blit", Some(""), blit),
            t("jump_and_wrap", Some(""), jump_and_wrap),
            t("vram_alloc_by_engine", Some(""), vram_alloc_by_engine),
            t("validation_errors", Some(""), validation_errors),
            t("blit_errors", Some(""), blit_errors),
            t("ring_config_errors", Some(""), ring_config_errors),
            t("engine_reset", Some(""), engine_reset),
            t("vfio_reset", Some(""), vfio_reset),
            t("irqs", Some(""), irqs),
            t("preemption", Some(""), preemption),
            t("watchdog_loop", Some(""), watchdog_loop),
            t("watchdog_giant_job", Some(""), watchdog_giant_job),
            t("watchdog_fences_keep_alive", Some(""), watchdog_keep_alive),
            t("share_best_effort", Some(""), share_best_effort),
            t("share_equal_share", Some(""), share_equal_share),
            t("share_fixed_share", Some(""), share_fixed_share),
            t("cap_alone", Some(""), cap_alone),
            t("cap_with_neighbour", Some(""), cap_with_neighbour),
            t("cap_lift_fairness", Some(""), cap_lift_fairness),
            t("live_changes", Some(""), live_changes),
            t("slice_us_live", Some(""), slice_us_live),
            t("sched_sysfs_bad_input", Some(""), sched_sysfs_bad_input),
            t("accounting", Some(""), accounting),
            t("macs", Some(""), macs),
            t("latency_hist", Some(""), latency_hist),
            t("latency_hist_dropped", Some(""), latency_hist_dropped),
            t("latency_hist_sysfs", Some(""), latency_hist_sysfs),
            t("two_engines", Some("engines=2"), two_engines),
            t("ioeventfd_doorbell", Some(""), crate::ioeventfd::doorbell),
            t("ioeventfd_bad_input", Some(""), crate::ioeventfd::bad_input),
            t(
                "ioeventfd_close_releases",
                Some(""),
                crate::ioeventfd::close_releases,
            ),
            t("tail_shadow", Some(""), crate::shadow::tail_shadow),
            t("tail_shadow_bad", Some(""), crate::shadow::tail_shadow_bad),
            t(
                "tail_shadow_no_register_access",
                Some(""),
                crate::shadow::tail_shadow_no_register_access,
            ),
            t("multi_parent", Some("parents=2"), multi_parent),
            t("remove_busy", Some(""), remove_busy),
        ],
    }
}

// ---- helpers ------------------------------------------------------------------------

pub(crate) fn new_gpu(ctx: &Ctx, p: &Parent) -> Result<Gpu, Fail> {
    let inst = ctx.create(p, T128)?;
    Gpu::open_ring(&inst, RING, RING_SIZE)
}

fn names(codes: &[ErrorCode]) -> String {
    codes
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(" or ")
}

fn ensure_code(got: u32, want: &[ErrorCode], what: &str) -> TestResult {
    ensure!(
        want.iter().any(|c| *c as u32 == got),
        "{what}: ERROR = {got} ({}), want {}",
        error_name(got),
        names(want)
    );
    Ok(())
}

fn drain_irq(g: &Gpu) {
    while g.irq_fired() {}
}

fn within(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol
}

/// Bytes `[lo, hi)` hold `pattern(seed)` except where `apply` changed the expectation.
fn check_span(
    g: &mut Gpu,
    lo: u64,
    hi: u64,
    seed: u64,
    cmds: &[Cmd],
    apply: impl FnOnce(&mut [u8]),
    what: &str,
) -> TestResult {
    g.vram()
        .fill_u64(lo, hi - lo, |o| pattern(seed, o))
        .ctx("fill span")?;
    let mut want = pattern_bytes(seed, lo, (hi - lo) as usize);
    apply(&mut want);
    g.run(cmds).fctx(what)?;
    let got = g.read_bytes(lo, (hi - lo) as usize)?;
    ensure_bytes(&got, &want, what)
}

fn ok_status(g: &Gpu, what: &str) -> TestResult {
    let st = g.eng.status().ctx("STATUS")?;
    ensure!(
        st & (reg::STATUS_ERROR | reg::STATUS_HUNG) == 0 && st & reg::STATUS_ENABLED != 0,
        "{what}: STATUS {st:#x} (ERROR {} {})",
        g.eng.error().unwrap_or(0),
        error_name(g.eng.error().unwrap_or(0))
    );
    Ok(())
}
