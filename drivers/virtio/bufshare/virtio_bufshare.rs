// SPDX-License-Identifier: GPL-2.0

//! Virtio buffer sharing driver.
//!
//! Binds the virtio buffer sharing device (`VIRTIO_ID_DMABUF`), through which guest applications
//! share buffers in guest memory with programs on the host. Applications talk to the driver
//! through the misc device `/dev/bufshare`: they register a memfd or a dma-buf they already have,
//! with properties, and the driver describes its memory to the device, range by range, so that
//! the host reads and writes it in place. Commands go on the device's one virtqueue; the driver
//! checks every answer.
//!
//! A buffer belongs to the open file that registered it. Closing the file, however the process
//! ends, unregisters every buffer it still has.
//!
//! See `Documentation/virtio/virtio-bufshare.rst` for the device and
//! `Documentation/userspace-api/bufshare.rst` for the ioctls.

use core::{
    mem::{
        offset_of,
        size_of, //
    },
    ptr::NonNull,
};
use kernel::{
    c_str,
    device::Core,
    dma::DataDirection,
    dma_buf::{
        DmaBuf,
        MappedAttachment, //
    },
    fs::File,
    ioctl::{
        _IOR,
        _IOW,
        _IOWR, //
    },
    memfd::{
        self,
        DmaMappedFolios,
        PinnedFolios, //
    },
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    new_condvar, new_mutex, new_spinlock_irq,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
    seq_file::SeqFile,
    seq_print,
    sync::{
        aref::ARef,
        atomic::{
            Acquire,
            Atomic,
            Relaxed,
            Release, //
        },
        Arc,
        CondVar,
        CondVarTimeoutResult,
        Mutex,
        SpinLockIrq,
        SpinLockIrqGuard, //
    },
    time::msecs_to_jiffies,
    transmute::{
        AsBytes,
        FromBytes, //
    },
    types::Opaque,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
    uapi,
    virtio::{
        self,
        DmaTarget, //
    },
};

/// How long a caller waits for the device to complete a command.
const COMMAND_TIMEOUT_MS: u32 = 10_000;
/// Set in [`Shared::generation`] once the device's generation is known.
const GENERATION_KNOWN: u64 = 1 << 32;
/// How many times in a row the driver registers its buffers again for a device that keeps losing
/// them before it lets the operation that found out go on.
const MAX_RECOVERIES: u32 = 3;

/// Room for the largest answer the driver expects.
const RESP_MAX: usize = 128;

const PAGE_SIZE: u64 = kernel::page::PAGE_SIZE as u64;

const APP_LEN: usize = uapi::VIRTIO_BUFSHARE_APP_LEN as usize;
const PROP_NAME_MAX: usize = uapi::VIRTIO_BUFSHARE_PROP_NAME_MAX as usize;
const RANGES_PER_CMD: usize = uapi::VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD as usize;
const RANGE_SIZE: usize = size_of::<uapi::virtio_bufshare_range>();
const RESP_HDR_LEN: usize = size_of::<uapi::virtio_bufshare_resp_hdr>();

const BUFSHARE_IOC_GET_INFO: u32 = _IOR::<uapi::bufshare_info>(uapi::BUFSHARE_IOCTL_BASE, 0x00);
const BUFSHARE_IOC_REGISTER: u32 =
    _IOWR::<uapi::bufshare_register>(uapi::BUFSHARE_IOCTL_BASE, 0x01);
const BUFSHARE_IOC_UPDATE: u32 = _IOWR::<uapi::bufshare_update>(uapi::BUFSHARE_IOCTL_BASE, 0x02);
const BUFSHARE_IOC_SET_PROPERTIES: u32 =
    _IOW::<uapi::bufshare_set_properties>(uapi::BUFSHARE_IOCTL_BASE, 0x03);
const BUFSHARE_IOC_UNREGISTER: u32 = _IOW::<u64>(uapi::BUFSHARE_IOCTL_BASE, 0x04);
const BUFSHARE_IOC_BUFFER_INFO: u32 =
    _IOWR::<uapi::bufshare_buffer_info>(uapi::BUFSHARE_IOCTL_BASE, 0x05);

kernel::virtio_device_table!(
    VIRTIO_BUFSHARE_IDS,
    [virtio::DeviceId::new(uapi::VIRTIO_BUFSHARE_DEVICE_ID)]
);

/// The device's limits, read from its configuration space at probe.
#[derive(Clone, Copy)]
struct Limits {
    max_ranges: u32,
    max_props_size: u32,
    max_buffers: u32,
    max_buffer_size: u64,
}

impl Limits {
    fn read(vdev: &virtio::Device<Core<'_>>) -> Result<Self> {
        let u32_at = |off: usize| u32::from_le(vdev.config_read::<u32>(off as u32));
        let limits = Limits {
            max_ranges: u32_at(offset_of!(uapi::virtio_bufshare_config, max_ranges)),
            max_props_size: u32_at(offset_of!(uapi::virtio_bufshare_config, max_props_size)),
            max_buffers: u32_at(offset_of!(uapi::virtio_bufshare_config, max_buffers)),
            max_buffer_size: u64::from_le(
                vdev.config_read::<u64>(
                    offset_of!(uapi::virtio_bufshare_config, max_buffer_size) as u32
                ),
            ),
        };
        if limits.max_ranges == 0 || limits.max_buffers == 0 || limits.max_buffer_size == 0 {
            dev_err!(
                vdev.as_ref(),
                "device advertises no room for buffers (ranges {}, buffers {}, size {})\n",
                limits.max_ranges,
                limits.max_buffers,
                limits.max_buffer_size
            );
            return Err(EINVAL);
        }
        Ok(limits)
    }

    /// The largest property set a buffer may have: the device's limit, lowered by the module's.
    fn props_size(&self) -> usize {
        module_parameters::max_props_size
            .value()
            .min(self.max_props_size) as usize
    }

    /// The largest number of buffers on the device: the device's limit, lowered by the module's.
    fn buffers(&self) -> usize {
        module_parameters::max_buffers.value().min(self.max_buffers) as usize
    }
}

/// A command as the device reads it: a header, then the command's fields, little-endian.
struct Wire(KVec<u8>);

impl Wire {
    fn new(cmd_type: u32, capacity: usize) -> Result<Self> {
        let hdr_len = size_of::<uapi::virtio_bufshare_cmd_hdr>();
        let mut wire = Wire(KVec::with_capacity(hdr_len + capacity, GFP_KERNEL)?);
        wire.u32(cmd_type)?;
        // flags: none are defined.
        wire.u32(0)?;
        Ok(wire)
    }

    fn u32(&mut self, v: u32) -> Result {
        Ok(self.0.extend_from_slice(&v.to_le_bytes(), GFP_KERNEL)?)
    }

    fn u64(&mut self, v: u64) -> Result {
        Ok(self.0.extend_from_slice(&v.to_le_bytes(), GFP_KERNEL)?)
    }

    fn bytes(&mut self, b: &[u8]) -> Result {
        Ok(self.0.extend_from_slice(b, GFP_KERNEL)?)
    }

    /// Pads with zeroes to a multiple of 8 bytes, counting from the end of the header.
    fn pad8(&mut self) -> Result {
        while self.0.len() % 8 != 0 {
            self.0.push(0, GFP_KERNEL)?;
        }
        Ok(())
    }

    fn ranges(&mut self, ranges: &[Range]) -> Result {
        for r in ranges {
            self.u64(r.addr)?;
            self.u64(r.len)?;
        }
        Ok(())
    }
}

/// One command in flight: what the device reads, and room for its answer.
///
/// # Invariants
///
/// - `resp` is only read through its raw pointer, and only once `used` holds a length: the
///   device wrote it and gave the command back.
/// - `used` is -1 while the command is pending, else the length the device reported (checked
///   against `resp_len` when it is read).
struct Command {
    req: KVec<u8>,
    resp: KBox<Opaque<[u8; RESP_MAX]>>,
    resp_len: usize,
    used: Atomic<i64>,
    /// How many times the device had lost its buffers when it answered ([`Shared::losses`]);
    /// written before the command is seen complete, under the queues' lock.
    epoch: Atomic<u64>,
}

impl Command {
    /// A command the device reads as `req`, expecting an answer of at most `resp_len` bytes.
    fn new(req: KVec<u8>, resp_len: usize) -> Result<Arc<Self>> {
        if !(RESP_HDR_LEN..=RESP_MAX).contains(&resp_len) {
            return Err(EINVAL);
        }
        Ok(Arc::new(
            Command {
                req,
                resp: KBox::new(Opaque::zeroed(), GFP_KERNEL)?,
                resp_len,
                used: Atomic::new(-1),
                epoch: Atomic::new(0),
            },
            GFP_KERNEL,
        )?)
    }

    /// Records that the device gave the command back, having written `len` bytes.
    fn complete(&self, len: u32) {
        self.used.store(i64::from(len), Release);
    }

    /// The device's answer once the command is complete; `EIO` if the device claims to have
    /// written more than there was room for.
    fn response(&self) -> Option<Result<&[u8]>> {
        let used = self.used.load(Acquire);
        let used = usize::try_from(used).ok()?;
        if used > self.resp_len {
            return Some(Err(EIO));
        }
        // SAFETY: `used` holds a length, so by the type invariants the device is done with
        // `resp` and nothing writes it any more; it was zero-initialised, so all of it is
        // initialised.
        let resp = unsafe { &*self.resp.get() };
        Some(Ok(&resp[..used]))
    }
}

// SAFETY: `req` is only read. `resp` is written by the device while the command is queued and only
// read, through a raw pointer, after the device gave the command back and `used` was published
// with release ordering (read with acquire ordering), so no two threads race on it.
unsafe impl Sync for Command {}

// SAFETY: A command owns its allocations; it can be dropped from any thread.
unsafe impl Send for Command {}

// SAFETY:
// - `req` and `resp` are separate `kmalloc` allocations (so in the linear mapping, and aligned
//   for DMA), owned by the command and never moved or resized while it lives.
// - By the type invariants `resp` is only accessed through raw pointers after the device gave the
//   command back.
unsafe impl virtio::Request for Command {
    fn device_readable(&self) -> &[u8] {
        &self.req
    }

    fn device_writable(&self) -> (NonNull<u8>, usize) {
        (NonNull::from(&*self.resp).cast(), self.resp_len)
    }
}

type Queues = virtio::Virtqueues<Shared, Arc<Command>>;

/// How a caller waits for the device.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A signal ends the wait with `EINTR`.
    Interruptible,
    /// Only the answer, the timeout or the device going away end the wait: for commands that
    /// clean up, which must reach the device even from a process being killed.
    Uninterruptible,
}

/// Properties: NUL-terminated `name=value` strings (see the device specification).
mod props {
    use super::PROP_NAME_MAX;
    use kernel::prelude::*;

    fn name_ok(name: &[u8]) -> bool {
        !name.is_empty()
            && name.len() <= PROP_NAME_MAX
            && name
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
    }

    fn value_ok(value: &[u8]) -> bool {
        value.iter().all(|&c| c >= 0x20 && c != 0x7f)
    }

    /// Splits a property set into `(name, value)` pairs; the set must have been checked.
    pub(super) fn iter(props: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        props
            .split(|&c| c == 0)
            .filter(|entry| !entry.is_empty())
            .map(|entry| match entry.iter().position(|&c| c == b'=') {
                Some(eq) => (&entry[..eq], &entry[eq + 1..]),
                None => (entry, &entry[entry.len()..]),
            })
    }

    /// Checks a property set: every entry NUL-terminated, a valid name, a `=`, a valid value,
    /// and no name twice.
    pub(super) fn check(props: &[u8]) -> Result {
        if props.is_empty() {
            return Ok(());
        }
        if props.last() != Some(&0) {
            return Err(EINVAL);
        }
        let body = &props[..props.len() - 1];
        for entry in body.split(|&c| c == 0) {
            let eq = entry.iter().position(|&c| c == b'=').ok_or(EINVAL)?;
            if !name_ok(&entry[..eq]) || !value_ok(&entry[eq + 1..]) {
                return Err(EINVAL);
            }
        }
        for (i, (name, _)) in iter(props).enumerate() {
            if iter(props).skip(i + 1).any(|(other, _)| other == name) {
                return Err(EINVAL);
            }
        }
        Ok(())
    }

    /// Returns the value of property `name`.
    pub(super) fn get<'a>(props: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
        iter(props).find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Returns the value of property `name` as a decimal `u32`.
    pub(super) fn get_u32(props: &[u8], name: &[u8]) -> Option<u32> {
        let value = get(props, name)?;
        if value.is_empty() || value.len() > 10 {
            return None;
        }
        let mut n: u64 = 0;
        for &c in value {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u64::from(c - b'0');
        }
        u32::try_from(n).ok()
    }

    /// Merges the checked set `new` into the checked set `old`: properties of `new` replace
    /// those of the same name, the others of `old` stay.
    pub(super) fn merge(old: &[u8], new: &[u8]) -> Result<KVec<u8>> {
        let mut out = KVec::with_capacity(old.len() + new.len(), GFP_KERNEL)?;
        for (name, value) in iter(old) {
            if get(new, name).is_none() {
                out.extend_from_slice(name, GFP_KERNEL)?;
                out.push(b'=', GFP_KERNEL)?;
                out.extend_from_slice(value, GFP_KERNEL)?;
                out.push(0, GFP_KERNEL)?;
            }
        }
        out.extend_from_slice(new, GFP_KERNEL)?;
        Ok(out)
    }
}

/// Checks an application name from user space: 1 to 63 characters out of `[A-Za-z0-9_.-]`, then
/// a NUL. Returns it NUL-padded, as the device reads it.
fn application(raw: &[kernel::ffi::c_char; APP_LEN]) -> Result<[u8; APP_LEN]> {
    let mut app = [0u8; APP_LEN];
    let len = raw.iter().position(|&c| c == 0).ok_or(EINVAL)?;
    if len == 0 {
        return Err(EINVAL);
    }
    for (dst, &src) in app.iter_mut().zip(&raw[..len]) {
        let c = src;
        if !(c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-') {
            return Err(EINVAL);
        }
        *dst = c;
    }
    Ok(app)
}

/// Reads `size` bytes of properties from user space and checks them.
fn read_props(ptr: u64, size: u32, max: usize) -> Result<KVec<u8>> {
    let size = size as usize;
    if size > max {
        return Err(E2BIG);
    }
    let mut buf = KVec::new();
    if size > 0 {
        let ptr = usize::try_from(ptr).map_err(|_| EFAULT)?;
        UserSlice::new(UserPtr::from_addr(ptr), size).read_all(&mut buf, GFP_KERNEL)?;
    }
    props::check(&buf)?;
    Ok(buf)
}

/// A range of memory as the device sees it.
#[derive(Clone, Copy)]
struct Range {
    addr: u64,
    len: u64,
}

/// The ranges of a buffer, merged where they touch, at most `max` of them.
struct Ranges {
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

/// The memory of a buffer, held for the device until the buffer is dropped.
enum Memory {
    /// Memfd folios, pinned and mapped with the DMA API.
    Mapped(#[expect(dead_code)] DmaMappedFolios),
    /// Memfd folios, pinned; the device reads them by physical address.
    Pinned(#[expect(dead_code)] PinnedFolios),
    /// A dma-buf, attached and mapped.
    DmaBuf(#[expect(dead_code)] MappedAttachment),
}

impl Memory {
    /// Takes the memory of `length` bytes at `offset` in the memfd or dma-buf open as `fd`, for
    /// the device reached as `target`; returns it, its kind, and its ranges (at most
    /// `max_ranges`). `offset` and `length` are page-aligned, `length` non-zero.
    fn take(
        fd: i32,
        offset: u64,
        length: u64,
        target: &DmaTarget,
        max_ranges: usize,
    ) -> Result<(Memory, u32, Ranges)> {
        let mut ranges = Ranges::new(max_ranges);
        let fd_u32 = u32::try_from(fd).map_err(|_| EBADF)?;
        let file = kernel::fs::LocalFile::fget(fd_u32)?;
        match memfd::seals(&file) {
            Ok(seals) => {
                if seals & memfd::SEAL_SHRINK == 0
                    || seals & (memfd::SEAL_WRITE | memfd::SEAL_FUTURE_WRITE) != 0
                {
                    return Err(EPERM);
                }
                let pinned = PinnedFolios::pin(&file, offset, length)?;
                let memory = match target {
                    DmaTarget::Api(dev) => {
                        let dir = DataDirection::Bidirectional;
                        // SAFETY: The buffer, and so this mapping, is dropped before the driver
                        // unbinds from the virtio device (`Shared::shut_down`), so while a driver
                        // is bound to its transport device `dev`.
                        let mapped = unsafe { pinned.dma_map(dev.clone(), dir) }?;
                        for (addr, len) in mapped.dma_ranges() {
                            ranges.push(addr, len as u64)?;
                        }
                        Memory::Mapped(mapped)
                    }
                    DmaTarget::Physical(_) => {
                        for piece in pinned.pieces() {
                            ranges.push(piece.phys_addr(), piece.len as u64)?;
                        }
                        Memory::Pinned(pinned)
                    }
                };
                Ok((memory, uapi::BUFSHARE_KIND_MEMFD, ranges))
            }
            Err(e) if e == EINVAL => {
                drop(file);
                let dmabuf = DmaBuf::from_fd(fd)?;
                let end = offset.checked_add(length).ok_or(EINVAL)?;
                // Alignment was checked by the caller.
                if end > dmabuf.size() as u64 {
                    return Err(EINVAL);
                }
                // SAFETY: As for the memfd mapping above: the attachment is dropped before the
                // driver unbinds from the virtio device.
                let attach = unsafe { dmabuf.attach(target.device().clone()) }?;
                let mapped = attach.map(DataDirection::Bidirectional).map_err(|e| {
                    if e == ENOMEM || e == EINTR || e == ERESTARTSYS {
                        e
                    } else {
                        pr_info!("exporter cannot map its dma-buf for the device: {:?}\n", e);
                        EOPNOTSUPP
                    }
                })?;
                // Only the DMA addresses and lengths of the mapping: the pages are the
                // exporter's.
                let mut pos = 0u64;
                for sg in mapped.sg_table().iter() {
                    let (addr, len) = (sg.dma_address(), sg.dma_len());
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
                Ok((Memory::DmaBuf(mapped), uapi::BUFSHARE_KIND_DMABUF, ranges))
            }
            Err(e) => Err(e),
        }
    }
}

/// What changes in a buffer's life; changing it takes a command, so the lock is a mutex.
struct BufferState {
    props: KVec<u8>,
}

/// A registered buffer.
#[pin_data]
struct Buffer {
    id: u64,
    /// The open file that owns it (`BufshareFile::id`).
    owner: u64,
    kind: u32,
    size: u64,
    application: [u8; APP_LEN],
    /// The number of the last update; written with `state` locked.
    seqno: Atomic<u64>,
    /// Its memory as the device reaches it, as registered.
    ranges: KVVec<Range>,
    /// [`Shared::losses`] when the device last confirmed registering it: the buffer is the
    /// device's as long as the device has not lost its buffers since.
    epoch: Atomic<u64>,
    #[pin]
    state: Mutex<BufferState>,
    /// Dropped, so unmapped and unpinned, only once the device gave the buffer up or was reset.
    _memory: Memory,
}

impl Buffer {
    /// How many ranges it has; checked at registration to fit a `u32`.
    fn nr_ranges(&self) -> u32 {
        u32::try_from(self.ranges.len()).unwrap_or(u32::MAX)
    }

    fn app_str(&self) -> &str {
        let len = self
            .application
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(APP_LEN);
        // Checked to be ASCII at registration.
        core::str::from_utf8(&self.application[..len]).unwrap_or("?")
    }
}

/// The buffers of a device.
struct Table {
    /// Set when the device goes away: no new operations start.
    gone: bool,
    /// Buffer operations running, which may hold buffers outside the table.
    inflight: usize,
    /// Registrations running, counted against the device's buffer limit.
    reserved: usize,
    buffers: RBTree<u64, Arc<Buffer>>,
    /// Buffers the device did not confirm giving up (it timed out): their memory stays with the
    /// device until it is reset.
    zombies: KVec<Arc<Buffer>>,
    /// How the device reaches memory; `None` if it cannot be given buffers.
    dma: Option<DmaTarget>,
    /// The [`Shared::losses`] the buffers were last registered again for.
    synced: u64,
    /// Set while the buffers are being registered again: no operation starts meanwhile.
    recovering: bool,
}

/// A buffer operation in progress; the device's shutdown waits for it.
struct Op<'a> {
    shared: &'a Shared,
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        let mut table = self.shared.table.lock();
        table.inflight -= 1;
        if table.inflight == 0 {
            self.shared.idle.notify_all();
        }
    }
}

/// The state of one device that outlives its binding: open files keep it.
#[pin_data]
struct Shared {
    /// The virtqueues, `None` once the device is gone.
    #[pin]
    queues: SpinLockIrq<Option<Queues>>,
    /// Signalled when the device used a command, or went away.
    #[pin]
    used: CondVar,
    /// The buffers, and what the device's shutdown waits for.
    #[pin]
    table: Mutex<Table>,
    /// Signalled when the last buffer operation ends.
    #[pin]
    idle: CondVar,
    /// Signalled when the buffers were registered again.
    #[pin]
    recovered: CondVar,
    /// The device's generation, with [`GENERATION_KNOWN`] set once an answer told it; written
    /// under the queues' lock.
    generation: Atomic<u64>,
    /// How many times the answers showed a new generation, that is the device lost its buffers;
    /// written under the queues' lock, in the order the device answered.
    losses: Atomic<u64>,
    dev: ARef<virtio::Device>,
    limits: Limits,
    features: u64,
    /// The id of the next buffer: ids are never reused while the device is bound.
    next_id: Atomic<u64>,
    /// The id of the next open file.
    next_file: Atomic<u64>,
}

impl Shared {
    /// Takes back every command the device has used, in the order it used them, follows the
    /// device's generation through their answers, and wakes the callers waiting for them.
    ///
    /// Callers reap too, on their way in and while they wait, so the command taken back may be
    /// another caller's, and the interrupt that announced it then finds the ring empty: the
    /// virtio core does not call the handler for it. Whoever takes an answer must wake its
    /// waiter.
    fn reap(&self, queues: &mut Queues) {
        let Some(vq) = queues.get_mut(uapi::VIRTIO_BUFSHARE_VQ_CMD as usize) else {
            return;
        };
        let mut reaped = false;
        while let Some((cmd, len)) = vq.get_buf() {
            cmd.complete(len);
            // Waiters read the epoch with the queues locked, as they are here.
            cmd.epoch.store(self.follow_generation(&cmd), Relaxed);
            reaped = true;
        }
        if reaped {
            self.used.notify_all();
        }
    }

    /// Notes the generation in the answer to `cmd`, which the device just gave back, and returns
    /// how many times the device has lost its buffers so far. Called with the queues locked, so
    /// answers are seen in the order the device gave them back, which is the order it carried
    /// the commands out.
    fn follow_generation(&self, cmd: &Command) -> u64 {
        let losses = self.losses.load(Relaxed);
        if self.features & (1 << uapi::VIRTIO_BUFSHARE_F_GENERATION) == 0 {
            return losses;
        }
        // Answers too short to hold a header say nothing, and fail anyway.
        let Some(Ok(resp)) = cmd.response() else {
            return losses;
        };
        // Only answers of a size the driver takes: a bare header, or the full answer.
        if resp.len() != RESP_HDR_LEN && resp.len() != cmd.resp_len {
            return losses;
        }
        let off = offset_of!(uapi::virtio_bufshare_resp_hdr, generation);
        let Some(generation) = le32(resp, off) else {
            return losses;
        };
        let known = u64::from(generation) | GENERATION_KNOWN;
        match self.generation.load(Relaxed) {
            current if current == known => losses,
            0 => {
                self.generation.store(known, Relaxed);
                losses
            }
            _ => {
                self.generation.store(known, Relaxed);
                let losses = losses.wrapping_add(1);
                self.losses.store(losses, Relaxed);
                losses
            }
        }
    }

    /// Sleeps until woken, the timeout or (if `wait` allows) a signal.
    fn sleep(&self, guard: &mut SpinLockIrqGuard<'_, Option<Queues>>, wait: Wait) -> Result {
        let timeout = msecs_to_jiffies(COMMAND_TIMEOUT_MS);
        match wait {
            Wait::Interruptible => match self.used.wait_interruptible_timeout(guard, timeout) {
                CondVarTimeoutResult::Signal { .. } => Err(EINTR),
                CondVarTimeoutResult::Timeout => Err(ETIMEDOUT),
                CondVarTimeoutResult::Woken { .. } => Ok(()),
            },
            Wait::Uninterruptible => match self.used.wait_timeout(guard, timeout) {
                0 => Err(ETIMEDOUT),
                _ => Ok(()),
            },
        }
    }

    /// Queues `cmd` and sleeps until the device answers; returns the answer and its epoch (see
    /// [`Shared::losses`]).
    fn submit<'a>(&self, cmd: &'a Arc<Command>, wait: Wait) -> Result<(&'a [u8], u64)> {
        let mut guard = self.queues.lock();

        // Queue it, waiting for room if the ring is full.
        loop {
            let queues = Option::as_mut(&mut *guard).ok_or(ENODEV)?;
            self.reap(queues);
            let vq = queues
                .get_mut(uapi::VIRTIO_BUFSHARE_VQ_CMD as usize)
                .ok_or(ENODEV)?;
            match vq.add(cmd.clone(), GFP_ATOMIC) {
                Ok(()) => {
                    if !vq.kick() {
                        dev_err!(self.dev.as_ref(), "device is broken\n");
                        return Err(EIO);
                    }
                    break;
                }
                Err((_, e)) if e == ENOSPC => {}
                Err((_, e)) => return Err(e),
            }
            self.sleep(&mut guard, wait)?;
        }

        // Wait for the answer. The command stays owned by the virtqueue if we give up: the
        // device may still write its answer, and the memory stays valid for it.
        loop {
            if let Some(resp) = cmd.response() {
                return Ok((resp?, cmd.epoch.load(Relaxed)));
            }
            let queues = Option::as_mut(&mut *guard).ok_or(ENODEV)?;
            self.reap(queues);
            if let Some(resp) = cmd.response() {
                return Ok((resp?, cmd.epoch.load(Relaxed)));
            }
            if let Err(e) = self.sleep(&mut guard, wait) {
                if e == ETIMEDOUT {
                    dev_warn!(self.dev.as_ref(), "device did not answer in time\n");
                }
                return Err(e);
            }
        }
    }

    /// Checks the status of an answer; returns the answer if it says OK.
    fn check_status<'a>(&self, resp: &'a [u8]) -> Result<&'a [u8]> {
        let status = match le32(resp, offset_of!(uapi::virtio_bufshare_resp_hdr, status)) {
            Some(status) if resp.len() >= RESP_HDR_LEN => status,
            _ => {
                dev_err!(
                    self.dev.as_ref(),
                    "short answer from device ({} bytes)\n",
                    resp.len()
                );
                return Err(EIO);
            }
        };
        match status {
            uapi::VIRTIO_BUFSHARE_S_OK => Ok(resp),
            uapi::VIRTIO_BUFSHARE_S_UNSUPPORTED => Err(EOPNOTSUPP),
            uapi::VIRTIO_BUFSHARE_S_INVALID => Err(EINVAL),
            uapi::VIRTIO_BUFSHARE_S_DEVICE_ERROR => Err(EIO),
            uapi::VIRTIO_BUFSHARE_S_NO_BUFFER => Err(ENOENT),
            uapi::VIRTIO_BUFSHARE_S_NO_SPACE => Err(ENOSPC),
            _ => {
                dev_err!(
                    self.dev.as_ref(),
                    "unknown status {:#x} from device\n",
                    status
                );
                Err(EIO)
            }
        }
    }

    /// Sends a command and checks that the answer says OK and is `resp_len` bytes long; returns
    /// what `parse` makes of it.
    fn exchange<T>(
        &self,
        wire: Wire,
        resp_len: usize,
        wait: Wait,
        parse: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        self.exchange_epoch(wire, resp_len, wait, parse)
            .map(|(value, _)| value)
    }

    /// Like [`Shared::exchange`]; also returns the answer's epoch (see [`Shared::losses`]).
    fn exchange_epoch<T>(
        &self,
        wire: Wire,
        resp_len: usize,
        wait: Wait,
        parse: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<(T, u64)> {
        let cmd = Command::new(wire.0, resp_len)?;
        let (resp, epoch) = self.submit(&cmd, wait)?;
        let resp = self.check_status(resp)?;
        if resp.len() != resp_len {
            dev_err!(
                self.dev.as_ref(),
                "answer is {} bytes, expected {}\n",
                resp.len(),
                resp_len
            );
            return Err(EIO);
        }
        Ok((parse(resp)?, epoch))
    }

    /// Sends a command whose answer is a bare header, and checks the answer.
    fn command(&self, wire: Wire, wait: Wait) -> Result {
        self.exchange(wire, RESP_HDR_LEN, wait, |_| Ok(()))
    }

    /// Like [`Shared::command`]; returns the answer's epoch (see [`Shared::losses`]).
    fn command_epoch(&self, wire: Wire, wait: Wait) -> Result<u64> {
        self.exchange_epoch(wire, RESP_HDR_LEN, wait, |_| Ok(()))
            .map(|((), epoch)| epoch)
    }

    /// Asks the device for its version, limits and counters.
    fn get_info(&self) -> Result<Info> {
        let wire = Wire::new(uapi::VIRTIO_BUFSHARE_CMD_GET_INFO, 0)?;
        self.exchange(
            wire,
            size_of::<uapi::virtio_bufshare_resp_info>(),
            Wait::Interruptible,
            |resp| self.parse_info(resp),
        )
    }

    /// Reads the answer to GET_INFO.
    fn parse_info(&self, resp: &[u8]) -> Result<Info> {
        type R = uapi::virtio_bufshare_resp_info;
        let field32 = |off| le32(resp, off).ok_or(EIO);
        let field64 = |off| le64(resp, off).ok_or(EIO);
        let mut info = Info(uapi::bufshare_info {
            version: field32(offset_of!(R, version))?,
            max_ranges: field32(offset_of!(R, max_ranges))?,
            max_props_size: field32(offset_of!(R, max_props_size))?,
            max_buffers: field32(offset_of!(R, max_buffers))?,
            max_buffer_size: field64(offset_of!(R, max_buffer_size))?,
            num_buffers: field64(offset_of!(R, num_buffers))?,
            num_commands: field64(offset_of!(R, num_commands))?,
            features: self.features,
            name: [0; uapi::BUFSHARE_NAME_LEN as usize],
        });
        if info.0.version != uapi::VIRTIO_BUFSHARE_VERSION {
            dev_err!(
                self.dev.as_ref(),
                "device speaks protocol version {}\n",
                info.0.version
            );
            return Err(EPROTO);
        }

        // The device's name is NUL-padded; keep printable ASCII up to the first NUL, and always
        // leave a terminating NUL.
        let name_off = offset_of!(R, name);
        let name = resp
            .get(name_off..name_off + uapi::VIRTIO_BUFSHARE_NAME_LEN as usize)
            .ok_or(EIO)?;
        for (dst, &src) in info
            .0
            .name
            .iter_mut()
            .zip(name.iter().take_while(|&&c| c != 0))
            .take(uapi::BUFSHARE_NAME_LEN as usize - 1)
        {
            *dst = if src.is_ascii_graphic() || src == b' ' {
                src
            } else {
                b'?'
            } as kernel::ffi::c_char;
        }
        Ok(info)
    }

    /// Starts a buffer operation: fails with `ENODEV` once the device is gone, and returns the
    /// way the device reaches memory (`EOPNOTSUPP` if it cannot be given buffers).
    ///
    /// If the device lost its buffers since they were last registered, registers them again
    /// first (see [`Shared::recover`]).
    fn begin(&self) -> Result<(Op<'_>, DmaTarget)> {
        let mut table = self.table.lock();
        let mut recoveries = 0;
        loop {
            if table.gone {
                return Err(ENODEV);
            }
            if self.features & (1 << uapi::VIRTIO_BUFSHARE_F_BUFFERS) == 0 {
                return Err(EOPNOTSUPP);
            }
            if table.recovering {
                self.recovered.wait(&mut table);
                continue;
            }
            let losses = self.losses.load(Relaxed);
            if losses == table.synced {
                break;
            }
            if recoveries == MAX_RECOVERIES {
                dev_err!(
                    self.dev.as_ref(),
                    "device keeps losing its buffers; giving up registering them again\n"
                );
                table.synced = losses;
                break;
            }
            recoveries += 1;

            // Alone with the device: the operations running finish first, none starts meanwhile.
            table.recovering = true;
            while table.inflight > 0 {
                self.idle.wait(&mut table);
            }
            table.inflight += 1;
            let op = Op { shared: self };
            drop(table);
            self.recover(losses);
            drop(op);
            table = self.table.lock();
            table.recovering = false;
            table.synced = losses;
            self.recovered.notify_all();
        }
        let dma = table.dma.clone().ok_or(EOPNOTSUPP)?;
        table.inflight += 1;
        Ok((Op { shared: self }, dma))
    }

    /// Whether the device lost buffers that have not been registered again yet.
    fn lost_buffers(&self) -> bool {
        self.losses.load(Relaxed) != self.table.lock().synced
    }

    /// Registers the buffers again now if the device lost them, rather than at the next buffer
    /// operation: for the ioctl or release that met the loss, once it is done.
    fn recover_if_lost(&self) {
        if self.lost_buffers() {
            // `begin` registers them again. A device gone, or unable to hold buffers, has none.
            let _ = self.begin();
        }
    }

    /// Runs the buffer operation `op`, and once more if the device did not know the buffer
    /// because it had lost its buffers: the second run starts by registering them again.
    fn retry_lost<T>(&self, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        match op() {
            Err(e) if e == ENOENT && self.lost_buffers() => op(),
            result => result,
        }
    }

    /// Registers again every buffer the device had before it lost them, that is before `losses`
    /// (see [`Shared::losses`]); called by [`Shared::begin`] while no other operation runs.
    ///
    /// A buffer the device refuses now stays registered with the driver, and so pinned, until
    /// its owner unregisters it; the device answers `S_NO_BUFFER` to the commands about it
    /// meanwhile.
    fn recover(&self, losses: u64) {
        let mut lost = KVVec::new();
        {
            let table = self.table.lock();
            for buf in table.buffers.values() {
                if buf.epoch.load(Relaxed) >= losses {
                    // Registered since, with the device that lost the others.
                    continue;
                }
                if lost.push(buf.clone(), GFP_KERNEL).is_err() {
                    // Those left out fail with ENOENT, as refused ones do.
                    break;
                }
            }
        }
        let (mut registered, mut refused) = (0usize, 0usize);
        for buf in lost {
            let state = buf.state.lock();
            match self.send_registration(&buf, &state.props, Wait::Uninterruptible) {
                Ok(epoch) => {
                    buf.epoch.store(epoch, Relaxed);
                    registered += 1;
                }
                Err(e) => {
                    refused += 1;
                    dev_warn!(
                        self.dev.as_ref(),
                        "buffer {}: not registered again ({:?})\n",
                        buf.id,
                        e
                    );
                    if e == ETIMEDOUT || e == ENODEV {
                        break;
                    }
                    // It may hold a part of the buffer.
                    let _ = self.unregister_command(buf.id);
                }
            }
        }
        dev_info!(
            self.dev.as_ref(),
            "device lost its buffers (generation {:#x}): {} registered again, {} not\n",
            self.generation.load(Relaxed) & u64::from(u32::MAX),
            registered,
            refused
        );
    }

    /// Returns the buffer `id` if the open file `owner` has it.
    fn lookup(&self, owner: u64, id: u64) -> Result<Arc<Buffer>> {
        let table = self.table.lock();
        if table.gone {
            return Err(ENODEV);
        }
        match table.buffers.get(&id) {
            Some(buf) if buf.owner == owner => Ok(buf.clone()),
            _ => Err(ENOENT),
        }
    }

    /// Tells the device that buffer `id` is gone, and lets its memory go once the device
    /// confirmed (or was reset). Returns false if the device did not answer in time.
    fn unregister_on_device(&self, buf: Arc<Buffer>) -> bool {
        match self.unregister_command(buf.id) {
            // The device let go of it, does not know it, or was reset: the memory is ours again.
            Ok(()) => true,
            Err(e) if e == ENOENT || e == ENODEV => true,
            Err(e) => {
                // The device may still use the memory: keep it until the device is reset.
                dev_warn!(
                    self.dev.as_ref(),
                    "buffer {}: device did not confirm unregistering ({:?}); memory kept until reset\n",
                    buf.id,
                    e
                );
                self.keep_until_reset(buf);
                e != ETIMEDOUT
            }
        }
    }

    /// Sends UNREGISTER for buffer `id`, waiting uninterruptibly for the answer.
    fn unregister_command(&self, id: u64) -> Result {
        let mut wire = Wire::new(uapi::VIRTIO_BUFSHARE_CMD_UNREGISTER, 8)?;
        wire.u64(id)?;
        self.command(wire, Wait::Uninterruptible)
    }

    /// Keeps the memory of `buf`, which the device may still use, until the device is reset.
    fn keep_until_reset(&self, buf: Arc<Buffer>) {
        let mut table = self.table.lock();
        if table.gone {
            // Reset already: the device let go of everything.
            return;
        }
        if table.zombies.reserve(1, GFP_KERNEL).is_err() {
            dev_err!(
                self.dev.as_ref(),
                "no memory: leaking a buffer the device may still use\n"
            );
            // Pinned for good is safe; freed while the device may write to it is not.
            core::mem::forget(buf);
            return;
        }
        // Cannot fail: room was reserved above.
        let _ = table.zombies.push(buf, GFP_NOWAIT);
    }

    /// Registers a buffer for the open file `owner`.
    fn register(&self, owner: &BufshareFile, req: &uapi::bufshare_register) -> Result<u64> {
        if req.flags != 0 || req.reserved != 0 {
            return Err(EINVAL);
        }
        let application = application(&req.application)?;
        if req.length == 0 || req.offset % PAGE_SIZE != 0 || req.length % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        req.offset.checked_add(req.length).ok_or(EINVAL)?;
        if req.length > self.limits.max_buffer_size {
            return Err(E2BIG);
        }
        let props = read_props(req.props, req.props_size, self.limits.props_size())?;

        // The file's limits: held until the buffer is in the table.
        let mut usage = owner.usage.lock();
        if usage.buffers >= module_parameters::max_buffers_per_file.value() {
            return Err(ENOSPC);
        }
        match usage.bytes.checked_add(req.length) {
            Some(b) if b <= module_parameters::max_bytes_per_file.value() => {}
            _ => return Err(ENOSPC),
        }

        // Room in the table, taken now: once the device has the buffer, inserting it must not
        // fail.
        let node = RBTreeNodeReservation::new(GFP_KERNEL)?;
        let (op, dma) = self.begin()?;
        {
            let mut table = self.table.lock();
            if table.buffers.iter().count() + table.zombies.len() + table.reserved
                >= self.limits.buffers()
            {
                return Err(ENOSPC);
            }
            table.reserved += 1;
        }
        let result = self.register_reserved(owner, req, application, props, &dma);
        let mut table = self.table.lock();
        table.reserved -= 1;
        let buf = result?;
        let id = buf.id;
        let size = buf.size;
        if table.gone {
            // The device went away meanwhile; the buffer goes with it.
            drop(table);
            drop(buf);
            drop(op);
            return Err(ENODEV);
        }
        table.buffers.insert(node.into_node(id, buf));
        drop(table);
        drop(op);
        usage.buffers += 1;
        usage.bytes += size;
        Ok(id)
    }

    /// The part of [`Shared::register`] that runs with a slot reserved in the table.
    fn register_reserved(
        &self,
        owner: &BufshareFile,
        req: &uapi::bufshare_register,
        application: [u8; APP_LEN],
        props: KVec<u8>,
        dma: &DmaTarget,
    ) -> Result<Arc<Buffer>> {
        let (memory, kind, ranges) = Memory::take(
            req.fd,
            req.offset,
            req.length,
            dma,
            self.limits.max_ranges as usize,
        )?;
        // The commands count ranges in a `u32`.
        u32::try_from(ranges.list.len()).map_err(|_| E2BIG)?;
        let id = self.next_id.fetch_add(1, Relaxed);

        let buf = Arc::pin_init(
            pin_init!(Buffer {
                id,
                owner: owner.id,
                kind,
                size: req.length,
                application,
                seqno: Atomic::new(0),
                ranges: ranges.list,
                epoch: Atomic::new(0),
                state <- new_mutex!(BufferState { props }, "virtio_bufshare:buffer"),
                _memory: memory,
            }),
            GFP_KERNEL,
        )?;

        let result = {
            let state = buf.state.lock();
            self.send_registration(&buf, &state.props, Wait::Interruptible)
        };
        match result {
            Ok(epoch) => {
                buf.epoch.store(epoch, Relaxed);
                Ok(buf)
            }
            Err(e) => {
                // The device may hold a part of the buffer: take it back before the memory goes.
                if e != ENODEV {
                    self.unregister_on_device(buf);
                }
                Err(e)
            }
        }
    }

    /// Gives `buf`, with properties `props`, to the device: REGISTER with as many ranges as fit,
    /// then ADD_RANGES for the rest. Returns the epoch of the last answer (see
    /// [`Shared::losses`]).
    fn send_registration(&self, buf: &Buffer, props: &[u8], wait: Wait) -> Result<u64> {
        let list = &buf.ranges;
        let first = list.len().min(RANGES_PER_CMD);
        let mut wire = Wire::new(
            uapi::VIRTIO_BUFSHARE_CMD_REGISTER,
            size_of::<uapi::virtio_bufshare_cmd_register>() + props.len() + 8 + first * RANGE_SIZE,
        )?;
        wire.u64(buf.id)?;
        wire.u64(buf.size)?;
        wire.u32(buf.nr_ranges())?;
        wire.u32(first as u32)?;
        wire.u32(props.len() as u32)?;
        wire.u32(0)?;
        wire.bytes(&buf.application)?;
        wire.bytes(props)?;
        wire.pad8()?;
        wire.ranges(&list[..first])?;
        let mut epoch = self.command_epoch(wire, wait)?;

        let mut sent = first;
        while sent < list.len() {
            let n = (list.len() - sent).min(RANGES_PER_CMD);
            let mut wire = Wire::new(uapi::VIRTIO_BUFSHARE_CMD_ADD_RANGES, 16 + n * RANGE_SIZE)?;
            wire.u64(buf.id)?;
            wire.u32(sent as u32)?;
            wire.u32(n as u32)?;
            wire.ranges(&list[sent..sent + n])?;
            epoch = self.command_epoch(wire, wait)?;
            sent += n;
        }
        Ok(epoch)
    }

    /// Unregisters buffer `id` of the open file `owner`.
    fn unregister(&self, owner: &BufshareFile, id: u64) -> Result {
        let (op, _) = self.begin()?;
        let buf = {
            let mut table = self.table.lock();
            match table.buffers.get(&id) {
                Some(buf) if buf.owner == owner.id => {}
                _ => return Err(ENOENT),
            }
            table.buffers.remove(&id).ok_or(ENOENT)?
        };
        let size = buf.size;
        self.unregister_on_device(buf);
        drop(op);
        let mut usage = owner.usage.lock();
        usage.buffers = usage.buffers.saturating_sub(1);
        usage.bytes = usage.bytes.saturating_sub(size);
        Ok(())
    }

    /// Tells the device that a buffer of `owner` changed.
    fn update(&self, owner: &BufshareFile, req: &mut uapi::bufshare_update) -> Result {
        let known = uapi::BUFSHARE_UPDATE_RANGE | uapi::BUFSHARE_UPDATE_RECT;
        if req.flags & !known != 0 || req.reserved != 0 {
            return Err(EINVAL);
        }
        let (op, _) = self.begin()?;
        let buf = self.lookup(owner.id, req.id)?;
        let state = buf.state.lock();

        if req.flags & uapi::BUFSHARE_UPDATE_RANGE != 0 {
            let end = req.offset.checked_add(req.length).ok_or(EINVAL)?;
            if req.length == 0 || end > buf.size {
                return Err(EINVAL);
            }
        }
        if req.flags & uapi::BUFSHARE_UPDATE_RECT != 0 {
            let right = req.x.checked_add(req.width).ok_or(EINVAL)?;
            let bottom = req.y.checked_add(req.height).ok_or(EINVAL)?;
            if req.width == 0 || req.height == 0 {
                return Err(EINVAL);
            }
            if let (Some(w), Some(h)) = (
                props::get_u32(&state.props, b"width"),
                props::get_u32(&state.props, b"height"),
            ) {
                if right > w || bottom > h {
                    return Err(EINVAL);
                }
            }
        }
        let last = buf.seqno.load(Relaxed);
        let seqno = match req.seqno {
            0 => last.checked_add(1).ok_or(EINVAL)?,
            n if n > last => n,
            _ => return Err(EINVAL),
        };

        let mut wire = Wire::new(
            uapi::VIRTIO_BUFSHARE_CMD_UPDATE,
            size_of::<uapi::virtio_bufshare_cmd_update>(),
        )?;
        wire.u64(buf.id)?;
        wire.u64(seqno)?;
        wire.u32(req.flags)?;
        wire.u32(0)?;
        wire.u64(req.offset)?;
        wire.u64(req.length)?;
        wire.u32(req.x)?;
        wire.u32(req.y)?;
        wire.u32(req.width)?;
        wire.u32(req.height)?;
        self.command(wire, Wait::Interruptible)?;
        buf.seqno.store(seqno, Relaxed);
        req.seqno = seqno;
        drop(state);
        drop(buf);
        drop(op);
        Ok(())
    }

    /// Replaces or merges the properties of a buffer of `owner`.
    fn set_properties(&self, owner: &BufshareFile, req: &uapi::bufshare_set_properties) -> Result {
        if req.flags & !uapi::BUFSHARE_PROPS_MERGE != 0 {
            return Err(EINVAL);
        }
        let max = self.limits.props_size();
        let new = read_props(req.props, req.props_size, max)?;
        let (op, _) = self.begin()?;
        let buf = self.lookup(owner.id, req.id)?;
        let mut state = buf.state.lock();
        let props = if req.flags & uapi::BUFSHARE_PROPS_MERGE != 0 {
            props::merge(&state.props, &new)?
        } else {
            new
        };
        if props.len() > max {
            return Err(E2BIG);
        }

        let mut wire = Wire::new(
            uapi::VIRTIO_BUFSHARE_CMD_SET_PROPERTIES,
            size_of::<uapi::virtio_bufshare_cmd_set_properties>() + props.len(),
        )?;
        wire.u64(buf.id)?;
        wire.u32(props.len() as u32)?;
        wire.u32(0)?;
        wire.bytes(&props)?;
        self.command(wire, Wait::Interruptible)?;
        state.props = props;
        drop(state);
        drop(buf);
        drop(op);
        Ok(())
    }

    /// Fills in the state of a buffer of `owner`.
    fn buffer_info(&self, owner: &BufshareFile, info: &mut uapi::bufshare_buffer_info) -> Result {
        if info.reserved != 0 {
            return Err(EINVAL);
        }
        let buf = self.lookup(owner.id, info.id)?;
        let state = buf.state.lock();
        info.kind = buf.kind;
        info.size = buf.size;
        info.seqno = buf.seqno.load(Relaxed);
        info.nr_ranges = buf.nr_ranges();
        for (dst, &src) in info.application.iter_mut().zip(buf.application.iter()) {
            *dst = src as kernel::ffi::c_char;
        }
        let props_len = state.props.len();
        if info.props != 0 && info.props_size as usize >= props_len {
            let ptr = usize::try_from(info.props).map_err(|_| EFAULT)?;
            UserSlice::new(UserPtr::from_addr(ptr), props_len)
                .writer()
                .write_slice(&state.props)?;
        }
        info.props_size = props_len as u32;
        Ok(())
    }

    /// Unregisters every buffer of the open file `owner`, which is being released.
    fn release(&self, owner: u64) {
        let Ok((op, _)) = self.begin() else {
            // Gone (or never able to hold buffers): nothing is registered.
            return;
        };
        let mut responsive = true;
        loop {
            let buf = {
                let mut table = self.table.lock();
                let Some(id) = table
                    .buffers
                    .iter()
                    .find(|(_, buf)| buf.owner == owner)
                    .map(|(&id, _)| id)
                else {
                    break;
                };
                table.buffers.remove(&id)
            };
            let Some(buf) = buf else { break };
            if responsive {
                responsive = self.unregister_on_device(buf);
            } else {
                // The device stopped answering: do not wait on it again for every buffer.
                self.keep_until_reset(buf);
            }
        }
        drop(op);
        // The device may have answered that it lost the buffers of every file.
        self.recover_if_lost();
    }

    /// Drops the virtqueues: the device is reset, queued commands are taken back, and everybody
    /// waiting is woken to find the device gone. Then waits for the buffer operations to end and
    /// drops every buffer, so that their memory is unmapped before the driver unbinds.
    fn shut_down(&self) {
        let queues = self.queues.lock().take();
        // Dropped outside the lock: deleting the queues sleeps.
        drop(queues);
        self.used.notify_all();

        let mut table = self.table.lock();
        table.gone = true;
        while table.inflight > 0 {
            self.idle.wait(&mut table);
        }
        let buffers = core::mem::replace(&mut table.buffers, RBTree::new());
        let zombies = core::mem::take(&mut table.zombies);
        let dma = table.dma.take();
        drop(table);
        drop(buffers);
        drop(zombies);
        drop(dma);
    }
}

impl virtio::VirtqueueHandler for Shared {
    fn used(&self, _index: usize) {
        if let Some(queues) = Option::as_mut(&mut *self.queues.lock()) {
            self.reap(queues);
        }
    }
}

/// Reads the little-endian `u32` at `off` in `buf`.
fn le32(buf: &[u8], off: usize) -> Option<u32> {
    let bytes = buf.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Reads the little-endian `u64` at `off` in `buf`.
fn le64(buf: &[u8], off: usize) -> Option<u64> {
    let bytes = buf.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// `struct bufshare_info`, as handed to user space.
#[repr(transparent)]
struct Info(uapi::bufshare_info);

// SAFETY: `struct bufshare_info` is made of integers only, laid out without padding (four `__u32`,
// four `__u64`, then a `char` array whose length is a multiple of 8), so every byte of it is
// initialised.
unsafe impl AsBytes for Info {}

/// Declares a transparent wrapper of an ioctl argument structure that user space reads and
/// writes whole.
macro_rules! user_struct {
    ($name:ident, $raw:ty) => {
        #[repr(transparent)]
        struct $name($raw);

        // SAFETY: The UAPI structure is made of integers (and arrays of them) only, laid out
        // without padding (the UAPI header keeps every field naturally aligned and the size a
        // multiple of 8; `tools/bufshare-uapi` checks the layout), so every byte is initialised
        // and every bit pattern is valid.
        unsafe impl AsBytes for $name {}

        // SAFETY: As above: any bytes make a valid value.
        unsafe impl FromBytes for $name {}
    };
}

user_struct!(RegisterArg, uapi::bufshare_register);
user_struct!(UpdateArg, uapi::bufshare_update);
user_struct!(SetPropertiesArg, uapi::bufshare_set_properties);
user_struct!(BufferInfoArg, uapi::bufshare_buffer_info);

/// Reads an ioctl argument of type `T` at `arg`.
fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .reader()
        .read::<T>()
}

/// Writes an ioctl argument of type `T` back to `arg`.
fn write_arg<T: AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .writer()
        .write(value)
}

/// Owns the link between the driver and the shared state: dropping it shuts the device down,
/// which also breaks the reference the virtqueues hold on the shared state.
struct SharedOwner(Arc<Shared>);

impl SharedOwner {
    fn new(vdev: &virtio::Device<Core<'_>>) -> Result<Self> {
        let limits = Limits::read(vdev)?;
        let shared = Arc::pin_init(
            pin_init!(Shared {
                queues <- new_spinlock_irq!(None, "virtio_bufshare:queues"),
                used <- new_condvar!("virtio_bufshare:used"),
                table <- new_mutex!(
                    Table {
                        gone: false,
                        inflight: 0,
                        reserved: 0,
                        buffers: RBTree::new(),
                        zombies: KVec::new(),
                        dma: None,
                        synced: 0,
                        recovering: false,
                    },
                    "virtio_bufshare:table"
                ),
                idle <- new_condvar!("virtio_bufshare:idle"),
                recovered <- new_condvar!("virtio_bufshare:recovered"),
                generation: Atomic::new(0),
                losses: Atomic::new(0),
                dev: vdev.into(),
                limits,
                features: vdev.features(),
                next_id: Atomic::new(1),
                next_file: Atomic::new(1),
            }),
            GFP_KERNEL,
        )?;
        let owner = SharedOwner(shared);
        let mut queues = Queues::new(vdev, &[c_str!("cmd")], owner.0.clone())?;
        let dma = match queues.get_mut(uapi::VIRTIO_BUFSHARE_VQ_CMD as usize) {
            Some(vq) => vq.dma_target(vdev),
            None => Err(ENODEV),
        };
        match dma {
            Ok(dma) => owner.0.table.lock().dma = Some(dma),
            Err(e) => dev_warn!(
                vdev.as_ref(),
                "cannot describe memory to this device ({:?}): no buffers\n",
                e
            ),
        }
        *owner.0.queues.lock() = Some(queues);
        Ok(owner)
    }
}

impl Drop for SharedOwner {
    fn drop(&mut self) {
        self.0.shut_down();
    }
}

/// The driver's data for a bound device.
#[pin_data]
struct BufshareDriver {
    shared: SharedOwner,
    #[pin]
    misc: MiscDeviceRegistration<BufshareFile>,
}

impl virtio::Driver for BufshareDriver {
    type Data<'bound> = Self;

    const ID_TABLE: virtio::IdTable = &VIRTIO_BUFSHARE_IDS;
    const FEATURES: &'static [u32] = &[
        uapi::VIRTIO_BUFSHARE_F_BUFFERS,
        uapi::VIRTIO_BUFSHARE_F_GENERATION,
    ];

    fn probe<'bound>(
        vdev: &'bound virtio::Device<Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        let shared = SharedOwner::new(vdev).inspect(|shared| {
            let l = &shared.0.limits;
            dev_info!(
                vdev.as_ref(),
                "bufshare device: {} ranges, {} property bytes, {} buffers, {} bytes per buffer{}\n",
                l.max_ranges,
                l.max_props_size,
                l.max_buffers,
                l.max_buffer_size,
                if vdev.has_feature(uapi::VIRTIO_BUFSHARE_F_BUFFERS) {
                    ""
                } else {
                    " (no buffer commands)"
                }
            );
            // The queue must work before applications can open the device.
            vdev.ready();
        });

        try_pin_init!(Self {
            shared: shared?,
            misc <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c_str!("bufshare"),
            }),
        })
    }
}

/// What an open file has registered, against its limits.
struct Usage {
    buffers: u32,
    bytes: u64,
}

/// An open `/dev/bufshare`.
#[pin_data]
struct BufshareFile {
    shared: Arc<Shared>,
    /// Identifies the file as the owner of its buffers.
    id: u64,
    #[pin]
    usage: Mutex<Usage>,
}

impl BufshareFile {
    /// Carries out ioctl `cmd` with argument `arg`.
    fn ioctl_cmd(&self, cmd: u32, arg: usize) -> Result<isize> {
        let shared = &self.shared;
        match cmd {
            BUFSHARE_IOC_GET_INFO => {
                let info = shared.get_info()?;
                write_arg(arg, &info)?;
            }
            BUFSHARE_IOC_REGISTER => {
                let mut req = read_arg::<RegisterArg>(arg)?;
                let id = shared.retry_lost(|| shared.register(self, &req.0))?;
                req.0.id = id;
                if let Err(e) = write_arg(arg, &req) {
                    // The caller cannot learn the id: do not leave the buffer behind.
                    let _ = shared.unregister(self, id);
                    return Err(e);
                }
            }
            BUFSHARE_IOC_UPDATE => {
                let mut req = read_arg::<UpdateArg>(arg)?;
                shared.retry_lost(|| shared.update(self, &mut req.0))?;
                write_arg(arg, &req)?;
            }
            BUFSHARE_IOC_SET_PROPERTIES => {
                let req = read_arg::<SetPropertiesArg>(arg)?;
                shared.retry_lost(|| shared.set_properties(self, &req.0))?;
            }
            BUFSHARE_IOC_UNREGISTER => {
                let id = read_arg::<u64>(arg)?;
                shared.unregister(self, id)?;
            }
            BUFSHARE_IOC_BUFFER_INFO => {
                let mut info = read_arg::<BufferInfoArg>(arg)?;
                shared.buffer_info(self, &mut info.0)?;
                write_arg(arg, &info)?;
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }
}

#[vtable]
impl MiscDevice for BufshareFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        let misc: *const MiscDeviceRegistration<Self> = misc;
        // SAFETY: Every `MiscDeviceRegistration<BufshareFile>` is the `misc` field of a
        // `BufshareDriver` (it is registered nowhere else), and `misc_open()` keeps the
        // registration, so the driver data around it, alive for the duration of `open`.
        let driver = unsafe { &*kernel::container_of!(misc, BufshareDriver, misc) };
        let shared = driver.shared.0.clone();
        let id = shared.next_file.fetch_add(1, Relaxed);
        KBox::try_pin_init(
            try_pin_init!(BufshareFile {
                shared,
                id,
                usage <- new_mutex!(Usage { buffers: 0, bytes: 0 }, "virtio_bufshare:usage"),
            }),
            GFP_KERNEL,
        )
    }

    fn release(me: Pin<KBox<Self>>, _file: &File) {
        me.shared.release(me.id);
    }

    fn ioctl(me: Pin<&BufshareFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let me = me.get_ref();
        let result = me.ioctl_cmd(cmd, arg);
        // The device may have answered that it lost its buffers: bring them back now.
        me.shared.recover_if_lost();
        result
    }

    fn show_fdinfo(me: Pin<&BufshareFile>, m: &SeqFile, _file: &File) {
        let table = me.shared.table.lock();
        let mine = || table.buffers.values().filter(|b| b.owner == me.id);
        seq_print!(m, "buffers:\t{}\n", mine().count());
        for buf in mine() {
            let kind = if buf.kind == uapi::BUFSHARE_KIND_MEMFD {
                "memfd"
            } else {
                "dmabuf"
            };
            seq_print!(
                m,
                "buffer:\tid={} kind={} size={} ranges={} seqno={} application={}\n",
                buf.id,
                kind,
                buf.size,
                buf.nr_ranges(),
                buf.seqno.load(Relaxed),
                buf.app_str()
            );
        }
    }
}

kernel::module_virtio_driver! {
    type: BufshareDriver,
    name: "virtio_bufshare",
    authors: ["virtio-bufshare developers"],
    description: "Virtio buffer sharing driver",
    license: "GPL",
    imports_ns: ["DMA_BUF"],
    params: {
        max_buffers_per_file: u32 {
            default: 1024,
            description: "Most buffers one open file may register",
        },
        max_bytes_per_file: u64 {
            default: 1 << 30,
            description: "Most bytes of buffers one open file may register",
        },
        max_buffers: u32 {
            default: 4096,
            description: "Most buffers on one device (the device's own limit applies too)",
        },
        max_props_size: u32 {
            default: 4096,
            description: "Most bytes of properties per buffer (the device's own limit applies too)",
        },
    },
}
