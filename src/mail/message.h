/* message — pure helpers over an RFC 5322 message held in memory: header
 * lookup and removal, line-ending normalisation, the envelope that
 * `sendmail -t` and the .eml pickup derive from headers. No I/O. */
#ifndef MAIL_MESSAGE_H
#define MAIL_MESSAGE_H
#include <stdbool.h>
#include <stddef.h>
#include "lib/strbuf.h"

/* Converts bare LF and bare CR to CRLF and makes sure the text ends with
 * CRLF; appends to out. */
void message_to_crlf(const char *in, size_t len, struct strbuf *out);
/* Length of the header block including the empty line (or the whole text
 * when there is no empty line). Accepts CRLF or LF. */
size_t message_header_len(const char *msg, size_t len);
/* Unfolded value of each header called name (case-insensitive) in the
 * header block; cb gets (value, len). Returns how many. */
int message_header_each(const char *msg, size_t len, const char *name,
                        void (*cb)(const char *value, size_t vlen, void *arg), void *arg);
/* Copies msg to out without any header called name (with its
 * continuation lines). Returns how many were removed. */
int message_header_remove(const char *msg, size_t len, const char *name, struct strbuf *out);
/* Does the header block have a header called name? */
bool message_header_has(const char *msg, size_t len, const char *name);
/* Number of Received: headers (hop count, RFC 5321 6.3). */
int message_count_received(const char *msg, size_t len);
/* Does the text contain bytes >= 0x80? */
bool message_has_8bit(const char *msg, size_t len);

#endif
