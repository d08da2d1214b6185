//! `--executor vulkan`: every load of the module puts every parent in `external` mode
//! served by the host's `vgpu-executor --serve` on lavapipe, run in the guest by
//! `vgpu-executor-chroot` (tests/rig/guest/; the rig needs `--hostfs` and a host build of
//! vgpu-executor). Each daemon is stopped (SIGTERM, exit status 0) before any unload; its
//! counters must show no refused and no failed piece. On a host with vgpu_shim loaded
//! (a real GPU; `scripts/bench --executor external --on-host`), the environment's
//! `VGPU_EXECUTOR_HOST=1` makes the script run the tree's daemon directly.

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

/// Further arguments of every daemon started (`--device N`: `set_args`).
static ARGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Give every daemon started from now on these arguments (e.g. `--device 1`).
pub fn set_args(args: &[String]) {
    match ARGS.lock() {
        Ok(mut g) => *g = args.to_vec(),
        Err(e) => *e.into_inner() = args.to_vec(),
    }
}

/// Start the daemon for `parent` (returns once it serves).
pub fn start(parent: &str) -> TestResult {
    let extra = match ARGS.lock() {
        Ok(g) => g.clone(),
        Err(e) => e.into_inner().clone(),
    };
    let mut args = vec!["start", parent];
    args.extend(extra.iter().map(String::as_str));
    run(&args).map(|_| ())
}

/// SIGKILL the daemon for `parent` and wait for its exit (the fault tests).
pub fn kill(parent: &str) -> TestResult {
    run(&["kill", parent]).map(|_| ())
}

/// One daemon a test started itself (the `external` suite's `--daemon vulkan`): stopped
/// cleanly by [`Daemon::stop`], killed by [`Daemon::kill`], and killed when dropped
/// before either (a failed test), so the module can still be unloaded.
pub struct Daemon {
    parent: String,
    live: bool,
}

impl Daemon {
    /// Start `vgpu-executor --serve` for `parent`; returns once it serves.
    pub fn start(parent: &str) -> Result<Daemon, Fail> {
        start(parent)?;
        Ok(Daemon {
            parent: parent.to_string(),
            live: true,
        })
    }

    /// SIGKILL (kill -9), wait for the exit.
    pub fn kill(mut self) -> TestResult {
        self.live = false;
        kill(&self.parent)
    }

    /// SIGTERM: a clean exit, no piece refused or failed; the pieces it completed.
    pub fn stop(mut self) -> Result<u64, Fail> {
        self.live = false;
        stop(&self.parent)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.live {
            let _ = kill(&self.parent);
        }
    }
}

/// Stop the daemon for `parent`: a clean exit, no piece refused or failed; returns the
/// pieces it completed.
pub fn stop(parent: &str) -> Result<u64, Fail> {
    let log = run(&["stop", parent])?;
    let m = run(&["metrics", parent]).map_err(|e| Fail(format!("metrics of {parent}: {}", e.0)))?;
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
    Ok(pieces)
}
