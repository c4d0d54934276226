/* make sanitize: tsan.
 * C tests of the thread API: conc_thread_spawn/_with, join, detach, the
 * handle registry, names, stack sizes, resource exhaustion, cpu count,
 * sleep and yield. Each case runs in its own forked child (check.h). */
#include "check.h"

#include <alloca.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>
#include <time.h>

/* ---- thread bodies ---------------------------------------------------- */

static void *echo(void *arg) { return arg; }

static void *times_two(void *arg) { return (void *)((uintptr_t)arg * 2); }

static void *exit_early(void *arg) {
    pthread_exit(arg);
    return NULL; /* not reached */
}

/* A gate that threads wait at until it is opened. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open;
} gate;

#define GATE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}

static void gate_wait(gate *g) {
    pthread_mutex_lock(&g->lock);
    while (!g->open) pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_open(gate *g) {
    pthread_mutex_lock(&g->lock);
    g->open = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

static void *wait_at_gate(void *arg) {
    gate_wait((gate *)arg);
    return (void *)(uintptr_t)77;
}

/* ---- results, double join, detach ------------------------------------- */

TEST(results_come_back_through_join) {
    enum { N = 50 };
    conc_thread t[N];
    for (uintptr_t i = 0; i < N; i++) {
        CHECK_OK(conc_thread_spawn(&t[i], times_two, (void *)i));
        CHECK(t[i].id != 0);
        for (uintptr_t j = 0; j < i; j++) CHECK(t[j].id != t[i].id);
    }
    for (uintptr_t i = 0; i < N; i++) {
        void *r = (void *)-1;
        CHECK_OK(conc_thread_join(t[i], &r));
        CHECK((uintptr_t)r == 2 * i);
    }
}

TEST(pthread_exit_value_comes_back_through_join) {
    conc_thread t;
    void *r = NULL;
    CHECK_OK(conc_thread_spawn(&t, exit_early, (void *)(uintptr_t)31));
    CHECK_OK(conc_thread_join(t, &r));
    CHECK((uintptr_t)r == 31);
    /* A named thread starts in conc's trampoline: pthread_exit must unwind
     * through it cleanly too. */
    conc_thread_options o = {0};
    o.name = "exiter";
    CHECK_OK(conc_thread_spawn_with(&t, &o, exit_early, (void *)(uintptr_t)32));
    CHECK_OK(conc_thread_join(t, &r));
    CHECK((uintptr_t)r == 32);
}

TEST(double_join_is_invalid_state) {
    conc_thread t;
    CHECK_OK(conc_thread_spawn(&t, echo, NULL));
    CHECK_OK(conc_thread_join(t, NULL));
    void *r = (void *)0x1234;
    CHECK_STATUS(conc_thread_join(t, &r), CONC_ERR_INVALID_STATE);
    CHECK(r == (void *)0x1234); /* written only on success */
    CHECK_MESSAGE_HAS("conc_thread_join(thread 0x");
    CHECK_MESSAGE_HAS("already joined or detached");
    CHECK(conc_last_os_error() == 0);
}

TEST(join_after_detach_is_invalid_state) {
    static gate g = GATE_INIT; /* outlives the detached thread, however late it runs */
    conc_thread t;
    CHECK_OK(conc_thread_spawn(&t, wait_at_gate, &g));
    CHECK_OK(conc_thread_detach(t));
    CHECK_STATUS(conc_thread_join(t, NULL), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("conc_thread_join");
    CHECK_MESSAGE_HAS("already joined or detached");
    gate_open(&g);
}

TEST(detach_twice_is_invalid_state) {
    conc_thread t;
    CHECK_OK(conc_thread_spawn(&t, echo, NULL));
    CHECK_OK(conc_thread_detach(t));
    CHECK_STATUS(conc_thread_detach(t), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("conc_thread_detach(thread 0x");
    /* Detach after join as well. */
    CHECK_OK(conc_thread_spawn(&t, echo, NULL));
    CHECK_OK(conc_thread_join(t, NULL));
    CHECK_STATUS(conc_thread_detach(t), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("conc_thread_detach");
}

typedef struct {
    gate handle_ready;
    conc_thread self;
    atomic_int status; /* -1 until the thread has detached itself */
} detach_self_ctx;

static void *detach_self(void *arg) {
    detach_self_ctx *c = (detach_self_ctx *)arg;
    gate_wait(&c->handle_ready);
    atomic_store(&c->status, (int)conc_thread_detach(c->self));
    return NULL;
}

TEST(a_thread_may_detach_itself) {
    static detach_self_ctx c = {GATE_INIT, {0}, -1}; /* outlives the thread */
    conc_thread t;
    CHECK_OK(conc_thread_spawn(&t, detach_self, &c));
    c.self = t;
    gate_open(&c.handle_ready);
    while (atomic_load(&c.status) == -1) conc_sleep_ms(1);
    CHECK(atomic_load(&c.status) == CONC_OK);
    CHECK_STATUS(conc_thread_join(t, NULL), CONC_ERR_INVALID_STATE);
}

TEST(forged_and_zero_handles_are_refused) {
    gate g = GATE_INIT;
    conc_thread live;
    CHECK_OK(conc_thread_spawn(&live, wait_at_gate, &g));
    conc_thread forged[] = {{0}, {live.id + 1}, {live.id - 1}, {12345}, {UINT64_MAX}, {live.id ^ 1}};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        void *r = (void *)0x55;
        CHECK_STATUS(conc_thread_join(forged[i], &r), CONC_ERR_INVALID_STATE);
        CHECK(r == (void *)0x55);
        CHECK_MESSAGE_HAS("never made by conc_thread_spawn");
        CHECK_STATUS(conc_thread_detach(forged[i]), CONC_ERR_INVALID_STATE);
    }
    /* The live thread is untouched by all that. */
    gate_open(&g);
    void *r = NULL;
    CHECK_OK(conc_thread_join(live, &r));
    CHECK((uintptr_t)r == 77);
}

TEST(copies_of_joined_handles_are_refused) {
    conc_thread t;
    CHECK_OK(conc_thread_spawn(&t, echo, (void *)(uintptr_t)5));
    conc_thread copy = t, copy2;
    memcpy(&copy2, &t, sizeof t);
    void *r = NULL;
    CHECK_OK(conc_thread_join(copy, &r));
    CHECK((uintptr_t)r == 5);
    CHECK_STATUS(conc_thread_join(t, NULL), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_thread_join(copy2, NULL), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_thread_detach(copy2), CONC_ERR_INVALID_STATE);
    /* Ids are never reused: later threads never get the spent id back. */
    for (int i = 0; i < 200; i++) {
        conc_thread u;
        CHECK_OK(conc_thread_spawn(&u, echo, NULL));
        CHECK(u.id != t.id);
        CHECK_OK(conc_thread_join(u, NULL));
    }
    CHECK_STATUS(conc_thread_join(t, NULL), CONC_ERR_INVALID_STATE);
}

/* ---- self-join -------------------------------------------------------- */

typedef struct {
    gate handle_ready;
    conc_thread self;
    char message[256];
    atomic_int status; /* -1 until the thread has tried */
} self_join_ctx;

static void *join_self(void *arg) {
    self_join_ctx *c = (self_join_ctx *)arg;
    gate_wait(&c->handle_ready);
    void *r = (void *)0x99;
    conc_status s = conc_thread_join(c->self, &r);
    snprintf(c->message, sizeof c->message, "%s", conc_last_error_message());
    atomic_store(&c->status, (int)s);
    return r == (void *)0x99 ? (void *)(uintptr_t)123 : NULL;
}

TEST(self_join_is_deadlock_and_handle_stays_joinable) {
    self_join_ctx c = {GATE_INIT, {0}, "", -1};
    conc_thread t;
    CHECK_OK(conc_thread_spawn(&t, join_self, &c));
    c.self = t;
    gate_open(&c.handle_ready);
    while (atomic_load(&c.status) == -1) conc_sleep_ms(1);
    void *r = NULL;
    CHECK_OK(conc_thread_join(t, &r)); /* another thread can still join it */
    CHECK(c.status == CONC_ERR_DEADLOCK);
    CHECK(strstr(c.message, "conc_thread_join") != NULL);
    CHECK(strstr(c.message, "cannot join itself") != NULL);
    CHECK((uintptr_t)r == 123); /* and *result was not written on failure */
}

/* ---- NULL arguments --------------------------------------------------- */

TEST(null_arguments) {
    conc_thread t = {0xdeadbeef};
    CHECK_STATUS(conc_thread_spawn(NULL, echo, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_thread_spawn: argument `out` is NULL");
    CHECK_STATUS(conc_thread_spawn(&t, NULL, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK(t.id == 0);
    CHECK_MESSAGE_HAS("conc_thread_spawn: argument `fn` is NULL");
    t.id = 0xdeadbeef;
    CHECK_STATUS(conc_thread_spawn_with(&t, NULL, NULL, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK(t.id == 0);
    CHECK_MESSAGE_HAS("conc_thread_spawn_with: argument `fn` is NULL");
    CHECK_STATUS(conc_thread_spawn_with(NULL, NULL, echo, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_thread_spawn_with: argument `out` is NULL");

    /* NULL options: the defaults. NULL result: discarded. */
    CHECK_OK(conc_thread_spawn_with(&t, NULL, echo, (void *)(uintptr_t)8));
    CHECK_OK(conc_thread_join(t, NULL));
    conc_thread_options o = {0};
    CHECK_OK(conc_thread_spawn_with(&t, &o, echo, (void *)(uintptr_t)9));
    void *r = NULL;
    CHECK_OK(conc_thread_join(t, &r));
    CHECK((uintptr_t)r == 9);
}

/* ---- racing joiners --------------------------------------------------- */

enum { JOINERS = 4 };

typedef struct {
    conc_thread target;
    pthread_barrier_t start;
    atomic_int ok, invalid, other;
    atomic_uintptr_t result;
} race_ctx;

static void *race_join(void *arg) {
    race_ctx *c = (race_ctx *)arg;
    pthread_barrier_wait(&c->start);
    void *r = NULL;
    conc_status s = conc_thread_join(c->target, &r);
    if (s == CONC_OK) {
        atomic_fetch_add(&c->ok, 1);
        atomic_store(&c->result, (uintptr_t)r);
    } else if (s == CONC_ERR_INVALID_STATE) {
        atomic_fetch_add(&c->invalid, 1);
    } else {
        atomic_fetch_add(&c->other, 1);
    }
    return NULL;
}

static void *short_nap(void *arg) {
    conc_sleep_ms(1);
    return arg;
}

TEST(racing_joiners_exactly_one_wins) {
    for (int round = 0; round < 100; round++) {
        race_ctx c;
        memset(&c, 0, sizeof c);
        pthread_barrier_init(&c.start, NULL, JOINERS);
        /* Odd rounds: the target is still running when the joiners race;
         * even rounds: it has most likely finished already. */
        CHECK_OK(conc_thread_spawn(&c.target, round % 2 ? short_nap : echo,
                                   (void *)(uintptr_t)(round + 1)));
        conc_thread j[JOINERS];
        for (int i = 0; i < JOINERS; i++) CHECK_OK(conc_thread_spawn(&j[i], race_join, &c));
        for (int i = 0; i < JOINERS; i++) CHECK_OK(conc_thread_join(j[i], NULL));
        CHECK(atomic_load(&c.ok) == 1);
        CHECK(atomic_load(&c.invalid) == JOINERS - 1);
        CHECK(atomic_load(&c.other) == 0);
        CHECK(atomic_load(&c.result) == (uintptr_t)(round + 1));
        pthread_barrier_destroy(&c.start);
        if (check_failures_) break;
    }
}

/* ---- many threads alive at once ---------------------------------------- */

enum { MANY = 1000 };

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int arrived;
    int released;
} crowd;

static crowd the_crowd = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void *join_crowd(void *arg) {
    pthread_mutex_lock(&the_crowd.lock);
    the_crowd.arrived++;
    pthread_cond_broadcast(&the_crowd.cond);
    while (!the_crowd.released) pthread_cond_wait(&the_crowd.cond, &the_crowd.lock);
    pthread_mutex_unlock(&the_crowd.lock);
    return arg;
}

TEST(a_thousand_threads_alive_at_once) {
    static conc_thread t[MANY];
    for (uintptr_t i = 0; i < MANY; i++) {
        conc_status s = conc_thread_spawn(&t[i], join_crowd, (void *)i);
        CHECK_OK(s);
        if (s != CONC_OK) return;
    }
    /* Every thread has checked in and none has left: all alive at once. */
    pthread_mutex_lock(&the_crowd.lock);
    while (the_crowd.arrived < MANY) pthread_cond_wait(&the_crowd.cond, &the_crowd.lock);
    CHECK(the_crowd.arrived == MANY);
    the_crowd.released = 1;
    pthread_cond_broadcast(&the_crowd.cond);
    pthread_mutex_unlock(&the_crowd.lock);
    for (uintptr_t i = 0; i < MANY; i++) {
        void *r = NULL;
        CHECK_OK(conc_thread_join(t[i], &r));
        CHECK((uintptr_t)r == i);
    }
}

/* ---- names ------------------------------------------------------------ */

/* Returns the name the thread sees for itself as its very first act. */
static void *read_own_name(void *arg) {
    char *buf = (char *)arg;
    if (pthread_getname_np(pthread_self(), buf, 64) != 0) strcpy(buf, "<getname failed>");
    return NULL;
}

static void spawn_named_and_read(const char *name, char out[64]) {
    conc_thread t;
    conc_thread_options o = {0};
    o.name = name;
    memset(out, 0, 64);
    CHECK_OK(conc_thread_spawn_with(&t, &o, read_own_name, out));
    CHECK_OK(conc_thread_join(t, NULL));
}

TEST(names_are_set_before_fn_runs) {
    char got[64];
    spawn_named_and_read("worker-1", got);
    CHECK(strcmp(got, "worker-1") == 0);
    spawn_named_and_read("exactly15bytes!", got);
    CHECK(strcmp(got, "exactly15bytes!") == 0);
    /* A name on a stack buffer that the caller overwrites right after the
     * call: conc copied it. */
    char name[32] = "copied";
    conc_thread t;
    conc_thread_options o = {name, 0};
    memset(got, 0, sizeof got);
    CHECK_OK(conc_thread_spawn_with(&t, &o, read_own_name, got));
    strcpy(name, "overwritten");
    CHECK_OK(conc_thread_join(t, NULL));
    CHECK(strcmp(got, "copied") == 0);
}

TEST(long_names_are_truncated_to_15_bytes) {
    char got[64];
    spawn_named_and_read("a-very-long-thread-name-indeed", got);
    CHECK(strcmp(got, "a-very-long-thr") == 0);
    CHECK(strlen(got) == 15);
}

TEST(multibyte_names_are_cut_at_a_char_boundary) {
    char got[64];
    /* "é" is 2 bytes (C3 A9): 8 of them are 16 bytes; the 8th would be
     * split at byte 15, so 7 remain (14 bytes). */
    spawn_named_and_read("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9", got);
    CHECK(strcmp(got, "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9") == 0);
    CHECK(strlen(got) == 14);
    /* 13 ASCII bytes then "€" (E2 82 AC, bytes 14-16): the euro goes. */
    spawn_named_and_read("abcdefghijklm\xE2\x82\xAC", got);
    CHECK(strcmp(got, "abcdefghijklm") == 0);
    /* 12 ASCII then "€" fits exactly in 15. */
    spawn_named_and_read("abcdefghijkl\xE2\x82\xAC" "zz", got);
    CHECK(strcmp(got, "abcdefghijkl\xE2\x82\xAC") == 0);
    /* A 4-byte emoji (F0 9F 98 80) straddling byte 15. */
    spawn_named_and_read("abcdefghijklm\xF0\x9F\x98\x80", got);
    CHECK(strcmp(got, "abcdefghijklm") == 0);
}

/* ---- stack sizes ------------------------------------------------------ */

/* Returns the stack size the thread really got. */
static void *own_stack_size(void *arg) {
    (void)arg;
    pthread_attr_t a;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        pthread_attr_getstacksize(&a, &size);
        pthread_attr_destroy(&a);
    }
    return (void *)size;
}

static void *touch_deep_stack(void *arg) {
    size_t depth = (size_t)arg;
    volatile char *p = (volatile char *)alloca(depth);
    for (size_t i = 0; i < depth; i += 4096) p[i] = (char)i;
    p[depth - 1] = 1;
    return own_stack_size(NULL);
}

TEST(tiny_stack_is_raised_to_the_minimum) {
    conc_thread t;
    conc_thread_options o = {NULL, 1};
    void *r = NULL;
    CHECK_OK(conc_thread_spawn_with(&t, &o, own_stack_size, NULL));
    CHECK_OK(conc_thread_join(t, &r));
    CHECK((size_t)r >= (size_t)PTHREAD_STACK_MIN);
    CHECK((size_t)r < ((size_t)1 << 20)); /* not silently the 8 MiB default */
    /* With a name as well (the trampoline path). */
    o.name = "tiny";
    CHECK_OK(conc_thread_spawn_with(&t, &o, own_stack_size, NULL));
    CHECK_OK(conc_thread_join(t, &r));
    CHECK((size_t)r >= (size_t)PTHREAD_STACK_MIN);
}

TEST(odd_stack_size_is_rounded_up_to_pages) {
    conc_thread t;
    conc_thread_options o = {NULL, 100001};
    void *r = NULL;
    CHECK_OK(conc_thread_spawn_with(&t, &o, own_stack_size, NULL));
    CHECK_OK(conc_thread_join(t, &r));
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    CHECK((size_t)r >= 100001);
    SKIP_IF(CHECK_TSAN, "TSan's pthread_create grows every stack by an amount of its own");
    CHECK((size_t)r % page == 0);
}

TEST(large_stack_is_usable) {
    const size_t big = (size_t)64 << 20;
    conc_thread t;
    conc_thread_options o = {"deep", big};
    void *r = NULL;
    /* 48 MiB of locals: far past the 8 MiB default. */
    CHECK_OK(conc_thread_spawn_with(&t, &o, touch_deep_stack, (void *)((size_t)48 << 20)));
    CHECK_OK(conc_thread_join(t, &r));
    CHECK((size_t)r >= big);
}

/* ---- resource exhaustion ---------------------------------------------- */

TEST(absurd_stack_size_is_resource_exhausted) {
    size_t sizes[] = {SIZE_MAX / 2, SIZE_MAX, (size_t)1 << 50};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (sizes[i] != SIZE_MAX && check_under_valgrind_()) {
            /* SIZE_MAX is refused by conc itself; the others reach mmap. */
            printf("  skipped stack_size %zu here: valgrind's mmap refuses a huge length "
                   "with EINVAL where Linux says ENOMEM\n", sizes[i]);
            continue;
        }
        conc_thread t = {0xdeadbeef};
        conc_thread_options o = {"huge", sizes[i]};
        CHECK_STATUS(conc_thread_spawn_with(&t, &o, echo, NULL), CONC_ERR_RESOURCE_EXHAUSTED);
        CHECK(t.id == 0);
        CHECK_MESSAGE_HAS("conc_thread_spawn_with(name \"huge\", stack_size ");
        CHECK(conc_last_os_error() != 0);
    }
    /* Nothing was left behind: normal spawning still works. */
    conc_thread t;
    CHECK_OK(conc_thread_spawn(&t, echo, NULL));
    CHECK_OK(conc_thread_join(t, NULL));
}

/* Pages of address space this process uses now. */
static size_t vm_pages(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    size_t pages = 0;
    if (f) {
        if (fscanf(f, "%zu", &pages) != 1) pages = 0;
        fclose(f);
    }
    return pages;
}

TEST(address_space_limit_is_resource_exhausted) {
    SKIP_IF(CHECK_ASAN || CHECK_TSAN,
            "the sanitizer reserves terabytes of shadow memory, so an RLIMIT_AS "
            "near the current use cannot be set");
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t used = vm_pages() * page;
    CHECK(used > 0);
    /* Room for small allocations, none for an 8 MiB thread stack. */
    struct rlimit rl = {used + ((size_t)2 << 20), used + ((size_t)2 << 20)};
    CHECK(setrlimit(RLIMIT_AS, &rl) == 0);
    conc_thread t = {0xdeadbeef};
    CHECK_STATUS(conc_thread_spawn(&t, echo, NULL), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(t.id == 0);
    CHECK_MESSAGE_HAS("conc_thread_spawn: pthread_create: ");
    CHECK_MESSAGE_HAS("(EAGAIN)");
    CHECK(conc_last_os_error() == EAGAIN);
    /* A small stack still fits. */
    conc_thread_options o = {NULL, 64 << 10};
    CHECK_OK(conc_thread_spawn_with(&t, &o, echo, (void *)(uintptr_t)4));
    void *r = NULL;
    CHECK_OK(conc_thread_join(t, &r));
    CHECK((uintptr_t)r == 4);
}

/* ---- fork ------------------------------------------------------------- */

TEST(handles_from_before_fork_are_refused_in_the_child) {
    SKIP_IF(CHECK_TSAN, "TSan cannot start threads in the child of a multi-threaded fork");
    gate g = GATE_INIT;
    conc_thread t;
    CHECK_OK(conc_thread_spawn(&t, wait_at_gate, &g));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* The thread does not exist here: joining must not wait forever. */
        int code = conc_thread_join(t, NULL) == CONC_ERR_INVALID_STATE ? 0 : 1;
        if (strstr(conc_last_error_message(), "before a fork") == NULL) code |= 2;
        /* New threads work in the child. */
        conc_thread u;
        void *r = NULL;
        if (conc_thread_spawn(&u, echo, (void *)(uintptr_t)6) != CONC_OK ||
            conc_thread_join(u, &r) != CONC_OK || (uintptr_t)r != 6)
            code |= 4;
        _exit(code);
    }
    CHECK(pid > 0);
    int status = -1;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* In the parent the handle is as good as ever. */
    gate_open(&g);
    void *r = NULL;
    CHECK_OK(conc_thread_join(t, &r));
    CHECK((uintptr_t)r == 77);
}

/* ---- cpu count, sleep, yield ------------------------------------------ */

TEST(cpu_count_follows_the_affinity_mask) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CHECK(sched_getaffinity(0, sizeof set, &set) == 0);
    size_t n = conc_cpu_count();
    CHECK(n >= 1);
    CHECK(n <= (size_t)CPU_COUNT(&set));
    /* Pinned to one CPU, the process may run on one. */
    int first = 0;
    while (!CPU_ISSET(first, &set)) first++;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    CHECK(sched_setaffinity(0, sizeof one, &one) == 0);
    CHECK(conc_cpu_count() == 1);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

TEST(sleep_ms_sleeps_at_least_that_long) {
    double t0 = now_ms();
    conc_sleep_ms(50);
    double t1 = now_ms();
    CHECK(t1 - t0 >= 50.0);
    conc_sleep_ms(0); /* returns */
    t0 = now_ms();
    conc_sleep_ms(1);
    CHECK(now_ms() - t0 >= 1.0);
}

static void *yield_a_lot(void *arg) {
    for (int i = 0; i < 1000; i++) conc_thread_yield();
    return arg;
}

TEST(yield_returns) {
    conc_thread t;
    CHECK_OK(conc_thread_spawn(&t, yield_a_lot, (void *)(uintptr_t)3));
    for (int i = 0; i < 1000; i++) conc_thread_yield();
    void *r = NULL;
    CHECK_OK(conc_thread_join(t, &r));
    CHECK((uintptr_t)r == 3);
}

int main(void) {
    RUN(results_come_back_through_join);
    RUN(pthread_exit_value_comes_back_through_join);
    RUN(double_join_is_invalid_state);
    RUN(join_after_detach_is_invalid_state);
    RUN(detach_twice_is_invalid_state);
    RUN(a_thread_may_detach_itself);
    RUN(forged_and_zero_handles_are_refused);
    RUN(copies_of_joined_handles_are_refused);
    RUN(self_join_is_deadlock_and_handle_stays_joinable);
    RUN(null_arguments);
    RUN(racing_joiners_exactly_one_wins);
    RUN(a_thousand_threads_alive_at_once);
    RUN(names_are_set_before_fn_runs);
    RUN(long_names_are_truncated_to_15_bytes);
    RUN(multibyte_names_are_cut_at_a_char_boundary);
    RUN(tiny_stack_is_raised_to_the_minimum);
    RUN(odd_stack_size_is_rounded_up_to_pages);
    RUN(large_stack_is_usable);
    RUN(absurd_stack_size_is_resource_exhausted);
    RUN(address_space_limit_is_resource_exhausted);
    RUN(handles_from_before_fork_are_refused_in_the_child);
    RUN(cpu_count_follows_the_affinity_mask);
    RUN(sleep_ms_sleeps_at_least_that_long);
    RUN(yield_returns);
    return CHECK_SUMMARY();
}
