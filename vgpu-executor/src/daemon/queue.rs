//! The shared handoff queue as the daemon sees it (`vgpu_engine_abi::exec`: the header,
//! the submission and the completion rings), memory mappings, and the [`Kernel`] trait
//! the daemon loop talks to: the real device ([`super::device::DeviceKernel`]) or an
//! in-process fake ([`super::fake::FakeKernel`]).

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use vgpu_engine_abi::exec::{self, hdr};

/// A memory mapping (`mmap`), unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset)`.
    pub fn shared(fd: libc::c_int, len: usize, offset: u64) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a new shared mapping chosen by the kernel (NULL hint): it aliases no
        // Rust object. The offset is passed as the kernel reads it (unsigned on 64-bit:
        // an executor id >= 2^31 gives an offset >= 2^63).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: p.cast(), len })
    }

    /// The first byte (page-aligned).
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length is 0 (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: a mapping this object made and nothing else unmaps; whatever used it
        // (an imported Vram) is dropped before (field order of the owners).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The queue mapping (offset 0, [`exec::QUEUE_BYTES`]): shared with the kernel, which
/// writes `sq_tail`, `cq_head` and the submissions at any time. Nothing here makes a
/// Rust reference to the shared bytes: indices are atomics, entries are copied out and
/// in with volatile accesses.
pub struct QueueMem {
    map: Mapping,
}

impl QueueMem {
    /// Wrap a mapping of at least [`exec::QUEUE_BYTES`].
    pub fn new(map: Mapping) -> io::Result<QueueMem> {
        if map.len() < exec::QUEUE_BYTES {
            return Err(io::Error::other("queue mapping too short"));
        }
        Ok(QueueMem { map })
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off + 4 <= hdr::CQ_TAIL + 4 && off.is_multiple_of(4));
        // SAFETY: `off` is a 4-aligned header offset inside the page-aligned mapping,
        // which lives as long as `self`; every access to these words (here and in the
        // kernel) is atomic.
        unsafe { AtomicU32::from_ptr(self.map.ptr().add(off).cast()) }
    }

    /// A header word (acquire: entries the kernel wrote before it are visible).
    pub fn load(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::Acquire)
    }

    /// Store a header word (release: entries written before it are visible first).
    pub fn store(&self, off: usize, v: u32) {
        self.word(off).store(v, Ordering::Release)
    }

    /// Copy out submission entry `index & (SQ_ENTRIES - 1)`.
    pub fn read_sqe(&self, index: u32) -> [u8; exec::SQE_SIZE] {
        let off = exec::SQ_OFF + (index & (exec::SQ_ENTRIES - 1)) as usize * exec::SQE_SIZE;
        // SAFETY: the entry lies inside the mapping (QUEUE_BYTES checked in `new`);
        // a volatile copy of bytes another party may write (a torn entry is decoded
        // and checked like any other: nothing trusts it).
        unsafe { std::ptr::read_volatile(self.map.ptr().add(off).cast::<[u8; exec::SQE_SIZE]>()) }
    }

    /// Write submission entry `index` (the fake kernel's side).
    pub fn write_sqe(&self, index: u32, b: &[u8; exec::SQE_SIZE]) {
        let off = exec::SQ_OFF + (index & (exec::SQ_ENTRIES - 1)) as usize * exec::SQE_SIZE;
        // SAFETY: as in `read_sqe`.
        unsafe {
            std::ptr::write_volatile(self.map.ptr().add(off).cast::<[u8; exec::SQE_SIZE]>(), *b)
        }
    }

    /// Write completion entry `index & (CQ_ENTRIES - 1)`.
    pub fn write_cqe(&self, index: u32, b: &[u8; exec::CQE_SIZE]) {
        let off = exec::CQ_OFF + (index & (exec::CQ_ENTRIES - 1)) as usize * exec::CQE_SIZE;
        // SAFETY: as in `read_sqe`.
        unsafe {
            std::ptr::write_volatile(self.map.ptr().add(off).cast::<[u8; exec::CQE_SIZE]>(), *b)
        }
    }

    /// Copy out completion entry `index` (the fake kernel's side).
    pub fn read_cqe(&self, index: u32) -> [u8; exec::CQE_SIZE] {
        let off = exec::CQ_OFF + (index & (exec::CQ_ENTRIES - 1)) as usize * exec::CQE_SIZE;
        // SAFETY: as in `read_sqe`.
        unsafe { std::ptr::read_volatile(self.map.ptr().add(off).cast::<[u8; exec::CQE_SIZE]>()) }
    }

    /// Check magic, version and geometry against the ABI this daemon was built with.
    pub fn check_header(&self) -> Result<(), String> {
        let want = [
            ("magic", hdr::MAGIC, exec::MAGIC),
            ("version", hdr::VERSION, exec::VERSION),
            ("sq_entries", hdr::SQ_ENTRIES, exec::SQ_ENTRIES),
            ("cq_entries", hdr::CQ_ENTRIES, exec::CQ_ENTRIES),
            ("sqe_size", hdr::SQE_SIZE, exec::SQE_SIZE as u32),
            ("cqe_size", hdr::CQE_SIZE, exec::CQE_SIZE as u32),
            ("sq_off", hdr::SQ_OFF, exec::SQ_OFF as u32),
            ("cq_off", hdr::CQ_OFF, exec::CQ_OFF as u32),
        ];
        for (name, off, v) in want {
            let got = self.load(off);
            if got != v {
                return Err(format!(
                    "queue header: {name} is {got:#x}, this daemon speaks {v:#x} \
                     (kmod-shim/vgpu_exec_abi.h and vgpu_engine_abi::exec must match)"
                ));
            }
        }
        Ok(())
    }
}

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
