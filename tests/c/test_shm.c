/* C tests of the shm API (to be written). */
#include "check.h"

int main(void) { return CHECK_SUMMARY(); }
