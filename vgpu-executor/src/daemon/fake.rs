//! An in-process fake of the kernel's side of the queue, for tests and tools: the queue
//! and each instance's VRAM are memfds mapped twice (once for the "kernel", once by
//! the daemon through [`Kernel::map_vram`]), as the real device maps the same pages
//! into the guest and into the daemon.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;

use vgpu_engine_abi::exec::{self, hdr, Cqe, Sqe};

use super::queue::{Kernel, Mapping, QueueMem};

fn memfd(len: usize) -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"vgpu-exec-fake".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: our descriptor; a plain size change.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

struct Shared {
    queue: QueueMem,
    vrams: RefCell<HashMap<u32, (OwnedFd, usize)>>,
    kicks: Cell<u64>,
    maps: Cell<u64>,
}

/// The daemon's end of the fake (implements [`Kernel`]).
pub struct FakeKernel {
    s: Rc<Shared>,
}

/// The test's end: plays the kernel (produces submissions, consumes completions).
#[derive(Clone)]
pub struct FakeHandle {
    s: Rc<Shared>,
}

/// A fake queue with a valid header and indices starting at `first` (free-running:
/// tests start near 2^32 to cross the wrap).
pub fn fake(first: u32) -> io::Result<(FakeKernel, FakeHandle)> {
    let fd = memfd(exec::QUEUE_BYTES)?;
    let queue = QueueMem::new(Mapping::shared(fd.as_raw_fd(), exec::QUEUE_BYTES, 0)?)?;
    let header = exec::HEADER.map(|(_, off, v)| (off, v));
    let indices = [hdr::SQ_HEAD, hdr::SQ_TAIL, hdr::CQ_HEAD, hdr::CQ_TAIL].map(|off| (off, first));
    for (off, v) in header.into_iter().chain(indices) {
        queue.store(off, v);
    }
    let s = Rc::new(Shared {
        queue,
        vrams: RefCell::new(HashMap::new()),
        kicks: Cell::new(0),
        maps: Cell::new(0),
    });
    Ok((FakeKernel { s: s.clone() }, FakeHandle { s }))
}

impl Kernel for FakeKernel {
    fn queue(&self) -> &QueueMem {
        &self.s.queue
    }

    fn wait(&mut self, _timeout_ms: i32) -> io::Result<()> {
        Ok(())
    }

    fn kick(&mut self) -> io::Result<()> {
        self.s.kicks.set(self.s.kicks.get() + 1);
        Ok(())
    }

    fn map_vram(&mut self, id: u32, len: usize) -> io::Result<Mapping> {
        let vrams = self.s.vrams.borrow();
        // As the kernel: only ids it handed, at most their size.
        let (fd, size) = vrams
            .get(&id)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        if len > *size {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.s.maps.set(self.s.maps.get() + 1);
        Mapping::shared(fd.as_raw_fd(), len, 0)
    }
}

impl FakeHandle {
    /// The queue (to write absurd indices and the like).
    pub fn queue(&self) -> &QueueMem {
        &self.s.queue
    }

    /// An instance `id` with `len` bytes of VRAM (zeroed); returns the "kernel's"
    /// mapping of it.
    pub fn add_vram(&self, id: u32, len: usize) -> io::Result<Mapping> {
        let fd = memfd(len)?;
        let m = Mapping::shared(fd.as_raw_fd(), len, 0)?;
        self.s.vrams.borrow_mut().insert(id, (fd, len));
        Ok(m)
    }

    /// Post a submission (entry at `sq_tail`, then `sq_tail + 1`). Returns false when
    /// the ring is full.
    pub fn submit(&self, e: &Sqe) -> bool {
        self.submit_raw(&e.encode())
    }

    /// Post raw entry bytes.
    pub fn submit_raw(&self, b: &[u8; exec::SQE_SIZE]) -> bool {
        let q = &self.s.queue;
        let tail = q.load(hdr::SQ_TAIL);
        if tail.wrapping_sub(q.load(hdr::SQ_HEAD)) >= exec::SQ_ENTRIES {
            return false;
        }
        q.write_sqe(tail, b);
        q.store(hdr::SQ_TAIL, tail.wrapping_add(1));
        true
    }

    /// Take the completions up to `cq_tail` (as the kernel does on a kick), at most
    /// CQ_ENTRIES of them whatever the indices say.
    pub fn take_completions(&self) -> Vec<Cqe> {
        let q = &self.s.queue;
        let (head, tail) = (q.load(hdr::CQ_HEAD), q.load(hdr::CQ_TAIL));
        let n = tail.wrapping_sub(head).min(exec::CQ_ENTRIES);
        let out = (0..n)
            .map(|i| Cqe::decode(&q.read_cqe(head.wrapping_add(i))))
            .collect();
        q.store(hdr::CQ_HEAD, head.wrapping_add(n));
        out
    }

    /// Kicks so far.
    pub fn kicks(&self) -> u64 {
        self.s.kicks.get()
    }

    /// VRAM mappings the daemon made so far.
    pub fn maps(&self) -> u64 {
        self.s.maps.get()
    }
}
