// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause

//! `bufshare-watch` against a fake backend: a consumer socket served by a
//! thread of the test, which encodes its messages with bufshare-consumer and
//! passes real memfds as the buffers' memory.

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bufshare_consumer::io::{recv_message, send_message};
use bufshare_consumer::wire::Hello;
use bufshare_consumer::{
    Add, ByteRange, ErrorCode, ErrorMessage, Event, Memory, MemoryForm, Message, Properties,
    PropertiesChanged, Rect, Remove, Reset, ResetReason, Segment, Update, Welcome,
};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long anything may take before the test gives up.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A temporary directory with the socket, the log and the dumps.
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("bsw-")
                .tempdir()
                .expect("temporary directory"),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("watch.log")
    }

    fn dumps(&self) -> PathBuf {
        self.dir.path().join("frames")
    }

    /// Serves one connection with `script`, in a thread. The socket exists
    /// when this returns.
    fn serve<F>(&self, script: F) -> JoinHandle<()>
    where
        F: FnOnce(Conn) + Send + 'static,
    {
        let listener = UnixListener::bind(self.socket()).expect("bind");
        let log = self.log();
        thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            script(Conn { stream, log });
        })
    }

    /// Starts bufshare-watch on the socket, with `--log` and `args`.
    fn watch(&self, args: &[&str]) -> Watch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bufshare-watch"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--log")
            .arg(self.log())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bufshare-watch");
        let stdout = reader(child.stdout.take().expect("stdout"));
        let stderr = reader(child.stderr.take().expect("stderr"));
        Watch {
            child,
            stdout,
            stderr,
        }
    }
}

fn reader(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut out = String::new();
        pipe.read_to_string(&mut out).expect("read a pipe");
        out
    })
}

/// A running bufshare-watch.
struct Watch {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

/// How it ended.
#[derive(Debug)]
struct Ended {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Watch {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit (kills it after [`TIMEOUT`]).
    fn wait(mut self) -> Ended {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("bufshare-watch did not exit");
            }
            thread::sleep(Duration::from_millis(10));
        };
        Ended {
            status: status.code().expect("exited, not killed"),
            stdout: self.stdout.join().expect("stdout"),
            stderr: self.stderr.join().expect("stderr"),
        }
    }
}

/// The fake backend's end of a connection.
struct Conn {
    stream: UnixStream,
    log: PathBuf,
}

impl Conn {
    fn hello(&self) -> Hello {
        match recv_message(self.stream.as_fd()).expect("receive") {
            Some(Message::Hello(hello)) => hello,
            other => panic!("expected HELLO, got {other:?}"),
        }
    }

    fn send<F: AsFd>(&self, message: &Message<F>) {
        let encoded = message.encode().expect("encode");
        send_message(self.stream.as_fd(), &encoded.bytes, &encoded.fds).expect("send");
    }

    fn welcome(&self, memory_form: MemoryForm) {
        let hello = self.hello();
        assert_eq!(hello.version, bufshare_consumer::VERSION);
        self.send::<BorrowedFd<'_>>(&Message::Welcome(Welcome {
            version: 1,
            memory_form,
            queue_limit: 64,
            server: "fake".into(),
        }));
    }

    fn event<F: AsFd>(&self, event: Event<F>) {
        self.send(&Message::Event(event));
    }

    /// Waits until the log has `n` lines; returns them.
    fn lines(&self, n: usize) -> Vec<String> {
        wait_lines(&self.log, n)
    }

    /// Waits for bufshare-watch to close the connection.
    fn wait_closed(mut self) {
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut byte = [0];
        assert_eq!(self.stream.read(&mut byte).expect("no timeout"), 0);
    }
}

/// Waits until `log` has `n` complete lines; returns them.
fn wait_lines(log: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| l.trim_end_matches('\n').to_owned())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {n} lines, log has {lines:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A memfd of `len` bytes named `name`.
fn memfd(name: &str, len: u64) -> File {
    let file = File::from(memfd_create(name, MFdFlags::MFD_CLOEXEC).expect("memfd_create"));
    file.set_len(len).unwrap();
    file
}

fn read_at(file: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    file.read_exact_at(&mut out, offset).unwrap();
    out
}

fn crc(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

fn props(pairs: &[(&str, &str)]) -> Properties {
    Properties::from_pairs(pairs.iter().copied()).expect("valid properties")
}

fn add<'a>(
    guest: &str,
    id: u64,
    application: &str,
    size: u64,
    properties: Properties,
    memory: Memory<BorrowedFd<'a>>,
) -> Event<BorrowedFd<'a>> {
    Event::Add(Add {
        guest: guest.into(),
        buffer_id: id,
        application: application.into(),
        size,
        seqno: 0,
        properties,
        memory,
    })
}

fn update(guest: &str, id: u64, seqno: u64) -> Event<BorrowedFd<'static>> {
    Event::Update(Update {
        guest: guest.into(),
        buffer_id: id,
        seqno,
        range: None,
        rect: None,
    })
}

fn set_props(guest: &str, id: u64, properties: Properties) -> Event<BorrowedFd<'static>> {
    Event::Properties(PropertiesChanged {
        guest: guest.into(),
        buffer_id: id,
        properties,
    })
}

/// The memfds bufshare-watch has mapped, by name.
fn mapped(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps")
}

#[test]
fn events() {
    let setup = Setup::new();
    let log = setup.log();
    // The checks of /proc/PID/maps need the watcher's pid in the server.
    let (pid_tx, pid_rx) = std::sync::mpsc::channel::<u32>();
    let server = setup.serve(move |conn| {
        let hello = conn.hello();
        assert_eq!(hello.applications, ["camera", "weston"]);
        conn.send::<BorrowedFd<'_>>(&Message::Welcome(Welcome {
            version: 1,
            memory_form: MemoryForm::Segments,
            queue_limit: 64,
            server: "fake".into(),
        }));
        let pid = pid_rx.recv().unwrap();

        // Buffer 1 of vm0: a dma-buf (a memfd stands in for it).
        let a = memfd("bsw-test-a", 8192);
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 13 % 251) as u8).collect();
        a.write_all_at(&data, 0).unwrap();
        conn.event(add(
            "vm0",
            1,
            "camera",
            8192,
            Properties::default(),
            Memory::DmaBuf(a.as_fd()),
        ));
        // Buffer 2 of vm0: two segments of a file, out of order, with
        // properties to sanitize.
        let b = memfd("bsw-test-b", 0x3000);
        b.write_all_at(&[0x5a; 0x100], 0x2000).unwrap();
        b.write_all_at(&(0..0x80).collect::<Vec<u8>>(), 0x10).unwrap();
        let segments = vec![
            Segment {
                file: 0,
                offset: 0x2000,
                len: 0x100,
            },
            Segment {
                file: 0,
                offset: 0x10,
                len: 0x80,
            },
        ];
        conn.event(add(
            "vm0",
            2,
            "weston",
            0x180,
            props(&[("name", "a b,c"), ("empty", ""), ("eq", "x=y")]),
            Memory::Segments {
                files: vec![b.as_fd()],
                segments,
            },
        ));
        let mut b_bytes = read_at(&b, 0x2000, 0x100);
        b_bytes.extend(read_at(&b, 0x10, 0x80));
        let lines = conn.lines(3);
        assert_eq!(
            lines[1],
            format!(
                "ADD guest=vm0 id=1 app=camera size=8192 seqno=0 memory=dmabuf crc32={} props=-",
                crc(&data)
            )
        );
        assert_eq!(
            lines[2],
            format!(
                "ADD guest=vm0 id=2 app=weston size=384 seqno=0 memory=segments crc32={} props=name=a_b_c,empty=,eq=x=y",
                crc(&b_bytes)
            )
        );
        let maps = mapped(pid);
        assert!(maps.contains("/memfd:bsw-test-a"), "{maps}");
        assert!(maps.contains("/memfd:bsw-test-b"), "{maps}");

        // Updates: the CRC-32 is that of the whole buffer when handled.
        a.write_all_at(b"changed", 100).unwrap();
        let mut data = data;
        data[100..107].copy_from_slice(b"changed");
        conn.event(Event::<BorrowedFd<'_>>::Update(Update {
            range: Some(ByteRange {
                offset: 100,
                len: 7,
            }),
            ..update_of(1, 1)
        }));
        assert_eq!(
            conn.lines(4)[3],
            format!(
                "UPDATE guest=vm0 id=1 seqno=1 range=100+7 rect=- crc32={}",
                crc(&data)
            )
        );
        a.write_all_at(&[0; 16], 8176).unwrap();
        data[8176..].fill(0);
        conn.event(Event::<BorrowedFd<'_>>::Update(Update {
            rect: Some(Rect {
                x: 1,
                y: 2,
                width: 30,
                height: 40,
            }),
            ..update_of(1, 5)
        }));
        conn.event(Event::<BorrowedFd<'_>>::Update(Update {
            range: Some(ByteRange {
                offset: 0,
                len: 0x180,
            }),
            rect: Some(Rect {
                x: 0,
                y: 0,
                width: 1,
                height: 1,
            }),
            ..update_of(2, 7)
        }));
        conn.event(update("vm0", 2, 8));
        let lines = conn.lines(7);
        assert_eq!(
            lines[4],
            format!(
                "UPDATE guest=vm0 id=1 seqno=5 range=- rect=1,2,30x40 crc32={}",
                crc(&data)
            )
        );
        assert_eq!(
            lines[5],
            format!(
                "UPDATE guest=vm0 id=2 seqno=7 range=0+384 rect=0,0,1x1 crc32={}",
                crc(&b_bytes)
            )
        );
        assert_eq!(
            lines[6],
            format!(
                "UPDATE guest=vm0 id=2 seqno=8 range=- rect=- crc32={}",
                crc(&b_bytes)
            )
        );

        // Properties.
        conn.event(set_props("vm0", 2, props(&[("k", "v w"), ("n", "1")])));
        conn.event(set_props("vm0", 1, Properties::default()));
        let lines = conn.lines(9);
        assert_eq!(lines[7], "PROPERTIES guest=vm0 id=2 props=k=v_w,n=1");
        assert_eq!(lines[8], "PROPERTIES guest=vm0 id=1 props=-");

        // The same id in another guest.
        let c = memfd("bsw-test-c", 4096);
        conn.event(add(
            "vm1",
            1,
            "camera",
            4096,
            props(&[("x", "1")]),
            Memory::DmaBuf(c.as_fd()),
        ));
        let lines = conn.lines(10);
        assert_eq!(
            lines[9],
            format!(
                "ADD guest=vm1 id=1 app=camera size=4096 seqno=0 memory=dmabuf crc32={} props=x=1",
                crc(&[0; 4096])
            )
        );

        // REMOVE unmaps the buffer, RESET every buffer of its guest.
        conn.event(Event::<BorrowedFd<'_>>::Remove(Remove {
            guest: "vm0".into(),
            buffer_id: 1,
        }));
        assert_eq!(conn.lines(11)[10], "REMOVE guest=vm0 id=1");
        let maps = mapped(pid);
        assert!(!maps.contains("/memfd:bsw-test-a"), "{maps}");
        assert!(maps.contains("/memfd:bsw-test-b"), "{maps}");
        conn.event(Event::<BorrowedFd<'_>>::Reset(Reset {
            guest: "vm0".into(),
            reason: ResetReason::DeviceReset,
        }));
        assert_eq!(conn.lines(12)[11], "RESET guest=vm0 reason=DEVICE_RESET");
        let maps = mapped(pid);
        assert!(!maps.contains("/memfd:bsw-test-b"), "{maps}");
        assert!(maps.contains("/memfd:bsw-test-c"), "{maps}");
        conn.event(Event::<BorrowedFd<'_>>::Reset(Reset {
            guest: "vm1".into(),
            reason: ResetReason::Disconnected,
        }));
        assert_eq!(conn.lines(13)[12], "RESET guest=vm1 reason=DISCONNECTED");
        assert!(!mapped(pid).contains("/memfd:bsw-test-c"));
        // Then the backend closes the connection.
    });
    let watch = setup.watch(&["--app", "camera", "--app", "weston", "--app", "camera"]);
    pid_tx.send(watch.pid()).unwrap();
    server.join().unwrap();
    let ended = watch.wait();
    assert_eq!(ended.status, 0, "{ended:?}");
    let logged = fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), 13);
    assert_eq!(
        logged.lines().next(),
        Some("WELCOME version=1 memory=segments")
    );
    assert_eq!(ended.stdout, logged);
    assert_eq!(ended.stderr, "frames: 0 dumped, 0 verified, 0 mismatched\n");
}

fn update_of(id: u64, seqno: u64) -> Update {
    Update {
        guest: "vm0".into(),
        buffer_id: id,
        seqno,
        range: None,
        rect: None,
    }
}

/// Pixels as the PNG has them, 8-bit RGB or RGBA.
fn read_png(path: &Path) -> (u32, u32, png::ColorType, Vec<u8>) {
    let decoder = png::Decoder::new(BufReader::new(File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut data = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut data).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    data.truncate(info.buffer_size());
    (info.width, info.height, info.color_type, data)
}

/// A 4x3 XRGB8888 frame at offset 64 with a stride of 20, in a buffer of
/// 4096 bytes: the memfd, its properties, and the pixels as RGB.
fn xrgb_frame(name: &str, seed: u8) -> (File, Vec<(&'static str, String)>, Vec<u8>) {
    let file = memfd(name, 4096);
    let mut rgb = Vec::new();
    for y in 0..3u8 {
        let mut row = Vec::new();
        for x in 0..4u8 {
            let (r, g, b) = (seed.wrapping_add(x * 60), y * 100, 255 - x * 50);
            row.extend([b, g, r, 0xee]);
            rgb.extend([r, g, b]);
        }
        row.extend([0xab; 4]); // padding
        file.write_all_at(&row, 64 + u64::from(y) * 20).unwrap();
    }
    let props = vec![
        ("width", "4".to_owned()),
        ("height", "3".to_owned()),
        ("format", "XRGB8888".to_owned()),
        ("stride", "20".to_owned()),
        ("offset", "64".to_owned()),
    ];
    (file, props, rgb)
}

/// The CRC-32 of the frame of [`xrgb_frame`].
fn frame_crc(file: &File) -> String {
    crc(&read_at(file, 64, 60))
}

fn owned(pairs: &[(&'static str, String)]) -> Properties {
    Properties::from_pairs(pairs.iter().map(|(n, v)| (*n, v.as_str()))).unwrap()
}

#[test]
fn dump_frames() {
    let setup = Setup::new();
    let dumps = setup.dumps();
    let expected_dir = dumps.clone();
    let server = setup.serve(move |conn| {
        let hello = conn.hello();
        assert_eq!(hello.applications, ["*"]);
        conn.send::<BorrowedFd<'_>>(&Message::Welcome(Welcome {
            version: 1,
            memory_form: MemoryForm::DmaBuf,
            queue_limit: 64,
            server: "fake".into(),
        }));
        let (frame, frame_props, rgb) = xrgb_frame("bsw-frame", 10);
        conn.event(add(
            "vm0",
            1,
            "weston",
            4096,
            owned(&frame_props),
            Memory::DmaBuf(frame.as_fd()),
        ));
        // Not a frame, then one (RGB565 2x2 at 0).
        let other = memfd("bsw-other", 4096);
        other
            .write_all_at(&[0x00, 0xf8, 0xe0, 0x07, 0x1f, 0x00, 0xff, 0xff], 0)
            .unwrap();
        conn.event(add(
            "vm0",
            2,
            "weston",
            4096,
            props(&[("name", "x")]),
            Memory::DmaBuf(other.as_fd()),
        ));
        // Looks like a frame, but too large for its buffer: a warning.
        let small = memfd("bsw-small", 4096);
        conn.event(add(
            "vm0",
            3,
            "weston",
            4096,
            props(&[("width", "64"), ("height", "64"), ("format", "XR24")]),
            Memory::DmaBuf(small.as_fd()),
        ));
        conn.event(update("vm0", 2, 1));
        conn.event(update("vm0", 3, 1));
        conn.event(update("vm0", 1, 5));
        let lines = conn.lines(8);
        let png = expected_dir.join("vm0-1-5.png");
        assert_eq!(
            lines[6],
            format!(
                "UPDATE guest=vm0 id=1 seqno=5 range=- rect=- crc32={}",
                crc(&read_at(&frame, 0, 4096))
            )
        );
        assert_eq!(
            lines[7],
            format!("FRAME guest=vm0 id=1 seqno=5 file={}", png.display())
        );
        assert!(lines[4].starts_with("UPDATE guest=vm0 id=2 seqno=1 "));
        assert!(lines[5].starts_with("UPDATE guest=vm0 id=3 seqno=1 "));
        assert_eq!(read_png(&png), (4, 3, png::ColorType::Rgb, rgb));

        conn.event(set_props(
            "vm0",
            2,
            props(&[("width", "2"), ("height", "2"), ("format", "RGB565")]),
        ));
        conn.event(update("vm0", 2, 2));
        let lines = conn.lines(11);
        let png = expected_dir.join("vm0-2-2.png");
        assert_eq!(
            lines[10],
            format!("FRAME guest=vm0 id=2 seqno=2 file={}", png.display())
        );
        assert_eq!(
            read_png(&png),
            (
                2,
                2,
                png::ColorType::Rgb,
                vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]
            )
        );
        // --frames 2: bufshare-watch leaves on its own.
        conn.wait_closed();
    });
    let dir = dumps.to_str().unwrap().to_owned();
    let watch = setup.watch(&["--dump", &dir, "--frames", "2"]);
    server.join().unwrap();
    let ended = watch.wait();
    assert_eq!(ended.status, 0, "{ended:?}");
    assert!(
        ended.stderr.contains("guest vm0 buffer 3: not a frame"),
        "{ended:?}"
    );
    assert!(
        ended
            .stderr
            .ends_with("\rframes: 2 dumped, 0 verified, 0 mismatched\n"),
        "{ended:?}"
    );
    let mut files: Vec<_> = fs::read_dir(&dumps)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["vm0-1-5.png", "vm0-2-2.png"]);
}

#[test]
fn verify_mismatch() {
    let setup = Setup::new();
    let server = setup.serve(move |conn| {
        conn.welcome(MemoryForm::DmaBuf);
        let (good, mut good_props, _) = xrgb_frame("bsw-good", 1);
        good_props.push(("crc32", frame_crc(&good)));
        let (bad, mut bad_props, _) = xrgb_frame("bsw-bad", 2);
        bad_props.push(("crc32", "00000000".into()));
        let (none, none_props, _) = xrgb_frame("bsw-none", 3);
        for (id, file, p) in [(1, &good, &good_props), (2, &bad, &bad_props)] {
            conn.event(add(
                "vm0",
                id,
                "app",
                4096,
                owned(p),
                Memory::DmaBuf(file.as_fd()),
            ));
        }
        conn.event(add(
            "vm0",
            3,
            "app",
            4096,
            owned(&none_props),
            Memory::DmaBuf(none.as_fd()),
        ));
        conn.event(update("vm0", 1, 1));
        conn.event(update("vm0", 2, 1));
        conn.event(update("vm0", 3, 1));
        let lines = conn.lines(10);
        assert_eq!(lines[5], "VERIFY guest=vm0 id=1 seqno=1 ok");
        assert_eq!(
            lines[7],
            format!(
                "VERIFY guest=vm0 id=2 seqno=1 mismatch expected=00000000 actual={}",
                frame_crc(&bad)
            )
        );
        assert_eq!(lines[9], "VERIFY guest=vm0 id=3 seqno=1 missing");
        // The padding counts; bytes outside the frame do not.
        good.write_all_at(&[0; 16], 0).unwrap();
        conn.event(update("vm0", 1, 2));
        // Handled before the next change.
        conn.lines(12);
        good.write_all_at(&[0], 64 + 16).unwrap();
        conn.event(update("vm0", 1, 3));
        let lines = conn.lines(14);
        assert_eq!(lines[11], "VERIFY guest=vm0 id=1 seqno=2 ok");
        assert!(
            lines[13].starts_with("VERIFY guest=vm0 id=1 seqno=3 mismatch expected="),
            "{lines:?}"
        );
        // A malformed crc32 property is a mismatch too.
        conn.event(set_props("vm0", 3, {
            let mut p = none_props.clone();
            p.push(("crc32", "not a crc".into()));
            owned(&p)
        }));
        conn.event(update("vm0", 3, 2));
        let lines = conn.lines(17);
        assert_eq!(
            lines[16],
            format!(
                "VERIFY guest=vm0 id=3 seqno=2 mismatch expected=not_a_crc actual={}",
                frame_crc(&none)
            )
        );
    });
    let watch = setup.watch(&["--verify"]);
    server.join().unwrap();
    let ended = watch.wait();
    assert_eq!(ended.status, 1, "{ended:?}");
    assert!(
        ended
            .stderr
            .ends_with("frames: 0 dumped, 2 verified, 3 mismatched\n"),
        "{ended:?}"
    );
}

#[test]
fn verify_ok_dump_and_sigterm() {
    let setup = Setup::new();
    let log = setup.log();
    let dumps = setup.dumps();
    let server = setup.serve(move |conn| {
        conn.welcome(MemoryForm::DmaBuf);
        let (frame, mut frame_props, rgb) = xrgb_frame("bsw-frame", 99);
        frame_props.push(("crc32", frame_crc(&frame)));
        conn.event(add(
            "vm-2",
            7,
            "app",
            4096,
            owned(&frame_props),
            Memory::DmaBuf(frame.as_fd()),
        ));
        conn.event(update("vm-2", 7, 3));
        let lines = conn.lines(5);
        assert!(lines[2].starts_with("UPDATE guest=vm-2 id=7 seqno=3 "));
        let png = conn.log.parent().unwrap().join("frames/vm-2-7-3.png");
        assert_eq!(
            lines[3],
            format!("FRAME guest=vm-2 id=7 seqno=3 file={}", png.display())
        );
        assert_eq!(lines[4], "VERIFY guest=vm-2 id=7 seqno=3 ok");
        assert_eq!(read_png(&png).3, rgb);
        // Stays connected until bufshare-watch goes.
        conn.wait_closed();
    });
    let dir = dumps.to_str().unwrap().to_owned();
    let watch = setup.watch(&["--verify", "--dump", &dir]);
    wait_lines(&log, 5);
    kill(Pid::from_raw(watch.pid() as i32), Signal::SIGTERM).unwrap();
    let ended = watch.wait();
    server.join().unwrap();
    assert_eq!(ended.status, 0, "{ended:?}");
    assert_eq!(ended.stdout, fs::read_to_string(&log).unwrap());
    assert!(
        ended
            .stderr
            .ends_with("\rframes: 1 dumped, 1 verified, 0 mismatched\n"),
        "{ended:?}"
    );
}

#[test]
fn refused() {
    let setup = Setup::new();
    let server = setup.serve(|conn| {
        assert_eq!(conn.hello().applications, ["camera"]);
        conn.send::<BorrowedFd<'_>>(&Message::Error(ErrorMessage::new(
            ErrorCode::Denied,
            "no camera for you",
        )));
    });
    let watch = setup.watch(&["--app", "camera"]);
    server.join().unwrap();
    let ended = watch.wait();
    assert_eq!(ended.status, 2, "{ended:?}");
    let line = "ERROR code=DENIED text=no_camera_for_you\n";
    assert_eq!(ended.stdout, line);
    assert_eq!(fs::read_to_string(setup.log()).unwrap(), line);
}

#[test]
fn ended_by_the_backend() {
    for (code, text, status) in [
        (ErrorCode::Overflow, "queue of 64 events overflowed", 3),
        (ErrorCode::Shutdown, "", 3),
        (ErrorCode::Protocol, "bad", 2),
    ] {
        let setup = Setup::new();
        let server = setup.serve(move |conn| {
            conn.welcome(MemoryForm::Segments);
            conn.send::<BorrowedFd<'_>>(&Message::Error(ErrorMessage::new(code, text)));
        });
        let ended = setup.watch(&["--quiet"]).wait();
        server.join().unwrap();
        assert_eq!(ended.status, status, "{ended:?}");
        assert_eq!((ended.stdout.as_str(), ended.stderr.as_str()), ("", ""));
        let name = format!("{code:?}").to_uppercase();
        assert_eq!(
            fs::read_to_string(setup.log()).unwrap(),
            format!(
                "WELCOME version=1 memory=segments\nERROR code={name} text={}\n",
                text.replace(' ', "_")
            )
        );
    }
}

#[test]
fn seconds_and_quiet() {
    let setup = Setup::new();
    let server = setup.serve(|conn| {
        conn.welcome(MemoryForm::DmaBuf);
        conn.wait_closed();
    });
    let start = Instant::now();
    let ended = setup.watch(&["--seconds", "1", "--quiet"]).wait();
    server.join().unwrap();
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert_eq!(ended.status, 0, "{ended:?}");
    assert_eq!((ended.stdout.as_str(), ended.stderr.as_str()), ("", ""));
    assert_eq!(
        fs::read_to_string(setup.log()).unwrap(),
        "WELCOME version=1 memory=dmabuf\n"
    );
}

#[test]
fn cannot_connect() {
    let setup = Setup::new();
    let ended = setup.watch(&[]).wait();
    assert_eq!(ended.status, 4, "{ended:?}");
    assert!(ended.stderr.contains("cannot connect"), "{ended:?}");
    assert_eq!(fs::read_to_string(setup.log()).unwrap(), "");
}

#[test]
fn sigint() {
    let setup = Setup::new();
    let server = setup.serve(|conn| {
        conn.welcome(MemoryForm::DmaBuf);
        conn.wait_closed();
    });
    let watch = setup.watch(&[]);
    wait_lines(&setup.log(), 1);
    kill(Pid::from_raw(watch.pid() as i32), Signal::SIGINT).unwrap();
    let ended = watch.wait();
    server.join().unwrap();
    assert_eq!(ended.status, 0, "{ended:?}");
    assert_eq!(ended.stdout, "WELCOME version=1 memory=dmabuf\n");
    assert_eq!(ended.stderr, "frames: 0 dumped, 0 verified, 0 mismatched\n");
}

#[test]
fn usage() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bufshare-watch"))
            .args(args)
            .output()
            .expect("run bufshare-watch")
    };
    let out = run(&["--socket", "s", "--frames", "0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let out = run(&["--socket", "s", "--app", "a b"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--verify"));
}

impl Conn {
    /// Answers the HELLO with a WELCOME of version 3: the watcher says
    /// RELEASE and CLOSED.
    fn welcome_v3(&self) {
        self.hello();
        self.send::<BorrowedFd<'_>>(&Message::Welcome(Welcome {
            version: 3,
            memory_form: MemoryForm::DmaBuf,
            queue_limit: 64,
            server: "fake".into(),
        }));
    }

    /// The next message the watcher sends, within `wait`, as text.
    fn said(&self, wait: Duration) -> Option<String> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        recv_message(self.stream.as_fd())
            .ok()
            .flatten()
            .map(|m| format!("{m:?}"))
    }
}

fn release_text(seqno: u64) -> String {
    format!(
        "{:?}",
        Message::<std::os::fd::OwnedFd>::Release(bufshare_consumer::Release {
            guest: "vm0".into(),
            buffer_id: 1,
            seqno,
        })
    )
}

fn closed_text() -> String {
    format!(
        "{:?}",
        Message::<std::os::fd::OwnedFd>::Closed(bufshare_consumer::Closed {
            guest: "vm0".into(),
            buffer_id: 1,
        })
    )
}

/// Runs a watcher with `args` against a backend of version 3 that adds
/// buffer 1 and updates it, then (unless `remove` is false) removes it;
/// returns what the watcher said, each with when (after the UPDATE, after
/// the REMOVE).
fn answers(args: &[&str], remove: bool) -> Vec<(String, Duration)> {
    let setup = Setup::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = setup.serve(move |conn| {
        conn.welcome_v3();
        let file = memfd("bsw-v3", 4096);
        conn.event(add(
            "vm0",
            1,
            "app",
            4096,
            Properties::default(),
            Memory::DmaBuf(file.as_fd()),
        ));
        conn.event(update("vm0", 1, 5));
        let mut said = Vec::new();
        let start = Instant::now();
        if let Some(m) = conn.said(Duration::from_millis(500)) {
            said.push((m, start.elapsed()));
        }
        if remove {
            conn.event(Event::<BorrowedFd<'_>>::Remove(Remove {
                guest: "vm0".into(),
                buffer_id: 1,
            }));
            let start = Instant::now();
            while let Some(m) = conn.said(Duration::from_secs(3)) {
                said.push((m, start.elapsed()));
            }
        }
        tx.send(said).unwrap();
    });
    let watch = setup.watch(args);
    let said = rx.recv_timeout(TIMEOUT).unwrap();
    kill(Pid::from_raw(watch.pid() as i32), Signal::SIGTERM).unwrap();
    server.join().unwrap();
    watch.wait();
    said
}

#[test]
fn releases_and_closes() {
    let said = answers(&[], true);
    let texts: Vec<&str> = said.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(texts, [release_text(5), closed_text()]);
    assert!(said[1].1 < Duration::from_millis(500), "{said:?}");
}

#[test]
fn hold_after_remove_and_no_release() {
    let said = answers(&["--hold-after-remove", "1", "--no-release"], true);
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(said[0].0, closed_text());
    assert!(said[0].1 >= Duration::from_millis(900), "{said:?}");
}

#[test]
fn stop_reading() {
    // The UPDATE is not read: neither RELEASE nor, the REMOVE unread, CLOSED.
    let said = answers(&["--stop-reading", "1"], true);
    assert!(said.is_empty(), "{said:?}");
}
