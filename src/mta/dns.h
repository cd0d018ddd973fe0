/* dns — routes for outbound mail through libunbound, asynchronously on
 * the event loop: ub_ctx_async + ub_fd() watched by a libevent event,
 * ub_process() on readiness. A route lookup resolves MX records (RFC 5321
 * 5.1: by preference, random among equal ones; no MX → the domain itself;
 * null MX "0 ." → RFC 7505) and the A and AAAA records of every host.
 *
 * Role: the MTA, loop thread only (lookups start and finish there).
 * No validation (no trust anchors): DNSSEC/DANE come later. */
#ifndef MTA_DNS_H
#define MTA_DNS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <event2/event.h>

/* RFC 5321 5.1 lets a client bound its MX work; Postfix tries at most 5
 * addresses (smtp_mx_address_limit). We keep a few more hosts and
 * addresses so that a broken first MX never hides a working last one. */
#define DNS_MX_HOSTS_MAX 10
#define DNS_ADDRS_MAX 20
/* A lookup that gets no answer in this time fails temporarily (libunbound
 * itself can retry much longer). */
#define DNS_TIMEOUT_SECS 30

struct dns;
struct dns_lookup;

enum dns_status {
	DNS_OK,       /* hosts with addresses */
	DNS_NXDOMAIN, /* the domain does not exist: permanent (5.1.2) */
	DNS_NULLMX,   /* RFC 7505 null MX: the domain accepts no mail (5.1.10) */
	DNS_NOHOST,   /* the domain exists but has no MX and no address (5.4.4) */
	DNS_TEMPFAIL, /* SERVFAIL, timeout, MX hosts without addresses: retry */
};

struct dns_host {
	char *name;   /* MX host name (no trailing dot) */
	int pref;
	char **addr;  /* numeric IPs as text: IPv4 first, then IPv6 */
	size_t naddr;
};

struct dns_route {
	enum dns_status status;
	char *error;  /* what went wrong (for replies and DSNs), or NULL */
	struct dns_host *host;
	size_t nhost;
};

/* servers: "" = /etc/resolv.conf; else comma-separated "IP" or "IP@port"
 * forwarders. NULL with error_r when libunbound refuses the setup. */
struct dns *dns_new(struct event_base *base, const char *servers, const char **error_r);
/* Cancels every lookup (no callbacks) and frees. */
void dns_free(struct dns **dns);

/* Starts a route lookup for domain: MX first when mx is true, else the
 * domain's own A/AAAA only (a smarthost). cb runs later on the loop with
 * the route, which the callee then owns (dns_route_free). Never calls cb
 * before returning. */
struct dns_lookup *dns_route_lookup(struct dns *dns, const char *domain, bool mx,
                                    void (*cb)(void *arg, struct dns_route *route), void *arg);
/* Cancels a lookup in flight: cb is not called. */
void dns_lookup_cancel(struct dns_lookup *l);
void dns_route_free(struct dns_route **r);

/* Pure helpers, exposed for unit tests. */
/* Parses MX rdata (2 octets preference, uncompressed wire-format name)
 * into pref and a text name without the trailing dot ("" for the root,
 * i.e. a null MX). Returns 0 or -1 if malformed. */
int dns_mx_rdata_parse(const unsigned char *rd, size_t len, int *pref_r, char *name, size_t n);
/* Sorts hosts by preference and shuffles equal preferences with seed. */
void dns_hosts_order(struct dns_host *h, size_t n, uint32_t seed);

#endif
