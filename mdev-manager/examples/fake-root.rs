//! Builds a fake vgpu_shim sysfs tree for profiling `vgpuctl --root DIR` on a host
//! without the module (scripts/bench-vgpuctl --profile):
//!
//!   cargo run --example fake-root -- DIR [PARENTS] [INSTANCES] [--no-instances-attr]
//!
//! PARENTS parents (default 2) with 8 GiB pools, and INSTANCES 128M instances
//! (default 64) spread over them. Each parent has `vgpu/instances`, as the module
//! has, unless `--no-instances-attr` (a module from before it).

use std::process::ExitCode;
use uuid::Uuid;
use vgpu_mdev_manager::fake::FakeSysfs;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let before = args.len();
    args.retain(|a| a != "--no-instances-attr");
    let attr = args.len() == before;
    let Some(dir) = args.first() else {
        eprintln!("usage: fake-root DIR [PARENTS] [INSTANCES]");
        return ExitCode::from(2);
    };
    let num = |i: usize, default: u32| args.get(i).map_or(Ok(default), |s| s.parse::<u32>());
    let (Ok(parents), Ok(instances)) = (num(1, 2), num(2, 64)) else {
        eprintln!("PARENTS and INSTANCES are numbers");
        return ExitCode::from(2);
    };
    match build(dir, parents.max(1), instances, attr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-root: {dir}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build(dir: &str, parents: u32, instances: u32, attr: bool) -> std::io::Result<()> {
    let fake = FakeSysfs::new(dir)?;
    for p in 0..parents {
        fake.add_parent(&format!("vgpu_shim{p}"), 8192)?;
    }
    for i in 0..instances {
        let uuid = Uuid::from_u128(0xbbbbbbbb_0000_4000_8000_000000000000 | u128::from(i));
        let parent = format!("vgpu_shim{}", i % parents);
        fake.add_instance(&parent, "vgpu_shim-128M", uuid, None, 0, 0)?;
    }
    for p in (0..parents).filter(|_| attr) {
        fake.write_instances_attr(&format!("vgpu_shim{p}"))?;
    }
    Ok(())
}
