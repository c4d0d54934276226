/* make sanitize: tsan.
 * Threads, 0.2: timed joins, and joins that would close a cycle. */
#include "check.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *sleep_then_echo(void *arg) {
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    return arg;
}

static void *echo(void *arg) { return arg; }

TEST(join_timeout_polls_waits_and_stays_joinable) {
    conc_thread t;
    CHECK_OK(conc_thread_spawn(&t, sleep_then_echo, (void *)5));
    void *r = (void *)1;
    CHECK_STATUS(conc_thread_join_timeout(t, 0, &r), CONC_ERR_TIMED_OUT);
    double t0 = now_ms();
    CHECK_STATUS(conc_thread_join_timeout(t, 50, &r), CONC_ERR_TIMED_OUT);
    CHECK(now_ms() - t0 >= 49.0);
    CHECK(r == (void *)1); /* written only on success */
    CHECK_MESSAGE_HAS("conc_thread_join_timeout(thread 0x");
    CHECK_OK(conc_thread_join_timeout(t, 30000, &r));
    CHECK(r == (void *)5);
    CHECK_STATUS(conc_thread_join_timeout(t, 0, &r), CONC_ERR_INVALID_STATE);
    /* An ended thread: 0 joins it at once. UINT64_MAX waits for ever. */
    CHECK_OK(conc_thread_spawn(&t, echo, (void *)6));
    for (int i = 0; conc_thread_join_timeout(t, 0, &r) == CONC_ERR_TIMED_OUT && i < 30000; i++) {
        conc_sleep_ms(1);
    }
    CHECK(r == (void *)6);
    CHECK_OK(conc_thread_spawn(&t, echo, (void *)7));
    CHECK_OK(conc_thread_join_timeout(t, UINT64_MAX, &r));
    CHECK(r == (void *)7);
    conc_thread zero = {0};
    CHECK_STATUS(conc_thread_join_timeout(zero, 10, NULL), CONC_ERR_INVALID_STATE);
}

/* ---- joins among several threads ---------------------------------------- */

#define MAX_RING 4
static conc_thread ring[MAX_RING];
static atomic_int ready, deadlocks, oks;
static int ring_size;
static int timed;

static void *join_next(void *arg) {
    int i = (int)(intptr_t)arg;
    while (atomic_load(&ready) == 0) {
        conc_thread_yield();
    }
    conc_thread next = ring[(i + 1) % ring_size];
    conc_status s = timed ? conc_thread_join_timeout(next, 60000, NULL)
                          : conc_thread_join(next, NULL);
    if (s == CONC_ERR_DEADLOCK) {
        atomic_fetch_add(&deadlocks, 1);
    } else if (s == CONC_OK) {
        atomic_fetch_add(&oks, 1);
    }
    return NULL;
}

/* Each thread of a ring joins the next one: the last join to start would
 * close the cycle and gets DEADLOCK, so its thread ends, and the others'
 * joins then return one after the other. Without the check, all hang. */
static void run_ring(int n, int use_timeout) {
    ring_size = n;
    timed = use_timeout;
    atomic_store(&ready, 0);
    atomic_store(&deadlocks, 0);
    atomic_store(&oks, 0);
    for (int i = 0; i < n; i++) {
        CHECK_OK(conc_thread_spawn(&ring[i], join_next, (void *)(intptr_t)i));
    }
    atomic_store(&ready, 1);
    while (atomic_load(&deadlocks) + atomic_load(&oks) < n) {
        conc_sleep_ms(1);
    }
    /* Exactly one ring member's handle was not joined by another one:
     * the one whose joiner got DEADLOCK. */
    int joined_here = 0;
    for (int i = 0; i < n; i++) {
        conc_status s = conc_thread_join(ring[i], NULL);
        if (s == CONC_OK) {
            joined_here++;
        } else {
            CHECK_STATUS(s, CONC_ERR_INVALID_STATE);
        }
    }
    CHECK(atomic_load(&deadlocks) == 1);
    CHECK(atomic_load(&oks) == n - 1);
    CHECK(joined_here == 1);
}

TEST(two_threads_joining_each_other) {
    for (int round = 0; round < 20; round++) {
        run_ring(2, 0);
    }
}

TEST(a_cycle_of_three_and_four) {
    for (int round = 0; round < 10; round++) {
        run_ring(3, 0);
        run_ring(4, 0);
    }
}

TEST(timed_joins_detect_cycles_too) {
    for (int round = 0; round < 10; round++) {
        run_ring(2, 1);
        run_ring(3, 1);
    }
}

static conc_thread me_handle;
static atomic_int me_ready;

static void *join_self_timed(void *arg) {
    (void)arg;
    while (!atomic_load(&me_ready)) {
        conc_thread_yield();
    }
    conc_status s = conc_thread_join_timeout(me_handle, 1000, NULL);
    atomic_store(&me_ready, 2);
    return (void *)(intptr_t)s;
}

TEST(timed_self_join_is_deadlock_and_stays_joinable) {
    atomic_store(&me_ready, 0);
    CHECK_OK(conc_thread_spawn(&me_handle, join_self_timed, NULL));
    atomic_store(&me_ready, 1);
    while (atomic_load(&me_ready) != 2) {
        conc_sleep_ms(1);
    }
    void *r = NULL; /* still joinable after the DEADLOCK */
    CHECK_OK(conc_thread_join(me_handle, &r));
    CHECK((conc_status)(intptr_t)r == CONC_ERR_DEADLOCK);
}

int main(void) {
    RUN(join_timeout_polls_waits_and_stays_joinable);
    RUN(two_threads_joining_each_other);
    RUN(a_cycle_of_three_and_four);
    RUN(timed_joins_detect_cycles_too);
    RUN(timed_self_join_is_deadlock_and_stays_joinable);
    return CHECK_SUMMARY();
}
