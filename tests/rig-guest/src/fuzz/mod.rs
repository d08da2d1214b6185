//! `vgpu-rig-tests fuzz [--commands N] [--seed S] [--fuzzed K] [--canaries C]
//!  [--executor ref|vulkan] [--watchdog-ms MS]`
//!
//! K instances get random and mutated commands (valid templates with flipped bits and
//! boundary values, random opcodes, random 64-byte blobs, random JUMPs and TAILs, random
//! ring configurations) while C other instances hold canary patterns and keep running
//! checked valid work. A model of each fuzzed ring (a shadow of its contents and the
//! reference validator) predicts, batch by batch, where the engine must stop and with
//! which ERROR codes, how many commands complete and the final FENCE; every batch is
//! compared with the device. At the end the canaries are checked, every fuzzed
//! instance is recovered by a reset and must run a known-good command list correctly.
//!
//! The watchdog limits engine time, and a valid batch can reach it on a slow host (most
//! of all with an external executor, whose time is engine time): a WATCHDOG stop where
//! none was predicted passes only if the kernel charged the instance at least
//! watchdog_ms of engine time (`busy_ns`) since its ring was last reset or enabled, and
//! is counted as a late WATCHDOG. `--watchdog-ms 10` makes them common (a check of that
//! judgement).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vgpu_sysfs::handle::Parent;
use vgpu_vfio::abi::engine as reg;
use vgpu_vfio::engine::error_name;
use vgpu_vfio::reference::{
    fnv1a64_bytes, gemm, overlaps, validate, work, writes, CodeSet, Limits,
};
use vgpu_vfio::{Cmd, ErrorCode, RawCmd};

use crate::harness::{clean_state, Context, Fail};
use crate::rng::Rng;
use crate::tools::{num, ToolError, ToolResult};
use crate::workload::*;
use crate::{ensure, ensure_eq, sys};

mod gen;
mod model;
#[cfg(test)]
mod tests;

use model::*;

const T128: &str = "vgpu_shim-128M";
/// Low zone of fuzzed VRAM where templates put data (and rings).
const ZONE_A: u64 = 16 * MIB;
/// High zone: the last MiB of VRAM.
const ZONE_B: u64 = MIB;
/// Work limit of a valid generated command (reference::work units).
const WORK_MAX: u64 = 256 * KIB;
/// Work between fences (stale ring contents) above which the model gives up predicting.
const HEAVY: u64 = 8 * MIB;
/// watchdog_ms of the fuzzed parent.
const WATCHDOG_MS: u64 = 500;
/// watchdog_ms with `--executor vulkan`: lavapipe in the rig's TCG guest runs one valid
/// command's pieces (up to WORK_MAX) for more than 500 ms of engine time at times (a
/// run with 500 stopped 14 rings and both canaries with WATCHDOG where none was due).
const WATCHDOG_MS_VULKAN: u64 = 5000;
/// watchdog_ms with `--executor ref`: every piece's handoff (the reference executor, a
/// process of the TCG guest) is engine time, and a canary's round (a 1 MiB CHECKSUM and
/// a FILL, ~30 pieces) met 500 ms when the host was loaded even with the pieces sized
/// right (CI-like run, 2026-12-03: one canary of two, at round 269).
const WATCHDOG_MS_REF: u64 = 2000;

/// `--watchdog-ms`, when given (0: not given).
static WATCHDOG_ARG: AtomicU64 = AtomicU64::new(0);

/// The fuzzed parent's watchdog_ms.
fn watchdog_ms() -> u64 {
    match WATCHDOG_ARG.load(Ordering::Relaxed) {
        0 => default_watchdog_ms(),
        arg => arg,
    }
}

/// watchdog_ms without `--watchdog-ms`.
fn default_watchdog_ms() -> u64 {
    if crate::harness::vulkan_executor() {
        WATCHDOG_MS_VULKAN
    } else if crate::harness::ref_executor() {
        WATCHDOG_MS_REF
    } else {
        WATCHDOG_MS
    }
}
/// How many mismatch descriptions are kept per fuzzer.
const KEEP_MISMATCHES: usize = 20;
/// Give up on a fuzzer after this many mismatches.
const MAX_MISMATCHES: u64 = 1000;

struct Args {
    commands: u64,
    seed: u64,
    fuzzed: usize,
    canaries: usize,
}

fn parse(args: &[String]) -> Result<Args, ToolError> {
    let mut a = Args {
        commands: 1_000_000,
        seed: 1,
        fuzzed: 3,
        canaries: 2,
    };
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--commands" => a.commands = num("--commands", args.get(i + 1))?,
            "--seed" => a.seed = num("--seed", args.get(i + 1))?,
            "--fuzzed" => a.fuzzed = num("--fuzzed", args.get(i + 1))?,
            "--canaries" => a.canaries = num("--canaries", args.get(i + 1))?,
            "--watchdog-ms" => {
                let ms: u64 = num("--watchdog-ms", args.get(i + 1))?;
                if !(10..=60000).contains(&ms) {
                    return Err(ToolError::Usage("--watchdog-ms: 10-60000".into()));
                }
                WATCHDOG_ARG.store(ms, Ordering::Relaxed);
            }
            "--executor" if args.get(i + 1).map(String::as_str) == Some("ref") => {
                crate::harness::use_ref_executor()
            }
            "--executor" if args.get(i + 1).map(String::as_str) == Some("vulkan") => {
                crate::harness::use_vulkan_executor()
            }
            other => return Err(ToolError::Usage(format!("unknown argument {other:?}"))),
        }
        i += 2;
    }
    if a.fuzzed == 0 || a.fuzzed > 4 || a.canaries > 3 {
        return Err(ToolError::Usage(
            "1-4 fuzzed instances, 0-3 canaries".into(),
        ));
    }
    Ok(a)
}

/// Counts of one fuzzer (summed at the end).
#[derive(Clone, Debug, Default)]
struct Stats {
    submitted: u64,
    executed: u64,
    loop_executed: u64,
    /// Batches whose exact outcome was predicted and matched: ran to TAIL, stopped.
    matched_idle: u64,
    matched_stop: u64,
    rejected: u64,
    batches: u64,
    by_code: [u64; 10],
    ambiguous_run: u64,
    ambiguous_rejected: u64,
    unpredictable: u64,
    loops_watchdog: u64,
    loops_fenced: u64,
    /// WATCHDOG stops where none was predicted, explained by the engine time the kernel
    /// charged (see `Fuzzer::late_watchdog`), and the least such time seen (ns).
    late_watchdogs: u64,
    late_min_ns: Option<u64>,
    bad_ring_configs: u64,
    good_ring_configs: u64,
    bad_tails: u64,
    random_tails: u64,
    engine_resets: u64,
    vfio_resets: u64,
    ring_errors: u64,
    /// Rings reset while still running: each may have stopped (WATCHDOG) between the
    /// register read and the reset, a stop the kernel counts and the fuzzer did not see.
    reset_running: u64,
    mismatches: u64,
    notes: Vec<String>,
    device_done: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.submitted += o.submitted;
        self.executed += o.executed;
        self.loop_executed += o.loop_executed;
        self.matched_idle += o.matched_idle;
        self.matched_stop += o.matched_stop;
        self.rejected += o.rejected;
        self.batches += o.batches;
        for (a, b) in self.by_code.iter_mut().zip(o.by_code) {
            *a += b;
        }
        self.ambiguous_run += o.ambiguous_run;
        self.ambiguous_rejected += o.ambiguous_rejected;
        self.unpredictable += o.unpredictable;
        self.loops_watchdog += o.loops_watchdog;
        self.loops_fenced += o.loops_fenced;
        self.late_min_ns = min_of(self.late_min_ns, o.late_min_ns);
        self.late_watchdogs += o.late_watchdogs;
        self.bad_ring_configs += o.bad_ring_configs;
        self.good_ring_configs += o.good_ring_configs;
        self.bad_tails += o.bad_tails;
        self.random_tails += o.random_tails;
        self.engine_resets += o.engine_resets;
        self.vfio_resets += o.vfio_resets;
        self.ring_errors += o.ring_errors;
        self.reset_running += o.reset_running;
        self.mismatches += o.mismatches;
        self.device_done += o.device_done;
    }
}

/// The lesser of two optional values (either may be absent).
fn min_of(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

struct Fuzzer {
    id: usize,
    g: Gpu,
    rng: Rng,
    vs: u64,
    base: u64,
    size: u64,
    shadow: Vec<RawCmd>,
    /// Device HEAD (= TAIL) at the start of the next batch.
    head: u64,
    /// CMDS_DONE and FENCE at the start of the next batch.
    done: u32,
    fence: u64,
    /// The instance's busy_ns when its ring was last reset or enabled: the watchdog's
    /// count (engine time since the last FENCE) was 0 then, so it is at most the engine
    /// time charged since.
    busy0: u64,
    st: Stats,
}

fn mism(st: &mut Stats, id: usize, msg: String) {
    st.mismatches += 1;
    if st.notes.len() < KEEP_MISMATCHES {
        st.notes.push(format!("fuzzer {id}: {msg}"));
    }
}

impl Fuzzer {
    /// Walk the shadow ring from `head` to `tail` as the engine must.
    fn walk(&self, head: u64, tail: u64) -> Prediction {
        walk_ring(&self.shadow, &self.limits(), self.base, head, tail)
    }

    fn write_slot(&mut self, off: u64, r: RawCmd) -> Result<(), Fail> {
        self.shadow[(off / 64) as usize] = r;
        self.g.eng.write_raw_at(off, &r).ctx("write ring")
    }

    fn resync(&mut self) -> Result<(), Fail> {
        for i in 0..self.slots() {
            self.shadow[i as usize] = self.g.eng.read_at(i * 64).ctx("read ring")?;
        }
        Ok(())
    }

    fn read_base(&mut self) -> Result<(), Fail> {
        self.done = self.g.eng.cmds_done().ctx("CMDS_DONE")?;
        self.fence = self.g.eng.fence_value().ctx("FENCE")?;
        self.head = 0;
        // After a register write that took the instance's lock: the engine's last
        // chunk (which holds that lock until it is charged) is in busy_ns.
        self.busy0 = self.g.inst.busy_ns().ctx("busy_ns")?;
        Ok(())
    }

    /// Reset the engine (ENGINE_RESET, sometimes VFIO reset) and enable the ring.
    fn recover(&mut self) -> Result<(), Fail> {
        if self.rng.chance(1, 50) {
            self.g.dev().reset().ctx("VFIO reset")?;
            self.g.msi(reg::IRQ_ALL)?;
            self.st.vfio_resets += 1;
        } else {
            self.g.eng.reset().ctx("ENGINE_RESET")?;
            self.st.engine_resets += 1;
        }
        self.g
            .eng
            .setup(self.base, self.size)
            .ctx(format!("re-enable ring {:#x}+{:#x}", self.base, self.size))?;
        self.read_base()
    }

    fn random_ring(&mut self) -> (u64, u64) {
        let size = if self.rng.chance(1, 20) {
            MIB
        } else {
            4096 << self.rng.below(5)
        };
        let base = if self.rng.chance(4, 5) {
            self.rng.below((ZONE_A - size) / 4096 + 1) * 4096
        } else {
            self.vs - size - self.rng.below((ZONE_B - size.min(ZONE_B)) / 4096 + 1) * 4096
        };
        (base, size)
    }

    fn bad_ring(&mut self) -> (u64, u64) {
        let vs = self.vs;
        match self.rng.below(8) {
            0 => (0, self.rng.below(4096) & !63),
            1 => (0, (4096 << self.rng.below(9)) + 64 * self.rng.range(1, 63)),
            2 => (0, (2 * MIB) << self.rng.below(8)),
            3 => (self.rng.range(1, 4095), 4096),
            4 => (vs + 4096 * self.rng.below(16), 4096),
            5 => (vs - 4096, 8192 << self.rng.below(4)),
            6 => ((self.rng.next_u64() | 1 << 32) & !4095, 4096),
            _ => (!4095, 4096),
        }
    }

    /// Try a bad ring configuration (must be BAD_RING), then enable a random good one.
    fn reconfigure(&mut self) -> Result<(), Fail> {
        let (b, s) = self.bad_ring();
        self.g.eng.reset().ctx("reset")?;
        self.g.eng.configure(b, s).ctx("configure")?;
        self.g.eng.enable().ctx("enable")?;
        let st = self.g.eng.status().ctx("STATUS")?;
        let code = self.g.eng.error().ctx("ERROR")?;
        self.st.bad_ring_configs += 1;
        self.st.ring_errors += 1;
        if st & reg::STATUS_ERROR == 0 || code != ErrorCode::BadRing as u32 {
            let id = self.id;
            mism(
                &mut self.st,
                id,
                format!(
                    "ring base {b:#x} size {s:#x}: STATUS {st:#x} ERROR {code} ({}), want BAD_RING",
                    error_name(code)
                ),
            );
        } else {
            self.st.by_code[ErrorCode::BadRing as usize] += 1;
        }
        let (b, s) = self.random_ring();
        self.g.eng.reset().ctx("reset")?;
        self.g
            .eng
            .setup(b, s)
            .ctx(format!("good ring {b:#x}+{s:#x}"))?;
        self.base = b;
        self.size = s;
        self.shadow = vec![RawCmd::default(); self.slots() as usize];
        self.resync()?;
        self.st.good_ring_configs += 1;
        self.st.engine_resets += 2;
        self.read_base()
    }

    /// A bad TAIL (unaligned or ≥ RING_SIZE) must stop the ring with BAD_RING.
    fn bad_tail(&mut self) -> Result<(), Fail> {
        let t = if self.rng.chance(1, 2) {
            (self.rng.below(self.size) | 1 << self.rng.below(6)) as u32
        } else {
            (self.size + 64 * self.rng.below(1 << 20)) as u32
        };
        if t % 64 == 0 && u64::from(t) < self.size {
            return Ok(());
        }
        self.g.eng.write_reg(reg::RING_TAIL, t).ctx("TAIL")?;
        self.g.eng.write_reg(reg::DOORBELL, 1).ctx("DOORBELL")?;
        self.st.bad_tails += 1;
        self.st.ring_errors += 1;
        let r = self.g.eng.wait_stopped(Duration::from_secs(5));
        match r {
            Ok((code, _, _)) if code == ErrorCode::BadRing as u32 => {
                self.st.by_code[ErrorCode::BadRing as usize] += 1;
            }
            Ok((code, _, _)) => {
                let id = self.id;
                mism(
                    &mut self.st,
                    id,
                    format!(
                        "TAIL {t:#x}: ERROR {code} ({}), want BAD_RING",
                        error_name(code)
                    ),
                );
            }
            Err(e) => {
                let id = self.id;
                mism(&mut self.st, id, format!("TAIL {t:#x}: {e}"));
            }
        }
        self.recover()
    }

    /// Wait until the ring stops or runs idle with HEAD at `tail`; None on timeout.
    fn wait_batch(&self, tail: u64, limit: Duration) -> Result<Option<u32>, Fail> {
        let start = Instant::now();
        let efd = self.g.efd.as_ref();
        loop {
            let st = self.g.eng.status().ctx("STATUS")?;
            if st & reg::STATUS_ERROR != 0 {
                return Ok(Some(st));
            }
            if st & reg::STATUS_BUSY == 0 {
                let h = u64::from(self.g.eng.read_reg(reg::RING_HEAD).ctx("HEAD")?);
                if h == tail {
                    return Ok(Some(st));
                }
            }
            if start.elapsed() > limit {
                return Ok(None);
            }
            match efd {
                Some(e) => {
                    vgpu_vfio::engine::wait_eventfd(e, Duration::from_millis(5)).ctx("eventfd")?;
                }
                None => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    /// One batch: random commands (at most one deliberate fault), maybe JUMPs, a final
    /// FENCE with IRQ; predict, run, compare.
    fn batch(&mut self) -> Result<(), Fail> {
        let slots = self.slots();
        let k = self.rng.range(2, 64.min(slots - 1));
        let t0 = self.head;
        let size = self.size;
        let pos = move |i: u64| (t0 + 64 * i) % size;
        // At most one deliberate fault, mostly late in the batch so most commands run.
        let fault = if self.rng.chance(1, 2) {
            Some(self.rng.range((k - 1) / 2, k - 2))
        } else {
            None
        };
        let selfmod = if self.rng.chance(1, 100) {
            Some(self.rng.below(k - 1))
        } else {
            None
        };
        let mut random_jumps = Vec::new();
        let mut since_fence = 0;
        for i in 0..k - 1 {
            let r = if Some(i) == fault {
                self.fuzzed()
            } else if Some(i) == selfmod {
                // Rewrite a ring slot (maybe one still to run).
                Cmd::Fill {
                    dst: self.base + self.rng.below(self.slots()) * 64,
                    len: 64,
                    value: self.rng.next_u32() & 0xff,
                }
                .raw()
            } else if fault.is_some_and(|f| i > f) && self.rng.chance(1, 2) {
                // Never reached, unless a JUMP skips the fault or lands here later.
                self.fuzzed()
            } else if self.rng.chance(1, 16) {
                self.jump(i, k, pos, &mut random_jumps)
            } else if since_fence >= 12 {
                Cmd::fence(self.rng.next_u64()).raw()
            } else {
                self.valid()
            };
            if r.opcode() == reg::OP_FENCE {
                since_fence = 0;
            } else {
                since_fence += 1;
            }
            self.write_slot(pos(i), r)?;
        }
        let last = Cmd::Fence {
            seqno: self.rng.next_u64(),
            addr: 0,
            irq: true,
            write: false,
        };
        self.write_slot(pos(k - 1), last.raw())?;
        let tail = pos(k);
        let mut pred = self.walk(t0, tail);
        if matches!(pred.outcome, Outcome::Loop { .. }) && self.rng.chance(49, 50) {
            for &i in &random_jumps {
                self.write_slot(pos(i), Cmd::Nop.raw())?;
            }
            pred = self.walk(t0, tail);
        }
        self.run_predicted(tail, k, pred)
    }

    /// A JUMP for slot `i`: mostly forward inside the batch, sometimes anywhere.
    fn jump(&mut self, i: u64, k: u64, pos: impl Fn(u64) -> u64, random: &mut Vec<u64>) -> RawCmd {
        if self.rng.chance(4, 5) {
            let j = self.rng.range(i + 1, k - 1);
            Cmd::Jump { target: pos(j) }.raw()
        } else {
            random.push(i);
            Cmd::Jump {
                target: self.rng.below(self.slots()) * 64,
            }
            .raw()
        }
    }

    /// A batch that only moves TAIL to a random valid offset (the engine runs whatever
    /// the ring holds there).
    fn random_tail(&mut self) -> Result<(), Fail> {
        let tail = self.rng.below(self.slots()) * 64;
        let pred = self.walk(self.head, tail);
        if matches!(pred.outcome, Outcome::Loop { .. }) {
            return Ok(());
        }
        self.st.random_tails += 1;
        self.run_predicted(tail, 0, pred)
    }

    fn run_predicted(&mut self, tail: u64, written: u64, pred: Prediction) -> Result<(), Fail> {
        let id = self.id;
        self.g.eng.ack_irq(reg::IRQ_ALL).ctx("ack")?;
        self.g.eng.set_sw_tail(tail);
        self.g.eng.kick().ctx("kick")?;
        self.st.submitted += written;
        self.st.batches += 1;
        let limit = match pred.outcome {
            // A loop with a FENCE runs for ever: long enough to see it is not stopped.
            Outcome::Loop { fenced: true } => Duration::from_millis(300),
            // May run for ever (or rewrite itself into a fenced loop): judged only for
            // sanity, so not waited for long.
            Outcome::Unpredictable => Duration::from_millis(4 * watchdog_ms()),
            // A loop without a FENCE ends when the watchdog fires, after watchdog_ms of
            // engine time; a loaded host stretches that in wall time (4 x watchdog_ms of
            // wall time was too short for a 10 ms watchdog), so only a hang guard here.
            _ => Duration::from_secs(20),
        };
        let st = self.wait_batch(tail, limit)?;
        let regs = self.g.eng.regs().ctx("registers")?;
        let delta = u64::from(regs.cmds_done.wrapping_sub(self.done));
        if st.is_none() {
            // Still running (a loop): stop it, then count what it completed meanwhile
            // (ENGINE_RESET keeps CMDS_DONE), so CMDS_DONE and jobs stay comparable.
            self.g.eng.reset().ctx("ENGINE_RESET")?;
            self.st.reset_running += 1;
            let done = self.g.eng.cmds_done().ctx("CMDS_DONE")?;
            self.st.device_done += u64::from(done.wrapping_sub(regs.cmds_done));
        }
        self.st.device_done += delta;
        let stopped = regs.status & reg::STATUS_ERROR != 0;
        if stopped {
            if (regs.error as usize) < self.st.by_code.len() {
                self.st.by_code[regs.error as usize] += 1;
            }
            self.st.rejected += 1;
        }
        if matches!(pred.outcome, Outcome::Loop { .. }) {
            self.st.loop_executed += delta;
        } else {
            self.st.executed += delta;
        }
        let fence_ok = |f: Option<u64>| f.is_none_or(|v| v == regs.fence);
        // Stopped at an ambiguous command on the path (on its first visit), with a code
        // the spec allows for it: the engine may reject those.
        let at_alt = stopped
            && pred.alts.iter().any(|a| {
                u64::from(regs.error_head) == a.head
                    && a.codes.contains(regs.error)
                    && a.executed == delta
            });
        let verdict: Result<(), String> = match (&pred.outcome, st) {
            (Outcome::Unpredictable, _) => {
                self.st.unpredictable += 1;
                let sane = !stopped
                    || ((1..=8).contains(&regs.error)
                        && u64::from(regs.error_head) < self.size
                        && regs.error_head % 64 == 0);
                if sane {
                    Ok(())
                } else {
                    Err("self-modifying or heavy batch left an insane state".into())
                }
            }
            (Outcome::Loop { .. }, _) if at_alt => {
                self.st.ambiguous_rejected += 1;
                Ok(())
            }
            (Outcome::Loop { fenced }, _) => {
                if *fenced {
                    self.st.loops_fenced += 1;
                    if stopped {
                        Err("a loop with a FENCE stopped".into())
                    } else {
                        Ok(())
                    }
                } else {
                    self.st.loops_watchdog += 1;
                    if stopped && regs.error == ErrorCode::Watchdog as u32 {
                        Ok(())
                    } else {
                        let busy = self.g.inst.busy_ns().unwrap_or(0);
                        Err(format!(
                            "a loop without a FENCE did not end in WATCHDOG ({} ms of engine time charged since the last reset)",
                            busy.saturating_sub(self.busy0) / 1_000_000
                        ))
                    }
                }
            }
            (_, None) => Err("timed out: the ring neither stopped nor reached TAIL".into()),
            (Outcome::Idle, Some(_)) => {
                if stopped {
                    if at_alt {
                        self.st.ambiguous_rejected += 1;
                        Ok(())
                    } else {
                        Err("stopped where no fault was predicted".into())
                    }
                } else if delta != pred.executed || u64::from(regs.head) != tail {
                    Err("ran, but the count or HEAD differs".into())
                } else if !fence_ok(pred.fence) {
                    Err("ran, but FENCE differs".into())
                } else {
                    self.st.ambiguous_run += pred.alts.len() as u64;
                    self.st.matched_idle += 1;
                    Ok(())
                }
            }
            (Outcome::Stop(p), Some(_)) => {
                if !stopped {
                    Err("ran past a command that must fail".into())
                } else if u64::from(regs.error_head) == p.head
                    && p.codes.contains(regs.error)
                    && delta == p.executed
                    && fence_ok(p.fence)
                {
                    self.st.ambiguous_run += pred.alts.len() as u64;
                    self.st.matched_stop += 1;
                    Ok(())
                } else if at_alt {
                    self.st.ambiguous_rejected += 1;
                    Ok(())
                } else {
                    Err(format!(
                        "stopped differently: want ERROR in {} at {:#x} after {} commands (FENCE {:?})",
                        p.codes.names(),
                        p.head,
                        p.executed,
                        p.fence
                    ))
                }
            }
        };
        // A WATCHDOG stop where none was predicted, before the predicted end or in a loop
        // with a FENCE: the watchdog limits engine time (docs/engine-abi.md), so on a slow
        // host valid work can reach it (the external executor's time is engine time). It
        // is judged after the recovery below, from the kernel's own counter: right only
        // if the instance was charged at least watchdog_ms of engine time since the
        // watchdog's count was last 0 (a reset or ring enable).
        let late = verdict.is_err()
            && stopped
            && regs.error == ErrorCode::Watchdog as u32
            && match &pred.outcome {
                Outcome::Idle => delta <= pred.executed,
                Outcome::Stop(p) => delta <= p.executed,
                // a FENCE in the cycle resets the count, but one lap can be long
                Outcome::Loop { fenced: true } => true,
                _ => false,
            };
        let mut late_msg = None;
        if let Err(m) = verdict {
            let d = format!(
                "batch at {:#x}..{tail:#x} (ring {:#x}+{:#x}): predicted {:?} executed {} fence {:?} alts {}; device STATUS {:#x} ERROR {} ({}) ERROR_HEAD {:#x} HEAD {:#x} done +{delta} FENCE {:#x}",
                self.head, self.base, self.size, pred.outcome, pred.executed, pred.fence,
                pred.alts.len(), regs.status, regs.error, error_name(regs.error),
                regs.error_head, regs.head, regs.fence
            );
            let alts: Vec<String> = pred
                .alts
                .iter()
                .map(|a| format!("{:#x}/{}", a.head, a.executed))
                .collect();
            let d = format!("{d}; alts at head/executed [{}]", alts.join(" "));
            let msg = if let Outcome::Stop(p) = &pred.outcome {
                let r = self.shadow[(p.head / 64) as usize];
                format!("{m}: {d}; command {r:x?}")
            } else {
                format!("{m}: {d}")
            };
            if late {
                late_msg = Some(msg);
            } else {
                mism(&mut self.st, id, msg);
            }
        }
        if matches!(pred.outcome, Outcome::Unpredictable) {
            self.resync()?;
        }
        if stopped || st.is_none() {
            let busy0 = self.busy0;
            self.recover()?;
            if let Some(msg) = late_msg {
                self.late_watchdog(msg, self.busy0.saturating_sub(busy0));
            }
        } else {
            self.head = tail;
            self.done = regs.cmds_done;
            self.fence = regs.fence;
        }
        Ok(())
    }

    /// Judge an unpredicted WATCHDOG stop (`msg` describes it) by `spent`, the engine time
    /// the kernel charged the instance since the watchdog's count was last 0.
    fn late_watchdog(&mut self, msg: String, spent: u64) {
        let limit = watchdog_ms() * 1_000_000;
        if spent < limit {
            let why = format!(
                "WATCHDOG after {} us of engine time since the last reset (watchdog_ms {})",
                spent / 1000,
                watchdog_ms()
            );
            mism(&mut self.st, self.id, format!("{why}: {msg}"));
            return;
        }
        self.st.late_min_ns = min_of(self.st.late_min_ns, Some(spent));
        self.st.late_watchdogs += 1;
    }

    fn run(&mut self, budget: u64, total: &AtomicU64, stop: &AtomicBool) -> Result<(), Fail> {
        let mut last = 0;
        while self.st.submitted < budget && !stop.load(Ordering::Relaxed) {
            if self.rng.chance(1, 400) {
                self.reconfigure()?;
            } else if self.rng.chance(1, 300) {
                self.bad_tail()?;
            } else if self.rng.chance(1, 100) {
                self.random_tail()?;
            } else {
                self.batch()?;
            }
            total.fetch_add(self.st.submitted - last, Ordering::Relaxed);
            last = self.st.submitted;
            if self.st.mismatches >= MAX_MISMATCHES {
                return Err(Fail(format!(
                    "fuzzer {}: {} mismatches, giving up",
                    self.id, self.st.mismatches
                )));
            }
        }
        Ok(())
    }
}

/// Known-good work on a recovered instance, checked against the reference.
fn known_good(g: &mut Gpu, seed: u64) -> Result<(), Fail> {
    let mut rng = Rng::new(seed);
    let base = 2 * MIB;
    // Fuzzed FENCEs left any seqno in FENCE: bring it down first.
    g.eng.submit(&[Cmd::fence(0)])?;
    g.eng.wait_idle(FENCE_TIMEOUT)?;
    g.eng.check()?;
    ensure_eq!(g.eng.fence_value()?, 0, "FENCE after FENCE 0");
    g.eng.set_next_seq(1);
    let a = rng.words(8 * 8);
    let b = rng.words(8 * 8);
    g.write_words(base, &a)?;
    g.write_words(base + 4096, &b)?;
    let cmds = [
        Cmd::Fill {
            dst: base + 8192,
            len: 4096,
            value: 0x600d_600d,
        },
        Cmd::Copy {
            dst: base + 12288 + 1,
            src: base,
            len: 255,
        },
        Cmd::Gemm {
            a: base,
            b: base + 4096,
            c: base + 16384,
            m: 8,
            n: 8,
            k: 8,
        },
        Cmd::Checksum {
            src: base + 16384,
            len: 256,
            dst: base + 20480,
        },
        Cmd::Fence {
            seqno: 0x600d,
            addr: base + 20488,
            irq: false,
            write: true,
        },
    ];
    g.run(&cmds)?;
    ensure_eq!(
        g.read_words(base + 8192, 1024)?,
        vec![0x600d_600d; 1024],
        "FILL"
    );
    let src = g.read_bytes(base, 255)?;
    ensure!(g.read_bytes(base + 12288 + 1, 255)? == src, "COPY");
    let c = gemm(&a, &b, 8, 8, 8).ok_or_else(|| Fail("gemm".into()))?;
    ensure!(g.read_words(base + 16384, 64)? == c, "GEMM");
    let cb: Vec<u8> = c.iter().flat_map(|w| w.to_le_bytes()).collect();
    ensure_eq!(
        g.vram().read_u64(base + 20480)?,
        fnv1a64_bytes(&cb).unwrap_or(0),
        "CHECKSUM"
    );
    ensure_eq!(g.vram().read_u64(base + 20488)?, 0x600d, "FENCE write");
    Ok(())
}

/// The subcommand.
pub fn main(args: &[String]) -> ToolResult {
    let a = parse(args)?;
    clean_state().map_err(|e| ToolError::Failed(format!("clean state: {}", e.0)))?;
    crate::harness::load(&sys::ko_path(), "")
        .map_err(|e| ToolError::Failed(format!("load vgpu_shim: {}", e.0)))?;
    let r = run(&a);
    let c = clean_state();
    r?;
    c.map_err(|e| ToolError::Failed(format!("cleanup: {}", e.0)))?;
    Ok(())
}

fn run(a: &Args) -> Result<(), ToolError> {
    let p = Parent::vgpu(0);
    p.set_watchdog_ms(&watchdog_ms().to_string())
        .map_err(|e| ToolError::Failed(format!("watchdog_ms: {e}")))?;
    let t = p.mdev_type(T128);
    let mut canaries = Vec::new();
    for i in 0..a.canaries {
        let inst = t.create_new().ctx("create canary")?;
        canaries.push(Neighbour::start(Gpu::open(&inst)?, 0xc0 + i as u64)?);
    }
    let total = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    println!(
        "fuzz: seed {}, {} commands over {} fuzzed instances next to {} canaries, watchdog_ms {}",
        a.seed,
        a.commands,
        a.fuzzed,
        a.canaries,
        watchdog_ms()
    );
    let start = Instant::now();
    for id in 0..a.fuzzed {
        let inst = t.create_new().ctx("create fuzzed")?;
        let mut g = Gpu::open(&inst)?;
        g.msi(reg::IRQ_ALL)?;
        let vs = g.vram_size;
        let budget = a.commands / a.fuzzed as u64
            + if id == 0 {
                a.commands % a.fuzzed as u64
            } else {
                0
            };
        let (total, stop) = (total.clone(), stop.clone());
        let seed = a.seed.wrapping_mul(0x9E37_79B9).wrapping_add(id as u64);
        handles.push(std::thread::spawn(move || {
            let mut f = Fuzzer {
                id,
                g,
                rng: Rng::new(seed),
                vs,
                base: 0,
                size: 16 * KIB,
                shadow: vec![RawCmd::default(); 256],
                head: 0,
                done: 0,
                fence: 0,
                busy0: 0,
                st: Stats::default(),
            };
            let r =
                f.g.eng
                    .setup(f.base, f.size)
                    .ctx("ring")
                    .and_then(|_| f.resync())
                    .and_then(|_| f.read_base())
                    .and_then(|_| f.run(budget, &total, &stop));
            (f, r)
        }));
    }
    // Progress while they run.
    let mut next = Duration::from_secs(15);
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        if start.elapsed() >= next {
            next += Duration::from_secs(15);
            let n = total.load(Ordering::Relaxed);
            println!(
                "fuzz: {n} submitted after {:.0} s ({:.0}/s)",
                start.elapsed().as_secs_f64(),
                n as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = start.elapsed();
    let mut sum = Stats::default();
    let mut problems = Vec::new();
    let mut fuzzers = Vec::new();
    for h in handles {
        match h.join() {
            Ok((f, r)) => {
                if let Err(e) = r {
                    problems.push(e.0);
                }
                sum.add(&f.st);
                problems.extend(f.st.notes.iter().cloned());
                fuzzers.push(f);
            }
            Err(_) => problems.push("a fuzzer thread panicked".into()),
        }
    }
    // Counters agree with what the device reported.
    for f in &fuzzers {
        let jobs = f.g.inst.jobs().unwrap_or(u64::MAX);
        let failed = f.g.inst.cmds_failed().unwrap_or(u64::MAX);
        let rej = f.st.rejected;
        if jobs != f.st.device_done {
            problems.push(format!(
                "fuzzer {}: sysfs jobs {jobs} but CMDS_DONE grew by {}",
                f.id, f.st.device_done
            ));
        }
        if failed < rej || failed > rej + f.st.ring_errors + f.st.reset_running {
            problems.push(format!(
                "fuzzer {}: cmds_failed {failed}, {rej} rings stopped (and up to {} by ring config/TAIL, {} reset while running)",
                f.id, f.st.ring_errors, f.st.reset_running
            ));
        }
    }
    // Recovery and known-good work, under the default watchdog: a smaller `--watchdog-ms`
    // is for the fuzzed batches, and the known-good list can outlast 10 ms of engine time.
    if watchdog_ms() < default_watchdog_ms() {
        p.set_watchdog_ms(&default_watchdog_ms().to_string())
            .map_err(|e| ToolError::Failed(format!("watchdog_ms: {e}")))?;
    }
    let mut good = 0;
    for (i, f) in fuzzers.iter_mut().enumerate() {
        let r = (|| -> Result<(), Fail> {
            if i % 2 == 0 {
                f.g.eng.reset()?;
            } else {
                f.g.dev().reset()?;
            }
            f.g.eng.setup(0, 4096)?;
            known_good(&mut f.g, 0x900d + i as u64)
        })();
        match r {
            Ok(()) => good += 1,
            Err(e) => problems.push(format!("fuzzer {i}: known-good after reset: {}", e.0)),
        }
    }
    let mut rounds = 0;
    for (i, c) in canaries.into_iter().enumerate() {
        match c.finish() {
            Ok((_, rep)) => rounds += rep.rounds,
            Err(e) => problems.push(format!("canary {i}: {}", e.0)),
        }
    }
    drop(fuzzers);
    // Report.
    let secs = elapsed.as_secs_f64();
    println!(
        "fuzz: {} commands submitted in {secs:.1} s ({:.0}/s) in {} batches; predicted exactly: {} ran to TAIL, {} stopped at the predicted command with an allowed code",
        sum.submitted,
        sum.submitted as f64 / secs,
        sum.batches,
        sum.matched_idle,
        sum.matched_stop
    );
    println!(
        "fuzz: the engines completed {} commands (stale ring contents reached by JUMPs and TAILs included) and stopped {} rings; {} more completed inside endless loops",
        sum.executed, sum.rejected, sum.loop_executed
    );
    let codes: Vec<String> = ErrorCode::ALL[1..]
        .iter()
        .map(|c| format!("{} {}", c.name(), sum.by_code[*c as usize]))
        .collect();
    println!("fuzz: errors by code: {}", codes.join(", "));
    println!(
        "fuzz: ambiguous commands run {}, rejected {}; self-modifying batches {}; loops: {} ended by WATCHDOG, {} fenced (reset)",
        sum.ambiguous_run, sum.ambiguous_rejected, sum.unpredictable, sum.loops_watchdog, sum.loops_fenced
    );
    println!(
        "fuzz: ring configs {} bad, {} good; bad TAILs {}; random TAILs {}; resets: {} ENGINE_RESET, {} VFIO",
        sum.bad_ring_configs, sum.good_ring_configs, sum.bad_tails, sum.random_tails, sum.engine_resets, sum.vfio_resets
    );
    println!(
        "fuzz: canaries: {} checked rounds of valid work; known-good after reset: {good}/{}",
        rounds, a.fuzzed
    );
    println!(
        "fuzz: late WATCHDOGs (valid work stopped after watchdog_ms of charged engine time): {}{}",
        sum.late_watchdogs,
        sum.late_min_ns
            .map(|ns| format!(", the least after {} ms", ns / 1_000_000))
            .unwrap_or_default()
    );
    println!("fuzz: mismatches {}", sum.mismatches);
    if p.executor().is_ok_and(|m| m == "external") {
        println!(
            "fuzz: external executor: {} pieces handed, {} executor errors",
            p.executor_handoffs().unwrap_or(0),
            p.executor_errors().unwrap_or(0)
        );
    }
    for pb in &problems {
        println!("fuzz: PROBLEM: {pb}");
    }
    if problems.is_empty() && sum.mismatches == 0 {
        println!("fuzz: PASS");
        Ok(())
    } else {
        Err(ToolError::Failed(format!(
            "{} problems, {} mismatches",
            problems.len(),
            sum.mismatches
        )))
    }
}
