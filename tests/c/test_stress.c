/* Stress and fault tests: many threads spawned, joined and detached from
 * several threads at once; many maps opened and closed; descriptors, heap
 * and RSS the same before and after. Each case runs in its own forked
 * child (check.h).
 *
 * The counts are the same under valgrind and the sanitizers (the whole
 * file takes about 10 s under valgrind); only the RSS check is skipped
 * there. */
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

/* ---- what the process holds ------------------------------------------ */

/* Entries of /proc/self/fd (less the one opendir holds while counting). */
static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1;
}

/* Entries of /dev/shm whose name starts with `prefix`. */
__attribute__((unused)) static int shm_entries(const char *prefix) {
    DIR *d = opendir("/dev/shm");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    size_t len = strlen(prefix);
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, len) == 0) n++;
    closedir(d);
    return n;
}

/* Resident set size in KiB (VmRSS). */
static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

/* Heap bytes in use, over every malloc arena. */
static size_t heap_in_use(void) {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- spawn/join/detach from 8 threads at once ------------------------- */

enum { DRIVERS = 8, DETACH_EVERY = 7 };

static atomic_long detached_done;

static void *add_one(void *arg) { return (void *)((uintptr_t)arg + 1); }

static void *detached_body(void *arg) {
    (void)arg;
    atomic_fetch_add(&detached_done, 1);
    return NULL;
}

typedef struct {
    int cycles;
    int failures;
    long detached;
} driver_ctx;

/* One driver: `cycles` spawns, each joined (checking the result) or, every
 * DETACH_EVERY-th, detached; the spent handle must then be refused. */
static void *driver(void *arg) {
    driver_ctx *c = (driver_ctx *)arg;
    for (int i = 0; i < c->cycles; i++) {
        conc_thread t;
        if (i % DETACH_EVERY == DETACH_EVERY - 1) {
            if (conc_thread_spawn(&t, detached_body, NULL) != CONC_OK ||
                conc_thread_detach(t) != CONC_OK) {
                c->failures++;
                continue;
            }
            c->detached++;
        } else {
            void *r = NULL;
            if (conc_thread_spawn(&t, add_one, (void *)(uintptr_t)i) != CONC_OK ||
                conc_thread_join(t, &r) != CONC_OK || (uintptr_t)r != (uintptr_t)i + 1) {
                c->failures++;
                continue;
            }
        }
        if (conc_thread_join(t, NULL) != CONC_ERR_INVALID_STATE) c->failures++;
    }
    return NULL;
}

/* Runs `total` spawn cycles spread over DRIVERS threads; returns failures. */
static int spawn_storm(int total) {
    pthread_t th[DRIVERS];
    driver_ctx ctx[DRIVERS];
    long detached = 0;
    long before = atomic_load(&detached_done);
    for (int d = 0; d < DRIVERS; d++) {
        ctx[d] = (driver_ctx){total / DRIVERS + (d < total % DRIVERS), 0, 0};
        if (pthread_create(&th[d], NULL, driver, &ctx[d]) != 0) return 1000000;
    }
    int failures = 0;
    for (int d = 0; d < DRIVERS; d++) {
        pthread_join(th[d], NULL);
        failures += ctx[d].failures;
        detached += ctx[d].detached;
    }
    /* Detached threads end on their own: wait for every one (10 s at most). */
    double deadline = now_s() + 10;
    while (atomic_load(&detached_done) - before < detached && now_s() < deadline) conc_sleep_ms(1);
    if (atomic_load(&detached_done) - before != detached) failures++;
    /* Let the last detached threads finish exiting (after their body). */
    conc_sleep_ms(20);
    return failures;
}

TEST(ten_thousand_spawn_join_cycles_from_8_threads) {
    int total = 10000;
    double t0 = now_s();
    CHECK(spawn_storm(total) == 0);
    printf("  %d spawn cycles (1 in %d detached) from %d threads in %.2f s\n", total,
           DETACH_EVERY, DRIVERS, now_s() - t0);
}

/* ---- maps opened and closed ------------------------------------------- */

static char map_path[64];

static void make_map_file(void) {
    snprintf(map_path, sizeof map_path, "/tmp/conc_stress_%ld.txt", (long)getpid());
    FILE *f = fopen(map_path, "w");
    for (int i = 0; i < 1000; i++) fprintf(f, "line %d\n", i);
    fclose(f);
}

/* Opens, reads and closes `n` maps of a file and `n` anonymous maps. */
static int map_storm(int n) {
    int failures = 0;
    for (int i = 0; i < n; i++) {
        conc_mmap *m = NULL;
        uint64_t lines = 0;
        if (conc_mmap_open(&m, map_path, CONC_ACCESS_READ) != CONC_OK ||
            conc_mmap_count_lines(m, &lines) != CONC_OK || lines != 1000 ||
            conc_mmap_close(m) != CONC_OK)
            failures++;
        if (conc_mmap_anonymous(&m, 4096 * (1 + i % 4)) != CONC_OK) {
            failures++;
            continue;
        }
        conc_mmap_data_mut(m)[0] = 1;
        if (conc_mmap_close(m) != CONC_OK) failures++;
    }
    return failures;
}

TEST(many_maps_opened_and_closed) {
    make_map_file();
    int n = 5000;
    double t0 = now_s();
    CHECK(map_storm(n) == 0);
    printf("  %d file maps and %d anonymous maps in %.2f s\n", n, n, now_s() - t0);
    unlink(map_path);
}

/* ---- nothing is kept ------------------------------------------------- */

/* One round of everything above, at `scale` percent of the full counts. */
static int workload(int percent) {
    return spawn_storm(10000 * percent / 100) + map_storm(5000 * percent / 100);
}

TEST(descriptors_heap_and_rss_are_the_same_after) {
    make_map_file();
    /* A warm-up round reaches the steady state: the thread registry's
     * table, glibc's cache of thread stacks, one malloc arena per thread. */
    CHECK(workload(20) == 0);
    int fds0 = open_fds();
    long rss0 = rss_kib();
    size_t heap0 = heap_in_use();
    CHECK(workload(100) == 0);
    int fds1 = open_fds();
    long rss1 = rss_kib();
    size_t heap1 = heap_in_use();
    printf("  descriptors %d -> %d, heap in use %zu -> %zu bytes, RSS %ld -> %ld KiB\n", fds0,
           fds1, heap0, heap1, rss0, rss1);
    CHECK(fds0 > 0 && fds1 == fds0);
    /* Heap bytes in use, every arena (mallinfo2), within 64 KiB: glibc
     * counts the chunks cached in each thread's tcache as in use, so the
     * figure drifts with no leak (measured: +18 KiB on the first full
     * round after the warm-up, then 1-6 KiB a round, while valgrind finds
     * the same 220 bytes in use at exit after 2 rounds or 5). A leak of 7
     * bytes a cycle (10,000 spawns and 10,000 maps) would show. The
     * sanitizers and valgrind replace malloc, so mallinfo2 reports nothing
     * there; they check leaks themselves. */
    CHECK(heap1 <= heap0 + 64 * 1024);
    /* RSS within 2 MiB: freed memory stays resident below glibc's trim
     * threshold (128 KiB) in each of up to 16 arenas (8 per core on this
     * 2-core machine), and page granularity. A leak of 200 bytes a cycle
     * would show. The sanitizers and valgrind keep freed memory in a
     * quarantine, so RSS is not meaningful there. */
    SKIP_IF(CHECK_ASAN || CHECK_TSAN || check_under_valgrind_(),
            "freed memory is quarantined by the checker, so RSS grows by design");
    CHECK(rss1 <= rss0 + 2048);
    unlink(map_path);
}

int main(void) {
    RUN(ten_thousand_spawn_join_cycles_from_8_threads);
    RUN(many_maps_opened_and_closed);
    RUN(descriptors_heap_and_rss_are_the_same_after);
    return CHECK_SUMMARY();
}
