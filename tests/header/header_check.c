/* Compiled as C99, C11, C++11, C++17 and C++20 with -pedantic -Werror by
 * `make test`: conc.h must be clean in every mode users build with. */
#include "conc.h"

int main(void) {
    conc_status s = CONC_OK;
    return (int)s + (conc_status_str(s) == 0);
}
