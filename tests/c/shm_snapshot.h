/* For the C tests that make shared memory segments: check that a test
 * program leaves /dev/shm as it found it.
 *
 *   int main(void) {
 *       shm_snapshot_begin();     // lock, then list /dev/shm
 *       RUN(...); ...
 *       return shm_snapshot_end(CHECK_SUMMARY());  // compare, print, fail
 *   }
 *
 * Test programs that create segments run at the same time under `cargo
 * test` (and other checkouts may run theirs): each holds an exclusive lock
 * on one lock file for its whole run, so that no other conc test program
 * adds or removes entries while it compares. The Rust unit tests take the
 * same lock shared.
 */
#ifndef CONC_TEST_SHM_SNAPSHOT_H
#define CONC_TEST_SHM_SNAPSHOT_H

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define SHM_SNAPSHOT_LOCK "/tmp/conc-dev-shm-tests.lock"
#define SHM_SNAPSHOT_MAX 4096

typedef struct shm_snapshot {
    int count;
    char *names[SHM_SNAPSHOT_MAX];
} shm_snapshot;

static shm_snapshot shm_snapshot_start_;

static int shm_snapshot_cmp_(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void shm_snapshot_take_(shm_snapshot *s) {
    s->count = 0;
    DIR *d = opendir("/dev/shm");
    if (d == NULL) {
        perror("opendir /dev/shm");
        exit(1);
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        if (s->count == SHM_SNAPSHOT_MAX) {
            fprintf(stderr, "more than %d entries in /dev/shm\n", SHM_SNAPSHOT_MAX);
            exit(1);
        }
        s->names[s->count++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(s->names, (size_t)s->count, sizeof s->names[0], shm_snapshot_cmp_);
}

/* Takes the lock (blocking) and records what /dev/shm holds. */
__attribute__((unused)) static void shm_snapshot_begin(void) {
    int fd = open(SHM_SNAPSHOT_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        perror(SHM_SNAPSHOT_LOCK);
        exit(1);
    }
    /* fd stays open (and locked) until the program exits. */
    shm_snapshot_take_(&shm_snapshot_start_);
}

/* Compares /dev/shm with the start; prints every difference. Returns
 * `status`, or 1 if anything differs. */
__attribute__((unused)) static int shm_snapshot_end(int status) {
    static shm_snapshot now;
    shm_snapshot_take_(&now);
    int differ = 0;
    int i = 0, j = 0;
    while (i < shm_snapshot_start_.count || j < now.count) {
        int c = i == shm_snapshot_start_.count ? 1
                : j == now.count               ? -1
                                               : strcmp(shm_snapshot_start_.names[i], now.names[j]);
        if (c == 0) {
            i++, j++;
        } else if (c < 0) {
            printf("/dev/shm lost   %s\n", shm_snapshot_start_.names[i++]);
            differ = 1;
        } else {
            printf("/dev/shm gained %s\n", now.names[j++]);
            differ = 1;
        }
    }
    if (differ) {
        printf("FAILED /dev/shm differs from its state at the start\n");
        return 1;
    }
    printf("/dev/shm holds the same %d entries as at the start\n", now.count);
    return status;
}

#endif /* CONC_TEST_SHM_SNAPSHOT_H */
