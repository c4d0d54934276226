// Tests of conc.hpp's synchronization classes: conc::mutex (with the
// standard lock guards, and conc::owner_dead after a holder was killed),
// conc::condition_variable, conc::semaphore, conc::barrier and conc::event,
// between threads and between processes (objects placed in a conc::shm).
//
// Each case runs in a forked child with a watchdog (check.hpp): a hang is a
// failure. Timeouts are checked from below only (never "fast enough"): the
// machine may be loaded.

#include "check.hpp"

#include <array>
#include <chrono>
#include <new>

using namespace std::chrono_literals;

// Each class is its C struct: size, alignment, standard layout, nothing to
// destroy; and, like std::mutex, neither copyable nor movable.
template <class T, class C>
constexpr bool same_layout = sizeof(T) == sizeof(C) && alignof(T) == alignof(C) &&
                             std::is_standard_layout_v<T> && std::is_trivially_destructible_v<T> &&
                             alignof(T) <= 8 && sizeof(T) <= 64;
static_assert(same_layout<conc::mutex, conc_mutex>);
static_assert(same_layout<conc::condition_variable, conc_cond>);
static_assert(same_layout<conc::semaphore, conc_sem>);
static_assert(same_layout<conc::barrier, conc_barrier>);
static_assert(same_layout<conc::event, conc_event>);

template <class T>
constexpr bool pinned = !std::is_copy_constructible_v<T> && !std::is_copy_assignable_v<T> &&
                        !std::is_move_constructible_v<T> && !std::is_move_assignable_v<T>;
static_assert(pinned<conc::mutex> && pinned<conc::condition_variable> &&
              pinned<conc::semaphore> && pinned<conc::barrier> && pinned<conc::event>);

static_assert(std::is_base_of_v<conc::error, conc::owner_dead>);
// A global mutex needs no run-time initialisation (constexpr constructor).
#if __cplusplus >= 202002L
constinit
#endif
    static conc::mutex global_mutex;

namespace {

using steady = std::chrono::steady_clock;

double ms_since(steady::time_point start) {
    return std::chrono::duration<double, std::milli>(steady::now() - start).count();
}

// A zero-filled segment shared with forked children; its name is removed at
// once, so nothing is left in /dev/shm whatever happens.
class segment {
public:
    explicit segment(std::size_t size = 4096) : shm_(conc::shm::create(size)) { shm_.unlink(); }
    // The zero bytes at `offset` (a multiple of 8), seen as a T.
    template <class T>
    T* at(std::size_t offset) {
        return reinterpret_cast<T*>(shm_.data() + offset);
    }

private:
    conc::shm shm_;
};

constexpr int killed_by_sigkill = 128 + SIGKILL;

// ---------------------------------------------------------------------------
// Durations

void durations_round_up_to_milliseconds() {
    using conc::detail::sync_timeout_ms;
    CHECK(sync_timeout_ms(0ms) == 0);
    CHECK(sync_timeout_ms(-5ms) == 0);
    CHECK(sync_timeout_ms(-1ns) == 0);
    CHECK(sync_timeout_ms(1ns) == 1);
    CHECK(sync_timeout_ms(1ms) == 1);
    CHECK(sync_timeout_ms(1500us) == 2);
    CHECK(sync_timeout_ms(2s) == 2000);
    CHECK(sync_timeout_ms(std::chrono::duration<double>(0.0015)) == 2);
    CHECK(sync_timeout_ms(std::chrono::duration<double>(-1.0)) == 0);
    CHECK(sync_timeout_ms(std::chrono::hours::max()) == UINT64_MAX);
    CHECK(sync_timeout_ms(std::chrono::nanoseconds::max()) == 9223372036855ULL);
}

// ---------------------------------------------------------------------------
// Mutex

void mutex_with_lock_guard_counts_exactly() {
    conc::mutex m;
    long counter = 0;
    std::vector<conc::thread<void>> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < 20000; ++i) {
                std::lock_guard<conc::mutex> guard(m);
                ++counter;
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(counter == 80000);

    std::lock_guard<conc::mutex> guard(global_mutex);
    CHECK(!global_mutex.try_lock());
}

void mutex_with_unique_lock() {
    conc::mutex m;
    {
        std::unique_lock<conc::mutex> lock(m);
        CHECK(lock.owns_lock());
        lock.unlock();
        CHECK(!lock.owns_lock());
        CHECK(lock.try_lock());
    }
    std::unique_lock<conc::mutex> deferred(m, std::defer_lock);
    CHECK(!deferred.owns_lock());
    deferred.lock();

    // Held here: another thread's try_to_lock and try_lock_for fail.
    conc::thread other([&] {
        std::unique_lock<conc::mutex> attempt(m, std::try_to_lock);
        CHECK(!attempt.owns_lock());
        const auto start = steady::now();
        std::unique_lock<conc::mutex> timed(m, 30ms);
        CHECK(!timed.owns_lock());
        CHECK(ms_since(start) >= 30.0);
    });
    other.join();
    deferred.unlock();

    conc::thread free([&] {
        std::unique_lock<conc::mutex> timed(m, 10s);
        CHECK(timed.owns_lock());
    });
    free.join();
}

void mutex_with_scoped_lock_in_opposite_orders() {
    conc::mutex a;
    conc::mutex b;
    long in_a = 0;
    long in_b = 0;
    conc::thread one([&] {
        for (int i = 0; i < 20000; ++i) {
            std::scoped_lock both(a, b);
            ++in_a;
            ++in_b;
        }
    });
    conc::thread two([&] {
        for (int i = 0; i < 20000; ++i) {
            std::scoped_lock both(b, a);  // the other order: std::lock avoids the deadlock
            ++in_a;
            ++in_b;
        }
    });
    one.join();
    two.join();
    CHECK(in_a == 40000 && in_b == 40000);
    CHECK(a.try_lock() && b.try_lock());
    a.unlock();
    b.unlock();
}

void mutex_misuse_throws() {
    conc::mutex m;
    CHECK_THROWS_STATUS(m.unlock(), CONC_ERR_INVALID_STATE);  // nobody holds it
    m.lock();
    CHECK_THROWS_STATUS(m.lock(), CONC_ERR_DEADLOCK);
    CHECK(!m.try_lock());  // held, by the caller too: false, not an exception
    CHECK_THROWS_STATUS(m.try_lock_for(1ms), CONC_ERR_DEADLOCK);
    CHECK_THROWS_STATUS(m.consistent(), CONC_ERR_INVALID_STATE);  // nothing to repair
    conc::thread other([&] {
        CHECK_THROWS_STATUS(m.unlock(), CONC_ERR_INVALID_STATE);  // not the holder
        CHECK(!m.try_lock());
    });
    other.join();
    m.unlock();  // still held by this thread after all that
    CHECK(m.try_lock());
    m.unlock();
}

struct guarded {
    conc::mutex m;
    std::int64_t a;  // a == b when consistent
    std::int64_t b;
    std::int64_t flag;
};

// A child takes the mutex, half-updates the data and dies by SIGKILL.
void kill_holder(guarded* g) {
    conc::process child([g] {
        g->m.lock();
        g->a += 1;
        ::raise(SIGKILL);
        return 0;
    });
    CHECK(child.join() == killed_by_sigkill);
}

void mutex_owner_dead_after_the_holder_is_killed() {
    segment seg;
    auto* g = new (seg.at<void>(0)) guarded{};
    kill_holder(g);

    bool thrown = false;
    try {
        g->m.lock();
    } catch (const conc::owner_dead& e) {
        thrown = true;
        CHECK(e.status() == CONC_ERR_OWNER_DEAD);
        // The mutex is held by this thread now: adopt it, repair, mark it.
        std::lock_guard<conc::mutex> guard(g->m, std::adopt_lock);
        CHECK_THROWS_STATUS(g->m.lock(), CONC_ERR_DEADLOCK);
        CHECK(g->a == g->b + 1);
        g->b = g->a;
        g->m.consistent();
    }
    CHECK(thrown);
    // Usable as before.
    {
        std::lock_guard<conc::mutex> guard(g->m);
        CHECK(g->a == 1 && g->b == 1);
    }
    CHECK(g->m.try_lock());
    g->m.unlock();
}

void mutex_owner_dead_from_try_lock_and_unusable_without_consistent() {
    segment seg;
    auto* g = new (seg.at<void>(0)) guarded{};
    kill_holder(g);

    bool thrown = false;
    try {
        (void)g->m.try_lock();
    } catch (const conc::error& e) {  // conc::owner_dead is a conc::error
        thrown = true;
        CHECK(e.status() == CONC_ERR_OWNER_DEAD);
        CHECK(dynamic_cast<const conc::owner_dead*>(&e) != nullptr);
    }
    CHECK(thrown);
    g->m.unlock();  // without consistent(): the mutex becomes unusable
    CHECK_THROWS_STATUS(g->m.lock(), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(g->m.try_lock(), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(g->m.try_lock_for(5ms), CONC_ERR_INVALID_STATE);
    // Zeroed again, it is a fresh mutex.
    new (&g->m) conc::mutex;
    CHECK(g->m.try_lock());
    g->m.unlock();
}

void mutex_from_zero_bytes_between_processes() {
    segment seg;
    auto* m = seg.at<conc::mutex>(0);  // zero-filled bytes are an unlocked mutex
    auto* counter = seg.at<std::int64_t>(64);
    constexpr int per_process = 20000;
    auto work = [&] {
        for (int i = 0; i < per_process; ++i) {
            std::lock_guard<conc::mutex> guard(*m);
            ++*counter;
        }
        return 0;
    };
    conc::process child(work);
    work();
    CHECK(child.join() == 0);
    CHECK(*counter == 2 * per_process);
}

// ---------------------------------------------------------------------------
// Condition variable

void cond_wait_with_predicate() {
    conc::mutex m;
    conc::condition_variable cv;
    int stage = 0;
    conc::thread other([&] {
        std::unique_lock<conc::mutex> lock(m);
        cv.wait(lock, [&] { return stage == 1; });
        CHECK(lock.owns_lock());
        stage = 2;
        cv.notify_all();
    });
    {
        std::lock_guard<conc::mutex> guard(m);
        stage = 1;
    }
    cv.notify_one();
    std::unique_lock<conc::mutex> lock(m);
    cv.wait(lock, [&] { return stage == 2; });
    CHECK(lock.owns_lock());
    lock.unlock();
    other.join();
}

void cond_wait_for_times_out_holding_the_mutex() {
    conc::mutex m;
    conc::condition_variable cv;
    std::unique_lock<conc::mutex> lock(m);

    auto start = steady::now();
    CHECK(cv.wait_for(lock, 50ms) == std::cv_status::timeout);
    CHECK(ms_since(start) >= 50.0);
    CHECK(lock.owns_lock());
    CHECK_THROWS_STATUS(m.lock(), CONC_ERR_DEADLOCK);  // held by this thread

    start = steady::now();
    CHECK(cv.wait_for(lock, 1500us) == std::cv_status::timeout);  // rounded up to 2 ms
    CHECK(ms_since(start) >= 1.5);
    CHECK(cv.wait_for(lock, 0ms) == std::cv_status::timeout);
    CHECK(cv.wait_for(lock, -3s) == std::cv_status::timeout);

    start = steady::now();
    CHECK(!cv.wait_for(lock, 40ms, [] { return false; }));
    CHECK(ms_since(start) >= 40.0);
    CHECK(lock.owns_lock());
    CHECK(cv.wait_for(lock, 0ms, [] { return true; }));
    CHECK(cv.wait_for(lock, std::chrono::hours::max(), [] { return true; }));
}

void cond_wait_for_with_predicate_wakes_when_notified() {
    conc::mutex m;
    conc::condition_variable cv;
    bool ready = false;
    conc::thread other([&] {
        conc::sleep_ms(20);
        std::lock_guard<conc::mutex> guard(m);
        ready = true;
        cv.notify_all();
    });
    std::unique_lock<conc::mutex> lock(m);
    CHECK(cv.wait_for(lock, 60s, [&] { return ready; }));
    lock.unlock();
    other.join();
}

void cond_needs_the_mutex_held() {
    conc::mutex m;
    conc::condition_variable cv;
    std::unique_lock<conc::mutex> not_held(m, std::defer_lock);
    CHECK_THROWS_STATUS(cv.wait(not_held), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(cv.wait_for(not_held, 10ms), CONC_ERR_INVALID_STATE);
    std::unique_lock<conc::mutex> empty;
    CHECK_THROWS_STATUS(cv.wait(empty), CONC_ERR_INVALID_STATE);
    CHECK(m.try_lock());  // nothing happened to the mutex
    m.unlock();
}

struct cond_shared {
    conc::mutex m;
    conc::condition_variable cv;
    std::int64_t stage;
};

void cond_between_processes() {
    segment seg;
    auto* s = new (seg.at<void>(0)) cond_shared{};
    conc::process child([s] {
        std::unique_lock<conc::mutex> lock(s->m);
        s->cv.wait(lock, [&] { return s->stage == 1; });
        s->stage = 2;
        s->cv.notify_all();
        return 0;
    });
    conc::sleep_ms(20);
    {
        std::unique_lock<conc::mutex> lock(s->m);
        s->stage = 1;
        s->cv.notify_all();
        CHECK(s->cv.wait_for(lock, 60s, [&] { return s->stage == 2; }));
    }
    CHECK(child.join() == 0);
}

// The holder dies while a waiter sleeps: the wait re-takes the mutex and
// throws conc::owner_dead, the lock still owning it.
void cond_wait_throws_owner_dead_with_the_mutex_held() {
    segment seg;
    auto* s = new (seg.at<void>(0)) cond_shared{};
    conc::process child;  // destroyed (joined) after the lock is released
    std::unique_lock<conc::mutex> lock(s->m);
    child = conc::process([s] {
        s->m.lock();  // gets it once the parent waits
        s->stage = 1;
        s->cv.notify_all();
        ::raise(SIGKILL);
        return 0;
    });
    bool thrown = false;
    try {
        s->cv.wait(lock, [&] { return s->stage == 1; });
    } catch (const conc::owner_dead&) {
        thrown = true;
        CHECK(lock.owns_lock());
        CHECK_THROWS_STATUS(s->m.lock(), CONC_ERR_DEADLOCK);
        s->m.consistent();
    }
    CHECK(thrown);
    lock.unlock();
    CHECK(child.join() == killed_by_sigkill);
    CHECK(s->m.try_lock());
    s->m.unlock();
}

// ---------------------------------------------------------------------------
// Semaphore

void semaphore_counts() {
    conc::semaphore zero;
    CHECK(zero.value() == 0);
    CHECK(!zero.try_acquire());

    conc::semaphore s(2);
    CHECK(s.value() == 2);
    CHECK(s.try_acquire());
    CHECK(s.try_acquire());
    CHECK(!s.try_acquire());
    const auto start = steady::now();
    CHECK(!s.try_acquire_for(30ms));
    CHECK(ms_since(start) >= 30.0);
    CHECK(!s.try_acquire_for(0ms));
    s.release();
    CHECK(s.value() == 1);
    CHECK(s.try_acquire_for(10s));
    CHECK(s.value() == 0);

    conc::thread poster([&] {
        conc::sleep_ms(20);
        s.release();
    });
    s.acquire();  // blocks until the thread posts
    poster.join();
    CHECK(s.value() == 0);
}

void semaphore_limits() {
    conc::semaphore top(CONC_SEM_VALUE_MAX);
    CHECK(top.value() == CONC_SEM_VALUE_MAX);
    CHECK_THROWS_STATUS(top.release(), CONC_ERR_OUT_OF_RANGE);
    CHECK(top.value() == CONC_SEM_VALUE_MAX);
#if CONC_SEM_VALUE_MAX < UINT32_MAX
    CHECK_THROWS_STATUS(conc::semaphore(static_cast<std::uint32_t>(CONC_SEM_VALUE_MAX) + 1U),
                        CONC_ERR_OUT_OF_RANGE);
#endif
}

void semaphore_ping_pong_between_processes() {
    segment seg;
    auto* ping = new (seg.at<void>(0)) conc::semaphore;
    auto* pong = new (seg.at<void>(64)) conc::semaphore;
    auto* value = seg.at<std::int64_t>(128);
    constexpr int rounds = 1000;
    conc::process child([=] {
        for (int i = 0; i < rounds; ++i) {
            ping->acquire();
            *value += 1;
            pong->release();
        }
        return 0;
    });
    for (int i = 0; i < rounds; ++i) {
        ping->release();
        pong->acquire();
        CHECK(*value == i + 1);
    }
    CHECK(child.join() == 0);
}

// ---------------------------------------------------------------------------
// Barrier

void barrier_one_leader_per_round() {
    constexpr int threads_n = 4;
    constexpr int rounds = 100;
    conc::barrier b(threads_n);
    std::array<std::atomic<int>, rounds> leaders{};
    std::atomic<int> arrived{0};
    std::atomic<int> slipped{0};
    std::vector<conc::thread<void>> threads;
    for (int t = 0; t < threads_n; ++t) {
        threads.emplace_back([&] {
            for (int r = 0; r < rounds; ++r) {
                arrived.fetch_add(1);
                if (b.arrive_and_wait()) {
                    leaders[static_cast<std::size_t>(r)].fetch_add(1);
                }
                // Nobody leaves round r before all of round r arrived.
                if (arrived.load() < threads_n * (r + 1)) {
                    slipped.fetch_add(1);
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(slipped.load() == 0);
    for (int r = 0; r < rounds; ++r) {
        CHECK(leaders[static_cast<std::size_t>(r)].load() == 1);
    }
}

void barrier_of_one_and_bad_counts() {
    conc::barrier alone(1);
    CHECK(alone.arrive_and_wait());
    CHECK(alone.arrive_and_wait());
    CHECK_THROWS_STATUS(conc::barrier(0), CONC_ERR_INVALID_ARGUMENT);
    segment seg;
    auto* never_initialised = seg.at<conc::barrier>(0);
    CHECK_THROWS_STATUS(never_initialised->arrive_and_wait(), CONC_ERR_INVALID_STATE);
}

void barrier_between_processes() {
    segment seg;
    auto* b = new (seg.at<void>(0)) conc::barrier(2);
    auto* leaders = seg.at<std::int64_t>(64);  // one leader per round, counted by the leader
    constexpr int rounds = 200;
    auto work = [=] {
        for (int r = 0; r < rounds; ++r) {
            if (b->arrive_and_wait()) {
                leaders[r] += 1;  // only the leader of round r writes here
            }
        }
        return 0;
    };
    conc::process child(work);
    work();
    CHECK(child.join() == 0);
    for (int r = 0; r < rounds; ++r) {
        CHECK(leaders[r] == 1);
    }
}

// ---------------------------------------------------------------------------
// Event

void event_set_clear_and_timeouts() {
    conc::event e;
    CHECK(!e.is_set());
    const auto start = steady::now();
    CHECK(!e.wait_for(30ms));
    CHECK(ms_since(start) >= 30.0);
    CHECK(!e.wait_for(0ms));
    e.set();
    CHECK(e.is_set());
    e.wait();
    CHECK(e.wait_for(0ms));
    e.set();  // twice: still set
    CHECK(e.is_set());
    e.clear();
    CHECK(!e.is_set());
    CHECK(!e.wait_for(1ms));
}

void event_wakes_every_waiting_thread() {
    conc::event e;
    std::atomic<int> woken{0};
    std::vector<conc::thread<void>> threads;
    for (int t = 0; t < 3; ++t) {
        threads.emplace_back([&] {
            e.wait();
            woken.fetch_add(1);
        });
    }
    conc::sleep_ms(20);
    CHECK(woken.load() == 0);
    e.set();
    for (auto& t : threads) {
        t.join();
    }
    CHECK(woken.load() == 3);
}

void event_between_processes() {
    segment seg;
    auto* go = new (seg.at<void>(0)) conc::event;
    auto* done = seg.at<conc::event>(64);  // zero bytes: a cleared event
    auto* seen = seg.at<std::int64_t>(128);
    conc::process child([=] {
        go->wait();
        *seen = 1;
        done->set();
        return 0;
    });
    CHECK(!done->wait_for(30ms));  // the child waits for `go`
    CHECK(*seen == 0);
    go->set();
    CHECK(done->wait_for(60s));
    CHECK(*seen == 1);
    CHECK(child.join() == 0);
}

}  // namespace

int main() {
    RUN(durations_round_up_to_milliseconds);
    RUN(mutex_with_lock_guard_counts_exactly);
    RUN(mutex_with_unique_lock);
    RUN(mutex_with_scoped_lock_in_opposite_orders);
    RUN(mutex_misuse_throws);
    RUN(mutex_owner_dead_after_the_holder_is_killed);
    RUN(mutex_owner_dead_from_try_lock_and_unusable_without_consistent);
    RUN(mutex_from_zero_bytes_between_processes);
    RUN(cond_wait_with_predicate);
    RUN(cond_wait_for_times_out_holding_the_mutex);
    RUN(cond_wait_for_with_predicate_wakes_when_notified);
    RUN(cond_needs_the_mutex_held);
    RUN(cond_between_processes);
    RUN(cond_wait_throws_owner_dead_with_the_mutex_held);
    RUN(semaphore_counts);
    RUN(semaphore_limits);
    RUN(semaphore_ping_pong_between_processes);
    RUN(barrier_one_leader_per_round);
    RUN(barrier_of_one_and_bad_counts);
    RUN(barrier_between_processes);
    RUN(event_set_clear_and_timeouts);
    RUN(event_wakes_every_waiting_thread);
    RUN(event_between_processes);
    return CHECK_SUMMARY();
}
