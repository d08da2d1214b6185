//! `vgpu-executor-bench`: GEMM throughput (multiply-adds per second) of the Vulkan
//! executor vs the reference CPU implementation, and the per-command overhead of a
//! submission and of a dispatch. Wall-clock figures for docs/executor.md; nothing is
//! judged here.
//!
//! Also the handoff cost of a piece through the daemon's loop (`--serve`'s code, with
//! an in-process fake kernel: queue handling, mapping lookup, submission, completion;
//! not the kernel's own poll wake-up and ioctl).
//!
//!   vgpu-executor-bench [--device SEL] [--quick] [--sizes 128,256,512] [--pieces-only]

use std::process::ExitCode;
use std::time::Instant;

use vgpu_engine_abi::exec::{Sqe, SqeKind};
use vgpu_engine_abi::reference;
use vgpu_engine_abi::{Cmd, RawCmd};
use vgpu_executor::daemon::fake::fake;
use vgpu_executor::daemon::Daemon;
use vgpu_executor::{logger, DeviceSelector, Executor, Vram};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds per call of `f`, median of `reps`.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn run(ex: &Executor, vram: &mut Vram<'_>, cmds: &[RawCmd]) {
    if let Err(e) = ex.execute(vram, cmds, None) {
        eprintln!("execute: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    logger::init();
    let mut sel = DeviceSelector::Default;
    let mut sizes = vec![128u64, 256, 512];
    let mut reps = 3;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.clone().next()) {
            ("--device", Some(v)) => {
                sel = DeviceSelector::parse(v);
                it.next();
            }
            ("--sizes", Some(v)) => {
                sizes = v.split(',').filter_map(|s| s.parse().ok()).collect();
                it.next();
            }
            ("--quick", _) => {
                sizes = vec![64, 128];
                reps = 1;
            }
            ("--pieces-only", _) => sizes.clear(),
            _ => {
                eprintln!(
                    "usage: vgpu-executor-bench [--device SEL] [--quick] [--sizes 128,256,512] \
                     [--pieces-only]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let ex = match Executor::new(&sel) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let max = sizes.iter().copied().max().unwrap_or(128).max(64);
    let vram_len = ((3 * max * max * 4) as usize)
        .next_multiple_of(4096)
        .max(1 << 20);
    let mut vram = match ex.alloc_vram(vram_len) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut x = 1u32;
    for w in vram.bytes_mut().chunks_exact_mut(4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        w.copy_from_slice(&x.to_le_bytes());
    }
    println!("device: {} ({})", ex.info().name, ex.info().kind_name());
    if sizes.is_empty() {
        return pieces(&ex, reps);
    }
    println!(
        "{:>6} {:>14} {:>14} {:>8}",
        "n", "vulkan MAC/s", "cpu MAC/s", "time ratio vulkan/cpu"
    );
    for &n in &sizes {
        let (a, b, c) = (0, 4 * n * n, 8 * n * n);
        let cmd = Cmd::Gemm {
            a,
            b,
            c,
            m: n,
            n,
            k: n,
        }
        .raw();
        run(&ex, &mut vram, &[cmd]); // warm-up (pipeline compilation)
        let g = time(reps, || run(&ex, &mut vram, &[cmd]));
        let words: Vec<u32> = vram.bytes()[..(8 * n * n) as usize]
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (nn, sz) = (n as usize, (n * n) as usize);
        let c_cpu = time(reps, || {
            std::hint::black_box(reference::gemm(
                &words[..sz],
                &words[sz..2 * sz],
                nn,
                nn,
                nn,
            ));
        });
        let macs = (n * n * n) as f64;
        println!(
            "{n:>6} {:>14.3e} {:>14.3e} {:>22.2}",
            macs / g,
            macs / c_cpu,
            g / c_cpu
        );
    }
    // Per-command overhead.
    let fill = Cmd::Fill {
        dst: 0,
        len: 64,
        value: 1,
    }
    .raw();
    let nop = Cmd::Nop.raw();
    let single = 200;
    let batch = 2000;
    let before = ex.counters();
    let t_submit = time(reps, || {
        for _ in 0..single {
            run(&ex, &mut vram, &[fill]);
        }
    }) / single as f64;
    let fills = vec![fill; batch];
    let t_dispatch = time(reps, || run(&ex, &mut vram, &fills)) / batch as f64;
    let nops = vec![nop; batch];
    let t_nop = time(reps, || run(&ex, &mut vram, &nops)) / batch as f64;
    let after = ex.counters();
    println!(
        "one 64-byte FILL per submission:      {:8.1} us per command",
        t_submit * 1e6
    );
    println!(
        "{batch} 64-byte FILLs in one submission: {:8.1} us per command (per dispatch)",
        t_dispatch * 1e6
    );
    println!(
        "{batch} NOPs in one submission:          {:8.3} us per command (no dispatch)",
        t_nop * 1e6
    );
    println!(
        "counters: {} commands, {} dispatches, {} submissions",
        after.commands - before.commands,
        after.dispatches - before.dispatches,
        after.submits - before.submits
    );
    pieces(&ex, reps)
}

/// Per-piece cost through the daemon loop (fake kernel), one 64-byte FILL piece per
/// entry, with 1, 8 and 64 pieces per GPU submission.
fn pieces(ex: &Executor, reps: usize) -> ExitCode {
    let per_round = 64u64;
    let rounds = 4u64;
    for batch in [1usize, 8, 64] {
        let Ok((k, h)) = fake(0) else {
            eprintln!("fake kernel: memfd");
            return ExitCode::FAILURE;
        };
        if h.add_vram(1, 1 << 20).is_err() {
            eprintln!("fake kernel: VRAM");
            return ExitCode::FAILURE;
        }
        let mut d = Daemon::new(ex, k, batch);
        let fill = Cmd::Fill {
            dst: 0,
            len: 64,
            value: 1,
        }
        .raw();
        let mut seq = 0;
        let mut round = || {
            for _ in 0..per_round {
                seq += 1;
                h.submit(&Sqe {
                    seq,
                    kind: Some(SqeKind::Piece),
                    id: 1,
                    vram_size: 1 << 20,
                    start: 0,
                    count: 64,
                    state: 0,
                    mode: None,
                    cmd: fill,
                });
            }
            if d.run_once(&|| false).ok() != Some(per_round as u32)
                || h.take_completions().len() != per_round as usize
            {
                eprintln!("the daemon loop did not complete a round");
                std::process::exit(1);
            }
        };
        round(); // warm-up: maps and imports the VRAM
        let t = time(reps, || (0..rounds).for_each(|_| round())) / (rounds * per_round) as f64;
        println!(
            "64-byte FILL pieces through the daemon loop, {batch:>2} per submission: {:8.1} us per piece",
            t * 1e6
        );
    }
    ExitCode::SUCCESS
}
