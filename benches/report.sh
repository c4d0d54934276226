#!/bin/sh
# benches/report.sh ROWS OUTDIR: `make bench`'s closing table.
#
# ROWS holds the lines the benchmarks printed: `REPORT<TAB>name<TAB>conc
# <TAB>anchor<TAB>unit<TAB>ratio<TAB>goal<TAB>better<TAB>rounds<TAB>min<TAB>max`
# (see benches/report.h), and `skipped: ...` lines. This prints one table,
# and writes it to OUTDIR/report.md and, machine-readable, to
# OUTDIR/report.json (per row: name, conc, anchor, unit, ratio, goal,
# better, rounds, min, max, and met: whether the median ratio meets the
# goal). POSIX sh and awk only.
set -eu

rows=$1
out=$2
mkdir -p "$out"

awk -F '\t' -v md="$out/report.md" -v json="$out/report.json" '
function jstr(s) {
    gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); gsub(/\t/, " ", s)
    return "\"" s "\""
}
function jnum(s) {
    # Numbers as printed by %g/%f; anything else (nan, inf) becomes null.
    return (s ~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/) ? s + 0 : "null"
}
function met(ratio, goal, better) {
    if (better == "higher") return ratio + 0 >= goal + 0 ? "yes" : "no"
    return ratio + 0 <= goal + 0 ? "yes" : "no"
}
$1 == "REPORT" && NF >= 11 {
    n++
    name[n] = $2; conc[n] = $3; anchor[n] = $4; unit[n] = $5; ratio[n] = $6
    goal[n] = $7; better[n] = $8; rounds[n] = $9; lo[n] = $10; hi[n] = $11
    ok[n] = met($6, $7, $8)
    next
}
/^skipped: / { ns++; skip[ns] = $0 }
END {
    head = "| benchmark | conc | anchor | unit | ratio | goal | better | met | rounds | min | max |"
    rule = "|---|---:|---:|---|---:|---:|---|---|---:|---:|---:|"
    print head > md
    print rule > md
    for (i = 1; i <= n; i++) {
        goalsym = (better[i] == "higher" ? ">= " : "<= ") goal[i]
        printf "| %s | %s | %s | %s | %.3f | %s | %s | %s | %s | %.3f | %.3f |\n", \
            name[i], conc[i], anchor[i], unit[i], ratio[i], goalsym, better[i], ok[i], \
            rounds[i], lo[i], hi[i] > md
    }
    if (ns) {
        print "" > md
        for (i = 1; i <= ns; i++) print "- " skip[i] > md
    }
    close(md)

    print "{" > json
    print "  \"rows\": [" > json
    for (i = 1; i <= n; i++) {
        printf "    {\"name\": %s, \"conc\": %s, \"anchor\": %s, \"unit\": %s, \"ratio\": %s, " \
               "\"goal\": %s, \"better\": %s, \"rounds\": %s, \"min\": %s, \"max\": %s, " \
               "\"met\": %s}%s\n", \
            jstr(name[i]), jnum(conc[i]), jnum(anchor[i]), jstr(unit[i]), jnum(ratio[i]), \
            jnum(goal[i]), jstr(better[i]), jnum(rounds[i]), jnum(lo[i]), jnum(hi[i]), \
            (ok[i] == "yes" ? "true" : "false"), (i < n ? "," : "") > json
    }
    print "  ]," > json
    printf "  \"skipped\": [" > json
    for (i = 1; i <= ns; i++) printf "%s%s", jstr(substr(skip[i], 10)), (i < ns ? ", " : "") > json
    print "]" > json
    print "}" > json
    close(json)

    # The table on the terminal, columns aligned.
    w = 9
    for (i = 1; i <= n; i++) if (length(name[i]) > w) w = length(name[i])
    printf "%-" w "s %12s %12s %-8s %8s %9s %-6s %-4s %6s %7s %7s\n", "benchmark", "conc", \
        "anchor", "unit", "ratio", "goal", "better", "met", "rounds", "min", "max"
    for (i = 1; i <= n; i++) {
        goalsym = (better[i] == "higher" ? ">=" : "<=") goal[i]
        printf "%-" w "s %12s %12s %-8s %8.3f %9s %-6s %-4s %6s %7.3f %7.3f\n", name[i], \
            conc[i], anchor[i], unit[i], ratio[i], goalsym, better[i], ok[i], rounds[i], \
            lo[i], hi[i]
    }
    for (i = 1; i <= ns; i++) print skip[i]
    if (n == 0) print "(no benchmark printed a REPORT row)"
}' "$rows"

echo "report: $out/report.md, $out/report.json"
