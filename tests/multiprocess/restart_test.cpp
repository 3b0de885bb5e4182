// The broker goes away and comes back while clients run: the data path never notices, clients
// reconnect and reclaim their slots by themselves, and clients of either side of the restart meet on the
// same rings. Also: what a control call does while the broker is away, and a reply that comes too late.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

#include <filesystem>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

std::uint64_t number(const std::string& line, const std::string& key) {
    auto v = field(line, key);
    return v.empty() ? ~0ull : std::stoull(v);
}

std::optional<proto::TopicStats> topic_stats(EventSystem& bus, const std::string& name) {
    auto st = bus.stats();
    if (!st) return std::nullopt;
    for (auto& t : st->topics)
        if (t.topic == name) return t;
    return std::nullopt;
}

// The topic's stats once it has neither publishers nor subscribers, or the last seen after 30 s.
std::optional<proto::TopicStats> stats_once_empty(EventSystem& bus, const std::string& name) {
    std::optional<proto::TopicStats> t;
    for (int i = 0; i < 3000; ++i) {
        t = topic_stats(bus, name);
        if (t && t->publishers == 0 && t->subscribers == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return t;
}

// Old publisher and old subscriber run a stream at 1.5 M events/s through a broker that is stopped with
// `sig` and replaced mid-stream. Then a new subscriber meets the old publisher, and a new publisher the
// old subscriber. Sealed segments come back from the service manager's store, named ones by name.
void restart_under_traffic(int sig, std::vector<std::string> flags = {}) {
    constexpr std::uint64_t kPhase = 3'000'000, kNew = 100'000;
    Broker b(flags, /*cleanup=*/false);
    const std::vector<std::string> topic{"--topic", "media.rtp", "--size", "64", "--capacity", "1048576", "--seed", "9"};
    auto with = [&](std::vector<std::string> args) {
        auto v = topic;
        v.insert(v.end(), args.begin(), args.end());
        return peer(b, v);
    };
    Process old_sub(with({"subscribe", "--count", std::to_string(2 * kPhase + kNew), "--timeout", "300", "--latency-first",
                          std::to_string(kPhase)}));
    old_sub.expect_ready();
    Process old_pub(with({"publish", "--count", std::to_string(kPhase), "--phases", "2", "--rate", "1500000", "--wait-go"}));
    old_pub.expect_ready();

    old_pub.write_line("go");  // 2 s of traffic; the broker goes away and comes back in the middle of it
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    b.restart(sig);
    auto phase = old_pub.read_line(std::chrono::minutes(2));
    REQUIRE(phase.has_value());
    CHECK(*phase == "phase 1 sent");

    Process new_sub(with({"subscribe", "--join-late", "--count", std::to_string(kPhase + kNew), "--timeout", "300"}));
    new_sub.expect_ready();
    old_pub.write_line("go");  // the old publisher's second phase reaches the new subscriber
    Process new_pub(with({"publish", "--count", std::to_string(kNew)}));  // and the new publisher the old subscriber

    auto o = old_sub.read_line(std::chrono::minutes(3));
    auto n = new_sub.read_line(std::chrono::minutes(3));
    REQUIRE(o.has_value());
    REQUIRE(n.has_value());
    INFO("old subscriber: " << *o);
    INFO("new subscriber: " << *n);
    CHECK(number(*o, "received") == 2 * kPhase + kNew);  // nothing lost, nothing twice (sequences checked per publisher)
    CHECK(number(*o, "errors") == 0);
    CHECK(number(*n, "received") == kPhase + kNew);
    CHECK(number(*n, "errors") == 0);
    CHECK(number(*o, "reconnects") >= 1);  // reconnected by itself
    CHECK(number(*n, "reconnects") == 0);
    auto p = old_pub.read_line(std::chrono::minutes(1));
    REQUIRE(p.has_value());
    CHECK(number(*p, "reconnects") >= 1);
    CHECK(old_pub.exit_code() == 0);
    CHECK(new_pub.exit_code() == 0);
    MESSAGE("restart by signal " << sig << ": largest publish-to-receive delay of the 3 M events around the restart "
                                 << field(*o, "maxlat_us") << " us (the broker is not on the data path)");

    // The old clients' slots are theirs again: when they leave, the broker releases them, so the topic
    // ends with nobody on it.
    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("check").build();
    REQUIRE(bus.has_value());
    auto t = stats_once_empty(*bus, "media.rtp");
    REQUIRE(t.has_value());
    CHECK(t->publishers == 0);
    CHECK(t->subscribers == 0);
}

}  // namespace

TEST_CASE("broker kill -9 under 1.5 M events/s: no event lost or doubled, old clients reconnect, old and new clients meet") {
    restart_under_traffic(SIGKILL);
}

TEST_CASE("broker SIGTERM and restart under traffic: the segments are kept and adopted, and the same holds") {
    restart_under_traffic(SIGTERM);
}

TEST_CASE("named segments (--segments named): a broker kill -9 under traffic loses nothing either") {
    restart_under_traffic(SIGKILL, {"--segments", "named"});
}

TEST_CASE("while the broker is away a control call waits up to its timeout, then says broker_unavailable; it works again once back") {
    Broker b({}, /*cleanup=*/false);
    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("away").control_timeout(std::chrono::milliseconds(300)).build();
    REQUIRE(bus.has_value());
    auto held = bus->raw_publisher("call.state");
    REQUIRE(held.has_value());
    b.process().kill(SIGKILL);
    b.process().wait();
    const auto t0 = std::chrono::steady_clock::now();
    auto refused = bus->raw_subscriber("call.state");
    const auto waited = std::chrono::steady_clock::now() - t0;
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == Errc::broker_unavailable);
    INFO(refused.error().what());
    CHECK(waited >= std::chrono::milliseconds(250));  // it waited for the broker rather than failing at once
    // The publisher it holds keeps working with no broker at all.
    std::array<std::byte, 8> ev{};
    CHECK(held->publish(ev).has_value());

    b.restart(SIGKILL);  // (already dead) a new broker on the same socket and prefix
    const auto back = std::chrono::steady_clock::now();
    for (int i = 0; i < 6000 && !bus->connection().connected; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    CHECK(bus->connection().connected);
    MESSAGE("reconnected " << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - back).count()
                           << " ms after the new broker accepted, " << std::chrono::duration_cast<std::chrono::milliseconds>(back - t0).count()
                           << " ms after the old one died");
    CHECK(bus->connection().reconnects == 1);
    auto sub = bus->raw_subscriber("call.state");
    REQUIRE(sub.has_value());
    CHECK(held->publish(ev).has_value());
    auto got = sub->receive_for(std::chrono::seconds(30));
    REQUIRE(got.has_value());
    CHECK(got->bytes().size() == 8);
    auto t = topic_stats(*bus, "call.state");
    REQUIRE(t.has_value());
    CHECK(t->publishers == 1);  // reclaimed, not a second slot
    CHECK(t->subscribers == 1);
}

TEST_CASE("a slot granted after the client's call gave up is handed back: no active slot is left behind") {
    // The broker holds every add_publisher / add_subscriber reply 1.5 s; the client waits 300 ms.
    Broker b({"--test-slot-reply-delay-ms", "1500"});
    auto slow = EventSystemBuilder().socket_path(b.socket()).client_name("impatient").control_timeout(std::chrono::milliseconds(300)).build();
    REQUIRE(slow.has_value());
    auto p = slow->raw_publisher("sip.message");
    REQUIRE_FALSE(p.has_value());
    CHECK(p.error().code == Errc::broker_unavailable);
    auto s = slow->raw_subscriber("sip.message");
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().code == Errc::broker_unavailable);

    // The broker serves one request at a time, so any stats reply comes after both grants. Without the
    // hand-back the impatient client, still alive, would hold both slots for as long as it runs.
    auto check = EventSystemBuilder().socket_path(b.socket()).client_name("check").control_timeout(std::chrono::seconds(30)).build();
    REQUIRE(check.has_value());
    auto t = stats_once_empty(*check, "sip.message");
    REQUIRE(t.has_value());
    CHECK(t->publishers == 0);
    CHECK(t->subscribers == 0);
    CHECK(slow->connection().connected);  // a slow reply is not a lost connection
}

TEST_CASE("slots of a live process that does not come back within the grace period: subscribers released, publishers held until it exits") {
    Broker b({"--reclaim-grace-ms", "500"}, /*cleanup=*/false);
    Process sub(peer(b, {"--topic", "call.state", "--size", "64", "subscribe", "--count", "1", "--timeout", "300"}));
    sub.expect_ready();
    Process pub(peer(b, {"--topic", "call.state", "--size", "64", "publish", "--count", "1", "--wait-go"}));
    pub.expect_ready();
    sub.kill(SIGSTOP);  // stopped processes cannot reconnect
    pub.kill(SIGSTOP);
    b.restart(SIGKILL);
    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("check").build();
    REQUIRE(bus.has_value());
    std::optional<proto::TopicStats> t;
    for (int i = 0; i < 3000; ++i) {  // the grace period passes
        t = topic_stats(*bus, "call.state");
        if (t && t->subscribers == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(t.has_value());
    CHECK(t->subscribers == 0);  // released: publishers no longer wait on a cursor nobody moves
    CHECK(t->publishers == 1);   // held: the process may still publish through it
    // The publisher comes back late: its reclaim is still granted (the slot was held for its pid), and
    // its event reaches a subscriber of the new broker.
    auto fresh = bus->raw_subscriber("call.state");
    REQUIRE(fresh.has_value());
    pub.kill(SIGCONT);
    pub.write_line("go");
    auto got = fresh->receive_for(std::chrono::seconds(60));
    REQUIRE(got.has_value());
    auto r = pub.read_line(std::chrono::minutes(1));
    REQUIRE(r.has_value());
    CHECK(field(*r, "reconnects") == "1");
    CHECK(pub.exit_code() == 0);
    sub.kill(SIGCONT);  // comes back too late: its slot is gone; the process is not harmed
    sub.kill(SIGTERM);
    sub.wait();
}
