/* dsn — builds delivery status notifications (RFC 3464): a
 * multipart/report; report-type=delivery-status message (RFC 6522) with a
 * human-readable part, the machine-readable message/delivery-status part
 * and the original message's header block (text/rfc822-headers). Pure:
 * every input, including the time, is passed in, so the output is
 * deterministic and unit-tested byte for byte. */
#ifndef MAIL_DSN_H
#define MAIL_DSN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lib/strbuf.h"

/* Header block of the original message copied into the report; longer
 * blocks are cut at a line boundary (Postfix sends headers only, too). */
#define DSN_HEADERS_MAX (64 * 1024)
/* Diagnostic-Code text kept per recipient. */
#define DSN_DIAG_MAX 512

enum dsn_action { DSN_ACTION_FAILED, DSN_ACTION_DELAYED, DSN_ACTION_DELIVERED };

struct dsn_rcpt {
	const char *addr;        /* "local@domain" (the envelope recipient) */
	enum dsn_action action;
	const char *status;      /* "5.1.1" */
	const char *remote_mta;  /* host name, or NULL */
	const char *diagnostic;  /* SMTP reply "550 5.1.1 ...", or NULL */
	const char *reason;      /* our own words when there is no reply (DNS, expiry), or NULL */
	int64_t last_attempt;    /* unix seconds, 0 = unknown */
};

struct dsn_info {
	const char *reporting_mta; /* our host name */
	const char *queue_id;      /* the original message's id */
	const char *envelope_from; /* the original sender: the report's To: */
	int64_t arrival;           /* when we received the original */
	int64_t now;               /* the report's Date: */
	int64_t retry_until;       /* DELAYED reports: when we give up (0 = omit) */
	const char *message_id;    /* the report's Message-ID without <> */
	const struct dsn_rcpt *r;
	size_t n;
	const char *orig;          /* the original message (CRLF), for its headers */
	size_t orig_len;
};

/* Appends the complete report (header and body, CRLF line ends) to out.
 * *has_8bit_r tells whether the copied headers carry 8-bit bytes (the
 * report then needs 8BITMIME). */
void dsn_build(const struct dsn_info *in, struct strbuf *out, bool *has_8bit_r);

/* RFC 5322 date of t (UTC): "Thu, 03 Dec 2026 17:18:00 +0000". */
void dsn_date(int64_t t, char *buf, size_t n);

#endif
