/* index — the in-memory index of the queue (pending, outbox, hold): one
 * small entry per message with what the console filters, sorts and groups
 * by. The console never reads the queue files to answer: listings are
 * paged from this index and summaries are computed from it.
 *
 * Thread-safe (one mutex): the router, the MTA and console commands (on
 * worker threads) update it concurrently. Built at start by scanning the
 * envelopes of the queue folders (queue_index_load, on a background thread
 * for the daemon, so the server starts at once; queries say "loading" with
 * the progress so far until it is complete). The CLI builds its own copy
 * the same way when the daemon is not running (offline mode). */
#ifndef QUEUE_INDEX_H
#define QUEUE_INDEX_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "queue/queue.h"

struct queue_index;

struct queue_index *queue_index_new(const char *data_dir);
void queue_index_free(struct queue_index **ix);
/* Scans pending, outbox and hold (envelopes and .st files). progress may
 * be NULL; it is called now and then with (done, total). Blocking. */
int queue_index_load(struct queue_index *ix, void (*progress)(void *arg, size_t done, size_t total),
                     void *arg);

/* Mutations (called by the router, the MTA and the console). */
/* Adds or replaces the entry for env->id in folder; size is the file size. */
void queue_index_put(struct queue_index *ix, const char *folder, const struct queue_env *env,
                     uint64_t size);
/* Reads folder/<id> (envelope only) and puts it; for files that appeared. */
int queue_index_put_file(struct queue_index *ix, const char *folder, const char *id);
void queue_index_remove(struct queue_index *ix, const char *id);
void queue_index_move(struct queue_index *ix, const char *id, const char *folder);
/* After a delivery attempt: attempts so far, next attempt time, the last
 * reply or error (one line) and recipients still to do. */
void queue_index_set_attempt(struct queue_index *ix, const char *id, int attempts, int64_t next_attempt,
                             const char *last_error, int rcpt_left);

/* Queries: see the console (admin/queue_cmd.c) for filters, sorting,
 * paging and summaries; they are declared below by the index's owner. */

#endif
