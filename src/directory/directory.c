/* directory — domains, users, aliases and password hashes in SQLite.
 *
 * Runs in every role that needs to know "who is local": the daemon (one
 * connection per thread, see daemon_thread_directory), the router and the
 * CLI. A struct directory owns one SQLite connection (opened NOMUTEX: never
 * share it between threads) and a cache of prepared statements, prepared
 * on first use and finalised by directory_close().
 *
 * Storage: var/db/directory.sqlite in WAL mode (readers never block the
 * writer, so the CLI can add a user while the daemon delivers), with a
 * busy timeout of DIR_BUSY_TIMEOUT_MS for the rare write/write collision.
 * Schema version SCHEMA_VERSION is recorded in meta(schema_version); a
 * database written by a newer posthorn is refused rather than guessed at.
 *
 * Invariants:
 *  - every name in the tables is ASCII lower case (domains and local
 *    parts); lookups lower-case their input the same way;
 *  - every SQL parameter is bound, never spliced into SQL text;
 *  - addresses are validated with address_parse() (mail/address.h, the one
 *    address parser) before they are stored; local parts of users and
 *    aliases are dot-atoms without '/' because they become path names
 *    (var/mail/<domain>/<user>).
 *  - each administrative write is one IMMEDIATE transaction: its checks
 *    ("is the domain local", "is it a duplicate") and its insert see the
 *    same snapshot, and on error nothing is changed.
 *
 * Errors: functions return -1 with a message in thread-local storage
 * (valid until the next directory call in the same thread); lookups that
 * cannot return a message (rcpt_kind, domain_is_local) return
 * DIR_RCPT_ERROR / false and the SQLite error is not lost: it is kept in
 * the same thread-local buffer for a caller that wants to log it.
 *
 * Passwords are hashed with libxcrypt (yescrypt, fallback sha512-crypt);
 * directory_auth compares in constant time and costs one hash whether or
 * not the user exists, so response time does not reveal valid logins.
 * Copies of passwords and crypt scratch space are wiped (explicit_bzero). */
#include "directory/directory.h"
#include "lib/fsutil.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"
#include "mail/address.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* SQLite busy timeout: long enough for a concurrent writer's transaction
 * (ours are single rows), short enough that a stuck lock is reported. */
#define DIR_BUSY_TIMEOUT_MS 5000
/* Version of the schema below; bump with an upgrade step in schema_upgrade. */
#define SCHEMA_VERSION 1
/* Passwords longer than this are refused (no real password is; bounds the
 * work crypt_r does for hostile input). */
#define DIR_PASSWORD_MAX 1024
/* Shortest password accepted for a new or changed password. */
#define DIR_PASSWORD_MIN 8
/* Longest "local@domain" we look at (RFC 5321 4.5.3.1.3 path limit). */
#define DIR_ADDRESS_MAX ADDRESS_PATH_MAX

enum st {
	ST_DOMAIN_GET,
	ST_DOMAIN_INS,
	ST_DOMAIN_DEL,
	ST_DOMAIN_COUNT_USERS,
	ST_DOMAIN_COUNT_ALIASES,
	ST_DOMAIN_DEL_USERS,
	ST_DOMAIN_DEL_ALIASES,
	ST_DOMAIN_LIST,
	ST_PRIMARY,
	ST_USER_GET,
	ST_USER_FIRST,
	ST_USER_INS,
	ST_USER_DEL,
	ST_USER_SET_HASH,
	ST_USER_SET_QUOTA,
	ST_USER_LIST,
	ST_USER_LIST_DOMAIN,
	ST_USER_COUNT,
	ST_ALIAS_EXISTS,
	ST_ALIAS_TARGETS,
	ST_ALIAS_INS,
	ST_ALIAS_DEL_ALL,
	ST_ALIAS_DEL_ONE,
	ST_ALIAS_LIST,
	ST__COUNT
};

static const char *const st_sql[ST__COUNT] = {
	[ST_DOMAIN_GET] = "SELECT 1 FROM domains WHERE name = ?1",
	[ST_DOMAIN_INS] = "INSERT INTO domains(name, created) VALUES (?1, ?2)",
	[ST_DOMAIN_DEL] = "DELETE FROM domains WHERE name = ?1",
	[ST_DOMAIN_COUNT_USERS] = "SELECT count(*) FROM users WHERE domain = ?1",
	[ST_DOMAIN_COUNT_ALIASES] = "SELECT count(DISTINCT local) FROM aliases WHERE domain = ?1",
	[ST_DOMAIN_DEL_USERS] = "DELETE FROM users WHERE domain = ?1",
	[ST_DOMAIN_DEL_ALIASES] = "DELETE FROM aliases WHERE domain = ?1",
	[ST_DOMAIN_LIST] = "SELECT name, created FROM domains ORDER BY name",
	/* "first created": created has a one-second grain, rowid breaks ties */
	[ST_PRIMARY] = "SELECT name FROM domains ORDER BY created, rowid LIMIT 1",
	[ST_USER_GET] = "SELECT hash, quota FROM users WHERE local = ?1 AND domain = ?2",
	[ST_USER_FIRST] = "SELECT local FROM users WHERE domain = ?1 ORDER BY created, rowid LIMIT 1",
	[ST_USER_INS] = "INSERT INTO users(local, domain, hash, quota, created) VALUES (?1, ?2, ?3, ?4, ?5)",
	[ST_USER_DEL] = "DELETE FROM users WHERE local = ?1 AND domain = ?2",
	[ST_USER_SET_HASH] = "UPDATE users SET hash = ?3 WHERE local = ?1 AND domain = ?2",
	[ST_USER_SET_QUOTA] = "UPDATE users SET quota = ?3 WHERE local = ?1 AND domain = ?2",
	[ST_USER_LIST] = "SELECT local, domain, quota, created FROM users ORDER BY domain, local",
	[ST_USER_LIST_DOMAIN] = "SELECT local, domain, quota, created FROM users WHERE domain = ?1 ORDER BY local",
	[ST_USER_COUNT] = "SELECT count(*) FROM users",
	[ST_ALIAS_EXISTS] = "SELECT 1 FROM aliases WHERE local = ?1 AND domain = ?2 LIMIT 1",
	[ST_ALIAS_TARGETS] = "SELECT target FROM aliases WHERE local = ?1 AND domain = ?2 ORDER BY target",
	[ST_ALIAS_INS] = "INSERT INTO aliases(local, domain, target) VALUES (?1, ?2, ?3)",
	[ST_ALIAS_DEL_ALL] = "DELETE FROM aliases WHERE local = ?1 AND domain = ?2",
	[ST_ALIAS_DEL_ONE] = "DELETE FROM aliases WHERE local = ?1 AND domain = ?2 AND target = ?3 COLLATE NOCASE",
	[ST_ALIAS_LIST] = "SELECT local, domain, target FROM aliases ORDER BY domain, local, target",
};

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS meta ("
	"  key TEXT PRIMARY KEY NOT NULL,"
	"  value TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS domains ("
	"  name TEXT PRIMARY KEY NOT NULL,"
	"  created INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS users ("
	"  local TEXT NOT NULL,"
	"  domain TEXT NOT NULL,"
	"  hash TEXT NOT NULL,"
	"  quota INTEGER NOT NULL DEFAULT 0,"
	"  created INTEGER NOT NULL,"
	"  PRIMARY KEY (local, domain));"
	"CREATE INDEX IF NOT EXISTS users_domain ON users(domain, local);"
	"CREATE TABLE IF NOT EXISTS aliases ("
	"  local TEXT NOT NULL,"
	"  domain TEXT NOT NULL,"
	"  target TEXT NOT NULL,"
	"  PRIMARY KEY (local, domain, target));"
	"CREATE INDEX IF NOT EXISTS aliases_domain ON aliases(domain, local);";

struct directory {
	sqlite3 *db;
	char *path;
	sqlite3_stmt *st[ST__COUNT];
};

/* ---- errors ------------------------------------------------------------ */

static _Thread_local char errbuf[512];

static const char *err_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *err_set(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
	va_end(ap);
	if (n < 0)
		snprintf(errbuf, sizeof(errbuf), "directory: error message could not be formatted");
	/* a truncated message is still a useful message */
	return errbuf;
}

static const char *err_sql(struct directory *d, const char *what)
{
	return err_set("directory %s: %s: %s", d->path, what, sqlite3_errmsg(d->db));
}

/* ---- strv ---------------------------------------------------------------- */

void strv_add(struct strv *s, const char *str)
{
	/* capacity is implicit: the array grows at each power of two, so
	 * struct strv needs no cap field; one extra slot keeps v[n] == NULL */
	if (s->n == 0 || (s->n & (s->n - 1)) == 0) {
		size_t cap = s->n ? s->n * 2 : 1;
		if (cap < s->n)
			panic("strv_add: %zu entries overflow", s->n);
		s->v = xreallocarray(s->v, cap + 1, sizeof(char *));
	}
	s->v[s->n++] = xstrdup(str);
	s->v[s->n] = NULL;
}

bool strv_contains(const struct strv *s, const char *str)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i], str) == 0)
			return true;
	return false;
}

void strv_free(struct strv *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

/* ---- names --------------------------------------------------------------- */

static char *lower_dup(const char *s)
{
	char *p = xstrdup(s);
	address_lower(p);
	return p;
}

/* Splits "local@domain" at the last '@' into lower-cased copies. Returns
 * false (nothing allocated) when there is no '@' or the address is
 * unreasonably long; this is a lookup split, not validation. */
static bool split_lower(const char *addr, char **local_r, char **domain_r)
{
	const char *at = strrchr(addr, '@');
	if (at == NULL || strlen(addr) > DIR_ADDRESS_MAX)
		return false;
	*local_r = xstrndup(addr, (size_t)(at - addr));
	*domain_r = xstrdup(at + 1);
	address_lower(*local_r);
	address_lower(*domain_r);
	return true;
}

/* A domain we may hold: a plain ASCII host name (no address literal). */
static bool domain_name_ok(const char *domain)
{
	return address_domain_ok(domain, false);
}

/* Parses and validates an address that will be stored as a user or an
 * alias of ours: ASCII dot-atom local part without '/', a host name.
 * Fills lower-cased copies. */
static int local_address_parse(const char *address, char **local_r, char **domain_r,
                               const char **error_r)
{
	struct mail_address a;
	const char *why;
	if (strpbrk(address, " \t\r\n") != NULL) {
		/* the parser would stop at the space and say "missing domain" */
		*error_r = err_set("malformed address '%s': contains white space", address);
		return -1;
	}
	if (address_parse(address, false, &a, &why) < 0) {
		*error_r = err_set("malformed address '%s': %s", address, why);
		return -1;
	}
	if (a.quoted || a.literal || a.local[0] == '\0' || strchr(a.local, '/') != NULL) {
		*error_r = err_set("malformed address '%s': a mailbox name must be a plain "
		                   "local part (no quotes, no '/') @ a host name",
		                   address);
		address_free(&a);
		return -1;
	}
	*local_r = a.local;
	*domain_r = a.domain;
	address_lower(*local_r);
	return 0;
}

/* ---- statements ---------------------------------------------------------- */

static sqlite3_stmt *stmt(struct directory *d, enum st id)
{
	if (d->st[id] == NULL &&
	    sqlite3_prepare_v3(d->db, st_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &d->st[id], NULL) !=
	            SQLITE_OK) {
		err_sql(d, "prepare");
		d->st[id] = NULL;
		return NULL;
	}
	return d->st[id];
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
	sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
}

/* Runs a statement with up to two text parameters (NULL = not bound) and
 * reads the first row: column 0 as text into *text_r (xmalloc'd, may be
 * NULL) and column 1 (or column 0 when text_r is NULL) as an integer into
 * *int_r (may be NULL). Returns 1 row, 0 no row, -1 error. */
static int query_one(struct directory *d, enum st id, const char *a, const char *b, char **text_r,
                     int64_t *int_r)
{
	sqlite3_stmt *s = stmt(d, id);
	if (s == NULL)
		return -1;
	if (a)
		bind_text(s, 1, a);
	if (b)
		bind_text(s, 2, b);
	int rc = sqlite3_step(s);
	int r;
	if (rc == SQLITE_ROW) {
		if (text_r) {
			const unsigned char *t = sqlite3_column_text(s, 0);
			*text_r = xstrdup(t ? (const char *)t : "");
		}
		if (int_r)
			*int_r = sqlite3_column_int64(s, text_r ? 1 : 0);
		r = 1;
	} else if (rc == SQLITE_DONE) {
		r = 0;
	} else {
		err_sql(d, "query");
		r = -1;
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

/* One bound parameter of a write statement. */
struct param {
	enum { P_TEXT, P_INT } type;
	const char *t;
	int64_t i;
};
#define PT(s) { P_TEXT, (s), 0 }
#define PI(n) { P_INT, NULL, (n) }

/* Runs a write statement with parameters ?1..?np. Returns the number of
 * changed rows, or -1 with the message in errbuf; *rc_r (may be NULL)
 * gets the extended SQLite result code, to tell constraint errors. */
static int exec_write(struct directory *d, enum st id, const struct param *p, int np, int *rc_r)
{
	sqlite3_stmt *s = stmt(d, id);
	if (s == NULL)
		return -1;
	for (int i = 0; i < np; i++) {
		if (p[i].type == P_INT)
			sqlite3_bind_int64(s, i + 1, p[i].i);
		else
			bind_text(s, i + 1, p[i].t);
	}
	int rc = sqlite3_step(s);
	if (rc_r)
		*rc_r = rc;
	int r;
	if (rc == SQLITE_DONE) {
		r = sqlite3_changes(d->db);
	} else {
		err_sql(d, "write");
		r = -1;
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

static int tx_begin(struct directory *d, const char **error_r)
{
	/* IMMEDIATE takes the write lock now, so the checks that follow and
	 * the write see the same state (busy_timeout covers contention). */
	if (sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		*error_r = err_sql(d, "begin transaction");
		return -1;
	}
	return 0;
}

static int tx_commit(struct directory *d, const char **error_r)
{
	if (sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		*error_r = err_sql(d, "commit");
		sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return 0;
}

static void tx_rollback(struct directory *d)
{
	/* the error message of the failed step is already in errbuf */
	sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- open / close -------------------------------------------------------- */

static int schema_version(struct directory *d, int64_t *v_r)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(d->db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &s,
	                       NULL) != SQLITE_OK) {
		*v_r = 0; /* no meta table: a new database */
		return 0;
	}
	int rc = sqlite3_step(s);
	int r = 0;
	*v_r = 0;
	if (rc == SQLITE_ROW)
		*v_r = sqlite3_column_int64(s, 0);
	else if (rc != SQLITE_DONE)
		r = -1;
	sqlite3_finalize(s);
	return r;
}

static int schema_upgrade(struct directory *d, const char **error_r)
{
	int64_t v;
	if (schema_version(d, &v) < 0) {
		*error_r = err_sql(d, "read schema version");
		return -1;
	}
	if (v == SCHEMA_VERSION)
		return 0;
	if (v > SCHEMA_VERSION) {
		*error_r = err_set("directory %s has schema version %lld, newer than this posthorn "
		                   "understands (%d): use a newer posthorn",
		                   d->path, (long long)v, SCHEMA_VERSION);
		return -1;
	}
	if (tx_begin(d, error_r) < 0)
		return -1;
	/* re-read under the write lock: another process may have won */
	if (schema_version(d, &v) < 0) {
		*error_r = err_sql(d, "read schema version");
		tx_rollback(d);
		return -1;
	}
	if (v < SCHEMA_VERSION) {
		/* version 0 → 1: the initial schema. Later versions add steps
		 * here, each guarded by "if (v < N)". */
		char *ver = xasprintf("%d", SCHEMA_VERSION);
		sqlite3_stmt *s = NULL;
		if (sqlite3_exec(d->db, schema_sql, NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_prepare_v2(d->db,
		                       "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?1)",
		                       -1, &s, NULL) != SQLITE_OK ||
		    sqlite3_bind_text(s, 1, ver, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
		    sqlite3_step(s) != SQLITE_DONE) {
			*error_r = err_sql(d, "create schema");
			sqlite3_finalize(s);
			free(ver);
			tx_rollback(d);
			return -1;
		}
		sqlite3_finalize(s);
		free(ver);
	}
	return tx_commit(d, error_r);
}

struct directory *directory_open(const char *path, bool create, const char **error_r)
{
	if (create) {
		char dir[PATH_MAX];
		const char *why;
		fsutil_dirname(path, dir, sizeof(dir));
		if (fsutil_mkdir_p(dir, 0750, &why) < 0) {
			*error_r = err_set("cannot create %s: %s", dir, why);
			return NULL;
		}
		/* The file holds password hashes: create it 0600 ourselves, as
		 * SQLite would use 0644; the -wal and -shm files copy its mode. */
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0) {
			*error_r = err_set("cannot create %s: %s", path, strerror(errno));
			return NULL;
		}
		close(fd);
	}

	struct directory *d = xcalloc(1, sizeof(*d));
	d->path = xstrdup(path);
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
	if (sqlite3_open_v2(path, &d->db, flags, NULL) != SQLITE_OK) {
		if (d->db)
			*error_r = err_set("cannot open directory %s: %s", path, sqlite3_errmsg(d->db));
		else
			*error_r = err_set("cannot open directory %s: out of memory", path);
		directory_close(&d);
		return NULL;
	}
	sqlite3_extended_result_codes(d->db, 1);
	sqlite3_busy_timeout(d->db, DIR_BUSY_TIMEOUT_MS);
	/* WAL: the daemon reads while the CLI writes. The mode is stored in
	 * the file, so this only writes the first time. */
	char *jm = NULL;
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(d->db, "PRAGMA journal_mode=WAL", -1, &s, NULL) == SQLITE_OK) {
		if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
			jm = xstrdup((const char *)sqlite3_column_text(s, 0));
		sqlite3_finalize(s);
	}
	if (jm == NULL || strcmp(jm, "wal") != 0) {
		*error_r = err_set("cannot open directory %s: %s", path,
		                   jm ? "cannot switch to WAL journal mode" : sqlite3_errmsg(d->db));
		free(jm);
		directory_close(&d);
		return NULL;
	}
	free(jm);
	if (sqlite3_exec(d->db, "PRAGMA foreign_keys=OFF; PRAGMA synchronous=FULL", NULL, NULL, NULL) !=
	    SQLITE_OK) {
		*error_r = err_sql(d, "set pragmas");
		directory_close(&d);
		return NULL;
	}
	if (schema_upgrade(d, error_r) < 0) {
		directory_close(&d);
		return NULL;
	}
	return d;
}

void directory_close(struct directory **dp)
{
	struct directory *d = *dp;
	if (d == NULL)
		return;
	for (int i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(d->st[i]);
	if (d->db)
		sqlite3_close(d->db);
	free(d->path);
	free(d);
	*dp = NULL;
}

/* ---- lookups ------------------------------------------------------------- */

/* 1 local, 0 not, -1 error. domain is already lower case. */
static int domain_get(struct directory *d, const char *domain)
{
	return query_one(d, ST_DOMAIN_GET, domain, NULL, NULL, NULL);
}

bool directory_domain_is_local(struct directory *d, const char *domain)
{
	char *dom = lower_dup(domain);
	int r = domain_get(d, dom);
	free(dom);
	return r == 1;
}

char *directory_primary_domain(struct directory *d)
{
	char *name = NULL;
	if (query_one(d, ST_PRIMARY, NULL, NULL, &name, NULL) != 1)
		return NULL;
	return name;
}

static int user_exists(struct directory *d, const char *local, const char *domain)
{
	return query_one(d, ST_USER_GET, local, domain, NULL, NULL);
}

static int alias_exists(struct directory *d, const char *local, const char *domain)
{
	return query_one(d, ST_ALIAS_EXISTS, local, domain, NULL, NULL);
}

/* A resolved local-domain name: LOCAL with the mailbox, or ALIAS with the
 * key ("local@domain") whose alias rows are its targets. */
struct resolved {
	enum dir_rcpt_kind kind;
	char *name;
};

/* Exact user, then exact alias. 1 found (r filled), 0 neither, -1 error. */
static int lookup_exact(struct directory *d, const char *local, const char *domain, struct resolved *r)
{
	int u = user_exists(d, local, domain);
	if (u < 0)
		return -1;
	if (u) {
		r->kind = DIR_RCPT_LOCAL;
		r->name = xasprintf("%s@%s", local, domain);
		return 1;
	}
	int a = alias_exists(d, local, domain);
	if (a < 0)
		return -1;
	if (a) {
		r->kind = DIR_RCPT_ALIAS;
		r->name = xasprintf("%s@%s", local, domain);
		return 1;
	}
	return 0;
}

/* Classifies lower-cased (local, domain) where domain is local.
 *
 * Order: the exact name; then plus-addressing ("user+tag" that is neither
 * a user nor an alias is "user"); then the RFC 5321 4.5.1 rule that
 * postmaster must always be deliverable: without a user or alias
 * postmaster@domain it is an implied alias to postmaster of the primary
 * domain (itself resolved by these rules, so possibly the primary
 * domain's first user), else to the first user of the domain itself.
 * `pm_depth` stops the postmaster fallback from recursing more than once. */
static enum dir_rcpt_kind classify(struct directory *d, const char *local, const char *domain,
                                   struct resolved *r, int pm_depth)
{
	r->kind = DIR_RCPT_UNKNOWN;
	r->name = NULL;
	int f = lookup_exact(d, local, domain, r);
	if (f < 0)
		return r->kind = DIR_RCPT_ERROR;
	if (f)
		return r->kind;

	const char *base = local;
	char *stripped = NULL;
	const char *plus = strchr(local, '+');
	if (plus != NULL && plus != local) {
		stripped = xstrndup(local, (size_t)(plus - local));
		base = stripped;
		f = lookup_exact(d, base, domain, r);
		if (f != 0) {
			free(stripped);
			return f < 0 ? (r->kind = DIR_RCPT_ERROR) : r->kind;
		}
	}

	if (strcmp(base, "postmaster") == 0) {
		free(stripped);
		char *primary = pm_depth == 0 ? directory_primary_domain(d) : NULL;
		if (primary != NULL && strcmp(primary, domain) != 0) {
			enum dir_rcpt_kind k = classify(d, "postmaster", primary, r, pm_depth + 1);
			free(primary);
			if (k != DIR_RCPT_UNKNOWN)
				return k;
		} else {
			free(primary);
		}
		char *first = NULL;
		int u = query_one(d, ST_USER_FIRST, domain, NULL, &first, NULL);
		if (u < 0)
			return r->kind = DIR_RCPT_ERROR;
		if (u == 1) {
			r->kind = DIR_RCPT_LOCAL;
			r->name = xasprintf("%s@%s", first, domain);
			free(first);
			return r->kind;
		}
		return r->kind = DIR_RCPT_UNKNOWN;
	}
	free(stripped);
	return r->kind = DIR_RCPT_UNKNOWN;
}

enum dir_rcpt_kind directory_rcpt_kind(struct directory *d, const char *local, const char *domain,
                                       char **mailbox_r)
{
	if (mailbox_r)
		*mailbox_r = NULL;
	char *dom = lower_dup(domain);
	int l = domain_get(d, dom);
	if (l <= 0) {
		free(dom);
		return l < 0 ? DIR_RCPT_ERROR : DIR_RCPT_REMOTE;
	}
	char *loc = lower_dup(local);
	struct resolved r;
	enum dir_rcpt_kind k = classify(d, loc, dom, &r, 0);
	if (k == DIR_RCPT_LOCAL && mailbox_r)
		*mailbox_r = r.name;
	else
		free(r.name);
	free(loc);
	free(dom);
	return k;
}

/* ---- expansion ----------------------------------------------------------- */

struct expand {
	struct directory *d;
	struct strv *local, *remote, *unknown;
	struct strv visited; /* alias keys on the current path or finished */
	size_t total;        /* targets looked at, against DIRECTORY_EXPAND_MAX */
	const char *error;
};

static void add_once(struct strv *s, const char *v)
{
	if (!strv_contains(s, v))
		strv_add(s, v);
}

/* "local@Domain" → "local@domain" (remote local parts keep their case:
 * RFC 5321 2.4 leaves them to the remote host). */
static char *remote_canon(const char *addr)
{
	char *c = xstrdup(addr);
	char *at = strrchr(c, '@');
	if (at)
		address_lower(at + 1);
	return c;
}

static int expand_one(struct expand *x, const char *addr, int depth)
{
	if (++x->total > DIRECTORY_EXPAND_MAX) {
		x->error = err_set("alias expansion gives more than %d addresses (at %s)",
		                   DIRECTORY_EXPAND_MAX, addr);
		return -1;
	}
	char *loc, *dom;
	if (!split_lower(addr, &loc, &dom)) {
		/* a malformed stored target: it cannot be delivered */
		add_once(x->unknown, addr);
		return 0;
	}
	int l = domain_get(x->d, dom);
	if (l < 0) {
		x->error = errbuf;
		free(loc);
		free(dom);
		return -1;
	}
	if (l == 0) {
		char *c = remote_canon(addr);
		add_once(x->remote, c);
		free(c);
		free(loc);
		free(dom);
		return 0;
	}

	struct resolved r;
	enum dir_rcpt_kind k = classify(x->d, loc, dom, &r, 0);
	int ret = 0;
	switch (k) {
	case DIR_RCPT_ERROR:
		x->error = errbuf;
		ret = -1;
		break;
	case DIR_RCPT_LOCAL:
		add_once(x->local, r.name);
		break;
	case DIR_RCPT_UNKNOWN:
	case DIR_RCPT_REMOTE: {
		char *c = xasprintf("%s@%s", loc, dom);
		add_once(x->unknown, c);
		free(c);
		break;
	}
	case DIR_RCPT_ALIAS: {
		if (strv_contains(&x->visited, r.name)) {
			/* A loop back to an alias already being expanded (or done):
			 * deliver to a mailbox of that very name if one exists, else
			 * this branch ends here. */
			char *al, *ad;
			if (split_lower(r.name, &al, &ad)) {
				int u = user_exists(x->d, al, ad);
				if (u < 0) {
					x->error = errbuf;
					ret = -1;
				} else if (u) {
					add_once(x->local, r.name);
				}
				free(al);
				free(ad);
			}
			break;
		}
		if (depth >= DIRECTORY_ALIAS_DEPTH) {
			x->error = err_set("alias chain longer than %d at %s", DIRECTORY_ALIAS_DEPTH, r.name);
			ret = -1;
			break;
		}
		strv_add(&x->visited, r.name);
		/* Read all targets before recursing: the cached statement cannot
		 * be stepped by two levels at once. */
		struct strv targets = { NULL, 0 };
		char *al, *ad;
		if (!split_lower(r.name, &al, &ad))
			panic("directory: alias key '%s' without '@'", r.name);
		sqlite3_stmt *s = stmt(x->d, ST_ALIAS_TARGETS);
		if (s == NULL) {
			x->error = errbuf;
			ret = -1;
		} else {
			bind_text(s, 1, al);
			bind_text(s, 2, ad);
			int rc;
			while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
				const unsigned char *t = sqlite3_column_text(s, 0);
				if (t)
					strv_add(&targets, (const char *)t);
			}
			if (rc != SQLITE_DONE) {
				x->error = err_sql(x->d, "read alias targets");
				ret = -1;
			}
			sqlite3_reset(s);
			sqlite3_clear_bindings(s);
		}
		free(al);
		free(ad);
		for (size_t i = 0; ret == 0 && i < targets.n; i++)
			ret = expand_one(x, targets.v[i], depth + 1);
		strv_free(&targets);
		break;
	}
	}
	free(r.name);
	free(loc);
	free(dom);
	return ret;
}

int directory_expand(struct directory *d, const char *address, struct strv *local,
                     struct strv *remote, struct strv *unknown, const char **error_r)
{
	struct expand x = { d, local, remote, unknown, { NULL, 0 }, 0, NULL };
	if (strrchr(address, '@') == NULL) {
		*error_r = err_set("cannot expand '%s': not an address", address);
		return -1;
	}
	int r = expand_one(&x, address, 0);
	strv_free(&x.visited);
	if (r < 0)
		*error_r = x.error ? x.error : "alias expansion failed";
	return r;
}

/* ---- passwords ----------------------------------------------------------- */

static char *hash_with(const char *password, const char *setting)
{
	struct crypt_data *cd = xcalloc(1, sizeof(*cd));
	char *out = crypt_r(password, setting, cd);
	char *r = NULL;
	if (out != NULL && out[0] != '*')
		r = xstrdup(out);
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return r;
}

char *directory_hash_password(const char *password)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	/* NULL random bytes: libxcrypt reads the OS random source itself */
	if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, (int)sizeof(salt)) != NULL) {
		char *h = hash_with(password, salt);
		if (h != NULL)
			return h;
	}
	if (crypt_gensalt_rn("$6$", 0, NULL, 0, salt, (int)sizeof(salt)) != NULL) {
		char *h = hash_with(password, salt);
		if (h != NULL)
			return h;
	}
	/* libxcrypt always implements sha512-crypt; without a random source
	 * we cannot make a salt, and a saltless hash is not an option. */
	panic("directory_hash_password: crypt_gensalt/crypt_r failed for $y$ and $6$: %s",
	      strerror(errno));
}

/* Compares two NUL-terminated strings in time that depends only on the
 * length of `known` (a stored hash, whose length is not secret). */
static bool ct_streq(const char *given, const char *known)
{
	size_t lg = strlen(given), lk = strlen(known);
	volatile unsigned char acc = (unsigned char)(lg != lk);
	for (size_t i = 0; i < lk; i++) {
		unsigned char g = i < lg ? (unsigned char)given[i] : 0;
		acc |= (unsigned char)(g ^ (unsigned char)known[i]);
	}
	return acc == 0;
}

static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static char *dummy_hash;

static void dummy_init(void)
{
	/* A real hash with the default algorithm and cost, so checking a
	 * password against it costs the same as against a user's hash. */
	dummy_hash = directory_hash_password("posthorn-dummy-password-for-timing");
}

int directory_auth(struct directory *d, const char *login, const char *password, char **canonical_r)
{
	if (canonical_r)
		*canonical_r = NULL;
	pthread_once(&dummy_once, dummy_init);
	if (strlen(password) > DIR_PASSWORD_MAX)
		return 0;

	char *loc = NULL, *dom = NULL;
	if (strchr(login, '@') != NULL) {
		if (!split_lower(login, &loc, &dom))
			loc = dom = NULL;
	} else if (strlen(login) <= ADDRESS_LOCAL_MAX) {
		dom = directory_primary_domain(d);
		if (dom != NULL)
			loc = lower_dup(login);
	}

	char *hash = NULL;
	int found = 0;
	if (loc != NULL && dom != NULL) {
		found = query_one(d, ST_USER_GET, loc, dom, &hash, NULL);
		if (found < 0) {
			free(loc);
			free(dom);
			return -1;
		}
	}

	int ok = 0;
	char *out = hash_with(password, found == 1 ? hash : dummy_hash);
	if (found == 1 && out != NULL && ct_streq(out, hash)) {
		ok = 1;
		if (canonical_r)
			*canonical_r = xasprintf("%s@%s", loc, dom);
	}
	if (out) {
		explicit_bzero(out, strlen(out));
		free(out);
	}
	free(hash);
	free(loc);
	free(dom);
	return ok;
}

/* Policy for a new password; NULL when acceptable. */
static const char *password_check(const char *password, const char *local, const char *domain)
{
	size_t bytes = strlen(password), chars = 0;
	if (bytes == 0)
		return "empty password refused";
	if (bytes > DIR_PASSWORD_MAX)
		return err_set("password refused: longer than %d bytes", DIR_PASSWORD_MAX);
	for (const unsigned char *p = (const unsigned char *)password; *p; p++)
		if ((*p & 0xc0) != 0x80) /* count UTF-8 characters, not bytes */
			chars++;
	if (chars < DIR_PASSWORD_MIN)
		return err_set("password refused: shorter than %d characters", DIR_PASSWORD_MIN);
	if (strcasecmp(password, local) == 0)
		return "password refused: it is the user name";
	size_t ll = strlen(local);
	if (bytes == ll + 1 + strlen(domain) && strncasecmp(password, local, ll) == 0 &&
	    password[ll] == '@' && strcasecmp(password + ll + 1, domain) == 0)
		return "password refused: it is the address";
	return NULL;
}

/* ---- administration ------------------------------------------------------ */

static const char *not_local_msg(const char *domain)
{
	return err_set("domain %s is not local: add it with 'posthorn domain add %s'", domain, domain);
}

int directory_domain_add(struct directory *d, const char *domain, const char **error_r)
{
	char *dom = lower_dup(domain);
	int ret = -1;
	if (!domain_name_ok(dom)) {
		*error_r = err_set("malformed domain '%s': expected a host name like example.org", domain);
		goto out;
	}
	if (tx_begin(d, error_r) < 0)
		goto out;
	int e = domain_get(d, dom);
	if (e != 0) {
		*error_r = e < 0 ? errbuf : err_set("domain %s already exists", dom);
		goto fail;
	}
	if (exec_write(d, ST_DOMAIN_INS, (struct param[]){ PT(dom), PI((int64_t)time(NULL)) }, 2,
	               NULL) < 0) {
		*error_r = errbuf;
		goto fail;
	}
	ret = tx_commit(d, error_r);
	goto out;
fail:
	tx_rollback(d);
out:
	free(dom);
	return ret;
}

int directory_domain_del(struct directory *d, const char *domain, bool force, const char **error_r)
{
	char *dom = lower_dup(domain);
	int ret = -1;
	if (tx_begin(d, error_r) < 0)
		goto out;
	int e = domain_get(d, dom);
	if (e <= 0) {
		*error_r = e < 0 ? errbuf : err_set("no such domain %s", dom);
		goto fail;
	}
	int64_t nu = 0, na = 0;
	if (query_one(d, ST_DOMAIN_COUNT_USERS, dom, NULL, NULL, &nu) < 0 ||
	    query_one(d, ST_DOMAIN_COUNT_ALIASES, dom, NULL, NULL, &na) < 0) {
		*error_r = errbuf;
		goto fail;
	}
	if ((nu || na) && !force) {
		*error_r = err_set("domain %s still has %lld user%s and %lld alias%s: delete them "
		                   "first, or use --force to delete them with the domain",
		                   dom, (long long)nu, nu == 1 ? "" : "s", (long long)na,
		                   na == 1 ? "" : "es");
		goto fail;
	}
	struct param p[] = { PT(dom) };
	if (exec_write(d, ST_DOMAIN_DEL_USERS, p, 1, NULL) < 0 ||
	    exec_write(d, ST_DOMAIN_DEL_ALIASES, p, 1, NULL) < 0 ||
	    exec_write(d, ST_DOMAIN_DEL, p, 1, NULL) < 0) {
		*error_r = errbuf;
		goto fail;
	}
	ret = tx_commit(d, error_r);
	goto out;
fail:
	tx_rollback(d);
out:
	free(dom);
	return ret;
}

/* The checks of user add: the domain is ours, no such user, no alias of
 * that name. Run once before hashing (fail fast, no lock held while
 * crypt runs) and again inside the transaction. */
static int user_add_check(struct directory *d, const char *loc, const char *dom, const char **error_r)
{
	int l = domain_get(d, dom);
	if (l <= 0) {
		*error_r = l < 0 ? errbuf : not_local_msg(dom);
		return -1;
	}
	int u = user_exists(d, loc, dom);
	if (u != 0) {
		*error_r = u < 0 ? errbuf : err_set("user %s@%s already exists", loc, dom);
		return -1;
	}
	int a = alias_exists(d, loc, dom);
	if (a != 0) {
		*error_r = a < 0 ? errbuf
		                 : err_set("%s@%s is an alias: delete it first with 'posthorn alias del %s@%s'",
		                           loc, dom, loc, dom);
		return -1;
	}
	return 0;
}

int directory_user_add(struct directory *d, const char *address, const char *password,
                       uint64_t quota, const char **error_r)
{
	char *loc, *dom, *hash = NULL;
	const char *why;
	int ret = -1;
	if (local_address_parse(address, &loc, &dom, error_r) < 0)
		return -1;
	if (quota > INT64_MAX) {
		*error_r = "quota too large";
		goto out;
	}
	if (user_add_check(d, loc, dom, error_r) < 0)
		goto out;
	if ((why = password_check(password, loc, dom)) != NULL) {
		*error_r = why;
		goto out;
	}
	/* Hash before taking the write lock: crypt is the slow part. */
	hash = directory_hash_password(password);
	if (tx_begin(d, error_r) < 0)
		goto out;
	if (user_add_check(d, loc, dom, error_r) < 0)
		goto fail;
	struct param p[] = { PT(loc), PT(dom), PT(hash), PI((int64_t)quota), PI((int64_t)time(NULL)) };
	if (exec_write(d, ST_USER_INS, p, 5, NULL) < 0) {
		*error_r = errbuf;
		goto fail;
	}
	ret = tx_commit(d, error_r);
	goto out;
fail:
	tx_rollback(d);
out:
	if (hash) {
		explicit_bzero(hash, strlen(hash));
		free(hash);
	}
	free(loc);
	free(dom);
	return ret;
}

/* Runs one UPDATE or DELETE (parameters local, domain[, value]) on an
 * existing user, in a transaction with the existence check. */
static int user_write(struct directory *d, const char *address, enum st id, const struct param *value,
                      const char **error_r)
{
	char *loc, *dom;
	int ret = -1;
	if (local_address_parse(address, &loc, &dom, error_r) < 0)
		return -1;
	if (tx_begin(d, error_r) < 0)
		goto out;
	int u = user_exists(d, loc, dom);
	if (u <= 0) {
		*error_r = u < 0 ? errbuf : err_set("no such user %s@%s", loc, dom);
		goto fail;
	}
	struct param p[3] = { PT(loc), PT(dom) };
	if (value)
		p[2] = *value;
	if (exec_write(d, id, p, value ? 3 : 2, NULL) < 0) {
		*error_r = errbuf;
		goto fail;
	}
	ret = tx_commit(d, error_r);
	goto out;
fail:
	tx_rollback(d);
out:
	free(loc);
	free(dom);
	return ret;
}

int directory_user_del(struct directory *d, const char *address, const char **error_r)
{
	return user_write(d, address, ST_USER_DEL, NULL, error_r);
}

int directory_user_passwd(struct directory *d, const char *address, const char *password,
                          const char **error_r)
{
	char *loc, *dom;
	const char *why;
	if (local_address_parse(address, &loc, &dom, error_r) < 0)
		return -1;
	int u = user_exists(d, loc, dom);
	if (u <= 0)
		why = u < 0 ? errbuf : err_set("no such user %s@%s", loc, dom);
	else
		why = password_check(password, loc, dom);
	free(loc);
	free(dom);
	if (why != NULL) {
		*error_r = why;
		return -1;
	}
	char *hash = directory_hash_password(password);
	struct param v = PT(hash);
	int r = user_write(d, address, ST_USER_SET_HASH, &v, error_r);
	explicit_bzero(hash, strlen(hash));
	free(hash);
	return r;
}

int directory_user_set_quota(struct directory *d, const char *address, uint64_t quota,
                             const char **error_r)
{
	if (quota > INT64_MAX) {
		*error_r = "quota too large";
		return -1;
	}
	struct param v = PI((int64_t)quota);
	return user_write(d, address, ST_USER_SET_QUOTA, &v, error_r);
}

/* Returns 0 with the quota (0 when there is no such user: nothing to
 * limit), or -1 on a database error. Callers test "== 0" (smtp.c). */
int directory_user_quota(struct directory *d, const char *mailbox, uint64_t *quota_r)
{
	*quota_r = 0;
	char *loc, *dom;
	if (!split_lower(mailbox, &loc, &dom))
		return 0;
	char *hash = NULL;
	int64_t q = 0;
	int r = query_one(d, ST_USER_GET, loc, dom, &hash, &q);
	free(hash);
	free(loc);
	free(dom);
	if (r < 0)
		return -1;
	if (r == 1)
		*quota_r = q > 0 ? (uint64_t)q : 0;
	return 0;
}

/* Normalises an alias target: validated, domain lower case; the local part
 * too when the domain is ours (our names are case-insensitive), as written
 * otherwise (a remote host may care about case). xmalloc'd or NULL. */
static char *target_canon(struct directory *d, const char *target, const char **error_r)
{
	struct mail_address a;
	const char *why;
	if (strpbrk(target, " \t\r\n") != NULL) {
		*error_r = err_set("malformed target address '%s': contains white space", target);
		return NULL;
	}
	if (address_parse(target, false, &a, &why) < 0) {
		*error_r = err_set("malformed target address '%s': %s", target, why);
		return NULL;
	}
	if (a.local[0] == '\0') {
		*error_r = err_set("malformed target address '%s': empty local part", target);
		address_free(&a);
		return NULL;
	}
	int l = a.literal ? 0 : domain_get(d, a.domain);
	if (l < 0) {
		*error_r = errbuf;
		address_free(&a);
		return NULL;
	}
	if (l == 1)
		address_lower(a.local);
	char *c = address_format(&a);
	address_free(&a);
	return c;
}

int directory_alias_add(struct directory *d, const char *address, const char *target,
                        const char **error_r)
{
	char *loc, *dom, *tgt = NULL;
	int ret = -1;
	if (local_address_parse(address, &loc, &dom, error_r) < 0)
		return -1;
	if (tx_begin(d, error_r) < 0)
		goto out;
	int l = domain_get(d, dom);
	if (l <= 0) {
		*error_r = l < 0 ? errbuf : not_local_msg(dom);
		goto fail;
	}
	int u = user_exists(d, loc, dom);
	if (u != 0) {
		*error_r = u < 0 ? errbuf
		                 : err_set("%s@%s is a user: an alias may not shadow a mailbox", loc, dom);
		goto fail;
	}
	if ((tgt = target_canon(d, target, error_r)) == NULL)
		goto fail;
	int rc;
	if (exec_write(d, ST_ALIAS_INS, (struct param[]){ PT(loc), PT(dom), PT(tgt) }, 3, &rc) < 0) {
		if ((rc & 0xff) == SQLITE_CONSTRAINT)
			*error_r = err_set("alias %s@%s already forwards to %s", loc, dom, tgt);
		else
			*error_r = errbuf;
		goto fail;
	}
	ret = tx_commit(d, error_r);
	goto out;
fail:
	tx_rollback(d);
out:
	free(tgt);
	free(loc);
	free(dom);
	return ret;
}

int directory_alias_del(struct directory *d, const char *address, const char *target,
                        const char **error_r)
{
	char *loc, *dom, *tgt = NULL;
	if (!split_lower(address, &loc, &dom)) {
		*error_r = err_set("malformed address '%s': expected local@domain", address);
		return -1;
	}
	int n;
	if (target != NULL) {
		/* match the stored form; a target that no longer parses is
		 * matched as given, so it can still be removed */
		const char *why;
		tgt = target_canon(d, target, &why);
		n = exec_write(d, ST_ALIAS_DEL_ONE,
		               (struct param[]){ PT(loc), PT(dom), PT(tgt ? tgt : target) }, 3, NULL);
	} else {
		n = exec_write(d, ST_ALIAS_DEL_ALL, (struct param[]){ PT(loc), PT(dom) }, 2, NULL);
	}
	int ret = 0;
	if (n < 0) {
		*error_r = errbuf;
		ret = -1;
	} else if (n == 0) {
		if (target != NULL)
			*error_r = err_set("alias %s@%s does not forward to %s", loc, dom, target);
		else
			*error_r = err_set("no such alias %s@%s", loc, dom);
		ret = -1;
	}
	free(tgt);
	free(loc);
	free(dom);
	return ret;
}

/* ---- listings ------------------------------------------------------------ */

static const char *col_text(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	return t ? (const char *)t : "";
}

/* Callbacks run while the listing statement is being stepped: they may
 * call other directory functions, but not the same listing. */
static int list_done(struct directory *d, sqlite3_stmt *s, int rc)
{
	int r = 0;
	if (rc != SQLITE_DONE) {
		err_sql(d, "list");
		r = -1;
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return r;
}

int directory_domain_list(struct directory *d, void (*cb)(const char *domain, int64_t created, void *arg),
                          void *arg)
{
	sqlite3_stmt *s = stmt(d, ST_DOMAIN_LIST);
	if (s == NULL)
		return -1;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		cb(col_text(s, 0), sqlite3_column_int64(s, 1), arg);
	return list_done(d, s, rc);
}

int directory_user_list(struct directory *d, const char *domain_or_null,
                        void (*cb)(const struct dir_user_info *u, void *arg), void *arg)
{
	char *dom = domain_or_null ? lower_dup(domain_or_null) : NULL;
	sqlite3_stmt *s = stmt(d, dom ? ST_USER_LIST_DOMAIN : ST_USER_LIST);
	if (s == NULL) {
		free(dom);
		return -1;
	}
	if (dom)
		bind_text(s, 1, dom);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		char *address = xasprintf("%s@%s", col_text(s, 0), col_text(s, 1));
		int64_t q = sqlite3_column_int64(s, 2);
		struct dir_user_info u = {
			.address = address,
			.domain = col_text(s, 1),
			.quota = q > 0 ? (uint64_t)q : 0,
			.created = sqlite3_column_int64(s, 3),
		};
		cb(&u, arg);
		free(address);
	}
	free(dom);
	return list_done(d, s, rc);
}

int directory_alias_list(struct directory *d, void (*cb)(const char *address, const char *target, void *arg),
                         void *arg)
{
	sqlite3_stmt *s = stmt(d, ST_ALIAS_LIST);
	if (s == NULL)
		return -1;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		char *address = xasprintf("%s@%s", col_text(s, 0), col_text(s, 1));
		cb(address, col_text(s, 2), arg);
		free(address);
	}
	return list_done(d, s, rc);
}

int64_t directory_count_users(struct directory *d)
{
	int64_t n = 0;
	if (query_one(d, ST_USER_COUNT, NULL, NULL, NULL, &n) < 0)
		return -1;
	return n;
}
