//! Reading the model in one pass: every managed parent with its types, every managed
//! instance with its quota and knobs. Only parents offering `vgpu_shim-*` types (the
//! kernel names types `<driver>-<type>`) and instances of those types are read; other
//! drivers' parents and devices are skipped.
//!
//! `vgpuctl list` reads every instance, so this is what decides how fast it is: the
//! parents' type directories are listed (`<type>/devices/` names the instances of each
//! type, so no link per instance has to be read), an instance's quota is its type's
//! (`vgpu/vram_mb` is "the type's quota" in the ABI: one read per type in use), and
//! each instance costs the three attributes only it knows (`vram_used_kb`, `weight`,
//! `cap`), read through its device directory so no link is followed on each open.
//! Under emulation an `open` of a sysfs attribute costs some 25 µs; a thousand of them
//! were most of `list`. A module with the parents' `vgpu/instances` ([`crate::listing`])
//! needs none of that: one read per parent.

use log::debug;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use uuid::Uuid;

use crate::env::Environment;
use crate::error::{Error, Result};
use crate::io::{list_dir, list_names, parent_and_type, read_attr, read_u64, resolve_link};
use crate::listing::{self, Listing};
use crate::model::{natural_key, Instance, Parent, TypeDescription, VgpuType, TYPE_PREFIX};

/// All managed parents, in natural name order (`vgpu_shim2` before `vgpu_shim10`).
pub fn parents(env: &impl Environment) -> Result<Vec<Parent>> {
    let mut parents = Vec::new();
    for (name, dir) in list_dir(&env.parent_base())? {
        match parent_types(&name, &dir, |_| true)? {
            Some(p) => parents.push(p),
            None => debug!("ignoring mdev parent {name}: it offers no {TYPE_PREFIX}* type"),
        }
    }
    parents.sort_by(|a, b| natural_key(&a.name).cmp(&natural_key(&b.name)));
    Ok(parents)
}

/// One managed parent by name with the types `want` picks (by id); only its directory
/// is read. `None` if there is no such parent, the name is not a plain file name, or
/// it offers no (wanted) vgpu type.
pub fn parent(
    env: &impl Environment,
    name: &str,
    want: impl Fn(&str) -> bool,
) -> Result<Option<Parent>> {
    let dir = env.parent_base().join(name);
    let valid = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
    if !valid || fs::symlink_metadata(&dir).is_err() {
        return Ok(None);
    }
    parent_types(name, &dir, want)
}

/// Reads a parent with only the types `want` picks (by id), smallest quota first;
/// `None` if none is a vgpu type.
fn parent_types(name: &str, dir: &Path, want: impl Fn(&str) -> bool) -> Result<Option<Parent>> {
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

/// The parsed `description` of the type directory `dir`.
pub fn type_description(dir: &Path) -> Result<TypeDescription> {
    let path = dir.join("description");
    read_attr(&path)?
        .parse()
        .map_err(|source| Error::Description { path, source })
}

fn read_type(parent: &str, id: &str, dir: &Path) -> Result<VgpuType> {
    let description = type_description(dir)?;
    Ok(VgpuType {
        id: id.to_string(),
        parent: parent.to_string(),
        name: read_attr(&dir.join("name"))?,
        description,
        device_api: read_attr(&dir.join("device_api"))?,
        available_instances: read_u64(&dir.join("available_instances"))?,
    })
}

/// The UUIDs of every mdev device (of any driver), without reading them.
pub fn device_uuids(env: &impl Environment) -> Result<BTreeSet<Uuid>> {
    Ok(list_dir(&env.mdev_base())?
        .into_iter()
        .filter_map(|(name, _)| Uuid::parse_str(&name).ok())
        .collect())
}

/// All managed instances but those in `skip` (which are not read at all), by parent
/// (natural order) then UUID. An instance removed while it is read is left out.
pub fn instances(env: &impl Environment, skip: &BTreeSet<Uuid>) -> Result<Vec<Instance>> {
    let mut instances = Vec::new();
    // Parents in natural order, each one's instances by UUID: sorted as a whole
    // without comparing names per pair.
    let mut parents = list_dir(&env.parent_base())?;
    parents.sort_by(|a, b| natural_key(&a.0).cmp(&natural_key(&b.0)));
    for (parent, link) in parents {
        let first = instances.len();
        // One read for all of them, if the module has `vgpu/instances`.
        if let Some(Listing::Complete(list)) = listing::read(&parent, &link)? {
            instances.extend(listing::without(list, skip));
            instances[first..].sort_unstable_by_key(|i| i.uuid);
            continue;
        }
        // The parent's own directory: its instances are subdirectories of it.
        let dir = resolve_link(&link).map_err(|source| Error::Read {
            path: link.clone(),
            source,
        })?;
        for (type_id, tdir) in list_dir(&dir.join("mdev_supported_types"))? {
            if !type_id.starts_with(TYPE_PREFIX) {
                continue;
            }
            let uuids: Vec<Uuid> = list_names(&tdir.join("devices"))?
                .into_iter()
                .filter_map(|name| Uuid::parse_str(&name).ok())
                .filter(|u| !skip.contains(u))
                .collect();
            if uuids.is_empty() {
                continue;
            }
            let desc = type_description(&tdir)?;
            // One path buffer for every attribute of every instance of the type
            // (bytes: `PathBuf::pop` parses components, a truncate does not).
            let mut path = dir.as_os_str().as_bytes().to_vec();
            for uuid in uuids {
                path.push(b'/');
                path.extend_from_slice(
                    uuid.hyphenated()
                        .encode_lower(&mut Uuid::encode_buffer())
                        .as_bytes(),
                );
                path.extend_from_slice(b"/vgpu/");
                let base = path.len();
                let mut attr = |name: &str| {
                    path.truncate(base);
                    path.extend_from_slice(name.as_bytes());
                    read_u64(Path::new(OsStr::from_bytes(&path)))
                };
                let mut read = || -> Result<Instance> {
                    Ok(Instance {
                        uuid,
                        parent: parent.clone(),
                        type_id: type_id.clone(),
                        vram_mb: desc.vram_mb,
                        vram_used_kb: attr("vram_used_kb")?,
                        weight: attr("weight")?,
                        cap: attr("cap")?,
                    })
                };
                let result = read();
                path.truncate(base);
                let gone =
                    result.is_err() && fs::symlink_metadata(OsStr::from_bytes(&path)).is_err();
                path.truncate(dir.as_os_str().len());
                match result {
                    Ok(i) => instances.push(i),
                    // Removed while we were reading it.
                    Err(_) if gone => {}
                    Err(e) => return Err(e),
                }
            }
        }
        instances[first..].sort_unstable_by_key(|i| i.uuid);
    }
    Ok(instances)
}

/// One managed instance by UUID; `None` if there is none or it is not of a vgpu type.
pub fn instance(env: &impl Environment, uuid: Uuid) -> Result<Option<Instance>> {
    // The bus link, `/sys/bus/mdev/devices/<uuid>`; a missing instance is a
    // missing link.
    let dir = env.mdev_base().join(uuid.to_string());
    let dir = dir.as_path();
    // Both links are relative (`../../../devices/…/<parent>/<uuid>`, then
    // `../mdev_supported_types/<type>`): two readlinks give parent and type.
    let link_path = dir.join("mdev_type");
    let resolved =
        resolve_link(dir).and_then(|dev| Ok((resolve_link(&dev.join("mdev_type"))?, dev)));
    let (link, dev) = match resolved {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            debug!("ignoring {}: no mdev_type link", dir.display());
            return Ok(None);
        }
        Err(source) => {
            return Err(Error::Read {
                path: link_path,
                source,
            })
        }
    };
    let Some((parent, type_id)) = parent_and_type(&link) else {
        return Err(Error::Malformed {
            path: link_path,
            reason: format!(
                "link target {} does not end in <parent>/mdev_supported_types/<type>",
                link.display()
            ),
        });
    };
    if !type_id.starts_with(TYPE_PREFIX) {
        debug!("ignoring {uuid}: type {type_id} is not a vgpu type");
        return Ok(None);
    }
    // The device's own directory: no link to follow on each open.
    let vgpu = dev.join("vgpu");
    Ok(Some(Instance {
        uuid,
        parent,
        type_id,
        vram_mb: read_u64(&vgpu.join("vram_mb"))?,
        vram_used_kb: read_u64(&vgpu.join("vram_used_kb"))?,
        weight: read_u64(&vgpu.join("weight"))?,
        cap: read_u64(&vgpu.join("cap"))?,
    }))
}
