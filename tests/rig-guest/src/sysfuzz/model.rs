//! What the ABI (docs/device-abi.md) and the VFIO core say a request must do, as pure
//! functions the fuzzer checks every outcome against. Only what no concurrent operation
//! can change is predicted: errnos of malformed requests, sizes of transfers, read-only
//! bits of config space and registers.

use vgpu_vfio::abi::{self, dispi, info};
use vgpu_vfio::REGION_OFFSET_SHIFT;

/// Largest transfer of one read/write syscall (MAX_RW_COUNT).
pub const MAX_RW: u64 = 0x7fff_f000;
/// The user address limit with 4-level paging (TASK_SIZE_MAX).
pub const TASK_LIMIT: u64 = (1 << 47) - 4096;

/// Config space and BAR2: one naturally aligned 1, 2 or 4 byte access, or a run of
/// aligned dwords, inside the region (vgpu_reg_access_ok()).
pub fn reg_access_ok(off: u64, count: u64, size: u64) -> bool {
    let shape = match count {
        1 | 2 | 4 => off.is_multiple_of(count),
        _ => count != 0 && count.is_multiple_of(4) && off.is_multiple_of(4),
    };
    shape && off < size && count <= size - off
}

/// What a pread/pwrite should return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RwWant {
    /// Exactly this many bytes.
    Exact(u64),
    /// Up to the end of the user buffer (`cap` bytes, then the guard page): `cap` give
    /// or take a copy granule, or EFAULT if `cap` is 0.
    Short { cap: u64 },
    /// This errno.
    Err(i32),
}

/// A pread/pwrite request.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub write: bool,
    pub index: u32,
    pub off: u64,
    pub count: u64,
    /// User buffer address.
    pub buf: u64,
    /// Bytes of the user buffer before it faults.
    pub cap: u64,
    pub vram: u64,
    pub disp: u64,
}

pub fn rw_want(a: &Access) -> RwWant {
    let pos = (u64::from(a.index) << REGION_OFFSET_SHIFT) | a.off;
    // ksys_pread64 / vfs_read / rw_verify_area, in that order.
    if (pos as i64) < 0 {
        return RwWant::Err(libc::EINVAL);
    }
    if a.count > TASK_LIMIT || a.buf > TASK_LIMIT - a.count {
        return RwWant::Err(libc::EFAULT);
    }
    if (pos.wrapping_add(a.count) as i64) < 0 {
        return RwWant::Err(libc::EINVAL);
    }
    let count = a.count.min(MAX_RW);
    if count == 0 {
        return RwWant::Exact(0);
    }
    let size = match a.index {
        0 => a.vram,
        9 if !a.write => a.disp,
        2 | 7 => {
            let size = if a.index == 2 {
                abi::MMIO_SIZE
            } else {
                abi::CONFIG_SIZE
            };
            return if !reg_access_ok(a.off, count, size) {
                RwWant::Err(libc::EINVAL)
            } else if count <= a.cap {
                RwWant::Exact(count)
            } else if a.cap < 4 {
                RwWant::Err(libc::EFAULT)
            } else {
                RwWant::Short { cap: a.cap & !3 }
            };
        }
        _ => return RwWant::Err(libc::EINVAL),
    };
    if a.off >= size {
        return RwWant::Err(libc::EINVAL);
    }
    let n = count.min(size - a.off);
    if n <= a.cap {
        RwWant::Exact(n)
    } else {
        RwWant::Short { cap: a.cap }
    }
}

/// VFIO_DEVICE_GET_REGION_INFO: errno (0 for success) and, on success, the argsz and
/// cap_offset the kernel writes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfoWant {
    pub err: i32,
    pub argsz: u32,
    pub cap_offset: u32,
}

pub fn region_info_want(bufsz: usize, argsz: u32, index: u32) -> RegionInfoWant {
    let err = |e| RegionInfoWant {
        err: e,
        argsz,
        cap_offset: 0,
    };
    if bufsz < 32 {
        return err(libc::EFAULT);
    }
    if argsz < 32 || index >= 10 {
        return err(libc::EINVAL);
    }
    if index != abi::DISPLAY_REGION_INDEX {
        return err(0);
    }
    // The type capability: 16 bytes after the 32-byte header.
    if argsz < 48 {
        RegionInfoWant {
            err: 0,
            argsz: 48,
            cap_offset: 0,
        }
    } else if bufsz < 48 {
        err(libc::EFAULT)
    } else {
        RegionInfoWant {
            err: 0,
            argsz,
            cap_offset: 32,
        }
    }
}

/// The eventfd a SET_IRQS request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    /// An open eventfd.
    Valid,
    /// -1: clear.
    Clear,
    /// Another negative number.
    Negative,
    /// A number no file has.
    Huge,
    /// An open fd that is not an eventfd.
    NotEventfd,
    /// A just-closed eventfd's number (another thread may reuse it meanwhile).
    Closed,
}

/// A VFIO_DEVICE_SET_IRQS request.
#[derive(Clone, Copy, Debug)]
pub struct IrqSet {
    /// Bytes of the request in user memory (then a guard page).
    pub bufsz: usize,
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
    pub fd: FdKind,
}

/// The errnos SET_IRQS may return (0: success): vfio_set_irqs_validate_and_prepare(),
/// then vgpu_ioctl_set_irqs() (docs/device-abi.md "Interrupts").
pub fn set_irqs_want(r: &IrqSet) -> Vec<i32> {
    const MINSZ: u32 = 20;
    let one = |e: i32| vec![e];
    if r.bufsz < MINSZ as usize {
        return one(libc::EFAULT);
    }
    let num: u32 = match r.index {
        0 | 1 | 4 => 1,
        _ => 0,
    };
    if r.argsz < MINSZ || r.index >= 5 || r.count >= u32::MAX - r.start || r.flags & !0x3f != 0 {
        return one(libc::EINVAL);
    }
    if r.start >= num || r.start + r.count > num {
        return one(libc::EINVAL);
    }
    let dtype = r.flags & 0x7;
    let size: u32 = match dtype {
        1 => 0,
        2 => 1,
        4 => 4,
        _ => return one(libc::EINVAL),
    };
    let data = r.count * size;
    if size != 0 && r.argsz - MINSZ < data {
        return one(libc::EINVAL);
    }
    if data != 0 && r.bufsz < (MINSZ + data) as usize {
        return one(libc::EFAULT);
    }
    match r.flags & 0x38 {
        0x20 => match dtype {
            1 => one(0),
            2 => one(if r.count != 1 { libc::EINVAL } else { 0 }),
            _ => {
                if r.count != 1 {
                    return one(libc::EINVAL);
                }
                match r.fd {
                    FdKind::Clear => one(0),
                    FdKind::Negative => one(libc::EINVAL),
                    FdKind::Valid => one(0),
                    FdKind::Huge => one(libc::EBADF),
                    FdKind::NotEventfd => one(libc::EINVAL),
                    FdKind::Closed => vec![libc::EBADF, libc::EINVAL, 0],
                }
            }
        },
        0x08 | 0x10 => {
            if r.index != 0 || r.count != 1 || dtype == 4 {
                one(libc::EINVAL)
            } else {
                one(0)
            }
        }
        _ => one(libc::EINVAL),
    }
}

/// The errnos VFIO_DEVICE_IOEVENTFD may return (0: success), as vgpu_ioeventfd.c
/// (docs/device-abi.md "ioeventfd"): the header, flags and fd checks of vfio-pci, then
/// DOORBELL only, then the lookup (EEXIST, ENODEV for a removal) and the limit (ENOSPC)
/// before the eventfd is looked at. Which of those depends on what other threads
/// registered, so each is allowed where it can happen.
pub fn ioeventfd_want(bufsz: usize, argsz: u32, flags: u32, offset: u64, fd: FdKind) -> Vec<i32> {
    const MINSZ: u32 = 28;
    let one = |e: i32| vec![e];
    if bufsz < MINSZ as usize {
        return one(libc::EFAULT);
    }
    if argsz < MINSZ || flags & !0xf != 0 {
        return one(libc::EINVAL);
    }
    let count = u64::from(flags & 0xf);
    if count.count_ones() != 1 || fd == FdKind::Negative {
        return one(libc::EINVAL);
    }
    let pos = offset & ((1 << vgpu_vfio::REGION_OFFSET_SHIFT) - 1);
    let db = vgpu_vfio::abi::engine::DOORBELL;
    let at_doorbell = offset >> vgpu_vfio::REGION_OFFSET_SHIFT == 2
        && count <= 4
        && pos.is_multiple_of(count)
        && pos >= db
        && pos + count <= db + 4;
    if !at_doorbell {
        return one(libc::EINVAL);
    }
    match fd {
        FdKind::Clear => vec![0, libc::ENODEV],
        FdKind::Valid => vec![0, libc::EEXIST, libc::ENOSPC],
        FdKind::Huge => vec![libc::EBADF, libc::EEXIST, libc::ENOSPC],
        FdKind::NotEventfd => vec![libc::EINVAL, libc::EEXIST, libc::ENOSPC],
        FdKind::Closed => vec![0, libc::EBADF, libc::EINVAL, libc::EEXIST, libc::ENOSPC],
        FdKind::Negative => one(libc::EINVAL),
    }
}

/// Config dword `reg`: (writable bits, value at reset) as vgpu_cfg.c sets them up.
fn cfg_dword(reg: usize, vram: u64) -> (u32, u32) {
    let bar0_mask = !(vram - 1);
    match reg {
        0x00 => (0, 0x1111_1234),
        0x04 => (0x0407, 0x0010_0000),
        0x08 => (0, 0x0380_0001),
        0x10 => ((bar0_mask as u32) & !0xf, 0xc),
        0x14 => ((bar0_mask >> 32) as u32, 0),
        0x18 => (!0xfff, 0),
        0x2c => (0, 0x5647_1234),
        0x34 => (0, 0x40),
        0x3c => (0xff, 0x0100),
        0x40 => (1 << 16, 0x0080_0005),
        0x44 => (0xffff_fffc, 0),
        0x48 => (0xffff_ffff, 0),
        0x4c => (0xffff, 0),
        _ => (0, 0),
    }
}

/// Config byte `off`: (mask of its read-only bits, their value), None outside the 256.
pub fn cfg_fixed(off: usize, vram: u64) -> Option<(u8, u8)> {
    if off >= 256 {
        return None;
    }
    let (wmask, init) = cfg_dword(off & !3, vram);
    let sh = 8 * (off & 3);
    let ro = !(wmask >> sh) as u8;
    Some((ro, (init >> sh) as u8 & ro))
}

/// Check a dword read from BAR2 at 4-byte aligned `reg`.
pub fn mmio_check(reg: u64, v: u32, vram: u64, parent: u32) -> Result<(), String> {
    use vgpu_vfio::abi::engine as e;
    let bpp_ok = |b: u32| matches!(b, 0 | 8 | 15 | 16 | 24 | 32);
    let want = |w: u32| {
        if v == w {
            Ok(())
        } else {
            Err(format!("{v:#x}, want {w:#x}"))
        }
    };
    let within = |max: u32| {
        if v <= max {
            Ok(())
        } else {
            Err(format!("{v:#x} above {max:#x}"))
        }
    };
    match reg {
        0x500 => want(u32::from(dispi::ID_VALUE) | (v & 0xffff_0000)),
        0x504 if !bpp_ok(v >> 16) => Err(format!("BPP {}", v >> 16)),
        0x514 => want(u32::from(abi::video_memory_64k(vram))),
        0x504..=0x510 => Ok(()),
        0x600 => want(8),
        0x604 => want(abi::QEXT_LITTLE_ENDIAN),
        info::VGPU_ID => want(info::ID_VALUE),
        info::VGPU_VERSION => want(info::VERSION_VALUE),
        info::VRAM_SIZE_LO => want(vram as u32),
        info::VRAM_SIZE_HI => want((vram >> 32) as u32),
        info::VRAM_MB => want((vram >> 20) as u32),
        info::VRAM_USED_KB => {
            if v.is_multiple_of(4) && u64::from(v) <= vram / 1024 {
                Ok(())
            } else {
                Err(format!("VRAM_USED_KB {v}"))
            }
        }
        info::WEIGHT if !(1..=100).contains(&v) => Err(format!("WEIGHT {v}")),
        info::WEIGHT => Ok(()),
        info::CAP => within(100),
        info::PARENT_INDEX => want(parent),
        e::STATUS => within(0xf),
        e::ERROR => within(8),
        e::IRQ_STATUS | e::IRQ_MASK => within(7),
        e::RING_CTL => within(1),
        e::RING_HEAD | e::RING_TAIL | e::ERROR_HEAD => within((1 << 20) - 64),
        e::DOORBELL | e::ENGINE_RESET => want(0),
        e::IRQ_EDGE => within(7),
        // TAIL_SHADOW_LO/HI: any offset (a bad one is refused ENABLE, not stored)
        0x900..=0x944 => Ok(()),
        _ => want(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: u64 = 128 << 20;

    fn acc(index: u32, off: u64, count: u64, cap: u64) -> Access {
        Access {
            write: false,
            index,
            off,
            count,
            buf: 0x7f00_0000_0000,
            cap,
            vram: V,
            disp: 16 << 20,
        }
    }

    #[test]
    fn reg_access_rules() {
        assert!(reg_access_ok(0, 4, 256));
        assert!(reg_access_ok(2, 2, 256));
        assert!(!reg_access_ok(1, 2, 256));
        assert!(reg_access_ok(0, 256, 256));
        assert!(!reg_access_ok(4, 256, 256));
        assert!(!reg_access_ok(0, 3, 256));
        assert!(!reg_access_ok(256, 1, 256));
        assert!(reg_access_ok(252, 4, 256));
        assert!(!reg_access_ok(0, 0, 256));
    }

    #[test]
    fn rw_rules() {
        assert_eq!(rw_want(&acc(0, 0, 4096, 4096)), RwWant::Exact(4096));
        assert_eq!(rw_want(&acc(0, V - 10, 4096, 4096)), RwWant::Exact(10));
        assert_eq!(rw_want(&acc(0, V, 1, 1)), RwWant::Err(libc::EINVAL));
        assert_eq!(
            rw_want(&acc(0, 0, 1 << 31, 1 << 20)),
            RwWant::Short { cap: 1 << 20 }
        );
        assert_eq!(rw_want(&acc(0, 0, 0, 0)), RwWant::Exact(0));
        assert_eq!(rw_want(&acc(12, 0, 0, 0)), RwWant::Exact(0));
        assert_eq!(rw_want(&acc(12, 0, 1, 1)), RwWant::Err(libc::EINVAL));
        assert_eq!(rw_want(&acc(1 << 23, 0, 1, 1)), RwWant::Err(libc::EINVAL));
        assert_eq!(rw_want(&acc(7, 0, 256, 256)), RwWant::Exact(256));
        assert_eq!(rw_want(&acc(7, 1, 4, 4)), RwWant::Err(libc::EINVAL));
        assert_eq!(rw_want(&acc(9, 0, 1, 1)), RwWant::Exact(1));
        let mut w = acc(9, 0, 1, 1);
        w.write = true;
        assert_eq!(rw_want(&w), RwWant::Err(libc::EINVAL));
        // pos + count past 2^63.
        assert_eq!(
            rw_want(&acc((1 << 23) - 1, (1 << 40) - 1, 1 << 33, 1 << 20)),
            RwWant::Err(libc::EINVAL)
        );
    }

    #[test]
    fn region_info_rules() {
        assert_eq!(region_info_want(16, 32, 0).err, libc::EFAULT);
        assert_eq!(region_info_want(32, 31, 0).err, libc::EINVAL);
        assert_eq!(region_info_want(32, 32, 10).err, libc::EINVAL);
        assert_eq!(
            region_info_want(32, 32, 9),
            RegionInfoWant {
                err: 0,
                argsz: 48,
                cap_offset: 0
            }
        );
        assert_eq!(region_info_want(40, 48, 9).err, libc::EFAULT);
        assert_eq!(
            region_info_want(48, 64, 9),
            RegionInfoWant {
                err: 0,
                argsz: 64,
                cap_offset: 32
            }
        );
        assert_eq!(
            region_info_want(32, 4096, 0),
            RegionInfoWant {
                err: 0,
                argsz: 4096,
                cap_offset: 0
            }
        );
    }

    fn irq(flags: u32, index: u32, start: u32, count: u32, fd: FdKind) -> IrqSet {
        let data = match flags & 7 {
            2 => count.min(4),
            4 => 4 * count.min(4),
            _ => 0,
        };
        IrqSet {
            bufsz: 20 + data as usize,
            argsz: 20 + data,
            flags,
            index,
            start,
            count,
            fd,
        }
    }

    #[test]
    fn set_irqs_rules() {
        let ok = vec![0];
        let inval = vec![libc::EINVAL];
        assert_eq!(set_irqs_want(&irq(0x24, 1, 0, 1, FdKind::Valid)), ok);
        assert_eq!(
            set_irqs_want(&irq(0x24, 1, 0, 1, FdKind::Huge)),
            vec![libc::EBADF]
        );
        assert_eq!(
            set_irqs_want(&irq(0x24, 1, 0, 1, FdKind::NotEventfd)),
            inval
        );
        assert_eq!(set_irqs_want(&irq(0x24, 1, 0, 1, FdKind::Clear)), ok);
        assert_eq!(set_irqs_want(&irq(0x24, 1, 0, 1, FdKind::Negative)), inval);
        assert_eq!(set_irqs_want(&irq(0x24, 2, 0, 1, FdKind::Valid)), inval);
        assert_eq!(set_irqs_want(&irq(0x24, 1, 0, 2, FdKind::Valid)), inval);
        assert_eq!(set_irqs_want(&irq(0x24, 1, 1, 0, FdKind::Valid)), inval);
        assert_eq!(set_irqs_want(&irq(0x21, 1, 0, 0, FdKind::Valid)), ok);
        assert_eq!(set_irqs_want(&irq(0x22, 4, 0, 1, FdKind::Valid)), ok);
        assert_eq!(set_irqs_want(&irq(0x22, 4, 0, 0, FdKind::Valid)), inval);
        assert_eq!(set_irqs_want(&irq(0x09, 0, 0, 1, FdKind::Valid)), ok);
        assert_eq!(set_irqs_want(&irq(0x0c, 0, 0, 1, FdKind::Valid)), inval);
        assert_eq!(set_irqs_want(&irq(0x11, 1, 0, 1, FdKind::Valid)), inval);
        assert_eq!(set_irqs_want(&irq(0x28, 1, 0, 1, FdKind::Valid)), inval);
        assert_eq!(set_irqs_want(&irq(0x23, 1, 0, 1, FdKind::Valid)), inval);
        assert_eq!(
            set_irqs_want(&irq(0x21, 1, 0, u32::MAX, FdKind::Valid)),
            inval
        );
        assert_eq!(
            set_irqs_want(&irq(0x21, 1, u32::MAX, 0, FdKind::Valid)),
            inval
        );
        assert_eq!(set_irqs_want(&irq(0x121, 1, 0, 0, FdKind::Valid)), inval);
        let mut short = irq(0x24, 1, 0, 1, FdKind::Valid);
        short.bufsz = 22;
        assert_eq!(set_irqs_want(&short), vec![libc::EFAULT]);
        short.bufsz = 12;
        assert_eq!(set_irqs_want(&short), vec![libc::EFAULT]);
        let mut small = irq(0x24, 1, 0, 1, FdKind::Valid);
        small.argsz = 23;
        assert_eq!(set_irqs_want(&small), inval);
    }

    #[test]
    fn config_fixed_bits() {
        assert_eq!(cfg_fixed(0, V), Some((0xff, 0x34)));
        assert_eq!(cfg_fixed(0x3d, V), Some((0xff, 1)));
        assert_eq!(cfg_fixed(0x3c, V), Some((0, 0)));
        assert_eq!(cfg_fixed(0x10, V), Some((0xff, 0x0c)));
        // 128 MiB: BAR0 bits 4..26 read 0.
        assert_eq!(cfg_fixed(0x13, V), Some((0x07, 0)));
        assert_eq!(cfg_fixed(0x42, V), Some((0xfe, 0x80)));
        assert_eq!(cfg_fixed(0x04, V), Some((0xf8, 0)));
        assert_eq!(cfg_fixed(0x05, V), Some((0xfb, 0)));
        assert_eq!(cfg_fixed(0x06, V), Some((0xff, 0x10)));
        assert_eq!(cfg_fixed(256, V), None);
        // 4 GiB: BAR0's low dword is all read-only.
        assert_eq!(cfg_fixed(0x13, 4096 << 20), Some((0xff, 0)));
    }

    #[test]
    fn mmio_checks() {
        assert!(mmio_check(0x800, info::ID_VALUE, V, 0).is_ok());
        assert!(mmio_check(0x820, 1, V, 0).is_err());
        assert!(mmio_check(0x500, 0xB0C5 | 640 << 16, V, 0).is_ok());
        assert!(mmio_check(0x504, 32 << 16 | 480, V, 0).is_ok());
        assert!(mmio_check(0x504, 31 << 16, V, 0).is_err());
        assert!(mmio_check(0x514, 2048, V, 0).is_ok());
        assert!(mmio_check(0x91c, 0x10, V, 0).is_err());
        assert!(mmio_check(0xa00, 0, V, 0).is_ok());
        assert!(mmio_check(0x940, 0x20_0001, V, 0).is_ok());
        assert!(mmio_check(0x948, 8, V, 0).is_err());
        assert!(mmio_check(0x94c, 1, V, 0).is_err());
        assert!(mmio_check(0x000, 1, V, 0).is_err());
    }
}
