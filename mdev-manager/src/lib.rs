//! vgpu mdev manager: lists vgpu_shim parents, types and instances, creates and removes
//! instances, and tunes their scheduling and the parents' VRAM pools, all through the
//! sysfs ABI of `docs/device-abi.md`; keeps persistent definitions in mdevctl's format
//! and layout (`/etc/mdevctl.d/<parent>/<uuid>`), places and admits instances, writes
//! libvirt XML, and exposes the counters (Prometheus text, `top`). The `vgpuctl`
//! binary is a thin CLI over [`Manager`].
//!
//! The sysfs ABI itself (parents, types, instances, knobs, counters, the
//! [`Environment`] and the fake trees for tests) is modelled by the `vgpu-sysfs`
//! crate, which the rig tests share; its modules are re-exported here under their
//! old names ([`model`], [`counters`], [`env`], [`fake`], [`fake_kernel`]).
//!
//! Modules: the counters of everything at once ([`stats`]), live operations ([`manager`]),
//! definitions ([`definition`], the store, [`lock`]), [`lifecycle`] verbs (`define.rs`,
//! `start.rs`) with placement and admission ([`placement`]), batches ([`apply`] of a
//! [`manifest`], `create --count`), operator spellings ([`units`]), and the outputs
//! ([`render`], [`xml`], [`metrics`], [`top`]).
//!
//! Every path is rooted by an [`Environment`]: [`SystemEnvironment`] is the real `/`,
//! [`RootedEnvironment`] any directory (tests, `vgpuctl --root`). Every sysfs write the
//! manager makes goes through [`Environment::write_attr`]. [`fake::FakeSysfs`] builds a
//! kernel-like tree for tests, and [`fake_kernel::FakeKernel`] acts on writes to it as
//! the kernel does (`create` makes an instance, `remove` removes it, knobs take their
//! ranges).
//!
//! # Speed
//! `vgpuctl` is run once per operation by scripts, so a call is mostly process start-up
//! and sysfs reads; under emulation (the test VM, CI) both are expensive, and the
//! benchmark (`scripts/bench-vgpuctl`, docs/benchmarks.md) holds it to a fraction of
//! mdevctl's time. What keeps it there: the binary is static and not position
//! independent (`.cargo/config.toml`), clap builds only the verb in use, the global
//! allocator is dlmalloc, files are opened by raw `openat` (rustix: musl adds an
//! `fcntl`) and read in one `read(2)`, directories by `getdents64`, instances are found
//! in one read of each parent's `vgpu/instances` (on an older module: in their types'
//! `devices/` directories, no link per instance, three attribute reads each;
//! `vgpu_sysfs::read`), and verbs read only the parent and type they act on. Batches read the system once.
//!
//! Only mdev parents offering `vgpu_shim-*` types (the kernel names types
//! `<driver>-<type>`) and instances of those types are managed; other drivers' parents
//! and devices are ignored.
//!
//! # Dependencies, and why
//! All are pure Rust (no C library), so `vgpuctl` builds as a static musl binary for the
//! busybox test VM.
//! - `clap` 4 (derive): the de-facto standard argument parser; usage errors exit 2.
//! - `serde` + `serde_json`: the standard for the `--json` output.
//! - `thiserror`: derive for [`Error`], no runtime cost, already used in the workspace.
//! - `uuid` (v4): RFC 4122 parsing/formatting and random instance UUIDs.
//! - `vgpu-sysfs` (this workspace): the model of the sysfs ABI.
//! - `log`: the logging facade (the binary installs a tiny stderr logger for `-v`).
//! - `libc`: errno constants to map kernel write failures; already in the workspace.
//! - `roxmltree`: a small, well-kept read-only XML parser (no unsafe, no C) for
//!   `define --from-xml`; documents are written with plain escaping, so no XML writer.
//! - `rustix` (`fs`): system calls without libc in between (`openat` with `O_CLOEXEC`
//!   and no extra `fcntl`, `getdents64` into a Rust buffer); already in the workspace
//!   through `tempfile`.
//! - `dlmalloc` (the binary's allocator only): musl's allocator maps and unmaps pages
//!   for a call's short bursts of allocations; dlmalloc keeps what it maps.
//! - `tempfile` (dev only): self-cleaning temporary roots for tests.
//! - `clap_complete`, `clap_mangen` (dev only, for `examples/vgpuctl-docs.rs`): the
//!   package's shell completions and man pages, from the same clap definition, without
//!   the generators in the binary.
//!
//! Not dependencies, on purpose: `flock` is `std::fs::File::lock` (Rust 1.89), the HTTP
//! endpoint of `metrics --listen` is a few lines over `std::net` (one GET, loopback
//! only), and the Prometheus output is checked in tests by the Prometheus project's own
//! Python parser (`python3-prometheus-client` from Debian: the reference implementation,
//! stricter than the Rust crates, and installed by `scripts/setup`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admission;
pub mod apply;
mod define;
pub mod definition;
pub mod error;
pub mod lifecycle;
pub mod lock;
pub mod manager;
pub mod manifest;
pub mod metrics;
pub mod placement;
pub mod render;
mod start;
pub mod stats;
mod store;
#[cfg(test)]
mod test_env;
pub mod top;
pub mod units;
pub mod xml;

pub use vgpu_sysfs::{counters, env, fake, fake_kernel, model};

pub use apply::{Applied, DefinitionChange, InstanceChange};
pub use definition::{Definition, StartMode};
pub use env::{Environment, RootedEnvironment, SystemEnvironment};
pub use error::{Error, Result};
pub use lifecycle::{DefinitionUpdate, Done, Outcome, Spec};
pub use lock::Lock;
pub use manager::{InstanceUpdate, Manager};
pub use manifest::Manifest;
pub use model::{DescriptionError, Instance, Parent, PoolInfo, TypeDescription, VgpuType};
pub use placement::Placement;
