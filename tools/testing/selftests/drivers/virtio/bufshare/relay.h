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
 * rename). The relay answers with one file, TAG.ans, made atomically too:
 * a line "STATUS OUTLEN" (bufshare-inspect's exit status and the length of
 * its standard output, in decimal), its standard output, then its standard
 * error.
 *
 * The relay also runs host consumers, bufshare-watch, on the backend's
 * consumer socket: "watch NAME APPS [OPTION...]" starts one, "watch-stop
 * NAME" and "watch-kill NAME" end it (relay_watch(), relay_watch_opts() and
 * the helpers after them). The relay copies the watcher's log, one line
 * per event, to DIR/NAME.log as it grows, and its standard error to
 * DIR/NAME.stderr.
 *
 * "holders" lists, through bufshare-inspect, the buffers host consumers
 * hold or that wait for them after UNREGISTER (relay_holders()).
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

/*
 * Whether the relay said it runs (it makes "ready" when it starts). Once
 * it has, the answer is kept: each look is a 9p round trip.
 */
static inline int relay_ready(void)
{
	static int ready;	/* read and written with __atomic: threads ask */
	char path[512];

	if (__atomic_load_n(&ready, __ATOMIC_RELAXED))
		return 1;
	if (!relay_dir())
		return 0;
	snprintf(path, sizeof(path), "%s/ready", relay_dir());
	if (access(path, F_OK))
		return 0;
	__atomic_store_n(&ready, 1, __ATOMIC_RELAXED);
	return 1;
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
	/*
	 * No fsync(): the relay directory is a 9p mount without a cache,
	 * whose writes reach the host's file before write() returns.
	 */
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
	const char *dir = relay_dir();
	char path[512];

	if (!dir)
		return;
	snprintf(path, sizeof(path), "%s/%s.%s", dir, tag, suffix);
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
	char tag[64], name[96], *ans = NULL, *body;
	size_t len = 0, olen;
	int ret, waited, status;

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

	snprintf(name, sizeof(name), "%s.ans", tag);
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
	ret = relay_get(name, &ans, &len);
	relay_remove(tag, "ans");
	if (ret)
		return ret;
	/* "STATUS OUTLEN\n", the output, the error message. */
	body = memchr(ans, '\n', len);
	if (!body || sscanf(ans, "%d %zu", &status, &olen) != 2 ||
	    olen > len - (size_t)(body + 1 - ans)) {
		free(ans);
		if (err_len)
			snprintf(err, err_len, "the relay's answer is malformed");
		return -EIO;
	}
	body++;
	if (err_len)
		snprintf(err, err_len, "%.*s", (int)(len - olen - (body - ans)), body + olen);
	if (!out) {
		free(ans);
		return status;
	}
	/* The output, in place of the answer it came in. */
	memmove(ans, body, olen);
	ans[olen] = '\0';
	*out = ans;
	*out_len = olen;
	return status;
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
 * or NULL. Its properties follow on lines that start with a TAB. In a
 * "holders" output (relay_holders()), the line of buffer @id likewise.
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

/* How long to wait for a watcher's line, by default. */
#define RELAY_WATCH_TIMEOUT_MS	30000

/*
 * Starts watcher @name (1 to 32 characters of [A-Za-z0-9_-]) on the host,
 * subscribed to @apps: "*" for every application, or names separated by
 * commas. With @nobody it runs as uid 65534, which the backend should
 * refuse. Its log starts empty. Returns 0, or the relay's error as
 * relay_run() (2: refused, e.g. a watcher of that name still runs).
 */
static inline int relay_watch(const char *name, const char *apps, int nobody)
{
	char cmd[4400];

	if ((size_t)snprintf(cmd, sizeof(cmd), "watch %s %s%s", name, apps,
			     nobody ? " nobody" : "") >= sizeof(cmd))
		return -E2BIG;
	return relay_run(cmd, NULL, 0, NULL, NULL, NULL, 0);
}

/*
 * As relay_watch(), with @opts (NULL or "" for none): options separated by
 * spaces, each at most once, in any order:
 *   "nobody"          run as uid 65534 (as relay_watch()'s @nobody);
 *   "hold=SECS"       keep a buffer mapped SECS (0 to 86400) seconds after
 *                     its REMOVE (or its guest's RESET) before unmapping it,
 *                     which tells the backend CLOSED;
 *   "no-release"      never tell the backend RELEASE;
 *   "verify"          check each frame's crc32 property against its bytes
 *                     (VERIFY lines in the log);
 *   "dump"            write each frame as a PNG (DIR/NAME.frames/), which
 *                     makes it a slower consumer;
 *   "stop-reading=N"  stop reading the consumer socket after N events,
 *                     keeping every mapping (the backend disconnects it once
 *                     a REMOVE it holds goes unanswered for its grace time).
 * For example relay_watch_opts("slow", "*", "hold=12 no-release").
 * Returns as relay_watch() (2 also for a bad or repeated option).
 */
static inline int relay_watch_opts(const char *name, const char *apps, const char *opts)
{
	char cmd[4400];

	if ((size_t)snprintf(cmd, sizeof(cmd), "watch %s %s%s%s", name, apps,
			     opts && *opts ? " " : "", opts ? opts : "") >= sizeof(cmd))
		return -E2BIG;
	return relay_run(cmd, NULL, 0, NULL, NULL, NULL, 0);
}

/*
 * The backend's view of who holds the memory, in *@out (to free): a line
 * "id=ID holders=N instances=N draining=0|1" per buffer that host
 * consumers hold (holders: consumer connections, or consumers gone whose
 * process still runs; instances: ADDs of it not answered with CLOSED), or
 * that was unregistered and waits for them (draining=1). A buffer nobody
 * holds has no line. relay_list_find() finds the line of a buffer. As
 * relay_read.
 */
static inline int relay_holders(char **out, char *err, size_t err_len)
{
	size_t len;

	*out = NULL;
	return relay_run("holders", NULL, 0, out, &len, err, err_len);
}

/* Runs "watch-stop NAME" or "watch-kill NAME"; the exit status in *@status. */
static inline int relay_watch_end(const char *what, const char *name, int *status)
{
	char cmd[128], *out = NULL;
	size_t len = 0;
	int ret;

	snprintf(cmd, sizeof(cmd), "watch-%s %s", what, name);
	ret = relay_run(cmd, NULL, 0, &out, &len, NULL, 0);
	/* The answer is "exit=N"; a refusal (no such watcher) has none. */
	if (ret >= 0 && out && !strncmp(out, "exit=", 5)) {
		if (status)
			*status = atoi(out + 5);
		ret = 0;
	} else if (ret >= 0) {
		ret = ret ? ret : -EIO;
	}
	free(out);
	return ret;
}

/*
 * Stops watcher @name (SIGTERM, and waits); its exit status goes to
 * *@status (may be NULL): 0 when stopped normally, 2 when the backend
 * refused it, 3 when the backend ended it with an ERROR. A watcher that
 * ended by itself gives its exit status too. Returns 0, or the relay's
 * error (2: no such watcher).
 */
static inline int relay_watch_stop(const char *name, int *status)
{
	return relay_watch_end("stop", name, status);
}

/* Kills watcher @name with SIGKILL, and waits for it. Returns 0 or as above. */
static inline int relay_watch_kill(const char *name)
{
	return relay_watch_end("kill", name, NULL);
}

/* Watcher @name's log as published so far, in *@log (to free). 0 or -errno. */
static inline int relay_watch_log(const char *name, char **log, size_t *len)
{
	char file[64];

	snprintf(file, sizeof(file), "%s.log", name);
	return relay_get(file, log, len);
}

/* Whether the @len bytes at @tok are the @plen bytes of @pat (a '*' ending @pat: a prefix). */
static inline int relay_token_matches(const char *tok, size_t len, const char *pat, size_t plen)
{
	if (plen && pat[plen - 1] == '*')
		return len >= plen - 1 && !memcmp(tok, pat, plen - 1);
	return len == plen && !memcmp(tok, pat, plen);
}

/*
 * Whether a log line (@len bytes, no newline) matches @pattern: tokens
 * separated by spaces, each of which must be a whole token of the line.
 * A token without '=' is the line's keyword, its first token ("ADD",
 * "ERROR"); the others ("id=3", "guest=guest0") may be anywhere. A token
 * ending with '*' matches the tokens it starts ("crc32=*"). So "UPDATE
 * id=3 seqno=7" matches "UPDATE guest=guest0 id=3 seqno=7 range=- ...",
 * and "id=3" any line about buffer 3.
 */
static inline int relay_line_matches(const char *line, size_t len, const char *pattern)
{
	const char *p = pattern, *end = line + len;

	while (*p) {
		size_t plen = strcspn(p, " ");
		int keyword = !memchr(p, '=', plen), found = 0;

		for (const char *t = line; t < end && !found;) {
			const char *te = memchr(t, ' ', end - t);

			te = te ? te : end;
			found = relay_token_matches(t, te - t, p, plen);
			if (keyword)
				break;
			t = te + 1;
		}
		if (plen && !found)
			return 0;
		p += plen;
		while (*p == ' ')
			p++;
	}
	return 1;
}

/*
 * Looks for a line of watcher @name's log matching @pattern
 * (relay_line_matches()), after its first @after lines; only whole lines
 * count (a line is whole once its newline is there). Returns the number
 * of the first match (from 1), with the line in @line (@line_len bytes,
 * may be 0), 0 if none matches, or -errno (-ENOENT: no log yet). With
 * @count, counts the matches instead (returned, 0 if none).
 */
static inline int relay_scan_lines(const char *name, const char *pattern, int after, int count,
				   char *line, size_t line_len)
{
	char *log = NULL, *p, *nl;
	size_t len = 0;
	int ret, n = 0, matches = 0;

	ret = relay_watch_log(name, &log, &len);
	if (ret)
		return ret;
	for (p = log; (nl = memchr(p, '\n', log + len - p)); p = nl + 1) {
		if (++n <= after || !relay_line_matches(p, nl - p, pattern))
			continue;
		matches++;
		if (count)
			continue;
		if (line_len)
			snprintf(line, line_len, "%.*s", (int)(nl - p), p);
		free(log);
		return n;
	}
	free(log);
	return count ? matches : 0;
}

/*
 * Waits up to @timeout_ms for a line of watcher @name's log matching
 * @pattern, after its first @after lines. Returns its number (from 1),
 * with the line in @line (@line_len bytes), or -ETIMEDOUT (or -errno).
 */
static inline int relay_wait_line_after(const char *name, const char *pattern, int after,
					int timeout_ms, char *line, size_t line_len)
{
	struct timespec start, now;
	int ret;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		ret = relay_scan_lines(name, pattern, after, 0, line, line_len);
		if (ret > 0 || (ret < 0 && ret != -ENOENT))
			return ret;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >=
		    timeout_ms)
			return -ETIMEDOUT;
		usleep(RELAY_POLL_US);
	}
}

/* As relay_wait_line_after(), from the first line. */
static inline int relay_wait_line(const char *name, const char *pattern, int timeout_ms,
				  char *line, size_t line_len)
{
	return relay_wait_line_after(name, pattern, 0, timeout_ms, line, line_len);
}

/* How many lines of watcher @name's log match @pattern now, or -errno. */
static inline int relay_count_lines(const char *name, const char *pattern)
{
	return relay_scan_lines(name, pattern, 0, 1, NULL, 0);
}

/* Whether no line of watcher @name's log matches @pattern (1), or some does (0). */
static inline int relay_no_line(const char *name, const char *pattern)
{
	return relay_count_lines(name, pattern) == 0;
}

/*
 * The value of field @key in a log line ("crc32" in "... crc32=1a2b3c4d
 * ..."), copied to @buf (@len bytes). Returns 0, or -ENOENT without it.
 */
static inline int relay_line_field(const char *line, const char *key, char *buf, size_t len)
{
	size_t klen = strlen(key);
	const char *p = line;

	while (p && *p) {
		if (!strncmp(p, key, klen) && p[klen] == '=') {
			p += klen + 1;
			snprintf(buf, len, "%.*s", (int)strcspn(p, " "), p);
			return 0;
		}
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (len)
		buf[0] = '\0';
	return -ENOENT;
}

#endif
