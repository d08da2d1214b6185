//! The engine through BAR2: random writes of the ring registers (base, size, tail,
//! control, doorbell, interrupt mask and status, reset), reads checked for the ranges
//! the engine ABI promises, and small batches of valid-looking commands whose pages lie
//! in the zone the fuzzer may allocate (the ring's first write is a first VRAM touch).

use vgpu_vfio::abi::dispi;
use vgpu_vfio::{Cmd, RawCmd};

use super::model::mmio_check;
use super::ops::*;
use super::region::{pread_reg, pwrite_reg};
use super::world::MIB;
use crate::rng::Rng;

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
        e::TAIL_SHADOW_LO => *rng.pick(&[
            0u32,
            1,
            0x10_0001,
            (vram - 4) as u32 | 1,
            vram as u32 | 1,
            3,
            r,
        ]),
        e::TAIL_SHADOW_HI => *rng.pick(&[0u32, 0, 1, r]),
        e::IRQ_EDGE => *rng.pick(&[0u32, 1, 7, r]),
        _ => r,
    }
}

pub fn engine_reg(th: &mut Th) -> i32 {
    let Some(t) = th.target() else { return SKIP };
    let reg = 0x900 + 4 * th.rng.below(19);
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
            let a = low(rng, 4, 4096);
            // Now and then C overlaps A (the engine's serial path).
            let c = if rng.chance(1, 3) {
                a + 4 * rng.below(8)
            } else {
                low(rng, 4, 4096)
            };
            Cmd::Gemm {
                a,
                b: low(rng, 4, 4096),
                c,
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
        let bpp = *th.rng.pick(&[16u16, 24, 32]);
        for (i, v) in [
            (dispi::ENABLE, 0u16),
            (dispi::BPP, bpp),
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
