//! vgpu-engine-client: runs engine work on one vGPU and checks every result against
//! the reference (`vgpu_engine_abi::reference`), with each batch's FENCE waited for by
//! MSI alone. The same code runs over either device access (`DeviceAccess`, the seam
//! in `vgpu_vfio::engine`):
//!
//! ```text
//! vgpu-engine-client --guest /dev/vgpu0 [--rounds N] [--timeout-s S]   # in a VM: guest driver
//! vgpu-engine-client --vfio /sys/bus/mdev/devices/<uuid> [...]         # host or L1: VFIO
//! vgpu-engine-client --guest /dev/vgpu0 --saturate SECS                 # keep the engine busy
//! vgpu-engine-client --guest /dev/vgpu0 --regs                          # show the engine registers
//! ```
//!
//! `--leave-programmed` skips the final disable: the ring stays enabled and every
//! register as the run left it (for the rig's test that a VM reset resets the device).
//! `--regs` only reads the engine registers ([`reg::READABLE`]) and prints each
//! (`CLIENT-REG NAME value`), then `CLIENT-REGS at-reset yes|no` (all at
//! [`reg::DEVICE_RESET_VALUE`] or not); it writes nothing.
//!
//! By default the run submits the fast way when the device offers it
//! (docs/engine-abi.md, "TAIL shadow" and IRQ_EDGE): TAIL stored in a shadow word in
//! VRAM, then DOORBELL; each FENCE also writes its seqno to VRAM, where the wait reads
//! it; FENCE interrupts edge-style, nothing to acknowledge. In a VM that leaves
//! DOORBELL as the one register access per submission (an ioeventfd under vgpu-vmm:
//! no exit to the VMM). `--no-shadow` uses the registers (RING_TAIL, FENCE_LO/HI,
//! IRQ_STATUS) as before; `CLIENT-SUBMIT` says which. `--exit-cost N` (exitcost.rs)
//! first times N exits of each kind.
//!
//! `--saturate` (saturate.rs) replaces the checks by a loop of GEMMs that keeps the
//! ring full and reports the work done, for the multi-VM share test.
//!
//! Prints `CLIENT-*` lines for a script to judge (tests/rig/guest/vgpu-vmm-boot):
//! `CLIENT-CHECK <what> ok|FAIL ...`, `CLIENT-FENCES n`, `CLIENT-IRQS n` (interrupts
//! consumed while waiting), `CLIENT-RTT-US median min max` (kick of a bare IRQ FENCE →
//! its MSI seen), and exits 0 only if every check passed (1: a check failed or the
//! engine or an interrupt did not come in time; 2: bad arguments).

mod exitcost;
mod guest;
mod saturate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vgpu_vfio::abi::engine as reg;
use vgpu_vfio::{reference, region, Cmd, Device, DeviceAccess, Engine, MappedRegion, MsiDevice};

/// Where the ring and the data live in VRAM.
const RING_BASE: u64 = 0;
const RING_SIZE: u64 = 64 << 10;
const A_OFF: u64 = 0x10_0000;
const B_OFF: u64 = 0x11_0000;
const C_OFF: u64 = 0x12_0000;
const FILL_OFF: u64 = 0x13_0000;
const COPY_OFF: u64 = 0x14_0000;
const SUM_OFF: u64 = 0x15_0000;
/// The TAIL shadow word, and 8 bytes on the word FENCEs write their seqno to.
const SHADOW_OFF: u64 = 0x16_0000;
const FILL_LEN: u64 = 64 << 10;
/// GEMM shape (not square, so a transposed operand shows).
const M: usize = 24;
const N: usize = 20;
const K: usize = 28;
/// Bytes of VRAM the client uses.
const USED: u64 = SHADOW_OFF + 4096;

struct Args {
    guest: Option<PathBuf>,
    vfio: Option<PathBuf>,
    rounds: u32,
    pings: u32,
    timeout: Duration,
    saturate: Option<u64>,
    leave_programmed: bool,
    regs: bool,
    no_shadow: bool,
    exit_cost: u32,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        guest: None,
        vfio: None,
        rounds: 4,
        pings: 32,
        timeout: Duration::from_secs(30),
        saturate: None,
        leave_programmed: false,
        regs: false,
        no_shadow: false,
        exit_cost: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{f} needs a value"));
        match f.as_str() {
            "--guest" => a.guest = Some(PathBuf::from(val()?)),
            "--vfio" => a.vfio = Some(PathBuf::from(val()?)),
            "--rounds" => a.rounds = val()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--saturate" => {
                a.saturate = Some(val()?.parse().map_err(|e| format!("--saturate: {e}"))?)
            }
            "--leave-programmed" => a.leave_programmed = true,
            "--regs" => a.regs = true,
            "--no-shadow" => a.no_shadow = true,
            "--exit-cost" => {
                a.exit_cost = val()?.parse().map_err(|e| format!("--exit-cost: {e}"))?
            }
            "--pings" => a.pings = val()?.parse().map_err(|e| format!("--pings: {e}"))?,
            "--timeout-s" => {
                a.timeout =
                    Duration::from_secs(val()?.parse().map_err(|e| format!("--timeout-s: {e}"))?)
            }
            _ => return Err(format!("unknown argument '{f}'")),
        }
    }
    if a.guest.is_some() == a.vfio.is_some() {
        return Err("give exactly one of --guest /dev/vgpuN and --vfio <mdev sysfs path>".into());
    }
    Ok(a)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vgpu-engine-client: {e}");
            std::process::exit(2);
        }
    };
    let r = if let Some(node) = &args.guest {
        guest::GuestDevice::open(node)
            .and_then(|(d, size)| {
                let vram = d.map_vram(size)?;
                Ok((Arc::new(d), Arc::new(vram)))
            })
            .map_err(|e| format!("{}: {e}", node.display()))
            .and_then(|(d, v)| dispatch(d, v, &args))
    } else if let Some(p) = &args.vfio {
        open_vfio(p)
            .map_err(|e| format!("{}: {e}", p.display()))
            .and_then(|(d, v)| dispatch(d, v, &args))
    } else {
        Err("no device".into())
    };
    match r {
        Ok(true) => println!("CLIENT-RESULT pass"),
        Ok(false) => {
            println!("CLIENT-RESULT fail");
            std::process::exit(1);
        }
        Err(e) => {
            println!("CLIENT-RESULT error: {e}");
            std::process::exit(1);
        }
    }
}

fn dispatch<A: DeviceAccess>(
    dev: Arc<A>,
    vram: Arc<MappedRegion>,
    args: &Args,
) -> Result<bool, String> {
    if args.regs {
        return show_regs(&*dev);
    }
    if args.exit_cost > 0 {
        exitcost::run(&*dev, &vram, args.exit_cost)?;
    }
    match args.saturate {
        Some(secs) => saturate::run(dev, vram, secs, Duration::from_millis(500)).map(|_| true),
        None => run(dev, vram, args),
    }
}

/// `--regs`: every readable engine register by its ABI name, and whether all are at
/// their device-reset value.
fn show_regs<A: DeviceAccess>(dev: &A) -> Result<bool, String> {
    let mut at_reset = true;
    for (name, off) in reg::READABLE {
        let v = dev.read_reg(off).map_err(|e| format!("{name}: {e}"))?;
        println!("CLIENT-REG {name} {v:#x}");
        at_reset &= v == reg::DEVICE_RESET_VALUE;
    }
    println!(
        "CLIENT-REGS at-reset {}",
        if at_reset { "yes" } else { "no" }
    );
    Ok(true)
}

fn open_vfio(p: &std::path::Path) -> vgpu_vfio::Result<(Arc<MsiDevice>, Arc<MappedRegion>)> {
    let dev = Arc::new(Device::open(p)?);
    let size = dev.region_size(region::BAR0)?;
    let vram = Arc::new(dev.mmap_region(region::BAR0, 0, size)?);
    Ok((Arc::new(MsiDevice::new(dev)?), vram))
}

/// A small xorshift for the operands (no dependency; the values only need to vary).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }
}

/// Counts what the run did and whether every check held.
#[derive(Default)]
struct Tally {
    fences: u64,
    irqs: u64,
    ok: bool,
}

impl Tally {
    fn check(&mut self, what: &str, good: bool, detail: String) {
        println!(
            "CLIENT-CHECK {what} {}{}",
            if good { "ok" } else { "FAIL" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(" {detail}")
            }
        );
        self.ok &= good;
    }
}

/// Submit `cmds` plus a FENCE with IRQ and wait for its MSI; counts both.
fn fenced<A: DeviceAccess>(
    eng: &mut Engine<A>,
    cmds: &[Cmd],
    t: &mut Tally,
    timeout: Duration,
) -> Result<Duration, String> {
    let seq = eng.submit_fenced(cmds, true).map_err(|e| e.to_string())?;
    t.fences += 1;
    let (waited, n) = eng
        .wait_fence_msi(seq, timeout)
        .map_err(|e| e.to_string())?;
    t.irqs += n;
    Ok(waited)
}

fn run<A: DeviceAccess>(dev: Arc<A>, vram: Arc<MappedRegion>, args: &Args) -> Result<bool, String> {
    let e = |e: vgpu_vfio::Error| e.to_string();
    if vram.len() < USED {
        return Err(format!("VRAM of {:#x} bytes: need {USED:#x}", vram.len()));
    }
    let mut eng = Engine::new(dev, vram.clone()).map_err(e)?;
    eng.reset().map_err(e)?;
    eng.setup(RING_BASE, RING_SIZE).map_err(e)?;
    // One interrupt per IRQ FENCE: IRQ_STATUS clear, only FENCE unmasked.
    eng.set_irq_mask(reg::IRQ_FENCE).map_err(e)?;
    eng.ack_irq(reg::IRQ_ALL).map_err(e)?;
    if !args.no_shadow {
        let shadow = eng.enable_tail_shadow(SHADOW_OFF).map_err(e)?;
        if shadow {
            eng.set_fence_write(Some(SHADOW_OFF + 8)).map_err(e)?;
        }
        let edge = eng.set_irq_edge(reg::IRQ_FENCE).map_err(e)?;
        println!(
            "CLIENT-SUBMIT tail-shadow {} irq-edge {}",
            if shadow { "yes" } else { "no" },
            if edge { "yes" } else { "no" }
        );
    } else {
        println!("CLIENT-SUBMIT registers");
    }
    let done0 = eng.cmds_done().map_err(e)?;
    let mut t = Tally {
        ok: true,
        ..Default::default()
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let words = |n: u64| (n / 4) as usize;

    for round in 0..args.rounds {
        let a: Vec<u32> = (0..M * K).map(|_| rng.next()).collect();
        let b: Vec<u32> = (0..K * N).map(|_| rng.next()).collect();
        vram.write_u32_slice(A_OFF, &a).map_err(e)?;
        vram.write_u32_slice(B_OFF, &b).map_err(e)?;
        let value = 0xa5a5_0000 | round;
        let cmds = [
            Cmd::Gemm {
                a: A_OFF,
                b: B_OFF,
                c: C_OFF,
                m: M as u64,
                n: N as u64,
                k: K as u64,
            },
            Cmd::Fill {
                dst: FILL_OFF,
                len: FILL_LEN,
                value,
            },
            Cmd::Copy {
                dst: COPY_OFF,
                src: FILL_OFF,
                len: FILL_LEN,
            },
            Cmd::Checksum {
                src: COPY_OFF,
                len: FILL_LEN,
                dst: SUM_OFF,
            },
            Cmd::Checksum {
                src: C_OFF,
                len: (M * N * 4) as u64,
                dst: SUM_OFF + 8,
            },
        ];
        fenced(&mut eng, &cmds, &mut t, args.timeout)?;

        let want_c = reference::gemm(&a, &b, M, N, K).ok_or("reference gemm")?;
        let mut c = vec![0u32; M * N];
        vram.read_u32_slice(C_OFF, &mut c).map_err(e)?;
        let bad = c.iter().zip(&want_c).filter(|(x, y)| x != y).count();
        t.check(
            &format!("gemm-{round}"),
            bad == 0,
            format!("{M}x{K}·{K}x{N}: {bad} element(s) differ"),
        );
        let mut f = vec![0u32; words(FILL_LEN)];
        vram.read_u32_slice(FILL_OFF, &mut f).map_err(e)?;
        let bad = f.iter().filter(|&&w| w != value).count();
        t.check(
            &format!("fill-{round}"),
            bad == 0,
            format!("{bad} word(s) not {value:#x}"),
        );
        let mut cp = vec![0u32; words(FILL_LEN)];
        vram.read_u32_slice(COPY_OFF, &mut cp).map_err(e)?;
        t.check(&format!("copy-{round}"), cp == f, String::new());
        let want_sum = reference::fnv1a64_words(std::iter::repeat_n(value, words(FILL_LEN)));
        let sum = vram.read_u64(SUM_OFF).map_err(e)?;
        t.check(
            &format!("checksum-{round}"),
            sum == want_sum,
            format!("{sum:#x} want {want_sum:#x}"),
        );
        let want_csum = reference::fnv1a64_words(want_c.iter().copied());
        let csum = vram.read_u64(SUM_OFF + 8).map_err(e)?;
        t.check(
            &format!("checksum-c-{round}"),
            csum == want_csum,
            format!("{csum:#x} want {want_csum:#x}"),
        );
    }

    // Bare IRQ FENCEs: kick → MSI seen, one at a time.
    let mut rtt = Vec::with_capacity(args.pings as usize);
    for _ in 0..args.pings {
        let start = std::time::Instant::now();
        fenced(&mut eng, &[], &mut t, args.timeout)?;
        rtt.push(start.elapsed().as_micros() as u64);
    }
    rtt.sort_unstable();
    if let (Some(min), Some(max)) = (rtt.first(), rtt.last()) {
        println!("CLIENT-RTT-US {} {min} {max}", rtt[rtt.len() / 2]);
    }

    let st = eng.check().map_err(e)?;
    t.check(
        "engine-no-error",
        st & reg::STATUS_ERROR == 0,
        format!("STATUS {st:#x}"),
    );
    let done = eng.cmds_done().map_err(e)?.wrapping_sub(done0);
    let want_done = u64::from(args.rounds) * 6 + u64::from(args.pings);
    t.check(
        "cmds-done",
        u64::from(done) == want_done,
        format!("{done} want {want_done}"),
    );
    println!("CLIENT-FENCES {}", t.fences);
    println!("CLIENT-IRQS {}", t.irqs);
    t.check(
        "one-msi-per-fence",
        t.irqs == t.fences,
        format!("{} interrupt(s) for {} fence(s)", t.irqs, t.fences),
    );
    if !args.leave_programmed {
        eng.disable().map_err(e)?;
    }
    Ok(t.ok)
}
