/* Shared list benchmark: conc_list_add_i64 against its anchor in the same
 * run.
 *
 * Two processes add 1 to the same element of a shared I64 list, ADDS times
 * each, through conc_list_add_i64; the anchor is the same two processes
 * doing C11 atomic_fetch_add on a word of the same shared memory (the
 * list's segment, attached with conc_shm_open, at an element 256 bytes
 * away so the two never share a cache line). Both sides start together on
 * a shared flag and are timed to the last one done: ns per add, per
 * process. Rounds alternate which side goes first; the ratio is per round,
 * the report the median. Goal: conc / atomic <= 1.2. The totals are checked
 * after every round, so a lost add is an error, not a figure.
 *
 * Run from the top of the repository (`make bench`). */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conc.h"
#include "report.h"

#define ADDS 2000000 /* per process and round */
#define ROUNDS 9
#define PROCS 2
#define CONC_INDEX 0
#define ANCHOR_INDEX 32 /* 256 bytes past CONC_INDEX */
#define HEADER_BYTES 24 /* conc's list header: elements start here */

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void conc_die(const char *what) {
    fprintf(stderr, "bench_list: %s: %s\n", what, conc_last_error_message());
    exit(1);
}

struct shared {
    _Atomic int ready;   /* children waiting at the start line */
    _Atomic int go;      /* the start signal */
    _Atomic int64_t *word; /* the anchor's word (same address in every child) */
};

static conc_list *list;
static struct shared *ctl; /* in the control segment */

static void run_side(int use_conc) {
    for (int i = 0; i < ADDS; i++) {
        if (use_conc) {
            if (conc_list_add_i64(list, CONC_INDEX, 1, NULL) != CONC_OK) {
                conc_die("conc_list_add_i64");
            }
        } else {
            atomic_fetch_add(ctl->word, 1);
        }
    }
}

/* Both processes of one side, timed from the start signal to the last
 * exit. Returns ns per add, per process. */
static double time_side(int use_conc) {
    atomic_store(&ctl->ready, 0);
    atomic_store(&ctl->go, 0);
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        if (pids[p] < 0) {
            perror("fork");
            exit(1);
        }
        if (pids[p] == 0) {
            atomic_fetch_add(&ctl->ready, 1);
            while (!atomic_load(&ctl->go)) {
            }
            run_side(use_conc);
            _exit(0);
        }
    }
    while (atomic_load(&ctl->ready) < PROCS) {
    }
    double t0 = now_ns();
    atomic_store(&ctl->go, 1);
    for (int p = 0; p < PROCS; p++) {
        int status = 0;
        if (waitpid(pids[p], &status, 0) < 0 || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0) {
            fprintf(stderr, "bench_list: a child failed\n");
            exit(1);
        }
    }
    return (now_ns() - t0) / ADDS;
}

int main(void) {
    if (conc_list_create(&list, NULL, CONC_TYPE_I64, ANCHOR_INDEX + 1) != CONC_OK) {
        conc_die("conc_list_create");
    }
    conc_shm *seg = NULL, *control = NULL;
    if (conc_shm_open(&seg, conc_list_name(list)) != CONC_OK) {
        conc_die("conc_shm_open");
    }
    if (conc_shm_create(&control, NULL, sizeof(struct shared)) != CONC_OK) {
        conc_die("conc_shm_create");
    }
    (void)conc_shm_unlink(control);
    ctl = (struct shared *)(void *)conc_shm_buf(control);
    ctl->word = (_Atomic int64_t *)(void *)(conc_shm_buf(seg) + HEADER_BYTES +
                                             ANCHOR_INDEX * sizeof(int64_t));

    /* Warm-up, then interleaved rounds. */
    time_side(1);
    time_side(0);
    double conc_t[ROUNDS], anchor_t[ROUNDS], ratio[ROUNDS];
    int64_t want = (int64_t)PROCS * ADDS; /* in each word, after the warm-up */
    for (int r = 0; r < ROUNDS; r++) {
        if (r % 2 == 0) {
            conc_t[r] = time_side(1);
            anchor_t[r] = time_side(0);
        } else {
            anchor_t[r] = time_side(0);
            conc_t[r] = time_side(1);
        }
        ratio[r] = conc_t[r] / anchor_t[r];
        want += (int64_t)PROCS * ADDS;
        int64_t got = 0;
        if (conc_list_get_i64(list, CONC_INDEX, &got) != CONC_OK) {
            conc_die("conc_list_get_i64");
        }
        if (got != want || atomic_load(ctl->word) != want) {
            fprintf(stderr, "bench_list: lost adds: %lld and %lld, want %lld\n", (long long)got,
                    (long long)atomic_load(ctl->word), (long long)want);
            (void)conc_list_unlink(list);
            return 1;
        }
    }
    double ratios_copy[ROUNDS];
    memcpy(ratios_copy, ratio, sizeof ratio);
    double c = report_median(conc_t, ROUNDS), a = report_median(anchor_t, ROUNDS);
    printf("atomic add to one shared element from %d processes (%d rounds x %d adds each, "
           "median ns per add, per process):\n",
           PROCS, ROUNDS, ADDS);
    printf("  conc_list_add_i64   %7.2f ns\n", c);
    printf("  atomic_fetch_add    %7.2f ns\n", a);
    printf("  ratio conc/atomic = %.3f (median of per-round ratios %.3f; goal <= 1.2)\n", c / a,
           report_median(ratios_copy, ROUNDS));
    report_row("list add_i64 from 2 processes vs C11 atomic_fetch_add", c, a, "ns/add", 1.2,
               "lower", ratio, ROUNDS);

    (void)conc_shm_close(seg);
    (void)conc_shm_close(control);
    (void)conc_list_unlink(list);
    (void)conc_list_close(list);
    return 0;
}
