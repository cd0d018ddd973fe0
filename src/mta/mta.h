/* mta — outbound delivery of queue/outbox: MX resolution (libunbound,
 * asynchronous on the event loop), the SMTP client, connection reuse and
 * per-destination concurrency, retries with back-off, DSN bounces, the
 * smarthost. Runs on the event loop of `posthorn serve`; blocking file
 * work (reading a queue file, saving state, writing a DSN) goes to
 * workers.
 *
 * Ownership: a message in queue/outbox belongs to the MTA's schedule
 * unless the console has claimed it (mta_claim). */
#ifndef MTA_MTA_H
#define MTA_MTA_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct daemon;
struct queue_index;
struct mta;

struct mta *mta_new(struct daemon *d, struct queue_index *ix);
/* Schedules everything in queue/outbox (reads envelopes and .st files). */
void mta_start(struct mta *m);
/* Graceful stop: no new attempts; attempts in flight finish or are
 * abandoned (the message stays in the outbox, state saved). */
void mta_stop(struct mta *m);
void mta_free(struct mta **m);

/* Thread-safe entry points (router threads, console worker threads). */
/* A new message is in queue/outbox. */
void mta_notify(struct mta *m, const char *id);
/* Takes a message out of the schedule so the console may move or delete
 * its files. Waits (up to timeout_ms) while an attempt is in flight.
 * Returns 1 claimed, 0 not known to the MTA (not in the outbox), -1 still
 * in flight after the timeout. */
int mta_claim(struct mta *m, const char *id, int timeout_ms);
/* Gives a claimed message back (it is still in queue/outbox). */
void mta_unclaim(struct mta *m, const char *id);
/* Deliver now: forget the back-off and any cached route, for one message
 * or (id == NULL) the whole outbox. Returns how many were rescheduled. */
int mta_retry(struct mta *m, const char *id);
/* Forgets a claimed message the console is taking out of the outbox
 * (delete, hold, requeue, quarantine). Call it before the file leaves the
 * outbox: a requeued copy routed back announces itself with mta_notify,
 * which must not be forgotten afterwards. false if unknown or in flight. */
bool mta_forget(struct mta *m, const char *id);

/* Loop thread only. */
/* Re-reads the delivery settings from the daemon's configuration (SIGHUP);
 * a bad value keeps the old settings. dns_server needs a restart. */
void mta_reload(struct mta *m);
/* Deliveries or file work still in flight (a graceful stop waits). */
bool mta_busy(struct mta *m);

/* Counters since start, for `posthorn status`. */
struct mta_stats {
	uint64_t sent, deferred, bounced; /* recipients, per attempt */
	uint64_t dsn, held;               /* reports written, messages held */
	size_t scheduled;                 /* outbox messages known */
	size_t active;                    /* messages in an attempt now */
	int connections;                  /* outgoing SMTP connections now */
};
void mta_stats(struct mta *m, struct mta_stats *s);

#endif
