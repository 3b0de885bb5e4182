// rvoip-eventd as a Type=notify service (sd_notify(3)), under the stand-in service manager: READY=1 once
// clients can connect, STATUS= lines, WATCHDOG=1 from the event loop when the manager asks for it, and
// STOPPING=1 before the stop's teardown. Bounds are generous: the tests pass on a loaded 2-core machine.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

#include <algorithm>
#include <atomic>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

using Notifications = std::vector<Notification>;

std::size_t count(const Notifications& v, std::string_view line) {
    return std::size_t(std::count_if(v.begin(), v.end(), [&](const Notification& n) { return n.has(line); }));
}

// Index of the first notification with `line` at or after `from`; v.size() if none.
std::size_t find(const Notifications& v, std::string_view line, std::size_t from = 0) {
    for (std::size_t i = from; i < v.size(); ++i)
        if (v[i].has(line)) return i;
    return v.size();
}

std::string dump(const Notifications& v) {
    std::string s;
    for (const auto& n : v) s += "[" + n.text + "] ";
    return s;
}

bool status_says(const Notifications& v, std::string_view what) {
    return std::any_of(v.begin(), v.end(), [&](const Notification& n) {
        return n.has("STATUS=") && n.text.find(what) != std::string::npos;
    });
}

}  // namespace

TEST_CASE("READY=1 comes when the socket already accepts, with a STATUS= line; a change is reported, a request that changes nothing is not") {
    // 0: not yet, 1: the socket accepted a connection at the moment READY=1 arrived, 2: it refused.
    std::atomic<int> ready{0};
    Broker b({}, /*cleanup=*/true, [&](Broker& self) {
        self.manager().on_notification([&](const std::string& text) {
            if (Notification{text, {}}.has("READY=1") && ready == 0) ready = self.accepts() ? 1 : 2;
        });
    });
    auto v = b.manager().wait_for([](auto& v) { return count(v, "READY=1") > 0; });
    INFO("notifications: " << dump(v));
    REQUIRE(count(v, "READY=1") == 1);
    CHECK(ready == 1);
    const auto& first = v[find(v, "READY=1")];
    CHECK(first.has("STATUS=serving 0 topics (0 adopted), 0 clients"));  // sent with READY=1, in one datagram
    CHECK(count(v, "WATCHDOG=1") == 0);  // no WATCHDOG_USEC: no pings

    {
        auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("notify").build();
        REQUIRE(bus.has_value());
        auto pub = bus->raw_publisher("notify.topic");
        REQUIRE(pub.has_value());
        v = b.manager().wait_for([](auto& v) { return status_says(v, "serving 1 topic (0 adopted), 1 client"); });
        INFO("notifications: " << dump(v));
        CHECK(status_says(v, "serving 1 topic (0 adopted), 1 client"));

        // Requests that leave the broker serving what it served: no line, however many (never per request).
        const auto before = count(b.manager().notifications(), "STATUS=");
        for (int i = 0; i < 200; ++i) REQUIRE(bus->stats().has_value());
        std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // past the once-a-second limit
        CHECK(count(b.manager().notifications(), "STATUS=") == before);
    }
    v = b.manager().wait_for([](auto& v) { return status_says(v, "serving 1 topic (0 adopted), 0 clients"); });
    INFO("notifications: " << dump(v));
    CHECK(status_says(v, "serving 1 topic (0 adopted), 0 clients"));
}

TEST_CASE("status lines come at most once a second, however fast clients come and go") {
    Broker b;
    const auto t0 = std::chrono::steady_clock::now();
    const auto before = count(b.manager().notifications(), "STATUS=");
    // One client stays: the broker ends serving something else than it started with, so a last line is due.
    auto stays = EventSystemBuilder().socket_path(b.socket()).client_name("stays").build();
    REQUIRE(stays.has_value());
    for (int i = 0; i < 100; ++i) {
        auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("churn").build();
        REQUIRE(bus.has_value());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the last change is reported by now
    const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto v = b.manager().notifications();
    INFO("notifications: " << dump(v));
    const auto lines = count(v, "STATUS=") - before;
    CHECK(lines >= 1);
    CHECK(double(lines) <= seconds + 2);  // one a second, and one for the edges
    CHECK(v.back().has("STATUS=serving 0 topics (0 adopted), 1 client"));
}

TEST_CASE("READY=1 comes after adoption: a restarted broker's first status counts the topics it adopted") {
    Broker b({}, /*cleanup=*/false);
    {
        auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("notify").build();
        REQUIRE(bus.has_value());
        REQUIRE(bus->raw_publisher("notify.kept").has_value());
    }
    b.restart(SIGTERM);
    auto v = b.manager().wait_for([](auto& v) { return count(v, "READY=1") == 2; });
    INFO("notifications: " << dump(v));
    REQUIRE(count(v, "READY=1") == 2);
    const auto second = find(v, "READY=1", find(v, "READY=1") + 1);
    CHECK(v[second].has("STATUS=serving 1 topic (1 adopted), 0 clients"));
}

TEST_CASE("SIGTERM: STOPPING=1 comes before the teardown, and the broker exits 0") {
    Broker b({}, /*cleanup=*/true);
    {
        auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("notify").build();
        REQUIRE(bus.has_value());
        REQUIRE(bus->raw_publisher("notify.stop").has_value());
    }
    CHECK(b.stop() == 0);
    auto v = b.manager().notifications();
    INFO("notifications: " << dump(v));
    const auto ready = find(v, "READY=1"), stopping = find(v, "STOPPING=1");
    REQUIRE(stopping < v.size());
    CHECK(ready < stopping);
    CHECK(count(v, "STOPPING=1") == 1);
    CHECK(v[stopping].has("STATUS=stopping: SIGTERM received"));
    // --cleanup's teardown drops the segments from the store: after STOPPING=1, never before.
    const auto removal = find(v, "FDSTOREREMOVE=1");
    CHECK(removal < v.size());
    CHECK(stopping < removal);
}

TEST_CASE("with WATCHDOG_USEC and WATCHDOG_PID, WATCHDOG=1 comes again and again, from the loop itself") {
    Broker b({"--test-slot-reply-delay-ms", "3000"}, /*cleanup=*/true,
             [](Broker& self) { self.manager().watchdog(std::chrono::milliseconds(200)); });
    auto v = b.manager().wait_for([](auto& v) { return count(v, "WATCHDOG=1") >= 5; });
    INFO("notifications: " << dump(v));
    CHECK(count(v, "WATCHDOG=1") >= 5);  // every 100 ms: five within a minute on any machine

    // The loop held up for 3 s (a slot reply delayed inside it) sends no ping meanwhile: a watchdog that
    // pinged from a thread of its own would not notice a hung loop.
    auto bus = EventSystemBuilder()
                   .socket_path(b.socket())
                   .client_name("notify")
                   .control_timeout(std::chrono::seconds(120))
                   .build();
    REQUIRE(bus.has_value());
    REQUIRE(bus->raw_publisher("notify.slow").has_value());
    const auto after = count(b.manager().notifications(), "WATCHDOG=1");
    v = b.manager().wait_for([&](auto& v) { return count(v, "WATCHDOG=1") >= after + 5; });  // and they resume
    CHECK(count(v, "WATCHDOG=1") >= after + 5);
    std::chrono::steady_clock::duration longest{0};
    std::optional<std::chrono::steady_clock::time_point> last;
    for (const auto& n : v) {
        if (!n.has("WATCHDOG=1")) continue;
        if (last) longest = std::max(longest, n.at - *last);
        last = n.at;
    }
    // At least half the 3 s: generous, since a busy machine only makes gaps longer.
    CHECK(longest >= std::chrono::milliseconds(1500));
    CHECK(b.stop() == 0);
}
