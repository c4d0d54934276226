/* The error model through the C ABI: fixed status values, descriptions,
 * the version, and the per-thread last error. */
#include "check.h"

#include <pthread.h>

TEST(status_values_are_fixed) {
    CHECK(CONC_OK == 0);
    CHECK(CONC_ERR_INVALID_ARGUMENT == 1);
    CHECK(CONC_ERR_NOT_FOUND == 2);
    CHECK(CONC_ERR_ALREADY_EXISTS == 3);
    CHECK(CONC_ERR_PERMISSION_DENIED == 4);
    CHECK(CONC_ERR_OUT_OF_RANGE == 5);
    CHECK(CONC_ERR_INVALID_STATE == 6);
    CHECK(CONC_ERR_DEADLOCK == 7);
    CHECK(CONC_ERR_RESOURCE_EXHAUSTED == 8);
    CHECK(CONC_ERR_IO == 9);
    CHECK(CONC_ERR_UNSUPPORTED == 10);
    CHECK(CONC_ERR_PANIC == 11);
}

TEST(status_str_is_never_null) {
    for (int i = -3; i < 40; i++) {
        const char *s = conc_status_str((conc_status)i);
        CHECK(s != NULL);
        CHECK(s != NULL && s[0] != '\0');
    }
    CHECK(strcmp(conc_status_str(CONC_OK), "ok") == 0);
    CHECK(strcmp(conc_status_str(CONC_ERR_TIMED_OUT), "timed out") == 0);
    CHECK(strcmp(conc_status_str(CONC_ERR_SHUTDOWN), "shut down") == 0);
    CHECK(strcmp(conc_status_str((conc_status)16), "unknown status") == 0);
    CHECK(strcmp(conc_status_str((conc_status)-1), "unknown status") == 0);
}

TEST(version_matches_macros) {
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", CONC_VERSION_MAJOR, CONC_VERSION_MINOR,
             CONC_VERSION_PATCH);
    CHECK(conc_version() != NULL);
    CHECK(strcmp(conc_version(), want) == 0);
}

TEST(last_error_starts_empty) {
    const char *m = conc_last_error_message();
    CHECK(m != NULL);
    CHECK(m != NULL && m[0] == '\0');
    CHECK(conc_last_os_error() == 0);
}

int main(void) {
    RUN(status_values_are_fixed);
    RUN(status_str_is_never_null);
    RUN(version_matches_macros);
    RUN(last_error_starts_empty);
    return CHECK_SUMMARY();
}
