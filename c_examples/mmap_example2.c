/* MMap example 2: print data.txt one character at a time, first with
 * read_byte() (which moves the map's cursor), then by indexing the mapped
 * bytes directly, as the course's two Python programs do:
 *
 *     for i in range(map_file.size()):
 *         print(chr(map_file.read_byte()), end='')
 *
 *     for i in range(map_file.size()):
 *         print(chr(map_file[i]), end='')
 */
#include <stdint.h>
#include <stdio.h>

#include "conc.h"

static int mmap_io(const char *filename) {
    conc_mmap *map_file;
    if (conc_mmap_open(&map_file, filename, CONC_ACCESS_READ) != CONC_OK) {
        fprintf(stderr, "%s\n", conc_last_error_message());
        return 1;
    }
    size_t size = conc_mmap_len(map_file);

    printf("read_byte():\n");
    for (size_t i = 0; i < size; i++) {
        uint8_t c;
        if (conc_mmap_read_byte(map_file, &c) != CONC_OK) {
            fprintf(stderr, "%s\n", conc_last_error_message());
            conc_mmap_close(map_file);
            return 1;
        }
        putchar(c);
    }

    printf("\nmap_file[i]:\n");
    const uint8_t *data = conc_mmap_data(map_file);
    for (size_t i = 0; i < size; i++) {
        putchar(data[i]);
    }
    putchar('\n');

    conc_mmap_close(map_file);
    return 0;
}

int main(void) { return mmap_io("data.txt"); }
