// WaitSet on an embedded broker: indices, typed views, removal, the subscription limit, and the
// non-blocking and timed receives. The cross-process behaviour (Critical first across topics, one wake
// per burst) is tests/multiprocess/waitset_test.cpp.
#include "rvoip/events.hpp"
#include "tests/client/embedded.hpp"

#include <doctest/doctest.h>

#include <string>
#include <thread>

#include <poll.h>

#include <cerrno>

using namespace rvoip::events;

namespace {

struct Control {
    static constexpr std::string_view event_type = "ws.control";
    static constexpr Priority default_priority = Priority::critical;
    std::uint64_t call_id;
};
struct State {
    static constexpr std::string_view event_type = "ws.state";
    std::uint32_t state;
};

EventSystem embedded() { return test::embedded("waitset-test"); }

}  // namespace

TEST_CASE("a WaitSet hands out the most urgent event across its topics, with the typed view of each") {
    auto bus = embedded();
    WaitSet set;
    auto state_index = set.add(*bus.subscriber<State>());
    auto control_index = set.add(*bus.subscriber<Control>());
    auto raw_index = set.add(*bus.raw_subscriber("ws.raw"));
    REQUIRE(state_index.has_value());
    REQUIRE(control_index.has_value());
    REQUIRE(raw_index.has_value());
    CHECK(set.size() == 3);
    CHECK(set.topic(*control_index)->name == "ws.control");
    CHECK(set.try_receive_any().error().code == Errc::would_block);

    auto state = bus.publisher<State>();
    auto control = bus.publisher<Control>();
    auto raw = bus.raw_publisher("ws.raw");
    REQUIRE(state.has_value());
    REQUIRE(control.has_value());
    REQUIRE(raw.has_value());
    REQUIRE(raw->publish("low", Priority::low).has_value());
    REQUIRE(state->publish(State{7}, Priority::normal).has_value());
    REQUIRE(control->publish(Control{42}).has_value());  // Critical, published last

    auto first = set.try_receive_any();
    REQUIRE(first.has_value());
    CHECK(first->index() == *control_index);
    CHECK(first->priority() == Priority::critical);
    REQUIRE(first->as<Control>() != nullptr);
    CHECK(first->as<Control>()->call_id == 42);
    CHECK(first->as<State>() == nullptr);  // not that topic's schema
    CHECK(first->topic().name == "ws.control");

    auto second = set.receive_any_for(std::chrono::seconds(1));
    REQUIRE(second.has_value());
    CHECK(second->index() == *state_index);
    REQUIRE(second->as<State>() != nullptr);
    CHECK(second->as<State>()->state == 7);

    auto third = set.receive_any();
    REQUIRE(third.has_value());
    CHECK(third->index() == *raw_index);
    CHECK(std::string(reinterpret_cast<const char*>(third->bytes().data()), third->bytes().size()) == "low");
    CHECK(third->as<Control>() == nullptr);
}

TEST_CASE("a blocking receive on a WaitSet returns an event published later, from another thread") {
    auto bus = embedded();
    WaitSet set;
    REQUIRE(set.add(*bus.raw_subscriber("ws.a")).has_value());
    REQUIRE(set.add(*bus.raw_subscriber("ws.b")).has_value());
    auto pub = bus.raw_publisher("ws.b");
    REQUIRE(pub.has_value());
    std::thread later([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the receiver is parked by then, most likely
        REQUIRE(pub->publish("late", Priority::high).has_value());
    });
    auto ev = set.receive_any_for(std::chrono::seconds(60));
    later.join();
    REQUIRE(ev.has_value());
    CHECK(ev->index() == 1);
}

TEST_CASE("a WaitSet times out, removes subscriptions and refuses more than 128 or a moved-from subscriber") {
    auto bus = embedded();
    WaitSet set;
    CHECK(set.receive_any_for(std::chrono::milliseconds(1)).error().code == Errc::invalid_argument);  // nothing to wait on
    auto a = bus.raw_subscriber("ws.t.0");
    REQUIRE(a.has_value());
    REQUIRE(set.add(std::move(*a)).has_value());
    auto moved = set.add(std::move(*a));  // its subscription went to the set already
    REQUIRE_FALSE(moved.has_value());
    CHECK(moved.error().code == Errc::invalid_argument);
    CHECK(set.receive_any_for(std::chrono::milliseconds(20)).error().code == Errc::timeout);

    for (int i = 1; i < 128; ++i) {
        auto s = bus.raw_subscriber("ws.t." + std::to_string(i));
        REQUIRE(s.has_value());
        REQUIRE(set.add(std::move(*s)).has_value());
    }
    CHECK(set.size() == 128);
    auto extra = bus.raw_subscriber("ws.t.128");
    REQUIRE(extra.has_value());
    auto refused = set.add(std::move(*extra));
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == Errc::limit_reached);
    CHECK(refused.error().message.find("128") != std::string::npos);

    // Removing one frees its place; the others keep their indices, and events of a removed topic are
    // no longer taken.
    auto pub = bus.raw_publisher("ws.t.5");
    REQUIRE(pub.has_value());
    CHECK(set.remove(5).has_value());
    CHECK(set.remove(5).error().code == Errc::invalid_argument);
    CHECK(set.size() == 127);
    REQUIRE(pub->publish("gone").has_value());
    CHECK(set.try_receive_any().error().code == Errc::would_block);
    auto other = bus.raw_publisher("ws.t.127");
    REQUIRE(other.has_value());
    REQUIRE(other->publish("kept").has_value());
    auto ev = set.try_receive_any();
    REQUIRE(ev.has_value());
    CHECK(ev->index() == 127);
    // Not while a sample of it is held: the sample points into the subscription.
    auto held = set.remove(127);
    REQUIRE_FALSE(held.has_value());
    CHECK(held.error().message.find("held") != std::string::npos);
    ev->reset();
    CHECK(set.remove(127).has_value());
}

TEST_CASE("a WaitSet's descriptor turns readable when another thread publishes, and quiet once the event is taken") {
    auto bus = embedded();
    WaitSet set;
    REQUIRE(set.add(*bus.raw_subscriber("ws.poll.a")).has_value());
    REQUIRE(set.add(*bus.raw_subscriber("ws.poll.b")).has_value());
    auto fd = set.descriptor();
    REQUIRE_MESSAGE(fd.has_value(), fd.error().what());
    pollfd p{*fd, POLLIN, 0};
    auto armed = set.prepare_poll();
    REQUIRE(armed.has_value());
    CHECK(*armed);
    CHECK(::poll(&p, 1, 50) == 0);  // nothing published: not readable
    auto pub = bus.raw_publisher("ws.poll.a");
    REQUIRE(pub.has_value());
    std::thread later([&] { REQUIRE(pub->publish("ring", Priority::critical).has_value()); });
    int n;
    while ((n = ::poll(&p, 1, 60'000)) < 0 && errno == EINTR) {
    }
    later.join();
    CHECK(n == 1);
    auto ev = set.try_receive_any();
    REQUIRE(ev.has_value());
    CHECK(ev->index() == 0);
    CHECK(set.wakeups() == 1);
    CHECK(::poll(&p, 1, 0) == 0);  // the receive ended the armed wait
    // With an event waiting, prepare_poll does not arm: receive first.
    REQUIRE(pub->publish("again").has_value());
    auto again = set.prepare_poll();
    REQUIRE(again.has_value());
    CHECK_FALSE(*again);
    CHECK(set.try_receive_any().has_value());
}

TEST_CASE("lanes outside wake_lanes do not ring a parked WaitSet: their events come at the deferred delay") {
    auto bus = embedded();
    WaitSet set(WaitOptions{.spin = 0, .wake_lanes = 0b0111, .deferred_delay = std::chrono::milliseconds(20)});
    REQUIRE(set.add(*bus.subscriber<State>()).has_value());
    auto pub = bus.publisher<State>();
    REQUIRE(pub.has_value());
    std::jthread low([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // most likely parked by then; either way it is never rung
        REQUIRE(pub->publish(State{7}, Priority::low).has_value());
    });
    auto ev = set.receive_any_for(std::chrono::seconds(30));
    REQUIRE(ev.has_value());
    CHECK(ev->as<State>()->state == 7);
    CHECK(ev->priority() == Priority::low);
    CHECK(set.wakeups() == 0);  // taken after a deferred-delay timeout, not a ring
    low.join();

    // A lane it waits for rings it as usual.
    std::jthread normal([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        REQUIRE(pub->publish(State{8}, Priority::normal).has_value());
    });
    auto ev2 = set.receive_any_for(std::chrono::seconds(30));
    REQUIRE(ev2.has_value());
    CHECK(ev2->as<State>()->state == 8);
}

TEST_CASE("with batch_delay, a WaitSet in a stream naps instead of being rung; Critical still rings it, and an empty nap parks") {
    auto bus = embedded();
    auto pub = bus.publisher<State>();
    REQUIRE(pub.has_value());
    auto start_stream = [&](WaitSet& set, std::uint32_t value) {  // a wait ended by a record: the set is in a stream
        std::jthread first([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            REQUIRE(pub->publish(State{value}, Priority::normal).has_value());
        });
        auto ev = set.receive_any_for(std::chrono::seconds(30));
        REQUIRE(ev.has_value());
        CHECK(ev->as<State>()->state == value);
    };

    SUBCASE("events of a lane it waits for do not ring it during a nap; an empty nap ends in a park that they ring") {
        WaitSet set(WaitOptions{.spin = 0, .batch_delay = std::chrono::seconds(1)});
        REQUIRE(set.add(*bus.subscriber<State>()).has_value());
        start_stream(set, 1);
        const auto rung = set.wakeups();
        std::jthread burst([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));  // most likely napping by then
            for (std::uint32_t v = 10; v < 15; ++v) REQUIRE(pub->publish(State{v}, Priority::normal).has_value());
        });
        for (std::uint32_t v = 10; v < 15; ++v) {
            auto ev = set.receive_any_for(std::chrono::seconds(30));
            REQUIRE(ev.has_value());
            CHECK(ev->as<State>()->state == v);
        }
        burst.join();
        CHECK(set.wakeups() == rung);  // taken when the nap ended, not by a ring
        // Nothing more: the next nap finds nothing and the set parks, announced on every lane, so the
        // event that comes after the nap rings it.
        std::jthread late([&] {
            std::this_thread::sleep_for(std::chrono::seconds(3));
            REQUIRE(pub->publish(State{20}, Priority::normal).has_value());
        });
        auto ev = set.receive_any_for(std::chrono::seconds(30));
        REQUIRE(ev.has_value());
        CHECK(ev->as<State>()->state == 20);
        CHECK(set.wakeups() == rung + 1);
    }
    SUBCASE("a Critical event rings it in the middle of a nap") {
        WaitSet set(WaitOptions{.spin = 0, .batch_delay = std::chrono::seconds(120)});
        REQUIRE(set.add(*bus.subscriber<State>()).has_value());
        start_stream(set, 1);
        const auto rung = set.wakeups();
        std::jthread critical([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            REQUIRE(pub->publish(State{2}, Priority::critical).has_value());
        });
        auto ev = set.receive_any_for(std::chrono::seconds(30));  // far shorter than the nap: only a ring ends it in time
        REQUIRE(ev.has_value());
        CHECK(ev->as<State>()->state == 2);
        CHECK(ev->priority() == Priority::critical);
        CHECK(set.wakeups() == rung + 1);
    }
}
