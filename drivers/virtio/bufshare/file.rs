// SPDX-License-Identifier: GPL-2.0

//! `/dev/bufshare`: the misc device and its ioctls.

use super::*;

const BUFSHARE_IOC_GET_INFO: u32 = _IOR::<uapi::bufshare_info>(uapi::BUFSHARE_IOCTL_BASE, 0x00);
const BUFSHARE_IOC_REGISTER: u32 =
    _IOWR::<uapi::bufshare_register>(uapi::BUFSHARE_IOCTL_BASE, 0x01);
const BUFSHARE_IOC_UPDATE: u32 = _IOWR::<uapi::bufshare_update>(uapi::BUFSHARE_IOCTL_BASE, 0x02);
const BUFSHARE_IOC_SET_PROPERTIES: u32 =
    _IOW::<uapi::bufshare_set_properties>(uapi::BUFSHARE_IOCTL_BASE, 0x03);
const BUFSHARE_IOC_UNREGISTER: u32 = _IOW::<u64>(uapi::BUFSHARE_IOCTL_BASE, 0x04);
const BUFSHARE_IOC_BUFFER_INFO: u32 =
    _IOWR::<uapi::bufshare_buffer_info>(uapi::BUFSHARE_IOCTL_BASE, 0x05);

/// `struct bufshare_info`, as handed to user space.
#[repr(transparent)]
pub(crate) struct Info(pub(crate) uapi::bufshare_info);

// SAFETY: `struct bufshare_info` is made of integers only, laid out without padding (four `__u32`,
// four `__u64`, then a `char` array whose length is a multiple of 8), so every byte of it is
// initialised.
unsafe impl AsBytes for Info {}

/// Declares a transparent wrapper of an ioctl argument structure that user space reads and
/// writes whole.
macro_rules! user_struct {
    ($name:ident, $raw:ty) => {
        #[repr(transparent)]
        struct $name($raw);

        // SAFETY: The UAPI structure is made of integers (and arrays of them) only, laid out
        // without padding (the UAPI header keeps every field naturally aligned and the size a
        // multiple of 8; `tools/bufshare-uapi` checks the layout), so every byte is initialised
        // and every bit pattern is valid.
        unsafe impl AsBytes for $name {}

        // SAFETY: As above: any bytes make a valid value.
        unsafe impl FromBytes for $name {}
    };
}

user_struct!(RegisterArg, uapi::bufshare_register);
user_struct!(UpdateArg, uapi::bufshare_update);
user_struct!(SetPropertiesArg, uapi::bufshare_set_properties);
user_struct!(BufferInfoArg, uapi::bufshare_buffer_info);

/// Reads an ioctl argument of type `T` at `arg`.
pub(crate) fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .reader()
        .read::<T>()
}

/// Writes an ioctl argument of type `T` back to `arg`.
pub(crate) fn write_arg<T: AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .writer()
        .write(value)
}

/// What an open file has registered, against its limits.
pub(crate) struct Usage {
    pub(crate) buffers: u32,
    pub(crate) bytes: u64,
}

/// An open `/dev/bufshare`.
#[pin_data]
pub(crate) struct BufshareFile {
    pub(crate) shared: Arc<Shared>,
    /// Identifies the file as the owner of its buffers.
    pub(crate) id: u64,
    #[pin]
    pub(crate) usage: Mutex<Usage>,
}

impl BufshareFile {
    /// Carries out ioctl `cmd` with argument `arg`.
    pub(crate) fn ioctl_cmd(&self, cmd: u32, arg: usize) -> Result<isize> {
        let shared = &self.shared;
        match cmd {
            BUFSHARE_IOC_GET_INFO => {
                let info = shared.get_info()?;
                write_arg(arg, &info)?;
            }
            BUFSHARE_IOC_REGISTER => {
                let mut req = read_arg::<RegisterArg>(arg)?;
                let id = shared.retry_lost(|| shared.register(self, &req.0))?;
                req.0.id = id;
                if let Err(e) = write_arg(arg, &req) {
                    // The caller cannot learn the id: do not leave the buffer behind.
                    let _ = shared.unregister(self, id);
                    return Err(e);
                }
            }
            BUFSHARE_IOC_UPDATE => {
                let mut req = read_arg::<UpdateArg>(arg)?;
                shared.retry_lost(|| shared.update(self, &mut req.0))?;
                write_arg(arg, &req)?;
            }
            BUFSHARE_IOC_SET_PROPERTIES => {
                let req = read_arg::<SetPropertiesArg>(arg)?;
                shared.retry_lost(|| shared.set_properties(self, &req.0))?;
            }
            BUFSHARE_IOC_UNREGISTER => {
                let id = read_arg::<u64>(arg)?;
                shared.unregister(self, id)?;
            }
            BUFSHARE_IOC_BUFFER_INFO => {
                let mut info = read_arg::<BufferInfoArg>(arg)?;
                shared.buffer_info(self, &mut info.0)?;
                write_arg(arg, &info)?;
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }
}

#[vtable]
impl MiscDevice for BufshareFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        let misc: *const MiscDeviceRegistration<Self> = misc;
        // SAFETY: Every `MiscDeviceRegistration<BufshareFile>` is the `misc` field of a
        // `BufshareDriver` (it is registered nowhere else), and `misc_open()` keeps the
        // registration, so the driver data around it, alive for the duration of `open`.
        let driver = unsafe { &*kernel::container_of!(misc, BufshareDriver, misc) };
        let shared = driver.shared.0.clone();
        let id = shared.next_file.fetch_add(1, Relaxed);
        KBox::try_pin_init(
            try_pin_init!(BufshareFile {
                shared,
                id,
                usage <- new_mutex!(Usage { buffers: 0, bytes: 0 }, "virtio_bufshare:usage"),
            }),
            GFP_KERNEL,
        )
    }

    fn release(me: Pin<KBox<Self>>, _file: &File) {
        me.shared.release(me.id);
    }

    fn ioctl(me: Pin<&BufshareFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let me = me.get_ref();
        let result = me.ioctl_cmd(cmd, arg);
        // The device may have answered that it lost its buffers: bring them back now.
        me.shared.recover_if_lost();
        result
    }

    fn show_fdinfo(me: Pin<&BufshareFile>, m: &SeqFile, _file: &File) {
        let table = me.shared.table.lock();
        let mine = || table.buffers.values().filter(|b| b.owner == me.id);
        seq_print!(m, "buffers:\t{}\n", mine().count());
        for buf in mine() {
            let kind = if buf.kind == uapi::BUFSHARE_KIND_MEMFD {
                "memfd"
            } else {
                "dmabuf"
            };
            seq_print!(
                m,
                "buffer:\tid={} kind={} size={} ranges={} seqno={} application={}\n",
                buf.id,
                kind,
                buf.size,
                buf.nr_ranges(),
                buf.seqno.load(Relaxed),
                buf.app_str()
            );
        }
    }
}
