//! Device-fd operations: the VFIO ioctls with random flags, indexes and argsz, pread and
//! pwrite on every region at edge offsets and sizes, config space and BAR2 writes, and
//! engine register writes and small command batches. Each checks what the ABI promises
//! and concurrency cannot change: the errno of invalid requests, what valid ones return,
//! and register bits that never change.

use vgpu_vfio::abi::{self, dispi, info};
use vgpu_vfio::{Cmd, RawCmd, REGION_OFFSET_MASK, REGION_OFFSET_SHIFT};

use super::model::{self, cfg_fixed, mmio_check, Access, FdKind};
use super::ops::*;
use super::world::{Scratch, LOW_GEN, MIB};
use crate::rng::Rng;

const VFIO: u64 = 0x3b00;
const GET_INFO: u64 = VFIO + 107;
const GET_REGION_INFO: u64 = VFIO + 108;
const GET_IRQ_INFO: u64 = VFIO + 109;
const SET_IRQS: u64 = VFIO + 110;
const RESET: u64 = VFIO + 111;
const QUERY_GFX_PLANE: u64 = VFIO + 114;
const GET_GFX_DMABUF: u64 = VFIO + 115;
const DEVICE_FEATURE: u64 = VFIO + 117;

fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32_at(b, o)) | u64::from(u32_at(b, o + 4)) << 32
}

/// A header of `bufsz` bytes (at the end of scratch) starting with the u32 `words`.
fn put_words(th: &Th, words: &[u32], bufsz: usize) -> *mut u8 {
    let mut b = vec![0u8; bufsz];
    for (i, w) in words.iter().enumerate() {
        if let Some(s) = b.get_mut(4 * i..4 * i + 4) {
            s.copy_from_slice(&w.to_le_bytes());
        }
    }
    th.scratch.put(&b)
}

/// The outcome is `want`, or (with an injected allocation failure) ENOMEM.
fn expect(th: &Th, what: &str, got: i32, want: i32) -> bool {
    if got == want || (th.injected && got == libc::ENOMEM) {
        return true;
    }
    th.mismatch(format!(
        "{what}: {}, want {}",
        code_name(got),
        code_name(want)
    ));
    false
}

pub fn get_info(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let bufsz = *th.rng.pick(&[8usize, 16, 16, 24]);
    let argsz = *th.rng.pick(&[0u32, 8, 15, 16, 16, 24, u32::MAX]);
    th.note(t.slot as i64, u64::from(argsz), bufsz as u64, 0);
    let p = put_words(th, &[argsz], bufsz);
    let r = ioctl(t.h.fd(), GET_INFO, p as u64);
    let want = if bufsz < 16 {
        libc::EFAULT
    } else if argsz < 16 {
        libc::EINVAL
    } else {
        0
    };
    let c = code(&r);
    if expect(th, "VFIO_DEVICE_GET_INFO", c, want) && c == 0 {
        let b = th.scratch.get(p, 16);
        let got = (u32_at(&b, 4), u32_at(&b, 8), u32_at(&b, 12));
        if got != (3, 10, 5) {
            th.mismatch(format!(
                "GET_INFO flags/regions/irqs {got:?}, want (3, 10, 5)"
            ));
        }
    }
    c
}

pub fn region_info(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let bufsz = *th.rng.pick(&[16usize, 32, 40, 48, 48, 64]);
    let argsz = *th
        .rng
        .pick(&[0u32, 16, 31, 32, 32, 40, 47, 48, 48, 64, 4096, u32::MAX]);
    let index = if th.rng.chance(7, 8) {
        th.rng.below(12) as u32
    } else {
        th.rng.next_u32()
    };
    th.note(
        t.slot as i64,
        u64::from(index),
        u64::from(argsz),
        bufsz as u64,
    );
    let p = put_words(th, &[argsz, 0, index], bufsz);
    th.inject_begin();
    let r = ioctl(t.h.fd(), GET_REGION_INFO, p as u64);
    th.inject_end();
    let want = model::region_info_want(bufsz, argsz, index);
    let c = code(&r);
    if !expect(th, "VFIO_DEVICE_GET_REGION_INFO", c, want.err) || c != 0 {
        return c;
    }
    let b = th.scratch.get(p, bufsz.min(64));
    let (size, flags) = match index {
        0 => (t.vram, 7),
        2 => (abi::MMIO_SIZE, 3),
        7 => (abi::CONFIG_SIZE, 3),
        9 => (t.disp, 0x1 | 0x4 | 0x8),
        _ => (0, 0),
    };
    let got = (
        u32_at(&b, 0),
        u32_at(&b, 4),
        u32_at(&b, 12),
        u64_at(&b, 16),
        u64_at(&b, 24),
    );
    let want = (
        want.argsz,
        flags,
        want.cap_offset,
        size,
        u64::from(index) << REGION_OFFSET_SHIFT,
    );
    if got != want {
        th.mismatch(format!(
            "region {index}: (argsz, flags, cap_offset, size, offset) {got:x?}, want {want:x?}"
        ));
    } else if want.2 == 32 {
        let cap = (
            u32_at(&b, 32),
            u32_at(&b, 36),
            u32_at(&b, 40),
            u32_at(&b, 44),
        );
        // id VFIO_REGION_INFO_CAP_TYPE (2), version 1, next 0.
        let wcap = (
            0x0001_0002,
            0,
            abi::DISPLAY_REGION_TYPE,
            abi::DISPLAY_REGION_SUBTYPE,
        );
        if cap != wcap {
            th.mismatch(format!("region 9 type capability {cap:x?}, want {wcap:x?}"));
        }
    }
    c
}

pub fn irq_info(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let bufsz = *th.rng.pick(&[8usize, 16, 16, 24]);
    let argsz = *th.rng.pick(&[0u32, 15, 16, 16, 32, u32::MAX]);
    let index = if th.rng.chance(7, 8) {
        th.rng.below(7) as u32
    } else {
        th.rng.next_u32()
    };
    th.note(
        t.slot as i64,
        u64::from(index),
        u64::from(argsz),
        bufsz as u64,
    );
    let p = put_words(th, &[argsz, 0, index], bufsz);
    let r = ioctl(t.h.fd(), GET_IRQ_INFO, p as u64);
    let want = if bufsz < 16 {
        libc::EFAULT
    } else if argsz < 16 || index >= 5 {
        libc::EINVAL
    } else {
        0
    };
    let c = code(&r);
    if expect(th, "VFIO_DEVICE_GET_IRQ_INFO", c, want) && c == 0 {
        let b = th.scratch.get(p, 16);
        let got = (u32_at(&b, 4), u32_at(&b, 12));
        let want = match index {
            0 => (3, 1),
            1 => (9, 1),
            4 => (1, 1),
            _ => (0, 0),
        };
        if got != want {
            th.mismatch(format!(
                "IRQ {index}: (flags, count) {got:?}, want {want:?}"
            ));
        }
    }
    c
}

pub fn set_irqs(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let rng = &mut th.rng;
    // Half well-formed requests (install, clear, fire, mask), half anything.
    let (flags, index, start, count) = if rng.chance(1, 2) {
        let index = *rng.pick(&[0u32, 1, 4]);
        match rng.below(5) {
            0 | 1 => (0x24, index, 0, 1),
            2 => (0x21, index, 0, rng.below(2) as u32),
            3 => (0x22, index, 0, 1),
            _ => (*rng.pick(&[0x09u32, 0x11, 0x0a, 0x12]), 0, 0, 1),
        }
    } else {
        let dtype = *rng.pick(&[1u32, 1, 2, 4, 4, 4, 0, 3, 5, 7]);
        let action = *rng.pick(&[0x20u32, 0x20, 0x20, 0x08, 0x10, 0, 0x18, 0x38]);
        let mut flags = dtype | action;
        if rng.chance(1, 20) {
            flags |= 1 << rng.range(6, 31);
        }
        let index = *rng.pick(&[0u32, 1, 1, 4, 4, 2, 3, 5, 7]);
        let start = *rng.pick(&[0u32, 0, 0, 0, 1, u32::MAX, 0x8000_0000]);
        let count = *rng.pick(&[0u32, 1, 1, 1, 1, 2, 3, 16, u32::MAX, 0x4000_0000]);
        (flags, index, start, count)
    };
    let dtype = flags & 7;
    let fk = *rng.pick(&[
        FdKind::Valid,
        FdKind::Valid,
        FdKind::Valid,
        FdKind::Clear,
        FdKind::Negative,
        FdKind::Huge,
        FdKind::NotEventfd,
        FdKind::Closed,
    ]);
    let fd = match fk {
        FdKind::Valid => th.efd(),
        FdKind::Clear => -1,
        FdKind::Negative => -2 - th.rng.below(1000) as i32,
        FdKind::Huge => 100_000 + th.rng.below(1000) as i32,
        FdKind::NotEventfd => t.h.fd(),
        FdKind::Closed => {
            use std::os::fd::AsRawFd;
            match vgpu_vfio::EventFd::new(0) {
                Ok(e) => e.as_raw_fd(), // closed when `e` drops at the end of this arm
                Err(_) => 100_001,
            }
        }
    };
    let bool_byte = th.rng.below(3) as u8;
    // Payload: up to 4 entries of the data type's size.
    let n = (count.min(4)) as usize;
    let mut data = Vec::new();
    match dtype {
        2 => data.extend((0..n).map(|_| bool_byte)),
        4 => {
            for _ in 0..n {
                data.extend_from_slice(&fd.to_ne_bytes());
            }
        }
        _ => {}
    }
    let exact = 20 + data.len() as u32;
    let argsz = *th.rng.pick(&[
        exact,
        exact,
        exact,
        0,
        19,
        20,
        exact.saturating_sub(1),
        u32::MAX,
    ]);
    let mut bytes = Vec::new();
    for v in [argsz, flags, index, start, count] {
        bytes.extend_from_slice(&v.to_ne_bytes());
    }
    bytes.extend_from_slice(&data);
    if th.rng.chance(1, 16) {
        let cut = th.rng.below(bytes.len() as u64) as usize;
        bytes.truncate(cut);
    }
    th.note(
        t.slot as i64,
        u64::from(flags) << 32 | u64::from(index),
        u64::from(start) << 32 | u64::from(count),
        fd as u64,
    );
    let p = th.scratch.put(&bytes);
    th.inject_begin();
    let r = ioctl(t.h.fd(), SET_IRQS, p as u64);
    th.inject_end();
    let c = code(&r);
    let want = model::set_irqs_want(&model::IrqSet {
        bufsz: bytes.len(),
        argsz,
        flags,
        index,
        start,
        count,
        fd: fk,
    });
    if !(want.contains(&c) || th.injected && c == libc::ENOMEM) {
        th.mismatch(format!(
            "VFIO_DEVICE_SET_IRQS flags {flags:#x} index {index} start {start} count {count} argsz {argsz} buf {} fd {fk:?}: {}, want one of {:?}",
            bytes.len(),
            code_name(c),
            want.iter().map(|&w| code_name(w)).collect::<Vec<_>>()
        ));
    }
    // Now and then, a fresh eventfd (the kernel keeps its reference to the old one).
    if th.rng.chance(1, 16) {
        let i = th.rng.below(th.efds.len() as u64) as usize;
        if let Ok(e) = vgpu_vfio::EventFd::new(vgpu_vfio::EFD_NONBLOCK) {
            th.efds[i] = e;
        }
    }
    c
}

pub fn reset(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    th.note(t.slot as i64, 0, 0, 0);
    let c = code(&ioctl(t.h.fd(), RESET, 0));
    expect(th, "VFIO_DEVICE_RESET", c, 0);
    c
}

pub fn gfx_plane(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let bufsz = *th.rng.pick(&[32usize, 60, 64, 64, 64]);
    let argsz = *th.rng.pick(&[0u32, 59, 60, 64, 64, 64, u32::MAX]);
    let flags = *th.rng.pick(&[4u32, 4, 4, 5, 5, 3, 2, 1, 0, 7, 6, 0x100]);
    let ptype = *th.rng.pick(&[0u32, 1, 1, 2, 3, u32::MAX]);
    th.note(
        t.slot as i64,
        u64::from(flags),
        u64::from(ptype),
        u64::from(argsz),
    );
    let p = put_words(th, &[argsz, flags, ptype, 0xdead], bufsz);
    th.inject_begin();
    let r = ioctl(t.h.fd(), QUERY_GFX_PLANE, p as u64);
    th.inject_end();
    let want = if bufsz < 60 {
        libc::EFAULT
    } else if argsz < 60 || (flags != 4 && flags != 5) {
        libc::EINVAL
    } else {
        0
    };
    let c = code(&r);
    if !expect(th, "VFIO_DEVICE_QUERY_GFX_PLANE", c, want) || c != 0 || flags == 5 {
        return c;
    }
    let b = th.scratch.get(p, 60);
    let fmt = u32_at(&b, 12);
    let (w, h, stride, size) = (
        u32_at(&b, 24),
        u32_at(&b, 28),
        u32_at(&b, 32),
        u32_at(&b, 36),
    );
    let region = u32_at(&b, 56);
    let rest: Vec<u32> = (16..24)
        .step_by(4)
        .chain((40..56).step_by(4))
        .map(|o| u32_at(&b, o))
        .collect();
    let ok = if fmt == 0 || ptype == 2 {
        fmt == 0 && (w, h, stride, size, region) == (0, 0, 0, 0, 0)
    } else {
        let bpp = match fmt {
            abi::drm::FORMAT_RGB565 => 2,
            abi::drm::FORMAT_RGB888 => 3,
            abi::drm::FORMAT_XRGB8888 => 4,
            _ => 0,
        };
        bpp != 0
            && w > 0
            && h > 0
            && u64::from(stride) >= u64::from(w) * bpp
            && u64::from(size) == u64::from(stride) * u64::from(h)
            && u64::from(size) <= t.disp
            && region == abi::DISPLAY_REGION_INDEX
    };
    if !ok || rest.iter().any(|&v| v != 0) {
        th.mismatch(format!(
            "plane type {ptype}: format {fmt:#x} {w}x{h} stride {stride} size {size} region {region}, other fields {rest:?}"
        ));
    }
    c
}

pub fn gfx_dmabuf(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    th.note(t.slot as i64, 0, 0, 0);
    let v = th.rng.next_u32();
    let p = put_words(th, &[v], 4);
    let c = code(&ioctl(t.h.fd(), GET_GFX_DMABUF, p as u64));
    expect(th, "VFIO_DEVICE_GET_GFX_DMABUF", c, libc::ENOTTY);
    c
}

/// ioctl types the VFS handles itself for any file: never sent as "unknown".
fn generic_ioctl(cmd: u32) -> bool {
    let ty = (cmd >> 8) & 0xff;
    matches!(ty, 0x54 | 0x58 | 0x66 | 0x94) || (ty == 0 && cmd & 0xff < 16)
}

pub fn bad_ioctl(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let feature = th.rng.chance(1, 10);
    let cmd = if feature {
        DEVICE_FEATURE as u32
    } else {
        loop {
            let c = match th.rng.below(3) {
                0 => {
                    let nr = th.rng.range(100, 127) as u32;
                    if matches!(nr, 107..=111 | 114 | 117) {
                        continue;
                    }
                    0x3b00 | nr
                }
                // A known request number with direction and size bits: not the same cmd.
                1 => {
                    let nr = *th.rng.pick(&[107u32, 108, 109, 110, 111, 114]);
                    (th.rng.range(1, 3) as u32) << 30
                        | (th.rng.range(1, 0x3fff) as u32) << 16
                        | 0x3b00
                        | nr
                }
                _ => th.rng.next_u32(),
            };
            if !generic_ioctl(c) && c != DEVICE_FEATURE as u32 {
                break c;
            }
        }
    };
    th.note(t.slot as i64, u64::from(cmd), 0, 0);
    // VFIO_DEVICE_FEATURE reads a 16-byte header: argsz, flags.
    let argsz = *th.rng.pick(&[0u32, 16, 64]);
    let flags = th.rng.next_u32();
    let p = put_words(th, &[argsz, flags, 0, 0], 64);
    let c = code(&ioctl(t.h.fd(), u64::from(cmd), p as u64));
    if feature {
        if !matches!(c, libc::EINVAL | libc::ENOTTY) {
            th.mismatch(format!(
                "VFIO_DEVICE_FEATURE flags {flags:#x}: {}",
                code_name(c)
            ));
        }
    } else {
        expect(th, &format!("ioctl {cmd:#x}"), c, libc::ENOTTY);
    }
    c
}

/// A region access to generate: index, offset in the region, count.
fn gen_access(rng: &mut Rng, t: &Target) -> (u32, u64, u64) {
    let index = match rng.below(20) {
        0..=6 => 0,
        7..=9 => 9,
        10..=12 => 7,
        13..=15 => 2,
        16 => *rng.pick(&[1u32, 3, 4, 5, 6, 8]),
        17 => 10 + rng.below(100) as u32,
        18 => rng.below(1 << 23) as u32,
        _ => (1 << 23) + rng.below(1 << 20) as u32,
    };
    let small =
        |rng: &mut Rng| *rng.pick(&[0u64, 1, 2, 3, 4, 5, 6, 8, 12, 16, 64, 255, 256, 4096, 4097]);
    match index {
        0 => {
            if rng.chance(4, 5) {
                let z = t.zones();
                let (off, max) = z.pick(rng);
                let ends = off < LOW_GEN || off >= t.vram.saturating_sub(MIB);
                (0, off, gen_count(rng, max, ends))
            } else {
                let off = match rng.below(3) {
                    0 => t.vram + rng.below(8192),
                    1 => REGION_OFFSET_MASK - rng.below(16),
                    _ => t.vram + rng.below(REGION_OFFSET_MASK - t.vram),
                };
                (0, off, small(rng))
            }
        }
        9 => {
            let off = if rng.chance(4, 5) {
                rng.below(t.disp)
            } else {
                t.disp + rng.below(REGION_OFFSET_MASK - t.disp)
            };
            let max = t.disp.saturating_sub(off).max(1);
            (9, off, gen_count(rng, max, true))
        }
        2 | 7 => {
            let size = if index == 2 {
                abi::MMIO_SIZE
            } else {
                abi::CONFIG_SIZE
            };
            let off = match rng.below(4) {
                0 => edge_u64(rng) & REGION_OFFSET_MASK,
                1 => size - rng.below(8),
                _ => rng.below(size),
            };
            let count = if rng.chance(1, 10) {
                gen_count(rng, 1 << 20, true)
            } else {
                small(rng)
            };
            (index, off, count)
        }
        _ => (index, edge_u64(rng) & REGION_OFFSET_MASK, small(rng)),
    }
}

/// A transfer size: small, page-ish, up to `max`, or (if `huge_ok`) far beyond the
/// scratch buffer, so the copy stops at its guard page.
fn gen_count(rng: &mut Rng, max: u64, huge_ok: bool) -> u64 {
    let c = match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 3,
        4 => 4,
        5 => 8,
        6 => rng.range(1, 4096),
        7 => 4096,
        8 => rng.range(1, 65536),
        9 => MIB,
        10 if huge_ok => {
            return *rng.pick(&[MIB + 1, 1 << 31, (1 << 31) - 1, 1 << 33, 0x7fff_f001]);
        }
        _ => max,
    };
    c.min(max)
}

pub fn region_rw(th: &mut Th, write: bool) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let (index, off, count) = gen_access(&mut th.rng, &t);
    let pos = (u64::from(index) << REGION_OFFSET_SHIFT) | off;
    let cap = count.min(Scratch::LEN as u64);
    let buf = th.scratch.tail(cap as usize);
    if write {
        let n = cap.min(4096) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| th.rng.next_u32() as u8).collect();
        // SAFETY: `buf` has `cap` ≥ n writable bytes before the guard page.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, n) };
    }
    th.note(t.slot as i64, u64::from(index), off, count);
    th.inject_begin();
    // SAFETY: `buf` points into our scratch mapping; the kernel validates the rest and
    // faults at the guard page rather than past it.
    let r = unsafe {
        if write {
            libc::pwrite(
                t.h.fd(),
                buf as *const libc::c_void,
                count as usize,
                pos as i64,
            )
        } else {
            libc::pread(
                t.h.fd(),
                buf as *mut libc::c_void,
                count as usize,
                pos as i64,
            )
        }
    };
    th.inject_end();
    let got = if r < 0 { Err(errno()) } else { Ok(r as u64) };
    let want = model::rw_want(&Access {
        write,
        index,
        off,
        count,
        buf: buf as u64,
        cap,
        vram: t.vram,
        disp: t.disp,
    });
    let c = judge_rw(th, &want, &got, index, off, count);
    if c == 0 && !write && index == 7 {
        let n = (got.unwrap_or(0) as usize).min(256);
        let b = th.scratch.get(buf, n);
        check_cfg(th, off, &b, t.vram);
    }
    c
}

/// Compare a pread/pwrite result with the model; returns the outcome code.
pub fn judge_rw(
    th: &Th,
    want: &model::RwWant,
    got: &Result<u64, i32>,
    index: u32,
    off: u64,
    count: u64,
) -> i32 {
    let ok = match (want, got) {
        (model::RwWant::Err(e), Err(g)) => e == g,
        (model::RwWant::Exact(n), Ok(g)) => n == g,
        (model::RwWant::Short { cap }, Ok(g)) => *g <= *cap && *g + 64 >= *cap && *g > 0,
        (model::RwWant::Short { cap: 0 }, Err(g)) => *g == libc::EFAULT,
        _ => false,
    };
    // With an injected allocation failure: ENOMEM, or a shorter transfer.
    let inj_ok = th.injected
        && match (want, got) {
            (_, Err(g)) => *g == libc::ENOMEM || *g == libc::EFAULT,
            (model::RwWant::Exact(n), Ok(g)) | (model::RwWant::Short { cap: n }, Ok(g)) => g <= n,
            _ => false,
        };
    if !ok && !inj_ok {
        th.mismatch(format!(
            "region {index} offset {off:#x} count {count:#x}: got {}, want {want:?}",
            match got {
                Ok(n) => format!("{n:#x} bytes"),
                Err(e) => code_name(*e),
            }
        ));
    }
    match got {
        Ok(n) if matches!(want, model::RwWant::Exact(w) if n < w) => SHORT,
        Ok(n) if matches!(want, model::RwWant::Short { .. }) && *n > 0 => SHORT,
        Ok(_) => 0,
        Err(e) => *e,
    }
}

fn check_cfg(th: &Th, off: u64, bytes: &[u8], vram: u64) {
    for (i, &v) in bytes.iter().enumerate() {
        let o = off as usize + i;
        if let Some((mask, want)) = cfg_fixed(o, vram) {
            if v & mask != want {
                th.mismatch(format!(
                    "config byte {o:#x} = {v:#04x}: read-only bits {mask:#04x} should be {want:#04x}"
                ));
                return;
            }
        }
    }
}

/// Config space offsets worth writing.
const CFG_OFFS: [u64; 20] = [
    0x00, 0x04, 0x05, 0x06, 0x08, 0x0c, 0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x2c, 0x30, 0x34, 0x3c,
    0x40, 0x42, 0x44, 0x4c,
];

fn pwrite_reg(th: &mut Th, t: &Target, index: u32, off: u64, bytes: &[u8]) -> i32 {
    let buf = th.scratch.put(bytes);
    let pos = (u64::from(index) << REGION_OFFSET_SHIFT) | off;
    th.note(t.slot as i64, u64::from(index), off, bytes.len() as u64);
    // SAFETY: `buf` holds bytes.len() bytes of our scratch buffer.
    let r = unsafe {
        libc::pwrite(
            t.h.fd(),
            buf as *const libc::c_void,
            bytes.len(),
            pos as i64,
        )
    };
    let got = if r < 0 { Err(errno()) } else { Ok(r as u64) };
    let size = if index == 2 {
        abi::MMIO_SIZE
    } else {
        abi::CONFIG_SIZE
    };
    let want = if model::reg_access_ok(off, bytes.len() as u64, size) {
        model::RwWant::Exact(bytes.len() as u64)
    } else if bytes.is_empty() {
        model::RwWant::Exact(0)
    } else {
        model::RwWant::Err(libc::EINVAL)
    };
    judge_rw(th, &want, &got, index, off, bytes.len() as u64)
}

fn pread_reg(th: &mut Th, t: &Target, index: u32, off: u64, n: usize) -> Result<Vec<u8>, i32> {
    let buf = th.scratch.tail(n);
    let pos = (u64::from(index) << REGION_OFFSET_SHIFT) | off;
    th.note(t.slot as i64, u64::from(index), off, n as u64);
    // SAFETY: `buf` has n writable bytes of our scratch buffer.
    let r = unsafe { libc::pread(t.h.fd(), buf as *mut libc::c_void, n, pos as i64) };
    if r < 0 {
        return Err(errno());
    }
    Ok(th.scratch.get(buf, r as usize))
}

fn value_bytes(rng: &mut Rng, size: usize) -> Vec<u8> {
    let v: u32 = match rng.below(6) {
        0 => 0,
        1 => u32::MAX,
        2 => 1 << rng.below(32),
        _ => rng.next_u32(),
    };
    let mut b: Vec<u8> = v.to_le_bytes().iter().copied().cycle().take(size).collect();
    if size > 4 {
        for x in b.iter_mut().skip(4) {
            *x = rng.next_u32() as u8;
        }
    }
    b
}

pub fn cfg_write(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let mut off = *th.rng.pick(&CFG_OFFS);
    if th.rng.chance(1, 4) {
        off += th.rng.below(4);
    }
    if th.rng.chance(1, 10) {
        off = th.rng.below(0x110);
    }
    let size = *th.rng.pick(&[4usize, 4, 4, 2, 1, 8, 12, 3, 0, 256]);
    let bytes = value_bytes(&mut th.rng, size);
    pwrite_reg(th, &t, 7, off, &bytes)
}

pub fn cfg_read(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let (off, n) = if th.rng.chance(1, 2) {
        (0, 256)
    } else {
        let n = *th.rng.pick(&[1usize, 2, 4]);
        (th.rng.below(256 / n as u64) * n as u64, n)
    };
    match pread_reg(th, &t, 7, off, n) {
        Ok(b) => {
            if b.len() != n {
                th.mismatch(format!(
                    "config read of {n} at {off:#x} returned {}",
                    b.len()
                ));
            }
            check_cfg(th, off, &b, t.vram);
            0
        }
        Err(e) => {
            th.mismatch(format!("config read of {n} at {off:#x}: {}", code_name(e)));
            e
        }
    }
}

/// A DISPI value: mostly small modes, so scanouts and snapshots stay small.
fn dispi_value(rng: &mut Rng, idx: u16) -> u16 {
    match idx {
        dispi::XRES | dispi::VIRT_WIDTH => *rng.pick(&[0, 1, 64, 320, 640, 800, 1024, 2560, 65535]),
        dispi::YRES | dispi::VIRT_HEIGHT => *rng.pick(&[0, 1, 64, 200, 480, 600, 768, 1600, 65535]),
        dispi::BPP => *rng.pick(&[0, 8, 15, 16, 24, 32, 32, 7, 64]),
        dispi::ENABLE => *rng.pick(&[0, 1, 0x41, 0xc1, 2, 3, 0xffff]),
        dispi::X_OFFSET | dispi::Y_OFFSET => *rng.pick(&[0, 0, 1, 7, 100]),
        _ => rng.next_u32() as u16,
    }
}

pub fn mmio_write(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let idx = th.rng.below(12) as u16;
    let (off, bytes) = match th.rng.below(8) {
        0..=4 => {
            let v = dispi_value(&mut th.rng, idx);
            match th.rng.below(4) {
                0 => (dispi::offset(idx) + th.rng.below(2), vec![v as u8]),
                1 => {
                    let v2 = dispi_value(&mut th.rng, idx + 1);
                    (
                        dispi::offset(idx & !1),
                        [v.to_le_bytes(), v2.to_le_bytes()].concat(),
                    )
                }
                _ => (dispi::offset(idx), v.to_le_bytes().to_vec()),
            }
        }
        5 => (
            info::VGPU_ID + 4 * th.rng.below(10),
            value_bytes(&mut th.rng, 4),
        ),
        6 => {
            let n = *th.rng.pick(&[1, 2, 4, 3, 8]);
            (
                th.rng.below(abi::MMIO_SIZE + 8),
                value_bytes(&mut th.rng, n),
            )
        }
        _ => (
            *th.rng
                .pick(&[0x000u64, 0x400, 0x600, 0x604, 0x7fc, 0xa00, 0xffc]),
            value_bytes(&mut th.rng, 4),
        ),
    };
    pwrite_reg(th, &t, 2, off, &bytes)
}

pub fn mmio_read(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let reg = match th.rng.below(4) {
        0 => info::VGPU_ID + 4 * th.rng.below(10),
        1 => abi::DISPI_BASE + 4 * th.rng.below(6),
        2 => 0x900 + 4 * th.rng.below(64),
        _ => 4 * th.rng.below(1024),
    };
    let n = if th.rng.chance(1, 4) { 16 } else { 4 };
    let reg = reg.min(abi::MMIO_SIZE - n as u64);
    match pread_reg(th, &t, 2, reg, n) {
        Ok(b) => {
            for i in 0..b.len() / 4 {
                let r = reg + 4 * i as u64;
                if let Err(m) = mmio_check(r, u32_at(&b, 4 * i), t.vram, t.parent) {
                    th.mismatch(format!("BAR2 {r:#x}: {m}"));
                    break;
                }
            }
            0
        }
        Err(e) => {
            th.mismatch(format!("BAR2 read of {n} at {reg:#x}: {}", code_name(e)));
            e
        }
    }
}

/// A value for an engine register: valid-looking ones mostly.
fn engine_value(rng: &mut Rng, reg: u64, vram: u64) -> u32 {
    use vgpu_vfio::abi::engine as e;
    let r = rng.next_u32();
    match reg {
        e::RING_BASE_LO => *rng.pick(&[0u32, 4096, 65536, 1 << 20, (vram - 4096) as u32, 100, r]),
        e::RING_BASE_HI => *rng.pick(&[0u32, 0, 0, 1, r]),
        e::RING_SIZE => *rng.pick(&[4096u32, 4096, 8192, 1 << 20, 0, 3000, 2 << 20, r]),
        e::RING_TAIL => *rng.pick(&[0u32, 64, 128, 4032, 4096, 63, r]),
        e::RING_CTL => *rng.pick(&[0u32, 1, 1, r]),
        e::IRQ_STATUS | e::IRQ_MASK => *rng.pick(&[0u32, 1, 2, 4, 7, r]),
        e::ENGINE_RESET => *rng.pick(&[1u32, 0, r]),
        _ => r,
    }
}

pub fn engine_reg(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let reg = 0x900 + 4 * th.rng.below(17);
    if th.rng.chance(1, 4) {
        // Read and check the ranges the engine ABI promises.
        return match pread_reg(th, &t, 2, reg & !3, 4) {
            Ok(b) => {
                if let Err(m) = mmio_check(reg & !3, u32_at(&b, 0), t.vram, t.parent) {
                    th.mismatch(format!("engine register {reg:#x}: {m}"));
                }
                0
            }
            Err(e) => {
                th.mismatch(format!("engine register read {reg:#x}: {}", code_name(e)));
                e
            }
        };
    }
    let v = engine_value(&mut th.rng, reg, t.vram);
    let bytes = match th.rng.below(10) {
        0 => v.to_le_bytes()[..1].to_vec(),
        1 => v.to_le_bytes()[..2].to_vec(),
        2 => [
            v.to_le_bytes(),
            engine_value(&mut th.rng, reg + 4, t.vram).to_le_bytes(),
        ]
        .concat(),
        _ => v.to_le_bytes().to_vec(),
    };
    let off = if bytes.len() == 2 && th.rng.chance(1, 2) {
        reg + 2
    } else {
        reg
    };
    pwrite_reg(th, &t, 2, off.min(0x9fc + 4 - bytes.len() as u64), &bytes)
}

/// A small valid-looking command inside the first 2 MiB (the zone the fuzzer allocates).
fn gen_cmd(rng: &mut Rng, i: u64, n: u64) -> Cmd {
    let low = |rng: &mut Rng, align: u64, len: u64| (rng.below(2 * MIB - len) / align) * align;
    match rng.below(10) {
        0 => Cmd::Nop,
        1 | 2 => {
            let len = (rng.range(1, 16384) / 4) * 4 + 4;
            Cmd::Fill {
                dst: low(rng, 4, len),
                len,
                value: rng.next_u32(),
            }
        }
        3 => {
            let len = rng.range(1, 16384);
            Cmd::Copy {
                dst: low(rng, 1, len),
                src: low(rng, 1, len),
                len,
            }
        }
        4 => {
            let len = (rng.range(1, 65536) / 4) * 4 + 4;
            Cmd::Checksum {
                src: low(rng, 4, len),
                len,
                dst: low(rng, 8, 8),
            }
        }
        5 => {
            let (m, nn, k) = (rng.range(1, 16), rng.range(1, 16), rng.range(1, 16));
            Cmd::Gemm {
                a: low(rng, 4, 4096),
                b: low(rng, 4, 4096),
                c: low(rng, 4, 4096),
                m,
                n: nn,
                k,
            }
        }
        6 => Cmd::Blit {
            src: low(rng, 1, 4096),
            src_stride: rng.range(1, 256),
            width: rng.range(1, 16),
            height: rng.range(1, 4),
            dst_x: rng.below(8),
            dst_y: rng.below(8),
        },
        7 => Cmd::Jump {
            target: (i + 1).min(n) * 64,
        },
        8 => Cmd::Raw(RawCmd::new(
            rng.below(10) as u8,
            rng.below(4) as u8,
            [rng.next_u64() & 0x1f_ffff, rng.below(4096), 0, 0, 0, 0, 0],
        )),
        _ => Cmd::Fence {
            seqno: rng.next_u64(),
            addr: low(rng, 8, 8),
            irq: rng.chance(1, 2),
            write: rng.chance(1, 2),
        },
    }
}

pub fn engine_submit(th: &mut Th) -> i32 {
    use vgpu_vfio::abi::engine as e;
    let Some(t) = th.target() else { return SKIP };
    let base = *th.rng.pick(&[0u64, 65536, MIB]);
    let n = th.rng.range(1, 8);
    let mut ring = Vec::new();
    for i in 0..n {
        ring.extend_from_slice(&gen_cmd(&mut th.rng, i, n).encode());
    }
    let mut regs: Vec<(u64, u32)> = vec![
        (e::ENGINE_RESET, 1),
        (e::RING_BASE_LO, base as u32),
        (e::RING_BASE_HI, 0),
        (e::RING_SIZE, 4096),
        (e::RING_CTL, 1),
    ];
    if th.rng.chance(1, 4) {
        // A small displayable mode, for BLIT.
        for (i, v) in [
            (dispi::ENABLE, 0u16),
            (dispi::BPP, 32),
            (dispi::XRES, 64),
            (dispi::YRES, 16),
            (dispi::VIRT_WIDTH, 0),
            (dispi::X_OFFSET, 0),
            (dispi::Y_OFFSET, 0),
            (dispi::ENABLE, 0x41),
        ] {
            if pwrite_reg(th, &t, 2, dispi::offset(i), &v.to_le_bytes()) != 0 {
                return libc::EIO;
            }
        }
    }
    if th.rng.chance(1, 2) {
        regs.push((e::IRQ_MASK, 7));
    }
    for (r, v) in regs {
        if pwrite_reg(th, &t, 2, r, &v.to_le_bytes()) != 0 {
            return libc::EIO;
        }
    }
    // The ring's commands, through pwrite (the first touch of those VRAM pages).
    let buf = th.scratch.put(&ring);
    th.note(t.slot as i64, base, n, 0);
    th.inject_begin();
    // SAFETY: `buf` holds ring.len() bytes of our scratch buffer.
    let r = unsafe {
        libc::pwrite(
            t.h.fd(),
            buf as *const libc::c_void,
            ring.len(),
            base as i64,
        )
    };
    th.inject_end();
    if r != ring.len() as isize {
        let c = if r < 0 { errno() } else { SHORT };
        if !(th.injected && matches!(c, libc::ENOMEM | SHORT)) {
            th.mismatch(format!("ring write at {base:#x}: {}", code_name(c)));
        }
        return c;
    }
    let tail = (n * 64) as u32;
    for (r, v) in [(e::RING_TAIL, tail), (e::DOORBELL, 1)] {
        if pwrite_reg(th, &t, 2, r, &v.to_le_bytes()) != 0 {
            return libc::EIO;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_ioctls_are_excluded() {
        assert!(generic_ioctl(0x5451)); // FIOCLEX
        assert!(generic_ioctl(0xc020_660b)); // FS_IOC_FIEMAP
        assert!(generic_ioctl(2)); // FIGETBSZ
        assert!(!generic_ioctl(0x3b6b));
    }

    #[test]
    fn generated_accesses_stay_in_the_zones() {
        let mut rng = Rng::new(5);
        let t_vram = 128 * MIB;
        let z = super::super::world::Zones { size: t_vram };
        for _ in 0..20000 {
            let (off, max) = z.pick(&mut rng);
            let ends = off < LOW_GEN || off >= t_vram - MIB;
            let c = gen_count(&mut rng, max, ends);
            let reach = c.min(Scratch::LEN as u64).min(t_vram - off);
            if reach > 0 {
                assert!(z.contains(off + reach - 1), "{off:#x} + {c:#x}");
            }
        }
    }

    #[test]
    fn generated_commands_are_64_bytes_in_the_low_zone() {
        let mut rng = Rng::new(9);
        for i in 0..2000 {
            let c = gen_cmd(&mut rng, i % 8, 8);
            assert_eq!(c.encode().len(), 64);
            if let Cmd::Fill { dst, len, .. } = c {
                assert!(dst + len <= 2 * MIB);
            }
        }
    }
}
