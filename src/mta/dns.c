/* dns — see dns.h.
 *
 * Role: the MTA's resolver, loop thread only. libunbound runs its own
 * background thread (ub_ctx_async(ctx, 1): a thread, not a forked
 * process, because the daemon is multi-threaded); answers come back
 * through the pipe behind ub_fd(), which a persistent libevent event
 * watches, and ub_process() runs our callbacks on the loop.
 * Invariants: a lookup's user callback runs exactly once, from its own
 * deferred event (never inside dns_route_lookup or ub_process), unless
 * the lookup was cancelled. A query whose ub_cancel failed (its answer is
 * already on its way) is orphaned, not freed, and freed when the answer
 * arrives or at dns_free.
 * On error: every resolver failure becomes DNS_TEMPFAIL with a reason;
 * only a clean NXDOMAIN, a null MX and an existing domain without MX and
 * address records are permanent. */
#include "mta/dns.h"
#include "lib/xalloc.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unbound.h>

/* RR types and classes (RFC 1035, RFC 3596). */
#define RR_A 1
#define RR_MX 15
#define RR_AAAA 28
#define RR_CLASS_IN 1
#define RCODE_SERVFAIL 2
#define RCODE_NXDOMAIN 3
/* Longest presentation-form domain name (RFC 1035 3.1: 255 octets on the wire). */
#define DNS_NAME_MAX 256

enum qkind { Q_MX, Q_A, Q_AAAA };

struct dns_query {
	struct dns_lookup *l; /* NULL: orphaned (cancel failed), free on answer */
	struct dns *dns;
	enum qkind kind;
	size_t host;          /* index into l->route->host (A/AAAA) */
	int async_id;
	bool active;
	struct dns_query *next; /* in l->queries or dns->orphans */
};

struct dns_lookup {
	struct dns *dns;
	char *domain;
	bool mx;
	bool implicit;         /* no MX records: the domain is its own host */
	bool tempfail;         /* some query failed temporarily */
	char *tempfail_why;
	int pending;           /* queries in flight */
	bool finished;
	void (*cb)(void *arg, struct dns_route *route);
	void *arg;
	struct dns_route *route;
	struct dns_query *queries;
	struct event *timer;
	struct event *done_ev;
	struct dns_lookup *prev, *next;
};

struct dns {
	struct ub_ctx *ctx;
	struct event_base *base;
	struct event *ev;
	struct dns_lookup *lookups;
	struct dns_query *orphans;
};

static void on_ub(evutil_socket_t fd, short what, void *arg)
{
	struct dns *dns = arg;
	(void)fd;
	(void)what;
	ub_process(dns->ctx);
}

struct dns *dns_new(struct event_base *base, const char *servers, const char **error_r)
{
	struct dns *dns = xcalloc(1, sizeof(*dns));
	dns->base = base;
	dns->ctx = ub_ctx_create();
	if (dns->ctx == NULL) {
		*error_r = "ub_ctx_create failed";
		free(dns);
		return NULL;
	}
	int r;
	/* forwarders on loopback (a local unbound, systemd-resolved, tests)
	 * must be allowed */
	if ((r = ub_ctx_set_option(dns->ctx, "do-not-query-localhost:", "no")) != 0)
		goto fail;
	/* libunbound answers the RFC 6761 name "test." itself (NXDOMAIN);
	 * "transparent" lets queries reach the configured server, which
	 * answers the same for the real world and with its local data in a
	 * test network ("nodefault" is not honoured through set_option) */
	if ((r = ub_ctx_set_option(dns->ctx, "local-zone:", "test. transparent")) != 0)
		goto fail;
	/* no trust anchors and no validator until DANE: plain resolution */
	if ((r = ub_ctx_set_option(dns->ctx, "module-config:", "iterator")) != 0)
		goto fail;
	if (servers == NULL || servers[0] == '\0') {
		if ((r = ub_ctx_resolvconf(dns->ctx, NULL)) != 0)
			goto fail;
	} else {
		char *copy = xstrdup(servers), *save = NULL;
		for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
			if ((r = ub_ctx_set_fwd(dns->ctx, t)) != 0) {
				free(copy);
				goto fail;
			}
		}
		free(copy);
	}
	if ((r = ub_ctx_async(dns->ctx, 1)) != 0)
		goto fail;
	int fd = ub_fd(dns->ctx);
	if (fd < 0) {
		*error_r = "ub_fd failed";
		ub_ctx_delete(dns->ctx);
		free(dns);
		return NULL;
	}
	dns->ev = event_new(base, fd, EV_READ | EV_PERSIST, on_ub, dns);
	event_add(dns->ev, NULL);
	return dns;
fail:
	*error_r = ub_strerror(r);
	ub_ctx_delete(dns->ctx);
	free(dns);
	return NULL;
}

void dns_route_free(struct dns_route **rp)
{
	struct dns_route *r = *rp;
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->nhost; i++) {
		for (size_t j = 0; j < r->host[i].naddr; j++)
			free(r->host[i].addr[j]);
		free(r->host[i].addr);
		free(r->host[i].name);
	}
	free(r->host);
	free(r->error);
	free(r);
	*rp = NULL;
}

/* Cancels the lookup's queries: freed when libunbound confirms, orphaned
 * otherwise. */
static void cancel_queries(struct dns_lookup *l)
{
	struct dns_query *q = l->queries;
	l->queries = NULL;
	while (q) {
		struct dns_query *next = q->next;
		if (q->active && ub_cancel(l->dns->ctx, q->async_id) != 0) {
			q->l = NULL;
			q->next = l->dns->orphans;
			l->dns->orphans = q;
		} else {
			free(q);
		}
		q = next;
	}
	l->pending = 0;
}

static void lookup_unlink_free(struct dns_lookup *l)
{
	struct dns *dns = l->dns;
	if (l->prev)
		l->prev->next = l->next;
	else
		dns->lookups = l->next;
	if (l->next)
		l->next->prev = l->prev;
	cancel_queries(l);
	if (l->timer)
		event_free(l->timer);
	event_free(l->done_ev);
	dns_route_free(&l->route);
	free(l->tempfail_why);
	free(l->domain);
	free(l);
}

void dns_lookup_cancel(struct dns_lookup *l)
{
	if (l)
		lookup_unlink_free(l);
}

void dns_free(struct dns **dp)
{
	struct dns *dns = *dp;
	if (dns == NULL)
		return;
	while (dns->lookups)
		lookup_unlink_free(dns->lookups);
	/* deleting the context drops every outstanding query without callbacks */
	ub_ctx_delete(dns->ctx);
	while (dns->orphans) {
		struct dns_query *q = dns->orphans;
		dns->orphans = q->next;
		free(q);
	}
	event_free(dns->ev);
	free(dns);
	*dp = NULL;
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
	struct dns_lookup *l = arg;
	(void)fd;
	(void)what;
	struct dns_route *route = l->route;
	l->route = NULL;
	void (*cb)(void *, struct dns_route *) = l->cb;
	void *cbarg = l->arg;
	lookup_unlink_free(l);
	cb(cbarg, route);
}

/* Sets the route's outcome; takes msg (xmalloc'd). */
static void set_status(struct dns_lookup *l, enum dns_status st, char *msg)
{
	l->route->status = st;
	free(l->route->error);
	l->route->error = msg;
}

/* Completes the route from what the queries found and schedules the
 * callback. */
static void finish(struct dns_lookup *l)
{
	if (l->finished)
		return;
	l->finished = true;
	cancel_queries(l);
	if (l->timer) {
		event_free(l->timer);
		l->timer = NULL;
	}
	struct dns_route *r = l->route;
	if (r->status == DNS_OK) {
		/* keep the hosts that have addresses, in order */
		size_t k = 0;
		for (size_t i = 0; i < r->nhost; i++) {
			if (r->host[i].naddr > 0) {
				r->host[k++] = r->host[i];
			} else {
				free(r->host[i].name);
				free(r->host[i].addr);
			}
		}
		r->nhost = k;
		if (k == 0) {
			if (l->tempfail)
				set_status(l, DNS_TEMPFAIL, xasprintf("Host or domain name lookup failed for %s: %s", l->domain,
				                                     l->tempfail_why ? l->tempfail_why : "no answer"));
			else if (l->implicit || !l->mx)
				set_status(l, DNS_NOHOST,
				           xasprintf("Host or domain name not found: %s has no MX or address records", l->domain));
			else
				/* XXX: MX hosts that do not resolve may be fixed soon; we
				 * retry until the queue lifetime ends rather than bounce */
				set_status(l, DNS_TEMPFAIL, xasprintf("No address found for any MX host of %s", l->domain));
		}
	}
	event_active(l->done_ev, EV_TIMEOUT, 0);
}

static void note_tempfail(struct dns_lookup *l, const char *why)
{
	l->tempfail = true;
	if (l->tempfail_why == NULL)
		l->tempfail_why = xstrdup(why);
}

static void on_answer(void *arg, int err, struct ub_result *res);

static void start_query(struct dns_lookup *l, const char *name, enum qkind kind, size_t host)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));
	q->l = l;
	q->dns = l->dns;
	q->kind = kind;
	q->host = host;
	int rrtype = kind == Q_MX ? RR_MX : kind == Q_A ? RR_A : RR_AAAA;
	int r = ub_resolve_async(l->dns->ctx, name, rrtype, RR_CLASS_IN, q, on_answer, &q->async_id);
	if (r != 0) {
		note_tempfail(l, ub_strerror(r));
		free(q);
		return;
	}
	q->active = true;
	q->next = l->queries;
	l->queries = q;
	l->pending++;
}

static void unlink_query(struct dns_lookup *l, struct dns_query *q)
{
	for (struct dns_query **pp = &l->queries; *pp; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	l->pending--;
}

int dns_mx_rdata_parse(const unsigned char *rd, size_t len, int *pref_r, char *name, size_t n)
{
	if (len < 3 || n == 0)
		return -1;
	*pref_r = (rd[0] << 8) | rd[1];
	size_t i = 2, o = 0;
	for (;;) {
		if (i >= len)
			return -1;
		size_t ll = rd[i++];
		if (ll == 0)
			break;
		if (ll > 63 || i + ll > len)
			return -1; /* compression pointers never appear in libunbound rdata */
		if (o > 0) {
			if (o + 1 >= n)
				return -1;
			name[o++] = '.';
		}
		if (o + ll >= n)
			return -1;
		for (size_t k = 0; k < ll; k++) {
			unsigned char c = rd[i + k];
			/* host names are LDH; anything else is refused rather than
			 * carried into logs and connection attempts */
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
			      c == '_'))
				return -1;
			name[o++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
		}
		i += ll;
	}
	if (i != len)
		return -1;
	name[o] = '\0';
	return 0;
}

static uint32_t xorshift(uint32_t *s)
{
	uint32_t x = *s ? *s : 0x9e3779b9u;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

void dns_hosts_order(struct dns_host *h, size_t n, uint32_t seed)
{
	/* insertion sort by preference (n <= a few dozen) */
	for (size_t i = 1; i < n; i++) {
		struct dns_host t = h[i];
		size_t j = i;
		while (j > 0 && h[j - 1].pref > t.pref) {
			h[j] = h[j - 1];
			j--;
		}
		h[j] = t;
	}
	/* Fisher-Yates within each run of equal preference (RFC 5321 5.1) */
	for (size_t a = 0; a < n;) {
		size_t b = a + 1;
		while (b < n && h[b].pref == h[a].pref)
			b++;
		for (size_t i = b - 1; i > a; i--) {
			size_t j = a + xorshift(&seed) % (i - a + 1);
			struct dns_host t = h[i];
			h[i] = h[j];
			h[j] = t;
		}
		a = b;
	}
}

static void add_host(struct dns_route *r, const char *name, int pref)
{
	for (size_t i = 0; i < r->nhost; i++)
		if (strcmp(r->host[i].name, name) == 0) {
			if (pref < r->host[i].pref)
				r->host[i].pref = pref;
			return;
		}
	r->host = xreallocarray(r->host, r->nhost + 1, sizeof(*r->host));
	memset(&r->host[r->nhost], 0, sizeof(r->host[0]));
	r->host[r->nhost].name = xstrdup(name);
	r->host[r->nhost].pref = pref;
	r->nhost++;
}

static void add_addr(struct dns_host *h, const char *ip, bool v6)
{
	if (h->naddr >= DNS_ADDRS_MAX)
		return;
	for (size_t i = 0; i < h->naddr; i++)
		if (strcmp(h->addr[i], ip) == 0)
			return;
	h->addr = xreallocarray(h->addr, h->naddr + 1, sizeof(char *));
	if (v6) {
		h->addr[h->naddr++] = xstrdup(ip);
		return;
	}
	/* IPv4 before IPv6: a network without working IPv6 then costs no
	 * connect timeout; both families are still tried */
	size_t pos = 0;
	while (pos < h->naddr && strchr(h->addr[pos], ':') == NULL)
		pos++;
	memmove(&h->addr[pos + 1], &h->addr[pos], (h->naddr - pos) * sizeof(char *));
	h->addr[pos] = xstrdup(ip);
	h->naddr++;
}

/* A host name that is really an IP address (a common misconfiguration
 * of MX records, and smarthost = 192.0.2.1). */
static bool literal_ip(const char *name, bool *v6_r)
{
	unsigned char buf[16];
	if (inet_pton(AF_INET, name, buf) == 1) {
		*v6_r = false;
		return true;
	}
	if (inet_pton(AF_INET6, name, buf) == 1) {
		*v6_r = true;
		return true;
	}
	return false;
}

/* Queries A and AAAA for every host (or takes literal addresses). */
static void resolve_hosts(struct dns_lookup *l)
{
	struct dns_route *r = l->route;
	for (size_t i = 0; i < r->nhost; i++) {
		bool v6;
		if (literal_ip(r->host[i].name, &v6)) {
			add_addr(&r->host[i], r->host[i].name, v6);
			continue;
		}
		start_query(l, r->host[i].name, Q_A, i);
		start_query(l, r->host[i].name, Q_AAAA, i);
	}
}

static void mx_answer(struct dns_lookup *l, struct ub_result *res)
{
	struct dns_route *r = l->route;
	if (res->rcode == RCODE_NXDOMAIN || res->nxdomain) {
		set_status(l, DNS_NXDOMAIN, xasprintf("Host or domain name not found: %s does not exist", l->domain));
		finish(l);
		return;
	}
	if (res->rcode != 0) {
		set_status(l, DNS_TEMPFAIL, xasprintf("Host or domain name lookup failed for %s: %s", l->domain,
		                                      res->rcode == RCODE_SERVFAIL ? "SERVFAIL" : "DNS error"));
		finish(l);
		return;
	}
	size_t nnull = 0, nrec = 0;
	for (int i = 0; res->havedata && res->data[i]; i++) {
		char name[DNS_NAME_MAX];
		int pref;
		nrec++;
		if (dns_mx_rdata_parse((const unsigned char *)res->data[i], (size_t)res->len[i], &pref, name,
		                       sizeof(name)) < 0)
			continue;
		if (name[0] == '\0') {
			nnull++;
			continue;
		}
		if (r->nhost < DNS_MX_HOSTS_MAX * 4)
			add_host(r, name, pref);
	}
	if (nnull > 0 && r->nhost == 0) {
		set_status(l, DNS_NULLMX, xasprintf("Domain %s does not accept mail (null MX, RFC 7505)", l->domain));
		finish(l);
		return;
	}
	if (nrec == 0) {
		/* RFC 5321 5.1: no MX → the domain itself is the host */
		l->implicit = true;
		add_host(r, l->domain, 0);
	} else if (r->nhost == 0) {
		set_status(l, DNS_TEMPFAIL, xasprintf("Malformed MX records for %s", l->domain));
		finish(l);
		return;
	}
	uint32_t seed;
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
		seed = (uint32_t)(uintptr_t)l ^ (uint32_t)r->nhost;
	dns_hosts_order(r->host, r->nhost, seed);
	while (r->nhost > DNS_MX_HOSTS_MAX) {
		struct dns_host *h = &r->host[--r->nhost];
		free(h->name);
		free(h->addr);
	}
	resolve_hosts(l);
}

static void addr_answer(struct dns_lookup *l, struct dns_query *q, struct ub_result *res)
{
	struct dns_host *h = &l->route->host[q->host];
	if (res->rcode != 0 && res->rcode != RCODE_NXDOMAIN) {
		note_tempfail(l, res->rcode == RCODE_SERVFAIL ? "SERVFAIL" : "DNS error");
		return;
	}
	for (int i = 0; res->havedata && res->data[i]; i++) {
		char ip[INET6_ADDRSTRLEN];
		if (q->kind == Q_A && res->len[i] == 4)
			inet_ntop(AF_INET, res->data[i], ip, sizeof(ip));
		else if (q->kind == Q_AAAA && res->len[i] == 16)
			inet_ntop(AF_INET6, res->data[i], ip, sizeof(ip));
		else
			continue;
		add_addr(h, ip, q->kind == Q_AAAA);
	}
}

static void on_answer(void *arg, int err, struct ub_result *res)
{
	struct dns_query *q = arg;
	struct dns_lookup *l = q->l;
	if (l == NULL) {
		/* orphaned by a failed cancel */
		struct dns *dns = q->dns;
		for (struct dns_query **pp = &dns->orphans; *pp; pp = &(*pp)->next)
			if (*pp == q) {
				*pp = q->next;
				break;
			}
		free(q);
		if (res)
			ub_resolve_free(res);
		return;
	}
	q->active = false;
	unlink_query(l, q);
	enum qkind kind = q->kind;
	if (err != 0 || res == NULL) {
		if (kind == Q_MX) {
			set_status(l, DNS_TEMPFAIL,
			           xasprintf("Host or domain name lookup failed for %s: %s", l->domain, ub_strerror(err)));
			free(q);
			if (res)
				ub_resolve_free(res);
			finish(l);
			return;
		}
		note_tempfail(l, ub_strerror(err));
	} else if (kind == Q_MX) {
		mx_answer(l, res);
	} else {
		addr_answer(l, q, res);
	}
	free(q);
	if (res)
		ub_resolve_free(res);
	if (!l->finished && l->pending == 0)
		finish(l);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct dns_lookup *l = arg;
	(void)fd;
	(void)what;
	note_tempfail(l, "timeout");
	bool any = false;
	for (size_t i = 0; i < l->route->nhost; i++)
		if (l->route->host[i].naddr > 0)
			any = true;
	if (!any && l->route->status == DNS_OK && (l->route->nhost == 0 || l->pending > 0))
		set_status(l, DNS_TEMPFAIL, xasprintf("Host or domain name lookup failed for %s: timeout", l->domain));
	finish(l);
}

struct dns_lookup *dns_route_lookup(struct dns *dns, const char *domain, bool mx,
                                    void (*cb)(void *arg, struct dns_route *route), void *arg)
{
	struct dns_lookup *l = xcalloc(1, sizeof(*l));
	l->dns = dns;
	l->domain = xstrdup(domain);
	l->mx = mx;
	l->cb = cb;
	l->arg = arg;
	l->route = xcalloc(1, sizeof(*l->route));
	l->route->status = DNS_OK;
	l->done_ev = event_new(dns->base, -1, 0, on_done, l);
	l->next = dns->lookups;
	if (dns->lookups)
		dns->lookups->prev = l;
	dns->lookups = l;
	struct timeval tv = { DNS_TIMEOUT_SECS, 0 };
	l->timer = evtimer_new(dns->base, on_timeout, l);
	evtimer_add(l->timer, &tv);
	if (mx) {
		bool v6;
		if (literal_ip(domain, &v6)) {
			l->implicit = true;
			add_host(l->route, domain, 0);
			resolve_hosts(l);
		} else {
			start_query(l, domain, Q_MX, 0);
			if (l->pending == 0)
				set_status(l, DNS_TEMPFAIL, xasprintf("Host or domain name lookup failed for %s: %s",
				                                      l->domain, l->tempfail_why ? l->tempfail_why : "?"));
		}
	} else {
		add_host(l->route, domain, 0);
		resolve_hosts(l);
	}
	if (l->pending == 0)
		finish(l);
	return l;
}
