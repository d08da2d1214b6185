//! Commands and ring set-ups the engine must refuse, each with its error code.

use super::*;

// ---- validation ---------------------------------------------------------------------

struct BadCase {
    name: String,
    cmd: Cmd,
    want: Vec<ErrorCode>,
}

pub(super) fn raw(op: u32, rsvd: u32, args: [u64; 7]) -> Cmd {
    Cmd::Raw(RawCmd { op, rsvd, args })
}

fn bad_cases(vs: u64, ring_size: u64) -> Vec<BadCase> {
    use ErrorCode::*;
    let fill = |dst, len| Cmd::Fill { dst, len, value: 1 };
    let gemm = |a, b, c, m, n, k| Cmd::Gemm { a, b, c, m, n, k };
    let fw = |addr| Cmd::Fence {
        seqno: 99,
        addr,
        irq: false,
        write: true,
    };
    let cs = |src, len, dst| Cmd::Checksum { src, len, dst };
    let cp = |dst, src, len| Cmd::Copy { dst, src, len };
    let d = DATA;
    let mut v: Vec<(&str, Cmd, Vec<ErrorCode>)> = vec![
        ("opcode 0x08", raw(0x08, 0, [0; 7]), vec![BadOpcode]),
        ("opcode 0x80", raw(0x80, 0, [0; 7]), vec![BadOpcode]),
        ("opcode 0xff", raw(0xff, 0, [0; 7]), vec![BadOpcode]),
        ("NOP flag 0x01", raw(0x0100, 0, [0; 7]), vec![BadFlags]),
        (
            "FILL flag 0x80",
            raw(0x8001, 0, [d, 4, 0, 0, 0, 0, 0]),
            vec![BadFlags],
        ),
        (
            "FENCE flag 0x04",
            raw(0x0406, 0, [1, 0, 0, 0, 0, 0, 0]),
            vec![BadFlags],
        ),
        (
            "FENCE flag 0x80",
            raw(0x8306, 0, [1, d, 0, 0, 0, 0, 0]),
            vec![BadFlags],
        ),
        ("JUMP flag 0x01", raw(0x0107, 0, [0; 7]), vec![BadFlags]),
        ("op bit 16 on NOP", raw(1 << 16, 0, [0; 7]), vec![BadFlags]),
        (
            "op bit 31 on FILL",
            raw(1 << 31 | 1, 0, [d, 4, 0, 0, 0, 0, 0]),
            vec![BadFlags],
        ),
        ("rsvd on NOP", raw(0, 1, [0; 7]), vec![BadFlags]),
        (
            "rsvd on FENCE",
            raw(6, 0x8000_0000, [1, 0, 0, 0, 0, 0, 0]),
            vec![BadFlags],
        ),
        ("NOP arg0", raw(0, 0, [1, 0, 0, 0, 0, 0, 0]), vec![BadFlags]),
        (
            "FILL arg6",
            raw(1, 0, [d, 4, 0, 0, 0, 0, 1]),
            vec![BadFlags],
        ),
        (
            "COPY arg3",
            raw(2, 0, [d, d + 64, 4, 1, 0, 0, 0]),
            vec![BadFlags],
        ),
        (
            "GEMM arg6",
            raw(4, 0, [d, d, d + 64, 1, 1, 1, 1]),
            vec![BadFlags],
        ),
        (
            "JUMP arg1",
            raw(7, 0, [0, 1, 0, 0, 0, 0, 0]),
            vec![BadFlags],
        ),
        (
            "FENCE arg2",
            raw(6, 0, [1, 0, 1, 0, 0, 0, 0]),
            vec![BadFlags],
        ),
        ("FILL at VRAM end", fill(vs, 4), vec![OutOfRange]),
        ("FILL across VRAM end", fill(vs - 4, 8), vec![OutOfRange]),
        (
            "FILL at 4 GiB (u32 truncation)",
            fill(1 << 32, 4),
            vec![OutOfRange],
        ),
        (
            "FILL len VRAM+4",
            fill(0, vs + 4),
            vec![OutOfRange, BadSize],
        ),
        ("COPY src beyond", cp(d, vs - 4, 8), vec![OutOfRange]),
        ("COPY dst beyond", cp(vs - 1, d, 2), vec![OutOfRange]),
        (
            "COPY len 4 GiB + 4",
            cp(d, d, (1 << 32) + 4),
            vec![OutOfRange, BadSize],
        ),
        ("CHECKSUM src beyond", cs(vs - 4, 8, d), vec![OutOfRange]),
        ("CHECKSUM dst at VRAM end", cs(d, 4, vs), vec![OutOfRange]),
        (
            "GEMM C beyond",
            gemm(d, d, vs - 4, 2, 2, 1),
            vec![OutOfRange],
        ),
        (
            "GEMM A beyond",
            gemm(vs - 4, d, d, 1, 1, 2),
            vec![OutOfRange],
        ),
        (
            "GEMM 65536x65536 C",
            gemm(d, d, d, 65536, 65536, 1),
            vec![OutOfRange],
        ),
        ("FENCE write at VRAM end", fw(vs), vec![OutOfRange]),
        (
            "FILL dst+len overflow",
            fill(u64::MAX - 3, 8),
            vec![BadSize],
        ),
        ("FILL len overflow", fill(4, u64::MAX - 3), vec![BadSize]),
        (
            "COPY src+len overflow",
            cp(d, u64::MAX - 63, 128),
            vec![BadSize],
        ),
        ("COPY dst+len overflow", cp(u64::MAX, d, 2), vec![BadSize]),
        (
            "CHECKSUM src+len overflow",
            cs(u64::MAX - 3, 8, d),
            vec![BadSize],
        ),
        (
            "GEMM A+size overflow",
            gemm(u64::MAX - 3, d, d, 1, 1, 2),
            vec![BadSize],
        ),
        ("FILL dst unaligned", fill(d + 2, 4), vec![BadAlign]),
        ("FILL len unaligned", fill(d, 6), vec![BadAlign, BadSize]),
        (
            "CHECKSUM src unaligned",
            cs(d + 2, 4, d + 64),
            vec![BadAlign],
        ),
        (
            "CHECKSUM len unaligned",
            cs(d, 5, d + 64),
            vec![BadAlign, BadSize],
        ),
        ("CHECKSUM dst unaligned", cs(d, 4, d + 68), vec![BadAlign]),
        (
            "GEMM A unaligned",
            gemm(d + 2, d + 64, d + 128, 1, 1, 1),
            vec![BadAlign],
        ),
        (
            "GEMM C unaligned",
            gemm(d, d + 64, d + 129, 1, 1, 1),
            vec![BadAlign],
        ),
        ("FENCE write unaligned", fw(d + 4), vec![BadAlign]),
        ("FILL len 0", fill(d, 0), vec![BadSize]),
        ("COPY len 0", cp(d, d + 64, 0), vec![BadSize]),
        ("CHECKSUM len 0", cs(d, 0, d + 64), vec![BadSize]),
        ("GEMM m 0", gemm(d, d, d, 0, 1, 1), vec![BadSize]),
        ("GEMM n 0", gemm(d, d, d, 1, 0, 1), vec![BadSize]),
        ("GEMM k 0", gemm(d, d, d, 1, 1, 0), vec![BadSize]),
        ("GEMM m 65537", gemm(d, d, d, 65537, 1, 1), vec![BadSize]),
        ("GEMM k 65537", gemm(d, d, d, 1, 1, 65537), vec![BadSize]),
        (
            "GEMM m 2^32+1 (truncation)",
            gemm(d, d, d, (1 << 32) + 1, 1, 1),
            vec![BadSize],
        ),
        ("JUMP unaligned", Cmd::Jump { target: 32 }, vec![BadRing]),
        (
            "JUMP to RING_SIZE",
            Cmd::Jump { target: ring_size },
            vec![BadRing],
        ),
        (
            "JUMP to 2^32 (truncation)",
            Cmd::Jump { target: 1 << 32 },
            vec![BadRing],
        ),
        (
            "JUMP to u64::MAX",
            Cmd::Jump { target: u64::MAX },
            vec![BadRing],
        ),
        (
            "BLIT without a mode",
            Cmd::Blit {
                src: d,
                src_stride: 16,
                width: 4,
                height: 4,
                dst_x: 0,
                dst_y: 0,
            },
            vec![BadMode],
        ),
    ];
    v.drain(..)
        .map(|(n, cmd, want)| BadCase {
            name: n.to_string(),
            cmd,
            want,
        })
        .collect()
}

/// Run `bad` after a FILL+FENCE on a freshly recovered ring and check everything the
/// ABI says about a failure. The ring must be at RING (RING_SIZE), MSI routed with
/// IRQ_ERROR unmasked.
fn run_bad(g: &mut Gpu, bad: &Cmd, want: &[ErrorCode], what: &str) -> TestResult {
    g.eng.recover().ctx(format!("{what}: recover"))?;
    g.eng.ack_irq(reg::IRQ_ALL)?;
    drain_irq(g);
    let failed0 = g.inst.cmds_failed()?;
    let jobs0 = g.inst.jobs()?;
    let done0 = g.eng.cmds_done()?;
    g.write_words(DATA, &[0; 16])?;
    g.write_words(DATA + 4096, &[0x1111_1111; 16])?;
    let (fa, s1) = g.eng.next_fence(false, None);
    let (fb, _) = g.eng.next_fence(false, None);
    let cmds = [
        Cmd::Fill {
            dst: DATA,
            len: 64,
            value: 0xa5a5_a5a5,
        },
        fa,
        *bad,
        Cmd::Fill {
            dst: DATA + 4096,
            len: 64,
            value: 0x5a5a_5a5a,
        },
        fb,
    ];
    g.eng.submit(&cmds).ctx(format!("{what}: submit"))?;
    let (code, head, st) = g
        .eng
        .wait_stopped(Duration::from_secs(10))
        .ctx(format!("{what}: ring never stopped"))?;
    ensure_code(code, want, what)?;
    ensure_eq!(head, 128, "{what}: ERROR_HEAD");
    ensure!(
        st & reg::STATUS_ERROR != 0 && st & reg::STATUS_HUNG == 0,
        "{what}: STATUS {st:#x}"
    );
    ensure_eq!(g.eng.fence_value()?, s1, "{what}: FENCE (first fence only)");
    ensure_eq!(
        g.read_words(DATA, 1)?[0],
        0xa5a5_a5a5,
        "{what}: FILL before it"
    );
    ensure!(
        g.wait_irq(Duration::from_secs(2))?,
        "{what}: no MSI for the error"
    );
    ensure!(
        g.eng.irq_status()? & reg::IRQ_ERROR != 0,
        "{what}: IRQ_STATUS.ERROR not set"
    );
    ensure_attr(
        g.inst.cmds_failed(),
        failed0 + 1,
        &format!("{what}: cmds_failed"),
    )?;
    ensure_attr(g.inst.jobs(), jobs0 + 2, &format!("{what}: jobs"))?;
    ensure_eq!(
        g.eng.cmds_done()?.wrapping_sub(done0),
        2,
        "{what}: CMDS_DONE increment"
    );
    // Stopped means stopped: another doorbell runs nothing.
    g.eng.write_reg(reg::DOORBELL, 1)?;
    std::thread::sleep(Duration::from_millis(20));
    ensure_eq!(
        g.read_words(DATA + 4096, 1)?[0],
        0x1111_1111,
        "{what}: FILL after the bad command ran"
    );
    ensure_eq!(
        g.eng.error()?,
        code,
        "{what}: ERROR changed after a doorbell"
    );
    ensure_attr(
        g.inst.jobs(),
        jobs0 + 2,
        &format!("{what}: jobs after a doorbell"),
    )?;
    Ok(())
}

pub(super) fn validation_errors(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let nbr = Neighbour::start(new_gpu(ctx, &p)?, 77)?;
    let mut g = new_gpu(ctx, &p)?;
    g.msi(reg::IRQ_ERROR | reg::IRQ_WATCHDOG)?;
    let cases = bad_cases(g.vram_size, RING_SIZE);
    let n = cases.len();
    for c in &cases {
        ctx.soft(run_bad(&mut g, &c.cmd, &c.want, &c.name));
        ctx.soft(nbr.expect_progress(1, Duration::from_secs(10), &c.name));
    }
    ctx.note(format!("{n} invalid commands"));
    // The victim still works after all that.
    g.eng.recover()?;
    g.run(&[Cmd::Fill {
        dst: DATA,
        len: 4,
        value: 9,
    }])?;
    ensure_eq!(g.read_words(DATA, 1)?[0], 9, "victim after recovery");
    let (_, rep) = nbr.finish()?;
    ctx.note(format!("neighbour ran {} checked rounds", rep.rounds));
    Ok(())
}

pub(super) fn blit_errors(ctx: &mut Ctx) -> TestResult {
    use ErrorCode::*;
    let p = ctx.parent(0)?;
    let nbr = Neighbour::start(new_gpu(ctx, &p)?, 78)?;
    let inst = ctx.create(&p, T128)?;
    let mut g = Gpu::open(&inst)?;
    g.eng.configure(RING, RING_SIZE)?;
    g.msi(reg::IRQ_ERROR)?;
    let vs = g.vram_size;
    let blit = |src, src_stride, width, height, dst_x, dst_y| Cmd::Blit {
        src,
        src_stride,
        width,
        height,
        dst_x,
        dst_y,
    };
    let m = Mode {
        xres: 320,
        yres: 200,
        bpp: 32,
        virt_width: 0,
        x_off: 0,
        y_off: 64, // scanout starts at 64 lines, clear of the ring
    };
    set_mode(g.dev(), &m)?;
    let s = 8 * MIB;
    let cases: Vec<(&str, Cmd, Vec<ErrorCode>)> = vec![
        (
            "x + width > XRES",
            blit(s, 84, 21, 1, 300, 0),
            vec![BadMode],
        ),
        ("y + height > YRES", blit(s, 4, 1, 2, 0, 199), vec![BadMode]),
        ("dst_x beyond", blit(s, 4, 1, 1, 320, 0), vec![BadMode]),
        (
            "dst_x + width overflow",
            blit(s, 4, 2, 1, u64::MAX, 0),
            vec![BadMode, BadSize],
        ),
        ("width 0", blit(s, 4, 0, 1, 0, 0), vec![BadSize]),
        ("height 0", blit(s, 4, 1, 0, 0, 0), vec![BadSize]),
        (
            "source beyond VRAM",
            blit(vs - 4, 4, 2, 1, 0, 0),
            vec![OutOfRange],
        ),
        (
            "source rows beyond VRAM",
            blit(vs - 4096, 4096, 1, 2, 0, 0),
            vec![OutOfRange],
        ),
        (
            "source stride overflow",
            blit(s, u64::MAX / 2, 1, 3, 0, 0),
            vec![BadSize, OutOfRange],
        ),
    ];
    for (name, cmd, want) in &cases {
        ctx.soft(run_bad(&mut g, cmd, want, name));
    }
    // Not displayable: bpp 8, then display off.
    set_mode(g.dev(), &Mode { bpp: 8, ..m })?;
    ctx.soft(run_bad(
        &mut g,
        &blit(s, 4, 1, 1, 0, 0),
        &[BadMode],
        "bpp 8",
    ));
    dispi_write(g.dev(), abi::dispi::ENABLE, 0)?;
    ctx.soft(run_bad(
        &mut g,
        &blit(s, 4, 1, 1, 0, 0),
        &[BadMode],
        "display disabled",
    ));
    // And the same BLIT is fine with the mode back.
    set_mode(g.dev(), &m)?;
    g.eng.recover()?;
    g.run(&[blit(s, 4, 1, 1, 0, 0)])?;
    nbr.finish()?;
    Ok(())
}

pub(super) fn ring_config_errors(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let nbr = Neighbour::start(new_gpu(ctx, &p)?, 79)?;
    let inst = ctx.create(&p, T128)?;
    let mut g = Gpu::open(&inst)?;
    g.msi(reg::IRQ_ERROR)?;
    let vs = g.vram_size;
    let bad: [(&str, u64, u64); 12] = [
        ("size 0", 0, 0),
        ("size 2048", 0, 2048),
        ("size 4096+64", 0, 4096 + 64),
        ("size 3*4096", 0, 3 * 4096),
        ("size 2 MiB", 0, 2 * MIB),
        ("size 2^31", 0, 1 << 31),
        ("base 0x800", 0x800, 4096),
        ("base 0x40", 0x40, 4096),
        ("base at VRAM end", vs, 4096),
        ("base+size past VRAM end", vs - 4096, 8192),
        ("base 4 GiB (HI set)", 1 << 32, 4096),
        ("base near 2^64", u64::MAX - 4095, 4096),
    ];
    for (name, base, size) in bad {
        let r = (|| -> TestResult {
            g.eng.reset()?;
            g.eng.ack_irq(reg::IRQ_ALL)?;
            drain_irq(&g);
            g.eng.configure(base, size)?;
            g.eng.enable()?;
            let st = g.eng.status()?;
            ensure!(
                st & reg::STATUS_ERROR != 0,
                "{name}: enable accepted (STATUS {st:#x})"
            );
            ensure_code(g.eng.error()?, &[ErrorCode::BadRing], name)?;
            ensure!(
                g.eng.irq_status()? & reg::IRQ_ERROR != 0,
                "{name}: IRQ_STATUS.ERROR not set"
            );
            ensure!(g.wait_irq(Duration::from_secs(2))?, "{name}: no MSI");
            Ok(())
        })();
        ctx.soft(r);
    }
    nbr.expect_progress(1, Duration::from_secs(10), "after bad ring configs")?;
    // Edges that are fine: the last page, the last MiB, the largest ring.
    for (base, size) in [(vs - 4096, 4096), (vs - MIB, MIB), (0, MIB)] {
        g.eng.reset()?;
        g.eng
            .setup(base, size)
            .ctx(format!("ring at {base:#x} size {size:#x}"))?;
        g.run(&[Cmd::Fill {
            dst: 2 * MIB,
            len: 4,
            value: size as u32,
        }])?;
        ensure_eq!(
            g.read_words(2 * MIB, 1)?[0],
            size as u32,
            "ring at {base:#x}"
        );
    }
    // Bad TAIL values.
    for (name, tail) in [
        ("TAIL 0x20", 0x20u32),
        ("TAIL = RING_SIZE", 4096),
        ("TAIL 0xffffffc0", 0xffff_ffc0),
        ("TAIL 0x10040 (> size, aligned)", 0x10040),
    ] {
        let r = (|| -> TestResult {
            g.eng.reset()?;
            g.eng.setup(8 * MIB, 4096)?;
            g.eng.ack_irq(reg::IRQ_ALL)?;
            drain_irq(&g);
            g.eng.write_reg(reg::RING_TAIL, tail)?;
            g.eng.write_reg(reg::DOORBELL, 1)?;
            let (code, _, _) = g.eng.wait_stopped(Duration::from_secs(5)).ctx(name)?;
            ensure_code(code, &[ErrorCode::BadRing], name)?;
            ensure!(g.wait_irq(Duration::from_secs(2))?, "{name}: no MSI");
            Ok(())
        })();
        ctx.soft(r);
    }
    nbr.finish()?;
    Ok(())
}
