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
    sync::{
        aref::ARef,
        Arc, //
    },
    transmute::FromBytes,
    types::{
        ForeignOwnable,
        Opaque, //
    },
    ThisModule, //
};
use core::{
    marker::PhantomData,
    mem::{
        offset_of,
        MaybeUninit, //
    },
    ops::Deref,
    ptr::{
        addr_of_mut,
        NonNull, //
    },
};

/// Largest number of virtqueues a driver can set up with [`Virtqueues::new`].
pub const MAX_VQS: usize = 16;

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
            (*vdrv.get()).probe = Some(Self::probe_callback);
            (*vdrv.get()).remove = Some(Self::remove_callback);
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
pub trait Driver {
    /// The type of the driver's bus device private data.
    type Data<'bound>: Send + 'bound;

    /// The table of device ids supported by the driver.
    const ID_TABLE: IdTable;

    /// The feature bits the driver supports. The device's features are negotiated against these
    /// before `probe`; [`Device::has_feature`] tells the result.
    const FEATURES: &'static [u32] = &[];

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
    /// Reads a value of type `V` from the device-specific configuration space at `offset`.
    ///
    /// The read is retried until the device reports the same configuration generation before and
    /// after it, so a multi-byte value is never torn. The value comes from the device: callers
    /// validate it.
    pub fn config_read<V: FromBytes>(&self, offset: u32) -> V {
        let mut val = MaybeUninit::<V>::uninit();

        // SAFETY: By the type invariant `self.as_raw()` is a valid pointer to a
        // `struct virtio_device` and the device is bound; `val` is valid for writes of
        // `size_of::<V>()` bytes.
        unsafe {
            bindings::virtio_cread_bytes(
                self.as_raw(),
                offset,
                val.as_mut_ptr().cast(),
                core::mem::size_of::<V>(),
            )
        };

        // SAFETY: `virtio_cread_bytes` wrote all `size_of::<V>()` bytes, and any bit pattern is a
        // valid `V` since `V: FromBytes`.
        unsafe { val.assume_init() }
    }
}

impl<'a> Device<device::Core<'a>> {
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

/// Memory that a request hands to the device: one region the device reads, one it writes.
///
/// # Safety
///
/// Implementers guarantee that, for as long as the value lives:
/// - [`Self::device_readable`] and [`Self::device_writable`] always return the same regions,
///   which do not overlap, are at most `u32::MAX` bytes long, and lie in the kernel's linear
///   mapping (memory from `kmalloc`, such as a [`KBox`] or [`KVec`]; not `vmalloc` memory, not the
///   stack), so that they can be described by a scatterlist and mapped for DMA;
/// - the memory of both stays valid;
/// - the device-writable region is only accessed through raw pointers, and only while the value
///   is not queued on a virtqueue (before [`Virtqueue::add`] or after [`Virtqueue::get_buf`]),
///   since the device may write it at any time in between.
pub unsafe trait Request {
    /// The bytes the device reads.
    fn device_readable(&self) -> &[u8];

    /// The region the device writes: its start and length.
    fn device_writable(&self) -> (NonNull<u8>, usize);
}

/// Receives the used-buffer notifications of a set of [`Virtqueues`].
pub trait VirtqueueHandler: Send + Sync {
    /// The device has used buffers of the virtqueue at `index`.
    ///
    /// Called in interrupt context: it must not sleep. Typical handlers wake a waiter or queue
    /// work that calls [`Virtqueue::get_buf`]; they cannot reach the virtqueue themselves.
    fn used(&self, index: usize);
}

/// How a virtio device reaches memory that its driver describes to it by address.
#[derive(Clone)]
pub enum DmaTarget {
    /// Memory is mapped for this device with the DMA API, and the virtio device is given the DMA
    /// addresses (`VIRTIO_F_ACCESS_PLATFORM`, or a platform that forces the DMA API).
    Api(ARef<device::Device>),
    /// The virtio device is given guest physical addresses. This device, the transport's, has
    /// no IOMMU in front of it, so the DMA addresses of mappings made for it (as needed to import
    /// a dma-buf) are physical addresses too.
    Physical(ARef<device::Device>),
}

impl DmaTarget {
    /// Returns the device that memory is mapped for.
    pub fn device(&self) -> &ARef<device::Device> {
        match self {
            DmaTarget::Api(dev) | DmaTarget::Physical(dev) => dev,
        }
    }
}

/// One virtqueue of a [`Virtqueues`] set; `T` is the type of the requests it carries.
///
/// # Invariants
///
/// - `vq` points to a live virtqueue of the device, found by [`Virtqueues::new`] and deleted only
///   when the [`Virtqueues`] that owns this value is dropped.
/// - Every buffer queued on `vq` was added by [`Virtqueue::add`] with a data token that is the
///   result of `T::into_foreign`.
pub struct Virtqueue<T> {
    vq: NonNull<bindings::virtqueue>,
    _p: PhantomData<T>,
}

impl<T> Virtqueue<T>
where
    T: ForeignOwnable + Deref + Send,
    T::Target: Request,
{
    /// Queues `req` for the device: its device-readable region first, then its device-writable
    /// one. The virtqueue owns `req` until [`Virtqueue::get_buf`] returns it, or until the
    /// [`Virtqueues`] are dropped. On failure (`ENOSPC` when the ring is full) `req` is returned.
    pub fn add(&mut self, req: T, flags: kernel::alloc::Flags) -> Result<(), (T, Error)> {
        let readable = req.device_readable();
        let (writable, writable_len) = req.device_writable();

        let (Ok(readable_len), Ok(writable_len)) =
            (u32::try_from(readable.len()), u32::try_from(writable_len))
        else {
            return Err((req, EINVAL));
        };

        let mut out_sg = MaybeUninit::<bindings::scatterlist>::uninit();
        let mut in_sg = MaybeUninit::<bindings::scatterlist>::uninit();
        let mut sgs: [*mut bindings::scatterlist; 2] = [core::ptr::null_mut(); 2];
        let mut out_num = 0u32;
        let mut in_num = 0u32;

        if readable_len > 0 {
            // SAFETY: `out_sg` is valid for writes; by the safety requirements of `Request` the
            // readable region lies in the linear mapping and is `readable_len` bytes long.
            unsafe {
                bindings::sg_init_one(out_sg.as_mut_ptr(), readable.as_ptr().cast(), readable_len)
            };
            sgs[0] = out_sg.as_mut_ptr();
            out_num = 1;
        }
        if writable_len > 0 {
            // SAFETY: As above, for the writable region.
            unsafe {
                bindings::sg_init_one(in_sg.as_mut_ptr(), writable.as_ptr().cast(), writable_len)
            };
            sgs[out_num as usize] = in_sg.as_mut_ptr();
            in_num = 1;
        }
        if out_num + in_num == 0 {
            return Err((req, EINVAL));
        }

        let token = req.into_foreign();

        // SAFETY:
        // - By the type invariants `self.vq` is a live virtqueue; `&mut self` serialises all
        //   operations on it.
        // - `sgs` holds `out_num + in_num` initialised scatterlists, each a single entry, which
        //   `virtqueue_add_sgs` only reads during the call.
        // - `token` is non-null (it comes from `into_foreign`).
        // - The regions stay valid until the token is returned: `T` is only re-created from
        //   `token` by `get_buf` (after the device used the buffer) or by `Virtqueues::drop`
        //   (after the device was reset).
        let ret = unsafe {
            bindings::virtqueue_add_sgs(
                self.vq.as_ptr(),
                sgs.as_mut_ptr(),
                out_num,
                in_num,
                token,
                flags.as_raw(),
            )
        };
        if ret < 0 {
            // SAFETY: The buffer was not queued, so `token` is still owned here; it came from
            // `T::into_foreign` above.
            let req = unsafe { T::from_foreign(token) };
            return Err((req, Error::from_errno(ret)));
        }
        Ok(())
    }

    /// Notifies the device of newly queued requests. Returns false if the device is broken.
    pub fn kick(&mut self) -> bool {
        // SAFETY: By the type invariants `self.vq` is a live virtqueue.
        unsafe { bindings::virtqueue_kick(self.vq.as_ptr()) }
    }

    /// Takes back a request the device has used, with the number of bytes the device says it
    /// wrote. That number comes from the device: callers check it against the request.
    pub fn get_buf(&mut self) -> Option<(T, u32)> {
        let mut len = 0u32;

        // SAFETY: By the type invariants `self.vq` is a live virtqueue; `len` is valid for writes.
        let token = unsafe { bindings::virtqueue_get_buf(self.vq.as_ptr(), &mut len) };
        if token.is_null() {
            return None;
        }

        // SAFETY: By the type invariants every token on the queue comes from `T::into_foreign`,
        // and the virtio ring hands each one back once.
        Some((unsafe { T::from_foreign(token) }, len))
    }

    /// Returns the device that maps memory for the virtio device through the DMA API, or `None`
    /// if the device is given guest physical addresses (no `VIRTIO_F_ACCESS_PLATFORM`, on a
    /// platform that does not force the DMA API) or the transport maps memory itself (see
    /// [`Device::has_transport_mapping`]).
    ///
    /// Memory the driver describes to the device outside of the virtqueue, by address, must be
    /// mapped for this device.
    pub fn dma_device(&self) -> Option<ARef<device::Device>> {
        // SAFETY: By the type invariants `self.vq` is a live virtqueue.
        let dev = unsafe { bindings::virtqueue_dma_dev(self.vq.as_ptr()) };
        if dev.is_null() {
            return None;
        }
        // SAFETY: `dev` is the DMA device of a live virtqueue, a valid `struct device` that
        // outlives the virtqueue; `get_device` takes a reference of our own.
        Some(unsafe { device::Device::get_device(dev) })
    }

    /// Returns how the device of this virtqueue, `vdev`, reaches memory the driver describes to
    /// it by address outside of the virtqueue.
    ///
    /// Fails with `EOPNOTSUPP` where the driver cannot describe memory to the device: the
    /// transport maps memory itself (VDUSE), or the device wants physical addresses but an IOMMU
    /// sits in front of its transport device, so that no device's DMA addresses are physical.
    pub fn dma_target<Ctx: device::DeviceContext>(&self, vdev: &Device<Ctx>) -> Result<DmaTarget> {
        if vdev.has_transport_mapping() {
            return Err(EOPNOTSUPP);
        }
        if let Some(dev) = self.dma_device() {
            return Ok(DmaTarget::Api(dev));
        }
        let dev = vdev.transport_device().ok_or(EOPNOTSUPP)?;
        // SAFETY: `dev` is a valid device.
        if unsafe { bindings::device_iommu_mapped(dev.as_raw()) } {
            return Err(EOPNOTSUPP);
        }
        Ok(DmaTarget::Physical(dev))
    }

    /// Returns the number of descriptors in the ring.
    pub fn size(&self) -> u32 {
        // SAFETY: By the type invariants `self.vq` is a live virtqueue.
        unsafe { bindings::virtqueue_get_vring_size(self.vq.as_ptr()) }
    }
}

// SAFETY: The virtqueue can be used from any thread; requests of type `T` cross threads with it.
unsafe impl<T: Send> Send for Virtqueue<T> {}

/// The virtqueues of a device, and the handler of their notifications.
///
/// Dropping it resets the device, drops every request still queued, and deletes the queues.
///
/// # Invariants
///
/// - `vqs` are the live virtqueues of `dev`, found by [`Virtqueues::new`].
/// - `dev`'s `priv` points to the handler of `handler` for as long as the virtqueues exist.
pub struct Virtqueues<H: VirtqueueHandler, T: ForeignOwnable> {
    dev: ARef<Device>,
    vqs: KVec<Virtqueue<T>>,
    handler: Arc<H>,
}

impl<H, T> Virtqueues<H, T>
where
    H: VirtqueueHandler,
    T: ForeignOwnable + Deref + Send,
    T::Target: Request,
{
    /// Finds the virtqueues of `dev`, one for each of `names`, with `handler` receiving their
    /// notifications. A device has at most one set of virtqueues at a time: `EBUSY` otherwise.
    pub fn new(
        dev: &Device<device::Core<'_>>,
        names: &[&'static CStr],
        handler: Arc<H>,
    ) -> Result<Self> {
        let n = names.len();
        if n == 0 || n > MAX_VQS {
            return Err(EINVAL);
        }

        let vdev = dev.as_raw();
        // SAFETY: `vdev` is valid; in the core context nothing else touches `priv`.
        if !unsafe { (*vdev).priv_ }.is_null() {
            return Err(EBUSY);
        }

        let mut infos = [const {
            bindings::virtqueue_info {
                name: core::ptr::null(),
                callback: None,
                ctx: false,
            }
        }; MAX_VQS];
        for (info, name) in infos.iter_mut().zip(names) {
            info.name = name.as_char_ptr();
            info.callback = Some(Self::callback);
        }
        let mut raw = [core::ptr::null_mut::<bindings::virtqueue>(); MAX_VQS];
        let mut vqs = KVec::with_capacity(n, GFP_KERNEL)?;

        // SAFETY: `vdev` is valid; in the core context nothing else uses `priv`. The handler is
        // kept alive by `handler`, which this value holds until after the queues are deleted.
        unsafe { (*vdev).priv_ = Arc::as_ptr(&handler).cast_mut().cast() };

        // SAFETY: `vdev` is valid; `raw` and `infos` hold at least `n` entries; `names` are
        // `'static` C strings, as the virtqueues keep pointers to them.
        let ret = unsafe {
            bindings::virtio_find_vqs(
                vdev,
                n as u32,
                raw.as_mut_ptr(),
                infos.as_mut_ptr(),
                core::ptr::null_mut(),
            )
        };
        if ret < 0 {
            // SAFETY: `vdev` is valid; no virtqueue refers to the handler.
            unsafe { (*vdev).priv_ = core::ptr::null_mut() };
            return Err(Error::from_errno(ret));
        }

        for vq in raw.iter().take(n) {
            // INVARIANT: `find_vqs` succeeded, so each of the first `n` entries is a live
            // virtqueue; no buffer is queued on it yet.
            let vq = Virtqueue {
                vq: NonNull::new(*vq).ok_or(EIO)?,
                _p: PhantomData,
            };
            // Cannot fail: the capacity was reserved above.
            vqs.push(vq, GFP_KERNEL)?;
        }

        // INVARIANT: `vqs` are the queues just found, `priv` points to the handler.
        Ok(Self {
            dev: dev.into(),
            vqs,
            handler,
        })
    }

    extern "C" fn callback(vq: *mut bindings::virtqueue) {
        // SAFETY: The virtio core calls this with a live virtqueue of the device, whose `vdev` is
        // valid. By the invariants of `Virtqueues`, `priv` points to the handler while any of the
        // device's virtqueues exists.
        let (handler, index) = unsafe {
            let vdev = (*vq).vdev;
            (&*(*vdev).priv_.cast::<H>(), (*vq).index as usize)
        };
        handler.used(index);
    }

    /// Returns the virtqueue at `index`.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Virtqueue<T>> {
        self.vqs.get_mut(index)
    }

    /// Returns the handler of the virtqueues' notifications.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }
}

impl<H: VirtqueueHandler, T: ForeignOwnable> Drop for Virtqueues<H, T> {
    fn drop(&mut self) {
        let vdev = self.dev.as_raw();

        // The device stops using the rings and no callback is running when this returns.
        self.dev.reset();

        for vq in self.vqs.iter() {
            loop {
                // SAFETY: `vq.vq` is a live virtqueue and the device was reset, so no buffer is
                // in use by the device any longer.
                let token = unsafe { bindings::virtqueue_detach_unused_buf(vq.vq.as_ptr()) };
                if token.is_null() {
                    break;
                }
                // SAFETY: By the invariants of `Virtqueue`, the token comes from
                // `T::into_foreign`; the ring returns it once.
                drop(unsafe { T::from_foreign(token) });
            }
        }

        // SAFETY: `vdev` is valid (we hold a reference) and its virtqueues were found by
        // `Virtqueues::new`; every transport implements `del_vqs`. After it returns no callback
        // can run, so the handler may go.
        unsafe {
            if let Some(del_vqs) = (*(*vdev).config).del_vqs {
                del_vqs(vdev);
            }
            (*vdev).priv_ = core::ptr::null_mut();
        }
    }
}

// SAFETY: The virtqueues and their requests can be used and dropped from any thread.
unsafe impl<H: VirtqueueHandler, T: ForeignOwnable + Send> Send for Virtqueues<H, T> {}
