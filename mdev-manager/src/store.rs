//! Reading and writing definitions under `<root>/etc/mdevctl.d`.
//!
//! Writes are atomic: the new content goes to a temporary file at the top of the
//! store (`.vgpuctl-<uuid>.tmp`, a plain file there, which mdevctl skips), is
//! `fsync`ed, renamed over `<parent>/<uuid>`, and the directory is `fsync`ed. A
//! `kill -9` at any moment leaves either the old file or the new one, never half of
//! one; a leftover temporary file is removed by the next write.

use log::{debug, warn};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use uuid::Uuid;

use crate::definition::Definition;
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::model::{natural_key, TYPE_PREFIX};

const TEMP_PREFIX: &str = ".vgpuctl-";

impl<E: Environment> Manager<E> {
    /// The file of a definition.
    pub fn definition_path(&self, parent: &str, uuid: Uuid) -> PathBuf {
        self.env()
            .definitions_base()
            .join(parent)
            .join(uuid.to_string())
    }

    /// Every definition of a vgpu_shim type, by parent then UUID. Definitions of other
    /// drivers' types are left alone; unreadable or malformed files are skipped with a
    /// warning (they would stop nothing else from being listed or started).
    pub fn definitions(&self) -> Result<Vec<Definition>> {
        let mut out = Vec::new();
        for (parent, path) in self.definition_files()? {
            match self.load_definition(&parent, &path) {
                Ok(Some(d)) => out.push(d),
                Ok(None) => {}
                Err(e) => warn!("skipping {e}"),
            }
        }
        out.sort_by(|a, b| {
            natural_key(&a.parent)
                .cmp(&natural_key(&b.parent))
                .then(a.uuid.cmp(&b.uuid))
        });
        Ok(out)
    }

    /// The definitions of one UUID (normally at most one; mdevctl allows one per
    /// parent). A malformed file for that UUID is an error here.
    pub fn definitions_of(&self, uuid: Uuid) -> Result<Vec<Definition>> {
        let mut out = Vec::new();
        for (parent, path) in self.definition_files()? {
            if path.file_name().and_then(|n| n.to_str()) == Some(&uuid.to_string()) {
                if let Some(d) = self.load_definition(&parent, &path)? {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// The one definition of `uuid`, on `parent` if given.
    pub fn definition(&self, uuid: Uuid, parent: Option<&str>) -> Result<Definition> {
        let mut defs = self.definitions_of(uuid)?;
        if let Some(p) = parent {
            defs.retain(|d| d.parent == p);
        }
        match defs.len() {
            0 => Err(Error::NotDefined(uuid)),
            1 => Ok(defs.remove(0)),
            _ => Err(Error::Conflict(format!(
                "{uuid} is defined on several parents ({}): say which with --parent",
                defs.iter()
                    .map(|d| d.parent.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Writes a definition atomically (see the module docs). The caller holds the
    /// [`Lock`](crate::lock::Lock).
    pub fn write_definition(&self, def: &Definition) -> Result<()> {
        self.write_definitions(std::slice::from_ref(def))
    }

    /// Writes definitions, each atomically, and makes them durable together: every
    /// file is written to a temporary, `fsync`ed and renamed in place, then each
    /// directory touched is `fsync`ed once. The caller holds the lock. On an error
    /// the files before the failing one are written (and durable).
    pub fn write_definitions(&self, defs: &[Definition]) -> Result<()> {
        let base = self.env().definitions_base();
        let created_base = !base.exists();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for d in defs {
            let dir = base.join(&d.parent);
            if !dirs.contains(&dir) {
                fs::create_dir_all(&dir).map_err(|e| Error::store("create", &dir, e))?;
                dirs.push(dir);
            }
        }
        if created_base {
            if let Some(up) = base.parent() {
                sync_dir(up)?;
            }
        }
        self.clean_temp_files();
        let mut result = Ok(());
        for d in defs {
            result = self.write_unsynced(&base, d);
            if result.is_err() {
                break;
            }
        }
        for dir in &dirs {
            sync_dir(dir)?;
        }
        sync_dir(&base)?;
        result
    }

    /// One definition: temporary file, `fsync`, rename (the directories are synced by
    /// the caller).
    fn write_unsynced(&self, base: &Path, def: &Definition) -> Result<()> {
        let tmp = base.join(format!("{TEMP_PREFIX}{}.tmp", def.uuid));
        let target = base.join(&def.parent).join(def.uuid.to_string());
        debug!("writing {}", target.display());
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(def.to_mdevctl_json().as_bytes())?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(Error::store("write", &tmp, e));
        }
        if let Err(e) = fs::rename(&tmp, &target) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::store("write", &target, e));
        }
        Ok(())
    }

    /// Removes a definition file (durably). The caller holds the lock.
    pub fn remove_definition(&self, parent: &str, uuid: Uuid) -> Result<()> {
        let path = self.definition_path(parent, uuid);
        debug!("removing {}", path.display());
        fs::remove_file(&path).map_err(|e| Error::store("remove", &path, e))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// `(parent, path)` of every file that may be a definition. File types come from
    /// the directory entries (no `stat` per file; links are followed).
    fn definition_files(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for (parent, dir, is_dir) in typed_entries(&self.env().definitions_base())? {
            // scripts.d holds mdevctl's callouts; dot files are ours (temporaries).
            if parent == "scripts.d" || parent.starts_with('.') || !is_dir {
                continue;
            }
            for (name, path, is_dir) in typed_entries(&dir)? {
                if !is_dir && Uuid::parse_str(&name).is_ok() {
                    out.push((parent.clone(), path));
                } else {
                    debug!("ignoring {}: not a definition", path.display());
                }
            }
        }
        Ok(out)
    }

    /// Loads one file; `None` if it defines another driver's type.
    fn load_definition(&self, parent: &str, path: &Path) -> Result<Option<Definition>> {
        let bad = |reason: String| Error::BadDefinition {
            path: path.to_path_buf(),
            reason,
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let uuid = Uuid::parse_str(name).map_err(|e| bad(format!("name is not a UUID: {e}")))?;
        let text = vgpu_sysfs::io::read_small(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let def = Definition::from_mdevctl_json(uuid, parent, &text).map_err(bad)?;
        if def.mdev_type.starts_with(TYPE_PREFIX) {
            Ok(Some(def))
        } else {
            debug!(
                "ignoring {}: type {} is not a vgpu type",
                path.display(),
                def.mdev_type
            );
            Ok(None)
        }
    }

    /// Removes temporaries left by a process killed mid-write (under the lock, so no
    /// other writer's temporary is touched).
    fn clean_temp_files(&self) {
        let Ok(entries) = fs::read_dir(self.env().definitions_base()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) && name.ends_with(".tmp") {
                debug!("removing stale {}", entry.path().display());
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Entries of `dir` as (UTF-8 name, path, is a directory), sorted by name; a missing
/// directory is empty. Links are followed (one `stat` each).
fn typed_entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    use rustix::fs::FileType;
    let mut out: Vec<(String, PathBuf, bool)> = vgpu_sysfs::io::entries(dir)?
        .into_iter()
        .map(|(name, ft)| {
            let path = dir.join(&name);
            let is_dir = match ft {
                FileType::Directory => true,
                FileType::Symlink | FileType::Unknown => path.is_dir(),
                _ => false,
            };
            (name, path, is_dir)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// `fsync` of a directory, so a rename or unlink in it is durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::store("sync", dir, e))
}
