/* make sanitize: tsan.
 * Stress and fault tests: many threads spawned, joined and detached from
 * several threads at once; many maps opened and closed; many segments
 * created and unlinked; descriptors, /dev/shm entries, heap and RSS the
 * same before and after; a child killed while it writes a list, and a
 * creator killed before it unlinks. Each case runs in its own forked
 * child (check.h).
 *
 * The counts are the same under valgrind and the sanitizers (the whole
 * file takes about 10 s under valgrind); only the RSS check is skipped
 * there. */
#include "check.h"
#include "shm_snapshot.h"

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
static int shm_entries(const char *prefix) {
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

/* ---- segments created and unlinked ----------------------------------- */

/* This run's segment names start with it, so that /dev/shm entries of
 * other programs running meanwhile are not counted. */
static char shm_prefix[32];

static void set_shm_prefix(void) {
    snprintf(shm_prefix, sizeof shm_prefix, "cst_%ld_", (long)getpid());
}

/* Creates, writes, reattaches and unlinks `n` segments: named ones (this
 * run's prefix) and, every 4th, random `psm_` ones, whose names are
 * checked gone afterwards. Returns failures. */
static int shm_storm(int n) {
    int failures = 0;
    for (int i = 0; i < n; i++) {
        char name[64];
        int random_name = i % 4 == 3;
        snprintf(name, sizeof name, "%s%d", shm_prefix, i);
        conc_shm *s = NULL;
        size_t size = 64 + (size_t)(i % 5) * 4096;
        if (conc_shm_create(&s, random_name ? NULL : name, size) != CONC_OK) {
            failures++;
            continue;
        }
        snprintf(name, sizeof name, "%s", conc_shm_name(s));
        conc_shm_buf(s)[size - 1] = (uint8_t)i;
        conc_shm *again = NULL;
        if (conc_shm_open(&again, name) != CONC_OK || conc_shm_buf(again)[size - 1] != (uint8_t)i ||
            conc_shm_close(again) != CONC_OK)
            failures++;
        if (conc_shm_unlink(s) != CONC_OK || conc_shm_close(s) != CONC_OK) failures++;
        char path[96];
        snprintf(path, sizeof path, "/dev/shm/%s", name);
        if (access(path, F_OK) == 0) failures++;
    }
    return failures;
}

TEST(ten_thousand_segments_created_and_unlinked) {
    set_shm_prefix();
    int before = shm_entries(shm_prefix);
    double t0 = now_s();
    CHECK(shm_storm(10000) == 0);
    printf("  10000 segments (1 in 4 with a random name) in %.2f s\n", now_s() - t0);
    CHECK(before == 0 && shm_entries(shm_prefix) == 0);
}

/* ---- nothing is kept ------------------------------------------------- */

/* One round of everything above, at `percent` percent of the full counts. */
static int workload(int percent) {
    return spawn_storm(10000 * percent / 100) + map_storm(5000 * percent / 100) +
           shm_storm(10000 * percent / 100);
}

TEST(descriptors_heap_and_rss_are_the_same_after) {
    make_map_file();
    set_shm_prefix();
    /* A warm-up round reaches the steady state: the thread registry's
     * table, glibc's cache of thread stacks, one malloc arena per thread. */
    CHECK(workload(20) == 0);
    int fds0 = open_fds();
    int shm0 = shm_entries(shm_prefix);
    long rss0 = rss_kib();
    size_t heap0 = heap_in_use();
    CHECK(workload(100) == 0);
    int fds1 = open_fds();
    int shm1 = shm_entries(shm_prefix);
    long rss1 = rss_kib();
    size_t heap1 = heap_in_use();
    printf("  descriptors %d -> %d, /dev/shm entries %d -> %d, heap in use %zu -> %zu bytes, "
           "RSS %ld -> %ld KiB\n",
           fds0, fds1, shm0, shm1, heap0, heap1, rss0, rss1);
    CHECK(fds0 > 0 && fds1 == fds0);
    CHECK(shm0 == 0 && shm1 == 0);
    /* Heap bytes in use, every arena (mallinfo2), within 64 KiB: glibc
     * counts the chunks cached in each thread's tcache as in use, so the
     * figure drifts with no leak (measured: +18 KiB on the first full
     * round after the warm-up, then 1-6 KiB a round, while valgrind finds
     * the same 220 bytes in use at exit after 2 rounds or 5). A leak of 3
     * bytes a cycle (10,000 spawns, 10,000 maps, 10,000 segments) would
     * show. The
     * sanitizers and valgrind replace malloc, so mallinfo2 reports nothing
     * there; they check leaks themselves. */
    CHECK(heap1 <= heap0 + 64 * 1024);
    /* RSS within 2 MiB: freed memory stays resident below glibc's trim
     * threshold (128 KiB) in each of up to 16 arenas (8 per core on this
     * 2-core machine), and page granularity. A leak of 70 bytes a cycle,
     * or one page of a segment in 300 left mapped, would show. The sanitizers and valgrind keep freed memory in a
     * quarantine, so RSS is not meaningful there. */
    SKIP_IF(CHECK_ASAN || CHECK_TSAN || check_under_valgrind_(),
            "freed memory is quarantined by the checker, so RSS grows by design");
    CHECK(rss1 <= rss0 + 2048);
    unlink(map_path);
}

/* ---- a writer killed in the middle of writing ------------------------- */

enum { LIST_LEN = 4096 };

/* Round r's value of element i: both halves depend on the round, so a
 * torn write (halves of two rounds) is seen. Round 0 is the start. */
static int64_t round_value(int64_t round, size_t i) {
    return (int64_t)(((uint64_t)round << 32) | ((((uint64_t)round * 2654435761u) ^ i) & 0xffffffffu));
}

static int is_some_round(int64_t v, size_t i) {
    uint64_t round = (uint64_t)v >> 32;
    return round_value((int64_t)round, i) == v;
}

static int write_forever(void *arg) {
    conc_list *l = (conc_list *)arg;
    for (int64_t round = 1;; round++)
        for (size_t i = 0; i < LIST_LEN; i++)
            if (conc_list_set_i64(l, i, round_value(round, i)) != CONC_OK) return 1;
}

static int read_list_by_name(void *arg) {
    const char *name = (const char *)arg;
    conc_list *l = NULL;
    if (conc_list_open(&l, name) != CONC_OK) return 2;
    int bad = conc_list_len(l) != LIST_LEN || conc_list_type(l) != CONC_TYPE_I64;
    for (size_t i = 0; i < LIST_LEN && !bad; i++) {
        int64_t v = 0;
        if (conc_list_get_i64(l, i, &v) != CONC_OK || !is_some_round(v, i)) bad = 1;
    }
    conc_list_close(l);
    return bad ? 3 : 0;
}

TEST(a_writer_killed_mid_write_leaves_the_list_readable) {
    char name[64];
    snprintf(name, sizeof name, "cst_%ld_list", (long)getpid());
    conc_list *l = NULL;
    CHECK_OK(conc_list_create(&l, name, CONC_TYPE_I64, LIST_LEN));
    if (!l) return;
    for (int trial = 0; trial < 5; trial++) {
        for (size_t i = 0; i < LIST_LEN; i++) CHECK_OK(conc_list_set_i64(l, i, round_value(0, i)));
        conc_process p;
        CHECK_OK(conc_process_spawn(&p, write_forever, l));
        /* Wait until it is writing (element 0 leaves round 0), then a
         * little more, so that the kill lands in the middle of a round. */
        int64_t v = round_value(0, 0);
        double deadline = now_s() + 10;
        while (v == round_value(0, 0) && now_s() < deadline) conc_list_get_i64(l, 0, &v);
        conc_sleep_ms(1 + (uint64_t)trial * 3);
        CHECK(kill((pid_t)p.pid, SIGKILL) == 0);
        int code = -1;
        CHECK_OK(conc_process_join(p, &code));
        CHECK(code == 128 + SIGKILL);
        /* Every element is some round's whole value: old or new, not torn. */
        int64_t rounds_seen_lo = INT64_MAX, rounds_seen_hi = 0;
        for (size_t i = 0; i < LIST_LEN; i++) {
            CHECK_OK(conc_list_get_i64(l, i, &v));
            if (!is_some_round(v, i)) {
                fprintf(stderr, "  element %zu holds %#llx, no round's value\n", i,
                        (unsigned long long)v);
                check_failures_++;
                break;
            }
            int64_t r = (int64_t)((uint64_t)v >> 32);
            if (r < rounds_seen_lo) rounds_seen_lo = r;
            if (r > rounds_seen_hi) rounds_seen_hi = r;
        }
        printf("  trial %d: killed with elements of rounds %lld..%lld\n", trial,
               (long long)rounds_seen_lo, (long long)rounds_seen_hi);
        /* Another process attaches by name alone and reads it all. */
        CHECK_OK(conc_process_spawn(&p, read_list_by_name, name));
        CHECK_OK(conc_process_join(p, &code));
        CHECK(code == 0);
    }
    CHECK_OK(conc_list_unlink(l));
    CHECK_OK(conc_list_close(l));
}

/* ---- a creator killed before it unlinks ------------------------------- */

typedef struct {
    const char *name;
    atomic_int *ready; /* in an anonymous map shared with the child */
} creator_args;

static int create_then_hang(void *arg) {
    creator_args *a = (creator_args *)arg;
    conc_shm *s = NULL;
    if (conc_shm_create(&s, a->name, 8192) != CONC_OK) return 1;
    memcpy(conc_shm_buf(s), "left behind", 12);
    conc_shm_buf(s)[8191] = 0x5a;
    atomic_store(a->ready, 1);
    for (;;) pause(); /* never unlinks: killed here */
}

static int open_and_unlink(void *arg) {
    const char *name = (const char *)arg;
    conc_shm *s = NULL;
    if (conc_shm_open(&s, name) != CONC_OK) return 2;
    int bad = conc_shm_size(s) != 8192 || memcmp(conc_shm_buf(s), "left behind", 12) != 0 ||
              conc_shm_buf(s)[8191] != 0x5a;
    if (conc_shm_close(s) != CONC_OK) bad = 1;
    if (conc_shm_unlink_name(name) != CONC_OK) return 3;
    return bad ? 4 : 0;
}

TEST(a_creator_killed_before_unlink_leaves_a_segment_others_can_remove) {
    char name[64];
    snprintf(name, sizeof name, "/cst_%ld_orphan", (long)getpid());
    conc_mmap *flag_map = NULL;
    CHECK_OK(conc_mmap_anonymous(&flag_map, sizeof(atomic_int)));
    if (!flag_map) return;
    atomic_int *ready = (atomic_int *)(void *)conc_mmap_data_mut(flag_map);
    creator_args a = {name, ready};
    conc_process creator;
    CHECK_OK(conc_process_spawn(&creator, create_then_hang, &a));
    double deadline = now_s() + 10;
    while (!atomic_load(ready) && now_s() < deadline) conc_sleep_ms(1);
    CHECK(atomic_load(ready) == 1);
    CHECK(kill((pid_t)creator.pid, SIGKILL) == 0);
    int code = -1;
    CHECK_OK(conc_process_join(creator, &code));
    CHECK(code == 128 + SIGKILL);
    char path[96];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    CHECK(access(path, F_OK) == 0); /* the name outlives its creator */
    /* Another process opens it by name, finds the data, unlinks it. */
    conc_process other;
    CHECK_OK(conc_process_spawn(&other, open_and_unlink, name));
    CHECK_OK(conc_process_join(other, &code));
    CHECK(code == 0);
    CHECK(access(path, F_OK) != 0);
    conc_shm *gone = NULL;
    CHECK_STATUS(conc_shm_open(&gone, name), CONC_ERR_NOT_FOUND);
    CHECK_OK(conc_mmap_close(flag_map));
    shm_unlink(name); /* in case a check above failed */
}

int main(void) {
    shm_snapshot_begin(); /* alone in /dev/shm among the conc tests, and left as found */
    RUN(ten_thousand_spawn_join_cycles_from_8_threads);
    RUN(many_maps_opened_and_closed);
    RUN(ten_thousand_segments_created_and_unlinked);
    RUN(descriptors_heap_and_rss_are_the_same_after);
    RUN(a_writer_killed_mid_write_leaves_the_list_readable);
    RUN(a_creator_killed_before_unlink_leaves_a_segment_others_can_remove);
    return shm_snapshot_end(CHECK_SUMMARY());
}
