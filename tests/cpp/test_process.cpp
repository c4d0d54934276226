// Tests of conc::process's 0.2 additions: join_for, kill, fd, and the
// destructor and move assignment that kill and reap a joinable child.

#include "check.hpp"

#include <poll.h>

#include <chrono>
#include <csignal>

using namespace std::chrono_literals;

namespace {

bool readable(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) == 1 && (p.revents & POLLIN) != 0;
}

// Whether `pid` names a process that has not been reaped (a zombie counts).
bool exists(std::int64_t pid) {
    return ::kill(static_cast<pid_t>(pid), 0) == 0;
}

int never_ends() {
    for (;;) {
        ::pause();
    }
}

}  // namespace

void join_for_polls_and_waits() {
    conc::process p([] {
        conc::sleep_ms(300);
        return 7;
    });
    CHECK(!p.join_for(0ms).has_value());  // is_alive()
    const auto start = std::chrono::steady_clock::now();
    CHECK(!p.join_for(50ms).has_value());
    CHECK(std::chrono::steady_clock::now() - start >= 50ms);
    CHECK(p.joinable());
    CHECK(!p.join_for(-5s).has_value());  // a negative timeout polls
    const std::optional<int> code = p.join_for(30s);
    CHECK(code.has_value() && *code == 7);
    CHECK(!p.joinable());
    CHECK_THROWS_STATUS(p.join_for(1ms), CONC_ERR_INVALID_STATE);
    conc::process q([] { return 2; });
    CHECK(q.join_for(std::chrono::duration<double>(30.0)) == std::optional<int>(2));
}

void kill_and_fd() {
    conc::process p(never_ends);
    const int fd = p.fd();
    CHECK(fd >= 0);
    CHECK(p.fd() == fd);
    CHECK(!readable(fd, 0));
    p.kill(0);  // still there
    CHECK_THROWS_STATUS(p.kill(-1), CONC_ERR_INVALID_ARGUMENT);
    p.kill(SIGTERM);
    CHECK(readable(fd, 30000));
    p.kill(SIGKILL);  // ended, not joined: not an error
    CHECK(p.join() == 128 + SIGTERM);
    CHECK(p.fd() == -1);
    CHECK_THROWS_STATUS(p.kill(SIGKILL), CONC_ERR_INVALID_STATE);
    conc::process none;
    CHECK(none.fd() == -1);
    CHECK_THROWS_STATUS(none.kill(0), CONC_ERR_INVALID_STATE);
}

void destructor_kills_and_reaps_a_child_that_never_ends() {
    std::int64_t pid = 0;
    {
        conc::process p(never_ends);
        pid = p.pid();
        CHECK(exists(pid));
    }  // would hang for ever if it joined
    CHECK(!exists(pid));  // killed and reaped: not even a zombie
}

void an_exception_between_spawn_and_join_does_not_hang() {
    std::int64_t pid = 0;
    bool caught = false;
    try {
        conc::process p(never_ends);
        pid = p.pid();
        throw std::runtime_error("between spawn and join");
    } catch (const std::runtime_error&) {
        caught = true;
    }
    CHECK(caught);
    CHECK(pid > 0 && !exists(pid));
}

void move_assignment_kills_and_reaps_the_old_child() {
    conc::process p(never_ends);
    const std::int64_t old = p.pid();
    p = conc::process([] { return 5; });
    CHECK(!exists(old));
    CHECK(p.join() == 5);
    // Self-move leaves it alone.
    conc::process q([] { return 6; });
    conc::process& alias = q;
    q = std::move(alias);
    CHECK(q.join() == 6);
}

void joined_or_moved_from_process_is_left_alone() {
    conc::process p([] { return 1; });
    conc::process q(std::move(p));
    CHECK(q.join() == 1);
    // Neither destructor has anything to kill.
}

int main() {
    RUN(join_for_polls_and_waits);
    RUN(kill_and_fd);
    RUN(destructor_kills_and_reaps_a_child_that_never_ends);
    RUN(an_exception_between_spawn_and_join_does_not_hang);
    RUN(move_assignment_kills_and_reaps_the_old_child);
    RUN(joined_or_moved_from_process_is_left_alone);
    return CHECK_SUMMARY();
}
