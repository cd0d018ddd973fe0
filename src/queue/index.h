/* index — the in-memory index of the queue (pending, outbox, hold): one
 * small entry per message with what the console filters, sorts and groups
 * by. The console never reads the queue files to answer: listings are
 * paged from this index and summaries are computed from it.
 *
 * Thread-safe (one mutex): the router, the MTA and console commands (on
 * worker threads) update it concurrently. Built at start by scanning the
 * envelopes of the queue folders (queue_index_load, on a background thread
 * for the daemon, so the server starts at once; queries say "loading" with
 * the progress so far until it is complete). The CLI builds its own copy
 * the same way when the daemon is not running (offline mode).
 *
 * No function here holds the mutex while it touches the disk, so a query
 * never stalls the router or the MTA for longer than one pass over the
 * entries in memory. */
#ifndef QUEUE_INDEX_H
#define QUEUE_INDEX_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "mail/fingerprint.h"
#include "queue/queue.h"

struct queue_index;

/* The folders the index covers. */
enum queue_folder { QUEUE_F_PENDING = 0, QUEUE_F_OUTBOX, QUEUE_F_HOLD, QUEUE_NFOLDERS };
/* "pending", "outbox", "hold"; NULL for anything else. */
const char *queue_folder_name(int folder);
/* The folder for a name, or -1. */
int queue_folder_parse(const char *name);

/* Recipient addresses kept per entry (all of them when they fit; the
 * rest is read back from the file when a filter needs it). */
#define QUEUE_INDEX_RCPT_BYTES 512
/* Distinct recipient domains kept per entry (the rest as for addresses). */
#define QUEUE_INDEX_DOMAINS_MAX 32

struct queue_index *queue_index_new(const char *data_dir);
/* Stops a background load (waits for its thread) and frees everything. */
void queue_index_free(struct queue_index **ix);
/* Scans pending, outbox and hold (envelopes and .st files). progress may
 * be NULL; it is called now and then with (done, total). Blocking; reads
 * files on a few threads of its own. Returns 0, or -1 when a folder cannot
 * be read (the others are still loaded). */
int queue_index_load(struct queue_index *ix, void (*progress)(void *arg, size_t done, size_t total),
                     void *arg);
/* Runs queue_index_load on a thread of its own and returns at once (the
 * daemon: the server starts while a large queue is still being read). */
void queue_index_load_background(struct queue_index *ix);
/* Scans one directory (any path) into the index, every entry marked as
 * being in folder: the console reads a quarantined folder this way into an
 * index of its own. Blocking. 0 or -1 (error_r: why). */
int queue_index_load_dir(struct queue_index *ix, const char *dir, int folder,
                         void (*progress)(void *arg, size_t done, size_t total), void *arg,
                         const char **error_r);
/* Is the index complete? done/total say how far a load got (either may
 * be NULL). Waits up to timeout_ms (0: just look) for it to complete. */
bool queue_index_ready(struct queue_index *ix, int timeout_ms, size_t *done_r, size_t *total_r);

/* Mutations (called by the router, the MTA and the console). */
/* Adds or replaces the entry for env->id in folder; size is the file size.
 * A put into pending never replaces an entry in another folder: the
 * message has already moved on (the router raced the committer hook). */
void queue_index_put(struct queue_index *ix, const char *folder, const struct queue_env *env,
                     uint64_t size);
/* Reads folder/<id> (envelope only) and puts it; for files that appeared.
 * Returns 1 put, 0 the file is gone (nothing changed), -1 unreadable. */
int queue_index_put_file(struct queue_index *ix, const char *folder, const char *id);
void queue_index_remove(struct queue_index *ix, const char *id);
/* Removes the entry only if it is in folder (the router: a pending file
 * was routed; its outbox copy, same id, stays). */
void queue_index_remove_in(struct queue_index *ix, const char *id, const char *folder);
void queue_index_move(struct queue_index *ix, const char *id, const char *folder);
/* Removes every entry in folder (the folder was set aside whole);
 * returns how many. */
size_t queue_index_remove_folder(struct queue_index *ix, const char *folder);
/* After a delivery attempt: attempts so far, next attempt time, the last
 * reply or error (one line) and recipients still to do. */
void queue_index_set_attempt(struct queue_index *ix, const char *id, int attempts, int64_t next_attempt,
                             const char *last_error, int rcpt_left);

/* --- queries ------------------------------------------------------------- */

/* What to select. Text patterns are case-insensitive and may use the
 * shell wildcards '*' and '?'; without a wildcard they must match whole. */
struct queue_filter {
	unsigned folders;        /* bits 1 << QUEUE_F_*; 0 = every folder */
	const char *sender;      /* envelope sender; "<>" is the null sender */
	const char *rcpt;        /* any recipient */
	const char *domain;      /* any recipient's domain */
	const char *ip;          /* client address, pattern or CIDR "192.0.2.0/24" */
	const char *user;        /* authenticated submitter */
	const char *fingerprint; /* a prefix of the content fingerprint (hex) */
	uint64_t min_size, max_size;        /* bytes; 0 = no bound */
	int64_t received_min, received_max; /* unix seconds; 0 = no bound */
	char *const *ids;        /* only these ids (NULL: any) */
	size_t nids;
};
/* Does the filter select only by folder (or not at all)? The console asks
 * for a confirmation before it changes "everything". */
bool queue_filter_is_all(const struct queue_filter *f);
/* Checks the patterns (a CIDR that does not parse, a fingerprint that is
 * not hex). 0, or -1 with error_r naming the field. */
int queue_filter_check(const struct queue_filter *f, const char **error_r);

enum queue_sort { QUEUE_SORT_AGE = 0, QUEUE_SORT_SIZE, QUEUE_SORT_SENDER, QUEUE_SORT_DOMAIN };
/* "age" (oldest first), "size" (largest first), "sender", "domain"
 * (first recipient's domain, A to Z); -1 for anything else. */
int queue_sort_parse(const char *name);

struct queue_query {
	struct queue_filter f;
	enum queue_sort sort;
	bool reverse;
	const char *after; /* page cursor: the last id of the previous page, or NULL */
	size_t limit;      /* 0 = no limit */
};

/* One message, copied out of the index (owned by the page). */
struct queue_item {
	char id[QUEUE_ID_LEN + 1];
	int folder;
	int64_t received;
	uint64_t size;
	char *from;      /* "" for the null sender */
	char *client_ip; /* NULL when unknown */
	char *auth_user; /* NULL when none */
	char fingerprint[FINGERPRINT_LEN + 1];
	size_t nrcpt;       /* recipients in the envelope */
	struct strv rcpt;   /* the first of them (all when they fit) */
	struct strv domains;
	int attempts;
	int64_t next_attempt; /* 0: due now / never attempted */
	char *last_error;     /* NULL when none */
	int rcpt_left;        /* -1: unknown (every recipient) */
};

struct queue_page {
	struct queue_item *v;
	size_t n;
	size_t total;    /* messages matching the filter (all pages) */
	bool more;       /* there is a next page: use v[n-1].id as the cursor */
	bool loading;    /* the index is still being built: results are partial */
	size_t loaded, to_load;
};

/* A page of messages. Filters needing data the index does not keep (a
 * recipient beyond the first few) read those envelopes back from disk,
 * outside the lock. Returns 0, or -1 with error_r (a cursor that is no
 * longer in the queue under a sort other than age). */
int queue_index_list(struct queue_index *ix, const struct queue_query *q, struct queue_page *page,
                     const char **error_r);
void queue_page_free(struct queue_page *page);

/* The messages a bulk operation works on: ids and folders only. */
struct queue_selection {
	struct queue_sel_item {
		char id[QUEUE_ID_LEN + 1];
		int folder;
		uint64_t size;
	} *v;
	size_t n;
	size_t missing; /* ids asked for by name that are not in the index */
};
int queue_index_select(struct queue_index *ix, const struct queue_filter *f, struct queue_selection *sel,
                       const char **error_r);
void queue_selection_free(struct queue_selection *sel);
/* Is id in the index (any folder)? */
bool queue_index_contains(struct queue_index *ix, const char *id);
/* The entry for id (a copy), or 0 when it is not in the index. */
int queue_index_get(struct queue_index *ix, const char *id, struct queue_item *item);
void queue_item_free(struct queue_item *item);

/* Counts per folder (messages and bytes), in one pass. */
struct queue_counts {
	uint64_t messages[QUEUE_NFOLDERS];
	uint64_t bytes[QUEUE_NFOLDERS];
	bool loading;
	size_t loaded, to_load;
};
void queue_index_counts(struct queue_index *ix, struct queue_counts *c);

/* Summaries: the queue grouped by one key at a time. */
enum queue_group {
	QUEUE_G_FINGERPRINT = 0,
	QUEUE_G_SENDER,
	QUEUE_G_IP,
	QUEUE_G_USER,
	QUEUE_G_DOMAIN,
	QUEUE_NGROUPS
};
/* "fingerprint", "sender", "client_ip", "auth_user", "domain". */
const char *queue_group_name(int group);

/* The leading value of another key within a group ("of these 98,000
 * copies, 97,990 came from alice@example.com"). */
struct queue_dominant {
	char *key; /* NULL: none (no message in the group has that key) */
	uint64_t messages;
};

struct queue_summary_row {
	char *key;
	uint64_t messages, bytes;
	char sample_id[QUEUE_ID_LEN + 1]; /* one message of the group */
	int sample_folder;
	int64_t oldest, newest; /* received */
	/* indexed by enum queue_group; the row's own group is empty */
	struct queue_dominant dom[QUEUE_NGROUPS];
};

struct queue_summary {
	uint64_t messages, bytes; /* all that matched */
	uint64_t folder_messages[QUEUE_NFOLDERS], folder_bytes[QUEUE_NFOLDERS];
	struct queue_summary_row *rows[QUEUE_NGROUPS];
	size_t nrows[QUEUE_NGROUPS];
	size_t distinct[QUEUE_NGROUPS]; /* how many different keys in all */
	bool loading;
	size_t loaded, to_load;
};
/* Top `top` keys of every group (by messages, then bytes) among the
 * messages the filter selects. A message with recipients in several
 * domains counts once in each. Filters needing the disk are applied as in
 * queue_index_list. 0 or -1 (error_r). */
int queue_index_summary(struct queue_index *ix, const struct queue_filter *f, size_t top,
                        struct queue_summary *s, const char **error_r);
void queue_summary_free(struct queue_summary *s);

#endif
