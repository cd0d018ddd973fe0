/* address — the one address parser: RFC 5321 paths ("<local@domain>" in
 * MAIL/RCPT) and RFC 5322 address lists (To:, Cc:, ...). Pure: bytes in,
 * structs out, no I/O.
 *
 * Every decision about an address (local or remote, relay or not) is
 * made on the parsed form, never on the raw string. */
#ifndef MAIL_ADDRESS_H
#define MAIL_ADDRESS_H
#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1: local-part 64, domain 255, path 256 octets. */
#define ADDRESS_LOCAL_MAX 64
#define ADDRESS_DOMAIN_MAX 255
#define ADDRESS_PATH_MAX 256

struct mail_address {
	char *local;  /* as written, quotes removed ("a b" -> a b); "" for <> */
	char *domain; /* lower-cased; "" for <>; "[1.2.3.4]" for literals */
	bool quoted;  /* local part was a quoted-string */
	bool literal; /* domain is an address literal */
};

/* Parses an RFC 5321 path starting at s (which must start with '<').
 * Source routes ("<@a,@b:user@c>") are accepted and dropped (RFC 5321
 * 3.6.1 / C). allow_null accepts "<>". utf8 allows UTF-8 in local part
 * and domain (SMTPUTF8). On success fills a and *end_r (first byte after
 * '>') and returns 0; else -1 and a static message in error_r. */
int address_parse_path(const char *s, bool allow_null, bool utf8, struct mail_address *a,
                       const char **end_r, const char **error_r);
/* Parses a bare "local@domain" (no brackets) the same way; the whole
 * string must be consumed. Used by the CLI and the pickup formats. */
int address_parse(const char *s, bool utf8, struct mail_address *a, const char **error_r);
/* "local@domain" with the local part re-quoted when needed; xmalloc'd. */
char *address_format(const struct mail_address *a);
void address_free(struct mail_address *a);
/* Lower-case ASCII in place. */
void address_lower(char *s);
/* Is this a syntactically valid domain name (LDH labels, or UTF-8 when
 * utf8)? */
bool address_domain_ok(const char *d, bool utf8);

/* Extracts every addr-spec from an RFC 5322 address-list header value
 * (display names, comments, groups, obsolete routes tolerated). cb gets
 * "local@domain" strings; returns the number found, or -1 on a hopeless
 * syntax error (what was found before is still reported). */
int address_list_parse(const char *value, size_t len, void (*cb)(const char *addr, void *arg),
                       void *arg);

#endif
