//! Reading and changing vgpu parents and instances through sysfs.

use log::debug;
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use uuid::Uuid;

use crate::env::Environment;
use crate::error::{write_error, Error, Result};
use crate::model::{Instance, Parent, PoolInfo, VgpuType, CAP_RANGE, POOL_MB_RANGE, WEIGHT_RANGE};
use crate::units;
use vgpu_sysfs::io::read_u64;
use vgpu_sysfs::read;

/// The vgpu mdev manager: every operation of `vgpuctl`, against one [`Environment`].
///
/// Only parents offering `vgpu_shim-*` types, and instances of those types, are
/// managed; every other mdev parent or device is ignored.
#[derive(Debug, Clone)]
pub struct Manager<E: Environment> {
    env: E,
}

/// A change to an instance's scheduling parameters; `None` leaves a value alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceUpdate {
    /// New weight, 1–100.
    pub weight: Option<u64>,
    /// New cap, 0–100 (0 = none).
    pub cap: Option<u64>,
}

impl<E: Environment> Manager<E> {
    /// A manager working on `env`.
    pub fn new(env: E) -> Self {
        Self { env }
    }

    /// The environment in use.
    pub fn env(&self) -> &E {
        &self.env
    }

    /// All managed parents, in natural name order (`vgpu_shim2` before `vgpu_shim10`).
    pub fn parents(&self) -> Result<Vec<Parent>> {
        Ok(read::parents(&self.env)?)
    }

    /// One managed parent by name (only its directory is read).
    pub fn parent(&self, name: &str) -> Result<Parent> {
        if let Some(p) = read::parent(&self.env, name, |_| true)? {
            return Ok(p);
        }
        let parents = self.parents()?;
        let mut known = join_or_none(parents.iter().map(|p| p.name.as_str()));
        if parents.is_empty() {
            known.push_str("; is the vgpu_shim module loaded?");
        }
        Err(Error::ParentNotFound {
            name: name.to_string(),
            known,
        })
    }

    /// A parent with only the type `spelling` names read, when the spelling names a type
    /// directory (`vgpu_shim-1G`, `1G`, `1g`); otherwise ([`Self::parent`]) with all its
    /// types. For the paths that create one instance of one type: the other types'
    /// attributes are not needed there, and under emulation every file read counts.
    pub(crate) fn parent_for_type(&self, name: &str, spelling: &str) -> Result<Parent> {
        let found = match units::type_dir_name(spelling) {
            Some(id) => read::parent(&self.env, name, |t| t.eq_ignore_ascii_case(&id))?,
            None => None,
        };
        match found {
            Some(p) => Ok(p),
            None => self.parent(name),
        }
    }

    /// The types of one parent, or of all managed parents.
    pub fn types(&self, parent: Option<&str>) -> Result<Vec<VgpuType>> {
        Ok(match parent {
            Some(name) => self.parent(name)?.types,
            None => self.parents()?.into_iter().flat_map(|p| p.types).collect(),
        })
    }

    /// Creates an instance of `type_id` on `parent` and returns its UUID.
    ///
    /// `type_id` is any unambiguous spelling of a type ([`units::resolve_type`]:
    /// `vgpu_shim-256M`, `256M`, `256m`, `vgpu 256M`). Without `uuid` a random (v4) one is
    /// generated. Fails before writing anything if the UUID is taken or the type has no
    /// available instance.
    pub fn create(&self, parent: &str, type_id: &str, uuid: Option<Uuid>) -> Result<Uuid> {
        let p = self.parent(parent)?;
        let t = self.resolve_type(&p, type_id)?;
        let uuid = uuid.unwrap_or_else(Uuid::new_v4);
        self.create_on(&p, t, uuid)?;
        Ok(uuid)
    }

    /// The type of `parent` that `spelling` names, or an error saying what is known.
    pub fn resolve_type<'p>(&self, parent: &'p Parent, spelling: &str) -> Result<&'p VgpuType> {
        let id =
            units::resolve_type(spelling, &parent.types).map_err(|reason| Error::TypeNotFound {
                parent: parent.name.clone(),
                type_id: spelling.to_string(),
                known: reason,
            })?;
        parent
            .types
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| Error::TypeNotFound {
                parent: parent.name.clone(),
                type_id: spelling.to_string(),
                known: join_or_none(parent.types.iter().map(|t| t.id.as_str())),
            })
    }

    /// Writes `uuid` to the type's `create`, after checking that the UUID is free and
    /// the type has an available instance.
    pub(crate) fn create_on(&self, p: &Parent, t: &VgpuType, uuid: Uuid) -> Result<()> {
        if fs::symlink_metadata(self.instance_dir(uuid)).is_ok() {
            return Err(Error::UuidInUse(uuid));
        }
        if t.available_instances == 0 {
            return Err(Error::NoneAvailable {
                parent: p.name.clone(),
                type_id: t.id.clone(),
                free_mb: p.pool_free_mb,
                need_mb: t.description.vram_mb,
            });
        }
        let path = self.type_dir(&p.name, &t.id).join("create");
        debug!("writing {uuid} to {}", path.display());
        self.env
            .write_attr(&path, &uuid.to_string())
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOSPC) => Error::PoolFull {
                    parent: p.name.clone(),
                    type_id: t.id.clone(),
                    free_mb: read_u64(&self.pool_dir(&p.name).join("pool_free_mb"))
                        .unwrap_or(p.pool_free_mb),
                    need_mb: t.description.vram_mb,
                },
                Some(libc::EEXIST) => Error::UuidInUse(uuid),
                _ => write_error(path.clone(), e, format!("creating {} on {}", t.id, p.name)),
            })
    }

    /// Removes an instance.
    pub fn remove(&self, uuid: Uuid) -> Result<()> {
        self.instance(uuid)?;
        let path = self.instance_dir(uuid).join("remove");
        debug!("writing 1 to {}", path.display());
        self.env
            .write_attr(&path, "1")
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENOENT) => Error::InstanceNotFound(uuid),
                _ => write_error(path.clone(), e, format!("removing {uuid}")),
            })
    }

    /// Changes an instance's weight and/or cap; returns the instance as it is afterwards.
    ///
    /// Both values are range-checked before anything is written.
    pub fn modify(&self, uuid: Uuid, update: InstanceUpdate) -> Result<Instance> {
        if let Some(w) = update.weight {
            check_range("weight", w, WEIGHT_RANGE)?;
        }
        if let Some(c) = update.cap {
            check_range("cap", c, CAP_RANGE)?;
        }
        self.instance(uuid)?;
        let vgpu = self.instance_dir(uuid).join("vgpu");
        for (attr, value) in [("weight", update.weight), ("cap", update.cap)] {
            if let Some(value) = value {
                let path = vgpu.join(attr);
                debug!("writing {value} to {}", path.display());
                self.env
                    .write_attr(&path, &value.to_string())
                    .map_err(|e| write_error(path, e, format!("{attr}={value} for {uuid}")))?;
            }
        }
        self.instance(uuid)
    }

    /// Sets an instance's weight (1–100).
    pub fn set_weight(&self, uuid: Uuid, weight: u64) -> Result<Instance> {
        self.modify(
            uuid,
            InstanceUpdate {
                weight: Some(weight),
                cap: None,
            },
        )
    }

    /// Sets an instance's cap (0–100, 0 = none).
    pub fn set_cap(&self, uuid: Uuid, cap: u64) -> Result<Instance> {
        self.modify(
            uuid,
            InstanceUpdate {
                weight: None,
                cap: Some(cap),
            },
        )
    }

    /// The pool state of a parent.
    pub fn pool(&self, parent: &str) -> Result<PoolInfo> {
        Ok(PoolInfo::from(&self.parent(parent)?))
    }

    /// Resizes a parent's VRAM pool; returns the pool state afterwards.
    pub fn set_pool_mb(&self, parent: &str, pool_mb: u64) -> Result<PoolInfo> {
        check_range("pool_mb", pool_mb, POOL_MB_RANGE)?;
        let p = self.parent(parent)?;
        if pool_mb < p.reserved_mb() {
            return Err(Error::PoolBusy {
                reserved_mb: p.reserved_mb(),
                parent: p.name,
                requested_mb: pool_mb,
            });
        }
        let path = self.pool_dir(&p.name).join("pool_mb");
        debug!("writing {pool_mb} to {}", path.display());
        self.env
            .write_attr(&path, &pool_mb.to_string())
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EBUSY) => Error::PoolBusy {
                    parent: p.name.clone(),
                    requested_mb: pool_mb,
                    reserved_mb: self
                        .pool(&p.name)
                        .map_or(p.reserved_mb(), |i| i.reserved_mb),
                },
                _ => write_error(path.clone(), e, format!("pool_mb={pool_mb} for {}", p.name)),
            })?;
        self.pool(&p.name)
    }

    pub(crate) fn pool_dir(&self, parent: &str) -> PathBuf {
        self.env.parent_base().join(parent).join("vgpu")
    }

    pub(crate) fn type_dir(&self, parent: &str, type_id: &str) -> PathBuf {
        self.env
            .parent_base()
            .join(parent)
            .join("mdev_supported_types")
            .join(type_id)
    }

    pub(crate) fn instance_dir(&self, uuid: Uuid) -> PathBuf {
        self.env.mdev_base().join(uuid.to_string())
    }

    /// All managed instances, by parent then UUID.
    pub fn instances(&self) -> Result<Vec<Instance>> {
        self.instances_except(&BTreeSet::new())
    }

    /// The UUIDs of every mdev device (of any driver), without reading them.
    pub fn device_uuids(&self) -> Result<BTreeSet<Uuid>> {
        Ok(read::device_uuids(&self.env)?)
    }

    /// All managed instances but those in `skip` (which are not read at all).
    pub(crate) fn instances_except(&self, skip: &BTreeSet<Uuid>) -> Result<Vec<Instance>> {
        Ok(read::instances(&self.env, skip)?)
    }

    /// One managed instance by UUID.
    pub fn instance(&self, uuid: Uuid) -> Result<Instance> {
        read::instance(&self.env, uuid)?.ok_or(Error::InstanceNotFound(uuid))
    }
}

fn check_range(attr: &'static str, value: u64, (min, max): (u64, u64)) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::OutOfRange {
            attr,
            value,
            min,
            max,
        })
    }
}

fn join_or_none<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests;
