/* committer — group commit of accepted messages into queue/pending.
 *
 * A session finishes its incoming file (queue_writer_finish) and hands it
 * here; committer threads fsync each file, rename it into queue/pending,
 * fsync the pending directory once per round and then call the session's
 * callback on the loop thread. Only after that callback may the session
 * say 250. Several threads run rounds in parallel so the file system can
 * merge their journal commits. */
#ifndef QUEUE_COMMITTER_H
#define QUEUE_COMMITTER_H
#include <event2/event.h>
#include "queue/queue.h"

struct committer;

/* on_committed(arg, id) is called on a committer thread for each message
 * that reached queue/pending (the router hook); may be NULL. */
struct committer *committer_new(struct event_base *base, const char *data_dir, int nthreads,
                                void (*on_committed)(void *arg, const char *id), void *arg);
/* Takes over w (its fd). cb runs on the loop thread: result 0 = durable
 * in pending, -1 = failed (the file is gone; reply 451). */
void committer_submit(struct committer *c, struct queue_writer *w,
                      void (*cb)(void *arg, int result, const char *error), void *arg);
/* Finishes every submitted job (callbacks included), then stops. */
void committer_free(struct committer **c);

#endif
