/* queue_cmd — see queue_cmd.h. `posthorn queue …` in both modes.
 *
 * Role: the CLI (offline, and the online/offline decision in
 * admin_queue_main) and the daemon's console jobs (online, on a worker
 * thread, never the event loop).
 *
 * Invariants (never lose or duplicate a message while delivery runs):
 * - an outbox file is moved or deleted only while the MTA has it claimed
 *   (mta_claim → file work → mta_unclaim / mta_notify); a message whose
 *   attempt is still in flight after CLAIM_WAIT_MS is skipped and
 *   reported, never touched;
 * - files in queue/pending are touched only while the router is paused
 *   (router_pause: no file is being routed);
 * - a message and its <id>.st move together: the state is linked into
 *   the target first, then the message is renamed (never over an
 *   existing file), then the old state is unlinked, so a crash leaves
 *   at worst a stray .st, never a message without its delivery record;
 * - a message sent back to pending (requeue, release without a record,
 *   quarantine restore) first has its envelope cut down to the
 *   recipients still to do (a rewrite in place, atomic), then its .st is
 *   dropped: routed again, it cannot reach a recipient twice;
 * - the index is updated after the files, except for a move into
 *   pending, where it is updated before (the router may route the file
 *   the moment it appears).
 * Directories touched are fsync'd at the end of each batch.
 *
 * Errors: usage errors name the argument (exit 2); a message that cannot
 * be handled is reported and the batch goes on (exit 1 at the end). */
#include "admin/admin.h"
#include "admin/console.h"
#include "admin/queue_cmd.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/strbuf.h"
#include "lib/strset.h"
#include "lib/xalloc.h"
#include "mail/message.h"
#include "mta/mta.h"
#include "queue/index.h"
#include "queue/queue.h"
#include "queue/router.h"
#include "queue/state.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* `list` without --limit shows this many (the old basic list did too). */
#define QCMD_LIST_DEFAULT 100
/* `summary` shows this many keys per group without --top. */
#define QCMD_TOP_DEFAULT 10
/* How long a console operation waits for one delivery attempt in flight
 * before it leaves that message alone (an SMTP transaction rarely takes
 * longer; the admin can run the command again). */
#define CLAIM_WAIT_MS 5000
/* The CLI waits this long for queue/.lock or the control socket (a
 * daemon between taking the lock and opening its socket). */
#define LOCK_WAIT_MS 30000
/* Bulk file work (unlink, rename) runs on this many threads: each call
 * mostly waits for the file system's journal (and discard), and the
 * waits overlap. Measured on ext4: 98,000 unlinks take 15-22 s on one
 * thread and 3.5-5.5 s on 16. */
#define FILE_THREADS 16
/* Fewer messages than this are handled on the calling thread. */
#define FILE_THREADS_MIN_BATCH 64
/* Online, deleting at least this many messages that are at least
 * SWAP_RATIO times as many as the others in the outbox swaps directories
 * instead of unlinking one file at a time (see swap_delete). */
#define SWAP_MIN 5000
#define SWAP_RATIO 4
/* Hidden names under queue/ (no other part looks at dot names). */
#define KEEP_PREFIX ".keep-" /* the fresh folder being filled, then the old one */
#define KEEP_MARK ".survivors" /* inside .keep-<folder> while it holds survivors */
#define TRASH ".trash"       /* deleted messages, emptied in the background */
/* Ids per "console" event in the event log: one append per message costs
 * more than the unlink itself when 16 threads contend for the file. */
#define EVENT_IDS_MAX 1000
/* `show` reads at most this much without --body (envelope and headers). */
#define SHOW_READ_MAX (4u * 1024 * 1024)
/* Longest Subject shown in a summary. */
#define SUBJECT_SHOW_MAX 100

#define QUARANTINE "quarantine"

/* ------------------------------------------------------------------------- */
/* arguments                                                                  */

enum {
	O_FILTER = 1 << 0,  /* --folder, --sender, ... */
	O_PAGE = 1 << 1,    /* --limit, --after, --sort, --reverse */
	O_JSON = 1 << 2,
	O_TOP = 1 << 3,
	O_CHANGE = 1 << 4,  /* --dry-run, --yes, --all */
	O_BODY = 1 << 5,
	O_IDS = 1 << 6,     /* positional ids */
	O_NOFOLDER = 1 << 7 /* --folder not accepted (quarantine restore) */
};

struct qargs {
	const char *cmd; /* "list", for messages */
	struct queue_filter f;
	struct strv ids;
	struct strset idset; /* ids seen (duplicates count once) */
	bool json, dry_run, yes, all, body, reverse;
	bool lost_found; /* list --folder lost+found (not in the index) */
	size_t limit;
	bool limit_set;
	const char *after;
	int sort;
	size_t top;
};

static void usage(struct console *con, bool to_stdout)
{
	(to_stdout ? console_printf : console_errorf)(con, "%s",
	               "usage: posthorn queue list [FILTERS] [--sort age|size|sender|domain] [--reverse] [--limit N] "
	               "[--after ID] [--json]\n"
	               "       posthorn queue summary [FILTERS] [--top N] [--json]\n"
	               "       posthorn queue show ID [--body] [--json]\n"
	               "       posthorn queue count [--json]\n"
	               "       posthorn queue retry|hold|release|delete|purge|requeue [ID...] [FILTERS] [--all] "
	               "[--dry-run] [--yes] [--json]\n"
	               "       posthorn queue quarantine pending|outbox|hold [--yes]\n"
	               "       posthorn queue quarantine list [--json]\n"
	               "       posthorn queue quarantine restore NAME [ID...] [FILTERS] [--all] [--dry-run] [--yes]\n"
	               "FILTERS: --folder pending|outbox|hold[,...] --sender P --rcpt P --domain P --ip P|CIDR --user P\n"
	               "         --fingerprint HEX --min-size SIZE --max-size SIZE --older DURATION --newer DURATION\n"
	               "  patterns are case-insensitive, '*' and '?' match anything; '<>' is the null sender;\n"
	               "  SIZE like 10k, 5M; DURATION like 90s, 15m, 2h, 3d, 1w\n"
	               "Works online through the running server, or on the files when it is stopped.\n");
}

/* "15m" → seconds; -1 when malformed. */
static int64_t parse_duration(const char *s)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (end == s || errno || v < 0)
		return -1;
	int64_t mul = 1;
	if (*end) {
		switch (*end) {
		case 's': mul = 1; break;
		case 'm': mul = 60; break;
		case 'h': mul = 3600; break;
		case 'd': mul = 86400; break;
		case 'w': mul = 7 * 86400; break;
		default: return -1;
		}
		if (end[1] != '\0')
			return -1;
	}
	if (v > INT64_MAX / mul)
		return -1;
	return (int64_t)v * mul;
}

/* "10k" → bytes (1k = 1024); 0 with *ok false when malformed. */
static uint64_t parse_size(const char *s, bool *ok)
{
	char *end;
	errno = 0;
	*ok = false;
	if (!isdigit((unsigned char)s[0]))
		return 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (end == s || errno)
		return 0;
	uint64_t mul = 1;
	switch (tolower((unsigned char)*end)) {
	case '\0': break;
	case 'k': mul = 1024; end++; break;
	case 'm': mul = 1024 * 1024; end++; break;
	case 'g': mul = 1024ull * 1024 * 1024; end++; break;
	default: return 0;
	}
	if (tolower((unsigned char)*end) == 'b')
		end++;
	if (*end != '\0' || (mul > 1 && v > UINT64_MAX / mul))
		return 0;
	*ok = true;
	return (uint64_t)v * mul;
}

static bool id_arg_ok(const char *s)
{
	return strlen(s) <= QUEUE_ID_LEN && queue_id_ok(s);
}

/* Parses argv[first..] for the options in mask. 0, or 2 after a message
 * naming the argument. */
static int parse_args(struct console *con, struct qargs *a, int argc, char **argv, int first, unsigned mask)
{
	int64_t now = (int64_t)time(NULL);
	for (int i = first; i < argc; i++) {
		char *arg = argv[i];
		const char *val = NULL;
		char name[64];
		if (arg[0] != '-' || arg[1] == '\0') {
			if (!(mask & O_IDS)) {
				console_errorf(con, "posthorn queue %s: unexpected argument '%s'\n", a->cmd, arg);
				return 2;
			}
			if (!id_arg_ok(arg)) {
				console_errorf(con, "posthorn queue %s: '%s' is not a queue id\n", a->cmd, arg);
				return 2;
			}
			if (a->idset.cap == 0)
				strset_init(&a->idset);
			if (strset_add(&a->idset, arg))
				strv_add(&a->ids, arg);
			continue;
		}
		/* --name=value or --name value */
		const char *eq = strchr(arg, '=');
		if (eq && (size_t)(eq - arg) < sizeof(name)) {
			snprintf(name, sizeof(name), "%.*s", (int)(eq - arg), arg);
			val = eq + 1;
		} else {
			snprintf(name, sizeof(name), "%s", arg);
		}
		static const struct {
			const char *name;
			unsigned group;
			bool takes_value;
		} opts[] = {
			{ "--json", O_JSON, false },      { "--folder", O_FILTER, true },  { "--sender", O_FILTER, true },
			{ "--rcpt", O_FILTER, true },     { "--domain", O_FILTER, true },  { "--ip", O_FILTER, true },
			{ "--user", O_FILTER, true },     { "--fingerprint", O_FILTER, true },
			{ "--min-size", O_FILTER, true }, { "--max-size", O_FILTER, true }, { "--older", O_FILTER, true },
			{ "--newer", O_FILTER, true },    { "--limit", O_PAGE, true },     { "--after", O_PAGE, true },
			{ "--sort", O_PAGE, true },       { "--reverse", O_PAGE, false },  { "--top", O_TOP, true },
			{ "--dry-run", O_CHANGE, false }, { "--yes", O_CHANGE, false },    { "--all", O_CHANGE, false },
			{ "--body", O_BODY, false },
		};
		size_t k;
		for (k = 0; k < sizeof(opts) / sizeof(opts[0]); k++)
			if (strcmp(opts[k].name, name) == 0)
				break;
		if (k == sizeof(opts) / sizeof(opts[0]) || !(mask & opts[k].group) ||
		    ((mask & O_NOFOLDER) && strcmp(name, "--folder") == 0)) {
			console_errorf(con, "posthorn queue %s: unknown option '%s' (see 'posthorn queue help')\n", a->cmd,
			               arg);
			return 2;
		}
		if (opts[k].takes_value && val == NULL) {
			if (i + 1 >= argc) {
				console_errorf(con, "posthorn queue %s: %s needs a value\n", a->cmd, name);
				return 2;
			}
			val = argv[++i];
		} else if (!opts[k].takes_value && val != NULL) {
			console_errorf(con, "posthorn queue %s: %s takes no value\n", a->cmd, name);
			return 2;
		}
		if (strcmp(name, "--json") == 0) {
			a->json = true;
		} else if (strcmp(name, "--reverse") == 0) {
			a->reverse = true;
		} else if (strcmp(name, "--dry-run") == 0) {
			a->dry_run = true;
		} else if (strcmp(name, "--yes") == 0) {
			a->yes = true;
		} else if (strcmp(name, "--all") == 0) {
			a->all = true;
		} else if (strcmp(name, "--body") == 0) {
			a->body = true;
		} else if (strcmp(name, "--folder") == 0) {
			char *copy = xstrdup(val), *save = NULL;
			for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				int f = queue_folder_parse(t);
				if (f < 0 && strcmp(t, "lost+found") == 0 && strcmp(a->cmd, "list") == 0) {
					a->lost_found = true;
					continue;
				}
				if (f < 0) {
					console_errorf(con, "posthorn queue %s: --folder: unknown folder '%s' (pending, outbox, hold)\n",
					               a->cmd, t);
					free(copy);
					return 2;
				}
				a->f.folders |= 1u << f;
			}
			free(copy);
		} else if (strcmp(name, "--sender") == 0) {
			a->f.sender = val;
		} else if (strcmp(name, "--rcpt") == 0) {
			a->f.rcpt = val;
		} else if (strcmp(name, "--domain") == 0) {
			a->f.domain = val;
		} else if (strcmp(name, "--ip") == 0) {
			a->f.ip = val;
		} else if (strcmp(name, "--user") == 0) {
			a->f.user = val;
		} else if (strcmp(name, "--fingerprint") == 0) {
			a->f.fingerprint = val;
		} else if (strcmp(name, "--min-size") == 0 || strcmp(name, "--max-size") == 0) {
			bool ok;
			uint64_t v = parse_size(val, &ok);
			if (!ok || v == 0) {
				console_errorf(con, "posthorn queue %s: %s: '%s' is not a size (like 500, 10k, 5M)\n", a->cmd,
				               name, val);
				return 2;
			}
			if (name[2] == 'm' && name[3] == 'i')
				a->f.min_size = v;
			else
				a->f.max_size = v;
		} else if (strcmp(name, "--older") == 0 || strcmp(name, "--newer") == 0) {
			int64_t d = parse_duration(val);
			if (d < 0 || d > now) {
				console_errorf(con, "posthorn queue %s: %s: '%s' is not a duration (like 90s, 15m, 2h, 3d)\n",
				               a->cmd, name, val);
				return 2;
			}
			if (name[2] == 'o')
				a->f.received_max = now - d;
			else
				a->f.received_min = now - d;
		} else if (strcmp(name, "--limit") == 0 || strcmp(name, "--top") == 0) {
			char *end;
			errno = 0;
			long long v = strtoll(val, &end, 10);
			if (*end || end == val || errno || v <= 0) {
				console_errorf(con, "posthorn queue %s: %s: '%s' is not a positive number\n", a->cmd, name, val);
				return 2;
			}
			if (name[2] == 'l') {
				a->limit = (size_t)v;
				a->limit_set = true;
			} else {
				a->top = (size_t)v;
			}
		} else if (strcmp(name, "--after") == 0) {
			if (!id_arg_ok(val)) {
				console_errorf(con, "posthorn queue %s: --after: '%s' is not a queue id\n", a->cmd, val);
				return 2;
			}
			a->after = val;
		} else if (strcmp(name, "--sort") == 0) {
			a->sort = queue_sort_parse(val);
			if (a->sort < 0) {
				console_errorf(con, "posthorn queue %s: --sort: '%s' is not one of age, size, sender, domain\n",
				               a->cmd, val);
				return 2;
			}
		}
	}
	if (a->ids.n) {
		a->f.ids = a->ids.v;
		a->f.nids = a->ids.n;
	}
	const char *err;
	if (queue_filter_check(&a->f, &err) < 0) {
		console_errorf(con, "posthorn queue %s: %s\n", a->cmd, err);
		return 2;
	}
	return 0;
}

static void qargs_free(struct qargs *a)
{
	strv_free(&a->ids);
	strset_free(&a->idset);
}

/* ------------------------------------------------------------------------- */
/* helpers                                                                    */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void iso_time(char *buf, size_t n, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *json_time(int64_t t)
{
	if (t <= 0)
		return json_null();
	char b[32];
	iso_time(b, sizeof(b), t);
	return json_string(b);
}

/* A JSON string of arbitrary bytes (invalid UTF-8 bytes become '?'). */
static json_t *json_bytes(const char *p, size_t n)
{
	json_t *s = json_stringn(p, n);
	if (s)
		return s;
	char *c = xmalloc(n + 1);
	for (size_t i = 0; i < n; i++)
		c[i] = (unsigned char)p[i] < 0x80 && p[i] != '\0' ? p[i] : '?';
	c[n] = '\0';
	s = json_stringn(c, n);
	free(c);
	return s ? s : json_string("");
}

static json_t *json_str_or_null(const char *s)
{
	if (s == NULL)
		return json_null();
	return json_bytes(s, strlen(s));
}

static void print_json(struct console *con, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
	if (s) {
		console_write(con, s, strlen(s));
		console_write(con, "\n", 1);
		free(s);
	}
	json_decref(j);
}

struct progress_arg {
	struct console *con;
};

static void load_progress(void *arg, size_t done, size_t total)
{
	struct console *con = arg;
	char d[32], t[32];
	console_fmt_count(d, sizeof(d), done);
	console_fmt_count(t, sizeof(t), total);
	console_progress(con, done == 0, "reading the queue: %s/%s files", d, t);
}

static int dir_names(const char *dir, struct strv *out, bool sorted);
static void refresh_pending(struct queue_cmd_env *env);
static int claim_all(struct queue_cmd_env *env, struct console *con, struct queue_selection *sel,
                     struct strv *claimed);

/* The index to answer from: offline, built now from the files; online,
 * the daemon's. wait: commands that change things wait for a load in
 * progress (with progress lines); listings answer at once, partially. */
static struct queue_index *need_index(struct queue_cmd_env *env, struct console *con, bool wait)
{
	if (env->ix == NULL) {
		env->ix = queue_index_new(env->data_dir);
		if (queue_index_load(env->ix, load_progress, con) < 0)
			console_errorf(con, "posthorn queue: a folder under %s/queue could not be read; its messages are "
			                    "missing from this answer\n",
			               env->data_dir);
		console_progress_end(con);
		return env->ix;
	}
	refresh_pending(env);
	if (!wait)
		return env->ix;
	size_t done, total;
	while (!queue_index_ready(env->ix, 200, &done, &total)) {
		if (console_cancelled(con))
			return NULL;
		char d[32], t[32];
		console_fmt_count(d, sizeof(d), done);
		console_fmt_count(t, sizeof(t), total);
		console_progress(con, false, "the server is still reading its queue: %s/%s files", d, t);
	}
	console_progress_end(con);
	return env->ix;
}

/* Online: files in queue/pending are indexed here, when someone asks,
 * rather than on the way in (that would cost every accepted message a
 * file read); the router empties pending within moments anyway, and its
 * hook removes what it routed. */
static void refresh_pending(struct queue_cmd_env *env)
{
	if (!env->online || env->ix == NULL)
		return;
	char dir[PATH_MAX];
	queue_path(dir, sizeof(dir), env->data_dir, "pending", NULL);
	struct strv names = { 0 };
	dir_names(dir, &names, false);
	for (size_t i = 0; i < names.n; i++)
		if (strlen(names.v[i]) <= QUEUE_ID_LEN && queue_id_ok(names.v[i]) &&
		    !queue_index_contains(env->ix, names.v[i]))
			queue_index_put_file(env->ix, "pending", names.v[i]);
	strv_free(&names);
}

static void loading_note(struct console *con, bool loading, size_t done, size_t total)
{
	if (!loading)
		return;
	char d[32], t[32];
	console_fmt_count(d, sizeof(d), done);
	console_fmt_count(t, sizeof(t), total);
	if (total == 0)
		console_errorf(con, "note: the server is still listing its queue folders: this answer is partial\n");
	else
		console_errorf(con, "note: the server is still reading its queue (%s of %s files): this answer is partial\n",
		               d, t);
}

static const char *folder_label(int f)
{
	const char *n = queue_folder_name(f);
	return n ? n : "?";
}

/* ------------------------------------------------------------------------- */
/* list                                                                       */

static int cmp_cstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Message file names in a directory (no dot files, temp files, .st). */
static int dir_names(const char *dir, struct strv *out, bool sorted)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *n = de->d_name;
		size_t l = strlen(n);
		if (n[0] == '.' || strstr(n, ".tmp-") || (l > 3 && strcmp(n + l - 3, ".st") == 0))
			continue;
		strv_add(out, n);
	}
	closedir(d);
	if (sorted && out->n > 1)
		qsort(out->v, out->n, sizeof(char *), cmp_cstr);
	return 0;
}

static void list_header(struct console *con)
{
	console_printf(con, "%-16s  %-10s  %9s  %-20s  %-30s  %s\n", "ID", "FOLDER", "SIZE", "RECEIVED", "FROM",
	               "RECIPIENTS");
}

/* queue/lost+found: files there may not even be queue files; read them
 * directly, as the basic list always did. */
static int list_lost_found(struct queue_cmd_env *env, struct console *con, const struct qargs *a)
{
	char dir[PATH_MAX];
	queue_path(dir, sizeof(dir), env->data_dir, "lost+found", NULL);
	struct strv names = { 0 };
	dir_names(dir, &names, true);
	json_t *arr = a->json ? json_array() : NULL;
	if (!a->json)
		list_header(con);
	size_t limit = a->limit_set ? a->limit : QCMD_LIST_DEFAULT, shown = 0;
	for (size_t i = 0; i < names.n && shown < limit; i++) {
		if (a->after && strcmp(names.v[i], a->after) <= 0)
			continue;
		char path[PATH_MAX];
		queue_path(path, sizeof(path), env->data_dir, "lost+found", names.v[i]);
		struct stat st;
		if (stat(path, &st) < 0)
			continue;
		struct queue_env qe;
		const char *err;
		bool ok = queue_env_read(path, &qe, &err) == 0;
		char ts[32];
		iso_time(ts, sizeof(ts), ok ? qe.received : (int64_t)st.st_mtime);
		if (a->json) {
			json_t *o = json_object();
			json_object_set_new(o, "id", json_bytes(names.v[i], strlen(names.v[i])));
			json_object_set_new(o, "folder", json_string("lost+found"));
			json_object_set_new(o, "size", json_integer((json_int_t)st.st_size));
			json_object_set_new(o, "received", json_string(ts));
			if (ok) {
				json_object_set_new(o, "from", json_str_or_null(qe.from));
				json_t *r = json_array();
				for (size_t k = 0; k < qe.rcpt.n; k++)
					json_array_append_new(r, json_str_or_null(qe.rcpt.v[k]));
				json_object_set_new(o, "rcpt", r);
			} else {
				json_object_set_new(o, "error", json_string(err));
			}
			json_array_append_new(arr, o);
		} else {
			console_printf(con, "%-16s  %-10s  %9lld  %-20s  %-30s  %s\n", names.v[i], "lost+found",
			               (long long)st.st_size, ts, ok ? (qe.from[0] ? qe.from : "<>") : "?",
			               ok ? (qe.rcpt.n ? qe.rcpt.v[0] : "") : err);
		}
		if (ok)
			queue_env_free(&qe);
		shown++;
	}
	strv_free(&names);
	if (a->json)
		print_json(con, arr);
	return 0;
}

static json_t *item_json(const struct queue_item *it)
{
	json_t *o = json_object();
	char ts[32];
	iso_time(ts, sizeof(ts), it->received);
	json_object_set_new(o, "id", json_string(it->id));
	json_object_set_new(o, "folder", json_string(folder_label(it->folder)));
	json_object_set_new(o, "size", json_integer((json_int_t)it->size));
	json_object_set_new(o, "received", json_string(ts));
	json_object_set_new(o, "from", json_str_or_null(it->from));
	json_t *r = json_array();
	for (size_t k = 0; k < it->rcpt.n; k++)
		json_array_append_new(r, json_str_or_null(it->rcpt.v[k]));
	json_object_set_new(o, "rcpt", r);
	json_object_set_new(o, "nrcpt", json_integer((json_int_t)it->nrcpt));
	json_t *d = json_array();
	for (size_t k = 0; k < it->domains.n; k++)
		json_array_append_new(d, json_str_or_null(it->domains.v[k]));
	json_object_set_new(o, "domains", d);
	if (it->client_ip)
		json_object_set_new(o, "client_ip", json_str_or_null(it->client_ip));
	if (it->auth_user)
		json_object_set_new(o, "auth_user", json_str_or_null(it->auth_user));
	json_object_set_new(o, "fingerprint", it->fingerprint[0] ? json_string(it->fingerprint) : json_null());
	json_object_set_new(o, "attempts", json_integer(it->attempts));
	json_object_set_new(o, "next_attempt", json_time(it->next_attempt));
	json_object_set_new(o, "last_error", json_str_or_null(it->last_error));
	if (it->rcpt_left >= 0)
		json_object_set_new(o, "rcpt_left", json_integer(it->rcpt_left));
	return o;
}

static int cmd_list(struct queue_cmd_env *env, struct console *con, int argc, char **argv)
{
	struct qargs a = { .cmd = "list" };
	int rc = parse_args(con, &a, argc, argv, 1, O_FILTER | O_PAGE | O_JSON | O_IDS);
	if (rc) {
		qargs_free(&a);
		return rc;
	}
	if (a.lost_found) {
		if (a.f.folders || !queue_filter_is_all(&a.f)) {
			console_errorf(con, "posthorn queue list: --folder lost+found takes no other folder or filter\n");
			qargs_free(&a);
			return 2;
		}
		rc = list_lost_found(env, con, &a);
		qargs_free(&a);
		return rc;
	}
	struct queue_index *ix = need_index(env, con, false);
	struct queue_query q = {
		.f = a.f,
		.sort = (enum queue_sort)a.sort,
		.reverse = a.reverse,
		.after = a.after,
		.limit = a.limit_set ? a.limit : QCMD_LIST_DEFAULT,
	};
	struct queue_page page;
	const char *err;
	if (queue_index_list(ix, &q, &page, &err) < 0) {
		console_errorf(con, "posthorn queue list: %s\n", err);
		qargs_free(&a);
		return 2;
	}
	if (a.json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < page.n; i++)
			json_array_append_new(arr, item_json(&page.v[i]));
		print_json(con, arr);
	} else {
		list_header(con);
		for (size_t i = 0; i < page.n; i++) {
			const struct queue_item *it = &page.v[i];
			char ts[32];
			iso_time(ts, sizeof(ts), it->received);
			struct strbuf r = STRBUF_INIT;
			for (size_t k = 0; k < it->rcpt.n && k < 3; k++)
				strbuf_addf(&r, "%s%s", k ? "," : "", it->rcpt.v[k]);
			if (it->nrcpt > 3 || it->nrcpt > it->rcpt.n)
				strbuf_addf(&r, " (+%zu more)", it->nrcpt - (it->rcpt.n < 3 ? it->rcpt.n : 3));
			if (it->attempts > 0)
				strbuf_addf(&r, "  [%d attempt%s%s%s]", it->attempts, it->attempts == 1 ? "" : "s",
				            it->last_error ? ": " : "", it->last_error ? it->last_error : "");
			console_printf(con, "%-16s  %-10s  %9llu  %-20s  %-30s  %s\n", it->id, folder_label(it->folder),
			               (unsigned long long)it->size, ts, it->from[0] ? it->from : "<>", r.s ? r.s : "");
			strbuf_free(&r);
		}
		/* a hint for people: on a terminal only, so that a pipe gets
		 * exactly one line per message */
		char shown[32], total[32];
		console_fmt_count(shown, sizeof(shown), page.n);
		console_fmt_count(total, sizeof(total), page.total);
		if (con->progress && page.more)
			console_errorf(con, "-- %s of %s messages; next page: --after %s\n", shown, total,
			               page.v[page.n - 1].id);
		else if (con->progress && (page.total > page.n || a.after))
			console_errorf(con, "-- %s of %s messages (last page)\n", shown, total);
	}
	loading_note(con, page.loading, page.loaded, page.to_load);
	queue_page_free(&page);
	qargs_free(&a);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* count                                                                      */

static int cmd_count(struct queue_cmd_env *env, struct console *con, int argc, char **argv)
{
	struct qargs a = { .cmd = "count" };
	int rc = parse_args(con, &a, argc, argv, 1, O_JSON);
	if (rc)
		return rc;
	uint64_t n[QUEUE_NFOLDERS + 1] = { 0 };
	bool loading = false;
	size_t done = 0, total = 0;
	if (env->ix) {
		struct queue_counts c;
		queue_index_counts(env->ix, &c);
		for (int f = 0; f < QUEUE_NFOLDERS; f++)
			n[f] = c.messages[f];
		loading = c.loading;
		done = c.loaded;
		total = c.to_load;
	} else {
		/* offline: counting names is enough; no index needed */
		for (int f = 0; f < QUEUE_NFOLDERS; f++) {
			char dir[PATH_MAX];
			queue_path(dir, sizeof(dir), env->data_dir, queue_folder_name(f), NULL);
			struct strv names = { 0 };
			dir_names(dir, &names, false);
			n[f] = names.n;
			strv_free(&names);
		}
	}
	char dir[PATH_MAX];
	queue_path(dir, sizeof(dir), env->data_dir, "lost+found", NULL);
	struct strv names = { 0 };
	dir_names(dir, &names, false);
	n[QUEUE_NFOLDERS] = names.n;
	strv_free(&names);
	if (a.json) {
		json_t *o = json_object();
		for (int f = 0; f < QUEUE_NFOLDERS; f++)
			json_object_set_new(o, queue_folder_name(f), json_integer((json_int_t)n[f]));
		json_object_set_new(o, "lost+found", json_integer((json_int_t)n[QUEUE_NFOLDERS]));
		if (loading)
			json_object_set_new(o, "loading", json_true());
		print_json(con, o);
	} else {
		for (int f = 0; f < QUEUE_NFOLDERS; f++)
			console_printf(con, "%-10s %llu\n", queue_folder_name(f), (unsigned long long)n[f]);
		console_printf(con, "%-10s %llu\n", "lost+found", (unsigned long long)n[QUEUE_NFOLDERS]);
	}
	loading_note(con, loading, done, total);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* show                                                                       */

static void add_subject(const char *value, size_t len, void *arg)
{
	struct strbuf *sb = arg;
	if (sb->len == 0)
		strbuf_add(sb, value, len);
}

/* The Subject of the message in file path (first one; "" when none). */
static char *file_subject(const char *path)
{
	char *data = NULL;
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	data = xmalloc(65536 + 1);
	ssize_t r;
	do
		r = read(fd, data, 65536);
	while (r < 0 && errno == EINTR);
	close(fd);
	if (r <= 0) {
		free(data);
		return NULL;
	}
	len = (size_t)r;
	data[len] = '\0';
	const char *body = memmem(data, len, "\n\n", 2);
	struct strbuf sb = STRBUF_INIT;
	if (body) {
		body += 2;
		size_t bl = len - (size_t)(body - data);
		message_header_each(body, message_header_len(body, bl), "Subject", add_subject, &sb);
	}
	free(data);
	char *s = sb.s ? strbuf_detach(&sb, NULL) : xstrdup("");
	for (char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	size_t lead = strspn(s, " \t");
	memmove(s, s + lead, strlen(s + lead) + 1);
	for (size_t l = strlen(s); l > 0 && s[l - 1] == ' '; l--)
		s[l - 1] = '\0';
	if (strlen(s) > SUBJECT_SHOW_MAX)
		strcpy(s + SUBJECT_SHOW_MAX - 3, "..."); /* within the string */
	return s;
}

/* Finds the file of id: the folder the index knows, else every folder. */
static int find_message(struct queue_cmd_env *env, const char *id, char *path, size_t n, const char **folder_r)
{
	static const char *const folders[] = { "pending", "outbox", "hold", "lost+found" };
	if (env->ix) {
		struct queue_item it;
		if (queue_index_get(env->ix, id, &it) == 1) {
			const char *f = queue_folder_name(it.folder);
			queue_item_free(&it);
			queue_path(path, n, env->data_dir, f, id);
			if (access(path, F_OK) == 0) {
				*folder_r = f;
				return 1;
			}
		}
	}
	for (size_t i = 0; i < sizeof(folders) / sizeof(folders[0]); i++) {
		queue_path(path, n, env->data_dir, folders[i], id);
		if (access(path, F_OK) == 0) {
			*folder_r = folders[i];
			return 1;
		}
	}
	return 0;
}

static int cmd_show(struct queue_cmd_env *env, struct console *con, int argc, char **argv)
{
	struct qargs a = { .cmd = "show" };
	int rc = parse_args(con, &a, argc, argv, 1, O_JSON | O_BODY | O_IDS);
	if (rc) {
		qargs_free(&a);
		return rc;
	}
	if (a.ids.n != 1) {
		console_errorf(con, "posthorn queue show: give exactly one queue id\n");
		qargs_free(&a);
		return 2;
	}
	const char *id = a.ids.v[0];
	char path[PATH_MAX];
	const char *folder;
	if (!find_message(env, id, path, sizeof(path), &folder)) {
		console_errorf(con, "posthorn queue show: no message %s in the queue\n", id);
		qargs_free(&a);
		return 1;
	}
	struct stat st;
	char *data = NULL;
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		console_errorf(con, "posthorn queue show: cannot read %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		qargs_free(&a);
		return 1;
	}
	size_t want = (size_t)st.st_size;
	bool partial = false;
	if (!a.body && want > SHOW_READ_MAX) {
		want = SHOW_READ_MAX;
		partial = true;
	}
	data = xmalloc(want + 1);
	while (len < want) {
		ssize_t r = read(fd, data + len, want - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	data[len] = '\0';

	struct queue_env qe;
	size_t off = 0, blen = 0;
	const char *err = NULL;
	int pr = partial ? -2 : queue_file_parse(data, len, &qe, &off, &blen, &err);
	if (pr == -2) {
		/* only the start was read: the envelope is all we need */
		const char *e = memmem(data, len, "\n\n", 2);
		pr = -1;
		err = "not a posthorn queue file";
		if (e) {
			off = (size_t)(e - data) + 2;
			char path2[PATH_MAX];
			snprintf(path2, sizeof(path2), "%s", path);
			if (queue_env_read(path2, &qe, &err) == 0)
				pr = 1;
			blen = len - off;
		}
	}
	bool have_env = pr == 1;
	if (!have_env) {
		off = 0;
		blen = len;
	}
	struct queue_state qs;
	bool have_state = false;
	if (have_env && strcmp(folder, "lost+found") != 0) {
		const char *serr;
		snprintf(qe.id, sizeof(qe.id), "%s", id);
		have_state = queue_state_load(env->data_dir, folder, &qe, &qs, &serr) == 0;
	}
	size_t hlen = message_header_len(data + off, blen);
	if (a.json) {
		json_t *o = json_object();
		json_object_set_new(o, "id", json_string(id));
		json_object_set_new(o, "folder", json_string(folder));
		json_object_set_new(o, "file", json_str_or_null(path));
		json_object_set_new(o, "size", json_integer((json_int_t)st.st_size));
		if (have_env) {
			json_t *e = json_object();
			json_object_set_new(e, "received", json_time(qe.received));
			json_object_set_new(e, "from", json_str_or_null(qe.from));
			json_t *r = json_array();
			for (size_t k = 0; k < qe.rcpt.n; k++)
				json_array_append_new(r, json_str_or_null(qe.rcpt.v[k]));
			json_object_set_new(e, "rcpt", r);
			json_object_set_new(e, "client_ip", json_str_or_null(qe.client_ip));
			json_object_set_new(e, "helo", json_str_or_null(qe.helo));
			json_object_set_new(e, "auth_user", json_str_or_null(qe.auth_user));
			json_object_set_new(e, "origin", json_str_or_null(qe.origin));
			json_object_set_new(e, "body", json_string(qe.body_8bit ? "8BITMIME" : "7BIT"));
			json_object_set_new(e, "smtputf8", json_boolean(qe.smtputf8));
			json_object_set_new(e, "fingerprint", qe.fingerprint[0] ? json_string(qe.fingerprint) : json_null());
			json_object_set_new(o, "envelope", e);
		} else {
			json_object_set_new(o, "error", json_str_or_null(err));
		}
		if (have_state) {
			json_t *s = json_object();
			json_object_set_new(s, "attempts", json_integer(qs.attempts));
			json_object_set_new(s, "first_attempt", json_time(qs.first_attempt));
			json_object_set_new(s, "last_attempt", json_time(qs.last_attempt));
			json_object_set_new(s, "next_attempt", json_time(qs.next_attempt));
			json_object_set_new(s, "warned", json_boolean(qs.warned));
			json_t *r = json_array();
			for (size_t k = 0; k < qs.n; k++) {
				json_t *x = json_object();
				json_object_set_new(x, "rcpt", json_str_or_null(qs.r[k].addr));
				json_object_set_new(x, "status", json_string(rcpt_status_name(qs.r[k].status)));
				json_object_set_new(x, "attempts", json_integer(qs.r[k].attempts));
				json_object_set_new(x, "host", json_str_or_null(qs.r[k].host));
				json_object_set_new(x, "reply", json_str_or_null(qs.r[k].reply));
				json_array_append_new(r, x);
			}
			json_object_set_new(s, "rcpt", r);
			json_object_set_new(o, "state", s);
		}
		json_object_set_new(o, "headers", json_bytes(data + off, hlen));
		if (a.body)
			json_object_set_new(o, "body", json_bytes(data + off + hlen, blen - hlen));
		print_json(con, o);
	} else {
		console_printf(con, "folder: %s\nfile: %s\n", folder, path);
		if (!have_env)
			console_printf(con, "state: %s\n", err ? err : "unreadable");
		if (have_state) {
			char t1[32], t2[32], t3[32];
			iso_time(t1, sizeof(t1), qs.first_attempt);
			iso_time(t2, sizeof(t2), qs.last_attempt);
			iso_time(t3, sizeof(t3), qs.next_attempt);
			if (qs.attempts == 0)
				console_printf(con, "delivery: not attempted yet\n");
			else
				console_printf(con, "delivery: %d attempt%s, first %s, last %s, next %s%s\n", qs.attempts,
				               qs.attempts == 1 ? "" : "s", t1, t2, qs.next_attempt ? t3 : "-",
				               qs.warned ? " (delay warning sent)" : "");
			for (size_t k = 0; k < qs.n; k++)
				console_printf(con, "  <%s> %s attempts=%d%s%s%s%s\n", qs.r[k].addr,
				               rcpt_status_name(qs.r[k].status), qs.r[k].attempts, qs.r[k].host ? " host=" : "",
				               qs.r[k].host ? qs.r[k].host : "", qs.r[k].reply ? " reply=" : "",
				               qs.r[k].reply ? qs.r[k].reply : "");
		}
		if (have_env)
			console_write(con, data, off);
		console_write(con, data + off, a.body ? blen : hlen);
		if (partial && a.body)
			console_errorf(con, "note: the message is larger than %u bytes; shown in part\n",
			               (unsigned)SHOW_READ_MAX);
	}
	if (have_state)
		queue_state_free(&qs);
	if (have_env)
		queue_env_free(&qe);
	free(data);
	qargs_free(&a);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* summary                                                                    */

static const char *const group_titles[QUEUE_NGROUPS] = { "fingerprint", "sender", "client IP",
	                                                     "authenticated user", "recipient domain" };
static const char *const dom_labels[QUEUE_NGROUPS] = { "fp", "from", "ip", "user", "to" };

static int cmd_summary(struct queue_cmd_env *env, struct console *con, int argc, char **argv)
{
	struct qargs a = { .cmd = "summary" };
	int rc = parse_args(con, &a, argc, argv, 1, O_FILTER | O_JSON | O_TOP);
	if (rc) {
		qargs_free(&a);
		return rc;
	}
	struct queue_index *ix = need_index(env, con, false);
	struct queue_summary s;
	const char *err;
	if (queue_index_summary(ix, &a.f, a.top ? a.top : QCMD_TOP_DEFAULT, &s, &err) < 0) {
		console_errorf(con, "posthorn queue summary: %s\n", err);
		qargs_free(&a);
		return 2;
	}
	/* a sample subject for each fingerprint (one file read per row) */
	char **subjects = xcalloc(s.nrows[QUEUE_G_FINGERPRINT] + 1, sizeof(char *));
	for (size_t i = 0; i < s.nrows[QUEUE_G_FINGERPRINT]; i++) {
		const struct queue_summary_row *r = &s.rows[QUEUE_G_FINGERPRINT][i];
		char path[PATH_MAX];
		queue_path(path, sizeof(path), env->data_dir, folder_label(r->sample_folder), r->sample_id);
		subjects[i] = file_subject(path);
	}
	if (a.json) {
		json_t *o = json_object();
		json_object_set_new(o, "messages", json_integer((json_int_t)s.messages));
		json_object_set_new(o, "bytes", json_integer((json_int_t)s.bytes));
		json_t *fo = json_object();
		for (int f = 0; f < QUEUE_NFOLDERS; f++) {
			json_t *x = json_object();
			json_object_set_new(x, "messages", json_integer((json_int_t)s.folder_messages[f]));
			json_object_set_new(x, "bytes", json_integer((json_int_t)s.folder_bytes[f]));
			json_object_set_new(fo, queue_folder_name(f), x);
		}
		json_object_set_new(o, "folders", fo);
		json_object_set_new(o, "loading", json_boolean(s.loading));
		for (int g = 0; g < QUEUE_NGROUPS; g++) {
			json_t *grp = json_object();
			json_object_set_new(grp, "distinct", json_integer((json_int_t)s.distinct[g]));
			json_t *top = json_array();
			for (size_t i = 0; i < s.nrows[g]; i++) {
				const struct queue_summary_row *r = &s.rows[g][i];
				json_t *x = json_object();
				json_object_set_new(x, "key", json_str_or_null(r->key));
				json_object_set_new(x, "messages", json_integer((json_int_t)r->messages));
				json_object_set_new(x, "bytes", json_integer((json_int_t)r->bytes));
				json_object_set_new(x, "oldest", json_time(r->oldest));
				json_object_set_new(x, "newest", json_time(r->newest));
				json_object_set_new(x, "sample_id", json_string(r->sample_id));
				for (int d = 0; d < QUEUE_NGROUPS; d++) {
					if (d == g)
						continue;
					json_t *dj = json_null();
					if (r->dom[d].key) {
						dj = json_object();
						json_object_set_new(dj, "key", json_str_or_null(r->dom[d].key));
						json_object_set_new(dj, "messages", json_integer((json_int_t)r->dom[d].messages));
					}
					json_object_set_new(x, queue_group_name(d), dj);
				}
				if (g == QUEUE_G_FINGERPRINT)
					json_object_set_new(x, "subject", json_str_or_null(subjects[i]));
				json_array_append_new(top, x);
			}
			json_object_set_new(grp, "top", top);
			json_object_set_new(o, queue_group_name(g), grp);
		}
		print_json(con, o);
	} else {
		char m[32], b[32];
		console_fmt_count(m, sizeof(m), s.messages);
		console_fmt_bytes(b, sizeof(b), s.bytes);
		console_printf(con, "%s message%s, %s", m, s.messages == 1 ? "" : "s", b);
		for (int f = 0; f < QUEUE_NFOLDERS; f++) {
			console_fmt_count(m, sizeof(m), s.folder_messages[f]);
			console_printf(con, "%s %s %s", f ? "," : " —", queue_folder_name(f), m);
		}
		console_printf(con, "\n");
		for (int g = 0; g < QUEUE_NGROUPS; g++) {
			if (s.nrows[g] == 0)
				continue;
			console_fmt_count(m, sizeof(m), s.distinct[g]);
			console_printf(con, "\nby %s (%s distinct)\n", group_titles[g], m);
			for (size_t i = 0; i < s.nrows[g]; i++) {
				const struct queue_summary_row *r = &s.rows[g][i];
				console_fmt_count(m, sizeof(m), r->messages);
				console_fmt_bytes(b, sizeof(b), r->bytes);
				struct strbuf ln = STRBUF_INIT;
				strbuf_addf(&ln, "%10s  %9s  %s", m, b, r->key[0] ? r->key : "<>");
				/* the dominant other keys, most telling first */
				static const int order[] = { QUEUE_G_USER, QUEUE_G_IP, QUEUE_G_SENDER, QUEUE_G_DOMAIN };
				bool first = true;
				for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
					int d = order[k];
					if (d == g || r->dom[d].key == NULL)
						continue;
					char dm[32];
					console_fmt_count(dm, sizeof(dm), r->dom[d].messages);
					strbuf_addf(&ln, "%s%s %s", first ? "  — " : ", ", dom_labels[d],
					            r->dom[d].key[0] ? r->dom[d].key : "<>");
					if (r->dom[d].messages != r->messages)
						strbuf_addf(&ln, " (%s)", dm);
					first = false;
				}
				console_printf(con, "%s\n", ln.s);
				strbuf_free(&ln);
				if (g == QUEUE_G_FINGERPRINT && subjects[i] && subjects[i][0])
					console_printf(con, "%10s  %9s  subject \"%s\" (e.g. %s)\n", "", "", subjects[i], r->sample_id);
			}
		}
		if (s.nrows[QUEUE_G_FINGERPRINT] > 0)
			console_printf(con, "\nto act on a group: posthorn queue list|hold|delete --fingerprint KEY\n");
	}
	loading_note(con, s.loading, s.loaded, s.to_load);
	for (size_t i = 0; i < s.nrows[QUEUE_G_FINGERPRINT]; i++)
		free(subjects[i]);
	free(subjects);
	queue_summary_free(&s);
	qargs_free(&a);
	return 0;
}

/* ------------------------------------------------------------------------- */
/* file operations                                                            */

/* data_dir/queue/<rel>/<id><suffix> */
static void msg_path(char *buf, size_t n, const char *data_dir, const char *rel, const char *id, const char *suffix)
{
	char name[NAME_MAX + 1];
	xsnprintf(name, sizeof(name), "%s%s", id, suffix);
	queue_path(buf, n, data_dir, rel, name);
}

/* Directories a batch touched, fsync'd together at its end. */
struct dirty {
	struct strv dirs;
};

static void dirty_add(struct dirty *d, const char *data_dir, const char *rel)
{
	char dir[PATH_MAX];
	queue_path(dir, sizeof(dir), data_dir, rel, NULL);
	if (!strv_contains(&d->dirs, dir))
		strv_add(&d->dirs, dir);
}

static void dirty_sync(struct dirty *d)
{
	for (size_t i = 0; i < d->dirs.n; i++)
		fsutil_fsync_dir(d->dirs.v[i]);
	strv_free(&d->dirs);
}

/* Cuts the envelope of rel/<id> down to the recipients its .st says are
 * still to do (pending or deferred), in place and atomically, so it can
 * be routed again without reaching anyone twice. 0 nothing to cut, 1 cut
 * (new envelope in *out when out is not NULL), 2 nobody is left, -1 error. */
static int trim_done(const char *data_dir, const char *rel, const char *id, struct queue_env *out,
                     uint64_t *size_r, const char **error_r)
{
	char path[PATH_MAX], stp[PATH_MAX];
	msg_path(stp, sizeof(stp), data_dir, rel, id, ".st");
	if (access(stp, F_OK) < 0)
		return 0;
	msg_path(path, sizeof(path), data_dir, rel, id, "");
	char *data;
	size_t len;
	if (fsutil_read_file(path, SIZE_MAX / 2, &data, &len) < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	struct queue_env qe;
	size_t off, blen;
	int r = queue_file_parse(data, len, &qe, &off, &blen, error_r);
	if (r <= 0) {
		free(data);
		if (r == 0)
			*error_r = "incomplete queue file";
		return -1;
	}
	snprintf(qe.id, sizeof(qe.id), "%s", id);
	struct queue_state st;
	const char *serr;
	int rc = 0;
	if (queue_state_load(data_dir, rel, &qe, &st, &serr) == 0) {
		struct strv left = { 0 };
		for (size_t i = 0; i < st.n; i++)
			if (st.r[i].status == RCPT_PENDING || st.r[i].status == RCPT_DEFERRED)
				strv_add(&left, st.r[i].addr);
		queue_state_free(&st);
		if (left.n == 0) {
			rc = 2;
		} else if (left.n < qe.rcpt.n) {
			strv_free(&qe.rcpt);
			qe.rcpt = left;
			left.v = NULL;
			left.n = 0;
			if (queue_write_file(data_dir, rel, &qe, data + off, blen, error_r) < 0) {
				rc = -1;
			} else {
				rc = 1;
				struct stat sb;
				if (size_r && stat(path, &sb) == 0)
					*size_r = (uint64_t)sb.st_size;
			}
		}
		strv_free(&left);
	}
	/* an unreadable state: the MTA treats it as fresh; so do we */
	free(data);
	if (rc == 1 && out) {
		*out = qe;
		return rc;
	}
	queue_env_free(&qe);
	return rc;
}

/* Moves rel_from/<id> to rel_to/<id>. keep_state: its .st goes along
 * (linked first, see the module comment); otherwise a .st is dropped.
 * Never replaces a file already at the target. 1 moved, 0 gone, -1 error. */
static int move_msg(const char *data_dir, const char *from, const char *to, const char *id, bool keep_state,
                    const char **error_r)
{
	char src[PATH_MAX], dst[PATH_MAX], sst[PATH_MAX], dst_st[PATH_MAX], tmp[PATH_MAX], dir[PATH_MAX];
	msg_path(src, sizeof(src), data_dir, from, id, "");
	msg_path(dst, sizeof(dst), data_dir, to, id, "");
	msg_path(sst, sizeof(sst), data_dir, from, id, ".st");
	msg_path(dst_st, sizeof(dst_st), data_dir, to, id, ".st");
	msg_path(tmp, sizeof(tmp), data_dir, to, id, ".st.tmp-move");
	queue_path(dir, sizeof(dir), data_dir, to, NULL);
	if (access(src, F_OK) < 0 && errno == ENOENT)
		return 0;
	if (!fsutil_is_dir(dir) && fsutil_mkdir_p(dir, 0700, error_r) < 0)
		return -1;
	bool linked = false;
	if (keep_state && access(sst, F_OK) == 0) {
		unlink(tmp);
		if (link(sst, tmp) == 0) {
			if (rename(tmp, dst_st) < 0) {
				*error_r = strerror(errno);
				unlink(tmp);
				return -1;
			}
			linked = true;
		} else if (errno != ENOENT) {
			/* no hard links here (another file system?): rename it */
			if (rename(sst, dst_st) < 0 && errno != ENOENT) {
				*error_r = strerror(errno);
				return -1;
			}
		}
	} else if (access(dst_st, F_OK) == 0 && unlink(dst_st) == 0) {
		/* a stray state left by a crash must not describe this message */
	}
	if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) < 0) {
		int e = errno;
		if (linked)
			unlink(dst_st);
		if (e == ENOENT)
			return 0;
		*error_r = e == EEXIST ? "a message with this id is already there" : strerror(e);
		return -1;
	}
	if (access(sst, F_OK) == 0)
		unlink(sst);
	return 1;
}

static int delete_msg(const char *data_dir, const char *rel, const char *id, const char **error_r)
{
	char p[PATH_MAX], stp[PATH_MAX];
	msg_path(p, sizeof(p), data_dir, rel, id, "");
	msg_path(stp, sizeof(stp), data_dir, rel, id, ".st");
	/* the message first: a crash in between leaves only a stray .st */
	if (unlink(p) < 0) {
		if (errno == ENOENT)
			return 0;
		*error_r = strerror(errno);
		return -1;
	}
	/* look before unlinking: a lookup takes no directory lock, a failed
	 * unlink does */
	if (access(stp, F_OK) == 0)
		unlink(stp);
	return 1;
}

/* Offline retry: forget the back-off recorded in the .st. */
static int reset_backoff(const char *data_dir, const char *rel, const char *id, const char **error_r)
{
	char p[PATH_MAX];
	msg_path(p, sizeof(p), data_dir, rel, id, ".st");
	if (access(p, F_OK) < 0)
		return 1; /* never attempted: due at once anyway */
	msg_path(p, sizeof(p), data_dir, rel, id, "");
	struct queue_env qe;
	if (queue_env_read(p, &qe, error_r) < 0)
		return errno == ENOENT ? 0 : -1;
	snprintf(qe.id, sizeof(qe.id), "%s", id);
	struct queue_state st;
	int rc = -1;
	if (queue_state_load(data_dir, rel, &qe, &st, error_r) == 0) {
		st.next_attempt = 0;
		rc = queue_state_save(data_dir, rel, id, &st, error_r) < 0 ? -1 : 1;
		queue_state_free(&st);
	}
	queue_env_free(&qe);
	return rc;
}

static void console_event(const char *op, const char *id, const char *from, const char *to)
{
	struct event e;
	event_begin(&e, "console", NULL);
	event_str(&e, "op", op);
	event_str(&e, "id", id);
	event_str(&e, "folder", from);
	if (to)
		event_str(&e, "to", to);
	event_end(&e);
}

/* ------------------------------------------------------------------------- */
/* retry, hold, release, delete, requeue                                      */

enum op { OP_RETRY, OP_HOLD, OP_RELEASE, OP_DELETE, OP_REQUEUE };

static const struct opdef {
	const char *name, *past, *conj; /* "delete", "deleted", "would delete" */
	unsigned from;                 /* folders it applies to */
	const char *why_not;           /* for the others */
} ops[] = {
	[OP_RETRY] = { "retry", "rescheduled", "retry", 1u << QUEUE_F_OUTBOX, "not in the outbox" },
	[OP_HOLD] = { "hold", "held", "hold", 1u << QUEUE_F_PENDING | 1u << QUEUE_F_OUTBOX, "already held" },
	[OP_RELEASE] = { "release", "released", "release", 1u << QUEUE_F_HOLD, "not held" },
	[OP_DELETE] = { "delete", "deleted", "delete",
		        1u << QUEUE_F_PENDING | 1u << QUEUE_F_OUTBOX | 1u << QUEUE_F_HOLD, "" },
	[OP_REQUEUE] = { "requeue", "requeued", "requeue", 1u << QUEUE_F_OUTBOX | 1u << QUEUE_F_HOLD,
		         "already pending" },
};

struct opstats {
	uint64_t done, bytes;
	uint64_t busy;   /* delivery attempt in flight */
	uint64_t other;  /* not applicable (folder) */
	uint64_t gone;   /* went away meanwhile (delivered) */
	uint64_t failed; /* file trouble */
	uint64_t finished; /* requeue: nobody left to deliver to: removed */
};

/* One bulk operation. Items are handled on FILE_THREADS threads: st,
 * dirty, later and the console are guarded by mu. */
struct opctx {
	struct queue_cmd_env *env;
	struct console *con;
	enum op op;
	const char *verb; /* for progress: "deleted" */
	pthread_mutex_t mu;
	struct opstats st;
	struct dirty dirty;
	size_t total;
	atomic_size_t seen;
	/* outbox messages whose attempt was in flight: tried again at the end */
	struct queue_sel_item *later;
	size_t nlater;
	const char *rel; /* quarantine restore: the folder under queue/ */
	/* ids for the next "console" event, per folder (the last: rel) */
	struct strbuf evids[QUEUE_NFOLDERS + 1];
	size_t evn[QUEUE_NFOLDERS + 1];
};

/* Writes one "console" event for the ids collected for slot k; mu held. */
static void op_event_flush(struct opctx *c, int k)
{
	if (c->evn[k] == 0)
		return;
	struct event e;
	event_begin(&e, "console", NULL);
	event_str(&e, "op", c->op == OP_REQUEUE && c->rel ? "restore" : ops[c->op].name);
	event_str(&e, "folder", k < QUEUE_NFOLDERS ? queue_folder_name(k) : c->rel);
	event_int(&e, "count", (int64_t)c->evn[k]);
	event_str(&e, "ids", c->evids[k].s);
	event_end(&e);
	strbuf_reset(&c->evids[k]);
	c->evn[k] = 0;
}

/* Notes id for the event log (folder: QUEUE_F_*, or -1 for rel). */
static void op_event(struct opctx *c, int folder, const char *id)
{
	int k = folder < 0 ? QUEUE_NFOLDERS : folder;
	pthread_mutex_lock(&c->mu);
	strbuf_addf(&c->evids[k], "%s%s", c->evn[k] ? " " : "", id);
	if (++c->evn[k] >= EVENT_IDS_MAX)
		op_event_flush(c, k);
	pthread_mutex_unlock(&c->mu);
}

static void opctx_init(struct opctx *c, struct queue_cmd_env *env, struct console *con, enum op op, size_t total)
{
	memset(c, 0, sizeof(*c));
	c->env = env;
	c->con = con;
	c->op = op;
	c->verb = ops[op].past;
	c->total = total;
	pthread_mutex_init(&c->mu, NULL);
	atomic_init(&c->seen, 0);
}

static void opctx_free(struct opctx *c)
{
	for (int k = 0; k <= QUEUE_NFOLDERS; k++) {
		op_event_flush(c, k);
		strbuf_free(&c->evids[k]);
	}
	free(c->later);
	strv_free(&c->dirty.dirs);
	pthread_mutex_destroy(&c->mu);
}

static void op_progress(struct opctx *c)
{
	char d[32], t[32];
	console_fmt_count(d, sizeof(d), atomic_load(&c->seen));
	console_fmt_count(t, sizeof(t), c->total);
	pthread_mutex_lock(&c->mu);
	console_progress(c->con, false, "%s %s/%s", c->verb, d, t);
	pthread_mutex_unlock(&c->mu);
}

/* Adds to one counter of c->st (any thread). */
static void op_count(struct opctx *c, uint64_t *field, uint64_t n)
{
	pthread_mutex_lock(&c->mu);
	*field += n;
	pthread_mutex_unlock(&c->mu);
}

static void op_error(struct opctx *c, const char *id, const char *err)
{
	pthread_mutex_lock(&c->mu);
	c->st.failed++;
	if (c->st.failed <= 20)
		console_errorf(c->con, "posthorn queue %s: %s: %s\n", ops[c->op].name, id, err);
	else if (c->st.failed == 21)
		console_errorf(c->con, "posthorn queue %s: more errors; see the event log\n", ops[c->op].name);
	pthread_mutex_unlock(&c->mu);
}

typedef void (*item_fn)(struct opctx *c, struct queue_sel_item *it);

struct pjob {
	struct opctx *c;
	struct queue_sel_item *v;
	size_t n;
	item_fn fn;
	atomic_size_t next;
	atomic_int running;
};

static void *pjob_main(void *arg)
{
	struct pjob *j = arg;
	for (;;) {
		if (console_cancelled(j->c->con))
			break;
		size_t i = atomic_fetch_add(&j->next, 1);
		if (i >= j->n)
			break;
		j->fn(j->c, &j->v[i]);
	}
	atomic_fetch_sub(&j->running, 1);
	return NULL;
}

/* fn on every item, on FILE_THREADS threads for a big batch; this thread
 * shows the progress meanwhile. */
static void run_items(struct opctx *c, struct queue_sel_item *v, size_t n, item_fn fn)
{
	if (n == 0)
		return;
	struct pjob j = { .c = c, .v = v, .n = n, .fn = fn };
	atomic_init(&j.next, 0);
	atomic_init(&j.running, 0);
	pthread_t th[FILE_THREADS];
	int started = 0;
	if (n >= FILE_THREADS_MIN_BATCH)
		for (; started < FILE_THREADS; started++) {
			atomic_fetch_add(&j.running, 1);
			if (pthread_create(&th[started], NULL, pjob_main, &j) != 0) {
				atomic_fetch_sub(&j.running, 1);
				break;
			}
		}
	if (started == 0) {
		atomic_fetch_add(&j.running, 1);
		for (size_t i = 0; i < n && !console_cancelled(c->con); i++) {
			fn(c, &v[i]);
			op_progress(c);
		}
		return;
	}
	while (atomic_load(&j.running) > 0) {
		usleep(CONSOLE_PROGRESS_MS * 1000 / 2);
		op_progress(c);
	}
	for (int t = 0; t < started; t++)
		pthread_join(th[t], NULL);
}

/* Sends rel/<id> back to pending: trimmed to the recipients still to do,
 * its delivery record dropped. The index learns first (see the module
 * comment). */
static int to_pending(struct opctx *c, const char *rel, const char *id, int index_folder, const char **err)
{
	struct queue_cmd_env *env = c->env;
	struct queue_env trimmed;
	uint64_t size = 0;
	int t = trim_done(env->data_dir, rel, id, &trimmed, &size, err);
	if (t < 0)
		return -1;
	if (t == 2) {
		/* every recipient done: nothing to route again */
		int r = delete_msg(env->data_dir, rel, id, err);
		if (r > 0) {
			if (index_folder >= 0)
				queue_index_remove(env->ix, id);
			op_count(c, &c->st.finished, 1);
			console_event("finished", id, rel, NULL);
		}
		return r > 0 ? 2 : r;
	}
	if (index_folder >= 0) {
		queue_index_move(env->ix, id, "pending");
		if (t == 1)
			queue_index_put(env->ix, "pending", &trimmed, size);
	}
	if (t == 1)
		queue_env_free(&trimmed);
	int r = move_msg(env->data_dir, rel, "pending", id, false, err);
	if (r <= 0) {
		if (index_folder >= 0) {
			if (r == 0)
				queue_index_remove(env->ix, id);
			else
				queue_index_move(env->ix, id, queue_folder_name(index_folder));
		}
		return r;
	}
	/* a message new to the index (restored from quarantine): the
	 * router's "routed" hook removes it again if it is fast */
	if (index_folder < 0 && env->online && env->ix)
		queue_index_put_file(env->ix, "pending", id);
	if (env->router)
		router_notify(env->router, id);
	return 1;
}

/* A held message's permanently failed recipients get another chance when
 * the administrator releases or requeues it (a held bounce is all
 * "failed": without this, release would hold it again at once and
 * requeue would drop it as finished). Delivered recipients stay done. */
static void revive_failed(const char *data_dir, const char *folder, const char *id)
{
	char path[PATH_MAX];
	queue_path(path, sizeof(path), data_dir, folder, id);
	struct queue_env env;
	const char *err;
	if (queue_env_read(path, &env, &err) < 0)
		return;
	struct queue_state st;
	if (queue_state_load(data_dir, folder, &env, &st, &err) == 0) {
		bool changed = false;
		for (size_t i = 0; i < st.n; i++) {
			if (st.r[i].status == RCPT_FAILED) {
				st.r[i].status = RCPT_PENDING;
				changed = true;
			}
		}
		if (changed) {
			st.next_attempt = 0;
			if (queue_state_save(data_dir, folder, env.id, &st, &err) < 0)
				log_error("queue: %s: cannot reset its failed recipients: %s", id, err);
		}
		queue_state_free(&st);
	}
	queue_env_free(&env);
}

/* One message. Returns nothing; counts in c->st. claimed: the MTA holds
 * it for us (outbox). The MTA forgets it before it leaves the outbox: a
 * requeued copy may be routed back into the outbox and announced
 * (mta_notify) at once, and must not be forgotten after that. If the
 * file work fails, the message is still in the outbox: announced again. */
static void apply_one(struct opctx *c, const struct queue_sel_item *it, bool claimed)
{
	struct queue_cmd_env *env = c->env;
	const char *folder = queue_folder_name(it->folder);
	const char *err = "?";
	int r = 0;
	bool forgotten = false;
	if (claimed && c->op != OP_RETRY && c->op != OP_RELEASE) {
		if (mta_forget(env->mta, it->id))
			forgotten = true;
		else
			mta_unclaim(env->mta, it->id);
		claimed = false;
	}
	switch (c->op) {
	case OP_RETRY:
		if (env->online) {
			/* 0 from the MTA: unknown to it, or an attempt is under
			 * way right now (as good as "now") */
			char p[PATH_MAX];
			msg_path(p, sizeof(p), env->data_dir, folder, it->id, "");
			r = env->mta && (mta_retry(env->mta, it->id) > 0 || access(p, F_OK) == 0) ? 1 : 0;
		} else {
			r = reset_backoff(env->data_dir, folder, it->id, &err);
		}
		break;
	case OP_HOLD:
		r = move_msg(env->data_dir, folder, "hold", it->id, true, &err);
		if (r > 0)
			queue_index_move(env->ix, it->id, "hold");
		break;
	case OP_RELEASE: {
		/* back to the outbox when it has a delivery record (it came
		 * from there); otherwise routed again from pending */
		if (it->folder == QUEUE_F_HOLD)
			revive_failed(env->data_dir, folder, it->id);
		char stp[PATH_MAX];
		msg_path(stp, sizeof(stp), env->data_dir, folder, it->id, ".st");
		if (access(stp, F_OK) == 0) {
			r = move_msg(env->data_dir, folder, "outbox", it->id, true, &err);
			if (r > 0) {
				queue_index_move(env->ix, it->id, "outbox");
				if (env->mta)
					mta_notify(env->mta, it->id);
			}
		} else {
			r = to_pending(c, folder, it->id, it->folder, &err);
		}
		break;
	}
	case OP_DELETE:
		r = delete_msg(env->data_dir, folder, it->id, &err);
		if (r > 0)
			queue_index_remove(env->ix, it->id);
		break;
	case OP_REQUEUE:
		if (it->folder == QUEUE_F_HOLD)
			revive_failed(env->data_dir, folder, it->id);
		r = to_pending(c, folder, it->id, it->folder, &err);
		break;
	}
	if (claimed)
		mta_unclaim(env->mta, it->id);
	if (r < 0 && forgotten)
		mta_notify(env->mta, it->id);
	if (r < 0) {
		op_error(c, it->id, err);
		return;
	}
	if (r == 0) {
		op_count(c, &c->st.gone, 1);
		if (!(c->op == OP_RETRY && env->online))
			queue_index_remove_in(env->ix, it->id, folder);
		return;
	}
	if (r == 2)
		return; /* finished: counted by to_pending */
	pthread_mutex_lock(&c->mu);
	c->st.done++;
	c->st.bytes += it->size;
	dirty_add(&c->dirty, env->data_dir, folder);
	if (c->op == OP_HOLD)
		dirty_add(&c->dirty, env->data_dir, "hold");
	else if (c->op == OP_RELEASE || c->op == OP_REQUEUE) {
		dirty_add(&c->dirty, env->data_dir, "outbox");
		dirty_add(&c->dirty, env->data_dir, "pending");
	}
	pthread_mutex_unlock(&c->mu);
	if (c->op != OP_RETRY)
		op_event(c, it->folder, it->id);
}

static void item_plain(struct opctx *c, struct queue_sel_item *it)
{
	apply_one(c, it, false);
	atomic_fetch_add(&c->seen, 1);
}

/* An outbox message: claimed from the MTA first; one whose attempt is in
 * flight waits for the end of the batch. */
static void item_claim(struct opctx *c, struct queue_sel_item *it)
{
	int r = mta_claim(c->env->mta, it->id, 0);
	if (r < 0) {
		pthread_mutex_lock(&c->mu);
		if (c->later == NULL)
			c->later = xcalloc(c->total ? c->total : 1, sizeof(*c->later));
		if (c->nlater < c->total)
			c->later[c->nlater++] = *it;
		pthread_mutex_unlock(&c->mu);
		return;
	}
	apply_one(c, it, r == 1);
	atomic_fetch_add(&c->seen, 1);
}

/* Outbox messages: claimed from the MTA around the file work. The ones
 * whose attempt was in flight get one more chance at the end, all within
 * one CLAIM_WAIT_MS (the attempts finish in parallel meanwhile). */
static void apply_outbox(struct opctx *c, struct queue_sel_item *v, size_t n)
{
	struct queue_cmd_env *env = c->env;
	if (env->mta == NULL || c->op == OP_RETRY) {
		run_items(c, v, n, item_plain);
		return;
	}
	run_items(c, v, n, item_claim);
	int64_t deadline = mono_ms() + CLAIM_WAIT_MS;
	for (size_t i = 0; i < c->nlater; i++) {
		int64_t left = console_cancelled(c->con) ? 0 : deadline - mono_ms();
		int r = mta_claim(env->mta, c->later[i].id, left > 0 ? (int)left : 0);
		if (r < 0)
			op_count(c, &c->st.busy, 1);
		else
			apply_one(c, &c->later[i], r == 1);
		atomic_fetch_add(&c->seen, 1);
		op_progress(c);
	}
}

/* Is this selection "everything" (confirmation needed)? */
static bool selects_all(const struct qargs *a)
{
	return a->all || (a->ids.n == 0 && queue_filter_is_all(&a->f));
}

/* Asks before changing everything. 0 go on, or the exit code. */
static int confirm_all(struct console *con, const char *cmd, const char *verb, uint64_t n, const char *where,
                       const struct qargs *a, bool everything)
{
	if (!(selects_all(a) || everything) || a->yes || a->dry_run || n == 0)
		return 0;
	char cnt[32];
	console_fmt_count(cnt, sizeof(cnt), n);
	if (!con->interactive) {
		console_errorf(con,
		               "posthorn queue %s: this would %s all %s messages%s; add --yes to confirm (no terminal to "
		               "ask on), or --dry-run to see the count\n",
		               cmd, verb, cnt, where);
		return 2;
	}
	if (!console_ask(con, "%s all %s messages%s? [y/N] ", verb, cnt, where)) {
		console_errorf(con, "posthorn queue %s: nothing changed\n", cmd);
		return 1;
	}
	return 0;
}

static void where_text(char *buf, size_t n, unsigned folders)
{
	buf[0] = '\0';
	if (folders == 0)
		return;
	struct strbuf sb = STRBUF_INIT;
	for (int f = 0; f < QUEUE_NFOLDERS; f++)
		if (folders & (1u << f))
			strbuf_addf(&sb, "%s%s", sb.len ? " and " : " in ", queue_folder_name(f));
	snprintf(buf, n, "%s", sb.s ? sb.s : "");
	strbuf_free(&sb);
}

static void report(struct opctx *c, const struct qargs *a, const struct queue_selection *sel, uint64_t applicable,
                   uint64_t app_bytes, const uint64_t *per_folder)
{
	const struct opdef *d = &ops[c->op];
	if (a->json) {
		json_t *o = json_object();
		json_object_set_new(o, "op", json_string(d->name));
		json_object_set_new(o, "dry_run", json_boolean(a->dry_run));
		json_object_set_new(o, "selected", json_integer((json_int_t)sel->n));
		json_object_set_new(o, "applicable", json_integer((json_int_t)applicable));
		json_object_set_new(o, "bytes", json_integer((json_int_t)(a->dry_run ? app_bytes : c->st.bytes)));
		json_t *fo = json_object();
		for (int f = 0; f < QUEUE_NFOLDERS; f++)
			json_object_set_new(fo, queue_folder_name(f), json_integer((json_int_t)per_folder[f]));
		json_object_set_new(o, "folders", fo);
		if (!a->dry_run) {
			json_object_set_new(o, "done", json_integer((json_int_t)c->st.done));
			json_object_set_new(o, "busy", json_integer((json_int_t)c->st.busy));
			json_object_set_new(o, "gone", json_integer((json_int_t)c->st.gone));
			json_object_set_new(o, "failed", json_integer((json_int_t)c->st.failed));
			json_object_set_new(o, "finished", json_integer((json_int_t)c->st.finished));
			json_object_set_new(o, "cancelled", json_boolean(console_cancelled(c->con)));
		}
		json_object_set_new(o, "not_applicable", json_integer((json_int_t)(sel->n - applicable)));
		json_object_set_new(o, "unknown_ids", json_integer((json_int_t)sel->missing));
		print_json(c->con, o);
		return;
	}
	char n1[32], b1[32];
	struct strbuf fb = STRBUF_INIT;
	for (int f = 0; f < QUEUE_NFOLDERS; f++)
		if (per_folder[f]) {
			char x[32];
			console_fmt_count(x, sizeof(x), per_folder[f]);
			strbuf_addf(&fb, "%s%s %s", fb.len ? ", " : "", queue_folder_name(f), x);
		}
	if (a->dry_run) {
		console_fmt_count(n1, sizeof(n1), applicable);
		console_fmt_bytes(b1, sizeof(b1), app_bytes);
		console_printf(c->con, "would %s %s message%s%s%s%s (%s); nothing changed (--dry-run)\n",
		               d->conj, n1, applicable == 1 ? "" : "s", fb.len ? " (" : "", fb.len ? fb.s : "",
		               fb.len ? ")" : "", b1);
	} else {
		console_fmt_count(n1, sizeof(n1), c->st.done);
		console_fmt_bytes(b1, sizeof(b1), c->st.bytes);
		console_printf(c->con, "%s %s message%s (%s)\n", d->past, n1, c->st.done == 1 ? "" : "s", b1);
		if (c->st.finished) {
			console_fmt_count(n1, sizeof(n1), c->st.finished);
			console_printf(c->con, "removed %s message%s whose recipients were all done already\n", n1,
			               c->st.finished == 1 ? "" : "s");
		}
		if (c->st.busy) {
			console_fmt_count(n1, sizeof(n1), c->st.busy);
			console_printf(c->con, "left %s message%s alone: a delivery attempt was in progress (run the "
			                       "command again)\n",
			               n1, c->st.busy == 1 ? "" : "s");
		}
		if (c->st.gone) {
			console_fmt_count(n1, sizeof(n1), c->st.gone);
			console_printf(c->con, "%s message%s had already left the queue (delivered or moved)\n", n1,
			               c->st.gone == 1 ? "" : "s");
		}
		if (c->st.failed) {
			console_fmt_count(n1, sizeof(n1), c->st.failed);
			console_printf(c->con, "%s message%s could not be changed (see above)\n", n1,
			               c->st.failed == 1 ? "" : "s");
		}
		if (console_cancelled(c->con))
			console_printf(c->con, "stopped early: interrupted\n");
	}
	if (sel->n > applicable) {
		console_fmt_count(n1, sizeof(n1), sel->n - applicable);
		console_printf(c->con, "skipped %s message%s: %s\n", n1, sel->n - applicable == 1 ? "" : "s", d->why_not);
	}
	if (sel->missing) {
		console_fmt_count(n1, sizeof(n1), sel->missing);
		console_printf(c->con, "%s id%s not in the queue\n", n1, sel->missing == 1 ? "" : "s");
	}
	strbuf_free(&fb);
}

/* --- deleting most of a big folder at once --------------------------------
 *
 * Unlinking 98,000 files runs at the file system's pace (50-200 us each,
 * journal and discard). When most of the outbox goes, move the few others
 * into a fresh directory instead, swap the two directories in one atomic
 * step (renameat2 RENAME_EXCHANGE), and let a background thread empty the
 * old one from queue/.trash. While this runs the router is paused and
 * every outbox message is claimed from the MTA, so nobody else writes to
 * the outbox; anything there that is not selected (a .st, a file the index
 * does not know) counts as a survivor.
 * Crash safety: queue/.keep-outbox holds the survivors (and the .survivors
 * mark) until the swap, the selected messages after it; queue_cmd_recover()
 * tells the two apart by the mark, moves survivors back or sends the
 * rest to the trash. */

static pthread_mutex_t trash_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t trash_cv = PTHREAD_COND_INITIALIZER;
static pthread_t trash_thread;
static bool trash_running, trash_again, trash_stop, trash_joinable;
static char *trash_data_dir;

/* Unlinks everything in dir and removes it (stops early on trash_stop). */
static void empty_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno == EISDIR) {
			char sub[PATH_MAX];
			if (snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name) < (int)sizeof(sub))
				empty_dir(sub);
		}
		pthread_mutex_lock(&trash_mu);
		bool stop = trash_stop;
		pthread_mutex_unlock(&trash_mu);
		if (stop)
			break;
	}
	closedir(d);
	rmdir(dir);
}

static void *trash_main(void *arg)
{
	(void)arg;
	char top[PATH_MAX];
	pthread_mutex_lock(&trash_mu);
	xsnprintf(top, sizeof(top), "%s/queue/%s", trash_data_dir, TRASH);
	for (;;) {
		trash_again = false;
		pthread_mutex_unlock(&trash_mu);
		struct strv names = { 0 };
		dir_names(top, &names, false);
		for (size_t i = 0; i < names.n; i++) {
			char d[PATH_MAX];
			if (snprintf(d, sizeof(d), "%s/%s", top, names.v[i]) < (int)sizeof(d))
				empty_dir(d);
		}
		strv_free(&names);
		pthread_mutex_lock(&trash_mu);
		if (trash_stop || !trash_again)
			break;
	}
	trash_running = false;
	pthread_cond_broadcast(&trash_cv);
	pthread_mutex_unlock(&trash_mu);
	return NULL;
}

void queue_cmd_trash_start(const char *data_dir)
{
	pthread_mutex_lock(&trash_mu);
	if (trash_running) {
		trash_again = true;
		pthread_mutex_unlock(&trash_mu);
		return;
	}
	if (trash_joinable) {
		trash_joinable = false;
		pthread_mutex_unlock(&trash_mu);
		pthread_join(trash_thread, NULL);
		pthread_mutex_lock(&trash_mu);
	}
	free(trash_data_dir);
	trash_data_dir = xstrdup(data_dir);
	trash_stop = false;
	trash_running = true;
	if (pthread_create(&trash_thread, NULL, trash_main, NULL) != 0)
		trash_running = false;
	else
		trash_joinable = true;
	pthread_mutex_unlock(&trash_mu);
}

void queue_cmd_trash_stop(void)
{
	pthread_mutex_lock(&trash_mu);
	trash_stop = true;
	bool join = trash_joinable;
	trash_joinable = false;
	pthread_mutex_unlock(&trash_mu);
	if (join)
		pthread_join(trash_thread, NULL);
	pthread_mutex_lock(&trash_mu);
	free(trash_data_dir);
	trash_data_dir = NULL;
	pthread_mutex_unlock(&trash_mu);
}

/* Moves dir into queue/.trash under a new name (for the cleaner). */
static int to_trash(const char *data_dir, const char *dir, const char *what, const char **error_r)
{
	char top[PATH_MAX], dst[PATH_MAX];
	xsnprintf(top, sizeof(top), "%s/queue/%s", data_dir, TRASH);
	if (fsutil_mkdir_p(top, 0700, error_r) < 0)
		return -1;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	for (int k = 0; k < 1000; k++) {
		xsnprintf(dst, sizeof(dst), "%s/%lld.%09ld-%d-%s", top, (long long)ts.tv_sec, ts.tv_nsec, k, what);
		if (renameat2(AT_FDCWD, dir, AT_FDCWD, dst, RENAME_NOREPLACE) == 0)
			return 0;
		if (errno != EEXIST) {
			*error_r = strerror(errno);
			return -1;
		}
	}
	*error_r = "no free name in queue/.trash";
	return -1;
}

void queue_cmd_recover(const char *data_dir)
{
	for (int f = 0; f < QUEUE_NFOLDERS; f++) {
		const char *fname = queue_folder_name(f);
		char keep[PATH_MAX], dir[PATH_MAX], mark[PATH_MAX];
		xsnprintf(keep, sizeof(keep), "%s/queue/%s%s", data_dir, KEEP_PREFIX, fname);
		queue_path(dir, sizeof(dir), data_dir, fname, NULL);
		xsnprintf(mark, sizeof(mark), "%s/%s", keep, KEEP_MARK);
		if (!fsutil_is_dir(keep)) {
			/* a mark left in the folder by a crash right after a swap */
			xsnprintf(mark, sizeof(mark), "%s/%s", dir, KEEP_MARK);
			unlink(mark);
			continue;
		}
		const char *err;
		if (access(mark, F_OK) == 0) {
			/* stopped before the swap: survivors go back */
			fsutil_mkdir_p(dir, 0700, &err);
			struct strv names = { 0 };
			DIR *d = opendir(keep);
			struct dirent *de;
			while (d && (de = readdir(d)) != NULL)
				if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, KEEP_MARK))
					strv_add(&names, de->d_name);
			if (d)
				closedir(d);
			for (size_t i = 0; i < names.n; i++) {
				char a[PATH_MAX], b[PATH_MAX];
				xsnprintf(a, sizeof(a), "%s/%s", keep, names.v[i]);
				xsnprintf(b, sizeof(b), "%s/%s", dir, names.v[i]);
				if (renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_NOREPLACE) < 0)
					log_error("queue: cannot move %s back to %s: %s", a, dir, strerror(errno));
			}
			strv_free(&names);
			fsutil_fsync_dir(dir);
			unlink(mark);
			if (rmdir(keep) < 0)
				log_error("queue: %s is not empty after recovery: look at it", keep);
		} else if (to_trash(data_dir, keep, fname, &err) < 0) {
			log_error("queue: cannot move %s to the trash: %s", keep, err);
		}
	}
	char top[PATH_MAX];
	xsnprintf(top, sizeof(top), "%s/queue/%s", data_dir, TRASH);
	if (fsutil_is_dir(top))
		queue_cmd_trash_start(data_dir);
}

/* Deletes the selected outbox messages v[0..n) by swapping directories.
 * 1 done (all of them: counted in c->st), 0 not possible now (an attempt
 * in flight; nothing changed: the caller goes one file at a time), -1
 * error after which the caller also goes one file at a time. */
static int swap_delete(struct opctx *c, struct queue_sel_item *v, size_t n)
{
	struct queue_cmd_env *env = c->env;
	const char *fname = "outbox";
	char dir[PATH_MAX], keep[PATH_MAX], mark[PATH_MAX], qroot[PATH_MAX];
	const char *err;
	queue_path(dir, sizeof(dir), env->data_dir, fname, NULL);
	xsnprintf(qroot, sizeof(qroot), "%s/queue", env->data_dir);
	xsnprintf(keep, sizeof(keep), "%s/%s%s", qroot, KEEP_PREFIX, fname);
	xsnprintf(mark, sizeof(mark), "%s/%s", keep, KEEP_MARK);
	struct strset sel;
	strset_init(&sel);
	for (size_t i = 0; i < n; i++)
		strset_add(&sel, v[i].id);
	struct strv claimed = { 0 };
	struct strset gone; /* selected but delivered before we got it */
	strset_init(&gone);
	struct queue_selection all = { 0 };
	int rc = 0;
	bool paused = false;
	if (env->router) {
		router_pause(env->router);
		paused = true;
	}
	if (env->mta) {
		/* every outbox message claimed; a selected one whose attempt is
		 * in flight goes to the trash all the same (the attempt ends on
		 * its own: its file is gone), but a survivor must not be moved
		 * under a running attempt */
		struct queue_filter f = { .folders = 1u << QUEUE_F_OUTBOX };
		if (queue_index_select(env->ix, &f, &all, &err) < 0)
			goto out;
		/* The swap is only for a quiet outbox (the flood whose
		 * destination is down, the case it exists for). A "busy"
		 * message may already be handed to a connection with its
		 * transaction under way: withdrawing it cannot be made exact
		 * here, so any busy message sends us the slow way, which claims
		 * each message and leaves one in flight alone (and says so). */
		for (size_t i = 0; i < all.n; i++) {
			int r = mta_claim(env->mta, all.v[i].id, 0);
			if (r == 1) {
				strv_add(&claimed, all.v[i].id);
			} else if (r < 0) {
				goto out; /* rc 0: one file at a time */
			} else {
				/* unknown to the MTA: delivered since the index
				 * was read (its file is gone), or not loaded yet */
				char p[PATH_MAX];
				queue_path(p, sizeof(p), env->data_dir, fname, all.v[i].id);
				if (access(p, F_OK) < 0)
					strset_add(&gone, all.v[i].id);
			}
		}
	}
	rc = -1;
	queue_cmd_recover(env->data_dir); /* a .keep- left by a crash */
	if (mkdir(keep, 0700) < 0) {
		err = strerror(errno);
		goto fail;
	}
	int mfd = open(mark, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (mfd < 0) {
		err = strerror(errno);
		rmdir(keep);
		goto fail;
	}
	close(mfd);
	/* the survivors: everything that is not a selected message or its .st */
	struct strv names = { 0 };
	DIR *d = opendir(dir);
	if (d == NULL) {
		err = strerror(errno);
		unlink(mark);
		rmdir(keep);
		goto fail;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *nm = de->d_name;
		if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0)
			continue;
		char id[NAME_MAX + 1];
		size_t l = strlen(nm);
		snprintf(id, sizeof(id), "%s", nm);
		if (l > 3 && strcmp(nm + l - 3, ".st") == 0)
			id[l - 3] = '\0';
		if (!strset_contains(&sel, id))
			strv_add(&names, nm);
	}
	closedir(d);
	size_t moved = 0;
	for (; moved < names.n; moved++) {
		char a[PATH_MAX], b[PATH_MAX];
		xsnprintf(a, sizeof(a), "%s/%s", dir, names.v[moved]);
		xsnprintf(b, sizeof(b), "%s/%s", keep, names.v[moved]);
		if (rename(a, b) < 0) {
			err = strerror(errno);
			break;
		}
	}
	if (moved < names.n) {
		/* put back what was moved; nothing changed */
		for (size_t i = 0; i < moved; i++) {
			char a[PATH_MAX], b[PATH_MAX];
			xsnprintf(a, sizeof(a), "%s/%s", keep, names.v[i]);
			xsnprintf(b, sizeof(b), "%s/%s", dir, names.v[i]);
			if (rename(a, b) < 0)
				log_error("queue: cannot move %s back: %s (queue_cmd_recover will)", a, strerror(errno));
		}
		strv_free(&names);
		unlink(mark);
		rmdir(keep);
		goto fail;
	}
	strv_free(&names);
	fsutil_fsync_dir(keep);
	/* the one atomic step: the outbox is now the survivors */
	if (renameat2(AT_FDCWD, keep, AT_FDCWD, dir, RENAME_EXCHANGE) < 0) {
		err = strerror(errno);
		queue_cmd_recover(env->data_dir); /* moves them back */
		goto fail;
	}
	fsutil_fsync_dir(qroot);
	xsnprintf(mark, sizeof(mark), "%s/%s", dir, KEEP_MARK);
	unlink(mark);
	if (to_trash(env->data_dir, keep, fname, &err) < 0)
		log_error("queue: cannot move %s to the trash: %s (the next start will)", keep, err);
	queue_cmd_trash_start(env->data_dir);
	for (size_t i = 0; i < n; i++) {
		queue_index_remove(env->ix, v[i].id);
		if (strset_contains(&gone, v[i].id))
			continue; /* sent before we could stop it: not deleted */
		op_event(c, QUEUE_F_OUTBOX, v[i].id);
		c->st.done++;
		c->st.bytes += v[i].size;
	}
	atomic_fetch_add(&c->seen, n);
	rc = 1;
	goto out;
fail:
	console_errorf(c->con, "posthorn queue delete: the fast way failed (%s); deleting one file at a time\n", err);
out:
	/* the selected ones are gone: the MTA forgets them; the others are
	 * back at the same path */
	for (size_t i = 0; i < claimed.n; i++)
		if (!(rc == 1 && strset_contains(&sel, claimed.v[i]) && mta_forget(env->mta, claimed.v[i])))
			mta_unclaim(env->mta, claimed.v[i]);
	if (paused)
		router_resume(env->router);
	strv_free(&claimed);
	strset_free(&gone);
	queue_selection_free(&all);
	strset_free(&sel);
	return rc;
}

static int cmd_op(struct queue_cmd_env *env, struct console *con, enum op op, int argc, char **argv)
{
	struct qargs a = { .cmd = argv[0] };
	int rc = parse_args(con, &a, argc, argv, 1, O_FILTER | O_JSON | O_CHANGE | O_IDS);
	if (rc) {
		qargs_free(&a);
		return rc;
	}
	if (a.all && (a.ids.n || !queue_filter_is_all(&a.f))) {
		console_errorf(con, "posthorn queue %s: --all selects everything: give it without ids or filters (--folder "
		                    "is fine)\n",
		               a.cmd);
		qargs_free(&a);
		return 2;
	}
	if (op == OP_RETRY && env->online && env->mta == NULL) {
		console_errorf(con, "posthorn queue retry: this server runs no delivery engine: nothing to retry\n");
		qargs_free(&a);
		return 1;
	}
	struct queue_index *ix = need_index(env, con, true);
	if (ix == NULL) {
		qargs_free(&a);
		return 1;
	}
	struct queue_selection sel;
	const char *err;
	if (queue_index_select(ix, &a.f, &sel, &err) < 0) {
		console_errorf(con, "posthorn queue %s: %s\n", a.cmd, err);
		qargs_free(&a);
		return 2;
	}
	/* what the operation applies to, by folder */
	uint64_t per_folder[QUEUE_NFOLDERS] = { 0 }, applicable = 0, bytes = 0;
	struct queue_sel_item *part[QUEUE_NFOLDERS];
	size_t npart[QUEUE_NFOLDERS] = { 0 };
	for (int f = 0; f < QUEUE_NFOLDERS; f++)
		part[f] = sel.n ? xcalloc(sel.n, sizeof(struct queue_sel_item)) : NULL;
	for (size_t i = 0; i < sel.n; i++) {
		int f = sel.v[i].folder;
		if (!(ops[op].from & (1u << f)))
			continue;
		per_folder[f]++;
		applicable++;
		bytes += sel.v[i].size;
		part[f][npart[f]++] = sel.v[i];
	}
	char where[64];
	where_text(where, sizeof(where), a.f.folders);
	struct opctx c;
	opctx_init(&c, env, con, op, applicable);
	/* a delete whose filter happens to match every message (--older 0s,
	 * --ip 0.0.0.0/0, a typo) is "all" too and needs the same
	 * confirmation (the other operations can be undone) */
	struct queue_counts qc0;
	queue_index_counts(ix, &qc0);
	uint64_t total = 0;
	for (int f = 0; f < QUEUE_NFOLDERS; f++)
		if ((a.f.folders == 0 || (a.f.folders & (1u << f))) && (ops[op].from & (1u << f)))
			total += qc0.messages[f];
	bool everything = op == OP_DELETE && a.ids.n == 0 && applicable > 1 && applicable >= total;
	rc = confirm_all(con, a.cmd, ops[op].name, applicable, where, &a, everything);
	if (rc)
		goto out;
	if (a.dry_run) {
		report(&c, &a, &sel, applicable, bytes, per_folder);
		goto out;
	}
	if (op == OP_RETRY && env->online && selects_all(&a) && a.f.folders == 0) {
		/* the whole outbox: one call */
		int n = mta_retry(env->mta, NULL);
		c.st.done = n > 0 ? (uint64_t)n : 0;
		c.st.bytes = bytes;
		console_event("retry", "*", "outbox", NULL);
	} else {
		/* pending first, with the router paused for as short as possible */
		if (npart[QUEUE_F_PENDING]) {
			if (env->router)
				router_pause(env->router);
			run_items(&c, part[QUEUE_F_PENDING], npart[QUEUE_F_PENDING], item_plain);
			if (env->router)
				router_resume(env->router);
		}
		/* most of a big outbox: swap directories (online: the
		 * survivors keep being delivered meanwhile) */
		struct queue_counts qc;
		queue_index_counts(ix, &qc);
		uint64_t others = qc.messages[QUEUE_F_OUTBOX] - npart[QUEUE_F_OUTBOX];
		if (op == OP_DELETE && env->online && npart[QUEUE_F_OUTBOX] >= SWAP_MIN &&
		    npart[QUEUE_F_OUTBOX] >= SWAP_RATIO * others &&
		    swap_delete(&c, part[QUEUE_F_OUTBOX], npart[QUEUE_F_OUTBOX]) == 1)
			npart[QUEUE_F_OUTBOX] = 0;
		apply_outbox(&c, part[QUEUE_F_OUTBOX], npart[QUEUE_F_OUTBOX]);
		run_items(&c, part[QUEUE_F_HOLD], npart[QUEUE_F_HOLD], item_plain);
		dirty_sync(&c.dirty);
	}
	console_progress_end(con);
	report(&c, &a, &sel, applicable, bytes, per_folder);
	rc = c.st.failed || c.st.busy || sel.missing || console_cancelled(con) ? 1 : 0;
out:
	opctx_free(&c);
	for (int f = 0; f < QUEUE_NFOLDERS; f++)
		free(part[f]);
	queue_selection_free(&sel);
	qargs_free(&a);
	return rc;
}

/* ------------------------------------------------------------------------- */
/* quarantine                                                                 */

/* A quarantine name is ours ("20261203T181200Z-outbox") or at least safe
 * as one path component. */
static bool qname_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 100 || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._+-", s[i]))
			return false;
	return true;
}

/* "20261203T181200Z-2-outbox" → the folder it came from ("outbox"). */
static const char *qname_folder(const char *name)
{
	const char *dash = strrchr(name, '-');
	return dash ? dash + 1 : "?";
}

static void qname_time(const char *name, char *buf, size_t n)
{
	/* YYYYMMDDTHHMMSSZ */
	if (strlen(name) >= 16 && name[8] == 'T' && name[15] == 'Z')
		snprintf(buf, n, "%.4s-%.2s-%.2sT%.2s:%.2s:%.2sZ", name, name + 4, name + 6, name + 9, name + 11, name + 13);
	else
		snprintf(buf, n, "-");
}

static int count_dir(const char *dir, uint64_t *msgs, uint64_t *bytes)
{
	*msgs = *bytes = 0;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	DIR *d = fdopendir(dfd);
	if (d == NULL) {
		close(dfd);
		return -1;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *nm = de->d_name;
		size_t l = strlen(nm);
		if (nm[0] == '.' || strstr(nm, ".tmp-") || (l > 3 && strcmp(nm + l - 3, ".st") == 0))
			continue;
		struct stat st;
		if (fstatat(dfd, nm, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
			(*msgs)++;
			*bytes += (uint64_t)st.st_size;
		}
	}
	closedir(d);
	return 0;
}

static int quarantine_list(struct queue_cmd_env *env, struct console *con, int argc, char **argv)
{
	struct qargs a = { .cmd = "quarantine list" };
	int rc = parse_args(con, &a, argc, argv, 2, O_JSON);
	if (rc)
		return rc;
	char top[PATH_MAX];
	queue_path(top, sizeof(top), env->data_dir, QUARANTINE, NULL);
	struct strv names = { 0 };
	DIR *d = opendir(top);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.' && qname_ok(de->d_name))
				strv_add(&names, de->d_name);
		closedir(d);
	}
	if (names.n > 1)
		qsort(names.v, names.n, sizeof(char *), cmp_cstr);
	json_t *arr = a.json ? json_array() : NULL;
	if (!a.json && names.n)
		console_printf(con, "%-32s  %-8s  %10s  %9s  %s\n", "NAME", "FOLDER", "MESSAGES", "SIZE", "SET ASIDE");
	for (size_t i = 0; i < names.n; i++) {
		char dir[PATH_MAX], when[32];
		xsnprintf(dir, sizeof(dir), "%s/%s", top, names.v[i]);
		uint64_t m, b;
		if (count_dir(dir, &m, &b) < 0)
			continue;
		qname_time(names.v[i], when, sizeof(when));
		if (a.json) {
			json_t *o = json_object();
			json_object_set_new(o, "name", json_string(names.v[i]));
			json_object_set_new(o, "folder", json_string(qname_folder(names.v[i])));
			json_object_set_new(o, "messages", json_integer((json_int_t)m));
			json_object_set_new(o, "bytes", json_integer((json_int_t)b));
			json_object_set_new(o, "set_aside", strcmp(when, "-") ? json_string(when) : json_null());
			json_array_append_new(arr, o);
		} else {
			char mc[32], bc[32];
			console_fmt_count(mc, sizeof(mc), m);
			console_fmt_bytes(bc, sizeof(bc), b);
			console_printf(con, "%-32s  %-8s  %10s  %9s  %s\n", names.v[i], qname_folder(names.v[i]), mc, bc, when);
		}
	}
	if (a.json)
		print_json(con, arr);
	else if (names.n == 0)
		console_printf(con, "nothing in quarantine\n");
	strv_free(&names);
	return 0;
}

/* Claims every outbox message from the MTA (all or nothing: -1 when an
 * attempt is still in flight after CLAIM_WAIT_MS; the caller gives back
 * what is in claimed). */
static int claim_all(struct queue_cmd_env *env, struct console *con, struct queue_selection *sel, struct strv *claimed)
{
	int64_t deadline = mono_ms() + CLAIM_WAIT_MS;
	/* 0 to do, 1 claimed, 2 not the MTA's */
	unsigned char *st = xcalloc(sel->n ? sel->n : 1, 1);
	bool busy = false;
	for (int pass = 0; pass < 2; pass++) {
		busy = false;
		for (size_t i = 0; i < sel->n; i++) {
			if (st[i])
				continue;
			int64_t left = pass == 0 ? 0 : deadline - mono_ms();
			int r = mta_claim(env->mta, sel->v[i].id, left > 0 ? (int)left : 0);
			if (r < 0) {
				busy = true;
				if (pass == 1)
					break;
				continue;
			}
			st[i] = r == 1 ? 1 : 2;
			if (r == 1)
				strv_add(claimed, sel->v[i].id);
			if ((i & 4095) == 0)
				console_progress(con, false, "taking the outbox from the delivery engine");
		}
		if (!busy)
			break;
	}
	free(st);
	return busy ? -1 : 0;
}

static int quarantine_folder(struct queue_cmd_env *env, struct console *con, int folder, int argc, char **argv)
{
	const char *fname = queue_folder_name(folder);
	struct qargs a = { .cmd = "quarantine" };
	int rc = parse_args(con, &a, argc, argv, 2, O_CHANGE | O_JSON);
	if (rc)
		return rc;
	char src[PATH_MAX], qdir[PATH_MAX], dst[PATH_MAX], name[128], qtop[PATH_MAX];
	queue_path(src, sizeof(src), env->data_dir, fname, NULL);
	queue_path(qtop, sizeof(qtop), env->data_dir, QUARANTINE, NULL);
	const char *err;
	uint64_t msgs = 0, bytes = 0;
	count_dir(src, &msgs, &bytes);
	char mc[32], bc[32];
	console_fmt_count(mc, sizeof(mc), msgs);
	console_fmt_bytes(bc, sizeof(bc), bytes);
	if (msgs == 0) {
		console_printf(con, "%s is empty: nothing to set aside\n", fname);
		return 0;
	}
	if (a.dry_run) {
		console_printf(con, "would set aside %s message%s (%s) from %s into %s/; nothing changed (--dry-run)\n", mc,
		               msgs == 1 ? "" : "s", bc, fname, qtop);
		return 0;
	}
	a.all = true;
	char where[64];
	snprintf(where, sizeof(where), " in %s (set aside into quarantine)", fname);
	rc = confirm_all(con, "quarantine", "move", msgs, where, &a, false);
	if (rc)
		return rc;
	if (fsutil_mkdir_p(qtop, 0700, &err) < 0) {
		console_errorf(con, "posthorn queue quarantine: cannot create %s: %s\n", qtop, err);
		return 1;
	}
	/* name: the UTC time, the folder; a second one in the same second
	 * gets a number */
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(name, sizeof(name), "%s-%s", stamp, fname);
	xsnprintf(dst, sizeof(dst), "%s/%s", qtop, name);
	for (int k = 2; access(dst, F_OK) == 0 && k < 1000; k++) {
		snprintf(name, sizeof(name), "%s-%d-%s", stamp, k, fname);
		xsnprintf(dst, sizeof(dst), "%s/%s", qtop, name);
	}
	snprintf(qdir, sizeof(qdir), "%s", dst);

	/* online: nobody may be working on a file of the folder */
	struct strv claimed = { 0 };
	struct queue_selection sel = { 0 };
	bool paused = false;
	if (env->online && folder == QUEUE_F_OUTBOX && env->mta) {
		struct queue_index *ix = need_index(env, con, true);
		struct queue_filter f = { .folders = 1u << folder };
		if (ix == NULL || queue_index_select(ix, &f, &sel, &err) < 0) {
			rc = 1;
			goto out;
		}
		if (claim_all(env, con, &sel, &claimed) < 0) {
			console_errorf(con, "posthorn queue quarantine: deliveries from the outbox are still in progress after "
			                    "%d s; nothing changed, try again\n",
			               CLAIM_WAIT_MS / 1000);
			rc = 1;
			goto out;
		}
	}
	if (env->online && folder == QUEUE_F_PENDING && env->router) {
		router_pause(env->router);
		paused = true;
	}
	/* the one atomic step, then a fresh folder at once */
	if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) < 0) {
		console_errorf(con, "posthorn queue quarantine: cannot move %s to %s: %s\n", src, dst, strerror(errno));
		rc = 1;
		goto out;
	}
	if (mkdir(src, 0700) < 0 && errno != EEXIST)
		console_errorf(con, "posthorn queue quarantine: cannot create a fresh %s: %s (the server creates it when "
		                    "needed)\n",
		               src, strerror(errno));
	char qroot[PATH_MAX];
	xsnprintf(qroot, sizeof(qroot), "%s/queue", env->data_dir);
	fsutil_fsync_dir(qroot);
	fsutil_fsync_dir(qtop);
	if (env->ix) {
		queue_index_remove_folder(env->ix, fname);
		/* anything that arrived in the fresh folder already */
		struct strv fresh = { 0 };
		dir_names(src, &fresh, false);
		for (size_t i = 0; i < fresh.n; i++)
			queue_index_put_file(env->ix, fname, fresh.v[i]);
		strv_free(&fresh);
	}
	{
		struct event e;
		event_begin(&e, "console", NULL);
		event_str(&e, "op", "quarantine");
		event_str(&e, "folder", fname);
		event_str(&e, "to", name);
		event_int(&e, "messages", (int64_t)msgs);
		event_end(&e);
	}
	console_progress_end(con);
	if (a.json) {
		json_t *o = json_object();
		json_object_set_new(o, "op", json_string("quarantine"));
		json_object_set_new(o, "folder", json_string(fname));
		json_object_set_new(o, "name", json_string(name));
		json_object_set_new(o, "messages", json_integer((json_int_t)msgs));
		json_object_set_new(o, "bytes", json_integer((json_int_t)bytes));
		print_json(con, o);
	} else {
		console_printf(con, "set aside %s message%s (%s) from %s as %s/%s\n", mc, msgs == 1 ? "" : "s", bc, fname,
		               qtop, name);
		console_printf(con, "a fresh %s is in place; bring messages back with: posthorn queue quarantine restore %s "
		                    "[ID...|filters]\n",
		               fname, name);
	}
out:
	if (paused)
		router_resume(env->router);
	/* moved away: the MTA forgets them; nothing changed: it gets them back */
	for (size_t i = 0; i < claimed.n; i++)
		if (rc != 0 || !mta_forget(env->mta, claimed.v[i]))
			mta_unclaim(env->mta, claimed.v[i]);
	strv_free(&claimed);
	queue_selection_free(&sel);
	console_progress_end(con);
	return rc;
}

static void item_restore(struct opctx *c, struct queue_sel_item *it)
{
	const char *err = "?";
	int r = to_pending(c, c->rel, it->id, -1, &err);
	if (r < 0) {
		op_error(c, it->id, err);
	} else if (r == 0) {
		op_count(c, &c->st.gone, 1);
	} else if (r == 1) {
		pthread_mutex_lock(&c->mu);
		c->st.done++;
		c->st.bytes += it->size;
		pthread_mutex_unlock(&c->mu);
		op_event(c, -1, it->id);
	}
	atomic_fetch_add(&c->seen, 1);
}

static int quarantine_restore(struct queue_cmd_env *env, struct console *con, int argc, char **argv)
{
	if (argc < 3 || argv[2][0] == '-') {
		console_errorf(con, "posthorn queue quarantine restore: which one? (see 'posthorn queue quarantine list')\n");
		return 2;
	}
	const char *name = argv[2];
	if (!qname_ok(name)) {
		console_errorf(con, "posthorn queue quarantine restore: '%s' is not a quarantine name\n", name);
		return 2;
	}
	struct qargs a = { .cmd = "quarantine restore" };
	int rc = parse_args(con, &a, argc, argv, 3, O_FILTER | O_NOFOLDER | O_JSON | O_CHANGE | O_IDS);
	if (rc) {
		qargs_free(&a);
		return rc;
	}
	char rel[PATH_MAX], dir[PATH_MAX];
	xsnprintf(rel, sizeof(rel), "%s/%s", QUARANTINE, name);
	queue_path(dir, sizeof(dir), env->data_dir, rel, NULL);
	if (!fsutil_is_dir(dir)) {
		console_errorf(con, "posthorn queue quarantine restore: no quarantined folder '%s' (see 'posthorn queue "
		                    "quarantine list')\n",
		               name);
		qargs_free(&a);
		return 1;
	}
	struct queue_index *tix = queue_index_new(env->data_dir);
	const char *err;
	if (queue_index_load_dir(tix, dir, QUEUE_F_OUTBOX, load_progress, con, &err) < 0) {
		console_errorf(con, "posthorn queue quarantine restore: cannot read %s: %s\n", dir, err);
		queue_index_free(&tix);
		qargs_free(&a);
		return 1;
	}
	console_progress_end(con);
	struct queue_selection sel;
	if (queue_index_select(tix, &a.f, &sel, &err) < 0) {
		console_errorf(con, "posthorn queue quarantine restore: %s\n", err);
		queue_index_free(&tix);
		qargs_free(&a);
		return 2;
	}
	uint64_t bytes = 0;
	for (size_t i = 0; i < sel.n; i++)
		bytes += sel.v[i].size;
	char where[PATH_MAX + 32];
	snprintf(where, sizeof(where), " from quarantine %s back to pending", name);
	struct opctx c;
	opctx_init(&c, env, con, OP_REQUEUE, sel.n);
	c.verb = "restored";
	c.rel = rel;
	char n1[32], b1[32];
	rc = confirm_all(con, "quarantine restore", "restore", sel.n, where, &a, false);
	if (rc)
		goto out;
	if (a.dry_run) {
		console_fmt_count(n1, sizeof(n1), sel.n);
		console_fmt_bytes(b1, sizeof(b1), bytes);
		if (a.json) {
			json_t *o = json_object();
			json_object_set_new(o, "op", json_string("restore"));
			json_object_set_new(o, "dry_run", json_true());
			json_object_set_new(o, "selected", json_integer((json_int_t)sel.n));
			json_object_set_new(o, "bytes", json_integer((json_int_t)bytes));
			print_json(con, o);
		} else {
			console_printf(con, "would restore %s message%s (%s) from %s to pending; nothing changed (--dry-run)\n",
			               n1, sel.n == 1 ? "" : "s", b1, name);
		}
		goto out;
	}
	run_items(&c, sel.v, sel.n, item_restore);
	dirty_add(&c.dirty, env->data_dir, rel);
	dirty_add(&c.dirty, env->data_dir, "pending");
	dirty_sync(&c.dirty);
	console_progress_end(con);
	/* an emptied quarantine goes away (with any stray .st files) */
	uint64_t left = 0, lb;
	count_dir(dir, &left, &lb);
	bool removed = false;
	if (left == 0) {
		DIR *d = opendir(dir);
		if (d) {
			struct dirent *de;
			while ((de = readdir(d)) != NULL) {
				if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
					continue;
				char p[PATH_MAX];
				if (snprintf(p, sizeof(p), "%s/%s", dir, de->d_name) < (int)sizeof(p))
					unlink(p);
			}
			closedir(d);
		}
		removed = rmdir(dir) == 0;
	}
	if (a.json) {
		json_t *o = json_object();
		json_object_set_new(o, "op", json_string("restore"));
		json_object_set_new(o, "dry_run", json_false());
		json_object_set_new(o, "selected", json_integer((json_int_t)sel.n));
		json_object_set_new(o, "done", json_integer((json_int_t)c.st.done));
		json_object_set_new(o, "finished", json_integer((json_int_t)c.st.finished));
		json_object_set_new(o, "failed", json_integer((json_int_t)c.st.failed));
		json_object_set_new(o, "left", json_integer((json_int_t)left));
		json_object_set_new(o, "removed", json_boolean(removed));
		print_json(con, o);
	} else {
		console_fmt_count(n1, sizeof(n1), c.st.done);
		console_fmt_bytes(b1, sizeof(b1), c.st.bytes);
		console_printf(con, "restored %s message%s (%s) from %s to pending: they are routed again\n", n1,
		               c.st.done == 1 ? "" : "s", b1, name);
		if (c.st.finished) {
			console_fmt_count(n1, sizeof(n1), c.st.finished);
			console_printf(con, "removed %s message%s whose recipients were all done already\n", n1,
			               c.st.finished == 1 ? "" : "s");
		}
		if (removed) {
			console_printf(con, "quarantine %s is now empty and was removed\n", name);
		} else {
			console_fmt_count(n1, sizeof(n1), left);
			console_printf(con, "%s message%s left in quarantine %s\n", n1, left == 1 ? "" : "s", name);
		}
	}
	if (sel.missing) {
		console_fmt_count(n1, sizeof(n1), sel.missing);
		console_printf(con, "%s id%s not in quarantine %s\n", n1, sel.missing == 1 ? "" : "s", name);
	}
	rc = c.st.failed || sel.missing ? 1 : 0;
out:
	opctx_free(&c);
	queue_selection_free(&sel);
	queue_index_free(&tix);
	qargs_free(&a);
	return rc;
}

static int cmd_quarantine(struct queue_cmd_env *env, struct console *con, int argc, char **argv)
{
	if (argc < 2) {
		console_errorf(con, "posthorn queue quarantine: pending|outbox|hold, list or restore NAME\n");
		return 2;
	}
	if (strcmp(argv[1], "list") == 0)
		return quarantine_list(env, con, argc, argv);
	if (strcmp(argv[1], "restore") == 0)
		return quarantine_restore(env, con, argc, argv);
	int f = queue_folder_parse(argv[1]);
	if (f < 0) {
		console_errorf(con, "posthorn queue quarantine: '%s' is not pending, outbox, hold, list or restore\n",
		               argv[1]);
		return 2;
	}
	return quarantine_folder(env, con, f, argc, argv);
}

/* ------------------------------------------------------------------------- */
/* dispatch                                                                   */

static const struct {
	const char *name;
	int op; /* -1: not an operation */
} subs[] = {
	{ "retry", OP_RETRY },   { "hold", OP_HOLD },     { "release", OP_RELEASE },
	{ "delete", OP_DELETE }, { "purge", OP_DELETE },  { "requeue", OP_REQUEUE },
};

bool queue_cmd_changes(int argc, char **argv)
{
	if (argc < 1)
		return false;
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
		if (strcmp(argv[0], subs[i].name) == 0)
			return true;
	return strcmp(argv[0], "quarantine") == 0 && !(argc >= 2 && strcmp(argv[1], "list") == 0);
}

int queue_cmd_run(struct queue_cmd_env *env, struct console *con, int argc, char **argv)
{
	if (argc < 1) {
		usage(con, false);
		return 2;
	}
	const char *sub = argv[0];
	if (strcmp(sub, "list") == 0)
		return cmd_list(env, con, argc, argv);
	if (strcmp(sub, "summary") == 0)
		return cmd_summary(env, con, argc, argv);
	if (strcmp(sub, "show") == 0)
		return cmd_show(env, con, argc, argv);
	if (strcmp(sub, "count") == 0)
		return cmd_count(env, con, argc, argv);
	if (strcmp(sub, "quarantine") == 0)
		return cmd_quarantine(env, con, argc, argv);
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
		if (strcmp(sub, subs[i].name) == 0)
			return cmd_op(env, con, (enum op)subs[i].op, argc, argv);
	if (strcmp(sub, "help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0) {
		usage(con, true);
		return 0;
	}
	console_errorf(con, "posthorn queue: unknown sub-command '%s'\n", sub);
	usage(con, false);
	return 2;
}

/* ------------------------------------------------------------------------- */
/* the CLI: offline or online?                                                */

int admin_queue_main(int argc, char **argv, const char *data_dir)
{
	struct console con;
	console_init_local(&con);
	if (argc < 2) {
		usage(&con, false);
		return 2;
	}
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(&con, true);
		return 0;
	}
	char top[PATH_MAX];
	xsnprintf(top, sizeof(top), "%s/queue", data_dir);
	if (!fsutil_is_dir(top)) {
		fprintf(stderr, "posthorn: no queue at %s (start 'posthorn serve --data %s' once, or check --data)\n", top,
		        data_dir);
		return 1;
	}
	/* The daemon holds queue/.lock exclusively while it runs. Got the
	 * lock: work on the files (offline) and keep it, so a starting
	 * daemon waits for us. Not got it: ask the daemon (online). */
	bool changes = queue_cmd_changes(argc - 1, argv + 1);
	char lock[PATH_MAX];
	xsnprintf(lock, sizeof(lock), "%s/.lock", top);
	int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "posthorn queue: cannot open %s: %s\n", lock, strerror(errno));
		return 1;
	}
	int64_t start = mono_ms();
	bool told = false;
	int sock = -1;
	for (;;) {
		if (flock(fd, (changes ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0)
			break;
		sock = console_connect(data_dir);
		if (sock >= 0)
			break;
		if (errno == EACCES) {
			fprintf(stderr, "posthorn queue: the server is running but %s/run/control.sock is not ours to use "
			                "(run this as the server's user)\n",
			        data_dir);
			close(fd);
			return 1;
		}
		if (mono_ms() - start > LOCK_WAIT_MS) {
			fprintf(stderr, "posthorn queue: %s is held (a server starting or stopping, or another 'posthorn queue' "
			                "command) and no server answers on %s/run/control.sock; try again\n",
			        lock, data_dir);
			close(fd);
			return 1;
		}
		if (!told && mono_ms() - start > 1000 && con.progress) {
			fprintf(stderr, "posthorn queue: waiting for %s ...\n", lock);
			told = true;
		}
		usleep(100 * 1000);
	}
	int rc;
	if (sock >= 0) {
		close(fd);
		rc = console_remote_run(sock, "queue", argc - 1, argv + 1);
		close(sock);
		return rc;
	}
	/* offline: our changes go to the event log like the daemon's */
	char events[PATH_MAX];
	const char *err;
	xsnprintf(events, sizeof(events), "%s/log/events.jsonl", data_dir);
	if (!changes || log_open(events, true, &err) < 0)
		log_open(NULL, true, &err);
	struct queue_cmd_env env = { .data_dir = data_dir };
	if (changes)
		queue_cmd_recover(data_dir);
	rc = queue_cmd_run(&env, &con, argc - 1, argv + 1);
	fflush(stdout);
	queue_cmd_trash_stop(); /* the server empties the rest of queue/.trash */
	queue_index_free(&env.ix);
	log_close();
	close(fd);
	return rc;
}
