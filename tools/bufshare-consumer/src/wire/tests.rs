// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! Every message's round trip, its exact layout, and every rejection.

use std::os::fd::OwnedFd;

use super::*;
use crate::test_support::{ino, memfd};

fn props(bytes: &[u8]) -> Properties {
    Properties::parse(bytes).unwrap()
}

fn hello(apps: &[&str]) -> Message {
    Message::Hello(Hello {
        version: VERSION,
        applications: apps.iter().map(|a| a.to_string()).collect(),
    })
}

fn welcome(form: MemoryForm) -> Message {
    Message::Welcome(Welcome {
        version: 1,
        memory_form: form,
        queue_limit: 1024,
        server: "vhost-user-bufshare 0.1.0".into(),
    })
}

fn error() -> Message {
    Message::Error(ErrorMessage::new(
        ErrorCode::Denied,
        "uid 1000 may not: camera",
    ))
}

fn add_dmabuf(fd: OwnedFd) -> Message {
    Message::Event(Event::Add(Add {
        guest: "vm0".into(),
        buffer_id: 0x1122_3344_5566_7788,
        application: "camera".into(),
        size: 0x2000,
        seqno: 3,
        properties: props(b"width=64\0height=32\0format=XR24\0"),
        memory: Memory::DmaBuf(fd),
    }))
}

/// An ADD of a buffer over several dma-bufs: all of each, in order.
fn add_dmabufs(dmabufs: Vec<OwnedFd>) -> Message {
    let segments = (0..dmabufs.len() as u32)
        .map(|file| Segment {
            file,
            offset: 0,
            len: 0x1000,
        })
        .collect::<Vec<_>>();
    Message::Event(Event::Add(Add {
        guest: "vm1".into(),
        buffer_id: 2,
        application: "camera".into(),
        size: 0x1000 * dmabufs.len() as u64,
        seqno: 1,
        properties: Properties::default(),
        memory: Memory::DmaBufs { dmabufs, segments },
    }))
}

fn add_segments(files: Vec<OwnedFd>) -> Message {
    let n = files.len() as u32;
    let segments = (0..5)
        .map(|i| Segment {
            file: i % n,
            offset: 0x1000 * u64::from(i) + 7,
            len: 0x10 + u64::from(i),
        })
        .collect::<Vec<_>>();
    let size = segments.iter().map(|s| s.len).sum();
    Message::Event(Event::Add(Add {
        guest: "guest.A-1_b".into(),
        buffer_id: 1,
        application: "x".repeat(63),
        size,
        seqno: 0,
        properties: props(b"a=1\0"),
        memory: Memory::Segments { files, segments },
    }))
}

fn update(range: Option<ByteRange>, rect: Option<Rect>) -> Message {
    Message::Event(Event::Update(Update {
        guest: "vm0".into(),
        buffer_id: 9,
        seqno: u64::MAX,
        range,
        rect,
    }))
}

fn properties(bytes: &[u8]) -> Message {
    Message::Event(Event::Properties(PropertiesChanged {
        guest: "vm0".into(),
        buffer_id: 9,
        properties: props(bytes),
    }))
}

fn remove() -> Message {
    Message::Event(Event::Remove(Remove {
        guest: "vm0".into(),
        buffer_id: u64::MAX,
    }))
}

fn release() -> Message {
    Message::Release(Release {
        guest: "vm0".into(),
        buffer_id: 7,
        seqno: u64::MAX,
    })
}

fn closed() -> Message {
    Message::Closed(Closed {
        guest: "vm0".into(),
        buffer_id: 8,
    })
}

fn reset(reason: ResetReason) -> Message {
    Message::Event(Event::Reset(Reset {
        guest: "vm0".into(),
        reason,
    }))
}

/// Every kind of message, with fresh descriptors.
fn all_messages() -> Vec<Message> {
    let range = Some(ByteRange {
        offset: u64::MAX - 1,
        len: 1,
    });
    let rect = Some(Rect {
        x: 1,
        y: 2,
        width: u32::MAX - 1,
        height: 4,
    });
    vec![
        hello(&["camera"]),
        hello(&["a", "b", "c-d.e_f"]),
        hello(&[ALL_APPLICATIONS]),
        Message::Hello(Hello {
            version: 0,
            applications: vec!["a".into()],
        }),
        welcome(MemoryForm::DmaBuf),
        welcome(MemoryForm::Segments),
        error(),
        Message::Error(ErrorMessage::new(ErrorCode::Overflow, "")),
        add_dmabuf(memfd()),
        add_dmabufs(vec![memfd()]),
        add_dmabufs(vec![memfd(), memfd(), memfd()]),
        add_segments(vec![memfd()]),
        add_segments(vec![memfd(), memfd(), memfd()]),
        update(None, None),
        update(range, None),
        update(None, rect),
        update(range, rect),
        properties(b""),
        properties(b"width=1\0v=\x80\0"),
        remove(),
        reset(ResetReason::DeviceReset),
        reset(ResetReason::Disconnected),
        release(),
        closed(),
    ]
}

#[test]
fn every_message_round_trips() {
    for message in all_messages() {
        let encoded = message.encode().unwrap();
        let header = Header::parse(encoded.bytes[..HEADER_SIZE].try_into().unwrap()).unwrap();
        assert_eq!(header.kind, message.kind());
        assert_eq!(header.size, encoded.bytes.len() - HEADER_SIZE);
        assert_eq!(header.nr_fds, encoded.fds.len());
        let fds: Vec<OwnedFd> = encoded
            .fds
            .iter()
            .map(|fd| fd.try_clone_to_owned().unwrap())
            .collect();
        let decoded = Message::decode(&header, &encoded.bytes[HEADER_SIZE..], fds).unwrap();
        // The same message, the same files, the same bytes again.
        assert_eq!(decoded.encode().unwrap().bytes, encoded.bytes);
        drop(encoded);
        assert_eq!(decoded.map_fds(ino), message.map_fds(ino));
    }
}

#[test]
fn every_type_is_covered() {
    let kinds: Vec<MessageType> = all_messages().iter().map(Message::kind).collect();
    for kind in MessageType::ALL {
        assert!(kinds.contains(&kind), "{kind}");
        assert_eq!(MessageType::from_u16(kind as u16), Some(kind));
        assert!(kind.max_body() <= MAX_BODY, "{kind}");
    }
    assert_eq!(MessageType::from_u16(0), None);
    assert_eq!(MessageType::Properties.to_string(), "PROPERTIES");
}

/// The bytes of a message: header and body.
fn bytes(message: &Message) -> Vec<u8> {
    message.encode().unwrap().bytes
}

fn le32(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn le64(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn name(n: &str) -> Vec<u8> {
    let mut f = n.as_bytes().to_vec();
    f.resize(NAME_LEN, 0);
    f
}

#[test]
fn layouts() {
    let expect = |kind: u16, nr_fds: u16, body: Vec<u8>| {
        let mut out = kind.to_le_bytes().to_vec();
        out.extend_from_slice(&nr_fds.to_le_bytes());
        out.extend(le32(body.len() as u32));
        out.extend(body);
        out
    };

    let body = [
        le32(VERSION),
        le32(0),
        le32(2),
        le32(0),
        name("a"),
        name("b"),
    ]
    .concat();
    assert_eq!(bytes(&hello(&["a", "b"])), expect(1, 0, body));

    let mut server = b"vhost-user-bufshare 0.1.0".to_vec();
    server.resize(SERVER_NAME_LEN, 0);
    let body = [le32(1), le32(2), le32(1024), le32(0), server].concat();
    assert_eq!(bytes(&welcome(MemoryForm::Segments)), expect(2, 0, body));

    let text = b"uid 1000 may not: camera".to_vec();
    let body = [le32(3), le32(text.len() as u32), text].concat();
    assert_eq!(bytes(&error()), expect(3, 0, body));

    let p = b"width=64\0height=32\0format=XR24\0".to_vec();
    assert_eq!(p.len(), 31);
    let body = [
        name("vm0"),
        le64(0x1122_3344_5566_7788),
        name("camera"),
        le64(0x2000),
        le64(3),
        le32(1),
        le32(0),
        le32(31),
        le32(0),
        p,
        vec![0],
    ]
    .concat();
    assert_eq!(body.len(), ADD_FIXED + 32);
    assert_eq!(bytes(&add_dmabuf(memfd())), expect(0x100, 1, body));

    let files = vec![memfd(), memfd()];
    let message = add_segments(files);
    let mut body = [
        name("guest.A-1_b"),
        le64(1),
        name(&"x".repeat(63)),
        le64(0x10 + 0x11 + 0x12 + 0x13 + 0x14),
        le64(0),
        le32(2),
        le32(5),
        le32(4),
        le32(0),
        b"a=1\0".to_vec(),
        vec![0; 4],
    ]
    .concat();
    for i in 0..5u32 {
        body.extend(le32(i % 2));
        body.extend(le32(0));
        body.extend(le64(0x1000 * u64::from(i) + 7));
        body.extend(le64(0x10 + u64::from(i)));
    }
    assert_eq!(bytes(&message), expect(0x100, 2, body));

    let range = Some(ByteRange { offset: 5, len: 6 });
    let rect = Some(Rect {
        x: 1,
        y: 2,
        width: 3,
        height: 4,
    });
    let body = [
        name("vm0"),
        le64(9),
        le64(u64::MAX),
        le32(3),
        le32(0),
        le64(5),
        le64(6),
        le32(1),
        le32(2),
        le32(3),
        le32(4),
    ]
    .concat();
    assert_eq!(bytes(&update(range, rect)), expect(0x101, 0, body));
    let body = [name("vm0"), le64(9), le64(u64::MAX), vec![0; 40]].concat();
    assert_eq!(bytes(&update(None, None)), expect(0x101, 0, body));

    let body = [name("vm0"), le64(9), le32(4), le32(0), b"a=b\0".to_vec()].concat();
    assert_eq!(bytes(&properties(b"a=b\0")), expect(0x102, 0, body));

    let body = [name("vm0"), le64(u64::MAX)].concat();
    assert_eq!(bytes(&remove()), expect(0x103, 0, body));

    let body = [name("vm0"), le32(2), le32(0)].concat();
    assert_eq!(
        bytes(&reset(ResetReason::Disconnected)),
        expect(0x104, 0, body)
    );

    let body = [name("vm0"), le64(7), le64(u64::MAX)].concat();
    assert_eq!(bytes(&release()), expect(0x200, 0, body));
    let body = [name("vm0"), le64(8)].concat();
    assert_eq!(bytes(&closed()), expect(0x201, 0, body));
}

// Rejections.

fn header(kind: u16, nr_fds: u16, size: u32) -> [u8; HEADER_SIZE] {
    let mut h = [0; HEADER_SIZE];
    h[..2].copy_from_slice(&kind.to_le_bytes());
    h[2..4].copy_from_slice(&nr_fds.to_le_bytes());
    h[4..].copy_from_slice(&size.to_le_bytes());
    h
}

#[test]
fn header_rejections() {
    for kind in [0u16, 4, 0xff, 0x105, 0xffff] {
        assert_eq!(
            Header::parse(&header(kind, 0, 0)),
            Err(WireError::UnknownType(kind))
        );
    }
    for kind in MessageType::ALL {
        let max = kind.max_body();
        let nr_fds = *kind.fds().start() as u16;
        let ok = Header::parse(&header(kind as u16, nr_fds, max as u32)).unwrap();
        assert_eq!(ok.size, max);
        assert_eq!(
            Header::parse(&header(kind as u16, nr_fds, max as u32 + 1)),
            Err(WireError::TooLarge {
                kind,
                size: max + 1,
                max
            })
        );
        assert!(Header::parse(&header(kind as u16, nr_fds, u32::MAX)).is_err());
        let bad_fds: &[u16] = if kind == MessageType::Add {
            &[0, MAX_FDS as u16 + 1, u16::MAX]
        } else {
            &[1, MAX_FDS as u16, u16::MAX]
        };
        for &n in bad_fds {
            assert_eq!(
                Header::parse(&header(kind as u16, n, 0)),
                Err(WireError::FdCount {
                    kind,
                    nr_fds: n.into()
                })
            );
        }
    }
    let h = Header::parse(&header(0x100, MAX_FDS as u16, 0)).unwrap();
    assert_eq!(h.nr_fds, MAX_FDS);
}

/// Encodes `message`, lets `f` change its body, and parses it again with
/// a header that says the new size and the old number of descriptors.
fn mutated(message: &Message, f: impl FnOnce(&mut Vec<u8>)) -> Result<Message<usize>, WireError> {
    let encoded = message.encode().unwrap();
    let mut h = Header::parse(encoded.bytes[..HEADER_SIZE].try_into().unwrap()).unwrap();
    let mut body = encoded.bytes[HEADER_SIZE..].to_vec();
    f(&mut body);
    h.size = body.len();
    parse(&h, &body)
}

fn put32(body: &mut [u8], at: usize, v: u32) {
    body[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(body: &mut [u8], at: usize, v: u64) {
    body[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn not_zero(kind: MessageType, field: &'static str) -> WireError {
    WireError::NotZero { kind, field }
}

fn out_of_range(kind: MessageType, field: &'static str, value: u64) -> WireError {
    WireError::OutOfRange { kind, field, value }
}

fn bad_name(kind: MessageType, field: &'static str) -> WireError {
    WireError::BadName { kind, field }
}

/// Changes a body.
type Mutation = Box<dyn Fn(&mut Vec<u8>)>;

/// Ways to break a name field at `at`.
fn broken_names(at: usize) -> Vec<Mutation> {
    vec![
        // Empty.
        Box::new(move |b| b[at..at + NAME_LEN].fill(0)),
        // No NUL.
        Box::new(move |b| b[at..at + NAME_LEN].fill(b'a')),
        // A character out of the set.
        Box::new(move |b| b[at] = b'/'),
        // Not UTF-8.
        Box::new(move |b| b[at] = 0xff),
        // Garbage after the NUL.
        Box::new(move |b| b[at + NAME_LEN - 1] = b'a'),
    ]
}

#[test]
fn size_rejections() {
    for message in all_messages() {
        let kind = message.kind();
        let encoded = message.encode().unwrap();
        let h = Header::parse(encoded.bytes[..HEADER_SIZE].try_into().unwrap()).unwrap();
        let body = &encoded.bytes[HEADER_SIZE..];
        // A body shorter or longer than its header says.
        assert!(matches!(
            parse(&h, &body[..body.len() - 1]),
            Err(WireError::Size { .. })
        ));
        // One byte more or less than the fields make, header agreeing.
        let shorter = mutated(&message, |b| {
            b.pop();
        });
        assert!(
            matches!(shorter, Err(WireError::Size { kind: k, .. }) if k == kind),
            "{kind}: {shorter:?}"
        );
        let longer = mutated(&message, |b| b.push(0));
        assert!(
            matches!(longer, Err(WireError::Size { kind: k, .. }) if k == kind),
            "{kind}: {longer:?}"
        );
        // Nothing at all.
        assert!(matches!(
            mutated(&message, Vec::clear),
            Err(WireError::Size { size: 0, .. })
        ));
    }
}

#[test]
fn descriptor_count_rejections() {
    let message = add_segments(vec![memfd(), memfd()]);
    let encoded = message.encode().unwrap();
    let h = Header::parse(encoded.bytes[..HEADER_SIZE].try_into().unwrap()).unwrap();
    let body = &encoded.bytes[HEADER_SIZE..];
    for n in [0, 1, 3] {
        let fds = (0..n).map(|_| memfd()).collect();
        assert_eq!(
            Message::decode(&h, body, fds).unwrap_err(),
            WireError::FdMismatch {
                kind: MessageType::Add,
                expected: 2,
                received: n
            }
        );
    }
    // The header says 2, the segments use 3 files: one is out of range.
    let mut more = h;
    more.nr_fds = 3;
    assert_eq!(
        parse(&more, body).unwrap_err(),
        WireError::UnusedFd(2),
        "a third descriptor no segment uses"
    );
    more.nr_fds = 1;
    assert_eq!(
        parse(&more, body).unwrap_err(),
        WireError::BadSegment {
            index: 1,
            what: "file out of range"
        }
    );
    // A dma-buf comes alone.
    let dmabuf = add_dmabuf(memfd());
    let encoded = dmabuf.encode().unwrap();
    let mut h = Header::parse(encoded.bytes[..HEADER_SIZE].try_into().unwrap()).unwrap();
    h.nr_fds = 2;
    assert_eq!(
        parse(&h, &encoded.bytes[HEADER_SIZE..]).unwrap_err(),
        WireError::FdMismatch {
            kind: MessageType::Add,
            expected: 1,
            received: 2
        }
    );
    // Messages other than ADD carry none.
    let message = remove();
    let encoded = message.encode().unwrap();
    let h = Header::parse(encoded.bytes[..HEADER_SIZE].try_into().unwrap()).unwrap();
    assert_eq!(
        Message::decode(&h, &encoded.bytes[HEADER_SIZE..], vec![memfd()]).unwrap_err(),
        WireError::FdMismatch {
            kind: MessageType::Remove,
            expected: 0,
            received: 1
        }
    );
}

#[test]
fn hello_rejections() {
    use MessageType::Hello as K;
    let m = hello(&["a", "b"]);
    assert_eq!(mutated(&m, |b| put32(b, 4, 1)), Err(not_zero(K, "flags")));
    assert_eq!(
        mutated(&m, |b| put32(b, 12, 1)),
        Err(not_zero(K, "reserved"))
    );
    assert_eq!(
        mutated(&m, |b| {
            put32(b, 8, 0);
            b.truncate(HELLO_FIXED);
        }),
        Err(out_of_range(K, "nr_applications", 0))
    );
    assert_eq!(
        mutated(&m, |b| {
            put32(b, 8, 65);
            b.resize(HELLO_FIXED + 65 * NAME_LEN, b'a');
        }),
        Err(out_of_range(K, "nr_applications", 65))
    );
    assert!(matches!(
        mutated(&m, |b| put32(b, 8, 3)),
        Err(WireError::Size { .. })
    ));
    for (i, breaker) in broken_names(HELLO_FIXED + NAME_LEN).iter().enumerate() {
        assert_eq!(
            mutated(&m, breaker),
            Err(bad_name(K, "application")),
            "case {i}"
        );
    }
    assert_eq!(
        hello(&["a", "b", "a"]).encode().unwrap_err(),
        WireError::Duplicate("a".into())
    );
    assert_eq!(
        mutated(&m, |b| b[HELLO_FIXED + NAME_LEN] = b'a'),
        Err(WireError::Duplicate("a".into()))
    );
    assert_eq!(
        mutated(&m, |b| b[HELLO_FIXED] = b'*'),
        Err(WireError::Wildcard)
    );
    assert_eq!(
        mutated(&hello(&["a", "b"]), |b| {
            b[HELLO_FIXED] = b'*';
            b[HELLO_FIXED + NAME_LEN] = b'*';
        }),
        Err(WireError::Duplicate("*".into()))
    );
    // "*" is a wildcard only on its own: "**" or "*a" are bad names.
    assert_eq!(
        mutated(&hello(&["*"]), |b| b[HELLO_FIXED + 1] = b'*'),
        Err(bad_name(K, "application"))
    );
}

#[test]
fn welcome_rejections() {
    use MessageType::Welcome as K;
    let m = welcome(MemoryForm::DmaBuf);
    assert_eq!(
        mutated(&m, |b| put32(b, 0, 0)),
        Err(out_of_range(K, "version", 0))
    );
    for form in [0, 3, u32::MAX] {
        assert_eq!(
            mutated(&m, |b| put32(b, 4, form)),
            Err(out_of_range(K, "memory_form", form.into()))
        );
    }
    assert_eq!(
        mutated(&m, |b| put32(b, 8, 0)),
        Err(out_of_range(K, "queue_limit", 0))
    );
    assert_eq!(
        mutated(&m, |b| put32(b, 12, 1)),
        Err(not_zero(K, "reserved"))
    );
    let bad_text = WireError::BadText {
        kind: K,
        field: "server",
    };
    assert_eq!(mutated(&m, |b| b[16] = 0x1f), Err(bad_text.clone()));
    assert_eq!(mutated(&m, |b| b[16] = 0x80), Err(bad_text.clone()));
    assert_eq!(mutated(&m, |b| b[47] = b'x'), Err(bad_text.clone()));
    assert_eq!(mutated(&m, |b| b[16..48].fill(b'x')), Err(bad_text));
    // An empty name is fine.
    assert!(mutated(&m, |b| b[16..48].fill(0)).is_ok());
}

#[test]
fn error_rejections() {
    use MessageType::Error as K;
    let m = error();
    assert_eq!(
        mutated(&m, |b| {
            put32(b, 4, MAX_ERROR_TEXT as u32 + 1);
            b.resize(ERROR_FIXED + MAX_ERROR_TEXT + 1, b'a');
        }),
        Err(out_of_range(K, "length", MAX_ERROR_TEXT as u64 + 1))
    );
    assert!(matches!(
        mutated(&m, |b| put32(b, 4, 3)),
        Err(WireError::Size { .. })
    ));
    for code in [0, 7, u32::MAX] {
        assert_eq!(
            mutated(&m, |b| put32(b, 0, code)),
            Err(out_of_range(K, "code", code.into()))
        );
    }
    let bad_text = WireError::BadText {
        kind: K,
        field: "message",
    };
    for byte in [0u8, b'\n', 0x7f, 0xff] {
        assert_eq!(
            mutated(&m, |b| b[9] = byte),
            Err(bad_text.clone()),
            "{byte}"
        );
    }
    // The longest text is fine.
    let long = ErrorMessage::new(ErrorCode::Busy, "é".repeat(MAX_ERROR_TEXT));
    assert_eq!(long.message.len(), MAX_ERROR_TEXT);
    assert!(Message::<OwnedFd>::Error(long).encode().is_ok());
}

#[test]
fn error_text_is_made_fit() {
    let e = ErrorMessage::new(ErrorCode::Protocol, "a\nb\0c");
    assert_eq!(e.message, "a b c");
    let e = ErrorMessage::new(ErrorCode::Protocol, "x".repeat(5000));
    assert_eq!(e.message.len(), MAX_ERROR_TEXT);
    // Cut at a character boundary.
    let e = ErrorMessage::new(ErrorCode::Protocol, format!("{}é", "x".repeat(1023)));
    assert_eq!(e.message.len(), 1023);
    assert_eq!(
        e.to_string(),
        format!("protocol error: {}", "x".repeat(1023))
    );
    assert_eq!(ErrorMessage::new(ErrorCode::Busy, "").to_string(), "busy");
}

#[test]
fn add_rejections() {
    use MessageType::Add as K;
    let dma = add_dmabuf(memfd());
    let seg = add_segments(vec![memfd(), memfd()]);
    for (i, breaker) in broken_names(0).iter().enumerate() {
        assert_eq!(
            mutated(&dma, breaker),
            Err(bad_name(K, "guest")),
            "case {i}"
        );
    }
    for (i, breaker) in broken_names(72).iter().enumerate() {
        assert_eq!(
            mutated(&dma, breaker),
            Err(bad_name(K, "application")),
            "case {i}"
        );
    }
    assert_eq!(
        mutated(&dma, |b| put32(b, 164, 1)),
        Err(not_zero(K, "reserved"))
    );
    assert_eq!(
        mutated(&dma, |b| put32(b, 160, MAX_PROPS_SIZE as u32 + 1)),
        Err(out_of_range(K, "props_size", MAX_PROPS_SIZE as u64 + 1))
    );
    for form in [0, 3] {
        assert_eq!(
            mutated(&dma, |b| put32(b, 152, form)),
            Err(out_of_range(K, "memory_form", form.into()))
        );
    }
    // One dma-buf with a segment: the segment is missing.
    assert!(matches!(
        mutated(&dma, |b| put32(b, 156, 1)),
        Err(WireError::Size { .. })
    ));
    assert_eq!(
        mutated(&seg, |b| put32(b, 156, 0)),
        Err(out_of_range(K, "nr_segments", 0))
    );
    assert_eq!(
        mutated(&seg, |b| put32(b, 156, MAX_SEGMENTS as u32 + 1)),
        Err(out_of_range(K, "nr_segments", MAX_SEGMENTS as u64 + 1))
    );
    // The DMABUF form with segments: several dma-bufs (version 2).
    let Ok(Message::Event(Event::Add(add))) = mutated(&seg, |b| put32(b, 152, 1)) else {
        panic!("DMABUF with segments");
    };
    assert!(matches!(add.memory, Memory::DmaBufs { ref dmabufs, .. } if dmabufs.len() == 2));
    // Whose segments are checked as those of files.
    let dmas = add_dmabufs(vec![memfd(), memfd()]);
    assert_eq!(
        mutated(&dmas, |b| put32(b, ADD_FIXED, 2)),
        Err(WireError::BadSegment {
            index: 0,
            what: "file out of range"
        })
    );
    assert_eq!(
        mutated(&dmas, |b| put64(b, ADD_FIXED + 16, 0)),
        Err(WireError::BadSegment {
            index: 0,
            what: "empty"
        })
    );
    assert_eq!(
        mutated(&dma, |b| put64(b, 136, 0)),
        Err(out_of_range(K, "size", 0))
    );
    assert_eq!(
        mutated(&dma, |b| b[168] = b'='),
        Err(WireError::Properties {
            kind: K,
            error: PropsError::BadName(0)
        })
    );
    assert_eq!(
        mutated(&dma, |b| b[198] = b'x'),
        Err(WireError::Properties {
            kind: K,
            error: PropsError::Unterminated(19)
        })
    );
    assert_eq!(mutated(&dma, |b| b[199] = 1), Err(not_zero(K, "padding")));
    // Segments start at 168 + 8 (properties "a=1\0", padded).
    let s = ADD_FIXED + 8;
    let bad = |index, what| WireError::BadSegment { index, what };
    assert_eq!(
        mutated(&seg, |b| put32(b, s + 4, 1)),
        Err(bad(0, "reserved is not 0"))
    );
    assert_eq!(
        mutated(&seg, |b| put32(b, s + 24, 2)),
        Err(bad(1, "file out of range"))
    );
    assert_eq!(mutated(&seg, |b| put64(b, s + 16, 0)), Err(bad(0, "empty")));
    assert_eq!(
        mutated(&seg, |b| put64(b, s + 8, u64::MAX - 0xf)),
        Err(bad(0, "offset + length overflows"))
    );
    assert_eq!(
        mutated(&seg, |b| put64(b, s + 16, 0x11)),
        Err(WireError::SegmentsSize {
            size: 0x5a,
            sum: 0x5b
        })
    );
    assert_eq!(
        mutated(&seg, |b| put64(b, 136, u64::MAX)),
        Err(WireError::SegmentsSize {
            size: u64::MAX,
            sum: 0x5a
        })
    );
    // File 1 used by no segment.
    assert_eq!(
        mutated(&seg, |b| {
            put32(b, s + 24, 0);
            put32(b, s + 72, 0);
        }),
        Err(WireError::UnusedFd(1))
    );
}

#[test]
fn update_rejections() {
    use MessageType::Update as K;
    let none = update(None, None);
    let both = update(
        Some(ByteRange { offset: 1, len: 2 }),
        Some(Rect {
            x: 1,
            y: 2,
            width: 3,
            height: 4,
        }),
    );
    for (i, breaker) in broken_names(0).iter().enumerate() {
        assert_eq!(
            mutated(&none, breaker),
            Err(bad_name(K, "guest")),
            "case {i}"
        );
    }
    assert_eq!(
        mutated(&none, |b| put64(b, 72, 0)),
        Err(out_of_range(K, "seqno", 0))
    );
    for flags in [4, 0x8000_0000] {
        assert_eq!(
            mutated(&none, |b| put32(b, 80, flags)),
            Err(out_of_range(K, "flags", flags.into()))
        );
    }
    assert_eq!(
        mutated(&none, |b| put32(b, 84, 1)),
        Err(not_zero(K, "reserved"))
    );
    assert_eq!(
        mutated(&both, |b| put64(b, 96, 0)),
        Err(out_of_range(K, "length", 0))
    );
    assert_eq!(
        mutated(&both, |b| put64(b, 88, u64::MAX)),
        Err(out_of_range(K, "offset", u64::MAX))
    );
    for at in [88, 96] {
        assert_eq!(
            mutated(&none, |b| put64(b, at, 1)),
            Err(not_zero(K, "range without RANGE"))
        );
    }
    for at in [112, 116] {
        assert_eq!(
            mutated(&both, |b| put32(b, at, 0)),
            Err(out_of_range(K, "width or height", 0))
        );
    }
    for at in [104, 108] {
        assert!(matches!(
            mutated(&both, |b| put32(b, at, u32::MAX)),
            Err(WireError::OutOfRange {
                field: "rectangle",
                ..
            })
        ));
        assert_eq!(
            mutated(&none, |b| put32(b, at + 8, 1)),
            Err(not_zero(K, "rectangle without RECT"))
        );
        assert_eq!(
            mutated(&none, |b| put32(b, at, 1)),
            Err(not_zero(K, "rectangle without RECT"))
        );
    }
    // The largest rectangle and range are fine.
    assert!(mutated(&both, |b| {
        put32(b, 104, 0);
        put32(b, 112, u32::MAX);
        put64(b, 88, 0);
        put64(b, 96, u64::MAX);
    })
    .is_ok());
}

#[test]
fn properties_rejections() {
    use MessageType::Properties as K;
    let m = properties(b"a=1\0");
    for (i, breaker) in broken_names(0).iter().enumerate() {
        assert_eq!(mutated(&m, breaker), Err(bad_name(K, "guest")), "case {i}");
    }
    assert_eq!(
        mutated(&m, |b| put32(b, 76, 1)),
        Err(not_zero(K, "reserved"))
    );
    assert_eq!(
        mutated(&m, |b| put32(b, 72, MAX_PROPS_SIZE as u32 + 1)),
        Err(out_of_range(K, "props_size", MAX_PROPS_SIZE as u64 + 1))
    );
    assert!(matches!(
        mutated(&m, |b| put32(b, 72, 3)),
        Err(WireError::Size { .. })
    ));
    assert_eq!(
        mutated(&m, |b| b[83] = b'x'),
        Err(WireError::Properties {
            kind: K,
            error: PropsError::Unterminated(0)
        })
    );
    assert_eq!(
        mutated(&m, |b| b[82] = 0x7f),
        Err(WireError::Properties {
            kind: K,
            error: PropsError::BadValue(0)
        })
    );
    // The largest properties are fine.
    let mut big = Vec::new();
    let mut i = 0;
    while big.len() + 12 <= MAX_PROPS_SIZE {
        big.extend_from_slice(format!("p{i:05}=xxxx\0").as_bytes());
        i += 1;
    }
    // The last value takes what is left.
    big.pop();
    big.resize(MAX_PROPS_SIZE - 1, b'x');
    big.push(0);
    assert_eq!(big.len(), MAX_PROPS_SIZE);
    assert!(Message::<OwnedFd>::encode(&properties(&big)).is_ok());
}

#[test]
fn remove_and_reset_rejections() {
    for (i, breaker) in broken_names(0).iter().enumerate() {
        assert_eq!(
            mutated(&remove(), breaker),
            Err(bad_name(MessageType::Remove, "guest")),
            "case {i}"
        );
        assert_eq!(
            mutated(&reset(ResetReason::DeviceReset), breaker),
            Err(bad_name(MessageType::Reset, "guest")),
            "case {i}"
        );
        assert_eq!(
            mutated(&release(), breaker),
            Err(bad_name(MessageType::Release, "guest")),
            "case {i}"
        );
        assert_eq!(
            mutated(&closed(), breaker),
            Err(bad_name(MessageType::Closed, "guest")),
            "case {i}"
        );
    }
    let m = reset(ResetReason::DeviceReset);
    for reason in [0, 4, u32::MAX] {
        assert_eq!(
            mutated(&m, |b| put32(b, 64, reason)),
            Err(out_of_range(MessageType::Reset, "reason", reason.into()))
        );
    }
    assert_eq!(
        mutated(&m, |b| put32(b, 68, 1)),
        Err(not_zero(MessageType::Reset, "reserved"))
    );
}

#[test]
fn encoding_refuses_what_would_not_decode() {
    // Bad names.
    let e = hello(&["a b"]).encode().unwrap_err();
    assert_eq!(e, bad_name(MessageType::Hello, "application"));
    assert!(hello(&[]).encode().is_err());
    assert!(hello(&["*", "a"]).encode().is_err());
    let apps: Vec<String> = (0..65).map(|i| format!("a{i}")).collect();
    let apps: Vec<&str> = apps.iter().map(String::as_str).collect();
    assert!(hello(&apps).encode().is_err());
    assert!(hello(&apps[..64]).encode().is_ok());
    let Message::Event(Event::Add(mut add)) = add_dmabuf(memfd()) else {
        unreachable!()
    };
    add.guest = "x".repeat(64);
    assert_eq!(
        Message::Event(Event::Add(add)).encode().unwrap_err(),
        bad_name(MessageType::Add, "guest")
    );
    // Too many descriptors.
    let files = (0..=MAX_FDS).map(|_| memfd()).collect::<Vec<_>>();
    let Message::Event(Event::Add(mut add)) = add_segments(vec![memfd()]) else {
        unreachable!()
    };
    add.memory = Memory::Segments {
        segments: (0..files.len() as u32)
            .map(|file| Segment {
                file,
                offset: 0,
                len: 1,
            })
            .collect(),
        files,
    };
    add.size = MAX_FDS as u64 + 1;
    assert_eq!(
        Message::Event(Event::Add(add)).encode().unwrap_err(),
        WireError::FdCount {
            kind: MessageType::Add,
            nr_fds: MAX_FDS + 1
        }
    );
    // Segments that do not add up.
    let Message::Event(Event::Add(mut add)) = add_segments(vec![memfd()]) else {
        unreachable!()
    };
    add.size += 1;
    assert!(matches!(
        Message::Event(Event::Add(add)).encode(),
        Err(WireError::SegmentsSize { .. })
    ));
    // A server name too long for its field.
    let Message::Welcome(mut w) = welcome(MemoryForm::DmaBuf) else {
        unreachable!()
    };
    w.server = "s".repeat(SERVER_NAME_LEN);
    assert!(Message::<OwnedFd>::Welcome(w).encode().is_err());
}

#[test]
fn event_accessors() {
    let add = add_dmabuf(memfd());
    let Message::Event(event) = add else {
        unreachable!()
    };
    assert_eq!(event.guest(), "vm0");
    assert_eq!(event.buffer_id(), Some(0x1122_3344_5566_7788));
    let Message::Event(event) = reset(ResetReason::DeviceReset) else {
        unreachable!()
    };
    assert_eq!(event.guest(), "vm0");
    assert_eq!(event.buffer_id(), None);
    assert_eq!(MemoryForm::DmaBuf.to_string(), "dmabuf");
}
