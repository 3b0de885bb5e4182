// Failures the system survives, with real processes killed by signal next to a real rvoip-eventd.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

using namespace rvoip::events;
using namespace rvoip::events::test;

TEST_CASE("a publisher killed between claim and commit does not stall the subscriber or lose others' events") {
    Broker b;
    Process s(peer(b, {"--topic", "sip.tx", "--size", "100", "--seed", "9", "subscribe", "--count", "1000", "--timeout", "120"}));
    s.expect_ready();
    Process dying(peer(b, {"--topic", "sip.tx", "--size", "100", "loan-and-hang"}));
    dying.expect_ready();  // it holds a claimed, uncommitted record at the head of the lane
    Process p(peer(b, {"--topic", "sip.tx", "--size", "100", "--seed", "9", "publish", "--count", "1000"}));
    p.expect_ready();
    dying.kill(SIGKILL);
    CHECK(dying.exit_code() == 128 + SIGKILL);
    auto r = s.read_line(std::chrono::minutes(2));
    REQUIRE(r.has_value());
    INFO(*r);
    CHECK(field(*r, "received") == "1000");
    CHECK(field(*r, "errors") == "0");
    CHECK(p.exit_code() == 0);
}

TEST_CASE("a subscriber killed while publishers wait on it stops gating them") {
    Broker b;
    // A small lane the idle subscriber fills quickly; the publisher blocks until the subscriber is gone.
    Process s(peer(b, {"--topic", "rtp.packet", "--capacity", "65536", "--max-size", "256", "--size", "128", "subscribe",
                       "--count", "1", "--wait-go"}));
    s.expect_ready();
    Process p(peer(b, {"--topic", "rtp.packet", "--capacity", "65536", "--max-size", "256", "--size", "128", "publish",
                       "--count", "5000"}));
    p.expect_ready();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    s.kill(SIGKILL);
    auto sent = p.read_line(std::chrono::minutes(2));
    REQUIRE(sent.has_value());
    CHECK(field(*sent, "sent") == "5000");
    CHECK(p.exit_code() == 0);
}

TEST_CASE("a Critical claimant killed mid-claim is recovered at once: the Critical events behind it arrive first") {
    Broker b;
    Process s(peer(b, {"--topic", "call.control", "--size", "64", "--seed", "4", "subscribe", "--count", "500", "--timeout", "120"}));
    s.expect_ready();
    Process dying(peer(b, {"--topic", "call.control", "--size", "64", "loan-and-hang", "--priority", "critical"}));
    dying.expect_ready();  // an open claim at the head of the Critical lane
    Process p(peer(b, {"--topic", "call.control", "--size", "64", "--seed", "4", "publish", "--count", "500", "--priority", "critical"}));
    p.expect_ready();
    dying.kill(SIGKILL);
    CHECK(dying.exit_code() == 128 + SIGKILL);
    auto r = s.read_line(std::chrono::minutes(2));
    REQUIRE(r.has_value());
    INFO(*r);
    CHECK(field(*r, "received") == "500");
    CHECK(field(*r, "errors") == "0");
    CHECK(p.exit_code() == 0);
}

TEST_CASE("a publisher killed between its commit and its wake-up call: the broker wakes the parked subscriber") {
    Broker b;
    Process s(peer(b, {"--topic", "call.state", "--size", "64", "--seed", "3", "subscribe", "--count", "1", "--forever"}));
    s.expect_ready();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let it park (if it has not, it reads the event itself)
    Process dying(peer(b, {"--topic", "call.state", "--size", "64", "--seed", "3", "publish-and-hang"}));
    dying.expect_ready();
    auto line = dying.read_line(std::chrono::seconds(60));
    REQUIRE(line.has_value());
    CHECK(*line == "COMMITTED");
    dying.kill(SIGKILL);
    CHECK(dying.exit_code() == 128 + SIGKILL);
    auto r = s.read_line(std::chrono::seconds(60));  // without the broker's ring it sleeps forever
    REQUIRE(r.has_value());
    INFO(*r);
    CHECK(field(*r, "received") == "1");
    CHECK(field(*r, "errors") == "0");
}
