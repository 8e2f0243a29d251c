// SPDX-License-Identifier: GPL-2.0

#include <linux/device.h>
#include <linux/dma-mapping.h>

__rust_helper int rust_helper_dma_mapping_error(struct device *dev,
						dma_addr_t dma_addr)
{
	return dma_mapping_error(dev, dma_addr);
}

__rust_helper bool rust_helper_device_iommu_mapped(struct device *dev)
{
	return device_iommu_mapped(dev);
}
