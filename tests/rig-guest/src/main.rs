//! vgpu-rig-tests: guest-side tests run as root inside the kernel rig.
//!
//! `vgpu-rig-tests <suite> [--filter SUBSTR] [--list]` runs a suite of named tests and
//! prints TAP; the exit status is non-zero if any test failed. Each test starts with
//! vgpu_shim unloaded, loads it with the parameters it needs, and the harness removes
//! every instance and unloads the module afterwards, even on failure.

mod foundation;
mod harness;
mod sys;
mod util;

use harness::Suite;

fn suites() -> Vec<Suite> {
    vec![foundation::suite()]
}

fn usage(suites: &[Suite]) -> ! {
    eprintln!("usage: vgpu-rig-tests <suite> [--filter SUBSTR] [--list]");
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
    let Some(suite) = suites.iter().find(|s| s.name == name) else {
        eprintln!("unknown suite {name:?}");
        usage(&suites)
    };
    let mut filter = None;
    let mut list = false;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--filter" => {
                let Some(f) = args.get(i + 1) else {
                    usage(&suites)
                };
                filter = Some(f.clone());
                i += 2;
            }
            "--list" => {
                list = true;
                i += 1;
            }
            other => {
                eprintln!("unknown argument {other:?}");
                usage(&suites)
            }
        }
    }
    if list {
        for t in &suite.tests {
            if filter.as_deref().is_none_or(|f| t.name.contains(f)) {
                println!("{}", t.name);
            }
        }
        return;
    }
    let failed = harness::run_suite(suite, filter.as_deref());
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
