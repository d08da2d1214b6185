//! vgpu-rig-tests: guest-side tests run as root inside the kernel rig.
//!
//! `vgpu-rig-tests <suite> [--filter SUBSTR] [--only NAME,...] [--skip NAME,...] [--list]` runs a suite of named tests and
//! prints TAP; the exit status is non-zero if any test failed. Each test starts with
//! vgpu_shim unloaded, loads it with the parameters it needs, and the harness removes
//! every instance and unloads the module afterwards, even on failure.
//!
//! Other subcommands:
//! * `fuzz [--commands N] [--seed S] [--executor ref]`: fuzz the engine of several instances next to
//!   canaries;
//! * `bench [--csv-dir DIR] [--executor ref|vulkan] [--device SEL]`: the scheduler benchmark (a table, not a test);
//! * `exec-bench [--rounds N] [--executor ref|vulkan] [--device SEL]`: the external executor's handoff cost next to the CPU
//!   executor's (figures);
//! * `touch <uuid> <MiB>` and `load <seconds> <uuid>...`: demo helpers on instances that
//!   already exist (the module stays loaded);
//! * `pngpixel FILE X Y`: a pixel of a PNG (`vgpu-vmm --display-png`'s) for rig scripts.

mod bench;
mod engine;
mod execbench;
mod execref;
mod execvk;
mod external;
mod foundation;
mod fuzz;
mod hardening;
mod harness;
mod ioeventfd;
mod listing;
mod pngtool;
mod preempt;
mod rng;
mod shadow;
mod sys;
mod sysfuzz;
mod tools;
mod util;
mod workload;

use harness::Suite;

fn suites() -> Vec<Suite> {
    vec![
        foundation::suite(),
        engine::suite(),
        hardening::suite(),
        preempt::suite(),
        external::suite(),
    ]
}

fn usage(suites: &[Suite]) -> ! {
    eprintln!(
        "usage: vgpu-rig-tests <suite> [--filter SUBSTR] [--only NAME,...] [--skip NAME,...] [--repeat N] [--list] [--executor ref|vulkan]"
    );
    eprintln!(
        "       vgpu-rig-tests external [...] --daemon ref|vulkan  (vulkan: matches_cpu, switch_live, daemon_killed_several on vgpu-executor)"
    );
    eprintln!("       vgpu-rig-tests fuzz [--commands N] [--seed S] [--executor ref|vulkan]");
    eprintln!("       vgpu-rig-tests bench [--csv-dir DIR] [--quick] [--only SECTION] [--executor ref|vulkan] [--device SEL]");
    eprintln!(
        "       vgpu-rig-tests exec-bench [--rounds N] [--executor ref|vulkan] [--device SEL]"
    );
    eprintln!("       vgpu-rig-tests exec-serve <parent>");
    eprintln!("       vgpu-rig-tests touch <uuid> <MiB>");
    eprintln!("       vgpu-rig-tests load <seconds> <uuid>...");
    eprintln!("       vgpu-rig-tests pngpixel FILE X Y");
    eprintln!("suites:");
    for s in suites {
        eprintln!("  {:<12} {}", s.name, s.about);
    }
    std::process::exit(2);
}

fn main() {
    let suites = suites();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        usage(&suites)
    };
    let rest = &args[1..];
    let tool = match name.as_str() {
        "fuzz" => Some(fuzz::main(rest)),
        "sysfuzz" => Some(sysfuzz::main(rest)),
        "bench" => Some(bench::main(rest)),
        "exec-bench" => Some(execbench::main(rest)),
        "exec-serve" => Some(execref::serve_main(rest)),
        "touch" => Some(tools::touch(rest)),
        "load" => Some(tools::load(rest)),
        "pngpixel" => Some(pngtool::pngpixel(rest)),
        _ => None,
    };
    if let Some(r) = tool {
        match r {
            Ok(()) => std::process::exit(0),
            Err(tools::ToolError::Usage(m)) => {
                eprintln!("{name}: {m}");
                usage(&suites)
            }
            Err(tools::ToolError::Failed(m)) => {
                eprintln!("{name}: FAILED: {m}");
                std::process::exit(1)
            }
        }
    }
    let Some(suite) = suites.iter().find(|s| s.name == name) else {
        eprintln!("unknown suite {name:?}");
        usage(&suites)
    };
    let mut sel = harness::Select::default();
    let mut list = false;
    let mut repeat = 1;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--filter" => {
                let Some(f) = args.get(i + 1) else {
                    usage(&suites)
                };
                sel.filter = Some(f.clone());
                i += 2;
            }
            opt @ ("--skip" | "--only") => {
                let Some(names) = args.get(i + 1) else {
                    usage(&suites)
                };
                for n in names.split(',').filter(|n| !n.is_empty()) {
                    if !suite.tests.iter().any(|t| t.name == n) {
                        eprintln!("{opt}: no test named {n:?} in suite {}", suite.name);
                        std::process::exit(2);
                    }
                    let to = if opt == "--skip" {
                        &mut sel.skip
                    } else {
                        &mut sel.only
                    };
                    to.push(n.to_string());
                }
                i += 2;
            }
            "--list" => {
                list = true;
                i += 1;
            }
            "--executor" => {
                match args.get(i + 1).map(String::as_str) {
                    Some("ref") => harness::use_ref_executor(),
                    Some("vulkan") => harness::use_vulkan_executor(),
                    _ => usage(&suites),
                }
                i += 2;
            }
            "--daemon" => {
                match args.get(i + 1).map(String::as_str) {
                    Some("ref") => {}
                    Some("vulkan") => harness::use_vulkan_daemon(),
                    _ => usage(&suites),
                }
                i += 2;
            }
            "--repeat" => {
                let Some(n) = args.get(i + 1).and_then(|v| v.parse().ok()) else {
                    usage(&suites)
                };
                repeat = n;
                i += 2;
            }
            other => {
                eprintln!("unknown argument {other:?}");
                usage(&suites)
            }
        }
    }
    if list {
        for t in suite.tests.iter().filter(|t| sel.picks(t.name)) {
            println!("{}", t.name);
        }
        return;
    }
    let failed = harness::run_suite(suite, &sel, repeat);
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
