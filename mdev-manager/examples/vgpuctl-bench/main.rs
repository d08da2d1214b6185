//! The vgpuctl benchmark driver (a program, not a test: it prints figures). Runs in the
//! rig guest as root with vgpu_shim loaded as `parents=2 pool_mb=8192` and Debian's
//! mdevctl installed in the guest's root (tests/rig/guest/vgpuctl-bench sets that up;
//! scripts/bench-vgpuctl runs the whole thing):
//!
//!   vgpuctl-bench [--rounds N] [--trivial PATH] [--vgpuctl PATH] [--mdevctl PATH]
//!   vgpuctl-bench --time N CMD [ARGS...] [-- CMD [ARGS...]]...
//!
//!   vgpuctl-bench --syscalls UUID
//!
//! The second form times commands against each other (N runs each, interleaved) and
//! prints min, median and max: for profiling start-up variants in the rig. The third
//! times the ways of reading one attribute of instance UUID (a thousand of each).
//!
//! Every figure is wall time of whole processes (fork, exec, the work, exit), as a
//! provisioning script sees it. The tools run interleaved, round by round in a rotating
//! order, so a host whose speed drifts (the rig is QEMU TCG on a shared host) slows
//! them alike; figures are medians. Each batch is checked (64 instances running with
//! the asked weight and cap, 64 definitions) so a tool that did less work cannot look
//! fast.

use std::fmt::Write as _;
use std::fs;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const N: usize = 64;
const TYPE: &str = "vgpu_shim-128M";
const PARENTS: [&str; 2] = ["vgpu_shim0", "vgpu_shim1"];
const WEIGHT: &str = "2";
const CAP: &str = "50";
const DEFS: &str = "/etc/mdevctl.d";

mod probes;
mod samples;

use probes::{time_commands, time_syscalls};
use samples::Samples;

type Res<T> = Result<T, String>;

struct Tools {
    trivial: String,
    vgpuctl: String,
    mdevctl: String,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vgpuctl-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Res<()> {
    let mut rounds = 3usize;
    let mut tools = Tools {
        trivial: "/tmp/trivial".into(),
        vgpuctl: "vgpuctl".into(),
        mdevctl: "/usr/bin/mdevctl".into(),
    };
    let mut args = std::env::args().skip(1);
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.first().map(String::as_str) == Some("--time") {
        return time_commands(&all[1..]);
    }
    if all.first().map(String::as_str) == Some("--syscalls") {
        return time_syscalls(all.get(1).ok_or("--syscalls UUID")?);
    }
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => rounds = val()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--trivial" => tools.trivial = val()?,
            "--vgpuctl" => tools.vgpuctl = val()?,
            "--mdevctl" => tools.mdevctl = val()?,
            _ => {
                return Err(format!(
                    "unknown argument {a} (see the header of the source)"
                ))
            }
        }
    }
    for p in PARENTS {
        let free = read(&format!("/sys/class/mdev_bus/{p}/vgpu/pool_free_mb"))?;
        if free.parse::<u64>().unwrap_or(0) < 8192 {
            return Err(format!(
                "{p}: load vgpu_shim with parents=2 pool_mb=8192 (free {free})"
            ));
        }
    }
    fs::create_dir_all(format!("{DEFS}/scripts.d/callouts")).map_err(|e| e.to_string())?;
    fs::create_dir_all(format!("{DEFS}/scripts.d/notifiers")).map_err(|e| e.to_string())?;
    let json = format!(
        "{{\"mdev_type\": \"{TYPE}\", \"start\": \"manual\", \"attrs\": [{{\"vgpu/weight\": \
         \"{WEIGHT}\"}}, {{\"vgpu/cap\": \"{CAP}\"}}]}}"
    );
    fs::write("/tmp/bench-def.json", json).map_err(|e| e.to_string())?;
    fs::write("/tmp/bench-manifest.json", manifest()).map_err(|e| e.to_string())?;
    cleanup()?;

    let mut s = Samples::default();
    for round in 0..rounds {
        eprintln!("# round {} of {rounds}", round + 1);
        let order: Vec<usize> = (0..3).map(|k| (k + round) % 3).collect();
        for &k in &order {
            for _ in 0..10 {
                match k {
                    0 => s.add("exec", "trivial", time(&[&tools.trivial])?),
                    1 => s.add("version", "vgpuctl", time(&[&tools.vgpuctl, "--version"])?),
                    _ => s.add("version", "mdevctl", time(&[&tools.mdevctl, "--version"])?),
                }
            }
        }
        for &k in &order {
            single(&mut s, &tools, k)?;
        }
        // list with N running (made through sysfs, outside the timing)
        for i in 0..N {
            raw_create(&uuid(0xe, i), PARENTS[i % 2])?;
        }
        for &k in &order {
            for _ in 0..5 {
                match k {
                    0 => s.add("list64", "vgpuctl", time(&[&tools.vgpuctl, "list"])?),
                    1 => s.add("list64", "mdevctl", time(&[&tools.mdevctl, "list"])?),
                    _ => s.add(
                        "list64",
                        "vgpuctl --json",
                        time(&[&tools.vgpuctl, "list", "--json"])?,
                    ),
                }
            }
        }
        cleanup()?;
        for k in 0..5 {
            if let Err(e) = batch(&mut s, &tools, (k + round) % 5) {
                // Reported, and the run fails, but the other figures are still taken.
                eprintln!("vgpuctl-bench: {e}");
                s.failed = true;
                cleanup()?;
            }
        }
    }
    print!("{}", s.report());
    if s.failed {
        return Err("some batches failed (above)".into());
    }
    Ok(())
}

/// One transient create and one remove per tool, 8 times.
fn single(s: &mut Samples, t: &Tools, k: usize) -> Res<()> {
    for i in 0..8 {
        let u = uuid(0xa + k as u8, i);
        let p = PARENTS[i % 2];
        match k {
            0 => {
                s.add(
                    "create",
                    "vgpuctl",
                    time(&[&t.vgpuctl, "create", "-p", p, "-t", TYPE, "-u", &u])?,
                );
                s.add("remove", "vgpuctl", time(&[&t.vgpuctl, "remove", &u])?);
            }
            1 => {
                s.add(
                    "create",
                    "mdevctl",
                    time(&[&t.mdevctl, "start", "-u", &u, "-p", p, "-t", TYPE])?,
                );
                s.add("remove", "mdevctl", time(&[&t.mdevctl, "stop", "-u", &u])?);
            }
            _ => {
                let t0 = Instant::now();
                raw_create(&u, p)?;
                s.add("create", "sysfs", t0.elapsed());
                let t0 = Instant::now();
                raw_remove(&u)?;
                s.add("remove", "sysfs", t0.elapsed());
            }
        }
    }
    Ok(())
}

/// Define and start N instances with weight and cap, one way; checked, then cleaned up.
fn batch(s: &mut Samples, t: &Tools, k: usize) -> Res<()> {
    let t0 = Instant::now();
    let (what, defined) = match k {
        0 => {
            for i in 0..N {
                let u = uuid(0x1, i);
                let p = PARENTS[i % 2];
                run_ok(&[
                    &t.mdevctl,
                    "define",
                    "-u",
                    &u,
                    "-p",
                    p,
                    "--jsonfile",
                    "/tmp/bench-def.json",
                ])?;
                run_ok(&[&t.mdevctl, "start", "-u", &u])?;
            }
            ("mdevctl define+start, 2 calls each", true)
        }
        1 => {
            for i in 0..N {
                let u = uuid(0x2, i);
                let p = PARENTS[i % 2];
                run_ok(&[
                    &t.vgpuctl, "define", "-u", &u, "-p", p, "-t", TYPE, "--weight", WEIGHT,
                    "--cap", CAP,
                ])?;
                run_ok(&[&t.vgpuctl, "start", &u])?;
            }
            ("vgpuctl define+start, 2 calls each", true)
        }
        2 => {
            run_ok(&[&t.vgpuctl, "apply", "/tmp/bench-manifest.json"])?;
            ("vgpuctl apply (1 call)", true)
        }
        3 => {
            let n = N.to_string();
            run_ok(&[
                &t.vgpuctl, "create", "-t", TYPE, "--count", &n, "--weight", WEIGHT, "--cap", CAP,
            ])?;
            ("vgpuctl create --count (1 call, transient)", false)
        }
        _ => {
            for i in 0..N {
                let u = uuid(0x3, i);
                run_ok(&[
                    &t.vgpuctl,
                    "create",
                    "-p",
                    PARENTS[i % 2],
                    "-t",
                    TYPE,
                    "-u",
                    &u,
                    "--weight",
                    WEIGHT,
                    "--cap",
                    CAP,
                ])?;
            }
            ("vgpuctl create, 1 call each (transient)", false)
        }
    };
    s.add("batch64", what, t0.elapsed());
    check(what, defined)?;
    cleanup()
}

/// N instances run with the weight and cap; N definitions exist if `defined`.
fn check(what: &str, defined: bool) -> Res<()> {
    let mut n = 0;
    for e in fs::read_dir("/sys/bus/mdev/devices").map_err(|e| e.to_string())? {
        let d = e.map_err(|e| e.to_string())?.path();
        let (w, c) = (
            read(&format!("{}/vgpu/weight", d.display()))?,
            read(&format!("{}/vgpu/cap", d.display()))?,
        );
        if (w.as_str(), c.as_str()) != (WEIGHT, CAP) {
            return Err(format!("{what}: {} has weight {w} cap {c}", d.display()));
        }
        n += 1;
    }
    let defs = PARENTS
        .iter()
        .map(|p| fs::read_dir(format!("{DEFS}/{p}")).map_or(0, |d| d.count()))
        .sum::<usize>();
    if n != N || defs != if defined { N } else { 0 } {
        return Err(format!("{what}: {n} running, {defs} definitions"));
    }
    Ok(())
}

/// Removes every instance (through sysfs) and every vgpu definition.
fn cleanup() -> Res<()> {
    for e in fs::read_dir("/sys/bus/mdev/devices").map_err(|e| e.to_string())? {
        let name = e.map_err(|e| e.to_string())?.file_name();
        raw_remove(&name.to_string_lossy())?;
    }
    for p in PARENTS {
        let _ = fs::remove_dir_all(format!("{DEFS}/{p}"));
    }
    Ok(())
}

fn manifest() -> String {
    let mut m = String::from("{\n  \"vgpus\": [\n");
    for i in 0..N {
        let sep = if i + 1 < N { "," } else { "" };
        let _ = writeln!(
            m,
            "    {{\"uuid\": \"{}\", \"parent\": \"{}\", \"type\": \"{TYPE}\", \"weight\": {WEIGHT}, \
             \"cap\": {CAP}}}{sep}",
            uuid(0x4, i),
            PARENTS[i % 2]
        );
    }
    m.push_str("  ]\n}\n");
    m
}

fn uuid(tag: u8, i: usize) -> String {
    format!("{tag:08x}-0000-4000-8000-{i:012x}")
}

fn raw_create(u: &str, parent: &str) -> Res<()> {
    let p = format!("/sys/class/mdev_bus/{parent}/mdev_supported_types/{TYPE}/create");
    fs::write(&p, u).map_err(|e| format!("{p}: {e}"))
}

fn raw_remove(u: &str) -> Res<()> {
    let p = format!("/sys/bus/mdev/devices/{u}/remove");
    fs::write(&p, "1").map_err(|e| format!("{p}: {e}"))
}

fn read(p: &str) -> Res<String> {
    fs::read_to_string(p)
        .map(|s| s.trim_end().to_string())
        .map_err(|e| format!("{p}: {e}"))
}

fn run_ok(argv: &[&str]) -> Res<()> {
    time(argv).map(|_| ())
}

/// Runs a command to completion (stdout discarded); its wall time, or its stderr.
fn time(argv: &[&str]) -> Res<Duration> {
    let t0 = Instant::now();
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let d = t0.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(d)
}
