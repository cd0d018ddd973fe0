/* sasl — see sasl.h. Pure. Decoded credentials live only in the caller's
 * buffer, which the caller wipes. */
#include "proto/sasl.h"
#include "lib/base64.h"

#include <string.h>
#include <strings.h>

int sasl_plain_decode(const char *b64, size_t len, struct strbuf *buf, const char **authzid_r,
                      const char **authcid_r, const char **passwd_r, const char **error_r)
{
	strbuf_reset(buf);
	if (len == 0 || (len == 1 && b64[0] == '=')) {
		*error_r = "empty PLAIN response";
		return -1;
	}
	/* Reserve first, so decoding never reallocates and leaves a copy of
	 * the password in freed memory; the caller wipes buf->s. */
	if (strbuf_add(buf, b64, len) < 0) {
		*error_r = "PLAIN response too long";
		return -1;
	}
	explicit_bzero(buf->s, buf->len);
	strbuf_reset(buf);
	if (base64_decode(b64, len, buf) < 0) {
		*error_r = "invalid base64 in PLAIN response";
		return -1;
	}
	size_t n = buf->len;
	char *d = buf->s;
	char *nul1 = memchr(d, '\0', n);
	char *nul2 = nul1 ? memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - d)) : NULL;
	if (nul1 == NULL || nul2 == NULL || memchr(nul2 + 1, '\0', n - (size_t)(nul2 + 1 - d)) != NULL) {
		*error_r = "malformed PLAIN response";
		return -1;
	}
	const char *authz = d, *authc = nul1 + 1, *pass = nul2 + 1;
	/* identities are names: no control characters (the password may
	 * hold anything but NUL) */
	for (const char *p = d; p < pass; p++) {
		if ((*p != '\0' && (unsigned char)*p < 0x20) || *p == 0x7f) {
			*error_r = "malformed PLAIN response";
			return -1;
		}
	}
	if (*authc == '\0' || *pass == '\0') {
		*error_r = "malformed PLAIN response";
		return -1;
	}
	if (*authz != '\0' && strcasecmp(authz, authc) != 0) {
		*error_r = "authorization identity must be empty or the login name";
		return -1;
	}
	*authzid_r = authz;
	*authcid_r = authc;
	*passwd_r = pass;
	return 0;
}
