// SPDX-License-Identifier: GPL-2.0
/*
 * The device removed under the driver: QEMU's device_del (asked for
 * through the host relay), carried out by the guest's ACPI hotplug,
 * while commands are pending (the backend answers each 2 s late) and
 * buffers are registered. The misc device goes, every caller gets its
 * answer or ENODEV, nothing hangs, and the buffers' pages are let go once
 * the device is gone. The device does not come back: the test runs last in
 * a boot of its own, and only when BUFSHARE_HOTPLUG_TEST=1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/bufshare.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"
#include "relay.h"

#define NBUF		8
#define NTHREADS	4
#define PAGE		4096UL

struct caller {
	int dev;
	__u64 id;
	int calls, answered, enodev, other, last_errno;
};

/* UPDATE and GET_INFO until the device is gone. */
static void *call_until_gone(void *arg)
{
	struct caller *c = arg;

	for (;;) {
		struct bufshare_update u = { .id = c->id };
		struct bufshare_info info;
		int ret;

		c->calls++;
		ret = c->calls % 2 ? bs_update(c->dev, &u, NULL) :
			(ioctl(c->dev, BUFSHARE_IOC_GET_INFO, &info) ? errno : 0);
		if (ret == ENODEV) {
			c->enodev++;
			return NULL;
		}
		if (!ret) {
			c->answered++;
		} else {
			c->other++;
			c->last_errno = ret;
		}
	}
}

static long long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

TEST(device_del_with_commands_pending)
{
	struct caller callers[NTHREADS] = {};
	pthread_t threads[NTHREADS];
	int dev, memfd[NBUF], ret;
	char *out = NULL, err[256] = "";
	size_t out_len = 0;
	long long start, gone = -1;
	__u64 id[NBUF];

	if (env_u64("BUFSHARE_HOTPLUG_TEST") != 1)
		SKIP(return, "the device would not come back (BUFSHARE_HOTPLUG_TEST=1 runs it)");
	ASSERT_TRUE(relay_ready()) TH_LOG("the relay asks QEMU for device_del");

	dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, dev);
	for (int i = 0; i < NBUF; i++) {
		memfd[i] = make_memfd(PAGE, F_SEAL_SHRINK | F_SEAL_GROW);
		ASSERT_LE(0, memfd[i]);
		ASSERT_EQ(0, bs_register(dev, memfd[i], 0, PAGE, "hotplug-test", NULL, 0, &id[i]));
		/* Registered: the device may write it, so no write seal. */
		ASSERT_NE(0, fcntl(memfd[i], F_ADD_SEALS, F_SEAL_WRITE));
	}

	ASSERT_EQ(0, set_fault("slow-answer"));
	for (int i = 0; i < NTHREADS; i++) {
		callers[i].dev = dev;
		callers[i].id = id[i];
		ASSERT_EQ(0, pthread_create(&threads[i], NULL, call_until_gone, &callers[i]));
	}
	usleep(500 * 1000);

	start = now_ms();
	ret = relay_run("device-del", NULL, 0, &out, &out_len, err, sizeof(err));
	ASSERT_EQ(0, ret) TH_LOG("device-del: %s", err);
	free(out);
	/* The guest carries the removal out when ACPI tells it. */
	for (int i = 0; i < 600; i++) {
		if (access(BUFSHARE_DEV, F_OK)) {
			gone = now_ms() - start;
			break;
		}
		usleep(100 * 1000);
	}
	ASSERT_LE(0, gone) TH_LOG("%s still there 60 s after device_del", BUFSHARE_DEV);

	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(threads[i], NULL);
		TH_LOG("caller %d: %d calls, %d answered, %d others (last %s), then ENODEV",
		       i, callers[i].calls, callers[i].answered, callers[i].other,
		       strerror(callers[i].last_errno));
		EXPECT_EQ(1, callers[i].enodev);
		EXPECT_EQ(0, callers[i].other);
	}
	TH_LOG("misc device gone %lld ms after device_del", gone);

	EXPECT_EQ(ENODEV, bs_unregister(dev, id[0]));
	/* The device is gone and was reset: every page is let go. */
	for (int i = 0; i < NBUF; i++) {
		EXPECT_EQ(0, fcntl(memfd[i], F_ADD_SEALS, F_SEAL_WRITE))
			TH_LOG("buffer %d still pinned: %s", i, strerror(errno));
		close(memfd[i]);
	}
	close(dev);
	set_fault("none");
}

TEST_HARNESS_MAIN
