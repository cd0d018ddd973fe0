/* Unit tests: queue ids, the queue-file envelope writer and reader,
 * incomplete files, message helpers. */
#include "unit.h"
#include "queue/queue.h"
#include "mail/message.h"
#include "lib/strbuf.h"

#include <stdlib.h>

UNIT_TEST(queue_ids)
{
	char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1];
	queue_id_new(a);
	queue_id_new(b);
	CHECK_INT(strlen(a), QUEUE_ID_LEN);
	CHECK(strcmp(a, b) < 0); /* time-ordered within a process */
	CHECK(queue_id_ok(a));
	CHECK(!queue_id_ok("../etc"));
	CHECK(!queue_id_ok(""));
	CHECK(!queue_id_ok("a/b"));
	CHECK(!queue_id_ok(".hidden"));
}

UNIT_TEST(queue_env_roundtrip)
{
	struct queue_env e = { 0 };
	memcpy(e.id, "0123456789ABCDEF", 17);
	e.received = 1764781080;
	e.from = strdup("sender@example.org");
	strv_add(&e.rcpt, "a@example.com");
	strv_add(&e.rcpt, "\"odd name\"@example.com");
	e.client_ip = strdup("192.0.2.1");
	e.helo = strdup("evil\r\nrcpt <injected@x>");
	e.origin = strdup("smtp");
	e.body_8bit = true;
	size_t elen;
	char *env = queue_env_format(&e, &elen);
	CHECK(strstr(env, "injected") == NULL || strstr(env, "\nrcpt <injected") == NULL);
	const char *body = "Subject: t\r\n\r\nbody\r\n";
	struct strbuf file = STRBUF_INIT;
	strbuf_add(&file, env, elen);
	strbuf_adds(&file, body);
	strbuf_addf(&file, QUEUE_END_PREFIX "%zu\n", strlen(body));
	struct queue_env got;
	size_t off, blen;
	const char *err;
	CHECK_INT(queue_file_parse(file.s, file.len, &got, &off, &blen, &err), 1);
	CHECK_STR(got.id, "0123456789ABCDEF");
	CHECK_STR(got.from, "sender@example.org");
	CHECK_INT(got.rcpt.n, 2);
	if (got.rcpt.n == 2)
		CHECK_STR(got.rcpt.v[1], "\"odd name\"@example.com");
	CHECK_INT(got.received, 1764781080);
	CHECK(got.body_8bit);
	CHECK_MEM(file.s + off, blen, body, strlen(body));
	queue_env_free(&got);

	/* truncated at every point: never "complete" */
	for (size_t cut = 0; cut < file.len; cut++) {
		int r = queue_file_parse(file.s, cut, &got, &off, &blen, &err);
		if (r == 1) {
			fprintf(stderr, "  cut at %zu parsed as complete\n", cut);
			unit_failures++;
			queue_env_free(&got);
		}
	}
	/* wrong length in the trailer */
	struct strbuf bad = STRBUF_INIT;
	strbuf_add(&bad, env, elen);
	strbuf_adds(&bad, body);
	strbuf_addf(&bad, QUEUE_END_PREFIX "%zu\n", strlen(body) + 1);
	CHECK_INT(queue_file_parse(bad.s, bad.len, &got, &off, &blen, &err), 0);
	strbuf_free(&bad);
	strbuf_free(&file);
	free(env);
	queue_env_free(&e);
}

UNIT_TEST(message_helpers)
{
	struct strbuf out = STRBUF_INIT;
	message_to_crlf("a\nb\r\nc\rd", 8, &out);
	CHECK_MEM(out.s, out.len, "a\r\nb\r\nc\r\nd\r\n", 12);
	strbuf_free(&out);

	const char *m = "To: a@x.test\r\nBcc: secret@y.test,\r\n other@z.test\r\nSubject: s\r\n\r\nBcc: not a header\r\n";
	CHECK(message_header_has(m, strlen(m), "bcc"));
	CHECK_INT(message_header_remove(m, strlen(m), "Bcc", &out), 1);
	CHECK(strstr(out.s, "secret") == NULL);
	CHECK(strstr(out.s, "Bcc: not a header") != NULL);
	strbuf_free(&out);
	const char *r = "Received: a\r\nReceived: b\r\nX: y\r\n\r\nReceived: body\r\n";
	CHECK_INT(message_count_received(r, strlen(r)), 2);
	CHECK_INT(message_header_len("A: b\nC: d\n\nbody", 15), 11);
}
