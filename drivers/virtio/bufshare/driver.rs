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
#[pin_data]
pub(crate) struct BufshareDriver {
    pub(crate) device: BoundDevice,
    #[pin]
    pub(crate) misc: MiscDeviceRegistration<BufshareFile>,
}

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
        let device = BufshareDevice::new(vdev)
            .map(BoundDevice)
            .inspect(|device| {
                let l = device.0.limits();
                dev_info!(
                vdev.as_ref(),
                "bufshare device: {} ranges, {} property bytes, {} buffers of up to {} bytes{}\n",
                l.max_ranges,
                l.max_props_size,
                l.max_buffers,
                l.max_buffer_size,
                if device.0.features().buffers {
                    ""
                } else {
                    " (no buffer commands)"
                }
            );
                // The queue must work before applications can open the device.
                vdev.ready();
            });

        try_pin_init!(Self {
            device: device?,
            misc <- MiscDeviceRegistration::register(MiscDeviceOptions {
                name: c_str!("bufshare"),
            }),
        })
    }
}
