//! Engine commands one by one: registers, NOP/FENCE, FILL, COPY, CHECKSUM, GEMM, BLIT,
//! JUMP and wrap, and VRAM the engine touches first.

use super::*;

// ---- registers ----------------------------------------------------------------------

pub(super) fn registers(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, T128)?;
    let mut g = Gpu::open(&inst)?;
    ensure_eq!(
        g.eng.regs()?,
        EngineRegs::default(),
        "engine registers of a new instance"
    );
    for (name, v) in [
        ("busy_ns", inst.busy_ns()),
        ("jobs", inst.jobs()),
        ("cmds_failed", inst.cmds_failed()),
        ("slices", inst.slices()),
        ("throttled_ns", inst.throttled_ns()),
        ("queue_depth", inst.queue_depth()),
    ] {
        ensure_eq!(v.ctx(name)?, 0, "new instance's {name}");
    }
    ensure_eq!(
        p.policy().ctx("policy")?,
        Policy::BestEffort,
        "default policy"
    );
    ensure_attr(p.slice_us(), 1000, "default slice_us")?;
    ensure_attr(p.watchdog_ms(), 2000, "default watchdog_ms")?;
    ensure_attr(p.engines(), 1, "default engines")?;
    ensure_attr(p.busy_ns(), 0, "parent busy_ns before any work")?;
    ensure_attr(p.switches(), 0, "parent switches before any work")?;
    p.idle_ns().ctx("parent idle_ns")?;

    // BASE/SIZE are plain registers until ENABLE.
    g.eng.configure(0x1_2345_6000, 0x4000)?;
    ensure_eq!(
        g.eng.read_reg(reg::RING_BASE_LO)?,
        0x2345_6000,
        "RING_BASE_LO"
    );
    ensure_eq!(g.eng.read_reg(reg::RING_BASE_HI)?, 1, "RING_BASE_HI");
    ensure_eq!(g.eng.read_reg(reg::RING_SIZE)?, 0x4000, "RING_SIZE");
    g.eng.configure(0x10000, 0x4000)?;
    g.eng.write_reg(reg::RING_TAIL, 0)?;
    g.eng.enable()?;
    let r = g.eng.regs()?;
    ensure_eq!(
        r.ctl & reg::CTL_ENABLE,
        reg::CTL_ENABLE,
        "RING_CTL after enable"
    );
    ensure_eq!(
        r.status & (reg::STATUS_ENABLED | reg::STATUS_BUSY | reg::STATUS_ERROR | reg::STATUS_HUNG),
        reg::STATUS_ENABLED,
        "STATUS after enable"
    );
    ensure_eq!((r.head, r.tail, r.error), (0, 0, 0), "HEAD, TAIL, ERROR");
    // Ignored while enabled.
    g.eng.write_reg(reg::RING_BASE_LO, 0x20000)?;
    g.eng.write_reg(reg::RING_BASE_HI, 7)?;
    g.eng.write_reg(reg::RING_SIZE, 0x8000)?;
    ensure_eq!(
        (
            g.eng.read_reg(reg::RING_BASE_LO)?,
            g.eng.read_reg(reg::RING_BASE_HI)?,
            g.eng.read_reg(reg::RING_SIZE)?
        ),
        (0x10000, 0, 0x4000),
        "BASE_LO/BASE_HI/SIZE after writes while enabled"
    );
    // Read-only registers ignore writes.
    for off in [
        reg::RING_HEAD,
        reg::STATUS,
        reg::ERROR,
        reg::ERROR_HEAD,
        reg::FENCE_LO,
        reg::FENCE_HI,
        reg::CMDS_DONE,
    ] {
        g.eng.write_reg(off, 0x40)?;
        ensure!(
            g.eng.read_reg(off)? != 0x40,
            "read-only register {off:#x} took a write"
        );
    }
    ok_status(&g, "after writes to read-only registers")?;
    // IRQ_MASK is read/write; IRQ_STATUS is write-1-to-clear (nothing set: stays 0).
    g.eng.set_irq_mask(reg::IRQ_ALL)?;
    ensure_eq!(g.eng.read_reg(reg::IRQ_MASK)?, reg::IRQ_ALL, "IRQ_MASK");
    g.eng.set_irq_mask(reg::IRQ_ERROR)?;
    ensure_eq!(g.eng.read_reg(reg::IRQ_MASK)?, reg::IRQ_ERROR, "IRQ_MASK");
    g.eng.ack_irq(reg::IRQ_ALL)?;
    ensure_eq!(g.eng.irq_status()?, 0, "IRQ_STATUS");
    // A ring at 0x10000 works.
    g.run(&[Cmd::Nop])?;
    ensure_eq!(g.eng.head()?, 128, "HEAD after NOP+FENCE");
    ensure_eq!(g.eng.tail_reg()?, 128, "TAIL after NOP+FENCE");
    // ENGINE_RESET: ring off, HEAD = TAIL = 0, STATUS/ERROR/IRQ_STATUS clear.
    g.eng.reset()?;
    let r = g.eng.regs()?;
    ensure_eq!(
        (r.ctl & 1, r.status, r.error, r.head, r.tail, r.irq_status),
        (0, 0, 0, 0, 0, 0),
        "(CTL.ENABLE, STATUS, ERROR, HEAD, TAIL, IRQ_STATUS) after ENGINE_RESET"
    );
    // BAR2 info block still mirrors weight/cap.
    inst.set_weight("7").ctx("weight")?;
    ensure_eq!(
        g.dev()
            .read_u32(vgpu_vfio::region::BAR2, abi::info::WEIGHT)?,
        7,
        "BAR2 WEIGHT"
    );
    Ok(())
}

// ---- commands -----------------------------------------------------------------------

pub(super) fn nop_fence(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    g.vram().write_u64(DATA, 0)?;
    g.vram().write_u64(DATA + 16, 0x1234_5678)?;
    let cmds = [
        Cmd::Nop,
        Cmd::Nop,
        Cmd::Nop,
        Cmd::Fence {
            seqno: 5,
            addr: DATA,
            irq: false,
            write: true,
        },
    ];
    g.eng.submit(&cmds)?;
    g.eng.wait_fence(5, FENCE_TIMEOUT)?;
    ensure_eq!(g.eng.fence_value()?, 5, "FENCE");
    ensure_eq!(g.vram().read_u64(DATA)?, 5, "FENCE WRITE at DATA");
    g.eng.wait_idle(FENCE_TIMEOUT)?;
    let r = g.eng.regs()?;
    ensure_eq!((r.head, r.tail), (256, 256), "HEAD/TAIL after 4 commands");
    ensure_eq!(r.cmds_done, 4, "CMDS_DONE");
    ensure_eq!(r.status & reg::STATUS_BUSY, 0, "STATUS.BUSY when idle");
    ensure_attr(g.inst.jobs(), 4, "jobs")?;
    ensure_attr(g.inst.queue_depth(), 0, "queue_depth when idle")?;
    // The slice is charged when the engine ends it, which may come just after STATUS
    // went idle; an engine asleep (idle_ns growing) has ended it.
    wait_engine_asleep(&p, FENCE_TIMEOUT)?;
    ensure!(g.inst.busy_ns()? > 0, "busy_ns still 0 after 4 commands");
    ensure!(g.inst.slices()? >= 1, "slices still 0 after 4 commands");
    // 64-bit seqno: the high half lands in FENCE_HI.
    let big = 0x1_0000_0002u64;
    g.eng.submit(&[Cmd::Fence {
        seqno: big,
        addr: DATA + 8,
        irq: false,
        write: true,
    }])?;
    g.eng.wait_fence(big, FENCE_TIMEOUT)?;
    ensure_eq!(
        (
            g.eng.read_reg(reg::FENCE_HI)?,
            g.eng.read_reg(reg::FENCE_LO)?
        ),
        (1, 2),
        "FENCE_HI/LO"
    );
    ensure_eq!(g.vram().read_u64(DATA + 8)?, big, "64-bit fence write");
    // A FENCE without WRITE writes nothing; a later smaller seqno is still reported
    // (FENCE is the last completed fence, not a maximum).
    g.eng.submit(&[Cmd::fence(3)])?;
    g.eng.wait_idle(FENCE_TIMEOUT)?;
    ensure_eq!(g.eng.fence_value()?, 3, "FENCE after a smaller seqno");
    ensure_eq!(
        g.vram().read_u64(DATA + 16)?,
        0x1234_5678,
        "VRAM near a no-WRITE fence"
    );
    ensure_eq!(g.vram().read_u64(DATA + 8)?, big, "earlier fence write");
    ensure_attr(g.inst.jobs(), 6, "jobs")?;
    ensure_eq!(g.eng.cmds_done()?, 6, "CMDS_DONE");
    ensure_attr(g.inst.cmds_failed(), 0, "cmds_failed")?;
    Ok(())
}

pub(super) fn fill(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    let vs = g.vram_size;
    let cases: [(u64, u64, u32); 5] = [
        (DATA, 4, 0xdead_beef),
        (DATA + 4096 - 12, 24, 0x0102_0304),
        (DATA + 64 * KIB + 4, 1000, 0),
        (DATA + 256 * KIB, 4 * MIB, 0xa5a5_5a5a),
        (vs - 4, 4, 0xffff_ffff),
    ];
    for (i, (dst, len, value)) in cases.into_iter().enumerate() {
        let lo = (dst - 64).max(RING_SIZE) & !7;
        let hi = (dst + len + 64).min(vs).next_multiple_of(8);
        check_span(
            &mut g,
            lo,
            hi,
            10 + i as u64,
            &[Cmd::Fill { dst, len, value }],
            |w| {
                let s = (dst - lo) as usize;
                for o in (0..len as usize).step_by(4) {
                    w[s + o..s + o + 4].copy_from_slice(&value.to_le_bytes());
                }
            },
            &format!("FILL dst {dst:#x} len {len:#x} value {value:#x}"),
        )?;
    }
    ok_status(&g, "after FILLs")
}

pub(super) fn copy(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    let vs = g.vram_size;
    let base = DATA;
    // (dst, src, len): disjoint, overlapping both ways, unaligned, large, at the end.
    let cases: [(u64, u64, u64); 7] = [
        (base + 8192, base, 4096),
        (base + 100, base, 1000),
        (base, base + 100, 1000),
        (base + 3, base + 1001, 13),
        (base + 7, base + 6, 4099),
        (base + 2 * MIB, base, 2 * MIB + 12),
        (vs - 1, vs - 4097, 1),
    ];
    for (i, (dst, src, len)) in cases.into_iter().enumerate() {
        let lo = (dst.min(src) - 64) & !7;
        let hi = (dst.max(src) + len + 64).min(vs).next_multiple_of(8);
        check_span(
            &mut g,
            lo,
            hi,
            20 + i as u64,
            &[Cmd::Copy { dst, src, len }],
            |w| {
                let _ = copy_in_place(w, (dst - lo) as usize, (src - lo) as usize, len as usize);
            },
            &format!("COPY dst {dst:#x} src {src:#x} len {len:#x}"),
        )?;
    }
    ok_status(&g, "after COPYs")
}

pub(super) fn checksum(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    let vs = g.vram_size;
    let mut rng = Rng::new(3);
    let data = rng.words((MIB / 4) as usize);
    g.write_words(DATA, &data)?;
    g.vram().fill_u64(vs - 4096, 4096, |o| pattern(4, o))?;
    let res = DATA + 2 * MIB;
    let cases: [(u64, u64); 6] = [
        (DATA, 4),
        (DATA, 8),
        (DATA + 12, 1000),
        (DATA + 4092, 8),
        (DATA, MIB),
        (vs - 4096, 4096),
    ];
    for (i, (src, len)) in cases.into_iter().enumerate() {
        let dst = res + 8 * i as u64;
        g.vram().write_u64(dst, 0)?;
        g.vram().write_u64(dst + 8, 0x5555)?;
        g.run(&[Cmd::Checksum { src, len, dst }])?;
        let bytes = g.read_bytes(src, len as usize)?;
        let want = fnv1a64_bytes(&bytes).ok_or_else(|| Fail("test bug: len".into()))?;
        ensure_eq!(
            g.vram().read_u64(dst)?,
            want,
            "CHECKSUM src {src:#x} len {len:#x}"
        );
        ensure_eq!(g.vram().read_u64(dst + 8)?, 0x5555, "word after the result");
    }
    // The result may land at the very end of VRAM.
    g.run(&[Cmd::Checksum {
        src: DATA,
        len: 64,
        dst: vs - 8,
    }])?;
    let want = fnv1a64_bytes(&g.read_bytes(DATA, 64)?).unwrap_or(0);
    ensure_eq!(
        g.vram().read_u64(vs - 8)?,
        want,
        "CHECKSUM into the last 8 bytes"
    );
    ok_status(&g, "after CHECKSUMs")
}

pub(super) fn gemm_test(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    let mut rng = Rng::new(5);
    let shapes: [(u64, u64, u64); 7] = [
        (1, 1, 1),
        (2, 3, 4),
        (7, 5, 3),
        (16, 16, 16),
        (33, 17, 9),
        (1, 300, 2),
        (64, 64, 64),
    ];
    for (m, n, k) in shapes {
        let a = rng.words((m * k) as usize);
        let b = rng.words((k * n) as usize);
        let (ao, bo) = (DATA, DATA + MIB);
        let co = DATA + 2 * MIB + 4; // 4-aligned, not 8
        g.write_words(ao, &a)?;
        g.write_words(bo, &b)?;
        g.write_words(co + m * n * 4, &[0xabcd_ef01])?;
        g.run(&[Cmd::Gemm {
            a: ao,
            b: bo,
            c: co,
            m,
            n,
            k,
        }])?;
        let want = gemm(&a, &b, m as usize, n as usize, k as usize)
            .ok_or_else(|| Fail("test bug: gemm".into()))?;
        let got = g.read_words(co, (m * n) as usize)?;
        if let Some(i) = got.iter().zip(&want).position(|(x, y)| x != y) {
            return Err(Fail(format!(
                "GEMM {m}x{n}x{k}: C[{}][{}] = {:#x}, want {:#x}",
                i / n as usize,
                i % n as usize,
                got[i],
                want[i]
            )));
        }
        ensure_eq!(
            g.read_words(co + m * n * 4, 1)?[0],
            0xabcd_ef01,
            "GEMM {m}x{n}x{k}: word after C"
        );
    }
    // C on top of A: elements are computed and stored in row-major order.
    gemm_c_is_a(&mut g, &mut rng, 12)?;
    ok_status(&g, "after GEMMs")
}

pub(super) fn blit(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, T128)?;
    // The scanout is at VRAM 0; the ring goes elsewhere.
    let mut g = Gpu::open_ring(&inst, 8 * MIB, RING_SIZE)?;
    let src = 4 * MIB;
    for (i, bpp) in [32u16, 16, 24].into_iter().enumerate() {
        let m = Mode {
            xres: 320,
            yres: 200,
            bpp,
            virt_width: 0,
            x_off: 0,
            y_off: 0,
        };
        let bpx = u64::from(bpp / 8);
        let stride = m.stride();
        let seed = 40 + i as u64;
        let screen = m.size().next_multiple_of(8);
        g.vram().fill_u64(0, screen, |o| pattern(seed, o))?;
        g.vram()
            .fill_u64(src, 256 * KIB, |o| pattern(seed + 100, o))?;
        set_mode(g.dev(), &m)?;
        let mut want = pattern_bytes(seed, 0, screen as usize);
        // (src_stride, width, height, dst_x, dst_y): inside, touching the far corner,
        // the whole screen.
        let rects = [
            (37 * bpx + 12, 37, 23, 11, 7),
            (10 * bpx, 10, 5, 310, 195),
            (320 * bpx, 320, 200, 0, 0),
            (1, 1, 1, 0, 199),
        ];
        for (ri, (sstride, w, h, x, y)) in rects.into_iter().enumerate() {
            let srcoff = src + 4 * ri as u64;
            g.run(&[Cmd::Blit {
                src: srcoff,
                src_stride: sstride,
                width: w,
                height: h,
                dst_x: x,
                dst_y: y,
            }])
            .fctx(format!("BLIT {bpp} bpp rect {ri}"))?;
            let sbytes = pattern_bytes(seed + 100, srcoff, (sstride * h + w * bpx) as usize);
            for r in 0..h {
                let d = ((y + r) * stride + x * bpx) as usize;
                let s = (r * sstride) as usize;
                want[d..d + (w * bpx) as usize].copy_from_slice(&sbytes[s..s + (w * bpx) as usize]);
            }
            let got = g.read_bytes(0, screen as usize)?;
            ensure_bytes(
                &got,
                &want,
                &format!("scanout after BLIT {bpp} bpp rect {ri} ({w}x{h} at {x},{y})"),
            )?;
        }
        // The display plane shows it.
        let pl = g.dev().query_gfx_plane(drm::PLANE_TYPE_PRIMARY)?;
        ensure_eq!(
            (pl.width, pl.height, u64::from(pl.size)),
            (320, 200, m.size()),
            "plane at {bpp} bpp"
        );
        let shown = pread_all(g.dev(), abi::DISPLAY_REGION_INDEX, 0, m.size() as usize)?;
        ensure_bytes(
            &shown,
            &want[..m.size() as usize],
            &format!("display region after BLITs at {bpp} bpp"),
        )?;
    }
    // A scanout that does not start at 0 (Y_OFFSET) is honoured.
    let m = Mode {
        xres: 64,
        yres: 32,
        bpp: 32,
        virt_width: 80,
        x_off: 0,
        y_off: 16,
    };
    set_mode(g.dev(), &m)?;
    g.vram().fill_u64(0, 2 * MIB, |o| pattern(60, o))?;
    g.run(&[Cmd::Blit {
        src,
        src_stride: 8,
        width: 2,
        height: 2,
        dst_x: 3,
        dst_y: 1,
    }])?;
    let s = g.read_bytes(src, 16)?;
    for r in 0..2u64 {
        let d = m.start() + (1 + r) * m.stride() + 3 * 4;
        ensure_bytes(
            &g.read_bytes(d, 8)?,
            &s[(r * 8) as usize..(r * 8 + 8) as usize],
            &format!("BLIT into a scanout at Y_OFFSET 16, row {r}"),
        )?;
    }
    ok_status(&g, "after BLITs")
}

pub(super) fn jump_and_wrap(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    // It judges HEAD and bytes, not time: in external mode its ~60 FILLs between fences
    // are ~60 handoffs, and with three rigs and a CPU hog on two cores they met the
    // default 2 s watchdog (engine-ext-6.12, 2026-12-03).
    super::control::quiet_watchdog(&p)?;
    let mut g = new_gpu(ctx, &p)?;
    g.write_words(DATA, &[0, 0, 0, 0])?;
    let fill = |i: u64, v: u32| Cmd::Fill {
        dst: DATA + 4 * i,
        len: 4,
        value: v,
    };
    // Slot 0 FILL, slot 1 JUMP over slot 2 to slot 3, slot 3 FILL, slot 4 FENCE.
    let cmds = [
        fill(0, 1),
        Cmd::Jump { target: 3 * 64 },
        fill(1, 2),
        fill(2, 3),
        Cmd::fence(1),
    ];
    g.eng.submit(&cmds)?;
    g.eng.wait_fence(1, FENCE_TIMEOUT)?;
    g.eng.wait_idle(FENCE_TIMEOUT)?;
    ensure_eq!(
        g.read_words(DATA, 3)?,
        vec![1, 0, 3],
        "words after FILL, JUMP, FILL"
    );
    ensure_eq!(
        g.eng.cmds_done()?,
        4,
        "CMDS_DONE (FILL, JUMP, FILL, FENCE; the skipped slot is not run)"
    );
    ensure_attr(g.inst.jobs(), 4, "jobs")?;
    // A JUMP back to 0 from the middle of the ring's end: HEAD wraps early and the
    // slot after the JUMP is skipped.
    g.eng.reset()?;
    g.eng.setup(RING, RING_SIZE)?;
    let slots = RING_SIZE / 64;
    g.eng.submit(&vec![Cmd::Nop; (slots - 2) as usize])?;
    g.eng.wait_idle(FENCE_TIMEOUT)?;
    let at = (slots - 2) * 64;
    ensure_eq!(g.eng.head()?, at, "HEAD after filling the ring with NOPs");
    g.write_words(DATA + 12, &[0, 0])?;
    g.eng.write_at(at, &Cmd::Jump { target: 0 })?;
    g.eng.write_at(at + 64, &fill(4, 99))?;
    g.eng.write_at(0, &fill(3, 44))?;
    g.eng.write_at(64, &Cmd::fence(2))?;
    g.eng.set_sw_tail(128);
    g.eng.kick()?;
    g.eng.wait_fence(2, FENCE_TIMEOUT)?;
    ensure_eq!(
        g.read_words(DATA + 12, 2)?,
        vec![44, 0],
        "FILL after the JUMP to 0 ran, the slot after the JUMP did not"
    );
    ensure_eq!(g.eng.head()?, 128, "HEAD after the wrap");
    // Plain wrap-around: 300 FILLs through a 64-slot ring.
    g.eng.reset()?;
    g.eng.setup(RING, RING_SIZE)?;
    let n = 300u64;
    let cmds: Vec<Cmd> = (0..n)
        .map(|i| Cmd::Fill {
            dst: DATA + MIB + 4 * i,
            len: 4,
            value: i as u32 + 1,
        })
        .collect();
    g.run(&cmds)?;
    let got = g.read_words(DATA + MIB, n as usize)?;
    let want: Vec<u32> = (1..=n as u32).collect();
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        return Err(Fail(format!(
            "300 FILLs through a wrapping ring: word {i} = {}, want {} ({} words differ; HEAD {:#x}, CMDS_DONE {})",
            got[i],
            want[i],
            got.iter().zip(&want).filter(|(a, b)| a != b).count(),
            g.eng.head()?,
            g.eng.cmds_done()?
        )));
    }
    ok_status(&g, "after wrapping")
}

pub(super) fn vram_alloc_by_engine(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let mut g = new_gpu(ctx, &p)?;
    g.run(&[Cmd::Nop])?;
    let before = g.inst.vram_used_kb()?;
    let dst = 64 * MIB;
    g.run(&[Cmd::Fill {
        dst,
        len: MIB,
        value: 0x7777_7777,
    }])?;
    ensure_attr(
        g.inst.vram_used_kb(),
        before + 1024,
        "vram_used_kb after the engine filled 1 MiB of fresh pages",
    )?;
    ensure_eq!(
        g.read_words(dst + MIB - 4, 1)?[0],
        0x7777_7777,
        "CPU view of engine-written page"
    );
    // Reading fresh pages (CHECKSUM source) sees zeros.
    let res = 70 * MIB;
    g.run(&[Cmd::Checksum {
        src: 80 * MIB,
        len: 8192,
        dst: res,
    }])?;
    let want = fnv1a64_bytes(&[0u8; 8192]).unwrap_or(0);
    ensure_eq!(g.vram().read_u64(res)?, want, "CHECKSUM of fresh pages");
    Ok(())
}
