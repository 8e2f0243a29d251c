// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause
//! The crate's error type.

use std::io;

/// What can go wrong.
///
/// [`Error::errno`] gives the errno of a failed system call, or `EINVAL`
/// for what the crate refused before asking the kernel (the kernel would
/// have said `EINVAL` too).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        /// What was being done (the ioctl's name, "open", ...).
        op: &'static str,
        /// The error, with its errno.
        #[source]
        source: io::Error,
    },
    /// A property name is not 1 to 63 characters of `[A-Za-z0-9_.-]`.
    #[error("invalid property name {0:?}")]
    InvalidName(String),
    /// A property value holds a control character.
    #[error("invalid value of property {0:?}")]
    InvalidValue(String),
    /// A property name appears twice.
    #[error("duplicate property {0:?}")]
    DuplicateName(String),
    /// A properties blob is not a sequence of NUL-terminated `name=value`.
    #[error("malformed properties: {0}")]
    Malformed(&'static str),
    /// An application name is not 1 to 63 characters of `[A-Za-z0-9_.-]`.
    #[error("invalid application name {0:?}")]
    InvalidApplication(String),
    /// A source guest's name is not 1 to 31 characters of `[A-Za-z0-9_.-]`.
    #[error("invalid source name {0:?}")]
    InvalidSource(String),
}

impl Error {
    /// The errno: that of the failed system call, `EINVAL` otherwise.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Os { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EINVAL,
        }
    }

    /// The error of system call `op`, from `errno`.
    pub(crate) fn last_os(op: &'static str) -> Self {
        Error::Os {
            op,
            source: io::Error::last_os_error(),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Os { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidInput, other),
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
