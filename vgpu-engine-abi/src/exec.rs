//! The external executor's handoff queue (docs/executor.md, "The handoff queue"): the
//! layout the module shares with the `vgpu-executor` daemon through
//! `/dev/vgpu-exec/<parent>`, and what each piece of work must do ([`apply_piece`]).
//! The C side is `kmod-shim/vgpu_exec_abi.h`; change both together.
//!
//! mmap offset 0, [`QUEUE_BYTES`] long: a header page ([`hdr`] offsets), the submission
//! ring ([`SQ_ENTRIES`] entries of [`SQE_SIZE`] bytes at [`SQ_OFF`]: the kernel produces,
//! the daemon consumes) and the completion ring ([`CQ_ENTRIES`] of [`CQE_SIZE`] at
//! [`CQ_OFF`]: the daemon produces, the kernel consumes). Indices are free-running
//! `u32`; an index's entry is `index & (entries - 1)`. The daemon publishes completions
//! by advancing `cq_tail` and then calling the [`IOC_KICK`] ioctl; it waits for
//! submissions with `poll(POLLIN)`. mmap offset `id << 32` ([`vram_offset`]) is the VRAM
//! of the instance with executor id `id`.

use crate::cmd::RawCmd;
use crate::reference::{self, ScanoutMode};

/// "VGXQ" at header offset 0.
pub const MAGIC: u32 = 0x5158_4756;
/// Header offset 4.
pub const VERSION: u32 = 1;
/// Submission ring entries.
pub const SQ_ENTRIES: u32 = 64;
/// Completion ring entries.
pub const CQ_ENTRIES: u32 = 64;
/// Bytes per submission entry.
pub const SQE_SIZE: usize = 256;
/// Bytes per completion entry.
pub const CQE_SIZE: usize = 32;
/// Offset of the submission ring.
pub const SQ_OFF: usize = 4096;
/// Offset of the completion ring.
pub const CQ_OFF: usize = SQ_OFF + SQ_ENTRIES as usize * SQE_SIZE;
/// Length of the queue mapping (mmap offset 0).
pub const QUEUE_BYTES: usize = CQ_OFF + CQ_ENTRIES as usize * CQE_SIZE;
/// `ioctl(fd, IOC_KICK)`: completions up to `cq_tail` are there (`_IO(0xf7, 1)`).
pub const IOC_KICK: u64 = 0xf701;
/// `ioctl(fd, IOC_SET_WINDOW, &w)` with a `u64` (`_IOW(0xf7, 2, __u64)`): the daemon
/// binds a VRAM of at most `w` bytes whole and a larger one through windows of `w` at
/// multiples of `w / 2`, so the kernel cuts pieces of a larger VRAM to touch at most
/// `w / 2` bytes ([`piece_bytes`]), and runs on the CPU a GEMM or BLIT that does not fit
/// whole. `w` is 0 (no limit, the default) or a power of two in
/// [`WINDOW_MIN`]`..=`[`WINDOW_MAX`] (else EINVAL); it stays with the parent for the next
/// daemon. Set it before the first poll: pieces cut before it are not re-cut.
pub const IOC_SET_WINDOW: u64 = 0x4008_f702;
/// The smallest window [`IOC_SET_WINDOW`] takes.
pub const WINDOW_MIN: u64 = 1 << 16;
/// The largest window [`IOC_SET_WINDOW`] takes.
pub const WINDOW_MAX: u64 = 1 << 40;

/// Header offsets (little-endian `u32`s).
pub mod hdr {
    /// [`super::MAGIC`].
    pub const MAGIC: usize = 0x00;
    /// [`super::VERSION`].
    pub const VERSION: usize = 0x04;
    /// Submission ring entries.
    pub const SQ_ENTRIES: usize = 0x08;
    /// Completion ring entries.
    pub const CQ_ENTRIES: usize = 0x0c;
    /// Submission entry size.
    pub const SQE_SIZE: usize = 0x10;
    /// Completion entry size.
    pub const CQE_SIZE: usize = 0x14;
    /// Submission ring offset.
    pub const SQ_OFF: usize = 0x18;
    /// Completion ring offset.
    pub const CQ_OFF: usize = 0x1c;
    /// Written by the daemon: submissions consumed.
    pub const SQ_HEAD: usize = 0x40;
    /// Written by the kernel: submissions produced.
    pub const SQ_TAIL: usize = 0x44;
    /// Written by the kernel: completions consumed.
    pub const CQ_HEAD: usize = 0x80;
    /// Written by the daemon: completions produced.
    pub const CQ_TAIL: usize = 0x84;
}

/// The header words the kernel writes at each open, as (name, offset, value): what a
/// user checks the queue against, and what a fake of the kernel writes.
pub const HEADER: [(&str, usize, u32); 8] = [
    ("magic", hdr::MAGIC, MAGIC),
    ("version", hdr::VERSION, VERSION),
    ("sq_entries", hdr::SQ_ENTRIES, SQ_ENTRIES),
    ("cq_entries", hdr::CQ_ENTRIES, CQ_ENTRIES),
    ("sqe_size", hdr::SQE_SIZE, SQE_SIZE as u32),
    ("cqe_size", hdr::CQE_SIZE, CQE_SIZE as u32),
    ("sq_off", hdr::SQ_OFF, SQ_OFF as u32),
    ("cq_off", hdr::CQ_OFF, CQ_OFF as u32),
];

/// The VRAM bytes `[lo, hi)` between the lowest and the highest byte a piece reads or
/// writes when [`apply_piece`] runs it (BLIT: whole scanout rows, as a daemon binds
/// them), or `None` for an entry that is no piece of a command with pieces. With a window
/// `w` set ([`IOC_SET_WINDOW`]) and a VRAM larger than `w`, the kernel keeps `hi - lo`
/// within `w / 2` (a CHECKSUM piece within `w / 2 - 8`, room for a daemon's result word).
pub fn piece_bytes(sqe: &Sqe) -> Option<(u64, u64)> {
    use crate::cmd::Cmd;
    let (s, cnt) = (sqe.start, sqe.count);
    let last = s.checked_add(cnt)?.checked_sub(1)?;
    match Cmd::from_raw(sqe.cmd) {
        Cmd::Fill { dst, .. } => Some((dst.checked_add(s)?, dst.checked_add(s + cnt)?)),
        Cmd::Checksum { src, .. } => Some((src.checked_add(s)?, src.checked_add(s + cnt)?)),
        Cmd::Copy { dst, src, .. } => {
            let (lo, hi) = (dst.min(src), dst.max(src));
            Some((lo.checked_add(s)?, hi.checked_add(s + cnt)?))
        }
        Cmd::Gemm { a, b, c, n, k, .. } => {
            let (i0, i1) = (s / n.max(1), last / n.max(1));
            let rows = i1 - i0 + 1;
            let a0 = a.checked_add(i0.checked_mul(k)?.checked_mul(4)?)?;
            let c0 = c.checked_add(i0.checked_mul(n)?.checked_mul(4)?)?;
            let hi = [
                a0.checked_add(rows.checked_mul(k)?.checked_mul(4)?)?,
                b.checked_add(k.checked_mul(n)?.checked_mul(4)?)?,
                c0.checked_add(rows.checked_mul(n)?.checked_mul(4)?)?,
            ];
            Some((a0.min(b).min(c0), hi.into_iter().max()?))
        }
        Cmd::Blit {
            src,
            src_stride,
            width,
            dst_y,
            ..
        } => {
            let md = sqe.mode?;
            let s0 = src.checked_add(s.checked_mul(src_stride)?)?;
            let s1 = src
                .checked_add(last.checked_mul(src_stride)?)?
                .checked_add(width.checked_mul(md.bytes_pp)?)?;
            let d0 = md
                .start
                .checked_add(dst_y.checked_add(s)?.checked_mul(md.stride)?)?;
            let d1 = md
                .start
                .checked_add(dst_y.checked_add(last)?.checked_mul(md.stride)?)?
                .checked_add(md.xres.checked_mul(md.bytes_pp)?)?;
            Some((s0.min(d0), s1.max(d1)))
        }
        _ => None,
    }
}

/// The largest executor id: ids stay below 2^31, so [`vram_offset`] fits an `off_t`.
/// A parent's instances get ids 1, 2, … at their first opens; once this one is used,
/// first opens fail with ENOSPC until the module is reloaded (ids are never reused).
pub const ID_MAX: u32 = 0x7fff_ffff;

/// mmap offset of the VRAM of executor id `id`.
pub fn vram_offset(id: u32) -> u64 {
    u64::from(id) << 32
}

/// What a submission entry asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqeKind {
    /// Run a piece of a command ([`apply_piece`]) and complete it.
    Piece,
    /// The instance `id` was closed: drop its VRAM mapping (no completion).
    Retire,
}

/// One submission entry, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sqe {
    /// Sequence number (never 0), echoed in the completion.
    pub seq: u64,
    /// Kind of entry (`None`: a kind this model does not know; complete it as refused).
    pub kind: Option<SqeKind>,
    /// The instance's executor id (its VRAM is at [`vram_offset`]).
    pub id: u32,
    /// VRAM size of the instance, bytes.
    pub vram_size: u64,
    /// The piece: units `[start, start + count)` of the command (see [`apply_piece`]).
    pub start: u64,
    /// Units in the piece.
    pub count: u64,
    /// CHECKSUM: FNV-1a-64 state before the piece.
    pub state: u64,
    /// BLIT: the scanout the kernel snapshotted at validation.
    pub mode: Option<ScanoutMode>,
    /// The validated command, as in the ring.
    pub cmd: RawCmd,
}

fn le64(b: &[u8], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}

fn le32(b: &[u8], o: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(w)
}

impl Sqe {
    /// Decode an entry.
    pub fn decode(b: &[u8; SQE_SIZE]) -> Sqe {
        let kind = match le32(b, 0x08) {
            1 => Some(SqeKind::Piece),
            2 => Some(SqeKind::Retire),
            _ => None,
        };
        let bytepp = le32(b, 0x40);
        let mode = (bytepp != 0).then(|| ScanoutMode {
            xres: u64::from(le32(b, 0x38)),
            yres: u64::from(le32(b, 0x3c)),
            bytes_pp: u64::from(bytepp),
            stride: u64::from(le32(b, 0x44)),
            start: le64(b, 0x30),
        });
        let mut cmd = [0u8; 64];
        cmd.copy_from_slice(&b[0x80..0xc0]);
        Sqe {
            seq: le64(b, 0x00),
            kind,
            id: le32(b, 0x0c),
            vram_size: le64(b, 0x10),
            start: le64(b, 0x18),
            count: le64(b, 0x20),
            state: le64(b, 0x28),
            mode,
            cmd: RawCmd::decode(&cmd),
        }
    }

    /// Encode an entry (what the kernel writes; for tests and tools). Fields a mode does
    /// not fit in (`u32`) are truncated, as the kernel's never are.
    pub fn encode(&self) -> [u8; SQE_SIZE] {
        let mut b = [0u8; SQE_SIZE];
        let kind = match self.kind {
            Some(SqeKind::Piece) => 1u32,
            Some(SqeKind::Retire) => 2,
            None => 0,
        };
        b[0x00..0x08].copy_from_slice(&self.seq.to_le_bytes());
        b[0x08..0x0c].copy_from_slice(&kind.to_le_bytes());
        b[0x0c..0x10].copy_from_slice(&self.id.to_le_bytes());
        b[0x10..0x18].copy_from_slice(&self.vram_size.to_le_bytes());
        b[0x18..0x20].copy_from_slice(&self.start.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&self.count.to_le_bytes());
        b[0x28..0x30].copy_from_slice(&self.state.to_le_bytes());
        if let Some(m) = self.mode {
            b[0x30..0x38].copy_from_slice(&m.start.to_le_bytes());
            b[0x38..0x3c].copy_from_slice(&(m.xres as u32).to_le_bytes());
            b[0x3c..0x40].copy_from_slice(&(m.yres as u32).to_le_bytes());
            b[0x40..0x44].copy_from_slice(&(m.bytes_pp as u32).to_le_bytes());
            b[0x44..0x48].copy_from_slice(&(m.stride as u32).to_le_bytes());
        }
        b[0x80..0xc0].copy_from_slice(&self.cmd.encode());
        b
    }
}

/// A completion's [`Cqe::work_ns`] for a piece that ran for `d`: at least 1, since 0
/// says "not measured".
pub fn work_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Completion status: done.
pub const STATUS_OK: u32 = 0;
/// Completion status: the executor's own check refused the piece (the kernel stops the
/// ring with ERROR = EXECUTOR).
pub const STATUS_REFUSED: u32 = 1;
/// Completion status: the device failed it (the same ERROR).
pub const STATUS_FAILED: u32 = 2;

/// One completion entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cqe {
    /// The submission's sequence number.
    pub seq: u64,
    /// [`STATUS_OK`], [`STATUS_REFUSED`] or [`STATUS_FAILED`].
    pub status: u32,
    /// CHECKSUM: the FNV-1a-64 state after the piece; 0 otherwise.
    pub value: u64,
    /// The daemon's own time executing the piece, ns (not the time the piece waited in
    /// the daemon's queues); 0: not measured. The kernel sizes the next pieces by it
    /// (kmod-shim/vgpu_exec_policy.h): the round trip around it is the host's
    /// scheduling, not the work. More than the round trip counts as not measured.
    pub work_ns: u64,
}

impl Cqe {
    /// Encode (what the daemon writes).
    pub fn encode(&self) -> [u8; CQE_SIZE] {
        let mut b = [0u8; CQE_SIZE];
        b[0x00..0x08].copy_from_slice(&self.seq.to_le_bytes());
        b[0x08..0x0c].copy_from_slice(&self.status.to_le_bytes());
        b[0x10..0x18].copy_from_slice(&self.value.to_le_bytes());
        b[0x18..0x20].copy_from_slice(&self.work_ns.to_le_bytes());
        b
    }

    /// Decode.
    pub fn decode(b: &[u8; CQE_SIZE]) -> Cqe {
        Cqe {
            seq: le64(b, 0x00),
            status: le32(b, 0x08),
            value: le64(b, 0x10),
            work_ns: le64(b, 0x18),
        }
    }
}

/// The reference semantics of a piece on a VRAM image `mem` (the whole VRAM). Returns
/// the completion value (the CHECKSUM state after the piece, else 0), or `None` if the
/// piece is not one the kernel hands out (wrong opcode, units outside the command,
/// misaligned, out of `mem`, a BLIT without a mode).
///
/// Units of `[start, start + count)`:
/// * FILL: bytes of the fill (multiples of 4); the value is the command's;
/// * COPY: bytes, a memmove of `dst + start .. ← src + start ..`;
/// * CHECKSUM: bytes (multiples of 4) folded into `state`; VRAM is not written (the
///   kernel stores the result when the last piece is done);
/// * GEMM: elements of C in row-major order, each the full sum over `k`;
/// * BLIT: rows of the rectangle.
pub fn apply_piece(mem: &mut [u8], sqe: &Sqe) -> Option<u64> {
    use crate::cmd::Cmd;
    let end = sqe.start.checked_add(sqe.count)?;
    if sqe.count == 0 {
        return None;
    }
    let us = |v: u64| usize::try_from(v).ok();
    // Offsets from untrusted entries: checked (None, not a panic, on overflow).
    let at = |base: u64, off: u64| us(base.checked_add(off)?);
    match Cmd::from_raw(sqe.cmd) {
        Cmd::Fill { dst, len, value } => {
            if end > len || !sqe.start.is_multiple_of(4) || !sqe.count.is_multiple_of(4) {
                return None;
            }
            reference::fill_in_place(mem, at(dst, sqe.start)?, us(sqe.count)?, value)?;
            Some(0)
        }
        Cmd::Copy { dst, src, len } => {
            if end > len {
                return None;
            }
            reference::copy_in_place(
                mem,
                at(dst, sqe.start)?,
                at(src, sqe.start)?,
                us(sqe.count)?,
            )?;
            Some(0)
        }
        Cmd::Checksum { src, len, .. } => {
            if end > len || !sqe.start.is_multiple_of(4) || !sqe.count.is_multiple_of(4) {
                return None;
            }
            let from = at(src, sqe.start)?;
            let bytes = mem.get(from..from.checked_add(us(sqe.count)?)?)?;
            let mut h = sqe.state;
            for w in bytes.chunks_exact(4) {
                h ^= u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
                h = h.wrapping_mul(0x100_0000_01b3);
            }
            Some(h)
        }
        Cmd::Gemm { a, b, c, m, n, k } => {
            if end > m.checked_mul(n)? {
                return None;
            }
            // Element indexes times 4 bytes: checked, as the offsets.
            let idx = |base: u64, e: u64| e.checked_mul(4).and_then(|o| base.checked_add(o));
            let word = |off: Option<u64>| -> Option<u32> {
                let o = us(off?)?;
                let w = mem.get(o..o.checked_add(4)?)?;
                Some(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            };
            let mut out = Vec::with_capacity(us(sqe.count)?);
            for e in sqe.start..end {
                let (i, j) = (e / n, e % n);
                let mut acc = 0u32;
                for p in 0..k {
                    let x = word(idx(a, i.checked_mul(k)?.checked_add(p)?))?;
                    let y = word(idx(b, p.checked_mul(n)?.checked_add(j)?))?;
                    acc = acc.wrapping_add(x.wrapping_mul(y));
                }
                out.push(acc);
            }
            for (e, v) in (sqe.start..end).zip(out) {
                let o = us(idx(c, e)?)?;
                mem.get_mut(o..o.checked_add(4)?)?
                    .copy_from_slice(&v.to_le_bytes());
            }
            Some(0)
        }
        Cmd::Blit {
            src,
            src_stride: stride,
            width: w,
            height: h,
            dst_x: x,
            dst_y: y,
        } => {
            let mode = sqe.mode?;
            if end > h {
                return None;
            }
            let row = us(w.checked_mul(mode.bytes_pp)?)?;
            for r in sqe.start..end {
                let s = us(src.checked_add(r.checked_mul(stride)?)?)?;
                let d = mode
                    .stride
                    .checked_mul(y.checked_add(r)?)
                    .and_then(|o| o.checked_add(x.checked_mul(mode.bytes_pp)?))
                    .and_then(|o| o.checked_add(mode.start))?;
                let d = us(d)?;
                reference::copy_in_place(mem, d, s, row)?;
            }
            Some(0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::Cmd;

    fn piece(cmd: Cmd, start: u64, count: u64, state: u64) -> Sqe {
        Sqe {
            seq: 7,
            kind: Some(SqeKind::Piece),
            id: 3,
            vram_size: 1 << 16,
            start,
            count,
            state,
            mode: None,
            cmd: cmd.raw(),
        }
    }

    #[test]
    fn layout_matches_the_c_header() {
        assert_eq!(CQ_OFF, 4096 + 64 * 256);
        assert_eq!(QUEUE_BYTES, CQ_OFF + 64 * 32);
        assert_eq!(vram_offset(5), 5 << 32);
        assert!(i64::try_from(vram_offset(ID_MAX)).is_ok());
    }

    #[test]
    fn sqe_round_trip() {
        let mut s = piece(
            Cmd::Blit {
                src: 64,
                src_stride: 40,
                width: 3,
                height: 2,
                dst_x: 1,
                dst_y: 1,
            },
            1,
            1,
            0,
        );
        s.mode = Some(ScanoutMode {
            xres: 8,
            yres: 8,
            bytes_pp: 4,
            stride: 32,
            start: 4096,
        });
        assert_eq!(Sqe::decode(&s.encode()), s);
        let c = Cqe {
            seq: 9,
            status: STATUS_REFUSED,
            value: 0xdead_beef_0000_0001,
            work_ns: 0x0123_4567_89ab_cdef,
        };
        assert_eq!(Cqe::decode(&c.encode()), c);
        assert_eq!(
            &c.encode()[0x18..],
            &0x0123_4567_89ab_cdef_u64.to_le_bytes()
        );
    }

    #[test]
    fn pieces_compose_to_the_whole_command() {
        // mem image with a pattern
        let img: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
        let cmds = [
            Cmd::Fill {
                dst: 100,
                len: 400,
                value: 0x1234_5678,
            },
            Cmd::Copy {
                dst: 1000,
                src: 3000,
                len: 777,
            },
            Cmd::Gemm {
                a: 0,
                b: 400,
                c: 4000,
                m: 5,
                n: 7,
                k: 9,
            },
        ];
        for cmd in cmds {
            let mut whole = img.clone();
            reference::apply(&mut whole, &cmd.raw(), None).expect("reference");
            let total = match cmd {
                Cmd::Fill { len, .. } | Cmd::Copy { len, .. } => len,
                Cmd::Gemm { m, n, .. } => m * n,
                _ => unreachable!(),
            };
            let step = if matches!(cmd, Cmd::Gemm { .. }) {
                4
            } else {
                64
            };
            let mut pieces = img.clone();
            let mut at = 0;
            while at < total {
                let n = step.min(total - at);
                apply_piece(&mut pieces, &piece(cmd, at, n, 0)).expect("piece");
                at += n;
            }
            assert_eq!(pieces, whole, "{cmd:?}");
        }
        // CHECKSUM: the state carried through pieces is the whole hash
        let whole = reference::fnv1a64_bytes(&img[256..256 + 1024]).expect("hash");
        let sum = Cmd::Checksum {
            src: 256,
            len: 1024,
            dst: 0,
        };
        let mut mem = img.clone();
        let mut h = 0xcbf2_9ce4_8422_2325;
        for at in (0..1024).step_by(100 * 4) {
            let n = (400).min(1024 - at);
            h = apply_piece(&mut mem, &piece(sum, at, n, h)).expect("piece");
        }
        assert_eq!(h, whole);
        assert_eq!(mem, img, "a CHECKSUM piece writes nothing");
    }

    #[test]
    fn bad_pieces_are_refused() {
        let mut mem = vec![0u8; 4096];
        let fill = Cmd::Fill {
            dst: 0,
            len: 64,
            value: 1,
        };
        assert_eq!(apply_piece(&mut mem, &piece(fill, 60, 8, 0)), None);
        assert_eq!(apply_piece(&mut mem, &piece(fill, 2, 4, 0)), None);
        assert_eq!(apply_piece(&mut mem, &piece(fill, 0, 0, 0)), None);
        assert_eq!(apply_piece(&mut mem, &piece(Cmd::Nop, 0, 1, 0)), None);
        let blit = Cmd::Blit {
            src: 0,
            src_stride: 4,
            width: 1,
            height: 1,
            dst_x: 0,
            dst_y: 0,
        };
        assert_eq!(
            apply_piece(&mut mem, &piece(blit, 0, 1, 0)),
            None,
            "no mode"
        );
        // Offsets past 2^64 (an entry nobody validated): refused, not a panic.
        let far = u64::MAX - 3;
        for cmd in [
            Cmd::Fill {
                dst: far,
                len: 64,
                value: 1,
            },
            Cmd::Copy {
                dst: far,
                src: 0,
                len: 64,
            },
            Cmd::Copy {
                dst: 0,
                src: far,
                len: 64,
            },
            Cmd::Checksum {
                src: far,
                len: 64,
                dst: 0,
            },
            Cmd::Gemm {
                a: far,
                b: 0,
                c: 0,
                m: 2,
                n: 2,
                k: 2,
            },
            Cmd::Gemm {
                a: 0,
                b: 0,
                c: far,
                m: 2,
                n: 2,
                k: 2,
            },
            Cmd::Gemm {
                a: 0,
                b: 0,
                c: 0,
                m: 2,
                n: 1 << 62,
                k: 1 << 62,
            },
        ] {
            assert_eq!(apply_piece(&mut mem, &piece(cmd, 4, 4, 0)), None, "{cmd:?}");
        }
        let mut s = piece(blit, 0, 1, 0);
        s.mode = Some(ScanoutMode {
            xres: 8,
            yres: 8,
            bytes_pp: 4,
            stride: 32,
            start: far,
        });
        assert_eq!(apply_piece(&mut mem, &s), None, "scanout past 2^64");
    }
}
