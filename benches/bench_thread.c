/* Benchmark: conc_thread_spawn + conc_thread_join against raw
 * pthread_create + pthread_join, in the same run.
 *
 * Each round times OPS spawn+join pairs of a trivial thread with each API,
 * one pair at a time, alternating between the two APIs pair by pair (and
 * which goes first), so that changes in the machine's load hit both alike.
 * A round's figure for an API is the median of its pairs, which a pair
 * slowed by preemption does not move; reported are the medians over
 * ROUNDS rounds, and the median of the per-round ratios conc/pthread
 * (goal: conc within 5% of raw pthreads). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "conc.h"
#include "report.h"

enum { ROUNDS = 15, OPS = 2000 };

static void *trivial(void *arg) { return arg; }

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* ns taken by one spawn+join through conc. */
static double pair_conc(uintptr_t i) {
    double t0 = now_ns();
    conc_thread t;
    void *r = NULL;
    if (conc_thread_spawn(&t, trivial, (void *)i) != CONC_OK || conc_thread_join(t, &r) != CONC_OK ||
        (uintptr_t)r != i) {
        fprintf(stderr, "conc spawn/join failed: %s\n", conc_last_error_message());
        exit(1);
    }
    return now_ns() - t0;
}

/* ns taken by one pthread_create+pthread_join. */
static double pair_pthread(uintptr_t i) {
    double t0 = now_ns();
    pthread_t t;
    void *r = NULL;
    if (pthread_create(&t, NULL, trivial, (void *)i) != 0 || pthread_join(t, &r) != 0 ||
        (uintptr_t)r != i) {
        fprintf(stderr, "pthread_create/join failed\n");
        exit(1);
    }
    return now_ns() - t0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One round: the median ns of a pair with each API, interleaved. */
static void run_round(int r, double *conc, double *pth) {
    static double c[OPS], p[OPS];
    for (int i = 0; i < OPS; i++) {
        if ((i + r) % 2 == 0) {
            c[i] = pair_conc((uintptr_t)i);
            p[i] = pair_pthread((uintptr_t)i);
        } else {
            p[i] = pair_pthread((uintptr_t)i);
            c[i] = pair_conc((uintptr_t)i);
        }
    }
    *conc = median(c, OPS);
    *pth = median(p, OPS);
}

int main(void) {
    double conc[ROUNDS], pth[ROUNDS], paired[ROUNDS];
    /* Warm up both (glibc's stack cache, page faults, lazy binding). */
    run_round(0, &conc[0], &pth[0]);
    for (int r = 0; r < ROUNDS; r++) {
        run_round(r, &conc[r], &pth[r]);
        paired[r] = conc[r] / pth[r];
    }
    double c = median(conc, ROUNDS), p = median(pth, ROUNDS);
    /* The ratio compares each round's two figures, measured side by side,
     * so a round slowed as a whole by other load does not skew it. */
    double ratio = median(paired, ROUNDS); /* sorts paired */
    printf("%d rounds x %d spawn+join pairs of a trivial thread per API, alternating\n", ROUNDS,
           OPS);
    printf("spawn+join: conc %.2f us, pthread %.2f us, ratio %.3f (goal <= 1.05)\n", c / 1e3,
           p / 1e3, ratio);
    printf("  (medians over rounds; ratio: median of the per-round ratios, which range %.3f..%.3f)\n",
           paired[0], paired[ROUNDS - 1]);
    report_row("thread spawn+join vs pthread", c / 1e3, p / 1e3, "us", 1.05, "lower", paired,
               ROUNDS);
    return 0;
}
