// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause
//! Importing the buffers of other guests (`VIRTIO_BUFSHARE_F_IMPORT`).
//!
//! An open [`Device`] attaches to an application of another guest
//! ([`Device::attach`]); its buffers then arrive as [`Event::ImportAdded`]
//! events, and [`Device::import`] gives a dma-buf of one, which maps without
//! a copy: the bytes are the other guest's.
//!
//! ```no_run
//! use bufshare::{Device, Event};
//!
//! # fn main() -> bufshare::Result<()> {
//! let dev = Device::open()?;
//! dev.attach("vm0", "framebuffer")?;
//! for event in dev.read_events(16)? {
//!     if let Event::ImportAdded { import_id, .. } = event {
//!         let import = dev.import(import_id)?;
//!         let map = import.map()?;
//!         println!("{} bytes, first {:?}", map.as_slice().len(), map.as_slice().first());
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`Event::ImportAdded`]: crate::Event::ImportAdded

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::device::{ioctl, Device};
use crate::error::{Error, Result};
use crate::memfd::Mapping;
use crate::props::{is_valid_name, Properties};
use crate::uapi;

/// A dma-buf of an import ([`Device::import`]). Dropping it (and every
/// mapping of it) gives the import back to the open file, or to the device
/// once the exporter's buffer is gone.
#[derive(Debug)]
pub struct Import {
    fd: OwnedFd,
    import_id: u64,
    size: u64,
    buffer_id: u64,
    seqno: u64,
    attachment: u32,
    read_only: bool,
}

impl Import {
    /// The import's id.
    pub fn id(&self) -> u64 {
        self.import_id
    }

    /// The buffer's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The exporter's id of the buffer.
    pub fn buffer_id(&self) -> u64 {
        self.buffer_id
    }

    /// The exporter's last update when the dma-buf was made.
    pub fn seqno(&self) -> u64 {
        self.seqno
    }

    /// The attachment it came through.
    pub fn attachment(&self) -> u32 {
        self.attachment
    }

    /// Whether it may only be read.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Maps the whole dma-buf (the buffer rounded up to a page), shared,
    /// and writable unless the import is read-only.
    pub fn map(&self) -> Result<ImportMapping> {
        let len = self.size.div_ceil(page_size()) * page_size();
        Ok(ImportMapping {
            map: Mapping::with_access(self.fd.as_fd(), len, !self.read_only)?,
            size: self.size as usize,
            writable: !self.read_only,
        })
    }
}

impl AsFd for Import {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Import {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A mapping of an import's dma-buf: the other guest's memory.
#[derive(Debug)]
pub struct ImportMapping {
    map: Mapping,
    size: usize,
    writable: bool,
}

impl ImportMapping {
    /// The buffer's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.map.as_slice()[..self.size]
    }

    /// The buffer's bytes, to write; `None` for a read-only import.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if self.writable {
            Some(&mut self.map.as_mut_slice()[..self.size])
        } else {
            None
        }
    }
}

/// What the device says of an import now ([`Device::import_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportInfo {
    /// The import's id.
    pub import_id: u64,
    /// The buffer's size.
    pub size: u64,
    /// The exporter's id of the buffer.
    pub buffer_id: u64,
    /// The exporter's last update given to the import.
    pub seqno: u64,
    /// The attachment it came through.
    pub attachment: u32,
    /// Whether it may only be read.
    pub read_only: bool,
    /// The buffer's properties now.
    pub properties: Properties,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).unwrap_or(4096).max(1)
}

/// The bytes of a name, NUL-padded into `out`; `false` if it does not fit
/// with a NUL.
fn put_name(out: &mut [u8], name: &str) -> bool {
    if name.len() >= out.len() {
        return false;
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    true
}

impl Device {
    /// Imports the buffers the guest `source` (as the host names it)
    /// registers under `application`, as far as the host allows (`EACCES`
    /// otherwise). Returns the attachment's number, which the import events
    /// carry.
    pub fn attach(&self, source: &str, application: &str) -> Result<u32> {
        if !is_valid_name(application) {
            return Err(Error::InvalidApplication(application.to_owned()));
        }
        let mut arg = uapi::Attach::default();
        let valid = !source.is_empty()
            && source
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !valid || !put_name(&mut arg.source, source) {
            return Err(Error::InvalidSource(source.to_owned()));
        }
        put_name(&mut arg.application, application);
        ioctl(self.as_fd(), uapi::IOC_ATTACH, "ATTACH", &mut arg)?;
        Ok(arg.attachment)
    }

    /// Ends an attachment: no more imports come through it. Its imports
    /// stay until they are closed.
    pub fn detach(&self, attachment: u32) -> Result<()> {
        let mut arg = attachment;
        ioctl(self.as_fd(), uapi::IOC_DETACH, "DETACH", &mut arg)
    }

    /// A dma-buf of import `import_id` of this open file.
    pub fn import(&self, import_id: u64) -> Result<Import> {
        let mut arg = uapi::Import {
            import_id,
            ..Default::default()
        };
        ioctl(self.as_fd(), uapi::IOC_IMPORT, "IMPORT", &mut arg)?;
        // SAFETY: the ioctl succeeded: `fd` is a new descriptor, ours.
        let fd = unsafe { OwnedFd::from_raw_fd(arg.fd) };
        Ok(Import {
            fd,
            import_id,
            size: arg.size,
            buffer_id: arg.buffer_id,
            seqno: arg.seqno,
            attachment: arg.attachment,
            read_only: arg.flags & uapi::IMPORT_READ_ONLY != 0,
        })
    }

    /// What the device says of import `import_id` now, with its buffer's
    /// properties.
    pub fn import_info(&self, import_id: u64) -> Result<ImportInfo> {
        let mut props = vec![0u8; 256];
        loop {
            let mut arg = uapi::ImportInfo {
                import_id,
                props: props.as_mut_ptr() as u64,
                props_size: props.len() as u32,
                ..Default::default()
            };
            ioctl(self.as_fd(), uapi::IOC_IMPORT_INFO, "IMPORT_INFO", &mut arg)?;
            let size = arg.props_size as usize;
            if size > props.len() {
                // They did not fit: again, with room for them.
                props.resize(size, 0);
                continue;
            }
            return Ok(ImportInfo {
                import_id,
                size: arg.size,
                buffer_id: arg.buffer_id,
                seqno: arg.seqno,
                attachment: arg.attachment,
                read_only: arg.flags & uapi::IMPORT_READ_ONLY != 0,
                properties: Properties::parse(&props[..size])?,
            });
        }
    }

    /// Done with update `seqno` of import `import_id` (and those before):
    /// the exporter hears of it once every consumer is.
    pub fn import_release(&self, import_id: u64, seqno: u64) -> Result<()> {
        let mut arg = uapi::ImportRelease { import_id, seqno };
        ioctl(
            self.as_fd(),
            uapi::IOC_IMPORT_RELEASE,
            "IMPORT_RELEASE",
            &mut arg,
        )
    }

    /// Gives import `import_id`, which has no dma-buf alive, back to the
    /// device (`EBUSY` while one is).
    pub fn import_close(&self, import_id: u64) -> Result<()> {
        let mut arg = import_id;
        ioctl(
            self.as_fd(),
            uapi::IOC_IMPORT_CLOSE,
            "IMPORT_CLOSE",
            &mut arg,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_with_a_nul() {
        let mut out = [0u8; 4];
        assert!(put_name(&mut out, "abc"));
        assert_eq!(&out, b"abc\0");
        assert!(!put_name(&mut out, "abcd"));
    }

    #[test]
    fn import_events_read_in_place_of_events() {
        let raw = uapi::ImportEvent {
            type_: uapi::EVENT_IMPORT_ADDED,
            attachment: 3,
            import_id: 7,
            seqno: 2,
            size: 8192,
            buffer_id: 11,
            flags: uapi::IMPORT_READ_ONLY,
            reserved: [0; 11],
        };
        // SAFETY: plain integer records of the same size.
        let e: uapi::Event = unsafe { std::mem::transmute(raw) };
        assert_eq!(
            crate::Event::from(&e),
            crate::Event::ImportAdded {
                attachment: 3,
                import_id: 7,
                buffer_id: 11,
                size: 8192,
                seqno: 2,
                read_only: true,
            }
        );
    }
}
