/* Out of memory is a status, never an abort.
 *
 * Each case runs (in the harness's forked child) with RLIMIT_DATA at
 * 64 MiB and the heap filled with malloc until malloc(16) fails; then
 * every constructor and a sample of every other kind of call must return
 * a status (CONC_ERR_RESOURCE_EXHAUSTED where conc needed memory it could
 * not get), leave the output NULL or zero on failure, and never abort.
 * Calls that need no heap may still succeed: mapping a file read-only or
 * shared memory is not counted against RLIMIT_DATA.
 *
 * Skipped under the sanitizers and valgrind: their allocators reserve
 * their own large private mappings (ASan's shadow, valgrind's arena) and
 * either abort on a failed allocation or do not honour RLIMIT_DATA the way
 * glibc's malloc does, so the test would measure them, not conc. */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>

#define OOM_SKIP_REASON "sanitizer and valgrind allocators do not fail malloc the way glibc does"
#define OOM_SKIP() SKIP_IF(CHECK_ASAN || CHECK_TSAN || check_under_valgrind_(), OOM_SKIP_REASON)

/* A status conc may return at all. */
static int valid_status(conc_status s) {
    return (int)s >= 0 && (int)s <= CONC_ERR_SHUTDOWN;
}

/* Checks that a call returned a status, and on failure left a message. */
#define CHECK_RETURNS(expr)                                                        \
    do {                                                                           \
        conc_status s_ = (expr);                                                   \
        if (!valid_status(s_)) {                                                   \
            fprintf(stderr, "  %s:%d: %s returned %d\n", __FILE__, __LINE__,       \
                    #expr, (int)s_);                                               \
            check_failures_++;                                                     \
        } else if (s_ != CONC_OK && conc_last_error_message()[0] == '\0') {        \
            fprintf(stderr, "  %s:%d: %s failed (%s) with no message\n",           \
                    __FILE__, __LINE__, #expr, conc_status_str(s_));               \
            check_failures_++;                                                     \
        }                                                                          \
    } while (0)

/* Limits the data segment and fills the heap until malloc(16) fails. */
static void exhaust_heap(void) {
    struct rlimit lim = {64u << 20, 64u << 20};
    CHECK(setrlimit(RLIMIT_DATA, &lim) == 0);
    size_t size = 1u << 20;
    unsigned long filled = 0;
    while (size >= 16) {
        void *p = malloc(size);
        if (p == NULL) {
            size /= 2;
            continue;
        }
        filled += size;
    }
    for (int i = 0; i < 64; i++) { /* empty the small-chunk caches too */
        if (malloc(16) != NULL) {
            filled += 16;
        }
    }
    CHECK(malloc(16) == NULL);
    CHECK(filled > 0);
}

static char existing_[64];
static char missing_[64];

/* A small file to map, made before the heap is filled. */
static void make_files(void) {
    snprintf(existing_, sizeof existing_, "/tmp/conc_oom_%d", (int)getpid());
    snprintf(missing_, sizeof missing_, "/tmp/conc_oom_missing_%d", (int)getpid());
    int fd = open(existing_, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    CHECK(fd >= 0);
    const char text[] = "one\ntwo\nthree\n";
    CHECK(write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1));
    close(fd);
}

/* Shows what a constructor returned with no memory left. */
static void note(const char *call, conc_status s) {
    printf("  %s: %s\n", call, conc_status_str(s));
}

static void *thread_fn(void *arg) { return arg; }
static int child_fn(void *arg) { return arg == NULL ? 3 : 4; }

/* Every constructor, with nothing made before the heap was filled (so the
 * first use of each of conc's tables happens with no memory). */
TEST(constructors_return_statuses) {
    OOM_SKIP();
    make_files();
    exhaust_heap();

    conc_thread t = {0};
    CHECK_STATUS(conc_thread_spawn(&t, NULL, NULL), CONC_ERR_INVALID_ARGUMENT);
    conc_status s = conc_thread_spawn(&t, thread_fn, NULL);
    note("conc_thread_spawn", s);
    CHECK_RETURNS(s);
    if (s == CONC_OK) {
        CHECK_RETURNS(conc_thread_join(t, NULL));
    } else {
        CHECK(s == CONC_ERR_RESOURCE_EXHAUSTED);
    }
    conc_thread_options opts = {"oom-thread", 1 << 16};
    s = conc_thread_spawn_with(&t, &opts, thread_fn, NULL);
    note("conc_thread_spawn_with", s);
    CHECK_RETURNS(s);
    if (s == CONC_OK) {
        CHECK_RETURNS(conc_thread_join(t, NULL));
    }

    conc_mmap *map = NULL;
    s = conc_mmap_open(&map, existing_, CONC_ACCESS_READ);
    note("conc_mmap_open", s);
    CHECK_RETURNS(s);
    CHECK((s == CONC_OK) == (map != NULL));
    if (map != NULL) {
        const uint8_t *line;
        size_t len;
        CHECK_RETURNS(conc_mmap_readline(map, &line, &len));
        CHECK_OK(conc_mmap_close(map));
    }
    map = NULL;
    s = conc_mmap_open(&map, missing_, CONC_ACCESS_READ);
    note("conc_mmap_open", s);
    CHECK(s == CONC_ERR_NOT_FOUND || s == CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(map == NULL);
    s = conc_mmap_open_range(&map, existing_, CONC_ACCESS_COPY, 4, 3);
    note("conc_mmap_open_range", s);
    CHECK_RETURNS(s);
    if (map != NULL) {
        CHECK_OK(conc_mmap_close(map));
    }
    map = NULL;
    s = conc_mmap_anonymous(&map, 1 << 20);
    note("conc_mmap_anonymous", s);
    CHECK_RETURNS(s);
    CHECK((s == CONC_OK) == (map != NULL));
    if (map != NULL) {
        CHECK_OK(conc_mmap_close(map));
    }

    conc_shm *shm = NULL;
    s = conc_shm_create(&shm, NULL, 4096);
    note("conc_shm_create", s);
    CHECK_RETURNS(s);
    CHECK((s == CONC_OK) == (shm != NULL));
    conc_shm *other = NULL;
    if (shm != NULL) {
        char name[64];
        snprintf(name, sizeof name, "%s", conc_shm_name(shm));
        s = conc_shm_open(&other, name);
        note("conc_shm_open", s);
        CHECK_RETURNS(s);
        if (other != NULL) {
            CHECK_OK(conc_shm_close(other));
        }
        CHECK_RETURNS(conc_shm_unlink(shm));
        CHECK_OK(conc_shm_close(shm));
    }
    other = NULL;
    s = conc_shm_open(&other, "conc_oom_no_such_segment");
    note("conc_shm_open", s);
    CHECK(s == CONC_ERR_NOT_FOUND || s == CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(other == NULL);

    conc_list *list = NULL;
    s = conc_list_create(&list, NULL, CONC_TYPE_I64, 16);
    note("conc_list_create", s);
    CHECK_RETURNS(s);
    CHECK((s == CONC_OK) == (list != NULL));
    if (list != NULL) {
        conc_list *again = NULL;
        char name[64];
        snprintf(name, sizeof name, "%s", conc_list_name(list));
        s = conc_list_open(&again, name);
        note("conc_list_open", s);
        CHECK_RETURNS(s);
        if (again != NULL) {
            CHECK_OK(conc_list_close(again));
        }
        CHECK_RETURNS(conc_list_unlink(list));
        CHECK_OK(conc_list_close(list));
    }
    list = NULL;
    s = conc_list_open(&list, "conc_oom_no_such_list");
    note("conc_list_open", s);
    CHECK(s == CONC_ERR_NOT_FOUND || s == CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(list == NULL);

    conc_process p = {0};
    s = conc_process_spawn(&p, child_fn, NULL);
    note("conc_process_spawn", s);
    CHECK_RETURNS(s);
    if (s == CONC_OK) {
        int code = -1;
        CHECK_OK(conc_process_join(p, &code));
        CHECK(code == 3);
    } else {
        CHECK(p.pid == 0);
    }
    unlink(existing_);
}

/* Objects made while memory was plentiful, then used, failed on and closed
 * with none left: a sample of every kind of call. */
TEST(other_calls_return_statuses) {
    OOM_SKIP();
    make_files();
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, existing_, CONC_ACCESS_READ));
    conc_shm *shm = NULL;
    CHECK_OK(conc_shm_create(&shm, NULL, 4096));
    conc_list *list = NULL;
    CHECK_OK(conc_list_create(&list, NULL, CONC_TYPE_F64, 8));
    conc_thread t = {0};
    CHECK_OK(conc_thread_spawn(&t, thread_fn, &t));
    conc_process p = {0};
    CHECK_OK(conc_process_spawn(&p, child_fn, &p));
    /* Large enough for count_lines to split it between threads. */
    conc_mmap *big = NULL;
    CHECK_OK(conc_mmap_anonymous(&big, 4 * (size_t)CONC_MMAP_COUNT_CHUNK));
    exhaust_heap();

    /* errors and version */
    CHECK(conc_status_str(CONC_ERR_RESOURCE_EXHAUSTED)[0] != '\0');
    CHECK(conc_version() != NULL);
    CHECK(conc_cpu_count() >= 1);
    conc_thread_yield();
    conc_sleep_ms(1);

    /* threads */
    void *result = NULL;
    CHECK_OK(conc_thread_join(t, &result));
    CHECK(result == &t);
    CHECK_STATUS(conc_thread_join(t, NULL), CONC_ERR_INVALID_STATE);
    CHECK(strstr(conc_last_error_message(), "conc_thread_join") != NULL);
    conc_thread zero = {0};
    CHECK_STATUS(conc_thread_detach(zero), CONC_ERR_INVALID_STATE);

    /* maps: every accessor, an error with an OS cause, and close */
    const uint8_t *line;
    size_t len;
    CHECK_OK(conc_mmap_readline(map, &line, &len));
    CHECK(len == 4);
    uint8_t byte;
    CHECK_OK(conc_mmap_read_byte(map, &byte));
    CHECK_OK(conc_mmap_seek(map, 0, CONC_SEEK_SET));
    CHECK(conc_mmap_tell(map) == 0);
    int64_t pos = -2;
    CHECK_OK(conc_mmap_find(map, "three", 5, 0, &pos));
    CHECK(pos == 8);
    CHECK_OK(conc_mmap_rfind(map, "t", 1, 0, &pos));
    uint64_t lines = 0;
    CHECK_OK(conc_mmap_count_lines(map, &lines));
    CHECK(lines == 3);
    CHECK_STATUS(conc_mmap_seek(map, 100, CONC_SEEK_SET), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_mmap_seek(map, 0, (conc_whence)77), CONC_ERR_INVALID_ARGUMENT);
    CHECK_RETURNS(conc_mmap_flush(map));
    CHECK(conc_mmap_data(map) != NULL);
    CHECK(conc_mmap_len(map) == 14);
    CHECK_OK(conc_mmap_close(map));
    CHECK_STATUS(conc_mmap_close(map), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_mmap_readline(map, &line, &len), CONC_ERR_INVALID_STATE);
    /* Counting on several threads needs memory for them: with none, it
     * counts on the calling thread alone, and still gets it right. */
    lines = 99;
    CHECK_OK(conc_mmap_count_lines(big, &lines));
    CHECK(lines == 1); /* all zero bytes: one unterminated line */
    CHECK_OK(conc_mmap_close(big));

    /* shared memory */
    CHECK(conc_shm_buf(shm) != NULL);
    CHECK(conc_shm_size(shm) == 4096);
    CHECK(conc_shm_name(shm)[0] != '\0');
    conc_shm *bad = shm;
    CHECK_STATUS(conc_shm_create(&bad, "bad/name", 10), CONC_ERR_INVALID_ARGUMENT);
    CHECK(bad == NULL);
    conc_status s = conc_shm_unlink_name("conc_oom_no_such_segment");
    CHECK(s == CONC_ERR_NOT_FOUND || s == CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK_OK(conc_shm_unlink(shm));
    CHECK_OK(conc_shm_close(shm));

    /* lists */
    CHECK(conc_list_len(list) == 8);
    CHECK(conc_list_type(list) == CONC_TYPE_F64);
    CHECK_OK(conc_list_set_f64(list, 3, 2.5));
    double d = 0;
    CHECK_OK(conc_list_get_f64(list, 3, &d));
    CHECK(d == 2.5);
    CHECK_STATUS(conc_list_get_f64(list, 8, &d), CONC_ERR_OUT_OF_RANGE);
    int64_t v;
    CHECK_STATUS(conc_list_get_i64(list, 0, &v), CONC_ERR_INVALID_ARGUMENT);
    CHECK_OK(conc_list_unlink(list));
    CHECK_OK(conc_list_close(list));

    /* processes */
    int code = -1;
    CHECK_OK(conc_process_join(p, &code));
    CHECK(code == 4);
    CHECK_STATUS(conc_process_join(p, &code), CONC_ERR_INVALID_STATE);
    unlink(existing_);
}

int main(void) {
    RUN(constructors_return_statuses);
    RUN(other_calls_return_statuses);
    return CHECK_SUMMARY();
}
