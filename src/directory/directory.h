/* directory — domains, users, aliases and password hashes in SQLite
 * (var/db/directory.sqlite, WAL mode so the CLI and the daemon can use it
 * at the same time).
 *
 * One struct directory per thread (SQLite connections and prepared
 * statements are not shared). Reads are fast (an index lookup) and may run
 * on the event loop; directory_auth() and every write hash or fsync and
 * must run off the loop (worker thread or CLI).
 *
 * Names: domains and local parts are stored and compared in ASCII lower
 * case. Logins are full addresses "user@domain"; a bare "user" means the
 * user in the primary domain (the first domain created). */
#ifndef DIRECTORY_DIRECTORY_H
#define DIRECTORY_DIRECTORY_H
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

struct directory;

/* Opens (and with create, makes) the database; schema is created or
 * upgraded. Returns NULL with a static or thread-local message. */
struct directory *directory_open(const char *path, bool create, const char **error_r);
void directory_close(struct directory **d);

/* Alias expansion limits: depth of alias chains and targets per message
 * recipient (protects against loops and explosions). */
#define DIRECTORY_ALIAS_DEPTH 10
#define DIRECTORY_EXPAND_MAX 1000

enum dir_rcpt_kind {
	DIR_RCPT_ERROR = -1,
	DIR_RCPT_REMOTE = 0,       /* domain is not ours */
	DIR_RCPT_LOCAL = 1,        /* a mailbox (possibly via user+tag) */
	DIR_RCPT_ALIAS = 2,        /* an alias: expanded by the router */
	DIR_RCPT_UNKNOWN = 3,      /* our domain, no such user or alias */
};

/* Classifies a recipient. For DIR_RCPT_LOCAL fills mailbox_r (may be
 * NULL) with the canonical "user@domain" (lower case, +tag removed),
 * caller frees. */
enum dir_rcpt_kind directory_rcpt_kind(struct directory *d, const char *local, const char *domain,
                                       char **mailbox_r);

bool directory_domain_is_local(struct directory *d, const char *domain);

/* Expands one recipient address into final destinations: each local
 * mailbox once ("user@domain") and each remote address once. Unknown
 * local addresses land in *unknown. Loop-safe. Arrays are xmalloc'd lists
 * of xmalloc'd strings; free with directory_strv_free(). */
struct strv {
	char **v;
	size_t n;
};
int directory_expand(struct directory *d, const char *address, struct strv *local,
                     struct strv *remote, struct strv *unknown, const char **error_r);
void strv_add(struct strv *s, const char *str);
bool strv_contains(const struct strv *s, const char *str);
void strv_free(struct strv *s);

/* Password check; blocking (crypt_r). 1 ok, 0 wrong or no such user,
 * -1 error. On success canonical_r (may be NULL) gets "user@domain". */
int directory_auth(struct directory *d, const char *login, const char *password,
                   char **canonical_r);

/* Quota in bytes for a mailbox ("user@domain"); 0 = unlimited. */
int directory_user_quota(struct directory *d, const char *mailbox, uint64_t *quota_r);

/* Administration (CLI). All return 0 or -1 with a message in *error_r
 * (static or thread-local storage). Addresses are validated here. */
int directory_domain_add(struct directory *d, const char *domain, const char **error_r);
int directory_domain_del(struct directory *d, const char *domain, bool force, const char **error_r);
int directory_user_add(struct directory *d, const char *address, const char *password,
                       uint64_t quota, const char **error_r);
int directory_user_del(struct directory *d, const char *address, const char **error_r);
int directory_user_passwd(struct directory *d, const char *address, const char *password,
                          const char **error_r);
int directory_user_set_quota(struct directory *d, const char *address, uint64_t quota,
                             const char **error_r);
int directory_alias_add(struct directory *d, const char *address, const char *target,
                        const char **error_r);
int directory_alias_del(struct directory *d, const char *address, const char *target,
                        const char **error_r);
/* The primary domain (first created), xmalloc'd, or NULL. */
char *directory_primary_domain(struct directory *d);

/* Listings: callback per row, in name order. */
struct dir_user_info {
	const char *address;
	const char *domain;
	uint64_t quota;
	int64_t created;
};
int directory_domain_list(struct directory *d, void (*cb)(const char *domain, int64_t created, void *arg),
                          void *arg);
int directory_user_list(struct directory *d, const char *domain_or_null,
                        void (*cb)(const struct dir_user_info *u, void *arg), void *arg);
int directory_alias_list(struct directory *d, void (*cb)(const char *address, const char *target, void *arg),
                         void *arg);
int64_t directory_count_users(struct directory *d);

/* Hash a password with yescrypt (fallback sha512-crypt); xmalloc'd. */
char *directory_hash_password(const char *password);

#endif
