/* io — see io.h. Runs on the event loop thread only. */
#include "lib/io.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>

/* Input buffered per connection before we stop reading from the socket. */
#define IO_INPUT_HIGH (256 * 1024)

struct io {
	struct bufferevent *bev;
	const struct io_handler *h;
	void *ctx;
	struct strbuf line;
	bool paused;
	bool closing;
	bool discarding; /* inside an over-long line, dropping bytes to LF */
	size_t drained_low;
	struct event *deadline;
	int timeout;
	int error; /* errno of the socket error that closed us */
	void (*connected)(struct io *io, void *ctx); /* io_connect() */
};

static void on_read(struct bufferevent *bev, void *arg)
{
	struct io *io = arg;
	(void)bev;
	if (io->paused || io->closing)
		return;
	io->h->read(io, io->ctx);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct io *io = arg;
	size_t left = evbuffer_get_length(bufferevent_get_output(bev));
	if (io->closing) {
		if (left == 0)
			io->h->closed(io, io->ctx, IO_FLUSHED);
		return;
	}
	if (io->drained_low && left <= io->drained_low && io->h->drained)
		io->h->drained(io, io->ctx);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct io *io = arg;
	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		if (io->connected)
			io->connected(io, io->ctx);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (io->closing) {
			io->h->closed(io, io->ctx, IO_ERROR);
			return;
		}
		io->h->closed(io, io->ctx, IO_TIMEOUT);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		io->h->closed(io, io->ctx, IO_EOF);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		io->error = EVUTIL_SOCKET_ERROR();
		io->h->closed(io, io->ctx, IO_ERROR);
	}
}

struct io *io_new(struct event_base *base, int fd, const struct io_handler *h, void *ctx)
{
	struct io *io = xcalloc(1, sizeof(*io));
	io->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (io->bev == NULL)
		panic("bufferevent_socket_new failed");
	io->h = h;
	io->ctx = ctx;
	strbuf_init(&io->line, 0);
	bufferevent_setcb(io->bev, on_read, on_write, on_event, io);
	/* Bound what a client can make us buffer: reading stops at this mark
	 * until the session consumed its input. */
	bufferevent_setwatermark(io->bev, EV_READ, 0, IO_INPUT_HIGH);
	bufferevent_enable(io->bev, EV_READ | EV_WRITE);
	return io;
}

struct io *io_connect(struct event_base *base, const struct sockaddr *sa, socklen_t salen, int timeout_secs,
                      const struct io_handler *h, void (*connected)(struct io *io, void *ctx), void *ctx)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	struct io *io = xcalloc(1, sizeof(*io));
	io->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (io->bev == NULL)
		panic("bufferevent_socket_new failed");
	io->h = h;
	io->ctx = ctx;
	io->connected = connected;
	strbuf_init(&io->line, 0);
	bufferevent_setcb(io->bev, on_read, on_write, on_event, io);
	bufferevent_setwatermark(io->bev, EV_READ, 0, IO_INPUT_HIGH);
	/* the write timeout covers the connect itself */
	io_set_timeout(io, timeout_secs);
	if (bufferevent_socket_connect(io->bev, sa, (int)salen) < 0) {
		int e = errno ? errno : ECONNREFUSED;
		bufferevent_free(io->bev);
		strbuf_free(&io->line);
		free(io);
		errno = e;
		return NULL;
	}
	bufferevent_enable(io->bev, EV_READ | EV_WRITE);
	return io;
}

int io_error(const struct io *io)
{
	return io->error;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct io *io = arg;
	(void)fd;
	(void)what;
	io->h->closed(io, io->ctx, io->closing ? IO_ERROR : IO_TIMEOUT);
}

void io_set_deadline_ms(struct io *io, long ms)
{
	if (io->deadline == NULL)
		io->deadline = evtimer_new(bufferevent_get_base(io->bev), on_deadline, io);
	if (ms <= 0) {
		evtimer_del(io->deadline);
		return;
	}
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	evtimer_add(io->deadline, &tv);
}

void io_set_deadline(struct io *io, int secs)
{
	io_set_deadline_ms(io, secs > 0 ? (long)secs * 1000 : 0);
}

void io_free(struct io **iop)
{
	struct io *io = *iop;
	if (io == NULL)
		return;
	if (io->deadline)
		event_free(io->deadline);
	bufferevent_free(io->bev);
	strbuf_free(&io->line);
	free(io);
	*iop = NULL;
}

int io_getline(struct io *io, size_t max, char **line_r, size_t *len_r)
{
	struct evbuffer *in = bufferevent_get_input(io->bev);
	for (;;) {
		struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
		size_t avail = evbuffer_get_length(in);
		if (io->discarding) {
			if (p.pos < 0) {
				evbuffer_drain(in, avail);
				return 0;
			}
			evbuffer_drain(in, (size_t)p.pos + 1);
			io->discarding = false;
			continue;
		}
		if (p.pos < 0) {
			if (avail > max + 2) {
				evbuffer_drain(in, avail);
				io->discarding = true;
				return -1;
			}
			return 0;
		}
		size_t n = (size_t)p.pos; /* bytes before LF */
		if (n > max + 1) {
			evbuffer_drain(in, n + 1);
			return -1;
		}
		strbuf_reset(&io->line);
		strbuf_add(&io->line, evbuffer_pullup(in, (ev_ssize_t)n + 1), n);
		evbuffer_drain(in, n + 1);
		if (io->line.len > 0 && io->line.s[io->line.len - 1] == '\r')
			strbuf_truncate(&io->line, io->line.len - 1);
		if (io->line.len > max)
			return -1;
		*line_r = io->line.s;
		*len_r = io->line.len;
		return 1;
	}
}

const unsigned char *io_peek(struct io *io, size_t *len_r)
{
	struct evbuffer *in = bufferevent_get_input(io->bev);
	*len_r = evbuffer_get_length(in);
	if (*len_r == 0)
		return (const unsigned char *)"";
	return evbuffer_pullup(in, -1);
}

void io_consume(struct io *io, size_t n)
{
	evbuffer_drain(bufferevent_get_input(io->bev), n);
}

size_t io_input_len(struct io *io)
{
	return evbuffer_get_length(bufferevent_get_input(io->bev));
}

void io_write(struct io *io, const void *p, size_t n)
{
	if (io->closing && evbuffer_get_length(bufferevent_get_output(io->bev)) == 0 && n == 0)
		return;
	bufferevent_write(io->bev, p, n);
}

void io_printf(struct io *io, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(io->bev), fmt, ap);
	va_end(ap);
}

size_t io_output_len(struct io *io)
{
	return evbuffer_get_length(bufferevent_get_output(io->bev));
}

void io_set_timeout(struct io *io, int secs)
{
	io->timeout = secs;
	struct timeval tv = { secs, 0 };
	bufferevent_set_timeouts(io->bev, secs > 0 ? &tv : NULL, secs > 0 ? &tv : NULL);
}

void io_pause(struct io *io)
{
	io->paused = true;
	bufferevent_disable(io->bev, EV_READ);
}

void io_resume(struct io *io)
{
	if (!io->paused)
		return;
	io->paused = false;
	if (io->closing)
		return;
	bufferevent_enable(io->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_input(io->bev)) > 0)
		bufferevent_trigger(io->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

bool io_paused(const struct io *io)
{
	return io->paused;
}

void io_want_drained(struct io *io, size_t low)
{
	io->drained_low = low;
	bufferevent_setwatermark(io->bev, EV_WRITE, low, 0);
}

void io_close_when_flushed(struct io *io)
{
	io->closing = true;
	bufferevent_disable(io->bev, EV_READ);
	bufferevent_setwatermark(io->bev, EV_WRITE, 0, 0);
	if (evbuffer_get_length(bufferevent_get_output(io->bev)) == 0)
		bufferevent_trigger(io->bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}
