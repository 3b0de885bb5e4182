// The subscriber's view of a lane under every record shape and every kind of untrusted byte: runs of
// padding, payloads that look like headers, headers with impossible fields, lengths changed after they
// were checked, and the resynchronisation after a corrupt record.
#include "tests/shm/topic_fixture.hpp"

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

layout::RecordHeader* header(TopicFixture& t, std::size_t lane, std::uint64_t pos) {
    return reinterpret_cast<layout::RecordHeader*>(t.map.rings[lane] + (pos & (t.map.settings[lane].capacity - 1)));
}

void abandon_one(shm::LaneWriter& w, std::uint32_t len) {
    auto c = w.try_claim(1, [len](std::uint32_t) { return len; });
    REQUIRE(c.has_value());
    w.abandon(*c);
}

}  // namespace

TEST_CASE("a reader walks any number of padding records in a row to the record behind them") {
    TopicFixture t(8192, 256);
    auto r = t.reader(0, 0);
    auto w = t.writer(0, 0);
    for (int i = 0; i < 5; ++i) abandon_one(w, 100);  // five loans dropped: five paddings
    std::uint32_t v = 77;
    REQUIRE(publish(w, &v, 4) == Errc::ok);
    auto p = r.peek();
    REQUIRE(p.record != nullptr);
    CHECK(p.length == 4);
    CHECK(std::memcmp(p.record + 1, &v, 4) == 0);
}

TEST_CASE("padding across the ring's end followed by more padding still leads to the record") {
    TopicFixture t(4096, 1024);
    auto r = t.reader(0, 0);
    auto w = t.writer(0, 0);
    std::vector<std::byte> big(900);
    for (int i = 0; i < 3; ++i) {  // 3 x 960 bytes: the next 960-byte claim wraps (padding first)
        REQUIRE(publish(w, big.data(), 900) == Errc::ok);
        auto p = r.peek();
        REQUIRE(p.record);
        r.consume(p);
        r.release();
    }
    abandon_one(w, 900);  // wrap padding + abandoned record = two paddings
    abandon_one(w, 40);   // a third
    std::uint32_t v = 5;
    REQUIRE(publish(w, &v, 4) == Errc::ok);
    auto p = r.peek();
    REQUIRE(p.record != nullptr);
    CHECK(std::memcmp(p.record + 1, &v, 4) == 0);
}

TEST_CASE("a ring full of padding is walked once, then the reader waits: the walk is bounded") {
    TopicFixture t(4096, 64);
    auto r = t.reader(0, 0);
    auto w = t.writer(0, 0);
    // A forged chain: every line of the ring is a 64-byte padding record whose marker matches the
    // position a reader reaches there on this and every later lap.
    const std::uint64_t cap = t.map.settings[0].capacity;
    for (std::uint64_t pos = 0; pos < cap; pos += 64) {
        auto* h = header(t, 0, pos);
        h->length = 64;
        h->flags = layout::kRecordPadding;
        h->position.store(pos ^ t.map.record_key);
    }
    // The chain ends where the reader comes back to offset 0 one lap later: the marker there is lap 0's.
    auto p = r.peek();
    CHECK_FALSE(p.corrupt());  // one lap of padding, then "not ready": bounded
    CHECK(r.position() == cap);
    (void)w;
}

TEST_CASE("an earlier lap's payload holding a future record's position is never read as its header") {
    TopicFixture t(8192, 4000);
    auto r = t.reader(0, 0);
    auto w = t.writer(0, 0);
    const std::uint64_t cap = t.map.settings[0].capacity;
    // Record A (position 0) carries, at ring offset 64, the 8 bytes of position cap + 64: exactly what
    // the reader will look for there one lap later, before the real header is written. A SIP message
    // from the network could carry such words on purpose.
    std::vector<std::byte> a(4000);
    const std::uint64_t forged = cap + 64;
    std::memcpy(a.data() + 64 - sizeof(layout::RecordHeader), &forged, 8);
    const std::uint32_t len = 1u << 20;  // the forged header's "length"
    std::memcpy(a.data() + 64 - sizeof(layout::RecordHeader) + 8, &len, 4);
    REQUIRE(publish(w, a.data(), 4000) == Errc::ok);  // [0, 4032)
    std::vector<std::byte> b(3000);
    REQUIRE(publish(w, b.data(), 3000) == Errc::ok);  // [4032, 7104)
    REQUIRE(publish(w, b.data(), 1056) == Errc::ok);  // [7104, 8192)
    for (int i = 0; i < 3; ++i) {
        auto p = r.peek();
        REQUIRE(p.record);
        r.consume(p);
        r.release();
    }
    REQUIRE(r.position() == cap);
    std::uint32_t v = 1;
    REQUIRE(publish(w, &v, 4) == Errc::ok);  // [cap, cap + 64): the reader moves to cap + 64
    auto p = r.peek();
    REQUIRE(p.record);
    r.consume(p);
    r.release();
    REQUIRE(r.position() == forged);
    p = r.peek();  // nothing is committed at cap + 64 yet; the old payload word must not count
    CHECK(p.record == nullptr);
    CHECK_FALSE(p.corrupt());
    REQUIRE(publish(w, &v, 4) == Errc::ok);
    CHECK(r.peek().record != nullptr);
}

TEST_CASE("headers with unknown flags, an out-of-range publisher or the wrong typed size are corrupt") {
    TopicFixture t(8192, 256);
    auto w = t.writer(0, 0);
    std::uint64_t v = 1;
    REQUIRE(publish(w, &v, 8) == Errc::ok);
    auto* h = header(t, 0, 0);
    SUBCASE("flags") {
        h->flags = 7;
        auto r = shm::LaneReader(t.map, 0, 1, 0);
        auto p = r.peek();
        CHECK(p.fault == shm::LaneReader::Fault::flags);
        CHECK(r.describe(p).find("unknown flags 7") != std::string::npos);
    }
    SUBCASE("publisher") {
        h->publisher = 9999;
        auto r = shm::LaneReader(t.map, 0, 1, 0);
        auto p = r.peek();
        CHECK(p.fault == shm::LaneReader::Fault::publisher);
        CHECK(r.describe(p).find("publisher slot 9999") != std::string::npos);
    }
    SUBCASE("typed size") {
        auto r = shm::LaneReader(t.map, 0, 1, 0, /*exact_size=*/16);
        auto p = r.peek();
        CHECK(p.fault == shm::LaneReader::Fault::data_length);
        CHECK(r.describe(p).find("where every event has 16 bytes") != std::string::npos);
        auto ok = shm::LaneReader(t.map, 0, 1, 0, 8);
        CHECK(ok.peek().record != nullptr);
    }
    SUBCASE("unaligned read position") {  // never from the broker (the client refuses it); still safe
        auto r = shm::LaneReader(t.map, 0, 1, t.map.settings[0].capacity - 8);
        auto p = r.peek();
        CHECK(p.record == nullptr);
        CHECK_FALSE(p.corrupt());
    }
}

TEST_CASE("a length changed in shared memory after the reader checked it moves nothing") {
    TopicFixture t(8192, 256);
    auto r = t.reader(0, 0);
    auto w = t.writer(0, 0);
    std::uint32_t v = 3;
    REQUIRE(publish(w, &v, 4) == Errc::ok);
    REQUIRE(publish(w, &v, 4) == Errc::ok);
    auto p = r.peek();
    REQUIRE(p.record);
    const_cast<layout::RecordHeader*>(p.record)->length = 1u << 30;  // a publisher scribbles after the check
    CHECK(p.length == 4);
    r.consume(p);
    CHECK(r.position() == 64);  // the validated length, not the scribbled one
    CHECK(r.peek().record != nullptr);
}

TEST_CASE("after a corrupt record the reader resumes at the tail and reads what follows") {
    TopicFixture t(8192, 256);
    auto r = t.reader(0, 0);
    auto w = t.writer(0, 0);
    std::uint32_t v = 1;
    for (int i = 0; i < 3; ++i) REQUIRE(publish(w, &v, 4) == Errc::ok);
    header(t, 0, 64)->length = 1u << 30;  // the second record is corrupt
    auto p = r.peek();
    REQUIRE(p.record);
    r.consume(p);
    p = r.peek();
    REQUIRE(p.corrupt());
    CHECK(r.describe(p).find("ring offset 64") != std::string::npos);
    CHECK(r.resync() == 128);  // the corrupt record and the one after it
    CHECK(r.position() == t.map.lanes[0].position());
    v = 9;
    REQUIRE(publish(w, &v, 4) == Errc::ok);
    p = r.peek();
    REQUIRE(p.record);
    CHECK(std::memcmp(p.record + 1, &v, 4) == 0);
}
