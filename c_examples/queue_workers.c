/* Shared memory, example 1 of the course, redone as a work queue: instead
 * of giving each child a fixed half of a shared block, the parent pushes
 * 100 jobs onto a queue; two worker processes attach to it by name, pop
 * jobs until the queue is shut down, and push each result onto a second
 * queue. The parent collects the results and prints them in order.
 *
 * Python: multiprocessing.Queue for jobs and results, mp.Process workers,
 * a None sentinel per worker to end them (here: conc_queue_shutdown). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "conc.h"

static conc_queue *jobs, *results; /* removed again if a later call fails */

/* Exits with conc's message when a call fails, removing both queues so
 * that nothing is left behind in /dev/shm. */
static void check(conc_status status) {
    if (status != CONC_OK) {
        fprintf(stderr, "error: %s\n", conc_last_error_message());
        if (jobs != NULL) {
            conc_queue_unlink(jobs);
        }
        if (results != NULL) {
            conc_queue_unlink(results);
        }
        exit(1);
    }
}

struct job {
    uint32_t index;
};

struct result {
    uint32_t index;
    uint32_t value;
    uint32_t worker;
};

struct worker_args {
    const char *jobs_name, *results_name;
    uint32_t worker;
};

/* Runs in a child process: pops jobs until the queue is shut down. */
static int do_work(void *arg) {
    const struct worker_args *w = arg;
    conc_queue *in, *out;
    if (conc_queue_open(&in, w->jobs_name) != CONC_OK ||
        conc_queue_open(&out, w->results_name) != CONC_OK) {
        fprintf(stderr, "worker %u: %s\n", w->worker, conc_last_error_message());
        return 1;
    }
    for (;;) {
        struct job job;
        size_t len;
        conc_status st = conc_queue_pop(in, &job, sizeof job, &len);
        if (st == CONC_ERR_SHUTDOWN) {
            break; /* no more jobs, and none will come */
        }
        if (st != CONC_OK) {
            fprintf(stderr, "worker %u: %s\n", w->worker, conc_last_error_message());
            return 1;
        }
        struct result r = {job.index, job.index * job.index, w->worker};
        if (conc_queue_push(out, &r, sizeof r) != CONC_OK) {
            fprintf(stderr, "worker %u: %s\n", w->worker, conc_last_error_message());
            return 1;
        }
    }
    conc_queue_close(in);
    conc_queue_close(out);
    return 0;
}

int main(void) {
    enum { JOBS = 100 };
    /* Two queues with random names: 8 jobs in flight at most, room for
     * every result. */
    check(conc_queue_create(&jobs, NULL, 8, sizeof(struct job)));
    check(conc_queue_create(&results, NULL, JOBS, sizeof(struct result)));
    printf("Job queue = %s, result queue = %s\n", conc_queue_name(jobs),
           conc_queue_name(results));

    struct worker_args w1 = {conc_queue_name(jobs), conc_queue_name(results), 1};
    struct worker_args w2 = {conc_queue_name(jobs), conc_queue_name(results), 2};
    conc_process p1, p2;
    check(conc_process_spawn(&p1, do_work, &w1));
    check(conc_process_spawn(&p2, do_work, &w2));

    /* Push the jobs (waiting while 8 are queued), then end the workers. */
    for (uint32_t i = 0; i < JOBS; i++) {
        struct job job = {i};
        check(conc_queue_push(jobs, &job, sizeof job));
    }
    check(conc_queue_shutdown(jobs));

    /* Collect the results, which arrive in any order. */
    uint32_t values[JOBS];
    int done_by[3] = {0, 0, 0};
    for (int i = 0; i < JOBS; i++) {
        struct result r;
        size_t len;
        check(conc_queue_pop(results, &r, sizeof r, &len));
        values[r.index] = r.value;
        done_by[r.worker]++;
    }

    int code1, code2;
    check(conc_process_join(p1, &code1));
    check(conc_process_join(p2, &code2));
    if (code1 != 0 || code2 != 0) {
        fprintf(stderr, "a worker failed (exit codes %d, %d)\n", code1, code2);
        check(CONC_ERR_IO);
    }

    printf("Results (the square of each job's index), in order:\n");
    for (int i = 0; i < JOBS; i++) {
        printf("%u ", values[i]);
    }
    printf("\nworker 1 did %d jobs, worker 2 did %d; %d in all\n", done_by[1], done_by[2],
           done_by[1] + done_by[2]);

    /* give both queues back to the OS */
    check(conc_queue_unlink(jobs));
    check(conc_queue_unlink(results));
    check(conc_queue_close(jobs));
    check(conc_queue_close(results));
    return 0;
}
