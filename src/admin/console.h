/* console — where console commands write, so one implementation runs in
 * the CLI (offline: straight to stdout/stderr) and inside the daemon
 * (online: framed over the control socket back to the CLI, which prints
 * it the same way).
 *
 * Frames on the control socket (daemon → CLI) are "<tag> <length>\n"
 * followed by length bytes, so any output (a message body too) passes
 * unchanged:
 *   o  bytes for stdout         e  bytes for stderr
 *   p  a progress line (shown on a terminal only, overwritten in place)
 *   q  a yes/no question: the CLI answers with one line "y" or "n"
 *   x  the exit code (decimal); the last frame
 * The request (CLI → daemon) is one JSON line:
 *   {"cmd":"queue","argv":["list","--limit","50"],"tty":true,"stdin_tty":true}
 * "tty": stderr is a terminal (progress wanted); "stdin_tty": a person
 * can answer a question. */
#ifndef ADMIN_CONSOLE_H
#define ADMIN_CONSOLE_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Progress lines at most this often (ms): readable, and cheap to send. */
#define CONSOLE_PROGRESS_MS 100
/* Longest request line the daemon accepts (the argv of one command). */
#define CONSOLE_REQUEST_MAX (192 * 1024)
/* Longest frame the CLI accepts (a message body with --body). */
#define CONSOLE_FRAME_MAX (256u * 1024 * 1024)

struct console {
	/* Delivers one frame (see above); tag 'q' returns the answer: 1 yes,
	 * 0 no (or nobody to ask). Other tags return 0. */
	int (*emit)(struct console *c, char tag, const char *p, size_t n);
	void *arg;
	bool progress;    /* show progress lines */
	bool interactive; /* questions can be answered */
	atomic_bool cancelled; /* the person went away (Ctrl-C): stop early */
	/* private */
	int64_t last_progress_ms;
	bool progress_shown;
};

/* A console on this process's stdout/stderr: progress when stderr is a
 * terminal, questions when stdin and stderr are. */
void console_init_local(struct console *c);

void console_write(struct console *c, const void *p, size_t n);
void console_printf(struct console *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* To stderr (clears a progress line first). */
void console_errorf(struct console *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "deleted 45,000/99,000" now and then (rate-limited; terminal only).
 * force shows it even if one was shown a moment ago. */
void console_progress(struct console *c, bool force, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Removes the progress line, if one is shown. */
void console_progress_end(struct console *c);
/* Asks a yes/no question; false when nobody can answer. */
bool console_ask(struct console *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool console_cancelled(struct console *c);

/* "98,000" */
void console_fmt_count(char *buf, size_t n, uint64_t v);
/* "301.2 MB" (1 MB = 1,000,000 bytes, like ls -h --si) */
void console_fmt_bytes(char *buf, size_t n, uint64_t v);

/* Renders frames from the daemon on this process's stdout/stderr. */
void console_local_frame(struct console *c, char tag, const char *p, size_t n);

/* The CLI side of an online command: sends argv (the command's own
 * arguments, argv[0] = its sub-command) as cmd over the connected control
 * socket fd, prints what comes back and returns the exit code (1 when
 * the daemon goes away before it finishes). */
int console_remote_run(int fd, const char *cmd, int argc, char **argv);

/* Connects to data_dir/run/control.sock: the fd, or -1 (errno set). */
int console_connect(const char *data_dir);

#endif
