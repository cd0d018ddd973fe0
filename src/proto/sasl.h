/* sasl — SASL mechanism decoding shared by SMTP (RFC 4954) and POP3
 * (RFC 5034) (and IMAP later). Pure: no I/O. */
#ifndef PROTO_SASL_H
#define PROTO_SASL_H
#include <stddef.h>
#include "lib/strbuf.h"

/* Decodes a SASL PLAIN response (RFC 4616): base64 (lib/base64, strict:
 * padding required, no whitespace) of "authzid NUL authcid NUL passwd".
 * "=" (RFC 5034 section 4) and "" stand for an empty response, which is
 * refused. The decoded octets go to buf (the caller's; reset here); the
 * three results point into it. buf holds the password: the caller wipes
 * buf->s over buf->cap octets before freeing it. authzid must be empty
 * or equal to authcid (ASCII case-insensitive); authcid and passwd must
 * not be empty; authzid and authcid must not hold control characters. Returns 0, or -1 with a static message in *error_r. */
int sasl_plain_decode(const char *b64, size_t len, struct strbuf *buf, const char **authzid_r,
                      const char **authcid_r, const char **passwd_r, const char **error_r);

#endif
