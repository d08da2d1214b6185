//! VFIO container and group (the legacy container/group API, the only one on 6.1 and on
//! Debian's 6.12 which has no IOMMUFD).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vfio_bindings::bindings::vfio::{
    vfio_group_status, VFIO_TYPE1v2_IOMMU, VFIO_API_VERSION, VFIO_GROUP_FLAGS_VIABLE,
    VFIO_TYPE1_IOMMU,
};
use vmm_sys_util::ioctl::{
    ioctl, ioctl_with_mut_ref, ioctl_with_ptr, ioctl_with_ref, ioctl_with_val,
};

use crate::error::{Error, Result};
use crate::ioctls::*;

/// The VFIO container device node.
pub const CONTAINER_PATH: &str = "/dev/vfio/vfio";

/// An open `/dev/vfio/vfio` container.
///
/// The IOMMU backend (type1v2, else type1) is selected when the first group joins.
#[derive(Debug)]
pub struct Container {
    file: File,
    iommu: Mutex<Option<u32>>,
}

impl Container {
    /// Open the container and check the API version and type1 support.
    pub fn new() -> Result<Arc<Self>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(CONTAINER_PATH)
            .map_err(|source| Error::Open {
                path: CONTAINER_PATH.into(),
                source,
            })?;
        // SAFETY: VFIO_GET_API_VERSION takes no argument and only returns an int.
        let version = unsafe { ioctl(&file, VFIO_GET_API_VERSION()) };
        if version < 0 {
            return Err(Error::ioctl("VFIO_GET_API_VERSION"));
        }
        if version as u32 != VFIO_API_VERSION {
            return Err(Error::ApiVersion(version));
        }
        let c = Container {
            file,
            iommu: Mutex::new(None),
        };
        if !c.has_extension(VFIO_TYPE1v2_IOMMU)? && !c.has_extension(VFIO_TYPE1_IOMMU)? {
            return Err(Error::NoIommuType);
        }
        Ok(Arc::new(c))
    }

    /// `VFIO_CHECK_EXTENSION`.
    pub fn has_extension(&self, ext: u32) -> Result<bool> {
        // SAFETY: VFIO_CHECK_EXTENSION takes an integer by value and returns an int.
        let r = unsafe { ioctl_with_val(&self.file, VFIO_CHECK_EXTENSION(), ext.into()) };
        if r < 0 {
            return Err(Error::ioctl("VFIO_CHECK_EXTENSION"));
        }
        Ok(r > 0)
    }

    /// The IOMMU type set on the container, once a group has joined.
    pub fn iommu_type(&self) -> Option<u32> {
        self.iommu.lock().map(|g| *g).unwrap_or(None)
    }

    /// Map `len` bytes of this process' memory at `vaddr` for device DMA at `iova`.
    ///
    /// # Safety
    /// The range must stay mapped (and not be reused for Rust references that assume
    /// exclusive access) until [`Container::unmap_dma`] is called for it: the device may
    /// read and write it at any time.
    pub unsafe fn map_dma(&self, iova: u64, vaddr: *mut u8, len: u64) -> Result<()> {
        let map = vfio_bindings::bindings::vfio::vfio_iommu_type1_dma_map {
            argsz: std::mem::size_of::<vfio_bindings::bindings::vfio::vfio_iommu_type1_dma_map>()
                as u32,
            flags: vfio_bindings::bindings::vfio::VFIO_DMA_MAP_FLAG_READ
                | vfio_bindings::bindings::vfio::VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: vaddr as u64,
            iova,
            size: len,
        };
        // SAFETY: `map` is a valid, initialised vfio_iommu_type1_dma_map that outlives the
        // call; the caller guarantees the memory range contract.
        let r = unsafe { ioctl_with_ref(&self.file, VFIO_IOMMU_MAP_DMA(), &map) };
        if r < 0 {
            return Err(Error::ioctl("VFIO_IOMMU_MAP_DMA"));
        }
        Ok(())
    }

    /// Unmap a DMA range mapped with [`Container::map_dma`]; returns the bytes unmapped.
    pub fn unmap_dma(&self, iova: u64, len: u64) -> Result<u64> {
        let mut unmap = vfio_bindings::bindings::vfio::vfio_iommu_type1_dma_unmap {
            argsz: std::mem::size_of::<vfio_bindings::bindings::vfio::vfio_iommu_type1_dma_unmap>()
                as u32,
            flags: 0,
            iova,
            size: len,
            ..Default::default()
        };
        // SAFETY: `unmap` is a valid vfio_iommu_type1_dma_unmap the kernel may update.
        let r = unsafe { ioctl_with_mut_ref(&self.file, VFIO_IOMMU_UNMAP_DMA(), &mut unmap) };
        if r < 0 {
            return Err(Error::ioctl("VFIO_IOMMU_UNMAP_DMA"));
        }
        Ok(unmap.size)
    }

    fn ensure_iommu(&self) -> Result<()> {
        let mut guard = self
            .iommu
            .lock()
            .map_err(|_| Error::InvalidArgument("container lock poisoned".into()))?;
        if guard.is_some() {
            return Ok(());
        }
        let ty = if self.has_extension(VFIO_TYPE1v2_IOMMU)? {
            VFIO_TYPE1v2_IOMMU
        } else {
            VFIO_TYPE1_IOMMU
        };
        // SAFETY: VFIO_SET_IOMMU takes the IOMMU type by value.
        let r = unsafe { ioctl_with_val(&self.file, VFIO_SET_IOMMU(), ty.into()) };
        if r < 0 {
            return Err(Error::ioctl("VFIO_SET_IOMMU"));
        }
        *guard = Some(ty);
        Ok(())
    }
}

impl AsRawFd for Container {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// An open VFIO group (`/dev/vfio/<N>`) attached to a container.
///
/// The group stays attached until it is dropped (closing the fd detaches it).
#[derive(Debug)]
pub struct Group {
    // Field order matters: the group fd closes before the container reference is released.
    file: File,
    id: u32,
    container: Arc<Container>,
}

impl Group {
    /// Open group `id`, check it is viable and attach it to `container`.
    pub fn open(id: u32, container: &Arc<Container>) -> Result<Self> {
        let path = PathBuf::from(format!("/dev/vfio/{id}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Open { path, source })?;
        let mut status = vfio_group_status {
            argsz: std::mem::size_of::<vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: `status` is a valid vfio_group_status with argsz set; the kernel fills it.
        let r = unsafe { ioctl_with_mut_ref(&file, VFIO_GROUP_GET_STATUS(), &mut status) };
        if r < 0 {
            return Err(Error::ioctl("VFIO_GROUP_GET_STATUS"));
        }
        if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(Error::GroupNotViable(id));
        }
        let cfd: RawFd = container.as_raw_fd();
        // SAFETY: VFIO_GROUP_SET_CONTAINER reads an int (the container fd) from the pointer,
        // which points at a live local.
        let r = unsafe { ioctl_with_ref(&file, VFIO_GROUP_SET_CONTAINER(), &cfd) };
        if r < 0 {
            return Err(Error::ioctl("VFIO_GROUP_SET_CONTAINER"));
        }
        container.ensure_iommu()?;
        Ok(Group {
            file,
            id,
            container: Arc::clone(container),
        })
    }

    /// Resolve the group number of a device from its sysfs `iommu_group` link.
    pub fn id_of(sysfs_path: &Path) -> Result<u32> {
        let link = sysfs_path.join("iommu_group");
        let target = std::fs::read_link(&link).map_err(|e| Error::sysfs("readlink", &link, e))?;
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Parse {
                what: "iommu group",
                text: target.display().to_string(),
            })?;
        name.parse().map_err(|_| Error::Parse {
            what: "iommu group",
            text: name.to_string(),
        })
    }

    /// The group number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The container this group is attached to.
    pub fn container(&self) -> &Arc<Container> {
        &self.container
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` for the device named `name` (an mdev's UUID).
    pub fn device_fd(&self, name: &str) -> Result<File> {
        let cname = CString::new(name).map_err(|_| Error::InvalidArgument(name.into()))?;
        // SAFETY: the argument is a NUL-terminated string that outlives the call; the
        // kernel returns a new fd or -1.
        let fd = unsafe { ioctl_with_ptr(&self.file, VFIO_GROUP_GET_DEVICE_FD(), cname.as_ptr()) };
        if fd < 0 {
            return Err(Error::ioctl("VFIO_GROUP_GET_DEVICE_FD"));
        }
        // SAFETY: `fd` is a fresh descriptor the kernel handed to us; we take ownership.
        Ok(unsafe { File::from_raw_fd(fd) })
    }
}

impl AsRawFd for Group {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
