/* Shared memory, example 2 of the course: the same work with a shared
 * list. A parent creates a list of 100 integers; two child processes
 * attach to it by its name alone and each fill half of it; the parent
 * prints the values.
 *
 * Python: shared_memory.ShareableList([0] * 100), mp.Process. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "conc.h"

static conc_list *created; /* removed again if a later call fails */

/* Exits with conc's message when a call fails, removing the segment so
 * that nothing is left behind in /dev/shm. */
static void check(conc_status status) {
    if (status != CONC_OK) {
        fprintf(stderr, "error: %s\n", conc_last_error_message());
        if (created != NULL) {
            conc_list_unlink(created);
        }
        exit(1);
    }
}

struct work {
    const char *shared_name;
    int64_t value;
    size_t start, end;
};

/* Runs in a child process: attach by name, fill a range, close. */
static int do_work(void *arg) {
    const struct work *w = arg;
    conc_list *shared;
    if (conc_list_open(&shared, w->shared_name) != CONC_OK) {
        fprintf(stderr, "error: %s\n", conc_last_error_message());
        return 1;
    }
    for (size_t i = w->start; i < w->end; i++) {
        if (conc_list_set_i64(shared, i, w->value) != CONC_OK) {
            fprintf(stderr, "error: %s\n", conc_last_error_message());
            return 1;
        }
    }
    return conc_list_close(shared) == CONC_OK ? 0 : 1;
}

static int64_t get(const conc_list *list, size_t i) {
    int64_t value = 0;
    check(conc_list_get_i64(list, i, &value));
    return value;
}

int main(void) {
    /* Create a shared list of 100 items, all 0 */
    conc_list *shared;
    check(conc_list_create(&shared, NULL, CONC_TYPE_I64, 100));
    created = shared;

    /* Divide the work among two processes, storing partial results in "shared" */
    struct work w1 = {conc_list_name(shared), 1, 0, 50};
    struct work w2 = {conc_list_name(shared), 2, 50, 100};
    conc_process p1, p2;
    check(conc_process_spawn(&p1, do_work, &w1));
    check(conc_process_spawn(&p2, do_work, &w2));

    int code1, code2;
    check(conc_process_join(p1, &code1));
    check(conc_process_join(p2, &code2));
    if (code1 != 0 || code2 != 0) {
        fprintf(stderr, "a worker failed (exit codes %d, %d)\n", code1, code2);
        conc_list_unlink(shared);
        conc_list_close(shared);
        return 1;
    }

    size_t len = conc_list_len(shared);
    printf("Buffer values:\n");
    for (size_t i = 0; i < len; i++) {
        printf("%" PRId64 " ", get(shared, i));
    }
    printf("\n");

    check(conc_list_unlink(shared));
    check(conc_list_close(shared));
    return 0;
}
