/* io — the small I/O interface protocol sessions see: line in, bytes in,
 * formatted reply out, pause/resume, timeout, close-after-flush. It wraps
 * a libevent bufferevent so sessions never call libevent or OpenSSL
 * themselves (TLS will be added here as io_starttls()).
 *
 * Callbacks are deferred (run from the loop, never from inside an io_*
 * call), so a handler may free the session from any callback.
 * Ownership: the session owns its io and frees it with io_free(). */
#ifndef LIB_IO_H
#define LIB_IO_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <event2/event.h>

struct io;

enum io_close_reason {
	IO_EOF,      /* peer closed */
	IO_ERROR,    /* socket error */
	IO_TIMEOUT,  /* read timeout: the session may still write a last reply */
	IO_FLUSHED,  /* io_close_when_flushed() finished writing */
};

struct io_handler {
	/* New input is available (also called after io_resume() when input
	 * is already buffered). */
	void (*read)(struct io *io, void *ctx);
	/* Output buffer drained below the low-water mark (only when enabled
	 * with io_want_drained()); used to stream large responses. */
	void (*drained)(struct io *io, void *ctx);
	/* The connection is over (or timed out); the session frees itself. */
	void (*closed)(struct io *io, void *ctx, enum io_close_reason why);
};

struct io *io_new(struct event_base *base, int fd, const struct io_handler *h, void *ctx);
void io_free(struct io **io);
/* Outgoing connection (non-blocking, close-on-exec) to sa: connected()
 * or h->closed(IO_ERROR / IO_TIMEOUT) follows. timeout_secs bounds the
 * connect itself; set the command timeout with io_set_timeout() once
 * connected. Returns NULL with errno set when the connect fails at once
 * (no route, address family not supported). */
struct io *io_connect(struct event_base *base, const struct sockaddr *sa, socklen_t salen, int timeout_secs,
                      const struct io_handler *h, void (*connected)(struct io *io, void *ctx), void *ctx);
/* errno of the socket error that ended the connection (0 if none), for
 * "connect to ...: Connection refused". */
int io_error(const struct io *io);

/* Next input line without its CRLF/LF, NUL-terminated, valid until the
 * next io_* call. Returns 1 with a line, 0 if no complete line yet, -1 if
 * the line is longer than max: its bytes are discarded up to the next LF
 * and the caller should answer "line too long". */
int io_getline(struct io *io, size_t max, char **line_r, size_t *len_r);
/* Raw input: peek at up to the whole buffer (contiguous), then consume. */
const unsigned char *io_peek(struct io *io, size_t *len_r);
void io_consume(struct io *io, size_t n);
size_t io_input_len(struct io *io);

void io_write(struct io *io, const void *p, size_t n);
void io_printf(struct io *io, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t io_output_len(struct io *io);

/* Read timeout in seconds (0: none). */
void io_set_timeout(struct io *io, int secs);
/* Deadline in seconds from now for the whole current step (a command line
 * or a DATA phase), however slowly bytes trickle in: the read timeout
 * restarts with every byte, this does not (slowloris defence). On expiry
 * closed(IO_TIMEOUT) is called. 0 cancels. */
void io_set_deadline(struct io *io, int secs);
void io_set_deadline_ms(struct io *io, long ms);
/* Stop/restart delivering read callbacks (input keeps buffering up to the
 * kernel's window; nothing is lost). */
void io_pause(struct io *io);
void io_resume(struct io *io);
bool io_paused(const struct io *io);
/* Call drained() when output falls to <= low bytes (0 disables). */
void io_want_drained(struct io *io, size_t low);
/* Stop reading; when all output is written, closed(IO_FLUSHED) is called. */
void io_close_when_flushed(struct io *io);

#endif
