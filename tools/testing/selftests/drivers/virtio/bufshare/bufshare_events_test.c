// SPDX-License-Identifier: GPL-2.0
/*
 * Events: what the host says about the buffers of an open file, read()
 * from /dev/bufshare. RELEASED after an update the host is done with,
 * FREED once no host party holds an unregistered buffer's memory,
 * CONSUMERS as host consumers come and go, LOST when the device lost its
 * buffers, OVERFLOW when the reader fell behind. Consumers are real
 * watchers on the host, started through the relay.
 *
 * Without VIRTIO_BUFSHARE_F_EVENTS only the interface checks run. The
 * no_events_device tests run against a second device whose backend offers
 * no events (BUFSHARE_NO_EVENTS_DEV, see scripts/guest-tests.sh), and are
 * skipped without one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/bufshare.h>
#include <linux/virtio_bufshare.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"
#include "relay.h"

#define PAGE		4096UL
#define WAIT_MS		20000

static int has_events(int dev)
{
	struct bufshare_info info;

	if (ioctl(dev, BUFSHARE_IOC_GET_INFO, &info))
		return 0;
	return !!(info.features & (1ULL << VIRTIO_BUFSHARE_F_EVENTS));
}

static long long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

/*
 * Reads the next event of @type (others are skipped, and counted in
 * *@skipped if not NULL), waiting at most @ms. 0, or -ETIMEDOUT, or -errno.
 */
static int next_event(int dev, __u32 type, struct bufshare_event *ev, int ms, int *skipped)
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
		if (ev->type == type)
			return 0;
		if (skipped)
			(*skipped)++;
	}
}

/* As next_event(), for an event about buffer @id: those about others are skipped. */
static int next_event_for(int dev, __u32 type, __u64 id, struct bufshare_event *ev, int ms)
{
	long long end = now_ms() + ms;
	int ret;

	do {
		ret = next_event(dev, type, ev, end - now_ms(), NULL);
	} while (!ret && ev->id != id);
	return ret;
}

static int unregister_flags(int dev, __u64 id, __u32 flags)
{
	struct bufshare_unregister u = { .id = id, .flags = flags };

	return ioctl(dev, BUFSHARE_IOC_UNREGISTER_FLAGS, &u) ? errno : 0;
}

static int get_consumers(int dev, const char *app, __u32 *n)
{
	struct bufshare_consumers c = {};

	snprintf(c.application, sizeof(c.application), "%s", app);
	if (ioctl(dev, BUFSHARE_IOC_GET_CONSUMERS, &c))
		return errno;
	*n = c.consumers;
	return 0;
}

/* The value of "@key:\t" in the fdinfo of @dev, or -1. */
static long fdinfo_value(int dev, const char *key)
{
	char buf[8192], pat[64], *p;

	if (read_fdinfo(dev, buf, sizeof(buf)))
		return -1;
	snprintf(pat, sizeof(pat), "\n%s:\t", key);
	p = strstr(buf, pat);
	return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

/* Whether the memory of @memfd is still pinned: it then takes no write seal. */
static int pinned(int memfd)
{
	return fcntl(memfd, F_ADD_SEALS, F_SEAL_WRITE) ? errno == EBUSY : 0;
}

/*
 * Starts watcher @base-PID of @app with @opts, its name in @name (40 bytes),
 * and waits until it subscribed. 0 or -1.
 */
static int watch(const char *base, const char *app, const char *opts, char *name)
{
	snprintf(name, 40, "%.20s-%d", base, (int)getpid());
	if (relay_watch_opts(name, app, opts))
		return -1;
	return relay_wait_line(name, "WELCOME", WAIT_MS, NULL, 0) > 0 ? 0 : -1;
}

/* Registers a page of a new memfd (in *@memfd) under @app; the watcher @name got its ADD. */
static int register_watched(int dev, const char *app, const char *name, int *memfd, __u64 *id)
{
	char pat[64];

	*memfd = make_memfd(PAGE, F_SEAL_SHRINK);
	if (*memfd < 0 || bs_register(dev, *memfd, 0, PAGE, app, NULL, 0, id))
		return -1;
	snprintf(pat, sizeof(pat), "ADD id=%llu", (unsigned long long)*id);
	return relay_wait_line(name, pat, WAIT_MS, NULL, 0) > 0 ? 0 : -1;
}

/*
 * Reads the RELEASED events of buffer @id, each releasing more than the one
 * before, until one releases update @seqno: 0, -EPROTO for an event of
 * another buffer or not releasing more, -ERANGE past @seqno, or the error
 * of next_event().
 */
static int released_up_to(int dev, __u64 id, __u64 seqno)
{
	struct bufshare_event ev;
	__u64 last = 0;
	int err;

	do {
		err = next_event(dev, BUFSHARE_EVENT_RELEASED, &ev, WAIT_MS, NULL);
		if (err)
			return err;
		if (ev.id != id || ev.seqno <= last)
			return -EPROTO;
		last = ev.seqno;
	} while (last < seqno);
	return last == seqno ? 0 : -ERANGE;
}

FIXTURE(events) {
	int dev;
	int events;
};

FIXTURE_SETUP(events)
{
	self->dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->dev);
	self->events = has_events(self->dev);
}

FIXTURE_TEARDOWN(events)
{
	close(self->dev);
}

/* What the interface refuses, with or without events. */
TEST_F(events, interface_checks)
{
	struct bufshare_event ev[2];
	struct bufshare_unregister u = {};
	struct pollfd p = { .events = POLLIN };
	__u32 n;
	int nb;

	/* A buffer too small for one record. */
	EXPECT_EQ(-1, read(self->dev, ev, sizeof(ev[0]) - 1));
	EXPECT_EQ(EINVAL, errno);
	/* Nothing to read: a non-blocking read says so, poll says nothing. */
	nb = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	ASSERT_LE(0, nb);
	EXPECT_EQ(-1, read(nb, ev, sizeof(ev)));
	EXPECT_EQ(EAGAIN, errno);
	p.fd = nb;
	EXPECT_EQ(0, poll(&p, 1, 0));
	close(nb);

	EXPECT_EQ(ENOENT, unregister_flags(self->dev, 12345678, BUFSHARE_UNREGISTER_WAIT));
	EXPECT_EQ(EINVAL, unregister_flags(self->dev, 1, 1U << 1));
	u.id = 1;
	u.reserved = 1;
	EXPECT_EQ(-1, ioctl(self->dev, BUFSHARE_IOC_UNREGISTER_FLAGS, &u));
	EXPECT_EQ(EINVAL, errno);

	EXPECT_EQ(EINVAL, get_consumers(self->dev, "bad name", &n));
	EXPECT_EQ(EINVAL, get_consumers(self->dev, "", &n));
	if (!self->events)
		EXPECT_EQ(EOPNOTSUPP, get_consumers(self->dev, "events-test", &n));
}

/*
 * The driver told not to use events (events=0), against a device that has
 * them: the feature is not negotiated, GET_CONSUMERS is refused, no event
 * comes, and the plain UNREGISTER is the confirmation: the pages are let
 * go when it returns. The driver is loaded again as it was.
 */
TEST(driver_without_events)
{
	struct bufshare_update u = {};
	struct bufshare_event ev;
	const char *what = "";
	int dev, memfd, err;
	__u64 id;
	__u32 n;

	err = reload_module("events=0", &what);
	if (err == -ENOENT && !strcmp(what, "BUFSHARE_MODULE"))
		SKIP(return, "BUFSHARE_MODULE is not set");
	ASSERT_EQ(0, err) TH_LOG("%s", what);
	dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	ASSERT_LE(0, dev);
	EXPECT_FALSE(has_events(dev));
	EXPECT_EQ(EOPNOTSUPP, get_consumers(dev, "events-off", &n));

	memfd = make_memfd(PAGE, F_SEAL_SHRINK);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, bs_register(dev, memfd, 0, PAGE, "events-off", NULL, 0, &id));
	u.id = id;
	ASSERT_EQ(0, bs_update(dev, &u, NULL));
	usleep(500 * 1000);
	EXPECT_EQ(-1, read(dev, &ev, sizeof(ev)));
	EXPECT_EQ(EAGAIN, errno);
	EXPECT_EQ(0, bs_unregister(dev, id));
	EXPECT_EQ(0, fcntl(memfd, F_ADD_SEALS, F_SEAL_WRITE)) TH_LOG("still pinned");
	close(memfd);

	/*
	 * A consumer that holds the buffer 3 s after its REMOVE: the device
	 * answers UNREGISTER only then, and the pages are let go after.
	 */
	if (relay_ready()) {
		char name[40];
		long long start, took;

		ASSERT_EQ(0, watch("ev-off-hold", "events-off", "hold=3", name));
		ASSERT_EQ(0, register_watched(dev, "events-off", name, &memfd, &id));
		start = now_ms();
		EXPECT_EQ(0, bs_unregister(dev, id));
		took = now_ms() - start;
		TH_LOG("UNREGISTER answered after %lld ms (the consumer held it 3 s)", took);
		EXPECT_LE(2500, took);
		EXPECT_FALSE(pinned(memfd));
		close(memfd);
		relay_watch_stop(name, NULL);
	}
	close(dev);
	ASSERT_EQ(0, reload_module("", &what)) TH_LOG("%s", what);
}

/*
 * The driver with events (events=1, the default) against a device that does
 * not offer them: BUFSHARE_NO_EVENTS_DEV, the misc device of a second
 * device whose backend runs with --no-events.
 */
FIXTURE(no_events_device) {
	int dev;
};

FIXTURE_SETUP(no_events_device)
{
	const char *path = getenv("BUFSHARE_NO_EVENTS_DEV");

	self->dev = -1;
	if (!path || !*path)
		SKIP(return, "no device without events in this boot (BUFSHARE_NO_EVENTS_DEV)");
	self->dev = open(path, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->dev) TH_LOG("%s: %s", path, strerror(errno));
}

FIXTURE_TEARDOWN(no_events_device)
{
	if (self->dev >= 0)
		close(self->dev);
}

/*
 * The driver binds it without events: GET_INFO says so, GET_CONSUMERS is
 * refused, nothing is read or polled, and UNREGISTER_WAIT of a buffer no
 * consumer holds returns with the pages let go.
 */
TEST_F(no_events_device, binds_without_events)
{
	struct bufshare_event ev;
	struct pollfd p = { .events = POLLIN };
	char param[8] = "";
	int nb, memfd;
	__u64 id;
	__u32 n;

	ASSERT_EQ(0, read_text("/sys/module/virtio_bufshare/parameters/events",
			       param, sizeof(param)));
	EXPECT_EQ('Y', param[0]) TH_LOG("the driver takes events (events=1)");
	EXPECT_FALSE(has_events(self->dev));
	EXPECT_EQ(EOPNOTSUPP, get_consumers(self->dev, "events-none", &n));

	memfd = make_memfd(PAGE, F_SEAL_SHRINK);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, bs_register(self->dev, memfd, 0, PAGE, "events-none", NULL, 0, &id));
	nb = open(getenv("BUFSHARE_NO_EVENTS_DEV"), O_RDWR | O_CLOEXEC | O_NONBLOCK);
	ASSERT_LE(0, nb);
	EXPECT_EQ(-1, read(nb, &ev, sizeof(ev)));
	EXPECT_EQ(EAGAIN, errno);
	close(nb);
	for (int i = 0; i < 2; i++) {
		struct bufshare_update u = { .id = id };

		ASSERT_EQ(0, bs_update(self->dev, &u, NULL));
	}
	p.fd = self->dev;
	EXPECT_EQ(0, poll(&p, 1, 500)) TH_LOG("no event comes");
	EXPECT_TRUE(pinned(memfd));
	EXPECT_EQ(0, unregister_flags(self->dev, id, BUFSHARE_UNREGISTER_WAIT));
	EXPECT_EQ(0, fdinfo_value(self->dev, "draining"));
	EXPECT_FALSE(pinned(memfd));
	close(memfd);
}

/*
 * A consumer on the host (a watcher of the second device) holds a buffer
 * 3 s after its REMOVE: the device answers UNREGISTER only once it let go.
 * Meanwhile the UNREGISTER (in a child, sharing the open file) has not
 * returned, nothing is draining (the answer is the confirmation) and the
 * pages stay pinned; once it returned, they are let go.
 */
TEST_F(no_events_device, unregister_waits_for_the_consumer)
{
	const char *app = "events-none-hold";
	long long start, took = -1;
	char name[40];
	int memfd, fds[2], status;
	pid_t child;
	__u64 id;

	ASSERT_TRUE(relay_ready());
	ASSERT_EQ(0, watch("ev-none-hold", app, "hold=3 second", name));
	ASSERT_EQ(0, register_watched(self->dev, app, name, &memfd, &id));
	ASSERT_EQ(0, pipe(fds));
	start = now_ms();
	child = fork();
	ASSERT_LE(0, child);
	if (child == 0) {
		int err = bs_unregister(self->dev, id);

		took = now_ms() - start;
		if (write(fds[1], &took, sizeof(took)) != sizeof(took))
			_exit(101);
		_exit(err ? 100 : 0);
	}
	close(fds[1]);
	usleep(1500 * 1000);
	EXPECT_EQ(0, waitpid(child, &status, WNOHANG)) TH_LOG("UNREGISTER returned early");
	EXPECT_TRUE(pinned(memfd));
	EXPECT_EQ(0, fdinfo_value(self->dev, "draining"));
	ASSERT_EQ(child, waitpid(child, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) TH_LOG("status %#x", status);
	EXPECT_EQ(sizeof(took), read(fds[0], &took, sizeof(took)));
	close(fds[0]);
	TH_LOG("UNREGISTER answered after %lld ms (the consumer held it 3 s)", took);
	EXPECT_LE(2500, took);
	EXPECT_FALSE(pinned(memfd));
	close(memfd);
	relay_watch_stop(name, NULL);
}

/* An update no consumer was given is released at once. */
TEST_F(events, released_without_consumers)
{
	struct bufshare_event ev;
	__u64 id, seqno = 0;
	int memfd;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	memfd = make_memfd(PAGE, F_SEAL_SHRINK);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, bs_register(self->dev, memfd, 0, PAGE, "events-nobody", NULL, 0, &id));
	for (int i = 0; i < 3; i++) {
		struct bufshare_update u = { .id = id };

		ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
		ASSERT_EQ(0, next_event(self->dev, BUFSHARE_EVENT_RELEASED, &ev, WAIT_MS, NULL));
		EXPECT_EQ(id, ev.id);
		EXPECT_EQ(seqno, ev.seqno);
	}
	EXPECT_EQ(0, unregister_flags(self->dev, id, BUFSHARE_UNREGISTER_WAIT));
	close(memfd);
}

/*
 * UNREGISTER and wait: the host let go of the memory when it returns,
 * FREED is read, and the pages are no longer pinned.
 */
TEST_F(events, freed_after_unregister)
{
	struct bufshare_event ev;
	__u64 id;
	int memfd;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	memfd = make_memfd(PAGE, F_SEAL_SHRINK);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, bs_register(self->dev, memfd, 0, PAGE, "events-freed", NULL, 0, &id));
	ASSERT_EQ(0, unregister_flags(self->dev, id, BUFSHARE_UNREGISTER_WAIT));
	ASSERT_EQ(0, next_event_for(self->dev, BUFSHARE_EVENT_FREED, id, &ev, WAIT_MS));
	EXPECT_EQ(0, fdinfo_value(self->dev, "draining"));
	EXPECT_EQ(0, fcntl(memfd, F_ADD_SEALS, F_SEAL_WRITE)) TH_LOG("still pinned");
	close(memfd);
}

/* CONSUMERS as a watcher of the application comes and goes. */
TEST_F(events, consumers_come_and_go)
{
	const char *app = "events-consumers";
	struct bufshare_event ev;
	char name[32];
	__u32 n = 99;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	ASSERT_TRUE(relay_ready());
	ASSERT_EQ(0, get_consumers(self->dev, app, &n));
	EXPECT_EQ(0, n);

	snprintf(name, sizeof(name), "ev-cons-%d", (int)getpid());
	ASSERT_EQ(0, relay_watch(name, app, 0));
	ASSERT_EQ(0, next_event(self->dev, BUFSHARE_EVENT_CONSUMERS, &ev, WAIT_MS, NULL));
	EXPECT_STREQ(app, ev.application);
	EXPECT_EQ(1, ev.consumers);
	ASSERT_EQ(0, get_consumers(self->dev, app, &n));
	EXPECT_EQ(1, n);

	ASSERT_EQ(0, relay_watch_stop(name, NULL));
	ASSERT_EQ(0, next_event(self->dev, BUFSHARE_EVENT_CONSUMERS, &ev, WAIT_MS, NULL));
	EXPECT_STREQ(app, ev.application);
	EXPECT_EQ(0, ev.consumers);
}

/*
 * A reader that falls behind: RELEASED of one buffer merge while queued,
 * so 300 buffers updated twice each make 300 records, of which 256 are
 * kept (each with the later update); the reader gets them, then one
 * OVERFLOW saying how many were dropped: 44 to 88, as the two RELEASED of
 * a buffer whose first did not fit may come apart or merged by the
 * device.
 *
 * Its 1200 commands outlast the harness's default 30 s under TCG when
 * other guests and builds share the host's two cores.
 */
TEST_F_TIMEOUT(events, overflow_is_bounded, 180)
{
	enum { NBUF = 300, KEPT = 256 };
	struct bufshare_event *ev;
	int memfd[NBUF], released = 0, overflows = 0;
	long long dropped = 0, end;
	__u64 id[NBUF];
	ssize_t n;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	for (int i = 0; i < NBUF; i++) {
		struct bufshare_update u = {};

		memfd[i] = make_memfd(PAGE, F_SEAL_SHRINK);
		ASSERT_LE(0, memfd[i]);
		ASSERT_EQ(0, bs_register(self->dev, memfd[i], 0, PAGE, "events-overflow", NULL, 0,
					 &id[i]));
		u.id = id[i];
		ASSERT_EQ(0, bs_update(self->dev, &u, NULL));
		/* Twice: the second RELEASED merges with the first. */
		u.seqno = 0;
		ASSERT_EQ(0, bs_update(self->dev, &u, NULL));
	}
	/* Every RELEASED came in: the queue holds what it keeps. */
	end = now_ms() + WAIT_MS;
	while (fdinfo_value(self->dev, "events") < KEPT + 1 && now_ms() < end)
		usleep(100 * 1000);
	EXPECT_EQ(KEPT + 1, fdinfo_value(self->dev, "events"));

	ev = calloc(NBUF + 8, sizeof(*ev));
	ASSERT_NE(NULL, ev);
	/* As many reads as it takes (one returns at most 256 records). */
	n = 0;
	for (;;) {
		struct pollfd p = { .fd = self->dev, .events = POLLIN };
		ssize_t got;

		if (poll(&p, 1, 0) != 1 || n / (ssize_t)sizeof(*ev) >= NBUF + 8)
			break;
		got = read(self->dev, (char *)ev + n, (NBUF + 8) * sizeof(*ev) - n);
		ASSERT_LT(0, got);
		n += got;
	}
	for (size_t i = 0; i < n / sizeof(*ev); i++) {
		if (ev[i].type == BUFSHARE_EVENT_RELEASED) {
			EXPECT_EQ(0, overflows) TH_LOG("a record after OVERFLOW");
			EXPECT_EQ(2, ev[i].seqno);
			released++;
		} else if (ev[i].type == BUFSHARE_EVENT_OVERFLOW) {
			overflows++;
			dropped = ev[i].seqno;
		}
	}
	TH_LOG("%d RELEASED read, then OVERFLOW of %lld", released, dropped);
	EXPECT_EQ(KEPT, released);
	EXPECT_EQ(1, overflows);
	EXPECT_LE(NBUF - KEPT, dropped);
	EXPECT_GE(2 * (NBUF - KEPT), dropped);
	free(ev);
	for (int i = 0; i < NBUF; i++) {
		EXPECT_EQ(0, bs_unregister(self->dev, id[i]));
		close(memfd[i]);
	}
}

/*
 * The device loses its buffers (a restarted backend): LOST is read, the
 * buffer comes back, and an update still goes through and is released.
 */
TEST_F(events, lost_then_back)
{
	static unsigned int count;
	struct bufshare_event ev;
	struct bufshare_update u = {};
	struct bufshare_info info;
	char mode[96];
	__u64 id;
	int memfd;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	memfd = make_memfd(PAGE, F_SEAL_SHRINK);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, bs_register(self->dev, memfd, 0, PAGE, "events-lost", NULL, 0, &id));
	snprintf(mode, sizeof(mode), "lose-buffers ev%d-%u-%llx", (int)getpid(), ++count,
		 (unsigned long long)(fresh_seed() & 0xffffff));
	ASSERT_EQ(0, set_fault(mode));
	/* The backend loses them before its next command. */
	ASSERT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_GET_INFO, &info));
	ASSERT_EQ(0, next_event(self->dev, BUFSHARE_EVENT_LOST, &ev, WAIT_MS, NULL));
	u.id = id;
	ASSERT_EQ(0, bs_update(self->dev, &u, NULL));
	ASSERT_EQ(0, next_event(self->dev, BUFSHARE_EVENT_RELEASED, &ev, WAIT_MS, NULL));
	EXPECT_EQ(id, ev.id);
	set_fault("none");
	EXPECT_EQ(0, unregister_flags(self->dev, id, BUFSHARE_UNREGISTER_WAIT));
	close(memfd);
}

/* The kernel log lines the driver writes for the bogus events, in order. */
static const char *const bogus_lines[] = {
	"bad event from device (40 bytes)",	/* short */
	"bad event from device (96 bytes)",	/* unknown type */
	"ignored RELEASED of buffer 18446744073709551614",	/* never registered */
	"ignored FREED of buffer 18446744073709551614",
	"ignored RELEASED of buffer ",	/* beyond the last update */
	"ignored FREED of buffer ",	/* still registered */
};

/*
 * A hostile device (the backend's bogus-events fault, see
 * Documentation/testing/bufshare-faults.rst): a short event, one of an
 * unknown type, RELEASED and FREED for a buffer never registered, CONSUMERS
 * for an application nobody follows, then RELEASED 1000 updates beyond the
 * last and FREED for a buffer still registered, all ahead of the RELEASED
 * of an update. The driver ignores each, with a log line; the reader gets
 * none of them; the buffer stays pinned and works: its updates are released
 * with their own numbers, and its real FREED comes after UNREGISTER.
 */
TEST_F(events, hostile_events)
{
	const char *app = "events-hostile";
	struct bufshare_event ev;
	struct bufshare_update u = {};
	struct bufshare_buffer_info info = {};
	char token[48], line[512];
	__u64 id, seqno = 0;
	int memfd, kmsg, skipped = 0;
	__u32 n;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	if (!getenv("BUFSHARE_FAULT_FILE"))
		SKIP(return, "BUFSHARE_FAULT_FILE is not set");
	memfd = make_memfd(PAGE, F_SEAL_SHRINK);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, bs_register(self->dev, memfd, 0, PAGE, app, NULL, 0, &id));
	u.id = id;
	ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	ASSERT_EQ(0, next_event_for(self->dev, BUFSHARE_EVENT_RELEASED, id, &ev, WAIT_MS));
	EXPECT_EQ(seqno, ev.seqno);
	/* The file follows its application, not the bogus one. */
	ASSERT_EQ(0, get_consumers(self->dev, app, &n));

	/* A fresh window of the driver's log rate limit (10 lines per 5 s). */
	usleep(5100 * 1000);
	kmsg = kmsg_open();
	ASSERT_LE(0, kmsg);
	snprintf(token, sizeof(token), "bogus-events ev%d", (int)getpid());
	ASSERT_EQ(0, set_fault(token));
	/* The next command has them sent, ahead of that update's RELEASED. */
	u.seqno = 0;
	ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	set_fault("none");
	ASSERT_EQ(0, next_event(self->dev, BUFSHARE_EVENT_RELEASED, &ev, WAIT_MS, &skipped));
	EXPECT_EQ(0, skipped) TH_LOG("records of other types read before it");
	EXPECT_EQ(id, ev.id);
	EXPECT_EQ(seqno, ev.seqno) TH_LOG("a bogus RELEASED reached the reader");
	for (size_t i = 0; i < ARRAY_SIZE(bogus_lines); i++) {
		const char *want = bogus_lines[i];

		EXPECT_EQ(1, kmsg_find(kmsg, want, line, sizeof(line)))
			TH_LOG("no log line \"%s\"", want);
	}
	close(kmsg);

	/* Nothing else was queued; the buffer is whole, pinned, and works. */
	fcntl(self->dev, F_SETFL, O_NONBLOCK);
	EXPECT_EQ(-1, read(self->dev, &ev, sizeof(ev))) TH_LOG("record type %u id %llu",
							       ev.type, (unsigned long long)ev.id);
	EXPECT_EQ(EAGAIN, errno);
	fcntl(self->dev, F_SETFL, 0);
	EXPECT_TRUE(pinned(memfd));
	EXPECT_EQ(0, fdinfo_value(self->dev, "draining"));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, NULL, 0));
	EXPECT_EQ(seqno, info.seqno);
	u.seqno = 0;
	ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	ASSERT_EQ(0, next_event_for(self->dev, BUFSHARE_EVENT_RELEASED, id, &ev, WAIT_MS));
	EXPECT_EQ(seqno, ev.seqno);
	EXPECT_EQ(0, unregister_flags(self->dev, id, BUFSHARE_UNREGISTER_WAIT));
	ASSERT_EQ(0, next_event_for(self->dev, BUFSHARE_EVENT_FREED, id, &ev, WAIT_MS));
	EXPECT_FALSE(pinned(memfd));
	close(memfd);
}

/*
 * A consumer that keeps a buffer mapped 3 s after its REMOVE (within the
 * backend's 5 s grace time): meanwhile the buffer is draining (fdinfo, the
 * backend's holders) and its pages stay pinned; once the consumer unmapped
 * it and said CLOSED, FREED comes and the pages are let go. The same again
 * with UNREGISTER_WAIT, which returns then.
 */
TEST_F(events, consumer_holds_after_remove)
{
	const char *app = "events-hold";
	struct bufshare_event ev;
	char name[40], err[256] = "", *holders = NULL;
	long long start, waited;
	int memfd;
	__u64 id;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	ASSERT_TRUE(relay_ready());
	ASSERT_EQ(0, watch("ev-hold", app, "hold=3", name));
	ASSERT_EQ(0, register_watched(self->dev, app, name, &memfd, &id));

	start = now_ms();
	ASSERT_EQ(0, unregister_flags(self->dev, id, 0));
	EXPECT_EQ(1, fdinfo_value(self->dev, "draining"));
	EXPECT_TRUE(pinned(memfd));
	ASSERT_EQ(0, relay_holders(&holders, err, sizeof(err))) TH_LOG("%s", err);
	EXPECT_NE(NULL, relay_list_find(holders, id)) TH_LOG("holders: %s", holders);
	free(holders);
	ASSERT_EQ(0, next_event_for(self->dev, BUFSHARE_EVENT_FREED, id, &ev, WAIT_MS));
	waited = now_ms() - start;
	TH_LOG("FREED %lld ms after UNREGISTER (the consumer held it 3 s)", waited);
	EXPECT_LE(2500, waited);
	EXPECT_EQ(0, fdinfo_value(self->dev, "draining"));
	EXPECT_FALSE(pinned(memfd));
	close(memfd);

	ASSERT_EQ(0, register_watched(self->dev, app, name, &memfd, &id));
	start = now_ms();
	EXPECT_EQ(0, unregister_flags(self->dev, id, BUFSHARE_UNREGISTER_WAIT));
	waited = now_ms() - start;
	TH_LOG("UNREGISTER_WAIT returned after %lld ms", waited);
	EXPECT_LE(2500, waited);
	EXPECT_FALSE(pinned(memfd));
	close(memfd);
	relay_watch_stop(name, NULL);
}

/*
 * A consumer killed with SIGKILL while it holds a removed buffer: FREED
 * comes once its process is gone, not before.
 */
TEST_F(events, consumer_killed_while_holding)
{
	const char *app = "events-killed";
	struct bufshare_event ev;
	char name[40];
	int memfd;
	__u64 id;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	ASSERT_TRUE(relay_ready());
	ASSERT_EQ(0, watch("ev-killed", app, "hold=600", name));
	ASSERT_EQ(0, register_watched(self->dev, app, name, &memfd, &id));
	ASSERT_EQ(0, unregister_flags(self->dev, id, 0));
	/* Held: no FREED, pinned. */
	EXPECT_EQ(-ETIMEDOUT, next_event(self->dev, BUFSHARE_EVENT_FREED, &ev, 2000, NULL));
	EXPECT_TRUE(pinned(memfd));
	EXPECT_EQ(1, fdinfo_value(self->dev, "draining"));

	ASSERT_EQ(0, relay_watch_kill(name));
	ASSERT_EQ(0, next_event_for(self->dev, BUFSHARE_EVENT_FREED, id, &ev, WAIT_MS));
	EXPECT_EQ(id, ev.id);
	EXPECT_FALSE(pinned(memfd));
	close(memfd);
}

/*
 * A consumer that stops reading its socket, its buffers mapped: the backend
 * disconnects it after its grace time, the guest carries on meanwhile, and
 * the buffer it holds is freed only once its process exits.
 */
TEST_F(events, consumer_stops_reading)
{
	const char *app = "events-stuck";
	struct bufshare_event ev;
	struct bufshare_info info;
	char name[40];
	int memfd, other;
	__u64 id, id2;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	ASSERT_TRUE(relay_ready());
	/* It reads no more after the ADD. */
	ASSERT_EQ(0, watch("ev-stuck", app, "stop-reading=1", name));
	ASSERT_EQ(0, register_watched(self->dev, app, name, &memfd, &id));
	/* Disconnected after 5 s, its process still running: no FREED in 10 s. */
	EXPECT_EQ(ETIMEDOUT, unregister_flags(self->dev, id, BUFSHARE_UNREGISTER_WAIT));

	/* The guest carries on: commands, another buffer. */
	for (int i = 0; i < 5; i++)
		ASSERT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_GET_INFO, &info));
	other = make_memfd(PAGE, F_SEAL_SHRINK);
	ASSERT_LE(0, other);
	ASSERT_EQ(0, bs_register(self->dev, other, 0, PAGE, "events-other", NULL, 0, &id2));
	EXPECT_EQ(0, unregister_flags(self->dev, id2, BUFSHARE_UNREGISTER_WAIT));
	close(other);

	EXPECT_TRUE(pinned(memfd));
	EXPECT_EQ(1, fdinfo_value(self->dev, "draining"));

	ASSERT_EQ(0, relay_watch_stop(name, NULL));
	ASSERT_EQ(0, next_event_for(self->dev, BUFSHARE_EVENT_FREED, id, &ev, WAIT_MS));
	EXPECT_EQ(id, ev.id);
	EXPECT_FALSE(pinned(memfd));
	close(memfd);
}

/*
 * Two consumers of one application: an update is RELEASED only once both
 * released it. One that never releases holds every update; once it is
 * gone, the last update is released, and the numbers only go up.
 */
TEST_F(events, released_by_every_consumer)
{
	const char *app = "events-two";
	struct bufshare_event ev;
	char fast[40], slow[40];
	__u64 id, seqno = 0;
	int memfd;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	ASSERT_TRUE(relay_ready());
	ASSERT_EQ(0, watch("ev-fast", app, "", fast));
	ASSERT_EQ(0, watch("ev-slow", app, "no-release", slow));
	ASSERT_EQ(0, register_watched(self->dev, app, fast, &memfd, &id));
	ASSERT_LT(0, relay_wait_line(slow, "ADD", WAIT_MS, NULL, 0));

	for (int i = 0; i < 5; i++) {
		struct bufshare_update u = { .id = id };

		ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	}
	/* The fast one saw every update; the slow one releases none. */
	ASSERT_LT(0, relay_wait_line(fast, "UPDATE seqno=5", WAIT_MS, NULL, 0));
	EXPECT_EQ(-ETIMEDOUT, next_event(self->dev, BUFSHARE_EVENT_RELEASED, &ev, 3000, NULL));

	ASSERT_EQ(0, relay_watch_stop(slow, NULL));
	EXPECT_EQ(0, released_up_to(self->dev, id, seqno));
	EXPECT_EQ(0, unregister_flags(self->dev, id, BUFSHARE_UNREGISTER_WAIT));
	close(memfd);
	relay_watch_stop(fast, NULL);
}

/*
 * BUFSHARE_UPDATE_NOWAIT: the driver checks the update as for any other
 * and numbers it, and returns once it is queued; a host consumer receives
 * every such update in order, and RELEASED comes for them as for waited
 * ones.
 */
TEST_F(events, nowait_updates)
{
	const char *app = "events-nowait";
	struct bufshare_update u;
	char name[40], pat[48];
	__u64 id, seqno = 0;
	int memfd;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	ASSERT_TRUE(relay_ready());
	ASSERT_EQ(0, watch("ev-nowait", app, "", name));
	ASSERT_EQ(0, register_watched(self->dev, app, name, &memfd, &id));

	/* Refused before anything is queued, as without the flag. */
	u = (struct bufshare_update){ .id = id + 1000, .flags = BUFSHARE_UPDATE_NOWAIT };
	EXPECT_EQ(ENOENT, bs_update(self->dev, &u, NULL));
	u = (struct bufshare_update){ .id = id,
		.flags = BUFSHARE_UPDATE_NOWAIT | BUFSHARE_UPDATE_RANGE, .length = 0 };
	EXPECT_EQ(EINVAL, bs_update(self->dev, &u, NULL));

	for (int i = 1; i <= 20; i++) {
		u = (struct bufshare_update){ .id = id, .flags = BUFSHARE_UPDATE_NOWAIT };
		ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
		EXPECT_EQ((__u64)i, seqno);
	}
	/* Numbers still only go up. */
	u = (struct bufshare_update){ .id = id, .seqno = 20, .flags = BUFSHARE_UPDATE_NOWAIT };
	EXPECT_EQ(EINVAL, bs_update(self->dev, &u, NULL));

	/* The consumer got the last one (and, the socket being in order, those before). */
	snprintf(pat, sizeof(pat), "UPDATE seqno=%llu", (unsigned long long)seqno);
	ASSERT_LT(0, relay_wait_line(name, pat, WAIT_MS, NULL, 0));
	EXPECT_EQ(0, released_up_to(self->dev, id, seqno));

	/* A waited update after them gets the next number. */
	u = (struct bufshare_update){ .id = id };
	ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	EXPECT_EQ(21, seqno);
	EXPECT_EQ(0, unregister_flags(self->dev, id, BUFSHARE_UNREGISTER_WAIT));
	close(memfd);
	relay_watch_stop(name, NULL);
}

/*
 * bufshare-animate (samples/bufshare) with two consumers of its
 * framebuffer, both checking every frame's crc32, one of them slower
 * (it also writes each frame as a PNG): it draws into a half of the
 * framebuffer only once the host released the update that showed it, so
 * no consumer ever sees a torn frame.
 *
 * Two watches started and stopped through the relay, 4 s of animation and
 * 2 s for the consumers' last lines outlast the harness's default 30 s
 * under TCG when other guests share the host's two cores: the animation
 * alone took 10.9 s once (11 frames/s of the 30 asked).
 */
TEST_F_TIMEOUT(events, animation_is_tear_free, 120)
{
	char checker[40], slow[40], cmd[512], out[512] = "";
	int ok[2], bad[2];
	const char *names[2] = { checker, slow };
	const char *dir = getenv("BUFSHARE_TESTS");
	unsigned int drawn = 0, released = 0;
	FILE *p;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	if (!dir)
		SKIP(return, "BUFSHARE_TESTS is not set");
	ASSERT_TRUE(relay_ready());
	ASSERT_EQ(0, watch("ev-anim", "framebuffer", "verify", checker));
	ASSERT_EQ(0, watch("ev-anim-slow", "framebuffer", "verify dump", slow));

	snprintf(cmd, sizeof(cmd), "%s/bufshare-animate -s 4 -r 30 -W 160 -H 120", dir);
	p = popen(cmd, "r");
	ASSERT_NE(NULL, p);
	while (fgets(out, sizeof(out), p)) {
		TH_LOG("%.*s", (int)strcspn(out, "\n"), out);
		if (sscanf(out, "bufshare-animate: %u frames drawn and shown, %u released",
			   &drawn, &released) == 2)
			TH_LOG("%u frames drawn, %u released", drawn, released);
	}
	ASSERT_EQ(0, pclose(p));
	EXPECT_LT(10, drawn);
	/* What each consumer checked, once its lines are in. */
	usleep(2000 * 1000);
	for (int i = 0; i < 2; i++) {
		/* Every VERIFY line; those of a mismatch have expected=. */
		ok[i] = relay_count_lines(names[i], "VERIFY seqno=*");
		bad[i] = relay_count_lines(names[i], "VERIFY expected=*");
		TH_LOG("%s: %d frames checked, %d torn", names[i], ok[i], bad[i]);
		EXPECT_LT(0, ok[i]);
		EXPECT_EQ(0, bad[i]);
		relay_watch_stop(names[i], NULL);
	}
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return x < y ? -1 : x > y;
}

/* The median of @n microsecond samples, sorted in place. */
static long long median(long long *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_ll);
	return v[n / 2];
}

static long long now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000LL + t.tv_nsec / 1000;
}

/*
 * Timings, in one run, logged and not asserted: a bare GET_INFO round
 * trip; UPDATE until RELEASED is read with no consumer (the device
 * releases at once); and the frame round trip with one watcher, which
 * releases each update after it read it (UPDATE, the consumer sees it,
 * RELEASE, the guest reads RELEASED). The difference of the last two is
 * what the consumer's side adds.
 */
TEST_F(events, round_trip_timings)
{
	enum { N = 40 };
	long long info_us[N], alone_us[N], frame_us[N];
	const char *apps[2] = { "events-rt-alone", "events-rt-watched" };
	long long *us[2] = { alone_us, frame_us };
	struct bufshare_info info;
	struct bufshare_event ev;
	char name[32];
	__u32 n = 0;

	if (!self->events)
		SKIP(return, "device without VIRTIO_BUFSHARE_F_EVENTS");
	ASSERT_TRUE(relay_ready());
	for (int i = 0; i < N; i++) {
		long long t = now_us();

		ASSERT_EQ(0, ioctl(self->dev, BUFSHARE_IOC_GET_INFO, &info));
		info_us[i] = now_us() - t;
	}
	snprintf(name, sizeof(name), "ev-rt-%d", (int)getpid());
	ASSERT_EQ(0, relay_watch(name, apps[1], 0));
	for (int i = 0; i < 100 && !n; i++) {
		ASSERT_EQ(0, get_consumers(self->dev, apps[1], &n));
		if (!n)
			usleep(100 * 1000);
	}
	ASSERT_EQ(1, n);
	for (int a = 0; a < 2; a++) {
		__u64 id, seqno = 0;
		int memfd = make_memfd(PAGE, F_SEAL_SHRINK);

		ASSERT_LE(0, memfd);
		ASSERT_EQ(0, bs_register(self->dev, memfd, 0, PAGE, apps[a], NULL, 0, &id));
		for (int i = 0; i < N; i++) {
			struct bufshare_update u = { .id = id };
			long long t = now_us();

			ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
			do {
				ASSERT_EQ(0, next_event(self->dev, BUFSHARE_EVENT_RELEASED, &ev,
							WAIT_MS, NULL));
			} while (ev.id != id || ev.seqno < seqno);
			us[a][i] = now_us() - t;
		}
		EXPECT_EQ(0, unregister_flags(self->dev, id, BUFSHARE_UNREGISTER_WAIT));
		close(memfd);
	}
	relay_watch_stop(name, NULL);
	TH_LOG("medians of %d: GET_INFO %lld us", N, median(info_us, N));
	TH_LOG("UPDATE to RELEASED: without a consumer %lld us, with one watcher %lld us",
	       median(alone_us, N), median(frame_us, N));
}

TEST_HARNESS_MAIN
