//! The command line of `vgpuctl`: one argument style across verbs (`-u/--uuid`,
//! `-p/--parent`, `-t/--type`, as mdevctl), a positional UUID or parent where the
//! older syntax had one, and value parsers that accept the obvious spellings
//! (`50%`, `16G`) and say what they expected otherwise.

use clap::{ArgGroup, Args, Parser, Subcommand};
use std::path::PathBuf;
use uuid::Uuid;

use vgpu_mdev_manager::units::{parse_cap, parse_size_mb, parse_weight};
use vgpu_mdev_manager::{Placement, Spec, StartMode};

/// Manage vgpu instances (mdev devices of the vgpu_shim driver): live and persistent
/// (mdevctl-compatible) definitions, placement, libvirt XML and telemetry.
#[derive(Debug, Parser)]
#[command(name = "vgpuctl", version, propagate_version = true)]
#[command(
    after_help = "Exit status: 0 success (also when there was nothing to do), \
                        1 the operation failed (one `vgpuctl: error:` line says why), \
                        2 usage error."
)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log what is read and written to stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Treat DIR as `/` (sysfs, /etc/mdevctl.d, /run/lock): for tests.
    #[arg(long, global = true, value_name = "DIR", hide = true)]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Each verb's arguments are built only when that verb is used (`defer`): building
/// the whole tree for every call was a quarter of `vgpuctl list`'s instructions.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// List the vgpu parents (one per engine) and their VRAM pools.
    Parents,
    /// List the instance types, with how many more of each fit.
    Types {
        /// Only this parent's types.
        #[arg(short, long, value_name = "PARENT")]
        parent: Option<String>,
    },
    /// List the running vgpu instances, or (--defined) the persistent definitions.
    #[command(visible_alias = "ls")]
    List {
        /// List definitions (/etc/mdevctl.d) instead, with whether each runs.
        #[arg(short, long)]
        defined: bool,
        /// Only this instance.
        #[arg(short, long)]
        uuid: Option<Uuid>,
        /// Only this parent's.
        #[arg(short, long, value_name = "PARENT")]
        parent: Option<String>,
    },
    /// Create (transient) instances; prints their UUIDs.
    Create(CreateArgs),
    /// Remove a running instance (its definition, if any, stays).
    Remove(UuidArg),
    /// Change an instance's weight and cap (live), its definition (--defined), or both.
    Modify(ModifyArgs),
    /// Show a parent's VRAM pool, or resize it.
    Pool {
        /// The parent, e.g. vgpu_shim0.
        #[arg(value_name = "PARENT", required_unless_present = "parent")]
        parent_pos: Option<String>,
        /// The parent (same as the positional form).
        #[arg(short, long, value_name = "PARENT", conflicts_with = "parent_pos")]
        parent: Option<String>,
        /// New pool size: MiB, or with a unit (16G, 512M); 64 MiB to 1 TiB, not below
        /// what instances reserve.
        #[arg(long, value_name = "SIZE", value_parser = parse_size_mb)]
        set_mb: Option<u64>,
    },
    /// Define a persistent instance (mdevctl format, /etc/mdevctl.d/PARENT/UUID).
    Define(DefineArgs),
    /// Remove a definition (a running instance keeps running).
    Undefine(UuidParentArgs),
    /// Start a defined instance, or a transient one from the command line.
    Start(StartArgs),
    /// Stop (remove) a running instance; its definition stays.
    Stop(UuidArg),
    /// Print libvirt XML: the node device of an instance or definition, or (--hostdev)
    /// the domain hostdev element that attaches it to a VM.
    Xml {
        #[command(flatten)]
        uuid: UuidArg,
        /// Describe the definition, even if the instance runs.
        #[arg(short, long)]
        defined: bool,
        /// Print the domain hostdev element instead (for `virsh attach-device` or a
        /// domain's devices).
        #[arg(long)]
        hostdev: bool,
        /// The parent whose definition is meant (when several parents define the UUID).
        #[arg(short, long, value_name = "PARENT")]
        parent: Option<String>,
    },
    /// Print the counters in the Prometheus text format, or serve them over HTTP.
    Metrics {
        /// Serve them at http://ADDR/metrics instead (loopback addresses only, e.g.
        /// 127.0.0.1:9400); runs until stopped.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// A live per-vGPU table: engine share, throttling, jobs/s, GEMM throughput,
    /// latency p50/p99, VRAM.
    Top {
        /// Print one table (over one interval) and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes (the window the rates are measured over).
        #[arg(short, long, value_name = "SECONDS", default_value_t = 1.0,
              value_parser = parse_interval)]
        interval: f64,
    },
    /// Bring about a manifest of vGPU definitions (JSON; see the operator guide):
    /// define, start and change what differs, all admitted before anything is written.
    Apply {
        /// The manifest (`-` reads standard input).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Only plan and check: print what would be done, write nothing.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Start every `auto` definition of a parent (run by udev when it registers).
    StartParent {
        /// The parent, e.g. vgpu_shim0.
        parent: String,
    },
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('s').parse::<f64>() {
        Ok(v) if (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not an interval in seconds (0-3600, e.g. 1 or 0.5)"
        )),
    }
}

/// A UUID, positional or as `-u/--uuid`.
#[derive(Debug, Args)]
pub struct UuidArg {
    /// The instance.
    #[arg(value_name = "UUID", required_unless_present = "uuid")]
    pub uuid_pos: Option<Uuid>,
    /// The instance (same as the positional form).
    #[arg(short, long, conflicts_with = "uuid_pos")]
    pub uuid: Option<Uuid>,
}

impl UuidArg {
    pub fn get(&self) -> Uuid {
        // clap guarantees one of them (required_unless_present).
        self.uuid.or(self.uuid_pos).unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct UuidParentArgs {
    #[command(flatten)]
    pub uuid: UuidArg,
    /// The parent whose definition is meant (when several parents define the UUID).
    #[arg(short, long, value_name = "PARENT")]
    pub parent: Option<String>,
}

/// What an instance is: parent (or placement), type, weight, cap.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Parent, e.g. vgpu_shim0 (default: chosen by --placement).
    #[arg(short, long, value_name = "PARENT")]
    pub parent: Option<String>,
    /// Type: vgpu_shim-1G, 1G, 1g, "vgpu 1G" or 1024 (MiB).
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub type_spec: Option<String>,
    /// Scheduling weight, 1-100 (default: the type's).
    #[arg(long, value_name = "W", allow_hyphen_values = true, value_parser = parse_weight)]
    pub weight: Option<u64>,
    /// Cap in percent of one engine: 0-100, 40 or 40%, none (default none).
    #[arg(long, value_name = "PCT", allow_hyphen_values = true, value_parser = parse_cap)]
    pub cap: Option<u64>,
    /// How to choose a parent when --parent is not given: spread (most VRAM left) or
    /// pack (least VRAM left that fits).
    #[arg(long, value_name = "POLICY", default_value = "spread")]
    pub placement: Placement,
}

impl SpecArgs {
    pub fn spec(&self) -> Spec {
        Spec {
            parent: self.parent.clone(),
            type_spec: self.type_spec.clone(),
            weight: self.weight,
            cap: self.cap,
            placement: self.placement,
            attrs: Vec::new(),
        }
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("need_type").required(true).args(["type_spec"])))]
pub struct CreateArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// UUID to give it (default: a random one; not with --count).
    #[arg(short, long, conflicts_with = "count")]
    pub uuid: Option<Uuid>,
    /// Create N instances, placed in turn and all admitted before the first is
    /// created; if one fails the others are removed again.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub count: u32,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("start_mode").args(["auto", "manual"])))]
pub struct DefineArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// UUID to define (default: a random one). The UUID of a running instance, without
    /// --type, captures it as it runs (parent, type, weight, cap).
    #[arg(short, long)]
    pub uuid: Option<Uuid>,
    /// Same as --uuid.
    #[arg(value_name = "UUID", conflicts_with = "uuid")]
    pub uuid_pos: Option<Uuid>,
    /// Start it when its parent appears (at boot or module load).
    #[arg(short, long)]
    pub auto: bool,
    /// Start it only by hand (the default).
    #[arg(short, long)]
    pub manual: bool,
    /// Read parent, type, UUID and attributes from a libvirt node-device document
    /// (`vgpuctl xml`, `virsh nodedev-dumpxml`); -u and -p override it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["type_spec", "weight", "cap"])]
    pub from_xml: Option<PathBuf>,
}

impl DefineArgs {
    pub fn start_mode(&self) -> StartMode {
        if self.auto {
            StartMode::Auto
        } else {
            StartMode::Manual
        }
    }
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// A defined instance to start, or the UUID to give a transient one.
    #[arg(short, long)]
    pub uuid: Option<Uuid>,
    /// Same as --uuid.
    #[arg(value_name = "UUID", conflicts_with = "uuid")]
    pub uuid_pos: Option<Uuid>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)
    .args(["weight", "cap", "auto", "manual"])))]
#[command(group(ArgGroup::new("start_mode").args(["auto", "manual"])))]
pub struct ModifyArgs {
    #[command(flatten)]
    pub uuid: UuidArg,
    /// Scheduling weight, 1-100.
    #[arg(long, value_name = "W", allow_hyphen_values = true, value_parser = parse_weight)]
    pub weight: Option<u64>,
    /// Cap in percent of one engine: 0-100, 40 or 40%, none.
    #[arg(long, value_name = "PCT", allow_hyphen_values = true, value_parser = parse_cap)]
    pub cap: Option<u64>,
    /// Change the definition (persistent) instead of the running instance.
    #[arg(short, long)]
    pub defined: bool,
    /// With --defined: change the running instance too.
    #[arg(short, long, requires = "defined")]
    pub live: bool,
    /// With --defined: start the definition at boot from now on.
    #[arg(short, long, requires = "defined")]
    pub auto: bool,
    /// With --defined: start the definition only by hand from now on.
    #[arg(short, long, requires = "defined")]
    pub manual: bool,
    /// The parent whose definition is meant (when several parents define the UUID).
    #[arg(short, long, value_name = "PARENT", requires = "defined")]
    pub parent: Option<String>,
}
