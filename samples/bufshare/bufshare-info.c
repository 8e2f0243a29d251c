// SPDX-License-Identifier: GPL-2.0
/*
 * bufshare-info: ask the bufshare device what it is, through the driver.
 * A guest example that uses nothing but the UAPI header.
 *
 *   bufshare-info [-n COUNT] [DEVICE]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/bufshare.h>

int main(int argc, char **argv)
{
	const char *path = "/dev/bufshare";
	struct bufshare_info info;
	struct timespec t0, t1;
	long count = 1;
	double us;
	int opt, fd;

	while ((opt = getopt(argc, argv, "n:")) != -1) {
		if (opt != 'n' || (count = strtol(optarg, NULL, 0)) < 1) {
			fprintf(stderr, "usage: %s [-n COUNT] [DEVICE]\n", argv[0]);
			return 2;
		}
	}
	if (optind < argc)
		path = argv[optind];

	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < count; i++) {
		if (ioctl(fd, BUFSHARE_IOC_GET_INFO, &info)) {
			fprintf(stderr, "BUFSHARE_IOC_GET_INFO: %s\n", strerror(errno));
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	us = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / count;

	printf("device:          %s\n", info.name);
	printf("protocol:        %u\n", info.version);
	printf("features:        %#llx\n", (unsigned long long)info.features);
	printf("max ranges:      %u\n", info.max_ranges);
	printf("max props size:  %u\n", info.max_props_size);
	printf("max buffers:     %u\n", info.max_buffers);
	printf("max buffer size: %llu\n", (unsigned long long)info.max_buffer_size);
	printf("buffers:         %llu\n", (unsigned long long)info.num_buffers);
	printf("commands:        %llu\n", (unsigned long long)info.num_commands);
	if (count > 1)
		printf("round trip:      %.1f us (mean of %ld)\n", us, count);
	close(fd);
	return 0;
}
