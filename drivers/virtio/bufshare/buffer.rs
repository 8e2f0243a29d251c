// SPDX-License-Identifier: GPL-2.0

//! Buffers: the memory an application registers, as the device reaches it.

use kernel::{
    dma::DataDirection,
    dma_buf::{
        DmaBuf,
        MappedAttachment, //
    },
    fs::{
        file::flags,
        LocalFile, //
    },
    memfd::{
        self,
        DmaMappedFolios,
        PinnedFolios, //
    },
    memlock::MemlockCharge,
    page::PAGE_SIZE,
    prelude::*,
    ratelimit::RateLimit,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Mutex,
    },
    uapi,
    virtio::DmaTarget,
};

use crate::props::APP_LEN;

/// A range of memory as the device sees it.
#[derive(Clone, Copy)]
pub(crate) struct Range {
    pub(crate) addr: u64,
    pub(crate) len: u64,
}

/// The ranges of a buffer, merged where they touch, at most `max` of them.
pub(crate) struct Ranges {
    list: KVVec<Range>,
    max: usize,
}

impl Ranges {
    fn new(max: usize) -> Self {
        Ranges {
            list: KVVec::new(),
            max,
        }
    }

    fn push(&mut self, addr: u64, len: u64) -> Result {
        if len == 0 {
            return Ok(());
        }
        if let Some(last) = self.list.last_mut() {
            if last.addr.checked_add(last.len) == Some(addr) {
                last.len = last.len.checked_add(len).ok_or(EINVAL)?;
                return Ok(());
            }
        }
        if self.list.len() >= self.max {
            return Err(E2BIG);
        }
        self.list.push(Range { addr, len }, GFP_KERNEL)?;
        Ok(())
    }

    fn total(&self) -> u64 {
        self.list.iter().map(|r| r.len).sum()
    }
}

/// What holds the memory of a buffer for the device.
enum Hold {
    /// Memfd folios, pinned and mapped with the DMA API.
    Mapped(#[expect(dead_code)] DmaMappedFolios),
    /// Memfd folios, pinned; the device reads them by physical address.
    Pinned(#[expect(dead_code)] PinnedFolios),
    /// A dma-buf, attached and mapped.
    DmaBuf(MappedAttachment),
}

/// The memory of a buffer, held for the device until the buffer is dropped.
pub(crate) struct Memory {
    /// Dropped first: the memory is let go...
    hold: Hold,
    /// ...before its charge to the user who registered it is given back.
    _charge: MemlockCharge,
}

impl Memory {
    /// The dma-buf the memory is in, if it is one.
    pub(crate) fn dma_buf(&self) -> Option<&DmaBuf> {
        match &self.hold {
            Hold::DmaBuf(mapped) => Some(mapped.attachment().dma_buf()),
            Hold::Mapped(_) | Hold::Pinned(_) => None,
        }
    }
}

/// The pages `bytes` bytes span, as charged to `RLIMIT_MEMLOCK`.
fn pages(bytes: u64) -> Result<usize> {
    let pages = bytes.div_ceil(PAGE_SIZE as u64);
    usize::try_from(pages).map_err(|_| ENOMEM)
}

impl Memory {
    /// Takes the memory of `length` bytes at `offset` in the memfd or dma-buf open as `fd`, for
    /// the device reached as `target`; returns it, its kind, and its ranges (at most
    /// `max_ranges`). `offset` and `length` are page-aligned, `length` non-zero.
    ///
    /// What is pinned is charged to the calling user's `RLIMIT_MEMLOCK` first (`ENOMEM` over
    /// it): the range of a memfd, the whole of a dma-buf, which is attached and mapped whole.
    pub(crate) fn take(
        fd: i32,
        offset: u64,
        length: u64,
        target: &DmaTarget,
        max_ranges: usize,
        log_limit: &RateLimit,
    ) -> Result<(Memory, u32, KVVec<Range>)> {
        let mut ranges = Ranges::new(max_ranges);
        let fd_u32 = u32::try_from(fd).map_err(|_| EBADF)?;
        let file = LocalFile::fget(fd_u32)?;
        // The device writes the memory: the caller must be allowed to (checked once the file is
        // known to be a memfd or a dma-buf, which comes first).
        let writable = file.flags() & flags::O_ACCMODE != flags::O_RDONLY;
        match memfd::seals(&file) {
            // A shmem or hugetlbfs file that carries `F_SEAL_SEAL` without `F_SEAL_SHRINK` can
            // never be sealed against shrinking: a regular file of a tmpfs, or a memfd made
            // without `MFD_ALLOW_SEALING` (or sealed so). No memfd that can be shared, as a file
            // that is none. Seals are never taken away, so this holds without the inode lock.
            Ok(seals) if seals & uapi::F_SEAL_SEAL != 0 && seals & memfd::SEAL_SHRINK == 0 => {
                Err(EINVAL)
            }
            Ok(_) => {
                if !writable {
                    return Err(EACCES);
                }
                let charge = MemlockCharge::charge_current(pages(length)?)?;
                let pinned = PinnedFolios::pin_sealed(&file, offset, length, |seals| {
                    if seals & memfd::SEAL_SHRINK == 0
                        || seals & (memfd::SEAL_WRITE | memfd::SEAL_FUTURE_WRITE) != 0
                    {
                        return Err(EPERM);
                    }
                    Ok(())
                })?;
                let hold = match target {
                    DmaTarget::Api(dev) => {
                        let dir = DataDirection::Bidirectional;
                        // SAFETY: The buffer, and so this mapping, is dropped before the driver
                        // unbinds from the virtio device (`BufshareDevice::shut_down`), so while a
                        // driver is bound to its transport device `dev`.
                        let mapped = unsafe { pinned.dma_map(dev.clone(), dir) }?;
                        for (addr, len) in mapped.dma_ranges() {
                            if !target.reaches_directly(addr) {
                                return Err(EOPNOTSUPP);
                            }
                            ranges.push(addr, len as u64)?;
                        }
                        Hold::Mapped(mapped)
                    }
                    DmaTarget::Physical(_) => {
                        for piece in pinned.pieces() {
                            ranges.push(piece.phys_addr(), piece.len as u64)?;
                        }
                        Hold::Pinned(pinned)
                    }
                };
                let memory = Memory {
                    hold,
                    _charge: charge,
                };
                Ok((memory, uapi::BUFSHARE_KIND_MEMFD, ranges.list))
            }
            Err(e) if e == EINVAL => {
                let dmabuf = DmaBuf::from_fd(fd)?;
                // The one whose access mode was read above.
                if !dmabuf.is_file(&file) {
                    return Err(EBADF);
                }
                drop(file);
                if !writable {
                    return Err(EACCES);
                }
                let end = offset.checked_add(length).ok_or(EINVAL)?;
                // Alignment was checked by the caller.
                if end > dmabuf.size() as u64 {
                    return Err(EINVAL);
                }
                let charge = MemlockCharge::charge_current(pages(dmabuf.size() as u64)?)?;
                // SAFETY: As for the memfd mapping above: the attachment is dropped before the
                // driver unbinds from the virtio device.
                let attach = unsafe { dmabuf.attach(target.device().clone()) }?;
                let mapped = attach.map(DataDirection::Bidirectional).map_err(|e| {
                    if e == ENOMEM || e == EINTR || e == ERESTARTSYS {
                        e
                    } else {
                        if log_limit.allow() {
                            pr_info!("exporter cannot map its dma-buf for the device: {:?}\n", e);
                        }
                        EOPNOTSUPP
                    }
                })?;
                // Only the DMA addresses and lengths of the mapping: the pages are the
                // exporter's.
                let mut pos = 0u64;
                for sg in mapped.sg_table().iter() {
                    let (addr, len) = (sg.dma_address(), sg.dma_len());
                    // Bounced (swiotlb) or not coherent, the device would not see the buffer
                    // as the CPU writes it.
                    if !target.reaches_directly(addr) {
                        return Err(EOPNOTSUPP);
                    }
                    let seg_end = pos.checked_add(len).ok_or(EINVAL)?;
                    let from = offset.max(pos);
                    let to = end.min(seg_end);
                    if from < to {
                        ranges.push(addr.checked_add(from - pos).ok_or(EINVAL)?, to - from)?;
                    }
                    pos = seg_end;
                    if pos >= end {
                        break;
                    }
                }
                if ranges.total() != length {
                    return Err(EINVAL);
                }
                let memory = Memory {
                    hold: Hold::DmaBuf(mapped),
                    _charge: charge,
                };
                Ok((memory, uapi::BUFSHARE_KIND_DMABUF, ranges.list))
            }
            Err(e) => Err(e),
        }
    }
}

/// What changes in a buffer's life; changing it takes a command, so the lock is a mutex.
pub(crate) struct BufferState {
    pub(crate) props: KVec<u8>,
}

/// A registered buffer.
#[pin_data]
pub(crate) struct Buffer {
    pub(crate) id: u64,
    /// The open file that owns it ([`Owner`](crate::device::Owner)).
    pub(crate) owner: u64,
    pub(crate) kind: u32,
    pub(crate) size: u64,
    pub(crate) application: [u8; APP_LEN],
    /// The number of the last update; written with `state` locked.
    pub(crate) seqno: Atomic<u64>,
    /// Its memory as the device reaches it, as registered.
    pub(crate) ranges: KVVec<Range>,
    /// The epoch ([`Cmdq::epoch`](crate::cmdq::Cmdq::epoch)) of the answer that completed its
    /// last registration: the device holds it as long as the epoch has not moved on.
    pub(crate) epoch: Atomic<u64>,
    /// Changed by commands, so that they reach the device in order.
    #[pin]
    pub(crate) state: Mutex<BufferState>,
    /// Dropped, so unmapped and unpinned, only once the device gave the buffer up or was reset.
    pub(crate) memory: Memory,
}

impl Buffer {
    /// How many ranges it has; checked at registration to fit a `u32`.
    pub(crate) fn nr_ranges(&self) -> u32 {
        u32::try_from(self.ranges.len()).unwrap_or(u32::MAX)
    }

    /// Its application's name.
    pub(crate) fn app_str(&self) -> &str {
        let len = self
            .application
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(APP_LEN);
        // Checked to be ASCII at registration.
        core::str::from_utf8(&self.application[..len]).unwrap_or("?")
    }

    /// Whether its last registration was answered in the epoch `epoch` or later.
    pub(crate) fn registered_since(&self, epoch: u64) -> bool {
        self.epoch.load(Relaxed) >= epoch
    }
}
