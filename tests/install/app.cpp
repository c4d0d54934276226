// Built by tests/install/run.sh against an installed conc, through CMake's
// find_package(conc): with conc::conc (libconc.a by default, libconc.so
// with CONC_USE_SHARED) and with conc::conc_shared.
#include <conc.hpp>

#include <iostream>

int main() {
    conc::thread t([](long n) { return n * n; }, 12L);
    std::cout << "conc " << conc::version() << " from C++: 12 * 12 = " << t.join() << "\n";
    try {
        conc::shm::open("bad/name");
    } catch (const conc::error& e) {
        std::cout << "conc::error: " << e.status_str() << "\n";
    }
    return 0;
}
