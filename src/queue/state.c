/* state — see state.h for the file format.
 *
 * Role: used by the MTA (on its worker threads) and by the console
 * (queue show, index load). Blocking file I/O: never call it on the event
 * loop.
 * Invariants: the file is replaced atomically (temp, fsync, rename, fsync
 * dir), so a reader sees the old or the new state, never a mix. Values
 * are written as single printable lines (control bytes become '?', host
 * names lose spaces), so a hostile remote reply cannot forge a line.
 * On error: a missing file is a fresh state; an unreadable or malformed
 * one is an error (the caller starts fresh and logs it: at worst a
 * recipient is tried again, never lost). */
#include "queue/state.h"
#include "lib/fsutil.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STATE_MAGIC "posthorn-state 1"
/* A state file is one line per recipient (reply text is cut at 512
 * bytes when saved): far below this even for 10,000 recipients. */
#define STATE_FILE_MAX (16 * 1024 * 1024)

static const char *status_names[] = { "pending", "deferred", "delivered", "failed" };

const char *rcpt_status_name(enum rcpt_status s)
{
	if ((unsigned)s < sizeof(status_names) / sizeof(status_names[0]))
		return status_names[s];
	return "pending";
}

static void state_path(char *buf, size_t n, const char *data_dir, const char *folder, const char *id)
{
	char name[NAME_MAX + 1];
	xsnprintf(name, sizeof(name), "%s.st", id);
	queue_path(buf, n, data_dir, folder, name);
}

void queue_state_free(struct queue_state *st)
{
	for (size_t i = 0; i < st->n; i++) {
		free(st->r[i].addr);
		free(st->r[i].host);
		free(st->r[i].reply);
	}
	free(st->r);
	memset(st, 0, sizeof(*st));
}

static bool parse_status(const char *s, size_t n, enum rcpt_status *st)
{
	for (size_t i = 0; i < sizeof(status_names) / sizeof(status_names[0]); i++)
		if (strlen(status_names[i]) == n && memcmp(s, status_names[i], n) == 0) {
			*st = (enum rcpt_status)i;
			return true;
		}
	return false;
}

/* Reads "status attempts=N host=H reply=R" (after "<addr> ") into rs.
 * Returns 0, or -1 when the status word is not one of ours. */
static int parse_rcpt_rest(const char *w, struct rcpt_state *rs)
{
	size_t wl = strcspn(w, " ");
	if (!parse_status(w, wl, &rs->status))
		return -1;
	const char *q = w + wl;
	while (*q == ' ') {
		q++;
		if (strncmp(q, "reply=", 6) == 0) {
			rs->reply = xstrdup(q + 6);
			break;
		}
		size_t tl = strcspn(q, " ");
		if (strncmp(q, "attempts=", 9) == 0)
			rs->attempts = atoi(q + 9);
		else if (strncmp(q, "host=", 5) == 0 && tl > 5 && rs->host == NULL)
			rs->host = xstrndup(q + 5, tl - 5);
		q += tl;
	}
	return 0;
}

/* The value of line ("<addr> status ...") when it is about addr: the
 * address is matched whole against the envelope's, so any address (even
 * one with "> failed " in a quoted local part) reads back exactly. */
static const char *rcpt_line_for(const char *line, const char *addr)
{
	size_t al = strlen(addr);
	if (line[0] != '<' || strncmp(line + 1, addr, al) != 0 || line[1 + al] != '>' || line[2 + al] != ' ')
		return NULL;
	return line + 3 + al;
}

/* A line looks like "<...> status": the closing "> " of some address
 * followed by a status word. */
static bool rcpt_line_ok(const char *v)
{
	if (v[0] != '<')
		return false;
	for (const char *gt = v; (gt = strstr(gt + 1, "> ")) != NULL;) {
		enum rcpt_status st;
		if (parse_status(gt + 2, strcspn(gt + 2, " "), &st))
			return true;
	}
	return false;
}

static int parse_file(char *data, struct queue_state *st, struct strv *lines, const char **error_r)
{
	char *save = NULL;
	char *line = strtok_r(data, "\n", &save);
	if (line == NULL || strcmp(line, STATE_MAGIC) != 0) {
		*error_r = "not a posthorn state file";
		return -1;
	}
	while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
		char *sp = strchr(line, ' ');
		if (sp == NULL)
			continue;
		*sp = '\0';
		const char *k = line, *v = sp + 1;
		if (strcmp(k, "first-attempt") == 0)
			st->first_attempt = strtoll(v, NULL, 10);
		else if (strcmp(k, "last-attempt") == 0)
			st->last_attempt = strtoll(v, NULL, 10);
		else if (strcmp(k, "next-attempt") == 0)
			st->next_attempt = strtoll(v, NULL, 10);
		else if (strcmp(k, "attempts") == 0)
			st->attempts = atoi(v);
		else if (strcmp(k, "warned") == 0)
			st->warned = strcmp(v, "yes") == 0;
		else if (strcmp(k, "rcpt") == 0) {
			if (!rcpt_line_ok(v)) {
				*error_r = "malformed rcpt line in state file";
				return -1;
			}
			strv_add(lines, v);
		}
		/* unknown keys: a newer version wrote them; ignored */
	}
	return 0;
}

int queue_state_load(const char *data_dir, const char *folder, const struct queue_env *env,
                     struct queue_state *st, const char **error_r)
{
	char path[PATH_MAX];
	memset(st, 0, sizeof(*st));
	state_path(path, sizeof(path), data_dir, folder, env->id);
	char *data = NULL;
	size_t len = 0;
	struct strv lines = { 0 };
	int rc = 0;
	if (fsutil_read_file(path, STATE_FILE_MAX, &data, &len) < 0) {
		if (errno != ENOENT) {
			*error_r = strerror(errno);
			return -1;
		}
	} else {
		if (memchr(data, '\0', len) != NULL) {
			*error_r = "NUL byte in state file";
			rc = -1;
		} else {
			rc = parse_file(data, st, &lines, error_r);
		}
		free(data);
	}
	if (rc == 0) {
		st->n = env->rcpt.n;
		st->r = xcalloc(st->n ? st->n : 1, sizeof(*st->r));
		bool *taken = xcalloc(lines.n ? lines.n : 1, sizeof(bool));
		for (size_t i = 0; i < env->rcpt.n; i++) {
			const char *a = env->rcpt.v[i];
			st->r[i].addr = xstrdup(a);
			/* usually the same order: look at the same index first */
			for (size_t k = 0; k <= lines.n; k++) {
				size_t j = k == 0 ? i : k - 1;
				if (j >= lines.n || taken[j])
					continue;
				const char *rest = rcpt_line_for(lines.v[j], a);
				if (rest && parse_rcpt_rest(rest, &st->r[i]) == 0) {
					taken[j] = true; /* a duplicate line cannot match twice */
					break;
				}
				free(st->r[i].host);
				free(st->r[i].reply);
				st->r[i].host = st->r[i].reply = NULL;
				st->r[i].status = RCPT_PENDING;
				st->r[i].attempts = 0;
			}
		}
		free(taken);
	} else {
		queue_state_free(st);
	}
	strv_free(&lines);
	return rc;
}

/* Appends v with control bytes as '?' (and spaces as '_' when nospace). */
static void add_clean(struct strbuf *sb, const char *v, bool nospace)
{
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			strbuf_addc(sb, '?');
		else if (nospace && *p == ' ')
			strbuf_addc(sb, '_');
		else
			strbuf_addc(sb, (char)*p);
	}
}

char *queue_state_format(const struct queue_state *st, size_t *len_r)
{
	struct strbuf sb = STRBUF_INIT;
	strbuf_adds(&sb, STATE_MAGIC "\n");
	strbuf_addf(&sb, "first-attempt %" PRId64 "\n", st->first_attempt);
	strbuf_addf(&sb, "last-attempt %" PRId64 "\n", st->last_attempt);
	strbuf_addf(&sb, "next-attempt %" PRId64 "\n", st->next_attempt);
	strbuf_addf(&sb, "attempts %d\n", st->attempts);
	strbuf_addf(&sb, "warned %s\n", st->warned ? "yes" : "no");
	for (size_t i = 0; i < st->n; i++) {
		const struct rcpt_state *r = &st->r[i];
		strbuf_adds(&sb, "rcpt <");
		add_clean(&sb, r->addr, false);
		strbuf_addf(&sb, "> %s attempts=%d", rcpt_status_name(r->status), r->attempts);
		if (r->host && r->host[0]) {
			strbuf_adds(&sb, " host=");
			add_clean(&sb, r->host, true);
		}
		if (r->reply) {
			strbuf_adds(&sb, " reply=");
			add_clean(&sb, r->reply, false);
		}
		strbuf_addc(&sb, '\n');
	}
	return strbuf_detach(&sb, len_r);
}

int queue_state_save(const char *data_dir, const char *folder, const char *id, const struct queue_state *st,
                     const char **error_r)
{
	char path[PATH_MAX];
	if (!queue_id_ok(id)) {
		*error_r = "bad queue id";
		return -1;
	}
	state_path(path, sizeof(path), data_dir, folder, id);
	size_t len;
	char *text = queue_state_format(st, &len);
	int r = fsutil_write_atomic(path, text, len, 0600, error_r);
	free(text);
	return r;
}

void queue_state_remove(const char *data_dir, const char *folder, const char *id)
{
	char path[PATH_MAX];
	if (!queue_id_ok(id))
		return;
	state_path(path, sizeof(path), data_dir, folder, id);
	unlink(path);
}
