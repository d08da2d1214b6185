//! A fake kernel for tests: an [`Environment`] over a [`FakeSysfs`] tree that acts on
//! writes as vgpu_shim and the mdev core do. Writing a UUID to a type's `create` makes
//! the instance (`EEXIST` if the UUID is taken, `ENOSPC` if the pool has no room),
//! `1` to an instance's `remove` removes it, `vgpu/weight` and `vgpu/cap` take only
//! their ranges (`EINVAL` otherwise), and a missing attribute is `ENOENT`. Every write
//! is logged, and one can be made to fail, so tests can check what was written and
//! that a failure is undone.

use std::io;
use std::path::{Component, Path};
use std::sync::Mutex;
use uuid::Uuid;

use crate::env::Environment;
use crate::fake::FakeSysfs;

/// The fake kernel (see the module docs).
#[derive(Debug)]
pub struct FakeKernel {
    fake: FakeSysfs,
    log: Mutex<Vec<(String, String)>>,
    fail: Mutex<Option<(String, usize)>>,
}

impl FakeKernel {
    /// Acts on the tree of `fake`.
    pub fn new(fake: FakeSysfs) -> Self {
        Self {
            fake,
            log: Mutex::new(Vec::new()),
            fail: Mutex::new(None),
        }
    }

    /// The tree.
    pub fn sysfs(&self) -> &FakeSysfs {
        &self.fake
    }

    /// The writes so far: (path below the root, value).
    pub fn writes(&self) -> Vec<(String, String)> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Makes the `nth` (0-based) later write to a path ending in `suffix` fail with
    /// `EIO`, as a kernel refusing it would.
    pub fn fail_write(&self, suffix: &str, nth: usize) {
        if let Ok(mut f) = self.fail.lock() {
            *f = Some((suffix.to_string(), nth));
        }
    }

    fn act(&self, rel: &[&str], value: &str) -> io::Result<()> {
        let code = io::Error::from_raw_os_error;
        match rel {
            ["sys", "class", "mdev_bus", parent, "mdev_supported_types", type_id, "create"] => {
                let uuid = Uuid::parse_str(value.trim()).map_err(|_| code(libc::EINVAL))?;
                if self
                    .fake
                    .root()
                    .join("sys/bus/mdev/devices")
                    .join(uuid.to_string())
                    .exists()
                {
                    return Err(code(libc::EEXIST));
                }
                let avail = self
                    .fake
                    .type_dir(parent, type_id)
                    .join("available_instances");
                if crate::io::read_u64(&avail).map_err(io::Error::other)? == 0 {
                    return Err(code(libc::ENOSPC));
                }
                self.fake.add_instance(parent, type_id, uuid, None, 0, 0)
            }
            ["sys", "bus", "mdev", "devices", uuid, "remove"] => {
                let uuid = Uuid::parse_str(uuid).map_err(|_| code(libc::EINVAL))?;
                let link = self
                    .fake
                    .root()
                    .join("sys/bus/mdev/devices")
                    .join(uuid.to_string());
                let dev = crate::io::resolve_link(&link).map_err(|_| code(libc::ENODEV))?;
                let parent = dev
                    .parent()
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.fake.remove_instance(&parent, uuid)
            }
            ["sys", "bus", "mdev", "devices", _, "vgpu", knob @ ("weight" | "cap")] => {
                let range = if *knob == "weight" { 1..=100 } else { 0..=100 };
                match value.trim().parse::<u64>() {
                    Ok(v) if range.contains(&v) => self.plain(rel, value),
                    _ => Err(code(libc::EINVAL)),
                }
            }
            _ => self.plain(rel, value),
        }
    }

    fn plain(&self, rel: &[&str], value: &str) -> io::Result<()> {
        crate::io::write_attr(&self.fake.root().join(rel.join("/")), value)
    }
}

impl Environment for FakeKernel {
    fn root(&self) -> &Path {
        self.fake.root()
    }

    fn write_attr(&self, path: &Path, value: &str) -> io::Result<()> {
        let rel: Vec<&str> = path
            .strip_prefix(self.fake.root())
            .map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect();
        let key = rel.join("/");
        if let Ok(mut log) = self.log.lock() {
            log.push((key.clone(), value.to_string()));
        }
        if let Ok(mut f) = self.fail.lock() {
            if let Some((suffix, nth)) = f.as_mut() {
                if key.ends_with(suffix.as_str()) {
                    if *nth == 0 {
                        *f = None;
                        return Err(io::Error::from_raw_os_error(libc::EIO));
                    }
                    *nth -= 1;
                }
            }
        }
        self.act(&rel, value)
    }
}
