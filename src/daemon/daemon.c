/* daemon — `posthorn serve`. See daemon.h.
 *
 * Start-up: create the data dir layout and a commented default
 * posthorn.conf, open the directory (creating the local domain and the
 * postmaster account on first start), remove never-acknowledged files
 * from queue/incoming, bind the listeners, start the committer, the
 * router and the workers, write run/posthorn.pid and serve.
 * Stop (SIGTERM/SIGINT): close listeners, let sessions waiting for a
 * commit get their reply, give every other session 421, then join the
 * committer (every accepted message is durable) and the router.
 * SIGHUP: re-read posthorn.conf; a bad file is reported and the old
 * configuration stays in force. */
#include "daemon/daemon.h"
#include "admin/console.h"
#include "admin/control.h"
#include "admin/queue_cmd.h"
#include "lib/fsutil.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"
#include "mail/address.h"
#include "mta/mta.h"
#include "pop3/pop3.h"
#include "queue/committer.h"
#include "queue/index.h"
#include "queue/queue.h"
#include "queue/router.h"
#include "smtp/smtp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <event2/listener.h>

/* Seconds a graceful stop waits for sessions before it cuts them off. */
#define DAEMON_STOP_GRACE 10
/* Worker threads for crypt(3), console jobs and other blocking work: a
 * long console job must not hold up password checks. */
#define DAEMON_WORKERS 4
/* Committer threads (parallel fsync rounds). */
#define DAEMON_COMMITTERS 4

enum listener_kind { L_SMTP, L_SUBMISSION, L_POP3 };

struct listener {
	struct evconnlistener *ev;
	enum listener_kind kind;
	char *addr;
	struct daemon *d;
};

static struct listener listeners[3 * CONFIG_MAX_LISTEN];
/* Created by this start and not yet shown (see first_start_announce). */
static char *new_postmaster;
static char new_postmaster_pw[21];
static int nlisteners;
static struct evconnlistener *control_listener;
static struct event *stop_timer;
static int64_t stop_deadline;

/* --- connection accounting -------------------------------------------- */

struct iptable {
	struct ipent {
		char ip[64];
		int n;
	} *v;
	size_t n, cap;
};

bool daemon_conn_admit(struct daemon *d, const struct sockaddr *sa, const char **why_r)
{
	char ip[64];
	net_addr_str(sa, ip, sizeof(ip));
	if (d->stopping) {
		*why_r = "shutting down";
		return false;
	}
	if (d->nconn >= d->cfg.max_connections) {
		*why_r = "too many connections";
		return false;
	}
	struct iptable *t = d->ipconn;
	struct ipent *e = NULL;
	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->v[i].ip, ip) == 0)
			e = &t->v[i];
	if (e && e->n >= d->cfg.max_connections_per_ip) {
		*why_r = "too many connections from this address";
		return false;
	}
	if (e == NULL) {
		if (t->n == t->cap) {
			t->cap = t->cap ? t->cap * 2 : 16;
			t->v = xreallocarray(t->v, t->cap, sizeof(*t->v));
		}
		e = &t->v[t->n++];
		snprintf(e->ip, sizeof(e->ip), "%s", ip);
		e->n = 0;
	}
	e->n++;
	d->nconn++;
	return true;
}

void daemon_conn_release(struct daemon *d, const struct sockaddr *sa)
{
	char ip[64];
	net_addr_str(sa, ip, sizeof(ip));
	struct iptable *t = d->ipconn;
	for (size_t i = 0; i < t->n; i++) {
		if (strcmp(t->v[i].ip, ip) == 0) {
			if (--t->v[i].n == 0)
				t->v[i] = t->v[--t->n];
			break;
		}
	}
	d->nconn--;
}

void daemon_session_id(char buf[24])
{
	static uint64_t counter;
	static uint32_t boot;
	if (boot == 0 && getrandom(&boot, sizeof(boot), 0) != sizeof(boot))
		boot = (uint32_t)time(NULL);
	snprintf(buf, 24, "S%04x%06llx", boot & 0xffff, (unsigned long long)++counter);
}

bool daemon_plain_auth_ok(struct daemon *d, const struct sockaddr *sa)
{
	const char *mode = d->cfg.auth_plaintext;
	if (strcmp(mode, "always") == 0)
		return true;
	if (strcmp(mode, "never") == 0)
		return false;
	return net_addr_is_loopback(sa);
}

/* --- per-thread directory connections ---------------------------------- */

static pthread_key_t dir_key;
static pthread_once_t dir_once = PTHREAD_ONCE_INIT;
static char *dir_path;

static void dir_destroy(void *p)
{
	struct directory *dir = p;
	directory_close(&dir);
}

static void dir_key_init(void)
{
	pthread_key_create(&dir_key, dir_destroy);
}

struct directory *daemon_thread_directory(struct daemon *d)
{
	(void)d;
	pthread_once(&dir_once, dir_key_init);
	struct directory *dir = pthread_getspecific(dir_key);
	if (dir == NULL) {
		const char *err;
		dir = directory_open(dir_path, false, &err);
		if (dir == NULL) {
			log_error("cannot open %s: %s", dir_path, err);
			return NULL;
		}
		pthread_setspecific(dir_key, dir);
	}
	return dir;
}

/* --- listeners ----------------------------------------------------------- */

static void refuse(int fd, enum listener_kind kind, const char *why)
{
	char buf[160];
	int n = kind == L_POP3 ? snprintf(buf, sizeof(buf), "-ERR [SYS/TEMP] %s\r\n", why)
	                       : snprintf(buf, sizeof(buf), "421 4.7.0 %s, try again later\r\n", why);
	if (send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
		/* the client is gone anyway */
	}
	close(fd);
}

static void on_accept(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct listener *l = arg;
	struct daemon *d = l->d;
	(void)ev;
	const char *why;
	evutil_make_socket_nonblocking(fd);
	evutil_make_socket_closeonexec(fd);
	if (!daemon_conn_admit(d, sa, &why)) {
		char ip[64];
		net_addr_str(sa, ip, sizeof(ip));
		struct event e;
		event_begin(&e, "reject", NULL);
		event_str(&e, "ip", ip);
		event_str(&e, "reason", why);
		event_end(&e);
		refuse(fd, l->kind, why);
		return;
	}
	switch (l->kind) {
	case L_SMTP:
		smtp_accept(d, fd, sa, (socklen_t)salen, false);
		break;
	case L_SUBMISSION:
		smtp_accept(d, fd, sa, (socklen_t)salen, true);
		break;
	case L_POP3:
		pop3_accept(d, fd, sa, (socklen_t)salen);
		break;
	}
}

static void add_listeners(struct daemon *d, const struct listen_list *ll, enum listener_kind kind,
                          const char *what, const char *key)
{
	for (int i = 0; i < ll->n; i++) {
		const char *err;
		int fd = net_listen(ll->addr[i], &err);
		if (fd < 0) {
			/* a port clash must not eat the one-time postmaster
			 * password: undo the account, the next start makes it */
			if (new_postmaster) {
				const char *e2;
				directory_user_del(d->dir, new_postmaster, &e2);
				explicit_bzero(new_postmaster_pw, sizeof(new_postmaster_pw));
			}
			fatal("cannot listen on %s for %s (%s in %s): %s", ll->addr[i], what, key, d->config_path, err);
		}
		struct listener *l = &listeners[nlisteners++];
		l->kind = kind;
		l->addr = xstrdup(ll->addr[i]); /* the config may be reloaded and freed */
		l->d = d;
		l->ev = evconnlistener_new(d->base, on_accept, l, LEV_OPT_CLOSE_ON_FREE, -1, fd);
		if (l->ev == NULL)
			fatal("evconnlistener_new failed for %s", ll->addr[i]);
		printf("posthorn: %-10s listening on %s\n", what, ll->addr[i]);
	}
}

/* --- control socket ------------------------------------------------------ */

struct control {
	struct io *io;
	struct daemon *d;
	struct control_job *job; /* a console command (admin/control.h) */
};

static void control_status(struct daemon *d, struct strbuf *sb)
{
	uint64_t delivered = 0, relayed = 0, lost = 0;
	if (d->router)
		router_stats(d->router, &delivered, &relayed, &lost);
	strbuf_addf(sb,
	            "{\"running\":true,\"pid\":%d,\"uptime\":%lld,\"hostname\":",
	            (int)getpid(), (long long)(time(NULL) - d->started));
	strbuf_add_json_str(sb, d->hostname);
	strbuf_addf(sb,
	            ",\"connections\":%lld,\"accepted\":%llu,\"rejected\":%llu,"
	            "\"delivered\":%llu,\"relayed\":%llu,\"lost\":%llu,\"listeners\":[",
	            (long long)d->nconn, (unsigned long long)d->n_accepted, (unsigned long long)d->n_rejected,
	            (unsigned long long)delivered, (unsigned long long)relayed, (unsigned long long)lost);
	for (int i = 0; i < nlisteners; i++) {
		static const char *names[] = { "smtp", "submission", "pop3" };
		strbuf_addf(sb, "%s{\"service\":\"%s\",\"address\":", i ? "," : "", names[listeners[i].kind]);
		strbuf_add_json_str(sb, listeners[i].addr);
		strbuf_addc(sb, '}');
	}
	strbuf_adds(sb, "]}\n");
}

static void control_read(struct io *io, void *ctx)
{
	struct control *c = ctx;
	char *line;
	size_t len;
	if (c->job) {
		control_job_input(c->job);
		return;
	}
	int r = io_getline(io, CONSOLE_REQUEST_MAX, &line, &len);
	if (r == 0)
		return;
	if (r > 0 && line[0] == '{') {
		/* a console command: it writes to io from now on */
		c->job = control_job_start(c->d, io, line);
		return;
	}
	struct strbuf sb = STRBUF_INIT;
	if (r > 0 && strcmp(line, "status") == 0)
		control_status(c->d, &sb);
	else
		strbuf_adds(&sb, "{\"error\":\"unknown command\"}\n");
	io_write(io, sb.s, sb.len);
	strbuf_free(&sb);
	io_close_when_flushed(io);
}

static void control_drained(struct io *io, void *ctx)
{
	struct control *c = ctx;
	(void)io;
	if (c->job)
		control_job_drained(c->job);
}

static void control_closed(struct io *io, void *ctx, enum io_close_reason why)
{
	struct control *c = ctx;
	(void)io;
	(void)why;
	if (c->job)
		control_job_detach(c->job);
	io_free(&c->io);
	free(c);
}

static const struct io_handler control_io = { .read = control_read, .drained = control_drained,
	                                      .closed = control_closed };

static void on_control(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	(void)ev;
	(void)sa;
	(void)salen;
	struct control *c = xcalloc(1, sizeof(*c));
	c->d = arg;
	evutil_make_socket_nonblocking(fd);
	c->io = io_new(c->d->base, fd, &control_io, c);
	io_set_timeout(c->io, 5);
}

static void open_control(struct daemon *d)
{
	char path[PATH_MAX];
	xsnprintf(path, sizeof(path), "%s/run/control.sock", d->data_dir);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sun.sun_path)) {
		log_warn("control socket path too long (%s); `posthorn status` will be limited", path);
		return;
	}
	strcpy(sun.sun_path, path); /* length checked above */
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 16) < 0) {
		log_warn("cannot open control socket %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	chmod(path, 0600);
	control_listener = evconnlistener_new(d->base, on_control, d, LEV_OPT_CLOSE_ON_FREE, -1, fd);
}

/* --- signals ----------------------------------------------------------- */

static void stop_tick(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	(void)fd;
	(void)what;
	/* outbound deliveries past their final dot get the grace too */
	if ((d->nconn <= 0 && (d->mta == NULL || !mta_busy(d->mta))) || time(NULL) >= stop_deadline)
		event_base_loopbreak(d->base);
}

static void begin_stop(struct daemon *d, const char *why)
{
	if (d->stopping)
		return;
	d->stopping = true;
	log_info("stopping (%s): closing listeners, finishing sessions", why);
	if (d->mta)
		mta_stop(d->mta);
	for (int i = 0; i < nlisteners; i++) {
		evconnlistener_free(listeners[i].ev);
		listeners[i].ev = NULL;
	}
	smtp_shutdown_all(d);
	pop3_shutdown_all(d);
	stop_deadline = (int64_t)time(NULL) + DAEMON_STOP_GRACE;
	struct timeval tv = { 0, 100 * 1000 };
	stop_timer = event_new(d->base, -1, EV_PERSIST, stop_tick, d);
	event_add(stop_timer, &tv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	(void)what;
	if (sig == SIGHUP) {
		struct config nc;
		char *err = NULL;
		if (config_load(&nc, d->config_path, &err) < 0) {
			log_error("reload failed, keeping the running configuration: %s", err);
			free(err);
			return;
		}
		config_free(&d->cfg);
		d->cfg = nc;
		/* reopen the event log (log rotation: mv events.jsonl; kill -HUP) */
		char lpath[PATH_MAX];
		const char *lerr;
		xsnprintf(lpath, sizeof(lpath), "%s/log/events.jsonl", d->data_dir);
		if (log_open(lpath, !d->cfg.log_stderr, &lerr) < 0)
			log_error("cannot reopen %s: %s", lpath, lerr);
		struct event e;
		event_begin(&e, "reload", NULL);
		event_str(&e, "config", d->config_path);
		event_end(&e);
		log_info("configuration reloaded from %s (listener and hostname changes need a restart)",
		         d->config_path);
		if (d->mta)
			mta_reload(d->mta);
		return;
	}
	begin_stop(d, sig == SIGINT ? "SIGINT" : "SIGTERM");
}

/* --- first start --------------------------------------------------------- */

static void random_password(char *buf, size_t n)
{
	static const char alphabet[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
	unsigned char rnd[64];
	if (n > sizeof(rnd) + 1)
		n = sizeof(rnd) + 1;
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		fatal("getrandom failed: %s", strerror(errno));
	for (size_t i = 0; i + 1 < n; i++)
		buf[i] = alphabet[rnd[i] % (sizeof(alphabet) - 1)];
	buf[n - 1] = '\0';
	explicit_bzero(rnd, sizeof(rnd));
}

static void first_start(struct daemon *d)
{
	if (directory_count_users(d->dir) > 0)
		return;
	char *primary = directory_primary_domain(d->dir);
	const char *err;
	if (primary == NULL) {
		/* the host name when it is a usable domain, else localhost */
		primary = xstrdup(address_domain_ok(d->hostname, false) && strchr(d->hostname, '.')
		                      ? d->hostname
		                      : "localhost");
		if (directory_domain_add(d->dir, primary, &err) < 0)
			fatal("cannot create local domain %s: %s", primary, err);
	}
	char addr[300], pw[21];
	snprintf(addr, sizeof(addr), "postmaster@%s", primary);
	random_password(pw, sizeof(pw));
	if (directory_user_add(d->dir, addr, pw, 0, &err) < 0)
		fatal("cannot create %s: %s", addr, err);
	/* printed by first_start_announce() once the listeners are up */
	new_postmaster = xstrdup(addr);
	memcpy(new_postmaster_pw, pw, sizeof(pw));
	explicit_bzero(pw, sizeof(pw));
	free(primary);
}

/* The listeners are up: show the one-time password. */
static void first_start_announce(struct daemon *d)
{
	if (new_postmaster == NULL)
		return;
	const char *domain = strchr(new_postmaster, '@') + 1;
	printf("posthorn: first start: local domain %s\n", domain);
	printf("posthorn: created %s with password: %s\n", new_postmaster, new_postmaster_pw);
	printf("posthorn: (shown once; change it with 'posthorn --data %s user passwd %s')\n", d->data_dir,
	       new_postmaster);
	fflush(stdout);
	explicit_bzero(new_postmaster_pw, sizeof(new_postmaster_pw));
	free(new_postmaster);
	new_postmaster = NULL;
}

static void clean_incoming(struct daemon *d)
{
	char dir[PATH_MAX], path[PATH_MAX];
	queue_path(dir, sizeof(dir), d->data_dir, "incoming", NULL);
	DIR *dh = opendir(dir);
	if (dh == NULL)
		return;
	struct dirent *de;
	int n = 0;
	while ((de = readdir(dh)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		/* never acknowledged (no 250 was sent before the rename) */
		xsnprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlink(path) == 0)
			n++;
	}
	closedir(dh);
	if (n)
		log_info("removed %d unacknowledged partial message(s) from %s", n, dir);
}

static int pid_lock(struct daemon *d)
{
	char path[PATH_MAX];
	xsnprintf(path, sizeof(path), "%s/run/posthorn.pid", d->data_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		fatal("cannot open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		fatal("another posthorn is already running on %s (lock on %s)", d->data_dir, path);
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
		fatal("cannot write %s: %s", path, strerror(errno));
	return fd;
}

/* Exclusive lock on queue/.lock while the daemon runs: a console command
 * that gets the lock works on the files itself (offline); one that does
 * not asks us over the control socket. A console command working offline
 * holds it, and we wait for it to finish. */
static int queue_lock(struct daemon *d)
{
	char path[PATH_MAX];
	xsnprintf(path, sizeof(path), "%s/queue/.lock", d->data_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		fatal("cannot open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		printf("posthorn: waiting for %s (a 'posthorn queue' command is working on the queue)\n", path);
		fflush(stdout);
		while (flock(fd, LOCK_EX) < 0)
			if (errno != EINTR)
				fatal("cannot lock %s: %s", path, strerror(errno));
	}
	return fd;
}

/* Router thread: a file left queue/pending (routed or set aside). */
static void on_routed(void *arg, const char *id)
{
	struct daemon *d = arg;
	if (d->index)
		queue_index_remove_in(d->index, id, "pending");
}

/* Router thread: a message was written durably into queue/outbox. */
static void on_outbox(void *arg, const char *id)
{
	struct daemon *d = arg;
	if (d->index)
		queue_index_put_file(d->index, "outbox", id);
	if (d->mta)
		mta_notify(d->mta, id);
}

static void on_committed(void *arg, const char *id)
{
	struct daemon *d = arg;
	if (d->router)
		router_notify(d->router, id);
}

int daemon_main(int argc, char **argv)
{
	struct daemon dd = { 0 };
	struct daemon *d = &dd;
	const char *data = "./var";
	const char *config_path = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
			data = argv[++i];
		} else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			config_path = argv[++i];
		} else {
			fprintf(stderr, "posthorn serve: unknown argument '%s'\nusage: posthorn serve [--data DIR] [--config FILE]\n",
			        argv[i]);
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	umask(027);

	const char *err;
	char path[PATH_MAX];
	if (fsutil_mkdir_p(data, 0750, &err) < 0)
		fatal("cannot create data directory %s: %s", data, err);
	char *real = realpath(data, NULL);
	if (real == NULL)
		fatal("%s: %s", data, strerror(errno));
	d->data_dir = real;
	static const char *subdirs[] = { "db", "mail", "log", "run", "queue" };
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		xsnprintf(path, sizeof(path), "%s/%s", d->data_dir, subdirs[i]);
		if (fsutil_mkdir_p(path, 0750, &err) < 0)
			fatal("cannot create %s: %s", path, err);
	}
	if (queue_ensure_dirs(d->data_dir, &err) < 0)
		fatal("cannot create the queue folders under %s/queue: %s", d->data_dir, err);

	d->config_path = config_path ? xstrdup(config_path) : xasprintf("%s/posthorn.conf", d->data_dir);
	if (config_path == NULL && access(d->config_path, F_OK) != 0) {
		const char *text = config_default_text();
		if (fsutil_write_atomic(d->config_path, text, strlen(text), 0640, &err) < 0)
			fatal("cannot write %s: %s", d->config_path, err);
		printf("posthorn: wrote the default configuration to %s\n", d->config_path);
	}
	char *cerr = NULL;
	if (config_load(&d->cfg, d->config_path, &cerr) < 0) {
		fprintf(stderr, "posthorn: %s\n", cerr);
		free(cerr);
		free(d->config_path);
		free(d->data_dir);
		return 1;
	}
	if (d->cfg.hostname[0]) {
		d->hostname = xstrdup(d->cfg.hostname);
	} else {
		char hn[256] = "localhost";
		if (gethostname(hn, sizeof(hn)) < 0 || hn[0] == '\0')
			snprintf(hn, sizeof(hn), "localhost");
		hn[sizeof(hn) - 1] = '\0';
		address_lower(hn);
		d->hostname = xstrdup(hn);
	}

	xsnprintf(path, sizeof(path), "%s/log/events.jsonl", d->data_dir);
	if (log_open(path, !d->cfg.log_stderr, &err) < 0)
		fatal("cannot open event log %s: %s", path, err);

	int pidfd = pid_lock(d);
	int qlockfd = queue_lock(d);
	/* a bulk delete interrupted by a crash; empties queue/.trash */
	queue_cmd_recover(d->data_dir);

	dir_path = xasprintf("%s/db/directory.sqlite", d->data_dir);
	d->dir = directory_open(dir_path, true, &err);
	if (d->dir == NULL)
		fatal("cannot open directory %s: %s", dir_path, err);
	clean_incoming(d);

	d->base = event_base_new();
	if (d->base == NULL)
		fatal("event_base_new failed");
	/* handlers before the listeners: whoever sees our ports open may
	 * already signal us */
	struct event *sigs[4];
	int signums[4] = { SIGTERM, SIGINT, SIGHUP, 0 };
	for (int i = 0; signums[i]; i++) {
		sigs[i] = evsignal_new(d->base, signums[i], on_signal, d);
		event_add(sigs[i], NULL);
	}
	d->ipconn = xcalloc(1, sizeof(struct iptable));
	d->started = (int64_t)time(NULL);

	first_start(d);
	add_listeners(d, &d->cfg.smtp_listen, L_SMTP, "SMTP", "smtp_listen");
	add_listeners(d, &d->cfg.submission_listen, L_SUBMISSION, "submission", "submission_listen");
	add_listeners(d, &d->cfg.pop3_listen, L_POP3, "POP3", "pop3_listen");
	open_control(d);
	first_start_announce(d);

	d->workers = workers_new(d->base, DAEMON_WORKERS);
	d->committer = committer_new(d->base, d->data_dir, DAEMON_COMMITTERS, on_committed, d);
	struct router_conf rc = {
		.data_dir = d->data_dir,
		.hostname = d->hostname,
		.max_hops = (int)d->cfg.max_hops,
		.scan_interval = (int)(d->cfg.router_scan_interval > 0 ? d->cfg.router_scan_interval : 5),
		.max_message_size = d->cfg.max_message_size,
	};
	rc.on_outbox = on_outbox;
	rc.on_routed = on_routed;
	rc.hook_arg = d;
	/* the queue index is read on a thread of its own: a huge queue does
	 * not delay the start; console answers say "partial" meanwhile */
	d->index = queue_index_new(d->data_dir);
	queue_index_load_background(d->index);
	/* before the router starts: it may hand over outbox files at once */
	d->mta = mta_new(d, d->index);
	d->router = router_new(&rc);
	router_start(d->router);
	mta_start(d->mta);


	struct event e;
	event_begin(&e, "start", NULL);
	event_str(&e, "data", d->data_dir);
	event_str(&e, "hostname", d->hostname);
	event_int(&e, "pid", getpid());
	event_end(&e);
	char *primary = directory_primary_domain(d->dir);
	printf("posthorn: serving %s (data %s, pid %d)\n", primary ? primary : "?", d->data_dir, (int)getpid());
	if (directory_count_users(d->dir) <= 1)
		printf("posthorn: add a user: posthorn --data %s user add alice@%s --password-stdin\n", d->data_dir,
		       primary ? primary : "example.org");
	if (d->cfg.nrelay > 0)
		for (int i = 0; i < d->cfg.nrelay; i++)
			if (d->cfg.relay_networks[i].bits == 0)
				log_warn("relay_networks contains a /0 network: this server is an OPEN RELAY "
				         "for every client that can reach it");
	printf("posthorn: ready\n");
	free(primary);

	event_base_dispatch(d->base);

	/* every acknowledged message is already durable; finish in-flight work */
	committer_free(&d->committer);
	control_jobs_shutdown();
	workers_free(&d->workers);
	queue_cmd_trash_stop();
	router_free(&d->router);
	mta_free(&d->mta); /* after the router: no more mta_notify */
	queue_index_free(&d->index); /* after everyone who updates it */
	for (int i = 0; signums[i]; i++)
		event_free(sigs[i]);
	if (stop_timer)
		event_free(stop_timer);
	if (control_listener)
		evconnlistener_free(control_listener);
	for (int i = 0; i < nlisteners; i++)
		free(listeners[i].addr);
	xsnprintf(path, sizeof(path), "%s/run/control.sock", d->data_dir);
	unlink(path);
	xsnprintf(path, sizeof(path), "%s/run/posthorn.pid", d->data_dir);
	unlink(path);
	close(qlockfd);
	close(pidfd);
	event_begin(&e, "stop", NULL);
	event_end(&e);
	directory_close(&d->dir);
	event_base_free(d->base);
	free(d->ipconn->v);
	free(d->ipconn);
	config_free(&d->cfg);
	free(d->hostname);
	free(d->config_path);
	free(d->data_dir);
	free(dir_path);
	log_close();
	return 0;
}
