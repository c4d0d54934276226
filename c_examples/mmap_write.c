/* Writing through a memory map.
 *
 * A CONC_ACCESS_WRITE map shares its pages with the file: what the program
 * writes through conc_mmap_data_mut() is in the file once flushed (or
 * closed). A CONC_ACCESS_COPY map is a private copy-on-write view: the
 * program may change it, the file never changes.
 *
 * The file is made with conc_mmap_create and filled with conc_mmap_write
 * (a copy of data.txt), then read back with stdio after each step.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conc.h"

static int check(conc_status s) {
    if (s != CONC_OK) {
        fprintf(stderr, "%s\n", conc_last_error_message());
        exit(1);
    }
    return 0;
}

/* Prints the file's first two lines, read with ordinary stdio. */
static void show_file(const char *label, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    char line[64];
    printf("%s\n", label);
    for (int i = 0; i < 2 && fgets(line, sizeof line, f); i++) {
        line[strcspn(line, "\r\n")] = 0;
        printf("    %s\n", line);
    }
    fclose(f);
}

int main(void) {
    /* The contents of data.txt, read with stdio. */
    static char buf[1 << 16];
    FILE *in = fopen("data.txt", "rb");
    if (!in) {
        perror("data.txt");
        return 1;
    }
    size_t size = fread(buf, 1, sizeof buf, in);
    fclose(in);

    /* A new file made by conc_mmap_create: it must not exist yet, gets
     * `size` zero bytes with its disk space reserved (a full disk fails
     * here, not later), and comes back mapped CONC_ACCESS_WRITE. */
    char path[512];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/conc_mmap_write_XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path); /* a unique name... */
    if (fd < 0) {
        perror("mkstemp");
        return 1;
    }
    close(fd);
    unlink(path); /* ...that conc_mmap_create then creates */
    conc_mmap *map;
    check(conc_mmap_create(&map, path, size));
    printf("conc_mmap_create made a file of %zu zero bytes\n", conc_mmap_len(map));

    /* conc_mmap_write copies at the cursor and advances it, like a file. */
    check(conc_mmap_write(map, buf, size));
    printf("conc_mmap_write wrote data.txt into it; the cursor is at %llu\n",
           (unsigned long long)conc_mmap_tell(map));
    conc_status past = conc_mmap_write(map, "!", 1);
    printf("one more byte past the end: %s (nothing written)\n", conc_status_str(past));
    check(conc_mmap_close(map));
    show_file("the file at first:", path);

    /* A shared map: the change reaches the file. */
    check(conc_mmap_open(&map, path, CONC_ACCESS_WRITE));
    uint8_t *data = conc_mmap_data_mut(map);
    memcpy(data, "one one 1", 9);
    check(conc_mmap_flush(map));
    show_file("after writing \"one one 1\" through a CONC_ACCESS_WRITE map and flushing:", path);
    memcpy(data + 11, "two two 2", 9);
    check(conc_mmap_close(map));
    show_file("after writing \"two two 2\" and closing the map:", path);

    /* A private copy-on-write map: the file does not change. */
    check(conc_mmap_open(&map, path, CONC_ACCESS_COPY));
    data = conc_mmap_data_mut(map);
    memcpy(data, "XXXXXXXXX", 9);
    printf("the CONC_ACCESS_COPY map now starts with \"%.9s\"\n", (const char *)conc_mmap_data(map));
    check(conc_mmap_flush(map));
    check(conc_mmap_close(map));
    show_file("after writing \"XXXXXXXXX\" through a CONC_ACCESS_COPY map and closing it:", path);

    unlink(path);
    return 0;
}
