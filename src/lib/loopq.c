/* loopq — see loopq.h. A mutex-protected FIFO of nodes and one eventfd. */
#include "lib/loopq.h"
#include "lib/xalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct node {
	void *item;
	struct node *next;
};

struct loopq {
	pthread_mutex_t mu;
	struct node *head, *tail;
	void (*run)(void *);
	int efd;
	struct event *ev;
};

void loopq_drain(struct loopq *q)
{
	pthread_mutex_lock(&q->mu);
	struct node *list = q->head;
	q->head = q->tail = NULL;
	pthread_mutex_unlock(&q->mu);
	while (list) {
		struct node *n = list;
		list = n->next;
		q->run(n->item);
		free(n);
	}
}

static void on_efd(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;
	(void)what;
	if (read(fd, &n, sizeof(n)) < 0) {
		/* spurious wakeup */
	}
	loopq_drain(arg);
}

struct loopq *loopq_new(struct event_base *base, void (*run)(void *item))
{
	struct loopq *q = xcalloc(1, sizeof(*q));
	pthread_mutex_init(&q->mu, NULL);
	q->run = run;
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->efd < 0)
		fatal("eventfd: %s", strerror(errno));
	q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, on_efd, q);
	event_add(q->ev, NULL);
	return q;
}

void loopq_post(struct loopq *q, void *item)
{
	struct node *n = xmalloc(sizeof(*n));
	n->item = item;
	n->next = NULL;
	pthread_mutex_lock(&q->mu);
	if (q->tail)
		q->tail->next = n;
	else
		q->head = n;
	q->tail = n;
	pthread_mutex_unlock(&q->mu);
	uint64_t one = 1;
	if (write(q->efd, &one, sizeof(one)) < 0) {
		/* the eventfd counter cannot overflow in practice */
	}
}

void loopq_free(struct loopq **qp)
{
	struct loopq *q = *qp;
	if (q == NULL)
		return;
	loopq_drain(q);
	event_free(q->ev);
	close(q->efd);
	pthread_mutex_destroy(&q->mu);
	free(q);
	*qp = NULL;
}
