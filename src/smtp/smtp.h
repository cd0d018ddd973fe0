/* smtp — SMTP server sessions for the MX listener (port 25) and the
 * submission listener (587, AUTH required). */
#ifndef SMTP_SMTP_H
#define SMTP_SMTP_H
#include <stdbool.h>
#include <sys/socket.h>

struct daemon;

/* A connection the daemon admitted (daemon_conn_admit); the session
 * releases it when it ends. */
void smtp_accept(struct daemon *d, int fd, const struct sockaddr *sa, socklen_t salen,
                 bool submission);
/* Graceful stop: idle sessions get 421 and close; a session waiting for
 * its commit still gets its 250 first. */
void smtp_shutdown_all(struct daemon *d);
/* Sessions alive (for shutdown and status). */
int smtp_session_count(void);

#endif
