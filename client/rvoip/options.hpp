// librvoip-events: the options of topics, publishers and subscribers, and what the library reports
// about them. Part of the public API (included by rvoip/events.hpp).
#pragma once

#include "proto/layout.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <string>

namespace rvoip::events {

// Lane settings requested when this open creates the topic; zero fields take the broker's defaults. An
// existing topic keeps its settings (TopicInfo tells which are in force).
struct TopicOptions {
    std::array<layout::LaneSettings, layout::kLanes> lanes{};

    TopicOptions& capacity(Priority p, std::uint64_t bytes) noexcept { return lane(p).capacity = bytes, *this; }
    TopicOptions& max_event(Priority p, std::uint32_t bytes) noexcept { return lane(p).max_event = bytes, *this; }
    TopicOptions& overflow(Priority p, Overflow o, std::chrono::milliseconds block_timeout = {}) noexcept {
        auto& l = lane(p);
        l.overflow = o;
        // A non-zero timeout tells the broker the policy was chosen; `fail` ignores the value.
        l.block_timeout_ms = block_timeout.count() > 0 ? static_cast<std::uint32_t>(block_timeout.count()) : 1000;
        return *this;
    }
    // How long a subscriber may hold this lane's publishers back before the broker evicts it (it then
    // gets Errc::lagged with the exact count, see BasicSubscriber::last_missed). Zero: never. Unset: the
    // broker's default (never on Critical, 500 ms on the others).
    TopicOptions& evict_after(Priority p, std::chrono::milliseconds after) noexcept {
        const auto ms = std::clamp<std::int64_t>(after.count(), 0, layout::kMaxEvictAfterMs + 1);  // beyond: refused
        lane(p).evict_after_ms = ms == 0 ? proto::kEvictNever : static_cast<std::uint32_t>(ms);
        return *this;
    }
    TopicOptions& all(std::uint64_t capacity_bytes, std::uint32_t max_event_bytes) noexcept {
        for (auto& l : lanes) l.capacity = capacity_bytes, l.max_event = max_event_bytes;
        return *this;
    }

private:
    layout::LaneSettings& lane(Priority p) noexcept { return lanes[static_cast<std::size_t>(p)]; }
};

// How a blocking receive waits: spin `spin` times re-checking the lanes (a pause each: ~10 µs in all
// with the default on current x86), then park on the doorbell (futex) until a publisher rings it.
// busy_poll never parks (one core per such subscriber). A larger spin trades CPU for wake-up latency.
// adaptive_spin (the default) spins up to `spin`: each wait halves the next spin when it had to park
// anyway and doubles it when the spin (or a short park) caught an event, so a consumer woken now and
// then stops burning a spin per wake-up while a busy one keeps spinning.
//
// wake_lanes (a bit per lane, 1 << Priority) are the lanes whose events wake a parked consumer; the
// others' publishers do not ring it, and their events are taken at its next wake-up, at the latest
// deferred_delay after it parked. A process that only needs Low reports now and then stops being woken
// for each: WaitOptions{.wake_lanes = 0b0111}. (A WaitSet's pollable descriptor wakes on every lane.)
//
// batch_delay (off by default) is for consumers that want throughput more than each event's latency:
// once a wait has been ended by an event, the next wait that finds the lanes empty naps this long
// instead of parking, with only the Critical lane able to ring it, and looks again; it parks only when
// a nap found nothing. A steady stream then costs one wake-up per batch_delay, however many events it
// carries, instead of one per event; a non-Critical event waits up to batch_delay longer. 100 µs lets a
// lane of 1 MiB absorb 80 M events/s of 64 bytes between looks.
struct WaitOptions {
    std::uint32_t spin = 500;
    bool busy_poll = false;
    bool adaptive_spin = true;
    std::uint8_t wake_lanes = 0xf;
    std::chrono::nanoseconds deferred_delay = std::chrono::milliseconds(10);
    std::chrono::nanoseconds batch_delay{0};
};

// exclusive_lanes (a bit per lane, 1 << Priority): lanes this publisher holds alone. Its claims there
// are a plain store of the lane's tail, with no CAS and no retry, and it pays no barrier per event (a
// consumer that parks on the lane issues one for it, shm/membarrier.hpp). The broker grants it only
// when no other publisher of the topic may publish on those lanes (else Errc::lane_taken, naming one),
// and withholds them from every publisher that comes while this one holds them (publishing there fails
// with Errc::lane_taken; reopen once the holder is gone).
struct PublisherOptions {
    TopicOptions topic;
    std::uint8_t exclusive_lanes = 0;
};
struct SubscriberOptions {
    TopicOptions topic;
    WaitOptions wait;
};

// A partitioned topic (consumer groups, rvoip/group.hpp): how many partitions (1-128; every keyed
// publisher and group member of the topic must say the same), the partition topics' lane settings
// when this call creates them, and how a member waits.
struct PartitionOptions {
    std::uint32_t partitions = 16;
    TopicOptions topic;
    WaitOptions wait;
};

// A publisher's own counters on one lane (its line of the publisher table; the CLI sums them).
struct LaneCounters {
    std::uint64_t published = 0;
    std::uint32_t full = 0;      // publishes that met a full lane (refused under `fail`, delayed under `block`)
    std::uint32_t timeouts = 0;  // `block` publishes that gave up
};

// The control connection as this EventSystem sees it. Publishing and receiving never depend on it:
// they go on through the mapped rings while the broker is away.
struct ConnectionState {
    bool connected = false;
    std::uint64_t reconnects = 0;  // times the connection was re-established (a broker restart) and slots reclaimed
    std::uint32_t slots_lost = 0;  // slots a restarted broker would not give back: their rings were not adopted
    std::string last_error;        // why the connection last dropped, a reconnection failed, or a reclaim was refused
};

struct TopicInfo {
    std::string name;
    std::uint32_t id = 0;
    std::array<layout::LaneSettings, layout::kLanes> lanes{};
};

}  // namespace rvoip::events
