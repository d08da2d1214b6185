//! VFIO device ioctls with random flags, indexes, argsz and buffer sizes (the argument
//! always ends right before a guard page, so an over-long kernel copy faults instead of
//! succeeding): GET_INFO, GET_REGION_INFO, GET_IRQ_INFO, SET_IRQS with random actions,
//! data types, counts and eventfds (valid, -1, negative, closed, not an eventfd), RESET,
//! QUERY_GFX_PLANE, GET_GFX_DMABUF, IOEVENTFD (registered, removed and signalled while
//! other threads close, reset and remove) and unknown requests. Each outcome is checked against
//! model.rs; successful queries against the ABI's values.

use vgpu_vfio::abi;
use vgpu_vfio::REGION_OFFSET_SHIFT;

use super::model::{self, FdKind};
use super::ops::*;

const VFIO: u64 = 0x3b00;
const GET_INFO: u64 = VFIO + 107;
const GET_REGION_INFO: u64 = VFIO + 108;
const GET_IRQ_INFO: u64 = VFIO + 109;
const SET_IRQS: u64 = VFIO + 110;
const RESET: u64 = VFIO + 111;
const QUERY_GFX_PLANE: u64 = VFIO + 114;
const GET_GFX_DMABUF: u64 = VFIO + 115;
const IOEVENTFD: u64 = VFIO + 116;
const DEVICE_FEATURE: u64 = VFIO + 117;

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

/// An info ioctl's argument `{argsz, flags 0, index}` in a `bufsz`-byte buffer, noted
/// for the trace: the index is below `nindex` 7 times in 8, any u32 otherwise.
fn info_arg(th: &mut Th, slot: usize, bufsz: usize, argsz: u32, nindex: u64) -> (u32, *mut u8) {
    let index = if th.rng.chance(7, 8) {
        th.rng.below(nindex) as u32
    } else {
        th.rng.next_u32()
    };
    th.note(
        slot as i64,
        u64::from(index),
        u64::from(argsz),
        bufsz as u64,
    );
    (index, put_words(th, &[argsz, 0, index], bufsz))
}

pub fn region_info(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let bufsz = *th.rng.pick(&[16usize, 32, 40, 48, 48, 64]);
    let argsz = *th
        .rng
        .pick(&[0u32, 16, 31, 32, 32, 40, 47, 48, 48, 64, 4096, u32::MAX]);
    let (index, p) = info_arg(th, t.slot, bufsz, argsz, 12);
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
    let (index, p) = info_arg(th, t.slot, bufsz, argsz, 7);
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

/// The fd an eventfd argument of kind `fk` gets (`not_eventfd`: an open fd of another
/// kind, the device's).
fn fd_of_kind(th: &mut Th, fk: FdKind, not_eventfd: i32) -> i32 {
    match fk {
        FdKind::Valid => th.efd(),
        FdKind::Clear => -1,
        FdKind::Negative => -2 - th.rng.below(1000) as i32,
        FdKind::Huge => 100_000 + th.rng.below(1000) as i32,
        FdKind::NotEventfd => not_eventfd,
        FdKind::Closed => {
            use std::os::fd::AsRawFd;
            match vgpu_vfio::EventFd::new(0) {
                Ok(e) => e.as_raw_fd(), // closed when `e` drops at the end of this arm
                Err(_) => 100_001,
            }
        }
    }
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
    let fd = fd_of_kind(th, fk, t.h.fd());
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

pub fn ioeventfd(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let db = (2u64 << REGION_OFFSET_SHIFT) | abi::engine::DOORBELL;
    // 3 in 4 well-formed: a size and place within DOORBELL; else anything.
    let (flags, offset) = if th.rng.chance(3, 4) {
        let (f, o) = *th
            .rng
            .pick(&[(4u32, 0u64), (4, 0), (4, 0), (1, 3), (2, 2), (1, 0)]);
        (f, db + o)
    } else {
        let flags = *th
            .rng
            .pick(&[0u32, 3, 8, 4 | 0x10, 0x8000_0004, 6, 4, 4, 2]);
        let offset = *th.rng.pick(&[
            db,
            db + 1,
            db + 2,
            db - 4,
            db + 4,
            abi::engine::DOORBELL,
            (7u64 << REGION_OFFSET_SHIFT) | 4,
            (2u64 << REGION_OFFSET_SHIFT) | abi::engine::RING_TAIL,
            (9u64 << REGION_OFFSET_SHIFT) | abi::engine::DOORBELL,
            u64::MAX,
        ]);
        (flags, offset)
    };
    let data = *th.rng.pick(&[0u64, 1, 1, 1, 2, u64::MAX]);
    let fk = *th.rng.pick(&[
        FdKind::Valid,
        FdKind::Valid,
        FdKind::Valid,
        FdKind::Clear,
        FdKind::Clear,
        FdKind::Negative,
        FdKind::Huge,
        FdKind::NotEventfd,
        FdKind::Closed,
    ]);
    let fd = fd_of_kind(th, fk, t.h.fd());
    let argsz = *th.rng.pick(&[32u32, 32, 32, 28, 0, 27, 64, u32::MAX]);
    let bufsz = *th.rng.pick(&[32usize, 32, 32, 28, 27, 16]);
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(&argsz.to_ne_bytes());
    bytes.extend_from_slice(&flags.to_ne_bytes());
    bytes.extend_from_slice(&offset.to_ne_bytes());
    bytes.extend_from_slice(&data.to_ne_bytes());
    bytes.extend_from_slice(&fd.to_ne_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.truncate(bufsz);
    th.note(
        t.slot as i64,
        u64::from(flags) << 32 | u64::from(argsz),
        offset,
        data << 32 | u64::from(fd as u32),
    );
    let p = th.scratch.put(&bytes);
    th.inject_begin();
    let r = ioctl(t.h.fd(), IOEVENTFD, p as u64);
    th.inject_end();
    let c = code(&r);
    let want = model::ioeventfd_want(bufsz, argsz, flags, offset, fk);
    if !(want.contains(&c) || th.injected && c == libc::ENOMEM) {
        th.mismatch(format!(
            "VFIO_DEVICE_IOEVENTFD flags {flags:#x} offset {offset:#x} data {data:#x} argsz {argsz} buf {bufsz} fd {fk:?}: {}, want one of {:?}",
            code_name(c),
            want.iter().map(|&w| code_name(w)).collect::<Vec<_>>()
        ));
    }
    // Ring one of this thread's eventfds now and then: registered ones ring the
    // doorbell of whatever instance they are registered with, racing its close.
    if th.rng.chance(1, 2) {
        let i = th.rng.below(th.efds.len() as u64) as usize;
        let _ = th.efds[i].write(1);
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
                    if matches!(nr, 107..=111 | 114 | 116 | 117) {
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
}
