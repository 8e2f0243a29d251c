// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The event queue, held UNREGISTER answers and GET_CONSUMERS, through
//! mock virtqueues, with the holders played by the test.

use std::collections::BTreeSet;
use std::path::PathBuf;

use bufshare_uapi::{
    unregister_bytes as unregister, update_command, RegisterCommand, VirtioBufshareCmdGetConsumers,
    VIRTIO_BUFSHARE_CMD_GET_CONSUMERS, VIRTIO_BUFSHARE_EVT_CONSUMERS, VIRTIO_BUFSHARE_EVT_FREED,
    VIRTIO_BUFSHARE_EVT_LOST, VIRTIO_BUFSHARE_EVT_RELEASED, VIRTIO_BUFSHARE_F_BUFFERS,
    VIRTIO_BUFSHARE_F_EVENTS, VIRTIO_BUFSHARE_F_GENERATION, VIRTIO_BUFSHARE_S_OK,
};
use tempfile::TempDir;
use vm_memory::ByteValued;

use super::buffers::DATA;
use super::*;
use crate::fault::FaultFile;
use crate::holders::{Holders, Subscribed};

/// Where the event queue is, and its size.
const EVQ: u64 = 0x2_0000;
const EVQ_SIZE: u16 = 64;
/// Where the event buffers are.
const EVBUF: u64 = 0xc_0000;

/// A [`Setup`] with an event queue.
struct Events<'a> {
    s: Setup<'a>,
    evq: MockSplitQueue<'a, GuestMemoryMmap>,
    evring: VringRwLock,
    next_ev_desc: u16,
    next_answer: u64,
    /// Event buffers offered, in order: address.
    offered: Vec<u64>,
    _dir: Option<TempDir>,
    fault: Option<PathBuf>,
}

impl<'a> Events<'a> {
    fn new(mem: &'a GuestMemoryMmap, features: u64) -> Self {
        let mut s = Setup::new(mem, false);
        s.backend.acked_features(features);
        let evq = MockSplitQueue::create(mem, GuestAddress(EVQ), EVQ_SIZE);
        let evring = VringRwLock::new(GuestMemoryAtomic::new(mem.clone()), EVQ_SIZE).unwrap();
        evring.set_queue_size(EVQ_SIZE);
        evring
            .set_queue_info(
                evq.desc_table_addr().0,
                evq.avail_addr().0,
                evq.used_addr().0,
            )
            .unwrap();
        evring.set_queue_ready(true);
        evring.set_enabled(true);
        Self {
            s,
            evq,
            evring,
            next_ev_desc: 0,
            next_answer: BUF + 0x1000,
            offered: Vec::new(),
            _dir: None,
            fault: None,
        }
    }

    /// The same, reading a fault file.
    fn with_faults(mem: &'a GuestMemoryMmap, features: u64) -> Self {
        let mut e = Self::new(mem, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fault");
        let plain = VhostUserBufshareBackend::new(LIMITS).unwrap();
        e.s.backend =
            std::mem::replace(&mut e.s.backend, plain).with_fault_file(FaultFile::new(&path));
        e.s.backend
            .update_memory(GuestMemoryAtomic::new(mem.clone()))
            .unwrap();
        e.s.backend.acked_features(features);
        e._dir = Some(dir);
        e.fault = Some(path);
        e
    }

    fn holders(&self) -> Arc<Holders> {
        self.s.backend.device().holders()
    }

    fn vrings(&self) -> [VringRwLock; 2] {
        [self.s.vring.clone(), self.evring.clone()]
    }

    fn event(&mut self, event: u16) {
        let vrings = self.vrings();
        self.s
            .backend
            .handle_event(event, EventSet::IN, &vrings, 0)
            .unwrap();
    }

    /// Offers a command; returns where its answer goes.
    fn offer(&mut self, command: &[u8]) -> u64 {
        let at = self.next_answer;
        self.next_answer += 0x200;
        self.s.write(at, command);
        self.s.add_chain(&[
            Desc(at, command.len() as u32, false),
            Desc(at + 0x100, 16, true),
        ]);
        at + 0x100
    }

    /// Sends a command; the used elements of the command queue after it.
    fn send(&mut self, command: &[u8]) -> u64 {
        let answer = self.offer(command);
        self.event(VIRTIO_BUFSHARE_VQ_CMD);
        answer
    }

    fn status(&self, answer: u64) -> u32 {
        u32::from_le_bytes(self.s.read(answer, 4).try_into().unwrap())
    }

    /// Gives the device `n` event buffers of `len` bytes.
    fn give(&mut self, n: usize, len: u32) {
        for _ in 0..n {
            let addr = EVBUF + 0x80 * u64::from(self.next_ev_desc);
            let desc = RawDescriptor::from(SplitDescriptor::new(
                addr,
                len,
                VRING_DESC_F_WRITE as u16,
                0,
            ));
            self.evq
                .add_desc_chains(&[desc], self.next_ev_desc)
                .unwrap();
            self.next_ev_desc += 1;
            self.offered.push(addr);
        }
        self.event(VIRTIO_BUFSHARE_VQ_EVENT);
    }

    fn ev_used_idx(&self) -> u16 {
        self.evq.used().idx().load()
    }

    /// The events used so far: (used length, type, buffer id, seqno,
    /// generation).
    fn events(&self) -> Vec<(u32, u32, u64, u64, u32)> {
        (0..self.ev_used_idx())
            .map(|i| {
                let elem = self.evq.used().ring().ref_at(i.into()).unwrap().load();
                let addr = self.offered[elem.id() as usize];
                let e = self.s.read(addr, 96);
                let le32 = |at: usize| u32::from_le_bytes(e[at..at + 4].try_into().unwrap());
                let le64 = |at: usize| u64::from_le_bytes(e[at..at + 8].try_into().unwrap());
                if elem.len() == 0 {
                    (0, 0, 0, 0, 0)
                } else {
                    (elem.len(), le32(0), le64(8), le64(16), le32(4))
                }
            })
            .collect()
    }
}

const BUFFERS: u64 = 1 << VIRTIO_BUFSHARE_F_BUFFERS;
const EVENTS: u64 = 1 << VIRTIO_BUFSHARE_F_EVENTS;
const GENERATION: u64 = 1 << VIRTIO_BUFSHARE_F_GENERATION;

fn register(id: u64) -> Vec<u8> {
    RegisterCommand::complete(id, "test", &[(DATA + 0x1000 * id, 0x1000)]).to_bytes()
}

fn update(id: u64, seqno: u64) -> Vec<u8> {
    update_command(id, seqno, None, None).as_slice().to_vec()
}

#[test]
fn released_at_once_without_consumers_small_buffers_skipped() {
    let mem = memory();
    let mut e = Events::new(&mem, BUFFERS | EVENTS | GENERATION);
    let generation = e.s.backend.device().generation();
    e.send(&register(1));
    // No buffer yet: the events wait, merged.
    e.send(&update(1, 5));
    e.send(&update(1, 9));
    assert_eq!(e.s.backend.device().pending().len(), 1);
    assert_eq!(e.ev_used_idx(), 0);
    // A buffer too small is skipped, with length 0.
    e.give(1, 95);
    assert_eq!(e.events(), [(0, 0, 0, 0, 0)]);
    e.give(2, 96);
    assert_eq!(
        e.events(),
        [
            (0, 0, 0, 0, 0),
            (96, VIRTIO_BUFSHARE_EVT_RELEASED, 1, 9, generation)
        ]
    );
    // The buffer left is used by the next event.
    e.send(&update(1, 10));
    assert_eq!(
        e.events()[2],
        (96, VIRTIO_BUFSHARE_EVT_RELEASED, 1, 10, generation)
    );
    // Unregistered with no holder: answered, then FREED.
    let answer = e.send(&unregister(1));
    assert_eq!(e.status(answer), VIRTIO_BUFSHARE_S_OK);
    e.give(1, 96);
    assert_eq!(
        e.events()[3],
        (96, VIRTIO_BUFSHARE_EVT_FREED, 1, 0, generation)
    );
}

#[test]
fn released_only_when_every_holder_released() {
    let mem = memory();
    let mut e = Events::new(&mem, BUFFERS | EVENTS);
    e.give(8, 96);
    e.send(&register(2));
    let h = e.holders();
    // Two consumers are given update 3 (the hub does that as it queues it).
    h.given(2, 10, 3);
    h.given(2, 11, 3);
    let answer = e.send(&update(2, 3));
    // The answer is used; no RELEASED.
    assert_eq!(e.s.used_idx(), 2);
    assert_eq!(e.status(answer), VIRTIO_BUFSHARE_S_OK);
    assert_eq!(e.ev_used_idx(), 0);
    h.release(2, 10, 3);
    e.event(HOLDERS_EVENT);
    assert_eq!(e.ev_used_idx(), 0, "one consumer still holds update 3");
    h.given(2, 10, 4);
    e.send(&update(2, 4));
    assert_eq!(e.ev_used_idx(), 0);
    h.release(2, 11, 3);
    e.event(HOLDERS_EVENT);
    // 3 released by both; 4 not by consumer 10.
    assert_eq!(e.events(), [(96, VIRTIO_BUFSHARE_EVT_RELEASED, 2, 3, 0)]);
    h.release(2, 10, 4);
    e.event(HOLDERS_EVENT);
    assert_eq!(e.events()[1], (96, VIRTIO_BUFSHARE_EVT_RELEASED, 2, 4, 0));
}

#[test]
fn freed_after_the_last_holder_with_events() {
    let mem = memory();
    let mut e = Events::new(&mem, BUFFERS | EVENTS);
    e.give(4, 96);
    e.send(&register(3));
    let h = e.holders();
    h.handed(3, 7);
    let answer = e.send(&unregister(3));
    // Answered at once; FREED once consumer 7 closed it.
    assert_eq!(e.status(answer), VIRTIO_BUFSHARE_S_OK);
    assert_eq!(e.ev_used_idx(), 0);
    assert!(h.closed(3, 7));
    e.event(HOLDERS_EVENT);
    assert_eq!(e.events(), [(96, VIRTIO_BUFSHARE_EVT_FREED, 3, 0, 0)]);
}

#[test]
fn held_unregister_answered_when_the_last_holder_closes() {
    let mem = memory();
    // The driver of today: no events.
    let mut e = Events::new(&mem, BUFFERS | GENERATION);
    e.send(&register(4));
    e.send(&register(5));
    let h = e.holders();
    h.handed(4, 7);
    h.handed(4, 8);
    let held = e.offer(&unregister(4));
    e.event(VIRTIO_BUFSHARE_VQ_CMD);
    assert_eq!(e.s.used_idx(), 2, "UNREGISTER 4 is not answered");
    // Later commands go on, answered before it.
    let later = e.send(&unregister(5));
    assert_eq!(e.s.used_idx(), 3);
    assert_eq!(e.s.used(2).0, 6, "UNREGISTER 5 (head 6) first");
    assert_eq!(e.status(later), VIRTIO_BUFSHARE_S_OK);
    assert!(h.closed(4, 7));
    e.event(HOLDERS_EVENT);
    assert_eq!(e.s.used_idx(), 3, "consumer 8 still holds it");
    // Answered now, with the generation of now.
    assert!(h.closed(4, 8));
    e.event(HOLDERS_EVENT);
    assert_eq!(e.s.used_idx(), 4);
    assert_eq!(e.s.used(3), (4, 8));
    assert_eq!(e.status(held), VIRTIO_BUFSHARE_S_OK);
    let generation = u32::from_le_bytes(e.s.read(held + 4, 4).try_into().unwrap());
    assert_eq!(generation, e.s.backend.device().generation());
    // No event queue is used without the feature.
    assert_eq!(e.ev_used_idx(), 0);
}

#[test]
fn a_device_without_events_holds_unregister_whatever_is_acked() {
    let mem = memory();
    // A driver that would take events (it acks the bit all the same).
    let mut e = Events::new(&mem, 0);
    let plain = VhostUserBufshareBackend::new(LIMITS).unwrap();
    e.s.backend = std::mem::replace(&mut e.s.backend, plain).without_events();
    e.s.backend
        .update_memory(GuestMemoryAtomic::new(mem.clone()))
        .unwrap();
    let features = e.s.backend.features();
    assert_eq!(features & EVENTS, 0, "F_EVENTS not offered");
    assert_ne!(features & (BUFFERS | GENERATION), 0);
    assert_eq!(e.s.backend.num_queues(), 1);
    e.s.backend.acked_features(BUFFERS | EVENTS | GENERATION);
    assert!(!e.s.backend.device().events_enabled());
    e.send(&register(6));
    let h = e.holders();
    h.handed(6, 7);
    let held = e.offer(&unregister(6));
    e.event(VIRTIO_BUFSHARE_VQ_CMD);
    assert_eq!(e.s.used_idx(), 1, "UNREGISTER 6 is not answered");
    let mut cmd = VirtioBufshareCmdGetConsumers::default();
    cmd.hdr.type_ = VIRTIO_BUFSHARE_CMD_GET_CONSUMERS.into();
    cmd.application[..3].copy_from_slice(b"cam");
    let answer = e.send(cmd.as_slice());
    assert_eq!(e.status(answer), VIRTIO_BUFSHARE_S_UNSUPPORTED);
    assert!(h.closed(6, 7));
    e.event(HOLDERS_EVENT);
    assert_eq!(e.s.used_idx(), 3);
    assert_eq!(e.status(held), VIRTIO_BUFSHARE_S_OK);
    // No event queue, no event.
    assert_eq!(e.ev_used_idx(), 0);
}

#[test]
fn a_reset_drops_held_answers_and_pending_events() {
    let mem = memory();
    let mut e = Events::new(&mem, BUFFERS);
    e.send(&register(4));
    e.holders().handed(4, 7);
    e.send(&unregister(4));
    assert_eq!(e.s.used_idx(), 1);
    e.s.backend.reset_device();
    assert!(e.holders().draining().is_empty());
    assert!(e.holders().closed(4, 7));
    e.event(HOLDERS_EVENT);
    assert_eq!(e.s.used_idx(), 1, "dropped, not answered");

    let mut e = Events::new(&mem, BUFFERS | EVENTS);
    e.send(&register(1));
    e.send(&update(1, 1));
    assert_eq!(e.s.backend.device().pending().len(), 1);
    e.s.backend.reset_device();
    assert!(e.s.backend.device().pending().is_empty());
}

#[test]
fn lost_before_any_further_command() {
    let mem = memory();
    let mut e = Events::with_faults(&mem, BUFFERS | EVENTS | GENERATION);
    e.send(&register(1));
    e.send(&update(1, 1));
    e.holders().handed(1, 7);
    e.send(&unregister(1));
    std::fs::write(e.fault.as_ref().unwrap(), "lose-buffers x").unwrap();
    // No event buffer: the command waits for LOST to go out.
    e.send(&get_info());
    assert_eq!(e.s.used_idx(), 3, "GET_INFO not carried out");
    let pending = e.s.backend.device().pending();
    assert!(pending.lost_pending());
    assert_eq!(pending.len(), 1, "RELEASED dropped with the buffers");
    // The holder lets go of the lost buffer: no FREED for it.
    assert!(e.holders().closed(1, 7));
    e.event(HOLDERS_EVENT);
    e.give(2, 96);
    let generation = e.s.backend.device().generation();
    assert_eq!(
        e.events(),
        [(96, VIRTIO_BUFSHARE_EVT_LOST, 0, 0, generation)]
    );
    // Then the command was carried out.
    assert_eq!(e.s.used_idx(), 4);
    // With room, LOST goes at once and the command follows.
    std::fs::write(e.fault.as_ref().unwrap(), "lose-buffers y").unwrap();
    e.send(&get_info());
    assert_eq!(e.s.used_idx(), 5);
    assert_eq!(e.events()[1].1, VIRTIO_BUFSHARE_EVT_LOST);
}

#[test]
fn bogus_events_go_ahead_once_per_token() {
    use crate::fault::{
        BOGUS_APPLICATION, BOGUS_BUFFER_ID, BOGUS_EVENT_TYPE, BOGUS_SEQNO_AHEAD, SHORT_EVENT_LEN,
    };

    let mem = memory();
    let mut e = Events::with_faults(&mem, BUFFERS | EVENTS | GENERATION);
    let generation = e.s.backend.device().generation();
    e.send(&register(1));
    e.send(&update(1, 3));
    e.give(1, 96);
    assert_eq!(
        e.events(),
        [(96, VIRTIO_BUFSHARE_EVT_RELEASED, 1, 3, generation)]
    );
    std::fs::write(e.fault.as_ref().unwrap(), "bogus-events a").unwrap();
    // They wait for room, then go ahead of the RELEASED of update 4.
    e.send(&update(1, 4));
    e.give(9, 96);
    let got = e.events();
    assert_eq!(got.len(), 9);
    assert_eq!(
        got[1],
        (
            SHORT_EVENT_LEN as u32,
            VIRTIO_BUFSHARE_EVT_FREED,
            1,
            0,
            generation
        )
    );
    assert_eq!(got[2], (96, BOGUS_EVENT_TYPE, 1, 0, generation));
    assert_eq!(
        got[3],
        (
            96,
            VIRTIO_BUFSHARE_EVT_RELEASED,
            BOGUS_BUFFER_ID,
            1,
            generation
        )
    );
    assert_eq!(
        got[4],
        (
            96,
            VIRTIO_BUFSHARE_EVT_FREED,
            BOGUS_BUFFER_ID,
            0,
            generation
        )
    );
    assert_eq!(got[5].1, VIRTIO_BUFSHARE_EVT_CONSUMERS);
    let app = e.s.read(e.offered[5] + 32, BOGUS_APPLICATION.len());
    assert_eq!(app, BOGUS_APPLICATION.as_bytes());
    // The buffer's last update was 3 when the fault was read.
    assert_eq!(
        got[6],
        (
            96,
            VIRTIO_BUFSHARE_EVT_RELEASED,
            1,
            3 + BOGUS_SEQNO_AHEAD,
            generation
        )
    );
    assert_eq!(got[7], (96, VIRTIO_BUFSHARE_EVT_FREED, 1, 0, generation));
    assert_eq!(got[8], (96, VIRTIO_BUFSHARE_EVT_RELEASED, 1, 4, generation));
    // Once per TOKEN.
    e.send(&update(1, 5));
    assert_eq!(e.events().len(), 10);
    assert_eq!(
        e.events()[9],
        (96, VIRTIO_BUFSHARE_EVT_RELEASED, 1, 5, generation)
    );
}

#[test]
fn get_consumers() {
    let mem = memory();
    let mut cmd = VirtioBufshareCmdGetConsumers::default();
    cmd.hdr.type_ = VIRTIO_BUFSHARE_CMD_GET_CONSUMERS.into();
    cmd.application[..3].copy_from_slice(b"cam");
    let bytes = cmd.as_slice().to_vec();

    // Without the feature: unsupported.
    let mut e = Events::new(&mem, BUFFERS);
    let answer = e.send(&bytes);
    assert_eq!(e.status(answer), VIRTIO_BUFSHARE_S_UNSUPPORTED);

    let mut e = Events::new(&mem, BUFFERS | EVENTS);
    let subs = Arc::clone(e.holders().subscriptions());
    subs.attach(1, Subscribed::All);
    subs.attach(2, Subscribed::Some(BTreeSet::from(["cam".to_string()])));
    subs.attach(3, Subscribed::Some(BTreeSet::from(["other".to_string()])));
    let answer = e.send(&bytes);
    assert_eq!(e.s.used(0).1, 16);
    assert_eq!(
        e.s.read(answer, 16),
        [0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
    );
    // Bad names and lengths.
    let mut bad = bytes.clone();
    bad[8] = b' ';
    let answer = e.send(&bad);
    assert_eq!(e.status(answer), VIRTIO_BUFSHARE_S_INVALID);
    let answer = e.send(&bytes[..71]);
    assert_eq!(e.status(answer), VIRTIO_BUFSHARE_S_INVALID);
    let mut long = bytes.clone();
    long.push(0);
    let answer = e.send(&long);
    assert_eq!(e.status(answer), VIRTIO_BUFSHARE_S_INVALID);
    // CONSUMERS events, as the consumer socket notes them.
    e.give(1, 96);
    e.holders().consumers_changed("cam", 1);
    e.event(HOLDERS_EVENT);
    let ev = e.s.read(EVBUF, 96);
    assert_eq!(&ev[..4], &0x1002u32.to_le_bytes());
    assert_eq!(&ev[24..28], &1u32.to_le_bytes());
    assert_eq!(&ev[32..36], b"cam\0");
}

/// `avail_event` of the event queue: the available index at which the
/// driver kicks it (with EVENT_IDX).
fn ev_avail_event(e: &Events) -> u16 {
    let addr = e.evq.used_addr().0 + 4 + 8 * u64::from(EVQ_SIZE);
    u16::from_le(e.s.mem.read_obj(GuestAddress(addr)).unwrap())
}

#[test]
fn out_of_event_buffers_with_event_idx_the_driver_is_asked_to_kick() {
    let mem = memory();
    let mut e = Events::new(&mem, BUFFERS | EVENTS);
    e.evring.set_queue_event_idx(true);
    e.give(2, 96);
    for id in 1..=3 {
        e.send(&register(id));
    }
    for id in 1..=3 {
        e.send(&unregister(id));
    }
    // Two FREED written, the third waits for a buffer.
    assert_eq!(e.ev_used_idx(), 2);
    assert_eq!(e.s.backend.device().pending().len(), 1);
    // With EVENT_IDX the driver kicks only when its available index passes
    // avail_event: the next buffer it adds must wake the device, or FREED
    // waits for whatever command comes next.
    assert_eq!(ev_avail_event(&e), 2);
    e.give(1, 96);
    assert_eq!(e.events()[2], (96, VIRTIO_BUFSHARE_EVT_FREED, 3, 0, 0));
    // With buffers to spare and nothing pending, the driver need not kick.
    e.give(4, 96);
    e.send(&register(4));
    e.send(&update(4, 1));
    assert_eq!(e.ev_used_idx(), 4);
    assert_eq!(
        ev_avail_event(&e),
        2,
        "no kick asked for while buffers are left"
    );
}
