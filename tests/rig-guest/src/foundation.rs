//! The foundation suite: sysfs, pool admission, VRAM, config space, regions, display,
//! IRQs, lifecycle, multiple parents, reset (docs/device-abi.md).

use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use vgpu_sysfs::handle::{Instance, Parent};
use vgpu_vfio::abi::{self, dispi, drm, info};
use vgpu_vfio::uapi::{
    VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_GFX_PLANE_TYPE_DMABUF,
    VFIO_GFX_PLANE_TYPE_REGION, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
    VFIO_IRQ_INFO_NORESIZE, VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vgpu_vfio::{irq, region, Device, EventFd, OpenInstance, EFD_NONBLOCK};

use crate::harness::{Context, Ctx, Fail, Suite, Test, TestResult};
use crate::sys;
use crate::util::*;
use crate::{ensure, ensure_eq};

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// The suite.
pub fn suite() -> Suite {
    let t = |name, params, run| Test { name, params, run };
    Suite {
        name: "foundation",
        about: "device ABI: sysfs, pool, VRAM, config, regions, display, IRQs, lifecycle",
        tests: vec![
            t("types", None, types),
            t("create_remove", Some("pool_mb=8192"), create_remove),
            t("pool_admission", Some("pool_mb=3000"), pool_admission),
            t("vram_mmap", Some(""), vram_mmap),
            t("pread_mmap_agree", Some(""), pread_mmap_agree),
            t("scrub", Some(""), scrub),
            t("isolation", Some(""), isolation),
            t("config_space", Some("pool_mb=4352"), config_space),
            t("region_info", Some("pool_mb=4352"), region_info),
            t("display_plane", Some(""), display_plane),
            t("irqs", Some(""), irqs),
            t("sysfs_bad_input", Some(""), sysfs_bad_input),
            t("remove_while_open", Some(""), remove_while_open),
            t("rmmod_while_busy", None, rmmod_while_busy),
            t("multi_parent", Some("parents=3 pool_mb=1024"), multi_parent),
            t("reset", Some(""), reset),
            t("vfio_ioctls_compat", Some(""), vfio_ioctls_compat),
            t(
                "instances_attr",
                Some("pool_mb=8192"),
                crate::listing::instances_attr,
            ),
            t(
                "instances_attr_churn",
                Some("pool_mb=2048"),
                crate::listing::instances_attr_churn,
            ),
            t(
                "instances_attr_more",
                Some("pool_mb=12800"),
                crate::listing::instances_attr_more,
            ),
        ],
    }
}

fn quota(t: &str) -> Result<u64, Fail> {
    Ok(abi::type_spec(t)
        .ok_or_else(|| Fail(format!("no type {t}")))?
        .vram_mb)
}

// 1 ---------------------------------------------------------------------------------------
fn check_types(parent: &Parent, pool: u64) -> TestResult {
    let ids = parent.type_ids().ctx("list types")?;
    let want: Vec<String> = {
        let mut v: Vec<String> = abi::TYPES.iter().map(|t| t.id.to_string()).collect();
        v.sort();
        v
    };
    ensure_eq!(ids, want, "{} types", parent.name());
    ensure_attr(parent.pool_mb(), pool, "pool_mb")?;
    ensure_attr(parent.pool_free_mb(), pool, "pool_free_mb")?;
    ensure_attr(parent.vram_pages(), 0, "vram_pages")?;
    for spec in abi::TYPES {
        let t = parent.mdev_type(spec.id);
        ensure_eq!(t.name().ctx("name")?, spec.name, "{} name", spec.id);
        let want = format!(
            "vram_mb={}, weight={}, max_instances={}",
            spec.vram_mb,
            spec.weight,
            pool / spec.vram_mb
        );
        ensure_eq!(
            t.description_raw().ctx("description")?,
            want,
            "{} description",
            spec.id
        );
        ensure_eq!(
            t.device_api().ctx("device_api")?,
            "vfio-pci",
            "{} device_api",
            spec.id
        );
        ensure_attr(
            t.available_instances(),
            pool / spec.vram_mb,
            &format!("{} available_instances", spec.id),
        )?;
        ensure!(
            t.instances().ctx("devices")?.is_empty(),
            "{} has instances",
            spec.id
        );
    }
    Ok(())
}

fn types(ctx: &mut Ctx) -> TestResult {
    // Defaults: one parent, 1024 MiB.
    ctx.load("")?;
    let parents = Parent::all_vgpu().ctx("parents")?;
    ensure_eq!(
        parents
            .iter()
            .map(|p| p.name().to_string())
            .collect::<Vec<_>>(),
        vec!["vgpu_shim0".to_string()],
        "parents with default parameters"
    );
    check_types(&parents[0], 1024)?;
    ctx.unload().ctx("unload")?;
    // A pool that is not a multiple of most quotas.
    ctx.load("pool_mb=6144")?;
    check_types(&ctx.parent(0)?, 6144)
}

// 2 ---------------------------------------------------------------------------------------
fn create_remove(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let pool = 8192;
    for spec in abi::TYPES {
        for cycle in 0..2 {
            let what = format!("{} cycle {cycle}", spec.id);
            let inst = ctx.create(&p, spec.id)?;
            ensure_eq!(
                inst.type_id().ctx("mdev_type")?,
                spec.id,
                "{what}: mdev_type"
            );
            ensure_eq!(
                inst.parent_name().ctx("parent")?,
                "vgpu_shim0",
                "{what}: parent"
            );
            ensure_attr(inst.vram_mb(), spec.vram_mb, &format!("{what}: vram_mb"))?;
            ensure_attr(inst.vram_used_kb(), 0, &format!("{what}: vram_used_kb"))?;
            ensure_attr(
                inst.weight(),
                spec.weight.into(),
                &format!("{what}: weight"),
            )?;
            ensure_attr(inst.cap(), 0, &format!("{what}: cap"))?;
            let listed = p.mdev_type(spec.id).instances().ctx("devices")?;
            ensure_eq!(listed, vec![inst.clone()], "{what}: type's devices/");
            ensure_attr(
                p.pool_free_mb(),
                pool - spec.vram_mb,
                &format!("{what}: pool_free_mb"),
            )?;
            check_pool(&p, &what)?;
            ctx.remove(&inst)?;
            ensure_attr(
                p.pool_free_mb(),
                pool,
                &format!("{what}: pool_free_mb after remove"),
            )?;
            ensure_attr(
                p.vram_pages(),
                0,
                &format!("{what}: vram_pages after remove"),
            )?;
            ensure!(
                p.mdev_type(spec.id).instances().ctx("devices")?.is_empty(),
                "{what}: still listed"
            );
            check_pool(&p, &format!("{what} removed"))?;
        }
    }
    Ok(())
}

// 3 ---------------------------------------------------------------------------------------
fn expect_enospc(ctx: &Ctx, p: &Parent, type_id: &str, what: &str) -> TestResult {
    let free = p.pool_free_mb().ctx("pool_free_mb")?;
    let pages = p.vram_pages().ctx("vram_pages")?;
    let n = mdev_count()?;
    let r = ctx.try_create(&p.mdev_type(type_id));
    expect_errno(
        r,
        &[libc::ENOSPC],
        &format!("{what}: create {type_id} with {free} MiB free"),
    )?;
    ensure_eq!(mdev_count()?, n, "{what}: mdev devices after failed create");
    ensure_attr(
        p.pool_free_mb(),
        free,
        &format!("{what}: pool_free_mb after failed create"),
    )?;
    ensure_attr(
        p.vram_pages(),
        pages,
        &format!("{what}: vram_pages after failed create"),
    )?;
    check_pool(p, what)?;
    Ok(())
}

fn pool_admission(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    ensure_eq!(check_pool(&p, "empty")?, 3000, "empty pool");
    let mut made = Vec::new();
    // 3000 -> 952 -> 440 -> 184 -> 56
    let steps: [(&str, &[&str]); 4] = [
        (
            "vgpu_shim-2G",
            &["vgpu_shim-1G", "vgpu_shim-2G", "vgpu_shim-4G"],
        ),
        ("vgpu_shim-512M", &["vgpu_shim-512M", "vgpu_shim-1G"]),
        ("vgpu_shim-256M", &["vgpu_shim-256M", "vgpu_shim-512M"]),
        ("vgpu_shim-128M", &["vgpu_shim-128M", "vgpu_shim-256M"]),
    ];
    let mut reserved = 0;
    for (i, (ty, too_big)) in steps.iter().enumerate() {
        let inst = ctx.create(&p, ty)?;
        reserved += quota(ty)?;
        made.push(inst);
        let what = format!("step {i} ({ty})");
        let free = check_pool(&p, &what)?;
        ensure_eq!(free, 3000 - reserved, "{what}: pool_free_mb");
        for t in *too_big {
            expect_enospc(ctx, &p, t, &what)?;
        }
    }
    // Full: 56 MiB left, nothing fits.
    for spec in abi::TYPES {
        expect_enospc(ctx, &p, spec.id, "full pool")?;
    }
    // Free the 512M one; a 256M and a 128M then fit, exactly as available_instances says.
    let i512 = made.remove(1);
    ctx.remove(&i512)?;
    ensure_eq!(
        check_pool(&p, "after freeing 512M")?,
        568,
        "pool_free_mb after freeing 512M"
    );
    made.push(ctx.create(&p, "vgpu_shim-256M")?);
    made.push(ctx.create(&p, "vgpu_shim-256M")?);
    ensure_eq!(check_pool(&p, "refilled")?, 56, "pool_free_mb refilled");
    expect_enospc(ctx, &p, "vgpu_shim-128M", "refilled")?;
    for inst in made.drain(..) {
        ctx.remove(&inst)?;
        check_pool(&p, "draining")?;
    }
    ensure_eq!(check_pool(&p, "drained")?, 3000, "pool_free_mb drained");
    // Racing creates: 8 threads want a 256M slot in a 1024 MiB pool; exactly 4 win and
    // the others get ENOSPC.
    p.set_pool_mb("1024").ctx("pool_mb <- 1024")?;
    // An exact fit is admitted.
    let whole = ctx.create(&p, "vgpu_shim-1G")?;
    ensure_eq!(
        check_pool(&p, "exact fit")?,
        0,
        "pool_free_mb after an exact fit"
    );
    ctx.remove(&whole)?;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let t = p.mdev_type("vgpu_shim-256M");
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                t.create_new()
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut lost = 0;
    for h in handles {
        match h.join() {
            Ok(Ok(inst)) => won.push(inst),
            Ok(Err(e)) if e.errno() == Some(libc::ENOSPC) => lost += 1,
            Ok(Err(e)) => return Err(Fail(format!("racing create: {e}"))),
            Err(_) => return Err(Fail("racing create thread panicked".into())),
        }
    }
    ensure_eq!((won.len(), lost), (4, 4), "racing creates (won, ENOSPC)");
    ensure_eq!(
        check_pool(&p, "after racing creates")?,
        0,
        "pool_free_mb after racing creates"
    );
    ensure_eq!(mdev_count()?, 4, "mdev devices after racing creates");
    for inst in won {
        ctx.remove(&inst)?;
    }
    Ok(())
}

// 4 ---------------------------------------------------------------------------------------
fn vram_mmap(ctx: &mut Ctx) -> TestResult {
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
fn pread_mmap_agree(ctx: &mut Ctx) -> TestResult {
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
fn scrub(ctx: &mut Ctx) -> TestResult {
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
fn isolation(ctx: &mut Ctx) -> TestResult {
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

// 8 ---------------------------------------------------------------------------------------
fn config_checks(dev: &Device, quota_bytes: u64) -> TestResult {
    ensure_eq!(dev.config_read_u16(0x00)?, abi::VENDOR_ID, "vendor");
    ensure_eq!(dev.config_read_u16(0x02)?, abi::DEVICE_ID, "device");
    ensure_eq!(
        dev.config_read_u32(0x00)?,
        0x1111_1234,
        "vendor/device dword"
    );
    ensure_eq!(dev.config_read_u8(0x08)?, abi::REVISION, "revision");
    ensure_eq!(
        dev.config_read_u32(0x08)? >> 8,
        abi::CLASS_CODE,
        "class code"
    );
    ensure_eq!(dev.config_read_u8(0x0e)?, 0, "header type");
    ensure_eq!(
        dev.config_read_u16(0x2c)?,
        abi::SUBSYS_VENDOR_ID,
        "subsystem vendor"
    );
    ensure_eq!(dev.config_read_u16(0x2e)?, abi::SUBSYS_ID, "subsystem id");
    ensure!(
        dev.config_read_u16(0x06)? & 0x10 != 0,
        "status lacks CAP_LIST"
    );
    ensure_eq!(
        dev.config_read_u8(0x34)?,
        abi::MSI_CAP_OFFSET,
        "capability pointer"
    );
    ensure_eq!(dev.config_read_u8(0x3d)?, 1, "interrupt pin");
    // Read-only fields ignore writes.
    dev.config_write_u16(0x00, 0xffff)?;
    dev.config_write_u16(0x2c, 0)?;
    dev.config_write_u8(0x3d, 4)?;
    dev.config_write_u8(0x34, 0x80)?;
    ensure_eq!(
        dev.config_read_u32(0x00)?,
        0x1111_1234,
        "vendor/device after write"
    );
    ensure_eq!(
        dev.config_read_u16(0x2c)?,
        abi::SUBSYS_VENDOR_ID,
        "subsystem vendor after write"
    );
    ensure_eq!(dev.config_read_u8(0x3d)?, 1, "interrupt pin after write");
    ensure_eq!(
        dev.config_read_u8(0x34)?,
        abi::MSI_CAP_OFFSET,
        "capability pointer after write"
    );
    // Interrupt line is writable.
    dev.config_write_u8(0x3c, 0x0b)?;
    ensure_eq!(dev.config_read_u8(0x3c)?, 0x0b, "interrupt line");
    // Command register: reset 0, writable bits IO|MEMORY|MASTER|INTX_DISABLE.
    ensure_eq!(dev.config_read_u16(0x04)?, 0, "command at reset");
    dev.config_write_u16(0x04, 0xffff)?;
    ensure_eq!(
        dev.config_read_u16(0x04)?,
        0x0407,
        "command after writing 0xffff"
    );
    dev.config_write_u16(0x04, 0x0002)?;
    ensure_eq!(
        dev.config_read_u16(0x04)?,
        0x0002,
        "command after writing MEMORY"
    );
    dev.config_write_u16(0x04, 0)?;
    // BAR0/1: 64-bit prefetchable memory, size = quota.
    let mask = !(quota_bytes - 1);
    ensure_eq!(
        dev.config_size_bar(0)?,
        (mask as u32 & 0xffff_fff0) | 0xc,
        "BAR0 sizing"
    );
    ensure_eq!(dev.config_size_bar(1)?, (mask >> 32) as u32, "BAR1 sizing");
    ensure_eq!(
        dev.config_read_u32(0x10)? & 0xf,
        0xc,
        "BAR0 type bits after sizing"
    );
    // BAR2: 32-bit memory, 4 KiB.
    ensure_eq!(dev.config_size_bar(2)?, 0xffff_f000, "BAR2 sizing");
    // Address writes are stored aligned to the size.
    dev.config_write_u32(0x18, 0xe000_1234)?;
    ensure_eq!(dev.config_read_u32(0x18)?, 0xe000_1000, "BAR2 address");
    dev.config_write_u32(0x10, 0x1234_5678)?;
    ensure_eq!(
        dev.config_read_u32(0x10)?,
        (0x1234_5678 & mask as u32 & 0xffff_fff0) | 0xc,
        "BAR0 address"
    );
    dev.config_write_u32(0x14, 0x0000_0012)?;
    ensure_eq!(
        dev.config_read_u32(0x14)?,
        0x12 & (mask >> 32) as u32,
        "BAR1 address"
    );
    // BAR3-5 and ROM: read 0, writes ignored.
    for off in [0x1c, 0x20, 0x24, 0x30] {
        ensure_eq!(dev.config_read_u32(off)?, 0, "config {off:#x}");
        dev.config_write_u32(off, 0xffff_ffff)?;
        ensure_eq!(
            dev.config_read_u32(off)?,
            0,
            "config {off:#x} after writing all-ones"
        );
    }
    // Capability list: exactly MSI at 0x40.
    ensure_eq!(
        dev.config_capabilities()?,
        vec![(0x40u8, 0x05u8)],
        "capability list"
    );
    let ctl = dev.config_read_u16(0x42)?;
    ensure!(ctl & 0x80 != 0, "MSI control {ctl:#x}: not 64-bit");
    ensure_eq!(ctl & 0x0e, 0, "MSI multiple message capable (1 vector)");
    ensure_eq!(ctl & 1, 0, "MSI enable at reset");
    dev.config_write_u16(0x42, ctl | 1)?;
    ensure_eq!(dev.config_read_u16(0x42)? & 1, 1, "MSI enable writable");
    dev.config_write_u32(0x44, 0xfee0_0000)?;
    dev.config_write_u32(0x48, 0x0000_0001)?;
    dev.config_write_u16(0x4c, 0x4021)?;
    ensure_eq!(dev.config_read_u32(0x44)?, 0xfee0_0000, "MSI address lo");
    ensure_eq!(dev.config_read_u32(0x48)?, 1, "MSI address hi");
    ensure_eq!(dev.config_read_u16(0x4c)?, 0x4021, "MSI data");
    dev.config_write_u16(0x42, ctl & !1)?;
    ensure_eq!(dev.config_read_u16(0x42)? & 1, 0, "MSI disable");
    // Bad accesses.
    let cfg = region::CONFIG;
    let mut b8 = [0u8; 8];
    expect_io_errno(
        dev.pread(cfg, 0x01, &mut b8[..2]),
        &[libc::EINVAL],
        "2-byte read at 0x01",
    )?;
    expect_io_errno(
        dev.pread(cfg, 0x02, &mut b8[..4]),
        &[libc::EINVAL],
        "4-byte read at 0x02",
    )?;
    expect_io_errno(
        dev.pread(cfg, 0x00, &mut b8[..3]),
        &[libc::EINVAL],
        "3-byte read",
    )?;
    expect_io_errno(
        dev.pread(cfg, 0x00, &mut b8[..6]),
        &[libc::EINVAL],
        "6-byte read",
    )?;
    expect_io_errno(
        dev.pread(cfg, 0x02, &mut b8[..8]),
        &[libc::EINVAL],
        "8-byte read at 0x02",
    )?;
    expect_io_errno(
        dev.pread(cfg, 0xfc, &mut b8[..8]),
        &[libc::EINVAL],
        "8-byte read at 0xfc",
    )?;
    expect_io_errno(
        dev.pread(cfg, 0x100, &mut b8[..4]),
        &[libc::EINVAL],
        "read at 256",
    )?;
    expect_io_errno(
        dev.pread(cfg, 0xfff, &mut b8[..1]),
        &[libc::EINVAL],
        "read at 0xfff",
    )?;
    expect_io_errno(
        dev.pwrite(cfg, 0x05, &[0, 0]),
        &[libc::EINVAL],
        "2-byte write at 0x05",
    )?;
    expect_io_errno(
        dev.pwrite(cfg, 0x04, &[7, 0, 0]),
        &[libc::EINVAL],
        "3-byte write",
    )?;
    expect_io_errno(
        dev.pwrite(cfg, 0x100, &[0; 4]),
        &[libc::EINVAL],
        "write at 256",
    )?;
    ensure_eq!(
        dev.config_read_u16(0x04)?,
        0,
        "command after rejected writes"
    );
    // Last dword is readable; runs of aligned dwords (QEMU reads all 256 bytes in one
    // pread) read the same as dword accesses.
    dev.config_read_u32(0xfc).ctx("read 0xfc")?;
    let mut all = [0u8; 256];
    dev.read_region(cfg, 0, &mut all)
        .ctx("256-byte config read")?;
    for off in (0..256).step_by(4) {
        let d = dev.config_read_u32(off as u64)?;
        ensure_eq!(
            u32::from_le_bytes([all[off], all[off + 1], all[off + 2], all[off + 3]]),
            d,
            "bulk config read at {off:#x}"
        );
    }
    Ok(())
}

fn config_space(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    for ty in ["vgpu_shim-256M", "vgpu_shim-4G"] {
        let inst = ctx.create(&p, ty)?;
        let dev = inst.open().ctx("open")?;
        config_checks(&dev, quota(ty)? * MIB).map_err(|f| Fail(format!("{ty}: {}", f.0)))?;
    }
    Ok(())
}

// 9 ---------------------------------------------------------------------------------------
fn region_checks(dev: &Device, inst: &Instance, quota_mb: u64) -> TestResult {
    let q = quota_mb * MIB;
    let di = dev.query_info()?;
    ensure!(
        di.flags & VFIO_DEVICE_FLAGS_PCI != 0,
        "device flags {:#x} lack PCI",
        di.flags
    );
    ensure!(
        di.flags & VFIO_DEVICE_FLAGS_RESET != 0,
        "device flags {:#x} lack RESET",
        di.flags
    );
    ensure_eq!(di.num_regions, 10, "num_regions");
    ensure_eq!(di.num_irqs, 5, "num_irqs");
    let (r, w, m) = (
        VFIO_REGION_INFO_FLAG_READ,
        VFIO_REGION_INFO_FLAG_WRITE,
        VFIO_REGION_INFO_FLAG_MMAP,
    );
    let want: [(u32, u64, u32); 10] = [
        (0, q, r | w | m),
        (1, 0, 0),
        (2, abi::MMIO_SIZE, r | w),
        (3, 0, 0),
        (4, 0, 0),
        (5, 0, 0),
        (6, 0, 0),
        (7, abi::CONFIG_SIZE, r | w),
        (8, 0, 0),
        (
            9,
            abi::display_region_size(q),
            r | m | VFIO_REGION_INFO_FLAG_CAPS,
        ),
    ];
    for (idx, size, flags) in want {
        let ri = dev.region_info(idx).ctx(format!("region {idx} info"))?;
        ensure_eq!(ri.size, size, "region {idx} size");
        ensure_eq!(ri.flags, flags, "region {idx} flags");
        ensure_eq!(ri.offset, u64::from(idx) << 40, "region {idx} offset");
    }
    let disp = dev.region_info(abi::DISPLAY_REGION_INDEX)?;
    ensure_eq!(
        disp.type_cap(),
        Some((abi::DISPLAY_REGION_TYPE, abi::DISPLAY_REGION_SUBTYPE)),
        "display region type capability"
    );
    expect_errno(dev.region_info(10), &[libc::EINVAL], "region 10 info")?;
    // MMIO is not mmap-able.
    let r = dev.mmap_region_raw(region::BAR2, 0, PAGE, libc::PROT_READ);
    ensure!(r.is_err(), "mmap of BAR2 succeeded");
    let r = dev.mmap_region_raw(region::CONFIG, 0, PAGE, libc::PROT_READ);
    ensure!(r.is_err(), "mmap of config space succeeded");
    // Info block.
    let bar2 = region::BAR2;
    ensure_eq!(
        dev.read_u32(bar2, info::VGPU_ID)?,
        info::ID_VALUE,
        "VGPU_ID"
    );
    ensure_eq!(
        dev.read_u32(bar2, info::VGPU_VERSION)?,
        info::VERSION_VALUE,
        "VGPU_VERSION"
    );
    ensure_eq!(
        dev.read_u32(bar2, info::VRAM_SIZE_LO)?,
        q as u32,
        "VRAM_SIZE_LO"
    );
    ensure_eq!(
        dev.read_u32(bar2, info::VRAM_SIZE_HI)?,
        (q >> 32) as u32,
        "VRAM_SIZE_HI"
    );
    ensure_eq!(
        u64::from(dev.read_u32(bar2, info::VRAM_MB)?),
        quota_mb,
        "VRAM_MB"
    );
    ensure_eq!(
        u64::from(dev.read_u32(bar2, info::VRAM_USED_KB)?),
        inst.vram_used_kb()?,
        "VRAM_USED_KB"
    );
    ensure_eq!(
        u64::from(dev.read_u32(bar2, info::WEIGHT)?),
        inst.weight()?,
        "WEIGHT"
    );
    ensure_eq!(
        u64::from(dev.read_u32(bar2, info::CAP)?),
        inst.cap()?,
        "CAP"
    );
    ensure_eq!(dev.read_u32(bar2, info::PARENT_INDEX)?, 0, "PARENT_INDEX");
    inst.set_weight("7").ctx("set weight")?;
    inst.set_cap("50").ctx("set cap")?;
    ensure_eq!(
        dev.read_u32(bar2, info::WEIGHT)?,
        7,
        "WEIGHT after sysfs write"
    );
    ensure_eq!(dev.read_u32(bar2, info::CAP)?, 50, "CAP after sysfs write");
    dev.write_u32(bar2, info::VGPU_ID, 0).ctx("write VGPU_ID")?;
    dev.write_u32(bar2, info::VRAM_MB, 1).ctx("write VRAM_MB")?;
    ensure_eq!(
        dev.read_u32(bar2, info::VGPU_ID)?,
        info::ID_VALUE,
        "VGPU_ID after write"
    );
    ensure_eq!(
        u64::from(dev.read_u32(bar2, info::VRAM_MB)?),
        quota_mb,
        "VRAM_MB after write"
    );
    // VRAM_USED_KB follows allocation.
    dev.write_region(region::BAR0, 5 * PAGE, &[1])
        .ctx("touch VRAM")?;
    ensure_eq!(
        u64::from(dev.read_u32(bar2, info::VRAM_USED_KB)?),
        inst.vram_used_kb()?,
        "VRAM_USED_KB after touch"
    );
    ensure!(inst.vram_used_kb()? >= 4, "vram_used_kb did not grow");
    // DISPI, QEMU ext, EDID, VGA.
    ensure_eq!(
        dev.read_u16(bar2, dispi::offset(dispi::ID))?,
        dispi::ID_VALUE,
        "DISPI ID"
    );
    ensure_eq!(
        dev.read_u16(bar2, dispi::offset(dispi::VIDEO_MEMORY_64K))?,
        abi::video_memory_64k(q),
        "VIDEO_MEMORY_64K"
    );
    ensure_eq!(dev.read_u32(bar2, abi::QEXT_SIZE)?, 8, "QEMU ext size");
    ensure_eq!(
        dev.read_u32(bar2, abi::QEXT_ENDIAN)?,
        abi::QEXT_LITTLE_ENDIAN,
        "QEMU ext endianness"
    );
    ensure_eq!(dev.read_u32(bar2, 0x000)?, 0, "EDID");
    ensure_eq!(dev.read_u32(bar2, 0x3fc)?, 0, "EDID end");
    dev.write_u8(bar2, 0x400, 0x55).ctx("write VGA port")?;
    ensure_eq!(dev.read_u8(bar2, 0x400)?, 0, "VGA ioport");
    // Bad MMIO accesses.
    let mut b = [0u8; 8];
    expect_io_errno(
        dev.pread(bar2, 0x502, &mut b[..4]),
        &[libc::EINVAL],
        "unaligned 4-byte MMIO read",
    )?;
    expect_io_errno(
        dev.pread(bar2, 0x501, &mut b[..2]),
        &[libc::EINVAL],
        "unaligned 2-byte MMIO read",
    )?;
    expect_io_errno(
        dev.pread(bar2, 0x800, &mut b[..3]),
        &[libc::EINVAL],
        "3-byte MMIO read",
    )?;
    expect_io_errno(
        dev.pread(bar2, 0x800, &mut b[..6]),
        &[libc::EINVAL],
        "6-byte MMIO read",
    )?;
    expect_io_errno(
        dev.pread(bar2, 0x802, &mut b[..8]),
        &[libc::EINVAL],
        "8-byte MMIO read at 0x802",
    )?;
    expect_io_errno(
        dev.pread(bar2, abi::MMIO_SIZE - 4, &mut b[..8]),
        &[libc::EINVAL],
        "8-byte MMIO read across the end",
    )?;
    // A dword run reads the same as single dwords.
    dev.read_region(bar2, info::VGPU_ID, &mut b)
        .ctx("8-byte MMIO read")?;
    ensure_eq!(
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        info::ID_VALUE,
        "8-byte MMIO read, low dword"
    );
    ensure_eq!(
        u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        info::VERSION_VALUE,
        "8-byte MMIO read, high dword"
    );
    expect_io_errno(
        dev.pread(bar2, abi::MMIO_SIZE, &mut b[..4]),
        &[libc::EINVAL],
        "MMIO read at 4096",
    )?;
    expect_io_errno(
        dev.pwrite(bar2, abi::MMIO_SIZE, &[0; 2]),
        &[libc::EINVAL],
        "MMIO write at 4096",
    )?;
    // Zero-size regions: reads fail.
    for idx in [1, 3, 6, 8] {
        let r = dev.pread(idx, 0, &mut b[..4]);
        ensure!(
            matches!(r, Err(_) | Ok(0)),
            "read of empty region {idx} returned {r:?}"
        );
    }
    Ok(())
}

fn region_info(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    for ty in ["vgpu_shim-256M", "vgpu_shim-4G"] {
        let inst = ctx.create(&p, ty)?;
        let dev = inst.open().ctx("open")?;
        region_checks(&dev, &inst, quota(ty)?).map_err(|f| Fail(format!("{ty}: {}", f.0)))?;
    }
    Ok(())
}

// 10 --------------------------------------------------------------------------------------
fn expect_no_plane(dev: &Device, what: &str) -> TestResult {
    let pl = dev
        .query_gfx_plane(drm::PLANE_TYPE_PRIMARY)
        .ctx(format!("{what}: query"))?;
    ensure_eq!(pl.drm_format, 0, "{what}: drm_format");
    ensure_eq!(pl.size, 0, "{what}: size");
    Ok(())
}

fn check_plane(dev: &Device, vram: &vgpu_vfio::MappedRegion, m: &Mode, seed: u64) -> TestResult {
    let what = format!(
        "{}x{}x{} vw {} off {},{}",
        m.xres, m.yres, m.bpp, m.virt_width, m.x_off, m.y_off
    );
    // Position-dependent bytes all around the scanout, so a wrong start shows.
    let span = (m.start() + m.size() + 2 * PAGE).next_multiple_of(PAGE);
    vram.fill_u64(0, span, |o| pattern(seed, o))
        .ctx("fill VRAM")?;
    set_mode(dev, m)?;
    ensure_eq!(
        dispi_read(dev, dispi::XRES)?,
        m.xres,
        "{what}: XRES readback"
    );
    ensure_eq!(
        dispi_read(dev, dispi::YRES)?,
        m.yres,
        "{what}: YRES readback"
    );
    ensure_eq!(dispi_read(dev, dispi::BPP)?, m.bpp, "{what}: BPP readback");
    if m.virt_width != 0 {
        ensure_eq!(
            dispi_read(dev, dispi::VIRT_WIDTH)?,
            m.virt_width,
            "{what}: VIRT_WIDTH readback"
        );
    }
    let pl = dev
        .query_gfx_plane(drm::PLANE_TYPE_PRIMARY)
        .ctx(format!("{what}: query"))?;
    let fmt = drm::format_for_bpp(m.bpp).ok_or_else(|| Fail("test bug: bpp".into()))?;
    ensure_eq!(pl.drm_format, fmt, "{what}: drm_format");
    ensure_eq!(
        pl.drm_plane_type,
        drm::PLANE_TYPE_PRIMARY,
        "{what}: plane type"
    );
    ensure_eq!(pl.width, u32::from(m.xres), "{what}: width");
    ensure_eq!(pl.height, u32::from(m.yres), "{what}: height");
    ensure_eq!(u64::from(pl.stride), m.stride(), "{what}: stride");
    ensure_eq!(u64::from(pl.size), m.size(), "{what}: size");
    ensure_eq!(
        pl.region_index,
        abi::DISPLAY_REGION_INDEX,
        "{what}: region_index"
    );
    let size = m.size() as usize;
    let mut want = vec![0u8; size];
    vram.read_bytes(m.start(), &mut want).ctx("read scanout")?;
    let got = pread_all(dev, abi::DISPLAY_REGION_INDEX, 0, size)?;
    ensure_bytes(
        &got,
        &want,
        &format!("{what}: display region (pread) vs scanout"),
    )?;
    let dsize = dev.region_size(abi::DISPLAY_REGION_INDEX)?;
    let dmap = dev
        .mmap_region(abi::DISPLAY_REGION_INDEX, 0, dsize)
        .ctx("mmap display")?;
    let mut got2 = vec![0u8; size];
    dmap.read_bytes(0, &mut got2).ctx("read display map")?;
    ensure_bytes(
        &got2,
        &want,
        &format!("{what}: display region (mmap) vs scanout"),
    )?;
    // The region is a snapshot: changing VRAM does not change it until the next query.
    vram.write_u8(m.start(), !want[0]).ctx("poke scanout")?;
    ensure_eq!(
        dmap.read_u8(0)?,
        want[0],
        "{what}: display region changed before a new query"
    );
    dev.query_gfx_plane(drm::PLANE_TYPE_PRIMARY)
        .ctx("requery")?;
    ensure_eq!(
        dmap.read_u8(0)?,
        !want[0],
        "{what}: display region after a new query"
    );
    Ok(())
}

fn display_plane(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-256M")?;
    let dev = inst.open().ctx("open")?;
    expect_no_plane(&dev, "display off at start")?;
    dev.probe_gfx_plane(VFIO_GFX_PLANE_TYPE_REGION)
        .ctx("PROBE REGION")?;
    expect_io_errno(
        dev.probe_gfx_plane(VFIO_GFX_PLANE_TYPE_DMABUF),
        &[libc::EINVAL],
        "PROBE DMABUF",
    )?;
    expect_io_errno(
        dev.query_gfx_plane_raw(VFIO_GFX_PLANE_TYPE_DMABUF, drm::PLANE_TYPE_PRIMARY),
        &[libc::EINVAL],
        "query DMABUF plane",
    )?;
    // GETCAPS.
    dispi_write(&dev, dispi::ENABLE, dispi::GETCAPS)?;
    ensure_eq!(
        dispi_read(&dev, dispi::XRES)?,
        dispi::MAX_XRES,
        "GETCAPS XRES"
    );
    ensure_eq!(
        dispi_read(&dev, dispi::YRES)?,
        dispi::MAX_YRES,
        "GETCAPS YRES"
    );
    ensure_eq!(dispi_read(&dev, dispi::BPP)?, dispi::MAX_BPP, "GETCAPS BPP");
    dispi_write(&dev, dispi::ENABLE, 0)?;
    let vram = dev
        .mmap_region(region::BAR0, 0, 32 * MIB)
        .ctx("mmap VRAM")?;
    let modes = [
        Mode {
            xres: 640,
            yres: 480,
            bpp: 32,
            virt_width: 0,
            x_off: 0,
            y_off: 0,
        },
        Mode {
            xres: 800,
            yres: 600,
            bpp: 16,
            virt_width: 1024,
            x_off: 16,
            y_off: 8,
        },
        Mode {
            xres: 640,
            yres: 480,
            bpp: 24,
            virt_width: 0,
            x_off: 0,
            y_off: 0,
        },
        Mode {
            xres: 1024,
            yres: 768,
            bpp: 32,
            virt_width: 1280,
            x_off: 100,
            y_off: 50,
        },
    ];
    for (i, m) in modes.iter().enumerate() {
        check_plane(&dev, &vram, m, 100 + i as u64)?;
    }
    ensure_eq!(
        dev.query_gfx_plane(drm::PLANE_TYPE_CURSOR)?.drm_format,
        0,
        "cursor plane drm_format"
    );
    // QEMU's region display (hw/vfio/display.c) leaves drm_plane_type at 0
    // (OVERLAY) when it asks for the frame: that must still be the scanout.
    let last = modes.last().map(|m| u32::from(m.xres)).unwrap_or(0);
    ensure_eq!(
        dev.query_gfx_plane(drm::PLANE_TYPE_OVERLAY)?.width,
        last,
        "plane width when queried as QEMU does (drm_plane_type 0)"
    );
    dispi_write(&dev, dispi::ENABLE, 0)?;
    expect_no_plane(&dev, "display disabled")?;
    // 8 bpp is stored but not displayable.
    set_mode(
        &dev,
        &Mode {
            xres: 640,
            yres: 480,
            bpp: 8,
            virt_width: 0,
            x_off: 0,
            y_off: 0,
        },
    )?;
    ensure_eq!(dispi_read(&dev, dispi::BPP)?, 8, "BPP 8 stored");
    expect_no_plane(&dev, "8 bpp")?;
    // A plane larger than the display region (16 MiB) is not shown.
    set_mode(
        &dev,
        &Mode {
            xres: 2560,
            yres: 1600,
            bpp: 32,
            virt_width: 4096,
            x_off: 0,
            y_off: 0,
        },
    )?;
    expect_no_plane(&dev, "scanout larger than the display region")?;
    Ok(())
}

// 11 --------------------------------------------------------------------------------------
fn fired(e: &EventFd) -> bool {
    e.read().is_ok()
}

/// An invalid SET_IRQS request: (what, flags, index, start, count, payload).
type IrqCase = (&'static str, u32, u32, u32, u32, Vec<u8>);

/// Flags not checked (count-0 indexes).
const ANY_FLAGS: u32 = u32::MAX;

fn irqs(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-128M")?;
    let dev = inst.open().ctx("open")?;
    let want = [
        (irq::INTX, 1, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE),
        (irq::MSI, 1, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE),
        (irq::MSIX, 0, ANY_FLAGS),
        (irq::ERR, 0, ANY_FLAGS),
        (irq::REQ, 1, VFIO_IRQ_INFO_EVENTFD),
    ];
    for (idx, count, flags) in want {
        let ii = dev.irq_info(idx).ctx(format!("irq info {idx}"))?;
        ensure_eq!(ii.index, idx, "irq {idx} index");
        ensure_eq!(ii.count, count, "irq {idx} count");
        if flags != ANY_FLAGS {
            ensure_eq!(ii.flags, flags, "irq {idx} flags");
        }
    }
    expect_errno(dev.irq_info(5), &[libc::EINVAL], "irq info 5")?;
    for idx in [irq::INTX, irq::MSI, irq::REQ] {
        let e = EventFd::new(EFD_NONBLOCK).ctx("eventfd")?;
        dev.set_irq_eventfds(idx, 0, &[e.as_raw_fd()])
            .ctx(format!("set eventfd on {idx}"))?;
        ensure!(!fired(&e), "irq {idx}: eventfd fired on setup");
        dev.trigger_irq(idx, 0, 1).ctx(format!("trigger {idx}"))?;
        ensure!(
            fired(&e),
            "irq {idx}: DATA_NONE trigger did not signal the eventfd"
        );
        dev.trigger_irq_bool(idx, 0, &[true])
            .ctx(format!("bool trigger {idx}"))?;
        ensure!(fired(&e), "irq {idx}: DATA_BOOL true did not signal");
        dev.trigger_irq_bool(idx, 0, &[false])
            .ctx(format!("bool false {idx}"))?;
        ensure!(!fired(&e), "irq {idx}: DATA_BOOL false signalled");
        // Clear with fd -1, then with DATA_NONE count 0; a trigger then signals nothing.
        dev.set_irq_eventfds(idx, 0, &[-1])
            .ctx(format!("clear {idx} with -1"))?;
        let _ = dev.trigger_irq(idx, 0, 1);
        ensure!(!fired(&e), "irq {idx}: signalled after clearing with fd -1");
        dev.set_irq_eventfds(idx, 0, &[e.as_raw_fd()])
            .ctx("re-set")?;
        dev.disable_irq(idx).ctx(format!("disable {idx}"))?;
        let _ = dev.trigger_irq(idx, 0, 1);
        ensure!(!fired(&e), "irq {idx}: signalled after DATA_NONE count 0");
    }
    // INTx is MASKABLE: a trigger while masked stays pending and fires on unmask
    // (vfio-pci semantics; QEMU masks/unmasks INTx around EOI).
    let e = EventFd::new(EFD_NONBLOCK).ctx("eventfd")?;
    dev.set_irq_eventfds(irq::INTX, 0, &[e.as_raw_fd()])
        .ctx("set INTx eventfd")?;
    let none = VFIO_IRQ_SET_DATA_NONE;
    dev.set_irqs_raw(VFIO_IRQ_SET_ACTION_MASK | none, irq::INTX, 0, 1, &[])
        .ctx("mask INTx")?;
    dev.trigger_irq(irq::INTX, 0, 1)
        .ctx("trigger masked INTx")?;
    ensure!(!fired(&e), "masked INTx signalled");
    dev.set_irqs_raw(VFIO_IRQ_SET_ACTION_UNMASK | none, irq::INTX, 0, 1, &[])
        .ctx("unmask INTx")?;
    ensure!(fired(&e), "pending INTx not delivered on unmask");
    dev.set_irqs_raw(VFIO_IRQ_SET_ACTION_UNMASK | none, irq::INTX, 0, 1, &[])
        .ctx("unmask again")?;
    ensure!(!fired(&e), "second unmask delivered a second interrupt");
    dev.disable_irq(irq::INTX).ctx("disable INTx")?;
    // Invalid requests.
    let e = EventFd::new(EFD_NONBLOCK).ctx("eventfd")?;
    let fd = e.as_raw_fd().to_ne_bytes();
    let trig_efd = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD;
    let cases: Vec<IrqCase> = vec![
        (
            "eventfd on MSI-X (count 0)",
            trig_efd,
            irq::MSIX,
            0,
            1,
            fd.to_vec(),
        ),
        (
            "eventfd on ERR (count 0)",
            trig_efd,
            irq::ERR,
            0,
            1,
            fd.to_vec(),
        ),
        ("eventfd on index 5", trig_efd, 5, 0, 1, fd.to_vec()),
        ("MSI start 1", trig_efd, irq::MSI, 1, 1, fd.to_vec()),
        ("MSI count 2", trig_efd, irq::MSI, 0, 2, [fd, fd].concat()),
        (
            "MASK on MSI",
            VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE,
            irq::MSI,
            0,
            1,
            vec![],
        ),
        (
            "UNMASK on REQ",
            VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_NONE,
            irq::REQ,
            0,
            1,
            vec![],
        ),
        (
            "two data types",
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL,
            irq::MSI,
            0,
            1,
            vec![1],
        ),
        (
            "two actions",
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE,
            irq::MSI,
            0,
            1,
            vec![],
        ),
        ("eventfd payload missing", trig_efd, irq::MSI, 0, 1, vec![]),
        (
            "bool payload missing",
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL,
            irq::MSI,
            0,
            1,
            vec![],
        ),
    ];
    for (what, flags, idx, start, count, data) in cases {
        expect_io_errno(
            dev.set_irqs_raw(flags, idx, start, count, &data),
            &[libc::EINVAL],
            what,
        )?;
    }
    // Nothing stuck: MSI still works after the bad requests.
    dev.set_irq_eventfds(irq::MSI, 0, &[e.as_raw_fd()])
        .ctx("set MSI")?;
    dev.trigger_irq(irq::MSI, 0, 1).ctx("trigger MSI")?;
    ensure!(fired(&e), "MSI after invalid requests");
    dev.disable_irq(irq::MSI).ctx("disable MSI")?;
    Ok(())
}

// 12 --------------------------------------------------------------------------------------
/// Write each of `bad` to an attribute: every one must fail with EINVAL and leave the
/// value as it was (shared with the engine suite's scheduler attributes).
pub(crate) fn bad_writes<T: PartialEq + std::fmt::Debug + std::fmt::Display>(
    what: &str,
    write: &dyn Fn(&str) -> vgpu_sysfs::Result<()>,
    read: &dyn Fn() -> vgpu_sysfs::Result<T>,
    bad: &[&str],
) -> TestResult {
    let before = read().ctx(format!("read {what}"))?;
    let mut fails = Vec::new();
    for b in bad {
        let r = write(b);
        let verdict = if b.is_empty() {
            // write(2) of 0 bytes may never reach the driver; either way nothing changes.
            match r {
                Err(e) if e.errno() != Some(libc::EINVAL) => {
                    Err(Fail(format!("{what} <- \"\": {e}, want EINVAL")))
                }
                _ => Ok(()),
            }
        } else {
            expect_errno(r, &[libc::EINVAL], &format!("{what} <- {b:?}"))
        };
        if let Err(f) = verdict {
            fails.push(f.0);
        }
        let now = read().ctx(format!("read {what}"))?;
        if now != before {
            fails.push(format!("{what} changed to {now} by {b:?} (was {before})"));
            write(&before.to_string()).ctx(format!("restore {what}"))?;
        }
    }
    if fails.is_empty() {
        Ok(())
    } else {
        Err(Fail(fails.join("; ")))
    }
}

const HUGE: &str = "99999999999999999999999999";

/// Malformed values every numeric sysfs attribute must reject with EINVAL
/// (shared with the engine suite).
pub(crate) const COMMON_BAD: [&str; 15] = [
    "",
    "\n",
    "abc",
    "-1",
    "+5",
    "0x10",
    "1.5",
    "12abc",
    " 5",
    "5 ",
    "5\n\n",
    "5\0x",
    HUGE,
    "4294967296",
    "18446744073709551616",
];

fn sysfs_bad_input(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-256M")?;
    let mut pool_bad: Vec<&str> = COMMON_BAD.to_vec();
    pool_bad.extend(["0", "63", "1048577", "512\0x"]);
    ctx.soft(bad_writes(
        "pool_mb",
        &|s| p.set_pool_mb(s),
        &|| p.pool_mb(),
        &pool_bad,
    ));
    let mut wbad: Vec<&str> = COMMON_BAD.to_vec();
    wbad.extend(["0", "101"]);
    ctx.soft(bad_writes(
        "weight",
        &|s| inst.set_weight(s),
        &|| inst.weight(),
        &wbad,
    ));
    let mut cbad: Vec<&str> = COMMON_BAD.to_vec();
    cbad.extend(["101", "1000"]);
    ctx.soft(bad_writes(
        "cap",
        &|s| inst.set_cap(s),
        &|| inst.cap(),
        &cbad,
    ));
    // Below what is reserved: EBUSY.
    for v in ["64", "128", "255"] {
        expect_errno(
            p.set_pool_mb(v),
            &[libc::EBUSY],
            &format!("pool_mb <- {v} with 256 reserved"),
        )?;
        ensure_attr(p.pool_mb(), 1024, "pool_mb after EBUSY")?;
    }
    // Good values.
    p.set_pool_mb("256").ctx("pool_mb <- 256 (== reserved)")?;
    ensure_attr(p.pool_mb(), 256, "pool_mb")?;
    ensure_eq!(check_pool(&p, "pool 256")?, 0, "pool_free_mb at pool 256");
    p.set_pool_mb("2048\n").ctx("pool_mb <- 2048\\n")?;
    ensure_attr(p.pool_mb(), 2048, "pool_mb")?;
    ensure_eq!(
        check_pool(&p, "pool 2048")?,
        1792,
        "pool_free_mb at pool 2048"
    );
    ensure_eq!(
        p.mdev_type("vgpu_shim-256M").description_raw()?,
        "vram_mb=256, weight=1, max_instances=8",
        "description follows pool_mb"
    );
    p.set_pool_mb("1048576").ctx("pool_mb <- max")?;
    ensure_attr(p.pool_mb(), 1_048_576, "pool_mb max")?;
    check_pool(&p, "pool max")?;
    p.set_pool_mb("1024").ctx("pool_mb <- 1024")?;
    for (v, want) in [("100", 100), ("1", 1), ("50\n", 50)] {
        inst.set_weight(v).ctx(format!("weight <- {v:?}"))?;
        ensure_attr(inst.weight(), want, "weight")?;
    }
    for (v, want) in [("0", 0), ("100", 100), ("25\n", 25)] {
        inst.set_cap(v).ctx(format!("cap <- {v:?}"))?;
        ensure_attr(inst.cap(), want, "cap")?;
    }
    // With no instance, the minimum pool is accepted.
    ctx.remove(&inst)?;
    p.set_pool_mb("64")
        .ctx("pool_mb <- 64 with nothing reserved")?;
    ensure_eq!(check_pool(&p, "pool 64")?, 64, "pool_free_mb at pool 64");
    Ok(())
}

// 13 --------------------------------------------------------------------------------------
fn remove_while_open(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-128M")?;
    let dev = inst.open().ctx("open")?;
    let map = dev.mmap_region(region::BAR0, 0, 4 * PAGE).ctx("mmap")?;
    map.write_u64(PAGE, 42).ctx("touch")?;
    let req = EventFd::new(EFD_NONBLOCK).ctx("eventfd")?;
    dev.set_irq_eventfds(irq::REQ, 0, &[req.as_raw_fd()])
        .ctx("set REQ eventfd")?;
    let (tx, rx) = mpsc::channel();
    let i2 = inst.clone();
    std::thread::spawn(move || {
        let _ = tx.send(i2.remove());
    });
    let got_req = wait_for(Duration::from_secs(5), || req.read().is_ok());
    std::thread::sleep(Duration::from_millis(500));
    let early = rx.try_recv();
    ensure!(got_req, "REQ eventfd not signalled within 5 s of remove");
    ensure!(
        early.is_err(),
        "remove completed while the device was open: {early:?}"
    );
    // (The /sys/bus/mdev/devices link goes at once: device_del unlinks it before the
    // driver's remove blocks.) The quota stays reserved while the device is held.
    ensure_attr(
        p.pool_free_mb(),
        1024 - 128,
        "pool_free_mb while removal waits",
    )?;
    ensure_attr(p.vram_pages(), 1, "vram_pages while removal waits")?;
    // Close the fd; the mapping still holds the device.
    drop(dev);
    std::thread::sleep(Duration::from_millis(300));
    let mid = rx.try_recv();
    ensure!(
        mid.is_err(),
        "remove completed while an mmap was still alive: {mid:?}"
    );
    ensure_eq!(
        map.read_u64(PAGE)?,
        42,
        "mapping still works while removal waits"
    );
    drop(map);
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(r) => r.ctx("remove")?,
        Err(_) => {
            return Err(Fail(
                "HANG: remove did not complete after close and munmap".into(),
            ))
        }
    }
    ensure!(
        !inst.exists(),
        "instance still present after remove returned"
    );
    ensure_eq!(
        check_pool(&p, "after remove")?,
        1024,
        "pool_free_mb after remove"
    );
    ensure_attr(p.vram_pages(), 0, "vram_pages after remove")?;
    Ok(())
}

// 14 --------------------------------------------------------------------------------------
fn rmmod_while_busy(ctx: &mut Ctx) -> TestResult {
    ctx.load("")?;
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-128M")?;
    let busy = [libc::EBUSY, libc::EAGAIN];
    ctx.note(format!(
        "refcnt with one instance: {:?}",
        sys::module_refcnt(sys::MODULE)
    ));
    expect_io_errno(ctx.unload(), &busy, "delete_module with an instance")?;
    ensure!(
        sys::module_loaded(sys::MODULE),
        "module gone after failed delete_module"
    );
    ensure!(
        inst.exists() && p.exists(),
        "instance or parent gone after failed delete_module"
    );
    {
        let dev = inst.open().ctx("open after failed rmmod")?;
        ensure_eq!(
            dev.config_read_u16(0)?,
            abi::VENDOR_ID,
            "vendor id after failed rmmod"
        );
        let map = dev.mmap_region(region::BAR0, 0, 16 * PAGE).ctx("mmap")?;
        for i in 0..16 {
            map.write_u64(i * PAGE, i + 1)?;
        }
        expect_io_errno(ctx.unload(), &busy, "delete_module with the device open")?;
        ensure_eq!(map.read_u64(5 * PAGE)?, 6, "VRAM after failed rmmod");
        ensure_attr(inst.vram_used_kb(), 64, "vram_used_kb")?;
    }
    // A second instance, never opened.
    let inst2 = ctx.create(&p, "vgpu_shim-256M")?;
    expect_io_errno(ctx.unload(), &busy, "delete_module with two instances")?;
    ctx.remove(&inst)?;
    expect_io_errno(ctx.unload(), &busy, "delete_module with one instance left")?;
    ctx.remove(&inst2)?;
    let mut kmsg = sys::Kmsg::open_at_end().ctx("open /dev/kmsg")?;
    ctx.unload().ctx("delete_module with no instances")?;
    ensure!(!sys::module_loaded(sys::MODULE), "module still loaded");
    let want = "vgpu_shim: unloaded, 0 pages outstanding";
    let mut lines = Vec::new();
    let found = wait_for(Duration::from_secs(2), || {
        lines.extend(kmsg.drain());
        lines.iter().any(|l| l.contains(want))
    });
    ensure!(found, "kmsg lacks {want:?}; got {lines:?}");
    Ok(())
}

// 15 --------------------------------------------------------------------------------------
fn multi_parent(ctx: &mut Ctx) -> TestResult {
    let names: Vec<String> = Parent::all_vgpu()?
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    ensure_eq!(
        names,
        vec!["vgpu_shim0", "vgpu_shim1", "vgpu_shim2"],
        "parents"
    );
    let ps = [ctx.parent(0)?, ctx.parent(1)?, ctx.parent(2)?];
    for p in &ps {
        check_types(p, 1024)?;
    }
    ps[1].set_pool_mb("2048").ctx("parent 1 pool_mb")?;
    ensure_attr(
        ps[0].pool_mb(),
        1024,
        "parent 0 pool after changing parent 1",
    )?;
    ensure_attr(
        ps[2].pool_mb(),
        1024,
        "parent 2 pool after changing parent 1",
    )?;
    ensure_eq!(
        ps[1].mdev_type("vgpu_shim-1G").description_raw()?,
        "vram_mb=1024, weight=4, max_instances=2",
        "parent 1 description"
    );
    ensure_eq!(
        ps[0].mdev_type("vgpu_shim-1G").description_raw()?,
        "vram_mb=1024, weight=4, max_instances=1",
        "parent 0 description"
    );
    // Fill parent 0.
    let mut on0 = Vec::new();
    for _ in 0..4 {
        on0.push(ctx.create(&ps[0], "vgpu_shim-256M")?);
    }
    ensure_eq!(check_pool(&ps[0], "parent 0 full")?, 0, "parent 0 free");
    ensure_eq!(
        check_pool(&ps[1], "parent 1 untouched")?,
        2048,
        "parent 1 free"
    );
    ensure_eq!(
        check_pool(&ps[2], "parent 2 untouched")?,
        1024,
        "parent 2 free"
    );
    expect_errno(
        ctx.try_create(&ps[0].mdev_type("vgpu_shim-128M")),
        &[libc::ENOSPC],
        "create on full parent 0",
    )?;
    let b = ctx.create(&ps[1], "vgpu_shim-1G")?;
    let c = ctx.create(&ps[2], "vgpu_shim-128M")?;
    ensure_eq!(b.parent_name()?, "vgpu_shim1", "b's parent");
    ensure_eq!(c.parent_name()?, "vgpu_shim2", "c's parent");
    ensure_eq!(check_pool(&ps[1], "parent 1")?, 1024, "parent 1 free");
    ensure_eq!(check_pool(&ps[2], "parent 2")?, 896, "parent 2 free");
    ensure_eq!(
        check_pool(&ps[0], "parent 0 still full")?,
        0,
        "parent 0 free"
    );
    // Isolation across parents, and per-parent page accounting.
    let da = on0[0].open().ctx("open a")?;
    let db = b.open().ctx("open b")?;
    let dc = c.open().ctx("open c")?;
    for (i, d) in [&da, &db, &dc].into_iter().enumerate() {
        ensure_eq!(
            d.read_u32(region::BAR2, info::PARENT_INDEX)?,
            [0, 1, 2][i],
            "PARENT_INDEX of instance {i}"
        );
    }
    let ma = da.mmap_region(region::BAR0, 0, 4 * MIB)?;
    let mb = db.mmap_region(region::BAR0, 0, 4 * MIB)?;
    ma.fill_u64(0, 4 * MIB, |o| pattern(0x15A, o))?;
    mb.fill_u64(0, 2 * MIB, |o| pattern(0x15B, o))?;
    ensure!(
        ma.verify_u64(0, 4 * MIB, |o| pattern(0x15A, o))?.is_none(),
        "a's data"
    );
    ensure!(
        mb.verify_u64(0, 2 * MIB, |o| pattern(0x15B, o))?.is_none(),
        "b's data"
    );
    ensure!(
        mb.verify_u64(2 * MIB, 2 * MIB, |_| 0)?.is_none(),
        "b's unwritten half"
    );
    let mut v = [0u8; 8];
    dc.read_region(region::BAR0, 0, &mut v)?;
    ensure_eq!(v, [0u8; 8], "c reads zero");
    ensure_attr(ps[0].vram_pages(), 1024, "parent 0 vram_pages")?;
    ensure_attr(ps[1].vram_pages(), 1024, "parent 1 vram_pages")?;
    ensure_attr(ps[2].vram_pages(), 1, "parent 2 vram_pages")?;
    // (Closing a device frees its pages: a stays open to show b's removal leaves
    // parent 0 alone.)
    drop((mb, db, dc));
    ctx.remove(&b)?;
    ensure_eq!(
        check_pool(&ps[1], "parent 1 after remove")?,
        2048,
        "parent 1 free"
    );
    ensure_attr(ps[1].vram_pages(), 0, "parent 1 vram_pages after remove")?;
    ensure_attr(
        ps[0].vram_pages(),
        1024,
        "parent 0 vram_pages after removing b",
    )?;
    drop((ma, da));
    ensure_attr(ps[0].vram_pages(), 0, "parent 0 vram_pages after closing a")?;
    Ok(())
}

// 16 --------------------------------------------------------------------------------------
fn reset(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-256M")?;
    let dev = inst.open().ctx("open")?;
    let m = Mode {
        xres: 640,
        yres: 480,
        bpp: 32,
        virt_width: 800,
        x_off: 8,
        y_off: 4,
    };
    set_mode(&dev, &m)?;
    dev.config_write_u16(0x04, 0x0007)?;
    let ctl = dev.config_read_u16(0x42)?;
    dev.config_write_u16(0x42, ctl | 1)?;
    let map = dev.mmap_region(region::BAR0, 0, 4 * MIB)?;
    map.fill_u64(0, 4 * MIB, |o| pattern(16, o))?;
    ensure!(
        dev.query_gfx_plane(drm::PLANE_TYPE_PRIMARY)?.drm_format != 0,
        "mode not shown before reset"
    );
    let used = inst.vram_used_kb()?;
    dev.reset().ctx("VFIO_DEVICE_RESET")?;
    for (idx, name) in [
        (dispi::XRES, "XRES"),
        (dispi::YRES, "YRES"),
        (dispi::BPP, "BPP"),
        (dispi::ENABLE, "ENABLE"),
        (dispi::BANK, "BANK"),
        (dispi::VIRT_WIDTH, "VIRT_WIDTH"),
        (dispi::VIRT_HEIGHT, "VIRT_HEIGHT"),
        (dispi::X_OFFSET, "X_OFFSET"),
        (dispi::Y_OFFSET, "Y_OFFSET"),
    ] {
        ensure_eq!(dispi_read(&dev, idx)?, 0, "DISPI {name} after reset");
    }
    ensure_eq!(
        dispi_read(&dev, dispi::ID)?,
        dispi::ID_VALUE,
        "DISPI ID after reset"
    );
    ensure_eq!(
        dispi_read(&dev, dispi::VIDEO_MEMORY_64K)?,
        4096,
        "VIDEO_MEMORY_64K after reset"
    );
    expect_no_plane(&dev, "after reset")?;
    ensure_eq!(dev.config_read_u16(0x04)?, 0, "command after reset");
    ensure_eq!(dev.config_read_u16(0x42)? & 1, 0, "MSI enable after reset");
    ensure_eq!(
        dev.config_read_u16(0)?,
        abi::VENDOR_ID,
        "vendor after reset"
    );
    if let Some(x) = map.verify_u64(0, 4 * MIB, |o| pattern(16, o))? {
        return Err(Fail(format!("VRAM changed by reset: {x:?}")));
    }
    ensure_attr(inst.vram_used_kb(), used, "vram_used_kb after reset")?;
    let mut v = [0u8; 8];
    dev.read_region(region::BAR0, 8, &mut v)?;
    ensure_eq!(
        u64::from_le_bytes(v),
        pattern(16, 8),
        "VRAM via pread after reset"
    );
    // The mode can be set again after reset.
    set_mode(&dev, &m)?;
    ensure!(
        dev.query_gfx_plane(drm::PLANE_TYPE_PRIMARY)?.drm_format != 0,
        "mode after reset"
    );
    Ok(())
}

// 17 --------------------------------------------------------------------------------------
/// rust-vmm's vfio-ioctls can open an mdev (emulated IOMMU group, type1v2) on this kernel.
fn vfio_ioctls_compat(ctx: &mut Ctx) -> TestResult {
    use std::sync::Arc;
    use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};
    let p = ctx.parent(0)?;
    let inst = ctx.create(&p, "vgpu_shim-128M")?;
    {
        let container = Arc::new(VfioContainer::new(None).ctx("VfioContainer::new")?);
        let ops: Arc<dyn VfioOps> = container;
        let dev = VfioDevice::new(inst.path(), ops, false).ctx("VfioDevice::new")?;
        ensure_eq!(
            dev.get_region_size(0),
            128 * MIB,
            "vfio-ioctls region 0 size"
        );
        ensure_eq!(dev.get_region_size(7), 256, "vfio-ioctls config size");
        ensure_eq!(
            dev.get_irq_info(irq::MSI).map(|i| i.count),
            Some(1),
            "vfio-ioctls MSI count"
        );
        let mut b = [0u8; 2];
        dev.region_read(7, &mut b, 0);
        ensure_eq!(
            u16::from_le_bytes(b),
            abi::VENDOR_ID,
            "vfio-ioctls config read"
        );
        // Dropped here while the instance is idle (its Drop re-reads sysfs).
    }
    ctx.remove(&inst)?;
    Ok(())
}
