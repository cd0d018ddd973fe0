/* proto/pop3 — the pure side of POP3 (RFC 1939, RFC 2449, RFC 5034):
 * the command table and line parser, the incremental multi-line response
 * encoder used for RETR and TOP (dot-stuffing), and the SASL PLAIN
 * response decoder. No sockets, no files, no globals: bytes in, structs
 * or bytes out, so all of it is unit-tested and fuzzable. */
#ifndef PROTO_POP3_H
#define PROTO_POP3_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lib/strbuf.h"

/* RFC 2449 section 4: a command line is at most 255 octets including the
 * terminating CRLF, so at most POP3_CMD_MAX octets before it. */
#define POP3_LINE_MAX 255
#define POP3_CMD_MAX (POP3_LINE_MAX - 2)
/* RFC 5034 sets no limit on a SASL response line sent after "+ "; 2048
 * is the base64 form of 1536 octets, room for a PLAIN response with a
 * 255-octet login and an over-long password. */
#define POP3_SASL_LINE_MAX 2048
/* Arguments per command: TOP and AUTH take two, nothing takes more. */
#define POP3_ARGS_MAX 2
/* Largest number accepted as a message number or TOP line count (nine
 * digits: beyond any real maildrop, and no overflow anywhere). */
#define POP3_NUM_MAX 999999999u

/* States in which a command is allowed (bit mask). UPDATE accepts no
 * commands, so it has no bit. */
enum pop3_state {
	POP3_STATE_AUTHORIZATION = 1 << 0,
	POP3_STATE_TRANSACTION = 1 << 1,
};

enum pop3_cmd_id {
	POP3_CMD_CAPA,
	POP3_CMD_USER,
	POP3_CMD_PASS,
	POP3_CMD_AUTH,
	POP3_CMD_QUIT,
	POP3_CMD_STAT,
	POP3_CMD_LIST,
	POP3_CMD_RETR,
	POP3_CMD_DELE,
	POP3_CMD_NOOP,
	POP3_CMD_RSET,
	POP3_CMD_TOP,
	POP3_CMD_UIDL,
};

struct pop3_cmd {
	enum pop3_cmd_id id;
	const char *name;              /* canonical upper-case keyword */
	int argc;
	char *argv[POP3_ARGS_MAX];     /* NUL-terminated, inside the parsed line */
	uint32_t num[POP3_ARGS_MAX];   /* numeric arguments (message number, TOP lines) */
};

enum pop3_parse_result {
	POP3_PARSE_OK = 0,
	POP3_PARSE_TOO_LONG,   /* longer than POP3_CMD_MAX */
	POP3_PARSE_UNKNOWN,    /* empty line or unknown keyword */
	POP3_PARSE_STATE,      /* known command, not allowed in this state */
	POP3_PARSE_SYNTAX,     /* wrong number of arguments, NUL byte */
	POP3_PARSE_NUMBER,     /* a numeric argument is not a valid number */
};

/* Parses one command line (without its CRLF; len octets, NUL bytes
 * inside are refused; line[len] must be writable, it becomes the
 * terminating NUL). The line is modified in place: arguments become
 * NUL-terminated strings in cmd->argv. state is one pop3_state bit. On
 * anything but POP3_PARSE_OK, *error_r is the static reply text to send
 * after "-ERR ". Keywords are case-insensitive; arguments are separated
 * by spaces (runs of spaces are tolerated), except that PASS takes the
 * rest of the line after one space as its argument (RFC 1939 section 7:
 * passwords may contain spaces). Message numbers must be 1..POP3_NUM_MAX,
 * the TOP line count 0..POP3_NUM_MAX. */
enum pop3_parse_result pop3_cmd_parse(char *line, size_t len, unsigned state, struct pop3_cmd *cmd,
                                      const char **error_r);

/* The multi-line body encoder for RETR and TOP (RFC 1939 section 3):
 * input is the message as stored (CRLF lines); output is the response
 * body: every line that starts with '.' gets another '.', a bare LF
 * becomes CRLF (a message dropped into a Maildir by hand may have LF
 * line ends), a missing final CRLF is added and ".\r\n" ends it. Bare CR
 * and NUL bytes pass through unchanged. For TOP, output stops after the
 * header, the empty line and the first `lines` body lines.
 *
 * Incremental: feed chunks of any size, split anywhere; all state lives
 * in the struct, nothing is allocated. */
struct pop3_dotstuff {
	bool top;          /* TOP: stop after `lines` body lines */
	bool bol;          /* at the beginning of a line */
	bool prev_cr;      /* the last octet of the current line was CR */
	bool in_body;      /* TOP: past the empty line ending the header */
	bool done;         /* TOP: enough lines; further input is ignored */
	uint64_t linepos;  /* octets of the current line seen so far */
	uint64_t lines;    /* TOP: body lines still to send */
};

void pop3_dotstuff_init(struct pop3_dotstuff *ds, bool top, uint64_t lines);
/* Appends the encoding of p[0..n) to out. Returns true when the encoder
 * needs no more input (TOP has its lines): call pop3_dotstuff_finish(). */
bool pop3_dotstuff_feed(struct pop3_dotstuff *ds, const void *p, size_t n, struct strbuf *out);
/* Appends the final CRLF if the message did not end with one, and the
 * terminating ".\r\n". */
void pop3_dotstuff_finish(struct pop3_dotstuff *ds, struct strbuf *out);



#endif
