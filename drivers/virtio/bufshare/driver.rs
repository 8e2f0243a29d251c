// SPDX-License-Identifier: GPL-2.0

//! The driver: binding a device, and the misc device that comes with it.

use kernel::{
    c_str,
    device::Core,
    miscdevice::{
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        Arc,
    },
    uapi,
    virtio, //
};

use crate::{
    device::BufshareDevice,
    file::BufshareFile, //
};

kernel::virtio_device_table!(
    VIRTIO_BUFSHARE_IDS,
    [virtio::DeviceId::new(uapi::VIRTIO_ID_DMABUF)]
);

/// The device while the driver is bound to it: dropping it shuts the device down, which also
/// breaks the reference its virtqueues hold on its command queue.
pub(crate) struct BoundDevice(Arc<BufshareDevice>);

impl BoundDevice {
    /// The device, for an open file to keep.
    pub(crate) fn device(&self) -> &Arc<BufshareDevice> {
        &self.0
    }
}

impl Drop for BoundDevice {
    fn drop(&mut self) {
        self.0.shut_down();
    }
}

/// The names of the misc devices: the first device bound is `/dev/bufshare`, the others
/// `/dev/bufshare1` and on, by the lowest number free.
const MISC_NAMES: [&CStr; 8] = [
    c_str!("bufshare"),
    c_str!("bufshare1"),
    c_str!("bufshare2"),
    c_str!("bufshare3"),
    c_str!("bufshare4"),
    c_str!("bufshare5"),
    c_str!("bufshare6"),
    c_str!("bufshare7"),
];

/// Which numbers of misc devices are in use.
static MISC_USED: [Atomic<bool>; MISC_NAMES.len()] =
    [const { Atomic::new(false) }; MISC_NAMES.len()];

/// The number of a bound device's misc device, given back when dropped.
///
/// # Invariants
///
/// `self.0` indexes [`MISC_NAMES`], and this value set [`MISC_USED`] at that index.
pub(crate) struct MiscNumber(usize);

impl MiscNumber {
    /// Takes the lowest number free; `EBUSY` if every one is in use.
    fn take() -> Result<Self> {
        MISC_USED
            .iter()
            .position(|used| !used.xchg(true, Relaxed))
            // INVARIANT: the flag at that index was clear, and is now set by us.
            .map(Self)
            .ok_or(EBUSY)
    }

    /// The name of the misc device.
    fn name(&self) -> &'static CStr {
        MISC_NAMES[self.0]
    }
}

impl Drop for MiscNumber {
    fn drop(&mut self) {
        MISC_USED[self.0].store(false, Relaxed);
    }
}

/// The driver's data for a bound device.
///
/// Fields are dropped in the order they are declared: the misc device goes first, and with it
/// the last way for an open to reach `device` (`misc_deregister()` waits for opens running);
/// only then is the device shut down, and the misc device's number given back.
#[pin_data]
pub(crate) struct BufshareDriver {
    #[pin]
    pub(crate) misc: MiscDeviceRegistration<BufshareFile>,
    pub(crate) device: BoundDevice,
    number: MiscNumber,
}

/// Says what the device offers, once probe found it usable.
fn announce(vdev: &virtio::Device<Core<'_>>, device: &BufshareDevice) {
    let l = device.limits();
    let buffers = if device.features().buffers {
        ""
    } else {
        " (no buffer commands)"
    };
    let events = match (device.features().events, device.features().import) {
        (true, true) => ", events, imports",
        (true, false) => ", events",
        _ => "",
    };
    dev_info!(
        vdev.as_ref(),
        "bufshare device: {} ranges, {} property bytes, {} buffers of up to {} bytes{}{}\n",
        l.max_ranges,
        l.max_props_size,
        l.max_buffers,
        l.max_buffer_size,
        buffers,
        events
    );
}

#[vtable]
impl virtio::Driver for BufshareDriver {
    type Data<'bound> = Self;

    const ID_TABLE: virtio::IdTable = &VIRTIO_BUFSHARE_IDS;
    const FEATURES: &'static [u32] = &[
        uapi::VIRTIO_BUFSHARE_F_BUFFERS,
        uapi::VIRTIO_BUFSHARE_F_GENERATION,
        uapi::VIRTIO_BUFSHARE_F_EVENTS,
        uapi::VIRTIO_BUFSHARE_F_IMPORT,
    ];

    /// Leaves the events off when the module was asked to (`events=0`): the driver then keeps
    /// the device's promises without them. Imports need the events, and an import region of
    /// whole pages.
    fn validate(vdev: &virtio::Device<Core<'_>>) -> Result {
        if !crate::module_parameters::events.value() {
            vdev.clear_feature(uapi::VIRTIO_BUFSHARE_F_EVENTS);
        }
        if vdev.has_feature(uapi::VIRTIO_BUFSHARE_F_IMPORT) {
            let region = vdev.shm_region(uapi::VIRTIO_BUFSHARE_SHM_IMPORT as u8);
            let usable = crate::device::usable_region(region).is_some();
            if !usable {
                dev_warn!(
                    vdev.as_ref(),
                    "device offers imports without a usable import region ({:?}): no imports\n",
                    region
                );
            }
            if !usable || !vdev.has_feature(uapi::VIRTIO_BUFSHARE_F_EVENTS) {
                vdev.clear_feature(uapi::VIRTIO_BUFSHARE_F_IMPORT);
            }
        }
        Ok(())
    }

    fn probe<'bound>(
        vdev: &'bound virtio::Device<Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        let device = BufshareDevice::new(vdev).map(BoundDevice);
        if let Ok(device) = &device {
            announce(vdev, &device.0);
            // The queue must work before applications can open the device.
            vdev.ready();
            device.0.start_events();
        }

        let number = MiscNumber::take();
        let name = number.as_ref().map_or(MISC_NAMES[0], MiscNumber::name);

        // The device is set up before the misc device lets applications open it.
        try_pin_init!(Self {
            device: device?,
            number: number?,
            misc <- MiscDeviceRegistration::register(MiscDeviceOptions { name }),
        })
    }

    fn freeze<'bound>(
        _vdev: &'bound virtio::Device<Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        this.device.device().suspend();
        Ok(())
    }

    fn restore<'bound>(
        vdev: &'bound virtio::Device<Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        this.device.device().resume(vdev)
    }

    /// As for a suspend: the device is reset behind the driver either way.
    fn reset_prepare<'bound>(
        vdev: &'bound virtio::Device<Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        Self::freeze(vdev, this)
    }

    fn reset_done<'bound>(
        vdev: &'bound virtio::Device<Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        Self::restore(vdev, this)
    }
}
