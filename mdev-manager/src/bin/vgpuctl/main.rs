//! `vgpuctl`: manage vgpu instances (mdev devices of the vgpu_shim driver).

#![forbid(unsafe_code)]

mod cli;
mod verbs;

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

use cli::{Cli, Command};
use vgpu_mdev_manager::render::{self, DefinedRow};
use vgpu_mdev_manager::{metrics, top, xml};
use vgpu_mdev_manager::{
    Done, Environment, Lock, Manager, Outcome, RootedEnvironment, Spec, SystemEnvironment,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// musl's allocator maps and unmaps pages for the short bursts of allocations a call
/// makes (some 60 mmap/munmap pairs for `vgpuctl create`, each unmap a TLB flush);
/// dlmalloc keeps what it maps for the life of the process.
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::set_logger(&StderrLogger).ok();
    log::set_max_level(if cli.verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Warn
    });
    let result = match &cli.root {
        Some(root) => run(&cli, Manager::new(RootedEnvironment::new(root))),
        None => run(&cli, Manager::new(SystemEnvironment)),
    };
    match result.and_then(|out| print(&out.stdout).map(|()| out.failed)) {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vgpuctl: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a command prints on stdout, and whether it failed in part (errors for the
/// failed parts are already on stderr).
struct Out {
    stdout: String,
    failed: bool,
}

impl From<String> for Out {
    fn from(stdout: String) -> Self {
        Self {
            stdout,
            failed: false,
        }
    }
}

/// Tells the operator something on stderr (a no-op re-run, a missing module).
fn note(msg: &str) {
    eprintln!("vgpuctl: {msg}");
}

fn note_outcome(o: &Outcome) {
    if let Some(n) = o.note() {
        note(&n);
    }
}

const NO_PARENT: &str = "no vgpu_shim parent found: the vgpu_shim module is not loaded \
                         (modprobe vgpu_shim; see docs/operator-guide.md)";

/// Runs the command; returns what to print on stdout.
fn run<E: Environment>(cli: &Cli, mgr: Manager<E>) -> Res<Out> {
    let json = cli.json;
    let changes = !matches!(
        cli.command,
        Command::Parents
            | Command::Types { .. }
            | Command::List { .. }
            | Command::Xml { .. }
            | Command::Metrics { .. }
            | Command::Top { .. }
    ) && !matches!(cli.command, Command::Pool { set_mb: None, .. });
    let _lock = if changes {
        Some(Lock::acquire(mgr.env())?)
    } else {
        None
    };
    Ok(match &cli.command {
        Command::Parents => {
            let parents = mgr.parents()?;
            if parents.is_empty() {
                note(NO_PARENT);
            }
            if json {
                render::json(&parents)
            } else {
                render::parents_table(&parents)
            }
            .into()
        }
        Command::Types { parent } => {
            let types = mgr.types(parent.as_deref())?;
            if types.is_empty() {
                note(NO_PARENT);
            }
            if json {
                render::json(&types)
            } else {
                render::types_table(&types)
            }
            .into()
        }
        Command::List {
            defined: false,
            uuid,
            parent,
        } => {
            let mut instances = mgr.instances()?;
            if instances.is_empty() && mgr.parents()?.is_empty() {
                note(NO_PARENT);
            }
            instances.retain(|i| {
                uuid.is_none_or(|u| u == i.uuid) && parent.as_ref().is_none_or(|p| *p == i.parent)
            });
            if json {
                render::json(&instances)
            } else {
                render::instances_table(&instances)
            }
            .into()
        }
        Command::List {
            defined: true,
            uuid,
            parent,
        } => {
            let mut defs = mgr.definitions()?;
            defs.retain(|d| {
                uuid.is_none_or(|u| u == d.uuid) && parent.as_ref().is_none_or(|p| *p == d.parent)
            });
            let running: Vec<_> = mgr.instances()?.into_iter().map(|i| i.uuid).collect();
            let rows: Vec<DefinedRow> = defs
                .iter()
                .map(|d| DefinedRow {
                    definition: d,
                    weight: d.weight(),
                    cap: d.cap(),
                    running: running.contains(&d.uuid),
                })
                .collect();
            if json {
                render::json(&rows)
            } else {
                render::definitions_table(&rows)
            }
            .into()
        }
        Command::Create(args) => {
            let spec = args.spec.spec();
            let outcomes = if args.count == 1 {
                let o = mgr.start_transient(args.uuid, &spec)?;
                note_outcome(&o);
                vec![o]
            } else {
                mgr.start_transient_batch(&spec, args.count as usize)?
            };
            if json {
                if args.count == 1 && args.spec.weight.is_none() && args.spec.cap.is_none() {
                    render::json(&serde_json::json!({ "uuid": outcomes[0].uuid }))
                } else {
                    render::json(&outcomes)
                }
            } else {
                outcomes.iter().map(|o| format!("{}\n", o.uuid)).collect()
            }
            .into()
        }
        Command::Remove(u) => {
            let uuid = u.get();
            mgr.remove(uuid)?;
            if json {
                render::json(&serde_json::json!({ "uuid": uuid, "removed": true }))
            } else {
                String::new()
            }
            .into()
        }
        Command::Modify(args) => verbs::modify(&mgr, args, json)?.into(),
        Command::Pool {
            parent_pos,
            parent,
            set_mb,
        } => {
            let parent = parent.as_ref().or(parent_pos.as_ref()).ok_or("no parent")?;
            let pool = match set_mb {
                Some(mb) => mgr.set_pool_mb(parent, *mb)?,
                None => mgr.pool(parent)?,
            };
            if json {
                render::json(&pool)
            } else {
                render::pool_text(&pool)
            }
            .into()
        }
        Command::Define(args) => {
            let mut spec = args.spec.spec();
            let mut uuid = args.uuid.or(args.uuid_pos);
            if let Some(file) = &args.from_xml {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let doc = xml::parse_node_device(&text)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                let from = doc
                    .to_spec()
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                spec = Spec {
                    parent: spec.parent.or(from.parent),
                    placement: spec.placement,
                    ..from
                };
                uuid = uuid.or(doc.uuid);
            }
            let (def, done) = mgr.define(uuid, &spec, args.start_mode())?;
            let o = Outcome {
                uuid: def.uuid,
                parent: def.parent.clone(),
                done,
            };
            note_outcome(&o);
            if json {
                render::json(&serde_json::json!({ "done": done, "definition": def }))
            } else {
                format!("{}\n", def.uuid)
            }
            .into()
        }
        Command::Undefine(args) => {
            let outcomes = mgr.undefine(args.uuid.get(), args.parent.as_deref())?;
            outcomes.iter().for_each(note_outcome);
            if json {
                render::json(&outcomes)
            } else {
                String::new()
            }
            .into()
        }
        Command::Start(args) => {
            let o = mgr.start(args.uuid.or(args.uuid_pos), &args.spec.spec())?;
            note_outcome(&o);
            if json {
                render::json(&o)
            } else {
                format!("{}\n", o.uuid)
            }
            .into()
        }
        Command::Stop(u) => {
            let o = mgr.stop(u.get())?;
            note_outcome(&o);
            if json {
                render::json(&o)
            } else {
                String::new()
            }
            .into()
        }
        Command::Xml {
            uuid,
            defined,
            hostdev,
            parent,
        } => {
            let uuid = uuid.get();
            let running = !defined && mgr.running(uuid)?.is_some();
            if *hostdev {
                if !running {
                    mgr.definition(uuid, parent.as_deref())?;
                }
                xml::hostdev(uuid, true).into()
            } else if running {
                xml::node_device(&mgr.instance_xml(uuid)?).into()
            } else {
                let d = mgr.definition(uuid, parent.as_deref())?;
                xml::node_device(&xml::MdevXml::from(&d)).into()
            }
        }
        Command::Metrics { listen: None } => metrics::render(&mgr.snapshot()?).into(),
        Command::Metrics { listen: Some(addr) } => {
            let addr = metrics::loopback_addr(addr)?;
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            note(&format!(
                "serving metrics on http://{}/metrics",
                listener.local_addr()?
            ));
            metrics::serve(listener, || {
                mgr.snapshot()
                    .map(|s| metrics::render(&s))
                    .map_err(|e| e.to_string())
            })?;
            String::new().into()
        }
        Command::Top { once, interval } => {
            let wait = std::time::Duration::from_secs_f64(*interval);
            let mut before = mgr.snapshot()?;
            let mut t0 = std::time::Instant::now();
            loop {
                std::thread::sleep(wait);
                let now = mgr.snapshot()?;
                let elapsed = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                t0 = std::time::Instant::now();
                let rows = top::rows(Some(&before), &now, elapsed);
                let text = if json {
                    render::json(&rows)
                } else {
                    top::render(&rows)
                };
                if *once {
                    break text.into();
                }
                let screen = if json {
                    text
                } else {
                    format!(
                        "\x1b[H\x1b[2Jvgpuctl top: {} vGPUs on {} parents, every {interval} s \
                         (ENGINE% of one engine; GMAC/S = 10^9 multiply-adds/s; \
                         PREEMPT/S = wake-up preemptions/s)\n\n{text}",
                        rows.len(),
                        now.parents.len()
                    )
                };
                print(&screen)?;
                before = now;
            }
        }
        Command::Apply { file, dry_run } => verbs::apply(&mgr, file, *dry_run, json)?.into(),
        Command::StartParent { parent } => {
            let results = mgr.start_parent(parent)?;
            let mut failed = false;
            let mut done = Vec::new();
            for (uuid, r) in results {
                match r {
                    Ok(o) => {
                        note_outcome(&o);
                        done.push(o);
                    }
                    Err(e) => {
                        failed = true;
                        eprintln!("vgpuctl: error: starting {uuid} on {parent}: {e}");
                    }
                }
            }
            let stdout = if json {
                render::json(&done)
            } else {
                done.iter()
                    .filter(|o| o.done == Done::Started)
                    .map(|o| format!("{}\n", o.uuid))
                    .collect()
            };
            Out { stdout, failed }
        }
    })
}

fn print(out: &str) -> Res<()> {
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

/// Logging to stderr (warnings always, debug with `-v`), without another dependency.
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
