//! Mappings: mmap of random ranges of every region, munmap (whole or the first page),
//! mprotect, touching mapped pages through the fault-recovering probes (including after
//! the device was reset or its fds were closed by another thread: a mapping keeps the
//! device open), and pread/pwrite whose user buffer is itself a VRAM or display mapping
//! (the copy faults on a vgpu page while the module serves the syscall).

use std::ptr::NonNull;
use std::sync::Arc;

use vgpu_vfio::REGION_OFFSET_SHIFT;

use super::model::{self, Access};
use super::ops::*;
use super::probe::{self, Touch};
use super::region::judge_rw;
use super::world::{Map, SlotState, Zones, MIB, PAGE};

/// Mappings a slot keeps at most.
const MAX_MAPS: usize = 12;

/// A mapping of a live slot, with the zones of its instance.
fn pick_map(th: &mut Th) -> Option<(usize, Arc<Map>, Zones)> {
    for _ in 0..4 {
        let slot = th.any_slot();
        let st = th.w.slots[slot].lock();
        let SlotState::Live(l) = &*st else { continue };
        if l.maps.is_empty() {
            continue;
        }
        let i = th.rng.below(l.maps.len() as u64) as usize;
        return Some((slot, l.maps[i].clone(), Zones { size: l.vram }));
    }
    None
}

pub fn mmap(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    if t.removing {
        return SKIP;
    }
    let rng = &mut th.rng;
    let index = match rng.below(10) {
        0..=5 => 0,
        6..=7 => 9,
        _ => *rng.pick(&[1u32, 2, 7, 8, 10, 200]),
    };
    let size = match index {
        0 => t.vram,
        9 => t.disp,
        _ => 4 * PAGE,
    };
    let (off, len) = if index == 0 {
        let z = t.zones();
        let (o, max) = z.pick(rng);
        let o = o & !(PAGE - 1);
        let len = match rng.below(8) {
            0 => PAGE,
            1 => 2 * PAGE,
            2 => 16 * PAGE,
            3 => MIB,
            4 => t.vram,
            5 => size - o,
            6 => size - o + PAGE,
            _ => max.div_ceil(PAGE) * PAGE,
        };
        // Whole-region mappings start at 0.
        let o = if len == t.vram { 0 } else { o };
        (o, len)
    } else {
        let o = rng.below(size / PAGE + 2) * PAGE;
        let len = *rng.pick(&[PAGE, 2 * PAGE, size, size.saturating_sub(o), size + PAGE]);
        (o, len)
    };
    let (off, len) = match rng.below(20) {
        0 => (off, 0),
        1 => (off + 1 + rng.below(PAGE - 1), len),
        2 => (off, 1 << 47),
        _ => (off, len),
    };
    let prot = *rng.pick(&[
        libc::PROT_READ,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::PROT_WRITE,
        libc::PROT_NONE,
        libc::PROT_READ | libc::PROT_EXEC,
    ]);
    let shared = rng.chance(7, 8);
    let flags = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    let pos = (u64::from(index) << REGION_OFFSET_SHIFT) | off;
    th.note(t.slot as i64, u64::from(index), off, len);
    th.inject_begin();
    // SAFETY: a new mapping at an address the kernel picks (no MAP_FIXED): it cannot
    // overlap memory Rust uses.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            prot,
            flags,
            t.h.fd(),
            pos as i64,
        )
    };
    th.inject_end();
    let got = if p == libc::MAP_FAILED { errno() } else { 0 };
    let want = if len == 0 || off % PAGE != 0 {
        libc::EINVAL
    } else if len >= 1 << 47 {
        libc::ENOMEM
    } else if !shared {
        libc::EINVAL
    } else {
        let pages = len.div_ceil(PAGE);
        let (npages, pgoff) = (size / PAGE, off / PAGE);
        let fits = pgoff < npages && pages <= npages - pgoff;
        match index {
            9 if prot & libc::PROT_WRITE != 0 => libc::EINVAL,
            0 | 9 if fits => 0,
            _ => libc::EINVAL,
        }
    };
    let exec_denied = prot & libc::PROT_EXEC != 0 && got == libc::EPERM;
    // A private writable mapping is charged to the commit limit before the driver sees it.
    let uncommitted = !shared && prot & libc::PROT_WRITE != 0 && got == libc::ENOMEM;
    if !(got == want || exec_denied || uncommitted || th.injected && got == libc::ENOMEM) {
        th.mismatch(format!(
            "mmap region {index} offset {off:#x} len {len:#x} prot {prot} {}: {}, want {}",
            if shared { "shared" } else { "private" },
            code_name(got),
            code_name(want)
        ));
    }
    if got != 0 {
        return got;
    }
    let Some(ptr) = NonNull::new(p as *mut u8) else {
        return libc::EFAULT;
    };
    let map = Arc::new(Map::new(ptr, len.div_ceil(PAGE) * PAGE, prot, index, off));
    let mut spill = None;
    {
        let mut st = th.w.slots[t.slot].lock();
        match &mut *st {
            SlotState::Live(l) if l.gen == t.gen && l.removing.is_none() => {
                if l.maps.len() >= MAX_MAPS {
                    let i = th.rng.below(l.maps.len() as u64) as usize;
                    spill = Some(l.maps.swap_remove(i));
                }
                l.maps.push(map);
            }
            _ => spill = Some(map),
        }
    }
    drop(spill);
    0
}

/// Take a mapping out of its slot, for an operation that must own it alone.
fn take_map(th: &mut Th) -> Option<(usize, u64, Arc<Map>)> {
    for _ in 0..4 {
        let slot = th.any_slot();
        let mut st = th.w.slots[slot].lock();
        let SlotState::Live(l) = &mut *st else {
            continue;
        };
        if l.maps.is_empty() {
            continue;
        }
        let i = th.rng.below(l.maps.len() as u64) as usize;
        return Some((slot, l.gen, l.maps.swap_remove(i)));
    }
    None
}

/// Put a mapping back (or drop it if its instance changed or is going away).
fn put_back(th: &Th, slot: usize, gen: u64, m: Arc<Map>) {
    let mut st = th.w.slots[slot].lock();
    if let SlotState::Live(l) = &mut *st {
        if l.gen == gen && l.removing.is_none() && l.maps.len() < MAX_MAPS {
            l.maps.push(m);
            return;
        }
    }
    drop(st);
    drop(m);
}

pub fn munmap(th: &mut Th) -> i32 {
    let Some((slot, gen, m)) = take_map(th) else {
        return SKIP;
    };
    th.note(slot as i64, u64::from(m.index), m.off, m.len);
    if th.rng.chance(1, 3) {
        // Unmap only the first page (splits nothing: the rest stays one mapping).
        match Arc::try_unwrap(m) {
            Ok(mut own) => {
                if own.drop_first_page() {
                    put_back(th, slot, gen, Arc::new(own));
                    return 0;
                }
                drop(own);
                return 0;
            }
            Err(shared) => {
                put_back(th, slot, gen, shared);
                return SKIP;
            }
        }
    }
    drop(m);
    0
}

pub fn mprotect(th: &mut Th) -> i32 {
    let Some((slot, gen, m)) = take_map(th) else {
        return SKIP;
    };
    let mut own = match Arc::try_unwrap(m) {
        Ok(o) => o,
        Err(shared) => {
            put_back(th, slot, gen, shared);
            return SKIP;
        }
    };
    let prot = *th.rng.pick(&[
        libc::PROT_READ,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::PROT_NONE,
        libc::PROT_WRITE,
    ]);
    th.note(slot as i64, u64::from(own.index), own.off, prot as u64);
    let got = match own.protect(prot) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    };
    // The display region's mappings lost VM_MAYWRITE: never writable.
    let want = if own.index == 9 && prot & libc::PROT_WRITE != 0 {
        libc::EACCES
    } else {
        0
    };
    if got != want {
        th.mismatch(format!(
            "mprotect({prot}) of a region {} mapping: {}, want {}",
            own.index,
            code_name(got),
            code_name(want)
        ));
    }
    put_back(th, slot, gen, Arc::new(own));
    got
}

/// An offset in mapping `m` whose page the fuzzer may allocate, if any.
fn touch_offset(th: &mut Th, m: &Map, z: &Zones) -> Option<u64> {
    let mut cands = vec![0, m.len - PAGE];
    if m.index == 0 {
        let (o, _) = z.pick(&mut th.rng);
        if o >= m.off && o < m.off + m.len {
            cands.push(o - m.off);
        }
    } else {
        cands.push(th.rng.below(m.len));
    }
    let c = cands[th.rng.below(cands.len() as u64) as usize];
    let c = (c & !(PAGE - 1)) + th.rng.below(PAGE);
    if m.index == 0 && !z.contains(m.off + c) {
        return None;
    }
    Some(c)
}

pub fn touch(th: &mut Th) -> i32 {
    let Some((slot, m, z)) = pick_map(th) else {
        return SKIP;
    };
    let Some(off) = touch_offset(th, &m, &z) else {
        return SKIP;
    };
    let write = th.rng.chance(1, 2);
    th.note(
        slot as i64,
        u64::from(m.index),
        m.off + off,
        u64::from(write),
    );
    // SAFETY: off < m.len, so the address is inside the mapping, which `m` keeps mapped;
    // faults are recovered by the probe and no Rust reference to the memory exists.
    let p = unsafe { m.ptr().add(off as usize) };
    let readable = m.prot != libc::PROT_NONE;
    let allowed = if write {
        m.prot & libc::PROT_WRITE != 0
    } else {
        readable
    };
    // Allocation failures only where the access should work (a SIGSEGV is the kernel's
    // answer to the protection, whatever the allocator does).
    if allowed {
        th.inject_begin();
    }
    // SAFETY: as above.
    let r = unsafe {
        if write {
            probe::store(p, th.rng.next_u32() as u8)
        } else {
            probe::load(p)
        }
    };
    th.inject_end();
    let got = match r {
        Touch::Ok(_) => 0,
        Touch::Bus => SIGBUS,
        Touch::Segv => SIGSEGV,
    };
    let want = if allowed { 0 } else { SIGSEGV };
    // A VRAM page that cannot be allocated is a SIGBUS (or a retried fault).
    if got != want && !(th.injected && got == SIGBUS && allowed) {
        th.mismatch(format!(
            "{} of a region {} mapping (prot {}) at {:#x}: {}, want {}",
            if write { "store" } else { "load" },
            m.index,
            m.prot,
            m.off + off,
            code_name(got),
            code_name(want)
        ));
    }
    got
}

pub fn rw_via_mmap(th: &mut Th) -> i32 {
    let Some((mslot, m, z)) = pick_map(th) else {
        return SKIP;
    };
    let Some(t) = th.target() else { return SKIP };
    // The buffer: the start of the mapping, as far as its pages stay in the zones.
    let mut blen = PAGE.min(m.len);
    while blen < m.len && blen < 4 * PAGE && (m.index != 0 || z.contains(m.off + blen)) {
        blen += PAGE;
    }
    if m.index == 0 && !z.contains(m.off) {
        return SKIP;
    }
    let write = th.rng.chance(1, 2);
    let (index, off, count) = match th.rng.below(4) {
        0 | 1 => {
            let (o, max) = t.zones().pick(&mut th.rng);
            (0, o, th.rng.range(1, blen).min(max))
        }
        2 => (7, 0, 256.min(blen)),
        _ => (9, th.rng.below(t.disp), th.rng.range(1, blen)),
    };
    let pos = (u64::from(index) << REGION_OFFSET_SHIFT) | off;
    th.note(
        t.slot as i64,
        u64::from(index) << 32 | mslot as u64,
        off,
        count,
    );
    th.inject_begin();
    // SAFETY: the buffer is inside mapping `m` (count ≤ blen ≤ m.len), which stays mapped
    // while `m` lives; the kernel copies into or out of it (or fails with EFAULT).
    let r = unsafe {
        if write {
            libc::pwrite(
                t.h.fd(),
                m.ptr() as *const libc::c_void,
                count as usize,
                pos as i64,
            )
        } else {
            libc::pread(
                t.h.fd(),
                m.ptr() as *mut libc::c_void,
                count as usize,
                pos as i64,
            )
        }
    };
    th.inject_end();
    let got = if r < 0 { Err(errno()) } else { Ok(r as u64) };
    // The kernel writes the buffer on pread (needs PROT_WRITE), reads it on pwrite (any
    // access but PROT_NONE on x86).
    let usable = if write {
        m.prot != libc::PROT_NONE
    } else {
        m.prot & libc::PROT_WRITE != 0
    };
    let want = model::rw_want(&Access {
        write,
        index,
        off,
        count,
        buf: m.ptr() as u64,
        cap: if usable { count } else { 0 },
        vram: t.vram,
        disp: t.disp,
    });
    judge_rw(th, &want, &got, index, off, count)
}
