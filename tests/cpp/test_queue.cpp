// Tests of conc::queue<T>, the C++ face of the queues between processes.
// `make test` builds this file with g++ and clang++, as C++17 and C++20.

#include "check.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

static_assert(!std::is_copy_constructible_v<conc::queue<int>> &&
              std::is_nothrow_move_constructible_v<conc::queue<int>> &&
              std::is_nothrow_move_assignable_v<conc::queue<int>>);

namespace {

struct job {
    std::uint32_t index;
    double weight;
};

bool in_dev_shm(std::string_view name) {
    const std::string path = "/dev/shm/" + std::string(name);
    return ::access(path.c_str(), F_OK) == 0;
}

std::string unique(const char* tag) {
    return "cqq" + std::to_string(::getpid()) + "_" + tag;
}

}  // namespace

void push_pop_in_order() {
    auto q = conc::queue<job>::create(8);
    CHECK(q.capacity() == 8);
    CHECK(q.size() == 0);
    CHECK(q.name().substr(0, 4) == "psm_");
    for (std::uint32_t i = 0; i < 5; ++i) {
        q.push(job{i, i * 0.5});
    }
    CHECK(q.size() == 5);
    for (std::uint32_t i = 0; i < 5; ++i) {
        const job j = q.pop();
        CHECK(j.index == i && j.weight == i * 0.5);
    }
    CHECK(!q.try_pop().has_value());
    CHECK(q.try_push(job{7, 1}));
    const auto got = q.try_pop();
    CHECK(got.has_value() && got->index == 7);
}

void timeouts_and_full() {
    auto q = conc::queue<int>::create(2);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(!q.pop_for(std::chrono::milliseconds(30)).has_value());
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(30));
    CHECK(!q.pop_for(std::chrono::seconds(-1)).has_value());
    q.push(1);
    CHECK(q.push_for(2, std::chrono::microseconds(1)));
    CHECK(!q.try_push(3));
    CHECK(!q.push_for(3, std::chrono::milliseconds(10)));
    CHECK(q.pop_for(std::chrono::hours(1)) == 1);
    CHECK(q.pop_for(std::chrono::nanoseconds(1)) == 2);
}

void shutdown_then_empty_throws() {
    auto q = conc::queue<int>::create(4);
    q.push(10);
    q.shutdown();
    q.shutdown();
    CHECK_THROWS_STATUS(q.push(11), CONC_ERR_SHUTDOWN);
    CHECK_THROWS_STATUS(q.try_push(11), CONC_ERR_SHUTDOWN);
    CHECK(q.pop() == 10);
    CHECK_THROWS_STATUS(q.pop(), CONC_ERR_SHUTDOWN);
    CHECK_THROWS_STATUS(q.try_pop(), CONC_ERR_SHUTDOWN);
    CHECK_THROWS_STATUS(q.pop_for(std::chrono::milliseconds(5)), CONC_ERR_SHUTDOWN);
}

void create_unlinks_unless_kept_and_open_never_does() {
    std::string name;
    {
        auto q = conc::queue<int>::create(unique("drop"), 4);
        name = std::string(q.name());
        CHECK(in_dev_shm(name));
        {
            auto o = conc::queue<int>::open(name);
            o.push(5);
        }
        CHECK(in_dev_shm(name));  // open never unlinks
        CHECK(q.pop() == 5);
    }
    CHECK(!in_dev_shm(name));  // create did, on destruction

    {
        auto q = conc::queue<int>::create(unique("kept"), 4);
        q.push(6);
        q.keep();
        name = std::string(q.name());
    }
    CHECK(in_dev_shm(name));
    {
        auto o = conc::queue<int>::open(name);
        CHECK(o.pop() == 6);
        o.unlink();
    }
    CHECK(!in_dev_shm(name));

    // unlink() gives the name up: a queue made under it afterwards (as by
    // another process) outlives the first one's destruction.
    {
        auto q = conc::queue<int>::create(unique("relink"), 4);
        CHECK(q.owns_name());
        name = std::string(q.name());
        q.unlink();
        CHECK(!q.owns_name());
        CHECK_THROWS_STATUS(q.unlink(), CONC_ERR_NOT_FOUND);
        conc::queue<int>::create(name, 4).keep();
    }
    CHECK(in_dev_shm(name));
    conc::queue<int>::open(name).unlink();
    CHECK(!in_dev_shm(name));

    // Closing after the name was removed by name is no error either.
    {
        auto q = conc::queue<int>::create(unique("gone"), 4);
        name = std::string(q.name());
        conc::shm::unlink_name(name);
        q.close();
        CHECK(!q.is_open());
    }

    // An exception leaves no segment behind.
    try {
        auto q = conc::queue<int>::create(unique("throw"), 4);
        name = std::string(q.name());
        throw std::runtime_error("boom");
    } catch (const std::runtime_error&) {
    }
    CHECK(!in_dev_shm(name));

    // Moving carries the duty to unlink.
    {
        auto a = conc::queue<int>::create(unique("move"), 1);
        name = std::string(a.name());
        conc::queue<int> b = std::move(a);
        CHECK(!a.is_open());
        CHECK_THROWS_STATUS(a.push(1), CONC_ERR_INVALID_STATE);
        CHECK_THROWS_STATUS(a.pop(), CONC_ERR_INVALID_STATE);
        conc::queue<int> c;
        c = std::move(b);
        CHECK(in_dev_shm(name));
    }
    CHECK(!in_dev_shm(name));
}

void open_checks_the_message_size() {
    auto q = conc::queue<std::uint64_t>::create(4);
    CHECK_THROWS_STATUS(conc::queue<std::uint32_t>::open(q.name()), CONC_ERR_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(conc::queue<job>::open(q.name()), CONC_ERR_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(conc::queue<int>::open(unique("missing")), CONC_ERR_NOT_FOUND);
    CHECK_THROWS_STATUS(conc::queue<int>::create(std::string_view("a\0b", 3), 1),
                        CONC_ERR_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(conc::queue<int>::create(0), CONC_ERR_INVALID_ARGUMENT);
    auto same = conc::queue<std::uint64_t>::open(q.name());
    same.push(42);
    CHECK(q.pop() == 42u);
    // A short message pushed through the C API is refused, not garbage.
    CHECK(conc_queue_push(q.native_handle(), "abc", 3) == CONC_OK);
    CHECK_THROWS_STATUS(q.pop(), CONC_ERR_INVALID_STATE);
}

void across_processes() {
    auto q = conc::queue<int>::create(4);
    auto results = conc::queue<int>::create(64);
    const std::string name(q.name());
    const pid_t pid = ::fork();
    if (pid == 0) {
        int code = 0;
        try {
            auto in = conc::queue<int>::open(name);
            for (;;) {
                results.push(in.pop() * 2);
            }
        } catch (const conc::error& e) {
            code = e.status() == CONC_ERR_SHUTDOWN ? 0 : 1;
        }
        results.release();  // the parent owns the names
        q.release();
        ::_exit(code);
    }
    for (int i = 0; i < 50; ++i) {
        q.push(i);
    }
    q.shutdown();
    int status = -1;
    CHECK(::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    int sum = 0;
    while (auto r = results.try_pop()) {
        sum += *r;
    }
    CHECK(sum == 2 * (49 * 50 / 2));
}

int main() {
    RUN(push_pop_in_order);
    RUN(timeouts_and_full);
    RUN(shutdown_then_empty_throws);
    RUN(create_unlinks_unless_kept_and_open_never_does);
    RUN(open_checks_the_message_size);
    RUN(across_processes);
    return CHECK_SUMMARY();
}
