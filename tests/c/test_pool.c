/* make sanitize: tsan.
 * Thread pools, tasks and parallel loops, against conc.h. */
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "check.h"

/* ---- helpers ----------------------------------------------------------- */

static void *echo(void *arg) { return arg; }

static _Atomic int gate; /* tasks that wait for it spin-sleep until it is 1 */

static void *wait_gate(void *arg) {
    while (!atomic_load(&gate)) {
        conc_sleep_ms(1);
    }
    return arg;
}

static _Atomic long counter;

static void *bump(void *arg) {
    atomic_fetch_add(&counter, 1);
    return arg;
}

static long count_dir(const char *path) {
    DIR *d = opendir(path);
    if (d == NULL) return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') n++;
    }
    closedir(d);
    return n;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    }
    fclose(f);
    return kb;
}

/* ---- results, stale and raced joins ------------------------------------- */

TEST(results_come_back_through_join) {
    conc_task t[64];
    for (uintptr_t i = 0; i < 64; i++) {
        CHECK_OK(conc_task_spawn(&t[i], NULL, echo, (void *)(i + 1)));
        CHECK(t[i].id != 0);
    }
    for (uintptr_t i = 0; i < 64; i++) {
        void *r = NULL;
        CHECK_OK(conc_task_join(t[i], &r));
        CHECK(r == (void *)(i + 1));
    }
    conc_pool *p = NULL;
    CHECK_OK(conc_pool_create(&p, 3));
    CHECK(p != NULL);
    CHECK(conc_pool_threads(p) == 3);
    conc_task u;
    CHECK_OK(conc_task_spawn(&u, p, echo, (void *)42));
    void *r = NULL;
    CHECK_OK(conc_task_join(u, &r));
    CHECK(r == (void *)42);
    CHECK_OK(conc_task_spawn(&u, p, echo, (void *)43));
    CHECK_OK(conc_task_join(u, NULL)); /* NULL result: allowed */
    CHECK_OK(conc_pool_close(p));
}

TEST(stale_copied_zero_and_forged_handles_are_refused) {
    conc_task t, copy;
    CHECK_OK(conc_task_spawn(&t, NULL, echo, (void *)7));
    copy = t;
    conc_task forged = {t.id + 1};
    CHECK_STATUS(conc_task_join(forged, NULL), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("conc_task_join");
    void *r = NULL;
    CHECK_OK(conc_task_join(t, &r));
    CHECK(r == (void *)7);
    r = (void *)1;
    CHECK_STATUS(conc_task_join(t, &r), CONC_ERR_INVALID_STATE);
    CHECK(r == (void *)1); /* untouched on failure */
    CHECK_STATUS(conc_task_join(copy, NULL), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_task_join_timeout(copy, 10, NULL), CONC_ERR_INVALID_STATE);
    conc_task zero = {0};
    CHECK_STATUS(conc_task_join(zero, NULL), CONC_ERR_INVALID_STATE);
    conc_task junk = {0x123456789abcdefULL};
    CHECK_STATUS(conc_task_join(junk, NULL), CONC_ERR_INVALID_STATE);
}

struct race {
    conc_task task;
    _Atomic int go;
    _Atomic int ok, refused;
};

static void *racer(void *arg) {
    struct race *r = arg;
    while (!atomic_load(&r->go)) {
        sched_yield(); /* under valgrind, threads take turns on one core */
    }
    void *res = NULL;
    conc_status s = conc_task_join(r->task, &res);
    if (s == CONC_OK && res == (void *)99) atomic_fetch_add(&r->ok, 1);
    if (s == CONC_ERR_INVALID_STATE) atomic_fetch_add(&r->refused, 1);
    return NULL;
}

TEST(racing_joiners_exactly_one_wins) {
    /* A quarter of the rounds under valgrind, which runs threads in turn. */
    int rounds = check_under_valgrind_() ? 5 : 20;
    for (int round = 0; round < rounds; round++) {
        struct race r = {.go = 0, .ok = 0, .refused = 0};
        atomic_store(&gate, 0);
        CHECK_OK(conc_task_spawn(&r.task, NULL, wait_gate, (void *)99));
        pthread_t th[4];
        for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, racer, &r);
        atomic_store(&r.go, 1);
        conc_sleep_ms(round % 3);
        atomic_store(&gate, 1);
        for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
        CHECK(atomic_load(&r.ok) == 1);
        CHECK(atomic_load(&r.refused) == 3);
    }
}

TEST(join_timeout_times_out_and_leaves_the_task_joinable) {
    atomic_store(&gate, 0);
    conc_task t;
    CHECK_OK(conc_task_spawn(&t, NULL, wait_gate, (void *)5));
    conc_sleep_ms(20); /* let a pool thread start it */
    void *r = (void *)1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CHECK_STATUS(conc_task_join_timeout(t, 50, &r), CONC_ERR_TIMED_OUT);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    CHECK(ms >= 49.0);
    CHECK(r == (void *)1);
    CHECK_STATUS(conc_task_join_timeout(t, 0, &r), CONC_ERR_TIMED_OUT);
    CHECK(r == (void *)1);
    atomic_store(&gate, 1);
    CHECK_OK(conc_task_join_timeout(t, 10000, &r));
    CHECK(r == (void *)5);
    CHECK_STATUS(conc_task_join_timeout(t, 10, &r), CONC_ERR_INVALID_STATE);

    /* A finished task is joined by a poll. */
    CHECK_OK(conc_task_spawn(&t, NULL, echo, (void *)6));
    conc_status s;
    while ((s = conc_task_join_timeout(t, 0, &r)) == CONC_ERR_TIMED_OUT) {
        conc_sleep_ms(1);
    }
    CHECK_OK(s);
    CHECK(r == (void *)6);
}

/* ---- nesting ------------------------------------------------------------ */

static conc_pool *nest_pool;

static void *nest(void *arg) {
    uintptr_t n = (uintptr_t)arg;
    if (n == 0) return (void *)1;
    conc_task t;
    if (conc_task_spawn(&t, nest_pool, nest, (void *)(n - 1)) != CONC_OK) return NULL;
    void *r = NULL;
    if (conc_task_join(t, &r) != CONC_OK || r == NULL) return NULL;
    return (void *)((uintptr_t)r + 1);
}

/* The watchdog (CHECK_TIMEOUT_SECONDS) turns a self-deadlock into a failure. */
TEST(nested_spawn_join_1000_deep_on_one_thread) {
    CHECK_OK(conc_pool_create(&nest_pool, 1));
    /* From outside the pool, and from a task of the pool. */
    void *r = nest((void *)1000);
    CHECK(r == (void *)1001);
    conc_task t;
    CHECK_OK(conc_task_spawn(&t, nest_pool, nest, (void *)1000));
    conc_sleep_ms(20); /* so that the pool's one thread runs it, not this join */
    r = NULL;
    CHECK_OK(conc_task_join(t, &r));
    CHECK(r == (void *)1001);
    CHECK_OK(conc_pool_close(nest_pool));
}

static void *fib_task(void *arg);

static uintptr_t fib(uintptr_t n) {
    if (n < 2) return n;
    if (n < 10) return fib(n - 1) + fib(n - 2);
    conc_task t;
    if (conc_task_spawn(&t, nest_pool, fib_task, (void *)(n - 1)) != CONC_OK) return 0;
    uintptr_t b = fib(n - 2);
    void *a = NULL;
    if (conc_task_join(t, &a) != CONC_OK) return 0;
    return (uintptr_t)a + b;
}

static void *fib_task(void *arg) { return (void *)fib((uintptr_t)arg); }

static _Atomic long inner_sum;

static void add_range(size_t b, size_t e, void *ctx) {
    (void)ctx;
    for (size_t i = b; i < e; i++) atomic_fetch_add(&inner_sum, (long)i);
}

static void outer_range(size_t b, size_t e, void *ctx) {
    (void)ctx;
    for (size_t i = b; i < e; i++) {
        conc_parallel_for(nest_pool, 0, 100, 3, add_range, NULL);
    }
}

static void *pfor_in_task(void *arg) {
    conc_parallel_for(nest_pool, 0, 20, 1, outer_range, NULL);
    return arg;
}

TEST(nested_tasks_and_loops_on_small_pools) {
    for (size_t threads = 1; threads <= 3; threads++) {
        CHECK_OK(conc_pool_create(&nest_pool, threads));
        conc_task t;
        CHECK_OK(conc_task_spawn(&t, nest_pool, fib_task, (void *)24));
        void *r = NULL;
        CHECK_OK(conc_task_join(t, &r));
        CHECK(r == (void *)46368);
        atomic_store(&inner_sum, 0);
        CHECK_OK(conc_task_spawn(&t, nest_pool, pfor_in_task, (void *)3));
        CHECK_OK(conc_task_join(t, &r));
        CHECK(r == (void *)3);
        CHECK(atomic_load(&inner_sum) == 20L * 4950L);
        CHECK_OK(conc_pool_close(nest_pool));
    }
}

/* ---- parallel_for ------------------------------------------------------- */

struct cover {
    size_t base, n, grain;
    _Atomic unsigned char *hits;
    _Atomic int bad;
};

static void mark(size_t b, size_t e, void *ctx) {
    struct cover *c = ctx;
    if (b >= e || (c->grain != 0 && e - b > c->grain) || b < c->base || e - c->base > c->n) {
        atomic_store(&c->bad, 1);
        return;
    }
    for (size_t i = b; i < e; i++) atomic_fetch_add(&c->hits[i - c->base], 1);
}

static int cover_once(conc_pool *p, size_t base, size_t n, size_t grain) {
    struct cover c = {base, n, grain, calloc(n + 1, 1), 0};
    conc_status s = conc_parallel_for(p, base, base + n, grain, mark, &c);
    int ok = s == CONC_OK && !atomic_load(&c.bad);
    for (size_t i = 0; i < n; i++) ok = ok && c.hits[i] == 1;
    if (!ok) fprintf(stderr, "  cover failed: base %zu n %zu grain %zu\n", base, n, grain);
    free((void *)c.hits);
    return ok;
}

TEST(parallel_for_covers_every_index_exactly_once) {
    static const size_t ns[] = {0, 1, 2, 3, 5, 16, 17, 100, 1000, 4097, 100000};
    static const size_t grains[] = {0, 1, 2, 3, 7, 64, 1000, 100001, SIZE_MAX / 2, SIZE_MAX};
    conc_pool *pools[3] = {NULL, NULL, NULL};
    CHECK_OK(conc_pool_create(&pools[1], 1));
    CHECK_OK(conc_pool_create(&pools[2], 4));
    for (int p = 0; p < 3; p++) {
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
            for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++) {
                CHECK(cover_once(pools[p], 10, ns[i], grains[g]));
                /* At the very top of size_t. */
                CHECK(cover_once(pools[p], SIZE_MAX - ns[i], ns[i], grains[g]));
            }
        }
    }
    CHECK_OK(conc_pool_close(pools[1]));
    CHECK_OK(conc_pool_close(pools[2]));
}

static _Atomic size_t covered;
static _Atomic size_t calls;

static void measure(size_t b, size_t e, void *ctx) {
    (void)ctx;
    atomic_fetch_add(&covered, e - b);
    atomic_fetch_add(&calls, 1);
}

static void never(size_t b, size_t e, void *ctx) {
    (void)b, (void)e, (void)ctx;
    atomic_store(&calls, 12345);
}

TEST(parallel_for_edges) {
    /* The whole size_t range in a few huge ranges. */
    size_t grain = SIZE_MAX / 5 + 1;
    atomic_store(&covered, 0);
    atomic_store(&calls, 0);
    CHECK_OK(conc_parallel_for(NULL, 0, SIZE_MAX, grain, measure, NULL));
    CHECK(atomic_load(&covered) == SIZE_MAX);
    CHECK(atomic_load(&calls) == 5);
    atomic_store(&covered, 0);
    atomic_store(&calls, 0);
    CHECK_OK(conc_parallel_for(NULL, 1, SIZE_MAX, SIZE_MAX, measure, NULL));
    CHECK(atomic_load(&covered) == SIZE_MAX - 1);
    CHECK(atomic_load(&calls) == 1);
    /* Empty and reversed ranges call nothing. */
    atomic_store(&calls, 0);
    CHECK_OK(conc_parallel_for(NULL, 5, 5, 1, never, NULL));
    CHECK_OK(conc_parallel_for(NULL, 6, 5, 0, never, NULL));
    CHECK_OK(conc_parallel_for(NULL, SIZE_MAX, 0, 0, never, NULL));
    CHECK(atomic_load(&calls) == 0);
    CHECK_STATUS(conc_parallel_for(NULL, 0, 10, 1, NULL, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("fn");
    /* More helpers than conc keeps on the stack. */
    conc_pool *big;
    CHECK_OK(conc_pool_create(&big, 12));
    CHECK(cover_once(big, 10, 1000, 1));
    CHECK(cover_once(big, 10, 5, 1));
    CHECK_OK(conc_pool_close(big));
}

static _Atomic long calls_on[2];

static void who(size_t b, size_t e, void *ctx) {
    pthread_t *main_thread = ctx;
    atomic_fetch_add(&calls_on[pthread_equal(pthread_self(), *main_thread) ? 0 : 1], (long)(e - b));
    /* Slow enough that both sides take part. */
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
}

TEST(parallel_for_uses_the_calling_thread_and_the_pool) {
    pthread_t self = pthread_self();
    conc_pool *p;
    CHECK_OK(conc_pool_create(&p, 2));
    CHECK_OK(conc_parallel_for(p, 0, 200, 1, who, &self));
    CHECK(atomic_load(&calls_on[0]) > 0);
    CHECK(atomic_load(&calls_on[1]) > 0);
    CHECK(atomic_load(&calls_on[0]) + atomic_load(&calls_on[1]) == 200);
    CHECK_OK(conc_pool_close(p));
}

/* ---- close -------------------------------------------------------------- */

static void *closer(void *arg) {
    conc_status *s = arg;
    conc_pool *p;
    memcpy(&p, s, sizeof p);
    *s = conc_pool_close(p);
    return NULL;
}

TEST(close_waits_for_queued_tasks_and_refuses_spawns) {
    conc_pool *p;
    CHECK_OK(conc_pool_create(&p, 1));
    atomic_store(&gate, 0);
    atomic_store(&counter, 0);
    conc_task blocker, t[10];
    CHECK_OK(conc_task_spawn(&blocker, p, wait_gate, (void *)77));
    for (uintptr_t i = 0; i < 10; i++) CHECK_OK(conc_task_spawn(&t[i], p, bump, (void *)i));
    union {
        conc_status s;
        conc_pool *p;
    } arg;
    arg.p = p;
    pthread_t th;
    pthread_create(&th, NULL, closer, &arg);
    /* Once the close has begun, spawns and loops from outside are refused. */
    conc_status s;
    conc_task extra;
    int accepted = 0;
    /* Until the closer has begun: a millisecond between tries lets it run
     * even where threads take turns on one core (valgrind), for at most
     * 20 s. */
    while ((s = conc_task_spawn(&extra, p, bump, NULL)) == CONC_OK) {
        accepted++;
        CHECK_OK(conc_task_join(extra, NULL));
        if (accepted > 20000) break;
        conc_sleep_ms(1);
    }
    CHECK_STATUS(s, CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("closed");
    CHECK(extra.id == 0);
    CHECK_STATUS(conc_parallel_for(p, 0, 10, 1, never, NULL), CONC_ERR_INVALID_STATE);
    /* The close waits for the blocker and every queued task. */
    conc_sleep_ms(30);
    CHECK(atomic_load(&counter) == accepted);
    atomic_store(&gate, 1);
    pthread_join(th, NULL);
    CHECK_OK(arg.s);
    CHECK(atomic_load(&counter) == 10 + accepted);
    /* Handles stay joinable and keep their results. */
    void *r = NULL;
    CHECK_OK(conc_task_join(blocker, &r));
    CHECK(r == (void *)77);
    for (uintptr_t i = 0; i < 10; i++) {
        CHECK_OK(conc_task_join(t[i], &r));
        CHECK(r == (void *)i);
    }
    /* The closed pool is refused everywhere. */
    CHECK_STATUS(conc_task_spawn(&extra, p, bump, NULL), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_parallel_for(p, 0, 10, 1, never, NULL), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_pool_close(p), CONC_ERR_INVALID_STATE);
    CHECK(conc_pool_threads(p) == 0);
}

static void *close_own_pool(void *arg) {
    return (void *)(uintptr_t)conc_pool_close((conc_pool *)arg);
}

static void close_in_range(size_t b, size_t e, void *ctx) {
    (void)b, (void)e;
    conc_pool **p = ctx;
    if (conc_pool_close(p[0]) == CONC_ERR_DEADLOCK) p[1] = (conc_pool *)1;
}

TEST(closing_from_inside_is_deadlock) {
    conc_pool *p;
    CHECK_OK(conc_pool_create(&p, 2));
    conc_task t;
    CHECK_OK(conc_task_spawn(&t, p, close_own_pool, p));
    void *r = NULL;
    CHECK_OK(conc_task_join(t, &r));
    CHECK((conc_status)(uintptr_t)r == CONC_ERR_DEADLOCK);
    conc_pool *ctx[2] = {p, NULL};
    CHECK_OK(conc_parallel_for(p, 0, 1, 1, close_in_range, ctx));
    CHECK(ctx[1] == (conc_pool *)1);
    CHECK(conc_pool_threads(p) == 2); /* still open */
    CHECK_OK(conc_pool_close(p));
    CHECK_OK(conc_pool_close(NULL)); /* the default pool: a no-op */
}

TEST(forged_pools_are_refused_everywhere) {
    conc_pool *forged[] = {(conc_pool *)0x10, (conc_pool *)0xdeadbeef0, (conc_pool *)(uintptr_t)-16};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        conc_task t = {1};
        CHECK_STATUS(conc_task_spawn(&t, forged[i], echo, NULL), CONC_ERR_INVALID_STATE);
        CHECK(t.id == 0);
        CHECK_STATUS(conc_parallel_for(forged[i], 0, 10, 1, never, NULL), CONC_ERR_INVALID_STATE);
        CHECK_STATUS(conc_pool_close(forged[i]), CONC_ERR_INVALID_STATE);
        CHECK(conc_pool_threads(forged[i]) == 0);
    }
    CHECK_STATUS(conc_task_spawn(NULL, NULL, echo, NULL), CONC_ERR_INVALID_ARGUMENT);
    conc_task t;
    CHECK_STATUS(conc_task_spawn(&t, NULL, NULL, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_pool_create(NULL, 1), CONC_ERR_INVALID_ARGUMENT);
}

TEST(pool_sizes) {
    CHECK(conc_pool_threads(NULL) == conc_cpu_count());
    conc_pool *p = (conc_pool *)1;
    CHECK_OK(conc_pool_create(&p, 0));
    CHECK(conc_pool_threads(p) == conc_cpu_count());
    CHECK_OK(conc_pool_close(p));
    long before = count_dir("/proc/self/task");
    p = (conc_pool *)1;
    CHECK_STATUS(conc_pool_create(&p, (size_t)1 << 40), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(p == NULL);
    CHECK(count_dir("/proc/self/task") == before);
}

TEST(a_pool_that_cannot_start_all_threads_leaves_nothing_running) {
    SKIP_IF(CHECK_ASAN || CHECK_TSAN || check_under_valgrind_(),
            "the sanitizers and valgrind need more address space than this limit leaves");
    long before = count_dir("/proc/self/task");
    struct rlimit rl;
    getrlimit(RLIMIT_AS, &rl);
    /* Room for a few 64 MiB pool stacks, not for 64 of them. */
    rl.rlim_cur = (rlim_t)512 << 20;
    CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
    conc_pool *p = (conc_pool *)1;
    CHECK_STATUS(conc_pool_create(&p, 64), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(p == NULL);
    CHECK(count_dir("/proc/self/task") == before);
    CHECK_MESSAGE_HAS("pthread_create");
}

/* ---- fork --------------------------------------------------------------- */

static int child_uses_default_pool(void *arg) {
    conc_task *old = arg;
    if (conc_task_join(*old, NULL) != CONC_ERR_INVALID_STATE) return 1;
    conc_task t;
    if (conc_task_spawn(&t, NULL, echo, (void *)11) != CONC_OK) return 2;
    void *r = NULL;
    if (conc_task_join(t, &r) != CONC_OK || r != (void *)11) return 3;
    atomic_store(&covered, 0);
    if (conc_parallel_for(NULL, 0, 1000, 1, measure, NULL) != CONC_OK) return 4;
    if (atomic_load(&covered) != 1000) return 5;
    if (count_dir("/proc/self/task") != 1 + (long)conc_cpu_count()) return 6;
    return 0;
}

TEST(default_pool_works_in_a_forked_child) {
    SKIP_IF(CHECK_TSAN, "TSan cannot start threads in a child forked from a threaded program");
    conc_task t, old;
    CHECK_OK(conc_task_spawn(&t, NULL, echo, (void *)1));
    CHECK_OK(conc_task_join(t, NULL));
    atomic_store(&gate, 0);
    CHECK_OK(conc_task_spawn(&old, NULL, wait_gate, NULL)); /* busy across the fork */
    conc_sleep_ms(5);
    /* A raw fork... */
    pid_t pid = fork();
    if (pid == 0) _exit(child_uses_default_pool(&old));
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* ...and conc_process_spawn. */
    conc_process child;
    CHECK_OK(conc_process_spawn(&child, child_uses_default_pool, &old));
    int code = -1;
    CHECK_OK(conc_process_join(child, &code));
    CHECK(code == 0);
    atomic_store(&gate, 1);
    CHECK_OK(conc_task_join(old, NULL));
    /* A pool made before the fork is refused in the child, and closing it
     * only releases the handle. */
    conc_pool *p;
    CHECK_OK(conc_pool_create(&p, 1));
    pid = fork();
    if (pid == 0) {
        conc_task u;
        int rc = conc_task_spawn(&u, p, echo, NULL) == CONC_ERR_INVALID_STATE &&
                 conc_pool_close(p) == CONC_OK && conc_pool_close(p) == CONC_ERR_INVALID_STATE;
        _exit(rc ? 0 : 1);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_OK(conc_pool_close(p));
}

/* ---- leaks -------------------------------------------------------------- */

TEST(ten_thousand_cycles_leave_no_threads_memory_or_descriptors) {
    /* A tenth under the sanitizers and valgrind, which are much slower. */
    int n = (CHECK_ASAN || CHECK_TSAN || check_under_valgrind_()) ? 1000 : 10000;
    conc_pool *p;
    for (int i = 0; i < 200; i++) { /* warm up the allocator and the default pool */
        conc_task t;
        CHECK_OK(conc_task_spawn(&t, NULL, echo, NULL));
        CHECK_OK(conc_task_join(t, NULL));
    }
    long threads = count_dir("/proc/self/task"), fds = count_dir("/proc/self/fd"), rss = rss_kb();
    for (int i = 0; i < n; i++) {
        conc_task t;
        CHECK_OK(conc_task_spawn(&t, NULL, echo, (void *)(uintptr_t)i));
        void *r = NULL;
        CHECK_OK(conc_task_join(t, &r));
        if (r != (void *)(uintptr_t)i) CHECK(!"wrong result");
        if (i % 100 == 0) {
            CHECK_OK(conc_pool_create(&p, 2));
            CHECK_OK(conc_task_spawn(&t, p, echo, NULL));
            CHECK_OK(conc_pool_close(p));
            CHECK_OK(conc_task_join(t, NULL));
            CHECK_OK(conc_parallel_for(NULL, 0, 64, 1, measure, NULL));
        }
    }
    CHECK(count_dir("/proc/self/task") == threads);
    CHECK(count_dir("/proc/self/fd") == fds);
    long grown = rss_kb() - rss;
    if (!CHECK_ASAN && !CHECK_TSAN && !check_under_valgrind_()) CHECK(grown < 2048); /* shadow memory grows */
    printf("  %d cycles: threads %ld, fds %ld, RSS grew %ld kB\n", n, threads, fds, grown);
}

int main(void) {
    RUN(results_come_back_through_join);
    RUN(stale_copied_zero_and_forged_handles_are_refused);
    RUN(racing_joiners_exactly_one_wins);
    RUN(join_timeout_times_out_and_leaves_the_task_joinable);
    RUN(nested_spawn_join_1000_deep_on_one_thread);
    RUN(nested_tasks_and_loops_on_small_pools);
    RUN(parallel_for_covers_every_index_exactly_once);
    RUN(parallel_for_edges);
    RUN(parallel_for_uses_the_calling_thread_and_the_pool);
    RUN(close_waits_for_queued_tasks_and_refuses_spawns);
    RUN(closing_from_inside_is_deadlock);
    RUN(forged_pools_are_refused_everywhere);
    RUN(pool_sizes);
    RUN(a_pool_that_cannot_start_all_threads_leaves_nothing_running);
    RUN(default_pool_works_in_a_forked_child);
    RUN(ten_thousand_cycles_leave_no_threads_memory_or_descriptors);
    return CHECK_SUMMARY();
}
