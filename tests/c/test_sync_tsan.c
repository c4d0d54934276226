/* make sanitize: tsan.
 * ThreadSanitizer understands conc's synchronization: plain data guarded
 * by a conc_mutex, or handed over through a conc_sem, conc_cond, conc_event
 * or conc_barrier, is race-free under -fsanitize=thread. Built with
 * -DRACY (`make sanitize-tsan` does it), the mutex case forgets its lock,
 * and ThreadSanitizer must report the race: that build is expected to
 * fail. In a normal build this is an ordinary (passing) test. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"

#include <pthread.h>

enum { THREADS = 4, ITERS = 2000 };

static conc_mutex g_m = CONC_MUTEX_INIT;
static long g_counter; /* plain: guarded by g_m */

static void *incrementer(void *arg) {
    (void)arg;
    for (int i = 0; i < ITERS; i++) {
#ifndef RACY
        CHECK_OK(conc_mutex_lock(&g_m));
#endif
        g_counter++;
#ifndef RACY
        CHECK_OK(conc_mutex_unlock(&g_m));
#endif
    }
    return NULL;
}

TEST(mutex_guards_plain_data) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_create(&t[i], NULL, incrementer, NULL) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
#ifndef RACY
    CHECK(g_counter == THREADS * ITERS);
#endif
}

/* sem: a producer writes a slot, posts; the consumer waits, reads. */
static conc_sem g_full = CONC_SEM_INIT, g_empty = CONC_SEM_INIT;
static long g_slot;

static void *producer(void *arg) {
    (void)arg;
    for (long i = 1; i <= ITERS; i++) {
        CHECK_OK(conc_sem_wait(&g_empty));
        g_slot = i;
        CHECK_OK(conc_sem_post(&g_full));
    }
    return NULL;
}

TEST(sem_hands_data_over) {
    CHECK_OK(conc_sem_init(&g_empty, 1));
    pthread_t t;
    CHECK(pthread_create(&t, NULL, producer, NULL) == 0);
    long sum = 0;
    for (long i = 1; i <= ITERS; i++) {
        CHECK_OK(conc_sem_wait(&g_full));
        sum += g_slot;
        CHECK_OK(conc_sem_post(&g_empty));
    }
    pthread_join(t, NULL);
    CHECK(sum == (long)ITERS * (ITERS + 1) / 2);
}

/* cond: a predicate under the mutex, data written before signalling. */
static conc_cond g_c = CONC_COND_INIT;
static int g_ready;
static long g_payload[16];

static void *cond_writer(void *arg) {
    (void)arg;
    for (int i = 0; i < 16; i++) {
        g_payload[i] = i * 3;
    }
    CHECK_OK(conc_mutex_lock(&g_m));
    g_ready = 1;
    CHECK_OK(conc_cond_signal(&g_c));
    CHECK_OK(conc_mutex_unlock(&g_m));
    return NULL;
}

TEST(cond_hands_data_over) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, cond_writer, NULL) == 0);
    CHECK_OK(conc_mutex_lock(&g_m));
    while (!g_ready) {
        CHECK_OK(conc_cond_wait(&g_c, &g_m));
    }
    CHECK_OK(conc_mutex_unlock(&g_m));
    for (int i = 0; i < 16; i++) {
        CHECK(g_payload[i] == i * 3);
    }
    pthread_join(t, NULL);
}

/* event: data written before set, read after wait (no mutex at all). */
static conc_event g_e = CONC_EVENT_INIT;
static long g_message[8];

static void *event_writer(void *arg) {
    (void)arg;
    for (int i = 0; i < 8; i++) {
        g_message[i] = 100 + i;
    }
    CHECK_OK(conc_event_set(&g_e));
    return NULL;
}

TEST(event_hands_data_over) {
    pthread_t t;
    CHECK(pthread_create(&t, NULL, event_writer, NULL) == 0);
    CHECK_OK(conc_event_wait(&g_e));
    for (int i = 0; i < 8; i++) {
        CHECK(g_message[i] == 100 + i);
    }
    pthread_join(t, NULL);
}

/* barrier: each thread writes its own slot, then reads everyone's. */
static conc_barrier g_b;
static long g_slots[THREADS];

static void *barrier_worker(void *arg) {
    long me = (long)(intptr_t)arg;
    for (int round = 1; round <= 50; round++) {
        g_slots[me] = round;
        CHECK_OK(conc_barrier_wait(&g_b, NULL));
        for (int i = 0; i < THREADS; i++) {
            CHECK(g_slots[i] == round);
        }
        CHECK_OK(conc_barrier_wait(&g_b, NULL));
    }
    return NULL;
}

TEST(barrier_hands_data_over) {
    CHECK_OK(conc_barrier_init(&g_b, THREADS));
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_create(&t[i], NULL, barrier_worker, (void *)(intptr_t)i) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
}

int main(void) {
    RUN(mutex_guards_plain_data);
    RUN(sem_hands_data_over);
    RUN(cond_hands_data_over);
    RUN(event_hands_data_over);
    RUN(barrier_hands_data_over);
    return CHECK_SUMMARY();
}
