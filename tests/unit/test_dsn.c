/* Unit tests: the RFC 3464 DSN builder (mail/dsn.h) — one report byte for
 * byte, then properties: folded fields unfold to the exact diagnostic,
 * every line within limits, the boundary never occurs in the copied
 * headers, 8-bit headers are flagged, header copies are bounded, delay
 * reports. */
#include "unit.h"
#include "lib/strbuf.h"
#include "mail/dsn.h"

#include <stdlib.h>

static const char *orig_msg = "Received: from client.test by mx.test; Thu, 3 Dec 2026 17:00:00 +0000\r\n"
                              "From: Alice <alice@example.org>\r\n"
                              "To: bob@remote.test\r\n"
                              "Subject: Quarterly figures\r\n"
                              "\r\n"
                              "secret body text\r\n";

UNIT_TEST(dsn_golden)
{
	struct dsn_rcpt r[] = {
		{ "bob@remote.test", DSN_ACTION_FAILED, "5.1.1", "mx.remote.test", "550 5.1.1 <bob@remote.test>: unknown",
		  NULL, 1796320000 },
		{ "carol@nx.test", DSN_ACTION_FAILED, "5.1.2", NULL, NULL,
		  "Host or domain name not found: nx.test does not exist", 1796320000 },
	};
	struct dsn_info in = {
		.reporting_mta = "mail.example.org",
		.queue_id = "K1QV000000000001",
		.envelope_from = "alice@example.org",
		.arrival = 1796319000,
		.now = 1796320100,
		.message_id = "K1QV000000000002.1796320100.dsn@mail.example.org",
		.r = r,
		.n = 2,
		.orig = orig_msg,
		.orig_len = strlen(orig_msg),
	};
	struct strbuf out = STRBUF_INIT;
	bool h8 = true;
	dsn_build(&in, &out, &h8);
	const char *want =
	    "Date: Thu, 03 Dec 2026 17:48:20 +0000\r\n"
	    "From: Mail Delivery System <MAILER-DAEMON@mail.example.org>\r\n"
	    "To: <alice@example.org>\r\n"
	    "Subject: Undelivered Mail Returned to Sender\r\n"
	    "Message-ID: <K1QV000000000002.1796320100.dsn@mail.example.org>\r\n"
	    "Auto-Submitted: auto-replied\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"K1QV000000000001/1796320100/0.posthorn\"\r\n"
	    "\r\n"
	    "This is a MIME-encapsulated message.\r\n"
	    "\r\n"
	    "--K1QV000000000001/1796320100/0.posthorn\r\n"
	    "Content-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n"
	    "\r\n"
	    "This is the mail system at host mail.example.org.\r\n"
	    "\r\n"
	    "Your message could not be delivered to one or more recipients.\r\n"
	    "The failure is permanent: the message will not be retried for them.\r\n"
	    "\r\n"
	    "<bob@remote.test>: host mx.remote.test said: 550 5.1.1 <bob@remote.test>: unknown\r\n"
	    "\r\n"
	    "<carol@nx.test>: Host or domain name not found: nx.test does not exist\r\n"
	    "\r\n"
	    "--K1QV000000000001/1796320100/0.posthorn\r\n"
	    "Content-Description: Delivery report\r\n"
	    "Content-Type: message/delivery-status\r\n"
	    "\r\n"
	    "Reporting-MTA: dns; mail.example.org\r\n"
	    "X-Posthorn-Queue-ID: K1QV000000000001\r\n"
	    "Arrival-Date: Thu, 03 Dec 2026 17:30:00 +0000\r\n"
	    "\r\n"
	    "Final-Recipient: rfc822; bob@remote.test\r\n"
	    "Action: failed\r\n"
	    "Status: 5.1.1\r\n"
	    "Remote-MTA: dns; mx.remote.test\r\n"
	    "Diagnostic-Code: smtp; 550 5.1.1 <bob@remote.test>: unknown\r\n"
	    "Last-Attempt-Date: Thu, 03 Dec 2026 17:46:40 +0000\r\n"
	    "\r\n"
	    "Final-Recipient: rfc822; carol@nx.test\r\n"
	    "Action: failed\r\n"
	    "Status: 5.1.2\r\n"
	    "Diagnostic-Code: X-Posthorn; Host or domain name not found: nx.test does not\r\n"
	    " exist\r\n"
	    "Last-Attempt-Date: Thu, 03 Dec 2026 17:46:40 +0000\r\n"
	    "\r\n"
	    "--K1QV000000000001/1796320100/0.posthorn\r\n"
	    "Content-Description: Undelivered Message Headers\r\n"
	    "Content-Type: text/rfc822-headers\r\n"
	    "\r\n"
	    "Received: from client.test by mx.test; Thu, 3 Dec 2026 17:00:00 +0000\r\n"
	    "From: Alice <alice@example.org>\r\n"
	    "To: bob@remote.test\r\n"
	    "Subject: Quarterly figures\r\n"
	    "\r\n"
	    "--K1QV000000000001/1796320100/0.posthorn--\r\n";
	CHECK_MEM(out.s, out.len, want, strlen(want));
	CHECK(!h8);
	CHECK(strstr(out.s, "secret body") == NULL); /* headers only, never the body */
	strbuf_free(&out);
}

/* Every line ends in CRLF, none is longer than 998, no bare CR/LF. */
static void check_lines(const char *s, size_t n)
{
	size_t start = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n') {
			if (i == 0 || s[i - 1] != '\r') {
				fprintf(stderr, "  bare LF at %zu\n", i);
				unit_failures++;
				return;
			}
			if (i - start - 1 > 998) {
				fprintf(stderr, "  line at %zu is %zu long\n", start, i - start - 1);
				unit_failures++;
			}
			start = i + 1;
		} else if (s[i] == '\r' && (i + 1 >= n || s[i + 1] != '\n')) {
			fprintf(stderr, "  bare CR at %zu\n", i);
			unit_failures++;
			return;
		}
	}
	CHECK(start == n);
}

/* The unfolded value of the first field called name after offset from. */
static char *field(const char *s, const char *name, const char *from)
{
	const char *p = strstr(from ? from : s, name);
	if (p == NULL)
		return NULL;
	p += strlen(name);
	struct strbuf v = STRBUF_INIT;
	for (;;) {
		const char *e = strstr(p, "\r\n");
		strbuf_add(&v, p, (size_t)(e - p));
		if (e[2] != ' ' && e[2] != '\t')
			break;
		p = e + 2; /* unfolding: remove the CRLF only */
	}
	return strbuf_detach(&v, NULL);
}

UNIT_TEST(dsn_folding_and_hostile_input)
{
	char diag[600];
	/* a long remote reply with CR LF smuggled in */
	snprintf(diag, sizeof(diag), "550 5.7.1 %s\r\nX-Injected: yes %s", "word word word word word word word word "
	         "word word word word word word word word word word word word word word", "tail tail tail");
	struct dsn_rcpt r[] = {
		{ "x@remote.test", DSN_ACTION_FAILED, "5.7.1", "mx.remote.test", diag, NULL, 0 },
	};
	/* headers that contain what would be our first boundary */
	const char *orig = "Subject: --Q/5/0.posthorn trick\r\nX-B: Q/5/0.posthorn\r\n\r\nbody\r\n";
	struct dsn_info in = {
		.reporting_mta = "m.test", .queue_id = "Q", .envelope_from = "s@test", .arrival = 1, .now = 5,
		.message_id = "id@m.test", .r = r, .n = 1, .orig = orig, .orig_len = strlen(orig),
	};
	struct strbuf out = STRBUF_INIT;
	dsn_build(&in, &out, NULL);
	check_lines(out.s, out.len);
	CHECK(strstr(out.s, "boundary=\"Q/5/1.posthorn\"") != NULL);
	CHECK(strstr(out.s, "\r\nX-Injected:") == NULL);
	char *dc = field(out.s, "Diagnostic-Code: ", NULL);
	char want[700];
	snprintf(want, sizeof(want), "smtp; %s", diag);
	want[strlen("smtp; ") + strcspn(diag, "\r")] = ' ';
	want[strlen("smtp; ") + strcspn(diag, "\r") + 1] = ' ';
	CHECK_STR(dc, want);
	free(dc);
	strbuf_free(&out);
}

UNIT_TEST(dsn_delayed_and_8bit)
{
	struct dsn_rcpt r[] = {
		{ "lena@wait.test", DSN_ACTION_DELAYED, "4.2.0", "mx.wait.test", "451 4.2.0 mailbox busy", NULL, 100 },
	};
	const char *orig = "Subject: Gr\xc3\xbc\xc3\x9f" "e\r\n\r\nbody\r\n";
	struct dsn_info in = {
		.reporting_mta = "m.test", .queue_id = "Q", .envelope_from = "s@test", .arrival = 1, .now = 200,
		.retry_until = 1 + 96 * 3600, .message_id = "id@m.test", .r = r, .n = 1, .orig = orig,
		.orig_len = strlen(orig),
	};
	struct strbuf out = STRBUF_INIT;
	bool h8 = false;
	dsn_build(&in, &out, &h8);
	check_lines(out.s, out.len);
	CHECK(h8);
	CHECK(strstr(out.s, "Subject: Delayed Mail (still being retried)\r\n") != NULL);
	CHECK(strstr(out.s, "Action: delayed\r\nStatus: 4.2.0\r\n") != NULL);
	CHECK(strstr(out.s, "Will-Retry-Until: Mon, 05 Jan 1970 00:00:01 +0000\r\n") != NULL);
	CHECK(strstr(out.s, "Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 8bit\r\n") != NULL);
	CHECK(strstr(out.s, "Content-Description: Delayed Message Headers") != NULL);
	strbuf_free(&out);
}

UNIT_TEST(dsn_headers_bounded)
{
	struct strbuf orig = STRBUF_INIT;
	for (int i = 0; orig.len < DSN_HEADERS_MAX * 2; i++)
		strbuf_addf(&orig, "X-Filler-%d: %s\r\n", i, "abcdefghijklmnopqrstuvwxyz0123456789");
	strbuf_adds(&orig, "\r\nbody\r\n");
	struct dsn_rcpt r[] = { { "a@b.test", DSN_ACTION_FAILED, "5.0.0", NULL, NULL, "reason", 0 } };
	struct dsn_info in = {
		.reporting_mta = "m.test", .queue_id = "Q", .envelope_from = "s@test", .arrival = 1, .now = 2,
		.message_id = "id@m.test", .r = r, .n = 1, .orig = orig.s, .orig_len = orig.len,
	};
	struct strbuf out = STRBUF_INIT;
	dsn_build(&in, &out, NULL);
	check_lines(out.s, out.len);
	CHECK(out.len < DSN_HEADERS_MAX + 4096);
	CHECK(strstr(out.s, "X-Filler-0: ") != NULL);
	/* the copy ends at a whole line, then the closing boundary */
	const char *close = strstr(out.s, "\r\n\r\n--Q/2/0.posthorn--\r\n");
	CHECK(close != NULL && close[-1] == '9');
	strbuf_free(&out);
	strbuf_free(&orig);
}

UNIT_TEST(dsn_date_format)
{
	char buf[64];
	dsn_date(0, buf, sizeof(buf));
	CHECK_STR(buf, "Thu, 01 Jan 1970 00:00:00 +0000");
	dsn_date(1796320100, buf, sizeof(buf));
	CHECK_STR(buf, "Thu, 03 Dec 2026 17:48:20 +0000");
}
