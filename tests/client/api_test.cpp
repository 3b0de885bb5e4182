// The client API end to end, on an embedded broker (a real broker on a thread of this process).
#include "rvoip/events.hpp"
#include "tests/client/embedded.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <thread>

using namespace rvoip::events;

namespace {

struct CallEvent {
    static constexpr std::string_view event_type = "call.event";
    static constexpr Priority default_priority = Priority::high;
    static constexpr std::uint32_t schema_version = 3;
    std::uint64_t call_id;
    FixedString<48> call_ref;
    FixedArray<std::uint16_t, 8> codecs;
};

struct Plain {
    static constexpr std::string_view event_type = "plain.event";
    std::uint32_t v;
};

struct Ping {
    static constexpr std::string_view event_type = "test.ping";
    std::uint64_t n;
};
struct Pong {
    static constexpr std::string_view event_type = "test.pong";
    std::uint64_t n;
};

EventSystem embedded() { return test::embedded("api-test"); }

}  // namespace

TEST_CASE("a typed event round-trips with its fields, default priority and metadata") {
    auto bus = embedded();
    auto sub = bus.subscriber<CallEvent>();
    auto pub = bus.publisher<CallEvent>();
    REQUIRE(sub.has_value());
    REQUIRE(pub.has_value());
    CallEvent ev{};
    ev.call_id = 77;
    CHECK(ev.call_ref.assign("a84b4c76e66710@pc33.atlanta.com"));
    CHECK(ev.codecs.push_back(0));
    CHECK(ev.codecs.push_back(8));
    REQUIRE(pub->publish(ev).has_value());
    auto got = sub->receive_for(std::chrono::seconds(10));
    REQUIRE(got.has_value());
    CHECK((*got)->call_id == 77);
    CHECK((*got)->call_ref == "a84b4c76e66710@pc33.atlanta.com");
    CHECK((*got)->codecs.view().size() == 2);
    CHECK(got->priority() == Priority::high);  // CallEvent's default
    CHECK(got->sequence() == 0);
    CHECK(got->timestamp_ns() > 0);
    CHECK(pub->counters(Priority::high).published == 1);
}

TEST_CASE("FixedString truncates at its capacity and says so") {
    FixedString<4> s;
    CHECK_FALSE(s.assign("abcdef"));
    CHECK(s.view() == "abcd");
    FixedArray<int, 2> a;
    CHECK(a.push_back(1));
    CHECK(a.push_back(2));
    CHECK_FALSE(a.push_back(3));
}

TEST_CASE("try_receive never blocks and receive_for times out when nothing comes") {
    auto bus = embedded();
    auto sub = bus.subscriber<Plain>();
    REQUIRE(sub.has_value());
    auto r = sub->try_receive();
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Errc::would_block);
    auto t = sub->receive_for(std::chrono::milliseconds(50));
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error().code == Errc::timeout);
}

TEST_CASE("receive waits, parked, until another thread publishes") {
    auto bus = embedded();
    SubscriberOptions so;
    so.wait.spin = 0;  // park at once
    auto sub = bus.subscriber<Plain>(so);
    auto pub = bus.publisher<Plain>();
    REQUIRE(sub.has_value());
    REQUIRE(pub.has_value());
    std::thread t([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        REQUIRE(pub->publish(Plain{5}).has_value());
    });
    auto got = sub->receive();
    t.join();
    REQUIRE(got.has_value());
    CHECK((*got)->v == 5);
}

TEST_CASE("a loan is built in place and published by commit; a dropped loan publishes nothing") {
    auto bus = embedded();
    auto sub = bus.subscriber<CallEvent>();
    auto pub = bus.publisher<CallEvent>();
    REQUIRE(sub.has_value());
    REQUIRE(pub.has_value());
    {
        auto loan = pub->loan();
        REQUIRE(loan.has_value());
        (*loan)->call_id = 1;
        auto second = pub->loan();
        REQUIRE_FALSE(second.has_value());
        CHECK(second.error().code == Errc::loan_outstanding);
        // dropped here without commit
    }
    {
        auto loan = pub->loan();
        REQUIRE(loan.has_value());
        (*loan)->call_id = 2;
        REQUIRE(std::move(*loan).commit().has_value());
    }
    {
        auto loan = pub->loan(Priority::low);
        REQUIRE(loan.has_value());
        (*loan)->call_id = 3;
        REQUIRE(std::move(*loan).commit(Priority::critical).has_value());  // moved to another lane
    }
    auto a = sub->try_receive();
    REQUIRE(a.has_value());
    CHECK((*a)->call_id == 3);
    CHECK(a->priority() == Priority::critical);
    auto b = sub->try_receive();
    REQUIRE(b.has_value());
    CHECK((*b)->call_id == 2);
    CHECK(b->priority() == Priority::high);
    CHECK(sub->try_receive().error().code == Errc::would_block);
}

TEST_CASE("a raw loan may commit fewer bytes than it claimed") {
    auto bus = embedded();
    auto sub = bus.raw_subscriber("sip.message");
    auto pub = bus.raw_publisher("sip.message");
    REQUIRE(sub.has_value());
    REQUIRE(pub.has_value());
    const std::string_view invite = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\r\n";
    for (int i = 0; i < 3; ++i) {
        auto loan = pub->loan(4096, Priority::high);
        REQUIRE(loan.has_value());
        std::memcpy(loan->bytes().data(), invite.data(), invite.size());
        REQUIRE(std::move(*loan).commit(invite.size()).has_value());
    }
    REQUIRE(pub->publish("BYE").has_value());
    for (int i = 0; i < 3; ++i) {
        auto ev = sub->try_receive();
        REQUIRE(ev.has_value());
        CHECK(ev->bytes().size() == invite.size());
        CHECK(std::string_view(reinterpret_cast<const char*>(ev->bytes().data()), ev->bytes().size()) == invite);
    }
    auto bye = sub->try_receive();
    REQUIRE(bye.has_value());
    CHECK(bye->bytes().size() == 3);
}

TEST_CASE("publish_batch and batch receive keep order and hand out zero-copy views") {
    auto bus = embedded();
    auto sub = bus.subscriber<Plain>();
    auto pub = bus.publisher<Plain>();
    REQUIRE(sub.has_value());
    REQUIRE(pub.has_value());
    std::vector<Plain> evs(1000);
    for (std::uint32_t i = 0; i < evs.size(); ++i) evs[i].v = i;
    std::size_t published = 0;
    REQUIRE(pub->publish_batch(evs, Priority::normal, &published).has_value());
    CHECK(published == 1000);
    std::vector<Sample<Plain>> batch(64);
    std::uint32_t next = 0;
    while (next < 1000) {
        auto n = sub->receive_batch(std::span(batch), std::chrono::seconds(10));
        REQUIRE(n.has_value());
        for (std::size_t i = 0; i < *n; ++i) CHECK(batch[i]->v == next++);
        for (auto& s : batch) s.reset();
    }
    CHECK(next == 1000);
}

TEST_CASE("a held sample holds back publishers of its lane until it is released") {
    auto bus = embedded();
    PublisherOptions po;
    po.topic.capacity(Priority::normal, 4096).max_event(Priority::normal, 64).overflow(Priority::normal, Overflow::fail);
    auto pub = bus.publisher<Plain>(po);
    auto sub = bus.subscriber<Plain>();
    REQUIRE(pub.has_value());
    REQUIRE(sub.has_value());
    std::uint32_t n = 0;
    while (pub->publish(Plain{n})) ++n;
    auto held = sub->try_receive();  // the record at the head of the ring
    REQUIRE(held.has_value());
    for (std::uint32_t i = 1; i < n; ++i) REQUIRE(sub->try_receive().has_value());  // released at once
    CHECK_FALSE(pub->publish(Plain{1000}).has_value());  // still full: the first record is held
    CHECK((*held)->v == 0);                                // and intact
    held->reset();
    CHECK(pub->publish(Plain{1000}).has_value());
}

TEST_CASE("the broker reports topics, publishers and subscribers") {
    auto bus = embedded();
    auto pub = bus.publisher<Plain>();
    auto sub = bus.subscriber<Plain>();
    REQUIRE(pub->publish(Plain{1}).has_value());
    auto st = bus.stats();
    REQUIRE(st.has_value());
    REQUIRE(st->topics.size() == 1);
    CHECK(st->topics[0].topic == "plain.event");
    CHECK(st->topics[0].publishers == 1);
    CHECK(st->topics[0].subscribers == 1);
    CHECK(st->topics[0].tails[2] == 64);  // one 4-byte Normal event: a 64-byte record
}

TEST_CASE("a late subscriber starts at the tail and sees only new events") {
    auto bus = embedded();
    auto pub = bus.publisher<Plain>();
    REQUIRE(pub->publish(Plain{1}).has_value());
    auto sub = bus.subscriber<Plain>();
    REQUIRE(sub.has_value());
    CHECK(sub->try_receive().error().code == Errc::would_block);
    REQUIRE(pub->publish(Plain{2}).has_value());
    auto got = sub->try_receive();
    REQUIRE(got.has_value());
    CHECK((*got)->v == 2);
}

// A lost wake-up shows up as a receive that waits until its timeout. Ping-pong with subscribers that
// park at once, many times over, so every publish races a consumer going to sleep.
namespace {
// Ping-pong between two threads, both parking at once when they wait: a lost wake-up stalls a round
// for the receive timeout and fails it.
void ping_pong_parked(const PublisherOptions& pub_options) {
    auto bus = embedded();
    SubscriberOptions park;
    park.wait.spin = 0;
    auto ping_pub = bus.publisher<Ping>(pub_options);
    auto pong_pub = bus.publisher<Pong>(pub_options);
    auto ping_sub = bus.subscriber<Ping>(park);
    auto pong_sub = bus.subscriber<Pong>(park);
    REQUIRE(ping_pub.has_value());
    REQUIRE(pong_pub.has_value());
    REQUIRE(ping_sub.has_value());
    REQUIRE(pong_sub.has_value());
    constexpr std::uint64_t kRounds = 20'000;
    std::atomic<std::uint64_t> missed{0};
    std::thread echo([&] {
        for (std::uint64_t i = 0; i < kRounds; ++i) {
            auto p = ping_sub->receive_for(std::chrono::seconds(20));
            if (!p || (*p)->n != i) {
                ++missed;
                return;
            }
            p->reset();
            (void)pong_pub->publish(Pong{i});
        }
    });
    std::uint64_t done = 0;
    for (; done < kRounds; ++done) {
        REQUIRE(ping_pub->publish(Ping{done}).has_value());
        auto r = pong_sub->receive_for(std::chrono::seconds(20));
        if (!r) break;
        REQUIRE((*r)->n == done);
    }
    echo.join();
    CHECK(done == kRounds);
    CHECK(missed.load() == 0);
}
}  // namespace

TEST_CASE("parked subscribers never miss a wake-up across 20,000 ping-pongs") {
    ping_pong_parked(PublisherOptions{});
}

TEST_CASE("parked subscribers never miss a wake-up from exclusive publishers (no barrier of theirs) across 20,000 ping-pongs") {
    ping_pong_parked(PublisherOptions{.exclusive_lanes = 1u << static_cast<unsigned>(Priority::normal)});
}

TEST_CASE("an exclusive publisher holds its lane alone: others are refused it, and it is free again once the holder goes") {
    auto bus = embedded();
    constexpr auto kNormal = std::uint8_t(1u << static_cast<unsigned>(Priority::normal));
    constexpr auto kHigh = std::uint8_t(1u << static_cast<unsigned>(Priority::high));
    auto sub = bus.raw_subscriber("alone.topic");
    REQUIRE(sub.has_value());
    {
        auto alone = bus.raw_publisher("alone.topic", PublisherOptions{.exclusive_lanes = kNormal});
        REQUIRE(alone.has_value());
        auto again = bus.raw_publisher("alone.topic", PublisherOptions{.exclusive_lanes = kNormal});
        REQUIRE_FALSE(again.has_value());
        CHECK(again.error().code == Errc::lane_taken);
        CHECK(again.error().what().find("normal lane: publisher slot 0") != std::string::npos);
        CHECK(again.error().what().find("holds it alone") != std::string::npos);

        // A publisher without exclusivity is opened, but not on the held lane.
        auto other = bus.raw_publisher("alone.topic");
        REQUIRE(other.has_value());
        auto refused = other->publish("not here", Priority::normal);
        REQUIRE_FALSE(refused.has_value());
        CHECK(refused.error().code == Errc::lane_taken);
        CHECK(refused.error().what().find("normal lane") != std::string::npos);
        REQUIRE(other->publish("elsewhere", Priority::high).has_value());
        // A lane another publisher may publish on cannot be had alone.
        auto high = bus.raw_publisher("alone.topic", PublisherOptions{.exclusive_lanes = kHigh});
        REQUIRE_FALSE(high.has_value());
        CHECK(high.error().code == Errc::lane_taken);
        CHECK(high.error().what().find("other publisher(s) may publish on it") != std::string::npos);

        // The holder's events (plain-store claims, batches and a loan among them) arrive whole and in order.
        for (std::uint32_t i = 0; i < 3000; ++i) {
            const std::string e = "alone " + std::to_string(i);
            REQUIRE(alone->publish(std::span(reinterpret_cast<const std::byte*>(e.data()), e.size()), Priority::normal).has_value());
        }
        auto l = alone->loan(16, Priority::normal);
        REQUIRE(l.has_value());
        std::memcpy(l->bytes().data(), "alone loan", 10);
        REQUIRE(std::move(*l).commit(10).has_value());
        auto first = sub->receive_for(std::chrono::seconds(30));  // Critical first: the High one comes before Normal
        REQUIRE(first.has_value());
        CHECK(first->priority() == Priority::high);
        for (std::uint32_t i = 0; i < 3000; ++i) {
            auto s = sub->receive_for(std::chrono::seconds(30));
            REQUIRE(s.has_value());
            const std::string want = "alone " + std::to_string(i);
            REQUIRE(std::string_view(reinterpret_cast<const char*>(s->bytes().data()), s->bytes().size()) == want);
        }
        auto loaned = sub->receive_for(std::chrono::seconds(30));
        REQUIRE(loaned.has_value());
        CHECK(std::string_view(reinterpret_cast<const char*>(loaned->bytes().data()), loaned->bytes().size()) == "alone loan");
    }
    // Both gone: the lane can be held alone again.
    auto next = bus.raw_publisher("alone.topic", PublisherOptions{.exclusive_lanes = kNormal});
    REQUIRE(next.has_value());
    auto bad = bus.raw_publisher("alone.topic", PublisherOptions{.exclusive_lanes = 0x10});
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().code == Errc::invalid_argument);
}
