// Eviction of a stuck subscriber (shm::evict_subscriber) and how its reader takes it up
// (LaneReader::follow_eviction), on one buffer: the broker's and the subscriber's halves in one process.
#include "tests/shm/topic_fixture.hpp"

#include <vector>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

constexpr std::size_t kLane = 2;  // Normal

Errc publish_u32(shm::LaneWriter& w, std::uint32_t v, std::uint32_t len) {
    std::vector<std::byte> buf(len);
    std::memcpy(buf.data(), &v, 4);
    return publish(w, buf.data(), len);
}

// Reads (and releases) up to `max` records; returns their first 4 payload bytes.
std::vector<std::uint32_t> read(shm::LaneReader& r, std::size_t max = ~std::size_t(0), bool release = true) {
    std::vector<std::uint32_t> out;
    while (out.size() < max) {
        auto p = r.peek();
        REQUIRE_FALSE(p.corrupt());
        if (!p.record) break;
        std::uint32_t v = 0;
        std::memcpy(&v, p.record + 1, 4);
        out.push_back(v);
        r.consume(p);
        if (release) r.release();
    }
    return out;
}

// The subscriber's arithmetic (SubscriberCore::follow_eviction) for one lane: what the broker counted,
// less what this reader had delivered of it.
std::uint64_t follow(TopicFixture& t, shm::LaneReader& r, std::uint64_t& missed_seen) {
    const std::uint64_t cursor = t.map.slots[0].position[kLane].load();
    REQUIRE(cursor != r.stored());
    const std::uint64_t counted = t.map.slots[0].missed.load() - missed_seen;
    missed_seen += counted;
    const std::uint64_t delivered = r.follow_eviction(cursor);
    REQUIRE(delivered <= counted);
    return counted - delivered;
}

}  // namespace

TEST_CASE("an eviction moves a stuck cursor over exactly the committed events, padding skipped but not counted") {
    TopicFixture t(4096, 1024);
    auto r = t.reader(kLane, 0);
    auto w = t.writer(kLane, 0);
    std::uint32_t next = 0;
    while (publish_u32(w, next, 300) == Errc::ok) ++next;  // 384-byte records: ten fill the ring
    REQUIRE(next == 10);
    REQUIRE(read(r, 5).size() == 5);
    while (publish_u32(w, next, 300) == Errc::ok) ++next;  // padding at the ring's end, then five more
    REQUIRE(next == 15);

    const std::uint64_t stuck = r.stored();
    auto rep = shm::evict_subscriber(t.map, 0, kLane, stuck);
    CHECK(rep.evicted);
    CHECK(rep.missed == 10);
    CHECK(rep.to == t.map.lanes[kLane].position());
    CHECK(rep.bytes == rep.to - stuck);
    CHECK(t.map.slots[0].missed.load() == 10);
    CHECK(t.map.slots[0].evictions.load() == 2);  // even: no eviction being written
    CHECK(publish_u32(w, next, 300) == Errc::ok);  // the publisher proceeds at once

    std::uint64_t seen = 0;
    CHECK(follow(t, r, seen) == 10);
    auto rest = read(r);
    REQUIRE(rest.size() == 1);
    CHECK(rest[0] == next);  // every later event, from the first one after the skipped
}

TEST_CASE("an eviction stops at a claim not yet committed; the subscriber reads it once it is") {
    TopicFixture t(8192, 256);
    auto r = t.reader(kLane, 0);
    auto a = t.writer(kLane, 0);
    auto b = t.writer(kLane, 1);
    for (std::uint32_t i = 0; i < 3; ++i) REQUIRE(publish_u32(a, i, 16) == Errc::ok);
    auto size_of = [](std::uint32_t) { return 16u; };
    auto hole = b.try_claim(1, size_of);
    REQUIRE(hole.has_value());
    for (std::uint32_t i = 4; i < 6; ++i) REQUIRE(publish_u32(a, i, 16) == Errc::ok);

    auto rep = shm::evict_subscriber(t.map, 0, kLane, r.stored());
    CHECK(rep.evicted);
    CHECK(rep.missed == 3);
    CHECK(rep.to == hole->position);
    std::uint64_t seen = 0;
    CHECK(follow(t, r, seen) == 3);
    CHECK(read(r).empty());  // waits at the hole, like any reader

    const std::uint32_t three = 3;
    b.commit(*hole, 1, size_of, [&](std::uint32_t, std::byte* dst) { std::memcpy(dst, &three, 4); }, 0);
    CHECK(read(r) == std::vector<std::uint32_t>{3, 4, 5});

    // Nothing committed at the cursor: nothing to skip, no eviction.
    auto none = shm::evict_subscriber(t.map, 0, kLane, r.stored());
    CHECK_FALSE(none.evicted);
    CHECK(t.map.slots[0].missed.load() == 3);
}

TEST_CASE("an eviction whose subscriber moved its cursor meanwhile changes nothing") {
    TopicFixture t(4096, 64);
    auto r = t.reader(kLane, 0);
    auto w = t.writer(kLane, 0);
    for (std::uint32_t i = 0; i < 8; ++i) REQUIRE(publish_u32(w, i, 8) == Errc::ok);
    const std::uint64_t seen_stuck = r.stored();  // what the monitor read
    REQUIRE(read(r, 2).size() == 2);              // ...then the subscriber woke up and stored a new cursor
    const std::uint64_t own = r.stored();
    auto rep = shm::evict_subscriber(t.map, 0, kLane, seen_stuck);
    CHECK_FALSE(rep.evicted);
    CHECK(t.map.slots[0].position[kLane].load() == own);
    CHECK(t.map.slots[0].missed.load() == 0);  // taken back before the sequence count turned even
    CHECK(t.map.slots[0].evictions.load() % 2 == 0);
    CHECK(read(r) == std::vector<std::uint32_t>{2, 3, 4, 5, 6, 7});
}

TEST_CASE("a subscriber that delivered events past its stored cursor is told exactly the rest") {
    TopicFixture t(4096, 64);
    auto r = t.reader(kLane, 0);
    auto w = t.writer(kLane, 0);
    for (std::uint32_t i = 0; i < 10; ++i) REQUIRE(publish_u32(w, i, 8) == Errc::ok);
    REQUIRE(read(r, 3, false).size() == 3);  // delivered, cursor not stored yet (batched release)

    auto rep = shm::evict_subscriber(t.map, 0, kLane, r.stored());
    REQUIRE(rep.evicted);
    CHECK(rep.missed == 10);  // the broker cannot know what the subscriber delivered
    std::uint64_t seen = 0;
    CHECK(follow(t, r, seen) == 7);
    REQUIRE(publish_u32(w, 10, 8) == Errc::ok);
    CHECK(read(r) == std::vector<std::uint32_t>{10});
}

TEST_CASE("a subscriber that read on past where the eviction stopped has missed nothing and repeats nothing") {
    TopicFixture t(4096, 64);
    auto r = t.reader(kLane, 0);
    auto w = t.writer(kLane, 0);
    for (std::uint32_t i = 0; i < 4; ++i) REQUIRE(publish_u32(w, i, 8) == Errc::ok);
    REQUIRE(read(r, 1, false).size() == 1);
    auto rep = shm::evict_subscriber(t.map, 0, kLane, r.stored());  // counts 4, stops at the tail
    REQUIRE(rep.evicted);
    for (std::uint32_t i = 4; i < 6; ++i) REQUIRE(publish_u32(w, i, 8) == Errc::ok);
    CHECK(read(r, 4, false) == std::vector<std::uint32_t>{1, 2, 3, 4});  // before it noticed: past the new cursor
    r.release();  // refused: the broker's cursor stays until the reader takes it up
    CHECK(t.map.slots[0].position[kLane].load() == rep.to);

    std::uint64_t seen = 0;
    CHECK(follow(t, r, seen) == 0);
    CHECK(read(r) == std::vector<std::uint32_t>{5});
    CHECK(t.map.slots[0].position[kLane].load() == r.position());
}

TEST_CASE("eviction settings are validated: at most an hour") {
    auto l = lanes_of(4096, 64)[kLane];
    l.evict_after_ms = layout::kMaxEvictAfterMs;
    CHECK(shm::validate_lane(l, kLane).has_value());
    l.evict_after_ms = layout::kMaxEvictAfterMs + 1;
    CHECK_FALSE(shm::validate_lane(l, kLane).has_value());
}
