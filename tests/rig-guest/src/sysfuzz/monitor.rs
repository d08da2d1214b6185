//! The monitor (the main thread while the fuzzer threads run): scans the kernel log,
//! watches every operation and removal for hangs, lets go of what removals wait for,
//! arms fault injection in the engine kthreads, and parks the threads for the invariant
//! checks.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::rng::Rng;
use crate::sys::Kmsg;

use super::check;
use super::faults::FailNth;
use super::ops::code_name;
use super::world::{self, SlotState, World};
use super::Args;

/// Kernel log lines that are a finding.
pub const KERNEL_BAD: &[&str] = &[
    "BUG:",
    "WARNING:",
    "Oops",
    "general protection",
    "Call Trace",
    "KASAN",
    "UBSAN",
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "suspicious RCU usage",
    "sleeping function called from invalid context",
    "ODEBUG",
    "list_add corruption",
    "list_del corruption",
    "refcount_t:",
    "blocked for more than",
    "soft lockup",
    "unreferenced object",
    "INFO: task",
    "Bad page",
];

/// A VM_FAULT_OOM from a fault handler: the fault is retried rather than failed.
pub const FAULT_OOM: &str = "Huh VM_FAULT_OOM leaked out";

pub struct Monitor<'a> {
    pub w: &'a World,
    pub a: &'a Args,
    pub kmsg: Kmsg,
    pub rng: Rng,
    pub engines: Vec<(String, FailNth)>,
    pub eng_armed: u64,
    pub eng_injected: u64,
    pub checks: u64,
    pub kernel_reports: u64,
    pub fault_oom: u64,
    pub remove_res: BTreeMap<(bool, i32), u64>,
    pub remove_wait_max: Duration,
    /// Per instance being removed: (a write of remove succeeded, writers finished).
    pub remove_ok: HashMap<(usize, u64), (bool, u32)>,
    pub released: HashMap<(usize, u64), Instant>,
    pub last_progress: Instant,
}

impl Monitor<'_> {
    pub fn tick(&mut self) {
        self.scan_kmsg();
        self.release_removing(Duration::from_millis(200));
        self.reap();
        self.watchdog();
        if self.w.fail_inject {
            self.arm_engines();
        }
        if self.last_progress.elapsed() >= Duration::from_secs(15) {
            self.last_progress = Instant::now();
            let n = self
                .w
                .ops_started
                .load(Ordering::Relaxed)
                .min(self.w.ops_target);
            let s = self.w.start.elapsed().as_secs_f64();
            println!(
                "sysfuzz: {n} operations after {s:.0} s ({:.0}/s), {} checks, {} reports",
                n as f64 / s,
                self.checks,
                self.w.report_count()
            );
        }
    }

    pub fn scan_kmsg(&mut self) {
        let lines = self.kmsg.drain();
        let mut bad_at = None;
        for (i, l) in lines.iter().enumerate() {
            if l.contains(FAULT_OOM) {
                self.fault_oom += 1;
                if !self.w.fail_inject {
                    bad_at.get_or_insert(i);
                }
            } else if KERNEL_BAD.iter().any(|p| l.contains(p)) {
                bad_at.get_or_insert(i);
            }
        }
        if let Some(i) = bad_at {
            self.kernel_reports += 1;
            let from = i.saturating_sub(5);
            let excerpt: Vec<&str> = lines[from..].iter().take(70).map(|s| s.as_str()).collect();
            self.w.report(format!(
                "KERNEL: {}\n{}\nlast operations:{}",
                lines[i],
                excerpt.join("\n"),
                self.w.history()
            ));
            self.w.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Let go of every fd and mapping of instances being removed for longer than `hold`.
    fn release_removing(&mut self, hold: Duration) {
        for (i, s) in self.w.slots.iter().enumerate() {
            let (h, m) = {
                let mut st = s.lock();
                let SlotState::Live(l) = &mut *st else {
                    continue;
                };
                let Some(since) = l.removing else { continue };
                if since.elapsed() < hold {
                    continue;
                }
                self.released.entry((i, l.gen)).or_insert_with(Instant::now);
                (std::mem::take(&mut l.handles), std::mem::take(&mut l.maps))
            };
            drop(h);
            drop(m);
        }
    }

    /// Collect finished remover threads; a slot whose removal completed becomes empty.
    /// Two writers of `remove` may race: one removes the device, the other finds it gone
    /// (ENOENT/ENODEV); at least one must succeed.
    fn reap(&mut self) {
        let done: Vec<world::Remover> = {
            let mut rs = self.w.removers.lock().unwrap_or_else(|p| p.into_inner());
            let (fin, run): (Vec<_>, Vec<_>) = rs.drain(..).partition(|r| r.handle.is_finished());
            *rs = run;
            fin
        };
        let mut keys = Vec::new();
        for r in done {
            let res = match r.handle.join() {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => e.errno().unwrap_or(libc::EIO),
                Err(_) => libc::EIO,
            };
            *self.remove_res.entry((r.first, res)).or_default() += 1;
            self.remove_wait_max = self.remove_wait_max.max(r.started.elapsed());
            let key = (r.slot, r.gen);
            let e = self.remove_ok.entry(key).or_default();
            e.0 |= res == 0;
            e.1 += 1;
            if res != 0 && !matches!(res, libc::ENOENT | libc::ENODEV) {
                self.w.report(format!(
                    "remove of slot {} (gen {}) after {:.1} s: {}",
                    r.slot,
                    r.gen,
                    r.started.elapsed().as_secs_f64(),
                    code_name(res)
                ));
            }
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        for key in keys {
            // Every writer counted in the slot must have finished (one may still be
            // about to start: counted, not yet spawned).
            let mut st = self.w.slots[key.0].lock();
            let SlotState::Live(l) = &mut *st else {
                self.remove_ok.remove(&key);
                continue;
            };
            if l.gen != key.1 {
                self.remove_ok.remove(&key);
                continue;
            }
            let (ok, finished) = self.remove_ok.get(&key).copied().unwrap_or((false, 0));
            if finished < l.removers {
                continue;
            }
            self.remove_ok.remove(&key);
            self.released.remove(&key);
            if !ok || l.inst.exists() {
                self.w.report(format!(
                    "{}: every write of remove returned and it {}",
                    l.inst.uuid(),
                    if l.inst.exists() {
                        "still exists"
                    } else {
                        "is gone, but none succeeded"
                    }
                ));
            }
            if l.inst.exists() {
                l.removing = None;
                l.removers = 0;
            } else {
                *st = SlotState::Empty;
            }
        }
    }

    fn watchdog(&mut self) {
        let limit = self.a.op_timeout;
        for i in 0..self.w.threads.len() {
            let cur = self.w.thread(i).cur;
            if let Some((n, at)) = cur {
                if at.elapsed() > limit {
                    self.hang(&format!(
                        "thread {i}: {n} has run for {:.0} s",
                        at.elapsed().as_secs_f64()
                    ));
                }
            }
        }
        let stuck: Vec<(usize, u64)> = self
            .w
            .removers
            .lock()
            .map(|rs| rs.iter().map(|r| (r.slot, r.gen)).collect())
            .unwrap_or_default();
        for k in stuck {
            if let Some(t) = self.released.get(&k) {
                if t.elapsed() > limit {
                    self.hang(&format!(
                        "remove of slot {} blocked {:.0} s after every fd and mapping of it was closed",
                        k.0,
                        t.elapsed().as_secs_f64()
                    ));
                }
            }
        }
    }

    /// Report a hang with what the kernel says about blocked tasks, then power off: a
    /// task stuck in the kernel cannot be joined, and the rig must not wait for it.
    fn hang(&mut self, what: &str) -> ! {
        self.w.report(format!(
            "HANG: {what}; last operations:{}",
            self.w.history()
        ));
        for i in 0..self.w.threads.len() {
            let tid = self.w.thread(i).tid;
            if let Ok(s) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stack")) {
                println!("sysfuzz: thread {i} (tid {tid}) kernel stack:\n{s}");
            }
        }
        let _ = std::fs::write("/proc/sysrq-trigger", "w");
        std::thread::sleep(Duration::from_secs(2));
        for l in self.kmsg.drain() {
            println!("sysfuzz: dmesg: {l}");
        }
        println!("sysfuzz: FAIL: hang ({what}); powering the guest off");
        // SAFETY: sync(2) has no arguments.
        unsafe { libc::sync() };
        let _ = std::fs::write("/proc/sysrq-trigger", "o");
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(1);
    }

    fn arm_engines(&mut self) {
        for (_, f) in &mut self.engines {
            if f.is_armed() {
                if f.left().ok() == Some(0) {
                    let _ = f.disarm();
                    self.eng_injected += 1;
                }
            } else if self.rng.chance(1, 4) && f.arm(self.rng.range(1, 3) as u32).is_ok() {
                self.eng_armed += 1;
            }
        }
    }

    pub fn disarm_engines(&mut self) {
        for (_, f) in &mut self.engines {
            if let Ok(true) = f.disarm() {
                self.eng_injected += 1;
            }
        }
    }

    /// Finish every pending removal (letting go of everything they wait for).
    pub fn drain_removals(&mut self) {
        let start = Instant::now();
        loop {
            self.release_removing(Duration::ZERO);
            self.reap();
            self.scan_kmsg();
            let left = self.w.removers.lock().map(|r| r.len()).unwrap_or(0);
            if left == 0 {
                return;
            }
            if start.elapsed() > self.a.op_timeout {
                self.hang("a remove did not complete after every fd and mapping was closed");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Park the threads, complete the removals, stop the engines, check the invariants.
    pub fn quiesce_and_check(&mut self) {
        self.w.pause.store(true, Ordering::Release);
        if !self.w.wait_parked(self.w.threads.len(), self.a.op_timeout) {
            self.hang("the threads did not reach a quiescent point");
        }
        self.disarm_engines();
        self.drain_removals();
        check::stop_engines(self.w);
        for p in check::invariants(self.w) {
            self.w.report(format!("invariant: {p}"));
        }
        self.checks += 1;
        self.w.resume();
    }
}
