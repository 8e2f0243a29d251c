/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause) */
/*
 * virtio-bufshare: the ioctl interface of /dev/bufshare.
 *
 * See Documentation/userspace-api/bufshare.rst.
 */
#ifndef _UAPI_LINUX_BUFSHARE_H
#define _UAPI_LINUX_BUFSHARE_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define BUFSHARE_IOCTL_BASE		0xB5

#define BUFSHARE_NAME_LEN		32

/*
 * struct bufshare_info - what BUFSHARE_IOC_GET_INFO returns.
 *
 * Every field but @features comes from the device's answer to a
 * GET_INFO command, sent when the ioctl is called.
 */
struct bufshare_info {
	/* Protocol version of the device. */
	__u32 version;
	/* Device limits. */
	__u32 max_ranges;
	__u32 max_props_size;
	__u32 max_buffers;
	__u64 max_buffer_size;
	/* Buffers registered on the device now. */
	__u64 num_buffers;
	/* Commands the device completed since its last reset. */
	__u64 num_commands;
	/* Negotiated virtio feature bits. */
	__u64 features;
	/* Device implementation name, NUL-terminated. */
	char name[BUFSHARE_NAME_LEN];
};

#define BUFSHARE_IOC_GET_INFO	_IOR(BUFSHARE_IOCTL_BASE, 0x00, struct bufshare_info)

#endif /* _UAPI_LINUX_BUFSHARE_H */
