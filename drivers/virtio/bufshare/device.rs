// SPDX-License-Identifier: GPL-2.0

//! The device as the driver keeps it: its command queue, its buffers and the operations on them.

use core::mem::offset_of;
use kernel::{
    device::Core,
    new_condvar, new_mutex,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNode,
        RBTreeNodeReservation, //
    },
    seq_file::SeqFile,
    seq_print,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
        CondVar,
        Mutex, //
    },
    time::msecs_to_jiffies,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
    uapi,
    virtio::{
        self,
        DmaTarget,
        ShmRegion, //
    },
    workqueue::{
        new_work,
        Work, //
    },
};

use crate::{
    apps::Bindings,
    buffer::{
        Buffer,
        BufferState,
        Memory, //
    },
    cmdq::{
        Cmdq,
        Wait, //
    },
    commands::{
        AddRanges,
        GetInfo,
        Register,
        SetProperties,
        Unregister,
        Update,
        DEVICE_UPDATE_FLAGS,
        RANGES_PER_CMD, //
    },
    module_parameters,
    props::{
        self,
        APP_LEN, //
    },
};

mod events;
mod import;
mod recovery;

pub(crate) use events::{
    FileEvents,
    Record,
    EVENTS_PER_FILE, //
};
pub(crate) use import::usable_region;
use import::ImportState;
use recovery::Inflight;

const PAGE_SIZE: u64 = kernel::page::PAGE_SIZE as u64;

/// How long an UPDATE of a dma-buf waits for the writes its fences announce.
const FENCE_TIMEOUT_MS: u32 = 2_000;

/// The device's limits, read from its configuration space at probe.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_ranges: u32,
    pub(crate) max_props_size: u32,
    pub(crate) max_buffers: u32,
    pub(crate) max_buffer_size: u64,
}

impl Limits {
    /// Reads the limits of `vdev`; fails if they leave no room for any buffer.
    fn read(vdev: &virtio::Device<Core<'_>>) -> Result<Self> {
        type C = uapi::virtio_bufshare_config;
        let u32_at = |off: usize| vdev.config_read::<u32>(off as u32);
        let limits = Limits {
            max_ranges: u32_at(offset_of!(C, max_ranges)),
            max_props_size: u32_at(offset_of!(C, max_props_size)),
            max_buffers: u32_at(offset_of!(C, max_buffers)),
            max_buffer_size: vdev.config_read::<u64>(offset_of!(C, max_buffer_size) as u32),
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

/// The features the driver and the device agreed on.
#[derive(Clone, Copy)]
pub(crate) struct Features {
    /// All of them, as GET_INFO reports them.
    pub(crate) bits: u64,
    /// `VIRTIO_BUFSHARE_F_BUFFERS`: the device keeps buffers.
    pub(crate) buffers: bool,
    /// `VIRTIO_BUFSHARE_F_GENERATION`: answers carry the device's generation.
    pub(crate) generation: bool,
    /// `VIRTIO_BUFSHARE_F_EVENTS`: the device has an event queue, and says when the host let go
    /// of an unregistered buffer.
    pub(crate) events: bool,
    /// `VIRTIO_BUFSHARE_F_IMPORT`: the device maps the buffers of other guests into its import
    /// region.
    pub(crate) import: bool,
}

impl Features {
    fn read(vdev: &virtio::Device<Core<'_>>) -> Self {
        Features {
            bits: vdev.features(),
            buffers: vdev.has_feature(uapi::VIRTIO_BUFSHARE_F_BUFFERS),
            generation: vdev.has_feature(uapi::VIRTIO_BUFSHARE_F_GENERATION),
            events: vdev.has_feature(uapi::VIRTIO_BUFSHARE_F_EVENTS),
            import: vdev.has_feature(uapi::VIRTIO_BUFSHARE_F_IMPORT),
        }
    }
}

/// What an owner has registered, against its limits.
struct Usage {
    buffers: u32,
    bytes: u64,
}

/// An owner of buffers: an open file. Closing it unregisters what it still has.
///
/// The device keeps the open files it has, to give them their events.
#[pin_data]
pub(crate) struct Owner {
    id: u64,
    /// Held while a registration runs, from the check of the limits until the buffer counts.
    /// Buffers being drained count until the host let go of them.
    #[pin]
    usage: Mutex<Usage>,
    /// Its events.
    #[pin]
    pub(crate) events: FileEvents,
}

impl Owner {
    /// A buffer of `size` bytes no longer counts against the owner's limits.
    fn uncharge(&self, size: u64) {
        let mut usage = self.usage.lock();
        usage.buffers = usage.buffers.saturating_sub(1);
        usage.bytes = usage.bytes.saturating_sub(size);
    }
}

/// A buffer unregistered while the device has `VIRTIO_BUFSHARE_F_EVENTS`: its memory is kept,
/// pinned and mapped, until the device says that the host let go of it (FREED), or is reset.
pub(crate) struct Drain {
    buf: Arc<Buffer>,
    /// The device answered the UNREGISTER: a FREED event lets the memory go.
    answered: bool,
    /// FREED came before the caller of UNREGISTER saw the answer: it lets the memory go.
    freed: bool,
    /// The buffer counts against its owner's limits until then, and the owner, which knows its
    /// id, is told (FREED). False for a registration that failed, and for the buffers of an
    /// owner being released.
    charged: bool,
}

/// What became of a buffer the device was told to unregister.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unregistered {
    /// The device let go of it: its memory is ours again.
    Freed,
    /// The device answered, and says with FREED when the host let go of it.
    Draining,
    /// The host let go of it already: its owner was told (FREED) and uncharged.
    Drained,
    /// The device may still use it: kept until the device is reset. False if the device stopped
    /// answering, or is going away.
    Kept(bool),
}

/// A registration as the application asked for it, checked.
struct NewBuffer<'a> {
    owner: &'a Owner,
    req: &'a uapi::bufshare_register,
    application: [u8; APP_LEN],
    props: &'a [u8],
}

/// The buffers of a device, and what its shutdown and recovery wait for.
struct Buffers {
    /// Set when the device goes away: no new operations start.
    gone: bool,
    /// Buffer operations running, which may hold buffers outside the tree.
    inflight: usize,
    /// Registrations running, counted against the device's buffer limit.
    reserved: usize,
    tree: BufferTree<Arc<Buffer>>,
    /// Buffers the device did not confirm giving up (it timed out): their memory stays with the
    /// device until it is reset.
    zombies: KVec<Arc<Buffer>>,
    /// Buffers unregistered whose memory the host may still hold, until FREED.
    draining: BufferTree<Drain>,
    /// Buffers taken out of `draining` whose memory is being let go.
    freeing: usize,
    /// How the device reaches memory; `None` if it cannot be given buffers.
    dma: Option<DmaTarget>,
    /// The epoch whose buffers the device holds: they were last registered again for it.
    restored: u64,
    /// Set while the buffers are being registered again: no operation starts meanwhile.
    restoring: bool,
    /// Set while the device is suspended or being reset: no operation starts meanwhile.
    suspended: bool,
}

impl Buffers {
    /// Takes buffer `id` out of the draining buffers, to let its memory go with
    /// [`BufshareDevice::drained`], which waiters wait for.
    fn take_draining(&mut self, id: u64) -> Option<Drain> {
        let drain = self.draining.remove(&id)?;
        self.freeing += 1;
        Some(drain)
    }
}

/// A tree of buffers by id that knows how many it holds, so that the device's buffer limit is
/// checked in constant time at each registration.
///
/// # Invariants
///
/// `len` is the number of nodes in `tree`.
struct BufferTree<V> {
    tree: RBTree<u64, V>,
    len: usize,
}

impl<V> BufferTree<V> {
    fn new() -> Self {
        // INVARIANT: the tree is empty.
        Self {
            tree: RBTree::new(),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, id: &u64) -> Option<&V> {
        self.tree.get(id)
    }

    fn get_mut(&mut self, id: &u64) -> Option<&mut V> {
        self.tree.get_mut(id)
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.tree.values()
    }

    /// Inserts `node`; a value of the same id is dropped.
    fn insert(&mut self, node: RBTreeNode<u64, V>) {
        if self.tree.insert(node).is_none() {
            // INVARIANT: the tree has one more node.
            self.len += 1;
        }
    }

    fn remove(&mut self, id: &u64) -> Option<V> {
        let value = self.tree.remove(id)?;
        // INVARIANT: the tree has one node less.
        self.len -= 1;
        Some(value)
    }

    /// Takes every value out, leaving the tree empty.
    fn take(&mut self) -> RBTree<u64, V> {
        // INVARIANT: the tree left behind is empty.
        self.len = 0;
        core::mem::replace(&mut self.tree, RBTree::new())
    }

    /// Takes out every value `pred` selects, in the order of their ids, and hands each to
    /// `out`: one pass over the tree.
    fn remove_all(&mut self, mut pred: impl FnMut(&V) -> bool, mut out: impl FnMut(V)) {
        let mut cursor = self.tree.cursor_front_mut();
        while let Some(c) = cursor {
            if !pred(c.current().1) {
                cursor = c.move_next();
                continue;
            }
            let (next, node) = c.remove_current();
            // INVARIANT: the node left the tree.
            self.len -= 1;
            out(node.to_key_value().1);
            cursor = next;
        }
    }
}

/// The driver's side of one device: its command queue and its buffers.
///
/// Open files keep it, so it outlives the binding; [`BufshareDevice::shut_down`] ends its use of
/// the device when the driver unbinds. See the crate's documentation for its locks.
#[pin_data]
pub(crate) struct BufshareDevice {
    cmdq: Arc<Cmdq>,
    #[pin]
    buffers: Mutex<Buffers>,
    /// Signalled when the last buffer operation ends.
    #[pin]
    idle: CondVar,
    /// Signalled when the buffers were registered again, when the device came back from a
    /// reset, and when it went away.
    #[pin]
    restored: CondVar,
    dev: ARef<virtio::Device>,
    limits: Limits,
    features: Features,
    /// The id of the next buffer: ids are never reused while the device is bound.
    next_id: Atomic<u64>,
    /// The id of the next owner.
    next_owner: Atomic<u64>,
    /// Who may register under which application name.
    #[pin]
    apps: Mutex<Bindings>,
    /// The open files, which get the events.
    #[pin]
    owners: Mutex<KVec<Arc<Owner>>>,
    /// Signalled when the memory of a buffer being drained is let go.
    #[pin]
    drained: CondVar,
    /// Handles the events of the device ([`BufshareDevice::queue_events`]).
    #[pin]
    events_work: Work<BufshareDevice>,
    /// The import region, with `VIRTIO_BUFSHARE_F_IMPORT`.
    import_region: Option<ShmRegion>,
    /// The attachments and imports.
    #[pin]
    imports: Mutex<ImportState>,
}

impl BufshareDevice {
    /// Sets up the device `vdev`: reads its limits and features, and its command queue.
    pub(crate) fn new(vdev: &virtio::Device<Core<'_>>) -> Result<Arc<Self>> {
        let limits = Limits::read(vdev)?;
        let features = Features::read(vdev);
        // `validate` left the feature on only with a usable region.
        let import_region = if features.import {
            import::usable_region(vdev.shm_region(uapi::VIRTIO_BUFSHARE_SHM_IMPORT as u8))
        } else {
            None
        };
        let cmdq = Cmdq::new(vdev, features.generation, features.events)?;
        let dma = match cmdq.dma_target(vdev) {
            Ok(dma) => Some(dma),
            Err(e) => {
                dev_warn!(
                    vdev.as_ref(),
                    "cannot describe memory to this device ({:?}): no buffers\n",
                    e
                );
                None
            }
        };
        let shut_down_on_error = cmdq.clone();
        let device = Arc::pin_init(
            pin_init!(BufshareDevice {
                cmdq,
                buffers <- new_mutex!(
                    Buffers {
                        gone: false,
                        inflight: 0,
                        reserved: 0,
                        tree: BufferTree::new(),
                        zombies: KVec::new(),
                        draining: BufferTree::new(),
                        freeing: 0,
                        dma,
                        restored: 0,
                        restoring: false,
                        suspended: false,
                    },
                    "virtio_bufshare:buffers"
                ),
                idle <- new_condvar!("virtio_bufshare:idle"),
                restored <- new_condvar!("virtio_bufshare:restored"),
                dev: vdev.into(),
                limits,
                features,
                next_id: Atomic::new(1),
                next_owner: Atomic::new(1),
                apps <- new_mutex!(Bindings::new(), "virtio_bufshare:apps"),
                owners <- new_mutex!(KVec::new(), "virtio_bufshare:owners"),
                drained <- new_condvar!("virtio_bufshare:drained"),
                events_work <- new_work!("virtio_bufshare:events"),
                import_region,
                imports <- new_mutex!(ImportState::new(), "virtio_bufshare:imports"),
            }),
            GFP_KERNEL,
        );
        match &device {
            Ok(device) => device.cmdq.send_events_to(device.clone()),
            // The queue holds itself through its virtqueues' handler until it is shut down.
            Err(_) => shut_down_on_error.shut_down(),
        }
        device
    }

    /// Puts the buffers for the device's events on its event queue, once it is ready.
    pub(crate) fn start_events(&self) {
        self.cmdq.stock_events();
    }

    /// The device's limits.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The features the driver and the device agreed on.
    pub(crate) fn features(&self) -> &Features {
        &self.features
    }

    /// A new owner of buffers, which gets its events until [`BufshareDevice::release`].
    pub(crate) fn new_owner(&self) -> Result<Arc<Owner>> {
        let id = self.next_owner.fetch_add(1, Relaxed);
        let owner = Arc::pin_init(
            try_pin_init!(Owner {
                id,
                usage <- new_mutex!(Usage { buffers: 0, bytes: 0 }, "virtio_bufshare:usage"),
                events <- FileEvents::new()?,
            }),
            GFP_KERNEL,
        )?;
        self.owners.lock().push(owner.clone(), GFP_KERNEL)?;
        if self.buffers.lock().gone {
            // The shutdown ended the events of the owners it found: end those of this one.
            owner.events.end();
        }
        Ok(owner)
    }

    /// `BUFSHARE_IOC_GET_CONSUMERS`: how many consumers `req`'s application has; the owner
    /// follows it from now on.
    pub(crate) fn get_consumers(
        &self,
        owner: &Owner,
        req: &mut uapi::bufshare_consumers,
    ) -> Result {
        if req.flags != 0 {
            return Err(EINVAL);
        }
        let application = props::application(&req.application)?;
        if !self.features.events {
            return Err(EOPNOTSUPP);
        }
        owner.events.queue.lock().follow(&application);
        req.consumers = self.consumers_of(&application)?;
        Ok(())
    }

    /// Asks the device for its version, limits and counters.
    pub(crate) fn get_info(&self) -> Result<uapi::bufshare_info> {
        let result = self.cmdq.send(&GetInfo, Wait::Interruptible);
        // The answer may say that the device lost its buffers: bring them back now.
        self.restore_if_lost();
        let r = result?.reply.0;
        let mut info = uapi::bufshare_info {
            version: u32::from_le(r.version),
            max_ranges: u32::from_le(r.max_ranges),
            max_props_size: u32::from_le(r.max_props_size),
            max_buffers: u32::from_le(r.max_buffers),
            max_buffer_size: u64::from_le(r.max_buffer_size),
            num_buffers: u64::from_le(r.num_buffers),
            num_commands: u64::from_le(r.num_commands),
            features: self.features.bits,
            name: [0; uapi::BUFSHARE_NAME_LEN as usize],
        };
        if info.version != uapi::VIRTIO_BUFSHARE_VERSION {
            if self.cmdq.log_limit().allow() {
                dev_err!(
                    self.dev.as_ref(),
                    "device speaks protocol version {}\n",
                    info.version
                );
            }
            return Err(EPROTO);
        }
        // The device's name is NUL-padded; keep printable ASCII up to the first NUL, and always
        // leave a terminating NUL.
        for (dst, &src) in info
            .name
            .iter_mut()
            .zip(r.name.iter().take_while(|&&c| c != 0))
            .take(uapi::BUFSHARE_NAME_LEN as usize - 1)
        {
            *dst = if src.is_ascii_graphic() || src == b' ' {
                src
            } else {
                b'?'
            };
        }
        Ok(info)
    }

    /// Binds an application name to a user or a group, or removes its binding; the caller was
    /// checked to be allowed to.
    pub(crate) fn bind_application(&self, req: &uapi::bufshare_app_binding) -> Result {
        let application = props::application(&req.application)?;
        self.apps.lock().bind(application, req)
    }

    /// Fills in who may register under the application name of `req`.
    pub(crate) fn get_binding(&self, req: &mut uapi::bufshare_app_binding) -> Result {
        let application = props::application(&req.application)?;
        self.apps.lock().get(&application, req)
    }

    /// Registers a buffer for `owner`; returns its id.
    pub(crate) fn register(&self, owner: &Owner, req: &uapi::bufshare_register) -> Result<u64> {
        if req.flags != 0 || req.reserved != 0 {
            return Err(EINVAL);
        }
        let application = props::application(&req.application)?;
        self.apps.lock().check(&application)?;
        if req.length == 0 || req.offset % PAGE_SIZE != 0 || req.length % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        req.offset.checked_add(req.length).ok_or(EINVAL)?;
        if req.length > self.limits.max_buffer_size {
            return Err(E2BIG);
        }
        let props = props::read(req.props, req.props_size, self.limits.props_size())?;

        // The owner's limits: held until the buffer counts.
        let mut usage = owner.usage.lock();
        if usage.buffers >= module_parameters::max_buffers_per_file.value() {
            return Err(ENOSPC);
        }
        match usage.bytes.checked_add(req.length) {
            Some(b) if b <= module_parameters::max_bytes_per_file.value() => {}
            _ => return Err(ENOSPC),
        }
        let new = NewBuffer {
            owner,
            req,
            application,
            props: &props,
        };
        let (id, size) = self.buffer_op(|op| self.register_in(op, &new))?;
        usage.buffers += 1;
        usage.bytes += size;
        drop(usage);
        owner.events.queue.lock().follow(&application);
        Ok(id)
    }

    /// The part of [`BufshareDevice::register`] that runs as the buffer operation `op`: returns
    /// the buffer's id and size.
    fn register_in(&self, op: &Inflight<'_>, new: &NewBuffer<'_>) -> Result<(u64, u64)> {
        // Room in the tree, taken now: once the device has the buffer, inserting it must not
        // fail.
        let node = RBTreeNodeReservation::new(GFP_KERNEL)?;
        {
            let mut buffers = self.buffers.lock();
            if buffers.tree.len()
                + buffers.zombies.len()
                + buffers.draining.len()
                + buffers.reserved
                >= self.limits.buffers()
            {
                return Err(ENOSPC);
            }
            buffers.reserved += 1;
        }
        let result = self.register_reserved(op, new);
        let mut buffers = self.buffers.lock();
        buffers.reserved -= 1;
        let buf = result?;
        let (id, size) = (buf.id, buf.size);
        if buffers.gone {
            // The device went away meanwhile; the buffer goes with it.
            drop(buffers);
            drop(buf);
            return Err(ENODEV);
        }
        buffers.tree.insert(node.into_node(id, buf));
        Ok((id, size))
    }

    /// The part of [`BufshareDevice::register`] that runs with a slot reserved in the tree.
    fn register_reserved(&self, op: &Inflight<'_>, new: &NewBuffer<'_>) -> Result<Arc<Buffer>> {
        let req = new.req;
        let (memory, kind, ranges) = Memory::take(
            req.fd,
            req.offset,
            req.length,
            op.dma()?,
            self.limits.max_ranges as usize,
            self.cmdq.log_limit(),
        )?;
        // The commands count ranges in a `u32`.
        u32::try_from(ranges.len()).map_err(|_| E2BIG)?;
        let mut props = KVec::with_capacity(new.props.len(), GFP_KERNEL)?;
        props.extend_from_slice(new.props, GFP_KERNEL)?;
        let id = self.next_id.fetch_add(1, Relaxed);

        let buf = Arc::pin_init(
            pin_init!(Buffer {
                id,
                owner: new.owner.id,
                kind,
                size: req.length,
                application: new.application,
                seqno: Atomic::new(0),
                ranges,
                epoch: Atomic::new(0),
                state <- new_mutex!(BufferState { props }, "virtio_bufshare:buffer"),
                memory,
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
                self.unregister_on_device(buf, false);
                Err(e)
            }
        }
    }

    /// Gives `buf`, with properties `props`, to the device: REGISTER with as many ranges as fit,
    /// then ADD_RANGES for the rest. Returns the epoch of the last answer.
    fn send_registration(&self, buf: &Buffer, props: &[u8], wait: Wait) -> Result<u64> {
        let ranges = &buf.ranges;
        let first = ranges.len().min(RANGES_PER_CMD);
        let register = Register {
            id: buf.id,
            size: buf.size,
            num_ranges: buf.nr_ranges(),
            application: &buf.application,
            props,
            ranges: &ranges[..first],
        };
        let mut epoch = self.cmdq.send(&register, wait)?.epoch;

        let mut sent = first;
        while sent < ranges.len() {
            let n = (ranges.len() - sent).min(RANGES_PER_CMD);
            let add = AddRanges {
                id: buf.id,
                // Fewer than `nr_ranges()`, a `u32`.
                first: sent as u32,
                ranges: &ranges[sent..sent + n],
            };
            epoch = self.cmdq.send(&add, wait)?.epoch;
            sent += n;
        }
        Ok(epoch)
    }

    /// Unregisters buffer `id` of `owner`. With `wait`, waits until the host let go of its
    /// memory.
    pub(crate) fn unregister(&self, owner: &Owner, id: u64, wait: bool) -> Result {
        let (size, what) = self.buffer_op(|_op| {
            let buf = {
                let mut buffers = self.buffers.lock();
                match buffers.tree.get(&id) {
                    Some(buf) if buf.owner == owner.id => {}
                    _ => return Err(ENOENT),
                }
                buffers.tree.remove(&id).ok_or(ENOENT)?
            };
            let size = buf.size;
            Ok((size, self.unregister_on_device(buf, true)))
        })?;
        // A buffer being drained counts until the host let go of it; one drained was uncharged.
        if !matches!(what, Unregistered::Draining | Unregistered::Drained) {
            owner.uncharge(size);
        }
        match what {
            // A buffer kept until the device is reset fails the wait, unless the reset came.
            Unregistered::Draining | Unregistered::Kept(_) if wait => self.wait_freed(id),
            _ => Ok(()),
        }
    }

    /// Tells the device that a buffer of `owner` changed; fills in the sequence number sent.
    pub(crate) fn update(&self, owner: &Owner, req: &mut uapi::bufshare_update) -> Result {
        let known = DEVICE_UPDATE_FLAGS | uapi::BUFSHARE_UPDATE_NOWAIT;
        if req.flags & !known != 0 || req.reserved != 0 {
            return Err(EINVAL);
        }
        let nowait = req.flags & uapi::BUFSHARE_UPDATE_NOWAIT != 0;
        // The writes that a dma-buf's fences announce land before the device hears of the
        // update. Waited for with a reference to the dma-buf of our own, not to the buffer, whose
        // memory the driver's teardown must not wait for.
        let dmabuf = self
            .lookup(owner, req.id)
            .ok()
            .and_then(|buf| buf.memory.dma_buf().cloned());
        if let Some(dmabuf) = dmabuf {
            dmabuf.wait_for_writes(msecs_to_jiffies(FENCE_TIMEOUT_MS))?;
        }
        let seqno = self.buffer_op(|_op| {
            let buf = self.lookup(owner, req.id)?;
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
            let update = Update {
                id: buf.id,
                seqno,
                what: &*req,
            };
            // Taken before the command goes out: if the wait ends early (a signal, a timeout), the
            // device may still carry it out, and the next number must be a larger one.
            buf.seqno.store(seqno, Relaxed);
            if nowait {
                // Not queued if it fails (no room on the ring in time, a signal meanwhile, the
                // device gone): the number is not used. Once queued, the device carries it out
                // in order with the commands before and after it.
                if let Err(e) = self.cmdq.post(&update) {
                    buf.seqno.store(last, Relaxed);
                    return Err(e);
                }
            } else if let Err(e) = self.cmdq.send(&update, Wait::Interruptible) {
                // An answer that refuses it (or says the device lost the buffer, when the
                // command is sent again once the buffer is back) leaves the number unused.
                if e != EINTR && e != ETIMEDOUT {
                    buf.seqno.store(last, Relaxed);
                }
                return Err(e);
            }
            drop(state);
            Ok(seqno)
        })?;
        req.seqno = seqno;
        Ok(())
    }

    /// Replaces or merges the properties of a buffer of `owner`.
    pub(crate) fn set_properties(
        &self,
        owner: &Owner,
        req: &uapi::bufshare_set_properties,
    ) -> Result {
        if req.flags & !uapi::BUFSHARE_PROPS_MERGE != 0 {
            return Err(EINVAL);
        }
        let max = self.limits.props_size();
        let new = props::read(req.props, req.props_size, max)?;
        self.buffer_op(|_op| {
            let buf = self.lookup(owner, req.id)?;
            let mut state = buf.state.lock();
            let props = if req.flags & uapi::BUFSHARE_PROPS_MERGE != 0 {
                props::merge(&state.props, &new)?
            } else {
                let mut props = KVec::with_capacity(new.len(), GFP_KERNEL)?;
                props.extend_from_slice(&new, GFP_KERNEL)?;
                props
            };
            if props.len() > max {
                return Err(E2BIG);
            }
            let set = SetProperties {
                id: buf.id,
                props: &props,
            };
            self.cmdq.send(&set, Wait::Interruptible)?;
            state.props = props;
            Ok(())
        })
    }

    /// Fills in the state of a buffer of `owner`, and copies its properties to user space if
    /// `info` has room for them.
    ///
    /// The state is copied out with the buffer locked, and to user space after the buffer is let
    /// go: a page fault that never ends (userfaultfd, FUSE) holds up nothing but this call.
    pub(crate) fn buffer_info(
        &self,
        owner: &Owner,
        info: &mut uapi::bufshare_buffer_info,
    ) -> Result {
        if info.reserved != 0 {
            return Err(EINVAL);
        }
        let props = self.buffer_op(|_op| {
            let buf = self.lookup(owner, info.id)?;
            let state = buf.state.lock();
            let mut props = KVec::with_capacity(state.props.len(), GFP_KERNEL)?;
            props.extend_from_slice(&state.props, GFP_KERNEL)?;
            info.kind = buf.kind;
            info.size = buf.size;
            info.seqno = buf.seqno.load(Relaxed);
            info.nr_ranges = buf.nr_ranges();
            info.application = buf.application;
            Ok(props)
        })?;
        if info.props != 0 && info.props_size as usize >= props.len() {
            let ptr = usize::try_from(info.props).map_err(|_| EFAULT)?;
            UserSlice::new(UserPtr::from_addr(ptr), props.len())
                .writer()
                .write_slice(&props)?;
        }
        // Checked against the device's limit, a `u32`.
        info.props_size = props.len() as u32;
        Ok(())
    }

    /// Unregisters every buffer of `owner`, which is going away, and stops giving it events.
    pub(crate) fn release(&self, owner: &Owner) {
        {
            let mut owners = self.owners.lock();
            if let Some(i) = owners.iter().position(|o| o.id == owner.id) {
                let _ = owners.remove(i);
            }
        }
        self.release_imports(owner.id);
        // Fails only if the device is gone or cannot hold buffers: then nothing is registered.
        let _ = self.buffer_op(|_op| {
            // Out of the tree in one pass, so that releasing many buffers does not scan the
            // tree once per buffer. Room for them is taken first: once a buffer is out of the
            // tree, nothing may fail before the device is told.
            let mine = {
                let mut buffers = self.buffers.lock();
                let n = buffers
                    .tree
                    .values()
                    .filter(|b| b.owner == owner.id)
                    .count();
                let mut mine = KVVec::with_capacity(n, GFP_KERNEL)?;
                buffers.tree.remove_all(
                    |b| b.owner == owner.id,
                    // Cannot fail: there is room for every buffer of the owner.
                    |b| {
                        let _ = mine.push(b, GFP_NOWAIT);
                    },
                );
                mine
            };
            let mut responsive = true;
            for buf in mine {
                if responsive {
                    responsive = !matches!(
                        self.unregister_on_device(buf, false),
                        Unregistered::Kept(false)
                    );
                } else {
                    // The device stopped answering: do not wait on it again for every buffer.
                    self.keep_until_reset(buf);
                }
            }
            Ok(())
        });
    }

    /// Shows the buffers of `owner` in its fdinfo.
    pub(crate) fn show_fdinfo(&self, owner: &Owner, m: &SeqFile) {
        if self.import_region.is_some() {
            let (attachments, imports, exported) = self.import_counts(owner.id);
            seq_print!(m, "attachments:\t{}\n", attachments);
            seq_print!(m, "imports:\t{} ({} with a dma-buf)\n", imports, exported);
        }
        let buffers = self.buffers.lock();
        let mine = || buffers.tree.values().filter(|b| b.owner == owner.id);
        let draining = || {
            buffers
                .draining
                .values()
                .map(|d| &d.buf)
                .filter(|b| b.owner == owner.id)
        };
        seq_print!(m, "buffers:\t{}\n", mine().count());
        seq_print!(m, "draining:\t{}\n", draining().count());
        seq_print!(m, "events:\t{}\n", owner.events.queue.lock().len());
        for buf in draining() {
            seq_print!(
                m,
                "draining:\tid={} size={} application={}\n",
                buf.id,
                buf.size,
                buf.app_str()
            );
        }
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

    /// Stops using the device: resets it and takes back queued commands (waking everybody waiting
    /// to find it gone), then waits for the buffer operations to end and drops every buffer, so
    /// that their memory is unmapped before the driver unbinds.
    pub(crate) fn shut_down(&self) {
        self.cmdq.shut_down();
        // The device is reset: nothing is mapped in its import region any more, and the region
        // goes away with the binding.
        self.end_imports(true);

        {
            let mut buffers = self.buffers.lock();
            buffers.gone = true;
            // Operations waiting for the device to come back from a reset find it gone, and so
            // do unregistrations waiting for the host to let go.
            self.restored.notify_all();
            self.drained.notify_all();
        }
        // No event comes any more, and the handling of those that came starts no operation now:
        // it ends, before the buffers it may look at go.
        self.flush_events();

        let mut buffers = self.buffers.lock();
        while buffers.inflight > 0 {
            self.idle.wait(&mut buffers);
        }
        let tree = buffers.tree.take();
        let zombies = core::mem::take(&mut buffers.zombies);
        let draining = buffers.draining.take();
        let dma = buffers.dma.take();
        drop(buffers);
        drop(tree);
        drop(zombies);
        drop(draining);
        drop(dma);
        for owner in self.owners.lock().iter() {
            owner.events.end();
        }
    }

    /// Lets go of the device before it is reset behind the driver: the system suspends, or the
    /// transport resets the device. The buffer operations running end first, and none starts
    /// until [`BufshareDevice::resume`]; the buffers stay pinned and mapped meanwhile, to be
    /// given to the device again then.
    pub(crate) fn suspend(&self) {
        let mut buffers = self.buffers.lock();
        buffers.suspended = true;
        while buffers.inflight > 0 {
            self.idle.wait(&mut buffers);
        }
        drop(buffers);
        self.cmdq.suspend();
        // The reset ended the attachments and unmapped the imports.
        self.end_imports(false);
        // The reset made the device let go of the buffers it had not confirmed giving up, and of
        // those being drained.
        let (zombies, draining) = {
            let mut buffers = self.buffers.lock();
            (
                core::mem::take(&mut buffers.zombies),
                buffers.draining.take(),
            )
        };
        drop(zombies);
        drop(draining);
        let _buffers = self.buffers.lock();
        self.drained.notify_all();
    }

    /// Takes the device back after [`BufshareDevice::suspend`], once it was reset: sets its
    /// queue up again and gives it the buffers again. A device that cannot be set up again is
    /// given up, as if it had gone away.
    pub(crate) fn resume(&self, vdev: &virtio::Device<Core<'_>>) -> Result {
        if let Err(e) = self.cmdq.resume(vdev) {
            dev_err!(
                vdev.as_ref(),
                "cannot set the device up again after its reset ({:?}): giving it up\n",
                e
            );
            self.shut_down();
            return Err(e);
        }
        vdev.ready();
        self.start_events();
        {
            let mut buffers = self.buffers.lock();
            buffers.suspended = false;
            self.restored.notify_all();
        }
        // The reset made the device forget the buffers: register them again now, so that its
        // consumers get them back without waiting for the next operation.
        self.restore_if_lost();
        Ok(())
    }

    /// Returns the buffer `id` if `owner` has it.
    fn lookup(&self, owner: &Owner, id: u64) -> Result<Arc<Buffer>> {
        let buffers = self.buffers.lock();
        if buffers.gone {
            return Err(ENODEV);
        }
        match buffers.tree.get(&id) {
            Some(buf) if buf.owner == owner.id => Ok(buf.clone()),
            _ => Err(ENOENT),
        }
    }

    /// Tells the device that `buf` is gone, and lets its memory go once the device confirmed
    /// (with `VIRTIO_BUFSHARE_F_EVENTS`, once it said FREED), or once it is reset. `charged` says
    /// whether the buffer counts against its owner's limits, until FREED.
    fn unregister_on_device(&self, buf: Arc<Buffer>, charged: bool) -> Unregistered {
        if !self.features.events {
            return self.unregister_confirmed(buf);
        }
        // Kept until FREED, from before the command goes out: FREED may be handled before this
        // caller sees the answer.
        let Ok(node) = RBTreeNodeReservation::new(GFP_KERNEL) else {
            // Without room to wait for FREED, the memory is kept until the device is reset.
            let _ = self.unregister_command(buf.id);
            self.keep_until_reset(buf);
            return Unregistered::Kept(true);
        };
        let id = buf.id;
        {
            let mut buffers = self.buffers.lock();
            let drain = Drain {
                buf: buf.clone(),
                answered: false,
                freed: false,
                charged,
            };
            buffers.draining.insert(node.into_node(id, drain));
        }
        let result = self.unregister_command(id);
        let mut buffers = self.buffers.lock();
        let Some(drain) = buffers.draining.get_mut(&id) else {
            // A reset took it, or a LOST event kept it until the next reset: the memory goes with
            // the last reference.
            drop(buffers);
            drop(buf);
            return Unregistered::Kept(true);
        };
        match result {
            Ok(()) if !drain.freed => {
                drain.answered = true;
                Unregistered::Draining
            }
            // FREED came already, or the device does not know the buffer: the memory is ours,
            // and the owner is told as for any FREED.
            Ok(()) | Err(ENOENT) => {
                let drain = buffers.take_draining(id);
                drop(buffers);
                drop(buf);
                match drain {
                    Some(drain) => {
                        self.drained(drain);
                        Unregistered::Drained
                    }
                    None => Unregistered::Freed,
                }
            }
            Err(e) => {
                let drain = buffers.draining.remove(&id);
                drop(buffers);
                drop(drain);
                self.unregister_failed(buf, e)
            }
        }
    }

    /// Tells the device that `buf` is gone, without `VIRTIO_BUFSHARE_F_EVENTS`: its answer says
    /// that the host let go.
    fn unregister_confirmed(&self, buf: Arc<Buffer>) -> Unregistered {
        match self.unregister_command(buf.id) {
            // The device let go of it, or does not know it: the memory is ours again.
            Ok(()) => Unregistered::Freed,
            Err(e) if e == ENOENT => Unregistered::Freed,
            Err(e) => self.unregister_failed(buf, e),
        }
    }

    /// Keeps `buf` until the device is reset: it did not confirm unregistering it (`e`).
    fn unregister_failed(&self, buf: Arc<Buffer>, e: Error) -> Unregistered {
        match e {
            // The device is going away, and may still use the memory until it is reset: the
            // shutdown lets it go once the reset is done.
            ENODEV => {
                self.keep_until_reset(buf);
                Unregistered::Kept(false)
            }
            e => {
                // The device may still use the memory: keep it until the device is reset.
                if self.cmdq.log_limit().allow() {
                    dev_warn!(
                        self.dev.as_ref(),
                        "buffer {}: unregistering not confirmed ({:?}); memory kept until reset\n",
                        buf.id,
                        e
                    );
                }
                self.keep_until_reset(buf);
                Unregistered::Kept(e != ETIMEDOUT)
            }
        }
    }

    /// Sends UNREGISTER for buffer `id`, waiting uninterruptibly for the answer.
    fn unregister_command(&self, id: u64) -> Result {
        self.cmdq
            .send(&Unregister { id }, Wait::Uninterruptible)
            .map(|_| ())
    }

    /// Keeps the memory of `buf`, which the device may still use, until the device is reset.
    ///
    /// Called during a buffer operation, which the shutdown waits for before it drops the kept
    /// buffers.
    fn keep_until_reset(&self, buf: Arc<Buffer>) {
        let mut buffers = self.buffers.lock();
        if buffers.gone {
            // The shutdown set `gone` once the reset was done: the device let go of everything.
            return;
        }
        if buffers.zombies.reserve(1, GFP_KERNEL).is_err() {
            if self.cmdq.log_limit().allow() {
                dev_err!(
                    self.dev.as_ref(),
                    "no memory: leaking a buffer the device may still use\n"
                );
            }
            // Pinned for good is safe; freed while the device may write to it is not.
            core::mem::forget(buf);
            return;
        }
        // Cannot fail: room was reserved above.
        let _ = buffers.zombies.push(buf, GFP_NOWAIT);
    }
}
