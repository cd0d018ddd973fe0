/* unit — a tiny table-friendly unit test harness. Each test_*.c file
 * defines tests with UNIT_TEST(name) { ... } and checks with CHECK*();
 * tests register themselves; tests/unit/main.c runs them all and prints
 * "N passed, M failed". */
#ifndef TESTS_UNIT_H
#define TESTS_UNIT_H
#include <stdio.h>
#include <string.h>

struct unit_test {
	const char *name;
	void (*fn)(void);
	struct unit_test *next;
};
void unit_register(struct unit_test *t);
extern int unit_failures; /* failures in the current test */

#define UNIT_TEST(nm)                                                      \
	static void nm(void);                                              \
	static struct unit_test nm##_reg = { #nm, nm, NULL };              \
	__attribute__((constructor)) static void nm##_register(void)       \
	{                                                                  \
		unit_register(&nm##_reg);                                  \
	}                                                                  \
	static void nm(void)

#define CHECK(cond)                                                                    \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
			unit_failures++;                                               \
		}                                                                      \
	} while (0)

#define CHECK_INT(got, want)                                                           \
	do {                                                                           \
		long long g_ = (long long)(got), w_ = (long long)(want);               \
		if (g_ != w_) {                                                        \
			fprintf(stderr, "  %s:%d: %s: got %lld, want %lld\n", __FILE__, __LINE__, #got, g_, w_); \
			unit_failures++;                                               \
		}                                                                      \
	} while (0)

#define CHECK_STR(got, want)                                                           \
	do {                                                                           \
		const char *g_ = (got), *w_ = (want);                                  \
		if ((g_ == NULL) != (w_ == NULL) || (g_ && strcmp(g_, w_) != 0)) {     \
			fprintf(stderr, "  %s:%d: %s: got \"%s\", want \"%s\"\n", __FILE__, __LINE__, #got, \
			        g_ ? g_ : "(null)", w_ ? w_ : "(null)");               \
			unit_failures++;                                               \
		}                                                                      \
	} while (0)

#define CHECK_MEM(got, gotlen, want, wantlen)                                          \
	do {                                                                           \
		if ((gotlen) != (wantlen) || memcmp((got), (want), (wantlen)) != 0) {  \
			fprintf(stderr, "  %s:%d: %s: got %zu bytes \"%.*s\", want %zu bytes \"%.*s\"\n", \
			        __FILE__, __LINE__, #got, (size_t)(gotlen), (int)(gotlen), (const char *)(got), \
			        (size_t)(wantlen), (int)(wantlen), (const char *)(want)); \
			unit_failures++;                                               \
		}                                                                      \
	} while (0)

#endif
