// SPDX-License-Identifier: GPL-2.0
/*
 * The driver's limits, set by module parameters at load: the test loads
 * the module again (BUFSHARE_MODULE) with small ones, checks ENOSPC and
 * E2BIG at the limits, and loads it back with the defaults.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
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

/* The value of module parameter @name, as sysfs shows it; -1 if it does not. */
static long long param(const char *name)
{
	char path[128], buf[64];

	snprintf(path, sizeof(path), "/sys/module/virtio_bufshare/parameters/%s", name);
	if (read_text(path, buf, sizeof(buf)) || !buf[0])
		return -1;
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
	err = reload_module("", &what);
	EXPECT_EQ(0, err) TH_LOG("loading with defaults: %s: %s", what, strerror(-err));
}

/* Loads the driver again with @params (the teardown loads the defaults). */
#define LOAD(params) do { \
	const char *_params = (params), *_what; \
	int _err = reload_module(_params, &_what); \
	ASSERT_EQ(0, _err) TH_LOG("loading with '%s': %s: %s", _params, _what, \
				  strerror(-_err)); \
} while (0)

#define SMALL		"max_buffers_per_file=3 max_bytes_per_file=65536 max_props_size=64"
#define DEVICE_WIDE	"max_buffers=5 max_buffers_per_file=3"

static int reg(int dev, int memfd, __u64 off, __u64 len, __u64 *id)
{
	return bs_register(dev, memfd, off, len, APP, NULL, 0, id);
}

/*
 * As reg(), but while it fails with ENOSPC tries again for up to 10 s: the
 * buffers of a closed file count until the host let go of them (on a
 * device with events, FREED comes after the close).
 */
static int reg_soon(int dev, int memfd, __u64 off, __u64 len, __u64 *id)
{
	int err = ENOSPC;

	for (int i = 0; i < 1000 && err == ENOSPC; i++) {
		err = reg(dev, memfd, off, len, id);
		if (err == ENOSPC)
			usleep(10000);
	}
	return err;
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
	/* Checked before the file is looked at: not EBADF. */
	EXPECT_EQ(ENOSPC, reg(a, -1, 0, PAGE, NULL));
	/* Unregistering makes room again, once the host let go. */
	ASSERT_EQ(0, bs_unregister_wait(a, ids[1]));
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
		EXPECT_EQ(0, reg_soon(a, self->memfd, 0, PAGE, NULL));
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
	EXPECT_EQ(ENOSPC, reg(a, -1, 0, PAGE, NULL));
	/* One buffer larger than the limit. */
	EXPECT_EQ(ENOSPC, reg(b, self->memfd, 0, 65536 + PAGE, NULL));
	ASSERT_EQ(0, reg(b, self->memfd, 0, 32768, &half));
	ASSERT_EQ(0, reg(b, self->memfd, 32768, 32768, NULL));
	EXPECT_EQ(ENOSPC, reg(b, self->memfd, 0, PAGE, NULL));
	/* Unregistering gives the bytes back, once the host let go. */
	ASSERT_EQ(0, bs_unregister_wait(b, half));
	EXPECT_EQ(0, reg(b, self->memfd, 0, 4 * PAGE, NULL));
	EXPECT_EQ(0, reg(b, self->memfd, 0, 4 * PAGE, NULL));
	EXPECT_EQ(ENOSPC, reg(b, self->memfd, 0, PAGE, NULL));
	ASSERT_EQ(0, bs_unregister_wait(a, id));
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
	EXPECT_EQ(ENOSPC, reg(c, -1, 0, PAGE, NULL));
	/* Closing a file frees its share, once the host let go. */
	close_dev(self, a);
	EXPECT_EQ(2, device_num_buffers());
	EXPECT_EQ(0, reg_soon(b, self->memfd, 0, PAGE, NULL));
	EXPECT_EQ(0, reg_soon(c, self->memfd, 0, PAGE, NULL));
	EXPECT_EQ(0, reg_soon(c, self->memfd, 0, PAGE, NULL));
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
	/* Unregistering gives the charge back, once the host let go. */
	if (bs_unregister_wait(a, id1) || reg(b, m3, 0, PAGE, NULL))
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

/*
 * Application names bound to users and groups by the administrator
 * (BUFSHARE_IOC_BIND_APPLICATION): only they may register under them.
 */
static int bind_app(int dev, const char *app, __u32 flags, __u32 uid, __u32 gid)
{
	struct bufshare_app_binding b = { .flags = flags, .uid = uid, .gid = gid };

	strncpy(b.application, app, sizeof(b.application) - 1);
	return ioctl(dev, BUFSHARE_IOC_BIND_APPLICATION, &b) ? errno : 0;
}

static int get_binding(int dev, const char *app, struct bufshare_app_binding *b)
{
	memset(b, 0, sizeof(*b));
	strncpy(b->application, app, sizeof(b->application) - 1);
	return ioctl(dev, BUFSHARE_IOC_GET_BINDING, b) ? errno : 0;
}

/*
 * Runs @what (REGISTER of a page under @app, or BIND of @app) on @dev,
 * which root opened, in a child running as user @uid with the one
 * supplementary group @gid (none if 0). Returns the errno (0 on success),
 * or -1 if the child could not run as asked.
 */
enum as_what { AS_REGISTER, AS_BIND };

static int as_user(int dev, enum as_what what, const char *app, uid_t uid, gid_t gid)
{
	int status, m, ret;
	pid_t pid;
	__u64 id;

	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		gid_t groups[1] = { gid };

		if (setgroups(gid ? 1 : 0, groups) || setresgid(65534, 65534, 65534) ||
		    setresuid(uid, uid, uid))
			_exit(255);
		if (what == AS_BIND)
			_exit(bind_app(dev, app, BUFSHARE_BIND_UID, uid, 0));
		m = make_memfd(PAGE, BUFSHARE_SEALS);
		if (m < 0)
			_exit(255);
		ret = bs_register(dev, m, 0, PAGE, app, NULL, 0, &id);
		if (!ret)
			bs_unregister(dev, id);
		_exit(ret);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) == 255)
		return -1;
	return WEXITSTATUS(status);
}

FIXTURE(apps) {
	int dev;
};

FIXTURE_SETUP(apps)
{
	self->dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->dev) TH_LOG("open %s: %s", BUFSHARE_DEV, strerror(errno));
}

FIXTURE_TEARDOWN(apps)
{
	bind_app(self->dev, "apps-uid", 0, 0, 0);
	bind_app(self->dev, "apps-gid", 0, 0, 0);
	bind_app(self->dev, "apps-root", 0, 0, 0);
	close(self->dev);
}

TEST_F(apps, bound_to_a_user)
{
	struct bufshare_app_binding b;

	/* Unbound: anybody may. */
	EXPECT_EQ(0, as_user(self->dev, AS_REGISTER, "apps-uid", 1001, 0));
	ASSERT_EQ(0, bind_app(self->dev, "apps-uid", BUFSHARE_BIND_UID, 1000, 0));
	ASSERT_EQ(0, get_binding(self->dev, "apps-uid", &b));
	EXPECT_EQ(BUFSHARE_BIND_UID, b.flags);
	EXPECT_EQ(1000, b.uid);
	/* Bound: its user may, nobody else, root included. */
	EXPECT_EQ(0, as_user(self->dev, AS_REGISTER, "apps-uid", 1000, 0));
	EXPECT_EQ(EACCES, as_user(self->dev, AS_REGISTER, "apps-uid", 1001, 0));
	EXPECT_EQ(EACCES, as_user(self->dev, AS_REGISTER, "apps-uid", 0, 0));
	/* Other names stay open. */
	EXPECT_EQ(0, as_user(self->dev, AS_REGISTER, "apps-other", 1001, 0));
	/* Unbound again. */
	ASSERT_EQ(0, bind_app(self->dev, "apps-uid", 0, 0, 0));
	EXPECT_EQ(ENOENT, get_binding(self->dev, "apps-uid", &b));
	EXPECT_EQ(0, as_user(self->dev, AS_REGISTER, "apps-uid", 1001, 0));
}

TEST_F(apps, bound_to_a_group)
{
	struct bufshare_app_binding b;

	ASSERT_EQ(0, bind_app(self->dev, "apps-gid", BUFSHARE_BIND_GID, 0, 2000));
	ASSERT_EQ(0, get_binding(self->dev, "apps-gid", &b));
	EXPECT_EQ(BUFSHARE_BIND_GID, b.flags);
	EXPECT_EQ(2000, b.gid);
	EXPECT_EQ(0, as_user(self->dev, AS_REGISTER, "apps-gid", 1001, 2000));
	EXPECT_EQ(EACCES, as_user(self->dev, AS_REGISTER, "apps-gid", 1001, 2001));
	EXPECT_EQ(EACCES, as_user(self->dev, AS_REGISTER, "apps-gid", 1001, 0));
	/* A user or a group: either may. */
	ASSERT_EQ(0, bind_app(self->dev, "apps-gid", BUFSHARE_BIND_UID | BUFSHARE_BIND_GID,
			      1002, 2000));
	EXPECT_EQ(0, as_user(self->dev, AS_REGISTER, "apps-gid", 1002, 0));
	EXPECT_EQ(0, as_user(self->dev, AS_REGISTER, "apps-gid", 1001, 2000));
	EXPECT_EQ(EACCES, as_user(self->dev, AS_REGISTER, "apps-gid", 1001, 0));
}

TEST_F(apps, binding_is_for_the_administrator)
{
	struct bufshare_app_binding b;

	EXPECT_EQ(EPERM, as_user(self->dev, AS_BIND, "apps-uid", 1000, 0));
	EXPECT_EQ(ENOENT, get_binding(self->dev, "apps-uid", &b));
}

TEST_F(apps, bad_bindings_are_refused)
{
	struct bufshare_app_binding b = { .flags = BUFSHARE_BIND_UID };

	EXPECT_EQ(EINVAL, bind_app(self->dev, "bad name", BUFSHARE_BIND_UID, 1000, 0));
	EXPECT_EQ(EINVAL, bind_app(self->dev, "", BUFSHARE_BIND_UID, 1000, 0));
	EXPECT_EQ(EINVAL, bind_app(self->dev, "apps-uid", 1 << 7, 1000, 0));
	/* (uid_t)-1 names nobody. */
	EXPECT_EQ(EINVAL, bind_app(self->dev, "apps-uid", BUFSHARE_BIND_UID, -1, 0));
	b.reserved = 1;
	strcpy(b.application, "apps-uid");
	EXPECT_NE(0, ioctl(self->dev, BUFSHARE_IOC_BIND_APPLICATION, &b));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(ENOENT, get_binding(self->dev, "apps-uid", &b));
}

/* With bound_applications_only, names nobody bound are closed. */
TEST(apps_bound_only)
{
	char text[16];
	const char *what;
	int dev, err;

	err = reload_module("bound_applications_only=1", &what);
	ASSERT_EQ(0, err) TH_LOG("%s: %s", what, strerror(-err));
	/* The parameters in force are shown, read-only. */
	ASSERT_EQ(0, read_text("/sys/module/virtio_bufshare/parameters/bound_applications_only",
			       text, sizeof(text)));
	EXPECT_STREQ("Y\n", text);
	EXPECT_EQ(4096, param("max_buffers"));
	EXPECT_NE(0, write_file("/sys/module/virtio_bufshare/parameters/max_buffers", "1"));
	dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, dev);
	EXPECT_EQ(EACCES, as_user(dev, AS_REGISTER, "apps-root", 0, 0));
	ASSERT_EQ(0, bind_app(dev, "apps-root", BUFSHARE_BIND_UID, 0, 0));
	EXPECT_EQ(0, as_user(dev, AS_REGISTER, "apps-root", 0, 0));
	EXPECT_EQ(EACCES, as_user(dev, AS_REGISTER, "apps-root", 1000, 0));
	close(dev);
	err = reload_module("", &what);
	ASSERT_EQ(0, err) TH_LOG("%s: %s", what, strerror(-err));
}

TEST_HARNESS_MAIN
