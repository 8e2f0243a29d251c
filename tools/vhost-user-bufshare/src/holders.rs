// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Who holds the memory of a guest's buffers: the host parties the
//! backend gave it to, what they are done with, and what the device is to
//! tell the driver about it.
//!
//! One [`Holders`] per guest, shared by the guest's device (which asks it
//! whether an unregistered buffer is still held, and how far an update is
//! released) and the consumer socket (which says who was given what, and
//! who let go). A *holder* is a consumer connection, by its id
//! ([`HolderId`]); it holds one *instance* of a buffer's memory per ADD it
//! was handed (the same buffer id may be handed over again after a reset,
//! or after an overflow of its queue), until it says it closed it (CLOSED,
//! or for a consumer of protocol version 1 or 2, being sent the REMOVE or
//! RESET), or its process exited. Instances are counted across device
//! resets and lost buffers: a buffer id registered again waits for the
//! instances of its predecessor too (late, never early).
//!
//! The backend's own mappings are not counted here: it drops the
//! descriptors it made of a buffer (the dma-bufs, the reopened memory
//! files) when the buffer is removed, before the device answers the
//! UNREGISTER, and it never reads or writes a buffer that is not
//! registered.
//!
//! Updates: a holder of protocol version 3 *is given* an update when its
//! UPDATE is queued for it, and releases it (and every earlier one) with
//! RELEASE. [`Holders::release_bound`] is the highest seqno up to which
//! every holder released what it was given.
//!
//! What the device must hear about (a drained buffer freed, a release
//! bound that moved, the count of consumers of an application that
//! changed) is noted and the device woken through [`Holders::wake_fd`]; it
//! takes the notes with [`Holders::take_notes`].
//!
//! Other guests that import the guest's buffers
//! ([`crate::import::hub`]) are holders too: each import is one, by an id
//! with [`IMPORT_HOLDER`] set, handed the buffer when it is created and
//! closing it once it is unmapped from the importer; and each attachment
//! counts as one consumer of its application
//! ([`Holders::importer_attached`]).
//!
//! Locks: a guest's [`Holders`] is taken after the guest's state, the hub,
//! the import hub and a consumer's queue, and takes nothing else but the
//! [`Subscriptions`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use log::warn;
use nix::sys::eventfd::{EfdFlags, EventFd};

/// A consumer connection, or an import, as a holder.
pub type HolderId = u64;

/// Set in the holder id of an import (the rest is the import's id);
/// consumers' ids are small.
pub const IMPORT_HOLDER: HolderId = 1 << 63;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The applications each connected consumer subscribed to, shared by the
/// guests: how many consumers are attached to an application.
#[derive(Debug, Default)]
pub struct Subscriptions {
    inner: Mutex<BTreeMap<HolderId, Subscribed>>,
}

/// What a consumer subscribed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscribed {
    /// Every application.
    All,
    /// These.
    Some(BTreeSet<String>),
}

impl Subscribed {
    /// Whether it has `application`.
    pub fn contains(&self, application: &str) -> bool {
        match self {
            Subscribed::All => true,
            Subscribed::Some(apps) => apps.contains(application),
        }
    }
}

impl Subscriptions {
    /// Notes that consumer `id` is attached, to `apps`.
    pub fn attach(&self, id: HolderId, apps: Subscribed) {
        lock(&self.inner).insert(id, apps);
    }

    /// Notes that consumer `id` is no longer attached; what it was.
    pub fn detach(&self, id: HolderId) -> Option<Subscribed> {
        lock(&self.inner).remove(&id)
    }

    /// How many consumers are attached to `application`.
    pub fn count(&self, application: &str) -> u32 {
        let n = lock(&self.inner)
            .values()
            .filter(|s| s.contains(application))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// What the device is to hear about, taken by [`Holders::take_notes`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Notes {
    /// Unregistered buffers no holder holds any more, in order.
    pub freed: Vec<u64>,
    /// Buffers whose release bound may have moved.
    pub released: BTreeSet<u64>,
    /// Applications whose count of consumers changed, with the new count.
    pub consumers: BTreeMap<String, u32>,
}

impl Notes {
    /// Whether there is nothing.
    pub fn is_empty(&self) -> bool {
        self.freed.is_empty() && self.released.is_empty() && self.consumers.is_empty()
    }
}

/// The updates of a buffer a holder was given and did not release: the
/// first of them (a lower bound: the holder may have released part of
/// them), and the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Unreleased {
    first: u64,
    last: u64,
}

#[derive(Debug, Default)]
struct Buffer {
    /// Instances each holder holds.
    instances: BTreeMap<HolderId, u32>,
    /// Updates each holder was given and did not release.
    unreleased: BTreeMap<HolderId, Unreleased>,
}

impl Buffer {
    fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.unreleased.is_empty()
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Attachments of importing guests, by application.
    importers: BTreeMap<String, u32>,
    buffers: HashMap<u64, Buffer>,
    /// Unregistered buffers waiting for their holders.
    draining: BTreeSet<u64>,
    notes: Notes,
}

impl Inner {
    fn buffer(&mut self, id: u64) -> &mut Buffer {
        self.buffers.entry(id).or_default()
    }

    /// Forgets buffer `id` if nothing is left of it; notes it freed if it
    /// was draining and no instance is left.
    fn settle(&mut self, id: u64) -> bool {
        let held = self
            .buffers
            .get(&id)
            .is_some_and(|b| !b.instances.is_empty());
        if self.buffers.get(&id).is_some_and(Buffer::is_empty) {
            self.buffers.remove(&id);
        }
        if !held && self.draining.remove(&id) {
            self.notes.freed.push(id);
            return true;
        }
        false
    }
}

/// Who holds the memory of one guest's buffers; see the module.
#[derive(Debug)]
pub struct Holders {
    inner: Mutex<Inner>,
    subscriptions: Arc<Subscriptions>,
    wake: EventFd,
}

impl Default for Holders {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl Holders {
    /// The holders of a guest, whose consumers are counted in
    /// `subscriptions`.
    ///
    /// # Panics
    ///
    /// If no eventfd can be made (out of descriptors at start-up).
    pub fn new(subscriptions: Arc<Subscriptions>) -> Self {
        Self {
            inner: Mutex::default(),
            subscriptions,
            wake: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .expect("an eventfd for a guest's holders"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    fn wake(&self) {
        if let Err(e) = self.wake.write(1) {
            warn!("cannot wake the device up: {e}");
        }
    }

    /// Readable when there are notes for the device.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// The consumers, as counted for GET_CONSUMERS.
    pub fn subscriptions(&self) -> &Arc<Subscriptions> {
        &self.subscriptions
    }

    /// How many consumers are attached to `application`: host consumers,
    /// and attachments of importing guests.
    pub fn consumers(&self, application: &str) -> u32 {
        let importers = self.lock().importers.get(application).copied().unwrap_or(0);
        self.subscriptions
            .count(application)
            .saturating_add(importers)
    }

    /// An importing guest attached to `application`: one consumer more.
    pub fn importer_attached(&self, application: &str) {
        *self
            .lock()
            .importers
            .entry(application.to_string())
            .or_default() += 1;
        self.consumers_changed(application, self.consumers(application));
    }

    /// An importing guest detached from `application`.
    pub fn importer_detached(&self, application: &str) {
        {
            let mut inner = self.lock();
            if let Some(n) = inner.importers.get_mut(application) {
                *n -= 1;
                if *n == 0 {
                    inner.importers.remove(application);
                }
            }
        }
        self.consumers_changed(application, self.consumers(application));
    }

    /// Wakes the device up for news that are not the holders' (the import
    /// hub's events for the guest as an importer).
    pub fn poke(&self) {
        self.wake();
    }

    /// Holder `holder` was handed one more instance of buffer `id`.
    pub fn handed(&self, id: u64, holder: HolderId) {
        *self.lock().buffer(id).instances.entry(holder).or_default() += 1;
    }

    /// Holder `holder` closed an instance of buffer `id`; `false` if it
    /// held none.
    pub fn closed(&self, id: u64, holder: HolderId) -> bool {
        let mut inner = self.lock();
        let Some(buffer) = inner.buffers.get_mut(&id) else {
            return false;
        };
        let Some(n) = buffer.instances.get_mut(&holder) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            buffer.instances.remove(&holder);
        }
        if inner.settle(id) {
            drop(inner);
            self.wake();
        }
        true
    }

    /// How many instances of buffer `id` `holder` holds.
    pub fn instances(&self, id: u64, holder: HolderId) -> u32 {
        self.lock()
            .buffers
            .get(&id)
            .and_then(|b| b.instances.get(&holder).copied())
            .unwrap_or(0)
    }

    /// Whether `holder` holds an instance of buffer `id`.
    pub fn holds(&self, id: u64, holder: HolderId) -> bool {
        self.lock()
            .buffers
            .get(&id)
            .is_some_and(|b| b.instances.contains_key(&holder))
    }

    /// The holders of buffer `id`, with their instances.
    pub fn holders_of(&self, id: u64) -> Vec<(HolderId, u32)> {
        self.lock()
            .buffers
            .get(&id)
            .map(|b| b.instances.iter().map(|(h, n)| (*h, *n)).collect())
            .unwrap_or_default()
    }

    /// The buffers `holder` holds, by id.
    pub fn held_by(&self, holder: HolderId) -> Vec<u64> {
        let inner = self.lock();
        let mut ids: Vec<u64> = inner
            .buffers
            .iter()
            .filter(|(_, b)| b.instances.contains_key(&holder))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// For `bufshare-inspect holders`: a line
    /// `id=<n> holders=<n> instances=<n> draining=<0|1>` for each buffer
    /// some holder holds, or that drains, by id. A buffer registered again
    /// after a reset or lost buffers counts the instances of its
    /// predecessor too.
    pub fn describe(&self) -> Vec<u8> {
        use std::io::Write;
        let inner = self.lock();
        let mut ids: BTreeSet<u64> = inner
            .buffers
            .iter()
            .filter(|(_, b)| !b.instances.is_empty())
            .map(|(id, _)| *id)
            .collect();
        ids.extend(inner.draining.iter().copied());
        let mut out = Vec::new();
        for id in ids {
            let (holders, instances) = inner.buffers.get(&id).map_or((0, 0), |b| {
                (b.instances.len(), b.instances.values().sum::<u32>())
            });
            // Writing to a Vec cannot fail.
            let _ = writeln!(
                out,
                "id={id} holders={holders} instances={instances} draining={}",
                u8::from(inner.draining.contains(&id))
            );
        }
        out
    }

    /// The buffers unregistered and still held, by id.
    pub fn draining(&self) -> Vec<u64> {
        self.lock().draining.iter().copied().collect()
    }

    /// Holder `holder` was given update `seqno` of buffer `id`.
    pub fn given(&self, id: u64, holder: HolderId, seqno: u64) {
        let mut inner = self.lock();
        inner
            .buffer(id)
            .unreleased
            .entry(holder)
            .and_modify(|u| u.last = u.last.max(seqno))
            .or_insert(Unreleased {
                first: seqno,
                last: seqno,
            });
    }

    /// Holder `holder` released every update of buffer `id` up to
    /// `seqno`.
    pub fn release(&self, id: u64, holder: HolderId, seqno: u64) {
        let mut inner = self.lock();
        let Some(buffer) = inner.buffers.get_mut(&id) else {
            return;
        };
        let Some(u) = buffer.unreleased.get_mut(&holder) else {
            return;
        };
        if seqno >= u.last {
            buffer.unreleased.remove(&holder);
        } else if seqno >= u.first {
            // What it was given between seqno and last is not known here:
            // it may hold any of it.
            u.first = seqno + 1;
        } else {
            return;
        }
        inner.settle(id);
        inner.notes.released.insert(id);
        drop(inner);
        self.wake();
    }

    /// Forgets the updates of `id` given to `holder` and not released (it
    /// will not be sent them: its queue was resynchronised).
    pub fn ungive(&self, id: u64, holder: HolderId) {
        let mut inner = self.lock();
        let Some(buffer) = inner.buffers.get_mut(&id) else {
            return;
        };
        if buffer.unreleased.remove(&holder).is_some() {
            inner.settle(id);
            inner.notes.released.insert(id);
            drop(inner);
            self.wake();
        }
    }

    /// The highest seqno up to which every holder of buffer `id` released
    /// what it was given: `u64::MAX` when none has anything to release.
    pub fn release_bound(&self, id: u64) -> u64 {
        self.lock().buffers.get(&id).map_or(u64::MAX, |b| {
            b.unreleased
                .values()
                .map(|u| u.first - 1)
                .min()
                .unwrap_or(u64::MAX)
        })
    }

    /// Buffer `id` was unregistered: `true` if no holder holds it (it is
    /// free now), else it drains: [`Notes::freed`] says when it is free.
    /// Its updates are no longer released.
    pub fn unregistered(&self, id: u64) -> bool {
        let mut inner = self.lock();
        if let Some(buffer) = inner.buffers.get_mut(&id) {
            buffer.unreleased.clear();
        }
        inner.draining.insert(id);
        inner.notes.released.remove(&id);
        let freed = inner.settle(id);
        if freed {
            // Free at once: the caller says so; no note.
            inner.notes.freed.retain(|f| *f != id);
        }
        freed
    }

    /// The device dropped its buffers (a reset, lost buffers): no buffer
    /// drains any more, and nothing noted about buffers is of use. The
    /// instances stay counted: the holders still have them.
    pub fn forget_buffers(&self) {
        let mut inner = self.lock();
        inner.draining.clear();
        inner.notes.freed.clear();
        inner.notes.released.clear();
        for buffer in inner.buffers.values_mut() {
            buffer.unreleased.clear();
        }
        inner.buffers.retain(|_, b| !b.is_empty());
    }

    /// Holder `holder` is gone for good (its process exited): it holds
    /// nothing any more.
    pub fn gone(&self, holder: HolderId) {
        let mut inner = self.lock();
        let ids: Vec<u64> = inner
            .buffers
            .iter()
            .filter(|(_, b)| {
                b.instances.contains_key(&holder) || b.unreleased.contains_key(&holder)
            })
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return;
        }
        for &id in &ids {
            let buffer = inner.buffer(id);
            buffer.instances.remove(&holder);
            if buffer.unreleased.remove(&holder).is_some() {
                inner.notes.released.insert(id);
            }
            inner.settle(id);
        }
        drop(inner);
        self.wake();
    }

    /// The count of consumers of `application` is now `count`.
    pub fn consumers_changed(&self, application: &str, count: u32) {
        self.lock()
            .notes
            .consumers
            .insert(application.to_string(), count);
        self.wake();
    }

    /// Takes what the device is to hear about, and clears the wake-up.
    pub fn take_notes(&self) -> Notes {
        // Nothing to read is fine: it was cleared already.
        let _ = self.wake.read();
        std::mem::take(&mut self.lock().notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unregistered_without_holders_is_free_at_once() {
        let h = Holders::default();
        assert!(h.unregistered(5));
        assert!(h.take_notes().is_empty());
        assert!(h.draining().is_empty());
    }

    #[test]
    fn freed_when_the_last_instance_closes() {
        let h = Holders::default();
        h.handed(5, 1);
        h.handed(5, 2);
        h.handed(5, 2);
        assert!(!h.unregistered(5));
        assert_eq!(h.draining(), [5]);
        h.handed(6, 1);
        assert_eq!(
            h.describe(),
            b"id=5 holders=2 instances=3 draining=1\nid=6 holders=1 instances=1 draining=0\n"
        );
        assert!(h.closed(6, 1));
        assert!(h.closed(5, 2));
        assert!(h.closed(5, 1));
        assert!(h.take_notes().freed.is_empty(), "holder 2 has one left");
        assert!(h.closed(5, 2));
        assert_eq!(h.take_notes().freed, [5]);
        assert!(!h.closed(5, 2), "nothing left to close");
        assert!(h.draining().is_empty());
        assert_eq!(h.describe(), b"");
    }

    #[test]
    fn closing_before_unregister_frees_nothing_later() {
        let h = Holders::default();
        h.handed(7, 1);
        assert!(h.closed(7, 1));
        assert!(h.unregistered(7));
        assert!(h.take_notes().freed.is_empty());
    }

    #[test]
    fn a_holder_gone_frees_everything_it_held() {
        let h = Holders::default();
        h.handed(1, 9);
        h.handed(2, 9);
        h.handed(2, 8);
        assert!(!h.unregistered(1));
        assert!(!h.unregistered(2));
        h.gone(9);
        assert_eq!(h.take_notes().freed, [1]);
        assert_eq!(h.held_by(8), [2]);
        h.gone(8);
        assert_eq!(h.take_notes().freed, [2]);
    }

    #[test]
    fn instances_outlive_a_reset() {
        let h = Holders::default();
        h.handed(3, 1);
        assert!(!h.unregistered(3));
        h.forget_buffers();
        assert!(h.draining().is_empty());
        // The id again, after the reset: its old instance still counts.
        h.handed(3, 1);
        assert!(!h.unregistered(3));
        assert!(h.closed(3, 1));
        assert!(h.take_notes().freed.is_empty());
        assert!(h.closed(3, 1));
        assert_eq!(h.take_notes().freed, [3]);
    }

    #[test]
    fn release_bounds() {
        let h = Holders::default();
        assert_eq!(h.release_bound(1), u64::MAX);
        h.given(1, 10, 4);
        h.given(1, 10, 6);
        h.given(1, 11, 6);
        assert_eq!(h.release_bound(1), 3);
        h.release(1, 10, 4);
        // Holder 10 may still hold 5 or 6; 11 holds 6.
        assert_eq!(h.release_bound(1), 4);
        h.release(1, 10, 6);
        assert_eq!(h.release_bound(1), 5);
        let notes = h.take_notes();
        assert_eq!(notes.released, BTreeSet::from([1]));
        h.release(1, 11, 6);
        assert_eq!(h.release_bound(1), u64::MAX);
        // Releasing what was not given changes nothing.
        h.release(1, 11, 9);
        h.release(2, 11, 9);
        assert_eq!(h.release_bound(1), u64::MAX);
        h.given(1, 11, 8);
        h.ungive(1, 11);
        assert_eq!(h.release_bound(1), u64::MAX);
    }

    #[test]
    fn a_gone_holder_releases() {
        let h = Holders::default();
        h.given(1, 10, 4);
        h.take_notes();
        h.gone(10);
        assert_eq!(h.release_bound(1), u64::MAX);
        assert_eq!(h.take_notes().released, BTreeSet::from([1]));
    }

    #[test]
    fn importers_count_as_consumers() {
        let subs = Arc::new(Subscriptions::default());
        let h = Holders::new(Arc::clone(&subs));
        subs.attach(1, Subscribed::All);
        h.importer_attached("a");
        h.importer_attached("a");
        assert_eq!(h.consumers("a"), 3);
        assert_eq!(h.consumers("b"), 1);
        assert_eq!(
            h.take_notes().consumers,
            BTreeMap::from([("a".to_string(), 3)])
        );
        h.importer_detached("a");
        h.importer_detached("a");
        assert_eq!(h.consumers("a"), 1);
        assert_eq!(
            h.take_notes().consumers,
            BTreeMap::from([("a".to_string(), 1)])
        );
    }

    #[test]
    fn counts_and_wake_ups() {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let subs = Arc::new(Subscriptions::default());
        let h = Holders::new(Arc::clone(&subs));
        let readable = |h: &Holders| {
            let mut fds = [PollFd::new(h.wake_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
        };
        assert!(!readable(&h));
        subs.attach(1, Subscribed::All);
        subs.attach(2, Subscribed::Some(BTreeSet::from(["a".to_string()])));
        assert_eq!(h.consumers("a"), 2);
        assert_eq!(h.consumers("b"), 1);
        h.consumers_changed("a", 2);
        assert!(readable(&h));
        let notes = h.take_notes();
        assert!(!readable(&h));
        assert_eq!(notes.consumers, BTreeMap::from([("a".to_string(), 2)]));
        assert_eq!(subs.detach(1), Some(Subscribed::All));
        assert_eq!(h.consumers("b"), 0);
    }
}
