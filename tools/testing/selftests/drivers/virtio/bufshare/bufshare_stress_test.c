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
 *
 * The wide cases put 32 threads on one file, then 32 threads on a file each,
 * for BUFSHARE_WIDE_SECONDS (default 8, at most 120), and check that every
 * result is consistent (see wide_thread()).
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
	struct failures fail;
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
		note_failure(&w->fail, "thread %d: %s failed with %s (errno %d) after %llu ms",
			     w->index, op_name[what], strerror(err), err,
			     (unsigned long long)us / 1000);
	else if (us > w->bound_us)
		note_failure(&w->fail, "thread %d: %s took %llu ms (bound %llu ms)", w->index,
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
		note_failure(&w->fail, "thread %d: memfd: %s", w->index, strerror(-memfd));
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

		/*
		 * Waiting until the host let go (with a consumer, until it closed
		 * the buffer): a buffer counts against the device's limit until
		 * then, and the threads would otherwise outrun the consumer and
		 * fill the device. The wait is no command: only the UNREGISTER is
		 * counted.
		 */
		start = now_ns();
		err = bs_unregister_wait(w->fd, id);
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
		if (w[i].fail.n)
			TH_LOG("%s (%d failures in that thread)", w[i].fail.first,
			       w[i].fail.n);
		failures += w[i].fail.n;
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

/*
 * Many threads on one file, and as many on a file each: REGISTER, UPDATE,
 * BUFFER_INFO and UNREGISTER of their own buffers, and BUFFER_INFO and
 * UNREGISTER of buffers other threads just registered, for
 * BUFSHARE_WIDE_SECONDS (default 8). Every result must be one the
 * documentation allows for what happened: ids are never given twice, every
 * buffer is unregistered exactly once (by its thread, or by another thread
 * of the same file), another file's buffers are never reached (ENOENT), and
 * nothing is left registered.
 */
#define WIDE_THREADS	32
#define WIDE_APP	"wide"
/* How many ids a run may use, from the first one. */
#define WIDE_MAX_IDS	1048576
/* Ids just registered, for other threads to look at and take. */
#define WIDE_RECENT	64

enum wide_op { W_REGISTER, W_UPDATE, W_INFO, W_UNREGISTER, W_OTHER_INFO, W_OTHER_UNREG,
	       W_COUNT };

static const char *const wide_op_name[W_COUNT] = {
	[W_REGISTER] = "REGISTER",
	[W_UPDATE] = "UPDATE",
	[W_INFO] = "BUFFER_INFO",
	[W_UNREGISTER] = "UNREGISTER",
	[W_OTHER_INFO] = "BUFFER_INFO of another's",
	[W_OTHER_UNREG] = "UNREGISTER of another's",
};

struct wide_run {
	int shared;		/* every thread on the same file */
	uint64_t base;		/* the ids of the run are base + 0 .. WIDE_MAX_IDS - 1 */
	uint64_t deadline_ns;
	/*
	 * Per id, from base: registered; unregistered by its thread; by
	 * another; ENOENT seen by its thread.
	 */
	uint8_t *registered, *own_unreg, *other_unreg, *gone;
	uint64_t recent[WIDE_RECENT];
};

struct wide_worker {
	struct wide_run *run;
	int fd, index;
	uint64_t ok[W_COUNT], enoent[W_COUNT];
	struct failures fail;
};

/*
 * Counts the result @err of @op on buffer @id: 0, or ENOENT where @enoent_ok
 * allows it; anything else is a failure.
 */
static void wide_result(struct wide_worker *w, enum wide_op op, __u64 id, int err, int enoent_ok)
{
	if (!err)
		w->ok[op]++;
	else if (err == ENOENT && enoent_ok)
		w->enoent[op]++;
	else
		note_failure(&w->fail, "thread %d: %s of buffer %llu: %s (errno %d)", w->index,
			     wide_op_name[op], (unsigned long long)id, strerror(err), err);
}

/* The index of @id in the run's tables, or -1 (a failure) if it is out of the run. */
static long wide_slot(struct wide_worker *w, __u64 id)
{
	if (id < w->run->base || id - w->run->base >= WIDE_MAX_IDS) {
		note_failure(&w->fail, "thread %d: id %llu out of the run's (from %llu)", w->index,
			     (unsigned long long)id, (unsigned long long)w->run->base);
		return -1;
	}
	return id - w->run->base;
}

/* BUFFER_INFO of @id: 0 and what it says checked (@props if not NULL), or the errno. */
static int wide_info(struct wide_worker *w, __u64 id, const char *props)
{
	struct bufshare_buffer_info info;
	char got[64] = "";
	int err;

	err = bs_buffer_info(w->fd, id, &info, got, sizeof(got));
	if (err)
		return err;
	if (info.size != 2 * (__u64)sysconf(_SC_PAGESIZE) || info.kind != BUFSHARE_KIND_MEMFD ||
	    strcmp(info.application, WIDE_APP) ||
	    (props && (info.props_size != strlen(props) + 1 || strcmp(got, props))))
		note_failure(&w->fail,
			     "thread %d: info of %llu: size %llu kind %u app '%.64s' '%.64s'",
			     w->index, (unsigned long long)id, (unsigned long long)info.size,
			     info.kind, info.application, got);
	return 0;
}

/* What another thread may do to buffer @other: look at it, or take it. */
static void wide_poke(struct wide_worker *w, __u64 other, uint64_t *seed)
{
	struct wide_run *run = w->run;
	long slot;
	int err;

	if (prng_next(seed) % 4) {
		err = wide_info(w, other, NULL);
		wide_result(w, W_OTHER_INFO, other, err, 1);
		if (!err && !run->shared)
			note_failure(&w->fail,
				     "thread %d: BUFFER_INFO of another file's buffer %llu: 0",
				     w->index, (unsigned long long)other);
		return;
	}
	err = bs_unregister_wait(w->fd, other);
	wide_result(w, W_OTHER_UNREG, other, err, 1);
	if (err)
		return;
	if (!run->shared)
		note_failure(&w->fail, "thread %d: UNREGISTER of another file's buffer %llu worked",
			     w->index, (unsigned long long)other);
	slot = wide_slot(w, other);
	if (slot >= 0)
		__atomic_fetch_add(&run->other_unreg[slot], 1, __ATOMIC_RELAXED);
}

/* Unregisters @id, the thread's own, from slot @slot. */
static void wide_unregister_own(struct wide_worker *w, __u64 id, long slot)
{
	struct wide_run *run = w->run;
	/*
	 * Waiting until the host let go: a buffer counts against the device's
	 * limit until then, and 32 threads unregistering faster than FREED
	 * comes back would fill the device.
	 */
	int err = bs_unregister_wait(w->fd, id);

	wide_result(w, W_UNREGISTER, id, err, run->shared);
	if (!err)
		__atomic_fetch_add(&run->own_unreg[slot], 1, __ATOMIC_RELAXED);
	else if (err == ENOENT)
		__atomic_store_n(&run->gone[slot], 1, __ATOMIC_RELAXED);
}

/*
 * Each thread keeps up to WIDE_LIVE buffers of its own: it registers one
 * more or unregisters its oldest, updates or looks at one of them, and
 * looks at or takes one that any thread registered lately.
 */
#define WIDE_LIVE	4

static void *wide_thread(void *arg)
{
	struct wide_worker *w = arg;
	struct wide_run *run = w->run;
	uint64_t seed = fresh_seed() ^ ((uint64_t)w->index << 32);
	size_t page = sysconf(_SC_PAGESIZE);
	__u64 live[WIDE_LIVE];
	long slots[WIDE_LIVE];
	int nlive = 0, memfd;
	char props[32];

	memfd = make_memfd(2 * page, BUFSHARE_SEALS);
	if (memfd < 0) {
		note_failure(&w->fail, "thread %d: memfd: %s", w->index, strerror(-memfd));
		return NULL;
	}
	snprintf(props, sizeof(props), "thread=%d", w->index);
	while (now_ns() < run->deadline_ns) {
		__u64 id, other;
		long slot;
		int err, i;

		if (nlive < WIDE_LIVE && (nlive == 0 || prng_next(&seed) % 2)) {
			err = bs_register(w->fd, memfd, 0, 2 * page, WIDE_APP, props,
					  strlen(props) + 1, &id);
			wide_result(w, W_REGISTER, id, err, 0);
			if (err)
				continue;
			slot = wide_slot(w, id);
			if (slot < 0)
				break;
			if (__atomic_exchange_n(&run->registered[slot], 1, __ATOMIC_RELAXED))
				note_failure(&w->fail, "thread %d: id %llu given twice", w->index,
					     (unsigned long long)id);
			__atomic_store_n(&run->recent[prng_next(&seed) % WIDE_RECENT], id,
					 __ATOMIC_RELAXED);
			live[nlive] = id;
			slots[nlive++] = slot;
		} else if (nlive == WIDE_LIVE || prng_next(&seed) % 3 == 0) {
			wide_unregister_own(w, live[0], slots[0]);
			nlive--;
			memmove(live, live + 1, nlive * sizeof(live[0]));
			memmove(slots, slots + 1, nlive * sizeof(slots[0]));
		}

		/* Only a thread of the same file can have taken it. */
		if (nlive) {
			i = prng_next(&seed) % nlive;
			if (prng_next(&seed) % 2) {
				struct bufshare_update u = { .id = live[i] };

				err = bs_update(w->fd, &u, NULL);
				wide_result(w, W_UPDATE, live[i], err, run->shared);
			} else {
				err = wide_info(w, live[i], props);
				wide_result(w, W_INFO, live[i], err, run->shared);
			}
			if (err == ENOENT)
				__atomic_store_n(&run->gone[slots[i]], 1, __ATOMIC_RELAXED);
		}

		other = __atomic_load_n(&run->recent[prng_next(&seed) % WIDE_RECENT],
					__ATOMIC_RELAXED);
		for (i = 0; i < nlive && other != live[i]; i++)
			;
		if (other && i == nlive)
			wide_poke(w, other, &seed);
	}
	while (nlive--)
		wide_unregister_own(w, live[nlive], slots[nlive]);
	close(memfd);
	return NULL;
}

FIXTURE(wide) {
	int fds[WIDE_THREADS];
	int nfds;
};

FIXTURE_VARIANT(wide) {
	int shared;
};

FIXTURE_VARIANT_ADD(wide, one_file) {
	.shared = 1,
};

FIXTURE_VARIANT_ADD(wide, own_files) {
	.shared = 0,
};

FIXTURE_SETUP(wide)
{
	self->nfds = variant->shared ? 1 : WIDE_THREADS;
	for (int i = 0; i < self->nfds; i++) {
		self->fds[i] = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
		ASSERT_LE(0, self->fds[i]) TH_LOG("open: %s", strerror(errno));
	}
}

FIXTURE_TEARDOWN(wide)
{
	for (int i = 0; i < self->nfds; i++)
		if (self->fds[i] >= 0)
			close(self->fds[i]);
}

TEST_F_TIMEOUT(wide, register_update_info_unregister, 180)
{
	uint64_t seconds = env_or("BUFSHARE_WIDE_SECONDS", 8);
	struct wide_run run = { .shared = variant->shared };
	struct wide_worker w[WIDE_THREADS];
	pthread_t t[WIDE_THREADS];
	uint64_t ok[W_COUNT] = {}, enoent[W_COUNT] = {}, registered = 0, taken = 0;
	struct bufshare_info before, after;
	int failures = 0, kmsg_bug, kmsg_warn, memfd;
	char line[512], fdinfo[4096];
	__u64 probe;

	ASSERT_GE(120, seconds) TH_LOG("BUFSHARE_WIDE_SECONDS is at most 120");
	kmsg_bug = kmsg_open();
	kmsg_warn = kmsg_open();
	ASSERT_LE(0, kmsg_bug);
	ASSERT_LE(0, kmsg_warn);
	/* Ids only grow: those of the run come after this one. */
	memfd = make_memfd(sysconf(_SC_PAGESIZE), BUFSHARE_SEALS);
	ASSERT_LE(0, memfd);
	ASSERT_EQ(0, bs_register(self->fds[0], memfd, 0, sysconf(_SC_PAGESIZE), WIDE_APP, NULL, 0,
				 &probe));
	ASSERT_EQ(0, bs_unregister(self->fds[0], probe));
	close(memfd);
	run.base = probe + 1;
	run.registered = calloc(4, WIDE_MAX_IDS);
	ASSERT_NE(NULL, run.registered);
	run.own_unreg = run.registered + WIDE_MAX_IDS;
	run.other_unreg = run.own_unreg + WIDE_MAX_IDS;
	run.gone = run.other_unreg + WIDE_MAX_IDS;
	ASSERT_EQ(0, ioctl(self->fds[0], BUFSHARE_IOC_GET_INFO, &before));

	run.deadline_ns = now_ns() + seconds * 1000000000ULL;
	for (int i = 0; i < WIDE_THREADS; i++) {
		w[i] = (struct wide_worker){
			.run = &run,
			.fd = self->fds[variant->shared ? 0 : i],
			.index = i,
		};
		ASSERT_EQ(0, pthread_create(&t[i], NULL, wide_thread, &w[i]));
	}
	for (int i = 0; i < WIDE_THREADS; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		for (int op = 0; op < W_COUNT; op++) {
			ok[op] += w[i].ok[op];
			enoent[op] += w[i].enoent[op];
		}
		if (w[i].fail.n)
			TH_LOG("%s (%d failures in that thread)", w[i].fail.first,
			       w[i].fail.n);
		failures += w[i].fail.n;
	}
	for (int op = 0; op < W_COUNT; op++)
		TH_LOG("%-26s %7llu done, %6llu ENOENT", wide_op_name[op],
		       (unsigned long long)ok[op], (unsigned long long)enoent[op]);
	EXPECT_EQ(0, failures);

	/* Every buffer unregistered exactly once, and by its own file. */
	for (long i = 0; i < WIDE_MAX_IDS; i++) {
		int own = run.own_unreg[i], other = run.other_unreg[i];

		if (!run.registered[i]) {
			EXPECT_EQ(0, own + other)
				TH_LOG("id %llu", (unsigned long long)run.base + i);
			continue;
		}
		registered++;
		taken += other;
		EXPECT_EQ(1, own + other)
			TH_LOG("id %llu unregistered %d times by its thread, %d by others",
			       (unsigned long long)run.base + i, own, other);
		/* Its thread saw it gone only if another took it. */
		if (run.gone[i])
			EXPECT_EQ(1, other) TH_LOG("id %llu", (unsigned long long)run.base + i);
	}
	TH_LOG("%llu buffers, %llu of them unregistered by another thread",
	       (unsigned long long)registered, (unsigned long long)taken);
	EXPECT_EQ(ok[W_REGISTER], registered);
	EXPECT_EQ(ok[W_UNREGISTER] + ok[W_OTHER_UNREG], registered);
	if (!variant->shared)
		EXPECT_EQ(0, taken);
	EXPECT_LT(WIDE_THREADS, registered);

	/* Nothing left, on the device or in the files. */
	ASSERT_EQ(0, ioctl(self->fds[0], BUFSHARE_IOC_GET_INFO, &after));
	EXPECT_EQ(before.num_buffers, after.num_buffers);
	for (int i = 0; i < self->nfds; i++) {
		ASSERT_EQ(0, read_fdinfo(self->fds[i], fdinfo, sizeof(fdinfo)));
		EXPECT_NE(NULL, strstr(fdinfo, "buffers:\t0\n")) TH_LOG("%s", fdinfo);
	}
	EXPECT_EQ(0, kmsg_find(kmsg_bug, "BUG:", line, sizeof(line))) TH_LOG("%s", line);
	EXPECT_EQ(0, kmsg_find(kmsg_warn, "WARNING:", line, sizeof(line))) TH_LOG("%s", line);
	close(kmsg_bug);
	close(kmsg_warn);
	free(run.registered);
}

TEST_HARNESS_MAIN
