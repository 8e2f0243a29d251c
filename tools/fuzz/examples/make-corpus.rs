// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Writes the seed corpus of the fuzz targets, made with the crates' own
//! encoders, into DIR/<target>/ (the repository's is `corpus/`):
//!
//! ```sh
//! cd tools/fuzz && cargo run --example make-corpus -- corpus
//! ```

use std::fs::{self, File};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use bufshare_consumer::wire::Hello;
use bufshare_consumer::{
    Add, ByteRange, ErrorCode, ErrorMessage, Event, Memory, MemoryForm, Message, Properties,
    PropertiesChanged, Rect, Remove, Reset, ResetReason, Segment, Update, Welcome, VERSION,
};
use bufshare_fuzz::{device_input, Step};
use bufshare_uapi::{
    add_ranges_bytes, set_properties_bytes, unregister_bytes, update_command, RegisterCommand,
    VirtioBufshareCmdHdr, VIRTIO_BUFSHARE_CMD_GET_INFO,
};
use vm_memory::ByteValued;

const ROOM: u8 = 128;

fn cmd(bytes: Vec<u8>) -> Step {
    Step::Command { room: ROOM, bytes }
}

fn register(id: u64, app: &str, ranges: &[(u64, u64)], props: &[u8]) -> Step {
    cmd(RegisterCommand::complete(id, app, ranges)
        .props(props)
        .to_bytes())
}

fn update(id: u64, seqno: u64, range: Option<(u64, u64)>, rect: Option<[u32; 4]>) -> Step {
    cmd(update_command(id, seqno, range, rect).as_slice().to_vec())
}

/// Consumer `consumer` takes up to `count` events.
fn take(consumer: u8, count: u8) -> Step {
    Step::Take { consumer, count }
}

fn device_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let get_info = cmd(VirtioBufshareCmdHdr {
        type_: VIRTIO_BUFSHARE_CMD_GET_INFO.into(),
        flags: 0.into(),
    }
    .as_slice()
    .to_vec());
    let size = b"width=16\0height=16\0format=XR24\0";
    let one = |id| register(id, "a", &[(0x1000, 0x1000)], size);
    vec![
        ("get-info", device_input(8, std::slice::from_ref(&get_info))),
        (
            "register-update-unregister",
            device_input(
                8,
                &[
                    Step::Subscribe(0),
                    one(1),
                    take(0, 1),
                    update(1, 1, None, None),
                    update(1, 2, Some((0, 0x100)), Some([0, 0, 4, 4])),
                    cmd(set_properties_bytes(1, b"width=8\0height=8\0")),
                    Step::Drain,
                    cmd(unregister_bytes(1)),
                    get_info,
                ],
            ),
        ),
        (
            "register-in-pieces",
            device_input(
                8,
                &[
                    Step::Subscribe(1),
                    cmd(RegisterCommand::new(2, "a", 0x3000, 3, &[(0x3800, 0x1000)]).to_bytes()),
                    cmd(add_ranges_bytes(2, 1, &[(0x1_0000, 0x1000)])),
                    cmd(add_ranges_bytes(2, 2, &[(0x0, 0x1000)])),
                    Step::Drain,
                    cmd(add_ranges_bytes(3, 0, &[(0x0, 0x1000)])),
                ],
            ),
        ),
        (
            "incomplete-dropped",
            device_input(
                8,
                &[
                    cmd(RegisterCommand::new(2, "b", 0x2000, 2, &[(0x0, 0x1000)]).to_bytes()),
                    cmd(add_ranges_bytes(2, 1, &[(0x8000, 0x1000)])),
                    cmd(unregister_bytes(2)),
                ],
            ),
        ),
        (
            "reset-with-consumers",
            device_input(
                2,
                &[
                    Step::Subscribe(0),
                    Step::Subscribe(2),
                    one(1),
                    register(2, "b", &[(0x4000, 0x800), (0x1_0000, 0x800)], b""),
                    register(3, "c", &[(0x0, 0x800)], b""),
                    take(0, 2),
                    Step::Reset,
                    register(1, "b", &[(0x2000, 0x800)], b""),
                    Step::Drain,
                    Step::LoseBuffers,
                    Step::Drain,
                ],
            ),
        ),
        (
            "overflow",
            device_input(
                1,
                &[
                    Step::Subscribe(0),
                    one(1),
                    update(1, 1, None, None),
                    update(1, 2, None, None),
                    update(1, 3, None, None),
                    take(0, 8),
                    Step::Subscribe(0),
                    Step::Drain,
                ],
            ),
        ),
        (
            "same-id-again",
            device_input(
                8,
                &[
                    Step::Subscribe(0),
                    one(1),
                    take(0, 1),
                    cmd(unregister_bytes(1)),
                    one(1),
                    take(0, 1),
                    Step::Unsubscribe(0),
                    Step::Drain,
                ],
            ),
        ),
        (
            // Issue 12, item 15: a consumer that lags behind a guest using
            // an id twice must still get the REMOVE of what it holds.
            "same-id-twice",
            device_input(
                8,
                &[
                    Step::Subscribe(0),
                    one(1),
                    take(0, 1),
                    cmd(unregister_bytes(1)),
                    one(1),
                    cmd(unregister_bytes(1)),
                    Step::Drain,
                ],
            ),
        ),
        (
            "no-features",
            device_input(
                8,
                &[
                    Step::Features(0),
                    one(1),
                    Step::Features(3),
                    one(1),
                    Step::Drain,
                ],
            ),
        ),
    ]
}

fn wire_seeds(fd: BorrowedFd<'_>) -> Vec<(&'static str, Vec<u8>)> {
    let props = Properties::from_pairs([("width", "64"), ("height", "32")]).unwrap();
    let guest = || "vm0".to_string();
    let messages: Vec<(&str, Message<BorrowedFd<'_>>)> = vec![
        (
            "hello",
            Message::Hello(Hello {
                version: VERSION,
                applications: vec!["weston".into(), "a".into()],
            }),
        ),
        (
            "welcome",
            Message::Welcome(Welcome {
                version: VERSION,
                memory_form: MemoryForm::Segments,
                queue_limit: 1024,
                server: "vhost-user-bufshare 0.1.0".into(),
            }),
        ),
        (
            "error",
            Message::Error(ErrorMessage::new(ErrorCode::Overflow, "queue overflow")),
        ),
        (
            "add-segments",
            Message::Event(Event::Add(Add {
                guest: guest(),
                buffer_id: 7,
                application: "weston".into(),
                size: 0x3000,
                seqno: 2,
                properties: props.clone(),
                memory: Memory::Segments {
                    files: vec![fd, fd],
                    segments: vec![
                        Segment {
                            file: 0,
                            offset: 0x1000,
                            len: 0x1000,
                        },
                        Segment {
                            file: 1,
                            offset: 0,
                            len: 0x2000,
                        },
                    ],
                },
            })),
        ),
        (
            "add-dmabuf",
            Message::Event(Event::Add(Add {
                guest: guest(),
                buffer_id: 1,
                application: "a".into(),
                size: 0x1000,
                seqno: 0,
                properties: Properties::default(),
                memory: Memory::DmaBuf(fd),
            })),
        ),
        (
            "update",
            Message::Event(Event::Update(Update {
                guest: guest(),
                buffer_id: 7,
                seqno: 3,
                range: Some(ByteRange {
                    offset: 16,
                    len: 32,
                }),
                rect: Some(Rect {
                    x: 1,
                    y: 2,
                    width: 3,
                    height: 4,
                }),
            })),
        ),
        (
            "update-whole",
            Message::Event(Event::Update(Update {
                guest: guest(),
                buffer_id: 7,
                seqno: 4,
                range: None,
                rect: None,
            })),
        ),
        (
            "properties",
            Message::Event(Event::Properties(PropertiesChanged {
                guest: guest(),
                buffer_id: 7,
                properties: props,
            })),
        ),
        (
            "remove",
            Message::Event(Event::Remove(Remove {
                guest: guest(),
                buffer_id: 7,
            })),
        ),
        (
            "reset",
            Message::Event(Event::Reset(Reset {
                guest: guest(),
                reason: ResetReason::DeviceReset,
            })),
        ),
    ];
    messages
        .into_iter()
        .map(|(name, m)| (name, m.encode().expect("encodes").bytes))
        .collect()
}

fn props_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let good = Properties::from_pairs([
        ("width", "1920"),
        ("height", "1080"),
        ("format", "XR24"),
        ("title", "a=b \u{e9}"),
    ])
    .unwrap();
    vec![
        ("empty", Vec::new()),
        ("frame", good.to_bytes()),
        (
            "one",
            Properties::from_pairs([("a", "")]).unwrap().to_bytes(),
        ),
        ("equals-in-value", b"a=b=c\0".to_vec()),
        ("duplicate", b"a=1\0b=2\0a=3\0".to_vec()),
        ("unterminated", b"a=1\0b=2".to_vec()),
        ("no-equals", b"a=1\0b\0".to_vec()),
        ("control", b"a=1\tx\0".to_vec()),
    ]
}

fn write(dir: &Path, target: &str, seeds: Vec<(&str, Vec<u8>)>) {
    let dir = dir.join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).expect("seed");
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    let dir = Path::new(&dir);
    let null = File::open("/dev/null").expect("/dev/null");
    write(dir, "device_commands", device_seeds());
    write(dir, "consumer_wire", wire_seeds(null.as_fd()));
    write(dir, "props", props_seeds());
}
