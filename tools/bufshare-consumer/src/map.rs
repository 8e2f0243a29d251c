// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Access to a buffer's bytes through the descriptors of its ADD.
//!
//! [`MappedBuffer`] maps the memory of a buffer, whatever its form: the
//! dma-buf, or, for segments (of files, or of several dma-bufs), the part
//! of each file the segments are in (one mapping per file). Its bytes are shared with the guest, which may
//! change them at any time: they are copied in and out, never lent as
//! slices.
//!
//! Everything is checked before anything is mapped, whatever made the
//! [`Memory`] (a decoded ADD is checked already, but the type can be built
//! by hand): every segment in a file that is there, of 1 byte or more,
//! without overflow; the segments adding up to the size; and each file
//! (`fstat`) at least as long as what is mapped of it, so that no access
//! falls past its end (SIGBUS). What stays is the files' owner's to keep:
//! a file shrunk later still faults, which the backend prevents by handing
//! over only dma-bufs and memfds sealed against shrinking.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::unistd::{sysconf, SysconfVar};

use crate::wire::{Add, Memory, Segment};

/// One mapping, unmapped when dropped.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are those of a mapping this struct made
        // and owns; nothing refers to it any more.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            log::error!("cannot unmap a buffer: {e}");
        }
    }
}

/// A piece of the buffer: `len` bytes at `start` in the buffer, at `ptr`.
#[derive(Debug)]
struct Piece {
    start: u64,
    len: u64,
    ptr: NonNull<u8>,
}

/// A buffer's memory, mapped.
#[derive(Debug)]
pub struct MappedBuffer {
    size: u64,
    writable: bool,
    pieces: Vec<Piece>,
    _mappings: Vec<Mapping>,
}

// SAFETY: the mappings are plain shared memory, owned by the struct and
// reached only through copies that check their bounds; nothing in them is
// tied to a thread.
unsafe impl Send for MappedBuffer {}
// SAFETY: as above; `read` and `write` take `&self` and copy bytes, which is
// what any thread sharing the memory (the guest too) may do at any time.
unsafe impl Sync for MappedBuffer {}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn page_size() -> u64 {
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => size as u64,
        _ => 4096,
    }
}

/// Maps `len` bytes at `offset` of `fd`, shared, after checking that the
/// file has them.
fn map(fd: impl AsFd, offset: u64, len: u64, writable: bool) -> io::Result<Mapping> {
    let end = offset
        .checked_add(len)
        .ok_or_else(|| invalid("offset + length overflows"))?;
    let file_size = nix::sys::stat::fstat(fd.as_fd())?.st_size;
    if !u64::try_from(file_size).is_ok_and(|size| size >= end) {
        return Err(invalid("the file is shorter than its part to map"));
    }
    let len = usize::try_from(len).map_err(|_| invalid("mapping too large"))?;
    let length = NonZeroUsize::new(len).ok_or_else(|| invalid("empty mapping"))?;
    let offset = i64::try_from(offset).map_err(|_| invalid("offset too large"))?;
    let prot = if writable {
        ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
    } else {
        ProtFlags::PROT_READ
    };
    // SAFETY: a new shared mapping of a file, at an address the kernel
    // chooses: no existing memory is affected.
    let ptr = unsafe { mmap(None, length, prot, MapFlags::MAP_SHARED, fd, offset) }?;
    Ok(Mapping {
        ptr: ptr.cast(),
        len,
    })
}

/// Checks `segments` of `files` files, for a buffer of `size` bytes: each in
/// a file that is there, of 1 byte or more, ending before 2^64; all of them
/// adding up to `size`; every file used.
fn check_segments(files: usize, segments: &[Segment], size: u64) -> io::Result<()> {
    let mut used = vec![false; files];
    let mut sum = 0u64;
    for seg in segments {
        let file = used
            .get_mut(seg.file as usize)
            .ok_or_else(|| invalid("segment of a file that is not there"))?;
        *file = true;
        if seg.len == 0 {
            return Err(invalid("empty segment"));
        }
        if seg.offset.checked_add(seg.len).is_none() {
            return Err(invalid("segment offset + length overflows"));
        }
        sum = sum
            .checked_add(seg.len)
            .ok_or_else(|| invalid("segments too large"))?;
    }
    if sum != size {
        return Err(invalid("segments do not add up to the size"));
    }
    if used.contains(&false) {
        return Err(invalid("a file no segment uses"));
    }
    Ok(())
}

impl MappedBuffer {
    /// Maps the memory of `add` (read-only unless `writable`).
    pub fn new<F: AsFd>(add: &Add<F>, writable: bool) -> io::Result<Self> {
        Self::from_memory(&add.memory, add.size, writable)
    }

    /// Maps `memory`, of a buffer of `size` bytes.
    pub fn from_memory<F: AsFd>(memory: &Memory<F>, size: u64, writable: bool) -> io::Result<Self> {
        match memory {
            Memory::DmaBuf(fd) => {
                let mapping = map(fd, 0, size, writable)?;
                Ok(Self {
                    size,
                    writable,
                    pieces: vec![Piece {
                        start: 0,
                        len: size,
                        ptr: mapping.ptr,
                    }],
                    _mappings: vec![mapping],
                })
            }
            Memory::DmaBufs {
                dmabufs: files,
                segments,
            }
            | Memory::Segments { files, segments } => {
                check_segments(files.len(), segments, size)?;
                let page = page_size();
                let mut mappings = Vec::with_capacity(files.len());
                // For each file: the offset its mapping starts at.
                let mut bases = Vec::with_capacity(files.len());
                for (index, fd) in files.iter().enumerate() {
                    let mine = segments.iter().filter(|s| s.file as usize == index);
                    let start = mine.clone().map(|s| s.offset).min();
                    let end = mine.filter_map(|s| s.offset.checked_add(s.len)).max();
                    let (Some(start), Some(end)) = (start, end) else {
                        return Err(invalid("a file no segment uses"));
                    };
                    let base = start - start % page;
                    mappings.push(map(fd, base, end - base, writable)?);
                    bases.push(base);
                }
                let mut pieces = Vec::with_capacity(segments.len());
                let mut at = 0u64;
                for seg in segments {
                    let index = seg.file as usize;
                    let (mapping, base) = mappings
                        .get(index)
                        .zip(bases.get(index))
                        .ok_or_else(|| invalid("segment of a file that is not there"))?;
                    let in_map = usize::try_from(seg.offset - base)
                        .map_err(|_| invalid("offset too large"))?;
                    // SAFETY: the mapping covers every segment of its file,
                    // this one included: `in_map` is inside it.
                    let ptr = unsafe { mapping.ptr.add(in_map) };
                    pieces.push(Piece {
                        start: at,
                        len: seg.len,
                        ptr,
                    });
                    at = at
                        .checked_add(seg.len)
                        .ok_or_else(|| invalid("segments too large"))?;
                }
                if at != size {
                    return Err(invalid("segments do not add up to the size"));
                }
                Ok(Self {
                    size,
                    writable,
                    pieces,
                    _mappings: mappings,
                })
            }
        }
    }

    /// The buffer's size.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether the buffer is empty (never, for a buffer of an ADD).
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Calls `f(pointer, start, end)` for each piece of the `len` bytes at
    /// `offset`, `start..end` being the piece's place among those bytes.
    fn for_each_piece(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(NonNull<u8>, usize, usize),
    ) -> io::Result<()> {
        let end = offset
            .checked_add(len as u64)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| invalid("bytes outside the buffer"))?;
        let first = self.pieces.partition_point(|p| p.start + p.len <= offset);
        let mut at = offset;
        for piece in &self.pieces[first..] {
            if at >= end {
                break;
            }
            let in_piece = at - piece.start;
            let n = (piece.len - in_piece).min(end - at);
            let start = (at - offset) as usize;
            // SAFETY: `in_piece < piece.len`: inside the piece's mapping.
            let ptr = unsafe { piece.ptr.add(in_piece as usize) };
            f(ptr, start, start + n as usize);
            at += n;
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes at `offset` of the buffer into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len();
        self.for_each_piece(offset, len, |ptr, start, end| {
            // SAFETY: `ptr` has `end - start` mapped bytes (for_each_piece);
            // `buf[start..end]` is in bounds; the two cannot overlap, `buf`
            // being a Rust slice and the mapping shared memory.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    ptr.as_ptr(),
                    buf[start..end].as_mut_ptr(),
                    end - start,
                )
            }
        })
    }

    /// Copies `data` to `offset` of the buffer, which must have been mapped
    /// writable.
    pub fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the buffer is mapped read-only",
            ));
        }
        self.for_each_piece(offset, data.len(), |ptr, start, end| {
            // SAFETY: as in `read`, the other way; the mapping is writable.
            unsafe {
                std::ptr::copy_nonoverlapping(data[start..end].as_ptr(), ptr.as_ptr(), end - start)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::FileExt;

    use nix::sys::memfd::{memfd_create, MFdFlags};

    use super::*;

    fn memfd(len: u64) -> File {
        let file = File::from(memfd_create("map-test", MFdFlags::MFD_CLOEXEC).unwrap());
        file.set_len(len).unwrap();
        file
    }

    #[test]
    fn segments_across_files() {
        let f0 = memfd(0x10000);
        let f1 = memfd(0x10000);
        // Unaligned, out of order, two files.
        let segments = vec![
            Segment {
                file: 1,
                offset: 0x3001,
                len: 0x10,
            },
            Segment {
                file: 0,
                offset: 0xfff8,
                len: 8,
            },
            Segment {
                file: 1,
                offset: 0x10,
                len: 0x2000,
            },
        ];
        let memory = Memory::Segments {
            files: vec![
                OwnedFd::from(f0.try_clone().unwrap()),
                OwnedFd::from(f1.try_clone().unwrap()),
            ],
            segments,
        };
        let size = 0x2018;
        let buf = MappedBuffer::from_memory(&memory, size, true).unwrap();
        assert_eq!(buf.len(), size);
        assert!(!buf.is_empty());
        let data: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        buf.write(0, &data).unwrap();
        // Where the bytes went.
        let mut raw = vec![0; 0x10];
        f1.read_exact_at(&mut raw, 0x3001).unwrap();
        assert_eq!(raw, data[..0x10]);
        f0.read_exact_at(&mut raw[..8], 0xfff8).unwrap();
        assert_eq!(raw[..8], data[0x10..0x18]);
        f1.read_exact_at(&mut raw, 0x10).unwrap();
        assert_eq!(raw, data[0x18..0x28]);
        // Every window near the joins.
        for offset in [0u64, 1, 0xf, 0x10, 0x17, 0x18, 0x19, 0x2000] {
            for len in [0usize, 1, 2, 9, 0x18] {
                if offset + len as u64 > size {
                    continue;
                }
                let mut got = vec![0; len];
                buf.read(offset, &mut got).unwrap();
                assert_eq!(got, data[offset as usize..offset as usize + len]);
            }
        }
        // Changes made through the files are seen.
        f0.write_all_at(b"ABCDEFGH", 0xfff8).unwrap();
        let mut got = [0; 8];
        buf.read(0x10, &mut got).unwrap();
        assert_eq!(&got, b"ABCDEFGH");
        // Outside.
        assert!(buf.read(size, &mut [0]).is_err());
        assert!(buf.read(u64::MAX, &mut [0; 2]).is_err());
        assert!(buf.read(size, &mut []).is_ok());
    }

    #[test]
    fn dmabuf_form_and_read_only() {
        // A memfd stands in for the dma-buf: both map the same way.
        let f = memfd(0x3000);
        f.write_all_at(b"hello", 0x2ffb).unwrap();
        let memory = Memory::DmaBuf(OwnedFd::from(f.try_clone().unwrap()));
        let buf = MappedBuffer::from_memory(&memory, 0x3000, false).unwrap();
        let mut got = [0; 5];
        buf.read(0x2ffb, &mut got).unwrap();
        assert_eq!(&got, b"hello");
        let e = buf.write(0, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn several_dmabufs() {
        // Memfds stand in for the dma-bufs: a buffer of all of one, then
        // all of the other.
        let (a, b) = (memfd(0x1000), memfd(0x2000));
        a.write_all_at(b"end of a", 0x1000 - 8).unwrap();
        b.write_all_at(b"start of b", 0).unwrap();
        let memory = Memory::DmaBufs {
            dmabufs: vec![
                OwnedFd::from(a.try_clone().unwrap()),
                OwnedFd::from(b.try_clone().unwrap()),
            ],
            segments: vec![
                Segment {
                    file: 0,
                    offset: 0,
                    len: 0x1000,
                },
                Segment {
                    file: 1,
                    offset: 0,
                    len: 0x2000,
                },
            ],
        };
        let buf = MappedBuffer::from_memory(&memory, 0x3000, true).unwrap();
        let mut got = [0; 18];
        buf.read(0x1000 - 8, &mut got).unwrap();
        assert_eq!(&got, b"end of astart of b");
        buf.write(0x1000 - 1, b"XY").unwrap();
        let mut byte = [0];
        b.read_exact_at(&mut byte, 0).unwrap();
        assert_eq!(&byte, b"Y");
        // Checked as segments are.
        assert!(MappedBuffer::from_memory(&memory, 0x3001, false).is_err());
    }

    #[test]
    fn bad_memory() {
        let f = memfd(0x1000);
        let fd = || OwnedFd::from(f.try_clone().unwrap());
        let seg = |file, len| Segment {
            file,
            offset: 0,
            len,
        };
        // A file no segment uses.
        let memory = Memory::Segments {
            files: vec![fd(), fd()],
            segments: vec![seg(0, 0x10)],
        };
        assert!(MappedBuffer::from_memory(&memory, 0x10, false).is_err());
        // Segments that do not add up.
        let memory = Memory::Segments {
            files: vec![fd()],
            segments: vec![seg(0, 0x10)],
        };
        assert!(MappedBuffer::from_memory(&memory, 0x11, false).is_err());
        // A segment of a file that is not there.
        let memory = Memory::Segments {
            files: vec![fd()],
            segments: vec![seg(0, 0x10), seg(3, 0x10)],
        };
        assert!(MappedBuffer::from_memory(&memory, 0x20, false).is_err());
        // An empty dma-buf.
        assert!(MappedBuffer::from_memory(&Memory::DmaBuf(fd()), 0, false).is_err());
    }

    #[test]
    fn overflowing_or_short_memory_is_refused() {
        let f = memfd(0x2000);
        let fd = || OwnedFd::from(f.try_clone().unwrap());
        let seg = |offset, len| Segment {
            file: 0,
            offset,
            len,
        };
        let refused = |segments: Vec<Segment>, size| {
            let memory = Memory::Segments {
                files: vec![fd()],
                segments,
            };
            MappedBuffer::from_memory(&memory, size, true).unwrap_err()
        };
        // offset + length overflows: the mapping would not cover the
        // segment, which used to be read and written past it.
        let e = refused(vec![seg(0, 0x10), seg(u64::MAX - 7, 0x10)], 0x20);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        refused(vec![seg(0, 0x10), seg(u64::MAX, 1)], 0x11);
        // Lengths adding up past 2^64, to the size modulo 2^64.
        refused(vec![seg(0, u64::MAX), seg(0, 0x11)], 0x10);
        // An empty segment.
        refused(vec![seg(0, 0), seg(0, 0x10)], 0x10);
        // Past the end of the file: SIGBUS on access.
        refused(vec![seg(0x1ff0, 0x20)], 0x20);
        refused(vec![seg(0x2000, 1)], 1);
        let memory = Memory::DmaBuf(fd());
        assert!(MappedBuffer::from_memory(&memory, 0x2001, false).is_err());
        assert!(MappedBuffer::from_memory(&memory, u64::MAX, false).is_err());
        // Up to the end is fine.
        let memory = Memory::Segments {
            files: vec![fd()],
            segments: vec![seg(0x1ff0, 0x10)],
        };
        let buf = MappedBuffer::from_memory(&memory, 0x10, false).unwrap();
        buf.read(0, &mut [0; 0x10]).unwrap();
        assert!(MappedBuffer::from_memory(&Memory::DmaBuf(fd()), 0x2000, false).is_ok());
    }
}
