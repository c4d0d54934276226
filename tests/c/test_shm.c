/* Shared memory through the C ABI: names, create/open/unlink/close, modes,
 * reservation, permissions, sharing with child processes, every error. */
#include "check.h"
#include "shm_snapshot.h"

#include <errno.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

/* A name unique to this test case: "cts<pid>_<tag>". */
static void make_name(char *buf, size_t size, const char *tag) {
    snprintf(buf, size, "cts%d_%s", (int)getpid(), tag);
}

static int in_dev_shm(const char *name) {
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    return access(path, F_OK) == 0;
}

static int stat_segment(const char *name, struct stat *st) {
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    return stat(path, st);
}

/* Creates a plain segment with raw POSIX calls, `size` bytes. */
static void raw_segment(const char *name, off_t size, mode_t mode) {
    char path[72];
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_CREAT | O_EXCL | O_RDWR, mode);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(fchmod(fd, mode) == 0);
        if (size > 0) {
            CHECK(ftruncate(fd, size) == 0);
        }
        close(fd);
    }
}

TEST(create_with_random_name) {
    conc_shm *shm = (conc_shm *)1;
    CHECK_OK(conc_shm_create(&shm, NULL, 100));
    const char *name = conc_shm_name(shm);
    CHECK(strlen(name) == 12);
    CHECK(strncmp(name, "psm_", 4) == 0);
    for (int i = 4; i < 12; i++) {
        CHECK((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f'));
    }
    CHECK(conc_shm_size(shm) == 100);
    uint8_t *buf = conc_shm_buf(shm);
    CHECK(buf != NULL);
    int zero = 1;
    for (int i = 0; i < 100; i++) {
        zero &= buf[i] == 0;
    }
    CHECK(zero);
    struct stat st;
    CHECK(stat_segment(name, &st) == 0);
    CHECK(st.st_size == 100);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(st.st_uid == geteuid());

    /* Two random names differ. */
    conc_shm *other = NULL;
    CHECK_OK(conc_shm_create(&other, NULL, 1));
    CHECK(strcmp(conc_shm_name(other), name) != 0);
    CHECK_OK(conc_shm_unlink(other));
    CHECK_OK(conc_shm_close(other));

    CHECK_OK(conc_shm_unlink(shm));
    CHECK(!in_dev_shm(name));
    CHECK_OK(conc_shm_close(shm));
}

static void check_mode_under_umask(mode_t mask) {
    umask(mask);
    char name[64];
    make_name(name, sizeof name, "umask");
    conc_shm *shm = NULL;
    CHECK_OK(conc_shm_create(&shm, name, 4096));
    struct stat st;
    CHECK(stat_segment(name, &st) == 0);
    if ((st.st_mode & 0777) != 0600) {
        fprintf(stderr, "  umask %03o gave mode %03o\n", (unsigned)mask,
                (unsigned)(st.st_mode & 0777));
    }
    CHECK((st.st_mode & 0777) == 0600);
    conc_shm *again = NULL;
    CHECK_OK(conc_shm_open(&again, name));
    CHECK_OK(conc_shm_close(again));
    CHECK_OK(conc_shm_unlink_name(name));
    CHECK_OK(conc_shm_close(shm));
}

TEST(mode_is_0600_under_umask_0) { check_mode_under_umask(0); }
TEST(mode_is_0600_under_umask_0277) { check_mode_under_umask(0277); }
TEST(mode_is_0600_under_umask_0077) { check_mode_under_umask(0077); }

TEST(planted_segment_is_refused_and_left_intact) {
    char name[64], path[72];
    make_name(name, sizeof name, "planted");
    snprintf(path, sizeof path, "/%s", name);
    int fd = shm_open(path, O_CREAT | O_EXCL | O_RDWR, 0666);
    CHECK(fd >= 0);
    CHECK(fchmod(fd, 0666) == 0);
    CHECK(write(fd, "planted", 7) == 7);
    int chowned = geteuid() == 0 && fchown(fd, 65534, 65534) == 0;
    close(fd);

    conc_shm *shm = (conc_shm *)1;
    CHECK_STATUS(conc_shm_create(&shm, name, 4096), CONC_ERR_ALREADY_EXISTS);
    CHECK(shm == NULL);
    CHECK_MESSAGE_HAS("conc_shm_create(\"");
    CHECK_MESSAGE_HAS(name);
    CHECK_MESSAGE_HAS("(EEXIST)");
    CHECK(conc_last_os_error() == EEXIST);
    /* Also with a leading slash. */
    CHECK_STATUS(conc_shm_create(&shm, path, 1), CONC_ERR_ALREADY_EXISTS);

    struct stat st;
    CHECK(stat_segment(name, &st) == 0);
    CHECK(st.st_size == 7);
    CHECK((st.st_mode & 0777) == 0666);
    if (chowned) {
        CHECK(st.st_uid == 65534);
    }
    fd = shm_open(path, O_RDONLY, 0);
    char got[8] = {0};
    CHECK(fd >= 0 && read(fd, got, 7) == 7);
    CHECK(strcmp(got, "planted") == 0);
    close(fd);
    CHECK(shm_unlink(path) == 0);
}

TEST(huge_sizes_are_exhausted_and_leave_no_name) {
    char name[64];
    make_name(name, sizeof name, "huge");
    conc_shm *shm = (conc_shm *)1;
    CHECK_STATUS(conc_shm_create(&shm, name, SIZE_MAX), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(shm == NULL);
    CHECK_MESSAGE_HAS(name);
    CHECK(!in_dev_shm(name));

    struct statvfs vfs;
    if (statvfs("/dev/shm", &vfs) != 0 || vfs.f_blocks == 0) {
        printf("  skipped SIZE_MAX/2 and above-capacity sizes: /dev/shm has no size limit, "
               "so they would exhaust memory\n");
        return;
    }
    CHECK_STATUS(conc_shm_create(&shm, name, SIZE_MAX / 2), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK_MESSAGE_HAS("(ENOSPC)");
    CHECK(!in_dev_shm(name));
    /* One page more than the whole of /dev/shm (which is, at most, its
     * free space): refused before any page is allocated. */
    size_t above = (size_t)vfs.f_blocks * vfs.f_frsize + 4096;
    CHECK_STATUS(conc_shm_create(&shm, name, above), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(shm == NULL);
    CHECK(!in_dev_shm(name));
    CHECK_STATUS(conc_shm_create(&shm, NULL, above), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK_MESSAGE_HAS("conc_shm_create(NULL, ");
    CHECK_MESSAGE_HAS("with the random name \"psm_");
}

/* A private mount namespace with a 1 MiB /dev/shm: a create that does not
 * fit fails at create, and what did fit is writable to its last byte. */
TEST(full_dev_shm_fails_at_create_not_with_sigbus) {
    if (unshare(CLONE_NEWNS) != 0 ||
        mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=1m,mode=1777") != 0) {
        printf("  skipped: cannot mount a small private /dev/shm here (%s)\n", strerror(errno));
        return;
    }
    conc_shm *a = NULL, *b = (conc_shm *)1, *c = (conc_shm *)1;
    CHECK_OK(conc_shm_create(&a, "fill_a", 700 * 1024));
    CHECK_STATUS(conc_shm_create(&b, "fill_b", 700 * 1024), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(b == NULL);
    CHECK_MESSAGE_HAS("conc_shm_create(\"fill_b\", 716800): No space left on device (ENOSPC)");
    CHECK(!in_dev_shm("fill_b"));
    CHECK_STATUS(conc_shm_create(&c, NULL, 700 * 1024), CONC_ERR_RESOURCE_EXHAUSTED);
    CHECK(c == NULL);
    /* Only fill_a is left. */
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    int entries = 0;
    while (d != NULL && (e = readdir(d)) != NULL) {
        entries += e->d_name[0] != '.';
    }
    if (d != NULL) {
        closedir(d);
    }
    CHECK(entries == 1);
    if (a != NULL) {
        memset(conc_shm_buf(a), 0xab, conc_shm_size(a)); /* no SIGBUS */
        CHECK(conc_shm_buf(a)[700 * 1024 - 1] == 0xab);
    }
    CHECK_OK(conc_shm_unlink(a));
    CHECK_OK(conc_shm_close(a));
}

TEST(bad_names_are_invalid_arguments) {
    char long31[40], slash31[40];
    memset(long31, 'x', 31);
    long31[31] = '\0';
    slash31[0] = '/';
    memset(slash31 + 1, 'y', 31);
    slash31[32] = '\0';
    const char *bad[] = {"",   "/",        "a/b",    long31,  slash31, ".",   "..",
                         "/.", "/..",      "bad name", "//a",  "a/",    "a*b", "tab\t",
                         "\xc3\xa9", "a\\b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        conc_shm *shm = (conc_shm *)1;
        CHECK_STATUS(conc_shm_create(&shm, bad[i], 10), CONC_ERR_INVALID_ARGUMENT);
        CHECK(shm == NULL);
        CHECK_MESSAGE_HAS("conc_shm_create(");
        CHECK_MESSAGE_HAS("invalid shared memory name");
        shm = (conc_shm *)1;
        CHECK_STATUS(conc_shm_open(&shm, bad[i]), CONC_ERR_INVALID_ARGUMENT);
        CHECK(shm == NULL);
        CHECK_MESSAGE_HAS("conc_shm_open(");
        CHECK_STATUS(conc_shm_unlink_name(bad[i]), CONC_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE_HAS("conc_shm_unlink_name(");
    }
    conc_shm *shm = NULL;
    CHECK_STATUS(conc_shm_create(&shm, "bad name", 10), CONC_ERR_INVALID_ARGUMENT);
    CHECK(strcmp(conc_last_error_message(),
                 "conc_shm_create(\"bad name\", 10): invalid shared memory name: only letters, "
                 "digits, '_', '-' and '.' are allowed") == 0);
    CHECK(conc_last_os_error() == 0);
}

TEST(thirty_character_names_and_leading_slash) {
    char name[40], slashed[48];
    snprintf(name, sizeof name, "c%07d_", (int)getpid());
    size_t n = strlen(name);
    memset(name + n, 'z', 30 - n);
    name[30] = '\0';
    snprintf(slashed, sizeof slashed, "/%s", name);

    conc_shm *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(conc_shm_create(&a, slashed, 64));
    CHECK(strcmp(conc_shm_name(a), name) == 0);
    CHECK(in_dev_shm(name));
    CHECK_OK(conc_shm_open(&b, name));
    CHECK_OK(conc_shm_open(&c, slashed));
    CHECK(strcmp(conc_shm_name(b), name) == 0);
    CHECK(strcmp(conc_shm_name(c), name) == 0);
    conc_shm_buf(a)[63] = 5;
    CHECK(conc_shm_buf(b)[63] == 5 && conc_shm_buf(c)[63] == 5);
    CHECK_OK(conc_shm_unlink_name(slashed));
    CHECK(!in_dev_shm(name));
    CHECK_OK(conc_shm_close(a));
    CHECK_OK(conc_shm_close(b));
    CHECK_OK(conc_shm_close(c));

    /* Other allowed characters. */
    CHECK_OK(conc_shm_create(&a, "a.B-c_9...", 1));
    CHECK_OK(conc_shm_unlink(a));
    CHECK_OK(conc_shm_close(a));
}

TEST(open_reports_real_size) {
    char name[64];
    make_name(name, sizeof name, "size");
    conc_shm *a = NULL, *b = NULL;
    CHECK_OK(conc_shm_create(&a, name, 12345));
    CHECK_OK(conc_shm_open(&b, name));
    CHECK(conc_shm_size(b) == 12345);
    CHECK_OK(conc_shm_close(b));
    CHECK_OK(conc_shm_unlink(a));
    CHECK_OK(conc_shm_close(a));

    /* A segment made by someone else, with raw calls. */
    raw_segment(name, 5000, 0600);
    CHECK_OK(conc_shm_open(&b, name));
    CHECK(conc_shm_size(b) == 5000);
    CHECK(conc_shm_buf(b)[4999] == 0);
    CHECK_OK(conc_shm_unlink(b));
    CHECK_OK(conc_shm_close(b));
}

TEST(open_of_size_zero_segment_is_invalid) {
    char name[64];
    make_name(name, sizeof name, "empty");
    raw_segment(name, 0, 0600);
    conc_shm *shm = (conc_shm *)1;
    CHECK_STATUS(conc_shm_open(&shm, name), CONC_ERR_INVALID_ARGUMENT);
    CHECK(shm == NULL);
    CHECK_MESSAGE_HAS("conc_shm_open(\"");
    CHECK_MESSAGE_HAS("size 0");
    CHECK_OK(conc_shm_unlink_name(name));
}

TEST(open_of_missing_segment_is_not_found) {
    conc_shm *shm = (conc_shm *)1;
    char name[64];
    make_name(name, sizeof name, "missing");
    CHECK_STATUS(conc_shm_open(&shm, name), CONC_ERR_NOT_FOUND);
    CHECK(shm == NULL);
    char want[160];
    snprintf(want, sizeof want, "conc_shm_open(\"%s\"): No such file or directory (ENOENT)",
             name);
    CHECK(strcmp(conc_last_error_message(), want) == 0);
    CHECK(conc_last_os_error() == ENOENT);
    CHECK_STATUS(conc_shm_unlink_name(name), CONC_ERR_NOT_FOUND);
    CHECK_MESSAGE_HAS("conc_shm_unlink_name(\"");
}

/* Runs conc_shm_open(name) as the unprivileged user 65534 in a child;
 * returns its status, or -1 if the switch is impossible here. */
static int open_as_nobody(const char *name) {
    int pipefd[2];
    if (pipe(pipefd) != 0) {
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int status = -1;
        if (setgroups(0, NULL) == 0 && setresgid(65534, 65534, 65534) == 0 &&
            setresuid(65534, 65534, 65534) == 0) {
            conc_shm *shm = NULL;
            status = (int)conc_shm_open(&shm, name);
            if (status == CONC_ERR_PERMISSION_DENIED &&
                strstr(conc_last_error_message(), "(EACCES)") == NULL) {
                status = 100; /* the message lacks the OS reason */
            }
            conc_shm_close(shm);
        }
        if (write(pipefd[1], &status, sizeof status) != (ssize_t)sizeof status) {
            _exit(1);
        }
        _exit(0);
    }
    close(pipefd[1]);
    int status = -1;
    if (pid < 0 || read(pipefd[0], &status, sizeof status) != (ssize_t)sizeof status) {
        status = -1;
    }
    close(pipefd[0]);
    if (pid > 0) {
        waitpid(pid, NULL, 0);
    }
    return status;
}

TEST(open_without_write_permission_is_denied) {
    char name[64], ok_name[64], path[128];
    make_name(name, sizeof name, "readonly");
    make_name(ok_name, sizeof ok_name, "writable");
    conc_shm *a = NULL, *b = NULL;
    CHECK_OK(conc_shm_create(&a, name, 100));
    CHECK_OK(conc_shm_create(&b, ok_name, 100));
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    if (geteuid() != 0) {
        CHECK(chmod(path, 0400) == 0);
        conc_shm *shm = (conc_shm *)1;
        CHECK_STATUS(conc_shm_open(&shm, name), CONC_ERR_PERMISSION_DENIED);
        CHECK(shm == NULL);
        CHECK_MESSAGE_HAS("(EACCES)");
    } else {
        /* Root bypasses permission checks: ask as user 65534, the owner,
         * who may read but not write the first segment. */
        CHECK(chown(path, 65534, 65534) == 0);
        CHECK(chmod(path, 0400) == 0);
        snprintf(path, sizeof path, "/dev/shm/%s", ok_name);
        CHECK(chown(path, 65534, 65534) == 0);
        int denied = open_as_nobody(name);
        if (denied == -1) {
            printf("  skipped: cannot switch to uid 65534 here\n");
        } else {
            CHECK(denied == CONC_ERR_PERMISSION_DENIED);
            CHECK(open_as_nobody(ok_name) == CONC_OK);
        }
    }
    CHECK_OK(conc_shm_unlink(a));
    CHECK_OK(conc_shm_unlink(b));
    CHECK_OK(conc_shm_close(a));
    CHECK_OK(conc_shm_close(b));
}

TEST(unlink_twice_is_not_found) {
    char name[64];
    make_name(name, sizeof name, "twice");
    conc_shm *a = NULL, *b = NULL;
    CHECK_OK(conc_shm_create(&a, name, 10));
    CHECK_OK(conc_shm_open(&b, name));
    CHECK_OK(conc_shm_unlink(a));
    CHECK_STATUS(conc_shm_unlink(a), CONC_ERR_NOT_FOUND);
    CHECK_MESSAGE_HAS("conc_shm_unlink(\"");
    CHECK_MESSAGE_HAS(name);
    CHECK_STATUS(conc_shm_unlink(b), CONC_ERR_NOT_FOUND);
    CHECK_STATUS(conc_shm_unlink_name(name), CONC_ERR_NOT_FOUND);

    /* A second unlink through a handle never removes a newer segment that
     * took the name. */
    conc_shm *c = NULL;
    CHECK_OK(conc_shm_create(&c, name, 10));
    CHECK_STATUS(conc_shm_unlink(a), CONC_ERR_NOT_FOUND);
    CHECK(in_dev_shm(name));
    CHECK_OK(conc_shm_unlink(c));
    CHECK_OK(conc_shm_close(a));
    CHECK_OK(conc_shm_close(b));
    CHECK_OK(conc_shm_close(c));
}

TEST(map_stays_usable_after_unlink) {
    conc_shm *a = NULL, *b = NULL;
    CHECK_OK(conc_shm_create(&a, NULL, 4096));
    CHECK_OK(conc_shm_open(&b, conc_shm_name(a)));
    CHECK_OK(conc_shm_unlink(a));
    CHECK(!in_dev_shm(conc_shm_name(a)));
    conc_shm_buf(a)[4095] = 77;
    CHECK(conc_shm_buf(b)[4095] == 77);
    conc_shm_buf(b)[0] = 78;
    CHECK(conc_shm_buf(a)[0] == 78);
    /* The name can be taken again meanwhile: a new, separate segment. */
    conc_shm *c = NULL;
    CHECK_OK(conc_shm_create(&c, conc_shm_name(a), 4096));
    CHECK(conc_shm_buf(c)[0] == 0);
    CHECK_OK(conc_shm_unlink(c));
    CHECK_OK(conc_shm_close(c));
    CHECK_OK(conc_shm_close(a));
    CHECK_OK(conc_shm_close(b));
}

static int attach_and_fill(void *arg) {
    const char *name = arg;
    alarm(10); /* a deadlock ends this child with SIGALRM */
    conc_shm *shm = NULL;
    if (conc_shm_open(&shm, name) != CONC_OK) {
        return 10;
    }
    if (conc_shm_size(shm) != 100) {
        return 11;
    }
    for (int i = 50; i < 100; i++) {
        conc_shm_buf(shm)[i] = 2;
    }
    return conc_shm_close(shm) == CONC_OK ? 0 : 12;
}

static int fill_inherited(void *arg) {
    conc_shm *shm = arg;
    for (int i = 0; i < 50; i++) {
        conc_shm_buf(shm)[i] = 1;
    }
    return 0;
}

TEST(children_attach_by_name_and_share_inherited_maps) {
    conc_shm *shm = NULL;
    CHECK_OK(conc_shm_create(&shm, NULL, 100));
    char name[32];
    snprintf(name, sizeof name, "%s", conc_shm_name(shm));
    conc_process p1, p2;
    CHECK_OK(conc_process_spawn(&p1, fill_inherited, shm));
    CHECK_OK(conc_process_spawn(&p2, attach_and_fill, name));
    int c1 = -1, c2 = -1;
    CHECK_OK(conc_process_join(p1, &c1));
    CHECK_OK(conc_process_join(p2, &c2));
    CHECK(c1 == 0 && c2 == 0);
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        ok &= conc_shm_buf(shm)[i] == (i < 50 ? 1 : 2);
    }
    CHECK(ok);
    CHECK_OK(conc_shm_unlink(shm));
    CHECK_OK(conc_shm_close(shm));
}

TEST(null_and_invalid_arguments) {
    CHECK_STATUS(conc_shm_create(NULL, NULL, 10), CONC_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("conc_shm_create: argument `out` is NULL");
    conc_shm *shm = (conc_shm *)1;
    CHECK_STATUS(conc_shm_create(&shm, NULL, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK(shm == NULL);
    CHECK_MESSAGE_HAS("conc_shm_create(NULL, 0): the size is 0");
    char name[64];
    make_name(name, sizeof name, "zero");
    CHECK_STATUS(conc_shm_create(&shm, name, 0), CONC_ERR_INVALID_ARGUMENT);
    CHECK(!in_dev_shm(name));
    CHECK_STATUS(conc_shm_open(NULL, "x"), CONC_ERR_INVALID_ARGUMENT);
    shm = (conc_shm *)1;
    CHECK_STATUS(conc_shm_open(&shm, NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK(shm == NULL);
    CHECK_MESSAGE_HAS("conc_shm_open: argument `name` is NULL");
    CHECK_STATUS(conc_shm_unlink(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(conc_shm_unlink_name(NULL), CONC_ERR_INVALID_ARGUMENT);
    CHECK(conc_shm_buf(NULL) == NULL);
    CHECK(conc_shm_size(NULL) == 0);
    CHECK(conc_shm_name(NULL) != NULL && conc_shm_name(NULL)[0] == '\0');
    CHECK_OK(conc_shm_close(NULL));

    /* Double close and a forged pointer: refused, nothing freed. */
    CHECK_OK(conc_shm_create(&shm, NULL, 10));
    CHECK_OK(conc_shm_unlink(shm));
    CHECK_OK(conc_shm_close(shm));
    CHECK_STATUS(conc_shm_close(shm), CONC_ERR_INVALID_STATE);
    CHECK_MESSAGE_HAS("conc_shm_close");
    uint64_t fake[8] = {0};
    CHECK_STATUS(conc_shm_close((conc_shm *)fake), CONC_ERR_INVALID_STATE);
}

TEST(large_segment_is_zero_filled_and_writable) {
    size_t size = 8u << 20;
    conc_shm *shm = NULL;
    CHECK_OK(conc_shm_create(&shm, NULL, size));
    uint8_t *buf = conc_shm_buf(shm);
    int zero = 1;
    for (size_t i = 0; i < size; i += 512) {
        zero &= buf[i] == 0;
    }
    CHECK(zero);
    memset(buf, 1, size);
    CHECK(buf[size - 1] == 1);
    CHECK_OK(conc_shm_unlink(shm));
    CHECK_OK(conc_shm_close(shm));
}

int main(void) {
    shm_snapshot_begin();
    RUN(create_with_random_name);
    RUN(mode_is_0600_under_umask_0);
    RUN(mode_is_0600_under_umask_0277);
    RUN(mode_is_0600_under_umask_0077);
    RUN(planted_segment_is_refused_and_left_intact);
    RUN(huge_sizes_are_exhausted_and_leave_no_name);
    RUN(full_dev_shm_fails_at_create_not_with_sigbus);
    RUN(bad_names_are_invalid_arguments);
    RUN(thirty_character_names_and_leading_slash);
    RUN(open_reports_real_size);
    RUN(open_of_size_zero_segment_is_invalid);
    RUN(open_of_missing_segment_is_not_found);
    RUN(open_without_write_permission_is_denied);
    RUN(unlink_twice_is_not_found);
    RUN(map_stays_usable_after_unlink);
    RUN(children_attach_by_name_and_share_inherited_maps);
    RUN(null_and_invalid_arguments);
    RUN(large_segment_is_zero_filled_and_writable);
    return shm_snapshot_end(CHECK_SUMMARY());
}
