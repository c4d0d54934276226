// Recursive Fibonacci with nested conc::spawn: each call above a cutoff
// spawns a task for fib(n - 1), computes fib(n - 2) itself, then joins.
// Joining from inside a task never deadlocks, however deep: a waiting
// thread runs queued tasks meanwhile (so the default pool's few threads
// serve thousands of nested tasks).
#include <chrono>
#include <cstdio>

#include "conc.hpp"

namespace {

long fib_serial(long n) { return n < 2 ? n : fib_serial(n - 1) + fib_serial(n - 2); }

long fib(long n) {
    if (n < 20) {
        return fib_serial(n);  // small enough: a task would cost more than it saves
    }
    conc::task<long> a = conc::spawn(fib, n - 1);
    long b = fib(n - 2);
    return a.join() + b;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main() {
    const long n = 32;
    auto t0 = std::chrono::steady_clock::now();
    long serial = fib_serial(n);
    double serial_ms = ms_since(t0);

    t0 = std::chrono::steady_clock::now();
    long parallel = fib(n);
    double parallel_ms = ms_since(t0);

    std::printf("fib(%ld) = %ld with nested conc::spawn (%.1f ms on the default pool of %zu threads)\n",
                n, parallel, parallel_ms, conc_pool_threads(nullptr));
    std::printf("fib(%ld) = %ld serially (%.1f ms)\n", n, serial, serial_ms);
    return parallel == serial ? 0 : 1;
}
