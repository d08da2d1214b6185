//! Reading and changing vgpu parents and instances through sysfs.

use log::debug;
use std::fs;
use std::path::{Path, PathBuf};
use uuid::Uuid;

use crate::env::Environment;
use crate::error::{Error, Result};
use crate::model::{
    natural_key, Instance, Parent, PoolInfo, TypeDescription, VgpuType, CAP_RANGE, POOL_MB_RANGE,
    TYPE_PREFIX, WEIGHT_RANGE,
};
use crate::sysfs::{list_dir, read_attr, read_u64, write_error};
use crate::units;

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
        let mut parents = Vec::new();
        for (name, dir) in list_dir(&self.env.parent_base())? {
            match self.read_parent(&name, &dir)? {
                Some(p) => parents.push(p),
                None => debug!("ignoring mdev parent {name}: it offers no {TYPE_PREFIX}* type"),
            }
        }
        parents.sort_by(|a, b| natural_key(&a.name).cmp(&natural_key(&b.name)));
        Ok(parents)
    }

    /// One managed parent by name (only its directory is read).
    pub fn parent(&self, name: &str) -> Result<Parent> {
        let dir = self.env.parent_base().join(name);
        let valid = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
        if valid && fs::symlink_metadata(&dir).is_ok() {
            if let Some(p) = self.read_parent(name, &dir)? {
                return Ok(p);
            }
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
        let dir = self.env.parent_base().join(name);
        let direct = units::type_dir_name(spelling);
        let found = match &direct {
            Some(id) if !name.contains('/') && !name.is_empty() => {
                self.read_parent_types(name, &dir, |t| t.eq_ignore_ascii_case(id))?
            }
            _ => None,
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

    /// Reads a parent; `None` if it offers no vgpu_shim type (another driver's parent).
    fn read_parent(&self, name: &str, dir: &Path) -> Result<Option<Parent>> {
        self.read_parent_types(name, dir, |_| true)
    }

    /// Reads a parent with only the types `want` picks (by id).
    fn read_parent_types(
        &self,
        name: &str,
        dir: &Path,
        want: impl Fn(&str) -> bool,
    ) -> Result<Option<Parent>> {
        let mut types = Vec::new();
        for (id, tdir) in list_dir(&dir.join("mdev_supported_types"))? {
            if id.starts_with(TYPE_PREFIX) && want(&id) {
                types.push(read_type(name, &id, &tdir)?);
            }
        }
        if types.is_empty() {
            return Ok(None);
        }
        types.sort_by(|a, b| (a.description.vram_mb, &a.id).cmp(&(b.description.vram_mb, &b.id)));
        let vgpu = dir.join("vgpu");
        Ok(Some(Parent {
            name: name.to_string(),
            pool_mb: read_u64(&vgpu.join("pool_mb"))?,
            pool_free_mb: read_u64(&vgpu.join("pool_free_mb"))?,
            vram_pages: read_u64(&vgpu.join("vram_pages"))?,
            types,
        }))
    }
}

/// The parsed `description` of the type directory `dir`.
fn read_description(dir: &Path) -> Result<TypeDescription> {
    let path = dir.join("description");
    read_attr(&path)?
        .parse()
        .map_err(|source| Error::Description { path, source })
}

fn read_type(parent: &str, id: &str, dir: &Path) -> Result<VgpuType> {
    let description = read_description(dir)?;
    Ok(VgpuType {
        id: id.to_string(),
        parent: parent.to_string(),
        name: read_attr(&dir.join("name"))?,
        description,
        device_api: read_attr(&dir.join("device_api"))?,
        available_instances: read_u64(&dir.join("available_instances"))?,
    })
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

mod instances;
#[cfg(test)]
mod tests;
