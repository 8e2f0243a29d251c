// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! A first-fit allocator of an import region: page-aligned ranges, each a
//! whole number of pages, that do not overlap.

use std::collections::BTreeMap;

/// The page of the import region: offsets and lengths are multiples of it.
pub const PAGE_SIZE: u64 = 4096;

/// The ranges taken in a region of `size` bytes.
#[derive(Debug)]
pub struct Allocator {
    size: u64,
    /// Start of each range taken, with its length.
    taken: BTreeMap<u64, u64>,
}

impl Allocator {
    /// An empty region of `size` bytes (a multiple of [`PAGE_SIZE`]).
    pub fn new(size: u64) -> Self {
        Self {
            size,
            taken: BTreeMap::new(),
        }
    }

    /// `len` rounded up to whole pages; `None` if that overflows.
    pub fn span(len: u64) -> Option<u64> {
        len.checked_next_multiple_of(PAGE_SIZE)
    }

    /// Takes the first free range that holds `len` bytes rounded up to
    /// pages, and returns its offset; `None` if there is none (or `len` is
    /// 0).
    pub fn allocate(&mut self, len: u64) -> Option<u64> {
        let span = Self::span(len).filter(|&s| s != 0)?;
        let mut at = 0;
        for (&start, &taken) in &self.taken {
            if start - at >= span {
                break;
            }
            at = start + taken;
        }
        if self.size.checked_sub(at)? < span {
            return None;
        }
        self.taken.insert(at, span);
        Some(at)
    }

    /// Gives back the range at `offset`; `false` if none starts there.
    pub fn free(&mut self, offset: u64) -> bool {
        self.taken.remove(&offset).is_some()
    }

    /// Gives back every range.
    pub fn clear(&mut self) {
        self.taken.clear();
    }

    /// The bytes taken.
    pub fn used(&self) -> u64 {
        self.taken.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_in_pages() {
        let mut a = Allocator::new(8 * PAGE_SIZE);
        assert_eq!(a.allocate(1), Some(0));
        assert_eq!(a.allocate(PAGE_SIZE + 1), Some(PAGE_SIZE));
        assert_eq!(a.allocate(PAGE_SIZE), Some(3 * PAGE_SIZE));
        assert_eq!(a.used(), 4 * PAGE_SIZE);
        // A hole of two pages: the first that fits, not the last.
        assert!(a.free(PAGE_SIZE));
        assert_eq!(a.allocate(3 * PAGE_SIZE), Some(4 * PAGE_SIZE));
        assert_eq!(a.allocate(PAGE_SIZE), Some(PAGE_SIZE));
        assert_eq!(a.allocate(PAGE_SIZE), Some(2 * PAGE_SIZE));
        assert_eq!(a.allocate(PAGE_SIZE), Some(7 * PAGE_SIZE));
        // Full.
        assert_eq!(a.allocate(1), None);
        assert!(!a.free(5 * PAGE_SIZE), "not the start of a range");
        a.clear();
        assert_eq!(a.allocate(8 * PAGE_SIZE), Some(0));
    }

    #[test]
    fn what_never_fits() {
        let mut a = Allocator::new(2 * PAGE_SIZE);
        assert_eq!(a.allocate(0), None);
        assert_eq!(a.allocate(2 * PAGE_SIZE + 1), None);
        assert_eq!(a.allocate(u64::MAX), None);
        assert_eq!(Allocator::span(u64::MAX), None);
        assert_eq!(Allocator::new(0).allocate(1), None);
        assert_eq!(a.allocate(2 * PAGE_SIZE), Some(0));
    }
}
