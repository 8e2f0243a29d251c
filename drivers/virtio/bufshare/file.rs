// SPDX-License-Identifier: GPL-2.0

//! `/dev/bufshare`: an open file owns the buffers it registered. One function per ioctl.

use core::mem::size_of;
use kernel::{
    fs::File,
    ioctl::{
        _IOR,
        _IOW,
        _IOWR, //
    },
    miscdevice::{
        MiscDevice,
        MiscDeviceRegistration, //
    },
    prelude::*,
    seq_file::SeqFile,
    sync::Arc,
    transmute::{
        AsBytes,
        FromBytes, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
    uapi,
    uidgid, //
};

use crate::{
    device::{
        BufshareDevice,
        Owner, //
    },
    driver::BufshareDriver,
};

const BUFSHARE_IOC_GET_INFO: u32 = _IOR::<uapi::bufshare_info>(uapi::BUFSHARE_IOCTL_BASE, 0x00);
const BUFSHARE_IOC_REGISTER: u32 =
    _IOWR::<uapi::bufshare_register>(uapi::BUFSHARE_IOCTL_BASE, 0x01);
const BUFSHARE_IOC_UPDATE: u32 = _IOWR::<uapi::bufshare_update>(uapi::BUFSHARE_IOCTL_BASE, 0x02);
const BUFSHARE_IOC_SET_PROPERTIES: u32 =
    _IOW::<uapi::bufshare_set_properties>(uapi::BUFSHARE_IOCTL_BASE, 0x03);
const BUFSHARE_IOC_UNREGISTER: u32 = _IOW::<u64>(uapi::BUFSHARE_IOCTL_BASE, 0x04);
const BUFSHARE_IOC_BUFFER_INFO: u32 =
    _IOWR::<uapi::bufshare_buffer_info>(uapi::BUFSHARE_IOCTL_BASE, 0x05);
const BUFSHARE_IOC_BIND_APPLICATION: u32 =
    _IOW::<uapi::bufshare_app_binding>(uapi::BUFSHARE_IOCTL_BASE, 0x06);
const BUFSHARE_IOC_GET_BINDING: u32 =
    _IOWR::<uapi::bufshare_app_binding>(uapi::BUFSHARE_IOCTL_BASE, 0x07);

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

user_struct!(InfoArg, uapi::bufshare_info);
user_struct!(RegisterArg, uapi::bufshare_register);
user_struct!(UpdateArg, uapi::bufshare_update);
user_struct!(SetPropertiesArg, uapi::bufshare_set_properties);
user_struct!(BufferInfoArg, uapi::bufshare_buffer_info);
user_struct!(BindingArg, uapi::bufshare_app_binding);

/// Reads an ioctl argument of type `T` at `arg`.
fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .reader()
        .read::<T>()
}

/// Writes an ioctl argument of type `T` back to `arg`.
fn write_arg<T: AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(arg), size_of::<T>())
        .writer()
        .write(value)
}

/// An open `/dev/bufshare`.
#[pin_data]
pub(crate) struct BufshareFile {
    device: Arc<BufshareDevice>,
    /// The file as the owner of its buffers.
    #[pin]
    owner: Owner,
}

impl BufshareFile {
    /// `BUFSHARE_IOC_GET_INFO`.
    fn get_info(&self, arg: usize) -> Result {
        let info = InfoArg(self.device.get_info()?);
        write_arg(arg, &info)
    }

    /// `BUFSHARE_IOC_REGISTER`.
    fn register(&self, arg: usize) -> Result {
        let mut req = read_arg::<RegisterArg>(arg)?;
        let id = self.device.register(&self.owner, &req.0)?;
        req.0.id = id;
        if let Err(e) = write_arg(arg, &req) {
            // The caller cannot learn the id: do not leave the buffer behind.
            let _ = self.device.unregister(&self.owner, id);
            return Err(e);
        }
        Ok(())
    }

    /// `BUFSHARE_IOC_UPDATE`.
    fn update(&self, arg: usize) -> Result {
        let mut req = read_arg::<UpdateArg>(arg)?;
        self.device.update(&self.owner, &mut req.0)?;
        write_arg(arg, &req)
    }

    /// `BUFSHARE_IOC_SET_PROPERTIES`.
    fn set_properties(&self, arg: usize) -> Result {
        let req = read_arg::<SetPropertiesArg>(arg)?;
        self.device.set_properties(&self.owner, &req.0)
    }

    /// `BUFSHARE_IOC_UNREGISTER`.
    fn unregister(&self, arg: usize) -> Result {
        let id = read_arg::<u64>(arg)?;
        self.device.unregister(&self.owner, id)
    }

    /// `BUFSHARE_IOC_BUFFER_INFO`.
    fn buffer_info(&self, arg: usize) -> Result {
        let mut info = read_arg::<BufferInfoArg>(arg)?;
        self.device.buffer_info(&self.owner, &mut info.0)?;
        write_arg(arg, &info)
    }

    /// `BUFSHARE_IOC_BIND_APPLICATION`: for the administrator only.
    fn bind_application(&self, arg: usize) -> Result {
        if !uidgid::capable(uidgid::CAP_SYS_ADMIN) {
            return Err(EPERM);
        }
        let req = read_arg::<BindingArg>(arg)?;
        self.device.bind_application(&req.0)
    }

    /// `BUFSHARE_IOC_GET_BINDING`.
    fn get_binding(&self, arg: usize) -> Result {
        let mut req = read_arg::<BindingArg>(arg)?;
        self.device.get_binding(&mut req.0)?;
        write_arg(arg, &req)
    }
}

#[vtable]
impl MiscDevice for BufshareFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        let misc: *const MiscDeviceRegistration<Self> = misc;
        // SAFETY: Every `MiscDeviceRegistration<BufshareFile>` is the `misc` field of a
        // `BufshareDriver` (it is registered nowhere else). `misc_open()` calls us with
        // `misc_mtx` held, which `misc_deregister()` takes, so the registration is not dropped
        // during `open`; the fields declared after it in `BufshareDriver`, `device` among them,
        // are dropped after it, so they are alive too.
        let driver = unsafe { &*kernel::container_of!(misc, BufshareDriver, misc) };
        let device = driver.device.device().clone();
        let owner = device.new_owner();
        KBox::try_pin_init(
            try_pin_init!(BufshareFile {
                device,
                owner <- owner,
            }),
            GFP_KERNEL,
        )
    }

    fn release(me: Pin<KBox<Self>>, _file: &File) {
        me.device.release(&me.owner);
    }

    fn ioctl(me: Pin<&BufshareFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let me = me.get_ref();
        match cmd {
            BUFSHARE_IOC_GET_INFO => me.get_info(arg),
            BUFSHARE_IOC_REGISTER => me.register(arg),
            BUFSHARE_IOC_UPDATE => me.update(arg),
            BUFSHARE_IOC_SET_PROPERTIES => me.set_properties(arg),
            BUFSHARE_IOC_UNREGISTER => me.unregister(arg),
            BUFSHARE_IOC_BUFFER_INFO => me.buffer_info(arg),
            BUFSHARE_IOC_BIND_APPLICATION => me.bind_application(arg),
            BUFSHARE_IOC_GET_BINDING => me.get_binding(arg),
            _ => Err(ENOTTY),
        }
        .map(|()| 0)
    }

    fn show_fdinfo(me: Pin<&BufshareFile>, m: &SeqFile, _file: &File) {
        me.device.show_fdinfo(&me.owner, m);
    }
}
