//! Where an instance may go: the committed load of each parent (running instances, or
//! definitions), admission against it, and placement (see [`crate::placement`]).

use std::collections::BTreeSet;
use uuid::Uuid;

use crate::definition::Definition;
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::lifecycle::Spec;
use crate::manager::Manager;
use crate::model::{Instance, Parent, VgpuType, TYPE_PREFIX};
use crate::placement::{choose, Need, ParentLoad};

impl<E: Environment> Manager<E> {
    /// The parent and type for `spec`: the given parent (admitted against `loads`), or
    /// the one placement chooses.
    pub(crate) fn place<'p>(
        &self,
        parents: &'p [Parent],
        loads: &[ParentLoad],
        spec: &Spec,
        type_spec: &str,
        live: bool,
    ) -> Result<(&'p Parent, &'p VgpuType)> {
        let parent = match &spec.parent {
            Some(name) => find_parent(parents, name)?,
            None => {
                let what = format!("a {type_spec} vGPU");
                let name = choose(
                    loads,
                    |l| {
                        let p = parents.iter().find(|p| p.name == l.parent)?;
                        let t = self.resolve_type(p, type_spec).ok()?;
                        Some(need_of(t, spec.weight))
                    },
                    spec.placement,
                    &what,
                );
                let name = match name {
                    Ok(n) => n,
                    Err(why) => {
                        // An unknown type is a type error, not a lack of room.
                        if let Some(p) = parents.first() {
                            self.resolve_type(p, type_spec)?;
                        }
                        return Err(Error::Admission(why));
                    }
                };
                find_parent(parents, &name)?
            }
        };
        let t = self.resolve_type(parent, type_spec)?;
        if spec.parent.is_some() {
            let mut need = need_of(t, spec.weight);
            if live {
                // The create path reports a full pool in the kernel's own terms.
                need.vram_mb = 0;
            }
            admit_on(loads, &parent.name, need, &format!("a {} vGPU", t.id))?;
        }
        Ok((parent, t))
    }

    /// Loads of running instances (what the kernel has reserved now). Instances are
    /// read only when a parent's policy is `fixed_share` (their weights count there).
    pub(crate) fn live_loads(&self, parents: &[Parent]) -> Result<Vec<ParentLoad>> {
        let mut instances: Option<Vec<Instance>> = None;
        let mut loads = Vec::with_capacity(parents.len());
        for p in parents {
            let (engines, fixed_share) = self.sched_of(&p.name)?;
            let weight_sum = if fixed_share {
                if instances.is_none() {
                    instances = Some(self.instances()?);
                }
                instances
                    .iter()
                    .flatten()
                    .filter(|i| i.parent == p.name)
                    .map(|i| i.weight)
                    .sum()
            } else {
                0
            };
            loads.push(ParentLoad {
                parent: p.name.clone(),
                pool_mb: p.pool_mb,
                used_mb: p.reserved_mb(),
                engines,
                fixed_share,
                weight_sum,
            });
        }
        Ok(loads)
    }

    /// Loads committed by definitions, plus running instances without one, leaving out
    /// `except` (the instance being defined). Only the running instances that have no
    /// definition are read.
    pub(crate) fn definition_loads(
        &self,
        parents: &[Parent],
        except: Uuid,
    ) -> Result<Vec<ParentLoad>> {
        self.definition_loads_with(parents, &self.definitions()?, &BTreeSet::from([except]))
    }

    /// [`Self::definition_loads`] from definitions already read, leaving out every
    /// UUID in `except`.
    pub(crate) fn definition_loads_with(
        &self,
        parents: &[Parent],
        defs: &[Definition],
        except: &BTreeSet<Uuid>,
    ) -> Result<Vec<ParentLoad>> {
        let mut skip: BTreeSet<Uuid> = defs.iter().map(|d| d.uuid).collect();
        skip.extend(except.iter().copied());
        let instances = self.instances_except(&skip)?;
        parents
            .iter()
            .map(|p| {
                let (engines, fixed_share) = self.sched_of(&p.name)?;
                let mut used_mb = 0u64;
                let mut weight_sum = 0u64;
                for d in defs
                    .iter()
                    .filter(|d| d.parent == p.name && !except.contains(&d.uuid))
                {
                    let t = p.types.iter().find(|t| t.id == d.mdev_type);
                    used_mb +=
                        t.map_or_else(|| quota_from_id(&d.mdev_type), |t| t.description.vram_mb);
                    weight_sum += d.weight().or(t.map(|t| t.description.weight)).unwrap_or(1);
                }
                for i in instances.iter().filter(|i| i.parent == p.name) {
                    used_mb += i.vram_mb;
                    weight_sum += i.weight;
                }
                Ok(ParentLoad {
                    parent: p.name.clone(),
                    pool_mb: p.pool_mb,
                    used_mb,
                    engines,
                    fixed_share,
                    weight_sum,
                })
            })
            .collect()
    }

    pub(crate) fn admit_definition(
        &self,
        parents: &[Parent],
        loads: &[ParentLoad],
        d: &Definition,
    ) -> Result<()> {
        let Some(p) = parents.iter().find(|p| p.name == d.parent) else {
            // A parent that is not there now (module not loaded): nothing to check
            // against; the definition waits for it.
            return Ok(());
        };
        let t = p
            .types
            .iter()
            .find(|t| t.id == d.mdev_type)
            .ok_or_else(|| Error::TypeNotFound {
                parent: p.name.clone(),
                type_id: d.mdev_type.clone(),
                known: format!("it does not offer {}", d.mdev_type),
            })?;
        let need = need_of(t, d.weight());
        admit_on(
            loads,
            &p.name,
            need,
            &format!("the definitions on {}", p.name),
        )
        .map_err(|e| match e {
            Error::Admission(why) => Error::Admission(format!(
                "{why} (counting every definition and undefined running instance there)"
            )),
            e => e,
        })
    }

    /// `(engines, policy is fixed_share)` of a parent.
    /// (`engines` is read only under `fixed_share`, the one policy it matters to.)
    fn sched_of(&self, parent: &str) -> Result<(u64, bool)> {
        let v = self.pool_dir(parent);
        let policy = vgpu_sysfs::io::read_attr(&v.join("policy")).unwrap_or_default();
        if policy != "fixed_share" {
            return Ok((1, false));
        }
        let engines = vgpu_sysfs::io::read_u64(&v.join("engines")).unwrap_or(1);
        Ok((engines, true))
    }
}

pub(crate) fn counting_definitions(e: Error) -> Error {
    match e {
        Error::Admission(why) => Error::Admission(format!(
            "{why} (counting every definition there, and every running instance without one)"
        )),
        e => e,
    }
}

/// Counts `need` as committed on `parent` (a vGPU planned in a batch).
pub(crate) fn commit(loads: &mut [ParentLoad], parent: &str, need: Need) {
    if let Some(l) = loads.iter_mut().find(|l| l.parent == parent) {
        l.commit(need);
    }
}

pub(crate) fn need_of(t: &VgpuType, weight: Option<u64>) -> Need {
    Need {
        vram_mb: t.description.vram_mb,
        weight: weight.unwrap_or(t.description.weight),
    }
}

pub(crate) fn admit_on(loads: &[ParentLoad], parent: &str, need: Need, what: &str) -> Result<()> {
    match loads.iter().find(|l| l.parent == parent) {
        Some(l) => l
            .admit(need, what)
            .map_err(|why| Error::Admission(format!("refused: {why}"))),
        None => Ok(()),
    }
}

pub(crate) fn find_parent<'p>(parents: &'p [Parent], name: &str) -> Result<&'p Parent> {
    parents.iter().find(|p| p.name == name).ok_or_else(|| {
        let mut known = parents
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if known.is_empty() {
            known = "none; is the vgpu_shim module loaded?".into();
        }
        Error::ParentNotFound {
            name: name.to_string(),
            known,
        }
    })
}

/// The quota a type id names (`vgpu_shim-1G` → 1024), for definitions of types the
/// parent does not offer now.
fn quota_from_id(id: &str) -> u64 {
    id.strip_prefix(TYPE_PREFIX)
        .and_then(|s| crate::units::parse_size_mb(s).ok())
        .unwrap_or(0)
}
