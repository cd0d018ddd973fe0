/* admin_queue — `posthorn sendmail` (also reached as argv[0] ==
 * "sendmail"): queues a message read from stdin through queue/pending
 * with the same durable write the SMTP server uses (temp file, fsync,
 * rename, fsync dir), so a 0 exit status means the message is on disk.
 * Runs in the CLI; works whether the daemon runs or not (the router picks
 * the file up when it starts). Exit codes follow sysexits(3).
 * The queue console (`posthorn queue …`) that used to live here is
 * admin/queue_cmd.c. */
#include "admin/admin.h"
#include "conf/config.h"
#include "lib/fsutil.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"
#include "mail/address.h"
#include "mail/message.h"
#include "queue/queue.h"

#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* sendmail reads at most this much from stdin (the SMTP default limit). */
#define SENDMAIL_MAX (50u * 1024 * 1024)

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

	if (fullname) {
		for (const unsigned char *q = (const unsigned char *)fullname; *q; q++) {
			if (*q < 0x20 || *q == 0x7f) {
				fprintf(stderr, "sendmail: -F: control characters (line breaks) are not allowed in a name\n");
				strv_free(&rcpts);
				return 64;
			}
		}
	}
	/* the same limits as SMTP (posthorn.conf in the data dir) */
	struct config cfg;
	char *cerr = NULL;
	char cpath[PATH_MAX];
	xsnprintf(cpath, sizeof(cpath), "%s/posthorn.conf", data_dir);
	if (config_load(&cfg, cpath, &cerr) < 0) {
		fprintf(stderr, "sendmail: %s\n", cerr);
		free(cerr);
		strv_free(&rcpts);
		return 78; /* EX_CONFIG */
	}
	uint64_t max_size = cfg.max_message_size;
	size_t max_line = (size_t)cfg.max_line_length;
	config_free(&cfg);

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
	unsigned long lineno = 0;
	while ((n = getline(&line, &cap, stdin)) > 0) {
		lineno++;
		if (dot_ends && (strcmp(line, ".\n") == 0 || strcmp(line, ".\r\n") == 0))
			break;
		size_t ll = (size_t)n;
		while (ll > 0 && (line[ll - 1] == '\n' || line[ll - 1] == '\r'))
			ll--;
		if (ll > max_line) {
			fprintf(stderr, "sendmail: line %lu is longer than %zu octets (max_line_length, RFC 5322 2.1.1)\n",
			        lineno, max_line);
			free(line);
			strbuf_free(&in);
			strv_free(&rcpts);
			return 65; /* EX_DATAERR */
		}
		if (in.len + (size_t)n > max_size) {
			fprintf(stderr, "sendmail: message larger than max_message_size (%llu bytes)\n",
			        (unsigned long long)max_size);
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
		if (fullname) {
			/* a quoted-string: escape quotes and backslashes (RFC 5322
			 * 3.2.4); control characters were refused above */
			strbuf_adds(&msg, "From: \"");
			for (const char *q = fullname; *q; q++) {
				if (*q == '"' || *q == '\\')
					strbuf_addc(&msg, '\\');
				strbuf_addc(&msg, *q);
			}
			strbuf_addf(&msg, "\" <%s>\r\n", env.from);
		}
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
