/* libFuzzer harness: RFC 5322 address lists (To:/Cc: of dropped .eml
 * files and sendmail -t) and bare addresses. */
#include "mail/address.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void cb(const char *addr, void *arg)
{
	(void)arg;
	struct mail_address a;
	const char *err;
	/* everything the list parser reports must be a valid address */
	if (address_parse(addr, true, &a, &err) != 0)
		abort();
	address_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	address_list_parse((const char *)data, size, cb, NULL);
	char *s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	struct mail_address a;
	const char *err;
	if (address_parse(s, size & 1, &a, &err) == 0)
		address_free(&a);
	free(s);
	return 0;
}
