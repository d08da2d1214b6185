//! Where the system is: every path of the sysfs model (and of `vgpuctl`'s own files)
//! is derived from one [`Environment`], so tests (and `vgpuctl --root`) can point it at
//! a fake tree.

use std::io;
use std::path::{Path, PathBuf};

/// Roots every filesystem path the manager uses.
///
/// Only [`Environment::root`] must be provided; the other paths default to the standard
/// Linux locations below that root.
pub trait Environment {
    /// The directory that stands for `/`.
    fn root(&self) -> &Path;

    /// Where mdev parents are registered: `<root>/sys/class/mdev_bus`.
    fn parent_base(&self) -> PathBuf {
        self.root().join("sys/class/mdev_bus")
    }

    /// Where mdev instances appear: `<root>/sys/bus/mdev/devices`.
    fn mdev_base(&self) -> PathBuf {
        self.root().join("sys/bus/mdev/devices")
    }

    /// Where vgpu keeps its own configuration: `<root>/etc/vgpu`.
    ///
    /// Unused by this version: definitions live in [`Environment::definitions_base`].
    fn config_base(&self) -> PathBuf {
        self.root().join("etc/vgpu")
    }

    /// Persistent definitions, in mdevctl's layout (`<parent>/<uuid>` JSON files):
    /// `<root>/etc/mdevctl.d`.
    fn definitions_base(&self) -> PathBuf {
        self.root().join("etc/mdevctl.d")
    }

    /// The lock that serialises changing `vgpuctl` processes:
    /// `<root>/run/lock/vgpuctl.lock`.
    fn lock_path(&self) -> PathBuf {
        self.root().join("run/lock/vgpuctl.lock")
    }

    /// Writes a sysfs attribute in one `write(2)`, never creating it. Every write the
    /// manager makes to sysfs goes through here, so a test environment can act as the
    /// kernel does ([`crate::fake_kernel::FakeKernel`]).
    fn write_attr(&self, path: &Path, value: &str) -> io::Result<()> {
        crate::io::write_attr(path, value)
    }
}

impl<E: Environment + ?Sized> Environment for &E {
    fn root(&self) -> &Path {
        (**self).root()
    }
    fn parent_base(&self) -> PathBuf {
        (**self).parent_base()
    }
    fn mdev_base(&self) -> PathBuf {
        (**self).mdev_base()
    }
    fn config_base(&self) -> PathBuf {
        (**self).config_base()
    }
    fn definitions_base(&self) -> PathBuf {
        (**self).definitions_base()
    }
    fn lock_path(&self) -> PathBuf {
        (**self).lock_path()
    }
    fn write_attr(&self, path: &Path, value: &str) -> io::Result<()> {
        (**self).write_attr(path, value)
    }
}

/// The running system, rooted at `/`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemEnvironment;

impl Environment for SystemEnvironment {
    fn root(&self) -> &Path {
        Path::new("/")
    }
}

/// A system image rooted at an arbitrary directory (a fake sysfs for tests, or a
/// chroot). This is what `vgpuctl --root DIR` uses.
#[derive(Debug, Clone)]
pub struct RootedEnvironment {
    root: PathBuf,
}

impl RootedEnvironment {
    /// Roots every path at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl Environment for RootedEnvironment {
    fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rooted() {
        let env = RootedEnvironment::new("/tmp/x");
        assert_eq!(env.parent_base(), Path::new("/tmp/x/sys/class/mdev_bus"));
        assert_eq!(env.mdev_base(), Path::new("/tmp/x/sys/bus/mdev/devices"));
        assert_eq!(env.config_base(), Path::new("/tmp/x/etc/vgpu"));
        assert_eq!(env.definitions_base(), Path::new("/tmp/x/etc/mdevctl.d"));
        assert_eq!(env.lock_path(), Path::new("/tmp/x/run/lock/vgpuctl.lock"));
        let sys = SystemEnvironment;
        assert_eq!(sys.mdev_base(), Path::new("/sys/bus/mdev/devices"));
        fn base(e: impl Environment) -> PathBuf {
            e.parent_base()
        }
        assert_eq!(base(&env), Path::new("/tmp/x/sys/class/mdev_bus"));
        assert_eq!(env.root(), Path::new("/tmp/x"));
    }
}
