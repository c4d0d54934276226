/* C tests of the memory-mapped file API (conc_mmap_*), against conc.h. */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>

/* ---- helpers ---------------------------------------------------------- */

#define PATH_CAP 256

/* Writes `len` bytes to a new temporary file; its path goes to `path`. */
static void make_file(char path[PATH_CAP], const void *data, size_t len) {
    const char *dir = getenv("TMPDIR");
    snprintf(path, PATH_CAP, "%s/conc_test_mmap_XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
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

/* Reads `len` bytes at `offset` of `path` with stdio. */
static void fread_at(const char *path, long offset, void *buf, size_t len) {
    FILE *f = fopen(path, "rb");
    if (!f || fseek(f, offset, SEEK_SET) != 0 || fread(buf, 1, len, f) != len) {
        perror("fread_at");
        exit(2);
    }
    fclose(f);
}

/* The number of lines a readline loop returns from the cursor on; checks
 * that the lines tile the map exactly. */
static uint64_t readline_count(conc_mmap *map) {
    uint64_t count = 0;
    size_t total = (size_t)conc_mmap_tell(map);
    const uint8_t *expect = conc_mmap_data(map) + total;
    for (;;) {
        const uint8_t *line = NULL;
        size_t len = 0;
        conc_status s = conc_mmap_readline(map, &line, &len);
        if (s != CONC_OK) {
            fprintf(stderr, "  readline failed: %s\n", conc_last_error_message());
            check_failures_++;
            return count;
        }
        if (len == 0) break;
        if (line != expect) check_failures_++;
        const uint8_t *nl = memchr(line, '\n', len);
        if (nl && nl != line + len - 1) check_failures_++;
        expect += len;
        total += len;
        count++;
    }
    if (total != conc_mmap_len(map)) check_failures_++;
    return count;
}

static uint64_t naive_lines(const uint8_t *p, size_t len) {
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) n += p[i] == '\n';
    return n + (len > 0 && p[len - 1] != '\n');
}

static uint64_t count_lines(const conc_mmap *map) {
    uint64_t n = UINT64_MAX;
    CHECK_OK(conc_mmap_count_lines(map, &n));
    return n;
}

/* ---- NULL arguments and unknown enum values --------------------------- */

TEST(null_arguments) {
    char path[PATH_CAP];
    make_file(path, "a\nb", 3);
    conc_mmap *map = (conc_mmap *)&map; /* must be overwritten with NULL */
    CHECK_STATUS(conc_mmap_open(NULL, path, CONC_ACCESS_READ), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_mmap_open: argument `out` is NULL");
    CHECK_STATUS(conc_mmap_open(&map, NULL, CONC_ACCESS_READ), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("`path`");
    CHECK(map == NULL);
    CHECK_STATUS(conc_mmap_open_range(NULL, path, CONC_ACCESS_READ, 0, 0),
                 CONC_ERR_INVALID_ARGUMENT);
    map = (conc_mmap *)&map;
    CHECK_STATUS(conc_mmap_open_range(&map, NULL, CONC_ACCESS_READ, 0, 0),
                 CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_mmap_open_range");
    CHECK(map == NULL);
    CHECK_STATUS(conc_mmap_anonymous(NULL, 10), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_mmap_anonymous");

    /* Accessors given NULL return NULL / 0. */
    CHECK(conc_mmap_data(NULL) == NULL);
    CHECK(conc_mmap_data_mut(NULL) == NULL);
    CHECK(conc_mmap_len(NULL) == 0);
    CHECK(conc_mmap_tell(NULL) == 0);

    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    uint8_t byte = 77;
    const uint8_t *line = (const uint8_t *)path;
    size_t len = 77;
    int64_t pos = 77;
    uint64_t lines = 77;
    CHECK_STATUS(conc_mmap_read_byte(NULL, &byte), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_mmap_read_byte: argument `map` is NULL");
    CHECK_STATUS(conc_mmap_read_byte(map, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("`byte`");
    CHECK_STATUS(conc_mmap_readline(NULL, &line, &len), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mmap_readline(map, NULL, &len), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_mmap_readline: argument `line` is NULL");
    CHECK_STATUS(conc_mmap_readline(map, &line, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("`len`");
    CHECK_STATUS(conc_mmap_seek(NULL, 0, CONC_SEEK_SET), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_mmap_seek");
    CHECK_STATUS(conc_mmap_find(NULL, "a", 1, 0, &pos), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mmap_find(map, NULL, 1, 0, &pos), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_mmap_find: argument `needle` is NULL");
    CHECK_STATUS(conc_mmap_find(map, "a", 1, 0, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("`position`");
    CHECK_STATUS(conc_mmap_rfind(NULL, "a", 1, 0, &pos), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mmap_rfind(map, NULL, 1, 0, &pos), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_mmap_rfind");
    CHECK_STATUS(conc_mmap_rfind(map, "a", 1, 0, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mmap_count_lines(NULL, &lines), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_mmap_count_lines");
    CHECK_STATUS(conc_mmap_count_lines(map, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_mmap_flush(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_mmap_flush");
    /* Out-params are written only on success. */
    CHECK(byte == 77 && len == 77 && pos == 77 && lines == 77);
    CHECK(line == (const uint8_t *)path);
    CHECK(conc_mmap_tell(map) == 0);
    /* A NULL needle is fine when it is empty. */
    CHECK_OK(conc_mmap_find(map, NULL, 0, 1, &pos));
    CHECK(pos == 1);
    CHECK_OK(conc_mmap_close(map));
    CHECK_OK(conc_mmap_close(NULL));
    unlink(path);
}

TEST(unknown_access_and_whence) {
    char path[PATH_CAP];
    make_file(path, "abc\n", 4);
    int bad[] = {3, 99, -1};
    for (int i = 0; i < 3; i++) {
        conc_mmap *map = (conc_mmap *)&map;
        CHECK_STATUS(conc_mmap_open(&map, path, (conc_access)bad[i]), CONC_ERR_INVALID_ARGUMENT);
        CHECK(map == NULL);
        CHECK_MESSAGE_HAS("conc_mmap_open(\"");
        CHECK_MESSAGE_HAS("conc_access");
        map = (conc_mmap *)&map;
        CHECK_STATUS(conc_mmap_open_range(&map, path, (conc_access)bad[i], 1, 1),
                     CONC_ERR_INVALID_ARGUMENT);
        CHECK(map == NULL);
        CHECK_MESSAGE_HAS("conc_mmap_open_range(\"");
    }
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    CHECK_OK(conc_mmap_seek(map, 2, CONC_SEEK_SET));
    for (int i = 0; i < 3; i++) {
        CHECK_STATUS(conc_mmap_seek(map, 0, (conc_whence)bad[i]), CONC_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE_HAS("conc_whence");
        CHECK_MESSAGE_HAS(path);
        CHECK(conc_mmap_tell(map) == 2);
    }
    CHECK_OK(conc_mmap_close(map));
    unlink(path);
}

/* ---- opening: errors and ranges --------------------------------------- */

TEST(missing_file_and_directory) {
    conc_mmap *map = (conc_mmap *)&map;
    CHECK_STATUS(conc_mmap_open(&map, "/nonexistent-conc/data.txt", CONC_ACCESS_READ),
                 CONC_ERR_NOT_FOUND);
    CHECK(map == NULL);
    CHECK(strcmp(conc_last_error_message(),
                 "conc_mmap_open(\"/nonexistent-conc/data.txt\"): No such file or directory "
                 "(ENOENT)") == 0);
    CHECK(conc_last_os_error() == ENOENT);
    CHECK_STATUS(conc_mmap_open_range(&map, "no-such-file.txt", CONC_ACCESS_WRITE, 0, 0),
                 CONC_ERR_NOT_FOUND);
    CHECK_MESSAGE_HAS("conc_mmap_open_range(\"no-such-file.txt\"");
    CHECK_STATUS(conc_mmap_open(&map, "", CONC_ACCESS_READ), CONC_ERR_NOT_FOUND);

    const char *dir = "/tmp";
    conc_access modes[] = {CONC_ACCESS_READ, CONC_ACCESS_WRITE, CONC_ACCESS_COPY};
    for (int i = 0; i < 3; i++) {
        map = (conc_mmap *)&map;
        CHECK_STATUS(conc_mmap_open(&map, dir, modes[i]), CONC_ERR_INVALID_ARGUMENT);
        CHECK(map == NULL);
        CHECK_MESSAGE_HAS("conc_mmap_open(\"/tmp\")");
    }
    /* Not a regular file: a device, and a FIFO (refused without waiting
     * for a writer). */
    CHECK_STATUS(conc_mmap_open(&map, "/dev/null", CONC_ACCESS_READ), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("/dev/null");
    char fifo[PATH_CAP];
    make_file(fifo, "", 0);
    unlink(fifo);
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK_STATUS(conc_mmap_open(&map, fifo, CONC_ACCESS_READ), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("not a regular file");
    unlink(fifo);
    /* A unix socket, which open() itself refuses (ENXIO). */
    char sock_path[PATH_CAP];
    make_file(sock_path, "", 0);
    unlink(sock_path);
    int sock = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    size_t sock_len = strlen(sock_path);
    CHECK(sock_len < sizeof addr.sun_path);
    memcpy(addr.sun_path, sock_path, sock_len < sizeof addr.sun_path ? sock_len : 0);
    CHECK(bind(sock, (struct sockaddr *)&addr, sizeof addr) == 0);
    CHECK_STATUS(conc_mmap_open(&map, sock_path, CONC_ACCESS_READ), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("not a regular file");
    CHECK(map == NULL);
    close(sock);
    unlink(sock_path);
}

TEST(permission_denied) {
    char path[PATH_CAP];
    make_file(path, "secret\n", 7);
    CHECK(chmod(path, 0444) == 0);
    /* root opens anything for writing: test as an ordinary user, in a
     * child so that this process can still remove the file. */
    pid_t pid = fork();
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) {
            perror("  cannot drop root privileges, permission case skipped: setuid");
            _exit(0);
        }
        conc_mmap *map = (conc_mmap *)&map;
        CHECK_STATUS(conc_mmap_open(&map, path, CONC_ACCESS_WRITE), CONC_ERR_PERMISSION_DENIED);
        CHECK(map == NULL);
        CHECK_MESSAGE_HAS("conc_mmap_open(\"");
        CHECK_MESSAGE_HAS("Permission denied (EACCES)");
        CHECK(conc_last_os_error() == EACCES);
        CHECK_STATUS(conc_mmap_open_range(&map, path, CONC_ACCESS_WRITE, 1, 1),
                     CONC_ERR_PERMISSION_DENIED);
        /* Reading, and a private copy, only need read permission. */
        CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
        CHECK_OK(conc_mmap_close(map));
        CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_COPY));
        CHECK(map && conc_mmap_data_mut(map)[0] == 's');
        CHECK_OK(conc_mmap_close(map));
        _exit(check_failures_ == 0 ? 0 : 1);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* A file no one may read. */
    CHECK(chmod(path, 0) == 0);
    pid = fork();
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(0);
        conc_mmap *map = NULL;
        CHECK_STATUS(conc_mmap_open(&map, path, CONC_ACCESS_READ), CONC_ERR_PERMISSION_DENIED);
        _exit(check_failures_ == 0 ? 0 : 1);
    }
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    unlink(path);
}

TEST(range_past_the_end) {
    char path[PATH_CAP];
    make_file(path, "0123456789", 10);
    struct {
        uint64_t offset;
        size_t length;
    } bad[] = {{11, 0}, {11, 1}, {10, 1}, {0, 11}, {5, 6}, {9, 2}, {UINT64_MAX, 0},
               {UINT64_MAX, 1}, {1, SIZE_MAX}, {4096, 0}, {1ULL << 62, 1}};
    conc_access modes[] = {CONC_ACCESS_READ, CONC_ACCESS_WRITE, CONC_ACCESS_COPY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int m = 0; m < 3; m++) {
            conc_mmap *map = (conc_mmap *)&map;
            CHECK_STATUS(conc_mmap_open_range(&map, path, modes[m], bad[i].offset, bad[i].length),
                         CONC_ERR_OUT_OF_RANGE);
            CHECK(map == NULL);
            CHECK_MESSAGE_HAS("conc_mmap_open_range(\"");
            CHECK_MESSAGE_HAS(path);
        }
    }
    CHECK(file_size(path) == 10); /* never extended */
    /* The very end with length 0 is an empty map; the exact end is fine. */
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open_range(&map, path, CONC_ACCESS_READ, 10, 0));
    CHECK(conc_mmap_len(map) == 0 && conc_mmap_data(map) != NULL);
    CHECK_OK(conc_mmap_close(map));
    CHECK_OK(conc_mmap_open_range(&map, path, CONC_ACCESS_WRITE, 3, 7));
    CHECK(conc_mmap_len(map) == 7 && memcmp(conc_mmap_data(map), "3456789", 7) == 0);
    CHECK_OK(conc_mmap_close(map));
    CHECK(file_size(path) == 10);
    unlink(path);
}

TEST(unaligned_ranges_match_fread) {
    long page = sysconf(_SC_PAGESIZE);
    size_t size = (size_t)(3 * page + 777);
    uint8_t *content = malloc(size), *buf = malloc(size);
    for (size_t i = 0; i < size; i++) content[i] = (uint8_t)(i * 131 % 251);
    char path[PATH_CAP];
    make_file(path, content, size);
    uint64_t offsets[] = {0, 1, 3, 100, (uint64_t)page - 1, (uint64_t)page, (uint64_t)page + 1,
                          (uint64_t)page + 333, 2 * (uint64_t)page - 1, 3 * (uint64_t)page + 1,
                          size - 1, size};
    size_t lengths[] = {0, 1, 2, 77, (size_t)page - 1, (size_t)page, (size_t)page + 1, 5000};
    conc_access modes[] = {CONC_ACCESS_READ, CONC_ACCESS_WRITE, CONC_ACCESS_COPY};
    for (size_t o = 0; o < sizeof offsets / sizeof offsets[0]; o++) {
        for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
            uint64_t offset = offsets[o];
            size_t length = lengths[l];
            size_t want = length ? length : size - (size_t)offset;
            conc_mmap *map = NULL;
            conc_status s = conc_mmap_open_range(&map, path, modes[(o + l) % 3], offset, length);
            if (offset + want > size) {
                CHECK_STATUS(s, CONC_ERR_OUT_OF_RANGE);
                continue;
            }
            CHECK_OK(s);
            if (s != CONC_OK) continue;
            CHECK(conc_mmap_len(map) == want);
            if (want) fread_at(path, (long)offset, buf, want);
            CHECK(conc_mmap_data(map) != NULL);
            CHECK(want == 0 || memcmp(conc_mmap_data(map), buf, want) == 0);
            /* read_byte walks the same bytes. */
            for (size_t i = 0; i < want && i < 300; i++) {
                uint8_t b = 0;
                CHECK_OK(conc_mmap_read_byte(map, &b));
                CHECK(b == buf[i]);
            }
            CHECK_OK(conc_mmap_close(map));
        }
    }
    CHECK(file_size(path) == (long long)size);
    free(content);
    free(buf);
    unlink(path);
}

/* ---- reading ---------------------------------------------------------- */

/* The lines of `text` as a readline loop should return them. */
static void check_shape(const char *text, size_t len, const char *const *want, size_t nwant) {
    char path[PATH_CAP];
    make_file(path, text, len);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    if (!map) return;
    CHECK(conc_mmap_len(map) == len);
    CHECK(conc_mmap_data(map) != NULL);
    CHECK(count_lines(map) == nwant);
    CHECK(conc_mmap_tell(map) == 0); /* count_lines leaves the cursor */
    for (size_t i = 0; i < nwant; i++) {
        const uint8_t *line = NULL;
        size_t n = 0;
        CHECK_OK(conc_mmap_readline(map, &line, &n));
        CHECK(n == strlen(want[i]) && memcmp(line, want[i], n) == 0);
    }
    for (int again = 0; again < 2; again++) { /* the end stays the end */
        const uint8_t *line = NULL;
        size_t n = 99;
        CHECK_OK(conc_mmap_readline(map, &line, &n));
        CHECK(n == 0 && line != NULL);
    }
    CHECK(conc_mmap_tell(map) == len);
    uint8_t b = 42;
    CHECK_STATUS(conc_mmap_read_byte(map, &b), CONC_ERR_OUT_OF_RANGE);
    CHECK(b == 42);
    CHECK_MESSAGE_HAS("conc_mmap_read_byte(\"");
    CHECK_MESSAGE_HAS(path);
    /* read_byte from the start gives every byte. */
    CHECK_OK(conc_mmap_seek(map, 0, CONC_SEEK_SET));
    for (size_t i = 0; i < len; i++) {
        CHECK_OK(conc_mmap_read_byte(map, &b));
        CHECK(b == (uint8_t)text[i]);
        CHECK(conc_mmap_tell(map) == i + 1);
    }
    CHECK_OK(conc_mmap_close(map));
    unlink(path);
}

TEST(edge_shapes) {
    const char *nl[] = {"\n"};
    check_shape("\n", 1, nl, 1);
    const char *a[] = {"a"};
    check_shape("a", 1, a, 1);
    const char *ab[] = {"a\n", "b"};
    check_shape("a\nb", 3, ab, 2);
    const char *nlnl[] = {"\n", "\n"};
    check_shape("\n\n", 2, nlnl, 2);
    const char *crlf[] = {"1\r\n", "2\r\n", "3"};
    check_shape("1\r\n2\r\n3", 7, crlf, 3);
    const char *trailing[] = {"x\n", "\n", "yz\n"};
    check_shape("x\n\nyz\n", 6, trailing, 3);
    check_shape("", 0, NULL, 0);
}

TEST(empty_file) {
    char path[PATH_CAP];
    make_file(path, "", 0);
    conc_access modes[] = {CONC_ACCESS_READ, CONC_ACCESS_WRITE, CONC_ACCESS_COPY};
    for (int m = 0; m < 3; m++) {
        conc_mmap *map = NULL;
        CHECK_OK(conc_mmap_open(&map, path, modes[m]));
        if (!map) continue;
        CHECK(conc_mmap_len(map) == 0);
        CHECK(conc_mmap_data(map) != NULL);
        CHECK((conc_mmap_data_mut(map) != NULL) == (modes[m] != CONC_ACCESS_READ));
        CHECK(count_lines(map) == 0);
        int64_t pos = 5;
        CHECK_OK(conc_mmap_find(map, "", 0, 0, &pos));
        CHECK(pos == 0);
        CHECK_OK(conc_mmap_find(map, "a", 1, 0, &pos));
        CHECK(pos == -1);
        CHECK_OK(conc_mmap_rfind(map, "", 0, 1, &pos));
        CHECK(pos == -1);
        CHECK_OK(conc_mmap_seek(map, 0, CONC_SEEK_END));
        CHECK_STATUS(conc_mmap_seek(map, 1, CONC_SEEK_SET), CONC_ERR_OUT_OF_RANGE);
        CHECK_OK(conc_mmap_flush(map));
        CHECK_OK(conc_mmap_close(map));
    }
    CHECK(file_size(path) == 0);
    unlink(path);
}

TEST(seek_and_tell) {
    char path[PATH_CAP];
    make_file(path, "0123456789", 10);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    CHECK(conc_mmap_tell(map) == 0);
    CHECK_OK(conc_mmap_seek(map, 4, CONC_SEEK_SET));
    CHECK(conc_mmap_tell(map) == 4);
    CHECK_OK(conc_mmap_seek(map, 3, CONC_SEEK_CUR));
    CHECK(conc_mmap_tell(map) == 7);
    CHECK_OK(conc_mmap_seek(map, -7, CONC_SEEK_CUR));
    CHECK(conc_mmap_tell(map) == 0);
    CHECK_OK(conc_mmap_seek(map, 0, CONC_SEEK_END));
    CHECK(conc_mmap_tell(map) == 10);
    CHECK_OK(conc_mmap_seek(map, -10, CONC_SEEK_END));
    CHECK(conc_mmap_tell(map) == 0);
    CHECK_OK(conc_mmap_seek(map, 10, CONC_SEEK_SET));
    CHECK_OK(conc_mmap_seek(map, -3, CONC_SEEK_END));
    uint8_t b = 0;
    CHECK_OK(conc_mmap_read_byte(map, &b));
    CHECK(b == '7' && conc_mmap_tell(map) == 8);
    /* Failures leave the cursor where it was. */
    struct {
        int64_t offset;
        conc_whence whence;
    } bad[] = {{-1, CONC_SEEK_SET}, {11, CONC_SEEK_SET}, {3, CONC_SEEK_CUR},
               {-9, CONC_SEEK_CUR}, {1, CONC_SEEK_END}, {-11, CONC_SEEK_END},
               {INT64_MIN, CONC_SEEK_END}, {INT64_MAX, CONC_SEEK_CUR},
               {INT64_MIN, CONC_SEEK_SET}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_STATUS(conc_mmap_seek(map, bad[i].offset, bad[i].whence), CONC_ERR_OUT_OF_RANGE);
        CHECK(conc_mmap_tell(map) == 8);
    }
    CHECK_MESSAGE_HAS("conc_mmap_seek(\"");
    CHECK_MESSAGE_HAS(path);
    /* readline from the middle. */
    const uint8_t *line = NULL;
    size_t n = 0;
    CHECK_OK(conc_mmap_readline(map, &line, &n));
    CHECK(n == 2 && memcmp(line, "89", 2) == 0);
    CHECK_OK(conc_mmap_close(map));
    unlink(path);
}

/* find/rfind against a naive search, for every substring and start. */
static int64_t naive_find(const uint8_t *h, size_t hlen, const uint8_t *n, size_t nlen,
                          uint64_t start, int reverse) {
    if (start > hlen) return -1;
    if (nlen == 0) return (int64_t)start;
    int64_t found = -1;
    for (size_t p = (size_t)start; p + nlen <= hlen; p++) {
        if (memcmp(h + p, n, nlen) == 0) {
            found = (int64_t)p;
            if (!reverse) break;
        }
    }
    return found;
}

TEST(find_and_rfind_match_naive_search) {
    static const uint8_t text[] = "abracadabra\nab\0abra\r\nca";
    size_t len = sizeof text - 1;
    char path[PATH_CAP];
    make_file(path, text, len);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    if (!map) return;
    int failures = 0;
    for (size_t i = 0; i <= len; i++) {
        for (size_t j = i; j <= len; j++) {
            for (uint64_t start = 0; start <= len + 2; start++) {
                for (int reverse = 0; reverse < 2; reverse++) {
                    int64_t pos = -7;
                    conc_status s = reverse ? conc_mmap_rfind(map, text + i, j - i, start, &pos)
                                            : conc_mmap_find(map, text + i, j - i, start, &pos);
                    int64_t want = naive_find(text, len, text + i, j - i, start, reverse);
                    if (s != CONC_OK || pos != want) {
                        if (failures++ < 5)
                            fprintf(stderr,
                                    "  %s(needle [%zu,%zu), start %llu) = %lld, want %lld\n",
                                    reverse ? "rfind" : "find", i, j, (unsigned long long)start,
                                    (long long)pos, (long long)want);
                    }
                }
            }
        }
    }
    CHECK(failures == 0);
    /* Needles that are not there, or longer than the map. */
    int64_t pos = 0;
    CHECK_OK(conc_mmap_find(map, "zz", 2, 0, &pos));
    CHECK(pos == -1);
    CHECK_OK(conc_mmap_rfind(map, text, len + 1, 0, &pos));
    CHECK(pos == -1);
    CHECK_OK(conc_mmap_find(map, "ab", 2, UINT64_MAX, &pos));
    CHECK(pos == -1);
    CHECK(conc_mmap_tell(map) == 0); /* searching leaves the cursor */
    CHECK_OK(conc_mmap_close(map));
    unlink(path);
}

/* ---- count_lines at the interesting sizes ----------------------------- */

/* A file of `size` bytes with lines of varying length, ending with '\n'
 * or not: count_lines == readline loop == naive count. */
static void check_count_file(size_t size, int final_newline) {
    uint8_t *content = malloc(size ? size : 1);
    uint32_t x = 12345u + (uint32_t)size;
    for (size_t i = 0; i < size; i++) {
        x = x * 1103515245u + 12345u;
        content[i] = ((x >> 16) % 53 == 0) ? '\n' : (uint8_t)('a' + (x >> 16) % 26);
    }
    if (size) content[size - 1] = final_newline ? '\n' : 'z';
    char path[PATH_CAP];
    make_file(path, content, size);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    if (map) {
        uint64_t fast = count_lines(map);
        uint64_t slow = readline_count(map);
        if (fast != slow || fast != naive_lines(content, size)) {
            fprintf(stderr, "  size %zu: count_lines %llu, readline loop %llu, naive %llu\n", size,
                    (unsigned long long)fast, (unsigned long long)slow,
                    (unsigned long long)naive_lines(content, size));
            check_failures_++;
        }
        CHECK_OK(conc_mmap_close(map));
    }
    free(content);
    unlink(path);
}

TEST(count_lines_around_page_and_cache_sizes) {
    size_t sizes[] = {4096, 65536, 1 << 20};
    for (int s = 0; s < 3; s++) {
        for (int d = -1; d <= 1; d++) {
            check_count_file(sizes[s] + (size_t)d, 0);
            check_count_file(sizes[s] + (size_t)d, 1);
        }
    }
}

/* Anonymous maps around every thread split point: k chunks -/+ 1 byte,
 * with newlines on and around each split of the map into n threads. */
TEST(count_lines_around_thread_splits) {
    size_t chunk = CONC_MMAP_COUNT_CHUNK;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long kmax = cores + 1 < 4 ? 4 : (cores + 1 > 6 ? 6 : cores + 1);
    for (long k = 1; k <= kmax; k++) {
        for (int d = -1; d <= 1; d++) {
            size_t size = (size_t)k * chunk + (size_t)d;
            conc_mmap *map = NULL;
            CHECK_OK(conc_mmap_anonymous(&map, size));
            if (!map) continue;
            uint8_t *p = conc_mmap_data_mut(map);
            memset(p, 'x', size);
            for (size_t i = 61; i < size; i += 61) p[i] = '\n';
            for (long n = 1; n <= kmax; n++) {
                for (long i = 1; i < n; i++) {
                    size_t at = size * (size_t)i / (size_t)n;
                    p[at - 1] = '\n';
                    p[at] = (i % 2) ? '\n' : 'y';
                }
            }
            for (int end = 0; end < 2; end++) {
                p[size - 1] = end ? '\n' : 'e';
                CHECK_OK(conc_mmap_seek(map, 0, CONC_SEEK_SET));
                uint64_t fast = count_lines(map);
                uint64_t slow = readline_count(map);
                if (fast != slow || fast != naive_lines(p, size)) {
                    fprintf(stderr, "  size %zu: count_lines %llu, readline %llu\n", size,
                            (unsigned long long)fast, (unsigned long long)slow);
                    check_failures_++;
                }
            }
            CHECK_OK(conc_mmap_close(map));
        }
    }
}

/* ---- writing ---------------------------------------------------------- */

static void check_file_is(const char *path, const char *want) {
    char buf[64] = {0};
    size_t n = strlen(want);
    CHECK(file_size(path) == (long long)n);
    fread_at(path, 0, buf, n);
    if (memcmp(buf, want, n) != 0) {
        fprintf(stderr, "  %s holds \"%.*s\", wanted \"%s\"\n", path, (int)n, buf, want);
        check_failures_++;
    }
}

/* The permissions /proc/self/maps shows for the mapping holding `addr`,
 * as "rw-s" (read, write, exec, shared or private); "" if none does. */
static void map_perms(const void *addr, char perms[5]) {
    perms[0] = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long start, end;
        char p[5];
        if (sscanf(line, "%lx-%lx %4s", &start, &end, p) == 3 &&
            (uintptr_t)addr >= start && (uintptr_t)addr < end) {
            memcpy(perms, p, 5);
            break;
        }
    }
    fclose(f);
}

#define CHECK_PERMS(addr, want)                                                    \
    do {                                                                           \
        char got_perms_[5];                                                        \
        map_perms((addr), got_perms_);                                             \
        if (strcmp(got_perms_, (want)) != 0) {                                     \
            fprintf(stderr, "  %s:%d: mapped \"%s\", wanted \"%s\"\n", __FILE__,     \
                    __LINE__, got_perms_, (want));                                 \
            check_failures_++;                                                     \
        }                                                                          \
    } while (0)

TEST(write_map_reaches_the_file) {
    char path[PATH_CAP];
    make_file(path, "hello, world\n", 13);
    conc_mmap *map = NULL;
    /* After flush, while the map is still open. */
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_WRITE));
    uint8_t *p = conc_mmap_data_mut(map);
    CHECK(p != NULL && p == conc_mmap_data(map));
    if (!p) return;
    CHECK_PERMS(p, "rw-s"); /* shared with the file */
    memcpy(p, "HELLO", 5);
    CHECK_OK(conc_mmap_flush(map));
    check_file_is(path, "HELLO, world\n");
    /* After close, without flush. */
    memcpy(p + 7, "WORLD", 5);
    CHECK_OK(conc_mmap_close(map));
    check_file_is(path, "HELLO, WORLD\n");
    /* Through an unaligned range. */
    CHECK_OK(conc_mmap_open_range(&map, path, CONC_ACCESS_WRITE, 5, 2));
    memcpy(conc_mmap_data_mut(map), "!!", 2);
    CHECK_OK(conc_mmap_flush(map));
    CHECK_OK(conc_mmap_close(map));
    check_file_is(path, "HELLO!!WORLD\n");
    unlink(path);
}

TEST(copy_map_never_reaches_the_file) {
    char path[PATH_CAP];
    make_file(path, "original\n", 9);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_COPY));
    uint8_t *p = conc_mmap_data_mut(map);
    CHECK(p != NULL);
    if (!p) return;
    CHECK_PERMS(p, "rw-p"); /* private copy-on-write */
    memcpy(p, "CHANGED!", 8);
    CHECK(memcmp(conc_mmap_data(map), "CHANGED!", 8) == 0); /* the map sees it */
    CHECK_OK(conc_mmap_flush(map));                         /* does nothing */
    check_file_is(path, "original\n");
    /* Another map of the file does not see the private change. */
    conc_mmap *other = NULL;
    CHECK_OK(conc_mmap_open(&other, path, CONC_ACCESS_READ));
    CHECK(memcmp(conc_mmap_data(other), "original", 8) == 0);
    CHECK_OK(conc_mmap_close(other));
    CHECK_OK(conc_mmap_close(map));
    check_file_is(path, "original\n");
    unlink(path);
}

TEST(read_map_is_not_writable) {
    char path[PATH_CAP];
    make_file(path, "data\n", 5);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    CHECK(conc_mmap_data_mut(map) == NULL);
    CHECK(conc_mmap_data(map) != NULL);
    /* Not just data_mut refused: the pages themselves are read-only. */
    char perms[5];
    map_perms(conc_mmap_data(map), perms);
    CHECK(perms[0] == 'r' && perms[1] == '-');
    CHECK_OK(conc_mmap_flush(map));
    CHECK_OK(conc_mmap_close(map));
    check_file_is(path, "data\n");
    unlink(path);
}

/* ---- anonymous maps --------------------------------------------------- */

TEST(anonymous_zero_filled_and_shared_with_fork) {
    conc_mmap *map = (conc_mmap *)&map;
    CHECK_STATUS(conc_mmap_anonymous(&map, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK(map == NULL);
    CHECK_MESSAGE_HAS("conc_mmap_anonymous(0)");
    size_t len = 3 * 4096 + 5;
    CHECK_OK(conc_mmap_anonymous(&map, len));
    if (!map) return;
    CHECK(conc_mmap_len(map) == len);
    uint8_t *p = conc_mmap_data_mut(map);
    CHECK(p != NULL && p == conc_mmap_data(map));
    CHECK_PERMS(p, "rw-s"); /* shared, so that forked children share it */
    size_t nonzero = 0;
    for (size_t i = 0; i < len; i++) nonzero += p[i] != 0;
    CHECK(nonzero == 0);
    CHECK(count_lines(map) == 1); /* zeros, no newline */
    pid_t pid = fork();
    if (pid == 0) {
        memcpy(p, "from the child\n", 15);
        p[len - 1] = '!';
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
    CHECK(memcmp(p, "from the child\n", 15) == 0);
    CHECK(p[len - 1] == '!');
    CHECK_OK(conc_mmap_flush(map));
    CHECK_OK(conc_mmap_close(map));
}

/* ---- closing ---------------------------------------------------------- */

TEST(close_null_double_and_forged) {
    CHECK_OK(conc_mmap_close(NULL));
    char path[PATH_CAP];
    make_file(path, "x", 1);
    conc_mmap *map = NULL;
    CHECK_OK(conc_mmap_open(&map, path, CONC_ACCESS_READ));
    CHECK_OK(conc_mmap_close(map));
    CHECK_STATUS(conc_mmap_close(map), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("conc_mmap_close");
    int forged = 0;
    CHECK_STATUS(conc_mmap_close((conc_mmap *)&forged), CONC_ERR_INVALID_STATE);
    conc_mmap *anon = NULL;
    CHECK_OK(conc_mmap_anonymous(&anon, 100));
    CHECK_OK(conc_mmap_close(anon));
    CHECK_STATUS(conc_mmap_close(anon), CONC_ERR_INVALID_STATE);
    unlink(path);
}

/* A live object handed to another type's close function is refused and
 * left intact, not freed as the wrong type. */
TEST(close_of_another_kind_of_object_is_refused) {
    conc_mmap *anon = NULL;
    CHECK_OK(conc_mmap_anonymous(&anon, 100));
    conc_mmap_data_mut(anon)[99] = 7;
    CHECK_STATUS(conc_shm_close((conc_shm *)(void *)anon), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("conc_shm_close: `shm` is not an open conc_shm");
    CHECK_STATUS(conc_list_close((conc_list *)(void *)anon), CONC_ERR_INVALID_STATE);
    CHECK(conc_mmap_len(anon) == 100);
    CHECK(conc_mmap_data(anon)[99] == 7);
    CHECK_OK(conc_mmap_close(anon));
}

/* ---- threads and the documented hazard -------------------------------- */

struct reader {
    const char *path;
    uint64_t lines;
};

static void *read_lines(void *arg) {
    struct reader *r = arg;
    conc_mmap *map = NULL;
    if (conc_mmap_open(&map, r->path, CONC_ACCESS_READ) != CONC_OK) return NULL;
    r->lines = readline_count(map);
    conc_mmap_close(map);
    return NULL;
}

TEST(one_handle_per_thread) {
    char text[4000];
    size_t len = 0;
    for (int i = 0; i < 400; i++) len += (size_t)sprintf(text + len, "%04d\n", i);
    char path[PATH_CAP];
    make_file(path, text, len);
    struct reader r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i].path = path;
        r[i].lines = 0;
        CHECK(pthread_create(&t[i], NULL, read_lines, &r[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK(r[i].lines == 400);
    }
    unlink(path);
}

TEST(truncated_file_raises_sigbus) {
    /* The header's documented hazard: pages lost to a truncation by
     * someone else raise SIGBUS when touched. Checked in a child. */
    long page = sysconf(_SC_PAGESIZE);
    size_t size = (size_t)(3 * page);
    char *content = calloc(1, size);
    char path[PATH_CAP];
    make_file(path, content, size);
    free(content);
    pid_t pid = fork();
    if (pid == 0) {
        conc_mmap *map = NULL;
        if (conc_mmap_open(&map, path, CONC_ACCESS_READ) != CONC_OK) _exit(3);
        if (truncate(path, 0) != 0) _exit(4);
        volatile const uint8_t *p = conc_mmap_data(map);
        uint8_t b = p[2 * page];
        _exit(b == 0 ? 5 : 6); /* not reached */
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS);
    unlink(path);
}

int main(void) {
    RUN(null_arguments);
    RUN(unknown_access_and_whence);
    RUN(missing_file_and_directory);
    RUN(permission_denied);
    RUN(range_past_the_end);
    RUN(unaligned_ranges_match_fread);
    RUN(edge_shapes);
    RUN(empty_file);
    RUN(seek_and_tell);
    RUN(find_and_rfind_match_naive_search);
    RUN(count_lines_around_page_and_cache_sizes);
    RUN(count_lines_around_thread_splits);
    RUN(write_map_reaches_the_file);
    RUN(copy_map_never_reaches_the_file);
    RUN(read_map_is_not_writable);
    RUN(anonymous_zero_filled_and_shared_with_fork);
    RUN(close_null_double_and_forged);
    RUN(close_of_another_kind_of_object_is_refused);
    RUN(one_handle_per_thread);
    RUN(truncated_file_raises_sigbus);
    return CHECK_SUMMARY();
}
