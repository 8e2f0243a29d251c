// SPDX-License-Identifier: GPL-2.0
/*
 * bufshare-bench: what the driver's commands cost, measured in the guest,
 * beside the transport's floor and the copy users would otherwise make.
 * Run by scripts/bench.sh (make bench); make check runs it once with -q.
 *
 *   bufshare-bench [-q] [-s SECTIONS] [-o JSON] [-p PORT] [-V VPORT] [-d DEVICE]
 *
 *   -q       short: few repetitions, no 256 MiB buffers or 65536 pages
 *   -s SECTIONS  only these, a comma-separated list of get_info, serial,
 *            vsock, events, update, sizes, ranges, threads and memory (all
 *            by default)
 *   -o JSON  write the results there as JSON too
 *   -d DEVICE  /dev/bufshare by default
 *   -p PORT  a virtio-serial port (/dev/vportNpM) whose host end answers
 *            each frame (a 4-byte little-endian length, then that many
 *            bytes) with one byte: the echo floor and the 8 MiB copy
 *   -V VPORT a vsock port of the host (CID 2) that answers frames in the
 *            same way: the same two baselines over virtio-vsock
 *
 * Each figure is the latency of one ioctl (or one frame) in microseconds,
 * p50 and p99 over many repetitions, or operations per second. Nothing is
 * asserted: a benchmark, not a test. BUFSHARE_BENCH_BUFFERS (100000)
 * buffers are registered at once for the memory figures, for at most
 * BUFSHARE_BENCH_BUFFERS_SECONDS (180).
 *
 * The events figures time an UPDATE until the guest reads its RELEASED
 * event, for a buffer of application "bench-events-alone", which no host
 * consumer should watch (the device releases it at once), and one of
 * "bench-events-watched", which a host consumer (make bench starts
 * bufshare-watch on the host for it) receives and releases: the round trip
 * from the guest's UPDATE to a host consumer and back, on the guest's one
 * clock. Without a consumer of "bench-events-watched" that row is skipped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/bufshare.h>
#include <linux/udmabuf.h>
#include <linux/virtio_bufshare.h>
#include <linux/vm_sockets.h>

#define KIB		1024UL
#define MIB		(1024 * KIB)
#define PAGE		4096UL
#define MAX_ROWS	128
/* The events figures' applications: one nobody watches, one watched. */
#define APP_ALONE	"bench-events-alone"
#define APP_WATCHED	"bench-events-watched"
/* How long to wait for a RELEASED event before giving up on a row. */
#define EVENT_WAIT_MS	5000

static const char *dev_path = "/dev/bufshare";
static int quick;
static const char *sections;

/* Whether section @name is to run (-s). */
static int section(const char *name)
{
	size_t n = strlen(name);
	const char *p = sections;

	if (!p)
		return 1;
	while (*p) {
		if (!strncmp(p, name, n) && (p[n] == ',' || !p[n]))
			return 1;
		p = strchrnul(p, ',');
		if (*p)
			p++;
	}
	return 0;
}

struct row {
	char name[64];
	double p50, p99, value;	/* us, us; or a value of its own unit */
	long n;
	char unit[16];		/* "us" for latencies */
	char note[64];
};

static struct row rows[MAX_ROWS];
static int nrows;

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static struct row *add_row(const char *name)
{
	struct row *r = &rows[nrows < MAX_ROWS - 1 ? nrows++ : nrows];

	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	return r;
}

/* A latency row from @n samples (sorted here). */
static struct row *latency(const char *name, double *s, long n)
{
	struct row *r = add_row(name);

	strcpy(r->unit, "us");
	r->n = n;
	if (n > 0) {
		qsort(s, n, sizeof(*s), cmp_double);
		r->p50 = s[n / 2];
		r->p99 = s[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1];
	}
	return r;
}

static struct row *value(const char *name, double v, const char *unit)
{
	struct row *r = add_row(name);

	r->value = v;
	snprintf(r->unit, sizeof(r->unit), "%s", unit);
	return r;
}

static struct row *skipped(const char *name, const char *why)
{
	struct row *r = add_row(name);

	strcpy(r->unit, "-");
	snprintf(r->note, sizeof(r->note), "%s", why);
	return r;
}

static struct row *find(const char *name)
{
	for (int i = 0; i < nrows; i++)
		if (!strcmp(rows[i].name, name) && rows[i].n)
			return &rows[i];
	return NULL;
}

static double *samples(long n)
{
	double *s = calloc(n, sizeof(double));

	if (!s) {
		perror("calloc");
		exit(1);
	}
	return s;
}

/*
 * A sealed memfd of @size bytes, its pages filled; of huge pages (hugetlb,
 * 2 MiB on x86) with @huge: -errno if the guest has not enough of them.
 */
static int make_memfd_of(size_t size, unsigned int seals, int huge)
{
	int fd = memfd_create("bufshare-bench", MFD_CLOEXEC | MFD_ALLOW_SEALING |
			      (huge ? MFD_HUGETLB : 0));
	char *m;

	if (huge && fd < 0)
		return -errno;
	if (fd < 0 || ftruncate(fd, size) || (seals && fcntl(fd, F_ADD_SEALS, seals))) {
		perror("memfd");
		exit(1);
	}
	if (huge && fallocate(fd, 0, 0, size)) {
		int err = -errno;

		close(fd);
		return err;
	}
	if (!size)
		return fd;
	m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	for (size_t i = 0; i < size; i += PAGE)
		m[i] = 1;
	munmap(m, size);
	return fd;
}

/* A sealed memfd of @size bytes of ordinary pages, filled. */
static int make_memfd(size_t size, unsigned int seals)
{
	return make_memfd_of(size, seals, 0);
}

/* A dma-buf of the first @size bytes of @memfd, by /dev/udmabuf @dev: the fd or -errno. */
static int udmabuf_of(int dev, int memfd, size_t size)
{
	struct udmabuf_create c = {
		.memfd = memfd, .flags = UDMABUF_FLAGS_CLOEXEC, .size = size,
	};
	int fd = ioctl(dev, UDMABUF_CREATE, &c);

	return fd < 0 ? -errno : fd;
}

/* A dma-buf of @size bytes over a new memfd (udmabuf): the fd or -errno. */
static int make_udmabuf(size_t size)
{
	int memfd = make_memfd(size, F_SEAL_SHRINK);
	int dev = open("/dev/udmabuf", O_RDWR | O_CLOEXEC);
	int fd = dev < 0 ? -errno : udmabuf_of(dev, memfd, size);

	if (dev >= 0)
		close(dev);
	close(memfd);
	return fd;
}

/* @npages pages of a memfd, touched in a shuffled order: as many ranges. */
static int make_scattered(size_t npages)
{
	int fd = make_memfd(0, 0);
	uint32_t *order = malloc(npages * sizeof(*order));
	uint64_t seed = 0x5eed5eedULL;
	char *m;

	if (!order || ftruncate(fd, npages * PAGE) ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
		perror("scattered memfd");
		exit(1);
	}
	m = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	for (size_t i = 0; i < npages; i++)
		order[i] = i;
	for (size_t i = npages - 1; i > 0; i--) {
		size_t j;
		uint32_t t;

		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		j = (seed >> 33) % (i + 1);
		t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (size_t i = 0; i < npages; i++)
		m[(size_t)order[i] * PAGE] = 1;
	free(order);
	munmap(m, npages * PAGE);
	return fd;
}

static int open_dev(void)
{
	int fd = open(dev_path, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		perror(dev_path);
		exit(1);
	}
	return fd;
}

/* REGISTER under application @app: the id, or 0 with errno set. */
static __u64 reg_app(int dev, int fd, size_t size, const char *app)
{
	static const char props[] = "width=1920\0height=1080\0format=XR24";
	struct bufshare_register r = {
		.fd = fd, .length = size, .props = (uintptr_t)props,
		.props_size = sizeof(props),
	};

	snprintf(r.application, sizeof(r.application), "%s", app);
	return ioctl(dev, BUFSHARE_IOC_REGISTER, &r) ? 0 : r.id;
}

/* REGISTER under application "bench": the id, or 0 with errno set. */
static __u64 reg(int dev, int fd, size_t size)
{
	return reg_app(dev, fd, size, "bench");
}

static int unreg(int dev, __u64 id)
{
	return ioctl(dev, BUFSHARE_IOC_UNREGISTER, &id);
}

static void die_errno(const char *what)
{
	perror(what);
	exit(1);
}

static void bench_get_info(int dev, long n)
{
	struct bufshare_info info;
	double *s = samples(n);

	for (long i = 0; i < n; i++) {
		double t = now_us();

		if (ioctl(dev, BUFSHARE_IOC_GET_INFO, &info))
			die_errno("GET_INFO");
		s[i] = now_us() - t;
	}
	latency("GET_INFO", s, n);
	free(s);
}

/*
 * Says on stderr how many buffers the open file @dev has registered and
 * draining (unregistered, not yet FREED: they count against the limits),
 * and its unread events, after a REGISTER failed: the table only has room
 * for the error.
 */
static void why_not(int dev, const char *what)
{
	char path[64], line[256];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", dev);
	f = fopen(path, "r");
	if (!f)
		return;
	fprintf(stderr, "bench: %s failed (%s):", what, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "buffers:", 8) || !strncmp(line, "events:", 7) ||
		    (!strncmp(line, "draining:", 9) && !strchr(line, '='))) {
			line[strcspn(line, "\n")] = 0;
			fprintf(stderr, " %s", line);
		}
	}
	fprintf(stderr, "\n");
	fclose(f);
}

/* REGISTER, UPDATE, SET_PROPERTIES and UNREGISTER of one buffer, @n times. */
static void bench_buffer(int dev, int fd, const char *label, size_t size, long n)
{
	static const char props[] = "width=1920\0height=1080\0format=AR24";
	double *reg_s = samples(n), *upd_s = samples(n), *set_s = samples(n),
	       *unreg_s = samples(n);
	struct bufshare_buffer_info bi = { 0 };
	char name[64];
	__u64 id;

	for (long i = 0; i < n; i++) {
		struct bufshare_update u = {
			.flags = BUFSHARE_UPDATE_RANGE, .offset = 0, .length = size,
		};
		struct bufshare_set_properties sp = {
			.props = (uintptr_t)props, .props_size = sizeof(props),
		};
		double t = now_us();

		id = reg(dev, fd, size);
		if (!id) {
			int err = errno;

			snprintf(name, sizeof(name), "REGISTER %s", label);
			why_not(dev, name);
			skipped(name, strerror(err));
			goto out;
		}
		reg_s[i] = now_us() - t;
		bi.id = id;
		if (i == 0 && ioctl(dev, BUFSHARE_IOC_BUFFER_INFO, &bi))
			die_errno("BUFFER_INFO");
		u.id = id;
		u.seqno = i + 1;
		t = now_us();
		if (ioctl(dev, BUFSHARE_IOC_UPDATE, &u))
			die_errno("UPDATE");
		upd_s[i] = now_us() - t;
		sp.id = id;
		t = now_us();
		if (ioctl(dev, BUFSHARE_IOC_SET_PROPERTIES, &sp))
			die_errno("SET_PROPERTIES");
		set_s[i] = now_us() - t;
		t = now_us();
		if (unreg(dev, id))
			die_errno("UNREGISTER");
		unreg_s[i] = now_us() - t;
	}
	snprintf(name, sizeof(name), "REGISTER %s", label);
	snprintf(latency(name, reg_s, n)->note, sizeof(rows[0].note), "%u ranges",
		 bi.nr_ranges);
	snprintf(name, sizeof(name), "UPDATE %s", label);
	latency(name, upd_s, n);
	snprintf(name, sizeof(name), "SET_PROPERTIES %s", label);
	latency(name, set_s, n);
	snprintf(name, sizeof(name), "UNREGISTER %s", label);
	latency(name, unreg_s, n);
out:
	free(reg_s);
	free(upd_s);
	free(set_s);
	free(unreg_s);
}

/*
 * UPDATE as a frame loop makes it: one buffer registered once, then
 * UPDATEs of all of it, each next to a GET_INFO and an UPDATE with
 * BUFSHARE_UPDATE_NOWAIT (one each, in turn, so that all see the same
 * machine), on an open file of their own, at 4 KiB and at the 8 MiB of a
 * 1920x1080 XRGB8888 frame. The GET_INFO after a NOWAIT UPDATE waits for
 * its answer too: one is in flight at most. bench_buffer() times UPDATE
 * right after a REGISTER instead, while the device and the driver may
 * still be busy with the REGISTER and the UNREGISTER before it.
 */
static void bench_update(long n)
{
	static const size_t sizes[] = { 4 * KIB, 8 * MIB };
	static const char *const names[] = { "4KiB", "8MiB" };
	int dev = open_dev();

	for (int i = 0; i < 2; i++) {
		double *upd_s = samples(n), *info_s = samples(n), *nowait_s = samples(n);
		int fd = make_memfd(sizes[i], F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
		struct bufshare_update u = {
			.flags = BUFSHARE_UPDATE_RANGE, .length = sizes[i],
		};
		struct bufshare_info info;
		char name[64];

		u.id = reg(dev, fd, sizes[i]);
		if (!u.id)
			die_errno("REGISTER");
		for (long j = 0; j < n; j++) {
			double t = now_us();

			if (ioctl(dev, BUFSHARE_IOC_GET_INFO, &info))
				die_errno("GET_INFO");
			info_s[j] = now_us() - t;
			u.seqno = 0;
			t = now_us();
			if (ioctl(dev, BUFSHARE_IOC_UPDATE, &u))
				die_errno("UPDATE");
			upd_s[j] = now_us() - t;
			u.seqno = 0;
			u.flags |= BUFSHARE_UPDATE_NOWAIT;
			t = now_us();
			if (ioctl(dev, BUFSHARE_IOC_UPDATE, &u))
				die_errno("UPDATE, NOWAIT");
			nowait_s[j] = now_us() - t;
			u.flags &= ~BUFSHARE_UPDATE_NOWAIT;
		}
		snprintf(name, sizeof(name), "UPDATE memfd %s, registered once", names[i]);
		latency(name, upd_s, n);
		snprintf(name, sizeof(name), "UPDATE memfd %s, registered once, NOWAIT", names[i]);
		latency(name, nowait_s, n);
		snprintf(name, sizeof(name), "GET_INFO, alternating with UPDATE %s", names[i]);
		latency(name, info_s, n);
		if (unreg(dev, u.id))
			die_errno("UNREGISTER");
		free(upd_s);
		free(info_s);
		free(nowait_s);
		close(fd);
	}
	close(dev);
}

/*
 * The kernel's own pinning of a memfd's pages, which a REGISTER of a memfd
 * cannot do without: udmabuf's CREATE of all of @fd (memfd_pin_folios(),
 * as the driver's REGISTER), and the close that unpins them, @n times.
 */
static void bench_pin_floor(int fd, const char *label, size_t size, long n)
{
	double *create_s = samples(n), *close_s = samples(n);
	char name[64];
	int dev = open("/dev/udmabuf", O_RDWR | O_CLOEXEC);

	snprintf(name, sizeof(name), "udmabuf CREATE %s", label);
	if (dev < 0) {
		skipped(name, strerror(errno));
		goto out;
	}
	for (long i = 0; i < n; i++) {
		double t = now_us();
		int buf = udmabuf_of(dev, fd, size);

		if (buf < 0) {
			skipped(name, buf == -EINVAL ? "larger than udmabuf's size_limit_mb" :
				strerror(-buf));
			goto out;
		}
		create_s[i] = now_us() - t;
		t = now_us();
		close(buf);
		close_s[i] = now_us() - t;
	}
	snprintf(latency(name, create_s, n)->note, sizeof(rows[0].note),
		 "the kernel's pin of its pages");
	snprintf(name, sizeof(name), "udmabuf close %s", label);
	latency(name, close_s, n);
out:
	if (dev >= 0)
		close(dev);
	free(create_s);
	free(close_s);
}

/* The commands on the memfd @fd of @size bytes, then the kernel's pin of it; closes @fd. */
static void bench_memfd(int dev, int fd, const char *label, size_t size, long n)
{
	bench_buffer(dev, fd, label, size, n);
	bench_pin_floor(fd, label, size, n);
	close(fd);
}

static void bench_sizes(int dev)
{
	static const size_t sizes[] = { 4 * KIB, 1 * MIB, 8 * MIB, 256 * MIB };
	static const char *const names[] = { "4KiB", "1MiB", "8MiB", "256MiB" };
	char label[48];

	for (int i = 0; i < 4; i++) {
		long n = sizes[i] > 8 * MIB ? (quick ? 0 : 50) : (quick ? 20 : 300);
		int fd;

		snprintf(label, sizeof(label), "memfd %s", names[i]);
		if (!n) {
			snprintf(label, sizeof(label), "REGISTER memfd %s", names[i]);
			skipped(label, "not in short mode");
			continue;
		}
		fd = make_memfd(sizes[i], F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
		bench_memfd(dev, fd, label, sizes[i], n);
		if (sizes[i] == 256 * MIB) {
			snprintf(label, sizeof(label), "memfd %s huge pages", names[i]);
			fd = make_memfd_of(sizes[i], F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, 1);
			if (fd >= 0) {
				bench_memfd(dev, fd, label, sizes[i], n);
			} else {
				char name[64];

				snprintf(name, sizeof(name), "REGISTER %s", label);
				skipped(name, strerror(-fd));
			}
		}

		snprintf(label, sizeof(label), "dma-buf %s", names[i]);
		fd = make_udmabuf(sizes[i]);
		if (fd < 0) {
			char name[64];

			snprintf(name, sizeof(name), "REGISTER %s", label);
			skipped(name, fd == -EINVAL ? "udmabuf: larger than its size_limit_mb" :
				strerror(-fd));
			continue;
		}
		bench_buffer(dev, fd, label, sizes[i], n);
		close(fd);
	}
}

static void bench_ranges(int dev)
{
	static const size_t pages[] = { 1, 16, 256, 4096, 65536 };
	struct bufshare_info info;
	char name[64];

	if (ioctl(dev, BUFSHARE_IOC_GET_INFO, &info))
		die_errno("GET_INFO");
	for (int i = 0; i < 5; i++) {
		long n = pages[i] >= 4096 ? (pages[i] > 4096 ? 10 : 30) : 200;
		struct bufshare_buffer_info bi = { 0 };
		double *s, *g = NULL;
		int fd;

		snprintf(name, sizeof(name), "REGISTER %zu scattered pages", pages[i]);
		if (pages[i] > info.max_ranges) {
			skipped(name, "more than the device's max_ranges");
			continue;
		}
		if (quick && pages[i] > 4096) {
			skipped(name, "not in short mode");
			continue;
		}
		if (quick)
			n = n > 10 ? 10 : n;
		fd = make_scattered(pages[i]);
		s = samples(n);
		/*
		 * A GET_INFO after each 1-range REGISTER, for the ratio of the
		 * two: both see the same machine.
		 */
		if (pages[i] == 1)
			g = samples(n);
		for (long j = 0; j < n; j++) {
			double t = now_us();
			__u64 id = reg(dev, fd, pages[i] * PAGE);

			if (!id) {
				skipped(name, strerror(errno));
				goto next;
			}
			s[j] = now_us() - t;
			bi.id = id;
			if (j == 0 && ioctl(dev, BUFSHARE_IOC_BUFFER_INFO, &bi))
				die_errno("BUFFER_INFO");
			if (unreg(dev, id))
				die_errno("UNREGISTER");
			if (g) {
				t = now_us();
				if (ioctl(dev, BUFSHARE_IOC_GET_INFO, &info))
					die_errno("GET_INFO");
				g[j] = now_us() - t;
			}
		}
		snprintf(latency(name, s, n)->note, sizeof(rows[0].note), "%u ranges",
			 bi.nr_ranges);
		if (g)
			latency("GET_INFO, alternating with REGISTER 1 range", g, n);
next:
		free(s);
		free(g);
		close(fd);
	}
}

struct thread_arg {
	pthread_barrier_t *start;
	double seconds;
	long ops;
	int fd;
};

/* REGISTER and UNREGISTER pairs of a 4 KiB memfd, for @seconds. */
static void *worker(void *p)
{
	struct thread_arg *a = p;
	int dev = open_dev();
	double end;

	pthread_barrier_wait(a->start);
	end = now_us() + a->seconds * 1e6;
	while (now_us() < end) {
		__u64 id = reg(dev, a->fd, 4 * KIB);

		if (!id || unreg(dev, id))
			die_errno("REGISTER/UNREGISTER");
		a->ops++;
	}
	close(dev);
	return NULL;
}

static void bench_threads(void)
{
	double seconds = quick ? 1 : 5;
	int fd = make_memfd(4 * KIB, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	char name[64];

	for (int nt = 1; nt <= (quick ? 2 : 8); nt *= 2) {
		struct thread_arg a[8];
		pthread_t th[8];
		pthread_barrier_t b;
		double t, total = 0;

		pthread_barrier_init(&b, NULL, nt + 1);
		for (int i = 0; i < nt; i++) {
			a[i] = (struct thread_arg){ .start = &b, .seconds = seconds, .fd = fd };
			if (pthread_create(&th[i], NULL, worker, &a[i]))
				die_errno("pthread_create");
		}
		pthread_barrier_wait(&b);
		t = now_us();
		for (int i = 0; i < nt; i++) {
			pthread_join(th[i], NULL);
			total += a[i].ops;
		}
		t = (now_us() - t) / 1e6;
		pthread_barrier_destroy(&b);
		snprintf(name, sizeof(name), "REGISTER+UNREGISTER pairs, %d thread%s", nt,
			 nt > 1 ? "s" : "");
		value(name, total / t, "pairs/s");
	}
	close(fd);
}

static long meminfo_kb(const char *key)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)) && line[strlen(key)] == ':')
			v = strtol(line + strlen(key) + 1, NULL, 10);
	fclose(f);
	return v;
}

/*
 * The guest's memory per registered buffer: slab and MemAvailable before
 * and after registering @n 4 KiB buffers (one page of one memfd each, so
 * that the pages themselves are not counted), and the time that took;
 * registering stops after @budget seconds.
 */
static void bench_memory(int dev, long n, double budget)
{
	int timed_out = 0;
	struct bufshare_info info;
	long slab0, avail0, slab1, avail1;
	__u64 *ids = calloc(n, sizeof(*ids));
	int fd;
	long i;
	double t;
	char name[64];

	if (ioctl(dev, BUFSHARE_IOC_GET_INFO, &info))
		die_errno("GET_INFO");
	if (!ids)
		die_errno("calloc");
	fd = make_memfd(4 * KIB, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	slab0 = meminfo_kb("Slab");
	avail0 = meminfo_kb("MemAvailable");
	t = now_us();
	for (i = 0; i < n; i++) {
		ids[i] = reg(dev, fd, 4 * KIB);
		if (!ids[i] || now_us() - t > budget * 1e6) {
			timed_out = ids[i] != 0;
			i += timed_out;
			break;
		}
	}
	t = now_us() - t;
	slab1 = meminfo_kb("Slab");
	avail1 = meminfo_kb("MemAvailable");
	snprintf(name, sizeof(name), "buffers registered at once");
	value(name, i, "buffers");
	if (timed_out)
		snprintf(rows[nrows - 1].note, sizeof(rows[0].note),
			 "of %ld: stopped after %.0f s", n, budget);
	else if (i < n)
		snprintf(rows[nrows - 1].note, sizeof(rows[0].note),
			 "of %ld: %s (device max %u)", n, strerror(errno), info.max_buffers);
	if (i) {
		value("guest slab per buffer", (slab1 - slab0) * 1024.0 / i, "bytes");
		value("guest memory per buffer", (avail0 - avail1) * 1024.0 / i, "bytes");
		value("time to register them", t / 1e6, "s");
	}
	t = now_us();
	for (long j = 0; j < i; j++)
		if (unreg(dev, ids[j]))
			die_errno("UNREGISTER");
	if (i)
		value("time to unregister them", (now_us() - t) / 1e6, "s");
	free(ids);
	close(fd);
}

/* The host consumers of application @app now, or -errno. */
static long consumers(int dev, const char *app)
{
	struct bufshare_consumers c = { 0 };

	snprintf(c.application, sizeof(c.application), "%s", app);
	if (ioctl(dev, BUFSHARE_IOC_GET_CONSUMERS, &c))
		return -errno;
	return c.consumers;
}

/*
 * Waits for the RELEASED event of update @seqno (or a later one) of buffer
 * @id, skipping other events, at most EVENT_WAIT_MS: 0, -ETIMEDOUT or
 * -errno.
 */
static int wait_released(int dev, __u64 id, __u64 seqno)
{
	double end = now_us() + EVENT_WAIT_MS * 1e3;
	struct bufshare_event ev;

	for (;;) {
		struct pollfd p = { .fd = dev, .events = POLLIN };
		double left = end - now_us();
		ssize_t n;

		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, left / 1e3 + 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (!(p.revents & POLLIN))
			continue;
		n = read(dev, &ev, sizeof(ev));
		if (n < 0)
			return -errno;
		if (n != sizeof(ev))
			return -EIO;
		if (ev.type == BUFSHARE_EVENT_RELEASED && ev.id == id && ev.seqno >= seqno)
			return 0;
	}
}

/* One UPDATE of buffer @id until its RELEASED is read: the time, or -errno. */
static double update_to_released(int dev, __u64 id)
{
	struct bufshare_update u = { .id = id };
	double t = now_us();
	int err;

	if (ioctl(dev, BUFSHARE_IOC_UPDATE, &u))
		return -errno;
	err = wait_released(dev, id, u.seqno);
	return err ? err : now_us() - t;
}

/*
 * UPDATE to event: an UPDATE of a 4 KiB memfd until the guest reads the
 * RELEASED event of that update, for a buffer no host consumer watches
 * (the device releases it at once: the event path's floor) and for one
 * that a host consumer (bufshare-watch) receives and releases, alternating
 * one each, so that both see the same machine. The second is the round
 * trip from the guest's UPDATE to a host consumer having seen it, on the
 * guest's clock; it is skipped when GET_CONSUMERS says nobody consumes
 * APP_WATCHED. Its own open file, so that no other section's events
 * (FREED) queue up before these.
 */
static void bench_events(long n)
{
	static const char *const names[2] = {
		"UPDATE to RELEASED, no consumer",
		"UPDATE to RELEASED, host consumer",
	};
	static const char *const apps[2] = { APP_ALONE, APP_WATCHED };
	int dev = open_dev(), fd, runs = 2, failed[2] = { 0, 0 };
	struct bufshare_info info;
	double *s[2];
	__u64 id[2];
	long alone, watched, done[2] = { 0, 0 };
	char note[64] = "";

	if (ioctl(dev, BUFSHARE_IOC_GET_INFO, &info))
		die_errno("GET_INFO");
	if (!(info.features & (1ULL << VIRTIO_BUFSHARE_F_EVENTS))) {
		skipped(names[0], "device without VIRTIO_BUFSHARE_F_EVENTS");
		skipped(names[1], "device without VIRTIO_BUFSHARE_F_EVENTS");
		close(dev);
		return;
	}
	alone = consumers(dev, APP_ALONE);
	watched = consumers(dev, APP_WATCHED);
	if (alone < 0 || watched < 0)
		die_errno("GET_CONSUMERS");
	if (alone)
		snprintf(note, sizeof(note), "%ld consumers of " APP_ALONE, alone);
	if (!watched)
		runs = 1;
	fd = make_memfd(4 * KIB, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	for (int a = 0; a < runs; a++) {
		s[a] = samples(n);
		id[a] = reg_app(dev, fd, 4 * KIB, apps[a]);
		if (!id[a])
			die_errno("REGISTER");
	}
	for (long i = 0; i < n; i++) {
		for (int a = 0; a < runs; a++) {
			double t;

			if (failed[a])
				continue;
			t = update_to_released(dev, id[a]);
			if (t < 0)
				failed[a] = -t;
			else
				s[a][done[a]++] = t;
		}
	}
	for (int a = 0; a < runs; a++) {
		char why[64];

		if (failed[a]) {
			if (failed[a] == ETIMEDOUT)
				snprintf(why, sizeof(why), "no RELEASED in %d s, after %ld updates",
					 EVENT_WAIT_MS / 1000, done[a]);
			else
				snprintf(why, sizeof(why), "%s after %ld updates",
					 strerror(failed[a]), done[a]);
			skipped(names[a], why);
		} else {
			snprintf(latency(names[a], s[a], n)->note, sizeof(rows[0].note), "%s",
				 a ? "bufshare-watch releases it" : note);
		}
		if (unreg(dev, id[a]))
			die_errno("UNREGISTER");
		free(s[a]);
	}
	if (runs == 1)
		skipped(names[1], "no consumer of " APP_WATCHED " (GET_CONSUMERS)");
	close(fd);
	close(dev);
}

static int write_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p = (const char *)p + w;
		n -= w;
	}
	return 0;
}

/*
 * One frame of @len bytes to the host, in writes of at most @chunk bytes
 * (all at once if 0), and its one-byte answer.
 */
static int frame(int port, const char *buf, uint32_t len, size_t chunk)
{
	unsigned char hdr[4] = { len, len >> 8, len >> 16, len >> 24 }, ack;

	if (write_all(port, hdr, 4))
		return -1;
	for (size_t done = 0, n; done < len; done += n) {
		n = chunk && len - done > chunk ? chunk : len - done;
		if (write_all(port, buf + done, n))
			return -1;
	}
	return read(port, &ack, 1) == 1 ? 0 : -1;
}

/* The names of a transport's rows, and the largest write it takes (0: any). */
struct transport {
	const char *echo, *info, *frames, *copy;
	size_t chunk;
};

static const struct transport serial_rows = {
	.echo = "virtio-serial echo round trip (floor)",
	.info = "GET_INFO, alternating with the echo",
	.frames = "virtio-serial 8MiB frames",
	.copy = "virtio-serial 8MiB frame copy",
};

static const struct transport vsock_rows = {
	.echo = "vsock echo round trip",
	.info = "GET_INFO, alternating with the vsock echo",
	.frames = "vsock 8MiB frames",
	.copy = "vsock 8MiB frame copy",
	/*
	 * vhost-device-vsock 0.3.0 (virtio-vsock 0.10) takes a packet's
	 * data from one descriptor only, and since Linux 6.17 a guest sends
	 * a packet of more than about 32 KiB in several (nonlinear skbs,
	 * virtio_vsock_alloc_skb()): writes of 16 KiB make packets of 16 KiB.
	 */
	.chunk = 16 * KIB,
};

/*
 * The baselines over a transport whose host end answers frames on @port:
 * the echo floor and the 8 MiB copy. Closes @port.
 */
static void bench_transport(int dev, int port, const struct transport *rows)
{
	long n_echo = quick ? 50 : 1000, n_frame = quick ? 3 : 30;
	double *s, *g, t0;
	char *buf;

	buf = malloc(8 * MIB);
	if (!buf)
		die_errno("malloc");
	memset(buf, 0x5a, 8 * MIB);
	/*
	 * The echo and GET_INFO alternate, so that both see the same
	 * machine: on shared hosts, its load changes within a run.
	 */
	s = samples(n_echo);
	g = samples(n_echo);
	for (long i = 0; i < n_echo; i++) {
		struct bufshare_info info;
		double t = now_us();

		if (frame(port, buf, 1, rows->chunk))
			die_errno(rows->echo);
		s[i] = now_us() - t;
		t = now_us();
		if (ioctl(dev, BUFSHARE_IOC_GET_INFO, &info))
			die_errno("GET_INFO");
		g[i] = now_us() - t;
	}
	latency(rows->echo, s, n_echo);
	latency(rows->info, g, n_echo);
	free(s);
	free(g);
	s = samples(n_frame);
	t0 = now_us();
	for (long i = 0; i < n_frame; i++) {
		double t = now_us();

		if (frame(port, buf, 8 * MIB, rows->chunk))
			die_errno(rows->copy);
		s[i] = now_us() - t;
	}
	value(rows->frames, n_frame / ((now_us() - t0) / 1e6), "frames/s");
	latency(rows->copy, s, n_frame);
	free(s);
	free(buf);
	close(port);
}

/* The baselines over the virtio-serial port @path. */
static void bench_serial(int dev, const char *path)
{
	int port = open(path, O_RDWR | O_CLOEXEC);

	if (port < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		skipped(serial_rows.echo, "no port");
		return;
	}
	bench_transport(dev, port, &serial_rows);
}

/* The baselines over a vsock stream to port @vport of the host. */
static void bench_vsock(int dev, unsigned int vport)
{
	struct sockaddr_vm addr = {
		.svm_family = AF_VSOCK,
		.svm_cid = VMADDR_CID_HOST,
		.svm_port = vport,
	};
	int sock = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof(addr))) {
		fprintf(stderr, "vsock port %u of the host: %s\n", vport, strerror(errno));
		skipped(vsock_rows.echo, "no connection");
		if (sock >= 0)
			close(sock);
		return;
	}
	bench_transport(dev, sock, &vsock_rows);
}

static void ratio(const char *what, const char *a, const char *b, const char *target)
{
	struct row *x = find(a), *y = find(b), *r;

	if (!x || !y || !y->p50) {
		skipped(what, "not measured");
		return;
	}
	r = value(what, x->p50 / y->p50, "x");
	if (target)
		snprintf(r->note, sizeof(r->note), "target %s", target);
}

static void ratio_values(const char *what, const char *a, const char *b, const char *target)
{
	struct row *x = NULL, *y = NULL, *r;

	for (int i = 0; i < nrows; i++) {
		if (!strcmp(rows[i].name, a))
			x = &rows[i];
		if (!strcmp(rows[i].name, b))
			y = &rows[i];
	}
	if (!x || !y || !y->value) {
		skipped(what, "not measured");
		return;
	}
	r = value(what, x->value / y->value, "x");
	snprintf(r->note, sizeof(r->note), "target %s", target);
}

static void print_table(void)
{
	printf("%-46s %12s %12s %8s  %s\n", "", "p50 / value", "p99", "n", "");
	for (int i = 0; i < nrows; i++) {
		struct row *r = &rows[i];

		if (!strcmp(r->unit, "-"))
			printf("%-46s %12s %12s %8s  %s\n", r->name, "-", "-", "-", r->note);
		else if (!strcmp(r->unit, "us"))
			printf("%-46s %9.1f us %9.1f us %8ld  %s\n", r->name, r->p50, r->p99,
			       r->n, r->note);
		else
			printf("%-46s %12.2f %12s %8s  %s\n", r->name, r->value, r->unit, "",
			       r->note);
	}
}

static void write_json(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		perror(path);
		return;
	}
	fprintf(f, "{\n  \"quick\": %s,\n  \"results\": [\n", quick ? "true" : "false");
	for (int i = 0; i < nrows; i++) {
		struct row *r = &rows[i];

		fprintf(f, "    {\"name\": \"%s\", \"unit\": \"%s\"", r->name, r->unit);
		if (!strcmp(r->unit, "us"))
			fprintf(f, ", \"p50\": %.1f, \"p99\": %.1f, \"n\": %ld", r->p50, r->p99,
				r->n);
		else if (strcmp(r->unit, "-"))
			fprintf(f, ", \"value\": %.3f", r->value);
		fprintf(f, ", \"note\": \"%s\"}%s\n", r->note, i + 1 < nrows ? "," : "");
	}
	fprintf(f, "  ]\n}\n");
	fclose(f);
}

static long env_long(const char *name, long def)
{
	const char *v = getenv(name);

	return v && *v ? atol(v) : def;
}

int main(int argc, char **argv)
{
	const char *json = NULL, *port = NULL;
	long vport = -1;
	int opt, dev;

	while ((opt = getopt(argc, argv, "qs:o:p:V:d:")) != -1) {
		switch (opt) {
		case 'q':
			quick = 1;
			break;
		case 's':
			sections = optarg;
			break;
		case 'o':
			json = optarg;
			break;
		case 'p':
			port = optarg;
			break;
		case 'V': {
			char *end;

			errno = 0;
			vport = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || vport < 0 || vport > UINT32_MAX) {
				fprintf(stderr, "%s: -V %s: not a vsock port\n", argv[0], optarg);
				return 2;
			}
			break;
		}
		case 'd':
			dev_path = optarg;
			break;
		default:
			fprintf(stderr,
				"usage: %s [-q] [-s SECTIONS] [-o JSON] [-p PORT] [-V VPORT] [-d DEVICE]\n",
				argv[0]);
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	dev = open_dev();
	if (section("get_info")) {
		fprintf(stderr, "bench: GET_INFO\n");
		bench_get_info(dev, quick ? 100 : 2000);
	}
	if (!section("serial")) {
		/* Not asked for. */
	} else if (port) {
		fprintf(stderr, "bench: virtio-serial\n");
		bench_serial(dev, port);
	} else {
		skipped(serial_rows.echo, "no port (-p)");
	}
	if (!section("vsock")) {
		/* Not asked for. */
	} else if (vport >= 0) {
		fprintf(stderr, "bench: vsock\n");
		bench_vsock(dev, vport);
	} else {
		skipped(vsock_rows.echo, "no port (-V)");
	}
	if (section("events")) {
		fprintf(stderr, "bench: UPDATE to event\n");
		bench_events(quick ? 50 : 1000);
	}
	if (section("update")) {
		fprintf(stderr, "bench: UPDATE of one buffer\n");
		bench_update(quick ? 50 : 1000);
	}
	if (section("sizes")) {
		fprintf(stderr, "bench: buffer sizes\n");
		bench_sizes(dev);
	}
	if (section("ranges")) {
		fprintf(stderr, "bench: scattered pages\n");
		bench_ranges(dev);
	}
	if (section("threads")) {
		fprintf(stderr, "bench: threads\n");
		bench_threads();
	}
	if (section("memory")) {
		fprintf(stderr, "bench: memory\n");
		bench_memory(dev, quick ? 200 : env_long("BUFSHARE_BENCH_BUFFERS", 100000),
			     quick ? 30 : env_long("BUFSHARE_BENCH_BUFFERS_SECONDS", 180));
	}
	close(dev);

	ratio("GET_INFO / floor", "GET_INFO, alternating with the echo",
	      "virtio-serial echo round trip (floor)", "<= 2");
	ratio("UPDATE / GET_INFO", "UPDATE memfd 8MiB, registered once",
	      "GET_INFO, alternating with UPDATE 8MiB", "<= 1.5");
	ratio("1-range REGISTER / GET_INFO", "REGISTER 1 scattered pages",
	      "GET_INFO, alternating with REGISTER 1 range", "<= 2");
	ratio("REGISTER 256MiB / 4KiB", "REGISTER memfd 256MiB", "REGISTER memfd 4KiB", "<= 2");
	ratio("REGISTER 256MiB huge pages / 4KiB", "REGISTER memfd 256MiB huge pages",
	      "REGISTER memfd 4KiB", "<= 2");
	ratio("REGISTER 256MiB / kernel's pin", "REGISTER memfd 256MiB",
	      "udmabuf CREATE memfd 256MiB", NULL);
	ratio("UPDATE to RELEASED, consumer / none", "UPDATE to RELEASED, host consumer",
	      "UPDATE to RELEASED, no consumer", NULL);
	ratio("8MiB copy / UPDATE", "virtio-serial 8MiB frame copy",
	      "UPDATE memfd 8MiB, registered once", ">= 100");
	ratio("8MiB copy / UPDATE NOWAIT", "virtio-serial 8MiB frame copy",
	      "UPDATE memfd 8MiB, registered once, NOWAIT", ">= 100");
	ratio("8MiB copy / floor", "virtio-serial 8MiB frame copy",
	      "virtio-serial echo round trip (floor)", NULL);
	ratio("GET_INFO / vsock echo", "GET_INFO, alternating with the vsock echo",
	      "vsock echo round trip", "<= 2");
	ratio("8MiB vsock copy / UPDATE", "vsock 8MiB frame copy",
	      "UPDATE memfd 8MiB, registered once", ">= 100");
	ratio("8MiB vsock copy / UPDATE NOWAIT", "vsock 8MiB frame copy",
	      "UPDATE memfd 8MiB, registered once, NOWAIT", ">= 100");
	ratio("8MiB vsock copy / vsock echo", "vsock 8MiB frame copy", "vsock echo round trip",
	      NULL);
	ratio_values("2 threads / 1 thread", "REGISTER+UNREGISTER pairs, 2 threads",
		     "REGISTER+UNREGISTER pairs, 1 thread", ">= 1.6");
	print_table();
	if (json)
		write_json(json);
	return 0;
}
