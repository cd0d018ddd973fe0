/* libFuzzer harness: POP3 command parsing (both states), the RETR/TOP
 * dot-stuffing encoder (split at a fuzzed point) and SASL PLAIN decoding.
 * Invariant checked: the encoder's output never contains a line that is
 * exactly "." before the terminator. */
#include "proto/pop3.h"
#include "proto/sasl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = malloc(size + 1);
	memcpy(line, data, size);
	line[size] = '\0';
	struct pop3_cmd cmd;
	const char *err;
	pop3_cmd_parse(line, size, POP3_STATE_AUTHORIZATION, &cmd, &err);
	memcpy(line, data, size);
	line[size] = '\0';
	pop3_cmd_parse(line, size, POP3_STATE_TRANSACTION, &cmd, &err);
	free(line);

	struct pop3_dotstuff ds;
	struct strbuf out = STRBUF_INIT;
	size_t split = size ? data[0] % size : 0;
	pop3_dotstuff_init(&ds, size & 1, size ? data[size - 1] % 8 : 0);
	if (!pop3_dotstuff_feed(&ds, data, split, &out))
		pop3_dotstuff_feed(&ds, data + split, size - split, &out);
	pop3_dotstuff_finish(&ds, &out);
	if (out.len < 3 || memcmp(out.s + out.len - 3, ".\r\n", 3) != 0)
		abort();
	for (size_t i = 0; i + 3 < out.len; i++)
		if ((i == 0 || out.s[i - 1] == '\n') && memcmp(out.s + i, ".\r\n", 3) == 0 && i + 3 != out.len)
			abort();
	strbuf_free(&out);

	struct strbuf buf = STRBUF_INIT;
	const char *a, *b, *c;
	sasl_plain_decode((const char *)data, size, &buf, &a, &b, &c, &err);
	strbuf_free(&buf);
	return 0;
}
