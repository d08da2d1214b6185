//! Warm-up before serving: lavapipe (llvmpipe) compiles a compute pipeline's machine code
//! at its first dispatch, which takes seconds (tens of seconds in the rig's TCG guest):
//! long enough for the kernel's watchdog to stop the ring whose piece came first. So the
//! daemon runs every entry point once, on a VRAM of its own, before it opens the device,
//! and checks the bytes against the reference while at it.

use vgpu_engine_abi::exec::{apply_piece, Sqe, SqeKind};
use vgpu_engine_abi::reference::{self, ScanoutMode};
use vgpu_engine_abi::Cmd;

use crate::{Error, Executor};

fn piece(cmd: Cmd, mode: Option<ScanoutMode>, start: u64, count: u64, len: u64) -> Sqe {
    Sqe {
        seq: 1,
        kind: Some(SqeKind::Piece),
        id: 1,
        vram_size: len,
        start,
        count,
        state: 0xcbf2_9ce4_8422_2325,
        mode,
        cmd: cmd.raw(),
    }
}

impl Executor {
    /// Run every shader entry point once (whole commands and pieces of each kind) on a
    /// VRAM of its own and compare with the reference: an error if the device gives
    /// other bytes.
    pub fn warm_up(&self) -> Result<(), Error> {
        let len = 1usize << 20;
        let mut vram = self.alloc_vram(len)?;
        let mut x = 0x9e37_79b9u32;
        for w in vram.bytes_mut().chunks_exact_mut(4) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let mut image = vram.bytes().to_vec();
        let mode = ScanoutMode {
            xres: 32,
            yres: 16,
            bytes_pp: 4,
            stride: 128,
            start: 512 << 10,
        };
        let cmds = [
            Cmd::Fill {
                dst: 4096,
                len: 256,
                value: 7,
            },
            Cmd::Copy {
                dst: 3,
                src: 0,
                len: 1000,
            },
            Cmd::Copy {
                dst: 9000,
                src: 20_000,
                len: 1000,
            },
            Cmd::Checksum {
                src: 0,
                len: 4096,
                dst: 8,
            },
            Cmd::Gemm {
                a: 0,
                b: 4096,
                c: 100_000,
                m: 5,
                n: 9,
                k: 7,
            },
            Cmd::Gemm {
                a: 0,
                b: 4096,
                c: 64,
                m: 3,
                n: 3,
                k: 3,
            },
            Cmd::Blit {
                src: 300_000,
                src_stride: 64,
                width: 8,
                height: 4,
                dst_x: 1,
                dst_y: 2,
            },
        ];
        let raw: Vec<_> = cmds.iter().map(Cmd::raw).collect();
        for c in &raw {
            reference::apply(&mut image, c, Some(&mode))
                .ok_or_else(|| Error::Rejected("warm-up: the reference refused".into()))?;
        }
        self.execute(&mut vram, &raw, Some(mode))?;
        let l = len as u64;
        let pieces = [
            piece(cmds[0], None, 64, 64, l),
            piece(cmds[2], None, 10, 100, l),
            piece(cmds[3], None, 400, 400, l),
            // A partial row and whole rows; then C overlapping A (through scratch).
            piece(cmds[4], None, 4, 20, l),
            piece(cmds[5], None, 1, 5, l),
            piece(cmds[6], Some(mode), 1, 2, l),
        ];
        let mut want = vec![];
        for p in &pieces {
            want.push(
                apply_piece(&mut image, p)
                    .ok_or_else(|| Error::Rejected("warm-up: apply_piece refused".into()))?,
            );
        }
        let work: Vec<_> = pieces.iter().map(|p| (0, *p)).collect();
        let got = self.execute_pieces(&mut [&mut vram], &work)?;
        for (g, w) in got.into_iter().zip(want) {
            if g? != w {
                return Err(Error::Device(
                    "warm-up: a CHECKSUM piece's state differs from the reference".into(),
                ));
            }
        }
        if vram.bytes() != &image[..] {
            return Err(Error::Device(
                "warm-up: the device's bytes differ from the reference".into(),
            ));
        }
        Ok(())
    }
}
