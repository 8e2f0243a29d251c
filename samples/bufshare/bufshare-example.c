// SPDX-License-Identifier: GPL-2.0
/*
 * bufshare-example: share a small framebuffer with the host.
 *
 * Makes a memfd, seals its size, draws an XRGB8888 pattern in it,
 * registers it with /dev/bufshare as a buffer of application
 * "framebuffer" with its width, height, stride and format (a DRM fourcc)
 * as properties, moves a square over it a few times, telling the host
 * which rectangle changed each time, then shows what the driver knows of
 * the buffer and unregisters it. Uses nothing but <linux/bufshare.h> and
 * the C library.
 *
 *   bufshare-example [DEVICE]
 *
 * Exits 0 on success.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

	if (ioctl(dev, BUFSHARE_IOC_UNREGISTER, &id)) {
		perror("BUFSHARE_IOC_UNREGISTER");
		goto out;
	}
	printf("unregistered buffer %llu\n", (unsigned long long)id);
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
