// rvoip-eventctl against a live broker with known traffic: the numbers it reports, in JSON and in tables,
// its exit codes, tail and publish, metrics and top.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>

using namespace rvoip::events;
using namespace rvoip::events::test;
using nlohmann::json;

namespace {

struct Run {
    int code = -1;
    std::string out;
};

// Runs rvoip-eventctl against `b` to its end; its stdout and exit code.
Run ctl(const Broker& b, std::vector<std::string> args) {
    std::vector<std::string> argv{RVOIP_EVENTCTL_PATH, "--socket", b.socket()};
    argv.insert(argv.end(), args.begin(), args.end());
    Process p(argv);
    p.close_stdin();
    Run r;
    while (auto l = p.read_line(std::chrono::seconds(120))) r.out += *l + "\n";
    r.code = p.exit_code();
    return r;
}

json ctl_json(const Broker& b, std::vector<std::string> args) {
    args.push_back("--json");
    auto r = ctl(b, args);
    INFO(r.out);
    REQUIRE(r.code == 0);
    return json::parse(r.out);
}

EventSystem connect(const Broker& b, const char* name = "ctl-test") {
    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name(name).build();
    REQUIRE_MESSAGE(bus.has_value(), bus.error().what());
    return std::move(*bus);
}

}  // namespace

TEST_CASE("status, topics, topic and clients report the counts, lag and slots of known traffic, as JSON and as tables") {
    Broker b;
    auto bus = connect(b);
    // A Normal lane of 1 MiB holds the 1,610 events unread, whatever the broker's defaults.
    auto pub = bus.raw_publisher("ctl.media", PublisherOptions{TopicOptions().capacity(Priority::normal, 1u << 20)});
    REQUIRE(pub.has_value());
    auto sub = bus.raw_subscriber("ctl.media");  // reads nothing yet: it lags by everything published
    REQUIRE(sub.has_value());
    std::array<std::byte, 64> ev{};
    for (int i = 0; i < 1000; ++i) REQUIRE(pub->publish(ev, Priority::normal).has_value());
    for (int i = 0; i < 10; ++i) REQUIRE(pub->publish(ev, Priority::critical).has_value());

    auto st = ctl_json(b, {"status"});
    CHECK(st["topics"] == 1);
    CHECK(st["clients"].get<int>() >= 2);  // this test and rvoip-eventctl itself
    CHECK(st["publishers"] == 1);
    CHECK(st["subscribers"] == 1);
    CHECK(st["broker"]["segments"] == "sealed");
    CHECK(st["broker"]["pid"] == b.process().pid());
    CHECK(st["shm_bytes"].get<std::uint64_t>() > 1u << 20);  // the topic's lanes, reserved at its creation
    // The topic's three segments and each connection's socket and pidfd, at least; within the limit.
    CHECK(st["descriptors"]["open"].get<std::uint64_t>() >= 3 + 2 * 2);
    CHECK(st["descriptors"]["open"].get<std::uint64_t>() < st["descriptors"]["limit"].get<std::uint64_t>());

    auto ts = ctl_json(b, {"topics", "--interval", "0"});
    REQUIRE(ts["topics"].size() == 1);
    const auto& t = ts["topics"][0];
    CHECK(t["name"] == "ctl.media");
    CHECK(t["published_events"] == 1010);
    CHECK(t["lanes"][0]["published_events"] == 10);
    CHECK(t["lanes"][2]["published_events"] == 1000);
    CHECK(t["worst_lag_bytes"] == 1000 * 128);  // 64-byte payloads take 128-byte records

    // Lag is what publishers see: the position the subscriber last stored, which it stores every
    // sixteenth of the ring and whenever the lane runs empty. So: read everything, then 610 more come.
    for (int i = 0; i < 1010; ++i) REQUIRE(sub->try_receive().has_value());  // Critical first
    CHECK(sub->try_receive().error().code == Errc::would_block);
    for (int i = 0; i < 610; ++i) REQUIRE(pub->publish(ev, Priority::normal).has_value());
    auto one = ctl_json(b, {"topic", "ctl.media"});
    const auto& d = one["topic"];
    REQUIRE(d["subscriber_slots"].size() == 1);
    const auto& s = d["subscriber_slots"][0];
    CHECK(s["lag_bytes"]["critical"] == 0);
    CHECK(s["lag_bytes"]["normal"] == 610 * 128);
    CHECK(s["lag_events_estimate"]["normal"] == 610);
    CHECK(s["received"]["critical"] == 10);
    CHECK(s["received"]["normal"] == 1000);
    CHECK(s["pid"] == ::getpid());
    CHECK(s["client_name"] == "ctl-test");
    // Latency was sampled (the first record always is, then at most one per 10 us of publish time), and
    // the percentiles are ordered.
    const auto& lat = s["latency_ns"];
    CHECK(lat["samples"].get<std::uint64_t>() >= 1);
    CHECK(lat["samples"].get<std::uint64_t>() <= 1010);
    CHECK(lat["p50"].get<std::uint64_t>() > 0);
    CHECK(lat["p50"] <= lat["p99"]);
    CHECK(lat["p99"] <= lat["p99_9"]);
    CHECK(lat["p99_9"] <= lat["max"]);
    REQUIRE(d["publisher_slots"].size() == 1);
    CHECK(d["publisher_slots"][0]["published"]["normal"] == 1610);
    CHECK(d["lanes"][2]["capacity_bytes"].get<std::uint64_t>() > 0);
    CHECK(d["fingerprint"]["raw"] == true);

    auto cl = ctl_json(b, {"clients"});
    bool me = false;
    for (auto& c : cl["clients"])
        if (c["pid"] == ::getpid()) {
            me = true;
            CHECK(c["name"] == "ctl-test");
            CHECK(c["user"] == "root");
            CHECK(c["publishes"] == json::array({"ctl.media"}));
            CHECK(c["subscribes"] == json::array({"ctl.media"}));
        }
    CHECK(me);

    // The same as tables: a header row and the numbers in human units.
    auto tt = ctl(b, {"topics", "--interval", "0"});
    CHECK(tt.code == 0);
    CHECK(tt.out.find("TOPIC") == 0);
    CHECK(tt.out.find("ctl.media") != std::string::npos);
    CHECK(tt.out.find("1.62k") != std::string::npos);  // events published
    auto td = ctl(b, {"topic", "ctl.media"});
    CHECK(td.code == 0);
    CHECK(td.out.find("subscribers: 1") != std::string::npos);
    CHECK(td.out.find("76.2 KiB") != std::string::npos);  // 610 x 128 bytes of lag on Normal
    CHECK(td.out.find("LATENCY P50/P99/P99.9") != std::string::npos);
    auto tc = ctl(b, {"clients"});
    CHECK(tc.out.find("ctl-test") != std::string::npos);
    auto ss = ctl(b, {"status"});
    CHECK(ss.out.find("broker") == 0);
    CHECK(ss.out.find("reserved by segments") != std::string::npos);
    CHECK(ss.out.find("descriptors") != std::string::npos);
}

TEST_CASE("topic reports a subscriber's one-way latency from the publish timestamps") {
    Broker b;
    auto bus = connect(b);
    auto pub = bus.raw_publisher("ctl.delay");
    REQUIRE(pub.has_value());
    auto sub = bus.raw_subscriber("ctl.delay");
    REQUIRE(sub.has_value());
    std::array<std::byte, 64> ev{};
    // Each event waits 30 ms in the ring before it is read: each sample is at least that.
    for (int i = 0; i < 3; ++i) {
        REQUIRE(pub->publish(ev, Priority::high).has_value());
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        REQUIRE(sub->try_receive().has_value());
    }
    const auto lat = ctl_json(b, {"topic", "ctl.delay"})["topic"]["subscriber_slots"][0]["latency_ns"];
    CHECK(lat["samples"] == 3);
    CHECK(lat["p50"].get<std::uint64_t>() >= 30'000'000);
    CHECK(lat["max"].get<std::uint64_t>() < 60'000'000'000);  // generous: a stalled machine, not a clock error
    auto td = ctl(b, {"topic", "ctl.delay"});
    CHECK(td.out.find("ms/") != std::string::npos);  // "3xms/3xms/3xms" or so, whatever the machine's delays
}

TEST_CASE("topic names the publisher that holds a lane alone") {
    Broker b;
    auto bus = connect(b);
    auto alone = bus.raw_publisher("ctl.alone", PublisherOptions{.exclusive_lanes = 1u << static_cast<unsigned>(Priority::low)});
    REQUIRE(alone.has_value());
    auto other = bus.raw_publisher("ctl.alone");
    REQUIRE(other.has_value());
    const auto t = ctl_json(b, {"topic", "ctl.alone"})["topic"];
    CHECK(t["lanes"][3]["exclusive_slot"] == 0);
    CHECK(t["lanes"][2]["exclusive_slot"].is_null());
    CHECK(t["publisher_slots"][0]["exclusive_lanes"] == json::array({"low"}));
    CHECK(t["publisher_slots"][1]["exclusive_lanes"].empty());
    auto td = ctl(b, {"topic", "ctl.alone"});
    CHECK(td.out.find("ALONE ON") != std::string::npos);
    CHECK(td.out.find(" low") != std::string::npos);
}

TEST_CASE("topics measures rates between two reports") {
    Broker b;
    Process sub(peer(b, {"--topic", "ctl.rate", "--size", "64", "subscribe", "--count", "400000", "--timeout", "120"}));
    sub.expect_ready();
    Process pub(peer(b, {"--topic", "ctl.rate", "--size", "64", "publish", "--count", "400000", "--rate", "20000"}));
    json ts;
    for (int i = 0; i < 100; ++i) {  // until the publisher is on
        ts = ctl_json(b, {"topics", "--interval", "1"});
        if (!ts["topics"].empty() && ts["topics"][0]["rate_per_s"].get<double>() > 0) break;
    }
    REQUIRE(ts["topics"].size() == 1);
    const double rate = ts["topics"][0]["rate_per_s"].get<double>();
    CHECK(rate > 2'000);  // 20,000/s asked for; generous bounds for a loaded machine
    CHECK(rate < 200'000);
}

TEST_CASE("publish puts an event on the lane asked for, and tail prints raw text as text and typed events as hex") {
    Broker b;
    auto bus = connect(b);
    auto keep = bus.raw_publisher("ctl.text");  // the topic exists: tools never create one
    REQUIRE(keep.has_value());
    std::vector<std::string> argv{RVOIP_EVENTCTL_PATH, "--socket", b.socket(), "tail", "ctl.text", "--count", "2"};
    Process tail(argv);
    for (int i = 0; i < 3000; ++i) {  // until tail's subscriber has joined
        auto t = ctl_json(b, {"topics", "--interval", "0"});
        if (t["topics"][0]["subscribers"] == 1) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(ctl(b, {"publish", "ctl.text", "--lane", "high", "--data", "INVITE sip:bob@example.com"}).code == 0);
    REQUIRE(keep->publish(std::string_view("\x01\x02\xff", 3), Priority::low).has_value());
    auto l1 = tail.read_line();
    auto l2 = tail.read_line();
    REQUIRE(l1.has_value());
    REQUIRE(l2.has_value());
    CHECK(l1->starts_with("high "));
    CHECK(l1->ends_with(": INVITE sip:bob@example.com"));
    CHECK(l2->starts_with("low "));
    CHECK(l2->ends_with(": 01 02 ff"));  // not text: hex
    CHECK(tail.exit_code() == 0);

    auto lane = ctl(b, {"publish", "ctl.text", "--lane", "urgent", "--data", "x"});
    CHECK(lane.code == 2);
}

TEST_CASE("exit codes say what went wrong: no such topic, no broker, bad arguments") {
    Broker b;
    CHECK(ctl(b, {"topic", "no.such"}).code == 4);
    CHECK(ctl(b, {"tail", "no.such"}).code == 4);
    CHECK(ctl(b, {"bogus"}).code == 2);
    CHECK(ctl(b, {"publish", "x"}).code == 2);  // neither --lane nor --data
    Process p({RVOIP_EVENTCTL_PATH, "--socket", "/nonexistent/broker.sock", "status"});
    CHECK(p.exit_code() == 3);
    CHECK(ctl(b, {"status", "--help"}).code == 0);
}

TEST_CASE("metrics prints Prometheus text with topic and lane labels; top draws a screen per refresh") {
    Broker b;
    auto bus = connect(b);
    auto pub = bus.raw_publisher("ctl.metrics");
    REQUIRE(pub.has_value());
    std::array<std::byte, 16> ev{};
    for (int i = 0; i < 7; ++i) REQUIRE(pub->publish(ev, Priority::high).has_value());
    auto m = ctl(b, {"metrics"});
    CHECK(m.code == 0);
    CHECK(m.out.find("# TYPE rvoip_events_published_events_total counter") != std::string::npos);
    CHECK(m.out.find("rvoip_events_published_events_total{topic=\"ctl.metrics\",lane=\"high\"} 7\n") != std::string::npos);
    CHECK(m.out.find("rvoip_events_publishers{topic=\"ctl.metrics\"} 1\n") != std::string::npos);
    CHECK(m.out.find("rvoip_events_up 1\n") != std::string::npos);

    auto top = ctl(b, {"top", "--iterations", "2"});
    CHECK(top.code == 0);
    CHECK(top.out.find("rvoip-eventctl top") != std::string::npos);
    CHECK(top.out.find("ctl.metrics") != std::string::npos);
}

namespace {
std::string sh(const std::string& cmd) {
    std::string out;
    if (FILE* f = ::popen(cmd.c_str(), "r")) {
        char buf[4096];
        for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
        ::pclose(f);
    }
    return out;
}
}  // namespace

TEST_CASE("top in a real 80x24 terminal (tmux): a header, the columns, the busiest topic first, nothing past the edges; q quits") {
    Broker b;
    auto bus = connect(b);
    auto quiet = bus.raw_publisher("ctl.quiet");
    REQUIRE(quiet.has_value());
    Process sub(peer(b, {"--topic", "ctl.busy", "--size", "64", "subscribe", "--count", "2000000", "--timeout", "120"}));
    sub.expect_ready();
    Process pub(peer(b, {"--topic", "ctl.busy", "--size", "64", "publish", "--count", "2000000", "--rate", "50000"}));
    const std::string tmux = "tmux -L rvoip-ctl-test-" + std::to_string(::getpid());
    REQUIRE(std::system((tmux + " new-session -d -x 80 -y 24 '" + RVOIP_EVENTCTL_PATH + " --socket " + b.socket() + " top'").c_str()) == 0);
    std::string screen;
    for (int i = 0; i < 600; ++i) {  // until a refresh shows the busy topic with a rate
        screen = sh(tmux + " capture-pane -p");
        const auto busy = screen.find("ctl.busy");
        if (busy != std::string::npos && screen.find("/s", busy) != std::string::npos && screen.find("ctl.quiet") != std::string::npos) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    MESSAGE("rvoip-eventctl top in 80x24:\n" << screen);
    std::vector<std::string> lines;
    std::istringstream in(screen);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    REQUIRE(lines.size() >= 4);
    CHECK(lines.size() <= 24);
    CHECK(lines[0].starts_with("rvoip-eventctl top"));
    CHECK(lines[2].starts_with("TOPIC"));
    for (auto col : {"PUBS", "SUBS", "RATE", "EVENTS", "FILL", "WORST LAG"}) CHECK(lines[2].find(col) != std::string::npos);
    for (auto& l : lines) CHECK(l.size() <= 80);
    CHECK(lines[3].starts_with("ctl.busy"));  // busiest first
    CHECK(lines[4].starts_with("ctl.quiet"));
    REQUIRE(std::system((tmux + " send-keys q").c_str()) == 0);
    bool gone = false;
    for (int i = 0; i < 300 && !gone; ++i) {
        gone = std::system((tmux + " has-session 2>/dev/null").c_str()) != 0;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(gone);
    std::system((tmux + " kill-server 2>/dev/null").c_str());
}

namespace {
// A port free now (the kernel's pick for port 0), for a daemon that must be told its port.
int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

// One HTTP/1.0 GET on loopback: the whole response, headers included ("" if nothing answered).
std::string http_get(int port, const std::string& path) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(std::uint16_t(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string out;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
        const std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
        if (::write(fd, req.data(), req.size()) == ssize_t(req.size())) {
            char buf[4096];
            for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, std::size_t(n));
        }
    }
    ::close(fd);
    return out;
}
}  // namespace

TEST_CASE("--metrics-listen serves /metrics and /health over HTTP, with the counts of known traffic") {
    const int port = free_port();
    Broker b({"--metrics-listen", "127.0.0.1:" + std::to_string(port)});
    auto bus = connect(b);
    auto pub = bus.raw_publisher("ctl.scraped");
    REQUIRE(pub.has_value());
    std::array<std::byte, 16> ev{};
    for (int i = 0; i < 5; ++i) REQUIRE(pub->publish(ev, Priority::critical).has_value());
    const std::string want = "rvoip_events_published_events_total{topic=\"ctl.scraped\",lane=\"critical\"} 5\n";
    std::string m;
    for (int i = 0; i < 300 && m.find(want) == std::string::npos; ++i) {  // the loop hands reports over every second
        m = http_get(port, "/metrics");
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    INFO(m);
    CHECK(m.starts_with("HTTP/1.1 200"));
    CHECK(m.find(want) != std::string::npos);
    CHECK(m.find("# TYPE rvoip_events_published_events_total counter") != std::string::npos);
    CHECK(m.find("rvoip_events_subscribers{topic=\"ctl.scraped\"} 0") != std::string::npos);
    auto h = http_get(port, "/health");
    CHECK(h.starts_with("HTTP/1.1 200"));
    CHECK(h.find("rvoip_events_healthy 1") != std::string::npos);
    CHECK(b.stop() == 0);
    CHECK(http_get(port, "/metrics").empty());  // gone with the broker
}
