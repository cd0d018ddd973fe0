/* libFuzzer harness: command line splitting and MAIL/RCPT argument
 * parsing (the address parser underneath). */
#include "proto/smtp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = malloc(size + 1);
	memcpy(line, data, size);
	line[size] = '\0';
	struct smtp_cmd cmd;
	smtp_cmd_parse(line, &cmd);
	struct smtp_mail_args m;
	const char *reply;
	if (smtp_parse_mail(cmd.args, &m, &reply) == 0) {
		char *f = address_format(&m.addr);
		free(f);
		address_free(&m.addr);
	}
	struct mail_address a;
	if (smtp_parse_rcpt(cmd.args, size & 1, &a, &reply) == 0) {
		char *f = address_format(&a);
		/* a formatted address must parse back to the same thing */
		struct mail_address b;
		const char *err;
		if (f[0] && address_parse(f, true, &b, &err) == 0) {
			if (strcmp(b.domain, a.domain) != 0 || strcmp(b.local, a.local) != 0)
				abort();
			address_free(&b);
		}
		free(f);
		address_free(&a);
	}
	free(line);
	return 0;
}
