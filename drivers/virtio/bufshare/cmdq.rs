// SPDX-License-Identifier: GPL-2.0

//! The command queue: the device's one virtqueue, the commands in flight on it, their answers,
//! and the device's generation as the answers tell it.

use core::{
    mem::size_of,
    ptr::NonNull, //
};
use kernel::{
    c_str,
    device::Core,
    new_condvar, new_spinlock_irq,
    prelude::*,
    ratelimit::RateLimit,
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
        SpinLockIrq,
        SpinLockIrqGuard, //
    },
    time::{
        msecs_to_jiffies,
        Delta,
        Instant,
        Monotonic, //
    },
    transmute::FromBytes,
    types::Opaque,
    uapi,
    virtio::{
        self,
        DmaTarget, //
    },
};

use crate::commands::{
    self,
    Command,
    Reply,
    RespHdr, //
};

/// How long a caller waits for the device to answer a command.
const COMMAND_TIMEOUT_MS: u32 = 10_000;

/// Room for the largest answer the driver expects.
const RESP_MAX: usize = 128;

/// The size of an answer that is a bare header.
const RESP_HDR_LEN: usize = size_of::<RespHdr>();

/// Set in [`Cmdq::generation`] once the device's generation is known.
const GENERATION_KNOWN: u64 = 1 << 32;

/// How a caller waits for the device.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// A signal ends the wait with `EINTR`.
    Interruptible,
    /// Only the answer, the timeout or the device going away end the wait: for commands that
    /// clean up, which must reach the device even from a process being killed.
    Uninterruptible,
}

/// An answer of the device that said OK.
pub(crate) struct Answer<R> {
    /// What the answer says.
    pub(crate) reply: R,
    /// The device's epoch when it carried the command out (see [`Cmdq::epoch`]).
    pub(crate) epoch: u64,
}

/// A command on the queue: what the device reads, and room for its answer.
///
/// # Invariants
///
/// - `resp` is only read through its raw pointer, and only once `used` holds a length: the
///   device wrote it and gave the command back.
/// - `used` is -1 while the command is on the queue, else the length the device reported (checked
///   against `resp_len` when it is read).
struct Queued {
    req: KVec<u8>,
    resp: KBox<Opaque<[u8; RESP_MAX]>>,
    resp_len: usize,
    used: Atomic<i64>,
    /// The epoch the answer came in; written under the queue's lock, before `used`.
    epoch: Atomic<u64>,
}

impl Queued {
    /// A command the device reads as `req`, expecting an answer of at most `resp_len` bytes.
    fn new(req: KVec<u8>, resp_len: usize) -> Result<Arc<Self>> {
        if !(RESP_HDR_LEN..=RESP_MAX).contains(&resp_len) {
            return Err(EINVAL);
        }
        Ok(Arc::new(
            Queued {
                req,
                resp: KBox::new(Opaque::zeroed(), GFP_KERNEL)?,
                resp_len,
                used: Atomic::new(-1),
                epoch: Atomic::new(0),
            },
            GFP_KERNEL,
        )?)
    }

    /// The device's answer once the device gave the command back; `EIO` if the device claims to
    /// have written more than there was room for.
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
unsafe impl Sync for Queued {}

// SAFETY: A command owns its allocations; it can be dropped from any thread.
unsafe impl Send for Queued {}

// SAFETY:
// - `req` and `resp` are separate `kmalloc` allocations (so in the linear mapping, and aligned
//   for DMA), owned by the command and never moved or resized while it lives.
// - By the type invariants `resp` is only accessed through raw pointers after the device gave the
//   command back.
unsafe impl virtio::Request for Queued {
    fn device_readable(&self) -> &[u8] {
        &self.req
    }

    fn device_writable(&self) -> (NonNull<u8>, usize) {
        (NonNull::from(&*self.resp).cast(), self.resp_len)
    }
}

type Virtqueues = virtio::Virtqueues<Cmdq, Arc<Queued>>;

/// The command queue of a device.
///
/// A caller queues its command, kicks the device and sleeps until the answer is there. Answers
/// are taken off the ring by whoever comes first: the interrupt handler, or a caller on its way
/// in or waiting. The device carries commands out in the order it takes them and gives them back
/// in that order, so the answers tell the device's generation in order too.
///
/// # Invariants
///
/// - `vqs` holds the device's virtqueues until the device goes away, and `None` afterwards.
/// - Answers are taken off the ring only by [`Cmdq::reap`], with the lock of `vqs` held, which
///   wakes every caller sleeping on `answered` once it took any: a caller checks for its answer
///   and goes to sleep without letting go of the lock in between, so no answer goes unseen.
/// - `generation` and `epoch` change only in [`Cmdq::reap`], under the same lock.
#[pin_data]
pub(crate) struct Cmdq {
    #[pin]
    vqs: SpinLockIrq<Option<Virtqueues>>,
    /// Woken when answers were taken off the ring, and when the device went away.
    #[pin]
    answered: CondVar,
    dev: ARef<virtio::Device>,
    /// Whether answers carry the device's generation (`VIRTIO_BUFSHARE_F_GENERATION`).
    with_generation: bool,
    /// The device's generation, with [`GENERATION_KNOWN`] set once an answer told it.
    generation: Atomic<u64>,
    /// How many times the answers showed a new generation.
    epoch: Atomic<u64>,
    /// The device's log lines, which the device or users can trigger at will.
    #[pin]
    log_limit: RateLimit,
}

impl Cmdq {
    /// Sets up the command queue of `vdev`; `with_generation` says whether the device's answers
    /// carry its generation.
    pub(crate) fn new(vdev: &virtio::Device<Core<'_>>, with_generation: bool) -> Result<Arc<Self>> {
        let cmdq = Arc::pin_init(
            pin_init!(Cmdq {
                vqs <- new_spinlock_irq!(None, "virtio_bufshare:cmdq"),
                answered <- new_condvar!("virtio_bufshare:answered"),
                dev: vdev.into(),
                with_generation,
                generation: Atomic::new(0),
                epoch: Atomic::new(0),
                log_limit <- RateLimit::new_default(c_str!("virtio_bufshare")),
            }),
            GFP_KERNEL,
        )?;
        let vqs = Virtqueues::new(vdev, &[c_str!("cmd")], cmdq.clone())?;
        *cmdq.vqs.lock() = Some(vqs);
        Ok(cmdq)
    }

    /// Whether a log line about the device may go out now: lines that the device or users can
    /// trigger at will are rate-limited, all of them together.
    pub(crate) fn log_allowed(&self) -> bool {
        self.log_limit.allow()
    }

    /// The rate limit of the device's log lines, for those logged elsewhere.
    pub(crate) fn log_limit(&self) -> &RateLimit {
        &self.log_limit
    }

    /// Returns how the device reaches memory the driver describes to it by address.
    pub(crate) fn dma_target(&self, vdev: &virtio::Device<Core<'_>>) -> Result<DmaTarget> {
        let mut vqs = self.vqs.lock();
        let vqs = Option::as_mut(&mut *vqs).ok_or(ENODEV)?;
        vqs.get_mut(uapi::VIRTIO_BUFSHARE_VQ_CMD as usize)
            .ok_or(ENODEV)?
            .dma_target(vdev)
    }

    /// How many times the device's answers have shown that it lost its buffers: its generation
    /// changed. Each answer carries the epoch it came in ([`Answer::epoch`]).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }

    /// The device's generation, as the last answer told it (0 if none did).
    pub(crate) fn generation(&self) -> u32 {
        // The low 32 bits are the device's.
        self.generation.load(Relaxed) as u32
    }

    /// Sends `cmd` and sleeps until the device answers; checks that the answer says OK and is
    /// of the reply's size, and reads it.
    pub(crate) fn send<C: Command>(&self, cmd: &C, wait: Wait) -> Result<Answer<C::Reply>> {
        let queued = Queued::new(commands::encode(cmd)?, C::Reply::LEN)?;
        let (resp, epoch) = self.submit(&queued, wait)?;
        let resp = self.check_status(resp)?;
        if resp.len() != C::Reply::LEN {
            if self.log_allowed() {
                dev_err!(
                    self.dev.as_ref(),
                    "answer is {} bytes, expected {}\n",
                    resp.len(),
                    C::Reply::LEN
                );
            }
            return Err(EIO);
        }
        Ok(Answer {
            reply: C::Reply::read(resp)?,
            epoch,
        })
    }

    /// Drops the virtqueues: the device is reset, queued commands are taken back, and everybody
    /// waiting is woken to find the device gone.
    pub(crate) fn shut_down(&self) {
        let vqs = self.vqs.lock().take();
        // Dropped outside the lock: deleting the queues sleeps.
        drop(vqs);
        self.answered.notify_all();
    }

    /// Queues `queued` and sleeps until the device answers; returns the answer and its epoch.
    ///
    /// The command has one deadline, [`COMMAND_TIMEOUT_MS`] from now, for finding room on the
    /// ring and for the answer, however often the caller is woken meanwhile.
    fn submit<'a>(&self, queued: &'a Arc<Queued>, wait: Wait) -> Result<(&'a [u8], u64)> {
        let deadline = Instant::<Monotonic>::now() + Delta::from_millis(COMMAND_TIMEOUT_MS.into());
        let mut guard = self.vqs.lock();

        // Queue it, waiting for room if the ring is full.
        loop {
            let vqs = Option::as_mut(&mut *guard).ok_or(ENODEV)?;
            self.reap(vqs);
            let vq = vqs
                .get_mut(uapi::VIRTIO_BUFSHARE_VQ_CMD as usize)
                .ok_or(ENODEV)?;
            match vq.add(queued.clone(), GFP_ATOMIC) {
                Ok(()) => {
                    if !vq.kick() {
                        if self.log_allowed() {
                            dev_err!(self.dev.as_ref(), "device is broken\n");
                        }
                        return Err(EIO);
                    }
                    break;
                }
                Err((_, e)) if e == ENOSPC => {}
                Err((_, e)) => return Err(e),
            }
            self.sleep(&mut guard, wait, deadline)?;
        }

        // Wait for the answer. The command stays owned by the virtqueue if we give up: the
        // device may still write its answer, and the memory stays valid for it.
        loop {
            if let Some(resp) = queued.response() {
                return Ok((resp?, queued.epoch.load(Relaxed)));
            }
            let vqs = Option::as_mut(&mut *guard).ok_or(ENODEV)?;
            self.reap(vqs);
            if let Some(resp) = queued.response() {
                return Ok((resp?, queued.epoch.load(Relaxed)));
            }
            if let Err(e) = self.sleep(&mut guard, wait, deadline) {
                // The answer may have come with the timeout or the signal: look once more.
                if let Some(vqs) = Option::as_mut(&mut *guard) {
                    self.reap(vqs);
                }
                if let Some(resp) = queued.response() {
                    return Ok((resp?, queued.epoch.load(Relaxed)));
                }
                if e == ETIMEDOUT {
                    if self.log_allowed() {
                        dev_warn!(self.dev.as_ref(), "device did not answer in time\n");
                    }
                }
                return Err(e);
            }
        }
    }

    /// Sleeps until woken, the deadline or (if `wait` allows) a signal.
    fn sleep(
        &self,
        guard: &mut SpinLockIrqGuard<'_, Option<Virtqueues>>,
        wait: Wait,
        deadline: Instant<Monotonic>,
    ) -> Result {
        let left = deadline - Instant::<Monotonic>::now();
        if left.is_negative() || left.is_zero() {
            return Err(ETIMEDOUT);
        }
        let ms = u32::try_from(left.as_millis_ceil()).unwrap_or(COMMAND_TIMEOUT_MS);
        let timeout = msecs_to_jiffies(ms);
        match wait {
            Wait::Interruptible => match self.answered.wait_interruptible_timeout(guard, timeout) {
                CondVarTimeoutResult::Signal { .. } => Err(EINTR),
                CondVarTimeoutResult::Timeout => Err(ETIMEDOUT),
                CondVarTimeoutResult::Woken { .. } => Ok(()),
            },
            Wait::Uninterruptible => match self.answered.wait_timeout(guard, timeout) {
                0 => Err(ETIMEDOUT),
                _ => Ok(()),
            },
        }
    }

    /// Takes back every command the device has used, in the order it used them, follows the
    /// device's generation through their answers, and wakes the callers waiting for them.
    ///
    /// Callers reap too, on their way in and while they wait, so the command taken back may be
    /// another caller's, and the interrupt that announced it then finds the ring empty: the
    /// virtio core does not call the handler for it. Whoever takes an answer must wake its
    /// waiter.
    fn reap(&self, vqs: &mut Virtqueues) {
        let Some(vq) = vqs.get_mut(uapi::VIRTIO_BUFSHARE_VQ_CMD as usize) else {
            return;
        };
        let mut reaped = false;
        while let Some((queued, len)) = vq.get_buf() {
            queued.used.store(i64::from(len), Release);
            // Waiters read the epoch with the lock held, as it is here.
            queued.epoch.store(self.follow_generation(&queued), Relaxed);
            reaped = true;
        }
        if reaped {
            self.answered.notify_all();
        }
    }

    /// Notes the generation in the answer to `queued`, which the device just gave back, and
    /// returns the epoch the answer came in. Called under the queue's lock, so answers are seen
    /// in the order the device gave them back, which is the order it carried the commands out.
    fn follow_generation(&self, queued: &Queued) -> u64 {
        let epoch = self.epoch.load(Relaxed);
        if !self.with_generation {
            return epoch;
        }
        // Answers too short to hold a header say nothing, and fail anyway.
        let Some(Ok(resp)) = queued.response() else {
            return epoch;
        };
        // Only answers of a size the driver takes: a bare header, or the full answer.
        if resp.len() != RESP_HDR_LEN && resp.len() != queued.resp_len {
            return epoch;
        }
        let Some(hdr) = resp.get(..RESP_HDR_LEN).and_then(RespHdr::from_bytes_copy) else {
            return epoch;
        };
        let known = u64::from(u32::from_le(hdr.0.generation)) | GENERATION_KNOWN;
        match self.generation.load(Relaxed) {
            current if current == known => epoch,
            0 => {
                self.generation.store(known, Relaxed);
                epoch
            }
            _ => {
                self.generation.store(known, Relaxed);
                let epoch = epoch.wrapping_add(1);
                self.epoch.store(epoch, Relaxed);
                epoch
            }
        }
    }

    /// Checks the status of an answer; returns the answer if it says OK.
    fn check_status<'a>(&self, resp: &'a [u8]) -> Result<&'a [u8]> {
        let Some(hdr) = resp.get(..RESP_HDR_LEN).and_then(RespHdr::from_bytes_copy) else {
            if self.log_allowed() {
                dev_err!(
                    self.dev.as_ref(),
                    "short answer from device ({} bytes)\n",
                    resp.len()
                );
            }
            return Err(EIO);
        };
        match u32::from_le(hdr.0.status) {
            uapi::VIRTIO_BUFSHARE_S_OK => Ok(resp),
            uapi::VIRTIO_BUFSHARE_S_UNSUPPORTED => Err(EOPNOTSUPP),
            uapi::VIRTIO_BUFSHARE_S_INVALID => Err(EINVAL),
            uapi::VIRTIO_BUFSHARE_S_DEVICE_ERROR => Err(EIO),
            uapi::VIRTIO_BUFSHARE_S_NO_BUFFER => Err(ENOENT),
            uapi::VIRTIO_BUFSHARE_S_NO_SPACE => Err(ENOSPC),
            status => {
                if self.log_allowed() {
                    dev_err!(
                        self.dev.as_ref(),
                        "unknown status {:#x} from device\n",
                        status
                    );
                }
                Err(EIO)
            }
        }
    }
}

impl virtio::VirtqueueHandler for Cmdq {
    fn used(&self, _index: usize) {
        if let Some(vqs) = Option::as_mut(&mut *self.vqs.lock()) {
            self.reap(vqs);
        }
    }
}
