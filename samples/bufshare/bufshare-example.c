// SPDX-License-Identifier: GPL-2.0
/*
 * bufshare-example: share a small framebuffer with the host.
 *
 * Makes a memfd, seals its size, draws an XRGB8888 pattern in it,
 * registers it with /dev/bufshare as a buffer of application
 * "framebuffer" with its width, height, stride and format (a DRM fourcc)
 * as properties, moves a square over it a few times, telling the host
 * which rectangle changed each time, then shows what the driver knows of
 * the buffer and unregisters it. On a device with events it then runs a
 * small event loop: it waits until the host released the last update, and
 * after unregistering, until the host let go of the memory (FREED). Uses
 * nothing but <linux/bufshare.h> and the C library.
 *
 *   bufshare-example [DEVICE]
 *
 * Exits 0 on success.
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
#include <unistd.h>

#include <linux/bufshare.h>

#define WIDTH		256
#define HEIGHT		256
#define STRIDE		(WIDTH * 4)
#define SIZE		(STRIDE * HEIGHT)	/* 256 KiB: a whole number of pages */
#define SQUARE		32
#define FRAMES		4
#define EVENT_WAIT_MS	10000

/* DRM_FORMAT_XRGB8888, fourcc_code('X', 'R', '2', '4') of <drm/drm_fourcc.h>. */
#define FORMAT_XRGB8888	((uint32_t)'X' | ((uint32_t)'R' << 8) | \
			 ((uint32_t)'2' << 16) | ((uint32_t)'4' << 24))

static void fill(uint32_t *fb, unsigned int x0, unsigned int y0, unsigned int w,
		 unsigned int h, uint32_t color)
{
	for (unsigned int y = y0; y < y0 + h; y++)
		for (unsigned int x = x0; x < x0 + w; x++)
			fb[y * (STRIDE / 4) + x] = color;
}

/* A gradient background: red grows to the right, green downwards. */
static void background(uint32_t *fb, unsigned int x0, unsigned int y0, unsigned int w,
		       unsigned int h)
{
	for (unsigned int y = y0; y < y0 + h; y++)
		for (unsigned int x = x0; x < x0 + w; x++)
			fb[y * (STRIDE / 4) + x] = (x * 255 / (WIDTH - 1)) << 16 |
						   (y * 255 / (HEIGHT - 1)) << 8 | 0x40;
}

/* Prints the properties blob: NUL-terminated name=value strings. */
static void print_props(const char *props, size_t size)
{
	for (size_t i = 0; i < size; i += strlen(props + i) + 1)
		printf("  property %s\n", props + i);
}

/* Whether the device has events: GET_CONSUMERS works only then. */
static int has_events(int dev)
{
	struct bufshare_consumers c = { .application = "framebuffer" };

	return !ioctl(dev, BUFSHARE_IOC_GET_CONSUMERS, &c);
}

/*
 * Waits for an event of @type about buffer @id (with @seqno at least
 * @seqno), handling the others as they come. 0, or -1 after a message.
 */
static int wait_event(int dev, __u32 type, __u64 id, __u64 seqno)
{
	struct pollfd p = { .fd = dev, .events = POLLIN };
	struct bufshare_event ev;

	for (;;) {
		int n = poll(&p, 1, EVENT_WAIT_MS);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "no event %u for buffer %llu\n", type,
				(unsigned long long)id);
			return -1;
		}
		if (read(dev, &ev, sizeof(ev)) != sizeof(ev)) {
			perror("read");
			return -1;
		}
		switch (ev.type) {
		case BUFSHARE_EVENT_CONSUMERS:
			printf("%u consumers of %s\n", ev.consumers, ev.application);
			break;
		case BUFSHARE_EVENT_LOST:
			/* Updates in flight will not be released. */
			printf("the host lost its buffers; they come back\n");
			if (type == BUFSHARE_EVENT_RELEASED)
				return 0;
			break;
		}
		if (ev.type == type && ev.id == id && ev.seqno >= seqno)
			return 0;
	}
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/dev/bufshare";
	char props[256], got[256];
	struct bufshare_register reg = { 0 };
	struct bufshare_buffer_info info = { 0 };
	int dev = -1, memfd = -1, len, ret = 1;
	uint32_t *fb = MAP_FAILED;
	__u64 id = 0;

	/* Properties: "name=value" strings, each with its NUL. */
	len = snprintf(props, sizeof(props), "width=%u%cheight=%u%cstride=%u%cformat=%u",
		       WIDTH, 0, HEIGHT, 0, STRIDE, 0, FORMAT_XRGB8888);
	len++;	/* the last NUL */

	/* A memfd whose size cannot change: the driver pins its pages. */
	memfd = memfd_create("framebuffer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (memfd < 0 || ftruncate(memfd, SIZE) ||
	    fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
		perror("memfd");
		goto out;
	}
	fb = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (fb == MAP_FAILED) {
		perror("mmap");
		goto out;
	}
	background(fb, 0, 0, WIDTH, HEIGHT);

	dev = open(path, O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		perror(path);
		goto out;
	}
	reg.fd = memfd;
	reg.offset = 0;
	reg.length = SIZE;
	reg.props = (uintptr_t)props;
	reg.props_size = len;
	strcpy(reg.application, "framebuffer");
	if (ioctl(dev, BUFSHARE_IOC_REGISTER, &reg)) {
		perror("BUFSHARE_IOC_REGISTER");
		goto out;
	}
	id = reg.id;
	printf("registered %u bytes as buffer %llu\n", SIZE, (unsigned long long)id);

	/* A square moving along the diagonal; each frame, the rectangle it covered. */
	for (unsigned int i = 0; i < FRAMES; i++) {
		unsigned int pos = i * (WIDTH - SQUARE) / (FRAMES - 1);
		unsigned int from = i ? (i - 1) * (WIDTH - SQUARE) / (FRAMES - 1) : pos;
		struct bufshare_update u = {
			.id = id,
			.flags = BUFSHARE_UPDATE_RECT,
			.x = from,
			.y = from,
			.width = pos - from + SQUARE,
			.height = pos - from + SQUARE,
		};

		background(fb, from, from, SQUARE, SQUARE);
		fill(fb, pos, pos, SQUARE, SQUARE, 0x00ffffff);
		if (ioctl(dev, BUFSHARE_IOC_UPDATE, &u)) {
			perror("BUFSHARE_IOC_UPDATE");
			goto out;
		}
		printf("update %llu: %ux%u at %u,%u\n", (unsigned long long)u.seqno,
		       u.width, u.height, u.x, u.y);
	}

	info.id = id;
	info.props = (uintptr_t)got;
	info.props_size = sizeof(got);
	if (ioctl(dev, BUFSHARE_IOC_BUFFER_INFO, &info)) {
		perror("BUFSHARE_IOC_BUFFER_INFO");
		goto out;
	}
	printf("buffer %llu: application %s, %s, %llu bytes in %u ranges, last update %llu\n",
	       (unsigned long long)info.id, info.application,
	       info.kind == BUFSHARE_KIND_MEMFD ? "memfd" : "dma-buf",
	       (unsigned long long)info.size, info.nr_ranges,
	       (unsigned long long)info.seqno);
	if (info.props_size > sizeof(got)) {
		fprintf(stderr, "properties grew to %u bytes\n", info.props_size);
		goto out;
	}
	print_props(got, info.props_size);
	if (info.size != SIZE || info.seqno != FRAMES || info.kind != BUFSHARE_KIND_MEMFD ||
	    strcmp(info.application, "framebuffer") || info.props_size != (__u32)len ||
	    memcmp(got, props, len)) {
		fprintf(stderr, "the driver does not report what was registered\n");
		goto out;
	}

	if (!has_events(dev)) {
		if (ioctl(dev, BUFSHARE_IOC_UNREGISTER, &id)) {
			perror("BUFSHARE_IOC_UNREGISTER");
			goto out;
		}
		printf("unregistered buffer %llu\n", (unsigned long long)id);
		ret = 0;
		goto out;
	}

	/* The event loop: the host is done with the last update... */
	if (wait_event(dev, BUFSHARE_EVENT_RELEASED, id, FRAMES))
		goto out;
	printf("host released update %u\n", FRAMES);
	/* ...and, once unregistered, with the memory. */
	struct bufshare_unregister unreg = { .id = id };
	if (ioctl(dev, BUFSHARE_IOC_UNREGISTER_FLAGS, &unreg)) {
		perror("BUFSHARE_IOC_UNREGISTER_FLAGS");
		goto out;
	}
	if (wait_event(dev, BUFSHARE_EVENT_FREED, id, 0))
		goto out;
	printf("unregistered buffer %llu, host let go of its memory\n", (unsigned long long)id);
	ret = 0;
out:
	if (dev >= 0)
		close(dev);	/* would unregister the buffer if still registered */
	if (fb != MAP_FAILED)
		munmap(fb, SIZE);
	if (memfd >= 0)
		close(memfd);
	return ret;
}
