// Both views of one topic on plain heap buffers: the broker's formatting, publishers' LaneWriters and
// subscribers' LaneReaders all attach to the same bytes, so the cross-process protocol runs in one process.
#pragma once

#include "shm/lane.hpp"
#include "shm/topic_map.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <memory>
#include <vector>

namespace rvoip::events::test {

struct AlignedBuffer {
    std::byte* p = nullptr;
    std::size_t n = 0;
    explicit AlignedBuffer(std::size_t size) : p(static_cast<std::byte*>(std::aligned_alloc(4096, (size + 4095) & ~std::size_t(4095)))), n(size) {
        std::memset(p, 0, n);
    }
    ~AlignedBuffer() { std::free(p); }
    std::span<std::byte> span() { return {p, n}; }
};

inline std::array<layout::LaneSettings, layout::kLanes> lanes_of(std::uint64_t capacity, std::uint32_t max_event) {
    std::array<layout::LaneSettings, layout::kLanes> l{};
    for (auto& s : l) s = layout::LaneSettings{capacity, max_event, Overflow::block, 0, 0, 1000, 0};
    return l;
}

struct TopicFixture {
    std::array<layout::LaneSettings, layout::kLanes> lanes;
    AlignedBuffer data;
    AlignedBuffer cursors;
    AlignedBuffer bells;
    shm::TopicMap map;
    shm::DoorbellMap doorbells;

    explicit TopicFixture(std::uint64_t capacity = 64 * 1024, std::uint32_t max_event = 4096)
        : lanes(lanes_of(capacity, max_event)),
          data(shm::topic_data_size(lanes)),
          cursors(layout::cursors_size(layout::kMaxSubscribers)),
          bells(layout::doorbells_size(64)) {
        layout::Fingerprint fp;
        std::strcpy(fp.type_name, "raw-bytes");
        shm::format_topic(data.span(), "test.topic", 7, fp, lanes);
        shm::format_cursors(cursors.span(), 7);
        shm::format_doorbells(bells.span(), 64);
        auto m = shm::attach(data.span(), cursors.span());
        REQUIRE(m.has_value());
        map = *m;
        auto d = shm::attach_doorbells(bells.span());
        REQUIRE(d.has_value());
        doorbells = *d;
    }

    shm::LaneWriter writer(std::size_t lane, std::uint16_t slot, bool exclusive = false) {
        shm::claim_publisher(map, slot, 1);
        if (exclusive) map.lanes[lane].exclusive.store(slot + 1u);  // as the broker marks a lane held alone
        return shm::LaneWriter(map, doorbells, lane, slot, exclusive);
    }
    shm::LaneReader reader(std::size_t lane, std::uint32_t slot) {
        auto start = shm::join_subscriber(map, slot, slot, 1);
        return shm::LaneReader(map, lane, slot, start[lane]);
    }
};

// Publishes one payload; returns the error code (ok on success).
inline Errc publish(shm::LaneWriter& w, const void* p, std::uint32_t len) {
    auto size_of = [&](std::uint32_t) { return len; };
    auto c = w.try_claim(1, size_of);
    if (!c) return c.error().code;
    w.commit(*c, 1, size_of, [&](std::uint32_t, std::byte* dst) { std::memcpy(dst, p, len); }, 0);
    w.notify();
    return Errc::ok;
}

}  // namespace rvoip::events::test
