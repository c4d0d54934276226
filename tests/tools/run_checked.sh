#!/usr/bin/env bash
# Runs programs under a checker (a sanitizer build, or valgrind) and fails
# if any of them fails or if any process they started printed a report.
#
#   tests/tools/run_checked.sh LABEL LOGDIR [WRAPPER...] -- PROGRAM...
#
# A C test (build/.../test_*) runs from tests/c/, an example from
# c_examples/, as `cargo test` and `make run-examples` run them. Each
# program's output goes to LOGDIR/NAME.log (valgrind's own reports to
# LOGDIR/NAME.vg.PID.log, one per process, forked children included) and
# is printed when it fails. Reports are looked for in the logs, because a
# forked child ends with _exit and a report there does not always reach
# the exit status of the program that started it.
set -u
label=$1 logdir=$2
shift 2
wrapper=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do wrapper+=("$1"); shift; done
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$logdir"
logdir=$(cd "$logdir" && pwd)

# What a report looks like, from each checker.
reports='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: ThreadSanitizer|ThreadSanitizer: reported|ERROR SUMMARY: [1-9]|definitely lost: [1-9]'

passed=0 failed=0
for prog in "$@"; do
  name=$(basename "$prog")
  case "$prog" in
    */examples/*) dir=$root/c_examples ;;
    *) dir=$root/tests/c ;;
  esac
  abs=$(cd "$(dirname "$prog")" && pwd)/$name
  log=$logdir/$name.log
  rm -f "$log" "$logdir/$name".vg.*.log
  args=()
  for w in "${wrapper[@]+"${wrapper[@]}"}"; do args+=("${w//%NAME%/$logdir/$name}"); done
  start=$(date +%s)
  (cd "$dir" && "${args[@]+"${args[@]}"}" "$abs" </dev/null >"$log" 2>&1)
  rc=$?
  secs=$(( $(date +%s) - start ))
  found=$(cat "$log" "$logdir/$name".vg.*.log 2>/dev/null | grep -E "$reports" | head -5)
  if [ $rc -eq 0 ] && [ -z "$found" ]; then
    echo "ok     $label $name (${secs}s)"
    passed=$((passed + 1))
  else
    echo "FAILED $label $name (exit $rc, ${secs}s)"
    sed 's/^/    /' "$log" | tail -60
    for v in "$logdir/$name".vg.*.log; do
      [ -s "$v" ] && { echo "    -- $v"; sed 's/^/    /' "$v" | tail -60; }
    done
    failed=$((failed + 1))
  fi
done
echo "$label: $passed passed, $failed failed"
[ $failed -eq 0 ]
