/* queue — the spool: queue ids, the queue-file format, writing a message
 * durably into queue/pending, reading queue files back.
 *
 * Queue file (plain text envelope, readable with less):
 *
 *   posthorn-queue 1
 *   id 0G6V2J7K3M8N4P5Q
 *   received 1764781080 2026-12-03T17:18:00Z
 *   from <sender@example.org>          ("<>" is the null sender)
 *   rcpt <user@example.com>            (one line per recipient)
 *   client-ip 192.0.2.1               (optional lines follow)
 *   helo mail.example.org
 *   auth-user alice@example.com
 *   origin smtp|submission|sendmail|pickup|router
 *   body 7BIT|8BITMIME
 *   smtputf8 yes|no
 *   fingerprint 3f2a9c0d1e4b5a69   (content fingerprint, mail/fingerprint.h)
 *   <empty line>
 *   <message bytes, CRLF line ends>
 *   @@posthorn-end body=<message length>\n
 *
 * The end marker makes a complete file self-evident: a file without it,
 * or whose body length disagrees with it, is incomplete and is moved to
 * queue/lost+found by the router (never deleted).
 *
 * Durability contract: queue_commit() renames the fsync'd file from
 * queue/incoming into queue/pending and fsyncs the pending directory
 * before its callback reports success; only then may anyone reply 250.
 * Commits are grouped: one directory fsync covers every file renamed in
 * the same round. */
#ifndef QUEUE_QUEUE_H
#define QUEUE_QUEUE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "directory/directory.h"

#define QUEUE_ID_LEN 16        /* Crockford base32: 10 chars of µs time + 6 random */
#define QUEUE_ENVELOPE_MAX (1024 * 1024) /* envelope part of a queue file */
#define QUEUE_MAGIC "posthorn-queue 1\n"
#define QUEUE_END_PREFIX "@@posthorn-end body="

struct queue_env {
	char id[QUEUE_ID_LEN + 1];
	int64_t received;
	char *from;          /* "" for the null sender */
	struct strv rcpt;    /* "local@domain" */
	char *client_ip;
	char *helo;
	char *auth_user;
	char *origin;
	bool body_8bit;
	bool smtputf8;
	char fingerprint[17]; /* "" when unknown (FINGERPRINT_LEN hex chars) */
};

void queue_env_free(struct queue_env *e);

/* A new unique id (time-ordered). Thread-safe. */
void queue_id_new(char id[QUEUE_ID_LEN + 1]);
/* Is s a well-formed queue id (safe as a file name)? */
bool queue_id_ok(const char *s);

/* Paths under the data dir: var/queue/<folder>/<id>. */
#define QUEUE_FOLDERS "incoming", "pending", "outbox", "hold", "lost+found"
/* Creates the queue folders (on demand: a folder renamed away is simply
 * recreated). */
int queue_ensure_dirs(const char *data_dir, const char **error_r);
/* Writes "data_dir/queue/folder" or "data_dir/queue/folder/name". */
void queue_path(char *buf, size_t n, const char *data_dir, const char *folder, const char *name);

/* Serialise the envelope (header part, up to and including the empty
 * line) into a malloc'd string. */
char *queue_env_format(const struct queue_env *e, size_t *len_r);

/* Incremental writer: queue_writer_open() creates queue/incoming/<id> and
 * writes the envelope; append the message; queue_writer_finish() writes
 * the end marker (not fsync'd yet: that is queue_commit's job). */
struct queue_writer {
	int fd;
	char id[QUEUE_ID_LEN + 1];
	uint64_t body_len;
	bool failed;
	int error; /* errno of the first failed write */
};
int queue_writer_open(struct queue_writer *w, const char *data_dir, const struct queue_env *e,
                      const char **error_r);
void queue_writer_append(struct queue_writer *w, const void *p, size_t n);
int queue_writer_finish(struct queue_writer *w, const char **error_r);
/* Removes the incoming file and closes (message refused or aborted). */
void queue_writer_abort(struct queue_writer *w, const char *data_dir);

/* Synchronous commit (CLI, router): fsync, close, rename to pending,
 * fsync pending. */
int queue_commit_sync(struct queue_writer *w, const char *data_dir, const char *folder,
                      const char **error_r);

/* Parse a queue file held in memory. On success *body_off_r and *body_len_r
 * locate the message. Returns 1 ok, 0 incomplete (no valid end marker),
 * -1 malformed (error_r says why). */
int queue_file_parse(const char *data, size_t len, struct queue_env *e, size_t *body_off_r,
                     size_t *body_len_r, const char **error_r);
/* Reads only the envelope of the queue file at path (for listings). */
int queue_env_read(const char *path, struct queue_env *e, const char **error_r);

/* Write a complete queue file for (env, message) durably into folder
 * (temp name, fsync, rename, fsync dir). Used by router and sendmail. */
int queue_write_file(const char *data_dir, const char *folder, const struct queue_env *e,
                     const void *msg, size_t msg_len, const char **error_r);

#endif
