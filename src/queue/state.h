/* state — per-recipient delivery state of a queue file, kept beside it as
 * "<id>.st" in the same folder (so hold, release and quarantine move it
 * along with the message). Plain text, readable with less:
 *
 *   posthorn-state 1
 *   first-attempt 1764781080
 *   last-attempt 1764784680
 *   next-attempt 1764788280
 *   attempts 3
 *   warned no                       (delay DSN already sent?)
 *   rcpt <a@example.com> deferred attempts=3 host=mx1.example.com[192.0.2.7] reply=451 4.7.1 try later
 *   rcpt <b@example.net> delivered attempts=1 host=mx.example.net[198.51.100.2] reply=250 2.0.0 ok
 *   rcpt <c@example.org> failed attempts=1 host=... reply=550 5.1.1 unknown
 *
 * A missing state file means: never attempted, every recipient pending.
 * Durability: queue_state_save() writes a temp file, fsyncs, renames and
 * fsyncs the folder: a crash can lose at most the last attempt's outcome,
 * which costs a duplicate delivery attempt, never a lost recipient. */
#ifndef QUEUE_STATE_H
#define QUEUE_STATE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "queue/queue.h"

enum rcpt_status { RCPT_PENDING = 0, RCPT_DEFERRED, RCPT_DELIVERED, RCPT_FAILED };

struct rcpt_state {
	char *addr;
	enum rcpt_status status;
	int attempts;
	char *host;  /* "name[ip]" of the last attempt, or NULL */
	char *reply; /* last reply (one line), or NULL */
};

struct queue_state {
	int64_t first_attempt, last_attempt, next_attempt; /* unix seconds, 0 = never */
	int attempts;
	bool warned;
	struct rcpt_state *r;
	size_t n;
};

/* Loads folder/<id>.st; a missing file gives a fresh state with every
 * recipient of env pending. Recipients in the file but no longer in env
 * are dropped; new ones in env are added as pending. 0 or -1. */
int queue_state_load(const char *data_dir, const char *folder, const struct queue_env *env,
                     struct queue_state *st, const char **error_r);
/* Atomically replaces folder/<id>.st (fsync'd). */
int queue_state_save(const char *data_dir, const char *folder, const char *id,
                     const struct queue_state *st, const char **error_r);
/* Removes folder/<id>.st if present. */
void queue_state_remove(const char *data_dir, const char *folder, const char *id);
void queue_state_free(struct queue_state *st);
/* The file text for st (what queue_state_save writes); xmalloc'd. */
char *queue_state_format(const struct queue_state *st, size_t *len_r);
const char *rcpt_status_name(enum rcpt_status s);

#endif
