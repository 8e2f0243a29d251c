// SPDX-License-Identifier: GPL-2.0

//! The device as the driver keeps it: its buffers, and the operations on them.

use super::*;

mod recovery;

/// The buffers of a device.
pub(crate) struct Table {
    /// Set when the device goes away: no new operations start.
    pub(crate) gone: bool,
    /// Buffer operations running, which may hold buffers outside the table.
    pub(crate) inflight: usize,
    /// Registrations running, counted against the device's buffer limit.
    pub(crate) reserved: usize,
    pub(crate) buffers: RBTree<u64, Arc<Buffer>>,
    /// Buffers the device did not confirm giving up (it timed out): their memory stays with the
    /// device until it is reset.
    pub(crate) zombies: KVec<Arc<Buffer>>,
    /// How the device reaches memory; `None` if it cannot be given buffers.
    pub(crate) dma: Option<DmaTarget>,
    /// The [`Shared::losses`] the buffers were last registered again for.
    pub(crate) synced: u64,
    /// Set while the buffers are being registered again: no operation starts meanwhile.
    pub(crate) recovering: bool,
}

/// A buffer operation in progress; the device's shutdown waits for it.
pub(crate) struct Op<'a> {
    pub(crate) shared: &'a Shared,
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
pub(crate) struct Shared {
    /// The virtqueues, `None` once the device is gone.
    #[pin]
    pub(crate) queues: SpinLockIrq<Option<Queues>>,
    /// Signalled when the device used a command, or went away.
    #[pin]
    pub(crate) used: CondVar,
    /// The buffers, and what the device's shutdown waits for.
    #[pin]
    pub(crate) table: Mutex<Table>,
    /// Signalled when the last buffer operation ends.
    #[pin]
    pub(crate) idle: CondVar,
    /// Signalled when the buffers were registered again.
    #[pin]
    pub(crate) recovered: CondVar,
    /// The device's generation, with [`GENERATION_KNOWN`] set once an answer told it; written
    /// under the queues' lock.
    pub(crate) generation: Atomic<u64>,
    /// How many times the answers showed a new generation, that is the device lost its buffers;
    /// written under the queues' lock, in the order the device answered.
    pub(crate) losses: Atomic<u64>,
    pub(crate) dev: ARef<virtio::Device>,
    pub(crate) limits: Limits,
    pub(crate) features: u64,
    /// The id of the next buffer: ids are never reused while the device is bound.
    pub(crate) next_id: Atomic<u64>,
    /// The id of the next open file.
    pub(crate) next_file: Atomic<u64>,
}

impl Shared {
    /// Asks the device for its version, limits and counters.
    pub(crate) fn get_info(&self) -> Result<Info> {
        let wire = Wire::new(uapi::VIRTIO_BUFSHARE_CMD_GET_INFO, 0)?;
        self.exchange(
            wire,
            size_of::<uapi::virtio_bufshare_resp_info>(),
            Wait::Interruptible,
            |resp| self.parse_info(resp),
        )
    }

    /// Reads the answer to GET_INFO.
    pub(crate) fn parse_info(&self, resp: &[u8]) -> Result<Info> {
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

    /// Returns the buffer `id` if the open file `owner` has it.
    pub(crate) fn lookup(&self, owner: u64, id: u64) -> Result<Arc<Buffer>> {
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
    pub(crate) fn unregister_on_device(&self, buf: Arc<Buffer>) -> bool {
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
    pub(crate) fn unregister_command(&self, id: u64) -> Result {
        let mut wire = Wire::new(uapi::VIRTIO_BUFSHARE_CMD_UNREGISTER, 8)?;
        wire.u64(id)?;
        self.command(wire, Wait::Uninterruptible)
    }

    /// Keeps the memory of `buf`, which the device may still use, until the device is reset.
    pub(crate) fn keep_until_reset(&self, buf: Arc<Buffer>) {
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
    pub(crate) fn register(
        &self,
        owner: &BufshareFile,
        req: &uapi::bufshare_register,
    ) -> Result<u64> {
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
    pub(crate) fn register_reserved(
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
    pub(crate) fn send_registration(&self, buf: &Buffer, props: &[u8], wait: Wait) -> Result<u64> {
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
    pub(crate) fn unregister(&self, owner: &BufshareFile, id: u64) -> Result {
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
    pub(crate) fn update(&self, owner: &BufshareFile, req: &mut uapi::bufshare_update) -> Result {
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
    pub(crate) fn set_properties(
        &self,
        owner: &BufshareFile,
        req: &uapi::bufshare_set_properties,
    ) -> Result {
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
    pub(crate) fn buffer_info(
        &self,
        owner: &BufshareFile,
        info: &mut uapi::bufshare_buffer_info,
    ) -> Result {
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
    pub(crate) fn release(&self, owner: u64) {
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
    pub(crate) fn shut_down(&self) {
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

/// Owns the link between the driver and the shared state: dropping it shuts the device down,
/// which also breaks the reference the virtqueues hold on the shared state.
pub(crate) struct SharedOwner(pub(crate) Arc<Shared>);

impl SharedOwner {
    pub(crate) fn new(vdev: &virtio::Device<Core<'_>>) -> Result<Self> {
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
