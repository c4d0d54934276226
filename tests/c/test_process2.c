/* Child processes, 0.2: timed joins, kill, the pidfd sentinel, pid reuse
 * in a pid namespace, exit() and pthread_exit in a child, and raw fork()
 * while other threads are inside conc. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "check.h"
#include "shm_snapshot.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int return_arg(void *arg) { return (int)(intptr_t)arg; }

static int wait_forever(void *arg) {
    (void)arg;
    for (;;) {
        pause();
    }
    return 0;
}

static int sleep_ms_then_7(void *arg) {
    struct timespec ts = {0, (long)(intptr_t)arg * 1000000L};
    nanosleep(&ts, NULL);
    return 7;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int readable(int fd, int ms) {
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

/* Waits until the child has ended, without joining it: through its pidfd,
 * or, without one, by polling its state as conc leaves it (a zombie). */
static int wait_ended(conc_process p) {
    int fd = conc_process_fd(p);
    if (fd >= 0) {
        return readable(fd, 30000);
    }
    for (int i = 0; i < 30000; i++) {
        siginfo_t info = {0};
        if (waitid(P_PID, (id_t)p.pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0) {
            return 1;
        }
        conc_sleep_ms(1);
    }
    return 0;
}

/* Whether this kernel (or valgrind, which lacks pidfd_open) gives pidfds. */
static int have_pidfd(void) {
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, return_arg, NULL));
    int fd = conc_process_fd(p);
    CHECK_OK(conc_process_join(p, NULL));
    return fd >= 0;
}

TEST(join_timeout_polls_waits_and_stays_joinable) {
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, sleep_ms_then_7, (void *)(intptr_t)300));
    int code = -1;
    CHECK_STATUS(conc_process_join_timeout(p, 0, &code), CONC_ERR_TIMED_OUT); /* is_alive */
    CHECK(code == -1);
    double t0 = now_ms();
    CHECK_STATUS(conc_process_join_timeout(p, 50, &code), CONC_ERR_TIMED_OUT);
    CHECK(now_ms() - t0 >= 49.0);
    CHECK(code == -1);
    CHECK_MESSAGE_HAS("conc_process_join_timeout(pid ");
    CHECK_OK(conc_process_join_timeout(p, 30000, &code));
    CHECK(code == 7);
    CHECK_STATUS(conc_process_join_timeout(p, 0, &code), CONC_ERR_INVALID_STATE);
    /* A child that has ended: 0 reaps it at once. */
    CHECK_OK(conc_process_spawn(&p, return_arg, (void *)3));
    CHECK(wait_ended(p));
    CHECK_OK(conc_process_join_timeout(p, 0, &code));
    CHECK(code == 3);
    /* UINT64_MAX waits for ever; NULL discards the code. */
    CHECK_OK(conc_process_spawn(&p, return_arg, (void *)4));
    CHECK_OK(conc_process_join_timeout(p, UINT64_MAX, NULL));
}

TEST(kill_signals_probes_and_refuses) {
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, wait_forever, NULL));
    CHECK_OK(conc_process_kill(p, 0)); /* existence probe */
    CHECK_STATUS(conc_process_kill(p, -1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_process_kill(p, 100000), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_process_kill(p, SIGRTMAX + 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("not a signal number");
    CHECK_OK(conc_process_kill(p, SIGTERM));
    CHECK(wait_ended(p));
    /* Ended, not joined yet: not an error, nothing sent. */
    CHECK_OK(conc_process_kill(p, SIGKILL));
    CHECK_OK(conc_process_kill(p, 0));
    int code = -1;
    CHECK_OK(conc_process_join(p, &code));
    CHECK(code == 128 + SIGTERM);
    CHECK_STATUS(conc_process_kill(p, SIGKILL), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_process_kill(p, 0), CONC_ERR_INVALID_STATE);
    conc_process zero = {0}, self = {(int64_t)getpid()}, minus = {-1}, huge = {INT64_MAX};
    CHECK_STATUS(conc_process_kill(zero, SIGKILL), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_process_kill(self, SIGKILL), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_process_kill(minus, SIGKILL), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_process_kill(huge, SIGKILL), CONC_ERR_INVALID_STATE);
    /* A process conc did not spawn, even our own child, is never signalled. */
    pid_t raw = fork();
    if (raw == 0) {
        pause();
        _exit(0);
    }
    conc_process other = {(int64_t)raw};
    CHECK_STATUS(conc_process_kill(other, SIGKILL), CONC_ERR_INVALID_STATE);
    CHECK(conc_process_fd(other) == -1);
    int st = 0;
    CHECK(waitpid(raw, &st, WNOHANG) == 0); /* still alive */
    kill(raw, SIGKILL);
    waitpid(raw, &st, 0);
}

TEST(fd_is_readable_when_the_child_ends_and_stable) {
    SKIP_IF(!have_pidfd(), "no pidfd here (Linux before 5.3, or valgrind): conc_process_fd gives -1");
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, sleep_ms_then_7, (void *)(intptr_t)100));
    int fd = conc_process_fd(p);
    CHECK(fd >= 0); /* this kernel has pidfd (5.3+) */
    CHECK(conc_process_fd(p) == fd);
    CHECK(!readable(fd, 0));
    CHECK(readable(fd, 30000));
    CHECK(conc_process_fd(p) == fd);
    int code = -1;
    CHECK_OK(conc_process_join(p, &code));
    CHECK(code == 7);
    CHECK(conc_process_fd(p) == -1);
    conc_process zero = {0}, self = {(int64_t)getpid()};
    CHECK(conc_process_fd(zero) == -1);
    CHECK(conc_process_fd(self) == -1);
}

TEST(poll_several_children) {
    SKIP_IF(!have_pidfd(), "no pidfd here (Linux before 5.3, or valgrind): conc_process_fd gives -1");
    conc_process ps[3];
    struct pollfd fds[3];
    const intptr_t ms[3] = {800, 100, 400}; /* wide gaps: the machine may be busy */
    for (int i = 0; i < 3; i++) {
        CHECK_OK(conc_process_spawn(&ps[i], sleep_ms_then_7, (void *)ms[i]));
        fds[i] = (struct pollfd){conc_process_fd(ps[i]), POLLIN, 0};
    }
    int order[3], n = 0, done[3] = {0};
    while (n < 3) {
        CHECK(poll(fds, 3, 30000) > 0);
        for (int i = 0; i < 3; i++) {
            if (!done[i] && (fds[i].revents & POLLIN)) {
                int code = -1;
                CHECK_OK(conc_process_join_timeout(ps[i], 0, &code));
                CHECK(code == 7);
                done[i] = 1;
                fds[i].fd = -1; /* joined: the descriptor is gone */
                order[n++] = i;
            }
        }
    }
    CHECK(order[0] == 1 && order[1] == 2 && order[2] == 0);
}

/* ---- pid reuse, in a pid namespace of our own ------------------------- */

static int set_last_pid(pid_t pid) {
    FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "w");
    if (!f) {
        return -1;
    }
    int ok = fprintf(f, "%d", (int)pid) > 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Runs as pid 1 of a fresh pid namespace: 0 on success, the failed step
 * otherwise, 77 if ns_last_pid cannot be written. */
static int reuse_in_namespace(void) {
    conc_process a;
    if (conc_process_spawn(&a, return_arg, (void *)5) != CONC_OK) return 10;
    /* Reap it behind conc's back, as SIGCHLD ignored or waitpid(-1) would. */
    int st = 0;
    if (waitpid(-1, &st, 0) != (pid_t)a.pid) return 11;
    if (set_last_pid((pid_t)a.pid - 1) != 0) return 77;
    int go[2];
    if (pipe(go) != 0) return 12;
    pid_t b = fork(); /* a stranger to conc, with a's pid */
    if (b == 0) {
        char c;
        close(go[1]);
        ssize_t r = read(go[0], &c, 1);
        (void)r;
        _exit(99);
    }
    close(go[0]);
    if (b != (pid_t)a.pid) {
        kill(b, SIGKILL);
        return 13;
    }
    /* kill: the stranger gets nothing (the child has ended: CONC_OK). */
    if (conc_process_kill(a, SIGKILL) != CONC_OK) return 14;
    if (conc_process_kill(a, SIGTERM) != CONC_OK) return 15;
    /* join: ECHILD, never the stranger's status. */
    int code = -1;
    if (conc_process_join(a, &code) != CONC_ERR_INVALID_STATE) return 16;
    if (conc_last_os_error() != ECHILD) return 17;
    if (code != -1) return 18;
    if (conc_process_fd(a) != -1) return 19;
    /* The stranger is alive and keeps its status for its owner. */
    if (waitpid(b, &st, WNOHANG) != 0) return 20;
    if (write(go[1], "g", 1) != 1) return 21;
    if (waitpid(b, &st, 0) != b) return 22;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 99) return 23;
    return 0;
}

TEST(reused_pid_is_never_signalled_nor_joined) {
    SKIP_IF(!have_pidfd(), "no pidfd here (Linux before 5.3, or valgrind): the documented pid fallback");
    SKIP_IF(CHECK_ASAN, "LeakSanitizer cannot run in a pid namespace's init");
    if (unshare(CLONE_NEWPID) != 0) {
        printf("  skipped: reused_pid_is_never_signalled_nor_joined (unshare(CLONE_NEWPID): %s)\n",
               strerror(errno));
        return;
    }
    fflush(stdout);
    pid_t init = fork(); /* pid 1 of the new namespace */
    if (init == 0) {
        _exit(reuse_in_namespace());
    }
    CHECK(init > 0);
    int st = 0;
    CHECK(waitpid(init, &st, 0) == init);
    CHECK(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) {
        printf("  skipped: reused_pid_is_never_signalled_nor_joined (cannot write ns_last_pid)\n");
        return;
    }
    if (WEXITSTATUS(st) != 0) {
        fprintf(stderr, "  failed at step %d\n", WEXITSTATUS(st));
    }
    CHECK(WEXITSTATUS(st) == 0);
}

/* With SIGCHLD ignored the kernel reaps children itself: the join reports
 * it (ECHILD), kill and fd stay harmless, and nothing ever blocks. */
TEST(sigchld_ignored_is_reported_not_hung) {
    /* Without pidfd, conc would signal by pid: a pid reaped by the kernel
     * may be reused, which is the documented hazard of that fallback. */
    SKIP_IF(!have_pidfd(), "no pidfd here (Linux before 5.3, or valgrind)");
    signal(SIGCHLD, SIG_IGN);
    for (int i = 0; i < 20; i++) {
        conc_process p;
        CHECK_OK(conc_process_spawn(&p, return_arg, (void *)3));
        conc_sleep_ms(i % 2 ? 0 : 20);
        CHECK_OK(conc_process_kill(p, 0));
        CHECK_OK(conc_process_kill(p, SIGKILL));
        int code = -1;
        CHECK_STATUS(conc_process_join(p, &code), CONC_ERR_INVALID_STATE);
        CHECK(conc_last_os_error() == ECHILD);
        CHECK(code == -1);
        CHECK(conc_process_fd(p) == -1);
        CHECK_STATUS(conc_process_kill(p, 0), CONC_ERR_INVALID_STATE);
    }
    signal(SIGCHLD, SIG_DFL);
}

/* ---- how a child ends ---------------------------------------------------- */

static int marker_fd = -1;
static void atexit_marker(void) {
    if (write(marker_fd, "A", 1) != 1) {
        _exit(98);
    }
}

static int exit_in_child(void *arg) {
    printf("exit;"); /* buffered: must be flushed */
    exit((int)(intptr_t)arg);
}

static int pthread_exit_in_child(void *arg) {
    (void)arg;
    printf("pthread_exit;");
    pthread_exit((void *)42);
}

/* Runs `fn` in a child with stdout on a temporary file and an atexit
 * marker registered by the parent; returns the exit code, and what the
 * child printed and whether the marker ran. */
static int end_child(conc_process_fn fn, intptr_t arg, char *out, size_t cap, int *marker_ran) {
    char path[] = "/tmp/conc-test-end-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    int fds[2];
    CHECK(pipe(fds) == 0);
    marker_fd = fds[1];
    static int registered = 0;
    if (!registered) {
        atexit(atexit_marker);
        registered = 1;
    }
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    CHECK(dup2(fd, STDOUT_FILENO) == STDOUT_FILENO);
    conc_process p;
    CHECK_OK(conc_process_spawn(&p, fn, (void *)arg));
    int code = -1;
    CHECK_OK(conc_process_join(p, &code));
    CHECK(dup2(saved, STDOUT_FILENO) == STDOUT_FILENO);
    close(saved);
    close(fds[1]);
    char c;
    *marker_ran = read(fds[0], &c, 1) == 1;
    close(fds[0]);
    memset(out, 0, cap);
    CHECK(pread(fd, out, cap - 1, 0) >= 0);
    close(fd);
    return code;
}

TEST(exit_in_child_runs_no_parent_atexit_handler) {
    char out[64];
    int ran = -1;
    CHECK(end_child(exit_in_child, 3, out, sizeof out, &ran) == 3);
    CHECK(ran == 0);
    CHECK(strcmp(out, "exit;") == 0);
    CHECK(end_child(exit_in_child, 300, out, sizeof out, &ran) == 44);
    CHECK(ran == 0);
}

TEST(pthread_exit_in_child_ends_it_with_0) {
    char out[64];
    int ran = -1;
    CHECK(end_child(pthread_exit_in_child, 0, out, sizeof out, &ran) == 0);
    CHECK(ran == 0);
    CHECK(strcmp(out, "pthread_exit;") == 0);
}

static void *spawn_from_thread(void *arg) {
    int *result = arg;
    char out[64];
    int ran = -1;
    result[0] = end_child(pthread_exit_in_child, 0, out, sizeof out, &ran);
    result[1] = ran;
    result[2] = strcmp(out, "pthread_exit;") == 0;
    return NULL;
}

TEST(pthread_exit_in_child_of_another_thread) {
    SKIP_IF(CHECK_TSAN, "TSan cannot start threads in a forked child of a threaded program");
    int result[3] = {-1, -1, -1};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, spawn_from_thread, result) == 0);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(result[0] == 0);
    CHECK(result[1] == 0);
    CHECK(result[2] == 1);
}

/* ---- raw fork() while other threads are inside conc ------------------------ */

static atomic_int stop_churn;

static void *nothing(void *arg) { return arg; }

static void *churn_threads(void *arg) {
    (void)arg;
    while (!atomic_load(&stop_churn)) {
        conc_thread t;
        if (conc_thread_spawn(&t, nothing, NULL) == CONC_OK) {
            conc_thread_join(t, NULL);
        }
    }
    return NULL;
}

static void *churn_segments(void *arg) {
    (void)arg;
    char name[64];
    int i = 0;
    while (!atomic_load(&stop_churn)) {
        snprintf(name, sizeof name, "conc_rawfork_%d_%d", (int)getpid(), i++ % 4);
        conc_shm *s = NULL;
        if (conc_shm_create(&s, name, 4096) == CONC_OK) {
            conc_shm_unlink(s);
            conc_shm_close(s);
        }
        conc_mmap *m = NULL;
        if (conc_mmap_anonymous(&m, 4096) == CONC_OK) {
            conc_mmap_close(m);
        }
    }
    return NULL;
}

/* What each raw child does with conc: threads, segments, a process. */
static int child_uses_conc(void) {
    conc_thread t;
    if (conc_thread_spawn(&t, nothing, NULL) != CONC_OK) return 1;
    if (conc_thread_join(t, NULL) != CONC_OK) return 2;
    conc_mmap *m = NULL;
    if (conc_mmap_anonymous(&m, 4096) != CONC_OK) return 3;
    if (conc_mmap_close(m) != CONC_OK) return 4;
    conc_process p;
    if (conc_process_spawn(&p, return_arg, (void *)9) != CONC_OK) return 5;
    int code = -1;
    if (conc_process_join(p, &code) != CONC_OK || code != 9) return 6;
    return 0;
}

TEST(raw_forks_never_inherit_a_conc_lock) {
    SKIP_IF(CHECK_TSAN, "TSan cannot start threads in a forked child of a threaded program");
    SKIP_IF(check_under_valgrind_(),
            "a raw child inherits the other threads' allocations in flight, which memcheck "
            "reports as leaks");
    SKIP_IF(CHECK_ASAN, "gcc 12's libasan has no fork handling: a raw child can inherit "
                        "ASan's own allocator lock locked (seen in gdb)");
    const int forks = 2000;
    pthread_t a, b;
    atomic_store(&stop_churn, 0);
    CHECK(pthread_create(&a, NULL, churn_threads, NULL) == 0);
    CHECK(pthread_create(&b, NULL, churn_segments, NULL) == 0);
    int hung = 0, failed = 0;
    for (int i = 0; i < forks && !hung; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            _exit(child_uses_conc());
        }
        CHECK(pid > 0);
        /* A child stuck on a lock would never end: 10 s is plenty. */
        int st = 0;
        double deadline = now_ms() + 10000;
        pid_t r;
        while ((r = waitpid(pid, &st, WNOHANG)) == 0 && now_ms() < deadline) {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
        if (r == 0) {
            hung++;
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            failed++;
            fprintf(stderr, "  fork %d: child status %#x\n", i, st);
        }
    }
    atomic_store(&stop_churn, 1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK(hung == 0);
    CHECK(failed == 0);
}

int main(void) {
    shm_snapshot_begin();
    RUN(join_timeout_polls_waits_and_stays_joinable);
    RUN(kill_signals_probes_and_refuses);
    RUN(fd_is_readable_when_the_child_ends_and_stable);
    RUN(poll_several_children);
    RUN(reused_pid_is_never_signalled_nor_joined);
    RUN(sigchld_ignored_is_reported_not_hung);
    RUN(exit_in_child_runs_no_parent_atexit_handler);
    RUN(pthread_exit_in_child_ends_it_with_0);
    RUN(pthread_exit_in_child_of_another_thread);
    RUN(raw_forks_never_inherit_a_conc_lock);
    return shm_snapshot_end(CHECK_SUMMARY());
}
