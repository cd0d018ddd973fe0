/* libFuzzer harness: what a remote SMTP server says to our client — reply
 * lines assembled into replies, EHLO keywords, enhanced status codes, the
 * one-line form that goes into logs and state files — and the MX rdata
 * parser; plus dot-stuffing of the same bytes as a message body. */
#include "mta/dns.h"
#include "proto/smtp_reply.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_reply r;
	smtp_reply_init(&r);
	const char *p = (const char *)data;
	size_t left = size;
	while (left > 0) {
		const char *nl = memchr(p, '\n', left);
		size_t n = nl ? (size_t)(nl - p) : left;
		int rc = smtp_reply_feed(&r, p, n);
		if (rc < 0)
			break;
		if (rc == 1) {
			struct smtp_caps caps;
			smtp_caps_parse(&r, &caps);
			char *one = smtp_reply_oneline(&r);
			/* one printable line, bounded */
			for (const char *q = one; *q; q++)
				if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f)
					abort();
			if (strlen(one) > SMTP_REPLY_TEXT_MAX + 8)
				abort();
			free(one);
			char st[16];
			smtp_status_from_reply(r.code, r.text.s, st, sizeof(st));
			if (st[0] != (char)('0' + r.code / 100))
				abort();
		}
		p += n + (nl ? 1 : 0);
		left -= n + (nl ? 1 : 0);
	}
	smtp_reply_free(&r);

	char name[256];
	int pref;
	dns_mx_rdata_parse(data, size, &pref, name, sizeof(name));

	struct strbuf out = STRBUF_INIT;
	smtp_dot_stuff((const char *)data, size, &out);
	if (out.len < 3 || memcmp(out.s + out.len - 3, ".\r\n", 3) != 0)
		abort();
	strbuf_free(&out);
	return 0;
}
