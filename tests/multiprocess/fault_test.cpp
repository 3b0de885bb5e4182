// Failures the system survives, with real processes killed by signal next to a real rvoip-eventd.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

// A process holds a claimed, uncommitted record at the head of `priority`'s lane and is killed while
// another publishes `count` events behind it: the subscriber must get every one of them.
void killed_mid_claim(const std::string& topic, const std::string& size, const std::string& priority, const std::string& count) {
    Broker b;
    Process s(peer(b, {"--topic", topic, "--size", size, "--seed", "9", "subscribe", "--count", count, "--timeout", "120"}));
    s.expect_ready();
    Process dying(peer(b, {"--topic", topic, "--size", size, "loan-and-hang", "--priority", priority}));
    dying.expect_ready();
    Process p(peer(b, {"--topic", topic, "--size", size, "--seed", "9", "publish", "--count", count, "--priority", priority}));
    p.expect_ready();
    dying.kill(SIGKILL);
    CHECK(dying.exit_code() == 128 + SIGKILL);
    auto r = s.read_line(std::chrono::minutes(2));
    REQUIRE(r.has_value());
    INFO(*r);
    CHECK(field(*r, "received") == count);
    CHECK(field(*r, "errors") == "0");
    CHECK(p.exit_code() == 0);
}

}  // namespace

TEST_CASE("a publisher killed between claim and commit does not stall the subscriber or lose others' events") {
    killed_mid_claim("sip.tx", "100", "normal", "1000");
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
    killed_mid_claim("call.control", "64", "critical", "500");
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

TEST_CASE("an exclusive publisher killed between claim and commit: its lane is recovered and can be held alone again") {
    Broker b;
    Process s(peer(b, {"--topic", "sip.alone", "--size", "100", "--seed", "9", "subscribe", "--count", "1000", "--timeout", "120"}));
    s.expect_ready();
    Process dying(peer(b, {"--topic", "sip.alone", "--size", "100", "--exclusive", "loan-and-hang", "--priority", "normal"}));
    dying.expect_ready();
    {  // while it holds the lane, another publisher cannot have it alone; the refusal names the holder
        Process refused(peer(b, {"--topic", "sip.alone", "--size", "100", "--exclusive", "publish", "--count", "1"}));
        auto line = refused.read_line();
        REQUIRE(line.has_value());
        INFO(*line);
        CHECK(line->starts_with("REFUSED lane_taken: "));
        CHECK(line->find("holds it alone") != std::string::npos);
        CHECK(line->find("pid " + std::to_string(dying.pid())) != std::string::npos);
        CHECK(refused.exit_code() != 0);
    }
    dying.kill(SIGKILL);
    CHECK(dying.exit_code() == 128 + SIGKILL);
    // The broker pads the dead holder's claim and frees the lane: a new exclusive publisher gets it (it
    // retries while the recovery runs) and everything it publishes arrives behind the padded hole.
    Process p(peer(b, {"--topic", "sip.alone", "--size", "100", "--seed", "9", "--exclusive", "--open-retry-s", "60", "publish", "--count",
                       "1000", "--priority", "normal"}));
    p.expect_ready();
    auto r = s.read_line(std::chrono::minutes(2));
    REQUIRE(r.has_value());
    INFO(*r);
    CHECK(field(*r, "received") == "1000");
    CHECK(field(*r, "errors") == "0");
    CHECK(p.exit_code() == 0);
}
