//! Persistent and transient instances: `define`, `undefine`, `start`, `stop`,
//! `start-parent` and `modify --defined`. Every verb is idempotent where that makes
//! sense (starting a running instance, defining an identical definition, stopping a
//! stopped one, undefining an undefined one all succeed and say so) and checks
//! everything it can before it writes anything. Callers that change things hold the
//! [`Lock`](crate::lock::Lock).

use log::debug;
use serde::Serialize;
use uuid::Uuid;

use crate::admission::{admit_on, counting_definitions, find_parent};
use crate::definition::{check_attr, Definition, StartMode, ATTR_CAP, ATTR_WEIGHT};
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::manager::{InstanceUpdate, Manager};
use crate::model::{Instance, Parent, VgpuType};
use crate::placement::{Need, Placement};
use crate::sysfs::{write_attr, write_error};

/// What to bring up: a parent (or a placement policy), a type and scheduling knobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    /// The parent; `None` = choose one by `placement`.
    pub parent: Option<String>,
    /// Any spelling of the type.
    pub type_spec: Option<String>,
    /// Weight (1–100); `None` = the type's default.
    pub weight: Option<u64>,
    /// Cap (0–100); `None` = none.
    pub cap: Option<u64>,
    /// How to choose a parent when none is given.
    pub placement: Placement,
    /// Further attributes to write after creation, in order (from a libvirt document);
    /// `vgpu/weight` and `vgpu/cap` go in `weight` and `cap`.
    pub attrs: Vec<(String, String)>,
}

/// What a verb did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
    /// A definition was written.
    Defined,
    /// An identical definition existed; nothing written.
    Unchanged,
    /// A definition was removed.
    Undefined,
    /// There was no definition to remove.
    NotDefined,
    /// An instance was created (and its attributes applied).
    Started,
    /// The instance was running already; nothing written.
    AlreadyRunning,
    /// An instance was removed.
    Stopped,
    /// The instance was not running; nothing written.
    NotRunning,
    /// A definition and/or a running instance were changed.
    Modified,
}

/// The result of one verb on one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The instance.
    pub uuid: Uuid,
    /// Its parent.
    pub parent: String,
    /// What happened.
    pub done: Done,
}

impl Outcome {
    /// A line for the operator when nothing had to be done (idempotent re-runs).
    pub fn note(&self) -> Option<String> {
        let u = self.uuid;
        Some(match self.done {
            Done::Unchanged => format!("{u} is already defined on {} as given", self.parent),
            Done::NotDefined => format!("{u} is not defined; nothing to undefine"),
            Done::AlreadyRunning => format!("{u} is already running on {}", self.parent),
            Done::NotRunning => format!("{u} is not running; nothing to stop"),
            _ => return None,
        })
    }
}

/// A change to a definition; `None` leaves a field alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefinitionUpdate {
    /// New weight.
    pub weight: Option<u64>,
    /// New cap.
    pub cap: Option<u64>,
    /// New start mode.
    pub start: Option<StartMode>,
}

impl<E: Environment> Manager<E> {
    /// Defines an instance. With the UUID of a running instance and no type, captures
    /// it as it runs: parent, type, and its live weight and cap (given values win).
    /// Otherwise the type is required, and without a parent one is chosen by
    /// `spec.placement` among the parents whose definitions leave room.
    pub fn define(
        &self,
        uuid: Option<Uuid>,
        spec: &Spec,
        start: StartMode,
    ) -> Result<(Definition, Done)> {
        let running = match uuid {
            Some(u) => self.running(u)?,
            None => None,
        };
        let uuid = uuid.unwrap_or_else(Uuid::new_v4);
        let parents = self.parents()?;
        let mut def = match (&running, &spec.type_spec) {
            (Some(i), None) => {
                if let Some(p) = spec.parent.as_deref().filter(|p| *p != i.parent) {
                    return Err(Error::Conflict(format!(
                        "{uuid} is running on {}, not {p}: leave out --parent to capture it",
                        i.parent
                    )));
                }
                let mut d = Definition::new(uuid, &i.parent, &i.type_id, start);
                d.set_attr(ATTR_WEIGHT, spec.weight.unwrap_or(i.weight).to_string());
                d.set_attr(ATTR_CAP, spec.cap.unwrap_or(i.cap).to_string());
                d
            }
            (_, None) => {
                return Err(Error::Invalid(
                    "say which type to define (--type), or give the UUID of a running \
                     instance to capture it"
                        .into(),
                ))
            }
            (_, Some(type_spec)) => {
                let mut spec = spec.clone();
                if let Some(i) = &running {
                    // A definition for a running instance must describe it.
                    let p = find_parent(&parents, spec.parent.as_deref().unwrap_or(&i.parent))?;
                    if p.name != i.parent || self.resolve_type(p, type_spec)?.id != i.type_id {
                        return Err(Error::Conflict(format!(
                            "{uuid} is running on {} as {}: a definition for it must match \
                             (leave out --type and --parent to capture it)",
                            i.parent, i.type_id
                        )));
                    }
                    spec.parent = Some(i.parent.clone());
                }
                let loads = self.definition_loads(&parents, uuid)?;
                let (parent, t) = self
                    .place(&parents, &loads, &spec, type_spec, false)
                    .map_err(counting_definitions)?;
                let mut d = Definition::new(uuid, &parent.name, &t.id, start);
                if let Some(w) = spec.weight {
                    d.set_attr(ATTR_WEIGHT, w.to_string());
                }
                if let Some(c) = spec.cap {
                    d.set_attr(ATTR_CAP, c.to_string());
                }
                for (k, v) in &spec.attrs {
                    check_attr(k, v).map_err(Error::Invalid)?;
                    d.set_attr(k, v.clone());
                }
                d
            }
        };
        def.start = start;
        if let Some(existing) = self.definitions_of(uuid)?.into_iter().next() {
            if existing.same_device(&def) && existing.start == def.start {
                return Ok((existing, Done::Unchanged));
            }
            return Err(Error::Conflict(format!(
                "{uuid} is already defined on {} as {} ({}{}): change it with `vgpuctl modify \
                 --defined`, or undefine it first",
                existing.parent,
                existing.mdev_type,
                existing.start,
                describe_knobs(&existing)
            )));
        }
        if spec.type_spec.is_none() {
            // Captured from a running instance: placement did not look at the definitions.
            let loads = self.definition_loads(&parents, uuid)?;
            self.admit_definition(&parents, &loads, &def)?;
        }
        self.write_definition(&def)?;
        Ok((def, Done::Defined))
    }

    /// Removes the definition(s) of `uuid` (on `parent` if given). A running instance
    /// keeps running.
    pub fn undefine(&self, uuid: Uuid, parent: Option<&str>) -> Result<Vec<Outcome>> {
        let mut defs = self.definitions_of(uuid)?;
        if let Some(p) = parent {
            defs.retain(|d| d.parent == p);
        }
        if defs.is_empty() {
            return Ok(vec![Outcome {
                uuid,
                parent: parent.unwrap_or("-").to_string(),
                done: Done::NotDefined,
            }]);
        }
        let mut out = Vec::new();
        for d in defs {
            self.remove_definition(&d.parent, uuid)?;
            out.push(Outcome {
                uuid,
                parent: d.parent,
                done: Done::Undefined,
            });
        }
        Ok(out)
    }

    /// Starts an instance: the definition of `uuid` if there is one and `spec` names no
    /// type (or the same), else a transient instance from `spec`.
    pub fn start(&self, uuid: Option<Uuid>, spec: &Spec) -> Result<Outcome> {
        if let Some(u) = uuid {
            let defs = self.definitions_of(u)?;
            let defs: Vec<_> = defs
                .into_iter()
                .filter(|d| spec.parent.as_deref().is_none_or(|p| p == d.parent))
                .collect();
            if defs.len() > 1 {
                return Err(Error::Conflict(format!(
                    "{u} is defined on several parents: say which with --parent"
                )));
            }
            if let Some(d) = defs.into_iter().next() {
                if spec.weight.is_some() || spec.cap.is_some() {
                    return Err(Error::Invalid(format!(
                        "{u} is defined: change its weight or cap with `vgpuctl modify \
                         --defined` (and --live), not on start"
                    )));
                }
                if let Some(t) = &spec.type_spec {
                    let p = self.parent(&d.parent)?;
                    if self.resolve_type(&p, t)?.id != d.mdev_type {
                        return Err(Error::Conflict(format!(
                            "{u} is defined on {} as {}, not {t}",
                            d.parent, d.mdev_type
                        )));
                    }
                }
                return self.start_definition(&d);
            }
        }
        self.start_transient(uuid, spec)
    }

    /// Brings up a definition (as mdevctl does: create, then write its attributes in
    /// order; on a failed attribute the instance is removed again).
    pub fn start_definition(&self, d: &Definition) -> Result<Outcome> {
        if let Some(i) = self.running(d.uuid)? {
            if i.parent != d.parent || i.type_id != d.mdev_type {
                return Err(Error::Conflict(format!(
                    "{} is running on {} as {}, but defined on {} as {}",
                    d.uuid, i.parent, i.type_id, d.parent, d.mdev_type
                )));
            }
            return Ok(Outcome {
                uuid: d.uuid,
                parent: d.parent.clone(),
                done: Done::AlreadyRunning,
            });
        }
        for (k, v) in &d.attrs {
            check_attr(k, v)
                .map_err(|e| Error::Invalid(format!("definition of {}: {e}", d.uuid)))?;
        }
        let parents = self.parents()?;
        let p = find_parent(&parents, &d.parent)?;
        let t = p
            .types
            .iter()
            .find(|t| t.id == d.mdev_type)
            .ok_or_else(|| Error::TypeNotFound {
                parent: p.name.clone(),
                type_id: d.mdev_type.clone(),
                known: format!(
                    "the definition of {} names type {}, which it does not offer",
                    d.uuid, d.mdev_type
                ),
            })?;
        let loads = self.live_loads(&parents)?;
        let need = Need {
            vram_mb: t.description.vram_mb,
            weight: d.weight().unwrap_or(t.description.weight),
        };
        admit_on(&loads, &p.name, need, &format!("{} ({})", d.uuid, t.id))?;
        match self.bring_up(p, t, d.uuid, &d.attrs) {
            // Another tool (mdevctl's own udev rule, say) started it just now.
            Err(Error::UuidInUse(_))
                if self
                    .running(d.uuid)?
                    .is_some_and(|i| i.parent == d.parent && i.type_id == d.mdev_type) =>
            {
                return Ok(Outcome {
                    uuid: d.uuid,
                    parent: d.parent.clone(),
                    done: Done::AlreadyRunning,
                })
            }
            r => r?,
        }
        Ok(Outcome {
            uuid: d.uuid,
            parent: p.name.clone(),
            done: Done::Started,
        })
    }

    /// Creates an instance that is not defined, from `spec` (type required; parent
    /// chosen by placement when not given), and applies its weight and cap.
    pub fn start_transient(&self, uuid: Option<Uuid>, spec: &Spec) -> Result<Outcome> {
        let type_spec = spec.type_spec.as_deref().ok_or_else(|| {
            Error::Invalid(match uuid {
                Some(u) => format!("{u} is not defined: say which type to start (--type)"),
                None => "say which type to start (--type), or the UUID of a definition".into(),
            })
        })?;
        if let Some(u) = uuid {
            if let Some(i) = self.running(u)? {
                let p = self.parent(&i.parent)?;
                let same_type = self.resolve_type(&p, type_spec)?.id == i.type_id;
                if same_type && spec.parent.as_deref().is_none_or(|x| x == i.parent) {
                    return Ok(Outcome {
                        uuid: u,
                        parent: i.parent,
                        done: Done::AlreadyRunning,
                    });
                }
                return Err(Error::UuidInUse(u));
            }
        }
        let uuid = uuid.unwrap_or_else(Uuid::new_v4);
        let parents = self.parents()?;
        let loads = self.live_loads(&parents)?;
        let (p, t) = self.place(&parents, &loads, spec, type_spec, true)?;
        let mut attrs = Vec::new();
        if let Some(w) = spec.weight {
            attrs.push((ATTR_WEIGHT.to_string(), w.to_string()));
        }
        if let Some(c) = spec.cap {
            attrs.push((ATTR_CAP.to_string(), c.to_string()));
        }
        for (k, v) in &spec.attrs {
            check_attr(k, v).map_err(Error::Invalid)?;
            attrs.push((k.clone(), v.clone()));
        }
        self.bring_up(p, t, uuid, &attrs)?;
        Ok(Outcome {
            uuid,
            parent: p.name.clone(),
            done: Done::Started,
        })
    }

    /// Removes a running instance (its definition stays).
    pub fn stop(&self, uuid: Uuid) -> Result<Outcome> {
        match self.running(uuid)? {
            None => Ok(Outcome {
                uuid,
                parent: "-".into(),
                done: Done::NotRunning,
            }),
            Some(i) => {
                self.remove(uuid)?;
                Ok(Outcome {
                    uuid,
                    parent: i.parent,
                    done: Done::Stopped,
                })
            }
        }
    }

    /// Starts every `auto` definition of `parent` (what udev runs when the parent
    /// registers). One failure does not stop the others; each result is returned.
    pub fn start_parent(&self, parent: &str) -> Result<Vec<(Uuid, Result<Outcome>)>> {
        Ok(self
            .definitions()?
            .into_iter()
            .filter(|d| d.parent == parent && d.start == StartMode::Auto)
            .map(|d| (d.uuid, self.start_definition(&d)))
            .collect())
    }

    /// Changes a definition's weight, cap or start mode; returns it as written.
    pub fn modify_definition(
        &self,
        uuid: Uuid,
        parent: Option<&str>,
        update: DefinitionUpdate,
    ) -> Result<(Definition, Done)> {
        let mut d = self.definition(uuid, parent)?;
        let before = d.clone();
        if let Some(w) = update.weight {
            d.set_attr(ATTR_WEIGHT, w.to_string());
        }
        if let Some(c) = update.cap {
            d.set_attr(ATTR_CAP, c.to_string());
        }
        if let Some(s) = update.start {
            d.start = s;
        }
        for (k, v) in &d.attrs {
            check_attr(k, v).map_err(Error::Invalid)?;
        }
        if d == before {
            return Ok((d, Done::Unchanged));
        }
        if update.weight.is_some() {
            let parents = self.parents()?;
            let loads = self.definition_loads(&parents, uuid)?;
            self.admit_definition(&parents, &loads, &d)?;
        }
        self.write_definition(&d)?;
        Ok((d, Done::Modified))
    }

    /// The running vgpu instance with this UUID, if any.
    pub fn running(&self, uuid: Uuid) -> Result<Option<Instance>> {
        match self.instance(uuid) {
            Ok(i) => Ok(Some(i)),
            Err(Error::InstanceNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the instance, then writes each attribute in order; if one fails the
    /// instance is removed again and the error returned.
    fn bring_up(
        &self,
        p: &Parent,
        t: &VgpuType,
        uuid: Uuid,
        attrs: &[(String, String)],
    ) -> Result<()> {
        self.create_on(p, t, uuid)?;
        let dir = self.instance_dir(uuid);
        for (k, v) in attrs {
            let path = dir.join(k);
            debug!("writing {v} to {}", path.display());
            if let Err(e) = write_attr(&path, v) {
                let error = Box::new(write_error(path, e, format!("{k}={v} for {uuid}")));
                let remove_error = self.remove(uuid).err().map(Box::new);
                return Err(Error::RolledBack {
                    uuid,
                    error,
                    remove_error,
                });
            }
        }
        Ok(())
    }
}

fn describe_knobs(d: &Definition) -> String {
    let mut s = String::new();
    if let Some(w) = d.weight() {
        s.push_str(&format!(", weight {w}"));
    }
    if let Some(c) = d.cap() {
        s.push_str(&format!(", cap {c}"));
    }
    s
}

/// Applies a live change and a definition change together, checking both exist first
/// and undoing the live change if the definition cannot be written.
impl<E: Environment> Manager<E> {
    /// `modify --live --defined`.
    pub fn modify_both(
        &self,
        uuid: Uuid,
        parent: Option<&str>,
        update: DefinitionUpdate,
    ) -> Result<(Instance, Definition)> {
        let before = self.instance(uuid)?;
        self.definition(uuid, parent)?;
        let live = InstanceUpdate {
            weight: update.weight,
            cap: update.cap,
        };
        let after = if live.weight.is_some() || live.cap.is_some() {
            self.modify(uuid, live)?
        } else {
            before.clone()
        };
        match self.modify_definition(uuid, parent, update) {
            Ok((d, _)) => Ok((after, d)),
            Err(e) => {
                let undo = InstanceUpdate {
                    weight: live.weight.map(|_| before.weight),
                    cap: live.cap.map(|_| before.cap),
                };
                if undo.weight.is_some() || undo.cap.is_some() {
                    let _ = self.modify(uuid, undo);
                }
                Err(e)
            }
        }
    }
}
