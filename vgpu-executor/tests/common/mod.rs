//! Helpers of the executor's tests: a device (or a clear skip), a PRNG, and running
//! commands on the GPU and on the reference side by side.
#![allow(dead_code)]

use vgpu_engine_abi::reference::{self, Limits, ScanoutMode};
use vgpu_engine_abi::RawCmd;
use vgpu_executor::{DeviceSelector, Error, Executor, Vram};

/// The device the tests use: `VGPU_EXECUTOR_DEVICE` (as `--device`), else the default.
/// Without any Vulkan device the test is skipped with a message, unless
/// `VGPU_REQUIRE_VULKAN=1` (scripts/test sets it: CI has lavapipe) makes it fail.
pub fn executor() -> Option<Executor> {
    let sel = std::env::var("VGPU_EXECUTOR_DEVICE")
        .map(|s| DeviceSelector::parse(&s))
        .unwrap_or(DeviceSelector::Default);
    let required = std::env::var("VGPU_REQUIRE_VULKAN").is_ok_and(|v| v == "1");
    match Executor::new(&sel) {
        Ok(e) => Some(e),
        Err(e @ (Error::NoVulkan(_) | Error::Device(_))) if !required => {
            eprintln!("SKIPPED: no usable Vulkan device ({e}); install mesa-vulkan-drivers (scripts/setup)");
            None
        }
        Err(e) => panic!("Vulkan device required (VGPU_REQUIRE_VULKAN=1): {e}"),
    }
}

/// splitmix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A GPU VRAM and its reference image, kept equal.
pub struct Pair<'e> {
    pub ex: &'e Executor,
    pub vram: Vram<'e>,
    pub image: Vec<u8>,
    pub mode: Option<ScanoutMode>,
}

impl<'e> Pair<'e> {
    /// A VRAM of `len` bytes filled with random bytes (the same in both).
    pub fn new(ex: &'e Executor, len: usize, rng: &mut Rng) -> Self {
        let mut vram = ex.alloc_vram(len).expect("alloc_vram");
        rng.fill(vram.bytes_mut());
        let image = vram.bytes().to_vec();
        Pair {
            ex,
            vram,
            image,
            mode: None,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            vram_size: self.image.len() as u64,
            ring_size: 1 << 20,
            mode: self.mode,
        }
    }

    /// Run `cmds` (valid or ambiguous per the reference validator) on both and compare
    /// the whole VRAM.
    pub fn run(&mut self, cmds: &[RawCmd]) {
        for c in cmds {
            let v = reference::validate(c, &self.limits());
            assert!(
                !v.must_fail(),
                "test generated an invalid command {c:?}: {}",
                v.must.names()
            );
            reference::apply(&mut self.image, c, self.mode.as_ref()).expect("reference apply");
        }
        self.ex
            .execute(&mut self.vram, cmds, self.mode)
            .expect("execute");
        self.compare(cmds);
    }

    pub fn compare(&self, cmds: &[RawCmd]) {
        let got = self.vram.bytes();
        if got != &self.image[..] {
            let first = got
                .iter()
                .zip(&self.image)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let n = got.iter().zip(&self.image).filter(|(a, b)| a != b).count();
            panic!(
                "GPU and reference differ: {n} bytes, first at {first:#x} (gpu {:#04x}, reference {:#04x}) after {cmds:x?}",
                got[first], self.image[first]
            );
        }
    }
}
