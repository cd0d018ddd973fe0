/* fingerprint — a content fingerprint for flood detection: identical spam
 * sent to different recipients (different headers, same body) gets the
 * same fingerprint. Pure. */
#ifndef MAIL_FINGERPRINT_H
#define MAIL_FINGERPRINT_H
#include <stddef.h>

#define FINGERPRINT_LEN 16 /* hex characters (64 bits of SHA-256) */
/* Only this much of the body is hashed: enough to tell messages apart,
 * cheap for 50 MB attachments. */
#define FINGERPRINT_BODY_MAX (256 * 1024)

/* Hash of the normalised body of msg (after the header block): ASCII
 * letters lower-cased, all whitespace removed, so re-wrapping and CRLF/LF
 * differences do not matter. The Subject header is included (spam runs
 * share it; replies to one list do not share bodies). */
void fingerprint_message(const char *msg, size_t len, char out[FINGERPRINT_LEN + 1]);

#endif
