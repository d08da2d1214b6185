//! Reading and writing sysfs attributes the way the vgpu_shim ABI needs: one
//! `write(2)` per value, never creating a missing attribute, decimal numbers parsed
//! strictly, and errnos mapped to operator-facing errors. Every path comes from an
//! [`Environment`](crate::Environment), so this works on a fake tree too.

use log::warn;
use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::parse_decimal;

/// `…/<parent>/mdev_supported_types/<type>` → (parent, type).
pub(crate) fn parent_and_type(link: &Path) -> Option<(String, String)> {
    let names: Vec<&str> = link
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    match names.as_slice() {
        [.., parent, "mdev_supported_types", type_id] => {
            Some((parent.to_string(), type_id.to_string()))
        }
        _ => None,
    }
}

/// Directory entries as (UTF-8 name, path), sorted by name; a missing directory is
/// empty (e.g. no mdev parent registered at all).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        match entry.file_name().into_string() {
            Ok(name) => out.push((name, entry.path())),
            Err(name) => warn!("ignoring {}: name is not UTF-8", dir.join(name).display()),
        }
    }
    out.sort();
    Ok(out)
}

/// An attribute's text without the trailing newline sysfs adds.
pub(crate) fn read_attr(path: &Path) -> Result<String> {
    let mut s = fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if s.ends_with('\n') {
        s.pop();
    }
    Ok(s)
}

/// A decimal attribute.
pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let s = read_attr(path)?;
    parse_decimal(&s).ok_or_else(|| Error::Malformed {
        path: path.to_path_buf(),
        reason: format!("`{}` is not a decimal number", s.escape_debug()),
    })
}

/// Writes an attribute in one `write(2)`. Never creates the file: a missing attribute
/// is an error, not something to invent.
pub(crate) fn write_attr(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(value.as_bytes())
}

/// Maps a failed attribute write to an operator-facing error.
pub(crate) fn write_error(path: PathBuf, e: io::Error, what: String) -> Error {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { path },
        Some(libc::ENOENT) => Error::Write { path, source: e },
        Some(_) => Error::Refused { what, source: e },
        None => Error::Write { path, source: e },
    }
}
