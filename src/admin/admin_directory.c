/* admin_directory — the console commands over the directory:
 *
 *   posthorn user add ADDRESS [--quota SIZE] [--password-stdin]
 *   posthorn user del ADDRESS
 *   posthorn user passwd ADDRESS [--password-stdin]
 *   posthorn user quota ADDRESS SIZE
 *   posthorn user list [DOMAIN] [--json]
 *   posthorn domain add NAME | del NAME [--force] | list [--json]
 *   posthorn alias add ADDRESS TARGET... | del ADDRESS [TARGET] | list [--json]
 *
 * Runs in the CLI process, on var/db/directory.sqlite directly (WAL mode:
 * safe while the daemon runs). Every check that can be made before a
 * password is typed is made first; each change is one transaction in the
 * directory, so on any error nothing is changed ("alias add" with several
 * targets undoes the targets it added). Exit codes: 0 done, 1 refused or
 * failed (one message on stderr naming the argument), 2 usage error (with
 * the usage line).
 *
 * Passwords never come from argv (they would show in ps and shell
 * history): --password-stdin reads one line, otherwise a terminal is
 * prompted twice with echo off. Password buffers are wiped when done.
 * Nothing is created on disk except database rows: a mailbox directory
 * appears on first delivery, and deleting a user keeps its mail. */
#include <stdbool.h>

#include "admin/admin.h"
#include "conf/config.h"
#include "directory/directory.h"
#include "lib/fsutil.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"
#include "mail/address.h"
#include "store/maildir.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* Longest password line read (bytes, without the line end); the directory
 * refuses longer ones anyway (DIR_PASSWORD_MAX there). */
#define ADMIN_PASSWORD_MAX 1024

/* ---- shared helpers ------------------------------------------------------ */

struct directory *admin_open_directory(const char *data_dir, bool create)
{
	char *path = xasprintf("%s/db/directory.sqlite", data_dir);
	struct stat st;
	if (!create && stat(path, &st) < 0) {
		if (errno == ENOENT)
			fprintf(stderr,
			        "posthorn: no data directory at %s (start 'posthorn serve --data %s' once, "
			        "or check --data)\n",
			        data_dir, data_dir);
		else
			fprintf(stderr, "posthorn: cannot open %s: %s\n", path, strerror(errno));
		free(path);
		return NULL;
	}
	const char *err;
	struct directory *d = directory_open(path, create, &err);
	if (d == NULL)
		fprintf(stderr, "posthorn: %s\n", err);
	free(path);
	return d;
}

static void failf(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "posthorn: %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* "10M" style, exact when possible; 0 is "unlimited". */
static void size_str(uint64_t v, char *buf, size_t n)
{
	static const struct {
		uint64_t mul;
		char suffix;
	} units[] = { { 1024ULL * 1024 * 1024, 'G' }, { 1024ULL * 1024, 'M' }, { 1024, 'K' } };
	if (v == 0) {
		snprintf(buf, n, "unlimited");
		return;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (v % units[i].mul == 0) {
			snprintf(buf, n, "%llu%c", (unsigned long long)(v / units[i].mul), units[i].suffix);
			return;
		}
	}
	snprintf(buf, n, "%llu", (unsigned long long)v);
}

static void time_str(int64_t t, char *buf, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (localtime_r(&tt, &tm) == NULL || strftime(buf, n, "%Y-%m-%d %H:%M", &tm) == 0)
		snprintf(buf, n, "%lld", (long long)t);
}

/* A lower-cased copy of an address for messages ("Alice@X" → "alice@x"). */
static char *lower_copy(const char *s)
{
	char *p = xstrdup(s);
	address_lower(p);
	return p;
}

/* json_string() refuses invalid UTF-8; directory names are ASCII, but a
 * listing must never lose a row. */
static json_t *jstr(const char *s)
{
	json_t *j = json_string(s);
	if (j == NULL) {
		char *c = xstrdup(s);
		for (char *p = c; *p; p++)
			if ((unsigned char)*p >= 0x80)
				*p = '?';
		j = json_string(c);
		free(c);
	}
	return j;
}

static int json_print(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2));
	json_decref(j);
	if (s == NULL) {
		fprintf(stderr, "posthorn: cannot format JSON\n");
		return 1;
	}
	puts(s);
	free(s);
	return 0;
}

/* Aligned table: cells added row by row, printed with two spaces between
 * columns (the last column is not padded). */
struct table {
	size_t ncols;
	struct strv cells;
};

static void table_row(struct table *t, ...)
{
	va_list ap;
	va_start(ap, t);
	for (size_t i = 0; i < t->ncols; i++)
		strv_add(&t->cells, va_arg(ap, const char *));
	va_end(ap);
}

static void table_print(struct table *t)
{
	size_t *w = xcalloc(t->ncols, sizeof(size_t));
	for (size_t i = 0; i < t->cells.n; i++) {
		size_t l = strlen(t->cells.v[i]);
		if (l > w[i % t->ncols])
			w[i % t->ncols] = l;
	}
	for (size_t i = 0; i < t->cells.n; i++) {
		size_t c = i % t->ncols;
		if (c + 1 == t->ncols)
			printf("%s\n", t->cells.v[i]);
		else
			printf("%-*s  ", (int)w[c], t->cells.v[i]);
	}
	free(w);
	strv_free(&t->cells);
}

/* ---- command line --------------------------------------------------------- */

enum {
	OPT_JSON = 1 << 0,
	OPT_PASSWORD_STDIN = 1 << 1,
	OPT_FORCE = 1 << 2,
	OPT_QUOTA = 1 << 3,
};

struct args {
	char **pos; /* positional arguments (argv pointers) */
	int npos;
	bool json, password_stdin, force;
	bool has_quota;
	uint64_t quota;
	const char *data_dir;
	const char *cmd; /* "user add", for messages */
};

struct subcmd {
	const char *name;
	const char *usage; /* what follows "posthorn FAMILY NAME" */
	unsigned opts;
	int minpos, maxpos; /* maxpos -1: no limit */
	int size_pos;       /* index of a positional SIZE argument, or -1 */
	bool password;      /* refuse extra arguments with the argv-password hint */
	int (*fn)(struct args *a);
};

static void usage_family(FILE *f, const char *family, const struct subcmd *cmds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s posthorn %s %s %s\n", i ? "      " : "usage:", family, cmds[i].name,
		        cmds[i].usage);
}

static int usage_one(const char *family, const struct subcmd *c)
{
	fprintf(stderr, "usage: posthorn %s %s %s\n", family, c->name, c->usage);
	return 2;
}

static bool parse_size(const char *cmd, const char *what, const char *s, uint64_t *v)
{
	if (config_parse_size(s, v) < 0) {
		failf(cmd, "%s: '%s' is not a size (examples: 1000, 500K, 10M, 2G; 0 = unlimited)", what, s);
		return false;
	}
	return true;
}

/* Parses options anywhere among the arguments ("--" ends options) and runs
 * the sub-command. */
static int run(const char *family, const struct subcmd *cmds, size_t ncmds, int argc, char **argv,
               const char *data_dir)
{
	if (argc < 2) {
		usage_family(stderr, family, cmds, ncmds);
		return 2;
	}
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage_family(stdout, family, cmds, ncmds);
		return 0;
	}
	const struct subcmd *c = NULL;
	for (size_t i = 0; i < ncmds; i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			c = &cmds[i];
	if (c == NULL) {
		fprintf(stderr, "posthorn: %s: unknown command '%s'\n", family, argv[1]);
		usage_family(stderr, family, cmds, ncmds);
		return 2;
	}
	char *cmdname = xasprintf("%s %s", family, c->name);
	struct args a = { .pos = xcalloc((size_t)argc, sizeof(char *)), .data_dir = data_dir, .cmd = cmdname };
	int rc = 2;
	bool opts_done = false;
	for (int i = 2; i < argc; i++) {
		const char *s = argv[i];
		if (!opts_done && strcmp(s, "--") == 0) {
			opts_done = true;
		} else if (!opts_done && s[0] == '-' && s[1] != '\0') {
			if ((c->opts & OPT_JSON) && strcmp(s, "--json") == 0) {
				a.json = true;
			} else if ((c->opts & OPT_PASSWORD_STDIN) && strcmp(s, "--password-stdin") == 0) {
				a.password_stdin = true;
			} else if ((c->opts & OPT_FORCE) && strcmp(s, "--force") == 0) {
				a.force = true;
			} else if ((c->opts & OPT_QUOTA) &&
			           (strcmp(s, "--quota") == 0 || strncmp(s, "--quota=", 8) == 0)) {
				const char *v = s[7] == '=' ? s + 8 : (i + 1 < argc ? argv[++i] : NULL);
				if (v == NULL) {
					failf(cmdname, "--quota needs a SIZE");
					rc = usage_one(family, c);
					goto out;
				}
				if (!parse_size(cmdname, "--quota", v, &a.quota)) {
					rc = usage_one(family, c);
					goto out;
				}
				a.has_quota = true;
			} else if (strncmp(s, "--password", 10) == 0 && (c->opts & OPT_PASSWORD_STDIN)) {
				failf(cmdname, "unknown option '%s': passwords are never taken from the command "
				               "line; use --password-stdin or answer the prompt", s);
				rc = usage_one(family, c);
				goto out;
			} else {
				failf(cmdname, "unknown option '%s'", s);
				rc = usage_one(family, c);
				goto out;
			}
		} else {
			a.pos[a.npos++] = argv[i];
		}
	}
	if (a.npos < c->minpos) {
		failf(cmdname, "missing argument");
		rc = usage_one(family, c);
		goto out;
	}
	if (c->maxpos >= 0 && a.npos > c->maxpos) {
		if (c->password)
			failf(cmdname, "unexpected argument '%s' (passwords are never taken from the command "
			               "line: use --password-stdin or answer the prompt)", a.pos[c->maxpos]);
		else
			failf(cmdname, "unexpected argument '%s'", a.pos[c->maxpos]);
		rc = usage_one(family, c);
		goto out;
	}
	if (c->size_pos >= 0) {
		if (!parse_size(cmdname, "SIZE", a.pos[c->size_pos], &a.quota)) {
			rc = usage_one(family, c);
			goto out;
		}
		a.has_quota = true;
	}
	rc = c->fn(&a);
out:
	free(a.pos);
	free(cmdname);
	return rc;
}

/* ---- passwords ------------------------------------------------------------ */

static struct termios saved_tio;
static volatile sig_atomic_t tio_changed;

/* Puts the terminal back if we are interrupted with echo off. */
static void tio_restore_signal(int sig)
{
	if (tio_changed)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Reads one line from fd 0 into buf (n bytes incl. NUL) a byte at a time,
 * so nothing after the line is consumed and no copy of the password stays
 * in a stdio buffer. Strips "\r\n". Returns length, -1 read error, -2 too
 * long. */
static ssize_t read_line_fd(char *buf, size_t n)
{
	size_t len = 0;
	bool too_long = false;
	for (;;) {
		char ch;
		ssize_t r = read(STDIN_FILENO, &ch, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0 || ch == '\n')
			break;
		if (len + 1 < n)
			buf[len++] = ch;
		else
			too_long = true; /* keep reading to the line end */
	}
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	return too_long ? -2 : (ssize_t)len;
}

static ssize_t prompt_noecho(const char *prompt, char *buf, size_t n)
{
	struct termios tio;
	if (tcgetattr(STDIN_FILENO, &saved_tio) < 0)
		return -1;
	tio = saved_tio;
	tio.c_lflag &= (tcflag_t)~ECHO;
	tio.c_lflag |= ECHONL;
	struct sigaction sa = { .sa_handler = tio_restore_signal }, old_int, old_term, old_quit, old_hup;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	sigaction(SIGQUIT, &sa, &old_quit);
	sigaction(SIGHUP, &sa, &old_hup);
	tio_changed = 1;
	ssize_t r = -1;
	/* echo goes off before the prompt shows, and TCSANOW keeps what is
	 * typed right after the prompt (TCSAFLUSH would throw it away) */
	if (tcsetattr(STDIN_FILENO, TCSANOW, &tio) == 0) {
		fputs(prompt, stderr);
		fflush(stderr);
		r = read_line_fd(buf, n);
	}
	int e = errno;
	tcsetattr(STDIN_FILENO, TCSANOW, &saved_tio);
	tio_changed = 0;
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGQUIT, &old_quit, NULL);
	sigaction(SIGHUP, &old_hup, NULL);
	errno = e;
	return r;
}

/* Gets a new password for address into buf (ADMIN_PASSWORD_MAX + 2
 * bytes). Returns 0, or 1 with a message printed. */
static int password_get(const struct args *a, const char *address, char *buf, size_t n)
{
	ssize_t r;
	if (a->password_stdin) {
		r = read_line_fd(buf, n);
	} else if (isatty(STDIN_FILENO)) {
		char *prompt = xasprintf("New password for %s: ", address);
		r = prompt_noecho(prompt, buf, n);
		free(prompt);
		if (r >= 0) {
			char again[ADMIN_PASSWORD_MAX + 2];
			ssize_t r2 = prompt_noecho("Retype the new password: ", again, sizeof(again));
			bool same = r2 == r && strcmp(again, buf) == 0;
			explicit_bzero(again, sizeof(again));
			if (r2 == -1) {
				r = -1;
			} else if (!same) {
				explicit_bzero(buf, n);
				failf(a->cmd, "the two passwords do not match; nothing changed");
				return 1;
			}
		}
	} else {
		failf(a->cmd, "no password: stdin is not a terminal, so pipe the password in with "
		              "--password-stdin (passwords are never taken from the command line)");
		return 1;
	}
	if (r == -1) {
		explicit_bzero(buf, n);
		failf(a->cmd, "cannot read the password: %s", strerror(errno));
		return 1;
	}
	if (r == -2) {
		explicit_bzero(buf, n);
		failf(a->cmd, "password refused: longer than %d bytes", ADMIN_PASSWORD_MAX);
		return 1;
	}
	if (r == 0) {
		failf(a->cmd, "empty password refused");
		return 1;
	}
	return 0;
}

/* ---- users ----------------------------------------------------------------- */

/* Splits at the last '@' for the pre-checks (full validation is the
 * directory's); prints the message and returns false when there is none. */
static bool split_at(const char *cmd, const char *address, char **local_r, char **domain_r)
{
	const char *at = strrchr(address, '@');
	if (at == NULL || at == address || at[1] == '\0') {
		failf(cmd, "malformed address '%s': expected user@domain", address);
		return false;
	}
	*local_r = xstrndup(address, (size_t)(at - address));
	*domain_r = xstrdup(at + 1);
	return true;
}

/* Pre-checks before a password is typed: the domain is local and the user
 * does (want_exists) or does not exist. Returns 0 or 1 (message printed). */
static int user_precheck(struct directory *d, const struct args *a, const char *address, bool want_exists)
{
	char *loc, *dom;
	if (!split_at(a->cmd, address, &loc, &dom))
		return 1;
	int rc = 0;
	char *want = lower_copy(address), *mb = NULL;
	char *ldom = lower_copy(dom);
	enum dir_rcpt_kind k = directory_rcpt_kind(d, loc, dom, &mb);
	bool exists = k == DIR_RCPT_LOCAL && mb != NULL && strcmp(mb, want) == 0;
	if (k == DIR_RCPT_ERROR) {
		failf(a->cmd, "cannot read the directory");
		rc = 1;
	} else if (k == DIR_RCPT_REMOTE) {
		failf(a->cmd, "domain %s is not local: add it with 'posthorn domain add %s'", ldom, ldom);
		rc = 1;
	} else if (want_exists && !exists) {
		failf(a->cmd, "no such user %s", want);
		rc = 1;
	} else if (!want_exists && exists) {
		failf(a->cmd, "user %s already exists", want);
		rc = 1;
	} else if (!want_exists && k == DIR_RCPT_ALIAS && strchr(loc, '+') == NULL &&
	           strcasecmp(loc, "postmaster") != 0) {
		/* without '+' or postmaster, ALIAS means this very name */
		failf(a->cmd, "%s is an alias: delete it first with 'posthorn alias del %s'", want, want);
		rc = 1;
	}
	free(mb);
	free(want);
	free(ldom);
	free(loc);
	free(dom);
	return rc;
}

static int user_add(struct args *a)
{
	const char *address = a->pos[0];
	uint64_t quota = a->quota;
	if (!a->has_quota) {
		/* default_quota from posthorn.conf applies to users created
		 * without --quota (a missing file means the defaults) */
		struct config cfg;
		char *cerr = NULL;
		char *path = xasprintf("%s/posthorn.conf", a->data_dir);
		int r = config_load(&cfg, path, &cerr);
		free(path);
		if (r < 0) {
			failf(a->cmd, "%s (fix the config, or give --quota)", cerr ? cerr : "cannot read the config");
			free(cerr);
			return 1;
		}
		quota = cfg.default_quota;
		config_free(&cfg);
	}
	struct directory *d = admin_open_directory(a->data_dir, false);
	if (d == NULL)
		return 1;
	int rc = user_precheck(d, a, address, false);
	char pw[ADMIN_PASSWORD_MAX + 2];
	if (rc == 0)
		rc = password_get(a, address, pw, sizeof(pw));
	if (rc == 0) {
		const char *err;
		if (directory_user_add(d, address, pw, quota, &err) < 0) {
			failf(a->cmd, "%s", err);
			rc = 1;
		} else {
			char *l = lower_copy(address), q[32];
			size_str(quota, q, sizeof(q));
			printf("added user %s (quota %s)\n", l, q);
			free(l);
		}
	}
	explicit_bzero(pw, sizeof(pw));
	directory_close(&d);
	return rc;
}

static int user_del(struct args *a)
{
	struct directory *d = admin_open_directory(a->data_dir, false);
	if (d == NULL)
		return 1;
	const char *err;
	int rc = 0;
	if (directory_user_del(d, a->pos[0], &err) < 0) {
		failf(a->cmd, "%s", err);
		rc = 1;
	} else {
		char *l = lower_copy(a->pos[0]);
		char path[PATH_MAX];
		printf("deleted user %s\n", l);
		if (store_maildir_path(path, sizeof(path), a->data_dir, l) == 0 && fsutil_is_dir(path))
			printf("its mail was kept in %s (remove it by hand when no longer needed)\n", path);
		free(l);
	}
	directory_close(&d);
	return rc;
}

static int user_passwd(struct args *a)
{
	const char *address = a->pos[0];
	struct directory *d = admin_open_directory(a->data_dir, false);
	if (d == NULL)
		return 1;
	int rc = user_precheck(d, a, address, true);
	char pw[ADMIN_PASSWORD_MAX + 2];
	if (rc == 0)
		rc = password_get(a, address, pw, sizeof(pw));
	if (rc == 0) {
		const char *err;
		if (directory_user_passwd(d, address, pw, &err) < 0) {
			failf(a->cmd, "%s", err);
			rc = 1;
		} else {
			char *l = lower_copy(address);
			printf("changed the password of %s\n", l);
			free(l);
		}
	}
	explicit_bzero(pw, sizeof(pw));
	directory_close(&d);
	return rc;
}

static int user_quota(struct args *a)
{
	struct directory *d = admin_open_directory(a->data_dir, false);
	if (d == NULL)
		return 1;
	const char *err;
	int rc = 0;
	if (directory_user_set_quota(d, a->pos[0], a->quota, &err) < 0) {
		failf(a->cmd, "%s", err);
		rc = 1;
	} else {
		char *l = lower_copy(a->pos[0]), q[32];
		size_str(a->quota, q, sizeof(q));
		printf("quota of %s is now %s\n", l, q);
		free(l);
	}
	directory_close(&d);
	return rc;
}

struct user_rows {
	json_t *json;
	struct table table;
	size_t n;
};

static void user_row(const struct dir_user_info *u, void *arg)
{
	struct user_rows *r = arg;
	r->n++;
	if (r->json) {
		json_t *o = json_object();
		json_object_set_new(o, "address", jstr(u->address));
		json_object_set_new(o, "domain", jstr(u->domain));
		json_object_set_new(o, "quota", json_integer((json_int_t)u->quota));
		json_object_set_new(o, "created", json_integer((json_int_t)u->created));
		json_array_append_new(r->json, o);
		return;
	}
	char q[32], t[32];
	size_str(u->quota, q, sizeof(q));
	time_str(u->created, t, sizeof(t));
	table_row(&r->table, u->address, q, t);
}

static int user_list(struct args *a)
{
	struct directory *d = admin_open_directory(a->data_dir, false);
	if (d == NULL)
		return 1;
	const char *domain = a->npos > 0 ? a->pos[0] : NULL;
	if (domain && !directory_domain_is_local(d, domain)) {
		char *l = lower_copy(domain);
		failf(a->cmd, "domain %s is not local (see 'posthorn domain list')", l);
		free(l);
		directory_close(&d);
		return 1;
	}
	struct user_rows r = { .json = a->json ? json_array() : NULL, .table = { 3, { NULL, 0 } } };
	table_row(&r.table, "ADDRESS", "QUOTA", "CREATED");
	int rc = 0;
	if (directory_user_list(d, domain, user_row, &r) < 0) {
		failf(a->cmd, "cannot list users");
		rc = 1;
	}
	if (r.json) {
		if (rc == 0)
			rc = json_print(r.json);
		else
			json_decref(r.json);
	} else if (rc == 0 && r.n == 0) {
		puts(domain ? "no users in this domain" : "no users");
	} else if (rc == 0) {
		table_print(&r.table);
	}
	strv_free(&r.table.cells);
	directory_close(&d);
	return rc;
}

static const struct subcmd user_cmds[] = {
	{ "add", "ADDRESS [--quota SIZE] [--password-stdin]", OPT_QUOTA | OPT_PASSWORD_STDIN, 1, 1, -1, true,
	  user_add },
	{ "del", "ADDRESS", 0, 1, 1, -1, false, user_del },
	{ "passwd", "ADDRESS [--password-stdin]", OPT_PASSWORD_STDIN, 1, 1, -1, true, user_passwd },
	{ "quota", "ADDRESS SIZE", 0, 2, 2, 1, false, user_quota },
	{ "list", "[DOMAIN] [--json]", OPT_JSON, 0, 1, -1, false, user_list },
};

int admin_user_main(int argc, char **argv, const char *data_dir)
{
	return run("user", user_cmds, sizeof(user_cmds) / sizeof(user_cmds[0]), argc, argv, data_dir);
}

/* ---- domains --------------------------------------------------------------- */

static int domain_add(struct args *a)
{
	/* The one command that may create the database: an existing but
	 * empty data directory is being set up by hand. A --data that does
	 * not exist at all is more likely a typo, so it is not created. */
	struct directory *d = admin_open_directory(a->data_dir, fsutil_is_dir(a->data_dir));
	if (d == NULL)
		return 1;
	const char *err;
	int rc = 0;
	if (directory_domain_add(d, a->pos[0], &err) < 0) {
		failf(a->cmd, "%s", err);
		rc = 1;
	} else {
		char *l = lower_copy(a->pos[0]);
		char *primary = directory_primary_domain(d);
		if (primary && strcmp(primary, l) == 0)
			printf("added domain %s (the primary domain: a bare login 'alice' means alice@%s)\n", l, l);
		else
			printf("added domain %s\n", l);
		free(primary);
		free(l);
	}
	directory_close(&d);
	return rc;
}

static int domain_del(struct args *a)
{
	struct directory *d = admin_open_directory(a->data_dir, false);
	if (d == NULL)
		return 1;
	const char *err;
	int rc = 0;
	if (directory_domain_del(d, a->pos[0], a->force, &err) < 0) {
		failf(a->cmd, "%s", err);
		rc = 1;
	} else {
		char *l = lower_copy(a->pos[0]);
		char *path = xasprintf("%s/mail/%s", a->data_dir, l);
		printf("deleted domain %s\n", l);
		if (fsutil_is_dir(path))
			printf("its mail was kept in %s (remove it by hand when no longer needed)\n", path);
		free(path);
		free(l);
	}
	directory_close(&d);
	return rc;
}

struct dom_info {
	char *name;
	int64_t created;
	int64_t users, aliases;
};

struct dom_rows {
	struct dom_info *v;
	size_t n;
	char *last_alias; /* alias rows come sorted: count each address once */
};

static void dom_collect(const char *domain, int64_t created, void *arg)
{
	struct dom_rows *r = arg;
	r->v = xreallocarray(r->v, r->n + 1, sizeof(*r->v));
	r->v[r->n++] = (struct dom_info){ xstrdup(domain), created, 0, 0 };
}

static struct dom_info *dom_find(struct dom_rows *r, const char *domain)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->v[i].name, domain) == 0)
			return &r->v[i];
	return NULL;
}

static void dom_count_user(const struct dir_user_info *u, void *arg)
{
	struct dom_info *di = dom_find(arg, u->domain);
	if (di)
		di->users++;
}

static void dom_count_alias(const char *address, const char *target, void *arg)
{
	struct dom_rows *r = arg;
	(void)target;
	if (r->last_alias && strcmp(r->last_alias, address) == 0)
		return;
	free(r->last_alias);
	r->last_alias = xstrdup(address);
	const char *at = strrchr(address, '@');
	struct dom_info *di = at ? dom_find(r, at + 1) : NULL;
	if (di)
		di->aliases++;
}

static int domain_list(struct args *a)
{
	struct directory *d = admin_open_directory(a->data_dir, false);
	if (d == NULL)
		return 1;
	struct dom_rows r = { NULL, 0, NULL };
	int rc = 0;
	if (directory_domain_list(d, dom_collect, &r) < 0 || directory_user_list(d, NULL, dom_count_user, &r) < 0 ||
	    directory_alias_list(d, dom_count_alias, &r) < 0) {
		failf(a->cmd, "cannot list domains");
		rc = 1;
	}
	char *primary = directory_primary_domain(d);
	if (rc == 0 && a->json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < r.n; i++) {
			json_t *o = json_object();
			json_object_set_new(o, "name", jstr(r.v[i].name));
			json_object_set_new(o, "primary", json_boolean(primary && strcmp(primary, r.v[i].name) == 0));
			json_object_set_new(o, "users", json_integer((json_int_t)r.v[i].users));
			json_object_set_new(o, "aliases", json_integer((json_int_t)r.v[i].aliases));
			json_object_set_new(o, "created", json_integer((json_int_t)r.v[i].created));
			json_array_append_new(arr, o);
		}
		rc = json_print(arr);
	} else if (rc == 0 && r.n == 0) {
		puts("no domains (add one with 'posthorn domain add example.org')");
	} else if (rc == 0) {
		struct table t = { 5, { NULL, 0 } };
		table_row(&t, "DOMAIN", "USERS", "ALIASES", "PRIMARY", "CREATED");
		for (size_t i = 0; i < r.n; i++) {
			char nu[24], na[24], tm[32];
			snprintf(nu, sizeof(nu), "%lld", (long long)r.v[i].users);
			snprintf(na, sizeof(na), "%lld", (long long)r.v[i].aliases);
			time_str(r.v[i].created, tm, sizeof(tm));
			table_row(&t, r.v[i].name, nu, na,
			          primary && strcmp(primary, r.v[i].name) == 0 ? "yes" : "", tm);
		}
		table_print(&t);
	}
	for (size_t i = 0; i < r.n; i++)
		free(r.v[i].name);
	free(r.v);
	free(r.last_alias);
	free(primary);
	directory_close(&d);
	return rc;
}

static const struct subcmd domain_cmds[] = {
	{ "add", "NAME", 0, 1, 1, -1, false, domain_add },
	{ "del", "NAME [--force]", OPT_FORCE, 1, 1, -1, false, domain_del },
	{ "list", "[--json]", OPT_JSON, 0, 0, -1, false, domain_list },
};

int admin_domain_main(int argc, char **argv, const char *data_dir)
{
	return run("domain", domain_cmds, sizeof(domain_cmds) / sizeof(domain_cmds[0]), argc, argv, data_dir);
}

/* ---- aliases --------------------------------------------------------------- */

static int alias_add(struct args *a)
{
	struct directory *d = admin_open_directory(a->data_dir, false);
	if (d == NULL)
		return 1;
	const char *address = a->pos[0];
	int rc = 0;
	int added = 0;
	for (int i = 1; i < a->npos; i++) {
		const char *err;
		if (directory_alias_add(d, address, a->pos[i], &err) < 0) {
			failf(a->cmd, "%s", err);
			rc = 1;
			break;
		}
		added++;
	}
	if (rc != 0) {
		/* all or nothing: take back the targets this command added */
		for (int i = 1; i <= added; i++) {
			const char *err;
			if (directory_alias_del(d, address, a->pos[i], &err) < 0)
				failf(a->cmd, "could not undo target %s: %s", a->pos[i], err);
		}
		if (added)
			fprintf(stderr, "posthorn: %s: nothing changed\n", a->cmd);
	} else {
		char *l = lower_copy(address);
		struct strbuf sb = STRBUF_INIT;
		for (int i = 1; i < a->npos; i++)
			strbuf_addf(&sb, "%s%s", i > 1 ? ", " : "", a->pos[i]);
		printf("alias %s now also forwards to %s\n", l, sb.s);
		strbuf_free(&sb);
		free(l);
		/* a local target that does not exist is allowed (it may be
		 * created next) but mail to it would bounce: say so */
		for (int i = 1; i < a->npos; i++) {
			const char *at = strrchr(a->pos[i], '@');
			if (at == NULL)
				continue;
			char *loc = xstrndup(a->pos[i], (size_t)(at - a->pos[i]));
			if (directory_rcpt_kind(d, loc, at + 1, NULL) == DIR_RCPT_UNKNOWN)
				fprintf(stderr, "posthorn: %s: warning: %s does not exist (yet): mail to it will bounce\n",
				        a->cmd, a->pos[i]);
			free(loc);
		}
	}
	directory_close(&d);
	return rc;
}

static int alias_del(struct args *a)
{
	struct directory *d = admin_open_directory(a->data_dir, false);
	if (d == NULL)
		return 1;
	const char *err;
	const char *target = a->npos > 1 ? a->pos[1] : NULL;
	int rc = 0;
	if (directory_alias_del(d, a->pos[0], target, &err) < 0) {
		failf(a->cmd, "%s", err);
		rc = 1;
	} else {
		char *l = lower_copy(a->pos[0]);
		if (target)
			printf("alias %s no longer forwards to %s\n", l, target);
		else
			printf("deleted alias %s\n", l);
		free(l);
	}
	directory_close(&d);
	return rc;
}

struct alias_group {
	char *address;
	struct strv targets;
};

struct alias_rows {
	struct alias_group *v;
	size_t n;
};

static void alias_collect(const char *address, const char *target, void *arg)
{
	struct alias_rows *r = arg;
	if (r->n == 0 || strcmp(r->v[r->n - 1].address, address) != 0) {
		r->v = xreallocarray(r->v, r->n + 1, sizeof(*r->v));
		r->v[r->n++] = (struct alias_group){ xstrdup(address), { NULL, 0 } };
	}
	strv_add(&r->v[r->n - 1].targets, target);
}

static int alias_list(struct args *a)
{
	struct directory *d = admin_open_directory(a->data_dir, false);
	if (d == NULL)
		return 1;
	struct alias_rows r = { NULL, 0 };
	int rc = 0;
	if (directory_alias_list(d, alias_collect, &r) < 0) {
		failf(a->cmd, "cannot list aliases");
		rc = 1;
	}
	if (rc == 0 && a->json) {
		json_t *arr = json_array();
		for (size_t i = 0; i < r.n; i++) {
			json_t *o = json_object(), *t = json_array();
			json_object_set_new(o, "address", jstr(r.v[i].address));
			for (size_t k = 0; k < r.v[i].targets.n; k++)
				json_array_append_new(t, jstr(r.v[i].targets.v[k]));
			json_object_set_new(o, "targets", t);
			json_array_append_new(arr, o);
		}
		rc = json_print(arr);
	} else if (rc == 0 && r.n == 0) {
		puts("no aliases");
	} else if (rc == 0) {
		struct table t = { 2, { NULL, 0 } };
		table_row(&t, "ALIAS", "TARGETS");
		for (size_t i = 0; i < r.n; i++) {
			struct strbuf sb = STRBUF_INIT;
			for (size_t k = 0; k < r.v[i].targets.n; k++)
				strbuf_addf(&sb, "%s%s", k ? ", " : "", r.v[i].targets.v[k]);
			table_row(&t, r.v[i].address, sb.s ? sb.s : "");
			strbuf_free(&sb);
		}
		table_print(&t);
	}
	for (size_t i = 0; i < r.n; i++) {
		free(r.v[i].address);
		strv_free(&r.v[i].targets);
	}
	free(r.v);
	directory_close(&d);
	return rc;
}

static const struct subcmd alias_cmds[] = {
	{ "add", "ADDRESS TARGET...", 0, 2, -1, -1, false, alias_add },
	{ "del", "ADDRESS [TARGET]", 0, 1, 2, -1, false, alias_del },
	{ "list", "[--json]", OPT_JSON, 0, 0, -1, false, alias_list },
};

int admin_alias_main(int argc, char **argv, const char *data_dir)
{
	return run("alias", alias_cmds, sizeof(alias_cmds) / sizeof(alias_cmds[0]), argc, argv, data_dir);
}
