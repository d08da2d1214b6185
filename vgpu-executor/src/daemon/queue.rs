//! The [`Kernel`] trait the daemon loop talks to: the real device
//! ([`super::device::DeviceKernel`]) or an in-process fake ([`super::fake::FakeKernel`]).
//! The queue memory and mappings are `vgpu_exec_queue`'s (shared with the rig's
//! reference executor).

use std::io;

pub use vgpu_exec_queue::{Mapping, QueueMem};

/// What the daemon loop needs from the kernel: the queue, waiting, the kick, and the
/// instances' VRAM.
pub trait Kernel {
    /// The queue mapping.
    fn queue(&self) -> &QueueMem;
    /// Wait until submissions may be there, a signal arrives or `timeout_ms` passes.
    /// An error means the device is gone (the daemon exits).
    fn wait(&mut self, timeout_ms: i32) -> io::Result<()>;
    /// Completions up to `cq_tail` are there (`ioctl(fd, IOC_KICK)`).
    fn kick(&mut self) -> io::Result<()>;
    /// Map the VRAM of executor id `id`, `len` bytes.
    fn map_vram(&mut self, id: u32, len: usize) -> io::Result<Mapping>;
}
