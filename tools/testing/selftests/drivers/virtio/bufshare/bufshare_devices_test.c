// SPDX-License-Identifier: GPL-2.0
/*
 * Two bufshare devices in one guest: the first bound is /dev/bufshare, the
 * second /dev/bufshare1, each with its own buffers; unbinding one leaves
 * the other working, and binding it again brings its misc device back
 * under the number it had. The test guest has a second device when
 * scripts/vm.sh runs with BUFSHARE_SECOND_DEVICE=1; a guest with one
 * device skips the test.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/bufshare.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"

#define DEV1		"/dev/bufshare1"
#define PAGE		4096UL

/* The names of the bound virtio devices, in readdir order; returns how many. */
static int bound_devices(char names[][32], int max)
{
	DIR *d = opendir(BUFSHARE_DRV_DIR);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d)) && n < max) {
		if (strncmp(e->d_name, "virtio", 6) || strlen(e->d_name) >= 32)
			continue;
		strcpy(names[n++], e->d_name);
	}
	closedir(d);
	return n;
}

/* How many virtio devices of the bufshare type (37) the guest has, bound or not. */
static int bufshare_devices(void)
{
	DIR *d = opendir("/sys/bus/virtio/devices");
	char path[300], id[16];
	struct dirent *e;
	int n = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/bus/virtio/devices/%s/device", e->d_name);
		if (!read_text(path, id, sizeof(id)))
			n += strtol(id, NULL, 0) == 37;
	}
	closedir(d);
	return n;
}

static long long num_buffers(int fd)
{
	struct bufshare_info info;

	return ioctl(fd, BUFSHARE_IOC_GET_INFO, &info) ? -errno : (long long)info.num_buffers;
}

TEST(two_devices)
{
	char names[4][32], path[128];
	int fd0, fd1, m0, m1, n;
	const char *gone, *kept;
	__u64 id0, id1;

	if (bufshare_devices() < 2)
		SKIP(return, "one bufshare device (BUFSHARE_SECOND_DEVICE=1 attaches two)");
	/* Both bound, each with a misc device of its own. */
	n = bound_devices(names, 4);
	ASSERT_EQ(2, n);
	ASSERT_EQ(0, access(DEV1, F_OK)) TH_LOG("%s: %s", DEV1, strerror(errno));

	fd0 = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd0);
	fd1 = open(DEV1, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd1);
	m0 = make_memfd(PAGE, BUFSHARE_SEALS);
	m1 = make_memfd(2 * PAGE, BUFSHARE_SEALS);
	ASSERT_LE(0, m0);
	ASSERT_LE(0, m1);

	/* Each device has its own buffers, numbered on its own. */
	ASSERT_EQ(0, bs_register(fd0, m0, 0, PAGE, "devices-test", NULL, 0, &id0));
	ASSERT_EQ(0, bs_register(fd1, m1, 0, 2 * PAGE, "devices-test", NULL, 0, &id1));
	EXPECT_EQ(1, num_buffers(fd0));
	EXPECT_EQ(1, num_buffers(fd1));

	/* One device unbound: its misc device goes, the other works on. */
	snprintf(path, sizeof(path), "%s/unbind", BUFSHARE_DRV_DIR);
	ASSERT_EQ(0, write_file(path, names[1]));
	if (access(DEV1, F_OK)) {
		gone = DEV1;
		kept = BUFSHARE_DEV;
		EXPECT_EQ(ENODEV, bs_unregister(fd1, id1));
		EXPECT_EQ(1, num_buffers(fd0));
		EXPECT_EQ(0, bs_unregister(fd0, id0));
	} else {
		gone = BUFSHARE_DEV;
		kept = DEV1;
		EXPECT_EQ(ENODEV, bs_unregister(fd0, id0));
		EXPECT_EQ(1, num_buffers(fd1));
		EXPECT_EQ(0, bs_unregister(fd1, id1));
	}
	TH_LOG("unbound %s: %s went, %s stayed", names[1], gone, kept);
	EXPECT_EQ(0, access(kept, F_OK));
	EXPECT_NE(0, access(gone, F_OK));

	/* Bound again: the same name comes back. */
	snprintf(path, sizeof(path), "%s/bind", BUFSHARE_DRV_DIR);
	ASSERT_EQ(0, write_file(path, names[1]));
	EXPECT_EQ(0, wait_path(gone, 1));
	EXPECT_EQ(0, access(kept, F_OK));

	close(m0);
	close(m1);
	close(fd0);
	close(fd1);
}

TEST_HARNESS_MAIN
