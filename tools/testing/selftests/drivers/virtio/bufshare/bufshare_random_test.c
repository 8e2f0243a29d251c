// SPDX-License-Identifier: GPL-2.0
/*
 * Random ioctls on /dev/bufshare from several threads: the bufshare ioctls
 * with random fields, the right numbers with other sizes or directions,
 * other numbers of the bufshare magic and of other magics; arguments at
 * good, unmapped, read-only, kernel and non-canonical addresses; random
 * descriptors (sealed and unsealed memfds, a udmabuf, a dma-heap dma-buf,
 * /dev/null, a pipe, /dev/bufshare itself, closed and unused numbers).
 * Each call must return 0 or an errno Documentation/userspace-api/bufshare.rst
 * allows for that ioctl (with a device that works: never EIO, ETIMEDOUT,
 * ENODEV or EINTR), and the device must work afterwards, with nothing left
 * registered.
 *
 * The seed is printed; BUFSHARE_RANDOM_SEED=SEED repeats each thread's
 * sequence of calls (not their interleaving). BUFSHARE_RANDOM_SECONDS
 * (default 10, at most 300) bounds the run.
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

#define THREADS		4
#define MEMFD_SIZE	(64 * 1024)
/* Room for the arguments a thread builds, then a page that is not mapped. */
#define SCRATCH		(16 * 4096)

/* What a call may return: 0, or an errno of its list (up to 16). */
struct allowed {
	const char *what;
	int errs[16];
};

/*
 * Every ioctl that sends a command may return, with a device that works:
 * EOPNOTSUPP, EINVAL, ENOENT, ENOSPC (the device's statuses), ENOMEM,
 * EFAULT and ENOTTY.
 */
static const struct allowed allow_info = {
	"GET_INFO", { EOPNOTSUPP, EINVAL, ENOENT, ENOSPC, ENOMEM, EFAULT, ENOTTY, EPROTO }
};

static const struct allowed allow_register = {
	"REGISTER", { EOPNOTSUPP, EINVAL, ENOENT, ENOSPC, ENOMEM, EFAULT, ENOTTY,
		      EBADF, EACCES, EPERM, E2BIG }
};

static const struct allowed allow_update = {
	"UPDATE", { EOPNOTSUPP, EINVAL, ENOENT, ENOSPC, ENOMEM, EFAULT, ENOTTY }
};

static const struct allowed allow_set = {
	"SET_PROPERTIES", { EOPNOTSUPP, EINVAL, ENOENT, ENOSPC, ENOMEM, EFAULT, ENOTTY, E2BIG }
};

static const struct allowed allow_unregister = {
	"UNREGISTER", { EFAULT, ENOTTY, ENOENT, EOPNOTSUPP }
};

static const struct allowed allow_buffer_info = {
	"BUFFER_INFO", { EFAULT, ENOTTY, EINVAL, ENOENT }
};

static const struct allowed allow_get_binding = {
	"GET_BINDING", { EFAULT, ENOTTY, EINVAL, ENOENT }
};

static const struct allowed allow_unknown = { "an unknown number", { ENOTTY } };

struct shared {
	uint64_t seed;
	uint64_t deadline_ns;
	int common;			/* a /dev/bufshare file every thread uses */
	int fds[16];			/* descriptors a REGISTER may name */
	int nfds;
	void *ro;			/* a read-only page */
	int open_fds[16];		/* what the teardown closes */
	int nopen;
	int good[4];			/* memory REGISTER takes */
	int ngood;
};

struct worker {
	struct shared *sh;
	int index;
	int own;			/* a /dev/bufshare file of its own */
	unsigned char *scratch;		/* SCRATCH bytes, then an unmapped page */
	__u64 ids[32];			/* ids registered lately */
	uint64_t calls, ok, registered;
	struct failures fail;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static uint64_t pick(uint64_t *seed, uint64_t n)
{
	return prng_next(seed) % n;
}

/* A 64-bit value near an edge, or random. */
static uint64_t any_u64(uint64_t *seed)
{
	static const uint64_t edges[] = {
		0, 1, 2, 4095, 4096, 4097, 8192, MEMFD_SIZE - 4096, MEMFD_SIZE, MEMFD_SIZE + 4096,
		1ULL << 31, 1ULL << 32, (1ULL << 32) - 1, 1ULL << 40, 1ULL << 63, ~0ULL,
		~0ULL - 4095, ~0ULL << 12,
	};

	if (pick(seed, 3))
		return edges[pick(seed, ARRAY_SIZE(edges))];
	return prng_next(seed) >> pick(seed, 64);
}

static uint32_t any_u32(uint64_t *seed)
{
	return pick(seed, 2) ? (uint32_t)any_u64(seed) : (uint32_t)pick(seed, 5000);
}

/*
 * An address for the kernel to read or write @len bytes at: in the scratch
 * area (possibly running into the unmapped page after it), NULL, a
 * read-only page, a kernel address or a non-canonical one.
 */
static uint64_t any_ptr(struct worker *w, uint64_t *seed, size_t len)
{
	static const uint64_t bad[] = {
		0, 1, 4096, 0xffffffff81000000ULL, 0xffff888000000000ULL, 0xffffffffff600000ULL,
		0x8000000000000000ULL, 0x0000800000000000ULL, ~0ULL, ~0ULL - 7,
	};
	uint64_t r = pick(seed, 10);

	if (r < 6) {
		/* In the scratch area, the argument whole or running past its end. */
		size_t off = pick(seed, 4) ? pick(seed, SCRATCH / 2) :
				SCRATCH - pick(seed, len + 1);

		return (uintptr_t)(w->scratch + off);
	}
	if (r < 7)
		return (uintptr_t)w->sh->ro;
	return bad[pick(seed, ARRAY_SIZE(bad))];
}

/* Properties: well formed, or random bytes, @len of them at @p. */
static void any_props(uint64_t *seed, unsigned char *p, size_t len)
{
	static const char good[] = "width=64\0height=64\0format=x\0";

	if (pick(seed, 2) && len) {
		for (size_t i = 0; i < len; i++)
			p[i] = good[i % sizeof(good)];
		p[len - 1] = '\0';
	} else {
		fill_random(p, len, prng_next(seed));
	}
}

static int any_fd(struct worker *w, uint64_t *seed)
{
	return w->sh->fds[pick(seed, w->sh->nfds)];
}

static __u64 any_id(struct worker *w, uint64_t *seed)
{
	switch (pick(seed, 4)) {
	case 0:
		return any_u64(seed);
	default:
		return w->ids[pick(seed, 32)];
	}
}

static void check(struct worker *w, const struct allowed *a, unsigned long cmd, long ret,
		  int err)
{
	w->calls++;
	if (ret == 0) {
		w->ok++;
		return;
	}
	for (int i = 0; i < 16 && a->errs[i]; i++)
		if (a->errs[i] == err)
			return;
	note_failure(&w->fail,
		     "thread %d, call %llu: %s (cmd %#lx) returned %ld, errno %d (%s)", w->index,
		     (unsigned long long)w->calls, a->what, cmd, ret, err, strerror(err));
}

/* Magics whose numbers the VFS or a file system handles before the driver sees them. */
static int vfs_magic(unsigned int magic)
{
	return magic == 0 || magic == 'T' || magic == 'X' || magic == 'f' || magic == 0x94 ||
	       magic == 0x15;
}

/* One random call on @fd. */
static void one_call(struct worker *w, int fd, uint64_t *seed)
{
	unsigned char *s = w->scratch;
	uint64_t arg = (uintptr_t)s;
	unsigned long cmd;
	long ret;

	/* The argument's pointer: good most of the time. */
	if (!pick(seed, 6))
		arg = any_ptr(w, seed, 256);
	fill_random(s, 512, prng_next(seed));

	switch (pick(seed, 9)) {
	case 0:
		ret = ioctl(fd, BUFSHARE_IOC_GET_INFO, (void *)(uintptr_t)arg);
		check(w, &allow_info, BUFSHARE_IOC_GET_INFO, ret, errno);
		break;
	case 1: {
		struct bufshare_register *r = (void *)s;
		size_t psize = pick(seed, 200);

		memset(r, 0, sizeof(*r));
		if (pick(seed, 2)) {
			/* One that goes through, so that later calls find buffers. */
			r->fd = w->sh->good[pick(seed, w->sh->ngood)];
			r->offset = 4096 * pick(seed, 8);
			r->length = 4096 * (1 + pick(seed, 8));
			memcpy(r->application, "random", 7);
			if (pick(seed, 2)) {
				memcpy(s + 1024, "width=64\0height=64", 19);
				r->props = (uintptr_t)(s + 1024);
				r->props_size = 19;
			}
			goto do_register;
		}
		r->fd = any_fd(w, seed);
		r->offset = pick(seed, 2) ? 4096 * pick(seed, 17) : any_u64(seed);
		r->length = pick(seed, 2) ? 4096 * (1 + pick(seed, 16)) : any_u64(seed);
		if (!pick(seed, 8))
			r->flags = any_u32(seed);
		if (!pick(seed, 8))
			r->reserved = any_u32(seed);
		if (pick(seed, 4))
			memcpy(r->application, "random", 7);
		else
			fill_random(r->application, sizeof(r->application), prng_next(seed));
		if (pick(seed, 2)) {
			any_props(seed, s + 1024, psize);
			r->props = (uintptr_t)(s + 1024);
			r->props_size = psize;
		} else if (pick(seed, 2)) {
			r->props = any_ptr(w, seed, 64);
			r->props_size = any_u32(seed);
		}
do_register:
		ret = ioctl(fd, BUFSHARE_IOC_REGISTER, (void *)(uintptr_t)arg);
		check(w, &allow_register, BUFSHARE_IOC_REGISTER, ret, errno);
		if (!ret && arg == (uintptr_t)s && fd == w->own) {
			w->ids[pick(seed, 32)] = r->id;
			w->registered++;
		}
		break;
	}
	case 2: {
		struct bufshare_update *u = (void *)s;

		memset(u, 0, sizeof(*u));
		u->id = any_id(w, seed);
		if (pick(seed, 2))
			u->seqno = any_u64(seed);
		u->flags = pick(seed, 4) ? pick(seed, 4) : any_u32(seed);
		if (!pick(seed, 8))
			u->reserved = any_u32(seed);
		u->offset = pick(seed, 2) ? pick(seed, MEMFD_SIZE) : any_u64(seed);
		u->length = pick(seed, 2) ? pick(seed, MEMFD_SIZE) : any_u64(seed);
		u->x = any_u32(seed);
		u->y = any_u32(seed);
		u->width = any_u32(seed);
		u->height = any_u32(seed);
		ret = ioctl(fd, BUFSHARE_IOC_UPDATE, (void *)(uintptr_t)arg);
		check(w, &allow_update, BUFSHARE_IOC_UPDATE, ret, errno);
		break;
	}
	case 3: {
		struct bufshare_set_properties *p = (void *)s;
		size_t psize = pick(seed, 300);

		memset(p, 0, sizeof(*p));
		p->id = any_id(w, seed);
		p->flags = pick(seed, 4) ? pick(seed, 2) : any_u32(seed);
		if (pick(seed, 2)) {
			any_props(seed, s + 1024, psize);
			p->props = (uintptr_t)(s + 1024);
			p->props_size = psize;
		} else {
			p->props = any_ptr(w, seed, 64);
			p->props_size = any_u32(seed);
		}
		ret = ioctl(fd, BUFSHARE_IOC_SET_PROPERTIES, (void *)(uintptr_t)arg);
		check(w, &allow_set, BUFSHARE_IOC_SET_PROPERTIES, ret, errno);
		break;
	}
	case 4: {
		__u64 id = any_id(w, seed);

		memcpy(s, &id, sizeof(id));
		ret = ioctl(fd, BUFSHARE_IOC_UNREGISTER, (void *)(uintptr_t)arg);
		check(w, &allow_unregister, BUFSHARE_IOC_UNREGISTER, ret, errno);
		break;
	}
	case 5: {
		struct bufshare_buffer_info *i = (void *)s;

		memset(i, 0, sizeof(*i));
		i->id = any_id(w, seed);
		if (!pick(seed, 8))
			i->reserved = any_u32(seed);
		if (pick(seed, 2)) {
			i->props = (uintptr_t)(s + 1024);
			i->props_size = pick(seed, 400);
		} else if (pick(seed, 2)) {
			i->props = any_ptr(w, seed, 64);
			i->props_size = any_u32(seed);
		}
		ret = ioctl(fd, BUFSHARE_IOC_BUFFER_INFO, (void *)(uintptr_t)arg);
		check(w, &allow_buffer_info, BUFSHARE_IOC_BUFFER_INFO, ret, errno);
		break;
	}
	case 6:
		/* A number of ours with another size or direction. */
		cmd = _IOC(pick(seed, 4), BUFSHARE_IOCTL_BASE, pick(seed, 6), pick(seed, 512));
		if (cmd == BUFSHARE_IOC_GET_INFO || cmd == BUFSHARE_IOC_REGISTER ||
		    cmd == BUFSHARE_IOC_UPDATE || cmd == BUFSHARE_IOC_SET_PROPERTIES ||
		    cmd == BUFSHARE_IOC_UNREGISTER || cmd == BUFSHARE_IOC_BUFFER_INFO)
			break;
		ret = ioctl(fd, cmd, (void *)(uintptr_t)arg);
		check(w, &allow_unknown, cmd, ret, errno);
		break;
	case 7:
		/*
		 * Any other number of our magic. BIND_APPLICATION, which the
		 * administrator uses, is left out: the names it binds would
		 * outlive the run and refuse other tests' registrations.
		 * GET_BINDING only reads.
		 */
		cmd = _IOC(pick(seed, 4), BUFSHARE_IOCTL_BASE, 6 + pick(seed, 250),
			   pick(seed, 1 << 14));
		if (cmd == BUFSHARE_IOC_BIND_APPLICATION)
			break;
		ret = ioctl(fd, cmd, (void *)(uintptr_t)arg);
		check(w, cmd == BUFSHARE_IOC_GET_BINDING ? &allow_get_binding : &allow_unknown,
		      cmd, ret, errno);
		if (pick(seed, 8))
			break;
		ret = ioctl(fd, BUFSHARE_IOC_GET_BINDING, (void *)(uintptr_t)arg);
		check(w, &allow_get_binding, BUFSHARE_IOC_GET_BINDING, ret, errno);
		break;
	default: {
		/* A number of another magic that reaches the driver. */
		unsigned int magic;

		do
			magic = pick(seed, 256);
		while (vfs_magic(magic) || magic == BUFSHARE_IOCTL_BASE);
		cmd = _IOC(pick(seed, 4), magic, pick(seed, 256), pick(seed, 1 << 14));
		ret = ioctl(fd, cmd, (void *)(uintptr_t)arg);
		check(w, &allow_unknown, cmd, ret, errno);
		break;
	}
	}
}

static void *worker_thread(void *arg)
{
	struct worker *w = arg;
	uint64_t seed = w->sh->seed ^ ((uint64_t)(w->index + 1) * 0x9e3779b97f4a7c15ULL);

	while (now_ns() < w->sh->deadline_ns) {
		int fd = pick(&seed, 4) ? w->own : w->sh->common;

		one_call(w, fd, &seed);
	}
	return NULL;
}

FIXTURE(random) {
	struct shared sh;
};

/* Names @fd to REGISTER, and to the teardown if @close_it. */
static int add_fd(struct shared *sh, int fd, int close_it)
{
	if (fd >= 0 && close_it)
		sh->open_fds[sh->nopen++] = fd;
	sh->fds[sh->nfds++] = fd;
	return fd;
}

FIXTURE_SETUP(random)
{
	struct shared *sh = &self->sh;
	int fd, memfd, pipe_fds[2];

	memset(sh, 0, sizeof(*sh));
	sh->common = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, sh->common) TH_LOG("open: %s", strerror(errno));
	/* Memfds: sealed as REGISTER wants, unsealed, write-sealed. */
	sh->good[sh->ngood++] = add_fd(sh, make_memfd(MEMFD_SIZE, BUFSHARE_SEALS), 1);
	ASSERT_LE(0, sh->good[0]);
	ASSERT_LE(0, add_fd(sh, make_memfd(MEMFD_SIZE, 0), 1));
	fd = add_fd(sh, make_memfd(MEMFD_SIZE, BUFSHARE_SEALS & ~F_SEAL_SEAL), 1);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE));
	/* dma-bufs, where the kernel makes them. */
	fd = make_udmabuf(MEMFD_SIZE, &memfd);
	if (fd >= 0) {
		sh->good[sh->ngood++] = add_fd(sh, fd, 1);
		add_fd(sh, memfd, 1);
	}
	fd = make_heap_dmabuf(MEMFD_SIZE);
	if (fd >= 0)
		sh->good[sh->ngood++] = add_fd(sh, fd, 1);
	ASSERT_LE(0, add_fd(sh, open("/dev/null", O_RDWR | O_CLOEXEC), 1));
	ASSERT_EQ(0, pipe2(pipe_fds, O_CLOEXEC));
	add_fd(sh, pipe_fds[0], 1);
	add_fd(sh, pipe_fds[1], 1);
	add_fd(sh, sh->common, 0);
	/*
	 * A closed descriptor (a high number, which later opens do not take),
	 * one beyond any limit, and no descriptor at all.
	 */
	fd = fcntl(sh->common, F_DUPFD_CLOEXEC, 900);
	ASSERT_LE(900, fd);
	close(fd);
	add_fd(sh, fd, 0);
	add_fd(sh, 1000000, 0);
	add_fd(sh, -1, 0);
	sh->ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, sh->ro);
}

FIXTURE_TEARDOWN(random)
{
	struct shared *sh = &self->sh;

	for (int i = 0; i < sh->nopen; i++)
		close(sh->open_fds[i]);
	if (sh->common >= 0)
		close(sh->common);
	munmap(sh->ro, 4096);
}

TEST_F_TIMEOUT(random, ioctls_from_threads, 420)
{
	uint64_t seconds = getenv("BUFSHARE_RANDOM_SECONDS") ?
		strtoull(getenv("BUFSHARE_RANDOM_SECONDS"), NULL, 0) : 10;
	struct worker w[THREADS];
	pthread_t t[THREADS];
	uint64_t calls = 0, ok = 0, registered = 0;
	struct bufshare_info before, after;
	int failures = 0, kmsg_bug, kmsg_warn, fd, memfd;
	char line[512];
	__u64 id;

	ASSERT_GE(300, seconds);
	self->sh.seed = getenv("BUFSHARE_RANDOM_SEED") ?
		strtoull(getenv("BUFSHARE_RANDOM_SEED"), NULL, 0) : fresh_seed();
	TH_LOG("seed %#llx (BUFSHARE_RANDOM_SEED=%#llx repeats it)",
	       (unsigned long long)self->sh.seed, (unsigned long long)self->sh.seed);
	TH_LOG("%d threads for %llu s, %d descriptors", THREADS, (unsigned long long)seconds,
	       self->sh.nfds);
	kmsg_bug = kmsg_open();
	kmsg_warn = kmsg_open();
	ASSERT_LE(0, kmsg_bug);
	ASSERT_LE(0, kmsg_warn);
	ASSERT_EQ(0, ioctl(self->sh.common, BUFSHARE_IOC_GET_INFO, &before));

	self->sh.deadline_ns = now_ns() + seconds * 1000000000ULL;
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ .sh = &self->sh, .index = i };
		w[i].own = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
		ASSERT_LE(0, w[i].own);
		w[i].scratch = mmap(NULL, SCRATCH + 4096, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ASSERT_NE(MAP_FAILED, w[i].scratch);
		/* The page after the scratch area is not mapped. */
		ASSERT_EQ(0, munmap(w[i].scratch + SCRATCH, 4096));
	}
	for (int i = 0; i < THREADS; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, worker_thread, &w[i]));
	for (int i = 0; i < THREADS; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		calls += w[i].calls;
		ok += w[i].ok;
		registered += w[i].registered;
		if (w[i].fail.n)
			TH_LOG("%s (%d failures in that thread)", w[i].fail.first,
			       w[i].fail.n);
		failures += w[i].fail.n;
		close(w[i].own);
		munmap(w[i].scratch, SCRATCH);
	}
	TH_LOG("%llu calls, %llu returned 0, %llu registrations in the threads' own files",
	       (unsigned long long)calls, (unsigned long long)ok,
	       (unsigned long long)registered);
	EXPECT_EQ(0, failures);
	EXPECT_LT(THREADS * 100, calls);

	/* The device works, and the closed files left nothing registered. */
	fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ioctl(fd, BUFSHARE_IOC_GET_INFO, &after));
	memfd = make_memfd(4096, BUFSHARE_SEALS);
	ASSERT_LE(0, memfd);
	EXPECT_EQ(0, bs_register(fd, memfd, 0, 4096, "random", NULL, 0, &id));
	EXPECT_EQ(0, bs_unregister(fd, id));
	close(memfd);
	close(fd);
	/* The common file is still open: what it holds goes with it. */
	close(self->sh.common);
	self->sh.common = -1;
	fd = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ioctl(fd, BUFSHARE_IOC_GET_INFO, &after));
	close(fd);
	EXPECT_EQ(before.num_buffers, after.num_buffers);
	EXPECT_EQ(0, kmsg_find(kmsg_bug, "BUG:", line, sizeof(line))) TH_LOG("%s", line);
	EXPECT_EQ(0, kmsg_find(kmsg_warn, "WARNING:", line, sizeof(line))) TH_LOG("%s", line);
	close(kmsg_bug);
	close(kmsg_warn);
}

TEST_HARNESS_MAIN
