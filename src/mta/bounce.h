/* bounce — turns delivery outcomes into a DSN queue file: builds the
 * report with mail/dsn.h and writes it durably into queue/pending (origin
 * "bounce", null sender <>), where the router takes it like any mail.
 *
 * Role: the MTA's worker threads (blocking: write, fsync, rename).
 * Never called for a message whose own sender is <> (the caller holds
 * those instead): no bounce loops. */
#ifndef MTA_BOUNCE_H
#define MTA_BOUNCE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "mail/dsn.h"
#include "queue/queue.h"

/* Writes a report about the recipients r[0..n) of the message env (its
 * header block hdr) into queue/pending. The report's id goes to id_r.
 * Returns 0, or -1 with error_r (the caller keeps the recipients open
 * and tries again later: a bounce is never lost). */
int mta_bounce_write(const char *data_dir, const char *hostname, const struct queue_env *env, const char *hdr,
                     size_t hdr_len, const struct dsn_rcpt *r, size_t n, int64_t retry_until,
                     char id_r[QUEUE_ID_LEN + 1], const char **error_r);

#endif
