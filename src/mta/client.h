/* client — the outbound SMTP client: one connection (struct smtpc) that
 * delivers transactions to a destination's servers over lib/io.h.
 *
 * A connection is given a list of targets (host name, IP, port: the MX
 * hosts' addresses in order) and a transaction. It connects to the first
 * target that works and runs EHLO (HELO when EHLO gets a 5xx), AUTH
 * PLAIN/LOGIN when credentials are set (a smarthost), then MAIL, RCPT and
 * DATA — pipelined in one write when the server offers PIPELINING — with
 * SIZE, BODY=8BITMIME and SMTPUTF8 as negotiated. A session-level failure
 * (connect error, greeting or EHLO refused, MAIL 4xx, every RCPT 4xx,
 * DATA 4xx, lost connection, timeout) moves the recipients still open to
 * the next target; when none is left they are deferred. Per-recipient 5xx
 * replies are final. After a transaction the connection can carry the
 * next one (RSET first).
 *
 * Role: the MTA, loop thread only. Callbacks run from deferred events,
 * never from inside an smtpc_* call, so the owner may free the
 * connection from any callback. */
#ifndef MTA_CLIENT_H
#define MTA_CLIENT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <event2/event.h>

struct smtpc;

struct smtpc_target {
	char *host; /* MX host name (for logs, Remote-MTA) */
	char *ip;   /* numeric */
	int port;
};

struct smtpc_params {
	const char *helo;      /* our host name for EHLO/HELO */
	int connect_timeout;   /* seconds */
	int cmd_timeout;       /* seconds per command (RFC 5321 4.5.3.2) */
	int data_timeout;      /* seconds for the reply to the final dot */
	const char *auth_user; /* NULL: no AUTH */
	const char *auth_pass;
};

enum smtpc_result { SMTPC_NONE = 0, SMTPC_OK, SMTPC_TEMP, SMTPC_PERM };

struct smtpc_rcpt {
	const char *addr;       /* the caller's */
	enum smtpc_result result;
	bool final;             /* settled for this attempt */
	char *reply;            /* last reply or error, one line (xmalloc'd) */
	char status[16];        /* enhanced status code, "5.1.1" */
	char *host, *ip;        /* server that gave the reply, or NULL */
};

struct smtpc_txn {
	const char *from;             /* "" for the null sender */
	struct smtpc_rcpt *rcpt;
	size_t nrcpt;
	const char *body;             /* dot-stuffed, ending with ".\r\n" */
	size_t body_len;
	uint64_t size;                /* message size for SIZE= */
	bool body_8bit;               /* the content has 8-bit bytes */
	bool declare_8bitmime;        /* send BODY=8BITMIME when offered */
	bool smtputf8;                /* the message asks for SMTPUTF8 */
	/* outcome */
	char *error;                  /* last session-level error, or NULL */
	bool reached;                 /* some server got as far as EHLO/HELO */
	bool lost_after_data;         /* connection lost after the final dot */
};

struct smtpc_callbacks {
	/* The transaction is settled (every recipient final). The connection
	 * is usable for another one when smtpc_usable() says so. */
	void (*txn_done)(void *arg, struct smtpc *c, struct smtpc_txn *t);
	/* An idle or quitting connection is gone; free it. */
	void (*closed)(void *arg, struct smtpc *c);
};

/* targets are copied. */
struct smtpc *smtpc_new(struct event_base *base, const struct smtpc_target *targets, size_t ntargets,
                        const struct smtpc_params *params, const struct smtpc_callbacks *cb, void *arg);
/* Starts t (owned by the caller until txn_done) on a new or idle
 * connection. */
void smtpc_start_txn(struct smtpc *c, struct smtpc_txn *t);
/* Keeps an idle connection open for secs; then QUIT and closed(). */
void smtpc_idle(struct smtpc *c, int secs);
/* QUIT now (idle connection), then closed(). */
void smtpc_quit(struct smtpc *c);
/* Drops the connection at once; no more callbacks. */
void smtpc_free(struct smtpc **c);
/* Connected, between transactions and fit for another one. */
bool smtpc_usable(const struct smtpc *c);
/* The final dot is sent and its reply is awaited (aborting now may
 * cause a duplicate delivery). */
bool smtpc_committing(const struct smtpc *c);
/* Transactions completed on this connection. */
int smtpc_txn_count(const struct smtpc *c);
/* Frees the results inside t (reply, host, ip, error). */
void smtpc_txn_clear(struct smtpc_txn *t);

#endif
