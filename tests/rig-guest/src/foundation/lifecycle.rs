//! Lifecycle: remove while open, rmmod while busy, several parents, reset, and
//! rust-vmm's vfio-ioctls.

use super::*;

// 13 --------------------------------------------------------------------------------------
pub(super) fn remove_while_open(ctx: &mut Ctx) -> TestResult {
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
pub(super) fn rmmod_while_busy(ctx: &mut Ctx) -> TestResult {
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
pub(super) fn multi_parent(ctx: &mut Ctx) -> TestResult {
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
pub(super) fn reset(ctx: &mut Ctx) -> TestResult {
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
pub(super) fn vfio_ioctls_compat(ctx: &mut Ctx) -> TestResult {
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
