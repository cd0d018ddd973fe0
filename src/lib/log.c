/* log — see log.h. Runs in every thread; an event is written with one
 * write(2) on an O_APPEND descriptor so lines from threads never interleave.
 * A failed event write is reported on stderr and otherwise ignored: losing
 * a log line must not lose mail. */
#include "lib/log.h"
#include "lib/xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int events_fd = -1;
static bool log_quiet;

int log_open(const char *events_path, bool quiet, const char **error_r)
{
	log_quiet = quiet;
	if (events_path == NULL)
		return 0;
	int fd = open(events_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	if (events_fd >= 0)
		close(events_fd);
	events_fd = fd;
	return 0;
}

void log_close(void)
{
	if (events_fd >= 0)
		close(events_fd);
	events_fd = -1;
}

static void timestamp(char *buf, size_t n)
{
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + k, n - k, ".%03ldZ", (long)(tv.tv_usec / 1000));
}

static void __attribute__((format(printf, 2, 0))) vlog(const char *level, const char *fmt, va_list ap)
{
	if (log_quiet && strcmp(level, "info") == 0)
		return;
	char ts[40], msg[2048];
	timestamp(ts, sizeof(ts));
	vsnprintf(msg, sizeof(msg), fmt, ap);
	fprintf(stderr, "%s %s %s\n", ts, level, msg);
}

void log_info(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("info", fmt, ap);
	va_end(ap);
}

void log_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("warn", fmt, ap);
	va_end(ap);
}

void log_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("error", fmt, ap);
	va_end(ap);
}

void event_begin(struct event *e, const char *type, const char *session)
{
	char ts[40];
	timestamp(ts, sizeof(ts));
	strbuf_init(&e->json, 0);
	strbuf_init(&e->text, 0);
	strbuf_adds(&e->json, "{\"ts\":");
	strbuf_add_json_str(&e->json, ts);
	strbuf_adds(&e->json, ",\"event\":");
	strbuf_add_json_str(&e->json, type);
	strbuf_addf(&e->text, "%s %s", ts, session ? session : "-");
	strbuf_addf(&e->text, " event=%s", type);
	if (session) {
		strbuf_adds(&e->json, ",\"session\":");
		strbuf_add_json_str(&e->json, session);
	}
}

void event_str(struct event *e, const char *key, const char *value)
{
	if (value == NULL)
		return;
	strbuf_addc(&e->json, ',');
	strbuf_add_json_str(&e->json, key);
	strbuf_addc(&e->json, ':');
	strbuf_add_json_str(&e->json, value);
	/* stderr: quote values with spaces, escape control bytes */
	bool quote = value[0] == '\0' || strpbrk(value, " \"=") != NULL;
	strbuf_addf(&e->text, " %s=", key);
	if (quote)
		strbuf_addc(&e->text, '"');
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
			strbuf_addf(&e->text, "\\x%02x", *p);
		else
			strbuf_addc(&e->text, (char)*p);
	}
	if (quote)
		strbuf_addc(&e->text, '"');
}

void event_int(struct event *e, const char *key, int64_t value)
{
	strbuf_addc(&e->json, ',');
	strbuf_add_json_str(&e->json, key);
	strbuf_addf(&e->json, ":%lld", (long long)value);
	strbuf_addf(&e->text, " %s=%lld", key, (long long)value);
}

void event_end(struct event *e)
{
	strbuf_adds(&e->json, "}\n");
	if (events_fd >= 0) {
		ssize_t w = write(events_fd, e->json.s, e->json.len);
		if (w != (ssize_t)e->json.len)
			fprintf(stderr, "posthorn: event log write failed: %s\n",
			        w < 0 ? strerror(errno) : "short write");
	}
	if (!log_quiet)
		fprintf(stderr, "%s\n", e->text.s);
	strbuf_free(&e->json);
	strbuf_free(&e->text);
}
