/* MMap example 2, second version: the same output as mmap_example2.c,
 * indexing the mapped bytes instead of calling read_byte(), as the
 * course's Python program does:
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
    const uint8_t *map = conc_mmap_data(map_file);
    for (size_t i = 0; i < conc_mmap_len(map_file); i++) {
        putchar(map[i]);
    }
    putchar('\n'); /* ends the last line, which data.txt leaves open */

    conc_mmap_close(map_file);
    return 0;
}

int main(void) { return mmap_io("data.txt"); }
