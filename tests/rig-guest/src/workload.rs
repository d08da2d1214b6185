//! Shared machinery for the engine suite, the fuzzer, the benchmark and the demo tools:
//! an open instance with its engine ([`Gpu`]), GEMM saturators on submitter threads,
//! a neighbour that keeps doing checked work next to a canary, calibration, and
//! windows over the kernel's scheduler counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vgpu_sysfs::handle::{Instance, Parent};
use vgpu_sysfs::{InstanceCounters as InstanceStats, LatencyHist, ParentCounters as ParentStats};
use vgpu_vfio::abi::engine as reg;
use vgpu_vfio::reference::fnv1a64_words;
use vgpu_vfio::{region, Cmd, Device, Engine, EventFd, MappedRegion, OpenInstance, EFD_NONBLOCK};

use crate::ensure;
use crate::harness::{Context, Fail};
use crate::util::pattern;

/// 1 KiB.
pub const KIB: u64 = 1 << 10;
/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// Default timeout for a fence of a short job.
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// An open instance: device, a mapping of all of its VRAM, the engine driver, and an
/// MSI eventfd once [`Gpu::msi`] was called.
pub struct Gpu {
    /// The mdev instance.
    pub inst: Instance,
    /// Its engine.
    pub eng: Engine,
    /// VRAM size in bytes.
    pub vram_size: u64,
    /// The MSI eventfd, when routed.
    pub efd: Option<EventFd>,
}

impl Gpu {
    /// Open `inst` and map all of BAR0 (pages are only allocated where touched).
    pub fn open(inst: &Instance) -> Result<Gpu, Fail> {
        let dev = Arc::new(inst.open().ctx(format!("open {}", inst.uuid()))?);
        let vram_size = dev.region_size(region::BAR0).ctx("BAR0 size")?;
        let map = Arc::new(
            dev.mmap_region(region::BAR0, 0, vram_size)
                .ctx("mmap BAR0")?,
        );
        let eng = Engine::new(dev, map).ctx("engine")?;
        Ok(Gpu {
            inst: inst.clone(),
            eng,
            vram_size,
            efd: None,
        })
    }

    /// Open and enable a ring at `base` of `size` bytes.
    pub fn open_ring(inst: &Instance, base: u64, size: u64) -> Result<Gpu, Fail> {
        let mut g = Self::open(inst)?;
        g.eng
            .setup(base, size)
            .ctx(format!("ring at {base:#x} size {size:#x}"))?;
        Ok(g)
    }

    /// The device.
    pub fn dev(&self) -> &Device {
        self.eng.device()
    }

    /// The VRAM mapping (mapping offset = VRAM offset).
    pub fn vram(&self) -> &MappedRegion {
        self.eng.vram()
    }

    /// Route interrupts to a fresh eventfd through MSI, unmasking `mask`.
    pub fn msi(&mut self, mask: u32) -> Result<(), Fail> {
        let efd = EventFd::new(EFD_NONBLOCK).ctx("eventfd")?;
        self.eng.enable_msi(&efd, mask).ctx("enable MSI")?;
        self.efd = Some(efd);
        Ok(())
    }

    /// Whether the eventfd fired (consumes it); false without MSI.
    pub fn irq_fired(&self) -> bool {
        self.efd.as_ref().is_some_and(|e| e.read().is_ok())
    }

    /// Wait up to `t` for the eventfd.
    pub fn wait_irq(&self, t: Duration) -> Result<bool, Fail> {
        match &self.efd {
            Some(e) => vgpu_vfio::engine::wait_eventfd(e, t).ctx("wait eventfd"),
            None => Err(Fail("no MSI eventfd".into())),
        }
    }

    /// Submit `cmds` and a FENCE, wait for it (polling, [`FENCE_TIMEOUT`]).
    pub fn run(&mut self, cmds: &[Cmd]) -> Result<u64, Fail> {
        self.run_timeout(cmds, FENCE_TIMEOUT)
    }

    /// As [`Gpu::run`] with a timeout.
    pub fn run_timeout(&mut self, cmds: &[Cmd], t: Duration) -> Result<u64, Fail> {
        let seq = self.eng.submit_fenced(cmds, false).ctx("submit")?;
        self.eng.wait_fence(seq, t).ctx(format!("fence {seq}"))?;
        Ok(seq)
    }

    /// Write u32 words at a VRAM offset through the mapping.
    pub fn write_words(&self, off: u64, w: &[u32]) -> Result<(), Fail> {
        self.vram()
            .write_u32_slice(off, w)
            .ctx(format!("write VRAM at {off:#x}"))
    }

    /// Read `n` u32 words at a VRAM offset.
    pub fn read_words(&self, off: u64, n: usize) -> Result<Vec<u32>, Fail> {
        let mut v = vec![0u32; n];
        self.vram()
            .read_u32_slice(off, &mut v)
            .ctx(format!("read VRAM at {off:#x}"))?;
        Ok(v)
    }

    /// Read `len` bytes at a VRAM offset.
    pub fn read_bytes(&self, off: u64, len: usize) -> Result<Vec<u8>, Fail> {
        let mut v = vec![0u8; len];
        // Word reads where possible, bytes at the edges.
        let vram = self.vram();
        let start = off.next_multiple_of(8).min(off + len as u64);
        let end = ((off + len as u64) / 8 * 8).max(start);
        vram.read_bytes(off, &mut v[..(start - off) as usize])
            .ctx("read VRAM")?;
        let mut words = vec![0u64; ((end - start) / 8) as usize];
        vram.read_u64_slice(start, &mut words).ctx("read VRAM")?;
        for (i, w) in words.iter().enumerate() {
            let o = (start - off) as usize + 8 * i;
            v[o..o + 8].copy_from_slice(&w.to_le_bytes());
        }
        let tail = (end - off) as usize;
        vram.read_bytes(end, &mut v[tail..]).ctx("read VRAM")?;
        Ok(v)
    }
}

/// A GEMM's operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gemm {
    /// A.
    pub a: u64,
    /// B.
    pub b: u64,
    /// C.
    pub c: u64,
    /// m.
    pub m: u64,
    /// n.
    pub n: u64,
    /// k.
    pub k: u64,
}

impl Gemm {
    /// A d×d×d GEMM with A, B and C one after the other from `base`.
    pub fn square(base: u64, d: u64) -> Gemm {
        let sz = d * d * 4;
        Gemm {
            a: base,
            b: base + sz,
            c: base + 2 * sz,
            m: d,
            n: d,
            k: d,
        }
    }

    /// The command.
    pub fn cmd(&self) -> Cmd {
        Cmd::Gemm {
            a: self.a,
            b: self.b,
            c: self.c,
            m: self.m,
            n: self.n,
            k: self.k,
        }
    }

    /// Multiply-adds.
    pub fn macs(&self) -> u64 {
        self.m * self.n * self.k
    }
}

/// The side of a square GEMM that takes about `target` of engine time.
pub fn gemm_dim_for(ns_per_mac: f64, target: Duration) -> u64 {
    let macs = target.as_nanos() as f64 / ns_per_mac.max(0.01);
    (macs.cbrt().round() as u64).clamp(4, 2048)
}

/// Engine ns per GEMM multiply-add, from the instance's busy_ns over a few GEMMs of
/// side 48 at `base` (the ring must be enabled; the engine otherwise idle). Good for
/// sizing GEMMs of a few ms.
pub fn calibrate(gpu: &mut Gpu, base: u64) -> Result<f64, Fail> {
    calibrate_dim(gpu, base, 48)
}

/// As [`calibrate`] with GEMMs of side `d` (bigger GEMMs cost less per MAC).
pub fn calibrate_dim(gpu: &mut Gpu, base: u64, d: u64) -> Result<f64, Fail> {
    let g = Gemm::square(base, d);
    gpu.run(&[g.cmd()])?; // pages allocated, caches warm
    let b0 = gpu.inst.busy_ns().ctx("busy_ns")?;
    // A fence after each: the watchdog counts engine time between fences, and a host
    // that deschedules the vCPU stretches it.
    for _ in 0..3 {
        gpu.run(&[g.cmd()])?;
    }
    let b1 = gpu.inst.busy_ns().ctx("busy_ns")?;
    ensure!(b1 > b0, "busy_ns did not grow over 3 GEMMs ({b0} -> {b1})");
    Ok((b1 - b0) as f64 / (3 * g.macs()) as f64)
}

/// What a saturator submits: `per_fence` GEMMs then a FENCE, as long as there is room,
/// checking every `refill`.
#[derive(Clone, Copy, Debug)]
pub struct SatConfig {
    /// The GEMM.
    pub gemm: Gemm,
    /// GEMMs per FENCE.
    pub per_fence: usize,
    /// Sleep between refills.
    pub refill: Duration,
}

/// Counts of a saturator's work.
#[derive(Clone, Copy, Debug, Default)]
pub struct SatStats {
    /// Commands written into the ring and published.
    pub submitted: u64,
    /// The last fence seqno submitted.
    pub last_seq: u64,
}

/// A thread that keeps one instance's ring full of GEMMs. Dropped without `stop()` (a
/// test that failed early), it stops and joins the thread, closing the device.
pub struct Saturator {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    handle: Option<JoinHandle<(Gpu, Result<SatStats, Fail>)>>,
}

impl Drop for Saturator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Saturator {
    /// Start saturating `gpu` (its ring must be enabled).
    pub fn start(gpu: Gpu, cfg: SatConfig) -> Saturator {
        Self::start_group(gpu, vec![cfg.gemm.cmd(); cfg.per_fence], cfg.refill)
    }

    /// Start keeping `gpu`'s ring full of `group` followed by a FENCE, over and over,
    /// checking every `refill` (its ring must be enabled and hold the group and its
    /// fence).
    pub fn start_group(gpu: Gpu, group: Vec<Cmd>, refill: Duration) -> Saturator {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let (s2, p2) = (stop.clone(), paused.clone());
        let handle = std::thread::spawn(move || {
            let mut gpu = gpu;
            let r = saturate(&mut gpu, &group, refill, &s2, &p2);
            (gpu, r)
        });
        Saturator {
            stop,
            paused,
            handle: Some(handle),
        }
    }

    /// Stop refilling (the ring drains) or start again.
    pub fn set_paused(&self, p: bool) {
        self.paused.store(p, Ordering::Relaxed);
    }

    /// Whether the thread ended (an error).
    pub fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stop submitting and get the instance back (its ring still holds queued work).
    pub fn stop(mut self) -> Result<(Gpu, SatStats), Fail> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self
            .handle
            .take()
            .ok_or_else(|| Fail("saturator already stopped".into()))?;
        match handle.join() {
            Ok((gpu, r)) => Ok((gpu, r?)),
            Err(_) => Err(Fail("saturator thread panicked".into())),
        }
    }
}

fn saturate(
    gpu: &mut Gpu,
    cmds: &[Cmd],
    refill: Duration,
    stop: &AtomicBool,
    paused: &AtomicBool,
) -> Result<SatStats, Fail> {
    let group = cmds.len() as u64 + 1;
    let mut st = SatStats::default();
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::Relaxed) {
            std::thread::sleep(refill);
            continue;
        }
        let free = gpu.eng.free_slots().ctx("HEAD")?;
        let groups = free / group;
        if groups > 0 {
            for _ in 0..groups {
                for cmd in cmds {
                    gpu.eng.push(cmd).ctx(format!("push {}", cmd.name()))?;
                }
                let (f, seq) = gpu.eng.next_fence(false, None);
                gpu.eng.push(&f).ctx("push FENCE")?;
                st.last_seq = seq;
            }
            gpu.eng.kick().ctx("kick")?;
            st.submitted += groups * group;
        }
        gpu.eng
            .check()
            .ctx(format!("saturated ring of {}", gpu.inst.uuid()))?;
        std::thread::sleep(refill);
    }
    Ok(st)
}

/// Start a saturator on each instance: ring at `ring_base` (`ring_size`), GEMMs of side
/// `dim` at `data`.
pub fn saturate_all(
    gpus: Vec<Gpu>,
    data: u64,
    dim: u64,
    per_fence: usize,
    refill: Duration,
) -> Vec<Saturator> {
    gpus.into_iter()
        .map(|g| {
            Saturator::start(
                g,
                SatConfig {
                    gemm: Gemm::square(data, dim),
                    per_fence,
                    refill,
                },
            )
        })
        .collect()
}

/// Stop saturators and reset their rings (dropping the queued work), re-enabling them.
pub fn stop_all(sats: Vec<Saturator>) -> Result<Vec<Gpu>, Fail> {
    let mut out = Vec::new();
    let mut err = None;
    for s in sats {
        match s.stop() {
            Ok((mut g, _)) => {
                if let Err(e) = g.eng.recover() {
                    err.get_or_insert(Fail(format!("recover {}: {e}", g.inst.uuid())));
                }
                out.push(g);
            }
            Err(e) => {
                err.get_or_insert(e);
            }
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The scheduler counters of a parent and some instances at one moment.
#[derive(Clone, Debug)]
pub struct Snap {
    /// When (guest CLOCK_MONOTONIC, the kernel's ktime_get_ns clock).
    pub t: Instant,
    /// Per instance.
    pub inst: Vec<InstanceStats>,
    /// The parent.
    pub parent: ParentStats,
}

/// Read the counters.
pub fn snap(parent: &Parent, insts: &[Instance]) -> Result<Snap, Fail> {
    // The parent first, right after the clock: throughput figures use its macs.
    let t = Instant::now();
    let parent = parent.sched_counters().ctx("parent stats")?;
    let mut v = Vec::with_capacity(insts.len());
    for i in insts {
        v.push(i.sched_counters().ctx(format!("stats of {}", i.uuid()))?);
    }
    Ok(Snap { t, inst: v, parent })
}

/// Counter increments between two snaps.
#[derive(Clone, Debug)]
pub struct Window {
    /// Wall time, ns.
    pub wall_ns: f64,
    /// busy_ns increments.
    pub busy: Vec<f64>,
    /// slices increments.
    pub slices: Vec<u64>,
    /// throttled_ns increments.
    pub throttled: Vec<f64>,
    /// cmds_failed increments.
    pub failed: Vec<u64>,
    /// Parent busy_ns increment.
    pub parent_busy: f64,
    /// Parent idle_ns increment.
    pub parent_idle: f64,
    /// Parent switches increment.
    pub switches: u64,
    /// Parent macs increment.
    pub parent_macs: u64,
    /// queue_depth of each instance at the end of the window.
    pub depth_end: Vec<u64>,
}

/// Increments from `a` to `b`.
pub fn window(a: &Snap, b: &Snap) -> Window {
    let d = |f: fn(&InstanceStats) -> u64| -> Vec<u64> {
        a.inst
            .iter()
            .zip(&b.inst)
            .map(|(x, y)| f(y).saturating_sub(f(x)))
            .collect()
    };
    Window {
        wall_ns: b.t.duration_since(a.t).as_nanos() as f64,
        busy: d(|s| s.busy_ns).into_iter().map(|x| x as f64).collect(),
        slices: d(|s| s.slices),
        throttled: d(|s| s.throttled_ns)
            .into_iter()
            .map(|x| x as f64)
            .collect(),
        failed: d(|s| s.cmds_failed),
        parent_busy: b.parent.busy_ns.saturating_sub(a.parent.busy_ns) as f64,
        parent_idle: b.parent.idle_ns.saturating_sub(a.parent.idle_ns) as f64,
        switches: b.parent.switches.saturating_sub(a.parent.switches),
        parent_macs: b.parent.macs.saturating_sub(a.parent.macs),
        depth_end: b.inst.iter().map(|s| s.queue_depth).collect(),
    }
}

impl Window {
    /// Each instance's share of the instances' summed busy time, in percent.
    pub fn shares(&self) -> Vec<f64> {
        let total: f64 = self.busy.iter().sum();
        self.busy
            .iter()
            .map(|b| if total > 0.0 { 100.0 * b / total } else { 0.0 })
            .collect()
    }

    /// Each instance's busy time as a percentage of wall time (of one engine).
    pub fn utils(&self) -> Vec<f64> {
        self.busy
            .iter()
            .map(|b| 100.0 * b / self.wall_ns.max(1.0))
            .collect()
    }

    /// Parent busy time as a percentage of wall time.
    pub fn parent_util(&self) -> f64 {
        100.0 * self.parent_busy / self.wall_ns.max(1.0)
    }

    /// Mean slice length over all instances of the window, ns.
    pub fn mean_slice_all_ns(&self) -> f64 {
        let s: u64 = self.slices.iter().sum();
        self.busy.iter().sum::<f64>() / (s.max(1) as f64)
    }

    /// Parent idle time (engines asleep with nothing eligible) as a percentage of
    /// `engines` × wall time.
    pub fn idle_pct(&self, engines: u64) -> f64 {
        100.0 * self.parent_idle / (self.wall_ns.max(1.0) * engines.max(1) as f64)
    }
}

/// Sleep `settle`, then measure `n` consecutive windows of `dur` each (one snap ends a
/// window and starts the next).
pub fn measure_windows(
    parent: &Parent,
    insts: &[Instance],
    settle: Duration,
    dur: Duration,
    n: usize,
) -> Result<Vec<Window>, Fail> {
    std::thread::sleep(settle);
    let mut a = snap(parent, insts)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        std::thread::sleep(dur);
        let b = snap(parent, insts)?;
        out.push(window(&a, &b));
        a = b;
    }
    Ok(out)
}

/// Wait until an engine of `parent` is seen asleep (nothing eligible): its `idle_ns`,
/// which includes the idle periods in progress, grows between two reads. Everything the
/// engine did before it went to sleep is then in the counters (a slice is charged before
/// the engine looks for more work). Judged from the kernel's counters, so it holds on a
/// host of any speed; `timeout` only guards against a hang.
pub fn wait_engine_asleep(parent: &Parent, timeout: Duration) -> Result<(), Fail> {
    let start = Instant::now();
    let first = parent.idle_ns().ctx("idle_ns")?;
    loop {
        std::thread::sleep(Duration::from_millis(1));
        let now = parent.idle_ns().ctx("idle_ns")?;
        if now > first {
            return Ok(());
        }
        ensure!(
            start.elapsed() < timeout,
            "{}: the engine never went to sleep within {timeout:?} (idle_ns stays {now})",
            parent.name()
        );
    }
}

/// Sleep `settle`, then measure the counters over `dur`.
pub fn measure(
    parent: &Parent,
    insts: &[Instance],
    settle: Duration,
    dur: Duration,
) -> Result<Window, Fail> {
    std::thread::sleep(settle);
    let a = snap(parent, insts)?;
    std::thread::sleep(dur);
    let b = snap(parent, insts)?;
    Ok(window(&a, &b))
}

/// Format percentages.
pub fn pcts(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.1}%"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- a victim's latency -------------------------------------------------------------

/// The kernel's latency histogram (vgpu/latency_hist) of `samples` small jobs of
/// `victim`: FILL 4 KiB at `scratch` + FENCE writing its seqno at `flag`, one doorbell
/// each, one at a time, `gap` apart. The victim waits for each fence by sleeping and
/// polling `flag` in its VRAM (its registers only every 64th poll), so on a single vCPU
/// it takes no engine time from the worker and rarely holds its instance's lock; the
/// latency is the kernel's own, from the doorbell until the commands completed. The histogram is cleared first; it must count exactly `samples`.
pub fn victim_latency(
    victim: &mut Gpu,
    samples: u32,
    gap: Duration,
    scratch: u64,
    flag: u64,
) -> Result<LatencyHist, Fail> {
    victim.inst.clear_latency_hist().ctx("clear latency_hist")?;
    for i in 0..samples {
        let (f, seq) = victim.eng.next_fence(false, Some(flag));
        let cmds = [
            Cmd::Fill {
                dst: scratch,
                len: 4096,
                value: i,
            },
            f,
        ];
        let t = Instant::now();
        victim.eng.submit(&cmds).ctx("victim submit")?;
        let mut polls = 0u32;
        while victim.vram().read_u64(flag).ctx("victim flag")? != seq {
            // The ring's registers only now and then: reading one takes the instance's
            // lock, and an engine that finds it taken passes the instance over.
            polls += 1;
            if polls.is_multiple_of(64) {
                victim.eng.check().ctx(format!("victim job {i}"))?;
            }
            ensure!(
                t.elapsed() < Duration::from_secs(10),
                "victim job {i} not done after 10 s ({:?})",
                victim.eng.check()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(gap);
    }
    let h = victim.inst.latency_hist().ctx("latency_hist")?;
    ensure!(
        h.total() == u64::from(samples),
        "latency_hist counts {} submissions, the victim made {samples}",
        h.total()
    );
    Ok(h)
}

// ---- the neighbour: valid work next to a canary -------------------------------------

/// Layout of a neighbour's VRAM.
pub mod nb {
    use super::MIB;
    /// Ring base.
    pub const RING: u64 = 0;
    /// Ring size.
    pub const RING_SIZE: u64 = 4096;
    /// The canary pattern.
    pub const CANARY: u64 = MIB;
    /// Its length.
    pub const CANARY_LEN: u64 = MIB;
    /// Where CHECKSUM results go.
    pub const RESULT: u64 = 3 * MIB;
    /// FILL scratch.
    pub const SCRATCH: u64 = 4 * MIB;
    /// Its length.
    pub const SCRATCH_LEN: u64 = 64 * 1024;
    /// A second canary at the very end of VRAM (this many bytes).
    pub const END_CANARY_LEN: u64 = 64 * 1024;
}

/// What a neighbour found.
#[derive(Clone, Debug, Default)]
pub struct NeighbourReport {
    /// Rounds completed and checked.
    pub rounds: u64,
    /// Jobs it submitted (all must complete).
    pub cmds: u64,
}

/// An instance doing checked valid work in a loop (CHECKSUM of a canary, FILL, FENCE)
/// while tests abuse other instances. Dropped without `finish()` (a test that failed
/// early), it stops its loop and joins the thread, so its device is closed before the
/// harness removes the instance (a device left open makes `remove` block).
pub struct Neighbour {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    /// Why its loop ended early, for the message of a test that sees it stopped.
    error: Arc<std::sync::Mutex<Option<String>>>,
    handle: Option<JoinHandle<(Gpu, Result<NeighbourReport, Fail>)>>,
    seed: u64,
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            // The loop ends within one round (each wait is bounded); the Gpu it
            // returns is dropped here, closing the device.
            let _ = h.join();
        }
    }
}

/// The canary word pattern of a neighbour (by VRAM offset).
pub fn canary_words(seed: u64, off: u64, len: u64) -> impl Iterator<Item = u32> {
    (off..off + len).step_by(8).flat_map(move |o| {
        let p = pattern(seed, o);
        [p as u32, (p >> 32) as u32]
    })
}

impl Neighbour {
    /// Write the canaries into `gpu`'s VRAM, enable its ring and start the loop.
    pub fn start(mut gpu: Gpu, seed: u64) -> Result<Neighbour, Fail> {
        let vram = gpu.vram();
        vram.fill_u64(nb::CANARY, nb::CANARY_LEN, |o| pattern(seed, o))
            .ctx("write canary")?;
        let end = gpu.vram_size - nb::END_CANARY_LEN;
        vram.fill_u64(end, nb::END_CANARY_LEN, |o| pattern(seed, o))
            .ctx("write end canary")?;
        gpu.eng
            .setup(nb::RING, nb::RING_SIZE)
            .ctx("neighbour ring")?;
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let error = Arc::new(std::sync::Mutex::new(None));
        let (s2, r2, e2) = (stop.clone(), rounds.clone(), error.clone());
        let handle = std::thread::spawn(move || {
            let r = neighbour_loop(&mut gpu, seed, &s2, &r2);
            if let Err(f) = &r {
                if let Ok(mut e) = e2.lock() {
                    *e = Some(f.0.clone());
                }
            }
            (gpu, r)
        });
        Ok(Neighbour {
            stop,
            rounds,
            error,
            handle: Some(handle),
            seed,
        })
    }

    /// Rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Fail unless at least `n` more rounds complete within `t` (the neighbour keeps
    /// making progress).
    pub fn expect_progress(&self, n: u64, t: Duration, what: &str) -> Result<(), Fail> {
        let r0 = self.rounds();
        let start = Instant::now();
        while self.rounds() < r0 + n {
            ensure!(
                !self.handle.as_ref().is_none_or(|h| h.is_finished()),
                "{what}: the neighbour stopped: {}",
                self.error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unwrap_or_else(|| "(no error recorded)".into())
            );
            ensure!(
                start.elapsed() < t,
                "{what}: the neighbour made {} rounds in {t:?}, want {n}",
                self.rounds() - r0
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stop, then check: no error in its loop, its ring is healthy, its cmds_failed is 0,
    /// its jobs equal what it submitted, and both canaries are intact.
    pub fn finish(mut self) -> Result<(Gpu, NeighbourReport), Fail> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self
            .handle
            .take()
            .ok_or_else(|| Fail("neighbour already finished".into()))?;
        let (gpu, r) = handle
            .join()
            .map_err(|_| Fail("neighbour thread panicked".into()))?;
        let rep = r.map_err(|e| Fail(format!("neighbour: {}", e.0)))?;
        check_canaries(&gpu, self.seed)?;
        let st = gpu.eng.status().ctx("neighbour STATUS")?;
        ensure!(
            st & (reg::STATUS_ERROR | reg::STATUS_HUNG) == 0,
            "neighbour STATUS {st:#x}"
        );
        let failed = gpu.inst.cmds_failed().ctx("neighbour cmds_failed")?;
        ensure!(failed == 0, "neighbour cmds_failed = {failed}");
        let jobs = gpu.inst.jobs().ctx("neighbour jobs")?;
        ensure!(
            jobs == rep.cmds,
            "neighbour jobs = {jobs}, it submitted {} commands",
            rep.cmds
        );
        Ok((gpu, rep))
    }
}

/// Both canaries of a neighbour hold their pattern.
pub fn check_canaries(gpu: &Gpu, seed: u64) -> Result<(), Fail> {
    let end = gpu.vram_size - nb::END_CANARY_LEN;
    for (off, len) in [(nb::CANARY, nb::CANARY_LEN), (end, nb::END_CANARY_LEN)] {
        if let Some(m) = gpu
            .vram()
            .verify_u64(off, len, |o| pattern(seed, o))
            .ctx("read canary")?
        {
            return Err(Fail(format!(
                "canary of {} changed: {} words differ, first at {:#x} ({:#x}, want {:#x})",
                gpu.inst.uuid(),
                m.count,
                m.offset,
                m.found,
                m.expected
            )));
        }
    }
    Ok(())
}

fn neighbour_loop(
    gpu: &mut Gpu,
    seed: u64,
    stop: &AtomicBool,
    rounds: &AtomicU64,
) -> Result<NeighbourReport, Fail> {
    let want = fnv1a64_words(canary_words(seed, nb::CANARY, nb::CANARY_LEN));
    let mut rep = NeighbourReport::default();
    while !stop.load(Ordering::Relaxed) {
        let round = rep.rounds + 1;
        gpu.vram().write_u64(nb::RESULT, 0).ctx("clear result")?;
        let cmds = [
            Cmd::Checksum {
                src: nb::CANARY,
                len: nb::CANARY_LEN,
                dst: nb::RESULT,
            },
            Cmd::Fill {
                dst: nb::SCRATCH,
                len: nb::SCRATCH_LEN,
                value: round as u32,
            },
        ];
        let seq = gpu
            .eng
            .submit_fenced(&cmds, false)
            .ctx("neighbour submit")?;
        rep.cmds += 3;
        gpu.eng
            .wait_fence(seq, FENCE_TIMEOUT)
            .ctx(format!("neighbour round {round}"))?;
        let got = gpu.vram().read_u64(nb::RESULT).ctx("read result")?;
        ensure!(
            got == want,
            "neighbour round {round}: CHECKSUM of its canary = {got:#x}, want {want:#x}"
        );
        let first = gpu.vram().read_u32(nb::SCRATCH).ctx("scratch")?;
        let last = gpu
            .vram()
            .read_u32(nb::SCRATCH + nb::SCRATCH_LEN - 4)
            .ctx("scratch")?;
        ensure!(
            first == round as u32 && last == round as u32,
            "neighbour round {round}: FILL left {first:#x}..{last:#x}"
        );
        rep.rounds = round;
        rounds.store(round, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(rep)
}
