// SPDX-License-Identifier: GPL-2.0

//! dma-bufs: importing them, and exporting I/O memory as them.
//!
//! An importer takes a dma-buf from a file descriptor with [`DmaBuf::from_fd`], attaches its own
//! DMA device with [`DmaBuf::attach`] and maps the attachment with [`Attachment::map`]. What it
//! may use then is the DMA addresses and lengths of the mapping's scatter table, never its
//! pages: those belong to the exporter (and `CONFIG_DMABUF_DEBUG` scrambles them to catch
//! importers that look).
//!
//! The attachment is static: the exporter keeps the buffer pinned in place while it is mapped.
//!
//! A module using this must import the `DMA_BUF` symbol namespace (`imports_ns: ["DMA_BUF"]`).
//!
//! Exporters of I/O memory use [`export::IoMemExport`].
//!
//! C header: [`include/linux/dma-buf.h`](srctree/include/linux/dma-buf.h)

use crate::{
    bindings, device, dma::DataDirection, error::from_err_ptr, prelude::*, scatterlist::SGTable,
    sync::aref::ARef,
};
use core::ptr::NonNull;

pub mod export;

/// A reference to a dma-buf.
///
/// # Invariants
///
/// `ptr` points to a `struct dma_buf` on which this value holds a file reference, dropped with
/// `dma_buf_put()`.
pub struct DmaBuf {
    ptr: NonNull<bindings::dma_buf>,
}

// SAFETY: A dma-buf reference can be used and dropped from any thread.
unsafe impl Send for DmaBuf {}

// SAFETY: `DmaBuf` has no interior mutability; shared access only reads immutable fields.
unsafe impl Sync for DmaBuf {}

impl DmaBuf {
    /// Takes a reference to the dma-buf open as `fd` in the current task.
    ///
    /// Fails with `EBADF` if `fd` is not open and `EINVAL` if it is not a dma-buf.
    pub fn from_fd(fd: i32) -> Result<Self> {
        // SAFETY: `dma_buf_get()` may be called with any value; it looks `fd` up in the current
        // task's file table.
        let ptr = from_err_ptr(unsafe { bindings::dma_buf_get(fd) })?;
        // INVARIANT: `dma_buf_get()` returned a dma-buf with a file reference for us.
        Ok(DmaBuf {
            ptr: NonNull::new(ptr).ok_or(EINVAL)?,
        })
    }

    /// Takes over a reference to a dma-buf.
    ///
    /// # Safety
    ///
    /// `ptr` points to a live dma-buf on whose file the caller holds a reference, which the new
    /// value takes over.
    pub(crate) unsafe fn from_raw(ptr: *mut bindings::dma_buf) -> Result<Self> {
        // INVARIANT: By the safety requirements the reference is ours.
        Ok(DmaBuf {
            ptr: NonNull::new(ptr).ok_or(EINVAL)?,
        })
    }

    /// Turns the reference into a reference to the dma-buf's file, for instance to install it in
    /// a file descriptor ([`crate::fs::file::FileDescriptorReservation::fd_install`]).
    pub fn into_file(self) -> ARef<crate::fs::File> {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: By the type invariants `ptr` is a live dma-buf whose file never changes and on
        // which `this` holds a reference; it is handed to the `ARef`, and `this` is not dropped.
        // `File` is a transparent wrapper of `struct file`.
        unsafe {
            let file = (*this.ptr.as_ptr()).file;
            ARef::from_raw(NonNull::new_unchecked(file.cast()))
        }
    }

    /// Returns true if `file` is this dma-buf's file.
    ///
    /// A caller that checked a file it got from a descriptor, and then takes the dma-buf from the
    /// same descriptor, knows this way that the descriptor did not change in between.
    pub fn is_file(&self, file: &crate::fs::LocalFile) -> bool {
        // SAFETY: By the type invariants `ptr` is a live dma-buf; `file` never changes.
        core::ptr::eq(unsafe { (*self.ptr.as_ptr()).file }, file.as_ptr())
    }

    /// Returns the size of the dma-buf in bytes (fixed for its lifetime).
    pub fn size(&self) -> usize {
        // SAFETY: By the type invariants `ptr` is a live dma-buf; `size` never changes.
        unsafe { (*self.ptr.as_ptr()).size }
    }

    /// Waits until the writes that the dma-buf's fences announce (those of usage
    /// `DMA_RESV_USAGE_WRITE` in its reservation object) are done, for at most `timeout`; a
    /// signal ends the wait.
    ///
    /// Fails with `ETIMEDOUT` if they are not done in time, `ERESTARTSYS` if a signal came.
    pub fn wait_for_writes(&self, timeout: crate::time::Jiffies) -> Result {
        // SAFETY: By the type invariants `ptr` is a live dma-buf; its `resv` lives as long as it
        // does. `dma_resv_wait_timeout()` takes the fences under RCU and may sleep.
        let ret = unsafe {
            bindings::dma_resv_wait_timeout(
                (*self.ptr.as_ptr()).resv,
                bindings::dma_resv_usage_DMA_RESV_USAGE_WRITE,
                true,
                timeout,
            )
        };
        match ret {
            0 => Err(ETIMEDOUT),
            r if r < 0 => Err(Error::from_errno(i32::try_from(r).unwrap_or(-22))),
            _ => Ok(()),
        }
    }

    /// Attaches `dev` to the dma-buf as a static importer.
    ///
    /// # Safety
    ///
    /// The attachment must be dropped while a driver is bound to `dev`.
    pub unsafe fn attach(self, dev: ARef<device::Device>) -> Result<Attachment> {
        // SAFETY: By the type invariants `ptr` is a live dma-buf; `dev` is a valid device with a
        // bound driver (by the safety requirements).
        let attach =
            from_err_ptr(unsafe { bindings::dma_buf_attach(self.ptr.as_ptr(), dev.as_raw()) })?;
        // INVARIANT: `dma_buf_attach()` returned a new attachment of `dev`.
        Ok(Attachment {
            attach: NonNull::new(attach).ok_or(EINVAL)?,
            dmabuf: self,
            _dev: dev,
        })
    }
}

impl Clone for DmaBuf {
    fn clone(&self) -> Self {
        // SAFETY: By the type invariants `ptr` is a live dma-buf, on whose file we hold a
        // reference; `get_file()` takes another, as `get_dma_buf()` does, which the clone's
        // `dma_buf_put()` drops.
        unsafe { bindings::get_file((*self.ptr.as_ptr()).file) };
        // INVARIANT: The clone holds the reference just taken.
        DmaBuf { ptr: self.ptr }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: By the type invariants this value holds a reference, dropped once, here.
        unsafe { bindings::dma_buf_put(self.ptr.as_ptr()) };
    }
}

/// A device attached to a dma-buf.
///
/// # Invariants
///
/// `attach` is an attachment of `_dev` to `dmabuf`, made by `dma_buf_attach()` and detached only
/// when this is dropped.
pub struct Attachment {
    attach: NonNull<bindings::dma_buf_attachment>,
    dmabuf: DmaBuf,
    _dev: ARef<device::Device>,
}

// SAFETY: An attachment can be used and detached from any thread.
unsafe impl Send for Attachment {}

// SAFETY: `Attachment` has no interior mutability.
unsafe impl Sync for Attachment {}

impl Attachment {
    /// Returns the dma-buf.
    pub fn dma_buf(&self) -> &DmaBuf {
        &self.dmabuf
    }

    /// Maps the attachment for DMA in direction `dir`.
    ///
    /// Fails if the exporter cannot make its memory reachable by the attached device.
    pub fn map(self, dir: DataDirection) -> Result<MappedAttachment> {
        // SAFETY: By the type invariants `attach` is a live attachment. The `_unlocked` variant
        // takes the reservation lock itself.
        let sgt = from_err_ptr(unsafe {
            bindings::dma_buf_map_attachment_unlocked(self.attach.as_ptr(), dir.into())
        })?;
        // INVARIANT: `sgt` was just mapped for this attachment with `dir`.
        Ok(MappedAttachment {
            sgt: NonNull::new(sgt).ok_or(EINVAL)?,
            attach: self,
            dir,
        })
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // SAFETY: By the type invariants `attach` is an attachment of `dmabuf`, detached once,
        // here, before the dma-buf reference is dropped.
        unsafe { bindings::dma_buf_detach(self.dmabuf.ptr.as_ptr(), self.attach.as_ptr()) };
    }
}

/// The mapping of an [`Attachment`]: the buffer's memory as the attached device sees it.
///
/// # Invariants
///
/// `sgt` was returned by `dma_buf_map_attachment_unlocked()` for `attach` with `dir`, and is
/// unmapped only when this is dropped.
pub struct MappedAttachment {
    sgt: NonNull<bindings::sg_table>,
    attach: Attachment,
    dir: DataDirection,
}

// SAFETY: A mapping can be used and unmapped from any thread.
unsafe impl Send for MappedAttachment {}

// SAFETY: `MappedAttachment` has no interior mutability; the table is only read.
unsafe impl Sync for MappedAttachment {}

impl MappedAttachment {
    /// Returns the scatter table of the mapping. Only its DMA addresses and lengths
    /// ([`crate::scatterlist::SGEntry::dma_address`], [`crate::scatterlist::SGEntry::dma_len`])
    /// are the importer's to use.
    pub fn sg_table(&self) -> &SGTable {
        // SAFETY: By the type invariants `sgt` stays mapped, and the exporter does not change
        // it, for as long as `self` lives.
        unsafe { SGTable::from_raw(self.sgt.as_ptr()) }
    }

    /// Returns the attachment.
    pub fn attachment(&self) -> &Attachment {
        &self.attach
    }
}

impl Drop for MappedAttachment {
    fn drop(&mut self) {
        // SAFETY: By the type invariants `sgt` is the mapping of `attach` with `dir`, unmapped
        // once, here.
        unsafe {
            bindings::dma_buf_unmap_attachment_unlocked(
                self.attach.attach.as_ptr(),
                self.sgt.as_ptr(),
                self.dir.into(),
            )
        };
    }
}
