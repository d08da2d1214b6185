//! Errors of reading and writing the sysfs ABI. Each names the attribute involved.

use std::io;
use std::path::PathBuf;

use crate::model::DescriptionError;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A sysfs access that failed, or text that is not what the ABI says.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an attribute or listing a directory failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// What was read.
        path: PathBuf,
        /// The cause (the kernel's errno for a refused read).
        #[source]
        source: io::Error,
    },

    /// Writing an attribute failed (the kernel refused the value, or it is missing).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The attribute.
        path: PathBuf,
        /// The cause (the kernel's errno for a refused value).
        #[source]
        source: io::Error,
    },

    /// An attribute has a value that is not what the ABI says.
    #[error("unexpected content in {}: {reason}", path.display())]
    Malformed {
        /// The attribute.
        path: PathBuf,
        /// What is wrong.
        reason: String,
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

    /// Text (not read from a file just now) that does not parse as `what`.
    #[error("cannot parse {what} from {text:?}")]
    Parse {
        /// What was expected.
        what: &'static str,
        /// The text.
        text: String,
    },
}

impl Error {
    /// The kernel's errno behind this error, if it is a failed read or write.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Read { source, .. } | Error::Write { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
