/* Shared memory, example 1 of the course: a parent creates a 100-byte
 * shared memory block with a random name; two child processes attach to
 * it by name and each fill half of it; the parent prints the values.
 *
 * Python: shared_memory.SharedMemory(create=True, size=100), mp.Process,
 * SharedMemory(name) in the workers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "conc.h"

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

struct work {
    const char *shared_name;
    uint8_t value;
    size_t start, end;
};

/* Runs in a child process. */
static int do_work(void *arg) {
    const struct work *w = arg;
    /* Attach to an existing shared memory block */
    conc_shm *shared;
    if (conc_shm_open(&shared, w->shared_name) != CONC_OK) {
        fprintf(stderr, "error: %s\n", conc_last_error_message());
        return 1;
    }
    uint8_t *buf = conc_shm_buf(shared);
    for (size_t i = w->start; i < w->end; i++) {
        buf[i] = w->value;
    }
    /* need to close this local shared memory block access */
    return conc_shm_close(shared) == CONC_OK ? 0 : 1;
}

int main(void) {
    /* Create a shared memory block of 100 items */
    conc_shm *shared;
    check(conc_shm_create(&shared, NULL, 100));
    created = shared;
    printf("Shared memory name = %s\n", conc_shm_name(shared));

    /* Divide the work among two processes, storing partial results in "shared" */
    struct work w1 = {conc_shm_name(shared), 1, 0, 50};
    struct work w2 = {conc_shm_name(shared), 2, 50, 100};
    conc_process p1, p2;
    check(conc_process_spawn(&p1, do_work, &w1));
    check(conc_process_spawn(&p2, do_work, &w2));

    int code1, code2;
    check(conc_process_join(p1, &code1));
    check(conc_process_join(p2, &code2));
    if (code1 != 0 || code2 != 0) {
        fprintf(stderr, "a worker failed (exit codes %d, %d)\n", code1, code2);
        conc_shm_unlink(shared);
        conc_shm_close(shared);
        return 1;
    }

    /* we must loop through the shared buffer to display the values */
    const uint8_t *buf = conc_shm_buf(shared);
    printf("Buffer values:\n");
    for (size_t i = 0; i < conc_shm_size(shared); i++) {
        printf("%d ", buf[i]);
    }
    printf("\n");

    /* give the memory block back to the OS (unlink needs the handle, so it
     * comes before close here) and close it */
    check(conc_shm_unlink(shared));
    check(conc_shm_close(shared));
    return 0;
}
