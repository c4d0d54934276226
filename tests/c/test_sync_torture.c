/* make sanitize: tsan.
 * Kill torture of the synchronization primitives: in each round three
 * child processes work on a conc_mutex, conc_cond, conc_sem or conc_event in a
 * shared segment, and one of them (the victim) is SIGKILLed at a random
 * instant, while it takes, holds or releases the mutex or waits. Every
 * round must end with no hang (a per-round watchdog), the two survivors
 * having finished (three processes: a woken waiter killed before it takes
 * the lock while a third takes and releases it is the known way to strand
 * a sleeper), the mutex usable after conc_mutex_consistent, and the guarded
 * invariant (a == b, repaired on OWNER_DEAD) holding.
 *
 * 1,000 rounds; a tenth under the sanitizers and valgrind, which slow
 * every fork and futex call down many times. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

typedef struct {
    conc_mutex m;
    conc_cond c;
    conc_sem s;
    conc_event e;
    _Atomic int stop;
    _Atomic long started;
    long a, b; /* the invariant: a == b whenever m is free */
    _Atomic long owner_dead_seen;
} shared_t;

enum { MODE_MUTEX, MODE_COND, MODE_SEM, MODE_EVENT, MODES };
enum { KIDS = 3 }; /* kid[0] is the victim */
static const char *const mode_name[MODES] = {"mutex", "cond", "sem", "event"};

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* The holder's repair: b follows a (a was bumped first). */
static int repair_after(conc_status st, shared_t *sh) {
    if (st == CONC_ERR_OWNER_DEAD) {
        atomic_fetch_add(&sh->owner_dead_seen, 1);
        sh->b = sh->a;
        return conc_mutex_consistent(&sh->m) == CONC_OK;
    }
    return st == CONC_OK;
}

static int locked_step(shared_t *sh) {
    if (!repair_after(conc_mutex_lock(&sh->m), sh)) {
        return 0;
    }
    if (sh->a != sh->b) {
        return 0; /* broken invariant under the lock */
    }
    sh->a++;
    for (volatile int i = 0; i < 20; i++) {
    }
    sh->b++;
    return conc_mutex_unlock(&sh->m) == CONC_OK;
}

/* Runs until `stop` (the survivor) or until killed (the victim). */
static int worker(shared_t *sh, int mode) {
    atomic_fetch_add(&sh->started, 1);
    while (!atomic_load(&sh->stop)) {
        switch (mode) {
        case MODE_MUTEX:
            if (!locked_step(sh)) {
                return 2;
            }
            break;
        case MODE_COND: {
            if (!repair_after(conc_mutex_lock(&sh->m), sh)) {
                return 3;
            }
            if (sh->a != sh->b) {
                return 4;
            }
            sh->a++;
            sh->b++;
            conc_cond_signal(&sh->c);
            if (!atomic_load(&sh->stop) && !repair_after(conc_cond_wait(&sh->c, &sh->m), sh)) {
                return 5;
            }
            if (conc_mutex_unlock(&sh->m) != CONC_OK) {
                return 6;
            }
            break;
        }
        case MODE_SEM:
            if (conc_sem_wait(&sh->s) != CONC_OK) {
                return 7;
            }
            if (!locked_step(sh)) {
                return 8;
            }
            if (conc_sem_post(&sh->s) != CONC_OK) {
                return 9;
            }
            break;
        case MODE_EVENT:
            if (conc_event_wait(&sh->e) != CONC_OK) {
                return 10;
            }
            if (!locked_step(sh)) {
                return 11;
            }
            break;
        }
    }
    return 0;
}

static long rounds_for_build(void) {
    return (CHECK_TSAN || CHECK_ASAN || check_under_valgrind_()) ? 100 : 1000;
}

TEST(kill_torture) {
    conc_shm *shm = NULL;
    CHECK_OK(conc_shm_create(&shm, NULL, sizeof(shared_t)));
    if (shm == NULL) {
        return;
    }
    CHECK_OK(conc_shm_unlink(shm));
    shared_t *sh = (shared_t *)conc_shm_buf(shm);
    srand((unsigned)getpid());
    long rounds = rounds_for_build();
    long hangs = 0, bad = 0;
    for (long r = 0; r < rounds && hangs == 0 && bad < 5; r++) {
        int mode = (int)(r % MODES);
        atomic_store(&sh->stop, 0);
        atomic_store(&sh->started, 0);
        CHECK_OK(conc_sem_init(&sh->s, 1));
        CHECK_OK(conc_event_clear(&sh->e));
        pid_t kid[KIDS];
        for (int k = 0; k < KIDS; k++) {
            kid[k] = fork();
            if (kid[k] == 0) {
                _exit(worker(sh, mode));
            }
        }
        while (atomic_load(&sh->started) < KIDS) {
            usleep(100);
        }
        /* a random instant: 0 to 2 ms, with the event toggling */
        double until = now_ms() + (double)(rand() % 2000) / 1000.0;
        while (now_ms() < until) {
            if (mode == MODE_EVENT) {
                conc_event_set(&sh->e);
                conc_event_clear(&sh->e);
            }
        }
        kill(kid[0], SIGKILL);
        int st = 0;
        while (waitpid(kid[0], &st, 0) < 0 && errno == EINTR) {
        }
        if (!WIFSIGNALED(st)) {
            fprintf(stderr, "  round %ld (%s): the victim ended by itself, status %d\n", r,
                    mode_name[mode], st);
            bad++;
        }
        /* stop the survivors; they must finish (helped only as a program
         * would: signal, post, set) */
        atomic_store(&sh->stop, 1);
        double deadline = now_ms() + 20000.0;
        int left = KIDS - 1;
        int alive[KIDS] = {0, 1, 1};
        while (left > 0 && now_ms() < deadline) {
            for (int k = 1; k < KIDS; k++) {
                if (alive[k] && waitpid(kid[k], &st, WNOHANG) == kid[k]) {
                    alive[k] = 0;
                    left--;
                    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                        fprintf(stderr, "  round %ld (%s): a survivor failed, status %d\n", r,
                                mode_name[mode], st);
                        bad++;
                    }
                }
            }
            if (left > 0) {
                conc_cond_broadcast(&sh->c);
                conc_sem_post(&sh->s);
                conc_event_set(&sh->e);
                usleep(500);
            }
        }
        if (left > 0) {
            fprintf(stderr, "  round %ld (%s): HANG: %d survivor(s) did not finish\n", r,
                    mode_name[mode], left);
            for (int k = 1; k < KIDS; k++) {
                if (alive[k]) {
                    kill(kid[k], SIGKILL);
                    waitpid(kid[k], &st, 0);
                }
            }
            hangs++;
            break;
        }
        /* the mutex is usable (after consistent) and the invariant holds */
        conc_status ls = conc_mutex_lock_timeout(&sh->m, 20000);
        if (ls == CONC_ERR_TIMED_OUT) {
            fprintf(stderr, "  round %ld (%s): HANG: the mutex stayed locked\n", r,
                    mode_name[mode]);
            hangs++;
            break;
        }
        if (!repair_after(ls, sh)) {
            fprintf(stderr, "  round %ld (%s): lock gave %s\n", r, mode_name[mode],
                    conc_status_str(ls));
            bad++;
            memset(&sh->m, 0, sizeof sh->m);
            continue;
        }
        if (sh->a != sh->b) {
            fprintf(stderr, "  round %ld (%s): invariant broken: a=%ld b=%ld\n", r,
                    mode_name[mode], sh->a, sh->b);
            bad++;
            sh->b = sh->a;
        }
        CHECK_OK(conc_mutex_unlock(&sh->m));
        CHECK_OK(conc_mutex_trylock(&sh->m));
        CHECK_OK(conc_mutex_unlock(&sh->m));
    }
    CHECK(hangs == 0);
    CHECK(bad == 0);
    printf("  %ld rounds, %ld OWNER_DEAD recoveries, counter %ld\n", rounds,
           atomic_load(&sh->owner_dead_seen), sh->a);
    CHECK(atomic_load(&sh->owner_dead_seen) > 0);
    CHECK_OK(conc_shm_close(shm));
}

int main(void) {
    RUN(kill_torture);
    return CHECK_SUMMARY();
}
