// SPDX-License-Identifier: GPL-2.0

//! Events: what the device says on its event queue (`VIRTIO_BUFSHARE_F_EVENTS`), and what
//! applications read from their open file.
//!
//! The event queue's notifications queue [`BufshareDevice`]'s work item, which takes the events
//! off the queue (after the answers the device gave before them) and handles them where sleeping
//! is allowed:
//!
//! - RELEASED goes to the owner of the buffer, if the driver sent that update;
//! - FREED lets go of an unregistered buffer's memory, which the driver kept (draining) since the
//!   device answered UNREGISTER, and goes to its owner; a FREED for any other buffer (one still
//!   registered, say) lets nothing go;
//! - CONSUMERS goes to the open files that follow the application: those that registered under
//!   it, or asked how many consumers it has;
//! - LOST starts a new epoch, so that the buffers are registered again, keeps the draining
//!   buffers until the device is reset (their host parties may still hold them), and goes to
//!   every open file;
//! - OVERFLOW (CONSUMERS events dropped by the device) has the driver ask again for the
//!   consumers of every application followed.
//!
//! RELEASED and FREED events about buffers or updates the driver does not know are ignored, with a
//! (rate-limited) log line, as are malformed events ([`crate::cmdq::Cmdq::take_events`]).
//!
//! Each open file has a bounded queue of events: RELEASED events of a buffer merge (the highest
//! number stands for all), as do CONSUMERS events of an application (the last count stands);
//! past [`EVENTS_PER_FILE`] events, the next ones are counted and dropped, and the reader gets one
//! OVERFLOW record once it read what came before.

use kernel::{
    c_str, new_mutex,
    prelude::*,
    sync::{
        atomic::Relaxed,
        poll::PollCondVarBox,
        Arc,
        CondVarTimeoutResult,
        Mutex, //
    },
    time::{
        msecs_to_jiffies,
        Delta,
        Instant,
        Monotonic, //
    },
    uapi,
    workqueue::{
        self,
        WorkItem, //
    },
};

use super::{
    BufshareDevice,
    Drain,
    Owner, //
};
use crate::{
    buffer::Buffer,
    cmdq::Wait,
    cmdq::EVENT_BUFS,
    commands::{
        Event,
        GetConsumers, //
    },
    props::APP_LEN,
};

/// Most events queued for one open file before the next ones are dropped.
pub(crate) const EVENTS_PER_FILE: usize = 256;

/// Most applications one open file follows the consumers of.
const APPS_PER_FILE: usize = 64;

/// How long an unregistration waits for the host to let go of the buffer.
const FREED_TIMEOUT_MS: u32 = 10_000;

/// An event as applications read it.
pub(crate) type Record = uapi::bufshare_event;

/// A record of type `type_`, its other fields 0.
fn record(type_: u32) -> Record {
    Record {
        type_,
        consumers: 0,
        id: 0,
        seqno: 0,
        application: [0; APP_LEN],
    }
}

/// The record of an event about an import: `struct bufshare_import_event` is read in the place
/// of a `struct bufshare_event`.
pub(super) fn import_record(rec: uapi::bufshare_import_event) -> Record {
    // SAFETY: Both are structures of integers (and arrays of them) without padding, of the same
    // size (which `transmute` checks): every bit pattern of one is a valid value of the other.
    unsafe { core::mem::transmute::<uapi::bufshare_import_event, Record>(rec) }
}

/// The events of an open file, waiting to be read.
///
/// # Invariants
///
/// `head <= records.len()`, and `records.len() - head <= EVENTS_PER_FILE`: the records from
/// `head` on are those not read yet, oldest first. While `dropped` is not 0, no record is added
/// (records already queued may still merge).
pub(crate) struct EventQueue {
    records: KVec<Record>,
    head: usize,
    /// Records dropped since the queue was full, reported by one OVERFLOW record once those
    /// queued before were read.
    dropped: u64,
    /// The applications whose CONSUMERS events the file gets.
    apps: KVec<[u8; APP_LEN]>,
    /// Set when the device went away: no more events come.
    gone: bool,
}

impl EventQueue {
    pub(crate) fn new() -> Self {
        EventQueue {
            records: KVec::new(),
            head: 0,
            dropped: 0,
            apps: KVec::new(),
            gone: false,
        }
    }

    /// Whether a read would return a record now.
    pub(crate) fn readable(&self) -> bool {
        self.head < self.records.len() || self.dropped != 0
    }

    /// Whether no more events come.
    pub(crate) fn gone(&self) -> bool {
        self.gone
    }

    /// How many records wait to be read.
    pub(crate) fn len(&self) -> usize {
        self.records.len() - self.head + usize::from(self.dropped != 0)
    }

    /// Whether the file follows `application`.
    fn follows(&self, application: &[u8; APP_LEN]) -> bool {
        self.apps.iter().any(|a| a == application)
    }

    /// Has the file follow `application`; past [`APPS_PER_FILE`], it does not.
    pub(crate) fn follow(&mut self, application: &[u8; APP_LEN]) {
        if !self.follows(application) && self.apps.len() < APPS_PER_FILE {
            // Failing to allocate only means that the file does not follow this one.
            let _ = self.apps.push(*application, GFP_KERNEL);
        }
    }

    /// Queues `rec`, merged with a queued record it supersedes, or counts it as dropped.
    fn push(&mut self, rec: Record) {
        let queued = &mut self.records[self.head..];
        let same = queued.iter_mut().find(|q| {
            q.type_ == rec.type_
                && match rec.type_ {
                    uapi::BUFSHARE_EVENT_RELEASED => q.id == rec.id,
                    uapi::BUFSHARE_EVENT_CONSUMERS => q.application == rec.application,
                    // The import's id is where the buffer's is.
                    uapi::BUFSHARE_EVENT_IMPORT_UPDATED => q.id == rec.id,
                    _ => false,
                }
        });
        if let Some(q) = same {
            q.seqno = q.seqno.max(rec.seqno);
            q.consumers = rec.consumers;
            return;
        }
        if self.dropped != 0 || queued.len() >= EVENTS_PER_FILE {
            self.dropped += 1;
            return;
        }
        if self.head == self.records.len() {
            self.records.clear();
            self.head = 0;
        } else if self.records.len() == self.records.capacity() && self.head > 0 {
            // Move what is left to the front rather than grow.
            let len = self.records.len();
            self.records.copy_within(self.head..len, 0);
            self.records.truncate(len - self.head);
            self.head = 0;
        }
        // INVARIANT: fewer than `EVENTS_PER_FILE` records were queued.
        if self.records.push(rec, GFP_KERNEL).is_err() {
            self.dropped = 1;
        }
    }

    /// Takes up to `max` records, oldest first, into `out`.
    pub(crate) fn take(&mut self, out: &mut KVec<Record>, max: usize) -> Result {
        while out.len() < max && self.head < self.records.len() {
            out.push(self.records[self.head], GFP_KERNEL)?;
            self.head += 1;
        }
        if out.len() < max && self.head == self.records.len() && self.dropped != 0 {
            let mut overflow = record(uapi::BUFSHARE_EVENT_OVERFLOW);
            overflow.seqno = self.dropped;
            out.push(overflow, GFP_KERNEL)?;
            self.dropped = 0;
        }
        Ok(())
    }
}

/// The events of an open file, and what its readers wait on.
#[pin_data]
pub(crate) struct FileEvents {
    #[pin]
    pub(crate) queue: Mutex<EventQueue>,
    /// Signalled when a record is queued, and when the device goes away.
    pub(crate) readable: PollCondVarBox,
}

impl FileEvents {
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let readable = PollCondVarBox::new(
            c_str!("virtio_bufshare:readable"),
            kernel::static_lock_class!(),
        )?;
        Ok(try_pin_init!(FileEvents {
            queue <- new_mutex!(EventQueue::new(), "virtio_bufshare:events"),
            readable,
        }))
    }

    /// Queues `rec` for the file's readers.
    pub(super) fn send(&self, rec: Record) {
        self.queue.lock().push(rec);
        self.readable.notify_all();
    }

    /// No more events come: wakes the readers.
    pub(crate) fn end(&self) {
        self.queue.lock().gone = true;
        self.readable.notify_all();
    }
}

kernel::impl_has_work! {
    impl HasWork<Self> for BufshareDevice { self.events_work }
}

impl WorkItem for BufshareDevice {
    type Pointer = Arc<BufshareDevice>;

    fn run(this: Arc<BufshareDevice>) {
        let Ok(mut events) = KVec::with_capacity(EVENT_BUFS, GFP_KERNEL) else {
            // The events stay on the queue until the next notification.
            return;
        };
        loop {
            this.cmdq.take_events(&mut events);
            if events.is_empty() {
                break;
            }
            for event in events.iter() {
                this.handle(*event);
            }
        }
    }
}

impl BufshareDevice {
    /// Has the events on the event queue handled: called when the device notifies it.
    pub(crate) fn queue_events(this: &Arc<Self>) {
        // Already queued otherwise: it takes every event there is when it runs.
        let _ = workqueue::system_percpu().enqueue(this.clone());
    }

    /// Waits until the work item that handles events is done, once nothing queues it any more.
    pub(super) fn flush_events(&self) {
        self.events_work.flush();
    }

    /// Handles one event of the device.
    fn handle(&self, event: Event) {
        match event {
            Event::Released { id, seqno } => self.released(id, seqno),
            Event::Freed { id } => self.freed(id),
            Event::Consumers {
                application,
                consumers,
            } => self.send_consumers(&application, consumers),
            Event::Lost { generation } => {
                self.cmdq.lost(generation);
                self.keep_draining_until_reset();
                self.end_imports(false);
                for owner in self.owners_now().iter() {
                    owner.events.send(record(uapi::BUFSHARE_EVENT_LOST));
                }
                // Registers them again now.
                self.restore_if_lost();
            }
            Event::Overflow => self.ask_consumers_again(),
            Event::Import(event) => self.handle_import(event),
        }
    }

    /// The open file `id`, if it is still open.
    pub(super) fn owner(&self, id: u64) -> Option<Arc<Owner>> {
        self.owners.lock().iter().find(|o| o.id == id).cloned()
    }

    /// The open files now.
    fn owners_now(&self) -> KVec<Arc<Owner>> {
        let mut now = KVec::new();
        // Without memory, no open file gets this event.
        let _ = now.extend_from_slice(&self.owners.lock(), GFP_KERNEL);
        now
    }

    /// Sends a CONSUMERS record to the open files that follow `application`.
    fn send_consumers(&self, application: &[u8; APP_LEN], consumers: u32) {
        for owner in self.owners_now().iter() {
            if !owner.events.queue.lock().follows(application) {
                continue;
            }
            let mut rec = record(uapi::BUFSHARE_EVENT_CONSUMERS);
            rec.consumers = consumers;
            rec.application = *application;
            owner.events.send(rec);
        }
    }

    /// Asks the device again for the consumers of every application followed, after it dropped
    /// CONSUMERS events.
    ///
    /// Each application is asked about once, however many files follow it: [`Self::send_consumers`]
    /// tells them all.
    fn ask_consumers_again(&self) {
        let mut apps: KVec<[u8; APP_LEN]> = KVec::new();
        for owner in self.owners_now().iter() {
            for a in owner.events.queue.lock().apps.iter() {
                // Without memory, the applications left out are not asked about.
                if !apps.contains(a) && apps.push(*a, GFP_KERNEL).is_err() {
                    break;
                }
            }
        }
        for app in apps.iter() {
            if let Ok(n) = self.consumers_of(app) {
                self.send_consumers(app, n);
            }
        }
    }

    /// Asks the device how many consumers `application` has.
    pub(super) fn consumers_of(&self, application: &[u8; APP_LEN]) -> Result<u32> {
        if !self.features.events {
            return Err(EOPNOTSUPP);
        }
        let answer = self
            .cmdq
            .send(&GetConsumers { application }, Wait::Interruptible)?;
        Ok(u32::from_le(answer.reply.0.consumers))
    }

    /// RELEASED: every host party is done with update `seqno` of buffer `id`, and those before.
    ///
    /// Goes to the buffer's owner, unless the driver does not know the buffer (neither registered
    /// nor being drained) or never sent that update (0, or beyond the buffer's last number): the
    /// owner would take it for a frame the host is done with. Those are ignored, with a log line.
    fn released(&self, id: u64, seqno: u64) {
        let found = {
            let buffers = self.buffers.lock();
            buffers
                .tree
                .get(&id)
                .or_else(|| buffers.draining.get(&id).map(|d| &d.buf))
                .map(|b| (b.owner, b.seqno.load(Relaxed)))
        };
        let Some((owner, last)) = found else {
            if self.cmdq.log_limit().allow() {
                dev_warn!(
                    self.dev.as_ref(),
                    "ignored RELEASED of buffer {}: no such buffer\n",
                    id
                );
            }
            return;
        };
        // The number is taken before the UPDATE goes out: `last` covers every update sent.
        if seqno == 0 || seqno > last {
            if self.cmdq.log_limit().allow() {
                dev_warn!(
                    self.dev.as_ref(),
                    "ignored RELEASED of buffer {}: update {} was never sent (last {})\n",
                    id,
                    seqno,
                    last
                );
            }
            return;
        }
        let Some(owner) = self.owner(owner) else {
            return;
        };
        let mut rec = record(uapi::BUFSHARE_EVENT_RELEASED);
        rec.id = id;
        rec.seqno = seqno;
        owner.events.send(rec);
    }

    /// FREED: the host let go of the unregistered buffer `id`.
    ///
    /// Ignored, with a log line, unless the buffer is being drained: a FREED for a buffer still
    /// registered, never registered, or kept until the device is reset lets nothing go.
    fn freed(&self, id: u64) {
        let (draining, drain) = {
            let mut buffers = self.buffers.lock();
            match buffers.draining.get_mut(&id) {
                None => (false, None),
                // The answer to UNREGISTER is in, but its caller has not seen it yet: it lets the
                // memory go when it does.
                Some(d) if !d.answered => {
                    d.freed = true;
                    (true, None)
                }
                Some(_) => (true, buffers.take_draining(id)),
            }
        };
        if !draining {
            if self.cmdq.log_limit().allow() {
                dev_warn!(
                    self.dev.as_ref(),
                    "ignored FREED of buffer {}: not being unregistered\n",
                    id
                );
            }
            return;
        }
        let Some(drain) = drain else {
            return;
        };
        self.drained(drain);
    }

    /// Lets go of `drain`'s memory, which the host no longer holds: uncharges its owner and tells
    /// it, if the buffer was charged (the owner knows it) and the owner is still open.
    ///
    /// `drain` was taken out of the draining buffers with [`Buffers::take_draining`]: the memory
    /// goes first, then the owner hears of it, then the waiters.
    pub(super) fn drained(&self, drain: Drain) {
        let Drain { buf, charged, .. } = drain;
        let (id, owner, size) = (buf.id, buf.owner, buf.size);
        drop::<Arc<Buffer>>(buf);
        if let Some(owner) = self.owner(owner).filter(|_| charged) {
            owner.uncharge(size);
            let mut rec = record(uapi::BUFSHARE_EVENT_FREED);
            rec.id = id;
            owner.events.send(rec);
        }
        let mut buffers = self.buffers.lock();
        buffers.freeing -= 1;
        self.drained.notify_all();
    }

    /// LOST: the buffers being drained were the lost device's, whose host parties may still hold
    /// them; they are kept until the device is reset.
    fn keep_draining_until_reset(&self) {
        let draining = {
            let mut buffers = self.buffers.lock();
            buffers.draining.take()
        };
        for drain in draining.values() {
            self.keep_until_reset(drain.buf.clone());
        }
        drop(draining);
        let _buffers = self.buffers.lock();
        self.drained.notify_all();
    }

    /// Waits until the host let go of the unregistered buffer `id`, for at most
    /// [`FREED_TIMEOUT_MS`]: `ETIMEDOUT` if it did not (it is kept until then), `EINTR` on a
    /// signal.
    pub(super) fn wait_freed(&self, id: u64) -> Result {
        let deadline = Instant::<Monotonic>::now() + Delta::from_millis(FREED_TIMEOUT_MS.into());
        let mut buffers = self.buffers.lock();
        loop {
            if buffers.gone {
                // The device was reset: it let go of everything.
                return Ok(());
            }
            if buffers.zombies.iter().any(|b| b.id == id) {
                // Kept until the device is reset.
                return Err(ETIMEDOUT);
            }
            // Out of the draining buffers, and its memory gone.
            if buffers.draining.get(&id).is_none() && buffers.freeing == 0 {
                return Ok(());
            }
            let left = deadline - Instant::<Monotonic>::now();
            if left.is_negative() || left.is_zero() {
                return Err(ETIMEDOUT);
            }
            let ms = u32::try_from(left.as_millis_ceil()).unwrap_or(FREED_TIMEOUT_MS);
            match self
                .drained
                .wait_interruptible_timeout(&mut buffers, msecs_to_jiffies(ms))
            {
                CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
                CondVarTimeoutResult::Timeout | CondVarTimeoutResult::Woken { .. } => {}
            }
        }
    }
}
