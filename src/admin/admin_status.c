/* admin_status — `posthorn status [--json]`: is the server running, and
 * what does it hold.
 *
 * Runs in the CLI process and only reads: the pid file run/posthorn.pid
 * (is that process alive: kill(pid, 0)), the control socket
 * run/control.sock (one "status\n" request, one JSON line back, at most
 * STATUS_TIMEOUT_MS in all, so a hung daemon cannot hang the console),
 * the number of files in each queue folder, and the directory counts.
 * Whatever cannot be read is shown as unknown rather than failing the
 * whole report.
 *
 * Exit status, like `systemctl status`: 0 running, 3 not running, 1 when
 * the data directory itself is missing or unreadable. */
#include <stdbool.h>

#include "admin/admin.h"
#include "directory/directory.h"
#include "lib/fsutil.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"
#include "queue/queue.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* The whole control-socket exchange (connect, send, reply) must finish
 * within this; the daemon answers from memory, so 2 s means it is stuck. */
#define STATUS_TIMEOUT_MS 2000
/* Longest reply accepted from the control socket. */
#define STATUS_REPLY_MAX (64 * 1024)

/* Exit codes (systemctl convention for "not running"). */
#define STATUS_EXIT_RUNNING 0
#define STATUS_EXIT_ERROR 1
#define STATUS_EXIT_STOPPED 3

static const char *const status_folders[] = { "pending", "outbox", "hold", "lost+found" };
#define NFOLDERS (sizeof(status_folders) / sizeof(status_folders[0]))

struct status {
	bool running;
	long pid;            /* from the pid file (0: none or unreadable) */
	bool pid_alive;
	const char *pid_note; /* why not running, for people */
	json_t *daemon;      /* the control socket's reply object, or NULL */
	const char *control_note;
	int64_t queue[NFOLDERS]; /* -1: unreadable */
	int64_t domains, users;  /* -1: unknown */
};

/* ---- pid file ---------------------------------------------------------------- */

static void check_pid(const char *data_dir, struct status *s)
{
	char *path = xasprintf("%s/run/posthorn.pid", data_dir);
	char *data = NULL;
	size_t len;
	s->pid = 0;
	if (fsutil_read_file(path, 64, &data, &len) < 0) {
		s->pid_note = errno == ENOENT ? "no pid file" : "pid file unreadable";
		free(path);
		return;
	}
	free(path);
	char *end;
	errno = 0;
	long pid = strtol(data, &end, 10);
	while (*end == '\n' || *end == '\r' || *end == ' ')
		end++;
	if (end == data || *end != '\0' || errno || pid <= 0 || pid > INT32_MAX) {
		s->pid_note = len == 0 ? "empty pid file" : "pid file garbled";
		free(data);
		return;
	}
	free(data);
	s->pid = pid;
	/* EPERM: alive, but someone else's process (the daemon runs as
	 * another user than the admin, say). */
	if (kill((pid_t)pid, 0) == 0 || errno == EPERM) {
		s->pid_alive = true;
	} else {
		s->pid_note = "stale pid file: that process is gone";
	}
}

/* ---- control socket -------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until the deadline; 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = { .fd = fd, .events = events };
		int r = poll(&p, 1, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		return r > 0 ? 1 : 0;
	}
}

static void ask_daemon(const char *data_dir, struct status *s)
{
	char *path = xasprintf("%s/run/control.sock", data_dir);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sun.sun_path)) {
		s->control_note = "control socket path too long";
		free(path);
		return;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	free(path);

	int64_t deadline = now_ms() + STATUS_TIMEOUT_MS;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		s->control_note = "cannot create a socket";
		return;
	}
	struct strbuf reply;
	strbuf_init(&reply, STATUS_REPLY_MAX);
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		if (errno != EINPROGRESS && errno != EAGAIN) {
			s->control_note = errno == ENOENT ? "no control socket" : "control socket refused the connection";
			goto out;
		}
		int err = 0;
		socklen_t el = sizeof(err);
		if (wait_fd(fd, POLLOUT, deadline) <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 ||
		    err != 0) {
			s->control_note = "control socket did not accept the connection";
			goto out;
		}
	}
	static const char req[] = "status\n";
	if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1)) {
		s->control_note = "cannot send to the control socket";
		goto out;
	}
	for (;;) {
		int w = wait_fd(fd, POLLIN, deadline);
		if (w <= 0) {
			s->control_note = "control socket did not answer within 2 s";
			goto out;
		}
		char buf[4096];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			s->control_note = "cannot read from the control socket";
			goto out;
		}
		if (n == 0)
			break;
		if (strbuf_add(&reply, buf, (size_t)n) < 0) {
			s->control_note = "control socket reply too long";
			goto out;
		}
		if (memchr(buf, '\n', (size_t)n) != NULL)
			break;
	}
	if (reply.len == 0) {
		s->control_note = "control socket closed without an answer";
		goto out;
	}
	char *nl = memchr(reply.s, '\n', reply.len);
	json_error_t jerr;
	json_t *j = json_loadb(reply.s, nl ? (size_t)(nl - reply.s) : reply.len, 0, &jerr);
	if (j == NULL || !json_is_object(j)) {
		json_decref(j);
		s->control_note = "control socket gave an unreadable answer";
		goto out;
	}
	if (json_object_get(j, "error") != NULL) {
		json_decref(j);
		s->control_note = "control socket did not understand 'status'";
		goto out;
	}
	s->daemon = j;
out:
	strbuf_free(&reply);
	close(fd);
}

/* ---- counts ---------------------------------------------------------------------- */

/* Files in one queue folder, skipping dot files and temp files. A missing
 * folder is empty (it is recreated on demand). -1 when unreadable.
 * XXX a very large queue is counted by reading the whole folder; the
 * daemon's queue index could report this through the control socket. */
static int64_t count_folder(const char *data_dir, const char *folder)
{
	char path[PATH_MAX];
	queue_path(path, sizeof(path), data_dir, folder, NULL);
	DIR *dh = opendir(path);
	if (dh == NULL)
		return errno == ENOENT ? 0 : -1;
	int64_t n = 0;
	struct dirent *de;
	while ((de = readdir(dh)) != NULL)
		if (de->d_name[0] != '.' && strstr(de->d_name, ".tmp-") == NULL &&
		    !(strlen(de->d_name) > 3 && strcmp(de->d_name + strlen(de->d_name) - 3, ".st") == 0))
			n++; /* <id>.st is a message's delivery state, not a message */
	closedir(dh);
	return n;
}

static void count_domain(const char *domain, int64_t created, void *arg)
{
	(void)domain;
	(void)created;
	(*(int64_t *)arg)++;
}

static void count_directory(const char *data_dir, struct status *s)
{
	s->domains = s->users = -1;
	char *path = xasprintf("%s/db/directory.sqlite", data_dir);
	bool exists = access(path, F_OK) == 0;
	free(path);
	if (!exists)
		return;
	struct directory *d = admin_open_directory(data_dir, false);
	if (d == NULL)
		return; /* the message is on stderr; the rest of the report stands */
	int64_t n = 0;
	if (directory_domain_list(d, count_domain, &n) == 0)
		s->domains = n;
	s->users = directory_count_users(d);
	directory_close(&d);
}

/* ---- output ----------------------------------------------------------------------- */

static json_t *jcount(int64_t n)
{
	return n < 0 ? json_null() : json_integer((json_int_t)n);
}

static int print_json(const char *data_dir, const struct status *s)
{
	json_t *o = json_object();
	json_object_set_new(o, "running", json_boolean(s->running));
	json_object_set_new(o, "pid", s->pid > 0 ? json_integer((json_int_t)s->pid) : json_null());
	json_t *dd = json_string(data_dir);
	json_object_set_new(o, "data_dir", dd ? dd : json_null());
	if (!s->running && s->pid_note)
		json_object_set_new(o, "reason", json_string(s->pid_note));
	json_object_set_new(o, "daemon", s->daemon ? json_incref(s->daemon) : json_null());
	if (s->control_note)
		json_object_set_new(o, "control", json_string(s->control_note));
	json_t *q = json_object();
	for (size_t i = 0; i < NFOLDERS; i++)
		json_object_set_new(q, status_folders[i], jcount(s->queue[i]));
	json_object_set_new(o, "queue", q);
	json_object_set_new(o, "domains", jcount(s->domains));
	json_object_set_new(o, "users", jcount(s->users));
	char *text = json_dumps(o, JSON_INDENT(2));
	json_decref(o);
	if (text == NULL) {
		fprintf(stderr, "posthorn: status: cannot format JSON\n");
		return -1;
	}
	puts(text);
	free(text);
	return 0;
}

static void duration_str(int64_t secs, char *buf, size_t n)
{
	if (secs < 0)
		secs = 0;
	if (secs >= 86400)
		snprintf(buf, n, "%lldd %lldh", (long long)(secs / 86400), (long long)(secs % 86400 / 3600));
	else if (secs >= 3600)
		snprintf(buf, n, "%lldh %02lldm", (long long)(secs / 3600), (long long)(secs % 3600 / 60));
	else if (secs >= 60)
		snprintf(buf, n, "%lldm %02llds", (long long)(secs / 60), (long long)(secs % 60));
	else
		snprintf(buf, n, "%llds", (long long)secs);
}

static long long jint(const json_t *o, const char *key, bool *ok)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_integer(v)) {
		*ok = false;
		return 0;
	}
	return (long long)json_integer_value(v);
}

/* The daemon's facts, the known ones in words and any others as
 * "key value", so a newer daemon's fields still show. */
static void print_daemon(const json_t *j)
{
	static const char *const known[] = { "running", "pid", "uptime", "hostname", "connections",
		                             "accepted", "rejected", "delivered", "relayed", "lost",
		                             "listeners" };
	json_t *listeners = json_object_get(j, "listeners");
	if (json_is_array(listeners) && json_array_size(listeners) > 0) {
		struct strbuf sb = STRBUF_INIT;
		size_t i;
		json_t *l;
		json_array_foreach(listeners, i, l) {
			const char *svc = json_string_value(json_object_get(l, "service"));
			const char *addr = json_string_value(json_object_get(l, "address"));
			strbuf_addf(&sb, "%s%s %s", i ? ", " : "", svc ? svc : "?", addr ? addr : "?");
		}
		printf("  %-11s %s\n", "listening", sb.s);
		strbuf_free(&sb);
	}
	bool ok = true;
	long long conn = jint(j, "connections", &ok), acc = jint(j, "accepted", &ok),
		  rej = jint(j, "rejected", &ok);
	if (ok)
		printf("  %-11s %lld open; %lld accepted, %lld rejected since start\n", "connections", conn,
		       acc, rej);
	ok = true;
	long long del = jint(j, "delivered", &ok), rel = jint(j, "relayed", &ok), lost = jint(j, "lost", &ok);
	if (ok)
		printf("  %-11s %lld delivered locally, %lld relayed, %lld set aside as lost\n", "messages", del,
		       rel, lost);
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)j, key, v) {
		bool is_known = false;
		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			if (strcmp(key, known[i]) == 0)
				is_known = true;
		if (is_known)
			continue;
		char *text = json_is_string(v) ? xstrdup(json_string_value(v))
		                               : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		printf("  %-11s %s\n", key, text ? text : "?");
		free(text);
	}
}

static void print_text(const char *data_dir, const struct status *s)
{
	if (s->running) {
		long pid = s->pid;
		bool ok = true;
		if (s->daemon) {
			long long p = jint(s->daemon, "pid", &ok);
			if (ok && p > 0)
				pid = (long)p;
		}
		printf("posthorn is running (pid %ld", pid);
		ok = true;
		long long up = s->daemon ? jint(s->daemon, "uptime", &ok) : 0;
		if (s->daemon && ok) {
			char d[32];
			duration_str(up, d, sizeof(d));
			printf(", up %s", d);
		}
		const char *host = s->daemon ? json_string_value(json_object_get(s->daemon, "hostname")) : NULL;
		printf(")%s%s\n", host ? " as " : "", host ? host : "");
	} else {
		printf("posthorn is not running (%s)\n", s->pid_note ? s->pid_note : "no answer");
	}
	printf("  %-11s %s\n", "data", data_dir);
	if (s->daemon)
		print_daemon(s->daemon);
	else if (s->running && s->control_note)
		printf("  %-11s %s: no live figures\n", "control", s->control_note);
	printf("  %-11s", "queue");
	for (size_t i = 0; i < NFOLDERS; i++) {
		if (s->queue[i] < 0)
			printf("%s %s ?", i ? "," : "", status_folders[i]);
		else
			printf("%s %s %lld", i ? "," : "", status_folders[i], (long long)s->queue[i]);
	}
	putchar('\n');
	if (s->domains < 0 && s->users < 0)
		printf("  %-11s %s\n", "directory", "no directory database yet");
	else
		printf("  %-11s %lld domain%s, %lld user%s\n", "directory", (long long)s->domains,
		       s->domains == 1 ? "" : "s", (long long)s->users, s->users == 1 ? "" : "s");
}

int admin_status_main(int argc, char **argv, const char *data_dir)
{
	bool json = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			puts("usage: posthorn status [--json]");
			return 0;
		} else {
			fprintf(stderr, "posthorn: status: unexpected argument '%s'\n"
			                "usage: posthorn status [--json]\n",
			        argv[i]);
			return 2;
		}
	}
	if (!fsutil_is_dir(data_dir)) {
		if (access(data_dir, F_OK) < 0 && errno == ENOENT)
			fprintf(stderr,
			        "posthorn: no data directory at %s (start 'posthorn serve --data %s' once, "
			        "or check --data)\n",
			        data_dir, data_dir);
		else
			fprintf(stderr, "posthorn: status: %s is not a directory\n", data_dir);
		return STATUS_EXIT_ERROR;
	}

	struct status s = { 0 };
	check_pid(data_dir, &s);
	/* Ask the socket even without a live pid: a daemon whose pid file was
	 * removed by hand still answers, and its answer is the truth. */
	ask_daemon(data_dir, &s);
	s.running = s.pid_alive || s.daemon != NULL;
	for (size_t i = 0; i < NFOLDERS; i++)
		s.queue[i] = count_folder(data_dir, status_folders[i]);
	count_directory(data_dir, &s);

	int r = json ? print_json(data_dir, &s) : (print_text(data_dir, &s), 0);
	json_decref(s.daemon);
	if (r < 0)
		return STATUS_EXIT_ERROR;
	return s.running ? STATUS_EXIT_RUNNING : STATUS_EXIT_STOPPED;
}
