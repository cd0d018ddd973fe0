/* proto/pop3 — see pop3.h. Pure code, runs in any thread.
 *
 * Invariants: the parser never reads past len and never writes outside
 * the line it was given; arguments it returns point into that line. The
 * encoder's output depends only on the concatenation of its input, never
 * on how it was split into chunks (tests feed it at every split point).
 * Errors are the peer's fault and come back as a result code plus reply
 * text; nothing here aborts on input. */
#include "proto/pop3.h"
#include "lib/base64.h"

#include <string.h>
#include <strings.h>

enum arg_kind {
	ARG_WORD,    /* any non-space text */
	ARG_REST,    /* the rest of the line after one space (PASS) */
	ARG_MSG,     /* message number 1..POP3_NUM_MAX */
	ARG_COUNT,   /* line count 0..POP3_NUM_MAX */
};

#define S_AUTH POP3_STATE_AUTHORIZATION
#define S_TRANS POP3_STATE_TRANSACTION

static const struct cmd_def {
	const char *name;
	enum pop3_cmd_id id;
	unsigned states;
	int min_args, max_args;
	enum arg_kind kind[POP3_ARGS_MAX];
} cmds[] = {
	{ "CAPA", POP3_CMD_CAPA, S_AUTH | S_TRANS, 0, 0, { ARG_WORD, ARG_WORD } },
	{ "USER", POP3_CMD_USER, S_AUTH, 1, 1, { ARG_WORD, ARG_WORD } },
	{ "PASS", POP3_CMD_PASS, S_AUTH, 1, 1, { ARG_REST, ARG_WORD } },
	{ "AUTH", POP3_CMD_AUTH, S_AUTH, 0, 2, { ARG_WORD, ARG_WORD } },
	{ "QUIT", POP3_CMD_QUIT, S_AUTH | S_TRANS, 0, 0, { ARG_WORD, ARG_WORD } },
	{ "STAT", POP3_CMD_STAT, S_TRANS, 0, 0, { ARG_WORD, ARG_WORD } },
	{ "LIST", POP3_CMD_LIST, S_TRANS, 0, 1, { ARG_MSG, ARG_WORD } },
	{ "RETR", POP3_CMD_RETR, S_TRANS, 1, 1, { ARG_MSG, ARG_WORD } },
	{ "DELE", POP3_CMD_DELE, S_TRANS, 1, 1, { ARG_MSG, ARG_WORD } },
	{ "NOOP", POP3_CMD_NOOP, S_TRANS, 0, 0, { ARG_WORD, ARG_WORD } },
	{ "RSET", POP3_CMD_RSET, S_TRANS, 0, 0, { ARG_WORD, ARG_WORD } },
	{ "TOP", POP3_CMD_TOP, S_TRANS, 2, 2, { ARG_MSG, ARG_COUNT } },
	{ "UIDL", POP3_CMD_UIDL, S_TRANS, 0, 1, { ARG_MSG, ARG_WORD } },
};

/* Keywords are 3 or 4 printable characters (RFC 2449 section 3). */
#define POP3_KEYWORD_MAX 4

static bool parse_num(const char *s, uint32_t min, uint32_t *v)
{
	uint32_t n = 0;
	size_t digits = 0;
	if (*s == '\0')
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		/* leading zeros are harmless; only significant digits count */
		if (n == 0 && *s == '0')
			continue;
		if (++digits > 9)
			return false;
		n = n * 10 + (uint32_t)(*s - '0');
	}
	if (n < min || n > POP3_NUM_MAX)
		return false;
	*v = n;
	return true;
}

enum pop3_parse_result pop3_cmd_parse(char *line, size_t len, unsigned state, struct pop3_cmd *cmd,
                                      const char **error_r)
{
	memset(cmd, 0, sizeof(*cmd));
	if (len > POP3_CMD_MAX) {
		*error_r = "line too long";
		return POP3_PARSE_TOO_LONG;
	}
	if (memchr(line, '\0', len) != NULL) {
		*error_r = "syntax error: NUL in command";
		return POP3_PARSE_SYNTAX;
	}
	line[len] = '\0';

	size_t kw = 0;
	while (kw < len && line[kw] != ' ')
		kw++;
	const struct cmd_def *def = NULL;
	if (kw > 0 && kw <= POP3_KEYWORD_MAX) {
		for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
			if (strlen(cmds[i].name) == kw && strncasecmp(line, cmds[i].name, kw) == 0) {
				def = &cmds[i];
				break;
			}
		}
	}
	if (def == NULL) {
		*error_r = "unknown command";
		return POP3_PARSE_UNKNOWN;
	}
	if ((def->states & state) == 0) {
		*error_r = "command not valid in this state";
		return POP3_PARSE_STATE;
	}
	cmd->id = def->id;
	cmd->name = def->name;

	char *p = line + kw;
	if (def->max_args > 0 && def->kind[0] == ARG_REST) {
		/* exactly one separating space; everything after it is the
		 * argument, spaces included */
		if (*p == ' ' && p[1] != '\0') {
			cmd->argv[cmd->argc++] = p + 1;
		}
	} else {
		for (;;) {
			while (*p == ' ')
				*p++ = '\0';
			if (*p == '\0')
				break;
			if (cmd->argc == def->max_args) {
				*error_r = "syntax error: too many arguments";
				return POP3_PARSE_SYNTAX;
			}
			cmd->argv[cmd->argc++] = p;
			while (*p != '\0' && *p != ' ')
				p++;
		}
	}
	if (cmd->argc < def->min_args) {
		*error_r = "syntax error: missing argument";
		return POP3_PARSE_SYNTAX;
	}
	for (int i = 0; i < cmd->argc; i++) {
		if (def->kind[i] == ARG_MSG && !parse_num(cmd->argv[i], 1, &cmd->num[i])) {
			*error_r = "invalid message number";
			return POP3_PARSE_NUMBER;
		}
		if (def->kind[i] == ARG_COUNT && !parse_num(cmd->argv[i], 0, &cmd->num[i])) {
			*error_r = "invalid line count";
			return POP3_PARSE_NUMBER;
		}
	}
	return POP3_PARSE_OK;
}

void pop3_dotstuff_init(struct pop3_dotstuff *ds, bool top, uint64_t lines)
{
	memset(ds, 0, sizeof(*ds));
	ds->top = top;
	ds->lines = lines;
	ds->bol = true;
}

bool pop3_dotstuff_feed(struct pop3_dotstuff *ds, const void *data, size_t n, struct strbuf *out)
{
	const unsigned char *p = data;
	size_t i = 0;
	while (i < n && !ds->done) {
		if (ds->bol) {
			if (p[i] == '.')
				strbuf_addc(out, '.');
			ds->bol = false;
		}
		const unsigned char *lf = memchr(p + i, '\n', n - i);
		size_t end = lf ? (size_t)(lf - p) : n;
		if (end > i) {
			strbuf_add(out, p + i, end - i);
			ds->linepos += end - i;
			ds->prev_cr = p[end - 1] == '\r';
		}
		if (lf == NULL)
			break;
		/* at the LF: normalise a bare LF to CRLF */
		strbuf_add(out, ds->prev_cr ? "\n" : "\r\n", ds->prev_cr ? 1 : 2);
		bool empty = ds->linepos == 0 || (ds->linepos == 1 && ds->prev_cr);
		i = end + 1;
		ds->bol = true;
		ds->linepos = 0;
		ds->prev_cr = false;
		if (ds->top) {
			if (!ds->in_body) {
				if (empty) {
					ds->in_body = true;
					if (ds->lines == 0)
						ds->done = true;
				}
			} else if (--ds->lines == 0) {
				ds->done = true;
			}
		}
	}
	return ds->done;
}

void pop3_dotstuff_finish(struct pop3_dotstuff *ds, struct strbuf *out)
{
	if (!ds->bol)
		strbuf_adds(out, ds->prev_cr ? "\n" : "\r\n");
	strbuf_adds(out, ".\r\n");
	ds->bol = true;
	ds->prev_cr = false;
	ds->linepos = 0;
	ds->done = true;
}

