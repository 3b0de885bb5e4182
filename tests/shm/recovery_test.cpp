// Crash points of publishers and subscribers, run deterministically on one buffer: test hooks park a
// publisher between its intent and its CAS, or the broker's recovery at a hole, while the test plays the
// other processes.
#define RVOIP_TEST_HOOKS 1
#include "tests/shm/topic_fixture.hpp"

#include <functional>
#include <optional>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

using layout::SlotState;

void mark(TopicFixture& t, std::uint32_t slot, SlotState s) { t.map.publishers[slot].state.store(static_cast<std::uint32_t>(s)); }

// Runs `f` once, the next time the hook fires.
struct Once {
    std::function<void()> f;
    static void fire(void* self, std::uint64_t) {
        auto* o = static_cast<Once*>(self);
        if (auto g = std::exchange(o->f, nullptr)) g();
    }
    static void fire_lane(void* self, std::uint32_t) { fire(self, 0); }
};

struct ClaimHook {
    explicit ClaimHook(Once& o) {
        shm::test_hooks::before_claim_cas = &Once::fire_lane;
        shm::test_hooks::before_claim_cas_ctx = &o;
    }
    ~ClaimHook() { shm::test_hooks::before_claim_cas = nullptr; }
};
struct HoleHook {
    explicit HoleHook(Once& o) {
        shm::test_hooks::at_recovery_hole = &Once::fire;
        shm::test_hooks::at_recovery_hole_ctx = &o;
    }
    ~HoleHook() { shm::test_hooks::at_recovery_hole = nullptr; }
};

// Reads every committed record's first 4 payload bytes until nothing is ready.
std::vector<std::uint32_t> drain(shm::LaneReader& r) {
    std::vector<std::uint32_t> out;
    for (;;) {
        auto p = r.peek();
        REQUIRE_FALSE(p.corrupt());
        if (!p.record) return out;
        std::uint32_t v = 0;
        std::memcpy(&v, p.record + 1, 4);
        out.push_back(v);
        r.consume(p);
        r.release();
    }
}

Errc publish_u32(shm::LaneWriter& w, std::uint32_t v, std::uint32_t len = 4) {
    std::vector<std::byte> buf(len);
    std::memcpy(buf.data(), &v, 4);
    return publish(w, buf.data(), len);
}

}  // namespace

TEST_CASE("a claim that returns full after a lost CAS leaves no intent behind, so the winner's death is recovered") {
    TopicFixture t(4096, 64);
    auto r = t.reader(0, 0);
    auto a = t.writer(0, 0);
    auto b = t.writer(0, 1);
    for (std::uint32_t i = 0; i < 63; ++i) REQUIRE(publish_u32(b, i) == Errc::ok);  // one record of room left
    std::optional<shm::LaneWriter::Claim> won;
    Once once{[&] {  // between a's intent and a's CAS, b takes the last record and dies before committing
        auto c = b.try_claim(1, [](std::uint32_t) { return 4u; });
        REQUIRE(c.has_value());
        won = *c;
    }};
    {
        ClaimHook hook(once);
        CHECK(publish_u32(a, 99) == Errc::full);  // a's CAS failed, its next turn met the full lane
    }
    REQUIRE(won.has_value());
    CHECK(t.map.publishers[0].intent[0].length.load() == 0);  // a stale intent would name b's position
    mark(t, 1, SlotState::dead);
    t.map.publishers[1].intent[0].won.store(layout::kNoPosition);  // b died between its CAS and its mark
    CHECK(drain(r).size() == 63);
    auto rep = shm::recover_publisher(t.map, 1);
    CHECK(rep.outcome == shm::Recovery::done);
    CHECK(rep.padded_bytes == 64);
    CHECK(drain(r).empty());
    CHECK(r.position() == won->end);
    CHECK(publish_u32(a, 100) == Errc::ok);
    CHECK(drain(r) == std::vector<std::uint32_t>{100});
}

TEST_CASE("intents are per lane: a loan open on one lane survives a publish on another") {
    TopicFixture t(8192, 256);
    auto r0 = t.reader(0, 0);
    auto loaned = t.writer(0, 0);
    auto other = t.writer(1, 0);  // the same publisher slot, another lane
    auto c = loaned.try_claim(1, [](std::uint32_t) { return 100u; });
    REQUIRE(c.has_value());
    REQUIRE(publish_u32(other, 5) == Errc::ok);  // commits and clears lane 1's intent only
    const auto in = shm::read_intent(t.map.publishers[0].intent[0]);
    CHECK(in.length == c->end - c->position);
    CHECK(in.position == c->position);
    mark(t, 0, SlotState::dead);  // the process dies with its loan open
    CHECK(shm::recover_publisher(t.map, 0).padded_bytes == c->end - c->position);
    CHECK(drain(r0).empty());
    CHECK(r0.position() == c->end);
}

TEST_CASE("recovery reads the live intents before it trusts a hole: a commit during recovery is not padded over") {
    TopicFixture t(8192, 256);
    auto r = t.reader(0, 0);
    (void)t.writer(0, 0);  // the dead publisher: its intent is set by hand below
    auto w = t.writer(0, 1);
    auto x = t.writer(0, 2);
    const std::uint64_t p = t.map.lanes[0].position();
    // dead read tail p and announced a 128-byte claim, but w won p with a 64-byte record; x then claimed
    // the next 64 bytes. Nobody has committed yet.
    auto cw = w.try_claim(1, [](std::uint32_t) { return 4u; });
    auto cx = x.try_claim(1, [](std::uint32_t) { return 8u; });
    REQUIRE((cw && cx));
    t.map.publishers[0].intent[0].position.store(p);
    t.map.publishers[0].intent[0].length.store(128);
    mark(t, 0, SlotState::dead);
    auto commit = [](shm::LaneWriter& wr, const shm::LaneWriter::Claim& c, std::uint32_t len, std::uint32_t v) {
        wr.commit(c, 1, [len](std::uint32_t) { return len; }, [v](std::uint32_t, std::byte* d) { std::memcpy(d, &v, 4); }, 0);
    };
    Once once{[&] { commit(w, *cw, 4, 1); }};  // w commits (and clears its intent) while recovery looks at p
    {
        HoleHook hook(once);
        CHECK(shm::recover_publisher(t.map, 0).outcome == shm::Recovery::retry);  // x's live claim covers p + 64
    }
    commit(x, *cx, 8, 2);
    auto rep = shm::recover_publisher(t.map, 0);
    CHECK(rep.outcome == shm::Recovery::done);
    CHECK(rep.padded_bytes == 0);
    CHECK(drain(r) == std::vector<std::uint32_t>{1, 2});
}

TEST_CASE("two dead slots of one process naming one position are recovered whatever their order") {
    for (int order = 0; order < 2; ++order)
        for (int proven = 0; proven < 2; ++proven) {
            CAPTURE(order);
            CAPTURE(proven);
            TopicFixture t(8192, 256);
            auto r = t.reader(0, 0);
            (void)t.writer(0, 0);  // small: its intent is set by hand below
            auto big = t.writer(0, 1);
            auto live = t.writer(0, 2);
            // big won a 192-byte claim at p; small read the same tail and lost its 64-byte CAS. Both die.
            auto c = big.try_claim(3, [](std::uint32_t) { return 10u; });
            REQUIRE(c.has_value());
            REQUIRE(c->end - c->position == 192);
            t.map.publishers[0].intent[0].position.store(c->position);
            t.map.publishers[0].intent[0].length.store(64);
            if (!proven) t.map.publishers[1].intent[0].won.store(layout::kNoPosition);
            REQUIRE(publish_u32(live, 7) == Errc::ok);  // committed after the dead claim
            mark(t, 0, SlotState::dead);  // the broker marks every slot of the process first
            mark(t, 1, SlotState::dead);
            const std::uint32_t first = order == 0 ? 0 : 1;
            CHECK(shm::recover_publisher(t.map, first).outcome == shm::Recovery::done);
            CHECK(shm::recover_publisher(t.map, 1 - first).outcome == shm::Recovery::done);
            CHECK(drain(r) == std::vector<std::uint32_t>{7});
            CHECK(r.position() == t.map.lanes[0].position());
        }
}

TEST_CASE("a dead publisher's proven claim is recovered even while a stopped live publisher's stale intent covers it") {
    TopicFixture t(8192, 256);
    auto r = t.reader(0, 0);
    auto dead = t.writer(0, 0);
    (void)t.writer(0, 1);
    auto c = dead.try_claim(1, [](std::uint32_t) { return 10u; });
    REQUIRE(c.has_value());
    // A live publisher that read the same tail, lost its CAS and was descheduled before its next turn.
    t.map.publishers[1].intent[0].position.store(c->position);
    t.map.publishers[1].intent[0].length.store(128);
    mark(t, 0, SlotState::dead);
    auto rep = shm::recover_publisher(t.map, 0);  // won == position: the range is the dead one's
    CHECK(rep.outcome == shm::Recovery::done);
    CHECK(rep.padded_bytes == 64);
    CHECK(drain(r).empty());
    CHECK(r.position() == c->end);
}

TEST_CASE("recovery refuses unaligned or oversized intents and an unaligned tail, and writes nothing") {
    TopicFixture t(4096, 64);
    auto r = t.reader(3, 0);
    (void)t.writer(3, 0);
    const std::uint64_t cap = t.map.settings[3].capacity;
    mark(t, 0, SlotState::dead);
    auto& in = t.map.publishers[0].intent[3];
    auto* last = reinterpret_cast<layout::RecordHeader*>(t.map.rings[3] + cap - 64);
    const auto before = last->position.load();
    t.map.lanes[3].tail.store(cap);
    in.position.store(cap - 8);  // unaligned: a pad here would write past the ring (past the segment: Low is last)
    in.length.store(64);
    auto rep = shm::recover_publisher(t.map, 0);
    CHECK(rep.corrupt.find("not aligned") != std::string::npos);
    CHECK(rep.padded_bytes == 0);
    in.position.store(0);
    in.length.store(std::uint32_t(2 * cap));
    rep = shm::recover_publisher(t.map, 0);
    CHECK(rep.corrupt.find("exceeds the ring") != std::string::npos);
    t.map.lanes[3].tail.store(cap - 8);
    in.position.store(0);
    in.length.store(64);
    rep = shm::recover_publisher(t.map, 0);
    CHECK(rep.corrupt.find("tail") != std::string::npos);
    CHECK(rep.padded_bytes == 0);
    CHECK(last->position.load() == before);
    (void)r;
}

TEST_CASE("recovery never steps off a line boundary a peer wrote: an unaligned cursor or shrink_to (found by fuzz_records)") {
    TopicFixture t(4096, 64);
    auto r = t.reader(3, 0);
    (void)t.writer(3, 0);
    mark(t, 0, SlotState::dead);
    auto& in = t.map.publishers[0].intent[3];
    t.map.lanes[3].tail.store(128);  // the dead publisher's claim [0, 128) happened, nothing was committed
    in.position.store(0);
    in.won.store(0);
    in.length.store(128);
    SUBCASE("a subscriber's cursor inside the hole's first line: the hole is padded from its start") {
        t.map.slots[0].position[3].store(8);
        auto rep = shm::recover_publisher(t.map, 0);
        CHECK(rep.corrupt.empty());
        CHECK(rep.padded_bytes == 128);
        auto p = r.peek();
        CHECK_FALSE(p.corrupt());
        CHECK(r.position() == 128);
    }
    SUBCASE("a dead claim's shrink_to that is not a line boundary: refused, nothing written") {
        in.shrink_to.store(8);
        auto rep = shm::recover_publisher(t.map, 0);
        CHECK(rep.corrupt.find("shrunk to 8") != std::string::npos);
        CHECK(rep.padded_bytes == 0);
        auto p = r.peek();
        CHECK_FALSE(p.corrupt());
        CHECK(r.position() == 0);
    }
}

TEST_CASE("recovery never steps off a line for an unaligned subscriber cursor or shrink point, which would write past the ring") {
    TopicFixture t(4096, 64);
    auto r = t.reader(3, 0);
    (void)t.writer(3, 0);
    const std::uint64_t cap = t.map.settings[3].capacity;
    mark(t, 0, SlotState::dead);
    auto& in = t.map.publishers[0].intent[3];
    t.map.lanes[3].tail.store(cap);
    // A subscriber wrote a cursor 8 bytes short of the ring's end: recovery used to jump there and write
    // a padding header across the end of the ring (Low is last: past the segment).
    t.map.slots[0].position[3].store(cap - 8);
    in.position.store(0);
    in.length.store(std::uint32_t(cap));
    auto rep = shm::recover_publisher(t.map, 0);
    CHECK(rep.corrupt.empty());
    CHECK(rep.padded_bytes == 64);  // from the cursor's line to the ring's end, and not a byte past it
    // A dead publisher's shrink point off a line: the piece before it would end there, and the next
    // padding header start 8 bytes short of the end.
    t.map.slots[0].position[3].store(0);
    in.position.store(cap - 128);
    in.length.store(128);
    in.won.store(cap - 128);
    in.shrink_to.store(cap - 8);
    rep = shm::recover_publisher(t.map, 0);
    CHECK(rep.corrupt.find("not aligned") != std::string::npos);
    CHECK(rep.padded_bytes == 0);
    (void)r;
}

TEST_CASE("an unaligned tail in shared memory makes a claim fail as corrupt instead of writing past the ring") {
    TopicFixture t(4096, 64);
    auto w = t.writer(3, 0);
    t.map.lanes[3].tail.store(t.map.settings[3].capacity - 8);
    auto c = w.try_claim(1, [](std::uint32_t) { return 4u; });
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().code == Errc::corrupt);
    CHECK(c.error().message.find("aligned") != std::string::npos);
    CHECK(t.map.publishers[0].intent[3].length.load() == 0);
}

TEST_CASE("parked subscribers are a bitmask per lane the broker clears idempotently; publishers ring exactly the set bits of their lane") {
    TopicFixture t(8192, 256);
    auto r0 = t.reader(0, 0);  // doorbell 0
    auto r1 = t.reader(0, 1);  // doorbell 1
    auto w = t.writer(0, 0);
    auto& mask = t.map.cursor_header->parked[0];
    auto bell = [&](int i) { return t.doorbells.bells[i].word.load(); };
    auto r2 = t.reader(3, 2);
    t.map.cursor_header->parked[3].fetch_or(4);  // subscriber 2 waits for Low events only: lane 0 never rings it
    mask.fetch_or(1);  // subscriber 0 announced it parks, then died inside the park window
    mask.fetch_or(2);  // subscriber 1 is parked
    REQUIRE(publish_u32(w, 1) == Errc::ok);
    CHECK(bell(0) == 2);
    CHECK(bell(1) == 2);
    shm::leave_subscriber(t.map, 0);  // the broker releases the dead subscriber's slot
    shm::leave_subscriber(t.map, 0);  // twice: nothing drifts
    CHECK(mask.load() == 2);
    REQUIRE(publish_u32(w, 2) == Errc::ok);
    CHECK(bell(0) == 2);  // no longer rung
    CHECK(bell(1) == 4);
    mask.fetch_and(~std::uint64_t(2));  // subscriber 1 woke up
    REQUIRE(publish_u32(w, 3) == Errc::ok);
    CHECK(bell(1) == 4);  // nobody parked: no ring at all
    CHECK(drain(r1).size() == 3);
    CHECK(bell(2) == 0);
    auto low = t.writer(3, 1);
    REQUIRE(publish_u32(low, 4) == Errc::ok);
    CHECK(bell(2) == 2);  // rung by its lane
    shm::leave_subscriber(t.map, 2);
    CHECK(t.map.cursor_header->parked[3].load() == 0);  // cleared on every lane
    (void)r0;
    (void)r2;
}

TEST_CASE("a loan committed short gives its unused bytes back when nobody claimed after it") {
    TopicFixture t(8192, 1024);
    auto r = t.reader(0, 0);
    auto w = t.writer(0, 0);
    auto c = w.try_claim(1, [](std::uint32_t) { return 900u; });
    REQUIRE(c.has_value());
    std::uint32_t v = 42;
    std::memcpy(w.payload_at(c->position, 900), &v, 4);
    w.commit_in_place(*c, 900, 4, 0);
    CHECK(t.map.lanes[0].position() == c->position + 64);  // 960 bytes claimed, 64 kept
    REQUIRE(publish_u32(w, 43) == Errc::ok);  // lands right after the short record
    CHECK(drain(r) == std::vector<std::uint32_t>{42, 43});
    CHECK(r.position() == c->position + 128);
}

TEST_CASE("a loan committed short after a later claim pads the rest, written before its record") {
    TopicFixture t(8192, 1024);
    auto r = t.reader(0, 0);
    auto w = t.writer(0, 0);
    auto other = t.writer(0, 1);
    auto c = w.try_claim(1, [](std::uint32_t) { return 900u; });
    REQUIRE(c.has_value());
    REQUIRE(publish_u32(other, 7) == Errc::ok);  // claimed after the loan: the loan's end is not the tail
    std::uint32_t v = 42;
    std::memcpy(w.payload_at(c->position, 900), &v, 4);
    w.commit_in_place(*c, 900, 4, 0);
    CHECK(drain(r) == std::vector<std::uint32_t>{42, 7});
    CHECK(r.position() == t.map.lanes[0].position());
}

TEST_CASE("a subscriber started at the tail behind an open loan is never stranded by the loan's give-back") {
    TopicFixture t(8192, 1024);
    auto w = t.writer(0, 0);
    auto c = w.try_claim(1, [](std::uint32_t) { return 900u; });
    REQUIRE(c.has_value());
    auto late = t.reader(0, 1);  // joins with start = the loan's claim end
    REQUIRE(late.position() == c->end);
    std::uint32_t v = 42;
    std::memcpy(w.payload_at(c->position, 900), &v, 4);
    w.commit_in_place(*c, 900, 4, 0);  // must not move the tail below the late subscriber's start
    CHECK(t.map.lanes[0].position() == c->end);
    REQUIRE(publish_u32(w, 43) == Errc::ok);
    CHECK(drain(late) == std::vector<std::uint32_t>{43});
}

TEST_CASE("a publisher that dies after giving bytes back is recovered only up to its record; the claim after it is kept") {
    TopicFixture t(8192, 1024);
    auto r = t.reader(0, 0);
    auto dead = t.writer(0, 0);
    auto next = t.writer(0, 1);
    auto c = dead.try_claim(1, [](std::uint32_t) { return 900u; });
    REQUIRE(c.has_value());
    // The dead publisher gave back all but one record (shrink_to, then the tail CAS) and died before
    // publishing its record; another publisher then claimed from the record's end and is still building.
    const std::uint64_t keep = c->position + 64;
    t.map.publishers[0].intent[0].shrink_to.store(keep);
    std::uint64_t expected = c->end;
    REQUIRE(t.map.lanes[0].tail.compare_exchange_strong(expected, keep));
    auto c2 = next.try_claim(1, [](std::uint32_t) { return 200u; });
    REQUIRE(c2.has_value());
    REQUIRE(c2->position == keep);
    mark(t, 0, SlotState::dead);
    auto rep = shm::recover_publisher(t.map, 0);
    CHECK(rep.outcome == shm::Recovery::retry);  // the live claim inside the given-back bytes is not touched
    CHECK(rep.padded_bytes == 64);               // the dead record's own line is padded at once
    std::uint32_t v = 5;
    next.commit(*c2, 1, [](std::uint32_t) { return 200u; }, [&](std::uint32_t, std::byte* d) { std::memcpy(d, &v, 4); }, 0);
    CHECK(shm::recover_publisher(t.map, 0).outcome == shm::Recovery::done);
    CHECK(drain(r) == std::vector<std::uint32_t>{5});
}

TEST_CASE("a claim in flight gates later claims even when every subscriber joined after it") {
    TopicFixture t(4096, 64);
    auto slow = t.writer(0, 0);
    auto fast = t.writer(0, 1);
    // slow claims with no subscriber at all (gate: the tail) and takes its time to commit.
    auto c = slow.try_claim(1, [](std::uint32_t) { return 4u; });
    REQUIRE(c.has_value());
    auto r = t.reader(0, 0);  // joins at the tail, after slow's open claim
    std::uint32_t n = 0;
    while (publish_u32(fast, 100 + n) == Errc::ok) ++n;
    // Without the open claim in the gate, fast would take [capacity, capacity + 64): the ring bytes of
    // slow's record, which slow's commit would then overwrite under the subscriber.
    CHECK(t.map.lanes[0].position() <= c->position + t.map.settings[0].capacity);
    std::uint32_t v = 1;
    slow.commit(*c, 1, [](std::uint32_t) { return 4u; }, [&](std::uint32_t, std::byte* d) { std::memcpy(d, &v, 4); }, 0);
    const auto got = drain(r);
    REQUIRE(got.size() == n);  // every one of fast's records, intact
    for (std::uint32_t i = 0; i < n; ++i) CHECK(got[i] == 100 + i);
    CHECK(publish_u32(fast, 999) == Errc::ok);  // slow's claim is done: the gate moved on
}

TEST_CASE("an exclusive publisher claims by plain store; one that dies between claim and commit, or inside a batch, is recovered") {
    TopicFixture t(8192, 64);
    auto r = t.reader(0, 0);
    auto alone = t.writer(0, 0, true);
    for (std::uint32_t i = 0; i < 10; ++i) REQUIRE(publish_u32(alone, i) == Errc::ok);
    CHECK(drain(r).size() == 10);
    // A join between the holder's look at the tail and its store loses its bit, harmlessly: the joiner
    // starts at or before the claim and reads it.
    auto late = t.reader(0, 1);
    REQUIRE((t.map.lanes[0].tail.load() & layout::kJoinBit) != 0);
    REQUIRE(publish_u32(alone, 10) == Errc::ok);
    CHECK((t.map.lanes[0].tail.load() & layout::kJoinBit) == 0);
    CHECK(drain(late) == std::vector<std::uint32_t>{10});
    CHECK(drain(r) == std::vector<std::uint32_t>{10});

    SUBCASE("dead between the tail store and the commit") {
        auto c = alone.try_claim(1, [](std::uint32_t) { return 4u; });
        REQUIRE(c.has_value());
        CHECK(t.map.lanes[0].position() == c->end);
        CHECK(t.map.publishers[0].intent[0].won.load() == c->position);
    }
    SUBCASE("dead after committing half of a batch") {
        auto c = alone.try_claim(2, [](std::uint32_t) { return 4u; });
        REQUIRE(c.has_value());
        std::uint32_t v = 11;
        auto* h = reinterpret_cast<layout::RecordHeader*>(t.map.rings[0] + (c->position & (t.map.settings[0].capacity - 1)));
        std::memcpy(h + 1, &v, 4);
        h->length = 4;
        h->flags = layout::kRecordData;
        h->publisher = 0;
        h->sequence = 11;
        h->position.store(c->position ^ t.map.record_key, std::memory_order_release);
    }
    mark(t, 0, SlotState::dead);
    auto rep = shm::recover_publisher(t.map, 0);
    CHECK(rep.outcome == shm::Recovery::done);
    CHECK(rep.corrupt.empty());
    CHECK(rep.padded_bytes > 0);
    const auto got = drain(r);
    CHECK(got.size() <= 1);  // the committed half of the batch, if any; the hole is padding
    // The lane goes on: a new exclusive holder claims after the padded hole, and the reader gets it.
    shm::release_publisher(t.map, 0);
    auto next = t.writer(0, 1, true);
    REQUIRE(publish_u32(next, 99) == Errc::ok);
    CHECK(drain(r) == std::vector<std::uint32_t>{99});
}

TEST_CASE("a loan committed short while a subscriber joins cannot take the tail below the joiner's first cursor (found by the model)") {
    TopicFixture t(8192, 1024);
    auto w = t.writer(0, 0);
    auto c = w.try_claim(1, [](std::uint32_t) { return 900u; });
    REQUIRE(c.has_value());
    std::uint64_t first_cursor = 0;
    struct Ctx {
        TopicFixture* t;
        shm::LaneWriter* w;
        shm::LaneWriter::Claim c;
        std::uint64_t* first;
    } ctx{&t, &w, *c, &first_cursor};
    shm::test_hooks::inside_join_ctx = &ctx;
    shm::test_hooks::inside_join = [](void* p, std::uint32_t slot) {
        auto& x = *static_cast<Ctx*>(p);
        *x.first = x.t->map.slots[slot].position[0].load();
        // Between the join's two steps the publisher commits its loan short and tries to give back the rest.
        std::uint32_t v = 7;
        std::memcpy(x.w->payload_at(x.c.position, 900), &v, 4);
        x.w->commit_in_place(x.c, 900, 4, 0);
    };
    auto r = t.reader(0, 0);
    shm::test_hooks::inside_join = nullptr;
    // The first cursor was taken with the join bit set, so the give-back failed (the rest is padding)
    // and the start is not below it: a gate that read the first cursor cannot lap the joiner.
    CHECK(first_cursor == c->end);
    CHECK(t.map.lanes[0].position() == c->end);
    CHECK(t.map.slots[0].position[0].load() >= first_cursor);
    auto other = t.writer(0, 1);
    for (std::uint32_t i = 0; i < 7; ++i) REQUIRE(publish_u32(other, 100 + i, 900) == Errc::ok);
    CHECK(drain(r) == std::vector<std::uint32_t>{100, 101, 102, 103, 104, 105, 106});
}
