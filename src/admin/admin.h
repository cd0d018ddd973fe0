/* admin — the console sub-commands of the posthorn binary. Each works on
 * the files directly (SQLite directory in WAL mode, queue files), so it
 * runs whether the daemon runs or not. Each returns the process exit
 * code: 0 ok, 1 failure (message on stderr), 2 usage error.
 *
 * argv[0] is the sub-command name ("user", "queue", ...); data_dir is
 * resolved by main.c from --data, $POSTHORN_DATA or ./var. */
#ifndef ADMIN_ADMIN_H
#define ADMIN_ADMIN_H
#include <stdbool.h>

int admin_user_main(int argc, char **argv, const char *data_dir);
int admin_domain_main(int argc, char **argv, const char *data_dir);
int admin_alias_main(int argc, char **argv, const char *data_dir);
int admin_queue_main(int argc, char **argv, const char *data_dir);
int admin_status_main(int argc, char **argv, const char *data_dir);
/* sendmail(1)-compatible entry: also reached as argv[0] == "sendmail". */
int admin_sendmail_main(int argc, char **argv, const char *data_dir);

/* Shared: path of the directory database, and opening it with a clear
 * message when the data dir was never initialised. */
struct directory;
struct directory *admin_open_directory(const char *data_dir, bool create);

#endif
