/* Unit tests: per-recipient state files (queue/state.h) — round trip,
 * missing file, recipients added and dropped against the envelope,
 * hostile reply text, malformed files. Works in a temporary data dir. */
#include "unit.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "queue/state.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

static char *tmp_data_dir(void)
{
	char tmpl[] = "/tmp/posthorn-state-XXXXXX";
	char *d = mkdtemp(tmpl);
	if (d == NULL)
		return NULL;
	const char *err;
	char *dir = xstrdup(d);
	if (queue_ensure_dirs(dir, &err) < 0) {
		free(dir);
		return NULL;
	}
	return dir;
}

static void rm_data_dir(char *dir, const char *id)
{
	char p[PATH_MAX];
	queue_state_remove(dir, "outbox", id);
	static const char *folders[] = { QUEUE_FOLDERS };
	for (size_t i = 0; i < sizeof(folders) / sizeof(folders[0]); i++) {
		queue_path(p, sizeof(p), dir, folders[i], NULL);
		rmdir(p);
	}
	snprintf(p, sizeof(p), "%s/queue", dir);
	rmdir(p);
	rmdir(dir);
	free(dir);
}

static void env_init(struct queue_env *e, const char *id, const char *const *rcpt, size_t n)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->id, sizeof(e->id), "%s", id);
	e->from = xstrdup("sender@example.org");
	for (size_t i = 0; i < n; i++)
		strv_add(&e->rcpt, rcpt[i]);
}

UNIT_TEST(state_roundtrip)
{
	char *dir = tmp_data_dir();
	CHECK(dir != NULL);
	if (dir == NULL)
		return;
	const char *id = "0123456789ABCDEF";
	const char *rc[] = { "a@example.com", "b@example.net", "\"odd> deferred x\"@example.org" };
	struct queue_env env;
	env_init(&env, id, rc, 3);
	const char *err = NULL;

	/* missing file: everything pending */
	struct queue_state st;
	CHECK_INT(queue_state_load(dir, "outbox", &env, &st, &err), 0);
	CHECK_INT(st.n, 3);
	CHECK_INT(st.attempts, 0);
	for (size_t i = 0; i < st.n; i++) {
		CHECK_INT(st.r[i].status, RCPT_PENDING);
		CHECK_STR(st.r[i].addr, rc[i]);
	}

	st.first_attempt = 1764781080;
	st.last_attempt = 1764784680;
	st.next_attempt = 1764788280;
	st.attempts = 3;
	st.warned = true;
	st.r[0].status = RCPT_DEFERRED;
	st.r[0].attempts = 3;
	st.r[0].host = xstrdup("mx1.example.com[192.0.2.7]");
	st.r[0].reply = xstrdup("451 4.7.1 try later\r\nrcpt <forged@x> delivered");
	st.r[1].status = RCPT_DELIVERED;
	st.r[1].attempts = 1;
	st.r[1].host = xstrdup("mx with space[198.51.100.2]");
	st.r[1].reply = xstrdup("250 2.0.0 ok");
	st.r[2].status = RCPT_FAILED;
	st.r[2].attempts = 1;
	st.r[2].reply = xstrdup("550 5.1.1 unknown");
	CHECK_INT(queue_state_save(dir, "outbox", id, &st, &err), 0);

	struct queue_state got;
	CHECK_INT(queue_state_load(dir, "outbox", &env, &got, &err), 0);
	CHECK_INT(got.first_attempt, 1764781080);
	CHECK_INT(got.last_attempt, 1764784680);
	CHECK_INT(got.next_attempt, 1764788280);
	CHECK_INT(got.attempts, 3);
	CHECK(got.warned);
	CHECK_INT(got.n, 3);
	CHECK_INT(got.r[0].status, RCPT_DEFERRED);
	CHECK_INT(got.r[0].attempts, 3);
	CHECK_STR(got.r[0].host, "mx1.example.com[192.0.2.7]");
	/* the CR LF of a hostile reply cannot forge a line */
	CHECK_STR(got.r[0].reply, "451 4.7.1 try later??rcpt <forged@x> delivered");
	CHECK_INT(got.r[1].status, RCPT_DELIVERED);
	CHECK_STR(got.r[1].host, "mx_with_space[198.51.100.2]");
	CHECK_INT(got.r[2].status, RCPT_FAILED);
	CHECK_STR(got.r[2].addr, rc[2]);
	CHECK(got.r[2].host == NULL);
	CHECK_STR(got.r[2].reply, "550 5.1.1 unknown");
	queue_state_free(&got);

	/* the envelope changed: a recipient dropped, one added, order changed */
	struct queue_env env2;
	const char *rc2[] = { "new@example.com", "b@example.net" };
	env_init(&env2, id, rc2, 2);
	CHECK_INT(queue_state_load(dir, "outbox", &env2, &got, &err), 0);
	CHECK_INT(got.n, 2);
	CHECK_STR(got.r[0].addr, "new@example.com");
	CHECK_INT(got.r[0].status, RCPT_PENDING);
	CHECK_STR(got.r[1].addr, "b@example.net");
	CHECK_INT(got.r[1].status, RCPT_DELIVERED);
	queue_state_free(&got);
	queue_env_free(&env2);

	/* text form is what state.h documents */
	size_t len;
	char *text = queue_state_format(&st, &len);
	CHECK(strncmp(text, "posthorn-state 1\nfirst-attempt 1764781080\n", 42) == 0);
	CHECK(strstr(text, "\nwarned yes\n") != NULL);
	CHECK(strstr(text, "\nrcpt <b@example.net> delivered attempts=1 host=mx_with_space[198.51.100.2] reply=250 2.0.0 ok\n") != NULL);
	free(text);

	queue_state_free(&st);
	queue_env_free(&env);
	rm_data_dir(dir, id);
}

UNIT_TEST(state_malformed)
{
	char *dir = tmp_data_dir();
	CHECK(dir != NULL);
	if (dir == NULL)
		return;
	const char *id = "0123456789ABCDEG";
	const char *rc[] = { "a@example.com" };
	struct queue_env env;
	env_init(&env, id, rc, 1);
	static const char *bad[] = {
		"not a state file\n",
		"posthorn-state 1\nrcpt a@example.com pending\n",
		"posthorn-state 1\nrcpt <a@example.com> unknownstatus\n",
		"posthorn-state 1\nrcpt <a@example.com\n",
	};
	char path[PATH_MAX], name[64];
	snprintf(name, sizeof(name), "%s.st", id);
	queue_path(path, sizeof(path), dir, "outbox", name);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *err = NULL;
		CHECK_INT(fsutil_write_atomic(path, bad[i], strlen(bad[i]), 0600, &err), 0);
		struct queue_state st;
		int r = queue_state_load(dir, "outbox", &env, &st, &err);
		if (r != -1) {
			fprintf(stderr, "  bad state %zu loaded\n", i);
			unit_failures++;
			queue_state_free(&st);
		}
	}
	/* unknown keys and a file for other recipients are fine */
	const char *ok = "posthorn-state 1\nfuture-key 7\nattempts 2\nrcpt <gone@x.org> failed attempts=1\n";
	const char *err = NULL;
	CHECK_INT(fsutil_write_atomic(path, ok, strlen(ok), 0600, &err), 0);
	struct queue_state st;
	CHECK_INT(queue_state_load(dir, "outbox", &env, &st, &err), 0);
	CHECK_INT(st.attempts, 2);
	CHECK_INT(st.n, 1);
	CHECK_INT(st.r[0].status, RCPT_PENDING);
	queue_state_free(&st);
	CHECK_STR(rcpt_status_name(RCPT_FAILED), "failed");
	queue_env_free(&env);
	rm_data_dir(dir, id);
}
