// SPDX-License-Identifier: GPL-2.0
/*
 * The command queue under concurrency: several threads on several open
 * files send mixed commands (GET_INFO, REGISTER, UPDATE, UNREGISTER) for a
 * while, with and without a host consumer receiving every event. Every
 * command must succeed, and none may take longer than a bound well under
 * the driver's 10 s command timeout: a command that waits for the timeout
 * is an answer the driver missed, or a request the device missed.
 *
 * BUFSHARE_STRESS_SECONDS sets how long each case runs (default 30, at
 * most 600),
 * BUFSHARE_STRESS_BOUND_MS the bound (default 3000). Each case prints, per
 * command, how many were sent, the median and the slowest; a failure
 * prints the errno and the command's latency.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
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

#define FILES		3
#define THREADS		6
#define STRESS_APP	"stress"

enum op { OP_GET_INFO, OP_REGISTER, OP_UPDATE, OP_UNREGISTER, OP_COUNT };

static const char *const op_name[OP_COUNT] = {
	[OP_GET_INFO] = "GET_INFO",
	[OP_REGISTER] = "REGISTER",
	[OP_UPDATE] = "UPDATE",
	[OP_UNREGISTER] = "UNREGISTER",
};

/* Latencies are kept in a log2 histogram of microseconds, and the slowest. */
#define HIST_BUCKETS	32

struct op_stats {
	uint64_t count;
	uint64_t hist[HIST_BUCKETS];
	uint64_t max_us;
};

struct worker {
	int fd;
	int index;
	uint64_t deadline_ns;
	uint64_t bound_us;
	/* Results. */
	struct op_stats stats[OP_COUNT];
	int failures;
	char first_failure[256];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static uint64_t env_or(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);

	return v && *v ? strtoull(v, NULL, 0) : dflt;
}

static void note_failure(struct worker *w, const char *fmt, ...)
	__printf(2, 3);

static void note_failure(struct worker *w, const char *fmt, ...)
{
	va_list ap;

	if (w->failures++)
		return;
	va_start(ap, fmt);
	vsnprintf(w->first_failure, sizeof(w->first_failure), fmt, ap);
	va_end(ap);
}

/*
 * Records one command: its latency, and a failure if it returned @err (an
 * errno) or took longer than the bound.
 */
static void record(struct worker *w, enum op what, uint64_t start_ns, int err)
{
	uint64_t us = (now_ns() - start_ns) / 1000;
	struct op_stats *s = &w->stats[what];
	int b = 0;

	s->count++;
	while (b < HIST_BUCKETS - 1 && (1ULL << (b + 1)) <= us)
		b++;
	s->hist[b]++;
	if (us > s->max_us)
		s->max_us = us;
	if (err)
		note_failure(w, "thread %d: %s failed with %s (errno %d) after %llu ms",
			     w->index, op_name[what], strerror(err), err,
			     (unsigned long long)us / 1000);
	else if (us > w->bound_us)
		note_failure(w, "thread %d: %s took %llu ms (bound %llu ms)", w->index,
			     op_name[what], (unsigned long long)us / 1000,
			     (unsigned long long)w->bound_us / 1000);
}

static void *worker_thread(void *arg)
{
	struct worker *w = arg;
	uint64_t seed = fresh_seed() ^ w->index;
	size_t page = sysconf(_SC_PAGESIZE);
	char props[64];
	int memfd;

	/* Each thread registers its own small memfd, again and again. */
	memfd = make_memfd(2 * page, BUFSHARE_SEALS);
	if (memfd < 0) {
		note_failure(w, "thread %d: memfd: %s", w->index, strerror(-memfd));
		return NULL;
	}
	snprintf(props, sizeof(props), "thread=%d", w->index);

	while (now_ns() < w->deadline_ns) {
		struct bufshare_info info;
		uint64_t start;
		__u64 id;
		int err, updates;

		if (prng_next(&seed) % 3 == 0) {
			start = now_ns();
			err = ioctl(w->fd, BUFSHARE_IOC_GET_INFO, &info) ? errno : 0;
			record(w, OP_GET_INFO, start, err);
			continue;
		}

		start = now_ns();
		err = bs_register(w->fd, memfd, 0, 2 * page, STRESS_APP, props,
				  strlen(props) + 1, &id);
		record(w, OP_REGISTER, start, err);
		if (err)
			continue;

		updates = prng_next(&seed) % 4;
		for (int i = 0; i < updates; i++) {
			struct bufshare_update u = {
				.id = id,
				.flags = BUFSHARE_UPDATE_RANGE,
				.offset = (prng_next(&seed) % 2) * page,
				.length = page,
			};

			start = now_ns();
			err = bs_update(w->fd, &u, NULL);
			record(w, OP_UPDATE, start, err);
		}

		start = now_ns();
		err = bs_unregister(w->fd, id);
		record(w, OP_UNREGISTER, start, err);
	}
	close(memfd);
	return NULL;
}

/* The median of a histogram, as the upper edge of its bucket, in us. */
static uint64_t hist_median_us(const struct op_stats *s)
{
	uint64_t seen = 0;

	for (int b = 0; b < HIST_BUCKETS; b++) {
		seen += s->hist[b];
		if (seen * 2 >= s->count)
			return 1ULL << (b + 1);
	}
	return 0;
}

FIXTURE(stress) {
	int fds[FILES];
	int watching;
};

FIXTURE_VARIANT(stress) {
	int consumer;
};

FIXTURE_VARIANT_ADD(stress, no_consumer) {
	.consumer = 0,
};

FIXTURE_VARIANT_ADD(stress, consumer) {
	.consumer = 1,
};

FIXTURE_SETUP(stress)
{
	int err;

	for (int i = 0; i < FILES; i++) {
		self->fds[i] = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
		ASSERT_LE(0, self->fds[i]) TH_LOG("open: %s", strerror(errno));
	}
	self->watching = 0;
	if (variant->consumer) {
		if (!relay_ready())
			SKIP(return, "no relay to the host: no host consumer");
		err = relay_watch("stress", STRESS_APP, 0);
		ASSERT_EQ(0, err) TH_LOG("starting the host consumer: %d", err);
		self->watching = 1;
	}
}

FIXTURE_TEARDOWN(stress)
{
	int status = -1;

	for (int i = 0; i < FILES; i++)
		if (self->fds[i] >= 0)
			close(self->fds[i]);
	if (self->watching) {
		EXPECT_EQ(0, relay_watch_stop("stress", &status));
		/* 0: it kept up with every event and was stopped by us. */
		EXPECT_EQ(0, status);
	}
}

/* The longest run BUFSHARE_STRESS_SECONDS may ask for, within the harness's timeout. */
#define MAX_SECONDS	600

/*
 * THREADS threads on FILES files, mixed commands for BUFSHARE_STRESS_SECONDS:
 * every command succeeds within the bound.
 */
TEST_F_TIMEOUT(stress, mixed_commands, MAX_SECONDS + 60)
{
	uint64_t seconds = env_or("BUFSHARE_STRESS_SECONDS", 30);
	uint64_t bound_ms = env_or("BUFSHARE_STRESS_BOUND_MS", 3000);
	struct worker w[THREADS];
	pthread_t t[THREADS];
	struct op_stats total[OP_COUNT] = {};
	struct bufshare_info before, after;
	uint64_t sent = 0, deadline = now_ns() + seconds * 1000000000ULL;
	int failures = 0;

	ASSERT_GE(MAX_SECONDS, seconds)
		TH_LOG("BUFSHARE_STRESS_SECONDS is at most %d", MAX_SECONDS);
	ASSERT_EQ(0, ioctl(self->fds[0], BUFSHARE_IOC_GET_INFO, &before));
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){
			.fd = self->fds[i % FILES],
			.index = i,
			.deadline_ns = deadline,
			.bound_us = bound_ms * 1000,
		};
		ASSERT_EQ(0, pthread_create(&t[i], NULL, worker_thread, &w[i]));
	}
	for (int i = 0; i < THREADS; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		for (int op = 0; op < OP_COUNT; op++) {
			total[op].count += w[i].stats[op].count;
			for (int b = 0; b < HIST_BUCKETS; b++)
				total[op].hist[b] += w[i].stats[op].hist[b];
			if (w[i].stats[op].max_us > total[op].max_us)
				total[op].max_us = w[i].stats[op].max_us;
		}
		if (w[i].failures)
			TH_LOG("%s (%d failures in that thread)", w[i].first_failure,
			       w[i].failures);
		failures += w[i].failures;
	}
	for (int op = 0; op < OP_COUNT; op++) {
		sent += total[op].count;
		TH_LOG("%-10s %7llu sent, median <= %llu ms, slowest %llu.%03llu ms", op_name[op],
		       (unsigned long long)total[op].count,
		       (unsigned long long)(hist_median_us(&total[op]) + 999) / 1000,
		       (unsigned long long)total[op].max_us / 1000,
		       (unsigned long long)total[op].max_us % 1000);
	}
	EXPECT_EQ(0, failures);
	/* Every command reached the device once: its counter agrees. */
	ASSERT_EQ(0, ioctl(self->fds[0], BUFSHARE_IOC_GET_INFO, &after));
	EXPECT_EQ(before.num_commands + sent + 1, after.num_commands);
	EXPECT_EQ(before.num_buffers, after.num_buffers);
	/* Enough traffic to mean something, even on a slow emulator. */
	EXPECT_LT(100, sent);
}

TEST_HARNESS_MAIN
