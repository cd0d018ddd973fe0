/* Unit tests: the address parser (paths, bare addresses, header lists). */
#include "unit.h"
#include "mail/address.h"
#include "lib/strbuf.h"

#include <stdlib.h>

UNIT_TEST(address_parse_rows)
{
	static const struct {
		const char *in;
		int ok;
		const char *formatted;
	} rows[] = {
		{ "user@example.org", 1, "user@example.org" },
		{ "User.Name+tag@Example.ORG", 1, "User.Name+tag@example.org" },
		{ "\"a b\"@example.org", 1, "\"a b\"@example.org" },
		{ "\"a@b\"@example.org", 1, "\"a@b\"@example.org" },
		{ "\"a\\\"b\"@example.org", 1, "\"a\\\"b\"@example.org" },
		{ "elsewhere!user@example.org", 1, "elsewhere!user@example.org" },
		{ "user@[192.0.2.1]", 1, "user@[192.0.2.1]" },
		{ "user@[IPv6:2001:db8::1]", 1, "user@[ipv6:2001:db8::1]" },
		{ "user", 0, NULL },
		{ "@example.org", 0, NULL },
		{ "user@", 0, NULL },
		{ ".user@example.org", 0, NULL },
		{ "us..er@example.org", 0, NULL },
		{ "user@example..org", 0, NULL },
		{ "user@example.org.", 0, NULL },
		{ "user@exa_mple.org", 0, NULL },
		{ "user@example.org junk", 0, NULL },
		{ "\"unterminated@example.org", 0, NULL },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct mail_address a;
		const char *err;
		int r = address_parse(rows[i].in, false, &a, &err);
		if ((r == 0) != rows[i].ok) {
			fprintf(stderr, "  row %zu \"%s\": got %d\n", i, rows[i].in, r);
			unit_failures++;
			if (r == 0)
				address_free(&a);
			continue;
		}
		if (r == 0) {
			char *f = address_format(&a);
			CHECK_STR(f, rows[i].formatted);
			free(f);
			address_free(&a);
		}
	}
}

UNIT_TEST(address_domain_rows)
{
	CHECK(address_domain_ok("example.org", false));
	CHECK(address_domain_ok("localhost", false));
	CHECK(address_domain_ok("a-b.c", false));
	CHECK(!address_domain_ok("-a.c", false));
	CHECK(!address_domain_ok("a-.c", false));
	CHECK(!address_domain_ok("a..c", false));
	CHECK(!address_domain_ok("", false));
	CHECK(!address_domain_ok("a.c.", false));
	CHECK(!address_domain_ok("bücher.de", false));
	CHECK(address_domain_ok("bücher.de", true));
}

static void collect(const char *addr, void *arg)
{
	struct strbuf *sb = arg;
	if (sb->len)
		strbuf_addc(sb, ',');
	strbuf_adds(sb, addr);
}

UNIT_TEST(address_list_rows)
{
	static const struct {
		const char *in;
		const char *want;
	} rows[] = {
		{ "a@b.org", "a@b.org" },
		{ "Joe Q. Public <john.q.public@example.com>", "john.q.public@example.com" },
		{ "Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
		  "mary@x.test,jdoe@example.org,one@y.test" },
		{ "\"Giant; \\\"Big\\\" Box\" <sysservices@example.net>", "sysservices@example.net" },
		{ "A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;", "c@a.test,joe@where.test,jdoe@one.test" },
		{ "Undisclosed recipients:;", "" },
		{ "Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>", "pete@silly.test" },
		{ "\"a@b\" <real@c.test>", "real@c.test" },
		{ ", leading@comma.test", "leading@comma.test" },
		{ "<@route.test:user@host.test>", "user@host.test" },
		{ "John Doe <jdoe@machine.example> (comment), \"Mary\" <mary@example.net>", "jdoe@machine.example,mary@example.net" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct strbuf sb = STRBUF_INIT;
		strbuf_add(&sb, "", 0);
		address_list_parse(rows[i].in, strlen(rows[i].in), collect, &sb);
		CHECK_STR(sb.s, rows[i].want);
		strbuf_free(&sb);
	}
}
