// SPDX-License-Identifier: GPL-2.0

//! Virtio buffer sharing driver.
//!
//! Binds the virtio buffer sharing device (`VIRTIO_ID_DMABUF`), through which guest applications
//! share buffers in guest memory with programs on the host. Applications talk to the driver
//! through the misc device `/dev/bufshare`; the driver turns their ioctls into commands on the
//! device's one virtqueue and hands back the device's answers, after checking them.
//!
//! See `Documentation/virtio/virtio-bufshare.rst` for the device and
//! `Documentation/userspace-api/bufshare.rst` for the ioctls.

use core::{
    mem::{
        offset_of,
        size_of, //
    },
    ptr::NonNull,
};
use kernel::{
    c_str,
    device::Core,
    fs::File,
    ioctl::_IOR,
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    new_condvar,
    new_spinlock_irq,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Acquire,
            Atomic,
            Release, //
        },
        Arc,
        CondVar,
        CondVarTimeoutResult,
        SpinLockIrq, //
    },
    time::msecs_to_jiffies,
    transmute::AsBytes,
    types::Opaque,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
    uapi,
    virtio, //
};

/// How long a caller waits for the device to complete a command.
const COMMAND_TIMEOUT_MS: u32 = 10_000;

/// Room for the largest answer the driver expects.
const RESP_MAX: usize = 128;

const BUFSHARE_IOC_GET_INFO: u32 = _IOR::<uapi::bufshare_info>(uapi::BUFSHARE_IOCTL_BASE, 0x00);

kernel::virtio_device_table!(
    VIRTIO_BUFSHARE_IDS,
    [virtio::DeviceId::new(uapi::VIRTIO_BUFSHARE_DEVICE_ID)]
);

/// The device's limits, read from its configuration space at probe.
#[derive(Clone, Copy)]
struct Limits {
    max_ranges: u32,
    max_props_size: u32,
    max_buffers: u32,
    max_buffer_size: u64,
}

impl Limits {
    fn read(vdev: &virtio::Device<Core<'_>>) -> Result<Self> {
        let u32_at = |off: usize| u32::from_le(vdev.config_read::<u32>(off as u32));
        let limits = Limits {
            max_ranges: u32_at(offset_of!(uapi::virtio_bufshare_config, max_ranges)),
            max_props_size: u32_at(offset_of!(uapi::virtio_bufshare_config, max_props_size)),
            max_buffers: u32_at(offset_of!(uapi::virtio_bufshare_config, max_buffers)),
            max_buffer_size: u64::from_le(
                vdev.config_read::<u64>(
                    offset_of!(uapi::virtio_bufshare_config, max_buffer_size) as u32
                ),
            ),
        };
        if limits.max_ranges == 0 || limits.max_buffers == 0 || limits.max_buffer_size == 0 {
            dev_err!(
                vdev.as_ref(),
                "device advertises no room for buffers (ranges {}, buffers {}, size {})\n",
                limits.max_ranges,
                limits.max_buffers,
                limits.max_buffer_size
            );
            return Err(EINVAL);
        }
        Ok(limits)
    }
}

/// One command in flight: what the device reads, and room for its answer.
///
/// # Invariants
///
/// - `resp` is only read through its raw pointer, and only once `used` holds a length: the
///   device wrote it and gave the command back.
/// - `used` is -1 while the command is pending, else the length the device reported (checked
///   against `resp_len` when it is read).
struct Command {
    req: KVec<u8>,
    resp: KBox<Opaque<[u8; RESP_MAX]>>,
    resp_len: usize,
    used: Atomic<i64>,
}

impl Command {
    /// A command whose header is `cmd_type`, followed by `payload`, expecting an answer of at
    /// most `resp_len` bytes.
    fn new(cmd_type: u32, payload: &[u8], resp_len: usize) -> Result<Arc<Self>> {
        if resp_len > RESP_MAX || resp_len < size_of::<uapi::virtio_bufshare_resp_hdr>() {
            return Err(EINVAL);
        }
        let hdr_len = size_of::<uapi::virtio_bufshare_cmd_hdr>();
        let mut req = KVec::with_capacity(hdr_len + payload.len(), GFP_KERNEL)?;
        req.extend_from_slice(&cmd_type.to_le_bytes(), GFP_KERNEL)?;
        // flags: none are defined.
        req.extend_from_slice(&0u32.to_le_bytes(), GFP_KERNEL)?;
        req.extend_from_slice(payload, GFP_KERNEL)?;

        Ok(Arc::new(
            Command {
                req,
                resp: KBox::new(Opaque::zeroed(), GFP_KERNEL)?,
                resp_len,
                used: Atomic::new(-1),
            },
            GFP_KERNEL,
        )?)
    }

    /// Records that the device gave the command back, having written `len` bytes.
    fn complete(&self, len: u32) {
        self.used.store(i64::from(len), Release);
    }

    /// The device's answer once the command is complete; `EIO` if the device claims to have
    /// written more than there was room for.
    fn response(&self) -> Option<Result<&[u8]>> {
        let used = self.used.load(Acquire);
        let used = usize::try_from(used).ok()?;
        if used > self.resp_len {
            return Some(Err(EIO));
        }
        // SAFETY: `used` holds a length, so by the type invariants the device is done with
        // `resp` and nothing writes it any more; it was zero-initialised, so all of it is
        // initialised.
        let resp = unsafe { &*self.resp.get() };
        Some(Ok(&resp[..used]))
    }
}

// SAFETY: `req` is only read. `resp` is written by the device while the command is queued and only
// read, through a raw pointer, after the device gave the command back and `used` was published
// with release ordering (read with acquire ordering), so no two threads race on it.
unsafe impl Sync for Command {}

// SAFETY: A command owns its allocations; it can be dropped from any thread.
unsafe impl Send for Command {}

// SAFETY:
// - `req` and `resp` are separate `kmalloc` allocations (so in the linear mapping, and aligned
//   for DMA), owned by the command and never moved or resized while it lives.
// - By the type invariants `resp` is only accessed through raw pointers after the device gave the
//   command back.
unsafe impl virtio::Request for Command {
    fn device_readable(&self) -> &[u8] {
        &self.req
    }

    fn device_writable(&self) -> (NonNull<u8>, usize) {
        (NonNull::from(&*self.resp).cast(), self.resp_len)
    }
}

type Queues = virtio::Virtqueues<Shared, Arc<Command>>;

/// The state of one device that outlives its binding: open files keep it.
#[pin_data]
struct Shared {
    /// The virtqueues, `None` once the device is gone.
    #[pin]
    queues: SpinLockIrq<Option<Queues>>,
    /// Signalled when the device used a command, or went away.
    #[pin]
    used: CondVar,
    dev: ARef<virtio::Device>,
    limits: Limits,
    features: u64,
}

impl Shared {
    /// Takes back every command the device has used.
    fn reap(queues: &mut Queues) {
        let Some(vq) = queues.get_mut(uapi::VIRTIO_BUFSHARE_VQ_CMD as usize) else {
            return;
        };
        while let Some((cmd, len)) = vq.get_buf() {
            cmd.complete(len);
        }
    }

    /// Queues `cmd` and sleeps until the device answers; returns the answer.
    fn submit<'a>(&self, cmd: &'a Arc<Command>) -> Result<&'a [u8]> {
        let timeout = msecs_to_jiffies(COMMAND_TIMEOUT_MS);
        let mut guard = self.queues.lock();

        // Queue it, waiting for room if the ring is full.
        loop {
            let queues = Option::as_mut(&mut *guard).ok_or(ENODEV)?;
            Self::reap(queues);
            let vq = queues
                .get_mut(uapi::VIRTIO_BUFSHARE_VQ_CMD as usize)
                .ok_or(ENODEV)?;
            match vq.add(cmd.clone(), GFP_ATOMIC) {
                Ok(()) => {
                    if !vq.kick() {
                        dev_err!(self.dev.as_ref(), "device is broken\n");
                        return Err(EIO);
                    }
                    break;
                }
                Err((_, e)) if e == ENOSPC => {}
                Err((_, e)) => return Err(e),
            }
            match self.used.wait_interruptible_timeout(&mut guard, timeout) {
                CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
                CondVarTimeoutResult::Timeout => return Err(ETIMEDOUT),
                CondVarTimeoutResult::Woken { .. } => {}
            }
        }

        // Wait for the answer. The command stays owned by the virtqueue if we give up: the
        // device may still write its answer, and the memory stays valid for it.
        loop {
            if let Some(resp) = cmd.response() {
                return resp;
            }
            let queues = Option::as_mut(&mut *guard).ok_or(ENODEV)?;
            Self::reap(queues);
            if let Some(resp) = cmd.response() {
                return resp;
            }
            match self.used.wait_interruptible_timeout(&mut guard, timeout) {
                CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
                CondVarTimeoutResult::Timeout => {
                    dev_warn!(self.dev.as_ref(), "device did not answer in time\n");
                    return Err(ETIMEDOUT);
                }
                CondVarTimeoutResult::Woken { .. } => {}
            }
        }
    }

    /// Checks the status of an answer; returns the answer if it says OK.
    fn check_status<'a>(&self, resp: &'a [u8]) -> Result<&'a [u8]> {
        let status = match le32(resp, offset_of!(uapi::virtio_bufshare_resp_hdr, status)) {
            Some(status) if resp.len() >= size_of::<uapi::virtio_bufshare_resp_hdr>() => status,
            _ => {
                dev_err!(
                    self.dev.as_ref(),
                    "short answer from device ({} bytes)\n",
                    resp.len()
                );
                return Err(EIO);
            }
        };
        match status {
            uapi::VIRTIO_BUFSHARE_S_OK => Ok(resp),
            uapi::VIRTIO_BUFSHARE_S_UNSUPPORTED => Err(EOPNOTSUPP),
            uapi::VIRTIO_BUFSHARE_S_INVALID => Err(EINVAL),
            uapi::VIRTIO_BUFSHARE_S_DEVICE_ERROR => Err(EIO),
            _ => {
                dev_err!(
                    self.dev.as_ref(),
                    "unknown status {:#x} from device\n",
                    status
                );
                Err(EIO)
            }
        }
    }

    /// Asks the device for its version, limits and counters.
    fn get_info(&self) -> Result<Info> {
        let info_len = size_of::<uapi::virtio_bufshare_resp_info>();
        let cmd = Command::new(uapi::VIRTIO_BUFSHARE_CMD_GET_INFO, &[], info_len)?;
        let resp = self.check_status(self.submit(&cmd)?)?;
        if resp.len() != info_len {
            dev_err!(
                self.dev.as_ref(),
                "GET_INFO answer is {} bytes, expected {}\n",
                resp.len(),
                info_len
            );
            return Err(EIO);
        }

        type R = uapi::virtio_bufshare_resp_info;
        let field32 = |off| le32(resp, off).ok_or(EIO);
        let field64 = |off| le64(resp, off).ok_or(EIO);
        let mut info = Info(uapi::bufshare_info {
            version: field32(offset_of!(R, version))?,
            max_ranges: field32(offset_of!(R, max_ranges))?,
            max_props_size: field32(offset_of!(R, max_props_size))?,
            max_buffers: field32(offset_of!(R, max_buffers))?,
            max_buffer_size: field64(offset_of!(R, max_buffer_size))?,
            num_buffers: field64(offset_of!(R, num_buffers))?,
            num_commands: field64(offset_of!(R, num_commands))?,
            features: self.features,
            name: [0; uapi::BUFSHARE_NAME_LEN as usize],
        });
        if info.0.version != uapi::VIRTIO_BUFSHARE_VERSION {
            dev_err!(
                self.dev.as_ref(),
                "device speaks protocol version {}\n",
                info.0.version
            );
            return Err(EPROTO);
        }

        // The device's name is NUL-padded; keep printable ASCII up to the first NUL, and always
        // leave a terminating NUL.
        let name_off = offset_of!(R, name);
        let name = resp
            .get(name_off..name_off + uapi::VIRTIO_BUFSHARE_NAME_LEN as usize)
            .ok_or(EIO)?;
        for (dst, &src) in info
            .0
            .name
            .iter_mut()
            .zip(name.iter().take_while(|&&c| c != 0))
            .take(uapi::BUFSHARE_NAME_LEN as usize - 1)
        {
            *dst = if src.is_ascii_graphic() || src == b' ' {
                src
            } else {
                b'?'
            } as kernel::ffi::c_char;
        }
        Ok(info)
    }

    /// Drops the virtqueues: the device is reset, queued commands are taken back, and everybody
    /// waiting is woken to find the device gone.
    fn shut_down(&self) {
        let queues = self.queues.lock().take();
        // Dropped outside the lock: deleting the queues sleeps.
        drop(queues);
        self.used.notify_all();
    }
}

impl virtio::VirtqueueHandler for Shared {
    fn used(&self, _index: usize) {
        if let Some(queues) = Option::as_mut(&mut *self.queues.lock()) {
            Self::reap(queues);
        }
        self.used.notify_all();
    }
}

/// Reads the little-endian `u32` at `off` in `buf`.
fn le32(buf: &[u8], off: usize) -> Option<u32> {
    let bytes = buf.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Reads the little-endian `u64` at `off` in `buf`.
fn le64(buf: &[u8], off: usize) -> Option<u64> {
    let bytes = buf.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// `struct bufshare_info`, as handed to user space.
#[repr(transparent)]
struct Info(uapi::bufshare_info);

// SAFETY: `struct bufshare_info` is made of integers only, laid out without padding (four `__u32`,
// four `__u64`, then a `char` array whose length is a multiple of 8), so every byte of it is
// initialised.
unsafe impl AsBytes for Info {}

/// Owns the link between the driver and the shared state: dropping it shuts the device down,
/// which also breaks the reference the virtqueues hold on the shared state.
struct SharedOwner(Arc<Shared>);

impl SharedOwner {
    fn new(vdev: &virtio::Device<Core<'_>>) -> Result<Self> {
        let limits = Limits::read(vdev)?;
        let shared = Arc::pin_init(
            pin_init!(Shared {
                queues <- new_spinlock_irq!(None, "virtio_bufshare:queues"),
                used <- new_condvar!("virtio_bufshare:used"),
                dev: vdev.into(),
                limits,
                features: vdev.features(),
            }),
            GFP_KERNEL,
        )?;
        let owner = SharedOwner(shared);
        let queues = Queues::new(vdev, &[c_str!("cmd")], owner.0.clone())?;
        *owner.0.queues.lock() = Some(queues);
        Ok(owner)
    }
}

impl Drop for SharedOwner {
    fn drop(&mut self) {
        self.0.shut_down();
    }
}

/// The driver's data for a bound device.
#[pin_data]
struct BufshareDriver {
    shared: SharedOwner,
    #[pin]
    misc: MiscDeviceRegistration<BufshareFile>,
}

impl virtio::Driver for BufshareDriver {
    type Data<'bound> = Self;

    const ID_TABLE: virtio::IdTable = &VIRTIO_BUFSHARE_IDS;

    fn probe<'bound>(
        vdev: &'bound virtio::Device<Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        let shared = SharedOwner::new(vdev).inspect(|shared| {
            let l = &shared.0.limits;
            dev_info!(
                vdev.as_ref(),
                "bufshare device: {} ranges, {} property bytes, {} buffers, {} bytes per buffer\n",
                l.max_ranges,
                l.max_props_size,
                l.max_buffers,
                l.max_buffer_size
            );
            // The queue must work before applications can open the device.
            vdev.ready();
        });

        try_pin_init!(Self {
            shared: shared?,
            misc <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c_str!("bufshare"),
            }),
        })
    }
}

/// An open `/dev/bufshare`.
struct BufshareFile {
    shared: Arc<Shared>,
}

#[vtable]
impl MiscDevice for BufshareFile {
    type Ptr = KBox<Self>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        let misc: *const MiscDeviceRegistration<Self> = misc;
        // SAFETY: Every `MiscDeviceRegistration<BufshareFile>` is the `misc` field of a
        // `BufshareDriver` (it is registered nowhere else), and `misc_open()` keeps the
        // registration, so the driver data around it, alive for the duration of `open`.
        let driver = unsafe { &*kernel::container_of!(misc, BufshareDriver, misc) };
        Ok(KBox::new(
            BufshareFile {
                shared: driver.shared.0.clone(),
            },
            GFP_KERNEL,
        )?)
    }

    fn ioctl(me: &BufshareFile, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            BUFSHARE_IOC_GET_INFO => {
                let info = me.shared.get_info()?;
                let mut writer =
                    UserSlice::new(UserPtr::from_addr(arg), size_of::<Info>()).writer();
                writer.write(&info)?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }
}

kernel::module_virtio_driver! {
    type: BufshareDriver,
    name: "virtio_bufshare",
    authors: ["virtio-bufshare developers"],
    description: "Virtio buffer sharing driver",
    license: "GPL",
}
