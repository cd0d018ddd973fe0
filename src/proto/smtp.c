/* smtp (proto) — see smtp.h. Pure: no I/O, no allocation beyond the
 * output strbuf and parsed addresses. */
#include "proto/smtp.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	enum smtp_verb verb;
} verbs[] = {
	{ "HELO", SMTP_HELO }, { "EHLO", SMTP_EHLO }, { "DATA", SMTP_DATA }, { "BDAT", SMTP_BDAT },
	{ "RSET", SMTP_RSET }, { "NOOP", SMTP_NOOP }, { "QUIT", SMTP_QUIT }, { "VRFY", SMTP_VRFY },
	{ "EXPN", SMTP_EXPN }, { "HELP", SMTP_HELP }, { "AUTH", SMTP_AUTH },
	{ "STARTTLS", SMTP_STARTTLS },
};

void smtp_cmd_parse(const char *line, struct smtp_cmd *cmd)
{
	cmd->verb = SMTP_UNKNOWN;
	cmd->args = "";
	if (strncasecmp(line, "MAIL FROM:", 10) == 0) {
		cmd->verb = SMTP_MAIL;
		cmd->args = line + 10;
	} else if (strncasecmp(line, "RCPT TO:", 8) == 0) {
		cmd->verb = SMTP_RCPT;
		cmd->args = line + 8;
	}
	if (cmd->verb != SMTP_UNKNOWN) {
		/* RFC 5321 says no space after the colon; many clients send one */
		while (*cmd->args == ' ')
			cmd->args++;
		return;
	}
	size_t n = strcspn(line, " ");
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strlen(verbs[i].name) == n && strncasecmp(line, verbs[i].name, n) == 0) {
			cmd->verb = verbs[i].verb;
			cmd->args = line[n] == ' ' ? line + n + 1 : line + n;
			return;
		}
	}
}

/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
static bool keyword_ok(const char *k, size_t n)
{
	if (n == 0 || !isalnum((unsigned char)k[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!isalnum((unsigned char)k[i]) && k[i] != '-')
			return false;
	return true;
}

/* Iterates "KEY[=VALUE]" parameters separated by spaces. */
struct param {
	const char *key;
	size_t keylen;
	const char *val;
	size_t vallen;
};

static const char *next_param(const char *p, struct param *pr, bool *bad)
{
	*bad = false;
	while (*p == ' ')
		p++;
	if (*p == '\0')
		return NULL;
	const char *s = p;
	while (*p && *p != ' ')
		p++;
	const char *eq = memchr(s, '=', (size_t)(p - s));
	pr->key = s;
	pr->keylen = eq ? (size_t)(eq - s) : (size_t)(p - s);
	pr->val = eq ? eq + 1 : NULL;
	pr->vallen = eq ? (size_t)(p - eq - 1) : 0;
	if (!keyword_ok(pr->key, pr->keylen))
		*bad = true;
	return p;
}

static bool key_is(const struct param *pr, const char *k)
{
	return pr->keylen == strlen(k) && strncasecmp(pr->key, k, pr->keylen) == 0;
}

static bool val_is(const struct param *pr, const char *v)
{
	return pr->val && pr->vallen == strlen(v) && strncasecmp(pr->val, v, pr->vallen) == 0;
}

int smtp_parse_mail(const char *args, struct smtp_mail_args *m, const char **reply_r)
{
	memset(m, 0, sizeof(*m));
	/* Decide UTF-8 tolerance after seeing SMTPUTF8 among the params. */
	bool utf8 = false;
	const char *close = strchr(args, '>');
	if (close) {
		struct param pr;
		bool bad;
		for (const char *p = close + 1; (p = next_param(p, &pr, &bad)) != NULL;)
			if (!bad && key_is(&pr, "SMTPUTF8") && pr.val == NULL)
				utf8 = true;
	}
	const char *end, *err;
	if (address_parse_path(args, true, utf8, &m->addr, &end, &err) < 0) {
		if (strstr(err, "SMTPUTF8"))
			*reply_r = "553 5.6.7 Non-ASCII address requires SMTPUTF8";
		else if (*args != '<')
			*reply_r = "501 5.5.4 Syntax: MAIL FROM:<address>";
		else
			*reply_r = "501 5.1.7 Bad sender address syntax";
		return -1;
	}
	if (*end != '\0' && *end != ' ') {
		address_free(&m->addr);
		*reply_r = "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]";
		return -1;
	}
	struct param pr;
	bool bad;
	for (const char *p = end; (p = next_param(p, &pr, &bad)) != NULL;) {
		if (bad) {
			*reply_r = "501 5.5.4 Bad parameter syntax";
			goto fail;
		}
		if (key_is(&pr, "SIZE")) {
			if (pr.val == NULL || pr.vallen == 0 || pr.vallen > 20 || m->has_size) {
				*reply_r = "501 5.5.4 Bad SIZE parameter";
				goto fail;
			}
			uint64_t v = 0;
			for (size_t i = 0; i < pr.vallen; i++) {
				if (!isdigit((unsigned char)pr.val[i]) || v > (UINT64_MAX - 9) / 10) {
					*reply_r = "501 5.5.4 Bad SIZE parameter";
					goto fail;
				}
				v = v * 10 + (uint64_t)(pr.val[i] - '0');
			}
			m->has_size = true;
			m->size = v;
		} else if (key_is(&pr, "BODY")) {
			if (val_is(&pr, "7BIT"))
				m->body = SMTP_BODY_7BIT;
			else if (val_is(&pr, "8BITMIME"))
				m->body = SMTP_BODY_8BITMIME;
			else {
				*reply_r = "501 5.5.4 BODY must be 7BIT or 8BITMIME";
				goto fail;
			}
		} else if (key_is(&pr, "SMTPUTF8")) {
			if (pr.val != NULL) {
				*reply_r = "501 5.5.4 SMTPUTF8 takes no value";
				goto fail;
			}
			m->smtputf8 = true;
		} else if (key_is(&pr, "AUTH")) {
			/* RFC 4954 5: AUTH= is accepted and ignored */
		} else {
			*reply_r = "555 5.5.4 Unsupported MAIL parameter";
			goto fail;
		}
	}
	return 0;
fail:
	address_free(&m->addr);
	return -1;
}

int smtp_parse_rcpt(const char *args, bool smtputf8, struct mail_address *a, const char **reply_r)
{
	const char *end, *err;
	if (address_parse_path(args, false, smtputf8, a, &end, &err) < 0) {
		if (strstr(err, "SMTPUTF8"))
			*reply_r = "553 5.6.7 Non-ASCII address requires SMTPUTF8";
		else if (*args != '<')
			*reply_r = "501 5.5.4 Syntax: RCPT TO:<address>";
		else if (strstr(err, "null"))
			*reply_r = "501 5.1.3 Null recipient not allowed";
		else
			*reply_r = "501 5.1.3 Bad recipient address syntax";
		return -1;
	}
	struct param pr;
	bool bad;
	for (const char *p = end; (p = next_param(p, &pr, &bad)) != NULL;) {
		if (bad) {
			address_free(a);
			*reply_r = "501 5.5.4 Bad parameter syntax";
			return -1;
		}
		/* no RCPT parameter is advertised (DSN is not): RFC 5321 4.1.1.11 */
		address_free(a);
		*reply_r = "555 5.5.4 Unsupported RCPT parameter";
		return -1;
	}
	if (*end != '\0' && *end != ' ') {
		address_free(a);
		*reply_r = "501 5.5.4 Syntax: RCPT TO:<address>";
		return -1;
	}
	return 0;
}

/* DATA states */
enum {
	D_BOL,    /* at the beginning of a line */
	D_DOT,    /* "." at the beginning of a line */
	D_DOTCR,  /* ".\r" at the beginning of a line */
	D_MID,    /* inside a line */
	D_CR,     /* "\r" inside a line (or after text at BOL) */
};

void smtp_data_init(struct smtp_data *d, size_t max_line)
{
	memset(d, 0, sizeof(*d));
	d->state = D_BOL;
	d->max_line = max_line;
}

static void text_byte(struct smtp_data *d, unsigned char c)
{
	if (c >= 0x80)
		d->has_8bit = true;
	if (++d->line_len > d->max_line)
		d->long_line = true;
}

size_t smtp_data_feed(struct smtp_data *d, const unsigned char *in, size_t n, struct strbuf *out)
{
	size_t i = 0, run = 0; /* in[run..i) is pending verbatim output */
#define FLUSH() do { if (i > run) strbuf_add(out, in + run, i - run); } while (0)
	while (i < n && !d->done) {
		unsigned char c = in[i];
		switch (d->state) {
		case D_BOL:
			if (c == '.') {
				FLUSH();
				i++;
				run = i; /* the dot is not copied: unstuffing */
				d->state = D_DOT;
				continue;
			}
			d->state = D_MID;
			continue; /* reprocess c as text */
		case D_DOT:
			if (c == '\r') {
				/* hold the CR back: it is output only if no LF follows */
				d->state = D_DOTCR;
				i++;
				run = i;
				continue;
			}
			/* ".x": the leading dot was stuffing (RFC 5321 4.5.2) */
			d->state = D_MID;
			continue;
		case D_DOTCR:
			if (c == '\n') {
				i++;
				run = i;
				d->done = true;
				continue;
			}
			/* ".\r" + something else: a bare CR */
			strbuf_addc(out, '\r');
			d->bare_cr = true;
			d->state = D_MID;
			continue;
		case D_MID:
			if (c == '\r') {
				d->state = D_CR;
			} else if (c == '\n') {
				/* bare LF: refused, and never a line start (so
				 * "\n.\r\n" cannot end the message) */
				d->bare_lf = true;
			} else {
				text_byte(d, c);
			}
			i++;
			continue;
		case D_CR:
			if (c == '\n') {
				d->state = D_BOL;
				d->line_len = 0;
				i++;
				continue;
			}
			d->bare_cr = true;
			d->state = D_MID;
			continue; /* reprocess c */
		}
	}
	if (!d->done)
		FLUSH();
#undef FLUSH
	return i;
}

void smtp_data_check(struct smtp_data *d, const unsigned char *in, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = in[i];
		if (d->state == D_CR) {
			if (c == '\n') {
				d->state = D_BOL;
				d->line_len = 0;
				continue;
			}
			d->bare_cr = true;
			d->state = D_MID;
		}
		if (c == '\r')
			d->state = D_CR;
		else if (c == '\n')
			d->bare_lf = true;
		else {
			d->state = D_MID;
			text_byte(d, c);
		}
	}
}

bool smtp_data_check_end(struct smtp_data *d)
{
	if (d->state == D_CR)
		d->bare_cr = true;
	return d->state == D_BOL;
}
