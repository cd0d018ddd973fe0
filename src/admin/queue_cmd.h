/* queue_cmd — `posthorn queue …`: list, summary, show, count, retry,
 * hold, release, delete (purge), requeue and quarantine.
 *
 * One implementation serves both modes: the CLI runs it on the files when
 * the daemon is stopped (offline: it holds queue/.lock and builds its own
 * index), and the daemon runs it on a worker thread against its own index
 * and delivery engine when the CLI finds the lock taken (online: the CLI
 * sends its argv over the control socket and prints what comes back). */
#ifndef ADMIN_QUEUE_CMD_H
#define ADMIN_QUEUE_CMD_H
#include <stdbool.h>

struct console;
struct mta;
struct queue_index;
struct router;

struct queue_cmd_env {
	const char *data_dir;
	/* The daemon's index (online); NULL offline: built from the files on
	 * first use and left here for the caller to free. */
	struct queue_index *ix;
	struct mta *mta;       /* NULL: no delivery engine (offline, or none running) */
	struct router *router; /* NULL offline */
	bool online;
};

/* Runs one command; argv[0] is the sub-command ("list", "delete", ...).
 * Output goes to con. Returns the exit code: 0 ok, 1 failure (partly
 * done included), 2 usage error. Blocking: never on the event loop. */
int queue_cmd_run(struct queue_cmd_env *env, struct console *con, int argc, char **argv);

/* Does this command change the queue? (the CLI locks exclusively then) */
bool queue_cmd_changes(int argc, char **argv);

/* Finishes what a crash interrupted in a bulk delete (queue/.keep-*) and
 * starts emptying queue/.trash in the background. The daemon calls it at
 * start, before the index and the router; the CLI before working offline.
 * Blocking (a few renames at most). */
void queue_cmd_recover(const char *data_dir);
/* Starts (or re-runs) the background thread that empties queue/.trash. */
void queue_cmd_trash_start(const char *data_dir);
/* Stops that thread (what is left is emptied at the next start). */
void queue_cmd_trash_stop(void);

#endif
