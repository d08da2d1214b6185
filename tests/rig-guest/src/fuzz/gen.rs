//! What the fuzzer writes: valid templates, mutated and random commands.

use super::*;

const BOUNDARY: [u64; 16] = [
    0,
    1,
    3,
    4,
    8,
    63,
    64,
    4096,
    65536,
    65537,
    1 << 32,
    (1 << 32) + 4,
    1 << 63,
    u64::MAX,
    u64::MAX - 3,
    u64::MAX - 7,
];

impl Fuzzer {
    pub(super) fn limits(&self) -> Limits {
        Limits {
            vram_size: self.vs,
            ring_size: self.size,
            mode: None,
        }
    }

    pub(super) fn slots(&self) -> u64 {
        self.size / 64
    }

    fn boundary(&mut self) -> u64 {
        let vs = self.vs;
        let extra = [vs - 1, vs - 4, vs - 8, vs - 64, vs, vs + 4, vs - 4096];
        if self.rng.chance(1, 2) {
            *self.rng.pick(&extra)
        } else {
            *self.rng.pick(&BOUNDARY)
        }
    }

    pub(super) fn in_ring(&self, off: u64, len: u64) -> bool {
        overlaps(off, len, self.base, self.size)
    }

    /// An offset for `len` bytes with `align`, in a zone and clear of the ring.
    fn zone_off(&mut self, len: u64, align: u64) -> u64 {
        let mut o = 0;
        for _ in 0..8 {
            let (lo, hi) = if self.rng.chance(85, 100) {
                (0, ZONE_A)
            } else {
                (self.vs - ZONE_B, self.vs)
            };
            let max = hi.saturating_sub(len).max(lo);
            o = (lo + self.rng.below(max - lo + 1)) / align * align;
            if !self.in_ring(o, len) {
                break;
            }
        }
        o
    }

    fn small_len(&mut self, unit: u64) -> u64 {
        let n = if self.rng.chance(1, 10) {
            self.rng.range(1, 64 * KIB / unit)
        } else {
            self.rng.range(1, 1024 / unit.min(1024))
        };
        n * unit
    }

    /// A valid command (no BLIT: there is no mode). JUMPs are made by the batch.
    fn template(&mut self) -> Cmd {
        match self.rng.below(12) {
            0 => Cmd::Nop,
            1..=3 => {
                let len = self.small_len(4);
                Cmd::Fill {
                    dst: self.zone_off(len, 4),
                    len,
                    value: self.rng.next_u32(),
                }
            }
            4 | 5 => {
                let len = self.small_len(1) + self.rng.below(4);
                let dst = self.zone_off(len, 1);
                let src = if self.rng.chance(1, 3) {
                    // Overlapping source.
                    dst.saturating_sub(self.rng.below(len + 1))
                        .min(self.vs - len)
                } else {
                    self.zone_off(len, 1)
                };
                Cmd::Copy { dst, src, len }
            }
            6 | 7 => {
                let len = self.small_len(4);
                Cmd::Checksum {
                    src: self.zone_off(len, 4),
                    len,
                    dst: self.zone_off(8, 8),
                }
            }
            8 | 9 => {
                let big = self.rng.chance(1, 8);
                let d = |r: &mut Rng| r.range(1, if big { 32 } else { 12 });
                let (m, n, k) = (d(&mut self.rng), d(&mut self.rng), d(&mut self.rng));
                Cmd::Gemm {
                    a: self.zone_off(m * k * 4, 4),
                    b: self.zone_off(k * n * 4, 4),
                    c: self.zone_off(m * n * 4, 4),
                    m,
                    n,
                    k,
                }
            }
            _ => {
                let write = self.rng.chance(1, 2);
                Cmd::Fence {
                    seqno: self.rng.next_u64() >> self.rng.below(64),
                    addr: if write { self.zone_off(8, 8) } else { 0 },
                    irq: self.rng.chance(1, 4),
                    write,
                }
            }
        }
    }

    fn mutate(&mut self, mut r: RawCmd) -> RawCmd {
        for _ in 0..self.rng.range(1, 3) {
            // Mostly the operands the opcode uses; sometimes any (reserved) one.
            let used = match r.opcode() {
                reg::OP_GEMM | reg::OP_BLIT => 6,
                reg::OP_FILL | reg::OP_COPY | reg::OP_CHECKSUM => 3,
                reg::OP_FENCE => 2,
                _ => 1,
            };
            let i = if self.rng.chance(9, 10) {
                self.rng.below(used) as usize
            } else {
                self.rng.below(7) as usize
            };
            // Operand mutations mostly; the op word and rsvd one time in eight.
            match self.rng.below(40) {
                0..=11 => r.args[i] ^= 1 << self.rng.below(64),
                12..=23 => r.args[i] = self.boundary(),
                24 => r.op ^= 1 << self.rng.below(32),
                25 => r.op = (r.op & !0xff00) | (self.rng.below(256) as u32) << 8,
                26 => r.op |= (self.rng.next_u32() & 0xffff) << 16,
                27 => r.rsvd = self.rng.next_u32() >> self.rng.below(32),
                28 => r.op = (r.op & !0xff) | self.rng.below(256) as u32,
                29..=34 => {
                    let d = *self.rng.pick(&[1u64, 2, 4, 8, 64, 4096]);
                    r.args[i] = if self.rng.chance(1, 2) {
                        r.args[i].wrapping_add(d)
                    } else {
                        r.args[i].wrapping_sub(d)
                    };
                }
                35 | 36 => {
                    let j = self.rng.below(7) as usize;
                    r.args.swap(i, j);
                }
                _ => r.args[i] = 0,
            }
        }
        r
    }

    fn random_raw(&mut self) -> RawCmd {
        let mut r = RawCmd {
            op: self.rng.next_u32(),
            rsvd: if self.rng.chance(1, 2) {
                0
            } else {
                self.rng.next_u32()
            },
            args: [0; 7],
        };
        if self.rng.chance(1, 2) {
            r.op &= 0xffff;
        }
        for a in r.args.iter_mut() {
            *a = match self.rng.below(4) {
                0 => self.rng.next_u64(),
                1 => 0,
                2 => self.rng.below(self.vs),
                _ => *self.rng.pick(&BOUNDARY),
            };
        }
        r
    }

    /// Ranges a valid command reads or writes.
    fn touches(r: &RawCmd) -> Vec<(u64, u64)> {
        let a = r.args;
        match r.opcode() {
            reg::OP_FILL => vec![(a[0], a[1])],
            reg::OP_COPY => vec![(a[0], a[2]), (a[1], a[2])],
            reg::OP_CHECKSUM => vec![(a[0], a[1]), (a[2], 8)],
            reg::OP_GEMM => vec![
                (a[0], a[3] * a[5] * 4),
                (a[1], a[5] * a[4] * 4),
                (a[2], a[3] * a[4] * 4),
            ],
            reg::OP_FENCE if r.flags() & reg::FENCE_FLAG_WRITE != 0 => vec![(a[1], 8)],
            _ => Vec::new(),
        }
    }

    fn in_zones(&self, off: u64, len: u64) -> bool {
        let end = off.saturating_add(len);
        end <= ZONE_A || off >= self.vs - ZONE_B
    }

    /// Whether a generated command may go into the batch: invalid ones always; valid
    /// and ambiguous ones only with bounded work, inside the zones, and rarely writing
    /// into the ring.
    fn acceptable(&mut self, r: &RawCmd) -> bool {
        let lim = self.limits();
        let v = validate(r, &lim);
        if v.must_fail() {
            return true;
        }
        if work(r, &lim) > WORK_MAX {
            return false;
        }
        if !Self::touches(r).iter().all(|&(o, l)| self.in_zones(o, l)) {
            return false;
        }
        let hits_ring = writes(r, &lim).iter().any(|&(o, l)| self.in_ring(o, l));
        !hits_ring || self.rng.chance(1, 20)
    }

    /// One fuzzed command for slot `i` of a batch of `k` starting at ring offset `t0`.
    pub(super) fn fuzzed(&mut self) -> RawCmd {
        for _ in 0..16 {
            let r = match self.rng.below(10) {
                0 => self.random_raw(),
                1 if self.rng.chance(1, 3) => {
                    let mut r = Cmd::Blit {
                        src: self.zone_off(64, 4),
                        src_stride: 16,
                        width: 4,
                        height: 4,
                        dst_x: 0,
                        dst_y: 0,
                    }
                    .raw();
                    if self.rng.chance(1, 2) {
                        r = self.mutate(r);
                    }
                    r
                }
                _ => {
                    let t = self.template().raw();
                    self.mutate(t)
                }
            };
            if self.acceptable(&r) {
                return r;
            }
        }
        Cmd::Nop.raw()
    }

    pub(super) fn valid(&mut self) -> RawCmd {
        for _ in 0..16 {
            let r = self.template().raw();
            if self.acceptable(&r) {
                return r;
            }
        }
        Cmd::Nop.raw()
    }
}
