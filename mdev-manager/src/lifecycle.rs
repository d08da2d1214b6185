//! Persistent and transient instances: `define`, `undefine`, `start`, `stop`,
//! `start-parent` and `modify --defined`. Every verb is idempotent where that makes
//! sense (starting a running instance, defining an identical definition, stopping a
//! stopped one, undefining an undefined one all succeed and say so) and checks
//! everything it can before it writes anything. Callers that change things hold the
//! [`Lock`](crate::lock::Lock).
//!
//! This module holds what the verbs share (the [`Spec`] of an instance, what a verb
//! [`Done`]); the verbs are in `define.rs`, `start.rs` and [`crate::apply`] (batches).

use log::debug;
use serde::Serialize;
use uuid::Uuid;

use crate::definition::StartMode;
use crate::env::Environment;
use crate::error::write_error;
use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::model::{Instance, Parent, VgpuType};
use crate::placement::Placement;

/// What to bring up: a parent (or a placement policy), a type and scheduling knobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    /// The parent; `None` = choose one by `placement`.
    pub parent: Option<String>,
    /// Any spelling of the type.
    pub type_spec: Option<String>,
    /// Weight (1–100); `None` = the type's default.
    pub weight: Option<u64>,
    /// Cap (0–100); `None` = none.
    pub cap: Option<u64>,
    /// How to choose a parent when none is given.
    pub placement: Placement,
    /// Further attributes to write after creation, in order (from a libvirt document);
    /// `vgpu/weight` and `vgpu/cap` go in `weight` and `cap`.
    pub attrs: Vec<(String, String)>,
}

/// What a verb did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
    /// A definition was written.
    Defined,
    /// An identical definition existed; nothing written.
    Unchanged,
    /// A definition was removed.
    Undefined,
    /// There was no definition to remove.
    NotDefined,
    /// An instance was created (and its attributes applied).
    Started,
    /// The instance was running already; nothing written.
    AlreadyRunning,
    /// An instance was removed.
    Stopped,
    /// The instance was not running; nothing written.
    NotRunning,
    /// A definition and/or a running instance were changed.
    Modified,
}

/// The result of one verb on one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The instance.
    pub uuid: Uuid,
    /// Its parent.
    pub parent: String,
    /// What happened.
    pub done: Done,
}

impl Outcome {
    /// A line for the operator when nothing had to be done (idempotent re-runs).
    pub fn note(&self) -> Option<String> {
        let u = self.uuid;
        Some(match self.done {
            Done::Unchanged => format!("{u} is already defined on {} as given", self.parent),
            Done::NotDefined => format!("{u} is not defined; nothing to undefine"),
            Done::AlreadyRunning => format!("{u} is already running on {}", self.parent),
            Done::NotRunning => format!("{u} is not running; nothing to stop"),
            _ => return None,
        })
    }
}

/// A change to a definition; `None` leaves a field alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefinitionUpdate {
    /// New weight.
    pub weight: Option<u64>,
    /// New cap.
    pub cap: Option<u64>,
    /// New start mode.
    pub start: Option<StartMode>,
}

impl<E: Environment> Manager<E> {
    /// The running vgpu instance with this UUID, if any.
    pub fn running(&self, uuid: Uuid) -> Result<Option<Instance>> {
        match self.instance(uuid) {
            Ok(i) => Ok(Some(i)),
            Err(Error::InstanceNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the instance, then writes each attribute in order; if one fails the
    /// instance is removed again and the error returned.
    pub(crate) fn bring_up(
        &self,
        p: &Parent,
        t: &VgpuType,
        uuid: Uuid,
        attrs: &[(String, String)],
    ) -> Result<()> {
        self.create_on(p, t, uuid)?;
        let dir = self.instance_dir(uuid);
        for (k, v) in attrs {
            let path = dir.join(k);
            debug!("writing {v} to {}", path.display());
            if let Err(e) = self.env().write_attr(&path, v) {
                let error = Box::new(write_error(path, e, format!("{k}={v} for {uuid}")));
                let remove_error = self.remove(uuid).err().map(Box::new);
                return Err(Error::RolledBack {
                    uuid,
                    error,
                    remove_error,
                });
            }
        }
        Ok(())
    }
}
