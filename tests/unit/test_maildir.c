/* Tests for store/maildir: mailbox name validation, delivery (content,
 * names, check_existing against new/ and cur/), listing order and uids,
 * usage, and the tmp/ sweep — all in a fresh temporary directory. */
#include "unit.h"
#include "store/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_rf(const char *path)
{
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static char *tempdir(void)
{
	char tmpl[] = "/tmp/posthorn-maildir-XXXXXX";
	char *d = mkdtemp(tmpl);
	if (d == NULL) {
		perror("mkdtemp");
		abort();
	}
	return strdup(d);
}

static size_t count_files(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static char *read_all(const char *path, size_t *len_r)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	char *buf = malloc(1 << 16);
	*len_r = fread(buf, 1, 1 << 16, f);
	fclose(f);
	return buf;
}

static void write_file(const char *path, const char *data, time_t mtime)
{
	FILE *f = fopen(path, "wb");
	if (f == NULL) {
		perror(path);
		abort();
	}
	fputs(data, f);
	fclose(f);
	if (mtime) {
		struct timespec ts[2] = { { mtime, 0 }, { mtime, 0 } };
		utimensat(AT_FDCWD, path, ts, 0);
	}
}

static const struct path_case {
	const char *mailbox;
	const char *want; /* NULL: refused */
} path_cases[] = {
	{ "bob@example.org", "/d/mail/example.org/bob" },
	{ "first.last+x@sub.example.org", "/d/mail/sub.example.org/first.last+x" },
	{ "a\"b@c\"@example.org", "/d/mail/example.org/a\"b@c\"" },
	{ "j\xc3\xb6rg@example.org", "/d/mail/example.org/j\xc3\xb6rg" },
	{ "bob", NULL },
	{ "@example.org", NULL },
	{ "bob@", NULL },
	{ ".bob@example.org", NULL },
	{ "..@example.org", NULL },
	{ "bob@..", NULL },
	{ "bob@.example.org", NULL },
	{ "b/ob@example.org", NULL },
	{ "bob@exa/mple.org", NULL },
	{ "bob@../../etc", NULL },
	{ "b\nob@example.org", NULL },
	{ "b\x7f@example.org", NULL },
	{ "bob@ex\tample.org", NULL },
	{ "Bob@example.org", NULL },
	{ "bob@Example.org", NULL },
};

UNIT_TEST(maildir_path)
{
	for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
		const struct path_case *c = &path_cases[i];
		char buf[PATH_MAX];
		int r = store_maildir_path(buf, sizeof(buf), "/d", c->mailbox);
		if (c->want == NULL) {
			if (r != -1) {
				fprintf(stderr, "  case %zu: \"%s\" accepted as \"%s\"\n", i, c->mailbox, buf);
				unit_failures++;
			}
			continue;
		}
		CHECK_INT(r, 0);
		if (r == 0)
			CHECK_STR(buf, c->want);
	}
	char small[10];
	CHECK_INT(store_maildir_path(small, sizeof(small), "/d", "bob@example.org"), -1);
}

UNIT_TEST(maildir_deliver)
{
	char *root = tempdir();
	char path[PATH_MAX], p[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/mail/example.org/bob", root);
	const char *err = "unset";
	bool already = true;

	struct iovec iov[3] = {
		{ "Return-Path: <a@b>\r\n", 20 },
		{ "", 0 },
		{ "Subject: hi\r\n\r\nbody\r\n", 21 },
	};
	CHECK_INT(store_maildir_deliver(path, "1700000000.Qabc.r0.host", iov, 3, true, &already, &err), 0);
	CHECK(!already);
	snprintf(p, sizeof(p), "%s/new/1700000000.Qabc.r0.host,S=41", path);
	size_t len = 0;
	char *data = read_all(p, &len);
	CHECK(data != NULL);
	if (data)
		CHECK_MEM(data, len, "Return-Path: <a@b>\r\nSubject: hi\r\n\r\nbody\r\n", (size_t)41);
	free(data);
	struct stat st;
	CHECK_INT(stat(p, &st), 0);
	CHECK_INT(st.st_mode & 0777, 0600);
	snprintf(p, sizeof(p), "%s/tmp", path);
	CHECK_INT(count_files(p), 0);
	CHECK_INT(stat(p, &st), 0);
	CHECK_INT(st.st_mode & 0777, 0700);
	snprintf(p, sizeof(p), "%s/cur", path);
	CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode));

	/* redelivery of the same name: detected in new/ */
	CHECK_INT(store_maildir_deliver(path, "1700000000.Qabc.r0.host", iov, 3, true, &already, &err), 0);
	CHECK(already);
	snprintf(p, sizeof(p), "%s/new", path);
	CHECK_INT(count_files(p), 1);

	/* without check_existing the same name is an error, not a duplicate */
	CHECK_INT(store_maildir_deliver(path, "1700000000.Qabc.r0.host", iov, 3, false, &already, &err), -1);
	CHECK(!already);
	CHECK_INT(count_files(p), 1);
	snprintf(p, sizeof(p), "%s/tmp", path);
	CHECK_INT(count_files(p), 0);

	/* once moved to cur/ with flags, still detected */
	char from[PATH_MAX + 64], to[PATH_MAX + 64];
	snprintf(from, sizeof(from), "%s/new/1700000000.Qabc.r0.host,S=41", path);
	snprintf(to, sizeof(to), "%s/cur/1700000000.Qabc.r0.host,S=41:2,S", path);
	CHECK_INT(rename(from, to), 0);
	already = false;
	CHECK_INT(store_maildir_deliver(path, "1700000000.Qabc.r0.host", iov, 3, true, &already, &err), 0);
	CHECK(already);
	snprintf(p, sizeof(p), "%s/new", path);
	CHECK_INT(count_files(p), 0);

	/* a different size is a different message name */
	already = true;
	CHECK_INT(store_maildir_deliver(path, "1700000000.Qabc.r0.host", iov, 1, true, &already, &err), 0);
	CHECK(!already);
	CHECK_INT(count_files(p), 1);

	/* a name that is a prefix of an existing one is not "existing" */
	already = true;
	CHECK_INT(store_maildir_deliver(path, "1700000000.Qabc.r0.hos", iov, 3, true, &already, &err), 0);
	CHECK(!already);

	/* empty message */
	CHECK_INT(store_maildir_deliver(path, "empty", NULL, 0, false, NULL, &err), 0);
	snprintf(p, sizeof(p), "%s/new/empty,S=0", path);
	CHECK_INT(stat(p, &st), 0);

	/* invalid unique names never become paths */
	static const char *const bad[] = { "", ".hidden", "a/b", "a:2,S", "a b", "a\nb", "..", "../x" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		CHECK_INT(store_maildir_deliver(path, bad[i], iov, 3, false, NULL, &err), -1);
		CHECK(err != NULL);
	}
	char longname[300];
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	CHECK_INT(store_maildir_deliver(path, longname, iov, 3, false, NULL, &err), -1);

	/* an unwritable location reports an error */
	err = NULL;
	CHECK_INT(store_maildir_deliver("/proc/posthorn-no/such", "x", iov, 3, false, NULL, &err), -1);
	CHECK(err != NULL);

	rm_rf(root);
	free(root);
}

UNIT_TEST(maildir_list_usage)
{
	char *root = tempdir();
	char path[PATH_MAX], p[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/mail/example.org/alice", root);
	struct maildir_msg *msgs = NULL;
	size_t n = 99;
	uint64_t used = 99;

	/* a mailbox that never got mail is empty, not an error */
	CHECK_INT(store_maildir_list(path, &msgs, &n), 0);
	CHECK_INT(n, 0);
	store_maildir_list_free(msgs, n);
	CHECK_INT(store_maildir_usage(path, &used), 0);
	CHECK_INT(used, 0);

	const char *err;
	CHECK_INT(store_maildir_create(path, &err), 0);
	CHECK_INT(store_maildir_create(path, &err), 0);
	/* names with ,S= (size taken from the name, not the 3-byte file),
	 * one without (stat), one in cur/ with flags, hidden and directory
	 * entries that must be skipped */
	snprintf(p, sizeof(p), "%s/new/300.b.host,S=1000", path);
	write_file(p, "abc", 300);
	snprintf(p, sizeof(p), "%s/cur/100.z.host,S=20:2,S", path);
	write_file(p, "12345678901234567890", 100);
	snprintf(p, sizeof(p), "%s/new/200.a.host", path);
	write_file(p, "hello", 200);
	snprintf(p, sizeof(p), "%s/new/300.a.host,S=7,W=9", path);
	write_file(p, "1234567", 300);
	snprintf(p, sizeof(p), "%s/new/.hidden", path);
	write_file(p, "x", 50);
	snprintf(p, sizeof(p), "%s/cur/subdir", path);
	mkdir(p, 0700);

	CHECK_INT(store_maildir_list(path, &msgs, &n), 0);
	CHECK_INT(n, 4);
	if (n == 4) {
		/* by (mtime, uid) */
		CHECK_STR(msgs[0].name, "cur/100.z.host,S=20:2,S");
		CHECK_STR(msgs[0].uid, "100.z.host,S=20");
		CHECK_INT(msgs[0].size, 20);
		CHECK_INT(msgs[0].mtime, 100);
		CHECK_STR(msgs[1].name, "new/200.a.host");
		CHECK_STR(msgs[1].uid, "200.a.host");
		CHECK_INT(msgs[1].size, 5);
		CHECK_STR(msgs[2].uid, "300.a.host,S=7,W=9");
		CHECK_INT(msgs[2].size, 7);
		CHECK_STR(msgs[3].name, "new/300.b.host,S=1000");
		CHECK_INT(msgs[3].size, 1000);
	}
	store_maildir_list_free(msgs, n);
	CHECK_INT(store_maildir_usage(path, &used), 0);
	CHECK_INT(used, 20 + 5 + 7 + 1000);

	/* a move new/ → cur/ keeps uid and position */
	char from[PATH_MAX + 64];
	snprintf(from, sizeof(from), "%s/new/300.a.host,S=7,W=9", path);
	snprintf(p, sizeof(p), "%s/cur/300.a.host,S=7,W=9:2,S", path);
	CHECK_INT(rename(from, p), 0);
	CHECK_INT(store_maildir_list(path, &msgs, &n), 0);
	CHECK_INT(n, 4);
	if (n == 4) {
		CHECK_STR(msgs[2].name, "cur/300.a.host,S=7,W=9:2,S");
		CHECK_STR(msgs[2].uid, "300.a.host,S=7,W=9");
	}
	store_maildir_list_free(msgs, n);

	/* delivered messages are listed with their exact size */
	struct iovec iov = { "x\r\n", 3 };
	CHECK_INT(store_maildir_deliver(path, "400.q.host", &iov, 1, false, NULL, &err), 0);
	CHECK_INT(store_maildir_usage(path, &used), 0);
	CHECK_INT(used, 20 + 5 + 7 + 1000 + 3);

	/* tmp/ leftovers older than 36 h are swept by a listing, fresh ones kept */
	snprintf(p, sizeof(p), "%s/tmp/old.leftover", path);
	write_file(p, "partial", time(NULL) - 40 * 3600);
	snprintf(p, sizeof(p), "%s/tmp/fresh.inprogress", path);
	write_file(p, "partial", 0);
	CHECK_INT(store_maildir_list(path, &msgs, &n), 0);
	CHECK_INT(n, 5);
	store_maildir_list_free(msgs, n);
	snprintf(p, sizeof(p), "%s/tmp", path);
	CHECK_INT(count_files(p), 1);
	snprintf(p, sizeof(p), "%s/tmp/fresh.inprogress", path);
	CHECK_INT(access(p, F_OK), 0);

	rm_rf(root);
	free(root);
}
