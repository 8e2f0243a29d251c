// SPDX-License-Identifier: GPL-2.0

//! Exporting I/O memory as dma-bufs.
//!
//! [`IoMemExport::new`] makes a dma-buf of one physically contiguous range of I/O memory that
//! has no `struct page`, such as a part of a PCI BAR: a virtio device's shared memory region, a
//! device's aperture. Importing devices get the range mapped for them with `dma_map_resource()`
//! (a one-entry scatter table with a DMA address and no page); user space maps it with `mmap()`
//! of the dma-buf, page by page on fault.
//!
//! The exporter can *revoke* the dma-buf ([`IoMemRevoke::revoke`]) when the memory is about to go
//! away or to be given to someone else: user mappings are zapped, and later faults, `mmap()`
//! calls and new device mappings fail, while the dma-buf itself lives on as long as its file
//! does. Device mappings made before the revocation cannot be taken back from a static importer:
//! an exporter that must reuse the memory waits for the dma-buf's release, which
//! [`IoMemOwner::released`] reports.
//!
//! C header: [`include/linux/dma-buf.h`](srctree/include/linux/dma-buf.h)

use super::DmaBuf;
use crate::{
    bindings,
    error::{from_err_ptr, to_result},
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    ThisModule,
};
use core::{marker::PhantomData, ptr::NonNull};

/// The owner of an exported range: told when the dma-buf is gone.
pub trait IoMemOwner: Send + Sync + 'static {
    /// Called once, when the last reference to the dma-buf is dropped: no file, mapping or
    /// device attachment reaches the range through it any more.
    fn released(&self);
}

/// What the dma-buf's file and its revocation handle share.
///
/// # Invariants
///
/// `state.file`, while `Some`, is the dma-buf's file, alive: the release callback sets it to
/// `None`, under the lock, before the file goes away.
#[pin_data]
struct Shared {
    #[pin]
    state: Mutex<State>,
    addr: u64,
    len: usize,
}

struct State {
    revoked: bool,
    file: Option<NonNull<bindings::file>>,
}

// SAFETY: `file` is only used under the lock, while the dma-buf's file is alive (the type
// invariant of `Shared`); a file may be used from any thread.
unsafe impl Send for State {}

/// The private data of an exported dma-buf (`dma_buf::priv`).
struct Priv<T: IoMemOwner> {
    shared: Arc<Shared>,
    owner: Arc<T>,
}

/// Revokes an exported range ([`IoMemExport::new`]).
pub struct IoMemRevoke {
    shared: Arc<Shared>,
}

impl IoMemRevoke {
    /// Takes the range away from everyone who reaches it through the dma-buf's file: user
    /// mappings are zapped, and faults, `mmap()` and new device mappings fail from now on.
    ///
    /// Device mappings made before stay until their importers unmap them.
    pub fn revoke(&self) {
        let mut state = self.shared.state.lock();
        state.revoked = true;
        if let Some(file) = state.file {
            // SAFETY: By the type invariants of `Shared` the file is alive while the lock is
            // held and `file` is `Some`. Every user mapping of the dma-buf has its file (see
            // `Ops::mmap`), so zapping the file's mapping zaps them all; later faults see
            // `revoked`. Faults take this lock under the mmap lock, and zapping takes the
            // file's `i_mmap_rwsem` under this lock, the order the mm takes them in.
            unsafe { bindings::unmap_mapping_range((*file.as_ptr()).f_mapping, 0, 0, 1) };
        }
    }

    /// Returns true if the range was revoked.
    pub fn is_revoked(&self) -> bool {
        self.shared.state.lock().revoked
    }
}

/// A dma-buf exporting a range of I/O memory.
pub struct IoMemExport;

impl IoMemExport {
    /// Exports `len` bytes of I/O memory at physical address `addr` as a new dma-buf.
    ///
    /// Both `addr` and `len` must be page-aligned, and `len` non-zero. The dma-buf's file is
    /// opened read and write when `writable`, else read-only (and its mappings may not be made
    /// writable). `owner` is told when the dma-buf is released.
    ///
    /// # Safety
    ///
    /// The range must be I/O memory (no `struct page`) that nothing but the returned dma-buf
    /// hands out, and must stay in place until `owner` is told the dma-buf was released, or
    /// until the returned [`IoMemRevoke`] was revoked and every device mapping made before was
    /// unmapped.
    pub unsafe fn new<T: IoMemOwner>(
        addr: u64,
        len: usize,
        writable: bool,
        name: &'static CStr,
        module: &'static ThisModule,
        owner: Arc<T>,
    ) -> Result<(DmaBuf, IoMemRevoke)> {
        let page = bindings::PAGE_SIZE as u64;
        let len64 = u64::try_from(len)?;
        // The one scatter table entry carries the length in 32 bits.
        if len == 0
            || addr % page != 0
            || len64 % page != 0
            || addr.checked_add(len64).is_none()
            || u32::try_from(len).is_err()
        {
            return Err(EINVAL);
        }
        let shared = Arc::pin_init(
            pin_init!(Shared {
                state <- new_mutex!(State {
                    revoked: false,
                    file: None,
                }),
                addr,
                len,
            }),
            GFP_KERNEL,
        )?;
        let priv_ = KBox::new(
            Priv {
                shared: shared.clone(),
                owner,
            },
            GFP_KERNEL,
        )?;
        let priv_ = KBox::into_raw(priv_);
        let info = bindings::dma_buf_export_info {
            exp_name: name.as_char_ptr(),
            owner: module.as_ptr(),
            ops: &Ops::<T>::DMA_BUF_OPS,
            size: len,
            flags: if writable {
                bindings::O_RDWR as i32
            } else {
                bindings::O_RDONLY as i32
            },
            resv: core::ptr::null_mut(),
            priv_: priv_.cast(),
        };
        // SAFETY: `info` is fully initialised; its ops are valid for the dma-buf's lifetime
        // (static), and `priv_` stays valid until `Ops::release` frees it.
        let dmabuf = match from_err_ptr(unsafe { bindings::dma_buf_export(&info) }) {
            Ok(dmabuf) => dmabuf,
            Err(e) => {
                // SAFETY: The export failed, so nothing else has `priv_`, which came from
                // `KBox::into_raw` above.
                drop(unsafe { KBox::from_raw(priv_) });
                return Err(e);
            }
        };
        // SAFETY: `dma_buf_export()` returned a live dma-buf with its file; the release
        // callback clears `file` under the lock before the file goes away.
        shared.state.lock().file = NonNull::new(unsafe { (*dmabuf).file });
        // SAFETY: `dma_buf_export()` gave us the one reference to the new dma-buf's file.
        let dmabuf = unsafe { DmaBuf::from_raw(dmabuf) }?;
        Ok((dmabuf, IoMemRevoke { shared }))
    }
}

/// The dma-buf and VMA callbacks of an export owned by `T`.
struct Ops<T: IoMemOwner>(PhantomData<T>);

impl<T: IoMemOwner> Ops<T> {
    const DMA_BUF_OPS: bindings::dma_buf_ops = bindings::dma_buf_ops {
        map_dma_buf: Some(Self::map_dma_buf),
        unmap_dma_buf: Some(Self::unmap_dma_buf),
        release: Some(Self::release),
        mmap: Some(Self::mmap),
        ..pin_init::zeroed()
    };

    const VM_OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
        fault: Some(Self::fault),
        ..pin_init::zeroed()
    };

    /// # Safety
    ///
    /// `dmabuf` is a dma-buf made by [`IoMemExport::new`] with this `T`, alive.
    unsafe fn priv_<'a>(dmabuf: *mut bindings::dma_buf) -> &'a Priv<T> {
        // SAFETY: By the safety requirements `priv_` is our `Priv<T>`, valid until release.
        unsafe { &*(*dmabuf).priv_.cast::<Priv<T>>() }
    }

    /// # Safety
    ///
    /// Called by the dma-buf core with a live attachment of our dma-buf.
    unsafe extern "C" fn map_dma_buf(
        attach: *mut bindings::dma_buf_attachment,
        dir: bindings::dma_data_direction,
    ) -> *mut bindings::sg_table {
        // SAFETY: By the safety requirements `attach` is live and belongs to our dma-buf.
        let (dmabuf, dev) = unsafe { ((*attach).dmabuf, (*attach).dev) };
        // SAFETY: As above, `dmabuf` is ours and alive.
        let shared = &unsafe { Self::priv_(dmabuf) }.shared;
        let state = shared.state.lock();
        if state.revoked {
            return ENODEV.to_ptr();
        }
        let sgt = match KBox::<bindings::sg_table>::new(pin_init::zeroed(), GFP_KERNEL) {
            Ok(sgt) => KBox::into_raw(sgt),
            Err(_) => return ENOMEM.to_ptr(),
        };
        // SAFETY: `sgt` is a zeroed table of ours; one entry, filled in below.
        if let Err(e) = to_result(unsafe { bindings::sg_alloc_table(sgt, 1, GFP_KERNEL.as_raw()) })
        {
            // SAFETY: `sgt` came from `KBox::into_raw` above and has no entries.
            drop(unsafe { KBox::from_raw(sgt) });
            return e.to_ptr();
        }
        // SAFETY: `dev` is the attached device, alive while attached; `addr` and `len` describe
        // I/O memory without pages (by the safety requirements of `IoMemExport::new`), which is
        // what `dma_map_resource()` maps.
        let dma = unsafe { bindings::dma_map_resource(dev, shared.addr, shared.len, dir, 0) };
        // SAFETY: `dev` and `dma` as just used.
        if unsafe { bindings::dma_mapping_error(dev, dma) } != 0 {
            // SAFETY: `sgt` was allocated above and came from `KBox::into_raw`.
            unsafe {
                bindings::sg_free_table(sgt);
                drop(KBox::from_raw(sgt));
            }
            return ENOMEM.to_ptr();
        }
        // SAFETY: `sgt` has one entry, `sgl`; an entry without a page carries only the DMA
        // address and length, as importers are to use it.
        unsafe {
            let sg = (*sgt).sgl;
            (*sg).dma_address = dma;
            (*sg).dma_length = shared.len as u32; // Checked by `IoMemExport::new`.
            (*sgt).nents = 1;
        }
        drop(state);
        sgt
    }

    /// # Safety
    ///
    /// Called by the dma-buf core with a table [`Self::map_dma_buf`] returned for `attach`.
    unsafe extern "C" fn unmap_dma_buf(
        attach: *mut bindings::dma_buf_attachment,
        sgt: *mut bindings::sg_table,
        dir: bindings::dma_data_direction,
    ) {
        // SAFETY: By the safety requirements `attach` is live and `sgt` is ours, made by
        // `map_dma_buf` with one mapped entry.
        unsafe {
            let dmabuf = (*attach).dmabuf;
            let len = Self::priv_(dmabuf).shared.len;
            bindings::dma_unmap_resource((*attach).dev, (*(*sgt).sgl).dma_address, len, dir, 0);
            bindings::sg_free_table(sgt);
            drop(KBox::from_raw(sgt));
        }
    }

    /// # Safety
    ///
    /// Called by the dma-buf core once, when the dma-buf's file is released.
    unsafe extern "C" fn release(dmabuf: *mut bindings::dma_buf) {
        // SAFETY: By the safety requirements the dma-buf is ours and nothing uses it any more;
        // `priv_` came from `KBox::into_raw` in `IoMemExport::new` and is freed once, here.
        let priv_ = unsafe { KBox::from_raw((*dmabuf).priv_.cast::<Priv<T>>()) };
        // INVARIANT: The file goes away after this; later revocations find `None`.
        priv_.shared.state.lock().file = None;
        priv_.owner.released();
    }

    /// # Safety
    ///
    /// Called by the dma-buf core with a new VMA of the dma-buf's file, whose offset and length
    /// it checked against the dma-buf's size.
    unsafe extern "C" fn mmap(
        dmabuf: *mut bindings::dma_buf,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: By the safety requirements `dmabuf` is ours and alive, `vma` a new VMA, not
        // yet visible to others.
        let (priv_, vma) = unsafe { (Self::priv_(dmabuf), crate::mm::virt::VmaNew::from_raw(vma)) };
        if priv_.shared.state.lock().revoked {
            return ENODEV.to_errno();
        }
        // A private mapping would copy I/O memory on write: only shared ones.
        if vma.flags() & bindings::VM_SHARED as usize == 0 {
            return EINVAL.to_errno();
        }
        vma.set_io();
        vma.set_dontexpand();
        vma.set_dontdump();
        vma.set_mixedmap();
        // SAFETY: The VMA is new and ours to set up; `priv_` outlives it, since the VMA holds
        // a reference to the dma-buf's file, whose release frees `priv_`.
        unsafe {
            (*vma.as_ptr()).vm_ops = &Self::VM_OPS;
            (*vma.as_ptr()).vm_private_data = core::ptr::from_ref(priv_).cast_mut().cast();
        }
        0
    }

    /// # Safety
    ///
    /// Called by the mm on a fault in a VMA [`Self::mmap`] set up.
    unsafe extern "C" fn fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
        // SAFETY: By the safety requirements `vmf` describes a fault in one of our VMAs, whose
        // private data is the dma-buf's `Priv<T>`, alive while the VMA is.
        let (vma, pgoff, address) = unsafe {
            let f = &(*vmf).__bindgen_anon_1;
            (f.vma, f.pgoff, f.address)
        };
        // SAFETY: As above.
        let shared = &unsafe { &*(*vma).vm_private_data.cast::<Priv<T>>() }.shared;
        let page = bindings::PAGE_SIZE as u64;
        let state = shared.state.lock();
        let offset = (pgoff as u64).checked_mul(page);
        match offset {
            Some(offset) if !state.revoked && offset < shared.len as u64 => {
                let pfn = (shared.addr + offset) / page;
                // SAFETY: `vma` is a shared mixed-map VMA of ours and `address` lies in it; the
                // pfn is of our I/O range, which stays in place while not revoked (the lock is
                // held, and revocation zaps under it).
                unsafe { bindings::vmf_insert_pfn(vma, address, pfn as c_ulong) }
            }
            _ => bindings::vm_fault_reason_VM_FAULT_SIGBUS,
        }
    }
}
