//! `vgpu-vmm`: boot a Linux guest under KVM. See `vgpu-vmm --help` and docs/vmm.md.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use vgpu_vmm::config::{Args, VmConfig};
use vgpu_vmm::vcpu::VmEnd;
use vgpu_vmm::{vm, ExitStatus};

fn main() -> ExitCode {
    let started = Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .init();
    // Before anything else: a SIGTERM that arrives during setup must still stop the VM.
    let signals = match vm::stop_signalfd() {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // --help and --version are not errors.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                ExitStatus::Usage.code() as u8
            } else {
                0
            });
        }
    };
    let cfg = match VmConfig::try_from(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vgpu-vmm: error: {e}");
            return ExitCode::from(ExitStatus::Usage.code() as u8);
        }
    };
    if let Some((name, uuid)) = &cfg.domain {
        log::info!(
            "domain {} ({})",
            name.as_deref().unwrap_or("(no name)"),
            uuid.as_deref().unwrap_or("no uuid")
        );
    }
    match vm::run(&cfg, signals, started) {
        Ok(o) => {
            let status = ExitStatus::from(&o.end);
            let what = match &o.end {
                VmEnd::Guest(g) => format!("guest {g:?}"),
                VmEnd::Crashed(m) => format!("guest crashed: {m}"),
                VmEnd::Failed(m) => format!("error: {m}"),
                VmEnd::Signal(n) => format!("stopped by signal {n}"),
                VmEnd::Released => "vGPU released to the host (VFIO REQ)".to_string(),
            };
            if cfg.vgpu.is_some() {
                eprintln!(
                    "vgpu-vmm: doorbell: {} MMIO exits ({})",
                    vgpu_vmm::ioeventfd::doorbell_exits(),
                    if cfg.ioeventfd {
                        "ioeventfd"
                    } else {
                        "trapped"
                    }
                );
            }
            eprintln!(
                "vgpu-vmm: {what}; exit status {} (setup {} ms, ran {} ms)",
                status.code(),
                o.setup.as_millis(),
                o.ran.as_millis()
            );
            ExitCode::from(status.code() as u8)
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("vgpu-vmm: error: {msg}");
    ExitCode::from(ExitStatus::VmmError.code() as u8)
}
