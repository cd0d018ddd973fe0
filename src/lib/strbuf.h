/* strbuf — the one bounded growable byte string. Always NUL-terminated
 * (the NUL is not counted in len). A strbuf with a non-zero max refuses to
 * grow past it: append functions then return -1 and leave it unchanged. */
#ifndef LIB_STRBUF_H
#define LIB_STRBUF_H
#include <stdbool.h>
#include <stddef.h>

struct strbuf {
	char *s;
	size_t len;
	size_t cap;
	size_t max; /* 0 = unbounded (only for data we produce ourselves) */
};

#define STRBUF_INIT { NULL, 0, 0, 0 }

void strbuf_init(struct strbuf *sb, size_t max);
/* Returns 0, or -1 when the result would exceed sb->max. */
int strbuf_add(struct strbuf *sb, const void *p, size_t n);
int strbuf_adds(struct strbuf *sb, const char *s);
int strbuf_addc(struct strbuf *sb, char c);
int strbuf_addf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_reset(struct strbuf *sb);
void strbuf_truncate(struct strbuf *sb, size_t len);
/* Hands the buffer to the caller (never NULL) and reinitialises sb. */
char *strbuf_detach(struct strbuf *sb, size_t *len_r);
void strbuf_free(struct strbuf *sb);
/* Is p[0..n) valid UTF-8 (no overlongs, no surrogates)? */
bool utf8_valid(const char *p, size_t n);
/* Appends s as a JSON string literal, quotes included. */
void strbuf_add_json_str(struct strbuf *sb, const char *s);

#endif
