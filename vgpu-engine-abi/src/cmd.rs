//! The engine's command encoding (docs/engine-abi.md).
//!
//! * [`Cmd`] builds the eight commands and encodes them as the 64-byte little-endian
//!   `struct vgpu_cmd`; [`RawCmd`] is any 64 bytes (for fuzzing and bad-input tests);
//!   [`Cmd::decode`] turns 64 bytes back into a command.
//! * [`ErrorCode`] / [`error_name`]: the values of the ERROR register.
//! * [`EngineRegs`]: one reading of every engine register, as a client reports it.
//!
//! Writing commands into a ring and driving the registers is a client's job (the VFIO
//! client `vgpu_vfio::Engine` on the host, a driver inside a guest).

use crate::layout::engine as reg;

/// An ERROR register value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum ErrorCode {
    /// No error.
    None = 0,
    /// Unknown opcode.
    BadOpcode = 1,
    /// Reserved bits or fields set.
    BadFlags = 2,
    /// An operand range is outside the instance's VRAM.
    OutOfRange = 3,
    /// Misaligned operand.
    BadAlign = 4,
    /// Zero, too large, or arithmetic overflow.
    BadSize = 5,
    /// Misconfigured ring, bad TAIL, bad JUMP target.
    BadRing = 6,
    /// BLIT without a displayable mode or outside it.
    BadMode = 7,
    /// Engine time without completing a FENCE exceeded watchdog_ms.
    Watchdog = 8,
    /// External executor mode only: the executor refused or failed a piece of the
    /// command (docs/executor.md).
    Executor = 9,
}

impl ErrorCode {
    /// Every code, in register order.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::None,
        ErrorCode::BadOpcode,
        ErrorCode::BadFlags,
        ErrorCode::OutOfRange,
        ErrorCode::BadAlign,
        ErrorCode::BadSize,
        ErrorCode::BadRing,
        ErrorCode::BadMode,
        ErrorCode::Watchdog,
        ErrorCode::Executor,
    ];

    /// The code for a register value, if it is one the ABI defines.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// The ABI's name (`BAD_OPCODE`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "NONE",
            ErrorCode::BadOpcode => "BAD_OPCODE",
            ErrorCode::BadFlags => "BAD_FLAGS",
            ErrorCode::OutOfRange => "OUT_OF_RANGE",
            ErrorCode::BadAlign => "BAD_ALIGN",
            ErrorCode::BadSize => "BAD_SIZE",
            ErrorCode::BadRing => "BAD_RING",
            ErrorCode::BadMode => "BAD_MODE",
            ErrorCode::Watchdog => "WATCHDOG",
            ErrorCode::Executor => "EXECUTOR",
        }
    }

    /// A one-bit mask for sets of codes.
    pub const fn bit(self) -> u16 {
        1 << self as u32
    }
}

/// The name of an ERROR register value (`"code 12"` if the ABI does not define it).
pub fn error_name(v: u32) -> &'static str {
    ErrorCode::from_u32(v).map_or("undefined", ErrorCode::name)
}

/// Any 64-byte command, as laid out in the ring (`struct vgpu_cmd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct RawCmd {
    /// Bits 0-7 opcode, 8-15 flags, 16-31 must be 0.
    pub op: u32,
    /// Must be 0.
    pub rsvd: u32,
    /// Operands.
    pub args: [u64; 7],
}

impl RawCmd {
    /// A command with `opcode`, `flags` and `args`, reserved fields zero.
    pub const fn new(opcode: u8, flags: u8, args: [u64; 7]) -> Self {
        RawCmd {
            op: opcode as u32 | (flags as u32) << 8,
            rsvd: 0,
            args,
        }
    }

    /// The opcode byte.
    pub const fn opcode(&self) -> u8 {
        (self.op & 0xff) as u8
    }

    /// The flags byte.
    pub const fn flags(&self) -> u8 {
        ((self.op >> 8) & 0xff) as u8
    }

    /// Bits 16-31 of `op` (must be 0).
    pub const fn op_high(&self) -> u16 {
        (self.op >> 16) as u16
    }

    /// Little-endian encoding.
    pub fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..4].copy_from_slice(&self.op.to_le_bytes());
        b[4..8].copy_from_slice(&self.rsvd.to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        b
    }

    /// The encoding as eight little-endian u64 words (what is written to VRAM).
    pub fn words(&self) -> [u64; 8] {
        let mut w = [0u64; 8];
        w[0] = u64::from(self.op) | u64::from(self.rsvd) << 32;
        w[1..].copy_from_slice(&self.args);
        w
    }

    /// Decode 64 little-endian bytes.
    pub fn decode(b: &[u8; 64]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut args = [0u64; 7];
        for (i, a) in args.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[8 + 8 * i..16 + 8 * i]);
            *a = u64::from_le_bytes(w);
        }
        RawCmd {
            op: u32_at(0),
            rsvd: u32_at(4),
            args,
        }
    }

    /// Decode eight u64 words (as read from VRAM).
    pub fn from_words(w: &[u64; 8]) -> Self {
        let mut args = [0u64; 7];
        args.copy_from_slice(&w[1..]);
        RawCmd {
            op: w[0] as u32,
            rsvd: (w[0] >> 32) as u32,
            args,
        }
    }
}

/// One engine command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmd {
    /// Nothing.
    Nop,
    /// `dst[0..len) = value` repeated (u32 words).
    Fill {
        /// VRAM offset (4-aligned).
        dst: u64,
        /// Bytes (multiple of 4).
        len: u64,
        /// Value of every u32 word.
        value: u32,
    },
    /// memmove within the instance's VRAM.
    Copy {
        /// Destination offset.
        dst: u64,
        /// Source offset.
        src: u64,
        /// Bytes.
        len: u64,
    },
    /// FNV-1a-64 over the u32 words of `src[0..len)`, written as a u64 at `dst`.
    Checksum {
        /// Source offset (4-aligned).
        src: u64,
        /// Bytes (multiple of 4).
        len: u64,
        /// Where the u64 goes (8-aligned).
        dst: u64,
    },
    /// `C[m×n] = A[m×k]·B[k×n]` over u32, wrapping, row-major.
    Gemm {
        /// Offset of A.
        a: u64,
        /// Offset of B.
        b: u64,
        /// Offset of C.
        c: u64,
        /// Rows of A and C.
        m: u64,
        /// Columns of B and C.
        n: u64,
        /// Columns of A, rows of B.
        k: u64,
    },
    /// Copy a pixel rectangle into the bochs scanout.
    Blit {
        /// Source offset.
        src: u64,
        /// Source bytes per row.
        src_stride: u64,
        /// Width in pixels.
        width: u64,
        /// Height in pixels.
        height: u64,
        /// Destination x in the scanout.
        dst_x: u64,
        /// Destination y in the scanout.
        dst_y: u64,
    },
    /// FENCE = seqno; optionally write it to VRAM and raise IRQ_STATUS.FENCE.
    Fence {
        /// Sequence number.
        seqno: u64,
        /// VRAM offset for the WRITE flag (8-aligned); 0 without WRITE.
        addr: u64,
        /// Flag IRQ.
        irq: bool,
        /// Flag WRITE.
        write: bool,
    },
    /// HEAD = target.
    Jump {
        /// Ring offset (64-aligned, < RING_SIZE).
        target: u64,
    },
    /// Any 64 bytes.
    Raw(RawCmd),
}

impl Cmd {
    /// A FENCE without flags.
    pub const fn fence(seqno: u64) -> Self {
        Cmd::Fence {
            seqno,
            addr: 0,
            irq: false,
            write: false,
        }
    }

    /// The command as raw fields.
    pub fn raw(&self) -> RawCmd {
        match *self {
            Cmd::Nop => RawCmd::new(reg::OP_NOP, 0, [0; 7]),
            Cmd::Fill { dst, len, value } => {
                RawCmd::new(reg::OP_FILL, 0, [dst, len, u64::from(value), 0, 0, 0, 0])
            }
            Cmd::Copy { dst, src, len } => {
                RawCmd::new(reg::OP_COPY, 0, [dst, src, len, 0, 0, 0, 0])
            }
            Cmd::Checksum { src, len, dst } => {
                RawCmd::new(reg::OP_CHECKSUM, 0, [src, len, dst, 0, 0, 0, 0])
            }
            Cmd::Gemm { a, b, c, m, n, k } => RawCmd::new(reg::OP_GEMM, 0, [a, b, c, m, n, k, 0]),
            Cmd::Blit {
                src,
                src_stride,
                width,
                height,
                dst_x,
                dst_y,
            } => RawCmd::new(
                reg::OP_BLIT,
                0,
                [src, src_stride, width, height, dst_x, dst_y, 0],
            ),
            Cmd::Fence {
                seqno,
                addr,
                irq,
                write,
            } => {
                let mut f = 0;
                if irq {
                    f |= reg::FENCE_FLAG_IRQ;
                }
                if write {
                    f |= reg::FENCE_FLAG_WRITE;
                }
                RawCmd::new(reg::OP_FENCE, f, [seqno, addr, 0, 0, 0, 0, 0])
            }
            Cmd::Jump { target } => RawCmd::new(reg::OP_JUMP, 0, [target, 0, 0, 0, 0, 0, 0]),
            Cmd::Raw(r) => r,
        }
    }

    /// The 64-byte little-endian encoding.
    pub fn encode(&self) -> [u8; 64] {
        self.raw().encode()
    }

    /// Decode: a typed command when the bytes are the canonical encoding of one (known
    /// opcode, defined flags only, reserved fields and unused operands zero), else
    /// [`Cmd::Raw`].
    pub fn decode(b: &[u8; 64]) -> Self {
        Self::from_raw(RawCmd::decode(b))
    }

    /// As [`Cmd::decode`], from raw fields.
    pub fn from_raw(r: RawCmd) -> Self {
        let a = r.args;
        let typed = if r.rsvd != 0 || r.op_high() != 0 {
            None
        } else {
            let flags = r.flags();
            let zero_from = |i: usize| a[i..].iter().all(|&x| x == 0);
            match r.opcode() {
                reg::OP_NOP if flags == 0 && zero_from(0) => Some(Cmd::Nop),
                reg::OP_FILL if flags == 0 && zero_from(3) && a[2] >> 32 == 0 => Some(Cmd::Fill {
                    dst: a[0],
                    len: a[1],
                    value: a[2] as u32,
                }),
                reg::OP_COPY if flags == 0 && zero_from(3) => Some(Cmd::Copy {
                    dst: a[0],
                    src: a[1],
                    len: a[2],
                }),
                reg::OP_CHECKSUM if flags == 0 && zero_from(3) => Some(Cmd::Checksum {
                    src: a[0],
                    len: a[1],
                    dst: a[2],
                }),
                reg::OP_GEMM if flags == 0 && zero_from(6) => Some(Cmd::Gemm {
                    a: a[0],
                    b: a[1],
                    c: a[2],
                    m: a[3],
                    n: a[4],
                    k: a[5],
                }),
                reg::OP_BLIT if flags == 0 && zero_from(6) => Some(Cmd::Blit {
                    src: a[0],
                    src_stride: a[1],
                    width: a[2],
                    height: a[3],
                    dst_x: a[4],
                    dst_y: a[5],
                }),
                reg::OP_FENCE
                    if flags & !(reg::FENCE_FLAG_IRQ | reg::FENCE_FLAG_WRITE) == 0
                        && zero_from(2)
                        && (flags & reg::FENCE_FLAG_WRITE != 0 || a[1] == 0) =>
                {
                    Some(Cmd::Fence {
                        seqno: a[0],
                        addr: a[1],
                        irq: flags & reg::FENCE_FLAG_IRQ != 0,
                        write: flags & reg::FENCE_FLAG_WRITE != 0,
                    })
                }
                reg::OP_JUMP if flags == 0 && zero_from(1) => Some(Cmd::Jump { target: a[0] }),
                _ => None,
            }
        };
        typed.unwrap_or(Cmd::Raw(r))
    }

    /// Short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Cmd::Nop => "NOP",
            Cmd::Fill { .. } => "FILL",
            Cmd::Copy { .. } => "COPY",
            Cmd::Checksum { .. } => "CHECKSUM",
            Cmd::Gemm { .. } => "GEMM",
            Cmd::Blit { .. } => "BLIT",
            Cmd::Fence { .. } => "FENCE",
            Cmd::Jump { .. } => "JUMP",
            Cmd::Raw(_) => "RAW",
        }
    }
}

/// All engine registers read at one moment (one read each, not atomic as a whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EngineRegs {
    /// RING_BASE (HI:LO).
    pub base: u64,
    /// RING_SIZE.
    pub size: u32,
    /// RING_HEAD.
    pub head: u32,
    /// RING_TAIL.
    pub tail: u32,
    /// RING_CTL.
    pub ctl: u32,
    /// STATUS.
    pub status: u32,
    /// ERROR.
    pub error: u32,
    /// ERROR_HEAD.
    pub error_head: u32,
    /// FENCE (HI:LO).
    pub fence: u64,
    /// IRQ_STATUS.
    pub irq_status: u32,
    /// IRQ_MASK.
    pub irq_mask: u32,
    /// CMDS_DONE.
    pub cmds_done: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_little_endian_struct_vgpu_cmd() {
        let c = Cmd::Fill {
            dst: 0x1122_3344_5566_7788,
            len: 0x40,
            value: 0xdead_beef,
        };
        let b = c.encode();
        assert_eq!(&b[0..4], &[0x01, 0, 0, 0]);
        assert_eq!(&b[4..8], &[0; 4]);
        assert_eq!(&b[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[16..24], &0x40u64.to_le_bytes());
        assert_eq!(&b[24..32], &[0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0]);
        assert!(b[32..].iter().all(|&x| x == 0));

        let f = Cmd::Fence {
            seqno: 7,
            addr: 0x1000,
            irq: true,
            write: true,
        }
        .encode();
        assert_eq!(&f[0..4], &[0x06, 0x03, 0, 0]);
        assert_eq!(&f[8..16], &7u64.to_le_bytes());
        assert_eq!(&f[16..24], &0x1000u64.to_le_bytes());

        let g = Cmd::Gemm {
            a: 1,
            b: 2,
            c: 3,
            m: 4,
            n: 5,
            k: 6,
        }
        .raw();
        assert_eq!(g.op, 4);
        assert_eq!(g.args, [1, 2, 3, 4, 5, 6, 0]);
        assert_eq!(Cmd::Jump { target: 0x40 }.raw().args[0], 0x40);
        assert_eq!(Cmd::Nop.encode(), [0u8; 64]);
        let bl = Cmd::Blit {
            src: 1,
            src_stride: 2,
            width: 3,
            height: 4,
            dst_x: 5,
            dst_y: 6,
        }
        .raw();
        assert_eq!((bl.op, bl.args), (5, [1, 2, 3, 4, 5, 6, 0]));
        assert_eq!(
            Cmd::Checksum {
                src: 8,
                len: 16,
                dst: 24
            }
            .raw()
            .args[..3],
            [8, 16, 24]
        );
        assert_eq!(
            Cmd::Copy {
                dst: 8,
                src: 16,
                len: 24
            }
            .raw()
            .args[..3],
            [8, 16, 24]
        );
    }

    #[test]
    fn decode_round_trips_and_flags_non_canonical() {
        let cmds = [
            Cmd::Nop,
            Cmd::Fill {
                dst: 4,
                len: 8,
                value: u32::MAX,
            },
            Cmd::Copy {
                dst: 1,
                src: 2,
                len: 3,
            },
            Cmd::Checksum {
                src: 4,
                len: 4,
                dst: 8,
            },
            Cmd::Gemm {
                a: 0,
                b: 4,
                c: 8,
                m: 1,
                n: 1,
                k: 1,
            },
            Cmd::Blit {
                src: 0,
                src_stride: 4,
                width: 1,
                height: 1,
                dst_x: 0,
                dst_y: 0,
            },
            Cmd::fence(9),
            Cmd::Fence {
                seqno: 9,
                addr: 64,
                irq: false,
                write: true,
            },
            Cmd::Jump { target: 128 },
        ];
        for c in cmds {
            assert_eq!(Cmd::decode(&c.encode()), c, "{c:?}");
            let r = c.raw();
            assert_eq!(RawCmd::from_words(&r.words()), r);
            assert_eq!(RawCmd::decode(&r.encode()), r);
        }
        // Reserved field, high op bits, unknown flag, unused operand: all raw.
        let mut r = Cmd::Nop.raw();
        r.rsvd = 1;
        assert!(matches!(Cmd::from_raw(r), Cmd::Raw(_)));
        let mut r = Cmd::Nop.raw();
        r.op |= 1 << 16;
        assert!(matches!(Cmd::from_raw(r), Cmd::Raw(_)));
        let r = RawCmd::new(reg::OP_FENCE, 4, [1, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(Cmd::from_raw(r), Cmd::Raw(_)));
        let r = RawCmd::new(reg::OP_FILL, 0, [0, 4, 0, 0, 0, 0, 1]);
        assert!(matches!(Cmd::from_raw(r), Cmd::Raw(_)));
        let r = RawCmd::new(8, 0, [0; 7]);
        assert!(matches!(Cmd::from_raw(r), Cmd::Raw(_)));
        assert_eq!(r.opcode(), 8);
        let r = RawCmd::new(6, 3, [0; 7]);
        assert_eq!((r.opcode(), r.flags(), r.op_high()), (6, 3, 0));
    }

    #[test]
    fn error_codes() {
        assert_eq!(ErrorCode::from_u32(8), Some(ErrorCode::Watchdog));
        assert_eq!(ErrorCode::from_u32(9), None);
        assert_eq!(ErrorCode::BadRing as u32, 6);
        assert_eq!(error_name(3), "OUT_OF_RANGE");
        assert_eq!(error_name(77), "undefined");
        assert_eq!(ErrorCode::BadAlign.bit(), 1 << 4);
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
