// The broker's eviction monitor (DESIGN §4, slow subscribers): it detaches a subscriber that has held a
// lane's publishers back for the lane's evict_after_ms, by moving its cursor forward over what it has
// not read (shm::evict_subscriber). The subscriber's next receive reports Errc::lagged with the exact
// count and goes on from there.
//
// It runs on a timer of its own, armed only while some topic with an evicting lane has a subscriber, and
// ticks at a fifth of the shortest evict_after in force (at most every 100 ms). A subscriber slot holds a
// lane when, from one tick to the next,
//   - neither its stored cursor nor its received counter moved (it delivered nothing), and
//   - its cursor is the lowest of the lane's subscribers and there is something to read, and
//   - the lane is full for it: less room than the worst-case claim of one max_event record (a blocked
//     publisher of any size is stuck there), or some publisher met a full lane since it last moved (a
//     batch publisher blocks earlier).
// A subscriber that keeps receiving is never evicted, however slow; one that is starved on this lane by
// a flood of higher-priority events, or that sits on a Sample, holds the lane all the same.
//
// Once evicted, a subscriber that still does not read is followed: every tick (10 ms while any is) its
// cursor is moved on over whatever was committed since, counted the same way, so that publishers do not
// stall for evict_after again on every lap of the ring. It costs the broker a walk over those records'
// headers while the subscriber stays away; it ends the moment the subscriber reads again.
//
// Who calls what: the broker's loop thread only, for every method.
#pragma once

#include "proto/layout.hpp"
#include "shm/topic_map.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace rvoip::events::daemon {

class EvictionMonitor {
public:
    struct Eviction {
        std::uint32_t slot = 0;
        std::uint32_t lane = 0;
        std::uint64_t missed = 0;   // events skipped
        std::uint64_t bytes = 0;    // ring bytes skipped, padding included
        std::int64_t held_ns = 0;   // how long it had held the lane when evicted (to within a tick)
        bool returned = false;      // not an eviction: an evicted subscriber reads again; `missed` were
                                    // skipped for it while it was away, after its eviction
    };

    // `grace`: no eviction within this long of a subscriber's join (or its adoption by a restarted broker).
    explicit EvictionMonitor(std::chrono::milliseconds grace);
    ~EvictionMonitor();
    EvictionMonitor(const EvictionMonitor&) = delete;
    EvictionMonitor& operator=(const EvictionMonitor&) = delete;

    // A reload: from then on, for subscribers already joined too.
    void set_grace(std::chrono::milliseconds grace) noexcept { grace_ns_ = std::int64_t(grace.count()) * 1'000'000; }

    // The timer: readable when a tick is due (-1 if it could not be created; the broker refuses to start).
    int fd() const noexcept { return fd_; }

    // A subscriber slot became active (joined, or adopted) or was released.
    void joined(std::uint32_t topic, const shm::TopicMap& map, std::uint32_t slot, std::int64_t now_ns);
    void left(std::uint32_t topic, std::uint32_t slot);

    // Reads the timer's expirations; then call scan() for every topic.
    void drain() noexcept;
    // One tick over one topic: evicts the subscribers that have held a lane long enough and returns them.
    // The caller rings their doorbells and logs.
    std::vector<Eviction> scan(std::uint32_t topic, shm::TopicMap& map, std::int64_t now_ns);

    // Subscribers evicted from `topic` since the broker started.
    std::uint64_t evictions(std::uint32_t topic) const noexcept;

private:
    struct LaneWatch {
        std::uint64_t cursor = 0;     // at the last tick
        std::uint64_t received = 0;
        std::uint64_t full_seen = 0;  // publishers' full counters summed when it last moved
        std::int64_t since = 0;       // first tick it was seen holding the lane; 0: it is not
        bool detached = false;        // evicted and not reading since: followed every tick
        std::uint64_t followed = 0;   // events skipped while detached, after the eviction itself
    };
    struct SlotWatch {
        bool active = false;
        std::int64_t joined_ns = 0;
        std::array<LaneWatch, layout::kLanes> lanes{};
    };
    struct TopicWatch {
        std::array<std::uint32_t, layout::kLanes> evict_after_ms{};
        std::array<SlotWatch, layout::kMaxSubscribers> slots{};
        std::uint32_t watched = 0;  // active slots
        std::uint64_t evictions = 0;
        bool evicting() const noexcept;
    };
    void scan_lane(TopicWatch& w, shm::TopicMap& map, std::size_t lane, std::int64_t now_ns, std::vector<Eviction>& out);
    void rearm() noexcept;
    bool following() const noexcept;

    std::unordered_map<std::uint32_t, TopicWatch> topics_;
    int fd_ = -1;
    std::int64_t grace_ns_ = 0;
    std::int64_t interval_ns_ = 0;  // 0: disarmed
};

}  // namespace rvoip::events::daemon
