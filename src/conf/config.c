/* config — see config.h. Used by the daemon at start and on SIGHUP (a
 * reload that fails keeps the old config) and by the CLI. */
#include "conf/config.h"
#include "lib/strbuf.h"
#include "lib/xalloc.h"
#include "mail/address.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct key;
static const char *set_key_raw(struct config *c, const struct key *k, const char *val);

enum ktype { K_STR, K_LISTEN, K_SIZE, K_INT, K_DURATION, K_BOOL, K_NETS, K_ENUM, K_DURLIST };

struct key {
	const char *name;
	enum ktype type;
	size_t off;
	const char *def;
	const char *help;
	const char *choices; /* K_ENUM: "a|b|c" */
};

#define O(f) offsetof(struct config, f)
static const struct key keys[] = {
	{ "hostname", K_STR, O(hostname), "",
	  "Name in the SMTP greeting and Received: headers; empty = this machine's host name.", NULL },
	{ "smtp_listen", K_LISTEN, O(smtp_listen), "127.0.0.1:2525",
	  "SMTP (MX) listeners, comma-separated address:port. Use 0.0.0.0:25 to receive from the Internet.", NULL },
	{ "submission_listen", K_LISTEN, O(submission_listen), "127.0.0.1:2587",
	  "Submission listeners (RFC 6409): authentication required before MAIL.", NULL },
	{ "pop3_listen", K_LISTEN, O(pop3_listen), "127.0.0.1:2110",
	  "POP3 listeners. (IMAP 2143 and HTTP 8080 are reserved for later releases.)", NULL },
	{ "max_message_size", K_SIZE, O(max_message_size), "50M",
	  "Largest message accepted (SIZE extension), in bytes; K, M, G suffixes.", NULL },
	{ "max_recipients", K_INT, O(max_recipients), "100",
	  "Recipients per message; more get 452 4.5.3 (RFC 5321 4.5.3.1.8).", NULL },
	{ "max_connections", K_INT, O(max_connections), "500",
	  "Simultaneous connections over all listeners.", NULL },
	{ "max_connections_per_ip", K_INT, O(max_connections_per_ip), "20",
	  "Simultaneous connections from one client address.", NULL },
	{ "max_line_length", K_INT, O(max_line_length), "998",
	  "Longest text line in a message, without CRLF (RFC 5322 2.1.1); longer lines are refused with 550 5.6.0.", NULL },
	{ "smtp_command_timeout", K_DURATION, O(smtp_command_timeout), "5m",
	  "Idle time allowed between SMTP commands (RFC 5321 4.5.3.2.7).", NULL },
	{ "smtp_data_timeout", K_DURATION, O(smtp_data_timeout), "3m",
	  "Idle time allowed inside DATA/BDAT (RFC 5321 4.5.3.2.5).", NULL },
	{ "pop3_timeout", K_DURATION, O(pop3_timeout), "10m",
	  "POP3 inactivity autologout (RFC 1939 section 3).", NULL },
	{ "relay_networks", K_NETS, O(nrelay), "",
	  "Client networks allowed to relay without authentication, comma-separated CIDRs. Empty = nobody (not even loopback): only authenticated users relay.", NULL },
	{ "auth_plaintext", K_ENUM, O(auth_plaintext), "loopback",
	  "Where AUTH and POP3 USER/PASS are offered without TLS: loopback (only to 127.0.0.0/8 and ::1), never, always.", "loopback|never|always" },
	{ "default_quota", K_SIZE, O(default_quota), "0",
	  "Mailbox quota for users created without --quota; 0 = unlimited.", NULL },
	{ "max_hops", K_INT, O(max_hops), "50",
	  "Received: headers after which a message is treated as looping (554 5.4.6).", NULL },
	{ "router_scan_interval", K_DURATION, O(router_scan_interval), "5s",
	  "How often queue/pending is rescanned for files dropped in by hand (inotify catches most at once).", NULL },
	{ "log_stderr", K_BOOL, O(log_stderr), "yes",
	  "Write human-readable log lines to stderr besides var/log/events.jsonl.", NULL },
	{ "dns_server", K_STR, O(dns_server), "",
	  "DNS resolver(s) for remote delivery (MX, A, AAAA), comma-separated IP or IP@port, e.g. 127.0.0.1@5353. Empty = the name servers of /etc/resolv.conf.", NULL },
	{ "relay_port", K_INT, O(relay_port), "25",
	  "TCP port used to connect to MX hosts (25 on the Internet; tests use high ports).", NULL },
	{ "smarthost", K_STR, O(smarthost), "",
	  "Send remote mail through this relay host instead of the MX hosts: host, host:port or [IPv6]:port (port 25 if omitted). Empty = deliver directly.", NULL },
	{ "smarthost_domains", K_STR, O(smarthost_domains), "",
	  "Recipient domains sent through the smarthost, comma-separated (a leading dot matches subdomains). Empty = every remote domain.", NULL },
	{ "smarthost_user", K_STR, O(smarthost_user), "",
	  "User name for AUTH PLAIN/LOGIN at the smarthost; empty = no authentication.", NULL },
	{ "smarthost_password_file", K_STR, O(smarthost_password_file), "",
	  "File holding the smarthost password (first line), so it never sits in this file. Must not be readable by others (chmod 600).", NULL },
	{ "retry_schedule", K_DURLIST, O(retry_schedule), "5m,10m,20m,40m,1h",
	  "Waits between delivery attempts after a temporary failure; the last step repeats.", NULL },
	{ "max_queue_lifetime", K_DURATION, O(max_queue_lifetime), "96h",
	  "A message still undeliverable after this long is returned to the sender (bounce).", NULL },
	{ "delay_warning", K_DURATION, O(delay_warning), "4h",
	  "Send the sender one delay notice (DSN) when a message is still queued after this long; 0 = never.", NULL },
	{ "smtp_client_timeout", K_DURATION, O(smtp_client_timeout), "5m",
	  "Time allowed for each reply of a remote server (RFC 5321 4.5.3.2); twice this for the reply to the end of the message.", NULL },
	{ "max_per_destination", K_INT, O(max_per_destination), "5",
	  "Parallel outgoing connections per destination domain (or to the smarthost).", NULL },
	{ "max_outbound", K_INT, O(max_outbound), "50",
	  "Parallel outgoing SMTP connections in total.", NULL },
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

int config_parse_size(const char *s, uint64_t *v)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)*s))
		return -1;
	unsigned long long n = strtoull(s, &end, 10);
	if (errno)
		return -1;
	uint64_t mul = 1;
	if (*end == 'k' || *end == 'K')
		mul = 1024ULL, end++;
	else if (*end == 'm' || *end == 'M')
		mul = 1024ULL * 1024, end++;
	else if (*end == 'g' || *end == 'G')
		mul = 1024ULL * 1024 * 1024, end++;
	if (mul > 1 && (*end == 'b' || *end == 'B'))
		end++;
	if (*end != '\0' || (n && mul > UINT64_MAX / n))
		return -1;
	*v = n * mul;
	return 0;
}

int config_parse_duration(const char *s, int64_t *secs)
{
	char *end;
	errno = 0;
	if (!isdigit((unsigned char)*s))
		return -1;
	long long n = strtoll(s, &end, 10);
	if (errno || n < 0)
		return -1;
	long long mul = 1;
	if (*end == 's')
		end++;
	else if (*end == 'm')
		mul = 60, end++;
	else if (*end == 'h')
		mul = 3600, end++;
	else if (*end == 'd')
		mul = 86400, end++;
	if (*end != '\0' || n > INT32_MAX / mul)
		return -1;
	*secs = n * mul;
	return 0;
}

int config_parse_duration_list(const char *s, int64_t *secs, int max)
{
	int n = 0;
	char *copy = xstrdup(s), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		while (*t == ' ' || *t == '\t')
			t++;
		size_t l = strlen(t);
		while (l > 0 && (t[l - 1] == ' ' || t[l - 1] == '\t'))
			t[--l] = '\0';
		int64_t v;
		if (n == max || config_parse_duration(t, &v) < 0 || v <= 0) {
			free(copy);
			return -1;
		}
		secs[n++] = v;
	}
	free(copy);
	return n > 0 ? n : -1;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

static void listen_free(struct listen_list *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->addr[i]);
	l->n = 0;
}

/* Lower bounds: a value that would switch a protection off or make the
 * server refuse everything is a configuration error, not a choice. */
static const struct {
	const char *name;
	int64_t min;
	const char *why;
} mins[] = {
	{ "max_recipients", 1, "at least 1" },
	{ "max_connections", 1, "at least 1" },
	{ "max_connections_per_ip", 1, "at least 1" },
	{ "max_line_length", 78, "at least 78 (RFC 5322 2.1.1)" },
	{ "smtp_command_timeout", 1, "at least 1s (0 would disable it)" },
	{ "smtp_data_timeout", 1, "at least 1s (0 would disable it)" },
	{ "pop3_timeout", 1, "at least 1s (0 would disable it)" },
	{ "max_hops", 1, "at least 1" },
	{ "router_scan_interval", 1, "at least 1s" },
};

static const char *check_value(const struct config *c, const struct key *k)
{
	const char *base = (const char *)c;
	for (size_t i = 0; i < sizeof(mins) / sizeof(mins[0]); i++) {
		if (strcmp(mins[i].name, k->name) != 0)
			continue;
		if ((k->type == K_INT || k->type == K_DURATION) && *(const int64_t *)(base + k->off) < mins[i].min)
			return mins[i].why;
	}
	if (strcmp(k->name, "max_message_size") == 0 && c->max_message_size < 1024)
		return "at least 1K";
	if (strcmp(k->name, "hostname") == 0 && c->hostname[0] && !address_domain_ok(c->hostname, false))
		return "not a valid host name (letters, digits, '-' and dots)";
	return NULL;
}

/* Sets one key; returns NULL or a static error text. */
static const char *set_key(struct config *c, const struct key *k, const char *val)
{
	const char *err = set_key_raw(c, k, val);
	return err ? err : check_value(c, k);
}

static const char *set_key_raw(struct config *c, const struct key *k, const char *val)
{
	char *base = (char *)c;
	switch (k->type) {
	case K_STR: {
		char **p = (char **)(base + k->off);
		free(*p);
		*p = xstrdup(val);
		return NULL;
	}
	case K_DURLIST: {
		int64_t tmp[CONFIG_MAX_DURLIST];
		if (config_parse_duration_list(val, tmp, CONFIG_MAX_DURLIST) < 0)
			return "expected a comma-separated list of durations like 5m,10m,1h (each above zero)";
		char **p = (char **)(base + k->off);
		free(*p);
		*p = xstrdup(val);
		return NULL;
	}
	case K_ENUM: {
		size_t vl = strlen(val);
		const char *ch = k->choices;
		while (*ch) {
			size_t l = strcspn(ch, "|");
			if (l == vl && strncmp(ch, val, l) == 0) {
				char **p = (char **)(base + k->off);
				free(*p);
				*p = xstrdup(val);
				return NULL;
			}
			ch += l;
			if (*ch == '|')
				ch++;
		}
		return "not one of the allowed values";
	}
	case K_LISTEN: {
		struct listen_list *l = (struct listen_list *)(base + k->off);
		struct listen_list nl = { 0 };
		char *copy = xstrdup(val), *save = NULL;
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			t = trim(t);
			if (*t == '\0')
				continue;
			struct sockaddr_storage ss;
			socklen_t len;
			const char *err;
			if (net_parse_hostport(t, &ss, &len, &err) < 0 || nl.n == CONFIG_MAX_LISTEN) {
				free(copy);
				listen_free(&nl);
				return nl.n == CONFIG_MAX_LISTEN ? "too many listeners"
				                                  : "expected IP:port (e.g. 127.0.0.1:2525, [::1]:2525)";
			}
			nl.addr[nl.n++] = xstrdup(t);
		}
		free(copy);
		listen_free(l);
		*l = nl;
		return NULL;
	}
	case K_SIZE: {
		uint64_t v;
		if (config_parse_size(val, &v) < 0)
			return "expected a size like 52428800, 50M or 1G";
		*(uint64_t *)(base + k->off) = v;
		return NULL;
	}
	case K_INT: {
		char *end;
		errno = 0;
		long long v = strtoll(val, &end, 10);
		if (*val == '\0' || *end != '\0' || errno || v < 0 || v > INT32_MAX)
			return "expected a non-negative integer";
		*(int64_t *)(base + k->off) = v;
		return NULL;
	}
	case K_DURATION: {
		int64_t v;
		if (config_parse_duration(val, &v) < 0)
			return "expected a duration like 30s, 5m, 2h or 1d";
		*(int64_t *)(base + k->off) = v;
		return NULL;
	}
	case K_BOOL:
		if (strcmp(val, "yes") == 0 || strcmp(val, "true") == 0 || strcmp(val, "on") == 0)
			*(bool *)(base + k->off) = true;
		else if (strcmp(val, "no") == 0 || strcmp(val, "false") == 0 || strcmp(val, "off") == 0)
			*(bool *)(base + k->off) = false;
		else
			return "expected yes or no";
		return NULL;
	case K_NETS: {
		int n = 0;
		struct net_cidr nets[CONFIG_MAX_NETS];
		char *copy = xstrdup(val), *save = NULL;
		for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
			const char *err;
			if (n == CONFIG_MAX_NETS) {
				free(copy);
				return "too many networks";
			}
			if (net_cidr_parse(t, &nets[n], &err) < 0) {
				free(copy);
				return "expected CIDR networks like 192.168.1.0/24, 2001:db8::/32";
			}
			n++;
		}
		free(copy);
		memcpy(c->relay_networks, nets, sizeof(nets[0]) * (size_t)n);
		c->nrelay = n;
		return NULL;
	}
	}
	return "unsupported";
}

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < NKEYS; i++) {
		const char *err = set_key(c, &keys[i], keys[i].def);
		if (err)
			panic("config default for %s: %s", keys[i].name, err);
	}
}

void config_free(struct config *c)
{
	free(c->hostname);
	free(c->auth_plaintext);
	free(c->dns_server);
	free(c->smarthost);
	free(c->smarthost_domains);
	free(c->smarthost_user);
	free(c->smarthost_password_file);
	free(c->retry_schedule);
	listen_free(&c->smtp_listen);
	listen_free(&c->submission_listen);
	listen_free(&c->pop3_listen);
	memset(c, 0, sizeof(*c));
}

int config_load(struct config *c, const char *path, char **error_r)
{
	config_defaults(c);
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		if (errno == ENOENT)
			return 0;
		*error_r = xasprintf("%s: %s", path, strerror(errno));
		config_free(c);
		return -1;
	}
	char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	bool seen[NKEYS] = { false };
	while (getline(&line, &cap, f) >= 0) {
		lineno++;
		char *s = trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (eq == NULL) {
			*error_r = xasprintf("%s:%u: expected 'key = value'", path, lineno);
			goto fail;
		}
		*eq = '\0';
		char *key = trim(s), *val = trim(eq + 1);
		size_t i;
		for (i = 0; i < NKEYS; i++)
			if (strcmp(keys[i].name, key) == 0)
				break;
		if (i == NKEYS) {
			*error_r = xasprintf("%s:%u: unknown key '%s'", path, lineno, key);
			goto fail;
		}
		if (seen[i]) {
			*error_r = xasprintf("%s:%u: '%s' is set twice", path, lineno, key);
			goto fail;
		}
		seen[i] = true;
		const char *err = set_key(c, &keys[i], val);
		if (err) {
			*error_r = xasprintf("%s:%u: %s: bad value '%s': %s", path, lineno, key, val, err);
			goto fail;
		}
	}
	free(line);
	fclose(f);
	return 0;
fail:
	free(line);
	fclose(f);
	config_free(c);
	return -1;
}

const char *config_default_text(void)
{
	static char *text;
	if (text)
		return text;
	struct strbuf sb = STRBUF_INIT;
	strbuf_adds(&sb,
	            "# posthorn.conf — written on first start with every key at its default.\n"
	            "# Uncomment and change what you need; unknown keys are errors.\n"
	            "# Reload with SIGHUP (listener changes need a restart).\n"
	            "# Domains, users and aliases live in db/directory.sqlite: use\n"
	            "# 'posthorn domain|user|alias ...' to change them.\n\n");
	for (size_t i = 0; i < NKEYS; i++)
		strbuf_addf(&sb, "# %s\n#%s = %s\n\n", keys[i].help, keys[i].name, keys[i].def);
	text = strbuf_detach(&sb, NULL);
	return text;
}
