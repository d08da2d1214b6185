//! One open VFIO device: info, regions, config space, IRQs, reset, display plane.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{
    vfio_device_gfx_plane_info, vfio_device_info, vfio_irq_info, vfio_region_info,
    VFIO_DEVICE_FLAGS_PCI, VFIO_GFX_PLANE_TYPE_PROBE, VFIO_GFX_PLANE_TYPE_REGION,
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_REGION_INFO_CAP_SPARSE_MMAP, VFIO_REGION_INFO_CAP_TYPE,
    VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
};
use vmm_sys_util::ioctl::{ioctl, ioctl_with_mut_ptr, ioctl_with_mut_ref, ioctl_with_ptr};

use crate::container::{Container, Group};
use crate::error::{Error, Result};
use crate::ioctls::*;
use crate::mmap::MappedRegion;

/// Bits of the file offset that address inside a region (`VFIO_PCI_OFFSET_SHIFT`).
pub const REGION_OFFSET_SHIFT: u32 = 40;
/// Largest offset inside one region.
pub const REGION_OFFSET_MASK: u64 = (1u64 << REGION_OFFSET_SHIFT) - 1;

/// PCI region indexes (`VFIO_PCI_*_REGION_INDEX`).
pub mod region {
    /// BAR0 (vgpu: VRAM).
    pub const BAR0: u32 = 0;
    /// BAR1 (vgpu: upper half of the 64-bit BAR0).
    pub const BAR1: u32 = 1;
    /// BAR2 (vgpu: MMIO).
    pub const BAR2: u32 = 2;
    /// BAR3.
    pub const BAR3: u32 = 3;
    /// BAR4.
    pub const BAR4: u32 = 4;
    /// BAR5.
    pub const BAR5: u32 = 5;
    /// Expansion ROM.
    pub const ROM: u32 = 6;
    /// Config space.
    pub const CONFIG: u32 = 7;
    /// Legacy VGA.
    pub const VGA: u32 = 8;
}

/// PCI IRQ indexes (`VFIO_PCI_*_IRQ_INDEX`).
pub mod irq {
    /// Legacy INTx.
    pub const INTX: u32 = 0;
    /// MSI.
    pub const MSI: u32 = 1;
    /// MSI-X.
    pub const MSIX: u32 = 2;
    /// Error reporting.
    pub const ERR: u32 = 3;
    /// Device request (the kernel asks userspace to release the device).
    pub const REQ: u32 = 4;
}

/// File offset of byte `offset` of region `index` (`index << 40 | offset`).
///
/// Returns `None` if `offset` does not fit in a region's 40-bit window.
pub const fn region_file_offset(index: u32, offset: u64) -> Option<u64> {
    if offset > REGION_OFFSET_MASK || index >= (1 << (64 - REGION_OFFSET_SHIFT)) {
        None
    } else {
        Some(((index as u64) << REGION_OFFSET_SHIFT) | offset)
    }
}

/// Check that `[offset, offset + len)` lies inside an object of `size` bytes.
pub fn check_bounds(offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfBounds { offset, len, size }),
    }
}

/// Check that an access of `size` bytes at `offset` is naturally aligned.
pub fn check_aligned(offset: u64, size: u64) -> Result<()> {
    if offset.checked_rem(size) != Some(0) {
        Err(Error::Unaligned { offset, size })
    } else {
        Ok(())
    }
}

/// `VFIO_DEVICE_GET_INFO` result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `VFIO_DEVICE_FLAGS_*`.
    pub flags: u32,
    /// Number of regions.
    pub num_regions: u32,
    /// Number of IRQ indexes.
    pub num_irqs: u32,
}

/// One region capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionCap {
    /// `VFIO_REGION_INFO_CAP_TYPE`.
    Type {
        /// Region type.
        ty: u32,
        /// Region subtype.
        subtype: u32,
    },
    /// `VFIO_REGION_INFO_CAP_SPARSE_MMAP`: the mmap-able areas (offset, size).
    SparseMmap(Vec<(u64, u64)>),
    /// Any other capability: id and version.
    Other {
        /// Capability id.
        id: u16,
        /// Capability version.
        version: u16,
    },
}

/// `VFIO_DEVICE_GET_REGION_INFO` result, capabilities included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index.
    pub index: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Size in bytes.
    pub size: u64,
    /// File offset of the region.
    pub offset: u64,
    /// Capability chain.
    pub caps: Vec<RegionCap>,
}

impl RegionInfo {
    /// READ flag set.
    pub fn readable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_READ != 0
    }
    /// WRITE flag set.
    pub fn writable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_WRITE != 0
    }
    /// MMAP flag set.
    pub fn mappable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_MMAP != 0
    }
    /// The type capability, if any.
    pub fn type_cap(&self) -> Option<(u32, u32)> {
        self.caps.iter().find_map(|c| match c {
            RegionCap::Type { ty, subtype } => Some((*ty, *subtype)),
            _ => None,
        })
    }
}

/// `VFIO_DEVICE_GET_IRQ_INFO` result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqInfo {
    /// IRQ index.
    pub index: u32,
    /// `VFIO_IRQ_INFO_*`.
    pub flags: u32,
    /// Number of vectors.
    pub count: u32,
}

/// A display plane as returned by `VFIO_DEVICE_QUERY_GFX_PLANE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GfxPlane {
    /// Flags as returned.
    pub flags: u32,
    /// DRM plane type.
    pub drm_plane_type: u32,
    /// DRM fourcc, 0 when there is nothing to show.
    pub drm_format: u32,
    /// DRM format modifier.
    pub drm_format_mod: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per line.
    pub stride: u32,
    /// Bytes of the plane.
    pub size: u32,
    /// Cursor x position.
    pub x_pos: u32,
    /// Cursor y position.
    pub y_pos: u32,
    /// Cursor hotspot x.
    pub x_hot: u32,
    /// Cursor hotspot y.
    pub y_hot: u32,
    /// Region index (region planes) or dmabuf id.
    pub region_index: u32,
}

/// Parse the capability chain of a `vfio_region_info` buffer, starting at `first`.
///
/// Offsets are relative to the start of `buf`; the walk stops at offset 0 and rejects
/// chains that point outside the buffer, backwards or into the fixed header.
pub fn parse_region_caps(buf: &[u8], first: u32) -> Result<Vec<RegionCap>> {
    const HEADER: usize = std::mem::size_of::<vfio_region_info>();
    let bad = |what: &str| Error::Parse {
        what: "region capability chain",
        text: what.to_string(),
    };
    let u16_at = |o: usize| -> Result<u16> {
        buf.get(o..o + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
            .ok_or_else(|| bad("truncated"))
    };
    let u32_at = |o: usize| -> Result<u32> {
        buf.get(o..o + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad("truncated"))
    };
    let u64_at = |o: usize| -> Result<u64> {
        buf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
            .ok_or_else(|| bad("truncated"))
    };
    let mut caps = Vec::new();
    let mut off = first as usize;
    let mut last = 0usize;
    while off != 0 {
        if off < HEADER || off <= last || off + 8 > buf.len() {
            return Err(bad(&format!("cap offset {off} in buffer of {}", buf.len())));
        }
        let id = u16_at(off)?;
        let version = u16_at(off + 2)?;
        let next = u32_at(off + 4)? as usize;
        match u32::from(id) {
            VFIO_REGION_INFO_CAP_TYPE => caps.push(RegionCap::Type {
                ty: u32_at(off + 8)?,
                subtype: u32_at(off + 12)?,
            }),
            VFIO_REGION_INFO_CAP_SPARSE_MMAP => {
                let n = u32_at(off + 8)? as usize;
                let mut areas = Vec::with_capacity(n.min(64));
                for i in 0..n {
                    let a = off + 16 + i * 16;
                    areas.push((u64_at(a)?, u64_at(a + 8)?));
                }
                caps.push(RegionCap::SparseMmap(areas));
            }
            _ => caps.push(RegionCap::Other { id, version }),
        }
        last = off;
        off = next;
    }
    Ok(caps)
}

/// Build a `vfio_irq_set` buffer (header followed by `data`).
pub fn irq_set_buffer(flags: u32, index: u32, start: u32, count: u32, data: &[u8]) -> Vec<u8> {
    let argsz = (20 + data.len()) as u32;
    let mut buf = Vec::with_capacity(argsz as usize);
    for v in [argsz, flags, index, start, count] {
        buf.extend_from_slice(&v.to_ne_bytes());
    }
    buf.extend_from_slice(data);
    buf
}

/// An open VFIO device (one vGPU instance).
///
/// Dropping it closes the device fd (which lets a pending mdev `remove` proceed, once no
/// [`MappedRegion`] of it is left) and then detaches its group.
#[derive(Debug)]
pub struct Device {
    // Field order matters: the device fd closes before the group fd.
    file: File,
    group: Arc<Group>,
    name: String,
    sysfs_path: PathBuf,
    info: DeviceInfo,
    regions: Vec<Option<RegionInfo>>,
}

impl Device {
    /// Open the device at `sysfs_path` (e.g. `/sys/bus/mdev/devices/<uuid>`) in a
    /// container of its own.
    pub fn open(sysfs_path: impl AsRef<Path>) -> Result<Self> {
        let container = Container::new()?;
        Self::open_in(&container, sysfs_path)
    }

    /// Open the device at `sysfs_path` in `container` (its group is opened and attached).
    pub fn open_in(container: &Arc<Container>, sysfs_path: impl AsRef<Path>) -> Result<Self> {
        let sysfs_path = sysfs_path.as_ref().to_path_buf();
        let name = sysfs_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::InvalidArgument(format!("bad device path {sysfs_path:?}")))?
            .to_string();
        let group = Arc::new(Group::open(Group::id_of(&sysfs_path)?, container)?);
        let file = group.device_fd(&name)?;
        let mut dev = Device {
            file,
            group,
            name,
            sysfs_path,
            info: DeviceInfo {
                flags: 0,
                num_regions: 0,
                num_irqs: 0,
            },
            regions: Vec::new(),
        };
        dev.info = dev.query_info()?;
        if dev.info.flags & VFIO_DEVICE_FLAGS_PCI == 0 {
            return Err(Error::NotPci(dev.info.flags));
        }
        // Cache what the regions look like; failures are kept as None (and reported again
        // by region_info()).
        dev.regions = (0..dev.info.num_regions)
            .map(|i| dev.region_info(i).ok())
            .collect();
        Ok(dev)
    }

    /// The device name (mdev UUID).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sysfs path the device was opened from.
    pub fn sysfs_path(&self) -> &Path {
        &self.sysfs_path
    }

    /// The group the device belongs to.
    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }

    /// Device info as read at open time.
    pub fn info(&self) -> DeviceInfo {
        self.info
    }

    /// `VFIO_DEVICE_GET_INFO`.
    pub fn query_info(&self) -> Result<DeviceInfo> {
        let mut info = vfio_device_info {
            argsz: std::mem::size_of::<vfio_device_info>() as u32,
            ..Default::default()
        };
        // SAFETY: `info` is a valid vfio_device_info with argsz set; the kernel fills it.
        let r = unsafe { ioctl_with_mut_ref(&self.file, VFIO_DEVICE_GET_INFO(), &mut info) };
        if r < 0 {
            return Err(Error::ioctl("VFIO_DEVICE_GET_INFO"));
        }
        Ok(DeviceInfo {
            flags: info.flags,
            num_regions: info.num_regions,
            num_irqs: info.num_irqs,
        })
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` for `index`, following the capability chain.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo> {
        const HEADER: usize = std::mem::size_of::<vfio_region_info>();
        let mut hdr = vfio_region_info {
            argsz: HEADER as u32,
            index,
            ..Default::default()
        };
        // SAFETY: `hdr` is a valid vfio_region_info of argsz bytes; the kernel fills it.
        let r = unsafe { ioctl_with_mut_ref(&self.file, VFIO_DEVICE_GET_REGION_INFO(), &mut hdr) };
        if r < 0 {
            return Err(Error::ioctl("VFIO_DEVICE_GET_REGION_INFO"));
        }
        let mut caps = Vec::new();
        if hdr.flags & VFIO_REGION_INFO_FLAG_CAPS != 0 && hdr.argsz as usize > HEADER {
            let want = hdr.argsz as usize;
            // u64 backing keeps the buffer aligned for the kernel's struct layout.
            let mut words = vec![0u64; want.div_ceil(8)];
            let base = words.as_mut_ptr() as *mut u8;
            let header = vfio_region_info {
                argsz: want as u32,
                index,
                ..Default::default()
            };
            // SAFETY: `words` holds at least `want` >= HEADER bytes, is 8-byte aligned, and
            // nothing else references it; we copy the header struct into its start.
            unsafe { std::ptr::write(base as *mut vfio_region_info, header) };
            // SAFETY: the buffer is `want` bytes long as announced in argsz; the kernel
            // writes at most argsz bytes.
            let r = unsafe {
                ioctl_with_mut_ptr(
                    &self.file,
                    VFIO_DEVICE_GET_REGION_INFO(),
                    base as *mut vfio_region_info,
                )
            };
            if r < 0 {
                return Err(Error::ioctl("VFIO_DEVICE_GET_REGION_INFO"));
            }
            // SAFETY: the buffer is initialised (zeroed, then filled by the kernel); u8 has
            // no alignment or validity requirements.
            let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, want) };
            // SAFETY: the buffer starts with a vfio_region_info (we wrote it, the kernel
            // updated it) and is 8-byte aligned.
            let full = unsafe { std::ptr::read(base as *const vfio_region_info) };
            hdr = full;
            if hdr.flags & VFIO_REGION_INFO_FLAG_CAPS != 0 {
                caps = parse_region_caps(bytes, hdr.cap_offset)?;
            }
        }
        Ok(RegionInfo {
            index,
            flags: hdr.flags,
            size: hdr.size,
            offset: hdr.offset,
            caps,
        })
    }

    /// Region info cached at open time.
    pub fn cached_region(&self, index: u32) -> Result<&RegionInfo> {
        self.regions
            .get(index as usize)
            .and_then(|r| r.as_ref())
            .ok_or(Error::NoSuchRegion(index))
    }

    /// Size of region `index` (cached at open time).
    pub fn region_size(&self, index: u32) -> Result<u64> {
        Ok(self.cached_region(index)?.size)
    }

    /// One pread(2) at `offset` inside region `index`, with no client-side bounds check
    /// (beyond the 40-bit region window): what the kernel does with it is returned as-is.
    pub fn pread(&self, index: u32, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let fo = region_file_offset(index, offset)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        self.file.read_at(buf, fo)
    }

    /// One pwrite(2) at `offset` inside region `index`, with no client-side bounds check.
    pub fn pwrite(&self, index: u32, offset: u64, buf: &[u8]) -> std::io::Result<usize> {
        let fo = region_file_offset(index, offset)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        self.file.write_at(buf, fo)
    }

    /// Read exactly `buf.len()` bytes at `offset` of region `index`, bounds-checked against
    /// the region size.
    pub fn read_region(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(offset, buf.len() as u64, self.region_size(index)?)?;
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .pread(index, offset + done as u64, &mut buf[done..])
                .map_err(|source| Error::RegionIo {
                    op: "read",
                    index,
                    offset: offset + done as u64,
                    source,
                })?;
            if n == 0 {
                return Err(Error::Short {
                    op: "read",
                    done,
                    want: buf.len(),
                });
            }
            done += n;
        }
        Ok(())
    }

    /// Write all of `buf` at `offset` of region `index`, bounds-checked.
    pub fn write_region(&self, index: u32, offset: u64, buf: &[u8]) -> Result<()> {
        check_bounds(offset, buf.len() as u64, self.region_size(index)?)?;
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .pwrite(index, offset + done as u64, &buf[done..])
                .map_err(|source| Error::RegionIo {
                    op: "write",
                    index,
                    offset: offset + done as u64,
                    source,
                })?;
            if n == 0 {
                return Err(Error::Short {
                    op: "write",
                    done,
                    want: buf.len(),
                });
            }
            done += n;
        }
        Ok(())
    }

    /// Read a little-endian u8 from a region.
    pub fn read_u8(&self, index: u32, offset: u64) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_region(index, offset, &mut b)?;
        Ok(b[0])
    }

    /// Read a little-endian u16 from a region (one 2-byte access).
    pub fn read_u16(&self, index: u32, offset: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_region(index, offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Read a little-endian u32 from a region (one 4-byte access).
    pub fn read_u32(&self, index: u32, offset: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_region(index, offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Write a u8 to a region.
    pub fn write_u8(&self, index: u32, offset: u64, v: u8) -> Result<()> {
        self.write_region(index, offset, &[v])
    }

    /// Write a little-endian u16 to a region (one 2-byte access).
    pub fn write_u16(&self, index: u32, offset: u64, v: u16) -> Result<()> {
        self.write_region(index, offset, &v.to_le_bytes())
    }

    /// Write a little-endian u32 to a region (one 4-byte access).
    pub fn write_u32(&self, index: u32, offset: u64, v: u32) -> Result<()> {
        self.write_region(index, offset, &v.to_le_bytes())
    }

    /// Read a config space byte.
    pub fn config_read_u8(&self, offset: u64) -> Result<u8> {
        self.read_u8(region::CONFIG, offset)
    }
    /// Read a config space word.
    pub fn config_read_u16(&self, offset: u64) -> Result<u16> {
        self.read_u16(region::CONFIG, offset)
    }
    /// Read a config space dword.
    pub fn config_read_u32(&self, offset: u64) -> Result<u32> {
        self.read_u32(region::CONFIG, offset)
    }
    /// Write a config space byte.
    pub fn config_write_u8(&self, offset: u64, v: u8) -> Result<()> {
        self.write_u8(region::CONFIG, offset, v)
    }
    /// Write a config space word.
    pub fn config_write_u16(&self, offset: u64, v: u16) -> Result<()> {
        self.write_u16(region::CONFIG, offset, v)
    }
    /// Write a config space dword.
    pub fn config_write_u32(&self, offset: u64, v: u32) -> Result<()> {
        self.write_u32(region::CONFIG, offset, v)
    }

    /// Size a BAR the PCI way: save it, write all-ones, read the mask, restore it.
    /// Returns the raw value read back after writing all-ones.
    pub fn config_size_bar(&self, bar: u32) -> Result<u32> {
        if bar > 5 {
            return Err(Error::InvalidArgument(format!("BAR{bar}")));
        }
        let off = 0x10 + 4 * u64::from(bar);
        let saved = self.config_read_u32(off)?;
        self.config_write_u32(off, 0xffff_ffff)?;
        let mask = self.config_read_u32(off)?;
        self.config_write_u32(off, saved)?;
        Ok(mask)
    }

    /// Walk the PCI capability list: (offset, id) pairs, at most 48 entries.
    pub fn config_capabilities(&self) -> Result<Vec<(u8, u8)>> {
        let mut caps = Vec::new();
        if self.config_read_u16(0x06)? & 0x10 == 0 {
            return Ok(caps);
        }
        let mut ptr = self.config_read_u8(0x34)? & 0xfc;
        while ptr != 0 && caps.len() < 48 {
            let id = self.config_read_u8(u64::from(ptr))?;
            caps.push((ptr, id));
            ptr = self.config_read_u8(u64::from(ptr) + 1)? & 0xfc;
        }
        Ok(caps)
    }

    /// mmap `len` bytes of region `index` from `offset` (shared, read+write as the region
    /// allows). Checked against the region size and MMAP flag.
    pub fn mmap_region(&self, index: u32, offset: u64, len: u64) -> Result<MappedRegion> {
        let info = self.cached_region(index)?;
        if !info.mappable() {
            return Err(Error::NotMappable(index));
        }
        check_bounds(offset, len, info.size)?;
        let mut prot = 0;
        if info.readable() {
            prot |= libc::PROT_READ;
        }
        if info.writable() {
            prot |= libc::PROT_WRITE;
        }
        MappedRegion::map(&self.file, index, offset, len, prot)
    }

    /// mmap with explicit protection and no client-side checks except the 40-bit window
    /// (for probing what the kernel allows).
    pub fn mmap_region_raw(
        &self,
        index: u32,
        offset: u64,
        len: u64,
        prot: i32,
    ) -> Result<MappedRegion> {
        MappedRegion::map(&self.file, index, offset, len, prot)
    }

    /// `VFIO_DEVICE_RESET`.
    pub fn reset(&self) -> Result<()> {
        // SAFETY: VFIO_DEVICE_RESET takes no argument.
        let r = unsafe { ioctl(&self.file, VFIO_DEVICE_RESET()) };
        if r < 0 {
            return Err(Error::ioctl("VFIO_DEVICE_RESET"));
        }
        Ok(())
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO`.
    pub fn irq_info(&self, index: u32) -> Result<IrqInfo> {
        let mut info = vfio_irq_info {
            argsz: std::mem::size_of::<vfio_irq_info>() as u32,
            index,
            ..Default::default()
        };
        // SAFETY: `info` is a valid vfio_irq_info with argsz set; the kernel fills it.
        let r = unsafe { ioctl_with_mut_ref(&self.file, VFIO_DEVICE_GET_IRQ_INFO(), &mut info) };
        if r < 0 {
            return Err(Error::ioctl("VFIO_DEVICE_GET_IRQ_INFO"));
        }
        Ok(IrqInfo {
            index: info.index,
            flags: info.flags,
            count: info.count,
        })
    }

    /// `VFIO_DEVICE_SET_IRQS` with arbitrary flags and payload; returns the raw OS result so
    /// callers can check errno of invalid requests.
    pub fn set_irqs_raw(
        &self,
        flags: u32,
        index: u32,
        start: u32,
        count: u32,
        data: &[u8],
    ) -> std::io::Result<()> {
        // u32 backing keeps the header aligned.
        let bytes = irq_set_buffer(flags, index, start, count, data);
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        // SAFETY: `words` has at least bytes.len() bytes; u32 storage may be written as
        // bytes; the regions do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                words.as_mut_ptr() as *mut u8,
                bytes.len(),
            )
        };
        // SAFETY: the buffer holds a complete vfio_irq_set of argsz bytes and outlives the
        // call; the kernel only reads it.
        let r = unsafe { ioctl_with_ptr(&self.file, VFIO_DEVICE_SET_IRQS(), words.as_ptr()) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn set_irqs(&self, flags: u32, index: u32, start: u32, count: u32, data: &[u8]) -> Result<()> {
        self.set_irqs_raw(flags, index, start, count, data)
            .map_err(|source| Error::Ioctl {
                name: "VFIO_DEVICE_SET_IRQS",
                source,
            })
    }

    /// Attach eventfds to vectors `start..start + fds.len()` of IRQ `index`
    /// (ACTION_TRIGGER | DATA_EVENTFD). An fd of -1 detaches that vector.
    pub fn set_irq_eventfds(&self, index: u32, start: u32, fds: &[RawFd]) -> Result<()> {
        if fds.is_empty() {
            return Err(Error::InvalidArgument("no eventfds".into()));
        }
        let data: Vec<u8> = fds.iter().flat_map(|fd| fd.to_ne_bytes()).collect();
        self.set_irqs(
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
            index,
            start,
            fds.len() as u32,
            &data,
        )
    }

    /// Detach all eventfds of IRQ `index` (ACTION_TRIGGER | DATA_NONE, count 0).
    pub fn disable_irq(&self, index: u32) -> Result<()> {
        self.set_irqs(
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE,
            index,
            0,
            0,
            &[],
        )
    }

    /// Fire vectors `start..start + count` of IRQ `index` (ACTION_TRIGGER | DATA_NONE).
    pub fn trigger_irq(&self, index: u32, start: u32, count: u32) -> Result<()> {
        self.set_irqs(
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE,
            index,
            start,
            count,
            &[],
        )
    }

    /// Fire the vectors whose flag is true (ACTION_TRIGGER | DATA_BOOL).
    pub fn trigger_irq_bool(&self, index: u32, start: u32, fire: &[bool]) -> Result<()> {
        let data: Vec<u8> = fire.iter().map(|&b| u8::from(b)).collect();
        self.set_irqs(
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL,
            index,
            start,
            fire.len() as u32,
            &data,
        )
    }

    /// `VFIO_DEVICE_QUERY_GFX_PLANE` with raw flags, returning the OS error as-is.
    pub fn query_gfx_plane_raw(
        &self,
        flags: u32,
        drm_plane_type: u32,
    ) -> std::io::Result<GfxPlane> {
        let mut p = vfio_device_gfx_plane_info {
            argsz: std::mem::size_of::<vfio_device_gfx_plane_info>() as u32,
            flags,
            drm_plane_type,
            ..Default::default()
        };
        // SAFETY: `p` is a valid vfio_device_gfx_plane_info with argsz set; the kernel
        // reads the request fields and fills the rest.
        let r = unsafe { ioctl_with_mut_ref(&self.file, VFIO_DEVICE_QUERY_GFX_PLANE(), &mut p) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both union members are u32; reading either is valid for any bit pattern.
        let region_index = unsafe { p.__bindgen_anon_1.region_index };
        Ok(GfxPlane {
            flags: p.flags,
            drm_plane_type: p.drm_plane_type,
            drm_format: p.drm_format,
            drm_format_mod: p.drm_format_mod,
            width: p.width,
            height: p.height,
            stride: p.stride,
            size: p.size,
            x_pos: p.x_pos,
            y_pos: p.y_pos,
            x_hot: p.x_hot,
            y_hot: p.y_hot,
            region_index,
        })
    }

    /// Query a region plane (`VFIO_GFX_PLANE_TYPE_REGION`) of `drm_plane_type`.
    pub fn query_gfx_plane(&self, drm_plane_type: u32) -> Result<GfxPlane> {
        self.query_gfx_plane_raw(VFIO_GFX_PLANE_TYPE_REGION, drm_plane_type)
            .map_err(|source| Error::Ioctl {
                name: "VFIO_DEVICE_QUERY_GFX_PLANE",
                source,
            })
    }

    /// Probe whether plane type `plane_flags` (REGION or DMABUF) is supported.
    pub fn probe_gfx_plane(&self, plane_flags: u32) -> std::io::Result<()> {
        self.query_gfx_plane_raw(VFIO_GFX_PLANE_TYPE_PROBE | plane_flags, 0)
            .map(|_| ())
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_offsets() {
        assert_eq!(region_file_offset(0, 0), Some(0));
        assert_eq!(region_file_offset(7, 4), Some((7 << 40) | 4));
        assert_eq!(
            region_file_offset(9, REGION_OFFSET_MASK),
            Some((10 << 40) - 1)
        );
        assert_eq!(region_file_offset(2, 1 << 40), None);
        assert_eq!(region_file_offset(1 << 24, 0), None);
    }

    #[test]
    fn bounds() {
        assert!(check_bounds(0, 4096, 4096).is_ok());
        assert!(check_bounds(4096, 0, 4096).is_ok());
        assert!(check_bounds(4095, 2, 4096).is_err());
        assert!(check_bounds(u64::MAX, 2, u64::MAX).is_err());
        assert!(check_aligned(4, 4).is_ok());
        assert!(check_aligned(2, 4).is_err());
        assert!(check_aligned(0, 0).is_err());
    }

    fn push32(b: &mut Vec<u8>, v: u32) {
        b.extend_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn caps_chain() {
        // 32-byte header, type cap at 32, sparse cap at 48.
        let mut b = vec![0u8; 32];
        b.extend_from_slice(&2u16.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        push32(&mut b, 48);
        push32(&mut b, 0x8000_1234);
        push32(&mut b, 1);
        b.extend_from_slice(&1u16.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        push32(&mut b, 0);
        push32(&mut b, 1); // nr_areas
        push32(&mut b, 0); // reserved
        b.extend_from_slice(&0x1000u64.to_ne_bytes());
        b.extend_from_slice(&0x2000u64.to_ne_bytes());
        let caps = parse_region_caps(&b, 32).expect("parse");
        assert_eq!(
            caps,
            vec![
                RegionCap::Type {
                    ty: 0x8000_1234,
                    subtype: 1
                },
                RegionCap::SparseMmap(vec![(0x1000, 0x2000)])
            ]
        );
        assert!(parse_region_caps(&b, 0).expect("empty").is_empty());
    }

    #[test]
    fn caps_chain_rejects_garbage() {
        let mut b = vec![0u8; 40];
        // cap at 32 pointing back to itself
        b[32] = 2;
        b[36..40].copy_from_slice(&32u32.to_ne_bytes());
        assert!(parse_region_caps(&b, 32).is_err());
        // points into the header
        assert!(parse_region_caps(&b, 8).is_err());
        // truncated type cap
        b[36..40].copy_from_slice(&0u32.to_ne_bytes());
        assert!(parse_region_caps(&b, 32).is_err());
        // beyond the buffer
        assert!(parse_region_caps(&b, 400).is_err());
    }

    #[test]
    fn irq_set_layout() {
        let b = irq_set_buffer(0x24, 1, 0, 1, &7i32.to_ne_bytes());
        assert_eq!(b.len(), 24);
        assert_eq!(&b[0..4], &24u32.to_ne_bytes());
        assert_eq!(&b[4..8], &0x24u32.to_ne_bytes());
        assert_eq!(&b[8..12], &1u32.to_ne_bytes());
        assert_eq!(&b[16..20], &1u32.to_ne_bytes());
        assert_eq!(&b[20..24], &7i32.to_ne_bytes());
    }
}
