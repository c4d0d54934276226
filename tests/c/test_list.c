/* Shared lists through the C ABI: create/open by name alone, types,
 * bounds, the header check, concurrent writers in children, every error. */
#include "check.h"
#include "shm_snapshot.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

static void make_name(char *buf, size_t size, const char *tag) {
    snprintf(buf, size, "ctl%d_%s", (int)getpid(), tag);
}

static int in_dev_shm(const char *name) {
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    return access(path, F_OK) == 0;
}

TEST(create_then_open_by_name_alone) {
    conc_list *a = (conc_list *)1, *b = (conc_list *)1;
    CHECK_OK(conc_list_create(&a, NULL, CONC_TYPE_I64, 100));
    const char *name = conc_list_name(a);
    CHECK(strlen(name) == 12 && strncmp(name, "psm_", 4) == 0);
    CHECK(conc_list_len(a) == 100);
    CHECK(conc_list_type(a) == CONC_TYPE_I64);
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(st.st_size == 24 + 100 * 8);

    CHECK_OK(conc_list_open(&b, name));
    CHECK(conc_list_len(b) == 100);
    CHECK(conc_list_type(b) == CONC_TYPE_I64);
    CHECK(strcmp(conc_list_name(b), name) == 0);
    int zero = 1;
    for (size_t i = 0; i < 100; i++) {
        int64_t v = -1;
        CHECK_OK(conc_list_get_i64(b, i, &v));
        zero &= v == 0;
    }
    CHECK(zero);
    CHECK_OK(conc_list_set_i64(a, 0, INT64_MIN));
    CHECK_OK(conc_list_set_i64(b, 99, INT64_MAX));
    int64_t v = 0;
    CHECK_OK(conc_list_get_i64(b, 0, &v));
    CHECK(v == INT64_MIN);
    CHECK_OK(conc_list_get_i64(a, 99, &v));
    CHECK(v == INT64_MAX);
    CHECK_OK(conc_list_unlink(a));
    CHECK(!in_dev_shm(name));
    CHECK_OK(conc_list_close(b));
    CHECK_OK(conc_list_close(a));
}

TEST(f64_lists) {
    char name[64];
    make_name(name, sizeof name, "f64");
    conc_list *a = NULL, *b = NULL;
    CHECK_OK(conc_list_create(&a, name, CONC_TYPE_F64, 3));
    CHECK_OK(conc_list_open(&b, name));
    CHECK(conc_list_type(b) == CONC_TYPE_F64);
    double d = 1;
    CHECK_OK(conc_list_get_f64(b, 2, &d));
    CHECK(d == 0.0);
    CHECK_OK(conc_list_set_f64(a, 2, -2.5));
    CHECK_OK(conc_list_set_f64(a, 1, 1e300));
    CHECK_OK(conc_list_get_f64(b, 2, &d));
    CHECK(d == -2.5);
    CHECK_OK(conc_list_get_f64(b, 1, &d));
    CHECK(d == 1e300);
    CHECK_OK(conc_list_unlink(b));
    CHECK_OK(conc_list_close(a));
    CHECK_OK(conc_list_close(b));
}

TEST(wrong_type_and_out_of_range) {
    char name[64];
    make_name(name, sizeof name, "range");
    conc_list *i64 = NULL, *f64 = NULL;
    CHECK_OK(conc_list_create(&i64, name, CONC_TYPE_I64, 10));
    CHECK_OK(conc_list_create(&f64, NULL, CONC_TYPE_F64, 10));
    int64_t v = 123;
    double d = 4.5;
    CHECK_STATUS(conc_list_get_f64(i64, 0, &d), CONC_ERR_INVALID_ARGUMENT);
    CHECK(d == 4.5);
    char want[160];
    snprintf(want, sizeof want,
             "conc_list_get_f64(\"%s\", 0): the list holds CONC_TYPE_I64 values, not "
             "CONC_TYPE_F64",
             name);
    CHECK(strcmp(conc_last_error_message(), want) == 0);
    CHECK_STATUS(conc_list_set_f64(i64, 0, 1.0), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_get_i64(f64, 0, &v), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_set_i64(f64, 0, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_list_set_i64(\"psm_");

    CHECK_OK(conc_list_set_i64(i64, 9, 9));
    CHECK_STATUS(conc_list_set_i64(i64, 10, 1), CONC_ERR_OUT_OF_RANGE);
    snprintf(want, sizeof want,
             "conc_list_set_i64(\"%s\", 10): index past the end (length 10)", name);
    CHECK(strcmp(conc_last_error_message(), want) == 0);
    CHECK_STATUS(conc_list_get_i64(i64, 10, &v), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_list_get_i64(i64, SIZE_MAX, &v), CONC_ERR_OUT_OF_RANGE);
    CHECK(v == 123);
    CHECK_STATUS(conc_list_set_f64(f64, 10, 1.0), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_list_get_f64(f64, SIZE_MAX, &d), CONC_ERR_OUT_OF_RANGE);
    CHECK_OK(conc_list_get_i64(i64, 9, &v));
    CHECK(v == 9);
    CHECK_OK(conc_list_unlink(i64));
    CHECK_OK(conc_list_unlink(f64));
    CHECK_OK(conc_list_close(i64));
    CHECK_OK(conc_list_close(f64));
}

/* Plain segments that are not lists, and forged headers. */
static void check_not_a_list(const char *tag, size_t size, const void *header, size_t hlen) {
    char name[64];
    make_name(name, sizeof name, tag);
    conc_shm *shm = NULL;
    CHECK_OK(conc_shm_create(&shm, name, size));
    if (shm != NULL && header != NULL) {
        memcpy(conc_shm_buf(shm), header, hlen);
    }
    conc_list *list = (conc_list *)1;
    CHECK_STATUS(conc_list_open(&list, name), CONC_ERR_INVALID_ARGUMENT);
    CHECK(list == NULL);
    CHECK_MESSAGE_HAS("conc_list_open(\"");
    CHECK_MESSAGE_HAS(name);
    CHECK_MESSAGE_HAS("not a conc list");
    CHECK_OK(conc_shm_unlink(shm));
    CHECK_OK(conc_shm_close(shm));
}

struct forged_header {
    char magic[8];
    uint32_t version, type;
    uint64_t len;
};

TEST(segments_that_are_not_lists_are_refused) {
    check_not_a_list("plain", 100, NULL, 0);
    check_not_a_list("tiny", 8, NULL, 0);
    struct forged_header h = {{'c', 'o', 'n', 'c', 'l', 's', 't', '\0'}, 2, 0, 1};
    check_not_a_list("version", 64, &h, sizeof h);
    h.version = 1;
    h.type = 7;
    check_not_a_list("type", 64, &h, sizeof h);
    h.type = 0;
    h.len = 6; /* 24 + 6 * 8 > 64 */
    check_not_a_list("long", 64, &h, sizeof h);
    h.len = 0;
    check_not_a_list("len0", 64, &h, sizeof h);
    h.len = UINT64_MAX;
    check_not_a_list("huge", 64, &h, sizeof h);

    /* A header without its magic, as while a create is under way. */
    h.len = 5;
    h.magic[0] = '\0';
    check_not_a_list("unpublished", 64, &h, sizeof h);

    /* A segment of size 0. */
    char name[64], path[72];
    make_name(name, sizeof name, "empty");
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
    CHECK(fd >= 0);
    close(fd);
    conc_list *list = (conc_list *)1;
    CHECK_STATUS(conc_list_open(&list, name), CONC_ERR_INVALID_ARGUMENT);
    CHECK(list == NULL);
    CHECK(shm_unlink(path) == 0);

    /* The header as conc writes it is a list: 5 elements fit in 64 bytes. */
    conc_shm *shm = NULL;
    make_name(name, sizeof name, "fits");
    CHECK_OK(conc_shm_create(&shm, name, 64));
    h.magic[0] = 'c';
    memcpy(conc_shm_buf(shm), &h, sizeof h);
    CHECK_OK(conc_list_open(&list, name));
    CHECK(conc_list_len(list) == 5);
    CHECK_OK(conc_list_close(list));
    CHECK_OK(conc_shm_unlink(shm));
    CHECK_OK(conc_shm_close(shm));
}

static int fill_half(void *arg) {
    const char *name = arg;
    alarm(10); /* a deadlock ends this child with SIGALRM */
    conc_list *list = NULL;
    if (conc_list_open(&list, name) != CONC_OK) {
        return 10;
    }
    if (conc_list_type(list) != CONC_TYPE_F64 || conc_list_len(list) != 100) {
        return 11;
    }
    for (size_t i = 50; i < 100; i++) {
        if (conc_list_set_f64(list, i, 0.5 * (double)i) != CONC_OK) {
            return 12;
        }
    }
    return conc_list_close(list) == CONC_OK ? 0 : 13;
}

TEST(child_attaches_by_name_alone) {
    conc_list *list = NULL;
    CHECK_OK(conc_list_create(&list, NULL, CONC_TYPE_F64, 100));
    char name[32];
    snprintf(name, sizeof name, "%s", conc_list_name(list));
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, fill_half, name));
    int code = -1;
    CHECK_OK(conc_process_join(p, &code));
    CHECK(code == 0);
    int ok = 1;
    for (size_t i = 0; i < 100; i++) {
        double d = -1;
        CHECK_OK(conc_list_get_f64(list, i, &d));
        ok &= d == (i < 50 ? 0.0 : 0.5 * (double)i);
    }
    CHECK(ok);
    CHECK_OK(conc_list_unlink(list));
    CHECK_OK(conc_list_close(list));
}

/* Two writers store whole-word patterns into the same elements while a
 * reader checks that it never sees a mix of them (a torn value). */
#define PATTERN_A INT64_C(0x0101010101010101)
#define PATTERN_B INT64_C(-0x0101010101010102) /* ~PATTERN_A */
#define SLOTS 64
#define ROUNDS 20000

struct writer_arg {
    conc_list *list;
    int64_t pattern;
};

static int write_pattern(void *arg) {
    struct writer_arg *w = arg;
    alarm(20);
    for (int r = 0; r < ROUNDS; r++) {
        for (size_t i = 0; i < SLOTS; i++) {
            if (conc_list_set_i64(w->list, i, (r & 1) ? w->pattern : ~w->pattern) != CONC_OK) {
                return 1;
            }
        }
    }
    return 0;
}

static int read_patterns(void *arg) {
    conc_list *list = arg;
    alarm(20);
    for (int r = 0; r < ROUNDS; r++) {
        for (size_t i = 0; i < SLOTS; i++) {
            int64_t v;
            if (conc_list_get_i64(list, i, &v) != CONC_OK) {
                return 1;
            }
            if (v != 0 && v != PATTERN_A && v != PATTERN_B) {
                return 2; /* torn */
            }
        }
    }
    return 0;
}

TEST(concurrent_writers_in_children) {
    conc_list *list = NULL;
    CHECK_OK(conc_list_create(&list, NULL, CONC_TYPE_I64, SLOTS + 2));
    struct writer_arg a = {list, PATTERN_A}, b = {list, PATTERN_B};
    conc_process pa, pb, pr;
    CHECK_OK(conc_process_spawn(&pa, write_pattern, &a));
    CHECK_OK(conc_process_spawn(&pb, write_pattern, &b));
    CHECK_OK(conc_process_spawn(&pr, read_patterns, list));
    int ca = -1, cb = -1, cr = -1;
    CHECK_OK(conc_process_join(pa, &ca));
    CHECK_OK(conc_process_join(pb, &cb));
    CHECK_OK(conc_process_join(pr, &cr));
    CHECK(ca == 0 && cb == 0 && cr == 0);
    for (size_t i = 0; i < SLOTS; i++) {
        int64_t v;
        CHECK_OK(conc_list_get_i64(list, i, &v));
        CHECK(v == PATTERN_A || v == PATTERN_B);
    }
    CHECK_OK(conc_list_unlink(list));
    CHECK_OK(conc_list_close(list));
}

TEST(bad_arguments) {
    char name[64];
    make_name(name, sizeof name, "bad");
    conc_list *list = (conc_list *)1;
    CHECK_STATUS(conc_list_create(&list, name, CONC_TYPE_I64, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK(list == NULL);
    char want[128];
    snprintf(want, sizeof want, "conc_list_create(\"%s\", CONC_TYPE_I64, 0): the length is 0",
             name);
    CHECK(strcmp(conc_last_error_message(), want) == 0);
    list = (conc_list *)1;
    CHECK_STATUS(conc_list_create(&list, name, CONC_TYPE_BYTES, 10), CONC_ERR_INVALID_ARGUMENT);
    CHECK(list == NULL);
    CHECK_MESSAGE_HAS("are made by conc_list_create_bytes");
    CHECK_STATUS(conc_list_create(&list, name, (conc_type)3, 10), CONC_ERR_INVALID_ARGUMENT);
    CHECK(list == NULL);
    CHECK_MESSAGE_HAS("unknown conc_type value");
    CHECK_STATUS(conc_list_create(&list, name, (conc_type)-1, 10), CONC_ERR_INVALID_ARGUMENT);
    CHECK(!in_dev_shm(name));

    const char *bad[] = {"", "/", "a/b", ".", "..", "/..", "bad name",
                         "0123456789012345678901234567890"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_STATUS(conc_list_create(&list, bad[i], CONC_TYPE_I64, 1),
                     CONC_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE_HAS("invalid shared memory name");
        CHECK_STATUS(conc_list_open(&list, bad[i]), CONC_ERR_INVALID_ARGUMENT);
    }

    /* Lengths no segment can hold. */
    CHECK_STATUS(conc_list_create(&list, name, CONC_TYPE_I64, SIZE_MAX),
                 CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK_STATUS(conc_list_create(&list, name, CONC_TYPE_F64, SIZE_MAX / 8),
                 CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK_STATUS(conc_list_create(&list, name, CONC_TYPE_I64, (size_t)INT64_MAX / 8),
                 CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(list == NULL);
    CHECK(!in_dev_shm(name));

    CHECK_STATUS(conc_list_open(&list, name), CONC_ERR_NOT_FOUND);
    CHECK_MESSAGE_HAS("(ENOENT)");

    /* NULL for each pointer argument. */
    CHECK_STATUS(conc_list_create(NULL, NULL, CONC_TYPE_I64, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_open(NULL, name), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_open(&list, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_list_open: argument `name` is NULL");
    int64_t v = 0;
    double d = 0;
    CHECK_STATUS(conc_list_set_i64(NULL, 0, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_get_i64(NULL, 0, &v), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_set_f64(NULL, 0, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_get_f64(NULL, 0, &d), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_list_unlink(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_OK(conc_list_close(NULL));
    CHECK(conc_list_len(NULL) == 0);
    CHECK(conc_list_type(NULL) == CONC_TYPE_I64);
    CHECK(conc_list_name(NULL) != NULL && conc_list_name(NULL)[0] == '\0');

    CHECK_OK(conc_list_create(&list, NULL, CONC_TYPE_I64, 1));
    CHECK_STATUS(conc_list_get_i64(list, 0, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_list_get_i64: argument `value` is NULL");
    conc_list *flist = NULL;
    CHECK_OK(conc_list_create(&flist, NULL, CONC_TYPE_F64, 1));
    CHECK_STATUS(conc_list_get_f64(flist, 0, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_OK(conc_list_unlink(flist));
    CHECK_OK(conc_list_close(flist));

    /* Unlink twice, use after unlink, close twice, a forged pointer. */
    CHECK_OK(conc_list_unlink(list));
    CHECK_STATUS(conc_list_unlink(list), CONC_ERR_NOT_FOUND);
    CHECK_MESSAGE_HAS("conc_list_unlink(\"psm_");
    CHECK_OK(conc_list_set_i64(list, 0, 8));
    CHECK_OK(conc_list_get_i64(list, 0, &v));
    CHECK(v == 8);
    CHECK_OK(conc_list_close(list));
    CHECK_STATUS(conc_list_close(list), CONC_ERR_INVALID_STATE);
    uint64_t fake[8] = {0};
    CHECK_STATUS(conc_list_close((conc_list *)fake), CONC_ERR_INVALID_STATE);
}

TEST(create_refuses_existing_names) {
    char name[64];
    make_name(name, sizeof name, "taken");
    conc_shm *shm = NULL;
    CHECK_OK(conc_shm_create(&shm, name, 100));
    conc_list *list = (conc_list *)1;
    CHECK_STATUS(conc_list_create(&list, name, CONC_TYPE_I64, 2), CONC_ERR_ALREADY_EXISTS);
    CHECK(list == NULL);
    CHECK_MESSAGE_HAS("conc_list_create(\"");
    CHECK_MESSAGE_HAS("\", CONC_TYPE_I64, 2): File exists (EEXIST)");
    CHECK(conc_shm_buf(shm)[0] == 0); /* untouched */
    CHECK_OK(conc_shm_unlink(shm));
    CHECK_OK(conc_shm_close(shm));

    /* umask does not change the mode. */
    umask(0277);
    CHECK_OK(conc_list_create(&list, name, CONC_TYPE_F64, 2));
    char path[96];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK_OK(conc_list_unlink(list));
    CHECK_OK(conc_list_close(list));
}

int main(void) {
    shm_snapshot_begin();
    RUN(create_then_open_by_name_alone);
    RUN(f64_lists);
    RUN(wrong_type_and_out_of_range);
    RUN(segments_that_are_not_lists_are_refused);
    RUN(child_attaches_by_name_alone);
    RUN(concurrent_writers_in_children);
    RUN(bad_arguments);
    RUN(create_refuses_existing_names);
    return shm_snapshot_end(CHECK_SUMMARY());
}
