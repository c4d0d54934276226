/* Shared lists, 0.2 additions, through the C ABI: atomic add and
 * compare-exchange on integer lists (exact totals from many processes and
 * threads), and byte-string lists (lengths, size probes, every error, no
 * torn read whatever a writer in another process does, and no harm from a
 * writer killed in the middle of a write). */
#include "check.h"
#include "shm_snapshot.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>

/* Stress and tortures run at a tenth of their size under the sanitizers
 * and valgrind, which slow every call down many times. */
static int scale(int n) {
    return (CHECK_ASAN || CHECK_TSAN || check_under_valgrind_()) ? (n + 9) / 10 : n;
}

__attribute__((unused)) static int in_dev_shm(const char *name) {
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    return access(path, F_OK) == 0;
}

/* ---- atomic add and compare-exchange --------------------------------- */

TEST(add_returns_previous_and_wraps) {
    conc_list *list = NULL;
    CHECK_OK(conc_list_create(&list, NULL, CONC_TYPE_I64, 3));
    int64_t prev = 99, v = 0;
    CHECK_OK(conc_list_add_i64(list, 0, 5, &prev));
    CHECK(prev == 0);
    CHECK_OK(conc_list_add_i64(list, 0, -8, &prev));
    CHECK(prev == 5);
    CHECK_OK(conc_list_add_i64(list, 0, 0, NULL));
    CHECK_OK(conc_list_get_i64(list, 0, &v));
    CHECK(v == -3);

    /* Two's-complement wrap-around, both ways. */
    CHECK_OK(conc_list_set_i64(list, 1, INT64_MAX));
    CHECK_OK(conc_list_add_i64(list, 1, 1, &prev));
    CHECK(prev == INT64_MAX);
    CHECK_OK(conc_list_get_i64(list, 1, &v));
    CHECK(v == INT64_MIN);
    CHECK_OK(conc_list_add_i64(list, 1, -1, &prev));
    CHECK(prev == INT64_MIN);
    CHECK_OK(conc_list_get_i64(list, 1, &v));
    CHECK(v == INT64_MAX);
    CHECK_OK(conc_list_add_i64(list, 1, INT64_MIN, NULL)); /* MAX + MIN = -1 */
    CHECK_OK(conc_list_get_i64(list, 1, &v));
    CHECK(v == -1);

    /* Another handle on the same list sees every add. */
    conc_list *other = NULL;
    CHECK_OK(conc_list_open(&other, conc_list_name(list)));
    CHECK_OK(conc_list_add_i64(other, 2, 40, NULL));
    CHECK_OK(conc_list_add_i64(list, 2, 2, &prev));
    CHECK(prev == 40);
    CHECK_OK(conc_list_get_i64(other, 2, &v));
    CHECK(v == 42);
    CHECK_OK(conc_list_close(other));
    CHECK_OK(conc_list_unlink(list));
    CHECK_OK(conc_list_close(list));
}

TEST(compare_exchange_semantics) {
    conc_list *list = NULL;
    CHECK_OK(conc_list_create(&list, NULL, CONC_TYPE_I64, 2));
    int64_t actual = 77, v = 0;
    /* Equal: stored, OK, *actual = what was found (== expected). */
    CHECK_OK(conc_list_compare_exchange_i64(list, 0, 0, 10, &actual));
    CHECK(actual == 0);
    CHECK_OK(conc_list_get_i64(list, 0, &v));
    CHECK(v == 10);
    /* Not equal: BUSY, nothing stored, *actual written anyway. */
    actual = 77;
    CHECK_STATUS(conc_list_compare_exchange_i64(list, 0, 0, 20, &actual), CONC_ERR_BUSY);
    CHECK(actual == 10);
    CHECK_MESSAGE_HAS("conc_list_compare_exchange_i64(\"psm_");
    CHECK_MESSAGE_HAS("holds 10, not the expected 0");
    CHECK_OK(conc_list_get_i64(list, 0, &v));
    CHECK(v == 10);
    /* actual may be NULL, either way. */
    CHECK_OK(conc_list_compare_exchange_i64(list, 0, 10, INT64_MIN, NULL));
    CHECK_STATUS(conc_list_compare_exchange_i64(list, 0, 10, 1, NULL), CONC_ERR_BUSY);
    CHECK_OK(conc_list_get_i64(list, 0, &v));
    CHECK(v == INT64_MIN);
    /* Storing the same value is a success too. */
    CHECK_OK(conc_list_compare_exchange_i64(list, 1, 0, 0, &actual));
    CHECK(actual == 0);
    CHECK_OK(conc_list_unlink(list));
    CHECK_OK(conc_list_close(list));
}

TEST(add_and_compare_exchange_errors) {
    conc_list *i64 = NULL, *f64 = NULL;
    CHECK_OK(conc_list_create(&i64, NULL, CONC_TYPE_I64, 2));
    CHECK_OK(conc_list_create(&f64, NULL, CONC_TYPE_F64, 2));
    int64_t prev = 5, actual = 6;
    /* An F64 list: INVALID_ARGUMENT, outputs untouched, element untouched. */
    CHECK_OK(conc_list_set_f64(f64, 0, 1.5));
    CHECK_STATUS(conc_list_add_i64(f64, 0, 1, &prev), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_list_add_i64(\"psm_");
    CHECK_MESSAGE_HAS("holds CONC_TYPE_F64 values, not CONC_TYPE_I64");
    CHECK_STATUS(conc_list_compare_exchange_i64(f64, 0, 0, 1, &actual),
                 CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_list_compare_exchange_i64(\"psm_");
    double d = 0;
    CHECK_OK(conc_list_get_f64(f64, 0, &d));
    CHECK(d == 1.5);
    /* Out of range. */
    CHECK_STATUS(conc_list_add_i64(i64, 2, 1, &prev), CONC_ERR_OUT_OF_RANGE);
    CHECK_MESSAGE_HAS("index past the end (length 2)");
    CHECK_STATUS(conc_list_add_i64(i64, SIZE_MAX, 1, NULL), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_list_compare_exchange_i64(i64, 2, 0, 1, &actual), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_list_compare_exchange_i64(i64, SIZE_MAX, 0, 1, NULL),
                 CONC_ERR_OUT_OF_RANGE);
    /* NULL list. */
    CHECK_STATUS(conc_list_add_i64(NULL, 0, 1, &prev), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_list_add_i64: argument `list` is NULL");
    CHECK_STATUS(conc_list_compare_exchange_i64(NULL, 0, 0, 1, &actual),
                 CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_list_compare_exchange_i64: argument `list` is NULL");
    CHECK(prev == 5 && actual == 6);
    /* Closed and forged handles. */
    CHECK_OK(conc_list_unlink(i64));
    CHECK_OK(conc_list_unlink(f64));
    CHECK_OK(conc_list_close(i64));
    CHECK_OK(conc_list_close(f64));
    CHECK_STATUS(conc_list_add_i64(i64, 0, 1, &prev), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_list_compare_exchange_i64(i64, 0, 0, 1, &actual), CONC_ERR_INVALID_STATE);
    uint64_t fake[8] = {0};
    CHECK_STATUS(conc_list_add_i64((conc_list *)fake, 0, 1, NULL), CONC_ERR_INVALID_STATE);
    CHECK(prev == 5 && actual == 6);
}

/* 4 processes × 2 threads, each adding; plus a compare-exchange counter
 * in the next element, incremented by retry loops. Both totals exact. */
#define ADD_PROCS 4
#define ADD_THREADS 2

static int adds_per_thread(void) { return scale(50000); }

static void *add_thread(void *arg) {
    conc_list *list = arg;
    int n = adds_per_thread();
    for (int i = 0; i < n; i++) {
        if (conc_list_add_i64(list, 0, 1, NULL) != CONC_OK) {
            return (void *)1;
        }
        /* Odd elements of the CAS counter: a classic retry loop. */
        if (i % 8 == 0) {
            int64_t seen = 0;
            conc_status st;
            if (conc_list_get_i64(list, 1, &seen) != CONC_OK) {
                return (void *)2;
            }
            while ((st = conc_list_compare_exchange_i64(list, 1, seen, seen + 1, &seen)) ==
                   CONC_ERR_BUSY) {
            }
            if (st != CONC_OK) {
                return (void *)3;
            }
        }
    }
    return NULL;
}

static int add_process(void *arg) {
    const char *name = arg;
    alarm(60);
    conc_list *list = NULL;
    if (conc_list_open(&list, name) != CONC_OK) {
        return 10;
    }
    conc_thread t[ADD_THREADS];
    for (int i = 0; i < ADD_THREADS; i++) {
        if (conc_thread_spawn(&t[i], add_thread, list) != CONC_OK) {
            return 11;
        }
    }
    int code = 0;
    for (int i = 0; i < ADD_THREADS; i++) {
        void *r = (void *)1;
        if (conc_thread_join(t[i], &r) != CONC_OK || r != NULL) {
            code = 12;
        }
    }
    return conc_list_close(list) == CONC_OK ? code : 13;
}

TEST(concurrent_adds_from_processes_and_threads_are_exact) {
    SKIP_IF(CHECK_TSAN, "TSan cannot start threads in a child forked by the test harness");
    conc_list *list = NULL;
    CHECK_OK(conc_list_create(&list, NULL, CONC_TYPE_I64, 2));
    char name[32];
    snprintf(name, sizeof name, "%s", conc_list_name(list));
    conc_process p[ADD_PROCS];
    for (int i = 0; i < ADD_PROCS; i++) {
        CHECK_OK(conc_process_spawn(&p[i], add_process, name));
    }
    for (int i = 0; i < ADD_PROCS; i++) {
        int code = -1;
        CHECK_OK(conc_process_join(p[i], &code));
        CHECK(code == 0);
    }
    int64_t total = 0, cas_total = 0;
    int n = adds_per_thread();
    CHECK_OK(conc_list_get_i64(list, 0, &total));
    CHECK_OK(conc_list_get_i64(list, 1, &cas_total));
    CHECK(total == (int64_t)ADD_PROCS * ADD_THREADS * n);
    CHECK(cas_total == (int64_t)ADD_PROCS * ADD_THREADS * ((n + 7) / 8));
    if (total != (int64_t)ADD_PROCS * ADD_THREADS * n) {
        printf("  total %lld, want %lld\n", (long long)total,
               (long long)ADD_PROCS * ADD_THREADS * n);
    }
    CHECK_OK(conc_list_unlink(list));
    CHECK_OK(conc_list_close(list));
}

int main(void) {
    shm_snapshot_begin();
    RUN(add_returns_previous_and_wraps);
    RUN(compare_exchange_semantics);
    RUN(add_and_compare_exchange_errors);
    RUN(concurrent_adds_from_processes_and_threads_are_exact);
    return shm_snapshot_end(CHECK_SUMMARY());
}
