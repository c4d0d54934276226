/* make sanitize: tsan.
 * Shared lists, 0.2 additions, through the C ABI: atomic add and
 * compare-exchange on integer lists (exact totals from many processes and
 * threads), and byte-string lists (lengths, size probes, every error, no
 * torn read whatever a writer in another process does, and no harm from a
 * writer killed in the middle of a write). */
#include "check.h"
#include "shm_snapshot.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
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

/* ---- byte-string lists ------------------------------------------------ */

TEST(bytes_round_trip_and_lengths) {
    conc_list *a = (conc_list *)1, *b = NULL;
    CHECK_OK(conc_list_create_bytes(&a, NULL, 3, 10));
    CHECK(conc_list_type(a) == CONC_TYPE_BYTES);
    CHECK(conc_list_len(a) == 3 && conc_list_item_size(a) == 10);
    CHECK_OK(conc_list_open(&b, conc_list_name(a)));
    CHECK(conc_list_type(b) == CONC_TYPE_BYTES);
    CHECK(conc_list_len(b) == 3 && conc_list_item_size(b) == 10);

    char buf[32];
    size_t n = 99;
    /* New elements are empty. */
    for (size_t i = 0; i < 3; i++) {
        n = 99;
        CHECK_OK(conc_list_get_bytes(b, i, buf, sizeof buf, &n));
        CHECK(n == 0);
    }
    /* Any bytes, NUL included; the length is kept. */
    CHECK_OK(conc_list_set_bytes(a, 0, "he\0llo", 6));
    memset(buf, 'x', sizeof buf);
    CHECK_OK(conc_list_get_bytes(b, 0, buf, sizeof buf, &n));
    CHECK(n == 6 && memcmp(buf, "he\0llo", 6) == 0 && buf[6] == 'x'); /* no NUL added */
    CHECK_OK(conc_list_get_bytes(b, 0, buf, 6, &n));
    CHECK(n == 6);
    /* Too small: OUT_OF_RANGE with the size it needs, buf untouched. */
    memset(buf, 'x', sizeof buf);
    n = 0;
    CHECK_STATUS(conc_list_get_bytes(b, 0, buf, 5, &n), CONC_ERR_OUT_OF_RANGE);
    CHECK(n == 6 && buf[0] == 'x');
    CHECK_MESSAGE_HAS("conc_list_get_bytes(\"psm_");
    CHECK_MESSAGE_HAS("holds 6 bytes, more than buf_size 5");
    /* The size probe: buf NULL, buf_size 0. */
    n = 0;
    CHECK_STATUS(conc_list_get_bytes(b, 0, NULL, 0, &n), CONC_ERR_OUT_OF_RANGE);
    CHECK(n == 6);
    n = 99;
    CHECK_OK(conc_list_get_bytes(b, 1, NULL, 0, &n));
    CHECK(n == 0);
    /* buf_size 0 with a real buffer is the same probe. */
    n = 0;
    CHECK_STATUS(conc_list_get_bytes(b, 0, buf, 0, &n), CONC_ERR_OUT_OF_RANGE);
    CHECK(n == 6);

    /* Exactly item_size; one more is refused and changes nothing. */
    CHECK_OK(conc_list_set_bytes(a, 1, "0123456789", 10));
    CHECK_STATUS(conc_list_set_bytes(a, 1, "0123456789A", 11), CONC_ERR_OUT_OF_RANGE);
    CHECK_MESSAGE_HAS("11 bytes is longer than the item size 10");
    CHECK_STATUS(conc_list_set_bytes(a, 1, "x", SIZE_MAX), CONC_ERR_OUT_OF_RANGE);
    CHECK_OK(conc_list_get_bytes(b, 1, buf, sizeof buf, &n));
    CHECK(n == 10 && memcmp(buf, "0123456789", 10) == 0);
    /* Shorter again; empty, with data NULL too. */
    CHECK_OK(conc_list_set_bytes(b, 1, "xy", 2));
    CHECK_OK(conc_list_get_bytes(a, 1, buf, sizeof buf, &n));
    CHECK(n == 2 && memcmp(buf, "xy", 2) == 0);
    CHECK_OK(conc_list_set_bytes(a, 1, NULL, 0));
    CHECK_OK(conc_list_get_bytes(b, 1, buf, sizeof buf, &n));
    CHECK(n == 0);

    /* The segment: the header, then 64-byte aligned elements. */
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/%s", conc_list_name(a));
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(st.st_size == 64 + 3 * 128); /* 64 + 8 + 2 * (8 + 16) = 120 -> 128 */
    CHECK_OK(conc_list_unlink(a));
    CHECK_OK(conc_list_close(a));
    CHECK_OK(conc_list_close(b));
}

TEST(bytes_errors) {
    char name[64];
    snprintf(name, sizeof name, "ctl2_%d_bytes", (int)getpid());
    conc_list *list = (conc_list *)1;
    CHECK_STATUS(conc_list_create_bytes(&list, name, 4, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK(list == NULL);
    char want[160];
    snprintf(want, sizeof want, "conc_list_create_bytes(\"%s\", 4, 0): the item size is 0", name);
    CHECK(strcmp(conc_last_error_message(), want) == 0);
    list = (conc_list *)1;
    CHECK_STATUS(conc_list_create_bytes(&list, name, 0, 4), CONC_ERR_INVALID_ARGUMENT);
    CHECK(list == NULL);
    CHECK_MESSAGE_HAS("the length is 0");
    CHECK_STATUS(conc_list_create_bytes(&list, name, 2, SIZE_MAX), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK_STATUS(conc_list_create_bytes(&list, name, SIZE_MAX / 64, 8),
                 CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK_STATUS(conc_list_create_bytes(&list, "bad/name", 1, 8), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_create_bytes(NULL, NULL, 1, 8), CONC_ERR_INVALID_ARGUMENT);
    CHECK(!in_dev_shm(name));
    /* conc_list_create refuses CONC_TYPE_BYTES: it needs an item size. */
    CHECK_STATUS(conc_list_create(&list, name, CONC_TYPE_BYTES, 4), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("are made by conc_list_create_bytes");
    CHECK(list == NULL && !in_dev_shm(name));

    /* A name that is taken. */
    conc_list *taken = NULL;
    CHECK_OK(conc_list_create(&taken, name, CONC_TYPE_I64, 1));
    CHECK_STATUS(conc_list_create_bytes(&list, name, 1, 8), CONC_ERR_ALREADY_EXISTS);
    CHECK_OK(conc_list_unlink(taken));
    CHECK_OK(conc_list_close(taken));

    conc_list *bytes = NULL, *num = NULL;
    CHECK_OK(conc_list_create_bytes(&bytes, name, 2, 4));
    CHECK_OK(conc_list_create(&num, NULL, CONC_TYPE_F64, 2));
    int64_t v = 3;
    double d = 4;
    size_t n = 7;
    char buf[8] = "unused";
    /* The wrong type's accessors, both ways. */
    CHECK_STATUS(conc_list_get_i64(bytes, 0, &v), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("holds CONC_TYPE_BYTES values, not CONC_TYPE_I64");
    CHECK_STATUS(conc_list_set_i64(bytes, 0, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_get_f64(bytes, 0, &d), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_set_f64(bytes, 0, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_add_i64(bytes, 0, 1, &v), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_compare_exchange_i64(bytes, 0, 0, 1, &v), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_set_bytes(num, 0, "x", 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("holds CONC_TYPE_F64 values, not CONC_TYPE_BYTES");
    CHECK_STATUS(conc_list_get_bytes(num, 0, buf, sizeof buf, &n), CONC_ERR_INVALID_ARGUMENT);
    CHECK(v == 3 && d == 4 && n == 7);
    CHECK(conc_list_item_size(num) == 8);
    CHECK(conc_list_item_size(NULL) == 0);
    /* Index past the end. */
    CHECK_STATUS(conc_list_set_bytes(bytes, 2, "x", 1), CONC_ERR_OUT_OF_RANGE);
    CHECK_MESSAGE_HAS("index past the end (length 2)");
    CHECK_STATUS(conc_list_get_bytes(bytes, 2, buf, sizeof buf, &n), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_list_get_bytes(bytes, SIZE_MAX, NULL, 0, &n), CONC_ERR_OUT_OF_RANGE);
    CHECK(n == 7);
    /* NULL arguments. */
    CHECK_STATUS(conc_list_set_bytes(NULL, 0, "x", 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_list_set_bytes: argument `list` is NULL");
    CHECK_STATUS(conc_list_get_bytes(NULL, 0, buf, sizeof buf, &n), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_set_bytes(bytes, 0, NULL, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("argument `data` is NULL");
    CHECK_STATUS(conc_list_get_bytes(bytes, 0, NULL, 4, &n), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("argument `buf` is NULL");
    CHECK_STATUS(conc_list_get_bytes(bytes, 0, buf, sizeof buf, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("argument `n` is NULL");
    CHECK(n == 7 && strcmp(buf, "unused") == 0);
    /* Closed and forged handles. */
    CHECK_OK(conc_list_unlink(bytes));
    CHECK_OK(conc_list_unlink(num));
    CHECK_OK(conc_list_close(bytes));
    CHECK_OK(conc_list_close(num));
    CHECK_STATUS(conc_list_set_bytes(bytes, 0, "x", 1), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_list_get_bytes(bytes, 0, buf, sizeof buf, &n), CONC_ERR_INVALID_STATE);
    CHECK(conc_list_item_size(bytes) == 0);
    uint64_t fake[8] = {0};
    CHECK_STATUS(conc_list_set_bytes((conc_list *)fake, 0, "x", 1), CONC_ERR_INVALID_STATE);
    CHECK(conc_list_item_size((conc_list *)fake) == 0);
}

/* Two patterns of different lengths and contents: a mix of them, or a
 * pattern with the other's length, is a torn read. */
#define TORN_ITEM 65536
#define TORN_B_LEN 20000
static void fill_a(char *p) {
    for (int i = 0; i < TORN_ITEM; i++) {
        p[i] = (char)('a' + i % 26);
    }
}
static void fill_b(char *p) { memset(p, 'Z', TORN_B_LEN); }

/* 0 when `buf[0..n)` is the empty start value, pattern A or pattern B. */
static int torn(const char *buf, size_t n, const char *a, const char *b) {
    if (n == 0) {
        return 0;
    }
    if (n == TORN_ITEM && memcmp(buf, a, TORN_ITEM) == 0) {
        return 0;
    }
    if (n == TORN_B_LEN && memcmp(buf, b, TORN_B_LEN) == 0) {
        return 0;
    }
    return 1;
}

static int torn_writes(void) { return scale(20000); }

struct torn_arg {
    conc_list *list, *done; /* done[0] becomes 1 when the writer ends */
};

static int torn_writer(void *arg) {
    struct torn_arg *t = arg;
    char a[TORN_ITEM], b[TORN_ITEM];
    fill_a(a);
    fill_b(b);
    int n = torn_writes(), code = 0;
    for (int i = 0; i < n && code == 0; i++) {
        /* A A B B A A ...: each of the element's two copies then gets A
         * and B in turn (a plain A B A B would always refill a copy with
         * the same pattern, and hide a torn read). */
        conc_status st = (i & 2) ? conc_list_set_bytes(t->list, 0, a, TORN_ITEM)
                                 : conc_list_set_bytes(t->list, 0, b, TORN_B_LEN);
        code = st != CONC_OK;
    }
    conc_list_set_i64(t->done, 0, 1);
    return code;
}

/* A writer process alternates two patterns of different lengths as fast
 * as it can; this process reads all the while and must only ever see one
 * of them whole (or the empty start). */
TEST(bytes_torn_read_torture) {
    struct torn_arg t = {NULL, NULL};
    CHECK_OK(conc_list_create_bytes(&t.list, NULL, 1, TORN_ITEM));
    CHECK_OK(conc_list_create(&t.done, NULL, CONC_TYPE_I64, 1));
    char a[TORN_ITEM], b[TORN_ITEM], buf[TORN_ITEM];
    fill_a(a);
    fill_b(b);
    conc_process w;
    CHECK_OK(conc_process_spawn(&w, torn_writer, &t));
    long reads = 0, bad = 0, as = 0, bs = 0;
    int64_t done = 0;
    while (done == 0) {
        CHECK_OK(conc_list_get_i64(t.done, 0, &done));
        size_t n = 0;
        if (conc_list_get_bytes(t.list, 0, buf, sizeof buf, &n) != CONC_OK) {
            bad++;
            break;
        }
        bad += torn(buf, n, a, b);
        as += n == TORN_ITEM;
        bs += n == TORN_B_LEN;
        reads++;
    }
    int code = -1;
    CHECK_OK(conc_process_join(w, &code));
    CHECK(code == 0);
    CHECK(bad == 0);
    CHECK(as > 0 && bs > 0); /* both patterns were seen */
    printf("  %ld reads: %ld of A, %ld of B, %ld torn\n", reads, as, bs, bad);
    CHECK_OK(conc_list_unlink(t.list));
    CHECK_OK(conc_list_close(t.list));
    CHECK_OK(conc_list_unlink(t.done));
    CHECK_OK(conc_list_close(t.done));
}

/* ---- a writer killed in the middle of a write, many times ------------- */

#define KILL_ITEM 65536 /* the largest item of these tortures */
#define LOCK_DIED 0x40000000u /* the lock word's owner-died bit (kernel ABI) */

static int kill_rounds(void) { return scale(300); }

/* The two values the killed writers write: A is a_len bytes of 'a', B
 * b_len bytes of 'b' (set before any child starts). */
static char kill_a[KILL_ITEM], kill_b[KILL_ITEM];
static size_t kill_a_len, kill_b_len;

/* Writes A A B B ... for ever (until killed). */
static int endless_writer(void *arg) {
    conc_list *list = arg;
    for (unsigned i = 0;; i++) {
        conc_status st = (i & 2) ? conc_list_set_bytes(list, 0, kill_a, kill_a_len)
                                 : conc_list_set_bytes(list, 0, kill_b, kill_b_len);
        if (st != CONC_OK) {
            return 1;
        }
    }
}

/* 1 when buf[0..n) is a whole value some writer of this test wrote. */
static int whole_kill_value(const char *buf, size_t n) {
    if (n == 0) {
        return 1;
    }
    if (n == kill_a_len && memcmp(buf, kill_a, n) == 0) {
        return 1;
    }
    if (n == kill_b_len && memcmp(buf, kill_b, n) == 0) {
        return 1;
    }
    return n < 32 && strncmp(buf, "parent ", 7) == 0;
}

struct kill_reader_arg {
    conc_list *list, *ctl; /* ctl[0]: stop; ctl[1]: reads; ctl[2]: bad reads */
};

/* Reads all the while, counting reads and reads that are not whole. */
static int kill_reader(void *arg) {
    struct kill_reader_arg *r = arg;
    static char buf[KILL_ITEM];
    int64_t stop = 0;
    while (stop == 0) {
        size_t n = 0;
        if (conc_list_get_bytes(r->list, 0, buf, sizeof buf, &n) != CONC_OK ||
            !whole_kill_value(buf, n)) {
            conc_list_add_i64(r->ctl, 2, 1, NULL);
        }
        conc_list_add_i64(r->ctl, 1, 1, NULL);
        conc_list_get_i64(r->ctl, 0, &stop);
    }
    return 0;
}

/* Each round starts a writer process that writes A and B in a loop, lets
 * it run for a random 0 to max_delay_us microseconds once it is writing,
 * and SIGKILLs it. After each kill the element must hold a whole value,
 * and this process must be able to write it at once (a writer waiting for
 * ever would be caught by the case's watchdog); a reader process checks
 * every value it sees all along and must keep making progress. The kills
 * that landed while the writer held the element's lock (in the middle of
 * a write) are counted from the lock word, which the kernel marks when its
 * holder dies; the others landed between two writes. */
static void kill_torture(size_t item_size, size_t a_len, size_t b_len, int max_delay_us,
                         int require_mid_write) {
    memset(kill_a, 'a', sizeof kill_a);
    memset(kill_b, 'b', sizeof kill_b);
    kill_a_len = a_len;
    kill_b_len = b_len;
    struct kill_reader_arg r = {NULL, NULL};
    CHECK_OK(conc_list_create_bytes(&r.list, NULL, 1, item_size));
    CHECK_OK(conc_list_create(&r.ctl, NULL, CONC_TYPE_I64, 3));
    /* The element's lock word and version, through a plain mapping of the
     * segment: element 0 starts at offset 64, its lock at 0 within it and
     * its version word at 64. */
    conc_shm *seg = NULL;
    CHECK_OK(conc_shm_open(&seg, conc_list_name(r.list)));
    volatile uint32_t *lock_word = (volatile uint32_t *)(void *)(conc_shm_buf(seg) + 64);
    volatile uint64_t *version = (volatile uint64_t *)(void *)(conc_shm_buf(seg) + 64 + 64);

    conc_process reader;
    CHECK_OK(conc_process_spawn(&reader, kill_reader, &r));
    static char buf[KILL_ITEM];
    int rounds = kill_rounds(), died_holding = 0, bad = 0;
    int64_t reads_before = 0, reads_after = 0;
    srand((unsigned)getpid());
    for (int round = 0; round < rounds && bad == 0; round++) {
        conc_process w;
        uint64_t v0 = *version;
        CHECK_OK(conc_process_spawn(&w, endless_writer, r.list));
        /* Once it is writing (it may start slowly under valgrind), a
         * random delay more. */
        for (int i = 0; i < 100000 && *version == v0; i++) {
            usleep(100);
        }
        usleep((useconds_t)(rand() % (max_delay_us + 1)));
        CHECK(kill((pid_t)w.pid, SIGKILL) == 0);
        int code = -1;
        CHECK_OK(conc_process_join(w, &code));
        CHECK(code == 128 + SIGKILL);
        died_holding += (*lock_word & LOCK_DIED) != 0;

        /* Old or new, whole. */
        size_t n = 0;
        CHECK_OK(conc_list_get_bytes(r.list, 0, buf, sizeof buf, &n));
        if (!whole_kill_value(buf, n)) {
            printf("  round %d: a value of %zu bytes that no writer wrote\n", round, n);
            bad++;
        }
        /* The next writer goes on at once, and its value is read back. */
        char mine[32];
        int len = snprintf(mine, sizeof mine, "parent %d", round);
        CHECK_OK(conc_list_set_bytes(r.list, 0, mine, (size_t)len));
        CHECK_OK(conc_list_get_bytes(r.list, 0, buf, sizeof buf, &n));
        CHECK(n == (size_t)len && memcmp(buf, mine, n) == 0);
        if (round == rounds / 2) {
            CHECK_OK(conc_list_get_i64(r.ctl, 1, &reads_before));
        }
    }
    /* The reader kept going through it all. */
    CHECK_OK(conc_list_get_i64(r.ctl, 1, &reads_after));
    CHECK(reads_after > reads_before);
    CHECK_OK(conc_list_set_i64(r.ctl, 0, 1));
    int code = -1;
    CHECK_OK(conc_process_join(reader, &code));
    CHECK(code == 0);
    int64_t reader_bad = -1;
    CHECK_OK(conc_list_get_i64(r.ctl, 2, &reader_bad));
    CHECK(bad == 0 && reader_bad == 0);
    printf("  %d kills: %d mid-write (lock held), %d between writes; reader: %lld reads, "
           "%lld bad\n",
           rounds, died_holding, rounds - died_holding, (long long)reads_after,
           (long long)reader_bad);
    /* With long writes, some kills must land mid-write, or this tests
     * nothing. (With short ones, a small run may miss by chance.) */
    CHECK(!require_mid_write || died_holding > 0);
    CHECK_OK(conc_shm_close(seg));
    CHECK_OK(conc_list_unlink(r.list));
    CHECK_OK(conc_list_close(r.list));
    CHECK_OK(conc_list_unlink(r.ctl));
    CHECK_OK(conc_list_close(r.ctl));
}

/* 64 KiB values: the writer spends nearly all its time in a write, so
 * nearly every kill lands in the middle of one. */
TEST(bytes_writer_killed_mid_write) { kill_torture(KILL_ITEM, KILL_ITEM, 20000, 3000, 1); }

/* 16-byte values: short writes, so the kills land at every point, in and
 * between writes. */
TEST(bytes_writer_killed_at_any_point) { kill_torture(16, 16, 5, 300, 0); }

int main(void) {
    shm_snapshot_begin();
    RUN(add_returns_previous_and_wraps);
    RUN(compare_exchange_semantics);
    RUN(add_and_compare_exchange_errors);
    RUN(concurrent_adds_from_processes_and_threads_are_exact);
    RUN(bytes_round_trip_and_lengths);
    RUN(bytes_errors);
    RUN(bytes_torn_read_torture);
    RUN(bytes_writer_killed_mid_write);
    RUN(bytes_writer_killed_at_any_point);
    return shm_snapshot_end(CHECK_SUMMARY());
}
