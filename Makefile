# conc: build the library, the examples, the tests and the benchmarks.
#
#   make               libconc.a, libconc.so and include/conc.h
#   make examples      every program in c_examples/ (-Wall -Wextra -Werror)
#   make run-examples  build, then run each example under a heading
#   make test          header checks, examples, library and install checks,
#                      the C++ tests, then cargo test (Rust + C tests)
#   make bench         the benchmarks in benches/, each against its baseline,
#                      then one table (target/bench/report.md and .json);
#                      make bench BENCH=bench_thread runs one
#   make bench-deps    installs the optional baselines (Boost, TBB) with apt-get
#   make sanitize      C tests and examples under ASan+UBSan, thread ones under TSan
#   make valgrind      C tests and examples under valgrind's memcheck
#   make fuzz          each fuzz target for FUZZ_SECONDS (needs cargo-fuzz)
#   make mpi-example   the MPI example on 2 ranks (needs mpicc and mpirun)
#   make install       headers, libraries, pkg-config and CMake files under
#                      PREFIX (default /usr/local), honouring DESTDIR
#   make uninstall     removes what make install put there
#   make clean

CARGO    ?= cargo
CC       ?= cc
CXX      ?= c++
# The compilers make test checks the headers with, besides CC and CXX:
# conc.h with clang too, conc.hpp with g++ and clang++.
GXX      ?= g++
CLANG    ?= clang
CLANGXX  ?= clang++
BUILD    := build

# Optional tools. A check that needs one runs when it is on PATH, and
# otherwise prints "skipped: <check> (<tool> not found)" and passes;
# with CONC_REQUIRE_ALL=1 (as .ci/run sets) a missing tool fails the run.
# In a recipe: `if $(call optional,<check>,<tool>); then ...; fi`.
CONC_REQUIRE_ALL ?=
optional = { command -v $(2) >/dev/null 2>&1 || { \
  if [ "$(CONC_REQUIRE_ALL)" = 1 ]; then \
    echo "$(1): $(2) not found, and CONC_REQUIRE_ALL=1 requires every check" >&2; exit 1; \
  fi; echo "skipped: $(1) ($(2) not found)"; false; }; }
HAVE_CLANGXX := $(shell command -v $(CLANGXX) 2>/dev/null)
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
BENCHES     := $(sort $(patsubst benches/%.c,$(BUILD)/benches/%,$(wildcard benches/*.c)) \
                      $(patsubst benches/%.cpp,$(BUILD)/benches/%,$(wildcard benches/*.cpp)))

# The version, from Cargo.toml (the one source of truth).
VERSION       := $(shell awk '/^\[/ { p = ($$0 == "[package]") } p && /^version *=/ { gsub(/^[^"]*"|".*$$/, ""); print; exit }' Cargo.toml)
VERSION_MAJOR := $(word 1,$(subst ., ,$(VERSION)))
DESCRIPTION   := $(shell awk '/^\[/ { p = ($$0 == "[package]") } p && /^description *=/ { sub(/^[^"]*"/, ""); sub(/"[^"]*$$/, ""); print; exit }' Cargo.toml)
# The shared library's SONAME (set by build.rs) and installed file name.
SONAME        := libconc.so.$(VERSION_MAJOR)
SHLIB_FILE    := libconc.so.$(VERSION)

# Installation directories. DESTDIR stages the whole tree elsewhere (for
# packaging); the installed files name PREFIX, LIBDIR and INCLUDEDIR.
PREFIX       ?= /usr/local
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CMAKEDIR     ?= $(LIBDIR)/cmake/conc
DESTDIR      ?=
# The installed libconc.so is stripped (the build keeps its line tables
# for debugging: target/release/libconc.so, and libconc.a as installed).
STRIP        ?= strip

.PHONY: all lib examples run-examples test check-header header-compile bench bench-deps clean FORCE
.PHONY: install uninstall packaging check-symbols compiler-matrix test-cpp test-install print-version
.PHONY: sanitize sanitize-asan sanitize-tsan valgrind fuzz mpi-example

all: lib

lib: $(LIB)

# cargo decides whether anything is stale; the library is rewritten (and
# everything linked against it relinked) only when it changed. The same
# command always, so that cargo never rebuilds for changed flags.
$(LIB) $(SHLIB) $(NSL) &: FORCE
	@build_lib() { \
	  $(CARGO) rustc --release --lib --quiet -- --print native-static-libs=$(abspath $(NSL)) \
	    2>target/cargo-rustc.log; rc=$$?; \
	  grep -v -e '^note: native artifacts' -e '^$$' target/cargo-rustc.log >&2; return $$rc; }; \
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
	@if $(call optional,the committed-header check,git) && \
	  git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
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

# The shared library is libconc.so.MAJOR and exports conc_* only.
check-symbols: $(SHLIB)
	@soname=$$(readelf -d $(SHLIB) | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p'); \
	if [ "$$soname" != "$(SONAME)" ]; then \
	  echo "$(SHLIB): SONAME is '$$soname', expected $(SONAME)"; exit 1; \
	fi; \
	echo "$(SHLIB): SONAME $$soname"
	@all=$$(nm -D --defined-only $(SHLIB) | awk 'NF >= 3 { print $$3 }'); \
	others=$$(printf '%s\n' "$$all" | grep -v '^conc_' | grep -v '^$$' || true); \
	if [ -n "$$others" ]; then \
	  echo "$(SHLIB) exports symbols outside conc_*:"; printf '  %s\n' $$others; exit 1; \
	fi; \
	if [ -z "$$all" ]; then echo "$(SHLIB) exports nothing"; exit 1; fi; \
	echo "$(SHLIB) exports $$(printf '%s\n' "$$all" | wc -l) symbols, all conc_*"

# conc.h with clang too (CC and CXX are checked by header-compile), and
# conc.hpp with both compilers as C++17 and C++20.
compiler-matrix: include/conc.h
	@if $(call optional,clang header matrix,$(CLANG)); then \
	  for std in c99 c11; do \
	    $(CLANG) -std=$$std -Wall -Wextra -pedantic -Werror -Iinclude -fsyntax-only -x c tests/header/header_check.c || exit 1; \
	    echo "conc.h compiles with $(CLANG) as $$std"; \
	  done; \
	fi
	@if $(call optional,clang++ header matrix,$(CLANGXX)); then \
	  for std in c++11 c++17 c++20; do \
	    $(CLANGXX) -std=$$std -Wall -Wextra -pedantic -Werror -Iinclude -fsyntax-only -x c++ tests/header/header_check.c || exit 1; \
	    echo "conc.h compiles with $(CLANGXX) as $$std"; \
	  done; \
	fi
	@for cxx in $(GXX) $(if $(HAVE_CLANGXX),$(CLANGXX)); do \
	  for std in c++17 c++20; do \
	    $$cxx -std=$$std $(HPP_WARN) -Iinclude -fsyntax-only tests/header/hpp_check.cpp || exit 1; \
	    echo "conc.hpp compiles with $$cxx as $$std"; \
	  done; \
	done

# The C++ tests of conc.hpp, built with g++ and clang++, as C++17 and C++20.
HPP_WARN     := -Wall -Wextra -pedantic -Werror -Wshadow -Wconversion -Wsign-conversion \
                -Wold-style-cast -Wnon-virtual-dtor -Woverloaded-virtual
# (the clang++ variants only when clang++ is present)
HPP_VARIANTS := gcc-c++17 gcc-c++20 $(if $(HAVE_CLANGXX),clang-c++17 clang-c++20)
# Every tests/cpp/test_*.cpp, each in every variant.
CPP_TESTS    := $(sort $(patsubst tests/cpp/%.cpp,%,$(wildcard tests/cpp/test_*.cpp)))
HPP_TESTS    := $(foreach t,$(CPP_TESTS),$(HPP_VARIANTS:%=$(BUILD)/tests/$(t)-%))

define cpp_test_rule
$(BUILD)/tests/$(1)-%: tests/cpp/$(1).cpp tests/cpp/check.hpp include/conc.hpp $(LIB) include/conc.h
	@mkdir -p $$(@D)
	$$(if $$(findstring clang,$$*),$$(CLANGXX),$$(GXX)) -std=$$(word 2,$$(subst -, ,$$*)) $$(HPP_WARN) -O1 -g \
	  -pthread -Iinclude -Itests/cpp $$< -o $$@ $$(LIB) $$(NATIVE_LIBS)
endef
$(foreach t,$(CPP_TESTS),$(eval $(call cpp_test_rule,$(t))))

test-cpp: $(HPP_TESTS)
	@$(call optional,C++ tests built with clang++,$(CLANGXX)) || true
	@for t in $(HPP_TESTS); do \
	  echo "$$(basename $$t):"; $$t || exit 1; \
	done

# Installs into a temporary prefix and builds programs from there with
# pkg-config (static and shared) and CMake, then uninstalls.
test-install: lib
	@MAKE="$(MAKE)" CC="$(CC)" CXX="$(CXX)" CONC_REQUIRE_ALL="$(CONC_REQUIRE_ALL)" tests/install/run.sh

# cargo's own last line sums up only its last test program: the last line
# here sums up all of them, and the status is cargo's.
test: check-header header-compile compiler-matrix check-symbols examples test-cpp test-install
	@mkdir -p $(BUILD)
	@echo '$(CARGO) test'; \
	{ CONC_STATIC_LIB="$(abspath $(LIB))" CONC_NATIVE_STATIC_LIBS="$(NATIVE_LIBS)" $(CARGO) test 2>&1; \
	  echo $$? > $(BUILD)/cargo-test.rc; } | tee $(BUILD)/cargo-test.log; \
	rc=$$(cat $(BUILD)/cargo-test.rc); \
	awk -v rc=$$rc '/^test result:/ { n++; p += $$4; f += $$6 } \
	  /^C program / { c[++nc] = $$0 } \
	  END { if (rc != 0 && f == 0) f = 1; \
	        if (nc) print "C test programs:"; \
	        for (i = 1; i <= nc; i++) print "  " substr(c[i], 11); \
	        printf "make test: %d cargo test programs, after the header, example, C++ and install checks\n", n; \
	        printf "summary: %d passed, %d failed\n", p, f }' $(BUILD)/cargo-test.log; \
	exit $$rc

$(BUILD)/benches/%: benches/%.c $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CC) $(EX_CFLAGS) -O2 $< -o $@ $(LIB) $(NATIVE_LIBS)

# C++ benchmarks (C++17); optional baselines such as Boost are detected
# with __has_include, so they build without them and print a skip note.
$(BUILD)/benches/%: benches/%.cpp $(LIB) include/conc.h include/conc.hpp
	@mkdir -p $(@D)
	$(CXX) $(EX_CXXFLAGS) -O2 $< -o $@ $(LIB) $(TBB_LIBS) $(NATIVE_LIBS)

# TBB's runtime library, linked into the C++ benchmarks when its header
# exists (the pool benchmark's task_group baseline).
TBB_LIBS = $(shell printf '\043include <tbb/task_group.h>\n' | $(CXX) -std=c++17 -E -x c++ - >/dev/null 2>&1 && echo -ltbb)

# The pool benchmark's OpenMP baselines.
$(BUILD)/benches/bench_pool: benches/bench_pool.c benches/report.h $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CC) $(EX_CFLAGS) -O2 -fopenmp $< -o $@ $(LIB) $(NATIVE_LIBS)

# The optional baselines of the benchmarks, from Debian's packages (as
# root, or through sudo). No test needs them.
APT_SUDO  = $(if $(filter 0,$(shell id -u)),,sudo)
bench-deps:
	$(APT_SUDO) apt-get update
	$(APT_SUDO) apt-get install -y libboost-dev libtbb-dev

# Benchmarks run from the top of the repository; some time the examples
# in build/examples as whole processes. Each prints its own lines and one
# REPORT row per comparison (benches/report.h); the run ends with one
# table of them all, also written to target/bench/report.md and
# target/bench/report.json (benches/report.sh). BENCH=name runs one.
BENCH     ?=
BENCH_RUN := $(if $(BENCH),$(filter %/$(BENCH) %/bench_$(BENCH),$(BENCHES)),$(BENCHES))
BENCH_OUT := target/bench

bench: $(BENCH_RUN) $(EXAMPLES)
	@if [ -z "$(BENCH_RUN)" ]; then \
	  echo "no benchmark named '$(BENCH)'; there are: $(notdir $(BENCHES))" >&2; exit 1; \
	fi
	@mkdir -p $(BENCH_OUT); : > $(BENCH_OUT)/rows.tsv; \
	for b in $(BENCH_RUN); do \
	  echo; echo "==== $$(basename $$b) ===="; \
	  { $$b; echo $$? > $(BENCH_OUT)/rc; } | tee $(BENCH_OUT)/$$(basename $$b).log; \
	  [ "$$(cat $(BENCH_OUT)/rc)" = 0 ] || { echo "$$(basename $$b) failed" >&2; exit 1; }; \
	  grep -e '^REPORT	' -e '^skipped: ' $(BENCH_OUT)/$$(basename $$b).log >> $(BENCH_OUT)/rows.tsv || true; \
	done; \
	echo; echo "==== report ===="; \
	sh benches/report.sh $(BENCH_OUT)/rows.tsv $(BENCH_OUT)

# conc inside a node, MPI between nodes: c_examples/mpi/, built with mpicc
# and run on 2 ranks (Open MPI: --oversubscribe on a small machine, and
# --allow-run-as-root when root). An optional check (see `optional`).
MPICC    ?= mpicc
MPIRUN   ?= mpirun
MPI_NP   ?= 2
MPI_FLAGS = --oversubscribe $(if $(filter 0,$(shell id -u)),--allow-run-as-root)

$(BUILD)/examples/mpi/%: c_examples/mpi/%.c $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(MPICC) -std=gnu11 $(WARN) $(CFLAGS) -pthread -Iinclude $< -o $@ $(LIB) $(NATIVE_LIBS)

MPI_EXAMPLES := $(patsubst c_examples/mpi/%.c,$(BUILD)/examples/mpi/%,$(wildcard c_examples/mpi/*.c))

mpi-example:
	@if $(call optional,mpi-example,$(MPICC)) && $(call optional,mpi-example,$(MPIRUN)); then \
	$(MAKE) --no-print-directory $(MPI_EXAMPLES) && \
	for ex in $(MPI_EXAMPLES); do \
	  echo "==== $$(basename $$ex) ($(MPI_NP) ranks) ===="; \
	  OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1 \
	    $(MPIRUN) $(MPI_FLAGS) -np $(MPI_NP) $$ex || exit 1; \
	done; fi

# pkg-config and CMake files for the directories above, from packaging/*.in.
# Values are escaped for sed; paths in the CMake files are relative to
# their own directory, so that an installed tree can be moved.
sed_escape = $(subst |,\|,$(subst &,\&,$(1)))
empty :=
space := $(empty) $(empty)
PKG_SUBST = sed -e 's|@PREFIX@|$(call sed_escape,$(PREFIX))|g' \
                -e 's|@LIBDIR@|$(call sed_escape,$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR)))|g' \
                -e 's|@INCLUDEDIR@|$(call sed_escape,$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR)))|g' \
                -e 's|@VERSION@|$(VERSION)|g' \
                -e 's|@VERSION_MAJOR@|$(VERSION_MAJOR)|g' \
                -e 's|@DESCRIPTION@|$(call sed_escape,$(DESCRIPTION))|g' \
                -e 's|@NATIVE_LIBS@|$(strip $(NATIVE_LIBS))|g' \
                -e 's|@NATIVE_LIBS_CMAKE@|$(subst $(space),;,$(strip $(NATIVE_LIBS)))|g' \
                -e "s|@SIZEOF_VOID_P@|$$(echo | $(CC) -dM -E - | sed -n 's/^\#define __SIZEOF_POINTER__ //p')|g" \
                -e "s|@CMAKEDIR_TO_LIBDIR@|$$(realpath -m --relative-to=$(CMAKEDIR) $(LIBDIR))|g" \
                -e "s|@CMAKEDIR_TO_INCLUDEDIR@|$$(realpath -m --relative-to=$(CMAKEDIR) $(INCLUDEDIR))|g"

packaging: $(NSL)
	@mkdir -p $(BUILD)/packaging
	@$(PKG_SUBST) packaging/conc.pc.in > $(BUILD)/packaging/conc.pc
	@$(PKG_SUBST) packaging/concConfig.cmake.in > $(BUILD)/packaging/concConfig.cmake
	@$(PKG_SUBST) packaging/concConfigVersion.cmake.in > $(BUILD)/packaging/concConfigVersion.cmake
	@if grep -n '@[A-Z_]*@' $(BUILD)/packaging/*; then echo "unsubstituted placeholders above"; exit 1; fi

install: lib packaging
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(CMAKEDIR)
	install -m 644 include/conc.h include/conc.hpp $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(LIB) $(DESTDIR)$(LIBDIR)/libconc.a
	install -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/$(SHLIB_FILE)
	$(STRIP) --strip-unneeded $(DESTDIR)$(LIBDIR)/$(SHLIB_FILE)
	ln -sfn $(SHLIB_FILE) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/libconc.so
	install -m 644 $(BUILD)/packaging/conc.pc $(DESTDIR)$(PKGCONFIGDIR)/conc.pc
	install -m 644 $(BUILD)/packaging/concConfig.cmake $(BUILD)/packaging/concConfigVersion.cmake \
	  $(DESTDIR)$(CMAKEDIR)/

print-version:
	@echo $(VERSION)

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/conc.h $(DESTDIR)$(INCLUDEDIR)/conc.hpp
	rm -f $(DESTDIR)$(LIBDIR)/libconc.a $(DESTDIR)$(LIBDIR)/libconc.so \
	  $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/$(SHLIB_FILE)
	rm -f $(DESTDIR)$(PKGCONFIGDIR)/conc.pc
	rm -f $(DESTDIR)$(CMAKEDIR)/concConfig.cmake $(DESTDIR)$(CMAKEDIR)/concConfigVersion.cmake
	-rmdir $(DESTDIR)$(CMAKEDIR) 2>/dev/null || true

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
# Threads under TSan: the C tests that use threads, and the thread examples.
# A C test that uses threads says so with the line "make sanitize: tsan"
# in its opening comment.
TSAN_TESTS    := $(patsubst tests/c/%.c,$(SAN)/tsan/%,$(shell grep -l 'make sanitize: tsan' $(C_TESTS)))
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

# The other direction: test_sync_tsan.c built with -DRACY forgets its
# mutex, and ThreadSanitizer must report the race (so the build fails).
TSAN_RACY := $(SAN)/tsan/test_sync_tsan_racy

$(TSAN_RACY): tests/c/test_sync_tsan.c tests/c/check.h $(LIB) include/conc.h
	@mkdir -p $(@D)
	$(CC) $(TEST_CFLAGS) $(TSAN_FLAGS) -DRACY $< -o $@ $(LIB) $(NATIVE_LIBS)

sanitize-tsan: $(TSAN_TESTS) $(TSAN_EXAMPLES) $(TSAN_RACY)
	@$(TSAN_ENV) tests/tools/run_checked.sh tsan $(SAN)/tsan/logs -- $(TSAN_TESTS) $(TSAN_EXAMPLES)
	@mkdir -p $(SAN)/tsan/logs; log=$(SAN)/tsan/logs/test_sync_tsan_racy.log; \
	if (cd tests/c && $(TSAN_ENV) $(abspath $(TSAN_RACY))) >$$log 2>&1; then \
	  cat $$log; echo "FAILED tsan: the racy build of test_sync_tsan passed"; exit 1; \
	elif grep -q 'WARNING: ThreadSanitizer: data race' $$log; then \
	  echo "ok     tsan reports the forgotten lock of test_sync_tsan -DRACY"; \
	else \
	  cat $$log; echo "FAILED tsan: no data race reported for test_sync_tsan -DRACY"; exit 1; \
	fi

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
	@if $(call optional,valgrind memcheck,$(VALGRIND)); then \
	  CONC_UNDER_VALGRIND=1 tests/tools/run_checked.sh memcheck $(BUILD)/valgrind/logs \
	    $(VALGRIND) $(VG_FLAGS) -- $^; \
	fi

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
