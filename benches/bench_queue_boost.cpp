// Queue throughput against Boost.Interprocess message_queue, when its
// header is installed (otherwise a skip note): one producer process sends
// 1,000,000 messages of 64 bytes to one consumer process, conc queue and
// boost::interprocess::message_queue (both 1024 deep), rounds interleaved.
// Goal: conc >= 1x (as fast or faster). Times are wall-clock medians; on a
// shared machine they are noisy.
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "conc.h"
#include "report.h"

#if __has_include(<boost/interprocess/ipc/message_queue.hpp>)
#include <boost/interprocess/ipc/message_queue.hpp>
#define HAVE_BOOST_IPC 1
#else
#define HAVE_BOOST_IPC 0
#endif

#if HAVE_BOOST_IPC
namespace {

constexpr std::size_t kMsg = 64;
constexpr unsigned kMessages = 1000000;
constexpr int kRounds = 7;

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

template <class F>
pid_t child(F body) {
    const pid_t pid = ::fork();
    if (pid < 0) {
        std::perror("fork");
        std::exit(1);
    }
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        body();
        ::_exit(0);
    }
    return pid;
}

void join(pid_t pid) {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "bench_queue_boost: a child failed\n");
        std::exit(1);
    }
}

double conc_round() {
    conc_queue* q = nullptr;
    if (conc_queue_create(&q, nullptr, 1024, kMsg) != CONC_OK) {
        std::fprintf(stderr, "bench_queue_boost: %s\n", conc_last_error_message());
        std::exit(1);
    }
    conc_queue_unlink(q);
    const double t0 = now_s();
    const pid_t c = child([q] {
        unsigned char buf[kMsg];
        std::size_t n = 0;
        for (unsigned i = 0; i < kMessages; ++i) {
            if (conc_queue_pop(q, buf, sizeof buf, &n) != CONC_OK) {
                ::_exit(1);
            }
        }
    });
    const pid_t p = child([q] {
        unsigned char msg[kMsg] = {1};
        for (unsigned i = 0; i < kMessages; ++i) {
            std::memcpy(msg + 4, &i, 4);
            if (conc_queue_push(q, msg, sizeof msg) != CONC_OK) {
                ::_exit(1);
            }
        }
    });
    join(p);
    join(c);
    const double t = now_s() - t0;
    conc_queue_close(q);
    return t;
}

double boost_round() {
    namespace bip = boost::interprocess;
    const std::string name = "bench_queue_boost_" + std::to_string(::getpid());
    bip::message_queue::remove(name.c_str());
    bip::message_queue mq(bip::create_only, name.c_str(), 1024, kMsg);
    const double t0 = now_s();
    const pid_t c = child([&name] {
        bip::message_queue in(bip::open_only, name.c_str());
        unsigned char buf[kMsg];
        bip::message_queue::size_type n = 0;
        unsigned priority = 0;
        for (unsigned i = 0; i < kMessages; ++i) {
            in.receive(buf, sizeof buf, n, priority);
        }
    });
    const pid_t p = child([&name] {
        bip::message_queue out(bip::open_only, name.c_str());
        unsigned char msg[kMsg] = {1};
        for (unsigned i = 0; i < kMessages; ++i) {
            std::memcpy(msg + 4, &i, 4);
            out.send(msg, sizeof msg, 0);
        }
    });
    join(p);
    join(c);
    const double t = now_s() - t0;
    bip::message_queue::remove(name.c_str());
    return t;
}

}  // namespace

int main() {
    double c[kRounds], b[kRounds], ratio[kRounds];
    for (int r = 0; r < kRounds; ++r) {
        if (r % 2 == 0) {
            c[r] = conc_round();
            b[r] = boost_round();
        } else {
            b[r] = boost_round();
            c[r] = conc_round();
        }
        ratio[r] = b[r] / c[r];
        std::printf("round %d: 1M x 64 B: conc %.3f s, boost message_queue %.3f s\n", r + 1, c[r],
                    b[r]);
    }
    const double cm = report_median(c, kRounds), bm = report_median(b, kRounds);
    report_row("queue 1 producer -> 1 consumer, 1M x 64 B: speed-up vs Boost message_queue",
               kMessages / cm, kMessages / bm, "msg/s", 1, "higher", ratio, kRounds);
    return 0;
}

#else

int main() {
    report_skip("queue vs Boost.Interprocess message_queue",
                "<boost/interprocess/ipc/message_queue.hpp> not found; install libboost-dev");
    return 0;
}

#endif
