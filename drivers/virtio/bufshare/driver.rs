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
    sync::Arc,
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

/// The driver's data for a bound device.
///
/// Fields are dropped in the order they are declared: the misc device goes first, and with it
/// the last way for an open to reach `device` (`misc_deregister()` waits for opens running);
/// only then is the device shut down.
#[pin_data]
pub(crate) struct BufshareDriver {
    #[pin]
    pub(crate) misc: MiscDeviceRegistration<BufshareFile>,
    pub(crate) device: BoundDevice,
}

/// Says what the device offers, once probe found it usable.
fn announce(vdev: &virtio::Device<Core<'_>>, device: &BufshareDevice) {
    let l = device.limits();
    let buffers = if device.features().buffers {
        ""
    } else {
        " (no buffer commands)"
    };
    dev_info!(
        vdev.as_ref(),
        "bufshare device: {} ranges, {} property bytes, {} buffers of up to {} bytes{}\n",
        l.max_ranges,
        l.max_props_size,
        l.max_buffers,
        l.max_buffer_size,
        buffers
    );
}

#[vtable]
impl virtio::Driver for BufshareDriver {
    type Data<'bound> = Self;

    const ID_TABLE: virtio::IdTable = &VIRTIO_BUFSHARE_IDS;
    const FEATURES: &'static [u32] = &[
        uapi::VIRTIO_BUFSHARE_F_BUFFERS,
        uapi::VIRTIO_BUFSHARE_F_GENERATION,
    ];

    fn probe<'bound>(
        vdev: &'bound virtio::Device<Core<'_>>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        let device = BufshareDevice::new(vdev).map(BoundDevice);
        if let Ok(device) = &device {
            announce(vdev, &device.0);
            // The queue must work before applications can open the device.
            vdev.ready();
        }

        // The device is set up before the misc device lets applications open it.
        try_pin_init!(Self {
            device: device?,
            misc <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c_str!("bufshare"),
            }),
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

    fn reset_prepare<'bound>(
        _vdev: &'bound virtio::Device<Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        this.device.device().suspend();
        Ok(())
    }

    fn reset_done<'bound>(
        vdev: &'bound virtio::Device<Core<'_>>,
        this: Pin<&Self::Data<'bound>>,
    ) -> Result {
        this.device.device().resume(vdev)
    }
}
