// WaitSet across processes: one waiting point over six topics takes the most urgent event across all of
// them first, and a burst that spans the six topics wakes it once. The consumer is an rvoip-test-peer
// process (mode `waitset`); this test publishes. Each burst is published while the consumer is stopped
// (SIGSTOP) inside its park, so "one wake per burst" does not depend on how fast either side runs.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

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

// A UDP socket bound to a free port on 127.0.0.1; `addr` gets its address.
int loopback_udp(sockaddr_in& addr) {
    const int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(udp >= 0);
    addr = sockaddr_in{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(udp, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(udp, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    return udp;
}

// epoll_wait, again after a signal (a child process exiting).
int wait_events(int ep, epoll_event* evs, int ms) {
    int n;
    while ((n = ::epoll_wait(ep, evs, 4, ms)) < 0 && errno == EINTR) {
    }
    return n;
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
    auto pubs = raw_publishers(*bus, "ws", kTopics);
    for (int burst = 1; burst <= kBursts; ++burst) {
        wait_until_parked(consumer.pid());
        consumer.kill(SIGSTOP);
        publish_burst(pubs);  // Low on topics 0..4, then Critical on topic 5: the first receive must return it
        consumer.kill(SIGCONT);
        auto line = consumer.read_line(std::chrono::seconds(120));
        REQUIRE(line.has_value());
        check_burst(*line, "received", kTopics, burst);
    }
    CHECK(consumer.exit_code() == 0);
}

TEST_CASE("a WaitSet's descriptor serves the bus in one epoll loop with a UDP socket, no thread of its own") {
    Broker b;
    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("ws-poll").build();
    REQUIRE(bus.has_value());
    WaitSet set;
    REQUIRE(set.add(*bus->raw_subscriber("poll.a")).has_value());
    REQUIRE(set.add(*bus->raw_subscriber("poll.b")).has_value());
    auto fd = set.descriptor();
    REQUIRE_MESSAGE(fd.has_value(), fd.error().what());

    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(ep >= 0);
    sockaddr_in addr{};
    const int udp = loopback_udp(addr);
    for (auto [f, tag] : {std::pair{*fd, 1u}, std::pair{udp, 2u}}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u32 = tag;
        REQUIRE(::epoll_ctl(ep, EPOLL_CTL_ADD, f, &ev) == 0);
    }
    epoll_event evs[4]{};

    // Nothing published: the set arms, and the loop sleeps through its whole timeout.
    auto armed = set.prepare_poll();
    REQUIRE(armed.has_value());
    CHECK(*armed);
    CHECK(wait_events(ep, evs, 100) == 0);

    // A datagram: the socket turns readable, the set's descriptor does not.
    REQUIRE(::sendto(udp, "INVITE", 6, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 6);
    REQUIRE(wait_events(ep, evs, 60'000) == 1);
    CHECK(std::uint32_t(evs[0].data.u32) == 2u);
    char buf[64];
    CHECK(::recv(udp, buf, sizeof buf, 0) == 6);

    // Another process publishes: the set's descriptor turns readable, and the loop takes the events.
    Process pub(peer(b, {"--topic", "poll.b", "--size", "64", "publish", "--count", "3", "--priority", "high"}));
    std::uint64_t got = 0;
    while (got < 3) {
        CHECK(set.prepare_poll().has_value());  // false (an event waits already) or armed
        const int n = wait_events(ep, evs, 60'000);
        REQUIRE(n >= 1);
        CHECK(std::uint32_t(evs[0].data.u32) == 1u);
        for (;;) {
            auto ev = set.try_receive_any();
            if (!ev) {
                CHECK(ev.error().code == Errc::would_block);
                break;
            }
            CHECK(ev->index() == 1);
            CHECK(ev->priority() == Priority::high);
            ++got;
        }
    }
    CHECK(got == 3);
    CHECK(set.wakeups() >= 1);
    // A receive ended the armed wait: the descriptor is quiet until the next prepare_poll.
    CHECK(wait_events(ep, evs, 0) == 0);
    CHECK(pub.exit_code() == 0);
    ::close(udp);
    ::close(ep);
}

TEST_CASE("the epoll example serves a UDP socket and the bus on one thread") {
    Broker b;
    sockaddr_in addr{};
    ::close(loopback_udp(addr));  // a free port: the example binds it next
    Process example({RVOIP_EPOLL_EXAMPLE_PATH, "--socket", b.socket(), "--port", std::to_string(ntohs(addr.sin_port)), "--count", "2"});
    auto ready = example.read_line(std::chrono::seconds(60));
    REQUIRE(ready.has_value());
    CHECK(ready->starts_with("READY"));

    const int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(::sendto(udp, "hello", 5, 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 5);
    auto first = example.read_line(std::chrono::seconds(60));
    REQUIRE(first.has_value());
    CHECK(*first == "udp.in normal: hello");  // the datagram, published by the loop and received by it

    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("ws-example").build();
    REQUIRE(bus.has_value());
    auto control = bus->raw_publisher("call.control");
    REQUIRE(control.has_value());
    REQUIRE(control->publish("BYE", Priority::critical).has_value());
    auto second = example.read_line(std::chrono::seconds(60));
    REQUIRE(second.has_value());
    CHECK(*second == "call.control critical: BYE");
    CHECK(example.exit_code() == 0);
    ::close(udp);
}
