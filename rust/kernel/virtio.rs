// SPDX-License-Identifier: GPL-2.0

//! Abstractions for virtio devices and drivers.
//!
//! A virtio driver implements [`Driver`] and is registered with [`module_virtio_driver!`]. It is
//! handed a [`Device`] in `probe`, sets up its virtqueues with [`Virtqueues::new`], and puts
//! requests on them with [`Virtqueue::add`]. A request's memory is owned by the virtqueue from
//! [`Virtqueue::add`] until it comes back from [`Virtqueue::get_buf`]; when the [`Virtqueues`] are
//! dropped the device is reset first, so every request still queued is taken back from the
//! device and dropped: a driver cannot free memory the device may still write to.
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h) and
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h)

use crate::{
    bindings,
    device,
    device_id::RawDeviceId,
    driver,
    error::{
        from_result,
        to_result, //
    },
    prelude::*,
    sync::aref::ARef,
    types::Opaque,
    ThisModule, //
};
use core::{
    marker::PhantomData,
    mem::offset_of,
    ptr::{
        addr_of_mut,
        NonNull, //
    },
};

mod virtqueue;

pub use self::virtqueue::{
    DmaTarget,
    Notify,
    Request,
    Virtqueue,
    VirtqueueHandler,
    Virtqueues,
    MAX_VQS, //
};

/// An adapter for the registration of virtio drivers.
pub struct Adapter<T: Driver>(T);

// SAFETY:
// - `bindings::virtio_driver` is a C type declared as `repr(C)`.
// - `T::Data` is the type of the driver's device private data.
// - `struct virtio_driver` embeds a `struct device_driver`.
// - `DEVICE_DRIVER_OFFSET` is the correct byte offset to the embedded `struct device_driver`.
unsafe impl<T: Driver + 'static> driver::DriverLayout for Adapter<T> {
    type DriverType = bindings::virtio_driver;
    type DriverData<'bound> = T::Data<'bound>;
    const DEVICE_DRIVER_OFFSET: usize = offset_of!(Self::DriverType, driver);
}

// SAFETY: A call to `unregister` for a given instance of `DriverType` is guaranteed to be valid if
// a preceding call to `register` has been successful.
unsafe impl<T: Driver + 'static> driver::RegistrationOps for Adapter<T> {
    unsafe fn register(
        vdrv: &Opaque<Self::DriverType>,
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> Result {
        // SAFETY: It's safe to set the fields of `struct virtio_driver` on initialization.
        unsafe {
            (*vdrv.get()).driver.name = name.as_char_ptr();
            (*vdrv.get()).id_table = T::ID_TABLE.as_ptr();
            (*vdrv.get()).feature_table = T::FEATURES.as_ptr();
            (*vdrv.get()).feature_table_size = T::FEATURES.len() as u32;
            if T::HAS_VALIDATE {
                (*vdrv.get()).validate = Some(Self::validate_callback);
            }
            (*vdrv.get()).probe = Some(Self::probe_callback);
            (*vdrv.get()).remove = Some(Self::remove_callback);
            if T::HAS_FREEZE {
                (*vdrv.get()).freeze = Some(Self::freeze_callback);
            }
            if T::HAS_RESTORE {
                (*vdrv.get()).restore = Some(Self::restore_callback);
            }
            if T::HAS_RESET_PREPARE {
                (*vdrv.get()).reset_prepare = Some(Self::reset_prepare_callback);
            }
            if T::HAS_RESET_DONE {
                (*vdrv.get()).reset_done = Some(Self::reset_done_callback);
            }
        }

        // SAFETY: `vdrv` is guaranteed to be a valid `DriverType`, `T::FEATURES` and
        // `T::ID_TABLE` are `'static`.
        to_result(unsafe { bindings::__register_virtio_driver(vdrv.get(), module.as_ptr()) })
    }

    unsafe fn unregister(vdrv: &Opaque<Self::DriverType>) {
        // SAFETY: `vdrv` is guaranteed to be a valid `DriverType`.
        unsafe { bindings::unregister_virtio_driver(vdrv.get()) }
    }
}

impl<T: Driver + 'static> Adapter<T> {
    extern "C" fn validate_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The virtio bus only ever calls the validate callback with a valid pointer to a
        // `struct virtio_device`, from its probe, before it calls `probe_callback`.
        //
        // INVARIANT: `vdev` is valid for the duration of `validate_callback()`.
        let vdev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        from_result(|| {
            T::validate(vdev)?;
            Ok(0)
        })
    }

    extern "C" fn probe_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The virtio bus only ever calls the probe callback with a valid pointer to a
        // `struct virtio_device`.
        //
        // INVARIANT: `vdev` is valid for the duration of `probe_callback()`.
        let vdev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        from_result(|| {
            let data = T::probe(vdev);

            vdev.as_ref().set_drvdata(data)?;
            Ok(0)
        })
    }

    extern "C" fn remove_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The virtio bus only ever calls the remove callback with a valid pointer to a
        // `struct virtio_device`.
        //
        // INVARIANT: `vdev` is valid for the duration of `remove_callback()`.
        let vdev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

        // SAFETY: `remove_callback` is only ever called after a successful call to
        // `probe_callback`, hence it's guaranteed that `Device::set_drvdata()` has been called
        // and stored a `Pin<KBox<T::Data<'_>>>`.
        let data = unsafe { vdev.as_ref().drvdata_borrow::<T::Data<'_>>() };

        T::unbind(vdev, data);

        // The virtio core wants the device reset when `remove` returns, and the driver's
        // virtqueues deleted before the device is handed to another driver. Dropping the driver's
        // data here drops its `Virtqueues`, which reset the device, take back every queued
        // request and delete the queues. The driver core's post-unbind callback then finds no
        // data left to drop.
        //
        // SAFETY: The data was stored by `probe_callback` as a `Pin<KBox<T::Data<'_>>>`.
        drop(unsafe { vdev.as_ref().drvdata_obtain::<T::Data<'_>>() });

        // A driver without virtqueues still leaves a reset device behind.
        if vdev.status() != 0 {
            vdev.reset();
        }
    }

    extern "C" fn freeze_callback(vdev: *mut bindings::virtio_device) -> c_int {
        Self::with_bound(vdev, T::freeze)
    }

    extern "C" fn restore_callback(vdev: *mut bindings::virtio_device) -> c_int {
        Self::with_bound(vdev, T::restore)
    }

    extern "C" fn reset_prepare_callback(vdev: *mut bindings::virtio_device) -> c_int {
        Self::with_bound(vdev, T::reset_prepare)
    }

    extern "C" fn reset_done_callback(vdev: *mut bindings::virtio_device) -> c_int {
        Self::with_bound(vdev, T::reset_done)
    }

    /// Runs the driver's power management or reset callback `f` for `vdev`, with the device
    /// locked, if this driver is still bound to it.
    ///
    /// The virtio core calls these from its transport's callbacks, which hold the transport
    /// device's lock (the PCI function's), not the virtio device's: an unbind of the virtio
    /// device can run meanwhile. With the virtio device locked, the driver is either still bound,
    /// and stays bound until `f` returns, or is gone, and there is nothing left to do.
    fn with_bound<F>(vdev: *mut bindings::virtio_device, f: F) -> c_int
    where
        F: for<'bound> FnOnce(&'bound Device<device::Core<'_>>, Pin<&T::Data<'bound>>) -> Result,
    {
        // SAFETY: The virtio core only calls these callbacks with a valid pointer to a
        // `struct virtio_device`, which stays valid for the duration of the callback.
        unsafe { bindings::virtio_device_lock(vdev) };

        // SAFETY: `vdev` is valid and locked: its driver does not change meanwhile. A driver's
        // `struct virtio_driver` embeds its `struct device_driver`; a bound driver is registered.
        let bound = unsafe {
            let drv = (*vdev).dev.driver;
            !drv.is_null() && {
                let vdrv = crate::container_of!(drv, bindings::virtio_driver, driver);
                // Every driver has an id table of its own (see `Driver::ID_TABLE`).
                (*vdrv).id_table == T::ID_TABLE.as_ptr()
            }
        };
        let ret = if bound {
            // SAFETY: `vdev` is valid, and locked for the duration of the callback.
            let dev = unsafe { &*vdev.cast::<Device<device::CoreInternal<'_>>>() };

            // SAFETY: The device is bound to this driver, so `probe_callback` succeeded and
            // stored a `Pin<KBox<T::Data<'_>>>`; the device lock keeps `remove_callback` from
            // taking it meanwhile.
            let data = unsafe { dev.as_ref().drvdata_borrow::<T::Data<'_>>() };
            from_result(|| f(dev, data).map(|()| 0))
        } else {
            0
        };

        // SAFETY: Locked above.
        unsafe { bindings::virtio_device_unlock(vdev) };
        ret
    }
}

/// Declares a kernel module that exposes a single virtio driver.
///
/// # Examples
///
/// ```ignore
/// kernel::module_virtio_driver! {
///     type: MyDriver,
///     name: "my_virtio_driver",
///     authors: ["Me"],
///     description: "My virtio driver",
///     license: "GPL v2",
/// }
/// ```
#[macro_export]
macro_rules! module_virtio_driver {
    ($($f:tt)*) => {
        $crate::module_driver!(<T>, $crate::virtio::Adapter<T>, { $($f)* });
    };
}

/// Abstraction for `struct virtio_device_id`.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct DeviceId(bindings::virtio_device_id);

impl DeviceId {
    /// Matches devices of type `device` from any vendor.
    pub const fn new(device: u32) -> Self {
        Self(bindings::virtio_device_id {
            device,
            vendor: bindings::VIRTIO_DEV_ANY_ID,
        })
    }
}

// SAFETY: `DeviceId` is a `#[repr(transparent)]` wrapper of `virtio_device_id` and does not add
// additional invariants, so it's safe to transmute to `RawType`.
unsafe impl RawDeviceId for DeviceId {
    type RawType = bindings::virtio_device_id;
}

/// The id table type of virtio drivers. `struct virtio_device_id` has no driver data, so a table
/// carries no per-id information.
pub type IdTable = &'static dyn kernel::device_id::IdTable<DeviceId, ()>;

/// Creates a virtio `IdTable` with its alias for modpost.
///
/// # Examples
///
/// ```ignore
/// kernel::virtio_device_table!(ID_TABLE, [virtio::DeviceId::new(42)]);
/// ```
#[macro_export]
macro_rules! virtio_device_table {
    ($table_name:ident, [$($id:expr),* $(,)?]) => {
        $crate::module_device_table!(
            "virtio", $crate::virtio::DeviceId, $table_name, @none, [$($id),*]
        );
    };
}

/// The virtio driver trait.
///
/// Drivers must implement this trait in order to get a virtio driver registered.
///
/// # Examples
///
/// ```
/// # use kernel::{device::Core, virtio};
/// struct MyDriver;
///
/// kernel::virtio_device_table!(
///     VIRTIO_TABLE,
///     // VIRTIO_ID_RNG.
///     [virtio::DeviceId::new(4)]
/// );
///
/// #[vtable]
/// impl virtio::Driver for MyDriver {
///     type Data<'bound> = Self;
///     const ID_TABLE: virtio::IdTable = &VIRTIO_TABLE;
///
///     fn probe<'bound>(
///         _vdev: &'bound virtio::Device<Core<'_>>,
///     ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
///         Err(ENODEV)
///     }
/// }
/// ```
#[vtable]
pub trait Driver {
    /// The type of the driver's bus device private data.
    type Data<'bound>: Send + 'bound;

    /// The table of device ids supported by the driver, of this driver only: the abstraction
    /// tells its driver by it.
    const ID_TABLE: IdTable;

    /// The feature bits the driver supports. The device's features are negotiated against these
    /// before `probe`; [`Device::has_feature`] tells the result.
    const FEATURES: &'static [u32] = &[];

    /// Virtio driver validation.
    ///
    /// Called when a virtio device matches the driver, after its features were negotiated
    /// against [`Driver::FEATURES`] and before they are final: the driver may turn off features
    /// it does not want for this device with [`Device::clear_feature`], or refuse the device with
    /// an error. Implementing this callback is optional.
    fn validate(dev: &Device<device::Core<'_>>) -> Result {
        let _ = dev;
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Virtio driver probe.
    ///
    /// Called when a virtio device matches the driver, after feature negotiation. The device is
    /// marked ready (`DRIVER_OK`) when `probe` returns successfully, unless the driver did so
    /// earlier with [`Device::ready`].
    fn probe<'bound>(
        dev: &'bound Device<device::Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound;

    /// Virtio driver unbind.
    ///
    /// Called when a [`Device`] is unbound from its driver, while the device still works. After
    /// it returns, the driver's data is dropped (with it, its [`Virtqueues`]) and the device is
    /// reset. Implementing this callback is optional.
    fn unbind<'bound>(dev: &'bound Device<device::Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        let _ = (dev, this);
    }

    /// Virtio driver freeze: the system suspends or hibernates, and the device will be reset.
    ///
    /// The driver stops using the device and drops its [`Virtqueues`], which resets it; the data
    /// stays. On failure the system does not suspend. A driver without this callback keeps its
    /// virtqueues, which do not survive the reset: implement it together with
    /// [`Driver::restore`].
    fn freeze<'bound>(
        dev: &'bound Device<device::Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        let _ = (dev, this);
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Virtio driver restore: the system resumed after [`Driver::freeze`].
    ///
    /// The device was reset and its features negotiated again; the driver sets up its
    /// [`Virtqueues`] again. The device is marked ready when it returns successfully, unless the
    /// driver did so earlier with [`Device::ready`]; on failure it is marked failed.
    fn restore<'bound>(
        dev: &'bound Device<device::Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        let _ = (dev, this);
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Virtio driver reset preparation: the transport is about to reset the device (a PCI
    /// function level reset), as for [`Driver::freeze`].
    ///
    /// The reset happens whatever this returns, and [`Driver::reset_done`] follows only if it
    /// succeeded: the driver must let go of the device here in any case. Without this callback
    /// the device is reset behind the driver.
    fn reset_prepare<'bound>(
        dev: &'bound Device<device::Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        let _ = (dev, this);
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Virtio driver reset completion: the transport reset the device after
    /// [`Driver::reset_prepare`], as for [`Driver::restore`].
    fn reset_done<'bound>(
        dev: &'bound Device<device::Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        let _ = (dev, this);
        build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }
}

/// The virtio device representation.
///
/// This structure represents the Rust abstraction for a C `struct virtio_device`. The
/// implementation abstracts the usage of an already existing C `struct virtio_device` within Rust
/// code that we get passed from the C side.
///
/// # Invariants
///
/// A [`Device`] instance represents a valid `struct virtio_device` created by the C portion of the
/// kernel.
#[repr(transparent)]
pub struct Device<Ctx: device::DeviceContext = device::Normal>(
    Opaque<bindings::virtio_device>,
    PhantomData<Ctx>,
);

impl<Ctx: device::DeviceContext> Device<Ctx> {
    fn as_raw(&self) -> *mut bindings::virtio_device {
        self.0.get()
    }

    /// Returns the virtio device type (the id the driver matched on).
    pub fn device_id(&self) -> u32 {
        // SAFETY: By the type invariant `self.as_raw()` is a valid pointer to a
        // `struct virtio_device`; `id` is set before the device is registered.
        unsafe { (*self.as_raw()).id.device }
    }

    /// Returns the index of the device on the virtio bus (`virtio<index>`).
    pub fn index(&self) -> u32 {
        // SAFETY: By the type invariant `self.as_raw()` is a valid pointer to a
        // `struct virtio_device`; `index` is set before the device is registered.
        let index = unsafe { (*self.as_raw()).index };
        index as u32
    }

    /// Returns true if the feature `bit` was negotiated with the device.
    pub fn has_feature(&self, bit: u32) -> bool {
        // SAFETY: By the type invariant `self.as_raw()` is a valid pointer to a
        // `struct virtio_device`. The helper answers false for bits out of range. Feature
        // negotiation only keeps bits the driver offered (and transport bits), so testing the
        // negotiated set is what `virtio_has_feature()` does, minus its BUG() on bits the driver
        // did not offer.
        unsafe { bindings::__virtio_test_bit(self.as_raw(), bit) }
    }

    /// Returns the lower 64 negotiated feature bits.
    pub fn features(&self) -> u64 {
        (0..64u32).fold(0, |acc, bit| {
            if self.has_feature(bit) {
                acc | (1u64 << bit)
            } else {
                acc
            }
        })
    }

    /// Returns true if the transport maps memory for the device itself (VDUSE), so that neither
    /// the DMA API nor physical addresses describe memory to the device.
    pub fn has_transport_mapping(&self) -> bool {
        // SAFETY: By the type invariant `self.as_raw()` is a valid pointer to a
        // `struct virtio_device`; `map` is set before the device is registered.
        !unsafe { (*self.as_raw()).map }.is_null()
    }

    /// Returns the device of the transport the virtio device sits on (the PCI function for
    /// virtio-pci), which does DMA on its behalf.
    pub fn transport_device(&self) -> Option<ARef<device::Device>> {
        let dev: &device::Device<Ctx> = self.as_ref();
        dev.parent().map(ARef::from)
    }

    /// Returns the device status byte.
    fn status(&self) -> u8 {
        // SAFETY: By the type invariant `self.as_raw()` is a valid pointer to a
        // `struct virtio_device`; every transport sets `config` and `get_status`.
        unsafe {
            let config = (*self.as_raw()).config;
            match (*config).get_status {
                Some(get_status) => get_status(self.as_raw()),
                None => 0,
            }
        }
    }

    /// Resets the device: it stops using every virtqueue and waits for running callbacks.
    fn reset(&self) {
        // SAFETY: By the type invariant `self.as_raw()` is a valid pointer to a
        // `struct virtio_device`.
        unsafe { bindings::virtio_reset_device(self.as_raw()) };
    }
}

impl Device<device::Bound> {
    /// Reads the field of type `V` at `offset` of the device-specific configuration space.
    ///
    /// The field is read with accesses of its own width, as the virtio specification requires
    /// (the PCI transport does not take narrower ones), and converted from the device's byte
    /// order. A 64-bit field is read until the device reports the same configuration generation
    /// before and after, so it is never torn. The value comes from the device: callers validate
    /// it.
    pub fn config_read<V: ConfigField>(&self, offset: u32) -> V {
        // SAFETY: By the type invariant `self.as_raw()` is a valid pointer to a
        // `struct virtio_device`, and the device is bound.
        unsafe { V::read(self.as_raw(), offset) }
    }

    /// Returns the shared memory region `id` of the device, if it has one.
    ///
    /// A shared memory region is memory of the device that the driver may map (for the PCI
    /// transport, a part of a BAR). The region's address and length come from the device:
    /// callers validate them (a driver that maps the region page by page checks that both are
    /// page-aligned).
    pub fn shm_region(&self, id: u8) -> Option<ShmRegion> {
        let mut region = bindings::virtio_shm_region { addr: 0, len: 0 };
        // SAFETY: By the type invariant `self.as_raw()` is a valid pointer to a
        // `struct virtio_device`, and the device is bound; `region` is a valid place for the
        // transport to write the region's description to.
        let found = unsafe { bindings::virtio_get_shm_region(self.as_raw(), &mut region, id) };
        found.then_some(ShmRegion {
            addr: region.addr,
            len: region.len,
        })
    }
}

/// A shared memory region of a virtio device, as its transport describes it
/// ([`Device::shm_region`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShmRegion {
    /// The physical address of the region's start, as the CPU sees it.
    pub addr: u64,
    /// The region's length in bytes.
    pub len: u64,
}

mod private {
    pub trait Sealed {}
}

/// A field of a virtio device's configuration space: an integer of 8, 16, 32 or 64 bits
/// ([`Device::config_read`]).
pub trait ConfigField: Sized + private::Sealed {
    /// Reads the field at `offset`.
    ///
    /// # Safety
    ///
    /// `vdev` is a valid pointer to a `struct virtio_device` bound to a driver.
    #[doc(hidden)]
    unsafe fn read(vdev: *mut bindings::virtio_device, offset: u32) -> Self;
}

macro_rules! config_field {
    ($($t:ty => $read:ident),* $(,)?) => {$(
        impl private::Sealed for $t {}

        impl ConfigField for $t {
            unsafe fn read(vdev: *mut bindings::virtio_device, offset: u32) -> Self {
                // SAFETY: By the safety requirements `vdev` is a valid, bound virtio device; the
                // transport checks `offset` against its configuration space.
                unsafe { bindings::$read(vdev, offset) }
            }
        }
    )*};
}

config_field!(
    u8 => virtio_cread8,
    u16 => virtio_cread16,
    u32 => virtio_cread32,
    u64 => virtio_cread64,
);

impl<'a> Device<device::Core<'a>> {
    /// Turns off the feature `bit`, before the features are final: from
    /// [`Driver::validate`]. Bits out of range are ignored.
    pub fn clear_feature(&self, bit: u32) {
        // SAFETY: By the type invariant `self.as_raw()` is a valid pointer to a
        // `struct virtio_device`; in the core context nothing else changes its features. The
        // helper ignores bits out of range.
        unsafe { bindings::__virtio_clear_bit(self.as_raw(), bit) }
    }

    /// Marks the device ready (`DRIVER_OK`), so that it starts processing virtqueues.
    ///
    /// The virtio core does this when `probe` returns; a driver that must use its virtqueues
    /// during `probe` calls it first.
    pub fn ready(&self) {
        // SAFETY: By the type invariant `self.as_raw()` is a valid pointer to a
        // `struct virtio_device`; in the core context the driver owns the device status.
        unsafe { bindings::virtio_device_ready(self.as_raw()) };
    }
}

// SAFETY: `virtio::Device` is a transparent wrapper of `struct virtio_device`.
// The offset is guaranteed to point to a valid device field inside `virtio::Device`.
unsafe impl<Ctx: device::DeviceContext> device::AsBusDevice<Ctx> for Device<Ctx> {
    const OFFSET: usize = offset_of!(bindings::virtio_device, dev);
}

// SAFETY: `Device` is a transparent wrapper of a type that doesn't depend on `Device`'s generic
// argument.
kernel::impl_device_context_deref!(unsafe { Device });
kernel::impl_device_context_into_aref!(Device);

// SAFETY: Instances of `Device` are always reference-counted.
unsafe impl crate::sync::aref::AlwaysRefCounted for Device {
    fn inc_ref(&self) {
        // SAFETY: The existence of a shared reference guarantees that the refcount is non-zero.
        unsafe { bindings::get_device(self.as_ref().as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // CAST: `Self` a transparent wrapper of `bindings::virtio_device`.
        let vdev: *mut bindings::virtio_device = obj.cast().as_ptr();

        // SAFETY: By the type invariant of `Self`, `vdev` is a pointer to a valid
        // `struct virtio_device`.
        let dev = unsafe { addr_of_mut!((*vdev).dev) };

        // SAFETY: The safety requirements guarantee that the refcount is non-zero.
        unsafe { bindings::put_device(dev) }
    }
}

impl<Ctx: device::DeviceContext> AsRef<device::Device<Ctx>> for Device<Ctx> {
    fn as_ref(&self) -> &device::Device<Ctx> {
        // SAFETY: By the type invariant of `Self`, `self.as_raw()` is a pointer to a valid
        // `struct virtio_device`.
        let dev = unsafe { addr_of_mut!((*self.as_raw()).dev) };

        // SAFETY: `dev` points to a valid `struct device`.
        unsafe { device::Device::from_raw(dev) }
    }
}

// SAFETY: A `Device` is always reference-counted and can be released from any thread.
unsafe impl Send for Device {}

// SAFETY: `Device` can be shared among threads because all methods of `Device`
// (i.e. `Device<Normal>) are thread safe.
unsafe impl Sync for Device {}

// SAFETY: Same as `Device<Normal>`: `Bound` is a zero-sized type-state marker that does not affect
// thread safety.
unsafe impl Sync for Device<device::Bound> {}
