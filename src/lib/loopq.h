/* loopq — hands finished work from any thread back to the event loop:
 * loopq_post() queues an item (thread-safe) and wakes the loop through an
 * eventfd; on the loop, run(item) is called for each item in post order.
 * Used by the worker pool and the committer. */
#ifndef LIB_LOOPQ_H
#define LIB_LOOPQ_H
#include <event2/event.h>

struct loopq;

struct loopq *loopq_new(struct event_base *base, void (*run)(void *item));
void loopq_post(struct loopq *q, void *item);
/* Runs everything posted so far, now (on the loop thread or at shutdown). */
void loopq_drain(struct loopq *q);
/* Drains, then frees. */
void loopq_free(struct loopq **q);

#endif
