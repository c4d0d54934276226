/* make sanitize: tsan.
 * Synchronization through the C ABI: conc_mutex, conc_cond, conc_sem,
 * conc_barrier and conc_event between threads and between processes,
 * zero-filled shared segments, every status, timeouts, robustness (holder
 * death by thread exit and by SIGKILL, consistent, unusable), forked
 * copies, coexistence with glibc's robust pthread mutexes, and a
 * contention stress. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

/* Everything the cases share, placed in a fresh conc_shm segment (all
 * zero) or in an anonymous shared map. */
typedef struct {
    conc_mutex m;
    conc_cond c;
    conc_sem s;
    conc_sem s2;
    conc_event e;
    conc_barrier b;
    conc_mutex m2;
    _Atomic long ready;
    _Atomic long arrived;
    long counter;
    long a, b2; /* an invariant: a == b2 under m */
    _Atomic long leaders[512];
} shared_t;

static conc_shm *g_shm;

/* A fresh zero-filled conc_shm segment holding a shared_t. */
static shared_t *fresh_shared(void) {
    CHECK_OK(conc_shm_create(&g_shm, NULL, sizeof(shared_t)));
    if (g_shm == NULL) {
        exit(1);
    }
    CHECK_OK(conc_shm_unlink(g_shm)); /* nothing left behind */
    return (shared_t *)conc_shm_buf(g_shm);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int wait_child(pid_t pid) {
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return st;
}

static int exited_ok(int st) { return WIFEXITED(st) && WEXITSTATUS(st) == 0; }

/* ---- the layout ------------------------------------------------------ */

TEST(layout_is_fixed_and_zero_is_ready) {
    CHECK(sizeof(conc_mutex) == 40 && _Alignof(conc_mutex) == 8);
    CHECK(sizeof(conc_cond) == 16 && _Alignof(conc_cond) <= 8);
    CHECK(sizeof(conc_sem) == 16 && _Alignof(conc_sem) <= 8);
    CHECK(sizeof(conc_barrier) == 16 && _Alignof(conc_barrier) == 8);
    CHECK(sizeof(conc_event) == 16 && _Alignof(conc_event) <= 8);
    CHECK(CONC_SEM_VALUE_MAX >= 2147483647u);
    static conc_mutex sm = CONC_MUTEX_INIT;
    conc_mutex am = CONC_MUTEX_INIT;
    conc_cond cc = CONC_COND_INIT;
    conc_sem ss = CONC_SEM_INIT;
    conc_event ee = CONC_EVENT_INIT;
    CHECK_OK(conc_mutex_lock(&sm));
    CHECK_OK(conc_mutex_unlock(&sm));
    CHECK_OK(conc_mutex_lock(&am));
    CHECK_OK(conc_mutex_unlock(&am));
    CHECK_OK(conc_cond_signal(&cc));
    CHECK(conc_sem_value(&ss) == 0);
    CHECK(!conc_event_is_set(&ee));
    /* malloc'd memory and any 8-aligned offset of a segment are fine */
    conc_mutex *hm = calloc(1, sizeof *hm);
    CHECK_OK(conc_mutex_lock(hm));
    CHECK_OK(conc_mutex_unlock(hm));
    free(hm);
    shared_t *sh = fresh_shared();
    conc_mutex *odd = (conc_mutex *)((char *)sh->leaders + 8);
    CHECK_OK(conc_mutex_lock(odd));
    CHECK_OK(conc_mutex_unlock(odd));
    conc_mutex *mis = (conc_mutex *)((char *)sh->leaders + 4);
    CHECK_STATUS(conc_mutex_lock(mis), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("aligned");
    CHECK_OK(conc_shm_close(g_shm));
}

/* ---- every status ---------------------------------------------------- */

TEST(null_pointers_are_invalid_arguments) {
    conc_mutex m = CONC_MUTEX_INIT;
    conc_cond c = CONC_COND_INIT;
    CHECK_STATUS(conc_mutex_lock(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_mutex_lock");
    CHECK_MESSAGE_HAS("mutex");
    CHECK_STATUS(conc_mutex_trylock(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mutex_lock_timeout(NULL, 5), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mutex_unlock(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mutex_consistent(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_cond_wait(NULL, &m), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_cond_wait");
    CHECK_STATUS(conc_cond_wait(&c, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_cond_wait_timeout(NULL, &m, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_cond_wait_timeout(&c, NULL, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_cond_signal(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_cond_broadcast(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_sem_init(NULL, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_sem_wait(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_sem_trywait(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_sem_wait_timeout(NULL, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_sem_post(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_sem_post");
    CHECK(conc_sem_value(NULL) == 0);
    CHECK_STATUS(conc_barrier_init(NULL, 2), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_barrier_wait(NULL, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_event_set(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_event_clear(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_event_wait(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_event_wait_timeout(NULL, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_event_wait_timeout");
    CHECK(!conc_event_is_set(NULL));
}

TEST(mutex_error_checking) {
    conc_mutex m = CONC_MUTEX_INIT;
    CHECK_STATUS(conc_mutex_unlock(&m), CONC_ERR_INVALID_STATE); /* nobody holds it */
    CHECK_MESSAGE_HAS("does not hold");
    CHECK_STATUS(conc_mutex_consistent(&m), CONC_ERR_INVALID_STATE);
    CHECK_OK(conc_mutex_lock(&m));
    CHECK_STATUS(conc_mutex_lock(&m), CONC_ERR_DEADLOCK);
    CHECK_MESSAGE_HAS("already holds");
    CHECK_STATUS(conc_mutex_lock_timeout(&m, 50), CONC_ERR_DEADLOCK);
    CHECK_STATUS(conc_mutex_lock_timeout(&m, 0), CONC_ERR_DEADLOCK);
    CHECK_STATUS(conc_mutex_trylock(&m), CONC_ERR_BUSY); /* the holder too */
    CHECK_MESSAGE_HAS("conc_mutex_trylock");
    CHECK_STATUS(conc_mutex_consistent(&m), CONC_ERR_INVALID_STATE); /* not inconsistent */
    CHECK_OK(conc_mutex_unlock(&m));
    CHECK_STATUS(conc_mutex_unlock(&m), CONC_ERR_INVALID_STATE);
    CHECK_OK(conc_mutex_trylock(&m));
    CHECK_OK(conc_mutex_unlock(&m));
    CHECK_OK(conc_mutex_lock_timeout(&m, 0));
    CHECK_OK(conc_mutex_unlock(&m));
}

static conc_mutex g_m = CONC_MUTEX_INIT;
static void *other_thread_checks(void *arg) {
    (void)arg;
    CHECK_STATUS(conc_mutex_unlock(&g_m), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_mutex_trylock(&g_m), CONC_ERR_BUSY);
    CHECK_STATUS(conc_mutex_consistent(&g_m), CONC_ERR_INVALID_STATE);
    double t0 = now_ms();
    CHECK_STATUS(conc_mutex_lock_timeout(&g_m, 60), CONC_ERR_TIMED_OUT);
    CHECK(now_ms() - t0 >= 60.0);
    CHECK_MESSAGE_HAS("conc_mutex_lock_timeout");
    t0 = now_ms();
    CHECK_STATUS(conc_mutex_lock_timeout(&g_m, 0), CONC_ERR_TIMED_OUT);
    return NULL;
}

TEST(mutex_other_thread_and_timeout) {
    CHECK_OK(conc_mutex_lock(&g_m));
    pthread_t t;
    CHECK(pthread_create(&t, NULL, other_thread_checks, NULL) == 0);
    pthread_join(t, NULL);
    CHECK_OK(conc_mutex_unlock(&g_m));
}

TEST(cond_needs_the_mutex_and_times_out_holding_it) {
    conc_mutex m = CONC_MUTEX_INIT;
    conc_cond c = CONC_COND_INIT;
    CHECK_STATUS(conc_cond_wait(&c, &m), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("does not hold");
    CHECK_STATUS(conc_cond_wait_timeout(&c, &m, 10), CONC_ERR_INVALID_STATE);
    CHECK_OK(conc_mutex_lock(&m));
    double t0 = now_ms();
    CHECK_STATUS(conc_cond_wait_timeout(&c, &m, 80), CONC_ERR_TIMED_OUT);
    CHECK(now_ms() - t0 >= 80.0);
    CHECK_MESSAGE_HAS("conc_cond_wait_timeout");
    CHECK_STATUS(conc_mutex_lock(&m), CONC_ERR_DEADLOCK); /* held again */
    CHECK_STATUS(conc_cond_wait_timeout(&c, &m, 0), CONC_ERR_TIMED_OUT);
    CHECK_OK(conc_mutex_unlock(&m));
    CHECK_OK(conc_cond_broadcast(&c));
}

TEST(sem_statuses_and_timeouts) {
    conc_sem s = CONC_SEM_INIT;
    CHECK_STATUS(conc_sem_trywait(&s), CONC_ERR_BUSY);
    CHECK_MESSAGE_HAS("conc_sem_trywait");
    double t0 = now_ms();
    CHECK_STATUS(conc_sem_wait_timeout(&s, 70), CONC_ERR_TIMED_OUT);
    CHECK(now_ms() - t0 >= 70.0);
    CHECK_STATUS(conc_sem_wait_timeout(&s, 0), CONC_ERR_TIMED_OUT);
    CHECK_OK(conc_sem_post(&s));
    CHECK(conc_sem_value(&s) == 1);
    CHECK_OK(conc_sem_wait_timeout(&s, 0));
    CHECK_STATUS(conc_sem_init(&s, CONC_SEM_VALUE_MAX + 1u), CONC_ERR_OUT_OF_RANGE);
    CHECK(conc_sem_value(&s) == 0);
    CHECK_OK(conc_sem_init(&s, CONC_SEM_VALUE_MAX - 1));
    CHECK_OK(conc_sem_post(&s));
    CHECK_STATUS(conc_sem_post(&s), CONC_ERR_OUT_OF_RANGE);
    CHECK_MESSAGE_HAS("CONC_SEM_VALUE_MAX");
    CHECK(conc_sem_value(&s) == CONC_SEM_VALUE_MAX);
    CHECK_OK(conc_sem_trywait(&s));
    CHECK(conc_sem_value(&s) == CONC_SEM_VALUE_MAX - 1);
    CHECK_OK(conc_sem_init(&s, 3));
    CHECK_OK(conc_sem_wait(&s));
    CHECK_OK(conc_sem_wait(&s));
    CHECK_OK(conc_sem_trywait(&s));
    CHECK_STATUS(conc_sem_trywait(&s), CONC_ERR_BUSY);
}

TEST(barrier_statuses) {
    conc_barrier b;
    memset(&b, 0, sizeof b);
    bool leader = false;
    CHECK_STATUS(conc_barrier_wait(&b, &leader), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("never initialised");
    CHECK_STATUS(conc_barrier_init(&b, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK_OK(conc_barrier_init(&b, 1));
    CHECK_OK(conc_barrier_wait(&b, &leader));
    CHECK(leader);
    CHECK_OK(conc_barrier_wait(&b, NULL));
}

TEST(event_statuses_and_timeouts) {
    conc_event e = CONC_EVENT_INIT;
    double t0 = now_ms();
    CHECK_STATUS(conc_event_wait_timeout(&e, 60), CONC_ERR_TIMED_OUT);
    CHECK(now_ms() - t0 >= 60.0);
    CHECK_STATUS(conc_event_wait_timeout(&e, 0), CONC_ERR_TIMED_OUT);
    CHECK_OK(conc_event_set(&e));
    CHECK_OK(conc_event_set(&e));
    CHECK(conc_event_is_set(&e));
    CHECK_OK(conc_event_wait(&e));
    CHECK_OK(conc_event_wait_timeout(&e, 0));
    CHECK_OK(conc_event_clear(&e));
    CHECK(!conc_event_is_set(&e));
    CHECK_STATUS(conc_event_wait_timeout(&e, 1), CONC_ERR_TIMED_OUT);
}

/* ---- between processes, in a zero-filled segment ---------------------- */

static int count_in_child(void *arg) {
    shared_t *sh = arg;
    for (int i = 0; i < 20000; i++) {
        if (conc_mutex_lock(&sh->m) != CONC_OK) {
            return 2;
        }
        sh->counter++;
        if (conc_mutex_unlock(&sh->m) != CONC_OK) {
            return 3;
        }
    }
    return 0;
}

TEST(zeroed_segment_works_between_two_processes) {
    shared_t *sh = fresh_shared();
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, count_in_child, sh));
    CHECK(count_in_child(sh) == 0);
    int code = -1;
    CHECK_OK(conc_process_join(p, &code));
    CHECK(code == 0);
    CHECK(sh->counter == 40000);

    /* a semaphore ping-pong and an event, also from zero */
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; i < 1000; i++) {
            if (conc_sem_wait(&sh->s) != CONC_OK || conc_sem_post(&sh->s2) != CONC_OK) {
                _exit(2);
            }
        }
        _exit(conc_event_wait(&sh->e) == CONC_OK ? 0 : 3);
    }
    for (int i = 0; i < 1000; i++) {
        CHECK_OK(conc_sem_post(&sh->s));
        CHECK_OK(conc_sem_wait(&sh->s2));
    }
    usleep(20000);
    CHECK_OK(conc_event_set(&sh->e));
    CHECK(exited_ok(wait_child(pid)));
    CHECK(conc_sem_value(&sh->s) == 0 && conc_sem_value(&sh->s2) == 0);
    CHECK_OK(conc_shm_close(g_shm));
}

TEST(cond_waiters_in_other_processes) {
    shared_t *sh = fresh_shared();
    enum { KIDS = 3 };
    pid_t kids[KIDS];
    for (int k = 0; k < KIDS; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            if (conc_mutex_lock(&sh->m) != CONC_OK) {
                _exit(2);
            }
            atomic_fetch_add(&sh->arrived, 1);
            while (atomic_load(&sh->ready) == 0) {
                if (conc_cond_wait(&sh->c, &sh->m) != CONC_OK) {
                    _exit(3);
                }
            }
            sh->counter++;
            _exit(conc_mutex_unlock(&sh->m) == CONC_OK ? 0 : 4);
        }
    }
    while (atomic_load(&sh->arrived) < KIDS) {
        usleep(1000);
    }
    usleep(20000);
    /* one signal wakes at least one */
    CHECK_OK(conc_mutex_lock(&sh->m));
    atomic_store(&sh->ready, 1);
    CHECK_OK(conc_cond_signal(&sh->c));
    CHECK_OK(conc_mutex_unlock(&sh->m));
    usleep(100000);
    CHECK_OK(conc_cond_broadcast(&sh->c));
    for (int k = 0; k < KIDS; k++) {
        CHECK(exited_ok(wait_child(kids[k])));
    }
    CHECK(sh->counter == KIDS);
    CHECK_OK(conc_shm_close(g_shm));
}

TEST(event_wakes_waiters_in_other_processes_even_if_cleared_at_once) {
    shared_t *sh = fresh_shared();
    enum { KIDS = 4 };
    pid_t kids[KIDS];
    for (int k = 0; k < KIDS; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            atomic_fetch_add(&sh->arrived, 1);
            _exit(conc_event_wait_timeout(&sh->e, 30000) == CONC_OK ? 0 : 2);
        }
    }
    while (atomic_load(&sh->arrived) < KIDS) {
        usleep(1000);
    }
    usleep(50000); /* let them sleep */
    CHECK_OK(conc_event_set(&sh->e));
    CHECK_OK(conc_event_clear(&sh->e));
    for (int k = 0; k < KIDS; k++) {
        CHECK(exited_ok(wait_child(kids[k])));
    }
    CHECK(!conc_event_is_set(&sh->e));
    CHECK_OK(conc_shm_close(g_shm));
}

/* ---- barrier rounds ---------------------------------------------------- */

enum { B_THREADS = 4, B_ROUNDS = 3000 };
static shared_t *g_sh;

static void *barrier_worker(void *arg) {
    (void)arg;
    for (int r = 0; r < B_ROUNDS; r++) {
        atomic_fetch_add(&g_sh->arrived, 1);
        bool leader = false;
        if (conc_barrier_wait(&g_sh->b, &leader) != CONC_OK) {
            CHECK(0);
            return NULL;
        }
        /* never slipped through: all B_THREADS arrivals of round r happened */
        CHECK(atomic_load(&g_sh->arrived) >= (long)(r + 1) * B_THREADS);
        if (leader) {
            atomic_fetch_add(&g_sh->leaders[r % 512], 1);
        }
    }
    return NULL;
}

TEST(barrier_rounds_have_exactly_one_leader) {
    g_sh = fresh_shared();
    CHECK_OK(conc_barrier_init(&g_sh->b, B_THREADS));
    pthread_t t[B_THREADS];
    for (int i = 0; i < B_THREADS; i++) {
        CHECK(pthread_create(&t[i], NULL, barrier_worker, NULL) == 0);
    }
    for (int i = 0; i < B_THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    long total = 0;
    for (int i = 0; i < 512; i++) {
        long want = B_ROUNDS / 512 + (i < B_ROUNDS % 512 ? 1 : 0);
        CHECK(atomic_load(&g_sh->leaders[i]) == want);
        total += atomic_load(&g_sh->leaders[i]);
    }
    CHECK(total == B_ROUNDS);
    CHECK_OK(conc_shm_close(g_shm));
}

TEST(barrier_between_processes) {
    shared_t *sh = fresh_shared();
    CHECK_OK(conc_barrier_init(&sh->b, 3));
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            for (int r = 0; r < 300; r++) {
                bool leader = false;
                if (conc_barrier_wait(&sh->b, &leader) != CONC_OK) {
                    _exit(2);
                }
                if (leader) {
                    atomic_fetch_add(&sh->leaders[r], 1);
                }
            }
            _exit(0);
        }
    }
    for (int r = 0; r < 300; r++) {
        bool leader = false;
        CHECK_OK(conc_barrier_wait(&sh->b, &leader));
        if (leader) {
            atomic_fetch_add(&sh->leaders[r], 1);
        }
    }
    for (int k = 0; k < 2; k++) {
        CHECK(exited_ok(wait_child(kids[k])));
    }
    for (int r = 0; r < 300; r++) {
        CHECK(atomic_load(&sh->leaders[r]) == 1);
    }
    CHECK_OK(conc_shm_close(g_shm));
}

/* ---- robustness -------------------------------------------------------- */

static void *lock_and_exit(void *arg) {
    CHECK_OK(conc_mutex_lock((conc_mutex *)arg));
    return NULL; /* ends holding it */
}

TEST(owner_death_by_thread_exit_then_consistent) {
    conc_mutex m = CONC_MUTEX_INIT;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, lock_and_exit, &m) == 0);
    pthread_join(t, NULL);
    CHECK_STATUS(conc_mutex_lock(&m), CONC_ERR_OWNER_DEAD);
    CHECK_MESSAGE_HAS("conc_mutex_consistent");
    CHECK_STATUS(conc_mutex_lock(&m), CONC_ERR_DEADLOCK); /* held by the caller */
    CHECK_OK(conc_mutex_consistent(&m));
    CHECK_STATUS(conc_mutex_consistent(&m), CONC_ERR_INVALID_STATE);
    CHECK_OK(conc_mutex_unlock(&m));
    CHECK_OK(conc_mutex_trylock(&m));
    CHECK_OK(conc_mutex_unlock(&m));
    /* trylock and lock_timeout report it too */
    CHECK(pthread_create(&t, NULL, lock_and_exit, &m) == 0);
    pthread_join(t, NULL);
    CHECK_STATUS(conc_mutex_trylock(&m), CONC_ERR_OWNER_DEAD);
    CHECK_OK(conc_mutex_consistent(&m));
    CHECK_OK(conc_mutex_unlock(&m));
    CHECK(pthread_create(&t, NULL, lock_and_exit, &m) == 0);
    pthread_join(t, NULL);
    CHECK_STATUS(conc_mutex_lock_timeout(&m, 10), CONC_ERR_OWNER_DEAD);
    CHECK_OK(conc_mutex_consistent(&m));
    CHECK_OK(conc_mutex_unlock(&m));
}

static void *consistent_from_other_thread(void *arg) {
    CHECK_STATUS(conc_mutex_consistent((conc_mutex *)arg), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_mutex_unlock((conc_mutex *)arg), CONC_ERR_INVALID_STATE);
    return NULL;
}

TEST(unusable_after_unlock_without_consistent) {
    conc_mutex m = CONC_MUTEX_INIT;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, lock_and_exit, &m) == 0);
    pthread_join(t, NULL);
    CHECK_STATUS(conc_mutex_lock(&m), CONC_ERR_OWNER_DEAD);
    CHECK(pthread_create(&t, NULL, consistent_from_other_thread, &m) == 0);
    pthread_join(t, NULL);
    CHECK_OK(conc_mutex_unlock(&m)); /* without consistent */
    CHECK_STATUS(conc_mutex_lock(&m), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("unusable");
    CHECK_STATUS(conc_mutex_trylock(&m), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_mutex_lock_timeout(&m, 10), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_mutex_unlock(&m), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_mutex_consistent(&m), CONC_ERR_INVALID_STATE);
    memset(&m, 0, sizeof m); /* zeroed again: usable */
    CHECK_OK(conc_mutex_lock(&m));
    CHECK_OK(conc_mutex_unlock(&m));
}

static void *wait_unusable(void *arg) {
    CHECK_STATUS(conc_mutex_lock((conc_mutex *)arg), CONC_ERR_INVALID_STATE);
    return NULL;
}

TEST(waiters_see_unusable) {
    conc_mutex m = CONC_MUTEX_INIT;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, lock_and_exit, &m) == 0);
    pthread_join(t, NULL);
    CHECK_STATUS(conc_mutex_lock(&m), CONC_ERR_OWNER_DEAD);
    pthread_t w[3];
    for (int i = 0; i < 3; i++) {
        CHECK(pthread_create(&w[i], NULL, wait_unusable, &m) == 0);
    }
    usleep(50000);
    CHECK_OK(conc_mutex_unlock(&m));
    for (int i = 0; i < 3; i++) {
        pthread_join(w[i], NULL);
    }
}

TEST(owner_death_by_sigkill_wakes_a_waiter_in_another_process) {
    shared_t *sh = fresh_shared();
    pid_t holder = fork();
    if (holder == 0) {
        if (conc_mutex_lock(&sh->m) != CONC_OK) {
            _exit(2);
        }
        sh->a++; /* half-updated: a != b2 */
        atomic_store(&sh->ready, 1);
        for (;;) {
            pause();
        }
    }
    while (atomic_load(&sh->ready) == 0) {
        usleep(1000);
    }
    pid_t waiter = fork();
    if (waiter == 0) {
        atomic_store(&sh->arrived, 1);
        conc_status st = conc_mutex_lock(&sh->m);
        if (st != CONC_ERR_OWNER_DEAD) {
            _exit(2);
        }
        if (sh->a != sh->b2) {
            sh->b2 = sh->a; /* repair */
        }
        if (conc_mutex_consistent(&sh->m) != CONC_OK) {
            _exit(3);
        }
        sh->a++;
        sh->b2++;
        _exit(conc_mutex_unlock(&sh->m) == CONC_OK ? 0 : 4);
    }
    while (atomic_load(&sh->arrived) == 0) {
        usleep(1000);
    }
    usleep(50000); /* the waiter sleeps in the lock */
    kill(holder, SIGKILL);
    CHECK(WIFSIGNALED(wait_child(holder)));
    CHECK(exited_ok(wait_child(waiter)));
    CHECK_OK(conc_mutex_lock(&sh->m));
    CHECK(sh->a == sh->b2 && sh->a == 2);
    CHECK_OK(conc_mutex_unlock(&sh->m));
    CHECK_OK(conc_shm_close(g_shm));
}

TEST(cond_wait_reports_owner_dead) {
    shared_t *sh = fresh_shared();
    pid_t waiter = fork();
    if (waiter == 0) {
        if (conc_mutex_lock(&sh->m) != CONC_OK) {
            _exit(2);
        }
        atomic_store(&sh->arrived, 1);
        conc_status st = conc_cond_wait(&sh->c, &sh->m);
        if (st != CONC_ERR_OWNER_DEAD) {
            _exit(3);
        }
        if (conc_mutex_consistent(&sh->m) != CONC_OK) {
            _exit(4);
        }
        _exit(conc_mutex_unlock(&sh->m) == CONC_OK ? 0 : 5);
    }
    while (atomic_load(&sh->arrived) == 0) {
        usleep(1000);
    }
    pid_t killer = fork();
    if (killer == 0) {
        /* takes the mutex the waiter released, signals, dies holding it */
        if (conc_mutex_lock(&sh->m) != CONC_OK) {
            _exit(2);
        }
        conc_cond_signal(&sh->c);
        raise(SIGKILL);
        _exit(9);
    }
    CHECK(WIFSIGNALED(wait_child(killer)));
    CHECK(exited_ok(wait_child(waiter)));
    CHECK_OK(conc_mutex_lock(&sh->m));
    CHECK_OK(conc_mutex_unlock(&sh->m));
    CHECK_OK(conc_shm_close(g_shm));
}

TEST(forked_child_does_not_hold_its_private_copy) {
    conc_mutex *m = calloc(1, sizeof *m); /* private memory: copied by fork */
    CHECK_OK(conc_mutex_lock(m));
    pid_t pid = fork();
    if (pid == 0) {
        conc_status t = conc_mutex_trylock(m);
        if (t != CONC_ERR_BUSY && t != CONC_ERR_OWNER_DEAD) {
            _exit(2);
        }
        if (conc_mutex_unlock(m) != CONC_ERR_INVALID_STATE) {
            _exit(3);
        }
        if (conc_mutex_lock_timeout(m, 20) != CONC_ERR_TIMED_OUT) {
            _exit(4);
        }
        /* the child's own mutexes work, with its own thread id */
        conc_mutex mine = CONC_MUTEX_INIT;
        if (conc_mutex_lock(&mine) != CONC_OK || conc_mutex_lock(&mine) != CONC_ERR_DEADLOCK ||
            conc_mutex_unlock(&mine) != CONC_OK) {
            _exit(5);
        }
        _exit(0);
    }
    CHECK(exited_ok(wait_child(pid)));
    CHECK_OK(conc_mutex_unlock(m));
    free(m);
}

TEST(forked_child_gets_owner_dead_from_its_own_death) {
    /* the child's TID (not the parent's) marks what it holds */
    shared_t *sh = fresh_shared();
    CHECK_OK(conc_mutex_lock(&sh->m2)); /* the parent's TID is cached */
    CHECK_OK(conc_mutex_unlock(&sh->m2));
    pid_t pid = fork();
    if (pid == 0) {
        if (conc_mutex_lock(&sh->m) != CONC_OK) {
            _exit(2);
        }
        _exit(0); /* exits holding it */
    }
    CHECK(exited_ok(wait_child(pid)));
    CHECK_STATUS(conc_mutex_lock(&sh->m), CONC_ERR_OWNER_DEAD);
    CHECK_OK(conc_mutex_consistent(&sh->m));
    CHECK_OK(conc_mutex_unlock(&sh->m));
    CHECK_OK(conc_shm_close(g_shm));
}

/* A child's own atfork handler may lock a conc_mutex: it already uses the
 * child's thread id, so the child's death still marks the mutex. */
static conc_mutex *g_atfork_m;
static int g_atfork_locked;
static void lock_in_child_handler(void) {
    if (g_atfork_m != NULL) {
        g_atfork_locked = conc_mutex_lock(g_atfork_m) == CONC_OK;
    }
}

TEST(atfork_child_handler_uses_the_child_thread_id) {
    shared_t *sh = fresh_shared();
    g_atfork_m = &sh->m;
    CHECK(pthread_atfork(NULL, NULL, lock_in_child_handler) == 0);
    CHECK_OK(conc_mutex_lock(&sh->m2)); /* the parent's TID is cached */
    CHECK_OK(conc_mutex_unlock(&sh->m2));
    pid_t pid = fork();
    if (pid == 0) {
        _exit(g_atfork_locked ? 0 : 1); /* ends holding sh->m */
    }
    g_atfork_m = NULL;
    CHECK(exited_ok(wait_child(pid)));
    CHECK_STATUS(conc_mutex_trylock(&sh->m), CONC_ERR_OWNER_DEAD);
    CHECK_OK(conc_mutex_consistent(&sh->m));
    CHECK_OK(conc_mutex_unlock(&sh->m));
    CHECK_OK(conc_shm_close(g_shm));
}

/* conc links into glibc's own robust list: robust pthread mutexes held
 * alongside conc mutexes must still be recovered when the thread dies. */
static pthread_mutex_t *g_pm;
static conc_mutex g_cm1 = CONC_MUTEX_INIT, g_cm2 = CONC_MUTEX_INIT;
static void *mixed_holder(void *arg) {
    (void)arg;
    CHECK(pthread_mutex_lock(&g_pm[0]) == 0);
    CHECK_OK(conc_mutex_lock(&g_cm1));
    CHECK(pthread_mutex_lock(&g_pm[1]) == 0);
    CHECK_OK(conc_mutex_lock(&g_cm2));
    CHECK(pthread_mutex_lock(&g_pm[2]) == 0);
    /* release some out of order: the list stays well formed */
    CHECK(pthread_mutex_unlock(&g_pm[1]) == 0);
    CHECK_OK(conc_mutex_unlock(&g_cm1));
    CHECK_OK(conc_mutex_lock(&g_cm1));
    return NULL; /* dies holding pm0, pm2, cm1, cm2 */
}

TEST(coexists_with_glibc_robust_mutexes) {
    pthread_mutex_t pm[3];
    pthread_mutexattr_t at;
    pthread_mutexattr_init(&at);
    pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
    for (int i = 0; i < 3; i++) {
        pthread_mutex_init(&pm[i], &at);
    }
    g_pm = pm;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, mixed_holder, NULL) == 0);
    pthread_join(t, NULL);
    CHECK(pthread_mutex_lock(&pm[0]) == EOWNERDEAD);
    CHECK(pthread_mutex_consistent(&pm[0]) == 0);
    CHECK(pthread_mutex_lock(&pm[1]) == 0);
    CHECK(pthread_mutex_lock(&pm[2]) == EOWNERDEAD);
    CHECK(pthread_mutex_consistent(&pm[2]) == 0);
    CHECK_STATUS(conc_mutex_lock(&g_cm1), CONC_ERR_OWNER_DEAD);
    CHECK_STATUS(conc_mutex_lock(&g_cm2), CONC_ERR_OWNER_DEAD);
    CHECK_OK(conc_mutex_consistent(&g_cm1));
    CHECK_OK(conc_mutex_consistent(&g_cm2));
    /* and this thread's list too: unlock in any order */
    CHECK(pthread_mutex_unlock(&pm[1]) == 0);
    CHECK_OK(conc_mutex_unlock(&g_cm1));
    CHECK(pthread_mutex_unlock(&pm[0]) == 0);
    CHECK_OK(conc_mutex_unlock(&g_cm2));
    CHECK(pthread_mutex_unlock(&pm[2]) == 0);
}

/* ---- contention stress: 8 threads in each of 2 processes ---------------- */

enum { S_THREADS = 8 };
static long s_iters = 100000;

static void *stress_worker(void *arg) {
    shared_t *sh = arg;
    for (long i = 0; i < s_iters; i++) {
        if (conc_mutex_lock(&sh->m) != CONC_OK) {
            CHECK(0);
            return NULL;
        }
        sh->counter++;
        sh->a++;
        sh->b2++;
        if (conc_mutex_unlock(&sh->m) != CONC_OK) {
            CHECK(0);
            return NULL;
        }
    }
    return NULL;
}

static int stress_process(shared_t *sh) {
    pthread_t t[S_THREADS];
    for (int i = 0; i < S_THREADS; i++) {
        if (pthread_create(&t[i], NULL, stress_worker, sh) != 0) {
            return 2;
        }
    }
    for (int i = 0; i < S_THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    return check_failures_ == 0 ? 0 : 3;
}

TEST(contention_stress_two_processes_eight_threads_each) {
    /* under the sanitizers and valgrind: a tenth of the increments */
    if (CHECK_TSAN || CHECK_ASAN || check_under_valgrind_()) {
        s_iters = 10000;
    }
    shared_t *sh = fresh_shared();
    pid_t pid = fork(); /* before any thread exists: fine under TSan */
    if (pid == 0) {
        _exit(stress_process(sh));
    }
    CHECK(stress_process(sh) == 0);
    CHECK(exited_ok(wait_child(pid)));
    CHECK(sh->counter == 2 * S_THREADS * s_iters);
    CHECK(sh->a == sh->b2);
    CHECK_OK(conc_shm_close(g_shm));
}

int main(void) {
    RUN(layout_is_fixed_and_zero_is_ready);
    RUN(null_pointers_are_invalid_arguments);
    RUN(mutex_error_checking);
    RUN(mutex_other_thread_and_timeout);
    RUN(cond_needs_the_mutex_and_times_out_holding_it);
    RUN(sem_statuses_and_timeouts);
    RUN(barrier_statuses);
    RUN(event_statuses_and_timeouts);
    RUN(zeroed_segment_works_between_two_processes);
    RUN(cond_waiters_in_other_processes);
    RUN(event_wakes_waiters_in_other_processes_even_if_cleared_at_once);
    RUN(barrier_rounds_have_exactly_one_leader);
    RUN(barrier_between_processes);
    RUN(owner_death_by_thread_exit_then_consistent);
    RUN(unusable_after_unlock_without_consistent);
    RUN(waiters_see_unusable);
    RUN(owner_death_by_sigkill_wakes_a_waiter_in_another_process);
    RUN(cond_wait_reports_owner_dead);
    RUN(forked_child_does_not_hold_its_private_copy);
    RUN(forked_child_gets_owner_dead_from_its_own_death);
    RUN(atfork_child_handler_uses_the_child_thread_id);
    RUN(coexists_with_glibc_robust_mutexes);
    RUN(contention_stress_two_processes_eight_threads_each);
    return CHECK_SUMMARY();
}
