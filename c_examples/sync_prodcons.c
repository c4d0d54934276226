/* A producer and a consumer process hand items over through a small ring
 * buffer in shared memory, guarded by a conc_mutex, with two conc_cond:
 * "not empty" wakes the consumer, "not full" wakes the producer. The
 * buffer holds 4 items and the consumer spends 1 ms on each, so the
 * producer keeps finding the buffer full and waits for the consumer;
 * neither process polls or sleeps to wait.
 *
 * The mutex and both condition variables are the zero bytes of a fresh
 * segment: nothing to initialise or destroy, and they work between
 * processes as they do between threads.
 *
 * Python: a multiprocessing.Queue(4) between two mp.Process. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "conc.h"

#define SLOTS 4
#define ITEMS 20
#define END (-1) /* the item that tells the consumer to stop */

/* The layout of the shared block. */
struct channel {
    conc_mutex lock;     /* guards everything below */
    conc_cond not_empty; /* signalled when an item is added */
    conc_cond not_full;  /* signalled when an item is taken */
    uint32_t head;       /* the oldest item */
    uint32_t count;      /* how many items are in the buffer */
    int64_t slots[SLOTS];
    uint32_t producer_waits; /* how often the producer found the buffer full */
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

/* Both run in child processes, which share the parent's segment. A failed
 * call ends the child with conc's message (exit status 1). */
static void child_check(conc_status status) {
    if (status != CONC_OK) {
        fprintf(stderr, "error: %s\n", conc_last_error_message());
        exit(1);
    }
}

static void put(struct channel *ch, int64_t item) {
    child_check(conc_mutex_lock(&ch->lock));
    while (ch->count == SLOTS) { /* full: wait for the consumer */
        ch->producer_waits++;
        child_check(conc_cond_wait(&ch->not_full, &ch->lock));
    }
    ch->slots[(ch->head + ch->count) % SLOTS] = item;
    ch->count++;
    child_check(conc_cond_signal(&ch->not_empty));
    child_check(conc_mutex_unlock(&ch->lock));
}

static int64_t take(struct channel *ch) {
    child_check(conc_mutex_lock(&ch->lock));
    while (ch->count == 0) { /* empty: wait for the producer */
        child_check(conc_cond_wait(&ch->not_empty, &ch->lock));
    }
    int64_t item = ch->slots[ch->head];
    ch->head = (ch->head + 1) % SLOTS;
    ch->count--;
    child_check(conc_cond_signal(&ch->not_full));
    child_check(conc_mutex_unlock(&ch->lock));
    return item;
}

static int producer(void *arg) {
    struct channel *ch = arg;
    for (int64_t i = 1; i <= ITEMS; i++) {
        put(ch, i * i);
    }
    put(ch, END);
    return 0;
}

static int consumer(void *arg) {
    struct channel *ch = arg;
    int64_t sum = 0;
    int n = 0;
    printf("consumer got:");
    for (;;) {
        int64_t item = take(ch);
        if (item == END) {
            break;
        }
        printf(" %" PRId64, item);
        sum += item;
        conc_sleep_ms(1); /* the work on an item, done without the lock */
        n++;
    }
    printf("\nconsumer: %d items, sum %" PRId64 "\n", n, sum);
    return sum == (int64_t)ITEMS * (ITEMS + 1) * (2 * ITEMS + 1) / 6 ? 0 : 2;
}

int main(void) {
    conc_shm *shared;
    check(conc_shm_create(&shared, NULL, sizeof(struct channel)));
    created = shared;
    struct channel *ch = (struct channel *)conc_shm_buf(shared);
    printf("Shared memory name = %s (a buffer of %d items)\n", conc_shm_name(shared), SLOTS);
    fflush(stdout);

    conc_process prod, cons;
    check(conc_process_spawn(&cons, consumer, ch));
    check(conc_process_spawn(&prod, producer, ch));
    int prod_code, cons_code;
    check(conc_process_join(prod, &prod_code));
    check(conc_process_join(cons, &cons_code));

    printf("producer: %d items, found the buffer full %" PRIu32 " times and waited\n", ITEMS,
           ch->producer_waits);
    printf("expected sum of the squares 1..%d: %d\n", ITEMS,
           ITEMS * (ITEMS + 1) * (2 * ITEMS + 1) / 6);

    check(conc_shm_unlink(shared));
    check(conc_shm_close(shared));
    if (prod_code != 0 || cons_code != 0) {
        fprintf(stderr, "a process failed (exit codes %d, %d)\n", prod_code, cons_code);
        return 1;
    }
    return 0;
}
