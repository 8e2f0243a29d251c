// SPDX-License-Identifier: GPL-2.0
/*
 * The driver's limits, set by module parameters at load: the test loads
 * the module again (BUFSHARE_MODULE) with small ones, checks ENOSPC and
 * E2BIG at the limits, and loads it back with the defaults.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/bufshare.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"

#define PAGE		4096ULL
#define APP		"limits-test"
#define MAX_FILES	8

/*
 * Unloads the driver (waiting up to 10 s for its last files to close) and
 * loads it again with @params. Returns 0 or -errno, with what failed in
 * @what.
 */
static int reload(const char *params, const char **what)
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

/* The value of module parameter @name, as sysfs shows it; -1 if it does not. */
static long long param(const char *name)
{
	char path[128], buf[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/sys/module/virtio_bufshare/parameters/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return strtoll(buf, NULL, 0);
}

FIXTURE(limits) {
	int files[MAX_FILES];
	int nfiles;
	int memfd;	/* 256 KiB, sealed */
};

/* A new open file of the test's; closed by the teardown. */
static int open_dev(struct _test_data_limits *self)
{
	int fd;

	if (self->nfiles == MAX_FILES)
		return -1;
	fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	if (fd >= 0)
		self->files[self->nfiles++] = fd;
	return fd;
}

static void close_dev(struct _test_data_limits *self, int fd)
{
	for (int i = 0; i < self->nfiles; i++) {
		if (self->files[i] == fd) {
			close(fd);
			self->files[i] = self->files[--self->nfiles];
			return;
		}
	}
}

FIXTURE_SETUP(limits)
{
	self->nfiles = 0;
	self->memfd = make_memfd(256 * 1024, BUFSHARE_SEALS);
	ASSERT_LE(0, self->memfd);
}

FIXTURE_TEARDOWN(limits)
{
	const char *what;
	int err;

	while (self->nfiles)
		close_dev(self, self->files[0]);
	if (self->memfd >= 0)
		close(self->memfd);
	/* Whatever happened, the next tests get the defaults. */
	err = reload("", &what);
	EXPECT_EQ(0, err) TH_LOG("loading with defaults: %s: %s", what, strerror(-err));
}

/* Loads the driver again with @params (the teardown loads the defaults). */
#define LOAD(params) do { \
	const char *_params = (params), *_what; \
	int _err = reload(_params, &_what); \
	ASSERT_EQ(0, _err) TH_LOG("loading with '%s': %s: %s", _params, _what, \
				  strerror(-_err)); \
} while (0)

#define SMALL		"max_buffers_per_file=3 max_bytes_per_file=65536 max_props_size=64"
#define DEVICE_WIDE	"max_buffers=5 max_buffers_per_file=3"

static int reg(int dev, int memfd, __u64 off, __u64 len, __u64 *id)
{
	return bs_register(dev, memfd, off, len, APP, NULL, 0, id);
}

/* max_buffers_per_file=3: a fourth buffer in a file is ENOSPC. */
TEST_F(limits, buffers_per_file)
{
	int a, b;
	__u64 ids[3], id;

	LOAD(SMALL);
	/* The parameter in force, as sysfs shows it. */
	EXPECT_EQ(3, param("max_buffers_per_file"));
	a = open_dev(self);
	b = open_dev(self);
	ASSERT_LE(0, a);
	ASSERT_LE(0, b);
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(0, reg(a, self->memfd, i * PAGE, PAGE, &ids[i]));
	EXPECT_EQ(ENOSPC, reg(a, self->memfd, 0, PAGE, NULL));
	/* Unregistering makes room again. */
	ASSERT_EQ(0, bs_unregister(a, ids[1]));
	EXPECT_EQ(0, reg(a, self->memfd, 0, PAGE, &id));
	EXPECT_EQ(ENOSPC, reg(a, self->memfd, 0, PAGE, NULL));
	/* Another file has its own count. */
	for (int i = 0; i < 3; i++)
		EXPECT_EQ(0, reg(b, self->memfd, 0, PAGE, NULL));
	EXPECT_EQ(ENOSPC, reg(b, self->memfd, 0, PAGE, NULL));
	EXPECT_EQ(6, device_num_buffers());
	/* So does a new file once the old one is closed. */
	close_dev(self, a);
	a = open_dev(self);
	ASSERT_LE(0, a);
	for (int i = 0; i < 3; i++)
		EXPECT_EQ(0, reg(a, self->memfd, 0, PAGE, NULL));
	EXPECT_EQ(ENOSPC, reg(a, self->memfd, 0, PAGE, NULL));
}

/* max_bytes_per_file=65536: the bytes of a file's buffers add up. */
TEST_F(limits, bytes_per_file)
{
	int a, b;
	__u64 half, id;

	LOAD(SMALL);
	a = open_dev(self);
	b = open_dev(self);
	ASSERT_LE(0, a);
	ASSERT_LE(0, b);
	ASSERT_EQ(0, reg(a, self->memfd, 0, 65536, &id));
	EXPECT_EQ(ENOSPC, reg(a, self->memfd, 0, PAGE, NULL));
	/* One buffer larger than the limit. */
	EXPECT_EQ(ENOSPC, reg(b, self->memfd, 0, 65536 + PAGE, NULL));
	ASSERT_EQ(0, reg(b, self->memfd, 0, 32768, &half));
	ASSERT_EQ(0, reg(b, self->memfd, 32768, 32768, NULL));
	EXPECT_EQ(ENOSPC, reg(b, self->memfd, 0, PAGE, NULL));
	/* Unregistering gives the bytes back. */
	ASSERT_EQ(0, bs_unregister(b, half));
	EXPECT_EQ(0, reg(b, self->memfd, 0, 4 * PAGE, NULL));
	EXPECT_EQ(0, reg(b, self->memfd, 0, 4 * PAGE, NULL));
	EXPECT_EQ(ENOSPC, reg(b, self->memfd, 0, PAGE, NULL));
	ASSERT_EQ(0, bs_unregister(a, id));
	EXPECT_EQ(0, reg(a, self->memfd, 0, 65536, NULL));
}

/* A valid blob "n=xxx...\0" of @size bytes. */
static void blob(char *p, char name, size_t size)
{
	memset(p, 'x', size);
	p[0] = name;
	p[1] = '=';
	p[size - 1] = '\0';
}

/* max_props_size=64, below the device's. */
TEST_F(limits, props_size)
{
	struct bufshare_info info;
	char p64[64], p65[65], q[40], r[40];
	int a;
	__u64 id;

	LOAD(SMALL);
	a = open_dev(self);
	ASSERT_LE(0, a);
	ASSERT_EQ(0, ioctl(a, BUFSHARE_IOC_GET_INFO, &info));
	ASSERT_LT(64, info.max_props_size);
	blob(p64, 'a', sizeof(p64));
	blob(p65, 'a', sizeof(p65));
	EXPECT_EQ(E2BIG, bs_register(a, self->memfd, 0, PAGE, APP, p65, sizeof(p65), NULL));
	ASSERT_EQ(0, bs_register(a, self->memfd, 0, PAGE, APP, p64, sizeof(p64), &id));
	EXPECT_EQ(E2BIG, bs_set_props(a, id, p65, sizeof(p65), 0));
	EXPECT_EQ(0, bs_set_props(a, id, p64, sizeof(p64), 0));
	/* Merged, the sum counts. */
	blob(q, 'q', sizeof(q));
	blob(r, 'r', sizeof(r));
	ASSERT_EQ(0, bs_set_props(a, id, q, sizeof(q), 0));
	EXPECT_EQ(E2BIG, bs_set_props(a, id, r, sizeof(r), BUFSHARE_PROPS_MERGE));
	q[3] = 'y';
	EXPECT_EQ(0, bs_set_props(a, id, q, sizeof(q), BUFSHARE_PROPS_MERGE));
}

/* max_buffers=5 across files, each at most 3. */
TEST_F(limits, buffers_per_device)
{
	int a, b, c;

	LOAD(DEVICE_WIDE);
	a = open_dev(self);
	b = open_dev(self);
	ASSERT_LE(0, a);
	ASSERT_LE(0, b);
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(0, reg(a, self->memfd, 0, PAGE, NULL));
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(0, reg(b, self->memfd, 0, PAGE, NULL));
	EXPECT_EQ(5, device_num_buffers());
	EXPECT_EQ(ENOSPC, reg(b, self->memfd, 0, PAGE, NULL));
	c = open_dev(self);
	ASSERT_LE(0, c);
	EXPECT_EQ(ENOSPC, reg(c, self->memfd, 0, PAGE, NULL));
	/* Closing a file frees its share. */
	close_dev(self, a);
	EXPECT_EQ(2, device_num_buffers());
	EXPECT_EQ(0, reg(b, self->memfd, 0, PAGE, NULL));
	EXPECT_EQ(0, reg(c, self->memfd, 0, PAGE, NULL));
	EXPECT_EQ(0, reg(c, self->memfd, 0, PAGE, NULL));
	EXPECT_EQ(ENOSPC, reg(c, self->memfd, 0, PAGE, NULL));
	EXPECT_EQ(5, device_num_buffers());
}

/*
 * With the defaults (4096 buffers device-wide, 1024 per file), the
 * device's max_buffers (BUFSHARE_EXPECT_MAX_BUFFERS, below both) is the
 * limit.
 */
TEST_F_TIMEOUT(limits, device_max_buffers, 600)
{
	__u64 max = env_u64("BUFSHARE_EXPECT_MAX_BUFFERS");
	struct bufshare_info info;
	int a, b;

	/* The module was loaded with the defaults by the last teardown. */
	a = open_dev(self);
	b = open_dev(self);
	ASSERT_LE(0, a);
	ASSERT_LE(0, b);
	ASSERT_EQ(0, ioctl(a, BUFSHARE_IOC_GET_INFO, &info));
	ASSERT_EQ(max, info.max_buffers);
	ASSERT_GT(1024, max);
	ASSERT_EQ(0, info.num_buffers);
	for (__u64 i = 0; i < max; i++) {
		ASSERT_EQ(0, reg(i % 2 ? a : b, self->memfd, 0, PAGE, NULL))
			TH_LOG("buffer %llu", (unsigned long long)i);
	}
	EXPECT_EQ(max, device_num_buffers());
	EXPECT_EQ(ENOSPC, reg(a, self->memfd, 0, PAGE, NULL));
	EXPECT_EQ(ENOSPC, reg(b, self->memfd, 0, PAGE, NULL));
	close_dev(self, a);
	EXPECT_EQ(max / 2 + max % 2, device_num_buffers());
	EXPECT_EQ(0, reg(b, self->memfd, 0, PAGE, NULL));
}

/*
 * The steps of memlock_charged_per_user, as the child's exit status: 0 if
 * all went as expected, else the step that did not.
 */
static int memlock_steps(int a, int b, int m1, int m2, int m3, int dmabuf)
{
	enum { KIB = 1024 };
	struct rlimit lim = { .rlim_cur = 512 * KIB, .rlim_max = 512 * KIB };
	__u64 id1, id2;
	int status;
	pid_t pid;

	if (setrlimit(RLIMIT_MEMLOCK, &lim))
		return 10;
	/* Leaving uid 0 drops every capability, CAP_IPC_LOCK with them. */
	if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
		return 11;
	/* 256 KiB on each of two files: 512 KiB, the limit. */
	if (reg(a, m1, 0, 256 * KIB, &id1))
		return 12;
	if (reg(b, m2, 0, 256 * KIB, &id2))
		return 13;
	/* A page more is over it, on either file. */
	if (reg(b, m3, 0, PAGE, NULL) != ENOMEM || reg(a, m3, 0, PAGE, NULL) != ENOMEM)
		return 14;
	/* And from another process of the same user. */
	pid = fork();
	if (pid == 0)
		_exit(reg(a, m3, 0, PAGE, NULL) == ENOMEM ? 0 : 1);
	if (pid < 0 || waitpid(pid, &status, 0) != pid || status != 0)
		return 15;
	/* Unregistering gives the charge back. */
	if (bs_unregister(a, id1) || reg(b, m3, 0, PAGE, NULL))
		return 16;
	/*
	 * A page of a 512 KiB dma-buf is charged the whole dma-buf, which is
	 * pinned and mapped whole: over the limit while 260 KiB are charged.
	 */
	if (dmabuf >= 0 && reg(a, dmabuf, 0, PAGE, NULL) != ENOMEM)
		return 17;
	if (bs_unregister(b, id2))
		return 18;
	return 0;
}

/*
 * What a buffer pins is charged to the RLIMIT_MEMLOCK of the user who
 * registered it, across all of the user's files and processes, unless the
 * user has CAP_IPC_LOCK: ENOMEM over the limit.
 */
TEST_F(limits, memlock_charged_per_user)
{
	int a, b, m1, m2, m3, dmabuf, dmabuf_memfd = -1, status;
	pid_t pid;

	a = open_dev(self);
	b = open_dev(self);
	ASSERT_LE(0, a);
	ASSERT_LE(0, b);
	m1 = make_memfd(256 * 1024, F_SEAL_SHRINK);
	m2 = make_memfd(256 * 1024, F_SEAL_SHRINK);
	m3 = make_memfd(PAGE, F_SEAL_SHRINK);
	ASSERT_LE(0, m1);
	ASSERT_LE(0, m2);
	ASSERT_LE(0, m3);
	dmabuf = make_udmabuf(512 * 1024, &dmabuf_memfd);
	if (dmabuf < 0)
		TH_LOG("no udmabuf: the dma-buf step is left out");
	/* As root (CAP_IPC_LOCK), nothing is charged. */
	for (int i = 0; i < 4; i++)
		EXPECT_EQ(0, reg(a, m1, 0, 256 * 1024, NULL));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0)
		_exit(memlock_steps(a, b, m1, m2, m3, dmabuf));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("step %d of memlock_steps", WEXITSTATUS(status));
	close(m1);
	close(m2);
	close(m3);
	if (dmabuf >= 0) {
		close(dmabuf);
		close(dmabuf_memfd);
	}
	close_dev(self, a);
	close_dev(self, b);
}

TEST_HARNESS_MAIN
