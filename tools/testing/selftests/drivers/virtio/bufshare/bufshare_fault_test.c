// SPDX-License-Identifier: GPL-2.0
/*
 * A device that answers badly. The backend reads a fault mode from the file
 * named by BUFSHARE_FAULT_FILE before each command (see
 * tools/vhost-user-bufshare, --fault-file); each test makes it misbehave and
 * checks that the driver reports a clear error and keeps working.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
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

TEST_HARNESS_MAIN
