/* A crash while holding a lock, and the recovery.
 *
 * Two accounts in shared memory hold 100 between them, and a conc_mutex
 * guards them. A child process starts a transfer: it takes the lock, writes
 * an undo record, takes 30 from Alice... and is killed (SIGKILL) before it
 * can give them to Bob or unlock.
 *
 * With an ordinary lock every later locker would wait for ever. A
 * conc_mutex is robust: the parent's conc_mutex_lock takes it and returns
 * CONC_ERR_OWNER_DEAD, saying "you hold the lock, but the data may be
 * half-updated". The parent repairs the accounts from the undo record,
 * calls conc_mutex_consistent, and the lock works as before. (Unlocking
 * without conc_mutex_consistent would leave the mutex unusable: every later
 * lock returns CONC_ERR_INVALID_STATE, so nobody trusts broken data.) */
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "conc.h"

/* The layout of the shared block. */
struct bank {
    conc_mutex lock; /* guards everything below; invariant: alice + bob == 100 */
    int64_t alice;
    int64_t bob;
    int64_t in_transfer; /* 1 while a transfer is under way: the undo record is valid */
    int64_t undo_alice;
    int64_t undo_bob;
    conc_sem halfway; /* posted by the child in the middle of its transfer */
};

static conc_shm *created; /* removed again if a later call fails */

static void check(conc_status status) {
    if (status != CONC_OK) {
        fprintf(stderr, "error: %s\n", conc_last_error_message());
        if (created != NULL) {
            conc_shm_unlink(created);
        }
        exit(1);
    }
}

/* Moves `amount` from Alice to Bob; the caller holds the lock. The undo
 * record comes first, so that a crash at any point can be repaired. */
static void begin_transfer(struct bank *b, int64_t amount) {
    b->undo_alice = b->alice;
    b->undo_bob = b->bob;
    __atomic_store_n(&b->in_transfer, 1, __ATOMIC_RELEASE);
    b->alice -= amount;
}

static void finish_transfer(struct bank *b, int64_t amount) {
    b->bob += amount;
    __atomic_store_n(&b->in_transfer, 0, __ATOMIC_RELEASE);
}

/* Runs in the child: half a transfer, then it waits to be killed. */
static int clumsy_child(void *arg) {
    struct bank *b = arg;
    if (conc_mutex_lock(&b->lock) != CONC_OK) {
        return 1;
    }
    begin_transfer(b, 30);
    conc_sem_post(&b->halfway); /* "I am in the middle of it" */
    for (;;) {
        conc_sleep_ms(1000); /* ...and the parent kills it here */
    }
}

static void show(const char *when, const struct bank *b) {
    printf("%-34s alice = %3" PRId64 ", bob = %3" PRId64 ", total = %3" PRId64 "%s\n", when,
           b->alice, b->bob, b->alice + b->bob, b->alice + b->bob == 100 ? "" : "  <- broken");
}

int main(void) {
    conc_shm *shared;
    check(conc_shm_create(&shared, NULL, sizeof(struct bank)));
    created = shared;
    struct bank *b = (struct bank *)conc_shm_buf(shared);
    b->alice = 60;
    b->bob = 40;
    show("start:", b);

    /* The child takes the lock and starts a transfer of 30 */
    conc_process child;
    check(conc_process_spawn(&child, clumsy_child, b));
    check(conc_sem_wait(&b->halfway));
    show("child holds the lock, halfway:", b);

    /* Killed while holding the lock */
    kill((pid_t)child.pid, SIGKILL);
    int code;
    check(conc_process_join(child, &code));
    printf("child killed (exit code %d = 128 + SIGKILL) while holding the lock\n", code);

    /* The next locker gets the lock, and the news */
    conc_status status = conc_mutex_lock(&b->lock);
    printf("conc_mutex_lock: %s (%s)\n",
           status == CONC_ERR_OWNER_DEAD ? "CONC_ERR_OWNER_DEAD" : "unexpected",
           conc_status_str(status));
    if (status != CONC_ERR_OWNER_DEAD) {
        fprintf(stderr, "expected CONC_ERR_OWNER_DEAD: %s\n", conc_last_error_message());
        conc_shm_unlink(shared);
        return 1;
    }
    show("the lock is ours, the data:", b);
    if (b->in_transfer) { /* repair: roll the half-done transfer back */
        b->alice = b->undo_alice;
        b->bob = b->undo_bob;
        b->in_transfer = 0;
    }
    show("rolled back from the undo record:", b);
    check(conc_mutex_consistent(&b->lock));
    check(conc_mutex_unlock(&b->lock));
    printf("conc_mutex_consistent, then unlock: the mutex is healthy again\n");

    /* Business as usual */
    check(conc_mutex_lock(&b->lock));
    begin_transfer(b, 30);
    finish_transfer(b, 30);
    check(conc_mutex_unlock(&b->lock));
    show("the transfer, done by the parent:", b);

    check(conc_shm_unlink(shared));
    check(conc_shm_close(shared));
    return 0;
}
