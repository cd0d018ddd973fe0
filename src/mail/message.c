/* message — see message.h. Pure functions over in-memory messages; they
 * accept CRLF or bare LF line ends because hand-dropped files and
 * sendmail input come in both. */
#include "mail/message.h"
#include "lib/xalloc.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void message_to_crlf(const char *in, size_t len, struct strbuf *out)
{
	size_t i = 0, run = 0;
	while (i < len) {
		char c = in[i];
		if (c == '\r' || c == '\n') {
			strbuf_add(out, in + run, i - run);
			strbuf_add(out, "\r\n", 2);
			if (c == '\r' && i + 1 < len && in[i + 1] == '\n')
				i++;
			i++;
			run = i;
			continue;
		}
		i++;
	}
	strbuf_add(out, in + run, len - run);
	if (out->len < 2 || out->s[out->len - 2] != '\r' || out->s[out->len - 1] != '\n')
		strbuf_add(out, "\r\n", 2);
}

/* End of the line starting at p (index of the byte after LF, or len). */
static size_t line_end(const char *m, size_t len, size_t p)
{
	const char *nl = memchr(m + p, '\n', len - p);
	return nl ? (size_t)(nl - m) + 1 : len;
}

static bool is_blank_line(const char *m, size_t p, size_t e)
{
	size_t n = e - p;
	return n == 0 || (n == 1 && m[p] == '\n') || (n == 2 && m[p] == '\r' && m[p + 1] == '\n');
}

size_t message_header_len(const char *msg, size_t len)
{
	size_t p = 0;
	while (p < len) {
		size_t e = line_end(msg, len, p);
		if (is_blank_line(msg, p, e))
			return e;
		p = e;
	}
	return len;
}

/* Does the line at p start header `name:` (allowing WSP before ':')? */
static bool line_is_header(const char *m, size_t p, size_t e, const char *name)
{
	size_t n = strlen(name);
	if (e - p <= n || strncasecmp(m + p, name, n) != 0)
		return false;
	size_t q = p + n;
	while (q < e && (m[q] == ' ' || m[q] == '\t'))
		q++;
	return q < e && m[q] == ':';
}

/* End of the header field starting at p (continuation lines included). */
static size_t field_end(const char *m, size_t hlen, size_t p)
{
	size_t e = line_end(m, hlen, p);
	while (e < hlen && (m[e] == ' ' || m[e] == '\t'))
		e = line_end(m, hlen, e);
	return e;
}

int message_header_each(const char *msg, size_t len, const char *name,
                        void (*cb)(const char *value, size_t vlen, void *arg), void *arg)
{
	size_t hlen = message_header_len(msg, len);
	int count = 0;
	size_t p = 0;
	while (p < hlen) {
		size_t e = field_end(msg, hlen, p);
		if (line_is_header(msg, p, e, name)) {
			const char *colon = memchr(msg + p, ':', e - p);
			struct strbuf v = STRBUF_INIT;
			for (const char *q = colon + 1; q < msg + e; q++)
				if (*q != '\r' && *q != '\n')
					strbuf_addc(&v, *q);
			cb(v.s ? v.s : "", v.len, arg);
			strbuf_free(&v);
			count++;
		}
		p = e;
	}
	return count;
}

int message_header_remove(const char *msg, size_t len, const char *name, struct strbuf *out)
{
	size_t hlen = message_header_len(msg, len);
	int removed = 0;
	size_t p = 0;
	while (p < hlen) {
		size_t e = field_end(msg, hlen, p);
		if (line_is_header(msg, p, e, name))
			removed++;
		else
			strbuf_add(out, msg + p, e - p);
		p = e;
	}
	strbuf_add(out, msg + hlen, len - hlen);
	return removed;
}

bool message_header_has(const char *msg, size_t len, const char *name)
{
	size_t hlen = message_header_len(msg, len);
	size_t p = 0;
	while (p < hlen) {
		size_t e = line_end(msg, hlen, p);
		if (line_is_header(msg, p, e, name))
			return true;
		p = e;
	}
	return false;
}

int message_count_received(const char *msg, size_t len)
{
	size_t hlen = message_header_len(msg, len);
	int n = 0;
	size_t p = 0;
	while (p < hlen) {
		size_t e = line_end(msg, hlen, p);
		if (line_is_header(msg, p, e, "Received"))
			n++;
		p = e;
	}
	return n;
}

bool message_has_8bit(const char *msg, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)msg[i] >= 0x80)
			return true;
	return false;
}
