// SPDX-License-Identifier: GPL-2.0
/*
 * The device reset behind the driver's back: a PCI function level reset
 * through sysfs, which the virtio-pci transport brackets with the driver's
 * reset_prepare and reset_done (the same steps as freeze and restore, on
 * suspend). The buffers stay registered with the driver, and so pinned,
 * through the reset; the device forgets them, and the driver gives them to
 * it again: the host sees every buffer back, whole, under the same id, and
 * commands issued meanwhile complete once the device is back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/bufshare.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"
#include "relay.h"

#define NBUF		16
#define SIZE		(64 * 1024UL)
#define APP		"reset"

/* The reset file of the PCI function the bound device sits on. */
static int reset_path(char *path, size_t len)
{
	char dev[64], link[PATH_MAX];
	int ret;

	ret = bound_device(dev, sizeof(dev));
	if (ret)
		return ret;
	snprintf(link, sizeof(link), "%s/%s/..", BUFSHARE_DRV_DIR, dev);
	if (!realpath(link, path) || strlen(path) + sizeof("/reset") > len)
		return -ENOENT;
	strcat(path, "/reset");
	return access(path, W_OK) ? -errno : 0;
}

FIXTURE(reset) {
	int dev;
	int memfd[NBUF];
	unsigned char *map[NBUF];
	__u64 id[NBUF];
	uint64_t seed;
	char path[PATH_MAX];
	char err[256];
};

FIXTURE_SETUP(reset)
{
	self->dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->dev) TH_LOG("open %s: %s", BUFSHARE_DEV, strerror(errno));
	ASSERT_EQ(0, reset_path(self->path, sizeof(self->path)))
		TH_LOG("no function level reset for the device: is it behind a PCIe port?");
	self->seed = fresh_seed();
	TH_LOG("seed %llu", (unsigned long long)self->seed);
	for (int i = 0; i < NBUF; i++) {
		self->memfd[i] = make_memfd(SIZE, BUFSHARE_SEALS);
		ASSERT_LE(0, self->memfd[i]);
		self->map[i] = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    self->memfd[i], 0);
		ASSERT_NE(MAP_FAILED, self->map[i]);
		fill_random(self->map[i], SIZE, self->seed + i);
		ASSERT_EQ(0, bs_register(self->dev, self->memfd[i], 0, SIZE, APP, NULL, 0,
					 &self->id[i]));
	}
}

FIXTURE_TEARDOWN(reset)
{
	for (int i = 0; i < NBUF; i++) {
		if (self->id[i])
			bs_unregister(self->dev, self->id[i]);
		if (self->map[i] && self->map[i] != MAP_FAILED)
			munmap(self->map[i], SIZE);
		if (self->memfd[i] > 0)
			close(self->memfd[i]);
	}
	close(self->dev);
}

/*
 * What a user checks after the reset: the device holds every buffer again
 * (GET_INFO), each takes an UPDATE with the next number, and the host reads
 * each whole, with what the guest wrote (through the relay, where there is
 * one).
 */
static int buffers_work(struct __test_metadata *_metadata, struct _test_data_reset *self,
			__u64 seqno)
{
	unsigned char *host = malloc(SIZE);

	if (!host)
		return -1;
	EXPECT_EQ(NBUF, device_num_buffers());
	for (int i = 0; i < NBUF; i++) {
		struct bufshare_update u = { .id = self->id[i] };
		__u64 got = 0;

		EXPECT_EQ(0, bs_update(self->dev, &u, &got)) TH_LOG("buffer %d", i);
		EXPECT_EQ(seqno, got) TH_LOG("buffer %d", i);
		if (!relay_ready())
			continue;
		EXPECT_EQ(0, relay_read(self->id[i], 0, host, SIZE, self->err,
					sizeof(self->err)))
			TH_LOG("buffer %d: %s", i, self->err);
		EXPECT_EQ(0, memcmp(host, self->map[i], SIZE)) TH_LOG("buffer %d differs", i);
	}
	free(host);
	return 0;
}

TEST_F_TIMEOUT(reset, buffers_come_back_after_function_reset, 300)
{
	char info[8192];

	ASSERT_EQ(0, buffers_work(_metadata, self, 1));
	ASSERT_EQ(0, write_file(self->path, "1")) TH_LOG("reset: %s", strerror(errno));
	/* Still registered with the driver, and so still pinned. */
	ASSERT_EQ(0, read_fdinfo(self->dev, info, sizeof(info)));
	EXPECT_NE(NULL, strstr(info, "buffers:\t16\n")) TH_LOG("%s", info);
	/* New contents after the reset reach the host too. */
	for (int i = 0; i < NBUF; i++)
		fill_random(self->map[i], SIZE, self->seed + NBUF + i);
	ASSERT_EQ(0, buffers_work(_metadata, self, 2));
}

struct updater {
	int dev;
	__u64 id;
	int stop;	/* read and written with __atomic */
	int calls, failed, last_errno;
};

static void *update_loop(void *arg)
{
	struct updater *u = arg;

	while (!__atomic_load_n(&u->stop, __ATOMIC_RELAXED)) {
		struct bufshare_update up = { .id = u->id };
		struct bufshare_info info;

		u->calls++;
		if (bs_update(u->dev, &up, NULL) ||
		    ioctl(u->dev, BUFSHARE_IOC_GET_INFO, &info)) {
			u->failed++;
			u->last_errno = errno;
		}
	}
	return NULL;
}

TEST_F_TIMEOUT(reset, commands_during_reset_complete, 300)
{
	struct updater u = { .dev = self->dev, .id = self->id[0] };
	pthread_t t;

	ASSERT_EQ(0, pthread_create(&t, NULL, update_loop, &u));
	usleep(200 * 1000);
	for (int i = 0; i < 3; i++)
		ASSERT_EQ(0, write_file(self->path, "1")) TH_LOG("reset: %s", strerror(errno));
	usleep(200 * 1000);
	__atomic_store_n(&u.stop, 1, __ATOMIC_RELAXED);
	pthread_join(t, NULL);
	TH_LOG("%d calls during 3 resets, %d failed", u.calls, u.failed);
	EXPECT_EQ(0, u.failed) TH_LOG("last errno %s", strerror(u.last_errno));
	EXPECT_LT(0, u.calls);
	EXPECT_EQ(NBUF, device_num_buffers());
}

TEST_HARNESS_MAIN
