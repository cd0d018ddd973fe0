/* maildir — the only code that touches mailboxes: var/mail/<domain>/<user>/
 * with cur/ new/ tmp/ (Maildir, https://cr.yp.to/proto/maildir.html).
 *
 * Messages are stored exactly as received on the wire: CRLF line ends,
 * dot-unstuffed, with Return-Path: and Delivered-To: prepended. So a POP3
 * RETR is the file plus dot-stuffing, and sizes are exact octet counts.
 *
 * File names: "<time>.<unique>.<host>,S=<size>" in new/, and
 * "...:2,<flags>" once moved to cur/. <unique> is deterministic for router
 * deliveries (queue id + recipient index), which makes redelivery after a
 * crash detectable (store_maildir_deliver with check_existing).
 *
 * Durability contract: store_maildir_deliver() returns 0 only after the
 * file is fsync'd and linked into new/ and new/ is fsync'd. */
#ifndef STORE_MAILDIR_H
#define STORE_MAILDIR_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* var/mail/<domain>/<user> for mailbox "user@domain" into buf. */
int store_maildir_path(char *buf, size_t n, const char *data_dir, const char *mailbox);
/* Creates the Maildir (cur/new/tmp) if missing. */
int store_maildir_create(const char *path, const char **error_r);
/* Deliver the concatenation of iov[] under base name `unique` (the
 * ",S=size" suffix is added here). With check_existing, a message already
 * in new/ or cur/ under that name is not delivered again (returns 0 and
 * sets *already_r). Blocking. */
int store_maildir_deliver(const char *path, const char *unique, const struct iovec *iov, int iovcnt,
                          bool check_existing, bool *already_r, const char **error_r);
/* Bytes used by the messages in new/ and cur/ (from ,S= or stat). */
int store_maildir_usage(const char *path, uint64_t *bytes_r);

/* One message of a mailbox listing. */
struct maildir_msg {
	char *name;     /* file name relative to the Maildir: "new/..." or "cur/..." */
	char *uid;      /* stable unique id: base name up to ':' */
	uint64_t size;  /* octets on disk (CRLF form) */
	int64_t mtime;
};
/* Lists new/ and cur/, sorted by (mtime, name) so numbering is stable. */
int store_maildir_list(const char *path, struct maildir_msg **msgs_r, size_t *n_r);
void store_maildir_list_free(struct maildir_msg *msgs, size_t n);

#endif
