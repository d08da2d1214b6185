//! The vgpu engine's ABI as code: the one place that says what the device's registers,
//! regions and commands are and what each command must do.
//!
//! * [`layout`]: the device ABI's constants (docs/device-abi.md, docs/engine-abi.md):
//!   PCI identity, region indexes and sizes, the DISPI, info and engine register files,
//!   DRM formats, the instance types ([`layout::TYPES`]);
//! * [`cmd`]: the command encoding: [`Cmd`] (the eight commands) and [`RawCmd`] (any 64
//!   bytes) to and from the little-endian `struct vgpu_cmd`, the ERROR codes
//!   ([`ErrorCode`], [`error_name`]), a snapshot of the engine registers ([`EngineRegs`]);
//! * [`exec`]: the external executor's handoff queue (shared memory with the module) and
//!   the reference semantics of a piece of a command handed to it ([`exec::apply_piece`]);
//! * [`reference`](mod@reference): the reference semantics: CHECKSUM (FNV-1a-64), GEMM, COPY and a
//!   validator that says which ERROR codes a command may produce.
//!
//! # Who uses it
//!
//! Both sides of the device: the host-side VFIO client (`vgpu-vfio`, whose `abi`,
//! `engine` and `reference` paths re-export this crate) and the rig's tests, and a
//! guest-side driver talking to the emulated PCI device from inside a VM, where there is
//! no VFIO. The kernel module (`kmod-shim/`, C) is the other implementation of the same
//! ABI; the rig's tests check the two agree.
//!
//! # Dependencies and why
//!
//! None, not even `libc`: everything here is constants, plain data and pure functions
//! over `core`/`alloc` types (`Vec` in the reference math), so whatever can run Rust
//! with std can use it, without pulling in VFIO ioctls, mmap or the sysfs model. Keep it
//! that way: code that touches a device belongs in a client crate.
#![deny(missing_docs)]

pub mod cmd;
pub mod exec;
pub mod layout;
pub mod reference;

pub use cmd::{error_name, Cmd, EngineRegs, ErrorCode, RawCmd};
