//! A fake vgpu_shim sysfs tree for tests, laid out like the kernel's.
//!
//! ```text
//! <root>/sys/devices/virtual/vgpu_shim/<parent>/            the parent device
//!     vgpu/{pool_mb,pool_free_mb,vram_pages}
//!     mdev_supported_types/<type>/{name,description,device_api,available_instances,create,devices/}
//!     <uuid>/{mdev_type -> ../mdev_supported_types/<type>, remove, vgpu/…}   an instance
//! <root>/sys/class/mdev_bus/<parent> -> ../../devices/virtual/vgpu_shim/<parent>
//! <root>/sys/bus/mdev/devices/<uuid> -> ../../../devices/virtual/vgpu_shim/<parent>/<uuid>
//! ```
//!
//! Attributes are plain files, so a test can check what the manager wrote (`create`,
//! `remove`, `weight`, …). Nothing reacts to writes: the counters only change through
//! this builder. Public (and dependency-free) so other crates of the workspace can
//! reuse it in their tests.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use uuid::Uuid;

use crate::model::TYPE_PREFIX;

/// The type ladder of vgpu_shim: (short name, vram_mb, default weight).
pub const STANDARD_TYPES: [(&str, u64, u64); 6] = [
    ("128M", 128, 1),
    ("256M", 256, 1),
    ("512M", 512, 2),
    ("1G", 1024, 4),
    ("2G", 2048, 8),
    ("4G", 4096, 16),
];

/// The instances of [`FakeSysfs::sample`].
pub const SAMPLE_UUIDS: [Uuid; 3] = [
    Uuid::from_u128(0x11111111_1111_4111_8111_111111111111),
    Uuid::from_u128(0x22222222_2222_4222_8222_222222222222),
    Uuid::from_u128(0x33333333_3333_4333_8333_333333333333),
];

const DEVICES: &str = "sys/devices/virtual/vgpu_shim";

/// Builder of a fake sysfs tree under a root directory.
#[derive(Debug, Clone)]
pub struct FakeSysfs {
    root: PathBuf,
}

impl FakeSysfs {
    /// Creates the bare directories (`mdev_bus`, `mdev/devices`) under `root`.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for dir in [DEVICES, "sys/class/mdev_bus", "sys/bus/mdev/devices"] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self { root })
    }

    /// The root directory (what `vgpuctl --root` takes).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The device directory of a parent.
    pub fn parent_dir(&self, parent: &str) -> PathBuf {
        self.root.join(DEVICES).join(parent)
    }

    /// The directory of one of a parent's types.
    pub fn type_dir(&self, parent: &str, type_id: &str) -> PathBuf {
        self.parent_dir(parent)
            .join("mdev_supported_types")
            .join(type_id)
    }

    /// The device directory of an instance (as `/sys/bus/mdev/devices/<uuid>` resolves).
    pub fn instance_dir(&self, parent: &str, uuid: Uuid) -> PathBuf {
        self.parent_dir(parent).join(uuid.to_string())
    }

    /// The tree behind the golden outputs in `tests/golden/`: `vgpu_shim0` (2048 MiB
    /// pool) with a 256M instance ([`SAMPLE_UUIDS`]`[0]`, default weight, no cap) and a
    /// 1G instance (`[1]`, weight 50, cap 25); an empty `vgpu_shim1` (1024 MiB); and a
    /// foreign parent `0000:00:02.0` with an `i915-GVTg_V5_4` instance (`[2]`).
    pub fn sample(root: impl Into<PathBuf>) -> io::Result<Self> {
        let fake = Self::new(root)?;
        fake.add_parent("vgpu_shim0", 2048)?;
        fake.add_parent("vgpu_shim1", 1024)?;
        fake.add_foreign_parent("0000:00:02.0", &["i915-GVTg_V5_4", "i915-GVTg_V5_8"])?;
        fake.add_instance(
            "vgpu_shim0",
            "vgpu_shim-256M",
            SAMPLE_UUIDS[0],
            None,
            0,
            512,
        )?;
        fake.add_instance(
            "vgpu_shim0",
            "vgpu_shim-1G",
            SAMPLE_UUIDS[1],
            Some(50),
            25,
            4096,
        )?;
        fake.add_instance(
            "0000:00:02.0",
            "i915-GVTg_V5_4",
            SAMPLE_UUIDS[2],
            None,
            0,
            0,
        )?;
        Ok(fake)
    }

    /// Adds a vgpu_shim parent with the standard types and an empty pool of `pool_mb`.
    pub fn add_parent(&self, name: &str, pool_mb: u64) -> io::Result<()> {
        let dir = self.parent_dir(name);
        fs::create_dir_all(dir.join("vgpu"))?;
        write(&dir.join("vgpu/pool_mb"), pool_mb)?;
        for (attr, value) in [
            ("engines", "1"),
            ("policy", "best_effort"),
            ("slice_us", "1000"),
            ("watchdog_ms", "2000"),
            ("busy_ns", "0"),
            ("idle_ns", "0"),
            ("switches", "0"),
            ("preempt", "1"),
            ("preemptions", "0"),
            ("macs", "0"),
            ("executor", "cpu"),
            ("executor_connected", "0"),
            ("executor_handoffs", "0"),
            ("executor_requeues", "0"),
            ("executor_errors", "0"),
        ] {
            write(&dir.join("vgpu").join(attr), value)?;
        }
        for (short, vram_mb, weight) in STANDARD_TYPES {
            let tdir = self.type_dir(name, &format!("{TYPE_PREFIX}{short}"));
            fs::create_dir_all(tdir.join("devices"))?;
            write(&tdir.join("name"), format!("vgpu {short}"))?;
            write(
                &tdir.join("description"),
                format!("vram_mb={vram_mb}, weight={weight}, max_instances=0"),
            )?;
            write(&tdir.join("device_api"), "vfio-pci")?;
            fs::write(tdir.join("create"), "")?;
        }
        symlink(
            format!("../../devices/virtual/vgpu_shim/{name}"),
            self.root.join("sys/class/mdev_bus").join(name),
        )?;
        self.refresh(name)
    }

    /// Adds a parent of another driver, offering `type_ids` (which should not start
    /// with `vgpu_shim-`); the manager must ignore it.
    pub fn add_foreign_parent(&self, name: &str, type_ids: &[&str]) -> io::Result<()> {
        for id in type_ids {
            let tdir = self.type_dir(name, id);
            fs::create_dir_all(tdir.join("devices"))?;
            write(&tdir.join("name"), format!("foreign {id}"))?;
            write(&tdir.join("description"), "low_gm_size: 128MB, fence: 4")?;
            write(&tdir.join("device_api"), "vfio-pci")?;
            write(&tdir.join("available_instances"), 1)?;
            fs::write(tdir.join("create"), "")?;
        }
        symlink(
            format!("../../devices/virtual/vgpu_shim/{name}"),
            self.root.join("sys/class/mdev_bus").join(name),
        )
    }

    /// Adds an instance of `type_id` on `parent`. For vgpu_shim types the `vgpu/`
    /// attributes are written (weight `None` = the type's default) and the parent's
    /// pool counters updated.
    pub fn add_instance(
        &self,
        parent: &str,
        type_id: &str,
        uuid: Uuid,
        weight: Option<u64>,
        cap: u64,
        vram_used_kb: u64,
    ) -> io::Result<()> {
        let dir = self.instance_dir(parent, uuid);
        fs::create_dir_all(&dir)?;
        symlink(
            format!("../mdev_supported_types/{type_id}"),
            dir.join("mdev_type"),
        )?;
        fs::write(dir.join("remove"), "")?;
        symlink(
            format!("../../../{uuid}"),
            self.type_dir(parent, type_id)
                .join("devices")
                .join(uuid.to_string()),
        )?;
        symlink(
            format!("../../../devices/virtual/vgpu_shim/{parent}/{uuid}"),
            self.root
                .join("sys/bus/mdev/devices")
                .join(uuid.to_string()),
        )?;
        if type_id.starts_with(TYPE_PREFIX) {
            let (vram_mb, default_weight) = type_quota(&self.type_dir(parent, type_id))?;
            fs::create_dir_all(dir.join("vgpu"))?;
            write(&dir.join("vgpu/vram_mb"), vram_mb)?;
            write(&dir.join("vgpu/vram_used_kb"), vram_used_kb)?;
            write(&dir.join("vgpu/weight"), weight.unwrap_or(default_weight))?;
            write(&dir.join("vgpu/cap"), cap)?;
            for counter in [
                "busy_ns",
                "throttled_ns",
                "jobs",
                "cmds_failed",
                "slices",
                "queue_depth",
                "preemptions",
                "macs",
            ] {
                write(&dir.join("vgpu").join(counter), 0)?;
            }
            fs::write(dir.join("vgpu/latency_hist"), "")?;
            self.refresh(parent)?;
        }
        Ok(())
    }

    /// Removes an instance (its directory and links) and, for a vgpu_shim parent,
    /// gives its quota back to the pool.
    pub fn remove_instance(&self, parent: &str, uuid: Uuid) -> io::Result<()> {
        let dir = self.instance_dir(parent, uuid);
        let type_link = fs::read_link(dir.join("mdev_type"))?;
        let type_id = type_link
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        fs::remove_file(
            self.type_dir(parent, &type_id)
                .join("devices")
                .join(uuid.to_string()),
        )?;
        fs::remove_file(
            self.root
                .join("sys/bus/mdev/devices")
                .join(uuid.to_string()),
        )?;
        fs::remove_dir_all(&dir)?;
        if type_id.starts_with(TYPE_PREFIX) {
            self.refresh(parent)?;
        }
        Ok(())
    }

    /// Recomputes a vgpu_shim parent's counters from its pool size and instances:
    /// `pool_free_mb`, `vram_pages`, and each type's `max_instances` and
    /// `available_instances`.
    pub fn refresh(&self, parent: &str) -> io::Result<()> {
        let dir = self.parent_dir(parent);
        let pool_mb = read_u64(&dir.join("vgpu/pool_mb"))?;
        let (mut reserved_mb, mut used_kb) = (0, 0);
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.join("vgpu/vram_mb").is_file() {
                reserved_mb += read_u64(&path.join("vgpu/vram_mb"))?;
                used_kb += read_u64(&path.join("vgpu/vram_used_kb"))?;
            }
        }
        let free_mb = pool_mb.saturating_sub(reserved_mb);
        write(&dir.join("vgpu/pool_free_mb"), free_mb)?;
        write(&dir.join("vgpu/vram_pages"), used_kb / 4)?;
        for entry in fs::read_dir(dir.join("mdev_supported_types"))? {
            let tdir = entry?.path();
            let (vram_mb, weight) = type_quota(&tdir)?;
            write(
                &tdir.join("description"),
                format!(
                    "vram_mb={vram_mb}, weight={weight}, max_instances={}",
                    pool_mb / vram_mb
                ),
            )?;
            write(&tdir.join("available_instances"), free_mb / vram_mb)?;
        }
        Ok(())
    }
}

impl FakeSysfs {
    /// Sets one of an instance's `vgpu/` attributes (a counter, `latency_hist`, …) as
    /// the kernel would show it.
    pub fn set_instance_attr(
        &self,
        parent: &str,
        uuid: Uuid,
        attr: &str,
        value: impl std::fmt::Display,
    ) -> io::Result<()> {
        let path = self.instance_dir(parent, uuid).join("vgpu").join(attr);
        let text = value.to_string();
        if text.is_empty() || text.ends_with('\n') {
            fs::write(path, text)
        } else {
            write(&path, text)
        }
    }

    /// Writes a parent's `vgpu/instances` (as a module that has it shows it) from its
    /// instances' own files, by UUID. Not kept up to date: call again after a change.
    pub fn write_instances_attr(&self, parent: &str) -> io::Result<()> {
        let dir = self.parent_dir(parent);
        let mut lines = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(uuid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| Uuid::parse_str(n).ok())
            else {
                continue;
            };
            let link = fs::read_link(path.join("mdev_type"))?;
            let type_id = link.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(short) = type_id.strip_prefix(TYPE_PREFIX) else {
                continue;
            };
            let v = |a: &str| read_u64(&path.join("vgpu").join(a));
            lines.push(format!(
                "{uuid} {short} {} {} {} {}\n",
                v("vram_mb")?,
                v("vram_used_kb")?,
                v("weight")?,
                v("cap")?
            ));
        }
        lines.sort();
        fs::write(dir.join("vgpu/instances"), lines.concat())
    }

    /// Sets one of a parent's `vgpu/` attributes.
    pub fn set_parent_attr(
        &self,
        parent: &str,
        attr: &str,
        value: impl std::fmt::Display,
    ) -> io::Result<()> {
        write(&self.parent_dir(parent).join("vgpu").join(attr), value)
    }
}

/// Writes an attribute the way sysfs shows it: the value and a newline.
pub fn write(path: &Path, value: impl std::fmt::Display) -> io::Result<()> {
    fs::write(path, format!("{value}\n"))
}

fn read_u64(path: &Path) -> io::Result<u64> {
    let s = fs::read_to_string(path)?;
    s.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// (vram_mb, weight) from a type's description.
fn type_quota(type_dir: &Path) -> io::Result<(u64, u64)> {
    let d: crate::model::TypeDescription = fs::read_to_string(type_dir.join("description"))?
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}")))?;
    Ok((d.vram_mb, d.weight))
}
