//! Errors of the manager. Every message is meant to be shown to an operator as is.

use std::io;
use std::path::PathBuf;
use uuid::Uuid;

use vgpu_sysfs::DescriptionError;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while managing vgpu instances.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No managed parent has that name.
    #[error("no vgpu parent named `{name}` (known: {known})")]
    ParentNotFound {
        /// The name asked for.
        name: String,
        /// Comma-separated managed parents, or `none`.
        known: String,
    },

    /// The parent has no type by that name.
    #[error("parent {parent}: {known}")]
    TypeNotFound {
        /// Parent searched.
        parent: String,
        /// The type asked for.
        type_id: String,
        /// What is known instead, in words.
        known: String,
    },

    /// No managed instance has that UUID.
    #[error("no vgpu instance {0}")]
    InstanceNotFound(Uuid),

    /// An mdev device with that UUID already exists.
    #[error("an mdev device {0} already exists")]
    UuidInUse(Uuid),

    /// The type reports no available instances (checked before writing `create`).
    #[error(
        "no {type_id} instance available on {parent}: pool of {parent} has {free_mb} MiB free, \
         type needs {need_mb} MiB"
    )]
    NoneAvailable {
        /// Parent.
        parent: String,
        /// Type id.
        type_id: String,
        /// `pool_free_mb` of the parent.
        free_mb: u64,
        /// `vram_mb` of the type.
        need_mb: u64,
    },

    /// The kernel refused the create with `ENOSPC`.
    #[error("pool of {parent} has {free_mb} MiB free, type {type_id} needs {need_mb} MiB")]
    PoolFull {
        /// Parent.
        parent: String,
        /// Type id.
        type_id: String,
        /// `pool_free_mb` of the parent, read after the failure.
        free_mb: u64,
        /// `vram_mb` of the type.
        need_mb: u64,
    },

    /// Shrinking a pool below what instances reserve (`EBUSY`).
    #[error(
        "cannot set pool of {parent} to {requested_mb} MiB: instances reserve {reserved_mb} MiB"
    )]
    PoolBusy {
        /// Parent.
        parent: String,
        /// The size asked for.
        requested_mb: u64,
        /// What existing instances reserve.
        reserved_mb: u64,
    },

    /// A value was rejected before anything was written.
    #[error("{attr} must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// Attribute (`weight`, `cap`, `pool_mb`).
        attr: &'static str,
        /// The value given.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },

    /// The kernel refused a write for a reason not mapped to a more specific error.
    #[error("kernel refused {what}: {source}")]
    Refused {
        /// What was attempted, e.g. `weight=5 for <uuid>`.
        what: String,
        /// The errno.
        #[source]
        source: io::Error,
    },

    /// Writing needs privileges.
    #[error("permission denied writing {} (run as root)", path.display())]
    PermissionDenied {
        /// The attribute.
        path: PathBuf,
    },

    /// A type `description` does not follow the ABI.
    #[error("bad type description in {}: {source}", path.display())]
    Description {
        /// The `description` file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: DescriptionError,
    },

    /// An attribute has a value that is not what the ABI says.
    #[error("unexpected content in {}: {reason}", path.display())]
    Malformed {
        /// The attribute.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// Reading sysfs or listing a directory failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// What was read.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// Writing an attribute failed for a reason without a specific meaning.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The attribute.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A definition file that cannot be used.
    #[error("bad definition {}: {reason}", path.display())]
    BadDefinition {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// No definition has that UUID.
    #[error("{0} is not defined (see `vgpuctl list --defined`)")]
    NotDefined(Uuid),

    /// The request conflicts with what exists (a different definition, a running
    /// instance of another type, …).
    #[error("{0}")]
    Conflict(String),

    /// Input given by the operator (a file, a manifest, a value) is not usable.
    #[error("{0}")]
    Invalid(String),

    /// Placement or admission refused: the request does not fit.
    #[error("{0}")]
    Admission(String),

    /// Writing a definition (or the lock) failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Store {
        /// What was attempted.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// Applying an attribute after creating an instance failed; the instance was
    /// removed again.
    #[error("{error}; {uuid} was removed again{}", match remove_error {
        Some(e) => format!(", but removing it failed too: {e}"),
        None => String::new(),
    })]
    RolledBack {
        /// The instance.
        uuid: Uuid,
        /// Why applying failed.
        error: Box<Error>,
        /// Why the removal failed, if it did.
        remove_error: Option<Box<Error>>,
    },

    /// A write of a batch (`apply`, `create --count`) failed; what the batch had done
    /// was undone.
    #[error("{error}; everything this run had changed was undone{}", match undo_errors.as_slice() {
        [] => String::new(),
        errs => format!(", except: {}", errs.join("; ")),
    })]
    Undone {
        /// Why the batch failed.
        error: Box<Error>,
        /// What could not be undone.
        undo_errors: Vec<String>,
    },
}

impl From<vgpu_sysfs::Error> for Error {
    /// The model's errors keep their meaning (and messages) here.
    fn from(e: vgpu_sysfs::Error) -> Self {
        match e {
            vgpu_sysfs::Error::Read { path, source } => Error::Read { path, source },
            vgpu_sysfs::Error::Write { path, source } => Error::Write { path, source },
            vgpu_sysfs::Error::Malformed { path, reason } => Error::Malformed { path, reason },
            vgpu_sysfs::Error::Description { path, source } => Error::Description { path, source },
            e @ vgpu_sysfs::Error::Parse { .. } => Error::Invalid(e.to_string()),
        }
    }
}

/// Maps a failed attribute write to an operator-facing error.
pub(crate) fn write_error(path: PathBuf, e: io::Error, what: String) -> Error {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { path },
        Some(libc::ENOENT) => Error::Write { path, source: e },
        Some(_) => Error::Refused { what, source: e },
        None => Error::Write { path, source: e },
    }
}

impl Error {
    /// Maps an I/O failure on a definition or lock file, naming permission problems.
    pub(crate) fn store(what: &'static str, path: &std::path::Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::PermissionDenied {
            Error::PermissionDenied {
                path: path.to_path_buf(),
            }
        } else {
            Error::Store {
                what,
                path: path.to_path_buf(),
                source,
            }
        }
    }
}
