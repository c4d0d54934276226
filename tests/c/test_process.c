/* Child processes through the C ABI: exit codes, signals, joining once,
 * forged handles, stdio, atexit, memory, fork safety, every error. */
#include "check.h"
#include "shm_snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>

static int return_arg(void *arg) { return (int)(intptr_t)arg; }

static int kill_self(void *arg) {
    (void)arg;
    raise(SIGKILL);
    return 0;
}

static int wait_forever(void *arg) {
    (void)arg;
    for (;;) {
        pause();
    }
    return 0;
}

static int spawn_join(conc_process_fn fn, intptr_t arg) {
    conc_process p = {-1};
    CHECK_OK(conc_process_spawn(&p, fn, (void *)arg));
    CHECK(p.pid > 0);
    int code = -1;
    CHECK_OK(conc_process_join(p, &code));
    return code;
}

TEST(exit_codes) {
    CHECK(spawn_join(return_arg, 0) == 0);
    CHECK(spawn_join(return_arg, 7) == 7);
    CHECK(spawn_join(return_arg, 255) == 255);
    CHECK(spawn_join(return_arg, 256) == 0);
    CHECK(spawn_join(return_arg, 300) == 44);
    CHECK(spawn_join(return_arg, -1) == 255);
}

TEST(killed_by_a_signal_is_128_plus_signal) {
    CHECK(spawn_join(kill_self, 0) == 128 + SIGKILL);
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, wait_forever, NULL));
    CHECK(kill((pid_t)p.pid, SIGTERM) == 0);
    int code = -1;
    CHECK_OK(conc_process_join(p, &code));
    CHECK(code == 128 + SIGTERM);
}

TEST(join_twice_is_invalid_state) {
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, return_arg, (void *)3));
    conc_process copy = p;
    CHECK_OK(conc_process_join(p, NULL)); /* exit_code may be NULL */
    int code = -1;
    CHECK_STATUS(conc_process_join(p, &code), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_process_join(copy, &code), CONC_ERR_INVALID_STATE);
    CHECK(code == -1);
    char want[64];
    snprintf(want, sizeof want, "conc_process_join(pid %lld)", (long long)p.pid);
    CHECK_MESSAGE_HAS(want);
    CHECK_MESSAGE_HAS("joined already");
}

TEST(zero_and_forged_handles_are_invalid_state) {
    conc_process zero = {0};
    CHECK_STATUS(conc_process_join(zero, NULL), CONC_ERR_INVALID_STATE);
    conc_process self = {(int64_t)getpid()};
    CHECK_STATUS(conc_process_join(self, NULL), CONC_ERR_INVALID_STATE);
    conc_process minus = {-1};
    CHECK_STATUS(conc_process_join(minus, NULL), CONC_ERR_INVALID_STATE);
    conc_process huge = {INT64_MAX};
    CHECK_STATUS(conc_process_join(huge, NULL), CONC_ERR_INVALID_STATE);
    conc_process wrapped = {((int64_t)1 << 32) + 1};
    CHECK_STATUS(conc_process_join(wrapped, NULL), CONC_ERR_INVALID_STATE);

    /* A real child that conc did not spawn: conc does not reap it. */
    pid_t raw = fork();
    if (raw == 0) {
        _exit(5);
    }
    conc_process forged = {(int64_t)raw};
    CHECK_STATUS(conc_process_join(forged, NULL), CONC_ERR_INVALID_STATE);
    int status = 0;
    CHECK(waitpid(raw, &status, 0) == raw);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 5);
}

TEST(null_arguments) {
    CHECK_STATUS(conc_process_spawn(NULL, return_arg, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_process_spawn: argument `out` is NULL");
    conc_process p = {1234};
    CHECK_STATUS(conc_process_spawn(&p, NULL, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK(p.pid == 0);
    CHECK_MESSAGE_HAS("conc_process_spawn: argument `fn` is NULL");
}

static int print_child(void *arg) {
    (void)arg;
    printf("child;"); /* no newline, no flush: conc flushes at the end */
    return 0;
}

TEST(buffered_output_is_not_printed_twice) {
    char path[] = "/tmp/conc-test-stdout-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    fflush(stdout);
    CHECK(dup2(fd, STDOUT_FILENO) == STDOUT_FILENO);
    setvbuf(stdout, NULL, _IOFBF, BUFSIZ); /* as for any file */
    printf("before;");
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, print_child, NULL));
    int code = -1;
    CHECK_OK(conc_process_join(p, &code));
    CHECK(code == 0);
    printf("after;");
    fflush(stdout);

    char got[128] = {0};
    CHECK(pread(fd, got, sizeof got - 1, 0) >= 0);
    close(fd);
    unlink(path);
    if (strcmp(got, "before;child;after;") != 0) {
        fprintf(stderr, "  stdout held \"%s\"\n", got);
    }
    CHECK(strcmp(got, "before;child;after;") == 0);
}

static int atexit_fd = -1;
static void at_exit_marker(void) {
    if (write(atexit_fd, "x", 1) != 1) {
        _exit(99);
    }
}

TEST(atexit_handlers_do_not_run_in_the_child) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    atexit_fd = fds[1];
    atexit(at_exit_marker);
    CHECK(spawn_join(return_arg, 0) == 0);
    close(fds[1]);
    char c;
    CHECK(read(fds[0], &c, 1) == 0); /* nothing written: EOF */
    close(fds[0]);
    /* This case ends with _exit (check.h): the handler never runs here. */
}

static int global_value = 1;

static int report_global(void *arg) {
    int *shared = arg;
    *shared = global_value; /* the caller's memory as it was at the spawn */
    global_value = 100;     /* a private copy: the parent never sees this */
    return 0;
}

TEST(child_sees_a_copy_and_shares_shared_maps) {
    int *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(shared != MAP_FAILED);
    global_value = 42;
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, report_global, shared));
    CHECK_OK(conc_process_join(p, NULL));
    CHECK(*shared == 42);
    CHECK(global_value == 42);

    conc_shm *shm = NULL;
    CHECK_OK(conc_shm_create(&shm, NULL, 4096));
    CHECK_OK(conc_process_spawn(&p, report_global, conc_shm_buf(shm)));
    CHECK_OK(conc_process_join(p, NULL));
    CHECK(*(int *)conc_shm_buf(shm) == 42);
    CHECK_OK(conc_shm_unlink(shm));
    CHECK_OK(conc_shm_close(shm));
    munmap(shared, 4096);
}

/* Fork safety: other threads hammer conc's locks (the live-object set)
 * while children are spawned; every child uses conc at once. */
static atomic_int stop_hammer;

static void *hammer(void *arg) {
    (void)arg;
    while (!atomic_load(&stop_hammer)) {
        conc_shm *shm = NULL;
        if (conc_shm_create(&shm, NULL, 4096) == CONC_OK) {
            conc_shm_unlink(shm);
            conc_shm_close(shm);
        }
        conc_list *list = NULL;
        if (conc_list_create(&list, NULL, CONC_TYPE_I64, 4) == CONC_OK) {
            conc_list_unlink(list);
            conc_list_close(list);
        }
    }
    return NULL;
}

static int use_conc_in_child(void *arg) {
    (void)arg;
    alarm(10); /* a deadlock ends this child with SIGALRM (exit code 142) */
    conc_shm *shm = NULL;
    if (conc_shm_create(&shm, NULL, 100) != CONC_OK) {
        return 1;
    }
    conc_shm_buf(shm)[0] = 1;
    if (conc_shm_unlink(shm) != CONC_OK || conc_shm_close(shm) != CONC_OK) {
        return 2;
    }
    conc_process grandchild;
    int code = -1;
    if (conc_process_spawn(&grandchild, return_arg, (void *)9) != CONC_OK ||
        conc_process_join(grandchild, &code) != CONC_OK || code != 9) {
        return 3;
    }
    return 0;
}

TEST(conc_calls_in_children_never_deadlock) {
    /* gcc 12's ASan allocator is not fork-safe: a child forked while a
     * hammer thread is inside malloc can block forever on the allocator's
     * own lock (seen: a child stuck in SizeClassAllocator64::GetFromAllocator
     * under conc_shm_create's first allocation). glibc's malloc, which the
     * normal build and valgrind use, resets its locks in the child. */
    SKIP_IF(CHECK_ASAN, "the ASan allocator can deadlock in a child forked while "
                        "another thread allocates");
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_create(&threads[i], NULL, hammer, NULL) == 0);
    }
    for (int i = 0; i < 40; i++) {
        conc_process p;
        CHECK_OK(conc_process_spawn(&p, use_conc_in_child, NULL));
        int code = -1;
        CHECK_OK(conc_process_join(p, &code));
        CHECK(code == 0);
        if (code != 0) {
            fprintf(stderr, "  child %d ended with %d\n", i, code);
            break;
        }
    }
    atomic_store(&stop_hammer, 1);
    for (int i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
    }
}

static conc_process sibling;

static int join_sibling(void *arg) {
    (void)arg;
    alarm(10); /* a deadlock ends this child with SIGALRM */
    /* The parent's other child is not this process's child. */
    if (conc_process_join(sibling, NULL) != CONC_ERR_INVALID_STATE) {
        return 1;
    }
    conc_process own;
    int code = -1;
    if (conc_process_spawn(&own, return_arg, (void *)4) != CONC_OK ||
        conc_process_join(own, &code) != CONC_OK) {
        return 2;
    }
    return code + 1;
}

TEST(children_cannot_join_their_siblings) {
    CHECK_OK(conc_process_spawn(&sibling, wait_forever, NULL));
    CHECK(spawn_join(join_sibling, 0) == 5);
    CHECK(kill((pid_t)sibling.pid, SIGKILL) == 0);
    int code = -1;
    CHECK_OK(conc_process_join(sibling, &code));
    CHECK(code == 128 + SIGKILL);
}

static conc_process contested;
static atomic_int join_ok, join_invalid;

static void *join_contested(void *arg) {
    (void)arg;
    conc_status s = conc_process_join(contested, NULL);
    if (s == CONC_OK) {
        atomic_fetch_add(&join_ok, 1);
    } else if (s == CONC_ERR_INVALID_STATE) {
        atomic_fetch_add(&join_invalid, 1);
    }
    return NULL;
}

TEST(two_threads_joining_one_child_one_succeeds) {
    for (int round = 0; round < 10; round++) {
        atomic_store(&join_ok, 0);
        atomic_store(&join_invalid, 0);
        CHECK_OK(conc_process_spawn(&contested, return_arg, NULL));
        pthread_t a, b;
        CHECK(pthread_create(&a, NULL, join_contested, NULL) == 0);
        CHECK(pthread_create(&b, NULL, join_contested, NULL) == 0);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        CHECK(atomic_load(&join_ok) == 1);
        CHECK(atomic_load(&join_invalid) == 1);
    }
}

TEST(many_children_joined_in_any_order) {
    enum { N = 50 };
    conc_process ps[N];
    for (int i = 0; i < N; i++) {
        CHECK_OK(conc_process_spawn(&ps[i], return_arg, (void *)(intptr_t)i));
    }
    for (int i = N - 1; i >= 0; i--) {
        int code = -1;
        CHECK_OK(conc_process_join(ps[i], &code));
        CHECK(code == i);
    }
}

TEST(child_reaped_elsewhere_is_invalid_state) {
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, return_arg, (void *)1));
    int status = 0;
    CHECK(waitpid((pid_t)p.pid, &status, 0) == (pid_t)p.pid); /* behind conc's back */
    CHECK_STATUS(conc_process_join(p, NULL), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("(ECHILD)");
    CHECK(conc_last_os_error() == ECHILD);
}

int main(void) {
    shm_snapshot_begin();
    RUN(exit_codes);
    RUN(killed_by_a_signal_is_128_plus_signal);
    RUN(join_twice_is_invalid_state);
    RUN(zero_and_forged_handles_are_invalid_state);
    RUN(null_arguments);
    RUN(buffered_output_is_not_printed_twice);
    RUN(atexit_handlers_do_not_run_in_the_child);
    RUN(child_sees_a_copy_and_shares_shared_maps);
    RUN(conc_calls_in_children_never_deadlock);
    RUN(children_cannot_join_their_siblings);
    RUN(two_threads_joining_one_child_one_succeeds);
    RUN(many_children_joined_in_any_order);
    RUN(child_reaped_elsewhere_is_invalid_state);
    return shm_snapshot_end(CHECK_SUMMARY());
}
