/* control — console commands that the CLI sends to the running daemon
 * over run/control.sock (see admin/console.h for the request and the
 * frames that come back). The daemon's control socket hands a connection
 * here when its first line is a JSON request; the command then runs on a
 * worker thread (never on the event loop) against the daemon's own queue
 * index, router and delivery engine, and its output streams back while it
 * works (progress lines included).
 *
 * One console job runs at a time (the others wait, and say so): a bulk
 * operation must not take every worker from password checks.
 * All functions run on the event loop thread. */
#ifndef ADMIN_CONTROL_H
#define ADMIN_CONTROL_H

struct daemon;
struct io;
struct control_job;

/* Takes over writing to io for the request line (JSON). Never NULL: a bad
 * request is answered with an error and exit code 2. */
struct control_job *control_job_start(struct daemon *d, struct io *io, const char *request);
/* Input arrived on the connection (answers to questions). */
void control_job_input(struct control_job *j);
/* The socket's output buffer drained (io_want_drained). */
void control_job_drained(struct control_job *j);
/* The connection is gone (or closing): the job stops at the next message
 * and frees itself once its worker returns. */
void control_job_detach(struct control_job *j);
/* The daemon is stopping: jobs stop early; questions are answered "no". */
void control_jobs_shutdown(void);

#endif
