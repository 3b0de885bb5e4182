#include "daemon/monitor.hpp"

#include "shm/lane.hpp"

#include <algorithm>

#include <sys/timerfd.h>
#include <unistd.h>

namespace rvoip::events::daemon {

namespace {
constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kMaxTick = 100 * kMs;  // holding is judged tick to tick: never coarser than this
constexpr std::int64_t kMinTick = 10 * kMs;   // nor finer: the monitor must stay cheap on an idle host
}  // namespace

EvictionMonitor::EvictionMonitor(std::chrono::milliseconds grace)
    : fd_(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)), grace_ns_(std::int64_t(grace.count()) * kMs) {}

EvictionMonitor::~EvictionMonitor() {
    if (fd_ >= 0) ::close(fd_);
}

bool EvictionMonitor::TopicWatch::evicting() const noexcept {
    return std::any_of(evict_after_ms.begin(), evict_after_ms.end(), [](std::uint32_t ms) { return ms != 0; });
}

void EvictionMonitor::joined(std::uint32_t topic, const shm::TopicMap& map, std::uint32_t slot, std::int64_t now_ns) {
    if (slot >= layout::kMaxSubscribers) return;
    auto& w = topics_[topic];
    for (std::size_t l = 0; l < layout::kLanes; ++l) w.evict_after_ms[l] = map.settings[l].evict_after_ms;
    auto& s = w.slots[slot];
    if (!s.active) ++w.watched;
    s = SlotWatch{true, now_ns, {}};
    for (std::size_t l = 0; l < layout::kLanes; ++l) {
        s.lanes[l].cursor = map.slots[slot].position[l].load();
        s.lanes[l].received = map.slots[slot].received[l].load(std::memory_order_relaxed);  // relaxed: a sample
    }
    rearm();
}

void EvictionMonitor::left(std::uint32_t topic, std::uint32_t slot) {
    auto it = topics_.find(topic);
    if (it == topics_.end() || slot >= layout::kMaxSubscribers || !it->second.slots[slot].active) return;
    it->second.slots[slot].active = false;
    --it->second.watched;
    rearm();
}

void EvictionMonitor::drain() noexcept {
    std::uint64_t expirations;
    while (::read(fd_, &expirations, sizeof expirations) > 0) {
    }
}

std::uint64_t EvictionMonitor::evictions(std::uint32_t topic) const noexcept {
    auto it = topics_.find(topic);
    return it == topics_.end() ? 0 : it->second.evictions;
}

std::vector<EvictionMonitor::Eviction> EvictionMonitor::scan(std::uint32_t topic, shm::TopicMap& map, std::int64_t now_ns) {
    std::vector<Eviction> out;
    auto it = topics_.find(topic);
    if (it == topics_.end() || it->second.watched == 0 || !map.cursor_header) return out;
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        if (it->second.evict_after_ms[l] != 0) scan_lane(it->second, map, l, now_ns, out);
    return out;
}

void EvictionMonitor::scan_lane(TopicWatch& w, shm::TopicMap& map, std::size_t lane, std::int64_t now_ns, std::vector<Eviction>& out) {
    const auto& set = map.settings[lane];
    const std::int64_t after_ns = std::int64_t(w.evict_after_ms[lane]) * kMs;
    // Room below which a claim of one max_event record may fail: the record plus padding before it.
    const std::uint64_t worst_claim = 2 * layout::record_size(set.max_event) - layout::kLine;
    const std::uint64_t tail = map.lanes[lane].position();
    const std::uint64_t lowest = shm::min_cursor(map.lanes[lane], map.cursor_header, map.slots, map.max_subscribers, lane);
    std::uint64_t full = 0;
    for (std::uint32_t p = 0; p < map.max_publishers; ++p)
        full += map.publishers[p].full[lane].load(std::memory_order_relaxed);  // relaxed: a sample; any change counts
    for (std::uint32_t i = 0; i < layout::kMaxSubscribers && i < map.max_subscribers; ++i) {
        auto& s = w.slots[i];
        if (!s.active || map.slots[i].state.load() != static_cast<std::uint32_t>(layout::SlotState::active)) continue;
        auto& lw = s.lanes[lane];
        const std::uint64_t cursor = map.slots[i].position[lane].load();
        const std::uint64_t received = map.slots[i].received[lane].load(std::memory_order_relaxed);  // relaxed: a sample
        if (cursor != lw.cursor || received != lw.received) {
            if (lw.detached) {  // it reads again
                out.push_back(Eviction{i, std::uint32_t(lane), lw.followed, 0, 0, true});
                lw = LaneWatch{cursor, received, full, 0};
                rearm();
                continue;
            }
            lw = LaneWatch{cursor, received, full, 0};
            continue;
        }
        if (lw.detached) {  // still away: move it on over what was committed since the last tick
            if (cursor >= tail) continue;
            const auto r = shm::evict_subscriber(map, i, lane, cursor);
            if (r.evicted) {
                lw.cursor = r.to;
                lw.followed += r.missed;
            }
            continue;
        }
        const bool holding = cursor == lowest && cursor < tail && (tail - cursor > set.capacity - worst_claim || full != lw.full_seen);
        if (!holding) {
            lw.since = 0;
            continue;
        }
        if (lw.since == 0) lw.since = now_ns;
        // A tenth of a tick of slack: timer jitter must not cost a whole tick more (600 ms for 500).
        if (now_ns - lw.since + interval_ns_ / 10 < after_ns || now_ns - s.joined_ns < grace_ns_) continue;
        const std::int64_t held = now_ns - lw.since;
        lw.since = 0;
        const auto r = shm::evict_subscriber(map, i, lane, cursor);
        if (!r.evicted) continue;
        lw.cursor = r.to;
        lw.full_seen = full;
        lw.detached = true;
        lw.followed = 0;
        ++w.evictions;
        out.push_back(Eviction{i, std::uint32_t(lane), r.missed, r.bytes, held});
        rearm();
    }
}

bool EvictionMonitor::following() const noexcept {
    for (auto& [id, w] : topics_)
        for (auto& s : w.slots)
            if (s.active)
                for (auto& l : s.lanes)
                    if (l.detached) return true;
    return false;
}

// Ticks at a fifth of the shortest evict_after among topics that have a subscriber, within
// [kMinTick, kMaxTick], and at kMinTick while an evicted subscriber is followed; disarmed when there is
// none, so an idle broker never wakes up for this.
void EvictionMonitor::rearm() noexcept {
    std::int64_t interval = 0;
    for (auto& [id, w] : topics_) {
        if (w.watched == 0) continue;
        for (auto ms : w.evict_after_ms)
            if (ms != 0) {
                const std::int64_t tick = std::clamp(std::int64_t(ms) * kMs / 5, kMinTick, kMaxTick);
                interval = interval == 0 ? tick : std::min(interval, tick);
            }
    }
    if (following()) interval = kMinTick;
    if (interval == interval_ns_ || fd_ < 0) return;
    itimerspec its{};
    its.it_interval.tv_sec = its.it_value.tv_sec = interval / 1'000'000'000;
    its.it_interval.tv_nsec = its.it_value.tv_nsec = interval % 1'000'000'000;
    ::timerfd_settime(fd_, 0, &its, nullptr);
    interval_ns_ = interval;
}

}  // namespace rvoip::events::daemon
