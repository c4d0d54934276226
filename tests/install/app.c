/* Built by tests/install/run.sh against an installed conc, through
 * pkg-config: once with libconc.a, once with libconc.so. */
#include <stdint.h>
#include <stdio.h>

#include <conc.h>

static void *square(void *arg) {
    long n = *(long *)arg;
    return (void *)(intptr_t)(n * n);
}

int main(void) {
    long n = 12;
    conc_thread thread;
    void *result = NULL;
    if (conc_thread_spawn(&thread, square, &n) != CONC_OK ||
        conc_thread_join(thread, &result) != CONC_OK) {
        fprintf(stderr, "%s\n", conc_last_error_message());
        return 1;
    }
    printf("conc %s (header %d.%d.%d) from C: 12 * 12 = %ld\n", conc_version(),
           CONC_VERSION_MAJOR, CONC_VERSION_MINOR, CONC_VERSION_PATCH, (long)(intptr_t)result);
    return 0;
}
