/* C tests of the thread API (to be written). */
#include "check.h"

int main(void) { return CHECK_SUMMARY(); }
