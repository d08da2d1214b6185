//! `start`, `stop`, `start-parent` and `create --count`: bringing definitions and
//! transient instances up (create, then the attributes in order; a failed attribute
//! removes the instance again) and down.

use uuid::Uuid;

use crate::admission::{admit_on, commit, need_of};
use crate::definition::{check_attr, Definition, StartMode, ATTR_CAP, ATTR_WEIGHT};
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::lifecycle::{Done, Outcome, Spec};
use crate::manager::Manager;
use crate::placement::Need;

impl<E: Environment> Manager<E> {
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
        // Only the definition's parent, and of it only the type, is read.
        let p = &self.parent_for_type(&d.parent, &d.mdev_type)?;
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
        let loads = self.live_loads(std::slice::from_ref(p))?;
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
        // With a parent given only that one is read; placement reads them all.
        let parents = match &spec.parent {
            Some(name) => vec![self.parent_for_type(name, type_spec)?],
            None => self.parents()?,
        };
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

    /// Creates `count` transient instances from `spec` (placed one after another, all
    /// admitted before the first is created); on a failure the ones created are
    /// removed again.
    pub fn start_transient_batch(&self, spec: &Spec, count: usize) -> Result<Vec<Outcome>> {
        let type_spec = spec
            .type_spec
            .as_deref()
            .ok_or_else(|| Error::Invalid("say which type to create (--type)".into()))?;
        let parents = match &spec.parent {
            Some(name) => vec![self.parent_for_type(name, type_spec)?],
            None => self.parents()?,
        };
        let mut live = self.live_loads(&parents)?;
        let mut plan = Vec::with_capacity(count);
        for k in 0..count {
            // Admitted against the loads with the ones before it counted.
            let (p, t) = self
                .place(&parents, &live, spec, type_spec, false)
                .map_err(|e| match e {
                    Error::Admission(why) => Error::Admission(format!(
                        "{why} (vGPU {} of {count}; nothing created)",
                        k + 1
                    )),
                    e => e,
                })?;
            commit(&mut live, &p.name, need_of(t, spec.weight));
            plan.push((p, t, Uuid::new_v4()));
        }
        let mut attrs = Vec::new();
        if let Some(w) = spec.weight {
            attrs.push((ATTR_WEIGHT.to_string(), w.to_string()));
        }
        if let Some(c) = spec.cap {
            attrs.push((ATTR_CAP.to_string(), c.to_string()));
        }
        attrs.extend(spec.attrs.iter().cloned());
        let mut out: Vec<Outcome> = Vec::with_capacity(count);
        for (p, t, uuid) in plan {
            if let Err(error) = self.bring_up(p, t, uuid, &attrs) {
                let undo_errors = out
                    .iter()
                    .filter_map(|o| self.remove(o.uuid).err().map(|e| e.to_string()))
                    .collect();
                return Err(Error::Undone {
                    error: Box::new(error),
                    undo_errors,
                });
            }
            out.push(Outcome {
                uuid,
                parent: p.name.clone(),
                done: Done::Started,
            });
        }
        Ok(out)
    }
}
