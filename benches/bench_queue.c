/* Queue benchmarks, each against its baselines in the same run, rounds
 * interleaved, 64-byte messages:
 *
 * 1. Throughput: one producer process pushes 1,000,000 messages to one
 *    consumer process, through a conc queue (capacity 1024), through a
 *    pipe (one 64-byte write and one 64-byte read per message, looping on
 *    short reads) and through a POSIX message queue (mq_send/mq_receive,
 *    mq_maxmsg as large as this machine allows: as root, msg_max is raised
 *    to 1024 just for the mq_open and restored at once; the line printed
 *    says which). Goal: conc >= 10x both.
 * 2. Latency: a ping-pong between two processes (a message there, one
 *    back), conc queues against a pair of pipes. Goal: conc <= 0.5x.
 *
 * Boost.Interprocess message_queue is measured by bench_queue_boost.cpp.
 * Times are wall-clock medians; on a shared machine they are noisy. */
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conc.h"
#include "report.h"

#define MSG 64
#ifndef MESSAGES
#define MESSAGES 1000000
#endif
#ifndef PINGS
#define PINGS 20000
#endif
#ifndef ROUNDS
#define ROUNDS 7
#endif
#define MQ_WANT 1024

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "bench_queue: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void conc_die(const char *what) {
    fprintf(stderr, "bench_queue: %s: %s\n", what, conc_last_error_message());
    exit(1);
}

static pid_t child(void (*body)(void *), void *arg) {
    pid_t pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        body(arg);
        _exit(0);
    }
    return pid;
}

static void join(pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_queue: a child failed\n");
        exit(1);
    }
}

static void write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("write");
        }
        c += w;
        n -= (size_t)w;
    }
}

static void read_all(int fd, void *p, size_t n) {
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) {
                continue;
            }
            die("read");
        }
        c += r;
        n -= (size_t)r;
    }
}

/* ---- throughput ---------------------------------------------------------- */

static conc_queue *tq;
static int tpipe[2];
static mqd_t tmq;

static void conc_consumer(void *arg) {
    (void)arg;
    uint8_t buf[MSG];
    size_t n;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < MESSAGES; i++) {
        if (conc_queue_pop(tq, buf, sizeof buf, &n) != CONC_OK) {
            conc_die("pop");
        }
        sum += buf[0];
    }
    if (sum == 1) {
        printf("!");
    }
}

static void conc_producer(void *arg) {
    (void)arg;
    uint8_t msg[MSG] = {1};
    for (uint32_t i = 0; i < MESSAGES; i++) {
        memcpy(msg + 4, &i, 4);
        if (conc_queue_push(tq, msg, sizeof msg) != CONC_OK) {
            conc_die("push");
        }
    }
}

static void pipe_consumer(void *arg) {
    (void)arg;
    close(tpipe[1]);
    uint8_t buf[MSG];
    for (uint32_t i = 0; i < MESSAGES; i++) {
        read_all(tpipe[0], buf, MSG);
    }
}

static void pipe_producer(void *arg) {
    (void)arg;
    close(tpipe[0]);
    uint8_t msg[MSG] = {1};
    for (uint32_t i = 0; i < MESSAGES; i++) {
        memcpy(msg + 4, &i, 4);
        write_all(tpipe[1], msg, MSG);
    }
}

static void mq_consumer(void *arg) {
    (void)arg;
    char buf[MSG];
    for (uint32_t i = 0; i < MESSAGES; i++) {
        if (mq_receive(tmq, buf, sizeof buf, NULL) != MSG) {
            die("mq_receive");
        }
    }
}

static void mq_producer(void *arg) {
    (void)arg;
    char msg[MSG] = {1};
    for (uint32_t i = 0; i < MESSAGES; i++) {
        memcpy(msg + 4, &i, 4);
        while (mq_send(tmq, msg, MSG, 0) != 0) {
            if (errno != EINTR) {
                die("mq_send");
            }
        }
    }
}

/* CPU seconds (user + system) used by reaped children so far. */
static double children_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The CPU time of the last run_pair: less sensitive than the wall clock
 * to other load on a shared machine. */
static double last_cpu_s;

static double run_pair(void (*consumer)(void *), void (*producer)(void *)) {
    double cpu0 = children_cpu_s();
    double t0 = now_s();
    pid_t c = child(consumer, NULL);
    pid_t p = child(producer, NULL);
    join(p);
    join(c);
    double t = now_s() - t0;
    last_cpu_s = children_cpu_s() - cpu0;
    return t;
}

static double conc_throughput(void) {
    if (conc_queue_create(&tq, NULL, 1024, MSG) != CONC_OK) {
        conc_die("create");
    }
    conc_queue_unlink(tq);
    double t = run_pair(conc_consumer, conc_producer);
    conc_queue_close(tq);
    return t;
}

static double pipe_throughput(void) {
    if (pipe(tpipe) != 0) {
        die("pipe");
    }
    double t = run_pair(pipe_consumer, pipe_producer);
    close(tpipe[0]);
    close(tpipe[1]);
    return t;
}

static long read_msg_max(void) {
    FILE *f = fopen("/proc/sys/fs/mqueue/msg_max", "r");
    long v = 10;
    if (f != NULL) {
        if (fscanf(f, "%ld", &v) != 1) {
            v = 10;
        }
        fclose(f);
    }
    return v;
}

static int write_msg_max(long v) {
    FILE *f = fopen("/proc/sys/fs/mqueue/msg_max", "w");
    if (f == NULL) {
        return -1;
    }
    int ok = fprintf(f, "%ld\n", v) > 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Opens the benchmark's message queue with the largest mq_maxmsg allowed
 * (raising msg_max as root for this call only); returns that depth. */
static long mq_depth = 0;
static mqd_t open_mq(void) {
    char name[64];
    snprintf(name, sizeof name, "/bench_queue_%d", (int)getpid());
    long old = read_msg_max();
    long depth = old;
    int raised = 0;
    if (old < MQ_WANT && geteuid() == 0 && write_msg_max(MQ_WANT) == 0) {
        raised = 1;
        depth = MQ_WANT;
    }
    struct mq_attr attr = {0};
    attr.mq_maxmsg = depth;
    attr.mq_msgsize = MSG;
    mq_unlink(name);
    mqd_t q = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
    int err = errno;
    if (raised) {
        write_msg_max(old); /* restored at once: only mq_open checks it */
    }
    if (q == (mqd_t)-1 && depth > old) {
        depth = old; /* e.g. RLIMIT_MSGQUEUE: the allowed default */
        attr.mq_maxmsg = depth;
        q = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
        err = errno;
    }
    if (q == (mqd_t)-1) {
        errno = err;
        die("mq_open");
    }
    mq_unlink(name);
    mq_depth = depth;
    return q;
}

static double mq_throughput(void) {
    tmq = open_mq();
    double t = run_pair(mq_consumer, mq_producer);
    mq_close(tmq);
    return t;
}

/* ---- ping-pong ----------------------------------------------------------- */

static conc_queue *ping_q, *pong_q;
static int ping_p[2], pong_p[2];

static void conc_echo(void *arg) {
    (void)arg;
    uint8_t buf[MSG];
    size_t n;
    for (int i = 0; i < PINGS; i++) {
        if (conc_queue_pop(ping_q, buf, sizeof buf, &n) != CONC_OK ||
            conc_queue_push(pong_q, buf, n) != CONC_OK) {
            conc_die("echo");
        }
    }
}

static double conc_pingpong(void) {
    if (conc_queue_create(&ping_q, NULL, 1, MSG) != CONC_OK ||
        conc_queue_create(&pong_q, NULL, 1, MSG) != CONC_OK) {
        conc_die("create");
    }
    conc_queue_unlink(ping_q);
    conc_queue_unlink(pong_q);
    pid_t e = child(conc_echo, NULL);
    uint8_t msg[MSG] = {7}, buf[MSG];
    size_t n;
    double t0 = now_s();
    for (int i = 0; i < PINGS; i++) {
        if (conc_queue_push(ping_q, msg, MSG) != CONC_OK ||
            conc_queue_pop(pong_q, buf, sizeof buf, &n) != CONC_OK) {
            conc_die("ping");
        }
    }
    double t = now_s() - t0;
    join(e);
    conc_queue_close(ping_q);
    conc_queue_close(pong_q);
    return t / PINGS;
}

static void pipe_echo(void *arg) {
    (void)arg;
    uint8_t buf[MSG];
    for (int i = 0; i < PINGS; i++) {
        read_all(ping_p[0], buf, MSG);
        write_all(pong_p[1], buf, MSG);
    }
}

static double pipe_pingpong(void) {
    if (pipe(ping_p) != 0 || pipe(pong_p) != 0) {
        die("pipe");
    }
    pid_t e = child(pipe_echo, NULL);
    uint8_t msg[MSG] = {7}, buf[MSG];
    double t0 = now_s();
    for (int i = 0; i < PINGS; i++) {
        write_all(ping_p[1], msg, MSG);
        read_all(pong_p[0], buf, MSG);
    }
    double t = now_s() - t0;
    join(e);
    close(ping_p[0]);
    close(ping_p[1]);
    close(pong_p[0]);
    close(pong_p[1]);
    return t / PINGS;
}

int main(void) {
    double c_t[ROUNDS], p_t[ROUNDS], m_t[ROUNDS], r_pipe[ROUNDS], r_mq[ROUNDS];
    double c_rt[ROUNDS], p_rt[ROUNDS], r_rt[ROUNDS];
    double c_cpu[ROUNDS], p_cpu[ROUNDS], m_cpu[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        /* Alternate which goes first, so drift hits both sides. */
        if (r % 2 == 0) {
            c_t[r] = conc_throughput();
            c_cpu[r] = last_cpu_s;
            p_t[r] = pipe_throughput();
            p_cpu[r] = last_cpu_s;
            m_t[r] = mq_throughput();
            m_cpu[r] = last_cpu_s;
            c_rt[r] = conc_pingpong();
            p_rt[r] = pipe_pingpong();
        } else {
            m_t[r] = mq_throughput();
            m_cpu[r] = last_cpu_s;
            p_t[r] = pipe_throughput();
            p_cpu[r] = last_cpu_s;
            c_t[r] = conc_throughput();
            c_cpu[r] = last_cpu_s;
            p_rt[r] = pipe_pingpong();
            c_rt[r] = conc_pingpong();
        }
        r_pipe[r] = p_t[r] / c_t[r]; /* speed-up: higher is better */
        r_mq[r] = m_t[r] / c_t[r];
        r_rt[r] = c_rt[r] / p_rt[r]; /* time ratio: lower is better */
        printf("round %d: 1M x 64 B: conc %.3f s, pipe %.3f s, mq %.3f s; "
               "round trip: conc %.2f us, pipe %.2f us\n",
               r + 1, c_t[r], p_t[r], m_t[r], c_rt[r] * 1e6, p_rt[r] * 1e6);
        fflush(stdout);
    }
    printf("POSIX mq depth (mq_maxmsg): %ld (msg_max here is %ld%s)\n", mq_depth, read_msg_max(),
           mq_depth > read_msg_max() ? ", raised for the mq_open only, as root" : "");
    double cm = report_median(c_t, ROUNDS), pm = report_median(p_t, ROUNDS);
    double mm = report_median(m_t, ROUNDS);
    printf("throughput, messages/s (medians): conc %.0f, pipe %.0f, POSIX mq %.0f\n",
           MESSAGES / cm, MESSAGES / pm, MESSAGES / mm);
    printf("CPU time of both processes per message (medians): conc %.0f ns, pipe %.0f ns, "
           "POSIX mq %.0f ns\n",
           report_median(c_cpu, ROUNDS) * 1e9 / MESSAGES,
           report_median(p_cpu, ROUNDS) * 1e9 / MESSAGES,
           report_median(m_cpu, ROUNDS) * 1e9 / MESSAGES);
    report_row("queue 1 producer -> 1 consumer, 1M x 64 B: speed-up vs pipe", MESSAGES / cm,
               MESSAGES / pm, "msg/s", 10, "higher", r_pipe, ROUNDS);
    report_row("queue 1 producer -> 1 consumer, 1M x 64 B: speed-up vs POSIX mq", MESSAGES / cm,
               MESSAGES / mm, "msg/s", 10, "higher", r_mq, ROUNDS);
    double crt = report_median(c_rt, ROUNDS) * 1e6, prt = report_median(p_rt, ROUNDS) * 1e6;
    printf("round trip (medians): conc %.2f us, pipe %.2f us\n", crt, prt);
    report_row("queue ping-pong round trip vs pipe", crt, prt, "us", 0.5, "lower", r_rt, ROUNDS);
    return 0;
}
