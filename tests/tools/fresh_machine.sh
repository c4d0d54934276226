#!/bin/sh
# tests/tools/fresh_machine.sh: checks that the README's two commands,
# `make run-examples` and `make test`, pass with only the README's
# prerequisites, on a Debian or Ubuntu machine that may have more.
#
# It builds a directory of symlinks to the programs of the packages a fresh
# system has (the Essential ones, and mawk), of the README's apt line (gcc,
# g++, make, git, and binutils and cpp, which gcc pulls in) and to cargo and
# rustc, clones the repository's HEAD into a temporary directory, and runs
# both commands there with PATH set to that directory alone and an empty
# environment (HOME kept, for rustup and cargo's registry). So clang,
# clang++, cmake, pkg-config, valgrind and python3 are missing even when
# installed, and the optional checks must print "skipped: ...".
#
#   tests/tools/fresh_machine.sh [LOGFILE]     (default: a temporary file)
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/conc-fresh.XXXXXX")
log=${1:-$tmp.log}
bin=$tmp/bin
mkdir -p "$bin"

essential=$(dpkg-query -W -f='${Package} ${Essential}\n' | awk '$2 == "yes" { print $1 }')
gcc_version=$(gcc -dumpversion | cut -d. -f1)
for p in $essential mawk gcc "gcc-$gcc_version" g++ "g++-$gcc_version" cpp "cpp-$gcc_version" \
    binutils binutils-x86-64-linux-gnu binutils-aarch64-linux-gnu make git; do
    dpkg -L "$p" 2>/dev/null | grep -E '^(/usr)?/s?bin/[^/]+$' || true
done | sort -u | while read -r f; do
    if [ -e "$f" ]; then ln -sf "$f" "$bin/$(basename "$f")"; fi
done
ln -sf "$(command -v gcc)" "$bin/cc"
ln -sf "$(command -v g++)" "$bin/c++"
ln -sf "$(command -v mawk)" "$bin/awk"
for t in cargo rustc rustup rustdoc; do
    p=$(command -v "$t" || true)
    if [ -n "$p" ]; then ln -sf "$p" "$bin/$t"; fi
done

git clone -q "$root" "$tmp/conc"
cd "$tmp/conc"
echo "fresh machine check: PATH=$bin ($(ls "$bin" | wc -l) programs), clone of $(git log -1 --format=%h) in $tmp/conc, log in $log"
env -i HOME="$HOME" PATH="$bin" TERM=dumb sh -c '
    for t in clang clang++ cmake pkg-config valgrind python3; do
        command -v "$t" >/dev/null && echo "on PATH: $t"
    done
    echo "--- make run-examples"; nice make run-examples || exit 1
    echo "--- make test"; nice make test' >"$log" 2>&1 && rc=0 || rc=$?
grep -e '^skipped: ' -e '^on PATH: ' -e '^summary: ' "$log" || true
if [ "$rc" = 0 ]; then
    echo "fresh machine check: make run-examples and make test passed"
    rm -rf "$tmp"
else
    echo "fresh machine check: FAILED (exit $rc), see $log; the clone stays in $tmp/conc" >&2
fi
exit "$rc"
