// SPDX-License-Identifier: GPL-2.0

//! The command queue: commands in flight, their answers, and the device's generation.

use super::*;

/// One command in flight: what the device reads, and room for its answer.
///
/// # Invariants
///
/// - `resp` is only read through its raw pointer, and only once `used` holds a length: the
///   device wrote it and gave the command back.
/// - `used` is -1 while the command is pending, else the length the device reported (checked
///   against `resp_len` when it is read).
pub(crate) struct Command {
    pub(crate) req: KVec<u8>,
    pub(crate) resp: KBox<Opaque<[u8; RESP_MAX]>>,
    pub(crate) resp_len: usize,
    pub(crate) used: Atomic<i64>,
    /// How many times the device had lost its buffers when it answered ([`Shared::losses`]);
    /// written before the command is seen complete, under the queues' lock.
    pub(crate) epoch: Atomic<u64>,
}

impl Command {
    /// A command the device reads as `req`, expecting an answer of at most `resp_len` bytes.
    pub(crate) fn new(req: KVec<u8>, resp_len: usize) -> Result<Arc<Self>> {
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
    pub(crate) fn complete(&self, len: u32) {
        self.used.store(i64::from(len), Release);
    }

    /// The device's answer once the command is complete; `EIO` if the device claims to have
    /// written more than there was room for.
    pub(crate) fn response(&self) -> Option<Result<&[u8]>> {
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

pub(crate) type Queues = virtio::Virtqueues<Shared, Arc<Command>>;

/// How a caller waits for the device.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// A signal ends the wait with `EINTR`.
    Interruptible,
    /// Only the answer, the timeout or the device going away end the wait: for commands that
    /// clean up, which must reach the device even from a process being killed.
    Uninterruptible,
}

impl super::Shared {
    /// Takes back every command the device has used, in the order it used them, follows the
    /// device's generation through their answers, and wakes the callers waiting for them.
    ///
    /// Callers reap too, on their way in and while they wait, so the command taken back may be
    /// another caller's, and the interrupt that announced it then finds the ring empty: the
    /// virtio core does not call the handler for it. Whoever takes an answer must wake its
    /// waiter.
    pub(crate) fn reap(&self, queues: &mut Queues) {
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
    pub(crate) fn follow_generation(&self, cmd: &Command) -> u64 {
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
    pub(crate) fn sleep(
        &self,
        guard: &mut SpinLockIrqGuard<'_, Option<Queues>>,
        wait: Wait,
    ) -> Result {
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
    pub(crate) fn submit<'a>(&self, cmd: &'a Arc<Command>, wait: Wait) -> Result<(&'a [u8], u64)> {
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
    pub(crate) fn check_status<'a>(&self, resp: &'a [u8]) -> Result<&'a [u8]> {
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
    pub(crate) fn exchange<T>(
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
    pub(crate) fn exchange_epoch<T>(
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
    pub(crate) fn command(&self, wire: Wire, wait: Wait) -> Result {
        self.exchange(wire, RESP_HDR_LEN, wait, |_| Ok(()))
    }

    /// Like [`Shared::command`]; returns the answer's epoch (see [`Shared::losses`]).
    pub(crate) fn command_epoch(&self, wire: Wire, wait: Wait) -> Result<u64> {
        self.exchange_epoch(wire, RESP_HDR_LEN, wait, |_| Ok(()))
            .map(|((), epoch)| epoch)
    }
}

impl virtio::VirtqueueHandler for Shared {
    fn used(&self, _index: usize) {
        if let Some(queues) = Option::as_mut(&mut *self.queues.lock()) {
            self.reap(queues);
        }
    }
}
