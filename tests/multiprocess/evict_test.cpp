// Eviction of a stuck subscriber (DESIGN §4, slow subscribers) with real processes: a subscriber stopped
// by SIGSTOP while a publisher runs, next to a real rvoip-eventd.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

// 128-byte events in a 64 KiB lane: about 340 fit, so the publisher meets a full lane a few times over.
constexpr const char* kCount = "1500";

std::vector<std::string> args(std::vector<std::string> a, std::initializer_list<std::string> more) {
    a.insert(a.end(), more);
    return a;
}

std::uint64_t number(const std::string& line, const std::string& key) {
    const std::string v = field(line, key);
    REQUIRE_MESSAGE(!v.empty(), "no '" << key << "' in: " << line);
    return std::stoull(v);
}

proto::TopicStats topic_stats(const Broker& b, const std::string& topic) {
    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("evict-test").build();
    REQUIRE(bus.has_value());
    auto st = bus->stats();
    REQUIRE(st.has_value());
    for (auto& t : st->topics)
        if (t.topic == topic) return t;
    FAIL("no topic " << topic << " in the stats");
    return {};
}

}  // namespace

TEST_CASE("a stopped Normal subscriber is evicted: the publisher proceeds, the subscriber learns exactly what it missed") {
    Broker b({"--evict-grace-ms", "200"});
    const std::vector<std::string> common{"--topic", "media.quality", "--capacity", "65536", "--max-size", "256", "--size", "128",
                                          "--evict-after-ms", "300", "--block-timeout-ms", "30000"};
    Process s(peer(b, args(common, {"subscribe-lagged", "--priority", "normal", "--count", kCount, "--report-after", "100"})));
    s.expect_ready();
    Process p(peer(b, args(common, {"publish-paused", "--priority", "normal", "--count", kCount, "--pause-after", "100"})));
    p.expect_ready();
    REQUIRE(p.read_line() == "PAUSED");
    REQUIRE(s.read_line() == "GOT 100");

    s.kill(SIGSTOP);
    const auto stopped = std::chrono::steady_clock::now();
    p.write_line("go");
    auto sent = p.read_line(std::chrono::minutes(2));  // a 30 s block timeout: only an eviction lets it finish
    const auto took = std::chrono::steady_clock::now() - stopped;
    REQUIRE(sent.has_value());
    INFO(*sent);
    CHECK(field(*sent, "sent") == kCount);
    CHECK(number(*sent, "full") >= 1);
    CHECK(number(*sent, "timeouts") == 0);
    CHECK(p.exit_code() == 0);
    const auto stats = topic_stats(b, "media.quality");
    CHECK(stats.evictions >= 1);
    MESSAGE("publisher finished " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms after the stop, "
                                  << stats.evictions << " eviction(s)");

    s.kill(SIGCONT);
    auto lag = s.read_line(std::chrono::minutes(1));
    REQUIRE(lag.has_value());
    INFO(*lag);
    const std::uint64_t k = number(*lag, "reported-missed");
    CHECK(k > 0);
    auto done = s.read_line(std::chrono::minutes(1));
    REQUIRE(done.has_value());
    INFO(*done);
    CHECK(number(*done, "received") + k == std::stoull(kCount));  // nothing lost but what was reported
    CHECK(number(*done, "missed") == k);                          // reported once, exactly
    CHECK(number(*done, "lagged") == 1);
    CHECK(number(*done, "errors") == 0);                          // no gap, no repeat around the report
    CHECK(s.exit_code() == 0);
}

TEST_CASE("a stopped Critical subscriber is never evicted by default: the publisher blocks, counts, and nothing is lost") {
    Broker b({"--evict-grace-ms", "200"});
    const std::vector<std::string> common{"--topic", "call.control", "--capacity", "65536", "--max-size", "256", "--size", "128",
                                          "--block-timeout-ms", "200"};
    Process s(peer(b, args(common, {"subscribe-lagged", "--priority", "critical", "--count", kCount, "--report-after", "100"})));
    s.expect_ready();
    Process p(peer(b, args(common, {"publish-paused", "--priority", "critical", "--count", kCount, "--pause-after", "100"})));
    p.expect_ready();
    REQUIRE(p.read_line() == "PAUSED");
    REQUIRE(s.read_line() == "GOT 100");

    s.kill(SIGSTOP);
    p.write_line("go");
    // The lane holds about 340 of the 1400 events left: the publisher cannot finish while the subscriber
    // is stopped, however long we wait. The wait only makes sure its 200 ms block times out at least once.
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    CHECK_FALSE(p.read_line(std::chrono::milliseconds(100)).has_value());
    CHECK(topic_stats(b, "call.control").evictions == 0);

    s.kill(SIGCONT);
    auto sent = p.read_line(std::chrono::minutes(2));
    REQUIRE(sent.has_value());
    INFO(*sent);
    CHECK(field(*sent, "sent") == kCount);
    CHECK(number(*sent, "full") >= 1);
    CHECK(number(*sent, "timeouts") >= 1);  // publish retries on timeout: lossless
    auto done = s.read_line(std::chrono::minutes(1));
    REQUIRE(done.has_value());
    INFO(*done);
    CHECK(field(*done, "received") == kCount);
    CHECK(number(*done, "missed") == 0);
    CHECK(number(*done, "lagged") == 0);
    CHECK(number(*done, "errors") == 0);
    CHECK(s.exit_code() == 0);
    CHECK(p.exit_code() == 0);
}
