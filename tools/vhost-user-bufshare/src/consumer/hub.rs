// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Dispatch: the buffers each guest handed over, the consumers, and a
//! bounded queue of events per consumer.
//!
//! Each guest's buffer table tells its [`GuestEvents`] about its changes,
//! with the table locked. The hub keeps a mirror of the buffers it handed
//! over (for the consumers that subscribe later) and puts an event in the
//! queue of each consumer subscribed to the buffer's application. Nothing
//! here blocks on a consumer: a consumer's thread takes the events out of
//! its queue ([`ConsumerQueue::pop`]) and sends them.
//!
//! Locks are taken in this order: a guest's state, the hub, a queue.
//!
//! A queue holds at most `limit` events of each guest, besides the ADDs of
//! the buffers that existed when the consumer subscribed. An event that
//! finds its guest's share full overflows it: that guest's events are
//! dropped from the queue, and replaced by a RESET of the guest (if the
//! consumer holds any of its buffers) and an ADD of each buffer the guest
//! has now ([`ConsumerQueue::resync`]). The consumer stays connected, and
//! the other guests' events stay as they are: one guest's traffic never
//! costs a consumer its connection, nor another guest's events. Events
//! that no longer matter are withdrawn (see [`ConsumerQueue::push`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bufshare_consumer::props::is_name;
use bufshare_consumer::wire::MAX_PROPS_SIZE;
use bufshare_consumer::{
    Add, ErrorMessage, Event, MemoryForm, Message, Properties, PropertiesChanged, Remove, Reset,
    ResetReason, Update,
};
use log::{debug, warn};
use nix::sys::eventfd::{EfdFlags, EventFd};
use vm_memory::GuestMemoryMmap;

use super::access::Applications;
use super::export::{Export, HandOverError, Receiver, Udmabuf};
use crate::buffers::{Buffer, TableObserver, UpdateInfo};
use crate::holders::{HolderId, Holders, Subscribed, Subscriptions};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The holders of each guest's buffers, by guest, and the consumers'
/// subscriptions: what a consumer's queue reports to as it hands buffers
/// over. Its lock is taken alone, or last, and only to look a guest up.
#[derive(Debug, Default)]
pub struct HolderRegistry {
    guests: Mutex<BTreeMap<Arc<str>, Arc<Holders>>>,
    subscriptions: Arc<Subscriptions>,
}

impl HolderRegistry {
    /// The holders of `guest`'s buffers.
    pub fn get(&self, guest: &str) -> Option<Arc<Holders>> {
        lock(&self.guests).get(guest).cloned()
    }

    /// Every guest's, by name.
    pub fn all(&self) -> Vec<(Arc<str>, Arc<Holders>)> {
        lock(&self.guests)
            .iter()
            .map(|(g, h)| (Arc::clone(g), Arc::clone(h)))
            .collect()
    }

    /// The consumers' subscriptions.
    pub fn subscriptions(&self) -> &Arc<Subscriptions> {
        &self.subscriptions
    }
}

/// An event waiting in a consumer's queue.
#[derive(Clone, Debug)]
pub enum Item {
    /// ADD.
    Add {
        /// The guest.
        guest: Arc<str>,
        /// The buffer.
        id: u64,
        /// Its application.
        application: Arc<str>,
        /// Its size.
        size: u64,
        /// Its last update's number.
        seqno: u64,
        /// Its properties.
        props: Arc<Properties>,
        /// Its memory.
        export: Arc<Export>,
    },
    /// UPDATE.
    Update {
        /// The guest.
        guest: Arc<str>,
        /// The buffer.
        id: u64,
        /// What changed.
        info: UpdateInfo,
    },
    /// PROPERTIES.
    Properties {
        /// The guest.
        guest: Arc<str>,
        /// The buffer.
        id: u64,
        /// Its properties.
        props: Arc<Properties>,
    },
    /// REMOVE.
    Remove {
        /// The guest.
        guest: Arc<str>,
        /// The buffer.
        id: u64,
    },
    /// RESET.
    Reset {
        /// The guest.
        guest: Arc<str>,
        /// Why.
        reason: ResetReason,
    },
}

impl Item {
    /// The guest it is about.
    pub fn guest(&self) -> &Arc<str> {
        match self {
            Item::Add { guest, .. }
            | Item::Update { guest, .. }
            | Item::Properties { guest, .. }
            | Item::Remove { guest, .. }
            | Item::Reset { guest, .. } => guest,
        }
    }

    /// The buffer it is about, if one.
    pub fn id(&self) -> Option<u64> {
        match self {
            Item::Add { id, .. }
            | Item::Update { id, .. }
            | Item::Properties { id, .. }
            | Item::Remove { id, .. } => Some(*id),
            Item::Reset { .. } => None,
        }
    }

    /// Whether it is about buffer `id` of `guest`.
    fn is_about(&self, guest: &str, id: u64) -> bool {
        &**self.guest() == guest && self.id() == Some(id)
    }

    /// The message to send to `to`; an ADD's memory as `udmabuf` allows
    /// and `to` may take ([`Export::memory`]): else why the ADD cannot go.
    pub fn to_message<'a>(
        &'a self,
        udmabuf: Option<&Udmabuf>,
        to: &Receiver,
    ) -> Result<Message<BorrowedFd<'a>>, HandOverError> {
        let event = match self {
            Item::Add {
                guest,
                id,
                application,
                size,
                seqno,
                props,
                export,
            } => Event::Add(Add {
                guest: guest.to_string(),
                buffer_id: *id,
                application: application.to_string(),
                size: *size,
                seqno: *seqno,
                properties: (**props).clone(),
                memory: export.memory(udmabuf, to)?,
            }),
            Item::Update { guest, id, info } => Event::Update(Update {
                guest: guest.to_string(),
                buffer_id: *id,
                seqno: info.seqno,
                range: info.range,
                rect: info.rect,
            }),
            Item::Properties { guest, id, props } => Event::Properties(PropertiesChanged {
                guest: guest.to_string(),
                buffer_id: *id,
                properties: (**props).clone(),
            }),
            Item::Remove { guest, id } => Event::Remove(Remove {
                guest: guest.to_string(),
                buffer_id: *id,
            }),
            Item::Reset { guest, reason } => Event::Reset(Reset {
                guest: guest.to_string(),
                reason: *reason,
            }),
        };
        Ok(Message::Event(event))
    }
}

/// What a consumer's thread does next.
#[derive(Debug)]
pub enum Next {
    /// Send this event.
    Item(Item),
    /// Send this error, then close the connection.
    End(ErrorMessage),
    /// Nothing to send: wait for the queue's wake-up descriptor.
    Idle,
    /// The error was taken: close the connection.
    Done,
}

/// What became of an event given to [`ConsumerQueue::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued, or not needed (withdrawn with what it made pointless, or
    /// about nothing the consumer has).
    Done,
    /// Not queued: its guest's share of the queue is full. The hub
    /// resynchronises the guest ([`ConsumerQueue::resync`]).
    Overflow,
    /// The consumer is done with: forget it.
    Closed,
}

#[derive(Debug)]
struct Entry {
    item: Item,
    /// One of the ADDs (and RESETs) queued on subscription or
    /// resynchronisation, which the limit does not count.
    snapshot: bool,
}

#[derive(Debug, Default)]
struct QueueState {
    entries: VecDeque<Entry>,
    /// Entries of each guest that are not from a subscription or a
    /// resynchronisation.
    live: HashMap<Arc<str>, usize>,
    /// The buffers of each guest whose ADD was taken, and whose REMOVE or
    /// RESET was not.
    held: HashMap<Arc<str>, HashSet<u64>>,
    /// The buffers of each guest whose ADD is queued.
    adds: HashMap<Arc<str>, HashSet<u64>>,
    /// The error that ends the connection at once, dropping what is
    /// queued, once there is one.
    end: Option<ErrorMessage>,
    /// The error that ends the connection after what is queued.
    closing: Option<ErrorMessage>,
    /// Whether the error was taken.
    done: bool,
    /// Version 3: the buffers whose REMOVE (or RESET) was taken, with how
    /// many CLOSED the consumer owes for them (the instances it held then)
    /// and by when it must have said them.
    deadlines: BTreeMap<(Arc<str>, u64), (u32, Instant)>,
}

impl QueueState {
    /// The consumer took the end (REMOVE, RESET) of buffer `id` of
    /// `guest`, of which it holds `instances`: it owes as many CLOSED, by
    /// `deadline` (or an earlier one it owes already).
    fn owe(&mut self, guest: &Arc<str>, id: u64, instances: u32, deadline: Instant) {
        if instances == 0 {
            return;
        }
        let owed = self
            .deadlines
            .entry((Arc::clone(guest), id))
            .or_insert((0, deadline));
        owed.0 = instances;
    }
}

impl QueueState {
    /// Withdraws the entries from the `from`th on that `f` picks; returns
    /// the buffers of the UPDATEs withdrawn, by guest.
    fn withdraw(&mut self, from: usize, f: impl Fn(&Item) -> bool) -> Vec<(Arc<str>, u64)> {
        let live = &mut self.live;
        let adds = &mut self.adds;
        let mut updates = Vec::new();
        let mut index = 0;
        self.entries.retain(|e| {
            index += 1;
            if index <= from || !f(&e.item) {
                return true;
            }
            if let Item::Update { guest, id, .. } = &e.item {
                updates.push((Arc::clone(guest), *id));
            }
            if let Item::Add { guest, id, .. } = &e.item {
                if let Some(ids) = adds.get_mut(guest) {
                    ids.remove(id);
                }
            }
            if !e.snapshot {
                if let Some(n) = live.get_mut(e.item.guest()) {
                    *n -= 1;
                }
            }
            false
        });
        updates
    }

    /// Live entries of `guest`.
    fn live(&self, guest: &str) -> usize {
        self.live.get(guest).copied().unwrap_or(0)
    }

    /// Whether the consumer took the ADD of buffer `id` of `guest`, and not
    /// its REMOVE or its guest's RESET.
    fn holds(&self, guest: &str, id: u64) -> bool {
        self.held.get(guest).is_some_and(|ids| ids.contains(&id))
    }

    /// Whether the ADD of buffer `id` of `guest` is queued.
    fn add_queued(&self, guest: &str, id: u64) -> bool {
        self.adds.get(guest).is_some_and(|ids| ids.contains(&id))
    }

    /// Notes that `item`, an ADD, is queued.
    fn note_add(&mut self, item: &Item) {
        if let Item::Add { guest, id, .. } = item {
            self.adds.entry(Arc::clone(guest)).or_default().insert(*id);
        }
    }
}

/// The events waiting for one consumer.
pub struct ConsumerQueue {
    /// Its id as a holder of buffers.
    id: HolderId,
    /// Where it reports what it hands over.
    registry: Arc<HolderRegistry>,
    /// Version 3: how long it has to say CLOSED after a REMOVE.
    close_grace: Duration,
    who: String,
    applications: Applications,
    /// The connection's version, and its trust.
    receiver: Receiver,
    limit: usize,
    state: Mutex<QueueState>,
    wake: EventFd,
}

impl fmt::Debug for ConsumerQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerQueue")
            .field("who", &self.who)
            .field("applications", &self.applications)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl ConsumerQueue {
    fn new(
        (id, registry, close_grace): (HolderId, Arc<HolderRegistry>, Duration),
        who: String,
        applications: Applications,
        receiver: Receiver,
        limit: usize,
    ) -> io::Result<Self> {
        Ok(Self {
            id,
            registry,
            close_grace,
            who,
            applications,
            receiver,
            limit,
            state: Mutex::new(QueueState::default()),
            wake: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
        })
    }

    /// Who the consumer is, for logs.
    pub fn who(&self) -> &str {
        &self.who
    }

    /// Its id as a holder of buffers.
    pub fn id(&self) -> HolderId {
        self.id
    }

    /// Whether it says RELEASE and CLOSED (version 3): else it is taken to
    /// be done with an update once sent it, and with a buffer once sent
    /// its REMOVE or its guest's RESET.
    pub fn answers(&self) -> bool {
        self.receiver.version >= 3
    }

    /// Forgets the updates withdrawn from its queue: it will not be sent
    /// them.
    fn ungive(&self, updates: Vec<(Arc<str>, u64)>) {
        if !self.answers() {
            return;
        }
        for (guest, id) in updates {
            if let Some(holders) = self.registry.get(&guest) {
                holders.ungive(id, self.id);
            }
        }
    }

    /// The consumer said CLOSED for buffer `id` of `guest`: `false` if it
    /// held no instance of it.
    pub fn closed(&self, guest: &str, id: u64) -> bool {
        let Some(holders) = self.registry.get(guest) else {
            return false;
        };
        let mut st = lock(&self.state);
        if !holders.closed(id, self.id) {
            return false;
        }
        let key = (Arc::from(guest), id);
        if let Some(owed) = st.deadlines.get_mut(&key) {
            owed.0 -= 1;
            if owed.0 == 0 {
                st.deadlines.remove(&key);
            }
        }
        true
    }

    /// The consumer said RELEASE for buffer `id` of `guest`, up to
    /// `seqno`.
    pub fn release(&self, guest: &str, id: u64, seqno: u64) {
        if let Some(holders) = self.registry.get(guest) {
            holders.release(id, self.id, seqno);
        }
    }

    /// When the consumer must have said CLOSED for some buffer, if it
    /// must.
    pub fn next_deadline(&self) -> Option<Instant> {
        lock(&self.state)
            .deadlines
            .values()
            .map(|(_, at)| *at)
            .min()
    }

    /// A buffer it did not say CLOSED for in time, if any, by `now`.
    pub fn overdue(&self, now: Instant) -> Option<(Arc<str>, u64)> {
        lock(&self.state)
            .deadlines
            .iter()
            .find(|(_, (_, at))| *at <= now)
            .map(|(key, _)| key.clone())
    }

    /// What it subscribed to.
    pub fn applications(&self) -> &Applications {
        &self.applications
    }

    /// What the consumer may take: its connection's version, its trust.
    pub fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    fn wake(&self) {
        if let Err(e) = self.wake.write(1) {
            warn!("cannot wake consumer {} up: {e}", self.who);
        }
    }

    /// Readable when there may be something to take.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Clears the wake-up descriptor; call before taking the events.
    pub fn clear_wake(&self) {
        // Nothing to read is fine: it was cleared already.
        let _ = self.wake.read();
    }

    /// Queues an ADD on subscription, outside the limit.
    fn push_snapshot(&self, item: Item) {
        let mut st = lock(&self.state);
        st.note_add(&item);
        st.entries.push_back(Entry {
            item,
            snapshot: true,
        });
    }

    /// Queues a live event; says if the consumer is done with, so that the
    /// hub forgets it, or if the event's guest overflowed its share (the
    /// event is then not queued: the hub resynchronises the guest).
    ///
    /// Events that no longer matter are withdrawn first: a REMOVE withdraws
    /// the buffer's ADD if it is still queued, with every event queued for
    /// the buffer after that ADD, and is then not queued itself; a RESET
    /// withdraws every event queued for the guest. An event about nothing
    /// the consumer was given or will be given (no ADD taken nor queued) is
    /// not queued.
    ///
    /// Events queued before the ADD are about an earlier buffer with the
    /// same id, which the consumer holds: they stay. So with buffer 1 held,
    /// REMOVE 1, ADD 1 (the guest registered it again), then REMOVE 1, the
    /// consumer still gets the first REMOVE: the second withdraws the second
    /// ADD, not what came before it.
    pub fn push(&self, item: Item) -> Pushed {
        let mut st = lock(&self.state);
        if st.end.is_some() || st.closing.is_some() {
            return Pushed::Closed;
        }
        match &item {
            Item::Remove { guest, id } => {
                if st.add_queued(guest, *id) {
                    let add = st
                        .entries
                        .iter()
                        .rposition(|e| {
                            matches!(e.item, Item::Add { .. }) && e.item.is_about(guest, *id)
                        })
                        .unwrap_or(0);
                    let withdrawn = st.withdraw(add, |i| i.is_about(guest, *id));
                    drop(st);
                    self.ungive(withdrawn);
                    return Pushed::Done;
                }
                if !st.holds(guest, *id) {
                    return Pushed::Done;
                }
            }
            Item::Update { guest, id, .. } | Item::Properties { guest, id, .. } => {
                if !st.add_queued(guest, *id) && !st.holds(guest, *id) {
                    return Pushed::Done;
                }
            }
            Item::Reset { guest, .. } => {
                let withdrawn = st.withdraw(0, |i| i.guest() == guest);
                if st.held.get(guest).is_none_or(HashSet::is_empty) {
                    drop(st);
                    self.ungive(withdrawn);
                    return Pushed::Done;
                }
                self.ungive(withdrawn);
            }
            Item::Add { .. } => {}
        }
        if st.live(item.guest()) >= self.limit {
            return Pushed::Overflow;
        }
        *st.live.entry(Arc::clone(item.guest())).or_default() += 1;
        st.note_add(&item);
        if let Item::Update { guest, id, info } = &item {
            // Given it now: it is to release it.
            if self.answers() {
                if let Some(holders) = self.registry.get(guest) {
                    holders.given(*id, self.id, info.seqno);
                }
            }
        }
        st.entries.push_back(Entry {
            item,
            snapshot: false,
        });
        drop(st);
        self.wake();
        Pushed::Done
    }

    /// Resynchronises `guest` after it overflowed its share of the queue:
    /// withdraws every event of the guest, queues a RESET of it (reason
    /// OVERFLOW; DISCONNECTED for a version 1 connection, which has no
    /// OVERFLOW) if the consumer holds any of its buffers, then `adds`, an
    /// ADD of each of the guest's buffers the consumer subscribed to, as
    /// they are now. None of them counts against the limit. The other
    /// guests' events stay as they are.
    pub fn resync(&self, guest: &Arc<str>, adds: Vec<Item>) {
        let mut st = lock(&self.state);
        if st.end.is_some() || st.closing.is_some() {
            return;
        }
        let withdrawn = st.withdraw(0, |i| i.guest() == guest);
        self.ungive(withdrawn);
        st.live.remove(guest);
        if st.held.get(guest).is_some_and(|ids| !ids.is_empty()) {
            let reason = if self.receiver.version >= 2 {
                ResetReason::Overflow
            } else {
                ResetReason::Disconnected
            };
            st.entries.push_back(Entry {
                item: Item::Reset {
                    guest: Arc::clone(guest),
                    reason,
                },
                snapshot: true,
            });
        }
        for item in adds {
            st.note_add(&item);
            st.entries.push_back(Entry {
                item,
                snapshot: true,
            });
        }
        drop(st);
        crate::guest_warn!(
            "consumer {}: more than {} events of guest {guest} waiting: its events \
             dropped, the guest's buffers sent again",
            self.who,
            self.limit
        );
        self.wake();
    }

    /// Drops everything queued: the consumer gets `error` and is
    /// disconnected.
    pub fn end(&self, error: ErrorMessage) {
        let mut st = lock(&self.state);
        if st.end.is_none() {
            st.entries.clear();
            st.adds.clear();
            st.live.clear();
            st.end = Some(error);
        }
        drop(st);
        self.wake();
    }

    /// Takes no more events: the consumer gets what is queued, then
    /// `error`, and is disconnected.
    pub fn finish(&self, error: ErrorMessage) {
        let mut st = lock(&self.state);
        if st.end.is_none() && st.closing.is_none() {
            st.closing = Some(error);
        }
        drop(st);
        self.wake();
    }

    /// Takes what to do next. Taking an ADD, REMOVE or RESET counts as
    /// handing it over.
    pub fn pop(&self) -> Next {
        let mut st = lock(&self.state);
        if st.done {
            return Next::Done;
        }
        if let Some(error) = st.end.clone() {
            st.done = true;
            return Next::End(error);
        }
        let Some(entry) = st.entries.pop_front() else {
            if let Some(error) = st.closing.clone() {
                st.done = true;
                return Next::End(error);
            }
            return Next::Idle;
        };
        if !entry.snapshot {
            if let Some(n) = st.live.get_mut(entry.item.guest()) {
                *n -= 1;
            }
        }
        // Handing a buffer over, and telling of its end, are reported
        // with the queue locked: a REMOVE dispatched meanwhile sees the
        // consumer hold what it was handed.
        let holders = self.registry.get(entry.item.guest());
        let answers = self.answers();
        let deadline = Instant::now() + self.close_grace;
        match &entry.item {
            Item::Add { guest, id, .. } => {
                if let Some(ids) = st.adds.get_mut(guest) {
                    ids.remove(id);
                }
                st.held.entry(Arc::clone(guest)).or_default().insert(*id);
                if let Some(holders) = &holders {
                    holders.handed(*id, self.id);
                }
            }
            Item::Remove { guest, id } => {
                if let Some(ids) = st.held.get_mut(guest) {
                    ids.remove(id);
                }
                if let Some(holders) = &holders {
                    if !answers {
                        holders.closed(*id, self.id);
                    } else {
                        let instances = holders.instances(*id, self.id);
                        st.owe(guest, *id, instances, deadline);
                    }
                }
            }
            Item::Reset { guest, .. } => {
                let ids = st.held.remove(guest).unwrap_or_default();
                if let Some(holders) = &holders {
                    for id in ids {
                        if !answers {
                            holders.closed(id, self.id);
                        } else {
                            let instances = holders.instances(id, self.id);
                            st.owe(guest, id, instances, deadline);
                        }
                    }
                }
            }
            Item::Update { .. } | Item::Properties { .. } => {}
        }
        Next::Item(entry.item)
    }

    /// The ADD of buffer `id` of `guest`, just taken, could not be made for
    /// the consumer ([`Item::to_message`]): it does not hold the buffer,
    /// and the buffer's events queued after it (up to its REMOVE, the end
    /// of that buffer) are withdrawn; so is a RESET of the guest queued for
    /// that buffer only.
    pub fn undeliverable(&self, guest: &Arc<str>, id: u64) {
        let mut st = lock(&self.state);
        if let Some(ids) = st.held.get_mut(guest) {
            ids.remove(&id);
        }
        // Handed over when taken: it was not.
        if let Some(holders) = self.registry.get(guest) {
            holders.closed(id, self.id);
        }
        let nothing_held = st.held.get(guest).is_none_or(HashSet::is_empty);
        let mut withdrawn_reset = false;
        let mut ended = false;
        let mut live = std::mem::take(&mut st.live);
        st.entries.retain(|e| {
            if ended {
                return true;
            }
            let drop = match &e.item {
                Item::Reset { guest: g, .. } if g == guest => {
                    // Later entries are about another buffer.
                    ended = true;
                    nothing_held && !std::mem::replace(&mut withdrawn_reset, true)
                }
                Item::Remove { .. } if e.item.is_about(guest, id) => {
                    ended = true;
                    true
                }
                Item::Add { .. } if e.item.is_about(guest, id) => {
                    // The buffer again, after a REMOVE already withdrawn:
                    // not possible, the REMOVE ends the scan. Keep it.
                    ended = true;
                    false
                }
                item => item.is_about(guest, id),
            };
            if drop && !e.snapshot {
                if let Some(n) = live.get_mut(e.item.guest()) {
                    *n -= 1;
                }
            }
            !drop
        });
        st.live = live;
    }

    /// Number of events queued (for tests and logs).
    pub fn len(&self) -> usize {
        lock(&self.state).entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A buffer handed over, as the hub remembers it.
#[derive(Debug)]
struct Announced {
    application: Arc<str>,
    size: u64,
    seqno: u64,
    props: Arc<Properties>,
    export: Arc<Export>,
}

impl Announced {
    /// Its ADD, as buffer `id` of `guest`.
    fn add(&self, guest: &Arc<str>, id: u64) -> Item {
        Item::Add {
            guest: Arc::clone(guest),
            id,
            application: Arc::clone(&self.application),
            size: self.size,
            seqno: self.seqno,
            props: Arc::clone(&self.props),
            export: Arc::clone(&self.export),
        }
    }
}

#[derive(Debug, Default)]
struct HubInner {
    /// The buffers of each guest that were handed over.
    guests: BTreeMap<Arc<str>, BTreeMap<u64, Announced>>,
    consumers: Vec<Arc<ConsumerQueue>>,
}

impl HubInner {
    /// Queues `item` for every consumer that wants it: those subscribed to
    /// `application`, or every one for `None`; resynchronises its guest
    /// for those whose share of the queue it overflows; forgets the
    /// consumers that are done with.
    fn dispatch(&mut self, application: Option<&str>, item: &Item) {
        let guests = &self.guests;
        self.consumers.retain(|queue| {
            let wanted = application.is_none_or(|app| queue.applications.contains(app));
            if !wanted {
                return true;
            }
            match queue.push(item.clone()) {
                Pushed::Done => true,
                Pushed::Overflow => {
                    let guest = item.guest();
                    queue.resync(guest, adds_of(guests, guest, &queue.applications));
                    true
                }
                Pushed::Closed => false,
            }
        });
    }
}

/// An ADD of each buffer of `guest` in `guests` that `applications` has,
/// by id.
fn adds_of(
    guests: &BTreeMap<Arc<str>, BTreeMap<u64, Announced>>,
    guest: &Arc<str>,
    applications: &Applications,
) -> Vec<Item> {
    let Some(buffers) = guests.get(guest) else {
        return Vec::new();
    };
    buffers
        .iter()
        .filter(|(_, b)| applications.contains(&b.application))
        .map(|(id, b)| b.add(guest, *id))
        .collect()
}

/// Why a guest cannot be added.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// Not 1 to 63 characters out of `[A-Za-z0-9_.-]`.
    #[error("bad guest name {0:?}: 1 to 63 characters out of [A-Za-z0-9_.-]")]
    BadName(String),
    /// Another guest has that name.
    #[error("there is already a guest named {0}")]
    Duplicate(String),
}

/// The guests' buffers and the consumers.
#[derive(Debug)]
pub struct Hub {
    inner: Mutex<HubInner>,
    queue_limit: usize,
    udmabuf: Option<Udmabuf>,
    registry: Arc<HolderRegistry>,
    next_id: AtomicU64,
    close_grace: Duration,
}

/// How long a consumer of version 3 has, by default, to say CLOSED after
/// a REMOVE.
pub const DEFAULT_CLOSE_GRACE: Duration = Duration::from_secs(5);

impl Hub {
    /// A hub with no guest and no consumer, whose consumers queue at most
    /// `queue_limit` events, and that hands memory over as dma-bufs made
    /// with `udmabuf` if given.
    pub fn new(queue_limit: usize, udmabuf: Option<Udmabuf>) -> Self {
        Self {
            inner: Mutex::new(HubInner::default()),
            queue_limit,
            udmabuf,
            registry: Arc::default(),
            next_id: AtomicU64::new(1),
            close_grace: DEFAULT_CLOSE_GRACE,
        }
    }

    /// The same, giving consumers of version 3 `grace` to say CLOSED
    /// after a REMOVE.
    pub fn with_close_grace(mut self, grace: Duration) -> Self {
        self.close_grace = grace;
        self
    }

    /// How long consumers of version 3 have to say CLOSED.
    pub fn close_grace(&self) -> Duration {
        self.close_grace
    }

    /// The holders of each guest's buffers.
    pub fn registry(&self) -> &Arc<HolderRegistry> {
        &self.registry
    }

    /// Holder `id` is gone for good (its process exited): it holds
    /// nothing of any guest any more.
    pub fn gone(&self, id: HolderId) {
        for (_, holders) in self.registry.all() {
            holders.gone(id);
        }
    }

    /// Whether holder `id` holds anything of any guest.
    pub fn holds_anything(&self, id: HolderId) -> bool {
        self.registry
            .all()
            .iter()
            .any(|(_, holders)| !holders.held_by(id).is_empty())
    }

    /// Tells every guest the count of consumers of the applications `apps`
    /// concerns (for every application: those of the guest's buffers).
    fn consumers_changed(&self, inner: &HubInner, apps: &Subscribed) {
        for (guest, holders) in self.registry.all() {
            let names: BTreeSet<String> = match apps {
                Subscribed::Some(apps) => apps.clone(),
                Subscribed::All => inner
                    .guests
                    .get(&guest)
                    .map(|buffers| {
                        buffers
                            .values()
                            .map(|b| b.application.to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            for app in names {
                let count = holders.consumers(&app);
                holders.consumers_changed(&app, count);
            }
        }
    }

    /// The udmabuf device, if memory goes over as dma-bufs.
    pub fn udmabuf(&self) -> Option<&Udmabuf> {
        self.udmabuf.as_ref()
    }

    /// How memory goes over.
    pub fn memory_form(&self) -> MemoryForm {
        match self.udmabuf {
            Some(_) => MemoryForm::DmaBuf,
            None => MemoryForm::Segments,
        }
    }

    /// The most events queued for a consumer.
    pub fn queue_limit(&self) -> usize {
        self.queue_limit
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        lock(&self.inner)
    }

    /// Adds a guest named `name`; what its buffer table tells the returned
    /// observer goes to the consumers. Dropping the observer removes the
    /// guest (as if it went away).
    pub fn add_guest(self: &Arc<Self>, name: &str) -> Result<Arc<GuestEvents>, HubError> {
        if !is_name(name) {
            return Err(HubError::BadName(name.to_string()));
        }
        let mut inner = self.lock();
        if inner.guests.contains_key(name) {
            return Err(HubError::Duplicate(name.to_string()));
        }
        let name: Arc<str> = Arc::from(name);
        inner.guests.insert(Arc::clone(&name), BTreeMap::new());
        let holders = Arc::new(Holders::new(Arc::clone(&self.registry.subscriptions)));
        lock(&self.registry.guests).insert(Arc::clone(&name), Arc::clone(&holders));
        Ok(Arc::new(GuestEvents {
            hub: Arc::clone(self),
            name,
            holders,
        }))
    }

    /// Subscribes a consumer to `applications`: queues an ADD for each
    /// buffer of those applications that exists (guests by name, buffers
    /// by id), and from then on the changes.
    pub fn subscribe(
        &self,
        who: String,
        applications: Applications,
        receiver: Receiver,
    ) -> io::Result<Arc<ConsumerQueue>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(ConsumerQueue::new(
            (id, Arc::clone(&self.registry), self.close_grace),
            who,
            applications,
            receiver,
            self.queue_limit,
        )?);
        let mut inner = self.lock();
        for guest in inner.guests.keys() {
            for item in adds_of(&inner.guests, guest, &queue.applications) {
                queue.push_snapshot(item);
            }
        }
        inner.consumers.push(Arc::clone(&queue));
        let subscribed = subscribed(&queue.applications);
        self.registry
            .subscriptions
            .attach(queue.id, subscribed.clone());
        self.consumers_changed(&inner, &subscribed);
        Ok(queue)
    }

    /// Forgets a consumer: it is no longer attached to its applications
    /// (what it holds, it holds until it lets go).
    pub fn unsubscribe(&self, queue: &Arc<ConsumerQueue>) {
        let mut inner = self.lock();
        inner.consumers.retain(|q| !Arc::ptr_eq(q, queue));
        if let Some(subscribed) = self.registry.subscriptions.detach(queue.id) {
            self.consumers_changed(&inner, &subscribed);
        }
    }

    /// Number of consumers subscribed.
    pub fn consumers(&self) -> usize {
        self.lock().consumers.len()
    }

    /// Ends every consumer with `error`, after what is queued for it, and
    /// forgets them.
    pub fn finish_all(&self, error: &ErrorMessage) {
        for queue in std::mem::take(&mut self.lock().consumers) {
            queue.finish(error.clone());
        }
    }
}

/// What `applications` subscribes to, as counted.
fn subscribed(applications: &Applications) -> Subscribed {
    match applications {
        Applications::All => Subscribed::All,
        Applications::Only(apps) => Subscribed::Some(apps.clone()),
    }
}

/// A guest, as its buffer table sees the hub.
#[derive(Debug)]
pub struct GuestEvents {
    hub: Arc<Hub>,
    name: Arc<str>,
    holders: Arc<Holders>,
}

impl GuestEvents {
    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who holds the memory of the guest's buffers: the guest's device
    /// shares it.
    pub fn holders(&self) -> &Arc<Holders> {
        &self.holders
    }

    /// Forgets the guest's buffers and tells the consumers.
    fn reset_guest(&self, inner: &mut HubInner, reason: ResetReason) {
        if let Some(buffers) = inner.guests.get_mut(&self.name) {
            buffers.clear();
        }
        let item = Item::Reset {
            guest: Arc::clone(&self.name),
            reason,
        };
        inner.dispatch(None, &item);
    }
}

/// The properties of `buffer` as consumers get them, if they fit in a
/// message. The device checked them by the consumer protocol's rules.
fn properties_of(buffer: &Buffer) -> Option<Properties> {
    let size = buffer.props.wire_len();
    if size > MAX_PROPS_SIZE {
        crate::guest_warn!(
            "buffer {}: {size} bytes of properties, more than consumers take ({MAX_PROPS_SIZE})",
            buffer.id
        );
        return None;
    }
    Some(buffer.props.clone())
}

impl TableObserver for GuestEvents {
    fn added(&self, buffer: &Buffer, mem: Option<&GuestMemoryMmap>) {
        let export = match Export::new(buffer, mem) {
            Ok(export) => Arc::new(export),
            Err(e) => {
                crate::guest_warn!(
                    "guest {} buffer {}: not handed to consumers: {e}",
                    self.name,
                    buffer.id
                );
                return;
            }
        };
        let Some(props) = properties_of(buffer) else {
            return;
        };
        let props = Arc::new(props);
        let application: Arc<str> = Arc::from(buffer.application.as_str());
        let mut inner = self.hub.lock();
        let Some(buffers) = inner.guests.get_mut(&self.name) else {
            return;
        };
        buffers.insert(
            buffer.id,
            Announced {
                application: Arc::clone(&application),
                size: buffer.size,
                seqno: buffer.seqno,
                props: Arc::clone(&props),
                export: Arc::clone(&export),
            },
        );
        debug!(
            "guest {} buffer {}: handed to consumers of {application}",
            self.name, buffer.id
        );
        let item = Item::Add {
            guest: Arc::clone(&self.name),
            id: buffer.id,
            application: Arc::clone(&application),
            size: buffer.size,
            seqno: buffer.seqno,
            props,
            export,
        };
        inner.dispatch(Some(&application), &item);
    }

    fn updated(&self, buffer: &Buffer, update: &UpdateInfo) {
        let mut inner = self.hub.lock();
        let Some(b) = inner
            .guests
            .get_mut(&self.name)
            .and_then(|buffers| buffers.get_mut(&buffer.id))
        else {
            return;
        };
        b.seqno = update.seqno;
        let application = Arc::clone(&b.application);
        let item = Item::Update {
            guest: Arc::clone(&self.name),
            id: buffer.id,
            info: *update,
        };
        inner.dispatch(Some(&application), &item);
    }

    fn properties(&self, buffer: &Buffer) {
        let props = properties_of(buffer);
        let mut inner = self.hub.lock();
        let Some(buffers) = inner.guests.get_mut(&self.name) else {
            return;
        };
        let Some(b) = buffers.get_mut(&buffer.id) else {
            return;
        };
        let application = Arc::clone(&b.application);
        let item = match props {
            Some(props) => {
                let props = Arc::new(props);
                b.props = Arc::clone(&props);
                Item::Properties {
                    guest: Arc::clone(&self.name),
                    id: buffer.id,
                    props,
                }
            }
            None => {
                // Properties consumers cannot take: the buffer is no longer
                // theirs.
                buffers.remove(&buffer.id);
                Item::Remove {
                    guest: Arc::clone(&self.name),
                    id: buffer.id,
                }
            }
        };
        inner.dispatch(Some(&application), &item);
    }

    fn removed(&self, buffer: &Buffer) {
        let mut inner = self.hub.lock();
        let Some(b) = inner
            .guests
            .get_mut(&self.name)
            .and_then(|buffers| buffers.remove(&buffer.id))
        else {
            return;
        };
        let item = Item::Remove {
            guest: Arc::clone(&self.name),
            id: buffer.id,
        };
        inner.dispatch(Some(&b.application), &item);
    }

    fn reset(&self, reason: ResetReason) {
        let mut inner = self.hub.lock();
        self.reset_guest(&mut inner, reason);
    }
}

impl Drop for GuestEvents {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        self.reset_guest(&mut inner, ResetReason::Disconnected);
        inner.guests.remove(&self.name);
        lock(&self.hub.registry.guests).remove(&self.name);
    }
}

#[cfg(test)]
mod tests;
