/* bench_count_lines: conc_mmap_count_lines as a whole process (start, open,
 * map, count, close, exit) against `wc -l`, on a 10,000,000-line file of
 * 879,945,941 bytes (about 880 MB; lines of 63 to 113 bytes with their
 * '\n', like the course document's) in the page cache (see warm()).
 *
 *   bench_count_lines [FILE]        the benchmark; FILE defaults to
 *                                   target/bench/lines-10M.txt, written
 *                                   (about 880 MB of disk, ~20 s) when
 *                                   missing or of the wrong size, and kept
 *                                   for later runs
 *   bench_count_lines --count FILE  open, count, close, print the count:
 *                                   the process that is timed
 *   bench_count_lines --make FILE   only write the file
 *
 * Two comparisons, 11 interleaved rounds each (conc, then wc -l), median
 * ratio with its min and max:
 *   1. quiet: nothing else started by the benchmark;
 *   2. one core busy: a spinning process at normal priority
 *      (`sh -c 'while :; do :; done'`) runs throughout, so conc's pieces
 *      share the machine with it (wc -l is single-threaded).
 * The load average is printed with each, since other work on the machine
 * changes both figures. Ratios below 1 mean conc is faster.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conc.h"
#include "report.h"

#define LINES 10000000ULL
#define ROUNDS 11
#define DEFAULT_FILE "target/bench/lines-10M.txt"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "bench_count_lines: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void die_conc(const char *what, conc_status s) {
    fprintf(stderr, "bench_count_lines: %s: %s: %s\n", what, conc_status_str(s),
            conc_last_error_message());
    exit(1);
}

/* ---- the data file (the same lines as bench_mmap's) -------------------- */

static uint64_t rng_state;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Line i: a 9-digit number, a space, lowercase "words" up to 62..112
 * bytes, then '\n'. Deterministic, so the size is known beforehand. */
static size_t line_len(void) { return 62 + (size_t)(rng() % 51); }

static uint64_t expected_size(void) {
    rng_state = 0x9E3779B97F4A7C15ULL;
    uint64_t total = 0;
    for (uint64_t i = 0; i < LINES; i++) {
        size_t len = line_len();
        total += len + 1;
        for (size_t j = 10; j < len; j++) rng();
    }
    return total;
}

static void make_dirs(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    for (char *p = dir + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(dir, 0777) != 0 && errno != EEXIST) die(dir);
            *p = '/';
        }
    }
}

static void generate(const char *path, uint64_t want) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.part", path);
    make_dirs(path);
    FILE *f = fopen(tmp, "w");
    if (!f) die(tmp);
    static char buf[1 << 20];
    setvbuf(f, buf, _IOFBF, sizeof buf);
    rng_state = 0x9E3779B97F4A7C15ULL;
    char line[128];
    for (uint64_t i = 0; i < LINES; i++) {
        size_t len = line_len();
        snprintf(line, sizeof line, "%09llu ", (unsigned long long)i);
        for (size_t j = 10; j < len; j++) {
            uint64_t r = rng();
            line[j] = (r % 7 == 0) ? ' ' : (char)('a' + (r >> 8) % 26);
        }
        line[len] = '\n';
        if (fwrite(line, 1, len + 1, f) != len + 1) die(tmp);
    }
    if (fclose(f) != 0) die(tmp);
    struct stat st;
    if (stat(tmp, &st) != 0) die(tmp);
    if ((uint64_t)st.st_size != want) {
        fprintf(stderr, "bench_count_lines: wrote %lld bytes, expected %llu\n",
                (long long)st.st_size, (unsigned long long)want);
        exit(1);
    }
    if (rename(tmp, path) != 0) die(path);
}

/* Makes `path` unless it is already there with the right size. */
static void ensure_file(const char *path) {
    uint64_t size = expected_size();
    struct stat st;
    if (stat(path, &st) == 0 && (uint64_t)st.st_size == size) return;
    printf("writing %s (%llu lines, %llu bytes)...\n", path, LINES, (unsigned long long)size);
    fflush(stdout);
    generate(path, size);
}

/* Puts the whole file in the page cache as reading it from disk leaves
 * it: dropped from the cache first, then read once. The state matters to
 * a map: the kernel reads a file ahead in large folios (2 MiB here), which
 * a fault maps whole (by PMD), while a file just written sits in folios of
 * the writes' size (1 MiB for the generator's), mapped 4 KiB page by 4 KiB
 * page; `wc -l` copies either alike. Dropping it first makes the runs
 * repeatable whatever happened to the file before. */
static void warm(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) die(path);
    if (fdatasync(fd) != 0) die("fdatasync");
    int e = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (e != 0) {
        errno = e;
        die("posix_fadvise");
    }
    static char buf[1 << 20];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
}

/* ---- the timed processes ----------------------------------------------- */

/* Runs argv with stdout to a pipe; returns its wall time and the first
 * number it printed in *count. */
static double run_process(char *const argv[], unsigned long long *count) {
    int fds[2];
    if (pipe(fds) != 0) die("pipe");
    double t0 = now();
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    char out[512];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof out - 1 && (r = read(fds[0], out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)r;
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    double t = now() - t0;
    out[n] = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_count_lines: %s failed (status %d): %s\n", argv[0], status, out);
        exit(1);
    }
    *count = strtoull(out, NULL, 10);
    return t;
}

static void check_count(const char *who, unsigned long long got, unsigned long long want) {
    if (got != want) {
        fprintf(stderr, "bench_count_lines: %s counted %llu lines, expected %llu\n", who, got,
                want);
        exit(1);
    }
}

static int count_mode(const char *path) {
    conc_mmap *map;
    conc_status s = conc_mmap_open(&map, path, CONC_ACCESS_READ);
    if (s != CONC_OK) die_conc("conc_mmap_open", s);
    uint64_t lines = 0;
    s = conc_mmap_count_lines(map, &lines);
    if (s != CONC_OK) die_conc("conc_mmap_count_lines", s);
    s = conc_mmap_close(map);
    if (s != CONC_OK) die_conc("conc_mmap_close", s);
    printf("%llu %s\n", (unsigned long long)lines, path);
    return 0;
}

static double loadavg(void) {
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

/* ROUNDS interleaved pairs; prints the human lines and the REPORT row. */
static void compare(const char *name, double goal, char *const conc_argv[],
                    char *const wc_argv[], unsigned long long want) {
    double t_conc[ROUNDS], t_wc[ROUNDS], ratio[ROUNDS];
    double load0 = loadavg();
    unsigned long long got;
    for (int r = 0; r < ROUNDS; r++) {
        t_conc[r] = run_process(conc_argv, &got);
        check_count("conc_mmap_count_lines", got, want);
        t_wc[r] = run_process(wc_argv, &got);
        check_count("wc -l", got, want);
        ratio[r] = t_conc[r] / t_wc[r];
    }
    double conc = report_median(t_conc, ROUNDS), wc = report_median(t_wc, ROUNDS);
    printf("%s: median of %d interleaved rounds (load average %.2f -> %.2f)\n", name, ROUNDS,
           load0, loadavg());
    printf("  conc_mmap_count_lines (process)  %8.4f s  (min %.4f, max %.4f)\n", conc, t_conc[0],
           t_conc[ROUNDS - 1]);
    printf("  wc -l (process)                  %8.4f s  (min %.4f, max %.4f)\n", wc, t_wc[0],
           t_wc[ROUNDS - 1]);
    report_row(name, conc, wc, "s", goal, "lower", ratio, ROUNDS);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--count") == 0) return count_mode(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--make") == 0) {
        ensure_file(argv[2]);
        return 0;
    }
    const char *path = argc > 1 ? argv[1] : DEFAULT_FILE;
    unsigned long long want = LINES;
    if (argc <= 1) {
        ensure_file(path);
    } else {
        want = 0; /* counted by wc -l below */
    }
    struct stat st;
    if (stat(path, &st) != 0) die(path);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("file: %s, %lld bytes (%.0f MB), dropped from the page cache and read once; "
           "%ld cores\n",
           path, (long long)st.st_size, (double)st.st_size / 1e6, cores);
    warm(path);

    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) die("readlink /proc/self/exe");
    self[n] = 0;
    char *conc_argv[] = {self, "--count", (char *)path, NULL};
    char *wc_argv[] = {"wc", "-l", (char *)path, NULL};

    /* One untimed run of each warms caches and code. */
    unsigned long long got;
    run_process(wc_argv, &got);
    if (want == 0) want = got;
    check_count("wc -l", got, want);
    run_process(conc_argv, &got);
    check_count("conc_mmap_count_lines", got, want);

    compare("count_lines process vs wc -l (quiet)", 0.30, conc_argv, wc_argv, want);

    pid_t spinner = fork();
    if (spinner < 0) die("fork");
    if (spinner == 0) {
        execlp("sh", "sh", "-c", "while :; do :; done", (char *)NULL);
        _exit(127);
    }
    compare("count_lines process vs wc -l (one core busy)", 0.45, conc_argv, wc_argv, want);
    kill(spinner, SIGKILL);
    while (waitpid(spinner, NULL, 0) < 0 && errno == EINTR) {
    }
    return 0;
}
