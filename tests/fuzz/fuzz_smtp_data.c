/* libFuzzer harness: the DATA reader and BDAT checker. Input is split at
 * a position taken from the first byte, so chunk boundaries are fuzzed
 * too. Invariants: consumed <= input, output never longer than input, and
 * once done nothing more is consumed. */
#include "proto/smtp.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t split = data[0] % (size);
	data++;
	size--;
	if (split > size)
		split = size;
	struct smtp_data d;
	struct strbuf out = STRBUF_INIT;
	smtp_data_init(&d, 998);
	size_t used = smtp_data_feed(&d, data, split, &out);
	if (!d.done)
		used += smtp_data_feed(&d, data + used, size - used, &out);
	if (used > size || out.len > size)
		abort();
	strbuf_free(&out);
	smtp_data_init(&d, 998);
	smtp_data_check(&d, data, size);
	smtp_data_check_end(&d);
	return 0;
}
