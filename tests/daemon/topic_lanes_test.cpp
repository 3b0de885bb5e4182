// A new topic's lanes: defaults, then what its creator asks for, then what the operator fixed by pattern.
#include "daemon/broker.hpp"
#include "daemon/topic_lanes.hpp"
#include "proto/messages.hpp"

#include <doctest/doctest.h>

using namespace rvoip::events;
using namespace rvoip::events::daemon;

namespace {
constexpr std::size_t kNormal = std::size_t(Priority::normal);
constexpr std::size_t kLow = std::size_t(Priority::low);
}  // namespace

TEST_CASE("a topic nobody configured gets the defaults; its creator's request replaces them") {
    const auto defaults = BrokerConfig::default_lanes();
    LaneArray none{};
    auto lanes = decide_lanes(defaults, none, nullptr);
    CHECK(lanes[kNormal].capacity == defaults[kNormal].capacity);

    LaneArray asked{};
    asked[kNormal].capacity = 1u << 16;
    asked[kNormal].overflow = Overflow::fail;
    asked[kNormal].block_timeout_ms = 1;  // the policy was chosen
    asked[kLow].evict_after_ms = proto::kEvictNever;
    lanes = decide_lanes(defaults, asked, nullptr);
    CHECK(lanes[kNormal].capacity == 1u << 16);
    CHECK(lanes[kNormal].max_event == defaults[kNormal].max_event);
    CHECK(lanes[kNormal].overflow == Overflow::fail);
    CHECK(lanes[kLow].evict_after_ms == 0);
}

TEST_CASE("an operator's fixed setting outranks the creator's; the settings it leaves open stay the creator's") {
    const auto defaults = BrokerConfig::default_lanes();
    TopicLanes fixed{"sip.*", {}};
    fixed.lanes[kNormal].capacity = 16u << 20;
    fixed.lanes[kNormal].evict_after_ms = 0;  // never, whatever the creator asks
    LaneArray asked{};
    asked[kNormal].capacity = 1u << 16;
    asked[kNormal].max_event = 1024;
    asked[kNormal].evict_after_ms = 100;
    const auto lanes = decide_lanes(defaults, asked, &fixed);
    CHECK(lanes[kNormal].capacity == 16u << 20);
    CHECK(lanes[kNormal].max_event == 1024);
    CHECK(lanes[kNormal].evict_after_ms == 0);
    CHECK(lanes[kLow].capacity == defaults[kLow].capacity);
}

TEST_CASE("per-topic overrides go by pattern; the first match applies") {
    std::vector<TopicLanes> list{{"sip.message", {}}, {"sip.*", {}}, {"*.bulk", {}}};
    list[0].lanes[kNormal].capacity = 1u << 24;
    list[1].lanes[kNormal].capacity = 1u << 23;
    CHECK(find_topic_lanes(list, "sip.message") == &list[0]);
    CHECK(find_topic_lanes(list, "sip.invite") == &list[1]);
    CHECK(find_topic_lanes(list, "sip.bulk") == &list[1]);  // first match, not best match
    CHECK(find_topic_lanes(list, "rtp.bulk") == &list[2]);
    CHECK(find_topic_lanes(list, "call.state") == nullptr);
    CHECK(find_topic_lanes(list, "sip") == nullptr);  // a glob matches the whole name
}

TEST_CASE("sizes read and print as operators write them") {
    CHECK(parse_size("4096") == 4096u);
    CHECK(parse_size("64K") == 65536u);
    CHECK(parse_size("4M") == 4u << 20);
    CHECK(parse_size("1G") == 1u << 30);
    CHECK_FALSE(parse_size("4MB").has_value());
    CHECK_FALSE(parse_size("").has_value());
    CHECK_FALSE(parse_size("-1").has_value());
    CHECK_FALSE(parse_size("2048G").has_value());  // more than 1 TiB
    CHECK(format_size(4u << 20) == "4M");
    CHECK(format_size(65 * 1024) == "65K");
    CHECK(format_size(100) == "100");
    CHECK(format_size(0) == "0");
    LaneOverride o;
    CHECK(describe(o) == "-");
    o.capacity = 1u << 20;
    o.overflow = Overflow::fail;
    CHECK(describe(o) == "capacity=1M overflow=fail");
}
