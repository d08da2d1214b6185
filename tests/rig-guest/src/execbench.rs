//! `vgpu-rig-tests exec-bench [--rounds N] [--executor ref|vulkan] [--device SEL]`: the
//! external executor's cost next to the CPU executor's, measured in one run on two
//! parents (parent 0 `external`, served by the reference executor, or with `--executor
//! vulkan` by the host's `vgpu-executor --serve [--device SEL]` (crate::execvk); parent
//! 1 `cpu`): per-command cost of small commands (each one piece: the handoff's cost),
//! GEMM throughput, pieces per second. Figures, not a test: docs/benchmarks.md and
//! docs/executor.md quote them.

use std::time::Instant;

use vgpu_sysfs::handle::Parent;
use vgpu_vfio::Cmd;

use crate::execref::{Behaviour, RefExecutor};
use crate::harness::{clean_state, Context, Fail};
use crate::sys;
use crate::tools::{ToolError, ToolResult};
use crate::workload::{Gemm, Gpu, MIB};

struct Figures {
    small_us_wall: f64,
    small_us_engine: f64,
    gemm_macs_per_s: f64,
    pieces_per_s: f64,
}

fn measure(p: &Parent, rounds: u64) -> Result<Figures, Fail> {
    let inst = p.mdev_type("vgpu_shim-128M").create_new().ctx("create")?;
    let mut g = Gpu::open_ring(&inst, 0, 64 * 1024)?;
    // small commands: 64-byte FILLs, 50 per fence
    let fills: Vec<Cmd> = (0..50)
        .map(|i| Cmd::Fill {
            dst: MIB + i * 64,
            len: 64,
            value: i as u32,
        })
        .collect();
    g.run(&fills)?; // warm up (pages, piece sizes)
    let (b0, h0, t0) = (
        inst.busy_ns().ctx("busy_ns")?,
        p.executor_handoffs().ctx("handoffs")?,
        Instant::now(),
    );
    for _ in 0..rounds {
        g.run(&fills)?;
    }
    let n = (rounds * (fills.len() as u64 + 1)) as f64;
    let wall = t0.elapsed().as_secs_f64();
    let busy = (inst.busy_ns().ctx("busy_ns")? - b0) as f64;
    let small_pieces = p.executor_handoffs().ctx("handoffs")? - h0;
    // GEMM throughput, by engine time
    let gm = Gemm::square(2 * MIB, 128);
    g.write_words(gm.a, &vec![3; 128 * 128])?;
    g.write_words(gm.b, &vec![5; 128 * 128])?;
    g.run(&[gm.cmd()])?;
    let (b1, h1, t1) = (
        inst.busy_ns().ctx("busy_ns")?,
        p.executor_handoffs().ctx("handoffs")?,
        Instant::now(),
    );
    let reps = rounds.div_ceil(4).max(2);
    for _ in 0..reps {
        g.run(&[gm.cmd()])?;
    }
    let gbusy = (inst.busy_ns().ctx("busy_ns")? - b1) as f64;
    let gwall = t1.elapsed().as_secs_f64();
    let pieces = p.executor_handoffs().ctx("handoffs")? - h1 + small_pieces;
    drop(g);
    inst.remove().ctx("remove")?;
    Ok(Figures {
        small_us_wall: wall * 1e6 / n,
        small_us_engine: busy / 1e3 / n,
        gemm_macs_per_s: (reps * gm.macs()) as f64 / (gbusy / 1e9),
        pieces_per_s: pieces as f64 / (wall + gwall),
    })
}

/// The subcommand.
pub fn main(args: &[String]) -> ToolResult {
    let mut rounds = 40u64;
    let mut vulkan = false;
    let mut i = 0;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--executor", Some(v)) if v == "ref" => vulkan = false,
            ("--executor", Some(v)) if v == "vulkan" => vulkan = true,
            ("--device", Some(v)) => crate::execvk::set_args(&["--device".into(), v.clone()]),
            ("--rounds", Some(v)) => {
                rounds = v
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or_else(|| ToolError::Usage(format!("bad --rounds {v:?}")))?;
            }
            (other, _) => return Err(ToolError::Usage(format!("unknown argument {other:?}"))),
        }
        i += 2;
    }
    let fail = |e: Fail| ToolError::Failed(e.0);
    clean_state().map_err(fail)?;
    sys::load_module(&sys::ko_path(), "parents=2")
        .map_err(|e| ToolError::Failed(format!("load: {e}")))?;
    let r = (|| -> Result<(Figures, Figures), Fail> {
        let (pe, pc) = (Parent::vgpu(0), Parent::vgpu(1));
        pe.set_executor("external").ctx("executor")?;
        let ext = if vulkan {
            // lavapipe in a TCG guest: what is measured is time, not the watchdog
            for p in [&pe, &pc] {
                p.set_watchdog_ms("60000").ctx("watchdog_ms")?;
            }
            let xd = crate::execvk::Daemon::start(pe.name())?;
            let ext = measure(&pe, rounds)?;
            xd.stop()?;
            ext
        } else {
            let xd = RefExecutor::start(0, Behaviour::default()).ctx("reference executor")?;
            let ext = measure(&pe, rounds)?;
            xd.stop().ctx("reference executor")?;
            ext
        };
        let cpu = measure(&pc, rounds)?;
        Ok((ext, cpu))
    })();
    let c = clean_state();
    let (ext, cpu) = r.map_err(fail)?;
    c.map_err(fail)?;
    println!(
        "exec-bench: {rounds} rounds of 50 64-byte FILLs + FENCE, then 128^3 GEMMs; one run, two parents; external served by {}",
        if vulkan { "vgpu-executor" } else { "the reference executor" }
    );
    println!(
        "exec-bench: {:<40} {:>12} {:>12} {:>8}",
        "figure", "external", "cpu", "ratio"
    );
    for (what, e, c) in [
        (
            "small command, wall us/command",
            ext.small_us_wall,
            cpu.small_us_wall,
        ),
        (
            "small command, engine us/command",
            ext.small_us_engine,
            cpu.small_us_engine,
        ),
        (
            "GEMM MAC/s (engine time)",
            ext.gemm_macs_per_s,
            cpu.gemm_macs_per_s,
        ),
    ] {
        println!(
            "exec-bench: {what:<40} {e:>12.1} {c:>12.1} {:>8.2}",
            e / c.max(1e-9)
        );
    }
    println!(
        "exec-bench: pieces handed per second (external): {:.0}",
        ext.pieces_per_s
    );
    Ok(())
}
