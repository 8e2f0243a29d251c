// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! A buffer's memory as consumers get it.
//!
//! [`Export::new`] turns a buffer's segments (guest addresses) into pieces
//! of the files behind the vhost-user memory regions (the `FileOffset` of
//! each `GuestRegionMmap`): each file once (two regions in the same file
//! are one file), and pieces that follow each other in a file merged.
//!
//! Where udmabuf works ([`Udmabuf::open`]), [`Export::memory`] makes
//! dma-bufs of those pieces (`UDMABUF_CREATE_LIST`) the first time a
//! consumer needs them, and hands every consumer the same: one, or, for a
//! buffer larger than udmabuf's `size_limit_mb` or in more pieces than its
//! `list_limit`, several, each within the limits ([`plan_dmabufs`]), for
//! consumers of version 2.
//!
//! Nothing else goes to a consumer that is not trusted with all of the
//! guests' RAM ([`RamAccess`]): a buffer that cannot be made into dma-bufs
//! (not page-aligned, in memory udmabuf refuses, more than
//! [`MAX_FDS`] dma-bufs) is not handed to it at all. Segments, which pass
//! the guest's memory files, go only to trusted consumers; and never
//! QEMU's own descriptors, which a consumer could use to truncate guest RAM
//! (every guest's VMM and the backend die of SIGBUS) or to change their
//! flags: each file is reopened, through `/proc/self/fd`, read-only or
//! read-write as the consumer's trust says, and only if it is sealed
//! against shrinking and growing (a memfd with `F_SEAL_SHRINK` and
//! `F_SEAL_GROW`, as QEMU's memory-backend-memfd makes). A descriptor of a
//! memfd, read-only or not, can be reopened read-write by whoever has it:
//! the seals are what keeps guest RAM in place; trust is trust.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use bufshare_consumer::wire::{MAX_FDS, MAX_SEGMENTS};
use bufshare_consumer::{Memory, Segment};
use log::debug;
use thiserror::Error as ThisError;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::access::RamAccess;
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

/// Why a buffer cannot go as dma-bufs.
#[derive(Clone, Debug, ThisError)]
pub enum NoDmaBuf {
    /// The host has no working udmabuf.
    #[error("no udmabuf")]
    NoUdmabuf,
    /// Its pieces are not whole pages.
    #[error("no dma-buf: pieces not page-aligned")]
    Unaligned,
    /// udmabuf's limits allow no dma-buf at all.
    #[error("no dma-buf: udmabuf's limits take nothing")]
    NoRoom,
    /// It would take more dma-bufs than one ADD passes.
    #[error(
        "no dma-buf: more than {MAX_FDS} dma-bufs of at most {list_limit} pieces \
         and {size_limit} bytes"
    )]
    TooManyDmaBufs {
        /// udmabuf's `list_limit`.
        list_limit: usize,
        /// udmabuf's `size_limit_mb`, in bytes, in whole pages.
        size_limit: u64,
    },
    /// udmabuf refused to make one (memory not a sealed memfd, ...).
    #[error("no dma-buf: UDMABUF_CREATE_LIST: {0}")]
    Create(Arc<io::Error>),
    /// Several, which the consumer's protocol version cannot take.
    #[error("{count} dma-bufs, which a version {version} consumer cannot take")]
    TooManyForVersion {
        /// How many dma-bufs the buffer needs.
        count: usize,
        /// The consumer's version.
        version: u32,
    },
}

/// Why the guest's memory files cannot be handed over as segments.
#[derive(Clone, Debug, ThisError)]
pub enum RamFileError {
    /// A memory file is not sealed against shrinking and growing: whoever
    /// has it could truncate guest RAM.
    #[error("a memory file not sealed against shrinking and growing")]
    Unsealed,
    /// A memory file cannot be sealed at all (not a memfd).
    #[error("a memory file that cannot be sealed: {0}")]
    CannotBeSealed(nix::errno::Errno),
    /// A memory file could not be opened anew.
    #[error("cannot reopen a memory file: {0}")]
    Reopen(Arc<io::Error>),
}

/// Why a buffer is not handed to a consumer: it cannot go as dma-bufs
/// and the consumer may not, or cannot, have segments.
#[derive(Clone, Debug, ThisError)]
pub enum HandOverError {
    /// The consumer is not trusted with all of the guests' RAM.
    #[error(
        "{0}, and segments (all of the guest's RAM) only go to consumers \
         trusted with it (--trust-ram)"
    )]
    NotTrusted(NoDmaBuf),
    /// It is trusted, but the memory files cannot go.
    #[error("{0}, and no segments: {1}")]
    NoSegments(NoDmaBuf, RamFileError),
}

impl HandOverError {
    /// Why there are no dma-bufs.
    pub fn no_dmabuf(&self) -> &NoDmaBuf {
        match self {
            HandOverError::NotTrusted(why) | HandOverError::NoSegments(why, _) => why,
        }
    }
}

/// To whom memory is handed over: what the consumer may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receiver {
    /// The protocol version of its connection: several dma-bufs for one
    /// buffer need version 2.
    pub version: u32,
    /// Whether it is trusted with all of the guests' RAM (segments), and
    /// how.
    pub ram: Option<RamAccess>,
}

/// Dma-bufs made of a buffer, each with its size, in order.
type DmaBufs = Vec<(OwnedFd, u64)>;

/// A buffer's memory, ready to be handed over: the files and the segments
/// of them, and the dma-bufs and reopened files once made.
#[derive(Debug)]
pub struct Export {
    /// The memory files, as the frontend passed them: never handed over.
    files: Vec<Arc<File>>,
    segments: Vec<Segment>,
    size: u64,
    /// Why the files may not go to consumers (not sealed), if so.
    unsealed: Option<RamFileError>,
    /// The dma-bufs: made on first use; why not, if they cannot be.
    dmabufs: OnceLock<Result<DmaBufs, NoDmaBuf>>,
    /// The files reopened read-only, then read-write: on first use.
    reopened: [OnceLock<Result<Vec<OwnedFd>, RamFileError>>; 2],
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
        let unsealed = files.iter().find_map(|f| unsealed(f).err());
        Ok(Self {
            files,
            segments,
            size: buffer.size,
            unsealed,
            dmabufs: OnceLock::new(),
            reopened: [OnceLock::new(), OnceLock::new()],
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

    /// The memory to hand over to `to`, or why it cannot have any:
    ///
    /// * with `udmabuf`, its dma-bufs (made on the first call, by whichever
    ///   thread comes first, then shared): one, or several for a version 2
    ///   consumer;
    /// * else, or if they cannot be made (or are several, for version 1),
    ///   segments of the memory files reopened as `to.ram` says, if it is
    ///   trusted with the guests' RAM and the files are sealed;
    /// * else nothing.
    pub fn memory(
        &self,
        udmabuf: Option<&Udmabuf>,
        to: &Receiver,
    ) -> Result<Memory<BorrowedFd<'_>>, HandOverError> {
        let mut why = NoDmaBuf::NoUdmabuf;
        if let Some(udmabuf) = udmabuf {
            match self.dmabufs(udmabuf) {
                Ok([(fd, _)]) => return Ok(Memory::DmaBuf(fd.as_fd())),
                Ok(dmabufs) if to.version >= 2 => {
                    return Ok(Memory::DmaBufs {
                        dmabufs: dmabufs.iter().map(|(fd, _)| fd.as_fd()).collect(),
                        segments: dmabufs
                            .iter()
                            .zip(0..)
                            .map(|(&(_, len), file)| Segment {
                                file,
                                offset: 0,
                                len,
                            })
                            .collect(),
                    });
                }
                Ok(dmabufs) => {
                    why = NoDmaBuf::TooManyForVersion {
                        count: dmabufs.len(),
                        version: to.version,
                    };
                }
                Err(e) => why = e,
            }
        }
        let Some(access) = to.ram else {
            return Err(HandOverError::NotTrusted(why));
        };
        let files = self
            .reopened(access)
            .map_err(|e| HandOverError::NoSegments(why, e))?;
        Ok(Memory::Segments {
            files: files.iter().map(AsFd::as_fd).collect(),
            segments: self.segments.clone(),
        })
    }

    /// The dma-bufs, made on the first call.
    fn dmabufs(&self, udmabuf: &Udmabuf) -> Result<&[(OwnedFd, u64)], NoDmaBuf> {
        self.dmabufs
            .get_or_init(|| {
                let plan = plan_dmabufs(
                    &self.segments,
                    udmabuf.page,
                    udmabuf.list_limit,
                    udmabuf.size_limit,
                )?;
                plan.iter()
                    .map(|pieces| {
                        let len = pieces.iter().map(|p| p.len).sum();
                        udmabuf
                            .create(&self.files, pieces)
                            .map(|fd| (fd, len))
                            .map_err(|e| NoDmaBuf::Create(Arc::new(e)))
                    })
                    .collect()
            })
            .as_deref()
            .map_err(Clone::clone)
    }

    /// The memory files reopened for `access`, made on the first call;
    /// refused if they are not sealed.
    fn reopened(&self, access: RamAccess) -> Result<&[OwnedFd], RamFileError> {
        if let Some(why) = &self.unsealed {
            return Err(why.clone());
        }
        let slot = match access {
            RamAccess::ReadOnly => &self.reopened[0],
            RamAccess::ReadWrite => &self.reopened[1],
        };
        slot.get_or_init(|| {
            self.files
                .iter()
                .map(|f| reopen(f, access).map_err(|e| RamFileError::Reopen(Arc::new(e))))
                .collect()
        })
        .as_deref()
        .map_err(Clone::clone)
    }

    /// The buffer's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Whether `file` is sealed against shrinking and growing, as guest RAM
/// handed to consumers must be: else why not.
fn unsealed(file: &File) -> Result<(), RamFileError> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let needed = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
    match fcntl(file, FcntlArg::F_GET_SEALS) {
        Ok(seals) if SealFlag::from_bits_truncate(seals).contains(needed) => Ok(()),
        Ok(_) => Err(RamFileError::Unsealed),
        Err(e) => Err(RamFileError::CannotBeSealed(e)),
    }
}

/// A new open file description of `file` (not the frontend's own, whose
/// flags and offset it shares), read-only or read-write as `access` says,
/// checked to be the same file.
fn reopen(file: &File, access: RamAccess) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let reopened = OpenOptions::new()
        .read(true)
        .write(access == RamAccess::ReadWrite)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    let (a, b) = (file.metadata()?, reopened.metadata()?);
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(io::Error::other("reopened another file"));
    }
    Ok(reopened.into())
}

/// Splits `segments` (pieces of files) into the lists of pieces of
/// dma-bufs that udmabuf can make: each of at most `list_limit` pieces and
/// `size_limit` bytes, a piece split where it must be, in order; at most
/// [`MAX_FDS`] of them (what one ADD passes). Every piece must be
/// page-aligned (offset and length), as udmabuf wants.
pub fn plan_dmabufs(
    segments: &[Segment],
    page: u64,
    list_limit: usize,
    size_limit: u64,
) -> Result<Vec<Vec<Segment>>, NoDmaBuf> {
    if page == 0 {
        return Err(NoDmaBuf::NoRoom);
    }
    if segments
        .iter()
        .any(|s| s.offset % page != 0 || s.len % page != 0)
    {
        return Err(NoDmaBuf::Unaligned);
    }
    // Whole pages per dma-buf.
    let size_limit = size_limit - size_limit % page;
    if list_limit == 0 || size_limit == 0 {
        return Err(NoDmaBuf::NoRoom);
    }
    let mut plan: Vec<Vec<Segment>> = vec![Vec::new()];
    let mut size = 0u64;
    for seg in segments {
        let mut piece = *seg;
        while piece.len > 0 {
            let current = plan.last_mut().expect("never empty");
            if current.len() == list_limit || size == size_limit {
                if plan.len() == MAX_FDS {
                    return Err(NoDmaBuf::TooManyDmaBufs {
                        list_limit,
                        size_limit,
                    });
                }
                plan.push(Vec::new());
                size = 0;
                continue;
            }
            let len = piece.len.min(size_limit - size);
            current.push(Segment { len, ..piece });
            size += len;
            piece.offset += len;
            piece.len -= len;
        }
    }
    Ok(plan)
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
pub(crate) mod tests {
    use std::mem::size_of;
    use std::os::unix::fs::FileExt;

    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use vm_memory::FileOffset;

    use super::*;
    use crate::buffers::tests::buffer;

    #[test]
    fn ioctl_layout() {
        assert_eq!(size_of::<UdmabufCreateItem>(), 24);
        assert_eq!(UDMABUF_CREATE_LIST, 0x4008_7543);
    }

    /// A memfd of `len` bytes, sealed as QEMU seals guest RAM if `sealed`.
    pub(crate) fn memfd(len: u64, sealed: bool) -> File {
        let fd = memfd_create(
            "export-test",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .unwrap();
        let file = File::from(fd);
        file.set_len(len).unwrap();
        if sealed {
            fcntl(
                &file,
                FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
            )
            .unwrap();
        }
        file
    }

    /// Guest RAM: 0..0x4000 and 0x4000..0x8000 in one file (at 0x1000
    /// and 0x6000 of it), 0x10000..0x12000 in another, 0x20000..0x21000
    /// anonymous; the files sealed if `sealed`.
    fn memory_of(sealed: bool) -> (GuestMemoryMmap, File, File) {
        let f0 = memfd(0x10000, sealed);
        let f1 = memfd(0x2000, sealed);
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

    fn memory() -> (GuestMemoryMmap, File, File) {
        memory_of(true)
    }

    fn seg(file: u32, offset: u64, len: u64) -> Segment {
        Segment { file, offset, len }
    }

    const UNTRUSTED: Receiver = Receiver {
        version: 2,
        ram: None,
    };
    const READ_ONLY: Receiver = Receiver {
        version: 2,
        ram: Some(RamAccess::ReadOnly),
    };
    const READ_WRITE: Receiver = Receiver {
        version: 2,
        ram: Some(RamAccess::ReadWrite),
    };

    /// The access mode of a descriptor (`O_ACCMODE` of its flags).
    fn access_mode(fd: BorrowedFd<'_>) -> i32 {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap() & libc::O_ACCMODE
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
        assert_eq!(export.size(), 0x3008);
        // Without udmabuf: segments, for trusted consumers only.
        let e = export.memory(None, &UNTRUSTED).unwrap_err();
        assert!(
            matches!(e, HandOverError::NotTrusted(NoDmaBuf::NoUdmabuf)),
            "{e}"
        );
        assert!(e.to_string().contains("--trust-ram"), "{e}");
        for (to, mode) in [(READ_ONLY, libc::O_RDONLY), (READ_WRITE, libc::O_RDWR)] {
            match export.memory(None, &to).unwrap() {
                Memory::Segments { files, segments } => {
                    assert_eq!(files.len(), 2);
                    assert_eq!(segments, export.segments());
                    for (fd, file) in files.iter().zip(export.files()) {
                        // The same files, but never the frontend's own
                        // descriptors.
                        assert_ne!(fd.as_raw_fd(), file.as_raw_fd());
                        let meta = File::from(fd.try_clone_to_owned().unwrap())
                            .metadata()
                            .unwrap();
                        assert_eq!(meta.ino(), ino(file));
                        assert_eq!(access_mode(*fd), mode);
                    }
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn read_only_segments_cannot_truncate_nor_write() {
        let (mem, f0, _f1) = memory();
        let export = Export::new(&buffer(&mem, &[(0, 0x1000)]), Some(&mem)).unwrap();
        let Ok(Memory::Segments { files, .. }) = export.memory(None, &READ_ONLY) else {
            panic!("no segments");
        };
        let file = File::from(files[0].try_clone_to_owned().unwrap());
        assert!(file.set_len(0).is_err());
        assert!(file.write_at(b"x", 0x1000).is_err());
        assert_eq!(f0.metadata().unwrap().len(), 0x10000);
        // Read-write: still sealed against truncation.
        let Ok(Memory::Segments { files, .. }) = export.memory(None, &READ_WRITE) else {
            panic!("no segments");
        };
        let file = File::from(files[0].try_clone_to_owned().unwrap());
        assert!(file.set_len(0).is_err());
        assert!(file.set_len(0x20000).is_err());
        file.write_all_at(b"x", 0x1000).unwrap();
        let mut byte = [0];
        f0.read_exact_at(&mut byte, 0x1000).unwrap();
        assert_eq!(&byte, b"x");
    }

    #[test]
    fn unsealed_memory_goes_to_nobody() {
        let (mem, _f0, _f1) = memory_of(false);
        let export = Export::new(&buffer(&mem, &[(0, 0x1000)]), Some(&mem)).unwrap();
        let e = export.memory(None, &UNTRUSTED).unwrap_err();
        assert!(matches!(e, HandOverError::NotTrusted(_)), "{e}");
        for to in [READ_ONLY, READ_WRITE] {
            let e = export.memory(None, &to).unwrap_err();
            assert!(
                matches!(
                    e,
                    HandOverError::NoSegments(NoDmaBuf::NoUdmabuf, RamFileError::Unsealed)
                ),
                "{e}"
            );
            assert!(e.to_string().contains("not sealed"), "{e}");
        }
        // A file that cannot be sealed at all: the same.
        let f = tempfile::tempfile().unwrap();
        f.set_len(0x1000).unwrap();
        let mem = GuestMemoryMmap::from_ranges_with_files(&[(
            GuestAddress(0),
            0x1000,
            Some(FileOffset::new(f, 0)),
        )])
        .unwrap();
        let export = Export::new(&buffer(&mem, &[(0, 0x1000)]), Some(&mem)).unwrap();
        let e = export.memory(None, &READ_WRITE).unwrap_err();
        assert!(
            matches!(
                e,
                HandOverError::NoSegments(_, RamFileError::CannotBeSealed(_))
            ),
            "{e}"
        );
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
    fn dmabuf_plans() {
        const P: u64 = 0x1000;
        // Small and few: one dma-buf, as it is.
        let pieces = [seg(0, 0, 2 * P), seg(1, 4 * P, P)];
        assert_eq!(
            plan_dmabufs(&pieces, P, 2, 16 * P).unwrap(),
            [pieces.to_vec()]
        );
        // More pieces than the list limit: split by count.
        let many: Vec<Segment> = (0..5).map(|i| seg(0, 2 * i * P, P)).collect();
        assert_eq!(
            plan_dmabufs(&many, P, 2, 16 * P).unwrap(),
            [many[..2].to_vec(), many[2..4].to_vec(), many[4..].to_vec()]
        );
        // Larger than the size limit: a piece split at it, in pages.
        assert_eq!(
            plan_dmabufs(&[seg(0, P, 5 * P), seg(1, 0, P)], P, 8, 2 * P + 5).unwrap(),
            [
                vec![seg(0, P, 2 * P)],
                vec![seg(0, 3 * P, 2 * P)],
                vec![seg(0, 5 * P, P), seg(1, 0, P)],
            ]
        );
        // Every byte, in order, within the limits.
        let scattered: Vec<Segment> = (0..40)
            .map(|i| seg(i % 3, i as u64 * 3 * P, P * (1 + i as u64 % 4)))
            .collect();
        let plan = plan_dmabufs(&scattered, P, 7, 5 * P).unwrap();
        assert!(plan.len() <= MAX_FDS);
        for list in &plan {
            assert!(!list.is_empty() && list.len() <= 7);
            assert!(list.iter().map(|s| s.len).sum::<u64>() <= 5 * P);
        }
        let flat: Vec<(u32, u64)> = plan
            .iter()
            .flatten()
            .flat_map(|s| (0..s.len / P).map(move |p| (s.file, s.offset + p * P)))
            .collect();
        let expected: Vec<(u32, u64)> = scattered
            .iter()
            .flat_map(|s| (0..s.len / P).map(move |p| (s.file, s.offset + p * P)))
            .collect();
        assert_eq!(flat, expected);
        // Refused: not page-aligned, or more than an ADD passes.
        assert!(matches!(
            plan_dmabufs(&[seg(0, 8, P)], P, 8, 16 * P),
            Err(NoDmaBuf::Unaligned)
        ));
        assert!(matches!(
            plan_dmabufs(&[seg(0, 0, P + 8)], P, 8, 16 * P),
            Err(NoDmaBuf::Unaligned)
        ));
        assert!(matches!(
            plan_dmabufs(&[seg(0, 0, P)], P, 8, P - 1),
            Err(NoDmaBuf::NoRoom)
        ));
        let too_many: Vec<Segment> = (0..33).map(|i| seg(0, 2 * i * P, P)).collect();
        assert!(matches!(
            plan_dmabufs(&too_many, P, 1, 16 * P),
            Err(NoDmaBuf::TooManyDmaBufs {
                list_limit: 1,
                size_limit: 0x10000
            })
        ));
        assert_eq!(
            plan_dmabufs(&too_many[..32], P, 1, 16 * P).unwrap().len(),
            32
        );
    }

    #[test]
    fn several_dmabufs_go_to_version_2_only() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let udmabuf = Udmabuf {
            dev: File::open(file.path()).unwrap(),
            page: 4096,
            list_limit: 1,
            size_limit: 0x1000,
        };
        let (mem, _f0, _f1) = memory();
        let export = Export::new(&buffer(&mem, &[(0, 0x2000)]), Some(&mem)).unwrap();
        // What udmabuf would have made: two dma-bufs of a page (memfds
        // stand in for them).
        let fake = |len| OwnedFd::from(memfd(len, true));
        export
            .dmabufs
            .set(Ok(vec![(fake(0x1000), 0x1000), (fake(0x1000), 0x1000)]))
            .unwrap();
        match export.memory(Some(&udmabuf), &UNTRUSTED).unwrap() {
            Memory::DmaBufs { dmabufs, segments } => {
                assert_eq!(dmabufs.len(), 2);
                assert_eq!(segments, [seg(0, 0, 0x1000), seg(1, 0, 0x1000)]);
            }
            other => panic!("{other:?}"),
        }
        // A version 1 consumer cannot take them: nothing, unless trusted.
        let v1 = Receiver {
            version: 1,
            ..UNTRUSTED
        };
        let e = export.memory(Some(&udmabuf), &v1).unwrap_err();
        assert!(
            matches!(
                e,
                HandOverError::NotTrusted(NoDmaBuf::TooManyForVersion {
                    count: 2,
                    version: 1
                })
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("2 dma-bufs, which a version 1 consumer"),
            "{e}"
        );
        let v1_trusted = Receiver {
            version: 1,
            ..READ_ONLY
        };
        assert!(matches!(
            export.memory(Some(&udmabuf), &v1_trusted),
            Ok(Memory::Segments { .. })
        ));
        // One dma-buf: the version 1 form, for everyone.
        let export = Export::new(&buffer(&mem, &[(0, 0x1000)]), Some(&mem)).unwrap();
        export
            .dmabufs
            .set(Ok(vec![(fake(0x1000), 0x1000)]))
            .unwrap();
        for to in [UNTRUSTED, v1] {
            assert!(matches!(
                export.memory(Some(&udmabuf), &to),
                Ok(Memory::DmaBuf(_))
            ));
        }
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

        // A buffer whose dma-buf cannot be made is not handed over to an
        // untrusted consumer (no silent fallback to all of guest RAM); a
        // trusted one gets segments. The attempt is not repeated.
        let (mem, _f0, _f1) = memory();
        let export = Export::new(&buffer(&mem, &[(0, 0x1000)]), Some(&mem)).unwrap();
        for _ in 0..2 {
            let e = export.memory(Some(&udmabuf), &UNTRUSTED).unwrap_err();
            assert!(
                matches!(e, HandOverError::NotTrusted(NoDmaBuf::Create(_))),
                "{e}"
            );
            assert!(
                e.to_string().starts_with("no dma-buf: UDMABUF_CREATE_LIST"),
                "{e}"
            );
            assert!(matches!(
                export.memory(Some(&udmabuf), &READ_ONLY),
                Ok(Memory::Segments { .. })
            ));
        }
        assert!(matches!(export.dmabufs.get(), Some(Err(_))));
        // Nor one too large for udmabuf, nor one not page-aligned.
        for ranges in [&[(0u64, 0x4000u64)][..], &[(0x100, 8)]] {
            let export = Export::new(&buffer(&mem, ranges), Some(&mem)).unwrap();
            assert!(matches!(
                export.memory(Some(&udmabuf), &UNTRUSTED),
                Err(HandOverError::NotTrusted(
                    NoDmaBuf::Create(_) | NoDmaBuf::Unaligned
                ))
            ));
        }
    }
}
