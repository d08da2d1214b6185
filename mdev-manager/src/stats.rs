//! Reading the counters of every parent and instance at once (for `top` and
//! `metrics`).

use serde::Serialize;
use std::path::Path;

use crate::counters::{InstanceCounters, LatencyHist, ParentCounters};
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::model::{Instance, Parent};
use crate::sysfs::{read_attr, read_u64};

/// A parent with its scheduler counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParentStats {
    /// The parent (pool, types).
    #[serde(flatten)]
    pub parent: Parent,
    /// Its knobs and counters.
    pub counters: ParentCounters,
}

/// An instance with its counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStats {
    /// The instance (quota, weight, cap).
    #[serde(flatten)]
    pub instance: Instance,
    /// Its counters.
    pub counters: InstanceCounters,
}

/// Every managed parent and instance with their counters, read in one pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Parents, in natural order.
    pub parents: Vec<ParentStats>,
    /// Instances, by parent then UUID.
    pub instances: Vec<InstanceStats>,
}

impl<E: Environment> Manager<E> {
    /// Reads every parent's and instance's counters. An instance removed while it is
    /// being read is left out.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut parents = Vec::new();
        for p in self.parents()? {
            let counters = read_parent_counters(&self.env().parent_base().join(&p.name))?;
            parents.push(ParentStats {
                parent: p,
                counters,
            });
        }
        let mut instances = Vec::new();
        for i in self.instances()? {
            let dir = self.env().mdev_base().join(i.uuid.to_string());
            match read_instance_counters(&dir) {
                Ok(counters) => instances.push(InstanceStats {
                    instance: i,
                    counters,
                }),
                Err(_) if std::fs::symlink_metadata(&dir).is_err() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Snapshot { parents, instances })
    }
}

fn read_parent_counters(dir: &Path) -> Result<ParentCounters> {
    let v = dir.join("vgpu");
    Ok(ParentCounters {
        engines: read_u64(&v.join("engines"))?,
        policy: read_attr(&v.join("policy"))?,
        slice_us: read_u64(&v.join("slice_us"))?,
        watchdog_ms: read_u64(&v.join("watchdog_ms"))?,
        busy_ns: read_u64(&v.join("busy_ns"))?,
        idle_ns: read_u64(&v.join("idle_ns"))?,
        switches: read_u64(&v.join("switches"))?,
        macs: read_u64(&v.join("macs"))?,
    })
}

fn read_instance_counters(dir: &Path) -> Result<InstanceCounters> {
    let v = dir.join("vgpu");
    let hist_path = v.join("latency_hist");
    let hist = read_attr(&hist_path)?;
    Ok(InstanceCounters {
        busy_ns: read_u64(&v.join("busy_ns"))?,
        throttled_ns: read_u64(&v.join("throttled_ns"))?,
        jobs: read_u64(&v.join("jobs"))?,
        cmds_failed: read_u64(&v.join("cmds_failed"))?,
        slices: read_u64(&v.join("slices"))?,
        queue_depth: read_u64(&v.join("queue_depth"))?,
        macs: read_u64(&v.join("macs"))?,
        latency: LatencyHist::parse(&hist).map_err(|reason| Error::Malformed {
            path: hist_path,
            reason,
        })?,
    })
}
