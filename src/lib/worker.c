/* worker — see worker.h. Jobs are FIFO; completions are handed to the loop
 * through an eventfd. */
#include "lib/worker.h"
#include "lib/xalloc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

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
	struct job *done, *done_tail;
	bool stop;
	int nthreads;
	pthread_t *threads;
	int efd;
	struct event *ev;
};

static void push(struct job **head, struct job **tail, struct job *j)
{
	j->next = NULL;
	if (*tail)
		(*tail)->next = j;
	else
		*head = j;
	*tail = j;
}

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
		pthread_mutex_lock(&w->mu);
		push(&w->done, &w->done_tail, j);
		uint64_t one = 1;
		if (write(w->efd, &one, sizeof(one)) < 0) {
			/* eventfd counter cannot overflow in practice */
		}
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void run_done(struct workers *w)
{
	pthread_mutex_lock(&w->mu);
	struct job *list = w->done;
	w->done = w->done_tail = NULL;
	pthread_mutex_unlock(&w->mu);
	while (list) {
		struct job *j = list;
		list = j->next;
		if (j->done)
			j->done(j->arg);
		free(j);
	}
}

static void on_efd(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;
	(void)what;
	if (read(fd, &n, sizeof(n)) < 0) {
		/* spurious wakeup */
	}
	run_done(arg);
}

struct workers *workers_new(struct event_base *base, int nthreads)
{
	struct workers *w = xcalloc(1, sizeof(*w));
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->efd < 0)
		fatal("eventfd: %m");
	w->ev = event_new(base, w->efd, EV_READ | EV_PERSIST, on_efd, w);
	event_add(w->ev, NULL);
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
	push(&w->todo, &w->todo_tail, j);
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
	run_done(w);
	event_free(w->ev);
	close(w->efd);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w->threads);
	free(w);
	*wp = NULL;
}
