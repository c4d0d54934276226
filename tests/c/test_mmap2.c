/* C tests of the 0.2 additions to memory-mapped files: conc_mmap_create,
 * read, write, write_byte, move, resize and advise; CONC_ERR_IO instead of
 * SIGBUS when the file shrinks under a map (and the program's own SIGBUS
 * handling left as it was); conc_mmap_open waiting for a lease holder. */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#define PATH_CAP 256

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A fresh temporary path that does not exist. */
static void fresh_path(char path[PATH_CAP]) {
    const char *dir = getenv("TMPDIR");
    snprintf(path, PATH_CAP, "%s/conc_test_mmap2_XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        exit(2);
    }
    close(fd);
    unlink(path);
}

/* Writes `len` bytes to a new temporary file. */
static void make_file(char path[PATH_CAP], const void *data, size_t len) {
    fresh_path(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        perror("open");
        exit(2);
    }
    const char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);
        if (n <= 0) {
            perror("write");
            exit(2);
        }
        done += (size_t)n;
    }
    close(fd);
}

static long long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

/* ---- NULL, closed handles, bad enum values ---------------------------- */

TEST(null_and_closed_arguments) {
    conc_mmap *map = (conc_mmap *)1;
    char path[PATH_CAP];
    fresh_path(path);
    CHECK_STATUS(conc_mmap_create(NULL, path, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mmap_create(&map, NULL, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK(map == NULL);
    CHECK_MESSAGE_HAS("conc_mmap_create");
    uint8_t buf[4];
    size_t got = 7;
    CHECK_STATUS(conc_mmap_read(NULL, buf, 4, &got), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mmap_write(NULL, buf, 4), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mmap_write_byte(NULL, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mmap_move(NULL, 0, 0, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mmap_resize(NULL, 1), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mmap_advise(NULL, CONC_ADVICE_NORMAL, 0, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK(got == 7);

    CHECK_OK(conc_mmap_anonymous(&map, 100));
    CHECK_STATUS(conc_mmap_read(map, NULL, 4, &got), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("buf");
    CHECK_STATUS(conc_mmap_read(map, buf, 4, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("got");
    CHECK_OK(conc_mmap_read(map, NULL, 0, &got));
    CHECK(got == 0);
    CHECK_STATUS(conc_mmap_write(map, NULL, 4), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("data");
    CHECK_OK(conc_mmap_write(map, NULL, 0));
    CHECK(conc_mmap_tell(map) == 0);
    CHECK_STATUS(conc_mmap_advise(map, (conc_advice)5, 0, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_advice");
    CHECK_STATUS(conc_mmap_advise(map, (conc_advice)-1, 0, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK_OK(conc_mmap_close(map));

    /* A closed map is refused by every new call. */
    got = 7;
    CHECK_STATUS(conc_mmap_read(map, buf, 4, &got), CONC_ERR_INVALID_STATE);
    CHECK(got == 7);
    CHECK_STATUS(conc_mmap_write(map, buf, 4), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_mmap_write_byte(map, 1), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_mmap_move(map, 0, 0, 0), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_mmap_resize(map, 1), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_mmap_advise(map, CONC_ADVICE_NORMAL, 0, 0), CONC_ERR_INVALID_STATE);
    const uint8_t *line = NULL;
    size_t len = 0;
    CHECK_STATUS(conc_mmap_readline(map, &line, &len), CONC_ERR_INVALID_STATE);
    CHECK_STATUS(conc_mmap_readline(NULL, &line, &len), CONC_ERR_INVALID_ARGUMENT);
    CHECK(!exists(path));
}

/* ---- create ----------------------------------------------------------- */

TEST(create_makes_a_zero_filled_reserved_file) {
    char path[PATH_CAP];
    fresh_path(path);
    mode_t old = umask(022);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_create(&map, path, 10000));
    umask(old);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK((st.st_mode & 0777) == 0644);
    CHECK(st.st_size == 10000);
    /* Reserved: the blocks are allocated, not a hole. */
    CHECK((long long)st.st_blocks * 512 >= 10000);
    CHECK(conc_mmap_len(map) == 10000);
    CHECK(conc_mmap_data_mut(map) != NULL);
    for (size_t i = 0; i < 10000; i++) {
        if (conc_mmap_data(map)[i] != 0) {
            CHECK(!"zero-filled");
            break;
        }
    }
    CHECK_OK(conc_mmap_write(map, "hello", 5));
    CHECK_OK(conc_mmap_close(map));
    char back[6] = {0};
    FILE *f = fopen(path, "rb");
    CHECK(f && fread(back, 1, 5, f) == 5);
    if (f) fclose(f);
    CHECK(strcmp(back, "hello") == 0);

    /* It exists now. */
    map = (conc_mmap *)1;
    CHECK_STATUS(conc_mmap_create(&map, path, 10), CONC_ERR_ALREADY_EXISTS);
    CHECK(map == NULL);
    CHECK_MESSAGE_HAS(path);
    CHECK(file_size(path) == 10000);
    unlink(path);

    /* Size 0: an empty map. */
    CHECK_OK(conc_mmap_create(&map, path, 0));
    CHECK(conc_mmap_len(map) == 0);
    CHECK(conc_mmap_data(map) != NULL);
    CHECK(file_size(path) == 0);
    CHECK_OK(conc_mmap_close(map));
    unlink(path);

    /* A missing directory. */
    CHECK_STATUS(conc_mmap_create(&map, "/nonexistent-conc-dir/x", 1), CONC_ERR_NOT_FOUND);
}

TEST(create_failure_leaves_no_file) {
    char path[PATH_CAP];
    fresh_path(path);
    conc_mmap *map = (conc_mmap *)1;
    /* Too large for any file system here. */
    CHECK_STATUS(conc_mmap_create(&map, path, (size_t)1 << 62), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(map == NULL);
    CHECK(!exists(path));
    /* A "full disk": the file size limit makes posix_fallocate fail with
     * EFBIG (SIGXFSZ ignored, as the OS would otherwise kill us). */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {1 << 20, 1 << 20};
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    CHECK_STATUS(conc_mmap_create(&map, path, 4 << 20), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK_MESSAGE_HAS("reserve");
    CHECK(!exists(path));
    /* And resize of a created map: refused, the file keeps its size. */
    CHECK_OK(conc_mmap_create(&map, path, 4096));
    CHECK_STATUS(conc_mmap_resize(map, 8 << 20), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(file_size(path) == 4096);
    CHECK(conc_mmap_len(map) == 4096);
    CHECK_OK(conc_mmap_resize(map, 8192));
    CHECK(file_size(path) == 8192);
    CHECK_OK(conc_mmap_close(map));
    unlink(path);
}

/* ---- read, write, write_byte, move ------------------------------------ */

TEST(read_write_and_move_follow_python) {
    char path[PATH_CAP];
    make_file(path, "0123456789", 10);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_WRITE));
    char buf[32];
    size_t got = 0;
    CHECK_OK(conc_mmap_read(map, buf, 4, &got));
    CHECK(got == 4 && memcmp(buf, "0123", 4) == 0);
    CHECK(conc_mmap_tell(map) == 4);
    CHECK_OK(conc_mmap_write(map, "ab", 2));
    CHECK(conc_mmap_tell(map) == 6);
    CHECK_OK(conc_mmap_write_byte(map, 'Z'));
    CHECK(conc_mmap_tell(map) == 7);
    /* Past the end: nothing written, the cursor stays. */
    CHECK_STATUS(conc_mmap_write(map, "wxyz", 4), CONC_ERR_OUT_OF_RANGE);
    CHECK_MESSAGE_HAS("conc_mmap_write");
    CHECK(conc_mmap_tell(map) == 7);
    CHECK(memcmp(conc_mmap_data(map), "0123abZ789", 10) == 0);
    CHECK_OK(conc_mmap_write(map, "xyz", 3));
    CHECK_STATUS(conc_mmap_write_byte(map, '!'), CONC_ERR_OUT_OF_RANGE);
    CHECK_OK(conc_mmap_read(map, buf, sizeof buf, &got));
    CHECK(got == 0);
    /* read from the middle to the end: fewer than asked. */
    CHECK_OK(conc_mmap_seek(map, 8, CONC_SEEK_SET));
    CHECK_OK(conc_mmap_read(map, buf, sizeof buf, &got));
    CHECK(got == 2 && memcmp(buf, "yz", 2) == 0);
    /* move: overlap both ways, the cursor never moves. */
    CHECK_OK(conc_mmap_seek(map, 3, CONC_SEEK_SET));
    CHECK_OK(conc_mmap_move(map, 1, 0, 4));
    CHECK(memcmp(conc_mmap_data(map), "00123bZxyz", 10) == 0);
    CHECK_OK(conc_mmap_move(map, 0, 1, 4));
    CHECK(memcmp(conc_mmap_data(map), "01233bZxyz", 10) == 0);
    CHECK(conc_mmap_tell(map) == 3);
    CHECK_OK(conc_mmap_move(map, 10, 10, 0));
    CHECK_OK(conc_mmap_move(map, 0, 10, 0));
    CHECK_STATUS(conc_mmap_move(map, 11, 0, 0), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_mmap_move(map, 0, 11, 0), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_mmap_move(map, 5, 0, 6), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_mmap_move(map, 0, 5, 6), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_mmap_move(map, 0, UINT64_MAX, 1), CONC_ERR_OUT_OF_RANGE);
    CHECK_STATUS(conc_mmap_move(map, 1, 0, SIZE_MAX), CONC_ERR_OUT_OF_RANGE);
    CHECK(conc_mmap_tell(map) == 3);
    CHECK(memcmp(conc_mmap_data(map), "01233bZxyz", 10) == 0);
    CHECK_OK(conc_mmap_close(map));
    /* WRITE reaches the file. */
    FILE *f = fopen(path, "rb");
    CHECK(f && fread(buf, 1, 10, f) == 10);
    if (f) fclose(f);
    CHECK(memcmp(buf, "01233bZxyz", 10) == 0);

    /* COPY: writable, the file never changes. */
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_COPY));
    CHECK_OK(conc_mmap_write(map, "COPY", 4));
    CHECK_OK(conc_mmap_move(map, 6, 0, 4));
    CHECK(memcmp(conc_mmap_data(map), "COPY3bCOPY", 10) == 0);
    CHECK_OK(conc_mmap_close(map));
    f = fopen(path, "rb");
    CHECK(f && fread(buf, 1, 10, f) == 10);
    if (f) fclose(f);
    CHECK(memcmp(buf, "01233bZxyz", 10) == 0);

    /* READ: reads fine, every write refused. */
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    CHECK_STATUS(conc_mmap_write(map, "x", 1), CONC_ERR_PERMISSION_DENIED);
    CHECK_MESSAGE_HAS("read-only");
    CHECK_STATUS(conc_mmap_write_byte(map, 'x'), CONC_ERR_PERMISSION_DENIED);
    CHECK_STATUS(conc_mmap_move(map, 0, 1, 1), CONC_ERR_PERMISSION_DENIED);
    CHECK(conc_mmap_tell(map) == 0);
    CHECK_OK(conc_mmap_read(map, buf, 3, &got));
    CHECK(got == 3 && memcmp(buf, "012", 3) == 0);
    /* read into the map itself is allowed (a writable map's own bytes). */
    CHECK_OK(conc_mmap_close(map));
    CHECK_OK(conc_mmap_anonymous(&map, 64));
    memcpy(conc_mmap_data_mut(map), "abcdefgh", 8);
    CHECK_OK(conc_mmap_read(map, conc_mmap_data_mut(map) + 2, 4, &got));
    CHECK(memcmp(conc_mmap_data(map), "ababcdgh", 8) == 0);
    CHECK_OK(conc_mmap_write(map, conc_mmap_data(map) + 5, 3));
    CHECK(memcmp(conc_mmap_data(map), "ababdghh", 8) == 0);
    CHECK_OK(conc_mmap_close(map));
    unlink(path);
}

/* ---- resize ----------------------------------------------------------- */

TEST(resize_changes_the_file_and_clamps_the_cursor) {
    char path[PATH_CAP];
    fresh_path(path);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_create(&map, path, 100));
    CHECK_OK(conc_mmap_write(map, "keep", 4));
    CHECK_OK(conc_mmap_seek(map, 0, CONC_SEEK_END));
    long page = sysconf(_SC_PAGESIZE);
    size_t big = (size_t)(10 * page + 5);
    CHECK_OK(conc_mmap_resize(map, big));
    CHECK(conc_mmap_len(map) == big);
    CHECK(file_size(path) == (long long)big);
    CHECK(conc_mmap_tell(map) == 100);
    const uint8_t *d = conc_mmap_data(map);
    CHECK(memcmp(d, "keep", 4) == 0);
    int zeros = 1;
    for (size_t i = 4; i < big; i++) zeros &= d[i] == 0;
    CHECK(zeros);
    /* The new bytes are writable and reach the file. */
    conc_mmap_data_mut(map)[big - 1] = 'E';
    CHECK_OK(conc_mmap_flush(map));
    CHECK_OK(conc_mmap_resize(map, 50));
    CHECK(conc_mmap_tell(map) == 50);
    CHECK(file_size(path) == 50);
    CHECK_OK(conc_mmap_resize(map, 0));
    CHECK(conc_mmap_len(map) == 0 && conc_mmap_tell(map) == 0);
    CHECK(conc_mmap_data(map) != NULL);
    CHECK(file_size(path) == 0);
    CHECK_OK(conc_mmap_resize(map, 8));
    CHECK(memcmp(conc_mmap_data(map), "\0\0\0\0\0\0\0\0", 8) == 0);
    CHECK_OK(conc_mmap_close(map));
    CHECK(file_size(path) == 8);

    /* An opened whole file (open, or open_range at 0 with length 0). */
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_WRITE));
    CHECK_OK(conc_mmap_resize(map, 20));
    CHECK_OK(conc_mmap_close(map));
    CHECK(file_size(path) == 20);
    CHECK_OK(conc_mmap_open_range(&map, path, CONC_ACCESS_WRITE, 0, 0));
    CHECK_OK(conc_mmap_resize(map, 30));
    CHECK_OK(conc_mmap_close(map));
    CHECK(file_size(path) == 30);

    /* Refused: ranges, READ and COPY maps. */
    CHECK_OK(conc_mmap_open_range(&map, path, CONC_ACCESS_WRITE, 1, 0));
    CHECK_STATUS(conc_mmap_resize(map, 10), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("range");
    CHECK_OK(conc_mmap_close(map));
    CHECK_OK(conc_mmap_open_range(&map, path, CONC_ACCESS_WRITE, 0, 10));
    CHECK_STATUS(conc_mmap_resize(map, 10), CONC_ERR_INVALID_STATE);
    CHECK_OK(conc_mmap_close(map));
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    CHECK_STATUS(conc_mmap_resize(map, 10), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("CONC_ACCESS_READ");
    CHECK_OK(conc_mmap_close(map));
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_COPY));
    CHECK_STATUS(conc_mmap_resize(map, 10), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("CONC_ACCESS_COPY");
    CHECK_OK(conc_mmap_close(map));
    CHECK(file_size(path) == 30);
    unlink(path);
}

TEST(resize_of_an_anonymous_map_keeps_its_contents) {
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_anonymous(&map, 1000));
    for (int i = 0; i < 1000; i++) conc_mmap_data_mut(map)[i] = (uint8_t)(i * 7);
    CHECK_OK(conc_mmap_resize(map, 1 << 20));
    const uint8_t *d = conc_mmap_data(map);
    int ok = 1;
    for (int i = 0; i < 1000; i++) ok &= d[i] == (uint8_t)(i * 7);
    for (int i = 1000; i < (1 << 20); i++) ok &= d[i] == 0;
    CHECK(ok);
    conc_mmap_data_mut(map)[(1 << 20) - 1] = 1; /* no SIGBUS past the old size */
    CHECK_OK(conc_mmap_seek(map, 0, CONC_SEEK_END));
    CHECK_OK(conc_mmap_resize(map, 10));
    CHECK(conc_mmap_tell(map) == 10);
    d = conc_mmap_data(map);
    for (int i = 0; i < 10; i++) ok &= d[i] == (uint8_t)(i * 7);
    CHECK(ok);
    CHECK_OK(conc_mmap_resize(map, 0));
    CHECK(conc_mmap_len(map) == 0);
    CHECK_OK(conc_mmap_resize(map, 3));
    CHECK(memcmp(conc_mmap_data(map), "\0\0\0", 3) == 0);
    CHECK_OK(conc_mmap_close(map));
}

/* ---- advise ----------------------------------------------------------- */

TEST(advise_checks_ranges_and_drops_copy_changes) {
    long page = sysconf(_SC_PAGESIZE);
    size_t size = (size_t)(4 * page + 3);
    char *content = malloc(size);
    memset(content, 'a', size);
    char path[PATH_CAP];
    make_file(path, content, size);
    free(content);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_COPY));
    conc_advice all[] = {CONC_ADVICE_NORMAL, CONC_ADVICE_RANDOM, CONC_ADVICE_SEQUENTIAL,
                         CONC_ADVICE_WILLNEED, CONC_ADVICE_DONTNEED};
    for (int i = 0; i < 5; i++) {
        CHECK_OK(conc_mmap_advise(map, all[i], 0, 0));
        CHECK_OK(conc_mmap_advise(map, all[i], 1, 10));
        CHECK_OK(conc_mmap_advise(map, all[i], size, 0));
        CHECK_STATUS(conc_mmap_advise(map, all[i], size + 1, 0), CONC_ERR_OUT_OF_RANGE);
        CHECK_STATUS(conc_mmap_advise(map, all[i], size - 1, 2), CONC_ERR_OUT_OF_RANGE);
        CHECK_STATUS(conc_mmap_advise(map, all[i], 1, SIZE_MAX), CONC_ERR_OUT_OF_RANGE);
    }
    CHECK_MESSAGE_HAS("conc_mmap_advise");
    /* DONTNEED drops a COPY map's private changes in the pages it covers. */
    conc_mmap_data_mut(map)[page + 1] = 'Z';
    conc_mmap_data_mut(map)[3 * page] = 'Y';
    CHECK_OK(conc_mmap_advise(map, CONC_ADVICE_DONTNEED, (uint64_t)page, (size_t)page));
    CHECK(conc_mmap_data(map)[page + 1] == 'a');
    CHECK(conc_mmap_data(map)[3 * page] == 'Y');
    CHECK_OK(conc_mmap_close(map));
    /* An empty map: only the empty range. */
    char empty[PATH_CAP];
    make_file(empty, "", 0);
    CHECK_OK(conc_mmap_open(&map, empty, CONC_ACCESS_READ));
    CHECK_OK(conc_mmap_advise(map, CONC_ADVICE_WILLNEED, 0, 0));
    CHECK_STATUS(conc_mmap_advise(map, CONC_ADVICE_WILLNEED, 0, 1), CONC_ERR_OUT_OF_RANGE);
    CHECK_OK(conc_mmap_close(map));
    /* An anonymous map is shared memory: DONTNEED keeps its contents. */
    CHECK_OK(conc_mmap_anonymous(&map, (size_t)page));
    conc_mmap_data_mut(map)[5] = 'k';
    CHECK_OK(conc_mmap_advise(map, CONC_ADVICE_DONTNEED, 0, 0));
    CHECK(conc_mmap_data(map)[5] == 'k');
    CHECK_OK(conc_mmap_close(map));
    unlink(path);
    unlink(empty);
}

/* ---- a file that shrinks under the map ------------------------------- */

enum accessor { A_READ_BYTE, A_READLINE, A_READ, A_FIND, A_RFIND, A_COUNT_LINES, A_WRITE,
                A_WRITE_BYTE, A_MOVE, A_COUNT };
static const char *const accessor_name[A_COUNT] = {
    "read_byte", "readline", "read", "find", "rfind", "count_lines", "write", "write_byte",
    "move"};

/* One pass of the accessor over the whole map. */
static conc_status run_accessor(enum accessor a, conc_mmap *map, uint8_t *scratch, size_t size) {
    conc_status s = conc_mmap_seek(map, 0, CONC_SEEK_SET);
    if (s != CONC_OK) return s;
    uint8_t b;
    const uint8_t *line;
    size_t len, got;
    int64_t pos;
    uint64_t lines;
    switch (a) {
    case A_READ_BYTE:
        while ((s = conc_mmap_read_byte(map, &b)) == CONC_OK) {
        }
        return s == CONC_ERR_OUT_OF_RANGE ? CONC_OK : s;
    case A_READLINE:
        while ((s = conc_mmap_readline(map, &line, &len)) == CONC_OK && len > 0) {
        }
        return s;
    case A_READ:
        return conc_mmap_read(map, scratch, size, &got);
    case A_FIND:
        return conc_mmap_find(map, "#", 1, 0, &pos);
    case A_RFIND:
        return conc_mmap_rfind(map, "x", 1, 0, &pos);
    case A_COUNT_LINES:
        return conc_mmap_count_lines(map, &lines);
    case A_WRITE:
        return conc_mmap_write(map, scratch, size);
    case A_WRITE_BYTE:
        while ((s = conc_mmap_write_byte(map, 'w')) == CONC_OK) {
        }
        return s == CONC_ERR_OUT_OF_RANGE ? CONC_OK : s;
    case A_MOVE:
        return conc_mmap_move(map, 0, 1, size - 1);
    default:
        return CONC_ERR_INVALID_ARGUMENT;
    }
}

/* The truncation loop: a child process truncates the file (to one page)
 * while this process runs the accessor in a loop over the map. Every call
 * returns CONC_OK until the truncation, then CONC_ERR_IO, and the process
 * never dies of SIGBUS (the case's child would be reported "killed by
 * signal 7"). count_lines gets a map large enough for its threads. */
static void truncation_loop(enum accessor a) {
    /* valgrind runs the program on a synthetic CPU: a page replaced by
     * mmap(MAP_FIXED) inside a SIGBUS handler, and the faulting load run
     * again on return, are not reproduced faithfully there (the load is
     * not restarted as the kernel restarts it). */
    SKIP_IF(check_under_valgrind_(), "valgrind does not restart a repaired faulting load");
    long page = sysconf(_SC_PAGESIZE);
    size_t size = a == A_COUNT_LINES ? (size_t)24 << 20 : (size_t)(64 * page);
    uint8_t *content = malloc(size);
    uint8_t *scratch = malloc(size);
    for (size_t i = 0; i < size; i++) content[i] = i % 61 == 60 ? '\n' : 'x';
    memset(scratch, 'w', size);
    char path[PATH_CAP];
    make_file(path, content, size);
    free(content);
    int writes = a == A_WRITE || a == A_WRITE_BYTE || a == A_MOVE;
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, writes ? CONC_ACCESS_WRITE : CONC_ACCESS_READ));
    int go[2];
    CHECK(pipe(go) == 0);
    pid_t child = fork();
    if (child == 0) {
        char c;
        close(go[1]);
        if (read(go[0], &c, 1) != 1) _exit(3);
        usleep(20000);
        _exit(truncate(path, page) == 0 ? 0 : 4);
    }
    close(go[0]);
    conc_status s = CONC_OK;
    long rounds = 0;
    double deadline = now() + 60;
    CHECK(write(go[1], "g", 1) == 1);
    while (s == CONC_OK && now() < deadline) {
        s = run_accessor(a, map, scratch, size);
        rounds++;
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) &&
          WEXITSTATUS(status) == 0);
    if (s != CONC_ERR_IO) {
        fprintf(stderr, "  %s: %ld rounds, last status %d: %s\n", accessor_name[a], rounds,
                (int)s, conc_last_error_message());
    }
    CHECK_STATUS(s, CONC_ERR_IO);
    CHECK_MESSAGE_HAS("shrank under the map");
    CHECK_MESSAGE_HAS(accessor_name[a]);
    CHECK(conc_last_os_error() == 0);
    /* Damaged from now on: every accessor reports it. */
    for (int other = 0; other < A_COUNT; other++) {
        if (!writes && (other == A_WRITE || other == A_WRITE_BYTE || other == A_MOVE)) continue;
        CHECK_STATUS(run_accessor((enum accessor)other, map, scratch, size), CONC_ERR_IO);
    }
    CHECK_STATUS(conc_mmap_resize(map, 10), writes ? CONC_ERR_IO : CONC_ERR_INVALID_STATE);
    CHECK_OK(conc_mmap_close(map));
    free(scratch);
    close(go[1]);
    unlink(path);
}

TEST(truncation_read_byte) { truncation_loop(A_READ_BYTE); }
TEST(truncation_readline) { truncation_loop(A_READLINE); }
TEST(truncation_read) { truncation_loop(A_READ); }
TEST(truncation_find) { truncation_loop(A_FIND); }
TEST(truncation_rfind) { truncation_loop(A_RFIND); }
TEST(truncation_count_lines) { truncation_loop(A_COUNT_LINES); }
TEST(truncation_write) { truncation_loop(A_WRITE); }
TEST(truncation_write_byte) { truncation_loop(A_WRITE_BYTE); }
TEST(truncation_move) { truncation_loop(A_MOVE); }

/* ---- the program's own SIGBUS handling is left as it was ------------- */

static sigjmp_buf own_jump;
static volatile sig_atomic_t own_calls;
static void *volatile own_addr;

static void own_siginfo_handler(int sig, siginfo_t *info, void *context) {
    (void)context;
    own_calls++;
    own_addr = info->si_addr;
    siglongjmp(own_jump, sig);
}

static void own_plain_handler(int sig) {
    own_calls++;
    siglongjmp(own_jump, sig);
}

/* Maps a 3-page file, truncates it, then: a load through conc_mmap_data
 * reaches the program's handler; conc's accessor gets CONC_ERR_IO without
 * calling it. The handler is installed before the first map. */
static void own_handler_case(int siginfo) {
    SKIP_IF(check_under_valgrind_(), "valgrind delivers a file-backed SIGBUS differently");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (siginfo) {
        sa.sa_sigaction = own_siginfo_handler;
        sa.sa_flags = SA_SIGINFO;
    } else {
        sa.sa_handler = own_plain_handler;
    }
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGBUS, &sa, NULL) == 0);
    long page = sysconf(_SC_PAGESIZE);
    char *content = calloc(1, (size_t)(3 * page));
    char path[PATH_CAP];
    make_file(path, content, (size_t)(3 * page));
    free(content);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    CHECK(truncate(path, 0) == 0);
    const volatile uint8_t *data = conc_mmap_data(map);
    own_calls = 0;
    if (sigsetjmp(own_jump, 1) == 0) {
        uint8_t b = data[2 * page];
        (void)b;
        CHECK(!"the program's own load did not fault");
    }
    CHECK(own_calls == 1);
    if (siginfo) CHECK(own_addr == (void *)(data + 2 * page));
    /* conc's own access: CONC_ERR_IO, the program's handler not called. */
    int64_t pos = 0;
    CHECK_STATUS(conc_mmap_find(map, "q", 1, 0, &pos), CONC_ERR_IO);
    CHECK(own_calls == 1);
    /* Another page the program touches itself still faults into its
     * handler (page 1: conc repaired only what it touched... and find
     * touched everything, so map a fresh one). */
    CHECK_OK(conc_mmap_close(map));
    CHECK(truncate(path, 3 * page) == 0);
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    CHECK(truncate(path, 0) == 0);
    data = conc_mmap_data(map);
    if (sigsetjmp(own_jump, 1) == 0) {
        uint8_t b = data[page];
        (void)b;
        CHECK(!"the program's own load did not fault");
    }
    CHECK(own_calls == 2);
    CHECK_OK(conc_mmap_close(map));
    unlink(path);
}

TEST(own_siginfo_handler_sees_its_own_faults) { own_handler_case(1); }
TEST(own_plain_handler_sees_its_own_faults) { own_handler_case(0); }

TEST(default_and_ignored_sigbus_stay_as_they_were) {
    /* SIG_DFL: the program's own fault still kills it with SIGBUS (after
     * conc's handler is installed), and so does a SIGBUS sent to it. */
    for (int sent = 0; sent < 2; sent++) {
        pid_t pid = fork();
        if (pid == 0) {
            conc_mmap *map = NULL;
            if (conc_mmap_anonymous(&map, 100) != CONC_OK) _exit(3);
            if (sent) {
                raise(SIGBUS);
                _exit(5);
            }
            char path[PATH_CAP];
            long page = sysconf(_SC_PAGESIZE);
            char *content = calloc(1, (size_t)(2 * page));
            make_file(path, content, (size_t)(2 * page));
            free(content);
            conc_mmap *file = NULL;
            if (conc_mmap_open(&file, path, CONC_ACCESS_READ) != CONC_OK) _exit(3);
            if (truncate(path, 0) != 0) _exit(4);
            unlink(path);
            volatile const uint8_t *p = conc_mmap_data(file);
            uint8_t b = p[page];
            _exit(b == 0 ? 6 : 7);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS);
    }
    /* SIG_IGN: a sent SIGBUS is ignored as before. */
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGBUS, SIG_IGN);
        conc_mmap *map = NULL;
        if (conc_mmap_anonymous(&map, 100) != CONC_OK) _exit(3);
        raise(SIGBUS);
        kill(getpid(), SIGBUS);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ---- open and leases --------------------------------------------------- */

static volatile sig_atomic_t lease_broken;
static void on_lease_break(int sig) {
    (void)sig;
    lease_broken = 1;
}

TEST(open_waits_for_a_lease_holder) {
    char path[PATH_CAP];
    make_file(path, "leased\n", 7);
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t holder = fork();
    if (holder == 0) {
        /* Take a read lease, which an open for writing breaks; let go
         * 300 ms after the break starts. */
        signal(SIGIO, on_lease_break);
        int fd = open(path, O_RDONLY);
        if (fd < 0 || fcntl(fd, F_SETLEASE, F_RDLCK) != 0) {
            char no = 'n';
            (void)!write(ready[1], &no, 1);
            _exit(3);
        }
        char yes = 'y';
        (void)!write(ready[1], &yes, 1);
        for (int i = 0; i < 1000 && !lease_broken; i++) usleep(10000);
        usleep(300000);
        fcntl(fd, F_SETLEASE, F_UNLCK);
        _exit(lease_broken ? 0 : 4);
    }
    char c = 0;
    CHECK(read(ready[0], &c, 1) == 1);
    if (c != 'y') {
        printf("  skipped here: leases are not available (F_SETLEASE failed)\n");
        waitpid(holder, NULL, 0);
        unlink(path);
        return;
    }
    double t0 = now();
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_WRITE));
    double waited = now() - t0;
    CHECK(waited > 0.2);
    CHECK(map != NULL && conc_mmap_len(map) == 7);
    CHECK_OK(conc_mmap_close(map));
    int status = 0;
    CHECK(waitpid(holder, &status, 0) == holder);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* A FIFO is still refused at once, never waited on. */
    char fifo[PATH_CAP];
    fresh_path(fifo);
    CHECK(mkfifo(fifo, 0600) == 0);
    t0 = now();
    CHECK_STATUS(conc_mmap_open(&map, fifo, CONC_ACCESS_READ), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("not a regular file");
    CHECK_STATUS(conc_mmap_open(&map, fifo, CONC_ACCESS_WRITE), CONC_ERR_INVALID_ARGUMENT);
    CHECK(now() - t0 < 1.0);
    unlink(fifo);
    unlink(path);
}

int main(void) {
    RUN(null_and_closed_arguments);
    RUN(create_makes_a_zero_filled_reserved_file);
    RUN(create_failure_leaves_no_file);
    RUN(read_write_and_move_follow_python);
    RUN(resize_changes_the_file_and_clamps_the_cursor);
    RUN(resize_of_an_anonymous_map_keeps_its_contents);
    RUN(advise_checks_ranges_and_drops_copy_changes);
    RUN(truncation_read_byte);
    RUN(truncation_readline);
    RUN(truncation_read);
    RUN(truncation_find);
    RUN(truncation_rfind);
    RUN(truncation_count_lines);
    RUN(truncation_write);
    RUN(truncation_write_byte);
    RUN(truncation_move);
    RUN(own_siginfo_handler_sees_its_own_faults);
    RUN(own_plain_handler_sees_its_own_faults);
    RUN(default_and_ignored_sigbus_stay_as_they_were);
    RUN(open_waits_for_a_lease_holder);
    return CHECK_SUMMARY();
}
