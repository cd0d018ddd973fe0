/* config — posthorn.conf: "key = value" lines, '#' comments. Every key is
 * in one table (config.c) with its type, default and help; unknown keys
 * and bad values are errors naming file:line, because a typo must never
 * silently open a relay. The commented default file is generated from the
 * same table, so documentation and parser cannot drift apart. */
#ifndef CONF_CONFIG_H
#define CONF_CONFIG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "lib/net.h"

#define CONFIG_MAX_LISTEN 8
#define CONFIG_MAX_NETS 64
/* Steps in a duration list (retry_schedule). */
#define CONFIG_MAX_DURLIST 32

struct listen_list {
	int n;
	char *addr[CONFIG_MAX_LISTEN];
};

struct config {
	char *hostname;
	struct listen_list smtp_listen;
	struct listen_list submission_listen;
	struct listen_list pop3_listen;
	uint64_t max_message_size;
	int64_t max_recipients;
	int64_t max_connections;
	int64_t max_connections_per_ip;
	int64_t max_line_length;
	int64_t smtp_command_timeout;
	int64_t smtp_data_timeout;
	int64_t pop3_timeout;
	int nrelay;
	struct net_cidr relay_networks[CONFIG_MAX_NETS];
	char *auth_plaintext; /* "loopback", "never", "always" */
	uint64_t default_quota;
	int64_t max_hops;
	int64_t router_scan_interval;
	bool log_stderr;
	/* remote delivery (mta/) */
	char *dns_server;              /* "" = /etc/resolv.conf; "IP[@port],..." */
	int64_t relay_port;            /* TCP port of MX hosts */
	char *smarthost;               /* "" = off; "host[:port]" */
	char *smarthost_domains;       /* "" = all; comma list */
	char *smarthost_user;
	char *smarthost_password_file;
	char *retry_schedule;          /* "5m,10m,20m,40m,1h" */
	int64_t max_queue_lifetime;
	int64_t delay_warning;         /* 0 = off */
	int64_t smtp_client_timeout;
	int64_t max_per_destination;
	int64_t max_outbound;
};

/* Fills defaults, then reads path if it exists (missing file = defaults).
 * Returns -1 with a malloc'd "file:line: message" in *error_r. */
int config_load(struct config *c, const char *path, char **error_r);
void config_defaults(struct config *c);
void config_free(struct config *c);
/* The commented default posthorn.conf text (static string built once). */
const char *config_default_text(void);
/* Parse helpers shared with the CLI. */
int config_parse_size(const char *s, uint64_t *v);
int config_parse_duration(const char *s, int64_t *secs);
/* "5m,10m,1h" → up to max durations (each > 0) in secs[]; returns the
 * count, or -1 when empty or malformed. */
int config_parse_duration_list(const char *s, int64_t *secs, int max);

#endif
