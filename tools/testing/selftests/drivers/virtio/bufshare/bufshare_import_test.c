// SPDX-License-Identifier: GPL-2.0
/*
 * Guest to guest: a buffer one guest registers, imported by another
 * through the device's import region (VIRTIO_BUFSHARE_F_IMPORT).
 *
 * Two guests run this test at once (scripts/vm2.sh), one backend serving
 * both: the exporter (BUFSHARE_IMPORT_ROLE=exporter) registers buffers
 * under "frames", which the backend lets the importer
 * (BUFSHARE_IMPORT_ROLE=importer) import, and "secret", which it does not.
 * Each test runs in both guests; they meet through files in a directory
 * both see (BUFSHARE_IMPORT_DIR), one name per step. Without a role the
 * tests are skipped.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/bufshare.h>
#include <linux/virtio_bufshare.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"

#define PAGE		4096UL
#define WAIT_MS		30000
/* How long one guest waits for the other to reach a test. */
#define MEET_MS		240000
/* Each test's bound: the meeting, then its steps. */
#define TEST_SECONDS	400
#define APP		"frames"

static_assert(sizeof(struct bufshare_import_event) == sizeof(struct bufshare_event),
	      "import events are read as event records");

static const char *role(void)
{
	const char *r = getenv("BUFSHARE_IMPORT_ROLE");

	return r ? r : "";
}

static int exporter(void)
{
	return !strcmp(role(), "exporter");
}

static const char *meet_dir(void)
{
	const char *d = getenv("BUFSHARE_IMPORT_DIR");

	return d ? d : "/build/shared";
}

/* The exporter's name, as the host names it. */
static const char *source(void)
{
	const char *s = getenv("BUFSHARE_IMPORT_SOURCE");

	return s ? s : "a";
}

static long long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

/* Says @key=@value to the other guest, all at once (a new file renamed in place). 0 or -errno. */
static int put(const char *key, unsigned long long value)
{
	char path[256], tmp[272], text[32];
	int fd, len, err = 0;

	snprintf(path, sizeof(path), "%s/%s", meet_dir(), key);
	snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
	len = snprintf(text, sizeof(text), "%llu\n", value);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != len || fsync(fd))
		err = errno ? -errno : -EIO;
	close(fd);
	if (err)
		return err;
	return rename(tmp, path) ? -errno : 0;
}

/* Whether the other guest said @key already. */
static int said(const char *key)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", meet_dir(), key);
	return access(path, F_OK) == 0;
}

/* Waits at most @ms for the other guest to say @key; its value in *@value. 0 or -ETIMEDOUT. */
static int get(const char *key, unsigned long long *value, int ms)
{
	char path[256], text[32];
	long long end = now_ms() + ms;

	snprintf(path, sizeof(path), "%s/%s", meet_dir(), key);
	while (read_text(path, text, sizeof(text))) {
		if (now_ms() > end)
			return -ETIMEDOUT;
		usleep(20000);
	}
	if (value)
		*value = strtoull(text, NULL, 10);
	return 0;
}

/*
 * Both guests reach test @name: each says so and waits for the other (the
 * guests boot and run at their own pace). 0 or -ETIMEDOUT.
 */
static int meet(const char *name)
{
	char mine[128], theirs[128];

	snprintf(mine, sizeof(mine), "%s.%s", name, exporter() ? "exporter" : "importer");
	snprintf(theirs, sizeof(theirs), "%s.%s", name, exporter() ? "importer" : "exporter");
	if (put(mine, 1))
		return -EIO;
	return get(theirs, NULL, MEET_MS);
}

static int attach(int dev, const char *src, const char *app, __u32 *number)
{
	struct bufshare_attach a = {};

	strncpy(a.source, src, sizeof(a.source));
	strncpy(a.application, app, sizeof(a.application));
	if (ioctl(dev, BUFSHARE_IOC_ATTACH, &a))
		return errno;
	if (number)
		*number = a.attachment;
	return 0;
}

/*
 * Reads the next event of @type (others skipped), about exporter buffer
 * @buffer_id if not 0 or import @import_id if not 0, waiting at most @ms.
 * 0, or -ETIMEDOUT, or -errno.
 */
static int next_import_event(int dev, __u32 type, __u64 buffer_id, __u64 import_id,
			     struct bufshare_import_event *ev, int ms)
{
	long long end = now_ms() + ms;

	for (;;) {
		struct pollfd p = { .fd = dev, .events = POLLIN };
		struct bufshare_event rec;
		long long left = end - now_ms();
		ssize_t n;

		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, left) < 0)
			return -errno;
		if (!(p.revents & POLLIN))
			continue;
		n = read(dev, &rec, sizeof(rec));
		if (n < 0)
			return -errno;
		if (n != sizeof(rec))
			return -EIO;
		memcpy(ev, &rec, sizeof(*ev));
		if (ev->type != type)
			continue;
		if (buffer_id && ev->buffer_id != buffer_id)
			continue;
		if (import_id && ev->import_id != import_id)
			continue;
		return 0;
	}
}

/* The same for the exporter's events about its buffer @id. */
static int next_event_for(int dev, __u32 type, __u64 id, struct bufshare_event *ev, int ms)
{
	long long end = now_ms() + ms;

	for (;;) {
		struct pollfd p = { .fd = dev, .events = POLLIN };
		long long left = end - now_ms();
		ssize_t n;

		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, left) < 0)
			return -errno;
		if (!(p.revents & POLLIN))
			continue;
		n = read(dev, ev, sizeof(*ev));
		if (n < 0)
			return -errno;
		if (n != sizeof(*ev))
			return -EIO;
		if (ev->type == type && ev->id == id)
			return 0;
	}
}

/* BUFSHARE_IOC_IMPORT of @import_id: the dma-buf's fd, or -errno. */
static int import_fd(int dev, __u64 import_id, struct bufshare_import *imp)
{
	memset(imp, 0, sizeof(*imp));
	imp->import_id = import_id;
	if (ioctl(dev, BUFSHARE_IOC_IMPORT, imp))
		return -errno;
	return imp->fd;
}

/*
 * Attaches to the exporter's application, waits for the import of its
 * buffer @id (the event in *@ev), takes the import's dma-buf (in *@fd) and
 * maps @size bytes of it for reading (in *@map). 0 or -errno.
 */
static int import_and_map(int dev, __u64 id, size_t size, struct bufshare_import_event *ev,
			  int *fd, char **map)
{
	struct bufshare_import imp;
	int err = -attach(dev, source(), APP, NULL);

	if (err)
		return err;
	err = next_import_event(dev, BUFSHARE_EVENT_IMPORT_ADDED, id, 0, ev, WAIT_MS);
	if (err)
		return err;
	*fd = import_fd(dev, ev->import_id, &imp);
	if (*fd < 0)
		return *fd;
	*map = mmap(NULL, size, PROT_READ, MAP_SHARED, *fd, 0);
	if (*map == MAP_FAILED) {
		err = -errno;
		close(*fd);
		return err;
	}
	return 0;
}

/* Fills @len bytes at @p with the pattern of @seed. */
static void pattern(void *p, size_t len, uint64_t seed)
{
	fill_random(p, len, seed);
}

/* Whether @len bytes at @p hold the pattern of @seed. */
static int has_pattern(const void *p, size_t len, uint64_t seed)
{
	void *want = malloc(len);
	int same;

	if (!want)
		return 0;
	fill_random(want, len, seed);
	same = !memcmp(p, want, len);
	free(want);
	return same;
}

static const char PROPS[] = "width=64\0height=16\0label=frame";

/*
 * A sealed memfd of @size bytes, mapped at *@map, registered under @app:
 * its id in *@id. Of huge pages if @huge: a large buffer of small pages
 * lies in as many pieces of guest memory as it has pages, which the host
 * maps into the importer's region one by one, and QEMU takes only a few
 * such mappings (see Documentation/host/bufshare-import.rst).
 */
static int export_memfd(int dev, size_t size, const char *app, int huge, void **map,
			int *memfd, __u64 *id)
{
	int fd = memfd_create("bufshare-import", MFD_CLOEXEC | MFD_ALLOW_SEALING |
			      (huge ? MFD_HUGETLB : 0));

	if (fd < 0)
		return errno;
	if (ftruncate(fd, size) || fcntl(fd, F_ADD_SEALS, BUFSHARE_SEALS)) {
		close(fd);
		return errno;
	}
	*map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (*map == MAP_FAILED) {
		close(fd);
		return errno;
	}
	*memfd = fd;
	return bs_register(dev, fd, 0, size, app, PROPS, sizeof(PROPS), id);
}

/* A sealed memfd of @size bytes, mapped at *@map, registered under @app: its id in *@id. */
static int export_buffer(int dev, size_t size, const char *app, void **map, int *memfd,
			 __u64 *id)
{
	int fd = make_memfd(size, BUFSHARE_SEALS);

	if (fd < 0)
		return -fd;
	*map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (*map == MAP_FAILED) {
		close(fd);
		return errno;
	}
	*memfd = fd;
	return bs_register(dev, fd, 0, size, app, PROPS, sizeof(PROPS), id);
}

FIXTURE(imp) {
	int dev;
};

FIXTURE_SETUP(imp)
{
	struct bufshare_info info;

	self->dev = -1;
	if (strcmp(role(), "exporter") && strcmp(role(), "importer"))
		SKIP(return, "no BUFSHARE_IMPORT_ROLE: not one of two guests");
	self->dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->dev);
	ASSERT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_GET_INFO, &info));
	if (!(info.features & (1ULL << VIRTIO_BUFSHARE_F_IMPORT)))
		SKIP(return, "the device offers no imports");
}

FIXTURE_TEARDOWN(imp)
{
	if (self->dev >= 0)
		close(self->dev);
}

/*
 * The importer maps the exporter's buffer: it reads what the exporter
 * wrote, and the exporter reads what it wrote: the same memory.
 */
TEST_F_TIMEOUT(imp, same_memory_both_ways, TEST_SECONDS)
{
	size_t size = 4 * PAGE;
	unsigned long long id;

	ASSERT_EQ(0, meet("same_memory_both_ways"));

	if (exporter()) {
		void *map;
		int memfd;
		__u64 bid;

		ASSERT_EQ(0, export_buffer(self->dev, size, APP, &map, &memfd, &bid));
		pattern(map, size, 1);
		ASSERT_EQ(0, put("same.id", bid));
		ASSERT_EQ(0, get("same.written", NULL, WAIT_MS));
		EXPECT_TRUE(has_pattern((char *)map + PAGE, PAGE, 2));
		EXPECT_TRUE(has_pattern(map, PAGE, 1));
		ASSERT_EQ(0, put("same.checked", 1));
		ASSERT_EQ(0, get("same.done", NULL, WAIT_MS));
		EXPECT_EQ(0, bs_unregister_wait(self->dev, bid));
		munmap(map, size);
		close(memfd);
	} else {
		struct bufshare_import_event ev;
		struct bufshare_import imp;
		__u32 number;
		char *map;
		int fd;

		ASSERT_EQ(0, get("same.id", &id, WAIT_MS));
		ASSERT_EQ(0, attach(self->dev, source(), APP, &number));
		ASSERT_EQ(0, next_import_event(self->dev, BUFSHARE_EVENT_IMPORT_ADDED, id, 0, &ev,
					       WAIT_MS));
		EXPECT_EQ(number, ev.attachment);
		EXPECT_EQ(size, ev.size);
		fd = import_fd(self->dev, ev.import_id, &imp);
		ASSERT_LE(0, fd);
		EXPECT_EQ(size, imp.size);
		EXPECT_EQ(id, imp.buffer_id);
		EXPECT_EQ(0, imp.flags);
		/* The buffer's properties, as the exporter registered them. */
		struct bufshare_import_info info = { .import_id = ev.import_id };
		char props[256];

		ASSERT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_IMPORT_INFO, &info));
		EXPECT_EQ(sizeof(PROPS), info.props_size);
		info.props = (uintptr_t)props;
		info.props_size = sizeof(props);
		ASSERT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_IMPORT_INFO, &info));
		ASSERT_EQ(sizeof(PROPS), info.props_size);
		EXPECT_TRUE(props_same_set(PROPS, sizeof(PROPS), props, info.props_size));
		EXPECT_EQ(id, info.buffer_id);
		EXPECT_EQ(size, info.size);
		EXPECT_EQ(number, info.attachment);
		/* One dma-buf per import at a time. */
		EXPECT_EQ(-EBUSY, import_fd(self->dev, ev.import_id, &imp));
		map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		ASSERT_NE(MAP_FAILED, map);
		/* A private mapping would copy I/O memory: refused. */
		EXPECT_EQ(MAP_FAILED, mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0));
		/* Nothing past the buffer's pages. */
		EXPECT_EQ(MAP_FAILED, mmap(NULL, size + PAGE, PROT_READ, MAP_SHARED, fd, 0));
		EXPECT_TRUE(has_pattern(map, size, 1));
		pattern(map + PAGE, PAGE, 2);
		ASSERT_EQ(0, put("same.written", 1));
		ASSERT_EQ(0, get("same.checked", NULL, WAIT_MS));
		munmap(map, size);
		close(fd);
		EXPECT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_IMPORT_CLOSE, &ev.import_id));
		EXPECT_EQ(-1, ioctl(self->dev, BUFSHARE_IOC_IMPORT_CLOSE, &ev.import_id));
		EXPECT_EQ(ENOENT, errno);
		EXPECT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_DETACH, &number));
		ASSERT_EQ(0, put("same.done", 1));
	}
}

/*
 * The exporter's updates reach the importer in order, and the exporter
 * hears that its last update was released only once the importer released
 * it: an attached guest counts as a consumer.
 */
TEST_F_TIMEOUT(imp, updates_in_order_and_released, TEST_SECONDS)
{
	const unsigned int n = 20;
	size_t size = PAGE;
	unsigned long long id;

	ASSERT_EQ(0, meet("updates_in_order_and_released"));

	if (exporter()) {
		struct bufshare_event ev;
		__u64 bid, seqno = 0;
		unsigned int i;
		void *map;
		int memfd;

		ASSERT_EQ(0, export_buffer(self->dev, size, APP, &map, &memfd, &bid));
		ASSERT_EQ(0, put("upd.id", bid));
		ASSERT_EQ(0, get("upd.attached", NULL, WAIT_MS));
		for (i = 1; i <= n; i++) {
			struct bufshare_update u = { .id = bid };

			__atomic_store_n((unsigned int *)map, i, __ATOMIC_RELEASE);
			ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
			ASSERT_EQ(i, seqno);
		}
		ASSERT_EQ(0, put("upd.sent", n));
		/* RELEASED of the last update only after the importer said it was done. */
		do {
			ASSERT_EQ(0, next_event_for(self->dev, BUFSHARE_EVENT_RELEASED, bid, &ev,
						    WAIT_MS));
		} while (ev.seqno < n);
		EXPECT_EQ(n, ev.seqno);
		EXPECT_TRUE(said("upd.releasing"));
		EXPECT_EQ(0, bs_unregister_wait(self->dev, bid));
		munmap(map, size);
		close(memfd);
	} else {
		struct bufshare_import_event ev;
		unsigned long long sent = 0;
		__u64 import_id, last = 0;
		char *map;
		int fd, seen = 0;

		ASSERT_EQ(0, get("upd.id", &id, WAIT_MS));
		ASSERT_EQ(0, import_and_map(self->dev, id, size, &ev, &fd, &map));
		import_id = ev.import_id;
		ASSERT_EQ(0, put("upd.attached", 1));
		while (last < n) {
			ASSERT_EQ(0, next_import_event(self->dev, BUFSHARE_EVENT_IMPORT_UPDATED, 0,
						       import_id, &ev, WAIT_MS));
			/* In order; merged ones skip numbers, never go back. */
			ASSERT_LT(last, ev.seqno);
			ASSERT_GE(n, ev.seqno);
			/* The exporter wrote the update's number before sending it. */
			EXPECT_LE(ev.seqno, __atomic_load_n((unsigned int *)map, __ATOMIC_ACQUIRE));
			last = ev.seqno;
			seen++;
		}
		ASSERT_EQ(0, get("upd.sent", &sent, WAIT_MS));
		EXPECT_EQ(n, sent);
		TH_LOG("%d UPDATED events for %u updates", seen, n);
		/* Not an update it was given. */
		struct bufshare_import_release rel = { .import_id = import_id, .seqno = n + 1 };

		EXPECT_EQ(-1, ioctl(self->dev, BUFSHARE_IOC_IMPORT_RELEASE, &rel));
		EXPECT_EQ(EINVAL, errno);
		ASSERT_EQ(0, put("upd.releasing", 1));
		rel.seqno = n;
		EXPECT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_IMPORT_RELEASE, &rel));
		munmap(map, size);
		close(fd);
		EXPECT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_IMPORT_CLOSE, &import_id));
	}
}

/* What the host's configuration does not allow is refused, and bad names are invalid. */
TEST_F_TIMEOUT(imp, refused, TEST_SECONDS)
{
	__u32 number;

	ASSERT_EQ(0, meet("refused"));

	if (exporter()) {
		/* Nobody lets the exporter import from the importer. */
		EXPECT_EQ(EACCES, attach(self->dev, "b", APP, NULL));
		return;
	}
	EXPECT_EQ(EACCES, attach(self->dev, source(), "secret", NULL));
	EXPECT_EQ(EACCES, attach(self->dev, "nosuchguest", APP, NULL));
	EXPECT_EQ(EINVAL, attach(self->dev, "", APP, NULL));
	EXPECT_EQ(EINVAL, attach(self->dev, "bad/name", APP, NULL));
	EXPECT_EQ(EINVAL, attach(self->dev, source(), "", NULL));
	ASSERT_EQ(0, attach(self->dev, source(), APP, &number));
	/* Attached to it already. */
	EXPECT_EQ(EINVAL, attach(self->dev, source(), APP, NULL));
	EXPECT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_DETACH, &number));
	EXPECT_EQ(-1, ioctl(self->dev, BUFSHARE_IOC_DETACH, &number));
	EXPECT_EQ(ENOENT, errno);
}

/*
 * The exporter unregisters a buffer the importer maps: the importer hears
 * of it (REMOVED), and the exporter's memory is freed only after the
 * importer closed its import.
 */
TEST_F_TIMEOUT(imp, unregister_while_mapped, TEST_SECONDS)
{
	const int hold_ms = 2000;
	size_t size = 2 * PAGE;
	unsigned long long id;

	ASSERT_EQ(0, meet("unregister_while_mapped"));

	if (exporter()) {
		long long t0, took;
		void *map;
		int memfd;
		__u64 bid;

		ASSERT_EQ(0, export_buffer(self->dev, size, APP, &map, &memfd, &bid));
		ASSERT_EQ(0, put("unreg.id", bid));
		ASSERT_EQ(0, get("unreg.mapped", NULL, WAIT_MS));
		t0 = now_ms();
		EXPECT_EQ(0, bs_unregister_wait(self->dev, bid));
		took = now_ms() - t0;
		TH_LOG("FREED %lld ms after UNREGISTER (importer held it %d ms)", took, hold_ms);
		EXPECT_TRUE(said("unreg.closing"));
		EXPECT_LE(hold_ms, took);
		munmap(map, size);
		close(memfd);
	} else {
		struct bufshare_import_event ev;
		struct bufshare_import imp;
		__u64 import_id;
		char *map;
		int fd;

		ASSERT_EQ(0, get("unreg.id", &id, WAIT_MS));
		ASSERT_EQ(0, import_and_map(self->dev, id, size, &ev, &fd, &map));
		import_id = ev.import_id;
		ASSERT_EQ(0, put("unreg.mapped", 1));
		ASSERT_EQ(0, next_import_event(self->dev, BUFSHARE_EVENT_IMPORT_REMOVED, 0,
					       import_id, &ev, WAIT_MS));
		/* Removed: no new dma-buf of it. */
		close(fd);
		EXPECT_EQ(-ENODEV, import_fd(self->dev, import_id, &imp));
		usleep(hold_ms * 1000);
		/* Still mapped, and readable, until closed. */
		EXPECT_EQ(map[0], map[0]);
		ASSERT_EQ(0, put("unreg.closing", 1));
		munmap(map, size);
		/* The last reference gone, the driver closed the import. */
		EXPECT_EQ(-1, ioctl(self->dev, BUFSHARE_IOC_IMPORT_CLOSE, &import_id));
		EXPECT_EQ(ENOENT, errno);
	}
}

/* The exporting process is killed: the importer loses the buffer, with REMOVED. */
TEST_F_TIMEOUT(imp, exporter_killed, TEST_SECONDS)
{
	unsigned long long id;

	ASSERT_EQ(0, meet("exporter_killed"));

	if (exporter()) {
		int status;
		pid_t pid = fork();

		ASSERT_LE(0, pid);
		if (pid == 0) {
			int dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
			void *map;
			int memfd;
			__u64 bid;

			if (dev < 0 || export_buffer(dev, PAGE, APP, &map, &memfd, &bid) ||
			    put("ekill.id", bid))
				_exit(1);
			pause();
			_exit(0);
		}
		EXPECT_EQ(0, get("ekill.mapped", NULL, WAIT_MS));
		ASSERT_EQ(0, put("ekill.killing", 1));
		kill(pid, SIGKILL);
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
		EXPECT_TRUE(WIFSIGNALED(status));
		EXPECT_EQ(0, get("ekill.done", NULL, WAIT_MS));
	} else {
		struct bufshare_import_event ev;
		__u64 import_id;
		char *map;
		int fd;

		ASSERT_EQ(0, get("ekill.id", &id, WAIT_MS));
		ASSERT_EQ(0, import_and_map(self->dev, id, PAGE, &ev, &fd, &map));
		import_id = ev.import_id;
		ASSERT_EQ(0, put("ekill.mapped", 1));
		EXPECT_EQ(0, next_import_event(self->dev, BUFSHARE_EVENT_IMPORT_REMOVED, 0,
					       import_id, &ev, WAIT_MS));
		/* The REMOVED came from the kill, not from before it. */
		EXPECT_TRUE(said("ekill.killing"));
		munmap(map, PAGE);
		close(fd);
		ASSERT_EQ(0, put("ekill.done", 1));
	}
}

/*
 * The importing process is killed while it maps the buffer: its file and
 * dma-buf go, the driver closes the import, and the exporter's FREED
 * follows.
 */
TEST_F_TIMEOUT(imp, importer_killed, TEST_SECONDS)
{
	unsigned long long id;

	ASSERT_EQ(0, meet("importer_killed"));

	if (exporter()) {
		long long t0, took;
		void *map;
		int memfd;
		__u64 bid;

		ASSERT_EQ(0, export_buffer(self->dev, PAGE, APP, &map, &memfd, &bid));
		ASSERT_EQ(0, put("ikill.id", bid));
		ASSERT_EQ(0, get("ikill.mapped", NULL, WAIT_MS));
		ASSERT_EQ(0, put("ikill.unregistering", 1));
		t0 = now_ms();
		EXPECT_EQ(0, bs_unregister_wait(self->dev, bid));
		took = now_ms() - t0;
		TH_LOG("FREED %lld ms after UNREGISTER", took);
		EXPECT_TRUE(said("ikill.killing"));
		munmap(map, PAGE);
		close(memfd);
	} else {
		int status, ready[2];
		char c;
		pid_t pid;

		ASSERT_EQ(0, get("ikill.id", &id, WAIT_MS));
		ASSERT_EQ(0, pipe(ready));
		pid = fork();
		ASSERT_LE(0, pid);
		if (pid == 0) {
			int dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
			struct bufshare_import_event ev;
			struct bufshare_import imp;
			int fd;

			if (dev < 0 || attach(dev, source(), APP, NULL) ||
			    next_import_event(dev, BUFSHARE_EVENT_IMPORT_ADDED, id, 0, &ev,
					      WAIT_MS))
				_exit(1);
			fd = import_fd(dev, ev.import_id, &imp);
			if (fd < 0 || mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED)
				_exit(1);
			if (write(ready[1], "r", 1) != 1)
				_exit(1);
			pause();
			_exit(0);
		}
		close(ready[1]);
		ASSERT_EQ(1, read(ready[0], &c, 1));
		close(ready[0]);
		ASSERT_EQ(0, put("ikill.mapped", 1));
		EXPECT_EQ(0, get("ikill.unregistering", NULL, WAIT_MS));
		usleep(500 * 1000);
		ASSERT_EQ(0, put("ikill.killing", 1));
		kill(pid, SIGKILL);
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
		EXPECT_TRUE(WIFSIGNALED(status));
	}
}

/*
 * The import region has room for one of the exporter's two buffers (the
 * backend's region is 16 MiB, see scripts/vm2.sh): the importer gets one
 * ADDED and one NO_SPACE.
 */
TEST_F_TIMEOUT(imp, region_full, TEST_SECONDS)
{
	const size_t size = 12 << 20;
	unsigned long long id1, id2;

	ASSERT_EQ(0, meet("region_full"));

	if (exporter()) {
		void *map1, *map2;
		int memfd1, memfd2;
		__u64 b1, b2;

		/* 2 MiB pages for both: 12 of them, and 4 spare. */
		ASSERT_EQ(0, write_file("/proc/sys/vm/nr_hugepages", "16"));
		ASSERT_EQ(0, export_memfd(self->dev, size, "big", 1, &map1, &memfd1, &b1));
		ASSERT_EQ(0, export_memfd(self->dev, size, "big", 1, &map2, &memfd2, &b2));
		pattern(map1, size, 11);
		pattern(map2, size, 12);
		ASSERT_EQ(0, put("full.id1", b1));
		ASSERT_EQ(0, put("full.id2", b2));
		EXPECT_EQ(0, get("full.done", NULL, WAIT_MS));
		EXPECT_EQ(0, bs_unregister_wait(self->dev, b1));
		EXPECT_EQ(0, bs_unregister_wait(self->dev, b2));
		munmap(map1, size);
		munmap(map2, size);
		close(memfd1);
		close(memfd2);
		EXPECT_EQ(0, write_file("/proc/sys/vm/nr_hugepages", "0"));
	} else {
		struct bufshare_import_event ev, added = {}, nospace = {};
		long long end;
		__u32 number;

		ASSERT_EQ(0, get("full.id1", &id1, WAIT_MS));
		ASSERT_EQ(0, get("full.id2", &id2, WAIT_MS));
		ASSERT_EQ(0, attach(self->dev, source(), "big", &number));
		/* In either order. */
		end = now_ms() + WAIT_MS;
		while (!added.type || !nospace.type) {
			struct bufshare_event rec;
			struct pollfd p = { .fd = self->dev, .events = POLLIN };

			ASSERT_LT(now_ms(), end);
			ASSERT_LE(0, poll(&p, 1, 1000));
			if (!(p.revents & POLLIN))
				continue;
			ASSERT_EQ(sizeof(rec), read(self->dev, &rec, sizeof(rec)));
			memcpy(&ev, &rec, sizeof(ev));
			if (ev.type == BUFSHARE_EVENT_IMPORT_ADDED && !added.type)
				added = ev;
			else if (ev.type == BUFSHARE_EVENT_IMPORT_NO_SPACE && !nospace.type)
				nospace = ev;
			else
				ASSERT_EQ(0, ev.type) TH_LOG("unexpected event type %u", ev.type);
		}
		EXPECT_EQ(number, nospace.attachment);
		EXPECT_EQ(size, nospace.size);
		EXPECT_EQ(number, added.attachment);
		EXPECT_EQ(size, added.size);
		EXPECT_TRUE((nospace.buffer_id == id1 && added.buffer_id == id2) ||
			    (nospace.buffer_id == id2 && added.buffer_id == id1));
		/* The one imported is the exporter's memory, all 12 MiB of it. */
		struct bufshare_import imp;
		int fd = import_fd(self->dev, added.import_id, &imp);
		void *map;

		ASSERT_LE(0, fd);
		map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		ASSERT_NE(MAP_FAILED, map);
		EXPECT_TRUE(has_pattern(map, size, added.buffer_id == id1 ? 11 : 12));
		munmap(map, size);
		close(fd);
		EXPECT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_IMPORT_CLOSE, &added.import_id));
		EXPECT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_DETACH, &number));
		ASSERT_EQ(0, put("full.done", 1));
	}
}

/*
 * Makes this guest's device lose its buffers, as a restarted backend does
 * (its fault file, see scripts/vm2.sh), and has it notice: 0 or -errno.
 */
static int lose_buffers(int dev)
{
	static unsigned int count;
	struct bufshare_info info;
	char mode[64];
	int err;

	snprintf(mode, sizeof(mode), "lose-buffers imp%d-%u-%llx", (int)getpid(), ++count,
		 (unsigned long long)(fresh_seed() & 0xffffff));
	err = set_fault(mode);
	if (err)
		return err;
	return ioctl(dev, BUFSHARE_IOC_GET_INFO, &info) ? -errno : 0;
}

/*
 * The exporter's device loses its buffers: the importer's import goes
 * (REMOVED), and when the exporter's driver registers the buffer again it
 * is imported again, under a new import, the same memory.
 */
TEST_F_TIMEOUT(imp, exporter_loses_buffers, TEST_SECONDS)
{
	size_t size = 2 * PAGE;
	unsigned long long id;

	ASSERT_EQ(0, meet("exporter_loses_buffers"));

	if (exporter()) {
		void *map;
		int memfd;
		__u64 bid;

		ASSERT_EQ(0, export_buffer(self->dev, size, APP, &map, &memfd, &bid));
		pattern(map, size, 21);
		ASSERT_EQ(0, put("elose.id", bid));
		ASSERT_EQ(0, get("elose.mapped", NULL, WAIT_MS));
		ASSERT_EQ(0, lose_buffers(self->dev));
		/* The buffer is back, under its id, once the next command went. */
		struct bufshare_buffer_info info;

		EXPECT_EQ(0, bs_buffer_info(self->dev, bid, &info, NULL, 0));
		EXPECT_EQ(0, get("elose.done", NULL, WAIT_MS));
		EXPECT_EQ(0, bs_unregister_wait(self->dev, bid));
		munmap(map, size);
		close(memfd);
	} else {
		struct bufshare_import_event ev;
		struct bufshare_import imp;
		__u64 first, second;
		char *map;
		int fd;

		ASSERT_EQ(0, get("elose.id", &id, WAIT_MS));
		ASSERT_EQ(0, attach(self->dev, source(), APP, NULL));
		ASSERT_EQ(0, next_import_event(self->dev, BUFSHARE_EVENT_IMPORT_ADDED, id, 0, &ev,
					       WAIT_MS));
		first = ev.import_id;
		ASSERT_EQ(0, put("elose.mapped", 1));
		ASSERT_EQ(0, next_import_event(self->dev, BUFSHARE_EVENT_IMPORT_REMOVED, 0, first,
					       &ev, WAIT_MS));
		ASSERT_EQ(0, next_import_event(self->dev, BUFSHARE_EVENT_IMPORT_ADDED, id, 0, &ev,
					       WAIT_MS));
		second = ev.import_id;
		EXPECT_NE(first, second);
		fd = import_fd(self->dev, second, &imp);
		ASSERT_LE(0, fd);
		map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		ASSERT_NE(MAP_FAILED, map);
		EXPECT_TRUE(has_pattern(map, size, 21));
		munmap(map, size);
		close(fd);
		EXPECT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_IMPORT_CLOSE, &second));
		ASSERT_EQ(0, put("elose.done", 1));
	}
}

static sigjmp_buf fault_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(fault_jmp, 1);
}

/* Whether reading @p raises SIGBUS. */
static int read_faults(const char *p)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	int faulted = 0;

	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(fault_jmp, 1))
		faulted = 1;
	else
		(void)__atomic_load_n(p, __ATOMIC_RELAXED);
	sigaction(SIGBUS, &old, NULL);
	return faulted;
}

/*
 * The importer's device loses its buffers while it maps an import: its
 * attachment ends (DETACHED), its dma-buf is revoked (the mapping faults),
 * and the exporter's FREED comes, the importer's hold on the memory gone.
 */
TEST_F_TIMEOUT(imp, importer_loses_buffers, TEST_SECONDS)
{
	size_t size = PAGE;
	unsigned long long id;

	ASSERT_EQ(0, meet("importer_loses_buffers"));

	if (exporter()) {
		void *map;
		int memfd;
		__u64 bid;

		ASSERT_EQ(0, export_buffer(self->dev, size, APP, &map, &memfd, &bid));
		ASSERT_EQ(0, put("ilose.id", bid));
		ASSERT_EQ(0, get("ilose.lost", NULL, WAIT_MS));
		EXPECT_EQ(0, bs_unregister_wait(self->dev, bid));
		munmap(map, size);
		close(memfd);
		ASSERT_EQ(0, put("ilose.freed", 1));
	} else {
		struct bufshare_import_event ev;
		__u32 number;
		char *map;
		int fd;

		ASSERT_EQ(0, get("ilose.id", &id, WAIT_MS));
		ASSERT_EQ(0, import_and_map(self->dev, id, size, &ev, &fd, &map));
		number = ev.attachment;
		EXPECT_FALSE(read_faults(map));
		ASSERT_EQ(0, lose_buffers(self->dev));
		ASSERT_EQ(0, next_import_event(self->dev, BUFSHARE_EVENT_IMPORT_DETACHED, 0, 0, &ev,
					       WAIT_MS));
		EXPECT_EQ(number, ev.attachment);
		/* Revoked: no longer the exporter's memory to read. */
		EXPECT_TRUE(read_faults(map));
		EXPECT_EQ(MAP_FAILED, mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0));
		ASSERT_EQ(0, put("ilose.lost", 1));
		EXPECT_EQ(0, get("ilose.freed", NULL, WAIT_MS));
		munmap(map, size);
		close(fd);
	}
}

/* The value of "imports:\t" in the fdinfo of @dev, or -1. */
static long fdinfo_imports(int dev)
{
	char buf[8192], *p;

	if (read_fdinfo(dev, buf, sizeof(buf)))
		return -1;
	p = strstr(buf, "\nimports:\t");
	return p ? strtol(p + strlen("\nimports:\t"), NULL, 10) : -1;
}

/*
 * A hostile device's import events (the backend's bogus-events fault):
 * IMPORT_ADDED for an attachment never made, malformed, beyond the region,
 * not page-aligned, over a live import and under its id; IMPORT_UPDATED
 * that does not move on or of an import never made; REMOVED and NO_SPACE
 * of what never was. None reaches the application, and the live import
 * stays whole: its mapping, its dma-buf, its properties.
 */
TEST_F_TIMEOUT(imp, hostile_import_events, TEST_SECONDS)
{
	size_t size = 2 * PAGE;
	unsigned long long id;

	ASSERT_EQ(0, meet("hostile_import_events"));

	if (exporter()) {
		void *map;
		int memfd;
		__u64 bid;

		ASSERT_EQ(0, export_buffer(self->dev, size, APP, &map, &memfd, &bid));
		pattern(map, size, 31);
		ASSERT_EQ(0, put("hostile.id", bid));
		EXPECT_EQ(0, get("hostile.done", NULL, WAIT_MS));
		EXPECT_EQ(0, bs_unregister_wait(self->dev, bid));
		munmap(map, size);
		close(memfd);
	} else {
		struct bufshare_import_info info = {};
		struct bufshare_import_event ev;
		struct bufshare_info dinfo;
		char mode[64], line[512];
		int fd, kmsg, n = 0;
		long long end;
		char *map;

		ASSERT_EQ(0, get("hostile.id", &id, WAIT_MS));
		ASSERT_EQ(0, import_and_map(self->dev, id, size, &ev, &fd, &map));
		kmsg = kmsg_open();
		ASSERT_LE(0, kmsg);
		snprintf(mode, sizeof(mode), "bogus-events imp%d-%llx", (int)getpid(),
			 (unsigned long long)(fresh_seed() & 0xffffff));
		ASSERT_EQ(0, set_fault(mode));
		ASSERT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_GET_INFO, &dinfo));
		/* Nothing of them reaches the reader. */
		end = now_ms() + 3000;
		while (now_ms() < end) {
			struct pollfd p = { .fd = self->dev, .events = POLLIN };
			struct bufshare_event rec;

			if (poll(&p, 1, 200) <= 0 || !(p.revents & POLLIN))
				continue;
			ASSERT_EQ(sizeof(rec), read(self->dev, &rec, sizeof(rec)));
			TH_LOG("event of type %u reached the reader", rec.type);
			n++;
		}
		EXPECT_EQ(0, n);
		EXPECT_EQ(1, kmsg_find(kmsg, "ignored IMPORT_ADDED of import", line, sizeof(line)));
		close(kmsg);
		/* The live import is whole. */
		EXPECT_TRUE(has_pattern(map, size, 31));
		EXPECT_EQ(1, fdinfo_imports(self->dev));
		info.import_id = ev.import_id;
		EXPECT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_IMPORT_INFO, &info));
		EXPECT_EQ(id, info.buffer_id);
		munmap(map, size);
		close(fd);
		EXPECT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_IMPORT_CLOSE, &ev.import_id));
		ASSERT_EQ(0, put("hostile.done", 1));
	}
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

/*
 * UPDATE until RELEASED is read by the exporter, @n times, for buffer @bid;
 * the times in @lat, sorted. 0 or -errno.
 */
static int release_times(int dev, __u64 bid, unsigned int n, long long *lat)
{
	struct bufshare_event ev;
	__u64 seqno = 0;
	unsigned int i;
	int err;

	for (i = 0; i < n; i++) {
		struct bufshare_update u = { .id = bid };
		long long t0 = now_ms();

		err = bs_update(dev, &u, &seqno);
		if (err)
			return -err;
		do {
			err = next_event_for(dev, BUFSHARE_EVENT_RELEASED, bid, &ev, WAIT_MS);
			if (err)
				return err;
		} while (ev.seqno < seqno);
		lat[i] = now_ms() - t0;
	}
	qsort(lat, n, sizeof(lat[0]), cmp_ll);
	return 0;
}

/*
 * The round trip through an importing guest, one update at a time: the
 * exporter's UPDATE, the importer's IMPORT_UPDATED event and its RELEASE,
 * the exporter's RELEASED event; beside it, in the same run, the same with
 * no consumer (the device releases at once). Printed, not judged (a
 * benchmark's business): the round trip through a host consumer is in the
 * events test (round_trip_timings).
 */
TEST_F_TIMEOUT(imp, release_round_trip, TEST_SECONDS)
{
	const unsigned int n = 40;
	unsigned long long id;

	ASSERT_EQ(0, meet("release_round_trip"));

	if (exporter()) {
		long long lat[n], alone[n];
		void *map, *map2;
		int memfd, memfd2;
		__u64 bid, solo;

		/* Nobody imports "solo": its updates are released at once. */
		ASSERT_EQ(0, export_buffer(self->dev, PAGE, "solo", &map2, &memfd2, &solo));
		ASSERT_EQ(0, release_times(self->dev, solo, n, alone));
		ASSERT_EQ(0, export_buffer(self->dev, PAGE, APP, &map, &memfd, &bid));
		ASSERT_EQ(0, put("rtt.id", bid));
		ASSERT_EQ(0, get("rtt.ready", NULL, WAIT_MS));
		ASSERT_EQ(0, release_times(self->dev, bid, n, lat));
		TH_LOG("UPDATE to RELEASED through the importing guest: p50 %lld ms, p90 %lld ms",
		       lat[n / 2], lat[n * 9 / 10]);
		TH_LOG("and without a consumer: p50 %lld ms, p90 %lld ms (%u updates each)",
		       alone[n / 2], alone[n * 9 / 10], n);
		EXPECT_EQ(0, bs_unregister_wait(self->dev, bid));
		EXPECT_EQ(0, bs_unregister_wait(self->dev, solo));
		munmap(map, PAGE);
		munmap(map2, PAGE);
		close(memfd);
		close(memfd2);
	} else {
		struct bufshare_import_event ev;
		__u64 import_id;

		ASSERT_EQ(0, get("rtt.id", &id, WAIT_MS));
		ASSERT_EQ(0, attach(self->dev, source(), APP, NULL));
		ASSERT_EQ(0, next_import_event(self->dev, BUFSHARE_EVENT_IMPORT_ADDED, id, 0, &ev,
					       WAIT_MS));
		import_id = ev.import_id;
		ASSERT_EQ(0, put("rtt.ready", 1));
		do {
			struct bufshare_import_release rel = { .import_id = import_id };

			ASSERT_EQ(0, next_import_event(self->dev, BUFSHARE_EVENT_IMPORT_UPDATED, 0,
						       import_id, &ev, WAIT_MS));
			rel.seqno = ev.seqno;
			ASSERT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_IMPORT_RELEASE, &rel));
		} while (ev.seqno < n);
		ASSERT_EQ(0, next_import_event(self->dev, BUFSHARE_EVENT_IMPORT_REMOVED, 0,
					       import_id, &ev, WAIT_MS));
	}
}

TEST_HARNESS_MAIN
