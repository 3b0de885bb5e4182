#include "daemon/topic_lanes.hpp"

#include "proto/messages.hpp"

#include <charconv>

#include <fnmatch.h>

namespace rvoip::events::daemon {

bool TopicLanes::matches(std::string_view topic) const {
    return ::fnmatch(pattern.c_str(), std::string(topic).c_str(), 0) == 0;
}

const TopicLanes* find_topic_lanes(const std::vector<TopicLanes>& list, std::string_view topic) {
    for (const auto& t : list)
        if (t.matches(topic)) return &t;
    return nullptr;
}

LaneArray decide_lanes(const LaneArray& defaults, const LaneArray& requested, const TopicLanes* fixed) {
    LaneArray lanes = defaults;
    for (std::size_t l = 0; l < layout::kLanes; ++l) {
        const auto& r = requested[l];
        auto& out = lanes[l];
        if (r.capacity) out.capacity = r.capacity;
        if (r.max_event) out.max_event = r.max_event;
        if (r.block_timeout_ms) {  // the policy was chosen (see OpenTopic): otherwise keep the default's
            out.overflow = r.overflow;
            out.block_timeout_ms = r.block_timeout_ms;
        }
        if (r.evict_after_ms) out.evict_after_ms = r.evict_after_ms == proto::kEvictNever ? 0 : r.evict_after_ms;
        if (!fixed) continue;
        const auto& f = fixed->lanes[l];
        if (f.capacity) out.capacity = *f.capacity;
        if (f.max_event) out.max_event = *f.max_event;
        if (f.overflow) out.overflow = *f.overflow;
        if (f.block_timeout_ms) out.block_timeout_ms = *f.block_timeout_ms;
        if (f.evict_after_ms) out.evict_after_ms = *f.evict_after_ms;
    }
    return lanes;
}

std::optional<std::uint64_t> parse_size(std::string_view s) {
    std::uint64_t unit = 1;
    if (!s.empty() && (s.back() == 'K' || s.back() == 'M' || s.back() == 'G')) {
        unit = s.back() == 'K' ? 1024 : s.back() == 'M' ? 1024 * 1024 : 1024ull * 1024 * 1024;
        s.remove_suffix(1);
    }
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty() || v > (std::uint64_t(1) << 40) / unit) return std::nullopt;
    return v * unit;
}

std::string format_size(std::uint64_t bytes) {
    for (auto [unit, suffix] : {std::pair{1ull << 30, "G"}, {1ull << 20, "M"}, {1ull << 10, "K"}})
        if (bytes && bytes % unit == 0) return std::to_string(bytes / unit) + suffix;
    return std::to_string(bytes);
}

std::string describe(const LaneOverride& o) {
    std::string s;
    auto add = [&](std::string_view key, const std::string& value) { s += (s.empty() ? "" : " ") + std::string(key) + "=" + value; };
    if (o.capacity) add("capacity", format_size(*o.capacity));
    if (o.max_event) add("max_event", format_size(*o.max_event));
    if (o.overflow) add("overflow", *o.overflow == Overflow::block ? "block" : "fail");
    if (o.block_timeout_ms) add("block_timeout_ms", std::to_string(*o.block_timeout_ms));
    if (o.evict_after_ms) add("evict_after_ms", std::to_string(*o.evict_after_ms));
    return s.empty() ? "-" : s;
}

}  // namespace rvoip::events::daemon
