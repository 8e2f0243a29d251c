/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause) */
/*
 * virtio-bufshare: guest/host buffer sharing device (VIRTIO_ID_DMABUF).
 *
 * Wire protocol between the driver and the device. Everything is
 * little-endian and of fixed size; see
 * Documentation/driver-api/virtio/virtio_bufshare.rst for the specification.
 */
#ifndef _UAPI_LINUX_VIRTIO_BUFSHARE_H
#define _UAPI_LINUX_VIRTIO_BUFSHARE_H

#include <linux/types.h>
#include <linux/virtio_ids.h>

/* The device id is VIRTIO_ID_DMABUF, reserved in virtio_ids.h. */
#define VIRTIO_BUFSHARE_DEVICE_ID		VIRTIO_ID_DMABUF

/* The command queue: the driver's commands and the device's answers. */
#define VIRTIO_BUFSHARE_VQ_CMD			0
/* With VIRTIO_BUFSHARE_F_EVENTS, the event queue: the device's events. */
#define VIRTIO_BUFSHARE_VQ_EVENT		1
/* Queues of a device without VIRTIO_BUFSHARE_F_EVENTS, and with it. */
#define VIRTIO_BUFSHARE_NUM_VQS			1
#define VIRTIO_BUFSHARE_NUM_VQS_EVENTS		2

/* Protocol version the device reports in GET_INFO. */
#define VIRTIO_BUFSHARE_VERSION			1

/*
 * Feature bits.
 *
 * VIRTIO_BUFSHARE_F_BUFFERS: the device keeps buffers: it accepts the
 * REGISTER, ADD_RANGES, UPDATE, SET_PROPERTIES and UNREGISTER commands.
 *
 * VIRTIO_BUFSHARE_F_GENERATION: every answer carries the device's
 * generation (virtio_bufshare_resp_hdr.generation). It changes when the
 * device lost its buffers other than by a reset, as a restarted device
 * implementation does; the driver then registers its buffers again.
 */
#define VIRTIO_BUFSHARE_F_BUFFERS		0
#define VIRTIO_BUFSHARE_F_GENERATION		1
/*
 * VIRTIO_BUFSHARE_F_EVENTS: the device has an event queue, on which it
 * says when host parties are done with a buffer's memory (RELEASED, FREED),
 * when consumers come and go (CONSUMERS) and when it lost its buffers
 * (LOST); it accepts GET_CONSUMERS, and it answers UNREGISTER at once and
 * sends FREED once no host party holds the buffer's memory any more.
 */
#define VIRTIO_BUFSHARE_F_EVENTS		2
/*
 * VIRTIO_BUFSHARE_F_IMPORT: the device has an import region, shared memory
 * region VIRTIO_BUFSHARE_SHM_IMPORT, into which it maps the buffers of
 * other guests the driver attached to (ATTACH); it accepts ATTACH, DETACH,
 * IMPORT_INFO, RELEASE and CLOSE and sends the IMPORT_* events. Requires
 * VIRTIO_BUFSHARE_F_EVENTS.
 */
#define VIRTIO_BUFSHARE_F_IMPORT		3

/* With VIRTIO_BUFSHARE_F_IMPORT: the shmid of the import region. */
#define VIRTIO_BUFSHARE_SHM_IMPORT		0

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
/* With VIRTIO_BUFSHARE_F_BUFFERS: */
#define VIRTIO_BUFSHARE_CMD_REGISTER		0x0100
#define VIRTIO_BUFSHARE_CMD_ADD_RANGES		0x0101
#define VIRTIO_BUFSHARE_CMD_UPDATE		0x0102
#define VIRTIO_BUFSHARE_CMD_SET_PROPERTIES	0x0103
#define VIRTIO_BUFSHARE_CMD_UNREGISTER		0x0104
/* With VIRTIO_BUFSHARE_F_EVENTS: */
#define VIRTIO_BUFSHARE_CMD_GET_CONSUMERS	0x0105
/* With VIRTIO_BUFSHARE_F_IMPORT: */
#define VIRTIO_BUFSHARE_CMD_ATTACH		0x0200
#define VIRTIO_BUFSHARE_CMD_DETACH		0x0201
#define VIRTIO_BUFSHARE_CMD_IMPORT_INFO		0x0202
#define VIRTIO_BUFSHARE_CMD_RELEASE		0x0203
#define VIRTIO_BUFSHARE_CMD_CLOSE		0x0204

/* Status codes (virtio_bufshare_resp_hdr.status). */
#define VIRTIO_BUFSHARE_S_OK			0x0000
/* The command is not known to the device. */
#define VIRTIO_BUFSHARE_S_UNSUPPORTED		0x0001
/* The command is malformed: bad size, bad flags, bad field. */
#define VIRTIO_BUFSHARE_S_INVALID		0x0002
/* The device failed to carry the command out. */
#define VIRTIO_BUFSHARE_S_DEVICE_ERROR		0x0003
/* No buffer with that id is registered. */
#define VIRTIO_BUFSHARE_S_NO_BUFFER		0x0004
/* A limit of the device (buffers, bytes) is reached. */
#define VIRTIO_BUFSHARE_S_NO_SPACE		0x0005
/* The device's configuration does not allow it (ATTACH). */
#define VIRTIO_BUFSHARE_S_DENIED		0x0006

/* Every command starts with this header, in device-readable buffers. */
struct virtio_bufshare_cmd_hdr {
	__le32 type;
	/* No flags are defined: the driver MUST set 0. */
	__le32 flags;
};

/* Every answer starts with this header, in device-writable buffers. */
struct virtio_bufshare_resp_hdr {
	__le32 status;
	/*
	 * With VIRTIO_BUFSHARE_F_GENERATION: the generation of the device
	 * that carried the command out. 0 otherwise.
	 */
	__le32 generation;
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

/* Length of the NUL-padded application name of a buffer. */
#define VIRTIO_BUFSHARE_APP_LEN			64

/* Most ranges carried by one REGISTER or ADD_RANGES command. */
#define VIRTIO_BUFSHARE_MAX_RANGES_PER_CMD	1024

/*
 * Properties, where a command carries them, are props_size bytes: a
 * sequence of NUL-terminated "name=value" strings. A name is 1 to 63
 * characters out of [A-Za-z0-9_.-] and appears at most once; a value is
 * 0 or more bytes, none of them a control character (below 0x20, or 0x7f).
 */
#define VIRTIO_BUFSHARE_PROP_NAME_MAX		63

/*
 * One range of guest memory: a guest physical address (with
 * VIRTIO_F_ACCESS_PLATFORM, an address the platform translates) and a
 * non-zero length.
 */
struct virtio_bufshare_range {
	__le64 addr;
	__le64 len;
};

/*
 * VIRTIO_BUFSHARE_CMD_REGISTER: a new buffer of size bytes, made of
 * num_ranges ranges in order, of which nr_ranges come with this command.
 * The command is followed by props_size bytes of properties, zero padding
 * to a multiple of 8 bytes, then nr_ranges struct virtio_bufshare_range.
 * The rest of the ranges follow in ADD_RANGES commands. The buffer is
 * complete when all num_ranges ranges arrived; their lengths MUST add up
 * to size. The answer is a bare virtio_bufshare_resp_hdr.
 */
struct virtio_bufshare_cmd_register {
	struct virtio_bufshare_cmd_hdr hdr;
	/* Chosen by the driver; never used twice between two resets. */
	__le64 buffer_id;
	__le64 size;
	__le32 num_ranges;
	__le32 nr_ranges;
	__le32 props_size;
	__le32 reserved;
	/* Whose buffer it is: 1 to 63 characters out of [A-Za-z0-9_.-], NUL-padded. */
	__u8 application[VIRTIO_BUFSHARE_APP_LEN];
};

/*
 * VIRTIO_BUFSHARE_CMD_ADD_RANGES: more ranges of an incomplete buffer,
 * starting with range number first (the number of ranges received so
 * far). Followed by nr_ranges struct virtio_bufshare_range.
 */
struct virtio_bufshare_cmd_add_ranges {
	struct virtio_bufshare_cmd_hdr hdr;
	__le64 buffer_id;
	__le32 first;
	__le32 nr_ranges;
};

/* virtio_bufshare_cmd_update.flags */
/* offset and length say which bytes changed. */
#define VIRTIO_BUFSHARE_UPDATE_F_RANGE		(1 << 0)
/* x, y, width and height say which pixels changed. */
#define VIRTIO_BUFSHARE_UPDATE_F_RECT		(1 << 1)

/*
 * VIRTIO_BUFSHARE_CMD_UPDATE: the content of a complete buffer changed.
 * seqno is larger than that of any earlier UPDATE of the buffer. Without
 * flags the whole buffer changed.
 */
struct virtio_bufshare_cmd_update {
	struct virtio_bufshare_cmd_hdr hdr;
	__le64 buffer_id;
	__le64 seqno;
	__le32 flags;
	__le32 reserved;
	__le64 offset;
	__le64 length;
	__le32 x;
	__le32 y;
	__le32 width;
	__le32 height;
};

/*
 * VIRTIO_BUFSHARE_CMD_SET_PROPERTIES: replaces all free-form properties
 * of a buffer with the props_size bytes that follow.
 */
struct virtio_bufshare_cmd_set_properties {
	struct virtio_bufshare_cmd_hdr hdr;
	__le64 buffer_id;
	__le32 props_size;
	__le32 reserved;
};

/* VIRTIO_BUFSHARE_CMD_UNREGISTER: the buffer, complete or not, is gone. */
struct virtio_bufshare_cmd_unregister {
	struct virtio_bufshare_cmd_hdr hdr;
	__le64 buffer_id;
};

/*
 * VIRTIO_BUFSHARE_CMD_GET_CONSUMERS: how many consumers are attached to
 * an application now. The answer is a virtio_bufshare_resp_consumers.
 */
struct virtio_bufshare_cmd_get_consumers {
	struct virtio_bufshare_cmd_hdr hdr;
	__u8 application[VIRTIO_BUFSHARE_APP_LEN];
};

struct virtio_bufshare_resp_consumers {
	struct virtio_bufshare_resp_hdr hdr;
	__le32 consumers;
	__le32 reserved;
};

/*
 * VIRTIO_BUFSHARE_CMD_ATTACH: import the buffers that guest source
 * registers under application, as the device's configuration allows. The
 * answer is a virtio_bufshare_resp_attach.
 */
struct virtio_bufshare_cmd_attach {
	struct virtio_bufshare_cmd_hdr hdr;
	/* The exporting guest, as the device names it, NUL-padded. */
	__u8 source[VIRTIO_BUFSHARE_NAME_LEN];
	__u8 application[VIRTIO_BUFSHARE_APP_LEN];
};

struct virtio_bufshare_resp_attach {
	struct virtio_bufshare_resp_hdr hdr;
	__le32 attachment;
	__le32 reserved;
};

/* VIRTIO_BUFSHARE_CMD_DETACH: no more imports for the attachment. */
struct virtio_bufshare_cmd_detach {
	struct virtio_bufshare_cmd_hdr hdr;
	__le32 attachment;
	__le32 reserved;
};

/*
 * VIRTIO_BUFSHARE_CMD_IMPORT_INFO (answered with a
 * virtio_bufshare_resp_import_info and the buffer's properties) and
 * VIRTIO_BUFSHARE_CMD_CLOSE (the driver no longer reaches the import's
 * range; answered with a bare virtio_bufshare_resp_hdr).
 */
struct virtio_bufshare_cmd_import {
	struct virtio_bufshare_cmd_hdr hdr;
	__le64 import_id;
};

/* virtio_bufshare_resp_import_info.flags, virtio_bufshare_event_import.flags */
/* The import is mapped read-only: the driver must not write into it. */
#define VIRTIO_BUFSHARE_IMPORT_F_READ_ONLY	(1 << 0)

/* Followed by props_size bytes of the buffer's properties. */
struct virtio_bufshare_resp_import_info {
	struct virtio_bufshare_resp_hdr hdr;
	/* The exporter's id of the buffer. */
	__le64 buffer_id;
	__le64 shm_offset;
	__le64 size;
	/* The last update the device sent for the import. */
	__le64 seqno;
	__le32 flags;
	__le32 props_size;
};

/* VIRTIO_BUFSHARE_CMD_RELEASE: the driver is done with update seqno. */
struct virtio_bufshare_cmd_release {
	struct virtio_bufshare_cmd_hdr hdr;
	__le64 import_id;
	__le64 seqno;
};

/* Events (virtio_bufshare_event.type), with VIRTIO_BUFSHARE_F_EVENTS. */
/* Every host party given update seqno (or a later one) of buffer_id is done with it. */
#define VIRTIO_BUFSHARE_EVT_RELEASED		0x1000
/* After UNREGISTER of buffer_id: no host party holds its memory any more. */
#define VIRTIO_BUFSHARE_EVT_FREED		0x1001
/* The number of consumers attached to application is now consumers. */
#define VIRTIO_BUFSHARE_EVT_CONSUMERS		0x1002
/* The device lost its buffers; generation is its new generation. */
#define VIRTIO_BUFSHARE_EVT_LOST		0x1003
/* The device dropped CONSUMERS events: ask GET_CONSUMERS again. */
#define VIRTIO_BUFSHARE_EVT_OVERFLOW		0x1004
/*
 * With VIRTIO_BUFSHARE_F_IMPORT, as struct virtio_bufshare_event_import:
 * buffer_id of the attachment's source is mapped at shm_offset (size bytes);
 */
#define VIRTIO_BUFSHARE_EVT_IMPORT_ADDED	0x1010
/* the exporter updated it (seqno); */
#define VIRTIO_BUFSHARE_EVT_IMPORT_UPDATED	0x1011
/* the exporter's buffer is gone: stop using the import and CLOSE it; */
#define VIRTIO_BUFSHARE_EVT_IMPORT_REMOVED	0x1012
/* buffer_id (size bytes) was not imported: the import region is full. */
#define VIRTIO_BUFSHARE_EVT_IMPORT_NO_SPACE	0x1013

/*
 * An event: the device writes one into each device-writable buffer the
 * driver places on the event queue, which MUST have room for all of it.
 * Fields an event type does not use are 0.
 */
struct virtio_bufshare_event {
	__le32 type;
	/* With VIRTIO_BUFSHARE_F_GENERATION: the device's generation. */
	__le32 generation;
	/* RELEASED, FREED. */
	__le64 buffer_id;
	/* RELEASED. */
	__le64 seqno;
	/* CONSUMERS. */
	__le32 consumers;
	__le32 reserved;
	/* CONSUMERS: the application, NUL-padded. */
	__u8 application[VIRTIO_BUFSHARE_APP_LEN];
};

/* The IMPORT_* events: the same 96 bytes as struct virtio_bufshare_event. */
struct virtio_bufshare_event_import {
	__le32 type;
	__le32 generation;
	__le64 import_id;
	/* ADDED, UPDATED. */
	__le64 seqno;
	__le32 attachment;
	/* ADDED: VIRTIO_BUFSHARE_IMPORT_F_*. */
	__le32 flags;
	/* ADDED. */
	__le64 shm_offset;
	/* ADDED, NO_SPACE. */
	__le64 size;
	/* The exporter's id of the buffer. */
	__le64 buffer_id;
	__u8 reserved[40];
};

#endif /* _UAPI_LINUX_VIRTIO_BUFSHARE_H */
