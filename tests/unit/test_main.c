/* The unit test runner: runs every registered test, prints one line per
 * failing test and a closing "N passed, M failed" summary. */
#include "unit.h"

#include <stdlib.h>

static struct unit_test *tests;
int unit_failures;

void unit_register(struct unit_test *t)
{
	t->next = tests;
	tests = t;
}

int main(int argc, char **argv)
{
	int passed = 0, failed = 0;
	/* registration order is reversed by the list; run in file order */
	struct unit_test *rev = NULL;
	while (tests) {
		struct unit_test *t = tests;
		tests = t->next;
		t->next = rev;
		rev = t;
	}
	for (struct unit_test *t = rev; t; t = t->next) {
		if (argc > 1 && strstr(t->name, argv[1]) == NULL)
			continue;
		unit_failures = 0;
		t->fn();
		if (unit_failures) {
			fprintf(stderr, "FAIL %s\n", t->name);
			failed++;
		} else {
			passed++;
		}
	}
	printf("unit: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
