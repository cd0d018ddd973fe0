/* bounce — see bounce.h.
 *
 * Role: MTA worker threads. Durability: queue_write_file() returns only
 * after the report is fsync'd and renamed into queue/pending and the
 * folder fsync'd, so the caller may then record the recipients as failed
 * and remove the original. On error nothing is left behind but the
 * temp file queue_write_file cleans up. */
#include "mta/bounce.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

int mta_bounce_write(const char *data_dir, const char *hostname, const struct queue_env *env, const char *hdr,
                     size_t hdr_len, const struct dsn_rcpt *r, size_t n, int64_t retry_until,
                     char id_r[QUEUE_ID_LEN + 1], const char **error_r)
{
	struct queue_env b = { 0 };
	queue_id_new(b.id);
	int64_t now = (int64_t)time(NULL);
	char *msgid = xasprintf("%s.%lld.dsn@%s", b.id, (long long)now, hostname);
	struct dsn_info in = {
		.reporting_mta = hostname,
		.queue_id = env->id,
		.envelope_from = env->from,
		.arrival = env->received,
		.now = now,
		.retry_until = retry_until,
		.message_id = msgid,
		.r = r,
		.n = n,
		.orig = hdr,
		.orig_len = hdr_len,
	};
	struct strbuf msg = STRBUF_INIT;
	bool has8 = false;
	dsn_build(&in, &msg, &has8);
	b.received = now;
	b.from = xstrdup("");
	strv_add(&b.rcpt, env->from);
	b.origin = xstrdup("bounce");
	b.body_8bit = has8;
	for (const unsigned char *p = (const unsigned char *)env->from; *p; p++)
		if (*p >= 0x80)
			b.smtputf8 = true;
	int rc = queue_write_file(data_dir, "pending", &b, msg.s, msg.len, error_r);
	if (rc == 0)
		memcpy(id_r, b.id, sizeof(b.id));
	strbuf_free(&msg);
	free(msgid);
	queue_env_free(&b);
	return rc < 0 ? -1 : 0;
}
