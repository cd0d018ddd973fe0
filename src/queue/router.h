/* router — takes each message in queue/pending to its destinations:
 * local mailboxes (Maildir), and remote recipients into queue/outbox.
 * Files dropped into queue/pending by hand are routed too: posthorn queue
 * files, the classic "FROM:/RCPT:" pending-file form of older Windows
 * servers, and plain .eml files (envelope from the headers, like
 * `sendmail -t`). Anything that cannot be routed goes to
 * queue/lost+found with an event saying why; nothing is ever deleted
 * unrouted.
 *
 * Runs on its own threads (blocking file I/O, fsync, SQLite reads): a
 * watcher (inotify on queue/pending, a periodic rescan) and a few delivery
 * threads fed by it and by router_notify() from the committer. A name is
 * never handled by two threads at once. */
#ifndef QUEUE_ROUTER_H
#define QUEUE_ROUTER_H
#include <stdint.h>

struct router;

struct router_conf {
	const char *data_dir;
	const char *hostname;
	int max_hops;
	int scan_interval;      /* seconds */
	uint64_t max_message_size;
	/* Called (on a router thread) after a message was written durably
	 * into queue/outbox: the daemon tells the queue index and the MTA. */
	void (*on_outbox)(void *arg, const char *id);
	/* Called (on a router thread) when a file has left queue/pending
	 * (routed, or moved to lost+found): the daemon tells the queue index.
	 * May be NULL. */
	void (*on_routed)(void *arg, const char *id);
	void *hook_arg;
};

struct router *router_new(const struct router_conf *conf);
/* Starts the thread; the first pass routes everything already waiting. */
void router_start(struct router *r);
/* A new message id is in pending (thread-safe). */
void router_notify(struct router *r, const char *id);
/* Finishes the message in hand, then stops and frees. */
void router_free(struct router **r);
/* Lets the console move or delete files in queue/pending safely: returns
 * once no file is being routed, and none is started until
 * router_resume() (new names keep queueing; nothing is lost). Nests.
 * Blocking: call it from a worker thread, never the event loop. */
void router_pause(struct router *r);
void router_resume(struct router *r);
/* Counters for status (thread-safe snapshot). */
void router_stats(struct router *r, uint64_t *delivered_r, uint64_t *relayed_r, uint64_t *lost_r);

#endif
