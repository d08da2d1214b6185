//! `--exit-cost N`: what one exit costs, timed from inside a guest. Each probe is
//! repeated N times and reported as its mean, in ns:
//!
//! * `cpuid`: the CPUID instruction, which KVM always intercepts and handles in the
//!   kernel: one exit to the (L1) hypervisor and back, no VMM;
//! * `doorbell`: a write of DOORBELL (under vgpu-vmm's default a KVM ioeventfd: an
//!   exit handled in L1's kernel, plus the module's work item; trapped with
//!   `--no-ioeventfd` or under QEMU);
//! * `mmio-read`: a read of CMDS_DONE (trapped: an exit to the VMM, which forwards it as
//!   a VFIO region read);
//! * `vram-read`: a read of VRAM through the memory slot (no exit; the baseline).
//!
//! Prints `CLIENT-EXIT-COST-NS cpuid C doorbell D mmio-read M vram-read V`. With the
//! ring disabled (it is, before the checks run) a doorbell only wakes the module's
//! work item: nothing runs on the engine.

use std::time::Instant;

use vgpu_vfio::abi::engine as reg;
use vgpu_vfio::{DeviceAccess, MappedRegion};

fn mean_ns(n: u32, mut f: impl FnMut() -> Result<(), String>) -> Result<u64, String> {
    let t = Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(t.elapsed().as_nanos() as u64 / u64::from(n.max(1)))
}

/// Runs the probes and prints the line.
pub fn run<A: DeviceAccess>(dev: &A, vram: &MappedRegion, n: u32) -> Result<(), String> {
    let e = |e: vgpu_vfio::Error| e.to_string();
    let cpuid = mean_ns(n, || {
        let r = std::arch::x86_64::__cpuid(0);
        std::hint::black_box(r);
        Ok(())
    })?;
    let doorbell = mean_ns(n, || dev.write_reg(reg::DOORBELL, 1).map_err(e))?;
    let mmio = mean_ns(n, || dev.read_reg(reg::CMDS_DONE).map(drop).map_err(e))?;
    let vram_read = mean_ns(n, || vram.read_u32(0).map(drop).map_err(e))?;
    println!(
        "CLIENT-EXIT-COST-NS cpuid {cpuid} doorbell {doorbell} mmio-read {mmio} vram-read {vram_read}"
    );
    Ok(())
}
