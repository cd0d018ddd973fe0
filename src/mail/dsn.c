/* dsn — see dsn.h. Pure: bytes and numbers in, one message out; no I/O,
 * no clock, no randomness (the boundary is derived from the queue id and
 * checked against the copied headers).
 *
 * Everything that comes from outside (remote replies, header bytes) is
 * hostile: diagnostic text is made one printable line, header copying is
 * bounded and cut at a line boundary, and the MIME boundary is verified
 * not to occur in the copied text. */
#include "mail/dsn.h"
#include "mail/message.h"
#include "lib/xalloc.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Header lines we write are folded before this column (RFC 5322 2.1.1
 * recommends 78). */
#define DSN_FOLD_COL 76

void dsn_date(int64_t t, char *buf, size_t n)
{
	static const char *days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
		                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	snprintf(buf, n, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7], tm.tm_mday,
	         months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static bool has_8bit(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; p && *p; p++)
		if (*p >= 0x80)
			return true;
	return false;
}

/* Appends s as one line: CR, LF and other control bytes become spaces,
 * cut at max bytes. */
static void add_clean(struct strbuf *sb, const char *s, size_t max)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p && n < max; p++, n++)
		strbuf_addc(sb, (*p < 0x20 || *p == 0x7f) ? ' ' : (char)*p);
}

/* "Name: value" folded at spaces before DSN_FOLD_COL: the space becomes
 * the first byte of the continuation line, so unfolding (RFC 5322 2.2.3:
 * remove the CRLF) gives back the value exactly. value is one clean line. */
static void add_field(struct strbuf *sb, const char *name, const char *value)
{
	size_t col = strlen(name) + 2;
	strbuf_adds(sb, name);
	strbuf_adds(sb, ": ");
	const char *p = value;
	bool first = true;
	for (;;) {
		size_t word = strcspn(p, " ");
		if (!first) {
			if (word > 0 && col + 1 + word > DSN_FOLD_COL) {
				strbuf_adds(sb, "\r\n");
				col = 0;
			}
			strbuf_addc(sb, ' ');
			col++;
		}
		strbuf_add(sb, p, word);
		col += word;
		first = false;
		p += word;
		if (*p == '\0')
			break;
		p++; /* the space, written before the next word */
	}
	strbuf_adds(sb, "\r\n");
}

static const char *action_name(enum dsn_action a)
{
	switch (a) {
	case DSN_ACTION_FAILED:
		return "failed";
	case DSN_ACTION_DELAYED:
		return "delayed";
	case DSN_ACTION_DELIVERED:
		return "delivered";
	}
	return "failed";
}

/* The original header block without its closing empty line, cut at a
 * line boundary at DSN_HEADERS_MAX. */
static size_t headers_len(const char *orig, size_t len)
{
	if (orig == NULL)
		return 0;
	size_t h = message_header_len(orig, len);
	/* drop the empty line that ends the block */
	if (h >= 2 && orig[h - 1] == '\n' && orig[h - 2] == '\r' && (h == 2 || orig[h - 3] == '\n'))
		h -= 2;
	else if (h >= 1 && orig[h - 1] == '\n' && (h == 1 || orig[h - 2] == '\n'))
		h -= 1;
	if (h > DSN_HEADERS_MAX) {
		size_t cut = DSN_HEADERS_MAX;
		while (cut > 0 && orig[cut - 1] != '\n')
			cut--;
		h = cut;
	}
	return h;
}

void dsn_build(const struct dsn_info *in, struct strbuf *out, bool *has_8bit_r)
{
	char date[64], arrival[64];
	dsn_date(in->now, date, sizeof(date));
	dsn_date(in->arrival, arrival, sizeof(arrival));
	bool any_failed = false, utf8_addr = false;
	for (size_t i = 0; i < in->n; i++) {
		if (in->r[i].action == DSN_ACTION_FAILED)
			any_failed = true;
		if (has_8bit(in->r[i].addr))
			utf8_addr = true;
	}
	size_t hlen = headers_len(in->orig, in->orig_len);
	bool hdr8 = false;
	for (size_t i = 0; i < hlen; i++)
		if ((unsigned char)in->orig[i] >= 0x80) {
			hdr8 = true;
			break;
		}

	/* a boundary that the copied headers do not contain */
	char boundary[128];
	for (unsigned k = 0;; k++) {
		snprintf(boundary, sizeof(boundary), "%s/%lld/%u.posthorn", in->queue_id, (long long)in->now, k);
		if (hlen == 0 || memmem(in->orig, hlen, boundary, strlen(boundary)) == NULL)
			break;
	}

	struct strbuf v = STRBUF_INIT;
	strbuf_addf(out, "Date: %s\r\n", date);
	strbuf_addf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", in->reporting_mta);
	strbuf_adds(out, "To: <");
	add_clean(out, in->envelope_from, 512);
	strbuf_adds(out, ">\r\n");
	strbuf_addf(out, "Subject: %s\r\n",
	            any_failed ? "Undelivered Mail Returned to Sender" : "Delayed Mail (still being retried)");
	strbuf_addf(out, "Message-ID: <%s>\r\n", in->message_id);
	strbuf_adds(out, "Auto-Submitted: auto-replied\r\n");
	strbuf_adds(out, "MIME-Version: 1.0\r\n");
	strbuf_addf(out, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n",
	            boundary);
	strbuf_adds(out, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

	/* 1: for people */
	strbuf_addf(out, "--%s\r\n", boundary);
	strbuf_adds(out, "Content-Description: Notification\r\n");
	if (utf8_addr)
		strbuf_adds(out, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
	else
		strbuf_adds(out, "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
	strbuf_addf(out, "This is the mail system at host %s.\r\n\r\n", in->reporting_mta);
	if (any_failed) {
		strbuf_adds(out,
		            "Your message could not be delivered to one or more recipients.\r\n"
		            "The failure is permanent: the message will not be retried for them.\r\n");
	} else {
		strbuf_adds(out,
		            "Your message has not yet been delivered to one or more recipients.\r\n"
		            "It is still in the queue and delivery will be retried");
		if (in->retry_until) {
			char until[64];
			dsn_date(in->retry_until, until, sizeof(until));
			strbuf_addf(out, "\r\nuntil %s", until);
		}
		strbuf_adds(out, ".\r\nYou do not need to send it again.\r\n");
	}
	strbuf_adds(out, "\r\n");
	for (size_t i = 0; i < in->n; i++) {
		const struct dsn_rcpt *r = &in->r[i];
		strbuf_reset(&v);
		strbuf_addc(&v, '<');
		add_clean(&v, r->addr, 512);
		strbuf_adds(&v, ">: ");
		if (r->remote_mta && r->diagnostic) {
			strbuf_adds(&v, "host ");
			add_clean(&v, r->remote_mta, 255);
			strbuf_adds(&v, " said: ");
			add_clean(&v, r->diagnostic, DSN_DIAG_MAX);
		} else if (r->diagnostic) {
			add_clean(&v, r->diagnostic, DSN_DIAG_MAX);
		}
		if (r->reason) {
			if (r->diagnostic)
				strbuf_adds(&v, " (");
			add_clean(&v, r->reason, DSN_DIAG_MAX);
			if (r->diagnostic)
				strbuf_adds(&v, ")");
		}
		strbuf_adds(out, v.s);
		strbuf_adds(out, "\r\n\r\n");
	}

	/* 2: for programs */
	strbuf_addf(out, "--%s\r\n", boundary);
	strbuf_adds(out, "Content-Description: Delivery report\r\n");
	if (utf8_addr)
		strbuf_adds(out, "Content-Type: message/global-delivery-status\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
	else
		strbuf_adds(out, "Content-Type: message/delivery-status\r\n\r\n");
	strbuf_addf(out, "Reporting-MTA: dns; %s\r\n", in->reporting_mta);
	strbuf_addf(out, "X-Posthorn-Queue-ID: %s\r\n", in->queue_id);
	strbuf_addf(out, "Arrival-Date: %s\r\n", arrival);
	for (size_t i = 0; i < in->n; i++) {
		const struct dsn_rcpt *r = &in->r[i];
		strbuf_adds(out, "\r\n");
		strbuf_reset(&v);
		strbuf_adds(&v, has_8bit(r->addr) ? "utf-8; " : "rfc822; ");
		add_clean(&v, r->addr, 512);
		add_field(out, "Final-Recipient", v.s);
		strbuf_addf(out, "Action: %s\r\n", action_name(r->action));
		strbuf_reset(&v);
		add_clean(&v, r->status ? r->status : (r->action == DSN_ACTION_FAILED ? "5.0.0" : "4.0.0"), 16);
		strbuf_addf(out, "Status: %s\r\n", v.s);
		if (r->remote_mta) {
			strbuf_reset(&v);
			strbuf_adds(&v, "dns; ");
			add_clean(&v, r->remote_mta, 255);
			add_field(out, "Remote-MTA", v.s);
		}
		if (r->diagnostic || r->reason) {
			strbuf_reset(&v);
			if (r->diagnostic) {
				strbuf_adds(&v, "smtp; ");
				add_clean(&v, r->diagnostic, DSN_DIAG_MAX);
			} else {
				strbuf_adds(&v, "X-Posthorn; ");
				add_clean(&v, r->reason, DSN_DIAG_MAX);
			}
			add_field(out, "Diagnostic-Code", v.s);
		}
		if (r->last_attempt) {
			char la[64];
			dsn_date(r->last_attempt, la, sizeof(la));
			strbuf_addf(out, "Last-Attempt-Date: %s\r\n", la);
		}
		if (r->action == DSN_ACTION_DELAYED && in->retry_until) {
			char until[64];
			dsn_date(in->retry_until, until, sizeof(until));
			strbuf_addf(out, "Will-Retry-Until: %s\r\n", until);
		}
	}
	strbuf_adds(out, "\r\n");

	/* 3: the original headers */
	strbuf_addf(out, "--%s\r\n", boundary);
	strbuf_addf(out, "Content-Description: %s Message Headers\r\n", any_failed ? "Undelivered" : "Delayed");
	strbuf_adds(out, "Content-Type: text/rfc822-headers\r\n");
	if (hdr8)
		strbuf_adds(out, "Content-Transfer-Encoding: 8bit\r\n");
	strbuf_adds(out, "\r\n");
	if (hlen > 0) {
		strbuf_add(out, in->orig, hlen);
		if (in->orig[hlen - 1] != '\n')
			strbuf_adds(out, "\r\n");
	}
	strbuf_addf(out, "\r\n--%s--\r\n", boundary);
	strbuf_free(&v);
	if (has_8bit_r)
		*has_8bit_r = hdr8 || utf8_addr;
}
