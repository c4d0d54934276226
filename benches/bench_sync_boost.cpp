/* Uncontended lock + unlock, one thread: conc::mutex (conc.hpp over
 * conc_mutex) against Boost.Interprocess's interprocess_mutex, the usual
 * C++ choice for a mutex in shared memory. Interleaved rounds, medians,
 * one REPORT row (ratio = conc / Boost, lower is better). Goal: <= 1.0.
 *
 * Boost is optional: without <boost/interprocess/sync/interprocess_mutex.hpp>
 * (Debian's libboost-dev; `make bench-deps` installs it) this prints a
 * skip note and exits 0. Times are wall-clock; nothing asserts on them. */
#include "conc.hpp"
#include "report.h"

#if __has_include(<boost/interprocess/sync/interprocess_mutex.hpp>)
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/version.hpp>

#include <chrono>
#include <cstdio>

namespace {

constexpr int rounds = 9;     // at least 7
constexpr int ops = 2000000;  // lock+unlock pairs per sample

conc::mutex conc_mutex_;
boost::interprocess::interprocess_mutex boost_mutex;

template <class Mutex>
double ns_per_pair(Mutex& m) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < ops; ++i) {
        m.lock();
        m.unlock();
    }
    const std::chrono::duration<double, std::nano> t = std::chrono::steady_clock::now() - t0;
    return t.count() / ops;
}

double median_of(const double* v, int n) {
    double copy[rounds];
    for (int i = 0; i < n; ++i) {
        copy[i] = v[i];
    }
    return report_median(copy, n);
}

}  // namespace

int main() {
    ns_per_pair(conc_mutex_);  // warm up
    ns_per_pair(boost_mutex);
    double c[rounds];
    double b[rounds];
    double ratio[rounds];
    for (int r = 0; r < rounds; ++r) {
        if (r % 2 == 0) {
            c[r] = ns_per_pair(conc_mutex_);
            b[r] = ns_per_pair(boost_mutex);
        } else {
            b[r] = ns_per_pair(boost_mutex);
            c[r] = ns_per_pair(conc_mutex_);
        }
        ratio[r] = c[r] / b[r];
    }
    const double cm = median_of(c, rounds);
    const double bm = median_of(b, rounds);
    std::printf("uncontended lock+unlock, one thread (%d rounds x %d pairs, median):\n", rounds,
                ops);
    std::printf("  conc::mutex                                %7.2f ns\n", cm);
    std::printf("  boost::interprocess::interprocess_mutex    %7.2f ns (Boost %d.%d)\n", bm,
                BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000);
    report_row("sync: uncontended lock+unlock vs Boost.Interprocess interprocess_mutex", cm, bm,
               "ns", 1.0, "lower", ratio, rounds);
    return 0;
}

#else

int main() {
    report_skip("sync: uncontended lock+unlock vs Boost.Interprocess interprocess_mutex",
                "<boost/interprocess/sync/interprocess_mutex.hpp> not found; make bench-deps "
                "installs libboost-dev");
    return 0;
}

#endif
