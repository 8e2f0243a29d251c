// SPDX-License-Identifier: GPL-2.0

//! `/dev/bufshare`: an open file owns the buffers it registered. One function per ioctl.

use core::mem::size_of;
use kernel::{
    bindings,
    fs::{
        file::FileDescriptorReservation,
        File,
        Kiocb, //
    },
    ioctl::{
        _IOR,
        _IOW,
        _IOWR, //
    },
    iov::IovIterDest,
    miscdevice::{
        MiscDevice,
        MiscDeviceRegistration, //
    },
    prelude::*,
    seq_file::SeqFile,
    sync::{
        poll::PollTable,
        Arc, //
    },
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
        Owner,
        Record,
        EVENTS_PER_FILE, //
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
const BUFSHARE_IOC_UNREGISTER_FLAGS: u32 =
    _IOW::<uapi::bufshare_unregister>(uapi::BUFSHARE_IOCTL_BASE, 0x08);
const BUFSHARE_IOC_GET_CONSUMERS: u32 =
    _IOWR::<uapi::bufshare_consumers>(uapi::BUFSHARE_IOCTL_BASE, 0x09);
const BUFSHARE_IOC_ATTACH: u32 = _IOWR::<uapi::bufshare_attach>(uapi::BUFSHARE_IOCTL_BASE, 0x0a);
const BUFSHARE_IOC_DETACH: u32 = _IOW::<u32>(uapi::BUFSHARE_IOCTL_BASE, 0x0b);
const BUFSHARE_IOC_IMPORT: u32 = _IOWR::<uapi::bufshare_import>(uapi::BUFSHARE_IOCTL_BASE, 0x0c);
const BUFSHARE_IOC_IMPORT_RELEASE: u32 =
    _IOW::<uapi::bufshare_import_release>(uapi::BUFSHARE_IOCTL_BASE, 0x0d);
const BUFSHARE_IOC_IMPORT_CLOSE: u32 = _IOW::<u64>(uapi::BUFSHARE_IOCTL_BASE, 0x0e);
const BUFSHARE_IOC_IMPORT_INFO: u32 =
    _IOWR::<uapi::bufshare_import_info>(uapi::BUFSHARE_IOCTL_BASE, 0x0f);

/// The size of an event record as read() returns it.
const RECORD_LEN: usize = size_of::<Record>();

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
user_struct!(UnregisterArg, uapi::bufshare_unregister);
user_struct!(ConsumersArg, uapi::bufshare_consumers);
user_struct!(AttachArg, uapi::bufshare_attach);
user_struct!(ImportArg, uapi::bufshare_import);
user_struct!(ImportReleaseArg, uapi::bufshare_import_release);
user_struct!(ImportInfoArg, uapi::bufshare_import_info);
user_struct!(RecordOut, Record);

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
pub(crate) struct BufshareFile {
    device: Arc<BufshareDevice>,
    /// The file as the owner of its buffers, and the receiver of their events.
    owner: Arc<Owner>,
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
            let _ = self.device.unregister(&self.owner, id, false);
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
        self.device.unregister(&self.owner, id, false)
    }

    /// `BUFSHARE_IOC_UNREGISTER_FLAGS`.
    fn unregister_flags(&self, arg: usize) -> Result {
        let req = read_arg::<UnregisterArg>(arg)?.0;
        if req.flags & !uapi::BUFSHARE_UNREGISTER_WAIT != 0 || req.reserved != 0 {
            return Err(EINVAL);
        }
        let wait = req.flags & uapi::BUFSHARE_UNREGISTER_WAIT != 0;
        self.device.unregister(&self.owner, req.id, wait)
    }

    /// `BUFSHARE_IOC_GET_CONSUMERS`.
    fn get_consumers(&self, arg: usize) -> Result {
        let mut req = read_arg::<ConsumersArg>(arg)?;
        self.device.get_consumers(&self.owner, &mut req.0)?;
        write_arg(arg, &req)
    }

    /// `BUFSHARE_IOC_ATTACH`.
    fn attach(&self, arg: usize) -> Result {
        let mut req = read_arg::<AttachArg>(arg)?;
        self.device.attach(&self.owner, &mut req.0)?;
        let number = req.0.attachment;
        if let Err(e) = write_arg(arg, &req) {
            // The caller cannot learn the number: do not leave the attachment behind.
            let _ = self.device.detach(&self.owner, number);
            return Err(e);
        }
        Ok(())
    }

    /// `BUFSHARE_IOC_DETACH`.
    fn detach(&self, arg: usize) -> Result {
        let number = read_arg::<u32>(arg)?;
        self.device.detach(&self.owner, number)
    }

    /// `BUFSHARE_IOC_IMPORT`: the descriptor is reserved first and installed last, once the
    /// answer reached the caller; until then, nobody else can reach the dma-buf, and dropping
    /// it gives the import back to the file.
    fn import(&self, arg: usize) -> Result {
        let mut req = read_arg::<ImportArg>(arg)?;
        let fd = FileDescriptorReservation::get_unused_fd_flags(bindings::O_CLOEXEC)?;
        let file = self.device.import(&self.owner, &mut req.0)?;
        req.0.fd = fd.reserved_fd() as i32;
        write_arg(arg, &req)?;
        fd.fd_install(file);
        Ok(())
    }

    /// `BUFSHARE_IOC_IMPORT_RELEASE`.
    fn import_release(&self, arg: usize) -> Result {
        let req = read_arg::<ImportReleaseArg>(arg)?.0;
        self.device
            .import_release(&self.owner, req.import_id, req.seqno)
    }

    /// `BUFSHARE_IOC_IMPORT_INFO`: the properties are copied out with no lock held.
    fn import_info(&self, arg: usize) -> Result {
        let mut req = read_arg::<ImportInfoArg>(arg)?;
        let props = self.device.import_info(&self.owner, &mut req.0)?;
        if req.0.props != 0 && req.0.props_size as usize >= props.len() {
            let ptr = usize::try_from(req.0.props).map_err(|_| EFAULT)?;
            UserSlice::new(UserPtr::from_addr(ptr), props.len())
                .writer()
                .write_slice(&props)?;
        }
        // At most `IMPORT_PROPS_MAX` bytes.
        req.0.props_size = props.len() as u32;
        write_arg(arg, &req)
    }

    /// `BUFSHARE_IOC_IMPORT_CLOSE`.
    fn import_close(&self, arg: usize) -> Result {
        let id = read_arg::<u64>(arg)?;
        self.device.import_close(&self.owner, id)
    }

    /// read(): whole event records, as many as fit; waits for one unless the file is
    /// non-blocking. The records are taken with the queue locked, and copied to user space once
    /// it is let go.
    fn read_events(&self, nonblocking: bool, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let max = (iov.len() / RECORD_LEN).min(EVENTS_PER_FILE);
        if max == 0 {
            return Err(EINVAL);
        }
        let mut records = KVec::with_capacity(max, GFP_KERNEL)?;
        {
            let events = &self.owner.events;
            let mut queue = events.queue.lock();
            while !queue.readable() {
                if queue.gone() {
                    return Err(ENODEV);
                }
                if nonblocking {
                    return Err(EAGAIN);
                }
                if events.readable.wait_interruptible(&mut queue) {
                    return Err(ERESTARTSYS);
                }
            }
            queue.take(&mut records, max)?;
        }
        let mut copied = 0;
        for rec in records.into_iter() {
            let rec = RecordOut(rec);
            if iov.copy_to_iter(rec.as_bytes()) != RECORD_LEN {
                // The records not copied are lost, as a reader that faults loses them.
                return if copied == 0 { Err(EFAULT) } else { Ok(copied) };
            }
            copied += RECORD_LEN;
        }
        Ok(copied)
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
        let owner = device.new_owner()?;
        let me = BufshareFile {
            device: device.clone(),
            owner: owner.clone(),
        };
        KBox::pin(me, GFP_KERNEL).map_err(|e| {
            // Never opened: it gets no events.
            device.release(&owner);
            e.into()
        })
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
            BUFSHARE_IOC_UNREGISTER_FLAGS => me.unregister_flags(arg),
            BUFSHARE_IOC_GET_CONSUMERS => me.get_consumers(arg),
            BUFSHARE_IOC_ATTACH => me.attach(arg),
            BUFSHARE_IOC_DETACH => me.detach(arg),
            BUFSHARE_IOC_IMPORT => me.import(arg),
            BUFSHARE_IOC_IMPORT_RELEASE => me.import_release(arg),
            BUFSHARE_IOC_IMPORT_CLOSE => me.import_close(arg),
            BUFSHARE_IOC_IMPORT_INFO => me.import_info(arg),
            _ => Err(ENOTTY),
        }
        .map(|()| 0)
    }

    fn read_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        kiocb.file().read_events(kiocb.is_nonblocking(), iov)
    }

    fn poll(me: Pin<&BufshareFile>, file: &File, table: PollTable<'_>) -> u32 {
        let events = &me.owner.events;
        table.register_wait(file, &events.readable);
        let queue = events.queue.lock();
        let mut mask = 0;
        if queue.readable() {
            mask |= bindings::POLLIN | bindings::POLLRDNORM;
        }
        if queue.gone() {
            mask |= bindings::POLLHUP;
        }
        mask
    }

    fn show_fdinfo(me: Pin<&BufshareFile>, m: &SeqFile, _file: &File) {
        me.device.show_fdinfo(&me.owner, m);
    }
}
