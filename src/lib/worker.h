/* worker — a small thread pool for blocking work (crypt(3), fsync,
 * SQLite writes) whose results come back on the event loop.
 *
 * fn(arg) runs on a worker thread; afterwards done(arg) runs on the loop
 * thread. The submitter owns arg throughout. workers_free() finishes every
 * submitted job (fn and done) before it returns. */
#ifndef LIB_WORKER_H
#define LIB_WORKER_H
#include <event2/event.h>

struct workers;

struct workers *workers_new(struct event_base *base, int nthreads);
void workers_submit(struct workers *w, void (*fn)(void *arg), void (*done)(void *arg), void *arg);
void workers_free(struct workers **w);

#endif
