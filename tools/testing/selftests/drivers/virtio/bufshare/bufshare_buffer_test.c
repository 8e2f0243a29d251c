// SPDX-License-Identifier: GPL-2.0
/*
 * Registering buffers: every ioctl on a memfd, a dma-heap dma-buf and a
 * udmabuf; every error the ioctls document; fdinfo; which open file owns
 * which buffer; ids; cleanup when the owner dies; a large scattered memfd.
 * Runs against the real device, started by check.sh with
 * BUFSHARE_EXPECT_* limits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/bufshare.h>
#include <linux/dma-buf.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"

#define PAGE		4096ULL
#define SIZE		(64 * 1024ULL)	/* 128 x 128 XRGB8888 */
#define APP		"buffer-test"
/* The driver's default max_props_size. */
#define DEFAULT_MAX_PROPS	4096

/* sizeof() of these is the blob: every string with its NUL. */
static const char PROPS[] = "width=128\0height=128\0format=875713112";
static const char PROPS2[] = "format=0\0label=second";

/* The largest properties blob REGISTER takes here. */
static __u32 max_props(int dev)
{
	struct bufshare_info info;

	if (ioctl(dev, BUFSHARE_IOC_GET_INFO, &info))
		return 0;
	return info.max_props_size < DEFAULT_MAX_PROPS ? info.max_props_size : DEFAULT_MAX_PROPS;
}

/* A valid blob "p=xxx...\0" of exactly @size bytes (>= 3), named @name (1 char). */
static char *props_of_size(char name, size_t size)
{
	char *p = malloc(size);

	if (!p)
		return NULL;
	memset(p, 'x', size);
	p[0] = name;
	p[1] = '=';
	p[size - 1] = '\0';
	return p;
}

static int update_rect(int dev, __u64 id, __u32 x, __u32 y, __u32 w, __u32 h)
{
	struct bufshare_update u = {
		.id = id, .flags = BUFSHARE_UPDATE_RECT, .x = x, .y = y, .width = w, .height = h,
	};

	return bs_update(dev, &u, NULL);
}

static int update_range(int dev, __u64 id, __u64 off, __u64 len)
{
	struct bufshare_update u = {
		.id = id, .flags = BUFSHARE_UPDATE_RANGE, .offset = off, .length = len,
	};

	return bs_update(dev, &u, NULL);
}

static __u64 seqno_of(int dev, __u64 id)
{
	struct bufshare_buffer_info info;

	return bs_buffer_info(dev, id, &info, NULL, 0) ? ~0ULL : info.seqno;
}

/* The same tests on the three kinds of buffer. */
enum kind { KIND_MEMFD, KIND_HEAP, KIND_UDMABUF };

FIXTURE(buf) {
	int dev;
	int fd;		/* what is registered */
	int memfd;	/* under the udmabuf */
};

FIXTURE_VARIANT(buf) {
	enum kind kind;
};

FIXTURE_VARIANT_ADD(buf, memfd) { .kind = KIND_MEMFD };
FIXTURE_VARIANT_ADD(buf, dmaheap) { .kind = KIND_HEAP };
FIXTURE_VARIANT_ADD(buf, udmabuf) { .kind = KIND_UDMABUF };

FIXTURE_SETUP(buf)
{
	self->memfd = -1;
	self->dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->dev) TH_LOG("open %s: %s", BUFSHARE_DEV, strerror(errno));
	switch (variant->kind) {
	case KIND_MEMFD:
		self->fd = make_memfd(SIZE, BUFSHARE_SEALS);
		break;
	case KIND_HEAP:
		self->fd = make_heap_dmabuf(SIZE);
		break;
	case KIND_UDMABUF:
		self->fd = make_udmabuf(SIZE, &self->memfd);
		break;
	}
	ASSERT_LE(0, self->fd) TH_LOG("making the buffer: %s", strerror(-self->fd));
}

FIXTURE_TEARDOWN(buf)
{
	close(self->dev);
	close(self->fd);
	if (self->memfd >= 0)
		close(self->memfd);
}

/* REGISTER, BUFFER_INFO, UPDATE, SET_PROPERTIES, UNREGISTER, in order. */
TEST_F(buf, every_ioctl)
{
	__u32 kind = variant->kind == KIND_MEMFD ? BUFSHARE_KIND_MEMFD : BUFSHARE_KIND_DMABUF;
	struct bufshare_buffer_info info;
	char props[512], small[8];
	long long base = device_num_buffers();
	__u64 id, seqno = 0;

	ASSERT_LE(0, base);
	ASSERT_EQ(0, bs_register(self->dev, self->fd, 0, SIZE, APP, PROPS, sizeof(PROPS), &id));
	EXPECT_LT(0, id);
	EXPECT_EQ(base + 1, device_num_buffers());

	memset(props, 0xee, sizeof(props));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, props, sizeof(props)));
	EXPECT_EQ(id, info.id);
	EXPECT_EQ(kind, info.kind);
	EXPECT_EQ(SIZE, info.size);
	EXPECT_EQ(0, info.seqno);
	EXPECT_LE(1, info.nr_ranges);
	EXPECT_GE(SIZE / PAGE, info.nr_ranges);
	EXPECT_STREQ(APP, info.application);
	ASSERT_EQ(sizeof(PROPS), info.props_size);
	EXPECT_EQ(0, memcmp(PROPS, props, sizeof(PROPS)));
	EXPECT_EQ((char)0xee, props[sizeof(PROPS)]);

	/* Without room for the properties: their size only. */
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, NULL, 0));
	EXPECT_EQ(sizeof(PROPS), info.props_size);
	EXPECT_EQ(SIZE, info.size);
	memset(small, 0xee, sizeof(small));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, small, sizeof(small)));
	EXPECT_EQ(sizeof(PROPS), info.props_size);
	for (size_t i = 0; i < sizeof(small); i++)
		EXPECT_EQ((char)0xee, small[i]);

	/* Updates: numbered by the driver, or by the caller upwards. */
	struct bufshare_update u = { .id = id };

	ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	EXPECT_EQ(1, seqno);
	u = (struct bufshare_update){ .id = id, .flags = BUFSHARE_UPDATE_RANGE,
				      .offset = PAGE, .length = 2 * PAGE };
	ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	EXPECT_EQ(2, seqno);
	u = (struct bufshare_update){ .id = id, .flags = BUFSHARE_UPDATE_RECT,
				      .x = 8, .y = 8, .width = 120, .height = 120 };
	ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	EXPECT_EQ(3, seqno);
	u = (struct bufshare_update){ .id = id, .seqno = 10,
				      .flags = BUFSHARE_UPDATE_RANGE | BUFSHARE_UPDATE_RECT,
				      .offset = 0, .length = SIZE, .x = 0, .y = 0,
				      .width = 128, .height = 128 };
	ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	EXPECT_EQ(10, seqno);
	u = (struct bufshare_update){ .id = id };
	ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	EXPECT_EQ(11, seqno);
	EXPECT_EQ(11, seqno_of(self->dev, id));

	/* Merge: PROPS2's names replace or join, the others stay. */
	static const char merged[] = "width=128\0height=128\0format=0\0label=second";

	ASSERT_EQ(0, bs_set_props(self->dev, id, PROPS2, sizeof(PROPS2), BUFSHARE_PROPS_MERGE));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, props, sizeof(props)));
	EXPECT_TRUE(props_same_set(merged, sizeof(merged), props, info.props_size));
	/* Replace. */
	ASSERT_EQ(0, bs_set_props(self->dev, id, PROPS2, sizeof(PROPS2), 0));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, props, sizeof(props)));
	EXPECT_TRUE(props_same_set(PROPS2, sizeof(PROPS2), props, info.props_size));
	/* None. */
	ASSERT_EQ(0, bs_set_props(self->dev, id, NULL, 0, 0));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, props, sizeof(props)));
	EXPECT_EQ(0, info.props_size);
	/* The rest is as it was. */
	EXPECT_EQ(11, info.seqno);
	EXPECT_EQ(SIZE, info.size);
	EXPECT_STREQ(APP, info.application);

	ASSERT_EQ(0, bs_unregister(self->dev, id));
	EXPECT_EQ(base, device_num_buffers());
	EXPECT_EQ(ENOENT, bs_buffer_info(self->dev, id, &info, NULL, 0));
	EXPECT_EQ(ENOENT, bs_unregister(self->dev, id));
	u = (struct bufshare_update){ .id = id };
	EXPECT_EQ(ENOENT, bs_update(self->dev, &u, NULL));
	EXPECT_EQ(ENOENT, bs_set_props(self->dev, id, PROPS2, sizeof(PROPS2), 0));
}

/* Part of the file; offsets and lengths that are not pages or not inside. */
TEST_F(buf, offset_and_length)
{
	struct bufshare_buffer_info info;
	__u64 id;

	ASSERT_EQ(0, bs_register(self->dev, self->fd, PAGE, 2 * PAGE, APP, NULL, 0, &id));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, NULL, 0));
	EXPECT_EQ(2 * PAGE, info.size);
	EXPECT_EQ(0, info.props_size);
	EXPECT_EQ(0, bs_unregister(self->dev, id));
	/* The last page. */
	ASSERT_EQ(0, bs_register(self->dev, self->fd, SIZE - PAGE, PAGE, APP, NULL, 0, &id));
	EXPECT_EQ(0, bs_unregister(self->dev, id));

	EXPECT_EQ(EINVAL, bs_register(self->dev, self->fd, 100, PAGE, APP, NULL, 0, NULL));
	EXPECT_EQ(EINVAL, bs_register(self->dev, self->fd, 0, PAGE + 1, APP, NULL, 0, NULL));
	EXPECT_EQ(EINVAL, bs_register(self->dev, self->fd, 0, 100, APP, NULL, 0, NULL));
	EXPECT_EQ(EINVAL, bs_register(self->dev, self->fd, 0, 0, APP, NULL, 0, NULL));
	EXPECT_EQ(EINVAL, bs_register(self->dev, self->fd, 0, SIZE + PAGE, APP, NULL, 0, NULL));
	EXPECT_EQ(EINVAL, bs_register(self->dev, self->fd, PAGE, SIZE, APP, NULL, 0, NULL));
	EXPECT_EQ(EINVAL, bs_register(self->dev, self->fd, SIZE, PAGE, APP, NULL, 0, NULL));
	/* offset + length wraps around. */
	EXPECT_EQ(EINVAL, bs_register(self->dev, self->fd, -PAGE, 2 * PAGE, APP, NULL, 0, NULL));
}

/* The buffer outlives the fd it came from: the driver holds the pages. */
TEST_F(buf, survives_closing_its_fd)
{
	struct bufshare_buffer_info info;
	struct bufshare_update u = { 0 };
	__u64 id;

	ASSERT_EQ(0, bs_register(self->dev, self->fd, 0, SIZE, APP, PROPS, sizeof(PROPS), &id));
	close(self->fd);
	if (self->memfd >= 0)
		close(self->memfd);
	self->memfd = -1;
	self->fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, NULL, 0));
	EXPECT_EQ(SIZE, info.size);
	u.id = id;
	EXPECT_EQ(0, bs_update(self->dev, &u, NULL));
	EXPECT_EQ(0, bs_unregister(self->dev, id));
}

FIXTURE(dev) {
	int fd;
	int memfd;	/* SIZE bytes, sealed */
};

FIXTURE_SETUP(dev)
{
	self->fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", BUFSHARE_DEV, strerror(errno));
	self->memfd = make_memfd(SIZE, BUFSHARE_SEALS);
	ASSERT_LE(0, self->memfd);
}

FIXTURE_TEARDOWN(dev)
{
	close(self->memfd);
	close(self->fd);
}

TEST_F(dev, register_flags_and_reserved)
{
	struct bufshare_register reg = {
		.fd = self->memfd, .length = SIZE, .application = APP,
	};

	reg.flags = 1;
	EXPECT_EQ(-1, ioctl(self->fd, BUFSHARE_IOC_REGISTER, &reg));
	EXPECT_EQ(EINVAL, errno);
	reg.flags = 0x80000000;
	EXPECT_EQ(-1, ioctl(self->fd, BUFSHARE_IOC_REGISTER, &reg));
	EXPECT_EQ(EINVAL, errno);
	reg.flags = 0;
	reg.reserved = 1;
	EXPECT_EQ(-1, ioctl(self->fd, BUFSHARE_IOC_REGISTER, &reg));
	EXPECT_EQ(EINVAL, errno);
	reg.reserved = 0;
	ASSERT_EQ(0, ioctl(self->fd, BUFSHARE_IOC_REGISTER, &reg));
	EXPECT_EQ(0, bs_unregister(self->fd, reg.id));
}

TEST_F(dev, register_bad_fd)
{
	int closed = dup(self->memfd);

	ASSERT_LE(0, closed);
	close(closed);
	EXPECT_EQ(EBADF, bs_register(self->fd, -1, 0, PAGE, APP, NULL, 0, NULL));
	EXPECT_EQ(EBADF, bs_register(self->fd, closed, 0, PAGE, APP, NULL, 0, NULL));
	EXPECT_EQ(EBADF, bs_register(self->fd, 1 << 20, 0, PAGE, APP, NULL, 0, NULL));
}

/* Neither a memfd nor a dma-buf. */
TEST_F(dev, register_other_files)
{
	int p[2], f;

	ASSERT_EQ(0, pipe2(p, O_CLOEXEC));
	EXPECT_EQ(EINVAL, bs_register(self->fd, p[0], 0, PAGE, APP, NULL, 0, NULL));
	EXPECT_EQ(EINVAL, bs_register(self->fd, p[1], 0, PAGE, APP, NULL, 0, NULL));
	close(p[0]);
	close(p[1]);
	EXPECT_EQ(EINVAL, bs_register(self->fd, self->fd, 0, PAGE, APP, NULL, 0, NULL));
	f = open("/dev/zero", O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, f);
	EXPECT_EQ(EINVAL, bs_register(self->fd, f, 0, PAGE, APP, NULL, 0, NULL));
	close(f);
	/* A regular file (the root is 9p). */
	f = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	ASSERT_LE(0, f);
	EXPECT_EQ(EINVAL, bs_register(self->fd, f, 0, PAGE, APP, NULL, 0, NULL));
	close(f);
}

/*
 * F_SEAL_SHRINK is needed (EINVAL once F_SEAL_SEAL keeps it from ever being
 * added); F_SEAL_WRITE and F_SEAL_FUTURE_WRITE are refused.
 */
TEST_F(dev, register_memfd_seals)
{
	static const struct {
		unsigned int seals;
		int err;
	} cases[] = {
		{ 0, EPERM },
		{ F_SEAL_GROW, EPERM },
		{ F_SEAL_SEAL, EINVAL },
		{ F_SEAL_SHRINK, 0 },
		{ F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, 0 },
		{ F_SEAL_SHRINK | F_SEAL_WRITE, EPERM },
		{ F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE, EPERM },
		{ F_SEAL_GROW | F_SEAL_WRITE, EPERM },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int m = make_memfd(SIZE, cases[i].seals);
		__u64 id;

		ASSERT_LE(0, m);
		EXPECT_EQ(cases[i].err, bs_register(self->fd, m, 0, SIZE, APP, NULL, 0, &id))
			TH_LOG("seals %#x", cases[i].seals);
		if (!cases[i].err)
			EXPECT_EQ(0, bs_unregister(self->fd, id));
		close(m);
	}
}

/*
 * The device writes a buffer's memory: a descriptor opened read-only (say,
 * someone else's memfd reopened through /proc) cannot register it.
 */
TEST_F(dev, register_needs_write_access)
{
	struct dma_heap_allocation_data data = {
		.len = SIZE,
		.fd_flags = O_RDONLY | O_CLOEXEC,
	};
	char path[64];
	int m, ro, heap;
	__u64 id;

	m = make_memfd(SIZE, F_SEAL_SHRINK);
	ASSERT_LE(0, m);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", m);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	ASSERT_LE(0, ro);
	EXPECT_EQ(EACCES, bs_register(self->fd, ro, 0, SIZE, APP, NULL, 0, &id));
	/* The same memory through a writable descriptor is fine. */
	ASSERT_EQ(0, bs_register(self->fd, m, 0, SIZE, APP, NULL, 0, &id));
	EXPECT_EQ(0, bs_unregister(self->fd, id));
	close(ro);
	close(m);

	heap = open("/dev/dma_heap/system", O_RDONLY | O_CLOEXEC);
	ASSERT_LE(0, heap);
	ASSERT_EQ(0, ioctl(heap, DMA_HEAP_IOCTL_ALLOC, &data));
	close(heap);
	EXPECT_EQ(EACCES, bs_register(self->fd, data.fd, 0, SIZE, APP, NULL, 0, &id));
	close(data.fd);
}

struct sealer {
	int memfd;
	int sealed;	/* F_SEAL_WRITE went on */
};

static void *sealer_thread(void *arg)
{
	struct sealer *s = arg;

	s->sealed = !fcntl(s->memfd, F_ADD_SEALS, F_SEAL_WRITE);
	return NULL;
}

/*
 * A write seal added while the memfd is being registered: either the seal
 * goes on and the registration fails, or the registration succeeds and the
 * seal fails (pinned pages keep it off), never both: the device would be
 * given write access to memory sealed against writes. 200 rounds of two
 * commands and an event take longer than the harness's 30 s under TCG on
 * a busy host.
 */
TEST_F_TIMEOUT(dev, register_racing_write_seal, 180)
{
	enum { ROUNDS = 200 };
	int both = 0, registered = 0, sealed = 0;

	for (int i = 0; i < ROUNDS; i++) {
		struct sealer s = { .memfd = make_memfd(SIZE, F_SEAL_SHRINK) };
		pthread_t t;
		__u64 id;
		int err;

		ASSERT_LE(0, s.memfd);
		ASSERT_EQ(0, pthread_create(&t, NULL, sealer_thread, &s));
		err = bs_register(self->fd, s.memfd, 0, SIZE, APP, NULL, 0, &id);
		ASSERT_EQ(0, pthread_join(t, NULL));
		EXPECT_TRUE(err == 0 || err == EPERM) TH_LOG("register: %s", strerror(err));
		registered += !err;
		sealed += s.sealed;
		both += !err && s.sealed;
		if (!err)
			EXPECT_EQ(0, bs_unregister(self->fd, id));
		close(s.memfd);
	}
	TH_LOG("%d rounds: %d registered, %d sealed, %d both", ROUNDS, registered, sealed, both);
	EXPECT_EQ(0, both);
}

TEST_F(dev, register_application)
{
	char app[BUFSHARE_APP_LEN + 1];
	struct bufshare_buffer_info info;
	__u64 id;

	static const char *const bad[] = { "", "a b", "a/b", "a=b", "\xc3\xa9", "tab\t", "a\n" };

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		EXPECT_EQ(EINVAL,
			  bs_register(self->fd, self->memfd, 0, PAGE, bad[i], NULL, 0, NULL))
			TH_LOG("application '%s'", bad[i]);
	}
	/* 64 characters: no room for the NUL. */
	memset(app, 'a', BUFSHARE_APP_LEN);
	app[BUFSHARE_APP_LEN] = '\0';
	EXPECT_EQ(EINVAL, bs_register(self->fd, self->memfd, 0, PAGE, app, NULL, 0, NULL));
	/* 63 is the most. */
	app[BUFSHARE_APP_LEN - 1] = '\0';
	ASSERT_EQ(0, bs_register(self->fd, self->memfd, 0, PAGE, app, NULL, 0, &id));
	ASSERT_EQ(0, bs_buffer_info(self->fd, id, &info, NULL, 0));
	EXPECT_STREQ(app, info.application);
	EXPECT_EQ(0, bs_unregister(self->fd, id));
	/* Every character allowed. */
	ASSERT_EQ(0, bs_register(self->fd, self->memfd, 0, PAGE,
				 "ABCXYZ-abcxyz_0123456789.", NULL, 0, &id));
	EXPECT_EQ(0, bs_unregister(self->fd, id));
}

struct blob {
	const char *data;
	__u32 size;
	const char *what;
};

#define BLOB(s, what) { s, sizeof(s) - 1, what }
static const struct blob bad_props[] = {
	BLOB("a=1", "no NUL at the end"),
	BLOB("\0", "empty string"),
	BLOB("a=1\0\0", "empty string after one"),
	BLOB("a\0", "no ="),
	BLOB("=1\0", "empty name"),
	BLOB("a b=1\0", "space in the name"),
	BLOB("a/b=1\0", "slash in the name"),
	BLOB("a=\t\0", "tab in the value"),
	BLOB("a=\x7f\0", "DEL in the value"),
	BLOB("a=\x1b[0m\0", "escape in the value"),
	BLOB("a=1\0a=2\0", "duplicate name"),
	BLOB("a=1\0b=2\0a=3\0", "duplicate name, not next to each other"),
	BLOB("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=1\0",
	     "64-character name"),
};

TEST_F(dev, register_bad_properties)
{
	static const char good[] =
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=1\0"
		"A-Z_a.z=\0x=a value = with, spaces \xc3\xa9";
	__u32 max = max_props(self->fd);
	char *p;
	__u64 id;

	for (size_t i = 0; i < ARRAY_SIZE(bad_props); i++) {
		EXPECT_EQ(EINVAL, bs_register(self->fd, self->memfd, 0, PAGE, APP,
					      bad_props[i].data, bad_props[i].size, NULL))
			TH_LOG("%s", bad_props[i].what);
	}
	ASSERT_EQ(0, bs_register(self->fd, self->memfd, 0, PAGE, APP, good, sizeof(good), &id));
	EXPECT_EQ(0, bs_unregister(self->fd, id));
	/* props_size 0: no properties, whatever props points to. */
	ASSERT_EQ(0, bs_register(self->fd, self->memfd, 0, PAGE, APP, "garbage", 0, &id));
	EXPECT_EQ(0, bs_unregister(self->fd, id));

	/* The most, then one byte more. */
	ASSERT_LT(16, max);
	p = props_of_size('p', max + 1);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(E2BIG, bs_register(self->fd, self->memfd, 0, PAGE, APP, p, max + 1, NULL));
	p[max - 1] = '\0';
	ASSERT_EQ(0, bs_register(self->fd, self->memfd, 0, PAGE, APP, p, max, &id));
	EXPECT_EQ(0, bs_unregister(self->fd, id));
	free(p);
}

/* Larger than the device's max_buffer_size. */
TEST_F(dev, register_too_large)
{
	struct bufshare_info info;
	int big;

	ASSERT_EQ(0, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, &info));
	EXPECT_EQ(env_u64("BUFSHARE_EXPECT_MAX_BUFFER_SIZE"), info.max_buffer_size);
	/* Sparse: the pages are never touched. */
	big = make_memfd(info.max_buffer_size + PAGE, BUFSHARE_SEALS);
	ASSERT_LE(0, big);
	EXPECT_EQ(E2BIG, bs_register(self->fd, big, 0, info.max_buffer_size + PAGE, APP,
				     NULL, 0, NULL));
	close(big);
}

struct signaller {
	int timeline;
	int delay_ms;
};

static void *signal_later(void *arg)
{
	struct signaller *s = arg;
	__u32 one = 1;

	usleep(s->delay_ms * 1000);
	ioctl(s->timeline, SW_SYNC_IOC_INC, &one);
	return NULL;
}

static long long update_ms(int dev, __u64 id, int *err)
{
	struct bufshare_update u = { .id = id };
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	*err = bs_update(dev, &u, NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (b.tv_sec - a.tv_sec) * 1000LL + (b.tv_nsec - a.tv_nsec) / 1000000;
}

/*
 * An UPDATE of a dma-buf waits for the writes that its fences announce
 * (DMA_RESV_USAGE_WRITE, here a sw_sync fence imported as a write fence),
 * for 2 s at most: ETIMEDOUT then, and nothing is sent to the device.
 */
TEST_F(dev, update_waits_for_write_fences)
{
	struct signaller sig;
	long long ms;
	int buf, memfd, timeline, err;
	pthread_t t;
	__u64 id;

	if (access(SW_SYNC_PATH, F_OK))
		mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	timeline = open(SW_SYNC_PATH, O_RDWR | O_CLOEXEC);
	if (timeline < 0)
		SKIP(return, "no %s (CONFIG_SW_SYNC)", SW_SYNC_PATH);
	buf = make_udmabuf(SIZE, &memfd);
	ASSERT_LE(0, buf) TH_LOG("udmabuf: %s", strerror(-buf));
	ASSERT_EQ(0, bs_register(self->fd, buf, 0, SIZE, "fenced", NULL, 0, &id));

	/* Signalled 500 ms later: the UPDATE waits for it. */
	ASSERT_EQ(0, add_write_fence(buf, timeline, 1));
	sig = (struct signaller){ .timeline = timeline, .delay_ms = 500 };
	ASSERT_EQ(0, pthread_create(&t, NULL, signal_later, &sig));
	ms = update_ms(self->fd, id, &err);
	ASSERT_EQ(0, pthread_join(t, NULL));
	TH_LOG("UPDATE behind a fence signalled after 500 ms: %s after %lld ms",
	       strerror(err), ms);
	EXPECT_EQ(0, err);
	EXPECT_LE(450, ms);

	/* Never signalled: ETIMEDOUT after the 2 s bound. */
	ASSERT_EQ(0, add_write_fence(buf, timeline, 2));
	ms = update_ms(self->fd, id, &err);
	TH_LOG("UPDATE behind a fence never signalled: %s after %lld ms", strerror(err), ms);
	EXPECT_EQ(ETIMEDOUT, err);
	EXPECT_LE(1900, ms);
	EXPECT_GE(10000, ms);

	/* Once it is signalled, UPDATEs go through again, at once. */
	sig.delay_ms = 0;
	signal_later(&sig);
	ms = update_ms(self->fd, id, &err);
	EXPECT_EQ(0, err);
	EXPECT_EQ(0, bs_unregister(self->fd, id));
	close(timeline);
	close(buf);
	close(memfd);
}

TEST_F(dev, update_errors)
{
	struct bufshare_update u;
	__u64 id, seqno = 0;

	ASSERT_EQ(0, bs_register(self->fd, self->memfd, 0, SIZE, APP, PROPS, sizeof(PROPS), &id));

	u = (struct bufshare_update){ .id = id, .flags = 1 << 2 };
	EXPECT_EQ(EINVAL, bs_update(self->fd, &u, NULL));
	u = (struct bufshare_update){ .id = id, .flags = 0x80000000 };
	EXPECT_EQ(EINVAL, bs_update(self->fd, &u, NULL));
	u = (struct bufshare_update){ .id = id, .reserved = 1 };
	EXPECT_EQ(EINVAL, bs_update(self->fd, &u, NULL));

	/* Ranges. */
	EXPECT_EQ(EINVAL, update_range(self->fd, id, 0, 0));
	EXPECT_EQ(EINVAL, update_range(self->fd, id, SIZE, 1));
	EXPECT_EQ(EINVAL, update_range(self->fd, id, SIZE - PAGE, PAGE + 1));
	EXPECT_EQ(EINVAL, update_range(self->fd, id, -1ULL, 2));
	EXPECT_EQ(EINVAL, update_range(self->fd, id, 1, -1ULL));
	EXPECT_EQ(0, update_range(self->fd, id, SIZE - 1, 1));
	EXPECT_EQ(0, update_range(self->fd, id, 0, SIZE));
	EXPECT_EQ(0, update_range(self->fd, id, 3, 5));	/* bytes, not pages */

	/* Rectangles, inside width=128 height=128. */
	EXPECT_EQ(EINVAL, update_rect(self->fd, id, 0, 0, 0, 1));
	EXPECT_EQ(EINVAL, update_rect(self->fd, id, 0, 0, 1, 0));
	EXPECT_EQ(EINVAL, update_rect(self->fd, id, 0xffffffff, 0, 2, 1));
	EXPECT_EQ(EINVAL, update_rect(self->fd, id, 0, 0xffffffff, 1, 2));
	EXPECT_EQ(EINVAL, update_rect(self->fd, id, 100, 0, 29, 1));
	EXPECT_EQ(EINVAL, update_rect(self->fd, id, 0, 127, 1, 2));
	EXPECT_EQ(EINVAL, update_rect(self->fd, id, 128, 0, 1, 1));
	EXPECT_EQ(EINVAL, update_rect(self->fd, id, 0, 0, 129, 1));
	EXPECT_EQ(0, update_rect(self->fd, id, 100, 0, 28, 1));
	EXPECT_EQ(0, update_rect(self->fd, id, 127, 127, 1, 1));
	EXPECT_EQ(0, update_rect(self->fd, id, 0, 0, 128, 128));

	/* Smaller width and height: the rectangle must fit the new ones. */
	ASSERT_EQ(0, bs_set_props(self->fd, id, "width=16\0height=8", 18, 0));
	EXPECT_EQ(EINVAL, update_rect(self->fd, id, 0, 0, 17, 1));
	EXPECT_EQ(EINVAL, update_rect(self->fd, id, 0, 0, 1, 9));
	EXPECT_EQ(0, update_rect(self->fd, id, 15, 7, 1, 1));
	/* No width nor height: any rectangle. */
	ASSERT_EQ(0, bs_set_props(self->fd, id, "format=0", 9, 0));
	EXPECT_EQ(0, update_rect(self->fd, id, 1000, 1000, 5000, 5000));
	EXPECT_EQ(EINVAL, update_rect(self->fd, id, 0xfffffff0, 0, 0x10, 1));
	EXPECT_EQ(0, update_rect(self->fd, id, 0xffffffef, 0, 0x10, 1));

	/* Sequence numbers go up. */
	seqno = seqno_of(self->fd, id);
	ASSERT_NE(~0ULL, seqno);
	u = (struct bufshare_update){ .id = id, .seqno = seqno };
	EXPECT_EQ(EINVAL, bs_update(self->fd, &u, NULL));
	u = (struct bufshare_update){ .id = id, .seqno = seqno - 1 };
	EXPECT_EQ(EINVAL, bs_update(self->fd, &u, NULL));
	u = (struct bufshare_update){ .id = id, .seqno = seqno + 5 };
	EXPECT_EQ(0, bs_update(self->fd, &u, NULL));
	EXPECT_EQ(seqno + 5, u.seqno);
	u = (struct bufshare_update){ .id = id, .seqno = seqno + 3 };
	EXPECT_EQ(EINVAL, bs_update(self->fd, &u, NULL));
	u = (struct bufshare_update){ .id = id };
	EXPECT_EQ(0, bs_update(self->fd, &u, NULL));
	EXPECT_EQ(seqno + 6, u.seqno);
	/* Failed updates changed nothing. */
	EXPECT_EQ(seqno + 6, seqno_of(self->fd, id));

	u = (struct bufshare_update){ .id = id + 1000000 };
	EXPECT_EQ(ENOENT, bs_update(self->fd, &u, NULL));
	u = (struct bufshare_update){ .id = 0 };
	EXPECT_EQ(ENOENT, bs_update(self->fd, &u, NULL));
	EXPECT_EQ(0, bs_unregister(self->fd, id));
}

TEST_F(dev, set_properties_errors)
{
	struct bufshare_buffer_info info;
	__u32 max = max_props(self->fd);
	char got[512];
	char *a, *b, *c;
	__u64 id;

	ASSERT_EQ(0, bs_register(self->fd, self->memfd, 0, SIZE, APP, PROPS, sizeof(PROPS), &id));
	EXPECT_EQ(EINVAL, bs_set_props(self->fd, id, PROPS2, sizeof(PROPS2), 2));
	EXPECT_EQ(EINVAL, bs_set_props(self->fd, id, PROPS2, sizeof(PROPS2), 0x80000000));
	for (size_t i = 0; i < ARRAY_SIZE(bad_props); i++) {
		EXPECT_EQ(EINVAL,
			  bs_set_props(self->fd, id, bad_props[i].data, bad_props[i].size, 0))
			TH_LOG("%s", bad_props[i].what);
		EXPECT_EQ(EINVAL, bs_set_props(self->fd, id, bad_props[i].data, bad_props[i].size,
					       BUFSHARE_PROPS_MERGE))
			TH_LOG("%s, merged", bad_props[i].what);
	}
	EXPECT_EQ(ENOENT, bs_set_props(self->fd, id + 1000000, PROPS2, sizeof(PROPS2), 0));

	/* Too large at once, or once merged. */
	a = props_of_size('a', max / 2 + 8);
	b = props_of_size('b', max / 2 + 8);
	c = props_of_size('c', max + 1);
	ASSERT_NE(NULL, a);
	ASSERT_NE(NULL, b);
	ASSERT_NE(NULL, c);
	EXPECT_EQ(E2BIG, bs_set_props(self->fd, id, c, max + 1, 0));
	EXPECT_EQ(E2BIG, bs_set_props(self->fd, id, c, max + 1, BUFSHARE_PROPS_MERGE));
	ASSERT_EQ(0, bs_set_props(self->fd, id, a, max / 2 + 8, 0));
	EXPECT_EQ(E2BIG, bs_set_props(self->fd, id, b, max / 2 + 8, BUFSHARE_PROPS_MERGE));
	/* Replacing "a" itself by merging fits. */
	a[2] = 'y';
	EXPECT_EQ(0, bs_set_props(self->fd, id, a, max / 2 + 8, BUFSHARE_PROPS_MERGE));
	ASSERT_EQ(0, bs_buffer_info(self->fd, id, &info, NULL, 0));
	EXPECT_EQ(max / 2 + 8, info.props_size);
	free(a);
	free(b);
	free(c);

	/* Nothing failed changed the properties. */
	ASSERT_EQ(0, bs_set_props(self->fd, id, PROPS, sizeof(PROPS), 0));
	EXPECT_EQ(EINVAL, bs_set_props(self->fd, id, "a=1", 3, 0));
	ASSERT_EQ(0, bs_buffer_info(self->fd, id, &info, got, sizeof(got)));
	EXPECT_TRUE(props_same_set(PROPS, sizeof(PROPS), got, info.props_size));
	EXPECT_EQ(0, bs_unregister(self->fd, id));
}

TEST_F(dev, unregister_and_buffer_info_errors)
{
	struct bufshare_buffer_info info;
	__u64 id;

	EXPECT_EQ(ENOENT, bs_unregister(self->fd, 0));
	EXPECT_EQ(ENOENT, bs_unregister(self->fd, -1ULL));
	EXPECT_EQ(-1, ioctl(self->fd, BUFSHARE_IOC_UNREGISTER, NULL));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(ENOENT, bs_buffer_info(self->fd, 0, &info, NULL, 0));
	EXPECT_EQ(ENOENT, bs_buffer_info(self->fd, -1ULL, &info, NULL, 0));

	ASSERT_EQ(0, bs_register(self->fd, self->memfd, 0, SIZE, APP, NULL, 0, &id));
	memset(&info, 0, sizeof(info));
	info.id = id;
	info.reserved = 1;
	EXPECT_EQ(-1, ioctl(self->fd, BUFSHARE_IOC_BUFFER_INFO, &info));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(0, bs_unregister(self->fd, id));
	EXPECT_EQ(ENOENT, bs_unregister(self->fd, id));
}

/* Looks for @line (a whole line) in @text. */
static int has_line(const char *text, const char *line)
{
	size_t len = strlen(line);

	for (const char *p = text; (p = strstr(p, line)); p++)
		if ((p == text || p[-1] == '\n') && (p[len] == '\n' || p[len] == '\0'))
			return 1;
	return 0;
}

TEST_F(dev, fdinfo)
{
	struct bufshare_buffer_info info;
	char text[4096], line[256];
	int heap;
	__u64 a, b;

	ASSERT_EQ(0, read_fdinfo(self->fd, text, sizeof(text)));
	EXPECT_TRUE(has_line(text, "buffers:\t0")) TH_LOG("%s", text);

	heap = make_heap_dmabuf(SIZE);
	ASSERT_LE(0, heap);
	ASSERT_EQ(0, bs_register(self->fd, self->memfd, 0, SIZE, "fdinfo-memfd", NULL, 0, &a));
	ASSERT_EQ(0, bs_register(self->fd, heap, 0, SIZE / 2, "fdinfo-dmabuf", NULL, 0, &b));
	ASSERT_EQ(0, update_range(self->fd, b, 0, 1));
	ASSERT_EQ(0, update_range(self->fd, b, 0, 1));

	ASSERT_EQ(0, read_fdinfo(self->fd, text, sizeof(text)));
	EXPECT_TRUE(has_line(text, "buffers:\t2")) TH_LOG("%s", text);
	ASSERT_EQ(0, bs_buffer_info(self->fd, a, &info, NULL, 0));
	snprintf(line, sizeof(line),
		 "buffer:\tid=%llu kind=memfd size=%llu ranges=%u seqno=0 application=fdinfo-memfd",
		 (unsigned long long)a, SIZE, info.nr_ranges);
	EXPECT_TRUE(has_line(text, line)) TH_LOG("no '%s' in\n%s", line, text);
	ASSERT_EQ(0, bs_buffer_info(self->fd, b, &info, NULL, 0));
	snprintf(line, sizeof(line),
		 "buffer:\tid=%llu kind=dmabuf size=%llu ranges=%u seqno=2 application=fdinfo-dmabuf",
		 (unsigned long long)b, SIZE / 2, info.nr_ranges);
	EXPECT_TRUE(has_line(text, line)) TH_LOG("no '%s' in\n%s", line, text);
	/* "buffers:" comes before the buffers. */
	EXPECT_TRUE(strstr(text, "buffers:\t") < strstr(text, "buffer:\t"));

	/*
	 * Until the host lets go of it (FREED), an unregistered buffer is
	 * listed as draining: wait for that, then it is gone from the list.
	 */
	EXPECT_EQ(0, bs_unregister_wait(self->fd, a));
	ASSERT_EQ(0, read_fdinfo(self->fd, text, sizeof(text)));
	EXPECT_TRUE(has_line(text, "buffers:\t1")) TH_LOG("%s", text);
	EXPECT_TRUE(has_line(text, "draining:\t0")) TH_LOG("%s", text);
	EXPECT_EQ(NULL, strstr(text, "fdinfo-memfd")) TH_LOG("%s", text);
	close(heap);
}

/* A buffer belongs to the open file that registered it. */
TEST_F(dev, owned_by_its_file)
{
	struct bufshare_buffer_info info;
	struct bufshare_update u = { 0 };
	long long base = device_num_buffers();
	int other = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	__u64 a1, a2, b1, b2;

	ASSERT_LE(0, base);
	ASSERT_LE(0, other);
	ASSERT_EQ(0, bs_register(self->fd, self->memfd, 0, SIZE, APP, NULL, 0, &a1));
	ASSERT_EQ(0, bs_register(self->fd, self->memfd, 0, PAGE, APP, NULL, 0, &a2));
	ASSERT_EQ(0, bs_register(other, self->memfd, 0, SIZE, APP, NULL, 0, &b1));
	ASSERT_EQ(0, bs_register(other, self->memfd, PAGE, PAGE, APP, NULL, 0, &b2));
	EXPECT_EQ(base + 4, device_num_buffers());

	/* The other file sees none of them. */
	EXPECT_EQ(ENOENT, bs_buffer_info(other, a1, &info, NULL, 0));
	u.id = a1;
	EXPECT_EQ(ENOENT, bs_update(other, &u, NULL));
	EXPECT_EQ(ENOENT, bs_set_props(other, a1, PROPS, sizeof(PROPS), 0));
	EXPECT_EQ(ENOENT, bs_unregister(other, a1));
	EXPECT_EQ(ENOENT, bs_buffer_info(self->fd, b1, &info, NULL, 0));
	EXPECT_EQ(ENOENT, bs_unregister(self->fd, b2));
	/* Nor did that touch them. */
	EXPECT_EQ(0, seqno_of(self->fd, a1));
	EXPECT_EQ(base + 4, device_num_buffers());

	/* Closing a file unregisters its buffers, and only those. */
	close(other);
	EXPECT_EQ(base + 2, device_num_buffers());
	EXPECT_EQ(0, bs_buffer_info(self->fd, a1, &info, NULL, 0));
	EXPECT_EQ(0, bs_buffer_info(self->fd, a2, &info, NULL, 0));
	EXPECT_EQ(0, bs_unregister(self->fd, a1));
	EXPECT_EQ(0, bs_unregister(self->fd, a2));
	EXPECT_EQ(base, device_num_buffers());
}

/* Ids grow and are never given twice, whichever file asks. */
TEST_F(dev, ids_never_reused)
{
	enum { N = 40 };
	int other = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	__u64 ids[N];

	ASSERT_LE(0, other);
	for (int i = 0; i < N; i++) {
		int f = i % 2 ? other : self->fd;

		ASSERT_EQ(0, bs_register(f, self->memfd, 0, PAGE, APP, NULL, 0, &ids[i]));
		EXPECT_LT(0, ids[i]);
		if (i)
			EXPECT_LT(ids[i - 1], ids[i]);
		/* Every third one stays a while. */
		if (i % 3)
			ASSERT_EQ(0, bs_unregister(f, ids[i]));
	}
	for (int i = 0; i < N; i++)
		for (int j = 0; j < i; j++)
			EXPECT_NE(ids[i], ids[j]);
	close(other);
	/* After closing a file, still new ids. */
	other = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, other);
	for (int i = 0; i < 3; i++) {
		__u64 id;

		ASSERT_EQ(0, bs_register(other, self->memfd, 0, PAGE, APP, NULL, 0, &id));
		EXPECT_LT(ids[N - 1], id);
	}
	close(other);
}

/* Waits up to 10 s for the device to count @n buffers. */
static long long wait_num_buffers(long long n)
{
	long long now = -1;

	for (int i = 0; i < 1000; i++) {
		now = device_num_buffers();
		if (now == n)
			break;
		usleep(10000);
	}
	return now;
}

/* A process killed with 200 buffers registered leaves none behind. */
TEST_F_TIMEOUT(dev, sigkill_cleanup, 300)
{
	enum { N = 200 };
	long long base = device_num_buffers();
	int pipefd[2], status;
	char c;
	pid_t pid;

	ASSERT_LE(0, base);
	ASSERT_EQ(0, pipe2(pipefd, O_CLOEXEC));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
		int m = make_memfd(N * PAGE, BUFSHARE_SEALS);

		if (dev < 0 || m < 0)
			_exit(1);
		for (int i = 0; i < N; i++)
			if (bs_register(dev, m, i * PAGE, PAGE, "doomed", PROPS, sizeof(PROPS),
					NULL))
				_exit(2);
		close(m);
		if (write(pipefd[1], "r", 1) != 1)
			_exit(3);
		for (;;)
			pause();
	}
	close(pipefd[1]);
	ASSERT_EQ(1, read(pipefd[0], &c, 1)) TH_LOG("the child failed to register");
	close(pipefd[0]);
	EXPECT_EQ(base + N, device_num_buffers());
	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFSIGNALED(status));
	EXPECT_EQ(base, wait_num_buffers(base));
}

/*
 * 256 MiB whose pages were allocated in a shuffled order: physically
 * scattered, so many ranges, sent over several commands.
 */
TEST_F_TIMEOUT(dev, scattered_256m, 600)
{
	const size_t size = 256ULL << 20;
	struct bufshare_buffer_info info;
	struct bufshare_update u = { 0 };
	long long base = device_num_buffers();
	void *map;
	int m;
	__u64 id;

	m = make_scattered_memfd(size, &map);
	ASSERT_LE(0, m) TH_LOG("scattered memfd: %s", strerror(-m));
	ASSERT_EQ(0, bs_register(self->fd, m, 0, size, "scattered", PROPS, sizeof(PROPS), &id));
	ASSERT_EQ(0, bs_buffer_info(self->fd, id, &info, NULL, 0));
	EXPECT_EQ(size, info.size);
	EXPECT_LT(1, info.nr_ranges);
	EXPECT_GE(size / PAGE, info.nr_ranges);
	TH_LOG("256 MiB in %u ranges", info.nr_ranges);
	u.id = id;
	EXPECT_EQ(0, bs_update(self->fd, &u, NULL));
	EXPECT_EQ(base + 1, device_num_buffers());
	EXPECT_EQ(0, bs_unregister(self->fd, id));
	EXPECT_EQ(base, device_num_buffers());
	munmap(map, size);
	close(m);
}

TEST_HARNESS_MAIN
