/* strset — a hash set of strings (open addressing, linear probing,
 * tombstones). Not thread-safe: the owner locks. Keys are copied. */
#ifndef LIB_STRSET_H
#define LIB_STRSET_H
#include <stdbool.h>
#include <stddef.h>

struct strset {
	char **slots; /* NULL = empty, STRSET_TOMB = deleted */
	size_t cap;   /* power of two */
	size_t n;     /* live keys */
	size_t used;  /* live + tombstones */
};

void strset_init(struct strset *s);
/* Returns true if added, false if it was already there. */
bool strset_add(struct strset *s, const char *key);
bool strset_contains(const struct strset *s, const char *key);
/* Returns true if it was there. */
bool strset_remove(struct strset *s, const char *key);
void strset_free(struct strset *s);

#endif
