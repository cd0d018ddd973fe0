/* Tests for proto/pop3: the command parser (every command, argument
 * counts and numbers, states, case, over-long lines), the RETR/TOP
 * encoder fed whole, at every split point and one byte at a time, and
 * the SASL PLAIN decoder. */
#include "unit.h"
#include "lib/strbuf.h"
#include "proto/pop3.h"
#include "proto/sasl.h"

#include <stdlib.h>

#define A POP3_STATE_AUTHORIZATION
#define T POP3_STATE_TRANSACTION

static const struct parse_case {
	const char *line;
	unsigned state;
	enum pop3_parse_result want;
	enum pop3_cmd_id id;
	int argc;
	const char *arg0, *arg1;
	uint32_t num0, num1;
} parse_cases[] = {
	/* authorization state */
	{ "CAPA", A, POP3_PARSE_OK, POP3_CMD_CAPA, 0, NULL, NULL, 0, 0 },
	{ "capa", A, POP3_PARSE_OK, POP3_CMD_CAPA, 0, NULL, NULL, 0, 0 },
	{ "CAPA x", A, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "USER bob@example.org", A, POP3_PARSE_OK, POP3_CMD_USER, 1, "bob@example.org", NULL, 0, 0 },
	{ "uSeR bob", A, POP3_PARSE_OK, POP3_CMD_USER, 1, "bob", NULL, 0, 0 },
	{ "USER", A, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "USER a b", A, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "USER bob", T, POP3_PARSE_STATE, 0, 0, NULL, NULL, 0, 0 },
	{ "PASS secret", A, POP3_PARSE_OK, POP3_CMD_PASS, 1, "secret", NULL, 0, 0 },
	{ "PASS with  spaces ", A, POP3_PARSE_OK, POP3_CMD_PASS, 1, "with  spaces ", NULL, 0, 0 },
	{ "PASS  lead", A, POP3_PARSE_OK, POP3_CMD_PASS, 1, " lead", NULL, 0, 0 },
	{ "PASS", A, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "PASS ", A, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "pass x", T, POP3_PARSE_STATE, 0, 0, NULL, NULL, 0, 0 },
	{ "AUTH", A, POP3_PARSE_OK, POP3_CMD_AUTH, 0, NULL, NULL, 0, 0 },
	{ "AUTH PLAIN", A, POP3_PARSE_OK, POP3_CMD_AUTH, 1, "PLAIN", NULL, 0, 0 },
	{ "auth plain AGJvYgBzZWNyZXQ=", A, POP3_PARSE_OK, POP3_CMD_AUTH, 2, "plain", "AGJvYgBzZWNyZXQ=", 0, 0 },
	{ "AUTH PLAIN =", A, POP3_PARSE_OK, POP3_CMD_AUTH, 2, "PLAIN", "=", 0, 0 },
	{ "AUTH PLAIN a b", A, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "AUTH PLAIN", T, POP3_PARSE_STATE, 0, 0, NULL, NULL, 0, 0 },
	{ "QUIT", A, POP3_PARSE_OK, POP3_CMD_QUIT, 0, NULL, NULL, 0, 0 },
	{ "QUIT", T, POP3_PARSE_OK, POP3_CMD_QUIT, 0, NULL, NULL, 0, 0 },
	{ "quit now", T, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	/* transaction-only commands refused before login */
	{ "STAT", A, POP3_PARSE_STATE, 0, 0, NULL, NULL, 0, 0 },
	{ "LIST", A, POP3_PARSE_STATE, 0, 0, NULL, NULL, 0, 0 },
	{ "RETR 1", A, POP3_PARSE_STATE, 0, 0, NULL, NULL, 0, 0 },
	{ "DELE 1", A, POP3_PARSE_STATE, 0, 0, NULL, NULL, 0, 0 },
	{ "NOOP", A, POP3_PARSE_STATE, 0, 0, NULL, NULL, 0, 0 },
	{ "RSET", A, POP3_PARSE_STATE, 0, 0, NULL, NULL, 0, 0 },
	{ "TOP 1 0", A, POP3_PARSE_STATE, 0, 0, NULL, NULL, 0, 0 },
	{ "UIDL", A, POP3_PARSE_STATE, 0, 0, NULL, NULL, 0, 0 },
	/* transaction state */
	{ "STAT", T, POP3_PARSE_OK, POP3_CMD_STAT, 0, NULL, NULL, 0, 0 },
	{ "stat 1", T, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "LIST", T, POP3_PARSE_OK, POP3_CMD_LIST, 0, NULL, NULL, 0, 0 },
	{ "LIST 3", T, POP3_PARSE_OK, POP3_CMD_LIST, 1, "3", NULL, 3, 0 },
	{ "list  12 ", T, POP3_PARSE_OK, POP3_CMD_LIST, 1, "12", NULL, 12, 0 },
	{ "LIST 0", T, POP3_PARSE_NUMBER, 0, 0, NULL, NULL, 0, 0 },
	{ "LIST -1", T, POP3_PARSE_NUMBER, 0, 0, NULL, NULL, 0, 0 },
	{ "LIST +1", T, POP3_PARSE_NUMBER, 0, 0, NULL, NULL, 0, 0 },
	{ "LIST 1x", T, POP3_PARSE_NUMBER, 0, 0, NULL, NULL, 0, 0 },
	{ "LIST 1 2", T, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "RETR 1", T, POP3_PARSE_OK, POP3_CMD_RETR, 1, "1", NULL, 1, 0 },
	{ "RETR 007", T, POP3_PARSE_OK, POP3_CMD_RETR, 1, "007", NULL, 7, 0 },
	{ "RETR 999999999", T, POP3_PARSE_OK, POP3_CMD_RETR, 1, "999999999", NULL, 999999999, 0 },
	{ "RETR 1000000000", T, POP3_PARSE_NUMBER, 0, 0, NULL, NULL, 0, 0 },
	{ "RETR 99999999999999999999999", T, POP3_PARSE_NUMBER, 0, 0, NULL, NULL, 0, 0 },
	{ "RETR", T, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "RETR a", T, POP3_PARSE_NUMBER, 0, 0, NULL, NULL, 0, 0 },
	{ "DELE 2", T, POP3_PARSE_OK, POP3_CMD_DELE, 1, "2", NULL, 2, 0 },
	{ "DELE", T, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "DELE 0", T, POP3_PARSE_NUMBER, 0, 0, NULL, NULL, 0, 0 },
	{ "NOOP", T, POP3_PARSE_OK, POP3_CMD_NOOP, 0, NULL, NULL, 0, 0 },
	{ "RSET", T, POP3_PARSE_OK, POP3_CMD_RSET, 0, NULL, NULL, 0, 0 },
	{ "TOP 1 0", T, POP3_PARSE_OK, POP3_CMD_TOP, 2, "1", "0", 1, 0 },
	{ "top 4 10", T, POP3_PARSE_OK, POP3_CMD_TOP, 2, "4", "10", 4, 10 },
	{ "TOP 1", T, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "TOP 0 1", T, POP3_PARSE_NUMBER, 0, 0, NULL, NULL, 0, 0 },
	{ "TOP 1 -1", T, POP3_PARSE_NUMBER, 0, 0, NULL, NULL, 0, 0 },
	{ "TOP 1 2 3", T, POP3_PARSE_SYNTAX, 0, 0, NULL, NULL, 0, 0 },
	{ "UIDL", T, POP3_PARSE_OK, POP3_CMD_UIDL, 0, NULL, NULL, 0, 0 },
	{ "UIDL 5", T, POP3_PARSE_OK, POP3_CMD_UIDL, 1, "5", NULL, 5, 0 },
	{ "CAPA", T, POP3_PARSE_OK, POP3_CMD_CAPA, 0, NULL, NULL, 0, 0 },
	/* unknown and malformed */
	{ "", A, POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL, 0, 0 },
	{ " STAT", T, POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL, 0, 0 },
	{ "APOP bob 0123456789abcdef", A, POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL, 0, 0 },
	{ "STLS", A, POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL, 0, 0 },
	{ "STATS", T, POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL, 0, 0 },
	{ "STA", T, POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL, 0, 0 },
	{ "TO 1 1", T, POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL, 0, 0 },
	{ "HELO", A, POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL, 0, 0 },
	{ "STAT\t", T, POP3_PARSE_UNKNOWN, 0, 0, NULL, NULL, 0, 0 },
};

UNIT_TEST(pop3_parse_table)
{
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		const struct parse_case *c = &parse_cases[i];
		char buf[POP3_CMD_MAX + 1];
		size_t len = strlen(c->line);
		memcpy(buf, c->line, len + 1);
		struct pop3_cmd cmd;
		const char *err = NULL;
		enum pop3_parse_result r = pop3_cmd_parse(buf, len, c->state, &cmd, &err);
		if (r != c->want) {
			fprintf(stderr, "  case %zu \"%s\": got result %d (%s), want %d\n", i, c->line, (int)r,
			        err ? err : "-", (int)c->want);
			unit_failures++;
			continue;
		}
		if (r != POP3_PARSE_OK) {
			CHECK(err != NULL && *err != '\0');
			continue;
		}
		CHECK_INT(cmd.id, c->id);
		CHECK_INT(cmd.argc, c->argc);
		CHECK_STR(cmd.argc > 0 ? cmd.argv[0] : NULL, c->arg0);
		CHECK_STR(cmd.argc > 1 ? cmd.argv[1] : NULL, c->arg1);
		if (c->num0)
			CHECK_INT(cmd.num[0], c->num0);
		if (c->id == POP3_CMD_TOP)
			CHECK_INT(cmd.num[1], c->num1);
	}
}

UNIT_TEST(pop3_parse_limits)
{
	/* RFC 2449: 255 octets with CRLF, so 253 before it */
	char buf[1024];
	struct pop3_cmd cmd;
	const char *err;
	memcpy(buf, "USER ", 5);
	memset(buf + 5, 'a', POP3_CMD_MAX - 5);
	buf[POP3_CMD_MAX] = '\0';
	CHECK_INT(pop3_cmd_parse(buf, POP3_CMD_MAX, A, &cmd, &err), POP3_PARSE_OK);
	CHECK_INT(strlen(cmd.argv[0]), POP3_CMD_MAX - 5);

	memcpy(buf, "USER ", 5);
	memset(buf + 5, 'a', POP3_CMD_MAX + 1 - 5);
	buf[POP3_CMD_MAX + 1] = '\0';
	CHECK_INT(pop3_cmd_parse(buf, POP3_CMD_MAX + 1, A, &cmd, &err), POP3_PARSE_TOO_LONG);
	CHECK_STR(err, "line too long");

	memset(buf, 'x', 1000);
	CHECK_INT(pop3_cmd_parse(buf, 1000, T, &cmd, &err), POP3_PARSE_TOO_LONG);

	/* a NUL inside the line is refused, not truncated */
	memcpy(buf, "USER a\0b", 9);
	CHECK_INT(pop3_cmd_parse(buf, 8, A, &cmd, &err), POP3_PARSE_SYNTAX);
	memcpy(buf, "STAT\0", 6);
	CHECK_INT(pop3_cmd_parse(buf, 5, T, &cmd, &err), POP3_PARSE_SYNTAX);
}

/* ---- the RETR/TOP encoder ---- */

#define S(x) x, sizeof(x) - 1

static const struct enc_case {
	const char *in;
	size_t inlen;
	bool top;
	uint64_t lines;
	const char *want;
	size_t wantlen;
} enc_cases[] = {
	{ S(""), false, 0, S(".\r\n") },
	{ S("a\r\n"), false, 0, S("a\r\n.\r\n") },
	{ S("a"), false, 0, S("a\r\n.\r\n") },
	{ S("a\r"), false, 0, S("a\r\n.\r\n") },
	{ S("a\nb\n"), false, 0, S("a\r\nb\r\n.\r\n") },
	{ S(".\r\n"), false, 0, S("..\r\n.\r\n") },
	{ S("..\r\n"), false, 0, S("...\r\n.\r\n") },
	{ S(".a\r\nb.\r\n.\r\n..x"), false, 0, S("..a\r\nb.\r\n..\r\n...x\r\n.\r\n") },
	{ S("x\r\n.\r\n"), false, 0, S("x\r\n..\r\n.\r\n") },
	{ S("a\rb\r\n"), false, 0, S("a\rb\r\n.\r\n") },
	{ S("\r\n\r\n"), false, 0, S("\r\n\r\n.\r\n") },
	{ S("a\0b\r\n\0\r\n"), false, 0, S("a\0b\r\n\0\r\n.\r\n") },
	{ S("Subject: x\r\n\r\nbody\r\n.\r\n"), false, 0, S("Subject: x\r\n\r\nbody\r\n..\r\n.\r\n") },
	/* TOP */
	{ S("H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n"), true, 0, S("H: 1\r\nH: 2\r\n\r\n.\r\n") },
	{ S("H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n"), true, 2, S("H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\n.\r\n") },
	{ S("H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n"), true, 3, S("H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n.\r\n") },
	{ S("H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n"), true, 100,
	  S("H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\nb3\r\n.\r\n") },
	{ S("H: 1\r\n\r\nb1\r\nb2"), true, 100, S("H: 1\r\n\r\nb1\r\nb2\r\n.\r\n") },
	{ S("H: 1\r\n\r\n.b1\r\n\r\n.\r\n"), true, 3, S("H: 1\r\n\r\n..b1\r\n\r\n..\r\n.\r\n") },
	{ S("H: 1\r\nH: 2"), true, 0, S("H: 1\r\nH: 2\r\n.\r\n") },
	{ S("H: 1\n\nb1\nb2\n"), true, 1, S("H: 1\r\n\r\nb1\r\n.\r\n") },
	{ S("\r\nb1\r\n"), true, 0, S("\r\n.\r\n") },
	{ S("H: \r\r\n\r\nb"), true, 0, S("H: \r\r\n\r\n.\r\n") },
	{ S(""), true, 5, S(".\r\n") },
};

static void encode(const struct enc_case *c, const size_t *splits, size_t nsplits, struct strbuf *out)
{
	struct pop3_dotstuff ds;
	pop3_dotstuff_init(&ds, c->top, c->lines);
	size_t pos = 0;
	bool enough = false;
	for (size_t k = 0; k <= nsplits && !enough; k++) {
		size_t end = k < nsplits ? splits[k] : c->inlen;
		enough = pop3_dotstuff_feed(&ds, c->in + pos, end - pos, out);
		pos = end;
	}
	pop3_dotstuff_finish(&ds, out);
}

UNIT_TEST(pop3_dotstuff_table)
{
	for (size_t i = 0; i < sizeof(enc_cases) / sizeof(enc_cases[0]); i++) {
		const struct enc_case *c = &enc_cases[i];
		struct strbuf out = STRBUF_INIT;
		/* whole */
		encode(c, NULL, 0, &out);
		CHECK_MEM(out.s, out.len, c->want, c->wantlen);
		/* every split point into two chunks */
		for (size_t at = 0; at <= c->inlen; at++) {
			strbuf_reset(&out);
			encode(c, &at, 1, &out);
			if (out.len != c->wantlen || memcmp(out.s, c->want, c->wantlen) != 0) {
				fprintf(stderr, "  case %zu split at %zu differs\n", i, at);
				unit_failures++;
			}
		}
		/* one byte at a time */
		size_t *splits = calloc(c->inlen + 1, sizeof(size_t));
		for (size_t k = 0; k < c->inlen; k++)
			splits[k] = k;
		strbuf_reset(&out);
		encode(c, splits, c->inlen, &out);
		CHECK_MEM(out.s, out.len, c->want, c->wantlen);
		free(splits);
		strbuf_free(&out);
	}
}

UNIT_TEST(pop3_dotstuff_top_stops_early)
{
	/* feed reports "enough" as soon as TOP has its lines */
	struct pop3_dotstuff ds;
	struct strbuf out = STRBUF_INIT;
	pop3_dotstuff_init(&ds, true, 1);
	CHECK(!pop3_dotstuff_feed(&ds, S("H: x\r\n\r\n"), &out));
	CHECK(pop3_dotstuff_feed(&ds, S("line1\r\nline2\r\n"), &out));
	CHECK(pop3_dotstuff_feed(&ds, S("more"), &out));
	pop3_dotstuff_finish(&ds, &out);
	CHECK_MEM(out.s, out.len, "H: x\r\n\r\nline1\r\n.\r\n", (size_t)18);
	strbuf_free(&out);
}

UNIT_TEST(pop3_dotstuff_large)
{
	/* 3 MB of lines that all start with '.', in odd-sized chunks */
	size_t nlines = 3 * 1024 * 1024 / 8;
	const char *unit_line = ".abcde\r\n";
	char *in = malloc(nlines * 8);
	for (size_t i = 0; i < nlines; i++)
		memcpy(in + 8 * i, unit_line, 8);
	struct pop3_dotstuff ds;
	struct strbuf out = STRBUF_INIT;
	pop3_dotstuff_init(&ds, false, 0);
	for (size_t pos = 0; pos < nlines * 8; pos += 65537) {
		size_t n = nlines * 8 - pos < 65537 ? nlines * 8 - pos : 65537;
		pop3_dotstuff_feed(&ds, in + pos, n, &out);
	}
	pop3_dotstuff_finish(&ds, &out);
	CHECK_INT(out.len, nlines * 9 + 3);
	bool ok = true;
	for (size_t i = 0; i < nlines && ok; i++)
		ok = memcmp(out.s + 9 * i, "..abcde\r\n", 9) == 0;
	CHECK(ok);
	CHECK(memcmp(out.s + out.len - 3, ".\r\n", 3) == 0);
	strbuf_free(&out);
	free(in);
}

/* ---- SASL PLAIN ---- */

static const struct plain_case {
	const char *b64;
	int want;
	const char *authz, *authc, *pass;
} plain_cases[] = {
	/* "\0bob\0secret" */
	{ "AGJvYgBzZWNyZXQ=", 0, "", "bob", "secret" },
	/* "bob\0bob\0secret" */
	{ "Ym9iAGJvYgBzZWNyZXQ=", 0, "bob", "bob", "secret" },
	/* "BOB\0bob\0pw" */
	{ "Qk9CAGJvYgBwdw==", 0, "BOB", "bob", "pw" },
	/* "\0u@localhost\0p w" (space in password) */
	{ "AHVAbG9jYWxob3N0AHAgdw==", 0, "", "u@localhost", "p w" },
	/* "eve\0bob\0secret": authzid differs */
	{ "ZXZlAGJvYgBzZWNyZXQ=", -1, NULL, NULL, NULL },
	/* "\0\0secret": empty authcid */
	{ "AABzZWNyZXQ=", -1, NULL, NULL, NULL },
	/* "\0bob\0": empty password */
	{ "AGJvYgA=", -1, NULL, NULL, NULL },
	/* "bobsecret": no NULs */
	{ "Ym9ic2VjcmV0", -1, NULL, NULL, NULL },
	/* "\0bob\0se\0cret": three NULs */
	{ "AGJvYgBzZQBjcmV0", -1, NULL, NULL, NULL },
	/* "\0b\nob\0pw": control character in the login */
	{ "AGIKb2IAcHc=", -1, NULL, NULL, NULL },
	/* "\0bob\0p\tw\x7f": the password may hold control characters */
	{ "AGJvYgBwCXd/", 0, "", "bob", "p\tw\x7f" },
	{ "=", -1, NULL, NULL, NULL },
	{ "", -1, NULL, NULL, NULL },
	{ "AGJvYgBzZWNyZXQ", -1, NULL, NULL, NULL },      /* missing padding */
	{ "AGJvYgBzZWNy ZXQ=", -1, NULL, NULL, NULL },    /* space */
	{ "AGJvYgBzZWNyZXQ=AAAA", -1, NULL, NULL, NULL }, /* data after padding */
	{ "AGJv*gBzZWNyZXQ=", -1, NULL, NULL, NULL },     /* bad character */
	{ "A===", -1, NULL, NULL, NULL },
};

UNIT_TEST(pop3_sasl_plain)
{
	for (size_t i = 0; i < sizeof(plain_cases) / sizeof(plain_cases[0]); i++) {
		const struct plain_case *c = &plain_cases[i];
		struct strbuf buf = STRBUF_INIT;
		const char *authz = NULL, *authc = NULL, *pass = NULL, *err = NULL;
		int r = sasl_plain_decode(c->b64, strlen(c->b64), &buf, &authz, &authc, &pass, &err);
		if (r != c->want) {
			fprintf(stderr, "  case %zu \"%s\": got %d (%s), want %d\n", i, c->b64, r, err ? err : "-",
			        c->want);
			unit_failures++;
			strbuf_free(&buf);
			continue;
		}
		if (r == 0) {
			CHECK_STR(authz, c->authz);
			CHECK_STR(authc, c->authc);
			CHECK_STR(pass, c->pass);
		} else {
			CHECK(err != NULL);
		}
		strbuf_free(&buf);
	}
	/* a bounded buffer refuses what does not fit, never overflows */
	struct strbuf small;
	strbuf_init(&small, 8);
	const char *a, *b, *p, *err;
	CHECK_INT(sasl_plain_decode("AGJvYgBzZWNyZXQ=", 16, &small, &a, &b, &p, &err), -1);
	strbuf_free(&small);
}
