//! Lifecycle operations: create instances on either parent (admission and ENOSPC),
//! remove them while they are open (the write blocks in a remover thread until other
//! threads let go of every fd and mapping), open and close device fds, cycle the VFIO
//! group and container on their own, and try to unload the module (refused while
//! instances exist: the canaries always do).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::Instant;

use vgpu_sysfs::handle::Instance;
use vgpu_sysfs::Uuid;
use vgpu_vfio::abi;
use vgpu_vfio::{Container, Group};

use super::ops::*;
use super::world::{Handle, Live, Map, Remover, SlotState, MIB};
use crate::sys;

const GROUP_UNSET_CONTAINER: u64 = 0x3b00 + 105;
const GROUP_GET_STATUS: u64 = 0x3b00 + 103;
const GROUP_GET_DEVICE_FD: u64 = 0x3b00 + 106;
const GET_API_VERSION: u64 = 0x3b00 + 100;
const CHECK_EXTENSION: u64 = 0x3b00 + 101;
const SET_IOMMU: u64 = 0x3b00 + 102;

/// Device fds a slot keeps at most.
const MAX_HANDLES: usize = 4;

/// write(2) of prepared bytes on an already open file: no allocation in between, so it
/// can run inside the fault-injection window.
pub fn raw_write(f: &File, b: &[u8]) -> Result<usize, i32> {
    // SAFETY: writes b.len() bytes from a live slice to our fd.
    let r = unsafe { libc::write(f.as_raw_fd(), b.as_ptr() as *const libc::c_void, b.len()) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

/// A uuid from the thread's generator (deterministic per seed).
pub fn uuid(rng: &mut crate::rng::Rng) -> Uuid {
    let mut b = [0u8; 16];
    for c in b.chunks_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    uuid::Builder::from_random_bytes(b).into_uuid()
}

pub fn create(th: &mut Th) -> i32 {
    let slot = th.any_slot();
    {
        let mut st = th.w.slots[slot].lock();
        if !matches!(*st, SlotState::Empty) {
            return SKIP;
        }
        *st = SlotState::Creating;
    }
    let pi = th.rng.below(th.w.parents.len() as u64) as u32;
    let ty = match th.rng.below(100) {
        0..=59 => &abi::TYPES[0],
        60..=84 => &abi::TYPES[1],
        85..=92 => &abi::TYPES[2],
        93..=96 => &abi::TYPES[3],
        97..=98 => &abi::TYPES[4],
        _ => &abi::TYPES[5],
    };
    let u = uuid(&mut th.rng);
    let text = u.to_string();
    th.note(slot as i64, u64::from(pi), ty.vram_mb, 0);
    let path = th.w.parents[pi as usize]
        .mdev_type(ty.id)
        .path()
        .join("create");
    let r = match OpenOptions::new().write(true).open(&path) {
        Ok(f) => {
            // Only up to the module's own allocations (the page arrays): see
            // faults::calibrate_create for why not in VFIO's registration after them.
            // And not for the big types: their page arrays (kvcalloc of 2-8 MiB) may
            // come from vmalloc, and a vmalloc failing on an injected failure prints the
            // allocator's warning with a stack trace (warn_alloc), which the rig's
            // verdict (rightly, outside fault injection) takes for a kernel problem.
            if ty.vram_mb <= 512 {
                th.inject_begin_upto(th.w.create_inject_max);
            }
            let r = raw_write(&f, text.as_bytes());
            th.inject_end();
            r
        }
        Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
    };
    let c = code(&r);
    let inst = Instance::new(u);
    // Checked while the slot is still ours alone: once published, another thread may
    // remove the instance at any time.
    let exists = inst.exists();
    let mut st = th.w.slots[slot].lock();
    if c == 0 {
        *st = SlotState::Live(Live {
            inst: inst.clone(),
            parent: pi,
            vram: ty.vram_mb * MIB,
            disp: abi::display_region_size(ty.vram_mb * MIB),
            gen: th
                .w
                .next_gen
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            group: std::sync::Weak::new(),
            handles: Vec::new(),
            maps: Vec::new(),
            removing: None,
            removers: 0,
        });
        drop(st);
        if !exists {
            th.mismatch(format!(
                "created {u} but {} is missing",
                inst.path().display()
            ));
        }
    } else {
        *st = SlotState::Empty;
        drop(st);
        // A failed create leaves nothing behind (checked again at every quiescent point).
        if exists {
            th.mismatch(format!(
                "create of {u} failed ({}) but the device exists",
                code_name(c)
            ));
        }
        if c != libc::ENOSPC && !(th.injected && c == libc::ENOMEM) {
            th.mismatch(format!("create {} on parent {pi}: {}", ty.id, code_name(c)));
        }
    }
    c
}

pub fn remove(th: &mut Th) -> i32 {
    let slot = th.any_slot();
    let mut drop_h: Vec<Arc<Handle>> = Vec::new();
    let mut drop_m: Vec<Arc<Map>> = Vec::new();
    let (inst, gen, first) = {
        let mut st = th.w.slots[slot].lock();
        let SlotState::Live(l) = &mut *st else {
            return SKIP;
        };
        // A second writer of `remove` blocks as the first does: at most two.
        if l.removers >= 2 {
            return SKIP;
        }
        let first = l.removers == 0;
        l.removers += 1;
        l.removing.get_or_insert_with(Instant::now);
        if th.rng.chance(1, 4) {
            drop_h.append(&mut l.handles);
            drop_m.append(&mut l.maps);
        }
        (l.inst.clone(), l.gen, first)
    };
    th.note(slot as i64, gen, 0, 0);
    let i2 = inst.clone();
    let spawned = std::thread::Builder::new()
        .name("sysfuzz-remove".into())
        .spawn(move || i2.remove());
    drop(drop_h);
    drop(drop_m);
    match spawned {
        Ok(handle) => {
            th.w.removers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Remover {
                    first,
                    slot,
                    gen,
                    started: Instant::now(),
                    handle,
                });
            0
        }
        Err(e) => {
            th.mismatch(format!("spawn a remover: {e}"));
            libc::EAGAIN
        }
    }
}

pub fn open(th: &mut Th) -> i32 {
    let slot = th.any_slot();
    let (inst, gen, group) = {
        let st = th.w.slots[slot].lock();
        let SlotState::Live(l) = &*st else {
            return SKIP;
        };
        if l.removing.is_some() || l.handles.len() >= MAX_HANDLES {
            return SKIP;
        }
        (l.inst.clone(), l.gen, l.group.upgrade())
    };
    th.note(slot as i64, gen, u64::from(group.is_some()), 0);
    let group = match group {
        Some(g) => g,
        None => {
            let r = Container::new().and_then(|c| {
                let id = Group::id_of(inst.path())?;
                Group::open(id, &c)
            });
            match r {
                Ok(g) => Arc::new(g),
                Err(e) => {
                    let c = e.errno().unwrap_or(libc::EIO);
                    // Busy: another thread holds the group (its own open, a group cycle).
                    // Gone: the instance is being removed since.
                    if c != libc::EBUSY && th.still_live(slot, gen) {
                        th.mismatch(format!("open the group of {}: {e}", inst.uuid()));
                    }
                    return c;
                }
            }
        }
    };
    let Ok(name) = CString::new(inst.uuid().to_string()) else {
        return libc::EINVAL;
    };
    th.inject_begin();
    let r = ioctl(group.as_raw_fd(), GROUP_GET_DEVICE_FD, name.as_ptr() as u64);
    th.inject_end();
    let fd = match r {
        Ok(fd) => fd as i32,
        Err(c) => {
            if !(th.injected && c == libc::ENOMEM) && th.still_live(slot, gen) {
                th.mismatch(format!(
                    "VFIO_GROUP_GET_DEVICE_FD {}: {}",
                    inst.uuid(),
                    code_name(c)
                ));
            }
            return c;
        }
    };
    // SAFETY: a fresh fd the kernel just returned; we own it.
    let file = unsafe { File::from_raw_fd(fd) };
    let h = Arc::new(Handle {
        file,
        _group: group.clone(),
    });
    let mut spill = None;
    {
        let mut st = th.w.slots[slot].lock();
        match &mut *st {
            SlotState::Live(l) if l.gen == gen && l.removing.is_none() => {
                l.group = Arc::downgrade(&group);
                l.handles.push(h);
            }
            _ => spill = Some(h),
        }
    }
    drop(spill);
    0
}

pub fn close(th: &mut Th) -> i32 {
    let slot = th.any_slot();
    let (h, m) = {
        let mut st = th.w.slots[slot].lock();
        let SlotState::Live(l) = &mut *st else {
            return SKIP;
        };
        th.note(slot as i64, l.handles.len() as u64, l.maps.len() as u64, 0);
        if (th.rng.chance(1, 2) || l.maps.is_empty()) && !l.handles.is_empty() {
            let i = th.rng.below(l.handles.len() as u64) as usize;
            (Some(l.handles.swap_remove(i)), None)
        } else if !l.maps.is_empty() {
            let i = th.rng.below(l.maps.len() as u64) as usize;
            (None, Some(l.maps.swap_remove(i)))
        } else {
            return SKIP;
        }
    };
    drop(h);
    drop(m);
    0
}

/// Open a slot's group on its own (with a fresh container), get device fds by good and
/// bad names, unset the container and close it: while the slot's own fds hold the group,
/// this is EBUSY.
pub fn group_cycle(th: &mut Th) -> i32 {
    let slot = th.any_slot();
    let (inst, gen) = {
        let st = th.w.slots[slot].lock();
        let SlotState::Live(l) = &*st else {
            return SKIP;
        };
        if l.removing.is_some() {
            return SKIP;
        }
        (l.inst.clone(), l.gen)
    };
    th.note(slot as i64, gen, 0, 0);
    let g = match Container::new().and_then(|c| Group::open(Group::id_of(inst.path())?, &c)) {
        Ok(g) => g,
        Err(e) => {
            let c = e.errno().unwrap_or(libc::EIO);
            if c != libc::EBUSY && th.still_live(slot, gen) {
                th.mismatch(format!("open the group of {}: {e}", inst.uuid()));
            }
            return c;
        }
    };
    let bad = match th.rng.below(3) {
        0 => String::new(),
        1 => uuid(&mut th.rng).to_string(),
        _ => format!("{} extra", inst.uuid()),
    };
    let mut c = 0;
    for (name, good) in [(bad, false), (inst.uuid().to_string(), true)] {
        let Ok(cs) = CString::new(name.clone()) else {
            continue;
        };
        match ioctl(g.as_raw_fd(), GROUP_GET_DEVICE_FD, cs.as_ptr() as u64) {
            Ok(fd) => {
                // SAFETY: a fresh fd from the kernel; closed right away.
                drop(unsafe { File::from_raw_fd(fd as i32) });
                if !good {
                    th.mismatch(format!("VFIO_GROUP_GET_DEVICE_FD({name:?}) succeeded"));
                }
            }
            Err(e) => {
                c = e;
                if (good || !matches!(e, libc::ENODEV | libc::EINVAL)) && th.still_live(slot, gen) {
                    th.mismatch(format!(
                        "VFIO_GROUP_GET_DEVICE_FD({name:?}): {}",
                        code_name(e)
                    ));
                }
            }
        }
    }
    let u = code(&ioctl(g.as_raw_fd(), GROUP_UNSET_CONTAINER, 0));
    // EINVAL (no container) also when a remove started meanwhile: VFIO detaches the
    // container of a group whose last device goes.
    if u != 0 && th.still_live(slot, gen) {
        th.mismatch(format!(
            "VFIO_GROUP_UNSET_CONTAINER with no device open: {}",
            code_name(u)
        ));
    }
    // GET_STATUS: viable, no container any more.
    let st = th.scratch.put(&[8, 0, 0, 0, 0, 0, 0, 0]);
    if ioctl(g.as_raw_fd(), GROUP_GET_STATUS, st as u64).is_ok() && th.still_live(slot, gen) {
        let b = th.scratch.get(st, 8);
        let flags = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if flags != 1 {
            th.mismatch(format!(
                "group status after unset: flags {flags:#x}, want 1 (viable)"
            ));
        }
    }
    drop(g);
    if c == libc::ENODEV || c == libc::EINVAL {
        0
    } else {
        c
    }
}

pub fn container_cycle(th: &mut Th) -> i32 {
    th.note(-1, 0, 0, 0);
    let c = match Container::new() {
        Ok(c) => c,
        Err(e) => {
            th.mismatch(format!("open the VFIO container: {e}"));
            return e.errno().unwrap_or(libc::EIO);
        }
    };
    let fd = c.as_raw_fd();
    let v = ioctl(fd, GET_API_VERSION, 0);
    if v != Ok(0) {
        th.mismatch(format!("VFIO_GET_API_VERSION: {v:?}"));
    }
    let r = u64::from(th.rng.next_u32());
    let ext = *th.rng.pick(&[1u64, 3, 8, 0, 100, r]);
    let e = ioctl(fd, CHECK_EXTENSION, ext);
    if !matches!(e, Ok(0) | Ok(1)) {
        th.mismatch(format!("VFIO_CHECK_EXTENSION({ext}): {e:?}"));
    }
    // No group attached: setting an IOMMU is EINVAL.
    let s = code(&ioctl(fd, SET_IOMMU, *th.rng.pick(&[1u64, 3, 0, 99])));
    if s != libc::EINVAL {
        th.mismatch(format!(
            "VFIO_SET_IOMMU on an empty container: {}",
            code_name(s)
        ));
    }
    0
}

pub fn rmmod(th: &mut Th) -> i32 {
    th.note(-1, 0, 0, 0);
    let c = match sys::unload_module(sys::MODULE) {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
    };
    if !matches!(c, libc::EAGAIN | libc::EBUSY) {
        th.mismatch(format!(
            "delete_module({}) while instances exist: {}",
            sys::MODULE,
            code_name(c)
        ));
        if c == 0 {
            th.w.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    c
}
