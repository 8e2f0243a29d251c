// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause
//! bufshare-crate-test: the bufshare crate against the real driver, in the
//! guest. Prints TAP (kselftest style); exits 0 only if every test passed.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

use bufshare::{
    Buffer, Device, Error, Event, Kind, Mapping, Memfd, Properties, Update, SIZE_SEALS,
};

type TestResult = Result<(), String>;
type Test = (&'static str, fn() -> TestResult);

/// Fails the test with a message unless `cond`.
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err(format!("line {}: {}", line!(), stringify!($cond)));
        }
    };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("line {}: {}", line!(), format!($($fmt)+)));
        }
    };
}

/// `r` failed with `errno`.
fn expect_errno<T: std::fmt::Debug>(r: bufshare::Result<T>, errno: i32) -> TestResult {
    match r {
        Err(e) if e.errno() == errno => Ok(()),
        Err(e) => Err(format!(
            "expected errno {errno}, got {e} (errno {})",
            e.errno()
        )),
        Ok(v) => Err(format!("expected errno {errno}, got success: {v:?}")),
    }
}

fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

const SIZE: u64 = 64 * 1024;
/// DRM_FORMAT_XRGB8888, fourcc "XR24".
const XRGB8888: u32 = u32::from_le_bytes(*b"XR24");

fn frame_props() -> Properties {
    Properties::new()
        .with("width", "128")
        .and_then(|p| p.with("height", "128"))
        .and_then(|p| p.with("stride", "512"))
        .and_then(|p| p.with("format", XRGB8888.to_string()))
        .expect("valid properties")
}

fn num_buffers(dev: &Device) -> Result<u64, String> {
    Ok(ctx(dev.info(), "GET_INFO")?.num_buffers)
}

/// A sealed memfd of `SIZE` bytes, registered whole with [`frame_props`]
/// through a new open file (which the buffer keeps).
fn register_frame() -> Result<(Memfd, Buffer), String> {
    let dev = ctx(Device::open(), "Device::open")?;
    let m = ctx(Memfd::create_sealed("crate-test", SIZE), "memfd")?;
    let buf = ctx(
        dev.register(m.as_fd(), 0, SIZE, "crate-test", &frame_props()),
        "REGISTER",
    )?;
    Ok((m, buf))
}

fn open_and_info() -> TestResult {
    let dev = ctx(Device::open(), "Device::open")?;
    let info = ctx(dev.info(), "GET_INFO")?;
    check!(info.version == 1, "version {}", info.version);
    check!(
        info.name.starts_with("vhost-user-bufshare "),
        "name {:?}",
        info.name
    );
    check!(info.max_buffer_size >= SIZE);
    // VIRTIO_BUFSHARE_F_BUFFERS.
    check!(info.features & 1 == 1, "features {:#x}", info.features);
    Ok(())
}

fn memfd_create_and_seal() -> TestResult {
    let m = ctx(Memfd::create_sealed("crate-test", SIZE), "memfd")?;
    let seals = ctx(m.seals(), "F_GET_SEALS")?;
    check!(seals & SIZE_SEALS == SIZE_SEALS, "seals {seals:#x}");
    check!(seals & libc::F_SEAL_SEAL != 0, "seals {seals:#x}");
    check!(seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) == 0);
    let mut map = ctx(m.map(), "mmap")?;
    check!(map.len() as u64 == SIZE);
    map.as_mut_slice().fill(0x5a);
    check!(map.as_slice().iter().all(|&b| b == 0x5a));
    // The seals are sealed.
    expect_errno(m.add_seals(libc::F_SEAL_WRITE), libc::EPERM)
}

fn register_memfd_and_info() -> TestResult {
    let dev = ctx(Device::open(), "Device::open")?;
    let base = num_buffers(&dev)?;
    let m = ctx(Memfd::create_sealed("crate-test", SIZE), "memfd")?;
    let props = frame_props();
    let buf = ctx(
        dev.register(m.as_fd(), 0, SIZE, "crate-test", &props),
        "REGISTER",
    )?;
    check!(buf.id() > 0);
    check!(num_buffers(&dev)? == base + 1);
    let info = ctx(buf.info(), "BUFFER_INFO")?;
    check!(info.id == buf.id());
    check!(info.kind == Kind::Memfd, "kind {:?}", info.kind);
    check!(info.size == SIZE, "size {}", info.size);
    check!(info.seqno == 0);
    check!(info.nr_ranges >= 1);
    check!(info.application == "crate-test", "{:?}", info.application);
    check!(info.properties == props, "{:?}", info.properties);
    // Part of the memfd.
    let part = ctx(
        dev.register(m.as_fd(), 4096, 8192, "crate-test", &Properties::new()),
        "REGISTER part",
    )?;
    let pinfo = ctx(part.info(), "BUFFER_INFO")?;
    check!(pinfo.size == 8192 && pinfo.properties.is_empty());
    check!(part.id() != buf.id());
    ctx(buf.unregister(), "UNREGISTER")?;
    ctx(part.unregister(), "UNREGISTER")?;
    check!(num_buffers(&dev)? == base);
    Ok(())
}

fn update_seqnos() -> TestResult {
    let (_m, buf) = register_frame()?;
    check!(ctx(buf.update(Update::whole()), "UPDATE")? == 1);
    check!(ctx(buf.update(Update::range(4096, 4096)), "UPDATE")? == 2);
    check!(
        ctx(
            buf.update(Update::rect(0, 0, 16, 16).with_seqno(10)),
            "UPDATE"
        )? == 10
    );
    check!(ctx(buf.update(Update::rect(112, 120, 16, 8)), "UPDATE")? == 11);
    let both = Update {
        range: Some((0, SIZE)),
        ..Update::rect(1, 1, 1, 1)
    };
    check!(ctx(buf.update(both), "UPDATE")? == 12);
    check!(ctx(buf.info(), "BUFFER_INFO")?.seqno == 12);
    // Not past the last one, not outside the buffer or its width/height.
    expect_errno(buf.update(Update::whole().with_seqno(12)), libc::EINVAL)?;
    expect_errno(buf.update(Update::range(SIZE - 4096, 8192)), libc::EINVAL)?;
    expect_errno(buf.update(Update::range(0, 0)), libc::EINVAL)?;
    expect_errno(buf.update(Update::rect(120, 0, 16, 1)), libc::EINVAL)?;
    expect_errno(buf.update(Update::rect(0, 0, 0, 1)), libc::EINVAL)?;
    check!(ctx(buf.info(), "BUFFER_INFO")?.seqno == 12);
    // Without waiting for the device: numbered and checked the same way.
    check!(
        ctx(
            buf.update(Update::whole().without_waiting()),
            "UPDATE nowait"
        )? == 13
    );
    expect_errno(
        buf.update(Update::range(0, 0).without_waiting()),
        libc::EINVAL,
    )?;
    check!(ctx(buf.update(Update::whole()), "UPDATE")? == 14);
    Ok(())
}

fn set_properties_merge_and_replace() -> TestResult {
    let (_m, buf) = register_frame()?;
    let change = ctx(
        Properties::new()
            .with("format", "0")
            .and_then(|p| p.with("label", "crate test, merged")),
        "props",
    )?;
    ctx(buf.set_properties(&change, true), "SET_PROPERTIES merge")?;
    let mut expect = frame_props();
    expect.merge(&change);
    let got = ctx(buf.info(), "BUFFER_INFO")?.properties;
    check!(got.len() == expect.len(), "{got:?}");
    for (n, v) in expect.iter() {
        check!(got.get(n) == Some(v), "{n}: {:?} in {got:?}", got.get(n));
    }
    let only = ctx(Properties::new().with("a", "1"), "props")?;
    ctx(buf.set_properties(&only, false), "SET_PROPERTIES")?;
    check!(ctx(buf.info(), "BUFFER_INFO")?.properties == only);
    ctx(
        buf.set_properties(&Properties::new(), false),
        "SET_PROPERTIES",
    )?;
    check!(ctx(buf.info(), "BUFFER_INFO")?.properties.is_empty());
    Ok(())
}

fn unregister_then_enoent() -> TestResult {
    let dev = ctx(Device::open(), "Device::open")?;
    let base = num_buffers(&dev)?;
    let m = ctx(Memfd::create_sealed("crate-test", SIZE), "memfd")?;
    let buf = ctx(
        dev.register(m.as_fd(), 0, SIZE, "crate-test", &Properties::new()),
        "REGISTER",
    )?;
    let id = buf.id();
    ctx(buf.unregister(), "UNREGISTER")?;
    check!(num_buffers(&dev)? == base);
    expect_errno(dev.buffer_info(id), libc::ENOENT)?;
    expect_errno(dev.unregister(id), libc::ENOENT)
}

fn drop_unregisters() -> TestResult {
    let dev = ctx(Device::open(), "Device::open")?;
    let base = num_buffers(&dev)?;
    let m = ctx(Memfd::create_sealed("crate-test", SIZE), "memfd")?;
    let id = {
        let buf = ctx(
            dev.register(m.as_fd(), 0, SIZE, "crate-test", &Properties::new()),
            "REGISTER",
        )?;
        check!(num_buffers(&dev)? == base + 1);
        buf.id()
    };
    check!(num_buffers(&dev)? == base);
    expect_errno(dev.buffer_info(id), libc::ENOENT)
}

fn close_unregisters_given_up_buffers() -> TestResult {
    let watcher = ctx(Device::open(), "Device::open")?;
    let base = num_buffers(&watcher)?;
    let m = ctx(Memfd::create_sealed("crate-test", SIZE), "memfd")?;
    {
        let dev = ctx(Device::open(), "Device::open")?;
        let buf = ctx(
            dev.register(m.as_fd(), 0, SIZE, "crate-test", &Properties::new()),
            "REGISTER",
        )?;
        let id = buf.into_id();
        check!(ctx(dev.buffer_info(id), "BUFFER_INFO")?.size == SIZE);
        // Another open file does not own it.
        expect_errno(watcher.buffer_info(id), libc::ENOENT)?;
        check!(num_buffers(&watcher)? == base + 1);
    }
    check!(num_buffers(&watcher)? == base);
    Ok(())
}

/// A dma-buf of `len` bytes from the system dma-heap.
fn heap_dmabuf(len: u64) -> Result<OwnedFd, String> {
    #[repr(C)]
    struct Alloc {
        len: u64,
        fd: u32,
        fd_flags: u32,
        heap_flags: u64,
    }
    // DMA_HEAP_IOCTL_ALLOC: _IOWR('H', 0, struct dma_heap_allocation_data).
    const DMA_HEAP_IOCTL_ALLOC: u32 = (3 << 30) | (24 << 16) | ((b'H' as u32) << 8);
    let heap = ctx(
        std::fs::File::open("/dev/dma_heap/system"),
        "/dev/dma_heap/system",
    )?;
    let mut a = Alloc {
        len,
        fd: 0,
        fd_flags: (libc::O_RDWR | libc::O_CLOEXEC) as u32,
        heap_flags: 0,
    };
    // SAFETY: DMA_HEAP_IOCTL_ALLOC takes a struct dma_heap_allocation_data,
    // which `Alloc` mirrors; `a` lives across the call.
    let r = unsafe {
        libc::ioctl(
            heap.as_raw_fd(),
            DMA_HEAP_IOCTL_ALLOC as libc::Ioctl,
            &mut a as *mut Alloc,
        )
    };
    if r < 0 {
        return Err(format!(
            "DMA_HEAP_IOCTL_ALLOC: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the kernel just gave us this new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(a.fd as i32) })
}

fn register_dmabuf() -> TestResult {
    let dev = ctx(Device::open(), "Device::open")?;
    let dmabuf = heap_dmabuf(SIZE)?;
    let mut map = ctx(Mapping::new(dmabuf.as_fd(), SIZE), "mmap dma-buf")?;
    map.as_mut_slice()[..4096].fill(0xa5);
    let buf = ctx(
        dev.register(dmabuf.as_fd(), 0, SIZE, "crate-test", &frame_props()),
        "REGISTER dma-buf",
    )?;
    let info = ctx(buf.info(), "BUFFER_INFO")?;
    check!(info.kind == Kind::DmaBuf, "kind {:?}", info.kind);
    check!(info.size == SIZE);
    check!(ctx(buf.update(Update::rect(0, 0, 128, 128)), "UPDATE")? == 1);
    ctx(buf.unregister(), "UNREGISTER")
}

fn errors_carry_errno() -> TestResult {
    let dev = ctx(Device::open(), "Device::open")?;
    let info = ctx(dev.info(), "GET_INFO")?;
    let none = Properties::new();
    // Not sealed against shrinking.
    let unsealed = ctx(Memfd::create("crate-test", SIZE), "memfd")?;
    expect_errno(
        dev.register(unsealed.as_fd(), 0, SIZE, "crate-test", &none),
        libc::EPERM,
    )?;
    // Write-sealed.
    let wsealed = ctx(Memfd::create("crate-test", SIZE), "memfd")?;
    ctx(wsealed.add_seals(SIZE_SEALS | libc::F_SEAL_WRITE), "seal")?;
    expect_errno(
        dev.register(wsealed.as_fd(), 0, SIZE, "crate-test", &none),
        libc::EPERM,
    )?;
    let m = ctx(Memfd::create_sealed("crate-test", SIZE), "memfd")?;
    // Not page-aligned, empty, past the end.
    expect_errno(
        dev.register(m.as_fd(), 0, 100, "crate-test", &none),
        libc::EINVAL,
    )?;
    expect_errno(
        dev.register(m.as_fd(), 0, 0, "crate-test", &none),
        libc::EINVAL,
    )?;
    expect_errno(
        dev.register(m.as_fd(), 4096, SIZE, "crate-test", &none),
        libc::EINVAL,
    )?;
    // Properties larger than the device takes.
    let big = ctx(
        Properties::new().with("big", "x".repeat(info.max_props_size as usize)),
        "props",
    )?;
    expect_errno(
        dev.register(m.as_fd(), 0, SIZE, "crate-test", &big),
        libc::E2BIG,
    )?;
    // Not a memfd nor a dma-buf.
    expect_errno(
        dev.register(dev.as_fd(), 0, 4096, "crate-test", &none),
        libc::EINVAL,
    )?;
    // Refused by the crate before the kernel, as the kernel would.
    let r = dev.register(m.as_fd(), 0, SIZE, "bad name", &none);
    check!(matches!(r, Err(Error::InvalidApplication(_))), "{r:?}");
    expect_errno(r, libc::EINVAL)?;
    // Unknown ids.
    expect_errno(dev.buffer_info(u64::MAX), libc::ENOENT)?;
    expect_errno(dev.unregister(u64::MAX), libc::ENOENT)?;
    // The error converts to an io::Error with the same errno.
    let e: std::io::Error = dev.buffer_info(u64::MAX).unwrap_err().into();
    check!(e.raw_os_error() == Some(libc::ENOENT));
    Ok(())
}

/// Whether the device has events (`VIRTIO_BUFSHARE_F_EVENTS`, bit 2).
fn has_events(dev: &Device) -> Result<bool, String> {
    Ok(ctx(dev.info(), "GET_INFO")?.features & (1 << 2) != 0)
}

/// Reads events, without blocking for more than `ms` in all, until `want`
/// says one is the one; returns it.
fn wait_event(dev: &Device, ms: u64, want: impl Fn(&Event) -> bool) -> Result<Event, String> {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    ctx(dev.set_nonblocking(true), "O_NONBLOCK")?;
    while std::time::Instant::now() < end {
        match dev.read_events(16) {
            Ok(events) => {
                if let Some(e) = events.into_iter().find(|e| want(e)) {
                    return Ok(e);
                }
            }
            Err(e) if e.errno() == libc::EAGAIN => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Err("no such event in time".into())
}

fn events_released_and_freed() -> TestResult {
    let dev = ctx(Device::open(), "open")?;
    if !has_events(&dev)? {
        expect_errno(dev.consumers("crate-test"), libc::EOPNOTSUPP)?;
        // Without events, the unregistration that waits is the plain one.
        let memfd = ctx(Memfd::create_sealed("crate-test", 4096), "memfd")?;
        let buf = ctx(
            dev.register(memfd.as_fd(), 0, 4096, "crate-test", &Properties::new()),
            "REGISTER",
        )?;
        return ctx(buf.unregister_wait(), "UNREGISTER_FLAGS");
    }
    expect_errno(dev.consumers("not a name"), libc::EINVAL)?;
    let memfd = ctx(Memfd::create_sealed("crate-test", 4096), "memfd")?;
    let buf = ctx(
        dev.register(memfd.as_fd(), 0, 4096, "crate-test", &Properties::new()),
        "REGISTER",
    )?;
    let id = buf.id();
    let seqno = ctx(buf.update(Update::whole()), "UPDATE")?;
    wait_event(&dev, 20_000, |e| *e == Event::Released { id, seqno })?;
    ctx(buf.unregister_wait(), "UNREGISTER_FLAGS")?;
    wait_event(&dev, 20_000, |e| *e == Event::Freed { id })?;
    Ok(())
}

/// The import calls reach the driver's ioctls (a wrong number would be
/// `ENOTTY`): on a device without `VIRTIO_BUFSHARE_F_IMPORT`, as in the
/// single-guest boots, each is `EOPNOTSUPP`; names the crate refuses never
/// reach the driver. The import itself is tested with two guests
/// (`bufshare_import_test`, and `make run-two`'s `bufshare-view`).
fn import_calls_without_the_feature() -> TestResult {
    const F_IMPORT: u64 = 1 << 3;
    let dev = ctx(Device::open(), "Device::open")?;
    match dev.attach("bad/name", "crate-test") {
        Err(Error::InvalidSource(_)) => {}
        other => return Err(format!("attach with a bad source name: {other:?}")),
    }
    match dev.attach("a", "") {
        Err(Error::InvalidApplication(_)) => {}
        other => return Err(format!("attach with an empty application: {other:?}")),
    }
    if ctx(dev.info(), "GET_INFO")?.features & F_IMPORT != 0 {
        return Ok(());
    }
    expect_errno(dev.attach("a", "crate-test"), libc::EOPNOTSUPP)?;
    expect_errno(dev.detach(1), libc::EOPNOTSUPP)?;
    expect_errno(dev.import(1), libc::EOPNOTSUPP)?;
    expect_errno(dev.import_info(1), libc::EOPNOTSUPP)?;
    expect_errno(dev.import_release(1, 1), libc::EOPNOTSUPP)?;
    expect_errno(dev.import_close(1), libc::EOPNOTSUPP)
}

fn main() -> ExitCode {
    let tests: &[Test] = &[
        ("open_and_info", open_and_info),
        ("memfd_create_and_seal", memfd_create_and_seal),
        ("register_memfd_and_info", register_memfd_and_info),
        ("update_seqnos", update_seqnos),
        (
            "set_properties_merge_and_replace",
            set_properties_merge_and_replace,
        ),
        ("unregister_then_enoent", unregister_then_enoent),
        ("drop_unregisters", drop_unregisters),
        (
            "close_unregisters_given_up_buffers",
            close_unregisters_given_up_buffers,
        ),
        ("register_dmabuf", register_dmabuf),
        ("errors_carry_errno", errors_carry_errno),
        ("events_released_and_freed", events_released_and_freed),
        (
            "import_calls_without_the_feature",
            import_calls_without_the_feature,
        ),
    ];
    println!("TAP version 13");
    println!("1..{}", tests.len());
    let mut failed = 0;
    for (i, (name, f)) in tests.iter().enumerate() {
        match std::panic::catch_unwind(f) {
            Ok(Ok(())) => println!("ok {} {name}", i + 1),
            Ok(Err(msg)) => {
                failed += 1;
                println!("# {name}: {msg}");
                println!("not ok {} {name}", i + 1);
            }
            Err(_) => {
                failed += 1;
                println!("not ok {} {name} (panicked)", i + 1);
            }
        }
    }
    println!("# {} passed, {failed} failed", tests.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
