/* queue — see queue.h for the file format and the durability contract.
 * Runs in the daemon (loop thread writes incoming files, the committer
 * thread fsyncs/renames, the router thread reads) and in the CLI. On any
 * error the half-written incoming file is removed: it was never
 * acknowledged. */
#include "queue/queue.h"
#include "lib/fsutil.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"; /* Crockford */

void queue_id_new(char id[QUEUE_ID_LEN + 1])
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static uint64_t last_us;
	static uint32_t seq;
	struct timeval tv;
	gettimeofday(&tv, NULL);
	uint64_t us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
	uint32_t rnd;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)getpid() * 2654435761u;
	pthread_mutex_lock(&mu);
	/* Keep ids strictly increasing within the process even when the
	 * clock stands still or steps back. */
	if (us <= last_us)
		us = last_us + 1;
	last_us = us;
	seq++;
	pthread_mutex_unlock(&mu);
	for (int i = 9; i >= 0; i--) {
		id[i] = b32[us & 31];
		us >>= 5;
	}
	uint32_t tail = (rnd ^ (seq << 20)) & 0x3fffffff;
	for (int i = 15; i >= 10; i--) {
		id[i] = b32[tail & 31];
		tail >>= 5;
	}
	id[QUEUE_ID_LEN] = '\0';
}

bool queue_id_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      c == '-' || c == '_'))
			return false;
	}
	return true;
}

void queue_env_free(struct queue_env *e)
{
	free(e->from);
	free(e->client_ip);
	free(e->helo);
	free(e->auth_user);
	free(e->origin);
	strv_free(&e->rcpt);
	memset(e, 0, sizeof(*e));
}

void queue_path(char *buf, size_t n, const char *data_dir, const char *folder, const char *name)
{
	int r;
	if (name)
		r = snprintf(buf, n, "%s/queue/%s/%s", data_dir, folder, name);
	else
		r = snprintf(buf, n, "%s/queue/%s", data_dir, folder);
	if (r < 0 || (size_t)r >= n)
		panic("queue path too long");
}

int queue_ensure_dirs(const char *data_dir, const char **error_r)
{
	static const char *folders[] = { QUEUE_FOLDERS };
	char path[PATH_MAX];
	for (size_t i = 0; i < sizeof(folders) / sizeof(folders[0]); i++) {
		queue_path(path, sizeof(path), data_dir, folders[i], NULL);
		if (fsutil_mkdir_p(path, 0700, error_r) < 0)
			return -1;
	}
	return 0;
}

/* Envelope values are single lines: control bytes become '?'. */
static void add_value(struct strbuf *sb, const char *key, const char *v)
{
	if (v == NULL)
		return;
	strbuf_adds(sb, key);
	strbuf_addc(sb, ' ');
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		strbuf_addc(sb, *p < 0x20 || *p == 0x7f ? '?' : (char)*p);
	strbuf_addc(sb, '\n');
}

static void add_path(struct strbuf *sb, const char *key, const char *addr)
{
	strbuf_adds(sb, key);
	strbuf_adds(sb, " <");
	for (const unsigned char *p = (const unsigned char *)addr; *p; p++)
		strbuf_addc(sb, *p < 0x20 || *p == 0x7f ? '?' : (char)*p);
	strbuf_adds(sb, ">\n");
}

char *queue_env_format(const struct queue_env *e, size_t *len_r)
{
	struct strbuf sb = STRBUF_INIT;
	char ts[32];
	time_t t = (time_t)e->received;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	strbuf_adds(&sb, QUEUE_MAGIC);
	strbuf_addf(&sb, "id %s\n", e->id);
	strbuf_addf(&sb, "received %" PRId64 " %s\n", e->received, ts);
	add_path(&sb, "from", e->from ? e->from : "");
	for (size_t i = 0; i < e->rcpt.n; i++)
		add_path(&sb, "rcpt", e->rcpt.v[i]);
	add_value(&sb, "client-ip", e->client_ip);
	add_value(&sb, "helo", e->helo);
	add_value(&sb, "auth-user", e->auth_user);
	add_value(&sb, "origin", e->origin);
	strbuf_addf(&sb, "body %s\n", e->body_8bit ? "8BITMIME" : "7BIT");
	strbuf_addf(&sb, "smtputf8 %s\n", e->smtputf8 ? "yes" : "no");
	if (e->fingerprint[0])
		strbuf_addf(&sb, "fingerprint %s\n", e->fingerprint);
	strbuf_addc(&sb, '\n');
	return strbuf_detach(&sb, len_r);
}

/* Parses the envelope lines of data[0..hlen). */
static int parse_env(const char *data, size_t hlen, struct queue_env *e, const char **error_r)
{
	memset(e, 0, sizeof(*e));
	size_t p = strlen(QUEUE_MAGIC);
	bool have_id = false, have_from = false;
	while (p < hlen) {
		const char *nl = memchr(data + p, '\n', hlen - p);
		if (nl == NULL)
			break;
		size_t n = (size_t)(nl - (data + p));
		if (n == 0)
			break;
		char *line = xstrndup(data + p, n);
		p += n + 1;
		char *sp = strchr(line, ' ');
		const char *val = sp ? sp + 1 : "";
		if (sp)
			*sp = '\0';
		const char *key = line;
		size_t vl = strlen(val);
		bool is_path = vl >= 2 && val[0] == '<' && val[vl - 1] == '>';
		if (strcmp(key, "id") == 0) {
			if (!queue_id_ok(val) || vl > QUEUE_ID_LEN) {
				free(line);
				queue_env_free(e);
				*error_r = "bad queue id in envelope";
				return -1;
			}
			memcpy(e->id, val, vl + 1);
			have_id = true;
		} else if (strcmp(key, "received") == 0) {
			e->received = strtoll(val, NULL, 10);
		} else if (strcmp(key, "from") == 0 && is_path) {
			free(e->from);
			e->from = xstrndup(val + 1, vl - 2);
			have_from = true;
		} else if (strcmp(key, "rcpt") == 0 && is_path) {
			char *r = xstrndup(val + 1, vl - 2);
			strv_add(&e->rcpt, r);
			free(r);
		} else if (strcmp(key, "client-ip") == 0) {
			free(e->client_ip);
			e->client_ip = xstrdup(val);
		} else if (strcmp(key, "helo") == 0) {
			free(e->helo);
			e->helo = xstrdup(val);
		} else if (strcmp(key, "auth-user") == 0) {
			free(e->auth_user);
			e->auth_user = xstrdup(val);
		} else if (strcmp(key, "origin") == 0) {
			free(e->origin);
			e->origin = xstrdup(val);
		} else if (strcmp(key, "body") == 0) {
			e->body_8bit = strcmp(val, "8BITMIME") == 0;
		} else if (strcmp(key, "smtputf8") == 0) {
			e->smtputf8 = strcmp(val, "yes") == 0;
		} else if (strcmp(key, "fingerprint") == 0 && vl < sizeof(e->fingerprint)) {
			memcpy(e->fingerprint, val, vl + 1);
		}
		/* unknown keys: written by a newer version; ignored */
		free(line);
	}
	if (!have_id || !have_from) {
		queue_env_free(e);
		*error_r = "envelope lacks id or from";
		return -1;
	}
	return 0;
}

int queue_file_parse(const char *data, size_t len, struct queue_env *e, size_t *body_off_r,
                     size_t *body_len_r, const char **error_r)
{
	size_t ml = strlen(QUEUE_MAGIC);
	if (len < ml || memcmp(data, QUEUE_MAGIC, ml) != 0) {
		*error_r = "not a posthorn queue file";
		return -1;
	}
	/* envelope ends at the first empty line */
	const char *end = NULL;
	size_t scan = len < QUEUE_ENVELOPE_MAX ? len : QUEUE_ENVELOPE_MAX;
	for (size_t i = ml - 1; i + 1 < scan; i++) {
		if (data[i] == '\n' && data[i + 1] == '\n') {
			end = data + i + 2;
			break;
		}
	}
	if (end == NULL) {
		*error_r = "envelope not terminated";
		return 0;
	}
	size_t hlen = (size_t)(end - data);
	/* trailer: last line "%%posthorn-end body=N\n" */
	if (len < hlen + 1 || data[len - 1] != '\n')
		goto incomplete;
	size_t t = len - 1;
	while (t > hlen && data[t - 1] != '\n')
		t--;
	size_t pl = strlen(QUEUE_END_PREFIX);
	if (len - t < pl + 2 || memcmp(data + t, QUEUE_END_PREFIX, pl) != 0)
		goto incomplete;
	char num[24];
	size_t nl = len - 1 - (t + pl);
	if (nl == 0 || nl >= sizeof(num))
		goto incomplete;
	memcpy(num, data + t + pl, nl);
	num[nl] = '\0';
	char *ep;
	unsigned long long body = strtoull(num, &ep, 10);
	if (*ep != '\0' || body != t - hlen)
		goto incomplete;
	if (parse_env(data, hlen, e, error_r) < 0)
		return -1;
	*body_off_r = hlen;
	*body_len_r = (size_t)body;
	return 1;
incomplete:
	*error_r = "incomplete queue file (no valid end marker)";
	return 0;
}

int queue_env_read(const char *path, struct queue_env *e, const char **error_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	char buf[16384];
	struct strbuf sb = STRBUF_INIT;
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		strbuf_add(&sb, buf, (size_t)r);
		if (memmem(sb.s, sb.len, "\n\n", 2) || sb.len > QUEUE_ENVELOPE_MAX)
			break;
	}
	close(fd);
	const char *end = sb.s ? memmem(sb.s, sb.len, "\n\n", 2) : NULL;
	size_t ml = strlen(QUEUE_MAGIC);
	if (end == NULL || sb.len < ml || memcmp(sb.s, QUEUE_MAGIC, ml) != 0) {
		strbuf_free(&sb);
		*error_r = "not a posthorn queue file";
		return -1;
	}
	int r = parse_env(sb.s, (size_t)(end - sb.s) + 2, e, error_r);
	strbuf_free(&sb);
	return r;
}

int queue_writer_open(struct queue_writer *w, const char *data_dir, const struct queue_env *e,
                      const char **error_r)
{
	char path[PATH_MAX];
	memset(w, 0, sizeof(*w));
	memcpy(w->id, e->id, sizeof(w->id));
	queue_path(path, sizeof(path), data_dir, "incoming", e->id);
	w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w->fd < 0 && errno == ENOENT) {
		/* folder renamed away: recreate on demand */
		if (queue_ensure_dirs(data_dir, error_r) < 0)
			return -1;
		w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (w->fd < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	size_t len;
	char *env = queue_env_format(e, &len);
	if (fsutil_write_all(w->fd, env, len) < 0) {
		w->failed = true;
		w->error = errno;
	}
	free(env);
	return 0;
}

void queue_writer_append(struct queue_writer *w, const void *p, size_t n)
{
	if (w->failed || n == 0)
		return;
	if (fsutil_write_all(w->fd, p, n) < 0) {
		w->failed = true;
		w->error = errno;
		return;
	}
	w->body_len += n;
}

int queue_writer_finish(struct queue_writer *w, const char **error_r)
{
	char trailer[64];
	int n = snprintf(trailer, sizeof(trailer), QUEUE_END_PREFIX "%" PRIu64 "\n", w->body_len);
	if (!w->failed && fsutil_write_all(w->fd, trailer, (size_t)n) < 0) {
		w->failed = true;
		w->error = errno;
	}
	if (w->failed) {
		*error_r = strerror(w->error);
		return -1;
	}
	return 0;
}

void queue_writer_abort(struct queue_writer *w, const char *data_dir)
{
	char path[PATH_MAX];
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	queue_path(path, sizeof(path), data_dir, "incoming", w->id);
	unlink(path);
}

int queue_commit_sync(struct queue_writer *w, const char *data_dir, const char *folder,
                      const char **error_r)
{
	char from[PATH_MAX], to[PATH_MAX], dir[PATH_MAX];
	queue_path(from, sizeof(from), data_dir, "incoming", w->id);
	queue_path(to, sizeof(to), data_dir, folder, w->id);
	queue_path(dir, sizeof(dir), data_dir, folder, NULL);
	if (fsync(w->fd) < 0) {
		*error_r = strerror(errno);
		queue_writer_abort(w, data_dir);
		return -1;
	}
	int r = close(w->fd);
	w->fd = -1;
	if (r < 0) {
		*error_r = strerror(errno);
		unlink(from);
		return -1;
	}
	if (rename(from, to) < 0) {
		if (errno == ENOENT && !fsutil_is_dir(dir) && fsutil_mkdir_p(dir, 0700, error_r) == 0 &&
		    rename(from, to) == 0)
			goto renamed;
		*error_r = strerror(errno);
		unlink(from);
		return -1;
	}
renamed:
	if (fsutil_fsync_dir(dir) < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	return 0;
}

int queue_write_file(const char *data_dir, const char *folder, const struct queue_env *e,
                     const void *msg, size_t msg_len, const char **error_r)
{
	struct queue_writer w;
	if (queue_writer_open(&w, data_dir, e, error_r) < 0)
		return -1;
	queue_writer_append(&w, msg, msg_len);
	if (queue_writer_finish(&w, error_r) < 0) {
		queue_writer_abort(&w, data_dir);
		return -1;
	}
	return queue_commit_sync(&w, data_dir, folder, error_r);
}
