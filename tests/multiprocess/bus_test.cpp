// EventBus across processes: an rvoip-test-bus-peer process runs a bus over six topics; this test
// publishes. Each burst is published while the peer is stopped (SIGSTOP) with its dispatcher parked, so
// "Critical first" and "one wake-up per burst" do not depend on how fast either side runs: Low events on
// five topics, then a Critical one on the sixth; the peer's handlers must run the Critical one first,
// and its dispatcher must have woken once for the whole burst.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

#include <dirent.h>

#include <csignal>
#include <fstream>
#include <thread>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

// True once a thread of the process sleeps in epoll_wait or epoll_pwait (x86-64 syscalls 232, 281):
// the bus's dispatcher parked on its WaitSet's descriptor.
bool dispatcher_parked(pid_t pid) {
    const std::string dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = ::opendir(dir.c_str());
    if (!d) return false;
    bool parked = false;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::ifstream f(dir + "/" + e->d_name + "/syscall");
        std::string nr;
        if (f >> nr && (nr == "232" || nr == "281")) parked = true;
    }
    ::closedir(d);
    return parked;
}

// Parked and staying parked for 30 ms: in zero-copy mode the last handler's return wakes the dispatcher
// once more (to release the records) just after the peer reported the burst, and a burst published
// while it is up would need no wake-up at all.
void wait_until_parked(pid_t pid) {
    for (int i = 0, stable = 0; i < 6000; ++i) {  // 60 s: a liveness bound
        stable = dispatcher_parked(pid) ? stable + 1 : 0;
        if (stable == 4) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL("the bus's dispatcher (pid " << pid << ") never parked in epoll_wait");
}

// SIGSTOP, then wait until every thread of the process has stopped: kill() returns before they do, and a
// thread a doorbell woke meanwhile could still run (the WaitSet test's peer has one thread; a bus has more).
void stop(Process& p) {
    p.kill(SIGSTOP);
    const std::string dir = "/proc/" + std::to_string(p.pid()) + "/task";
    for (int i = 0; i < 60000; ++i) {  // 60 s: a liveness bound
        bool all = true;
        DIR* d = ::opendir(dir.c_str());
        REQUIRE(d != nullptr);
        while (dirent* e = ::readdir(d)) {
            if (e->d_name[0] == '.') continue;
            std::ifstream f(dir + "/" + e->d_name + "/stat");
            std::string line;
            std::getline(f, line);
            const auto paren = line.rfind(')');  // "pid (comm) S ...": comm may hold spaces
            if (paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'T') all = false;
        }
        ::closedir(d);
        if (all) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    FAIL("pid " << p.pid() << " did not stop");
}

void bursts(std::vector<std::string> extra) {
    constexpr int kTopics = 6, kBursts = 20;
    Broker b;
    std::vector<std::string> argv{RVOIP_BUS_PEER_PATH, "--socket", b.socket(), "--topic", "bus", "--topics", std::to_string(kTopics),
                                  "--count", std::to_string(kTopics * kBursts), "--burst", std::to_string(kTopics)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    Process consumer(argv);
    consumer.expect_ready();

    auto sys = EventSystemBuilder().socket_path(b.socket()).client_name("bus-test").build();
    REQUIRE(sys.has_value());
    std::vector<RawPublisher> pubs;
    for (int i = 0; i < kTopics; ++i) {
        auto p = sys->raw_publisher("bus." + std::to_string(i));
        REQUIRE(p.has_value());
        pubs.push_back(std::move(*p));
    }
    for (int burst = 1; burst <= kBursts; ++burst) {
        wait_until_parked(consumer.pid());
        stop(consumer);
        // Low on topics 0..4, then Critical on topic 5 last: all committed before the bus resumes.
        for (int i = 0; i + 1 < kTopics; ++i) REQUIRE(pubs[std::size_t(i)].publish("low", Priority::low).has_value());
        REQUIRE(pubs[kTopics - 1].publish("critical", Priority::critical).has_value());
        consumer.kill(SIGCONT);
        auto line = consumer.read_line(std::chrono::seconds(120));
        REQUIRE(line.has_value());
        INFO("burst " << burst << ": " << *line);
        CHECK(std::stoi(field(*line, "handled")) == kTopics * burst);
        // One return from parking per burst for the whole bus, although six topics' doorbells rang.
        CHECK(std::stoi(field(*line, "wakeups")) == burst);
        const std::string order = field(*line, "order");
        CHECK(order.rfind("0:5,", 0) == 0);  // the Critical handler (lane 0, topic 5) ran first
        for (int i = 0; i + 1 < kTopics; ++i) CHECK(order.find("3:" + std::to_string(i)) != std::string::npos);
    }
    auto last = consumer.read_line(std::chrono::seconds(60));
    REQUIRE(last.has_value());
    CHECK(*last == "shutdown clean 1");
    CHECK(consumer.exit_code() == 0);
}

}  // namespace

TEST_CASE("an EventBus in another process runs the Critical handler first across six topics and wakes once per burst") {
    bursts({});
}

TEST_CASE("the same in copy mode: the records are released at once, the order and the wake-ups do not change") {
    bursts({"--copy"});
}
