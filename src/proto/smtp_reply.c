/* smtp_reply (proto) — see smtp_reply.h. Pure: no I/O, no globals.
 * Every input line comes from a remote server and is hostile: lengths and
 * line counts are bounded, codes are checked digit by digit, and text that
 * leaves this module for logs, state files and DSNs is one printable
 * ASCII line. */
#include "proto/smtp_reply.h"
#include "lib/xalloc.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void smtp_reply_init(struct smtp_reply *r)
{
	memset(r, 0, sizeof(*r));
	strbuf_init(&r->text, SMTP_REPLY_LINE_MAX * 4);
}

void smtp_reply_reset(struct smtp_reply *r)
{
	r->code = 0;
	r->nlines = 0;
	r->done = false;
	strbuf_reset(&r->text);
}

void smtp_reply_free(struct smtp_reply *r)
{
	strbuf_free(&r->text);
	memset(r, 0, sizeof(*r));
}

int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len)
{
	if (r->done)
		smtp_reply_reset(r);
	if (len < 3 || len > SMTP_REPLY_LINE_MAX || r->nlines >= SMTP_REPLY_LINES_MAX)
		return -1;
	if (line[0] < '2' || line[0] > '5' || !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]))
		return -1;
	int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return -1;
	if (r->nlines > 0 && code != r->code)
		return -1;
	r->code = code;
	bool last = len == 3 || line[3] == ' ';
	const char *t = len > 4 ? line + 4 : "";
	size_t tl = len > 4 ? len - 4 : 0;
	if (r->nlines > 0)
		strbuf_addc(&r->text, '\n');
	/* the buffer is bounded; a reply that overflows it keeps its head */
	strbuf_add(&r->text, t, tl);
	r->nlines++;
	if (last) {
		r->done = true;
		return 1;
	}
	return 0;
}

char *smtp_reply_oneline(const struct smtp_reply *r)
{
	struct strbuf sb = STRBUF_INIT;
	strbuf_addf(&sb, "%03d", r->code);
	const char *t = r->text.s ? r->text.s : "";
	if (*t)
		strbuf_addc(&sb, ' ');
	for (const unsigned char *p = (const unsigned char *)t; *p && sb.len < SMTP_REPLY_TEXT_MAX; p++) {
		if (*p == '\n')
			strbuf_addc(&sb, ' ');
		else if (*p < 0x20 || *p >= 0x7f)
			strbuf_addc(&sb, '?');
		else
			strbuf_addc(&sb, (char)*p);
	}
	return strbuf_detach(&sb, NULL);
}

/* Reads 1..max digits at *p; returns the count (0 = none). */
static size_t digits(const char *p, size_t max)
{
	size_t n = 0;
	while (n < max && isdigit((unsigned char)p[n]))
		n++;
	return n;
}

const char *smtp_status_from_reply(int code, const char *text, char *buf, size_t n)
{
	int cls = code / 100;
	if (text) {
		const char *p = text;
		/* "c.sss.ddd": class one digit, subject and detail 1..3 digits */
		if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[0] - '0' == cls && p[1] == '.') {
			size_t a = digits(p + 2, 3);
			if (a > 0 && p[2 + a] == '.') {
				size_t b = digits(p + 3 + a, 3);
				char end = p[3 + a + b];
				if (b > 0 && (end == '\0' || end == ' ' || end == '\n' || end == '\t')) {
					snprintf(buf, n, "%.*s", (int)(3 + a + b), p);
					return buf;
				}
			}
		}
	}
	snprintf(buf, n, "%d.0.0", cls >= 2 && cls <= 5 ? cls : 4);
	return buf;
}

/* Does the keyword at line (up to a space or the end) equal kw? */
static bool keyword_is(const char *line, size_t len, const char *kw, const char **rest_r)
{
	size_t kl = strlen(kw);
	if (len < kl || strncasecmp(line, kw, kl) != 0)
		return false;
	if (len > kl && line[kl] != ' ' && line[kl] != '=')
		return false;
	*rest_r = line + kl;
	return true;
}

void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *caps)
{
	memset(caps, 0, sizeof(*caps));
	caps->esmtp = r->code == 250;
	if (!caps->esmtp || r->text.s == NULL)
		return;
	const char *p = r->text.s;
	const char *nl = strchr(p, '\n');
	/* line 1 is "domain greeting" */
	while (nl) {
		p = nl + 1;
		nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		const char *rest;
		char tmp[SMTP_REPLY_LINE_MAX + 1];
		if (len > SMTP_REPLY_LINE_MAX)
			continue;
		memcpy(tmp, p, len);
		tmp[len] = '\0';
		if (keyword_is(tmp, len, "PIPELINING", &rest))
			caps->pipelining = true;
		else if (keyword_is(tmp, len, "8BITMIME", &rest))
			caps->eightbitmime = true;
		else if (keyword_is(tmp, len, "SMTPUTF8", &rest))
			caps->smtputf8 = true;
		else if (keyword_is(tmp, len, "STARTTLS", &rest))
			caps->starttls = true;
		else if (keyword_is(tmp, len, "ENHANCEDSTATUSCODES", &rest))
			caps->enhancedstatuscodes = true;
		else if (keyword_is(tmp, len, "SIZE", &rest)) {
			caps->has_size = true;
			while (*rest == ' ')
				rest++;
			char *end;
			unsigned long long v = isdigit((unsigned char)*rest) ? strtoull(rest, &end, 10) : 0;
			caps->size = v;
		} else if (keyword_is(tmp, len, "AUTH", &rest)) {
			/* "AUTH PLAIN LOGIN" (and the old "AUTH=LOGIN" form) */
			char *save = NULL;
			for (char *t = strtok_r((char *)rest, " =", &save); t; t = strtok_r(NULL, " =", &save)) {
				if (strcasecmp(t, "PLAIN") == 0)
					caps->auth_plain = true;
				else if (strcasecmp(t, "LOGIN") == 0)
					caps->auth_login = true;
			}
		}
	}
}

void smtp_dot_stuff(const char *msg, size_t len, struct strbuf *out)
{
	size_t i = 0;
	bool bol = true;
	while (i < len) {
		if (bol && msg[i] == '.')
			strbuf_addc(out, '.');
		const char *nl = memchr(msg + i, '\n', len - i);
		size_t n = nl ? (size_t)(nl - (msg + i)) + 1 : len - i;
		strbuf_add(out, msg + i, n);
		i += n;
		bol = nl != NULL;
	}
	if (len > 0 && !(len >= 2 && msg[len - 2] == '\r' && msg[len - 1] == '\n')) {
		if (msg[len - 1] == '\r')
			strbuf_addc(out, '\n');
		else
			strbuf_adds(out, "\r\n");
	}
	strbuf_adds(out, ".\r\n");
}
