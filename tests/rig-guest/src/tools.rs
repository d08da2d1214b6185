//! Small subcommands for the demo (`touch`, `load`) and argument helpers shared by the
//! `fuzz` and `bench` subcommands.

use std::time::Duration;

use vgpu_sysfs::handle::{Instance, Parent};
use vgpu_sysfs::Uuid;

use crate::harness::Fail;
use crate::workload::*;

/// How a subcommand failed.
pub enum ToolError {
    /// Bad command line.
    Usage(String),
    /// It ran and found a problem.
    Failed(String),
}

impl From<Fail> for ToolError {
    fn from(f: Fail) -> Self {
        ToolError::Failed(f.0)
    }
}

/// A subcommand's result.
pub type ToolResult = Result<(), ToolError>;

/// Parse a number argument.
pub fn num<T: std::str::FromStr>(what: &str, s: Option<&String>) -> Result<T, ToolError> {
    let s = s.ok_or_else(|| ToolError::Usage(format!("{what}: missing value")))?;
    let t = s.replace('_', "");
    t.parse()
        .map_err(|_| ToolError::Usage(format!("{what}: bad number {s:?}")))
}

fn instance(arg: &str) -> Result<Instance, ToolError> {
    let u: Uuid = arg
        .parse()
        .map_err(|_| ToolError::Usage(format!("bad uuid {arg:?}")))?;
    let inst = Instance::new(u);
    if !inst.exists() {
        return Err(ToolError::Failed(format!("no instance {arg}")));
    }
    Ok(inst)
}

/// `touch <uuid> <MiB>`: map BAR0 and write a pattern over the first MiB, so the
/// instance's `vram_used_kb` grows.
pub fn touch(args: &[String]) -> ToolResult {
    if args.len() != 2 {
        return Err(ToolError::Usage("touch <uuid> <MiB>".into()));
    }
    let inst = instance(&args[0])?;
    let mib: u64 = num("MiB", args.get(1))?;
    let g = Gpu::open(&inst)?;
    let len = mib * MIB;
    if len == 0 || len > g.vram_size {
        return Err(ToolError::Usage(format!(
            "{mib} MiB is not within the instance's {} MiB",
            g.vram_size / MIB
        )));
    }
    g.vram()
        .fill_u64(0, len, |o| crate::util::pattern(0x70, o))
        .map_err(|e| ToolError::Failed(format!("write VRAM: {e}")))?;
    let used = inst
        .vram_used_kb()
        .map_err(|e| ToolError::Failed(e.to_string()))?;
    println!(
        "touched {mib} MiB of {}: vram_used_kb = {used}",
        inst.uuid()
    );
    Ok(())
}

/// `load <seconds> <uuid>...`: saturate the instances with GEMMs for that long, then
/// print each one's weight, cap, share of its engine's busy time, and jobs.
pub fn load(args: &[String]) -> ToolResult {
    if args.len() < 2 {
        return Err(ToolError::Usage("load <seconds> <uuid>...".into()));
    }
    let secs: f64 = num("seconds", args.first())?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err(ToolError::Usage(format!("seconds {secs} out of 0.1..3600")));
    }
    let mut insts = Vec::new();
    for a in &args[1..] {
        insts.push(instance(a)?);
    }
    let mut gpus = Vec::new();
    for i in &insts {
        gpus.push(Gpu::open_ring(i, 0, 16 * KIB)?);
    }
    let ns = calibrate(&mut gpus[0], MIB)?;
    let dim = gemm_dim_for(ns, Duration::from_millis(3));
    let mut parents = Vec::new();
    for i in &insts {
        let name = i
            .parent_name()
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        parents.push(Parent::named(&name));
    }
    let sats = saturate_all(gpus, MIB, dim, 4, Duration::from_millis(30));
    std::thread::sleep(Duration::from_millis(300));
    let a = snap_many(&insts)?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let b = snap_many(&insts)?;
    let alive = sats.iter().all(|s| !s.finished());
    let gpus = stop_all(sats)?;
    for mut g in gpus {
        let _ = g.eng.reset();
    }
    if !alive {
        return Err(ToolError::Failed("a ring stopped with an error".into()));
    }
    let wall = b.0.duration_since(a.0).as_nanos() as f64;
    println!(
        "load: {:.1} s of GEMM {dim}^3 on every instance (engine time from the kernel's busy_ns)",
        wall / 1e9
    );
    println!(
        "{:<36}  {:<11} {:<12} {:>6} {:>4} {:>7} {:>8} {:>9}",
        "instance", "parent", "policy", "weight", "cap", "share", "engine", "jobs"
    );
    for (k, i) in insts.iter().enumerate() {
        let pname = parents[k].name().to_string();
        let busy = b.1[k].busy_ns.saturating_sub(a.1[k].busy_ns) as f64;
        let total: f64 = (0..insts.len())
            .filter(|&j| parents[j].name() == pname)
            .map(|j| b.1[j].busy_ns.saturating_sub(a.1[j].busy_ns) as f64)
            .sum();
        let share = if total > 0.0 {
            100.0 * busy / total
        } else {
            0.0
        };
        println!(
            "{:<36}  {:<11} {:<12} {:>6} {:>4} {:>6.1}% {:>7.1}% {:>9}",
            i.uuid().to_string(),
            pname,
            parents[k].policy_raw().unwrap_or_else(|_| "?".into()),
            i.weight().map_or("?".into(), |w| w.to_string()),
            i.cap().map_or("?".into(), |c| c.to_string()),
            share,
            100.0 * busy / wall,
            b.1[k].jobs.saturating_sub(a.1[k].jobs)
        );
    }
    println!("(share: of the busy time of the listed instances on the same parent; engine: of wall time)");
    Ok(())
}

type Many = (std::time::Instant, Vec<vgpu_sysfs::InstanceCounters>);

fn snap_many(insts: &[Instance]) -> Result<Many, ToolError> {
    let t = std::time::Instant::now();
    let mut v = Vec::new();
    for i in insts {
        v.push(
            i.sched_counters()
                .map_err(|e| ToolError::Failed(e.to_string()))?,
        );
    }
    Ok((t, v))
}
