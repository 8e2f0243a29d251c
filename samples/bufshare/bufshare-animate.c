// SPDX-License-Identifier: GPL-2.0
/*
 * bufshare-animate: draws an animated test pattern into a framebuffer
 * shared with the host through /dev/bufshare, and tells the host about
 * every frame.
 *
 * The framebuffer is a sealed memfd registered under the application
 * "framebuffer" with the properties width, height, stride, format (the
 * DRM fourcc of XRGB8888, as a decimal number), offset (where the frame
 * starts in the buffer) and crc32, the CRC-32 (zlib's) of the frame's
 * bytes, which a host watcher can check. The buffer holds two frames:
 * each frame is drawn into one half, then offset and crc32 are set
 * (SET_PROPERTIES, merge) and the host is told (UPDATE with the whole
 * frame as the rectangle).
 *
 * On a device with events, a half is drawn into only once the host
 * released the last update that showed it (a RELEASED event with that
 * update's number or a later one), so no host consumer ever reads a frame
 * while it is being drawn: tear-free by construction, not by timing. And
 * nothing is drawn while no consumer is attached to "framebuffer"
 * (BUFSHARE_IOC_GET_CONSUMERS, then CONSUMERS events). Without events the
 * host is trusted to read a frame within one frame's time.
 *
 * Frames are paced to the requested rate; a frame whose half is not
 * released by its time is skipped. At the end it prints the frames drawn
 * (and shown to the host), those skipped for want of a release or of a
 * consumer, and the achieved rate.
 *
 *   bufshare-animate [-s SECONDS] [-r RATE] [-W WIDTH] [-H HEIGHT] [-P]
 *
 * -P puts the framebuffer in 2 MiB pages (MFD_HUGETLB; the system must
 * have them, /proc/sys/vm/nr_hugepages): a few large pieces of memory
 * rather than one per 4 KiB page, which is what another guest importing
 * it needs on hosts that map a buffer into it piece by piece.
 *
 * Uses only <linux/bufshare.h> and the C library.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bufshare.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define DRM_FORMAT_XRGB8888	0x34325258u	/* 'X' 'R' '2' '4' */

static uint32_t crc_table[256];

static void crc32_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

/* CRC-32 as zlib's crc32(0, buf, len). */
static uint32_t crc32(const uint8_t *buf, size_t len)
{
	uint32_t c = 0xffffffffu;

	while (len--)
		c = crc_table[(c ^ *buf++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}

/* A colour wheel: hue 0..1535 to XRGB. */
static uint32_t hue(unsigned int h)
{
	unsigned int x = h % 256;

	switch ((h / 256) % 6) {
	case 0: return 0xff0000u | x << 8;
	case 1: return (255 - x) << 16 | 0xff00u;
	case 2: return 0xff00u | x;
	case 3: return (255 - x) << 8 | 0xffu;
	case 4: return x << 16 | 0xffu;
	default: return 0xff0000u | (255 - x);
	}
}

static void draw(uint32_t *px, unsigned int w, unsigned int h, unsigned int stride,
		 unsigned int frame)
{
	unsigned int sq = h / 4;
	/* The square bounces across the frame. */
	unsigned int span_x = w - sq, span_y = h - sq;
	unsigned int t = frame * 4;
	unsigned int sx = t % (2 * span_x), sy = (t * 3 / 4) % (2 * span_y);

	if (sx > span_x)
		sx = 2 * span_x - sx;
	if (sy > span_y)
		sy = 2 * span_y - sy;

	for (unsigned int y = 0; y < h; y++) {
		uint32_t *row = (uint32_t *)((char *)px + (size_t)y * stride);

		for (unsigned int x = 0; x < w; x++) {
			uint32_t c;

			if (y < h / 8)
				/* Colour bars scrolling left. */
				c = hue(((x + frame * 8) * 1536 / w) % 1536);
			else if (y >= h - h / 8)
				/* A grey ramp, fixed: shows the stride is right. */
				c = (x * 255 / w) * 0x010101u;
			else
				/* A slowly turning gradient. */
				c = hue((x + y + frame * 6) * 2 % 1536) & 0x7f7f7fu;
			if (x >= sx && x < sx + sq && y >= sy && y < sy + sq)
				c = 0xffffffu;
			row[x] = c;
		}
	}
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* What the host said so far. */
struct host {
	__u64 id;		/* the framebuffer's buffer */
	__u64 sent;		/* the number of the last update sent */
	__u64 released;		/* every update up to this one is released */
	unsigned int consumers;
};

/*
 * Reads the events that come within @ms milliseconds (0: those there
 * already), and notes what they say. -1 on error.
 */
static int pump(int dev, struct host *host, int ms)
{
	struct pollfd p = { .fd = dev, .events = POLLIN };
	struct bufshare_event ev[16];
	ssize_t n;

	if (poll(&p, 1, ms) < 0)
		return errno == EINTR ? 0 : -1;
	if (!(p.revents & POLLIN))
		return 0;
	n = read(dev, ev, sizeof(ev));
	if (n < 0)
		return errno == EAGAIN ? 0 : -1;
	for (size_t i = 0; i < n / sizeof(ev[0]); i++) {
		switch (ev[i].type) {
		case BUFSHARE_EVENT_RELEASED:
			if (ev[i].id == host->id && ev[i].seqno > host->released)
				host->released = ev[i].seqno;
			break;
		case BUFSHARE_EVENT_CONSUMERS:
			if (!strcmp(ev[i].application, "framebuffer"))
				host->consumers = ev[i].consumers;
			break;
		case BUFSHARE_EVENT_LOST:
			/* Updates in flight are never released: count them as released. */
			host->released = host->sent;
			break;
		case BUFSHARE_EVENT_OVERFLOW:
			/* Only RELEASED and CONSUMERS come here; ask again for the count. */
			{
				struct bufshare_consumers c = { .application = "framebuffer" };

				if (!ioctl(dev, BUFSHARE_IOC_GET_CONSUMERS, &c))
					host->consumers = c.consumers;
			}
			break;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned int w = 320, h = 240, seconds = 3, rate = 60;
	struct bufshare_register reg = { 0 };
	struct bufshare_set_properties set = { 0 };
	struct bufshare_update upd = { 0 };
	struct bufshare_consumers cons = { .application = "framebuffer" };
	struct host host = { 0 };
	char props[256], frameprops[64];
	unsigned int stride, frames, slot, slots, no_release = 0, no_consumer = 0;
	__u64 shown[2] = { 0, 0 };	/* the last update that showed each half */
	int events;
	size_t half;
	struct timespec next;
	double start, took, t;
	size_t size;
	uint32_t *px;
	int opt, dev, m, len, huge = 0;

	while ((opt = getopt(argc, argv, "s:r:W:H:P")) != -1) {
		switch (opt) {
		case 's': seconds = strtoul(optarg, NULL, 0); break;
		case 'r': rate = strtoul(optarg, NULL, 0); break;
		case 'W': w = strtoul(optarg, NULL, 0); break;
		case 'H': h = strtoul(optarg, NULL, 0); break;
		case 'P': huge = 1; break;
		default:
			fprintf(stderr, "usage: %s [-s SECONDS] [-r RATE] [-W WIDTH] [-H HEIGHT] [-P]\n",
				argv[0]);
			return 2;
		}
	}
	if (!rate || rate > 1000 || w < 16 || h < 16 || w > 4096 || h > 4096) {
		fprintf(stderr, "bufshare-animate: bad rate or size\n");
		return 2;
	}
	crc32_init();
	stride = w * 4;
	/* Each frame starts on a page: of 2 MiB with -P. */
	{
		size_t page = huge ? (size_t)2 << 20 : 4096;

		half = ((size_t)stride * h + page - 1) & ~(page - 1);
	}
	size = 2 * half;

	dev = open("/dev/bufshare", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		perror("open /dev/bufshare");
		return 1;
	}
	m = memfd_create("framebuffer", MFD_CLOEXEC | MFD_ALLOW_SEALING | (huge ? MFD_HUGETLB : 0));
	if (m < 0 || ftruncate(m, size) || fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK)) {
		perror("memfd");
		return 1;
	}
	px = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
	if (px == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	draw(px, w, h, stride, 0);

	/* Every string NUL-terminated, the set ends with the last NUL. */
	len = snprintf(props, sizeof(props),
		       "width=%u%cheight=%u%cstride=%u%cformat=%u%coffset=0%ccrc32=%08x",
		       w, 0, h, 0, stride, 0, DRM_FORMAT_XRGB8888, 0, 0,
		       crc32((uint8_t *)px, (size_t)stride * h));
	reg.fd = m;
	reg.length = size;
	reg.props = (uintptr_t)props;
	reg.props_size = len + 1;
	strcpy(reg.application, "framebuffer");
	if (ioctl(dev, BUFSHARE_IOC_REGISTER, &reg)) {
		perror("BUFSHARE_IOC_REGISTER");
		return 1;
	}
	host.id = reg.id;
	events = !ioctl(dev, BUFSHARE_IOC_GET_CONSUMERS, &cons);
	host.consumers = events ? cons.consumers : 1;
	printf("bufshare-animate: buffer %llu, %ux%u XRGB8888, %u frames/s for %u s, %s\n",
	       (unsigned long long)reg.id, w, h, rate, seconds,
	       events ? "drawing into released frames only" : "no events: paced by time");
	fflush(stdout);

	set.id = reg.id;
	set.props = (uintptr_t)frameprops;
	set.flags = BUFSHARE_PROPS_MERGE;
	upd.id = reg.id;
	upd.flags = BUFSHARE_UPDATE_RECT;
	upd.width = w;
	upd.height = h;

	start = now();
	slots = seconds * rate;
	for (frames = 1, slot = 1; slot <= slots; slot++) {
		size_t off = (frames % 2) * half;
		uint32_t *frame = (uint32_t *)((char *)px + off);
		int ready = 1;

		if (events) {
			double end = start + (double)slot / rate;

			/* Wait, within this frame's time, for a consumer and the release. */
			for (;;) {
				ready = host.consumers && host.released >= shown[frames % 2];
				if (ready || now() >= end)
					break;
				if (pump(dev, &host, (int)((end - now()) * 1000) + 1)) {
					perror("bufshare-animate: events");
					return 1;
				}
			}
			if (!ready) {
				if (!host.consumers)
					no_consumer++;
				else
					no_release++;
				continue;
			}
		}
		draw(frame, w, h, stride, frames);
		/* Two NUL-terminated strings in one set. */
		len = snprintf(frameprops, sizeof(frameprops), "offset=%zu%ccrc32=%08x", off, 0,
			       crc32((uint8_t *)frame, (size_t)stride * h));
		set.props_size = len + 1;
		upd.seqno = 0;
		if (ioctl(dev, BUFSHARE_IOC_SET_PROPERTIES, &set) ||
		    ioctl(dev, BUFSHARE_IOC_UPDATE, &upd)) {
			perror("bufshare-animate: frame");
			return 1;
		}
		shown[frames % 2] = upd.seqno;
		host.sent = upd.seqno;
		frames++;
		if (events && pump(dev, &host, 0)) {
			perror("bufshare-animate: events");
			return 1;
		}
		/* Absolute deadlines: a slow frame does not push the others back. */
		t = start + (double)slot / rate;
		next.tv_sec = (time_t)t;
		next.tv_nsec = (long)((t - next.tv_sec) * 1e9);
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
	}
	took = now() - start;
	printf("bufshare-animate: %u frames in %.2f s: %.1f frames/s (asked %u)\n",
	       frames - 1, took, (frames - 1) / took, rate);
	if (events)
		printf("bufshare-animate: %u frames drawn and shown, %u released, %u skipped waiting for a release, %u skipped without a consumer\n",
		       frames - 1, (unsigned int)host.released, no_release, no_consumer);

	if (ioctl(dev, BUFSHARE_IOC_UNREGISTER, &reg.id)) {
		perror("BUFSHARE_IOC_UNREGISTER");
		return 1;
	}
	return 0;
}
