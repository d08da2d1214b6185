//! The `external` suite's random programs: every opcode on an external and a CPU parent,
//! the same bytes expected.

use vgpu_vfio::abi::engine as reg;
use vgpu_vfio::Cmd;

use crate::execref::Behaviour;
use crate::harness::{Context, Ctx, Fail, TestResult};
use crate::rng::Rng;
use crate::util::{set_mode, Mode};
use crate::workload::{Gemm, Gpu};
use crate::{ensure, ensure_eq};

use super::daemon::Daemon;
use super::{external, open, AREA, AREA_LEN, TYPE};

/// A random program over [AREA, AREA + AREA_LEN), every opcode, overlaps included.
fn program(rng: &mut Rng, mode: &Mode, n: usize) -> Vec<Cmd> {
    let mut cmds = Vec::new();
    let word = |rng: &mut Rng, max: u64| AREA + rng.below(max / 4) * 4;
    for _ in 0..n {
        let c = match rng.below(6) {
            0 => Cmd::Fill {
                dst: word(rng, AREA_LEN - 256 * 1024),
                len: 4 * rng.range(1, 64 * 1024),
                value: rng.next_u64() as u32,
            },
            1 => {
                let len = rng.range(1, 300 * 1024);
                let src = AREA + rng.below(AREA_LEN - len);
                // a third of them overlap, by a big or a small shift
                let dst = if rng.chance(1, 3) {
                    let shift = if rng.chance(1, 2) {
                        rng.range(1, 64)
                    } else {
                        rng.range(4096, len.max(4097))
                    };
                    if rng.chance(1, 2) && src + shift + len <= AREA + AREA_LEN {
                        src + shift
                    } else {
                        src.saturating_sub(shift).max(AREA)
                    }
                } else {
                    AREA + rng.below(AREA_LEN - len)
                };
                Cmd::Copy { dst, src, len }
            }
            2 => {
                let len = 4 * rng.range(1, 200 * 1024);
                Cmd::Checksum {
                    src: word(rng, AREA_LEN - len),
                    len,
                    dst: AREA + rng.below(AREA_LEN / 8) * 8,
                }
            }
            3 => {
                let (m, n, k) = (rng.range(1, 40), rng.range(1, 40), rng.range(1, 40));
                let a = word(rng, AREA_LEN / 2);
                let b = word(rng, AREA_LEN / 2);
                // sometimes C on top of A (the serial GEMM, kept on the CPU)
                let c = if rng.chance(1, 4) {
                    a
                } else {
                    AREA + AREA_LEN / 2 + rng.below(AREA_LEN / 8) * 4
                };
                Cmd::Gemm { a, b, c, m, n, k }
            }
            4 => {
                let (w, h) = (rng.range(1, u64::from(mode.xres)), rng.range(1, 40));
                Cmd::Blit {
                    src: AREA + rng.below(AREA_LEN / 2),
                    src_stride: w * 4 + rng.below(64),
                    width: w,
                    height: h,
                    dst_x: rng.below(u64::from(mode.xres) - w + 1),
                    dst_y: rng.below(u64::from(mode.yres) - h + 1),
                }
            }
            _ => Cmd::Nop,
        };
        cmds.push(c);
    }
    cmds
}

/// Seed VRAM, run `cmds` in batches with fences, return the area and the scanout.
fn run_program(g: &mut Gpu, mode: &Mode, cmds: &[Cmd]) -> Result<Vec<u8>, Fail> {
    set_mode(g.dev(), mode)?;
    let seed: Vec<u32> = (0..(AREA_LEN / 4) as u32)
        .map(|i| i.wrapping_mul(0x9e37_79b9) ^ 0x5a5a_0000)
        .collect();
    g.write_words(AREA, &seed)?;
    for batch in cmds.chunks(10) {
        g.run(batch)?;
    }
    let mut out = g.read_bytes(AREA, AREA_LEN as usize)?;
    out.extend(g.read_bytes(mode.start(), mode.size() as usize)?);
    Ok(out)
}

pub(super) fn matches_cpu(ctx: &mut Ctx) -> TestResult {
    same_bytes(ctx, None)
}

/// As `matches_cpu` with a daemon that declares a 1 MiB window (IOC_SET_WINDOW) and
/// refuses a piece touching more than 512 KiB, as the Vulkan daemon refuses what no
/// window of its binding holds: the kernel cuts FILL, CHECKSUM and COPY pieces to fit
/// and keeps wider GEMMs, BLITs and far COPYs on the CPU, so the bytes stay the same.
/// Bad windows are refused first.
pub(super) fn window_cuts_pieces(ctx: &mut Ctx) -> TestResult {
    let q = crate::execref::Queue::open(0).ctx("open the device")?;
    for bad in [1u64 << 15, 3 << 16, 1 << 41, u64::MAX] {
        let r = q.set_window(bad);
        ensure!(
            matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINVAL)),
            "window {bad:#x}: {r:?}, want EINVAL"
        );
    }
    drop(q);
    same_bytes(
        ctx,
        Some(Behaviour {
            window: Some(1 << 20),
            ..Behaviour::default()
        }),
    )
}

fn same_bytes(ctx: &mut Ctx, how: Option<Behaviour>) -> TestResult {
    let (pe, pc) = (ctx.parent(0)?, ctx.parent(1)?);
    external(&pe)?;
    // a slow (debug) kernel must not trip the watchdog
    for p in [&pe, &pc] {
        super::judge_bytes(p)?;
    }
    // a behaviour of its own needs the reference executor; else --daemon picks
    let xd = match how {
        Some(how) => Daemon::reference(0, how)?,
        None => Daemon::start(0)?,
    };
    let (ie, ic) = (ctx.create(&pe, TYPE)?, ctx.create(&pc, TYPE)?);
    let (mut ge, mut gc) = (open(&ie)?, open(&ic)?);
    let mode = Mode {
        xres: 320,
        yres: 200,
        bpp: 32,
        virt_width: 0,
        x_off: 0,
        y_off: 0,
    };
    let h0 = pe.executor_handoffs().ctx("handoffs")?;
    let mut rng = Rng::new(0x5eed_e7ec);
    let cmds = program(&mut rng, &mode, 400);
    let want = run_program(&mut gc, &mode, &cmds)?;
    let got = run_program(&mut ge, &mode, &cmds)?;
    if let Some(i) = crate::util::first_diff(&got, &want) {
        return Err(Fail(format!(
            "external and cpu differ at byte {i} of the area+scanout ({:#x} vs {:#x})",
            got[i], want[i]
        )));
    }
    for what in [reg::FENCE_LO, reg::CMDS_DONE, reg::STATUS] {
        ensure_eq!(
            ge.eng.read_reg(what)?,
            gc.eng.read_reg(what)?,
            "register {what:#x}"
        );
    }
    let handed = pe.executor_handoffs().ctx("handoffs")? - h0;
    let pieces = xd.stop()?;
    ensure!(
        handed > 100 && pieces >= handed,
        "handoffs {handed}, executor pieces {pieces}"
    );
    ensure_eq!(
        pc.executor_handoffs().ctx("cpu parent")?,
        0,
        "cpu parent handoffs"
    );
    ctx.note(format!(
        "{} commands, {handed} pieces handed, identical bytes",
        cmds.len()
    ));
    Ok(())
}

/// A GEMM big enough for many pieces, and its reference result.
pub(super) fn big_gemm(g: &Gpu) -> Result<(Gemm, Vec<u32>), Fail> {
    let gm = Gemm::square(AREA, 96);
    let (d, n) = (96usize, 96 * 96);
    let a: Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let b: Vec<u32> = (0..n as u32).map(|i| i ^ 0xdead_beef).collect();
    g.write_words(gm.a, &a)?;
    g.write_words(gm.b, &b)?;
    let want = vgpu_vfio::reference::gemm(&a, &b, d, d, d).ok_or(Fail("reference".into()))?;
    Ok((gm, want))
}

#[cfg(test)]
mod tests {
    use super::super::RING_SIZE;
    use super::*;
    use crate::workload::MIB;
    use vgpu_vfio::reference::{validate, Limits, ScanoutMode};

    #[test]
    fn programs_are_valid() {
        let mode = Mode {
            xres: 320,
            yres: 200,
            bpp: 32,
            virt_width: 0,
            x_off: 0,
            y_off: 0,
        };
        let lim = Limits {
            vram_size: 128 * MIB,
            ring_size: RING_SIZE,
            mode: Some(ScanoutMode {
                xres: 320,
                yres: 200,
                bytes_pp: 4,
                stride: mode.stride(),
                start: mode.start(),
            }),
        };
        let mut rng = Rng::new(0x5eed_e7ec);
        for (i, c) in program(&mut rng, &mode, 4000).iter().enumerate() {
            let v = validate(&c.raw(), &lim);
            assert!(v.is_valid(), "command {i}: {c:?}: {v:?}");
        }
    }
}
