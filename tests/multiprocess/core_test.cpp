// Multi-process tests: a real rvoip-eventd and real client processes exchanging events through shared
// memory. Bounds are generous: these tests check outcomes, never speed.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {
std::string str(std::uint64_t v) { return std::to_string(v); }

struct TypeB {
    static constexpr std::string_view event_type = "test.schema";
    std::uint32_t other;
    char tag[12];
};
}  // namespace

TEST_CASE("1,000,000 events from one publisher process reach two subscriber processes exactly once, in order") {
    Broker b;
    const std::uint64_t n = 1'000'000;
    std::vector<std::string> common{"--topic", "sip.message", "--size", "64", "--seed", "7"};
    auto args = [&](std::vector<std::string> mode) {
        auto v = common;
        v.insert(v.begin(), mode.begin(), mode.end());
        return peer(b, v);
    };
    Process s1(peer(b, {"--topic", "sip.message", "--size", "64", "--seed", "7", "subscribe", "--count", str(n)}));
    Process s2(peer(b, {"--topic", "sip.message", "--size", "64", "--seed", "7", "subscribe", "--count", str(n)}));
    s1.expect_ready();
    s2.expect_ready();
    Process p(peer(b, {"--topic", "sip.message", "--size", "64", "--seed", "7", "publish", "--count", str(n)}));
    (void)args;
    p.expect_ready();
    auto sent = p.read_line(std::chrono::minutes(5));
    REQUIRE(sent.has_value());
    CHECK(p.exit_code() == 0);
    for (Process* s : {&s1, &s2}) {
        auto r = s->read_line(std::chrono::minutes(5));
        REQUIRE(r.has_value());
        INFO(*r);
        CHECK(field(*r, "received") == str(n));
        CHECK(field(*r, "errors") == "0");
        CHECK(field(*r, "digest") == field(*sent, "digest"));
        CHECK(s->exit_code() == 0);
    }
}

TEST_CASE("4 publisher processes to 1 subscriber: nothing lost, each publisher's order kept") {
    Broker b;
    const std::uint64_t per = 100'000;
    Process s(peer(b, {"--topic", "call.state", "--size", "0", "--max-size", "300", "--seed", "3", "subscribe", "--count",
                       str(4 * per), "--publishers", "4"}));
    s.expect_ready();
    std::vector<std::unique_ptr<Process>> pubs;
    for (int i = 0; i < 4; ++i)
        pubs.push_back(std::make_unique<Process>(
            peer(b, {"--topic", "call.state", "--size", "0", "--max-size", "300", "--seed", "3", "publish", "--count", str(per)})));
    std::uint64_t digest = 0;
    for (auto& p : pubs) {
        p->expect_ready();
        auto sent = p->read_line(std::chrono::minutes(5));
        REQUIRE(sent.has_value());
        digest += std::stoull(field(*sent, "digest"));
        CHECK(p->exit_code() == 0);
    }
    auto r = s.read_line(std::chrono::minutes(5));
    REQUIRE(r.has_value());
    INFO(*r);
    CHECK(field(*r, "received") == str(4 * per));
    CHECK(field(*r, "errors") == "0");  // per-publisher sequences strictly 0,1,2,... and payloads intact
    CHECK(field(*r, "digest") == str(digest));
    CHECK(s.exit_code() == 0);
}

TEST_CASE("a critical event published after 100,000 queued lower events is received first; drain order is strict") {
    Broker b;
    const std::uint64_t n = 100'001;  // 100,000 Low/Normal/High, then one Critical
    Process s(peer(b, {"--topic", "call.control", "--capacity", str(16u << 20), "--size", "64", "--mix", "lanes", "subscribe",
                       "--count", str(n), "--wait-go"}));
    s.expect_ready();
    Process p(peer(b, {"--topic", "call.control", "--capacity", str(16u << 20), "--size", "64", "--mix", "lanes", "publish",
                       "--count", str(n)}));
    p.expect_ready();
    REQUIRE(p.read_line(std::chrono::minutes(5)).has_value());
    CHECK(p.exit_code() == 0);
    s.write_line("go");  // the subscriber resumes only now, with every lane full of waiting events
    auto r = s.read_line(std::chrono::minutes(5));
    REQUIRE(r.has_value());
    INFO(*r);
    CHECK(field(*r, "received") == str(n));
    CHECK(field(*r, "first") == "0");     // Critical
    CHECK(field(*r, "monotone") == "1");  // Critical, then High, then Normal, then Low: never back up
    CHECK(s.exit_code() == 0);
}

TEST_CASE("payloads from 1 byte to 64 KiB cross the ring's end many times and arrive byte for byte") {
    Broker b;
    const std::uint64_t n = 3000;
    // 256 KiB lanes: at ~32 KiB per record on average, the ring wraps every few records.
    std::vector<std::string> common{"--topic", "sip.trace", "--capacity", str(256u << 10), "--size", "0", "--max-size", "65536",
                                    "--seed", "11"};
    auto with = [&](std::vector<std::string> extra) {
        auto v = common;
        v.insert(v.end(), extra.begin(), extra.end());
        return peer(b, v);
    };
    Process s(with({"subscribe", "--count", str(n)}));
    s.expect_ready();
    Process p(with({"publish", "--count", str(n)}));
    p.expect_ready();
    auto sent = p.read_line(std::chrono::minutes(5));
    REQUIRE(sent.has_value());
    auto r = s.read_line(std::chrono::minutes(5));
    REQUIRE(r.has_value());
    INFO(*r);
    CHECK(field(*r, "received") == str(n));
    CHECK(field(*r, "errors") == "0");
    CHECK(field(*r, "digest") == field(*sent, "digest"));
    CHECK(p.exit_code() == 0);
    CHECK(s.exit_code() == 0);
}

TEST_CASE("batched publishing across processes loses and reorders nothing") {
    Broker b;
    const std::uint64_t n = 200'000;
    Process s(peer(b, {"--topic", "rtp.stats", "--size", "172", "--seed", "5", "subscribe", "--count", str(n)}));
    s.expect_ready();
    Process p(peer(b, {"--topic", "rtp.stats", "--size", "172", "--seed", "5", "publish", "--count", str(n), "--batch", "64"}));
    p.expect_ready();
    auto sent = p.read_line(std::chrono::minutes(5));
    REQUIRE(sent.has_value());
    auto r = s.read_line(std::chrono::minutes(5));
    REQUIRE(r.has_value());
    CHECK(field(*r, "errors") == "0");
    CHECK(field(*r, "digest") == field(*sent, "digest"));
}

TEST_CASE("a subscriber parked in receive() uses no CPU and wakes when an event arrives") {
    Broker b;
    Process s(peer(b, {"--topic", "media.quality", "--size", "32", "subscribe", "--count", "1", "--timeout", "600"}));
    s.expect_ready();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // past its spin phase, into the futex
    const long before = s.cpu_ticks();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const long used = s.cpu_ticks() - before;
    CHECK(used <= 10);  // clock ticks (1/100 s); a spinning process would burn ~100 per second
    Process p(peer(b, {"--topic", "media.quality", "--size", "32", "publish", "--count", "1"}));
    auto r = s.read_line(std::chrono::seconds(60));
    REQUIRE(r.has_value());
    CHECK(field(*r, "received") == "1");
    CHECK(s.exit_code() == 0);
}

TEST_CASE("a second program opening the same topic with another event type is refused, naming both types") {
    Broker b;
    Process holder(peer(b, {"hold"}));
    holder.expect_ready();
    Process other(peer(b, {"hold", "--type-b"}));
    CHECK(other.exit_code() == 2);
    // The refusal reaches the program as a value.
    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("schema-test").build();
    REQUIRE(bus.has_value());
    auto p = bus->publisher<TypeB>();
    REQUIRE_FALSE(p.has_value());
    CHECK(p.error().code == Errc::schema_mismatch);
    INFO(p.error().what());
    CHECK(p.error().message.find("TypeA") != std::string::npos);
    CHECK(p.error().message.find("TypeB") != std::string::npos);
    holder.close_stdin();
    CHECK(holder.exit_code() == 0);
}

