/* Process control, as Python's multiprocessing offers it: start three
 * children, wait for all of them at once through their sentinels
 * (conc_process_fd) in one poll() loop, and kill the one that overruns its
 * time limit (Process.kill()).
 *
 *   Python                         conc
 *   p.sentinel                     conc_process_fd(p)
 *   p.is_alive()                   conc_process_join_timeout(p, 0, NULL) == CONC_ERR_TIMED_OUT
 *   p.join(timeout)                conc_process_join_timeout(p, ms, &code)
 *   p.terminate() / p.kill()       conc_process_kill(p, SIGTERM / SIGKILL)
 */
#include <conc.h>

#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void check(conc_status s) {
    if (s != CONC_OK) {
        fprintf(stderr, "error: %s\n", conc_last_error_message());
        exit(1);
    }
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A child's work: "sleeps" for arg milliseconds, then exits with 0. */
static int work(void *arg) {
    conc_sleep_ms((uint64_t)(uintptr_t)arg);
    return 0;
}

struct job {
    const char *name;
    uint64_t work_ms;  /* how long the child takes */
    uint64_t limit_ms; /* how long we let it run */
    conc_process p;
    int done;
};

int main(void) {
    struct job jobs[3] = {
        {"quick", 100, 1000, {0}, 0},
        {"steady", 300, 1000, {0}, 0},
        {"runaway", 60000, 500, {0}, 0},
    };
    const double start = now_ms();
    struct pollfd fds[3];
    for (int i = 0; i < 3; i++) {
        check(conc_process_spawn(&jobs[i].p, work, (void *)(uintptr_t)jobs[i].work_ms));
        fds[i].fd = conc_process_fd(jobs[i].p); /* -1 before Linux 5.3 */
        fds[i].events = POLLIN;
        printf("started %-7s (works %5llu ms, allowed %4llu ms)\n", jobs[i].name,
               (unsigned long long)jobs[i].work_ms, (unsigned long long)jobs[i].limit_ms);
    }

    for (int left = 3; left > 0;) {
        /* Sleep until a child ends or the next time limit passes (at most
         * 50 ms, so that this also works without pidfds). */
        double next = 50;
        for (int i = 0; i < 3; i++) {
            double until = start + (double)jobs[i].limit_ms - now_ms();
            if (!jobs[i].done && until < next) {
                next = until < 0 ? 0 : until;
            }
        }
        if (poll(fds, 3, (int)next + 1) < 0) {
            perror("poll");
            return 1;
        }
        for (int i = 0; i < 3; i++) {
            struct job *j = &jobs[i];
            if (j->done) {
                continue;
            }
            int code = -1;
            conc_status s = conc_process_join_timeout(j->p, 0, &code);
            if (s == CONC_OK) {
                printf("%-7s ended after ~%4.0f ms with exit code %d\n", j->name,
                       now_ms() - start, code);
            } else if (s == CONC_ERR_TIMED_OUT && now_ms() - start >= (double)j->limit_ms) {
                printf("%-7s overran its %llu ms: killing it\n", j->name,
                       (unsigned long long)j->limit_ms);
                check(conc_process_kill(j->p, SIGKILL));
                check(conc_process_join(j->p, &code));
                printf("%-7s killed: exit code %d (128 + SIGKILL)\n", j->name, code);
            } else if (s == CONC_ERR_TIMED_OUT) {
                continue; /* still running, within its limit */
            } else {
                check(s);
            }
            j->done = 1;
            fds[i].fd = -1; /* joined: its descriptor is gone, poll skips it */
            left--;
        }
    }
    printf("all three children joined\n");
    return 0;
}
