/* libFuzzer harness: the queue-file reader (files in queue/pending can
 * be anything an administrator or an attacker with file access drops). */
#include "queue/queue.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct queue_env e;
	size_t off, len;
	const char *err;
	if (queue_file_parse((const char *)data, size, &e, &off, &len, &err) == 1) {
		if (off > size || len > size - off)
			abort();
		queue_env_free(&e);
	}
	return 0;
}
