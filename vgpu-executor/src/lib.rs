//! vgpu-executor: runs the vgpu engine's commands (docs/engine-abi.md) with Vulkan
//! compute, bit-exact with the reference semantics in `vgpu-engine-abi`
//! (docs/executor.md).
//!
//! This crate is issue 11's external executor. The kernel module stays the
//! enforcement point (ring fetch, validation, scheduling, watchdog, fences,
//! interrupts); it hands pieces of validated commands to the `vgpu-executor` daemon
//! ([`daemon`]) through a per-parent character device. What is here:
//!
//! * [`device`]: listing and selecting Vulkan devices (`--list-devices`, `--device`);
//! * [`Executor`]: a Vulkan device with the engine's compute pipelines;
//! * [`Vram`]: an instance's VRAM as the GPU sees it;
//! * [`Executor::execute`]: one or more commands on one VRAM, with the exact bytes of
//!   the reference (FILL, COPY as memmove, CHECKSUM as FNV-1a-64, GEMM over u32
//!   wrapping with row-major element order, BLIT row by row, FENCE's WRITE).
//! * [`Executor::execute_pieces`]: pieces as the kernel hands them
//!   (`vgpu_engine_abi::exec::Sqe`), with the bytes of `exec::apply_piece`, several
//!   (of several VRAMs) per submission;
//! * [`daemon`]: the `--serve` loop over the kernel's queue.
//!
//! # VRAM in host memory: VK_EXT_external_memory_host
//!
//! The design wants the GPU to work on the very pages the guest maps (the kernel's VRAM
//! pages, mapped into the daemon through the per-parent device), so VRAM is host
//! memory imported with VK_EXT_external_memory_host ([`Executor::import`]; lavapipe in
//! Mesa 22.3 supports it, `minImportedHostPointerAlignment` 4 KiB). No copy in or out:
//! what the shaders write is what the guest reads. On a device without the extension
//! [`Executor::alloc_vram`] falls back to host-visible, host-coherent device memory
//! mapped into the process ([`Vram::imported`] says which); the kernel's pages could
//! then only reach the GPU by copying them in before and out after each command, which
//! is not implemented: the daemon refuses such a device.
//!
//! # Shaders
//!
//! `shaders/engine.wgsl`, compiled to SPIR-V at build time by naga (`build.rs`): no
//! system tool, no prebuilt blob. 64-bit arithmetic (FNV-1a-64) is done in u32 pairs,
//! so `shaderInt64` is not needed.
//!
//! # Limits
//!
//! Whole commands ([`Executor::execute`]) need the VRAM in one storage-buffer binding
//! ([`Executor::window_size`]: `maxStorageBufferRange` and `maxMemoryAllocationSize`,
//! 128 MiB on lavapipe, up to 4 GiB on desktop GPUs). Pieces ([`Executor::execute_pieces`],
//! what the daemon runs) work on VRAMs of up to 4 GiB: one larger than a binding is
//! imported in windows of that size at multiples of half of it, and a piece runs in the
//! window that holds every byte it touches (a piece no window holds is refused).
//!
//! # The daemon
//!
//! [`daemon`]: `vgpu-executor --serve /dev/vgpu-exec/<parent>`, the external executor
//! of the kernel module (docs/executor.md).
#![deny(missing_docs)]

pub mod daemon;
pub mod device;
mod exec;
pub mod logger;
mod piece;
mod vram;
mod warmup;

use std::fmt;

pub use device::{list_devices, DeviceInfo, DeviceSelector};
pub use exec::{Counters, Executor, Pieces, MAX_BATCH};
pub use vram::Vram;

/// What can go wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No Vulkan loader or instance on this host.
    NoVulkan(String),
    /// No device matches, or the chosen one cannot be used.
    Device(String),
    /// A Vulkan call failed.
    Vk(&'static str, ash::vk::Result),
    /// A command the executor refuses (it breaks the engine ABI's validation rules, or
    /// it does not fit the VRAM): nothing was executed.
    Rejected(String),
    /// A VRAM the executor cannot use (size, alignment).
    Vram(String),
}

impl Error {
    pub(crate) fn vk(call: &'static str, r: ash::vk::Result) -> Self {
        Error::Vk(call, r)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoVulkan(s) | Error::Device(s) => write!(f, "{s}"),
            Error::Vk(call, r) => write!(f, "{call}: {r}"),
            Error::Rejected(s) => write!(f, "command rejected: {s}"),
            Error::Vram(s) => write!(f, "VRAM: {s}"),
        }
    }
}

impl std::error::Error for Error {}
