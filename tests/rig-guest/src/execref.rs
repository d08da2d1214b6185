//! A reference external executor for the rig: the daemon's side of the handoff queue
//! (`/dev/vgpu-exec/<parent>`, `vgpu_engine_abi::exec`) with every piece computed by
//! `exec::apply_piece` on the CPU, in a thread of the test program. It lets the rig test
//! the kernel's side of `external` mode (handoff, charging, re-queue, faults, the VRAM
//! mapping) without a Vulkan device, and it can misbehave on request (die holding a
//! piece, refuse, answer garbage). The production daemon is `vgpu-executor --serve`.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use vgpu_engine_abi::exec::{self, Cqe, Sqe, SqeKind};
use vgpu_exec_queue::{Device, Mapping};

/// How the executor behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Behaviour {
    /// Take this many pieces, complete all but the last, then close the device with the
    /// last one in hand (a daemon killed mid-piece).
    pub die_after: Option<u64>,
    /// Complete every piece as REFUSED.
    pub refuse: bool,
    /// Before each real completion, publish completions the kernel must drop (unknown
    /// sequence numbers, a status out of range).
    pub garbage: bool,
    /// Declare this window (`exec::IOC_SET_WINDOW`) at start, and refuse a piece of a
    /// larger VRAM that touches more than half of it (as the Vulkan daemon would).
    pub window: Option<u64>,
}

/// What the executor did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Pieces completed.
    pub pieces: u64,
    /// RETIRE entries seen.
    pub retires: u64,
    /// Pieces it could not run (apply_piece refused them) and completed as REFUSED.
    pub refused: u64,
    /// Pieces whose instance's VRAM could not be mapped (closed since): FAILED.
    pub unmapped: u64,
    /// Of `refused`: pieces wider than half the declared window.
    pub too_wide: u64,
}

/// A running reference executor; stops (and closes the device) when dropped.
pub struct RefExecutor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<Stats>>>,
}

/// The device node of parent `vgpu_shim<i>`.
pub fn device_path(parent: u32) -> PathBuf {
    vgpu_exec_queue::device_path(&format!("vgpu_shim{parent}"))
}

/// mmap `len` bytes of `fd` at `off`, shared, read-write; the caller munmaps it.
pub fn map(fd: i32, off: u64, len: usize) -> io::Result<*mut u8> {
    Mapping::shared(fd, len, off).map(Mapping::into_raw)
}

/// The queue of one open of the device (`vgpu_exec_queue::Device`), with the index and
/// entry accessors the tests use.
pub struct Queue {
    dev: Device,
}

impl Queue {
    /// Open the device and map its queue.
    pub fn open(parent: u32) -> io::Result<Queue> {
        Ok(Queue {
            dev: Device::open(&device_path(parent))?,
        })
    }

    /// `ioctl(IOC_SET_WINDOW, &window)`.
    pub fn set_window(&self, window: u64) -> io::Result<()> {
        self.dev.set_window(window)
    }

    /// The device fd.
    pub fn fd(&self) -> i32 {
        self.dev.fd()
    }

    /// A header word.
    pub fn hdr(&self, off: usize) -> u32 {
        self.dev.queue().load(off)
    }

    /// Set a header word (release: entries before the index).
    pub fn set_hdr(&self, off: usize, v: u32) {
        self.dev.queue().store(off, v)
    }

    /// Submission entry at index `i`.
    pub fn sqe(&self, i: u32) -> Sqe {
        self.dev.queue().sqe(i)
    }

    /// Write a completion at index `i` (not published until cq_tail moves).
    pub fn put_cqe(&self, i: u32, c: &Cqe) {
        self.dev.queue().put_cqe(i, c)
    }

    /// Publish completions up to `tail` and kick the kernel; returns what the ioctl says.
    pub fn kick(&self, tail: u32) -> io::Result<i32> {
        self.set_hdr(exec::hdr::CQ_TAIL, tail);
        self.dev.kick()
    }

    /// Wait up to `ms` for submissions.
    pub fn poll(&self, ms: i32) -> io::Result<bool> {
        self.dev.poll(ms)
    }
}

impl RefExecutor {
    /// Connect to parent `vgpu_shim<parent>`'s device (errors such as EBUSY come back
    /// here) and serve it in a thread.
    pub fn start(parent: u32, how: Behaviour) -> io::Result<RefExecutor> {
        let q = Queue::open(parent)?;
        if let Some(w) = how.window {
            q.set_window(w)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("execref{parent}"))
            .spawn(move || serve(q, how, &s2))?;
        Ok(RefExecutor {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the thread has ended (died as asked, or failed).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stop, close the device, and say what it did.
    pub fn stop(mut self) -> io::Result<Stats> {
        self.join()
    }

    fn join(&mut self) -> io::Result<Stats> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("executor thread panicked"))),
            None => Ok(Stats::default()),
        }
    }
}

impl Drop for RefExecutor {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// Pieces run on this many threads at once: a parent's engines hand pieces
/// concurrently, and one slow piece must not hold up the others' (a GPU runs queues
/// concurrently too).
const THREADS: usize = 4;

struct Shared {
    q: Queue,
    vram: Mutex<HashMap<u32, Arc<Mapping>>>,
    /// The completion ring's tail, and the stats (under one lock: completions are
    /// written one at a time).
    cq: Mutex<(u32, Stats)>,
    how: Behaviour,
    junk: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Write a completion (`work_ns`: the time the piece ran; 0 for one not run).
    fn complete(&self, seq: u64, status: u32, value: u64, work_ns: u64) -> io::Result<()> {
        let mut cq = lock(&self.cq);
        if self.how.garbage {
            // an unknown sequence number, then an absurd tail and back: the kernel
            // drops what it cannot trust
            let junk = self.junk.fetch_add(1, Ordering::Relaxed);
            let bad = Cqe {
                seq: junk,
                status: 0,
                value: 0,
                work_ns: junk,
            };
            self.q.put_cqe(cq.0, &bad);
            cq.0 = cq.0.wrapping_add(1);
            self.q.kick(cq.0)?;
            self.q.set_hdr(exec::hdr::CQ_TAIL, cq.0.wrapping_add(1000));
            // SAFETY: an ioctl without argument on our own fd.
            unsafe { libc::ioctl(self.q.fd(), exec::IOC_KICK as _) };
            cq.0 = self.q.hdr(exec::hdr::CQ_HEAD);
        }
        self.q.put_cqe(
            cq.0,
            &Cqe {
                seq,
                status,
                value,
                work_ns,
            },
        );
        cq.0 = cq.0.wrapping_add(1);
        self.q.kick(cq.0)?;
        if status == exec::STATUS_OK {
            cq.1.pieces += 1;
        }
        Ok(())
    }

    fn mapping(&self, e: &Sqe) -> io::Result<Arc<Mapping>> {
        let mut vram = lock(&self.vram);
        if let Some(m) = vram.get(&e.id) {
            return Ok(m.clone());
        }
        let len =
            usize::try_from(e.vram_size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let m = Arc::new(Mapping::shared(self.q.fd(), len, exec::vram_offset(e.id))?);
        vram.insert(e.id, m.clone());
        Ok(m)
    }

    /// Run one piece and complete it.
    fn run(&self, e: &Sqe) -> io::Result<()> {
        if self.how.refuse {
            return self.complete(e.seq, exec::STATUS_REFUSED, 0, 0);
        }
        if let Some(w) = self.how.window.filter(|&w| e.vram_size > w) {
            let fits = exec::piece_bytes(e).is_some_and(|(lo, hi)| hi - lo <= w / 2);
            if !fits {
                eprintln!("execref: piece wider than half the window {w:#x}: {e:?}");
                let mut cq = lock(&self.cq);
                cq.1.refused += 1;
                cq.1.too_wide += 1;
                drop(cq);
                return self.complete(e.seq, exec::STATUS_REFUSED, 0, 0);
            }
        }
        let m = match self.mapping(e) {
            Ok(m) => m,
            Err(err) => {
                // a piece of an instance closed since it was handed (its engine gave it
                // up when the instance went away): the kernel drops the completion
                eprintln!("execref: cannot map id {} (seq {}): {err}", e.id, e.seq);
                lock(&self.cq).1.unmapped += 1;
                return self.complete(e.seq, exec::STATUS_FAILED, 0, 0);
            }
        };
        // SAFETY: the mapping is len bytes and alive while `m` is; the guest does not
        // touch the bytes of a command in flight, and pieces in flight at once belong
        // to different engines' commands.
        let mem = unsafe { std::slice::from_raw_parts_mut(m.ptr(), m.len()) };
        let t = std::time::Instant::now();
        match exec::apply_piece(mem, e) {
            // its own time, for the kernel's piece sizes
            Some(v) => self.complete(e.seq, exec::STATUS_OK, v, exec::work_ns(t.elapsed())),
            None => {
                lock(&self.cq).1.refused += 1;
                self.complete(e.seq, exec::STATUS_REFUSED, 0, 0)
            }
        }
    }
}

fn serve(q: Queue, how: Behaviour, stop: &AtomicBool) -> io::Result<Stats> {
    let cq_tail = q.hdr(exec::hdr::CQ_TAIL);
    let sh = Arc::new(Shared {
        q,
        vram: Mutex::new(HashMap::new()),
        cq: Mutex::new((cq_tail, Stats::default())),
        how,
        junk: AtomicU64::new(1 << 62),
    });
    let (tx, rx) = mpsc::channel::<Sqe>();
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (sh, rx) = (sh.clone(), rx.clone());
            std::thread::spawn(move || -> io::Result<()> {
                loop {
                    let next = lock(&rx).recv();
                    match next {
                        Ok(e) => sh.run(&e)?,
                        Err(_) => return Ok(()),
                    }
                }
            })
        })
        .collect();
    let mut taken = 0u64;
    let mut retires = 0u64;
    let mut result = Ok(());
    'outer: while !stop.load(Ordering::Relaxed) {
        match sh.q.poll(20) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        let mut head = sh.q.hdr(exec::hdr::SQ_HEAD);
        let tail = sh.q.hdr(exec::hdr::SQ_TAIL);
        while head != tail {
            let e = sh.q.sqe(head);
            head = head.wrapping_add(1);
            sh.q.set_hdr(exec::hdr::SQ_HEAD, head);
            match e.kind {
                Some(SqeKind::Retire) => {
                    retires += 1;
                    lock(&sh.vram).remove(&e.id);
                }
                Some(SqeKind::Piece) => {
                    taken += 1;
                    if how.die_after == Some(taken) {
                        // closed with this piece in hand: the kernel must hand it again
                        break 'outer;
                    }
                    if tx.send(e).is_err() {
                        break 'outer;
                    }
                }
                None => {
                    if let Err(err) = sh.complete(e.seq, exec::STATUS_REFUSED, 0, 0) {
                        result = Err(err);
                        break 'outer;
                    }
                }
            }
        }
    }
    drop(tx);
    for w in workers {
        let r = w
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("executor worker panicked")));
        if result.is_ok() {
            result = r;
        }
    }
    result?;
    let mut st = lock(&sh.cq).1;
    st.retires = retires;
    Ok(st)
}

/// A reference executor in a process of its own (`vgpu-rig-tests exec-serve <parent>
/// --until-eof`), as the production daemon is: what `--executor ref` runs the suites
/// with. Not a thread of the test program, because a daemon sharing an address space
/// with the instances' users can stall on that address space's lock: a user thread
/// faulting on VRAM holds `mmap_lock` (read) while it waits for the instance's lock,
/// which the engine holds while it waits for the daemon's piece; a third thread's mmap
/// then queues for `mmap_lock` (write), and the daemon's own mmap or page fault queues
/// behind it until the watchdog gives up the piece (docs/executor.md, "The daemon's
/// address space"). Stopped by closing its stdin: it then prints its counters.
pub struct RefProcess {
    child: std::process::Child,
    out: io::BufReader<std::process::ChildStdout>,
}

impl RefProcess {
    /// Start it for parent `vgpu_shim<parent>`; returns once it is connected (errors such
    /// as EBUSY come back here, with its stderr).
    pub fn start(parent: u32) -> io::Result<RefProcess> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new("/proc/self/exe")
            .args(["exec-serve", &parent.to_string(), "--until-eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("exec-serve: no stdout"))?;
        let mut out = io::BufReader::new(stdout);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if !line.starts_with("exec-serve: serving ") {
            let st = child.wait()?;
            return Err(io::Error::other(format!(
                "exec-serve {parent} did not start ({st}): {:?}",
                line.trim()
            )));
        }
        Ok(RefProcess { child, out })
    }

    /// SIGKILL and wait for the exit (the fault tests' daemon crash).
    pub fn kill(mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Close its stdin, wait for its exit, and say what it did.
    pub fn stop(mut self) -> io::Result<Stats> {
        use std::io::Read;
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.out.read_to_string(&mut rest)?;
        let st = self.child.wait()?;
        if !st.success() {
            return Err(io::Error::other(format!(
                "exec-serve: {st}: {}",
                rest.trim()
            )));
        }
        rest.lines()
            .find_map(Stats::parse)
            .ok_or_else(|| io::Error::other(format!("exec-serve: no counters in {rest:?}")))
    }
}

impl Drop for RefProcess {
    fn drop(&mut self) {
        // stop() not called (a failed test): it must not outlive the module's users
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stats {
    const PREFIX: &'static str = "exec-serve: done";

    /// The pieces completed, or an error if any was refused (a well-behaved executor
    /// refuses none: the kernel hands only pieces that fit the window).
    pub fn completed(&self) -> io::Result<u64> {
        if self.refused != 0 {
            return Err(io::Error::other(format!(
                "the executor refused {} pieces ({} wider than half the window)",
                self.refused, self.too_wide
            )));
        }
        Ok(self.pieces)
    }

    fn line(&self) -> String {
        format!(
            "{} pieces={} retires={} refused={} unmapped={} too_wide={}",
            Self::PREFIX,
            self.pieces,
            self.retires,
            self.refused,
            self.unmapped,
            self.too_wide
        )
    }

    fn parse(line: &str) -> Option<Stats> {
        let rest = line.strip_prefix(Self::PREFIX)?;
        let mut st = Stats::default();
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "pieces" => st.pieces = v,
                "retires" => st.retires = v,
                "refused" => st.refused = v,
                "unmapped" => st.unmapped = v,
                "too_wide" => st.too_wide = v,
                _ => return None,
            }
        }
        Some(st)
    }
}

/// `vgpu-rig-tests exec-serve <parent> [--until-eof]`: a reference executor as a process
/// of its own, serving `vgpu_shim<parent>` until killed (the rig's fault tests kill -9
/// it), or with `--until-eof` until its stdin closes, when it prints its counters
/// ([`RefProcess`]).
pub fn serve_main(args: &[String]) -> crate::tools::ToolResult {
    use crate::tools::ToolError;
    let usage = || ToolError::Usage("exec-serve <parent index> [--until-eof]".into());
    let (parent, until_eof) = match args {
        [p] => (p, false),
        [p, f] if f == "--until-eof" => (p, true),
        _ => return Err(usage()),
    };
    let parent: u32 = parent
        .parse()
        .map_err(|_| ToolError::Usage(format!("bad parent {parent:?}")))?;
    let x = RefExecutor::start(parent, Behaviour::default())
        .map_err(|e| ToolError::Failed(format!("{}: {e}", device_path(parent).display())))?;
    println!("exec-serve: serving {}", device_path(parent).display());
    let eof = Arc::new(AtomicBool::new(false));
    if until_eof {
        use std::io::{Read, Write};
        let _ = io::stdout().flush();
        let e2 = eof.clone();
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            while matches!(io::stdin().read(&mut sink), Ok(n) if n > 0) {}
            e2.store(true, Ordering::Relaxed);
        });
    }
    while !x.finished() && !eof.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let st = x
        .stop()
        .map_err(|e| ToolError::Failed(format!("executor: {e}")))?;
    println!("{}", st.line());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn counters_line_round_trips() {
        let st = Stats {
            pieces: 12,
            retires: 3,
            refused: 1,
            unmapped: 2,
            too_wide: 1,
        };
        let back = Stats::parse(&st.line()).expect("parsed");
        assert_eq!(
            (
                back.pieces,
                back.retires,
                back.refused,
                back.unmapped,
                back.too_wide
            ),
            (12, 3, 1, 2, 1)
        );
    }

    #[test]
    fn other_lines_are_not_counters() {
        assert!(Stats::parse("exec-serve: serving /dev/vgpu-exec/vgpu_shim0").is_none());
        assert!(Stats::parse("exec-serve: done pieces=x").is_none());
        assert!(Stats::parse("exec-serve: done colour=3").is_none());
    }
}
