//! VRAM: mmap, pread/pwrite against mmap, scrubbing, isolation between instances.

use super::*;

// 4 ---------------------------------------------------------------------------------------
pub(super) fn vram_mmap(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-256M")?;
    let dev = inst.open().ctx("open device")?;
    let size = 256 * MIB;
    let map = dev.mmap_region(region::BAR0, 0, size).ctx("mmap BAR0")?;
    ensure_attr(inst.vram_used_kb(), 0, "vram_used_kb after mmap")?;
    // Touch 64 pages spread over the BAR plus the first and last page.
    let mut offs: Vec<u64> = (0..64)
        .map(|k| k * 4 * MIB + (k % 7) * PAGE + 8 * k)
        .collect();
    offs.push(0);
    offs.push(size - 8);
    for &o in &offs {
        map.write_u64(o, pattern(4, o))
            .ctx(format!("write {o:#x}"))?;
    }
    let pages = {
        let mut v: Vec<u64> = offs.iter().map(|o| o / PAGE).collect();
        v.sort();
        v.dedup();
        v.len() as u64
    };
    for &o in &offs {
        ensure_eq!(
            map.read_u64(o).ctx("read")?,
            pattern(4, o),
            "read back at {o:#x}"
        );
    }
    ensure_attr(
        inst.vram_used_kb(),
        pages * 4,
        "vram_used_kb after touching",
    )?;
    ensure_attr(p.vram_pages(), pages, "parent vram_pages")?;
    ensure_eq!(
        u64::from(
            dev.read_u32(region::BAR2, info::VRAM_USED_KB)
                .ctx("VRAM_USED_KB")?
        ),
        pages * 4,
        "BAR2 VRAM_USED_KB"
    );
    // Touching again does not allocate.
    for &o in &offs {
        map.write_u64(o, !pattern(4, o)).ctx("rewrite")?;
    }
    ensure_attr(
        inst.vram_used_kb(),
        pages * 4,
        "vram_used_kb after rewriting",
    )?;
    // A read fault on a fresh page allocates a zero page.
    let fresh = 2 * MIB + 3 * PAGE;
    ensure!(
        !offs.iter().any(|o| o / PAGE == fresh / PAGE),
        "test bug: fresh page touched"
    );
    ensure_eq!(
        map.read_u64(fresh).ctx("read fresh")?,
        0,
        "fresh page content"
    );
    ensure_attr(
        inst.vram_used_kb(),
        (pages + 1) * 4,
        "vram_used_kb after a read fault",
    )?;
    // A second mapping of the same offset sees the same bytes.
    let map2 = dev
        .mmap_region(region::BAR0, 4 * MIB, 2 * PAGE)
        .ctx("second mmap")?;
    ensure_eq!(
        map2.read_u64(PAGE + 8).ctx("read")?,
        !pattern(4, 4 * MIB + PAGE + 8),
        "second mapping"
    );
    drop(map2);
    drop(map);
    drop(dev);
    ctx.remove(&inst)?;
    ensure_attr(p.vram_pages(), 0, "vram_pages after remove")
}

// 5 ---------------------------------------------------------------------------------------
pub(super) fn pread_mmap_agree(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-128M")?;
    let dev = inst.open().ctx("open")?;
    let size = 128 * MIB;
    ensure_eq!(dev.region_size(region::BAR0)?, size, "BAR0 size");
    let map = dev.mmap_region(region::BAR0, 0, size).ctx("mmap")?;
    // (offset, len): page starts, page crossings, the last pages and the very end.
    let spots: [(u64, usize); 9] = [
        (0, 64),
        (PAGE - 4, 8),
        (3 * PAGE - 5, 11),
        (64 * MIB - 3, 3 * PAGE as usize + 6),
        (size - 2 * PAGE, PAGE as usize),
        (size - PAGE - 3, 7),
        (size - PAGE, PAGE as usize),
        (size - 8, 8),
        (size - 1, 1),
    ];
    // pwrite -> mmap
    for (i, &(o, len)) in spots.iter().enumerate() {
        let data = pattern_bytes(50 + i as u64, o, len);
        dev.write_region(region::BAR0, o, &data)
            .ctx(format!("pwrite {o:#x}+{len}"))?;
        let mut got = vec![0u8; len];
        map.read_bytes(o, &mut got).ctx("mmap read")?;
        ensure_bytes(
            &got,
            &data,
            &format!("pwrite at {o:#x}+{len}, read via mmap"),
        )?;
    }
    // mmap -> pread
    for (i, &(o, len)) in spots.iter().enumerate() {
        let data = pattern_bytes(80 + i as u64, o, len);
        map.write_bytes(o, &data).ctx("mmap write")?;
        let mut got = vec![0u8; len];
        dev.read_region(region::BAR0, o, &mut got)
            .ctx(format!("pread {o:#x}+{len}"))?;
        ensure_bytes(
            &got,
            &data,
            &format!("mmap write at {o:#x}+{len}, read via pread"),
        )?;
    }
    // A page written only through pread/pwrite of a fresh page, then mapped freshly.
    let o = 100 * MIB + 123;
    let data = pattern_bytes(99, o, 5000);
    dev.write_region(region::BAR0, o, &data)
        .ctx("pwrite fresh")?;
    let m2 = dev
        .mmap_region(region::BAR0, 100 * MIB, 4 * PAGE)
        .ctx("mmap 2")?;
    let mut got = vec![0u8; 5000];
    m2.read_bytes(123, &mut got).ctx("read m2")?;
    ensure_bytes(&got, &data, "pwrite then fresh mmap at an offset")?;
    drop(m2);
    // pread/pwrite whose user buffer is an mmap of the same BAR (the module must not hold
    // its lock across the copy, or the buffer's page fault deadlocks).
    let src = 8 * MIB;
    let dst = 16 * MIB + 100;
    let data = pattern_bytes(77, src, 3 * PAGE as usize);
    dev.write_region(region::BAR0, src, &data)
        .ctx("pwrite source")?;
    // SAFETY: dst + 3 pages lies inside the 128 MiB mapping; the kernel writes through the
    // raw pointer, no Rust reference to the mapping exists.
    let n = unsafe {
        libc::pread(
            dev.as_raw_fd(),
            map.as_ptr().add(dst as usize) as *mut libc::c_void,
            data.len(),
            src as libc::off_t,
        )
    };
    ensure_eq!(n, data.len() as isize, "pread into an mmap of the same BAR");
    let mut got = vec![0u8; data.len()];
    map.read_bytes(dst, &mut got).ctx("read copy")?;
    ensure_bytes(&got, &data, "pread into own mmap")?;
    let dst2 = 24 * MIB + 7;
    // SAFETY: the source range [dst, dst + len) lies inside the mapping; the kernel only
    // reads through the raw pointer.
    let n = unsafe {
        libc::pwrite(
            dev.as_raw_fd(),
            map.as_ptr().add(dst as usize) as *const libc::c_void,
            data.len(),
            dst2 as libc::off_t,
        )
    };
    ensure_eq!(
        n,
        data.len() as isize,
        "pwrite from an mmap of the same BAR"
    );
    let back = pread_all(&dev, region::BAR0, dst2, data.len())?;
    ensure_bytes(&back, &data, "pwrite from own mmap")?;
    // Beyond the BAR: reads and writes fail (or transfer nothing) and change nothing.
    let last = map.read_u64(size - 8).ctx("read last")?;
    for (o, len) in [
        (size, 4usize),
        (size + PAGE, 8),
        (size - 2, 4),
        (1u64 << 39, 4),
    ] {
        let mut b = vec![0u8; len];
        match dev.pread(region::BAR0, o, &mut b) {
            Err(_) | Ok(0) => {}
            Ok(n) if o < size && n as u64 <= size - o => {}
            Ok(n) => {
                return Err(Fail(format!(
                    "pread at {o:#x}+{len} past BAR end returned {n} bytes"
                )))
            }
        }
        match dev.pwrite(region::BAR0, o, &vec![0xeeu8; len]) {
            Err(_) | Ok(0) => {}
            Ok(n) if o < size && n as u64 <= size - o => {}
            Ok(n) => {
                return Err(Fail(format!(
                    "pwrite at {o:#x}+{len} past BAR end wrote {n} bytes"
                )))
            }
        }
    }
    // The straddling write may have written the in-range 2 bytes; rewrite and re-check the
    // device is still fine.
    map.write_u64(size - 8, last).ctx("restore last")?;
    ensure_eq!(
        dev.read_u32(region::BAR0, size - 4).ctx("pread last")?,
        (last >> 32) as u32,
        "last dword"
    );
    // mmap past the end fails.
    let r = dev.mmap_region_raw(region::BAR0, size - PAGE, 2 * PAGE, libc::PROT_READ);
    ensure!(r.is_err(), "mmap of BAR0 past its end succeeded");
    let r = dev.mmap_region_raw(region::BAR0, size, PAGE, libc::PROT_READ);
    ensure!(r.is_err(), "mmap at BAR0's end succeeded");
    Ok(())
}

// 6 ---------------------------------------------------------------------------------------
pub(super) fn scrub(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let size = 256 * MIB;
    let a = ctx.create(&p, "vgpu_shim-256M")?;
    let t0 = std::time::Instant::now();
    {
        let dev = a.open().ctx("open A")?;
        let map = dev.mmap_region(region::BAR0, 0, size).ctx("mmap A")?;
        map.fill_u64(0, size, |o| pattern(6, o)).ctx("fill A")?;
        if let Some(m) = map.verify_u64(0, size, |o| pattern(6, o)).ctx("verify A")? {
            return Err(Fail(format!("A's own pattern did not stick: {m:?}")));
        }
        ensure_attr(a.vram_used_kb(), size / 1024, "A vram_used_kb after fill")?;
    }
    ctx.note(format!(
        "filled 256 MiB in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    ctx.remove(&a)?;
    ensure_attr(p.vram_pages(), 0, "vram_pages after removing A")?;
    let b = ctx.create(&p, "vgpu_shim-256M")?;
    let dev = b.open().ctx("open B")?;
    // Check a few spots through pread first (pread allocates too).
    for o in [0, size / 2 + 40, size - 8] {
        let mut v = [0u8; 8];
        dev.read_region(region::BAR0, o, &mut v).ctx("pread B")?;
        ensure_eq!(v, [0u8; 8], "B pread at {o:#x}");
    }
    let map = dev.mmap_region(region::BAR0, 0, size).ctx("mmap B")?;
    if let Some(m) = map.verify_u64(0, size, |_| 0).ctx("verify B")? {
        return Err(Fail(format!(
            "new tenant sees old data: {} non-zero words, first at {:#x} = {:#x} (A wrote {:#x})",
            m.count,
            m.offset,
            m.found,
            pattern(6, m.offset)
        )));
    }
    ensure_attr(
        b.vram_used_kb(),
        size / 1024,
        "B vram_used_kb after reading all",
    )?;
    Ok(())
}

// 7 ---------------------------------------------------------------------------------------
pub(super) fn isolation(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let a = ctx.create(&p, "vgpu_shim-128M")?;
    let b = ctx.create(&p, "vgpu_shim-128M")?;
    let da = a.open().ctx("open A")?;
    let db = b.open().ctx("open B")?;
    let ma = da.mmap_region(region::BAR0, 0, 48 * MIB).ctx("mmap A")?;
    let mb = db.mmap_region(region::BAR0, 0, 48 * MIB).ctx("mmap B")?;
    ma.fill_u64(0, 32 * MIB, |o| pattern(0xA, o))
        .ctx("fill A")?;
    mb.fill_u64(16 * MIB, 32 * MIB, |o| pattern(0xB, o))
        .ctx("fill B")?;
    let check =
        |m: &vgpu_vfio::MappedRegion, off, len, f: &dyn Fn(u64) -> u64, what: &str| -> TestResult {
            if let Some(x) = m.verify_u64(off, len, f).ctx(what)? {
                return Err(Fail(format!("{what}: {x:?}")));
            }
            Ok(())
        };
    check(&ma, 0, 32 * MIB, &|o| pattern(0xA, o), "A's own data")?;
    check(&ma, 32 * MIB, 16 * MIB, &|_| 0, "A where only B wrote")?;
    check(&mb, 0, 16 * MIB, &|_| 0, "B where only A wrote")?;
    check(
        &mb,
        16 * MIB,
        32 * MIB,
        &|o| pattern(0xB, o),
        "B's own data",
    )?;
    // The pread path too.
    let mut v = [0u8; 8];
    da.read_region(region::BAR0, 20 * MIB, &mut v)
        .ctx("pread A")?;
    ensure_eq!(
        u64::from_le_bytes(v),
        pattern(0xA, 20 * MIB),
        "A pread in the overlap"
    );
    db.read_region(region::BAR0, 20 * MIB, &mut v)
        .ctx("pread B")?;
    ensure_eq!(
        u64::from_le_bytes(v),
        pattern(0xB, 20 * MIB),
        "B pread in the overlap"
    );
    // Writes through pwrite on A do not show in B.
    da.write_region(region::BAR0, 40 * MIB, &[0x5a; 64])
        .ctx("pwrite A")?;
    check(
        &mb,
        40 * MIB,
        64,
        &|o| pattern(0xB, o),
        "B after A's pwrite",
    )?;
    // Reads allocate too: each touched all 48 MiB of its mapping.
    ensure_attr(a.vram_used_kb(), 48 * 1024, "A vram_used_kb")?;
    ensure_attr(b.vram_used_kb(), 32 * 1024 + 16 * 1024, "B vram_used_kb")?;
    Ok(())
}
