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

/// `--time N CMD... [-- CMD...]...`
fn time_commands(args: &[String]) -> Res<()> {
    let (n, rest) = args.split_first().ok_or("--time N CMD...")?;
    let n: usize = n.parse().map_err(|e| format!("--time {n}: {e}"))?;
    let cmds: Vec<Vec<&str>> = rest
        .split(|a| a == "--")
        .filter(|c| !c.is_empty())
        .map(|c| c.iter().map(String::as_str).collect())
        .collect();
    let mut times = vec![Vec::new(); cmds.len()];
    for _ in 0..n {
        for (c, t) in cmds.iter().zip(&mut times) {
            t.push(time(c)?.as_secs_f64() * 1e3);
        }
    }
    for (c, t) in cmds.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        println!(
            "{:>8.2} {:>8.2} {:>8.2} ms  {}",
            t[0],
            t[t.len() / 2],
            t[t.len() - 1],
            c.join(" ")
        );
    }
    Ok(())
}

/// Ways of reading an attribute, in-process: what one costs in system calls.
fn time_syscalls(uuid: &str) -> Res<()> {
    use rustix::fs::{Mode, OFlags};
    let e = |e: std::io::Error| e.to_string();
    let bus = format!("/sys/bus/mdev/devices/{uuid}");
    let dev = fs::canonicalize(&bus).map_err(e)?;
    let dev_weight = dev.join("vgpu/weight");
    let mut buf = [0u8; 4096];
    let n = 1000;
    let report = |what: &str, f: &mut dyn FnMut() -> std::io::Result<()>| -> Res<()> {
        let t0 = Instant::now();
        for _ in 0..n {
            f().map_err(e)?;
        }
        println!(
            "{:>8.1} us  {what}",
            t0.elapsed().as_secs_f64() * 1e6 / n as f64
        );
        Ok(())
    };
    let null = fs::File::open("/dev/null").map_err(e)?;
    report(
        "a read of /dev/null (a system call that does nothing)",
        &mut || {
            rustix::io::read(&null, &mut [0u8; 1][..])?;
            Ok(())
        },
    )?;
    report("std read_to_string via the bus link", &mut || {
        fs::read_to_string(format!("{bus}/vgpu/weight")).map(|_| ())
    })?;
    let mut raw = |p: &std::path::Path| -> std::io::Result<()> {
        let fd = rustix::fs::open(p, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        rustix::io::read(&fd, &mut buf)?;
        Ok(())
    };
    let bus_weight = std::path::PathBuf::from(format!("{bus}/vgpu/weight"));
    report("open+read+close via the bus link", &mut || raw(&bus_weight))?;
    report("open+read+close via the device directory", &mut || {
        raw(&dev_weight)
    })?;
    let dir = rustix::fs::open(
        dev.join("vgpu"),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| e.to_string())?;
    let mut buf2 = [0u8; 4096];
    report("openat(dir, weight)+read+close", &mut || {
        let fd = rustix::fs::openat(
            &dir,
            "weight",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        rustix::io::read(&fd, &mut buf2)?;
        Ok(())
    })?;
    let fd = rustix::fs::open(&dev_weight, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| e.to_string())?;
    let mut buf3 = [0u8; 4096];
    report("pread of an open attribute", &mut || {
        rustix::io::pread(&fd, &mut buf3, 0)?;
        Ok(())
    })?;
    report("readlink of the bus link", &mut || {
        fs::read_link(&bus).map(|_| ())
    })?;
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

#[derive(Default)]
struct Samples {
    failed: bool,
    rows: Vec<(&'static str, String, Vec<Duration>)>,
}

impl Samples {
    fn add(&mut self, op: &'static str, who: &str, d: Duration) {
        match self.rows.iter_mut().find(|(o, w, _)| *o == op && w == who) {
            Some((_, _, v)) => v.push(d),
            None => self.rows.push((op, who.to_string(), vec![d])),
        }
    }

    /// (median, minimum) in ms. On a loaded host the minimum is the run least
    /// disturbed by others; the median what a user sees.
    fn stats(&self, op: &str, who: &str) -> Option<(f64, f64)> {
        let (_, _, v) = self.rows.iter().find(|(o, w, _)| *o == op && w == who)?;
        let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Some((ms[ms.len() / 2], ms[0]))
    }

    fn report(&self) -> String {
        let mut out = format!(
            "\n{:<9} {:<44} {:>10} {:>10} {:>8}\n",
            "op", "tool", "median ms", "min ms", "samples"
        );
        for (op, who, v) in &self.rows {
            let (m, lo) = self.stats(op, who).unwrap_or_default();
            let _ = writeln!(out, "{op:<9} {who:<44} {m:>10.1} {lo:>10.1} {:>8}", v.len());
        }
        // "a / b (min: a / b)": how many times b is faster.
        let ratio = |op_a: &str, a: &str, op_b: &str, b: &str| match (
            self.stats(op_a, a),
            self.stats(op_b, b),
        ) {
            (Some((ma, la)), Some((mb, lb))) if mb > 0.0 && lb > 0.0 => {
                format!("{:.1}x (min {:.1}x)", ma / mb, la / lb)
            }
            _ => "-".into(),
        };
        let ms = |op: &str, who: &str| match self.stats(op, who) {
            Some((m, lo)) => format!("{m:.1} ms (min {lo:.1})"),
            None => "-".into(),
        };
        let _ = writeln!(out, "\ngoals (median, and min):");
        let _ = writeln!(
            out,
            "  a single call >= 3x faster than mdevctl's: create {}, remove {}",
            ratio("create", "mdevctl", "create", "vgpuctl"),
            ratio("remove", "mdevctl", "remove", "vgpuctl")
        );
        let _ = writeln!(
            out,
            "  list of 64 <= 10 ms: {} (mdevctl {})",
            ms("list64", "vgpuctl"),
            ms("list64", "mdevctl")
        );
        let mdev = "mdevctl define+start, 2 calls each";
        for who in [
            "vgpuctl apply (1 call)",
            "vgpuctl create --count (1 call, transient)",
            "vgpuctl define+start, 2 calls each",
        ] {
            let _ = writeln!(
                out,
                "  a batch of 64 >= 20x faster than mdevctl's define+start: {who} {}",
                ratio("batch64", mdev, "batch64", who)
            );
        }
        let _ = writeln!(
            out,
            "  start-up: vgpuctl --version {}, mdevctl --version {}, a trivial static binary {}",
            ms("version", "vgpuctl"),
            ms("version", "mdevctl"),
            ms("exec", "trivial")
        );
        out
    }
}
