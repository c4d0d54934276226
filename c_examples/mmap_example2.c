/* MMap example 2: print data.txt one character at a time with read_byte(),
 * which moves the map's cursor, as the course's Python program does:
 *
 *     for i in range(map_file.size()):
 *         print(chr(map_file.read_byte()), end='')
 *
 * mmap_example2_index.c is the document's variant with [] indexing.
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
    for (size_t i = 0; i < conc_mmap_len(map_file); i++) {
        uint8_t c;
        if (conc_mmap_read_byte(map_file, &c) != CONC_OK) {
            fprintf(stderr, "%s\n", conc_last_error_message());
            conc_mmap_close(map_file);
            return 1;
        }
        putchar(c);
    }
    putchar('\n'); /* ends the last line, which data.txt leaves open */

    conc_mmap_close(map_file);
    return 0;
}

int main(void) { return mmap_io("data.txt"); }
