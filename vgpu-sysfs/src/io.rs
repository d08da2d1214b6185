//! Reading and writing sysfs attributes the way the vgpu_shim ABI needs: one
//! `write(2)` per value, never creating a missing attribute, decimal numbers parsed
//! strictly. Every path comes from an [`Environment`](crate::Environment), so this
//! works on a fake tree too.
//!
//! Why so few system calls: `vgpuctl` is run once per operation by scripts, and under
//! emulation (the test VM, CI) an `open` of a sysfs attribute costs some 25 µs; a
//! listing of 64 instances is hundreds of them.

use log::warn;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::parse_decimal;

/// `…/<parent>/mdev_supported_types/<type>` → (parent, type).
pub fn parent_and_type(link: &Path) -> Option<(String, String)> {
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
pub fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out: Vec<(String, PathBuf)> = entries(dir)?
        .into_iter()
        .map(|(name, _)| {
            let path = dir.join(&name);
            (name, path)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The names in a directory, unsorted: for listings whose order does not matter.
pub fn list_names(dir: &Path) -> Result<Vec<String>> {
    Ok(entries(dir)?.into_iter().map(|(name, _)| name).collect())
}

/// A directory's entries (but `.` and `..`) with their types as `getdents64` gives
/// them, unsorted; a missing directory is empty. Names that are not UTF-8 are skipped
/// with a warning. Read with rustix: musl's `opendir` allocates with its own malloc,
/// which maps and unmaps a page each time.
pub fn entries(dir: &Path) -> Result<Vec<(String, rustix::fs::FileType)>> {
    use rustix::fs::{Dir, Mode, OFlags};
    let read = |e: rustix::io::Errno| Error::Read {
        path: dir.to_path_buf(),
        source: e.into(),
    };
    let fd = match rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Vec::new()),
        Err(e) => return Err(read(e)),
    };
    let mut out = Vec::new();
    for entry in Dir::new(fd).map_err(read)? {
        let entry = entry.map_err(read)?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        match std::str::from_utf8(name) {
            Ok(n) => out.push((n.to_string(), entry.file_type())),
            Err(_) => warn!(
                "ignoring {}: name is not UTF-8",
                dir.join(String::from_utf8_lossy(name).as_ref()).display()
            ),
        }
    }
    Ok(out)
}

/// An attribute's text without the trailing newline sysfs adds.
pub fn read_attr(path: &Path) -> Result<String> {
    let mut s = read_small(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if s.ends_with('\n') {
        s.pop();
    }
    Ok(s)
}

/// A small file's text in as few system calls as it takes: `open`, one `read`, `close`.
///
/// sysfs produces an attribute whole (at most a page) on the first `read(2)`, and a
/// regular file returns all it has up to the buffer's size, so a read shorter than the
/// buffer is the end: no `fstat` for a size hint (sysfs sizes are fake) and no second
/// `read` to see 0. Larger files are read on to their end. The file is opened with
/// `O_CLOEXEC` by a raw `openat` (rustix): musl's `open` adds an `fcntl` to set it
/// again. `vgpuctl list` on a module without `vgpu/instances` reads three attributes
/// per instance, and under emulation (the rig) every system call counts.
pub fn read_small(path: &Path) -> io::Result<String> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len < buf.len() {
                    break;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut bytes = buf[..len].to_vec();
    if len == buf.len() {
        File::from(fd).read_to_end(&mut bytes)?;
    }
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Where a symbolic link points, resolved lexically against the link's directory.
///
/// Right for sysfs, where only leaf entries are links (`/sys/bus/mdev/devices/<uuid>`,
/// `<device>/mdev_type`) and the directories a relative target climbs out of are
/// real: one `readlink(2)`, where `canonicalize` costs one per path component. A path
/// that is not a link is returned as it is.
pub fn resolve_link(link: &Path) -> io::Result<PathBuf> {
    let target = match fs::read_link(link) {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(link.to_path_buf()),
        Err(e) => return Err(e),
    };
    let base = link.parent().unwrap_or(Path::new("/"));
    let mut out = PathBuf::new();
    for c in base.join(target).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A decimal attribute. Read into a small buffer on the stack (a number and a newline
/// fit); anything longer is read whole, for the error message.
pub fn read_u64(path: &Path) -> Result<u64> {
    use rustix::fs::{Mode, OFlags};
    let read = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| read(e.into()))?;
    let mut buf = [0u8; 32];
    let n = loop {
        match rustix::io::read(&fd, &mut buf) {
            Err(rustix::io::Errno::INTR) => {}
            r => break r.map_err(|e| read(e.into()))?,
        }
    };
    let text = match std::str::from_utf8(&buf[..n]) {
        Ok(t) if n < buf.len() => t,
        _ => {
            drop(fd);
            let s = read_attr(path)?;
            return Err(Error::Malformed {
                path: path.to_path_buf(),
                reason: format!("`{}` is not a decimal number", s.escape_debug()),
            });
        }
    };
    let value = text.strip_suffix('\n').unwrap_or(text);
    parse_decimal(value).ok_or_else(|| Error::Malformed {
        path: path.to_path_buf(),
        reason: format!("`{}` is not a decimal number", value.escape_debug()),
    })
}

/// Writes an attribute in one `write(2)`. Never creates the file: a missing attribute
/// is an error, not something to invent. (Opened as [`read_small`] opens.)
pub fn write_attr(path: &Path, value: &str) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    File::from(fd).write_all(value.as_bytes())
}

/// [`write_attr`], with the failure named by path ([`Error::Write`], whose
/// [`Error::errno`] is the kernel's answer).
pub fn write_value(path: &Path, value: &str) -> Result<()> {
    write_attr(path, value).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn reads_small_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 4095, 4096, 4097, 10000] {
            let p = dir.path().join(format!("f{len}"));
            let text: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            fs::write(&p, &text).unwrap();
            assert_eq!(read_small(&p).unwrap(), text, "{len} bytes");
        }
        let p = dir.path().join("attr");
        fs::write(&p, "42\n").unwrap();
        assert_eq!(read_attr(&p).unwrap(), "42");
        assert_eq!(read_u64(&p).unwrap(), 42);
        for (text, want) in [
            ("0\n", Ok(0)),
            ("18446744073709551615", Ok(u64::MAX)),
            (
                "18446744073709551616\n",
                Err("`18446744073709551616` is not"),
            ),
            ("12 \n", Err("`12 ` is not")),
            ("", Err("`` is not")),
            (
                &"9".repeat(40),
                Err("`9999999999999999999999999999999999999999` is not"),
            ),
        ] {
            fs::write(&p, text).unwrap();
            match (read_u64(&p), want) {
                (Ok(v), Ok(w)) => assert_eq!(v, w, "{text:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{text:?}: {e}"),
                (r, w) => panic!("{text:?}: {r:?}, want {w:?}"),
            }
        }
        fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(read_small(&p).is_err());
        assert!(matches!(
            read_attr(&dir.path().join("missing")),
            Err(Error::Read { .. })
        ));
    }

    #[test]
    fn resolves_links_lexically() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let dev = root.join("sys/devices/virtual/vgpu_shim/vgpu_shim0/u1");
        fs::create_dir_all(&dev).unwrap();
        fs::create_dir_all(root.join("sys/bus/mdev/devices")).unwrap();
        let bus = root.join("sys/bus/mdev/devices/u1");
        symlink("../../../devices/virtual/vgpu_shim/vgpu_shim0/u1", &bus).unwrap();
        symlink(
            "../mdev_supported_types/vgpu_shim-1G",
            dev.join("mdev_type"),
        )
        .unwrap();
        let d = resolve_link(&bus).unwrap();
        assert_eq!(d, dev);
        let t = resolve_link(&d.join("mdev_type")).unwrap();
        assert_eq!(
            parent_and_type(&t),
            Some(("vgpu_shim0".into(), "vgpu_shim-1G".into()))
        );
        assert_eq!(resolve_link(&dev).unwrap(), dev, "not a link");
        symlink("/abs/p/mdev_supported_types/t", root.join("abs")).unwrap();
        assert_eq!(
            resolve_link(&root.join("abs")).unwrap(),
            Path::new("/abs/p/mdev_supported_types/t")
        );
    }
}
