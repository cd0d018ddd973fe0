/* admin_queue — `posthorn queue list|show|count` (basic; reads the queue
 * files directly, so it works with the daemon running or stopped) and
 * `posthorn sendmail` (queues a message from stdin through queue/pending
 * with the same durable write the SMTP server uses).
 * Listings read only the envelope part of each file. */
#include "admin/admin.h"
#include "conf/config.h"
#include "lib/fsutil.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"
#include "mail/address.h"
#include "mail/message.h"
#include "queue/queue.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* sendmail reads at most this much from stdin (the SMTP default limit). */
#define SENDMAIL_MAX (50u * 1024 * 1024)

static const char *folders_all[] = { "pending", "outbox", "hold", "lost+found" };

static bool folder_ok(const char *f)
{
	for (size_t i = 0; i < sizeof(folders_all) / sizeof(folders_all[0]); i++)
		if (strcmp(f, folders_all[i]) == 0)
			return true;
	return false;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the regular files in a queue folder. */
static int list_names(const char *data_dir, const char *folder, struct strv *out)
{
	char dir[PATH_MAX];
	queue_path(dir, sizeof(dir), data_dir, folder, NULL);
	DIR *d = opendir(dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' && strstr(de->d_name, ".tmp-") == NULL)
			strv_add(out, de->d_name);
	closedir(d);
	if (out->n > 1)
		qsort(out->v, out->n, sizeof(char *), cmp_str);
	return 0;
}

static void usage_queue(void)
{
	fputs("usage: posthorn queue list [--folder pending|outbox|hold|lost+found] [--limit N] [--after ID] [--json]\n"
	      "       posthorn queue show ID [--body]\n"
	      "       posthorn queue count [--json]\n",
	      stderr);
}

static int queue_list(int argc, char **argv, const char *data_dir)
{
	const char *folder = NULL, *after = NULL;
	long limit = 100;
	bool json = false;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "--folder") == 0 && i + 1 < argc)
			folder = argv[++i];
		else if (strcmp(argv[i], "--after") == 0 && i + 1 < argc)
			after = argv[++i];
		else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
			char *end;
			limit = strtol(argv[++i], &end, 10);
			if (*end || limit <= 0) {
				fprintf(stderr, "posthorn queue list: --limit: '%s' is not a positive number\n", argv[i]);
				return 2;
			}
		} else {
			fprintf(stderr, "posthorn queue list: unknown argument '%s'\n", argv[i]);
			usage_queue();
			return 2;
		}
	}
	if (folder && !folder_ok(folder)) {
		fprintf(stderr, "posthorn queue list: --folder: unknown folder '%s' (pending, outbox, hold, lost+found)\n",
		        folder);
		return 2;
	}
	json_t *arr = json ? json_array() : NULL;
	if (!json)
		printf("%-16s  %-10s  %9s  %-20s  %-30s  %s\n", "ID", "FOLDER", "SIZE", "RECEIVED", "FROM", "RECIPIENTS");
	long shown = 0;
	for (size_t f = 0; f < sizeof(folders_all) / sizeof(folders_all[0]) && shown < limit; f++) {
		if (folder && strcmp(folder, folders_all[f]) != 0)
			continue;
		struct strv names = { 0 };
		list_names(data_dir, folders_all[f], &names);
		for (size_t i = 0; i < names.n && shown < limit; i++) {
			if (after && strcmp(names.v[i], after) <= 0)
				continue;
			char path[PATH_MAX];
			queue_path(path, sizeof(path), data_dir, folders_all[f], names.v[i]);
			struct stat st;
			if (stat(path, &st) < 0)
				continue;
			struct queue_env env;
			const char *err;
			bool ok = queue_env_read(path, &env, &err) == 0;
			char ts[32] = "-";
			time_t t = ok ? (time_t)env.received : st.st_mtime;
			struct tm tm;
			gmtime_r(&t, &tm);
			strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
			if (json) {
				json_t *o = json_object();
				json_object_set_new(o, "id", json_string(names.v[i]));
				json_object_set_new(o, "folder", json_string(folders_all[f]));
				json_object_set_new(o, "size", json_integer((json_int_t)st.st_size));
				json_object_set_new(o, "received", json_string(ts));
				if (ok) {
					json_object_set_new(o, "from", json_string(env.from));
					json_t *r = json_array();
					for (size_t k = 0; k < env.rcpt.n; k++)
						json_array_append_new(r, json_string(env.rcpt.v[k]));
					json_object_set_new(o, "rcpt", r);
					if (env.client_ip)
						json_object_set_new(o, "client_ip", json_string(env.client_ip));
					if (env.auth_user)
						json_object_set_new(o, "auth_user", json_string(env.auth_user));
				} else {
					json_object_set_new(o, "error", json_string(err));
				}
				json_array_append_new(arr, o);
			} else {
				struct strbuf r = STRBUF_INIT;
				for (size_t k = 0; ok && k < env.rcpt.n; k++)
					strbuf_addf(&r, "%s%s", k ? "," : "", env.rcpt.v[k]);
				printf("%-16s  %-10s  %9lld  %-20s  %-30s  %s\n", names.v[i], folders_all[f],
				       (long long)st.st_size, ts, ok ? (env.from[0] ? env.from : "<>") : "?",
				       ok ? (r.s ? r.s : "") : err);
				strbuf_free(&r);
			}
			if (ok)
				queue_env_free(&env);
			shown++;
		}
		strv_free(&names);
	}
	if (json) {
		char *s = json_dumps(arr, JSON_COMPACT);
		puts(s);
		free(s);
		json_decref(arr);
	}
	return 0;
}

static int queue_count(int argc, char **argv, const char *data_dir)
{
	bool json = argc > 2 && strcmp(argv[2], "--json") == 0;
	if (argc > 2 && !json) {
		usage_queue();
		return 2;
	}
	json_t *o = json ? json_object() : NULL;
	for (size_t f = 0; f < sizeof(folders_all) / sizeof(folders_all[0]); f++) {
		struct strv names = { 0 };
		list_names(data_dir, folders_all[f], &names);
		if (json)
			json_object_set_new(o, folders_all[f], json_integer((json_int_t)names.n));
		else
			printf("%-10s %zu\n", folders_all[f], names.n);
		strv_free(&names);
	}
	if (json) {
		char *s = json_dumps(o, JSON_COMPACT);
		puts(s);
		free(s);
		json_decref(o);
	}
	return 0;
}

static int queue_show(int argc, char **argv, const char *data_dir)
{
	const char *id = NULL;
	bool body = false;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--body") == 0)
			body = true;
		else if (id == NULL)
			id = argv[i];
		else {
			usage_queue();
			return 2;
		}
	}
	if (id == NULL) {
		usage_queue();
		return 2;
	}
	if (!queue_id_ok(id)) {
		fprintf(stderr, "posthorn queue show: '%s' is not a queue id\n", id);
		return 2;
	}
	for (size_t f = 0; f < sizeof(folders_all) / sizeof(folders_all[0]); f++) {
		char path[PATH_MAX];
		queue_path(path, sizeof(path), data_dir, folders_all[f], id);
		char *data;
		size_t len;
		if (fsutil_read_file(path, SIZE_MAX / 2, &data, &len) < 0)
			continue;
		printf("folder: %s\nfile: %s\n", folders_all[f], path);
		struct queue_env env;
		size_t off, blen;
		const char *err;
		int r = queue_file_parse(data, len, &env, &off, &blen, &err);
		if (r <= 0) {
			printf("state: %s\n", err);
			off = 0;
			blen = len;
		} else {
			fwrite(data, 1, off, stdout);
			queue_env_free(&env);
		}
		/* headers (or everything with --body) */
		size_t show = body ? blen : message_header_len(data + off, blen);
		fwrite(data + off, 1, show, stdout);
		free(data);
		return 0;
	}
	fprintf(stderr, "posthorn queue show: no message %s in the queue\n", id);
	return 1;
}

int admin_queue_main(int argc, char **argv, const char *data_dir)
{
	if (argc < 2) {
		usage_queue();
		return 2;
	}
	char qdir[PATH_MAX];
	queue_path(qdir, sizeof(qdir), data_dir, "pending", NULL);
	char top[PATH_MAX];
	xsnprintf(top, sizeof(top), "%s/queue", data_dir);
	if (!fsutil_is_dir(top)) {
		fprintf(stderr, "posthorn: no queue at %s (start 'posthorn serve --data %s' once, or check --data)\n", top,
		        data_dir);
		return 1;
	}
	if (strcmp(argv[1], "list") == 0)
		return queue_list(argc, argv, data_dir);
	if (strcmp(argv[1], "count") == 0)
		return queue_count(argc, argv, data_dir);
	if (strcmp(argv[1], "show") == 0)
		return queue_show(argc, argv, data_dir);
	fprintf(stderr, "posthorn queue: unknown sub-command '%s'\n", argv[1]);
	usage_queue();
	return 2;
}

/* --- sendmail ------------------------------------------------------------ */

static void add_rcpt_cb(const char *addr, void *arg)
{
	struct strv *v = arg;
	if (!strv_contains(v, addr))
		strv_add(v, addr);
}

static void hdr_rcpts(const char *value, size_t len, void *arg)
{
	address_list_parse(value, len, add_rcpt_cb, arg);
}

static char *normalise_addr(const char *s, bool allow_null)
{
	struct mail_address a;
	const char *err, *end;
	if (allow_null && (s[0] == '\0' || strcmp(s, "<>") == 0))
		return xstrdup("");
	int r = s[0] == '<' ? address_parse_path(s, allow_null, true, &a, &end, &err)
	                    : address_parse(s, true, &a, &err);
	if (r < 0 || (s[0] == '<' && *end != '\0'))
		return NULL;
	char *f = address_format(&a);
	address_free(&a);
	return f;
}

int admin_sendmail_main(int argc, char **argv, const char *data_dir)
{
	bool from_headers = false, dot_ends = true;
	const char *from = NULL, *fullname = NULL;
	struct strv rcpts = { 0 };
	int rc = 1;
	int i;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-')
			break;
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "-t") == 0)
			from_headers = true;
		else if (strcmp(a, "-i") == 0 || strcmp(a, "-oi") == 0)
			dot_ends = false;
		else if (strncmp(a, "-f", 2) == 0 || strncmp(a, "-r", 2) == 0)
			from = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
		else if (strncmp(a, "-F", 2) == 0)
			fullname = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
		else if (strncmp(a, "-o", 2) == 0 || strcmp(a, "-v") == 0 || strcmp(a, "-bm") == 0 ||
		         strcmp(a, "-U") == 0 || strncmp(a, "-B", 2) == 0 || strncmp(a, "-N", 2) == 0)
			continue; /* accepted for compatibility, no effect */
		else {
			fprintf(stderr, "sendmail: unsupported option '%s'\n", a);
			return 64; /* EX_USAGE */
		}
	}
	for (; i < argc; i++) {
		char *n = normalise_addr(argv[i], false);
		if (n == NULL) {
			fprintf(stderr, "sendmail: bad recipient address '%s'\n", argv[i]);
			strv_free(&rcpts);
			return 64;
		}
		if (!strv_contains(&rcpts, n))
			strv_add(&rcpts, n);
		free(n);
	}

	char top[PATH_MAX];
	xsnprintf(top, sizeof(top), "%s/queue", data_dir);
	if (!fsutil_is_dir(top)) {
		fprintf(stderr, "sendmail: no posthorn queue at %s (set --data or $POSTHORN_DATA)\n", top);
		strv_free(&rcpts);
		return 69; /* EX_UNAVAILABLE */
	}

	/* read the message; a line with a single '.' ends it unless -i */
	struct strbuf in = STRBUF_INIT;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, stdin)) > 0) {
		if (dot_ends && (strcmp(line, ".\n") == 0 || strcmp(line, ".\r\n") == 0))
			break;
		if (in.len + (size_t)n > SENDMAIL_MAX) {
			fprintf(stderr, "sendmail: message larger than %u bytes\n", SENDMAIL_MAX);
			free(line);
			strbuf_free(&in);
			strv_free(&rcpts);
			return 73;
		}
		strbuf_add(&in, line, (size_t)n);
	}
	free(line);
	if (in.s == NULL)
		strbuf_add(&in, "", 0);

	struct strbuf msg = STRBUF_INIT, body = STRBUF_INIT;
	message_to_crlf(in.s, in.len, &body);
	strbuf_free(&in);
	if (from_headers) {
		message_header_each(body.s, body.len, "To", hdr_rcpts, &rcpts);
		message_header_each(body.s, body.len, "Cc", hdr_rcpts, &rcpts);
		message_header_each(body.s, body.len, "Bcc", hdr_rcpts, &rcpts);
		struct strbuf nobcc = STRBUF_INIT;
		message_header_remove(body.s, body.len, "Bcc", &nobcc);
		strbuf_free(&body);
		body = nobcc;
	}
	if (rcpts.n == 0) {
		fprintf(stderr, "sendmail: no recipients given (use arguments or -t)\n");
		strbuf_free(&body);
		strv_free(&rcpts);
		return 64;
	}

	/* envelope sender: -f, else the invoking user at the local host */
	struct queue_env env = { 0 };
	if (from) {
		env.from = normalise_addr(from, true);
		if (env.from == NULL) {
			fprintf(stderr, "sendmail: bad sender address '%s'\n", from);
			goto out;
		}
	} else {
		struct passwd *pw = getpwuid(getuid());
		char host[256] = "localhost";
		gethostname(host, sizeof(host));
		host[sizeof(host) - 1] = '\0';
		env.from = xasprintf("%s@%s", pw ? pw->pw_name : "nobody", host);
	}
	queue_id_new(env.id);
	env.received = (int64_t)time(NULL);
	env.rcpt = rcpts;
	rcpts.v = NULL;
	rcpts.n = 0;
	env.origin = xstrdup("sendmail");
	struct passwd *pw = getpwuid(getuid());
	env.auth_user = xasprintf("uid %d (%s)", (int)getuid(), pw ? pw->pw_name : "?");

	/* headers a local program often leaves out */
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	char host[256] = "localhost";
	gethostname(host, sizeof(host));
	host[sizeof(host) - 1] = '\0';
	strbuf_addf(&msg, "Received: by %s (posthorn sendmail, uid %d) id %s;\r\n\t%s\r\n", host, (int)getuid(),
	            env.id, date);
	if (!message_header_has(body.s, body.len, "From")) {
		if (fullname)
			strbuf_addf(&msg, "From: \"%s\" <%s>\r\n", fullname, env.from);
		else
			strbuf_addf(&msg, "From: <%s>\r\n", env.from);
	}
	if (!message_header_has(body.s, body.len, "Date"))
		strbuf_addf(&msg, "Date: %s\r\n", date);
	if (!message_header_has(body.s, body.len, "Message-ID"))
		strbuf_addf(&msg, "Message-ID: <%s@%s>\r\n", env.id, host);
	/* no header block at all: separate our headers from the text */
	if (message_header_len(body.s, body.len) == body.len && body.len > 0 &&
	    memchr(body.s, ':', body.len) == NULL)
		strbuf_adds(&msg, "\r\n");
	strbuf_add(&msg, body.s, body.len);
	env.body_8bit = message_has_8bit(msg.s, msg.len);

	const char *err;
	if (queue_write_file(data_dir, "pending", &env, msg.s, msg.len, &err) < 0) {
		fprintf(stderr, "sendmail: cannot queue the message in %s/queue/pending: %s\n", data_dir, err);
		rc = 75; /* EX_TEMPFAIL */
		goto out;
	}
	rc = 0;
out:
	queue_env_free(&env);
	strbuf_free(&msg);
	strbuf_free(&body);
	strv_free(&rcpts);
	return rc;
}
