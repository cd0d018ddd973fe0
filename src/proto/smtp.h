/* smtp (proto) — pure SMTP parsing: command lines, MAIL/RCPT parameters,
 * the DATA stream (dot-unstuffing, end detection, bare CR/LF and line
 * length checks). No sockets: feed bytes, get results; unit-tested one
 * byte at a time and fuzzed.
 *
 * Smuggling rule (documented in docs/smtp.md): DATA ends only at
 * <CRLF>.<CRLF>. A bare CR or bare LF anywhere in the message marks it
 * as refused (550 5.6.0 after the real end), so no variant of
 * <LF>.<LF>, <CR>.<CR>, <LF>.<CR><LF> can end or split a message. */
#ifndef PROTO_SMTP_H
#define PROTO_SMTP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lib/strbuf.h"
#include "mail/address.h"

/* RFC 5321 4.5.3.1.4: command line 512 octets including CRLF. */
#define SMTP_CMD_LINE_MAX 510
/* RFC 4954 4: AUTH lines may be longer (12288 for SASL responses). */
#define SMTP_AUTH_LINE_MAX 12288

enum smtp_verb {
	SMTP_UNKNOWN = 0,
	SMTP_HELO, SMTP_EHLO, SMTP_MAIL, SMTP_RCPT, SMTP_DATA, SMTP_BDAT, SMTP_RSET,
	SMTP_NOOP, SMTP_QUIT, SMTP_VRFY, SMTP_EXPN, SMTP_HELP, SMTP_AUTH, SMTP_STARTTLS,
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *args; /* after the verb and one space; "" if none */
};

/* Splits a command line (without CRLF). Never fails: unknown verbs give
 * SMTP_UNKNOWN. MAIL/RCPT are recognised by "MAIL FROM:"/"RCPT TO:" with
 * args pointing after the colon (spaces skipped). */
void smtp_cmd_parse(const char *line, struct smtp_cmd *cmd);

enum smtp_body { SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };

struct smtp_mail_args {
	struct mail_address addr;
	bool has_size;
	uint64_t size;
	enum smtp_body body;
	bool smtputf8;
};

/* Parses "<path> [SP param]*" of MAIL FROM / RCPT TO. Returns 0, or -1
 * with a full reply ("501 5.1.7 ...") in reply_r (static text). */
int smtp_parse_mail(const char *args, struct smtp_mail_args *m, const char **reply_r);
int smtp_parse_rcpt(const char *args, bool smtputf8, struct mail_address *a, const char **reply_r);

/* Incremental DATA reader. */
struct smtp_data {
	int state;
	size_t line_len;
	size_t max_line;
	bool bare_cr, bare_lf, long_line;
	bool has_8bit;
	bool done;
};
void smtp_data_init(struct smtp_data *d, size_t max_line);
/* Consumes input up to and including the end-of-data mark; appends the
 * unstuffed message (CRLF line ends, ending with CRLF) to out. Returns
 * the number of bytes consumed; d->done is set at the end mark. */
size_t smtp_data_feed(struct smtp_data *d, const unsigned char *in, size_t n, struct strbuf *out);
/* The same checks for BDAT content (no dot handling, no end mark):
 * nothing is copied, flags are updated; call smtp_data_check_end() after
 * the LAST chunk. */
void smtp_data_check(struct smtp_data *d, const unsigned char *in, size_t n);
/* BDAT: a message must end with CRLF; returns false if it does not. */
bool smtp_data_check_end(struct smtp_data *d);

#endif
