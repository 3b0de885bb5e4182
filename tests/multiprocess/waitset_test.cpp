// WaitSet across processes: one waiting point over six topics takes the most urgent event across all of
// them first, and a burst that spans the six topics wakes it once. The consumer is an rvoip-test-peer
// process (mode `waitset`); this test publishes. Each burst is published while the consumer is stopped
// (SIGSTOP) inside its park, so "one wake per burst" does not depend on how fast either side runs.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

// True once the process's main thread sleeps in futex_waitv (syscall 449 on x86-64): it parked.
bool parked_in_futex_waitv(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/syscall");
    std::string nr;
    return f >> nr && nr == "449";
}

void wait_until_parked(pid_t pid) {
    for (int i = 0; i < 6000; ++i) {  // 60 s: a liveness bound
        if (parked_in_futex_waitv(pid)) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL("the WaitSet consumer (pid " << pid << ") never parked in futex_waitv");
}

}  // namespace

TEST_CASE("a WaitSet over six topics takes Critical first across them and wakes once per burst") {
    constexpr int kTopics = 6, kBursts = 20;
    Broker b;
    Process consumer(peer(b, {"--topic", "ws", "waitset", "--topics", std::to_string(kTopics), "--count",
                              std::to_string(kTopics * kBursts), "--burst", std::to_string(kTopics), "--timeout", "300"}));
    consumer.expect_ready();

    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("ws-test").build();
    REQUIRE(bus.has_value());
    std::vector<RawPublisher> pubs;
    for (int i = 0; i < kTopics; ++i) {
        auto p = bus->raw_publisher("ws." + std::to_string(i));
        REQUIRE(p.has_value());
        pubs.push_back(std::move(*p));
    }
    for (int burst = 1; burst <= kBursts; ++burst) {
        wait_until_parked(consumer.pid());
        consumer.kill(SIGSTOP);
        // Low on topics 0..4, then Critical on topic 5 last: committed before the consumer resumes,
        // so its first receive must return the Critical one.
        for (int i = 0; i + 1 < kTopics; ++i) REQUIRE(pubs[std::size_t(i)].publish("low", Priority::low).has_value());
        REQUIRE(pubs[kTopics - 1].publish("critical", Priority::critical).has_value());
        consumer.kill(SIGCONT);
        auto line = consumer.read_line(std::chrono::seconds(120));
        REQUIRE(line.has_value());
        INFO("burst " << burst << ": " << *line);
        CHECK(std::stoi(field(*line, "received")) == kTopics * burst);
        // One return from parking per burst, although six topics' doorbells rang.
        CHECK(std::stoi(field(*line, "wakeups")) == burst);
        const std::string order = field(*line, "order");
        CHECK(order.rfind("0:5,", 0) == 0);  // Critical (lane 0) of topic 5 first
        for (int i = 0; i + 1 < kTopics; ++i) CHECK(order.find("3:" + std::to_string(i)) != std::string::npos);
    }
    CHECK(consumer.exit_code() == 0);
}
