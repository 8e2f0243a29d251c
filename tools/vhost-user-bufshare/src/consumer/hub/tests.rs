// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The hub without sockets: dispatch by application, subscription,
//! withdrawals, overflow, guests coming and going.

use std::collections::BTreeSet;
use std::fs::File;

use bufshare_consumer::{ByteRange, ErrorCode, Rect, VERSION};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use vm_memory::{FileOffset, GuestAddress};

use super::*;
use crate::buffers::resolve_range;
use crate::consumer::access::RamAccess;
use crate::props::parse_properties;

/// Guest RAM of 1 MiB in a memfd sealed as QEMU seals it, and a region
/// that no file backs.
fn memory() -> (GuestMemoryMmap, File) {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let file = File::from(
        memfd_create(
            "hub-test",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .unwrap(),
    );
    file.set_len(0x10_0000).unwrap();
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
    )
    .unwrap();
    let mem = GuestMemoryMmap::from_ranges_with_files(&[
        (
            GuestAddress(0),
            0x10_0000,
            Some(FileOffset::new(file.try_clone().unwrap(), 0)),
        ),
        (GuestAddress(0x100_0000), 0x1000, None),
    ])
    .unwrap();
    (mem, file)
}

/// A complete buffer of one range of 0x1000 bytes at `id * 0x1000`.
fn buffer(mem: &GuestMemoryMmap, id: u64, app: &str) -> Buffer {
    let props = parse_properties(b"width=4\0", 100).unwrap();
    let mut b = Buffer::new(id, app.into(), 0x1000, 1, props);
    b.push_ranges(
        resolve_range(mem, 0, id * 0x1000, 0x1000).unwrap(),
        1,
        0x1000,
    );
    b
}

fn only(names: &[&str]) -> Applications {
    Applications::Only(names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>())
}

fn update(seqno: u64) -> UpdateInfo {
    UpdateInfo {
        seqno,
        range: None,
        rect: None,
    }
}

/// What a queue holds, in short: ("add", guest, id) and so on.
fn drain(queue: &ConsumerQueue) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match queue.pop() {
            Next::Item(item) => out.push(match item {
                Item::Add {
                    guest, id, seqno, ..
                } => format!("add {guest} {id} {seqno}"),
                Item::Update { guest, id, info } => format!("update {guest} {id} {}", info.seqno),
                Item::Properties { guest, id, props } => {
                    format!("props {guest} {id} {}", props.len())
                }
                Item::Remove { guest, id } => format!("remove {guest} {id}"),
                Item::Reset { guest, reason } => format!("reset {guest} {reason:?}"),
            }),
            Next::End(e) => out.push(format!("end {:?}", e.code)),
            Next::Idle | Next::Done => return out,
        }
    }
}

/// A consumer of the current version trusted with all of the guests'
/// RAM: it gets segments (there is no udmabuf here).
const TRUSTED: Receiver = Receiver {
    version: VERSION,
    ram: Some(RamAccess::ReadWrite),
};
/// The same, of version 1.
const V1: Receiver = Receiver {
    version: 1,
    ram: Some(RamAccess::ReadWrite),
};

fn hub(limit: usize) -> Arc<Hub> {
    Arc::new(Hub::new(limit, None))
}

#[test]
fn dispatch_by_application() {
    let (mem, _file) = memory();
    let hub = hub(100);
    let guest = hub.add_guest("vm0").unwrap();
    let cam = hub
        .subscribe("cam".into(), only(&["cam"]), TRUSTED)
        .unwrap();
    let all = hub
        .subscribe("all".into(), Applications::All, TRUSTED)
        .unwrap();
    let other = hub
        .subscribe("other".into(), only(&["other", "x"]), TRUSTED)
        .unwrap();
    assert_eq!(hub.consumers(), 3);

    let b = buffer(&mem, 1, "cam");
    let mut got = vec![Vec::new(); 3];
    let mut take = || {
        for (q, got) in [&cam, &all, &other].into_iter().zip(&mut got) {
            got.extend(drain(q));
        }
    };
    guest.added(&b, Some(&mem));
    take();
    guest.updated(&b, &update(5));
    guest.properties(&b);
    guest.removed(&b);
    take();
    let expected = [
        "add vm0 1 0",
        "update vm0 1 5",
        "props vm0 1 1",
        "remove vm0 1",
    ];
    assert_eq!(got[0], expected);
    assert_eq!(got[1], expected);
    assert!(got[2].is_empty());
    // Events about buffers never handed over are ignored.
    guest.updated(&b, &update(6));
    guest.removed(&b);
    assert!(cam.is_empty() && all.is_empty());
    assert_eq!(cam.who(), "cam");
}

#[test]
fn subscription_gets_what_exists() {
    let (mem, _file) = memory();
    let hub = hub(1);
    let b_guest = hub.add_guest("b-vm").unwrap();
    let a_guest = hub.add_guest("a-vm").unwrap();
    for id in [3, 1, 2] {
        b_guest.added(&buffer(&mem, id, "cam"), Some(&mem));
    }
    a_guest.added(&buffer(&mem, 9, "cam"), Some(&mem));
    a_guest.added(&buffer(&mem, 8, "other"), Some(&mem));
    // The subscription sees the last seqno.
    b_guest.updated(&buffer(&mem, 2, "cam"), &update(7));

    let q = hub.subscribe("q".into(), only(&["cam"]), TRUSTED).unwrap();
    // Four ADDs with a limit of 1: they do not count; one live event fits.
    assert_eq!(q.len(), 4);
    b_guest.updated(&buffer(&mem, 1, "cam"), &update(1));
    assert_eq!(
        drain(&q),
        [
            "add a-vm 9 0",
            "add b-vm 1 0",
            "add b-vm 2 7",
            "add b-vm 3 0",
            "update b-vm 1 1"
        ]
    );
    assert_eq!(hub.consumers(), 1);
}

#[test]
fn overflow_resynchronises_the_guest_only() {
    let (mem, _file) = memory();
    let hub = hub(3);
    let vm0 = hub.add_guest("vm0").unwrap();
    let vm1 = hub.add_guest("vm1").unwrap();
    let q = hub
        .subscribe("q".into(), Applications::All, TRUSTED)
        .unwrap();
    let v1 = hub.subscribe("v1".into(), Applications::All, V1).unwrap();
    let (b1, b2, b3) = (
        buffer(&mem, 1, "cam"),
        buffer(&mem, 2, "cam"),
        buffer(&mem, 3, "x"),
    );
    vm0.added(&b1, Some(&mem));
    vm1.added(&b2, Some(&mem));
    assert_eq!(drain(&q), ["add vm0 1 0", "add vm1 2 0"]);
    assert_eq!(drain(&v1), ["add vm0 1 0", "add vm1 2 0"]);
    // vm1 floods, with vm0 events in between: 3 of each fit.
    vm0.updated(&b1, &update(1));
    vm1.updated(&b2, &update(1));
    vm1.updated(&b2, &update(2));
    vm0.updated(&b1, &update(2));
    vm1.added(&b3, Some(&mem));
    assert_eq!(q.len(), 5);
    // vm1's fourth overflows its share: vm1's events are dropped, and
    // replaced by a RESET and its buffers as they are; vm0's stay, and
    // the consumer stays.
    vm1.updated(&b2, &update(3));
    assert_eq!(hub.consumers(), 2);
    assert_eq!(
        drain(&q),
        [
            "update vm0 1 1",
            "update vm0 1 2",
            "reset vm1 Overflow",
            "add vm1 2 3",
            "add vm1 3 0"
        ]
    );
    // A version 1 connection has no OVERFLOW reason: DISCONNECTED, which
    // it knows to be followed by ADDs of the same ids.
    assert_eq!(
        drain(&v1),
        [
            "update vm0 1 1",
            "update vm0 1 2",
            "reset vm1 Disconnected",
            "add vm1 2 3",
            "add vm1 3 0"
        ]
    );
    // The share is free again; nothing was lost for vm0.
    for seqno in 4..=6 {
        vm1.updated(&b2, &update(seqno));
    }
    vm0.updated(&b1, &update(3));
    assert_eq!(q.len(), 4);
    // A guest the consumer holds nothing of: no RESET, just the ADDs.
    let late = hub.subscribe("late".into(), only(&["y"]), TRUSTED).unwrap();
    let b4 = buffer(&mem, 4, "y");
    for _ in 0..3 {
        vm1.added(&b4, Some(&mem));
        vm1.removed(&b4);
    }
    assert!(late.is_empty(), "withdrawn: nothing held, nothing queued");
    vm1.added(&b4, Some(&mem));
    for seqno in 1..=4 {
        vm1.updated(&b4, &update(seqno));
    }
    // The fourth live event overflows: the ADD again, as it is then.
    assert_eq!(drain(&late), ["add vm1 4 3", "update vm1 4 4"]);
}

#[test]
fn remove_withdraws_what_was_not_sent() {
    let (mem, _file) = memory();
    let hub = hub(100);
    let guest = hub.add_guest("vm0").unwrap();
    let q = hub
        .subscribe("q".into(), Applications::All, TRUSTED)
        .unwrap();
    let (b1, b2) = (buffer(&mem, 1, "cam"), buffer(&mem, 2, "cam"));
    guest.added(&b1, Some(&mem));
    guest.added(&b2, Some(&mem));
    guest.updated(&b1, &update(1));
    guest.updated(&b2, &update(1));
    guest.properties(&b1);
    // Buffer 1 goes before its ADD was taken: nothing of it is left.
    guest.removed(&b1);
    assert_eq!(drain(&q), ["add vm0 2 0", "update vm0 2 1"]);

    // Its ADD taken, its events stay, and its REMOVE is sent.
    guest.updated(&b2, &update(2));
    guest.removed(&b2);
    assert_eq!(drain(&q), ["update vm0 2 2", "remove vm0 2"]);
}

#[test]
fn reset_goes_to_those_who_hold_buffers() {
    let (mem, _file) = memory();
    let hub = hub(100);
    let vm0 = hub.add_guest("vm0").unwrap();
    let vm1 = hub.add_guest("vm1").unwrap();
    let holder = hub
        .subscribe("holder".into(), Applications::All, TRUSTED)
        .unwrap();
    let b = buffer(&mem, 1, "cam");
    vm0.added(&b, Some(&mem));
    vm1.added(&b, Some(&mem));
    assert_eq!(drain(&holder), ["add vm0 1 0", "add vm1 1 0"]);
    // Subscribed now: its ADDs are still queued.
    let late = hub
        .subscribe("late".into(), Applications::All, TRUSTED)
        .unwrap();
    let bystander = hub
        .subscribe("bystander".into(), only(&["other"]), TRUSTED)
        .unwrap();
    vm0.updated(&b, &update(1));
    vm1.updated(&b, &update(1));
    vm0.reset(ResetReason::DeviceReset);
    // Everything queued about vm0 is withdrawn; only the holder is told.
    assert_eq!(drain(&holder), ["update vm1 1 1", "reset vm0 DeviceReset"]);
    assert_eq!(drain(&late), ["add vm1 1 0", "update vm1 1 1"]);
    assert!(drain(&bystander).is_empty());

    // The guest registers buffer 1 again; two resets in a row are one.
    vm0.added(&b, Some(&mem));
    vm0.reset(ResetReason::DeviceReset);
    assert!(drain(&holder).is_empty());
    vm0.added(&b, Some(&mem));
    assert_eq!(drain(&holder), ["add vm0 1 0"]);
    vm0.updated(&b, &update(1));
    vm0.reset(ResetReason::DeviceReset);
    vm0.added(&b, Some(&mem));
    vm0.reset(ResetReason::Disconnected);
    assert_eq!(drain(&holder), ["reset vm0 Disconnected"]);
    // Told, it holds nothing of vm0 any more.
    vm0.reset(ResetReason::DeviceReset);
    assert!(drain(&holder).is_empty());
    // A new subscriber gets nothing of vm0.
    let q = hub
        .subscribe("q".into(), Applications::All, TRUSTED)
        .unwrap();
    assert_eq!(drain(&q), ["add vm1 1 1"]);
}

#[test]
fn same_id_again_after_a_reset() {
    let (mem, _file) = memory();
    let hub = hub(100);
    let vm0 = hub.add_guest("vm0").unwrap();
    let q = hub
        .subscribe("q".into(), Applications::All, TRUSTED)
        .unwrap();
    let b = buffer(&mem, 1, "cam");
    vm0.added(&b, Some(&mem));
    assert_eq!(drain(&q), ["add vm0 1 0"]);
    // Not taken yet: RESET, then the new buffer 1 and its removal.
    vm0.reset(ResetReason::DeviceReset);
    vm0.added(&b, Some(&mem));
    vm0.removed(&b);
    assert_eq!(drain(&q), ["reset vm0 DeviceReset"]);
    vm0.added(&b, Some(&mem));
    vm0.reset(ResetReason::DeviceReset);
    vm0.added(&b, Some(&mem));
    assert_eq!(drain(&q), ["add vm0 1 0"]);
    vm0.removed(&b);
    assert_eq!(drain(&q), ["remove vm0 1"]);
}

#[test]
fn guests_come_and_go() {
    let (mem, _file) = memory();
    let hub = hub(100);
    assert_eq!(
        hub.add_guest("a b").unwrap_err(),
        HubError::BadName("a b".into())
    );
    assert!(hub.add_guest("").is_err());
    assert!(hub.add_guest(&"x".repeat(64)).is_err());
    let vm0 = hub.add_guest("vm0").unwrap();
    assert_eq!(vm0.name(), "vm0");
    assert_eq!(
        hub.add_guest("vm0").unwrap_err(),
        HubError::Duplicate("vm0".into())
    );
    let q = hub
        .subscribe("q".into(), Applications::All, TRUSTED)
        .unwrap();
    vm0.added(&buffer(&mem, 1, "cam"), Some(&mem));
    drain(&q);
    // The guest goes away: its buffers with it.
    drop(vm0);
    assert_eq!(drain(&q), ["reset vm0 Disconnected"]);
    let vm0 = hub.add_guest("vm0").unwrap();
    assert!(drain(
        &hub.subscribe("new".into(), Applications::All, TRUSTED)
            .unwrap()
    )
    .is_empty());
    drop(vm0);
}

#[test]
fn buffers_that_cannot_be_handed_over() {
    let (mem, _file) = memory();
    let hub = hub(100);
    let vm0 = hub.add_guest("vm0").unwrap();
    let q = hub
        .subscribe("q".into(), Applications::All, TRUSTED)
        .unwrap();
    // In memory that no file backs.
    let props = crate::props::Properties::default();
    let mut anon = Buffer::new(1, "cam".into(), 0x10, 1, props);
    anon.push_ranges(resolve_range(&mem, 0, 0x100_0000, 0x10).unwrap(), 1, 0x10);
    vm0.added(&anon, Some(&mem));
    // No memory.
    vm0.added(&buffer(&mem, 2, "cam"), None);
    vm0.updated(&anon, &update(1));
    vm0.removed(&anon);
    assert!(q.is_empty());

    // Properties too large for consumers: the buffer is theirs no more.
    let mut b = buffer(&mem, 3, "cam");
    vm0.added(&b, Some(&mem));
    assert_eq!(drain(&q), ["add vm0 3 0"]);
    let big = format!("p={}\0", "x".repeat(MAX_PROPS_SIZE));
    b.props = parse_properties(big.as_bytes(), usize::MAX).unwrap();
    vm0.properties(&b);
    vm0.updated(&b, &update(1));
    assert_eq!(drain(&q), ["remove vm0 3"]);
    // And one that is too large from the start is never handed over.
    b.id = 4;
    vm0.added(&b, Some(&mem));
    assert!(q.is_empty());
}

#[test]
fn finish_all_and_unsubscribe() {
    let (mem, _file) = memory();
    let hub = hub(100);
    let vm0 = hub.add_guest("vm0").unwrap();
    let a = hub
        .subscribe("a".into(), Applications::All, TRUSTED)
        .unwrap();
    let b = hub
        .subscribe("b".into(), Applications::All, TRUSTED)
        .unwrap();
    hub.unsubscribe(&b);
    assert_eq!(hub.consumers(), 1);
    vm0.added(&buffer(&mem, 1, "cam"), Some(&mem));
    hub.finish_all(&ErrorMessage::new(ErrorCode::Shutdown, "bye"));
    assert_eq!(hub.consumers(), 0);
    // What was queued comes first; nothing more is taken.
    assert_eq!(
        a.push(Item::Remove {
            guest: Arc::from("vm0"),
            id: 1
        }),
        Pushed::Closed
    );
    assert_eq!(drain(&a), ["add vm0 1 0", "end Shutdown"]);
    assert!(matches!(b.pop(), Next::Idle));
    // Neither a second finish nor an end replaces the first.
    a.finish(ErrorMessage::new(ErrorCode::Busy, ""));
    a.end(ErrorMessage::new(ErrorCode::Overflow, ""));
    assert!(matches!(a.pop(), Next::Done));

    // An end (overflow) drops what is queued and wins over a finish.
    let c = hub
        .subscribe("c".into(), Applications::All, TRUSTED)
        .unwrap();
    vm0.added(&buffer(&mem, 2, "cam"), Some(&mem));
    c.finish(ErrorMessage::new(ErrorCode::Shutdown, ""));
    c.end(ErrorMessage::new(ErrorCode::Overflow, ""));
    assert_eq!(drain(&c), ["end Overflow"]);
}

fn readable(queue: &ConsumerQueue) -> bool {
    let mut fds = [PollFd::new(queue.wake_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
}

#[test]
fn wake_ups() {
    let (mem, _file) = memory();
    let hub = hub(100);
    let vm0 = hub.add_guest("vm0").unwrap();
    let q = hub
        .subscribe("q".into(), Applications::All, TRUSTED)
        .unwrap();
    assert!(!readable(&q));
    vm0.added(&buffer(&mem, 1, "cam"), Some(&mem));
    assert!(readable(&q));
    q.clear_wake();
    assert!(!readable(&q));
    q.clear_wake();
    q.end(ErrorMessage::new(ErrorCode::Shutdown, ""));
    assert!(readable(&q));
}

#[test]
fn items_make_valid_messages() {
    let (mem, _file) = memory();
    let hub = hub(100);
    let vm0 = hub.add_guest("vm0").unwrap();
    let q = hub
        .subscribe("q".into(), Applications::All, TRUSTED)
        .unwrap();
    let b = buffer(&mem, 1, "cam");
    let mut kinds = Vec::new();
    let mut take = |q: &ConsumerQueue| {
        while let Next::Item(item) = q.pop() {
            let message = item.to_message(None, q.receiver()).unwrap();
            message.encode().unwrap();
            if let Message::Event(event) = &message {
                assert_eq!(event.guest(), "vm0");
            }
            kinds.push(message.kind().to_string());
        }
    };
    vm0.added(&b, Some(&mem));
    take(&q);
    vm0.updated(
        &b,
        &UpdateInfo {
            seqno: 2,
            range: Some(ByteRange { offset: 0, len: 1 }),
            rect: Some(Rect {
                x: 0,
                y: 0,
                width: 1,
                height: 1,
            }),
        },
    );
    vm0.properties(&b);
    vm0.removed(&b);
    take(&q);
    vm0.added(&b, Some(&mem));
    take(&q);
    vm0.reset(ResetReason::DeviceReset);
    take(&q);
    assert_eq!(
        kinds,
        ["ADD", "UPDATE", "PROPERTIES", "REMOVE", "ADD", "RESET"]
    );
    assert_eq!(hub.memory_form(), MemoryForm::Segments);
    assert!(hub.udmabuf().is_none());
    assert_eq!(hub.queue_limit(), 100);
}

#[test]
fn remove_of_a_held_buffer_survives_the_id_used_again() {
    // Found by fuzzing the device with consumer checks: register,
    // unregister, register and unregister the same id while a consumer
    // lags; the second REMOVE withdrew the first one with the second ADD,
    // and the consumer kept using memory the guest had reused.
    let (mem, _file) = memory();
    let hub = hub(100);
    let guest = hub.add_guest("vm0").unwrap();
    let q = hub
        .subscribe("q".into(), Applications::All, TRUSTED)
        .unwrap();
    let b = buffer(&mem, 1, "cam");
    guest.added(&b, Some(&mem));
    assert_eq!(drain(&q), ["add vm0 1 0"]);

    // The consumer lags: nothing taken from here on.
    guest.updated(&b, &update(1));
    guest.removed(&b);
    guest.added(&b, Some(&mem));
    guest.updated(&b, &update(1));
    guest.properties(&b);
    guest.removed(&b);
    assert_eq!(drain(&q), ["update vm0 1 1", "remove vm0 1"]);

    // Again, with the second buffer taken before it goes.
    guest.added(&b, Some(&mem));
    assert_eq!(drain(&q), ["add vm0 1 0"]);
    guest.removed(&b);
    guest.added(&b, Some(&mem));
    assert_eq!(drain(&q), ["remove vm0 1", "add vm0 1 0"]);
    // Three times over, lagging all along.
    for _ in 0..3 {
        guest.removed(&b);
        guest.added(&b, Some(&mem));
    }
    guest.removed(&b);
    assert_eq!(drain(&q), ["remove vm0 1"]);
    // Nothing is held now: a last REMOVE is not sent.
    guest.added(&b, Some(&mem));
    guest.removed(&b);
    assert!(q.is_empty());
}

#[test]
fn events_of_buffers_never_given_are_not_queued() {
    let (mem, _file) = memory();
    let hub = hub(100);
    let guest = hub.add_guest("vm0").unwrap();
    let b = buffer(&mem, 1, "cam");
    guest.added(&b, Some(&mem));
    // Subscribed after: gets the ADD on subscription, then its events.
    let q = hub
        .subscribe("q".into(), Applications::All, TRUSTED)
        .unwrap();
    guest.updated(&b, &update(3));
    assert_eq!(drain(&q), ["add vm0 1 0", "update vm0 1 3"]);
    // The buffer's ADD withdrawn by a RESET: its later events are about a
    // buffer the consumer never got.
    guest.reset(ResetReason::DeviceReset);
    assert_eq!(drain(&q), ["reset vm0 DeviceReset"]);
    q.push(Item::Update {
        guest: Arc::from("vm0"),
        id: 1,
        info: update(4),
    });
    q.push(Item::Properties {
        guest: Arc::from("vm0"),
        id: 1,
        props: Arc::default(),
    });
    assert!(q.is_empty());
}

#[test]
fn a_buffer_the_consumer_cannot_take_is_forgotten() {
    // Its ADD was taken but could not be made for the consumer (no
    // dma-buf, not trusted with segments): the consumer hears nothing of
    // that buffer, not even its REMOVE or a RESET for it alone.
    let (mem, _file) = memory();
    let hub = hub(100);
    let guest = hub.add_guest("vm0").unwrap();
    let q = hub
        .subscribe("q".into(), Applications::All, TRUSTED)
        .unwrap();
    let (b1, b2) = (buffer(&mem, 1, "cam"), buffer(&mem, 2, "cam"));
    guest.added(&b1, Some(&mem));
    guest.updated(&b1, &update(1));
    let Next::Item(add) = q.pop() else {
        panic!("no ADD")
    };
    guest.properties(&b1);
    q.undeliverable(add.guest(), 1);
    guest.updated(&b1, &update(2));
    guest.reset(ResetReason::DeviceReset);
    assert!(q.is_empty(), "{:?}", drain(&q));

    // With another buffer held, the RESET stays; so does the next buffer
    // of the same id, once the first is removed.
    guest.added(&b1, Some(&mem));
    guest.added(&b2, Some(&mem));
    assert_eq!(drain(&q), ["add vm0 1 0", "add vm0 2 0"]);
    guest.removed(&b1);
    guest.added(&b1, Some(&mem));
    let Next::Item(Item::Remove { .. }) = q.pop() else {
        panic!("no REMOVE")
    };
    let Next::Item(add) = q.pop() else {
        panic!("no ADD")
    };
    guest.updated(&b1, &update(1));
    guest.removed(&b1);
    guest.added(&b1, Some(&mem));
    q.undeliverable(add.guest(), 1);
    guest.reset(ResetReason::DeviceReset);
    assert_eq!(drain(&q), ["reset vm0 DeviceReset"]);
}

#[test]
fn no_segments_for_an_untrusted_consumer() {
    // Without udmabuf a buffer could only go as segments, all of the
    // guest's RAM: an untrusted consumer's ADD is refused, with the
    // reason; its other events are not about memory.
    let (mem, _file) = memory();
    let hub = hub(100);
    let guest = hub.add_guest("vm0").unwrap();
    let untrusted = Receiver {
        version: VERSION,
        ram: None,
    };
    let q = hub
        .subscribe("q".into(), Applications::All, untrusted)
        .unwrap();
    let b = buffer(&mem, 1, "cam");
    guest.added(&b, Some(&mem));
    let Next::Item(add) = q.pop() else {
        panic!("no ADD")
    };
    let e = add.to_message(None, q.receiver()).unwrap_err();
    assert!(
        matches!(
            e,
            HandOverError::NotTrusted(crate::consumer::export::NoDmaBuf::NoUdmabuf)
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--trust-ram"), "{e}");
    // Trusted: segments.
    let message = add.to_message(None, &TRUSTED).unwrap();
    let Message::Event(Event::Add(add)) = message else {
        panic!("{message:?}");
    };
    assert!(matches!(
        add.memory,
        bufshare_consumer::Memory::Segments { .. }
    ));
}

#[test]
fn closed_owed_per_instance_ended() {
    let (mem, _file) = memory();
    let hub = Arc::new(Hub::new(100, None).with_close_grace(Duration::from_secs(60)));
    let guest = hub.add_guest("vm0").unwrap();
    let q = hub.subscribe("q".into(), only(&["cam"]), TRUSTED).unwrap();
    assert!(q.answers());
    let b = buffer(&mem, 1, "cam");
    guest.added(&b, Some(&mem));
    assert_eq!(drain(&q), ["add vm0 1 0"]);
    let holders = Arc::clone(guest.holders());
    assert_eq!(holders.instances(1, q.id()), 1);
    // Its queue overflows: RESET OVERFLOW and the ADD again. It owes one
    // CLOSED, for the first ADD; the second is held.
    q.resync(&Arc::from("vm0"), vec![adds_of_one(&hub, "vm0")]);
    assert_eq!(drain(&q), ["reset vm0 Overflow", "add vm0 1 0"]);
    assert_eq!(holders.instances(1, q.id()), 2);
    assert!(q.next_deadline().is_some());
    assert!(q.closed("vm0", 1));
    assert_eq!(q.next_deadline(), None, "nothing more owed");
    // The REMOVE: one CLOSED owed again.
    guest.removed(&b);
    assert_eq!(drain(&q), ["remove vm0 1"]);
    let due = q.next_deadline().unwrap();
    assert!(due > Instant::now() + Duration::from_secs(50));
    assert_eq!(q.overdue(Instant::now()), None);
    assert_eq!(q.overdue(due), Some((Arc::from("vm0"), 1)));
    assert!(q.closed("vm0", 1));
    assert_eq!(q.next_deadline(), None);
    assert!(!q.closed("vm0", 1), "nothing left to close");
    assert_eq!(holders.instances(1, q.id()), 0);
}

/// The ADD of buffer 1 of `guest` as the hub would send it again.
fn adds_of_one(hub: &Hub, guest: &str) -> Item {
    let inner = hub.lock();
    adds_of(&inner.guests, &Arc::from(guest), &only(&["cam"]))
        .pop()
        .unwrap()
}
