//! `--executor vulkan`: every load of the module puts every parent in `external` mode
//! served by the host's `vgpu-executor --serve` on lavapipe, run in the guest by
//! `vgpu-executor-chroot` (tests/rig/guest/; the rig needs `--hostfs` and a host build of
//! vgpu-executor). Each daemon is stopped (SIGTERM, exit status 0) before any unload; its
//! counters must show no refused and no failed piece.

use std::process::Command;

use crate::harness::{Fail, TestResult};

const SCRIPT: &str = "vgpu-executor-chroot";

fn run(args: &[&str]) -> Result<String, Fail> {
    let o = Command::new(SCRIPT)
        .args(args)
        .output()
        .map_err(|e| Fail(format!("{SCRIPT}: {e} (boot the rig with --hostfs)")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() {
        return Err(Fail(format!(
            "{SCRIPT} {}: {}\n{text}",
            args.join(" "),
            o.status
        )));
    }
    Ok(text)
}

/// Start the daemon for `parent` (returns once it serves).
pub fn start(parent: &str) -> TestResult {
    run(&["start", parent]).map(|_| ())
}

/// Stop the daemon for `parent`: a clean exit, no piece refused or failed.
pub fn stop(parent: &str) -> TestResult {
    let log = run(&["stop", parent])?;
    let m = std::fs::read_to_string(format!("/host/run/vgpu-executor-{parent}.prom"))
        .map_err(|e| Fail(format!("metrics of {parent}: {e}")))?;
    let count = |name: &str| {
        m.lines()
            .find(|l| l.starts_with(&format!("vgpu_executor_{name}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (refused, failed) = (count("refused_total"), count("failed_total"));
    if refused != Some(0) || failed != Some(0) {
        return Err(Fail(format!(
            "vgpu-executor for {parent}: refused {refused:?}, failed {failed:?}\n{log}"
        )));
    }
    let pieces: u64 = m
        .lines()
        .filter(|l| l.starts_with("vgpu_executor_pieces_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    println!("# vgpu-executor for {parent}: {pieces} pieces, none refused or failed");
    Ok(())
}
