#include "tests/shm/topic_fixture.hpp"

#include <atomic>
#include <optional>
#include <random>
#include <thread>
#include <vector>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

std::uint32_t checksum(const std::byte* p, std::size_t n) {
    std::uint32_t h = 2166136261u;
    for (std::size_t i = 0; i < n; ++i) h = (h ^ std::uint32_t(p[i])) * 16777619u;
    return h;
}

// Reads one record; returns its payload bytes, or an empty optional when none is ready.
std::optional<std::vector<std::byte>> take(shm::LaneReader& r) {
    auto h = r.peek();
    REQUIRE_FALSE(h.corrupt());
    if (!h.record) return std::nullopt;
    auto* rec = h.record;
    std::vector<std::byte> out(reinterpret_cast<const std::byte*>(rec + 1), reinterpret_cast<const std::byte*>(rec + 1) + h.length);
    r.consume(h);
    r.release();
    return out;
}

}  // namespace

TEST_CASE("a published record is read back in place, byte for byte") {
    TopicFixture t;
    auto r = t.reader(2, 0);
    auto w = t.writer(2, 0);
    const char msg[] = "INVITE sip:bob@example.com SIP/2.0";
    REQUIRE(publish(w, msg, sizeof msg) == Errc::ok);
    auto h = r.peek();
    REQUIRE(h.record != nullptr);
    CHECK(h.record->length == sizeof msg);
    CHECK(h.record->sequence == 0);
    CHECK(std::memcmp(h.record + 1, msg, sizeof msg) == 0);
    r.consume(h);
    r.release();
    CHECK(r.peek().record == nullptr);
}

TEST_CASE("records of 1 byte to the max event size cross the ring's end many times intact") {
    TopicFixture t(64 * 1024, 16 * 1024);
    auto r = t.reader(0, 0);
    auto w = t.writer(0, 0);
    std::mt19937 rng(42);
    std::uint64_t wrapped_bytes = 0;
    for (int i = 0; i < 4000; ++i) {
        std::uint32_t len = 1 + rng() % (i % 7 == 0 ? 16 * 1024 : 700);
        std::vector<std::byte> p(len);
        for (auto& b : p) b = std::byte(rng());
        REQUIRE(publish(w, p.data(), len) == Errc::ok);
        auto got = take(r);
        REQUIRE(got.has_value());
        REQUIRE(*got == p);
        wrapped_bytes += layout::record_size(len);
    }
    CHECK(wrapped_bytes > 20 * 64 * 1024);  // the ring wrapped at least 20 times
    CHECK(t.map.lanes[0].position() >= wrapped_bytes);
}

TEST_CASE("a full lane refuses the claim and loses nothing already published") {
    TopicFixture t(4096, 64);
    auto r = t.reader(3, 0);
    auto w = t.writer(3, 0);
    std::uint32_t n = 0;
    while (publish(w, &n, sizeof n) == Errc::ok) ++n;
    CHECK(n == 4096 / 64);  // 64-byte records: a 32-byte header plus a 4-byte payload, rounded to a line
    CHECK(publish(w, &n, sizeof n) == Errc::full);
    for (std::uint32_t i = 0; i < n; ++i) {
        auto got = take(r);
        REQUIRE(got.has_value());
        std::uint32_t v;
        std::memcpy(&v, got->data(), 4);
        CHECK(v == i);
    }
    CHECK(publish(w, &n, sizeof n) == Errc::ok);  // room again once the subscriber released
}

TEST_CASE("a batch of n records is claimed with one CAS and read in order, padding included") {
    TopicFixture t(8192, 512);
    auto r = t.reader(1, 0);
    auto w = t.writer(1, 0);
    for (int round = 0; round < 50; ++round) {
        const std::uint32_t n = 13;
        auto size_of = [](std::uint32_t i) { return 100 + i * 7; };
        const std::uint64_t before = t.map.lanes[1].position();
        auto c = w.try_claim(n, size_of);
        REQUIRE(c.has_value());
        CHECK(c->position == before);
        CHECK(t.map.lanes[1].position() == c->end);
        w.commit(*c, n, size_of, [&](std::uint32_t i, std::byte* d) { std::memset(d, int(i + round), size_of(i)); }, 0);
        for (std::uint32_t i = 0; i < n; ++i) {
            auto got = take(r);
            REQUIRE(got.has_value());
            CHECK(got->size() == size_of(i));
            CHECK(got->front() == std::byte(i + round));
            CHECK(got->back() == std::byte(i + round));
        }
        CHECK_FALSE(take(r).has_value());
    }
}

TEST_CASE("a batch larger than the ring is refused as too large, not as full") {
    TopicFixture t(4096, 64);
    auto w = t.writer(0, 0);
    auto c = w.try_claim(100, [](std::uint32_t) { return 32u; });
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().code == Errc::event_too_large);
}

TEST_CASE("stale bytes of an earlier lap are never taken for a record") {
    TopicFixture t(4096, 1024);
    auto r = t.reader(0, 0);
    auto w = t.writer(0, 0);
    std::vector<std::byte> big(900, std::byte{0x5a});
    for (int i = 0; i < 20; ++i) {
        REQUIRE(publish(w, big.data(), 900) == Errc::ok);
        REQUIRE(take(r).has_value());
        CHECK_FALSE(take(r).has_value());  // nothing beyond the last record, whatever the ring still holds
    }
}

TEST_CASE("a corrupt committed header yields an error for that reader, never an out-of-bounds read") {
    TopicFixture t(4096, 128);
    auto r = t.reader(0, 0);
    auto w = t.writer(0, 0);
    std::uint32_t v = 1;
    REQUIRE(publish(w, &v, 4) == Errc::ok);
    auto* h = reinterpret_cast<layout::RecordHeader*>(t.map.rings[0]);
    h->length = 1u << 30;
    auto got = r.peek();
    CHECK(got.corrupt());
    CHECK(got.record == nullptr);
    CHECK(r.describe(got).find("1073741824 bytes") != std::string::npos);
    h->length = 100;
    h->flags = layout::kRecordPadding;  // padding that is not a multiple of a line
    got = r.peek();
    CHECK(got.corrupt());
    CHECK(r.describe(got).find("padding") != std::string::npos);
}

TEST_CASE("two subscribers each read every record; the slower one gates the publisher") {
    TopicFixture t(4096, 64);
    auto fast = t.reader(2, 0);
    auto slow = t.reader(2, 1);
    auto w = t.writer(2, 0);
    std::uint32_t n = 0;
    while (publish(w, &n, 4) == Errc::ok) {
        ++n;
        REQUIRE(take(fast).has_value());
    }
    CHECK(n == 64);
    for (std::uint32_t i = 0; i < n; ++i) REQUIRE(take(slow).has_value());
    CHECK(publish(w, &n, 4) == Errc::ok);
}

TEST_CASE("a subscriber that leaves stops gating the publishers") {
    TopicFixture t(4096, 64);
    auto r = t.reader(0, 0);
    (void)r;
    auto w = t.writer(0, 0);
    std::uint32_t v = 0;
    while (publish(w, &v, 4) == Errc::ok) ++v;
    shm::leave_subscriber(t.map, 0);
    CHECK(publish(w, &v, 4) == Errc::ok);
}

TEST_CASE("a dead publisher's claimed but uncommitted records become padding; others' records survive") {
    TopicFixture t(8192, 256);
    auto r = t.reader(1, 0);
    auto dead = t.writer(1, 0);
    auto live = t.writer(1, 1);
    std::uint32_t v = 11;
    REQUIRE(publish(live, &v, 4) == Errc::ok);
    // The dead publisher claims three records and commits none: it died between CAS and commit.
    auto c = dead.try_claim(3, [](std::uint32_t) { return 100u; });
    REQUIRE(c.has_value());
    v = 22;
    REQUIRE(publish(live, &v, 4) == Errc::ok);
    REQUIRE(take(r).has_value());
    CHECK_FALSE(take(r).has_value());  // stuck behind the dead claim
    t.map.publishers[0].state.store(static_cast<std::uint32_t>(layout::SlotState::dead));
    auto rep = shm::recover_publisher(t.map, 0);
    CHECK(rep.outcome == shm::Recovery::done);
    CHECK(rep.padded_bytes == c->end - c->position);
    auto got = take(r);
    REQUIRE(got.has_value());
    std::uint32_t x;
    std::memcpy(&x, got->data(), 4);
    CHECK(x == 22);
}

TEST_CASE("recovery waits while a live publisher's intent names the same position") {
    TopicFixture t(8192, 256);
    auto r = t.reader(1, 0);
    auto dead = t.writer(1, 0);
    (void)t.writer(1, 1);
    auto c = dead.try_claim(1, [](std::uint32_t) { return 10u; });
    REQUIRE(c.has_value());
    // A live publisher that read the same tail and lost (or won) its CAS still names this position.
    t.map.publishers[1].intent[1].position.store(c->position);
    t.map.publishers[1].intent[1].length.store(64);
    t.map.publishers[0].state.store(static_cast<std::uint32_t>(layout::SlotState::dead));
    t.map.publishers[0].intent[1].won.store(layout::kNoPosition);  // it died between its CAS and its mark: not proven
    CHECK(shm::recover_publisher(t.map, 0).outcome == shm::Recovery::retry);
    t.map.publishers[1].intent[1].length.store(0);
    CHECK(shm::recover_publisher(t.map, 0).outcome == shm::Recovery::done);
    CHECK_FALSE(take(r).has_value());  // padding skipped, nothing else there
    CHECK(r.position() == c->end);
}

TEST_CASE("a partly committed dead batch keeps its committed records and pads the rest") {
    TopicFixture t(8192, 256);
    auto r = t.reader(0, 0);
    auto dead = t.writer(0, 0);
    auto size_of = [](std::uint32_t) { return 40u; };
    auto c = dead.try_claim(4, size_of);
    REQUIRE(c.has_value());
    // Commit only the first two records by hand.
    shm::LaneWriter::Claim first{c->position, c->position + 2 * layout::record_size(40)};
    dead.commit(first, 2, size_of, [](std::uint32_t, std::byte* d) { std::memset(d, 7, 40); }, 0);
    t.map.publishers[0].intent[0].position.store(c->position);
    t.map.publishers[0].intent[0].length.store(std::uint32_t(c->end - c->position));  // still in flight
    t.map.publishers[0].state.store(static_cast<std::uint32_t>(layout::SlotState::dead));
    auto rep = shm::recover_publisher(t.map, 0);
    CHECK(rep.padded_bytes == 2 * layout::record_size(40));
    CHECK(take(r).has_value());
    CHECK(take(r).has_value());
    CHECK_FALSE(take(r).has_value());
    CHECK(r.position() == c->end);
}

// Several publisher threads, several subscriber threads, one lane. Each subscriber must see every
// publisher's records exactly once, in that publisher's order, with intact payloads. Runs under TSan too.
TEST_CASE("stress: 3 publishers and 2 subscribers on one lane lose and reorder nothing") {
    TopicFixture t(64 * 1024, 1024);
    constexpr int kPublishers = 3;
    constexpr int kSubscribers = 2;
#if defined(__SANITIZE_THREAD__)
    constexpr std::uint32_t kPerPublisher = 20'000;
#else
    constexpr std::uint32_t kPerPublisher = 200'000;
#endif
    std::vector<shm::LaneReader> readers;
    for (int s = 0; s < kSubscribers; ++s) readers.push_back(t.reader(2, std::uint32_t(s)));
    std::vector<shm::LaneWriter> writers;
    for (int p = 0; p < kPublishers; ++p) writers.push_back(t.writer(2, std::uint16_t(p)));

    std::atomic<bool> failed{false};
    std::vector<std::thread> threads;
    for (int s = 0; s < kSubscribers; ++s)
        threads.emplace_back([&, s] {
            auto& r = readers[std::size_t(s)];
            std::uint32_t next[kPublishers] = {};
            std::uint64_t total = 0;
            while (total < std::uint64_t(kPublishers) * kPerPublisher && !failed) {
                auto h = r.peek();
                if (!h.record) {
                    if (h.corrupt()) failed = true;
                    std::this_thread::yield();
                    continue;
                }
                auto* rec = h.record;
                std::uint32_t body[3];
                std::memcpy(body, rec + 1, sizeof body);
                const auto* payload = reinterpret_cast<const std::byte*>(rec + 1);
                if (rec->publisher >= kPublishers || body[0] != rec->publisher || body[1] != next[rec->publisher] ||
                    rec->sequence != body[1] || checksum(payload + 12, h.length - 12) != body[2])
                    failed = true;
                ++next[rec->publisher];
                ++total;
                r.consume(h);
                if (total % 16 == 0) r.release();  // batched release
            }
            r.release();
        });
    for (int p = 0; p < kPublishers; ++p)
        threads.emplace_back([&, p] {
            std::mt19937 rng{std::uint32_t(p)};
            std::vector<std::byte> buf(1024);
            for (std::uint32_t i = 0; i < kPerPublisher && !failed;) {
                const std::uint32_t len = 12 + rng() % 500;
                for (std::uint32_t k = 12; k < len; ++k) buf[k] = std::byte(rng());
                std::uint32_t head[3] = {std::uint32_t(p), i, checksum(buf.data() + 12, len - 12)};
                std::memcpy(buf.data(), head, sizeof head);
                Errc e = publish(writers[std::size_t(p)], buf.data(), len);
                if (e == Errc::full) {
                    std::this_thread::yield();
                    continue;
                }
                if (e != Errc::ok) failed = true;
                ++i;
            }
        });
    for (auto& th : threads) th.join();
    CHECK_FALSE(failed.load());
    for (auto& r : readers) CHECK(r.position() == t.map.lanes[2].position());
}

TEST_CASE("a record larger than the lane's max event is refused before any claim") {
    TopicFixture t(8192, 100);
    auto w = t.writer(0, 0);
    std::vector<std::byte> p(101);
    CHECK(publish(w, p.data(), 101) == Errc::event_too_large);
    CHECK(t.map.lanes[0].position() == 0);
    CHECK(publish(w, p.data(), 100) == Errc::ok);
}
