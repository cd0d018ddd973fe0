/* smtp — RFC 5321 server sessions (MX and submission).
 *
 * Role: runs on the event loop thread of `posthorn serve`.
 * State machine: INIT (greeted) → READY (after HELO/EHLO) → MAIL → RCPT
 * → DATA or BDAT → WAIT (commit in flight) → READY. AUTH and password
 * checks run on a worker thread while the session is paused (AUTHWAIT).
 * Invariants: "250 queued" is sent only from the committer callback, i.e.
 * after the message is fsync'd and renamed into queue/pending; BDAT chunk
 * bytes are always consumed, even when the command is refused, so chunk
 * content can never be read as commands; DATA ends only at CRLF.CRLF and
 * a message with a bare CR or LF is refused (proto/smtp.h).
 * On error: local trouble → 451 4.3.0 and the message is not kept; client
 * errors → 5xx/4xx replies with enhanced status codes. */
#include "smtp/smtp.h"
#include "daemon/daemon.h"
#include "lib/base64.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"
#include "mail/address.h"
#include "mail/message.h"
#include "proto/sasl.h"
#include "proto/smtp.h"
#include "queue/committer.h"
#include "queue/queue.h"
#include "store/maildir.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Bad or unknown commands before we hang up (Postfix smtpd_hard_error_limit
 * is 20; we are stricter). */
#define SMTP_MAX_ERRORS 10
/* Failed AUTH attempts per session before we hang up. */
#define SMTP_MAX_AUTH_FAILS 3
/* Delay before answering a failed AUTH (slows guessing). */
#define SMTP_AUTH_FAIL_DELAY_MS 1000
/* HELO argument kept for logs and Received: (longer is cut). */
#define SMTP_HELO_MAX 255
/* Bytes per second a client must average inside DATA/BDAT (Postfix
 * smtpd_min_data_rate default). */
#define SMTP_MIN_DATA_RATE 500.0
/* Head of the message kept in memory to count Received: hops. */
#define SMTP_HEAD_KEEP (64 * 1024)

enum smtp_state {
	SMTP_STATE_INIT,
	SMTP_STATE_READY,
	SMTP_STATE_MAIL,
	SMTP_STATE_RCPT,
	SMTP_STATE_DATA,
	SMTP_STATE_BDAT,
	SMTP_STATE_WAIT,
	SMTP_STATE_AUTH,     /* waiting for a SASL response line */
	SMTP_STATE_AUTHWAIT, /* password check in flight */
	SMTP_STATE_CLOSING,
};

enum auth_mech { AUTH_PLAIN, AUTH_LOGIN };

struct smtp_session {
	struct daemon *d;
	struct io *io;
	char id[24];
	struct sockaddr_storage peer;
	char ip[64];
	bool submission;
	bool plain_auth_ok;
	bool relay_net;
	enum smtp_state state;
	char *helo;
	bool esmtp;
	char *auth_user;
	int errors;
	int auth_fails;
	/* AUTH exchange */
	enum auth_mech mech;
	int auth_step;
	char *auth_login_user;
	/* transaction */
	struct smtp_mail_args margs;
	bool has_mail;
	struct strv rcpts;
	bool writing;
	struct queue_writer w;
	struct smtp_data data;
	struct strbuf out;  /* unstuffed bytes waiting to be written */
	struct strbuf head; /* first SMTP_HEAD_KEEP bytes of the message */
	uint64_t msg_size;
	bool too_big;
	bool write_failed;
	/* BDAT */
	uint64_t bdat_left;
	bool bdat_last;
	bool bdat_refused;      /* current chunk is read and thrown away */
	const char *bdat_reply; /* reply for a refused chunk */
	bool bdat_txn;          /* a BDAT transaction is open */
	bool close_after_commit;
	double data_deadline;
	int64_t started;
	struct smtp_session *prev, *next;
};

static struct smtp_session *sessions;
static int nsessions;

int smtp_session_count(void)
{
	return nsessions;
}

static void reply(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct smtp_session *s, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		panic("smtp reply formatting failed");
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	io_write(s->io, buf, (size_t)n);
	io_write(s->io, "\r\n", 2);
}

static void ev_reject(struct smtp_session *s, const char *cmd, const char *why, const char *arg)
{
	struct event e;
	event_begin(&e, "reject", s->id);
	event_str(&e, "ip", s->ip);
	event_str(&e, "cmd", cmd);
	event_str(&e, "arg", arg);
	event_str(&e, "reason", why);
	if (s->auth_user)
		event_str(&e, "user", s->auth_user);
	event_end(&e);
	s->d->n_rejected++;
}

static double now_secs(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_state(struct smtp_session *s, enum smtp_state st)
{
	bool was_data = s->state == SMTP_STATE_DATA || s->state == SMTP_STATE_BDAT;
	bool data = st == SMTP_STATE_DATA || st == SMTP_STATE_BDAT;
	s->state = st;
	int t = data ? (int)s->d->cfg.smtp_data_timeout : (int)s->d->cfg.smtp_command_timeout;
	io_set_timeout(s->io, t);
	if (data && !was_data) {
		/* the DATA phase as a whole has a deadline too, extended by
		 * SMTP_MIN_DATA_RATE for what arrives (data_progress) */
		s->data_deadline = now_secs() + t;
		io_set_deadline(s->io, t);
	} else if (!data) {
		io_set_deadline(s->io, (int)s->d->cfg.smtp_command_timeout);
	}
}

/* Credits received message bytes against the DATA deadline: a client
 * must keep up SMTP_MIN_DATA_RATE on average (Postfix's
 * smtpd_min_data_rate), so one byte every few seconds cannot hold a
 * session for ever, while an idle client is cut off by the read timeout. */
static void data_progress(struct smtp_session *s, size_t n)
{
	double now = now_secs(), t = (double)s->d->cfg.smtp_data_timeout;
	s->data_deadline += (double)n / SMTP_MIN_DATA_RATE;
	if (s->data_deadline > now + t)
		s->data_deadline = now + t;
	long left_ms = (long)((s->data_deadline - now) * 1000);
	io_set_deadline_ms(s->io, left_ms > 0 ? left_ms : 1); /* 1 ms: expired, fire now */
}

static void txn_reset(struct smtp_session *s)
{
	if (s->writing) {
		queue_writer_abort(&s->w, s->d->data_dir);
		s->writing = false;
	}
	address_free(&s->margs.addr);
	memset(&s->margs, 0, sizeof(s->margs));
	s->has_mail = false;
	strv_free(&s->rcpts);
	strbuf_reset(&s->out);
	strbuf_reset(&s->head);
	s->msg_size = 0;
	s->too_big = false;
	s->write_failed = false;
	s->bdat_txn = false;
	s->bdat_left = 0;
	s->bdat_last = false;
	s->bdat_refused = false;
}

static void session_free(struct smtp_session *s)
{
	txn_reset(s);
	struct event e;
	event_begin(&e, "disconnect", s->id);
	event_str(&e, "ip", s->ip);
	event_int(&e, "duration_ms", ((int64_t)time(NULL) - s->started) * 1000);
	event_end(&e);
	if (s->prev)
		s->prev->next = s->next;
	else
		sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	nsessions--;
	daemon_conn_release(s->d, (struct sockaddr *)&s->peer);
	io_free(&s->io);
	strbuf_free(&s->out);
	strbuf_free(&s->head);
	free(s->helo);
	free(s->auth_user);
	if (s->auth_login_user) {
		explicit_bzero(s->auth_login_user, strlen(s->auth_login_user));
		free(s->auth_login_user);
	}
	free(s);
}

static void close_session(struct smtp_session *s)
{
	s->state = SMTP_STATE_CLOSING;
	io_close_when_flushed(s->io);
}

static void count_error(struct smtp_session *s)
{
	if (++s->errors >= SMTP_MAX_ERRORS) {
		reply(s, "421 4.7.0 %s Too many errors, closing connection", s->d->hostname);
		close_session(s);
	}
}

/* --- HELO / EHLO ---------------------------------------------------- */

static char *clean_helo(const char *arg)
{
	struct strbuf sb = STRBUF_INIT;
	for (const unsigned char *p = (const unsigned char *)arg; *p && sb.len < SMTP_HELO_MAX; p++)
		strbuf_addc(&sb, (*p > 32 && *p < 127 && *p != '(' && *p != ')') ? (char)*p : '_');
	return sb.s ? strbuf_detach(&sb, NULL) : xstrdup("");
}

static void cmd_helo(struct smtp_session *s, const char *arg, bool ehlo)
{
	while (*arg == ' ' || *arg == '\t')
		arg++;
	if (*arg == '\0') {
		reply(s, "501 5.5.4 Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
		count_error(s);
		return;
	}
	txn_reset(s);
	free(s->helo);
	s->helo = clean_helo(arg);
	s->esmtp = ehlo;
	struct event e;
	event_begin(&e, "helo", s->id);
	event_str(&e, "ip", s->ip);
	event_str(&e, "helo", s->helo);
	event_end(&e);
	set_state(s, SMTP_STATE_READY);
	if (!ehlo) {
		reply(s, "250 %s", s->d->hostname);
		return;
	}
	reply(s, "250-%s Hello %s [%s]", s->d->hostname, s->helo, s->ip);
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %" PRIu64, s->d->cfg.max_message_size);
	reply(s, "250-8BITMIME");
	reply(s, "250-ENHANCEDSTATUSCODES");
	reply(s, "250-SMTPUTF8");
	reply(s, "250-CHUNKING");
	if (s->plain_auth_ok && s->auth_user == NULL)
		reply(s, "250-AUTH PLAIN LOGIN");
	reply(s, "250 HELP");
}

/* --- AUTH ------------------------------------------------------------ */

struct auth_job {
	struct smtp_session *s;
	char *login;
	char *password;
	char *canonical;
	int result;
};

static void auth_job_run(void *arg)
{
	struct auth_job *j = arg;
	struct directory *dir = daemon_thread_directory(j->s->d);
	j->result = dir ? directory_auth(dir, j->login, j->password, &j->canonical) : -1;
	explicit_bzero(j->password, strlen(j->password));
}

static void auth_finish(struct auth_job *j)
{
	struct smtp_session *s = j->s;
	struct event e;
	if (j->result == 1) {
		s->auth_user = j->canonical;
		j->canonical = NULL;
		event_begin(&e, "auth", s->id);
		event_str(&e, "ip", s->ip);
		event_str(&e, "user", s->auth_user);
		event_str(&e, "result", "ok");
		event_end(&e);
		reply(s, "235 2.7.0 Authentication successful");
	} else {
		event_begin(&e, "auth", s->id);
		event_str(&e, "ip", s->ip);
		event_str(&e, "user", j->login);
		event_str(&e, "result", j->result < 0 ? "error" : "fail");
		event_end(&e);
		if (j->result < 0)
			reply(s, "454 4.7.0 Temporary authentication failure");
		else
			reply(s, "535 5.7.8 Authentication credentials invalid");
		if (++s->auth_fails >= SMTP_MAX_AUTH_FAILS) {
			reply(s, "421 4.7.0 %s Too many failed authentications", s->d->hostname);
			close_session(s);
			goto out;
		}
	}
	if (s->close_after_commit) {
		close_session(s);
		goto out;
	}
	set_state(s, SMTP_STATE_READY);
	io_resume(s->io);
out:
	free(j->login);
	free(j->password);
	free(j->canonical);
	free(j);
}

static void auth_delay_done(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	auth_finish(arg);
}

static void auth_job_done(void *arg)
{
	struct auth_job *j = arg;
	if (j->result == 0) {
		struct timeval tv = { SMTP_AUTH_FAIL_DELAY_MS / 1000, (SMTP_AUTH_FAIL_DELAY_MS % 1000) * 1000 };
		event_base_once(j->s->d->base, -1, EV_TIMEOUT, auth_delay_done, j, &tv);
		return;
	}
	auth_finish(j);
}

static void auth_check(struct smtp_session *s, const char *login, const char *password)
{
	struct auth_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->login = xstrdup(login);
	j->password = xstrdup(password);
	set_state(s, SMTP_STATE_AUTHWAIT);
	io_set_timeout(s->io, 0);
	io_set_deadline(s->io, 0);
	io_pause(s->io);
	workers_submit(s->d->workers, auth_job_run, auth_job_done, j);
}

static void auth_abort(struct smtp_session *s, const char *msg)
{
	reply(s, "%s", msg);
	if (s->auth_login_user) {
		free(s->auth_login_user);
		s->auth_login_user = NULL;
	}
	set_state(s, SMTP_STATE_READY);
	count_error(s);
}

/* Handles one SASL response (base64, already stripped of CRLF). */
static void auth_response(struct smtp_session *s, const char *b64)
{
	if (strcmp(b64, "*") == 0) {
		auth_abort(s, "501 5.7.0 Authentication cancelled");
		return;
	}
	if (s->mech == AUTH_PLAIN) {
		struct strbuf buf = STRBUF_INIT;
		const char *authz, *authc, *pass, *err;
		if (sasl_plain_decode(b64, strlen(b64), &buf, &authz, &authc, &pass, &err) < 0) {
			char msg[160];
			snprintf(msg, sizeof(msg), "501 5.5.2 Bad PLAIN response: %s", err);
			auth_abort(s, msg);
		} else {
			auth_check(s, authc, pass);
		}
		if (buf.s)
			explicit_bzero(buf.s, buf.cap);
		strbuf_free(&buf);
		return;
	}
	struct strbuf dec = STRBUF_INIT;
	if (strcmp(b64, "=") != 0 && base64_decode(b64, strlen(b64), &dec) < 0) {
		strbuf_free(&dec);
		auth_abort(s, "501 5.5.2 Cannot decode response");
		return;
	}
	if (dec.s == NULL)
		strbuf_add(&dec, "", 0);
	if (s->auth_step == 0) {
		s->auth_login_user = xstrndup(dec.s, dec.len);
		s->auth_step = 1;
		reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
	} else {
		auth_check(s, s->auth_login_user, dec.s);
		free(s->auth_login_user);
		s->auth_login_user = NULL;
	}
	explicit_bzero(dec.s, dec.len);
	strbuf_free(&dec);
}

static void cmd_auth(struct smtp_session *s, const char *arg)
{
	if (!s->plain_auth_ok) {
		reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
		count_error(s);
		return;
	}
	if (s->auth_user) {
		reply(s, "503 5.5.1 Already authenticated");
		count_error(s);
		return;
	}
	if (s->has_mail) {
		reply(s, "503 5.5.1 AUTH not allowed during a mail transaction");
		count_error(s);
		return;
	}
	char mech[32];
	size_t n = strcspn(arg, " ");
	if (n == 0 || n >= sizeof(mech)) {
		reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		count_error(s);
		return;
	}
	memcpy(mech, arg, n);
	mech[n] = '\0';
	const char *initial = arg[n] == ' ' ? arg + n + 1 : NULL;
	if (strcasecmp(mech, "PLAIN") == 0)
		s->mech = AUTH_PLAIN;
	else if (strcasecmp(mech, "LOGIN") == 0)
		s->mech = AUTH_LOGIN;
	else {
		reply(s, "504 5.5.4 Unrecognized authentication mechanism");
		count_error(s);
		return;
	}
	s->auth_step = 0;
	set_state(s, SMTP_STATE_AUTH);
	if (initial) {
		/* may move on to AUTHWAIT (PLAIN) or ask for more (LOGIN) */
		auth_response(s, initial);
		return;
	}
	if (s->mech == AUTH_PLAIN)
		reply(s, "334 ");
	else
		reply(s, "334 VXNlcm5hbWU6"); /* "Username:" */
}

/* --- MAIL / RCPT ----------------------------------------------------- */

static void cmd_mail(struct smtp_session *s, const char *arg)
{
	if (s->state == SMTP_STATE_INIT) {
		reply(s, "503 5.5.1 Send HELO/EHLO first");
		count_error(s);
		return;
	}
	if (s->has_mail) {
		reply(s, "503 5.5.1 Nested MAIL command");
		count_error(s);
		return;
	}
	if (s->submission && s->auth_user == NULL) {
		reply(s, "530 5.7.0 Authentication required");
		ev_reject(s, "MAIL", "authentication required", arg);
		count_error(s);
		return;
	}
	if (s->d->stopping) {
		reply(s, "421 4.3.2 %s Service shutting down", s->d->hostname);
		close_session(s);
		return;
	}
	const char *err;
	if (smtp_parse_mail(arg, &s->margs, &err) < 0) {
		reply(s, "%s", err);
		ev_reject(s, "MAIL", err, arg);
		count_error(s);
		return;
	}
	if (s->margs.has_size && s->margs.size > s->d->cfg.max_message_size) {
		address_free(&s->margs.addr);
		reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
		ev_reject(s, "MAIL", "declared size too big", arg);
		return;
	}
	s->has_mail = true;
	char *from = address_format(&s->margs.addr);
	struct event e;
	event_begin(&e, "mail", s->id);
	event_str(&e, "ip", s->ip);
	event_str(&e, "from", from);
	if (s->auth_user)
		event_str(&e, "user", s->auth_user);
	if (s->margs.has_size)
		event_int(&e, "size", (int64_t)s->margs.size);
	event_end(&e);
	free(from);
	set_state(s, SMTP_STATE_MAIL);
	reply(s, "250 2.1.0 Ok");
}

static bool relay_allowed(struct smtp_session *s)
{
	return s->auth_user != NULL || s->relay_net;
}

static void cmd_rcpt(struct smtp_session *s, const char *arg)
{
	if (!s->has_mail) {
		reply(s, "503 5.5.1 Need MAIL before RCPT");
		count_error(s);
		return;
	}
	if ((int64_t)s->rcpts.n >= s->d->cfg.max_recipients) {
		reply(s, "452 4.5.3 Too many recipients");
		ev_reject(s, "RCPT", "too many recipients", arg);
		return;
	}
	struct mail_address a;
	const char *err;
	/* RFC 5321 4.5.1: "<Postmaster>" without a domain must be accepted */
	if (strncasecmp(arg, "<postmaster>", 12) == 0 && (arg[12] == '\0' || arg[12] == ' ')) {
		char *dom = directory_primary_domain(s->d->dir);
		a.local = xstrdup("postmaster");
		a.domain = dom ? dom : xstrdup("localhost");
		a.quoted = a.literal = false;
	} else if (smtp_parse_rcpt(arg, s->margs.smtputf8, &a, &err) < 0) {
		reply(s, "%s", err);
		ev_reject(s, "RCPT", err, arg);
		count_error(s);
		return;
	}
	char *addr = address_format(&a);
	char *mailbox = NULL;
	enum dir_rcpt_kind kind = a.literal ? DIR_RCPT_REMOTE
	                                    : directory_rcpt_kind(s->d->dir, a.local, a.domain, &mailbox);
	switch (kind) {
	case DIR_RCPT_ERROR:
		reply(s, "451 4.3.0 Temporary directory failure");
		ev_reject(s, "RCPT", "directory error", addr);
		goto out;
	case DIR_RCPT_UNKNOWN:
		reply(s, "550 5.1.1 <%s>: Recipient address rejected: User unknown", addr);
		ev_reject(s, "RCPT", "unknown user", addr);
		goto out;
	case DIR_RCPT_REMOTE:
		if (!relay_allowed(s)) {
			reply(s, "554 5.7.1 <%s>: Relay access denied", addr);
			ev_reject(s, "RCPT", "relay denied", addr);
			goto out;
		}
		break;
	case DIR_RCPT_LOCAL: {
		uint64_t quota = 0, used = 0;
		char path[PATH_MAX];
		if (directory_user_quota(s->d->dir, mailbox, &quota) == 0 && quota > 0 &&
		    store_maildir_path(path, sizeof(path), s->d->data_dir, mailbox) == 0 &&
		    store_maildir_usage(path, &used) == 0 && used >= quota) {
			reply(s, "452 4.2.2 <%s>: Mailbox full", addr);
			ev_reject(s, "RCPT", "mailbox full", addr);
			goto out;
		}
		break;
	}
	case DIR_RCPT_ALIAS: {
		/* an alias that leads nowhere (a loop, only unknown targets)
		 * is refused now rather than accepted and dropped later */
		struct strv loc = { 0 }, rem = { 0 }, unk = { 0 };
		const char *xerr;
		int xr = directory_expand(s->d->dir, addr, &loc, &rem, &unk, &xerr);
		bool empty = xr == 0 && loc.n == 0 && rem.n == 0;
		strv_free(&loc);
		strv_free(&rem);
		strv_free(&unk);
		if (xr < 0 && strncmp(xerr, "alias ", 6) != 0) {
			reply(s, "451 4.3.0 Temporary directory failure");
			ev_reject(s, "RCPT", "directory error", addr);
			goto out;
		}
		if (xr < 0 || empty) {
			reply(s, "550 5.4.6 <%s>: Alias loop or no deliverable target", addr);
			ev_reject(s, "RCPT", xr < 0 ? xerr : "alias without deliverable target", addr);
			goto out;
		}
		break;
	}
	}
	if (!strv_contains(&s->rcpts, addr))
		strv_add(&s->rcpts, addr);
	struct event e;
	event_begin(&e, "rcpt", s->id);
	event_str(&e, "ip", s->ip);
	event_str(&e, "rcpt", addr);
	event_str(&e, "kind", kind == DIR_RCPT_REMOTE ? "relay" : "local");
	event_end(&e);
	set_state(s, SMTP_STATE_RCPT);
	reply(s, "250 2.1.5 Ok");
out:
	free(mailbox);
	free(addr);
	address_free(&a);
}

/* --- message reception ------------------------------------------------ */

static void rfc5322_date(char *buf, size_t n)
{
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(buf, n, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* Opens the queue file and writes our Received: line. */
static bool txn_open(struct smtp_session *s)
{
	struct queue_env env = { 0 };
	queue_id_new(env.id);
	env.received = (int64_t)time(NULL);
	env.from = address_format(&s->margs.addr);
	for (size_t i = 0; i < s->rcpts.n; i++)
		strv_add(&env.rcpt, s->rcpts.v[i]);
	env.client_ip = xstrdup(s->ip);
	env.helo = xstrdup(s->helo ? s->helo : "");
	env.auth_user = s->auth_user ? xstrdup(s->auth_user) : NULL;
	env.origin = xstrdup(s->submission ? "submission" : "smtp");
	env.body_8bit = s->margs.body == SMTP_BODY_8BITMIME;
	env.smtputf8 = s->margs.smtputf8;
	const char *err;
	if (queue_writer_open(&s->w, s->d->data_dir, &env, &err) < 0) {
		log_error("%s: cannot create queue file: %s", s->id, err);
		queue_env_free(&env);
		return false;
	}
	s->writing = true;
	char date[64];
	rfc5322_date(date, sizeof(date));
	const char *with = s->margs.smtputf8 ? (s->auth_user ? "UTF8SMTPA" : "UTF8SMTP")
	                   : s->esmtp        ? (s->auth_user ? "ESMTPA" : "ESMTP")
	                                     : "SMTP";
	struct strbuf rcv = STRBUF_INIT;
	strbuf_addf(&rcv, "Received: from %s ([%s])\r\n\tby %s (posthorn) with %s id %s", s->helo ? s->helo : "unknown",
	            s->ip, s->d->hostname, with, env.id);
	if (s->rcpts.n == 1)
		strbuf_addf(&rcv, "\r\n\tfor <%s>", s->rcpts.v[0]);
	strbuf_addf(&rcv, ";\r\n\t%s\r\n", date);
	queue_writer_append(&s->w, rcv.s, rcv.len);
	strbuf_free(&rcv);
	queue_env_free(&env);
	smtp_data_init(&s->data, (size_t)s->d->cfg.max_line_length);
	s->msg_size = 0;
	s->too_big = false;
	return true;
}

/* Appends message bytes (already unstuffed) to the queue file. */
static void txn_write(struct smtp_session *s, const char *p, size_t n)
{
	s->msg_size += n;
	if (s->msg_size > s->d->cfg.max_message_size)
		s->too_big = true;
	if (s->too_big || !s->writing)
		return;
	if (s->head.len < SMTP_HEAD_KEEP) {
		size_t k = SMTP_HEAD_KEEP - s->head.len;
		strbuf_add(&s->head, p, n < k ? n : k);
	}
	queue_writer_append(&s->w, p, n);
}

struct commit_ctx {
	struct smtp_session *s;
	char id[QUEUE_ID_LEN + 1];
	uint64_t size;
};

static void commit_done(void *arg, int result, const char *error)
{
	struct commit_ctx *c = arg;
	struct smtp_session *s = c->s;
	struct event e;
	if (result == 0) {
		event_begin(&e, "queued", s->id);
		event_str(&e, "id", c->id);
		event_str(&e, "ip", s->ip);
		event_str(&e, "helo", s->helo);
		if (s->auth_user)
			event_str(&e, "user", s->auth_user);
		char *from = address_format(&s->margs.addr);
		event_str(&e, "from", from);
		free(from);
		event_int(&e, "nrcpt", (int64_t)s->rcpts.n);
		event_int(&e, "size", (int64_t)c->size);
		event_end(&e);
		s->d->n_accepted++;
		reply(s, "250 2.0.0 Ok: queued as %s", c->id);
	} else {
		log_error("%s: commit of %s failed: %s", s->id, c->id, error);
		event_begin(&e, "reject", s->id);
		event_str(&e, "ip", s->ip);
		event_str(&e, "reason", "local error while queueing");
		event_str(&e, "error", error);
		event_end(&e);
		reply(s, "451 4.3.0 Local error in processing, try again later");
	}
	free(c);
	s->writing = false; /* the committer owns (and has renamed or removed) the file */
	txn_reset(s);
	if (s->close_after_commit || s->d->stopping) {
		reply(s, "421 4.3.2 %s Service shutting down", s->d->hostname);
		close_session(s);
		return;
	}
	set_state(s, SMTP_STATE_READY);
	io_resume(s->io);
}

/* End of DATA or of the LAST BDAT chunk: refuse or commit. */
static void txn_end(struct smtp_session *s)
{
	const char *refuse = NULL, *why = NULL;
	if (s->data.bare_cr || s->data.bare_lf) {
		refuse = "550 5.6.0 Message contains bare CR or bare LF (RFC 5321 2.3.8); not accepted";
		why = "bare CR or LF";
	} else if (s->too_big) {
		refuse = "552 5.3.4 Message size exceeds fixed maximum message size";
		why = "message too big";
	} else if (s->data.long_line) {
		refuse = "550 5.6.0 Message has a line longer than 998 octets (RFC 5322 2.1.1)";
		why = "line too long";
	} else if (!s->writing) {
		refuse = "451 4.3.0 Local error in processing, try again later";
		why = "queue file could not be created";
	} else if (message_count_received(s->head.s ? s->head.s : "", s->head.len) + 1 >
	           s->d->cfg.max_hops) {
		refuse = "554 5.4.6 Too many hops (mail loop?)";
		why = "too many hops";
	}
	const char *err;
	if (refuse == NULL && queue_writer_finish(&s->w, &err) < 0) {
		log_error("%s: writing queue file failed: %s", s->id, err);
		refuse = "451 4.3.0 Local error in processing, try again later";
		why = "queue write failed";
	}
	if (refuse) {
		reply(s, "%s", refuse);
		char *from = address_format(&s->margs.addr);
		ev_reject(s, s->bdat_txn ? "BDAT" : "DATA", why, from);
		free(from);
		txn_reset(s);
		set_state(s, SMTP_STATE_READY);
		return;
	}
	struct commit_ctx *c = xcalloc(1, sizeof(*c));
	c->s = s;
	memcpy(c->id, s->w.id, sizeof(c->id));
	c->size = s->msg_size;
	set_state(s, SMTP_STATE_WAIT);
	io_set_timeout(s->io, 0);
	io_set_deadline(s->io, 0);
	io_pause(s->io);
	committer_submit(s->d->committer, &s->w, commit_done, c);
}

static void cmd_data(struct smtp_session *s, const char *arg)
{
	if (*arg) {
		reply(s, "501 5.5.4 Syntax: DATA");
		count_error(s);
		return;
	}
	if (s->bdat_txn) {
		reply(s, "503 5.5.1 DATA not allowed after BDAT");
		count_error(s);
		return;
	}
	if (!s->has_mail) {
		reply(s, "503 5.5.1 Need MAIL command");
		count_error(s);
		return;
	}
	if (s->rcpts.n == 0) {
		reply(s, "554 5.5.1 No valid recipients");
		count_error(s);
		return;
	}
	if (!txn_open(s)) {
		reply(s, "451 4.3.0 Local error in processing, try again later");
		return;
	}
	set_state(s, SMTP_STATE_DATA);
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void data_input(struct smtp_session *s)
{
	size_t avail;
	const unsigned char *p = io_peek(s->io, &avail);
	if (avail == 0)
		return;
	size_t used = smtp_data_feed(&s->data, p, avail, &s->out);
	data_progress(s, used);
	if (s->out.len) {
		txn_write(s, s->out.s, s->out.len);
		strbuf_reset(&s->out);
	}
	io_consume(s->io, used);
	if (s->data.done)
		txn_end(s);
}

static void cmd_bdat(struct smtp_session *s, const char *arg)
{
	/* BDAT size [LAST]: parse first, because the chunk must be consumed
	 * whatever we answer (RFC 3030 2). */
	const char *p = arg;
	uint64_t size = 0;
	int digits = 0;
	while (isdigit((unsigned char)*p) && digits < 20) {
		uint64_t nsz = size * 10 + (uint64_t)(*p - '0');
		if (nsz < size)
			break;
		size = nsz;
		p++;
		digits++;
	}
	bool last = false;
	if (digits > 0 && *p == ' ') {
		const char *q = p + 1;
		if (strcasecmp(q, "LAST") == 0) {
			last = true;
			p = q + 4;
		}
	}
	if (digits == 0 || *p != '\0') {
		/* unparseable size: we cannot know how much to skip; hang up */
		reply(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]; closing connection");
		close_session(s);
		return;
	}
	s->bdat_left = size;
	s->bdat_last = last;
	s->bdat_refused = false;
	if (!s->esmtp) {
		/* CHUNKING is an ESMTP extension (RFC 3030 2) */
		s->bdat_refused = true;
		s->bdat_reply = "503 5.5.1 Send EHLO first";
	} else if (!s->has_mail) {
		s->bdat_refused = true;
		s->bdat_reply = "503 5.5.1 Need MAIL command";
	} else if (s->rcpts.n == 0) {
		s->bdat_refused = true;
		s->bdat_reply = "554 5.5.1 No valid recipients";
	} else if (!s->bdat_txn) {
		if (!txn_open(s)) {
			s->bdat_refused = true;
			s->bdat_reply = "451 4.3.0 Local error in processing, try again later";
		} else {
			s->bdat_txn = true;
		}
	}
	set_state(s, SMTP_STATE_BDAT);
}

static void bdat_input(struct smtp_session *s)
{
	size_t avail;
	const unsigned char *p = io_peek(s->io, &avail);
	size_t n = avail < s->bdat_left ? avail : (size_t)s->bdat_left;
	if (n > 0) {
		if (!s->bdat_refused) {
			smtp_data_check(&s->data, p, n);
			txn_write(s, (const char *)p, n);
		}
		io_consume(s->io, n);
		s->bdat_left -= n;
		data_progress(s, n);
	}
	if (s->bdat_left > 0)
		return;
	if (s->bdat_refused) {
		reply(s, "%s", s->bdat_reply);
		count_error(s);
		if (s->state != SMTP_STATE_CLOSING)
			set_state(s, s->has_mail ? (s->rcpts.n ? SMTP_STATE_RCPT : SMTP_STATE_MAIL) : SMTP_STATE_READY);
		if (s->bdat_txn && s->bdat_last) {
			txn_reset(s);
			set_state(s, SMTP_STATE_READY);
		}
		return;
	}
	if (!s->bdat_last) {
		reply(s, "250 2.0.0 %" PRIu64 " octets received", s->msg_size);
		set_state(s, SMTP_STATE_RCPT);
		return;
	}
	/* a message must end with CRLF: add it if the client did not */
	if (!smtp_data_check_end(&s->data) && !s->data.bare_cr)
		txn_write(s, "\r\n", 2);
	txn_end(s);
}

/* --- other commands ---------------------------------------------------- */

static void cmd_rset(struct smtp_session *s, const char *arg)
{
	(void)arg;
	txn_reset(s);
	if (s->state != SMTP_STATE_INIT)
		set_state(s, SMTP_STATE_READY);
	reply(s, "250 2.0.0 Ok");
}

static void cmd_help(struct smtp_session *s)
{
	reply(s, "214-2.0.0 Commands supported:");
	reply(s, "214-2.0.0   HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP AUTH");
	reply(s, "214 2.0.0 See RFC 5321");
}

static void command(struct smtp_session *s, char *line, size_t len)
{
	struct smtp_cmd cmd;
	smtp_cmd_parse(line, &cmd);
	if (len > SMTP_CMD_LINE_MAX && cmd.verb != SMTP_AUTH) {
		reply(s, "500 5.5.2 Line too long");
		count_error(s);
		return;
	}
	if (memchr(line, '\0', len)) {
		reply(s, "500 5.5.2 NUL byte in command");
		count_error(s);
		return;
	}
	switch (cmd.verb) {
	case SMTP_HELO:
		cmd_helo(s, cmd.args, false);
		break;
	case SMTP_EHLO:
		cmd_helo(s, cmd.args, true);
		break;
	case SMTP_MAIL:
		cmd_mail(s, cmd.args);
		break;
	case SMTP_RCPT:
		cmd_rcpt(s, cmd.args);
		break;
	case SMTP_DATA:
		cmd_data(s, cmd.args);
		break;
	case SMTP_BDAT:
		cmd_bdat(s, cmd.args);
		break;
	case SMTP_RSET:
		cmd_rset(s, cmd.args);
		break;
	case SMTP_NOOP:
		reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_QUIT:
		reply(s, "221 2.0.0 Bye");
		close_session(s);
		break;
	case SMTP_VRFY:
		if (cmd.args[strspn(cmd.args, " ")] == '\0') {
			reply(s, "501 5.5.4 Syntax: VRFY address");
			count_error(s);
			break;
		}
		reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
		break;
	case SMTP_EXPN:
		reply(s, "502 5.5.1 EXPN not available");
		break;
	case SMTP_HELP:
		cmd_help(s);
		break;
	case SMTP_AUTH:
		if (s->state == SMTP_STATE_INIT || !s->esmtp) {
			/* AUTH is an ESMTP extension (RFC 4954 4) */
			reply(s, "503 5.5.1 Send EHLO first");
			count_error(s);
			break;
		}
		cmd_auth(s, cmd.args);
		break;
	case SMTP_STARTTLS:
		reply(s, "502 5.5.1 STARTTLS not available yet");
		count_error(s);
		break;
	case SMTP_UNKNOWN:
		if (len >= 5 && (strncasecmp(line, "MAIL ", 5) == 0 || strncasecmp(line, "RCPT ", 5) == 0))
			reply(s, "501 5.5.4 Syntax: MAIL FROM:<address> / RCPT TO:<address>");
		else
			reply(s, "500 5.5.2 Command not recognized");
		count_error(s);
		break;
	}
}

static void on_read(struct io *io, void *ctx)
{
	struct smtp_session *s = ctx;
	(void)io;
	for (;;) {
		switch (s->state) {
		case SMTP_STATE_DATA:
			data_input(s);
			if (s->state == SMTP_STATE_DATA)
				return; /* need more input */
			continue;
		case SMTP_STATE_BDAT:
			bdat_input(s);
			if (s->state == SMTP_STATE_BDAT)
				return;
			continue;
		case SMTP_STATE_WAIT:
		case SMTP_STATE_AUTHWAIT:
		case SMTP_STATE_CLOSING:
			return;
		default:
			break;
		}
		char *line;
		size_t len;
		int r = io_getline(s->io, SMTP_AUTH_LINE_MAX, &line, &len);
		if (r == 0)
			return;
		if (r < 0) {
			reply(s, "500 5.5.2 Line too long");
			count_error(s);
			if (s->state == SMTP_STATE_AUTH)
				set_state(s, SMTP_STATE_READY);
			continue;
		}
		/* a complete line: the next one gets a fresh deadline */
		io_set_deadline(s->io, (int)s->d->cfg.smtp_command_timeout);
		if (s->state == SMTP_STATE_AUTH)
			auth_response(s, line);
		else
			command(s, line, len);
		if (io_paused(s->io))
			return;
	}
}

static void on_closed(struct io *io, void *ctx, enum io_close_reason why)
{
	struct smtp_session *s = ctx;
	(void)io;
	if (why == IO_TIMEOUT && s->state != SMTP_STATE_CLOSING) {
		reply(s, "421 4.4.2 %s Error: timeout exceeded", s->d->hostname);
		struct event e;
		event_begin(&e, "timeout", s->id);
		event_str(&e, "ip", s->ip);
		event_end(&e);
		close_session(s);
		return;
	}
	if (s->state == SMTP_STATE_WAIT || s->state == SMTP_STATE_AUTHWAIT) {
		/* a job holds a pointer to us: finish when it reports back */
		s->close_after_commit = true;
		return;
	}
	session_free(s);
}

static const struct io_handler smtp_io = {
	.read = on_read,
	.drained = NULL,
	.closed = on_closed,
};

void smtp_accept(struct daemon *d, int fd, const struct sockaddr *sa, socklen_t salen, bool submission)
{
	struct smtp_session *s = xcalloc(1, sizeof(*s));
	s->d = d;
	memcpy(&s->peer, sa, salen < sizeof(s->peer) ? salen : sizeof(s->peer));
	net_addr_str(sa, s->ip, sizeof(s->ip));
	daemon_session_id(s->id);
	s->submission = submission;
	s->plain_auth_ok = daemon_plain_auth_ok(d, sa);
	for (int i = 0; i < d->cfg.nrelay; i++)
		if (net_cidr_match(&d->cfg.relay_networks[i], sa))
			s->relay_net = true;
	s->started = (int64_t)time(NULL);
	strbuf_init(&s->out, 0);
	strbuf_init(&s->head, 0);
	s->io = io_new(d->base, fd, &smtp_io, s);
	s->next = sessions;
	if (sessions)
		sessions->prev = s;
	sessions = s;
	nsessions++;
	struct event e;
	event_begin(&e, "connect", s->id);
	event_str(&e, "ip", s->ip);
	event_int(&e, "port", net_addr_port(sa));
	event_str(&e, "service", submission ? "submission" : "smtp");
	event_end(&e);
	set_state(s, SMTP_STATE_INIT);
	reply(s, "220 %s ESMTP posthorn", d->hostname);
}

void smtp_shutdown_all(struct daemon *d)
{
	(void)d;
	for (struct smtp_session *s = sessions; s; s = s->next) {
		switch (s->state) {
		case SMTP_STATE_WAIT:
		case SMTP_STATE_AUTHWAIT:
			s->close_after_commit = true;
			break;
		case SMTP_STATE_CLOSING:
			break;
		default:
			/* an unfinished DATA is dropped: it was never acknowledged */
			txn_reset(s);
			reply(s, "421 4.3.2 %s Service shutting down", s->d->hostname);
			close_session(s);
			break;
		}
	}
}
