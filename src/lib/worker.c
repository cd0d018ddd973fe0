/* worker — see worker.h. Jobs are FIFO; completions go back to the loop
 * through a loopq. */
#include "lib/worker.h"
#include "lib/loopq.h"
#include "lib/xalloc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct job {
	void (*fn)(void *);
	void (*done)(void *);
	void *arg;
	struct job *next;
};

struct workers {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *todo, *todo_tail;
	bool stop;
	int nthreads;
	pthread_t *threads;
	struct loopq *done;
};

static void *thread_main(void *arg)
{
	struct workers *w = arg;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->todo == NULL && !w->stop)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->todo == NULL && w->stop)
			break;
		struct job *j = w->todo;
		w->todo = j->next;
		if (w->todo == NULL)
			w->todo_tail = NULL;
		pthread_mutex_unlock(&w->mu);
		j->fn(j->arg);
		loopq_post(w->done, j);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void run_done(void *item)
{
	struct job *j = item;
	if (j->done)
		j->done(j->arg);
	free(j);
}

struct workers *workers_new(struct event_base *base, int nthreads)
{
	struct workers *w = xcalloc(1, sizeof(*w));
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->done = loopq_new(base, run_done);
	w->nthreads = nthreads;
	w->threads = xcalloc((size_t)nthreads, sizeof(pthread_t));
	for (int i = 0; i < nthreads; i++)
		if (pthread_create(&w->threads[i], NULL, thread_main, w) != 0)
			fatal("pthread_create failed");
	return w;
}

void workers_submit(struct workers *w, void (*fn)(void *), void (*done)(void *), void *arg)
{
	struct job *j = xcalloc(1, sizeof(*j));
	j->fn = fn;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&w->mu);
	if (w->todo_tail)
		w->todo_tail->next = j;
	else
		w->todo = j;
	w->todo_tail = j;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void workers_free(struct workers **wp)
{
	struct workers *w = *wp;
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	for (int i = 0; i < w->nthreads; i++)
		pthread_join(w->threads[i], NULL);
	loopq_free(&w->done);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w->threads);
	free(w);
	*wp = NULL;
}
