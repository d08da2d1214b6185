//! The verbs with more to them than a call and a print: `modify` (live, defined or
//! both) and `apply` (a manifest, with its summary).

use vgpu_mdev_manager::render;
use vgpu_mdev_manager::{
    Applied, DefinitionChange, DefinitionUpdate, Done, Environment, InstanceChange, InstanceUpdate,
    Manager, Manifest, StartMode,
};

use crate::{cli, note, Res};

pub fn modify<E: Environment>(mgr: &Manager<E>, args: &cli::ModifyArgs, json: bool) -> Res<String> {
    let uuid = args.uuid.get();
    let start = match (args.auto, args.manual) {
        (true, _) => Some(StartMode::Auto),
        (_, true) => Some(StartMode::Manual),
        _ => None,
    };
    if !args.defined {
        let instance = mgr.modify(
            uuid,
            InstanceUpdate {
                weight: args.weight,
                cap: args.cap,
            },
        )?;
        return Ok(if json {
            render::json(&instance)
        } else {
            String::new()
        });
    }
    let update = DefinitionUpdate {
        weight: args.weight,
        cap: args.cap,
        start,
    };
    if args.live {
        let (instance, def) = mgr.modify_both(uuid, args.parent.as_deref(), update)?;
        return Ok(if json {
            render::json(&serde_json::json!({ "instance": instance, "definition": def }))
        } else {
            String::new()
        });
    }
    let (def, done) = mgr.modify_definition(uuid, args.parent.as_deref(), update)?;
    if done == Done::Unchanged {
        note(&format!(
            "the definition of {uuid} already says so; nothing written"
        ));
    }
    Ok(if json {
        render::json(&def)
    } else {
        String::new()
    })
}

pub fn apply<E: Environment>(
    mgr: &Manager<E>,
    file: &std::path::Path,
    dry_run: bool,
    json: bool,
) -> Res<String> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?
    };
    let manifest = Manifest::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let applied = mgr.apply(&manifest, dry_run)?;
    let count = |f: &dyn Fn(&Applied) -> bool| applied.iter().filter(|a| f(a)).count();
    let defined = count(&|a| a.definition == DefinitionChange::Defined);
    let modified = count(&|a| {
        a.definition == DefinitionChange::Modified || a.instance == InstanceChange::Modified
    });
    let started = count(&|a| a.instance == InstanceChange::Started);
    let as_is = count(&|a| {
        a.definition == DefinitionChange::Unchanged
            && matches!(
                a.instance,
                InstanceChange::AlreadyRunning | InstanceChange::NotStarted
            )
    });
    note(&format!(
        "{}{} vGPUs: {defined} defined, {started} started, {modified} changed, {as_is} as the \
         manifest says already",
        if dry_run {
            "dry run, nothing written: "
        } else {
            ""
        },
        applied.len()
    ));
    Ok(if json {
        render::json(&applied)
    } else {
        render::applied_table(&applied)
    })
}
