/* mta — see mta.h. Outbound delivery of queue/outbox.
 *
 * Role: the event loop of `posthorn serve` (scheduling, DNS, SMTP
 * client), with its own worker pool for the blocking parts (reading a
 * queue file, saving state, writing DSNs, removing or holding files).
 *
 * Pieces:
 *   schedule  every outbox message known to the MTA has an entry (id,
 *             next attempt) in a hash table and, unless busy or claimed by
 *             the console, in a min-heap by next attempt. Both are guarded
 *             by m->mu because mta_notify/claim/unclaim/retry come from
 *             other threads; everything else is loop-only.
 *   attempt   due entries are loaded on a worker (file, .st state, the
 *             dot-stuffed body), their open recipients are grouped by
 *             destination (recipient domain, or the smarthost) and each
 *             group becomes a delivery queued on its destination.
 *   dest      a destination resolves its route (dns.c), runs up to
 *             max_per_destination connections (client.c), reuses idle
 *             ones, and is marked dead for a while when no server of it
 *             could be reached, so a backlog for a dead domain is
 *             deferred at once instead of timing out message by message.
 *   finish    when every delivery of a message is back, a worker writes
 *             the DSN (failed recipients), the delay notice, the state
 *             file, and removes the message (all done) or holds it
 *             (undeliverable bounce); then the loop updates the queue
 *             index, logs, and puts the entry back in the heap.
 *
 * Durability: a recipient is recorded as failed in <id>.st only after its
 * DSN is durable in queue/pending; the outbox file and its .st are
 * removed only after that, too. A crash can repeat a delivery or a DSN,
 * never lose one. Messages from <> are never bounced: when such a
 * message ends with failed recipients it is moved to queue/hold.
 * On error: local trouble (cannot write a DSN or the state) keeps the
 * recipients open and the message is retried; a queue file that cannot
 * be parsed is retried at the longest back-off step with an event. */
#include "mta/mta.h"
#include "conf/config.h"
#include "daemon/daemon.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/strbuf.h"
#include "lib/worker.h"
#include "lib/xalloc.h"
#include "mail/address.h"
#include "mail/dsn.h"
#include "mail/message.h"
#include "mta/bounce.h"
#include "mta/client.h"
#include "mta/dns.h"
#include "proto/smtp_reply.h"
#include "queue/index.h"
#include "queue/queue.h"
#include "queue/router.h"
#include "queue/state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Worker threads of the MTA (file reads, fsyncs, DSN writes). */
#define MTA_WORKERS 4
/* Messages between "due" and "finished" at once, and the bytes of their
 * files: bounds memory whatever the queue size (Postfix's active queue
 * holds 20,000 entries, but not the bodies). */
#define MTA_ACTIVE_MAX 1000
#define MTA_ACTIVE_BYTES (256ULL * 1024 * 1024)
/* An idle connection is kept this long for the next message to the same
 * destination (Postfix smtp_connection_cache_time_limit is 2 s). */
#define MTA_IDLE_SECS 5
/* Transactions per connection before we open a fresh one. */
#define MTA_REUSE_MAX 100
/* TCP connect timeout (Postfix smtp_connect_timeout). */
#define MTA_CONNECT_TIMEOUT 30
/* A resolved route is reused this long (libunbound caches by TTL too). */
#define MTA_ROUTE_SECS 60
/* A destination whose servers could not be reached is not tried again
 * for this long (capped by the first retry step). */
#define MTA_DEAD_SECS 300
/* Unused destinations are swept this often. */
#define MTA_SWEEP_SECS 10
/* The timer never sleeps longer (clock changes, reloads). */
#define MTA_TIMER_MAX_SECS 60

/* --- the schedule (guarded by m->mu) ------------------------------------ */

struct qent {
	char id[QUEUE_ID_LEN + 1];
	int64_t next;     /* next attempt, unix seconds */
	size_t hpos;      /* index in the heap, or HPOS_NONE */
	bool busy;        /* an attempt is in flight */
	bool claimed;     /* the console has it */
	bool renotified;  /* mta_notify while busy: try again at once */
	bool claim_wanted; /* mta_claim waits: withdraw it if it only waits */
	struct qent *hnext;
};
#define HPOS_NONE ((size_t)-1)

struct qtable {
	struct qent **b;
	size_t nb, n;
};

/* --- the loop-only side -------------------------------------------------- */

struct dest;

/* Per recipient, this attempt. */
struct rres {
	bool tried;
	bool new_failed;  /* failed in this attempt: needs a DSN */
	bool deferred;    /* deferred in this attempt */
	char status[16];
	char *remote;     /* host name of the server that answered, or NULL */
	char *reason;     /* our own words (DNS, expiry) for the DSN, or NULL */
};

enum am_phase { AM_LOADING, AM_DELIVERING, AM_FINISHING };

struct amsg {
	struct mta *m;
	char id[QUEUE_ID_LEN + 1];
	enum am_phase phase;
	struct dlv **dlvs; /* this attempt's deliveries (NULL once settled) */
	size_t ndlvs;
	/* from the load job */
	int load_rc;      /* 1 ok, 0 gone, -1 error */
	char *load_err;
	struct queue_env env;
	struct queue_state st;
	char *hdr;        /* the message's header block (for DSNs) */
	size_t hdr_len;
	struct strbuf body; /* dot-stuffed for DATA */
	uint64_t size;      /* message bytes (SIZE=) */
	uint64_t file_size;
	bool body_8bit;
	/* this attempt */
	struct rres *res;
	int ndlv_open;
	int64_t started;
	bool aborted;     /* stop: some deliveries were not attempted */
	/* finish job in/out */
	bool fin_remove, fin_hold, fin_warn, fin_dsn;
	int fin_rc;
	char *fin_err;
	char dsn_id[QUEUE_ID_LEN + 1], warn_id[QUEUE_ID_LEN + 1];
	int rcpt_left;
	int64_t next;
	int64_t next_if_error; /* next attempt when the finish job fails */
	int64_t warn_until;    /* "Will-Retry-Until" of a delay notice */
	uint64_t read_limit;   /* largest queue file we read */
	struct amsg *prev, *next_am;
};

struct dlv {
	struct amsg *am;
	struct dest *dest;
	size_t *ri;       /* indices into am->st.r */
	size_t n;
	struct smtpc_txn txn;
	struct smtpc_rcpt *rc;
	size_t slot;      /* index in am->dlvs */
	bool in_session;  /* handed to a connection */
	struct dlv *next;
};

struct sess {
	struct smtpc *c;
	struct dest *dest;
	struct dlv *cur;
	bool idle;
	struct sess *prev, *next;
};

struct dest {
	char *key;        /* "example.com", "[smarthost]" */
	char *lookup;     /* name to resolve */
	bool mx;          /* MX lookup (else A/AAAA: smarthost) */
	bool smarthost;
	int port;
	struct dns_route *route;
	int64_t route_time;
	struct dns_lookup *resolving;
	int64_t dead_until;
	char *dead_reason;
	bool dead_perm;   /* the dead mark is a permanent DNS answer */
	char dead_status[16];
	struct dlv *wait_head, *wait_tail;
	size_t nwait;
	struct sess *sessions;
	int nsess;
	struct dest *next;
};

struct mta_conf {
	int64_t sched[CONFIG_MAX_DURLIST];
	int nsched;
	int64_t lifetime, delay_warning;
	int cmd_timeout;
	int max_per_dest, max_outbound;
	int relay_port;
	uint64_t max_message_size;
	char *sh_host;    /* smarthost or NULL */
	int sh_port;
	struct strv sh_domains;
	char *sh_user, *sh_pass;
};

struct mta {
	struct daemon *d;
	struct queue_index *ix;
	struct event_base *base;
	char *data_dir;
	char *hostname;
	pthread_t loop_thread;
	struct workers *workers;
	struct dns *dns;
	struct mta_conf conf;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct qtable tab;
	struct qent **heap;
	size_t nheap, capheap;
	bool flush_routes;  /* mta_retry asked to forget routes and dead marks */
	bool stopping;      /* read under mu by other threads */

	int efd;
	struct event *wake_ev, *timer, *sweep;
	bool started, scanning;
	size_t nactive;
	uint64_t active_bytes;
	int nsess;
	struct amsg *active;
	struct dest *dests;
	struct mta_stats st;  /* counters (loop thread) */
};

static void schedule(struct mta *m);
static void dest_pump(struct mta *m, struct dest *d);
static void pump_all(struct mta *m);
static void am_finish(struct amsg *am);

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* --- hash table and heap (m->mu held) ----------------------------------- */

static size_t hash_id(const char *s)
{
	size_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static struct qent *tab_find(struct qtable *t, const char *id)
{
	if (t->nb == 0)
		return NULL;
	for (struct qent *e = t->b[hash_id(id) & (t->nb - 1)]; e; e = e->hnext)
		if (strcmp(e->id, id) == 0)
			return e;
	return NULL;
}

static void tab_add(struct qtable *t, struct qent *e)
{
	if (t->n + 1 > t->nb) {
		size_t nb = t->nb ? t->nb * 2 : 1024;
		struct qent **b = xcalloc(nb, sizeof(*b));
		for (size_t i = 0; i < t->nb; i++) {
			struct qent *x = t->b[i];
			while (x) {
				struct qent *nx = x->hnext;
				size_t h = hash_id(x->id) & (nb - 1);
				x->hnext = b[h];
				b[h] = x;
				x = nx;
			}
		}
		free(t->b);
		t->b = b;
		t->nb = nb;
	}
	size_t h = hash_id(e->id) & (t->nb - 1);
	e->hnext = t->b[h];
	t->b[h] = e;
	t->n++;
}

static void tab_del(struct qtable *t, struct qent *e)
{
	if (t->nb == 0)
		return;
	for (struct qent **pp = &t->b[hash_id(e->id) & (t->nb - 1)]; *pp; pp = &(*pp)->hnext)
		if (*pp == e) {
			*pp = e->hnext;
			t->n--;
			return;
		}
}

static bool heap_less(const struct qent *a, const struct qent *b)
{
	if (a->next != b->next)
		return a->next < b->next;
	return strcmp(a->id, b->id) < 0; /* ids are time-ordered: oldest first */
}

static void heap_set(struct mta *m, size_t i, struct qent *e)
{
	m->heap[i] = e;
	e->hpos = i;
}

static void heap_up(struct mta *m, size_t i)
{
	struct qent *e = m->heap[i];
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!heap_less(e, m->heap[p]))
			break;
		heap_set(m, i, m->heap[p]);
		i = p;
	}
	heap_set(m, i, e);
}

static void heap_down(struct mta *m, size_t i)
{
	struct qent *e = m->heap[i];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, s = i;
		const struct qent *best = e;
		if (l < m->nheap && heap_less(m->heap[l], best)) {
			s = l;
			best = m->heap[l];
		}
		if (r < m->nheap && heap_less(m->heap[r], best))
			s = r;
		if (s == i)
			break;
		heap_set(m, i, m->heap[s]);
		i = s;
	}
	heap_set(m, i, e);
}

static void heap_push(struct mta *m, struct qent *e)
{
	if (e->hpos != HPOS_NONE)
		return;
	if (m->nheap == m->capheap) {
		m->capheap = m->capheap ? m->capheap * 2 : 1024;
		m->heap = xreallocarray(m->heap, m->capheap, sizeof(*m->heap));
	}
	heap_set(m, m->nheap++, e);
	heap_up(m, e->hpos);
}

static void heap_remove(struct mta *m, struct qent *e)
{
	size_t i = e->hpos;
	if (i == HPOS_NONE)
		return;
	e->hpos = HPOS_NONE;
	struct qent *last = m->heap[--m->nheap];
	if (i == m->nheap)
		return;
	heap_set(m, i, last);
	heap_up(m, i);
	heap_down(m, last->hpos);
}

static void heap_update(struct mta *m, struct qent *e)
{
	if (e->hpos == HPOS_NONE)
		return;
	heap_up(m, e->hpos);
	heap_down(m, e->hpos);
}

static struct qent *ent_new(const char *id, int64_t next)
{
	struct qent *e = xcalloc(1, sizeof(*e));
	memcpy(e->id, id, strnlen(id, QUEUE_ID_LEN)); /* callers checked the length */
	e->next = next;
	e->hpos = HPOS_NONE;
	return e;
}

static void ent_forget(struct mta *m, struct qent *e)
{
	heap_remove(m, e);
	tab_del(&m->tab, e);
	free(e);
}

static void wake(struct mta *m)
{
	uint64_t one = 1;
	if (write(m->efd, &one, sizeof(one)) < 0) {
		/* the counter cannot overflow in practice */
	}
}

/* --- configuration -------------------------------------------------------- */

static void conf_free(struct mta_conf *c)
{
	free(c->sh_host);
	strv_free(&c->sh_domains);
	free(c->sh_user);
	if (c->sh_pass) {
		explicit_bzero(c->sh_pass, strlen(c->sh_pass));
		free(c->sh_pass);
	}
	memset(c, 0, sizeof(*c));
}

/* Reads the first line of the password file; refuses files others may
 * read. */
static char *read_password(const char *path, const char **error_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		*error_r = strerror(errno);
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		*error_r = "not a regular file";
		return NULL;
	}
	if (st.st_mode & (S_IRWXO | S_IWGRP)) {
		close(fd);
		*error_r = "readable or writable by others (chmod 600 it)";
		return NULL;
	}
	char buf[1024];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0) {
		*error_r = strerror(errno);
		return NULL;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (buf[0] == '\0') {
		*error_r = "empty";
		return NULL;
	}
	char *p = xstrdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return p;
}

/* "host", "host:port", "[host]:port", "[v6]:port". */
static int parse_smarthost(const char *s, char **host_r, int *port_r)
{
	char tmp[300];
	if (strlen(s) >= sizeof(tmp))
		return -1;
	snprintf(tmp, sizeof(tmp), "%s", s);
	char *host = tmp, *port = NULL;
	if (tmp[0] == '[') {
		char *rb = strchr(tmp, ']');
		if (rb == NULL)
			return -1;
		*rb = '\0';
		host = tmp + 1;
		if (rb[1] == ':')
			port = rb + 2;
		else if (rb[1] != '\0')
			return -1;
	} else {
		char *colon = strchr(tmp, ':');
		if (colon && strchr(colon + 1, ':') == NULL) {
			*colon = '\0';
			port = colon + 1;
		}
	}
	int p = 25;
	if (port) {
		char *end;
		long v = strtol(port, &end, 10);
		if (*port == '\0' || *end != '\0' || v < 1 || v > 65535)
			return -1;
		p = (int)v;
	}
	if (*host == '\0')
		return -1;
	*host_r = xstrdup(host);
	*port_r = p;
	return 0;
}

static int conf_build(struct mta_conf *c, const struct config *cfg, char **error_r)
{
	memset(c, 0, sizeof(*c));
	c->nsched = config_parse_duration_list(cfg->retry_schedule, c->sched, CONFIG_MAX_DURLIST);
	if (c->nsched < 0) {
		*error_r = xasprintf("retry_schedule: bad value '%s'", cfg->retry_schedule);
		return -1;
	}
	c->lifetime = cfg->max_queue_lifetime;
	c->delay_warning = cfg->delay_warning;
	c->cmd_timeout = cfg->smtp_client_timeout > 0 ? (int)cfg->smtp_client_timeout : 300;
	c->max_per_dest = cfg->max_per_destination > 0 ? (int)cfg->max_per_destination : 1;
	c->max_outbound = cfg->max_outbound > 0 ? (int)cfg->max_outbound : 1;
	if (cfg->relay_port < 1 || cfg->relay_port > 65535) {
		*error_r = xasprintf("relay_port: %lld is not a TCP port", (long long)cfg->relay_port);
		return -1;
	}
	c->relay_port = (int)cfg->relay_port;
	c->max_message_size = cfg->max_message_size;
	if (cfg->smarthost && cfg->smarthost[0]) {
		if (parse_smarthost(cfg->smarthost, &c->sh_host, &c->sh_port) < 0) {
			*error_r = xasprintf("smarthost: bad value '%s' (want host, host:port or [host]:port)",
			                     cfg->smarthost);
			conf_free(c);
			return -1;
		}
		char *copy = xstrdup(cfg->smarthost_domains ? cfg->smarthost_domains : ""), *save = NULL;
		for (char *t = strtok_r(copy, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
			address_lower(t);
			strv_add(&c->sh_domains, t);
		}
		free(copy);
		if (cfg->smarthost_user && cfg->smarthost_user[0]) {
			const char *err;
			if (cfg->smarthost_password_file == NULL || cfg->smarthost_password_file[0] == '\0') {
				*error_r = xasprintf("smarthost_user is set but smarthost_password_file is not");
				conf_free(c);
				return -1;
			}
			c->sh_pass = read_password(cfg->smarthost_password_file, &err);
			if (c->sh_pass == NULL) {
				*error_r = xasprintf("smarthost_password_file %s: %s", cfg->smarthost_password_file, err);
				conf_free(c);
				return -1;
			}
			c->sh_user = xstrdup(cfg->smarthost_user);
		}
	}
	return 0;
}

/* The wait before attempt number `attempts + 1`. */
static int64_t backoff(const struct mta_conf *c, int attempts)
{
	int i = attempts - 1;
	if (i < 0)
		i = 0;
	if (i >= c->nsched)
		i = c->nsched - 1;
	return c->sched[i];
}

/* --- events --------------------------------------------------------------- */

static void ev_delivery(struct amsg *am, size_t j, const char *status, const char *host, const char *ip,
                        const char *reply)
{
	struct event e;
	event_begin(&e, "delivery", NULL);
	event_str(&e, "id", am->id);
	event_str(&e, "from", am->env.from);
	event_str(&e, "rcpt", am->st.r[j].addr);
	event_str(&e, "status", status);
	if (host)
		event_str(&e, "host", host);
	if (ip)
		event_str(&e, "ip", ip);
	if (reply)
		event_str(&e, "reply", reply);
	if (am->res[j].status[0])
		event_str(&e, "dsn", am->res[j].status);
	event_int(&e, "attempt", am->st.r[j].attempts);
	event_int(&e, "delay_ms", (now_s() - am->env.received) * 1000);
	event_end(&e);
}

/* --- results into the message --------------------------------------------- */

static void set_reply(struct rcpt_state *r, const char *host, const char *ip, const char *reply)
{
	free(r->host);
	r->host = NULL;
	if (host)
		r->host = ip ? xasprintf("%s[%s]", host, ip) : xstrdup(host);
	free(r->reply);
	r->reply = reply ? xstrdup(reply) : NULL;
}

/* One recipient's outcome of this attempt. */
static void rcpt_outcome(struct amsg *am, size_t j, enum smtpc_result res, const char *status, const char *host,
                         const char *ip, const char *reply, const char *reason)
{
	struct rcpt_state *r = &am->st.r[j];
	struct rres *x = &am->res[j];
	if (res == SMTPC_NONE)
		return; /* not attempted (stopping) */
	x->tried = true;
	r->attempts++;
	snprintf(x->status, sizeof(x->status), "%s", status ? status : "");
	free(x->remote);
	x->remote = host ? xstrdup(host) : NULL;
	free(x->reason);
	x->reason = reason ? xstrdup(reason) : NULL;
	set_reply(r, host, ip, reply ? reply : reason);
	switch (res) {
	case SMTPC_OK:
		am->m->st.sent++;
		r->status = RCPT_DELIVERED;
		ev_delivery(am, j, "sent", host, ip, reply);
		break;
	case SMTPC_PERM:
		am->m->st.bounced++;
		r->status = RCPT_FAILED;
		x->new_failed = true;
		ev_delivery(am, j, "bounced", host, ip, reply ? reply : reason);
		break;
	default:
		am->m->st.deferred++;
		r->status = RCPT_DEFERRED;
		x->deferred = true;
		ev_delivery(am, j, "deferred", host, ip, reply ? reply : reason);
		break;
	}
}

static void dlv_free(struct dlv *v)
{
	if (v->am->dlvs && v->slot < v->am->ndlvs)
		v->am->dlvs[v->slot] = NULL;
	if (v->rc) {
		smtpc_txn_clear(&v->txn);
		free(v->rc);
	}
	free(v->ri);
	free(v);
}

/* A delivery is back: take its results into the message. */
static void dlv_done(struct dlv *v)
{
	struct amsg *am = v->am;
	for (size_t k = 0; k < v->n; k++) {
		struct smtpc_rcpt *r = &v->rc[k];
		if (r->result == SMTPC_NONE)
			am->aborted = true;
		rcpt_outcome(am, v->ri[k], r->result, r->status, r->host, r->ip, r->reply, NULL);
	}
	dlv_free(v);
	if (--am->ndlv_open == 0)
		am_finish(am);
}

/* Settles a delivery without talking to anyone (DNS answer, dead
 * destination, stopping). res NONE = not attempted. */
static void dlv_local(struct dlv *v, enum smtpc_result res, const char *status, const char *reason)
{
	struct amsg *am = v->am;
	for (size_t k = 0; k < v->n; k++) {
		if (res == SMTPC_NONE)
			am->aborted = true;
		rcpt_outcome(am, v->ri[k], res, status, NULL, NULL, NULL, reason);
	}
	dlv_free(v);
	if (--am->ndlv_open == 0)
		am_finish(am);
}

/* --- destinations ---------------------------------------------------------- */

static struct dlv *dest_take(struct dest *d)
{
	struct dlv *v = d->wait_head;
	if (v) {
		d->wait_head = v->next;
		if (d->wait_head == NULL)
			d->wait_tail = NULL;
		d->nwait--;
		v->next = NULL;
	}
	return v;
}

static void dest_fail_waiting(struct dest *d, enum smtpc_result res, const char *status, const char *reason)
{
	struct dlv *v;
	while ((v = dest_take(d)) != NULL)
		dlv_local(v, res, status, reason);
}

static void dest_mark_dead(struct mta *m, struct dest *d, const char *reason, bool perm, const char *status)
{
	int64_t secs = MTA_DEAD_SECS;
	if (m->conf.nsched > 0 && m->conf.sched[0] < secs)
		secs = m->conf.sched[0];
	d->dead_until = now_s() + secs;
	free(d->dead_reason);
	d->dead_reason = xstrdup(reason);
	d->dead_perm = perm;
	snprintf(d->dead_status, sizeof(d->dead_status), "%s", status);
}

static struct dest *dest_get(struct mta *m, const char *key, const char *lookup, bool mx, int port, bool smarthost)
{
	for (struct dest *d = m->dests; d; d = d->next)
		if (strcmp(d->key, key) == 0)
			return d;
	struct dest *d = xcalloc(1, sizeof(*d));
	d->key = xstrdup(key);
	d->lookup = xstrdup(lookup);
	d->mx = mx;
	d->port = port;
	d->smarthost = smarthost;
	d->next = m->dests;
	m->dests = d;
	return d;
}

static void dest_free(struct dest *d)
{
	dns_lookup_cancel(d->resolving);
	dns_route_free(&d->route);
	free(d->dead_reason);
	free(d->key);
	free(d->lookup);
	free(d);
}

static void sess_unlink(struct mta *m, struct sess *s)
{
	struct dest *d = s->dest;
	if (s->prev)
		s->prev->next = s->next;
	else
		d->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	d->nsess--;
	m->nsess--;
	smtpc_free(&s->c);
	free(s);
}

static void on_txn_done(void *arg, struct smtpc *c, struct smtpc_txn *t);
static void on_sess_closed(void *arg, struct smtpc *c);
static const struct smtpc_callbacks sess_cb = { on_txn_done, on_sess_closed };

static void sess_start(struct mta *m, struct sess *s, struct dlv *v)
{
	s->cur = v;
	v->in_session = true;
	s->idle = false;
	smtpc_start_txn(s->c, &v->txn);
}

static void sess_new(struct mta *m, struct dest *d, struct dlv *v)
{
	struct smtpc_target tg[DNS_MX_HOSTS_MAX * DNS_ADDRS_MAX];
	size_t n = 0;
	for (size_t i = 0; i < d->route->nhost; i++)
		for (size_t j = 0; j < d->route->host[i].naddr && n < DNS_ADDRS_MAX; j++) {
			tg[n].host = d->route->host[i].name;
			tg[n].ip = d->route->host[i].addr[j];
			tg[n].port = d->port;
			n++;
		}
	struct smtpc_params p = {
		.helo = m->hostname,
		.connect_timeout = MTA_CONNECT_TIMEOUT < m->conf.cmd_timeout ? MTA_CONNECT_TIMEOUT : m->conf.cmd_timeout,
		.cmd_timeout = m->conf.cmd_timeout,
		.data_timeout = m->conf.cmd_timeout * 2,
		.auth_user = d->smarthost ? m->conf.sh_user : NULL,
		.auth_pass = d->smarthost ? m->conf.sh_pass : NULL,
	};
	struct sess *s = xcalloc(1, sizeof(*s));
	s->dest = d;
	s->c = smtpc_new(m->base, tg, n, &p, &sess_cb, s);
	s->next = d->sessions;
	if (d->sessions)
		d->sessions->prev = s;
	d->sessions = s;
	d->nsess++;
	m->nsess++;
	sess_start(m, s, v);
}

static void on_route(void *arg, struct dns_route *route);

static bool route_fresh(const struct dest *d)
{
	return d->route && now_s() - d->route_time < MTA_ROUTE_SECS;
}

static void dest_pump(struct mta *m, struct dest *d)
{
	if (m->stopping) {
		dest_fail_waiting(d, SMTPC_NONE, NULL, NULL);
		return;
	}
	while (d->wait_head) {
		if (d->dead_until > now_s()) {
			dest_fail_waiting(d, d->dead_perm ? SMTPC_PERM : SMTPC_TEMP, d->dead_status, d->dead_reason);
			return;
		}
		struct sess *idle = NULL;
		for (struct sess *s = d->sessions; s; s = s->next)
			if (s->idle && smtpc_usable(s->c)) {
				idle = s;
				break;
			}
		if (idle) {
			sess_start(m, idle, dest_take(d));
			continue;
		}
		if (d->nsess >= m->conf.max_per_dest || m->nsess >= m->conf.max_outbound)
			return;
		if (!route_fresh(d)) {
			if (d->resolving == NULL) {
				dns_route_free(&d->route);
				d->resolving = dns_route_lookup(m->dns, d->lookup, d->mx, on_route, d);
			}
			return;
		}
		sess_new(m, d, dest_take(d));
	}
}

static struct mta *the_mta; /* for callbacks that carry only a dest */

static void on_route(void *arg, struct dns_route *route)
{
	struct dest *d = arg;
	struct mta *m = the_mta;
	d->resolving = NULL;
	switch (route->status) {
	case DNS_OK:
		d->route = route;
		d->route_time = now_s();
		dest_pump(m, d);
		return;
	case DNS_NXDOMAIN:
	case DNS_NULLMX:
	case DNS_NOHOST:
		if (!d->smarthost) {
			const char *st = route->status == DNS_NXDOMAIN ? "5.1.2"
			                 : route->status == DNS_NULLMX ? "5.1.10"
			                                               : "5.4.4";
			dest_mark_dead(m, d, route->error, true, st);
			dest_fail_waiting(d, SMTPC_PERM, st, route->error);
			break;
		}
		/* a smarthost that does not resolve is our configuration's
		 * fault: defer, never bounce */
		/* fall through */
	default:
		dest_mark_dead(m, d, route->error ? route->error : "DNS lookup failed", false, "4.4.3");
		dest_fail_waiting(d, SMTPC_TEMP, "4.4.3", route->error ? route->error : "DNS lookup failed");
		break;
	}
	dns_route_free(&route);
}

static void on_txn_done(void *arg, struct smtpc *c, struct smtpc_txn *t)
{
	struct sess *s = arg;
	struct mta *m = the_mta;
	struct dest *d = s->dest;
	struct dlv *v = s->cur;
	s->cur = NULL;
	(void)t;
	if (!v->txn.reached && v->txn.error)
		dest_mark_dead(m, d, v->txn.error, false, "4.4.1");
	dlv_done(v);
	if (d->dead_until > now_s())
		dest_fail_waiting(d, d->dead_perm ? SMTPC_PERM : SMTPC_TEMP, d->dead_status, d->dead_reason);
	if (!smtpc_usable(c) || m->stopping || smtpc_txn_count(c) >= MTA_REUSE_MAX) {
		if (smtpc_usable(c)) {
			s->idle = true;
			smtpc_quit(c); /* closed() frees it */
		} else {
			sess_unlink(m, s);
		}
		pump_all(m);
		return;
	}
	struct dlv *next = dest_take(d);
	if (next) {
		sess_start(m, s, next);
		return;
	}
	s->idle = true;
	smtpc_idle(c, MTA_IDLE_SECS);
	pump_all(m);
}

static void on_sess_closed(void *arg, struct smtpc *c)
{
	struct sess *s = arg;
	struct mta *m = the_mta;
	(void)c;
	if (s->cur)
		panic("mta: session closed during a transaction");
	sess_unlink(m, s);
	pump_all(m);
}

static void pump_all(struct mta *m)
{
	for (struct dest *d = m->dests; d; d = d->next)
		if (d->wait_head)
			dest_pump(m, d);
}

/* Frees destinations nobody uses. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct mta *m = arg;
	(void)fd;
	(void)what;
	int64_t now = now_s();
	for (struct dest **pp = &m->dests; *pp;) {
		struct dest *d = *pp;
		if (d->sessions == NULL && d->wait_head == NULL && d->resolving == NULL && d->dead_until <= now &&
		    !route_fresh(d)) {
			*pp = d->next;
			dest_free(d);
			continue;
		}
		pp = &d->next;
	}
}

/* --- routing recipients ---------------------------------------------------- */

static bool smarthost_for(const struct mta_conf *c, const char *domain)
{
	if (c->sh_host == NULL)
		return false;
	if (c->sh_domains.n == 0)
		return true;
	size_t dl = strlen(domain);
	for (size_t i = 0; i < c->sh_domains.n; i++) {
		const char *x = c->sh_domains.v[i];
		if (x[0] == '.') {
			size_t xl = strlen(x);
			if (dl > xl && strcmp(domain + dl - xl, x) == 0)
				return true;
			if (strcmp(domain, x + 1) == 0)
				return true;
		} else if (strcmp(domain, x) == 0) {
			return true;
		}
	}
	return false;
}

/* The destination of a recipient, or NULL with *why for an address we
 * cannot route at all. */
static struct dest *route_rcpt(struct mta *m, const char *addr, const char **why)
{
	const char *at = strrchr(addr, '@');
	if (at == NULL || at[1] == '\0') {
		*why = "5.1.3 recipient address has no domain";
		return NULL;
	}
	char domain[ADDRESS_DOMAIN_MAX + 8];
	snprintf(domain, sizeof(domain), "%s", at + 1);
	address_lower(domain);
	if (smarthost_for(&m->conf, domain)) {
		char key[300];
		snprintf(key, sizeof(key), "[smarthost]%s:%d", m->conf.sh_host, m->conf.sh_port);
		return dest_get(m, key, m->conf.sh_host, false, m->conf.sh_port, true);
	}
	if (domain[0] == '[') {
		/* address literal: [192.0.2.1] or [IPv6:2001:db8::1] */
		char lit[ADDRESS_DOMAIN_MAX + 8];
		size_t l = strlen(domain);
		if (l < 3 || domain[l - 1] != ']') {
			*why = "5.1.2 malformed address literal";
			return NULL;
		}
		snprintf(lit, sizeof(lit), "%.*s", (int)(l - 2), domain + 1);
		const char *ip = strncasecmp(lit, "ipv6:", 5) == 0 ? lit + 5 : lit;
		return dest_get(m, domain, ip, true, m->conf.relay_port, false);
	}
	return dest_get(m, domain, domain, true, m->conf.relay_port, false);
}

/* --- loading a message ------------------------------------------------------ */

static void load_job(void *arg)
{
	struct amsg *am = arg;
	struct mta *m = am->m;
	char path[PATH_MAX];
	queue_path(path, sizeof(path), m->data_dir, "outbox", am->id);
	uint64_t limit = am->read_limit;
	char *data;
	size_t len;
	if (fsutil_read_file(path, (size_t)limit, &data, &len) < 0) {
		am->load_rc = errno == ENOENT ? 0 : -1;
		am->load_err = xasprintf("cannot read %s: %s", path, strerror(errno));
		return;
	}
	am->file_size = len;
	size_t off, blen;
	const char *err;
	int pr = queue_file_parse(data, len, &am->env, &off, &blen, &err);
	if (pr != 1) {
		am->load_rc = -1;
		am->load_err = xasprintf("%s: %s", path, err);
		free(data);
		return;
	}
	if (strcmp(am->env.id, am->id) != 0) {
		am->load_rc = -1;
		am->load_err = xasprintf("%s: envelope id %s does not match the file name", path, am->env.id);
		queue_env_free(&am->env);
		free(data);
		return;
	}
	if (queue_state_load(m->data_dir, "outbox", &am->env, &am->st, &err) < 0) {
		log_error("mta: %s: state file unusable (%s): starting afresh", am->id, err);
		memset(&am->st, 0, sizeof(am->st));
		am->st.n = am->env.rcpt.n;
		am->st.r = xcalloc(am->st.n ? am->st.n : 1, sizeof(*am->st.r));
		for (size_t i = 0; i < am->env.rcpt.n; i++)
			am->st.r[i].addr = xstrdup(am->env.rcpt.v[i]);
	}
	const char *msg = data + off;
	am->size = blen;
	am->body_8bit = message_has_8bit(msg, blen);
	am->hdr_len = message_header_len(msg, blen);
	if (am->hdr_len > DSN_HEADERS_MAX + 2)
		am->hdr_len = DSN_HEADERS_MAX + 2;
	am->hdr = xstrndup(msg, am->hdr_len);
	bool open = false;
	for (size_t i = 0; i < am->st.n; i++)
		if (am->st.r[i].status == RCPT_PENDING || am->st.r[i].status == RCPT_DEFERRED)
			open = true;
	if (open) {
		strbuf_init(&am->body, 0);
		smtp_dot_stuff(msg, blen, &am->body);
	}
	free(data);
	am->load_rc = 1;
}

static void am_free(struct amsg *am)
{
	if (am->res) {
		for (size_t i = 0; i < am->st.n; i++) {
			free(am->res[i].remote);
			free(am->res[i].reason);
		}
		free(am->res);
	}
	free(am->dlvs);
	queue_env_free(&am->env);
	queue_state_free(&am->st);
	strbuf_free(&am->body);
	free(am->hdr);
	free(am->load_err);
	free(am->fin_err);
	free(am);
}

static void active_unlink(struct mta *m, struct amsg *am)
{
	if (am->prev)
		am->prev->next_am = am->next_am;
	else
		m->active = am->next_am;
	if (am->next_am)
		am->next_am->prev = am->prev;
	am->prev = am->next_am = NULL;
	m->nactive--;
	m->active_bytes -= am->file_size;
}

/* The attempt of am is over: its entry goes back into the heap at next
 * (or is forgotten when the message left the outbox). */
static void release_entry(struct mta *m, const char *id, bool forget, int64_t next)
{
	pthread_mutex_lock(&m->mu);
	struct qent *e = tab_find(&m->tab, id);
	if (e) {
		e->busy = false;
		if (forget) {
			ent_forget(m, e);
		} else {
			e->next = e->renotified ? now_s() : next;
			e->renotified = false;
			/* a waiting mta_claim takes it (or puts it back on timeout) */
			if (!e->claimed && !e->claim_wanted)
				heap_push(m, e);
		}
	}
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
}

static void load_done(void *arg)
{
	struct amsg *am = arg;
	struct mta *m = am->m;
	m->active_bytes += am->file_size;
	pthread_mutex_lock(&m->mu);
	struct qent *qe = tab_find(&m->tab, am->id);
	bool wanted = qe && qe->claim_wanted;
	pthread_mutex_unlock(&m->mu);
	if (am->load_rc == 1 && wanted && !m->stopping) {
		/* the console wants it: give it up before anything happens */
		active_unlink(m, am);
		release_entry(m, am->id, false, now_s());
		am_free(am);
		schedule(m);
		return;
	}
	if (am->load_rc <= 0 || m->stopping) {
		if (am->load_rc < 0 && !m->stopping) {
			struct event e;
			event_begin(&e, "delivery-error", NULL);
			event_str(&e, "id", am->id);
			event_str(&e, "error", am->load_err);
			event_end(&e);
		}
		/* gone: the console removed it; error: retry at the longest step */
		int64_t next = m->stopping ? now_s() : now_s() + m->conf.sched[m->conf.nsched - 1];
		active_unlink(m, am);
		release_entry(m, am->id, am->load_rc == 0, next);
		am_free(am);
		schedule(m);
		return;
	}
	am->res = xcalloc(am->st.n ? am->st.n : 1, sizeof(*am->res));
	am->started = now_s();
	/* group the open recipients by destination */
	struct dlv **by = xcalloc(am->st.n ? am->st.n : 1, sizeof(*by));
	size_t nby = 0;
	for (size_t j = 0; j < am->st.n; j++) {
		struct rcpt_state *r = &am->st.r[j];
		if (r->status != RCPT_PENDING && r->status != RCPT_DEFERRED)
			continue;
		const char *why = NULL;
		struct dest *d = route_rcpt(m, r->addr, &why);
		if (d == NULL) {
			char st[16];
			snprintf(st, sizeof(st), "%.5s", why);
			rcpt_outcome(am, j, SMTPC_PERM, st, NULL, NULL, NULL, why + 6);
			continue;
		}
		struct dlv *v = NULL;
		for (size_t k = 0; k < nby; k++)
			if (by[k]->dest == d)
				v = by[k];
		if (v == NULL) {
			v = xcalloc(1, sizeof(*v));
			v->am = am;
			v->dest = d;
			v->ri = xcalloc(am->st.n, sizeof(size_t));
			by[nby++] = v;
		}
		v->ri[v->n++] = j;
	}
	am->ndlv_open = (int)nby + 1; /* +1: held until every delivery is queued */
	am->phase = AM_DELIVERING;
	am->dlvs = xcalloc(nby ? nby : 1, sizeof(*am->dlvs));
	am->ndlvs = nby;
	for (size_t k = 0; k < nby; k++) {
		struct dlv *v = by[k];
		v->slot = k;
		am->dlvs[k] = v;
		v->rc = xcalloc(v->n, sizeof(*v->rc));
		for (size_t i = 0; i < v->n; i++)
			v->rc[i].addr = am->st.r[v->ri[i]].addr;
		v->txn.from = am->env.from;
		v->txn.rcpt = v->rc;
		v->txn.nrcpt = v->n;
		v->txn.body = am->body.s;
		v->txn.body_len = am->body.len;
		v->txn.size = am->size;
		/* the content decides whether a 7-bit server can take it; the
		 * envelope's BODY=8BITMIME is passed on where it can be */
		v->txn.body_8bit = am->body_8bit;
		v->txn.declare_8bitmime = am->env.body_8bit;
		v->txn.smtputf8 = am->env.smtputf8;
		struct dest *d = v->dest;
		if (d->wait_tail)
			d->wait_tail->next = v;
		else
			d->wait_head = v;
		d->wait_tail = v;
		d->nwait++;
	}
	/* pumping may settle deliveries (a dead destination): take the
	 * destinations first, the dlv pointers may be gone afterwards */
	struct dest **ds = xcalloc(nby ? nby : 1, sizeof(*ds));
	for (size_t k = 0; k < nby; k++)
		ds[k] = by[k]->dest;
	for (size_t k = 0; k < nby; k++)
		dest_pump(m, ds[k]);
	free(ds);
	free(by);
	if (--am->ndlv_open == 0)
		am_finish(am);
}

/* --- finishing an attempt ---------------------------------------------------- */

/* Fills DSN rows for the recipients selected by want(). */
static size_t dsn_rows(struct amsg *am, struct dsn_rcpt *rows, bool failed)
{
	size_t n = 0;
	for (size_t j = 0; j < am->st.n; j++) {
		struct rres *x = &am->res[j];
		struct rcpt_state *r = &am->st.r[j];
		if (failed ? !x->new_failed : !(x->deferred && r->status == RCPT_DEFERRED))
			continue;
		struct dsn_rcpt *d = &rows[n++];
		memset(d, 0, sizeof(*d));
		d->addr = r->addr;
		d->action = failed ? DSN_ACTION_FAILED : DSN_ACTION_DELAYED;
		d->status = x->status[0] ? x->status : (failed ? "5.0.0" : "4.0.0");
		d->remote_mta = x->remote;
		/* a server's reply starts with its code; our own words do not */
		bool smtp = r->reply && strlen(r->reply) >= 4 && r->reply[0] >= '2' && r->reply[0] <= '5' &&
		            r->reply[3] == ' ' && x->remote != NULL;
		d->diagnostic = smtp ? r->reply : NULL;
		d->reason = x->reason ? x->reason : smtp ? NULL : r->reply;
		d->last_attempt = am->started;
	}
	return n;
}

static void move_to_hold(struct mta *m, struct amsg *am)
{
	char from[PATH_MAX], to[PATH_MAX], name[NAME_MAX + 1];
	const char *err;
	char dir[PATH_MAX];
	queue_path(dir, sizeof(dir), m->data_dir, "hold", NULL);
	if (!fsutil_is_dir(dir) && fsutil_mkdir_p(dir, 0700, &err) < 0) {
		am->fin_rc = -1;
		am->fin_err = xasprintf("cannot create %s: %s", dir, err);
		return;
	}
	/* the state first: the message file is what makes it "held" */
	xsnprintf(name, sizeof(name), "%s.st", am->id);
	queue_path(from, sizeof(from), m->data_dir, "outbox", name);
	queue_path(to, sizeof(to), m->data_dir, "hold", name);
	if (rename(from, to) < 0 && errno != ENOENT)
		log_warn("mta: %s: cannot move %s to hold: %s", am->id, name, strerror(errno));
	queue_path(from, sizeof(from), m->data_dir, "outbox", am->id);
	queue_path(to, sizeof(to), m->data_dir, "hold", am->id);
	if (rename(from, to) < 0) {
		am->fin_rc = -1;
		am->fin_err = xasprintf("cannot move %s to hold: %s", am->id, strerror(errno));
		return;
	}
	fsutil_fsync_dir(dir);
	queue_path(dir, sizeof(dir), m->data_dir, "outbox", NULL);
	fsutil_fsync_dir(dir);
}

static void finish_job(void *arg)
{
	struct amsg *am = arg;
	struct mta *m = am->m;
	const char *err;
	am->fin_rc = 0;
	struct dsn_rcpt *rows = xcalloc(am->st.n ? am->st.n : 1, sizeof(*rows));
	if (am->fin_dsn) {
		size_t n = dsn_rows(am, rows, true);
		if (n > 0 && mta_bounce_write(m->data_dir, m->hostname, &am->env, am->hdr, am->hdr_len, rows, n, 0,
		                              am->dsn_id, &err) < 0) {
			/* no DSN, no "failed": they stay open and fail again next time */
			log_error("mta: %s: cannot write the DSN: %s", am->id, err);
			am->dsn_id[0] = '\0';
			for (size_t j = 0; j < am->st.n; j++)
				if (am->res[j].new_failed) {
					am->res[j].new_failed = false;
					am->st.r[j].status = RCPT_DEFERRED;
					am->rcpt_left++;
				}
			am->fin_remove = am->fin_hold = false;
			if (am->next == 0)
				am->next = am->next_if_error;
			am->st.next_attempt = am->next;
		}
	}
	if (am->fin_warn) {
		size_t n = dsn_rows(am, rows, false);
		if (n > 0 && mta_bounce_write(m->data_dir, m->hostname, &am->env, am->hdr, am->hdr_len, rows, n,
		                              am->warn_until,
		                              am->warn_id, &err) < 0) {
			log_error("mta: %s: cannot write the delay notice: %s", am->id, err);
			am->warn_id[0] = '\0';
			am->st.warned = false; /* try again after the next attempt */
		}
	}
	free(rows);
	if (am->fin_hold) {
		if (queue_state_save(m->data_dir, "outbox", am->id, &am->st, &err) < 0)
			log_warn("mta: %s: cannot save state before hold: %s", am->id, err);
		move_to_hold(m, am);
		return;
	}
	if (am->fin_remove) {
		char path[PATH_MAX], dir[PATH_MAX];
		queue_path(path, sizeof(path), m->data_dir, "outbox", am->id);
		queue_path(dir, sizeof(dir), m->data_dir, "outbox", NULL);
		if (unlink(path) < 0 && errno != ENOENT) {
			am->fin_rc = -1;
			am->fin_err = xasprintf("unlink %s: %s", path, strerror(errno));
		}
		queue_state_remove(m->data_dir, "outbox", am->id);
		fsutil_fsync_dir(dir);
		return;
	}
	if (queue_state_save(m->data_dir, "outbox", am->id, &am->st, &err) < 0) {
		am->fin_rc = -1;
		am->fin_err = xasprintf("cannot save state: %s", err);
	}
}

static void finish_done(void *arg)
{
	struct amsg *am = arg;
	struct mta *m = am->m;
	struct event e;
	if (am->fin_rc < 0) {
		event_begin(&e, "delivery-error", NULL);
		event_str(&e, "id", am->id);
		event_str(&e, "error", am->fin_err);
		event_end(&e);
	}
	if (am->dsn_id[0] || am->warn_id[0]) {
		const char *ids[2] = { am->dsn_id, am->warn_id };
		for (int k = 0; k < 2; k++) {
			if (ids[k][0] == '\0')
				continue;
			m->st.dsn++;
			event_begin(&e, "dsn", NULL);
			event_str(&e, "id", ids[k]);
			event_str(&e, "orig_id", am->id);
			event_str(&e, "type", k == 0 ? "failed" : "delayed");
			event_str(&e, "to", am->env.from);
			event_end(&e);
			if (m->d && m->d->router)
				router_notify(m->d->router, ids[k]);
		}
	}
	bool gone = false;
	const char *last = NULL;
	for (size_t j = 0; j < am->st.n; j++)
		if (am->res[j].tried && am->st.r[j].reply)
			last = am->st.r[j].reply;
	if (am->fin_hold && am->fin_rc == 0) {
		m->st.held++;
		event_begin(&e, "held", NULL);
		event_str(&e, "id", am->id);
		event_str(&e, "reason", "undeliverable message from the null sender (a bounce): held, not bounced");
		event_end(&e);
		if (m->ix)
			queue_index_move(m->ix, am->id, "hold");
		gone = true;
	} else if (am->fin_remove && am->fin_rc == 0) {
		if (m->ix)
			queue_index_remove(m->ix, am->id);
		gone = true;
	} else {
		if (m->ix)
			queue_index_set_attempt(m->ix, am->id, am->st.attempts, am->next, last, am->rcpt_left);
	}
	int64_t next = am->next;
	if (next == 0 || am->fin_rc < 0)
		next = am->next_if_error;
	active_unlink(m, am);
	release_entry(m, am->id, gone, next);
	am_free(am);
	schedule(m);
}

/* Every delivery of am is back: decide what becomes of the message. */
static void am_finish(struct amsg *am)
{
	struct mta *m = am->m;
	int64_t now = now_s();
	am->phase = AM_FINISHING;
	bool tried = false;
	for (size_t j = 0; j < am->st.n; j++)
		if (am->res[j].tried)
			tried = true;
	bool expired = m->conf.lifetime > 0 && now - am->env.received >= m->conf.lifetime;
	if (expired && tried) {
		for (size_t j = 0; j < am->st.n; j++) {
			struct rcpt_state *r = &am->st.r[j];
			struct rres *x = &am->res[j];
			if (r->status != RCPT_DEFERRED || !x->deferred)
				continue;
			/* say how long in a unit that is not "0 hours", and keep
			 * the last reason the remote side gave */
			long long age = (long long)(now - am->env.received);
			char dur[48], why[512];
			if (age >= 3600)
				snprintf(dur, sizeof(dur), "%lld h %lld min", age / 3600, (age % 3600) / 60);
			else if (age >= 60)
				snprintf(dur, sizeof(dur), "%lld min", age / 60);
			else
				snprintf(dur, sizeof(dur), "%lld s", age);
			snprintf(why, sizeof(why), "message expired after %s in the queue%s%.400s", dur,
			         x->reason ? "; last error: " : "", x->reason ? x->reason : "");
			free(x->reason);
			x->reason = xstrdup(why);
			if (strncmp(x->status, "4.", 2) != 0)
				snprintf(x->status, sizeof(x->status), "4.4.7");
			r->status = RCPT_FAILED;
			x->deferred = false;
			x->new_failed = true;
			m->st.deferred--; /* counted as deferred above, it is a bounce */
			m->st.bounced++;
			ev_delivery(am, j, "bounced", x->remote, NULL, why);
		}
	}
	int left = 0, failed_total = 0;
	bool new_failed = false, deferred_now = false;
	for (size_t j = 0; j < am->st.n; j++) {
		enum rcpt_status s = am->st.r[j].status;
		if (s == RCPT_PENDING || s == RCPT_DEFERRED)
			left++;
		if (s == RCPT_FAILED)
			failed_total++;
		if (am->res[j].new_failed)
			new_failed = true;
		if (am->res[j].deferred && s == RCPT_DEFERRED)
			deferred_now = true;
	}
	bool null_sender = am->env.from[0] == '\0';
	if (tried) {
		am->st.attempts++;
		am->st.last_attempt = now;
		if (am->st.first_attempt == 0)
			am->st.first_attempt = now;
	}
	am->rcpt_left = left;
	if (left > 0)
		am->next = tried ? now + backoff(&m->conf, am->st.attempts) : now;
	else
		am->next = 0;
	am->st.next_attempt = am->next;
	am->next_if_error = now + backoff(&m->conf, am->st.attempts);
	am->warn_until = am->env.received + m->conf.lifetime;
	am->fin_dsn = new_failed && !null_sender;
	am->fin_warn = false;
	if (deferred_now && !null_sender && !am->st.warned && m->conf.delay_warning > 0 &&
	    now - am->env.received >= m->conf.delay_warning) {
		am->fin_warn = true;
		am->st.warned = true;
	}
	am->fin_hold = left == 0 && null_sender && failed_total > 0;
	am->fin_remove = left == 0 && !am->fin_hold;
	if (!tried && !am->fin_remove && !am->fin_hold && m->stopping) {
		/* nothing happened (stopped before any attempt): nothing to save */
		active_unlink(m, am);
		release_entry(m, am->id, false, now);
		am_free(am);
		return;
	}
	workers_submit(m->workers, finish_job, finish_done, am);
}

/* --- scheduling ------------------------------------------------------------- */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	schedule(arg);
}

static void schedule(struct mta *m)
{
	if (m->stopping || !m->started)
		return;
	int64_t now = now_s();
	struct strv due = { 0 };
	pthread_mutex_lock(&m->mu);
	while (m->nheap > 0 && m->heap[0]->next <= now && m->nactive + due.n < MTA_ACTIVE_MAX &&
	       (m->active_bytes < MTA_ACTIVE_BYTES || m->nactive + due.n == 0)) {
		struct qent *e = m->heap[0];
		heap_remove(m, e);
		e->busy = true;
		strv_add(&due, e->id);
	}
	int64_t wait = -1;
	if (m->nheap > 0 && m->nactive + due.n < MTA_ACTIVE_MAX) {
		wait = m->heap[0]->next - now;
		if (wait < 0)
			wait = 0;
		if (wait > MTA_TIMER_MAX_SECS)
			wait = MTA_TIMER_MAX_SECS;
	}
	pthread_mutex_unlock(&m->mu);
	for (size_t i = 0; i < due.n; i++) {
		struct amsg *am = xcalloc(1, sizeof(*am));
		am->m = m;
		memcpy(am->id, due.v[i], strnlen(due.v[i], QUEUE_ID_LEN));
		am->read_limit = (m->conf.max_message_size + QUEUE_ENVELOPE_MAX + 1024 * 1024) * 2;
		am->next_am = m->active;
		if (m->active)
			m->active->prev = am;
		m->active = am;
		m->nactive++;
		workers_submit(m->workers, load_job, load_done, am);
	}
	strv_free(&due);
	evtimer_del(m->timer);
	if (wait >= 0) {
		/* a busy loop is impossible: wait 0 only while capacity is left,
		 * and the entries it would take are loaded above */
		struct timeval tv = { (time_t)(wait ? wait : 1), 0 };
		if (wait == 0 && m->active_bytes >= MTA_ACTIVE_BYTES)
			tv.tv_sec = 1;
		evtimer_add(m->timer, &tv);
	}
}

/* The console wants am (mta_claim): when nothing of it is on the wire
 * yet (every delivery still waits for a connection or a route), take it
 * out of the destination queues untouched. Otherwise the claim waits for
 * the attempt to end. */
static void am_try_withdraw(struct mta *m, struct amsg *am)
{
	if (am->phase != AM_DELIVERING)
		return;
	for (size_t j = 0; j < am->st.n; j++)
		if (am->res[j].tried)
			return;
	for (size_t k = 0; k < am->ndlvs; k++)
		if (am->dlvs[k] && am->dlvs[k]->in_session)
			return;
	for (size_t k = 0; k < am->ndlvs; k++) {
		struct dlv *v = am->dlvs[k];
		if (v == NULL)
			continue;
		struct dest *d = v->dest;
		struct dlv *prev = NULL;
		for (struct dlv *x = d->wait_head; x; prev = x, x = x->next) {
			if (x != v)
				continue;
			if (prev)
				prev->next = x->next;
			else
				d->wait_head = x->next;
			if (d->wait_tail == x)
				d->wait_tail = prev;
			d->nwait--;
			break;
		}
		dlv_free(v);
	}
	active_unlink(m, am);
	release_entry(m, am->id, false, now_s());
	am_free(am);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct mta *m = arg;
	(void)what;
	uint64_t v;
	if (read(fd, &v, sizeof(v)) < 0) {
		/* spurious */
	}
	pthread_mutex_lock(&m->mu);
	bool flush = m->flush_routes;
	m->flush_routes = false;
	struct strv wanted = { 0 };
	for (struct amsg *am = m->active; am; am = am->next_am) {
		struct qent *e = tab_find(&m->tab, am->id);
		if (e && e->claim_wanted)
			strv_add(&wanted, am->id);
	}
	pthread_mutex_unlock(&m->mu);
	for (size_t i = 0; i < wanted.n; i++)
		for (struct amsg *am = m->active; am; am = am->next_am)
			if (strcmp(am->id, wanted.v[i]) == 0) {
				am_try_withdraw(m, am);
				break;
			}
	strv_free(&wanted);
	if (flush) {
		for (struct dest *d = m->dests; d; d = d->next) {
			d->dead_until = 0;
			dns_route_free(&d->route);
		}
	}
	schedule(m);
}

/* --- start-up scan (worker) -------------------------------------------------- */

/* next-attempt from <id>.st, or 0 (due now). */
static int64_t read_next_attempt(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[512];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	const char *p = strstr(buf, "\nnext-attempt ");
	return p ? strtoll(p + 14, NULL, 10) : 0;
}

static void scan_job(void *arg)
{
	struct mta *m = arg;
	char dir[PATH_MAX], path[PATH_MAX];
	queue_path(dir, sizeof(dir), m->data_dir, "outbox", NULL);
	DIR *dh = opendir(dir);
	if (dh == NULL) {
		const char *err;
		if (errno == ENOENT && fsutil_mkdir_p(dir, 0700, &err) < 0)
			log_error("mta: cannot create %s: %s", dir, err);
		return;
	}
	struct dirent *de;
	size_t n = 0, orphans = 0;
	int64_t now = now_s();
	while ((de = readdir(dh)) != NULL) {
		const char *name = de->d_name;
		if (name[0] == '.' || strstr(name, ".tmp-"))
			continue;
		size_t l = strlen(name);
		if (l > 3 && strcmp(name + l - 3, ".st") == 0) {
			/* a state whose message is gone (crash between the two
			 * unlinks): remove it */
			char id[NAME_MAX + 1];
			snprintf(id, sizeof(id), "%.*s", (int)(l - 3), name);
			xsnprintf(path, sizeof(path), "%s/%s", dir, id);
			if (access(path, F_OK) != 0 && errno == ENOENT) {
				xsnprintf(path, sizeof(path), "%s/%s", dir, name);
				if (unlink(path) == 0)
					orphans++;
			}
			continue;
		}
		if (l > QUEUE_ID_LEN || !queue_id_ok(name))
			continue;
		xsnprintf(path, sizeof(path), "%s/%s.st", dir, name);
		int64_t next = read_next_attempt(path);
		if (next < now)
			next = now;
		pthread_mutex_lock(&m->mu);
		if (m->stopping) {
			pthread_mutex_unlock(&m->mu);
			break;
		}
		if (tab_find(&m->tab, name) == NULL) {
			struct qent *e = ent_new(name, next);
			tab_add(&m->tab, e);
			heap_push(m, e);
			n++;
		}
		pthread_mutex_unlock(&m->mu);
	}
	closedir(dh);
	if (orphans)
		fsutil_fsync_dir(dir);
	struct event e;
	event_begin(&e, "outbox-scan", NULL);
	event_int(&e, "messages", (int64_t)n);
	event_int(&e, "orphan_states_removed", (int64_t)orphans);
	event_end(&e);
}

static void scan_done(void *arg)
{
	struct mta *m = arg;
	m->scanning = false;
	schedule(m);
}

/* --- public --------------------------------------------------------------------- */

struct mta *mta_new(struct daemon *d, struct queue_index *ix)
{
	struct mta *m = xcalloc(1, sizeof(*m));
	m->d = d;
	m->ix = ix;
	m->base = d->base;
	m->data_dir = xstrdup(d->data_dir);
	m->hostname = xstrdup(d->hostname);
	m->loop_thread = pthread_self();
	char *err = NULL;
	if (conf_build(&m->conf, &d->cfg, &err) < 0)
		fatal("%s: %s", d->config_path, err);
	const char *derr;
	m->dns = dns_new(m->base, d->cfg.dns_server, &derr);
	if (m->dns == NULL)
		fatal("cannot set up the DNS resolver (dns_server = '%s'): %s", d->cfg.dns_server, derr);
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	m->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (m->efd < 0)
		fatal("eventfd: %m");
	m->wake_ev = event_new(m->base, m->efd, EV_READ | EV_PERSIST, on_wake, m);
	event_add(m->wake_ev, NULL);
	m->timer = evtimer_new(m->base, on_timer, m);
	m->sweep = event_new(m->base, -1, EV_PERSIST, on_sweep, m);
	struct timeval tv = { MTA_SWEEP_SECS, 0 };
	event_add(m->sweep, &tv);
	m->workers = workers_new(m->base, MTA_WORKERS);
	the_mta = m;
	return m;
}

void mta_start(struct mta *m)
{
	m->started = true;
	m->scanning = true;
	workers_submit(m->workers, scan_job, scan_done, m);
	if (m->conf.sh_host)
		log_info("mta: remote mail goes through the smarthost %s:%d%s", m->conf.sh_host, m->conf.sh_port,
		         m->conf.sh_user ? " with AUTH" : "");
}

void mta_reload(struct mta *m)
{
	struct mta_conf c;
	char *err = NULL;
	if (conf_build(&c, &m->d->cfg, &err) < 0) {
		log_error("mta: reload: %s; keeping the previous delivery settings", err);
		free(err);
		return;
	}
	conf_free(&m->conf);
	m->conf = c;
	/* routes may point elsewhere now (smarthost changes) */
	for (struct dest *d = m->dests; d; d = d->next)
		dns_route_free(&d->route);
}

bool mta_busy(struct mta *m)
{
	return m->nactive > 0;
}

void mta_stats(struct mta *m, struct mta_stats *s)
{
	*s = m->st;
	pthread_mutex_lock(&m->mu);
	s->scheduled = m->tab.n;
	pthread_mutex_unlock(&m->mu);
	s->active = m->nactive;
	s->connections = m->nsess;
}

/* Stops what has not reached the point of no return. */
static void abort_in_flight(struct mta *m, bool even_committing)
{
	for (struct dest *d = m->dests; d; d = d->next) {
		if (d->resolving) {
			dns_lookup_cancel(d->resolving);
			d->resolving = NULL;
		}
		dest_fail_waiting(d, SMTPC_NONE, NULL, NULL);
		struct sess *s = d->sessions;
		while (s) {
			struct sess *nx = s->next;
			if (s->cur == NULL && s->idle) {
				if (even_committing)
					sess_unlink(m, s);
				else
					smtpc_quit(s->c);
			} else if (s->cur && (even_committing || !smtpc_committing(s->c))) {
				struct dlv *v = s->cur;
				s->cur = NULL;
				/* what the server settled stays; the rest is open */
				for (size_t k = 0; k < v->n; k++)
					if (!v->rc[k].final)
						v->rc[k].result = SMTPC_NONE;
				sess_unlink(m, s);
				dlv_done(v);
			} else if (s->cur == NULL && even_committing) {
				sess_unlink(m, s);
			}
			s = nx;
		}
	}
}

void mta_stop(struct mta *m)
{
	pthread_mutex_lock(&m->mu);
	m->stopping = true;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->mu);
	evtimer_del(m->timer);
	abort_in_flight(m, false);
}

void mta_free(struct mta **mp)
{
	struct mta *m = *mp;
	if (m == NULL)
		return;
	if (!m->stopping)
		mta_stop(m);
	/* the loop is gone: whatever still waits for a server is abandoned
	 * (its recipients stay open; the finish jobs save what is known) */
	abort_in_flight(m, true);
	workers_free(&m->workers); /* runs the remaining jobs and their completions */
	while (m->active) {
		/* loads whose completion never ran cannot exist after
		 * workers_free; anything left is a message without deliveries */
		struct amsg *am = m->active;
		active_unlink(m, am);
		am_free(am);
	}
	while (m->dests) {
		struct dest *d = m->dests;
		m->dests = d->next;
		while (d->sessions)
			sess_unlink(m, d->sessions);
		dest_free(d);
	}
	dns_free(&m->dns);
	event_free(m->wake_ev);
	event_free(m->timer);
	event_free(m->sweep);
	close(m->efd);
	for (size_t i = 0; i < m->tab.nb; i++) {
		struct qent *e = m->tab.b[i];
		while (e) {
			struct qent *nx = e->hnext;
			free(e);
			e = nx;
		}
	}
	free(m->tab.b);
	free(m->heap);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cv);
	conf_free(&m->conf);
	free(m->data_dir);
	free(m->hostname);
	if (the_mta == m)
		the_mta = NULL;
	free(m);
	*mp = NULL;
}

void mta_notify(struct mta *m, const char *id)
{
	if (m == NULL || !queue_id_ok(id) || strlen(id) > QUEUE_ID_LEN)
		return;
	pthread_mutex_lock(&m->mu);
	struct qent *e = tab_find(&m->tab, id);
	if (e == NULL) {
		e = ent_new(id, now_s());
		tab_add(&m->tab, e);
		heap_push(m, e);
	} else if (e->busy) {
		e->renotified = true;
	} else {
		/* written anew (requeued, released): deliver now */
		e->claimed = false;
		e->next = now_s();
		if (e->hpos == HPOS_NONE)
			heap_push(m, e);
		else
			heap_update(m, e);
	}
	pthread_mutex_unlock(&m->mu);
	wake(m);
}

int mta_claim(struct mta *m, const char *id, int timeout_ms)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	/* the loop thread cannot wait for itself */
	bool may_wait = !pthread_equal(pthread_self(), m->loop_thread);
	int rc;
	pthread_mutex_lock(&m->mu);
	struct qent *e = tab_find(&m->tab, id);
	if (e && e->busy && may_wait && timeout_ms > 0) {
		/* ask the loop to withdraw it if it only waits for a connection */
		e->claim_wanted = true;
		wake(m);
		while ((e = tab_find(&m->tab, id)) != NULL && e->busy)
			if (pthread_cond_timedwait(&m->cv, &m->mu, &deadline) != 0)
				break;
		e = tab_find(&m->tab, id);
	}
	if (e == NULL) {
		rc = 0; /* delivered meanwhile, or never known */
	} else if (e->busy) {
		e->claim_wanted = false;
		rc = -1;
	} else {
		e->claim_wanted = false;
		e->claimed = true;
		heap_remove(m, e);
		rc = 1;
	}
	pthread_mutex_unlock(&m->mu);
	return rc;
}

void mta_unclaim(struct mta *m, const char *id)
{
	pthread_mutex_lock(&m->mu);
	struct qent *e = tab_find(&m->tab, id);
	if (e && e->claimed) {
		e->claimed = false;
		if (!e->busy)
			heap_push(m, e);
	}
	pthread_mutex_unlock(&m->mu);
	wake(m);
}

bool mta_forget(struct mta *m, const char *id)
{
	pthread_mutex_lock(&m->mu);
	struct qent *e = tab_find(&m->tab, id);
	bool ok = e && !e->busy;
	if (ok)
		ent_forget(m, e);
	pthread_mutex_unlock(&m->mu);
	return ok;
}

int mta_retry(struct mta *m, const char *id)
{
	int n = 0;
	int64_t now = now_s();
	pthread_mutex_lock(&m->mu);
	if (id) {
		struct qent *e = tab_find(&m->tab, id);
		if (e && !e->busy && !e->claimed) {
			e->next = now;
			heap_update(m, e);
			n = 1;
		}
	} else {
		/* everything waiting in the heap is due now; rebuild it */
		for (size_t i = 0; i < m->nheap; i++)
			m->heap[i]->next = now;
		for (size_t i = m->nheap / 2; i-- > 0;)
			heap_down(m, i);
		n = (int)m->nheap;
	}
	m->flush_routes = true;
	pthread_mutex_unlock(&m->mu);
	wake(m);
	return n;
}
