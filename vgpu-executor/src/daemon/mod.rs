//! The `vgpu-executor --serve` daemon (docs/executor.md, "The daemon"): takes the
//! pieces the kernel hands through `/dev/vgpu-exec/<parent>`, runs them on the GPU and
//! completes them.
//!
//! * [`queue`]: the shared queue, mappings, and the [`Kernel`] trait the loop talks to;
//! * [`device`]: the real character device (and the stop signals);
//! * [`fake`]: an in-process fake kernel, so tests drive the loop without a module;
//! * [`metrics`]: the counters, as a Prometheus text file and a log line.
//!
//! Nothing the kernel writes is trusted: indices are clamped to the ring, every entry is
//! checked (an unknown kind is completed REFUSED, sequence number 0 is dropped), a
//! piece is checked again by the executor against its VRAM, and a VRAM the device
//! cannot take (size, import) gives REFUSED completions, never a crash.

pub mod device;
pub mod fake;
pub mod metrics;
pub mod queue;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use vgpu_engine_abi::exec::{self, hdr, Cqe, Sqe, SqeKind};
use vgpu_engine_abi::layout::engine as reg;

use crate::{Error, Executor, Vram, MAX_BATCH};
use metrics::Metrics;
use queue::{Kernel, Mapping};

/// An instance whose VRAM is mapped and imported. Field order: the Vulkan import is
/// dropped before the mapping it imported.
struct Instance<'e> {
    vram: Vram<'e>,
    _map: Mapping,
}

/// A completion to write, in submission order: done already, or the `n`th piece of the
/// batch being executed.
enum Slot {
    Done(Cqe),
    Run(usize),
}

/// The daemon loop over one parent's queue.
pub struct Daemon<'e, K: Kernel> {
    ex: &'e Executor,
    k: K,
    /// Ours: the kernel's copy is only ever written, never read back.
    sq_head: u32,
    cq_tail: u32,
    instances: HashMap<u32, Instance<'e>>,
    /// Ids whose VRAM cannot be used, and why (logged once; forgotten at RETIRE).
    unusable: HashMap<u32, String>,
    batch_max: usize,
    metrics: Metrics,
}

impl<'e, K: Kernel> Daemon<'e, K> {
    /// A daemon on `k`'s queue, starting at the indices the header has now, running at
    /// most `batch` pieces per GPU submission (1 ..= MAX_BATCH).
    pub fn new(ex: &'e Executor, k: K, batch: usize) -> Self {
        let q = k.queue();
        let (sq_head, cq_tail) = (q.load(hdr::SQ_HEAD), q.load(hdr::CQ_TAIL));
        Daemon {
            ex,
            k,
            sq_head,
            cq_tail,
            instances: HashMap::new(),
            unusable: HashMap::new(),
            batch_max: batch.clamp(1, MAX_BATCH),
            metrics: Metrics::default(),
        }
    }

    /// The counters so far.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            mapped: self.instances.len() as u64,
            ..self.metrics.clone()
        }
    }

    /// The kernel end.
    pub fn kernel(&self) -> &K {
        &self.k
    }

    fn cq_room(&self) -> u32 {
        let used = self.cq_tail.wrapping_sub(self.k.queue().load(hdr::CQ_HEAD));
        // A head ahead of our tail or more than a ring behind is the kernel's bug:
        // no room (never overwrite a completion it may not have taken).
        exec::CQ_ENTRIES.saturating_sub(used)
    }

    /// Handle what is in the submission ring now: run the pieces (in batches), write
    /// their completions, advance the indices and kick after each batch. Stops early
    /// (leaving the rest in the ring) when `stop` says so between batches. Returns the
    /// entries consumed. An error is the device's (the daemon exits).
    pub fn run_once(&mut self, stop: &dyn Fn() -> bool) -> io::Result<u32> {
        let tail = self.k.queue().load(hdr::SQ_TAIL);
        let mut avail = tail.wrapping_sub(self.sq_head);
        if avail > exec::SQ_ENTRIES {
            self.metrics.bad_indices += 1;
            if self.metrics.bad_indices == 1 || self.metrics.bad_indices.is_multiple_of(1000) {
                warn!(
                    "sq_tail {tail:#x} is {avail} entries past sq_head {:#x} (the ring has {}): \
                     clamped ({} times)",
                    self.sq_head,
                    exec::SQ_ENTRIES,
                    self.metrics.bad_indices
                );
            }
            avail = exec::SQ_ENTRIES;
        }
        // `done` entries are published (sq_head advanced past them); `consumed` more
        // are taken since, their completions in `slots`, their pieces in `batch`.
        let (mut done, mut consumed) = (0u32, 0u32);
        let mut slots: Vec<Slot> = Vec::new();
        let mut batch: Vec<(u32, Sqe)> = Vec::new();
        let mut room = self.cq_room();
        while done + consumed < avail {
            let idx = self.sq_head.wrapping_add(consumed);
            let sqe = Sqe::decode(&self.k.queue().read_sqe(idx));
            let retire = sqe.kind == Some(SqeKind::Retire);
            let completes = sqe.seq != 0 && !retire;
            let full = completes && room == 0;
            if (retire && !batch.is_empty())
                || batch.len() >= self.batch_max
                || (full && !slots.is_empty())
            {
                self.flush(consumed, &mut slots, &mut batch)?;
                done += consumed;
                consumed = 0;
                room = self.cq_room();
                if stop() {
                    return Ok(done);
                }
                continue;
            }
            if full {
                // Nothing of ours pending, and no room: kick, look again.
                self.kick()?;
                room = self.cq_room();
                if room == 0 {
                    self.metrics.cq_full += 1;
                    std::thread::sleep(Duration::from_millis(1));
                    break;
                }
            }
            consumed += 1;
            if sqe.seq == 0 {
                self.metrics.bad_entries += 1;
                debug!("entry {idx:#x}: sequence number 0, dropped");
                continue;
            }
            match sqe.kind {
                Some(SqeKind::Retire) => self.retire(sqe.id),
                Some(SqeKind::Piece) => {
                    room -= 1;
                    match self.ensure_mapped(sqe.id, sqe.vram_size) {
                        Ok(()) => {
                            slots.push(Slot::Run(batch.len()));
                            batch.push((sqe.id, sqe));
                        }
                        Err(why) => {
                            debug!("seq {}: refused: {why}", sqe.seq);
                            self.metrics.refused += 1;
                            slots.push(Slot::Done(cqe(&sqe, exec::STATUS_REFUSED, 0, 0)));
                        }
                    }
                }
                None => {
                    room -= 1;
                    self.metrics.refused += 1;
                    debug!("seq {}: unknown kind, refused", sqe.seq);
                    slots.push(Slot::Done(cqe(&sqe, exec::STATUS_REFUSED, 0, 0)));
                }
            }
        }
        if consumed > 0 {
            self.flush(consumed, &mut slots, &mut batch)?;
            done += consumed;
        }
        Ok(done)
    }

    /// Run the batch, write the completions of `slots`, advance sq_head by `consumed`
    /// and cq_tail by the completions, and kick.
    fn flush(
        &mut self,
        consumed: u32,
        slots: &mut Vec<Slot>,
        batch: &mut Vec<(u32, Sqe)>,
    ) -> io::Result<()> {
        let results = self.execute(batch);
        let q = self.k.queue();
        for s in slots.iter() {
            let c = match s {
                Slot::Done(c) => *c,
                Slot::Run(i) => results[*i],
            };
            q.write_cqe(self.cq_tail, &c.encode());
            self.cq_tail = self.cq_tail.wrapping_add(1);
        }
        self.sq_head = self.sq_head.wrapping_add(consumed);
        // Release: the entries before the indices that publish them.
        q.store(hdr::CQ_TAIL, self.cq_tail);
        q.store(hdr::SQ_HEAD, self.sq_head);
        slots.clear();
        batch.clear();
        self.kick()
    }

    fn kick(&mut self) -> io::Result<()> {
        self.metrics.kicks += 1;
        self.k.kick()
    }

    /// Execute a batch of pieces whose VRAMs are mapped; one completion each.
    fn execute(&mut self, batch: &[(u32, Sqe)]) -> Vec<Cqe> {
        if batch.is_empty() {
            return Vec::new();
        }
        let t = Instant::now();
        let mut ids: Vec<u32> = batch.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut vrams: Vec<(u32, &mut Vram<'e>)> = self
            .instances
            .iter_mut()
            .filter(|(id, _)| ids.binary_search(id).is_ok())
            .map(|(id, inst)| (*id, &mut inst.vram))
            .collect();
        vrams.sort_unstable_by_key(|(id, _)| *id);
        let work: Vec<(usize, Sqe)> = batch
            .iter()
            .map(|(id, sqe)| {
                let i = vrams.binary_search_by_key(id, |(v, _)| *v);
                (i.unwrap_or(usize::MAX), *sqe)
            })
            .collect();
        let mut refs: Vec<&mut Vram<'e>> = vrams.into_iter().map(|(_, v)| v).collect();
        let out = match self.ex.execute_pieces(&mut refs, &work) {
            Ok(results) => {
                let ns = exec::work_ns(t.elapsed());
                results
                    .into_iter()
                    .zip(batch)
                    .map(|(r, (_, sqe))| match r {
                        Ok(v) => {
                            if let Some(i) = op_index(sqe) {
                                self.metrics.pieces[i] += 1;
                            }
                            cqe(sqe, exec::STATUS_OK, v, ns)
                        }
                        Err(e) => {
                            debug!("seq {}: refused: {e}", sqe.seq);
                            self.metrics.refused += 1;
                            cqe(sqe, exec::STATUS_REFUSED, 0, 0)
                        }
                    })
                    .collect()
            }
            Err(e) => {
                error!("a submission of {} pieces failed: {e}", batch.len());
                let status = match e {
                    Error::Rejected(_) | Error::Vram(_) => exec::STATUS_REFUSED,
                    _ => exec::STATUS_FAILED,
                };
                if status == exec::STATUS_FAILED {
                    self.metrics.failed += batch.len() as u64;
                } else {
                    self.metrics.refused += batch.len() as u64;
                }
                batch
                    .iter()
                    .map(|(_, sqe)| cqe(sqe, status, 0, 0))
                    .collect()
            }
        };
        self.metrics.submissions += 1;
        self.metrics.busy_ns += t.elapsed().as_nanos() as u64;
        out
    }

    /// Map and import instance `id`'s VRAM if it is not yet.
    fn ensure_mapped(&mut self, id: u32, vram_size: u64) -> Result<(), String> {
        if let Some(inst) = self.instances.get(&id) {
            if inst.vram.len() as u64 != vram_size {
                return Err(format!(
                    "id {id}: vram_size {vram_size:#x}, but {:#x} is mapped",
                    inst.vram.len()
                ));
            }
            return Ok(());
        }
        if let Some(why) = self.unusable.get(&id) {
            return Err(why.clone());
        }
        let r = self.map(id, vram_size);
        if let Err(why) = &r {
            warn!(
                "{why}: its pieces are refused (the kernel stops its rings with ERROR = EXECUTOR)"
            );
            self.unusable.insert(id, why.clone());
        }
        r
    }

    fn map(&mut self, id: u32, vram_size: u64) -> Result<(), String> {
        let max = self.ex.max_vram_size();
        let len = usize::try_from(vram_size)
            .ok()
            .filter(|&l| l != 0 && l.is_multiple_of(4096) && l as u64 <= max)
            .ok_or_else(|| {
                format!(
                    "id {id}: a VRAM of {vram_size:#x} bytes is not one this device can take \
                     (a non-zero multiple of 4 KiB, at most {max:#x})"
                )
            })?;
        let map = self
            .k
            .map_vram(id, len)
            .map_err(|e| format!("id {id}: mmap of {len:#x} bytes of VRAM: {e}"))?;
        self.metrics.maps += 1;
        // SAFETY: `map` is a page-aligned shared mapping of `len` readable and writable
        // bytes; the Instance keeps it mapped for as long as the Vram lives (the Vram
        // is dropped first), and this process touches the bytes only through the GPU.
        let vram = unsafe { self.ex.import(map.ptr(), len) }
            .map_err(|e| format!("id {id}: import of its VRAM: {e}"))?;
        info!("id {id}: VRAM of {} KiB mapped and imported", len >> 10);
        self.instances.insert(id, Instance { vram, _map: map });
        Ok(())
    }

    fn retire(&mut self, id: u32) {
        self.metrics.retires += 1;
        self.unusable.remove(&id);
        if self.instances.remove(&id).is_some() {
            info!("id {id}: retired, VRAM unmapped");
        } else {
            debug!("id {id}: retired (was not mapped)");
        }
    }

    /// Serve until `stop` says so (checked after each wait and between batches) or
    /// the device fails; rewrite `metrics_file` (for `parent`) every second or so.
    pub fn run(
        &mut self,
        stop: &dyn Fn() -> bool,
        metrics_file: Option<(&Path, &str)>,
    ) -> io::Result<()> {
        let mut written: Option<Instant> = None;
        let mut write_metrics = |m: &Metrics, force: bool| {
            if let Some((path, parent)) = metrics_file {
                if force || written.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    if let Err(e) = m.write_file(path, parent) {
                        warn!("{}: {e}", path.display());
                    }
                    written = Some(Instant::now());
                }
            }
        };
        let r = loop {
            write_metrics(&self.metrics(), false);
            if stop() {
                break Ok(());
            }
            if let Err(e) = self.k.wait(1000) {
                break Err(e);
            }
            if stop() {
                break Ok(());
            }
            if let Err(e) = self.run_once(stop) {
                break Err(e);
            }
        };
        write_metrics(&self.metrics(), true);
        r
    }
}

/// A completion. `work_ns`: the time of the submission that ran it (pieces of one
/// submission run together: each reports the whole, so the kernel's estimate of a
/// piece's cost errs high, towards smaller pieces); 0 for one not run.
fn cqe(sqe: &Sqe, status: u32, value: u64, work_ns: u64) -> Cqe {
    Cqe {
        seq: sqe.seq,
        status,
        value,
        work_ns,
    }
}

fn op_index(sqe: &Sqe) -> Option<usize> {
    match sqe.cmd.opcode() {
        reg::OP_FILL => Some(0),
        reg::OP_COPY => Some(1),
        reg::OP_CHECKSUM => Some(2),
        reg::OP_GEMM => Some(3),
        reg::OP_BLIT => Some(4),
        _ => None,
    }
}
