//! `vgpuctl`: manage vgpu instances (mdev devices of the vgpu_shim driver).

#![forbid(unsafe_code)]

use clap::{ArgGroup, Args, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use uuid::Uuid;

use vgpu_mdev_manager::{
    render, Environment, InstanceUpdate, Manager, RootedEnvironment, SystemEnvironment,
};

/// Manage vgpu instances: mdev devices of the vgpu_shim driver.
#[derive(Debug, Parser)]
#[command(name = "vgpuctl", version, propagate_version = true)]
struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// Log what is read and written to stderr.
    #[arg(short, long, global = true)]
    verbose: bool,

    /// Treat DIR as `/` when looking for sysfs (for tests).
    #[arg(long, global = true, value_name = "DIR", hide = true)]
    root: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the vgpu parents (one per engine) and their VRAM pools.
    Parents,
    /// List the instance types, with how many more of each fit.
    Types {
        /// Only this parent's types.
        #[arg(long, value_name = "PARENT")]
        parent: Option<String>,
    },
    /// List the vgpu instances.
    List,
    /// Create an instance; prints its UUID.
    Create {
        /// Parent to create it on, e.g. vgpu_shim0.
        #[arg(long, value_name = "PARENT")]
        parent: String,
        /// Type, e.g. vgpu_shim-256M (or just 256M).
        #[arg(long = "type", value_name = "TYPE")]
        type_id: String,
        /// UUID to give it (default: a random one).
        #[arg(long, value_name = "UUID")]
        uuid: Option<Uuid>,
    },
    /// Remove an instance.
    Remove {
        /// The instance.
        uuid: Uuid,
    },
    /// Change an instance's scheduling weight and/or cap.
    Modify(ModifyArgs),
    /// Show a parent's VRAM pool, or resize it.
    Pool {
        /// The parent, e.g. vgpu_shim0.
        parent: String,
        /// New pool size in MiB (64-1048576, not below what instances reserve).
        #[arg(long, value_name = "MIB")]
        set_mb: Option<u64>,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["weight", "cap"])))]
struct ModifyArgs {
    /// The instance.
    uuid: Uuid,
    /// Scheduling weight, 1-100.
    #[arg(long)]
    weight: Option<u64>,
    /// Cap in percent of one engine, 0-100 (0 = none).
    #[arg(long)]
    cap: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.verbose {
        log::set_logger(&StderrLogger).ok();
        log::set_max_level(log::LevelFilter::Debug);
    }
    let result = match &cli.root {
        Some(root) => run(&cli, Manager::new(RootedEnvironment::new(root))),
        None => run(&cli, Manager::new(SystemEnvironment)),
    };
    match result.and_then(|out| print(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vgpuctl: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; returns what to print on stdout.
fn run<E: Environment>(cli: &Cli, mgr: Manager<E>) -> Result<String, Box<dyn std::error::Error>> {
    let json = cli.json;
    Ok(match &cli.command {
        Command::Parents => {
            let parents = mgr.parents()?;
            if json {
                render::json(&parents)
            } else {
                render::parents_table(&parents)
            }
        }
        Command::Types { parent } => {
            let types = mgr.types(parent.as_deref())?;
            if json {
                render::json(&types)
            } else {
                render::types_table(&types)
            }
        }
        Command::List => {
            let instances = mgr.instances()?;
            if json {
                render::json(&instances)
            } else {
                render::instances_table(&instances)
            }
        }
        Command::Create {
            parent,
            type_id,
            uuid,
        } => {
            let uuid = mgr.create(parent, type_id, *uuid)?;
            if json {
                render::json(&serde_json::json!({ "uuid": uuid }))
            } else {
                format!("{uuid}\n")
            }
        }
        Command::Remove { uuid } => {
            mgr.remove(*uuid)?;
            if json {
                render::json(&serde_json::json!({ "uuid": uuid, "removed": true }))
            } else {
                String::new()
            }
        }
        Command::Modify(args) => {
            let instance = mgr.modify(
                args.uuid,
                InstanceUpdate {
                    weight: args.weight,
                    cap: args.cap,
                },
            )?;
            if json {
                render::json(&instance)
            } else {
                String::new()
            }
        }
        Command::Pool { parent, set_mb } => {
            let pool = match set_mb {
                Some(mb) => mgr.set_pool_mb(parent, *mb)?,
                None => mgr.pool(parent)?,
            };
            if json {
                render::json(&pool)
            } else {
                render::pool_text(&pool)
            }
        }
    })
}

fn print(out: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `vgpuctl list | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Debug logging to stderr for `-v`, without another dependency.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        eprintln!(
            "vgpuctl: {}: {}",
            record.level().as_str().to_lowercase(),
            record.args()
        );
    }
    fn flush(&self) {}
}
