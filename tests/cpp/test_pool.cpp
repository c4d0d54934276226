// conc::spawn, conc::task, conc::parallel_for and conc::pool.
#include "check.hpp"

#include <numeric>

using namespace conc_test;

namespace {

long fib(long n) {
    if (n < 2) return n;
    if (n < 12) return fib(n - 1) + fib(n - 2);
    auto a = conc::spawn(fib, n - 1);
    long b = fib(n - 2);
    return a.join() + b;
}

void spawn_returns_results() {
    auto t = conc::spawn([](int a, int b) { return a + b; }, 2, 3);
    CHECK(t.joinable());
    CHECK(t.join() == 5);
    CHECK(!t.joinable());
    CHECK_THROWS_STATUS(t.join(), CONC_ERR_INVALID_STATE);

    auto s = conc::spawn([] { return std::string("pool"); });
    CHECK(s.join() == "pool");

    int x = 0;
    auto v = conc::spawn([&x] { x = 7; });
    v.join();
    CHECK(x == 7);

    int target = 1;
    auto r = conc::spawn([&target]() -> int& { return target; });
    CHECK(&r.join() == &target);

    auto m = conc::spawn([p = std::make_unique<int>(9)] { return *p; });  // move-only callable
    CHECK(m.join() == 9);
}

void join_rethrows_the_tasks_exception() {
    auto t = conc::spawn([]() -> int { throw std::runtime_error("from a task"); });
    try {
        (void)t.join();
        check_failed(__FILE__, __LINE__, "join did not rethrow");
    } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()) == "from a task");
    }
    CHECK(!t.joinable());
}

void destroying_an_unjoined_task_joins_it() {
    std::atomic<bool> ran{false};
    {
        auto t = conc::spawn([&ran] {
            conc::sleep_ms(20);
            ran = true;
        });
    }
    CHECK(ran.load());
    // Move-assigning over a joinable task joins it too.
    std::atomic<int> count{0};
    auto a = conc::spawn([&count] {
        conc::sleep_ms(10);
        ++count;
    });
    a = conc::spawn([&count] { ++count; });
    CHECK(count.load() >= 1);
    a.join();
    CHECK(count.load() == 2);
}

void wait_for_times_out_then_join_gives_the_result() {
    std::atomic<bool> go{false};
    auto t = conc::spawn([&go] {
        while (!go.load()) conc::sleep_ms(1);
        return 42;
    });
    conc::sleep_ms(10);
    CHECK(!t.wait_for(std::chrono::milliseconds(20)));
    CHECK(t.joinable());
    go = true;
    CHECK(t.wait_for(std::chrono::seconds(10)));
    CHECK(t.joinable());
    CHECK(t.join() == 42);
    CHECK(!t.joinable());
}

void nested_spawns_compute_fib() {
    CHECK(fib(25) == 75025);
    conc::pool one(1);
    auto t = one.spawn([&one] {
        // Deep nesting on a one-thread pool: joins help, so no deadlock.
        std::function<int(int)> nest = [&](int n) -> int {
            if (n == 0) return 0;
            auto c = one.spawn(nest, n - 1);
            return c.join() + 1;
        };
        return nest(300);
    });
    CHECK(t.join() == 300);
}

void parallel_for_visits_every_index_once() {
    std::vector<std::atomic<int>> hits(10000);
    conc::parallel_for(std::size_t{0}, hits.size(), [&](std::size_t i) { ++hits[i]; });
    bool once = std::all_of(hits.begin(), hits.end(), [](const std::atomic<int>& h) { return h == 1; });
    CHECK(once);

    // Signed bounds, negative too, and a grain.
    std::vector<std::atomic<int>> seen(200);
    conc::parallel_for(-100, 100, 7, [&](int i) { ++seen[static_cast<std::size_t>(i + 100)]; });
    once = std::all_of(seen.begin(), seen.end(), [](const std::atomic<int>& h) { return h == 1; });
    CHECK(once);

    int calls = 0;
    conc::parallel_for(5, 5, [&](int) { ++calls; });
    conc::parallel_for(6, 5, [&](int) { ++calls; });
    CHECK(calls == 0);
}

void parallel_for_rethrows_the_first_exception() {
    std::atomic<int> ran{0};
    try {
        conc::parallel_for(0, 1000, 1, [&](int i) {
            ++ran;
            if (i == 10) throw std::logic_error("index 10");
        });
        check_failed(__FILE__, __LINE__, "parallel_for did not rethrow");
    } catch (const std::logic_error& e) {
        CHECK(std::string(e.what()) == "index 10");
    }
    CHECK(ran.load() >= 1);
}

void pools_spawn_loop_and_close() {
    conc::pool p(3);
    CHECK(p.is_open());
    CHECK(p.threads() == 3);
    auto t = p.spawn([](long n) { return n * 2; }, 21L);
    std::atomic<long> sum{0};
    p.parallel_for(0L, 1000L, [&](long i) { sum += i; });
    CHECK(sum.load() == 499500);
    // Closing waits for queued tasks; the handle stays joinable.
    p.close();
    CHECK(!p.is_open());
    CHECK(t.join() == 42);
    CHECK_THROWS_STATUS(p.spawn([] { return 0; }), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(p.parallel_for(0, 1, [](int) {}), CONC_ERR_INVALID_STATE);

    conc::pool q(2);
    conc::pool moved(std::move(q));
    CHECK(!q.is_open());
    CHECK(moved.threads() == 2);
    auto u = moved.spawn([&moved] {
        try {
            moved.close();
        } catch (const conc::error& e) {
            return e.status();
        }
        return CONC_OK;
    });
    CHECK(u.join() == CONC_ERR_DEADLOCK);
    CHECK(moved.is_open());
}

void default_pool_in_a_child_process() {
    auto before = conc::spawn([] { return 1; });
    CHECK(before.join() == 1);
    conc::process child([] {
        long sum = 0;
        std::atomic<long> total{0};
        conc::parallel_for(0L, 100L, [&](long i) { total += i; });
        sum = total.load();
        return conc::spawn([sum] { return sum == 4950 ? 0 : 1; }).join();
    });
    CHECK(child.join() == 0);
}

}  // namespace

int main() {
    RUN(spawn_returns_results);
    RUN(join_rethrows_the_tasks_exception);
    RUN(destroying_an_unjoined_task_joins_it);
    RUN(wait_for_times_out_then_join_gives_the_result);
    RUN(nested_spawns_compute_fib);
    RUN(parallel_for_visits_every_index_once);
    RUN(parallel_for_rethrows_the_first_exception);
    RUN(pools_spawn_loop_and_close);
    RUN(default_pool_in_a_child_process);
    return CHECK_SUMMARY();
}
