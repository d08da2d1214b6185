//! Every opcode on the GPU (lavapipe in CI) against vgpu-engine-abi's reference, on
//! random inputs: sizes, offsets, overlaps, the end of VRAM, pieces small and large.

mod common;

use common::{executor, Pair, Rng};
use vgpu_engine_abi::layout::engine as reg;
use vgpu_engine_abi::reference::ScanoutMode;
use vgpu_engine_abi::{Cmd, RawCmd};
use vgpu_executor::Pieces;

const VRAM: usize = 256 << 10;

/// Tiny pieces: every long command is split many times.
const TINY: Pieces = Pieces {
    copy_bytes: 61,
    checksum_words: 7,
    gemm_macs: 50,
};

fn both_pieces(f: impl Fn(&vgpu_executor::Executor, u64)) {
    let Some(ex) = executor() else { return };
    f(&ex, 1);
    ex.set_pieces(TINY);
    f(&ex, 2);
}

fn len_upto(rng: &mut Rng, max: u64) -> u64 {
    // Mostly small, sometimes large: edge cases are at the small end.
    if rng.chance(50) {
        rng.range(1, 64.min(max))
    } else {
        rng.range(1, max)
    }
}

#[test]
fn fill() {
    both_pieces(|ex, seed| {
        let mut rng = Rng(seed);
        let mut p = Pair::new(ex, VRAM, &mut rng);
        let v = VRAM as u64;
        let mut cmds = vec![
            Cmd::Fill {
                dst: 0,
                len: v,
                value: 0xdead_beef,
            },
            Cmd::Fill {
                dst: v - 4,
                len: 4,
                value: 7,
            },
            Cmd::Fill {
                dst: 0,
                len: 4,
                value: u32::MAX,
            },
        ];
        for _ in 0..100 {
            let len = 4 * len_upto(&mut rng, v / 4);
            let dst = 4 * rng.range(0, (v - len) / 4);
            cmds.push(Cmd::Fill {
                dst,
                len,
                value: rng.next() as u32,
            });
        }
        for c in cmds {
            p.run(&[c.raw()]);
        }
    });
}

#[test]
fn copy_memmove() {
    both_pieces(|ex, seed| {
        let mut rng = Rng(seed + 10);
        let mut p = Pair::new(ex, VRAM, &mut rng);
        let v = VRAM as u64;
        let mut cmds = vec![
            Cmd::Copy {
                dst: 1,
                src: 0,
                len: v - 1,
            },
            Cmd::Copy {
                dst: 0,
                src: 3,
                len: v - 3,
            },
            Cmd::Copy {
                dst: v - 1,
                src: 0,
                len: 1,
            },
            Cmd::Copy {
                dst: 5,
                src: 5,
                len: 100,
            },
        ];
        for i in 0..150 {
            let len = len_upto(&mut rng, v / 2);
            let src = rng.range(0, v - len);
            let dst = if i % 3 == 0 {
                // Overlapping, either direction, by a few bytes or more.
                let d = rng.range(1, len.min(70));
                if rng.chance(50) && src >= d {
                    src - d
                } else {
                    (src + d).min(v - len)
                }
            } else {
                rng.range(0, v - len)
            };
            cmds.push(Cmd::Copy { dst, src, len });
        }
        for c in cmds {
            p.run(&[c.raw()]);
        }
    });
}

#[test]
fn checksum() {
    both_pieces(|ex, seed| {
        let mut rng = Rng(seed + 20);
        let mut p = Pair::new(ex, VRAM, &mut rng);
        let v = VRAM as u64;
        let mut cmds = vec![
            Cmd::Checksum {
                src: 0,
                len: v,
                dst: v - 8,
            },
            Cmd::Checksum {
                src: v - 4,
                len: 4,
                dst: 0,
            },
            // The result lands inside the range it hashed.
            Cmd::Checksum {
                src: 64,
                len: 4096,
                dst: 128,
            },
        ];
        for _ in 0..60 {
            let len = 4 * len_upto(&mut rng, v / 4 / 4);
            let src = 4 * rng.range(0, (v - len) / 4);
            let dst = 8 * rng.range(0, v / 8 - 1);
            cmds.push(Cmd::Checksum { src, len, dst });
        }
        for c in cmds {
            p.run(&[c.raw()]);
        }
    });
}

fn gemm_cmd(rng: &mut Rng, v: u64, max_dim: u64, overlap: bool) -> Cmd {
    let (m, n, k) = (
        rng.range(1, max_dim),
        rng.range(1, max_dim),
        rng.range(1, max_dim),
    );
    let place = |rng: &mut Rng, words: u64| 4 * rng.range(0, v / 4 - words);
    let a = place(rng, m * k);
    let b = place(rng, k * n);
    let c = if overlap {
        // C starts inside A or B (or before it and runs into it).
        let (base, words) = if rng.chance(50) {
            (a, m * k)
        } else {
            (b, k * n)
        };
        let shift = 4 * rng.range(0, words);
        (base + shift)
            .saturating_sub(4 * rng.range(0, 8))
            .min(v - 4 * m * n)
    } else {
        place(rng, m * n)
    };
    Cmd::Gemm { a, b, c, m, n, k }
}

#[test]
fn gemm() {
    both_pieces(|ex, seed| {
        let mut rng = Rng(seed + 30);
        let mut p = Pair::new(ex, VRAM, &mut rng);
        let v = VRAM as u64;
        let mut cmds = vec![
            Cmd::Gemm {
                a: 0,
                b: 4,
                c: v - 4,
                m: 1,
                n: 1,
                k: 1,
            },
            // In place: C is A (element order matters).
            Cmd::Gemm {
                a: 0,
                b: 4096,
                c: 0,
                m: 9,
                n: 9,
                k: 9,
            },
            Cmd::Gemm {
                a: 0,
                b: 40_000,
                c: 100_000,
                m: 70,
                n: 90,
                k: 33,
            },
            Cmd::Gemm {
                a: 0,
                b: 400,
                c: 100_000,
                m: 1,
                n: 2000,
                k: 3,
            },
        ];
        for i in 0..80 {
            cmds.push(gemm_cmd(&mut rng, v, 24, i % 4 == 0));
        }
        for c in cmds {
            p.run(&[c.raw()]);
        }
    });
}

fn random_mode(rng: &mut Rng, v: u64) -> ScanoutMode {
    let bytes_pp = rng.range(2, 4);
    let xres = rng.range(1, 200);
    let yres = rng.range(1, 100);
    let stride = xres * bytes_pp + rng.range(0, 3) * rng.range(0, 9);
    let start = rng.range(0, v - stride * yres);
    ScanoutMode {
        xres,
        yres,
        bytes_pp,
        stride,
        start,
    }
}

#[test]
fn blit() {
    both_pieces(|ex, seed| {
        let mut rng = Rng(seed + 40);
        let mut p = Pair::new(ex, VRAM, &mut rng);
        let v = VRAM as u64;
        for i in 0..120 {
            if i % 10 == 0 {
                p.mode = Some(random_mode(&mut rng, v));
            }
            let md = p.mode.expect("mode");
            let (width, height) = (rng.range(1, md.xres), rng.range(1, md.yres));
            let (dst_x, dst_y) = (
                rng.range(0, md.xres - width),
                rng.range(0, md.yres - height),
            );
            let row = width * md.bytes_pp;
            // Rows apart, packed, or overlapping each other.
            let src_stride = match i % 3 {
                0 => row + rng.range(0, 40),
                1 => rng.range(0, row),
                _ => md.stride,
            };
            let span = (height - 1) * src_stride + row;
            let src = if i % 4 == 0 {
                // The source overlaps the destination rectangle.
                let first = md.pixel_offset(dst_x, dst_y);
                (first + rng.range(0, 2 * md.stride))
                    .saturating_sub(rng.range(0, 2 * md.stride))
                    .min(v - span)
            } else {
                rng.range(0, v - span)
            };
            p.run(&[Cmd::Blit {
                src,
                src_stride,
                width,
                height,
                dst_x,
                dst_y,
            }
            .raw()]);
        }
    });
}

#[test]
fn fence_nop_jump_and_batches() {
    both_pieces(|ex, seed| {
        let mut rng = Rng(seed + 50);
        let mut p = Pair::new(ex, VRAM, &mut rng);
        let v = VRAM as u64;
        p.mode = Some(random_mode(&mut rng, v));
        let fence = |seqno, addr| Cmd::Fence {
            seqno,
            addr,
            irq: true,
            write: true,
        };
        p.run(&[
            fence(u64::MAX, v - 8).raw(),
            Cmd::Nop.raw(),
            Cmd::Jump { target: 64 }.raw(),
            Cmd::fence(3).raw(),
        ]);
        // A random mix in one submission: each command sees the ones before it.
        for round in 0..10 {
            let mut cmds = Vec::new();
            for _ in 0..rng.range(1, 30) {
                let c = match rng.range(0, 5) {
                    0 => {
                        let len = 4 * rng.range(1, 1000);
                        Cmd::Fill {
                            dst: 4 * rng.range(0, (v - len) / 4),
                            len,
                            value: rng.next() as u32,
                        }
                    }
                    1 => {
                        let len = rng.range(1, 5000);
                        let src = rng.range(0, v - len);
                        Cmd::Copy {
                            dst: (src + rng.range(0, 9)).min(v - len),
                            src,
                            len,
                        }
                    }
                    2 => {
                        let len = 4 * rng.range(1, 2000);
                        Cmd::Checksum {
                            src: 4 * rng.range(0, (v - len) / 4),
                            len,
                            dst: 8 * rng.range(0, v / 8 - 1),
                        }
                    }
                    3 => {
                        let overlap = rng.chance(30);
                        gemm_cmd(&mut rng, v, 12, overlap)
                    }
                    4 => {
                        let md = p.mode.expect("mode");
                        Cmd::Blit {
                            src: rng.range(0, v / 2),
                            src_stride: rng.range(0, 800),
                            width: 1 + md.xres / 2,
                            height: md.yres,
                            dst_x: 0,
                            dst_y: 0,
                        }
                    }
                    _ => fence(rng.next(), 8 * rng.range(0, v / 8 - 1)),
                };
                cmds.push(c.raw());
            }
            cmds.push(fence(round, 0).raw());
            p.run(&cmds);
        }
    });
}

#[test]
fn refused_commands_change_nothing() {
    let Some(ex) = executor() else { return };
    let mut rng = Rng(60);
    let mut p = Pair::new(&ex, VRAM, &mut rng);
    let v = VRAM as u64;
    let bad = [
        Cmd::Copy {
            dst: 0,
            src: 8,
            len: 0,
        },
        Cmd::Fill {
            dst: 0,
            len: 0,
            value: 1,
        },
        Cmd::Fill {
            dst: v - 4,
            len: 8,
            value: 1,
        },
        Cmd::Copy {
            dst: v - 1,
            src: 0,
            len: 2,
        },
        Cmd::Copy {
            dst: 0,
            src: u64::MAX,
            len: 2,
        },
        Cmd::Checksum {
            src: 0,
            len: 8,
            dst: 4,
        },
        Cmd::Gemm {
            a: 0,
            b: 0,
            c: 0,
            m: 0,
            n: 1,
            k: 1,
        },
        Cmd::Gemm {
            a: 0,
            b: 0,
            c: v - 4,
            m: 1,
            n: 2,
            k: 1,
        },
        // No mode: BLIT cannot run.
        Cmd::Blit {
            src: 0,
            src_stride: 4,
            width: 1,
            height: 1,
            dst_x: 0,
            dst_y: 0,
        },
        Cmd::Raw(RawCmd::new(0x08, 0, [0; 7])),
        Cmd::Raw(RawCmd::new(reg::OP_FILL, 1, [0, 4, 0, 0, 0, 0, 0])),
    ];
    for c in bad {
        // A good command first: the whole submission is refused, so it does not run either.
        let cmds = [
            Cmd::Fill {
                dst: 0,
                len: v,
                value: 0,
            }
            .raw(),
            c.raw(),
        ];
        let r = ex.execute(&mut p.vram, &cmds, None);
        assert!(
            matches!(r, Err(vgpu_executor::Error::Rejected(_))),
            "{c:?} gave {r:?}"
        );
        p.compare(&cmds);
    }
    // The scanout itself must lie inside VRAM.
    let md = ScanoutMode {
        xres: 16,
        yres: 16,
        bytes_pp: 4,
        stride: 64,
        start: v - 512,
    };
    let blit = Cmd::Blit {
        src: 0,
        src_stride: 64,
        width: 16,
        height: 16,
        dst_x: 0,
        dst_y: 0,
    };
    assert!(ex.execute(&mut p.vram, &[blit.raw()], Some(md)).is_err());
    p.compare(&[blit.raw()]);
    // A mode that is not displayable (stride 0, pixels of 5 bytes, overlapping rows).
    for md in [
        ScanoutMode { stride: 0, ..md },
        ScanoutMode { bytes_pp: 5, ..md },
        ScanoutMode {
            start: 0,
            stride: 63,
            ..md
        },
    ] {
        let blit = Cmd::Blit {
            src: 0,
            src_stride: 64,
            width: 1,
            height: 1,
            dst_x: 0,
            dst_y: 0,
        };
        assert!(
            ex.execute(&mut p.vram, &[blit.raw()], Some(md)).is_err(),
            "{md:?}"
        );
        p.compare(&[blit.raw()]);
    }
    assert_eq!(ex.counters().rejected, bad.len() as u64 + 4);
}

/// k up to the ABI's 65536, and checksums past 65535 words: llvmpipe ends any shader
/// loop after 65535 iterations, so the executor keeps every loop shorter.
#[test]
fn long_loops() {
    let Some(ex) = executor() else { return };
    let mut rng = Rng(70);
    let v = 1u64 << 20;
    let mut p = Pair::new(&ex, v as usize, &mut rng);
    let k = 65536;
    p.run(&[
        Cmd::Checksum {
            src: 0,
            len: v,
            dst: 0,
        }
        .raw(),
        Cmd::Checksum {
            src: 4,
            len: 4 * 65536,
            dst: v - 8,
        }
        .raw(),
        Cmd::Gemm {
            a: 0,
            b: 4 * k,
            c: 8 * k,
            m: 1,
            n: 1,
            k,
        }
        .raw(),
        Cmd::Gemm {
            a: 0,
            b: 4 * k,
            c: 8 * k,
            m: 2,
            n: 1,
            k: k - 1,
        }
        .raw(),
        // Serial (C overlaps A).
        Cmd::Gemm {
            a: 0,
            b: 4 * k,
            c: 4,
            m: 1,
            n: 2,
            k: k / 2,
        }
        .raw(),
        // Serial with more than 65535 elements (k = 1: one dispatch could take them all).
        Cmd::Gemm {
            a: 0,
            b: 4 * k,
            c: 4,
            m: 256,
            n: 300,
            k: 1,
        }
        .raw(),
    ]);
}

/// BLITs of one batch into different scanout modes (the kernel snapshots the mode when
/// it validates each BLIT).
#[test]
fn blit_modes_per_command() {
    let Some(ex) = executor() else { return };
    let mut rng = Rng(100);
    let mut p = Pair::new(&ex, VRAM, &mut rng);
    let v = VRAM as u64;
    let mut work = Vec::new();
    for _ in 0..20 {
        let md = random_mode(&mut rng, v);
        let (width, height) = (rng.range(1, md.xres), rng.range(1, md.yres));
        let row = width * md.bytes_pp;
        let src_stride = rng.range(0, 2 * row);
        let src = rng.range(0, v - (height - 1) * src_stride - row);
        let blit = Cmd::Blit {
            src,
            src_stride,
            width,
            height,
            dst_x: md.xres - width,
            dst_y: md.yres - height,
        }
        .raw();
        vgpu_engine_abi::reference::apply(&mut p.image, &blit, Some(&md)).expect("reference");
        work.push((blit, Some(md)));
    }
    ex.execute_modes(&mut p.vram, &work).expect("execute_modes");
    let cmds: Vec<_> = work.iter().map(|w| w.0).collect();
    p.compare(&cmds);
}
