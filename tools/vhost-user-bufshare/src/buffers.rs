// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The buffers the driver registered: a table per device, each buffer's
//! ranges resolved to segments of guest memory, and zero-copy access to
//! their bytes through those segments.
//!
//! The table and the guest memory of a guest are shared ([`SharedState`],
//! one per guest) between the thread that serves its command queue and the
//! inspect socket
//! ([`crate::inspect`]), which reads and writes buffers directly in guest
//! memory.
//!
//! The table's changes that host programs hear about (a buffer complete,
//! updated, given new properties, removed; every buffer dropped) are told to
//! a [`TableObserver`], the consumer socket ([`crate::consumer`]), with the
//! state locked: in the order they happen.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

pub use bufshare_consumer::ResetReason;
use bufshare_consumer::{ByteRange, Rect};
use thiserror::Error as ThisError;
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend,
    GuestMemoryError, GuestMemoryLoadGuard, GuestMemoryMmap, GuestMemoryRegion,
};

use crate::holders::Holders;
use crate::props::Properties;

/// Why a range of guest memory is refused.
#[derive(Clone, Debug, PartialEq, Eq, ThisError)]
pub enum RangeError {
    /// A range of length 0.
    #[error("empty range at {0:#x}")]
    Empty(u64),
    /// `addr + len` does not fit in 64 bits.
    #[error("range {addr:#x}+{len:#x} overflows")]
    Overflow {
        /// Start of the range.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// A byte of the range is not guest RAM.
    #[error("range {addr:#x}+{len:#x}: {at:#x} is not guest RAM")]
    OutsideMemory {
        /// Start of the range.
        addr: u64,
        /// Its length.
        len: u64,
        /// The first byte that is not RAM.
        at: u64,
    },
}

/// Why bytes of a buffer cannot be read or written.
#[derive(Debug, ThisError)]
pub enum AccessError {
    /// No buffer has that id.
    #[error("no buffer {0}")]
    UnknownId(u64),
    /// Not all its ranges arrived yet.
    #[error("buffer {0} is incomplete")]
    Incomplete(u64),
    /// The bytes asked for are not all inside the buffer.
    #[error("{len} bytes at offset {offset} are outside the buffer of {size} bytes")]
    OutOfRange {
        /// Offset in the buffer.
        offset: u64,
        /// Number of bytes.
        len: u64,
        /// Size of the buffer.
        size: u64,
    },
    /// The device has no guest memory (no frontend connected).
    #[error("no guest memory")]
    NoMemory,
    /// Guest memory could not be accessed (its table changed).
    #[error("guest memory: {0}")]
    Memory(#[from] GuestMemoryError),
}

/// A piece of a buffer that lies in one guest memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Offset of its first byte in the buffer.
    pub offset: u64,
    /// Guest physical address.
    pub addr: u64,
    /// Length, non-zero.
    pub len: u64,
}

/// Splits the range `addr`, `len` of guest memory into segments that each
/// lie in one region of `mem`, the first one at `offset` in its buffer.
/// Adjacent regions are fine; a byte outside every region is not.
pub fn resolve_range<M: GuestMemoryBackend>(
    mem: &M,
    offset: u64,
    addr: u64,
    len: u64,
) -> Result<Vec<Segment>, RangeError> {
    if len == 0 {
        return Err(RangeError::Empty(addr));
    }
    let end = addr
        .checked_add(len)
        .ok_or(RangeError::Overflow { addr, len })?;
    let mut segments = Vec::new();
    let mut at = addr;
    while at < end {
        let region = mem
            .find_region(GuestAddress(at))
            .ok_or(RangeError::OutsideMemory { addr, len, at })?;
        // Bytes left in the region from `at` (which is in it), at least 1.
        let in_region = (region.last_addr().0 - at).saturating_add(1);
        let seg_len = in_region.min(end - at);
        segments.push(Segment {
            offset: offset + (at - addr),
            addr: at,
            len: seg_len,
        });
        at += seg_len;
    }
    Ok(segments)
}

/// A buffer the driver registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Its id, chosen by the driver.
    pub id: u64,
    /// Whose it is.
    pub application: String,
    /// Its size, in bytes.
    pub size: u64,
    /// Its properties, in the driver's order.
    pub props: Properties,
    /// Number of ranges it is made of.
    pub num_ranges: u32,
    /// Number of ranges received so far.
    pub ranges: u32,
    /// Bytes of the ranges received so far.
    pub received: u64,
    /// Its ranges, split at memory region boundaries, in order.
    pub segments: Vec<Segment>,
    /// Whether all its ranges arrived.
    pub complete: bool,
    /// Number of its last UPDATE (0 before the first).
    pub seqno: u64,
}

impl Buffer {
    /// A buffer with no ranges yet.
    pub fn new(
        id: u64,
        application: String,
        size: u64,
        num_ranges: u32,
        props: Properties,
    ) -> Self {
        Self {
            id,
            application,
            size,
            props,
            num_ranges,
            ranges: 0,
            received: 0,
            segments: Vec::new(),
            complete: false,
            seqno: 0,
        }
    }

    /// Appends ranges, already resolved; `count` ranges of `bytes` bytes in
    /// all. The caller checked that they fit.
    pub fn push_ranges(&mut self, segments: Vec<Segment>, count: u32, bytes: u64) {
        self.segments.extend(segments);
        self.ranges += count;
        self.received += bytes;
        self.complete = self.ranges == self.num_ranges;
    }

    /// Checks that `len` bytes at `offset` can be accessed.
    fn check_access(&self, offset: u64, len: u64) -> Result<(), AccessError> {
        if !self.complete {
            return Err(AccessError::Incomplete(self.id));
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(AccessError::OutOfRange {
                offset,
                len,
                size: self.size,
            }),
        }
    }

    /// Calls `f(guest address, start, end)` for each piece of the
    /// `len` bytes at `offset`, `start..end` being the piece's place among
    /// those bytes.
    fn for_each_piece<F>(&self, offset: u64, len: u64, mut f: F) -> Result<(), AccessError>
    where
        F: FnMut(GuestAddress, usize, usize) -> Result<(), AccessError>,
    {
        self.check_access(offset, len)?;
        let end = offset + len;
        // The first segment that ends after `offset`.
        let first = self
            .segments
            .partition_point(|s| s.offset + s.len <= offset);
        let mut at = offset;
        for seg in &self.segments[first..] {
            if at >= end {
                break;
            }
            let in_seg = at - seg.offset;
            let n = (seg.len - in_seg).min(end - at);
            let start = (at - offset) as usize;
            f(GuestAddress(seg.addr + in_seg), start, start + n as usize)?;
            at += n;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset` straight from guest memory.
    pub fn read(
        &self,
        mem: &GuestMemoryMmap,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), AccessError> {
        self.for_each_piece(offset, buf.len() as u64, |addr, start, end| {
            mem.read_slice(&mut buf[start..end], addr)?;
            Ok(())
        })
    }

    /// Writes `data` at `offset` straight into guest memory.
    pub fn write(
        &self,
        mem: &GuestMemoryMmap,
        offset: u64,
        data: &[u8],
    ) -> Result<(), AccessError> {
        self.for_each_piece(offset, data.len() as u64, |addr, start, end| {
            mem.write_slice(&data[start..end], addr)?;
            Ok(())
        })
    }

    /// Its description for `bufshare-inspect list`: one line
    /// `id=<n> application=<s> size=<n> ranges=<n> complete=<0|1> seqno=<n>`
    /// then a TAB and `name=value` for each property (values as they are,
    /// which may not be UTF-8).
    pub fn describe(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = writeln!(
            out,
            "id={} application={} size={} ranges={} complete={} seqno={}",
            self.id,
            self.application,
            self.size,
            self.ranges,
            u8::from(self.complete),
            self.seqno
        );
        for prop in self.props.iter() {
            out.push(b'\t');
            out.extend_from_slice(prop.name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(&prop.value);
            out.push(b'\n');
        }
    }
}

/// The buffers of one device, by id.
#[derive(Debug, Default)]
pub struct BufferTable {
    buffers: BTreeMap<u64, Buffer>,
}

impl BufferTable {
    /// Number of buffers, complete or not.
    pub fn len(&self) -> usize {
        self.buffers.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }

    /// The buffer `id`.
    pub fn get(&self, id: u64) -> Option<&Buffer> {
        self.buffers.get(&id)
    }

    /// The buffer `id`, to change it.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Buffer> {
        self.buffers.get_mut(&id)
    }

    /// Whether a buffer has this id.
    pub fn contains(&self, id: u64) -> bool {
        self.buffers.contains_key(&id)
    }

    /// Adds a buffer, replacing any with the same id.
    pub fn insert(&mut self, buffer: Buffer) {
        self.buffers.insert(buffer.id, buffer);
    }

    /// Removes the buffer `id`.
    pub fn remove(&mut self, id: u64) -> Option<Buffer> {
        self.buffers.remove(&id)
    }

    /// Removes the buffer `id` if it is incomplete; returns whether it did.
    pub fn remove_incomplete(&mut self, id: u64) -> bool {
        if self.buffers.get(&id).is_some_and(|b| !b.complete) {
            self.buffers.remove(&id);
            true
        } else {
            false
        }
    }

    /// Removes every buffer.
    pub fn clear(&mut self) {
        self.buffers.clear();
    }

    /// The buffers, by increasing id.
    pub fn iter(&self) -> impl Iterator<Item = &Buffer> {
        self.buffers.values()
    }

    /// The description of every buffer ([`Buffer::describe`]), by
    /// increasing id.
    pub fn describe(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for buffer in self.iter() {
            buffer.describe(&mut out);
        }
        out
    }
}

/// An UPDATE the device accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateInfo {
    /// The buffer's new sequence number.
    pub seqno: u64,
    /// The bytes that changed, with `VIRTIO_BUFSHARE_UPDATE_F_RANGE`.
    pub range: Option<ByteRange>,
    /// The pixels that changed, with `VIRTIO_BUFSHARE_UPDATE_F_RECT`.
    pub rect: Option<Rect>,
}

/// Hears about the changes of a buffer table that host programs see, in
/// order, while the table is locked: it must not block.
pub trait TableObserver: Send + Sync + fmt::Debug {
    /// `buffer` is complete: all its ranges arrived. `mem` is the guest
    /// memory its segments are in.
    fn added(&self, buffer: &Buffer, mem: Option<&GuestMemoryMmap>);
    /// The complete `buffer` was updated.
    fn updated(&self, buffer: &Buffer, update: &UpdateInfo);
    /// The complete `buffer` has new properties.
    fn properties(&self, buffer: &Buffer);
    /// The complete `buffer` was unregistered.
    fn removed(&self, buffer: &Buffer);
    /// Every buffer was dropped, `reason` being why.
    fn reset(&self, reason: ResetReason);
}

/// Several observers, told in order.
#[derive(Debug)]
pub struct Observers(pub Vec<Arc<dyn TableObserver>>);

impl TableObserver for Observers {
    fn added(&self, buffer: &Buffer, mem: Option<&GuestMemoryMmap>) {
        self.0.iter().for_each(|o| o.added(buffer, mem));
    }
    fn updated(&self, buffer: &Buffer, update: &UpdateInfo) {
        self.0.iter().for_each(|o| o.updated(buffer, update));
    }
    fn properties(&self, buffer: &Buffer) {
        self.0.iter().for_each(|o| o.properties(buffer));
    }
    fn removed(&self, buffer: &Buffer) {
        self.0.iter().for_each(|o| o.removed(buffer));
    }
    fn reset(&self, reason: ResetReason) {
        self.0.iter().for_each(|o| o.reset(reason));
    }
}

/// What the command queue and the inspect socket share: the buffer table
/// and the guest memory of the connected frontend.
#[derive(Debug, Default)]
pub struct SharedState {
    inner: Mutex<State>,
}

/// The contents of [`SharedState`].
#[derive(Debug, Default)]
pub struct State {
    /// The buffers.
    pub buffers: BufferTable,
    /// The guest memory, once the frontend gave its table.
    pub mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    /// Who hears about the table's changes, if anyone.
    pub observer: Option<Arc<dyn TableObserver>>,
    /// Whether a frontend is connected (for the inspect socket's
    /// `guests`).
    pub connected: bool,
    /// Who holds the memory of the buffers: the consumer socket's, once
    /// it serves the guest.
    pub holders: Arc<Holders>,
}

impl State {
    /// Tells the observer that buffer `id` is complete, if it is.
    pub fn announce_added(&self, id: u64) {
        let (Some(observer), Some(buffer)) = (&self.observer, self.buffers.get(id)) else {
            return;
        };
        if buffer.complete {
            let mem = self.memory();
            observer.added(buffer, mem.as_deref());
        }
    }

    /// Tells the observer that the complete buffer `id` was updated.
    pub fn announce_update(&self, id: u64, update: &UpdateInfo) {
        if let (Some(observer), Some(buffer)) = (&self.observer, self.buffers.get(id)) {
            if buffer.complete {
                observer.updated(buffer, update);
            }
        }
    }

    /// Tells the observer that buffer `id` has new properties, if it is
    /// complete (an incomplete one is announced with its properties when it
    /// is complete).
    pub fn announce_properties(&self, id: u64) {
        if let (Some(observer), Some(buffer)) = (&self.observer, self.buffers.get(id)) {
            if buffer.complete {
                observer.properties(buffer);
            }
        }
    }

    /// Removes buffer `id`, telling the observer if it was complete.
    pub fn remove(&mut self, id: u64) -> Option<Buffer> {
        let buffer = self.buffers.remove(id)?;
        if let Some(observer) = &self.observer {
            if buffer.complete {
                observer.removed(&buffer);
            }
        }
        Some(buffer)
    }

    /// Drops every buffer (a device reset, or the frontend gone), telling
    /// the observer; returns how many there were.
    pub fn drop_all(&mut self, reason: ResetReason) -> usize {
        let count = self.buffers.len();
        self.buffers.clear();
        if let Some(observer) = &self.observer {
            observer.reset(reason);
        }
        count
    }

    /// A snapshot of the current guest memory.
    pub fn memory(&self) -> Option<GuestMemoryLoadGuard<GuestMemoryMmap>> {
        self.mem.as_ref().map(|m| m.memory())
    }

    /// Reads `buf.len()` bytes at `offset` of buffer `id`, straight from
    /// guest memory.
    pub fn read(&self, id: u64, offset: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        let buffer = self.buffers.get(id).ok_or(AccessError::UnknownId(id))?;
        buffer.check_access(offset, buf.len() as u64)?;
        let mem = self.memory().ok_or(AccessError::NoMemory)?;
        buffer.read(&mem, offset, buf)
    }

    /// Writes `data` at `offset` of buffer `id`, straight into guest memory.
    pub fn write(&self, id: u64, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        let buffer = self.buffers.get(id).ok_or(AccessError::UnknownId(id))?;
        buffer.check_access(offset, data.len() as u64)?;
        let mem = self.memory().ok_or(AccessError::NoMemory)?;
        buffer.write(&mem, offset, data)
    }

    /// Checks that `len` bytes at `offset` of buffer `id` can be accessed,
    /// and that there is guest memory to access them in.
    pub fn check_access(&self, id: u64, offset: u64, len: u64) -> Result<(), AccessError> {
        self.buffers
            .get(id)
            .ok_or(AccessError::UnknownId(id))?
            .check_access(offset, len)?;
        if self.mem.is_none() {
            return Err(AccessError::NoMemory);
        }
        Ok(())
    }
}

impl SharedState {
    /// Locks the state. A thread that panicked with the lock held cannot
    /// have left the table half changed in a way that matters, so a
    /// poisoned lock is used as it is.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::props::Properties;

    /// Two adjacent regions, a gap, a third region.
    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x2000),
            (GuestAddress(0x1_0000), 0x1000),
        ])
        .unwrap()
    }

    fn seg(offset: u64, addr: u64, len: u64) -> Segment {
        Segment { offset, addr, len }
    }

    #[test]
    fn ranges_inside_one_region() {
        let mem = memory();
        assert_eq!(
            resolve_range(&mem, 0, 0, 0x1000),
            Ok(vec![seg(0, 0, 0x1000)])
        );
        assert_eq!(
            resolve_range(&mem, 7, 0x1_0fff, 1),
            Ok(vec![seg(7, 0x1_0fff, 1)])
        );
    }

    #[test]
    fn ranges_across_adjacent_regions() {
        let mem = memory();
        assert_eq!(
            resolve_range(&mem, 100, 0xff0, 0x20),
            Ok(vec![seg(100, 0xff0, 0x10), seg(116, 0x1000, 0x10)])
        );
        assert_eq!(
            resolve_range(&mem, 0, 0, 0x3000),
            Ok(vec![seg(0, 0, 0x1000), seg(0x1000, 0x1000, 0x2000)])
        );
    }

    #[test]
    fn bad_ranges() {
        let mem = memory();
        assert_eq!(
            resolve_range(&mem, 0, 0x100, 0),
            Err(RangeError::Empty(0x100))
        );
        assert_eq!(
            resolve_range(&mem, 0, u64::MAX, 2),
            Err(RangeError::Overflow {
                addr: u64::MAX,
                len: 2
            })
        );
        assert_eq!(
            resolve_range(&mem, 0, 1, u64::MAX),
            Err(RangeError::Overflow {
                addr: 1,
                len: u64::MAX
            })
        );
        // Into the gap after the second region.
        assert_eq!(
            resolve_range(&mem, 0, 0x2000, 0x1001),
            Err(RangeError::OutsideMemory {
                addr: 0x2000,
                len: 0x1001,
                at: 0x3000
            })
        );
        // Across the gap.
        assert!(resolve_range(&mem, 0, 0x2fff, 0xe002).is_err());
        // Entirely outside; past the end.
        assert!(resolve_range(&mem, 0, 0x5000, 1).is_err());
        assert!(resolve_range(&mem, 0, 0x1_0fff, 2).is_err());
        assert!(resolve_range(&mem, 0, u64::MAX, 1).is_err());
    }

    /// A complete buffer made of `ranges`.
    pub(crate) fn buffer(mem: &GuestMemoryMmap, ranges: &[(u64, u64)]) -> Buffer {
        let size = ranges.iter().map(|r| r.1).sum();
        let mut b = Buffer::new(
            1,
            "app".into(),
            size,
            ranges.len() as u32,
            Properties::default(),
        );
        let mut offset = 0;
        for &(addr, len) in ranges {
            let segs = resolve_range(mem, offset, addr, len).unwrap();
            b.push_ranges(segs, 1, len);
            offset += len;
        }
        assert!(b.complete);
        b
    }

    #[test]
    fn read_and_write_through_segments() {
        let mem = memory();
        // Out of order, across regions.
        let b = buffer(&mem, &[(0x1_0000, 0x10), (0xff8, 0x10), (0x100, 8)]);
        assert_eq!(b.segments.len(), 4);
        let data: Vec<u8> = (0..0x28).collect();
        b.write(&mem, 0, &data).unwrap();
        let mut got = vec![0; 0x28];
        b.read(&mem, 0, &mut got).unwrap();
        assert_eq!(got, data);
        // Where the bytes went.
        let mut raw = [0u8; 8];
        mem.read_slice(&mut raw, GuestAddress(0x1_0000)).unwrap();
        assert_eq!(raw, [0, 1, 2, 3, 4, 5, 6, 7]);
        mem.read_slice(&mut raw, GuestAddress(0xff8)).unwrap();
        assert_eq!(raw, [16, 17, 18, 19, 20, 21, 22, 23]);
        mem.read_slice(&mut raw, GuestAddress(0x1000)).unwrap();
        assert_eq!(raw, [24, 25, 26, 27, 28, 29, 30, 31]);
        mem.read_slice(&mut raw, GuestAddress(0x100)).unwrap();
        assert_eq!(raw, [32, 33, 34, 35, 36, 37, 38, 39]);
        // Every window.
        for offset in 0..=0x28u64 {
            for len in 0..=(0x28 - offset) {
                let mut got = vec![0; len as usize];
                b.read(&mem, offset, &mut got).unwrap();
                assert_eq!(got, data[offset as usize..(offset + len) as usize]);
            }
        }
        b.write(&mem, 0x1e, b"XYZW").unwrap();
        mem.read_slice(&mut raw[..2], GuestAddress(0x1006)).unwrap();
        assert_eq!(&raw[..2], b"XY");
        mem.read_slice(&mut raw[..2], GuestAddress(0x100)).unwrap();
        assert_eq!(&raw[..2], b"ZW");
    }

    #[test]
    fn access_refused() {
        let mem = memory();
        let b = buffer(&mem, &[(0, 0x10)]);
        let mut buf = [0; 2];
        assert!(matches!(
            b.read(&mem, 0xf, &mut buf),
            Err(AccessError::OutOfRange {
                offset: 0xf,
                len: 2,
                size: 0x10
            })
        ));
        assert!(b.read(&mem, u64::MAX, &mut buf).is_err());
        assert!(b.write(&mem, 0x11, &[]).is_err());
        assert!(b.write(&mem, 0x10, &[]).is_ok());

        let mut incomplete = Buffer::new(2, "app".into(), 0x20, 2, Properties::default());
        incomplete.push_ranges(resolve_range(&mem, 0, 0, 0x10).unwrap(), 1, 0x10);
        assert!(!incomplete.complete);
        assert!(matches!(
            incomplete.read(&mem, 0, &mut buf),
            Err(AccessError::Incomplete(2))
        ));

        // The memory table changed since: the segment is no longer RAM.
        let other = GuestMemoryMmap::from_ranges(&[(GuestAddress(0x8000), 0x1000)]).unwrap();
        assert!(matches!(
            b.read(&other, 0, &mut buf),
            Err(AccessError::Memory(_))
        ));
    }

    #[test]
    fn table_and_description() {
        let mem = memory();
        let mut table = BufferTable::default();
        assert!(table.is_empty());
        let mut b = buffer(&mem, &[(0, 0x10)]);
        b.id = 7;
        b.seqno = 3;
        b.props = crate::props::parse_properties(b"width=2\0x=\xff\0", 100).unwrap();
        table.insert(b);
        let mut c = Buffer::new(3, "other".into(), 5, 2, Properties::default());
        c.push_ranges(vec![seg(0, 0, 1)], 1, 1);
        table.insert(c);
        assert_eq!(table.len(), 2);
        assert!(table.contains(3));
        assert_eq!(
            table.describe(),
            b"id=3 application=other size=5 ranges=1 complete=0 seqno=0\n\
              id=7 application=app size=16 ranges=1 complete=1 seqno=3\n\
              \twidth=2\n\tx=\xff\n"
        );
        assert!(!table.remove_incomplete(7));
        assert!(table.remove_incomplete(3));
        assert!(!table.remove_incomplete(3));
        assert_eq!(table.iter().map(|b| b.id).collect::<Vec<_>>(), [7]);
        assert!(table.remove(7).is_some());
        assert!(table.remove(7).is_none());
        table.insert(Buffer::new(1, "a".into(), 1, 1, Properties::default()));
        table.clear();
        assert!(table.is_empty());
    }

    #[test]
    fn shared_state_access() {
        let mem = memory();
        let state = SharedState::default();
        let mut b = buffer(&mem, &[(0x100, 0x10)]);
        b.id = 5;
        state.lock().buffers.insert(b);
        // No memory yet.
        assert!(matches!(
            state.lock().read(5, 0, &mut [0; 4]),
            Err(AccessError::NoMemory)
        ));
        state.lock().mem = Some(GuestMemoryAtomic::new(mem.clone()));
        state.lock().write(5, 2, b"abcd").unwrap();
        let mut got = [0; 4];
        state.lock().read(5, 2, &mut got).unwrap();
        assert_eq!(&got, b"abcd");
        assert!(matches!(
            state.lock().read(6, 0, &mut got),
            Err(AccessError::UnknownId(6))
        ));
        assert!(state.lock().check_access(5, 0x10, 0).is_ok());
        state.lock().mem = None;
        assert!(matches!(
            state.lock().check_access(5, 0, 1),
            Err(AccessError::NoMemory)
        ));
        state.lock().mem = Some(GuestMemoryAtomic::new(mem.clone()));
        assert!(state.lock().check_access(5, 0x10, 1).is_err());
    }
}
