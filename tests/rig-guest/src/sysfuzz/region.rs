//! Region access: pread/pwrite on every region index (and far beyond) at edge offsets
//! (region ends, 2^40 boundaries, unaligned) and sizes (0 to past MAX_RW_COUNT, copies
//! stopped by the scratch buffer's guard page), checked against model::rw_want; config
//! space writes (BARs, command, MSI capability) and reads checked for read-only bits; BAR2
//! writes (DISPI, info block, holes) and reads checked for fixed registers.

use vgpu_vfio::abi::{self, dispi, info};
use vgpu_vfio::{REGION_OFFSET_MASK, REGION_OFFSET_SHIFT};

use super::model::{self, cfg_fixed, mmio_check, Access};
use super::ops::*;
use super::world::{Scratch, LOW_GEN, MIB};
use crate::rng::Rng;

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

pub fn pwrite_reg(th: &mut Th, t: &Target, index: u32, off: u64, bytes: &[u8]) -> i32 {
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

pub fn pread_reg(th: &mut Th, t: &Target, index: u32, off: u64, n: usize) -> Result<Vec<u8>, i32> {
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
#[cfg(test)]
mod tests {
    use super::*;

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
}
