// The configuration file: what each key sets, and every error told with its line.
#include "daemon/config.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <regex>
#include <sstream>

using namespace rvoip::events;
using namespace rvoip::events::daemon;

namespace {

DaemonConfig defaults() {
    DaemonConfig c;
    c.broker.socket_path = "/run/test/broker.sock";
    return c;
}

ConfigFile parse(std::string text) { return parse_config(std::move(text), "eventd.toml", defaults()); }

// "line: message" per error, for one CHECK that shows them all when it fails.
std::vector<std::string> errors(const ConfigFile& f) {
    std::vector<std::string> out;
    for (const auto& e : f.errors) out.push_back(std::to_string(e.line) + ": " + e.message);
    return out;
}

bool says(const ConfigFile& f, std::uint32_t line, std::string_view text) {
    for (const auto& e : f.errors)
        if (e.line == line && e.message.find(text) != std::string::npos) return true;
    return false;
}

void same_lanes(const LaneArray& a, const LaneArray& b) {
    for (std::size_t l = 0; l < layout::kLanes; ++l) {
        CHECK(a[l].capacity == b[l].capacity);
        CHECK(a[l].max_event == b[l].max_event);
        CHECK(a[l].overflow == b[l].overflow);
        CHECK(a[l].block_timeout_ms == b[l].block_timeout_ms);
        CHECK(a[l].evict_after_ms == b[l].evict_after_ms);
    }
}

}  // namespace

TEST_CASE("an empty file changes nothing") {
    auto f = parse("# nothing here\n");
    REQUIRE(f.ok());
    CHECK(f.config.broker.socket_path == "/run/test/broker.sock");
    CHECK(f.config.log_level == "info");
    CHECK_FALSE(f.config.broker.access.enforced());
    CHECK(f.config.broker.topics.empty());
    same_lanes(f.config.broker.defaults, BrokerConfig::default_lanes());
}

TEST_CASE("every key sets its setting; sizes take K, M and G") {
    auto f = parse(R"(
[broker]
socket = "/run/other/broker.sock"
socket_mode = "0600"
shm_prefix = "pbx-1"
segments = "named"
log_level = "debug"
doorbells = 64
reclaim_grace_ms = 2000
evict_grace_ms = 100

[limits]
max_connections = 10
max_topics = 20
max_topics_per_client = 3
max_publishers_per_client = 4
max_subscribers_per_client = 5
max_shm_bytes = "1G"
max_lane_bytes = 8388608
max_event_bytes = "128K"
max_fds = 4096

[lanes.normal]
capacity = "8M"
max_event = "1M"
overflow = "fail"
block_timeout_ms = 50
evict_after_ms = 0

[[topic]]
pattern = "sip.*"
lanes.low = { capacity = "16M", evict_after_ms = 2000 }
)");
    INFO(errors(f));
    REQUIRE(f.ok());
    const auto& c = f.config;
    const auto& b = c.broker;
    CHECK(b.socket_path == "/run/other/broker.sock");
    CHECK(b.socket_mode == 0600);
    CHECK(b.shm_prefix == "pbx-1");
    CHECK(c.segments == "named");
    CHECK(c.log_level == "debug");
    CHECK(b.doorbells == 64);
    CHECK(b.reclaim_grace_ms == 2000);
    CHECK(b.evict_grace_ms == 100);
    CHECK(b.limits.max_connections == 10);
    CHECK(b.limits.max_topics == 20);
    CHECK(b.limits.max_topics_per_client == 3);
    CHECK(b.limits.max_publishers_per_client == 4);
    CHECK(b.limits.max_subscribers_per_client == 5);
    CHECK(b.limits.max_shm_bytes == 1ull << 30);
    CHECK(b.limits.max_lane_capacity == 8u << 20);
    CHECK(b.limits.max_event == 128u << 10);
    CHECK(c.max_fds == 4096);
    const auto& n = b.defaults[std::size_t(Priority::normal)];
    CHECK(n.capacity == 8u << 20);
    CHECK(n.max_event == 1u << 20);
    CHECK(n.overflow == Overflow::fail);
    CHECK(n.block_timeout_ms == 50);
    CHECK(n.evict_after_ms == 0);
    CHECK(b.defaults[std::size_t(Priority::high)].capacity == BrokerConfig::default_lanes()[std::size_t(Priority::high)].capacity);  // lanes not named keep theirs
    REQUIRE(b.topics.size() == 1);
    CHECK(b.topics[0].pattern == "sip.*");
    CHECK(b.topics[0].lanes[3].capacity == 16u << 20);
    CHECK(b.topics[0].lanes[3].evict_after_ms == 2000u);
    CHECK_FALSE(b.topics[0].lanes[3].max_event.has_value());
    CHECK(b.topics[0].lanes[0].empty());
}

TEST_CASE("[[access]] entries are the access rules; an empty list enforces rules that grant nothing") {
    auto f = parse(R"(
[[access]]
pattern = "sip.*"
rights = ["publish", "critical", "create"]
who = ["uid:20001", "gid:20010"]

[[access]]
pattern = "*"
rights = ["subscribe"]
who = ["*"]
)");
    INFO(errors(f));
    REQUIRE(f.ok());
    const auto& a = f.config.broker.access;
    CHECK(a.enforced());
    CHECK(a.rule_count() == 2);
    CHECK(a.rights(Peer{20001, 1, {}}, "sip.message") == (kPublish | kCritical | kCreate | kSubscribe));
    CHECK(a.rights(Peer{20099, 20010, {}}, "sip.message") == (kPublish | kCritical | kCreate | kSubscribe));
    CHECK(a.rights(Peer{20099, 1, {}}, "sip.message") == kSubscribe);
    CHECK(a.rights(Peer{20099, 1, {}}, "call.state") == kSubscribe);

    auto none = parse("access = []\n");
    REQUIRE(none.ok());
    CHECK(none.config.broker.access.enforced());
    CHECK_FALSE(none.config.broker.access.known(Peer{20001, 1, {}}));
}

TEST_CASE("config errors are reported with their line numbers, all of them, in line order") {
    auto f = parse(R"([broker]
socket_mode = 660
shm_prefix = "with space"
segmnets = "named"

[limits]
max_topics = 5000
max_lane_bytes = "64Q"
max_connections = "many"

[lanes.high]
capacity = "3M"
overflow = "drop"

[lanes.low]
capacity = "4K"

[lanes.urgent]
capacity = "1M"

[[topic]]
lanes.normal = { capacity = "8M" }

[[topic]]
pattern = "sip.*"
lanes.normal = { capacity = "8K" }

[[access]]
pattern = "sip.*"
rights = ["publish", "pubish"]
who = ["user:no-such-user-rvoip", "uid:x"]
colour = "red"

[[access]]
pattern = "media.*"

verbose = true
)");
    INFO(errors(f));
    CHECK(says(f, 2, "broker.socket_mode: expected an octal mode as a string"));
    CHECK(says(f, 3, "broker.shm_prefix: 'with space'"));
    CHECK(says(f, 4, "unknown key 'segmnets' in [broker]"));
    CHECK(says(f, 7, "limits.max_topics: 5000 is outside 1..4096"));
    CHECK(says(f, 8, "limits.max_lane_bytes: expected a size in bytes"));
    CHECK(says(f, 9, "limits.max_connections: expected an integer, found a string"));
    CHECK(says(f, 12, "lanes.high.capacity: 3M is not a power of two"));
    CHECK(says(f, 13, "lanes.high.overflow: 'drop' is not one of block, fail"));
    CHECK(says(f, 15, "low lane: capacity 4096 cannot hold two records of max_event 65536"));
    CHECK(says(f, 18, "unknown key 'urgent' in [lanes]"));
    CHECK(says(f, 21, "topic[1]: no pattern"));
    CHECK(says(f, 24, "topic[2] 'sip.*': normal lane: capacity 8192 cannot hold two records"));
    CHECK(says(f, 30, "access[1].rights: unknown right 'pubish'"));
    CHECK(says(f, 31, "access[1].who: no user named 'no-such-user-rvoip'"));
    CHECK(says(f, 31, "access[1].who: 'uid:x' is not a number"));
    CHECK(says(f, 32, "unknown key 'colour' in access[1]"));
    CHECK(says(f, 34, "access[2]: no rights"));
    CHECK(says(f, 34, "access[2]: no who"));
    CHECK(says(f, 37, "unknown key 'verbose'"));
    CHECK(f.errors.size() == 19);
    CHECK(std::is_sorted(f.errors.begin(), f.errors.end(), [](const auto& a, const auto& b) { return a.line < b.line; }));
    // explain(): "file:line: message", then the line itself
    const auto text = f.explain();
    CHECK(text.find("eventd.toml:4: unknown key 'segmnets' in [broker]") != std::string::npos);
    CHECK(text.find("    4 | segmnets = \"named\"\n") != std::string::npos);
    CHECK(f.error().code == Errc::invalid_argument);
}

TEST_CASE("a syntax error is reported at its line; nothing past it can be read") {
    auto f = parse("[broker]\nlog_level = \"debug\"\n\nshm_prefix = \n");
    REQUIRE(f.errors.size() == 1);
    CHECK(f.errors[0].line == 4);
    CHECK(f.errors[0].message.starts_with("syntax error: "));
    auto twice = parse("[limits]\nmax_topics = 1\nmax_topics = 2\n");
    REQUIRE(twice.errors.size() == 1);
    CHECK(twice.errors[0].line == 3);
    auto wrong = parse("limits = 3\n");
    REQUIRE(wrong.errors.size() == 1);
    CHECK(says(wrong, 1, "limits: expected a table, found an integer"));
}

TEST_CASE("an unreadable file is one error, naming the file and why") {
    auto f = read_config("/nonexistent/eventd.toml", defaults());
    REQUIRE(f.errors.size() == 1);
    CHECK(f.errors[0].line == 0);
    CHECK(f.explain() == "/nonexistent/eventd.toml: cannot read the configuration file: No such file or directory\n");
}

TEST_CASE("socket modes are octal strings") {
    CHECK(parse_mode("0660") == 0660u);
    CHECK(parse_mode("600") == 0600u);
    CHECK_FALSE(parse_mode("0800").has_value());
    CHECK_FALSE(parse_mode("1777").has_value());
    CHECK_FALSE(parse_mode("").has_value());
    CHECK_FALSE(parse_mode("rw").has_value());
    auto f = parse("[broker]\nsocket_mode = 0o640\n");  // TOML's own octal integers too
    REQUIRE(f.ok());
    CHECK(f.config.broker.socket_mode == 0640u);
}

TEST_CASE("the example shipped in systemd/ is valid and shows the built-in defaults") {
    std::ifstream in(RVOIP_SOURCE_DIR "/systemd/eventd.toml");
    REQUIRE(in.good());
    std::stringstream text;
    text << in.rdbuf();
    auto f = parse_config(text.str(), "systemd/eventd.toml", defaults());
    INFO(errors(f));
    REQUIRE(f.ok());
    const DaemonConfig built_in = defaults();
    const auto& b = f.config.broker;
    CHECK(b.socket_path == built_in.broker.socket_path);  // commented out: its default depends on the user
    CHECK(b.socket_mode == built_in.broker.socket_mode);
    CHECK(b.socket_group == built_in.broker.socket_group);
    CHECK(b.shm_prefix == built_in.broker.shm_prefix);
    CHECK(f.config.segments == built_in.segments);
    CHECK(f.config.log_level == built_in.log_level);
    CHECK(f.config.max_fds == built_in.max_fds);
    CHECK(b.doorbells == built_in.broker.doorbells);
    CHECK(b.reclaim_grace_ms == built_in.broker.reclaim_grace_ms);
    CHECK(b.evict_grace_ms == built_in.broker.evict_grace_ms);
    std::vector<std::pair<std::string_view, std::uint64_t>> shown, expected;
    for_each_limit(b.limits, [&](std::string_view key, auto v) { shown.emplace_back(key, v); });
    for_each_limit(built_in.broker.limits, [&](std::string_view key, auto v) { expected.emplace_back(key, v); });
    CHECK(shown == expected);
    same_lanes(b.defaults, BrokerConfig::default_lanes());
    CHECK_FALSE(b.access.enforced());
    CHECK(b.topics.empty());
    // Every key the daemon knows is shown (set, or commented out with its default).
    for (const char* key : {"socket", "socket_mode", "socket_group", "shm_prefix", "segments", "log_level", "doorbells",
                            "reclaim_grace_ms", "evict_grace_ms", "max_connections", "max_topics", "max_topics_per_client",
                            "max_publishers_per_client", "max_subscribers_per_client", "max_shm_bytes", "max_lane_bytes",
                            "max_event_bytes", "max_fds", "capacity", "max_event", "overflow", "block_timeout_ms",
                            "evict_after_ms", "[[topic]]", "[[access]]", "pattern", "rights", "who"})
        CHECK_MESSAGE((text.str().find(std::string("\n") + key) != std::string::npos || text.str().find(std::string("# ") + key) != std::string::npos), key);
}

TEST_CASE("the example's commented [[topic]] and [[access]] entries are valid as written") {
    std::ifstream in(RVOIP_SOURCE_DIR "/systemd/eventd.toml");
    std::string line, uncommented;
    bool examples = false;
    while (std::getline(in, line)) {
        // From the first example entry on, "# key = value" and "# [[table]]" lines are the examples.
        if (line.starts_with("# [[")) examples = true;
        if (examples && std::regex_search(line, std::regex(R"(^# (\[\[|[a-z_.]+ = ))"))) uncommented += line.substr(2);
        uncommented += "\n";
    }
    auto f = parse_config(uncommented, "examples", defaults());
    INFO(errors(f));
    // Their names need the sysusers groups and users of a real host: only those may be unknown here.
    for (const auto& e : f.errors)
        CHECK_MESSAGE((e.message.find("no user named") != std::string::npos || e.message.find("no group named") != std::string::npos), e.message);
    CHECK(f.config.broker.topics.size() == 3);
}
