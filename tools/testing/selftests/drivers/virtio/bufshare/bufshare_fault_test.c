// SPDX-License-Identifier: GPL-2.0
/*
 * A device that answers badly. The backend reads a fault mode from the file
 * named by BUFSHARE_FAULT_FILE before each command (see
 * tools/vhost-user-bufshare, --fault-file); each test makes it misbehave and
 * checks that the driver reports a clear error and keeps working, or, for a
 * device that breaks the virtqueue (the broken tests), that it fails every
 * command cleanly until the device is bound again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <linux/bufshare.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"

FIXTURE(fault) {
	int fd;
};

FIXTURE_SETUP(fault)
{
	ASSERT_EQ(0, set_fault("none"));
	self->fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", BUFSHARE_DEV, strerror(errno));
}

FIXTURE_TEARDOWN(fault)
{
	struct bufshare_info info;

	EXPECT_EQ(0, set_fault("none"));
	/* Whatever the device did, the next good answer gets through. */
	EXPECT_EQ(0, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, &info))
		TH_LOG("GET_INFO after the fault: %s", strerror(errno));
	EXPECT_EQ(1, info.version);
	EXPECT_EQ(env_u64("BUFSHARE_EXPECT_MAX_RANGES"), info.max_ranges);
	close(self->fd);
}

/* The answer with @mode in force fails with @err. */
static int fault_errno(int fd, const char *mode)
{
	struct bufshare_info info;

	if (set_fault(mode))
		return -1;
	if (ioctl(fd, BUFSHARE_IOC_GET_INFO, &info) == 0)
		return 0;
	return errno;
}

/* Fewer bytes than a status header. */
TEST_F(fault, short_answer_is_eio)
{
	EXPECT_EQ(EIO, fault_errno(self->fd, "short"));
}

/* Status OK, but only the header of the answer. */
TEST_F(fault, truncated_answer_is_eio)
{
	EXPECT_EQ(EIO, fault_errno(self->fd, "truncated"));
}

/* A used length larger than the buffer the driver gave. */
TEST_F(fault, overlong_answer_is_eio)
{
	EXPECT_EQ(EIO, fault_errno(self->fd, "overlong"));
}

/* A status the protocol does not define. */
TEST_F(fault, unknown_status_is_eio)
{
	EXPECT_EQ(EIO, fault_errno(self->fd, "bad-status"));
}

/* The device's own errors map to errnos. */
TEST_F(fault, device_errors_map_to_errno)
{
	EXPECT_EQ(EINVAL, fault_errno(self->fd, "invalid"));
	EXPECT_EQ(EOPNOTSUPP, fault_errno(self->fd, "unsupported"));
	EXPECT_EQ(EIO, fault_errno(self->fd, "device-error"));
}

/* Counts the kernel log lines holding @needle that @fd has not read yet. */
static int kmsg_count(int fd, const char *needle)
{
	char line[256];
	int n = 0, ret;

	while ((ret = kmsg_find(fd, needle, line, sizeof(line))) == 1)
		n++;
	return ret < 0 ? ret : n;
}

/*
 * A device that answers every command wrongly makes the driver log, and a
 * user can send as many commands as they like: the lines are rate-limited,
 * at most 10 in each interval of 5 seconds (the kernel's default).
 */
TEST_F_TIMEOUT(fault, device_errors_logged_rate_limited, 120)
{
	struct bufshare_info info;
	int kmsg, lines, allowed, fails = 0;
	struct timespec start, end;
	long long ms;

	kmsg = kmsg_open();
	ASSERT_LE(0, kmsg) TH_LOG("/dev/kmsg: %s", strerror(-kmsg));
	ASSERT_EQ(0, set_fault("bad-status"));
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (int i = 0; i < 200; i++)
		fails += ioctl(self->fd, BUFSHARE_IOC_GET_INFO, &info) && errno == EIO;
	clock_gettime(CLOCK_MONOTONIC, &end);
	ms = (end.tv_sec - start.tv_sec) * 1000LL + (end.tv_nsec - start.tv_nsec) / 1000000;
	EXPECT_EQ(200, fails);
	lines = kmsg_count(kmsg, "unknown status");
	/* The intervals the run touched, each of 5 s, 10 lines each. */
	allowed = 10 * (ms / 5000 + 2);
	TH_LOG("200 bad answers in %lld ms, %d log lines (at most %d)", ms, lines, allowed);
	EXPECT_LE(1, lines);
	EXPECT_GE(allowed, lines);
	EXPECT_GT(200, allowed) TH_LOG("too slow to tell a limit from none");
	close(kmsg);
}

TEST_F(fault, wrong_version_is_eproto)
{
	EXPECT_EQ(EPROTO, fault_errno(self->fd, "bad-version"));
}

/* A name with no NUL and bytes that are not text reaches the caller tamed. */
TEST_F(fault, garbage_name_is_sanitised)
{
	struct bufshare_info info;

	ASSERT_EQ(0, set_fault("garbage-name"));
	ASSERT_EQ(0, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, &info));
	EXPECT_EQ('\0', info.name[sizeof(info.name) - 1]);
	for (size_t i = 0; i < strlen(info.name); i++)
		EXPECT_TRUE(info.name[i] >= ' ' && info.name[i] <= '~');
}

/* A device that never answers: the caller gives up after the timeout. */
TEST_F_TIMEOUT(fault, no_answer_times_out, 60)
{
	EXPECT_EQ(ETIMEDOUT, fault_errno(self->fd, "drop"));
}

struct unanswered {
	int fd;
	pid_t tid;
	int err;
	int done;
	long long ms;
};

static void *unanswered_thread(void *arg)
{
	struct unanswered *u = arg;
	struct bufshare_info info;
	struct timespec start, end;

	__atomic_store_n(&u->tid, gettid(), __ATOMIC_RELEASE);
	clock_gettime(CLOCK_MONOTONIC, &start);
	u->err = ioctl(u->fd, BUFSHARE_IOC_GET_INFO, &info) ? errno : 0;
	clock_gettime(CLOCK_MONOTONIC, &end);
	u->ms = (end.tv_sec - start.tv_sec) * 1000LL + (end.tv_nsec - start.tv_nsec) / 1000000;
	__atomic_store_n(&u->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Whether thread @tid of this process sleeps (state S). */
static int thread_sleeps(pid_t tid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'S';
}

/*
 * A command the device never answers times out after the driver's 10 s,
 * however many other commands are answered meanwhile (each answer wakes
 * every caller): the timeout is one deadline per command, not a wait that
 * starts again at every wakeup.
 */
TEST_F_TIMEOUT(fault, timeout_is_one_deadline, 90)
{
	struct unanswered u = { .fd = self->fd, .err = -1 };
	struct bufshare_info info;
	long answered = 0;
	pthread_t t;
	char mode[64];
	int fd;

	fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd);
	snprintf(mode, sizeof(mode), "drop-next %llx", (unsigned long long)fresh_seed());
	ASSERT_EQ(0, set_fault(mode));
	/* The next command, the thread's, is left unanswered. */
	ASSERT_EQ(0, pthread_create(&t, NULL, unanswered_thread, &u));
	for (int i = 0; i < 1000; i++) {
		pid_t tid = __atomic_load_n(&u.tid, __ATOMIC_ACQUIRE);

		if (tid && thread_sleeps(tid))
			break;
		usleep(10000);
	}
	/* Meanwhile, commands that are answered, for up to 40 s. */
	for (int i = 0; i < 4000 && !__atomic_load_n(&u.done, __ATOMIC_ACQUIRE); i++) {
		if (!ioctl(fd, BUFSHARE_IOC_GET_INFO, &info))
			answered++;
		usleep(10000);
	}
	ASSERT_EQ(0, pthread_join(t, NULL));
	close(fd);
	TH_LOG("unanswered command ended after %lld ms with %s; %ld answered meanwhile", u.ms,
	       strerror(u.err), answered);
	EXPECT_EQ(ETIMEDOUT, u.err);
	EXPECT_LE(9000, u.ms);
	EXPECT_GE(15000, u.ms);
	EXPECT_LT(10, answered);
}

static void ignore_signal(int sig)
{
	(void)sig;
}

/*
 * An auto-numbered UPDATE whose wait a signal ends is still carried out by
 * the device (the backend's slow-answer fault answers it 2 s late); the next
 * auto-numbered UPDATE gets a number past it and goes through, where it
 * would send the same number again and be refused as not newer.
 */
TEST_F_TIMEOUT(fault, interrupted_update_numbered_past, 60)
{
	struct sigaction sa = { .sa_handler = ignore_signal }, old;
	struct itimerval in_300ms = { .it_value = { .tv_usec = 300000 } };
	struct bufshare_update u;
	__u64 id, first = 0, next = 0;
	int memfd, err;

	memfd = make_memfd(4096, F_SEAL_SHRINK);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, bs_register(self->fd, memfd, 0, 4096, "seqno", NULL, 0, &id));
	u = (struct bufshare_update){ .id = id };
	ASSERT_EQ(0, bs_update(self->fd, &u, &first));

	/* No SA_RESTART: the signal ends the wait with EINTR. */
	ASSERT_EQ(0, sigaction(SIGALRM, &sa, &old));
	ASSERT_EQ(0, set_fault("slow-answer"));
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &in_300ms, NULL));
	u = (struct bufshare_update){ .id = id };
	err = bs_update(self->fd, &u, NULL);
	EXPECT_EQ(0, set_fault("none"));
	EXPECT_EQ(EINTR, err);
	/* Its answer comes 2 s after it was sent. */
	sleep(3);
	u = (struct bufshare_update){ .id = id };
	EXPECT_EQ(0, bs_update(self->fd, &u, &next)) TH_LOG("the UPDATE after the interrupted one");
	TH_LOG("first UPDATE %llu, the one after the interrupted one %llu",
	       (unsigned long long)first, (unsigned long long)next);
	EXPECT_LT(first + 1, next);
	EXPECT_EQ(0, sigaction(SIGALRM, &old, NULL));
	EXPECT_EQ(0, bs_unregister(self->fd, id));
	close(memfd);
}

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* GET_INFO on @fd: 0 or the errno, and how long it took in *@ms. */
static int timed_info(int fd, long long *ms)
{
	struct bufshare_info info;
	long long start = mono_ms();
	int err = ioctl(fd, BUFSHARE_IOC_GET_INFO, &info) ? errno : 0;

	*ms = mono_ms() - start;
	return err;
}

/*
 * A device that breaks the virtqueue's rules: it puts a chain on the used
 * ring twice, or returns it under an id that is no head. The virtio core
 * marks the queue broken; every command then fails with EIO at once, a
 * buffer's memory stays pinned (the device may still reach it) until the
 * device is reset, and unbinding and binding bring the device back.
 */
FIXTURE(broken) {
	int fd;
	char dev[64];
	/* What the teardown must do: BOUND_OK nothing, else bind again. */
	enum { BOUND_OK, BOUND_BROKEN, UNBOUND } state;
};

FIXTURE_VARIANT(broken) {
	const char *mode;
	/* What the command the device answers wrongly gets. */
	int err;
};

/* Answered (the first of the two is right), then the ring is broken. */
FIXTURE_VARIANT_ADD(broken, duplicate) {
	.mode = "duplicate",
	.err = 0,
};

/* Never answered under its own id: it times out. */
FIXTURE_VARIANT_ADD(broken, wrong_id) {
	.mode = "wrong-id",
	.err = ETIMEDOUT,
};

FIXTURE_SETUP(broken)
{
	self->state = BOUND_BROKEN;
	ASSERT_EQ(0, set_fault("none"));
	ASSERT_EQ(0, bound_device(self->dev, sizeof(self->dev)));
	self->fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", BUFSHARE_DEV, strerror(errno));
}

FIXTURE_TEARDOWN(broken)
{
	EXPECT_EQ(0, set_fault("none"));
	if (self->fd >= 0)
		close(self->fd);
	/* A failed test leaves the device bound and working for the next ones. */
	if (self->state == BOUND_BROKEN)
		EXPECT_EQ(0, write_file(BUFSHARE_DRV_DIR "/unbind", self->dev));
	if (self->state != BOUND_OK) {
		EXPECT_EQ(0, write_file(BUFSHARE_DRV_DIR "/bind", self->dev));
		EXPECT_EQ(0, wait_path(BUFSHARE_DEV, 1));
	}
}

TEST_F_TIMEOUT(broken, ring_broken_then_rebound, 120)
{
	size_t page = sysconf(_SC_PAGESIZE);
	int kmsg_head, kmsg_kept, kmsg_bug, memfd, other, err;
	struct bufshare_update u;
	struct bufshare_info info;
	char line[512];
	long long ms;
	__u64 id, id2;

	kmsg_head = kmsg_open();
	kmsg_kept = kmsg_open();
	kmsg_bug = kmsg_open();
	ASSERT_LE(0, kmsg_head);
	ASSERT_LE(0, kmsg_kept);
	ASSERT_LE(0, kmsg_bug);
	/* Sealable still: F_SEAL_WRITE probes the driver's pins. */
	memfd = make_memfd(4 * page, F_SEAL_SHRINK);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, bs_register(self->fd, memfd, 0, 4 * page, "broken", NULL, 0, &id));

	ASSERT_EQ(0, set_fault(variant->mode));
	err = timed_info(self->fd, &ms);
	EXPECT_EQ(0, set_fault("none"));
	TH_LOG("%s: the command answered wrongly got %s after %lld ms", variant->mode,
	       strerror(err), ms);
	EXPECT_EQ(variant->err, err);
	/* The virtio core says what the device did. */
	EXPECT_EQ(1, kmsg_find(kmsg_head, "is not a head", line, sizeof(line)));
	TH_LOG("kernel: %s", line);

	/* Every command fails at once with EIO: the queue is broken. */
	err = timed_info(self->fd, &ms);
	EXPECT_EQ(EIO, err) TH_LOG("GET_INFO after the fault: %s", strerror(err));
	EXPECT_GT(1000, ms);
	other = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, other);
	EXPECT_EQ(EIO, timed_info(other, &ms));
	u = (struct bufshare_update){ .id = id };
	EXPECT_EQ(EIO, bs_update(self->fd, &u, NULL));
	EXPECT_EQ(EIO, bs_register(other, memfd, 0, page, "broken", NULL, 0, &id2));
	close(other);

	/* Still pinned: the device may still reach the memory. */
	EXPECT_EQ(-1, fcntl(memfd, F_ADD_SEALS, F_SEAL_WRITE));
	EXPECT_EQ(EBUSY, errno);
	/* Taken from the file; the device did not confirm, so the memory is kept. */
	EXPECT_EQ(0, bs_unregister(self->fd, id));
	EXPECT_EQ(ENOENT, bs_unregister(self->fd, id));
	EXPECT_EQ(1, kmsg_find(kmsg_kept, "memory kept until reset", line, sizeof(line)));
	EXPECT_EQ(-1, fcntl(memfd, F_ADD_SEALS, F_SEAL_WRITE));
	EXPECT_EQ(EBUSY, errno);

	/* The unbind resets the device: then the memory is let go. */
	ASSERT_EQ(0, write_file(BUFSHARE_DRV_DIR "/unbind", self->dev));
	self->state = UNBOUND;
	EXPECT_EQ(ENODEV, timed_info(self->fd, &ms));
	EXPECT_EQ(0, fcntl(memfd, F_ADD_SEALS, F_SEAL_WRITE)) TH_LOG("%s", strerror(errno));
	close(memfd);

	ASSERT_EQ(0, write_file(BUFSHARE_DRV_DIR "/bind", self->dev));
	self->state = BOUND_OK;
	ASSERT_EQ(0, wait_path(BUFSHARE_DEV, 1));
	close(self->fd);
	self->fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, &info));
	EXPECT_EQ(0, info.num_buffers);
	memfd = make_memfd(page, BUFSHARE_SEALS);
	ASSERT_LE(0, memfd);
	EXPECT_EQ(0, bs_register(self->fd, memfd, 0, page, "broken", NULL, 0, &id));
	EXPECT_EQ(0, bs_unregister(self->fd, id));
	close(memfd);

	EXPECT_EQ(0, kmsg_find(kmsg_bug, "BUG:", line, sizeof(line))) TH_LOG("%s", line);
	close(kmsg_head);
	close(kmsg_kept);
	close(kmsg_bug);
}

TEST_HARNESS_MAIN
