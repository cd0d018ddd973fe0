/* index — see index.h.
 *
 * Role: the daemon (one shared instance: router threads, the MTA, console
 * jobs on worker threads) and the CLI in offline mode (its own instance).
 *
 * Layout: every entry lives in a dense array (for scans) and in an open
 * hash table by id (for lookups). The strings messages share — sender,
 * client address, submitting account, fingerprint, recipient domains,
 * last error — are interned in one reference-counted table per kind, so
 * 98,000 copies of one spam cost one copy of each string, and a summary
 * groups by comparing pointers. Filters are evaluated once per distinct
 * string (a generation stamp on each interned string caches the verdict).
 *
 * Invariants: the mutex guards everything below it in struct
 * queue_index; it is never held across disk I/O, so the router and the MTA
 * (which update the index from their own threads and the event loop) wait
 * at most one in-memory pass. An entry's id is the file name in its
 * folder. During a load, removals are remembered so a file read just
 * before it was deleted is not re-added.
 *
 * Errors: unreadable files are skipped (the router moves broken pending
 * files to lost+found; the console can still show them by id); a folder
 * that cannot be read makes queue_index_load return -1 after reading the
 * rest. Nothing here writes to the queue. */
#include "queue/index.h"
#include "lib/net.h"
#include "lib/strbuf.h"
#include "lib/strset.h"
#include "lib/xalloc.h"
#include "mail/fingerprint.h"
#include "queue/state.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Threads reading envelopes during a load: file opens and page-cache
 * copies overlap well beyond the CPU count; 4 keeps a cold disk busy
 * without flooding it. */
#define INDEX_LOAD_THREADS 4
/* First read of a queue file: the envelope (and usually the headers)
 * fit; a longer envelope is read on, up to QUEUE_ENVELOPE_MAX. */
#define INDEX_READ_FIRST 8192
/* A file without a fingerprint line gets one computed from its start:
 * the headers plus the part of the body fingerprint_message hashes. */
#define INDEX_FP_READ (FINGERPRINT_BODY_MAX + 256 * 1024)
/* Progress callbacks during a load, at most every this many files. */
#define INDEX_PROGRESS_EVERY 2000

/* --- interned strings ---------------------------------------------------- */

struct atom {
	uint64_t hash;
	uint32_t refs;
	/* filter verdict cache: valid while qgen == index qgen */
	uint32_t qgen;
	bool qmatch;
	/* summary scratch: valid while sgen == index sgen */
	uint32_t sgen;
	uint32_t row; /* 1 + row in the summary's top list, 0: not in it */
	uint64_t cnt, bytes;
	const struct entry *sample;
	int64_t oldest, newest;
	char s[];
};

static struct atom atom_tomb_;
#define ATOM_TOMB (&atom_tomb_)

struct atab {
	struct atom **slots;
	size_t cap, n, used; /* used = live + tombstones */
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static void atab_rehash(struct atab *t, size_t ncap)
{
	struct atom **old = t->slots;
	size_t ocap = t->cap;
	t->slots = xcalloc(ncap, sizeof(*t->slots));
	t->cap = ncap;
	t->used = t->n;
	for (size_t i = 0; i < ocap; i++) {
		struct atom *a = old[i];
		if (a == NULL || a == ATOM_TOMB)
			continue;
		size_t j = (size_t)a->hash & (ncap - 1);
		while (t->slots[j])
			j = (j + 1) & (ncap - 1);
		t->slots[j] = a;
	}
	free(old);
}

/* The interned copy of s with one more reference; NULL for NULL. */
static struct atom *atom_get(struct atab *t, const char *s)
{
	if (s == NULL)
		return NULL;
	if ((t->used + 1) * 10 >= t->cap * 7)
		atab_rehash(t, t->cap == 0 ? 64 : (t->n + 1) * 10 >= t->cap * 4 ? t->cap * 2 : t->cap);
	uint64_t h = hash_str(s);
	size_t j = (size_t)h & (t->cap - 1), tomb = SIZE_MAX;
	for (;;) {
		struct atom *a = t->slots[j];
		if (a == NULL)
			break;
		if (a == ATOM_TOMB) {
			if (tomb == SIZE_MAX)
				tomb = j;
		} else if (a->hash == h && strcmp(a->s, s) == 0) {
			a->refs++;
			return a;
		}
		j = (j + 1) & (t->cap - 1);
	}
	size_t len = strlen(s);
	struct atom *a = xcalloc(1, sizeof(*a) + len + 1);
	memcpy(a->s, s, len + 1);
	a->hash = h;
	a->refs = 1;
	if (tomb != SIZE_MAX) {
		j = tomb;
	} else {
		t->used++;
	}
	t->slots[j] = a;
	t->n++;
	return a;
}

static void atom_put(struct atab *t, struct atom *a)
{
	if (a == NULL || --a->refs > 0)
		return;
	size_t j = (size_t)a->hash & (t->cap - 1);
	while (t->slots[j] != a) {
		if (t->slots[j] == NULL)
			panic("index: interned string missing from its table");
		j = (j + 1) & (t->cap - 1);
	}
	t->slots[j] = ATOM_TOMB;
	t->n--;
	free(a);
}

static void atab_free(struct atab *t)
{
	for (size_t i = 0; i < t->cap; i++)
		if (t->slots[i] && t->slots[i] != ATOM_TOMB)
			free(t->slots[i]);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* --- entries -------------------------------------------------------------- */

enum { T_SENDER, T_IP, T_USER, T_FP, T_DOMAIN, T_ERROR, NTABLES };

struct entry {
	char id[QUEUE_ID_LEN + 1];
	uint8_t folder;
	bool rcpt_more; /* recipients beyond the kept ones */
	bool dom_more;  /* domains beyond QUEUE_INDEX_DOMAINS_MAX */
	uint16_t nkept; /* addresses in rcpt */
	uint16_t ndom;
	uint32_t nrcpt;
	size_t pos; /* in ix->v */
	int64_t received;
	uint64_t size;
	struct atom *from, *ip, *user, *fp, *last_error;
	struct atom **dom;
	char *rcpt; /* nkept NUL-terminated addresses, back to back */
	int attempts;
	int rcpt_left;
	int64_t next_attempt;
};

static struct entry etomb_;
#define ENTRY_TOMB (&etomb_)

struct queue_index {
	char *data_dir;
	char *dirs[QUEUE_NFOLDERS]; /* where each folder's files are */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* load finished */
	/* guarded by mu: */
	struct entry **v;
	size_t n, vcap;
	struct entry **slots; /* by id */
	size_t scap, sused;
	struct atab tab[NTABLES];
	uint32_t qgen, sgen;
	bool loading;
	bool loaded; /* a load completed at least once */
	size_t load_done, load_total;
	struct strset gone; /* removed while loading */
	/* background load */
	pthread_t loader;
	bool loader_running;
	atomic_bool stop;
};

static const char *const folder_names[QUEUE_NFOLDERS] = { "pending", "outbox", "hold" };

const char *queue_folder_name(int folder)
{
	return folder >= 0 && folder < QUEUE_NFOLDERS ? folder_names[folder] : NULL;
}

int queue_folder_parse(const char *name)
{
	for (int i = 0; i < QUEUE_NFOLDERS; i++)
		if (strcmp(name, folder_names[i]) == 0)
			return i;
	return -1;
}

static const char *const group_names[QUEUE_NGROUPS] = { "fingerprint", "sender", "client_ip", "auth_user",
	                                                  "domain" };

const char *queue_group_name(int group)
{
	return group >= 0 && group < QUEUE_NGROUPS ? group_names[group] : NULL;
}

static void slots_rehash(struct queue_index *ix, size_t ncap)
{
	struct entry **old = ix->slots;
	size_t ocap = ix->scap;
	ix->slots = xcalloc(ncap, sizeof(*ix->slots));
	ix->scap = ncap;
	ix->sused = ix->n;
	for (size_t i = 0; i < ocap; i++) {
		struct entry *e = old[i];
		if (e == NULL || e == ENTRY_TOMB)
			continue;
		size_t j = (size_t)hash_str(e->id) & (ncap - 1);
		while (ix->slots[j])
			j = (j + 1) & (ncap - 1);
		ix->slots[j] = e;
	}
	free(old);
}

/* Slot of id, or SIZE_MAX. */
static size_t find_slot(const struct queue_index *ix, const char *id)
{
	if (ix->scap == 0)
		return SIZE_MAX;
	size_t j = (size_t)hash_str(id) & (ix->scap - 1);
	for (;;) {
		struct entry *e = ix->slots[j];
		if (e == NULL)
			return SIZE_MAX;
		if (e != ENTRY_TOMB && strcmp(e->id, id) == 0)
			return j;
		j = (j + 1) & (ix->scap - 1);
	}
}

static struct entry *find(const struct queue_index *ix, const char *id)
{
	size_t j = find_slot(ix, id);
	return j == SIZE_MAX ? NULL : ix->slots[j];
}

static void link_entry(struct queue_index *ix, struct entry *e)
{
	if ((ix->sused + 1) * 10 >= ix->scap * 7)
		slots_rehash(ix, ix->scap == 0 ? 1024 : (ix->n + 1) * 10 >= ix->scap * 4 ? ix->scap * 2 : ix->scap);
	size_t j = (size_t)hash_str(e->id) & (ix->scap - 1);
	size_t tomb = SIZE_MAX;
	while (ix->slots[j]) {
		if (ix->slots[j] == ENTRY_TOMB && tomb == SIZE_MAX)
			tomb = j;
		j = (j + 1) & (ix->scap - 1);
	}
	if (tomb != SIZE_MAX)
		j = tomb;
	else
		ix->sused++;
	ix->slots[j] = e;
	if (ix->n == ix->vcap) {
		ix->vcap = ix->vcap ? ix->vcap * 2 : 1024;
		ix->v = xreallocarray(ix->v, ix->vcap, sizeof(*ix->v));
	}
	e->pos = ix->n;
	ix->v[ix->n++] = e;
}

static void entry_clear(struct queue_index *ix, struct entry *e)
{
	atom_put(&ix->tab[T_SENDER], e->from);
	atom_put(&ix->tab[T_IP], e->ip);
	atom_put(&ix->tab[T_USER], e->user);
	atom_put(&ix->tab[T_FP], e->fp);
	atom_put(&ix->tab[T_ERROR], e->last_error);
	for (size_t i = 0; i < e->ndom; i++)
		atom_put(&ix->tab[T_DOMAIN], e->dom[i]);
	free(e->dom);
	free(e->rcpt);
	e->from = e->ip = e->user = e->fp = e->last_error = NULL;
	e->dom = NULL;
	e->rcpt = NULL;
	e->ndom = e->nkept = 0;
}

static void unlink_entry(struct queue_index *ix, struct entry *e)
{
	size_t j = find_slot(ix, e->id);
	if (j == SIZE_MAX)
		panic("index: entry %s missing from the id table", e->id);
	ix->slots[j] = ENTRY_TOMB;
	struct entry *last = ix->v[--ix->n];
	ix->v[e->pos] = last;
	last->pos = e->pos;
	entry_clear(ix, e);
	free(e);
}

/* What an entry is made of, prepared outside the lock. */
struct proto {
	int folder;
	uint64_t size;
	const struct queue_env *env;
	struct strv domains; /* lower-cased, distinct, first QUEUE_INDEX_DOMAINS_MAX */
	bool dom_more;
	char *rcpt;
	size_t nkept;
	bool rcpt_more;
	/* from the .st file, when there is one */
	bool have_state;
	int attempts, rcpt_left;
	int64_t next_attempt;
	char *last_error;
};

static void proto_init(struct proto *p, int folder, const struct queue_env *env, uint64_t size)
{
	memset(p, 0, sizeof(*p));
	p->folder = folder;
	p->env = env;
	p->size = size;
	p->rcpt_left = -1;
	struct strbuf rb = STRBUF_INIT;
	for (size_t i = 0; i < env->rcpt.n; i++) {
		const char *a = env->rcpt.v[i];
		size_t l = strlen(a);
		if (!p->rcpt_more && rb.len + l + 1 <= QUEUE_INDEX_RCPT_BYTES) {
			strbuf_add(&rb, a, l + 1);
			p->nkept++;
		} else {
			p->rcpt_more = true;
		}
		const char *at = strrchr(a, '@');
		if (at == NULL || at[1] == '\0')
			continue;
		char dom[256];
		snprintf(dom, sizeof(dom), "%s", at + 1);
		for (char *c = dom; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		if (strv_contains(&p->domains, dom))
			continue;
		if (p->domains.n >= QUEUE_INDEX_DOMAINS_MAX)
			p->dom_more = true;
		else
			strv_add(&p->domains, dom);
	}
	p->rcpt = rb.len ? strbuf_detach(&rb, NULL) : NULL;
	strbuf_free(&rb);
}

static void proto_free(struct proto *p)
{
	strv_free(&p->domains);
	free(p->rcpt);
	free(p->last_error);
}

/* Fills e from p (e is empty or cleared). Takes p->rcpt. Locked. */
static void entry_fill(struct queue_index *ix, struct entry *e, struct proto *p)
{
	const struct queue_env *env = p->env;
	e->folder = (uint8_t)p->folder;
	e->received = env->received;
	e->size = p->size;
	e->from = atom_get(&ix->tab[T_SENDER], env->from ? env->from : "");
	e->ip = atom_get(&ix->tab[T_IP], env->client_ip && env->client_ip[0] ? env->client_ip : NULL);
	e->user = atom_get(&ix->tab[T_USER], env->auth_user && env->auth_user[0] ? env->auth_user : NULL);
	e->fp = atom_get(&ix->tab[T_FP], env->fingerprint[0] ? env->fingerprint : NULL);
	e->nrcpt = env->rcpt.n > UINT32_MAX ? UINT32_MAX : (uint32_t)env->rcpt.n;
	e->rcpt = p->rcpt;
	p->rcpt = NULL;
	e->nkept = (uint16_t)p->nkept;
	e->rcpt_more = p->rcpt_more;
	e->dom_more = p->dom_more;
	e->ndom = (uint16_t)p->domains.n;
	e->dom = e->ndom ? xcalloc(e->ndom, sizeof(*e->dom)) : NULL;
	for (size_t i = 0; i < e->ndom; i++)
		e->dom[i] = atom_get(&ix->tab[T_DOMAIN], p->domains.v[i]);
}

enum put_mode { PUT_LIVE, PUT_LOAD };

static void insert(struct queue_index *ix, struct proto *p, const char *id, enum put_mode mode)
{
	pthread_mutex_lock(&ix->mu);
	struct entry *e = find(ix, id);
	if (mode == PUT_LOAD) {
		/* anything the router or the MTA did meanwhile is newer */
		if (e != NULL || strset_contains(&ix->gone, id)) {
			pthread_mutex_unlock(&ix->mu);
			return;
		}
	} else if (ix->loading) {
		strset_remove(&ix->gone, id);
	}
	if (e != NULL && p->folder == QUEUE_F_PENDING && e->folder != QUEUE_F_PENDING) {
		pthread_mutex_unlock(&ix->mu);
		return;
	}
	bool keep_attempts = false;
	int attempts = 0, rcpt_left = -1;
	int64_t next = 0;
	struct atom *err = NULL;
	if (e != NULL) {
		/* the same message rewritten in place keeps its delivery record */
		if (e->folder == p->folder) {
			keep_attempts = true;
			attempts = e->attempts;
			rcpt_left = e->rcpt_left;
			next = e->next_attempt;
			err = e->last_error;
			e->last_error = NULL;
		}
		entry_clear(ix, e);
	} else {
		e = xcalloc(1, sizeof(*e));
		snprintf(e->id, sizeof(e->id), "%s", id);
		link_entry(ix, e);
	}
	entry_fill(ix, e, p);
	if (p->have_state) {
		atom_put(&ix->tab[T_ERROR], err);
		e->attempts = p->attempts;
		e->next_attempt = p->next_attempt;
		e->rcpt_left = p->rcpt_left;
		e->last_error = atom_get(&ix->tab[T_ERROR], p->last_error);
	} else if (keep_attempts) {
		e->attempts = attempts;
		e->next_attempt = next;
		e->rcpt_left = rcpt_left;
		e->last_error = err;
	} else {
		e->attempts = 0;
		e->next_attempt = 0;
		e->rcpt_left = -1;
	}
	pthread_mutex_unlock(&ix->mu);
}

/* --- reading queue files ------------------------------------------------- */

static int read_full(int fd, char *buf, size_t want, off_t off, size_t *got_r)
{
	size_t got = 0;
	while (got < want) {
		ssize_t r = pread(fd, buf + got, want - got, off + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	*got_r = got;
	return 0;
}

/* Reads the envelope of the queue file at path into env, and its size.
 * When the envelope has no fingerprint (files from before it existed),
 * one is computed from the start of the message. 1 ok, 0 gone, -1
 * unreadable or not a queue file. */
static int read_envelope(const char *path, struct queue_env *env, uint64_t *size_r, const char **error_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		*error_r = strerror(errno);
		return errno == ENOENT ? 0 : -1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		*error_r = "not a regular file";
		close(fd);
		return -1;
	}
	size_t cap = INDEX_READ_FIRST;
	char *buf = xmalloc(cap + 64);
	size_t len = 0;
	const char *end = NULL;
	size_t ml = strlen(QUEUE_MAGIC);
	for (;;) {
		size_t got;
		if (read_full(fd, buf + len, cap - len, (off_t)len, &got) < 0) {
			*error_r = strerror(errno);
			goto fail;
		}
		len += got;
		if (len >= ml && memcmp(buf, QUEUE_MAGIC, ml) != 0)
			break;
		end = len > 1 ? memmem(buf, len, "\n\n", 2) : NULL;
		if (end || got == 0 || len < cap || cap >= QUEUE_ENVELOPE_MAX)
			break;
		cap = cap * 4 > QUEUE_ENVELOPE_MAX ? QUEUE_ENVELOPE_MAX : cap * 4;
		buf = xrealloc(buf, cap + 64);
	}
	if (end == NULL || len < ml || memcmp(buf, QUEUE_MAGIC, ml) != 0) {
		*error_r = "not a complete posthorn queue file";
		goto fail;
	}
	size_t hlen = (size_t)(end - buf) + 2;
	/* queue_file_parse wants a whole file: give it the envelope followed
	 * by the end marker of an empty body, so only the envelope is
	 * parsed (the real body is not ours to check here). */
	char *fake = xmalloc(hlen + 64);
	memcpy(fake, buf, hlen);
	int fl = snprintf(fake + hlen, 64, QUEUE_END_PREFIX "0\n");
	size_t off, blen;
	int r = queue_file_parse(fake, hlen + (size_t)fl, env, &off, &blen, error_r);
	free(fake);
	if (r <= 0) {
		if (r == 0)
			*error_r = "envelope not readable";
		goto fail;
	}
	if (env->fingerprint[0] == '\0' && (uint64_t)st.st_size > hlen) {
		/* read on to where fingerprint_message stops looking */
		size_t total = (size_t)st.st_size;
		size_t want = total;
		if (want > hlen + INDEX_FP_READ && total - (hlen + INDEX_FP_READ) > 64)
			want = hlen + INDEX_FP_READ;
		if (want > len) {
			buf = xrealloc(buf, want + 1);
			size_t got;
			if (read_full(fd, buf + len, want - len, (off_t)len, &got) == 0)
				len += got;
		}
		size_t boff = hlen, bl = len - hlen;
		if (len == total) {
			struct queue_env tmp;
			const char *e2;
			if (queue_file_parse(buf, len, &tmp, &boff, &bl, &e2) == 1)
				queue_env_free(&tmp);
			else
				bl = 0; /* incomplete: leave the fingerprint empty */
		}
		if (bl > 0)
			fingerprint_message(buf + boff, bl, env->fingerprint);
	}
	*size_r = (uint64_t)st.st_size;
	free(buf);
	close(fd);
	return 1;
fail:
	free(buf);
	close(fd);
	return -1;
}

/* Delivery facts from <id>.st into p (folder is relative to queue/). */
static void read_state(const char *data_dir, const char *folder, const struct queue_env *env,
                       struct proto *p)
{
	struct queue_state st;
	const char *err;
	if (queue_state_load(data_dir, folder, env, &st, &err) < 0)
		return;
	p->have_state = true;
	p->attempts = st.attempts;
	p->next_attempt = st.next_attempt;
	p->rcpt_left = 0;
	for (size_t i = 0; i < st.n; i++) {
		if (st.r[i].status == RCPT_PENDING || st.r[i].status == RCPT_DEFERRED)
			p->rcpt_left++;
		if (st.r[i].reply && st.r[i].status != RCPT_DELIVERED) {
			free(p->last_error);
			p->last_error = xstrdup(st.r[i].reply);
		}
	}
	queue_state_free(&st);
}

/* --- construction ---------------------------------------------------------- */

struct queue_index *queue_index_new(const char *data_dir)
{
	struct queue_index *ix = xcalloc(1, sizeof(*ix));
	ix->data_dir = xstrdup(data_dir);
	for (int f = 0; f < QUEUE_NFOLDERS; f++) {
		char p[PATH_MAX];
		queue_path(p, sizeof(p), data_dir, folder_names[f], NULL);
		ix->dirs[f] = xstrdup(p);
	}
	pthread_mutex_init(&ix->mu, NULL);
	pthread_cond_init(&ix->cv, NULL);
	strset_init(&ix->gone);
	atomic_init(&ix->stop, false);
	return ix;
}

void queue_index_free(struct queue_index **ixp)
{
	struct queue_index *ix = *ixp;
	if (ix == NULL)
		return;
	if (ix->loader_running) {
		atomic_store(&ix->stop, true);
		pthread_join(ix->loader, NULL);
	}
	for (size_t i = 0; i < ix->n; i++) {
		entry_clear(ix, ix->v[i]);
		free(ix->v[i]);
	}
	free(ix->v);
	free(ix->slots);
	for (int t = 0; t < NTABLES; t++)
		atab_free(&ix->tab[t]);
	strset_free(&ix->gone);
	for (int f = 0; f < QUEUE_NFOLDERS; f++)
		free(ix->dirs[f]);
	pthread_cond_destroy(&ix->cv);
	pthread_mutex_destroy(&ix->mu);
	free(ix->data_dir);
	free(ix);
	*ixp = NULL;
}

/* --- loading ----------------------------------------------------------------- */

struct load_item {
	char *name;
	uint8_t folder;
	bool has_state;
	const char *dir;
	const char *state_folder; /* relative to queue/, NULL: do not read .st */
};

struct load_job {
	struct queue_index *ix;
	struct load_item *items;
	size_t n;
	atomic_size_t next;
	atomic_size_t done;
	atomic_size_t failed;
};

static bool name_ok(const char *name)
{
	return name[0] != '.' && strlen(name) <= QUEUE_ID_LEN && queue_id_ok(name);
}

static int cmp_cstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the message files of dir into items; state_folder as above. */
static int list_dir(const char *dir, int folder, const char *state_folder, struct load_item **items,
                    size_t *n, size_t *cap)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	struct strv names = { 0 }, states = { 0 };
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *nm = de->d_name;
		size_t l = strlen(nm);
		if (l > 3 && strcmp(nm + l - 3, ".st") == 0) {
			char id[NAME_MAX + 1];
			snprintf(id, sizeof(id), "%.*s", (int)(l - 3), nm);
			if (name_ok(id))
				strv_add(&states, id);
		} else if (name_ok(nm)) {
			strv_add(&names, nm);
		}
	}
	closedir(d);
	if (states.n > 1)
		qsort(states.v, states.n, sizeof(char *), cmp_cstr);
	for (size_t i = 0; i < names.n; i++) {
		if (*n == *cap) {
			*cap = *cap ? *cap * 2 : 1024;
			*items = xreallocarray(*items, *cap, sizeof(**items));
		}
		struct load_item *it = &(*items)[(*n)++];
		it->name = names.v[i];
		names.v[i] = NULL;
		it->folder = (uint8_t)folder;
		it->dir = dir;
		it->state_folder = state_folder;
		it->has_state = state_folder && states.n &&
		                bsearch(&it->name, states.v, states.n, sizeof(char *), cmp_cstr) != NULL;
	}
	strv_free(&names);
	strv_free(&states);
	return 0;
}

static void load_one(struct queue_index *ix, const struct load_item *it)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", it->dir, it->name) >= (int)sizeof(path))
		return;
	struct queue_env env;
	uint64_t size;
	const char *err;
	if (read_envelope(path, &env, &size, &err) <= 0)
		return;
	/* the file name is the id (the state file is named after it) */
	snprintf(env.id, sizeof(env.id), "%s", it->name);
	struct proto p;
	proto_init(&p, it->folder, &env, size);
	if (it->has_state)
		read_state(ix->data_dir, it->state_folder, &env, &p);
	insert(ix, &p, it->name, PUT_LOAD);
	proto_free(&p);
	queue_env_free(&env);
}

static void *load_thread(void *arg)
{
	struct load_job *j = arg;
	for (;;) {
		if (atomic_load(&j->ix->stop))
			break;
		size_t i = atomic_fetch_add(&j->next, 1);
		if (i >= j->n)
			break;
		load_one(j->ix, &j->items[i]);
		atomic_fetch_add(&j->done, 1);
	}
	return NULL;
}

static void set_progress(struct queue_index *ix, size_t done, size_t total)
{
	pthread_mutex_lock(&ix->mu);
	ix->load_done = done;
	ix->load_total = total;
	pthread_mutex_unlock(&ix->mu);
}

/* Reads every item on INDEX_LOAD_THREADS threads (the caller is one). */
static void run_load(struct queue_index *ix, struct load_item *items, size_t n,
                     void (*progress)(void *arg, size_t done, size_t total), void *arg)
{
	struct load_job j = { .ix = ix, .items = items, .n = n };
	atomic_init(&j.next, 0);
	atomic_init(&j.done, 0);
	atomic_init(&j.failed, 0);
	pthread_t th[INDEX_LOAD_THREADS - 1];
	int nth = 0;
	if (n > 64)
		for (; nth < INDEX_LOAD_THREADS - 1; nth++)
			if (pthread_create(&th[nth], NULL, load_thread, &j) != 0)
				break;
	size_t last = 0;
	for (;;) {
		if (atomic_load(&ix->stop))
			break;
		size_t i = atomic_fetch_add(&j.next, 1);
		if (i >= n)
			break;
		load_one(ix, &items[i]);
		size_t d = atomic_fetch_add(&j.done, 1) + 1;
		if (d - last >= INDEX_PROGRESS_EVERY) {
			last = d;
			set_progress(ix, d, n);
			if (progress)
				progress(arg, d, n);
		}
	}
	for (int t = 0; t < nth; t++)
		pthread_join(th[t], NULL);
	set_progress(ix, n, n);
	if (progress)
		progress(arg, n, n);
}

static void free_items(struct load_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(items[i].name);
	free(items);
}

int queue_index_load(struct queue_index *ix, void (*progress)(void *arg, size_t done, size_t total), void *arg)
{
	pthread_mutex_lock(&ix->mu);
	ix->loading = true;
	ix->load_done = ix->load_total = 0;
	pthread_mutex_unlock(&ix->mu);

	struct load_item *items = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	for (int f = 0; f < QUEUE_NFOLDERS; f++)
		if (list_dir(ix->dirs[f], f, folder_names[f], &items, &n, &cap) < 0)
			rc = -1;
	set_progress(ix, 0, n);
	run_load(ix, items, n, progress, arg);
	free_items(items, n);

	pthread_mutex_lock(&ix->mu);
	ix->loading = false;
	ix->loaded = true;
	strset_free(&ix->gone);
	strset_init(&ix->gone);
	pthread_cond_broadcast(&ix->cv);
	pthread_mutex_unlock(&ix->mu);
	return rc;
}

static void *background_main(void *arg)
{
	struct queue_index *ix = arg;
	if (queue_index_load(ix, NULL, NULL) < 0)
		fprintf(stderr, "posthorn: queue index: a queue folder under %s/queue could not be read\n",
		        ix->data_dir);
	return NULL;
}

void queue_index_load_background(struct queue_index *ix)
{
	pthread_mutex_lock(&ix->mu);
	ix->loading = true; /* queries see "loading" from now on */
	pthread_mutex_unlock(&ix->mu);
	if (pthread_create(&ix->loader, NULL, background_main, ix) != 0)
		fatal("queue index: pthread_create failed");
	ix->loader_running = true;
}

int queue_index_load_dir(struct queue_index *ix, const char *dir, int folder,
                         void (*progress)(void *arg, size_t done, size_t total), void *arg,
                         const char **error_r)
{
	if (folder < 0 || folder >= QUEUE_NFOLDERS)
		panic("queue_index_load_dir: bad folder %d", folder);
	free(ix->dirs[folder]);
	ix->dirs[folder] = xstrdup(dir);
	struct load_item *items = NULL;
	size_t n = 0, cap = 0;
	if (list_dir(ix->dirs[folder], folder, NULL, &items, &n, &cap) < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	run_load(ix, items, n, progress, arg);
	free_items(items, n);
	pthread_mutex_lock(&ix->mu);
	ix->loaded = true;
	pthread_cond_broadcast(&ix->cv);
	pthread_mutex_unlock(&ix->mu);
	return 0;
}

bool queue_index_ready(struct queue_index *ix, int timeout_ms, size_t *done_r, size_t *total_r)
{
	pthread_mutex_lock(&ix->mu);
	if (ix->loading && timeout_ms > 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += timeout_ms / 1000;
		ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (ix->loading)
			if (pthread_cond_timedwait(&ix->cv, &ix->mu, &ts) != 0)
				break;
	}
	bool ready = !ix->loading;
	if (done_r)
		*done_r = ix->load_done;
	if (total_r)
		*total_r = ix->load_total;
	pthread_mutex_unlock(&ix->mu);
	return ready;
}

/* --- mutations ----------------------------------------------------------------- */

void queue_index_put(struct queue_index *ix, const char *folder, const struct queue_env *env, uint64_t size)
{
	int f = queue_folder_parse(folder);
	if (f < 0 || !name_ok(env->id))
		return;
	struct proto p;
	proto_init(&p, f, env, size);
	insert(ix, &p, env->id, PUT_LIVE);
	proto_free(&p);
}

int queue_index_put_file(struct queue_index *ix, const char *folder, const char *id)
{
	int f = queue_folder_parse(folder);
	if (f < 0 || !name_ok(id))
		return -1;
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", ix->dirs[f], id) >= (int)sizeof(path))
		return -1;
	struct queue_env env;
	uint64_t size;
	const char *err;
	int r = read_envelope(path, &env, &size, &err);
	if (r <= 0)
		return r;
	snprintf(env.id, sizeof(env.id), "%s", id);
	struct proto p;
	proto_init(&p, f, &env, size);
	insert(ix, &p, id, PUT_LIVE);
	proto_free(&p);
	queue_env_free(&env);
	/* the router may have taken a pending file away between our read and
	 * our insert; then its "routed" hook already ran, so undo ours */
	if (f == QUEUE_F_PENDING && access(path, F_OK) < 0 && errno == ENOENT) {
		queue_index_remove_in(ix, id, folder);
		return 0;
	}
	return 1;
}

void queue_index_remove(struct queue_index *ix, const char *id)
{
	pthread_mutex_lock(&ix->mu);
	struct entry *e = find(ix, id);
	if (e)
		unlink_entry(ix, e);
	if (ix->loading)
		strset_add(&ix->gone, id);
	pthread_mutex_unlock(&ix->mu);
}

void queue_index_remove_in(struct queue_index *ix, const char *id, const char *folder)
{
	int f = queue_folder_parse(folder);
	pthread_mutex_lock(&ix->mu);
	struct entry *e = find(ix, id);
	if (e && e->folder == f)
		unlink_entry(ix, e);
	pthread_mutex_unlock(&ix->mu);
}

void queue_index_move(struct queue_index *ix, const char *id, const char *folder)
{
	int f = queue_folder_parse(folder);
	if (f < 0)
		return;
	pthread_mutex_lock(&ix->mu);
	struct entry *e = find(ix, id);
	if (e) {
		if (e->folder != f && f == QUEUE_F_PENDING) {
			/* routed again from scratch */
			e->attempts = 0;
			e->next_attempt = 0;
			e->rcpt_left = -1;
			atom_put(&ix->tab[T_ERROR], e->last_error);
			e->last_error = NULL;
		}
		e->folder = (uint8_t)f;
	}
	pthread_mutex_unlock(&ix->mu);
}

size_t queue_index_remove_folder(struct queue_index *ix, const char *folder)
{
	int f = queue_folder_parse(folder);
	size_t n = 0;
	pthread_mutex_lock(&ix->mu);
	for (size_t i = ix->n; i-- > 0;) {
		/* unlink_entry moves the last entry into slot i: already seen */
		if (i < ix->n && ix->v[i]->folder == f) {
			unlink_entry(ix, ix->v[i]);
			n++;
		}
	}
	pthread_mutex_unlock(&ix->mu);
	return n;
}

void queue_index_set_attempt(struct queue_index *ix, const char *id, int attempts, int64_t next_attempt,
                             const char *last_error, int rcpt_left)
{
	pthread_mutex_lock(&ix->mu);
	struct entry *e = find(ix, id);
	if (e) {
		e->attempts = attempts;
		e->next_attempt = next_attempt;
		e->rcpt_left = rcpt_left;
		struct atom *a = atom_get(&ix->tab[T_ERROR], last_error && last_error[0] ? last_error : NULL);
		atom_put(&ix->tab[T_ERROR], e->last_error);
		e->last_error = a;
	}
	pthread_mutex_unlock(&ix->mu);
}

/* --- filters ------------------------------------------------------------------- */

bool queue_filter_is_all(const struct queue_filter *f)
{
	return f->sender == NULL && f->rcpt == NULL && f->domain == NULL && f->ip == NULL && f->user == NULL &&
	       f->fingerprint == NULL && f->min_size == 0 && f->max_size == 0 && f->received_min == 0 &&
	       f->received_max == 0 && f->nids == 0;
}

static bool is_hex(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (!isxdigit((unsigned char)*s))
			return false;
	return true;
}

int queue_filter_check(const struct queue_filter *f, const char **error_r)
{
	if (f->ip && strchr(f->ip, '/')) {
		struct net_cidr c;
		const char *err;
		if (net_cidr_parse(f->ip, &c, &err) < 0) {
			*error_r = "--ip: not an address, a pattern or a network such as 192.0.2.0/24";
			return -1;
		}
	}
	if (f->fingerprint && (!is_hex(f->fingerprint) || strlen(f->fingerprint) > FINGERPRINT_LEN)) {
		*error_r = "--fingerprint: expected up to 16 hexadecimal characters";
		return -1;
	}
	if (f->min_size && f->max_size && f->min_size > f->max_size) {
		*error_r = "--min-size is larger than --max-size";
		return -1;
	}
	if (f->received_min && f->received_max && f->received_min > f->received_max) {
		*error_r = "--older and --newer select nothing together (the ranges do not overlap)";
		return -1;
	}
	return 0;
}

/* A filter prepared for matching. */
struct cfilter {
	const struct queue_filter *f;
	bool null_sender;
	bool cidr;
	struct net_cidr net;
	size_t fplen;
};

static bool has_wild(const char *p)
{
	return strpbrk(p, "*?") != NULL;
}

static bool pat_match(const char *pat, const char *s)
{
	if (has_wild(pat))
		return fnmatch(pat, s, FNM_CASEFOLD | FNM_NOESCAPE) == 0;
	return strcasecmp(pat, s) == 0;
}

static void cfilter_init(struct cfilter *c, const struct queue_filter *f)
{
	memset(c, 0, sizeof(*c));
	c->f = f;
	if (f->sender && (strcmp(f->sender, "<>") == 0 || f->sender[0] == '\0'))
		c->null_sender = true;
	if (f->ip && strchr(f->ip, '/')) {
		const char *err;
		c->cidr = net_cidr_parse(f->ip, &c->net, &err) == 0;
	}
	if (f->fingerprint)
		c->fplen = strlen(f->fingerprint);
}

static bool ip_match(const struct cfilter *c, const char *ip)
{
	if (!c->cidr)
		return pat_match(c->f->ip, ip);
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1)
		s4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1)
		s6->sin6_family = AF_INET6;
	else
		return false;
	return net_cidr_match(&c->net, (struct sockaddr *)&ss);
}

enum { M_NO = 0, M_YES = 1, M_MAYBE = 2 };

/* The cached verdict of one field's filter on an interned string. */
static bool atom_test(struct queue_index *ix, struct atom *a, int table, const struct cfilter *c)
{
	if (a == NULL)
		return false;
	if (a->qgen == ix->qgen)
		return a->qmatch;
	bool m = false;
	switch (table) {
	case T_SENDER:
		m = c->null_sender ? a->s[0] == '\0' : a->s[0] != '\0' && pat_match(c->f->sender, a->s);
		break;
	case T_IP:
		m = ip_match(c, a->s);
		break;
	case T_USER:
		m = pat_match(c->f->user, a->s);
		break;
	case T_FP:
		m = strncasecmp(a->s, c->f->fingerprint, c->fplen) == 0;
		break;
	case T_DOMAIN:
		m = pat_match(c->f->domain, a->s);
		break;
	}
	a->qgen = ix->qgen;
	a->qmatch = m;
	return m;
}

/* M_NO, M_YES, or M_MAYBE when only the full recipient list can tell.
 * Locked; ix->qgen must have been bumped for this filter. */
static int match(struct queue_index *ix, const struct entry *e, const struct cfilter *c)
{
	const struct queue_filter *f = c->f;
	if (f->folders && !(f->folders & (1u << e->folder)))
		return M_NO;
	if (f->min_size && e->size < f->min_size)
		return M_NO;
	if (f->max_size && e->size > f->max_size)
		return M_NO;
	if (f->received_min && e->received < f->received_min)
		return M_NO;
	if (f->received_max && e->received > f->received_max)
		return M_NO;
	if (f->sender && !atom_test(ix, e->from, T_SENDER, c))
		return M_NO;
	if (f->ip && !atom_test(ix, e->ip, T_IP, c))
		return M_NO;
	if (f->user && !atom_test(ix, e->user, T_USER, c))
		return M_NO;
	if (f->fingerprint && !atom_test(ix, e->fp, T_FP, c))
		return M_NO;
	int r = M_YES;
	if (f->domain) {
		bool any = false;
		for (size_t i = 0; i < e->ndom && !any; i++)
			any = atom_test(ix, e->dom[i], T_DOMAIN, c);
		if (!any) {
			if (!e->dom_more)
				return M_NO;
			r = M_MAYBE;
		}
	}
	if (f->rcpt) {
		bool any = false;
		const char *p = e->rcpt;
		for (size_t i = 0; i < e->nkept && !any; i++) {
			any = pat_match(f->rcpt, p);
			p += strlen(p) + 1;
		}
		if (!any) {
			if (!e->rcpt_more)
				return M_NO;
			r = M_MAYBE;
		}
	}
	return r;
}

/* Full-envelope check of the recipient filters (outside the lock). */
static bool rcpt_filters_match(const struct queue_filter *f, const struct queue_env *env)
{
	bool rok = f->rcpt == NULL, dok = f->domain == NULL;
	for (size_t i = 0; i < env->rcpt.n && !(rok && dok); i++) {
		const char *a = env->rcpt.v[i];
		if (!rok)
			rok = pat_match(f->rcpt, a);
		const char *at = strrchr(a, '@');
		if (!dok && at)
			dok = pat_match(f->domain, at + 1);
	}
	return rok && dok;
}

/* Visits the entries a filter can select: the named ids, or all. */
#define FOR_CANDIDATES(ix, f, e, body)                                     \
	do {                                                               \
		if ((f)->nids) {                                           \
			for (size_t k_ = 0; k_ < (f)->nids; k_++) {        \
				struct entry *e = find((ix), (f)->ids[k_]); \
				if (e == NULL)                             \
					continue;                          \
				body                                       \
			}                                                  \
		} else {                                                   \
			for (size_t k_ = 0; k_ < (ix)->n; k_++) {          \
				struct entry *e = (ix)->v[k_];             \
				body                                       \
			}                                                  \
		}                                                          \
	} while (0)

/* For filters on recipients beyond what the index keeps: reads those
 * envelopes back (outside the lock) and puts the ids that do not match
 * into reject. */
static void check_maybes(struct queue_index *ix, const struct queue_filter *f, struct strset *reject)
{
	strset_init(reject);
	if (f->rcpt == NULL && f->domain == NULL)
		return;
	struct cfilter c;
	cfilter_init(&c, f);
	struct strv paths = { 0 }, ids = { 0 };
	pthread_mutex_lock(&ix->mu);
	ix->qgen++;
	FOR_CANDIDATES(ix, f, e, {
		if (match(ix, e, &c) == M_MAYBE) {
			char p[PATH_MAX];
			snprintf(p, sizeof(p), "%s/%s", ix->dirs[e->folder], e->id);
			strv_add(&paths, p);
			strv_add(&ids, e->id);
		}
	});
	pthread_mutex_unlock(&ix->mu);
	for (size_t i = 0; i < paths.n; i++) {
		struct queue_env env;
		const char *err;
		if (queue_env_read(paths.v[i], &env, &err) < 0) {
			strset_add(reject, ids.v[i]);
			continue;
		}
		if (!rcpt_filters_match(f, &env))
			strset_add(reject, ids.v[i]);
		queue_env_free(&env);
	}
	strv_free(&paths);
	strv_free(&ids);
}

static bool selected(struct queue_index *ix, const struct entry *e, const struct cfilter *c,
                     const struct strset *reject)
{
	int m = match(ix, e, c);
	return m == M_YES || (m == M_MAYBE && !strset_contains(reject, e->id));
}

/* --- list ---------------------------------------------------------------------- */

struct hit {
	char id[QUEUE_ID_LEN + 1];
	int64_t received;
	uint64_t size;
	char *key; /* sender or domain for those sorts */
};

struct sortctx {
	enum queue_sort sort;
	bool reverse;
};

static int cmp_hit(const struct hit *a, const struct hit *b, const struct sortctx *s)
{
	int r = 0;
	switch (s->sort) {
	case QUEUE_SORT_AGE:
		break;
	case QUEUE_SORT_SIZE:
		r = a->size > b->size ? -1 : a->size < b->size ? 1 : 0;
		break;
	case QUEUE_SORT_SENDER:
	case QUEUE_SORT_DOMAIN:
		r = strcasecmp(a->key ? a->key : "", b->key ? b->key : "");
		break;
	}
	if (r == 0)
		r = a->received < b->received ? -1 : a->received > b->received ? 1 : 0;
	if (r == 0)
		r = strcmp(a->id, b->id);
	return s->reverse ? -r : r;
}

static int cmp_hit_r(const void *a, const void *b, void *ctx)
{
	return cmp_hit(a, b, ctx);
}

static void hit_key(struct hit *h, const struct entry *e, enum queue_sort sort)
{
	h->key = NULL;
	if (sort == QUEUE_SORT_SENDER)
		h->key = xstrdup(e->from ? e->from->s : "");
	else if (sort == QUEUE_SORT_DOMAIN)
		h->key = xstrdup(e->ndom ? e->dom[0]->s : "");
}

int queue_sort_parse(const char *name)
{
	static const char *const names[] = { "age", "size", "sender", "domain" };
	for (int i = 0; i < 4; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

/* Seconds since the epoch encoded in a posthorn queue id (its first ten
 * Crockford base32 characters are microseconds), or -1. */
static int64_t id_time(const char *id)
{
	static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
	if (strlen(id) != QUEUE_ID_LEN)
		return -1;
	uint64_t us = 0;
	for (int i = 0; i < 10; i++) {
		const char *p = strchr(b32, toupper((unsigned char)id[i]));
		if (p == NULL || *p == '\0')
			return -1;
		us = us << 5 | (uint64_t)(p - b32);
	}
	return (int64_t)(us / 1000000u);
}

static void item_fill(struct queue_item *it, const struct entry *e)
{
	memset(it, 0, sizeof(*it));
	memcpy(it->id, e->id, sizeof(it->id));
	it->folder = e->folder;
	it->received = e->received;
	it->size = e->size;
	it->from = xstrdup(e->from ? e->from->s : "");
	it->client_ip = e->ip ? xstrdup(e->ip->s) : NULL;
	it->auth_user = e->user ? xstrdup(e->user->s) : NULL;
	if (e->fp)
		snprintf(it->fingerprint, sizeof(it->fingerprint), "%s", e->fp->s);
	it->nrcpt = e->nrcpt;
	const char *p = e->rcpt;
	for (size_t i = 0; i < e->nkept; i++) {
		strv_add(&it->rcpt, p);
		p += strlen(p) + 1;
	}
	for (size_t i = 0; i < e->ndom; i++)
		strv_add(&it->domains, e->dom[i]->s);
	it->attempts = e->attempts;
	it->next_attempt = e->next_attempt;
	it->last_error = e->last_error ? xstrdup(e->last_error->s) : NULL;
	it->rcpt_left = e->rcpt_left;
}

void queue_item_free(struct queue_item *it)
{
	free(it->from);
	free(it->client_ip);
	free(it->auth_user);
	free(it->last_error);
	strv_free(&it->rcpt);
	strv_free(&it->domains);
	memset(it, 0, sizeof(*it));
}

bool queue_index_contains(struct queue_index *ix, const char *id)
{
	pthread_mutex_lock(&ix->mu);
	bool r = find(ix, id) != NULL;
	pthread_mutex_unlock(&ix->mu);
	return r;
}

int queue_index_get(struct queue_index *ix, const char *id, struct queue_item *item)
{
	pthread_mutex_lock(&ix->mu);
	struct entry *e = find(ix, id);
	if (e)
		item_fill(item, e);
	pthread_mutex_unlock(&ix->mu);
	return e ? 1 : 0;
}

static void loading_state(struct queue_index *ix, bool *loading, size_t *done, size_t *total)
{
	*loading = ix->loading;
	*done = ix->load_done;
	*total = ix->load_total;
}

int queue_index_list(struct queue_index *ix, const struct queue_query *q, struct queue_page *page,
                     const char **error_r)
{
	memset(page, 0, sizeof(*page));
	if (queue_filter_check(&q->f, error_r) < 0)
		return -1;
	struct strset reject;
	check_maybes(ix, &q->f, &reject);
	struct cfilter c;
	cfilter_init(&c, &q->f);
	struct sortctx sc = { q->sort, q->reverse };

	struct hit *hits = NULL;
	size_t n = 0, cap = 0;
	struct hit cursor;
	bool have_cursor = false;
	memset(&cursor, 0, sizeof(cursor));

	pthread_mutex_lock(&ix->mu);
	loading_state(ix, &page->loading, &page->loaded, &page->to_load);
	ix->qgen++;
	FOR_CANDIDATES(ix, &q->f, e, {
		if (!selected(ix, e, &c, &reject))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			hits = xreallocarray(hits, cap, sizeof(*hits));
		}
		struct hit *h = &hits[n++];
		memcpy(h->id, e->id, sizeof(h->id));
		h->received = e->received;
		h->size = e->size;
		hit_key(h, e, q->sort);
	});
	if (q->after) {
		struct entry *e = find(ix, q->after);
		if (e) {
			snprintf(cursor.id, sizeof(cursor.id), "%s", e->id);
			cursor.received = e->received;
			cursor.size = e->size;
			hit_key(&cursor, e, q->sort);
			have_cursor = true;
		}
	}
	pthread_mutex_unlock(&ix->mu);
	strset_free(&reject);

	int rc = 0;
	if (q->after && !have_cursor) {
		/* gone since the last page (delivered, deleted): under the age
		 * sort its place is known from the time inside the id */
		int64_t t = id_time(q->after);
		if (q->sort != QUEUE_SORT_AGE || t < 0) {
			*error_r = "--after: that message is no longer in the queue (list again from the start, or use "
			           "--sort age)";
			rc = -1;
			goto out;
		}
		snprintf(cursor.id, sizeof(cursor.id), "%.*s", QUEUE_ID_LEN, q->after);
		cursor.received = t;
		have_cursor = true;
	}

	if (n > 1)
		qsort_r(hits, n, sizeof(*hits), cmp_hit_r, &sc);

	size_t start = 0;
	if (have_cursor) {
		/* first hit after the cursor (binary search: hits are sorted) */
		size_t lo = 0, hi = n;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (cmp_hit(&hits[mid], &cursor, &sc) <= 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		start = lo;
	}
	page->total = n;
	size_t want = n - start;
	if (q->limit && want > q->limit) {
		want = q->limit;
		page->more = true;
	}
	page->v = want ? xcalloc(want, sizeof(*page->v)) : NULL;
	pthread_mutex_lock(&ix->mu);
	for (size_t i = 0; i < want; i++) {
		struct entry *e = find(ix, hits[start + i].id);
		if (e == NULL)
			continue; /* went away a moment ago */
		item_fill(&page->v[page->n++], e);
	}
	pthread_mutex_unlock(&ix->mu);
out:
	for (size_t i = 0; i < n; i++)
		free(hits[i].key);
	free(hits);
	free(cursor.key);
	return rc;
}

void queue_page_free(struct queue_page *page)
{
	for (size_t i = 0; i < page->n; i++)
		queue_item_free(&page->v[i]);
	free(page->v);
	memset(page, 0, sizeof(*page));
}

/* --- selection ------------------------------------------------------------------ */

int queue_index_select(struct queue_index *ix, const struct queue_filter *f, struct queue_selection *sel,
                       const char **error_r)
{
	memset(sel, 0, sizeof(*sel));
	if (queue_filter_check(f, error_r) < 0)
		return -1;
	struct strset reject;
	check_maybes(ix, f, &reject);
	struct cfilter c;
	cfilter_init(&c, f);
	size_t cap = 0;
	pthread_mutex_lock(&ix->mu);
	ix->qgen++;
	for (size_t i = 0; i < f->nids; i++)
		if (find(ix, f->ids[i]) == NULL)
			sel->missing++;
	FOR_CANDIDATES(ix, f, e, {
		if (!selected(ix, e, &c, &reject))
			continue;
		if (sel->n == cap) {
			cap = cap ? cap * 2 : 256;
			sel->v = xreallocarray(sel->v, cap, sizeof(*sel->v));
		}
		struct queue_sel_item *s = &sel->v[sel->n++];
		memcpy(s->id, e->id, sizeof(s->id));
		s->folder = e->folder;
		s->size = e->size;
	});
	pthread_mutex_unlock(&ix->mu);
	strset_free(&reject);
	return 0;
}

void queue_selection_free(struct queue_selection *sel)
{
	free(sel->v);
	memset(sel, 0, sizeof(*sel));
}

void queue_index_counts(struct queue_index *ix, struct queue_counts *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_lock(&ix->mu);
	loading_state(ix, &c->loading, &c->loaded, &c->to_load);
	for (size_t i = 0; i < ix->n; i++) {
		c->messages[ix->v[i]->folder]++;
		c->bytes[ix->v[i]->folder] += ix->v[i]->size;
	}
	pthread_mutex_unlock(&ix->mu);
}

/* --- summary -------------------------------------------------------------------- */

/* The interned key of entry e in group g (domains: see dom loops). */
static struct atom *group_atom(const struct entry *e, int g)
{
	switch (g) {
	case QUEUE_G_FINGERPRINT:
		return e->fp;
	case QUEUE_G_SENDER:
		return e->from;
	case QUEUE_G_IP:
		return e->ip;
	case QUEUE_G_USER:
		return e->user;
	default:
		return NULL;
	}
}

struct atomvec {
	struct atom **v;
	size_t n, cap;
};

static void atomvec_add(struct atomvec *av, struct atom *a)
{
	if (av->n == av->cap) {
		av->cap = av->cap ? av->cap * 2 : 64;
		av->v = xreallocarray(av->v, av->cap, sizeof(*av->v));
	}
	av->v[av->n++] = a;
}

static void tally(struct queue_index *ix, struct atomvec *touched, struct atom *a, const struct entry *e)
{
	if (a == NULL)
		return;
	if (a->sgen != ix->sgen) {
		a->sgen = ix->sgen;
		a->cnt = a->bytes = 0;
		a->row = 0;
		a->sample = e;
		a->oldest = a->newest = e->received;
		atomvec_add(touched, a);
	}
	a->cnt++;
	a->bytes += e->size;
	if (e->received < a->oldest)
		a->oldest = e->received;
	if (e->received > a->newest)
		a->newest = e->received;
}

static int cmp_atom_top(const void *pa, const void *pb)
{
	const struct atom *a = *(struct atom *const *)pa, *b = *(struct atom *const *)pb;
	if (a->cnt != b->cnt)
		return a->cnt > b->cnt ? -1 : 1;
	if (a->bytes != b->bytes)
		return a->bytes > b->bytes ? -1 : 1;
	return strcmp(a->s, b->s);
}

/* Counts of (group, row, other key) for the dominant values. */
struct domkey {
	const struct atom *a; /* NULL: empty slot */
	uint32_t grow;        /* group * 65536 + row */
	uint32_t other;       /* the other group */
	uint64_t n;
};

struct dommap {
	struct domkey *s;
	size_t cap, n;
};

static size_t dom_hash(const struct atom *a, uint32_t grow, uint32_t other, size_t cap)
{
	uint64_t h = (uint64_t)(uintptr_t)a ^ ((uint64_t)grow << 40) ^ ((uint64_t)other << 36);
	h *= 0x9E3779B97F4A7C15ULL; /* Fibonacci hashing: spreads aligned pointers */
	return (size_t)(h >> 32) & (cap - 1);
}

/* The slot for the key, created with n = 0 when new. */
static struct domkey *dommap_slot(struct dommap *m, const struct atom *a, uint32_t grow, uint32_t other)
{
	if ((m->n + 1) * 10 >= m->cap * 7) {
		struct dommap nm = { xcalloc(m->cap ? m->cap * 2 : 1024, sizeof(struct domkey)),
			             m->cap ? m->cap * 2 : 1024, 0 };
		for (size_t i = 0; i < m->cap; i++)
			if (m->s[i].a)
				dommap_slot(&nm, m->s[i].a, m->s[i].grow, m->s[i].other)->n = m->s[i].n;
		free(m->s);
		*m = nm;
	}
	size_t j = dom_hash(a, grow, other, m->cap);
	while (m->s[j].a) {
		if (m->s[j].a == a && m->s[j].grow == grow && m->s[j].other == other)
			return &m->s[j];
		j = (j + 1) & (m->cap - 1);
	}
	m->s[j].a = a;
	m->s[j].grow = grow;
	m->s[j].other = other;
	m->s[j].n = 0;
	m->n++;
	return &m->s[j];
}

/* Tallies the other keys of e for its row in group g. */
static void tally_dominant(struct dommap *m, const struct entry *e, int g, uint32_t row)
{
	uint32_t grow = (uint32_t)g * 65536u + row;
	for (int o = 0; o < QUEUE_NGROUPS; o++) {
		if (o == g)
			continue;
		if (o == QUEUE_G_DOMAIN) {
			for (size_t i = 0; i < e->ndom; i++)
				dommap_slot(m, e->dom[i], grow, (uint32_t)o)->n++;
		} else {
			struct atom *a = group_atom(e, o);
			if (a)
				dommap_slot(m, a, grow, (uint32_t)o)->n++;
		}
	}
}

int queue_index_summary(struct queue_index *ix, const struct queue_filter *f, size_t top,
                        struct queue_summary *s, const char **error_r)
{
	memset(s, 0, sizeof(*s));
	if (queue_filter_check(f, error_r) < 0)
		return -1;
	if (top == 0)
		top = 10;
	if (top > 65535)
		top = 65535;
	struct strset reject;
	check_maybes(ix, f, &reject);
	struct cfilter c;
	cfilter_init(&c, f);
	struct atomvec touched[QUEUE_NGROUPS];
	memset(touched, 0, sizeof(touched));
	const struct entry **sel = NULL;
	size_t nsel = 0, selcap = 0;

	pthread_mutex_lock(&ix->mu);
	loading_state(ix, &s->loading, &s->loaded, &s->to_load);
	ix->qgen++;
	ix->sgen++;
	FOR_CANDIDATES(ix, f, e, {
		if (!selected(ix, e, &c, &reject))
			continue;
		if (nsel == selcap) {
			selcap = selcap ? selcap * 2 : 1024;
			sel = xreallocarray(sel, selcap, sizeof(*sel));
		}
		sel[nsel++] = e;
		s->messages++;
		s->bytes += e->size;
		s->folder_messages[e->folder]++;
		s->folder_bytes[e->folder] += e->size;
		for (int g = 0; g < QUEUE_G_DOMAIN; g++)
			tally(ix, &touched[g], group_atom(e, g), e);
		for (size_t i = 0; i < e->ndom; i++)
			tally(ix, &touched[QUEUE_G_DOMAIN], e->dom[i], e);
	});
	for (int g = 0; g < QUEUE_NGROUPS; g++) {
		struct atomvec *av = &touched[g];
		s->distinct[g] = av->n;
		if (av->n > 1)
			qsort(av->v, av->n, sizeof(*av->v), cmp_atom_top);
		size_t k = av->n < top ? av->n : top;
		s->nrows[g] = k;
		s->rows[g] = k ? xcalloc(k, sizeof(struct queue_summary_row)) : NULL;
		for (size_t i = 0; i < k; i++) {
			struct atom *a = av->v[i];
			struct queue_summary_row *r = &s->rows[g][i];
			r->key = xstrdup(a->s);
			r->messages = a->cnt;
			r->bytes = a->bytes;
			r->oldest = a->oldest;
			r->newest = a->newest;
			memcpy(r->sample_id, a->sample->id, sizeof(r->sample_id));
			r->sample_folder = a->sample->folder;
			a->row = (uint32_t)i + 1;
		}
	}
	/* second pass: within each top row, the leading value of every
	 * other key */
	struct dommap dm = { 0 };
	for (size_t k = 0; k < nsel; k++) {
		const struct entry *e = sel[k];
		for (int g = 0; g < QUEUE_G_DOMAIN; g++) {
			struct atom *a = group_atom(e, g);
			if (a && a->sgen == ix->sgen && a->row)
				tally_dominant(&dm, e, g, a->row - 1);
		}
		for (size_t i = 0; i < e->ndom; i++)
			if (e->dom[i]->sgen == ix->sgen && e->dom[i]->row)
				tally_dominant(&dm, e, QUEUE_G_DOMAIN, e->dom[i]->row - 1);
	}
	/* the best of each (group, row, other group), then copied out */
	const struct domkey **best[QUEUE_NGROUPS];
	for (int g = 0; g < QUEUE_NGROUPS; g++)
		best[g] = s->nrows[g] ? xcalloc(s->nrows[g] * QUEUE_NGROUPS, sizeof(**best)) : NULL;
	for (size_t i = 0; i < dm.cap; i++) {
		const struct domkey *d = &dm.s[i];
		if (d->a == NULL)
			continue;
		size_t g = d->grow / 65536u, row = d->grow % 65536u;
		const struct domkey **b = &best[g][row * QUEUE_NGROUPS + d->other];
		if (*b == NULL || d->n > (*b)->n || (d->n == (*b)->n && strcmp(d->a->s, (*b)->a->s) < 0))
			*b = d;
	}
	for (int g = 0; g < QUEUE_NGROUPS; g++) {
		for (size_t i = 0; i < s->nrows[g]; i++)
			for (int o = 0; o < QUEUE_NGROUPS; o++) {
				const struct domkey *b = best[g][i * QUEUE_NGROUPS + (size_t)o];
				if (b) {
					s->rows[g][i].dom[o].key = xstrdup(b->a->s);
					s->rows[g][i].dom[o].messages = b->n;
				}
			}
		free(best[g]);
	}
	pthread_mutex_unlock(&ix->mu);

	free(dm.s);
	free(sel);
	for (int g = 0; g < QUEUE_NGROUPS; g++)
		free(touched[g].v);
	strset_free(&reject);
	return 0;
}

void queue_summary_free(struct queue_summary *s)
{
	for (int g = 0; g < QUEUE_NGROUPS; g++) {
		for (size_t i = 0; i < s->nrows[g]; i++) {
			free(s->rows[g][i].key);
			for (int o = 0; o < QUEUE_NGROUPS; o++)
				free(s->rows[g][i].dom[o].key);
		}
		free(s->rows[g]);
	}
	memset(s, 0, sizeof(*s));
}
