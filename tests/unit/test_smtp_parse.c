/* Unit tests: SMTP command parsing, MAIL/RCPT arguments, the DATA reader
 * (fed whole, one byte at a time and split at every point). */
#include "unit.h"
#include "proto/smtp.h"

#include <stdlib.h>

UNIT_TEST(smtp_cmd_verbs)
{
	static const struct {
		const char *line;
		enum smtp_verb verb;
		const char *args;
	} rows[] = {
		{ "EHLO client.example", SMTP_EHLO, "client.example" },
		{ "ehlo x", SMTP_EHLO, "x" },
		{ "HELO", SMTP_HELO, "" },
		{ "MAIL FROM:<a@b>", SMTP_MAIL, "<a@b>" },
		{ "mail from: <a@b> SIZE=10", SMTP_MAIL, "<a@b> SIZE=10" },
		{ "RCPT TO:<x@y>", SMTP_RCPT, "<x@y>" },
		{ "DATA", SMTP_DATA, "" },
		{ "BDAT 100 LAST", SMTP_BDAT, "100 LAST" },
		{ "QUIT", SMTP_QUIT, "" },
		{ "NOOP", SMTP_NOOP, "" },
		{ "RSET", SMTP_RSET, "" },
		{ "VRFY x", SMTP_VRFY, "x" },
		{ "AUTH PLAIN AGFAAGI=", SMTP_AUTH, "PLAIN AGFAAGI=" },
		{ "STARTTLS", SMTP_STARTTLS, "" },
		{ "MAIL <a@b>", SMTP_UNKNOWN, "" },
		{ "DATAX", SMTP_UNKNOWN, "" },
		{ "", SMTP_UNKNOWN, "" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct smtp_cmd c;
		smtp_cmd_parse(rows[i].line, &c);
		CHECK_INT(c.verb, rows[i].verb);
		if (rows[i].verb != SMTP_UNKNOWN)
			CHECK_STR(c.args, rows[i].args);
	}
}

UNIT_TEST(smtp_mail_args)
{
	static const struct {
		const char *args;
		int ok;
		const char *local, *domain;
		const char *code; /* reply prefix when !ok */
	} rows[] = {
		{ "<a@example.org>", 1, "a", "example.org", NULL },
		{ "<>", 1, "", "", NULL },
		{ "<A@EXAMPLE.org> SIZE=1000 BODY=8BITMIME", 1, "A", "example.org", NULL },
		{ "<@relay.example:a@example.org>", 1, "a", "example.org", NULL },
		{ "<\"john doe\"@example.org>", 1, "john doe", "example.org", NULL },
		{ "<a@[192.0.2.1]>", 1, "a", "[192.0.2.1]", NULL },
		{ "a@example.org", 0, NULL, NULL, "501 5.5.4" },
		{ "<a@example.org", 0, NULL, NULL, "501 5.1.7" },
		{ "<a@@example.org>", 0, NULL, NULL, "501 5.1.7" },
		{ "<a.@example.org>", 0, NULL, NULL, "501 5.1.7" },
		{ "<a@example.org.>", 0, NULL, NULL, "501 5.1.7" },
		{ "<a@-x.org>", 0, NULL, NULL, "501 5.1.7" },
		{ "<a@example.org> SIZE=abc", 0, NULL, NULL, "501 5.5.4" },
		{ "<a@example.org> SIZE=99999999999999999999999", 0, NULL, NULL, "501 5.5.4" },
		{ "<a@example.org> FOO=bar", 0, NULL, NULL, "555 5.5.4" },
		{ "<a@example.org> BODY=BINARYMIME", 0, NULL, NULL, "501 5.5.4" },
		{ "<jörg@example.org>", 0, NULL, NULL, "553 5.6.7" },
		{ "<jörg@example.org> SMTPUTF8", 1, "jörg", "example.org", NULL },
		{ "<\xffx@example.org> SMTPUTF8", 0, NULL, NULL, "501 5.1.7" },
		{ "<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.org>", 0, NULL, NULL, "501 5.1.7" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct smtp_mail_args m;
		const char *reply = NULL;
		int r = smtp_parse_mail(rows[i].args, &m, &reply);
		if (rows[i].ok) {
			CHECK_INT(r, 0);
			if (r == 0) {
				CHECK_STR(m.addr.local, rows[i].local);
				CHECK_STR(m.addr.domain, rows[i].domain);
				address_free(&m.addr);
			}
		} else {
			CHECK_INT(r, -1);
			if (r == -1 && strncmp(reply, rows[i].code, strlen(rows[i].code)) != 0) {
				fprintf(stderr, "  row %zu: reply \"%s\", want prefix \"%s\"\n", i, reply, rows[i].code);
				unit_failures++;
			}
			if (r == 0)
				address_free(&m.addr);
		}
	}
	struct smtp_mail_args m;
	const char *reply;
	CHECK_INT(smtp_parse_mail("<a@b.org> SIZE=1234 SMTPUTF8", &m, &reply), 0);
	CHECK(m.has_size && m.size == 1234 && m.smtputf8);
	address_free(&m.addr);
}

UNIT_TEST(smtp_rcpt_args)
{
	struct mail_address a;
	const char *reply;
	CHECK_INT(smtp_parse_rcpt("<User@Example.ORG>", false, &a, &reply), 0);
	CHECK_STR(a.local, "User");
	CHECK_STR(a.domain, "example.org");
	address_free(&a);
	CHECK_INT(smtp_parse_rcpt("<>", false, &a, &reply), -1);
	/* DSN is not advertised: its parameters are refused (RFC 5321 4.1.1.11) */
	CHECK_INT(smtp_parse_rcpt("<a@b.org> NOTIFY=NEVER", false, &a, &reply), -1);
	CHECK(strncmp(reply, "555 5.5.4", 9) == 0);
	CHECK_INT(smtp_parse_rcpt("<a@b.org> X=1", false, &a, &reply), -1);
	CHECK_INT(smtp_parse_rcpt("<a@b.org>junk", false, &a, &reply), -1);
	CHECK_INT(smtp_parse_rcpt("<user%elsewhere.org@b.org>", false, &a, &reply), 0);
	CHECK_STR(a.local, "user%elsewhere.org");
	CHECK_STR(a.domain, "b.org");
	address_free(&a);
}

struct data_row {
	const char *in;
	const char *out;      /* unstuffed message */
	size_t consumed;      /* 0 = whole input */
	int done;
	int bare;             /* bare CR or LF flagged */
	int longline;
};

static const struct data_row data_rows[] = {
	{ "Subject: x\r\n\r\nhello\r\n.\r\n", "Subject: x\r\n\r\nhello\r\n", 0, 1, 0, 0 },
	{ ".\r\n", "", 0, 1, 0, 0 },
	{ "..leading dot\r\n.\r\n", ".leading dot\r\n", 0, 1, 0, 0 },
	{ "...\r\n.\r\n", "..\r\n", 0, 1, 0, 0 },
	{ "a\r\n.\r\nMAIL FROM:<x@y>\r\n", "a\r\n", 6, 1, 0, 0 },
	/* smuggling variants: never an end, always flagged */
	{ "a\n.\nMAIL FROM:<x@y>\r\n.\r\n", "a\n.\nMAIL FROM:<x@y>\r\n", 0, 1, 1, 0 },
	{ "a\r.\rMAIL\r\n.\r\n", "a\r.\rMAIL\r\n", 0, 1, 1, 0 },
	{ "a\n.\r\nMAIL\r\n.\r\n", "a\n.\r\nMAIL\r\n", 0, 1, 1, 0 },
	{ "a\r\n.\nMAIL\r\n.\r\n", "a\r\n\nMAIL\r\n", 0, 1, 1, 0 },
	{ "a\r\n.\r.\r\n", "a\r\n\r.\r\n", 0, 0, 1, 0 },
	{ "a\r.\r\nb\r\n.\r\n", "a\r.\r\nb\r\n", 0, 1, 1, 0 },
	{ "no end yet\r\n", "no end yet\r\n", 0, 0, 0, 0 },
	{ "nul\0byte\r\n.\r\n", "nul\0byte\r\n", 0, 1, 0, 0 },
};

static size_t row_len(const char *s)
{
	/* rows may contain one NUL: measure up to ".\r\n" end or the literal */
	if (strncmp(s, "nul", 3) == 0)
		return 13;
	return strlen(s);
}

static size_t out_len(const struct data_row *r)
{
	if (strncmp(r->in, "nul", 3) == 0)
		return 10;
	return strlen(r->out);
}

UNIT_TEST(smtp_data_whole_and_split)
{
	for (size_t i = 0; i < sizeof(data_rows) / sizeof(data_rows[0]); i++) {
		const struct data_row *r = &data_rows[i];
		size_t n = row_len(r->in);
		size_t want_consumed = r->consumed ? r->consumed : n;
		/* split at every point, and byte by byte */
		for (size_t split = 0; split <= n + 1; split++) {
			struct smtp_data d;
			struct strbuf out = STRBUF_INIT;
			smtp_data_init(&d, 998);
			size_t used = 0;
			if (split <= n) {
				used = smtp_data_feed(&d, (const unsigned char *)r->in, split, &out);
				if (!d.done)
					used += smtp_data_feed(&d, (const unsigned char *)r->in + used, n - used, &out);
			} else {
				for (size_t k = 0; k < n && !d.done; k++)
					used += smtp_data_feed(&d, (const unsigned char *)r->in + k, 1, &out);
			}
			if (used != want_consumed || (int)d.done != r->done || (int)(d.bare_cr || d.bare_lf) != r->bare ||
			    out.len != out_len(r) || (out.len && memcmp(out.s, r->out, out.len) != 0)) {
				fprintf(stderr, "  row %zu split %zu: used %zu/%zu done %d bare %d out \"%.*s\"\n", i, split,
				        used, want_consumed, d.done, d.bare_cr || d.bare_lf, (int)out.len,
				        out.s ? out.s : "");
				unit_failures++;
				strbuf_free(&out);
				break;
			}
			strbuf_free(&out);
		}
	}
}

UNIT_TEST(smtp_data_long_line)
{
	struct smtp_data d;
	struct strbuf out = STRBUF_INIT;
	char line[1200];
	memset(line, 'x', sizeof(line));
	smtp_data_init(&d, 998);
	smtp_data_feed(&d, (const unsigned char *)line, 998, &out);
	smtp_data_feed(&d, (const unsigned char *)"\r\n", 2, &out);
	CHECK(!d.long_line);
	smtp_data_feed(&d, (const unsigned char *)line, 999, &out);
	CHECK(d.long_line);
	smtp_data_feed(&d, (const unsigned char *)"\r\n.\r\n", 5, &out);
	CHECK(d.done);
	strbuf_free(&out);
}

UNIT_TEST(smtp_bdat_check)
{
	struct smtp_data d;
	smtp_data_init(&d, 998);
	smtp_data_check(&d, (const unsigned char *)"a\r\nb\r", 5);
	smtp_data_check(&d, (const unsigned char *)"\nc\r\n", 4);
	CHECK(!d.bare_cr && !d.bare_lf);
	CHECK(smtp_data_check_end(&d));
	smtp_data_init(&d, 998);
	smtp_data_check(&d, (const unsigned char *)"a\nb", 3);
	CHECK(d.bare_lf);
	CHECK(!smtp_data_check_end(&d));
	smtp_data_init(&d, 998);
	smtp_data_check(&d, (const unsigned char *)"a\rb\r\n", 5);
	CHECK(d.bare_cr);
}
