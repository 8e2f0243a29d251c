// SPDX-License-Identifier: GPL-2.0
/*
 * Guest tests of /dev/bufshare against the real device (the vhost-user
 * backend on the host). The runner starts the backend with known limits and
 * passes them in BUFSHARE_EXPECT_* so that the tests can tell the device's
 * own answer from anything else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/bufshare.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"

FIXTURE(dev) {
	int fd;
};

FIXTURE_SETUP(dev)
{
	self->fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", BUFSHARE_DEV, strerror(errno));
}

FIXTURE_TEARDOWN(dev)
{
	close(self->fd);
}

/* GET_INFO carries the backend's answer: its version, its limits, its name. */
TEST_F(dev, get_info_reports_device)
{
	struct bufshare_info info;

	memset(&info, 0xa5, sizeof(info));
	ASSERT_EQ(0, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, &info))
		TH_LOG("GET_INFO: %s", strerror(errno));
	EXPECT_EQ(1, info.version);
	EXPECT_EQ(env_u64("BUFSHARE_EXPECT_MAX_RANGES"), info.max_ranges);
	EXPECT_EQ(env_u64("BUFSHARE_EXPECT_MAX_PROPS_SIZE"), info.max_props_size);
	EXPECT_EQ(env_u64("BUFSHARE_EXPECT_MAX_BUFFERS"), info.max_buffers);
	EXPECT_EQ(env_u64("BUFSHARE_EXPECT_MAX_BUFFER_SIZE"), info.max_buffer_size);
	EXPECT_EQ(0, info.num_buffers);
	EXPECT_LE(1, info.num_commands);
	/* VIRTIO_F_VERSION_1 is always negotiated with a modern device. */
	EXPECT_TRUE(info.features & (1ULL << 32));
	EXPECT_EQ('\0', info.name[sizeof(info.name) - 1]);
	EXPECT_EQ(0, strncmp(info.name, "vhost-user-bufshare ", 20))
		TH_LOG("device name '%.*s'", (int)sizeof(info.name), info.name);
}

/* Every call is a command the device completes: its counter moves by one. */
TEST_F(dev, each_call_reaches_device)
{
	struct bufshare_info a, b;

	ASSERT_EQ(0, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, &a));
	ASSERT_EQ(0, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, &b));
	EXPECT_EQ(a.num_commands + 1, b.num_commands);
}

TEST_F(dev, unknown_ioctl_is_enotty)
{
	char buf[sizeof(struct bufshare_info)];

	EXPECT_EQ(-1, ioctl(self->fd, _IO(BUFSHARE_IOCTL_BASE, 0x7f)));
	EXPECT_EQ(ENOTTY, errno);
	/* The right number with the wrong size is another ioctl. */
	EXPECT_EQ(-1, ioctl(self->fd, _IOR(BUFSHARE_IOCTL_BASE, 0x00, __u32), buf));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOR('x', 0x00, struct bufshare_info), buf));
	EXPECT_EQ(ENOTTY, errno);
}

TEST_F(dev, bad_pointer_is_efault)
{
	void *ro;

	EXPECT_EQ(-1, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, NULL));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, (void *)16));
	EXPECT_EQ(EFAULT, errno);

	ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, ro);
	EXPECT_EQ(-1, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, ro));
	EXPECT_EQ(EFAULT, errno);
	munmap(ro, 4096);
}

struct hammer {
	int fd;
	int calls;
	int failures;
	/* The first failure: its errno, and which call it was. */
	int first_errno;
	int first_call;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;
	struct bufshare_info info;

	for (int i = 0; i < h->calls; i++) {
		if (!ioctl(h->fd, BUFSHARE_IOC_GET_INFO, &info))
			continue;
		if (!h->failures++) {
			h->first_errno = errno;
			h->first_call = i;
		}
	}
	return NULL;
}

/* Many callers at once: every command is answered, none is lost or doubled. */
TEST_F(dev, concurrent_callers)
{
	enum { THREADS = 6, CALLS = 150 };
	struct hammer h[THREADS];
	pthread_t t[THREADS];
	struct bufshare_info before, after;

	ASSERT_EQ(0, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, &before));
	for (int i = 0; i < THREADS; i++) {
		h[i] = (struct hammer){ .fd = self->fd, .calls = CALLS };
		/* Half of them through files of their own. */
		if (i % 2)
			h[i].fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
		ASSERT_LE(0, h[i].fd);
		ASSERT_EQ(0, pthread_create(&t[i], NULL, hammer_thread, &h[i]));
	}
	for (int i = 0; i < THREADS; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_EQ(0, h[i].failures)
			TH_LOG("thread %d: %d calls failed, the first (call %d) with %s (errno %d)",
			       i, h[i].failures, h[i].first_call, strerror(h[i].first_errno),
			       h[i].first_errno);
		if (h[i].fd != self->fd)
			close(h[i].fd);
	}
	ASSERT_EQ(0, ioctl(self->fd, BUFSHARE_IOC_GET_INFO, &after));
	EXPECT_EQ(before.num_commands + THREADS * CALLS + 1, after.num_commands);
}

TEST(many_open_files)
{
	enum { FILES = 64 };
	int fds[FILES];
	struct bufshare_info info;

	for (int i = 0; i < FILES; i++) {
		fds[i] = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
		ASSERT_LE(0, fds[i]);
	}
	for (int i = 0; i < FILES; i++)
		EXPECT_EQ(0, ioctl(fds[i], BUFSHARE_IOC_GET_INFO, &info));
	for (int i = 0; i < FILES; i++)
		close(fds[i]);
}

TEST_HARNESS_MAIN
