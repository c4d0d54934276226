/* MMap example 3: count the lines of a large file three ways and time
 * each, like the course's speed_mmap.py and speed_normal.py:
 *
 *   1. a readline loop over a memory map (speed_mmap.py);
 *   2. the "normal file statements": a buffered getline loop
 *      (speed_normal.py's `for line in file_obj`);
 *   3. conc_mmap_count_lines, the fast path (vector instructions, and
 *      every core on large files).
 *
 * Usage: mmap_example3 [FILE]. Without FILE it writes a 1,000,000-line
 * temporary file in $TMPDIR (or /tmp) and removes it afterwards. The
 * benchmark (make bench) does the same on the document's 10,000,000 lines.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conc.h"

static double perf_counter(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(void) {
    fprintf(stderr, "%s\n", conc_last_error_message());
    exit(1);
}

/* speed_mmap.py: for line in iter(map_file.readline, b""): count += 1 */
static uint64_t mmap_count_lines(const char *filename) {
    uint64_t count = 0;
    conc_mmap *map_file;
    if (conc_mmap_open(&map_file, filename, CONC_ACCESS_READ) != CONC_OK) fail();
    const uint8_t *line;
    size_t len;
    while (conc_mmap_readline(map_file, &line, &len) == CONC_OK && len > 0) count++;
    conc_mmap_close(map_file);
    return count;
}

/* speed_normal.py: for line in file_obj: count += 1 */
static uint64_t count_lines(const char *filename) {
    uint64_t count = 0;
    FILE *file_obj = fopen(filename, "r");
    if (!file_obj) {
        perror(filename);
        exit(1);
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, file_obj) > 0) count++;
    free(line);
    fclose(file_obj);
    return count;
}

/* The fast path. */
static uint64_t conc_count_lines(const char *filename) {
    uint64_t count = 0;
    conc_mmap *map_file;
    if (conc_mmap_open(&map_file, filename, CONC_ACCESS_READ) != CONC_OK) fail();
    if (conc_mmap_count_lines(map_file, &count) != CONC_OK) fail();
    conc_mmap_close(map_file);
    return count;
}

/* Prints x as Python's str(float) does: the shortest digits that read
 * back as x, with ".0" if that is an integer. */
static void print_float(double x) {
    char buf[32];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    printf("%s%s", buf, strpbrk(buf, ".en") ? "" : ".0");
}

static void run(const char *label, uint64_t (*counter)(const char *), const char *filename) {
    printf("%s\n", label);
    double start = perf_counter();
    uint64_t count = counter(filename);
    double end = perf_counter();
    /* print(f'{count} lines processed, {end - start}') */
    printf("%llu lines processed, ", (unsigned long long)count);
    print_float(end - start);
    printf("\n\n");
}

/* Writes a 1,000,000-line file to a new temporary path. */
static void make_large_file(char *path, size_t cap) {
    const char *dir = getenv("TMPDIR");
    snprintf(path, cap, "%s/conc_large_XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
    if (!f) {
        perror("temporary file");
        exit(1);
    }
    for (int i = 1; i <= 1000000; i++) {
        fprintf(f, "line %07d of large.txt: the quick brown fox jumps over the dog\n", i);
    }
    if (fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

int main(int argc, char **argv) {
    char tmp[512];
    const char *filename = argv[1];
    if (argc < 2) {
        make_large_file(tmp, sizeof tmp);
        filename = tmp;
    }
    run("speed_mmap: a conc_mmap_readline loop", mmap_count_lines, filename);
    run("speed_normal: a getline loop (normal file statements)", count_lines, filename);
    run("conc_mmap_count_lines: the fast path", conc_count_lines, filename);
    if (argc < 2) unlink(tmp);
    return 0;
}
