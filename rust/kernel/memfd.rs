// SPDX-License-Identifier: GPL-2.0

//! Memory files (`memfd_create()`): their seals, and long-term pinning of their folios.
//!
//! A driver that hands the memory of a memfd to a device for an unbounded time pins the folios
//! with [`PinnedFolios::pin_sealed`], as `udmabuf` does, once it checked that the `F_SEAL_SHRINK`
//! seal keeps truncation from taking the pages away underneath the device. The folios are marked
//! dirty when they are unpinned, since the device may have written them.
//!
//! C headers: [`include/linux/memfd.h`](srctree/include/linux/memfd.h) and
//! [`include/linux/mm.h`](srctree/include/linux/mm.h)

use crate::{
    alloc::KVVec,
    bindings, device,
    dma::{
        DataDirection,
        DmaAddress, //
    },
    fs::LocalFile,
    prelude::*,
    sync::aref::ARef,
};
use core::ptr::NonNull;

/// The file may not shrink (`F_SEAL_SHRINK`).
pub const SEAL_SHRINK: u32 = bindings::F_SEAL_SHRINK;
/// The file may not be written (`F_SEAL_WRITE`).
pub const SEAL_WRITE: u32 = bindings::F_SEAL_WRITE;
/// No new writable mappings of the file may be made (`F_SEAL_FUTURE_WRITE`).
pub const SEAL_FUTURE_WRITE: u32 = bindings::F_SEAL_FUTURE_WRITE;

/// Returns the seals (`F_SEAL_*`) of `file`, or `EINVAL` if it is not a memfd (shmem or
/// hugetlbfs).
///
/// Seals may be added at any time; [`PinnedFolios::pin_sealed`] holds them still while it pins.
pub fn seals(file: &LocalFile) -> Result<u32> {
    // SAFETY: `file.as_ptr()` is a valid file for the duration of the call.
    let ret = unsafe { bindings::memfd_get_seals(file.as_ptr()) };
    if ret < 0 {
        return Err(Error::from_errno(ret));
    }
    Ok(ret as u32)
}

/// The inode of a file, locked shared (`inode_lock_shared()`) until this is dropped.
///
/// # Invariants
///
/// `file`'s inode is locked shared by this value.
struct InodeSharedLock<'a> {
    file: &'a LocalFile,
}

impl<'a> InodeSharedLock<'a> {
    fn new(file: &'a LocalFile) -> Self {
        // SAFETY: `file.as_ptr()` is a valid file, whose inode lives as long as the file.
        unsafe { bindings::inode_lock_shared(bindings::file_inode(file.as_ptr())) };
        // INVARIANT: locked just above.
        InodeSharedLock { file }
    }
}

impl Drop for InodeSharedLock<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants the inode is locked shared by this value; `file` is
        // still valid (it is borrowed).
        unsafe { bindings::inode_unlock_shared(bindings::file_inode(self.file.as_ptr())) };
    }
}

/// One physically contiguous piece of a pinned memfd range, inside one folio.
#[derive(Clone, Copy)]
pub struct FolioPiece {
    folio: NonNull<bindings::folio>,
    /// Byte offset of the piece in its folio.
    pub offset: usize,
    /// Length of the piece in bytes.
    pub len: usize,
}

impl FolioPiece {
    /// Returns the physical address of the piece.
    pub fn phys_addr(&self) -> u64 {
        // SAFETY: `FolioPiece` values only come from `PinnedFolios::pieces`, whose folios are
        // pinned while the pieces may be used.
        let pfn = unsafe { bindings::folio_pfn(self.folio.as_ptr()) };
        ((pfn as u64) << bindings::PAGE_SHIFT) + self.offset as u64
    }
}

/// The folios behind a range of a memfd, pinned for long-term use by a device (`FOLL_LONGTERM`).
///
/// # Invariants
///
/// `folios[..]` were pinned by `memfd_pin_folios()` and are unpinned only when this is dropped;
/// `offset` is the offset of the range in the first folio and `len` its length in bytes.
pub struct PinnedFolios {
    folios: KVVec<NonNull<bindings::folio>>,
    offset: usize,
    len: usize,
}

// SAFETY: Pinned folios can be used and unpinned from any thread.
unsafe impl Send for PinnedFolios {}

// SAFETY: `PinnedFolios` has no interior mutability; shared access only reads folio metadata.
unsafe impl Sync for PinnedFolios {}

impl PinnedFolios {
    /// Pins the folios behind `len` bytes of `file` from byte `start`.
    ///
    /// `start` and `len` must be multiples of the page size and `len` non-zero, and the range
    /// must lie inside the file (`EINVAL` otherwise, also if `file` is not a memfd). The pages are
    /// allocated if the file had none there yet.
    pub fn pin(file: &LocalFile, start: u64, len: u64) -> Result<Self> {
        let page = bindings::PAGE_SIZE as u64;
        if len == 0 || start % page != 0 || len % page != 0 {
            return Err(EINVAL);
        }
        let end = start.checked_add(len - 1).ok_or(EINVAL)?;
        let start_off = i64::try_from(start).map_err(|_| EINVAL)?;
        let end_off = i64::try_from(end).map_err(|_| EINVAL)?;
        let max = usize::try_from(len / page).map_err(|_| EINVAL)?;
        let max_folios = u32::try_from(max).map_err(|_| E2BIG)?;
        let len = usize::try_from(len).map_err(|_| EINVAL)?;

        let mut folios: KVVec<NonNull<bindings::folio>> = KVVec::with_capacity(max, GFP_KERNEL)?;
        let mut offset: usize = 0;

        // SAFETY: `file.as_ptr()` is a valid file; `folios` has room for `max_folios` pointers
        // and `offset` is valid for writes. The function checks that the file is a memfd and
        // that the range lies inside it.
        let ret = unsafe {
            bindings::memfd_pin_folios(
                file.as_ptr(),
                start_off,
                end_off,
                folios.as_mut_ptr().cast(),
                max_folios,
                &mut offset,
            )
        };
        if ret < 0 {
            return Err(Error::from_errno(ret as i32));
        }
        let nr = usize::try_from(ret).map_err(|_| EINVAL)?;
        if nr == 0 || nr > max {
            // Not possible for a successful pin of a non-empty range; never trust it blindly.
            return Err(EINVAL);
        }
        // SAFETY: `memfd_pin_folios()` wrote `nr <= max` non-null folio pointers.
        unsafe { folios.inc_len(nr) };

        // INVARIANT: the folios were pinned above.
        Ok(PinnedFolios {
            folios,
            offset,
            len,
        })
    }

    /// Pins the folios behind `len` bytes of the memfd `file` from byte `start`, as
    /// [`PinnedFolios::pin`] does, once `check` accepted the memfd's seals.
    ///
    /// The seals cannot change between the check and the pin: `F_ADD_SEALS` takes the inode lock
    /// exclusively, which this holds shared meanwhile, as udmabuf does. Once the folios are
    /// pinned, a write seal cannot be added (`memfd_add_seals()` waits for pins to go, then
    /// fails with `EBUSY`).
    pub fn pin_sealed(
        file: &LocalFile,
        start: u64,
        len: u64,
        check: impl FnOnce(u32) -> Result,
    ) -> Result<Self> {
        let _lock = InodeSharedLock::new(file);
        check(seals(file)?)?;
        Self::pin(file, start, len)
    }

    /// Returns the length of the pinned range in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns true if the pinned range is empty (never, for a successful [`PinnedFolios::pin`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns the pieces of the range in order, one per folio.
    pub fn pieces(&self) -> impl Iterator<Item = FolioPiece> + '_ {
        let mut left = self.len;
        self.folios
            .iter()
            .enumerate()
            .map_while(move |(i, &folio)| {
                if left == 0 {
                    return None;
                }
                let offset = if i == 0 { self.offset } else { 0 };
                // SAFETY: By the type invariants the folio is pinned.
                let size = unsafe { bindings::folio_size(folio.as_ptr()) };
                let len = size.saturating_sub(offset).min(left);
                left -= len;
                Some(FolioPiece { folio, offset, len })
            })
    }

    /// Maps the pinned range for DMA by `dev`.
    ///
    /// # Safety
    ///
    /// The returned mapping must be dropped while a driver is bound to `dev`.
    pub unsafe fn dma_map(
        self,
        dev: ARef<device::Device>,
        dir: DataDirection,
    ) -> Result<DmaMappedFolios> {
        let mut mapped = DmaMappedFolios {
            maps: KVVec::with_capacity(self.folios.len(), GFP_KERNEL)?,
            folios: self,
            dev,
            dir,
        };
        for piece in mapped.folios.pieces() {
            // SAFETY: `dev` is a valid device with a bound driver (by the safety requirements);
            // the piece lies inside a pinned folio.
            let addr = unsafe {
                bindings::dma_map_page_attrs(
                    mapped.dev.as_raw(),
                    bindings::folio_page(piece.folio.as_ptr(), 0),
                    piece.offset,
                    piece.len,
                    dir.into(),
                    0,
                )
            };
            // SAFETY: `addr` was just returned by `dma_map_page_attrs()` for this device.
            if unsafe { bindings::dma_mapping_error(mapped.dev.as_raw(), addr) } != 0 {
                // Drop unmaps the pieces mapped so far.
                return Err(ENOMEM);
            }
            // Cannot fail: room for one entry per folio was reserved above.
            mapped.maps.push((addr, piece.len), GFP_KERNEL)?;
        }
        Ok(mapped)
    }
}

impl Drop for PinnedFolios {
    fn drop(&mut self) {
        // The device may have written them: they must not be taken for clean (and dropped
        // instead of written back) once they are no longer pinned. A folio dirty already is left
        // alone, as `unpin_user_pages_dirty_lock()` does: if writeback cleans it meanwhile, it
        // writes back what the device wrote too. Folios written through a mapping are dirty, and
        // locking each of them was most of the time an unpin took.
        for folio in self.folios.iter() {
            // SAFETY: By the type invariants the folio is pinned, so it is a live folio.
            if !unsafe { bindings::folio_test_dirty(folio.as_ptr()) } {
                // SAFETY: As above.
                unsafe { bindings::folio_mark_dirty_lock(folio.as_ptr()) };
            }
        }
        // SAFETY: By the type invariants the folios were pinned by `memfd_pin_folios()` and are
        // unpinned once, here.
        unsafe { bindings::unpin_folios(self.folios.as_mut_ptr().cast(), self.folios.len() as _) };
    }
}

/// A pinned memfd range mapped for DMA by a device, one mapping per folio.
///
/// # Invariants
///
/// Every `(addr, len)` in `maps` was mapped by `dma_map_page_attrs()` for `dev` with direction
/// `dir`, and is unmapped only when this is dropped, before `folios` are unpinned.
pub struct DmaMappedFolios {
    maps: KVVec<(DmaAddress, usize)>,
    folios: PinnedFolios,
    dev: ARef<device::Device>,
    dir: DataDirection,
}

impl DmaMappedFolios {
    /// Returns the DMA address and length of each mapped piece, in order.
    pub fn dma_ranges(&self) -> impl Iterator<Item = (DmaAddress, usize)> + '_ {
        self.maps.iter().copied()
    }

    /// Returns the pinned folios.
    pub fn folios(&self) -> &PinnedFolios {
        &self.folios
    }
}

impl Drop for DmaMappedFolios {
    fn drop(&mut self) {
        for &(addr, len) in self.maps.iter() {
            // SAFETY: By the type invariants the mapping was made for `dev` with `dir`, and the
            // safety requirements of `PinnedFolios::dma_map` keep a driver bound to `dev` until
            // now.
            unsafe {
                bindings::dma_unmap_page_attrs(self.dev.as_raw(), addr, len, self.dir.into(), 0)
            };
        }
    }
}
