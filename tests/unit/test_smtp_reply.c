/* Unit tests: the SMTP client's pure parts (proto/smtp_reply.h) — reply
 * assembly fed whole and one line at a time, malformed replies, enhanced
 * status codes, EHLO capabilities, dot-stuffing at every split; and the
 * MX rdata parser and host ordering of mta/dns.h. */
#include "unit.h"
#include "lib/strbuf.h"
#include "mta/dns.h"
#include "proto/smtp_reply.h"

#include <stdlib.h>

/* Feeds "\n"-separated lines; returns the last feed result. */
static int feed_all(struct smtp_reply *r, const char *text)
{
	int rc = 0;
	const char *p = text;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		rc = smtp_reply_feed(r, p, n);
		if (rc != 0)
			return rc;
		p += n + (nl ? 1 : 0);
	}
	return rc;
}

UNIT_TEST(smtp_reply_table)
{
	static const struct {
		const char *in;
		int rc, code, nlines;
		const char *oneline;
	} rows[] = {
		{ "250 ok", 1, 250, 1, "250 ok" },
		{ "220", 1, 220, 1, "220" },
		{ "250-mx.example Hello\n250-PIPELINING\n250 SIZE 1000", 1, 250, 3,
		  "250 mx.example Hello PIPELINING SIZE 1000" },
		{ "550 5.1.1 <a@b>: user unknown", 1, 550, 1, "550 5.1.1 <a@b>: user unknown" },
		{ "451-first\n451 second", 1, 451, 2, "451 first second" },
		{ "250-continued", 0, 250, 1, NULL },
		/* malformed */
		{ "25 ok", -1, 0, 0, NULL },
		{ "abc ok", -1, 0, 0, NULL },
		{ "250xok", -1, 0, 0, NULL },
		{ "650 six hundred", -1, 0, 0, NULL },
		{ "150 one", -1, 0, 0, NULL },
		{ "250-a\n251 b", -1, 0, 0, NULL }, /* code changes within a reply */
		{ "250 control\x01\x7f\xc3\xa9 bytes", 1, 250, 1, "250 control???? bytes" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct smtp_reply r;
		smtp_reply_init(&r);
		int rc = feed_all(&r, rows[i].in);
		if (rc != rows[i].rc) {
			fprintf(stderr, "  row %zu (%s): rc %d, want %d\n", i, rows[i].in, rc, rows[i].rc);
			unit_failures++;
		} else if (rc == 1) {
			CHECK_INT(r.code, rows[i].code);
			CHECK_INT(r.nlines, rows[i].nlines);
			char *one = smtp_reply_oneline(&r);
			CHECK_STR(one, rows[i].oneline);
			free(one);
		}
		smtp_reply_free(&r);
	}
}

UNIT_TEST(smtp_reply_limits_and_reuse)
{
	struct smtp_reply r;
	smtp_reply_init(&r);
	/* too many lines: refused, not grown without bound */
	int rc = 0;
	for (int i = 0; i < SMTP_REPLY_LINES_MAX + 5 && rc == 0; i++)
		rc = smtp_reply_feed(&r, "250-x", 5);
	CHECK_INT(rc, -1);
	smtp_reply_reset(&r);
	/* an over-long line is refused */
	char *big = malloc(SMTP_REPLY_LINE_MAX + 10);
	memset(big, 'a', SMTP_REPLY_LINE_MAX + 9);
	memcpy(big, "250 ", 4);
	CHECK_INT(smtp_reply_feed(&r, big, SMTP_REPLY_LINE_MAX + 9), -1);
	free(big);
	/* a completed reply is replaced by the next one */
	smtp_reply_reset(&r);
	CHECK_INT(smtp_reply_feed(&r, "250 one", 7), 1);
	CHECK_INT(smtp_reply_feed(&r, "354 go ahead", 12), 1);
	CHECK_INT(r.code, 354);
	CHECK_INT(r.nlines, 1);
	CHECK_STR(r.text.s, "go ahead");
	smtp_reply_free(&r);
}

UNIT_TEST(smtp_status_codes)
{
	static const struct {
		int code;
		const char *text, *want;
	} rows[] = {
		{ 550, "5.1.1 user unknown", "5.1.1" },
		{ 451, "4.7.1 greylisted", "4.7.1" },
		{ 552, "5.3.4", "5.3.4" },
		{ 550, "5.1.10 null mx", "5.1.10" },
		{ 550, "5.123.456 x", "5.123.456" },
		{ 550, "4.1.1 class disagrees", "5.0.0" },
		{ 450, "user busy", "4.0.0" },
		{ 550, "5.1 short", "5.0.0" },
		{ 550, "5.1.1234 too long", "5.0.0" },
		{ 250, "2.0.0 ok", "2.0.0" },
		{ 421, NULL, "4.0.0" },
		{ 550, "", "5.0.0" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char buf[16];
		CHECK_STR(smtp_status_from_reply(rows[i].code, rows[i].text, buf, sizeof(buf)), rows[i].want);
	}
}

UNIT_TEST(smtp_caps_from_ehlo)
{
	struct smtp_reply r;
	smtp_reply_init(&r);
	CHECK_INT(feed_all(&r, "250-mx.example.org Hello\n250-pipelining\n250-SIZE 10240000\n250-8BITMIME\n"
	                       "250-AUTH=LOGIN\n250-AUTH PLAIN CRAM-MD5\n250-ENHANCEDSTATUSCODES\n"
	                       "250-SMTPUTF8\n250 STARTTLS"),
	          1);
	struct smtp_caps c;
	smtp_caps_parse(&r, &c);
	CHECK(c.esmtp);
	CHECK(c.pipelining);
	CHECK(c.has_size);
	CHECK_INT(c.size, 10240000);
	CHECK(c.eightbitmime);
	CHECK(c.smtputf8);
	CHECK(c.starttls);
	CHECK(c.enhancedstatuscodes);
	CHECK(c.auth_plain);
	CHECK(c.auth_login);
	smtp_reply_reset(&r);
	/* the greeting line is not a keyword; SIZE without a number = no limit;
	 * keywords must match whole */
	CHECK_INT(feed_all(&r, "250-PIPELINING hello\n250-SIZE\n250 8BITMIMEX"), 1);
	smtp_caps_parse(&r, &c);
	CHECK(!c.pipelining);
	CHECK(c.has_size);
	CHECK_INT(c.size, 0);
	CHECK(!c.eightbitmime);
	smtp_reply_reset(&r);
	CHECK_INT(feed_all(&r, "502 5.5.1 EHLO not implemented"), 1);
	smtp_caps_parse(&r, &c);
	CHECK(!c.esmtp);
	CHECK(!c.has_size);
	smtp_reply_free(&r);
}

UNIT_TEST(smtp_dot_stuffing)
{
	static const struct {
		const char *in, *want;
	} rows[] = {
		{ "Subject: x\r\n\r\nbody\r\n", "Subject: x\r\n\r\nbody\r\n.\r\n" },
		{ ".starts\r\n", "..starts\r\n.\r\n" },
		{ "a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n" },
		{ "a\r\n..two\r\n", "a\r\n...two\r\n.\r\n" },
		{ "no final crlf", "no final crlf\r\n.\r\n" },
		{ "ends in cr\r", "ends in cr\r\n.\r\n" },
		{ "", ".\r\n" },
		{ "mid.dot\r\n", "mid.dot\r\n.\r\n" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct strbuf out = STRBUF_INIT;
		smtp_dot_stuff(rows[i].in, strlen(rows[i].in), &out);
		CHECK_MEM(out.s ? out.s : "", out.len, rows[i].want, strlen(rows[i].want));
		strbuf_free(&out);
	}
}

/* Reverses dot-stuffing the way a server does (RFC 5321 4.5.2). */
static void unstuff(const char *s, size_t n, struct strbuf *out)
{
	size_t i = 0;
	while (i < n) {
		const char *nl = memchr(s + i, '\n', n - i);
		size_t l = nl ? (size_t)(nl - (s + i)) + 1 : n - i;
		if (l == 3 && memcmp(s + i, ".\r\n", 3) == 0)
			return; /* end of data */
		if (s[i] == '.')
			strbuf_add(out, s + i + 1, l - 1);
		else
			strbuf_add(out, s + i, l);
		i += l;
	}
}

UNIT_TEST(smtp_dot_stuff_roundtrip)
{
	const char *msg = ".\r\n..\r\n.x\r\nline\r\n.\r\n.end\r\n";
	struct strbuf out = STRBUF_INIT, back = STRBUF_INIT;
	smtp_dot_stuff(msg, strlen(msg), &out);
	unstuff(out.s, out.len, &back);
	CHECK_MEM(back.s, back.len, msg, strlen(msg));
	/* the end mark appears once, at the very end */
	CHECK(out.len >= 5 && memcmp(out.s + out.len - 5, "\r\n.\r\n", 5) == 0);
	const char *first_end = strstr(out.s, "\r\n.\r\n");
	CHECK(first_end == out.s + out.len - 5);
	strbuf_free(&out);
	strbuf_free(&back);
}

UNIT_TEST(dns_mx_rdata)
{
	static const struct {
		const char *rd;
		size_t len;
		int rc, pref;
		const char *name;
	} rows[] = {
		{ "\x00\x0a\x03mx1\x07" "example\x04test\x00", 20, 0, 10, "mx1.example.test" },
		{ "\x00\x00\x00", 3, 0, 0, "" }, /* null MX (RFC 7505) */
		{ "\xff\xff\x02MX\x00", 6, 0, 65535, "mx" }, /* lower-cased */
		{ "\x00\x0a\x03mx1", 6, -1, 0, NULL },       /* no root label */
		{ "\x00\x0a\x05mx1\x00", 7, -1, 0, NULL },   /* label past the end */
		{ "\x00\x0a\xc0\x0c", 4, -1, 0, NULL },      /* compression pointer */
		{ "\x00\x0a\x03m x\x00", 7, -1, 0, NULL },   /* not a host name */
		{ "\x00\x0a\x00junk", 7, -1, 0, NULL },      /* trailing bytes */
		{ "\x00", 1, -1, 0, NULL },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char name[256];
		int pref = -1;
		int rc = dns_mx_rdata_parse((const unsigned char *)rows[i].rd, rows[i].len, &pref, name, sizeof(name));
		if (rc != rows[i].rc) {
			fprintf(stderr, "  row %zu: rc %d, want %d\n", i, rc, rows[i].rc);
			unit_failures++;
			continue;
		}
		if (rc == 0) {
			CHECK_INT(pref, rows[i].pref);
			CHECK_STR(name, rows[i].name);
		}
	}
}

UNIT_TEST(dns_hosts_by_preference)
{
	char *names[] = { "c", "a1", "b", "a2", "a3" };
	int prefs[] = { 30, 10, 20, 10, 10 };
	int seen_first[3] = { 0, 0, 0 };
	for (uint32_t seed = 1; seed < 200; seed++) {
		struct dns_host h[5];
		memset(h, 0, sizeof(h));
		for (int i = 0; i < 5; i++) {
			h[i].name = names[i];
			h[i].pref = prefs[i];
		}
		dns_hosts_order(h, 5, seed);
		for (int i = 1; i < 5; i++)
			CHECK(h[i - 1].pref <= h[i].pref);
		CHECK_STR(h[3].name, "b");
		CHECK_STR(h[4].name, "c");
		/* the equal ones are shuffled: each comes first sometimes */
		seen_first[h[0].name[1] - '1']++;
	}
	for (int i = 0; i < 3; i++)
		CHECK(seen_first[i] > 20);
}
