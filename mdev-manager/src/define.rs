//! `define`, `undefine` and `modify --defined` (with `--live`): persistent
//! definitions, checked against the parents' room before anything is written.

use uuid::Uuid;

use crate::admission::{counting_definitions, find_parent};
use crate::definition::{check_attr, Definition, StartMode, ATTR_CAP, ATTR_WEIGHT};
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::lifecycle::{DefinitionUpdate, Done, Outcome, Spec};
use crate::manager::{InstanceUpdate, Manager};
use crate::model::Instance;

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
        // Only the parent in question is read: the given one, or the running
        // instance's; placement reads them all.
        let parents = match spec
            .parent
            .as_deref()
            .or(running.as_ref().map(|i| i.parent.as_str()))
        {
            Some(name) => vec![self.parent(name)?],
            None => self.parents()?,
        };
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
            let parents = match self.parent(&d.parent) {
                Ok(p) => vec![p],
                // Not there now (module not loaded): the definition waits for it.
                Err(Error::ParentNotFound { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
            let loads = self.definition_loads(&parents, uuid)?;
            self.admit_definition(&parents, &loads, &d)?;
        }
        self.write_definition(&d)?;
        Ok((d, Done::Modified))
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
