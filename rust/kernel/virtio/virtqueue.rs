// SPDX-License-Identifier: GPL-2.0

//! Virtqueues: the rings through which a driver hands requests to its device.
//!
//! A driver sets up the virtqueues of its device with [`Virtqueues::new`] and puts requests on
//! them with [`Virtqueue::add`]. A request's memory is owned by the virtqueue from
//! [`Virtqueue::add`] until it comes back from [`Virtqueue::get_buf`]; when the [`Virtqueues`] are
//! dropped the device is reset first, so every request still queued is taken back from the
//! device and dropped: a driver cannot free memory the device may still write to.
//!
//! The virtqueues belong to the binding of the driver to the device: [`Virtqueues::new`] hands
//! them out in a [`Devres`], which drops them when the driver unbinds, if the driver did not drop
//! them before. So a driver that keeps them somewhere that outlives the binding (an open file)
//! cannot reset the device, or delete its queues, once another driver may have it.
//!
//! C header: [`include/linux/virtio.h`](srctree/include/linux/virtio.h)

use super::Device;
use crate::{
    bindings, device,
    devres::Devres,
    new_spinlock_irq,
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        SpinLockIrq,
        SpinLockIrqGuard, //
    },
    types::ForeignOwnable,
};
use core::{
    marker::PhantomData,
    mem::MaybeUninit,
    ops::Deref,
    ptr::NonNull, //
};

/// Largest number of virtqueues a driver can set up with [`Virtqueues::new`].
pub const MAX_VQS: usize = 16;

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

    /// Whether the device reaches the memory of a mapping made for it, at `addr`, as it is:
    /// false if the mapping needs syncing, because it is bounced through swiotlb (forced with
    /// `swiotlb=force`, or for memory encryption) or the device is not cache-coherent.
    ///
    /// Memory that a device keeps using for an unbounded time, and that the CPU uses meanwhile,
    /// cannot be synced at the right moments: drivers refuse to hand it over then.
    pub fn reaches_directly(&self, addr: crate::dma::DmaAddress) -> bool {
        // SAFETY: `device()` is a valid device; `dma_need_sync` only reads its DMA settings.
        !unsafe { bindings::dma_need_sync(self.device().as_raw(), addr) }
    }
}

/// A notification of the device, prepared by [`Virtqueue::kick_prepare`] and not sent yet.
///
/// # Invariants
///
/// `vq` pointed to a live virtqueue when this was made.
#[must_use = "the device waits for the notification"]
pub struct Notify {
    vq: NonNull<bindings::virtqueue>,
}

impl Notify {
    /// Notifies the device. Returns false if the device is broken.
    ///
    /// # Safety
    ///
    /// The virtqueue must still be live: the caller keeps the [`Virtqueues`] it belongs to from
    /// being dropped, and from being revoked, until this returns.
    pub unsafe fn send(self) -> bool {
        // SAFETY: By the safety requirements the virtqueue is live. `virtqueue_notify()` needs
        // no lock: it only writes the device's notification register.
        unsafe { bindings::virtqueue_notify(self.vq.as_ptr()) }
    }
}

/// One virtqueue of a [`Virtqueues`] set; `T` is the type of the requests it carries.
///
/// # Invariants
///
/// - `vq` points to a live virtqueue of the device, found by [`Virtqueues::new`] and deleted only
///   when the [`Virtqueues`] that owns this value is dropped; it is only reached through the
///   lock of that [`Virtqueues`].
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

    /// Prepares the notification of the device for the requests queued since the last one, as
    /// [`Virtqueue::kick`] does, but without sending it: `None` if the device does not want one.
    ///
    /// The notification is sent by [`Notify::send`], once the lock of the [`Virtqueues`] is let
    /// go, as C drivers do with `virtqueue_kick_prepare()` and `virtqueue_notify()`: where a
    /// notification traps to the hypervisor, others need not wait for the lock meanwhile.
    pub fn kick_prepare(&mut self) -> Option<Notify> {
        // SAFETY: By the type invariants `self.vq` is a live virtqueue, and `&mut self`
        // serialises this with the other operations on it.
        if unsafe { bindings::virtqueue_kick_prepare(self.vq.as_ptr()) } {
            // INVARIANT: `self.vq` is a live virtqueue.
            Some(Notify { vq: self.vq })
        } else {
            None
        }
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
/// They live while the driver is bound to the device, in the [`Devres`] that
/// [`Virtqueues::new`] returns. Dropping them resets the device, drops every request still
/// queued, and deletes the queues.
///
/// # Invariants
///
/// - `vqs` are the live virtqueues of `dev`, found by [`Virtqueues::new`].
/// - `dev`'s `priv` points to the handler of `handler` for as long as the virtqueues exist.
/// - The driver that found them is bound to `dev` for as long as they exist: they live in the
///   [`Devres`] of that binding.
#[pin_data(PinnedDrop)]
pub struct Virtqueues<H: VirtqueueHandler, T: ForeignOwnable + Send> {
    dev: ARef<Device>,
    #[pin]
    vqs: SpinLockIrq<KVec<Virtqueue<T>>>,
    handler: Arc<H>,
}

impl<H, T> Virtqueues<H, T>
where
    H: VirtqueueHandler + 'static,
    T: ForeignOwnable + Deref + Send + 'static,
    T::Target: Request,
{
    /// Finds the virtqueues of `dev`, one for each of `names`, with `handler` receiving their
    /// notifications, for as long as the driver stays bound to `dev`. A device has at most one
    /// set of virtqueues at a time: `EBUSY` otherwise.
    pub fn new(
        dev: &Device<device::Core<'_>>,
        names: &[&'static CStr],
        handler: Arc<H>,
    ) -> Result<Devres<Self>> {
        let vdev: ARef<Device> = dev.into();
        Devres::new(
            dev.as_ref(),
            try_pin_init!(Self {
                vqs <- new_spinlock_irq!(Self::find(dev, names, &handler)?, "virtio_vqs"),
                dev: vdev,
                handler,
            }),
        )
    }

    /// Finds the virtqueues of `dev`, one for each of `names`, with `handler` receiving their
    /// notifications.
    fn find(
        dev: &Device<device::Core<'_>>,
        names: &[&'static CStr],
        handler: &Arc<H>,
    ) -> Result<KVec<Virtqueue<T>>> {
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
        // kept alive by `handler`, which the `Virtqueues` hold until after the queues are deleted.
        unsafe { (*vdev).priv_ = Arc::as_ptr(handler).cast_mut().cast() };

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

        // INVARIANT: `vqs` are the queues just found, `priv` points to the handler; they go into
        // the `Virtqueues` of the binding.
        Ok(vqs)
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

    /// Locks the virtqueues for the caller's operations on them: the lock is taken with
    /// interrupts off, and the virtqueues are indexed as the names given to [`Virtqueues::new`].
    pub fn lock(&self) -> SpinLockIrqGuard<'_, KVec<Virtqueue<T>>> {
        self.vqs.lock()
    }

    /// Returns the handler of the virtqueues' notifications.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }
}

#[pinned_drop]
impl<H: VirtqueueHandler, T: ForeignOwnable + Send> PinnedDrop for Virtqueues<H, T> {
    fn drop(self: Pin<&mut Self>) {
        let vdev = self.dev.as_raw();

        // The device stops using the rings and no callback is running when this returns.
        self.dev.reset();

        for vq in self.vqs.lock().iter() {
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

// SAFETY: The virtqueues are only reached through their lock; the handler is `Sync`.
unsafe impl<H: VirtqueueHandler, T: ForeignOwnable + Send> Sync for Virtqueues<H, T> {}
