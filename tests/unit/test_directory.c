/* test_directory — unit tests for directory/ on a temporary SQLite
 * database: domains, users, aliases, recipient classification (plus
 * addressing, case, postmaster), alias expansion (chains, loops, fan-out,
 * limits), authentication and quotas. Each test builds its own database
 * in a fresh temporary directory and removes it afterwards. */
#include "unit.h"
#include "directory/directory.h"
#include "lib/xalloc.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct tdir {
	char root[64];
	char *path;
	struct directory *d;
};

static void tdir_open(struct tdir *t)
{
	snprintf(t->root, sizeof(t->root), "/tmp/posthorn-test-dir-XXXXXX");
	if (mkdtemp(t->root) == NULL) {
		perror("mkdtemp");
		abort();
	}
	/* a sub-directory that does not exist yet: open must create it */
	t->path = xasprintf("%s/db/directory.sqlite", t->root);
	const char *err = NULL;
	t->d = directory_open(t->path, true, &err);
	if (t->d == NULL) {
		fprintf(stderr, "directory_open: %s\n", err);
		abort();
	}
}

static void tdir_close(struct tdir *t)
{
	directory_close(&t->d);
	const char *suffix[] = { "", "-wal", "-shm" };
	for (size_t i = 0; i < 3; i++) {
		char *p = xasprintf("%s%s", t->path, suffix[i]);
		unlink(p);
		free(p);
	}
	char *db = xasprintf("%s/db", t->root);
	rmdir(db);
	free(db);
	rmdir(t->root);
	free(t->path);
}

static int must_rc;
static const char *must_err;
#define E (&must_err)

static void ok(int rc, const char *what, int line)
{
	if (rc != 0) {
		fprintf(stderr, "  %s:%d: %s failed: %s\n", __FILE__, line, what,
		        must_err ? must_err : "?");
		unit_failures++;
	}
}
#define OK(call) ok((must_err = NULL, must_rc = (call)), #call, __LINE__)

#define PW "correct horse battery"

/* The shared fixture:
 *   domains  example.org (primary), example.net, other.test (no users)
 *   users    alice, bob, list+admin @example.org; carol@example.net
 *   aliases  sales → alice, bob, partner@remote.test
 *            team → sales, carol@example.net, Bob@Example.ORG, alice
 *            loop1 → loop2; loop2 → loop1, alice   (a cycle)
 *            self → self, bob                       (self-reference)
 *            ghost → nobody@example.org             (dangling)
 *            fwd@example.net → Someone@Remote.Test  (remote only)
 *            info@example.net → sales+x@example.org (plus on an alias) */
static void fixture(struct tdir *t)
{
	tdir_open(t);
	struct directory *d = t->d;
	OK(directory_domain_add(d, "example.org", E));
	OK(directory_domain_add(d, "Example.NET", E));
	OK(directory_domain_add(d, "other.test", E));
	OK(directory_user_add(d, "alice@example.org", PW, 0, E));
	OK(directory_user_add(d, "Bob@Example.org", PW, 10 * 1024 * 1024, E));
	OK(directory_user_add(d, "list+admin@example.org", PW, 0, E));
	OK(directory_user_add(d, "carol@example.net", PW, 0, E));
	static const char *const aliases[][2] = {
		{ "sales@example.org", "alice@example.org" },
		{ "sales@example.org", "bob@example.org" },
		{ "sales@example.org", "partner@remote.test" },
		{ "team@example.org", "sales@example.org" },
		{ "team@example.org", "carol@example.net" },
		{ "team@example.org", "Bob@Example.ORG" },
		{ "team@example.org", "alice@example.org" },
		{ "loop1@example.org", "loop2@example.org" },
		{ "loop2@example.org", "loop1@example.org" },
		{ "loop2@example.org", "alice@example.org" },
		{ "self@example.org", "self@example.org" },
		{ "self@example.org", "bob@example.org" },
		{ "ghost@example.org", "nobody@example.org" },
		{ "fwd@example.net", "Someone@Remote.Test" },
		{ "info@example.net", "sales+x@example.org" },
	};
	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
		OK(directory_alias_add(d, aliases[i][0], aliases[i][1], E));
}

/* "a,b,c" from a strv, for compact comparisons */
static char *joined(const struct strv *s)
{
	size_t n = 1;
	for (size_t i = 0; i < s->n; i++)
		n += strlen(s->v[i]) + 1;
	char *r = xmalloc(n);
	r[0] = '\0';
	for (size_t i = 0; i < s->n; i++) {
		if (i)
			strcat(r, ",");
		strcat(r, s->v[i]);
	}
	return r;
}

static int64_t count_domains_n;
static void count_domain(const char *domain, int64_t created, void *arg)
{
	(void)domain;
	(void)created;
	(void)arg;
	count_domains_n++;
}

UNIT_TEST(test_directory_strv)
{
	struct strv s = { NULL, 0 };
	CHECK(!strv_contains(&s, "a"));
	for (int i = 0; i < 100; i++) {
		char buf[16];
		snprintf(buf, sizeof(buf), "x%d", i);
		strv_add(&s, buf);
	}
	CHECK_INT(s.n, 100);
	CHECK_STR(s.v[0], "x0");
	CHECK_STR(s.v[99], "x99");
	CHECK(s.v[100] == NULL);
	CHECK(strv_contains(&s, "x42"));
	CHECK(!strv_contains(&s, "x100"));
	strv_free(&s);
	CHECK(s.v == NULL);
	CHECK_INT(s.n, 0);
}

UNIT_TEST(test_directory_open)
{
	struct tdir t;
	tdir_open(&t);
	struct stat st;
	CHECK(stat(t.path, &st) == 0);
	CHECK_INT(st.st_mode & 0777, 0600);
	directory_close(&t.d);
	CHECK(t.d == NULL);
	directory_close(&t.d); /* twice is harmless */

	/* reopen without create: schema is there */
	const char *err = NULL;
	t.d = directory_open(t.path, false, &err);
	CHECK(t.d != NULL);
	OK(directory_domain_add(t.d, "example.org", E));
	directory_close(&t.d);

	/* missing file without create */
	char *missing = xasprintf("%s/nope.sqlite", t.root);
	err = NULL;
	struct directory *m = directory_open(missing, false, &err);
	CHECK(m == NULL);
	CHECK(err != NULL && strstr(err, missing) != NULL);
	CHECK(access(missing, F_OK) != 0);
	free(missing);

	/* a newer schema is refused, not guessed at */
	sqlite3 *db;
	CHECK(sqlite3_open(t.path, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'", NULL, NULL,
	                   NULL) == SQLITE_OK);
	sqlite3_close(db);
	err = NULL;
	m = directory_open(t.path, false, &err);
	CHECK(m == NULL);
	CHECK(err != NULL && strstr(err, "newer") != NULL);
	directory_close(&m);

	/* restore so tdir_close can clean up through a normal open */
	CHECK(sqlite3_open(t.path, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "UPDATE meta SET value = '1' WHERE key = 'schema_version'", NULL, NULL,
	                   NULL) == SQLITE_OK);
	sqlite3_close(db);
	t.d = directory_open(t.path, false, &err);
	CHECK(t.d != NULL);
	tdir_close(&t);
}

UNIT_TEST(test_directory_domains)
{
	struct tdir t;
	tdir_open(&t);
	struct directory *d = t.d;
	CHECK(directory_primary_domain(d) == NULL);
	OK(directory_domain_add(d, "Example.ORG", E));
	OK(directory_domain_add(d, "b.example", E));
	CHECK(directory_domain_is_local(d, "example.org"));
	CHECK(directory_domain_is_local(d, "EXAMPLE.org"));
	CHECK(!directory_domain_is_local(d, "example.com"));
	char *p = directory_primary_domain(d);
	CHECK_STR(p, "example.org");
	free(p);

	static const struct {
		const char *name;
		const char *err_has;
	} bad[] = {
		{ "example.org", "already exists" },
		{ "EXAMPLE.ORG", "already exists" },
		{ "", "malformed" },
		{ "-bad.example", "malformed" },
		{ "bad..example", "malformed" },
		{ "bad.example.", "malformed" },
		{ "under_score.example", "malformed" },
		{ "[192.0.2.1]", "malformed" },
		{ "sp ace.example", "malformed" },
		{ "a/b.example", "malformed" },
		{ "caf\xc3\xa9.example", "malformed" },
		{ "x.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "malformed" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *err = NULL;
		int rc = directory_domain_add(d, bad[i].name, &err);
		if (rc != -1 || err == NULL || strstr(err, bad[i].err_has) == NULL) {
			fprintf(stderr, "  domain_add(\"%s\"): got %d \"%s\", want -1 with \"%s\"\n",
			        bad[i].name, rc, err ? err : "", bad[i].err_has);
			unit_failures++;
		}
	}
	count_domains_n = 0;
	CHECK_INT(directory_domain_list(d, count_domain, NULL), 0);
	CHECK_INT(count_domains_n, 2);

	/* del refuses while users or aliases exist, unless forced */
	OK(directory_user_add(d, "u@b.example", PW, 0, E));
	OK(directory_alias_add(d, "a@b.example", "u@b.example", E));
	const char *err = NULL;
	CHECK_INT(directory_domain_del(d, "b.example", false, &err), -1);
	CHECK(err && strstr(err, "1 user and 1 alias") != NULL);
	CHECK(directory_domain_is_local(d, "b.example"));
	OK(directory_domain_del(d, "B.Example", true, E));
	CHECK(!directory_domain_is_local(d, "b.example"));
	CHECK_INT(directory_count_users(d), 0);
	CHECK_INT(directory_rcpt_kind(d, "a", "b.example", NULL), DIR_RCPT_REMOTE);
	err = NULL;
	CHECK_INT(directory_domain_del(d, "b.example", false, &err), -1);
	CHECK(err && strstr(err, "no such domain") != NULL);

	/* the primary moves to the next oldest when deleted */
	OK(directory_domain_add(d, "c.example", E));
	OK(directory_domain_del(d, "example.org", false, E));
	p = directory_primary_domain(d);
	CHECK_STR(p, "c.example");
	free(p);
	tdir_close(&t);
}

UNIT_TEST(test_directory_users)
{
	struct tdir t;
	fixture(&t);
	struct directory *d = t.d;
	CHECK_INT(directory_count_users(d), 4);

	static const struct {
		const char *address;
		const char *password;
		const char *err_has;
	} bad[] = {
		{ "alice@example.org", PW, "already exists" },
		{ "ALICE@Example.Org", PW, "already exists" },
		{ "sales@example.org", PW, "is an alias" },
		{ "zoe@example.com", PW, "domain example.com is not local: add it with 'posthorn domain add example.com'" },
		{ "zoe", PW, "malformed address 'zoe'" },
		{ "zoe@", PW, "malformed" },
		{ "@example.org", PW, "malformed" },
		{ "zo e@example.org", PW, "malformed" },
		{ "\"zoe\"@example.org", PW, "malformed" },
		{ "zoe@[192.0.2.1]", PW, "malformed" },
		{ "a/b@example.org", PW, "malformed" },
		{ ".zoe@example.org", PW, "malformed" },
		{ "zoe..x@example.org", PW, "malformed" },
		{ "z\xc3\xb6" "e@example.org", PW, "malformed" },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.org", PW, "malformed" },
		{ "zoe@example.org", "", "empty password" },
		{ "zoe@example.org", "short", "shorter than 8" },
		{ "zoe@example.org", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", "shorter than 8" },
		{ "zoe@example.org", "zoe", "shorter than 8" },
		{ "zoe.longname@example.org", "Zoe.Longname", "user name" },
		{ "zoe@example.org", "ZOE@example.org", "the address" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *err = NULL;
		int rc = directory_user_add(d, bad[i].address, bad[i].password, 0, &err);
		if (rc != -1 || err == NULL || strstr(err, bad[i].err_has) == NULL) {
			fprintf(stderr, "  user_add(\"%s\"): got %d \"%s\", want -1 with \"%s\"\n",
			        bad[i].address, rc, err ? err : "", bad[i].err_has);
			unit_failures++;
		}
	}
	/* nothing was changed by the refusals */
	CHECK_INT(directory_count_users(d), 4);

	/* accepted: 8 characters exactly, and the UTF-8 count */
	OK(directory_user_add(d, "zoe@example.org", "12345678", 0, E));
	OK(directory_user_add(d, "o'brien@example.org", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 0, E));
	CHECK_INT(directory_count_users(d), 6);

	/* quota */
	uint64_t q = 99;
	CHECK_INT(directory_user_quota(d, "bob@example.org", &q), 0);
	CHECK_INT(q, 10 * 1024 * 1024);
	q = 99;
	CHECK_INT(directory_user_quota(d, "BOB@EXAMPLE.ORG", &q), 0);
	CHECK_INT(q, 10 * 1024 * 1024);
	q = 99;
	CHECK_INT(directory_user_quota(d, "alice@example.org", &q), 0);
	CHECK_INT(q, 0);
	/* no such user: nothing to limit */
	q = 99;
	CHECK_INT(directory_user_quota(d, "nobody@example.org", &q), 0);
	CHECK_INT(q, 0);
	q = 99;
	CHECK_INT(directory_user_quota(d, "no-at-sign", &q), 0);
	CHECK_INT(q, 0);
	OK(directory_user_set_quota(d, "Alice@Example.org", 2ULL * 1024 * 1024 * 1024, E));
	CHECK_INT(directory_user_quota(d, "alice@example.org", &q), 0);
	CHECK_INT(q, 2LL * 1024 * 1024 * 1024);
	const char *err = NULL;
	CHECK_INT(directory_user_set_quota(d, "nobody@example.org", 1, &err), -1);
	CHECK(err && strstr(err, "no such user nobody@example.org"));
	err = NULL;
	CHECK_INT(directory_user_set_quota(d, "alice@example.org", UINT64_MAX, &err), -1);
	CHECK(err && strstr(err, "too large"));

	/* passwd */
	OK(directory_user_passwd(d, "zoe@example.org", "new password 1", E));
	CHECK_INT(directory_auth(d, "zoe@example.org", "12345678", NULL), 0);
	CHECK_INT(directory_auth(d, "zoe@example.org", "new password 1", NULL), 1);
	err = NULL;
	CHECK_INT(directory_user_passwd(d, "zoe@example.org", "zoe", &err), -1);
	CHECK(err && strstr(err, "shorter"));
	err = NULL;
	CHECK_INT(directory_user_passwd(d, "nobody@example.org", PW, &err), -1);
	CHECK(err && strstr(err, "no such user"));
	CHECK_INT(directory_auth(d, "zoe@example.org", "new password 1", NULL), 1);

	/* del */
	OK(directory_user_del(d, "ZOE@example.org", E));
	CHECK_INT(directory_rcpt_kind(d, "zoe", "example.org", NULL), DIR_RCPT_UNKNOWN);
	err = NULL;
	CHECK_INT(directory_user_del(d, "zoe@example.org", &err), -1);
	CHECK(err && strstr(err, "no such user"));
	CHECK_INT(directory_count_users(d), 5);
	tdir_close(&t);
}

struct ulist {
	char buf[512];
	size_t n;
};
static void collect_user(const struct dir_user_info *u, void *arg)
{
	struct ulist *l = arg;
	size_t len = strlen(l->buf);
	snprintf(l->buf + len, sizeof(l->buf) - len, "%s%s:%llu", len ? "," : "", u->address,
	         (unsigned long long)u->quota);
	l->n++;
}
static void collect_alias(const char *address, const char *target, void *arg)
{
	struct ulist *l = arg;
	size_t len = strlen(l->buf);
	if (l->n < 3)
		snprintf(l->buf + len, sizeof(l->buf) - len, "%s%s>%s", len ? "," : "", address, target);
	l->n++;
}

UNIT_TEST(test_directory_lists)
{
	struct tdir t;
	fixture(&t);
	struct ulist l = { "", 0 };
	CHECK_INT(directory_user_list(t.d, NULL, collect_user, &l), 0);
	CHECK_STR(l.buf, "carol@example.net:0,alice@example.org:0,bob@example.org:10485760,"
	                 "list+admin@example.org:0");
	struct ulist l2 = { "", 0 };
	CHECK_INT(directory_user_list(t.d, "EXAMPLE.NET", collect_user, &l2), 0);
	CHECK_STR(l2.buf, "carol@example.net:0");
	struct ulist l3 = { "", 0 };
	CHECK_INT(directory_user_list(t.d, "other.test", collect_user, &l3), 0);
	CHECK_INT(l3.n, 0);
	struct ulist la = { "", 0 };
	CHECK_INT(directory_alias_list(t.d, collect_alias, &la), 0);
	CHECK_INT(la.n, 15);
	CHECK_STR(la.buf, "fwd@example.net>Someone@remote.test,info@example.net>sales+x@example.org,"
	                  "ghost@example.org>nobody@example.org");
	tdir_close(&t);
}

UNIT_TEST(test_directory_aliases)
{
	struct tdir t;
	fixture(&t);
	struct directory *d = t.d;
	static const struct {
		const char *address, *target, *err_has;
	} bad[] = {
		{ "alice@example.org", "bob@example.org", "is a user: an alias may not shadow" },
		{ "ALICE@example.org", "bob@example.org", "is a user" },
		{ "x@example.com", "bob@example.org", "domain example.com is not local" },
		{ "sales@example.org", "alice@example.org", "already forwards to alice@example.org" },
		{ "sales@example.org", "ALICE@EXAMPLE.ORG", "already forwards" },
		{ "x@example.org", "not an address", "malformed target" },
		{ "x@example.org", "", "malformed target" },
		{ "bad address@example.org", "bob@example.org", "malformed address" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *err = NULL;
		int rc = directory_alias_add(d, bad[i].address, bad[i].target, &err);
		if (rc != -1 || err == NULL || strstr(err, bad[i].err_has) == NULL) {
			fprintf(stderr, "  alias_add(\"%s\", \"%s\"): got %d \"%s\", want -1 with \"%s\"\n",
			        bad[i].address, bad[i].target, rc, err ? err : "", bad[i].err_has);
			unit_failures++;
		}
	}
	CHECK_INT(directory_rcpt_kind(d, "x", "example.org", NULL), DIR_RCPT_UNKNOWN);

	/* remote targets keep the case of their local part */
	OK(directory_alias_add(d, "x@example.org", "John.Doe@Remote.Test", E));
	OK(directory_alias_del(d, "x@example.org", "john.doe@remote.test", E));
	CHECK_INT(directory_rcpt_kind(d, "x", "example.org", NULL), DIR_RCPT_UNKNOWN);

	/* del one target, del all, del unknown */
	OK(directory_alias_del(d, "Sales@Example.org", "Bob@example.org", E));
	struct strv loc = { 0 }, rem = { 0 }, unk = { 0 };
	const char *err = NULL;
	CHECK_INT(directory_expand(d, "sales@example.org", &loc, &rem, &unk, &err), 0);
	char *j = joined(&loc);
	CHECK_STR(j, "alice@example.org");
	free(j);
	strv_free(&loc);
	strv_free(&rem);
	strv_free(&unk);
	err = NULL;
	CHECK_INT(directory_alias_del(d, "sales@example.org", "bob@example.org", &err), -1);
	CHECK(err && strstr(err, "does not forward to"));
	OK(directory_alias_del(d, "sales@example.org", NULL, E));
	CHECK_INT(directory_rcpt_kind(d, "sales", "example.org", NULL), DIR_RCPT_UNKNOWN);
	err = NULL;
	CHECK_INT(directory_alias_del(d, "sales@example.org", NULL, &err), -1);
	CHECK(err && strstr(err, "no such alias sales@example.org"));
	tdir_close(&t);
}

UNIT_TEST(test_directory_rcpt_kind)
{
	struct tdir t;
	fixture(&t);
	static const struct {
		const char *local, *domain;
		enum dir_rcpt_kind want;
		const char *mailbox;
	} rows[] = {
		{ "alice", "example.org", DIR_RCPT_LOCAL, "alice@example.org" },
		{ "ALICE", "Example.ORG", DIR_RCPT_LOCAL, "alice@example.org" },
		{ "bob", "example.org", DIR_RCPT_LOCAL, "bob@example.org" },
		{ "carol", "example.net", DIR_RCPT_LOCAL, "carol@example.net" },
		{ "carol", "example.org", DIR_RCPT_UNKNOWN, NULL },
		{ "alice", "example.com", DIR_RCPT_REMOTE, NULL },
		{ "anyone", "remote.test", DIR_RCPT_REMOTE, NULL },
		/* plus addressing */
		{ "alice+news", "example.org", DIR_RCPT_LOCAL, "alice@example.org" },
		{ "Alice+News+More", "example.org", DIR_RCPT_LOCAL, "alice@example.org" },
		{ "alice+", "example.org", DIR_RCPT_LOCAL, "alice@example.org" },
		{ "+alice", "example.org", DIR_RCPT_UNKNOWN, NULL },
		{ "list+admin", "example.org", DIR_RCPT_LOCAL, "list+admin@example.org" },
		{ "list+other", "example.org", DIR_RCPT_UNKNOWN, NULL },
		{ "nobody+tag", "example.org", DIR_RCPT_UNKNOWN, NULL },
		{ "sales+x", "example.org", DIR_RCPT_ALIAS, NULL },
		/* aliases */
		{ "sales", "example.org", DIR_RCPT_ALIAS, NULL },
		{ "SALES", "EXAMPLE.ORG", DIR_RCPT_ALIAS, NULL },
		{ "fwd", "example.net", DIR_RCPT_ALIAS, NULL },
		{ "sales", "example.net", DIR_RCPT_UNKNOWN, NULL },
		/* postmaster: no user or alias anywhere → first user of the
		 * primary domain, for every local domain */
		{ "postmaster", "example.org", DIR_RCPT_LOCAL, "alice@example.org" },
		{ "PostMaster", "example.org", DIR_RCPT_LOCAL, "alice@example.org" },
		{ "postmaster+x", "example.org", DIR_RCPT_LOCAL, "alice@example.org" },
		{ "postmaster", "example.net", DIR_RCPT_LOCAL, "alice@example.org" },
		{ "postmaster", "other.test", DIR_RCPT_LOCAL, "alice@example.org" },
		{ "postmaster", "remote.test", DIR_RCPT_REMOTE, NULL },
		/* odd input is just not found */
		{ "", "example.org", DIR_RCPT_UNKNOWN, NULL },
		{ "a b", "example.org", DIR_RCPT_UNKNOWN, NULL },
		{ "", "", DIR_RCPT_REMOTE, NULL },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char *mb = (char *)"unset";
		enum dir_rcpt_kind k = directory_rcpt_kind(t.d, rows[i].local, rows[i].domain, &mb);
		if (k != rows[i].want || (mb == NULL) != (rows[i].mailbox == NULL) ||
		    (mb && strcmp(mb, rows[i].mailbox) != 0)) {
			fprintf(stderr, "  rcpt_kind(\"%s\", \"%s\"): got %d \"%s\", want %d \"%s\"\n",
			        rows[i].local, rows[i].domain, k, mb ? mb : "(null)", rows[i].want,
			        rows[i].mailbox ? rows[i].mailbox : "(null)");
			unit_failures++;
		}
		free(mb);
	}
	/* mailbox_r may be NULL */
	CHECK_INT(directory_rcpt_kind(t.d, "alice", "example.org", NULL), DIR_RCPT_LOCAL);
	tdir_close(&t);
}

UNIT_TEST(test_directory_postmaster)
{
	struct tdir t;
	tdir_open(&t);
	struct directory *d = t.d;
	/* primary a.test has no users; b.test has one */
	OK(directory_domain_add(d, "a.test", E));
	OK(directory_domain_add(d, "b.test", E));
	CHECK_INT(directory_rcpt_kind(d, "postmaster", "a.test", NULL), DIR_RCPT_UNKNOWN);
	CHECK_INT(directory_rcpt_kind(d, "postmaster", "b.test", NULL), DIR_RCPT_UNKNOWN);
	OK(directory_user_add(d, "zed@b.test", PW, 0, E));
	OK(directory_user_add(d, "amy@b.test", PW, 0, E));
	char *mb = NULL;
	CHECK_INT(directory_rcpt_kind(d, "postmaster", "b.test", &mb), DIR_RCPT_LOCAL);
	CHECK_STR(mb, "zed@b.test"); /* first created, not first by name */
	free(mb);
	CHECK_INT(directory_rcpt_kind(d, "postmaster", "a.test", NULL), DIR_RCPT_UNKNOWN);

	/* an explicit postmaster alias in the primary serves every domain */
	OK(directory_alias_add(d, "postmaster@a.test", "amy@b.test", E));
	OK(directory_alias_add(d, "postmaster@a.test", "admin@remote.test", E));
	CHECK_INT(directory_rcpt_kind(d, "postmaster", "a.test", NULL), DIR_RCPT_ALIAS);
	CHECK_INT(directory_rcpt_kind(d, "postmaster", "b.test", NULL), DIR_RCPT_ALIAS);
	struct strv loc = { 0 }, rem = { 0 }, unk = { 0 };
	const char *err = NULL;
	CHECK_INT(directory_expand(d, "Postmaster@B.test", &loc, &rem, &unk, &err), 0);
	char *jl = joined(&loc), *jr = joined(&rem), *ju = joined(&unk);
	CHECK_STR(jl, "amy@b.test");
	CHECK_STR(jr, "admin@remote.test");
	CHECK_STR(ju, "");
	free(jl);
	free(jr);
	free(ju);
	strv_free(&loc);
	strv_free(&rem);
	strv_free(&unk);

	/* a user postmaster of its own domain wins */
	OK(directory_user_add(d, "postmaster@b.test", PW, 0, E));
	mb = NULL;
	CHECK_INT(directory_rcpt_kind(d, "POSTMASTER", "b.test", &mb), DIR_RCPT_LOCAL);
	CHECK_STR(mb, "postmaster@b.test");
	free(mb);
	tdir_close(&t);
}

UNIT_TEST(test_directory_expand)
{
	struct tdir t;
	fixture(&t);
	static const struct {
		const char *address;
		int rc;
		const char *local, *remote, *unknown;
	} rows[] = {
		{ "alice@example.org", 0, "alice@example.org", "", "" },
		{ "Alice+tag@EXAMPLE.org", 0, "alice@example.org", "", "" },
		{ "someone@remote.test", 0, "", "someone@remote.test", "" },
		{ "Some.One@REMOTE.test", 0, "", "Some.One@remote.test", "" },
		{ "nobody@example.org", 0, "", "", "nobody@example.org" },
		/* one to many with a remote target */
		{ "sales@example.org", 0, "alice@example.org,bob@example.org", "partner@remote.test", "" },
		/* nested, duplicates collapse (bob twice, alice three times) */
		{ "team@example.org", 0, "alice@example.org,bob@example.org,carol@example.net",
		  "partner@remote.test", "" },
		/* a cycle ends; the other target still arrives */
		{ "loop1@example.org", 0, "alice@example.org", "", "" },
		{ "loop2@example.org", 0, "alice@example.org", "", "" },
		/* self reference: no mailbox "self", so only bob */
		{ "self@example.org", 0, "bob@example.org", "", "" },
		{ "ghost@example.org", 0, "", "", "nobody@example.org" },
		{ "fwd@example.net", 0, "", "Someone@remote.test", "" },
		/* plus addressing on an alias, reached through another alias */
		{ "info@example.net", 0, "alice@example.org,bob@example.org", "partner@remote.test", "" },
		{ "postmaster@example.net", 0, "alice@example.org", "", "" },
		{ "no-at-sign", -1, "", "", "" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct strv loc = { 0 }, rem = { 0 }, unk = { 0 };
		const char *err = NULL;
		int rc = directory_expand(t.d, rows[i].address, &loc, &rem, &unk, &err);
		char *jl = joined(&loc), *jr = joined(&rem), *ju = joined(&unk);
		if (rc != rows[i].rc || strcmp(jl, rows[i].local) != 0 || strcmp(jr, rows[i].remote) != 0 ||
		    strcmp(ju, rows[i].unknown) != 0) {
			fprintf(stderr,
			        "  expand(\"%s\"): got %d local=[%s] remote=[%s] unknown=[%s] (%s),\n"
			        "  want %d local=[%s] remote=[%s] unknown=[%s]\n",
			        rows[i].address, rc, jl, jr, ju, err ? err : "", rows[i].rc, rows[i].local,
			        rows[i].remote, rows[i].unknown);
			unit_failures++;
		}
		free(jl);
		free(jr);
		free(ju);
		strv_free(&loc);
		strv_free(&rem);
		strv_free(&unk);
	}

	/* results accumulate across calls without duplicates */
	struct strv loc = { 0 }, rem = { 0 }, unk = { 0 };
	const char *err = NULL;
	CHECK_INT(directory_expand(t.d, "sales@example.org", &loc, &rem, &unk, &err), 0);
	CHECK_INT(directory_expand(t.d, "team@example.org", &loc, &rem, &unk, &err), 0);
	CHECK_INT(loc.n, 3);
	CHECK_INT(rem.n, 1);
	strv_free(&loc);
	strv_free(&rem);
	strv_free(&unk);
	tdir_close(&t);
}

/* Inserts alias rows directly (one transaction), for the limit tests that
 * need more rows than is practical through the API. */
static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *db;
	CHECK(sqlite3_open(path, &db) == SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		fprintf(stderr, "  raw_exec: %s\n", msg ? msg : "?");
		unit_failures++;
	}
	sqlite3_free(msg);
	sqlite3_close(db);
}

UNIT_TEST(test_directory_expand_limits)
{
	struct tdir t;
	tdir_open(&t);
	struct directory *d = t.d;
	OK(directory_domain_add(d, "example.org", E));
	OK(directory_user_add(d, "end@example.org", PW, 0, E));

	/* chain c0 → c1 → ... → c(N) → end: DIRECTORY_ALIAS_DEPTH aliases
	 * deep is fine, one more is refused */
	char sql[256];
	for (int i = 0; i < DIRECTORY_ALIAS_DEPTH; i++) {
		if (i + 1 < DIRECTORY_ALIAS_DEPTH)
			snprintf(sql, sizeof(sql),
			         "INSERT INTO aliases VALUES ('c%d', 'example.org', 'c%d@example.org')", i, i + 1);
		else
			snprintf(sql, sizeof(sql),
			         "INSERT INTO aliases VALUES ('c%d', 'example.org', 'end@example.org')", i);
		raw_exec(t.path, sql);
	}
	struct strv loc = { 0 }, rem = { 0 }, unk = { 0 };
	const char *err = NULL;
	CHECK_INT(directory_expand(d, "c0@example.org", &loc, &rem, &unk, &err), 0);
	CHECK_INT(loc.n, 1);
	strv_free(&loc);
	raw_exec(t.path, "INSERT INTO aliases VALUES ('deeper', 'example.org', 'c0@example.org')");
	err = NULL;
	CHECK_INT(directory_expand(d, "deeper@example.org", &loc, &rem, &unk, &err), -1);
	CHECK(err && strstr(err, "alias chain longer than"));
	strv_free(&loc);
	strv_free(&rem);
	strv_free(&unk);

	/* fan-out: 40 aliases of 30 remote targets each is > 1000 */
	raw_exec(t.path,
	         "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 39),"
	         " m(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM m WHERE j < 29)"
	         " INSERT INTO aliases SELECT 'all', 'example.org', 'g' || i || '@example.org' FROM n"
	         " UNION ALL SELECT 'g' || i, 'example.org', 'r' || i || '-' || j || '@remote.test'"
	         " FROM n, m");
	err = NULL;
	CHECK_INT(directory_expand(d, "all@example.org", &loc, &rem, &unk, &err), -1);
	CHECK(err && strstr(err, "more than 1000"));
	strv_free(&loc);
	strv_free(&rem);
	strv_free(&unk);
	/* one group alone is fine */
	CHECK_INT(directory_expand(d, "g7@example.org", &loc, &rem, &unk, &err), 0);
	CHECK_INT(rem.n, 30);
	strv_free(&loc);
	strv_free(&rem);
	strv_free(&unk);
	tdir_close(&t);
}

UNIT_TEST(test_directory_auth)
{
	struct tdir t;
	fixture(&t);
	static const struct {
		const char *login, *password;
		int want;
		const char *canonical;
	} rows[] = {
		{ "alice@example.org", PW, 1, "alice@example.org" },
		{ "ALICE@Example.ORG", PW, 1, "alice@example.org" },
		{ "alice", PW, 1, "alice@example.org" }, /* bare: primary domain */
		{ "carol", PW, 0, NULL },                /* not in the primary */
		{ "carol@example.net", PW, 1, "carol@example.net" },
		{ "alice@example.org", "Correct horse battery", 0, NULL },
		{ "alice@example.org", PW "x", 0, NULL },
		{ "alice@example.org", "", 0, NULL },
		{ "nobody@example.org", PW, 0, NULL },
		{ "alice@remote.test", PW, 0, NULL },
		{ "alice+tag@example.org", PW, 0, NULL },
		{ "sales@example.org", PW, 0, NULL },
		{ "", PW, 0, NULL },
		{ "@", PW, 0, NULL },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char *canon = (char *)"unset";
		int r = directory_auth(t.d, rows[i].login, rows[i].password, &canon);
		if (r != rows[i].want || (canon == NULL) != (rows[i].canonical == NULL) ||
		    (canon && strcmp(canon, rows[i].canonical) != 0)) {
			fprintf(stderr, "  auth(\"%s\", \"%s\"): got %d \"%s\", want %d \"%s\"\n", rows[i].login,
			        rows[i].password, r, canon ? canon : "(null)", rows[i].want,
			        rows[i].canonical ? rows[i].canonical : "(null)");
			unit_failures++;
		}
		free(canon);
	}
	CHECK_INT(directory_auth(t.d, "alice@example.org", PW, NULL), 1);

	/* a very long password is refused without hashing */
	char *longpw = xmalloc(5000);
	memset(longpw, 'x', 4999);
	longpw[4999] = '\0';
	CHECK_INT(directory_auth(t.d, "alice@example.org", longpw, NULL), 0);
	free(longpw);
	tdir_close(&t);
}

UNIT_TEST(test_directory_hash_password)
{
	char *h1 = directory_hash_password("secret password");
	char *h2 = directory_hash_password("secret password");
	CHECK(h1 != NULL && h2 != NULL);
	CHECK(strncmp(h1, "$y$", 3) == 0 || strncmp(h1, "$6$", 3) == 0);
	CHECK(strcmp(h1, h2) != 0); /* salted */
	free(h1);
	free(h2);
}
