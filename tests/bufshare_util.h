/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the guest tests. */
#ifndef BUFSHARE_UTIL_H
#define BUFSHARE_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUFSHARE_DEV		"/dev/bufshare"
#define BUFSHARE_DRV_DIR	"/sys/bus/virtio/drivers/virtio_bufshare"

/* A number the runner passes in the environment; aborts when missing. */
static inline uint64_t env_u64(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		fprintf(stderr, "%s is not set: run the tests through scripts/vm.sh\n", name);
		exit(1);
	}
	return strtoull(v, NULL, 0);
}

/* Writes @s to the sysfs (or other) file @path; returns 0 or -errno. */
static inline int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;
	int err = 0;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	if (n < 0)
		err = -errno;
	else if ((size_t)n != strlen(s))
		err = -EIO;
	if (!err && fsync(fd) && errno != EINVAL && errno != EROFS)
		err = -errno;
	close(fd);
	return err;
}

/*
 * Sets the fault mode of the backend (tools/vhost-user-bufshare,
 * --fault-file): the file named by BUFSHARE_FAULT_FILE is shared with the
 * host. Returns 0 or -errno.
 */
static inline int set_fault(const char *mode)
{
	const char *path = getenv("BUFSHARE_FAULT_FILE");
	int fd, err = 0;

	if (!path)
		return -ENOENT;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, mode, strlen(mode)) != (ssize_t)strlen(mode) || fsync(fd))
		err = errno ? -errno : -EIO;
	close(fd);
	return err;
}

/* The name of the virtio device bound to the driver (virtioN), or -ENOENT. */
static inline int bound_device(char *name, size_t len)
{
	DIR *d = opendir(BUFSHARE_DRV_DIR);
	struct dirent *e;
	int ret = -ENOENT;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (!strncmp(e->d_name, "virtio", 6)) {
			ret = strlen(e->d_name) < len ? 0 : -ENAMETOOLONG;
			if (!ret)
				memcpy(name, e->d_name, strlen(e->d_name) + 1);
			break;
		}
	}
	closedir(d);
	return ret;
}

#endif
