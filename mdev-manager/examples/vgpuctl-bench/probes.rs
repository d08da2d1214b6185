//! `--time` and `--syscalls`: probes for profiling in the rig.

use std::fs;
use std::time::Instant;

use super::{time, Res};

/// `--time N CMD... [-- CMD...]...`
pub fn time_commands(args: &[String]) -> Res<()> {
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
pub fn time_syscalls(uuid: &str) -> Res<()> {
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
