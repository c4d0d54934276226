/* Queues between processes through the C ABI: create/open by name, the
 * header check, lengths, the try/timeout variants, the too-small buffer,
 * shutdown (also waking other processes), unlink, every error status and
 * NULL pointer, closed and forged handles, threads. The 4x4
 * producer/consumer run and the kill torture are in test_queue_torture.c.
 *
 * Uses threads (one case): make sanitize: tsan */
#include "check.h"
#include "shm_snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

static void make_name(char *buf, size_t size, const char *tag) {
    snprintf(buf, size, "ctq%d_%s", (int)getpid(), tag);
}

static int in_dev_shm(const char *name) {
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    return access(path, F_OK) == 0;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A fresh queue with a random name, unlinked at once (handles stay usable). */
static conc_queue *scratch(size_t capacity, size_t message_size) {
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_create(&q, NULL, capacity, message_size));
    CHECK_OK(conc_queue_unlink(q));
    return q;
}

TEST(create_open_share_geometry) {
    conc_queue *a = (conc_queue *)1, *b = (conc_queue *)1;
    CHECK_OK(conc_queue_create(&a, NULL, 10, 100));
    const char *name = conc_queue_name(a);
    CHECK(strlen(name) == 12 && strncmp(name, "psm_", 4) == 0);
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(st.st_size >= 256 + 10 * 100);
    CHECK(conc_queue_capacity(a) == 10);
    CHECK(conc_queue_message_size(a) == 100);
    CHECK(conc_queue_len(a) == 0);

    CHECK_OK(conc_queue_open(&b, name));
    CHECK(conc_queue_capacity(b) == 10);
    CHECK(conc_queue_message_size(b) == 100);
    CHECK(strcmp(conc_queue_name(b), name) == 0);
    CHECK_OK(conc_queue_push(a, "hello", 5));
    CHECK(conc_queue_len(b) == 1);
    char buf[100];
    size_t n = 0;
    CHECK_OK(conc_queue_pop(b, buf, sizeof buf, &n));
    CHECK(n == 5 && memcmp(buf, "hello", 5) == 0);
    CHECK(conc_queue_len(a) == 0);

    CHECK_OK(conc_queue_unlink(b));
    CHECK(!in_dev_shm(name));
    CHECK_STATUS(conc_queue_unlink(b), CONC_ERR_NOT_FOUND);
    CHECK_STATUS(conc_queue_unlink(a), CONC_ERR_NOT_FOUND);
    /* Still usable after the unlink, until closed. */
    CHECK_OK(conc_queue_push(b, "x", 1));
    CHECK_OK(conc_queue_pop(a, buf, sizeof buf, &n));
    CHECK(n == 1 && buf[0] == 'x');
    conc_queue *c = (conc_queue *)1;
    CHECK_STATUS(conc_queue_open(&c, name), CONC_ERR_NOT_FOUND);
    CHECK(c == NULL);
    CHECK_OK(conc_queue_close(b));
    CHECK_OK(conc_queue_close(a));
}

TEST(named_create_is_exclusive) {
    char name[64], slashed[70];
    make_name(name, sizeof name, "named");
    snprintf(slashed, sizeof slashed, "/%s", name);
    conc_queue *a = NULL, *b = (conc_queue *)1;
    CHECK_OK(conc_queue_create(&a, slashed, 4, 8));
    CHECK(strcmp(conc_queue_name(a), name) == 0);
    CHECK_STATUS(conc_queue_create(&b, name, 4, 8), CONC_ERR_ALREADY_EXISTS);
    CHECK(b == NULL);
    CHECK_MESSAGE_HAS("conc_queue_create(");
    /* A plain segment of that name is not taken over either. */
    CHECK_OK(conc_queue_unlink(a));
    conc_shm *s = NULL;
    CHECK_OK(conc_shm_create(&s, name, 4096));
    CHECK_STATUS(conc_queue_create(&b, name, 4, 8), CONC_ERR_ALREADY_EXISTS);
    CHECK_OK(conc_shm_unlink(s));
    CHECK_OK(conc_shm_close(s));
    CHECK_OK(conc_queue_close(a));
}

TEST(messages_keep_their_length_in_order) {
    conc_queue *q = scratch(64, 40);
    uint8_t msg[40], buf[64];
    CHECK_OK(conc_queue_push(q, NULL, 0));
    for (size_t len = 0; len <= 40; len++) {
        for (size_t i = 0; i < len; i++) {
            msg[i] = (uint8_t)(len * 7 + i);
        }
        CHECK_OK(conc_queue_push(q, msg, len));
    }
    CHECK(conc_queue_len(q) == 42);
    size_t n = 99;
    CHECK_OK(conc_queue_pop(q, NULL, 0, &n));
    CHECK(n == 0);
    for (size_t len = 0; len <= 40; len++) {
        memset(buf, 0xee, sizeof buf);
        n = 99;
        CHECK_OK(conc_queue_pop(q, buf, sizeof buf, &n));
        CHECK(n == len);
        int same = 1;
        for (size_t i = 0; i < len; i++) {
            same &= buf[i] == (uint8_t)(len * 7 + i);
        }
        CHECK(same && buf[len] == 0xee);
    }
    CHECK(conc_queue_len(q) == 0);
    /* The ring wraps many times, in order. */
    for (uint32_t i = 0; i < 1000; i++) {
        CHECK_OK(conc_queue_push(q, &i, sizeof i));
        if (i % 3 == 2) {
            for (int k = 0; k < 3; k++) {
                uint32_t v = 0;
                CHECK_OK(conc_queue_pop(q, &v, sizeof v, &n));
                CHECK(n == 4 && v == i - 2 + (uint32_t)k);
            }
        }
    }
    CHECK_OK(conc_queue_close(q));
}

TEST(too_long_is_refused_whatever_the_state) {
    conc_queue *q = scratch(2, 8);
    char big[9] = "123456789";
    CHECK_STATUS(conc_queue_push(q, big, 9), CONC_ERR_OUT_OF_RANGE);
    CHECK_MESSAGE_HAS("9 bytes");
    CHECK_STATUS(conc_queue_try_push(q, big, 9), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_queue_push_timeout(q, big, 9, 0), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_queue_push(q, big, SIZE_MAX), CONC_ERR_OUT_OF_RANGE);
    CHECK(conc_queue_len(q) == 0);
    CHECK_OK(conc_queue_push(q, big, 8));
    CHECK_OK(conc_queue_push(q, big, 8));
    /* Full: refused at once, not after a wait. */
    double t0 = now_ms();
    CHECK_STATUS(conc_queue_push(q, big, 9), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_queue_push_timeout(q, big, 9, 5000), CONC_ERR_OUT_OF_RANGE);
    CHECK(now_ms() - t0 < 1000);
    CHECK_OK(conc_queue_shutdown(q));
    CHECK_STATUS(conc_queue_push(q, big, 9), CONC_ERR_OUT_OF_RANGE);
    CHECK(conc_queue_len(q) == 2);
    CHECK_OK(conc_queue_close(q));
}

TEST(try_and_timeout_variants) {
    conc_queue *q = scratch(2, 4);
    char buf[4];
    size_t n = 77;
    CHECK_STATUS(conc_queue_try_pop(q, buf, sizeof buf, &n), CONC_ERR_BUSY);
    CHECK(n == 77);
    CHECK_MESSAGE_HAS("empty");
    double t0 = now_ms();
    CHECK_STATUS(conc_queue_pop_timeout(q, 0, buf, sizeof buf, &n), CONC_ERR_TIMED_OUT);
    CHECK_STATUS(conc_queue_pop_timeout(q, 60, buf, sizeof buf, &n), CONC_ERR_TIMED_OUT);
    double waited = now_ms() - t0;
    CHECK(waited >= 59 && waited < 2000);
    CHECK(n == 77);
    CHECK_OK(conc_queue_try_push(q, "a", 1));
    CHECK_OK(conc_queue_push_timeout(q, "b", 1, 0));
    CHECK_STATUS(conc_queue_try_push(q, "c", 1), CONC_ERR_BUSY);
    CHECK_MESSAGE_HAS("full");
    t0 = now_ms();
    CHECK_STATUS(conc_queue_push_timeout(q, "c", 1, 0), CONC_ERR_TIMED_OUT);
    CHECK_STATUS(conc_queue_push_timeout(q, "c", 1, 60), CONC_ERR_TIMED_OUT);
    waited = now_ms() - t0;
    CHECK(waited >= 59 && waited < 2000);
    CHECK(conc_queue_len(q) == 2);
    CHECK_OK(conc_queue_try_pop(q, buf, sizeof buf, &n));
    CHECK(n == 1 && buf[0] == 'a');
    CHECK_OK(conc_queue_pop_timeout(q, 0, buf, sizeof buf, &n));
    CHECK(n == 1 && buf[0] == 'b');
    CHECK_OK(conc_queue_close(q));
}

TEST(small_buffer_leaves_the_message_first) {
    conc_queue *q = scratch(4, 16);
    CHECK_OK(conc_queue_push(q, "0123456789", 10));
    CHECK_OK(conc_queue_push(q, "ab", 2));
    char buf[16];
    size_t n = 0;
    CHECK_STATUS(conc_queue_pop(q, buf, 9, &n), CONC_ERR_OUT_OF_RANGE);
    CHECK(n == 10);
    CHECK_MESSAGE_HAS("10 bytes");
    n = 0;
    CHECK_STATUS(conc_queue_try_pop(q, NULL, 0, &n), CONC_ERR_OUT_OF_RANGE); /* a size probe */
    CHECK(n == 10);
    n = 0;
    CHECK_STATUS(conc_queue_pop_timeout(q, 10, buf, 1, &n), CONC_ERR_OUT_OF_RANGE);
    CHECK(n == 10);
    CHECK(conc_queue_len(q) == 2);
    CHECK_OK(conc_queue_pop(q, buf, 10, &n));
    CHECK(n == 10 && memcmp(buf, "0123456789", 10) == 0);
    CHECK_OK(conc_queue_pop(q, buf, 2, &n));
    CHECK(n == 2 && memcmp(buf, "ab", 2) == 0);
    /* An empty message fits a size probe, and is popped by it. */
    CHECK_OK(conc_queue_push(q, "", 0));
    n = 5;
    CHECK_OK(conc_queue_try_pop(q, NULL, 0, &n));
    CHECK(n == 0 && conc_queue_len(q) == 0);
    CHECK_OK(conc_queue_close(q));
}

TEST(shutdown_refuses_pushes_then_drains) {
    conc_queue *q = scratch(4, 8);
    CHECK_OK(conc_queue_push(q, "one", 3));
    CHECK_OK(conc_queue_push(q, "two", 3));
    CHECK_OK(conc_queue_shutdown(q));
    CHECK_OK(conc_queue_shutdown(q));
    CHECK_STATUS(conc_queue_push(q, "x", 1), CONC_ERR_SHUTDOWN);
    CHECK_MESSAGE_HAS("shut down");
    CHECK_STATUS(conc_queue_try_push(q, "x", 1), CONC_ERR_SHUTDOWN);
    CHECK_STATUS(conc_queue_push_timeout(q, "x", 1, 10), CONC_ERR_SHUTDOWN);
    char buf[8];
    size_t n = 0;
    CHECK_OK(conc_queue_pop(q, buf, sizeof buf, &n));
    CHECK(n == 3 && memcmp(buf, "one", 3) == 0);
    CHECK_OK(conc_queue_try_pop(q, buf, sizeof buf, &n));
    CHECK(n == 3 && memcmp(buf, "two", 3) == 0);
    n = 42;
    CHECK_STATUS(conc_queue_pop(q, buf, sizeof buf, &n), CONC_ERR_SHUTDOWN);
    CHECK(n == 42);
    CHECK_STATUS(conc_queue_try_pop(q, buf, sizeof buf, &n), CONC_ERR_SHUTDOWN);
    CHECK_STATUS(conc_queue_pop_timeout(q, 10, buf, sizeof buf, &n), CONC_ERR_SHUTDOWN);
    /* Another handle (open) sees it too. */
    conc_queue *o = NULL;
    conc_queue *fresh = NULL;
    CHECK_OK(conc_queue_create(&fresh, NULL, 1, 1));
    CHECK_OK(conc_queue_open(&o, conc_queue_name(fresh)));
    CHECK_OK(conc_queue_unlink(fresh));
    CHECK_OK(conc_queue_shutdown(o));
    CHECK_STATUS(conc_queue_push(fresh, "x", 1), CONC_ERR_SHUTDOWN);
    CHECK_OK(conc_queue_close(o));
    CHECK_OK(conc_queue_close(fresh));
    CHECK_OK(conc_queue_close(q));
}

/* In a forked child: block in a pop or push on the queue `name`, then
 * exit with the status it returned. */
static pid_t blocked_child(const char *name, int push) {
    pid_t pid = fork();
    if (pid == 0) {
        conc_queue *q = NULL;
        if (conc_queue_open(&q, name) != CONC_OK) {
            _exit(100);
        }
        conc_status st;
        if (push) {
            st = conc_queue_push(q, "z", 1);
        } else {
            char buf[8];
            size_t n;
            st = conc_queue_pop(q, buf, sizeof buf, &n);
        }
        conc_queue_close(q);
        _exit((int)st);
    }
    return pid;
}

static int exit_code(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
        return -1;
    }
    return WEXITSTATUS(status);
}

TEST(shutdown_wakes_blocked_pushers_and_poppers_in_other_processes) {
    conc_queue *empty = NULL, *full = NULL;
    CHECK_OK(conc_queue_create(&empty, NULL, 4, 8));
    CHECK_OK(conc_queue_create(&full, NULL, 1, 8));
    CHECK_OK(conc_queue_push(full, "f", 1));
    pid_t kids[6];
    for (int i = 0; i < 3; i++) {
        kids[i] = blocked_child(conc_queue_name(empty), 0);
        kids[3 + i] = blocked_child(conc_queue_name(full), 1);
    }
    usleep(200 * 1000);
    int status;
    for (int i = 0; i < 6; i++) {
        CHECK(waitpid(kids[i], &status, WNOHANG) == 0); /* still blocked */
    }
    CHECK_OK(conc_queue_shutdown(empty));
    CHECK_OK(conc_queue_shutdown(full));
    for (int i = 0; i < 6; i++) {
        CHECK(exit_code(kids[i]) == CONC_ERR_SHUTDOWN);
    }
    /* The message pushed before the shutdown is still there. */
    char buf[8];
    size_t n;
    CHECK_OK(conc_queue_pop(full, buf, sizeof buf, &n));
    CHECK(n == 1 && buf[0] == 'f');
    CHECK_OK(conc_queue_unlink(empty));
    CHECK_OK(conc_queue_unlink(full));
    CHECK_OK(conc_queue_close(empty));
    CHECK_OK(conc_queue_close(full));
}

TEST(blocked_pop_and_push_are_woken_across_processes) {
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_create(&q, NULL, 1, 8));
    pid_t popper = blocked_child(conc_queue_name(q), 0);
    usleep(100 * 1000);
    CHECK_OK(conc_queue_push(q, "p", 1));
    CHECK(exit_code(popper) == CONC_OK);
    CHECK_OK(conc_queue_push(q, "q", 1));
    pid_t pusher = blocked_child(conc_queue_name(q), 1);
    usleep(100 * 1000);
    int status;
    CHECK(waitpid(pusher, &status, WNOHANG) == 0);
    char buf[8];
    size_t n;
    CHECK_OK(conc_queue_pop(q, buf, sizeof buf, &n));
    CHECK(n == 1 && buf[0] == 'q');
    CHECK(exit_code(pusher) == CONC_OK);
    CHECK_OK(conc_queue_pop_timeout(q, 1000, buf, sizeof buf, &n));
    CHECK(n == 1 && buf[0] == 'z');
    CHECK_OK(conc_queue_unlink(q));
    CHECK_OK(conc_queue_close(q));
}

TEST(forked_child_shares_the_queue) {
    conc_queue *q = scratch(8, 8);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = conc_queue_push(q, "child", 5) == CONC_OK;
        _exit(ok ? 0 : 1);
    }
    CHECK(exit_code(pid) == 0);
    char buf[8];
    size_t n;
    CHECK_OK(conc_queue_pop_timeout(q, 1000, buf, sizeof buf, &n));
    CHECK(n == 5 && memcmp(buf, "child", 5) == 0);
    CHECK_OK(conc_queue_close(q));
}

TEST(bad_arguments_and_null_pointers) {
    conc_queue *q = (conc_queue *)1;
    char name[64];
    make_name(name, sizeof name, "zero");
    CHECK_STATUS(conc_queue_create(&q, name, 0, 8), CONC_ERR_INVALID_ARGUMENT);
    CHECK(q == NULL);
    CHECK_MESSAGE_HAS("capacity");
    CHECK_STATUS(conc_queue_create(&q, name, 8, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("message size");
    CHECK(!in_dev_shm(name));
    CHECK_STATUS(conc_queue_create(NULL, NULL, 1, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_create(&q, "a/b", 1, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_create(&q, "", 1, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_open(NULL, "x"), CONC_ERR_INVALID_ARGUMENT);
    q = (conc_queue *)1;
    CHECK_STATUS(conc_queue_open(&q, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK(q == NULL);
    CHECK_STATUS(conc_queue_open(&q, ".."), CONC_ERR_INVALID_ARGUMENT);
    make_name(name, sizeof name, "missing");
    CHECK_STATUS(conc_queue_open(&q, name), CONC_ERR_NOT_FOUND);
    CHECK_MESSAGE_HAS("conc_queue_open(");

    /* Geometries no segment can hold: exhausted, no name left. */
    make_name(name, sizeof name, "huge");
    CHECK_STATUS(conc_queue_create(&q, name, SIZE_MAX, 8), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK_STATUS(conc_queue_create(&q, name, 2, SIZE_MAX - 4), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK_STATUS(conc_queue_create(&q, name, (SIZE_MAX >> 1) / 16, 8),
                 CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(!in_dev_shm(name));

    conc_queue *ok = scratch(2, 8);
    char buf[8];
    size_t n = 0;
    CHECK_STATUS(conc_queue_push(NULL, "x", 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_try_push(NULL, "x", 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_push_timeout(NULL, "x", 1, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_push(ok, NULL, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("message");
    CHECK_STATUS(conc_queue_try_push(ok, NULL, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_push_timeout(ok, NULL, 1, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_pop(NULL, buf, sizeof buf, &n), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_try_pop(NULL, buf, sizeof buf, &n), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_pop_timeout(NULL, 0, buf, sizeof buf, &n),
                 CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_pop(ok, NULL, 8, &n), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("buf");
    CHECK_STATUS(conc_queue_try_pop(ok, NULL, 8, &n), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_pop_timeout(ok, 0, NULL, 8, &n), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_pop(ok, buf, sizeof buf, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("len");
    CHECK_STATUS(conc_queue_try_pop(ok, buf, sizeof buf, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_pop_timeout(ok, 0, buf, sizeof buf, NULL),
                 CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_shutdown(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_queue_unlink(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_OK(conc_queue_close(NULL));
    CHECK(conc_queue_len(NULL) == 0);
    CHECK(conc_queue_capacity(NULL) == 0);
    CHECK(conc_queue_message_size(NULL) == 0);
    CHECK(strcmp(conc_queue_name(NULL), "") == 0);
    /* Nothing was pushed by the refused calls. */
    CHECK(conc_queue_len(ok) == 0);
    CHECK_OK(conc_queue_close(ok));
}

TEST(open_without_permission_is_refused) {
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_create(&q, NULL, 2, 8));
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/%s", conc_queue_name(q));
    if (geteuid() == 0) {
        /* root may open anything: try as nobody, in a child. */
        pid_t pid = fork();
        if (pid == 0) {
            if (setgid(65534) != 0 || setuid(65534) != 0) {
                _exit(100);
            }
            conc_queue *o = (conc_queue *)1;
            conc_status st = conc_queue_open(&o, conc_queue_name(q));
            _exit(st == CONC_ERR_PERMISSION_DENIED && o == NULL ? 0 : 1);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0);
    } else {
        CHECK(chmod(path, 0400) == 0);
        conc_queue *o = (conc_queue *)1;
        CHECK_STATUS(conc_queue_open(&o, conc_queue_name(q)), CONC_ERR_PERMISSION_DENIED);
        CHECK(o == NULL);
    }
    CHECK_OK(conc_queue_unlink(q));
    CHECK_OK(conc_queue_close(q));
}

/* Every call refuses a closed handle, a forged one and another kind. */
static void check_refused(conc_queue *q) {
    char buf[8];
    size_t n = 0;
    CHECK_STATUS(conc_queue_push(q, "x", 1), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("not an open conc_queue");
    CHECK_STATUS(conc_queue_try_push(q, "x", 1), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_queue_push_timeout(q, "x", 1, 0), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_queue_pop(q, buf, sizeof buf, &n), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_queue_try_pop(q, buf, sizeof buf, &n), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_queue_pop_timeout(q, 0, buf, sizeof buf, &n), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_queue_shutdown(q), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_queue_unlink(q), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_queue_close(q), CONC_ERR_INVALID_STATE);
    CHECK(conc_queue_len(q) == 0);
    CHECK(conc_queue_capacity(q) == 0);
    CHECK(conc_queue_message_size(q) == 0);
    CHECK(strcmp(conc_queue_name(q), "") == 0);
}

TEST(closed_and_forged_handles_are_refused) {
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_create(&q, NULL, 2, 8));
    char name[40];
    snprintf(name, sizeof name, "%s", conc_queue_name(q));
    CHECK_OK(conc_queue_push(q, "kept", 4));
    CHECK_OK(conc_queue_close(q));
    check_refused(q);
    uint64_t fake[16] = {0};
    check_refused((conc_queue *)fake);
    check_refused((conc_queue *)(uintptr_t)0xdeadbeef0);
    conc_shm *s = NULL;
    CHECK_OK(conc_shm_create(&s, NULL, 64));
    check_refused((conc_queue *)s); /* a live handle of another kind */
    CHECK_OK(conc_shm_unlink(s));
    CHECK_OK(conc_shm_close(s));
    /* The queue outlived its closed handle, message included. */
    CHECK_OK(conc_queue_open(&q, name));
    char buf[8];
    size_t n;
    CHECK_OK(conc_queue_try_pop(q, buf, sizeof buf, &n));
    CHECK(n == 4 && memcmp(buf, "kept", 4) == 0);
    CHECK_OK(conc_queue_unlink(q));
    CHECK_OK(conc_queue_close(q));
}

/* Writes a fake header into a plain segment and tries to open it. */
static void open_forged(const char *tag, size_t size, int publish, uint32_t version,
                        uint64_t capacity, uint64_t message_size, uint64_t stride) {
    char name[64];
    make_name(name, sizeof name, tag);
    conc_shm *s = NULL;
    CHECK_OK(conc_shm_create(&s, name, size));
    uint8_t *p = conc_shm_buf(s);
    if (size >= 40) {
        memcpy(p + 8, &version, 4);
        uint32_t slots = 256;
        memcpy(p + 12, &slots, 4);
        memcpy(p + 16, &capacity, 8);
        memcpy(p + 24, &message_size, 8);
        memcpy(p + 32, &stride, 8);
        if (publish) {
            memcpy(p, "concque", 8);
        }
    }
    conc_queue *q = (conc_queue *)1;
    CHECK_STATUS(conc_queue_open(&q, name), CONC_ERR_INVALID_ARGUMENT);
    CHECK(q == NULL);
    CHECK_MESSAGE_HAS("not a conc queue");
    CHECK_OK(conc_shm_unlink(s));
    CHECK_OK(conc_shm_close(s));
}

TEST(open_checks_the_header) {
    open_forged("plain", 4096, 0, 0, 0, 0, 0);               /* a plain segment */
    open_forged("tiny", 16, 0, 0, 0, 0, 0);                  /* too small */
    open_forged("unpub", 4096, 0, 1, 4, 8, 16);              /* not yet published */
    open_forged("ver", 4096, 1, 2, 4, 8, 16);                /* unknown version */
    open_forged("cap0", 4096, 1, 1, 0, 8, 16);               /* capacity 0 */
    open_forged("msg0", 4096, 1, 1, 4, 0, 8);                /* message size 0 */
    open_forged("stride", 4096, 1, 1, 4, 8, 8);              /* wrong stride */
    open_forged("long", 4096, 1, 1, 1000, 8, 16);            /* does not fit */
    open_forged("huge", 4096, 1, 1, UINT64_MAX / 2, 8, 16);  /* overflows */
    /* A real header in the same words opens. */
    char name[64];
    make_name(name, sizeof name, "real");
    conc_shm *s = NULL;
    CHECK_OK(conc_shm_create(&s, name, 256 + 4 * 16));
    uint8_t *p = conc_shm_buf(s);
    uint32_t v = 1, slots = 256;
    uint64_t cap = 4, msg = 8, stride = 16;
    memcpy(p + 8, &v, 4);
    memcpy(p + 12, &slots, 4);
    memcpy(p + 16, &cap, 8);
    memcpy(p + 24, &msg, 8);
    memcpy(p + 32, &stride, 8);
    memcpy(p, "concque", 8);
    conc_queue *q = NULL;
    CHECK_OK(conc_queue_open(&q, name));
    CHECK(conc_queue_capacity(q) == 4 && conc_queue_message_size(q) == 8);
    CHECK_OK(conc_queue_close(q));
    CHECK_OK(conc_shm_unlink(s));
    CHECK_OK(conc_shm_close(s));
    /* A queue is not a list, and a list is not a queue. */
    conc_list *l = NULL;
    CHECK_OK(conc_list_create(&l, NULL, CONC_TYPE_I64, 100));
    CHECK_STATUS(conc_queue_open(&q, conc_list_name(l)), CONC_ERR_INVALID_ARGUMENT);
    CHECK_OK(conc_list_unlink(l));
    CHECK_OK(conc_list_close(l));
}

/* Threads of one process: 2 producers, 2 consumers (TSan sees the edges). */
enum { THREAD_MSGS = 20000 };
static conc_queue *thread_q;
static int thread_seen[2][THREAD_MSGS];

static void *thread_producer(void *arg) {
    uint32_t id = (uint32_t)(uintptr_t)arg;
    for (uint32_t i = 0; i < THREAD_MSGS; i++) {
        uint32_t m[2] = {id, i};
        if (conc_queue_push(thread_q, m, sizeof m) != CONC_OK) {
            return (void *)1;
        }
    }
    return NULL;
}

static void *thread_consumer(void *arg) {
    (void)arg;
    int64_t last[2] = {-1, -1};
    for (;;) {
        uint32_t m[2];
        size_t n;
        conc_status st = conc_queue_pop(thread_q, m, sizeof m, &n);
        if (st == CONC_ERR_SHUTDOWN) {
            return NULL;
        }
        if (st != CONC_OK || n != sizeof m || m[0] > 1 || m[1] >= THREAD_MSGS ||
            (int64_t)m[1] <= last[m[0]]) {
            return (void *)1;
        }
        last[m[0]] = m[1];
        __atomic_fetch_add(&thread_seen[m[0]][m[1]], 1, __ATOMIC_RELAXED);
    }
}

TEST(threads_of_one_process) {
    thread_q = scratch(16, 8);
    pthread_t p[2], c[2];
    for (uintptr_t i = 0; i < 2; i++) {
        CHECK(pthread_create(&c[i], NULL, thread_consumer, NULL) == 0);
        CHECK(pthread_create(&p[i], NULL, thread_producer, (void *)i) == 0);
    }
    for (int i = 0; i < 2; i++) {
        void *r = (void *)1;
        pthread_join(p[i], &r);
        CHECK(r == NULL);
    }
    CHECK_OK(conc_queue_shutdown(thread_q));
    for (int i = 0; i < 2; i++) {
        void *r = (void *)1;
        pthread_join(c[i], &r);
        CHECK(r == NULL);
    }
    int once = 1;
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < THREAD_MSGS; k++) {
            once &= thread_seen[i][k] == 1;
        }
    }
    CHECK(once);
    CHECK_OK(conc_queue_close(thread_q));
}

int main(void) {
    shm_snapshot_begin();
    RUN(create_open_share_geometry);
    RUN(named_create_is_exclusive);
    RUN(messages_keep_their_length_in_order);
    RUN(too_long_is_refused_whatever_the_state);
    RUN(try_and_timeout_variants);
    RUN(small_buffer_leaves_the_message_first);
    RUN(shutdown_refuses_pushes_then_drains);
    RUN(shutdown_wakes_blocked_pushers_and_poppers_in_other_processes);
    RUN(blocked_pop_and_push_are_woken_across_processes);
    RUN(forked_child_shares_the_queue);
    RUN(bad_arguments_and_null_pointers);
    RUN(open_without_permission_is_refused);
    RUN(closed_and_forged_handles_are_refused);
    RUN(open_checks_the_header);
    RUN(threads_of_one_process);
    return shm_snapshot_end(CHECK_SUMMARY());
}
