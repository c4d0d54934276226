/* The row every benchmark prints for `make bench`'s report.
 *
 * A benchmark runs its conc/anchor pairs interleaved for `rounds` rounds
 * (at least 7), keeps one ratio per round, and calls report_row() once per
 * comparison. The line it prints starts with "REPORT" and holds, separated
 * by tabs: name, conc's figure, the anchor's figure, the unit, the median
 * ratio, the goal, which way is better ("lower" or "higher"), the number of
 * rounds, and the smallest and largest ratio. `make bench` collects these
 * lines into one table (target/bench/report.md and report.json). */
#ifndef CONC_BENCH_REPORT_H
#define CONC_BENCH_REPORT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int report_cmp_(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (sorts v). */
__attribute__((unused)) static double report_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, report_cmp_);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Prints the REPORT line for one comparison. `conc` and `anchor` are the
 * figures shown (medians over the rounds, in `unit`); `ratios` holds the
 * per-round ratios (sorted here). `better` is "lower" or "higher". */
__attribute__((unused)) static void report_row(const char *name, double conc, double anchor,
                                               const char *unit, double goal,
                                               const char *better, double *ratios, int rounds) {
    double med = report_median(ratios, rounds);
    printf("REPORT\t%s\t%.6g\t%.6g\t%s\t%.4f\t%.3g\t%s\t%d\t%.4f\t%.4f\n", name, conc, anchor, unit,
           med, goal, better, rounds, ratios[0], ratios[rounds - 1]);
    fflush(stdout);
}

/* Prints a REPORT-less note that a baseline is missing. */
__attribute__((unused)) static void report_skip(const char *name, const char *why) {
    printf("skipped: %s (%s)\n", name, why);
    fflush(stdout);
}

#endif
