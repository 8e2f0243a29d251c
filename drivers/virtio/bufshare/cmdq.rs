// SPDX-License-Identifier: GPL-2.0

//! The command queue: the device's virtqueues, the commands in flight on the first, their
//! answers, and the device's generation as the answers tell it; and, with
//! `VIRTIO_BUFSHARE_F_EVENTS`, the buffers the device writes its events into, on the second.

use core::{
    mem::size_of,
    ptr::NonNull, //
};
use kernel::{
    c_str,
    device::Core,
    devres::Devres,
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
        rcu,
        Arc,
        CondVar,
        CondVarTimeoutResult,
        SpinLockIrq,
        SpinLockIrqGuard, //
    },
    time::{
        delay::fsleep,
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

use crate::{
    commands::{
        self,
        Command,
        Event,
        Reply,
        RespHdr,
        EVENT_LEN, //
    },
    device::BufshareDevice,
};

/// How long a caller waits for the device to answer a command.
const COMMAND_TIMEOUT_MS: u32 = 10_000;

/// Room for the answers of every command but IMPORT_INFO.
const RESP_MAX: usize = 128;

/// Room for the largest answer the driver expects: IMPORT_INFO's, with properties.
pub(crate) const RESP_LARGE: usize =
    size_of::<crate::commands::ImportInfoReplyHdr>() + crate::commands::IMPORT_PROPS_MAX;

/// Room for an answer, of one of two sizes: most answers are small.
enum Resp {
    Small(KBox<Opaque<[u8; RESP_MAX]>>),
    Large(KBox<Opaque<[u8; RESP_LARGE]>>),
}

impl Resp {
    /// Room for `len` bytes.
    fn new(len: usize) -> Result<Self> {
        Ok(if len <= RESP_MAX {
            Resp::Small(KBox::new(Opaque::zeroed(), GFP_KERNEL)?)
        } else if len <= RESP_LARGE {
            Resp::Large(KBox::new(Opaque::zeroed(), GFP_KERNEL)?)
        } else {
            return Err(EINVAL);
        })
    }

    /// Where the device writes.
    fn as_non_null(&self) -> NonNull<u8> {
        match self {
            Resp::Small(b) => NonNull::from(&**b).cast(),
            Resp::Large(b) => NonNull::from(&**b).cast(),
        }
    }

    fn as_ptr(&self) -> *mut u8 {
        self.as_non_null().as_ptr()
    }
}

/// The size of an answer that is a bare header.
const RESP_HDR_LEN: usize = size_of::<RespHdr>();

/// Set in [`Cmdq::generation`] once the device's generation is known.
const GENERATION_KNOWN: u64 = 1 << 32;

/// How many buffers the driver keeps on the event queue.
pub(crate) const EVENT_BUFS: usize = 32;

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
    resp: Resp,
    resp_len: usize,
    used: Atomic<i64>,
    /// The epoch the answer came in; written under the queue's lock, before `used`.
    epoch: Atomic<u64>,
    /// The number of the device's resets when the command was queued ([`Cmdq`]'s `resets`),
    /// written under the queue's lock: if it changed, the reset took the command back unanswered.
    resets: Atomic<u64>,
    /// Sent by [`Cmdq::post`]: nobody waits for the answer.
    posted: bool,
}

impl Queued {
    /// A command the device reads as `req`, expecting an answer of at most `resp_len` bytes;
    /// `posted` if nobody waits for the answer.
    fn new(req: KVec<u8>, resp_len: usize, posted: bool) -> Result<Arc<Self>> {
        if resp_len < RESP_HDR_LEN {
            return Err(EINVAL);
        }
        Ok(Arc::new(
            Queued {
                req,
                resp: Resp::new(resp_len)?,
                resp_len,
                used: Atomic::new(-1),
                epoch: Atomic::new(0),
                resets: Atomic::new(0),
                posted,
            },
            GFP_KERNEL,
        )?)
    }

    /// Makes a buffer of the event queue that the device gave back ready to go on the queue
    /// again: the device writes it anew.
    fn rearm(&self) {
        self.used.store(-1, Relaxed);
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
        // initialised; `used` is within the room (`resp_len`, checked by `Resp::new`).
        Some(Ok(unsafe {
            core::slice::from_raw_parts(self.resp.as_ptr(), used)
        }))
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
        (self.resp.as_non_null(), self.resp_len)
    }
}

type Virtqueues = virtio::Virtqueues<Cmdq, Arc<Queued>>;
type Virtqueue = virtio::Virtqueue<Arc<Queued>>;

/// What [`Cmdq::add`] did with a command.
enum Added {
    /// The ring is full: the command was not queued.
    Full,
    /// Queued; the device wants the notification, if any, sent once the lock is let go.
    Queued(Option<virtio::Notify>),
}

/// The device, as the command queue reaches it.
enum Link {
    /// Commands go on the device's virtqueues, which the driver's unbinding revokes.
    Up(Devres<Virtqueues>),
    /// The device is being reset (the system suspends, the transport resets it): commands wait
    /// for it to come back, until their deadline.
    Suspended,
    /// The device went away.
    Gone,
}

impl Link {
    /// Runs `f` on the virtqueues, locked, while the device is up and the driver bound; `None`
    /// otherwise.
    fn with_vqs<R>(&self, f: impl FnOnce(&mut [Virtqueue]) -> R) -> Option<R> {
        match self {
            Link::Up(vqs) => vqs.try_access_with(|vqs| f(&mut vqs.lock())),
            _ => None,
        }
    }
}

/// The command queue of a device.
///
/// A caller queues its command, kicks the device and sleeps until the answer is there. Answers
/// are taken off the ring by whoever comes first: the interrupt handler, or a caller on its way
/// in or waiting. The device carries commands out in the order it takes them and gives them back
/// in that order, so the answers tell the device's generation in order too.
///
/// # Invariants
///
/// - `link` holds the device's virtqueues while the device is up, and says why not otherwise.
/// - Answers are taken off the ring only by [`Cmdq::reap`], with the lock of `link` held, which
///   wakes every caller sleeping on `answered` once it took any: a caller checks for its answer
///   and goes to sleep without letting go of the lock in between, so no answer goes unseen.
/// - `generation` and `epoch` change only under the same lock: in [`Cmdq::reap`], and when the
///   device is reset ([`Cmdq::suspend`]).
/// - `resets` changes only under the same lock, when the virtqueues are dropped by a reset.
/// - `kicking` goes up only under the same lock, while `link` holds the virtqueues, for a
///   notification that [`Cmdq::submit`] sends once it let go of the lock; it goes down once the
///   notification is sent. Whoever takes the virtqueues out of `link` waits for it to be 0
///   before dropping them ([`Cmdq::wait_kicks`]).
#[pin_data]
pub(crate) struct Cmdq {
    #[pin]
    link: SpinLockIrq<Link>,
    /// Woken when answers were taken off the ring, and when the device went away, was reset or
    /// came back.
    #[pin]
    answered: CondVar,
    dev: ARef<virtio::Device>,
    /// Whether answers carry the device's generation (`VIRTIO_BUFSHARE_F_GENERATION`).
    with_generation: bool,
    /// The device's generation, with [`GENERATION_KNOWN`] set once an answer told it.
    generation: Atomic<u64>,
    /// How many times the answers showed a new generation, or the device was reset under its
    /// buffers.
    epoch: Atomic<u64>,
    /// How many times the device was reset while the driver kept it.
    resets: Atomic<u64>,
    /// How many notifications of the device, prepared with the lock of `link` held, are being
    /// sent without it: the virtqueues are not dropped before they are sent.
    kicking: Atomic<u32>,
    /// The device's log lines, which the device or users can trigger at will.
    #[pin]
    log_limit: RateLimit,
    /// With `VIRTIO_BUFSHARE_F_EVENTS`: the buffers of the event queue, all of them on it while
    /// the device is up. Empty without.
    events: KVec<Arc<Queued>>,
    /// Who the event queue's notifications go to: set once the device is set up, taken when it
    /// goes away.
    #[pin]
    events_to: SpinLockIrq<Option<Arc<BufshareDevice>>>,
}

impl Cmdq {
    /// Sets up the command queue of `vdev`; `with_generation` says whether the device's answers
    /// carry its generation, `with_events` whether it has an event queue.
    pub(crate) fn new(
        vdev: &virtio::Device<Core<'_>>,
        with_generation: bool,
        with_events: bool,
    ) -> Result<Arc<Self>> {
        let mut events = KVec::new();
        if with_events {
            for _ in 0..EVENT_BUFS {
                events.push(Queued::new(KVec::new(), EVENT_LEN, false)?, GFP_KERNEL)?;
            }
        }
        let cmdq = Arc::pin_init(
            pin_init!(Cmdq {
                link <- new_spinlock_irq!(Link::Suspended, "virtio_bufshare:cmdq"),
                answered <- new_condvar!("virtio_bufshare:answered"),
                dev: vdev.into(),
                with_generation,
                generation: Atomic::new(0),
                epoch: Atomic::new(0),
                resets: Atomic::new(0),
                kicking: Atomic::new(0),
                log_limit <- RateLimit::new_default(c_str!("virtio_bufshare")),
                events,
                events_to <- new_spinlock_irq!(None, "virtio_bufshare:events_to"),
            }),
            GFP_KERNEL,
        )?;
        cmdq.connect(vdev)?;
        Ok(cmdq)
    }

    /// Sets up the virtqueues of `vdev`, which has none.
    fn connect(self: &Arc<Self>, vdev: &virtio::Device<Core<'_>>) -> Result {
        let names: &[&'static CStr] = if self.events.is_empty() {
            &[c_str!("cmd")]
        } else {
            &[c_str!("cmd"), c_str!("event")]
        };
        let vqs = Virtqueues::new(vdev, names, self.clone())?;
        let mut link = self.link.lock();
        match &*link {
            Link::Suspended => *link = Link::Up(vqs),
            // Cannot happen: the driver connects a queue it set up or suspended. The virtqueues
            // are dropped outside the lock.
            _ => {
                drop(link);
                drop(vqs);
                return Err(EBUSY);
            }
        }
        drop(link);
        self.answered.notify_all();
        Ok(())
    }

    /// Lets go of the device before it is reset behind the driver (the system suspends, the
    /// transport resets it): drops the virtqueues, which resets the device and takes back the
    /// commands queued. Commands wait for [`Cmdq::resume`] meanwhile, and those taken back are
    /// queued again then.
    ///
    /// The reset makes the device forget its buffers: a new epoch starts.
    pub(crate) fn suspend(&self) {
        let vqs = {
            let mut link = self.link.lock();
            if !matches!(*link, Link::Up(_)) {
                return;
            }
            self.resets.fetch_add(1, Relaxed);
            self.epoch.fetch_add(1, Relaxed);
            core::mem::replace(&mut *link, Link::Suspended)
        };
        self.wait_kicks();
        // Dropped outside the lock: deleting the queues sleeps.
        drop(vqs);
        self.answered.notify_all();
    }

    /// Sets up the virtqueues again after [`Cmdq::suspend`]: the commands waiting go out.
    pub(crate) fn resume(self: &Arc<Self>, vdev: &virtio::Device<Core<'_>>) -> Result {
        self.connect(vdev)
    }

    /// The rate limit of the device's log lines: lines that the device or users can trigger at
    /// will go out only if it allows them, all of them counted together.
    pub(crate) fn log_limit(&self) -> &RateLimit {
        &self.log_limit
    }

    /// Returns how the device reaches memory the driver describes to it by address.
    pub(crate) fn dma_target(&self, vdev: &virtio::Device<Core<'_>>) -> Result<DmaTarget> {
        self.link
            .lock()
            .with_vqs(|vqs| {
                vqs.get_mut(uapi::VIRTIO_BUFSHARE_VQ_CMD as usize)
                    .ok_or(ENODEV)?
                    .dma_target(vdev)
            })
            .ok_or(ENODEV)?
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
        let queued = Queued::new(commands::encode(cmd)?, C::Reply::LEN, false)?;
        let (resp, epoch) = self.submit(&queued, wait)?;
        let resp = self.check_status(resp)?;
        if !C::Reply::fits(resp.len()) {
            if self.log_limit.allow() {
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

    /// Sends `cmd` without waiting for the answer: returns once it is on the ring and the device
    /// was notified. Waiting for room on the ring, or for a suspended device to come back, has
    /// the deadline of [`Cmdq::submit`] and ends with a signal.
    ///
    /// The answer is taken off the ring as any other, in order, and follows the device's
    /// generation; one that does not say OK is logged and otherwise dropped, as is the command
    /// when a reset takes it back unanswered.
    pub(crate) fn post<C: Command>(&self, cmd: &C) -> Result {
        let queued = Queued::new(commands::encode(cmd)?, C::Reply::LEN, true)?;
        let deadline = Self::deadline();
        let mut guard = self.link.lock();
        if let Some(notify) = self.queue(&mut guard, &queued, Wait::Interruptible, deadline)? {
            self.notify_unlocked(guard, notify);
        }
        Ok(())
    }

    /// Drops the virtqueues: the device is reset, queued commands are taken back, and everybody
    /// waiting is woken to find the device gone.
    pub(crate) fn shut_down(&self) {
        let link = core::mem::replace(&mut *self.link.lock(), Link::Gone);
        self.wait_kicks();
        // Dropped outside the lock: deleting the queues sleeps.
        drop(link);
        self.answered.notify_all();
        // No notification comes any more: let go of their receiver.
        let events_to = self.events_to.lock().take();
        drop(events_to);
    }

    /// Has the event queue's notifications go to `device`, until the device goes away.
    pub(crate) fn send_events_to(&self, device: Arc<BufshareDevice>) {
        let mut events_to = self.events_to.lock();
        if !matches!(*self.link.lock(), Link::Gone) {
            *events_to = Some(device);
        }
    }

    /// Puts every buffer of the event queue on it, once the device is ready (at probe, and when
    /// it came back from a reset, which took them back).
    pub(crate) fn stock_events(&self) {
        if self.events.is_empty() {
            return;
        }
        let stocked = self.link.lock().with_vqs(|vqs| {
            let vq = vqs.get_mut(uapi::VIRTIO_BUFSHARE_VQ_EVENT as usize)?;
            for buf in &self.events {
                buf.rearm();
                if let Err((_, e)) = vq.add(buf.clone(), GFP_ATOMIC) {
                    return Some(Err(e));
                }
            }
            Some(Ok(vq.kick()))
        });
        if let Some(Some(Err(_) | Ok(false))) = stocked {
            if self.log_limit.allow() {
                dev_err!(self.dev.as_ref(), "cannot put buffers on the event queue\n");
            }
        }
    }

    /// Takes the events the device wrote off the event queue into `out`, as many as it has room
    /// for, after the answers the device gave before them, and puts their buffers back on the
    /// queue. Nothing is allocated: events beyond the room of `out` wait for the next call.
    ///
    /// Events that are not valid are dropped, with a (rate-limited) log line.
    pub(crate) fn take_events(&self, out: &mut KVec<Event>) {
        out.clear();
        self.link.lock().with_vqs(|vqs| {
            // Answers first: the device gives a command's answer back before the events that
            // follow from it.
            self.reap(vqs);
            let Some(vq) = vqs.get_mut(uapi::VIRTIO_BUFSHARE_VQ_EVENT as usize) else {
                return;
            };
            let mut taken = false;
            // A buffer put back may be used again meanwhile: stop when `out` is full, the rest
            // waits for the next call.
            while out.len() < out.capacity() {
                let Some((buf, len)) = vq.get_buf() else {
                    break;
                };
                buf.used.store(i64::from(len), Release);
                let event = buf.response().and_then(Result::ok).map(Event::read);
                match event {
                    // Cannot fail: `out` has room for it.
                    Some(Ok(event)) => {
                        let _ = out.push(event, GFP_NOWAIT);
                    }
                    _ => {
                        if self.log_limit.allow() {
                            dev_err!(self.dev.as_ref(), "bad event from device ({} bytes)\n", len);
                        }
                    }
                }
                buf.rearm();
                if let Err((_, e)) = vq.add(buf, GFP_ATOMIC) {
                    if self.log_limit.allow() {
                        dev_err!(self.dev.as_ref(), "event buffer lost ({:?})\n", e);
                    }
                }
                taken = true;
            }
            if taken && !vq.kick() && self.log_limit.allow() {
                dev_err!(self.dev.as_ref(), "device is broken\n");
            }
        });
    }

    /// Follows the device's generation as a LOST event tells it: the device lost its buffers,
    /// and a new epoch starts unless an answer already showed that generation.
    pub(crate) fn lost(&self, generation: u32) {
        let _guard = self.link.lock();
        let known = u64::from(generation) | GENERATION_KNOWN;
        if !self.with_generation || self.generation.load(Relaxed) != known {
            self.generation.store(known, Relaxed);
            self.epoch.fetch_add(1, Relaxed);
        }
    }

    /// Queues `queued` and sleeps until the device answers; returns the answer and its epoch.
    ///
    /// The command has one deadline, [`COMMAND_TIMEOUT_MS`] from now, for finding room on the
    /// ring and for the answer, however often the caller is woken meanwhile. While the device is
    /// suspended it waits for the device to come back; a reset that took the command back
    /// unanswered has it queued again.
    fn submit<'a>(&self, queued: &'a Arc<Queued>, wait: Wait) -> Result<(&'a [u8], u64)> {
        let deadline = Self::deadline();
        let mut guard = self.link.lock();
        loop {
            if let Some(notify) = self.queue(&mut guard, queued, wait, deadline)? {
                self.notify_unlocked(guard, notify);
                guard = self.link.lock();
            }
            if let Some(answer) = self.answer(&mut guard, queued, wait, deadline)? {
                return Ok(answer);
            }
        }
    }

    /// The deadline of a command queued now: [`COMMAND_TIMEOUT_MS`] from now.
    fn deadline() -> Instant<Monotonic> {
        Instant::<Monotonic>::now() + Delta::from_millis(COMMAND_TIMEOUT_MS.into())
    }

    /// Lets go of the lock `guard` holds, then sends `notify`, which [`Cmdq::queue`] prepared and
    /// counted in `kicking`.
    fn notify_unlocked(&self, guard: SpinLockIrqGuard<'_, Link>, notify: virtio::Notify) {
        // Sent without the lock, which callers and the interrupt handler need meanwhile: a
        // notification traps to the hypervisor. The RCU read-side critical section, entered
        // before the lock is let go (which was one too), keeps an unbinding from revoking the
        // virtqueues before it is sent.
        let rcu = rcu::read_lock();
        drop(guard);
        // SAFETY: The virtqueues stay live until the notification is sent: `kicking` counts it,
        // and whoever takes them out of `link` waits for it (the type invariants), and an
        // unbinding's revocation waits for `rcu`.
        let sent = unsafe { notify.send() };
        self.kicking.fetch_sub(1, Release);
        drop(rcu);
        if !sent && self.log_limit.allow() {
            dev_err!(self.dev.as_ref(), "device is broken\n");
        }
    }

    /// Waits until the notifications that callers prepared under the lock are sent, once
    /// `link` no longer holds the virtqueues (no more can be prepared): they may then be dropped.
    fn wait_kicks(&self) {
        while self.kicking.load(Acquire) != 0 {
            fsleep(Delta::from_micros(10));
        }
    }

    /// Queues `queued`, waiting for room if the ring is full, or for the device to come back.
    /// Returns the notification of the device to send once the lock is let go, if the device
    /// wants one, counted in `kicking`.
    fn queue(
        &self,
        guard: &mut SpinLockIrqGuard<'_, Link>,
        queued: &Arc<Queued>,
        wait: Wait,
        deadline: Instant<Monotonic>,
    ) -> Result<Option<virtio::Notify>> {
        loop {
            if matches!(**guard, Link::Gone) {
                return Err(ENODEV);
            }
            // `None` while the device is suspended; an unbinding revoked the virtqueues if they
            // are gone while the device is up.
            let added = guard.with_vqs(|vqs| self.add(vqs, queued));
            match added {
                Some(Ok(Added::Queued(notify))) => return Ok(notify),
                Some(Ok(Added::Full)) => {}
                Some(Err(e)) => return Err(e),
                None if matches!(**guard, Link::Up(_)) => return Err(ENODEV),
                None => {}
            }
            self.sleep(guard, wait, deadline)?;
        }
    }

    /// Puts `queued` on the ring and prepares the notification of the device, if it wants one
    /// (counted in `kicking`).
    fn add(&self, vqs: &mut [Virtqueue], queued: &Arc<Queued>) -> Result<Added> {
        self.reap(vqs);
        let vq = vqs
            .get_mut(uapi::VIRTIO_BUFSHARE_VQ_CMD as usize)
            .ok_or(ENODEV)?;
        match vq.add(queued.clone(), GFP_ATOMIC) {
            Ok(()) => {
                queued.resets.store(self.resets.load(Relaxed), Relaxed);
                let notify = vq.kick_prepare();
                if notify.is_some() {
                    // INVARIANT: Under the lock, with the virtqueues in `link`.
                    self.kicking.fetch_add(1, Relaxed);
                }
                Ok(Added::Queued(notify))
            }
            Err((_, e)) if e == ENOSPC => Ok(Added::Full),
            Err((_, e)) => Err(e),
        }
    }

    /// Waits for the answer to `queued`; `None` if a reset took the command back unanswered.
    ///
    /// The command stays owned by the virtqueue if we give up: the device may still write its
    /// answer, and the memory stays valid for it.
    fn answer<'a>(
        &self,
        guard: &mut SpinLockIrqGuard<'_, Link>,
        queued: &'a Arc<Queued>,
        wait: Wait,
        deadline: Instant<Monotonic>,
    ) -> Result<Option<(&'a [u8], u64)>> {
        loop {
            let up = guard.with_vqs(|vqs| self.reap(vqs)).is_some();
            if let Some(resp) = queued.response() {
                return Ok(Some((resp?, queued.epoch.load(Relaxed))));
            }
            // Gone, or its virtqueues revoked by the driver's unbinding.
            if !up && !matches!(**guard, Link::Suspended) {
                return Err(ENODEV);
            }
            if queued.resets.load(Relaxed) != self.resets.load(Relaxed) {
                return Ok(None);
            }
            if let Err(e) = self.sleep(guard, wait, deadline) {
                // The answer may have come with the timeout or the signal: look once more.
                guard.with_vqs(|vqs| self.reap(vqs));
                if let Some(resp) = queued.response() {
                    return Ok(Some((resp?, queued.epoch.load(Relaxed))));
                }
                if e == ETIMEDOUT {
                    if self.log_limit.allow() {
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
        guard: &mut SpinLockIrqGuard<'_, Link>,
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
    fn reap(&self, vqs: &mut [Virtqueue]) {
        let Some(vq) = vqs.get_mut(uapi::VIRTIO_BUFSHARE_VQ_CMD as usize) else {
            return;
        };
        let mut reaped = false;
        while let Some((queued, len)) = vq.get_buf() {
            queued.used.store(i64::from(len), Release);
            // Waiters read the epoch with the lock held, as it is here.
            queued.epoch.store(self.follow_generation(&queued), Relaxed);
            if queued.posted {
                self.posted_answer(&queued);
            }
            // Also for a posted command: its place on the ring is free for those waiting.
            reaped = true;
        }
        if reaped {
            self.answered.notify_all();
        }
    }

    /// Checks the answer to a command sent by [`Cmdq::post`], which nobody waits for: logs one
    /// that does not say OK.
    fn posted_answer(&self, queued: &Queued) {
        let result = match queued.response() {
            Some(Ok(resp)) => self.check_status(resp).map(|_| ()),
            Some(Err(e)) => Err(e),
            None => return,
        };
        if let Err(e) = result {
            if self.log_limit.allow() {
                dev_warn!(
                    self.dev.as_ref(),
                    "a command sent without waiting failed ({:?}): dropped\n",
                    e
                );
            }
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
            if self.log_limit.allow() {
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
            uapi::VIRTIO_BUFSHARE_S_DENIED => Err(EACCES),
            status => {
                if self.log_limit.allow() {
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
    fn used(&self, index: usize) {
        if index == uapi::VIRTIO_BUFSHARE_VQ_EVENT as usize {
            // Events are handled where sleeping is allowed.
            if let Some(device) = &*self.events_to.lock() {
                BufshareDevice::queue_events(device);
            }
            return;
        }
        self.link.lock().with_vqs(|vqs| self.reap(vqs));
    }
}
