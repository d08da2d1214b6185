//! VRAM backings: host memory the caller owns imported with VK_EXT_external_memory_host
//! (what the daemon will do with the kernel's pages), and the mapped fallback.

mod common;

use std::alloc::Layout;

use common::{executor, Pair, Rng};
use vgpu_engine_abi::reference;
use vgpu_engine_abi::Cmd;
use vgpu_executor::Error;

#[test]
fn imported_host_memory_is_what_the_gpu_writes() {
    let Some(ex) = executor() else { return };
    assert!(
        ex.info().external_memory_host,
        "the CI device (lavapipe) has VK_EXT_external_memory_host"
    );
    let len = 64 << 10;
    let layout = Layout::from_size_align(len, 4096).expect("layout");
    // SAFETY: non-zero size; freed below.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!ptr.is_null());
    let mut rng = Rng(80);
    {
        // SAFETY: `ptr` is `len` bytes we own, freed only after the slice's last use.
        let host = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        rng.fill(host);
    }
    // SAFETY: as above.
    let mut image = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
    let cmds = [
        Cmd::Fill {
            dst: 4096,
            len: 4096,
            value: 0xa5a5_5a5a,
        },
        Cmd::Copy {
            dst: 10,
            src: 0,
            len: 20_000,
        },
        Cmd::Checksum {
            src: 0,
            len: 32768,
            dst: 65528,
        },
        Cmd::Gemm {
            a: 0,
            b: 8000,
            c: 30_000,
            m: 17,
            n: 19,
            k: 23,
        },
    ];
    let raw: Vec<_> = cmds.iter().map(Cmd::raw).collect();
    for c in &raw {
        reference::apply(&mut image, c, None).expect("reference");
    }
    {
        // SAFETY: page-aligned, `len` bytes that outlive the Vram; this test touches
        // them only through the Vram while it lives.
        let mut vram = unsafe { ex.import(ptr, len) }.expect("import");
        assert!(vram.imported());
        ex.execute(&mut vram, &raw, None).expect("execute");
    }
    // SAFETY: the Vram (and its Vulkan memory) is gone; we own the bytes again.
    let host = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
    // SAFETY: allocated above with `layout`.
    unsafe { std::alloc::dealloc(ptr, layout) };
    assert!(
        host == image,
        "the caller's memory differs from the reference"
    );

    // Misaligned pointers and sizes are refused.
    let mut buf = vec![0u8; 3 * 4096];
    let off = buf.as_ptr().align_offset(4096) + 8;
    // SAFETY: refused before anything is imported (misaligned).
    let r = unsafe { ex.import(buf.as_mut_ptr().add(off), 4096) };
    assert!(
        matches!(r, Err(Error::Vram(_))),
        "misaligned import gave {:?}",
        r.err()
    );
    assert!(matches!(ex.alloc_vram(1000), Err(Error::Vram(_))));
}

#[test]
fn mapped_fallback_is_bit_exact_too() {
    let Some(ex) = executor() else { return };
    let mut rng = Rng(90);
    let vram = ex.alloc_mapped_vram(64 << 10).expect("alloc_mapped_vram");
    assert!(!vram.imported());
    let mut p = Pair {
        ex: &ex,
        image: vec![0; vram.len()],
        vram,
        mode: None,
    };
    assert!(
        p.vram.bytes().iter().all(|&b| b == 0),
        "a new VRAM reads zero"
    );
    rng.fill(p.vram.bytes_mut());
    p.image.copy_from_slice(p.vram.bytes());
    p.run(&[
        Cmd::Copy {
            dst: 0,
            src: 1,
            len: 60_000,
        }
        .raw(),
        Cmd::Checksum {
            src: 4,
            len: 60_000,
            dst: 8,
        }
        .raw(),
        Cmd::Gemm {
            a: 0,
            b: 4,
            c: 8,
            m: 20,
            n: 20,
            k: 20,
        }
        .raw(),
    ]);
}
