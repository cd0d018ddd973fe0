/* pop3 — POP3 server sessions: RFC 1939 (USER/PASS, STAT, LIST, RETR,
 * DELE, NOOP, RSET, TOP, UIDL, QUIT), RFC 2449 CAPA with RESP-CODES and
 * PIPELINING, RFC 3206 response codes, RFC 5034 AUTH PLAIN (initial
 * response, "=" for empty, "*" to cancel). APOP and STLS are not offered.
 *
 * Role: runs on the daemon's event loop. Sessions see the network only
 * through lib/io.h; blocking work goes to the worker pool:
 *   - auth job: directory_auth() on the worker's own directory connection;
 *   - list job: the maildrop snapshot (store_maildir_list, readdir+stat);
 *   - update job: QUIT's UPDATE state (unlink, rename, fsync of dirs).
 * While a job runs the session is "busy": input is paused, the loop does
 * not touch the fields the job uses, and the job's results are handed
 * over in its done callback on the loop. A failed login is answered
 * after POP3_AUTH_FAIL_DELAY_SECS by a one-shot timer on the loop (the
 * one place this file uses libevent: lib/io.h has no timers; XXX move
 * this into io.h as io_set_timer()).
 *
 * State machine: AUTHORIZATION → (auth job, lock, list job) →
 * TRANSACTION → QUIT → UPDATE (update job) → closed. Commands come from
 * the table in proto/pop3.c, which also checks the state.
 *
 * Invariants:
 *  - One session per mailbox in this process: a mailbox is locked while a
 *    session whose `locked` is set exists in the session list (this
 *    includes a session whose connection is gone but whose UPDATE job is
 *    still running). Lookup is a scan of the session list, which
 *    max_connections bounds.
 *  - The maildrop is a snapshot taken at login; message numbers never
 *    change during a session. Messages delivered later appear at the next
 *    login. Deleted messages are hidden from STAT/LIST/UIDL/RETR/TOP.
 *  - Nothing in the mailbox changes before QUIT: DELE only marks. On
 *    connection loss, timeout or server shutdown nothing is deleted.
 *  - At UPDATE, marked messages are unlinked, and messages retrieved with
 *    RETR that remain are moved from new/ to cur/ with the Maildir flag
 *    "S" (seen), so IMAP later shows them as read; then new/ and cur/ are
 *    fsync'd and only then "+OK" is sent. The UIDL is the Maildir base
 *    name (up to ':'), which such a move does not change, so UIDLs are
 *    stable across sessions and restarts. A base name that is not a valid
 *    RFC 1939 unique-id (1-70 printable characters) is sent as the hex
 *    SHA-256 of itself, which is equally stable.
 *  - Large responses (RETR, TOP, LIST, UIDL) are streamed: at most about
 *    POP3_OUTPUT_HIGH octets are queued; the rest is produced when the
 *    output drains (io_want_drained). The message file is read with
 *    read(2) in POP3_READ_CHUNK pieces on the loop (XXX: a page-cache
 *    miss blocks the loop briefly; acceptable for local disks).
 *  - Passwords are never logged and are wiped (explicit_bzero) from our
 *    buffers once handed to the auth job and once checked.
 *
 * Errors: the peer's mistakes get "-ERR ..." and the session continues;
 * the POP3_BAD_MAX-th protocol error, or POP3_AUTH_FAIL_MAX failed
 * logins, close the connection. Local trouble (directory or disk errors)
 * gets "-ERR [SYS/TEMP] ..." and is logged once. A read error in the
 * middle of a RETR closes the connection without the final "." so the
 * client cannot take a truncated message for a complete one. */
#include "pop3/pop3.h"
#include "daemon/daemon.h"
#include "lib/fsutil.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/strbuf.h"
#include "lib/worker.h"
#include "lib/xalloc.h"
#include "proto/pop3.h"
#include "proto/sasl.h"
#include "store/maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <event2/event.h>
#include <openssl/evp.h>

/* Protocol errors tolerated per session before we hang up (the brief's
 * figure; Dovecot uses the same order of magnitude). */
#define POP3_BAD_MAX 10
/* Failed logins per connection; then the connection is closed. */
#define POP3_AUTH_FAIL_MAX 3
/* Pause before answering a failed login, against password guessing. */
#define POP3_AUTH_FAIL_DELAY_SECS 1
/* read(2) size for message files while streaming RETR/TOP. */
#define POP3_READ_CHUNK (64 * 1024)
/* Output queued per session before we stop producing (or stop reading
 * pipelined commands) and wait for it to drain to POP3_OUTPUT_LOW. */
#define POP3_OUTPUT_HIGH (256 * 1024)
#define POP3_OUTPUT_LOW (64 * 1024)
/* RFC 1939 section 7: a unique-id is 1 to 70 characters 0x21..0x7E. */
#define POP3_UIDL_MAX 70
/* After pop3_shutdown_all(), how long a client may take to read the
 * last reply before the connection is dropped. */
#define POP3_SHUTDOWN_FLUSH_SECS 10

enum sess_state { SESS_AUTH, SESS_TRANS, SESS_UPDATE };
enum stream_kind { STREAM_NONE, STREAM_MSG, STREAM_LIST, STREAM_UIDL };

/* per-message session flags */
#define MSG_DELETED 0x1
#define MSG_RETRIEVED 0x2

struct pop3_session {
	struct pop3_session *prev, *next;
	struct daemon *d;
	struct io *io;
	struct sockaddr_storage sa;
	char id[24];
	char ip[64];
	enum sess_state state;
	int bad;                 /* protocol errors so far */
	int auth_fails;
	bool job;                /* a worker job is outstanding */
	bool gone;               /* connection ended while the job runs */
	bool closing;            /* last reply written; closing after flush */
	bool stopping;           /* pop3_shutdown_all() while busy */
	bool out_wait;           /* input paused until output drains */
	bool sasl_wait;          /* next line is the AUTH PLAIN response */
	bool locked;             /* holds the lock on `mailbox` */
	struct event *delay;     /* failed-login delay timer, when pending */
	const char *end_reason;
	char *user;              /* from USER, until PASS */
	char *mailbox;           /* canonical "user@domain" once logged in */
	char *path;              /* its Maildir */
	/* the snapshot */
	struct maildir_msg *msgs;
	char **uidl;
	unsigned char *mflags;
	size_t nmsgs;
	size_t nlive;            /* not marked deleted */
	uint64_t live_size;
	/* streaming a multi-line response */
	enum stream_kind sk;
	size_t sidx;
	int sfd;
	bool sretr;              /* RETR (not TOP): mark retrieved when done */
	struct pop3_dotstuff ds;
	struct strbuf sbuf;
	uint64_t n_retr;
	char line[POP3_SASL_LINE_MAX + 1];
};

static struct pop3_session *sessions;
/* The loop thread's read buffer for streaming (one thread, one buffer). */
static unsigned char readbuf[POP3_READ_CHUNK];

static void process_input(struct pop3_session *s);
static void stream_fill(struct pop3_session *s);

static void on_read(struct io *io, void *ctx);
static void on_drained(struct io *io, void *ctx);
static void pop3_deadline(struct pop3_session *s);
static void on_closed(struct io *io, void *ctx, enum io_close_reason why);
static const struct io_handler pop3_io = { on_read, on_drained, on_closed };

/* ---- session lifetime ---- */

static bool mailbox_locked(const char *mailbox)
{
	for (struct pop3_session *s = sessions; s; s = s->next)
		if (s->locked && strcmp(s->mailbox, mailbox) == 0)
			return true;
	return false;
}

static void snapshot_free(struct pop3_session *s)
{
	if (s->uidl)
		for (size_t i = 0; i < s->nmsgs; i++)
			free(s->uidl[i]);
	free(s->uidl);
	store_maildir_list_free(s->msgs, s->nmsgs);
	free(s->mflags);
	s->uidl = NULL;
	s->msgs = NULL;
	s->mflags = NULL;
	s->nmsgs = s->nlive = 0;
	s->live_size = 0;
}

static void stream_stop(struct pop3_session *s)
{
	if (s->sfd >= 0)
		close(s->sfd);
	s->sfd = -1;
	s->sk = STREAM_NONE;
	strbuf_reset(&s->sbuf);
}

static void session_free(struct pop3_session *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (s->delay)
		event_free(s->delay);
	stream_stop(s);
	strbuf_free(&s->sbuf);
	snapshot_free(s);
	free(s->user);
	free(s->mailbox);
	free(s->path);
	io_free(&s->io);
	explicit_bzero(s->line, sizeof(s->line));
	free(s);
}

/* The connection is over: log, give the slot back to the daemon, close
 * the socket. The session itself goes too, unless a worker job still
 * holds it (then the job's done callback frees it). */
static void session_end(struct pop3_session *s, const char *reason)
{
	struct event e;
	event_begin(&e, "pop3-disconnect", s->id);
	event_str(&e, "ip", s->ip);
	event_str(&e, "user", s->mailbox);
	event_str(&e, "reason", reason);
	event_int(&e, "retr", (int64_t)s->n_retr);
	event_end(&e);

	daemon_conn_release(s->d, (const struct sockaddr *)&s->sa);
	stream_stop(s);
	io_free(&s->io);
	if (s->job)
		s->gone = true;
	else
		session_free(s);
}

static void reply(struct pop3_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct pop3_session *s, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		panic("pop3 reply: vsnprintf failed");
	if ((size_t)n > sizeof(buf) - 3)
		n = (int)(sizeof(buf) - 3); /* our own texts are short; never reached */
	buf[n++] = '\r';
	buf[n++] = '\n';
	io_write(s->io, buf, (size_t)n);
}

static void close_after(struct pop3_session *s, const char *reason)
{
	s->closing = true;
	s->end_reason = reason;
	io_close_when_flushed(s->io);
}

static void busy_begin(struct pop3_session *s)
{
	s->job = true;
	io_pause(s->io);
}

/* A job finished on a live session: accept commands again. */
static void busy_end(struct pop3_session *s)
{
	s->job = false;
	if (!s->closing && s->delay == NULL)
		io_resume(s->io);
}

/* A protocol error: reply, and hang up at POP3_BAD_MAX. */
static void bad_command(struct pop3_session *s, const char *text)
{
	if (++s->bad >= POP3_BAD_MAX) {
		reply(s, "-ERR %s (too many errors, closing connection)", text);
		close_after(s, "too-many-errors");
		return;
	}
	reply(s, "-ERR %s", text);
}

static bool plain_ok(struct pop3_session *s)
{
	return daemon_plain_auth_ok(s->d, (const struct sockaddr *)&s->sa);
}

/* ---- authentication ---- */

struct auth_job {
	struct pop3_session *s;
	struct daemon *d;
	char *login;
	char *password;
	const char *mech;
	int result;
	char *canonical;
};

static void auth_job_fn(void *arg)
{
	struct auth_job *j = arg;
	struct directory *dir = daemon_thread_directory(j->d);
	j->result = dir ? directory_auth(dir, j->login, j->password, &j->canonical) : -1;
	explicit_bzero(j->password, strlen(j->password));
}

static void auth_job_free(struct auth_job *j)
{
	explicit_bzero(j->password, strlen(j->password));
	free(j->password);
	free(j->login);
	free(j->canonical);
	free(j);
}

static void log_auth(struct pop3_session *s, const char *result, const char *user, const char *mech)
{
	struct event e;
	event_begin(&e, "pop3-auth", s->id);
	event_str(&e, "result", result);
	event_str(&e, "user", user);
	event_str(&e, "ip", s->ip);
	event_str(&e, "mech", mech);
	event_end(&e);
}

static void delay_done(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_session *s = arg;
	(void)fd;
	(void)what;
	event_free(s->delay);
	s->delay = NULL;
	if (s->auth_fails >= POP3_AUTH_FAIL_MAX) {
		reply(s, "-ERR [AUTH] invalid user name or password (too many failures, closing connection)");
		close_after(s, "auth-failures");
		return;
	}
	reply(s, "-ERR [AUTH] invalid user name or password");
	io_resume(s->io);
}

static void list_start(struct pop3_session *s);

static void auth_job_done(void *arg)
{
	struct auth_job *j = arg;
	struct pop3_session *s = j->s;
	s->job = false;
	if (s->gone) {
		log_auth(s, j->result == 1 ? "ok" : j->result == 0 ? "fail" : "error",
		         j->result == 1 ? j->canonical : j->login, j->mech);
		auth_job_free(j);
		session_free(s);
		return;
	}
	if (j->result == 1) {
		log_auth(s, "ok", j->canonical, j->mech);
		if (s->stopping) {
			reply(s, "-ERR server shutting down");
			close_after(s, "shutdown");
		} else if (mailbox_locked(j->canonical)) {
			reply(s, "-ERR [IN-USE] mailbox already locked");
			busy_end(s);
		} else {
			s->mailbox = j->canonical;
			j->canonical = NULL;
			s->locked = true;
			list_start(s);
		}
	} else if (j->result == 0) {
		log_auth(s, "fail", j->login, j->mech);
		s->auth_fails++;
		if (s->stopping) {
			reply(s, "-ERR server shutting down");
			close_after(s, "shutdown");
		} else {
			struct timeval tv = { POP3_AUTH_FAIL_DELAY_SECS, 0 };
			s->delay = event_new(s->d->base, -1, 0, delay_done, s);
			if (s->delay == NULL)
				panic("event_new failed");
			event_add(s->delay, &tv);
			/* input stays paused until the timer fires */
		}
	} else {
		log_auth(s, "error", j->login, j->mech);
		log_error("%s pop3: authentication backend failed for %s", s->id, s->ip);
		reply(s, "-ERR [SYS/TEMP] authentication temporarily unavailable");
		if (s->stopping)
			close_after(s, "shutdown");
		else
			busy_end(s);
	}
	auth_job_free(j);
}

/* Hands login and password (copied; the caller wipes its own) to the
 * auth job. */
static void auth_start(struct pop3_session *s, const char *login, const char *password, const char *mech)
{
	struct auth_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->d = s->d;
	j->login = xstrdup(login);
	j->password = xstrdup(password);
	j->mech = mech;
	busy_begin(s);
	workers_submit(s->d->workers, auth_job_fn, auth_job_done, j);
}

/* ---- the maildrop snapshot ---- */

struct list_job {
	struct pop3_session *s;
	char *mailbox;
	const char *data_dir;
	/* results */
	int result;
	int err;
	char *path;
	struct maildir_msg *msgs;
	size_t n;
	char **uidl;
};

/* The RFC 1939 unique-id for a Maildir base name; see the file comment. */
static char *uidl_for(const char *uid)
{
	size_t n = strlen(uid);
	bool ok = n >= 1 && n <= POP3_UIDL_MAX;
	for (size_t i = 0; ok && i < n; i++)
		if ((unsigned char)uid[i] < 0x21 || (unsigned char)uid[i] > 0x7e)
			ok = false;
	if (ok)
		return xstrdup(uid);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_Digest(uid, n, md, &mdlen, EVP_sha256(), NULL) != 1)
		panic("EVP_Digest(sha256) failed");
	char *hex = xmalloc(2 * (size_t)mdlen + 1);
	for (unsigned int i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return hex;
}

static void list_job_fn(void *arg)
{
	struct list_job *j = arg;
	char path[PATH_MAX];
	if (store_maildir_path(path, sizeof(path), j->data_dir, j->mailbox) < 0) {
		j->result = -1;
		j->err = errno;
		return;
	}
	j->path = xstrdup(path);
	if (store_maildir_list(path, &j->msgs, &j->n) < 0) {
		j->result = -1;
		j->err = errno;
		return;
	}
	j->uidl = xcalloc(j->n ? j->n : 1, sizeof(char *));
	for (size_t i = 0; i < j->n; i++)
		j->uidl[i] = uidl_for(j->msgs[i].uid);
	j->result = 0;
}

static void list_job_done(void *arg)
{
	struct list_job *j = arg;
	struct pop3_session *s = j->s;
	s->job = false;
	if (j->result == 0) {
		s->path = j->path;
		s->msgs = j->msgs;
		s->uidl = j->uidl;
		s->nmsgs = j->n;
		j->path = NULL;
		j->msgs = NULL;
		j->uidl = NULL;
		s->mflags = xcalloc(s->nmsgs ? s->nmsgs : 1, 1);
		s->nlive = s->nmsgs;
		for (size_t i = 0; i < s->nmsgs; i++)
			s->live_size += s->msgs[i].size;
	}
	int err = j->err;
	bool listed = j->result == 0; /* an empty maildrop has msgs == NULL */
	free(j->path);
	free(j->mailbox);
	free(j);
	if (s->gone) {
		session_free(s);
		return;
	}
	if (s->stopping) {
		reply(s, "-ERR server shutting down");
		close_after(s, "shutdown");
		return;
	}
	if (!listed) {
		log_error("%s pop3: cannot list the maildrop of %s: %s", s->id, s->mailbox, strerror(err));
		reply(s, "-ERR [SYS/TEMP] unable to open the maildrop");
		s->locked = false;
		free(s->mailbox);
		s->mailbox = NULL;
		busy_end(s);
		return;
	}
	s->state = SESS_TRANS;
	reply(s, "+OK maildrop has %zu message%s (%" PRIu64 " octets)", s->nlive, s->nlive == 1 ? "" : "s",
	      s->live_size);
	busy_end(s);
}

static void list_start(struct pop3_session *s)
{
	struct list_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	j->mailbox = xstrdup(s->mailbox);
	j->data_dir = s->d->data_dir;
	s->job = true; /* input is still paused from the auth job */
	workers_submit(s->d->workers, list_job_fn, list_job_done, j);
}

/* ---- finding message files ---- */

/* The message at idx moved since the snapshot (another agent renamed it
 * within the Maildir, e.g. an IMAP flag change): find it again by uid.
 * Blocking (readdir); used on the loop only on this rare path. */
static bool relocate(const char *path, struct maildir_msg *m)
{
	struct maildir_msg *v;
	size_t n;
	if (store_maildir_list(path, &v, &n) < 0)
		return false;
	bool found = false;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i].uid, m->uid) == 0) {
			free(m->name);
			m->name = xstrdup(v[i].name);
			found = true;
			break;
		}
	}
	store_maildir_list_free(v, n);
	return found;
}

static int open_msg(struct pop3_session *s, size_t idx)
{
	struct maildir_msg *m = &s->msgs[idx];
	for (int attempt = 0; attempt < 2; attempt++) {
		char p[PATH_MAX];
		int k = snprintf(p, sizeof(p), "%s/%s", s->path, m->name);
		if (k < 0 || (size_t)k >= sizeof(p)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0 || errno != ENOENT || attempt > 0)
			return fd;
		if (!relocate(s->path, m)) {
			errno = ENOENT;
			return -1;
		}
	}
	return -1;
}

/* ---- streaming multi-line responses ---- */

/* Starts a multi-line response; for STREAM_MSG idx is the message (and
 * s->sfd, s->ds are set up), for LIST/UIDL it must be 0. */
static void stream_begin(struct pop3_session *s, enum stream_kind kind, size_t idx)
{
	s->sk = kind;
	s->sidx = idx;
	io_pause(s->io);
	io_want_drained(s->io, POP3_OUTPUT_LOW);
	stream_fill(s);
}

static void stream_end(struct pop3_session *s)
{
	if (s->sk == STREAM_MSG && s->sretr) {
		s->mflags[s->sidx] |= MSG_RETRIEVED;
		s->n_retr++;
	}
	stream_stop(s);
	io_want_drained(s->io, 0);
	if (!s->closing && !s->job && s->delay == NULL && !s->out_wait)
		io_resume(s->io);
}

static void stream_fill(struct pop3_session *s)
{
	while (s->sk != STREAM_NONE && io_output_len(s->io) < POP3_OUTPUT_HIGH) {
		if (s->sk == STREAM_MSG) {
			ssize_t n = read(s->sfd, readbuf, sizeof(readbuf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				log_error("%s pop3: read(%s/%s): %s", s->id, s->path, s->msgs[s->sidx].name,
				          strerror(errno));
				stream_stop(s);
				close_after(s, "read-error");
				return;
			}
			bool enough = n == 0;
			if (n > 0)
				enough = pop3_dotstuff_feed(&s->ds, readbuf, (size_t)n, &s->sbuf);
			if (enough)
				pop3_dotstuff_finish(&s->ds, &s->sbuf);
			io_write(s->io, s->sbuf.s, s->sbuf.len);
			strbuf_reset(&s->sbuf);
			if (enough)
				stream_end(s);
			continue;
		}
		/* LIST / UIDL: a batch of lines, then the terminator */
		size_t batch = 0;
		for (; s->sidx < s->nmsgs && batch < 1024; s->sidx++) {
			size_t i = s->sidx;
			if (s->mflags[i] & MSG_DELETED)
				continue;
			if (s->sk == STREAM_LIST)
				io_printf(s->io, "%zu %" PRIu64 "\r\n", i + 1, s->msgs[i].size);
			else
				io_printf(s->io, "%zu %s\r\n", i + 1, s->uidl[i]);
			batch++;
		}
		if (s->sidx == s->nmsgs) {
			io_write(s->io, ".\r\n", 3);
			stream_end(s);
		}
	}
}

/* ---- commands ---- */

/* The message for a 1-based number, or NULL after an error reply. */
static struct maildir_msg *msg_get(struct pop3_session *s, uint32_t num, size_t *idx_r)
{
	if (num == 0 || num > s->nmsgs) {
		reply(s, "-ERR no such message");
		return NULL;
	}
	size_t i = num - 1;
	if (s->mflags[i] & MSG_DELETED) {
		reply(s, "-ERR message %" PRIu32 " already deleted", num);
		return NULL;
	}
	*idx_r = i;
	return &s->msgs[i];
}

static void cmd_capa(struct pop3_session *s)
{
	reply(s, "+OK Capability list follows");
	reply(s, "TOP");
	reply(s, "UIDL");
	if (plain_ok(s)) {
		reply(s, "USER");
		reply(s, "SASL PLAIN");
	}
	reply(s, "RESP-CODES");
	reply(s, "AUTH-RESP-CODE");
	reply(s, "PIPELINING");
	reply(s, "EXPIRE NEVER");
	reply(s, "IMPLEMENTATION posthorn");
	reply(s, ".");
}

static void refuse_plaintext(struct pop3_session *s)
{
	reply(s, "-ERR [AUTH] plaintext authentication disallowed on non-secure connections");
}

static void cmd_user(struct pop3_session *s, const char *name)
{
	if (!plain_ok(s)) {
		refuse_plaintext(s);
		return;
	}
	free(s->user);
	s->user = xstrdup(name);
	reply(s, "+OK");
}

static void cmd_pass(struct pop3_session *s, char *password)
{
	if (s->user == NULL) {
		explicit_bzero(password, strlen(password));
		bad_command(s, "USER first");
		return;
	}
	char *user = s->user;
	s->user = NULL;
	auth_start(s, user, password, "user");
	explicit_bzero(password, strlen(password));
	free(user);
}

/* An AUTH PLAIN response, initial or after "+ ". */
static void sasl_plain(struct pop3_session *s, const char *b64, size_t len)
{
	struct strbuf buf;
	const char *authz, *authc, *pass, *err;
	strbuf_init(&buf, POP3_SASL_LINE_MAX);
	if (sasl_plain_decode(b64, len, &buf, &authz, &authc, &pass, &err) < 0)
		bad_command(s, err);
	else
		auth_start(s, authc, pass, "plain");
	if (buf.s)
		explicit_bzero(buf.s, buf.cap);
	strbuf_free(&buf);
}

static void cmd_auth(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	if (cmd->argc == 0) {
		/* RFC 1734 clients list mechanisms with a bare AUTH */
		reply(s, "+OK");
		if (plain_ok(s))
			reply(s, "PLAIN");
		reply(s, ".");
		return;
	}
	if (strcasecmp(cmd->argv[0], "PLAIN") != 0) {
		reply(s, "-ERR Unrecognized authentication type");
		return;
	}
	if (!plain_ok(s)) {
		refuse_plaintext(s);
		return;
	}
	if (cmd->argc == 2) {
		sasl_plain(s, cmd->argv[1], strlen(cmd->argv[1]));
		return;
	}
	s->sasl_wait = true;
	reply(s, "+ ");
}

static void sasl_response(struct pop3_session *s, char *line, size_t len)
{
	s->sasl_wait = false;
	if (len == 1 && line[0] == '*') {
		reply(s, "-ERR authentication cancelled");
		return;
	}
	sasl_plain(s, line, len);
}

static void update_start(struct pop3_session *s);

/* pop3-dele: what QUIT's UPDATE did (count = messages removed). */
static void log_dele(struct pop3_session *s, size_t removed, size_t failed, size_t seen)
{
	struct event e;
	event_begin(&e, "pop3-dele", s->id);
	event_str(&e, "user", s->mailbox);
	event_int(&e, "count", (int64_t)removed);
	event_int(&e, "failed", (int64_t)failed);
	event_int(&e, "seen", (int64_t)seen);
	event_end(&e);
}

static void cmd_quit(struct pop3_session *s)
{
	if (s->state == SESS_AUTH) {
		reply(s, "+OK posthorn POP3 server signing off");
		close_after(s, "quit");
		return;
	}
	bool work = false;
	for (size_t i = 0; i < s->nmsgs && !work; i++)
		if (s->mflags[i] & (MSG_DELETED | MSG_RETRIEVED))
			work = true;
	s->state = SESS_UPDATE;
	if (!work) {
		log_dele(s, 0, 0, 0);
		reply(s, "+OK posthorn POP3 server signing off");
		close_after(s, "quit");
		return;
	}
	update_start(s);
}

static void cmd_stat(struct pop3_session *s)
{
	reply(s, "+OK %zu %" PRIu64, s->nlive, s->live_size);
}

static void cmd_list(struct pop3_session *s, const struct pop3_cmd *cmd, bool uidl)
{
	size_t i;
	if (cmd->argc == 1) {
		struct maildir_msg *m = msg_get(s, cmd->num[0], &i);
		if (m == NULL)
			return;
		if (uidl)
			reply(s, "+OK %zu %s", i + 1, s->uidl[i]);
		else
			reply(s, "+OK %zu %" PRIu64, i + 1, m->size);
		return;
	}
	if (uidl)
		reply(s, "+OK unique-id listing follows");
	else
		reply(s, "+OK %zu message%s (%" PRIu64 " octets)", s->nlive, s->nlive == 1 ? "" : "s", s->live_size);
	stream_begin(s, uidl ? STREAM_UIDL : STREAM_LIST, 0);
}

static void cmd_retr(struct pop3_session *s, const struct pop3_cmd *cmd, bool top)
{
	size_t i;
	struct maildir_msg *m = msg_get(s, cmd->num[0], &i);
	if (m == NULL)
		return;
	int fd = open_msg(s, i);
	if (fd < 0) {
		if (errno == ENOENT) {
			reply(s, "-ERR [SYS/PERM] message %" PRIu32 " no longer exists", cmd->num[0]);
		} else {
			log_error("%s pop3: open(%s/%s): %s", s->id, s->path, m->name, strerror(errno));
			reply(s, "-ERR [SYS/TEMP] cannot read message %" PRIu32, cmd->num[0]);
		}
		return;
	}
	if (top)
		reply(s, "+OK top of message follows");
	else
		reply(s, "+OK %" PRIu64 " octets", m->size);
	s->sfd = fd;
	s->sretr = !top;
	pop3_dotstuff_init(&s->ds, top, top ? cmd->num[1] : 0);
	stream_begin(s, STREAM_MSG, i);
}

static void cmd_dele(struct pop3_session *s, const struct pop3_cmd *cmd)
{
	size_t i;
	struct maildir_msg *m = msg_get(s, cmd->num[0], &i);
	if (m == NULL)
		return;
	s->mflags[i] |= MSG_DELETED;
	s->nlive--;
	s->live_size -= m->size;
	reply(s, "+OK message %zu deleted", i + 1);
}

static void cmd_rset(struct pop3_session *s)
{
	s->nlive = s->nmsgs;
	s->live_size = 0;
	for (size_t i = 0; i < s->nmsgs; i++) {
		s->mflags[i] &= (unsigned char)~MSG_DELETED;
		s->live_size += s->msgs[i].size;
	}
	reply(s, "+OK maildrop has %zu message%s (%" PRIu64 " octets)", s->nlive, s->nlive == 1 ? "" : "s",
	      s->live_size);
}

static void command(struct pop3_session *s, char *line, size_t len)
{
	struct pop3_cmd cmd;
	const char *err;
	unsigned st = s->state == SESS_AUTH ? POP3_STATE_AUTHORIZATION : POP3_STATE_TRANSACTION;
	if (pop3_cmd_parse(line, len, st, &cmd, &err) != POP3_PARSE_OK) {
		bad_command(s, err);
		return;
	}
	switch (cmd.id) {
	case POP3_CMD_CAPA: cmd_capa(s); break;
	case POP3_CMD_USER: cmd_user(s, cmd.argv[0]); break;
	case POP3_CMD_PASS: cmd_pass(s, cmd.argv[0]); break;
	case POP3_CMD_AUTH: cmd_auth(s, &cmd); break;
	case POP3_CMD_QUIT: cmd_quit(s); break;
	case POP3_CMD_STAT: cmd_stat(s); break;
	case POP3_CMD_LIST: cmd_list(s, &cmd, false); break;
	case POP3_CMD_UIDL: cmd_list(s, &cmd, true); break;
	case POP3_CMD_RETR: cmd_retr(s, &cmd, false); break;
	case POP3_CMD_TOP: cmd_retr(s, &cmd, true); break;
	case POP3_CMD_DELE: cmd_dele(s, &cmd); break;
	case POP3_CMD_NOOP: reply(s, "+OK"); break;
	case POP3_CMD_RSET: cmd_rset(s); break;
	}
}

/* Can the session take the next command line now? */
static bool ready(const struct pop3_session *s)
{
	return s->io && !s->closing && !s->job && s->delay == NULL && s->sk == STREAM_NONE && !s->out_wait &&
	       s->state != SESS_UPDATE;
}

static void process_input(struct pop3_session *s)
{
	while (ready(s)) {
		/* pipelined commands whose replies the client does not read */
		if (io_output_len(s->io) > POP3_OUTPUT_HIGH) {
			s->out_wait = true;
			io_pause(s->io);
			io_want_drained(s->io, POP3_OUTPUT_LOW);
			return;
		}
		char *line;
		size_t len;
		int r = io_getline(s->io, s->sasl_wait ? POP3_SASL_LINE_MAX : POP3_CMD_MAX, &line, &len);
		if (r == 0)
			return;
		if (r < 0) {
			s->sasl_wait = false;
			bad_command(s, "line too long");
			continue;
		}
		pop3_deadline(s);
		memcpy(s->line, line, len);
		s->line[len] = '\0';
		explicit_bzero(line, len); /* may have been a password */
		if (s->sasl_wait)
			sasl_response(s, s->line, len);
		else
			command(s, s->line, len);
		explicit_bzero(s->line, len + 1);
	}
}

/* ---- UPDATE ---- */

struct update_job {
	struct pop3_session *s;
	size_t removed;
	size_t failed;
	size_t seen;
};

static void update_job_fn(void *arg)
{
	struct update_job *j = arg;
	struct pop3_session *s = j->s; /* busy: the loop leaves it alone */
	char p[PATH_MAX], q[PATH_MAX];
	bool changed = false;
	for (size_t i = 0; i < s->nmsgs; i++) {
		struct maildir_msg *m = &s->msgs[i];
		if (s->mflags[i] & MSG_DELETED) {
			bool done = false;
			for (int attempt = 0; attempt < 2 && !done; attempt++) {
				int k = snprintf(p, sizeof(p), "%s/%s", s->path, m->name);
				if (k < 0 || (size_t)k >= sizeof(p))
					break;
				if (unlink(p) == 0) {
					done = true;
				} else if (errno == ENOENT) {
					/* moved or already removed by another agent */
					if (attempt > 0 || !relocate(s->path, m))
						done = true;
				} else {
					log_error("%s pop3: unlink(%s): %s", s->id, p, strerror(errno));
					break;
				}
			}
			if (done) {
				j->removed++;
				changed = true;
			} else {
				j->failed++;
			}
		} else if ((s->mflags[i] & MSG_RETRIEVED) && strncmp(m->name, "new/", 4) == 0) {
			int k = snprintf(p, sizeof(p), "%s/%s", s->path, m->name);
			int k2 = snprintf(q, sizeof(q), "%s/cur/%s:2,S", s->path, m->name + 4);
			if (k < 0 || k2 < 0 || (size_t)k >= sizeof(p) || (size_t)k2 >= sizeof(q))
				continue;
			/* best effort: a message someone else moved keeps its flags */
			if (rename(p, q) == 0) {
				j->seen++;
				changed = true;
			}
		}
	}
	if (changed) {
		static const char *const subs[] = { "new", "cur" };
		for (size_t i = 0; i < 2; i++) {
			int k = snprintf(p, sizeof(p), "%s/%s", s->path, subs[i]);
			if (k < 0 || (size_t)k >= sizeof(p) || fsutil_fsync_dir(p) < 0) {
				log_error("%s pop3: fsync(%s): %s", s->id, p, strerror(errno));
				j->failed++;
			}
		}
	}
}

static void update_job_done(void *arg)
{
	struct update_job *j = arg;
	struct pop3_session *s = j->s;
	s->job = false;

	log_dele(s, j->removed, j->failed, j->seen);

	if (s->gone) {
		free(j);
		session_free(s);
		return;
	}
	if (j->failed)
		reply(s, "-ERR [SYS/TEMP] some deleted messages not removed");
	else
		reply(s, "+OK posthorn POP3 server signing off (%zu message%s deleted)", j->removed,
		      j->removed == 1 ? "" : "s");
	free(j);
	close_after(s, "quit");
}

static void update_start(struct pop3_session *s)
{
	struct update_job *j = xcalloc(1, sizeof(*j));
	j->s = s;
	busy_begin(s);
	workers_submit(s->d->workers, update_job_fn, update_job_done, j);
}

/* ---- io callbacks ---- */

static void on_read(struct io *io, void *ctx)
{
	(void)io;
	process_input(ctx);
}

/* The whole-command deadline (slowloris defence, as in SMTP): a client
 * gets pop3_timeout to finish each command line, however slowly it
 * trickles bytes in; reading our output (a long RETR) counts as
 * progress. */
static void pop3_deadline(struct pop3_session *s)
{
	int64_t t = s->d->cfg.pop3_timeout;
	io_set_deadline(s->io, t <= 0 ? 0 : t > INT_MAX ? INT_MAX : (int)t);
}

static void on_drained(struct io *io, void *ctx)
{
	struct pop3_session *s = ctx;
	pop3_deadline(s);
	if (s->sk != STREAM_NONE) {
		stream_fill(s);
		return;
	}
	if (s->out_wait) {
		s->out_wait = false;
		io_want_drained(io, 0);
		if (!s->closing && !s->job && s->delay == NULL)
			io_resume(io);
	}
}

static void on_closed(struct io *io, void *ctx, enum io_close_reason why)
{
	struct pop3_session *s = ctx;
	(void)io;
	switch (why) {
	case IO_TIMEOUT:
		/* An idle client gets the RFC 1939 autologout reply. If output
		 * is pending the timeout was a stalled write: just drop it. */
		if (!s->closing && !s->job && s->delay == NULL && s->sk == STREAM_NONE &&
		    io_output_len(s->io) == 0) {
			reply(s, "-ERR autologout; idle for too long");
			close_after(s, "timeout");
			return;
		}
		session_end(s, "timeout");
		return;
	case IO_EOF:
		session_end(s, s->closing ? s->end_reason : "eof");
		return;
	case IO_ERROR:
		session_end(s, "error");
		return;
	case IO_FLUSHED:
		session_end(s, s->end_reason ? s->end_reason : "closed");
		return;
	}
}

/* ---- entry points ---- */

void pop3_accept(struct daemon *d, int fd, const struct sockaddr *sa, socklen_t salen)
{
	struct pop3_session *s = xcalloc(1, sizeof(*s));
	s->d = d;
	if ((size_t)salen > sizeof(s->sa))
		panic("pop3_accept: address of %u bytes", (unsigned)salen);
	memcpy(&s->sa, sa, (size_t)salen);
	daemon_session_id(s->id);
	net_addr_str(sa, s->ip, sizeof(s->ip));
	s->sfd = -1;
	strbuf_init(&s->sbuf, 0);
	s->state = SESS_AUTH;
	s->io = io_new(d->base, fd, &pop3_io, s);
	int64_t t = d->cfg.pop3_timeout;
	io_set_timeout(s->io, t <= 0 ? 0 : t > INT_MAX ? INT_MAX : (int)t);
	pop3_deadline(s);

	s->next = sessions;
	if (sessions)
		sessions->prev = s;
	sessions = s;

	struct event e;
	event_begin(&e, "pop3-connect", s->id);
	event_str(&e, "ip", s->ip);
	event_int(&e, "port", net_addr_port(sa));
	event_end(&e);

	if (d->stopping) {
		reply(s, "-ERR server shutting down");
		close_after(s, "shutdown");
		return;
	}
	/* No "<timestamp>" in the greeting: per RFC 1939 section 7 that
	 * announces APOP, which we do not offer. */
	reply(s, "+OK posthorn POP3 ready");
}

void pop3_shutdown_all(struct daemon *d)
{
	(void)d;
	for (struct pop3_session *s = sessions; s; s = s->next) {
		if (s->gone || s->closing || s->io == NULL)
			continue;
		s->stopping = true;
		if (s->job)
			continue; /* its done callback answers */
		if (s->delay) {
			event_free(s->delay);
			s->delay = NULL;
		}
		io_set_timeout(s->io, POP3_SHUTDOWN_FLUSH_SECS);
		if (s->sk != STREAM_NONE) {
			/* inside a multi-line response: a "-ERR" now would read
			 * as message text; hang up after what is queued */
			stream_stop(s);
			close_after(s, "shutdown");
			continue;
		}
		reply(s, "-ERR server shutting down");
		close_after(s, "shutdown");
	}
}
