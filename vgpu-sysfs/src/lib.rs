//! The one model of `vgpu_shim`'s sysfs ABI (docs/device-abi.md): mdev parents, their
//! types, instances, the knobs the host sets (pool, policy, slice, watchdog, weight,
//! cap) and the counters the kernel keeps (scheduler, engine, latency histogram).
//!
//! # Why a crate of its own, at the top level
//! Three programs read this ABI: `vgpuctl` (mdev-manager), the rig's guest-side tests
//! (tests/rig-guest) and the VFIO client's users (a VMM finding the instance it
//! attaches). None of them owns the ABI, and none should drag the others in: the VFIO
//! client's ioctls are no business of `vgpuctl`, and `vgpuctl`'s CLI, definitions and
//! renderings none of the tests'. So the ABI's model sits beside them, depending on
//! neither, and each depends on it. It knows sysfs and nothing else: no VFIO, no CLI.
//!
//! # What is where
//! - [`env`]: the [`Environment`] every path is rooted by ([`SystemEnvironment`] is the
//!   real `/`, [`RootedEnvironment`] any directory), so everything here runs on a temp
//!   tree in unit tests.
//! - [`model`]: what is read at one instant, as values ([`model::Parent`] with its
//!   pool and [`model::VgpuType`]s, [`model::Instance`] with its quota and knobs), the
//!   type `description` grammar and the knobs' ranges.
//! - [`counters`]: the scheduler's and engine's counters ([`InstanceCounters`],
//!   [`ParentCounters`]), the [`LatencyHist`] and the scheduling [`Policy`].
//! - [`read`]: reading the model in one pass (every parent, every instance), as
//!   `vgpuctl list`/`top` want it, with as few system calls as it takes: one read of a
//!   parent's `vgpu/instances` ([`listing`]) where the module has it.
//! - [`handle`]: live handles on one node of the tree ([`handle::Parent`],
//!   [`handle::MdevType`], [`handle::Instance`]) that read or write one attribute at a
//!   time, raw text included, as tests driving the kernel want them.
//! - [`io`]: the attribute I/O under all of it: one `read(2)` per attribute, one
//!   `write(2)` per value, never creating a file, decimals parsed strictly.
//! - [`fake`] and [`fake_kernel`]: a kernel-like tree for tests, and an environment
//!   that acts on writes to it as the kernel does.
//!
//! UUIDs are [`uuid::Uuid`] (re-exported as [`Uuid`]).
//!
//! # Dependencies, and why
//! All pure Rust, so every user still builds as a static musl binary.
//! - `uuid` (v4, serde): RFC 4122 parsing and formatting, random instance names.
//! - `rustix` (`fs`): `openat`/`read`/`getdents64` without libc's extra calls and
//!   allocations ([`io`] explains why that matters under emulation).
//! - `serde` (derive): the model is what `vgpuctl --json` prints.
//! - `thiserror`: the [`Error`] enum's boilerplate.
//! - `libc`: errno constants; `log`: a warning for a name that is not UTF-8.
//! - `tempfile` (dev only): temporary roots for the tests.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod counters;
pub mod env;
pub mod error;
pub mod fake;
pub mod fake_kernel;
pub mod handle;
pub mod io;
pub mod listing;
pub mod model;
pub mod read;

pub use counters::{ExecutorCounters, InstanceCounters, LatencyHist, ParentCounters, Policy};
pub use env::{Environment, RootedEnvironment, SystemEnvironment};
pub use error::{Error, Result};
pub use model::{DescriptionError, TypeDescription, TYPE_PREFIX};
pub use uuid::Uuid;
