/* Thread pools, tasks and parallel loops against OpenMP (gcc -fopenmp)
 * and against conc's own threads, interleaved over ROUNDS rounds; one
 * REPORT row per comparison (median of the per-round ratios).
 *
 *   1. task spawn+join, one at a time, default pool, vs conc_thread
 *      spawn+join (goal: >= 30x cheaper) and vs `omp task` + `taskwait`
 *      inside parallel/single of 2 threads (goal: <= 1.0x);
 *   2. conc_parallel_for over 2 indices, grain 1, empty body, vs
 *      `omp parallel for` of 2 iterations (goal: <= 1.0x);
 *   3. y = a*x + y over 10M doubles vs `omp parallel for schedule(static)`
 *      (goal: <= 1.1x);
 *   4. a triangular loop (iteration i costs i) vs the serial loop
 *      (goal: >= 1.8x speedup);
 *   5. fib(30), a task per call while n >= 15, vs OpenMP tasks
 *      (goal: <= 1.0x; TBB's task_group is in bench_pool_tbb.cpp);
 *   6. idle cost: CPU time over 1 s of wall time with the default pool
 *      started, idle (goal: <= 1% of a core) and with one tiny task
 *      spawned and joined every millisecond (goal: <= 5%).
 *
 * The idle costs are measured first, in a child process forked before
 * OpenMP starts (libgomp's idle team threads spin, and getrusage would
 * count them).
 *
 * Times are medians of each round's repetitions; the machine may be
 * shared, so compare the ratios, not the absolute figures.
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>

#include "conc.h"
#include "report.h"

#define ROUNDS 7
#define THREADS 2

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec * 1e-6 +
           (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec * 1e-6;
}

static void pause_ms(int ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static volatile uintptr_t sink;

static void *tiny(void *arg) {
    sink = (uintptr_t)arg;
    return arg;
}

static void check(conc_status s, const char *what) {
    if (s != CONC_OK) {
        fprintf(stderr, "%s: %s\n", what, conc_last_error_message());
        exit(1);
    }
}

/* ---- 1. spawn+join one at a time ---------------------------------------- */

static double conc_tasks_ns(int n) {
    double t0 = now();
    for (int i = 0; i < n; i++) {
        conc_task t;
        check(conc_task_spawn(&t, NULL, tiny, (void *)(uintptr_t)i), "conc_task_spawn");
        check(conc_task_join(t, NULL), "conc_task_join");
    }
    return (now() - t0) / n * 1e9;
}

static double conc_threads_ns(int n) {
    double t0 = now();
    for (int i = 0; i < n; i++) {
        conc_thread t;
        check(conc_thread_spawn(&t, tiny, (void *)(uintptr_t)i), "conc_thread_spawn");
        check(conc_thread_join(t, NULL), "conc_thread_join");
    }
    return (now() - t0) / n * 1e9;
}

static double omp_tasks_ns(int n) {
    double t0 = 0, t1 = 0;
#pragma omp parallel num_threads(THREADS)
#pragma omp single
    {
        t0 = now();
        for (int i = 0; i < n; i++) {
#pragma omp task
            sink = (uintptr_t)i;
#pragma omp taskwait
        }
        t1 = now();
    }
    return (t1 - t0) / n * 1e9;
}

/* ---- 2. tiny parallel loops --------------------------------------------- */

static void empty_body(size_t b, size_t e, void *ctx) {
    (void)ctx;
    sink = b + e;
}

static double conc_pfor2_ns(int n) {
    double t0 = now();
    for (int i = 0; i < n; i++) check(conc_parallel_for(NULL, 0, 2, 1, empty_body, NULL), "pfor");
    return (now() - t0) / n * 1e9;
}

static double omp_pfor2_ns(int n) {
    double t0 = now();
    for (int i = 0; i < n; i++) {
#pragma omp parallel for num_threads(THREADS)
        for (int j = 0; j < 2; j++) sink = (uintptr_t)j;
    }
    return (now() - t0) / n * 1e9;
}

/* ---- 3. axpy ------------------------------------------------------------ */

#define AXPY_N 10000000
static double *xs, *ys;

static void axpy_body(size_t b, size_t e, void *ctx) {
    double a = *(double *)ctx;
    for (size_t i = b; i < e; i++) ys[i] = a * xs[i] + ys[i];
}

static double conc_axpy_ms(void) {
    double a = 1.0001, t0 = now();
    check(conc_parallel_for(NULL, 0, AXPY_N, 0, axpy_body, &a), "axpy");
    return (now() - t0) * 1e3;
}

static double omp_axpy_ms(void) {
    double a = 1.0001, t0 = now();
#pragma omp parallel for schedule(static) num_threads(THREADS)
    for (long i = 0; i < AXPY_N; i++) ys[i] = a * xs[i] + ys[i];
    return (now() - t0) * 1e3;
}

/* ---- 4. triangular loop ------------------------------------------------- */

#define TRI_N 20000
static volatile double tri_out[TRI_N];

static void tri_body(size_t b, size_t e, void *ctx) {
    (void)ctx;
    for (size_t i = b; i < e; i++) {
        double s = 0;
        for (size_t j = 0; j < i; j++) s += (double)(j ^ i) * 0.5;
        tri_out[i] = s;
    }
}

static double serial_tri_ms(void) {
    double t0 = now();
    tri_body(0, TRI_N, NULL);
    return (now() - t0) * 1e3;
}

static double conc_tri_ms(void) {
    double t0 = now();
    check(conc_parallel_for(NULL, 0, TRI_N, 0, tri_body, NULL), "tri");
    return (now() - t0) * 1e3;
}

/* The same loop under OpenMP (dynamic, as uneven work needs): shows what
 * the machine allows when its cores are not both free. */
static double omp_tri_ms(void) {
    double t0 = now();
#pragma omp parallel for schedule(dynamic, 64) num_threads(THREADS)
    for (long i = 0; i < TRI_N; i++) tri_body((size_t)i, (size_t)i + 1, NULL);
    return (now() - t0) * 1e3;
}

/* ---- 5. fib ------------------------------------------------------------- */

#define FIB_N 30
#define FIB_CUTOFF 15

static long fib_serial(long n) { return n < 2 ? n : fib_serial(n - 1) + fib_serial(n - 2); }

static void *fib_conc_task(void *arg);

static long fib_conc(long n) {
    if (n < FIB_CUTOFF) return fib_serial(n);
    conc_task t;
    check(conc_task_spawn(&t, NULL, fib_conc_task, (void *)(intptr_t)(n - 1)), "fib spawn");
    long b = fib_conc(n - 2);
    void *a = NULL;
    check(conc_task_join(t, &a), "fib join");
    return (long)(intptr_t)a + b;
}

static void *fib_conc_task(void *arg) { return (void *)(intptr_t)fib_conc((long)(intptr_t)arg); }

static long fib_omp(long n) {
    if (n < FIB_CUTOFF) return fib_serial(n);
    long a, b;
#pragma omp task shared(a)
    a = fib_omp(n - 1);
    b = fib_omp(n - 2);
#pragma omp taskwait
    return a + b;
}

static long fib_result;

static double conc_fib_ms(void) {
    double t0 = now();
    fib_result = fib_conc(FIB_N);
    return (now() - t0) * 1e3;
}

static double omp_fib_ms(void) {
    double t0 = now();
#pragma omp parallel num_threads(THREADS)
#pragma omp single
    fib_result = fib_omp(FIB_N);
    return (now() - t0) * 1e3;
}

/* ---- 6. idle cost ------------------------------------------------------- */

static double idle_percent(void) {
    pause_ms(20);
    double c0 = cpu_seconds(), t0 = now();
    pause_ms(1000);
    return (cpu_seconds() - c0) / (now() - t0) * 100;
}

static double trickle_percent(void) {
    pause_ms(20);
    double c0 = cpu_seconds(), t0 = now();
    for (int i = 0; i < 1000; i++) {
        conc_task t;
        check(conc_task_spawn(&t, NULL, tiny, NULL), "trickle spawn");
        check(conc_task_join(t, NULL), "trickle join");
        pause_ms(1);
    }
    return (cpu_seconds() - c0) / (now() - t0) * 100;
}

/* ---- main --------------------------------------------------------------- */

static double median_of(double (*f)(int), int n, int reps) {
    double v[16];
    for (int i = 0; i < reps; i++) v[i] = f(n);
    return report_median(v, reps);
}

static double median_ms(double (*f)(void), int reps) {
    double v[16];
    for (int i = 0; i < reps; i++) v[i] = f();
    return report_median(v, reps);
}

/* The idle rounds, in a child with no OpenMP threads; results by pipe. */
static void idle_rounds(double *idle, double *trickle) {
    int fds[2];
    if (pipe(fds) != 0) exit(1);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        conc_tasks_ns(1000); /* start the default pool */
        double v[2 * ROUNDS];
        for (int r = 0; r < ROUNDS; r++) v[r] = idle_percent(), v[ROUNDS + r] = trickle_percent();
        _exit(write(fds[1], v, sizeof v) == (ssize_t)sizeof v ? 0 : 1);
    }
    close(fds[1]);
    double v[2 * ROUNDS];
    if (read(fds[0], v, sizeof v) != (ssize_t)sizeof v) exit(1);
    close(fds[0]);
    waitpid(pid, NULL, 0);
    for (int r = 0; r < ROUNDS; r++) idle[r] = v[r], trickle[r] = v[ROUNDS + r];
}

int main(void) {
    printf("bench_pool: %d rounds, default pool of %zu threads, OpenMP teams of %d\n", ROUNDS,
           conc_pool_threads(NULL), THREADS);
    xs = malloc(sizeof(double) * AXPY_N);
    ys = malloc(sizeof(double) * AXPY_N);
    if (xs == NULL || ys == NULL) return 1;
    for (long i = 0; i < AXPY_N; i++) xs[i] = (double)i, ys[i] = 1.0;
    double r_thr[ROUNDS], r_omp_task[ROUNDS], r_pfor[ROUNDS], r_axpy[ROUNDS], r_tri[ROUNDS],
        r_fib[ROUNDS], r_idle[ROUNDS], r_trickle[ROUNDS];
    idle_rounds(r_idle, r_trickle);
    printf("idle rounds (%% of a core over 1 s): idle");
    for (int r = 0; r < ROUNDS; r++) printf(" %.3f", r_idle[r]);
    printf("; a tiny task per ms");
    for (int r = 0; r < ROUNDS; r++) printf(" %.2f", r_trickle[r]);
    printf("\n");
    /* Warm up both runtimes. */
    conc_tasks_ns(1000);
    omp_tasks_ns(1000);

    double m_task[ROUNDS], m_thr[ROUNDS], m_otask[ROUNDS], m_pfor[ROUNDS], m_opfor[ROUNDS],
        m_axpy[ROUNDS], m_oaxpy[ROUNDS], m_tri[ROUNDS], m_stri[ROUNDS], m_fib[ROUNDS],
        m_ofib[ROUNDS], m_otri[ROUNDS], r_otri[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        m_task[r] = median_of(conc_tasks_ns, 20000, 5);
        pause_ms(5);
        m_thr[r] = median_of(conc_threads_ns, 1000, 5);
        pause_ms(5);
        m_otask[r] = median_of(omp_tasks_ns, 20000, 5);
        pause_ms(5);
        double again = median_of(conc_tasks_ns, 20000, 5);
        m_task[r] = (m_task[r] + again) / 2;
        r_thr[r] = m_thr[r] / m_task[r];
        r_omp_task[r] = m_task[r] / m_otask[r];

        pause_ms(5);
        m_pfor[r] = median_of(conc_pfor2_ns, 20000, 5);
        pause_ms(5);
        m_opfor[r] = median_of(omp_pfor2_ns, 20000, 5);
        r_pfor[r] = m_pfor[r] / m_opfor[r];

        pause_ms(5);
        m_axpy[r] = median_ms(conc_axpy_ms, 5);
        pause_ms(5);
        m_oaxpy[r] = median_ms(omp_axpy_ms, 5);
        r_axpy[r] = m_axpy[r] / m_oaxpy[r];

        pause_ms(5);
        m_stri[r] = median_ms(serial_tri_ms, 3);
        m_tri[r] = median_ms(conc_tri_ms, 3);
        r_tri[r] = m_stri[r] / m_tri[r];
        pause_ms(5);
        m_otri[r] = median_ms(omp_tri_ms, 3);
        r_otri[r] = m_stri[r] / m_otri[r];

        pause_ms(5);
        m_fib[r] = median_ms(conc_fib_ms, 3);
        if (fib_result != 832040) return 1;
        pause_ms(5);
        m_ofib[r] = median_ms(omp_fib_ms, 3);
        if (fib_result != 832040) return 1;
        r_fib[r] = m_fib[r] / m_ofib[r];

        printf("round %d: task %.0f ns, thread %.0f ns, omp task %.0f ns | pfor2 %.0f vs omp %.0f ns"
               " | axpy %.2f vs omp %.2f ms | tri %.1f vs serial %.1f (omp %.1f) ms | fib %.1f vs omp %.1f ms"
               "\n",
               r, m_task[r], m_thr[r], m_otask[r], m_pfor[r], m_opfor[r], m_axpy[r], m_oaxpy[r],
               m_tri[r], m_stri[r], m_otri[r], m_fib[r], m_ofib[r]);
        fflush(stdout);
    }
    report_row("task spawn+join vs thread spawn+join (x cheaper)", report_median(m_task, ROUNDS),
               report_median(m_thr, ROUNDS), "ns", 30, "higher", r_thr, ROUNDS);
    report_row("task spawn+join vs omp task+taskwait", report_median(m_task, ROUNDS),
               report_median(m_otask, ROUNDS), "ns", 1.0, "lower", r_omp_task, ROUNDS);
    report_row("parallel_for 2 indices vs omp parallel for", report_median(m_pfor, ROUNDS),
               report_median(m_opfor, ROUNDS), "ns", 1.0, "lower", r_pfor, ROUNDS);
    report_row("axpy 10M vs omp schedule(static)", report_median(m_axpy, ROUNDS),
               report_median(m_oaxpy, ROUNDS), "ms", 1.1, "lower", r_axpy, ROUNDS);
    report_row("triangular loop speedup vs serial", report_median(m_tri, ROUNDS),
               report_median(m_stri, ROUNDS), "ms", 1.8, "higher", r_tri, ROUNDS);
    printf("OpenMP's speedup on the same triangular loop (schedule(dynamic, 64)): %.2f\n",
           report_median(r_otri, ROUNDS));
    report_row("fib(30) tasks vs omp tasks", report_median(m_fib, ROUNDS),
               report_median(m_ofib, ROUNDS), "ms", 1.0, "lower", r_fib, ROUNDS);
    double idle_budget[ROUNDS], trickle_budget[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) idle_budget[r] = r_idle[r], trickle_budget[r] = r_trickle[r];
    report_row("idle pool, CPU over 1 s (% of a core)", report_median(idle_budget, ROUNDS), 1.0,
               "%", 1.0, "lower", r_idle, ROUNDS);
    report_row("a tiny task per ms, CPU over 1 s (% of a core)",
               report_median(trickle_budget, ROUNDS), 5.0, "%", 5.0, "lower", r_trickle, ROUNDS);
    free(xs);
    free(ys);
    return 0;
}
