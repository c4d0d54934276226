/* MMap example 4: use the map as a string, with Python's slices:
 *
 *     print(mmap_obj[:10])      # the first 10 characters
 *     print()
 *     print(mmap_obj[-10:])     # the last 10 characters
 *     print()
 *     print(mmap_obj[15:25])    # the characters between 15 and 25
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

/* Python's index rules for a slice bound: negative counts from the end,
 * and the result is clamped to 0..len. */
static size_t bound(long i, size_t len) {
    if (i < 0) i += (long)len;
    if (i < 0) return 0;
    return (size_t)i > len ? len : (size_t)i;
}

/* print(map[start:stop]) */
static void print_slice(const conc_mmap *map, long start, long stop) {
    size_t len = conc_mmap_len(map);
    size_t a = bound(start, len), b = bound(stop, len);
    print_bytes(conc_mmap_data(map) + a, b > a ? b - a : 0);
}

static int mmap_io(const char *filename) {
    conc_mmap *mmap_obj;
    if (conc_mmap_open(&mmap_obj, filename, CONC_ACCESS_READ) != CONC_OK) {
        fprintf(stderr, "%s\n", conc_last_error_message());
        return 1;
    }
    long len = (long)conc_mmap_len(mmap_obj);

    /* Print the first 10 characters */
    print_slice(mmap_obj, 0, 10);
    printf("\n");

    /* Print the last 10 characters */
    print_slice(mmap_obj, -10, len);
    printf("\n");

    /* Print the characters between 15 and 25 */
    print_slice(mmap_obj, 15, 25);

    conc_mmap_close(mmap_obj);
    return 0;
}

int main(void) { return mmap_io("data.txt"); }
