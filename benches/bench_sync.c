/* Synchronization benchmarks, each against its baseline in the same run,
 * interleaved (the order alternates from round to round), medians over the
 * rounds, one REPORT row per comparison (ratio = conc / baseline, lower is
 * better):
 *
 * 1. Uncontended lock + unlock, one thread: conc_mutex against glibc's
 *    default pthread_mutex_t (goal <= 1.0), and against a robust,
 *    process-shared pthread mutex, the closest glibc equivalent of a
 *    conc_mutex (goal <= 0.8).
 * 2. Two threads each doing 10 million increments of one counter under
 *    the lock: conc_mutex against pthread_mutex_t (goal <= 1.0).
 * 3. Round trips between two processes (20,000 per round; a forked child
 *    answers each ping with a pong; the memory is a shared anonymous map):
 *    - a conc_sem pair against a process-shared sem_t pair (goal <= 1.0);
 *    - a conc_cond pair + conc_mutex against a process-shared
 *      pthread_cond_t pair + pthread_mutex_t (goal <= 1.0);
 *    - the conc_sem pair against a pipe pair, one byte each way
 *      (goal <= 0.5).
 *
 * Times are wall-clock on CLOCK_MONOTONIC; nothing asserts on them. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conc.h"
#include "report.h"

#define ROUNDS 9                    /* at least 7 */
#define UNCONTENDED_OPS 2000000     /* lock+unlock pairs per sample */
#define CONTENDED_OPS 10000000      /* increments per thread per sample */
#define CONTENDED_ROUNDS 7
#define ROUND_TRIPS 20000           /* per sample */

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what, int err) {
    fprintf(stderr, "bench_sync: %s: %s\n", what, strerror(err));
    exit(1);
}

static void conc_die(const char *what) {
    fprintf(stderr, "bench_sync: %s: %s\n", what, conc_last_error_message());
    exit(1);
}

static void check_pthread(int err, const char *what) {
    if (err != 0) die(what, err);
}

static double median_of(double *v, int n) {
    double copy[64];
    memcpy(copy, v, (size_t)n * sizeof *v);
    return report_median(copy, n);
}

/* ---- 1. uncontended --------------------------------------------------- */

static conc_mutex c_mutex;
static pthread_mutex_t p_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t robust_mutex;

static double uncontended_conc(void) {
    double t0 = now_ns();
    for (int i = 0; i < UNCONTENDED_OPS; i++) {
        if (conc_mutex_lock(&c_mutex) != CONC_OK) conc_die("conc_mutex_lock");
        if (conc_mutex_unlock(&c_mutex) != CONC_OK) conc_die("conc_mutex_unlock");
    }
    return (now_ns() - t0) / UNCONTENDED_OPS;
}

static double uncontended_pthread(pthread_mutex_t *m) {
    double t0 = now_ns();
    for (int i = 0; i < UNCONTENDED_OPS; i++) {
        int err = pthread_mutex_lock(m);
        if (err != 0) die("pthread_mutex_lock", err);
        err = pthread_mutex_unlock(m);
        if (err != 0) die("pthread_mutex_unlock", err);
    }
    return (now_ns() - t0) / UNCONTENDED_OPS;
}

/* `threaded`: whether the program has started a thread yet. glibc takes
 * a shortcut in a program that never started one: its default mutex then
 * locks and unlocks with plain, non-atomic instructions (it cannot be
 * shared with anyone), while a conc_mutex, which may sit in memory shared
 * with other processes, always uses atomic ones. A program uses a mutex
 * because it has threads (or processes), so the row that counts is the
 * one measured after a thread was started; the single-threaded figure is
 * shown too. */
static void bench_uncontended(int threaded) {
    pthread_mutexattr_t attr;
    check_pthread(pthread_mutexattr_init(&attr), "pthread_mutexattr_init");
    check_pthread(pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST), "setrobust");
    check_pthread(pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED), "setpshared");
    check_pthread(pthread_mutex_init(&robust_mutex, &attr), "pthread_mutex_init");
    pthread_mutexattr_destroy(&attr);

    uncontended_conc(); /* warm up */
    uncontended_pthread(&p_mutex);
    uncontended_pthread(&robust_mutex);
    double c[ROUNDS], p[ROUNDS], r[ROUNDS], vs_p[ROUNDS], vs_r[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        switch (i % 3) {
        case 0:
            c[i] = uncontended_conc();
            p[i] = uncontended_pthread(&p_mutex);
            r[i] = uncontended_pthread(&robust_mutex);
            break;
        case 1:
            p[i] = uncontended_pthread(&p_mutex);
            r[i] = uncontended_pthread(&robust_mutex);
            c[i] = uncontended_conc();
            break;
        default:
            r[i] = uncontended_pthread(&robust_mutex);
            c[i] = uncontended_conc();
            p[i] = uncontended_pthread(&p_mutex);
            break;
        }
        vs_p[i] = c[i] / p[i];
        vs_r[i] = c[i] / r[i];
    }
    double cm = median_of(c, ROUNDS), pm = median_of(p, ROUNDS), rm = median_of(r, ROUNDS);
    printf("uncontended lock+unlock, one thread, %s (%d rounds x %d pairs, median):\n",
           threaded ? "in a program that has started a thread"
                    : "in a program that never started one (glibc skips atomics)",
           ROUNDS, UNCONTENDED_OPS);
    printf("  conc_mutex                       %7.2f ns\n", cm);
    printf("  pthread_mutex_t (default)        %7.2f ns\n", pm);
    printf("  pthread_mutex_t (robust, pshared) %6.2f ns\n", rm);
    if (threaded) {
        report_row("sync: uncontended lock+unlock vs pthread_mutex_t", cm, pm, "ns", 1.0, "lower",
                   vs_p, ROUNDS);
        report_row("sync: uncontended lock+unlock vs robust pshared pthread mutex", cm, rm, "ns",
                   0.8, "lower", vs_r, ROUNDS);
    } else {
        report_row("sync: uncontended lock+unlock vs pthread_mutex_t, never-threaded program", cm,
                   pm, "ns", 1.0, "lower", vs_p, ROUNDS);
    }
    pthread_mutex_destroy(&robust_mutex);
}

static void *idle_thread(void *arg) { return arg; }

/* ---- 2. two threads, contended ---------------------------------------- */

static long contended_counter;

static void *contended_conc_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < CONTENDED_OPS; i++) {
        if (conc_mutex_lock(&c_mutex) != CONC_OK) conc_die("conc_mutex_lock");
        contended_counter++;
        if (conc_mutex_unlock(&c_mutex) != CONC_OK) conc_die("conc_mutex_unlock");
    }
    return NULL;
}

static void *contended_pthread_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < CONTENDED_OPS; i++) {
        int err = pthread_mutex_lock(&p_mutex);
        if (err != 0) die("pthread_mutex_lock", err);
        contended_counter++;
        err = pthread_mutex_unlock(&p_mutex);
        if (err != 0) die("pthread_mutex_unlock", err);
    }
    return NULL;
}

/* Two threads running `body`; returns the wall time in seconds. */
static double contended(void *(*body)(void *)) {
    contended_counter = 0;
    pthread_t a, b;
    double t0 = now_ns();
    check_pthread(pthread_create(&a, NULL, body, NULL), "pthread_create");
    check_pthread(pthread_create(&b, NULL, body, NULL), "pthread_create");
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    double t = (now_ns() - t0) / 1e9;
    if (contended_counter != 2L * CONTENDED_OPS) {
        fprintf(stderr, "bench_sync: %ld increments counted, expected %ld\n", contended_counter,
                2L * CONTENDED_OPS);
        exit(1);
    }
    return t;
}

static void bench_contended(void) {
    double c[CONTENDED_ROUNDS], p[CONTENDED_ROUNDS], ratio[CONTENDED_ROUNDS];
    for (int i = 0; i < CONTENDED_ROUNDS; i++) {
        if (i % 2 == 0) {
            c[i] = contended(contended_conc_thread);
            p[i] = contended(contended_pthread_thread);
        } else {
            p[i] = contended(contended_pthread_thread);
            c[i] = contended(contended_conc_thread);
        }
        ratio[i] = c[i] / p[i];
    }
    double cm = median_of(c, CONTENDED_ROUNDS), pm = median_of(p, CONTENDED_ROUNDS);
    printf("2 threads x %d locked increments (%d rounds, median; counts checked exact):\n",
           CONTENDED_OPS, CONTENDED_ROUNDS);
    printf("  conc_mutex       %7.3f s\n", cm);
    printf("  pthread_mutex_t  %7.3f s\n", pm);
    report_row("sync: 2 threads x 10M locked increments vs pthread_mutex_t", cm, pm, "s", 1.0,
               "lower", ratio, CONTENDED_ROUNDS);
}

/* ---- 3. round trips between two processes ----------------------------- */

/* Everything both processes use, in one shared anonymous map. */
struct shared {
    conc_sem c_ping, c_pong;
    sem_t p_ping, p_pong;
    conc_mutex c_lock;
    conc_cond c_ping_cv, c_pong_cv;
    uint32_t c_turn; /* 1: the child's turn, 0: the parent's; under c_lock */
    pthread_mutex_t p_lock;
    pthread_cond_t p_ping_cv, p_pong_cv;
    uint32_t p_turn; /* the same under p_lock */
    int pipe_ping[2], pipe_pong[2];
};

static struct shared *sh;

enum kind { CONC_SEM, POSIX_SEM, CONC_COND, PTHREAD_COND, PIPE };

/* The child's side: answers `n` pings. */
static void serve(enum kind kind, int n) {
    char byte;
    switch (kind) {
    case CONC_SEM:
        for (int i = 0; i < n; i++) {
            if (conc_sem_wait(&sh->c_ping) != CONC_OK) conc_die("conc_sem_wait");
            if (conc_sem_post(&sh->c_pong) != CONC_OK) conc_die("conc_sem_post");
        }
        break;
    case POSIX_SEM:
        for (int i = 0; i < n; i++) {
            while (sem_wait(&sh->p_ping) != 0) {
                if (errno != EINTR) die("sem_wait", errno);
            }
            if (sem_post(&sh->p_pong) != 0) die("sem_post", errno);
        }
        break;
    case CONC_COND:
        if (conc_mutex_lock(&sh->c_lock) != CONC_OK) conc_die("conc_mutex_lock");
        for (int i = 0; i < n; i++) {
            while (sh->c_turn != 1) {
                if (conc_cond_wait(&sh->c_ping_cv, &sh->c_lock) != CONC_OK) {
                    conc_die("conc_cond_wait");
                }
            }
            sh->c_turn = 0;
            if (conc_cond_signal(&sh->c_pong_cv) != CONC_OK) conc_die("conc_cond_signal");
        }
        if (conc_mutex_unlock(&sh->c_lock) != CONC_OK) conc_die("conc_mutex_unlock");
        break;
    case PTHREAD_COND:
        check_pthread(pthread_mutex_lock(&sh->p_lock), "pthread_mutex_lock");
        for (int i = 0; i < n; i++) {
            while (sh->p_turn != 1) {
                check_pthread(pthread_cond_wait(&sh->p_ping_cv, &sh->p_lock), "pthread_cond_wait");
            }
            sh->p_turn = 0;
            check_pthread(pthread_cond_signal(&sh->p_pong_cv), "pthread_cond_signal");
        }
        check_pthread(pthread_mutex_unlock(&sh->p_lock), "pthread_mutex_unlock");
        break;
    case PIPE:
        for (int i = 0; i < n; i++) {
            if (read(sh->pipe_ping[0], &byte, 1) != 1) die("read", errno);
            if (write(sh->pipe_pong[1], &byte, 1) != 1) die("write", errno);
        }
        break;
    }
}

/* The parent's side: `n` pings, each waiting for its pong. */
static void ping(enum kind kind, int n) {
    char byte = 'x';
    switch (kind) {
    case CONC_SEM:
        for (int i = 0; i < n; i++) {
            if (conc_sem_post(&sh->c_ping) != CONC_OK) conc_die("conc_sem_post");
            if (conc_sem_wait(&sh->c_pong) != CONC_OK) conc_die("conc_sem_wait");
        }
        break;
    case POSIX_SEM:
        for (int i = 0; i < n; i++) {
            if (sem_post(&sh->p_ping) != 0) die("sem_post", errno);
            while (sem_wait(&sh->p_pong) != 0) {
                if (errno != EINTR) die("sem_wait", errno);
            }
        }
        break;
    case CONC_COND:
        if (conc_mutex_lock(&sh->c_lock) != CONC_OK) conc_die("conc_mutex_lock");
        for (int i = 0; i < n; i++) {
            sh->c_turn = 1;
            if (conc_cond_signal(&sh->c_ping_cv) != CONC_OK) conc_die("conc_cond_signal");
            while (sh->c_turn != 0) {
                if (conc_cond_wait(&sh->c_pong_cv, &sh->c_lock) != CONC_OK) {
                    conc_die("conc_cond_wait");
                }
            }
        }
        if (conc_mutex_unlock(&sh->c_lock) != CONC_OK) conc_die("conc_mutex_unlock");
        break;
    case PTHREAD_COND:
        check_pthread(pthread_mutex_lock(&sh->p_lock), "pthread_mutex_lock");
        for (int i = 0; i < n; i++) {
            sh->p_turn = 1;
            check_pthread(pthread_cond_signal(&sh->p_ping_cv), "pthread_cond_signal");
            while (sh->p_turn != 0) {
                check_pthread(pthread_cond_wait(&sh->p_pong_cv, &sh->p_lock), "pthread_cond_wait");
            }
        }
        check_pthread(pthread_mutex_unlock(&sh->p_lock), "pthread_mutex_unlock");
        break;
    case PIPE:
        for (int i = 0; i < n; i++) {
            if (write(sh->pipe_ping[1], &byte, 1) != 1) die("write", errno);
            if (read(sh->pipe_pong[0], &byte, 1) != 1) die("read", errno);
        }
        break;
    }
}

/* One sample: a fresh child answers ROUND_TRIPS + 1 pings; the first one
 * (the child starting up) is not timed. Returns us per round trip. */
static double round_trips(enum kind kind) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork", errno);
    if (pid == 0) {
        serve(kind, ROUND_TRIPS + 1);
        _exit(0);
    }
    ping(kind, 1);
    double t0 = now_ns();
    ping(kind, ROUND_TRIPS);
    double t = (now_ns() - t0) / ROUND_TRIPS / 1e3;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) die("waitpid", errno);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_sync: the answering child failed\n");
        exit(1);
    }
    return t;
}

static void setup_shared(void) {
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) die("mmap", errno);
    /* conc's objects: the zero bytes of the fresh map. */
    if (sem_init(&sh->p_ping, 1, 0) != 0 || sem_init(&sh->p_pong, 1, 0) != 0) {
        die("sem_init", errno);
    }
    pthread_mutexattr_t ma;
    pthread_condattr_t ca;
    check_pthread(pthread_mutexattr_init(&ma), "pthread_mutexattr_init");
    check_pthread(pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED), "setpshared");
    check_pthread(pthread_mutex_init(&sh->p_lock, &ma), "pthread_mutex_init");
    pthread_mutexattr_destroy(&ma);
    check_pthread(pthread_condattr_init(&ca), "pthread_condattr_init");
    check_pthread(pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED), "setpshared");
    check_pthread(pthread_cond_init(&sh->p_ping_cv, &ca), "pthread_cond_init");
    check_pthread(pthread_cond_init(&sh->p_pong_cv, &ca), "pthread_cond_init");
    pthread_condattr_destroy(&ca);
    if (pipe(sh->pipe_ping) != 0 || pipe(sh->pipe_pong) != 0) die("pipe", errno);
}

static void bench_round_trips(void) {
    setup_shared();
    enum { KINDS = 5 };
    static const enum kind order[KINDS] = {CONC_SEM, POSIX_SEM, PIPE, CONC_COND, PTHREAD_COND};
    double t[KINDS][ROUNDS];
    for (int k = 0; k < KINDS; k++) {
        round_trips(order[k]); /* warm up */
    }
    for (int r = 0; r < ROUNDS; r++) {
        /* rotate the order from round to round */
        for (int j = 0; j < KINDS; j++) {
            int k = (j + r) % KINDS;
            t[order[k]][r] = round_trips(order[k]);
        }
    }
    double sem_vs_posix[ROUNDS], sem_vs_pipe[ROUNDS], cond_vs_pthread[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        sem_vs_posix[r] = t[CONC_SEM][r] / t[POSIX_SEM][r];
        sem_vs_pipe[r] = t[CONC_SEM][r] / t[PIPE][r];
        cond_vs_pthread[r] = t[CONC_COND][r] / t[PTHREAD_COND][r];
    }
    double cs = median_of(t[CONC_SEM], ROUNDS), ps = median_of(t[POSIX_SEM], ROUNDS);
    double pp = median_of(t[PIPE], ROUNDS);
    double cc = median_of(t[CONC_COND], ROUNDS), pc = median_of(t[PTHREAD_COND], ROUNDS);
    printf("round trips between 2 processes (%d rounds x %d round trips, median):\n", ROUNDS,
           ROUND_TRIPS);
    printf("  conc_sem pair                          %7.2f us\n", cs);
    printf("  sem_t pair (process-shared)            %7.2f us\n", ps);
    printf("  pipe pair (1 byte each way)            %7.2f us\n", pp);
    printf("  conc_cond pair + conc_mutex            %7.2f us\n", cc);
    printf("  pthread_cond_t pair + mutex (pshared)  %7.2f us\n", pc);
    report_row("sync: process round trip, conc_sem pair vs sem_t pair", cs, ps, "us", 1.0, "lower",
               sem_vs_posix, ROUNDS);
    report_row("sync: process round trip, conc_cond+conc_mutex vs pthread_cond_t+mutex", cc, pc,
               "us", 1.0, "lower", cond_vs_pthread, ROUNDS);
    report_row("sync: process round trip, conc_sem pair vs pipe pair", cs, pp, "us", 0.5, "lower",
               sem_vs_pipe, ROUNDS);

    close(sh->pipe_ping[0]);
    close(sh->pipe_ping[1]);
    close(sh->pipe_pong[0]);
    close(sh->pipe_pong[1]);
    munmap(sh, sizeof *sh);
}

int main(void) {
    /* A stuck round trip would otherwise hang `make bench`. */
    alarm(900);
    bench_uncontended(0);
    /* From here on the program has started a thread (glibc's mutexes then
     * use atomic instructions, as they must with threads). */
    pthread_t t;
    check_pthread(pthread_create(&t, NULL, idle_thread, NULL), "pthread_create");
    check_pthread(pthread_join(t, NULL), "pthread_join");
    bench_uncontended(1);
    bench_contended();
    bench_round_trips();
    return 0;
}
