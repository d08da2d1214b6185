//! Reading the counters of every parent and instance at once (for `top` and
//! `metrics`).

use serde::Serialize;
use vgpu_sysfs::handle;

use crate::counters::{InstanceCounters, ParentCounters};
use crate::env::Environment;
use crate::error::Result;
use crate::manager::Manager;
use crate::model::{Instance, Parent};

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
            let counters = handle::Parent::named_in(self.env(), &p.name).counters()?;
            parents.push(ParentStats {
                parent: p,
                counters,
            });
        }
        let mut instances = Vec::new();
        for i in self.instances()? {
            let h = handle::Instance::new_in(self.env(), i.uuid);
            match h.counters() {
                Ok(counters) => instances.push(InstanceStats {
                    instance: i,
                    counters,
                }),
                Err(_) if std::fs::symlink_metadata(h.path()).is_err() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Snapshot { parents, instances })
    }
}
