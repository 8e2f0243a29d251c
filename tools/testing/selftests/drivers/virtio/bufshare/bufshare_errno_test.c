// SPDX-License-Identifier: GPL-2.0
/*
 * The errors of Documentation/userspace-api/bufshare.rst, ioctl by ioctl:
 * those no other test reaches, the order in which the driver checks an
 * ioctl's arguments when one call breaks several rules (the document's
 * "Errors and their order"), and how properties are split and merged.
 *
 * Where each documented errno is triggered:
 *
 * - every ioctl: EFAULT and ENOTTY here (common); ENODEV in
 *   bufshare_lifecycle_test; EINTR, ETIMEDOUT, EIO, EPROTO and the
 *   device's refusals in bufshare_fault_test, EINTR with SA_RESTART here;
 * - REGISTER: EBADF, EACCES, EINVAL, EPERM, E2BIG (properties, size) in
 *   bufshare_buffer_test; ENOSPC (per file, bytes, device-wide, the
 *   device's own; the driver's before the file is looked at) and ENOMEM
 *   (RLIMIT_MEMLOCK) in bufshare_limits_test;
 *   EOPNOTSUPP for dma-bufs under swiotlb=force in bufshare_zerocopy_test;
 *   EFAULT for the properties and the id, and EINVAL for a file that can
 *   never be sealed, here;
 * - UPDATE: ENOENT and EINVAL in bufshare_buffer_test; ETIMEDOUT on write
 *   fences there; EINTR on write fences here;
 * - SET_PROPERTIES: ENOENT, EINVAL, E2BIG in bufshare_buffer_test and
 *   bufshare_limits_test; EFAULT here;
 * - UNREGISTER: ENOENT, EFAULT in bufshare_buffer_test;
 * - BUFFER_INFO: ENOENT, EINVAL in bufshare_buffer_test; EFAULT for the
 *   properties here.
 *
 * Not reached: EOPNOTSUPP from a device without VIRTIO_BUFSHARE_F_BUFFERS
 * or that the driver cannot describe memory to (the backend always offers
 * buffers), E2BIG for more ranges than max_ranges (the tests' device takes
 * 100000), a dma-buf exporter that cannot map for the device, and ENOMEM
 * for lack of memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <linux/bufshare.h>
#include <linux/dma-buf.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"

#define PAGE		4096ULL
#define SIZE		(16 * PAGE)
#define APP		"errno-test"
/* An id no file has. */
#define NO_ID		(~0ULL - 1)

FIXTURE(dev) {
	int dev;
	int memfd;	/* SIZE bytes, sealed */
};

FIXTURE_SETUP(dev)
{
	self->dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->dev) TH_LOG("open %s: %s", BUFSHARE_DEV, strerror(errno));
	self->memfd = make_memfd(SIZE, BUFSHARE_SEALS);
	ASSERT_LE(0, self->memfd);
}

FIXTURE_TEARDOWN(dev)
{
	close(self->memfd);
	close(self->dev);
}

/* The ioctl's errno, or 0. */
static int ioctl_errno(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) ? errno : 0;
}

/* A page mapped read-only, holding @len bytes of @data at its start. */
static void *ro_page(const void *data, size_t len)
{
	void *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	memcpy(p, data, len);
	if (mprotect(p, PAGE, PROT_READ)) {
		munmap(p, PAGE);
		return NULL;
	}
	return p;
}

/* The number of buffers fdinfo lists for @dev, or -1. */
static int fdinfo_buffers(int dev)
{
	char text[4096];
	const char *p;

	if (read_fdinfo(dev, text, sizeof(text)))
		return -1;
	p = strstr(text, "buffers:\t");
	return p ? atoi(p + strlen("buffers:\t")) : -1;
}

static const unsigned long ioctls[] = {
	BUFSHARE_IOC_GET_INFO, BUFSHARE_IOC_REGISTER, BUFSHARE_IOC_UPDATE,
	BUFSHARE_IOC_SET_PROPERTIES, BUFSHARE_IOC_UNREGISTER, BUFSHARE_IOC_BUFFER_INFO,
};

/*
 * Every ioctl: EFAULT for an argument it cannot read, ENOTTY for its
 * number with another size or direction.
 */
TEST_F(dev, common)
{
	char buf[256] = { 0 };

	for (size_t i = 0; i < ARRAY_SIZE(ioctls); i++) {
		unsigned long cmd = ioctls[i];
		unsigned long bigger = _IOC(_IOC_DIR(cmd), _IOC_TYPE(cmd), _IOC_NR(cmd),
					    _IOC_SIZE(cmd) + 8);
		unsigned long other_dir = _IOC(_IOC_NONE, _IOC_TYPE(cmd), _IOC_NR(cmd),
					       _IOC_SIZE(cmd));

		EXPECT_EQ(EFAULT, ioctl_errno(self->dev, cmd, NULL)) TH_LOG("ioctl %#lx", cmd);
		EXPECT_EQ(ENOTTY, ioctl_errno(self->dev, bigger, buf)) TH_LOG("ioctl %#lx", bigger);
		EXPECT_EQ(ENOTTY, ioctl_errno(self->dev, other_dir, buf))
			TH_LOG("ioctl %#lx", other_dir);
	}
}

/* REGISTER: EFAULT for properties it cannot read; nothing is registered. */
TEST_F(dev, register_efault)
{
	EXPECT_EQ(EFAULT, bs_register(self->dev, self->memfd, 0, PAGE, APP, (void *)16, 4, NULL));
	EXPECT_EQ(0, fdinfo_buffers(self->dev));
}

/*
 * REGISTER: EFAULT when the id cannot be written back; the buffer it made
 * is unregistered again.
 */
TEST_F(dev, register_id_not_writable)
{
	struct bufshare_register reg = {
		.fd = self->memfd, .length = PAGE, .application = APP,
	};
	long long before = device_num_buffers();
	void *ro = ro_page(&reg, sizeof(reg));

	ASSERT_NE(NULL, ro);
	ASSERT_LE(0, before);
	EXPECT_EQ(EFAULT, ioctl_errno(self->dev, BUFSHARE_IOC_REGISTER, ro));
	EXPECT_EQ(0, fdinfo_buffers(self->dev));
	EXPECT_EQ(before, device_num_buffers());
	munmap(ro, PAGE);
}

/*
 * REGISTER checks, in order: flags, reserved and the application; length
 * and offset (alignment, overflow); length against max_buffer_size; the
 * properties (size, reading, content); the limits; then the file.
 */
TEST_F(dev, register_order)
{
	static const char bad_props[] = "a b=1";
	struct bufshare_register reg = {
		.fd = -1, .flags = 1, .length = PAGE, .application = APP,
	};
	struct bufshare_info info;
	char *big;

	ASSERT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_GET_INFO, &info));
	/* Flags before the file, and before the length. */
	EXPECT_EQ(EINVAL, ioctl_errno(self->dev, BUFSHARE_IOC_REGISTER, &reg));
	reg.length = -PAGE;
	EXPECT_EQ(EINVAL, ioctl_errno(self->dev, BUFSHARE_IOC_REGISTER, &reg));
	/* An application out of [A-Za-z0-9_.-], before the file. */
	EXPECT_EQ(EINVAL, bs_register(self->dev, -1, 0, PAGE, "a/b", NULL, 0, NULL));
	/* Alignment, and overflow, before the size limit. */
	EXPECT_EQ(EINVAL, bs_register(self->dev, -1, 0, -PAGE + 1, APP, NULL, 0, NULL));
	EXPECT_EQ(EINVAL, bs_register(self->dev, -1, -PAGE, -PAGE, APP, NULL, 0, NULL));
	/*
	 * 2^64 - 4096 bytes from 0 is both over max_buffer_size and beyond
	 * the memfd: the size limit comes first. The file comes last.
	 */
	EXPECT_EQ(E2BIG, bs_register(self->dev, self->memfd, 0, -PAGE, APP, NULL, 0, NULL));
	EXPECT_EQ(E2BIG, bs_register(self->dev, -1, 0, -PAGE, APP, NULL, 0, NULL));
	/* The size limit before the properties. */
	EXPECT_EQ(E2BIG, bs_register(self->dev, -1, 0, info.max_buffer_size + PAGE, APP,
				     bad_props, sizeof(bad_props), NULL));
	EXPECT_EQ(E2BIG, bs_register(self->dev, -1, 0, info.max_buffer_size + PAGE, APP,
				     (void *)16, 4, NULL));
	/* The properties, all of them before the file. */
	big = calloc(1, info.max_props_size + 1);
	ASSERT_NE(NULL, big);
	EXPECT_EQ(E2BIG, bs_register(self->dev, -1, 0, PAGE, APP, (void *)16,
				     info.max_props_size + 1, NULL));
	EXPECT_EQ(E2BIG, bs_register(self->dev, -1, 0, PAGE, APP, big, info.max_props_size + 1,
				     NULL));
	free(big);
	EXPECT_EQ(EFAULT, bs_register(self->dev, -1, 0, PAGE, APP, (void *)16, 4, NULL));
	EXPECT_EQ(EINVAL, bs_register(self->dev, -1, 0, PAGE, APP, bad_props, sizeof(bad_props),
				      NULL));
	/* Then the file. */
	EXPECT_EQ(EBADF, bs_register(self->dev, -1, 0, PAGE, APP, "a=1", 4, NULL));
	/* Beyond the memfd, once everything else is right. */
	EXPECT_EQ(EINVAL, bs_register(self->dev, self->memfd, 0, SIZE + PAGE, APP, NULL, 0,
				      NULL));
	EXPECT_EQ(0, fdinfo_buffers(self->dev));
}

/*
 * The file itself: what it is (a memfd or a dma-buf), then the access mode,
 * then the seals, then the range.
 */
TEST_F(dev, register_file_order)
{
	struct dma_heap_allocation_data data = {
		.len = SIZE,
		.fd_flags = O_RDONLY | O_CLOEXEC,
	};
	int unsealed, ro, heap;
	char path[64];

	/* A read-only descriptor of a memfd without seals: EACCES. */
	unsealed = make_memfd(SIZE, 0);
	ASSERT_LE(0, unsealed);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", unsealed);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	ASSERT_LE(0, ro);
	EXPECT_EQ(EACCES, bs_register(self->dev, ro, 0, SIZE, APP, NULL, 0, NULL));
	/* Writable, without seals, beyond its end: EPERM. */
	EXPECT_EQ(EPERM, bs_register(self->dev, unsealed, 0, SIZE + PAGE, APP, NULL, 0, NULL));
	close(ro);
	close(unsealed);

	/* A read-only dma-buf, range beyond its end: EACCES. */
	heap = open("/dev/dma_heap/system", O_RDONLY | O_CLOEXEC);
	ASSERT_LE(0, heap);
	ASSERT_EQ(0, ioctl(heap, DMA_HEAP_IOCTL_ALLOC, &data));
	close(heap);
	EXPECT_EQ(EACCES, bs_register(self->dev, data.fd, 0, SIZE + PAGE, APP, NULL, 0, NULL));
	close(data.fd);
	EXPECT_EQ(0, fdinfo_buffers(self->dev));
}

/*
 * A file of a tmpfs mounted for the test in @dir (from mkdtemp() in the
 * first writable of a few places), @size bytes, opened read-write. Returns
 * the fd or -errno; on success the caller unmounts and removes @dir.
 */
static int tmpfs_file(char *dir, size_t dirlen, size_t size)
{
	static const char *const parents[] = { "/tmp", "/run", "/dev/shm", "/root" };
	char path[128];
	int fd, err = -ENOENT;

	for (size_t i = 0; i < ARRAY_SIZE(parents); i++) {
		snprintf(dir, dirlen, "%s/bufshare-errno-XXXXXX", parents[i]);
		if (mkdtemp(dir)) {
			err = 0;
			break;
		}
		err = -errno;
	}
	if (err)
		return err;
	if (mount("tmpfs", dir, "tmpfs", 0, "size=1m")) {
		err = -errno;
		rmdir(dir);
		return err;
	}
	snprintf(path, sizeof(path), "%s/file", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, size)) {
		err = -errno;
		if (fd >= 0)
			close(fd);
		umount2(dir, MNT_DETACH);
		rmdir(dir);
		return err;
	}
	return fd;
}

/*
 * A shmem file whose seals hold F_SEAL_SEAL but not F_SEAL_SHRINK can never
 * be sealed against shrinking: a regular file of a tmpfs, a memfd made
 * without MFD_ALLOW_SEALING, one whose seals were sealed without it. It is
 * no memfd that can be shared: EINVAL, as for a file that is neither a
 * memfd nor a dma-buf, and before its access mode is looked at. A memfd
 * that lacks F_SEAL_SHRINK but can still get it, or that is write-sealed,
 * is EPERM.
 */
TEST_F(dev, register_never_sealable)
{
	static const struct {
		unsigned int seals;
		int err;
	} memfds[] = {
		{ F_SEAL_SEAL, EINVAL },
		{ F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_WRITE, EINVAL },
		{ 0, EPERM },
		{ F_SEAL_GROW, EPERM },
		{ F_SEAL_GROW | F_SEAL_WRITE, EPERM },
		{ F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_WRITE, EPERM },
	};
	char dir[64], path[64];
	int f, ro, m;

	f = tmpfs_file(dir, sizeof(dir), SIZE);
	ASSERT_LE(0, f) TH_LOG("a tmpfs file: %s", strerror(-f));
	EXPECT_EQ(EINVAL, bs_register(self->dev, f, 0, SIZE, APP, NULL, 0, NULL));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", f);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	ASSERT_LE(0, ro);
	EXPECT_EQ(EINVAL, bs_register(self->dev, ro, 0, SIZE, APP, NULL, 0, NULL));
	close(ro);
	close(f);
	umount2(dir, MNT_DETACH);
	rmdir(dir);

	m = memfd_create("bufshare-errno", MFD_CLOEXEC);
	ASSERT_LE(0, m);
	ASSERT_EQ(0, ftruncate(m, SIZE));
	EXPECT_EQ(EINVAL, bs_register(self->dev, m, 0, SIZE, APP, NULL, 0, NULL));
	close(m);

	for (size_t i = 0; i < ARRAY_SIZE(memfds); i++) {
		m = make_memfd(SIZE, memfds[i].seals);
		ASSERT_LE(0, m);
		EXPECT_EQ(memfds[i].err, bs_register(self->dev, m, 0, SIZE, APP, NULL, 0, NULL))
			TH_LOG("seals %#x", memfds[i].seals);
		close(m);
	}
	EXPECT_EQ(0, fdinfo_buffers(self->dev));
}

/* A property string is split at its first '=': "a=b=c" is a of value b=c. */
TEST_F(dev, property_split_at_first_equals)
{
	static const char props[] = "a=b=c\0x.y==";
	static const char merge[] = "a=d";
	static const char after[] = "x.y==\0a=d";
	struct bufshare_buffer_info info;
	char got[64];
	__u64 id;

	ASSERT_EQ(0, bs_register(self->dev, self->memfd, 0, PAGE, APP, props, sizeof(props),
				 &id));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, got, sizeof(got)));
	ASSERT_EQ(sizeof(props), info.props_size);
	EXPECT_EQ(0, memcmp(props, got, sizeof(props)));
	/* Merging "a=d" replaces "a=b=c": its name is a. */
	ASSERT_EQ(0, bs_set_props(self->dev, id, merge, sizeof(merge), BUFSHARE_PROPS_MERGE));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, got, sizeof(got)));
	ASSERT_EQ(sizeof(after), info.props_size);
	EXPECT_EQ(0, memcmp(after, got, sizeof(after)));
	/* The same name twice, whatever follows its first '='. */
	EXPECT_EQ(EINVAL, bs_set_props(self->dev, id, "a=b=c\0a=b", 10, 0));
	/* A name cannot be empty, so a string cannot start with '='. */
	EXPECT_EQ(EINVAL, bs_set_props(self->dev, id, "=a=b", 5, 0));
	EXPECT_EQ(0, bs_unregister(self->dev, id));
}

/*
 * The order of properties: as given when they are set; after a merge, the
 * properties kept in their order, then the merged set as given.
 */
TEST_F(dev, property_order_after_merge)
{
	static const char props[] = "a=1\0b=2\0c=3\0d=4";
	static const char merge[] = "d=8\0e=5\0b=9";
	static const char after[] = "a=1\0c=3\0d=8\0e=5\0b=9";
	static const char replace[] = "z=1\0y=2";
	struct bufshare_buffer_info info;
	char got[64];
	__u64 id;

	ASSERT_EQ(0, bs_register(self->dev, self->memfd, 0, PAGE, APP, props, sizeof(props),
				 &id));
	ASSERT_EQ(0, bs_set_props(self->dev, id, merge, sizeof(merge), BUFSHARE_PROPS_MERGE));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, got, sizeof(got)));
	ASSERT_EQ(sizeof(after), info.props_size);
	EXPECT_EQ(0, memcmp(after, got, sizeof(after)));
	/* An empty merge changes nothing. */
	ASSERT_EQ(0, bs_set_props(self->dev, id, NULL, 0, BUFSHARE_PROPS_MERGE));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, got, sizeof(got)));
	ASSERT_EQ(sizeof(after), info.props_size);
	EXPECT_EQ(0, memcmp(after, got, sizeof(after)));
	/* A replacement is kept as given. */
	ASSERT_EQ(0, bs_set_props(self->dev, id, replace, sizeof(replace), 0));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, got, sizeof(got)));
	ASSERT_EQ(sizeof(replace), info.props_size);
	EXPECT_EQ(0, memcmp(replace, got, sizeof(replace)));
	EXPECT_EQ(0, bs_unregister(self->dev, id));
}

/*
 * SET_PROPERTIES checks the flags, then the properties (size, reading,
 * content), then the buffer.
 */
TEST_F(dev, set_properties_order)
{
	struct bufshare_buffer_info binfo;
	struct bufshare_info info;
	char got[8];
	char *big;
	__u64 id;

	ASSERT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_GET_INFO, &info));
	big = calloc(1, info.max_props_size + 1);
	ASSERT_NE(NULL, big);
	EXPECT_EQ(EINVAL, bs_set_props(self->dev, NO_ID, (void *)16, 4, 2));
	EXPECT_EQ(E2BIG, bs_set_props(self->dev, NO_ID, big, info.max_props_size + 1, 0));
	EXPECT_EQ(E2BIG, bs_set_props(self->dev, NO_ID, (void *)16, info.max_props_size + 1, 0));
	EXPECT_EQ(EFAULT, bs_set_props(self->dev, NO_ID, (void *)16, 4, 0));
	EXPECT_EQ(EINVAL, bs_set_props(self->dev, NO_ID, "a b=1", 6, 0));
	EXPECT_EQ(ENOENT, bs_set_props(self->dev, NO_ID, "a=1", 4, 0));
	free(big);

	/* EFAULT on a buffer that exists: its properties stay. */
	ASSERT_EQ(0, bs_register(self->dev, self->memfd, 0, PAGE, APP, "a=1", 4, &id));
	EXPECT_EQ(EFAULT, bs_set_props(self->dev, id, (void *)16, 4, BUFSHARE_PROPS_MERGE));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &binfo, got, sizeof(got)));
	EXPECT_EQ(4, binfo.props_size);
	EXPECT_EQ(0, memcmp("a=1", got, 4));
	EXPECT_EQ(0, bs_unregister(self->dev, id));
}

/* UPDATE checks the flags, then the buffer, then the range and rectangle. */
TEST_F(dev, update_order)
{
	struct bufshare_update u = {
		.id = NO_ID, .flags = 1 << 2, .length = 0,
	};

	EXPECT_EQ(EINVAL, bs_update(self->dev, &u, NULL));
	u.flags = BUFSHARE_UPDATE_RANGE;
	EXPECT_EQ(ENOENT, bs_update(self->dev, &u, NULL));
	u.flags = BUFSHARE_UPDATE_RECT;
	EXPECT_EQ(ENOENT, bs_update(self->dev, &u, NULL));
	u.flags = 0;
	u.reserved = 1;
	EXPECT_EQ(EINVAL, bs_update(self->dev, &u, NULL));
}

/*
 * BUFFER_INFO checks reserved, then the buffer; EFAULT when the properties
 * cannot be written, none when there is no room for them.
 */
TEST_F(dev, buffer_info)
{
	static const char props[] = "width=1\0height=2";
	struct bufshare_buffer_info info = { .id = NO_ID, .reserved = 1 };
	void *ro = ro_page("", 1);
	__u64 id;

	ASSERT_NE(NULL, ro);
	EXPECT_EQ(EINVAL, ioctl_errno(self->dev, BUFSHARE_IOC_BUFFER_INFO, &info));
	EXPECT_EQ(ENOENT, bs_buffer_info(self->dev, NO_ID, &info, (void *)16, 4096));
	ASSERT_EQ(0, bs_register(self->dev, self->memfd, 0, PAGE, APP, props, sizeof(props),
				 &id));
	EXPECT_EQ(EFAULT, bs_buffer_info(self->dev, id, &info, ro, PAGE));
	EXPECT_EQ(EFAULT, bs_buffer_info(self->dev, id, &info, (void *)16, PAGE));
	/* Too small: not copied, no error, the size needed comes back. */
	EXPECT_EQ(0, bs_buffer_info(self->dev, id, &info, ro, sizeof(props) - 1));
	EXPECT_EQ(sizeof(props), info.props_size);
	EXPECT_EQ(0, bs_unregister(self->dev, id));
	munmap(ro, PAGE);
}

static void on_alarm(int sig)
{
}

/* An UPDATE of buffer @id after a SIGALRM in @ms ms, handled with @flags. */
static long long update_with_alarm(int dev, __u64 id, int ms, int flags, int *err)
{
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = flags };
	struct itimerval it = { .it_value = { .tv_usec = ms * 1000 } };
	struct bufshare_update u = { .id = id };
	struct timespec a, b;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	clock_gettime(CLOCK_MONOTONIC, &a);
	*err = bs_update(dev, &u, NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	signal(SIGALRM, SIG_DFL);
	return (b.tv_sec - a.tv_sec) * 1000LL + (b.tv_nsec - a.tv_nsec) / 1000000;
}

/*
 * UPDATE of a dma-buf whose write fence never signals: a signal ends the
 * wait with EINTR, nothing sent; a handler with SA_RESTART restarts the
 * ioctl, which then waits its 2 seconds and fails with ETIMEDOUT.
 */
TEST_F_TIMEOUT(dev, update_fence_wait_interrupted, 60)
{
	struct bufshare_buffer_info info;
	struct bufshare_update u = { 0 };
	int buf, memfd, timeline, err;
	__u64 id, seqno;
	long long ms;
	__u32 one = 1;

	if (access(SW_SYNC_PATH, F_OK))
		mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	timeline = open(SW_SYNC_PATH, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, timeline) TH_LOG("%s: %s (CONFIG_SW_SYNC)", SW_SYNC_PATH, strerror(errno));
	buf = make_udmabuf(SIZE, &memfd);
	ASSERT_LE(0, buf) TH_LOG("udmabuf: %s", strerror(-buf));
	ASSERT_EQ(0, bs_register(self->dev, buf, 0, SIZE, APP, NULL, 0, &id));
	u.id = id;
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, NULL, 0));
	seqno = info.seqno;
	ASSERT_EQ(0, add_write_fence(buf, timeline, 1));

	ms = update_with_alarm(self->dev, id, 300, 0, &err);
	TH_LOG("signal, no SA_RESTART: %s after %lld ms", strerror(err), ms);
	EXPECT_EQ(EINTR, err);
	EXPECT_GT(1900, ms);
	ms = update_with_alarm(self->dev, id, 300, SA_RESTART, &err);
	TH_LOG("signal, SA_RESTART: %s after %lld ms", strerror(err), ms);
	EXPECT_EQ(ETIMEDOUT, err);
	EXPECT_LE(2200, ms);
	/* Nothing was sent: the number was not taken. */
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, NULL, 0));
	EXPECT_EQ(seqno, info.seqno);

	/* Signalled: the UPDATE goes through. */
	ASSERT_EQ(0, ioctl(timeline, SW_SYNC_IOC_INC, &one));
	ASSERT_EQ(0, bs_update(self->dev, &u, NULL));
	EXPECT_EQ(seqno + 1, u.seqno);
	EXPECT_EQ(0, bs_unregister(self->dev, id));
	close(timeline);
	close(buf);
	close(memfd);
}

/*
 * A signal during the wait for the device ends it with EINTR, also after a
 * handler installed with SA_RESTART: the device may still carry out the
 * command, so the ioctl is not restarted. The backend's slow-answer fault
 * answers 2 s late.
 */
TEST_F_TIMEOUT(dev, device_wait_not_restarted, 60)
{
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
	struct itimerval it = { .it_value = { .tv_usec = 300000 } };
	struct bufshare_info info;
	int err;

	sigemptyset(&sa.sa_mask);
	ASSERT_EQ(0, sigaction(SIGALRM, &sa, NULL));
	ASSERT_EQ(0, set_fault("slow-answer"));
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &it, NULL));
	err = ioctl_errno(self->dev, BUFSHARE_IOC_GET_INFO, &info);
	EXPECT_EQ(0, set_fault("none"));
	signal(SIGALRM, SIG_DFL);
	EXPECT_EQ(EINTR, err);
	/* The answer held back comes 2 s after the command; then all is normal. */
	sleep(3);
	EXPECT_EQ(0, ioctl_errno(self->dev, BUFSHARE_IOC_GET_INFO, &info));
}

TEST_HARNESS_MAIN
