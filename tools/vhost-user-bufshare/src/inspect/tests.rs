// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! The inspect socket against mock guest memory: the client's round trips,
//! and a server that survives bad clients.

use std::os::unix::fs::PermissionsExt;

use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

use super::*;
use crate::buffers::{resolve_range, Buffer};
use crate::props::{parse_properties, Properties};

/// Guest RAM: two adjacent regions.
fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x1_0000),
        (GuestAddress(0x1_0000), 0x1_0000),
    ])
    .unwrap()
}

/// A buffer of `ranges`, complete if all `num_ranges` are there.
fn buffer(mem: &GuestMemoryMmap, id: u64, num_ranges: u32, ranges: &[(u64, u64)]) -> Buffer {
    let size = ranges.iter().map(|r| r.1).sum::<u64>()
        + 0x10 * u64::from(num_ranges - ranges.len() as u32);
    let props = parse_properties(b"width=4\0format=XR24\0", 100).unwrap();
    let mut b = Buffer::new(id, format!("app{id}"), size, num_ranges, props);
    let mut offset = 0;
    for &(addr, len) in ranges {
        b.push_ranges(resolve_range(mem, offset, addr, len).unwrap(), 1, len);
        offset += len;
    }
    b
}

/// The guest `vm0`, alone.
fn one_guest(state: &Arc<SharedState>) -> Vec<InspectGuest> {
    vec![InspectGuest::new("vm0", Arc::clone(state))]
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    mem: GuestMemoryMmap,
    state: Arc<SharedState>,
    server: Option<InspectServer>,
}

impl Fixture {
    /// Buffer 1: 0x20 bytes across the two regions, complete; buffer 2:
    /// incomplete.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inspect.sock");
        let mem = memory();
        let state = Arc::new(SharedState::default());
        {
            let mut s = state.lock();
            s.mem = Some(GuestMemoryAtomic::new(mem.clone()));
            s.buffers
                .insert(buffer(&mem, 1, 2, &[(0xfff8, 0x10), (0x100, 0x10)]));
            s.buffers.insert(buffer(&mem, 2, 2, &[(0x200, 0x10)]));
        }
        let server = InspectServer::start(&path, one_guest(&state)).unwrap();
        Self {
            _dir: dir,
            path,
            mem,
            state,
            server: Some(server),
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.path)
    }

    /// Sends raw bytes, then half-closes; returns everything answered.
    fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        let mut stream = UnixStream::connect(&self.path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // The server may close before taking everything.
        let _ = stream.write_all(bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        answer
    }
}

#[test]
fn list() {
    let f = Fixture::new();
    let listing = f.client().list().unwrap();
    assert_eq!(
        String::from_utf8(listing).unwrap(),
        "id=1 application=app1 size=32 ranges=2 complete=1 seqno=0\n\
         \twidth=4\n\tformat=XR24\n\
         id=2 application=app2 size=32 ranges=1 complete=0 seqno=0\n\
         \twidth=4\n\tformat=XR24\n"
    );
    f.state.lock().buffers.clear();
    assert_eq!(f.client().list().unwrap(), b"");
}

#[test]
fn read_and_write_guest_memory() {
    let f = Fixture::new();
    // The guest writes; the host reads.
    f.mem
        .write_slice(b"01234567", GuestAddress(0xfff8))
        .unwrap();
    f.mem
        .write_slice(b"89abcdef", GuestAddress(0x1_0000))
        .unwrap();
    f.mem
        .write_slice(b"ghijklmnopqrstuv", GuestAddress(0x100))
        .unwrap();
    let mut out = Vec::new();
    f.client().read(1, 0, 32, &mut out).unwrap();
    assert_eq!(out, b"0123456789abcdefghijklmnopqrstuv");
    let mut out = Vec::new();
    f.client().read(1, 6, 12, &mut out).unwrap();
    assert_eq!(out, b"6789abcdefgh");
    let mut out = Vec::new();
    f.client().read(1, 32, 0, &mut out).unwrap();
    assert!(out.is_empty());

    // The host writes; the guest reads.
    f.client().write(1, 14, b"WXYZ").unwrap();
    let mut raw = [0; 2];
    f.mem.read_slice(&mut raw, GuestAddress(0x1_0006)).unwrap();
    assert_eq!(&raw, b"WX");
    f.mem.read_slice(&mut raw, GuestAddress(0x100)).unwrap();
    assert_eq!(&raw, b"YZ");
    f.client().write(1, 0, b"").unwrap();
    f.client().write(1, 0, &[0xaa; 32]).unwrap();
    let mut out = Vec::new();
    f.client().read(1, 0, 32, &mut out).unwrap();
    assert_eq!(out, [0xaa; 32]);
}

#[test]
fn large_transfers_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let size = 3 * CHUNK + 123;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size + 0x1000)]).unwrap();
    let state = Arc::new(SharedState::default());
    {
        let mut s = state.lock();
        s.mem = Some(GuestMemoryAtomic::new(mem.clone()));
        // Two ranges, in reverse order.
        let half = (size / 2) as u64;
        let mut b = Buffer::new(9, "big".into(), size as u64, 2, Properties::default());
        b.push_ranges(
            resolve_range(&mem, 0, half, size as u64 - half).unwrap(),
            1,
            size as u64 - half,
        );
        b.push_ranges(
            resolve_range(&mem, size as u64 - half, 0, half).unwrap(),
            1,
            half,
        );
        s.buffers.insert(b);
    }
    let _server = InspectServer::start(&path, one_guest(&state)).unwrap();
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let client = Client::new(&path);
    client.write(9, 0, &data).unwrap();
    let mut out = Vec::new();
    client.read(9, 0, size as u64, &mut out).unwrap();
    assert!(out == data);
}

#[test]
fn refusals() {
    let f = Fixture::new();
    let c = f.client();
    let refused = |r: Result<(), ClientError>| match r {
        Err(ClientError::Refused(message)) => message,
        other => panic!("{other:?}"),
    };
    let mut out = Vec::new();
    assert_eq!(refused(c.read(3, 0, 1, &mut out)), "no buffer 3");
    assert_eq!(refused(c.read(2, 0, 1, &mut out)), "buffer 2 is incomplete");
    assert!(refused(c.read(1, 0, 33, &mut out)).contains("outside the buffer"));
    assert!(refused(c.read(1, 33, 0, &mut out)).contains("outside the buffer"));
    assert!(refused(c.read(1, u64::MAX, 2, &mut out)).contains("outside the buffer"));
    assert!(out.is_empty());
    assert_eq!(refused(c.write(3, 0, b"x")), "no buffer 3");
    assert_eq!(refused(c.write(2, 0, b"x")), "buffer 2 is incomplete");
    assert!(refused(c.write(1, 31, b"xy")).contains("outside the buffer"));
    // A large write refused at once: the data is never sent.
    assert!(refused(c.write(1, 0, &vec![0; 4 << 20])).contains("outside the buffer"));
    // Nothing was written.
    let mut raw = [0; 1];
    f.mem.read_slice(&mut raw, GuestAddress(0x10f)).unwrap();
    assert_eq!(raw, [0]);
    // No guest memory (no frontend).
    f.state.lock().mem = None;
    assert_eq!(refused(c.read(1, 0, 1, &mut out)), "no guest memory");
    // Still serving.
    assert!(c.list().is_ok());
}

#[test]
fn bad_requests() {
    let f = Fixture::new();
    let long = vec![b'a'; 1000];
    let cases: &[&[u8]] = &[
        b"",
        b"\n",
        b"list",
        b"list \n",
        b"LIST\n",
        b"read 1 0\n",
        b"read 1 0 1 2\n",
        b"read  1 0 1\n",
        b"read 1 0 -1\n",
        b"read 1 0 0x10\n",
        b"read 1 0 18446744073709551616\n",
        b"write 1 0\n",
        b"delete 1\n",
        b"\xff\xfe\n",
        b"list\r\n",
        b"guest=vm0\n",
        b"guest=vm0 guests\n",
        b"guest= list\n",
        b"guest=vm1 list\n",
        &long,
    ];
    for case in cases {
        let answer = f.raw(case);
        assert!(answer.starts_with(b"error "), "{case:?}: {answer:?}");
        assert!(answer.ends_with(b"\n"), "{case:?}");
        assert_eq!(
            answer.iter().filter(|&&b| b == b'\n').count(),
            1,
            "{case:?}"
        );
    }
    // A write whose data stops short: nothing answered after "ready", and
    // the server goes on.
    assert_eq!(f.raw(b"write 1 0 16\nabc"), b"ready\n");
    // Good requests, raw.
    let listing = f.state.lock().buffers.describe();
    let mut expected = format!("ok {}\n", listing.len()).into_bytes();
    expected.extend(listing);
    assert_eq!(f.raw(b"list\n"), expected);
    assert_eq!(f.raw(b"read 1 0 0\n"), b"ok 0\n");
    assert_eq!(f.raw(b"write 1 0 2\nzz"), b"ready\nok 0\n");
    assert_eq!(f.raw(b"read 1 0 2\n"), b"ok 2\nzz");
    // Bytes after the request are ignored.
    assert_eq!(f.raw(b"read 1 0 2\nread 1 0 2\n"), b"ok 2\nzz");
    // Many clients, one after the other.
    for _ in 0..200 {
        assert!(f.client().list().is_ok());
    }
    // Clients that connect and go away.
    for _ in 0..20 {
        drop(UnixStream::connect(&f.path).unwrap());
    }
    assert!(f.client().list().is_ok());
}

#[test]
fn socket_file() {
    let mut f = Fixture::new();
    let meta = std::fs::metadata(&f.path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No temporary file left behind.
    let entries: Vec<_> = std::fs::read_dir(f.path.parent().unwrap())
        .unwrap()
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(f.server.as_ref().unwrap().path(), f.path);

    // Stopping removes the socket.
    f.server = None;
    assert!(!f.path.exists());
    assert!(matches!(f.client().list(), Err(ClientError::Connect(..))));

    // A stale socket is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&f.path).unwrap();
    drop(stale);
    let server = InspectServer::start(&f.path, one_guest(&f.state)).unwrap();
    assert!(f.client().list().is_ok());
    drop(server);

    // Anything else is not.
    std::fs::write(&f.path, b"precious").unwrap();
    assert!(matches!(
        InspectServer::start(&f.path, one_guest(&f.state)),
        Err(Error::NotASocket(_))
    ));
    assert_eq!(std::fs::read(&f.path).unwrap(), b"precious");
    assert!(InspectServer::start(Path::new("/nonexistent-dir/s"), one_guest(&f.state)).is_err());
    // No guest, or two with one name.
    let other = f.path.with_file_name("other.sock");
    assert!(matches!(
        InspectServer::start(&other, Vec::new()),
        Err(Error::Guests(_))
    ));
    let mut two = one_guest(&f.state);
    two.extend(one_guest(&f.state));
    assert!(matches!(
        InspectServer::start(&other, two),
        Err(Error::Guests(_))
    ));
    assert!(!other.exists());
}

#[test]
fn request_lines() {
    let read = Command::Read {
        id: 1,
        offset: 2,
        len: 3,
    };
    let longest = Command::Write {
        id: u64::MAX,
        offset: u64::MAX,
        len: u64::MAX,
    };
    let name63 = "n".repeat(63);
    for (request, line) in [
        (Request::new(Command::List), "list\n".to_string()),
        (Request::new(Command::Guests), "guests\n".to_string()),
        (Request::new(Command::Holders), "holders\n".to_string()),
        (Request::new(read), "read 1 2 3\n".to_string()),
        (
            Request {
                guest: Some("vm-1.a_b".into()),
                command: read,
            },
            "guest=vm-1.a_b read 1 2 3\n".to_string(),
        ),
        (
            Request {
                guest: Some("0".into()),
                command: Command::List,
            },
            "guest=0 list\n".to_string(),
        ),
        (
            Request {
                guest: Some(name63.clone()),
                command: longest,
            },
            format!("guest={name63} write {m} {m} {m}\n", m = u64::MAX),
        ),
    ] {
        assert_eq!(request.line(), line);
        assert!(line.len() <= MAX_REQUEST_LINE);
        assert_eq!(
            Request::parse(line.strip_suffix('\n').unwrap().as_bytes()),
            Ok(request)
        );
    }
    for bad in [
        &b"guest= list"[..],
        b"guest=a b list",
        b"guest=vm0",
        b"guest=vm0 guests",
        b"guest=vm0 guest=vm1 list",
        b"list guest=vm0",
        b"guest=\xff list",
        b"guest=a,b list",
        b" guest=a list",
    ] {
        assert!(Request::parse(bad).is_err(), "{bad:?}");
    }
    let long = format!("guest={} list", "n".repeat(64));
    assert!(Request::parse(long.as_bytes()).is_err());
}

/// Two guests, `vm0` and `vm1`, with buffers of the same ids in different
/// memory.
struct TwoGuests {
    _dir: tempfile::TempDir,
    path: PathBuf,
    mems: [GuestMemoryMmap; 2],
    states: [Arc<SharedState>; 2],
    _server: InspectServer,
}

impl TwoGuests {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inspect.sock");
        let mems = [memory(), memory()];
        let states = [
            Arc::new(SharedState::default()),
            Arc::new(SharedState::default()),
        ];
        for (i, (mem, state)) in mems.iter().zip(&states).enumerate() {
            let mut s = state.lock();
            s.mem = Some(GuestMemoryAtomic::new(mem.clone()));
            s.connected = i == 0;
            s.buffers.insert(buffer(mem, 1, 1, &[(0x100, 0x10)]));
            if i == 1 {
                s.buffers.insert(buffer(mem, 3, 1, &[(0x200, 0x20)]));
            }
            mem.write_slice(
                format!("guest {i} bytes...").as_bytes(),
                GuestAddress(0x100),
            )
            .unwrap();
        }
        // Given out of order: served by name.
        let server = InspectServer::start(
            &path,
            vec![
                InspectGuest::new("vm1", Arc::clone(&states[1])),
                InspectGuest::new("vm0", Arc::clone(&states[0])),
            ],
        )
        .unwrap();
        Self {
            _dir: dir,
            path,
            mems,
            states,
            _server: server,
        }
    }

    fn client(&self, guest: Option<&str>) -> Client {
        Client::new(&self.path).with_guest(guest.map(String::from))
    }
}

#[test]
fn several_guests() {
    let f = TwoGuests::new();
    // Every guest's buffers, each line with its guest first.
    assert_eq!(
        String::from_utf8(f.client(None).list().unwrap()).unwrap(),
        "guest=vm0 id=1 application=app1 size=16 ranges=1 complete=1 seqno=0\n\
         \twidth=4\n\tformat=XR24\n\
         guest=vm1 id=1 application=app1 size=16 ranges=1 complete=1 seqno=0\n\
         \twidth=4\n\tformat=XR24\n\
         guest=vm1 id=3 application=app3 size=32 ranges=1 complete=1 seqno=0\n\
         \twidth=4\n\tformat=XR24\n"
    );
    // One guest's, as with a single guest.
    assert_eq!(
        f.client(Some("vm1")).list().unwrap(),
        f.states[1].lock().buffers.describe()
    );
    assert_eq!(
        f.client(Some("vm0")).list().unwrap(),
        f.states[0].lock().buffers.describe()
    );
    assert_eq!(
        String::from_utf8(f.client(None).guests().unwrap()).unwrap(),
        "guest=vm0 connected=1 buffers=1\nguest=vm1 connected=0 buffers=2\n"
    );
    // The guests' guest=NAME is ignored for `guests`.
    assert_eq!(
        f.client(Some("vm0")).guests().unwrap(),
        f.client(None).guests().unwrap()
    );
    // Who holds what: vm1's buffer 3 held by a consumer, unregistered.
    let holders = Arc::clone(&f.states[1].lock().holders);
    holders.handed(3, 7);
    assert!(!holders.unregistered(3));
    assert_eq!(
        String::from_utf8(f.client(None).holders().unwrap()).unwrap(),
        "guest=vm1 id=3 holders=1 instances=1 draining=1\n"
    );
    assert_eq!(
        String::from_utf8(f.client(Some("vm1")).holders().unwrap()).unwrap(),
        "id=3 holders=1 instances=1 draining=1\n"
    );
    assert!(f.client(Some("vm0")).holders().unwrap().is_empty());

    // Each guest's buffer 1 is in its own memory.
    for (i, name) in ["vm0", "vm1"].into_iter().enumerate() {
        let mut out = Vec::new();
        f.client(Some(name)).read(1, 0, 16, &mut out).unwrap();
        assert_eq!(out, format!("guest {i} bytes...").as_bytes());
    }
    f.client(Some("vm1")).write(1, 6, b"ONE").unwrap();
    let mut raw = [0; 3];
    f.mems[1].read_slice(&mut raw, GuestAddress(0x106)).unwrap();
    assert_eq!(&raw, b"ONE");
    f.mems[0].read_slice(&mut raw, GuestAddress(0x106)).unwrap();
    assert_eq!(&raw, b"0 b");

    // Refusals: no guest named, an unknown guest, a buffer of the other.
    let refused = |r: Result<(), ClientError>| match r {
        Err(ClientError::Refused(message)) => message,
        other => panic!("{other:?}"),
    };
    let mut out = Vec::new();
    assert_eq!(
        refused(f.client(None).read(1, 0, 1, &mut out)),
        "the backend serves 2 guests (vm0, vm1): name one"
    );
    assert!(refused(f.client(None).write(1, 0, b"x")).contains("name one"));
    assert_eq!(
        refused(f.client(Some("vm2")).read(1, 0, 1, &mut out)),
        "no guest vm2"
    );
    assert!(matches!(
        f.client(Some("vm2")).list(),
        Err(ClientError::Refused(m)) if m == "no guest vm2"
    ));
    assert_eq!(
        refused(f.client(Some("vm0")).read(3, 0, 1, &mut out)),
        "no buffer 3"
    );
    assert!(out.is_empty());
    f.client(Some("vm1")).read(3, 0, 1, &mut out).unwrap();

    // A guest with no frontend: its buffers are there, not its memory.
    f.states[0].lock().mem = None;
    assert_eq!(
        refused(f.client(Some("vm0")).read(1, 0, 1, &mut out)),
        "no guest memory"
    );
    f.client(Some("vm1")).read(1, 0, 1, &mut out).unwrap();
}

#[test]
fn a_single_guest_answers_without_its_name() {
    let f = Fixture::new();
    // Named or not, the same.
    let named = f.client().with_guest(Some("vm0".into()));
    assert_eq!(named.list().unwrap(), f.client().list().unwrap());
    assert!(!named.list().unwrap().starts_with(b"guest="));
    named.write(1, 0, b"ab").unwrap();
    let mut out = Vec::new();
    f.client().read(1, 0, 2, &mut out).unwrap();
    assert_eq!(out, b"ab");
    assert_eq!(
        f.client().guests().unwrap(),
        b"guest=vm0 connected=0 buffers=2\n"
    );
    assert!(matches!(
        f.client().with_guest(Some("vm1".into())).list(),
        Err(ClientError::Refused(m)) if m == "no guest vm1"
    ));
    assert_eq!(f.raw(b"guest=vm0 read 1 0 2\n"), b"ok 2\nab");
    assert_eq!(f.raw(b"guest=x read 1 0 2\n"), b"error no guest x\n");
}
