// Never trust shared memory: every segment is validated on map, and a bad one is refused with a message
// naming what was wrong, before any pointer into it is used.
#include "tests/shm/topic_fixture.hpp"

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {
Error attach_error(TopicFixture& t) {
    auto m = shm::attach(t.data.span(), t.cursors.span());
    REQUIRE_FALSE(m.has_value());
    return m.error();
}
}  // namespace

TEST_CASE("a topic segment with a bad magic number, ABI version or size is refused") {
    SUBCASE("magic") {
        TopicFixture t;
        reinterpret_cast<layout::TopicHeader*>(t.data.p)->magic ^= 1;
        auto e = attach_error(t);
        CHECK(e.code == Errc::corrupt);
        CHECK(e.message.find("magic") != std::string::npos);
    }
    SUBCASE("ABI version") {
        TopicFixture t;
        reinterpret_cast<layout::TopicHeader*>(t.data.p)->abi_version = 99;
        auto e = attach_error(t);
        CHECK(e.code == Errc::version_mismatch);
        CHECK(e.message.find("99") != std::string::npos);
    }
    SUBCASE("segment size") {
        TopicFixture t;
        reinterpret_cast<layout::TopicHeader*>(t.data.p)->segment_size += 4096;
        CHECK(attach_error(t).code == Errc::corrupt);
    }
    SUBCASE("a ring that lies outside the segment") {
        TopicFixture t;
        reinterpret_cast<layout::TopicHeader*>(t.data.p)->ring_offset[3] += 64;
        auto e = attach_error(t);
        CHECK(e.code == Errc::corrupt);
        CHECK(e.message.find("ring 3") != std::string::npos);
    }
    SUBCASE("a capacity that is not a power of two") {
        TopicFixture t;
        reinterpret_cast<layout::TopicHeader*>(t.data.p)->lanes[1].capacity += 1;
        auto e = attach_error(t);
        CHECK(e.message.find("high lane") != std::string::npos);
    }
    SUBCASE("a max event the ring cannot hold twice") {
        TopicFixture t;
        reinterpret_cast<layout::TopicHeader*>(t.data.p)->lanes[0].max_event = 1u << 20;
        CHECK_FALSE(shm::attach(t.data.span(), t.cursors.span()).has_value());
    }
    SUBCASE("too many publishers for the layout") {
        TopicFixture t;
        reinterpret_cast<layout::TopicHeader*>(t.data.p)->max_publishers = 100000;
        CHECK(attach_error(t).code == Errc::corrupt);
    }
    SUBCASE("a segment smaller than its header") {
        TopicFixture t;
        auto m = shm::attach(t.data.span().first(100), {});
        REQUIRE_FALSE(m.has_value());
        CHECK(m.error().code == Errc::corrupt);
    }
}

TEST_CASE("a cursor segment that is bad or belongs to another topic is refused") {
    SUBCASE("magic") {
        TopicFixture t;
        reinterpret_cast<layout::CursorHeader*>(t.cursors.p)->magic = 0;
        CHECK(attach_error(t).message.find("cursor segment has a bad magic") != std::string::npos);
    }
    SUBCASE("another topic's cursors") {
        TopicFixture t;
        reinterpret_cast<layout::CursorHeader*>(t.cursors.p)->topic_id = 8;
        CHECK(attach_error(t).message.find("another topic") != std::string::npos);
    }
    SUBCASE("more slots than the segment holds") {
        TopicFixture t;
        reinterpret_cast<layout::CursorHeader*>(t.cursors.p)->max_subscribers = 1000;
        CHECK(attach_error(t).code == Errc::corrupt);
    }
}

TEST_CASE("a doorbell segment with a bad count is refused; a bad clock calibration falls back to CLOCK_MONOTONIC") {
    TopicFixture t;
    auto* h = reinterpret_cast<layout::DoorbellHeader*>(t.bells.p);
    h->count = 1'000'000;
    auto d = shm::attach_doorbells(t.bells.span());
    REQUIRE_FALSE(d.has_value());
    CHECK(d.error().code == Errc::corrupt);
    h->count = 64;
    h->clock_kind = 1;  // TSC, but with a multiplier of 0 and an absurd shift
    h->clock_mult = 0;
    h->clock_shift = 200;
    auto ok = shm::attach_doorbells(t.bells.span());
    REQUIRE(ok.has_value());
    CHECK(ok->clock.kind() == shm::ClockKind::monotonic);
    const auto a = ok->clock.now_ns(), b = shm::monotonic_ns();
    CHECK(b - a >= 0);
    CHECK(b - a < 1'000'000'000);
}

TEST_CASE("the broker's clock calibration converts TSC ticks to CLOCK_MONOTONIC nanoseconds") {
    shm::Clock clock(shm::calibrate_clock(5'000'000));
    const auto mono = shm::monotonic_ns();
    const auto ours = clock.now_ns();
    // Generous: the calibration's error over the test's few milliseconds is microseconds at most.
    CHECK(std::llabs(ours - mono) < 5'000'000);
}

TEST_CASE("a subscriber's corrupt cursor frees no space that another subscriber still needs") {
    TopicFixture t(4096, 64);
    auto healthy = t.reader(0, 0);
    auto corrupt = t.reader(0, 1);
    auto w = t.writer(0, 0);
    std::uint32_t v = 0;
    while (publish(w, &v, 4) == Errc::ok) ++v;
    t.map.slots[1].position[0].store(1ull << 40);  // beyond the tail: clamped to it, so slot 1 holds nothing back
    CHECK(publish(w, &v, 4) == Errc::full);       // slot 0 has read nothing: still full
    auto h = healthy.peek();
    REQUIRE(h.record != nullptr);
    std::uint32_t first;
    std::memcpy(&first, h.record + 1, 4);
    CHECK(first == 0);  // intact
    (void)corrupt;
}
