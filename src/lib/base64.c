/* base64 — see base64.h. Pure. */
#include "lib/base64.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int base64_decode(const char *s, size_t len, struct strbuf *out)
{
	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)s[i + k];
			if (c == '=') {
				/* padding only at the very end, at most two */
				if (i + 4 != len || k < 2)
					return -1;
				pad++;
				v[k] = 0;
				continue;
			}
			if (pad)
				return -1;
			v[k] = val(c);
			if (v[k] < 0)
				return -1;
		}
		unsigned n = ((unsigned)v[0] << 18) | ((unsigned)v[1] << 12) | ((unsigned)v[2] << 6) | (unsigned)v[3];
		char b[3] = { (char)(n >> 16), (char)(n >> 8), (char)n };
		strbuf_add(out, b, (size_t)(3 - pad));
	}
	return 0;
}

void base64_encode(const void *p, size_t len, struct strbuf *out)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < len; i += 3) {
		unsigned n = (unsigned)s[i] << 16;
		if (i + 1 < len)
			n |= (unsigned)s[i + 1] << 8;
		if (i + 2 < len)
			n |= s[i + 2];
		strbuf_addc(out, alphabet[(n >> 18) & 63]);
		strbuf_addc(out, alphabet[(n >> 12) & 63]);
		strbuf_addc(out, i + 1 < len ? alphabet[(n >> 6) & 63] : '=');
		strbuf_addc(out, i + 2 < len ? alphabet[n & 63] : '=');
	}
}
