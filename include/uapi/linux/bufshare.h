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

#define BUFSHARE_IOCTL_BASE		0xB9

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

/* Length of an application name, with its terminating NUL. */
#define BUFSHARE_APP_LEN		64

/*
 * struct bufshare_register - BUFSHARE_IOC_REGISTER: share a buffer.
 *
 * @fd is a memfd (sealed with F_SEAL_SHRINK, not write-sealed) or a
 * dma-buf. @offset and @length, both multiples of the page size, say
 * which part of it is shared. @props points to @props_size bytes of
 * properties: NUL-terminated "name=value" strings (see
 * Documentation/userspace-api/bufshare.rst). @application names whose
 * buffer it is: 1 to 63 characters out of [A-Za-z0-9_.-], NUL-terminated.
 * On success @id holds the buffer's id, never reused while the device is
 * bound. @flags and @reserved must be 0.
 */
struct bufshare_register {
	__s32 fd;
	__u32 flags;
	__u64 offset;
	__u64 length;
	__u64 props;
	__u32 props_size;
	__u32 reserved;
	char application[BUFSHARE_APP_LEN];
	__u64 id;
};

/* bufshare_update.flags */
#define BUFSHARE_UPDATE_RANGE		(1 << 0)	/* @offset, @length valid */
#define BUFSHARE_UPDATE_RECT		(1 << 1)	/* @x, @y, @width, @height valid */
/*
 * Return once the update is on its way to the device, without waiting for
 * its answer: the RELEASED event of the update (or a later one) says that
 * the host is done with it; an update the device refuses is dropped.
 */
#define BUFSHARE_UPDATE_NOWAIT		(1 << 16)

/*
 * struct bufshare_update - BUFSHARE_IOC_UPDATE: the buffer's content
 * changed.
 *
 * @seqno is 0 to let the driver number the update (one more than the last
 * one), or larger than the last one; on return it holds the number sent.
 * Without flags the whole buffer changed. @reserved must be 0.
 */
struct bufshare_update {
	__u64 id;
	__u64 seqno;
	__u32 flags;
	__u32 reserved;
	__u64 offset;
	__u64 length;
	__u32 x;
	__u32 y;
	__u32 width;
	__u32 height;
};

/* bufshare_set_properties.flags */
/* Keep the properties not named in @props (default: replace them all). */
#define BUFSHARE_PROPS_MERGE		(1 << 0)

/*
 * struct bufshare_set_properties - BUFSHARE_IOC_SET_PROPERTIES: replace
 * the buffer's properties with @props, or merge @props into them.
 */
struct bufshare_set_properties {
	__u64 id;
	__u64 props;
	__u32 props_size;
	__u32 flags;
};

/* bufshare_buffer_info.kind */
#define BUFSHARE_KIND_MEMFD		1
#define BUFSHARE_KIND_DMABUF		2

/*
 * struct bufshare_buffer_info - BUFSHARE_IOC_BUFFER_INFO: the state of a
 * buffer of this open file.
 *
 * In: @id, and @props/@props_size, a buffer for the properties (@props
 * may be 0). Out: @props_size is the size of the properties, which were
 * copied to @props if they fit; @seqno is the last update's number (0
 * before the first); @nr_ranges the number of ranges the device got.
 */
struct bufshare_buffer_info {
	__u64 id;
	__u64 props;
	__u32 props_size;
	__u32 kind;
	__u64 size;
	__u64 seqno;
	__u32 nr_ranges;
	__u32 reserved;
	char application[BUFSHARE_APP_LEN];
};

/* bufshare_app_binding.flags */
#define BUFSHARE_BIND_UID		(1 << 0)	/* @uid may */
#define BUFSHARE_BIND_GID		(1 << 1)	/* members of @gid may */

/*
 * struct bufshare_app_binding - BUFSHARE_IOC_BIND_APPLICATION and
 * BUFSHARE_IOC_GET_BINDING: who may register buffers under the application
 * name @application. With BUFSHARE_BIND_UID the user @uid may, with
 * BUFSHARE_BIND_GID the members of the group @gid may; with both, either
 * may. Binding a name with neither flag removes its binding. @uid and @gid
 * are numbers in the caller's user namespace. @reserved must be 0.
 */
struct bufshare_app_binding {
	char application[BUFSHARE_APP_LEN];
	__u32 flags;
	__u32 uid;
	__u32 gid;
	__u32 reserved;
};

/* bufshare_unregister.flags */
/* Wait until no host party holds the buffer's memory any more (FREED). */
#define BUFSHARE_UNREGISTER_WAIT	(1 << 0)

/*
 * struct bufshare_unregister - BUFSHARE_IOC_UNREGISTER_FLAGS: unregister
 * buffer @id. With BUFSHARE_UNREGISTER_WAIT, wait (interruptibly, for at
 * most 10 seconds) until the host let go of its memory: ETIMEDOUT if it
 * did not in time (the buffer is unregistered all the same, and the
 * FREED event comes later). @reserved must be 0.
 */
struct bufshare_unregister {
	__u64 id;
	__u32 flags;
	__u32 reserved;
};

/*
 * struct bufshare_consumers - BUFSHARE_IOC_GET_CONSUMERS: how many host
 * consumers are attached to @application now. The file then receives
 * the CONSUMERS events of that application. @flags must be 0.
 */
struct bufshare_consumers {
	char application[BUFSHARE_APP_LEN];
	__u32 consumers;
	__u32 flags;
};

/* Events, read() from /dev/bufshare (bufshare_event.type). */
/* The host is done with updates up to @seqno of buffer @id. */
#define BUFSHARE_EVENT_RELEASED		1
/* After unregistering: no host party holds buffer @id's memory any more. */
#define BUFSHARE_EVENT_FREED		2
/* @consumers host consumers are attached to @application now. */
#define BUFSHARE_EVENT_CONSUMERS	3
/* The host lost its buffers; the driver gives them back. */
#define BUFSHARE_EVENT_LOST		4
/* @seqno events were dropped: the reader fell behind. */
#define BUFSHARE_EVENT_OVERFLOW		5

/*
 * struct bufshare_event - one event, as read() returns them: whole
 * records only, about the buffers of the open file and the applications
 * it registered under or asked BUFSHARE_IOC_GET_CONSUMERS about. Fields
 * the type does not use are 0.
 */
struct bufshare_event {
	__u32 type;
	__u32 consumers;
	__u64 id;
	__u64 seqno;
	char application[BUFSHARE_APP_LEN];
};

/*
 * With VIRTIO_BUFSHARE_F_IMPORT, events about the buffers of other guests
 * this file imports (see BUFSHARE_IOC_ATTACH). They are read as records
 * of sizeof(struct bufshare_event), laid out as struct bufshare_import_event.
 */
/* Buffer @buffer_id of @attachment's source is imported as @import_id. */
#define BUFSHARE_EVENT_IMPORT_ADDED	16
/* The exporter updated import @import_id: its update @seqno. */
#define BUFSHARE_EVENT_IMPORT_UPDATED	17
/* The exporter's buffer is gone: close the import's dma-buf. */
#define BUFSHARE_EVENT_IMPORT_REMOVED	18
/* Buffer @buffer_id (@size bytes) was not imported: no room for it. */
#define BUFSHARE_EVENT_IMPORT_NO_SPACE	19
/* The attachment ended (the device was reset or lost its buffers). */
#define BUFSHARE_EVENT_IMPORT_DETACHED	20

/* bufshare_import_event.flags, bufshare_import.flags */
/* The import may be read, not written. */
#define BUFSHARE_IMPORT_READ_ONLY	(1 << 0)

/*
 * An event about an import: the same size as struct bufshare_event, with
 * @type where that has it.
 */
struct bufshare_import_event {
	__u32 type;
	__u32 attachment;
	__u64 import_id;
	/* ADDED, UPDATED: the exporter's last update. */
	__u64 seqno;
	/* ADDED, NO_SPACE. */
	__u64 size;
	/* The exporter's id of the buffer (ADDED, NO_SPACE). */
	__u64 buffer_id;
	/* ADDED: BUFSHARE_IMPORT_*. */
	__u32 flags;
	__u32 reserved[11];
};

/*
 * BUFSHARE_IOC_ATTACH: import the buffers that the guest @source (as the
 * host names it) registers under @application, as far as the host allows.
 * Returns @attachment, the number of the attachment in the events.
 */
struct bufshare_attach {
	char source[BUFSHARE_NAME_LEN];
	char application[BUFSHARE_APP_LEN];
	__u32 attachment;
	__u32 flags;
};

/*
 * BUFSHARE_IOC_IMPORT: a dma-buf of import @import_id of this file, in
 * @fd (close-on-exec). Closing every descriptor and mapping of it gives
 * the import back to the device. One dma-buf per import at a time.
 */
struct bufshare_import {
	__u64 import_id;
	/* Out: */
	__u64 size;
	__u64 buffer_id;
	__u64 seqno;
	__u32 attachment;
	__u32 flags;
	__s32 fd;
	__u32 reserved;
};

/*
 * BUFSHARE_IOC_IMPORT_INFO: what the device says of import @import_id of
 * this file now, with its buffer's properties, copied to @props when
 * @props_size (in: the room there) is large enough; @props_size is their
 * size (out).
 */
struct bufshare_import_info {
	__u64 import_id;
	__u64 props;
	__u32 props_size;
	/* Out: */
	__u32 flags;
	__u64 size;
	__u64 buffer_id;
	/* The exporter's last update given to the import. */
	__u64 seqno;
	__u32 attachment;
	__u32 reserved;
};

/* BUFSHARE_IOC_IMPORT_RELEASE: done with update @seqno of @import_id. */
struct bufshare_import_release {
	__u64 import_id;
	__u64 seqno;
};

#define BUFSHARE_IOC_GET_INFO	_IOR(BUFSHARE_IOCTL_BASE, 0x00, struct bufshare_info)
#define BUFSHARE_IOC_REGISTER	_IOWR(BUFSHARE_IOCTL_BASE, 0x01, struct bufshare_register)
#define BUFSHARE_IOC_UPDATE	_IOWR(BUFSHARE_IOCTL_BASE, 0x02, struct bufshare_update)
#define BUFSHARE_IOC_SET_PROPERTIES \
	_IOW(BUFSHARE_IOCTL_BASE, 0x03, struct bufshare_set_properties)
#define BUFSHARE_IOC_UNREGISTER	_IOW(BUFSHARE_IOCTL_BASE, 0x04, __u64)
#define BUFSHARE_IOC_BUFFER_INFO \
	_IOWR(BUFSHARE_IOCTL_BASE, 0x05, struct bufshare_buffer_info)
#define BUFSHARE_IOC_BIND_APPLICATION \
	_IOW(BUFSHARE_IOCTL_BASE, 0x06, struct bufshare_app_binding)
#define BUFSHARE_IOC_GET_BINDING \
	_IOWR(BUFSHARE_IOCTL_BASE, 0x07, struct bufshare_app_binding)
#define BUFSHARE_IOC_UNREGISTER_FLAGS \
	_IOW(BUFSHARE_IOCTL_BASE, 0x08, struct bufshare_unregister)
#define BUFSHARE_IOC_GET_CONSUMERS \
	_IOWR(BUFSHARE_IOCTL_BASE, 0x09, struct bufshare_consumers)

#define BUFSHARE_IOC_ATTACH	_IOWR(BUFSHARE_IOCTL_BASE, 0x0a, struct bufshare_attach)
#define BUFSHARE_IOC_DETACH	_IOW(BUFSHARE_IOCTL_BASE, 0x0b, __u32)
#define BUFSHARE_IOC_IMPORT	_IOWR(BUFSHARE_IOCTL_BASE, 0x0c, struct bufshare_import)
#define BUFSHARE_IOC_IMPORT_RELEASE \
	_IOW(BUFSHARE_IOCTL_BASE, 0x0d, struct bufshare_import_release)
#define BUFSHARE_IOC_IMPORT_CLOSE	_IOW(BUFSHARE_IOCTL_BASE, 0x0e, __u64)
#define BUFSHARE_IOC_IMPORT_INFO \
	_IOWR(BUFSHARE_IOCTL_BASE, 0x0f, struct bufshare_import_info)

#endif /* _UAPI_LINUX_BUFSHARE_H */
