//! `--saturate SECS`: keep the engine busy with GEMMs for SECS seconds (or until killed)
//! and report the work completed, for the multi-VM share test
//! (tests/rig/guest/vgpu-vmm-share): each batch of [`PER_FENCE`] GEMMs ends in a FENCE
//! (no IRQ: the ring, as large as the engine allows, is kept full; HEAD is looked at
//! every 25 ms once it is), and every `report` the
//! client prints `CLIENT-DONE <GEMMs completed>` from the FENCE register, the guest's
//! own count of its completed work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vgpu_vfio::{Cmd, DeviceAccess, Engine, MappedRegion};

/// GEMMs per FENCE.
pub const PER_FENCE: u64 = 8;
/// Side of the square GEMMs (the rig's saturating workload uses the same).
pub const SIDE: u64 = 48;
const RING_BASE: u64 = 0;
/// The largest ring (16,383 commands, tens of seconds of GEMMs in the rig): a guest
/// whose vCPU gets no CPU for a while (three VMs and the engine on L1's one vCPU) must
/// not run dry, or it stops being runnable and its share drops below its weight's.
const RING_SIZE: u64 = vgpu_vfio::abi::engine::RING_SIZE_MAX;
const A: u64 = 2 << 20;
const B: u64 = A + (64 << 10);
const C: u64 = B + (64 << 10);

/// Runs the saturating loop; returns the GEMMs completed.
pub fn run<A: DeviceAccess>(
    dev: Arc<A>,
    vram: Arc<MappedRegion>,
    secs: u64,
    report: Duration,
) -> Result<u64, String> {
    let e = |e: vgpu_vfio::Error| e.to_string();
    let mut eng = Engine::new(dev, vram.clone()).map_err(e)?;
    eng.reset().map_err(e)?;
    eng.setup(RING_BASE, RING_SIZE).map_err(e)?;
    eng.set_irq_mask(0).map_err(e)?;
    let words = (SIDE * SIDE) as usize;
    let a: Vec<u32> = (0..words as u32).collect();
    vram.write_u32_slice(A, &a).map_err(e)?;
    vram.write_u32_slice(B, &a).map_err(e)?;
    let gemm = Cmd::Gemm {
        a: A,
        b: B,
        c: C,
        m: SIDE,
        n: SIDE,
        k: SIDE,
    };
    let first = eng.next_seq();
    let done = |eng: &Engine<A>| -> Result<u64, String> {
        let f = eng.fence_value().map_err(e)?;
        Ok(f.saturating_sub(first - 1) * PER_FENCE)
    };
    println!("CLIENT-SATURATING {SIDE}x{SIDE}x{SIDE} GEMMs, {PER_FENCE} per fence");
    let start = Instant::now();
    let mut last = start;
    while start.elapsed() < Duration::from_secs(secs) {
        // Fill every free slot with whole batches and kick once; with the ring full,
        // look again in a while. Each look is one trapped read (HEAD) and each kick two
        // trapped writes: exits that take L1's CPU from the engine and the other VMs,
        // so they are kept few (Engine::submit's quick retries would poll).
        let batches = eng.free_slots().map_err(e)? / (PER_FENCE + 1);
        if batches == 0 {
            std::thread::sleep(Duration::from_millis(25));
        } else {
            for _ in 0..batches {
                for _ in 0..PER_FENCE {
                    eng.push(&gemm).map_err(e)?;
                }
                let (f, _) = eng.next_fence(false, None);
                eng.push(&f).map_err(e)?;
            }
            eng.kick().map_err(e)?;
            eng.check().map_err(e)?;
        }
        if last.elapsed() >= report {
            last = Instant::now();
            println!("CLIENT-DONE {}", done(&eng)?);
        }
    }
    let n = done(&eng)?;
    println!("CLIENT-DONE {n}");
    Ok(n)
}
