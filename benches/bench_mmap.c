/* bench_mmap: conc's memory-mapped files against their baselines, on a
 * 10,000,000-line file of about 880 MB like the course document's.
 *
 *   bench_mmap [FILE]          the benchmark (FILE defaults to
 *                              build/bench-data/large.txt, made if missing)
 *   bench_mmap --count FILE    print conc_mmap_count_lines of FILE (the
 *                              process the benchmark times against wc -l)
 *   bench_mmap --readline FILE only comparison 4 below, on FILE
 *   bench_mmap --readline-loop FILE / --memchr-loop FILE
 *                              one pass of either loop of comparison 4 (for
 *                              callgrind: instructions per line)
 *
 * In one run, with interleaved rounds and the median of each:
 *   1. conc_mmap_count_lines vs `wc -l`, both timed as whole processes;
 *   2. a conc_mmap_readline loop vs a buffered getline loop, in process;
 *   3. both against the document's Python mmap readline program, when
 *      python3 is present;
 *   4. the conc_mmap_readline loop against a bare C memchr loop over the
 *      same mapping (conc_mmap_data): what the call boundary costs (handle
 *      check, cursor, SIGBUS guard) on top of finding the newline.
 * Ratios below 1 mean conc is faster.
 */
#include <errno.h>
#include <fcntl.h>
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
#define ROUNDS 7
#define PY_ROUNDS 3
#define RL_ROUNDS 11
#define DEFAULT_FILE "build/bench-data/large.txt"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what) {
    fprintf(stderr, "bench_mmap: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void die_conc(const char *what, conc_status s) {
    fprintf(stderr, "bench_mmap: %s: %s: %s\n", what, conc_status_str(s),
            conc_last_error_message());
    exit(1);
}

/* ---- the data file ---------------------------------------------------- */

/* Line i: a 9-digit number, a space, then lowercase "words" up to a length
 * of 62..112 bytes (87 on average, the document's 877 MB / 10M lines),
 * then '\n'. Deterministic, so the expected size is known beforehand. */
static uint64_t rng_state;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static size_t line_len(void) { return 62 + (size_t)(rng() % 51); }

static uint64_t expected_size(void) {
    rng_state = 0x9E3779B97F4A7C15ULL;
    uint64_t total = 0;
    for (uint64_t i = 0; i < LINES; i++) {
        size_t len = line_len();
        total += len + 1;
        for (size_t j = 10; j < len; j++) rng(); /* same draws as generate() */
    }
    return total;
}

static void generate(const char *path, uint64_t want) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.part", path);
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
        fprintf(stderr, "bench_mmap: generated %lld bytes, expected %llu\n",
                (long long)st.st_size, (unsigned long long)want);
        exit(1);
    }
    if (rename(tmp, path) != 0) die(path);
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

/* Reads the whole file once so that every timed run finds it cached. */
static void warm(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) die(path);
    static char buf[1 << 20];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
}

/* ---- the timed runs --------------------------------------------------- */

/* Runs argv as a process with stdout to a pipe; returns its wall time, the
 * first number it printed in *count and, when out is not NULL, what it
 * printed (up to 511 bytes). */
static double run_process(char *const argv[], unsigned long long *count, char out[512]) {
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
    char own[512];
    if (out == NULL) out = own;
    size_t n = 0;
    ssize_t r;
    while ((r = read(fds[0], out + n, 511 - n)) > 0) n += (size_t)r;
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    double t = now() - t0;
    out[n] = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_mmap: %s failed (status %d): %s\n", argv[0], status, out);
        exit(1);
    }
    *count = strtoull(out, NULL, 10);
    return t;
}

static unsigned long long conc_readline_loop(const char *path) {
    conc_mmap *map;
    conc_status s = conc_mmap_open(&map, path, CONC_ACCESS_READ);
    if (s != CONC_OK) die_conc("conc_mmap_open", s);
    unsigned long long count = 0;
    const uint8_t *line;
    size_t len;
    while (conc_mmap_readline(map, &line, &len) == CONC_OK && len > 0) count++;
    conc_mmap_close(map);
    return count;
}

static void check_count(const char *who, unsigned long long got, unsigned long long want) {
    if (got != want) {
        fprintf(stderr, "bench_mmap: %s counted %llu lines, expected %llu\n", who, got, want);
        exit(1);
    }
}

/* ---- readline against memchr, over one mapping ------------------------- */

/* The document's loop: conc_mmap_readline until the empty line. */
static unsigned long long readline_over(conc_mmap *map) {
    conc_status s = conc_mmap_seek(map, 0, CONC_SEEK_SET);
    if (s != CONC_OK) die_conc("conc_mmap_seek", s);
    unsigned long long count = 0;
    const uint8_t *line;
    size_t len;
    while (conc_mmap_readline(map, &line, &len) == CONC_OK && len > 0) count++;
    return count;
}

/* The same lines found by hand: memchr from the end of the last one. */
static unsigned long long memchr_over(const uint8_t *p, size_t n) {
    const uint8_t *end = p + n;
    unsigned long long count = 0;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
        count++;
    }
    return count;
}

static conc_mmap *open_or_die(const char *path) {
    conc_mmap *map;
    conc_status s = conc_mmap_open(&map, path, CONC_ACCESS_READ);
    if (s != CONC_OK) die_conc("conc_mmap_open", s);
    return map;
}

/* Comparison 4: RL_ROUNDS interleaved rounds over one warm mapping. */
static void readline_vs_memchr(const char *path, unsigned long long want) {
    conc_mmap *map = open_or_die(path);
    const uint8_t *data = conc_mmap_data(map);
    size_t n = conc_mmap_len(map);
    /* Fault the pages in and warm both loops once. */
    unsigned long long got = memchr_over(data, n);
    if (want == 0) want = got;
    check_count("memchr loop", got, want);
    check_count("conc_mmap_readline loop", readline_over(map), want);
    double t_rl[RL_ROUNDS], t_mc[RL_ROUNDS], ratio[RL_ROUNDS];
    for (int r = 0; r < RL_ROUNDS; r++) {
        /* Alternate which goes first, so neither always gets the warmer
         * caches or the quieter moment. */
        for (int k = 0; k < 2; k++) {
            double t0 = now();
            if ((r + k) % 2 == 0) {
                got = readline_over(map);
                t_rl[r] = now() - t0;
                check_count("conc_mmap_readline loop", got, want);
            } else {
                got = memchr_over(data, n);
                t_mc[r] = now() - t0;
                check_count("memchr loop", got, want);
            }
        }
        ratio[r] = t_rl[r] / t_mc[r];
    }
    conc_mmap_close(map);
    double rl = median(t_rl, RL_ROUNDS), mc = median(t_mc, RL_ROUNDS);
    printf("median of %d interleaved rounds over one mapping, %llu lines:\n", RL_ROUNDS, want);
    printf("  conc_mmap_readline loop                             %8.4f s (%.2f ns/line)\n", rl,
           rl * 1e9 / (double)want);
    printf("  bare C memchr loop over conc_mmap_data              %8.4f s (%.2f ns/line)\n", mc,
           mc * 1e9 / (double)want);
    report_row("mmap readline loop vs C memchr loop", rl, mc, "s", 1.10, "lower", ratio,
               RL_ROUNDS);
    printf("  ratio readline / memchr (median, min, max)          %8.3f %.3f %.3f  (goal <= 1.10)\n",
           ratio[RL_ROUNDS / 2], ratio[0], ratio[RL_ROUNDS - 1]);
}

static unsigned long long getline_loop(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    char *line = NULL;
    size_t cap = 0;
    unsigned long long count = 0;
    while (getline(&line, &cap, f) > 0) count++;
    free(line);
    fclose(f);
    return count;
}

static const char PYTHON_PROGRAM[] =
    "import mmap\n"
    "import sys\n"
    "import time\n"
    "\n"
    "def mmap_count_lines(filename):\n"
    "    count = 0\n"
    "    with open(filename, mode=\"r\", encoding=\"utf8\") as file_obj:\n"
    "        with mmap.mmap(file_obj.fileno(), length=0, access=mmap.ACCESS_READ) as map_file:\n"
    "            for line in iter(map_file.readline, b\"\"):\n"
    "                count += 1\n"
    "    return count\n"
    "\n"
    "def main():\n"
    "    start = time.perf_counter()\n"
    "    count = mmap_count_lines(sys.argv[1])\n"
    "    end = time.perf_counter()\n"
    "    print(f'{count} lines processed, {end - start}')\n"
    "\n"
    "if __name__ == '__main__':\n"
    "    main()\n";

static int have_python(void) {
    return system("python3 -c 'import mmap' >/dev/null 2>&1") == 0;
}


static int count_mode(const char *path) {
    conc_mmap *map;
    conc_status s = conc_mmap_open(&map, path, CONC_ACCESS_READ);
    if (s != CONC_OK) die_conc("conc_mmap_open", s);
    uint64_t lines = 0;
    s = conc_mmap_count_lines(map, &lines);
    if (s != CONC_OK) die_conc("conc_mmap_count_lines", s);
    conc_mmap_close(map);
    printf("%llu %s\n", (unsigned long long)lines, path);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--count") == 0) return count_mode(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--readline") == 0) {
        warm(argv[2]);
        readline_vs_memchr(argv[2], 0);
        return 0;
    }
    if (argc == 3 && (strcmp(argv[1], "--readline-loop") == 0 ||
                      strcmp(argv[1], "--memchr-loop") == 0)) {
        conc_mmap *map = open_or_die(argv[2]);
        unsigned long long lines = argv[1][2] == 'r'
                                       ? readline_over(map)
                                       : memchr_over(conc_mmap_data(map), conc_mmap_len(map));
        conc_mmap_close(map);
        printf("%llu %s\n", lines, argv[2]);
        return 0;
    }
    const char *path = argc > 1 ? argv[1] : DEFAULT_FILE;
    unsigned long long want = LINES;

    if (argc <= 1) {
        uint64_t size = expected_size();
        struct stat st;
        if (stat(path, &st) != 0 || (uint64_t)st.st_size != size) {
            printf("generating %s (%llu lines, %.0f MB)...\n", path, want, size / 1e6);
            fflush(stdout);
            make_dirs(path);
            generate(path, size);
        }
    } else {
        want = 0; /* counted by wc -l below */
    }
    struct stat st;
    if (stat(path, &st) != 0) die(path);
    printf("file: %s, %.0f MB\n", path, (double)st.st_size / 1e6);
    warm(path);

    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) die("readlink /proc/self/exe");
    self[n] = 0;
    char *count_argv[] = {self, "--count", (char *)path, NULL};
    char *wc_argv[] = {"wc", "-l", (char *)path, NULL};

    /* Python program, written to a temporary file. */
    int python = have_python();
    char py_path[512];
    const char *tmpdir = getenv("TMPDIR");
    snprintf(py_path, sizeof py_path, "%s/bench_mmap_py_XXXXXX",
             tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (python) {
        int fd = mkstemp(py_path);
        if (fd < 0) die("mkstemp");
        if (write(fd, PYTHON_PROGRAM, sizeof PYTHON_PROGRAM - 1) !=
            (ssize_t)(sizeof PYTHON_PROGRAM - 1))
            die("write");
        close(fd);
    }
    char *py_argv[] = {"python3", py_path, (char *)path, NULL};

    /* One untimed run of each warms caches and code. */
    unsigned long long got;
    run_process(wc_argv, &got, NULL);
    if (want == 0) want = got;
    check_count("wc -l", got, want);
    run_process(count_argv, &got, NULL);
    check_count("conc_mmap_count_lines", got, want);

    double t_count[ROUNDS], t_wc[ROUNDS], t_readline[ROUNDS], t_getline[ROUNDS];
    double r_count[ROUNDS], r_readline[ROUNDS]; /* per-round ratios, for the report */
    for (int r = 0; r < ROUNDS; r++) {
        t_count[r] = run_process(count_argv, &got, NULL);
        check_count("conc_mmap_count_lines", got, want);
        t_wc[r] = run_process(wc_argv, &got, NULL);
        check_count("wc -l", got, want);
        double t0 = now();
        got = conc_readline_loop(path);
        t_readline[r] = now() - t0;
        check_count("conc_mmap_readline loop", got, want);
        t0 = now();
        got = getline_loop(path);
        t_getline[r] = now() - t0;
        check_count("getline loop", got, want);
        r_count[r] = t_count[r] / t_wc[r];
        r_readline[r] = t_readline[r] / t_getline[r];
    }
    double count = median(t_count, ROUNDS), wc = median(t_wc, ROUNDS);
    double readline = median(t_readline, ROUNDS), getl = median(t_getline, ROUNDS);
    printf("median of %d interleaved rounds, %llu lines:\n", ROUNDS, want);
    printf("  bench_mmap --count (conc_mmap_count_lines, process) %8.4f s\n", count);
    printf("  wc -l (process)                                     %8.4f s\n", wc);
    printf("  ratio count_lines / wc -l                           %8.3f  (goal <= 0.5)\n",
           count / wc);
    printf("  conc_mmap_readline loop (in process)                %8.4f s\n", readline);
    printf("  getline loop (in process)                           %8.4f s\n", getl);
    printf("  ratio readline / getline                            %8.3f\n", readline / getl);
    report_row("count_lines vs wc -l (whole process)", count, wc, "s", 0.30, "lower", r_count,
               ROUNDS);
    report_row("readline loop vs getline loop", readline, getl, "s", 1.0, "lower", r_readline,
               ROUNDS);

    readline_vs_memchr(path, want);

    if (python) {
        double t_py[PY_ROUNDS], t_py_inner[PY_ROUNDS];
        for (int r = 0; r < PY_ROUNDS; r++) {
            char out[512];
            unsigned long long got_py = 0;
            t_py[r] = run_process(py_argv, &got_py, out);
            char *comma = strstr(out, "processed, ");
            check_count("python mmap readline", got_py, want);
            t_py_inner[r] = comma ? strtod(comma + 11, NULL) : t_py[r];
        }
        double py = median(t_py, PY_ROUNDS), py_inner = median(t_py_inner, PY_ROUNDS);
        printf("median of %d rounds of the document's Python mmap readline program:\n",
               PY_ROUNDS);
        printf("  python3 (process)                                   %8.4f s\n", py);
        printf("  python3 (its own perf_counter)                      %8.4f s\n", py_inner);
        printf("  ratio count_lines process / python process          %8.4f\n", count / py);
        printf("  ratio readline loop / python perf_counter           %8.4f\n",
               readline / py_inner);
        unlink(py_path);
    } else {
        printf("python3 not found: the Python comparison is skipped\n");
    }
    return 0;
}
