//! The executor device (`/dev/vgpu-exec/<parent>`, docs/executor.md "The handoff
//! queue") from userspace: the one implementation of opening it, mapping its shared
//! queue and instance VRAM, waiting, kicking and declaring the window. The queue's
//! layout and entry encoding are `vgpu_engine_abi::exec`'s; this crate only touches
//! the memory and the descriptor. Users: the Vulkan daemon (`vgpu-executor`) and the
//! rig's reference executor (`vgpu-rig-tests`), which must not link Vulkan.
//!
//! Only `libc` (mmap, poll, ioctl): the device is a plain character device and the
//! rust-vmm crates do not model it; `nix` would add nothing for four calls.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use vgpu_engine_abi::exec::{self, hdr, Cqe, Sqe};

/// The device node of a parent (`vgpu_shim0`, …).
pub fn device_path(parent: &str) -> PathBuf {
    Path::new("/dev/vgpu-exec").join(parent)
}

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
        // Executor ids stay within exec::ID_MAX, so their offsets are off_t values.
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a new shared mapping chosen by the kernel (NULL hint): it aliases no
        // Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset,
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

    /// Give the mapping up without unmapping it: the caller munmaps `len()` bytes at
    /// the returned address (tests that unmap by hand).
    pub fn into_raw(self) -> *mut u8 {
        let p = self.ptr;
        std::mem::forget(self);
        p
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

// SAFETY: a Mapping owns an mmap of a file; any thread may use its address and unmap it.
unsafe impl Send for Mapping {}
// SAFETY: shared only to hand out its address; what the bytes are raced by is the
// users' business (the device's VRAM is shared with the guest by design).
unsafe impl Sync for Mapping {}

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
        u32::from_le(self.word(off).load(Ordering::Acquire))
    }

    /// Store a header word (release: entries written before it are visible first).
    pub fn store(&self, off: usize, v: u32) {
        self.word(off).store(v.to_le(), Ordering::Release)
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

    /// Decode submission entry `index`.
    pub fn sqe(&self, index: u32) -> Sqe {
        Sqe::decode(&self.read_sqe(index))
    }

    /// Write completion `c` at `index` (published when `cq_tail` moves past it).
    pub fn put_cqe(&self, index: u32, c: &Cqe) {
        self.write_cqe(index, &c.encode());
    }

    /// Check magic, version and geometry against the ABI this daemon was built with.
    pub fn check_header(&self) -> Result<(), String> {
        for (name, off, v) in exec::HEADER {
            let got = self.load(off);
            if got != v {
                return Err(format!(
                    "queue header: {name} is {got:#x}, this build speaks {v:#x} \
                     (kmod-shim/vgpu_exec_abi.h and vgpu_engine_abi::exec must match)"
                ));
            }
        }
        Ok(())
    }
}

/// One open of the device: the daemon's connection, its queue mapped.
pub struct Device {
    // Field order: the queue mapping goes before the file.
    queue: QueueMem,
    file: File,
}

impl Device {
    /// Open `path` (EBUSY: another daemon has it), map the queue; the header is not
    /// checked ([`QueueMem::check_header`]).
    pub fn open(path: &Path) -> io::Result<Device> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let queue = QueueMem::new(Mapping::shared(file.as_raw_fd(), exec::QUEUE_BYTES, 0)?)?;
        Ok(Device { queue, file })
    }

    /// The descriptor.
    pub fn fd(&self) -> libc::c_int {
        self.file.as_raw_fd()
    }

    /// The shared queue.
    pub fn queue(&self) -> &QueueMem {
        &self.queue
    }

    /// `ioctl(IOC_SET_WINDOW, &window)` (exec::IOC_SET_WINDOW).
    pub fn set_window(&self, window: u64) -> io::Result<()> {
        // SAFETY: the ioctl reads one u64 from a pointer valid for the call.
        let r = unsafe { libc::ioctl(self.fd(), exec::IOC_SET_WINDOW as _, &window as *const u64) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `ioctl(IOC_KICK)`: completions up to `cq_tail` are there; how many it took.
    pub fn kick(&self) -> io::Result<i32> {
        // SAFETY: an ioctl without argument on our descriptor.
        let r = unsafe { libc::ioctl(self.fd(), exec::IOC_KICK as _) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r)
    }

    /// Wait up to `ms` for submissions: Ok(true) if readable, Ok(false) on timeout or
    /// a signal; an error (POLLERR/POLLHUP/POLLNVAL included) means the device is gone.
    pub fn poll(&self, ms: i32) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(e),
            };
        }
        if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return Err(io::Error::other(format!(
                "the device reported poll events {:#x} (parent gone?)",
                p.revents
            )));
        }
        Ok(r > 0 && p.revents & libc::POLLIN != 0)
    }

    /// Map `len` bytes of the VRAM of executor id `id` (exec::vram_offset).
    pub fn map_vram(&self, id: u32, len: usize) -> io::Result<Mapping> {
        Mapping::shared(self.fd(), len, exec::vram_offset(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};

    fn memfd(len: usize) -> OwnedFd {
        // SAFETY: a NUL-terminated name; the fd is owned below.
        let fd = unsafe { libc::memfd_create(c"vgpu-exec-queue-test".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: our descriptor; a plain size change.
        assert_eq!(
            unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) },
            0
        );
        fd
    }

    #[test]
    fn header_entries_and_offsets() {
        let fd = memfd(exec::QUEUE_BYTES);
        let short = Mapping::shared(fd.as_raw_fd(), 4096, 0).expect("map");
        assert!(QueueMem::new(short).is_err(), "a short mapping");
        let q = QueueMem::new(Mapping::shared(fd.as_raw_fd(), exec::QUEUE_BYTES, 0).expect("map"))
            .expect("queue");
        assert!(q.check_header().is_err(), "a zero header");
        for (_, off, v) in exec::HEADER {
            q.store(off, v);
        }
        q.check_header().expect("a good header");
        q.store(hdr::VERSION, 2);
        let e = q.check_header().expect_err("version 2");
        assert!(e.contains("version is 0x2"), "{e}");
        // entries wrap at the ring size
        let c = Cqe {
            seq: 77,
            status: 1,
            value: 5,
            work_ns: 6,
        };
        q.put_cqe(exec::CQ_ENTRIES + 3, &c);
        assert_eq!(q.read_cqe(3), c.encode());
        let mut b = [0u8; exec::SQE_SIZE];
        b[0] = 9;
        q.write_sqe(exec::SQ_ENTRIES * 2 + 1, &b);
        assert_eq!(q.sqe(1).seq, 9);
        // offsets beyond an off_t are refused, not wrapped
        let e = Mapping::shared(fd.as_raw_fd(), 4096, 1 << 63).err();
        assert_eq!(e.and_then(|e| e.raw_os_error()), Some(libc::EINVAL));
        assert!(Mapping::shared(fd.as_raw_fd(), 0, 0).is_err(), "length 0");
    }
}
