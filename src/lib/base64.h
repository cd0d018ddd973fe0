/* base64 — RFC 4648 base64 for SASL exchanges. Strict: rejects bad
 * characters, bad padding and trailing junk. */
#ifndef LIB_BASE64_H
#define LIB_BASE64_H
#include <stddef.h>
#include "lib/strbuf.h"

/* Decodes s (len bytes) into out; returns 0 or -1 on malformed input. */
int base64_decode(const char *s, size_t len, struct strbuf *out);
void base64_encode(const void *p, size_t len, struct strbuf *out);

#endif
