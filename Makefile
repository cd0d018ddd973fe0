# posthorn — one binary. `make` builds build/posthorn; `make run` and `make test`
# are the two set-up commands of README.md.
CC      ?= cc
PKGS    := libevent libevent_openssl libevent_pthreads jansson sqlite3 libcrypt openssl libunbound
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN    := -Wall -Wextra -Wformat=2 -Wshadow -Wno-unused-parameter -Werror
CFLAGS  ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -Isrc $(PKG_CFLAGS) $(CFLAGS)
LDLIBS  := $(PKG_LIBS) -lpthread

SRCS    := $(sort $(wildcard src/*/*.c))
MAIN    := src/main.c
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))

BUILD   ?= build
OBJS    := $(SRCS:%.c=$(BUILD)/%.o)

SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

.PHONY: all run test unit integration bench clean deps fuzz clang check-format
all: $(BUILD)/posthorn

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/posthorn: $(OBJS) $(BUILD)/src/main.o
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit-tests: $(OBJS) $(UNIT_SRCS:%.c=$(BUILD)/%.o) tests/unit/unit.h
	$(CC) $(ALL_CFLAGS) -o $@ $(OBJS) $(UNIT_SRCS:%.c=$(BUILD)/%.o) $(LDLIBS)

-include $(OBJS:.o=.d) $(BUILD)/src/main.d $(UNIT_SRCS:%.c=$(BUILD)/%.d)

deps:
	@scripts/install-deps

# Start the server in the foreground on the embedded defaults under ./var.
run: deps
	@$(MAKE) --no-print-directory all
	./build/posthorn serve --data ./var

# Sanitizer build, unit tests, integration tests, one summary line.
test: deps
	@$(MAKE) --no-print-directory BUILD=build/asan CFLAGS="$(SAN_FLAGS)" build/asan/posthorn build/asan/unit-tests
	@scripts/run-tests build/asan

unit:
	@$(MAKE) --no-print-directory BUILD=build/asan CFLAGS="$(SAN_FLAGS)" build/asan/unit-tests
	./build/asan/unit-tests

# Both compilers must build warning-free.
clang:
	@$(MAKE) --no-print-directory BUILD=build/clang CC=clang all

bench: deps all
	@bench/run-all

clean:
	rm -rf build

# libFuzzer harnesses (clang): make fuzz [FUZZ_SECONDS=60]
FUZZ_SECONDS ?= 60
FUZZERS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CFLAGS := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer

build/fuzz/%: tests/fuzz/%.c FORCE
	@$(MAKE) --no-print-directory BUILD=build/fuzzobj CC=clang CFLAGS="$(FUZZ_CFLAGS)" $(SRCS:%.c=build/fuzzobj/%.o)
	@mkdir -p build/fuzz
	@clang $(ALL_CFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(SRCS:%.c=build/fuzzobj/%.o) $(LDLIBS)

fuzz: deps $(FUZZERS)
	@for f in $(FUZZERS); do n=$$(basename $$f); mkdir -p tests/fuzz/corpus-work/$$n; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build/fuzz/$$n- \
	    tests/fuzz/corpus-work/$$n tests/fuzz/seeds/$${n#fuzz_} > build/fuzz/$$n.log 2>&1; rc=$$?; \
	  grep -E 'stat::number_of_executed_units|stat::new_units_added|ERROR|SUMMARY' build/fuzz/$$n.log; \
	  if [ $$rc -ne 0 ]; then echo "$$n FAILED (exit $$rc), see build/fuzz/$$n.log"; exit 1; fi; done

# Replays every seed (including kept crash inputs) through the fuzzers.
fuzz-regress: $(FUZZERS)
	@for f in $(FUZZERS); do n=$$(basename $$f); $$f -runs=0 tests/fuzz/seeds/$${n#fuzz_} >/dev/null 2>&1 \
	  || { echo "$$n regression FAILED"; exit 1; }; done; echo "fuzz-regress: all seeds pass"

FORCE:
