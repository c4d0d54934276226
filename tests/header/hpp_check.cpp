/* Compiled as C++17 and C++20 with g++ and clang++ (-pedantic -Werror and
 * more) by `make test`: conc.hpp, its templates instantiated, must be
 * clean in every mode users build with. */
#include "conc.hpp"

#include <cstdint>
#include <string_view>

int main() {
    conc::thread t([](int x) { return x + 1; }, 1);
    conc::thread<void> v([] {});
    conc::thread named(conc::thread_options{"named", 0}, [] { return 0.5; });
    int total = t.join();
    v.join();
    total += static_cast<int>(named.join());

    conc::mmap map = conc::mmap::anonymous(16);
    for (std::string_view line : map.lines()) {
        total += static_cast<int>(line.size());
    }
    total += map.find("x").value_or(0) > 0;

    auto shm = conc::shm::create(8);
    auto ints = conc::list<std::int64_t>::create(4);
    auto reals = conc::list<double>::create(4);
    ints[0] = 1;
    reals[1] = 2.5;
    conc::process p([&] { return static_cast<int>(ints[0]); });
    total += p.join();
    shm.unlink();
    ints.unlink();
    reals.unlink();
    return total == 0;
}
