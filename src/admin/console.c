/* console — see console.h.
 *
 * Role: the CLI (local console, the client side of the control socket)
 * and the daemon's console jobs (which supply their own emit that frames
 * output onto the socket). The formatting helpers are pure.
 * Errors: a write to a closed stdout is ignored (the reader went away);
 * a broken control connection ends console_remote_run with exit code 1
 * and a message naming the socket. */
#include "admin/console.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Longest answer line read from the terminal. */
#define CONSOLE_ANSWER_MAX 64

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- the local console: this process's stdout and stderr -------------------- */

static bool read_answer(void)
{
	char line[CONSOLE_ANSWER_MAX];
	if (fgets(line, sizeof(line), stdin) == NULL)
		return false;
	return line[0] == 'y' || line[0] == 'Y';
}

void console_local_frame(struct console *c, char tag, const char *p, size_t n)
{
	switch (tag) {
	case 'o':
		if (c->progress_shown) {
			fputs("\r\033[K", stderr);
			c->progress_shown = false;
		}
		fwrite(p, 1, n, stdout);
		break;
	case 'e':
		fflush(stdout);
		if (c->progress_shown) {
			fputs("\r\033[K", stderr);
			c->progress_shown = false;
		}
		fwrite(p, 1, n, stderr);
		break;
	case 'p':
		if (!c->progress)
			break;
		if (n == 0) {
			if (c->progress_shown)
				fputs("\r\033[K", stderr);
			c->progress_shown = false;
		} else {
			fflush(stdout);
			fprintf(stderr, "\r%.*s\033[K", (int)n, p);
			c->progress_shown = true;
		}
		fflush(stderr);
		break;
	default:
		break;
	}
}

static int local_emit(struct console *c, char tag, const char *p, size_t n)
{
	if (tag == 'q') {
		if (!c->interactive)
			return 0;
		fflush(stdout);
		if (c->progress_shown) {
			fputs("\r\033[K", stderr);
			c->progress_shown = false;
		}
		fprintf(stderr, "%.*s", (int)n, p);
		fflush(stderr);
		return read_answer() ? 1 : 0;
	}
	console_local_frame(c, tag, p, n);
	return 0;
}

void console_init_local(struct console *c)
{
	memset(c, 0, sizeof(*c));
	c->emit = local_emit;
	c->progress = isatty(STDERR_FILENO) == 1;
	c->interactive = c->progress && isatty(STDIN_FILENO) == 1;
	atomic_init(&c->cancelled, false);
}

/* --- writing ------------------------------------------------------------------ */

void console_write(struct console *c, const void *p, size_t n)
{
	if (n)
		c->emit(c, 'o', p, n);
}

static void __attribute__((format(printf, 3, 0))) vemit(struct console *c, char tag, const char *fmt, va_list ap)
{
	char small[512];
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	if (n < 0) {
		va_end(ap2);
		return;
	}
	if ((size_t)n < sizeof(small)) {
		c->emit(c, tag, small, (size_t)n);
	} else {
		char *big = xmalloc((size_t)n + 1);
		vsnprintf(big, (size_t)n + 1, fmt, ap2);
		c->emit(c, tag, big, (size_t)n);
		free(big);
	}
	va_end(ap2);
}

void console_printf(struct console *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vemit(c, 'o', fmt, ap);
	va_end(ap);
}

void console_errorf(struct console *c, const char *fmt, ...)
{
	console_progress_end(c);
	va_list ap;
	va_start(ap, fmt);
	vemit(c, 'e', fmt, ap);
	va_end(ap);
}

void console_progress(struct console *c, bool force, const char *fmt, ...)
{
	if (!c->progress)
		return;
	int64_t t = now_ms();
	if (!force && c->progress_shown && t - c->last_progress_ms < CONSOLE_PROGRESS_MS)
		return;
	c->last_progress_ms = t;
	c->progress_shown = true;
	va_list ap;
	va_start(ap, fmt);
	vemit(c, 'p', fmt, ap);
	va_end(ap);
}

void console_progress_end(struct console *c)
{
	if (!c->progress_shown)
		return;
	c->progress_shown = false;
	c->emit(c, 'p', "", 0);
}

bool console_ask(struct console *c, const char *fmt, ...)
{
	console_progress_end(c);
	if (!c->interactive)
		return false;
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return false;
	if ((size_t)n >= sizeof(buf))
		n = (int)sizeof(buf) - 1;
	return c->emit(c, 'q', buf, (size_t)n) == 1;
}

bool console_cancelled(struct console *c)
{
	return atomic_load(&c->cancelled);
}

/* --- formatting --------------------------------------------------------------- */

void console_fmt_count(char *buf, size_t n, uint64_t v)
{
	char digits[32];
	int len = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)v);
	char out[48];
	size_t k = 0;
	for (int i = 0; i < len; i++) {
		if (i > 0 && (len - i) % 3 == 0)
			out[k++] = ',';
		out[k++] = digits[i];
	}
	out[k] = '\0';
	snprintf(buf, n, "%s", out);
}

void console_fmt_bytes(char *buf, size_t n, uint64_t v)
{
	static const char *const units[] = { "kB", "MB", "GB", "TB", "PB" };
	if (v < 1000) {
		snprintf(buf, n, "%llu B", (unsigned long long)v);
		return;
	}
	double d = (double)v / 1000.0;
	size_t u = 0;
	while (d >= 999.95 && u + 1 < sizeof(units) / sizeof(units[0])) {
		d /= 1000.0;
		u++;
	}
	snprintf(buf, n, "%.1f %s", d, units[u]);
}

/* --- the CLI side of the control socket --------------------------------------- */

int console_connect(const char *data_dir)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int r = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/run/control.sock", data_dir);
	if (r < 0 || (size_t)r >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* A small buffered reader over the socket. */
struct rd {
	int fd;
	char buf[65536];
	size_t off, len;
};

static int rd_fill(struct rd *r)
{
	ssize_t n;
	do
		n = read(r->fd, r->buf, sizeof(r->buf));
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return -1;
	r->off = 0;
	r->len = (size_t)n;
	return 0;
}

/* Next byte, or -1 at EOF/error. */
static int rd_byte(struct rd *r)
{
	if (r->off == r->len && rd_fill(r) < 0)
		return -1;
	return (unsigned char)r->buf[r->off++];
}

static int rd_bytes(struct rd *r, char *out, size_t n)
{
	while (n > 0) {
		if (r->off == r->len && rd_fill(r) < 0)
			return -1;
		size_t k = r->len - r->off < n ? r->len - r->off : n;
		memcpy(out, r->buf + r->off, k);
		r->off += k;
		out += k;
		n -= k;
	}
	return 0;
}

int console_remote_run(int fd, const char *cmd, int argc, char **argv)
{
	struct console con;
	console_init_local(&con);
	json_t *req = json_object();
	json_object_set_new(req, "cmd", json_string(cmd));
	json_t *av = json_array();
	for (int i = 0; i < argc; i++) {
		json_t *s = json_string(argv[i]);
		if (s == NULL) {
			fprintf(stderr, "posthorn %s: argument %d is not valid UTF-8\n", cmd, i + 1);
			json_decref(av);
			json_decref(req);
			return 2;
		}
		json_array_append_new(av, s);
	}
	json_object_set_new(req, "argv", av);
	json_object_set_new(req, "tty", json_boolean(con.progress));
	json_object_set_new(req, "stdin_tty", json_boolean(con.interactive));
	char *line = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (line == NULL) {
		fprintf(stderr, "posthorn %s: cannot encode the request\n", cmd);
		return 1;
	}
	size_t ll = strlen(line);
	if (ll > CONSOLE_REQUEST_MAX) {
		fprintf(stderr, "posthorn %s: too many arguments for one command (%zu bytes; at most %u): select by filter "
		                "instead of listing ids\n",
		        cmd, ll, (unsigned)CONSOLE_REQUEST_MAX);
		free(line);
		return 2;
	}
	int rc = 1;
	if (send_all(fd, line, ll) < 0 || send_all(fd, "\n", 1) < 0) {
		fprintf(stderr, "posthorn %s: cannot send the command to the server: %s\n", cmd, strerror(errno));
		free(line);
		return 1;
	}
	free(line);
	struct rd *r = xcalloc(1, sizeof(*r));
	r->fd = fd;
	char *payload = NULL;
	for (;;) {
		/* "<tag> <len>\n" */
		int tag = rd_byte(r);
		if (tag < 0)
			goto gone;
		if (rd_byte(r) != ' ')
			goto garbled;
		uint64_t len = 0;
		int ch, digits = 0;
		while ((ch = rd_byte(r)) >= '0' && ch <= '9' && digits < 12) {
			len = len * 10 + (uint64_t)(ch - '0');
			digits++;
		}
		if (ch != '\n' || digits == 0 || len > CONSOLE_FRAME_MAX)
			goto garbled;
		payload = xrealloc(payload, (size_t)len + 1);
		if (rd_bytes(r, payload, (size_t)len) < 0)
			goto gone;
		payload[len] = '\0';
		if (tag == 'x') {
			console_local_frame(&con, 'p', "", 0);
			rc = atoi(payload);
			break;
		}
		if (tag == 'q') {
			bool yes = local_emit(&con, 'q', payload, (size_t)len) == 1;
			if (send_all(fd, yes ? "y\n" : "n\n", 2) < 0)
				goto gone;
			continue;
		}
		console_local_frame(&con, (char)tag, payload, (size_t)len);
	}
	goto out;
gone:
	console_local_frame(&con, 'p', "", 0);
	fflush(stdout);
	fprintf(stderr, "posthorn %s: the server closed the control connection before the command finished "
	                "(see its log)\n",
	        cmd);
	rc = 1;
	goto out;
garbled:
	console_local_frame(&con, 'p', "", 0);
	fflush(stdout);
	fprintf(stderr, "posthorn %s: unreadable answer on the control socket\n", cmd);
	rc = 1;
out:
	fflush(stdout);
	free(payload);
	free(r);
	return rc;
}
