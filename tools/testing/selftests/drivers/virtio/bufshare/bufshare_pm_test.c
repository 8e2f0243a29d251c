// SPDX-License-Identifier: GPL-2.0
/*
 * A system suspend and resume with buffers registered: the driver's freeze
 * and restore. The virtio core resets the device on the way back, and the
 * driver must give the device every buffer again. Two tests suspend in the
 * PM core's test mode (/sys/power/pm_test "devices", then s2idle): every
 * device suspended, then resumed, the CPUs online. The last suspends to
 * RAM for real (S3), woken by the RTC's alarm: the CPUs go offline and the
 * firmware brings the system back. It runs last: under QEMU 11.1 and its
 * SeaBIOS, after that resume the kernel logs "Could not disable
 * RealTimeClock events" and an ACPI poweroff no longer stops the machine.
 *
 * The host tells what it holds through a serial port, BUFSHARE_PM_SERIAL
 * (scripts/pm-test.sh is its other end): the test writes a request line,
 * the host answers with lines "| TEXT" and then "rc N". Requests: "list"
 * (bufshare-inspect list), "crc ID OFF LEN" (the crc32 of what
 * bufshare-inspect read gives, in hex) and "resets" (the backend's
 * "device reset: N buffers dropped" log lines, as "dropped N").
 *
 * The guest's root must survive a suspend: the 9p root of the other guest
 * tests does not (net/9p/trans_virtio.c has no freeze or restore), so the
 * test skips itself without BUFSHARE_PM_SERIAL; scripts/pm-test.sh boots
 * an initramfs for it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <linux/bufshare.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"

#define NBUF		6
#define APP		"pm"
#define ANSWER_SIZE	65536
#define HOST_TIMEOUT_MS	60000
#define WAKEALARM	"/sys/class/rtc/rtc0/wakealarm"

/* How the system suspends. */
enum how {
	TEST_MODE,	/* pm_test "devices", s2idle */
	SUSPEND_TO_RAM,	/* S3, woken by the RTC */
};

/* Sizes of different page counts; the last is 1 MiB. */
static const size_t sizes[NBUF] = {
	4096, 8192, 65536, 3 * 65536, 512 * 1024, 1024 * 1024,
};

static const char *serial_path(void)
{
	const char *p = getenv("BUFSHARE_PM_SERIAL");

	return p && *p ? p : NULL;
}

/* Milliseconds, the time the system was suspended included. */
static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/*
 * Asks the host @req; the text of its "| " lines goes to @ans, one per
 * line. Returns the host's rc (0: done), or -errno (-ETIMEDOUT without an
 * answer).
 */
static int host_ask(const char *req, char *ans, size_t len)
{
	char buf[ANSWER_SIZE], *line, *next;
	size_t got = 0, used = 0;
	long long deadline = now_ms() + HOST_TIMEOUT_MS;
	struct termios tio;
	int fd, ret = -ETIMEDOUT;

	ans[0] = '\0';
	fd = open(serial_path(), O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Raw bytes both ways: no echo, no line editing, no CR/LF mapping. */
	if (tcgetattr(fd, &tio) == 0) {
		cfmakeraw(&tio);
		cfsetspeed(&tio, B115200);
		tcsetattr(fd, TCSANOW, &tio);
	}
	tcflush(fd, TCIOFLUSH);
	if (dprintf(fd, "%s\n", req) < 0) {
		ret = -errno;
		goto out;
	}
	while (now_ms() < deadline) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 1000) <= 0)
			continue;
		n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n <= 0) {
			ret = n ? -errno : -EIO;
			goto out;
		}
		got += n;
		buf[got] = '\0';
		/* Whole lines only; the answer ends with "rc N". */
		for (line = buf; (next = strchr(line, '\n')); line = next + 1) {
			*next = '\0';
			if (!strncmp(line, "| ", 2)) {
				used += snprintf(ans + used, used < len ? len - used : 0,
						 "%s\n", line + 2);
			} else if (!strncmp(line, "rc ", 3)) {
				ret = atoi(line + 3);
				goto out;
			}
		}
		got -= line - buf;
		memmove(buf, line, got);
		if (got == sizeof(buf) - 1) {
			ret = -E2BIG;
			goto out;
		}
	}
out:
	close(fd);
	return ret;
}

/*
 * The host's "list" entry of buffer @id, copied to @line: its line, then
 * its properties, a line each, starting with a TAB. 0 or -ENOENT.
 */
static int host_line(const char *list, __u64 id, char *line, size_t len)
{
	char key[32];
	const char *p, *end;

	snprintf(key, sizeof(key), "id=%llu ", (unsigned long long)id);
	for (p = list; *p; p = end + 1) {
		end = strchrnul(p, '\n');
		if (!strncmp(p, key, strlen(key))) {
			while (end[0] && end[1] == '\t')
				end = strchrnul(end + 1, '\n');
			snprintf(line, len, "%.*s", (int)(end - p), p);
			return 0;
		}
		if (!*end)
			break;
	}
	return -ENOENT;
}

/* How many of the host's "list" lines are of application APP. */
static int host_count(const char *list)
{
	const char *p = list;
	int n = 0;

	while ((p = strstr(p, " application=" APP " "))) {
		n++;
		p++;
	}
	return n;
}

/* The crc32 of what the host reads of buffer @id, or -errno. */
static long long host_crc(__u64 id, size_t size)
{
	char req[96], ans[256];
	int ret;

	snprintf(req, sizeof(req), "crc %llu 0 %zu", (unsigned long long)id, size);
	ret = host_ask(req, ans, sizeof(ans));
	if (ret)
		return ret < 0 ? ret : -EIO;
	return strtoll(ans, NULL, 16);
}

/* How many "device reset" lines the backend logged, the last's count in *@last. */
static int host_resets(int *last)
{
	char ans[4096], *p;
	int n = 0;

	if (host_ask("resets", ans, sizeof(ans)))
		return -1;
	*last = -1;
	for (p = ans; (p = strstr(p, "dropped ")); p++) {
		*last = atoi(p + strlen("dropped "));
		n++;
	}
	return n;
}

FIXTURE(pm) {
	int dev;
	int memfd[NBUF];
	unsigned char *map[NBUF];
	__u64 id[NBUF];
	__u64 seqno;
	uint64_t seed;
	char list[ANSWER_SIZE];
};

FIXTURE_SETUP(pm)
{
	if (!serial_path())
		SKIP(return, "no BUFSHARE_PM_SERIAL: scripts/pm-test.sh runs this test");
	ASSERT_EQ(0, access("/sys/power/pm_test", W_OK))
		TH_LOG("no /sys/power/pm_test: CONFIG_PM_DEBUG");
	self->dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->dev) TH_LOG("open %s: %s", BUFSHARE_DEV, strerror(errno));
	self->seed = fresh_seed();
	TH_LOG("seed %llu", (unsigned long long)self->seed);
	for (int i = 0; i < NBUF; i++) {
		char props[64];
		int n = snprintf(props, sizeof(props), "index=%d%cphase=registered", i, 0);

		self->memfd[i] = make_memfd(sizes[i], BUFSHARE_SEALS);
		ASSERT_LE(0, self->memfd[i]);
		self->map[i] = mmap(NULL, sizes[i], PROT_READ | PROT_WRITE, MAP_SHARED,
				    self->memfd[i], 0);
		ASSERT_NE(MAP_FAILED, self->map[i]);
		fill_random(self->map[i], sizes[i], self->seed + i);
		ASSERT_EQ(0, bs_register(self->dev, self->memfd[i], 0, sizes[i], APP,
					 props, n + 1, &self->id[i]));
	}
}

FIXTURE_TEARDOWN(pm)
{
	if (!serial_path())
		return;
	for (int i = 0; i < NBUF; i++) {
		if (self->id[i])
			bs_unregister(self->dev, self->id[i]);
		if (self->map[i] && self->map[i] != MAP_FAILED)
			munmap(self->map[i], sizes[i]);
		if (self->memfd[i] > 0)
			close(self->memfd[i]);
	}
	close(self->dev);
	write_file("/sys/power/pm_test", "none");
	write_file(WAKEALARM, "0");
}

/*
 * What the host holds, as a user would look: every buffer under its id,
 * whole (complete=1), of its size, with its properties; its bytes those
 * of the guest. Then an UPDATE of each, which
 * must take the next number, on both sides.
 */
static void host_has_buffers(struct __test_metadata *_metadata, struct _test_data_pm *self)
{
	char line[1024], want[64];

	ASSERT_EQ(0, host_ask("list", self->list, sizeof(self->list)));
	EXPECT_EQ(NBUF, host_count(self->list)) TH_LOG("host's list:\n%s", self->list);
	for (int i = 0; i < NBUF; i++) {
		long long crc;

		ASSERT_EQ(0, host_line(self->list, self->id[i], line, sizeof(line)))
			TH_LOG("buffer %d (id %llu) not on the host:\n%s", i,
			       (unsigned long long)self->id[i], self->list);
		snprintf(want, sizeof(want), " size=%zu ", sizes[i]);
		EXPECT_NE(NULL, strstr(line, want)) TH_LOG("%s", line);
		EXPECT_NE(NULL, strstr(line, " complete=1")) TH_LOG("%s", line);
		snprintf(want, sizeof(want), "\n\tindex=%d\n", i);
		EXPECT_NE(NULL, strstr(line, want)) TH_LOG("%s", line);
		EXPECT_NE(NULL, strstr(line, "\n\tphase=registered")) TH_LOG("%s", line);
		crc = host_crc(self->id[i], sizes[i]);
		EXPECT_EQ((long long)crc32(0, self->map[i], sizes[i]), crc)
			TH_LOG("buffer %d: the host read other bytes", i);
	}
	self->seqno++;
	for (int i = 0; i < NBUF; i++) {
		struct bufshare_update u = { .id = self->id[i] };
		__u64 got = 0;

		EXPECT_EQ(0, bs_update(self->dev, &u, &got)) TH_LOG("buffer %d", i);
		EXPECT_EQ(self->seqno, got) TH_LOG("buffer %d", i);
	}
	ASSERT_EQ(0, host_ask("list", self->list, sizeof(self->list)));
	for (int i = 0; i < NBUF; i++) {
		ASSERT_EQ(0, host_line(self->list, self->id[i], line, sizeof(line)));
		snprintf(want, sizeof(want), " seqno=%llu\n", (unsigned long long)self->seqno);
		EXPECT_NE(NULL, strstr(line, want)) TH_LOG("%s", line);
	}
}

/*
 * One suspend and resume (@how): the device is reset behind the driver,
 * the backend drops the buffers, the driver registers every one again.
 */
static void suspend_cycle(struct __test_metadata *_metadata, struct _test_data_pm *self,
			  enum how how)
{
	char line[512], info[8192], *p;
	int kmsg, s3, resets, after, dropped = -1;
	const char *state = "freeze";
	long long t0;

	ASSERT_LE(0, resets = host_resets(&dropped));
	ASSERT_LE(0, kmsg = kmsg_open());
	ASSERT_LE(0, s3 = kmsg_open());
	if (how == SUSPEND_TO_RAM) {
		ASSERT_EQ(0, write_file("/sys/power/pm_test", "none"));
		ASSERT_EQ(0, write_file("/sys/power/mem_sleep", "deep"))
			TH_LOG("no suspend to RAM: %s", strerror(errno));
		/* Wakes the system 3 s from now. */
		ASSERT_EQ(0, write_file(WAKEALARM, "0"));
		ASSERT_EQ(0, write_file(WAKEALARM, "+3")) TH_LOG("%s", strerror(errno));
		state = "mem";
	} else {
		ASSERT_EQ(0, write_file("/sys/power/pm_test", "devices"))
			TH_LOG("pm_test: %s", strerror(errno));
		/* The test mode waits this long with the devices suspended (5 s by default). */
		write_file("/sys/module/suspend/parameters/pm_test_delay", "1");
	}
	t0 = now_ms();
	ASSERT_EQ(0, write_file("/sys/power/state", state))
		TH_LOG("suspend (%s): %s", state, strerror(errno));
	TH_LOG("suspend (%s) and resume took %lld ms", state, now_ms() - t0);
	if (how == SUSPEND_TO_RAM)
		EXPECT_EQ(1, kmsg_find(s3, "Waking up from system sleep state S3", line,
				       sizeof(line)))
			TH_LOG("the system did not go through S3");
	close(s3);

	/* The driver found the device reset and gave it every buffer again. */
	EXPECT_EQ(1, kmsg_find(kmsg, "registered again", line, sizeof(line)))
		TH_LOG("no \"registered again\" in the kernel log");
	/* The record's first line: its text; what follows is its dictionary. */
	line[strcspn(line, "\n")] = '\0';
	p = strstr(line, "): ");
	TH_LOG("kernel: %s", p ? p + 3 : line);
	EXPECT_TRUE(p && atoi(p + 3) == NBUF && strstr(p, ", 0 not"))
		TH_LOG("%s", line);
	close(kmsg);

	/* The backend really was reset, with our buffers. */
	ASSERT_LE(0, after = host_resets(&dropped));
	EXPECT_LT(resets, after) TH_LOG("the backend logged no reset");
	EXPECT_EQ(NBUF, dropped) TH_LOG("the backend's reset dropped %d buffers", dropped);

	/* Still registered with the driver, and so still pinned. */
	ASSERT_EQ(0, read_fdinfo(self->dev, info, sizeof(info)));
	snprintf(line, sizeof(line), "buffers:\t%d\n", NBUF);
	EXPECT_NE(NULL, strstr(info, line)) TH_LOG("%s", info);
}

/* New bytes in every buffer, which the host must read in place. */
static void redraw(struct _test_data_pm *self, uint64_t round)
{
	for (int i = 0; i < NBUF; i++)
		fill_random(self->map[i], sizes[i], self->seed + round * NBUF + i);
}

/*
 * After the cycles: a new buffer registered and read back by the host,
 * new properties of an old one, then every buffer unregistered, on both
 * sides.
 */
static void then_works(struct __test_metadata *_metadata, struct _test_data_pm *self)
{
	static const char merged[] = "phase=merged";
	char line[1024];
	unsigned char *map;
	__u64 id = 0;
	int fd;

	fd = make_memfd(65536, BUFSHARE_SEALS);
	ASSERT_LE(0, fd);
	map = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, map);
	fill_random(map, 65536, self->seed ^ 0xfeed);
	EXPECT_EQ(0, bs_register(self->dev, fd, 0, 65536, APP, "new=1", 6, &id));
	EXPECT_EQ((long long)crc32(0, map, 65536), host_crc(id, 65536)) TH_LOG("the new buffer");
	EXPECT_EQ(0, bs_set_props(self->dev, self->id[0], merged, sizeof(merged),
				  BUFSHARE_PROPS_MERGE));
	ASSERT_EQ(0, host_ask("list", self->list, sizeof(self->list)));
	ASSERT_EQ(0, host_line(self->list, self->id[0], line, sizeof(line)));
	EXPECT_NE(NULL, strstr(line, "\n\tphase=merged")) TH_LOG("%s", line);
	EXPECT_NE(NULL, strstr(line, "\n\tindex=0")) TH_LOG("%s", line);
	EXPECT_EQ(NBUF + 1, device_num_buffers());

	EXPECT_EQ(0, bs_unregister_wait(self->dev, id));
	for (int i = 0; i < NBUF; i++) {
		EXPECT_EQ(0, bs_unregister_wait(self->dev, self->id[i])) TH_LOG("buffer %d", i);
		self->id[i] = 0;
	}
	EXPECT_EQ(0, device_num_buffers());
	ASSERT_EQ(0, host_ask("list", self->list, sizeof(self->list)));
	EXPECT_EQ(0, host_count(self->list)) TH_LOG("left on the host:\n%s", self->list);
	munmap(map, 65536);
	close(fd);
}

TEST_F_TIMEOUT(pm, buffers_come_back_after_suspend, 600)
{
	host_has_buffers(_metadata, self);
	suspend_cycle(_metadata, self, TEST_MODE);
	host_has_buffers(_metadata, self);
	redraw(self, 1);
	host_has_buffers(_metadata, self);
	then_works(_metadata, self);
}

TEST_F_TIMEOUT(pm, two_cycles_in_a_row, 600)
{
	host_has_buffers(_metadata, self);
	for (int round = 1; round <= 2; round++) {
		suspend_cycle(_metadata, self, TEST_MODE);
		redraw(self, round);
		host_has_buffers(_metadata, self);
	}
	then_works(_metadata, self);
}

/* Last: see the top of this file. */
TEST_F_TIMEOUT(pm, buffers_come_back_after_suspend_to_ram, 600)
{
	host_has_buffers(_metadata, self);
	suspend_cycle(_metadata, self, SUSPEND_TO_RAM);
	redraw(self, 1);
	host_has_buffers(_metadata, self);
	then_works(_metadata, self);
}

TEST_HARNESS_MAIN
