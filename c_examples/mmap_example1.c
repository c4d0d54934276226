/* MMap example 1: map data.txt and print it line by line.
 *
 * The course's Python program:
 *
 *     with mmap.mmap(file_obj.fileno(), length=0, access=mmap.ACCESS_READ) as map_file:
 *         for line in iter(map_file.readline, b""):
 *             print(line)
 *
 * Each line is printed as Python prints a bytes object, b'...', so the
 * "\r\n" Windows line ends of data.txt show.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "conc.h"

/* Prints `len` bytes the way Python's print(bytes) does. */
static void print_bytes(const uint8_t *p, size_t len) {
    char quote = '\'';
    if (memchr(p, '\'', len) && !memchr(p, '"', len)) quote = '"';
    printf("b%c", quote);
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[i];
        if (c == (uint8_t)quote || c == '\\') printf("\\%c", c);
        else if (c == '\t') printf("\\t");
        else if (c == '\n') printf("\\n");
        else if (c == '\r') printf("\\r");
        else if (c < 0x20 || c >= 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    printf("%c\n", quote);
}

static int mmap_io_display_lines(const char *filename) {
    conc_mmap *map_file;
    if (conc_mmap_open(&map_file, filename, CONC_ACCESS_READ) != CONC_OK) {
        fprintf(stderr, "%s\n", conc_last_error_message());
        return 1;
    }
    const uint8_t *line;
    size_t len;
    while (conc_mmap_readline(map_file, &line, &len) == CONC_OK && len > 0) {
        print_bytes(line, len);
    }
    conc_mmap_close(map_file);
    return 0;
}

int main(void) { return mmap_io_display_lines("data.txt"); }
