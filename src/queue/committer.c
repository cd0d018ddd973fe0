/* committer — see committer.h. Threads: N committer threads plus the loop
 * thread for callbacks. Durability contract: a callback with result 0 is
 * issued only after fsync(file), close() checked, rename() into pending
 * and fsync(pending dir) all succeeded. Callbacks reach the loop through
 * a loopq (lib/loopq.h). */
#include "queue/committer.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/loopq.h"
#include "lib/xalloc.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Most messages taken into one round (one directory fsync). */
#define COMMIT_BATCH_MAX 256

struct cjob {
	struct queue_writer w;
	void (*cb)(void *, int, const char *);
	void *arg;
	int result;
	const char *error;
	char errbuf[128];
	struct cjob *next;
};

struct committer {
	char *data_dir;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct cjob *todo, *todo_tail;
	bool stop;
	int nthreads;
	pthread_t *threads;
	struct loopq *done; /* callbacks back on the loop */
	void (*on_committed)(void *, const char *);
	void *hook_arg;
};

static void push(struct cjob **h, struct cjob **t, struct cjob *j)
{
	j->next = NULL;
	if (*t)
		(*t)->next = j;
	else
		*h = j;
	*t = j;
}

static void fail(struct cjob *j, const char *what, int err)
{
	j->result = -1;
	snprintf(j->errbuf, sizeof(j->errbuf), "%s: %s", what, strerror(err));
	j->error = j->errbuf;
}

static void run_round(struct committer *c, struct cjob *batch)
{
	char from[PATH_MAX], to[PATH_MAX], dir[PATH_MAX];
	queue_path(dir, sizeof(dir), c->data_dir, "pending", NULL);
	bool any_renamed = false;
	for (struct cjob *j = batch; j; j = j->next) {
		j->result = 0;
		queue_path(from, sizeof(from), c->data_dir, "incoming", j->w.id);
		queue_path(to, sizeof(to), c->data_dir, "pending", j->w.id);
		if (fsync(j->w.fd) < 0) {
			fail(j, "fsync", errno);
			close(j->w.fd);
			unlink(from);
			continue;
		}
		if (close(j->w.fd) < 0) {
			fail(j, "close", errno);
			unlink(from);
			continue;
		}
		j->w.fd = -1;
		if (rename(from, to) < 0) {
			const char *err;
			if (errno == ENOENT && fsutil_mkdir_p(dir, 0700, &err) == 0 && rename(from, to) == 0) {
				/* pending was renamed away: recreated on demand */
			} else {
				fail(j, "rename into pending", errno);
				unlink(from);
				continue;
			}
		}
		any_renamed = true;
	}
	if (any_renamed && fsutil_fsync_dir(dir) < 0) {
		int e = errno;
		/* The renames may not be durable: report failure for all (the
		 * client retries; a duplicate is better than a loss). */
		for (struct cjob *j = batch; j; j = j->next)
			if (j->result == 0)
				fail(j, "fsync(queue/pending)", e);
	}
	if (c->on_committed)
		for (struct cjob *j = batch; j; j = j->next)
			if (j->result == 0)
				c->on_committed(c->hook_arg, j->w.id);
}

static void *thread_main(void *arg)
{
	struct committer *c = arg;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (c->todo == NULL && !c->stop)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->todo == NULL)
			break;
		/* take up to COMMIT_BATCH_MAX jobs */
		struct cjob *batch = c->todo, *last = batch;
		int n = 1;
		while (last->next && n < COMMIT_BATCH_MAX) {
			last = last->next;
			n++;
		}
		c->todo = last->next;
		if (c->todo == NULL)
			c->todo_tail = NULL;
		last->next = NULL;
		pthread_mutex_unlock(&c->mu);

		run_round(c, batch);

		while (batch) {
			struct cjob *j = batch;
			batch = j->next;
			loopq_post(c->done, j);
		}
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static void run_done(void *item)
{
	struct cjob *j = item;
	j->cb(j->arg, j->result, j->error);
	free(j);
}

struct committer *committer_new(struct event_base *base, const char *data_dir, int nthreads,
                                void (*on_committed)(void *, const char *), void *arg)
{
	struct committer *c = xcalloc(1, sizeof(*c));
	c->data_dir = xstrdup(data_dir);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	c->on_committed = on_committed;
	c->hook_arg = arg;
	c->done = loopq_new(base, run_done);
	c->nthreads = nthreads;
	c->threads = xcalloc((size_t)nthreads, sizeof(pthread_t));
	for (int i = 0; i < nthreads; i++)
		if (pthread_create(&c->threads[i], NULL, thread_main, c) != 0)
			fatal("pthread_create failed");
	return c;
}

void committer_submit(struct committer *c, struct queue_writer *w,
                      void (*cb)(void *, int, const char *), void *arg)
{
	struct cjob *j = xcalloc(1, sizeof(*j));
	j->w = *w;
	w->fd = -1;
	j->cb = cb;
	j->arg = arg;
	pthread_mutex_lock(&c->mu);
	push(&c->todo, &c->todo_tail, j);
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

void committer_free(struct committer **cp)
{
	struct committer *c = *cp;
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	for (int i = 0; i < c->nthreads; i++)
		pthread_join(c->threads[i], NULL);
	loopq_free(&c->done);
	free(c->threads);
	free(c->data_dir);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
	*cp = NULL;
}
