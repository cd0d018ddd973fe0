/* maildir — see maildir.h. Runs wherever it is called (router worker
 * threads, POP3 worker jobs, the CLI); every function blocks on the file
 * system, so never call one on the event loop except where a caller says
 * why it is acceptable. Reentrant: no shared state but an atomic counter.
 *
 * Layout: DATA/mail/<domain>/<user>/{cur,new,tmp}, directories 0700,
 * files 0600, created on demand by the first delivery.
 *
 * Invariants:
 *  - A mailbox name becomes a path only after both parts passed
 *    part_ok(): not empty, no leading '.', no '/', no control characters,
 *    no ASCII upper case (the directory stores names in lower case; a
 *    mixed-case name reaching us is a caller bug, and accepting it would
 *    silently split one user's mail over two directories).
 *  - A message in new/ or cur/ is always complete: it is written and
 *    fsync'd under tmp/ first and only then link()ed into new/.
 *  - The ",S=<size>" in a name is the exact octet count of the file.
 *
 * Durability contract: store_maildir_deliver() returns 0 only after the
 * message file is fsync'd, close() succeeded, the file is linked into new/
 * and new/ itself is fsync'd. A Maildir created here has its new
 * directories fsync'd into their parents before any message lands in it.
 *
 * Deviation from "tmp/<name>": the temporary file is
 * tmp/<name>.<pid>_<n>. Router names are deterministic (queue id +
 * recipient index), so a plain tmp/<name> would either block the
 * redelivery after a crash (O_EXCL fails on the leftover) or, if we
 * unlinked the leftover, let two concurrent deliveries of one message
 * link each other's half-written file. With a per-attempt tmp name both
 * attempts write complete files and link() decides: the loser sees
 * EEXIST. Leftovers from crashes are swept by store_maildir_list() after
 * MAILDIR_TMP_STALE_SECS, as the Maildir spec asks of readers.
 *
 * Errors: -1 with a message in *error_r (thread-local storage, valid
 * until the next call in the same thread) or, where there is no error_r,
 * with errno set. Nothing here logs. */
#include "store/maildir.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A file name component: NAME_MAX (255) on every Linux file system. */
#define MAILDIR_NAME_MAX NAME_MAX
/* Temporary files older than this are leftovers of a crashed delivery;
 * 36 hours is the figure from the Maildir specification. */
#define MAILDIR_TMP_STALE_SECS (36 * 3600)
/* Room for the tmp suffix ".<pid>_<counter>" (pid <= 10 digits,
 * counter <= 20 digits, separators). */
#define MAILDIR_TMP_SUFFIX_MAX 34

static _Thread_local char errbuf[512];

static const char *seterr(const char *what, const char *path, int err)
{
	int n = snprintf(errbuf, sizeof(errbuf), "%s(%s): %s", what, path, strerror(err));
	if (n < 0)
		return "maildir error";
	return errbuf;
}

/* One part of a mailbox name (user or domain) that is safe as a single
 * path component. Bytes >= 0x80 are allowed (UTF-8 local parts). */
static bool part_ok(const char *s, size_t n)
{
	if (n == 0 || n > MAILDIR_NAME_MAX || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || c == '/' || (c >= 'A' && c <= 'Z'))
			return false;
	}
	return true;
}

/* A delivery base name: a single path component without the Maildir
 * info separator ':' (it would make the name look like a cur/ name). */
static bool unique_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || s[0] == '.' || n > MAILDIR_NAME_MAX - MAILDIR_TMP_SUFFIX_MAX - 24)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c == 0x7f || c == '/' || c == ':')
			return false;
	}
	return true;
}

int store_maildir_path(char *buf, size_t n, const char *data_dir, const char *mailbox)
{
	const char *at = strrchr(mailbox, '@');
	if (at == NULL || !part_ok(mailbox, (size_t)(at - mailbox)) || !part_ok(at + 1, strlen(at + 1))) {
		errno = EINVAL;
		return -1;
	}
	int k = snprintf(buf, n, "%s/mail/%s/%.*s", data_dir, at + 1, (int)(at - mailbox), mailbox);
	if (k < 0 || (size_t)k >= n) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

static int subpath(char *buf, size_t n, const char *path, const char *sub)
{
	int k = snprintf(buf, n, "%s/%s", path, sub);
	if (k < 0 || (size_t)k >= n) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int store_maildir_create(const char *path, const char **error_r)
{
	static const char *const subs[] = { "cur", "new", "tmp" };
	char p[PATH_MAX];
	bool complete = true;
	for (size_t i = 0; i < 3; i++) {
		if (subpath(p, sizeof(p), path, subs[i]) < 0) {
			*error_r = seterr("maildir", path, errno);
			return -1;
		}
		if (!fsutil_is_dir(p))
			complete = false;
	}
	if (complete)
		return 0;

	const char *err;
	if (fsutil_mkdir_p(path, 0700, &err) < 0) {
		int k = snprintf(errbuf, sizeof(errbuf), "mkdir(%s): %s", path, err);
		*error_r = k < 0 ? "mkdir failed" : errbuf;
		return -1;
	}
	for (size_t i = 0; i < 3; i++) {
		if (subpath(p, sizeof(p), path, subs[i]) < 0) {
			*error_r = seterr("maildir", path, errno);
			return -1;
		}
		if (mkdir(p, 0700) < 0 && errno != EEXIST) {
			*error_r = seterr("mkdir", p, errno);
			return -1;
		}
	}
	/* Make the new directory entries durable: the Maildir itself, its
	 * domain directory and mail/ (any of them may have just been made). */
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	for (int level = 0; level < 3; level++) {
		if (fsutil_fsync_dir(dir) < 0) {
			*error_r = seterr("fsync", dir, errno);
			return -1;
		}
		char parent[PATH_MAX];
		fsutil_dirname(dir, parent, sizeof(parent));
		snprintf(dir, sizeof(dir), "%s", parent);
	}
	return 0;
}

/* Does cur/ hold "<name>:..." (or exactly <name>)? 1 yes, 0 no, -1 error. */
static int cur_has(const char *path, const char *name)
{
	char p[PATH_MAX];
	if (subpath(p, sizeof(p), path, "cur") < 0)
		return -1;
	DIR *dir = opendir(p);
	if (dir == NULL)
		return errno == ENOENT ? 0 : -1;
	size_t n = strlen(name);
	int found = 0;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(dir)) != NULL) {
		if (strncmp(de->d_name, name, n) == 0 && (de->d_name[n] == ':' || de->d_name[n] == '\0')) {
			found = 1;
			break;
		}
	}
	int err = errno;
	closedir(dir);
	if (!found && err) {
		errno = err;
		return -1;
	}
	return found;
}

/* 1 when <name> is already in new/ or cur/, 0 not, -1 error (errno). */
static int find_existing(const char *path, const char *name)
{
	char p[PATH_MAX];
	int k = snprintf(p, sizeof(p), "%s/new/%s", path, name);
	if (k < 0 || (size_t)k >= sizeof(p)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	struct stat st;
	if (stat(p, &st) == 0)
		return 1;
	if (errno != ENOENT)
		return -1;
	return cur_has(path, name);
}

static int write_iov(int fd, const struct iovec *iov, int iovcnt)
{
	for (int i = 0; i < iovcnt; i++)
		if (iov[i].iov_len > 0 && fsutil_write_all(fd, iov[i].iov_base, iov[i].iov_len) < 0)
			return -1;
	return 0;
}

int store_maildir_deliver(const char *path, const char *unique, const struct iovec *iov, int iovcnt,
                          bool check_existing, bool *already_r, const char **error_r)
{
	static atomic_ulong counter;
	if (already_r)
		*already_r = false;
	if (!unique_ok(unique)) {
		*error_r = "invalid message file name";
		return -1;
	}
	if (iovcnt < 0) {
		*error_r = "invalid iovec count";
		return -1;
	}
	size_t size = 0;
	for (int i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > SIZE_MAX - size) {
			*error_r = "message too large";
			return -1;
		}
		size += iov[i].iov_len;
	}

	char name[MAILDIR_NAME_MAX + 1];
	int k = snprintf(name, sizeof(name), "%s,S=%zu", unique, size);
	if (k < 0 || (size_t)k >= sizeof(name)) {
		*error_r = "message file name too long";
		return -1;
	}
	if (store_maildir_create(path, error_r) < 0)
		return -1;

	if (check_existing) {
		int r = find_existing(path, name);
		if (r < 0) {
			*error_r = seterr("lookup", path, errno);
			return -1;
		}
		if (r > 0) {
			if (already_r)
				*already_r = true;
			return 0;
		}
	}

	char tmp[PATH_MAX], dst[PATH_MAX], newdir[PATH_MAX];
	unsigned long seq = atomic_fetch_add(&counter, 1);
	k = snprintf(tmp, sizeof(tmp), "%s/tmp/%s.%ld_%lu", path, name, (long)getpid(), seq);
	int k2 = snprintf(dst, sizeof(dst), "%s/new/%s", path, name);
	int k3 = snprintf(newdir, sizeof(newdir), "%s/new", path);
	if (k < 0 || k2 < 0 || k3 < 0 || (size_t)k >= sizeof(tmp) || (size_t)k2 >= sizeof(dst) ||
	    (size_t)k3 >= sizeof(newdir)) {
		*error_r = "maildir path too long";
		return -1;
	}

	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		*error_r = seterr("open", tmp, errno);
		return -1;
	}
	if (write_iov(fd, iov, iovcnt) < 0) {
		*error_r = seterr("write", tmp, errno);
		close(fd);
		unlink(tmp);
		return -1;
	}
	if (fsync(fd) < 0) {
		*error_r = seterr("fsync", tmp, errno);
		close(fd);
		unlink(tmp);
		return -1;
	}
	if (close(fd) < 0) {
		*error_r = seterr("close", tmp, errno);
		unlink(tmp);
		return -1;
	}
	if (link(tmp, dst) < 0) {
		int err = errno;
		unlink(tmp);
		if (err == EEXIST && check_existing) {
			/* a concurrent delivery of the same message won */
			if (already_r)
				*already_r = true;
			return 0;
		}
		*error_r = seterr("link", dst, err);
		return -1;
	}
	/* The message is safe in new/ once new/ is synced; a tmp/ leftover
	 * from a failed unlink is harmless and swept later. */
	(void)unlink(tmp);
	if (fsutil_fsync_dir(newdir) < 0) {
		*error_r = seterr("fsync", newdir, errno);
		return -1;
	}
	return 0;
}

/* Size from ",S=<digits>" in the part of the name before ':'. */
static bool name_size(const char *fname, uint64_t *size_r)
{
	const char *colon = strchr(fname, ':');
	size_t n = colon ? (size_t)(colon - fname) : strlen(fname);
	for (size_t i = 0; i + 3 < n; i++) {
		if (fname[i] != ',' || fname[i + 1] != 'S' || fname[i + 2] != '=')
			continue;
		uint64_t v = 0;
		size_t j = i + 3;
		if (j >= n || fname[j] < '0' || fname[j] > '9')
			return false;
		for (; j < n && fname[j] >= '0' && fname[j] <= '9'; j++) {
			if (v > (UINT64_MAX - 9) / 10)
				return false;
			v = v * 10 + (uint64_t)(fname[j] - '0');
		}
		if (j < n && fname[j] != ',')
			return false;
		*size_r = v;
		return true;
	}
	return false;
}

/* Calls cb for each regular, non-hidden file in path/sub. A missing
 * directory is empty. Entries that vanish while we look are skipped. */
static int scan(const char *path, const char *sub,
                int (*cb)(const char *sub, const char *fname, const struct stat *st, void *arg), void *arg)
{
	char dirpath[PATH_MAX];
	if (subpath(dirpath, sizeof(dirpath), path, sub) < 0)
		return -1;
	DIR *dir = opendir(dirpath);
	if (dir == NULL)
		return errno == ENOENT ? 0 : -1;
	int fd = dirfd(dir);
	struct dirent *de;
	int ret = 0;
	for (;;) {
		errno = 0;
		de = readdir(dir);
		if (de == NULL) {
			if (errno)
				ret = -1;
			break;
		}
		if (de->d_name[0] == '.')
			continue;
		struct stat st;
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			ret = -1;
			break;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		if (cb(sub, de->d_name, &st, arg) < 0) {
			ret = -1;
			break;
		}
	}
	int err = errno;
	closedir(dir);
	errno = err;
	return ret;
}

static int usage_cb(const char *sub, const char *fname, const struct stat *st, void *arg)
{
	uint64_t *total = arg;
	uint64_t size;
	(void)sub;
	if (!name_size(fname, &size))
		size = (uint64_t)st->st_size;
	*total += size;
	return 0;
}

int store_maildir_usage(const char *path, uint64_t *bytes_r)
{
	uint64_t total = 0;
	if (scan(path, "new", usage_cb, &total) < 0 || scan(path, "cur", usage_cb, &total) < 0)
		return -1;
	*bytes_r = total;
	return 0;
}

struct list_ctx {
	struct maildir_msg *v;
	size_t n, cap;
};

static int list_cb(const char *sub, const char *fname, const struct stat *st, void *arg)
{
	struct list_ctx *l = arg;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = xreallocarray(l->v, l->cap, sizeof(*l->v));
	}
	struct maildir_msg *m = &l->v[l->n++];
	m->name = xasprintf("%s/%s", sub, fname);
	const char *colon = strchr(fname, ':');
	m->uid = colon ? xstrndup(fname, (size_t)(colon - fname)) : xstrdup(fname);
	if (!name_size(fname, &m->size))
		m->size = (uint64_t)st->st_size;
	m->mtime = (int64_t)st->st_mtime;
	return 0;
}

static int msg_cmp(const void *a, const void *b)
{
	const struct maildir_msg *x = a, *y = b;
	if (x->mtime != y->mtime)
		return x->mtime < y->mtime ? -1 : 1;
	/* by uid first, so a new/ → cur/ move never changes the order */
	int c = strcmp(x->uid, y->uid);
	return c ? c : strcmp(x->name, y->name);
}

/* Best effort: remove tmp/ files older than MAILDIR_TMP_STALE_SECS. */
static void sweep_tmp(const char *path)
{
	char dirpath[PATH_MAX];
	if (subpath(dirpath, sizeof(dirpath), path, "tmp") < 0)
		return;
	DIR *dir = opendir(dirpath);
	if (dir == NULL)
		return;
	time_t now = time(NULL);
	struct dirent *de;
	while ((de = readdir(dir)) != NULL) {
		struct stat st;
		if (de->d_name[0] == '.' || fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISREG(st.st_mode) && now - st.st_mtime > MAILDIR_TMP_STALE_SECS)
			(void)unlinkat(dirfd(dir), de->d_name, 0);
	}
	closedir(dir);
}

int store_maildir_list(const char *path, struct maildir_msg **msgs_r, size_t *n_r)
{
	struct list_ctx l = { NULL, 0, 0 };
	if (scan(path, "new", list_cb, &l) < 0 || scan(path, "cur", list_cb, &l) < 0) {
		int err = errno;
		store_maildir_list_free(l.v, l.n);
		errno = err;
		return -1;
	}
	if (l.n > 1)
		qsort(l.v, l.n, sizeof(*l.v), msg_cmp);
	sweep_tmp(path);
	*msgs_r = l.v;
	*n_r = l.n;
	return 0;
}

void store_maildir_list_free(struct maildir_msg *msgs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(msgs[i].name);
		free(msgs[i].uid);
	}
	free(msgs);
}
