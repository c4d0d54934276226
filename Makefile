# conc: build the library, the examples, the tests and the benchmarks.
#
#   make               libconc.a, libconc.so and include/conc.h
#   make examples      every program in c_examples/ (-Wall -Wextra -Werror)
#   make run-examples  build, then run each example under a heading
#   make test          header checks, examples, cargo test (Rust + C tests)
#   make bench         the benchmarks in benches/, each against its baseline
#   make sanitize      C tests and examples under ASan+UBSan, thread ones under TSan
#   make valgrind      C tests and examples under valgrind's memcheck
#   make fuzz          each fuzz target for FUZZ_SECONDS (needs cargo-fuzz)
#   make clean

CARGO    ?= cargo
CC       ?= cc
CXX      ?= c++
BUILD    := build
LIB      := target/release/libconc.a
SHLIB    := target/release/libconc.so
NSL      := target/release/native-static-libs.txt

WARN     := -Wall -Wextra -Werror
CFLAGS   ?= -O2 -g
CXXFLAGS ?= -O2 -g
EX_CFLAGS   = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -pthread -Iinclude
EX_CXXFLAGS = -std=c++17 $(WARN) $(CXXFLAGS) -pthread -Iinclude
# The system libraries libconc.a needs, as rustc reports them.
NATIVE_LIBS = $(shell cat $(NSL))

EXAMPLE_C   := $(wildcard c_examples/*.c)
EXAMPLE_CXX := $(wildcard c_examples/*.cpp)
EXAMPLES    := $(sort $(patsubst c_examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_C)) \
                      $(patsubst c_examples/%.cpp,$(BUILD)/examples/%,$(EXAMPLE_CXX)))
BENCHES     := $(patsubst benches/%.c,$(BUILD)/benches/%,$(wildcard benches/*.c))

.PHONY: all lib examples run-examples test check-header header-compile bench clean FORCE \
        sanitize sanitize-asan sanitize-tsan valgrind fuzz

all: lib

lib: $(LIB)

# cargo decides whether anything is stale; the library is rewritten (and
# everything linked against it relinked) only when it changed. The same
# command always, so that cargo never rebuilds for changed flags.
$(LIB) $(SHLIB) $(NSL) &: FORCE
	@build_lib() { \
	  $(CARGO) rustc --release --lib --quiet -- --print native-static-libs=$(abspath $(NSL)) \
	    2>target/cargo-rustc.log; rc=$$?; \
	  grep -v '^note: native artifacts' target/cargo-rustc.log >&2; return $$rc; }; \
	mkdir -p target && build_lib && \
	if [ ! -s $(NSL) ]; then $(CARGO) clean --release -p conc --quiet && build_lib; fi

include/conc.h: $(LIB)

$(BUILD)/examples/%: c_examples/%.c $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CC) $(EX_CFLAGS) $< -o $@ $(LIB) $(NATIVE_LIBS)

$(BUILD)/examples/%: c_examples/%.cpp $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CXX) $(EX_CXXFLAGS) $< -o $@ $(LIB) $(NATIVE_LIBS)

examples: $(EXAMPLES)

# Each example runs from c_examples/, where its data files are.
run-examples: examples
	@for ex in $(EXAMPLES); do \
	  echo; echo "==== $$(basename $$ex) ===="; \
	  (cd c_examples && ../$$ex) || exit 1; \
	done

# The committed header must be what the build generates.
check-header: $(LIB)
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git diff --exit-code --stat -- include/conc.h || \
	    { echo "include/conc.h differs from the committed header: commit the generated one"; exit 1; }; \
	  echo "include/conc.h matches a fresh generation"; \
	fi

# The header compiles warning-free in every language mode users build with.
header-compile: include/conc.h
	@mkdir -p $(BUILD)
	@for std in c99 c11; do \
	  $(CC) -std=$$std -Wall -Wextra -pedantic -Werror -Iinclude -fsyntax-only -x c tests/header/header_check.c || exit 1; \
	  echo "conc.h compiles as $$std"; \
	done
	@for std in c++11 c++17 c++20; do \
	  $(CXX) -std=$$std -Wall -Wextra -pedantic -Werror -Iinclude -fsyntax-only -x c++ tests/header/header_check.c || exit 1; \
	  echo "conc.h compiles as $$std"; \
	done

test: check-header header-compile examples
	CONC_STATIC_LIB="$(abspath $(LIB))" CONC_NATIVE_STATIC_LIBS="$(NATIVE_LIBS)" $(CARGO) test

$(BUILD)/benches/%: benches/%.c $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CC) $(EX_CFLAGS) -O2 $< -o $@ $(LIB) $(NATIVE_LIBS)

# Benchmarks run from the top of the repository; some time the examples
# in build/examples as whole processes.
bench: $(BENCHES) $(EXAMPLES)
	@for b in $(BENCHES); do \
	  echo; echo "==== $$(basename $$b) ===="; \
	  $$b || exit 1; \
	done

# ---- hardening: sanitizers, valgrind, fuzzing ----------------------------
#
# The C tests and examples are built with the sanitizers and linked with
# the release libconc.a, which is not instrumented: ASan/UBSan/TSan check
# the C side and the libc/pthread calls they intercept (malloc and free,
# pthread_create/join, mutexes, memcpy...), not the Rust code's own memory
# accesses. See tests/tools/run_checked.sh for how reports are caught.

C_TESTS  := $(sort $(wildcard tests/c/test_*.c))
SAN      := $(BUILD)/sanitize
TEST_CFLAGS  = -std=c11 -D_GNU_SOURCE $(WARN) -pthread -Iinclude -Itests/c
ASAN_FLAGS  := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
TSAN_FLAGS  := -O1 -g -fsanitize=thread -fno-omit-frame-pointer

ASAN_TESTS    := $(patsubst tests/c/%.c,$(SAN)/asan/%,$(C_TESTS))
ASAN_EXAMPLES := $(patsubst $(BUILD)/examples/%,$(SAN)/asan/examples/%,$(EXAMPLES))
# Threads under TSan: the thread and stress tests and the thread examples.
TSAN_TESTS    := $(patsubst tests/c/%.c,$(SAN)/tsan/%,$(filter %/test_thread.c %/test_stress.c,$(C_TESTS)))
TSAN_EXAMPLES := $(patsubst $(BUILD)/examples/%,$(SAN)/tsan/examples/%,$(foreach e,$(EXAMPLES),$(if $(findstring thread,$(notdir $(e))),$(e))))

# halt_on_error: the first report ends the process, so it counts even in a
# forked child that leaves with _exit. handle_sigbus=0: a SIGBUS stays a
# SIGBUS (the mmap tests check that touching pages lost to a truncation
# raises it); ASan still reports SIGSEGV.
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=1:strict_string_checks=1:handle_sigbus=0 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            LSAN_OPTIONS=suppressions=$(abspath tests/tools/lsan.supp):print_suppressions=0
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(abspath tests/tools/tsan.supp):print_suppressions=0

$(SAN)/asan/%: tests/c/%.c tests/c/check.h $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) $(ASAN_FLAGS) $< -o $@ $(LIB) $(NATIVE_LIBS)

$(SAN)/asan/examples/%: c_examples/%.c $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CC) $(EX_CFLAGS) $(ASAN_FLAGS) $< -o $@ $(LIB) $(NATIVE_LIBS)

$(SAN)/asan/examples/%: c_examples/%.cpp $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CXX) $(EX_CXXFLAGS) $(ASAN_FLAGS) $< -o $@ $(LIB) $(NATIVE_LIBS)

$(SAN)/tsan/%: tests/c/%.c tests/c/check.h $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) $(TSAN_FLAGS) $< -o $@ $(LIB) $(NATIVE_LIBS)

$(SAN)/tsan/examples/%: c_examples/%.c $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CC) $(EX_CFLAGS) $(TSAN_FLAGS) $< -o $@ $(LIB) $(NATIVE_LIBS)

$(SAN)/tsan/examples/%: c_examples/%.cpp $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CXX) $(EX_CXXFLAGS) $(TSAN_FLAGS) $< -o $@ $(LIB) $(NATIVE_LIBS)

sanitize: sanitize-asan sanitize-tsan

sanitize-asan: $(ASAN_TESTS) $(ASAN_EXAMPLES)
	@$(ASAN_ENV) tests/tools/run_checked.sh asan+ubsan $(SAN)/asan/logs -- $^

sanitize-tsan: $(TSAN_TESTS) $(TSAN_EXAMPLES)
	@$(TSAN_ENV) tests/tools/run_checked.sh tsan $(SAN)/tsan/logs -- $^

# memcheck on the same programs as `make test` builds them (-O2 -g): the
# C tests (built here) and the examples. Forked children are checked too
# (each writes its own log); --trace-children follows any exec.
VG_TESTS := $(patsubst tests/c/%.c,$(BUILD)/valgrind/%,$(C_TESTS))
VALGRIND ?= valgrind
VG_FLAGS := -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
            --show-leak-kinds=definite --trace-children=yes --child-silent-after-fork=no \
            --max-threads=2000 --suppressions=$(abspath tests/tools/valgrind.supp) \
            --log-file=%NAME%.vg.%p.log

$(BUILD)/valgrind/%: tests/c/%.c tests/c/check.h $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) -O2 -g $< -o $@ $(LIB) $(NATIVE_LIBS)

valgrind: $(VG_TESTS) $(EXAMPLES)
	@CONC_UNDER_VALGRIND=1 tests/tools/run_checked.sh memcheck $(BUILD)/valgrind/logs \
	  $(VALGRIND) $(VG_FLAGS) -- $^

# Each cargo-fuzz target for FUZZ_SECONDS (see fuzz/README.md). Needs
# cargo-fuzz and a nightly compiler, or RUSTC_BOOTSTRAP=1 on stable.
FUZZ_SECONDS ?= 30
fuzz:
	@cd fuzz && for t in $$(RUSTC_BOOTSTRAP=1 $(CARGO) fuzz list); do \
	  echo "==== fuzz $$t ($(FUZZ_SECONDS) s)"; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

clean:
	$(CARGO) clean
	rm -rf $(BUILD)

FORCE:
