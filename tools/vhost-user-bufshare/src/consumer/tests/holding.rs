// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Who holds the memory, through real consumers: CLOSED, RELEASE, the
//! grace time, consumers that go away while their process lives on, and
//! consumers of version 2.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use bufshare_consumer::wire::Hello;
use bufshare_uapi::VIRTIO_BUFSHARE_F_EVENTS;

use super::*;
use crate::events::DeviceEvent;

const BUFFERS: u64 = 1 << VIRTIO_BUFSHARE_F_BUFFERS;
const EVENTS: u64 = 1 << VIRTIO_BUFSHARE_F_EVENTS;

impl Fixture {
    /// The pending events of the device, once the holders' notes are in.
    fn events(&mut self) -> Vec<DeviceEvent> {
        self.device.collect();
        let mut out = Vec::new();
        while self.device.pending().peek().is_some() {
            out.push(self.device.pending().peek().unwrap());
            self.device.next_event();
        }
        out
    }

    /// Waits until the device's events, gathered, are `expected`.
    fn wait_events(&mut self, expected: &[DeviceEvent]) {
        let start = Instant::now();
        let mut got = Vec::new();
        while got.len() < expected.len() && start.elapsed() < TIMEOUT {
            got.extend(self.events());
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got, expected);
    }

    /// Unregisters `id`; whether the answer was held (no events).
    fn unregister(&mut self, id: u64) -> bool {
        self.run(&unregister(id));
        self.device.take_held().is_some()
    }

    /// Waits until the holders of buffer `id` are none, and the device took
    /// the note that says so.
    fn wait_free(&mut self, id: u64) -> Duration {
        let start = Instant::now();
        let holders = self.device.holders();
        loop {
            // In this order: the holders note the buffer freed as they stop
            // draining it, so a note of a buffer seen gone is there to be
            // taken, and does not turn up among the next test step's events.
            let gone = !holders.draining().contains(&id);
            let freed = self.device.collect();
            if freed.contains(&id) || gone {
                return start.elapsed();
            }
            assert!(start.elapsed() < TIMEOUT, "buffer {id} still held");
            thread::sleep(Duration::from_millis(5));
        }
    }
}

fn consumers_event(count: u32) -> DeviceEvent {
    DeviceEvent::Consumers {
        application: "a".into(),
        count,
    }
}

#[test]
fn freed_once_the_consumer_closed_its_mapping() {
    let mut fx = Fixture::new(|_| {});
    fx.device.set_driver_features(BUFFERS | EVENTS);
    let mut client = fx.subscribed(&["a"]);
    fx.wait_events(&[consumers_event(1)]);
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    let add = expect_add(&mut client);
    let map = client.map(&add, false).unwrap();
    drop(add);
    // Unregistered: answered at once, not freed: the consumer holds it.
    assert!(!fx.unregister(1));
    assert!(matches!(next(&mut client), Event::Remove(_)));
    thread::sleep(Duration::from_millis(100));
    assert_eq!(fx.events(), []);
    assert_eq!(fx.device.holders().draining(), [1]);
    // The consumer unmaps: CLOSED, then FREED.
    drop(map);
    fx.wait_events(&[DeviceEvent::Freed(1)]);
    // The consumer goes: CONSUMERS 0.
    drop(client);
    fx.wait_events(&[consumers_event(0)]);
}

#[test]
fn held_unregister_without_events() {
    let mut fx = Fixture::new(|_| {});
    let mut client = fx.subscribed(&["a"]);
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    let add = expect_add(&mut client);
    let map = client.map(&add, false).unwrap();
    drop(add);
    assert!(fx.unregister(1), "held: the consumer maps it");
    assert!(matches!(next(&mut client), Event::Remove(_)));
    // Later commands go on.
    fx.run(&register(2, "a", 1, &[(0x1000, 0x1000)], 0x1000, b""));
    drop(map);
    fx.wait_free(1);
    // No events without the feature.
    assert_eq!(fx.events(), []);
    // A buffer nobody mapped: CLOSED as the REMOVE is read.
    drop(expect_add(&mut client));
    assert!(fx.unregister(2));
    assert!(matches!(next(&mut client), Event::Remove(_)));
    fx.wait_free(2);
}

#[test]
fn released_when_both_consumers_released() {
    let mut fx = Fixture::new(|_| {});
    fx.device.set_driver_features(BUFFERS | EVENTS);
    let mut one = fx.subscribed(&["a"]);
    let mut two = fx.subscribed(&[ALL_APPLICATIONS]);
    fx.wait_consumers(2);
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    expect_add(&mut one);
    expect_add(&mut two);
    fx.events();
    fx.run(update_command(1, 1, None, None).as_slice());
    fx.run(update_command(1, 2, None, None).as_slice());
    let (Event::Update(u1), Event::Update(u2)) = (next(&mut one), next(&mut one)) else {
        panic!("no UPDATEs");
    };
    assert_eq!(fx.events(), []);
    // One releases 2 (and so 1): the other has not.
    drop(one.frame(&u1));
    drop(one.frame(&u2));
    thread::sleep(Duration::from_millis(100));
    assert_eq!(fx.events(), []);
    let Event::Update(v1) = next(&mut two) else {
        panic!("no UPDATE")
    };
    two.frame(&v1).release().unwrap();
    fx.wait_events(&[DeviceEvent::Released { id: 1, seqno: 1 }]);
    two.release("vm0", 1, 2).unwrap();
    fx.wait_events(&[DeviceEvent::Released { id: 1, seqno: 2 }]);
    // Without consumers of the application: at once.
    drop(one);
    drop(two);
    fx.wait_consumers(0);
    fx.events();
    fx.run(update_command(1, 3, None, None).as_slice());
    assert_eq!(fx.events(), [DeviceEvent::Released { id: 1, seqno: 3 }]);
}

#[test]
fn consumers_counted_per_application() {
    let mut fx = Fixture::new(|_| {});
    fx.device.set_driver_features(BUFFERS | EVENTS);
    fx.run(&register(1, "b", 1, &[(0, 0x1000)], 0x1000, b""));
    let a = fx.subscribed(&["a"]);
    fx.wait_events(&[consumers_event(1)]);
    // Every application: those of the guest's buffers are told.
    let all = fx.subscribed(&[ALL_APPLICATIONS]);
    fx.wait_events(&[DeviceEvent::Consumers {
        application: "b".into(),
        count: 1,
    }]);
    assert_eq!(fx.device.holders().consumers("a"), 2);
    drop(a);
    fx.wait_events(&[consumers_event(1)]);
    drop(all);
    fx.wait_events(&[DeviceEvent::Consumers {
        application: "b".into(),
        count: 0,
    }]);
}

#[test]
fn not_closed_in_time_is_disconnected() {
    let mut fx = Fixture::new(|c| c.close_grace = Duration::from_millis(300));
    fx.device.set_driver_features(BUFFERS | EVENTS);
    let mut client = fx.subscribed(&["a"]);
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    let add = expect_add(&mut client);
    let map = client.map(&add, false).unwrap();
    drop(add);
    fx.wait_consumers(1);
    let start = Instant::now();
    assert!(!fx.unregister(1));
    assert!(matches!(next(&mut client), Event::Remove(_)));
    // Disconnected after the grace time...
    fx.wait_consumers(0);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(matches!(client.next_event(), Err(ClientError::Closed)));
    // ... and its process lives on (it is this one): still held.
    thread::sleep(Duration::from_millis(100));
    assert!(!fx.events().contains(&DeviceEvent::Freed(1)));
    assert_eq!(fx.server.as_ref().unwrap().waiting_for_exit(), 1);
    drop(map);
}

#[test]
fn version_2_is_done_when_sent_remove() {
    let mut fx = Fixture::new(|_| {});
    // A consumer of version 2: no RELEASE, no CLOSED.
    let stream = UnixStream::connect(&fx.path).unwrap();
    let hello: Message = Message::Hello(Hello {
        version: 2,
        applications: vec!["a".into()],
    });
    send_message(stream.as_fd(), &hello.encode().unwrap().bytes, &[]).unwrap();
    let client = Client::from_stream(stream);
    assert!(matches!(
        bufshare_consumer::io::recv_message(client.as_fd()).unwrap(),
        Some(Message::Welcome(w)) if w.version == 2
    ));
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    fx.run(update_command(1, 1, None, None).as_slice());
    for _ in 0..2 {
        assert!(matches!(
            bufshare_consumer::io::recv_message(client.as_fd()).unwrap(),
            Some(Message::Event(_))
        ));
    }
    // Taken, not answered: the UNREGISTER waits only until REMOVE is
    // sent (which may be done before the device asks).
    fx.unregister(1);
    fx.wait_free(1);
    // And its updates are released once sent, without a RELEASE (the
    // consumer's sender thread notes it: waited for).
    fx.device.set_driver_features(BUFFERS | EVENTS);
    fx.run(&register(2, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    fx.run(update_command(2, 1, None, None).as_slice());
    fx.wait_events(&[DeviceEvent::Released { id: 2, seqno: 1 }]);
    drop(client);
}

/// Run as a child process by `freed_only_once_the_process_exited`: a
/// consumer that maps buffer 1, says so on stdout, disconnects without
/// unmapping, and exits when its stdin closes.
#[test]
#[ignore = "a child of freed_only_once_the_process_exited"]
fn child_consumer() {
    let Some(path) = std::env::var_os("BUFSHARE_CHILD_SOCKET") else {
        return;
    };
    let mut client = Client::connect(&path).unwrap();
    client.subscribe(&["a"]).unwrap();
    let add = expect_add(&mut client);
    let _map = client.map(&add, false).unwrap();
    drop(add);
    nix::sys::socket::shutdown(client.as_raw_fd(), nix::sys::socket::Shutdown::Both).unwrap();
    println!("mapped");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

#[test]
fn freed_only_once_the_process_exited() {
    let mut fx = Fixture::new(|_| {});
    fx.device.set_driver_features(BUFFERS | EVENTS);
    fx.run(&register(1, "a", 1, &[(0, 0x1000)], 0x1000, b""));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "consumer::tests::holding::child_consumer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BUFSHARE_CHILD_SOCKET", &fx.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().contains("mapped")));
    // It disconnected, holding buffer 1.
    fx.wait_consumers(0);
    assert!(!fx.unregister(1));
    thread::sleep(Duration::from_millis(200));
    assert!(!fx.events().contains(&DeviceEvent::Freed(1)));
    assert_eq!(fx.device.holders().draining(), [1]);
    // It exits: FREED.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    fx.wait_events(&[DeviceEvent::Freed(1)]);
}
