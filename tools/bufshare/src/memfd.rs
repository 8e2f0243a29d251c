// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause
//! Memfds to share, and their mappings.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// The seals that fix a memfd's size: what registering needs.
pub const SIZE_SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

/// A memfd, sealing allowed.
#[derive(Debug)]
pub struct Memfd {
    fd: OwnedFd,
    len: u64,
}

impl Memfd {
    /// A new memfd of `len` bytes, not sealed.
    pub fn create(name: &str, len: u64) -> Result<Self> {
        let cname = CString::new(name).map_err(|_| Error::Os {
            op: "memfd_create",
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        })?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let fd = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(Error::last_os("memfd_create"));
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = libc::off_t::try_from(len).map_err(|_| Error::Os {
            op: "ftruncate",
            source: std::io::Error::from_raw_os_error(libc::EFBIG),
        })?;
        // SAFETY: plain system call on an open file.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } < 0 {
            return Err(Error::last_os("ftruncate"));
        }
        Ok(Self { fd, len })
    }

    /// A new memfd of `len` bytes whose size is sealed (and the seals
    /// too): ready to register.
    pub fn create_sealed(name: &str, len: u64) -> Result<Self> {
        let m = Self::create(name, len)?;
        m.add_seals(SIZE_SEALS | libc::F_SEAL_SEAL)?;
        Ok(m)
    }

    /// Adds `seals` (`F_SEAL_*`).
    pub fn add_seals(&self, seals: i32) -> Result<()> {
        // SAFETY: plain system call on an open file.
        if unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(Error::last_os("F_ADD_SEALS"));
        }
        Ok(())
    }

    /// The seals in force.
    pub fn seals(&self) -> Result<i32> {
        // SAFETY: plain system call on an open file.
        let s = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_GET_SEALS) };
        if s < 0 {
            return Err(Error::last_os("F_GET_SEALS"));
        }
        Ok(s)
    }

    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether its size is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maps it whole, shared, for reading and writing.
    pub fn map(&self) -> Result<Mapping> {
        Mapping::new(self.fd.as_fd(), self.len)
    }
}

impl AsFd for Memfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Memfd> for OwnedFd {
    fn from(m: Memfd) -> OwnedFd {
        m.fd
    }
}

/// A shared, writable mapping of a whole file (memfd or dma-buf),
/// unmapped on drop.
///
/// Its memory is shared: the host may read it (that is the point) and,
/// through its tools, write it.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; nothing in it
// is tied to a thread.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0.
    pub fn new(fd: BorrowedFd<'_>, len: u64) -> Result<Self> {
        Self::with_access(fd, len, true)
    }

    /// Maps `len` bytes of `fd` from offset 0, for reading only unless
    /// `writable` ([`Mapping::as_mut_slice`] must not be used then).
    pub(crate) fn with_access(fd: BorrowedFd<'_>, len: u64, writable: bool) -> Result<Self> {
        let len = usize::try_from(len).map_err(|_| Error::Os {
            op: "mmap",
            source: std::io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        if len == 0 {
            return Err(Error::Os {
                op: "mmap",
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        // SAFETY: a new mapping at an address of the kernel's choosing;
        // nothing existing is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                if writable {
                    libc::PROT_READ | libc::PROT_WRITE
                } else {
                    libc::PROT_READ
                },
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::last_os("mmap"));
        }
        let ptr = NonNull::new(p.cast()).ok_or(Error::Os {
            op: "mmap",
            source: std::io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        Ok(Self { ptr, len })
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The mapped bytes, to write.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` writable bytes for as long as `self`,
        // borrowed exclusively here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: a mapping has at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is a mapping this value made and owns.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
