/* Shared memory, example 1 of the course, with a counter: a parent creates
 * a shared memory block with a random name; two child processes attach to
 * it by name and each add 1 to a counter in it, many times, under a
 * conc_mutex that lives in the block itself. The total is exact.
 *
 * For contrast, the same increments without the lock: `counter += 1` is a
 * read and a write, so two processes can read the same value and one of
 * the two updates is lost. How many are lost depends on how the two
 * processes happen to overlap: it changes from run to run, and may be 0.
 *
 * The zero bytes of a fresh segment are an unlocked conc_mutex: no init
 * call, no attribute, no destroy call.
 *
 * Python: shared_memory.SharedMemory(create=True, size=...), mp.Process,
 * and a multiprocessing.Lock, which conc_mutex replaces (and which, unlike
 * a conc_mutex, blocks everyone for ever if its holder is killed). */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "conc.h"

#define INCREMENTS 2000000 /* per process */

/* The layout of the shared block. */
struct counter_block {
    conc_mutex lock;          /* guards `counter` */
    conc_barrier start;       /* the two workers start each phase together */
    int64_t counter;          /* incremented under the lock */
    int64_t unlocked_counter; /* incremented without it */
};

static conc_shm *created; /* removed again if a later call fails */

/* Exits with conc's message when a call fails, removing the segment so
 * that nothing is left behind in /dev/shm. */
static void check(conc_status status) {
    if (status != CONC_OK) {
        fprintf(stderr, "error: %s\n", conc_last_error_message());
        if (created != NULL) {
            conc_shm_unlink(created);
        }
        exit(1);
    }
}

/* Runs in a child process: attaches to the block by name and adds 1 to
 * each counter INCREMENTS times. */
static int do_work(void *arg) {
    const char *shared_name = arg;
    conc_shm *shared;
    if (conc_shm_open(&shared, shared_name) != CONC_OK) {
        fprintf(stderr, "error: %s\n", conc_last_error_message());
        return 1;
    }
    struct counter_block *block = (struct counter_block *)conc_shm_buf(shared);
    int failed = 0;

    /* With the lock: each read-add-write happens while the other process
     * waits. */
    failed |= conc_barrier_wait(&block->start, NULL) != CONC_OK;
    for (int i = 0; i < INCREMENTS && !failed; i++) {
        failed |= conc_mutex_lock(&block->lock) != CONC_OK;
        block->counter += 1;
        failed |= conc_mutex_unlock(&block->lock) != CONC_OK;
    }

    /* Without it: the same read then write, with nothing to keep the other
     * process out in between. (Relaxed atomic loads and stores, so that the
     * C program has no undefined behaviour: only the lost updates.) */
    failed |= conc_barrier_wait(&block->start, NULL) != CONC_OK;
    for (int i = 0; i < INCREMENTS && !failed; i++) {
        int64_t seen = __atomic_load_n(&block->unlocked_counter, __ATOMIC_RELAXED);
        __atomic_store_n(&block->unlocked_counter, seen + 1, __ATOMIC_RELAXED);
    }

    if (failed) {
        fprintf(stderr, "error: %s\n", conc_last_error_message());
    }
    return conc_shm_close(shared) == CONC_OK && !failed ? 0 : 1;
}

int main(void) {
    /* Create a shared memory block for the counters (zero-filled) */
    conc_shm *shared;
    check(conc_shm_create(&shared, NULL, sizeof(struct counter_block)));
    created = shared;
    printf("Shared memory name = %s\n", conc_shm_name(shared));
    struct counter_block *block = (struct counter_block *)conc_shm_buf(shared);
    check(conc_barrier_init(&block->start, 2));

    /* Two processes attach by name and increment */
    char *name = (char *)conc_shm_name(shared);
    conc_process p1, p2;
    check(conc_process_spawn(&p1, do_work, name));
    check(conc_process_spawn(&p2, do_work, name));
    int code1, code2;
    check(conc_process_join(p1, &code1));
    check(conc_process_join(p2, &code2));
    if (code1 != 0 || code2 != 0) {
        fprintf(stderr, "a worker failed (exit codes %d, %d)\n", code1, code2);
        conc_shm_unlink(shared);
        conc_shm_close(shared);
        return 1;
    }

    const int64_t expected = 2 * (int64_t)INCREMENTS;
    printf("Two processes, %d increments each:\n", INCREMENTS);
    printf("  under the conc_mutex: counter = %" PRId64 " (expected %" PRId64 ")%s\n",
           block->counter, expected, block->counter == expected ? "" : "  WRONG");
    int64_t lost = expected - block->unlocked_counter;
    printf("  without the lock:     counter = %" PRId64 " (%" PRId64 " of the %" PRId64
           " updates lost this time; how many changes from run to run)\n",
           block->unlocked_counter, lost, expected);

    int exact = block->counter == expected;
    /* give the memory block back to the OS and close it */
    check(conc_shm_unlink(shared));
    check(conc_shm_close(shared));
    return exact ? 0 : 1;
}
