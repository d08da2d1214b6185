//! Reference semantics of the engine (docs/engine-abi.md), for checking what it did:
//! CHECKSUM (FNV-1a-64 over u32 words), GEMM (u32, wrapping, row-major, elements in
//! row-major order), the memory effect of every command on a VRAM image ([`apply`]: FILL,
//! COPY as memmove, BLIT row by row, FENCE's WRITE) and a reference validator that says which ERROR codes a command may
//! produce.
//!
//! The validator returns a [`Verdict`]: `must` is the set of codes for rules the command
//! definitely breaks (the engine has to reject it with one of `must | may`), `may` adds
//! codes the ABI text leaves open (e.g. whether an overflowing range is BAD_SIZE or
//! OUT_OF_RANGE, whether an unused operand counts as a reserved field). A command with
//! an empty `must` and a non-empty `may` is ambiguous: the engine may run or reject it.

use crate::cmd::{ErrorCode, RawCmd};
use crate::layout::engine as reg;

/// FNV-1a-64 over u32 words (`h ^= w; h *= prime` per word).
pub fn fnv1a64_words(words: impl IntoIterator<Item = u32>) -> u64 {
    let mut h = reg::FNV_OFFSET;
    for w in words {
        h ^= u64::from(w);
        h = h.wrapping_mul(reg::FNV_PRIME);
    }
    h
}

/// FNV-1a-64 over the little-endian u32 words of `bytes` (`None` unless the length is a
/// multiple of 4).
pub fn fnv1a64_bytes(bytes: &[u8]) -> Option<u64> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(fnv1a64_words(
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    ))
}

/// `C = A·B` over u32, wrapping; A is m×k, B is k×n, both row-major. `None` if the
/// slices are too short.
pub fn gemm(a: &[u32], b: &[u32], m: usize, n: usize, k: usize) -> Option<Vec<u32>> {
    if a.len() < m.checked_mul(k)? || b.len() < k.checked_mul(n)? {
        return None;
    }
    let mut c = vec![0u32; m.checked_mul(n)?];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0u32;
            for p in 0..k {
                acc = acc.wrapping_add(a[i * k + p].wrapping_mul(b[p * n + j]));
            }
            c[i * n + j] = acc;
        }
    }
    Some(c)
}

/// GEMM on one memory image of u32 words, exactly as the ABI orders it: elements of C in
/// row-major order, each computed from the current A and B words, then stored (so a C
/// that overlaps A or B sees the elements already written). Offsets are in words.
/// `None` if a matrix does not fit in `mem`.
pub fn gemm_in_place(
    mem: &mut [u32],
    a: usize,
    b: usize,
    c: usize,
    m: usize,
    n: usize,
    k: usize,
) -> Option<()> {
    let fits = |off: usize, len: usize| off.checked_add(len).is_some_and(|e| e <= mem.len());
    if !fits(a, m.checked_mul(k)?) || !fits(b, k.checked_mul(n)?) || !fits(c, m.checked_mul(n)?) {
        return None;
    }
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0u32;
            for p in 0..k {
                acc = acc.wrapping_add(mem[a + i * k + p].wrapping_mul(mem[b + p * n + j]));
            }
            mem[c + i * n + j] = acc;
        }
    }
    Some(())
}

/// memmove on a byte image (the reference for COPY). `None` if out of bounds.
pub fn copy_in_place(mem: &mut [u8], dst: usize, src: usize, len: usize) -> Option<()> {
    if src.checked_add(len)? > mem.len() || dst.checked_add(len)? > mem.len() {
        return None;
    }
    mem.copy_within(src..src + len, dst);
    Some(())
}

/// A displayable bochs mode as the engine sees it for BLIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanoutMode {
    /// XRES.
    pub xres: u64,
    /// YRES.
    pub yres: u64,
    /// Bytes per pixel (2, 3 or 4).
    pub bytes_pp: u64,
    /// Bytes per scanout line.
    pub stride: u64,
    /// VRAM offset of pixel (0, 0).
    pub start: u64,
}

impl ScanoutMode {
    /// VRAM offset of pixel (x, y).
    pub fn pixel_offset(&self, x: u64, y: u64) -> u64 {
        self.start + y * self.stride + x * self.bytes_pp
    }
}

/// What the validator needs to know about the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// VRAM size in bytes.
    pub vram_size: u64,
    /// RING_SIZE of the enabled ring.
    pub ring_size: u64,
    /// The current displayable mode, if any.
    pub mode: Option<ScanoutMode>,
}

/// A set of ERROR codes (bit `c` for code `c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct CodeSet(pub u16);

impl CodeSet {
    /// The empty set.
    pub const EMPTY: CodeSet = CodeSet(0);

    /// Add a code.
    pub fn add(&mut self, c: ErrorCode) {
        self.0 |= c.bit();
    }

    /// Whether `code` (a register value) is in the set.
    pub fn contains(self, code: u32) -> bool {
        code < 16 && self.0 & (1 << code) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Union.
    pub fn union(self, o: CodeSet) -> CodeSet {
        CodeSet(self.0 | o.0)
    }

    /// The codes, ascending.
    pub fn codes(self) -> Vec<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .filter(|c| self.0 & c.bit() != 0)
            .collect()
    }

    /// Names joined with `|`.
    pub fn names(self) -> String {
        let v: Vec<&str> = self.codes().iter().map(|c| c.name()).collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join("|")
        }
    }
}

/// The reference validator's answer for one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Codes of rules the command breaks for sure.
    pub must: CodeSet,
    /// Further codes the ABI allows the engine to report for it.
    pub may: CodeSet,
}

impl Verdict {
    /// The command is valid for sure: it must run.
    pub fn is_valid(&self) -> bool {
        self.must.is_empty() && self.may.is_empty()
    }

    /// The command must be rejected.
    pub fn must_fail(&self) -> bool {
        !self.must.is_empty()
    }

    /// The engine may either run it or reject it with a code in `may`.
    pub fn is_ambiguous(&self) -> bool {
        self.must.is_empty() && !self.may.is_empty()
    }

    /// Codes the engine may report for it.
    pub fn allowed(&self) -> CodeSet {
        self.must.union(self.may)
    }
}

struct Check {
    v: Verdict,
    vram: u64,
}

impl Check {
    fn must(&mut self, c: ErrorCode) {
        self.v.must.add(c);
    }

    fn may(&mut self, c: ErrorCode) {
        self.v.may.add(c);
    }

    /// Range `[off, off + len)` with `len` already known not to overflow u64.
    fn range(&mut self, off: u64, len: u64) {
        match off.checked_add(len) {
            None => {
                self.must(ErrorCode::BadSize);
                self.may(ErrorCode::OutOfRange);
            }
            Some(end) if end > self.vram => {
                self.must(ErrorCode::OutOfRange);
                if len > self.vram {
                    self.may(ErrorCode::BadSize);
                }
            }
            Some(_) => {}
        }
    }

    fn align(&mut self, v: u64, a: u64) {
        if !v.is_multiple_of(a) {
            self.must(ErrorCode::BadAlign);
        }
    }

    /// A length that must be a non-zero multiple of 4.
    fn len4(&mut self, len: u64) {
        if len == 0 {
            self.must(ErrorCode::BadSize);
        }
        if !len.is_multiple_of(4) {
            self.must(ErrorCode::BadAlign);
            self.may(ErrorCode::BadSize);
        }
    }

    fn unused(&mut self, args: &[u64]) {
        if args.iter().any(|&a| a != 0) {
            self.may(ErrorCode::BadFlags);
        }
    }
}

/// Which codes the engine may report for `raw` (see the module docs).
pub fn validate(raw: &RawCmd, lim: &Limits) -> Verdict {
    let mut c = Check {
        v: Verdict::default(),
        vram: lim.vram_size,
    };
    let a = raw.args;
    let reserved = raw.rsvd != 0 || raw.op_high() != 0;
    if raw.opcode() > reg::OP_JUMP {
        c.must(ErrorCode::BadOpcode);
        if reserved || raw.flags() != 0 {
            c.may(ErrorCode::BadFlags);
        }
        return c.v;
    }
    if reserved {
        c.must(ErrorCode::BadFlags);
    }
    let flags = raw.flags();
    let allowed_flags = if raw.opcode() == reg::OP_FENCE {
        reg::FENCE_FLAG_IRQ | reg::FENCE_FLAG_WRITE
    } else {
        0
    };
    if flags & !allowed_flags != 0 {
        c.must(ErrorCode::BadFlags);
    }
    match raw.opcode() {
        reg::OP_NOP => c.unused(&a),
        reg::OP_FILL => {
            let (dst, len) = (a[0], a[1]);
            c.unused(&a[3..]);
            if a[2] >> 32 != 0 {
                c.may(ErrorCode::BadFlags);
            }
            c.len4(len);
            c.align(dst, 4);
            c.range(dst, len);
        }
        reg::OP_COPY => {
            let (dst, src, len) = (a[0], a[1], a[2]);
            c.unused(&a[3..]);
            if len == 0 {
                c.must(ErrorCode::BadSize);
            }
            c.range(dst, len);
            c.range(src, len);
        }
        reg::OP_CHECKSUM => {
            let (src, len, dst) = (a[0], a[1], a[2]);
            c.unused(&a[3..]);
            c.len4(len);
            c.align(src, 4);
            c.align(dst, 8);
            c.range(src, len);
            c.range(dst, 8);
        }
        reg::OP_GEMM => {
            let (ma, mb, mc, m, n, k) = (a[0], a[1], a[2], a[3], a[4], a[5]);
            c.unused(&a[6..]);
            c.align(ma, 4);
            c.align(mb, 4);
            c.align(mc, 4);
            let dim_ok = |d: u64| (1..=reg::GEMM_DIM_MAX).contains(&d);
            if dim_ok(m) && dim_ok(n) && dim_ok(k) {
                c.range(ma, m * k * 4);
                c.range(mb, k * n * 4);
                c.range(mc, m * n * 4);
            } else {
                c.must(ErrorCode::BadSize);
                c.may(ErrorCode::OutOfRange);
            }
        }
        reg::OP_BLIT => {
            let (src, stride, w, h, x, y) = (a[0], a[1], a[2], a[3], a[4], a[5]);
            c.unused(&a[6..]);
            if w == 0 || h == 0 {
                c.must(ErrorCode::BadSize);
            }
            match lim.mode {
                None => {
                    c.must(ErrorCode::BadMode);
                    // Without a mode the pixel size is unknown: a source range or size
                    // problem may be found first.
                    c.may(ErrorCode::OutOfRange);
                    c.may(ErrorCode::BadSize);
                    c.may(ErrorCode::BadAlign);
                }
                Some(md) => {
                    let inside =
                        |o: u64, n: u64, lim: u64| o.checked_add(n).is_some_and(|e| e <= lim);
                    if !inside(x, w, md.xres) || !inside(y, h, md.yres) {
                        c.must(ErrorCode::BadMode);
                        c.may(ErrorCode::BadSize);
                        c.may(ErrorCode::OutOfRange);
                    }
                    let row = w.checked_mul(md.bytes_pp);
                    let span = h
                        .checked_sub(1)
                        .and_then(|r| r.checked_mul(stride))
                        .and_then(|s| row.and_then(|r| s.checked_add(r)));
                    match span {
                        None if w != 0 && h != 0 => {
                            c.must(ErrorCode::BadSize);
                            c.may(ErrorCode::OutOfRange);
                        }
                        None => {}
                        Some(len) => c.range(src, len),
                    }
                    if row.is_some_and(|r| h > 1 && stride < r) {
                        // Overlapping source rows: the ABI does not say.
                        c.may(ErrorCode::BadSize);
                        c.may(ErrorCode::BadAlign);
                    }
                }
            }
        }
        reg::OP_FENCE => {
            c.unused(&a[2..]);
            if flags & reg::FENCE_FLAG_WRITE != 0 {
                c.align(a[1], 8);
                c.range(a[1], 8);
            } else if a[1] != 0 {
                c.may(ErrorCode::BadFlags);
            }
        }
        reg::OP_JUMP => {
            c.unused(&a[1..]);
            if !a[0].is_multiple_of(reg::CMD_SIZE) || a[0] >= lim.ring_size {
                c.must(ErrorCode::BadRing);
            }
        }
        _ => {}
    }
    c.v
}

/// The VRAM ranges a valid command writes, as (offset, len).
pub fn writes(raw: &RawCmd, lim: &Limits) -> Vec<(u64, u64)> {
    let a = raw.args;
    match raw.opcode() {
        reg::OP_FILL => vec![(a[0], a[1])],
        reg::OP_COPY => vec![(a[0], a[2])],
        reg::OP_CHECKSUM => vec![(a[2], 8)],
        reg::OP_GEMM => vec![(a[2], a[3].saturating_mul(a[4]).saturating_mul(4))],
        reg::OP_BLIT => lim.mode.map_or(Vec::new(), |md| {
            let first = md.pixel_offset(a[4], a[5]);
            vec![(first, a[3].saturating_mul(md.stride))]
        }),
        reg::OP_FENCE if raw.flags() & reg::FENCE_FLAG_WRITE != 0 => vec![(a[1], 8)],
        _ => Vec::new(),
    }
}

/// FILL on a byte image: the u32 `value` (little-endian) repeated over `[dst, dst +
/// len)`. `None` if out of bounds or `len` is not a multiple of 4.
pub fn fill_in_place(mem: &mut [u8], dst: usize, len: usize, value: u32) -> Option<()> {
    if !len.is_multiple_of(4) {
        return None;
    }
    let range = mem.get_mut(dst..dst.checked_add(len)?)?;
    for w in range.chunks_exact_mut(4) {
        w.copy_from_slice(&value.to_le_bytes());
    }
    Some(())
}

/// BLIT on a byte image: `height` rows of `width` pixels from `src` (rows `src_stride`
/// apart) into `mode`'s scanout at (`dst_x`, `dst_y`), top to bottom, each row a memmove
/// (so a row sees what earlier rows wrote). `None` if a row is out of bounds.
#[allow(clippy::too_many_arguments)]
pub fn blit_in_place(
    mem: &mut [u8],
    mode: &ScanoutMode,
    src: u64,
    src_stride: u64,
    width: u64,
    height: u64,
    dst_x: u64,
    dst_y: u64,
) -> Option<()> {
    let row = usize::try_from(width.checked_mul(mode.bytes_pp)?).ok()?;
    for r in 0..height {
        let s = usize::try_from(src.checked_add(r.checked_mul(src_stride)?)?).ok()?;
        let d = usize::try_from(mode.pixel_offset(dst_x, dst_y + r)).ok()?;
        copy_in_place(mem, d, s, row)?;
    }
    Some(())
}

/// The effect on VRAM of a valid command, on a byte image of the whole VRAM: the bytes
/// the engine writes (a FENCE's WRITE and a CHECKSUM's result included; registers,
/// interrupts and ring movement are not memory and not modelled here). NOP, JUMP and
/// FENCE without WRITE change nothing. `mode` is the scanout a BLIT writes to. `None`
/// if the command does not fit `mem` (or is a BLIT without a mode): validate first.
pub fn apply(mem: &mut [u8], raw: &RawCmd, mode: Option<&ScanoutMode>) -> Option<()> {
    let a = raw.args;
    let us = |v: u64| usize::try_from(v).ok();
    match raw.opcode() {
        reg::OP_FILL => fill_in_place(mem, us(a[0])?, us(a[1])?, a[2] as u32),
        reg::OP_COPY => copy_in_place(mem, us(a[0])?, us(a[1])?, us(a[2])?),
        reg::OP_CHECKSUM => {
            let (src, len, dst) = (us(a[0])?, us(a[1])?, us(a[2])?);
            let h = fnv1a64_bytes(mem.get(src..src.checked_add(len)?)?)?;
            mem.get_mut(dst..dst.checked_add(8)?)?
                .copy_from_slice(&h.to_le_bytes());
            Some(())
        }
        reg::OP_GEMM => {
            if a[..3].iter().any(|&o| !o.is_multiple_of(4)) || !mem.len().is_multiple_of(4) {
                return None;
            }
            let mut words: Vec<u32> = mem
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let w = |o: u64| us(o / 4);
            gemm_in_place(
                &mut words,
                w(a[0])?,
                w(a[1])?,
                w(a[2])?,
                us(a[3])?,
                us(a[4])?,
                us(a[5])?,
            )?;
            for (c, v) in mem.chunks_exact_mut(4).zip(words) {
                c.copy_from_slice(&v.to_le_bytes());
            }
            Some(())
        }
        reg::OP_BLIT => blit_in_place(mem, mode?, a[0], a[1], a[2], a[3], a[4], a[5]),
        reg::OP_FENCE if raw.flags() & reg::FENCE_FLAG_WRITE != 0 => {
            let d = us(a[1])?;
            mem.get_mut(d..d.checked_add(8)?)?
                .copy_from_slice(&a[0].to_le_bytes());
            Some(())
        }
        _ => Some(()),
    }
}

/// A rough cost of a valid command in "bytes touched" (GEMM: 4 per multiply-add), for
/// keeping generated work bounded.
pub fn work(raw: &RawCmd, lim: &Limits) -> u64 {
    let a = raw.args;
    match raw.opcode() {
        reg::OP_FILL | reg::OP_CHECKSUM => a[1],
        reg::OP_COPY => a[2].saturating_mul(2),
        reg::OP_GEMM => a[3]
            .saturating_mul(a[4])
            .saturating_mul(a[5])
            .saturating_mul(4)
            .saturating_add(a[3].saturating_mul(a[4]).saturating_mul(4)),
        reg::OP_BLIT => a[2]
            .saturating_mul(a[3])
            .saturating_mul(lim.mode.map_or(4, |m| m.bytes_pp))
            .saturating_mul(2),
        _ => 64,
    }
}

/// Whether `[a, a + al)` and `[b, b + bl)` overlap.
pub fn overlaps(a: u64, al: u64, b: u64, bl: u64) -> bool {
    al != 0 && bl != 0 && a < b.saturating_add(bl) && b < a.saturating_add(al)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::Cmd;

    const MIB: u64 = 1 << 20;

    fn lim() -> Limits {
        Limits {
            vram_size: 128 * MIB,
            ring_size: 4096,
            mode: None,
        }
    }

    fn v(c: Cmd) -> Verdict {
        validate(&c.raw(), &lim())
    }

    fn only(c: ErrorCode) -> CodeSet {
        let mut s = CodeSet::EMPTY;
        s.add(c);
        s
    }

    #[test]
    fn fnv_known_values() {
        // No words: the offset basis.
        assert_eq!(fnv1a64_words([]), 0xcbf2_9ce4_8422_2325);
        // One zero word: basis * prime.
        assert_eq!(
            fnv1a64_words([0]),
            0xcbf2_9ce4_8422_2325u64.wrapping_mul(0x100_0000_01b3)
        );
        // Word-wise, not byte-wise: differs from classic byte FNV-1a of "a\0\0\0".
        let h = fnv1a64_words([0x61]);
        let mut hb = 0xcbf2_9ce4_8422_2325u64;
        for b in [0x61u8, 0, 0, 0] {
            hb ^= u64::from(b);
            hb = hb.wrapping_mul(0x100_0000_01b3);
        }
        assert_ne!(h, hb);
        assert_eq!(
            h,
            (0xcbf2_9ce4_8422_2325u64 ^ 0x61).wrapping_mul(0x100_0000_01b3)
        );
        assert_eq!(fnv1a64_bytes(&[0x61, 0, 0, 0]), Some(h));
        assert_eq!(fnv1a64_bytes(&[1, 2, 3]), None);
        // Order matters.
        assert_ne!(fnv1a64_words([1, 2]), fnv1a64_words([2, 1]));
    }

    #[test]
    fn gemm_small_and_wrapping() {
        // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50]
        assert_eq!(
            gemm(&[1, 2, 3, 4], &[5, 6, 7, 8], 2, 2, 2),
            Some(vec![19, 22, 43, 50])
        );
        // 1×3 · 3×1
        assert_eq!(gemm(&[1, 2, 3], &[4, 5, 6], 1, 1, 3), Some(vec![32]));
        // Wrapping: (2^31)·2 + 1·1 = 1 mod 2^32.
        assert_eq!(gemm(&[1 << 31, 1], &[2, 1], 1, 1, 2), Some(vec![1]));
        assert_eq!(gemm(&[u32::MAX], &[u32::MAX], 1, 1, 1), Some(vec![1]));
        assert_eq!(gemm(&[1], &[1, 2], 1, 2, 2), None);
        // Non-square.
        let a: Vec<u32> = (1..=6).collect(); // 2×3
        let b: Vec<u32> = (1..=12).collect(); // 3×4
        let c = gemm(&a, &b, 2, 4, 3).expect("fits");
        assert_eq!(c, vec![38, 44, 50, 56, 83, 98, 113, 128]);
    }

    #[test]
    fn gemm_in_place_matches_and_orders_overlap() {
        let a = [1u32, 2, 3, 4];
        let b = [5u32, 6, 7, 8];
        let mut mem = vec![0u32; 12];
        mem[..4].copy_from_slice(&a);
        mem[4..8].copy_from_slice(&b);
        gemm_in_place(&mut mem, 0, 4, 8, 2, 2, 2).expect("fits");
        assert_eq!(&mem[8..], &[19, 22, 43, 50]);
        // C on top of A: element (0,0) overwrites A[0] before (0,1) reads it.
        let mut mem = vec![0u32; 8];
        mem[..4].copy_from_slice(&a);
        mem[4..8].copy_from_slice(&b);
        gemm_in_place(&mut mem, 0, 4, 0, 2, 2, 2).expect("fits");
        // c00 = 1*5+2*7 = 19 -> A[0]=19; c01 = 19*6+2*8 = 130 -> A[1]=130;
        // c10 = 3*5+4*7 = 43; c11 = 43*6+4*8 = 290.
        assert_eq!(&mem[..4], &[19, 130, 43, 290]);
        assert!(gemm_in_place(&mut mem, 6, 0, 0, 2, 2, 2).is_none());
    }

    #[test]
    fn apply_fill_blit_fence_checksum() {
        let mut m = vec![0u8; 64];
        assert_eq!(fill_in_place(&mut m, 4, 8, 0x0403_0201), Some(()));
        assert_eq!(&m[..16], &[0, 0, 0, 0, 1, 2, 3, 4, 1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(fill_in_place(&mut m, 60, 8, 1), None);
        // Two rows of 2 pixels of 2 bytes, source rows overlapping the destination.
        let md = ScanoutMode {
            xres: 4,
            yres: 4,
            bytes_pp: 2,
            stride: 8,
            start: 32,
        };
        let mut m: Vec<u8> = (0..64).collect();
        assert_eq!(blit_in_place(&mut m, &md, 30, 4, 2, 2, 0, 0), Some(()));
        // Row 0: [30..34) -> [32..36) (memmove); row 1 reads [34..38) after row 0 wrote 34, 35.
        assert_eq!(&m[32..36], &[30, 31, 32, 33]);
        assert_eq!(&m[40..44], &[32, 33, 36, 37]);
        let mut m = vec![0u8; 32];
        let fence = Cmd::Fence {
            seqno: 0x1122_3344_5566_7788,
            addr: 8,
            irq: false,
            write: true,
        };
        assert_eq!(apply(&mut m, &fence.raw(), None), Some(()));
        assert_eq!(&m[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
        let ck = Cmd::Checksum {
            src: 0,
            len: 8,
            dst: 24,
        };
        let want = fnv1a64_bytes(&m[..8]).unwrap();
        assert_eq!(apply(&mut m, &ck.raw(), None), Some(()));
        assert_eq!(&m[24..32], &want.to_le_bytes());
        let blit = Cmd::Blit {
            src: 0,
            src_stride: 4,
            width: 1,
            height: 1,
            dst_x: 0,
            dst_y: 0,
        };
        assert_eq!(apply(&mut m, &blit.raw(), None), None);
    }

    #[test]
    fn copy_is_memmove() {
        let mut m: Vec<u8> = (0..16).collect();
        copy_in_place(&mut m, 2, 0, 8).expect("fits");
        assert_eq!(&m[..10], &[0, 1, 0, 1, 2, 3, 4, 5, 6, 7]);
        let mut m: Vec<u8> = (0..16).collect();
        copy_in_place(&mut m, 0, 2, 8).expect("fits");
        assert_eq!(&m[..8], &[2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(copy_in_place(&mut m, 10, 0, 8).is_none());
    }

    #[test]
    fn valid_commands_are_valid() {
        let l = lim();
        for c in [
            Cmd::Nop,
            Cmd::Fill {
                dst: l.vram_size - 4,
                len: 4,
                value: 1,
            },
            Cmd::Copy {
                dst: 3,
                src: 1001,
                len: 13,
            },
            Cmd::Checksum {
                src: 4,
                len: 4,
                dst: l.vram_size - 8,
            },
            Cmd::Gemm {
                a: 0,
                b: 4,
                c: 8,
                m: 1,
                n: 1,
                k: 1,
            },
            Cmd::fence(1),
            Cmd::Fence {
                seqno: 1,
                addr: 8,
                irq: true,
                write: true,
            },
            Cmd::Jump { target: 4032 },
        ] {
            assert!(v(c).is_valid(), "{c:?}: {:?}", v(c));
        }
    }

    #[test]
    fn each_rule_maps_to_its_code() {
        let l = lim();
        let vs = l.vram_size;
        let cases: Vec<(Cmd, ErrorCode)> = vec![
            (Cmd::Raw(RawCmd::new(8, 0, [0; 7])), ErrorCode::BadOpcode),
            (Cmd::Raw(RawCmd::new(0xff, 0, [0; 7])), ErrorCode::BadOpcode),
            (Cmd::Raw(RawCmd::new(0, 1, [0; 7])), ErrorCode::BadFlags),
            (
                Cmd::Raw(RawCmd::new(6, 4, [1, 0, 0, 0, 0, 0, 0])),
                ErrorCode::BadFlags,
            ),
            (
                Cmd::Raw(RawCmd {
                    op: 0,
                    rsvd: 1,
                    args: [0; 7],
                }),
                ErrorCode::BadFlags,
            ),
            (
                Cmd::Raw(RawCmd {
                    op: 1 << 16,
                    rsvd: 0,
                    args: [0; 7],
                }),
                ErrorCode::BadFlags,
            ),
            (
                Cmd::Fill {
                    dst: vs - 4,
                    len: 8,
                    value: 0,
                },
                ErrorCode::OutOfRange,
            ),
            (
                Cmd::Fill {
                    dst: vs,
                    len: 4,
                    value: 0,
                },
                ErrorCode::OutOfRange,
            ),
            (
                Cmd::Fill {
                    dst: 2,
                    len: 4,
                    value: 0,
                },
                ErrorCode::BadAlign,
            ),
            (
                Cmd::Fill {
                    dst: 0,
                    len: 0,
                    value: 0,
                },
                ErrorCode::BadSize,
            ),
            (
                Cmd::Fill {
                    dst: u64::MAX - 3,
                    len: 8,
                    value: 0,
                },
                ErrorCode::BadSize,
            ),
            (
                Cmd::Copy {
                    dst: 0,
                    src: 0,
                    len: 0,
                },
                ErrorCode::BadSize,
            ),
            (
                Cmd::Copy {
                    dst: 0,
                    src: vs - 1,
                    len: 2,
                },
                ErrorCode::OutOfRange,
            ),
            (
                Cmd::Checksum {
                    src: 0,
                    len: 4,
                    dst: 4,
                },
                ErrorCode::BadAlign,
            ),
            (
                Cmd::Gemm {
                    a: 0,
                    b: 0,
                    c: 0,
                    m: 0,
                    n: 1,
                    k: 1,
                },
                ErrorCode::BadSize,
            ),
            (
                Cmd::Gemm {
                    a: 0,
                    b: 0,
                    c: vs - 4,
                    m: 1,
                    n: 2,
                    k: 1,
                },
                ErrorCode::OutOfRange,
            ),
            (
                Cmd::Blit {
                    src: 0,
                    src_stride: 4,
                    width: 1,
                    height: 1,
                    dst_x: 0,
                    dst_y: 0,
                },
                ErrorCode::BadMode,
            ),
            (
                Cmd::Fence {
                    seqno: 1,
                    addr: 4,
                    irq: false,
                    write: true,
                },
                ErrorCode::BadAlign,
            ),
            (Cmd::Jump { target: 4096 }, ErrorCode::BadRing),
            (Cmd::Jump { target: 32 }, ErrorCode::BadRing),
        ];
        for (c, want) in cases {
            let got = v(c);
            assert!(got.must_fail(), "{c:?} should fail");
            assert!(got.allowed().contains(want as u32), "{c:?}: {got:?}");
            assert_eq!(got.must, only(want), "{c:?}");
        }
    }

    #[test]
    fn ambiguous_and_blit_with_mode() {
        // Unused operand: may be BAD_FLAGS.
        let r = RawCmd::new(reg::OP_FILL, 0, [0, 4, 0, 0, 0, 0, 1]);
        assert!(validate(&r, &lim()).is_ambiguous());
        // FENCE without WRITE but an address.
        let r = RawCmd::new(reg::OP_FENCE, 0, [1, 8, 0, 0, 0, 0, 0]);
        assert!(validate(&r, &lim()).is_ambiguous());
        let md = ScanoutMode {
            xres: 640,
            yres: 480,
            bytes_pp: 4,
            stride: 2560,
            start: 0,
        };
        let l = Limits {
            mode: Some(md),
            ..lim()
        };
        let blit = |x, y, w, h| Cmd::Blit {
            src: 4 * MIB,
            src_stride: w * 4,
            width: w,
            height: h,
            dst_x: x,
            dst_y: y,
        };
        assert!(validate(&blit(0, 0, 640, 480).raw(), &l).is_valid());
        assert!(validate(&blit(639, 479, 1, 1).raw(), &l).is_valid());
        assert_eq!(
            validate(&blit(1, 0, 640, 1).raw(), &l).must,
            only(ErrorCode::BadMode)
        );
        assert_eq!(
            validate(&blit(0, 480, 1, 1).raw(), &l).must,
            only(ErrorCode::BadMode)
        );
        assert_eq!(
            validate(&blit(0, 0, 0, 1).raw(), &l).must,
            only(ErrorCode::BadSize)
        );
        assert_eq!(
            writes(&blit(1, 2, 3, 4).raw(), &l),
            vec![(2 * 2560 + 4, 4 * 2560)]
        );
        assert_eq!(md.pixel_offset(1, 2), 2 * 2560 + 4);
    }

    #[test]
    fn helpers() {
        assert!(overlaps(0, 8, 7, 1));
        assert!(!overlaps(0, 8, 8, 1));
        assert!(!overlaps(0, 0, 0, 8));
        assert!(overlaps(u64::MAX - 1, 1, 0, u64::MAX));
        let l = lim();
        let g = Cmd::Gemm {
            a: 0,
            b: 0,
            c: 64,
            m: 2,
            n: 3,
            k: 4,
        }
        .raw();
        assert_eq!(writes(&g, &l), vec![(64, 24)]);
        assert_eq!(work(&g, &l), 2 * 3 * 4 * 4 + 24);
        let mut s = CodeSet::EMPTY;
        s.add(ErrorCode::BadSize);
        s.add(ErrorCode::OutOfRange);
        assert_eq!(s.names(), "OUT_OF_RANGE|BAD_SIZE");
        assert!(s.contains(5) && !s.contains(4) && !s.contains(99));
    }
}
