//! sysfs helpers: mdev parents, types and instances, and vgpu's own attributes.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::device::Device;
use crate::error::{Error, Result};

/// Where mdev parents are listed.
pub const MDEV_BUS_CLASS: &str = "/sys/class/mdev_bus";
/// Where mdev instances live.
pub const MDEV_DEVICES: &str = "/sys/bus/mdev/devices";
/// Name prefix of vgpu parents (`vgpu_shim<N>`).
pub const PARENT_PREFIX: &str = "vgpu_shim";

/// Read a sysfs attribute, minus one trailing newline.
pub fn read_attr(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let mut s = fs::read_to_string(path).map_err(|e| Error::sysfs("read", path, e))?;
    if s.ends_with('\n') {
        s.pop();
    }
    Ok(s)
}

/// Parse a decimal attribute value (what the kernel prints for integers).
pub fn parse_decimal(text: &str) -> Result<u64> {
    let t = text.strip_suffix('\n').unwrap_or(text);
    parse_digits(t).ok_or_else(|| Error::Parse {
        what: "decimal integer",
        text: text.to_string(),
    })
}

/// Digits only, fitting in u64.
fn parse_digits(t: &str) -> Option<u64> {
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// Read a decimal integer attribute.
pub fn read_u64(path: impl AsRef<Path>) -> Result<u64> {
    parse_decimal(&read_attr(path)?)
}

/// Write `value` to an attribute in a single write(2), so the kernel's errno reaches the
/// caller ([`Error::errno`]).
pub fn write_attr(path: impl AsRef<Path>, value: &str) -> Result<()> {
    let path = path.as_ref();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::sysfs("open", path, e))?;
    let n = f
        .write(value.as_bytes())
        .map_err(|e| Error::sysfs("write", path, e))?;
    if n != value.len() {
        return Err(Error::Short {
            op: "write",
            done: n,
            want: value.len(),
        });
    }
    Ok(())
}

fn list_dir(path: &Path) -> Result<Vec<String>> {
    let rd = fs::read_dir(path).map_err(|e| Error::sysfs("list", path, e))?;
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::sysfs("list", path, e))?;
        if let Some(n) = ent.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn link_name(path: &Path) -> Result<String> {
    let t = fs::read_link(path).map_err(|e| Error::sysfs("readlink", path, e))?;
    t.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Parse {
            what: "symlink target",
            text: t.display().to_string(),
        })
}

/// A 128-bit UUID (mdev instance name).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uuid([u8; 16]);

impl Uuid {
    /// A random (version 4) UUID from getrandom(2).
    pub fn new_v4() -> Result<Self> {
        let mut b = [0u8; 16];
        let mut got = 0;
        while got < b.len() {
            // SAFETY: the pointer/length describe the unfilled tail of `b`.
            let r = unsafe {
                libc::getrandom(b[got..].as_mut_ptr() as *mut libc::c_void, b.len() - got, 0)
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Ioctl {
                    name: "getrandom",
                    source: e,
                });
            }
            got += r as usize;
        }
        Ok(Self::from_random_bytes(b))
    }

    /// Build a version-4 UUID from 16 random bytes.
    pub fn from_random_bytes(mut b: [u8; 16]) -> Self {
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Uuid(b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

impl FromStr for Uuid {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Parse {
            what: "uuid",
            text: s.to_string(),
        };
        let bytes = s.as_bytes();
        if bytes.len() != 36 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if bytes[i] != b'-' {
                    return Err(bad());
                }
                i += 1;
                continue;
            }
            let hi = (bytes[i] as char).to_digit(16).ok_or_else(bad)?;
            let lo = (bytes[i + 1] as char).to_digit(16).ok_or_else(bad)?;
            out[n] = (hi * 16 + lo) as u8;
            n += 1;
            i += 2;
        }
        Ok(Uuid(out))
    }
}

/// A parsed type `description`: `vram_mb=<N>, weight=<W>, max_instances=<M>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeDescription {
    /// VRAM quota in MiB.
    pub vram_mb: u64,
    /// Default weight.
    pub weight: u64,
    /// Instances that fit in the whole (empty) pool.
    pub max_instances: u64,
}

impl FromStr for TypeDescription {
    type Err = Error;
    /// Strict: exactly the ABI's format (one trailing newline tolerated).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Parse {
            what: "type description",
            text: s.to_string(),
        };
        let t = s.strip_suffix('\n').unwrap_or(s);
        let mut vals = [0u64; 3];
        let keys = ["vram_mb=", "weight=", "max_instances="];
        let mut parts = t.split(", ");
        for (k, v) in keys.iter().zip(vals.iter_mut()) {
            let p = parts.next().ok_or_else(bad)?;
            let num = p.strip_prefix(k).ok_or_else(bad)?;
            *v = parse_digits(num).ok_or_else(bad)?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(TypeDescription {
            vram_mb: vals[0],
            weight: vals[1],
            max_instances: vals[2],
        })
    }
}

impl fmt::Display for TypeDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vram_mb={}, weight={}, max_instances={}",
            self.vram_mb, self.weight, self.max_instances
        )
    }
}

/// A parent's scheduling policy (`vgpu/policy`, docs/scheduler.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Weighted fair share, work-conserving.
    BestEffort,
    /// Equal shares whatever the weights, work-conserving.
    EqualShare,
    /// Each instance gets at most its weight's share of the engines, even when idle.
    FixedShare,
}

impl Policy {
    /// Every policy.
    pub const ALL: [Policy; 3] = [Policy::BestEffort, Policy::EqualShare, Policy::FixedShare];

    /// The sysfs spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::BestEffort => "best_effort",
            Policy::EqualShare => "equal_share",
            Policy::FixedShare => "fixed_share",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = Error;
    /// Exactly one of the three names (one trailing newline tolerated).
    fn from_str(s: &str) -> Result<Self> {
        let t = s.strip_suffix('\n').unwrap_or(s);
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == t)
            .ok_or_else(|| Error::Parse {
                what: "scheduling policy",
                text: s.to_string(),
            })
    }
}

/// An instance's scheduler counters (`<uuid>/vgpu/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InstanceStats {
    /// `busy_ns`.
    pub busy_ns: u64,
    /// `jobs`.
    pub jobs: u64,
    /// `cmds_failed`.
    pub cmds_failed: u64,
    /// `slices`.
    pub slices: u64,
    /// `throttled_ns`.
    pub throttled_ns: u64,
    /// `queue_depth`.
    pub queue_depth: u64,
    /// `macs`.
    pub macs: u64,
}

/// A parent's scheduler counters (`vgpu_shim<N>/vgpu/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ParentStats {
    /// `busy_ns`.
    pub busy_ns: u64,
    /// `idle_ns`.
    pub idle_ns: u64,
    /// `switches`.
    pub switches: u64,
    /// `macs`.
    pub macs: u64,
}

/// An mdev parent device (`/sys/class/mdev_bus/<name>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parent {
    name: String,
    path: PathBuf,
}

impl Parent {
    /// The parent called `name` (not checked for existence).
    pub fn named(name: &str) -> Self {
        Parent {
            name: name.to_string(),
            path: Path::new(MDEV_BUS_CLASS).join(name),
        }
    }

    /// vgpu parent `vgpu_shim<index>`.
    pub fn vgpu(index: u32) -> Self {
        Self::named(&format!("{PARENT_PREFIX}{index}"))
    }

    /// All mdev parents, sorted by name (empty if the class does not exist).
    pub fn all() -> Result<Vec<Parent>> {
        let p = Path::new(MDEV_BUS_CLASS);
        if !p.exists() {
            return Ok(Vec::new());
        }
        Ok(list_dir(p)?.iter().map(|n| Self::named(n)).collect())
    }

    /// All vgpu parents, sorted by index.
    pub fn all_vgpu() -> Result<Vec<Parent>> {
        let mut v: Vec<Parent> = Self::all()?
            .into_iter()
            .filter(|p| p.index().is_some())
            .collect();
        v.sort_by_key(|p| p.index());
        Ok(v)
    }

    /// The parent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its sysfs path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// N of `vgpu_shim<N>`.
    pub fn index(&self) -> Option<u32> {
        self.name.strip_prefix(PARENT_PREFIX)?.parse().ok()
    }

    /// Whether the parent exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Path of a vgpu attribute (`<parent>/vgpu/<name>`).
    pub fn vgpu_attr(&self, name: &str) -> PathBuf {
        self.path.join("vgpu").join(name)
    }

    /// `vgpu/pool_mb`.
    pub fn pool_mb(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("pool_mb"))
    }

    /// Write `vgpu/pool_mb` (raw text, so callers can send bad input).
    pub fn set_pool_mb(&self, text: &str) -> Result<()> {
        write_attr(self.vgpu_attr("pool_mb"), text)
    }

    /// `vgpu/pool_free_mb`.
    pub fn pool_free_mb(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("pool_free_mb"))
    }

    /// `vgpu/vram_pages`.
    pub fn vram_pages(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("vram_pages"))
    }

    /// `vgpu/policy`, raw.
    pub fn policy_raw(&self) -> Result<String> {
        read_attr(self.vgpu_attr("policy"))
    }

    /// `vgpu/policy`, parsed.
    pub fn policy(&self) -> Result<Policy> {
        self.policy_raw()?.parse()
    }

    /// Write `vgpu/policy` (raw text).
    pub fn set_policy(&self, text: &str) -> Result<()> {
        write_attr(self.vgpu_attr("policy"), text)
    }

    /// `vgpu/slice_us`.
    pub fn slice_us(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("slice_us"))
    }

    /// Write `vgpu/slice_us` (raw text).
    pub fn set_slice_us(&self, text: &str) -> Result<()> {
        write_attr(self.vgpu_attr("slice_us"), text)
    }

    /// `vgpu/watchdog_ms`.
    pub fn watchdog_ms(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("watchdog_ms"))
    }

    /// Write `vgpu/watchdog_ms` (raw text).
    pub fn set_watchdog_ms(&self, text: &str) -> Result<()> {
        write_attr(self.vgpu_attr("watchdog_ms"), text)
    }

    /// `vgpu/engines` (read-only).
    pub fn engines(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("engines"))
    }

    /// `vgpu/busy_ns`: engine time spent running commands, summed over engines.
    pub fn busy_ns(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("busy_ns"))
    }

    /// `vgpu/idle_ns`, summed over engines.
    pub fn idle_ns(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("idle_ns"))
    }

    /// `vgpu/switches`.
    pub fn switches(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("switches"))
    }

    /// `vgpu/preempt`: wake-up preemption on (1) or off (0).
    pub fn preempt(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("preempt"))
    }

    /// Write `vgpu/preempt` (raw text).
    pub fn set_preempt(&self, text: &str) -> Result<()> {
        write_attr(self.vgpu_attr("preempt"), text)
    }

    /// `vgpu/preemptions`: slices its engines ended early for a waking instance.
    pub fn preemptions(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("preemptions"))
    }

    /// `vgpu/macs`: GEMM multiply-adds done by all its instances.
    pub fn macs(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("macs"))
    }

    /// The parent's scheduler counters, read one after the other.
    pub fn sched_stats(&self) -> Result<ParentStats> {
        Ok(ParentStats {
            busy_ns: self.busy_ns()?,
            idle_ns: self.idle_ns()?,
            switches: self.switches()?,
            macs: self.macs()?,
        })
    }

    /// Supported type ids (directory names), sorted.
    pub fn type_ids(&self) -> Result<Vec<String>> {
        list_dir(&self.path.join("mdev_supported_types"))
    }

    /// The type called `id` on this parent (not checked for existence).
    pub fn mdev_type(&self, id: &str) -> MdevType {
        MdevType {
            id: id.to_string(),
            path: self.path.join("mdev_supported_types").join(id),
        }
    }

    /// All types of this parent.
    pub fn types(&self) -> Result<Vec<MdevType>> {
        Ok(self
            .type_ids()?
            .iter()
            .map(|id| self.mdev_type(id))
            .collect())
    }

    /// Instances of all types of this parent.
    pub fn instances(&self) -> Result<Vec<Instance>> {
        let mut v = Vec::new();
        for t in self.types()? {
            v.extend(t.instances()?);
        }
        Ok(v)
    }
}

/// An mdev type of a parent (`…/mdev_supported_types/<id>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdevType {
    id: String,
    path: PathBuf,
}

impl MdevType {
    /// Directory name, e.g. `vgpu_shim-256M`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its sysfs path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// `name`.
    pub fn name(&self) -> Result<String> {
        read_attr(self.path.join("name"))
    }

    /// `description`, raw.
    pub fn description_raw(&self) -> Result<String> {
        read_attr(self.path.join("description"))
    }

    /// `description`, parsed.
    pub fn description(&self) -> Result<TypeDescription> {
        self.description_raw()?.parse()
    }

    /// `device_api`.
    pub fn device_api(&self) -> Result<String> {
        read_attr(self.path.join("device_api"))
    }

    /// `available_instances`.
    pub fn available_instances(&self) -> Result<u64> {
        read_u64(self.path.join("available_instances"))
    }

    /// Create an instance named `uuid`.
    pub fn create(&self, uuid: &Uuid) -> Result<Instance> {
        write_attr(self.path.join("create"), &uuid.to_string())?;
        Ok(Instance::new(*uuid))
    }

    /// Create an instance with a fresh random UUID.
    pub fn create_new(&self) -> Result<Instance> {
        self.create(&Uuid::new_v4()?)
    }

    /// Instances of this type (`devices/`).
    pub fn instances(&self) -> Result<Vec<Instance>> {
        let dir = self.path.join("devices");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        list_dir(&dir)?
            .iter()
            .map(|n| Ok(Instance::new(n.parse()?)))
            .collect()
    }
}

/// An mdev instance (`/sys/bus/mdev/devices/<uuid>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    uuid: Uuid,
    path: PathBuf,
}

impl Instance {
    /// The instance named `uuid` (not checked for existence).
    pub fn new(uuid: Uuid) -> Self {
        Instance {
            uuid,
            path: Path::new(MDEV_DEVICES).join(uuid.to_string()),
        }
    }

    /// All mdev instances on the system.
    pub fn all() -> Result<Vec<Instance>> {
        let p = Path::new(MDEV_DEVICES);
        if !p.exists() {
            return Ok(Vec::new());
        }
        list_dir(p)?
            .iter()
            .map(|n| Ok(Instance::new(n.parse()?)))
            .collect()
    }

    /// The UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// Its sysfs path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the device exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Write `1` to `remove` (blocks while the VFIO device is open).
    pub fn remove(&self) -> Result<()> {
        write_attr(self.path.join("remove"), "1")
    }

    /// Path of a vgpu attribute (`<uuid>/vgpu/<name>`).
    pub fn vgpu_attr(&self, name: &str) -> PathBuf {
        self.path.join("vgpu").join(name)
    }

    /// `vgpu/vram_mb`.
    pub fn vram_mb(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("vram_mb"))
    }

    /// `vgpu/vram_used_kb`.
    pub fn vram_used_kb(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("vram_used_kb"))
    }

    /// `vgpu/weight`.
    pub fn weight(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("weight"))
    }

    /// Write `vgpu/weight` (raw text).
    pub fn set_weight(&self, text: &str) -> Result<()> {
        write_attr(self.vgpu_attr("weight"), text)
    }

    /// `vgpu/cap`.
    pub fn cap(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("cap"))
    }

    /// Write `vgpu/cap` (raw text).
    pub fn set_cap(&self, text: &str) -> Result<()> {
        write_attr(self.vgpu_attr("cap"), text)
    }

    /// `vgpu/busy_ns`: engine time spent running its commands.
    pub fn busy_ns(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("busy_ns"))
    }

    /// `vgpu/jobs`: commands completed.
    pub fn jobs(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("jobs"))
    }

    /// `vgpu/cmds_failed`: commands rejected (errors, watchdog).
    pub fn cmds_failed(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("cmds_failed"))
    }

    /// `vgpu/slices`: times an engine picked it.
    pub fn slices(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("slices"))
    }

    /// `vgpu/throttled_ns`: wall time runnable but held back by a cap or fixed share.
    pub fn throttled_ns(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("throttled_ns"))
    }

    /// `vgpu/queue_depth`: commands pending in its ring now.
    pub fn queue_depth(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("queue_depth"))
    }

    /// `vgpu/preemptions`: times it took an engine from a running slice on waking.
    pub fn preemptions(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("preemptions"))
    }

    /// `vgpu/macs`: GEMM multiply-adds its engine has done.
    pub fn macs(&self) -> Result<u64> {
        read_u64(self.vgpu_attr("macs"))
    }

    /// `vgpu/latency_hist`: doorbell-to-completion times.
    pub fn latency_hist(&self) -> Result<LatencyHist> {
        read_attr(self.vgpu_attr("latency_hist"))?.parse()
    }

    /// Clear `vgpu/latency_hist` (write `0`).
    pub fn clear_latency_hist(&self) -> Result<()> {
        write_attr(self.vgpu_attr("latency_hist"), "0")
    }

    /// All scheduler counters, read one after the other.
    pub fn sched_stats(&self) -> Result<InstanceStats> {
        Ok(InstanceStats {
            busy_ns: self.busy_ns()?,
            jobs: self.jobs()?,
            cmds_failed: self.cmds_failed()?,
            slices: self.slices()?,
            throttled_ns: self.throttled_ns()?,
            queue_depth: self.queue_depth()?,
            macs: self.macs()?,
        })
    }

    /// The type id (basename of the `mdev_type` link).
    pub fn type_id(&self) -> Result<String> {
        link_name(&self.path.join("mdev_type"))
    }

    /// The parent device's name (basename of the real path's parent directory).
    pub fn parent_name(&self) -> Result<String> {
        let real = fs::canonicalize(&self.path)
            .map_err(|e| Error::sysfs("canonicalize", &self.path, e))?;
        real.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Parse {
                what: "parent path",
                text: real.display().to_string(),
            })
    }

    /// The VFIO group number.
    pub fn iommu_group(&self) -> Result<u32> {
        crate::container::Group::id_of(&self.path)
    }

    /// Open the instance's VFIO device in a container of its own.
    pub fn open(&self) -> Result<Device> {
        Device::open(&self.path)
    }
}

/// An instance's `vgpu/latency_hist`: for each non-empty bucket, the largest latency
/// it holds (ns) and its count, ascending; `more` counts samples the kernel could not
/// list in one page (all larger than the last bucket listed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHist {
    /// (upper bound in ns, samples), ascending by bound.
    pub buckets: Vec<(u64, u64)>,
    /// Samples beyond the listed buckets.
    pub more: u64,
}

impl LatencyHist {
    /// Samples in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.1).sum::<u64>() + self.more
    }

    /// The upper bound (ns) of the bucket holding the `p`-quantile (0 < p <= 1): the
    /// smallest bound with at least `ceil(p * count)` samples at or below it. `None`
    /// when empty or when that sample is among the unlisted ones.
    pub fn quantile_ns(&self, p: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(ub, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                return Some(ub);
            }
        }
        None
    }

    /// The samples added since `earlier` (a previous reading of the same histogram).
    pub fn since(&self, earlier: &LatencyHist) -> LatencyHist {
        let buckets = self
            .buckets
            .iter()
            .filter_map(|&(ub, c)| {
                let old = earlier
                    .buckets
                    .iter()
                    .find(|b| b.0 == ub)
                    .map_or(0, |b| b.1);
                (c > old).then_some((ub, c - old))
            })
            .collect();
        LatencyHist {
            buckets,
            more: self.more.saturating_sub(earlier.more),
        }
    }
}

impl FromStr for LatencyHist {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = || Error::Parse {
            what: "latency_hist",
            text: text.to_string(),
        };
        let mut h = LatencyHist::default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let mut f = line.split(' ');
            let (a, b) = (f.next().ok_or_else(bad)?, f.next().ok_or_else(bad)?);
            if f.next().is_some() || h.more != 0 {
                return Err(bad());
            }
            let c = parse_digits(b).ok_or_else(bad)?;
            if a == "more" {
                h.more = c;
                continue;
            }
            let ub = parse_digits(a).ok_or_else(bad)?;
            if h.buckets.last().is_some_and(|l| l.0 >= ub) {
                return Err(bad());
            }
            h.buckets.push((ub, c));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_parses_exact_format() {
        let d: TypeDescription = "vram_mb=256, weight=1, max_instances=4"
            .parse()
            .expect("ok");
        assert_eq!(
            d,
            TypeDescription {
                vram_mb: 256,
                weight: 1,
                max_instances: 4
            }
        );
        assert_eq!(d.to_string(), "vram_mb=256, weight=1, max_instances=4");
        assert!("vram_mb=256, weight=1, max_instances=4\n"
            .parse::<TypeDescription>()
            .is_ok());
    }

    #[test]
    fn description_rejects_variants() {
        for bad in [
            "",
            "vram_mb=256,weight=1,max_instances=4",
            "vram_mb=256, weight=1",
            "vram_mb=256, weight=1, max_instances=4, extra=1",
            "weight=1, vram_mb=256, max_instances=4",
            "vram_mb=-1, weight=1, max_instances=4",
            "vram_mb=0x10, weight=1, max_instances=4",
            "vram_mb=256 , weight=1, max_instances=4",
            "vram_mb=256, weight=1, max_instances=4\n\n",
        ] {
            assert!(bad.parse::<TypeDescription>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("1024").expect("ok"), 1024);
        assert_eq!(parse_decimal("0\n").expect("ok"), 0);
        for bad in [
            "",
            "-1",
            "+1",
            "0x10",
            "1 ",
            "abc",
            "99999999999999999999999",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn policies() {
        for p in Policy::ALL {
            assert_eq!(p.as_str().parse::<Policy>().expect("parse"), p);
            assert_eq!(format!("{p}\n").parse::<Policy>().expect("newline"), p);
        }
        for bad in [
            "",
            "best",
            "BEST_EFFORT",
            " best_effort",
            "best_effort ",
            "fixed_share\n\n",
        ] {
            assert!(bad.parse::<Policy>().is_err(), "{bad:?}");
        }
        assert_eq!(
            Instance::new(Uuid::from_random_bytes([0; 16])).vgpu_attr("busy_ns"),
            PathBuf::from(
                "/sys/bus/mdev/devices/00000000-0000-4000-8000-000000000000/vgpu/busy_ns"
            )
        );
    }

    #[test]
    fn uuid_round_trip() {
        let u = Uuid::from_random_bytes([0xff; 16]);
        let s = u.to_string();
        assert_eq!(s, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(s.parse::<Uuid>().expect("parse"), u);
        assert!("ffffffff-ffff-4fff-bfff-fffffffffff"
            .parse::<Uuid>()
            .is_err());
        assert!("ffffffffxffff-4fff-bfff-ffffffffffff"
            .parse::<Uuid>()
            .is_err());
        assert!("gfffffff-ffff-4fff-bfff-ffffffffffff"
            .parse::<Uuid>()
            .is_err());
        let a = Uuid::new_v4().expect("random");
        let b = Uuid::new_v4().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[6] >> 4, 4);
    }

    #[test]
    fn parent_index() {
        assert_eq!(Parent::vgpu(3).index(), Some(3));
        assert_eq!(Parent::named("mbochs").index(), None);
        assert_eq!(
            Parent::vgpu(0).vgpu_attr("pool_mb"),
            PathBuf::from("/sys/class/mdev_bus/vgpu_shim0/vgpu/pool_mb")
        );
        assert_eq!(
            Parent::vgpu(1).mdev_type("vgpu_shim-1G").path(),
            Path::new("/sys/class/mdev_bus/vgpu_shim1/mdev_supported_types/vgpu_shim-1G")
        );
    }

    #[test]
    fn latency_hist() {
        let h: LatencyHist = "1000 2\n1063 5\n2000000 3\n".parse().expect("ok");
        assert_eq!(h.buckets, vec![(1000, 2), (1063, 5), (2000000, 3)]);
        assert_eq!(h.count(), 10);
        assert_eq!(h.quantile_ns(0.1), Some(1000));
        assert_eq!(h.quantile_ns(0.2), Some(1000));
        assert_eq!(h.quantile_ns(0.21), Some(1063));
        assert_eq!(h.quantile_ns(0.5), Some(1063));
        assert_eq!(h.quantile_ns(0.71), Some(2000000));
        assert_eq!(h.quantile_ns(1.0), Some(2000000));
        let empty: LatencyHist = "".parse().expect("empty");
        assert_eq!(empty.count(), 0);
        assert_eq!(empty.quantile_ns(0.5), None);
        let m: LatencyHist = "5 1\nmore 3\n".parse().expect("more");
        assert_eq!(
            (m.count(), m.quantile_ns(0.25), m.quantile_ns(0.5)),
            (4, Some(5), None)
        );
        let later: LatencyHist = "1000 2\n1063 9\n4000 1\n2000000 3\n".parse().expect("ok");
        assert_eq!(later.since(&h).buckets, vec![(1063, 4), (4000, 1)]);
        for bad in [
            "1000",
            "1000 2 3",
            "x 2",
            "1000 -2",
            "1000 2\n999 1",
            "1000 2\n1000 1",
            "more 1\n5 1",
        ] {
            assert!(bad.parse::<LatencyHist>().is_err(), "{bad:?}");
        }
    }
}
