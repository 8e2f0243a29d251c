// SPDX-License-Identifier: GPL-2.0

#include <linux/virtio.h>
#include <linux/virtio_config.h>

/*
 * Unlike virtio_has_feature(), which BUG()s when asked about a bit the driver
 * did not offer, this answers false for bits that were not negotiated and for
 * bits beyond the feature space.
 */
__rust_helper bool rust_helper___virtio_test_bit(const struct virtio_device *vdev,
						 unsigned int fbit)
{
	if (fbit >= VIRTIO_FEATURES_BITS)
		return false;
	return __virtio_test_bit(vdev, fbit);
}

/* As __virtio_clear_bit(), ignoring bits beyond the feature space. */
__rust_helper void rust_helper___virtio_clear_bit(struct virtio_device *vdev,
						  unsigned int fbit)
{
	if (fbit < VIRTIO_FEATURES_BITS)
		__virtio_clear_bit(vdev, fbit);
}

__rust_helper int rust_helper_virtio_find_vqs(struct virtio_device *vdev,
					      unsigned int nvqs,
					      struct virtqueue *vqs[],
					      struct virtqueue_info vqs_info[],
					      struct irq_affinity *desc)
{
	return virtio_find_vqs(vdev, nvqs, vqs, vqs_info, desc);
}

__rust_helper void rust_helper_virtio_device_ready(struct virtio_device *dev)
{
	virtio_device_ready(dev);
}

__rust_helper u8 rust_helper_virtio_cread8(struct virtio_device *vdev,
					   unsigned int offset)
{
	return virtio_cread8(vdev, offset);
}

__rust_helper u16 rust_helper_virtio_cread16(struct virtio_device *vdev,
					     unsigned int offset)
{
	return virtio_cread16(vdev, offset);
}

__rust_helper u32 rust_helper_virtio_cread32(struct virtio_device *vdev,
					     unsigned int offset)
{
	return virtio_cread32(vdev, offset);
}

__rust_helper u64 rust_helper_virtio_cread64(struct virtio_device *vdev,
					     unsigned int offset)
{
	return virtio_cread64(vdev, offset);
}

/*
 * The power management and reset callbacks of a virtio driver run under the
 * transport device's lock, not the virtio device's; the Rust abstractions
 * lock the virtio device to keep its driver from being unbound meanwhile.
 */
__rust_helper void rust_helper_virtio_device_lock(struct virtio_device *vdev)
{
	device_lock(&vdev->dev);
}

__rust_helper void rust_helper_virtio_device_unlock(struct virtio_device *vdev)
{
	device_unlock(&vdev->dev);
}

__rust_helper bool rust_helper_virtio_get_shm_region(struct virtio_device *vdev,
						     struct virtio_shm_region *region,
						     u8 id)
{
	return virtio_get_shm_region(vdev, region, id);
}
