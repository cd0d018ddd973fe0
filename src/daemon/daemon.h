/* daemon — `posthorn serve`: owns the event loop, the listeners, the
 * worker pool, the committer and the router thread, connection limits,
 * signals (SIGTERM/SIGINT graceful stop, SIGHUP reload) and the control
 * socket. Protocol sessions (smtp/, pop3/) get a struct daemon * and use
 * only what this header offers. */
#ifndef DAEMON_DAEMON_H
#define DAEMON_DAEMON_H
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <event2/event.h>
#include "conf/config.h"
#include "directory/directory.h"
#include "lib/worker.h"

struct committer;
struct router;
struct iptable;
struct mta;
struct queue_index;

struct daemon {
	struct event_base *base;
	char *data_dir;
	char *config_path;
	struct config cfg;
	char *hostname;             /* effective host name */
	struct directory *dir;      /* loop-thread connection: reads only */
	struct workers *workers;    /* blocking jobs: crypt, SQLite writes */
	struct committer *committer;
	struct router *router;
	struct mta *mta;            /* outbound delivery of queue/outbox */
	struct queue_index *index;  /* the queue index (may be NULL) */
	struct iptable *ipconn;
	int64_t nconn;
	int64_t started;
	bool stopping;
	/* counters for `posthorn status` */
	uint64_t n_accepted;
	uint64_t n_rejected;
};

/* Connection admission against max_connections and
 * max_connections_per_ip. Returns true and counts the connection, or
 * false with a reason. Every admitted connection is released once. */
bool daemon_conn_admit(struct daemon *d, const struct sockaddr *sa, const char **why_r);
void daemon_conn_release(struct daemon *d, const struct sockaddr *sa);

/* A new session id "S<hex>" for logs, unique within this process. */
void daemon_session_id(char buf[24]);

/* The calling thread's own directory connection (opened on first use,
 * closed at thread exit). For worker-thread jobs such as directory_auth. */
struct directory *daemon_thread_directory(struct daemon *d);

/* Is plaintext authentication allowed for this client (auth_plaintext)? */
bool daemon_plain_auth_ok(struct daemon *d, const struct sockaddr *sa);

/* The daemon entry point: `posthorn serve [--data DIR] [--config FILE]`. */
int daemon_main(int argc, char **argv);

#endif
