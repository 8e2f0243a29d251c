// SPDX-License-Identifier: GPL-2.0
/*
 * Buffers handed to host programs: what a consumer on the host, the
 * bufshare-watch tool on the backend's consumer socket, receives of the
 * buffers the guest registers. Watchers are started, stopped and followed
 * through the relay (scripts/relay.sh, relay.h); each logs one line
 * per event, with the CRC-32 of the buffer's whole content as the host
 * reads it through the memory it was passed. Without a relay
 * (BUFSHARE_RELAY_DIR unset) every test is skipped.
 *
 * Each test checks what a user of the host side would: a consumer gets
 * the buffers of its applications, and only those, with their size,
 * properties and content; it sees every later write and update in order,
 * the buffers that existed before it subscribed, every removal (unregister,
 * death of the guest process, unbinding of the driver); a consumer that
 * may not subscribe is refused; a consumer killed in the middle of a
 * stream does not slow the guest down, and the next one gets the buffer
 * as it is. When the device loses its buffers without a reset (as a
 * restarted backend does; the backend's "lose-buffers" fault does it in
 * place), the driver registers them again behind the applications' backs:
 * consumers get RESET, then every buffer again, whole, and the guest's
 * commands go on as if nothing happened.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/bufshare.h>

#include "kselftest_harness.h"
#include "bufshare_util.h"
#include "relay.h"

/* How long a watcher may take to log an event. */
#define WAIT_MS		RELAY_WATCH_TIMEOUT_MS
#define MAX_WATCHERS	8
#define LINE_LEN	8192

/* The guest's name on the backend (vm.sh: --guest-name guest0). */
static const char *guest_name(void)
{
	const char *g = getenv("BUFSHARE_GUEST_NAME");

	return g && *g ? g : "guest0";
}

static size_t page_size(void)
{
	return sysconf(_SC_PAGESIZE);
}

static long long elapsed_ms(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000LL + (now.tv_nsec - start->tv_nsec) / 1000000;
}

/* A guest buffer: a memfd or a dma-buf, mapped. */
struct gbuf {
	int fd;
	int dmabuf;		/* synced around CPU access */
	size_t size;
	unsigned char *map;
	__u64 id;
	char props[1024];	/* the blob registered */
	size_t props_size;
	char props_line[1024];	/* as the watcher logs it: "a=1,b=2" or "-" */
};

/*
 * Random properties: a few "name=value" with values of characters the
 * watcher logs as they are (no white space, no comma). @extra (may be
 * NULL) is a blob of more, first.
 */
static void random_props(struct gbuf *b, uint64_t seed, const char *extra, size_t extra_size)
{
	static const char vchars[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:/+=";
	int n = 2 + prng_next(&seed) % 5;
	char *p = b->props;

	b->props_size = 0;
	b->props_line[0] = '\0';
	if (extra) {
		memcpy(p, extra, extra_size);
		b->props_size = extra_size;
	}
	for (int i = 0; i < n; i++) {
		int vlen = prng_next(&seed) % 40;

		b->props_size += sprintf(p + b->props_size, "key%d.%x=", i,
					 (unsigned int)(prng_next(&seed) & 0xfff));
		for (int j = 0; j < vlen; j++)
			p[b->props_size++] = vchars[prng_next(&seed) % (sizeof(vchars) - 1)];
		p[b->props_size++] = '\0';
	}
	/* The log's form: the strings joined by commas. */
	for (size_t off = 0; off < b->props_size; off += strlen(p + off) + 1) {
		if (off)
			strcat(b->props_line, ",");
		strcat(b->props_line, p + off);
	}
	if (!b->props_size)
		strcpy(b->props_line, "-");
}

/* A sealed memfd of @size bytes, mapped and filled with random bytes. */
static int gbuf_memfd(struct gbuf *b, size_t size)
{
	memset(b, 0, sizeof(*b));
	b->dmabuf = -1;
	b->size = size;
	b->fd = make_memfd(size, BUFSHARE_SEALS);
	if (b->fd < 0)
		return b->fd;
	b->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
	if (b->map == MAP_FAILED) {
		b->map = NULL;
		return -errno;
	}
	fill_random(b->map, size, fresh_seed());
	strcpy(b->props_line, "-");
	return 0;
}

/* A dma-buf of @size bytes from the system dma-heap, likewise. */
static int gbuf_dmaheap(struct gbuf *b, size_t size)
{
	memset(b, 0, sizeof(*b));
	b->size = size;
	b->fd = make_heap_dmabuf(size);
	if (b->fd < 0)
		return b->fd;
	b->dmabuf = b->fd;
	b->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
	if (b->map == MAP_FAILED) {
		b->map = NULL;
		return -errno;
	}
	strcpy(b->props_line, "-");
	return 0;
}

static void gbuf_free(struct gbuf *b)
{
	if (b->map)
		munmap(b->map, b->size);
	if (b->fd >= 0)
		close(b->fd);
	b->map = NULL;
	b->fd = -1;
}

/*
 * Writes a fresh random pattern over @len bytes at @off of the buffer
 * (through the guest's mapping, synced for a dma-buf). Returns 0 or -errno.
 */
static int gbuf_write(struct gbuf *b, size_t off, size_t len)
{
	int ret = 0;

	if (b->dmabuf >= 0)
		ret = dmabuf_sync(b->dmabuf, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE);
	if (ret)
		return ret;
	fill_random(b->map + off, len, fresh_seed());
	if (b->dmabuf >= 0)
		ret = dmabuf_sync(b->dmabuf, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE);
	return ret;
}

/* The CRC-32 of the whole buffer as the guest sees it, as 8 hex digits. */
static void gbuf_crc(struct gbuf *b, char out[9])
{
	if (b->dmabuf >= 0)
		dmabuf_sync(b->dmabuf, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
	snprintf(out, 9, "%08x", crc32(0, b->map, b->size));
	if (b->dmabuf >= 0)
		dmabuf_sync(b->dmabuf, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ);
}

static int gbuf_register(int dev, struct gbuf *b, const char *app)
{
	return bs_register(dev, b->fd, 0, b->size, app, b->props_size ? b->props : NULL,
			   b->props_size, &b->id);
}

FIXTURE(consumer) {
	int dev;
	char watchers[MAX_WATCHERS][40];
	int nr_watchers;
	char line[LINE_LEN];
	char pattern[256];
	char field[LINE_LEN];
};

FIXTURE_SETUP(consumer)
{
	self->dev = -1;
	if (!relay_dir())
		SKIP(return, "no host relay (BUFSHARE_RELAY_DIR is not set)");
	ASSERT_TRUE(relay_ready()) TH_LOG("the relay did not start: no %s/ready", relay_dir());
	self->dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->dev) TH_LOG("open %s: %s", BUFSHARE_DEV, strerror(errno));
}

FIXTURE_TEARDOWN(consumer)
{
	/* Whatever happened, the watchers of the test end. */
	for (int i = 0; i < self->nr_watchers; i++)
		relay_watch_stop(self->watchers[i], NULL);
	if (self->dev >= 0)
		close(self->dev);
}

/* Shows the last lines of watcher @name's log and its standard error. */
static void show_log(const char *name)
{
	char file[64], *log = NULL, *p;
	size_t len = 0;
	int lines = 0;

	if (relay_watch_log(name, &log, &len)) {
		fprintf(stderr, "#   (no log of watcher %s)\n", name);
	} else {
		for (p = log + len; p > log; p--)
			if (p[-1] == '\n' && ++lines > 40)
				break;
		fprintf(stderr, "#   watcher %s, %zu bytes of log%s:\n", name, len,
			p > log ? ", the end" : "");
		for (char *l = strtok(p, "\n"); l; l = strtok(NULL, "\n"))
			fprintf(stderr, "#   | %s\n", l);
	}
	free(log);
	snprintf(file, sizeof(file), "%s.stderr", name);
	if (!relay_get(file, &log, &len)) {
		for (char *l = strtok(log, "\n"); l; l = strtok(NULL, "\n"))
			fprintf(stderr, "#   stderr: %s\n", l);
		free(log);
	}
}

/*
 * Starts a watcher of @apps; its name, @base and the pid (unique to this
 * test), goes to @name (40 bytes). With @welcome, waits until it is
 * subscribed (its WELCOME line). Returns 0 or -1 (logged).
 */
static int start_watcher(struct __test_metadata *_metadata, struct _test_data_consumer *self,
			 const char *base, const char *apps, int nobody, int welcome,
			 char *name)
{
	int ret;

	if (self->nr_watchers == MAX_WATCHERS) {
		TH_LOG("too many watchers");
		return -1;
	}
	snprintf(name, 40, "%.20s-%d", base, (int)getpid());
	ret = relay_watch(name, apps, nobody);
	if (ret) {
		TH_LOG("relay: watch %s %s%s: %d", name, apps, nobody ? " nobody" : "", ret);
		return -1;
	}
	strcpy(self->watchers[self->nr_watchers++], name);
	if (!welcome)
		return 0;
	ret = relay_wait_line(name, "WELCOME", WAIT_MS, NULL, 0);
	if (ret <= 0) {
		TH_LOG("watcher %s did not subscribe: %d", name, ret);
		show_log(name);
		return -1;
	}
	return 0;
}

/*
 * Waits for the line of watcher @name matching @pattern (printf-style),
 * after its first @after lines; the line goes to self->line. Returns its
 * number, or 0 when none came (the log is shown).
 */
static int __printf(5, 6)
wait_line(struct __test_metadata *_metadata, struct _test_data_consumer *self, const char *name,
	  int after, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	vsnprintf(self->pattern, sizeof(self->pattern), fmt, ap);
	va_end(ap);
	ret = relay_wait_line_after(name, self->pattern, after, WAIT_MS, self->line,
				    sizeof(self->line));
	if (ret > 0)
		return ret;
	TH_LOG("watcher %s: no line '%s' within %d ms (%d)", name, self->pattern, WAIT_MS, ret);
	show_log(name);
	return 0;
}

/* The value of @key in self->line, in self->field ("" without it). */
static const char *field(struct _test_data_consumer *self, const char *key)
{
	relay_line_field(self->line, key, self->field, sizeof(self->field));
	return self->field;
}

/* Checks an ADD line (in self->line) against buffer @b of @app. */
#define EXPECT_ADD(b, app, seqno) do { \
	struct gbuf *b_ = (b); \
	char crc_[9], num_[32]; \
	EXPECT_STREQ(guest_name(), field(self, "guest")); \
	EXPECT_STREQ((app), field(self, "app")); \
	snprintf(num_, sizeof(num_), "%zu", b_->size); \
	EXPECT_STREQ(num_, field(self, "size")); \
	snprintf(num_, sizeof(num_), "%llu", (unsigned long long)(seqno)); \
	EXPECT_STREQ(num_, field(self, "seqno")); \
	gbuf_crc(b_, crc_); \
	EXPECT_STREQ(crc_, field(self, "crc32")) \
		TH_LOG("the host read other bytes than the guest wrote"); \
	EXPECT_STREQ(b_->props_line, field(self, "props")); \
} while (0)

/*
 * Two applications, each with its consumer: each consumer gets its
 * application's buffer, whole and exact, and never hears of the other's.
 */
TEST_F_TIMEOUT(consumer, two_apps_two_consumers, 180)
{
	char wa[40], wb[40];
	struct gbuf a, b;

	ASSERT_EQ(0, start_watcher(_metadata, self, "alpha", "alpha", 0, 1, wa));
	ASSERT_EQ(0, start_watcher(_metadata, self, "beta", "beta", 0, 1, wb));

	ASSERT_EQ(0, gbuf_memfd(&a, (1 + fresh_seed() % 24) * page_size()));
	ASSERT_EQ(0, gbuf_memfd(&b, (1 + fresh_seed() % 24) * page_size()));
	random_props(&a, fresh_seed(), NULL, 0);
	random_props(&b, fresh_seed(), NULL, 0);
	ASSERT_EQ(0, gbuf_register(self->dev, &a, "alpha"));
	ASSERT_EQ(0, gbuf_register(self->dev, &b, "beta"));

	ASSERT_LT(0, wait_line(_metadata, self, wa, 0, "ADD guest=%s id=%llu", guest_name(),
			       (unsigned long long)a.id));
	EXPECT_ADD(&a, "alpha", 0);
	ASSERT_LT(0, wait_line(_metadata, self, wb, 0, "ADD guest=%s id=%llu", guest_name(),
			       (unsigned long long)b.id));
	EXPECT_ADD(&b, "beta", 0);

	ASSERT_EQ(0, bs_unregister(self->dev, a.id));
	ASSERT_EQ(0, bs_unregister(self->dev, b.id));
	ASSERT_LT(0, wait_line(_metadata, self, wa, 0, "REMOVE guest=%s id=%llu", guest_name(),
			       (unsigned long long)a.id));
	ASSERT_LT(0, wait_line(_metadata, self, wb, 0, "REMOVE guest=%s id=%llu", guest_name(),
			       (unsigned long long)b.id));

	/* Both buffers' whole lives are over: nothing crossed. */
	snprintf(self->pattern, sizeof(self->pattern), "id=%llu", (unsigned long long)b.id);
	EXPECT_TRUE(relay_no_line(wa, self->pattern)) show_log(wa);
	EXPECT_TRUE(relay_no_line(wa, "app=beta")) show_log(wa);
	snprintf(self->pattern, sizeof(self->pattern), "id=%llu", (unsigned long long)a.id);
	EXPECT_TRUE(relay_no_line(wb, self->pattern)) show_log(wb);
	EXPECT_TRUE(relay_no_line(wb, "app=alpha")) show_log(wb);
	/* One ADD and one REMOVE each. */
	EXPECT_EQ(1, relay_count_lines(wa, "ADD"));
	EXPECT_EQ(1, relay_count_lines(wa, "REMOVE"));
	EXPECT_EQ(1, relay_count_lines(wb, "ADD"));
	EXPECT_EQ(1, relay_count_lines(wb, "REMOVE"));
	gbuf_free(&a);
	gbuf_free(&b);
}

/*
 * Writes after the ADD reach the host: five rounds of a fresh pattern and
 * an UPDATE (whole, a byte range, a rectangle of pixels), each seen with
 * its seqno and the CRC of the new content, in order.
 */
TEST_F_TIMEOUT(consumer, later_writes_are_seen, 180)
{
	static const char fb[] = "width=64\0height=64\0stride=256\0format=875713112";
	/* seqno 0: the driver numbers it; others, chosen, with gaps. */
	static const __u64 seqnos[] = { 0, 7, 0, 100, 0 };
	const unsigned int w = 64, h = 64, stride = 256;
	int last = 0, n;
	char wname[40], crc[9];
	struct gbuf b;
	__u64 prev = 0;

	ASSERT_EQ(0, gbuf_memfd(&b, (size_t)stride * h));
	random_props(&b, fresh_seed(), fb, sizeof(fb));
	ASSERT_EQ(0, start_watcher(_metadata, self, "later", "later", 0, 1, wname));
	ASSERT_EQ(0, gbuf_register(self->dev, &b, "later"));
	ASSERT_LT(0, (last = wait_line(_metadata, self, wname, 0, "ADD id=%llu",
				       (unsigned long long)b.id)));
	EXPECT_ADD(&b, "later", 0);

	for (int round = 0; round < 5; round++) {
		struct bufshare_update u = { .id = b.id, .seqno = seqnos[round] };
		char range[64] = "-", rect[64] = "-";
		__u64 seqno = 0;

		switch (round % 3) {
		case 0:		/* the whole buffer */
			ASSERT_EQ(0, gbuf_write(&b, 0, b.size));
			break;
		case 1:		/* a byte range, across pages */
			u.flags = BUFSHARE_UPDATE_RANGE;
			u.offset = 1000 + round * 512;
			u.length = 5000;
			ASSERT_EQ(0, gbuf_write(&b, u.offset, u.length));
			snprintf(range, sizeof(range), "%llu+%llu", (unsigned long long)u.offset,
				 (unsigned long long)u.length);
			break;
		case 2:		/* a rectangle of 4-byte pixels */
			u.flags = BUFSHARE_UPDATE_RECT;
			u.x = 5 + round;
			u.y = 3;
			u.width = 20;
			u.height = 30;
			for (unsigned int y = u.y; y < u.y + u.height; y++)
				ASSERT_EQ(0, gbuf_write(&b, y * stride + u.x * 4, u.width * 4));
			snprintf(rect, sizeof(rect), "%u,%u,%ux%u", u.x, u.y, u.width, u.height);
			break;
		}
		ASSERT_LE(u.x + u.width, w);
		gbuf_crc(&b, crc);
		ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
		EXPECT_LT(prev, seqno);
		if (seqnos[round])
			EXPECT_EQ(seqnos[round], seqno);
		n = wait_line(_metadata, self, wname, 0, "UPDATE id=%llu seqno=%llu",
			      (unsigned long long)b.id, (unsigned long long)seqno);
		ASSERT_LT(0, n) TH_LOG("round %d", round);
		/* After the ADD and every earlier UPDATE. */
		EXPECT_LT(last, n) TH_LOG("round %d: UPDATE seqno %llu on line %d, before line %d",
					  round, (unsigned long long)seqno, n, last);
		EXPECT_STREQ(crc, field(self, "crc32"))
			TH_LOG("round %d: the host does not see the guest's new bytes", round);
		EXPECT_STREQ(range, field(self, "range"));
		EXPECT_STREQ(rect, field(self, "rect"));
		last = n;
		prev = seqno;
	}
	/* Five UPDATEs, no more. */
	snprintf(self->pattern, sizeof(self->pattern), "UPDATE id=%llu", (unsigned long long)b.id);
	EXPECT_EQ(5, relay_count_lines(wname, self->pattern)) show_log(wname);
	EXPECT_EQ(0, bs_unregister(self->dev, b.id));
	gbuf_free(&b);
}

/*
 * Buffers registered before the consumer subscribes: it gets them all at
 * once, in id order, as they are now (content and last seqno).
 */
TEST_F_TIMEOUT(consumer, existing_buffers_on_subscribe, 180)
{
	struct bufshare_update u = { 0 };
	struct gbuf b[3];
	char wname[40];
	int lines[3];
	__u64 seqno = 0;

	for (int i = 0; i < 3; i++) {
		ASSERT_EQ(0, gbuf_memfd(&b[i], (1 + i * 3) * page_size()));
		random_props(&b[i], fresh_seed(), NULL, 0);
		ASSERT_EQ(0, gbuf_register(self->dev, &b[i], "existing"));
	}
	/* One of them changed and updated before the consumer comes. */
	ASSERT_EQ(0, gbuf_write(&b[1], 0, b[1].size));
	u.id = b[1].id;
	u.seqno = 5;
	ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));

	ASSERT_EQ(0, start_watcher(_metadata, self, "existing", "existing", 0, 0, wname));
	for (int i = 0; i < 3; i++) {
		lines[i] = wait_line(_metadata, self, wname, 0, "ADD id=%llu",
				     (unsigned long long)b[i].id);
		ASSERT_LT(0, lines[i]);
		EXPECT_ADD(&b[i], "existing", i == 1 ? 5 : 0);
		if (i)
			EXPECT_LT(lines[i - 1], lines[i]);
	}
	for (int i = 0; i < 3; i++) {
		EXPECT_EQ(0, bs_unregister(self->dev, b[i].id));
		gbuf_free(&b[i]);
	}
}

/* UNREGISTER: the consumer gets a REMOVE, and nothing more about it. */
TEST_F_TIMEOUT(consumer, remove_after_unregister, 180)
{
	struct bufshare_update u = { 0 };
	char wname[40];
	struct gbuf b;
	int n;

	ASSERT_EQ(0, start_watcher(_metadata, self, "unreg", "unreg", 0, 1, wname));
	ASSERT_EQ(0, gbuf_memfd(&b, 4 * page_size()));
	ASSERT_EQ(0, gbuf_register(self->dev, &b, "unreg"));
	ASSERT_LT(0, wait_line(_metadata, self, wname, 0, "ADD id=%llu",
			       (unsigned long long)b.id));
	EXPECT_ADD(&b, "unreg", 0);
	ASSERT_EQ(0, bs_unregister(self->dev, b.id));
	n = wait_line(_metadata, self, wname, 0, "REMOVE guest=%s id=%llu", guest_name(),
		      (unsigned long long)b.id);
	ASSERT_LT(0, n);
	/* The buffer is gone from the guest's side too. */
	u.id = b.id;
	EXPECT_EQ(ENOENT, bs_update(self->dev, &u, NULL));
	snprintf(self->pattern, sizeof(self->pattern), "id=%llu", (unsigned long long)b.id);
	EXPECT_EQ(2, relay_count_lines(wname, self->pattern)) show_log(wname);
	gbuf_free(&b);
}

/* The guest process that registered dies (SIGKILL): REMOVE for its buffer. */
TEST_F_TIMEOUT(consumer, remove_after_sigkill, 180)
{
	int pipefd[2], status, n;
	char wname[40];
	__u64 id = 0;
	pid_t pid;

	ASSERT_EQ(0, start_watcher(_metadata, self, "killed", "killed", 0, 1, wname));
	ASSERT_EQ(0, pipe(pipefd));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct gbuf b;
		int dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);

		close(pipefd[0]);
		if (dev < 0 || gbuf_memfd(&b, 8 * page_size()) ||
		    gbuf_register(dev, &b, "killed"))
			_exit(1);
		if (write(pipefd[1], &b.id, sizeof(b.id)) != sizeof(b.id))
			_exit(1);
		for (;;)
			pause();
	}
	close(pipefd[1]);
	if (read(pipefd[0], &id, sizeof(id)) != sizeof(id)) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		ASSERT_TRUE(0) TH_LOG("the child could not register a buffer");
	}
	close(pipefd[0]);
	n = wait_line(_metadata, self, wname, 0, "ADD id=%llu app=killed",
		      (unsigned long long)id);
	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFSIGNALED(status));
	ASSERT_LT(0, n);
	ASSERT_LT(0, wait_line(_metadata, self, wname, 0, "REMOVE guest=%s id=%llu", guest_name(),
			       (unsigned long long)id));
}

/*
 * Unbinding the driver resets the device: the consumer holding a buffer
 * of the guest gets RESET. Bound again, the device works and the consumer
 * gets the new buffers.
 */
TEST_F_TIMEOUT(consumer, reset_on_unbind, 180)
{
	struct bufshare_info info;
	char wname[40], dev[64];
	struct gbuf b, c;
	int fd, n;

	ASSERT_EQ(0, bound_device(dev, sizeof(dev)));
	ASSERT_EQ(0, start_watcher(_metadata, self, "reset", "reset", 0, 1, wname));
	ASSERT_EQ(0, gbuf_memfd(&b, 2 * page_size()));
	ASSERT_EQ(0, gbuf_register(self->dev, &b, "reset"));
	ASSERT_LT(0, (n = wait_line(_metadata, self, wname, 0, "ADD id=%llu",
				    (unsigned long long)b.id)));

	ASSERT_EQ(0, write_file(BUFSHARE_DRV_DIR "/unbind", dev));
	n = wait_line(_metadata, self, wname, n, "RESET guest=%s", guest_name());
	EXPECT_LT(0, n);
	if (n)
		EXPECT_STREQ("DEVICE_RESET", field(self, "reason"));

	ASSERT_EQ(0, write_file(BUFSHARE_DRV_DIR "/bind", dev));
	ASSERT_EQ(0, wait_path(BUFSHARE_DEV, 1));
	close(self->dev);
	self->dev = -1;
	fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ioctl(fd, BUFSHARE_IOC_GET_INFO, &info)) TH_LOG("GET_INFO: %s",
								     strerror(errno));
	EXPECT_EQ(0, info.num_buffers);
	self->dev = fd;

	/* The same consumer gets what is registered now. */
	ASSERT_EQ(0, gbuf_memfd(&c, 3 * page_size()));
	random_props(&c, fresh_seed(), NULL, 0);
	ASSERT_EQ(0, gbuf_register(self->dev, &c, "reset"));
	ASSERT_LT(0, wait_line(_metadata, self, wname, n, "ADD id=%llu",
			       (unsigned long long)c.id));
	EXPECT_ADD(&c, "reset", 0);
	EXPECT_EQ(0, bs_unregister(self->dev, c.id));
	gbuf_free(&b);
	gbuf_free(&c);
}

/*
 * A consumer of another uid, which the backend was not told to allow, is
 * refused: ERROR DENIED, and the watcher exits with status 2.
 */
TEST_F_TIMEOUT(consumer, refused_subscriber, 120)
{
	char wname[40];
	struct gbuf b;
	int status = -1;

	/* A buffer exists: a refused consumer must not get it. */
	ASSERT_EQ(0, gbuf_memfd(&b, page_size()));
	ASSERT_EQ(0, gbuf_register(self->dev, &b, "refused"));
	ASSERT_EQ(0, start_watcher(_metadata, self, "refused", "*", 1, 0, wname));
	ASSERT_LT(0, wait_line(_metadata, self, wname, 0, "ERROR code=DENIED"));
	ASSERT_EQ(0, relay_watch_stop(wname, &status));
	EXPECT_EQ(2, status);
	EXPECT_TRUE(relay_no_line(wname, "WELCOME")) show_log(wname);
	EXPECT_TRUE(relay_no_line(wname, "ADD")) show_log(wname);
	EXPECT_EQ(0, bs_unregister(self->dev, b.id));
	gbuf_free(&b);
}

/*
 * The backend's configuration lets uid 65534 subscribe to "permitted" only
 * (vm.sh: --allow 65534=permitted): that subscription works and gets that
 * application's buffer, one that asks for another application too is
 * refused.
 */
TEST_F_TIMEOUT(consumer, permitted_subscriber, 120)
{
	char ok_name[40], bad_name[40];
	struct gbuf b;
	int status = -1;

	ASSERT_EQ(0, gbuf_memfd(&b, page_size()));
	ASSERT_EQ(0, gbuf_register(self->dev, &b, "permitted"));
	ASSERT_EQ(0, start_watcher(_metadata, self, "permitted", "permitted", 1, 1, ok_name));
	ASSERT_LT(0, wait_line(_metadata, self, ok_name, 0, "ADD guest=%s id=%llu app=permitted",
			       guest_name(), (unsigned long long)b.id));
	ASSERT_EQ(0, start_watcher(_metadata, self, "mixed", "permitted,other", 1, 0, bad_name));
	ASSERT_LT(0, wait_line(_metadata, self, bad_name, 0, "ERROR code=DENIED"));
	ASSERT_EQ(0, relay_watch_stop(bad_name, &status));
	EXPECT_EQ(2, status);
	EXPECT_TRUE(relay_no_line(bad_name, "ADD")) show_log(bad_name);
	EXPECT_EQ(0, bs_unregister(self->dev, b.id));
	gbuf_free(&b);
}

/*
 * A consumer killed while it follows a buffer's updates: the guest goes
 * on updating at full speed (the backend does not wait for a dead
 * consumer), and a new consumer gets the buffer as it is now.
 */
TEST_F_TIMEOUT(consumer, consumer_killed_midstream, 180)
{
	char w1[40], w2[40], crc[9];
	struct timespec start;
	struct gbuf b;
	__u64 seqno = 0;
	long long ms;

	ASSERT_EQ(0, start_watcher(_metadata, self, "mid1", "midstream", 0, 1, w1));
	ASSERT_EQ(0, gbuf_memfd(&b, 64 * page_size()));
	random_props(&b, fresh_seed(), NULL, 0);
	ASSERT_EQ(0, gbuf_register(self->dev, &b, "midstream"));
	ASSERT_LT(0, wait_line(_metadata, self, w1, 0, "ADD id=%llu",
			       (unsigned long long)b.id));

	/* The consumer follows... */
	for (int i = 0; i < 3; i++) {
		struct bufshare_update u = { .id = b.id };

		ASSERT_EQ(0, gbuf_write(&b, 0, b.size));
		gbuf_crc(&b, crc);
		ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
		ASSERT_LT(0, wait_line(_metadata, self, w1, 0, "UPDATE id=%llu seqno=%llu",
				       (unsigned long long)b.id, (unsigned long long)seqno));
		EXPECT_STREQ(crc, field(self, "crc32"));
	}
	/* ...updates are on their way to it when it is killed... */
	for (int i = 0; i < 5; i++) {
		struct bufshare_update u = { .id = b.id };

		ASSERT_EQ(0, gbuf_write(&b, 0, b.size));
		ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	}
	ASSERT_EQ(0, relay_watch_kill(w1));

	/* ...and the guest does not notice. */
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (int i = 0; i < 20; i++) {
		struct bufshare_update u = { .id = b.id };

		ASSERT_EQ(0, gbuf_write(&b, 0, b.size));
		ASSERT_EQ(0, bs_update(self->dev, &u, &seqno)) TH_LOG("update %d", i);
	}
	ms = elapsed_ms(&start);
	/* Far from the 10 s the backend would give a consumer that is stuck. */
	EXPECT_GT(5000, ms) TH_LOG("20 updates took %lld ms", ms);

	/* A new consumer: the buffer as it is, with its last seqno. */
	ASSERT_EQ(0, start_watcher(_metadata, self, "mid2", "midstream", 0, 0, w2));
	ASSERT_LT(0, wait_line(_metadata, self, w2, 0, "ADD id=%llu",
			       (unsigned long long)b.id));
	EXPECT_ADD(&b, "midstream", seqno);
	EXPECT_EQ(0, bs_unregister(self->dev, b.id));
	gbuf_free(&b);
}

/*
 * A dma-buf from the system dma-heap: the host reads its content through
 * what it was passed, at the ADD and after an UPDATE.
 */
TEST_F_TIMEOUT(consumer, dmaheap_buffer, 180)
{
	struct bufshare_update u = { 0 };
	char wname[40], crc[9];
	struct gbuf b;
	__u64 seqno = 0;
	int ret;

	ret = gbuf_dmaheap(&b, 256 * 1024);
	ASSERT_EQ(0, ret) TH_LOG("dma-heap: %s", strerror(-ret));
	ASSERT_EQ(0, gbuf_write(&b, 0, b.size));
	random_props(&b, fresh_seed(), NULL, 0);
	ASSERT_EQ(0, start_watcher(_metadata, self, "dmaheap", "dmaheap", 0, 1, wname));
	ASSERT_EQ(0, gbuf_register(self->dev, &b, "dmaheap"));
	ASSERT_LT(0, wait_line(_metadata, self, wname, 0, "ADD id=%llu",
			       (unsigned long long)b.id));
	EXPECT_ADD(&b, "dmaheap", 0);

	ASSERT_EQ(0, gbuf_write(&b, 4096 + 100, 70000));
	gbuf_crc(&b, crc);
	u.id = b.id;
	ASSERT_EQ(0, bs_update(self->dev, &u, &seqno));
	ASSERT_LT(0, wait_line(_metadata, self, wname, 0, "UPDATE id=%llu seqno=%llu",
			       (unsigned long long)b.id, (unsigned long long)seqno));
	EXPECT_STREQ(crc, field(self, "crc32"));
	EXPECT_EQ(0, bs_unregister(self->dev, b.id));
	ASSERT_LT(0, wait_line(_metadata, self, wname, 0, "REMOVE id=%llu",
			       (unsigned long long)b.id));
	gbuf_free(&b);
}

/*
 * Makes the device lose its buffers before its next command, as a
 * restarted backend does: the backend's fault file gets a token it has
 * not seen yet. Returns 0 or -errno.
 */
static int lose_buffers(void)
{
	static unsigned int count;
	char mode[64];

	snprintf(mode, sizeof(mode), "lose-buffers t%d-%u-%llx", (int)getpid(), ++count,
		 (unsigned long long)(fresh_seed() & 0xffffff));
	return set_fault(mode);
}

/* A sealed memfd of @size bytes whose pages are scattered (many ranges). */
static int gbuf_scattered(struct gbuf *b, size_t size)
{
	void *map;

	memset(b, 0, sizeof(*b));
	b->dmabuf = -1;
	b->size = size;
	b->fd = make_scattered_memfd(size, &map);
	if (b->fd < 0)
		return b->fd;
	b->map = map;
	fill_random(b->map, size, fresh_seed());
	strcpy(b->props_line, "-");
	return 0;
}

/*
 * The device loses its buffers: a memfd, a dma-buf and a memfd of more
 * than 1024 ranges (so REGISTER and ADD_RANGES). The next UPDATE works as
 * if nothing happened; the consumer gets RESET, then each buffer again,
 * whole and exact, then the UPDATE.
 */
TEST_F_TIMEOUT(consumer, buffers_come_back_after_loss, 240)
{
	struct bufshare_buffer_info info;
	struct bufshare_update u = { 0 };
	long long before, after;
	int n, reset, line[3];
	struct gbuf b[3];
	char wname[40];
	__u64 seqno = 0;

	ASSERT_EQ(0, set_fault("none"));
	ASSERT_EQ(0, start_watcher(_metadata, self, "lost", "lost", 0, 1, wname));
	ASSERT_EQ(0, gbuf_memfd(&b[0], 5 * page_size()));
	ASSERT_EQ(0, gbuf_dmaheap(&b[1], 3 * page_size()));
	ASSERT_EQ(0, gbuf_write(&b[1], 0, b[1].size));
	ASSERT_EQ(0, gbuf_scattered(&b[2], 2048 * page_size()));
	for (int i = 0; i < 3; i++) {
		random_props(&b[i], fresh_seed(), NULL, 0);
		ASSERT_EQ(0, gbuf_register(self->dev, &b[i], "lost"));
		ASSERT_LT(0, (n = wait_line(_metadata, self, wname, 0, "ADD id=%llu",
					    (unsigned long long)b[i].id)));
	}
	ASSERT_EQ(0, bs_buffer_info(self->dev, b[2].id, &info, NULL, 0));
	ASSERT_LT(1024, info.nr_ranges) TH_LOG("the scattered memfd has too few ranges");
	before = device_num_buffers();

	ASSERT_EQ(0, lose_buffers());
	ASSERT_EQ(0, gbuf_write(&b[0], 0, b[0].size));
	u.id = b[0].id;
	EXPECT_EQ(0, bs_update(self->dev, &u, &seqno)) TH_LOG("UPDATE after the loss");
	EXPECT_EQ(1, seqno);

	reset = wait_line(_metadata, self, wname, n, "RESET guest=%s", guest_name());
	ASSERT_LT(0, reset);
	for (int i = 0; i < 3; i++) {
		line[i] = wait_line(_metadata, self, wname, reset, "ADD id=%llu",
				    (unsigned long long)b[i].id);
		ASSERT_LT(0, line[i]) TH_LOG("buffer %d did not come back", i);
		EXPECT_ADD(&b[i], "lost", 0);
	}
	n = wait_line(_metadata, self, wname, reset, "UPDATE id=%llu seqno=1",
		      (unsigned long long)b[0].id);
	ASSERT_LT(0, n);
	EXPECT_LT(line[0], n) TH_LOG("the UPDATE came before its buffer");
	after = device_num_buffers();
	EXPECT_EQ(before, after) TH_LOG("the device has %lld buffers, had %lld", after, before);

	for (int i = 0; i < 3; i++) {
		EXPECT_EQ(0, bs_unregister(self->dev, b[i].id));
		gbuf_free(&b[i]);
	}
	EXPECT_EQ(0, set_fault("none"));
}

/*
 * After a loss: a buffer registered by the very command that meets the
 * new device is not registered twice, and the others come back before
 * that command returns; SET_PROPERTIES and UNREGISTER of them work, and
 * the consumer sees each change once.
 */
TEST_F_TIMEOUT(consumer, commands_after_loss, 240)
{
	static const char extra[] = "colour=blue";
	struct bufshare_buffer_info info;
	char wname[40], props[1200];
	int n, reset;
	struct gbuf a, b, c;

	ASSERT_EQ(0, set_fault("none"));
	ASSERT_EQ(0, start_watcher(_metadata, self, "after", "after", 0, 1, wname));
	ASSERT_EQ(0, gbuf_memfd(&a, 2 * page_size()));
	ASSERT_EQ(0, gbuf_memfd(&b, 3 * page_size()));
	ASSERT_EQ(0, gbuf_memfd(&c, 4 * page_size()));
	random_props(&a, fresh_seed(), NULL, 0);
	random_props(&b, fresh_seed(), NULL, 0);
	ASSERT_EQ(0, gbuf_register(self->dev, &a, "after"));
	ASSERT_EQ(0, gbuf_register(self->dev, &b, "after"));
	ASSERT_LT(0, (n = wait_line(_metadata, self, wname, 0, "ADD id=%llu",
				    (unsigned long long)b.id)));

	/* REGISTER is the first command the device carries out after the loss. */
	ASSERT_EQ(0, lose_buffers());
	ASSERT_EQ(0, gbuf_register(self->dev, &c, "after"));
	ASSERT_LT(0, (reset = wait_line(_metadata, self, wname, n, "RESET guest=%s",
					guest_name())));
	ASSERT_LT(0, wait_line(_metadata, self, wname, reset, "ADD id=%llu",
			       (unsigned long long)c.id));
	EXPECT_ADD(&c, "after", 0);

	/* a and b are back already, with no other command. */
	ASSERT_LT(0, wait_line(_metadata, self, wname, reset, "ADD id=%llu",
			       (unsigned long long)a.id));
	EXPECT_ADD(&a, "after", 0);
	ASSERT_LT(0, wait_line(_metadata, self, wname, reset, "ADD id=%llu",
			       (unsigned long long)b.id));
	EXPECT_ADD(&b, "after", 0);

	EXPECT_EQ(0, bs_set_props(self->dev, a.id, extra, sizeof(extra), BUFSHARE_PROPS_MERGE));
	ASSERT_LT(0, wait_line(_metadata, self, wname, reset, "PROPERTIES id=%llu",
			       (unsigned long long)a.id));
	EXPECT_NE(NULL, strstr(field(self, "props"), extra)) TH_LOG("props %s", self->field);
	ASSERT_EQ(0, bs_buffer_info(self->dev, a.id, &info, props, sizeof(props)));
	EXPECT_EQ(a.props_size + sizeof(extra), info.props_size);

	/* c was registered once, and stays. */
	snprintf(self->pattern, sizeof(self->pattern), "ADD id=%llu", (unsigned long long)c.id);
	EXPECT_EQ(1, relay_count_lines(wname, self->pattern)) show_log(wname);
	snprintf(self->pattern, sizeof(self->pattern), "REMOVE guest=%s id=%llu", guest_name(),
		 (unsigned long long)c.id);
	EXPECT_TRUE(relay_no_line(wname, self->pattern)) show_log(wname);

	EXPECT_EQ(0, bs_unregister(self->dev, b.id));
	ASSERT_LT(0, wait_line(_metadata, self, wname, reset, "REMOVE guest=%s id=%llu",
			       guest_name(), (unsigned long long)b.id));
	EXPECT_EQ(0, bs_unregister(self->dev, a.id));
	EXPECT_EQ(0, bs_unregister(self->dev, c.id));
	gbuf_free(&a);
	gbuf_free(&b);
	gbuf_free(&c);
	EXPECT_EQ(0, set_fault("none"));
}

/* Loss after loss: every UPDATE works, with the next seqno each time. */
TEST_F_TIMEOUT(consumer, repeated_losses, 240)
{
	char wname[40], crc[9];
	struct gbuf b;
	int n = 0;

	ASSERT_EQ(0, set_fault("none"));
	ASSERT_EQ(0, start_watcher(_metadata, self, "again", "again", 0, 1, wname));
	ASSERT_EQ(0, gbuf_memfd(&b, 6 * page_size()));
	random_props(&b, fresh_seed(), NULL, 0);
	ASSERT_EQ(0, gbuf_register(self->dev, &b, "again"));
	for (int round = 1; round <= 4; round++) {
		struct bufshare_update u = { .id = b.id };
		__u64 seqno = 0;

		ASSERT_EQ(0, lose_buffers());
		ASSERT_EQ(0, gbuf_write(&b, 0, b.size));
		ASSERT_EQ(0, bs_update(self->dev, &u, &seqno)) TH_LOG("round %d", round);
		EXPECT_EQ(round, seqno);
		n = wait_line(_metadata, self, wname, n, "UPDATE id=%llu seqno=%d",
			      (unsigned long long)b.id, round);
		ASSERT_LT(0, n) TH_LOG("round %d", round);
		gbuf_crc(&b, crc);
		EXPECT_STREQ(crc, field(self, "crc32")) TH_LOG("round %d", round);
	}
	EXPECT_EQ(4, relay_count_lines(wname, "RESET")) show_log(wname);
	snprintf(self->pattern, sizeof(self->pattern), "ADD id=%llu", (unsigned long long)b.id);
	EXPECT_EQ(5, relay_count_lines(wname, self->pattern)) show_log(wname);
	EXPECT_EQ(0, bs_unregister(self->dev, b.id));
	gbuf_free(&b);
	EXPECT_EQ(0, set_fault("none"));
}

/*
 * A process is killed after the loss, before it sent another command: its
 * buffers go for good (they are not brought back), while the buffer of
 * the process that lives on comes back as soon as the release met the
 * loss, before that process sends anything.
 */
TEST_F_TIMEOUT(consumer, sigkill_after_loss, 240)
{
	struct bufshare_update u = { 0 };
	int pipefd[2], status, n, reset;
	long long before;
	char wname[40];
	struct gbuf p;
	__u64 ids[2];
	pid_t pid;

	ASSERT_EQ(0, set_fault("none"));
	ASSERT_EQ(0, start_watcher(_metadata, self, "lostkill", "lostkill", 0, 1, wname));
	ASSERT_EQ(0, gbuf_memfd(&p, 2 * page_size()));
	ASSERT_EQ(0, gbuf_register(self->dev, &p, "lostkill"));
	before = device_num_buffers();
	ASSERT_EQ(0, pipe(pipefd));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
		struct gbuf b[2];

		close(pipefd[0]);
		for (int i = 0; i < 2; i++) {
			if (dev < 0 || gbuf_memfd(&b[i], (i + 1) * page_size()) ||
			    gbuf_register(dev, &b[i], "lostkill"))
				_exit(1);
			ids[i] = b[i].id;
		}
		if (write(pipefd[1], ids, sizeof(ids)) != sizeof(ids))
			_exit(1);
		pause();
		_exit(0);
	}
	close(pipefd[1]);
	ASSERT_EQ(sizeof(ids), read(pipefd[0], ids, sizeof(ids)));
	close(pipefd[0]);
	ASSERT_LT(0, (n = wait_line(_metadata, self, wname, 0, "ADD id=%llu",
				    (unsigned long long)ids[1])));

	/* Its release meets the device that lost everything. */
	ASSERT_EQ(0, lose_buffers());
	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_LT(0, (reset = wait_line(_metadata, self, wname, n, "RESET guest=%s",
					guest_name())));

	ASSERT_LT(0, wait_line(_metadata, self, wname, reset, "ADD id=%llu",
			       (unsigned long long)p.id));
	EXPECT_ADD(&p, "lostkill", 0);
	u.id = p.id;
	EXPECT_EQ(0, bs_update(self->dev, &u, NULL));
	ASSERT_LT(0, wait_line(_metadata, self, wname, reset, "UPDATE id=%llu seqno=1",
			       (unsigned long long)p.id));
	for (int i = 0; i < 2; i++) {
		snprintf(self->pattern, sizeof(self->pattern), "ADD id=%llu",
			 (unsigned long long)ids[i]);
		EXPECT_EQ(1, relay_count_lines(wname, self->pattern))
			TH_LOG("buffer %llu of the killed process came back",
			       (unsigned long long)ids[i]);
	}
	EXPECT_EQ(before, device_num_buffers());
	EXPECT_EQ(0, bs_unregister(self->dev, p.id));
	gbuf_free(&p);
	EXPECT_EQ(0, set_fault("none"));
}

TEST_HARNESS_MAIN
