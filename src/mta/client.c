/* client — see client.h.
 *
 * Role: the MTA's SMTP client, loop thread only, over lib/io.h.
 * State machine: NONE → CONNECTING → GREETING → EHLO (→ HELO) → AUTH… →
 * TXN (MAIL/RCPT/DATA replies) → BODY (final dot sent) → READY; reuse:
 * IDLE → RSET → TXN. A session-level failure closes the connection and
 * moves on to the next target (or, on a reused connection that failed
 * before anything was delivered, starts once more from the first one).
 * Invariants: a recipient is final once it has a 5xx, a 2xx for the
 * message, or a 4xx while others were accepted; only non-final ones move
 * to another server. The owner is called back only from c->done_ev /
 * c->closed_ev (deferred), never re-entrantly.
 * On error: nothing here is fatal; every failure becomes a reply text on
 * the recipients (deferred or failed) that the MTA logs and records.
 *
 * TODO(STARTTLS): opportunistic STARTTLS goes between EHLO and AUTH:
 * when caps.starttls, send STARTTLS, on 220 io_starttls() and EHLO again
 * (RFC 3207); on failure continue in plain text (opportunistic). AUTH to
 * a smarthost over plain text is what the configuration asked for. */
#include "mta/client.h"
#include "lib/base64.h"
#include "lib/io.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"
#include "proto/smtp_reply.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Commands of one transaction: MAIL, RCPT per open recipient, DATA. */
enum cmd_kind { CMD_MAIL, CMD_RCPT, CMD_DATA };

struct cmd {
	enum cmd_kind kind;
	size_t rcpt; /* CMD_RCPT: index into t->rcpt */
};

enum cstate {
	C_NONE,
	C_CONNECTING,
	C_GREETING,
	C_EHLO,
	C_HELO,
	C_AUTH_PLAIN,
	C_AUTH_LOGIN,
	C_AUTH_USER,
	C_AUTH_PASS,
	C_READY,      /* connected, no transaction */
	C_RSET,
	C_TXN,
	C_DATA_ABORT, /* DATA got 354 with no recipient: "." sent */
	C_BODY,       /* final dot sent */
	C_IDLE,
	C_QUIT,
	C_DEAD,
};

struct smtpc {
	struct event_base *base;
	struct smtpc_target *targets;
	size_t ntargets;
	size_t ti; /* current target */
	struct smtpc_params p;
	char *helo, *auth_user, *auth_pass;
	struct smtpc_callbacks cb;
	void *arg;

	struct io *io;
	enum cstate state;
	struct smtp_reply reply;
	struct smtp_caps caps;
	int ntxn;

	struct smtpc_txn *t;      /* the transaction in progress */
	struct smtpc_txn *done_t; /* settled, waiting for done_ev */
	bool txn_reused;     /* t started on an already used connection */
	bool restarted;      /* t already went back to the first target once */
	struct cmd *cmds;
	size_t ncmd, nsent, nrep;
	bool mail_failed;
	size_t naccepted;

	struct event *done_ev;   /* txn_done to the owner */
	struct event *closed_ev; /* closed to the owner */
};

static void connect_next(struct smtpc *c);
static void begin_txn(struct smtpc *c);

static const char *cur_host(const struct smtpc *c)
{
	return c->ti < c->ntargets ? c->targets[c->ti].host : "?";
}

static const char *cur_ip(const struct smtpc *c)
{
	return c->ti < c->ntargets ? c->targets[c->ti].ip : "?";
}

static void rcpt_set(struct smtpc *c, struct smtpc_rcpt *r, enum smtpc_result res, bool final, const char *reply,
                     const char *status)
{
	r->result = res;
	r->final = final;
	free(r->reply);
	r->reply = xstrdup(reply);
	snprintf(r->status, sizeof(r->status), "%s", status);
	free(r->host);
	free(r->ip);
	r->host = c->ti < c->ntargets ? xstrdup(cur_host(c)) : NULL;
	r->ip = c->ti < c->ntargets ? xstrdup(cur_ip(c)) : NULL;
}

/* Our own words for a local decision, with the status they carry. */
static void rcpt_local(struct smtpc *c, struct smtpc_rcpt *r, enum smtpc_result res, const char *status,
                       const char *text)
{
	char buf[SMTP_REPLY_TEXT_MAX];
	snprintf(buf, sizeof(buf), "%s", text);
	rcpt_set(c, r, res, true, buf, status);
}

static void set_error(struct smtpc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct smtpc *c, const char *fmt, ...)
{
	if (c->t == NULL)
		return;
	char buf[SMTP_REPLY_TEXT_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	free(c->t->error);
	c->t->error = xstrdup(buf);
}

static void send_line(struct smtpc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_line(struct smtpc *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf) - 2)
		panic("smtp client command too long");
	memcpy(buf + n, "\r\n", 2);
	io_write(c->io, buf, (size_t)n + 2);
}

static void drop_io(struct smtpc *c)
{
	io_free(&c->io);
	smtp_reply_reset(&c->reply);
}

/* The transaction is settled: tell the owner (deferred). */
static void txn_finish(struct smtpc *c)
{
	struct smtpc_txn *t = c->t;
	for (size_t i = 0; i < t->nrcpt; i++) {
		struct smtpc_rcpt *r = &t->rcpt[i];
		if (!r->final) {
			/* open recipients left: deferred with the last error; a
			 * 4xx reply keeps its own status, anything else is "no
			 * answer from host" (RFC 3463 4.4.1) */
			const char *why = r->reply ? r->reply : t->error ? t->error : "delivery not attempted";
			char *copy = xstrdup(why);
			snprintf(r->status, sizeof(r->status), "4.4.1");
			if (why[0] == '4' && strlen(why) >= 4 && why[3] == ' ')
				smtp_status_from_reply(400 + (why[1] - '0') * 10 + (why[2] - '0'), why + 4, r->status,
				                       sizeof(r->status));
			r->result = SMTPC_TEMP;
			r->final = true;
			free(r->reply);
			r->reply = copy;
			if (r->host == NULL && c->ti < c->ntargets) {
				r->host = xstrdup(cur_host(c));
				r->ip = xstrdup(cur_ip(c));
			}
		}
	}
	free(c->cmds);
	c->cmds = NULL;
	c->ncmd = c->nsent = c->nrep = 0;
	if (c->io && c->state != C_DEAD) {
		c->state = C_READY;
		c->ntxn++;
	}
	c->done_t = c->t;
	c->t = NULL;
	event_active(c->done_ev, EV_TIMEOUT, 0);
}

static void on_done_ev(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc *c = arg;
	(void)fd;
	(void)what;
	struct smtpc_txn *t = c->done_t;
	c->done_t = NULL;
	if (t)
		c->cb.txn_done(c->arg, c, t);
}

static void on_closed_ev(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc *c = arg;
	(void)fd;
	(void)what;
	c->cb.closed(c->arg, c);
}

/* The server at the current target cannot take the open recipients:
 * next target (or the first again, once, on a reused connection). */
static void session_fail(struct smtpc *c)
{
	drop_io(c);
	struct smtpc_txn *t = c->t;
	if (t == NULL) {
		/* an idle connection went away */
		c->state = C_DEAD;
		event_active(c->closed_ev, EV_TIMEOUT, 0);
		return;
	}
	for (size_t i = 0; i < t->nrcpt; i++)
		if (!t->rcpt[i].final) {
			t->rcpt[i].result = SMTPC_NONE;
			free(t->rcpt[i].reply);
			t->rcpt[i].reply = t->error ? xstrdup(t->error) : NULL;
			free(t->rcpt[i].host);
			free(t->rcpt[i].ip);
			t->rcpt[i].host = c->ti < c->ntargets ? xstrdup(cur_host(c)) : NULL;
			t->rcpt[i].ip = c->ti < c->ntargets ? xstrdup(cur_ip(c)) : NULL;
		}
	free(c->cmds);
	c->cmds = NULL;
	c->ncmd = c->nsent = c->nrep = 0;
	if (c->txn_reused && !c->restarted) {
		/* the cached connection went stale: a fresh start */
		c->restarted = true;
		c->txn_reused = false;
		c->ti = 0;
	} else {
		c->ti++;
	}
	connect_next(c);
}

/* The reply, one line, for logs and recipients. */
static char *reply_line(struct smtpc *c)
{
	char *one = smtp_reply_oneline(&c->reply);
	return one;
}

static void fail_with_reply(struct smtpc *c, const char *what)
{
	char *one = reply_line(c);
	set_error(c, "host %s[%s] %s: %s", cur_host(c), cur_ip(c), what, one);
	free(one);
	session_fail(c);
}

/* --- connecting --------------------------------------------------------- */

static void io_read(struct io *io, void *ctx);
static void io_closed(struct io *io, void *ctx, enum io_close_reason why);
static void io_connected(struct io *io, void *ctx);
static const struct io_handler client_io = { io_read, NULL, io_closed };

static int target_addr(const struct smtpc_target *tg, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, tg->ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)tg->port);
		*len = sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, tg->ip, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)tg->port);
		*len = sizeof(*s6);
		return 0;
	}
	return -1;
}

static void connect_next(struct smtpc *c)
{
	while (c->ti < c->ntargets) {
		struct smtpc_target *tg = &c->targets[c->ti];
		struct sockaddr_storage ss;
		socklen_t len;
		if (target_addr(tg, &ss, &len) < 0) {
			set_error(c, "bad address %s for %s", tg->ip, tg->host);
			c->ti++;
			continue;
		}
		c->io = io_connect(c->base, (struct sockaddr *)&ss, len, c->p.connect_timeout, &client_io, io_connected, c);
		if (c->io == NULL) {
			set_error(c, "connect to %s[%s]:%d: %s", tg->host, tg->ip, tg->port, strerror(errno));
			c->ti++;
			continue;
		}
		c->state = C_CONNECTING;
		memset(&c->caps, 0, sizeof(c->caps));
		return;
	}
	/* every target failed */
	c->state = C_DEAD;
	if (c->t)
		txn_finish(c);
	else
		event_active(c->closed_ev, EV_TIMEOUT, 0);
}

static void io_connected(struct io *io, void *ctx)
{
	struct smtpc *c = ctx;
	(void)io;
	c->state = C_GREETING;
	io_set_timeout(c->io, c->p.cmd_timeout);
}

static void io_closed(struct io *io, void *ctx, enum io_close_reason why)
{
	struct smtpc *c = ctx;
	(void)io;
	switch (c->state) {
	case C_CONNECTING: {
		struct smtpc_target *tg = &c->targets[c->ti];
		int e = io_error(c->io);
		set_error(c, "connect to %s[%s]:%d: %s", tg->host, tg->ip, tg->port,
		          why == IO_TIMEOUT ? "Connection timed out" : e ? strerror(e) : "Connection failed");
		session_fail(c);
		return;
	}
	case C_IDLE:
		if (why == IO_TIMEOUT) {
			/* our idle time is over: say goodbye politely */
			c->state = C_QUIT;
			send_line(c, "QUIT");
			io_close_when_flushed(c->io);
			return;
		}
		drop_io(c);
		c->state = C_DEAD;
		event_active(c->closed_ev, EV_TIMEOUT, 0);
		return;
	case C_QUIT:
		drop_io(c);
		c->state = C_DEAD;
		event_active(c->closed_ev, EV_TIMEOUT, 0);
		return;
	case C_BODY:
		/* the server may or may not have taken the message: defer (a
		 * retry can duplicate it, RFC 5321 6.1 accepts that risk) */
		c->t->lost_after_data = true;
		set_error(c, "lost connection with %s[%s] while sending end of data%s", cur_host(c), cur_ip(c),
		          why == IO_TIMEOUT ? " (timeout)" : "");
		for (size_t i = 0; i < c->t->nrcpt; i++) {
			struct smtpc_rcpt *r = &c->t->rcpt[i];
			if (!r->final && r->result == SMTPC_OK)
				rcpt_set(c, r, SMTPC_TEMP, true, c->t->error, "4.4.2");
		}
		drop_io(c);
		c->state = C_DEAD;
		txn_finish(c);
		return;
	default:
		if (c->t == NULL) {
			drop_io(c);
			c->state = C_DEAD;
			event_active(c->closed_ev, EV_TIMEOUT, 0);
			return;
		}
		set_error(c, "%s with %s[%s]", why == IO_TIMEOUT ? "conversation timed out" : "lost connection",
		          cur_host(c), cur_ip(c));
		session_fail(c);
		return;
	}
}

/* --- after EHLO ------------------------------------------------------- */

static void auth_or_ready(struct smtpc *c)
{
	c->t->reached = true;
	if (c->auth_user && (c->caps.auth_plain || c->caps.auth_login)) {
		struct strbuf raw = STRBUF_INIT, b64 = STRBUF_INIT;
		if (c->caps.auth_plain) {
			strbuf_addc(&raw, '\0');
			strbuf_adds(&raw, c->auth_user);
			strbuf_addc(&raw, '\0');
			strbuf_adds(&raw, c->auth_pass);
			base64_encode(raw.s, raw.len, &b64);
			c->state = C_AUTH_PLAIN;
			io_write(c->io, "AUTH PLAIN ", 11);
			io_write(c->io, b64.s, b64.len);
			io_write(c->io, "\r\n", 2);
		} else {
			c->state = C_AUTH_LOGIN;
			send_line(c, "AUTH LOGIN");
		}
		if (raw.s)
			explicit_bzero(raw.s, raw.cap);
		if (b64.s)
			explicit_bzero(b64.s, b64.cap);
		strbuf_free(&raw);
		strbuf_free(&b64);
		return;
	}
	/* XXX: credentials but no AUTH offered: send without, as Postfix
	 * does; the server decides whether to relay */
	c->state = C_READY;
	begin_txn(c);
}

static void send_b64(struct smtpc *c, const char *s)
{
	struct strbuf b64 = STRBUF_INIT;
	base64_encode(s, strlen(s), &b64);
	io_write(c->io, b64.s ? b64.s : "", b64.len);
	io_write(c->io, "\r\n", 2);
	if (b64.s)
		explicit_bzero(b64.s, b64.cap);
	strbuf_free(&b64);
}

/* --- the transaction ------------------------------------------------- */

static bool has_8bit(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p >= 0x80)
			return true;
	return false;
}

static void send_cmd(struct smtpc *c, const struct cmd *k)
{
	struct smtpc_txn *t = c->t;
	switch (k->kind) {
	case CMD_MAIL: {
		struct strbuf sb = STRBUF_INIT;
		strbuf_addf(&sb, "MAIL FROM:<%s>", t->from);
		if (c->caps.has_size)
			strbuf_addf(&sb, " SIZE=%llu", (unsigned long long)t->size);
		if ((t->body_8bit || t->declare_8bitmime) && c->caps.eightbitmime)
			strbuf_adds(&sb, " BODY=8BITMIME");
		if (t->smtputf8 && c->caps.smtputf8)
			strbuf_adds(&sb, " SMTPUTF8");
		strbuf_adds(&sb, "\r\n");
		io_write(c->io, sb.s, sb.len);
		strbuf_free(&sb);
		break;
	}
	case CMD_RCPT:
		io_printf(c->io, "RCPT TO:<%s>\r\n", t->rcpt[k->rcpt].addr);
		break;
	case CMD_DATA:
		send_line(c, "DATA");
		break;
	}
	c->nsent++;
}

/* Sends what may go now: everything at once with PIPELINING (RFC 2920:
 * DATA ends the group), else one command per reply. */
static void pump(struct smtpc *c)
{
	if (c->caps.pipelining) {
		while (c->nsent < c->ncmd)
			send_cmd(c, &c->cmds[c->nsent]);
		return;
	}
	if (c->nsent == c->nrep && c->nsent < c->ncmd)
		send_cmd(c, &c->cmds[c->nsent]);
}

static void begin_txn(struct smtpc *c)
{
	struct smtpc_txn *t = c->t;
	c->mail_failed = false;
	c->naccepted = 0;
	char buf[SMTP_REPLY_TEXT_MAX];
	/* what this server cannot take fails now, without a transaction */
	bool utf8_from = has_8bit(t->from);
	for (size_t i = 0; i < t->nrcpt; i++) {
		struct smtpc_rcpt *r = &t->rcpt[i];
		if (r->final)
			continue;
		if (c->caps.has_size && c->caps.size > 0 && t->size > c->caps.size) {
			snprintf(buf, sizeof(buf),
			         "552 5.3.4 Message size %llu exceeds the limit of %llu bytes announced by %s",
			         (unsigned long long)t->size, (unsigned long long)c->caps.size, cur_host(c));
			rcpt_local(c, r, SMTPC_PERM, "5.3.4", buf);
		} else if (t->body_8bit && !c->caps.eightbitmime) {
			snprintf(buf, sizeof(buf),
			         "554 5.6.3 Conversion required: 8-bit message and %s does not announce 8BITMIME",
			         cur_host(c));
			rcpt_local(c, r, SMTPC_PERM, "5.6.3", buf);
		} else if ((utf8_from || has_8bit(r->addr)) && !c->caps.smtputf8) {
			snprintf(buf, sizeof(buf),
			         "553 5.6.7 Non-ASCII address and %s does not announce SMTPUTF8", cur_host(c));
			rcpt_local(c, r, SMTPC_PERM, "5.6.7", buf);
		}
	}
	c->cmds = xcalloc(t->nrcpt + 2, sizeof(*c->cmds));
	c->ncmd = c->nsent = c->nrep = 0;
	c->cmds[c->ncmd++].kind = CMD_MAIL;
	for (size_t i = 0; i < t->nrcpt; i++)
		if (!t->rcpt[i].final) {
			c->cmds[c->ncmd].kind = CMD_RCPT;
			c->cmds[c->ncmd++].rcpt = i;
		}
	if (c->ncmd == 1) {
		/* nobody left to send to */
		free(c->cmds);
		c->cmds = NULL;
		c->ncmd = 0;
		c->state = C_READY;
		txn_finish(c);
		c->ntxn--; /* nothing was sent */
		return;
	}
	c->cmds[c->ncmd++].kind = CMD_DATA;
	c->state = C_TXN;
	io_set_timeout(c->io, c->p.cmd_timeout);
	pump(c);
}

/* Every reply of the group is in (or the rest will not be sent). */
static void txn_settle(struct smtpc *c)
{
	struct smtpc_txn *t = c->t;
	bool temp_open = false;
	for (size_t i = 0; i < t->nrcpt; i++)
		if (!t->rcpt[i].final && t->rcpt[i].result == SMTPC_TEMP)
			temp_open = true;
	if (c->naccepted == 0 && temp_open && !c->mail_failed) {
		/* every open recipient got a 4xx: this server is not taking
		 * mail for them now; the next one may */
		set_error(c, "host %s[%s] deferred every recipient", cur_host(c), cur_ip(c));
		for (size_t i = 0; i < t->nrcpt; i++)
			if (!t->rcpt[i].final && t->rcpt[i].reply)
				set_error(c, "%s", t->rcpt[i].reply);
		/* no RSET needed: the connection is closed */
		session_fail(c);
		return;
	}
	for (size_t i = 0; i < t->nrcpt; i++)
		if (!t->rcpt[i].final && t->rcpt[i].result == SMTPC_TEMP)
			t->rcpt[i].final = true;
	txn_finish(c);
}

static void txn_reply(struct smtpc *c)
{
	struct smtpc_txn *t = c->t;
	if (c->nrep >= c->nsent) {
		/* a reply nobody asked for */
		fail_with_reply(c, "sent an unexpected reply");
		return;
	}
	struct cmd *k = &c->cmds[c->nrep++];
	int code = c->reply.code;
	char st[16];
	char *one = reply_line(c);
	smtp_status_from_reply(code, c->reply.text.s, st, sizeof(st));
	switch (k->kind) {
	case CMD_MAIL:
		if (code / 100 == 2) {
			break;
		} else if (code / 100 == 4) {
			set_error(c, "host %s[%s] said: %s (in reply to MAIL FROM)", cur_host(c), cur_ip(c), one);
			free(one);
			session_fail(c);
			return;
		}
		c->mail_failed = true;
		for (size_t i = 0; i < t->nrcpt; i++)
			if (!t->rcpt[i].final)
				rcpt_set(c, &t->rcpt[i], SMTPC_PERM, true, one, st);
		if (!c->caps.pipelining) {
			free(one);
			txn_settle(c);
			return;
		}
		break;
	case CMD_RCPT: {
		struct smtpc_rcpt *r = &t->rcpt[k->rcpt];
		if (c->mail_failed)
			break;
		if (code / 100 == 2) {
			rcpt_set(c, r, SMTPC_OK, false, one, st);
			c->naccepted++;
		} else if (code / 100 == 4) {
			rcpt_set(c, r, SMTPC_TEMP, false, one, st);
		} else {
			rcpt_set(c, r, SMTPC_PERM, true, one, st);
		}
		if (!c->caps.pipelining && c->nrep == c->ncmd - 1 && c->naccepted == 0) {
			/* nobody accepted: no DATA */
			free(one);
			txn_settle(c);
			return;
		}
		break;
	}
	case CMD_DATA:
		if (c->mail_failed || c->naccepted == 0) {
			if (code == 354) {
				/* a server that takes DATA without recipients: end it */
				c->state = C_DATA_ABORT;
				send_line(c, ".");
				free(one);
				return;
			}
			free(one);
			txn_settle(c);
			return;
		}
		if (code == 354) {
			c->state = C_BODY;
			io_write(c->io, t->body, t->body_len);
			io_set_timeout(c->io, c->p.data_timeout);
			free(one);
			return;
		}
		if (code / 100 == 4) {
			set_error(c, "host %s[%s] said: %s (in reply to DATA)", cur_host(c), cur_ip(c), one);
			free(one);
			session_fail(c);
			return;
		}
		for (size_t i = 0; i < t->nrcpt; i++)
			if (!t->rcpt[i].final && t->rcpt[i].result == SMTPC_OK)
				rcpt_set(c, &t->rcpt[i], SMTPC_PERM, true, one, st);
		free(one);
		txn_settle(c);
		return;
	}
	free(one);
	pump(c);
}

static void body_reply(struct smtpc *c)
{
	struct smtpc_txn *t = c->t;
	int code = c->reply.code;
	char st[16];
	char *one = reply_line(c);
	smtp_status_from_reply(code, c->reply.text.s, st, sizeof(st));
	io_set_timeout(c->io, c->p.cmd_timeout);
	if (code / 100 == 4) {
		set_error(c, "host %s[%s] said: %s (in reply to end of DATA)", cur_host(c), cur_ip(c), one);
		free(one);
		session_fail(c);
		return;
	}
	enum smtpc_result res = code / 100 == 2 ? SMTPC_OK : SMTPC_PERM;
	for (size_t i = 0; i < t->nrcpt; i++)
		if (!t->rcpt[i].final && t->rcpt[i].result == SMTPC_OK)
			rcpt_set(c, &t->rcpt[i], res, true, one, st);
	free(one);
	c->state = C_TXN;
	txn_settle(c);
}

/* --- replies ---------------------------------------------------------- */

static void handle_reply(struct smtpc *c)
{
	int code = c->reply.code;
	switch (c->state) {
	case C_GREETING:
		if (code != 220) {
			fail_with_reply(c, "refused to talk to me");
			return;
		}
		c->state = C_EHLO;
		send_line(c, "EHLO %s", c->helo);
		return;
	case C_EHLO:
		if (code == 250) {
			smtp_caps_parse(&c->reply, &c->caps);
			auth_or_ready(c);
			return;
		}
		if (code / 100 == 5) {
			c->state = C_HELO;
			send_line(c, "HELO %s", c->helo);
			return;
		}
		fail_with_reply(c, "refused EHLO");
		return;
	case C_HELO:
		if (code != 250) {
			fail_with_reply(c, "refused HELO");
			return;
		}
		memset(&c->caps, 0, sizeof(c->caps));
		auth_or_ready(c);
		return;
	case C_AUTH_PLAIN:
	case C_AUTH_PASS:
		if (code != 235) {
			fail_with_reply(c, "refused authentication");
			return;
		}
		c->state = C_READY;
		begin_txn(c);
		return;
	case C_AUTH_LOGIN:
		if (code != 334) {
			fail_with_reply(c, "refused AUTH LOGIN");
			return;
		}
		c->state = C_AUTH_USER;
		send_b64(c, c->auth_user);
		return;
	case C_AUTH_USER:
		if (code != 334) {
			fail_with_reply(c, "refused the user name");
			return;
		}
		c->state = C_AUTH_PASS;
		send_b64(c, c->auth_pass);
		return;
	case C_RSET:
		if (code != 250) {
			fail_with_reply(c, "refused RSET");
			return;
		}
		c->state = C_READY;
		begin_txn(c);
		return;
	case C_TXN:
		txn_reply(c);
		return;
	case C_DATA_ABORT:
		c->state = C_TXN;
		txn_settle(c);
		return;
	case C_BODY:
		body_reply(c);
		return;
	case C_IDLE:
		/* e.g. "421 idle timeout": the server is closing */
		drop_io(c);
		c->state = C_DEAD;
		event_active(c->closed_ev, EV_TIMEOUT, 0);
		return;
	case C_QUIT:
		return; /* 221; the close follows */
	default:
		fail_with_reply(c, "sent a reply out of turn");
		return;
	}
}

static void io_read(struct io *io, void *ctx)
{
	struct smtpc *c = ctx;
	while (c->io == io) {
		char *line;
		size_t len;
		int r = io_getline(io, SMTP_REPLY_LINE_MAX, &line, &len);
		if (r == 0)
			return;
		if (r < 0 || smtp_reply_feed(&c->reply, line, len) < 0) {
			if (c->t == NULL) {
				drop_io(c);
				c->state = C_DEAD;
				event_active(c->closed_ev, EV_TIMEOUT, 0);
				return;
			}
			set_error(c, "host %s[%s] sent a malformed reply", cur_host(c), cur_ip(c));
			session_fail(c);
			return;
		}
		if (c->reply.done) {
			handle_reply(c);
			/* the reply object is reused for the next one */
		}
	}
}

/* --- public ------------------------------------------------------------ */

struct smtpc *smtpc_new(struct event_base *base, const struct smtpc_target *targets, size_t ntargets,
                        const struct smtpc_params *params, const struct smtpc_callbacks *cb, void *arg)
{
	struct smtpc *c = xcalloc(1, sizeof(*c));
	c->base = base;
	c->targets = xcalloc(ntargets ? ntargets : 1, sizeof(*c->targets));
	for (size_t i = 0; i < ntargets; i++) {
		c->targets[i].host = xstrdup(targets[i].host);
		c->targets[i].ip = xstrdup(targets[i].ip);
		c->targets[i].port = targets[i].port;
	}
	c->ntargets = ntargets;
	c->p = *params;
	c->helo = xstrdup(params->helo);
	c->auth_user = params->auth_user ? xstrdup(params->auth_user) : NULL;
	c->auth_pass = params->auth_pass ? xstrdup(params->auth_pass) : NULL;
	c->p.helo = c->helo;
	c->p.auth_user = c->auth_user;
	c->p.auth_pass = c->auth_pass;
	c->cb = *cb;
	c->arg = arg;
	smtp_reply_init(&c->reply);
	c->done_ev = event_new(base, -1, 0, on_done_ev, c);
	c->closed_ev = event_new(base, -1, 0, on_closed_ev, c);
	c->state = C_NONE;
	return c;
}

void smtpc_start_txn(struct smtpc *c, struct smtpc_txn *t)
{
	if (c->t != NULL || c->done_t != NULL)
		panic("smtpc: transaction already running");
	c->t = t;
	c->restarted = false;
	t->reached = false;
	t->lost_after_data = false;
	if (c->state == C_IDLE || c->state == C_READY) {
		c->txn_reused = true;
		t->reached = true;
		c->state = C_RSET;
		io_set_timeout(c->io, c->p.cmd_timeout);
		send_line(c, "RSET");
		return;
	}
	c->txn_reused = false;
	c->ti = 0;
	connect_next(c);
}

void smtpc_idle(struct smtpc *c, int secs)
{
	if (c->state != C_READY || c->io == NULL)
		return;
	c->state = C_IDLE;
	io_set_timeout(c->io, secs > 0 ? secs : 1);
}

void smtpc_quit(struct smtpc *c)
{
	if (c->io && (c->state == C_READY || c->state == C_IDLE)) {
		c->state = C_QUIT;
		send_line(c, "QUIT");
		io_set_timeout(c->io, c->p.cmd_timeout);
		io_close_when_flushed(c->io);
		return;
	}
	if (c->state == C_QUIT)
		return;
	drop_io(c);
	c->state = C_DEAD;
	event_active(c->closed_ev, EV_TIMEOUT, 0);
}

void smtpc_free(struct smtpc **cp)
{
	struct smtpc *c = *cp;
	if (c == NULL)
		return;
	io_free(&c->io);
	event_free(c->done_ev);
	event_free(c->closed_ev);
	smtp_reply_free(&c->reply);
	for (size_t i = 0; i < c->ntargets; i++) {
		free(c->targets[i].host);
		free(c->targets[i].ip);
	}
	free(c->targets);
	free(c->cmds);
	free(c->helo);
	if (c->auth_pass) {
		explicit_bzero(c->auth_pass, strlen(c->auth_pass));
		free(c->auth_pass);
	}
	free(c->auth_user);
	free(c);
	*cp = NULL;
}

bool smtpc_usable(const struct smtpc *c)
{
	return c->io != NULL && (c->state == C_READY || c->state == C_IDLE);
}

bool smtpc_committing(const struct smtpc *c)
{
	return c->state == C_BODY;
}

int smtpc_txn_count(const struct smtpc *c)
{
	return c->ntxn;
}

void smtpc_txn_clear(struct smtpc_txn *t)
{
	for (size_t i = 0; i < t->nrcpt; i++) {
		struct smtpc_rcpt *r = &t->rcpt[i];
		free(r->reply);
		free(r->host);
		free(r->ip);
		r->reply = r->host = r->ip = NULL;
		r->result = SMTPC_NONE;
		r->final = false;
		r->status[0] = '\0';
	}
	free(t->error);
	t->error = NULL;
}
