/* Unit tests: the queue console commands run offline on the files of a
 * temporary queue (the same code the daemon runs online), with a console
 * that captures what they print: argument errors name the argument, "all"
 * needs a confirmation, and the file operations (delete, hold, release,
 * requeue, quarantine, restore) leave exactly the files they should. */
#include "unit.h"
#include "admin/console.h"
#include "admin/queue_cmd.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"
#include "queue/index.h"
#include "queue/queue.h"
#include "queue/state.h"

#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cap {
	struct strbuf out, err;
	int answer; /* to questions */
	int asked;
};

static int cap_emit(struct console *c, char tag, const char *p, size_t n)
{
	struct cap *k = c->arg;
	if (tag == 'o')
		strbuf_add(&k->out, p, n);
	else if (tag == 'e')
		strbuf_add(&k->err, p, n);
	else if (tag == 'q') {
		k->asked++;
		return k->answer;
	}
	return 0;
}

/* Runs "posthorn queue LINE" offline on data; the output stays in k. */
static int run(const char *data, struct cap *k, bool interactive, const char *line)
{
	strbuf_free(&k->out);
	strbuf_free(&k->err);
	k->asked = 0;
	struct console con;
	console_init_local(&con);
	con.emit = cap_emit;
	con.arg = k;
	con.progress = false;
	con.interactive = interactive;
	char *copy = xstrdup(line), *save = NULL;
	char *argv[64];
	int argc = 0;
	for (char *t = strtok_r(copy, " ", &save); t && argc < 63; t = strtok_r(NULL, " ", &save))
		argv[argc++] = t;
	argv[argc] = NULL;
	struct queue_cmd_env env = { .data_dir = data };
	int rc = queue_cmd_run(&env, &con, argc, argv);
	queue_index_free(&env.ix);
	free(copy);
	return rc;
}

static const char *out(struct cap *k)
{
	return k->out.s ? k->out.s : "";
}

static const char *err(struct cap *k)
{
	return k->err.s ? k->err.s : "";
}

static char *tmpdata(void)
{
	char tmpl[] = "/tmp/posthorn-test-qcmd-XXXXXX";
	char *d = mkdtemp(tmpl);
	const char *e;
	if (d == NULL || queue_ensure_dirs(d, &e) < 0)
		return NULL;
	char log[PATH_MAX];
	snprintf(log, sizeof(log), "%s/log", d);
	fsutil_mkdir_p(log, 0700, &e);
	return xstrdup(d);
}

static void rm_rf(const char *dir)
{
	char *cmd = xasprintf("rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "  cannot remove %s\n", dir);
	free(cmd);
}

static bool exists(const char *data, const char *folder, const char *name)
{
	char p[PATH_MAX];
	queue_path(p, sizeof(p), data, folder, name);
	return access(p, F_OK) == 0;
}

/* Message files (no .st) in a folder. */
static size_t nfiles(const char *data, const char *folder)
{
	char p[PATH_MAX];
	queue_path(p, sizeof(p), data, folder, NULL);
	DIR *d = opendir(p);
	size_t n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' && strstr(de->d_name, ".st") == NULL)
			n++;
	if (d)
		closedir(d);
	return n;
}

static void put_msg(const char *data, const char *folder, const char *id, const char *from, const char *rcpts,
                    const char *fp, const char *subject)
{
	struct queue_env e = { 0 };
	snprintf(e.id, sizeof(e.id), "%s", id);
	e.received = 1764781080;
	e.from = xstrdup(from);
	e.auth_user = xstrdup(from);
	e.client_ip = xstrdup("192.0.2.1");
	snprintf(e.fingerprint, sizeof(e.fingerprint), "%s", fp);
	char *r = xstrdup(rcpts), *save = NULL;
	for (char *t = strtok_r(r, ",", &save); t; t = strtok_r(NULL, ",", &save))
		strv_add(&e.rcpt, t);
	free(r);
	char *body = xasprintf("Subject: %s\r\n\r\nhello\r\n", subject);
	const char *er;
	CHECK_INT(queue_write_file(data, folder, &e, body, strlen(body), &er), 0);
	free(body);
	queue_env_free(&e);
}

UNIT_TEST(queue_cmd_argument_errors)
{
	char *data = tmpdata();
	CHECK(data != NULL);
	if (data == NULL)
		return;
	const char *e;
	log_open(NULL, true, &e);
	static const struct {
		const char *line;
		int rc;
		const char *names; /* the message must name this */
	} rows[] = {
		{ "list --limit 0", 2, "--limit" },
		{ "list --limit", 2, "--limit needs a value" },
		{ "list --older 3x", 2, "--older" },
		{ "list --newer=-5m", 2, "--newer" },
		{ "list --folder spam", 2, "--folder" },
		{ "list --sort colour", 2, "--sort" },
		{ "list --min-size 10q", 2, "--min-size" },
		{ "list --ip 192.0.2.0/99", 2, "--ip" },
		{ "list --fingerprint zz", 2, "--fingerprint" },
		{ "list --after ../x", 2, "--after" },
		{ "list --bogus", 2, "--bogus" },
		{ "list --json=yes", 2, "--json takes no value" },
		{ "summary --top -1", 2, "--top" },
		{ "summary --limit 5", 2, "--limit" },
		{ "delete ../etc/passwd", 2, "not a queue id" },
		{ "delete --all --sender x@y", 2, "--all" },
		{ "hold --body", 2, "--body" },
		{ "show", 2, "exactly one" },
		{ "show 0000000000000001 0000000000000002", 2, "exactly one" },
		{ "quarantine spam", 2, "spam" },
		{ "quarantine restore", 2, "which one" },
		{ "quarantine restore ../x", 2, "not a quarantine name" },
		{ "quarantine restore 20260101T000000Z-outbox --folder hold", 2, "--folder" },
		{ "frobnicate", 2, "frobnicate" },
		{ "list --min-size 10k --max-size 1k", 2, "--min-size" },
		{ "show 0000000000000009", 1, "no message 0000000000000009" },
		{ "quarantine restore 20260101T000000Z-outbox", 1, "no quarantined folder" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct cap k = { STRBUF_INIT, STRBUF_INIT, 0, 0 };
		int rc = run(data, &k, false, rows[i].line);
		if (rc != rows[i].rc || strstr(err(&k), rows[i].names) == NULL) {
			fprintf(stderr, "  queue %s: got exit %d, stderr \"%s\"; want exit %d naming \"%s\"\n", rows[i].line,
			        rc, err(&k), rows[i].rc, rows[i].names);
			unit_failures++;
		}
		strbuf_free(&k.out);
		strbuf_free(&k.err);
	}
	log_close();
	rm_rf(data);
	free(data);
}

UNIT_TEST(queue_cmd_operations_offline)
{
	char *data = tmpdata();
	CHECK(data != NULL);
	if (data == NULL)
		return;
	const char *e;
	log_open(NULL, true, &e);
	static const char *spam_ids[] = { "0000000000000001", "0000000000000002", "0000000000000003",
		                          "0000000000000004", "0000000000000005", "0000000000000006" };
	for (size_t i = 0; i < 6; i++)
		put_msg(data, "outbox", spam_ids[i], "spam@bad.example", "v@victim.example", "aaaa000000000001", "buy");
	put_msg(data, "outbox", "000000000000000A", "alice@ex.org", "bob@partner.example", "bbbb000000000002", "hi");
	put_msg(data, "hold", "000000000000000B", "carol@ex.org", "dan@partner.example", "cccc000000000003", "held");
	/* partly delivered: a@ done, b@ still deferred */
	put_msg(data, "outbox", "000000000000000C", "erin@ex.org", "a@one.example,b@two.example", "dddd000000000004",
	        "two");
	struct queue_env qe = { 0 };
	snprintf(qe.id, sizeof(qe.id), "000000000000000C");
	strv_add(&qe.rcpt, "a@one.example");
	strv_add(&qe.rcpt, "b@two.example");
	struct queue_state st;
	CHECK_INT(queue_state_load(data, "outbox", &qe, &st, &e), 0);
	st.attempts = 2;
	st.r[0].status = RCPT_DELIVERED;
	st.r[1].status = RCPT_DEFERRED;
	CHECK_INT(queue_state_save(data, "outbox", "000000000000000C", &st, &e), 0);
	queue_state_free(&st);
	queue_env_free(&qe);

	struct cap k = { STRBUF_INIT, STRBUF_INIT, 0, 0 };
	/* list and count */
	CHECK_INT(run(data, &k, false, "list --json"), 0);
	json_t *j = json_loads(out(&k), 0, NULL);
	CHECK(json_is_array(j) && json_array_size(j) == 9);
	json_decref(j);
	CHECK_INT(run(data, &k, false, "count --json"), 0);
	CHECK(strstr(out(&k), "\"outbox\":8") != NULL);
	CHECK(strstr(out(&k), "\"hold\":1") != NULL);
	CHECK_INT(run(data, &k, false, "summary --top 1"), 0);
	CHECK(strstr(out(&k), "aaaa000000000001") && strstr(out(&k), "spam@bad.example"));
	CHECK(strstr(out(&k), "subject \"buy\"") != NULL);
	CHECK_INT(run(data, &k, false, "show 000000000000000C"), 0);
	CHECK(strstr(out(&k), "<a@one.example> delivered") && strstr(out(&k), "<b@two.example> deferred"));
	CHECK_INT(run(data, &k, false, "show 000000000000000C --json"), 0);
	j = json_loads(out(&k), 0, NULL);
	CHECK(j && json_integer_value(json_object_get(json_object_get(j, "state"), "attempts")) == 2);
	json_decref(j);

	/* "all" wants a confirmation: refused without a terminal, "no" keeps all */
	CHECK_INT(run(data, &k, false, "delete --folder outbox"), 2);
	CHECK(strstr(err(&k), "--yes") != NULL);
	CHECK_INT(nfiles(data, "outbox"), 8);
	k.answer = 0;
	CHECK_INT(run(data, &k, true, "delete"), 1);
	CHECK_INT(k.asked, 1);
	CHECK_INT(nfiles(data, "outbox"), 8);
	CHECK_INT(run(data, &k, false, "hold --all --dry-run"), 0);
	CHECK(strstr(out(&k), "would hold 8 messages") != NULL);

	/* delete by fingerprint: dry run, then for real */
	CHECK_INT(run(data, &k, false, "delete --fingerprint aaaa --dry-run"), 0);
	CHECK(strstr(out(&k), "would delete 6 messages") != NULL);
	CHECK_INT(nfiles(data, "outbox"), 8);
	CHECK_INT(run(data, &k, false, "purge --fingerprint aaaa --json"), 0);
	j = json_loads(out(&k), 0, NULL);
	CHECK(j && json_integer_value(json_object_get(j, "done")) == 6);
	json_decref(j);
	CHECK_INT(nfiles(data, "outbox"), 2);

	/* hold and release keep the delivery record */
	CHECK_INT(run(data, &k, false, "hold 000000000000000C"), 0);
	CHECK(exists(data, "hold", "000000000000000C") && exists(data, "hold", "000000000000000C.st"));
	CHECK(!exists(data, "outbox", "000000000000000C") && !exists(data, "outbox", "000000000000000C.st"));
	CHECK_INT(run(data, &k, false, "release 000000000000000C"), 0);
	CHECK(exists(data, "outbox", "000000000000000C") && exists(data, "outbox", "000000000000000C.st"));
	/* released without a record: routed again from pending */
	CHECK_INT(run(data, &k, false, "release 000000000000000B"), 0);
	CHECK(exists(data, "pending", "000000000000000B"));
	/* requeue: only the recipient still to do, and no .st */
	CHECK_INT(run(data, &k, false, "requeue 000000000000000C"), 0);
	char path[PATH_MAX];
	queue_path(path, sizeof(path), data, "pending", "000000000000000C");
	struct queue_env got;
	CHECK_INT(queue_env_read(path, &got, &e), 0);
	CHECK_INT(got.rcpt.n, 1);
	if (got.rcpt.n == 1)
		CHECK_STR(got.rcpt.v[0], "b@two.example");
	queue_env_free(&got);
	CHECK(!exists(data, "pending", "000000000000000C.st") && !exists(data, "outbox", "000000000000000C.st"));
	/* not applicable: said so, nothing moved */
	CHECK_INT(run(data, &k, false, "release 000000000000000A"), 0);
	CHECK(strstr(out(&k), "not held") != NULL);
	CHECK_INT(run(data, &k, false, "delete ZZZZZZZZZZZZZZZZ"), 1);
	CHECK(strstr(out(&k), "not in the queue") != NULL);

	/* quarantine the outbox, list, restore one, then the rest */
	CHECK_INT(run(data, &k, false, "quarantine outbox"), 2);
	CHECK_INT(run(data, &k, false, "quarantine outbox --yes"), 0);
	CHECK_INT(nfiles(data, "outbox"), 0);
	char qdir[PATH_MAX];
	queue_path(qdir, sizeof(qdir), data, "outbox", NULL);
	CHECK(fsutil_is_dir(qdir)); /* a fresh one at once */
	CHECK_INT(run(data, &k, false, "quarantine list --json"), 0);
	j = json_loads(out(&k), 0, NULL);
	CHECK(json_is_array(j) && json_array_size(j) == 1);
	char name[128] = "";
	if (json_array_size(j) == 1) {
		snprintf(name, sizeof(name), "%s", json_string_value(json_object_get(json_array_get(j, 0), "name")));
		CHECK_INT(json_integer_value(json_object_get(json_array_get(j, 0), "messages")), 1);
		CHECK(strstr(name, "-outbox") != NULL);
	}
	json_decref(j);
	char line[256];
	put_msg(data, "outbox", "000000000000000D", "frank@ex.org", "g@partner.example", "eeee000000000005", "new");
	CHECK_INT(run(data, &k, false, "quarantine outbox --yes"), 0); /* a second one */
	CHECK_INT(run(data, &k, false, "quarantine list"), 0);
	CHECK(strstr(out(&k), name) != NULL);
	snprintf(line, sizeof(line), "quarantine restore %s 000000000000000A --dry-run", name);
	CHECK_INT(run(data, &k, false, line), 0);
	CHECK(strstr(out(&k), "would restore 1 message") != NULL);
	snprintf(line, sizeof(line), "quarantine restore %s 000000000000000A", name);
	CHECK_INT(run(data, &k, false, line), 0);
	CHECK(exists(data, "pending", "000000000000000A"));
	CHECK(strstr(out(&k), "removed") != NULL); /* it was the last one */
	snprintf(path, sizeof(path), "%s/queue/quarantine/%s", data, name);
	CHECK(!fsutil_is_dir(path));
	/* the second quarantine: all of it wants --yes */
	CHECK_INT(run(data, &k, false, "quarantine list --json"), 0);
	j = json_loads(out(&k), 0, NULL);
	CHECK(json_is_array(j) && json_array_size(j) == 1);
	snprintf(name, sizeof(name), "%s", json_string_value(json_object_get(json_array_get(j, 0), "name")));
	json_decref(j);
	snprintf(line, sizeof(line), "quarantine restore %s", name);
	CHECK_INT(run(data, &k, false, line), 2);
	CHECK(!exists(data, "pending", "000000000000000D"));
	snprintf(line, sizeof(line), "quarantine restore %s --yes", name);
	CHECK_INT(run(data, &k, false, line), 0);
	CHECK(exists(data, "pending", "000000000000000D"));
	CHECK_INT(nfiles(data, "pending"), 4);
	log_close();
	strbuf_free(&k.out);
	strbuf_free(&k.err);
	rm_rf(data);
	free(data);
}
