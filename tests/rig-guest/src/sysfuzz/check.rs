//! The invariants checked at quiescent points, the canaries, and the teardown.
//!
//! At a quiescent point every fuzzer thread is parked between operations, every removal
//! has completed, and each open instance's engine is stopped (a device reset), so these
//! must hold exactly:
//! * the instances under each parent are exactly the fuzzer's live slots and its canary
//!   (a failed create left nothing behind, a completed remove left nothing either);
//! * pool accounting: `pool_free_mb` = `pool_mb` − Σ `vram_mb`, and every type's
//!   `available_instances` = `pool_free_mb` / its size (util::check_pool);
//! * `vram_pages` of each parent = Σ `vram_used_kb` / 4 of its instances;
//! * the canaries' VRAM pattern (through pread and through their mapping), config
//!   space, `vram_used_kb`, `jobs` and `cmds_failed` are unchanged;
//! * the module holds at least one reference per instance.

use std::collections::BTreeSet;
use std::ptr::NonNull;
use std::sync::Arc;

use vgpu_sysfs::handle::{Instance, Parent};
use vgpu_vfio::{Container, Group, REGION_OFFSET_SHIFT};

use super::life::uuid;
use super::ops::{errno, ioctl};
use super::world::{Canary, Handle, Map, SlotState, World, MIB, PAGE};
use crate::rng::Rng;
use crate::sys;
use crate::util::{check_pool, pattern_bytes};

const RESET: u64 = 0x3b00 + 111;

fn pread(fd: i32, pos: u64, n: usize) -> Result<Vec<u8>, String> {
    let mut v = vec![0u8; n];
    let mut done = 0;
    while done < n {
        // SAFETY: reads into the unfilled tail of a live Vec.
        let r = unsafe {
            libc::pread(
                fd,
                v[done..].as_mut_ptr() as *mut libc::c_void,
                n - done,
                (pos + done as u64) as i64,
            )
        };
        if r <= 0 {
            return Err(format!(
                "pread at {pos:#x}: {}",
                if r < 0 {
                    crate::util::errno_name(errno())
                } else {
                    "EOF".into()
                }
            ));
        }
        done += r as usize;
    }
    Ok(v)
}

/// Create the canary of `parent`: a 128M instance with a pattern in its first MiB, a
/// page each side of 64 MiB and its last 64 KiB, kept open and mapped all run long.
pub fn make_canary(parent: &Parent, pi: u32, seed: u64, rng: &mut Rng) -> Result<Canary, String> {
    let u = uuid(rng);
    let inst = parent
        .mdev_type("vgpu_shim-128M")
        .create(&u)
        .map_err(|e| format!("create canary on {}: {e}", parent.name()))?;
    let c = Container::new().map_err(|e| format!("canary container: {e}"))?;
    let g = Group::id_of(inst.path())
        .and_then(|id| Group::open(id, &c))
        .map_err(|e| format!("canary group: {e}"))?;
    let file = g
        .device_fd(&u.to_string())
        .map_err(|e| format!("canary fd: {e}"))?;
    let handle = Handle {
        file,
        _group: Arc::new(g),
    };
    let vram = 128 * MIB;
    let ranges = vec![
        (0, MIB),
        (64 * MIB - PAGE, 2 * PAGE),
        (vram - 64 * 1024, 64 * 1024),
    ];
    for &(off, len) in &ranges {
        let b = pattern_bytes(seed ^ 0xca9a, off, len as usize);
        // SAFETY: writes from a live Vec to our fd.
        let r = unsafe {
            libc::pwrite(
                handle.fd(),
                b.as_ptr() as *const libc::c_void,
                b.len(),
                off as i64,
            )
        };
        if r != b.len() as isize {
            return Err(format!("write canary pattern at {off:#x}: {r}"));
        }
    }
    // SAFETY: a new shared read-only mapping of all of BAR0 at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            vram as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            handle.fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("map canary: {}", std::io::Error::last_os_error()));
    }
    let map = Map::new(
        NonNull::new(p as *mut u8).ok_or("mmap NULL")?,
        vram,
        libc::PROT_READ,
        0,
        0,
    );
    let used_kb = inst.vram_used_kb().map_err(|e| e.to_string())?;
    let config = pread(handle.fd(), 7 << REGION_OFFSET_SHIFT, 256)?;
    Ok(Canary {
        inst,
        parent: pi,
        handle,
        ranges,
        used_kb,
        map,
        config,
        seed: seed ^ 0xca9a,
    })
}

/// The canary is intact.
pub fn check_canary(c: &Canary) -> Result<(), String> {
    let who = c.inst.uuid();
    for &(off, len) in &c.ranges {
        let want = pattern_bytes(c.seed, off, len as usize);
        let got = pread(c.handle.fd(), off, len as usize)?;
        if let Some(i) = crate::util::first_diff(&got, &want) {
            return Err(format!(
                "canary {who}: VRAM byte {:#x} changed (pread)",
                off + i as u64
            ));
        }
        for (i, w) in want.iter().enumerate() {
            // SAFETY: off + i < vram = the mapping's length; the pages exist (read-only).
            let v = unsafe { std::ptr::read_volatile(c.map.ptr().add(off as usize + i)) };
            if v != *w {
                return Err(format!(
                    "canary {who}: VRAM byte {:#x} changed (mapping)",
                    off + i as u64
                ));
            }
        }
    }
    let cfg = pread(c.handle.fd(), 7 << REGION_OFFSET_SHIFT, 256)?;
    if cfg != c.config {
        return Err(format!("canary {who}: config space changed"));
    }
    let used = c.inst.vram_used_kb().map_err(|e| e.to_string())?;
    let jobs = c.inst.jobs().map_err(|e| e.to_string())?;
    let failed = c.inst.cmds_failed().map_err(|e| e.to_string())?;
    if (used, jobs, failed) != (c.used_kb, 0, 0) {
        return Err(format!(
            "canary {who}: vram_used_kb {used} (was {}), jobs {jobs}, cmds_failed {failed}",
            c.used_kb
        ));
    }
    Ok(())
}

/// Stop the engine of every open fuzzed instance, so page counts hold still.
pub fn stop_engines(w: &World) {
    for s in &w.slots {
        let h = match &*s.lock() {
            SlotState::Live(l) => l.handles.first().cloned(),
            _ => None,
        };
        if let Some(h) = h {
            let _ = ioctl(h.fd(), RESET, 0);
        }
    }
}

/// Every invariant of the file comment; returns the problems found.
pub fn invariants(w: &World) -> Vec<String> {
    let mut bad = Vec::new();
    let mut total = 0;
    for (pi, p) in w.parents.iter().enumerate() {
        let mut want: BTreeSet<String> = BTreeSet::new();
        for s in &w.slots {
            if let SlotState::Live(l) = &*s.lock() {
                if l.parent as usize == pi {
                    want.insert(l.inst.uuid().to_string());
                }
            }
        }
        for c in w.canaries.iter().filter(|c| c.parent as usize == pi) {
            want.insert(c.inst.uuid().to_string());
        }
        let insts: Vec<Instance> = match p.instances() {
            Ok(v) => v,
            Err(e) => {
                bad.push(format!("list instances of {}: {e}", p.name()));
                continue;
            }
        };
        total += insts.len();
        let have: BTreeSet<String> = insts.iter().map(|i| i.uuid().to_string()).collect();
        if have != want {
            bad.push(format!(
                "{}: instances in sysfs but not the fuzzer's: {:?}; the fuzzer's but missing: {:?}",
                p.name(),
                have.difference(&want).collect::<Vec<_>>(),
                want.difference(&have).collect::<Vec<_>>()
            ));
        }
        if let Err(f) = check_pool(p, "quiescent") {
            bad.push(f.0);
        }
        // vram_pages against the instances' vram_used_kb (read twice around the sum).
        let mut ok = false;
        let mut last = String::new();
        for _ in 0..5 {
            let a = p.vram_pages().unwrap_or(u64::MAX);
            let sum: u64 = insts
                .iter()
                .map(|i| i.vram_used_kb().unwrap_or(0) / 4)
                .sum();
            let b = p.vram_pages().unwrap_or(u64::MAX);
            if a == b && a == sum {
                ok = true;
                break;
            }
            last = format!(
                "{}: vram_pages {a} then {b}, Σ vram_used_kb/4 = {sum}",
                p.name()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !ok {
            bad.push(last);
        }
    }
    for c in &w.canaries {
        if let Err(e) = check_canary(c) {
            bad.push(e);
        }
    }
    if let Some(refs) = sys::module_refcnt(sys::MODULE) {
        if refs < total as u64 {
            bad.push(format!(
                "{} refcnt {refs} with {total} instances",
                sys::MODULE
            ));
        }
    }
    bad
}
