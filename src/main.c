/* main — sub-command dispatch for the one posthorn binary.
 *
 *   posthorn serve | user | domain | alias | queue | status | sendmail
 *
 * Every command takes --data DIR (default $POSTHORN_DATA, else ./var),
 * anywhere before its own arguments. Invoked as "sendmail" (a symlink),
 * the binary behaves as `posthorn sendmail`. */
#include "admin/admin.h"
#include "daemon/daemon.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
	fputs("usage: posthorn [--data DIR] COMMAND [ARGS]\n"
	      "\n"
	      "  serve                     run the mail server in the foreground\n"
	      "  user add|del|passwd|list  manage mailboxes (passwords from --password-stdin or a prompt)\n"
	      "  domain add|del|list       manage local domains\n"
	      "  alias add|del|list        manage aliases (one address to many targets)\n"
	      "  queue list|summary|show|count|retry|hold|release|delete|requeue|quarantine\n"
	      "                            the mail queue, online or on the files (posthorn queue help)\n"
	      "  status                    is the server running, what does it hold\n"
	      "  sendmail [-t] [-f FROM] [-i] [RCPT...]   queue a message read from stdin\n"
	      "\n"
	      "The data directory is --data DIR, else $POSTHORN_DATA, else ./var.\n",
	      f);
}

int main(int argc, char **argv)
{
	const char *data_dir = getenv("POSTHORN_DATA");
	if (data_dir == NULL || *data_dir == '\0')
		data_dir = "./var";

	char *prog = basename(argv[0]);
	if (strcmp(prog, "sendmail") == 0) {
		/* --data DIR is ours, not sendmail's: take it out */
		int n = 0;
		for (int j = 0; j < argc; j++) {
			if (j > 0 && strcmp(argv[j], "--data") == 0 && j + 1 < argc) {
				data_dir = argv[++j];
				continue;
			}
			if (j > 0 && strncmp(argv[j], "--data=", 7) == 0) {
				data_dir = argv[j] + 7;
				continue;
			}
			argv[n++] = argv[j];
		}
		argv[n] = NULL;
		argv[0] = "sendmail";
		return admin_sendmail_main(n, argv, data_dir);
	}

	int i = 1;
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
			data_dir = argv[i + 1];
			i += 2;
		} else if (strncmp(argv[i], "--data=", 7) == 0) {
			data_dir = argv[i] + 7;
			i++;
		} else if (strcmp(argv[i], "--data") == 0) {
			fprintf(stderr, "posthorn: --data needs a directory\n");
			return 2;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "posthorn: unknown option '%s'\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}

	/* Sub-commands also accept --data after the command name: pull it out
	 * here so each command sees only its own arguments. */
	int n = 0;
	char **args = calloc((size_t)argc + 1, sizeof(char *));
	if (args == NULL)
		return 1;
	for (int j = i; j < argc; j++) {
		if (strcmp(argv[j], "--data") == 0 && j + 1 < argc) {
			data_dir = argv[++j];
			continue;
		}
		if (strncmp(argv[j], "--data=", 7) == 0) {
			data_dir = argv[j] + 7;
			continue;
		}
		args[n++] = argv[j];
	}
	args[n] = NULL;

	const char *cmd = args[0];
	int rc;
	if (strcmp(cmd, "serve") == 0) {
		/* daemon_main re-reads --data from its own argv */
		char **dargs = calloc((size_t)n + 3, sizeof(char *));
		if (dargs == NULL)
			return 1;
		dargs[0] = args[0];
		dargs[1] = "--data";
		dargs[2] = (char *)data_dir;
		for (int j = 1; j < n; j++)
			dargs[j + 2] = args[j];
		rc = daemon_main(n + 2, dargs);
		free(dargs);
	} else if (strcmp(cmd, "user") == 0) {
		rc = admin_user_main(n, args, data_dir);
	} else if (strcmp(cmd, "domain") == 0) {
		rc = admin_domain_main(n, args, data_dir);
	} else if (strcmp(cmd, "alias") == 0) {
		rc = admin_alias_main(n, args, data_dir);
	} else if (strcmp(cmd, "queue") == 0) {
		rc = admin_queue_main(n, args, data_dir);
	} else if (strcmp(cmd, "status") == 0) {
		rc = admin_status_main(n, args, data_dir);
	} else if (strcmp(cmd, "sendmail") == 0) {
		rc = admin_sendmail_main(n, args, data_dir);
	} else if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		rc = 0;
	} else {
		fprintf(stderr, "posthorn: unknown command '%s'\n", cmd);
		usage(stderr);
		rc = 2;
	}
	free(args);
	return rc;
}
