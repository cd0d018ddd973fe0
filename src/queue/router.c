/* router — see router.h.
 *
 * Role: the router thread of `posthorn serve`.
 * Invariants: a pending file is unlinked only after every destination is
 * durable (Maildir file fsync'd and linked, new/ fsync'd; outbox file
 * fsync'd and renamed, outbox/ fsync'd). Deliveries use a deterministic
 * Maildir name per (message, mailbox), so a message found in pending at
 * start-up (we may have crashed half-way) is checked against the
 * mailboxes first and never delivered twice.
 * On error: local trouble (ENOSPC, EIO) leaves the file in pending and it
 * is retried on the next scan; a file that can never be routed moves to
 * queue/lost+found with an event. */
#include "queue/router.h"
#include "directory/directory.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/strbuf.h"
#include "lib/strset.h"
#include "lib/xalloc.h"
#include "mail/address.h"
#include "mail/fingerprint.h"
#include "mail/message.h"
#include "queue/queue.h"
#include "store/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A hand-dropped file is routed once it has not changed for this long
 * (or inotify said it was closed after writing / moved in). */
#define ROUTER_SETTLE_SECS 2
/* A posthorn queue file without an end marker this old is abandoned. */
#define ROUTER_INCOMPLETE_SECS 60
/* Most recipients taken from the headers of a dropped .eml. */
#define ROUTER_PICKUP_RCPT_MAX 1000

struct todo {
	char *name;
	bool complete_hint; /* moved in (inotify IN_MOVED_TO) or committed: complete */
	bool recover;       /* found at start-up: we may have crashed half-way */
};

/* Delivery threads: parallel fsyncs let the file system merge journal
 * commits (one thread delivers ~1/3 of what the SMTP side accepts). */
#define ROUTER_THREADS 4

struct router {
	struct router_conf conf;
	char *data_dir;
	char *hostname;
	pthread_t watcher;
	pthread_t threads[ROUTER_THREADS];
	int nthreads;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	int paused;              /* router_pause() depth: no new file is started */
	int busy;                /* files in a delivery thread's hands */
	pthread_cond_t idle;     /* busy fell to 0 (router_pause waits on it) */
	struct todo *q;          /* FIFO: q[qhead..qn) */
	size_t qhead, qn, qcap;
	struct strset queued;    /* names queued or being handled: never twice at once */
	int efd;
	int ifd, iwd;
	struct strset retry;     /* names that failed half-way: check before redelivery */
	uint64_t n_delivered, n_relayed, n_lost;
};

struct router *router_new(const struct router_conf *conf)
{
	struct router *r = xcalloc(1, sizeof(*r));
	r->conf = *conf;
	r->data_dir = xstrdup(conf->data_dir);
	r->hostname = xstrdup(conf->hostname);
	r->conf.data_dir = r->data_dir;
	r->conf.hostname = r->hostname;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	pthread_cond_init(&r->idle, NULL);
	strset_init(&r->queued);
	strset_init(&r->retry);
	r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	r->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	r->iwd = -1;
	return r;
}

static void enqueue(struct router *r, const char *name, bool hint, bool recover)
{
	pthread_mutex_lock(&r->mu);
	/* already waiting or in a thread's hands: that pass will see the
	 * file; a later scan catches anything it left */
	if (!strset_add(&r->queued, name)) {
		pthread_mutex_unlock(&r->mu);
		return;
	}
	if (r->qhead > 0 && r->qhead == r->qn)
		r->qhead = r->qn = 0;
	if (r->qn == r->qcap) {
		if (r->qhead > 0) {
			memmove(r->q, r->q + r->qhead, (r->qn - r->qhead) * sizeof(*r->q));
			r->qn -= r->qhead;
			r->qhead = 0;
		} else {
			r->qcap = r->qcap ? r->qcap * 2 : 64;
			r->q = xreallocarray(r->q, r->qcap, sizeof(*r->q));
		}
	}
	r->q[r->qn].name = xstrdup(name);
	r->q[r->qn].complete_hint = hint;
	r->q[r->qn].recover = recover;
	r->qn++;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

void router_notify(struct router *r, const char *id)
{
	enqueue(r, id, true, false);
	uint64_t one = 1;
	if (write(r->efd, &one, sizeof(one)) < 0) {
		/* cannot overflow in practice */
	}
}

void router_pause(struct router *r)
{
	pthread_mutex_lock(&r->mu);
	r->paused++;
	while (r->busy > 0)
		pthread_cond_wait(&r->idle, &r->mu);
	pthread_mutex_unlock(&r->mu);
}

void router_resume(struct router *r)
{
	pthread_mutex_lock(&r->mu);
	if (r->paused > 0 && --r->paused == 0)
		pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

void router_stats(struct router *r, uint64_t *d, uint64_t *rl, uint64_t *l)
{
	pthread_mutex_lock(&r->mu);
	*d = r->n_delivered;
	*rl = r->n_relayed;
	*l = r->n_lost;
	pthread_mutex_unlock(&r->mu);
}

static void count(struct router *r, uint64_t *field)
{
	pthread_mutex_lock(&r->mu);
	(*field)++;
	pthread_mutex_unlock(&r->mu);
}

static void watch_pending(struct router *r)
{
	char path[PATH_MAX];
	const char *err;
	queue_path(path, sizeof(path), r->data_dir, "pending", NULL);
	if (!fsutil_is_dir(path) && fsutil_mkdir_p(path, 0700, &err) < 0) {
		log_error("router: cannot create %s: %s", path, err);
		return;
	}
	if (r->ifd >= 0) {
		if (r->iwd >= 0)
			inotify_rm_watch(r->ifd, r->iwd);
		r->iwd = inotify_add_watch(r->ifd, path,
		                           IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF);
	}
}

/* Names we never touch: dot files and our own temp files. */
static bool name_skipped(const char *name)
{
	return name[0] == '.' || strstr(name, ".tmp-") != NULL;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void scan_pending(struct router *r, bool recover)
{
	char path[PATH_MAX];
	queue_path(path, sizeof(path), r->data_dir, "pending", NULL);
	DIR *d = opendir(path);
	if (d == NULL) {
		if (errno == ENOENT)
			watch_pending(r); /* renamed away: recreate and watch */
		return;
	}
	/* collect, sort by name (ids are time-ordered), enqueue */
	struct strv names = { 0 };
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (!name_skipped(de->d_name))
			strv_add(&names, de->d_name);
	closedir(d);
	if (names.n > 1)
		qsort(names.v, names.n, sizeof(char *), cmp_name);
	for (size_t i = 0; i < names.n; i++)
		enqueue(r, names.v[i], false, recover);
	strv_free(&names);
}

static void lost_found(struct router *r, const char *name, const char *why)
{
	char from[PATH_MAX], to[PATH_MAX], dir[PATH_MAX];
	const char *err;
	queue_path(from, sizeof(from), r->data_dir, "pending", name);
	queue_path(dir, sizeof(dir), r->data_dir, "lost+found", NULL);
	fsutil_mkdir_p(dir, 0700, &err);
	queue_path(to, sizeof(to), r->data_dir, "lost+found", name);
	/* never overwrite an earlier lost file of the same name */
	for (int i = 1; access(to, F_OK) == 0 && i < 1000; i++) {
		char alt[NAME_MAX + 16];
		snprintf(alt, sizeof(alt), "%.200s.%d", name, i);
		queue_path(to, sizeof(to), r->data_dir, "lost+found", alt);
	}
	struct event e;
	event_begin(&e, "lost", NULL);
	event_str(&e, "file", name);
	event_str(&e, "reason", why);
	if (rename(from, to) < 0) {
		event_str(&e, "error", strerror(errno));
	} else {
		fsutil_fsync_dir(dir);
		const char *slash = strrchr(to, '/');
		event_str(&e, "moved_to", slash ? slash + 1 : to);
		if (r->conf.on_routed)
			r->conf.on_routed(r->conf.hook_arg, name);
	}
	event_end(&e);
	count(r, &r->n_lost);
}

/* --- hand-dropped formats ------------------------------------------- */

static bool starts_ci(const char *p, size_t n, const char *pfx)
{
	size_t l = strlen(pfx);
	return n >= l && strncasecmp(p, pfx, l) == 0;
}

/* Line at *pos (without EOL) → line/len; advances *pos. */
static bool next_line(const char *m, size_t len, size_t *pos, const char **line, size_t *ll)
{
	if (*pos >= len)
		return false;
	const char *s = m + *pos;
	const char *nl = memchr(s, '\n', len - *pos);
	size_t n = nl ? (size_t)(nl - s) : len - *pos;
	*pos += nl ? n + 1 : n;
	if (n > 0 && s[n - 1] == '\r')
		n--;
	*line = s;
	*ll = n;
	return true;
}

/* "  <a@b>  " or "a@b" → normalised "local@domain", or NULL. */
static char *pickup_addr(const char *s, size_t n, bool allow_null)
{
	while (n && (*s == ' ' || *s == '\t'))
		s++, n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	char *tmp = xstrndup(s, n);
	struct mail_address a;
	const char *err, *end;
	char *out = NULL;
	if (tmp[0] == '<') {
		if (address_parse_path(tmp, allow_null, true, &a, &end, &err) == 0) {
			if (*end == '\0')
				out = address_format(&a);
			address_free(&a);
		}
	} else if (address_parse(tmp, true, &a, &err) == 0) {
		out = address_format(&a);
		address_free(&a);
	}
	free(tmp);
	return out;
}

struct rcpt_collect {
	struct strv *v;
	bool overflow; /* more than ROUTER_PICKUP_RCPT_MAX distinct recipients */
};

static void collect_rcpt(const char *addr, void *arg)
{
	struct rcpt_collect *c = arg;
	if (strv_contains(c->v, addr))
		return;
	if (c->v->n >= ROUTER_PICKUP_RCPT_MAX) {
		c->overflow = true;
		return;
	}
	strv_add(c->v, addr);
}

static void collect_hdr_rcpts(const char *value, size_t len, void *arg)
{
	address_list_parse(value, len, collect_rcpt, arg);
}

static void first_addr(const char *addr, void *arg)
{
	char **out = arg;
	if (*out == NULL)
		*out = xstrdup(addr);
}

static void first_hdr_addr(const char *value, size_t len, void *arg)
{
	address_list_parse(value, len, first_addr, arg);
}

/* Does the text start like an RFC 5322 header block? */
static bool looks_like_message(const char *m, size_t len)
{
	size_t pos = 0;
	const char *line;
	size_t ll;
	int headers = 0;
	while (next_line(m, len, &pos, &line, &ll)) {
		if (ll == 0)
			break;
		if (line[0] == ' ' || line[0] == '\t') {
			if (headers == 0)
				return false;
			continue;
		}
		size_t i = 0;
		while (i < ll && line[i] > 32 && line[i] < 127 && line[i] != ':')
			i++;
		while (i < ll && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == 0 || i >= ll || line[i] != ':')
			return false;
		headers++;
	}
	return headers > 0;
}

/* Converts a dropped file into a posthorn queue file in pending (new id),
 * then removes the original. Returns 1 converted, 0 not ready, -1 moved to
 * lost+found, -2 local error (retry later). */
static int pickup(struct router *r, const char *name, const char *data, size_t len)
{
	struct queue_env env = { 0 };
	struct strbuf msg = STRBUF_INIT;
	const char *why = NULL;
	size_t pos = 0;
	const char *line;
	size_t ll;
	const char *kind;

	/* classic pending file: "FROM: a@b" then "RCPT: x@y" lines */
	size_t p2 = 0;
	const char *l1, *l2 = NULL;
	size_t n1, n2 = 0;
	bool classic = next_line(data, len, &p2, &l1, &n1) && starts_ci(l1, n1, "FROM:") &&
	               next_line(data, len, &p2, &l2, &n2) && starts_ci(l2, n2, "RCPT:");
	if (classic) {
		kind = "classic";
		next_line(data, len, &pos, &line, &ll);
		env.from = pickup_addr(line + 5, ll - 5, true);
		if (env.from == NULL) {
			why = "classic pending file: bad FROM: address";
			goto lost;
		}
		size_t save = pos;
		while (next_line(data, len, &pos, &line, &ll) && starts_ci(line, ll, "RCPT:")) {
			char *a = pickup_addr(line + 5, ll - 5, false);
			if (a == NULL) {
				why = "classic pending file: bad RCPT: address";
				goto lost;
			}
			if (!strv_contains(&env.rcpt, a))
				strv_add(&env.rcpt, a);
			free(a);
			if (env.rcpt.n > ROUTER_PICKUP_RCPT_MAX) {
				why = "classic pending file: more than 1000 RCPT: lines (use several files)";
				goto lost;
			}
			save = pos;
		}
		pos = save;
		/* one empty separator line is allowed between envelope and message */
		size_t p3 = pos;
		if (next_line(data, len, &p3, &line, &ll) && ll == 0)
			pos = p3;
		if (!looks_like_message(data + pos, len - pos)) {
			why = "classic pending file: no message after the envelope";
			goto lost;
		}
		message_to_crlf(data + pos, len - pos, &msg);
	} else {
		kind = "eml";
		/* a leading mbox "From " line is not a header */
		if (len > 5 && memcmp(data, "From ", 5) == 0) {
			next_line(data, len, &pos, &line, &ll);
		}
		/* UTF-8 byte order mark before the first header */
		if (len - pos >= 3 && memcmp(data + pos, "\xEF\xBB\xBF", 3) == 0)
			pos += 3;
		if (!looks_like_message(data + pos, len - pos)) {
			why = "not a mail message (no header block) and not a queue file";
			goto lost;
		}
		struct strbuf crlf = STRBUF_INIT;
		message_to_crlf(data + pos, len - pos, &crlf);
		struct rcpt_collect rc = { &env.rcpt, false };
		message_header_each(crlf.s, crlf.len, "To", collect_hdr_rcpts, &rc);
		message_header_each(crlf.s, crlf.len, "Cc", collect_hdr_rcpts, &rc);
		message_header_each(crlf.s, crlf.len, "Bcc", collect_hdr_rcpts, &rc);
		if (rc.overflow) {
			strbuf_free(&crlf);
			why = "more than 1000 recipients in To:, Cc: and Bcc: (use several files)";
			goto lost;
		}
		message_header_each(crlf.s, crlf.len, "Sender", first_hdr_addr, &env.from);
		if (env.from == NULL)
			message_header_each(crlf.s, crlf.len, "From", first_hdr_addr, &env.from);
		if (env.from == NULL)
			env.from = xstrdup("");
		/* Bcc must not be seen by the recipients (sendmail -t) */
		message_header_remove(crlf.s, crlf.len, "Bcc", &msg);
		strbuf_free(&crlf);
		if (env.rcpt.n == 0) {
			why = "message has no recipients in To:, Cc: or Bcc:";
			goto lost;
		}
	}
	queue_id_new(env.id);
	env.received = (int64_t)time(NULL);
	env.origin = xstrdup("pickup");
	env.body_8bit = message_has_8bit(msg.s, msg.len);

	/* trace header for the pickup */
	struct strbuf full = STRBUF_INIT;
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	strbuf_addf(&full, "Received: by %s (posthorn pickup) id %s;\r\n\t%s\r\n", r->hostname, env.id, date);
	strbuf_add(&full, msg.s, msg.len);

	const char *err;
	if (queue_write_file(r->data_dir, "pending", &env, full.s, full.len, &err) < 0) {
		log_error("router: cannot convert %s into a queue file: %s", name, err);
		strbuf_free(&full);
		strbuf_free(&msg);
		queue_env_free(&env);
		return -2;
	}
	char path[PATH_MAX], dir[PATH_MAX];
	queue_path(path, sizeof(path), r->data_dir, "pending", name);
	queue_path(dir, sizeof(dir), r->data_dir, "pending", NULL);
	/* XXX: a crash between the write above and this unlink routes the
	 * dropped file twice; a hand-dropped file has no id to detect it. */
	unlink(path);
	fsutil_fsync_dir(dir);
	struct event e;
	event_begin(&e, "pickup", NULL);
	event_str(&e, "file", name);
	event_str(&e, "format", kind);
	event_str(&e, "id", env.id);
	event_str(&e, "from", env.from);
	event_int(&e, "nrcpt", (int64_t)env.rcpt.n);
	event_int(&e, "size", (int64_t)full.len);
	event_end(&e);
	enqueue(r, env.id, true, false);
	strbuf_free(&full);
	strbuf_free(&msg);
	queue_env_free(&env);
	return 1;
lost:
	lost_found(r, name, why);
	strbuf_free(&msg);
	queue_env_free(&env);
	return -1;
}

/* --- routing a queue file ------------------------------------------- */

static int route_queue_file(struct router *r, struct directory *dir, const char *name, const char *data,
                            size_t len, const struct queue_env *env, size_t body_off, size_t body_len,
                            bool check)
{
	const char *msg = data + body_off;
	int hops = message_count_received(msg, body_len);
	if (hops > r->conf.max_hops) {
		lost_found(r, name, "mail loop: too many Received: headers");
		return -1;
	}
	struct strv local = { 0 }, remote = { 0 }, unknown = { 0 };
	for (size_t i = 0; i < env->rcpt.n; i++) {
		const char *err;
		if (directory_expand(dir, env->rcpt.v[i], &local, &remote, &unknown, &err) < 0) {
			if (strncmp(err, "alias ", 6) == 0) {
				/* a misconfigured alias (too deep, too wide) will not
				 * heal by waiting: fail this recipient */
				struct event e;
				event_begin(&e, "failed", NULL);
				event_str(&e, "id", env->id);
				event_str(&e, "rcpt", env->rcpt.v[i]);
				event_str(&e, "reason", err);
				event_end(&e);
				continue;
			}
			log_error("router: %s: expanding %s: %s", env->id, env->rcpt.v[i], err);
			strv_free(&local);
			strv_free(&remote);
			strv_free(&unknown);
			return -2;
		}
	}
	int rc = 0;
	size_t ndone = 0;
	/* local deliveries */
	for (size_t i = 0; i < local.n; i++) {
		char path[PATH_MAX], uniq[128];
		if (store_maildir_path(path, sizeof(path), r->data_dir, local.v[i]) < 0) {
			struct event e;
			event_begin(&e, "failed", NULL);
			event_str(&e, "id", env->id);
			event_str(&e, "mailbox", local.v[i]);
			event_str(&e, "reason", "mailbox name cannot be a Maildir path");
			event_end(&e);
			continue;
		}
		struct strbuf hdr = STRBUF_INIT;
		strbuf_addf(&hdr, "Return-Path: <%s>\r\nDelivered-To: %s\r\n", env->from, local.v[i]);
		struct iovec iov[2] = { { hdr.s, hdr.len }, { (void *)msg, body_len } };
		snprintf(uniq, sizeof(uniq), "%lld.%s.%s", (long long)env->received, env->id, r->hostname);
		bool already = false;
		const char *err;
		struct event e;
		if (store_maildir_deliver(path, uniq, iov, 2, check, &already, &err) < 0) {
			event_begin(&e, "deferred", NULL);
			event_str(&e, "id", env->id);
			event_str(&e, "mailbox", local.v[i]);
			event_str(&e, "error", err);
			event_end(&e);
			rc = -2;
		} else {
			event_begin(&e, already ? "already-delivered" : "delivered", NULL);
			event_str(&e, "id", env->id);
			event_str(&e, "from", env->from);
			event_str(&e, "mailbox", local.v[i]);
			event_int(&e, "size", (int64_t)(hdr.len + body_len));
			event_int(&e, "delay_ms", (int64_t)(time(NULL) - env->received) * 1000);
			event_end(&e);
			if (!already)
				count(r, &r->n_delivered);
			ndone++;
		}
		strbuf_free(&hdr);
	}
	/* remote recipients wait in the outbox for the delivery agent */
	if (rc == 0 && remote.n > 0) {
		struct queue_env out = *env;
		out.rcpt = remote;
		if (out.fingerprint[0] == '\0')
			fingerprint_message(msg, body_len, out.fingerprint);
		char stale[PATH_MAX];
		queue_path(stale, sizeof(stale), r->data_dir, "incoming", env->id);
		unlink(stale);
		const char *err;
		struct event e;
		if (queue_write_file(r->data_dir, "outbox", &out, msg, body_len, &err) < 0) {
			event_begin(&e, "deferred", NULL);
			event_str(&e, "id", env->id);
			event_str(&e, "error", err);
			event_end(&e);
			rc = -2;
		} else {
			for (size_t i = 0; i < remote.n; i++) {
				event_begin(&e, "outbox", NULL);
				event_str(&e, "id", env->id);
				event_str(&e, "from", env->from);
				event_str(&e, "rcpt", remote.v[i]);
				event_end(&e);
			}
			count(r, &r->n_relayed);
			if (r->conf.on_outbox)
				r->conf.on_outbox(r->conf.hook_arg, env->id);
		}
	}
	for (size_t i = 0; i < unknown.n; i++) {
		/* XXX: a DSN to the sender belongs to the delivery issue; until
		 * then the failure is an event. */
		struct event e;
		event_begin(&e, "failed", NULL);
		event_str(&e, "id", env->id);
		event_str(&e, "from", env->from);
		event_str(&e, "rcpt", unknown.v[i]);
		event_str(&e, "reason", "5.1.1 no such user");
		event_end(&e);
	}
	if (rc == 0 && ndone == 0 && remote.n == 0) {
		strv_free(&local);
		strv_free(&remote);
		strv_free(&unknown);
		lost_found(r, name, "no deliverable recipient");
		return -1;
	}
	strv_free(&local);
	strv_free(&remote);
	strv_free(&unknown);
	(void)len;
	return rc;
}

/* Handles one name from the todo list. */
/* Is a file in pending complete? A posthorn queue file says so itself
 * (end marker; checked by the parser), so it is always "settled". Any
 * other file is taken once it was moved in (rename is atomic) or has not
 * changed for ROUTER_SETTLE_SECS, and only when nobody holds it open for
 * writing: a read lease (fcntl F_SETLEASE) is refused with EAGAIN while
 * a writer has it open. Without the privilege for leases (not the file's
 * owner, no CAP_LEASE) the settle time alone decides. */
static bool file_settled(const char *path, const struct stat *st, const struct todo *t)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return false;
	char head[sizeof(QUEUE_MAGIC)];
	ssize_t n = read(fd, head, sizeof(head) - 1);
	if (n == (ssize_t)strlen(QUEUE_MAGIC) && memcmp(head, QUEUE_MAGIC, (size_t)n) == 0) {
		close(fd);
		return true;
	}
	bool ok = t->complete_hint || time(NULL) - st->st_mtime >= ROUTER_SETTLE_SECS;
	if (ok && fcntl(fd, F_SETLEASE, F_RDLCK) == 0)
		fcntl(fd, F_SETLEASE, F_UNLCK);
	else if (ok && errno == EAGAIN)
		ok = false; /* open for writing by someone */
	close(fd);
	return ok;
}

static void handle(struct router *r, struct directory *dir, const struct todo *t)
{
	char path[PATH_MAX];
	queue_path(path, sizeof(path), r->data_dir, "pending", t->name);
	struct stat st;
	if (lstat(path, &st) < 0)
		return; /* already handled */
	if (!S_ISREG(st.st_mode)) {
		lost_found(r, t->name, "not a regular file");
		return;
	}
	time_t age = time(NULL) - st.st_mtime;
	/* a message may not exceed max_message_size, whatever road it takes;
	 * a queue file adds its envelope, our Received: line and trailer */
	uint64_t limit = r->conf.max_message_size + QUEUE_ENVELOPE_MAX + 64 * 1024;
	if ((uint64_t)st.st_size > limit) {
		lost_found(r, t->name, "larger than max_message_size");
		return;
	}
	if (!file_settled(path, &st, t)) {
		/* someone may still be writing: a later pass takes it */
		return;
	}
	char *data;
	size_t len;
	if (fsutil_read_file(path, (size_t)limit, &data, &len) < 0) {
		if (errno != ENOENT)
			log_error("router: cannot read %s: %s", path, strerror(errno));
		return;
	}
	size_t ml = strlen(QUEUE_MAGIC);
	if (len >= ml && memcmp(data, QUEUE_MAGIC, ml) == 0) {
		struct queue_env env;
		size_t off, blen;
		const char *err;
		int pr = queue_file_parse(data, len, &env, &off, &blen, &err);
		if (pr == 0) {
			if (age >= ROUTER_INCOMPLETE_SECS)
				lost_found(r, t->name, err);
		} else if (pr < 0) {
			lost_found(r, t->name, err);
		} else {
			if (env.rcpt.n == 0) {
				lost_found(r, t->name, "queue file has no recipients");
			} else {
				pthread_mutex_lock(&r->mu);
				bool check = t->recover || strset_contains(&r->retry, t->name);
				pthread_mutex_unlock(&r->mu);
				int rr = route_queue_file(r, dir, t->name, data, len, &env, off, blen, check);
				pthread_mutex_lock(&r->mu);
				if (rr == 0) {
					unlink(path);
					strset_remove(&r->retry, t->name);
				} else if (rr == -2) {
					strset_add(&r->retry, t->name);
				}
				pthread_mutex_unlock(&r->mu);
				if (rr == 0 && r->conf.on_routed)
					r->conf.on_routed(r->conf.hook_arg, t->name);
			}
			queue_env_free(&env);
		}
	} else if (len > r->conf.max_message_size) {
		lost_found(r, t->name, "larger than max_message_size");
	} else {
		pickup(r, t->name, data, len);
	}
	free(data);
}

static void drain_inotify(struct router *r)
{
	char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(r->ifd, buf, sizeof(buf));
		if (n <= 0)
			return;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
				r->iwd = -1;
				watch_pending(r);
			} else if (ev->len > 0 && !name_skipped(ev->name)) {
				/* a rename is atomic: the file is complete; after a
				 * close the writer may come back (shell >>), so that
				 * is only a wake-up and the settle time decides */
				enqueue(r, ev->name, (ev->mask & IN_MOVED_TO) != 0, false);
			}
			p += sizeof(struct inotify_event) + ev->len;
		}
	}
}

/* A delivery thread: takes names off the FIFO and routes them. */
static void *deliver_main(void *arg)
{
	struct router *r = arg;
	const char *err;
	char dbpath[PATH_MAX];
	xsnprintf(dbpath, sizeof(dbpath), "%s/db/directory.sqlite", r->data_dir);
	struct directory *dir = directory_open(dbpath, false, &err);
	if (dir == NULL) {
		log_error("router: cannot open %s: %s", dbpath, err);
		return NULL;
	}
	pthread_mutex_lock(&r->mu);
	for (;;) {
		while ((r->qhead == r->qn || r->paused > 0) && !r->stop)
			pthread_cond_wait(&r->cv, &r->mu);
		if (r->stop)
			break;
		struct todo t = r->q[r->qhead++];
		r->busy++;
		pthread_mutex_unlock(&r->mu);
		handle(r, dir, &t);
		pthread_mutex_lock(&r->mu);
		if (--r->busy == 0)
			pthread_cond_broadcast(&r->idle);
		strset_remove(&r->queued, t.name);
		free(t.name);
	}
	pthread_mutex_unlock(&r->mu);
	directory_close(&dir);
	return NULL;
}

/* The watcher: inotify on queue/pending, wake-ups, periodic rescans. */
static void *watch_main(void *arg)
{
	struct router *r = arg;
	time_t last_scan = time(NULL);
	for (;;) {
		pthread_mutex_lock(&r->mu);
		bool stop = r->stop;
		pthread_mutex_unlock(&r->mu);
		if (stop)
			break;
		int wait_ms = r->conf.scan_interval * 1000;
		/* hand-dropped files settle within seconds */
		if (wait_ms > 1000)
			wait_ms = 1000;
		struct pollfd pfd[2] = { { r->efd, POLLIN, 0 }, { r->ifd, POLLIN, 0 } };
		int pr = poll(pfd, r->ifd >= 0 ? 2 : 1, wait_ms);
		if (pr > 0 && (pfd[0].revents & POLLIN)) {
			uint64_t v;
			if (read(r->efd, &v, sizeof(v)) < 0) {
				/* spurious */
			}
		}
		if (pr > 0 && r->ifd >= 0 && (pfd[1].revents & POLLIN))
			drain_inotify(r);
		if (time(NULL) - last_scan >= r->conf.scan_interval || r->iwd < 0) {
			if (r->iwd < 0)
				watch_pending(r);
			scan_pending(r, false);
			last_scan = time(NULL);
		}
	}
	return NULL;
}

void router_start(struct router *r)
{
	/* everything already waiting may be half-done from a crash */
	watch_pending(r);
	scan_pending(r, true);
	if (pthread_create(&r->watcher, NULL, watch_main, r) != 0)
		fatal("router: pthread_create failed");
	for (r->nthreads = 0; r->nthreads < ROUTER_THREADS; r->nthreads++)
		if (pthread_create(&r->threads[r->nthreads], NULL, deliver_main, r) != 0)
			fatal("router: pthread_create failed");
	r->started = true;
}

void router_free(struct router **rp)
{
	struct router *r = *rp;
	if (r == NULL)
		return;
	if (r->started) {
		pthread_mutex_lock(&r->mu);
		r->stop = true;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		uint64_t one = 1;
		if (write(r->efd, &one, sizeof(one)) < 0) {
			/* ignore */
		}
		pthread_join(r->watcher, NULL);
		for (int i = 0; i < r->nthreads; i++)
			pthread_join(r->threads[i], NULL);
	}
	for (size_t i = r->qhead; i < r->qn; i++)
		free(r->q[i].name);
	free(r->q);
	strset_free(&r->queued);
	strset_free(&r->retry);
	if (r->ifd >= 0)
		close(r->ifd);
	close(r->efd);
	pthread_cond_destroy(&r->cv);
	pthread_cond_destroy(&r->idle);
	pthread_mutex_destroy(&r->mu);
	free(r->data_dir);
	free(r->hostname);
	free(r);
	*rp = NULL;
}
