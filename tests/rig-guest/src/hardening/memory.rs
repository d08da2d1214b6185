//! Hardening tests (see mod.rs): the engine, VRAM and display findings of the review.
//!
//! * finding 3, tenant state surviving close/open: `scrub_on_close`;
//! * finding 4, chunks that run for milliseconds: `chunk_cost`;
//! * finding 5, a bad TAIL racing the command in flight: `tail_race`;
//! * finding 8, host memory: `host_accounting`, `memcg_charge`, `free_resched`.
//!
//! Timing-dependent checks read the kernel's own clocks and counters (latency_hist,
//! busy_ns, slices, context switches), never the test's sleeps.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vgpu_sysfs::handle::Parent;
use vgpu_sysfs::LatencyHist;
use vgpu_vfio::abi::engine as reg;
use vgpu_vfio::abi::{self, dispi, drm, info};
use vgpu_vfio::{region, Cmd, EngineRegs, ErrorCode, OpenInstance};

use crate::harness::{Context, Ctx, Fail, FailContext, Test, TestResult};
use crate::util::*;
use crate::workload::*;
use crate::{ensure, ensure_eq};

const T128: &str = "vgpu_shim-128M";
const PAGE: u64 = 4096;

/// This file's tests.
pub fn tests() -> Vec<Test> {
    let t = |name, params, run| Test { name, params, run };
    vec![
        t("scrub_on_close", Some(""), scrub_on_close),
        t("host_accounting", Some(""), host_accounting),
        t("memcg_charge", Some(""), memcg_charge),
        t("free_resched", Some(""), free_resched),
        t("chunk_cost", Some(""), chunk_cost),
        t("tail_race", Some(""), tail_race),
    ]
}

// ---- helpers ------------------------------------------------------------------------

/// The parent's `vgpu/display_pages`.
fn display_pages(p: &Parent) -> vgpu_sysfs::Result<u64> {
    vgpu_sysfs::io::read_u64(&p.vgpu_attr("display_pages"))
}

/// Offset of the first non-zero byte of `v`.
fn first_nonzero(v: &[u8]) -> Option<usize> {
    v.iter().position(|&b| b != 0)
}

/// Every byte of `[off, off + len)` of region `index` reads zero through pread.
fn pread_zero(dev: &vgpu_vfio::Device, index: u32, off: u64, len: u64, what: &str) -> TestResult {
    let mut buf = vec![0u8; MIB as usize];
    let mut o = off;
    while o < off + len {
        let n = (off + len - o).min(MIB) as usize;
        dev.read_region(index, o, &mut buf[..n])
            .ctx(format!("{what}: pread at {o:#x}"))?;
        if let Some(i) = first_nonzero(&buf[..n]) {
            return Err(Fail(format!(
                "{what}: byte {:#x} reads {:#04x}, want 0",
                o + i as u64,
                buf[i]
            )));
        }
        o += n as u64;
    }
    Ok(())
}

/// Every word of `[off, off + len)` of the VRAM mapping reads zero.
fn mmap_zero(g: &Gpu, off: u64, len: u64, what: &str) -> TestResult {
    if let Some(m) = g.vram().verify_u64(off, len, |_| 0).ctx(what)? {
        return Err(Fail(format!(
            "{what}: {} non-zero words, first at {:#x} = {:#x}",
            m.count, m.offset, m.found
        )));
    }
    Ok(())
}

/// VRAM_USED_KB in the info block (BAR2) and vgpu/vram_used_kb agree and are `want`.
fn used_kb(g: &Gpu, want: u64, what: &str) -> TestResult {
    ensure_attr(
        g.inst.vram_used_kb(),
        want,
        &format!("{what}: vram_used_kb"),
    )?;
    let r = g.dev().read_u32(region::BAR2, info::VRAM_USED_KB)?;
    ensure_eq!(u64::from(r), want, "{what}: VRAM_USED_KB register");
    Ok(())
}

// ---- finding 3: nothing of a tenant survives close/open -------------------------------

/// libvirt, OpenStack and KubeVirt hand a persistent mdev from one VM to the next. After
/// the last close the next user must find the device as if new: VRAM (through mmap and
/// pread), the display region, the DISPI mode, config space and the engine registers all
/// read as after creation, and no VRAM page is held while the device is closed.
fn scrub_on_close(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, T128)?;
    let size = 128 * MIB;
    let disp = abi::DISPLAY_REGION_MAX;
    let seed = 0x5C2B;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if !cmdline.split_whitespace().any(|a| a == "init_on_alloc=0") {
        ctx.note("booted without init_on_alloc=0: the kernel zeroes new pages itself");
    }
    {
        let mut g = Gpu::open(&inst)?;
        // Tenant 1: VRAM through the mapping and through pwrite.
        g.vram()
            .fill_u64(0, 8 * MIB, |o| pattern(seed, o))
            .ctx("fill VRAM")?;
        g.dev()
            .write_region(
                region::BAR0,
                96 * MIB,
                &pattern_bytes(seed, 96 * MIB, MIB as usize),
            )
            .ctx("pwrite VRAM")?;
        // A frame in the display region.
        let mode = Mode {
            xres: 1024,
            yres: 768,
            bpp: 32,
            virt_width: 0,
            x_off: 0,
            y_off: 0,
        };
        set_mode(g.dev(), &mode)?;
        let pl = g.dev().query_gfx_plane(drm::PLANE_TYPE_PRIMARY)?;
        ensure_eq!(u64::from(pl.size), mode.size(), "tenant 1's plane size");
        let shown = pread_all(g.dev(), abi::DISPLAY_REGION_INDEX, 0, 4096)?;
        ensure!(
            first_nonzero(&shown).is_some(),
            "tenant 1's frame is not in the display region"
        );
        // Engine state: a ring, fences, IRQ mask, a first touch by the engine.
        g.eng.setup(16 * MIB, 4096)?;
        g.eng.set_irq_mask(reg::IRQ_ALL)?;
        g.run(&[Cmd::Fill {
            dst: 20 * MIB,
            len: 64 * KIB,
            value: 0x5a5a_5a5a,
        }])?;
        // Config space: command, BAR0 address, interrupt line, MSI.
        let dev = g.dev();
        dev.config_write_u16(0x04, 0x0007)?;
        dev.config_write_u32(0x10, 0xe000_0000)?;
        dev.config_write_u32(0x14, 0x1)?;
        dev.config_write_u8(0x3c, 11)?;
        dev.config_write_u32(0x44, 0xfee0_0000)?;
        dev.config_write_u16(0x4c, 0x4041)?;
        let ctl = dev.config_read_u16(0x42)?;
        dev.config_write_u16(0x42, ctl | 1)?;
        ctx.note(format!(
            "tenant 1 left {} KiB of VRAM and a {}x{} frame",
            inst.vram_used_kb()?,
            pl.width,
            pl.height
        ));
    } // last close: unmap and close the fd
    ctx.soft(ensure_attr(
        inst.vram_used_kb(),
        0,
        "vram_used_kb of the closed device",
    ));
    ctx.soft(ensure_attr(
        p.vram_pages(),
        0,
        "parent vram_pages with the device closed",
    ));
    ctx.soft(ensure_attr(
        display_pages(&p),
        0,
        "parent display_pages with the device closed",
    ));

    // Tenant 2.
    let g = Gpu::open(&inst)?;
    let regs = g.eng.regs()?;
    ctx.soft(if regs == EngineRegs::default() {
        Ok(())
    } else {
        Err(Fail(format!("engine registers after reopen: {regs:?}")))
    });
    for idx in 1..=dispi::Y_OFFSET {
        ctx.soft(dispi_read(g.dev(), idx).and_then(|v| {
            if v == 0 {
                Ok(())
            } else {
                Err(Fail(format!("DISPI[{idx}] = {v:#x} after reopen, want 0")))
            }
        }));
    }
    let pl = g.dev().query_gfx_plane(drm::PLANE_TYPE_PRIMARY)?;
    ctx.soft(if pl.drm_format == 0 && pl.size == 0 {
        Ok(())
    } else {
        Err(Fail(format!("a plane after reopen: {pl:?}")))
    });
    let dev = g.dev();
    for (off, want, what) in [
        (0x04u64, 0u32, "command"),
        (0x10, 0xc, "BAR0 (64-bit prefetchable, no address)"),
        (0x14, 0, "BAR1 (BAR0 high)"),
        (0x44, 0, "MSI address"),
    ] {
        let v = dev.config_read_u32(off)?;
        let v = if off == 0x04 { v & 0xffff } else { v };
        ctx.soft(if v == want {
            Ok(())
        } else {
            Err(Fail(format!(
                "config {what} at {off:#x} = {v:#x} after reopen, want {want:#x}"
            )))
        });
    }
    ctx.soft(ensure_eq_soft(
        dev.config_read_u8(0x3c)?.into(),
        0,
        "interrupt line after reopen",
    ));
    ctx.soft(ensure_eq_soft(
        dev.config_read_u16(0x4c)?.into(),
        0,
        "MSI data after reopen",
    ));
    ctx.soft(ensure_eq_soft(
        (dev.config_read_u16(0x42)? & 1).into(),
        0,
        "MSI enable after reopen",
    ));
    ctx.soft(used_kb(&g, 0, "after reopen"));
    // Every byte: the display region, then VRAM, half first through pread and half
    // first through the mapping (each path allocates the pages it touches first), then
    // each half through the other path.
    ctx.soft(pread_zero(
        g.dev(),
        abi::DISPLAY_REGION_INDEX,
        0,
        disp,
        "display region after reopen",
    ));
    let half = size / 2;
    ctx.soft(pread_zero(g.dev(), region::BAR0, 0, half, "VRAM (pread)"));
    ctx.soft(mmap_zero(&g, half, half, "VRAM (mmap)"));
    ctx.soft(mmap_zero(&g, 0, half, "VRAM (mmap, after pread)"));
    ctx.soft(pread_zero(
        g.dev(),
        region::BAR0,
        half,
        half,
        "VRAM (pread, after mmap)",
    ));
    ctx.soft(used_kb(&g, size / KIB, "after reading all of VRAM"));
    drop(g);
    ctx.soft(ensure_attr(
        inst.vram_used_kb(),
        0,
        "vram_used_kb after the second close",
    ));
    ctx.remove(&inst)?;
    ensure_attr(p.vram_pages(), 0, "vram_pages after remove")?;
    Ok(())
}

fn ensure_eq_soft(got: u64, want: u64, what: &str) -> TestResult {
    ensure_eq!(got, want, "{what}");
    Ok(())
}

// ---- finding 8: host memory ---------------------------------------------------------

/// The parent's page counters, vram_used_kb (sysfs and register) and the pool follow
/// every way a page is allocated (fault, pwrite, engine, display query) and freed (last
/// close, remove), exactly; the display region is bounded by min(quota, 16 MiB).
fn host_accounting(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let a = ctx.create(&p, T128)?;
    let b = ctx.create(&p, "vgpu_shim-256M")?;
    check_pool(&p, "after create")?;
    ensure_attr(p.vram_pages(), 0, "vram_pages after create")?;
    ctx.soft(ensure_attr(
        display_pages(&p),
        0,
        "display_pages after create",
    ));
    let mut ga = Gpu::open(&a)?;
    // A: 1 MiB through the mapping, 64 KiB through pwrite, a ring page and 256 KiB by
    // the engine, and a 640x480x32 frame (300 pages) in the display region.
    ga.vram().fill_u64(0, MIB, |o| pattern(1, o))?;
    ga.dev()
        .write_region(region::BAR0, 8 * MIB, &[0xa5; 64 * 1024])?;
    ga.eng.setup(16 * MIB, 4096)?;
    ga.run(&[Cmd::Fill {
        dst: 20 * MIB,
        len: 256 * KIB,
        value: 7,
    }])?;
    let mode = Mode {
        xres: 640,
        yres: 480,
        bpp: 32,
        virt_width: 0,
        x_off: 0,
        y_off: 0,
    };
    set_mode(ga.dev(), &mode)?;
    ga.dev().query_gfx_plane(drm::PLANE_TYPE_PRIMARY)?;
    let a_pages = 256 + 16 + 1 + 64;
    used_kb(&ga, a_pages * 4, "A")?;
    ensure_attr(p.vram_pages(), a_pages, "vram_pages with A's pages")?;
    ctx.soft(ensure_attr(
        display_pages(&p),
        300,
        "display_pages after A's query",
    ));
    // B: 2 MiB, and the biggest frame the display region holds (2048x2048x32 = 16 MiB).
    let gb = Gpu::open(&b)?;
    gb.vram().fill_u64(0, 2 * MIB, |o| pattern(2, o))?;
    used_kb(&gb, 2048, "B")?;
    let big = Mode {
        xres: 2048,
        yres: 2048,
        bpp: 32,
        ..mode
    };
    set_mode(gb.dev(), &big)?;
    let pl = gb.dev().query_gfx_plane(drm::PLANE_TYPE_PRIMARY)?;
    ensure_eq!(u64::from(pl.size), 16 * MIB, "B's 16 MiB plane");
    ctx.soft(ensure_attr(
        display_pages(&p),
        300 + 4096,
        "display_pages after B's query",
    ));
    // A bigger mode has no plane and allocates nothing more.
    let bigger = Mode { yres: 2049, ..big };
    set_mode(gb.dev(), &bigger)?;
    let pl = gb.dev().query_gfx_plane(drm::PLANE_TYPE_PRIMARY)?;
    ensure_eq!(pl.size, 0, "plane of a mode over 16 MiB");
    ctx.soft(ensure_attr(
        display_pages(&p),
        300 + 4096,
        "display_pages after a mode too big",
    ));
    used_kb(
        &gb,
        2048,
        "B after its queries (the scanout read untouched VRAM)",
    )?;
    ensure_attr(p.vram_pages(), a_pages + 512, "vram_pages with A and B")?;
    // Closing A frees A's pages, and only those; the quota stays reserved.
    drop(ga);
    ensure_attr(a.vram_used_kb(), 0, "A vram_used_kb after close")?;
    ensure_attr(p.vram_pages(), 512, "vram_pages after closing A")?;
    ctx.soft(ensure_attr(
        display_pages(&p),
        4096,
        "display_pages after closing A",
    ));
    used_kb(&gb, 2048, "B after A's close")?;
    check_pool(&p, "after closing A")?;
    // Reopened, A starts from nothing.
    let ga = Gpu::open(&a)?;
    ga.vram().write_u64(5 * PAGE, 1)?;
    used_kb(&ga, 4, "A reopened, one page touched")?;
    drop(ga);
    drop(gb);
    ensure_attr(p.vram_pages(), 0, "vram_pages with both closed")?;
    ctx.soft(ensure_attr(
        display_pages(&p),
        0,
        "display_pages with both closed",
    ));
    ctx.remove(&b)?;
    ctx.remove(&a)?;
    ensure_eq!(check_pool(&p, "after remove")?, 1024, "pool_free_mb");
    ensure_attr(p.vram_pages(), 0, "vram_pages after remove")?;
    Ok(())
}

/// A cgroup v2 group with the memory controller, removed on drop (after moving the test
/// process back to the root).
struct MemCgroup {
    root: PathBuf,
    dir: PathBuf,
}

impl MemCgroup {
    /// Mount cgroup2 if needed and make a group; None if the kernel has no memory
    /// controller.
    fn new(name: &str) -> Result<Option<MemCgroup>, Fail> {
        let root = PathBuf::from("/sys/fs/cgroup");
        if !root.join("cgroup.controllers").exists() {
            let (src, dst, fs) = (c"cgroup2", c"/sys/fs/cgroup", c"cgroup2");
            // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
            let r = unsafe {
                libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null())
            };
            if r != 0 {
                return Err(Fail(format!(
                    "mount cgroup2: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
        let ctrl = std::fs::read_to_string(root.join("cgroup.controllers")).ctx("controllers")?;
        if !ctrl.split_whitespace().any(|c| c == "memory") {
            return Ok(None);
        }
        std::fs::write(root.join("cgroup.subtree_control"), "+memory")
            .ctx("enable the memory controller")?;
        let dir = root.join(name);
        if !dir.exists() {
            std::fs::create_dir(&dir).ctx("mkdir cgroup")?;
        }
        Ok(Some(MemCgroup { root, dir }))
    }

    /// Move this process (all its threads) into the group.
    fn enter(&self) -> TestResult {
        std::fs::write(self.dir.join("cgroup.procs"), "0").ctx("enter cgroup")
    }

    fn current(&self) -> Result<u64, Fail> {
        Ok(vgpu_sysfs::io::read_u64(&self.dir.join("memory.current"))?)
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.root.join("cgroup.procs"), "0");
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// VRAM and display pages are charged to the tenant's memory cgroup: pages the tenant
/// touches (fault, pwrite, display query) to the cgroup of the process that touches
/// them, pages the engine touches first to the cgroup of the process that opened the
/// device; all of it is uncharged at the last close.
fn memcg_charge(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-256M")?;
    let Some(cg) = MemCgroup::new("vgpu-memcg")? else {
        ctx.note("no cgroup v2 memory controller: nothing to check");
        return Ok(());
    };
    cg.enter()?;
    let slack = MIB; // page tables, the test's own heap
    let c0 = cg.current()?;
    let mut g = Gpu::open(&inst)?;
    let mut steps = Vec::new();
    let mut last = cg.current()?;
    let mut step = |what: &str, want: u64, steps: &mut Vec<String>| -> TestResult {
        let now = cg.current()?;
        let grew = now.saturating_sub(last);
        steps.push(format!("{what} +{} KiB", grew / KIB));
        last = now;
        ensure!(
            grew + slack >= want,
            "memory.current grew by {} KiB when {what}, want at least {} KiB",
            grew / KIB,
            (want - slack) / KIB
        );
        Ok(())
    };
    g.vram().fill_u64(0, 16 * MIB, |o| pattern(3, o))?;
    step("16 MiB touched through the mapping", 16 * MIB, &mut steps)?;
    g.dev()
        .write_region(region::BAR0, 32 * MIB, &vec![0x3c; 4 * MIB as usize])?;
    step("4 MiB written with pwrite", 4 * MIB, &mut steps)?;
    g.eng.setup(40 * MIB, 4096)?;
    g.run(&[Cmd::Fill {
        dst: 64 * MIB,
        len: 16 * MIB,
        value: 9,
    }])?;
    step("16 MiB filled by the engine", 16 * MIB, &mut steps)?;
    set_mode(
        g.dev(),
        &Mode {
            xres: 2048,
            yres: 2048,
            bpp: 32,
            virt_width: 0,
            x_off: 0,
            y_off: 0,
        },
    )?;
    g.dev().query_gfx_plane(drm::PLANE_TYPE_PRIMARY)?;
    step("a 16 MiB frame queried", 16 * MIB, &mut steps)?;
    let before_close = cg.current()?;
    drop(g);
    let after = cg.current()?;
    let freed = before_close.saturating_sub(after);
    steps.push(format!("close -{} KiB", freed / KIB));
    ctx.note(format!(
        "memory.current {} KiB at the start; {}",
        c0 / KIB,
        steps.join(", ")
    ));
    ensure!(
        freed + slack >= 52 * MIB,
        "the last close uncharged {} KiB, want at least {} KiB",
        freed / KIB,
        (52 * MIB - slack) / KIB
    );
    drop(cg);
    ctx.remove(&inst)
}

/// `nonvoluntary_ctxt_switches` of the calling thread.
fn nonvoluntary_switches() -> Result<u64, Fail> {
    let s = std::fs::read_to_string("/proc/thread-self/status").ctx("status")?;
    s.lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Fail("no nonvoluntary_ctxt_switches".into()))
}

/// A thread's time on a CPU and time waiting for one (ns).
type CpuTimes = (u64, u64);

/// The calling thread's [`CpuTimes`], from /proc/thread-self/schedstat
/// (CONFIG_SCHED_INFO); None without it.
fn cpu_times() -> Option<CpuTimes> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()??, f.next()??))
}

fn pin_to_cpu(cpu: usize) -> TestResult {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
            return Err(Fail(format!(
                "sched_setaffinity: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

fn unpin() {
    // SAFETY: as in pin_to_cpu.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

/// Freeing a big instance's pages lets other tasks run: the thread that closes a device
/// holding hundreds of MiB shares its CPU with a busy thread pinned next to it, so a
/// free that never reschedules shows as zero involuntary switches over a long close.
/// (The kernel is built with voluntary preemption: only explicit resched points let
/// the busy thread in.)
fn free_resched(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-1G")?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ctx("meminfo")?;
    let avail_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Fail("no MemAvailable".into()))?;
    let touch = (avail_kb * KIB / 2).min(768 * MIB) / MIB * MIB;
    // Through pwrite, not a mapping: the close then frees pages and nothing else (an
    // munmap would tear down page tables, with resched points of its own).
    let dev = inst.open().ctx("open")?;
    let buf = vec![0x6b; MIB as usize];
    for o in (0..touch).step_by(MIB as usize) {
        dev.write_region(region::BAR0, o, &buf)
            .ctx(format!("pwrite at {o:#x}"))?;
    }
    ensure_attr(
        inst.vram_used_kb(),
        touch / KIB,
        "vram_used_kb after pwrite",
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    // The busy thread, and the longest it went without the CPU (its own clock).
    let hog = std::thread::spawn(move || -> Result<Duration, Fail> {
        pin_to_cpu(0)?;
        let (mut last, mut gap) = (Instant::now(), Duration::ZERO);
        while !s2.load(Ordering::Relaxed) {
            let now = Instant::now();
            gap = gap.max(now - last);
            last = now;
        }
        Ok(gap)
    });
    let r = (|| -> Result<(u64, Duration, Option<CpuTimes>), Fail> {
        pin_to_cpu(0)?;
        std::thread::sleep(Duration::from_millis(50));
        let (n0, c0) = (nonvoluntary_switches()?, cpu_times());
        let t = Instant::now();
        drop(dev);
        let d = t.elapsed();
        let (n1, c1) = (nonvoluntary_switches()?, cpu_times());
        let cpu = c0.zip(c1).map(|(a, b)| (b.0 - a.0, b.1 - a.1));
        Ok((n1 - n0, d, cpu))
    })();
    unpin();
    stop.store(true, Ordering::Relaxed);
    let gap = hog
        .join()
        .map_err(|_| Fail("hog panicked".into()))?
        .fctx("hog")?;
    let (switches, took, cpu) = r?;
    let (ran, waited) = cpu.map_or((took, Duration::ZERO), |(r, w)| {
        (Duration::from_nanos(r), Duration::from_nanos(w))
    });
    ctx.note(format!(
        "closing a device with {} MiB of VRAM took {took:?}, {ran:?} of it on the CPU it \
         shares with a busy thread, {waited:?} waiting for it: {switches} involuntary \
         switches (the busy thread waited at most {gap:?})",
        touch / MIB
    ));
    ensure_attr(inst.vram_used_kb(), 0, "vram_used_kb after close")?;
    // The busy thread is owed the CPU every few ms of the closer's run time (a CFS or
    // EEVDF slice, checked at each tick); without resched points the closer is switched
    // out once, on its way back to user space.
    if ran >= Duration::from_millis(40) {
        ensure!(
            switches >= 3,
            "a close that ran {ran:?} on a CPU shared with a busy thread was never \
             preempted ({switches} involuntary switches): the free does not reschedule"
        );
    } else {
        ctx.note("the close ran too briefly to judge rescheduling");
    }
    ctx.remove(&inst)
}

// ---- finding 4: the cost of a chunk -------------------------------------------------

/// Ring of the attacker in `chunk_cost` (after its scanout and sources).
const ATT_RING: u64 = 48 * MIB;
const ATT_RING_SIZE: u64 = 16 * KIB;

/// An attack on chunk budgets: the attacker's mode (if any) and the commands it keeps
/// its ring full of.
struct Attack {
    name: &'static str,
    mode: Option<Mode>,
    group: Vec<Cmd>,
}

/// The attacks, the control (a GEMM, whose chunks the budgets were made for) first.
fn attacks() -> Vec<Attack> {
    // 2048x4096 at 16 bpp: 4 KiB rows, exactly 16 MiB at VRAM 0.
    let screen = Mode {
        xres: 2048,
        yres: 4096,
        bpp: 16,
        virt_width: 0,
        x_off: 0,
        y_off: 0,
    };
    let src = 24 * MIB;
    // Wide rows grow the BLIT budget back (128 KiB, a few chunks) ...
    let wide = Cmd::Blit {
        src,
        src_stride: 4096,
        width: 2048,
        height: 32,
        dst_x: 0,
        dst_y: 0,
    };
    // ... then 1-pixel rows, a new page per row, 16384 rows of 2 bytes.
    let narrow = |x: u64| Cmd::Blit {
        src,
        src_stride: 2,
        width: 1,
        height: 4096,
        dst_x: x,
        dst_y: 0,
    };
    let mut blit = vec![wide];
    blit.extend((0..4).map(narrow));
    let tiny_fills = (0..64)
        .map(|i| Cmd::Fill {
            dst: 32 * MIB + 4096 * i,
            len: 4,
            value: i as u32,
        })
        .collect();
    let gemm = |m, n, k, c| Cmd::Gemm {
        a: 32 * MIB,
        b: 33 * MIB,
        c,
        m,
        n,
        k,
    };
    vec![
        Attack {
            name: "control: GEMM 64^3",
            mode: None,
            group: vec![Gemm::square(32 * MIB, 64).cmd(); 4],
        },
        Attack {
            name: "BLIT: wide rows, then 1-pixel rows",
            mode: Some(screen),
            group: blit,
        },
        Attack {
            name: "FILL of 4 bytes",
            mode: None,
            group: tiny_fills,
        },
        Attack {
            name: "GEMM 65536x1x1",
            mode: None,
            group: vec![gemm(65536, 1, 1, 34 * MIB); 2],
        },
        Attack {
            name: "GEMM 1024x64x1, C over A",
            mode: None,
            group: vec![gemm(1024, 64, 1, 32 * MIB); 2],
        },
    ]
}

/// What one phase measured.
struct Phase {
    name: &'static str,
    /// Victim latency quantiles, in slices.
    p50: f64,
    p99: f64,
    max: f64,
}

/// The victim's latency quantile `q` in slices (infinite in the unprinted tail).
fn in_slices(h: &LatencyHist, q: f64, slice_ns: f64) -> f64 {
    h.quantile_ns(q)
        .filter(|&v| v != u64::MAX)
        .map_or(f64::INFINITY, |v| v as f64 / slice_ns)
}

/// Run `atk` on a new instance of `p` while `victim` measures its latency.
fn attack_phase(
    ctx: &mut Ctx,
    p: &Parent,
    victim: &mut Gpu,
    atk: Attack,
    slice_ns: f64,
) -> Result<Phase, Fail> {
    let inst = ctx.create(p, T128)?;
    let mut a = Gpu::open_ring(&inst, ATT_RING, ATT_RING_SIZE)?;
    a.vram()
        .fill_u64(24 * MIB, 4 * MIB, |o| pattern(4, o))
        .ctx("attacker sources")?;
    if let Some(m) = &atk.mode {
        set_mode(a.dev(), m)?;
    }
    // Once alone: every page the group writes is allocated.
    a.run(&atk.group)
        .fctx(format!("{}: a first run", atk.name))?;
    let (busy0, sl0) = (inst.busy_ns()?, inst.slices()?);
    let sat = Saturator::start_group(a, atk.group, Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(200));
    let h = victim_latency(victim, 300, Duration::from_millis(3), MIB, 2 * MIB);
    let (busy, sl) = (inst.busy_ns()? - busy0, inst.slices()? - sl0);
    let died = sat.finished();
    let (mut a, _) = sat.stop().fctx(format!("{}: attacker", atk.name))?;
    let h = h.fctx(format!("{}: victim", atk.name))?;
    ensure!(!died, "{}: the attacker stopped early", atk.name);
    let ph = Phase {
        name: atk.name,
        p50: in_slices(&h, 0.5, slice_ns),
        p99: in_slices(&h, 0.99, slice_ns),
        max: in_slices(&h, 1.0, slice_ns),
    };
    ctx.note(format!(
        "{}: victim p50 {:.2} p99 {:.2} max {:.2} slices; the attacker's slices \
         last {:.2} slices on average ({sl} slices)",
        atk.name,
        ph.p50,
        ph.p99,
        ph.max,
        busy as f64 / sl.max(1) as f64 / slice_ns
    ));
    a.eng.reset()?;
    drop(a);
    ctx.remove(&inst)?;
    Ok(ph)
}

/// An instance saturating the engine with commands whose cost per unit of budget
/// differs from the commands that set the budget (1-pixel BLIT rows after wide ones,
/// 4-byte FILLs, GEMMs with n = k = 1) must not hold the engine longer than a GEMM
/// does: a neighbour's p99 latency (from its latency_hist) stays within 2 slices.
///
/// The latencies are the guest's clock, which also runs while the host preempts the
/// guest's vCPUs; on a loaded host that alone can push a p99 past 2 slices. So the
/// control (a GEMM saturator) runs first and last: when both show a p99 within 1.75
/// slices and no sample over 2 the host was quiet, and every attack must keep its p99
/// within 2 slices (so under `rig.sh --icount`, where the guest clock counts
/// instructions); otherwise the medians are compared instead, which host preemption
/// barely moves and chunks of milliseconds move by several slices.
fn chunk_cost(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    // Short slices: a chunk of a millisecond or two is then several slices.
    p.set_slice_us("250")?;
    let slice_us = p.slice_us()?;
    let slice_ns = slice_us as f64 * 1e3;
    let victim_inst = ctx.create(&p, T128)?;
    let mut victim = Gpu::open_ring(&victim_inst, 0, 4096)?;
    let mut atks = attacks();
    let control = atks.remove(0);
    let control_again = Attack {
        name: "control again",
        mode: None,
        group: control.group.clone(),
    };
    let c1 = attack_phase(ctx, &p, &mut victim, control, slice_ns)?;
    let mut phases = Vec::new();
    for atk in atks {
        phases.push(attack_phase(ctx, &p, &mut victim, atk, slice_ns)?);
    }
    let c2 = attack_phase(ctx, &p, &mut victim, control_again, slice_ns)?;
    let quiet = [&c1, &c2].iter().all(|c| c.p99 <= 1.75 && c.max <= 2.0);
    let c50 = c1.p50.max(c2.p50);
    let bad: Vec<String> = if quiet {
        phases
            .iter()
            .filter(|ph| ph.p99 > 2.0)
            .map(|ph| format!("{}: p99 {:.2} slices", ph.name, ph.p99))
            .collect()
    } else {
        ctx.note(format!(
            "the host is too busy to judge p99 (control p99 {:.2} and {:.2}, max {:.2} \
             and {:.2} slices): comparing medians with the control's ({c50:.2} slices)",
            c1.p99, c2.p99, c1.max, c2.max
        ));
        phases
            .iter()
            .filter(|ph| ph.p50 > c50 + 1.0)
            .map(|ph| format!("{}: p50 {:.2} slices", ph.name, ph.p50))
            .collect()
    };
    ensure!(
        bad.is_empty(),
        "victim latency (slices of {slice_us} us) {}: {}",
        if quiet {
            "over 2 slices"
        } else {
            "over the control's median + 1 slice"
        },
        bad.join("; ")
    );
    Ok(())
}

// ---- finding 5: a bad TAIL against the command in flight ----------------------------

/// Registers that must not move once the ring stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frozen {
    head: u32,
    error_head: u32,
    error: u32,
    cmds_done: u32,
    fence: u64,
    irq_status: u32,
}

fn frozen(g: &Gpu) -> Result<Frozen, Fail> {
    Ok(Frozen {
        head: g.eng.read_reg(reg::RING_HEAD)?,
        error_head: g.eng.error_head()?,
        error: g.eng.error()?,
        cmds_done: g.eng.cmds_done()?,
        fence: g.eng.fence_value()?,
        irq_status: g.eng.irq_status()?,
    })
}

/// A bad TAIL stops the ring with BAD_RING while the engine runs a loop of FENCE (with
/// IRQ) and JUMP: the command in flight must not complete after the error. Checked after
/// the error and again once the engine let go of the instance (a DISPI read takes the
/// instance lock, which the engine holds for a whole chunk): HEAD = ERROR_HEAD, and
/// HEAD, CMDS_DONE, FENCE and IRQ_STATUS did not move. With a JUMP in flight
/// (ERROR_HEAD = 128), a JUMP completed after the error would set HEAD to 0.
fn tail_race(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, T128)?;
    let mut g = Gpu::open_ring(&inst, 0, 4096)?;
    g.msi(reg::IRQ_FENCE | reg::IRQ_ERROR)?;
    p.set_watchdog_ms("60000")?;
    let (trials, limit) = (400u32, Duration::from_secs(60));
    let (mut by_head, mut bad) = ([0u32; 3], Vec::new());
    let start = Instant::now();
    let mut n = 0;
    while n < trials && start.elapsed() < limit {
        n += 1;
        g.eng.recover()?;
        let seq = u64::from(n) + 1000;
        g.eng.write_at(
            0,
            &Cmd::Fence {
                seqno: seq,
                addr: 0,
                irq: true,
                write: false,
            },
        )?;
        g.eng.write_at(64, &Cmd::Jump { target: 0 })?;
        g.eng.set_sw_tail(128);
        let c0 = g.eng.cmds_done()?;
        g.eng.kick()?;
        // Let the loop run a while (every register read contends for the engine's lock).
        let warm = 20 + n % 64;
        while g.eng.cmds_done()?.wrapping_sub(c0) < warm {
            g.eng
                .check()
                .ctx(format!("trial {n}: before the bad TAIL"))?;
        }
        g.eng.write_reg(reg::RING_TAIL, 4)?; // unaligned: BAD_RING
        let s1 = frozen(&g)?;
        dispi_read(g.dev(), dispi::ID)?; // waits for the chunk in progress
        let s2 = frozen(&g)?;
        let what = format!("trial {n}: after the error {s1:?}, after the chunk {s2:?}");
        if s1.error != ErrorCode::BadRing as u32 {
            bad.push(format!("{what}: ERROR is not BAD_RING"));
        } else if s1 != s2 {
            bad.push(format!("{what}: registers moved"));
        } else if s2.head != s2.error_head {
            bad.push(format!("{what}: HEAD moved off ERROR_HEAD"));
        }
        if let Some(c) = by_head.get_mut((s1.error_head / 64) as usize) {
            *c += 1;
        }
        if bad.len() >= 3 {
            break;
        }
    }
    drain_irqs(&g);
    ctx.note(format!(
        "{n} trials: ERROR_HEAD 0 (between commands) {}, 64 (FENCE in flight or done) {}, \
         128 (JUMP in flight) {}",
        by_head[0], by_head[1], by_head[2]
    ));
    ensure!(bad.is_empty(), "{}", bad.join("; "));
    ensure!(
        by_head[2] > 0,
        "no trial stopped the ring with a JUMP in flight: the race was not exercised \
         (run with --smp 2)"
    );
    Ok(())
}

fn drain_irqs(g: &Gpu) {
    while g.irq_fired() {}
}
