/* C tests of the list API (to be written). */
#include "check.h"

int main(void) { return CHECK_SUMMARY(); }
