//! The TAIL shadow and IRQ_EDGE (docs/engine-abi.md, "TAIL shadow"), in the engine
//! suite: a driver that stores TAIL in a VRAM word and rings DOORBELL submits without a
//! RING_TAIL write; in a VM that is a submission without an exit to the VMM.
//!
//! * `tail_shadow`: off by default and ignored while off (a driver that does not enable
//!   it sees no change); enabled, each DOORBELL takes the word as a RING_TAIL write;
//!   ENGINE_RESET keeps the registers, a device reset clears them; disabling goes back
//!   to RING_TAIL.
//! * `tail_shadow_bad`: a bad shadow address refuses ENABLE with BAD_RING; a bad
//!   shadow TAIL stops the ring exactly as the same value written to RING_TAIL does
//!   (ERROR, ERROR_HEAD, HEAD, TAIL compared side by side), nothing runs, and a reset
//!   brings the ring back.
//! * `tail_shadow_no_register_access`: with DOORBELL on an ioeventfd, the shadow, FENCE
//!   seqnos written to VRAM and FENCE interrupts edge-style, 40 fenced submissions
//!   complete, each with its MSI, with no register access at all (counted by the
//!   engine's device wrapper); the module's counters (jobs, latency_hist, IRQ_STATUS)
//!   say what ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vgpu_vfio::abi::engine as reg;
use vgpu_vfio::{Cmd, Device, DeviceAccess, Engine, ErrorCode, EventFd, EFD_NONBLOCK};

use crate::engine::{new_gpu, DATA, RING, T128};
use crate::harness::{Context, Ctx, Fail, TestResult};
use crate::util::*;
use crate::workload::*;
use crate::{ensure, ensure_eq};

/// Where the shadow TAIL word goes (VRAM offset, away from the ring and DATA).
const SHADOW: u64 = 2 * 1024 * 1024;
/// Where the FENCE seqno word goes.
const FENCE_WORD: u64 = SHADOW + 8;
/// Submissions in the loops.
const ROUNDS: u64 = 40;

/// The three registers, as read now.
fn shadow_regs(eng: &Engine) -> Result<[u32; 3], Fail> {
    Ok([
        eng.read_reg(reg::TAIL_SHADOW_LO).ctx("TAIL_SHADOW_LO")?,
        eng.read_reg(reg::TAIL_SHADOW_HI).ctx("TAIL_SHADOW_HI")?,
        eng.read_reg(reg::IRQ_EDGE).ctx("IRQ_EDGE")?,
    ])
}

/// Store `v` in the shadow word.
fn store_shadow(g: &Gpu, v: u32) -> TestResult {
    g.vram().write_u32(SHADOW, v).ctx("store the shadow word")
}

/// Off by default and ignored while off; on, each DOORBELL reads it; resets; off again.
pub fn tail_shadow(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    ensure_eq!(
        shadow_regs(&g.eng)?,
        [0, 0, 0],
        "TAIL_SHADOW_LO/HI, IRQ_EDGE at open"
    );

    // Off: a word in VRAM and a DOORBELL change nothing (TAIL stays, nothing runs).
    let jobs0 = g.inst.jobs().ctx("jobs")?;
    g.eng.push(&Cmd::Nop).ctx("push NOP")?;
    store_shadow(&g, g.eng.sw_tail() as u32)?;
    g.eng.write_reg(reg::DOORBELL, 1).ctx("DOORBELL")?;
    ensure_eq!(
        g.eng.tail_reg()?,
        0,
        "RING_TAIL after a DOORBELL with the shadow off"
    );
    std::thread::sleep(Duration::from_millis(50));
    ensure_attr(g.inst.jobs(), jobs0, "jobs with the shadow off")?;
    // The NOP goes through RING_TAIL as always.
    g.eng.kick().ctx("kick through RING_TAIL")?;
    let seq = g.eng.submit_fenced(&[], false).ctx("submit")?;
    g.eng
        .wait_fence(seq, FENCE_TIMEOUT)
        .ctx("fence, shadow off")?;

    // On: kicks store TAIL in the word; no RING_TAIL write, and RING_TAIL follows it.
    ensure!(
        g.eng
            .enable_tail_shadow(SHADOW)
            .ctx("enable the TAIL shadow")?,
        "the device has no TAIL shadow: TAIL_SHADOW_LO reads {:#x} after writing {:#x}",
        g.eng.read_reg(reg::TAIL_SHADOW_LO)?,
        SHADOW as u32 | reg::SHADOW_ENABLE
    );
    ensure_eq!(
        shadow_regs(&g.eng)?,
        [SHADOW as u32 | reg::SHADOW_ENABLE, 0, 0],
        "registers with the shadow on"
    );
    let jobs1 = g.inst.jobs().ctx("jobs")?;
    for i in 0..ROUNDS {
        let value = 0x5d00_0000 | i as u32;
        let seq = g
            .eng
            .submit_fenced(
                &[Cmd::Fill {
                    dst: DATA,
                    len: 4096,
                    value,
                }],
                false,
            )
            .ctx("submit through the shadow")?;
        g.eng
            .wait_fence(seq, FENCE_TIMEOUT)
            .ctx(format!("round {i}: fence {seq} through the shadow"))?;
        ensure_eq!(
            u64::from(g.eng.tail_reg()?),
            g.eng.sw_tail(),
            "round {i}: RING_TAIL after the doorbell"
        );
        let w = g.read_words(DATA, 1024)?;
        ensure!(
            w.iter().all(|&x| x == value),
            "round {i}: FILL not done: {:#x}",
            w[0]
        );
    }
    ensure_attr(g.inst.jobs(), jobs1 + 2 * ROUNDS, "jobs through the shadow")?;

    // HI is ignored while enabled.
    g.eng
        .write_reg(reg::TAIL_SHADOW_HI, 1)
        .ctx("TAIL_SHADOW_HI")?;
    ensure_eq!(
        shadow_regs(&g.eng)?[1],
        0,
        "TAIL_SHADOW_HI written while enabled"
    );

    // ENGINE_RESET keeps the registers (as RING_BASE); the ring comes back with them.
    g.eng.reset().ctx("ENGINE_RESET")?;
    ensure_eq!(
        shadow_regs(&g.eng)?,
        [SHADOW as u32 | reg::SHADOW_ENABLE, 0, 0],
        "registers after ENGINE_RESET"
    );
    g.eng
        .setup(RING, crate::engine::RING_SIZE)
        .ctx("re-enable")?;
    let seq = g.eng.submit_fenced(&[Cmd::Nop], false).ctx("submit")?;
    g.eng
        .wait_fence(seq, FENCE_TIMEOUT)
        .ctx("fence after ENGINE_RESET")?;

    // Off again: the word is ignored, RING_TAIL is the TAIL.
    g.eng.disable_tail_shadow().ctx("disable")?;
    store_shadow(&g, 0x40)?;
    let seq = g.eng.submit_fenced(&[Cmd::Nop], false).ctx("submit")?;
    g.eng
        .wait_fence(seq, FENCE_TIMEOUT)
        .ctx("fence with the shadow off again")?;
    ensure_eq!(g.eng.error()?, 0, "ERROR");

    // A device reset clears all three.
    g.eng.enable_tail_shadow(SHADOW).ctx("enable")?;
    ensure_eq!(
        g.eng.set_irq_edge(reg::IRQ_FENCE).ctx("IRQ_EDGE")?,
        true,
        "IRQ_EDGE taken"
    );
    g.dev().reset().ctx("VFIO_DEVICE_RESET")?;
    ensure_eq!(
        shadow_regs(&g.eng)?,
        [0, 0, 0],
        "registers after VFIO_DEVICE_RESET"
    );
    Ok(())
}

/// Stop state of the ring: (ERROR, ERROR_HEAD, HEAD, TAIL, STATUS.ERROR).
fn stop_state(eng: &Engine) -> Result<(u32, u32, u32, u32, bool), Fail> {
    let r = eng.regs().ctx("registers")?;
    Ok((
        r.error,
        r.error_head,
        r.head,
        r.tail,
        r.status & reg::STATUS_ERROR != 0,
    ))
}

/// Bad addresses refuse ENABLE; a bad shadow TAIL is a bad RING_TAIL write.
pub fn tail_shadow_bad(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    let size = g.vram_size;
    let bad_ring = ErrorCode::BadRing as u32;

    // Addresses: unaligned, past VRAM, the last word straddling the end, HI beyond.
    for (what, hi, lo) in [
        ("unaligned", 0u32, SHADOW as u32 | 2),
        ("at the end of VRAM", (size >> 32) as u32, size as u32),
        ("past the end", ((size + 4) >> 32) as u32, (size + 4) as u32),
        ("above 4 GiB", 1, 0),
    ] {
        g.eng.reset().ctx("ENGINE_RESET")?;
        g.eng.disable_tail_shadow().ctx("disable")?;
        g.eng.setup(RING, crate::engine::RING_SIZE).ctx("enable")?;
        g.eng.write_reg(reg::TAIL_SHADOW_HI, hi).ctx("HI")?;
        g.eng
            .write_reg(reg::TAIL_SHADOW_LO, lo | reg::SHADOW_ENABLE)
            .ctx("LO")?;
        let lo_now = g.eng.read_reg(reg::TAIL_SHADOW_LO)?;
        ensure_eq!(lo_now & reg::SHADOW_ENABLE, 0, "{what}: ENABLE stored");
        let (err, at, head, _, stopped) = stop_state(&g.eng)?;
        ensure!(
            stopped && err == bad_ring && at == head,
            "{what}: ring not stopped with BAD_RING at HEAD: ERROR {err} ERROR_HEAD {at:#x} HEAD {head:#x}"
        );
        g.eng.write_reg(reg::TAIL_SHADOW_HI, 0).ctx("HI")?;
    }

    // Shadow TAIL values, each next to the same value written to RING_TAIL.
    for (what, v) in [
        ("unaligned", 0x20u32),
        ("= RING_SIZE", crate::engine::RING_SIZE as u32),
        ("huge", 0xffff_ffc0),
        ("odd", 1),
    ] {
        let mut got = Vec::new();
        for via_shadow in [false, true] {
            g.eng.reset().ctx("ENGINE_RESET")?;
            g.eng.disable_tail_shadow().ctx("disable")?;
            g.eng.setup(RING, crate::engine::RING_SIZE).ctx("enable")?;
            // One valid command ahead: it must not run either.
            g.eng.push(&Cmd::Nop).ctx("push")?;
            let jobs0 = g.inst.jobs().ctx("jobs")?;
            if via_shadow {
                ensure!(
                    g.eng.enable_tail_shadow(SHADOW).ctx("enable the shadow")?,
                    "the device has no TAIL shadow"
                );
                store_shadow(&g, v)?;
                g.eng.write_reg(reg::DOORBELL, 1).ctx("DOORBELL")?;
            } else {
                g.eng.write_reg(reg::RING_TAIL, v).ctx("RING_TAIL")?;
                g.eng.write_reg(reg::DOORBELL, 1).ctx("DOORBELL")?;
            }
            let (err, at, head, tail, stopped) = stop_state(&g.eng)?;
            ensure!(
                stopped && err == bad_ring,
                "{what} {v:#x} via {}: ERROR {err}, STATUS.ERROR {stopped}, want BAD_RING",
                if via_shadow {
                    "the shadow"
                } else {
                    "RING_TAIL"
                }
            );
            std::thread::sleep(Duration::from_millis(20));
            ensure_attr(
                g.inst.jobs(),
                jobs0,
                &format!("{what}: jobs (nothing runs)"),
            )?;
            got.push((err, at, head, tail));
        }
        ensure_eq!(
            got[1],
            got[0],
            "{what} {v:#x}: (ERROR, ERROR_HEAD, HEAD, TAIL) shadow vs RING_TAIL"
        );
        // A later good doorbell does nothing while stopped; a reset brings it back.
        store_shadow(&g, 0x40)?;
        g.eng.write_reg(reg::DOORBELL, 1).ctx("DOORBELL")?;
        ensure_eq!(
            stop_state(&g.eng)?.0,
            bad_ring,
            "{what}: ERROR after a good shadow"
        );
    }
    g.eng.reset().ctx("ENGINE_RESET")?;
    g.eng.setup(RING, crate::engine::RING_SIZE).ctx("enable")?;
    store_shadow(&g, 0)?;
    let seq = g.eng.submit_fenced(&[Cmd::Nop], false).ctx("submit")?;
    g.eng
        .wait_fence(seq, FENCE_TIMEOUT)
        .ctx("fence after the reset")?;
    Ok(())
}

/// A [`DeviceAccess`] over the device that counts register accesses.
struct Counting {
    dev: Arc<Device>,
    n: AtomicU64,
}

impl DeviceAccess for Counting {
    fn read_reg(&self, off: u64) -> vgpu_vfio::Result<u32> {
        self.n.fetch_add(1, Ordering::Relaxed);
        self.dev.read_reg(off)
    }

    fn write_reg(&self, off: u64, v: u32) -> vgpu_vfio::Result<()> {
        self.n.fetch_add(1, Ordering::Relaxed);
        self.dev.write_reg(off, v)
    }

    fn wait_irq(&self, _timeout: Duration) -> vgpu_vfio::Result<u64> {
        Ok(0)
    }
}

/// Submissions and completions with no register access: shadow TAIL, ioeventfd
/// DOORBELL, FENCE seqno in VRAM, edge-style FENCE interrupt.
pub fn tail_shadow_no_register_access(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, T128)?;
    // 256 slots: the 80 commands fit without a HEAD read for space.
    let mut g = Gpu::open_ring(&inst, RING, 16 * 1024)?;
    g.msi(reg::IRQ_FENCE)?;
    let bell = EventFd::new(EFD_NONBLOCK).ctx("eventfd")?;
    g.eng
        .doorbell_ioeventfd(&bell)
        .ctx("register the doorbell")?;
    let cnt = Arc::new(Counting {
        dev: g.eng.device().clone(),
        n: AtomicU64::new(0),
    });
    let mut eng = Engine::new(cnt.clone(), g.eng.vram().clone()).ctx("engine")?;
    // The ring is enabled: these BASE/SIZE writes are ignored, the driver learns them.
    eng.configure(RING, 16 * 1024).ctx("configure")?;
    eng.sync_seq().ctx("seq")?;
    ensure!(
        eng.enable_tail_shadow(SHADOW)
            .ctx("enable the TAIL shadow")?,
        "the device has no TAIL shadow: TAIL_SHADOW_LO reads {:#x}",
        eng.read_reg(reg::TAIL_SHADOW_LO)?
    );
    eng.set_fence_write(Some(FENCE_WORD)).ctx("FENCE word")?;
    ensure!(
        eng.set_irq_edge(reg::IRQ_FENCE).ctx("IRQ_EDGE")?,
        "the device has no IRQ_EDGE"
    );
    let jobs0 = inst.jobs().ctx("jobs")?;
    let hist0 = inst.latency_hist().ctx("latency_hist")?.total();
    let before = cnt.n.load(Ordering::Relaxed);
    let mut irqs = 0;
    for i in 0..ROUNDS {
        let value = 0x5e00_0000 | i as u32;
        eng.push(&Cmd::Fill {
            dst: DATA,
            len: 4096,
            value,
        })
        .ctx("push FILL")?;
        let (fence, seq) = eng.next_fence(true, Some(FENCE_WORD));
        eng.push(&fence).ctx("push FENCE")?;
        eng.publish_tail().ctx("store TAIL")?;
        bell.write(1).ctx("ring the ioeventfd")?;
        ensure!(
            g.wait_irq(FENCE_TIMEOUT)?,
            "round {i}: no MSI for fence {seq} (FENCE word {:#x})",
            g.vram().read_u64(FENCE_WORD).unwrap_or(0)
        );
        irqs += 1;
        let f = g.vram().read_u64(FENCE_WORD).ctx("FENCE word")?;
        ensure_eq!(f, seq, "round {i}: FENCE word after its MSI");
        let w = g.read_words(DATA, 1024)?;
        ensure!(
            w.iter().all(|&x| x == value),
            "round {i}: FILL not done: {:#x}",
            w[0]
        );
    }
    let accesses = cnt.n.load(Ordering::Relaxed) - before;
    ensure_eq!(accesses, 0, "register accesses in {ROUNDS} submissions");
    ensure_eq!(irqs, ROUNDS, "MSIs");
    ensure_attr(inst.jobs(), jobs0 + 2 * ROUNDS, "jobs")?;
    let mut got = 0;
    let ok = wait_for(FENCE_TIMEOUT, || {
        got = inst.latency_hist().map(|h| h.total()).unwrap_or(0);
        got >= hist0 + ROUNDS
    });
    ensure!(ok, "latency_hist: {got} samples, want {}", hist0 + ROUNDS);
    // Edge-style: nothing latched, nothing to acknowledge.
    ensure_eq!(eng.irq_status().ctx("IRQ_STATUS")?, 0, "IRQ_STATUS");
    ensure!(!g.irq_fired(), "an extra MSI");
    ensure_eq!(eng.error().ctx("ERROR")?, 0, "ERROR");
    Ok(())
}
