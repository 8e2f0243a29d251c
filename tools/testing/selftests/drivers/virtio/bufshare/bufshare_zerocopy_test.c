// SPDX-License-Identifier: GPL-2.0
/*
 * Zero copy, seen from the host: after REGISTER, the host reads and writes
 * the very memory the guest maps, with no ioctl in between. The host side
 * is the backend's inspect socket, reached through the relay
 * (scripts/relay.sh, relay.h). Without a relay (BUFSHARE_RELAY_DIR
 * unset) every test is skipped.
 *
 * Each check writes a fresh random pattern on one side and compares it
 * byte for byte on the other: through a memfd, a dma-heap dma-buf, a
 * udmabuf and a 256 MiB memfd whose pages are scattered. The host's list
 * of buffers must show exactly what was registered, and nothing once
 * unregistered or once its file is closed.
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

#include "kselftest_harness.h"
#include "bufshare_util.h"
#include "relay.h"

#define SIZE		(1024 * 1024ULL)
#define APP		"zerocopy"
static const char PROPS[] = "width=512\0height=512\0stride=2048\0format=875713112";

/* What the host lists of a buffer. */
struct host_buf {
	unsigned long long size, ranges, seqno;
	int complete;
	char app[BUFSHARE_APP_LEN];
	char props[8192];	/* as a blob: "name=value\0"... */
	size_t props_size;
};

/*
 * Looks buffer @id up in the host's list: 1 and *@hb when listed, 0 when
 * not, -1 (message in @err) when the relay or the list failed.
 */
static int host_lookup(__u64 id, struct host_buf *hb, char *err, size_t err_len)
{
	const char *line, *p;
	char *list;
	int ret;

	ret = relay_list(&list, err, err_len);
	if (ret) {
		if (!err[0])
			snprintf(err, err_len, "relay list: %d", ret);
		free(list);
		return -1;
	}
	line = relay_list_find(list, id);
	if (!line) {
		free(list);
		return 0;
	}
	memset(hb, 0, sizeof(*hb));
	if (sscanf(line, "id=%*u application=%63s size=%llu ranges=%llu complete=%d seqno=%llu",
		   hb->app, &hb->size, &hb->ranges, &hb->complete, &hb->seqno) != 5) {
		snprintf(err, err_len, "cannot parse '%.200s'", line);
		free(list);
		return -1;
	}
	/* Its properties: the lines after it that start with a TAB. */
	for (p = strchr(line, '\n'); p && p[1] == '\t'; p = strchr(p + 1, '\n')) {
		const char *s = p + 2, *e = strchr(s, '\n');
		size_t len = e ? (size_t)(e - s) : strlen(s);

		if (hb->props_size + len + 1 > sizeof(hb->props))
			break;
		memcpy(hb->props + hb->props_size, s, len);
		hb->props_size += len;
		hb->props[hb->props_size++] = '\0';
	}
	free(list);
	return 1;
}

/*
 * Copies @len bytes of the guest's mapping @guest to @dst, synced as CPU
 * reads for @dmabuf >= 0. Returns 0 or -errno.
 */
static int guest_reads(void *dst, const void *guest, size_t len, int dmabuf)
{
	int ret = 0;

	if (dmabuf >= 0)
		ret = dmabuf_sync(dmabuf, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
	if (ret)
		return ret;
	memcpy(dst, guest, len);
	if (dmabuf >= 0)
		dmabuf_sync(dmabuf, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ);
	return 0;
}

/*
 * The first of @len bytes where @a and @b differ, @len if none; how many
 * differ goes to *@count.
 */
static size_t first_difference(const unsigned char *a, const unsigned char *b, size_t len,
			       size_t *count)
{
	size_t first = len;

	*count = 0;
	for (size_t i = 0; i < len; i++) {
		if (a[i] == b[i])
			continue;
		if (!(*count)++)
			first = i;
	}
	return first;
}

/*
 * The host reads @len bytes at @off of buffer @id: 0 if they are those of
 * @guest, else -1 with what differs in @err. @dmabuf, if >= 0, is synced
 * for reading.
 */
static int host_sees(__u64 id, __u64 off, const void *guest, size_t len, int dmabuf,
		     char *err, size_t err_len)
{
	/* What the host read, then what the guest sees. */
	unsigned char *host = malloc(2 * len), *seen;
	size_t i, n;
	int ret;

	if (!host)
		return -1;
	seen = host + len;
	ret = relay_read(id, off, host, len, err, err_len);
	if (!ret)
		ret = guest_reads(seen, guest, len, dmabuf);
	i = ret ? len : first_difference(host, seen, len, &n);
	if (i < len) {
		snprintf(err, err_len,
			 "host read differs at offset %llu (host %02x, guest %02x), %zu bytes differ",
			 (unsigned long long)(off + i), host[i], seen[i], n);
		ret = -1;
	}
	free(host);
	return ret;
}

/*
 * The host writes a fresh random pattern of @len bytes at @off of buffer
 * @id; 0 if the guest's mapping @guest (of those bytes) shows it, else -1
 * with what differs in @err. @dmabuf, if >= 0, is synced for reading.
 */
static int guest_sees(__u64 id, __u64 off, const void *guest, size_t len, int dmabuf,
		      char *err, size_t err_len)
{
	/* What the host wrote, then what the guest sees. */
	unsigned char *host = malloc(2 * len), *seen;
	size_t i, n;
	int ret;

	if (!host)
		return -1;
	seen = host + len;
	fill_random(host, len, fresh_seed());
	ret = relay_write(id, off, host, len, err, err_len);
	/* Copied out of the mapping only now, after the host wrote. */
	if (!ret)
		ret = guest_reads(seen, guest, len, dmabuf);
	i = ret ? len : first_difference(seen, host, len, &n);
	if (i < len) {
		snprintf(err, err_len,
			 "guest does not see the host's write at offset %llu (guest %02x, host %02x), %zu bytes differ",
			 (unsigned long long)(off + i), seen[i], host[i], n);
		ret = -1;
	}
	free(host);
	return ret;
}

/* Writes a fresh random pattern at @p, synced as CPU writes for @dmabuf >= 0. */
static int guest_writes(void *p, size_t len, int dmabuf)
{
	int ret = 0;

	if (dmabuf >= 0)
		ret = dmabuf_sync(dmabuf, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE);
	if (ret)
		return ret;
	fill_random(p, len, fresh_seed());
	if (dmabuf >= 0)
		ret = dmabuf_sync(dmabuf, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE);
	return ret;
}

FIXTURE(zc) {
	int dev;
	char err[512];
};

FIXTURE_SETUP(zc)
{
	if (!relay_dir())
		SKIP(return, "no host relay (BUFSHARE_RELAY_DIR is not set)");
	ASSERT_TRUE(relay_ready()) TH_LOG("the relay did not start: no %s/ready", relay_dir());
	self->dev = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->dev) TH_LOG("open %s: %s", BUFSHARE_DEV, strerror(errno));
}

FIXTURE_TEARDOWN(zc)
{
	close(self->dev);
}

/* Both ways through the whole buffer, then through a few odd pieces. */
#define ROUND_TRIPS(id, map, dmabuf) do { \
	__u64 id_ = (id); \
	char *map_ = (char *)(map); \
	int dmabuf_ = (dmabuf); \
	ASSERT_EQ(0, guest_writes(map_, SIZE, dmabuf_)); \
	ASSERT_EQ(0, host_sees(id_, 0, map_, SIZE, dmabuf_, self->err, sizeof(self->err))) \
		TH_LOG("%s", self->err); \
	ASSERT_EQ(0, guest_sees(id_, 0, map_, SIZE, dmabuf_, self->err, \
				sizeof(self->err))) \
		TH_LOG("%s", self->err); \
	/* Odd offsets and lengths, across page boundaries. */ \
	ASSERT_EQ(0, guest_writes(map_ + 4000, 9000, dmabuf_)); \
	ASSERT_EQ(0, host_sees(id_, 4000, map_ + 4000, 9000, dmabuf_, self->err, \
			       sizeof(self->err))) \
		TH_LOG("%s", self->err); \
	ASSERT_EQ(0, guest_sees(id_, SIZE - 12345, map_ + SIZE - 12345, 12345, \
				dmabuf_, self->err, sizeof(self->err))) \
		TH_LOG("%s", self->err); \
	/* And the rest of the buffer is still what the host wrote last. */ \
	ASSERT_EQ(0, host_sees(id_, 0, map_, SIZE, dmabuf_, self->err, sizeof(self->err))) \
		TH_LOG("%s", self->err); \
} while (0)

TEST_F_TIMEOUT(zc, memfd, 300)
{
	void *map;
	int m;
	__u64 id;

	m = make_memfd(SIZE, BUFSHARE_SEALS);
	ASSERT_LE(0, m);
	map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
	ASSERT_NE(MAP_FAILED, map);
	ASSERT_EQ(0, bs_register(self->dev, m, 0, SIZE, APP, PROPS, sizeof(PROPS), &id));
	ROUND_TRIPS(id, map, -1);
	EXPECT_EQ(0, bs_unregister(self->dev, id));
	munmap(map, SIZE);
	close(m);
}

/* Part of a memfd: the host's offset 0 is the registered offset. */
TEST_F_TIMEOUT(zc, memfd_part, 300)
{
	const size_t off = 3 * 4096, len = 5 * 4096;
	char *map;
	int m;
	__u64 id;

	m = make_memfd(SIZE, BUFSHARE_SEALS);
	ASSERT_LE(0, m);
	map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
	ASSERT_NE(MAP_FAILED, map);
	ASSERT_EQ(0, bs_register(self->dev, m, off, len, APP, NULL, 0, &id));
	ASSERT_EQ(0, guest_writes(map, SIZE, -1));
	ASSERT_EQ(0, host_sees(id, 0, map + off, len, -1, self->err, sizeof(self->err)))
		TH_LOG("%s", self->err);
	ASSERT_EQ(0, guest_sees(id, 0, map + off, len, -1, self->err, sizeof(self->err)))
		TH_LOG("%s", self->err);
	/* Nothing past the buffer's end. */
	EXPECT_NE(0, relay_read(id, len - 1, map, 2, self->err, sizeof(self->err)));
	EXPECT_EQ(0, bs_unregister(self->dev, id));
	munmap(map, SIZE);
	close(m);
}

TEST_F_TIMEOUT(zc, dmaheap, 300)
{
	void *map;
	int buf;
	__u64 id;

	buf = make_heap_dmabuf(SIZE);
	ASSERT_LE(0, buf) TH_LOG("dma-heap: %s", strerror(-buf));
	map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, buf, 0);
	ASSERT_NE(MAP_FAILED, map) TH_LOG("mmap of the dma-buf: %s", strerror(errno));
	if (dma_bounced()) {
		/* The device would see the bounce buffer, not what the CPU writes. */
		EXPECT_EQ(EOPNOTSUPP, bs_register(self->dev, buf, 0, SIZE, APP, NULL, 0, &id));
		munmap(map, SIZE);
		close(buf);
		return;
	}
	ASSERT_EQ(0, bs_register(self->dev, buf, 0, SIZE, APP, PROPS, sizeof(PROPS), &id));
	ROUND_TRIPS(id, map, buf);
	EXPECT_EQ(0, bs_unregister(self->dev, id));
	munmap(map, SIZE);
	close(buf);
}

/* A udmabuf: written through its own mapping, read through the memfd's too. */
TEST_F_TIMEOUT(zc, udmabuf, 300)
{
	void *map, *mmap_memfd;
	int buf, memfd;
	__u64 id;

	buf = make_udmabuf(SIZE, &memfd);
	ASSERT_LE(0, buf) TH_LOG("udmabuf: %s", strerror(-buf));
	map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, buf, 0);
	ASSERT_NE(MAP_FAILED, map) TH_LOG("mmap of the udmabuf: %s", strerror(errno));
	mmap_memfd = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	ASSERT_NE(MAP_FAILED, mmap_memfd);
	if (dma_bounced()) {
		/*
		 * Refused, where the host would read and write the bounce
		 * buffer: what the guest wrote after the mapping would not
		 * reach the host, nor the host's writes the guest.
		 */
		EXPECT_EQ(EOPNOTSUPP, bs_register(self->dev, buf, 0, SIZE, APP, NULL, 0, &id));
		munmap(mmap_memfd, SIZE);
		munmap(map, SIZE);
		close(buf);
		close(memfd);
		return;
	}
	ASSERT_EQ(0, bs_register(self->dev, buf, 0, SIZE, APP, PROPS, sizeof(PROPS), &id));
	ROUND_TRIPS(id, map, buf);
	/* The host's write is in the memfd under the udmabuf. */
	ASSERT_EQ(0, guest_sees(id, 0, mmap_memfd, SIZE, -1, self->err, sizeof(self->err)))
		TH_LOG("%s", self->err);
	EXPECT_EQ(0, bs_unregister(self->dev, id));
	munmap(mmap_memfd, SIZE);
	munmap(map, SIZE);
	close(buf);
	close(memfd);
}

/* 256 MiB in scattered pages: at the start, the middle and the end. */
TEST_F_TIMEOUT(zc, scattered_256m, 600)
{
	const size_t size = 256ULL << 20, piece = 64 * 1024;
	const size_t offs[] = { 0, size / 2, size / 2 - piece / 2 - 100, size - piece };
	struct bufshare_buffer_info info;
	struct host_buf hb;
	char *map;
	int m, found;
	__u64 id;

	m = make_scattered_memfd(size, (void **)&map);
	ASSERT_LE(0, m) TH_LOG("scattered memfd: %s", strerror(-m));
	ASSERT_EQ(0, bs_register(self->dev, m, 0, size, "scattered", NULL, 0, &id));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, NULL, 0));
	EXPECT_LT(1, info.nr_ranges);
	found = host_lookup(id, &hb, self->err, sizeof(self->err));
	ASSERT_EQ(1, found) TH_LOG("%s", self->err);
	EXPECT_EQ(size, hb.size);
	EXPECT_EQ(info.nr_ranges, hb.ranges);
	EXPECT_EQ(1, hb.complete);
	/* The page markers make_scattered_memfd wrote, as the host sees them. */
	ASSERT_EQ(0, host_sees(id, size - 4096, map + size - 4096, 4096, -1, self->err,
			       sizeof(self->err)))
		TH_LOG("%s", self->err);
	for (size_t i = 0; i < ARRAY_SIZE(offs); i++) {
		ASSERT_EQ(0, guest_writes(map + offs[i], piece, -1));
		ASSERT_EQ(0, host_sees(id, offs[i], map + offs[i], piece, -1, self->err,
				       sizeof(self->err)))
			TH_LOG("at %zu: %s", offs[i], self->err);
		ASSERT_EQ(0, guest_sees(id, offs[i], map + offs[i], piece, -1, self->err,
					sizeof(self->err)))
			TH_LOG("at %zu: %s", offs[i], self->err);
	}
	EXPECT_EQ(0, bs_unregister(self->dev, id));
	munmap(map, size);
	close(m);
}

/* What the host lists is what was registered; then it is gone. */
TEST_F_TIMEOUT(zc, host_list, 300)
{
	static const char props[] = "width=256\0height=1024\0format=875713112\0label=zero copy, =";
	static const char change[] = "label=changed\0modifier=0";
	static const char merged[] =
		"width=256\0height=1024\0format=875713112\0label=changed\0modifier=0";
	struct bufshare_buffer_info info;
	struct bufshare_update u = { 0 };
	struct host_buf hb;
	int m, other;
	__u64 id, id2;

	m = make_memfd(SIZE, BUFSHARE_SEALS);
	ASSERT_LE(0, m);
	ASSERT_EQ(0, bs_register(self->dev, m, 0, SIZE, "zerocopy-list", props, sizeof(props),
				 &id));
	ASSERT_EQ(0, bs_buffer_info(self->dev, id, &info, NULL, 0));
	ASSERT_EQ(1, host_lookup(id, &hb, self->err, sizeof(self->err))) TH_LOG("%s", self->err);
	EXPECT_STREQ("zerocopy-list", hb.app);
	EXPECT_EQ(SIZE, hb.size);
	EXPECT_EQ(info.nr_ranges, hb.ranges);
	EXPECT_EQ(1, hb.complete);
	EXPECT_EQ(0, hb.seqno);
	EXPECT_TRUE(props_same_set(props, sizeof(props), hb.props, hb.props_size))
		TH_LOG("host properties: %zu bytes", hb.props_size);

	/* Updates and new properties reach the host. */
	u.id = id;
	u.seqno = 41;
	ASSERT_EQ(0, bs_update(self->dev, &u, NULL));
	ASSERT_EQ(0, bs_set_props(self->dev, id, change, sizeof(change), BUFSHARE_PROPS_MERGE));
	ASSERT_EQ(1, host_lookup(id, &hb, self->err, sizeof(self->err))) TH_LOG("%s", self->err);
	EXPECT_EQ(41, hb.seqno);
	EXPECT_TRUE(props_same_set(merged, sizeof(merged), hb.props, hb.props_size));
	ASSERT_EQ(0, bs_set_props(self->dev, id, NULL, 0, 0));
	ASSERT_EQ(1, host_lookup(id, &hb, self->err, sizeof(self->err))) TH_LOG("%s", self->err);
	EXPECT_EQ(0, hb.props_size);

	/* Unregistered: gone from the host, and its memory out of reach. */
	ASSERT_EQ(0, bs_unregister(self->dev, id));
	EXPECT_EQ(0, host_lookup(id, &hb, self->err, sizeof(self->err))) TH_LOG("%s", self->err);
	EXPECT_NE(0, relay_read(id, 0, &hb, 16, self->err, sizeof(self->err)));

	/* Its file closed: gone too. */
	other = open(BUFSHARE_DEV, O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, other);
	ASSERT_EQ(0, bs_register(other, m, 0, SIZE / 2, "zerocopy-close", NULL, 0, &id2));
	ASSERT_EQ(1, host_lookup(id2, &hb, self->err, sizeof(self->err))) TH_LOG("%s", self->err);
	EXPECT_STREQ("zerocopy-close", hb.app);
	EXPECT_EQ(SIZE / 2, hb.size);
	close(other);
	EXPECT_EQ(0, host_lookup(id2, &hb, self->err, sizeof(self->err))) TH_LOG("%s", self->err);
	close(m);
}

/* MemFree of /proc/meminfo, in KiB, or -1. */
static long long mem_free_kib(void)
{
	char buf[4096], *p;
	long long kib = -1;

	if (read_text("/proc/meminfo", buf, sizeof(buf)))
		return -1;
	p = strstr(buf, "MemFree:");
	if (p)
		kib = strtoll(p + strlen("MemFree:"), NULL, 10);
	return kib;
}

/*
 * A dma-buf whose exporter goes away: a udmabuf over a memfd, registered,
 * then its descriptor, its memfd's, /dev/udmabuf's and every mapping
 * closed. The driver's reference keeps the memory: UPDATE works and the
 * host reads what the guest wrote, until UNREGISTER, which lets it go: the
 * host no longer lists it and its pages are freed.
 */
TEST_F_TIMEOUT(zc, udmabuf_exporter_gone, 300)
{
	const size_t size = 32ULL << 20, piece = 64 * 1024;
	const size_t offs[] = { 0, size / 2 - 3000, size - piece };
	unsigned char *pattern, *host;
	struct bufshare_update u;
	long long before, after;
	struct host_buf hb;
	int buf, memfd;
	void *map;
	__u64 id;

	/* make_udmabuf() closes /dev/udmabuf once the udmabuf is made. */
	buf = make_udmabuf(size, &memfd);
	ASSERT_LE(0, buf) TH_LOG("udmabuf: %s", strerror(-buf));
	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, buf, 0);
	ASSERT_NE(MAP_FAILED, map);
	if (dma_bounced()) {
		EXPECT_EQ(EOPNOTSUPP, bs_register(self->dev, buf, 0, size, APP, NULL, 0, &id));
		munmap(map, size);
		close(buf);
		close(memfd);
		return;
	}
	pattern = malloc(size + piece);
	ASSERT_NE(NULL, pattern);
	host = pattern + size;
	fill_random(pattern, size, fresh_seed());
	ASSERT_EQ(0, dmabuf_sync(buf, DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE));
	memcpy(map, pattern, size);
	ASSERT_EQ(0, dmabuf_sync(buf, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE));
	ASSERT_EQ(0, bs_register(self->dev, buf, 0, size, APP, NULL, 0, &id));

	/* The exporter's side goes: nothing of it is left in this process. */
	ASSERT_EQ(0, munmap(map, size));
	ASSERT_EQ(0, close(buf));
	ASSERT_EQ(0, close(memfd));

	u = (struct bufshare_update){ .id = id };
	EXPECT_EQ(0, bs_update(self->dev, &u, NULL));
	u = (struct bufshare_update){ .id = id, .flags = BUFSHARE_UPDATE_RANGE, .length = 4096 };
	EXPECT_EQ(0, bs_update(self->dev, &u, NULL));
	ASSERT_EQ(1, host_lookup(id, &hb, self->err, sizeof(self->err))) TH_LOG("%s", self->err);
	EXPECT_EQ(size, hb.size);
	EXPECT_EQ(2, hb.seqno);
	for (size_t i = 0; i < ARRAY_SIZE(offs); i++) {
		ASSERT_EQ(0, relay_read(id, offs[i], host, piece, self->err, sizeof(self->err)))
			TH_LOG("%s", self->err);
		EXPECT_EQ(0, memcmp(host, pattern + offs[i], piece))
			TH_LOG("the host reads other bytes at %zu than the guest wrote", offs[i]);
	}

	/*
	 * Unregistered: the host lets go, and so does the kernel (on a device
	 * with events, once the host said so: the ioctl waits for that).
	 */
	before = mem_free_kib();
	ASSERT_EQ(0, bs_unregister_wait(self->dev, id));
	/*
	 * The last reference to the dma-buf may go in the driver's work item,
	 * whose file release the kernel defers: give it ten seconds. The
	 * memfd's pages left its page cache (and Shmem) when it was closed, so
	 * MemFree is where their freeing shows; as the kernel allocates and
	 * frees meanwhile, a quarter of them is asked for, 8 MiB.
	 */
	for (int i = 0; i < 100; i++) {
		after = mem_free_kib();
		if (after >= before + (long long)(size >> 10) / 4)
			break;
		usleep(100 * 1000);
	}
	EXPECT_EQ(0, host_lookup(id, &hb, self->err, sizeof(self->err))) TH_LOG("%s", self->err);
	EXPECT_NE(0, relay_read(id, 0, host, 16, self->err, sizeof(self->err)));
	TH_LOG("MemFree %lld KiB before UNREGISTER, %lld KiB after", before, after);
	/* At least a quarter of its 32 MiB come back. */
	EXPECT_LE(before + (long long)(size >> 10) / 4, after);
	free(pattern);
}

TEST_HARNESS_MAIN
