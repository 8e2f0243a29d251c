// SPDX-License-Identifier: GPL-2.0

//! The driver: binding the device.

use super::*;

kernel::virtio_device_table!(
    VIRTIO_BUFSHARE_IDS,
    [virtio::DeviceId::new(uapi::VIRTIO_BUFSHARE_DEVICE_ID)]
);

/// The device's limits, read from its configuration space at probe.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_ranges: u32,
    pub(crate) max_props_size: u32,
    pub(crate) max_buffers: u32,
    pub(crate) max_buffer_size: u64,
}

impl Limits {
    pub(crate) fn read(vdev: &virtio::Device<Core<'_>>) -> Result<Self> {
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

    /// The largest property set a buffer may have: the device's limit, lowered by the module's.
    pub(crate) fn props_size(&self) -> usize {
        module_parameters::max_props_size
            .value()
            .min(self.max_props_size) as usize
    }

    /// The largest number of buffers on the device: the device's limit, lowered by the module's.
    pub(crate) fn buffers(&self) -> usize {
        module_parameters::max_buffers.value().min(self.max_buffers) as usize
    }
}

/// The driver's data for a bound device.
#[pin_data]
pub(crate) struct BufshareDriver {
    pub(crate) shared: SharedOwner,
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
        let shared = SharedOwner::new(vdev).inspect(|shared| {
            let l = &shared.0.limits;
            dev_info!(
                vdev.as_ref(),
                "bufshare device: {} ranges, {} property bytes, {} buffers, {} bytes per buffer{}\n",
                l.max_ranges,
                l.max_props_size,
                l.max_buffers,
                l.max_buffer_size,
                if vdev.has_feature(uapi::VIRTIO_BUFSHARE_F_BUFFERS) {
                    ""
                } else {
                    " (no buffer commands)"
                }
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
