/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause) */
/*
 * virtio-bufshare: guest/host buffer sharing device (VIRTIO_ID_DMABUF).
 *
 * Wire protocol between the driver and the device. Everything is
 * little-endian and of fixed size; see
 * Documentation/virtio/virtio-bufshare.rst for the specification.
 */
#ifndef _UAPI_LINUX_VIRTIO_BUFSHARE_H
#define _UAPI_LINUX_VIRTIO_BUFSHARE_H

#include <linux/types.h>

/* The device id, reserved in virtio_ids.h as VIRTIO_ID_DMABUF. */
#define VIRTIO_BUFSHARE_DEVICE_ID		37

/* The one virtqueue: the driver's commands and the device's answers. */
#define VIRTIO_BUFSHARE_VQ_CMD			0
#define VIRTIO_BUFSHARE_NUM_VQS			1

/* Protocol version the device reports in GET_INFO. */
#define VIRTIO_BUFSHARE_VERSION			1

/* Device configuration space layout. */
struct virtio_bufshare_config {
	/* Largest number of memory ranges in one buffer. */
	__le32 max_ranges;
	/* Largest size, in bytes, of one buffer's properties. */
	__le32 max_props_size;
	/* Largest number of buffers registered at a time. */
	__le32 max_buffers;
	__le32 reserved;
	/* Largest size, in bytes, of one buffer. */
	__le64 max_buffer_size;
};

/* Commands (virtio_bufshare_cmd_hdr.type). */
#define VIRTIO_BUFSHARE_CMD_GET_INFO		0x0001

/* Status codes (virtio_bufshare_resp_hdr.status). */
#define VIRTIO_BUFSHARE_S_OK			0x0000
/* The command is not known to the device. */
#define VIRTIO_BUFSHARE_S_UNSUPPORTED		0x0001
/* The command is malformed: bad size, bad flags, bad field. */
#define VIRTIO_BUFSHARE_S_INVALID		0x0002
/* The device failed to carry the command out. */
#define VIRTIO_BUFSHARE_S_DEVICE_ERROR		0x0003

/* Every command starts with this header, in device-readable buffers. */
struct virtio_bufshare_cmd_hdr {
	__le32 type;
	/* No flags are defined: the driver MUST set 0. */
	__le32 flags;
};

/* Every answer starts with this header, in device-writable buffers. */
struct virtio_bufshare_resp_hdr {
	__le32 status;
	__le32 reserved;
};

/* Length of the NUL-padded device name in virtio_bufshare_resp_info. */
#define VIRTIO_BUFSHARE_NAME_LEN		32

/*
 * VIRTIO_BUFSHARE_CMD_GET_INFO: the command is a bare
 * virtio_bufshare_cmd_hdr; the answer is this.
 */
struct virtio_bufshare_resp_info {
	struct virtio_bufshare_resp_hdr hdr;
	/* VIRTIO_BUFSHARE_VERSION. */
	__le32 version;
	/* The same limits as the configuration space. */
	__le32 max_ranges;
	__le32 max_props_size;
	__le32 max_buffers;
	__le64 max_buffer_size;
	/* Buffers registered on this device now. */
	__le64 num_buffers;
	/* Commands the device has completed since its last reset. */
	__le64 num_commands;
	/* Implementation name and version, NUL-padded. */
	__u8 name[VIRTIO_BUFSHARE_NAME_LEN];
};

#endif /* _UAPI_LINUX_VIRTIO_BUFSHARE_H */
