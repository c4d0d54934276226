// fib(30), a task per call while n >= 15, on conc's default pool against
// TBB's task_group (goal: <= 1.0x), interleaved over 7 rounds. Built only
// against TBB when <tbb/task_group.h> exists (libtbb-dev); otherwise it
// prints a skip note.
#include <cstdint>
#include <cstdio>
#include <ctime>

#include "conc.h"
#include "report.h"

#if __has_include(<tbb/task_group.h>)
#include <tbb/global_control.h>
#include <tbb/task_group.h>

namespace {

constexpr long kN = 30, kCutoff = 15;
constexpr int kRounds = 7;

double now() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}

long fib_serial(long n) { return n < 2 ? n : fib_serial(n - 1) + fib_serial(n - 2); }

void *fib_conc_task(void *arg);

long fib_conc(long n) {
    if (n < kCutoff) return fib_serial(n);
    conc_task t;
    if (conc_task_spawn(&t, nullptr, fib_conc_task, reinterpret_cast<void *>(n - 1)) != CONC_OK)
        return -1;
    long b = fib_conc(n - 2);
    void *a = nullptr;
    if (conc_task_join(t, &a) != CONC_OK) return -1;
    return reinterpret_cast<long>(a) + b;
}

void *fib_conc_task(void *arg) {
    return reinterpret_cast<void *>(fib_conc(reinterpret_cast<long>(arg)));
}

long fib_tbb(long n) {
    if (n < kCutoff) return fib_serial(n);
    long a = 0;
    tbb::task_group g;
    g.run([&] { a = fib_tbb(n - 1); });
    long b = fib_tbb(n - 2);
    g.wait();
    return a + b;
}

template <class F> double best_ms(F f) {
    double best = 1e30;
    for (int i = 0; i < 3; i++) {
        double t0 = now();
        if (f() != 832040) std::exit(1);
        double t = (now() - t0) * 1e3;
        best = t < best ? t : best;
    }
    return best;
}

}  // namespace

int main() {
    tbb::global_control threads(tbb::global_control::max_allowed_parallelism,
                                conc_pool_threads(nullptr));
    double c[kRounds], t[kRounds], r[kRounds];
    for (int i = 0; i < kRounds; i++) {
        c[i] = best_ms([] { return fib_conc(kN); });
        t[i] = best_ms([] { return fib_tbb(kN); });
        r[i] = c[i] / t[i];
        std::printf("round %d: fib(30) conc %.2f ms, TBB task_group %.2f ms\n", i, c[i], t[i]);
    }
    report_row("fib(30) tasks vs TBB task_group", report_median(c, kRounds),
               report_median(t, kRounds), "ms", 1.0, "lower", r, kRounds);
    return 0;
}

#else

int main() {
    report_skip("fib(30) tasks vs TBB task_group", "<tbb/task_group.h> not found: install libtbb-dev");
    return 0;
}

#endif
