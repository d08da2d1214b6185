//! The display: QUERY_GFX_PLANE and GET_GFX_DMABUF.

use super::*;

// 10 --------------------------------------------------------------------------------------
pub(super) fn expect_no_plane(dev: &Device, what: &str) -> TestResult {
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

pub(super) fn display_plane(ctx: &mut Ctx) -> TestResult {
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
