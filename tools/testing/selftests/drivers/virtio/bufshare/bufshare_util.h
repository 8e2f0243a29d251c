/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the guest tests. */
#ifndef BUFSHARE_UTIL_H
#define BUFSHARE_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/bufshare.h>
#include <linux/dma-buf.h>
#include <linux/dma-heap.h>
#include <linux/udmabuf.h>

#define BUFSHARE_DEV		"/dev/bufshare"
#define BUFSHARE_DRV_DIR	"/sys/bus/virtio/drivers/virtio_bufshare"

/* A number the runner passes in the environment; aborts when missing. */
static inline uint64_t env_u64(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		fprintf(stderr, "%s is not set: run the tests through scripts/vm.sh\n", name);
		exit(1);
	}
	return strtoull(v, NULL, 0);
}

/* Writes @s to the sysfs (or other) file @path; returns 0 or -errno. */
static inline int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;
	int err = 0;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	if (n < 0)
		err = -errno;
	else if ((size_t)n != strlen(s))
		err = -EIO;
	if (!err && fsync(fd) && errno != EINVAL && errno != EROFS)
		err = -errno;
	close(fd);
	return err;
}

/*
 * Sets the fault mode of the backend (tools/vhost-user-bufshare,
 * --fault-file): the file named by BUFSHARE_FAULT_FILE is shared with the
 * host. Returns 0 or -errno.
 */
static inline int set_fault(const char *mode)
{
	const char *path = getenv("BUFSHARE_FAULT_FILE");
	int fd, err = 0;

	if (!path)
		return -ENOENT;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, mode, strlen(mode)) != (ssize_t)strlen(mode) || fsync(fd))
		err = errno ? -errno : -EIO;
	close(fd);
	return err;
}

/* Waits up to 10 s for @path to (dis)appear. Returns 0 or -ETIMEDOUT. */
static inline int wait_path(const char *path, int present)
{
	for (int i = 0; i < 1000; i++) {
		if ((access(path, F_OK) == 0) == present)
			return 0;
		usleep(10000);
	}
	return -ETIMEDOUT;
}

/*
 * Loads the driver from the .ko named by BUFSHARE_MODULE, with module
 * parameters @params, and waits up to 10 s for /dev/bufshare. Returns 0 or
 * -errno (-ETIMEDOUT: loaded, but no /dev/bufshare).
 */
static inline int load_module(const char *params)
{
	const char *path = getenv("BUFSHARE_MODULE");
	int ko, err = 0;

	if (!path)
		return -ENOENT;
	ko = open(path, O_RDONLY | O_CLOEXEC);
	if (ko < 0)
		return -errno;
	if (syscall(SYS_finit_module, ko, params, 0))
		err = -errno;
	close(ko);
	return err ? err : wait_path(BUFSHARE_DEV, 1);
}

/*
 * Unloads the driver (waiting up to 10 s for its last files to close) and
 * loads it again with @params. Returns 0 or -errno, with what failed in
 * @what.
 */
static inline int reload_module(const char *params, const char **what)
{
	int i;

	/* Checked first: without it, the driver would stay unloaded. */
	*what = "BUFSHARE_MODULE";
	if (!getenv("BUFSHARE_MODULE"))
		return -ENOENT;
	*what = "delete_module";
	for (i = 0; i < 1000; i++) {
		if (!syscall(SYS_delete_module, "virtio_bufshare", O_NONBLOCK) || errno == ENOENT)
			break;
		if (errno != EWOULDBLOCK && errno != EBUSY)
			return -errno;
		usleep(10000);
	}
	if (i == 1000)
		return -EBUSY;
	*what = "waiting for /dev/bufshare to go";
	if (wait_path(BUFSHARE_DEV, 0))
		return -ETIMEDOUT;
	*what = "load_module";
	return load_module(params);
}

/* The name of the virtio device bound to the driver (virtioN), or -ENOENT. */
static inline int bound_device(char *name, size_t len)
{
	DIR *d = opendir(BUFSHARE_DRV_DIR);
	struct dirent *e;
	int ret = -ENOENT;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (!strncmp(e->d_name, "virtio", 6)) {
			ret = strlen(e->d_name) < len ? 0 : -ENAMETOOLONG;
			if (!ret)
				memcpy(name, e->d_name, strlen(e->d_name) + 1);
			break;
		}
	}
	closedir(d);
	return ret;
}

/* Seals of a memfd that may be registered: its size is fixed. */
#define BUFSHARE_SEALS		(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/*
 * A memfd of @size bytes with @seals added (0: none, and sealing stays
 * possible). Returns the fd or -errno.
 */
static inline int make_memfd(size_t size, unsigned int seals)
{
	int fd = memfd_create("bufshare-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	int err;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, size) || (seals && fcntl(fd, F_ADD_SEALS, seals))) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* A dma-buf of @size bytes from the system dma-heap. Returns the fd or -errno. */
static inline int make_heap_dmabuf(size_t size)
{
	struct dma_heap_allocation_data data = {
		.len = size,
		.fd_flags = O_RDWR | O_CLOEXEC,
	};
	int heap = open("/dev/dma_heap/system", O_RDONLY | O_CLOEXEC);
	int err = 0;

	if (heap < 0)
		return -errno;
	if (ioctl(heap, DMA_HEAP_IOCTL_ALLOC, &data))
		err = -errno;
	close(heap);
	return err ? err : (int)data.fd;
}

/*
 * A udmabuf over @size bytes of a new sealed memfd; the memfd is returned
 * in @memfd (the caller closes both). Returns the dma-buf fd or -errno.
 */
static inline int make_udmabuf(size_t size, int *memfd)
{
	struct udmabuf_create create = { .flags = UDMABUF_FLAGS_CLOEXEC, .size = size };
	int dev, fd, err = 0;

	*memfd = make_memfd(size, F_SEAL_SHRINK);
	if (*memfd < 0)
		return *memfd;
	create.memfd = *memfd;
	dev = open("/dev/udmabuf", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		err = -errno;
		goto fail;
	}
	fd = ioctl(dev, UDMABUF_CREATE, &create);
	if (fd < 0)
		err = -errno;
	close(dev);
	if (!err)
		return fd;
fail:
	close(*memfd);
	*memfd = -1;
	return err;
}

/* DMA_BUF_IOCTL_SYNC on a dma-buf: 0 or -errno. */
static inline int dmabuf_sync(int fd, __u64 flags)
{
	struct dma_buf_sync sync = { .flags = flags };

	return ioctl(fd, DMA_BUF_IOCTL_SYNC, &sync) ? -errno : 0;
}

/*
 * REGISTER @len bytes at @offset of @fd under @app with @props_size bytes
 * of properties; the id goes to @id. Returns 0 or the errno.
 */
static inline int bs_register(int dev, int fd, __u64 offset, __u64 len, const char *app,
			      const void *props, __u32 props_size, __u64 *id)
{
	struct bufshare_register reg = {
		.fd = fd,
		.offset = offset,
		.length = len,
		.props = (uintptr_t)props,
		.props_size = props_size,
	};

	if (id)
		*id = 0;
	/* Up to 64 bytes: an application of 64 characters has no NUL. */
	memcpy(reg.application, app, strnlen(app, sizeof(reg.application)));
	if (ioctl(dev, BUFSHARE_IOC_REGISTER, &reg))
		return errno;
	if (id)
		*id = reg.id;
	return 0;
}

static inline int bs_unregister(int dev, __u64 id)
{
	return ioctl(dev, BUFSHARE_IOC_UNREGISTER, &id) ? errno : 0;
}

/*
 * Unregisters buffer @id and waits until the host let go of its memory,
 * so that it no longer counts against any limit (on a device with
 * events, a buffer counts until then). 0 or errno.
 */
static inline int bs_unregister_wait(int dev, __u64 id)
{
	struct bufshare_unregister u = { .id = id, .flags = BUFSHARE_UNREGISTER_WAIT };

	return ioctl(dev, BUFSHARE_IOC_UNREGISTER_FLAGS, &u) ? errno : 0;
}

/* BUFFER_INFO of @id into @info, properties into @props (may be NULL). */
static inline int bs_buffer_info(int dev, __u64 id, struct bufshare_buffer_info *info,
				 void *props, __u32 props_size)
{
	memset(info, 0, sizeof(*info));
	info->id = id;
	info->props = (uintptr_t)props;
	info->props_size = props_size;
	return ioctl(dev, BUFSHARE_IOC_BUFFER_INFO, info) ? errno : 0;
}

/*
 * Whether the kernel bounces every DMA mapping through swiotlb
 * (swiotlb=force on its command line): the driver then refuses dma-bufs,
 * whose mappings the device would not see as the CPU writes them.
 */
static inline int dma_bounced(void)
{
	char line[4096];
	ssize_t n;
	int fd;

	fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, line, sizeof(line) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	line[n] = '\0';
	return !!strstr(line, "swiotlb=force");
}

/* UPDATE: returns 0 or the errno; the seqno sent goes to *@seqno. */
static inline int bs_update(int dev, struct bufshare_update *u, __u64 *seqno)
{
	if (ioctl(dev, BUFSHARE_IOC_UPDATE, u))
		return errno;
	if (seqno)
		*seqno = u->seqno;
	return 0;
}

static inline int bs_set_props(int dev, __u64 id, const void *props, __u32 size, __u32 flags)
{
	struct bufshare_set_properties sp = {
		.id = id,
		.props = (uintptr_t)props,
		.props_size = size,
		.flags = flags,
	};

	return ioctl(dev, BUFSHARE_IOC_SET_PROPERTIES, &sp) ? errno : 0;
}

/* The device's GET_INFO num_buffers through a file of its own, or -1. */
static inline long long device_num_buffers(void)
{
	struct bufshare_info info;
	int fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	long long n = -1;

	if (fd < 0)
		return -1;
	if (!ioctl(fd, BUFSHARE_IOC_GET_INFO, &info))
		n = info.num_buffers;
	close(fd);
	return n;
}

/* A small deterministic generator (xorshift64*), for patterns and shuffles. */
static inline uint64_t prng_next(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ULL;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* A seed that differs at every call and run. */
static inline uint64_t fresh_seed(void)
{
	static uint64_t counter;
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec ^
	       ((uint64_t)getpid() << 40) ^ (++counter * 0x9e3779b97f4a7c15ULL);
}

/* Fills @len bytes at @p with a pseudo-random pattern from @seed. */
static inline void fill_random(void *p, size_t len, uint64_t seed)
{
	unsigned char *b = p;
	uint64_t v;

	for (size_t i = 0; i < len; i += 8) {
		v = prng_next(&seed);
		memcpy(b + i, &v, len - i < 8 ? len - i : 8);
	}
}

/*
 * A sealed memfd of @size bytes (a multiple of the page size), mapped at
 * *@map, whose pages were first touched in a shuffled order, so that the
 * pages backing consecutive offsets are scattered over physical memory.
 * Each page starts with its own index. Returns the fd or -errno.
 */
static inline int make_scattered_memfd(size_t size, void **map)
{
	size_t page = sysconf(_SC_PAGESIZE), n = size / page;
	uint32_t *order;
	uint64_t seed = 0x5eed5eedULL;
	unsigned char *m;
	int fd, err;

	*map = NULL;
	fd = make_memfd(size, BUFSHARE_SEALS);
	if (fd < 0)
		return fd;
	m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	order = malloc(n * sizeof(*order));
	if (m == MAP_FAILED || !order) {
		err = m == MAP_FAILED ? -errno : -ENOMEM;
		if (m != MAP_FAILED)
			munmap(m, size);
		free(order);
		close(fd);
		return err;
	}
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = prng_next(&seed) % (i + 1);
		uint32_t t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t idx = order[i];

		memcpy(m + idx * page, &idx, sizeof(idx));
	}
	free(order);
	*map = m;
	return fd;
}

static inline int props_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether two properties blobs hold the same strings, in any order. */
static inline int props_same_set(const char *a, size_t asize, const char *b, size_t bsize)
{
	const char *as[64], *bs[64];
	size_t na = 0, nb = 0;

	if (asize != bsize)
		return 0;
	for (size_t i = 0; i < asize && na < 64; i += strlen(a + i) + 1)
		as[na++] = a + i;
	for (size_t i = 0; i < bsize && nb < 64; i += strlen(b + i) + 1)
		bs[nb++] = b + i;
	if (na != nb)
		return 0;
	qsort(as, na, sizeof(*as), props_cmp_str);
	qsort(bs, nb, sizeof(*bs), props_cmp_str);
	for (size_t i = 0; i < na; i++)
		if (strcmp(as[i], bs[i]))
			return 0;
	return 1;
}

/* Reads /proc/self/fdinfo/@fd into @buf. Returns 0 or -errno. */
static inline int read_fdinfo(int fd, char *buf, size_t len)
{
	char path[64];
	ssize_t n, total = 0;
	int f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return -errno;
	while ((n = read(f, buf + total, len - 1 - total)) > 0)
		total += n;
	close(f);
	if (n < 0)
		return -errno;
	buf[total] = '\0';
	return 0;
}

/*
 * The kernel log from now on: kmsg_open() returns a descriptor positioned
 * at the end of the log, kmsg_find() reads what was logged since and tells
 * whether a line holds @needle (copied to @line). Returns the descriptor or
 * -errno; 1 if found, 0 if not, -errno.
 */
static inline int kmsg_open(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (lseek(fd, 0, SEEK_END) < 0) {
		close(fd);
		return -errno;
	}
	return fd;
}

static inline int kmsg_find(int fd, const char *needle, char *line, size_t len)
{
	char rec[8192];

	for (;;) {
		ssize_t n = read(fd, rec, sizeof(rec) - 1);

		if (n < 0 && errno == EPIPE)
			continue;	/* overwritten records: go on */
		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		rec[n] = '\0';
		if (strstr(rec, needle)) {
			size_t keep = strnlen(rec, len - 1);

			memcpy(line, rec, keep);
			line[keep] = '\0';
			return 1;
		}
	}
}

/* drivers/dma-buf/sw_sync.c: fences user space creates and signals. */
struct sw_sync_create_fence_data {
	__u32 value;
	char name[32];
	__s32 fence;
};

#define SW_SYNC_IOC_CREATE_FENCE	_IOWR('W', 0, struct sw_sync_create_fence_data)
#define SW_SYNC_IOC_INC			_IOW('W', 1, __u32)
#define SW_SYNC_PATH			"/sys/kernel/debug/sync/sw_sync"

/* Adds a write fence at @value of @timeline to @dmabuf. Returns 0 or -errno. */
static inline int add_write_fence(int dmabuf, int timeline, __u32 value)
{
	struct sw_sync_create_fence_data data = { .value = value, .name = "bufshare" };
	struct dma_buf_import_sync_file import = { .flags = DMA_BUF_SYNC_WRITE };
	int ret = 0;

	if (ioctl(timeline, SW_SYNC_IOC_CREATE_FENCE, &data))
		return -errno;
	import.fd = data.fence;
	if (ioctl(dmabuf, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, &import))
		ret = -errno;
	close(data.fence);
	return ret;
}

/* What went wrong in a worker thread: how often, and the first time, for the log. */
struct failures {
	int n;
	char first[256];
};

static inline void note_failure(struct failures *f, const char *fmt, ...)
	__printf(2, 3);

static inline void note_failure(struct failures *f, const char *fmt, ...)
{
	va_list ap;

	if (f->n++)
		return;
	va_start(ap, fmt);
	vsnprintf(f->first, sizeof(f->first), fmt, ap);
	va_end(ap);
}

/* The contents of file @path, NUL-terminated, in @buf of @len bytes: 0 or -errno. */
static inline int read_text(const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

/* The table of crc32(), made before main(). */
static uint32_t crc32_table[256];

static void __attribute__((constructor)) crc32_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320U ^ (c >> 1) : c >> 1;
		crc32_table[i] = c;
	}
}

/*
 * zlib's crc32(): the CRC-32 of ISO HDLC, Ethernet and PNG (reflected,
 * polynomial 0xedb88320, all ones in and out). crc32(0, buf, len) is the
 * CRC of @len bytes; crc32(crc32(0, a, n), b, m) that of a then b.
 */
static inline uint32_t crc32(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	crc = ~crc;
	while (len--)
		crc = crc32_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

#endif
