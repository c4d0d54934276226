# conc: build the library, the examples, the tests and the benchmarks.
#
#   make               libconc.a, libconc.so and include/conc.h
#   make examples      every program in c_examples/ (-Wall -Wextra -Werror)
#   make run-examples  build, then run each example under a heading
#   make test          header checks, examples, cargo test (Rust + C tests)
#   make bench         the benchmarks in benches/, each against its baseline
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

.PHONY: all lib examples run-examples test check-header header-compile bench clean FORCE

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

clean:
	$(CARGO) clean
	rm -rf $(BUILD)

FORCE:
