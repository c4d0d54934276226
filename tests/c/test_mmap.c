/* C tests of the mmap API (to be written). */
#include "check.h"

int main(void) { return CHECK_SUMMARY(); }
