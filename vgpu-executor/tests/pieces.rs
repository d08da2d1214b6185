//! Pieces of commands as the kernel hands them in external mode (`exec::Sqe`), on the
//! GPU against `vgpu_engine_abi::exec::apply_piece`: every opcode that has pieces, on
//! random inputs with random piece boundaries, one piece per submission and many in
//! one; the pieces of a command composing to `reference::apply` of the whole; pieces
//! that must be refused changing nothing.

mod common;

use common::{executor, Rng};
use vgpu_engine_abi::exec::{apply_piece, Sqe, SqeKind};
use vgpu_engine_abi::reference::{self, Limits, ScanoutMode};
use vgpu_engine_abi::{Cmd, RawCmd};
use vgpu_executor::{Error, Executor, Pieces, Vram, MAX_BATCH};

const VRAM: usize = 256 << 10;
const V: u64 = VRAM as u64;

/// Tiny dispatch pieces: each handed piece is split into several dispatches too.
const TINY: Pieces = Pieces {
    copy_bytes: 61,
    checksum_words: 7,
    gemm_macs: 50,
};

fn sqe(cmd: RawCmd, mode: Option<ScanoutMode>, start: u64, count: u64, state: u64) -> Sqe {
    Sqe {
        seq: 1,
        kind: Some(SqeKind::Piece),
        id: 1,
        vram_size: V,
        start,
        count,
        state,
        mode,
        cmd,
    }
}

fn random_mode(rng: &mut Rng, v: u64) -> ScanoutMode {
    let bytes_pp = rng.range(2, 4);
    let xres = rng.range(1, 120);
    let yres = rng.range(1, 60);
    let stride = xres * bytes_pp + rng.range(0, 3) * rng.range(0, 9);
    ScanoutMode {
        xres,
        yres,
        bytes_pp,
        stride,
        start: rng.range(0, v - stride * yres),
    }
}

fn len_upto(rng: &mut Rng, max: u64) -> u64 {
    if rng.chance(50) {
        rng.range(1, 64.min(max))
    } else {
        rng.range(1, max)
    }
}

/// A random valid command of opcode kind `op` (0 FILL, 1 COPY, 2 CHECKSUM, 3 GEMM,
/// 4 BLIT), its scanout mode, and its units (bytes, elements of C, rows).
fn random_cmd(rng: &mut Rng, op: u64) -> (Cmd, Option<ScanoutMode>, u64) {
    random_cmd_in(rng, op, V)
}

/// As [`random_cmd`], in a VRAM of `v` bytes.
fn random_cmd_in(rng: &mut Rng, op: u64, v: u64) -> (Cmd, Option<ScanoutMode>, u64) {
    loop {
        let (cmd, mode, units) = match op {
            0 => {
                let len = 4 * len_upto(rng, v / 16);
                let dst = 4 * rng.range(0, (v - len) / 4);
                let value = rng.next() as u32;
                (Cmd::Fill { dst, len, value }, None, len)
            }
            1 => {
                let len = len_upto(rng, v / 4);
                let src = rng.range(0, v - len);
                let dst = if rng.chance(40) {
                    let d = rng.range(1, len.min(300));
                    if rng.chance(50) && src >= d {
                        src - d
                    } else {
                        (src + d).min(v - len)
                    }
                } else {
                    rng.range(0, v - len)
                };
                (Cmd::Copy { dst, src, len }, None, len)
            }
            2 => {
                let len = 4 * len_upto(rng, v / 16);
                let src = 4 * rng.range(0, (v - len) / 4);
                let dst = 8 * rng.range(0, v / 8 - 1);
                (Cmd::Checksum { src, len, dst }, None, len)
            }
            3 => {
                let (m, n, k) = (rng.range(1, 40), rng.range(1, 40), rng.range(1, 40));
                let place = |rng: &mut Rng, words: u64| 4 * rng.range(0, v / 4 - words);
                let a = place(rng, m * k);
                let b = place(rng, k * n);
                let c = if rng.chance(20) {
                    // C overlaps A (a piece reads all before it writes: apply_piece).
                    (a + 4 * rng.range(0, m * k)).min(v - 4 * m * n)
                } else {
                    place(rng, m * n)
                };
                (Cmd::Gemm { a, b, c, m, n, k }, None, m * n)
            }
            _ => {
                let md = random_mode(rng, v);
                let (width, height) = (rng.range(1, md.xres), rng.range(1, md.yres));
                let (dst_x, dst_y) = (
                    rng.range(0, md.xres - width),
                    rng.range(0, md.yres - height),
                );
                let row = width * md.bytes_pp;
                let src_stride = match rng.range(0, 2) {
                    0 => row + rng.range(0, 40),
                    1 => rng.range(0, row),
                    _ => md.stride,
                };
                let span = (height - 1) * src_stride + row;
                let src = if rng.chance(30) {
                    let first = md.pixel_offset(dst_x, dst_y);
                    (first + rng.range(0, 2 * md.stride))
                        .saturating_sub(rng.range(0, 2 * md.stride))
                        .min(v - span)
                } else {
                    rng.range(0, v - span)
                };
                let blit = Cmd::Blit {
                    src,
                    src_stride,
                    width,
                    height,
                    dst_x,
                    dst_y,
                };
                (blit, Some(md), height)
            }
        };
        let lim = Limits {
            vram_size: v,
            ring_size: 1 << 20,
            mode,
        };
        if !reference::validate(&cmd.raw(), &lim).must_fail() {
            return (cmd, mode, units);
        }
    }
}

/// Random piece boundaries over `units` (multiples of `align`), in the order and of the
/// sizes the kernel's rules allow for the whole command to be the pieces' composition:
/// an overlapping COPY in pieces of at most |dst - src| bytes, top down when the
/// destination lies above the source.
fn split(rng: &mut Rng, cmd: &Cmd, units: u64) -> Vec<(u64, u64)> {
    let align = match cmd {
        Cmd::Fill { .. } | Cmd::Checksum { .. } => 4,
        _ => 1,
    };
    let (mut max, mut down) = (units, false);
    if let Cmd::Copy { dst, src, len } = *cmd {
        if dst != src && dst.abs_diff(src) < len {
            max = dst.abs_diff(src);
            down = dst > src;
        }
    }
    let mut out = vec![];
    let mut at = 0;
    while at < units {
        let left = (units - at) / align;
        let cap = (max / align).max(1).min(left);
        let hi = if rng.chance(30) { cap.min(3) } else { cap };
        let n = align * rng.range(1, hi);
        out.push((at, n));
        at += n;
    }
    if down {
        out.reverse();
    }
    out
}

fn image_of(vram: &Vram<'_>) -> Vec<u8> {
    vram.bytes().to_vec()
}

fn differ(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
        let n = got.iter().zip(want).filter(|(a, b)| a != b).count();
        panic!(
            "GPU and reference differ: {n} bytes, first at {first:#x} (gpu {:#04x}, reference {:#04x}) after {what}",
            got[first], want[first]
        );
    }
}

/// Every piece on the GPU and with apply_piece side by side (one submission each, or
/// all of a command's pieces batched), then the whole command's reference.
fn run_command(ex: &Executor, vram: &mut Vram<'_>, rng: &mut Rng, op: u64, batched: bool) {
    let (cmd, mode, units) = random_cmd(rng, op);
    let raw = cmd.raw();
    let before = image_of(vram);
    let mut image = before.clone();
    let pieces = split(rng, &cmd, units);
    let mut state = reference::fnv1a64_words([]);
    let mut sqes = vec![];
    let mut values = vec![];
    for &(start, count) in &pieces {
        let s = sqe(raw, mode, start, count, state);
        let v = apply_piece(&mut image, &s).expect("apply_piece refused a generated piece");
        if matches!(cmd, Cmd::Checksum { .. }) {
            state = v;
        }
        sqes.push(s);
        values.push(v);
    }
    if batched {
        for (chunk, want) in sqes.chunks(MAX_BATCH).zip(values.chunks(MAX_BATCH)) {
            let work: Vec<_> = chunk.iter().map(|s| (0, *s)).collect();
            let got = ex
                .execute_pieces(&mut [&mut *vram], &work)
                .expect("execute_pieces");
            for (g, w) in got.into_iter().zip(want) {
                assert_eq!(g.expect("piece refused"), *w, "{cmd:?}");
            }
        }
        differ(
            vram.bytes(),
            &image,
            &format!("{cmd:?} in pieces {pieces:?}"),
        );
    } else {
        let mut step = before.clone();
        for (s, want) in sqes.iter().zip(&values) {
            let got = ex.execute_piece(vram, s).expect("execute_piece");
            apply_piece(&mut step, s).expect("apply_piece");
            differ(
                vram.bytes(),
                &step,
                &format!("{cmd:?} piece [{}, +{})", s.start, s.count),
            );
            assert_eq!(
                got, *want,
                "value of {cmd:?} piece [{}, +{})",
                s.start, s.count
            );
        }
    }
    // The pieces compose to the whole command (a GEMM whose C overlaps A or B does not:
    // its pieces read all before they write; the kernel keeps it on the CPU).
    let overlapping_gemm = matches!(cmd, Cmd::Gemm { a, b, c, m, n, k }
        if reference::overlaps(c, 4 * m * n, a, 4 * m * k) || reference::overlaps(c, 4 * m * n, b, 4 * k * n));
    if !overlapping_gemm {
        let mut whole = before.clone();
        reference::apply(&mut whole, &raw, mode.as_ref()).expect("reference");
        if let Cmd::Checksum { src, len, .. } = cmd {
            let want = reference::fnv1a64_bytes(&before[src as usize..(src + len) as usize]);
            assert_eq!(Some(state), want, "CHECKSUM state through the pieces");
            // The kernel stores the result; the pieces write nothing.
            differ(vram.bytes(), &image, "CHECKSUM pieces");
        } else {
            differ(
                vram.bytes(),
                &whole,
                &format!("{cmd:?}: pieces vs the whole"),
            );
        }
    }
}

fn each_opcode(name: &str, op: u64) {
    let Some(ex) = executor() else { return };
    let mut vram = ex.alloc_vram(VRAM).expect("alloc_vram");
    for (round, pieces) in [Pieces::default(), TINY].into_iter().enumerate() {
        ex.set_pieces(pieces);
        let mut rng = Rng(1000 * op + round as u64);
        rng.fill(vram.bytes_mut());
        for i in 0..40 {
            run_command(&ex, &mut vram, &mut rng, op, i % 2 == 1);
        }
    }
    let n = ex.counters();
    assert!(n.pieces > 80, "{name}: {n:?}");
    assert_eq!(n.rejected, 0, "{name}: {n:?}");
}

#[test]
fn fill_pieces() {
    each_opcode("FILL", 0);
}

#[test]
fn copy_pieces() {
    each_opcode("COPY", 1);
}

#[test]
fn checksum_pieces() {
    each_opcode("CHECKSUM", 2);
}

#[test]
fn gemm_pieces() {
    each_opcode("GEMM", 3);
}

#[test]
fn blit_pieces() {
    each_opcode("BLIT", 4);
}

/// Pieces of several instances interleaved in one submission, each on its own VRAM.
#[test]
fn batches_across_vrams() {
    let Some(ex) = executor() else { return };
    let mut rng = Rng(77);
    let mut v0 = ex.alloc_vram(VRAM).expect("alloc_vram");
    let mut v1 = ex.alloc_vram(VRAM).expect("alloc_vram");
    rng.fill(v0.bytes_mut());
    rng.fill(v1.bytes_mut());
    let mut images = [image_of(&v0), image_of(&v1)];
    let mut work = vec![];
    let mut want = vec![];
    for i in 0..MAX_BATCH {
        let (cmd, mode, units) = random_cmd(&mut rng, i as u64 % 5);
        let start = if matches!(cmd, Cmd::Fill { .. } | Cmd::Checksum { .. }) {
            4 * rng.range(0, units / 4 - 1)
        } else {
            rng.range(0, units - 1)
        };
        let max = units - start;
        let count = if matches!(cmd, Cmd::Fill { .. } | Cmd::Checksum { .. }) {
            4 * rng.range(1, max / 4)
        } else {
            rng.range(1, max)
        };
        let s = sqe(cmd.raw(), mode, start, count, rng.next());
        let which = rng.range(0, 1) as usize;
        want.push(apply_piece(&mut images[which], &s).expect("apply_piece"));
        work.push((which, s));
    }
    let got = ex
        .execute_pieces(&mut [&mut v0, &mut v1], &work)
        .expect("execute_pieces");
    for ((g, w), (_, s)) in got.into_iter().zip(want).zip(&work) {
        assert_eq!(g.expect("refused"), w, "{s:?}");
    }
    differ(v0.bytes(), &images[0], "a batch (VRAM 0)");
    differ(v1.bytes(), &images[1], "a batch (VRAM 1)");
    assert_eq!(ex.counters().submits, 1);
}

/// What apply_piece refuses, and what does not fit this VRAM, is refused and changes
/// nothing; the other pieces of the same batch run.
#[test]
fn refused_pieces_change_nothing() {
    let Some(ex) = executor() else { return };
    let mut rng = Rng(99);
    let mut vram = ex.alloc_vram(VRAM).expect("alloc_vram");
    rng.fill(vram.bytes_mut());
    let fill = Cmd::Fill {
        dst: 4096,
        len: 64,
        value: 7,
    }
    .raw();
    let md = ScanoutMode {
        xres: 8,
        yres: 8,
        bytes_pp: 4,
        stride: 32,
        start: 0,
    };
    let blit = Cmd::Blit {
        src: 8192,
        src_stride: 32,
        width: 8,
        height: 8,
        dst_x: 0,
        dst_y: 0,
    }
    .raw();
    let mut retire = sqe(fill, None, 0, 4, 0);
    retire.kind = Some(SqeKind::Retire);
    let mut unknown = sqe(fill, None, 0, 4, 0);
    unknown.kind = None;
    let bad = [
        ("past the command", sqe(fill, None, 60, 8, 0)),
        ("misaligned", sqe(fill, None, 2, 4, 0)),
        ("no units", sqe(fill, None, 0, 0, 0)),
        ("units past 2^64", sqe(fill, None, u64::MAX, 2, 0)),
        ("NOP", sqe(Cmd::Nop.raw(), None, 0, 1, 0)),
        ("FENCE", sqe(Cmd::fence(3).raw(), None, 0, 1, 0)),
        ("BLIT without a mode", sqe(blit, None, 0, 1, 0)),
        ("BLIT past its rows", sqe(blit, Some(md), 7, 2, 0)),
        (
            "BLIT's scanout outside VRAM",
            sqe(
                blit,
                Some(ScanoutMode {
                    start: V - 64,
                    ..md
                }),
                0,
                1,
                0,
            ),
        ),
        (
            "FILL outside VRAM",
            sqe(
                Cmd::Fill {
                    dst: V - 4,
                    len: 8,
                    value: 1,
                }
                .raw(),
                None,
                0,
                4,
                0,
            ),
        ),
        (
            "COPY outside VRAM",
            sqe(
                Cmd::Copy {
                    dst: V,
                    src: 0,
                    len: 1,
                }
                .raw(),
                None,
                0,
                1,
                0,
            ),
        ),
        ("a RETIRE entry", retire),
        ("an unknown kind", unknown),
    ];
    let before = image_of(&vram);
    for (what, s) in &bad {
        // The executor refuses more than apply_piece (which looks at neither the kind
        // nor the whole command): a command outside the VRAM even where the piece
        // lies inside, and entries that are not pieces.
        let executor_only = [
            "BLIT's scanout outside VRAM",
            "FILL outside VRAM",
            "a RETIRE entry",
            "an unknown kind",
        ];
        assert!(
            apply_piece(&mut before.clone(), s).is_none() || executor_only.contains(what),
            "{what}: apply_piece accepts it"
        );
        match ex.execute_piece(&mut vram, s) {
            Err(Error::Rejected(_)) => {}
            r => panic!("{what}: {r:?}"),
        }
        differ(vram.bytes(), &before, what);
    }
    assert_eq!(ex.counters().submits, 0, "nothing was submitted");
    assert_eq!(ex.counters().rejected, bad.len() as u64);
    // In a batch: the good piece runs, the bad ones are refused.
    let good = sqe(fill, None, 0, 64, 0);
    let mut image = before.clone();
    apply_piece(&mut image, &good).expect("apply_piece");
    let work = [(0, bad[0].1), (0, good), (1, good), (0, bad[5].1)];
    let got = ex
        .execute_pieces(&mut [&mut vram], &work)
        .expect("execute_pieces");
    assert!(matches!(got[0], Err(Error::Rejected(_))), "{got:?}");
    assert_eq!(got[1], Ok(0));
    assert!(
        matches!(got[2], Err(Error::Rejected(_))),
        "no VRAM 1: {got:?}"
    );
    assert!(matches!(got[3], Err(Error::Rejected(_))), "{got:?}");
    differ(vram.bytes(), &image, "a batch with refused pieces");
    let too_many = vec![(0, good); MAX_BATCH + 1];
    assert!(ex.execute_pieces(&mut [&mut vram], &too_many).is_err());
}

/// A piece of a GEMM whose C overlaps A reads every element before it writes one
/// (apply_piece): through the scratch buffer, so such a piece larger than it (4 MiB of
/// C) is refused, a smaller one runs.
#[test]
fn overlapping_gemm_pieces_fit_scratch() {
    let Some(ex) = executor() else { return };
    let len = 8 << 20;
    let mut vram = ex.alloc_vram(len).expect("alloc_vram");
    Rng(5).fill(vram.bytes_mut());
    let before = image_of(&vram);
    let mut s = sqe(
        Cmd::Gemm {
            a: 0,
            b: 64,
            c: 0,
            m: 1100,
            n: 1000,
            k: 1,
        }
        .raw(),
        None,
        0,
        1100 * 1000,
        0,
    );
    s.vram_size = len as u64;
    match ex.execute_piece(&mut vram, &s) {
        Err(Error::Rejected(e)) => assert!(e.contains("scratch"), "{e}"),
        r => panic!("{r:?}"),
    }
    differ(vram.bytes(), &before, "a refused GEMM piece");
    s.start = 1000;
    s.count = 1 << 20;
    let mut image = before;
    apply_piece(&mut image, &s).expect("apply_piece");
    assert_eq!(ex.execute_piece(&mut vram, &s), Ok(0));
    differ(
        vram.bytes(),
        &image,
        "an overlapping GEMM piece of 2^20 elements",
    );
}

/// A VRAM larger than one binding (two windows' worth): pieces anywhere in it run in
/// the window that holds them, with apply_piece's bytes; a piece no window holds is
/// refused and changes nothing.
#[test]
fn windowed_vram() {
    let Some(ex) = executor() else { return };
    let win = ex.window_size();
    let len = 2 * win;
    if len > ex.max_vram_size() {
        eprintln!("SKIPPED: windows of {win:#x} bytes: a VRAM of two is more than 4 GiB");
        return;
    }
    let mut vram = ex.alloc_vram(len as usize).expect("alloc_vram");
    assert!(vram.windowed());
    let mut image = vec![0u8; len as usize];
    let mut rng = Rng(4242);
    // Regions at the start, across the first window's middle, across its end, inside
    // the second, at the end (each small enough to lie in one window).
    let region = 2 << 20;
    let bases = [
        0,
        win / 2 - (1 << 20),
        win - (512 << 10),
        win + win / 4,
        len - region,
    ];
    for &b in &bases {
        let r = b as usize..(b + region) as usize;
        rng.fill(&mut vram.bytes_mut()[r.clone()]);
        image[r.clone()].copy_from_slice(&vram.bytes()[r]);
    }
    for (i, &base) in bases.iter().enumerate() {
        for j in 0..25 {
            let (cmd, mode, units) = random_cmd_in(&mut rng, (i + j) as u64 % 5, region);
            let (cmd, mode) = offset(cmd, mode, base);
            let mut state = rng.next();
            for (start, count) in split(&mut rng, &cmd, units) {
                let mut s = sqe(cmd.raw(), mode, start, count, state);
                s.vram_size = len;
                let want = apply_piece(&mut image, &s).expect("apply_piece");
                let got = ex.execute_piece(&mut vram, &s).expect("execute_piece");
                assert_eq!(got, want, "{cmd:?} piece [{start}, +{count})");
                if matches!(cmd, Cmd::Checksum { .. }) {
                    state = got;
                }
            }
            let r = base as usize..(base + region) as usize;
            differ(
                &vram.bytes()[r.clone()],
                &image[r],
                &format!("{cmd:?} at {base:#x}"),
            );
        }
    }
    differ(vram.bytes(), &image, "all pieces (the whole VRAM)");
    // Bytes in two windows: refused, nothing changes.
    let mut s = sqe(
        Cmd::Copy {
            dst: win + win / 2 + 8,
            src: 0,
            len: 64,
        }
        .raw(),
        None,
        0,
        64,
        0,
    );
    s.vram_size = len;
    match ex.execute_piece(&mut vram, &s) {
        Err(Error::Rejected(e)) => assert!(e.contains("window"), "{e}"),
        r => panic!("{r:?}"),
    }
    differ(vram.bytes(), &image, "a refused piece");
    // Whole commands need one binding.
    assert!(matches!(
        ex.execute(&mut vram, &[Cmd::Nop.raw()], None),
        Err(Error::Vram(_))
    ));
}

/// `cmd` (and its scanout) moved up by `base` bytes.
fn offset(cmd: Cmd, mode: Option<ScanoutMode>, base: u64) -> (Cmd, Option<ScanoutMode>) {
    let cmd = match cmd {
        Cmd::Fill { dst, len, value } => Cmd::Fill {
            dst: dst + base,
            len,
            value,
        },
        Cmd::Copy { dst, src, len } => Cmd::Copy {
            dst: dst + base,
            src: src + base,
            len,
        },
        Cmd::Checksum { src, len, dst } => Cmd::Checksum {
            src: src + base,
            len,
            dst: dst + base,
        },
        Cmd::Gemm { a, b, c, m, n, k } => Cmd::Gemm {
            a: a + base,
            b: b + base,
            c: c + base,
            m,
            n,
            k,
        },
        Cmd::Blit {
            src,
            src_stride,
            width,
            height,
            dst_x,
            dst_y,
        } => Cmd::Blit {
            src: src + base,
            src_stride,
            width,
            height,
            dst_x,
            dst_y,
        },
        other => other,
    };
    let mode = mode.map(|m| ScanoutMode {
        start: m.start + base,
        ..m
    });
    (cmd, mode)
}
