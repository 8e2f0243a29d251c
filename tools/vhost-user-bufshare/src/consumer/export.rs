// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! A buffer's memory as consumers get it.
//!
//! [`Export::new`] turns a buffer's segments (guest addresses) into pieces
//! of the files behind the vhost-user memory regions (the `FileOffset` of
//! each `GuestRegionMmap`): each file once (two regions in the same file
//! are one file), and pieces that follow each other in a file merged.
//!
//! Where udmabuf works ([`Udmabuf::open`]), [`Export::memory`] makes one
//! dma-buf of those pieces (`UDMABUF_CREATE_LIST`) the first time a consumer
//! needs it, and hands every consumer that one; a buffer udmabuf cannot
//! express, or whose dma-buf cannot be made, is handed over as segments.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use bufshare_consumer::wire::{MAX_FDS, MAX_SEGMENTS};
use bufshare_consumer::{Memory, Segment};
use log::{debug, warn};
use thiserror::Error as ThisError;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::buffers::Buffer;

/// Why a buffer's memory cannot be handed over.
#[derive(Debug, ThisError)]
pub enum ExportError {
    /// There is no guest memory (no frontend).
    #[error("no guest memory")]
    NoMemory,
    /// A segment is no longer in guest memory (its table changed).
    #[error("{0:#x} is not guest memory")]
    NotInMemory(u64),
    /// A segment is in memory that no file backs.
    #[error("the memory at {0:#x} is not backed by a file")]
    NoFile(u64),
    /// More files than a message can pass.
    #[error("the buffer is in {0} files, more than {MAX_FDS}")]
    TooManyFiles(usize),
    /// More segments than a message can carry.
    #[error("the buffer is made of {0} segments, more than {MAX_SEGMENTS}")]
    TooManySegments(usize),
    /// A file could not be looked at.
    #[error("cannot look at a memory file: {0}")]
    Io(#[from] io::Error),
}

/// A buffer's memory, ready to be handed over: the files and the segments
/// of them, and the dma-buf once made.
#[derive(Debug)]
pub struct Export {
    files: Vec<Arc<File>>,
    segments: Vec<Segment>,
    /// The dma-buf: made on first use; `None` if it could not be.
    dmabuf: OnceLock<Option<OwnedFd>>,
}

impl Export {
    /// The memory of the complete `buffer`, whose segments are in `mem`.
    pub fn new(buffer: &Buffer, mem: Option<&GuestMemoryMmap>) -> Result<Self, ExportError> {
        let mem = mem.ok_or(ExportError::NoMemory)?;
        let mut files: Vec<Arc<File>> = Vec::new();
        // (device, inode) of each file, and the files of the regions seen,
        // by region.
        let mut ids: Vec<(u64, u64)> = Vec::new();
        let mut by_region: Vec<(*const File, u32)> = Vec::new();
        let mut segments: Vec<Segment> = Vec::new();
        for seg in &buffer.segments {
            let region = mem
                .find_region(GuestAddress(seg.addr))
                .ok_or(ExportError::NotInMemory(seg.addr))?;
            let in_region = seg.addr - region.start_addr().0;
            if in_region
                .checked_add(seg.len)
                .is_none_or(|end| end > region.len())
            {
                return Err(ExportError::NotInMemory(seg.addr + seg.len - 1));
            }
            let fo = region.file_offset().ok_or(ExportError::NoFile(seg.addr))?;
            let key = Arc::as_ptr(fo.arc());
            let file = match by_region.iter().find(|(k, _)| *k == key) {
                Some(&(_, index)) => index,
                None => {
                    let meta = fo.file().metadata()?;
                    let id = (meta.dev(), meta.ino());
                    let index = match ids.iter().position(|i| *i == id) {
                        Some(index) => index,
                        None => {
                            ids.push(id);
                            files.push(Arc::clone(fo.arc()));
                            files.len() - 1
                        }
                    } as u32;
                    by_region.push((key, index));
                    index
                }
            };
            let offset = fo.start() + in_region;
            match segments.last_mut() {
                Some(last) if last.file == file && last.offset + last.len == offset => {
                    last.len += seg.len;
                }
                _ => segments.push(Segment {
                    file,
                    offset,
                    len: seg.len,
                }),
            }
        }
        if files.len() > MAX_FDS {
            return Err(ExportError::TooManyFiles(files.len()));
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(ExportError::TooManySegments(segments.len()));
        }
        Ok(Self {
            files,
            segments,
            dmabuf: OnceLock::new(),
        })
    }

    /// The files, each used by a segment.
    pub fn files(&self) -> &[Arc<File>] {
        &self.files
    }

    /// The segments, merged, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The memory to hand over: the dma-buf if `udmabuf` is given and can
    /// make one of it (made on the first call, by whichever thread comes
    /// first), else the segments.
    pub fn memory(&self, udmabuf: Option<&Udmabuf>) -> Memory<BorrowedFd<'_>> {
        let dmabuf = udmabuf.and_then(|udmabuf| {
            self.dmabuf
                .get_or_init(|| match udmabuf.create(&self.files, &self.segments) {
                    Ok(fd) => Some(fd),
                    Err(e) => {
                        warn!("no dma-buf for a buffer, handing over segments: {e}");
                        None
                    }
                })
                .as_ref()
        });
        match dmabuf {
            Some(fd) => Memory::DmaBuf(fd.as_fd()),
            None => Memory::Segments {
                files: self.files.iter().map(|f| f.as_fd()).collect(),
                segments: self.segments.clone(),
            },
        }
    }
}

/// `struct udmabuf_create_item` (linux/udmabuf.h).
#[repr(C)]
struct UdmabufCreateItem {
    memfd: u32,
    pad: u32,
    offset: u64,
    size: u64,
}

/// `UDMABUF_FLAGS_CLOEXEC`.
const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;
/// `UDMABUF_CREATE_LIST`: `_IOW('u', 0x43, struct udmabuf_create_list)`,
/// the struct being 8 bytes (flags, count) before its items.
const UDMABUF_CREATE_LIST: u64 = (1 << 30) | (8 << 16) | ((b'u' as u64) << 8) | 0x43;

/// udmabuf's defaults, where its module parameters cannot be read.
const DEFAULT_LIST_LIMIT: usize = 1024;
const DEFAULT_SIZE_LIMIT_MB: u64 = 64;

/// The udmabuf device, known to work.
#[derive(Debug)]
pub struct Udmabuf {
    dev: File,
    page: u64,
    list_limit: usize,
    size_limit: u64,
}

fn module_param(name: &str) -> Option<u64> {
    let path = format!("/sys/module/udmabuf/parameters/{name}");
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn unsupported(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, why)
}

impl Udmabuf {
    /// The usual device.
    pub const DEVICE: &'static str = "/dev/udmabuf";

    /// Opens the udmabuf device at `path` and checks that it makes a
    /// dma-buf of a sealed memfd.
    pub fn open(path: &Path) -> io::Result<Self> {
        let dev = OpenOptions::new().read(true).write(true).open(path)?;
        let page = match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
            Ok(Some(page)) if page > 0 => page as u64,
            _ => 4096,
        };
        let udmabuf = Self {
            dev,
            page,
            list_limit: module_param("list_limit").map_or(DEFAULT_LIST_LIMIT, |n| n as usize),
            size_limit: module_param("size_limit_mb").unwrap_or(DEFAULT_SIZE_LIMIT_MB) << 20,
        };
        udmabuf.probe()?;
        debug!(
            "udmabuf works: at most {} pieces and {} bytes per dma-buf",
            udmabuf.list_limit, udmabuf.size_limit
        );
        Ok(udmabuf)
    }

    /// The most pieces a dma-buf may have: udmabuf's `list_limit`.
    pub fn list_limit(&self) -> usize {
        self.list_limit
    }

    /// The most bytes a dma-buf may have: udmabuf's `size_limit_mb`, in
    /// bytes.
    pub fn size_limit(&self) -> u64 {
        self.size_limit
    }

    /// The page size, which pieces must be aligned to.
    pub fn page_size(&self) -> u64 {
        self.page
    }

    /// Makes and drops a dma-buf of one page of a sealed memfd.
    fn probe(&self) -> io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MFdFlags};

        let memfd = memfd_create(
            "bufshare-udmabuf-probe",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let file = File::from(memfd);
        file.set_len(self.page)?;
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )?;
        let segment = Segment {
            file: 0,
            offset: 0,
            len: self.page,
        };
        self.create(&[Arc::new(file)], &[segment]).map(drop)
    }

    /// Makes a dma-buf of `segments` of `files`, if udmabuf can: each
    /// segment page-aligned, no more than its limits.
    pub fn create(&self, files: &[Arc<File>], segments: &[Segment]) -> io::Result<OwnedFd> {
        if segments.len() > self.list_limit {
            return Err(unsupported(format!(
                "{} pieces, more than udmabuf's list_limit of {}",
                segments.len(),
                self.list_limit
            )));
        }
        let size: u64 = segments.iter().map(|s| s.len).sum();
        if size > self.size_limit {
            return Err(unsupported(format!(
                "{size} bytes, more than udmabuf's size_limit_mb of {}",
                self.size_limit >> 20
            )));
        }
        if segments
            .iter()
            .any(|s| s.offset % self.page != 0 || s.len % self.page != 0)
        {
            return Err(unsupported("pieces not page-aligned".into()));
        }
        // struct udmabuf_create_list { u32 flags; u32 count; items[] }, in
        // u64s for the items' alignment.
        let mut list: Vec<u64> = Vec::with_capacity(1 + 3 * segments.len());
        let head = [
            UDMABUF_FLAGS_CLOEXEC.to_ne_bytes(),
            (segments.len() as u32).to_ne_bytes(),
        ]
        .concat();
        list.push(u64::from_ne_bytes(head.try_into().unwrap_or_default()));
        for seg in segments {
            let file = files
                .get(seg.file as usize)
                .ok_or_else(|| unsupported("segment of a file that is not there".into()))?;
            let item = UdmabufCreateItem {
                memfd: file.as_raw_fd() as u32,
                pad: 0,
                offset: seg.offset,
                size: seg.len,
            };
            list.push(u64::from_ne_bytes(
                [item.memfd.to_ne_bytes(), item.pad.to_ne_bytes()]
                    .concat()
                    .try_into()
                    .unwrap_or_default(),
            ));
            list.push(item.offset);
            list.push(item.size);
        }
        // SAFETY: UDMABUF_CREATE_LIST reads a struct udmabuf_create_list of
        // `count` items, which `list` holds in full, laid out as the kernel
        // expects (items of 24 bytes, 8-aligned, after the 8-byte head); it
        // writes nothing, and the descriptors in it are open.
        let fd = unsafe {
            libc::ioctl(
                self.dev.as_raw_fd(),
                UDMABUF_CREATE_LIST as _,
                list.as_ptr(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: on success the ioctl returns a new descriptor that
        // nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use vm_memory::FileOffset;

    use super::*;
    use crate::buffers::tests::buffer;

    #[test]
    fn ioctl_layout() {
        assert_eq!(size_of::<UdmabufCreateItem>(), 24);
        assert_eq!(UDMABUF_CREATE_LIST, 0x4008_7543);
    }

    /// Guest RAM: 0..0x4000 and 0x4000..0x8000 in one file (at 0x1000
    /// and 0x6000 of it), 0x10000..0x12000 in another, 0x20000..0x21000
    /// anonymous.
    fn memory() -> (GuestMemoryMmap, File, File) {
        let f0 = tempfile::tempfile().unwrap();
        f0.set_len(0x10000).unwrap();
        let f1 = tempfile::tempfile().unwrap();
        f1.set_len(0x2000).unwrap();
        let mem = GuestMemoryMmap::from_ranges_with_files(&[
            (
                GuestAddress(0),
                0x4000,
                Some(FileOffset::new(f0.try_clone().unwrap(), 0x1000)),
            ),
            (
                GuestAddress(0x4000),
                0x4000,
                Some(FileOffset::new(f0.try_clone().unwrap(), 0x6000)),
            ),
            (
                GuestAddress(0x1_0000),
                0x2000,
                Some(FileOffset::new(f1.try_clone().unwrap(), 0)),
            ),
            (GuestAddress(0x2_0000), 0x1000, None),
        ])
        .unwrap();
        (mem, f0, f1)
    }

    fn seg(file: u32, offset: u64, len: u64) -> Segment {
        Segment { file, offset, len }
    }

    #[test]
    fn files_and_merged_segments() {
        let (mem, f0, f1) = memory();
        // Across the two regions of f0 (contiguous in guest memory, not in
        // the file), then f1, then back to f0 right after the first piece.
        let b = buffer(
            &mem,
            &[
                (0x3000, 0x2000),
                (0x1_0000, 0x800),
                (0x1_0800, 0x800),
                (0x100, 8),
            ],
        );
        let export = Export::new(&b, Some(&mem)).unwrap();
        assert_eq!(export.files().len(), 2);
        let ino = |f: &File| f.metadata().unwrap().ino();
        assert_eq!(ino(&export.files()[0]), ino(&f0));
        assert_eq!(ino(&export.files()[1]), ino(&f1));
        assert_eq!(
            export.segments(),
            [
                seg(0, 0x4000, 0x1000),
                seg(0, 0x6000, 0x1000),
                seg(1, 0, 0x1000),
                seg(0, 0x1100, 8),
            ]
        );
        // Without udmabuf: segments.
        match export.memory(None) {
            Memory::Segments { files, segments } => {
                assert_eq!(files.len(), 2);
                assert_eq!(segments, export.segments());
            }
            Memory::DmaBuf(_) => panic!("a dma-buf"),
        }
    }

    #[test]
    fn cannot_export() {
        let (mem, _f0, _f1) = memory();
        let anon = buffer(&mem, &[(0x100, 8), (0x2_0000, 8)]);
        assert!(matches!(
            Export::new(&anon, Some(&mem)),
            Err(ExportError::NoFile(0x2_0000))
        ));
        let b = buffer(&mem, &[(0x100, 8)]);
        assert!(matches!(Export::new(&b, None), Err(ExportError::NoMemory)));
        // The memory table changed since the buffer was registered.
        let other = GuestMemoryMmap::from_ranges(&[(GuestAddress(0x8_0000), 0x1000)]).unwrap();
        assert!(matches!(
            Export::new(&b, Some(&other)),
            Err(ExportError::NotInMemory(0x100))
        ));
    }

    #[test]
    fn udmabuf_that_does_not_work() {
        assert!(Udmabuf::open(Path::new("/nonexistent/udmabuf")).is_err());
        // A file that is not the device: the probe's ioctl fails.
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(Udmabuf::open(file.path()).is_err());
    }

    #[test]
    fn udmabuf_limits_are_checked_first() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let udmabuf = Udmabuf {
            dev: File::open(file.path()).unwrap(),
            page: 4096,
            list_limit: 2,
            size_limit: 0x3000,
        };
        let f = Arc::new(tempfile::tempfile().unwrap());
        let files = [f];
        let kind = |segments: &[Segment]| udmabuf.create(&files, segments).unwrap_err().kind();
        assert_eq!(
            kind(&[
                seg(0, 0, 0x1000),
                seg(0, 0x2000, 0x1000),
                seg(0, 0x4000, 0x1000)
            ]),
            io::ErrorKind::Unsupported
        );
        assert_eq!(kind(&[seg(0, 0, 0x4000)]), io::ErrorKind::Unsupported);
        assert_eq!(kind(&[seg(0, 0x800, 0x1000)]), io::ErrorKind::Unsupported);
        assert_eq!(kind(&[seg(0, 0, 0x800)]), io::ErrorKind::Unsupported);
        assert_eq!(kind(&[seg(1, 0, 0x1000)]), io::ErrorKind::Unsupported);
        // Within the limits, the ioctl itself fails on a plain file.
        assert_ne!(kind(&[seg(0, 0, 0x1000)]), io::ErrorKind::Unsupported);

        // A buffer whose dma-buf cannot be made is handed over as segments,
        // and the attempt is not repeated.
        let (mem, _f0, _f1) = memory();
        let export = Export::new(&buffer(&mem, &[(0, 0x1000)]), Some(&mem)).unwrap();
        for _ in 0..2 {
            assert!(matches!(
                export.memory(Some(&udmabuf)),
                Memory::Segments { .. }
            ));
        }
        assert_eq!(export.dmabuf.get().map(Option::is_some), Some(false));
    }
}
