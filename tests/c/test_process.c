/* C tests of the process API (to be written). */
#include "check.h"

int main(void) { return CHECK_SUMMARY(); }
