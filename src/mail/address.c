/* address — see address.h. Pure parsing; every input is hostile, so each
 * component is length-checked against the RFC 5321 limits. */
#include "mail/address.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* RFC 5322 atext */
static bool is_atext(unsigned char c, bool utf8)
{
	if (c >= 0x80)
		return utf8;
	return isalnum(c) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

void address_lower(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

void address_free(struct mail_address *a)
{
	free(a->local);
	free(a->domain);
	a->local = a->domain = NULL;
}

bool address_domain_ok(const char *d, bool utf8)
{
	size_t n = strlen(d);
	if (n == 0 || n > ADDRESS_DOMAIN_MAX)
		return false;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)d[i];
		if (c == '.') {
			if (label == 0 || d[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!(isalnum(c) || c == '-' || (utf8 && c >= 0x80)))
			return false;
		if (label == 0 && c == '-')
			return false;
		if (++label > 63)
			return false;
	}
	/* no trailing dot, no empty last label, no hyphen at the end */
	return label > 0 && d[n - 1] != '-';
}

/* Parses a domain or address literal at p; returns the end or NULL. */
static const char *parse_domain(const char *p, bool utf8, struct strbuf *out, bool *literal)
{
	const char *start = p;
	*literal = false;
	if (*p == '[') {
		/* address-literal: [IPv4] or [IPv6:...] or [tag:...]; dcontent */
		p++;
		while (*p && *p != ']' && *p != '[' && *p != '\\' && (unsigned char)*p > 32 &&
		       (unsigned char)*p < 127)
			p++;
		if (*p != ']' || p == start + 1)
			return NULL;
		p++;
		*literal = true;
		strbuf_add(out, start, (size_t)(p - start));
		return p;
	}
	while (*p && (isalnum((unsigned char)*p) || *p == '-' || *p == '.' ||
	              (utf8 && (unsigned char)*p >= 0x80)))
		p++;
	strbuf_add(out, start, (size_t)(p - start));
	if (!address_domain_ok(out->s ? out->s : "", utf8))
		return NULL;
	return p;
}

/* Parses local-part "@" domain at p; stops at the first byte that cannot
 * belong to it. */
static const char *parse_mailbox(const char *p, bool utf8, struct mail_address *a,
                                 const char **error_r)
{
	struct strbuf local = STRBUF_INIT, dom = STRBUF_INIT;
	bool quoted = false;
	if (*p == '"') {
		quoted = true;
		p++;
		for (;;) {
			unsigned char c = (unsigned char)*p;
			if (c == '\0') {
				*error_r = "unterminated quoted local part";
				goto fail;
			}
			if (c == '"') {
				p++;
				break;
			}
			if (c == '\\') {
				unsigned char n = (unsigned char)p[1];
				if (n < 32 || n == 127) {
					*error_r = "bad quoted-pair in local part";
					goto fail;
				}
				strbuf_addc(&local, (char)n);
				p += 2;
				continue;
			}
			if ((c < 32 && c != '\t') || c == 127 || (c >= 0x80 && !utf8)) {
				*error_r = c >= 0x80 ? "non-ASCII address needs SMTPUTF8" : "control character in local part";
				goto fail;
			}
			strbuf_addc(&local, (char)c);
			p++;
		}
	} else {
		const char *s = p;
		bool dot_ok = false;
		while (*p) {
			unsigned char c = (unsigned char)*p;
			if (c == '.') {
				if (!dot_ok) {
					*error_r = "bad dot in local part";
					goto fail;
				}
				dot_ok = false;
			} else if (is_atext(c, utf8)) {
				dot_ok = true;
			} else {
				if (c >= 0x80) {
					*error_r = "non-ASCII address needs SMTPUTF8";
					goto fail;
				}
				break;
			}
			p++;
		}
		if (p == s) {
			*error_r = "empty local part";
			goto fail;
		}
		if (!dot_ok) {
			*error_r = "local part ends with a dot";
			goto fail;
		}
		strbuf_add(&local, s, (size_t)(p - s));
	}
	if (local.len > ADDRESS_LOCAL_MAX) {
		*error_r = "local part longer than 64 octets";
		goto fail;
	}
	if (*p != '@') {
		*error_r = "missing domain";
		goto fail;
	}
	p++;
	bool literal;
	const char *e = parse_domain(p, utf8, &dom, &literal);
	if (e == NULL) {
		*error_r = "bad domain";
		goto fail;
	}
	p = e;
	if (utf8 && (!utf8_valid(local.s ? local.s : "", local.len) || !utf8_valid(dom.s, dom.len))) {
		*error_r = "invalid UTF-8 in address";
		goto fail;
	}
	a->local = local.s ? strbuf_detach(&local, NULL) : xstrdup("");
	a->domain = strbuf_detach(&dom, NULL);
	address_lower(a->domain);
	a->quoted = quoted;
	a->literal = literal;
	return p;
fail:
	strbuf_free(&local);
	strbuf_free(&dom);
	return NULL;
}

int address_parse_path(const char *s, bool allow_null, bool utf8, struct mail_address *a,
                       const char **end_r, const char **error_r)
{
	memset(a, 0, sizeof(*a));
	const char *p = s;
	if (*p != '<') {
		*error_r = "address must be enclosed in <>";
		return -1;
	}
	p++;
	if (*p == '>') {
		if (!allow_null) {
			*error_r = "null address not allowed here";
			return -1;
		}
		a->local = xstrdup("");
		a->domain = xstrdup("");
		*end_r = p + 1;
		return 0;
	}
	/* A-d-l: "@one,@two:" — accepted and ignored (RFC 5321 4.1.2, C). */
	if (*p == '@') {
		for (;;) {
			if (*p != '@') {
				*error_r = "bad source route";
				return -1;
			}
			p++;
			struct strbuf d = STRBUF_INIT;
			bool lit;
			const char *e = parse_domain(p, utf8, &d, &lit);
			strbuf_free(&d);
			if (e == NULL) {
				*error_r = "bad source route";
				return -1;
			}
			p = e;
			if (*p == ',') {
				p++;
				continue;
			}
			if (*p == ':') {
				p++;
				break;
			}
			*error_r = "bad source route";
			return -1;
		}
	}
	const char *e = parse_mailbox(p, utf8, a, error_r);
	if (e == NULL)
		return -1;
	if (*e != '>') {
		address_free(a);
		*error_r = "junk after address";
		return -1;
	}
	e++;
	if ((size_t)(e - s) > ADDRESS_PATH_MAX + 2) {
		address_free(a);
		*error_r = "path longer than 256 octets";
		return -1;
	}
	*end_r = e;
	return 0;
}

int address_parse(const char *s, bool utf8, struct mail_address *a, const char **error_r)
{
	memset(a, 0, sizeof(*a));
	const char *e = parse_mailbox(s, utf8, a, error_r);
	if (e == NULL)
		return -1;
	if (*e != '\0') {
		address_free(a);
		*error_r = "junk after address";
		return -1;
	}
	return 0;
}

char *address_format(const struct mail_address *a)
{
	if (a->local[0] == '\0' && a->domain[0] == '\0')
		return xstrdup("");
	bool need_quote = a->local[0] == '\0' || a->local[0] == '.';
	size_t n = strlen(a->local);
	if (n && a->local[n - 1] == '.')
		need_quote = true;
	for (size_t i = 0; i < n && !need_quote; i++) {
		unsigned char c = (unsigned char)a->local[i];
		if (c == '.' && a->local[i + 1] == '.')
			need_quote = true;
		else if (c != '.' && !is_atext(c, true))
			need_quote = true;
	}
	struct strbuf sb = STRBUF_INIT;
	if (need_quote) {
		strbuf_addc(&sb, '"');
		for (size_t i = 0; i < n; i++) {
			if (a->local[i] == '"' || a->local[i] == '\\')
				strbuf_addc(&sb, '\\');
			strbuf_addc(&sb, a->local[i]);
		}
		strbuf_addc(&sb, '"');
	} else {
		strbuf_adds(&sb, a->local);
	}
	strbuf_addc(&sb, '@');
	strbuf_adds(&sb, a->domain);
	return strbuf_detach(&sb, NULL);
}

/* --- RFC 5322 address lists ------------------------------------------ */

/* Copies one list element, dropping comments and folding whitespace
 * outside quoted strings. */
static void strip_cfws(const char *s, size_t n, struct strbuf *out)
{
	int depth = 0;
	bool inq = false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (inq) {
			strbuf_addc(out, c);
			if (c == '\\' && i + 1 < n)
				strbuf_addc(out, s[++i]);
			else if (c == '"')
				inq = false;
			continue;
		}
		if (depth > 0) {
			if (c == '\\' && i + 1 < n)
				i++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			continue;
		}
		if (c == '(') {
			depth++;
		} else if (c == '"') {
			inq = true;
			strbuf_addc(out, c);
		} else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			/* obs-local-part allows CFWS around dots: drop it */
		} else {
			strbuf_addc(out, c);
		}
	}
}

static int emit_spec(const char *s, size_t n, void (*cb)(const char *, void *), void *arg)
{
	struct strbuf sb = STRBUF_INIT;
	strip_cfws(s, n, &sb);
	int found = 0;
	if (sb.len > 0) {
		struct mail_address a;
		const char *err;
		const char *spec = sb.s;
		/* obsolete route inside <>: "@a,@b:user@c" */
		if (spec[0] == '@') {
			const char *colon = strchr(spec, ':');
			if (colon)
				spec = colon + 1;
		}
		if (address_parse(spec, true, &a, &err) == 0) {
			char *f = address_format(&a);
			cb(f, arg);
			free(f);
			address_free(&a);
			found = 1;
		}
	}
	strbuf_free(&sb);
	return found;
}

int address_list_parse(const char *v, size_t len, void (*cb)(const char *addr, void *arg), void *arg)
{
	int found = 0, depth = 0;
	bool inq = false;
	size_t start = 0, angle = (size_t)-1;
	bool bad = false;
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? v[i] : ',';
		if (inq) {
			if (c == '\\')
				i++;
			else if (c == '"')
				inq = false;
			if (i >= len) {
				bad = true;
				c = ',';
				inq = false;
			} else {
				continue;
			}
		}
		if (depth > 0) {
			if (c == '\\')
				i++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			if (i < len)
				continue;
			bad = true;
			depth = 0;
			c = ',';
		}
		switch (c) {
		case '"':
			inq = true;
			break;
		case '(':
			depth++;
			break;
		case '<':
			angle = i + 1;
			break;
		case '>':
			if (angle != (size_t)-1) {
				found += emit_spec(v + angle, i - angle, cb, arg);
				angle = (size_t)-1;
				start = (size_t)-2; /* element consumed */
			}
			break;
		case ':':
			/* group display name: drop it */
			if (angle == (size_t)-1)
				start = i + 1;
			break;
		case ',':
		case ';':
			if (angle != (size_t)-1) {
				/* unterminated <...: take what is there */
				found += emit_spec(v + angle, (i > len ? len : i) - angle, cb, arg);
				angle = (size_t)-1;
				bad = true;
			} else if (start != (size_t)-2 && i > start) {
				found += emit_spec(v + start, (i > len ? len : i) - start, cb, arg);
			}
			start = i + 1;
			break;
		default:
			break;
		}
	}
	return bad && found == 0 ? -1 : found;
}
