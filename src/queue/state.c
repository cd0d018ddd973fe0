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

/* One parsed "rcpt" line. */
struct parsed {
	char *addr;
	struct rcpt_state rs;
};

static bool parse_status(const char *s, size_t n, enum rcpt_status *st)
{
	for (size_t i = 0; i < sizeof(status_names) / sizeof(status_names[0]); i++)
		if (strlen(status_names[i]) == n && memcmp(s, status_names[i], n) == 0) {
			*st = (enum rcpt_status)i;
			return true;
		}
	return false;
}

/* "<addr> status attempts=N host=H reply=R" (after "rcpt "). The address
 * ends at the first "> " that is followed by a status word, so an address
 * with '>' in a quoted local part still parses. */
static int parse_rcpt(const char *v, struct parsed *p)
{
	memset(p, 0, sizeof(*p));
	if (v[0] != '<')
		return -1;
	const char *gt = v;
	for (;;) {
		gt = strstr(gt + 1, "> ");
		if (gt == NULL)
			return -1;
		const char *w = gt + 2;
		size_t wl = strcspn(w, " ");
		if (parse_status(w, wl, &p->rs.status)) {
			p->addr = xstrndup(v + 1, (size_t)(gt - v - 1));
			const char *q = w + wl;
			while (*q == ' ') {
				q++;
				if (strncmp(q, "reply=", 6) == 0) {
					p->rs.reply = xstrdup(q + 6);
					break;
				}
				size_t tl = strcspn(q, " ");
				if (strncmp(q, "attempts=", 9) == 0)
					p->rs.attempts = atoi(q + 9);
				else if (strncmp(q, "host=", 5) == 0 && tl > 5)
					p->rs.host = xstrndup(q + 5, tl - 5);
				q += tl;
			}
			return 0;
		}
	}
}

static int parse_file(char *data, struct queue_state *st, struct parsed **pv, size_t *pn,
                      const char **error_r)
{
	size_t cap = 0;
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
			struct parsed p;
			if (parse_rcpt(v, &p) < 0) {
				*error_r = "malformed rcpt line in state file";
				return -1;
			}
			if (*pn == cap) {
				cap = cap ? cap * 2 : 8;
				*pv = xreallocarray(*pv, cap, sizeof(**pv));
			}
			(*pv)[(*pn)++] = p;
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
	struct parsed *pv = NULL;
	size_t pn = 0;
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
			rc = parse_file(data, st, &pv, &pn, error_r);
		}
		free(data);
	}
	if (rc == 0) {
		st->n = env->rcpt.n;
		st->r = xcalloc(st->n ? st->n : 1, sizeof(*st->r));
		for (size_t i = 0; i < env->rcpt.n; i++) {
			const char *a = env->rcpt.v[i];
			/* usually the same order: look at the same index first */
			size_t j = pn;
			if (i < pn && pv[i].addr && strcmp(pv[i].addr, a) == 0)
				j = i;
			for (size_t k = 0; j == pn && k < pn; k++)
				if (pv[k].addr && strcmp(pv[k].addr, a) == 0)
					j = k;
			st->r[i].addr = xstrdup(a);
			if (j < pn) {
				st->r[i].status = pv[j].rs.status;
				st->r[i].attempts = pv[j].rs.attempts;
				st->r[i].host = pv[j].rs.host;
				st->r[i].reply = pv[j].rs.reply;
				free(pv[j].addr);
				pv[j].addr = NULL; /* taken: a duplicate line cannot match twice */
				pv[j].rs.host = pv[j].rs.reply = NULL;
			}
		}
	} else {
		queue_state_free(st);
	}
	for (size_t k = 0; k < pn; k++) {
		free(pv[k].addr);
		free(pv[k].rs.host);
		free(pv[k].rs.reply);
	}
	free(pv);
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
