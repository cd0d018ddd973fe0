/* strset — see strset.h. FNV-1a hashing; the table doubles at 70% use
 * (tombstones included), so probes stay short. */
#include "lib/strset.h"
#include "lib/xalloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char tomb;
#define STRSET_TOMB (&tomb)

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

void strset_init(struct strset *s)
{
	memset(s, 0, sizeof(*s));
}

static void grow(struct strset *s)
{
	size_t ncap = s->cap ? s->cap * 2 : 64;
	if (s->n * 4 < s->cap)
		ncap = s->cap; /* mostly tombstones: rehash in place size */
	char **old = s->slots;
	size_t ocap = s->cap;
	s->slots = xcalloc(ncap, sizeof(char *));
	s->cap = ncap;
	s->used = s->n;
	for (size_t i = 0; i < ocap; i++) {
		if (old[i] == NULL || old[i] == STRSET_TOMB)
			continue;
		size_t j = hash(old[i]) & (ncap - 1);
		while (s->slots[j])
			j = (j + 1) & (ncap - 1);
		s->slots[j] = old[i];
	}
	free(old);
}

bool strset_add(struct strset *s, const char *key)
{
	if (strset_contains(s, key))
		return false;
	if ((s->used + 1) * 10 >= s->cap * 7)
		grow(s);
	size_t j = hash(key) & (s->cap - 1);
	while (s->slots[j] && s->slots[j] != STRSET_TOMB)
		j = (j + 1) & (s->cap - 1);
	if (s->slots[j] == NULL)
		s->used++;
	s->slots[j] = xstrdup(key);
	s->n++;
	return true;
}

static size_t find(const struct strset *s, const char *key)
{
	if (s->cap == 0)
		return SIZE_MAX;
	size_t j = hash(key) & (s->cap - 1);
	while (s->slots[j]) {
		if (s->slots[j] != STRSET_TOMB && strcmp(s->slots[j], key) == 0)
			return j;
		j = (j + 1) & (s->cap - 1);
	}
	return SIZE_MAX;
}

bool strset_contains(const struct strset *s, const char *key)
{
	return find(s, key) != SIZE_MAX;
}

bool strset_remove(struct strset *s, const char *key)
{
	size_t j = find(s, key);
	if (j == SIZE_MAX)
		return false;
	free(s->slots[j]);
	s->slots[j] = STRSET_TOMB;
	s->n--;
	return true;
}

void strset_free(struct strset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		if (s->slots[i] && s->slots[i] != STRSET_TOMB)
			free(s->slots[i]);
	free(s->slots);
	memset(s, 0, sizeof(*s));
}
