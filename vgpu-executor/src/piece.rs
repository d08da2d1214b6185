//! Pieces of commands, as the kernel hands them in external mode (docs/executor.md,
//! "External mode"): `vgpu_engine_abi::exec::Sqe` entries of kind PIECE, executed with
//! the bytes of `vgpu_engine_abi::exec::apply_piece`, several in one submission.

use ash::vk;
use vgpu_engine_abi::exec::{self, Sqe, SqeKind};
use vgpu_engine_abi::reference::{Limits, ScanoutMode};
use vgpu_engine_abi::Cmd;

use crate::exec::{check, overlap, Executor, Pipe, Recorder, MAX_BATCH, SCRATCH_BYTES, WG};
use crate::vram::Vram;
use crate::Error;

fn rejected(sqe: &Sqe, why: &str) -> Error {
    Error::Rejected(format!(
        "piece [{}, +{}) of {:?}: {why}",
        sqe.start, sqe.count, sqe.cmd
    ))
}

/// Refuse a piece `apply_piece` would refuse (a kind other than PIECE, no units, units
/// outside the command, misaligned, an opcode that has no pieces, a BLIT without a
/// mode) and, as for whole commands, a command the reference validator says must fail
/// or one that would write outside a VRAM of `vram_size` bytes (a scanout outside it
/// included). Units inside a command that fits the VRAM lie inside it too.
pub(crate) fn check_piece(sqe: &Sqe, vram_size: u64) -> Result<(), Error> {
    if sqe.kind != Some(SqeKind::Piece) {
        return Err(rejected(sqe, "not a PIECE entry"));
    }
    let end = sqe
        .start
        .checked_add(sqe.count)
        .filter(|_| sqe.count != 0)
        .ok_or_else(|| rejected(sqe, "no units, or units past 2^64"))?;
    let lim = Limits {
        vram_size,
        ring_size: 1 << 20,
        mode: sqe.mode,
    };
    check(&sqe.cmd, &lim)?;
    let words = |len: u64| {
        if end > len || !sqe.start.is_multiple_of(4) || !sqe.count.is_multiple_of(4) {
            Err(rejected(
                sqe,
                "bytes outside the command or not whole words",
            ))
        } else {
            Ok(())
        }
    };
    match Cmd::from_raw(sqe.cmd) {
        Cmd::Fill { len, .. } | Cmd::Checksum { len, .. } => words(len),
        Cmd::Copy { len, .. } if end <= len => Ok(()),
        Cmd::Gemm { a, b, c, m, n, k } => {
            if m.checked_mul(n).is_none_or(|e| end > e) {
                return Err(rejected(sqe, "elements outside C"));
            }
            if gemm_overlaps(a, b, c, m, n, k) && sqe.count > SCRATCH_BYTES / 4 {
                // Such a piece reads every element before it writes one: through
                // scratch. The kernel keeps these commands on the CPU executor anyway.
                return Err(rejected(
                    sqe,
                    "C overlaps A or B and the piece is larger than the scratch buffer",
                ));
            }
            Ok(())
        }
        Cmd::Blit { height, .. } if sqe.mode.is_some() && end <= height => Ok(()),
        Cmd::Blit { .. } => Err(rejected(sqe, "rows outside the rectangle, or no mode")),
        Cmd::Copy { .. } => Err(rejected(sqe, "bytes outside the command")),
        _ => Err(rejected(sqe, "this command has no pieces")),
    }
}

/// A checked piece as a command of its own over just what the piece touches (units
/// `[0, count)` of it: the same bytes `apply_piece` gives), and the span of VRAM it
/// reads and writes: the ABI model's `exec::piece_bytes`, which the kernel keeps within
/// half a window, widened for CHECKSUM by the result word below. A GEMM piece becomes
/// the GEMM of its rows of A and C (with the whole B); whether its C overlaps its A or B
/// may differ from the whole command's, but the piece reads every element before it
/// writes one either way (through scratch when they overlap), so the bytes are the
/// same. A CHECKSUM's `dst` (the kernel stores the result, pieces do not) becomes the
/// 8-aligned word at or below the source so that the command stays valid in the span.
fn reduce(sqe: &Sqe) -> Option<(Sqe, u64, u64)> {
    let (s, cnt) = (sqe.start, sqe.count);
    let (mut lo, mut hi) = exec::piece_bytes(sqe)?;
    let mut sub = Sqe { start: 0, ..*sqe };
    let (cmd, mode) = match Cmd::from_raw(sqe.cmd) {
        Cmd::Fill { dst, value, .. } => (
            Cmd::Fill {
                dst: dst + s,
                len: cnt,
                value,
            },
            None,
        ),
        Cmd::Copy { dst, src, .. } => (
            Cmd::Copy {
                dst: dst + s,
                src: src + s,
                len: cnt,
            },
            None,
        ),
        Cmd::Checksum { src, .. } => {
            let src = src + s;
            let dst = src & !7;
            (lo, hi) = (lo.min(dst), hi.max(dst + 8));
            (Cmd::Checksum { src, len: cnt, dst }, None)
        }
        Cmd::Gemm { a, b, c, n, k, .. } => {
            let (i0, i1) = (s / n, (s + cnt - 1) / n);
            sub.start = s - i0 * n;
            let (a, c) = (a + 4 * i0 * k, c + 4 * i0 * n);
            (
                Cmd::Gemm {
                    a,
                    b,
                    c,
                    m: i1 - i0 + 1,
                    n,
                    k,
                },
                None,
            )
        }
        Cmd::Blit {
            src,
            src_stride,
            width,
            dst_x,
            dst_y,
            ..
        } => {
            let md = sqe.mode?;
            let mode = ScanoutMode {
                yres: cnt,
                start: md.pixel_offset(0, dst_y + s),
                ..md
            };
            let c = Cmd::Blit {
                src: src + s * src_stride,
                src_stride,
                width,
                height: cnt,
                dst_x,
                dst_y: 0,
            };
            (c, Some(mode))
        }
        _ => return None,
    };
    sub.cmd = cmd.raw();
    sub.mode = mode;
    Some((sub, lo, hi))
}

/// `sub` with every VRAM offset moved down by `w` (into a window at `w`).
fn shift(sub: &Sqe, w: u64) -> Sqe {
    let cmd = match Cmd::from_raw(sub.cmd) {
        Cmd::Fill { dst, len, value } => Cmd::Fill {
            dst: dst - w,
            len,
            value,
        },
        Cmd::Copy { dst, src, len } => Cmd::Copy {
            dst: dst - w,
            src: src - w,
            len,
        },
        Cmd::Checksum { src, len, dst } => Cmd::Checksum {
            src: src - w,
            len,
            dst: dst - w,
        },
        Cmd::Gemm { a, b, c, m, n, k } => Cmd::Gemm {
            a: a - w,
            b: b - w,
            c: c - w,
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
            src: src - w,
            src_stride,
            width,
            height,
            dst_x,
            dst_y,
        },
        other => other,
    };
    Sqe {
        cmd: cmd.raw(),
        mode: sub.mode.map(|m| ScanoutMode {
            start: m.start - w,
            ..m
        }),
        ..*sub
    }
}

/// Check `sqe` against the VRAM, reduce it to what it touches and place that in the
/// VRAM's binding (the whole VRAM, or the one window that holds it): the descriptor
/// set to bind and the piece as recorded there.
fn place(vram: &mut Vram<'_>, sqe: &Sqe) -> Result<(vk::DescriptorSet, Sqe), Error> {
    let len = vram.len() as u64;
    check_piece(sqe, len)?;
    let (sub, lo, hi) = reduce(sqe).ok_or_else(|| rejected(sqe, "this command has no pieces"))?;
    let w = if vram.windowed() {
        let half = vram.exec.window / 2;
        let w = lo - lo % half;
        if hi > w + vram.exec.window {
            return Err(rejected(
                sqe,
                &format!(
                    "its bytes [{lo:#x}, {hi:#x}) lie in no one window of {:#x} bytes (at \
                     multiples of {half:#x}) of this VRAM, larger than one binding",
                    vram.exec.window
                ),
            ));
        }
        w
    } else {
        0
    };
    let (set, wlen) = vram.window(w)?;
    let local = shift(&sub, w);
    // Again, within what is bound: the reduction and the shift keep it valid.
    check_piece(&local, wlen)?;
    Ok((set, local))
}

fn gemm_overlaps(a: u64, b: u64, c: u64, m: u64, n: u64, k: u64) -> bool {
    overlap(c, 4 * m * n, a, 4 * m * k) || overlap(c, 4 * m * n, b, 4 * k * n)
}

impl Recorder<'_> {
    /// Record one checked piece; a CHECKSUM's state goes to result slot `slot`.
    fn piece(&mut self, sqe: &Sqe, slot: usize) {
        let (s, cnt) = (sqe.start, sqe.count);
        match Cmd::from_raw(sqe.cmd) {
            Cmd::Fill { dst, value, .. } => {
                let n = cnt / 4;
                self.dispatch(
                    Pipe::Fill,
                    [(dst + s) / 4, n, u64::from(value), 0, 0, 0, 0, 0],
                    Self::grid(n),
                );
            }
            Cmd::Copy { dst, src, .. } => self.memmove(dst + s, src + s, cnt),
            Cmd::Checksum { src, .. } => {
                let (first, n) = ((src + s) / 4, cnt / 4);
                let size = self.pieces.checksum_words;
                let (lo, hi) = (sqe.state & 0xffff_ffff, sqe.state >> 32);
                let mut off = 0;
                while off < n {
                    let l = size.min(n - off);
                    // The first dispatch starts from the entry's state (flag 4), the
                    // others from scratch; none stores into VRAM (no flag 2).
                    let flags = if off == 0 { 4 } else { 0 };
                    self.dispatch(
                        Pipe::Checksum,
                        [first + off, l, flags, 0, lo, hi, 0, 0],
                        (1, 1),
                    );
                    off += l;
                }
                let region = vk::BufferCopy::default()
                    .src_offset(0)
                    .dst_offset(8 * slot as u64)
                    .size(8);
                // SAFETY: recording state; scratch has TRANSFER_SRC usage, results
                // TRANSFER_DST, and the slot lies inside it (slot < MAX_BATCH).
                unsafe {
                    self.ex.device.cmd_copy_buffer(
                        self.cb,
                        self.ex.scratch,
                        self.ex.results,
                        &[region],
                    )
                };
                self.barrier();
            }
            Cmd::Gemm { a, b, c, m, n, k } => self.gemm_piece([a, b, c, m, n, k], s, cnt),
            Cmd::Blit {
                src,
                src_stride,
                width,
                dst_x,
                dst_y,
                ..
            } => {
                // check_piece made sure there is a mode.
                let Some(md) = sqe.mode else { return };
                let first = md.pixel_offset(dst_x, dst_y + s);
                self.blit_rows(
                    &md,
                    src + s * src_stride,
                    src_stride,
                    width * md.bytes_pp,
                    first,
                    cnt,
                );
            }
            _ => {}
        }
    }

    /// Elements `[s, s + cnt)` of C in row-major order, each the full sum over k.
    fn gemm_piece(&mut self, g: [u64; 6], s: u64, cnt: u64) {
        let [a, b, c, m, n, k] = g;
        let p = |x3: u64, x6: u64, x7: u64| [a / 4, b / 4, c / 4, x3, n, k, x6, x7];
        let per = (self.pieces.gemm_macs / k).max(1);
        let end = s + cnt;
        if gemm_overlaps(a, b, c, m, n, k) {
            // apply_piece computes every element of the piece before it stores one:
            // into scratch (p3 = first element + 1), then one copy into C.
            let mut e = s;
            while e < end {
                let l = per.min(end - e);
                self.dispatch(Pipe::GemmElems, p(s + 1, e, l), Self::grid(l));
                e += l;
            }
            self.copy2d(c + 4 * s, 4 * cnt, 4 * cnt, 1, 0, 0, 1);
            return;
        }
        // Whole rows with the four-elements-per-invocation shader, the partial first and
        // last rows element by element.
        let rows_per = (self.pieces.gemm_macs / (n * k)).clamp(1, 65535);
        let mut e = s;
        while e < end {
            let (i, j) = (e / n, e % n);
            if j == 0 && end - e >= n {
                let rows = ((end - e) / n).min(rows_per);
                let groups = (n.div_ceil(4).div_ceil(WG), rows);
                self.dispatch(Pipe::Gemm, p(m, i, rows), groups);
                e += rows * n;
            } else {
                let l = per.min((i + 1) * n - e).min(end - e);
                self.dispatch(Pipe::GemmElems, p(0, e, l), Self::grid(l));
                e += l;
            }
        }
    }
}

impl Executor {
    /// Run one piece (an entry of kind PIECE the kernel handed) on `vram` and wait for
    /// it: the bytes of `vgpu_engine_abi::exec::apply_piece`. Returns the completion's
    /// value (a CHECKSUM piece's FNV-1a-64 state after it, else 0). A piece
    /// `apply_piece` refuses, a command the reference validator refuses, or one that
    /// does not fit this VRAM is refused with [`Error::Rejected`] and nothing runs.
    pub fn execute_piece(&self, vram: &mut Vram<'_>, sqe: &Sqe) -> Result<u64, Error> {
        let mut out = self.execute_pieces(&mut [vram], &[(0, *sqe)])?;
        out.pop()
            .unwrap_or_else(|| Err(Error::Rejected("no piece".into())))
    }

    /// Run several pieces in one submission, in order (each sees what the earlier ones
    /// wrote): piece `i` is `pieces[i].1` on `vrams[pieces[i].0]`. Returns, per piece,
    /// its value or why it was refused (a refused piece does nothing; the others run).
    /// The outer error is the device's, or a batch this call cannot take (more than
    /// [`MAX_BATCH`] pieces, a VRAM index out of range or of another executor): then
    /// the pieces that were recorded may or may not have run.
    pub fn execute_pieces(
        &self,
        vrams: &mut [&mut Vram<'_>],
        pieces: &[(usize, Sqe)],
    ) -> Result<Vec<Result<u64, Error>>, Error> {
        if pieces.len() > MAX_BATCH {
            return Err(Error::Rejected(format!(
                "{} pieces in one batch (at most {MAX_BATCH})",
                pieces.len()
            )));
        }
        if vrams.iter().any(|v| !std::ptr::eq(v.exec, self)) {
            return Err(Error::Vram("a VRAM belongs to another executor".into()));
        }
        let placed: Vec<Result<(vk::DescriptorSet, Sqe), Error>> = pieces
            .iter()
            .map(|(v, sqe)| match vrams.get_mut(*v) {
                Some(vram) => place(vram, sqe),
                None => Err(Error::Rejected(format!("no VRAM {v} in this batch"))),
            })
            .collect();
        let mut out: Vec<Result<u64, Error>> = placed
            .iter()
            .map(|p| p.as_ref().map(|_| 0).map_err(Clone::clone))
            .collect();
        let refused = out.iter().filter(|r| r.is_err()).count() as u64;
        self.count(|n| n.rejected += refused);
        if refused == pieces.len() as u64 {
            return Ok(out);
        }
        let dispatches = self.submit(|rec| {
            for (slot, p) in placed.iter().enumerate() {
                if let Ok((set, local)) = p {
                    rec.bind(*set);
                    rec.piece(local, slot);
                }
            }
        })?;
        for (slot, ((_, sqe), r)) in pieces.iter().zip(out.iter_mut()).enumerate() {
            if let (Ok(v), Cmd::Checksum { .. }) = (r.as_mut(), Cmd::from_raw(sqe.cmd)) {
                // SAFETY: `results_ptr` maps MAX_BATCH host-coherent u64 slots; the
                // submission that wrote them has completed (submit waited for its
                // fence, after a barrier making transfer writes visible to the host).
                *v = unsafe { self.results_ptr.add(slot).read_volatile() };
            }
        }
        let ran = pieces.len() as u64 - refused;
        self.count(|n| {
            n.pieces += ran;
            n.dispatches += dispatches;
            n.submits += 1;
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command a piece is reduced to touches exactly the bytes the ABI model says
    /// the piece touches (`exec::piece_bytes`, which the kernel keeps within half a
    /// window), and the span the daemon binds is those bytes, CHECKSUM's word aside.
    #[test]
    fn reduce_binds_what_the_model_says() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut r = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mode = ScanoutMode {
            xres: 640,
            yres: 480,
            bytes_pp: 4,
            stride: 2560,
            start: 1 << 20,
        };
        for i in 0..2000 {
            let base = |r: &mut dyn FnMut(u64) -> u64| r(1 << 24) * 4;
            let (cmd, units) = match i % 5 {
                0 => {
                    let len = (1 + r(4096)) * 4;
                    let dst = base(&mut r);
                    (Cmd::Fill { dst, len, value: 7 }, len / 4)
                }
                1 => {
                    let len = 1 + r(1 << 16);
                    let (dst, src) = (base(&mut r), base(&mut r));
                    (Cmd::Copy { dst, src, len }, len)
                }
                2 => {
                    let len = (1 + r(4096)) * 4;
                    let (src, dst) = (base(&mut r), base(&mut r) & !7);
                    (Cmd::Checksum { src, len, dst }, len / 4)
                }
                3 => {
                    let (m, n, k) = (1 + r(40), 1 + r(40), 1 + r(40));
                    let (a, b, c) = (base(&mut r), base(&mut r), base(&mut r));
                    (Cmd::Gemm { a, b, c, m, n, k }, m * n)
                }
                _ => {
                    let (w, h) = (1 + r(640), 1 + r(480));
                    let cmd = Cmd::Blit {
                        src: base(&mut r),
                        src_stride: w * 4 + r(64) * 4,
                        width: w,
                        height: h,
                        dst_x: r(640 - w + 1),
                        dst_y: r(480 - h + 1),
                    };
                    (cmd, h)
                }
            };
            let scale = if matches!(cmd, Cmd::Fill { .. } | Cmd::Checksum { .. }) {
                4
            } else {
                1
            };
            let start = r(units);
            let count = 1 + r(units - start);
            let sqe = Sqe {
                seq: 1,
                kind: Some(SqeKind::Piece),
                id: 1,
                vram_size: 1 << 28,
                start: start * scale,
                count: count * scale,
                state: 0,
                mode: matches!(cmd, Cmd::Blit { .. }).then_some(mode),
                cmd: cmd.raw(),
            };
            let (sub, lo, hi) = reduce(&sqe).expect("a piece");
            let (mlo, mhi) = exec::piece_bytes(&sqe).expect("model");
            // The reduced command, run whole, touches exactly the piece's bytes ...
            let (slo, shi) = exec::piece_bytes(&sub).expect("the reduced command");
            assert_eq!((slo, shi), (mlo, mhi), "{sqe:?} -> {sub:?}");
            if let Cmd::Checksum { dst, .. } = Cmd::from_raw(sub.cmd) {
                // ... and a CHECKSUM's result word lies in the span, within 8 bytes.
                assert!(dst % 8 == 0 && lo <= dst && dst + 8 <= hi, "{sub:?}");
                assert!(mlo - lo < 8 && hi - mhi <= 8, "{sqe:?}");
            } else {
                assert_eq!((lo, hi), (mlo, mhi), "{sqe:?}");
            }
        }
    }
}
