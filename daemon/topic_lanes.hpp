// The lane settings of a new topic, and what decides them: the broker's defaults, what the topic's
// creator asks for (TopicOptions), and what the operator fixed for topic names by pattern (the
// configuration file's [[topic]] entries, the `lanes` lines of an --acl file).
//
// Precedence, per lane and per setting: the operator's fixed value, else the creator's, else the
// default. A fixed setting outranks the creator because the operator answers for the host's memory and
// for how long publishers may stall; a setting the operator left open stays the creator's to choose.
#pragma once

#include "proto/layout.hpp"

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rvoip::events::daemon {

using LaneArray = std::array<layout::LaneSettings, layout::kLanes>;

// One lane's settings an operator fixed; unset ones are left to the creator and the defaults.
struct LaneOverride {
    std::optional<std::uint64_t> capacity;
    std::optional<std::uint32_t> max_event;
    std::optional<Overflow> overflow;
    std::optional<std::uint32_t> block_timeout_ms;
    std::optional<std::uint32_t> evict_after_ms;  // 0: never
    bool operator==(const LaneOverride&) const = default;
    bool empty() const noexcept { return *this == LaneOverride{}; }
};

// Settings fixed for every topic whose name matches `pattern` (an fnmatch(3) glob).
struct TopicLanes {
    std::string pattern;
    std::array<LaneOverride, layout::kLanes> lanes{};
    bool operator==(const TopicLanes&) const = default;
    bool matches(std::string_view topic) const;
};

// The first entry of `list` whose pattern matches `topic`, or null: an operator orders entries from the
// most specific pattern to the least, as in the access rules.
const TopicLanes* find_topic_lanes(const std::vector<TopicLanes>& list, std::string_view topic);

// A new topic's lanes. `requested` is OpenTopic::lanes (zero fields: not asked for; see proto/messages.hpp).
// The result is not validated: the caller runs shm::validate_lane on each lane.
LaneArray decide_lanes(const LaneArray& defaults, const LaneArray& requested, const TopicLanes* fixed);

// "4096", "64K", "4M", "1G" -> bytes (K, M, G are powers of 1024); nullopt for anything else or more than 1 TiB.
std::optional<std::uint64_t> parse_size(std::string_view s);
// The shortest of those forms that says `bytes` exactly: "4M", "65K", "100".
std::string format_size(std::uint64_t bytes);

// "capacity=4M max_event=64K overflow=fail": what `o` fixes, for logs ("-" when nothing).
std::string describe(const LaneOverride& o);

}  // namespace rvoip::events::daemon
