/* smtp_reply (proto) — the client side of RFC 5321, pure: assembling
 * (multi-line) server replies from lines, reading EHLO capabilities,
 * enhanced status codes (RFC 3463) and dot-stuffing a message for DATA.
 * No sockets: lines in, structs out; unit-tested and fuzzable. */
#ifndef PROTO_SMTP_REPLY_H
#define PROTO_SMTP_REPLY_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lib/strbuf.h"

/* RFC 5321 4.5.3.1.5 says 512 octets per reply line; real servers send
 * longer ones (banners, EHLO lines), so we read up to this and refuse
 * more (the connection is then dropped as broken). */
#define SMTP_REPLY_LINE_MAX 2048
/* Lines in one reply: EHLO lists ~20 extensions; 100 is far beyond any
 * honest server (a hostile one must not grow us without bound). */
#define SMTP_REPLY_LINES_MAX 100
/* Reply text kept for logs, state files and DSNs (one line). */
#define SMTP_REPLY_TEXT_MAX 512

struct smtp_reply {
	int code;           /* 200..599, 0 until the first line */
	int nlines;
	bool done;          /* the last line ("ddd " or "ddd") was seen */
	struct strbuf text; /* every line's text after "ddd-", joined by '\n' */
};

void smtp_reply_init(struct smtp_reply *r);
void smtp_reply_reset(struct smtp_reply *r);
void smtp_reply_free(struct smtp_reply *r);
/* Feeds one reply line (without CRLF). Returns 1 when the reply is
 * complete, 0 when more lines follow, -1 on a malformed line (not
 * "ddd[ -]text", a code that changes within the reply, too many lines):
 * the peer is broken and the connection should be dropped. */
int smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len);

/* "550 5.1.1 text text" on one line: every line joined by a space,
 * control bytes and non-ASCII replaced by '?', cut at SMTP_REPLY_TEXT_MAX.
 * xmalloc'd. */
char *smtp_reply_oneline(const struct smtp_reply *r);

/* The enhanced status code (RFC 3463 "c.sss.ddd") at the start of text
 * into buf (at least 16 bytes), when it is there and its class agrees
 * with the basic code's first digit; else a code derived from the basic
 * code ("5.0.0", "4.0.0", "2.0.0"). Returns buf. */
const char *smtp_status_from_reply(int code, const char *text, char *buf, size_t n);

/* EHLO capabilities we act on. */
struct smtp_caps {
	bool esmtp; /* EHLO was accepted */
	bool pipelining;
	bool has_size;
	uint64_t size; /* 0 with has_size: no fixed limit (RFC 1870) */
	bool eightbitmime;
	bool smtputf8;
	bool starttls;
	bool enhancedstatuscodes;
	bool auth_plain;
	bool auth_login;
};
/* Reads the extension lines of a complete EHLO reply (the first line is
 * the greeting and ignored). */
void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *caps);

/* Appends msg, dot-stuffed for DATA (RFC 5321 4.5.2), to out, followed by
 * the end mark ".\r\n". msg is expected with CRLF line ends; a message
 * that does not end in CRLF gets one, so the end mark is always on a
 * line of its own. */
void smtp_dot_stuff(const char *msg, size_t len, struct strbuf *out);

#endif
