#!/bin/sh
# Where the time of a whole-process line count goes, in figures that
# depend little on what else the machine runs: CPU time (user and system),
# page faults, context switches and system calls of
# `bench_count_lines --count FILE` (conc_mmap_count_lines) and of `wc -l`.
# Wall-clock ratios are in bench_count_lines itself.
#
#   benches/profile_count_lines.sh [FILE]   (default target/bench/lines-10M.txt,
#                                            made by build/benches/bench_count_lines)
#
# Needs perf (linux-perf) and strace; each part is skipped when missing.
set -eu
BIN=build/benches/bench_count_lines
FILE=${1:-target/bench/lines-10M.txt}
[ -x "$BIN" ] || { echo "build $BIN first (make $BIN)"; exit 1; }
[ -f "$FILE" ] || "$BIN" --make "$FILE"
cat "$FILE" >/dev/null
echo "load: $(cut -d' ' -f1-3 /proc/loadavg); $(grep FileHugePages /proc/meminfo)"
for cmd in "$BIN --count $FILE" "wc -l $FILE"; do
    echo "==== $cmd"
    if command -v perf >/dev/null 2>&1; then
        perf stat -r 11 -e task-clock,page-faults,context-switches,cpu-migrations \
            $cmd 2>&1 >/dev/null | grep -E 'task-clock|faults|switches|migrations|elapsed'
    fi
    # user and system CPU seconds, minor faults, involuntary switches
    /usr/bin/time -f '  time: %e s wall, %U s user, %S s system, %R minor faults, %c involuntary switches' \
        $cmd >/dev/null 2>/tmp/profile_count_lines.$$ || true
    cat /tmp/profile_count_lines.$$; rm -f /tmp/profile_count_lines.$$
    if command -v strace >/dev/null 2>&1; then
        strace -f -c -o /tmp/profile_count_lines.$$ $cmd >/dev/null
        awk 'NR <= 2 || /total/ || $4 + 0 >= 5' /tmp/profile_count_lines.$$
        rm -f /tmp/profile_count_lines.$$
    fi
done
