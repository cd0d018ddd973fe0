/* pop3 — POP3 server sessions (RFC 1939; CAPA and response codes per
 * RFC 2449 and RFC 3206; AUTH PLAIN per RFC 5034) over the Maildir store.
 * Runs on the daemon's event loop; password checks, maildrop listing and
 * the UPDATE state run as worker jobs. */
#ifndef POP3_POP3_H
#define POP3_POP3_H
#include <sys/socket.h>

struct daemon;

/* Starts a session on an accepted, non-blocking socket fd (ownership
 * passes to the session). The daemon has already admitted the connection
 * with daemon_conn_admit(); the session calls daemon_conn_release() once
 * when it ends. Never blocks. */
void pop3_accept(struct daemon *d, int fd, const struct sockaddr *sa, socklen_t salen);

/* Graceful stop (SIGTERM): every session gets "-ERR server shutting
 * down" and is closed once that is written; no UPDATE (messages marked
 * with DELE stay), except for sessions already in UPDATE, which finish
 * it. Sessions waiting for a worker job answer when it completes. Safe to
 * call more than once. Never blocks. */
void pop3_shutdown_all(struct daemon *d);

#endif
