/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The guest side of the host relay (scripts/relay.sh): it lets a guest test
 * ask the host to look at a buffer through the backend's inspect socket
 * (bufshare-inspect), to see what the host sees of the guest's memory.
 *
 * The relay directory, BUFSHARE_RELAY_DIR, is shared with the host. A
 * request is a file TAG.req holding one line, "list", "read ID OFF LEN" or
 * "write ID OFF"; a write's data is in TAG.in, in place before TAG.req
 * appears. The guest writes both atomically (a temporary name, then a
 * rename). The relay answers with TAG.out (bufshare-inspect's standard
 * output), TAG.err (its standard error) and last TAG.status (its exit
 * status, in decimal), each made atomically too.
 */
#ifndef BUFSHARE_RELAY_H
#define BUFSHARE_RELAY_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/types.h>

/* How long to wait for an answer. */
#define RELAY_TIMEOUT_MS	60000
#define RELAY_POLL_US		20000

/* The relay directory, or NULL when the tests run without a relay. */
static inline const char *relay_dir(void)
{
	const char *d = getenv("BUFSHARE_RELAY_DIR");

	return d && *d ? d : NULL;
}

/* Whether the relay said it runs (it makes "ready" when it starts). */
static inline int relay_ready(void)
{
	char path[512];

	if (!relay_dir())
		return 0;
	snprintf(path, sizeof(path), "%s/ready", relay_dir());
	return access(path, F_OK) == 0;
}

/* Writes @len bytes to DIR/@name atomically. Returns 0 or -errno. */
static inline int relay_put(const char *name, const void *data, size_t len)
{
	char tmp[512], path[512];
	const char *p = data;
	int fd, err = 0;

	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", relay_dir(), name);
	snprintf(path, sizeof(path), "%s/%s", relay_dir(), name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			break;
		}
		p += n;
		len -= n;
	}
	if (!err && fsync(fd) && errno != EINVAL)
		err = -errno;
	close(fd);
	if (!err && rename(tmp, path))
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

/*
 * Reads DIR/@name whole into a new buffer (NUL-terminated past the end):
 * *@data, *@len. Returns 0 or -errno.
 */
static inline int relay_get(const char *name, char **data, size_t *len)
{
	char path[512];
	size_t cap = 65536, total = 0;
	char *buf = malloc(cap + 1), *nb;
	ssize_t n;
	int fd;

	if (!buf)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/%s", relay_dir(), name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(buf);
		return -errno;
	}
	for (;;) {
		if (total == cap) {
			cap *= 2;
			nb = realloc(buf, cap + 1);
			if (!nb) {
				n = -1;
				errno = ENOMEM;
				break;
			}
			buf = nb;
		}
		n = read(fd, buf + total, cap - total);
		if (n <= 0)
			break;
		total += n;
	}
	close(fd);
	if (n < 0) {
		free(buf);
		return -errno;
	}
	buf[total] = '\0';
	*data = buf;
	*len = total;
	return 0;
}

static inline void relay_remove(const char *tag, const char *suffix)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s.%s", relay_dir(), tag, suffix);
	unlink(path);
}

/*
 * Runs @cmd (a request line) on the host, with @in_len bytes of @in as its
 * data (a "write"). Its output goes to *@out (NUL-terminated, to free) and
 * *@out_len, if @out is not NULL; its error message to @err (@err_len
 * bytes, may be 0). Returns bufshare-inspect's exit status (0 is success),
 * or -errno: -ENOENT without a relay, -ETIMEDOUT without an answer.
 */
static inline int relay_run(const char *cmd, const void *in, size_t in_len, char **out,
			    size_t *out_len, char *err, size_t err_len)
{
	static unsigned int counter;
	char tag[64], name[96], *status = NULL, *o = NULL, *e = NULL;
	size_t len, olen = 0;
	int ret, waited;

	if (err_len)
		err[0] = '\0';
	if (!relay_dir())
		return -ENOENT;
	snprintf(tag, sizeof(tag), "g%d-%u", (int)getpid(), ++counter);
	if (in) {
		snprintf(name, sizeof(name), "%s.in", tag);
		ret = relay_put(name, in, in_len);
		if (ret)
			return ret;
	}
	snprintf(name, sizeof(name), "%s.req", tag);
	ret = relay_put(name, cmd, strlen(cmd));
	if (ret)
		return ret;

	snprintf(name, sizeof(name), "%s.status", tag);
	for (waited = 0; ; waited += RELAY_POLL_US / 1000) {
		char path[512];

		snprintf(path, sizeof(path), "%s/%s", relay_dir(), name);
		if (access(path, F_OK) == 0)
			break;
		if (waited >= RELAY_TIMEOUT_MS) {
			relay_remove(tag, "req");
			relay_remove(tag, "in");
			return -ETIMEDOUT;
		}
		usleep(RELAY_POLL_US);
	}
	ret = relay_get(name, &status, &len);
	if (!ret)
		ret = atoi(status);
	free(status);
	snprintf(name, sizeof(name), "%s.out", tag);
	if (relay_get(name, &o, &olen) && ret >= 0)
		ret = -EIO;
	snprintf(name, sizeof(name), "%s.err", tag);
	if (!relay_get(name, &e, &len)) {
		if (err_len)
			snprintf(err, err_len, "%s", e);
		free(e);
	}
	relay_remove(tag, "status");
	relay_remove(tag, "out");
	relay_remove(tag, "err");
	if (out && o) {
		*out = o;
		*out_len = olen;
	} else {
		free(o);
	}
	return ret;
}

/*
 * The host reads @len bytes at @off of buffer @id into @buf. Returns 0, or
 * the relay's error (> 0: bufshare-inspect's exit status, < 0: -errno),
 * with its message in @err.
 */
static inline int relay_read(__u64 id, __u64 off, void *buf, size_t len, char *err,
			     size_t err_len)
{
	char cmd[128], *out = NULL;
	size_t out_len = 0;
	int ret;

	snprintf(cmd, sizeof(cmd), "read %llu %llu %zu", (unsigned long long)id,
		 (unsigned long long)off, len);
	ret = relay_run(cmd, NULL, 0, &out, &out_len, err, err_len);
	if (!ret && out_len != len) {
		if (err_len)
			snprintf(err, err_len, "read %zu bytes of %zu", out_len, len);
		ret = -EIO;
	}
	if (!ret)
		memcpy(buf, out, len);
	free(out);
	return ret;
}

/* The host writes @len bytes of @buf at @off of buffer @id. As relay_read. */
static inline int relay_write(__u64 id, __u64 off, const void *buf, size_t len, char *err,
			      size_t err_len)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "write %llu %llu", (unsigned long long)id,
		 (unsigned long long)off);
	return relay_run(cmd, buf, len, NULL, NULL, err, err_len);
}

/* The host's list of buffers, in *@out (to free). As relay_read. */
static inline int relay_list(char **out, char *err, size_t err_len)
{
	size_t len;

	*out = NULL;
	return relay_run("list", NULL, 0, out, &len, err, err_len);
}

/*
 * In a "list" output, the line of buffer @id ("id=ID application=..."),
 * or NULL. Its properties follow on lines that start with a TAB.
 */
static inline const char *relay_list_find(const char *list, __u64 id)
{
	char key[32];
	size_t klen;
	const char *p = list;

	klen = snprintf(key, sizeof(key), "id=%llu ", (unsigned long long)id);
	while (p && *p) {
		if (!strncmp(p, key, klen))
			return p;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

#endif
