/* Shared memory benchmarks, each against its baseline in the same run:
 *
 * 1. A create + attach + close + unlink cycle of a 4 KiB segment, through
 *    conc and through the raw POSIX calls doing the same work (shm_open
 *    O_CREAT|O_EXCL, fchmod, posix_fallocate, mmap; shm_open, fstat, mmap;
 *    munmap, close, shm_unlink). Interleaved rounds, median per cycle.
 *    Goal: conc / raw <= 1.1.
 * 2. The course's shared memory example 1 end to end, as whole processes:
 *    build/examples/shm_example1 against the document's Python program
 *    (when python3 is installed). Medians. Goal: a speed-up >= 10x.
 *
 * Run from the top of the repository (`make bench`). */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conc.h"
#include "report.h"

extern char **environ;

#define SEG_SIZE 4096
#define CYCLES 200 /* per round and side */
#define ROUNDS 31

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what) {
    fprintf(stderr, "bench_shm: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void conc_die(void) {
    fprintf(stderr, "bench_shm: %s\n", conc_last_error_message());
    exit(1);
}

static char name[64];      /* for conc: no slash */
static char raw_path[72];  /* for shm_open: "/name" */

static void conc_cycle(void) {
    conc_shm *a, *b;
    if (conc_shm_create(&a, name, SEG_SIZE) != CONC_OK) conc_die();
    if (conc_shm_open(&b, name) != CONC_OK) conc_die();
    conc_shm_buf(b)[0] = 1;
    if (conc_shm_close(b) != CONC_OK) conc_die();
    if (conc_shm_close(a) != CONC_OK) conc_die();
    if (conc_shm_unlink_name(name) != CONC_OK) conc_die();
}

static void raw_cycle(void) {
    /* create */
    int fa = shm_open(raw_path, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fa < 0) die("shm_open create");
    if (fchmod(fa, 0600) != 0) die("fchmod");
    int err = posix_fallocate(fa, 0, SEG_SIZE);
    if (err != 0) {
        errno = err;
        die("posix_fallocate");
    }
    void *pa = mmap(NULL, SEG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fa, 0);
    if (pa == MAP_FAILED) die("mmap");
    /* attach */
    int fb = shm_open(raw_path, O_RDWR, 0);
    if (fb < 0) die("shm_open attach");
    struct stat st;
    if (fstat(fb, &st) != 0) die("fstat");
    void *pb = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fb, 0);
    if (pb == MAP_FAILED) die("mmap");
    ((unsigned char *)pb)[0] = 1;
    /* close both, unlink */
    munmap(pb, (size_t)st.st_size);
    close(fb);
    munmap(pa, SEG_SIZE);
    close(fa);
    if (shm_unlink(raw_path) != 0) die("shm_unlink");
}

static double time_cycles(void (*cycle)(void)) {
    double t0 = now_ns();
    for (int i = 0; i < CYCLES; i++) {
        cycle();
    }
    return (now_ns() - t0) / CYCLES;
}

static void bench_cycle(void) {
    snprintf(name, sizeof name, "bench_shm_%d", (int)getpid());
    snprintf(raw_path, sizeof raw_path, "/%s", name);
    /* warm up both paths */
    time_cycles(conc_cycle);
    time_cycles(raw_cycle);
    double conc_t[ROUNDS], raw_t[ROUNDS], ratios[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        if (r % 2 == 0) {
            conc_t[r] = time_cycles(conc_cycle);
            raw_t[r] = time_cycles(raw_cycle);
        } else {
            raw_t[r] = time_cycles(raw_cycle);
            conc_t[r] = time_cycles(conc_cycle);
        }
        ratios[r] = conc_t[r] / raw_t[r];
    }
    double c = median(conc_t, ROUNDS), w = median(raw_t, ROUNDS);
    printf("create+attach+close+unlink of a %d-byte segment (%d rounds x %d cycles, median):\n",
           SEG_SIZE, ROUNDS, CYCLES);
    printf("  conc %8.2f us/cycle\n", c / 1e3);
    printf("  raw  %8.2f us/cycle\n", w / 1e3);
    printf("  ratio conc/raw = %.3f (goal <= 1.1)\n", c / w);
    report_row("shm create+attach+close+unlink vs POSIX shm", c / 1e3, w / 1e3, "us", 1.1,
               "lower", ratios, ROUNDS);
}

/* Runs argv as a whole process with stdout to /dev/null; returns its
 * wall time in ns, or -1 if it could not run or failed. */
static double run_process(char *const argv[]) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    double t0 = now_ns();
    int err = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err != 0) {
        return -1;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -1;
    }
    double t = now_ns() - t0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? t : -1;
}

static const char python_example1[] =
    "from multiprocessing import shared_memory\n"
    "import multiprocessing as mp\n"
    "\n"
    "def do_work(shared_name, value, start, end):\n"
    "    # Attach to an exist shared memory block\n"
    "    shared = shared_memory.SharedMemory(shared_name)\n"
    "    for i in range(start, end):\n"
    "        shared.buf[i] = value\n"
    "    # need to close this local shared memory block access\n"
    "    shared.close()\n"
    "    \n"
    "\n"
    "def main():\n"
    "    shared = shared_memory.SharedMemory(create=True, size=100)\n"
    "    # Create a shared memory block of 100 items\n"
    "    print(f'Shared memory name = {shared.name}')\n"
    "\n"
    "    # Divide the work among two processes, storing partial results in \"shared\"\n"
    "    p1 = mp.Process(target=do_work, args=(shared.name, 1, 0, 50))\n"
    "    p2 = mp.Process(target=do_work, args=(shared.name, 2, 50, 100))\n"
    "\n"
    "    p1.start()\n"
    "    p2.start()\n"
    "\n"
    "    p1.join()\n"
    "    p2.join()\n"
    "\n"
    "    # we must loop through the shared.buf array to display the values\n"
    "    print('Buffer values:')\n"
    "    for i in range(100):\n"
    "        print(shared.buf[i], end=' ')\n"
    "    print()\n"
    "\n"
    "    # close and give the memory block back to the OS\n"
    "    shared.close()\n"
    "    shared.unlink()\n"
    "\n"
    "if __name__ == '__main__':\n"
    "    main()\n";

#define C_RUNS_PER_ROUND 3
#define PY_ROUNDS 9

static void bench_example(void) {
    const char *exe = "build/examples/shm_example1";
    if (access(exe, X_OK) != 0) {
        printf("example 1 end to end: skipped (%s not built; run `make bench`)\n", exe);
        return;
    }
    char py_path[] = "/tmp/conc_bench_shm_example1_XXXXXX.py";
    int fd = mkstemps(py_path, 3);
    if (fd < 0) die("mkstemps");
    if (write(fd, python_example1, sizeof python_example1 - 1) !=
        (ssize_t)(sizeof python_example1 - 1)) {
        die("write");
    }
    close(fd);

    char *c_argv[] = {(char *)exe, NULL};
    char *py_argv[] = {"python3", py_path, NULL};
    double py_t[PY_ROUNDS], c_t[PY_ROUNDS * C_RUNS_PER_ROUND], speedups[PY_ROUNDS];
    int py_n = 0, c_n = 0, have_python = 1;
    /* warm up (page cache, Python's bytecode cache) */
    run_process(c_argv);
    if (run_process(py_argv) < 0) {
        have_python = 0;
    }
    for (int r = 0; r < PY_ROUNDS; r++) {
        for (int i = 0; i < C_RUNS_PER_ROUND; i++) {
            double t = run_process(c_argv);
            if (t < 0) {
                fprintf(stderr, "bench_shm: %s failed\n", exe);
                unlink(py_path);
                exit(1);
            }
            c_t[c_n++] = t;
        }
        if (have_python) {
            double t = run_process(py_argv);
            if (t >= 0) {
                /* this round's speed-up: Python against the median of the
                 * round's C runs */
                double round_c[C_RUNS_PER_ROUND];
                memcpy(round_c, &c_t[c_n - C_RUNS_PER_ROUND], sizeof round_c);
                speedups[py_n] = t / median(round_c, C_RUNS_PER_ROUND);
                py_t[py_n++] = t;
            }
        }
    }
    unlink(py_path);
    double c = median(c_t, c_n);
    printf("shm example 1 end to end, whole process (median):\n");
    printf("  conc C  %8.2f ms (%d runs)\n", c / 1e6, c_n);
    if (!have_python || py_n == 0) {
        printf("  Python: skipped (python3 is not installed or the program failed)\n");
        report_skip("shm example 1 vs Python", "python3 not found, or the program failed");
        return;
    }
    double p = median(py_t, py_n);
    printf("  Python  %8.2f ms (%d runs)\n", p / 1e6, py_n);
    printf("  speed-up Python/conc = %.1fx (goal >= 10x)\n", p / c);
    report_row("shm example 1 vs Python (whole process, speed-up)", c / 1e6, p / 1e6, "ms", 10,
               "higher", speedups, py_n);
}

int main(void) {
    bench_cycle();
    bench_example();
    return 0;
}
