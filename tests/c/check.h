/* A small test harness for the C tests of conc.
 *
 * Each TEST runs in a forked child, so a crash counts as one failed case
 * instead of ending the program. main() lists the cases with RUN() and
 * ends with CHECK_SUMMARY(), which prints "N passed, N failed" and returns
 * the exit status.
 */
#ifndef CONC_TEST_CHECK_H
#define CONC_TEST_CHECK_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conc.h"

/* Which sanitizer this test is built with (`make sanitize`): gcc defines
 * __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__, clang has __has_feature. */
#if defined(__SANITIZE_ADDRESS__)
#define CHECK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHECK_ASAN 1
#endif
#endif
#ifndef CHECK_ASAN
#define CHECK_ASAN 0
#endif
#if defined(__SANITIZE_THREAD__)
#define CHECK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CHECK_TSAN 1
#endif
#endif
#ifndef CHECK_TSAN
#define CHECK_TSAN 0
#endif

#if CHECK_ASAN
#include <sanitizer/lsan_interface.h>
#endif

/* Ends the current case early, as passed, in a build where it cannot run,
 * printing why; `when` is CHECK_ASAN, CHECK_TSAN or any condition. The
 * normal build always runs the whole case. */
#define SKIP_IF(when, reason)                                                      \
    do {                                                                           \
        if (when) {                                                                \
            printf("  skipped here: %s\n", (reason));                              \
            return;                                                                \
        }                                                                          \
    } while (0)

/* Under valgrind (`make valgrind` sets CONC_UNDER_VALGRIND): everything
 * runs many times slower, so stress counts may be scaled down. */
__attribute__((unused)) static int check_under_valgrind_(void) {
    const char *v = getenv("CONC_UNDER_VALGRIND");
    return v != NULL && v[0] != '\0' && v[0] != '0';
}

__attribute__((unused)) static int check_failures_ = 0; /* within one case (in its child) */
__attribute__((unused)) static int check_passed_ = 0;   /* cases, in the parent */
__attribute__((unused)) static int check_failed_ = 0;

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                        \
            check_failures_++;                                                     \
        }                                                                          \
    } while (0)

/* Checks that `expr` returns the conc_status `want`; on a mismatch prints
 * both statuses and the last error message. */
#define CHECK_STATUS(expr, want)                                                   \
    do {                                                                           \
        conc_status got_ = (expr);                                                 \
        if (got_ != (want)) {                                                      \
            fprintf(stderr, "  %s:%d: %s returned %d (%s), wanted %d (%s): %s\n",  \
                    __FILE__, __LINE__, #expr, (int)got_, conc_status_str(got_),   \
                    (int)(want), conc_status_str(want), conc_last_error_message()); \
            check_failures_++;                                                     \
        }                                                                          \
    } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, CONC_OK)

/* Checks that the last error message contains `needle`. */
#define CHECK_MESSAGE_HAS(needle)                                                  \
    do {                                                                           \
        const char *msg_ = conc_last_error_message();                              \
        if (msg_ == NULL || strstr(msg_, (needle)) == NULL) {                      \
            fprintf(stderr, "  %s:%d: last error \"%s\" lacks \"%s\"\n", __FILE__, \
                    __LINE__, msg_ ? msg_ : "(null)", (needle));                    \
            check_failures_++;                                                     \
        }                                                                          \
    } while (0)

#define TEST(name) static void name(void)

/* The watchdog: each case's child is killed by SIGALRM (a failure, never a
 * hang) after CHECK_TIMEOUT_SECONDS, or $CONC_TEST_TIMEOUT seconds when set
 * (the sanitizer and valgrind runs may need longer). A test file may
 * define CHECK_TIMEOUT_SECONDS before including this header. */
#ifndef CHECK_TIMEOUT_SECONDS
#define CHECK_TIMEOUT_SECONDS 120
#endif
__attribute__((unused)) static unsigned check_timeout_(void) {
    const char *v = getenv("CONC_TEST_TIMEOUT");
    unsigned t = v != NULL ? (unsigned)strtoul(v, NULL, 10) : 0;
    return t != 0 ? t : CHECK_TIMEOUT_SECONDS;
}

/* Runs one case in a child process and reports it. */
__attribute__((unused)) static void check_run_(const char *name, void (*fn)(void)) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        check_failed_++;
        return;
    }
    if (pid == 0) {
        alarm(check_timeout_());
        fn();
#if CHECK_ASAN
        /* The child leaves with _exit, which skips LeakSanitizer's check at
         * exit: check this case's leaks here. */
        if (__lsan_do_recoverable_leak_check() != 0) {
            fprintf(stderr, "  %s leaked memory (see the report above)\n", name);
            check_failures_++;
        }
#endif
        fflush(stdout);
        fflush(stderr);
        _exit(check_failures_ == 0 ? 0 : 1);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("ok     %s\n", name);
        check_passed_++;
    } else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
        printf("FAILED %s (hung: killed by the %u s watchdog)\n", name, check_timeout_());
        check_failed_++;
    } else if (WIFSIGNALED(status)) {
        printf("FAILED %s (killed by signal %d)\n", name, WTERMSIG(status));
        check_failed_++;
    } else {
        printf("FAILED %s\n", name);
        check_failed_++;
    }
    fflush(stdout);
}

#define RUN(name) check_run_(#name, name)

#define CHECK_SUMMARY()                                                            \
    (printf("%d passed, %d failed\n", check_passed_, check_failed_),               \
     check_failed_ == 0 ? 0 : 1)

#endif /* CONC_TEST_CHECK_H */
