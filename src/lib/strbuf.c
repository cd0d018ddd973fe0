/* strbuf — see strbuf.h. No mail knowledge; aborts only on OOM. */
#include "lib/strbuf.h"
#include "lib/xalloc.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void strbuf_init(struct strbuf *sb, size_t max)
{
	sb->s = NULL;
	sb->len = sb->cap = 0;
	sb->max = max;
}

static int grow(struct strbuf *sb, size_t extra)
{
	if (extra > SIZE_MAX - sb->len - 1)
		return -1;
	size_t need = sb->len + extra + 1;
	if (sb->max && need - 1 > sb->max)
		return -1;
	if (need <= sb->cap)
		return 0;
	size_t cap = sb->cap ? sb->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	sb->s = xrealloc(sb->s, cap);
	sb->cap = cap;
	return 0;
}

int strbuf_add(struct strbuf *sb, const void *p, size_t n)
{
	if (grow(sb, n) < 0)
		return -1;
	if (n)
		memcpy(sb->s + sb->len, p, n);
	sb->len += n;
	sb->s[sb->len] = '\0';
	return 0;
}

int strbuf_adds(struct strbuf *sb, const char *s)
{
	return strbuf_add(sb, s, strlen(s));
}

int strbuf_addc(struct strbuf *sb, char c)
{
	return strbuf_add(sb, &c, 1);
}

int strbuf_addf(struct strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	char small[256];
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n < sizeof(small))
		return strbuf_add(sb, small, (size_t)n);
	if (grow(sb, (size_t)n) < 0)
		return -1;
	va_start(ap, fmt);
	int m = vsnprintf(sb->s + sb->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	if (m != n)
		panic("strbuf_addf: vsnprintf changed its mind");
	sb->len += (size_t)n;
	return 0;
}

void strbuf_reset(struct strbuf *sb)
{
	sb->len = 0;
	if (sb->s)
		sb->s[0] = '\0';
}

void strbuf_truncate(struct strbuf *sb, size_t len)
{
	if (len < sb->len) {
		sb->len = len;
		sb->s[len] = '\0';
	}
}

char *strbuf_detach(struct strbuf *sb, size_t *len_r)
{
	if (sb->s == NULL)
		(void)grow(sb, 0);
	char *s = sb->s;
	if (len_r)
		*len_r = sb->len;
	sb->s = NULL;
	sb->len = sb->cap = 0;
	return s;
}

void strbuf_free(struct strbuf *sb)
{
	free(sb->s);
	sb->s = NULL;
	sb->len = sb->cap = 0;
}

/* Length of the valid UTF-8 sequence at p (not overlong, no surrogates),
 * or 0. */
static size_t utf8_seq_len(const unsigned char *p)
{
	size_t n;
	unsigned min;
	unsigned cp;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) { n = 2; cp = p[0] & 0x1f; min = 0x80; }
	else if (p[0] >= 0xe0 && p[0] <= 0xef) { n = 3; cp = p[0] & 0x0f; min = 0x800; }
	else if (p[0] >= 0xf0 && p[0] <= 0xf4) { n = 4; cp = p[0] & 0x07; min = 0x10000; }
	else return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

bool utf8_valid(const char *p, size_t n)
{
	const unsigned char *u = (const unsigned char *)p;
	for (size_t i = 0; i < n;) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		/* utf8_seq_len reads at most 4 bytes: keep it inside p[0..n) */
		unsigned char tmp[4] = { 0, 0, 0, 0 };
		size_t k = n - i < 4 ? n - i : 4;
		memcpy(tmp, u + i, k);
		size_t l = utf8_seq_len(tmp);
		if (l == 0)
			return false;
		i += l;
	}
	return true;
}

void strbuf_add_json_str(struct strbuf *sb, const char *s)
{
	strbuf_addc(sb, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': strbuf_adds(sb, "\\\""); break;
		case '\\': strbuf_adds(sb, "\\\\"); break;
		case '\n': strbuf_adds(sb, "\\n"); break;
		case '\r': strbuf_adds(sb, "\\r"); break;
		case '\t': strbuf_adds(sb, "\\t"); break;
		default:
			if (*p < 0x20 || *p == 0x7f) {
				strbuf_addf(sb, "\\u%04x", *p);
			} else if (*p < 0x80) {
				strbuf_addc(sb, (char)*p);
			} else {
				/* JSON must be UTF-8: copy a valid sequence, replace
				 * anything else with U+FFFD so the log stays parseable. */
				size_t n = utf8_seq_len(p);
				if (n == 0) {
					strbuf_adds(sb, "\\ufffd");
				} else {
					strbuf_add(sb, p, n);
					p += n - 1;
				}
			}
		}
	}
	strbuf_addc(sb, '"');
}
