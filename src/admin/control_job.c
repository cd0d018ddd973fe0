/* control_job — see control.h.
 *
 * Role: the daemon. The loop thread owns the connection (io); the worker
 * thread running the command writes frames into the job's buffer under
 * its mutex and wakes the loop through an eventfd; the loop moves them to
 * the socket. Back-pressure: when the client reads slower than the
 * command writes (a long --json listing), the worker waits while more
 * than CONTROL_OUT_HIGH bytes are queued.
 * Lifetime: a job is freed on the loop thread once both its worker has
 * returned (or never started) and its connection is gone.
 * Errors: a malformed request gets an 'e' frame and exit code 2; a
 * client that goes away cancels the command between two messages (each
 * message operation is complete or not done). */
#include "admin/control.h"
#include "admin/console.h"
#include "admin/queue_cmd.h"
#include "daemon/daemon.h"
#include "lib/io.h"
#include "lib/log.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"
#include "queue/index.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* Frames queued for a slow client before the command waits (bytes). */
#define CONTROL_OUT_HIGH (1024 * 1024)
/* The socket buffer is refilled when it falls to this. */
#define CONTROL_OUT_LOW (256 * 1024)
/* A question not answered within this is answered "no". */
#define CONTROL_ASK_TIMEOUT_S 300
/* Most arguments in one request. */
#define CONTROL_ARGV_MAX 100000

struct control_job {
	struct daemon *d;
	struct io *io; /* loop thread; NULL once the connection is gone */
	int argc;
	char **argv;
	char *cmd;
	struct console con;
	int efd;
	struct event *ev;
	/* loop thread only */
	bool started, worker_done, closing;
	struct control_job *next; /* waiting list */
	/* guarded by mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct strbuf out;
	bool detached;
	bool finished; /* the exit frame is queued */
	int answer;    /* -1 waiting / none, 0 no, 1 yes */
};

/* loop thread only */
static struct control_job *running;
static struct control_job *wait_head, *wait_tail;
static struct control_job *all_jobs[64]; /* for shutdown; more just are not cancelled early */
static bool shutting_down;

static void track(struct control_job *j, bool add)
{
	for (size_t i = 0; i < sizeof(all_jobs) / sizeof(all_jobs[0]); i++) {
		if (add && all_jobs[i] == NULL) {
			all_jobs[i] = j;
			return;
		}
		if (!add && all_jobs[i] == j) {
			all_jobs[i] = NULL;
			return;
		}
	}
}

static void kick(struct control_job *j)
{
	uint64_t one = 1;
	if (write(j->efd, &one, sizeof(one)) < 0) {
		/* the counter cannot overflow in practice */
	}
}

/* Appends one frame; mu held. */
static void add_frame(struct control_job *j, char tag, const char *p, size_t n)
{
	strbuf_addf(&j->out, "%c %zu\n", tag, n);
	strbuf_add(&j->out, p, n);
}

/* The console's emit, on the worker thread. */
static int job_emit(struct console *c, char tag, const char *p, size_t n)
{
	struct control_job *j = c->arg;
	int ans = 0;
	pthread_mutex_lock(&j->mu);
	while (j->out.len > CONTROL_OUT_HIGH && !j->detached)
		pthread_cond_wait(&j->cv, &j->mu);
	if (j->detached) {
		pthread_mutex_unlock(&j->mu);
		return 0;
	}
	add_frame(j, tag, p, n);
	if (tag == 'q') {
		j->answer = -1;
		kick(j);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += CONTROL_ASK_TIMEOUT_S;
		while (j->answer < 0 && !j->detached)
			if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) != 0)
				break;
		ans = j->answer == 1;
		j->answer = -1;
	}
	pthread_mutex_unlock(&j->mu);
	kick(j);
	return ans;
}

static void job_free(struct control_job *j)
{
	track(j, false);
	event_free(j->ev);
	close(j->efd);
	strbuf_free(&j->out);
	for (int i = 0; i < j->argc; i++)
		free(j->argv[i]);
	free(j->argv);
	free(j->cmd);
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	free(j);
}

/* Moves queued frames to the socket (loop thread). */
static void job_flush(struct control_job *j)
{
	if (j->io == NULL)
		return;
	pthread_mutex_lock(&j->mu);
	if (j->out.len && io_output_len(j->io) < CONTROL_OUT_HIGH) {
		io_write(j->io, j->out.s, j->out.len);
		if (j->out.cap > CONTROL_OUT_HIGH)
			strbuf_free(&j->out); /* do not keep a big buffer around */
		else
			strbuf_reset(&j->out);
		pthread_cond_broadcast(&j->cv);
	}
	bool more = j->out.len > 0;
	bool done = j->finished && !more;
	pthread_mutex_unlock(&j->mu);
	if (more)
		io_want_drained(j->io, CONTROL_OUT_LOW);
	if (done && j->worker_done && !j->closing) {
		j->closing = true;
		io_close_when_flushed(j->io);
	}
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	uint64_t v;
	if (read(fd, &v, sizeof(v)) < 0) {
		/* spurious */
	}
	job_flush(arg);
}

static void job_run(void *arg)
{
	struct control_job *j = arg;
	struct daemon *d = j->d;
	int rc;
	if (strcmp(j->cmd, "queue") == 0) {
		struct queue_cmd_env env = {
			.data_dir = d->data_dir,
			.ix = d->index,
			.mta = d->mta,
			.router = d->router,
			.online = true,
		};
		rc = queue_cmd_run(&env, &j->con, j->argc, j->argv);
		if (env.ix != d->index) /* no daemon index: the command built one */
			queue_index_free(&env.ix);
	} else {
		console_errorf(&j->con, "posthorn: the server does not know the console command '%s'\n", j->cmd);
		rc = 2;
	}
	console_progress_end(&j->con);
	char num[16];
	int n = snprintf(num, sizeof(num), "%d", rc);
	pthread_mutex_lock(&j->mu);
	if (!j->detached)
		add_frame(j, 'x', num, (size_t)n);
	j->finished = true;
	pthread_mutex_unlock(&j->mu);
	kick(j);
}

static void start_next(void);

static void job_done(void *arg)
{
	struct control_job *j = arg;
	j->worker_done = true;
	running = NULL;
	if (j->io)
		job_flush(j);
	else
		job_free(j);
	start_next();
}

static void start(struct control_job *j)
{
	running = j;
	j->started = true;
	workers_submit(j->d->workers, job_run, job_done, j);
}

static void start_next(void)
{
	if (running || wait_head == NULL || shutting_down)
		return;
	struct control_job *j = wait_head;
	wait_head = j->next;
	if (wait_head == NULL)
		wait_tail = NULL;
	j->next = NULL;
	start(j);
}

/* Answers the request at once (bad request), on the loop thread. */
static void job_fail(struct control_job *j, const char *msg)
{
	pthread_mutex_lock(&j->mu);
	add_frame(j, 'e', msg, strlen(msg));
	add_frame(j, 'x', "2", 1);
	j->finished = true;
	pthread_mutex_unlock(&j->mu);
	j->worker_done = true;
	job_flush(j);
}

struct control_job *control_job_start(struct daemon *d, struct io *io, const char *request)
{
	struct control_job *j = xcalloc(1, sizeof(*j));
	j->d = d;
	j->io = io;
	j->answer = -1;
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	strbuf_init(&j->out, 0);
	j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (j->efd < 0)
		fatal("eventfd: %s", strerror(errno));
	j->ev = event_new(d->base, j->efd, EV_READ | EV_PERSIST, on_kick, j);
	event_add(j->ev, NULL);
	track(j, true);
	/* a command may run for a while: no read timeout from here on */
	io_set_timeout(io, 0);

	json_error_t jerr;
	json_t *req = json_loads(request, 0, &jerr);
	json_t *cmd = req ? json_object_get(req, "cmd") : NULL;
	json_t *av = req ? json_object_get(req, "argv") : NULL;
	if (!json_is_string(cmd) || !json_is_array(av) || json_array_size(av) > CONTROL_ARGV_MAX) {
		json_decref(req);
		job_fail(j, "posthorn: the server could not read the console request\n");
		return j;
	}
	j->cmd = xstrdup(json_string_value(cmd));
	size_t n = json_array_size(av);
	j->argv = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(av, i));
		if (s == NULL) {
			json_decref(req);
			job_fail(j, "posthorn: the console request has an argument that is not a string\n");
			return j;
		}
		j->argv[j->argc++] = xstrdup(s);
	}
	console_init_local(&j->con);
	j->con.emit = job_emit;
	j->con.arg = j;
	j->con.progress = json_is_true(json_object_get(req, "tty"));
	j->con.interactive = json_is_true(json_object_get(req, "stdin_tty"));
	json_decref(req);
	log_info("control: console command '%s%s%s'", j->cmd, j->argc ? " " : "", j->argc ? j->argv[0] : "");

	if (running) {
		if (j->con.progress) {
			static const char msg[] = "waiting for another console command to finish";
			pthread_mutex_lock(&j->mu);
			add_frame(j, 'p', msg, sizeof(msg) - 1);
			pthread_mutex_unlock(&j->mu);
			j->con.progress_shown = true;
			job_flush(j);
		}
		if (wait_tail)
			wait_tail->next = j;
		else
			wait_head = j;
		wait_tail = j;
	} else {
		start(j);
	}
	return j;
}

void control_job_input(struct control_job *j)
{
	if (j->io == NULL)
		return;
	char *line;
	size_t len;
	int r;
	while ((r = io_getline(j->io, 64, &line, &len)) != 0) {
		if (r < 0)
			continue;
		pthread_mutex_lock(&j->mu);
		j->answer = len > 0 && (line[0] == 'y' || line[0] == 'Y') ? 1 : 0;
		pthread_cond_broadcast(&j->cv);
		pthread_mutex_unlock(&j->mu);
	}
}

void control_job_drained(struct control_job *j)
{
	job_flush(j);
}

void control_job_detach(struct control_job *j)
{
	j->io = NULL;
	pthread_mutex_lock(&j->mu);
	j->detached = true;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
	atomic_store(&j->con.cancelled, true);
	if (!j->started) {
		/* still waiting for its turn (or answered at once) */
		struct control_job **pp = &wait_head, *prev = NULL;
		while (*pp && *pp != j) {
			prev = *pp;
			pp = &(*pp)->next;
		}
		if (*pp == j) {
			*pp = j->next;
			if (wait_tail == j)
				wait_tail = prev;
		}
		job_free(j);
		return;
	}
	if (j->worker_done)
		job_free(j);
	/* else: job_done frees it */
}

void control_jobs_shutdown(void)
{
	shutting_down = true;
	for (size_t i = 0; i < sizeof(all_jobs) / sizeof(all_jobs[0]); i++) {
		struct control_job *j = all_jobs[i];
		if (j == NULL)
			continue;
		atomic_store(&j->con.cancelled, true);
		pthread_mutex_lock(&j->mu);
		/* nobody flushes any more: output is dropped, questions say no */
		j->detached = true;
		pthread_cond_broadcast(&j->cv);
		pthread_mutex_unlock(&j->mu);
	}
}
