//! Live handles on the sysfs tree: one parent, type or instance, whose attributes are
//! read or written one at a time, when asked, raw text included (so a test can send
//! the kernel bad input and see its errno). For a whole listing at once see
//! [`crate::read`]; for the values read see [`crate::model`] and [`crate::counters`].
//!
//! A handle is a path: it is not checked for existence when made, and every call
//! reads the kernel afresh. Handles are rooted by an [`Environment`] (`*_in`
//! constructors); the short constructors use the real system ([`SystemEnvironment`]).

use std::fs;
use std::path::{Path, PathBuf};
use uuid::Uuid;

use crate::counters::{ExecutorCounters, InstanceCounters, LatencyHist, ParentCounters, Policy};
use crate::env::{Environment, SystemEnvironment};
use crate::error::{Error, Result};
use crate::io::{list_dir, read_attr, read_u64, write_value};
use crate::model::TypeDescription;

/// Name prefix of vgpu parents (`vgpu_shim<N>`).
pub const PARENT_PREFIX: &str = "vgpu_shim";

/// An mdev parent device (`<root>/sys/class/mdev_bus/<name>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parent {
    name: String,
    path: PathBuf,
    mdev_base: PathBuf,
}

impl Parent {
    /// The parent called `name` on the running system.
    pub fn named(name: &str) -> Self {
        Self::named_in(&SystemEnvironment, name)
    }

    /// The parent called `name` in `env`.
    pub fn named_in(env: &impl Environment, name: &str) -> Self {
        Parent {
            name: name.to_string(),
            path: env.parent_base().join(name),
            mdev_base: env.mdev_base(),
        }
    }

    /// vgpu parent `vgpu_shim<index>` on the running system.
    pub fn vgpu(index: u32) -> Self {
        Self::named(&format!("{PARENT_PREFIX}{index}"))
    }

    /// All mdev parents of the running system, sorted by name.
    pub fn all() -> Result<Vec<Parent>> {
        Self::all_in(&SystemEnvironment)
    }

    /// All mdev parents in `env`, sorted by name (empty without the mdev class).
    pub fn all_in(env: &impl Environment) -> Result<Vec<Parent>> {
        Ok(list_dir(&env.parent_base())?
            .iter()
            .map(|(n, _)| Self::named_in(env, n))
            .collect())
    }

    /// All vgpu parents of the running system, sorted by index.
    pub fn all_vgpu() -> Result<Vec<Parent>> {
        Self::all_vgpu_in(&SystemEnvironment)
    }

    /// All vgpu parents in `env`, sorted by index.
    pub fn all_vgpu_in(env: &impl Environment) -> Result<Vec<Parent>> {
        let mut v: Vec<Parent> = Self::all_in(env)?
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

    fn u64(&self, name: &str) -> Result<u64> {
        read_u64(&self.vgpu_attr(name))
    }

    fn set(&self, name: &str, text: &str) -> Result<()> {
        write_value(&self.vgpu_attr(name), text)
    }

    /// `vgpu/pool_mb`.
    pub fn pool_mb(&self) -> Result<u64> {
        self.u64("pool_mb")
    }

    /// Write `vgpu/pool_mb` (raw text, so callers can send bad input).
    pub fn set_pool_mb(&self, text: &str) -> Result<()> {
        self.set("pool_mb", text)
    }

    /// `vgpu/pool_free_mb`.
    pub fn pool_free_mb(&self) -> Result<u64> {
        self.u64("pool_free_mb")
    }

    /// `vgpu/vram_pages`.
    pub fn vram_pages(&self) -> Result<u64> {
        self.u64("vram_pages")
    }

    /// `vgpu/policy`, raw.
    pub fn policy_raw(&self) -> Result<String> {
        read_attr(&self.vgpu_attr("policy"))
    }

    /// `vgpu/policy`, parsed.
    pub fn policy(&self) -> Result<Policy> {
        self.policy_raw()?.parse()
    }

    /// Write `vgpu/policy` (raw text).
    pub fn set_policy(&self, text: &str) -> Result<()> {
        self.set("policy", text)
    }

    /// `vgpu/slice_us`.
    pub fn slice_us(&self) -> Result<u64> {
        self.u64("slice_us")
    }

    /// Write `vgpu/slice_us` (raw text).
    pub fn set_slice_us(&self, text: &str) -> Result<()> {
        self.set("slice_us", text)
    }

    /// `vgpu/watchdog_ms`.
    pub fn watchdog_ms(&self) -> Result<u64> {
        self.u64("watchdog_ms")
    }

    /// Write `vgpu/watchdog_ms` (raw text).
    pub fn set_watchdog_ms(&self, text: &str) -> Result<()> {
        self.set("watchdog_ms", text)
    }

    /// `vgpu/engines` (read-only).
    pub fn engines(&self) -> Result<u64> {
        self.u64("engines")
    }

    /// `vgpu/busy_ns`: engine time spent running commands, summed over engines.
    pub fn busy_ns(&self) -> Result<u64> {
        self.u64("busy_ns")
    }

    /// `vgpu/idle_ns`, summed over engines.
    pub fn idle_ns(&self) -> Result<u64> {
        self.u64("idle_ns")
    }

    /// `vgpu/switches`.
    pub fn switches(&self) -> Result<u64> {
        self.u64("switches")
    }

    /// `vgpu/preempt`: wake-up preemption on (1) or off (0).
    pub fn preempt(&self) -> Result<u64> {
        self.u64("preempt")
    }

    /// Write `vgpu/preempt` (raw text).
    pub fn set_preempt(&self, text: &str) -> Result<()> {
        self.set("preempt", text)
    }

    /// `vgpu/preemptions`: slices its engines ended early for a waking instance.
    pub fn preemptions(&self) -> Result<u64> {
        self.u64("preemptions")
    }

    /// `vgpu/macs`: GEMM multiply-adds done by all its instances.
    pub fn macs(&self) -> Result<u64> {
        self.u64("macs")
    }

    /// `vgpu/executor`: `cpu` or `external` (docs/executor.md), raw.
    pub fn executor(&self) -> Result<String> {
        read_attr(&self.vgpu_attr("executor"))
    }

    /// Write `vgpu/executor` (raw text).
    pub fn set_executor(&self, text: &str) -> Result<()> {
        self.set("executor", text)
    }

    /// `vgpu/executor_connected`: 1 while a daemon has the parent's executor device open.
    pub fn executor_connected(&self) -> Result<u64> {
        self.u64("executor_connected")
    }

    /// `vgpu/executor_handoffs`: pieces handed to a daemon (first handoffs).
    pub fn executor_handoffs(&self) -> Result<u64> {
        self.u64("executor_handoffs")
    }

    /// `vgpu/executor_requeues`: pieces handed again to a new daemon.
    pub fn executor_requeues(&self) -> Result<u64> {
        self.u64("executor_requeues")
    }

    /// `vgpu/executor_errors`: completions dropped or failed, queue indices out of range.
    pub fn executor_errors(&self) -> Result<u64> {
        self.u64("executor_errors")
    }

    /// The parent's four counters alone (`busy_ns`, `idle_ns`, `switches`, `macs`),
    /// read one after the other with nothing in between: for measurement windows. The
    /// knobs are left at their defaults ([`Parent::counters`] reads them too).
    pub fn sched_counters(&self) -> Result<ParentCounters> {
        Ok(ParentCounters {
            busy_ns: self.busy_ns()?,
            idle_ns: self.idle_ns()?,
            switches: self.switches()?,
            macs: self.macs()?,
            ..ParentCounters::default()
        })
    }

    /// The parent's counters ([`Parent::sched_counters`]) and then its knobs (and the
    /// preemption knob and counter where the module has them).
    pub fn counters(&self) -> Result<ParentCounters> {
        let counters = self.sched_counters()?;
        Ok(ParentCounters {
            engines: self.engines()?,
            policy: self.policy_raw()?,
            slice_us: self.slice_us()?,
            watchdog_ms: self.watchdog_ms()?,
            preempt: optional(self.preempt())?.map(|v| v != 0),
            preemptions: optional(self.preemptions())?,
            executor: self.executor_counters()?,
            ..counters
        })
    }

    /// The executor mode and counters, `None` on a module without them.
    pub fn executor_counters(&self) -> Result<Option<ExecutorCounters>> {
        let Some(mode) = optional(self.executor())? else {
            return Ok(None);
        };
        Ok(Some(ExecutorCounters {
            mode,
            connected: self.executor_connected()? != 0,
            handoffs: self.executor_handoffs()?,
            requeues: self.executor_requeues()?,
            errors: self.executor_errors()?,
        }))
    }

    /// Supported type ids (directory names), sorted.
    pub fn type_ids(&self) -> Result<Vec<String>> {
        Ok(list_dir(&self.path.join("mdev_supported_types"))?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// The type called `id` on this parent (not checked for existence).
    pub fn mdev_type(&self, id: &str) -> MdevType {
        MdevType {
            id: id.to_string(),
            path: self.path.join("mdev_supported_types").join(id),
            mdev_base: self.mdev_base.clone(),
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
    mdev_base: PathBuf,
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
        read_attr(&self.path.join("name"))
    }

    /// `description`, raw.
    pub fn description_raw(&self) -> Result<String> {
        read_attr(&self.path.join("description"))
    }

    /// `description`, parsed.
    pub fn description(&self) -> Result<TypeDescription> {
        let path = self.path.join("description");
        read_attr(&path)?
            .parse()
            .map_err(|source| Error::Description { path, source })
    }

    /// `device_api`.
    pub fn device_api(&self) -> Result<String> {
        read_attr(&self.path.join("device_api"))
    }

    /// `available_instances`.
    pub fn available_instances(&self) -> Result<u64> {
        read_u64(&self.path.join("available_instances"))
    }

    /// Create an instance named `uuid`.
    pub fn create(&self, uuid: &Uuid) -> Result<Instance> {
        write_value(&self.path.join("create"), &uuid.to_string())?;
        Ok(self.instance(*uuid))
    }

    /// Create an instance with a fresh random UUID.
    pub fn create_new(&self) -> Result<Instance> {
        self.create(&Uuid::new_v4())
    }

    fn instance(&self, uuid: Uuid) -> Instance {
        Instance {
            uuid,
            path: self.mdev_base.join(uuid.to_string()),
        }
    }

    /// Instances of this type (`devices/`), by UUID.
    pub fn instances(&self) -> Result<Vec<Instance>> {
        Ok(list_dir(&self.path.join("devices"))?
            .iter()
            .filter_map(|(n, _)| Uuid::parse_str(n).ok())
            .map(|u| self.instance(u))
            .collect())
    }
}

/// An mdev instance (`<root>/sys/bus/mdev/devices/<uuid>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    uuid: Uuid,
    path: PathBuf,
}

impl Instance {
    /// The instance named `uuid` on the running system (not checked for existence).
    pub fn new(uuid: Uuid) -> Self {
        Self::new_in(&SystemEnvironment, uuid)
    }

    /// The instance named `uuid` in `env`.
    pub fn new_in(env: &impl Environment, uuid: Uuid) -> Self {
        Instance {
            uuid,
            path: env.mdev_base().join(uuid.to_string()),
        }
    }

    /// All mdev instances of the running system.
    pub fn all() -> Result<Vec<Instance>> {
        Self::all_in(&SystemEnvironment)
    }

    /// All mdev instances in `env` (of any driver), by UUID.
    pub fn all_in(env: &impl Environment) -> Result<Vec<Instance>> {
        Ok(list_dir(&env.mdev_base())?
            .iter()
            .filter_map(|(n, _)| Uuid::parse_str(n).ok())
            .map(|u| Self::new_in(env, u))
            .collect())
    }

    /// The UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// Its sysfs path (the bus link).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the device exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Write `1` to `remove` (blocks while the VFIO device is open).
    pub fn remove(&self) -> Result<()> {
        write_value(&self.path.join("remove"), "1")
    }

    /// Path of a vgpu attribute (`<uuid>/vgpu/<name>`).
    pub fn vgpu_attr(&self, name: &str) -> PathBuf {
        self.path.join("vgpu").join(name)
    }

    fn u64(&self, name: &str) -> Result<u64> {
        read_u64(&self.vgpu_attr(name))
    }

    /// `vgpu/vram_mb`.
    pub fn vram_mb(&self) -> Result<u64> {
        self.u64("vram_mb")
    }

    /// `vgpu/vram_used_kb`.
    pub fn vram_used_kb(&self) -> Result<u64> {
        self.u64("vram_used_kb")
    }

    /// `vgpu/weight`.
    pub fn weight(&self) -> Result<u64> {
        self.u64("weight")
    }

    /// Write `vgpu/weight` (raw text).
    pub fn set_weight(&self, text: &str) -> Result<()> {
        write_value(&self.vgpu_attr("weight"), text)
    }

    /// `vgpu/cap`.
    pub fn cap(&self) -> Result<u64> {
        self.u64("cap")
    }

    /// Write `vgpu/cap` (raw text).
    pub fn set_cap(&self, text: &str) -> Result<()> {
        write_value(&self.vgpu_attr("cap"), text)
    }

    /// `vgpu/busy_ns`: engine time spent running its commands.
    pub fn busy_ns(&self) -> Result<u64> {
        self.u64("busy_ns")
    }

    /// `vgpu/jobs`: commands completed.
    pub fn jobs(&self) -> Result<u64> {
        self.u64("jobs")
    }

    /// `vgpu/cmds_failed`: commands rejected (errors, watchdog).
    pub fn cmds_failed(&self) -> Result<u64> {
        self.u64("cmds_failed")
    }

    /// `vgpu/slices`: times an engine picked it.
    pub fn slices(&self) -> Result<u64> {
        self.u64("slices")
    }

    /// `vgpu/throttled_ns`: wall time runnable but held back by a cap or fixed share.
    pub fn throttled_ns(&self) -> Result<u64> {
        self.u64("throttled_ns")
    }

    /// `vgpu/queue_depth`: commands pending in its ring now.
    pub fn queue_depth(&self) -> Result<u64> {
        self.u64("queue_depth")
    }

    /// `vgpu/preemptions`: times it took an engine from a running slice on waking.
    pub fn preemptions(&self) -> Result<u64> {
        self.u64("preemptions")
    }

    /// `vgpu/macs`: GEMM multiply-adds its engine has done.
    pub fn macs(&self) -> Result<u64> {
        self.u64("macs")
    }

    /// `vgpu/latency_hist`: doorbell-to-completion times.
    pub fn latency_hist(&self) -> Result<LatencyHist> {
        let path = self.vgpu_attr("latency_hist");
        let text = read_attr(&path)?;
        LatencyHist::parse(&text).map_err(|reason| Error::Malformed { path, reason })
    }

    /// Clear `vgpu/latency_hist` (write `0`).
    pub fn clear_latency_hist(&self) -> Result<()> {
        write_value(&self.vgpu_attr("latency_hist"), "0")
    }

    /// Its scalar counters alone (`busy_ns` … `macs`), read one after the other with
    /// nothing in between: for measurement windows. `latency` is left empty
    /// ([`Instance::counters`] reads it too).
    pub fn sched_counters(&self) -> Result<InstanceCounters> {
        Ok(InstanceCounters {
            busy_ns: self.busy_ns()?,
            throttled_ns: self.throttled_ns()?,
            jobs: self.jobs()?,
            cmds_failed: self.cmds_failed()?,
            slices: self.slices()?,
            queue_depth: self.queue_depth()?,
            macs: self.macs()?,
            preemptions: None,
            latency: LatencyHist::default(),
        })
    }

    /// All its counters: [`Instance::sched_counters`], then the latency histogram and
    /// `preemptions` (where the module has it).
    pub fn counters(&self) -> Result<InstanceCounters> {
        let counters = self.sched_counters()?;
        Ok(InstanceCounters {
            latency: self.latency_hist()?,
            preemptions: optional(self.preemptions())?,
            ..counters
        })
    }

    /// The type id (basename of the `mdev_type` link).
    pub fn type_id(&self) -> Result<String> {
        let link = self.path.join("mdev_type");
        let t = fs::read_link(&link).map_err(|source| Error::Read {
            path: link.clone(),
            source,
        })?;
        t.file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Malformed {
                path: link,
                reason: format!("link target {} has no type name", t.display()),
            })
    }

    /// The parent device's name (basename of the real path's parent directory).
    pub fn parent_name(&self) -> Result<String> {
        let real = fs::canonicalize(&self.path).map_err(|source| Error::Read {
            path: self.path.clone(),
            source,
        })?;
        real.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Malformed {
                path: self.path.clone(),
                reason: format!("device path {} has no parent", real.display()),
            })
    }
}

/// `r`, with an attribute that does not exist (a module from before it) as `None`.
fn optional<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::RootedEnvironment;
    use crate::fake::{FakeSysfs, SAMPLE_UUIDS};

    #[test]
    fn system_paths() {
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
        assert_eq!(
            Instance::new(Uuid::nil()).vgpu_attr("busy_ns"),
            PathBuf::from(
                "/sys/bus/mdev/devices/00000000-0000-0000-0000-000000000000/vgpu/busy_ns"
            )
        );
    }

    #[test]
    fn reads_and_writes_a_rooted_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeSysfs::sample(dir.path()).expect("fake");
        let env = RootedEnvironment::new(dir.path());
        let names: Vec<String> = Parent::all_vgpu_in(&env)
            .expect("parents")
            .iter()
            .map(|p| p.name().to_string())
            .collect();
        assert_eq!(names, ["vgpu_shim0", "vgpu_shim1"]);
        let p = Parent::named_in(&env, "vgpu_shim0");
        assert_eq!(p.pool_mb().expect("pool"), 2048);
        assert_eq!(p.pool_free_mb().expect("free"), 2048 - 256 - 1024);
        assert_eq!(p.policy().expect("policy"), Policy::BestEffort);
        let t = p.mdev_type("vgpu_shim-1G");
        assert_eq!(t.description().expect("desc").vram_mb, 1024);
        let insts = t.instances().expect("instances");
        assert_eq!(insts.len(), 1);
        let i = &insts[0];
        assert_eq!(i.uuid(), SAMPLE_UUIDS[1]);
        assert_eq!((i.weight().expect("w"), i.cap().expect("c")), (50, 25));
        assert_eq!(i.type_id().expect("type"), "vgpu_shim-1G");
        assert_eq!(i.parent_name().expect("parent"), "vgpu_shim0");
        fake.set_instance_attr("vgpu_shim0", SAMPLE_UUIDS[1], "latency_hist", "1000 3\n")
            .expect("hist");
        let c = i.counters().expect("counters");
        assert_eq!(c.latency.total(), 3);
        i.set_cap("30").expect("write");
        assert_eq!(i.cap().expect("c"), 30);
        assert_eq!(p.instances().expect("all").len(), 2);
        assert_eq!(Instance::all_in(&env).expect("all").len(), 3);
        let missing = Instance::new_in(&env, Uuid::nil());
        let e = missing.weight().expect_err("missing");
        assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
        let e = missing.set_weight("1").expect_err("missing");
        assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
    }
}
