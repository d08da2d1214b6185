//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while driving a vGPU.
///
/// Variants that wrap an OS error expose its errno through [`Error::errno`], so a caller
/// (typically a test) can tell `ENOSPC` from `EINVAL` from `EBUSY`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sysfs attribute or directory could not be read, written or listed.
    #[error("{op} {path}: {source}")]
    Sysfs {
        /// What was attempted ("read", "write", "list", "readlink").
        op: &'static str,
        /// The sysfs path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A read or write of the sysfs model (`vgpu-sysfs`) failed.
    #[error(transparent)]
    Model(#[from] vgpu_sysfs::Error),
    /// Opening a VFIO character device failed.
    #[error("open {path}: {source}")]
    Open {
        /// The device node.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A VFIO ioctl failed.
    #[error("ioctl {name}: {source}")]
    Ioctl {
        /// The ioctl's UAPI name.
        name: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A pread/pwrite on the device fd failed.
    #[error("{op} region {index} offset {offset:#x}: {source}")]
    RegionIo {
        /// "read" or "write".
        op: &'static str,
        /// Region index.
        index: u32,
        /// Offset inside the region.
        offset: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// mmap(2) failed.
    #[error("mmap region {index} offset {offset:#x} len {len:#x}: {source}")]
    Mmap {
        /// Region index.
        index: u32,
        /// Offset inside the region.
        offset: u64,
        /// Length of the mapping.
        len: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel reports a VFIO API version this crate does not speak.
    #[error("unsupported VFIO API version {0}")]
    ApiVersion(i32),
    /// The container supports neither type1 nor type1v2.
    #[error("VFIO container supports no type1 IOMMU")]
    NoIommuType,
    /// The group is not viable (not all its devices are bound to VFIO drivers).
    #[error("VFIO group {0} is not viable")]
    GroupNotViable(u32),
    /// The device is not a VFIO PCI device.
    #[error("device is not a vfio-pci device (flags {0:#x})")]
    NotPci(u32),
    /// Text from the kernel did not have the expected shape.
    #[error("cannot parse {what} from {text:?}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The offending text.
        text: String,
    },
    /// An access would fall outside a region, a mapping or a buffer.
    #[error("access at {offset:#x} len {len:#x} is outside size {size:#x}")]
    OutOfBounds {
        /// Start of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Size of the object accessed.
        size: u64,
    },
    /// A typed access is not naturally aligned.
    #[error("access at {offset:#x} of {size} bytes is not naturally aligned")]
    Unaligned {
        /// Start of the access.
        offset: u64,
        /// Access width.
        size: u64,
    },
    /// The region index is not one the device reports.
    #[error("no region {0}")]
    NoSuchRegion(u32),
    /// The region does not advertise `VFIO_REGION_INFO_FLAG_MMAP`.
    #[error("region {0} is not mmap-able")]
    NotMappable(u32),
    /// A read or write transferred fewer bytes than asked.
    #[error("short {op}: {done} of {want} bytes")]
    Short {
        /// "read" or "write".
        op: &'static str,
        /// Bytes transferred.
        done: usize,
        /// Bytes asked for.
        want: usize,
    },
    /// A caller-supplied argument is invalid (e.g. too many eventfds).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The engine stopped the ring: STATUS.ERROR is set (docs/engine-abi.md).
    #[error("engine stopped: ERROR {code} ({name}) at ring offset {head:#x}, STATUS {status:#x}")]
    EngineStopped {
        /// The ERROR register.
        code: u32,
        /// Its name.
        name: &'static str,
        /// The ERROR_HEAD register.
        head: u32,
        /// The STATUS register.
        status: u32,
    },
    /// The ring has no free slot for another command.
    #[error("ring full ({slots} slots)")]
    RingFull {
        /// Slots in the ring.
        slots: u64,
    },
    /// Something did not happen in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: std::time::Duration,
    },
}

impl Error {
    /// The errno behind this error, if it wraps an OS error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Sysfs { source, .. }
            | Error::Open { source, .. }
            | Error::Ioctl { source, .. }
            | Error::RegionIo { source, .. }
            | Error::Mmap { source, .. } => source.raw_os_error(),
            Error::Model(e) => e.errno(),
            _ => None,
        }
    }

    pub(crate) fn sysfs(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Sysfs {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn ioctl(name: &'static str) -> Self {
        Error::Ioctl {
            name,
            source: io::Error::last_os_error(),
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
