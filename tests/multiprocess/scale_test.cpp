// Many topics on the default configuration (issue 9 §6, reduced): one publisher process and three
// subscriber processes on 200 topics each, through a real rvoip-eventd that no client asks for lane
// sizes. Every subscription must get its events; the broker's descriptors and shared memory, as
// `rvoip-eventctl status --json` reports them, must stay within what the topics and connections explain.
// The full size (1,000 topics x 8 subscriber processes) is `rvoip-bench scale`, in `make bench`.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

#include <nlohmann/json.hpp>

#include <memory>

using namespace rvoip::events;
using namespace rvoip::events::test;
using nlohmann::json;

namespace {

json status_of(const Broker& b) {
    Process p({RVOIP_EVENTCTL_PATH, "--socket", b.socket(), "status", "--json"});
    p.close_stdin();
    std::string out;
    while (auto l = p.read_line(std::chrono::seconds(120))) out += *l + "\n";
    INFO(out);
    REQUIRE(p.exit_code() == 0);
    return json::parse(out);
}

std::uint64_t number(const std::string& line, const std::string& key) { return std::stoull(field(line, key)); }

}  // namespace

TEST_CASE("200 topics, a publisher and 3 subscriber processes on the defaults: every subscription gets its events, "
          "descriptors and shared memory stay within bounds") {
    constexpr std::uint64_t kTopics = 200, kSubscribers = 3, kEvents = 5;
    Broker b;  // sealed segments, no configuration: the built-in defaults
    const std::vector<std::string> many{"--topic", "scale", "--size", "64", "--seed", "11"};
    auto with = [&](std::vector<std::string> args) {
        auto v = many;
        v.insert(v.end(), args.begin(), args.end());
        return peer(b, v);
    };
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::unique_ptr<Process>> subs;
    for (std::uint64_t i = 0; i < kSubscribers; ++i)
        subs.push_back(std::make_unique<Process>(
            with({"subscribe-many", "--topics", std::to_string(kTopics), "--count", std::to_string(kEvents), "--timeout", "120"})));
    Process pub(with({"publish-many", "--topics", std::to_string(kTopics), "--count", std::to_string(kEvents)}));
    for (auto& s : subs) s->expect_ready();
    pub.expect_ready();
    const double setup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    MESSAGE("setup of " << kTopics << " topics x (1 publisher + " << kSubscribers << " subscriber processes): " << setup_s << " s");
    CHECK(setup_s < 60);  // a liveness bound, not a speed

    const json st = status_of(b);
    INFO(st.dump(2));
    CHECK(st["topics"] == kTopics);
    CHECK(st["publishers"] == kTopics);
    CHECK(st["subscribers"] == kTopics * kSubscribers);
    // The broker holds three descriptors per topic (its data, cursor and doorbell segments) and two per
    // connection (the socket, the client's pidfd): 4 peers and rvoip-eventctl. The rest is a fixed few
    // (listening socket, epoll, timers, signalfd, its own segment, standard streams).
    const auto fds = st["descriptors"]["open"].get<std::uint64_t>();
    const auto fd_limit = st["descriptors"]["limit"].get<std::uint64_t>();
    MESSAGE("broker descriptors: " << fds << " open, limit " << fd_limit << "; shared memory reserved: " << st["shm_bytes"].get<std::uint64_t>()
                                   << " bytes");
    CHECK(fds >= 3 * kTopics);
    CHECK(fds <= 3 * kTopics + 2 * (kSubscribers + 2) + 32);
    CHECK(fds < fd_limit);
    // Rings of 1.5 MiB per topic with the default lanes, and cursors and doorbells: at most 2 MiB a topic
    // (1,000 topics within 2 GiB).
    const auto shm = st["shm_bytes"].get<std::uint64_t>();
    CHECK(shm >= kTopics * (3u << 19));
    CHECK(shm <= kTopics * (2u << 20));

    pub.write_line("go");
    auto sent = pub.read_line(std::chrono::minutes(2));
    REQUIRE(sent.has_value());
    MESSAGE("publisher: " << *sent);
    CHECK(number(*sent, "sent") == kTopics * kEvents);
    // A client maps its segments and closes their descriptors: none is held per topic.
    CHECK(number(*sent, "fds") < 32);
    for (auto& s : subs) {
        auto r = s->read_line(std::chrono::minutes(3));
        REQUIRE(r.has_value());
        MESSAGE("subscriber: " << *r);
        CHECK(number(*r, "received") == kTopics * kEvents);
        CHECK(number(*r, "complete") == kTopics);
        CHECK(number(*r, "errors") == 0);
        CHECK(number(*r, "fds") < 32);
        CHECK(s->exit_code() == 0);
    }
    CHECK(pub.exit_code() == 0);
}
