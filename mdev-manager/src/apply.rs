//! Many vGPUs in one process: `vgpuctl apply FILE` (a [`Manifest`] of definitions) and
//! `create --count N`. The system is read once; every vGPU is planned against loads
//! that count the ones planned before it, so admission is all or nothing and checked
//! before anything is written; then the writes (definitions first, each atomic, the
//! directories synced once; then the instances). If a write fails, everything this run
//! did is undone and the error names what failed.
//!
//! `apply` is idempotent: a vGPU already defined and running as the manifest says is
//! left alone; one that differs in weight, cap or start mode is changed (the running
//! instance too); a transient instance with the UUID is adopted (defined as it runs).
//! It never stops or removes anything: moving a running vGPU to another parent or
//! type is refused (stop it first), and vGPUs missing from the manifest are left be.

use serde::Serialize;
use std::collections::BTreeSet;
use uuid::Uuid;

use crate::admission::{admit_on, commit, counting_definitions, find_parent, need_of};
use crate::definition::{Definition, StartMode, ATTR_CAP, ATTR_WEIGHT};
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::manager::{InstanceUpdate, Manager};
use crate::manifest::{Entry, Manifest};
use crate::model::{Instance, Parent, VgpuType};
use crate::placement::{choose, Need, ParentLoad};

/// What `apply` did (or, with a dry run, would do) to a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DefinitionChange {
    /// Written anew (also when moved to another parent or type).
    Defined,
    /// Its weight, cap or start mode changed.
    Modified,
    /// As the manifest says already.
    Unchanged,
}

/// What `apply` did (or would do) to the running instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceChange {
    /// Created, with its attributes.
    Started,
    /// Running as the manifest says already.
    AlreadyRunning,
    /// Running; its weight or cap changed.
    Modified,
    /// Not running, and the manifest says `"running": false`.
    NotStarted,
}

/// One vGPU of an `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// The vGPU.
    pub uuid: Uuid,
    /// Its parent.
    pub parent: String,
    /// Its type id.
    #[serde(rename = "type")]
    pub type_id: String,
    /// What happened to its definition.
    pub definition: DefinitionChange,
    /// What happened to its instance.
    pub instance: InstanceChange,
}

/// One planned vGPU.
struct Step {
    applied: Applied,
    /// The definition to write (`None`: unchanged).
    write: Option<Definition>,
    /// The definition it replaces, to restore on failure (and to remove if it moved).
    old: Option<Definition>,
    /// The live change (for [`InstanceChange::Modified`]) and the values before it.
    modify: Option<(InstanceUpdate, InstanceUpdate)>,
}

/// What was done, in order, so a failure can take it back.
enum Undo {
    Restore(Definition),
    Unwrite(String, Uuid),
    Remove(Uuid),
    Modify(Uuid, InstanceUpdate),
}

impl<E: Environment> Manager<E> {
    /// Brings the system to what `manifest` says (see the module docs); with `dry_run`
    /// only plans and admits. Returns one [`Applied`] per vGPU, in manifest order.
    pub fn apply(&self, manifest: &Manifest, dry_run: bool) -> Result<Vec<Applied>> {
        let parents = self.parents()?;
        let defs = self.definitions()?;
        let devices = self.device_uuids()?;
        let mine: BTreeSet<Uuid> = manifest.vgpus.iter().map(|e| e.uuid).collect();
        let mut live = self.live_loads(&parents)?;
        let mut committed = self.definition_loads_with(&parents, &defs, &mine)?;
        let mut steps = Vec::with_capacity(manifest.vgpus.len());
        let mut problems = Vec::new();
        let ctx = Ctx {
            parents: &parents,
            defs: &defs,
            devices: &devices,
        };
        for (i, e) in manifest.vgpus.iter().enumerate() {
            match self.plan_one(e, &ctx, &mut live, &mut committed) {
                Ok(s) => steps.push(s),
                Err(err) => problems.push(format!("vgpus[{i}] {}: {err}", e.uuid)),
            }
        }
        if !problems.is_empty() {
            return Err(Error::Admission(format!(
                "nothing applied: {} of {} vGPUs cannot be: {}",
                problems.len(),
                manifest.vgpus.len(),
                problems.join("; ")
            )));
        }
        if !dry_run {
            self.execute(&parents, &steps)?;
        }
        Ok(steps.into_iter().map(|s| s.applied).collect())
    }

    fn plan_one(
        &self,
        e: &Entry,
        ctx: &Ctx<'_>,
        live: &mut [ParentLoad],
        committed: &mut [ParentLoad],
    ) -> Result<Step> {
        let u = e.uuid;
        let mut mine = ctx.defs.iter().filter(|d| d.uuid == u);
        let old = mine.next().cloned();
        if let Some(other) = mine.next() {
            return Err(Error::Conflict(format!(
                "defined on several parents ({}, {}): undefine all but one first",
                old.as_ref().map_or("", |d| d.parent.as_str()),
                other.parent
            )));
        }
        let running = if ctx.devices.contains(&u) {
            Some(self.running(u)?.ok_or_else(|| {
                Error::Conflict("the UUID is taken by another driver's mdev device".into())
            })?)
        } else {
            None
        };
        if let (Some(want), Some(i)) = (&e.parent, &running) {
            if *want != i.parent {
                return Err(Error::Conflict(format!(
                    "it runs on {}: stop it to move it to {want}",
                    i.parent
                )));
            }
        }
        let keep = e
            .parent
            .as_deref()
            .or(running.as_ref().map(|i| i.parent.as_str()));
        let keep = keep.or(old.as_ref().map(|d| d.parent.as_str()));
        let (p, t) = match keep {
            Some(name) => {
                let p = find_parent(ctx.parents, name)?;
                (p, self.resolve_type(p, &e.type_spec)?)
            }
            None => self.place_both(ctx.parents, live, committed, e)?,
        };
        if let Some(i) = running.as_ref().filter(|i| i.type_id != t.id) {
            return Err(Error::Conflict(format!(
                "it runs as {}: stop it to make it a {}",
                i.type_id, t.id
            )));
        }
        let def = desired_definition(e, p, t, old.as_ref(), running.as_ref());
        let change = match &old {
            None => DefinitionChange::Defined,
            Some(o) if *o == def => DefinitionChange::Unchanged,
            Some(o) if o.parent != def.parent || o.mdev_type != def.mdev_type => {
                DefinitionChange::Defined
            }
            Some(_) => DefinitionChange::Modified,
        };
        let need = need_of(t, def.weight());
        admit_on(committed, &p.name, need, &format!("a {} vGPU", t.id))
            .map_err(counting_definitions)?;
        commit(committed, &p.name, need);
        let (instance, modify) = match &running {
            Some(i) => {
                let after = InstanceUpdate {
                    weight: e.weight.filter(|w| *w != i.weight),
                    cap: e.cap.filter(|c| *c != i.cap),
                };
                if after.weight.is_none() && after.cap.is_none() {
                    (InstanceChange::AlreadyRunning, None)
                } else {
                    if let Some(w) = after.weight.filter(|w| *w > i.weight) {
                        let more = Need {
                            vram_mb: 0,
                            weight: w - i.weight,
                        };
                        admit_on(live, &p.name, more, &format!("{u} at weight {w}"))?;
                        commit(live, &p.name, more);
                    }
                    let before = InstanceUpdate {
                        weight: after.weight.map(|_| i.weight),
                        cap: after.cap.map(|_| i.cap),
                    };
                    (InstanceChange::Modified, Some((after, before)))
                }
            }
            None if e.running => {
                admit_on(live, &p.name, need, &format!("a {} vGPU", t.id))?;
                commit(live, &p.name, need);
                (InstanceChange::Started, None)
            }
            None => (InstanceChange::NotStarted, None),
        };
        Ok(Step {
            applied: Applied {
                uuid: u,
                parent: p.name.clone(),
                type_id: t.id.clone(),
                definition: change,
                instance,
            },
            write: (change != DefinitionChange::Unchanged).then_some(def),
            old,
            modify,
        })
    }

    /// Places a vGPU that has no parent yet where both its definition and (if it is to
    /// run) its instance fit.
    fn place_both<'p>(
        &self,
        parents: &'p [Parent],
        live: &[ParentLoad],
        committed: &[ParentLoad],
        e: &Entry,
    ) -> Result<(&'p Parent, &'p VgpuType)> {
        let loads: Vec<ParentLoad> = committed
            .iter()
            .map(|c| match live.iter().find(|l| l.parent == c.parent) {
                Some(l) if e.running => c.tighter(l),
                _ => c.clone(),
            })
            .collect();
        let what = format!("a {} vGPU", e.type_spec);
        let name = choose(
            &loads,
            |l| {
                let p = parents.iter().find(|p| p.name == l.parent)?;
                let t = self.resolve_type(p, &e.type_spec).ok()?;
                Some(need_of(t, e.weight))
            },
            e.placement,
            &what,
        );
        let name = match name {
            Ok(n) => n,
            Err(why) => {
                if let Some(p) = parents.first() {
                    self.resolve_type(p, &e.type_spec)?;
                }
                return Err(counting_definitions(Error::Admission(why)));
            }
        };
        let p = find_parent(parents, &name)?;
        Ok((p, self.resolve_type(p, &e.type_spec)?))
    }

    /// Carries out a plan; on a failure undoes what it did.
    fn execute(&self, parents: &[Parent], steps: &[Step]) -> Result<()> {
        let mut done = Vec::new();
        match self.execute_steps(parents, steps, &mut done) {
            Ok(()) => Ok(()),
            Err(error) => {
                let mut undo_errors = Vec::new();
                for u in done.into_iter().rev() {
                    let r = match &u {
                        Undo::Restore(d) => self.write_definition(d),
                        Undo::Unwrite(p, uuid) => self.remove_definition(p, *uuid),
                        Undo::Remove(uuid) => self.remove(*uuid),
                        Undo::Modify(uuid, back) => self.modify(*uuid, *back).map(|_| ()),
                    };
                    if let Err(e) = r {
                        undo_errors.push(e.to_string());
                    }
                }
                Err(Error::Undone {
                    error: Box::new(error),
                    undo_errors,
                })
            }
        }
    }

    fn execute_steps(
        &self,
        parents: &[Parent],
        steps: &[Step],
        done: &mut Vec<Undo>,
    ) -> Result<()> {
        let writes: Vec<Definition> = steps.iter().filter_map(|s| s.write.clone()).collect();
        // Record the undo first: a failing batch write may have written some files.
        for s in steps {
            if let Some(d) = &s.write {
                match &s.old {
                    Some(o) if o.parent == d.parent => done.push(Undo::Restore(o.clone())),
                    _ => done.push(Undo::Unwrite(d.parent.clone(), d.uuid)),
                }
            }
        }
        if let Err(e) = self.write_definitions(&writes) {
            // Only the files that exist can be taken back.
            done.retain(|u| match u {
                Undo::Unwrite(p, uuid) => self.definition_path(p, *uuid).exists(),
                _ => true,
            });
            return Err(e);
        }
        for s in steps {
            let a = &s.applied;
            if let (Some(o), Some(_)) = (&s.old, &s.write) {
                if o.parent != a.parent {
                    self.remove_definition(&o.parent, o.uuid)?;
                    done.push(Undo::Restore(o.clone()));
                }
            }
            match (a.instance, s.modify) {
                (InstanceChange::Started, _) => {
                    let p = find_parent(parents, &a.parent)?;
                    let t = find_type(p, &a.type_id)?;
                    let attrs = s
                        .write
                        .as_ref()
                        .or(s.old.as_ref())
                        .map_or(&[][..], |d| &d.attrs);
                    self.bring_up(p, t, a.uuid, attrs)?;
                    done.push(Undo::Remove(a.uuid));
                }
                (InstanceChange::Modified, Some((after, before))) => {
                    self.modify(a.uuid, after)?;
                    done.push(Undo::Modify(a.uuid, before));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What planning looks at besides the loads.
struct Ctx<'a> {
    parents: &'a [Parent],
    defs: &'a [Definition],
    devices: &'a BTreeSet<Uuid>,
}

/// The definition a manifest entry asks for: the existing one (or, for a running
/// instance without one, its live weight and cap) with the entry's values over it.
fn desired_definition(
    e: &Entry,
    p: &Parent,
    t: &VgpuType,
    old: Option<&Definition>,
    running: Option<&Instance>,
) -> Definition {
    let mut d = match (old, running) {
        (Some(o), _) => Definition {
            parent: p.name.clone(),
            mdev_type: t.id.clone(),
            ..o.clone()
        },
        (None, Some(i)) => {
            let mut d = Definition::new(e.uuid, &p.name, &t.id, StartMode::Manual);
            d.set_attr(ATTR_WEIGHT, i.weight.to_string());
            d.set_attr(ATTR_CAP, i.cap.to_string());
            d
        }
        (None, None) => Definition::new(e.uuid, &p.name, &t.id, StartMode::Manual),
    };
    if let Some(s) = e.start {
        d.start = s;
    }
    if let Some(w) = e.weight {
        d.set_attr(ATTR_WEIGHT, w.to_string());
    }
    if let Some(c) = e.cap {
        d.set_attr(ATTR_CAP, c.to_string());
    }
    d
}

fn find_type<'p>(p: &'p Parent, id: &str) -> Result<&'p VgpuType> {
    p.types
        .iter()
        .find(|t| t.id == id)
        .ok_or_else(|| Error::TypeNotFound {
            parent: p.name.clone(),
            type_id: id.to_string(),
            known: format!("it does not offer {id}"),
        })
}
