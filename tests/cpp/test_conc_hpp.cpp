// Tests of conc.hpp, the C++ layer over conc.h. `make test` builds this
// file with g++ and clang++, as C++17 and C++20, and runs each build.
//
// Each case runs in a forked child (a crash is one failed case); the
// program prints failures and ends with "N passed, N failed".

#include "check.hpp"

// The lines of a map are a forward range of string_views.
static_assert(std::is_same_v<std::iterator_traits<conc::line_iterator>::value_type, std::string_view>);
#if __cplusplus >= 202002L
static_assert(std::forward_iterator<conc::line_iterator>);
static_assert(std::ranges::forward_range<conc::line_range>);
#endif
// Handles are move-only.
static_assert(!std::is_copy_constructible_v<conc::thread<int>> &&
              std::is_nothrow_move_constructible_v<conc::thread<int>>);
static_assert(!std::is_copy_constructible_v<conc::mmap> && std::is_nothrow_move_assignable_v<conc::mmap>);
static_assert(!std::is_copy_constructible_v<conc::shm> && std::is_nothrow_move_assignable_v<conc::shm>);
static_assert(!std::is_copy_constructible_v<conc::list<double>> &&
              std::is_nothrow_move_assignable_v<conc::list<double>>);
static_assert(!std::is_copy_constructible_v<conc::process> &&
              std::is_nothrow_move_assignable_v<conc::process>);

namespace {

// ---------------------------------------------------------------------------
// Threads

void thread_join_returns_the_value() {
    conc::thread t([] { return 6 * 7; });
    static_assert(std::is_same_v<decltype(t), conc::thread<int>>);
    CHECK(t.joinable());
    CHECK(t.native_handle().id != 0);
    CHECK(t.join() == 42);
    CHECK(!t.joinable());
}

void thread_passes_arguments() {
    conc::thread t([](int n, const std::string& s) { return s + std::to_string(n); }, 7,
                   std::string("x"));
    static_assert(std::is_same_v<decltype(t), conc::thread<std::string>>);
    CHECK(t.join() == "x7");
}

void thread_void_and_captures() {
    int n = 0;
    conc::thread t([&n] { n = 5; });
    static_assert(std::is_same_v<decltype(t), conc::thread<void>>);
    t.join();
    CHECK(n == 5);

    conc::thread<void> discarding([] { return 3; });  // an explicit void drops the value
    discarding.join();
}

void thread_move_only_callable_and_result() {
    auto owned = std::make_unique<int>(9);
    conc::thread t([p = std::move(owned)]() mutable { return std::move(p); });
    std::unique_ptr<int> back = t.join();
    CHECK(back != nullptr && *back == 9);
}

void thread_reference_result() {
    int x = 3;
    conc::thread t([&x]() -> int& { return x; });
    int& r = t.join();
    CHECK(&r == &x);
}

void thread_many_threads() {
    std::vector<conc::thread<long>> threads;
    for (long i = 1; i <= 16; ++i) {
        threads.emplace_back([i] { return i * i; });
    }
    long sum = 0;
    for (auto& t : threads) {
        sum += t.join();
    }
    CHECK(sum == 1496);  // 1^2 + ... + 16^2
}

struct custom_failure {
    int code;
};

void thread_exception_is_rethrown_by_join() {
    conc::thread t([]() -> int { throw std::runtime_error("boom"); });
    try {
        (void)t.join();
        check_failed(__FILE__, __LINE__, "join did not rethrow");
    } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()) == "boom");
    }
    CHECK(!t.joinable());

    conc::thread<void> u([] { throw custom_failure{17}; });
    try {
        u.join();
        check_failed(__FILE__, __LINE__, "join did not rethrow");
    } catch (const custom_failure& e) {
        CHECK(e.code == 17);
    }
}

void thread_join_twice_is_invalid_state() {
    conc::thread t([] { return 1; });
    CHECK(t.join() == 1);
    CHECK_THROWS_STATUS(t.join(), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(t.detach(), CONC_ERR_INVALID_STATE);

    conc::thread<int> empty;
    CHECK(!empty.joinable());
    CHECK_THROWS_STATUS(empty.join(), CONC_ERR_INVALID_STATE);
}

void thread_moves() {
    conc::thread a([] { return 1; });
    conc::thread b(std::move(a));
    CHECK(!a.joinable());  // NOLINT: moved-from handles are inert by design
    CHECK(a.native_handle().id == 0);
    CHECK_THROWS_STATUS(a.join(), CONC_ERR_INVALID_STATE);
    CHECK(b.join() == 1);

    // Assigning over a joinable thread joins it first.
    std::atomic<bool> first_done{false};
    conc::thread<void> c([&first_done] {
        conc::sleep_ms(30);
        first_done = true;
    });
    c = conc::thread<void>([] {});
    CHECK(first_done);
    c.join();
}

void thread_destructor_joins() {
    std::atomic<bool> done{false};
    {
        conc::thread<void> t([&done] {
            conc::sleep_for(std::chrono::milliseconds(30));
            done = true;
        });
    }
    CHECK(done);
    {
        // Its exception is discarded, never crosses into C.
        conc::thread<void> t([] { throw std::logic_error("dropped"); });
    }
}

void thread_detach() {
    std::atomic<bool> ran{false};
    conc::thread<void> t([&ran] { ran = true; });
    t.detach();
    CHECK(!t.joinable());
    for (int i = 0; i < 5000 && !ran; ++i) {
        conc::sleep_ms(1);
    }
    CHECK(ran);
}

void thread_options_name_and_stack() {
    conc::thread_options options;
    options.name = "hpp-worker";
    options.stack_size = 1 << 20;
    conc::thread t(options, [] {
        char name[32] = {};
        pthread_getname_np(pthread_self(), name, sizeof name);
        volatile char big[256 * 1024];  // fits the requested stack
        big[0] = 1;
        big[sizeof big - 1] = 2;
        return std::string(name);
    });
    static_assert(std::is_same_v<decltype(t), conc::thread<std::string>>);
    CHECK(t.join() == "hpp-worker");

    conc::thread_options bad;
    bad.name = std::string("a\0b", 3);
    auto e = error_of([&] { conc::thread u(bad, [] {}); });
    CHECK(e && e->status() == CONC_ERR_INVALID_ARGUMENT);
}

void thread_self_join_is_deadlock() {
    std::atomic<conc::thread<void>*> self{nullptr};
    std::atomic<int> seen{-1};
    conc::thread<void> t([&] {
        conc::thread<void>* me = nullptr;
        while ((me = self.load()) == nullptr) {
            conc::yield();
        }
        try {
            me->join();
            seen = CONC_OK;
        } catch (const conc::error& e) {
            seen = static_cast<int>(e.status());
        }
    });
    self = &t;
    while (seen == -1) {  // joining now would race with its self-join
        conc::yield();
    }
    CHECK(seen == CONC_ERR_DEADLOCK);
    CHECK(t.joinable());
    t.join();  // still joinable after the refused self-join
}

void library_functions() {
    CHECK(conc::cpu_count() >= 1);
    const std::string expected = std::to_string(CONC_VERSION_MAJOR) + "." +
                                 std::to_string(CONC_VERSION_MINOR) + "." +
                                 std::to_string(CONC_VERSION_PATCH);
    CHECK(conc::version() == expected);
    conc::yield();
    conc::sleep_ms(1);
    conc::sleep_for(std::chrono::microseconds(10));
    conc::sleep_for(std::chrono::milliseconds(-5));  // no sleep at all
}

// ---------------------------------------------------------------------------
// Errors

void errors_carry_status_and_message() {
    auto missing = error_of([] { (void)conc::mmap::open("/nonexistent-conc-dir/missing.txt"); });
    CHECK(missing.has_value());
    if (missing) {
        CHECK(missing->status() == CONC_ERR_NOT_FOUND);
        CHECK(contains(missing->what(), "missing.txt"));
        CHECK(missing->os_error() == ENOENT);
        CHECK(std::string(missing->status_str()) == conc_status_str(CONC_ERR_NOT_FOUND));
        const std::runtime_error& base = *missing;  // catchable as std::exception
        CHECK(contains(base.what(), "missing.txt"));
    }

    CHECK_THROWS_STATUS(conc::shm::open("bad/name"), CONC_ERR_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(conc::shm::create("", 10), CONC_ERR_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(conc::shm::create(unique_name("zero"), 0), CONC_ERR_INVALID_ARGUMENT);
    auto nul = error_of([] { (void)conc::shm::open(std::string_view("ab\0c", 4)); });
    CHECK(nul && nul->status() == CONC_ERR_INVALID_ARGUMENT && contains(nul->what(), "NUL"));
    CHECK_THROWS_STATUS(conc::mmap::open(std::string_view("x\0y", 3)), CONC_ERR_INVALID_ARGUMENT);

    conc::error made(CONC_ERR_IO, "");
    CHECK(std::string(made.what()) == conc_status_str(CONC_ERR_IO));
    CHECK(made.os_error() == 0);
}

// ---------------------------------------------------------------------------
// Memory-mapped files

// What a readline() loop returns, as strings.
std::vector<std::string> readline_loop(conc::mmap& map) {
    std::vector<std::string> lines;
    map.seek(0);
    for (std::string_view line = map.readline(); !line.empty(); line = map.readline()) {
        lines.emplace_back(line);
    }
    return lines;
}

std::vector<std::string> range_lines(const conc::mmap& map) {
    std::vector<std::string> lines;
    for (std::string_view line : map.lines()) {
        lines.emplace_back(line);
    }
    return lines;
}

void mmap_lines_equal_a_readline_loop() {
    temp_dir dir;
    const std::vector<std::string> contents = {
        "alpha\nbeta\n\ngamma",                // no final newline
        "one\ntwo\n",                          // final newline
        "",                                    // empty file
        "\n\n\n",                              // only newlines
        "111111111\r\n222222222\r\n000000000",  // the course's data.txt shape
    };
    int index = 0;
    for (const std::string& content : contents) {
        const std::string path = dir.file("f" + std::to_string(index++), content);
        auto map = conc::mmap::open(path);
        const auto by_readline = readline_loop(map);
        const auto by_range = range_lines(map);
        CHECK(by_range == by_readline);
        CHECK(map.count_lines() == by_range.size());
        std::string joined;
        for (const auto& line : by_range) {
            joined += line;
        }
        CHECK(joined == content);
    }

    // A larger file with lines of varied lengths.
    std::string big;
    std::uint32_t seed = 12345;
    for (int i = 0; i < 20000; ++i) {
        seed = seed * 1103515245u + 12345u;
        big.append(seed % 97, 'x');
        big.push_back('\n');
    }
    big += "tail";
    auto map = conc::mmap::open(dir.file("big", big));
    const auto by_range = range_lines(map);
    CHECK(by_range == readline_loop(map));
    CHECK(by_range.size() == 20001);
    CHECK(map.count_lines() == 20001);

    // The iterator is a forward iterator over string_views.
    auto lines = map.lines();
    CHECK(std::distance(lines.begin(), lines.end()) == 20001);
    auto it = lines.begin();
    auto copy = it++;
    CHECK(copy == lines.begin() && it != copy);
    CHECK(it->size() == by_range[1].size());
}

void mmap_view_find_and_cursor() {
    temp_dir dir;
    const std::string content = "alpha\nbeta\n\ngamma";
    auto map = conc::mmap::open(dir.file("data.txt", content));
    CHECK(map.is_open() && static_cast<bool>(map));
    CHECK(map.view() == content);
    CHECK(map.size() == content.size());
    CHECK(!map.empty());
    CHECK(map.data_mut() == nullptr);  // read-only
    CHECK(map[0] == 'a' && map.at(6) == 'b');
    CHECK_THROWS_STATUS(map.at(content.size()), CONC_ERR_OUT_OF_RANGE);

    CHECK(map.find("beta") == std::optional<std::size_t>(6));
    CHECK(map.find("zzz") == std::nullopt);
    CHECK(map.find("a", 1) == std::optional<std::size_t>(4));
    CHECK(map.rfind("a") == std::optional<std::size_t>(content.rfind('a')));
    CHECK(map.find("a", 1000) == std::nullopt);
    CHECK(map.find("", 3) == std::optional<std::size_t>(3));

    CHECK(map.read_byte() == std::optional<std::uint8_t>('a'));
    CHECK(map.tell() == 1);
    map.seek(-5, conc::whence::end);
    CHECK(map.readline() == "gamma");
    CHECK(map.readline().empty());
    CHECK(map.read_byte() == std::nullopt);
    CHECK_THROWS_STATUS(map.seek(1, conc::whence::end), CONC_ERR_OUT_OF_RANGE);
    CHECK(map.tell() == content.size());  // unchanged by the refused seek
    map.seek(6);
    map.seek(2, conc::whence::cur);
    CHECK(map.readline() == "ta\n");
}

void mmap_open_range_and_errors() {
    temp_dir dir;
    const std::string path = dir.file("data.txt", "alpha\nbeta\n\ngamma");
    auto part = conc::mmap::open_range(path, conc::access::read, 6, 4);
    CHECK(part.view() == "beta");
    auto rest = conc::mmap::open_range(path, conc::access::read, 12);
    CHECK(rest.view() == "gamma");
    CHECK_THROWS_STATUS(conc::mmap::open_range(path, conc::access::read, 100), CONC_ERR_OUT_OF_RANGE);
    CHECK_THROWS_STATUS(conc::mmap::open_range(path, conc::access::read, 10, 100),
                        CONC_ERR_OUT_OF_RANGE);
    CHECK_THROWS_STATUS(conc::mmap::open("/tmp"), CONC_ERR_INVALID_ARGUMENT);

    auto empty = conc::mmap::open(dir.file("empty", ""));
    CHECK(empty.size() == 0 && empty.empty() && empty.view().empty());
    CHECK(empty.lines().begin() == empty.lines().end());
}

void mmap_write_copy_and_anonymous() {
    temp_dir dir;
    const std::string path = dir.file("data.txt", "hello");
    {
        auto map = conc::mmap::open(path, conc::access::write);
        CHECK(map.data_mut() != nullptr);
        map.data_mut()[0] = 'J';
        map.flush();
    }
    CHECK(read_file(path) == "Jello");
    {
        auto map = conc::mmap::open(path, conc::access::copy);
        map.data_mut()[0] = 'C';
        CHECK(map.view() == "Cello");
    }
    CHECK(read_file(path) == "Jello");

    auto anon = conc::mmap::anonymous(64);
    CHECK(anon.size() == 64);
    CHECK(std::all_of(anon.data(), anon.data() + 64, [](std::uint8_t b) { return b == 0; }));
    std::memcpy(anon.data_mut(), "shared", 6);
    CHECK(anon.view().substr(0, 6) == "shared");
    CHECK_THROWS_STATUS(conc::mmap::anonymous(0), CONC_ERR_INVALID_ARGUMENT);

    // Anonymous maps are shared with forked children.
    conc::process child([&anon] {
        anon.data_mut()[0] = 'S';
        return 0;
    });
    CHECK(child.join() == 0);
    CHECK(anon.view().substr(0, 6) == "Shared");
}

void mmap_moves_and_close() {
    temp_dir dir;
    const std::string path = dir.file("data.txt", "abc\n");
    auto a = conc::mmap::open(path);
    conc::mmap b(std::move(a));
    CHECK(!a.is_open());  // NOLINT: moved-from handles are inert by design
    CHECK(a.size() == 0 && a.view().empty() && a.data() == nullptr);
    CHECK(a.lines().begin() == a.lines().end());
    CHECK_THROWS_STATUS(a.find("a"), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(a.readline(), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(a.count_lines(), CONC_ERR_INVALID_STATE);
    a.close();  // nothing to close
    CHECK(b.view() == "abc\n");

    conc::mmap c;
    c = std::move(b);
    CHECK(!b.is_open() && c.view() == "abc\n");  // NOLINT
    c = conc::mmap::anonymous(8);                // closes the file map
    CHECK(c.size() == 8);
    c.close();
    CHECK(!c.is_open());

    conc_mmap* raw = conc::mmap::anonymous(4).release();
    CHECK(raw != nullptr);
    conc::mmap adopted(raw);
    CHECK(adopted.size() == 4);
}

// ---------------------------------------------------------------------------
// Shared memory

void shm_round_trip() {
    auto created = conc::shm::create(64);
    CHECK(created.size() == 64);
    CHECK(created.name().substr(0, 4) == "psm_" && created.name().size() == 12);
    CHECK(std::all_of(created.data(), created.data() + 64, [](std::uint8_t b) { return b == 0; }));
    created[0] = 1;
    created.at(63) = 2;
    CHECK_THROWS_STATUS(created.at(64), CONC_ERR_OUT_OF_RANGE);

    auto opened = conc::shm::open(created.name());
    CHECK(opened.size() == 64);
    CHECK(opened[0] == 1 && opened[63] == 2);
    opened[1] = 3;
    CHECK(created[1] == 3);

    // The course's example: two children each fill half the segment.
    const std::string name(created.name());
    auto fill = [&name](std::uint8_t value, std::size_t from, std::size_t to) {
        auto mine = conc::shm::open(name);
        for (std::size_t i = from; i < to; ++i) {
            mine[i] = value;
        }
        return 0;
    };
    conc::process p1(fill, std::uint8_t{1}, std::size_t{0}, std::size_t{32});
    conc::process p2(fill, std::uint8_t{2}, std::size_t{32}, std::size_t{64});
    CHECK(p1.join() == 0 && p2.join() == 0);
    for (std::size_t i = 0; i < 64; ++i) {
        CHECK(created[i] == (i < 32 ? 1 : 2));
    }

    created.unlink();
    CHECK(created[0] == 1);  // still mapped after the unlink
    CHECK_THROWS_STATUS(conc::shm::open(name), CONC_ERR_NOT_FOUND);
    CHECK_THROWS_STATUS(conc::shm::unlink_name(name), CONC_ERR_NOT_FOUND);
}

void shm_named_and_moves() {
    const std::string name = unique_name("shm");
    auto a = conc::shm::create("/" + name, 16);  // a leading '/' is not part of the name
    CHECK(a.name() == name);
    CHECK_THROWS_STATUS(conc::shm::create(name, 16), CONC_ERR_ALREADY_EXISTS);

    conc::shm b(std::move(a));
    CHECK(!a.is_open() && a.size() == 0 && a.name().empty() && a.data() == nullptr);  // NOLINT
    CHECK_THROWS_STATUS(a.unlink(), CONC_ERR_INVALID_STATE);
    CHECK(b.size() == 16);
    conc::shm c;
    c = std::move(b);
    CHECK(c.name() == name);
    conc::shm::unlink_name(name);
    c.close();
    CHECK(!c.is_open());
}

// ---------------------------------------------------------------------------
// Shared lists

void list_round_trip() {
    auto ints = conc::list<std::int64_t>::create(100);
    CHECK(ints.size() == 100);
    CHECK(ints.name().substr(0, 4) == "psm_");
    for (std::size_t i = 0; i < 100; ++i) {
        CHECK(ints.get(i) == 0);
    }
    ints.set(0, -5);
    ints[1] = 7;
    ints[2] = ints[1];
    const std::int64_t read = ints[2];
    CHECK(ints.get(0) == -5 && read == 7);
    CHECK_THROWS_STATUS(ints.get(100), CONC_ERR_OUT_OF_RANGE);
    CHECK_THROWS_STATUS(ints.set(100, 1), CONC_ERR_OUT_OF_RANGE);
    CHECK_THROWS_STATUS(static_cast<std::int64_t>(ints[100]), CONC_ERR_OUT_OF_RANGE);

    // The course's ShareableList example: two children fill the halves.
    auto fill = [&ints](std::int64_t value, std::size_t from, std::size_t to) {
        for (std::size_t i = from; i < to; ++i) {
            ints[i] = value;
        }
    };
    conc::process p1(fill, 1, std::size_t{0}, std::size_t{50});
    conc::process p2(fill, 2, std::size_t{50}, std::size_t{100});
    CHECK(p1.join() == 0 && p2.join() == 0);
    for (std::size_t i = 0; i < 100; ++i) {
        CHECK(ints.get(i) == (i < 50 ? 1 : 2));
    }

    const std::string name(ints.name());
    auto again = conc::list<std::int64_t>::open(name);
    CHECK(again.size() == 100 && again.get(99) == 2);
    const auto& constant = again;
    CHECK(constant[0] == 1);
    CHECK_THROWS_STATUS(conc::list<double>::open(name), CONC_ERR_INVALID_ARGUMENT);
    ints.unlink();
    CHECK_THROWS_STATUS(conc::list<std::int64_t>::open(name), CONC_ERR_NOT_FOUND);
}

void list_of_doubles_and_moves() {
    const std::string name = unique_name("list");
    auto reals = conc::list<double>::create(name, 3);
    CHECK(reals.name() == name);
    reals[0] = 2.5;
    reals.set(2, -1.25);
    auto opened = conc::list<double>::open(name);
    CHECK(opened.get(0) == 2.5 && opened.get(1) == 0.0 && opened.get(2) == -1.25);
    CHECK_THROWS_STATUS(conc::list<std::int64_t>::open(name), CONC_ERR_INVALID_ARGUMENT);
    CHECK_THROWS_STATUS(conc::list<double>::create(name, 3), CONC_ERR_ALREADY_EXISTS);
    CHECK_THROWS_STATUS(conc::list<double>::create("bad/name", 3), CONC_ERR_INVALID_ARGUMENT);

    conc::list<double> moved(std::move(reals));
    CHECK(!reals.is_open() && reals.size() == 0 && reals.name().empty());  // NOLINT
    CHECK_THROWS_STATUS(reals.get(0), CONC_ERR_INVALID_STATE);
    CHECK_THROWS_STATUS(reals.set(0, 1.0), CONC_ERR_INVALID_STATE);
    CHECK(moved.get(0) == 2.5);
    moved.unlink();
    moved.close();
    CHECK(!moved.is_open());
}

// ---------------------------------------------------------------------------
// Processes

void process_exit_codes() {
    conc::process seven([] { return 7; });
    CHECK(seven.joinable() && seven.pid() > 0);
    CHECK(seven.join() == 7);
    CHECK(!seven.joinable());
    CHECK_THROWS_STATUS(seven.join(), CONC_ERR_INVALID_STATE);

    conc::process nothing([] {});
    CHECK(nothing.join() == 0);

    conc::process with_args([](int a, int b) { return a * b; }, 6, 7);
    CHECK(with_args.join() == 42);

    conc::process killed([] {
        std::raise(SIGTERM);
        return 0;
    });
    CHECK(killed.join() == 128 + SIGTERM);
}

void process_sees_a_copy_of_memory() {
    int value = 1;
    conc::process child([&value] {
        const int seen = value;
        value = 99;  // the child's copy only
        return seen;
    });
    CHECK(child.join() == 1);
    CHECK(value == 1);
}

void process_exception_exits_1() {
    quiet_stderr();  // the child reports the exception on stderr
    conc::process child([]() -> int { throw std::runtime_error("in the child"); });
    CHECK(child.join() == 1);
}

void process_moves_and_destructor_join() {
    auto flag = conc::mmap::anonymous(1);
    {
        // Destroyed while joinable: killed (SIGKILL) and reaped, not waited
        // for, so the child never sets the flag.
        conc::process child([&flag] {
            conc::sleep_ms(2000);
            flag.data_mut()[0] = 1;
            return 0;
        });
    }
    CHECK(flag[0] == 0);

    conc::process a([] { return 3; });
    conc::process b(std::move(a));
    CHECK(!a.joinable() && a.pid() == 0);  // NOLINT
    CHECK_THROWS_STATUS(a.join(), CONC_ERR_INVALID_STATE);
    conc::process c;
    CHECK(!c.joinable());
    c = std::move(b);
    CHECK(c.join() == 3);

    // Assigning over a joinable process kills and reaps it first.
    conc::process d([&flag] {
        conc::sleep_ms(2000);
        flag.data_mut()[0] = 2;
        return 0;
    });
    d = conc::process([] { return 0; });
    CHECK(flag[0] == 0);
    CHECK(d.join() == 0);
}

// ---------------------------------------------------------------------------


}  // namespace

int main() {
    RUN(thread_join_returns_the_value);
    RUN(thread_passes_arguments);
    RUN(thread_void_and_captures);
    RUN(thread_move_only_callable_and_result);
    RUN(thread_reference_result);
    RUN(thread_many_threads);
    RUN(thread_exception_is_rethrown_by_join);
    RUN(thread_join_twice_is_invalid_state);
    RUN(thread_moves);
    RUN(thread_destructor_joins);
    RUN(thread_detach);
    RUN(thread_options_name_and_stack);
    RUN(thread_self_join_is_deadlock);
    RUN(library_functions);
    RUN(errors_carry_status_and_message);
    RUN(mmap_lines_equal_a_readline_loop);
    RUN(mmap_view_find_and_cursor);
    RUN(mmap_open_range_and_errors);
    RUN(mmap_write_copy_and_anonymous);
    RUN(mmap_moves_and_close);
    RUN(shm_round_trip);
    RUN(shm_named_and_moves);
    RUN(list_round_trip);
    RUN(list_of_doubles_and_moves);
    RUN(process_exit_codes);
    RUN(process_sees_a_copy_of_memory);
    RUN(process_exception_exits_1);
    RUN(process_moves_and_destructor_join);
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
