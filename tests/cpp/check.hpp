// The harness of the C++ tests (tests/cpp/test_*.cpp): each case runs in a
// forked child (a crash is one failed case), with a watchdog (SIGALRM after
// CHECK_TIMEOUT_SECONDS, or $CONC_TEST_TIMEOUT) so that a hang is a failure;
// main() lists the cases with RUN() and ends with CHECK_SUMMARY(), which
// prints "N passed, N failed" and returns the exit status.
#ifndef CONC_TEST_CHECK_HPP
#define CONC_TEST_CHECK_HPP


#include "conc.hpp"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>
#if __cplusplus >= 202002L
#include <iterator>
#include <ranges>
#endif


namespace conc_test {


int failures = 0;  // within one case, in its child

void check_failed(const char* file, int line, const std::string& what) {
    std::fprintf(stderr, "  %s:%d: %s\n", file, line, what.c_str());
    ++failures;
}

#define CHECK(cond)                                                   \
    do {                                                              \
        if (!(cond)) check_failed(__FILE__, __LINE__, "CHECK failed: " #cond); \
    } while (0)

// Checks that `expr` throws conc::error with status `want`.
#define CHECK_THROWS_STATUS(expr, want)                                                   \
    do {                                                                                  \
        try {                                                                             \
            (void)(expr);                                                                 \
            check_failed(__FILE__, __LINE__, #expr " did not throw");                     \
        } catch (const conc::error& e_) {                                                 \
            if (e_.status() != (want)) {                                                  \
                check_failed(__FILE__, __LINE__,                                          \
                             std::string(#expr " threw ") + e_.status_str() + " (" +     \
                                 e_.what() + "), wanted " + conc_status_str(want));       \
            }                                                                             \
        }                                                                                 \
    } while (0)

// The conc::error `expr` throws (CHECK fails if it throws none).
template <class F>
std::optional<conc::error> error_of(F&& f) {
    try {
        f();
    } catch (const conc::error& e) {
        return e;
    }
    return std::nullopt;
}

bool contains(std::string_view haystack, std::string_view needle) {
    return haystack.find(needle) != std::string_view::npos;
}

// A fresh directory for a case's files, removed by the destructor.
class temp_dir {
public:
    temp_dir() {
        char pattern[] = "/tmp/conc-hpp-test.XXXXXX";
        if (::mkdtemp(pattern) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        path_ = pattern;
    }
    ~temp_dir() {
        const std::string command = "rm -rf '" + path_ + "'";
        if (std::system(command.c_str()) != 0) {
            std::fprintf(stderr, "could not remove %s\n", path_.c_str());
        }
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    // Writes `content` to the file `name` in this directory; returns its path.
    std::string file(const std::string& name, std::string_view content) const {
        const std::string path = path_ + "/" + name;
        std::ofstream out(path, std::ios::binary);
        out.write(content.data(), static_cast<std::streamsize>(content.size()));
        return path;
    }

private:
    std::string path_;
};

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream all;
    all << in.rdbuf();
    return all.str();
}

// A shared-memory name unique to this process and `tag`.
std::string unique_name(const char* tag) {
    return std::string("cpp_") + tag + "_" + std::to_string(::getpid());
}

// Silences stderr of the current case (children print expected messages).
void quiet_stderr() {
    std::fflush(stderr);
    std::FILE* null = std::freopen("/dev/null", "w", stderr);
    (void)null;
}

#ifndef CHECK_TIMEOUT_SECONDS
#define CHECK_TIMEOUT_SECONDS 120
#endif
inline unsigned check_timeout() {
    const char* v = std::getenv("CONC_TEST_TIMEOUT");
    const unsigned long t = v != nullptr ? std::strtoul(v, nullptr, 10) : 0;
    return t != 0 ? static_cast<unsigned>(t) : CHECK_TIMEOUT_SECONDS;
}

int passed = 0;
int failed = 0;

void run(const char* name, void (*test)()) {
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t pid = ::fork();
    if (pid < 0) {
        std::perror("fork");
        ++failed;
        return;
    }
    if (pid == 0) {
        ::alarm(check_timeout());
        try {
            test();
        } catch (const conc::error& e) {
            check_failed(__FILE__, __LINE__,
                         std::string("unexpected conc::error: ") + e.status_str() + ": " + e.what());
        } catch (const std::exception& e) {
            check_failed(__FILE__, __LINE__, std::string("unexpected exception: ") + e.what());
        }
        std::fflush(stdout);
        std::fflush(stderr);
        ::_exit(failures == 0 ? 0 : 1);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        ++passed;
    } else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
        std::printf("FAILED %s (hung: killed by the %u s watchdog)\n", name, check_timeout());
        ++failed;
    } else if (WIFSIGNALED(status)) {
        std::printf("FAILED %s (killed by signal %d)\n", name, WTERMSIG(status));
        ++failed;
    } else {
        std::printf("FAILED %s\n", name);
        ++failed;
    }
}

#define RUN(name) run(#name, name)

}  // namespace conc_test

using namespace conc_test;

#define CHECK_SUMMARY() (std::printf("%d passed, %d failed\n", passed, failed), failed == 0 ? 0 : 1)

#endif
