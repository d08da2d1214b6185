//! The emulated PCI device: config space and the VFIO regions.

use super::*;

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

pub(super) fn config_space(ctx: &mut Ctx) -> TestResult {
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

pub(super) fn region_info(ctx: &mut Ctx) -> TestResult {
    let p = ctx.parent(0)?;
    for ty in ["vgpu_shim-256M", "vgpu_shim-4G"] {
        let inst = ctx.create(&p, ty)?;
        let dev = inst.open().ctx("open")?;
        region_checks(&dev, &inst, quota(ty)?).map_err(|f| Fail(format!("{ty}: {}", f.0)))?;
    }
    Ok(())
}
