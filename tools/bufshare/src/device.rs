// SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note OR BSD-3-Clause
//! `/dev/bufshare` and the buffers registered through it.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::props::{is_valid_name, Properties};
use crate::uapi;

/// Where the driver's misc device is.
pub const DEFAULT_PATH: &str = "/dev/bufshare";

/// Calls ioctl `req` on `fd` with `arg`.
pub(crate) fn ioctl<T>(fd: BorrowedFd<'_>, req: u32, op: &'static str, arg: &mut T) -> Result<()> {
    // SAFETY: `req` is one of the bufshare ioctls, whose argument is a `T`
    // (a bufshare-uapi struct, its layout checked against the C header);
    // `arg` is a valid, exclusive pointer to it for the duration of the
    // call, and `fd` is an open file.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            req as libc::Ioctl,
            arg as *mut T as *mut libc::c_void,
        )
    };
    if r < 0 {
        Err(Error::last_os(op))
    } else {
        Ok(())
    }
}

/// A NUL-terminated string out of a fixed-size C array.
pub(crate) fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// What `BUFSHARE_IOC_GET_INFO` says about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Protocol version of the device.
    pub version: u32,
    /// Most memory ranges in one buffer.
    pub max_ranges: u32,
    /// Largest properties blob the device takes.
    pub max_props_size: u32,
    /// Most buffers registered at once on the device.
    pub max_buffers: u32,
    /// Largest buffer.
    pub max_buffer_size: u64,
    /// Buffers registered on the device now (by everyone).
    pub num_buffers: u64,
    /// Commands the device completed since its last reset.
    pub num_commands: u64,
    /// Negotiated virtio feature bits.
    pub features: u64,
    /// Device implementation name.
    pub name: String,
}

/// What kind of file a buffer was registered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A memfd (shmem or hugetlbfs).
    Memfd,
    /// A dma-buf.
    DmaBuf,
    /// A kind this crate does not know.
    Other(u32),
}

impl From<u32> for Kind {
    fn from(k: u32) -> Self {
        match k {
            uapi::KIND_MEMFD => Kind::Memfd,
            uapi::KIND_DMABUF => Kind::DmaBuf,
            k => Kind::Other(k),
        }
    }
}

/// What `BUFSHARE_IOC_BUFFER_INFO` says about a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferInfo {
    /// The buffer's id.
    pub id: u64,
    /// Memfd or dma-buf.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Number of the last update (0 before the first).
    pub seqno: u64,
    /// Number of memory ranges the device got.
    pub nr_ranges: u32,
    /// Whose buffer it is.
    pub application: String,
    /// Its properties.
    pub properties: Properties,
}

/// What the host says about the buffers of an open file, read with
/// [`Device::read_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The host is done with every update of buffer `id` up to `seqno`.
    Released { id: u64, seqno: u64 },
    /// After unregistering: no host party holds buffer `id`'s memory any more.
    Freed { id: u64 },
    /// `consumers` host consumers are attached to `application` now.
    Consumers { application: String, consumers: u32 },
    /// The host lost its buffers; the driver gives them back. Updates in
    /// flight will not be released: count them as released.
    Lost,
    /// `dropped` events were dropped: the reader fell behind.
    Overflow { dropped: u64 },
    /// Buffer `buffer_id` of the source of `attachment` (another guest) is
    /// imported as `import_id`, `size` bytes, last updated by `seqno`; see
    /// [`Device::import`].
    ImportAdded {
        attachment: u32,
        import_id: u64,
        buffer_id: u64,
        size: u64,
        seqno: u64,
        read_only: bool,
    },
    /// The exporter updated import `import_id` (update `seqno`).
    ImportUpdated {
        attachment: u32,
        import_id: u64,
        seqno: u64,
    },
    /// The exporter's buffer is gone: drop the import's mappings and
    /// descriptor.
    ImportRemoved { attachment: u32, import_id: u64 },
    /// Buffer `buffer_id` (`size` bytes) was not imported: no room for it.
    ImportNoSpace {
        attachment: u32,
        buffer_id: u64,
        size: u64,
    },
    /// The attachment ended: the device was reset or lost its buffers.
    ImportDetached { attachment: u32 },
    /// A type this crate does not know.
    Other(u32),
}

impl From<&uapi::Event> for Event {
    fn from(e: &uapi::Event) -> Self {
        // SAFETY: Both are plain integer records of the same size (checked
        // below and against the C header), any bytes a valid value of
        // either: the import events are read in the place of the others.
        let i: uapi::ImportEvent =
            unsafe { std::mem::transmute::<uapi::Event, uapi::ImportEvent>(*e) };
        match e.type_ {
            uapi::EVENT_IMPORT_ADDED => Event::ImportAdded {
                attachment: i.attachment,
                import_id: i.import_id,
                buffer_id: i.buffer_id,
                size: i.size,
                seqno: i.seqno,
                read_only: i.flags & uapi::IMPORT_READ_ONLY != 0,
            },
            uapi::EVENT_IMPORT_UPDATED => Event::ImportUpdated {
                attachment: i.attachment,
                import_id: i.import_id,
                seqno: i.seqno,
            },
            uapi::EVENT_IMPORT_REMOVED => Event::ImportRemoved {
                attachment: i.attachment,
                import_id: i.import_id,
            },
            uapi::EVENT_IMPORT_NO_SPACE => Event::ImportNoSpace {
                attachment: i.attachment,
                buffer_id: i.buffer_id,
                size: i.size,
            },
            uapi::EVENT_IMPORT_DETACHED => Event::ImportDetached {
                attachment: i.attachment,
            },
            uapi::EVENT_RELEASED => Event::Released {
                id: e.id,
                seqno: e.seqno,
            },
            uapi::EVENT_FREED => Event::Freed { id: e.id },
            uapi::EVENT_CONSUMERS => Event::Consumers {
                application: c_str(&e.application),
                consumers: e.consumers,
            },
            uapi::EVENT_LOST => Event::Lost,
            uapi::EVENT_OVERFLOW => Event::Overflow { dropped: e.seqno },
            t => Event::Other(t),
        }
    }
}

/// A rectangle of pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// What changed in a buffer, for [`Buffer::update`]. Without a range nor
/// a rectangle the whole buffer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Update {
    /// 0: one more than the last update; otherwise larger than the last.
    pub seqno: u64,
    /// The bytes that changed: offset and length.
    pub range: Option<(u64, u64)>,
    /// The pixels that changed.
    pub rect: Option<Rect>,
    /// Return once the update is on its way, without waiting for the
    /// device's answer (`BUFSHARE_UPDATE_NOWAIT`): its RELEASED event says
    /// when the host is done with it; an update the device refuses is
    /// dropped.
    pub nowait: bool,
}

impl Update {
    /// The whole buffer changed.
    pub fn whole() -> Self {
        Self::default()
    }

    /// `length` bytes at `offset` changed.
    pub fn range(offset: u64, length: u64) -> Self {
        Self {
            range: Some((offset, length)),
            ..Self::default()
        }
    }

    /// The pixels of a rectangle changed.
    pub fn rect(x: u32, y: u32, width: u32, height: u32) -> Self {
        Self {
            rect: Some(Rect {
                x,
                y,
                width,
                height,
            }),
            ..Self::default()
        }
    }

    /// The same, numbered `seqno`.
    pub fn with_seqno(self, seqno: u64) -> Self {
        Self { seqno, ..self }
    }

    /// The same, without waiting for the device's answer.
    pub fn without_waiting(self) -> Self {
        Self {
            nowait: true,
            ..self
        }
    }
}

/// An open `/dev/bufshare`. Cheap to clone: clones share the open file,
/// which owns the buffers registered through it. Closing the file (when
/// the last clone and the last [`Buffer`] go) unregisters its buffers.
#[derive(Debug, Clone)]
pub struct Device {
    fd: Arc<OwnedFd>,
}

impl Device {
    /// Opens [`DEFAULT_PATH`].
    pub fn open() -> Result<Self> {
        Self::open_path(DEFAULT_PATH)
    }

    /// Opens the bufshare device at `path`.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Os { op: "open", source })?;
        Ok(Self {
            fd: Arc::new(file.into()),
        })
    }

    /// The device's version, limits and counters.
    pub fn info(&self) -> Result<DeviceInfo> {
        let mut i = uapi::Info::default();
        ioctl(self.as_fd(), uapi::IOC_GET_INFO, "GET_INFO", &mut i)?;
        Ok(DeviceInfo {
            version: i.version,
            max_ranges: i.max_ranges,
            max_props_size: i.max_props_size,
            max_buffers: i.max_buffers,
            max_buffer_size: i.max_buffer_size,
            num_buffers: i.num_buffers,
            num_commands: i.num_commands,
            features: i.features,
            name: c_str(&i.name),
        })
    }

    /// Shares `len` bytes at `offset` of `fd`, a memfd (sealed against
    /// shrinking, not against writing) or a dma-buf, as a buffer of
    /// `application` with `props`. Both `offset` and `len` are multiples
    /// of the page size. The buffer is unregistered when the returned
    /// [`Buffer`] is dropped.
    pub fn register(
        &self,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: u64,
        application: &str,
        props: &Properties,
    ) -> Result<Buffer> {
        if !is_valid_name(application) {
            return Err(Error::InvalidApplication(application.to_owned()));
        }
        let blob = props.to_bytes();
        let mut reg = uapi::Register {
            fd: fd.as_raw_fd(),
            offset,
            length: len,
            props: if blob.is_empty() {
                0
            } else {
                blob.as_ptr() as u64
            },
            props_size: u32::try_from(blob.len()).map_err(|_| Error::Os {
                op: "REGISTER",
                source: std::io::Error::from_raw_os_error(libc::E2BIG),
            })?,
            ..Default::default()
        };
        reg.application[..application.len()].copy_from_slice(application.as_bytes());
        ioctl(self.as_fd(), uapi::IOC_REGISTER, "REGISTER", &mut reg)?;
        Ok(Buffer {
            dev: self.clone(),
            id: reg.id,
            registered: true,
        })
    }

    /// The state of buffer `id` of this open file.
    pub fn buffer_info(&self, id: u64) -> Result<BufferInfo> {
        let mut props = vec![0u8; 256];
        loop {
            let mut bi = uapi::BufferInfo {
                id,
                props: props.as_mut_ptr() as u64,
                props_size: props.len() as u32,
                ..Default::default()
            };
            ioctl(self.as_fd(), uapi::IOC_BUFFER_INFO, "BUFFER_INFO", &mut bi)?;
            let size = bi.props_size as usize;
            if size > props.len() {
                // They did not fit: again, with room for them.
                props.resize(size, 0);
                continue;
            }
            return Ok(BufferInfo {
                id,
                kind: bi.kind.into(),
                size: bi.size,
                seqno: bi.seqno,
                nr_ranges: bi.nr_ranges,
                application: c_str(&bi.application),
                properties: Properties::parse(&props[..size])?,
            });
        }
    }

    /// Unregisters buffer `id` of this open file (one given up with
    /// [`Buffer::into_id`]).
    pub fn unregister(&self, id: u64) -> Result<()> {
        let mut id = id;
        ioctl(self.as_fd(), uapi::IOC_UNREGISTER, "UNREGISTER", &mut id)
    }

    /// Unregisters buffer `id` and waits (at most 10 seconds, `ETIMEDOUT`
    /// otherwise) until no host party holds its memory any more.
    pub fn unregister_wait(&self, id: u64) -> Result<()> {
        let mut arg = uapi::Unregister {
            id,
            flags: uapi::UNREGISTER_WAIT,
            ..Default::default()
        };
        ioctl(
            self.as_fd(),
            uapi::IOC_UNREGISTER_FLAGS,
            "UNREGISTER_FLAGS",
            &mut arg,
        )
    }

    /// How many host consumers `application` has now; this open file gets
    /// its [`Event::Consumers`] events from now on. Fails with
    /// `EOPNOTSUPP` on a device without events.
    pub fn consumers(&self, application: &str) -> Result<u32> {
        if !is_valid_name(application) {
            return Err(Error::InvalidName(application.to_owned()));
        }
        let mut arg = uapi::Consumers::default();
        arg.application[..application.len()].copy_from_slice(application.as_bytes());
        ioctl(
            self.as_fd(),
            uapi::IOC_GET_CONSUMERS,
            "GET_CONSUMERS",
            &mut arg,
        )?;
        Ok(arg.consumers)
    }

    /// Reads the events waiting, at most `max` (at least one): blocks until
    /// there is one, unless the file is non-blocking (`EAGAIN`). Poll the
    /// device (it is an [`AsFd`]) for `POLLIN` to wait for them in an event
    /// loop.
    pub fn read_events(&self, max: usize) -> Result<Vec<Event>> {
        let mut raw = vec![uapi::Event::default(); max.max(1)];
        let len = std::mem::size_of_val(raw.as_slice());
        // SAFETY: `raw` is `len` bytes of plain-old-data records that any
        // bytes make valid, owned here for the duration of the call.
        let n = unsafe { libc::read(self.as_raw_fd(), raw.as_mut_ptr().cast(), len) };
        if n < 0 {
            return Err(Error::last_os("read"));
        }
        let n = n as usize / std::mem::size_of::<uapi::Event>();
        Ok(raw[..n].iter().map(Event::from).collect())
    }

    /// Makes reads of events non-blocking (or blocking again).
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        let fd = self.as_raw_fd();
        // SAFETY: F_GETFL and F_SETFL on an open file take and return flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(Error::last_os("fcntl"));
        }
        let flags = if nonblocking {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        // SAFETY: As above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            return Err(Error::last_os("fcntl"));
        }
        Ok(())
    }

    fn update(&self, id: u64, u: &Update) -> Result<u64> {
        let mut arg = uapi::Update {
            id,
            seqno: u.seqno,
            ..Default::default()
        };
        if let Some((offset, length)) = u.range {
            arg.flags |= uapi::UPDATE_RANGE;
            arg.offset = offset;
            arg.length = length;
        }
        if let Some(r) = u.rect {
            arg.flags |= uapi::UPDATE_RECT;
            arg.x = r.x;
            arg.y = r.y;
            arg.width = r.width;
            arg.height = r.height;
        }
        if u.nowait {
            arg.flags |= uapi::UPDATE_NOWAIT;
        }
        ioctl(self.as_fd(), uapi::IOC_UPDATE, "UPDATE", &mut arg)?;
        Ok(arg.seqno)
    }

    fn set_properties(&self, id: u64, props: &Properties, merge: bool) -> Result<()> {
        let blob = props.to_bytes();
        let mut arg = uapi::SetProperties {
            id,
            props: if blob.is_empty() {
                0
            } else {
                blob.as_ptr() as u64
            },
            props_size: blob.len() as u32,
            flags: if merge { uapi::PROPS_MERGE } else { 0 },
        };
        ioctl(
            self.as_fd(),
            uapi::IOC_SET_PROPERTIES,
            "SET_PROPERTIES",
            &mut arg,
        )
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A registered buffer. Dropping it unregisters it (errors ignored); use
/// [`Buffer::unregister`] to see them.
#[derive(Debug)]
pub struct Buffer {
    dev: Device,
    id: u64,
    registered: bool,
}

impl Buffer {
    /// The buffer's id: never reused while the device stays bound.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The device (open file) it was registered through.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Tells the host the content changed. Returns the update's number.
    pub fn update(&self, u: Update) -> Result<u64> {
        self.dev.update(self.id, &u)
    }

    /// Replaces the buffer's properties with `props` or, with `merge`,
    /// sets those of `props` and keeps the others.
    pub fn set_properties(&self, props: &Properties, merge: bool) -> Result<()> {
        self.dev.set_properties(self.id, props, merge)
    }

    /// The buffer's state.
    pub fn info(&self) -> Result<BufferInfo> {
        self.dev.buffer_info(self.id)
    }

    /// Unregisters the buffer.
    pub fn unregister(mut self) -> Result<()> {
        self.registered = false;
        self.dev.unregister(self.id)
    }

    /// Unregisters the buffer and waits until no host party holds its
    /// memory any more ([`Device::unregister_wait`]).
    pub fn unregister_wait(mut self) -> Result<()> {
        self.registered = false;
        self.dev.unregister_wait(self.id)
    }

    /// Gives up the handle, leaving the buffer registered until the open
    /// file closes (or [`Device::unregister`]). Returns its id.
    pub fn into_id(mut self) -> u64 {
        self.registered = false;
        self.id
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.registered {
            let _ = self.dev.unregister(self.id);
        }
    }
}
