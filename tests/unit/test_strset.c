/* Unit tests: the string hash set (add, contains, remove, growth with
 * tombstones). */
#include "unit.h"
#include "lib/strset.h"

UNIT_TEST(strset_basic)
{
	struct strset s;
	strset_init(&s);
	CHECK(!strset_contains(&s, "a"));
	CHECK(strset_add(&s, "a"));
	CHECK(!strset_add(&s, "a"));
	CHECK(strset_contains(&s, "a"));
	CHECK(strset_remove(&s, "a"));
	CHECK(!strset_remove(&s, "a"));
	CHECK(!strset_contains(&s, "a"));
	char k[32];
	for (int i = 0; i < 10000; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		CHECK(strset_add(&s, k));
	}
	for (int i = 0; i < 10000; i += 2) {
		snprintf(k, sizeof(k), "k%d", i);
		CHECK(strset_remove(&s, k));
	}
	/* churn: many add/remove cycles must not fill the table with tombstones */
	for (int i = 0; i < 50000; i++) {
		snprintf(k, sizeof(k), "t%d", i);
		strset_add(&s, k);
		strset_remove(&s, k);
	}
	int found = 0;
	for (int i = 0; i < 10000; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		found += strset_contains(&s, k);
	}
	CHECK_INT(found, 5000);
	CHECK_INT(s.n, 5000);
	strset_free(&s);
}
