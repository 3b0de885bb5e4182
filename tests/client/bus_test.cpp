// EventBus on an embedded broker: handlers and filters, Critical first across topics, the concurrency
// limit, timeouts, the worker kept for Critical, zero-copy and copy, unsubscribe, shutdown, exceptions
// and bad input. Across processes: tests/multiprocess/bus_test.cpp.
#include "rvoip/events.hpp"
#include "tests/client/embedded.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <latch>
#include <map>
#include <set>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace rvoip::events;
using namespace std::chrono_literals;

namespace {

struct Tick {
    static constexpr std::string_view event_type = "bus.tick";
    std::uint64_t n;
};
struct Alarm {
    static constexpr std::string_view event_type = "bus.alarm";
    static constexpr Priority default_priority = Priority::critical;
    std::uint64_t n;
};
struct Gate {
    static constexpr std::string_view event_type = "bus.gate";
    std::uint64_t n;
};
struct Big {  // one 1024-byte record: four fill a 4096-byte lane
    static constexpr std::string_view event_type = "bus.big";
    std::uint64_t n;
    char pad[984];
};
static_assert(layout::record_size(sizeof(Big)) == 1024);
struct NotTick {  // Tick's topic, another schema
    static constexpr std::string_view event_type = "bus.tick";
    std::uint32_t other;
};

struct Keyed {  // a consumer group's event: `key` plays the Call-ID
    static constexpr std::string_view event_type = "bus.keyed";
    std::uint32_t key;
    std::uint32_t seq;
};
constexpr auto key_of = [](const Keyed& k) { return k.key; };

EventSystem embedded() { return test::embedded("bus-test"); }

std::unique_ptr<EventBus> make_bus(EventSystem& sys, EventBusConfig cfg = {}) {
    auto bus = EventBus::create(sys, cfg);
    REQUIRE_MESSAGE(bus.has_value(), bus.error().what());
    return std::move(*bus);
}

template <class Pred>
bool eventually(Pred p, std::chrono::milliseconds limit = 30s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!p()) {
        if (std::chrono::steady_clock::now() > end) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

// A handler that blocks until opened: holds the dispatcher's in-flight count (and a worker) meanwhile.
struct Blocker {
    std::latch open{1};
    std::atomic<int> entered{0};
    void operator()(const Gate&) {
        ++entered;
        open.wait();
    }
};

void record(std::mutex& m, std::vector<std::string>& order, std::string what) {
    std::lock_guard lk(m);
    order.push_back(std::move(what));
}

}  // namespace

TEST_CASE("a typed handler gets its topic's events with their context, and a raw handler gets the bytes") {
    auto sys = embedded();
    std::mutex m;
    std::vector<std::pair<std::uint64_t, Priority>> got;
    std::string raw;
    std::atomic<int> done{0};
    auto bus = make_bus(sys, {.broadcast_capacity = 8192});
    auto id = bus->subscribe<Tick>([&](const Tick& t, const EventContext& ctx) {
        CHECK(ctx.topic == "bus.tick");
        CHECK(ctx.timestamp_ns > 0);
        CHECK(ctx.timestamp_ns <= sys.now_ns());
        std::lock_guard lk(m);
        got.emplace_back(t.n, ctx.priority);
        ++done;
    });
    REQUIRE_MESSAGE(id.has_value(), id.error().what());
    auto raw_id = bus->subscribe_raw("bus.raw", [&](std::span<const std::byte> b) {
        std::lock_guard lk(m);
        raw.assign(reinterpret_cast<const char*>(b.data()), b.size());
        ++done;
    });
    REQUIRE(raw_id.has_value());
    CHECK(!(*raw_id == *id));

    auto pub = sys.publisher<Tick>();
    REQUIRE(pub.has_value());
    CHECK(pub->topic().lanes[2].capacity == 8192);  // the bus created the topic with broadcast_capacity
    REQUIRE(pub->publish(Tick{1}, Priority::high).has_value());
    REQUIRE(pub->publish(Tick{2}).has_value());
    auto rp = sys.raw_publisher("bus.raw");
    REQUIRE(rp.has_value());
    REQUIRE(rp->publish("INVITE sip:bob@example.com").has_value());
    REQUIRE(eventually([&] { return done == 3; }));
    std::lock_guard lk(m);
    REQUIRE(got.size() == 2);
    std::ranges::sort(got);
    CHECK(got[0] == std::pair{std::uint64_t(1), Priority::high});
    CHECK(got[1] == std::pair{std::uint64_t(2), Priority::normal});
    CHECK(raw == "INVITE sip:bob@example.com");
    const auto s = bus->stats();
    CHECK(s.dispatched[1] == 1);
    CHECK(s.dispatched[2] == 2);
    CHECK(s.completed == 3);
    CHECK(s.in_flight == 0);
}

TEST_CASE("a filter runs before the handler, and what it refuses is counted, not handled") {
    auto sys = embedded();
    std::atomic<std::uint64_t> sum{0};
    std::atomic<int> handled{0};
    auto bus = make_bus(sys);
    REQUIRE(bus->subscribe<Tick>([](const Tick& t) { return t.n % 2 == 0; },
                                 [&](const Tick& t, const EventContext&) { sum += t.n, ++handled; })
                .has_value());
    auto pub = sys.publisher<Tick>();
    REQUIRE(pub.has_value());
    for (std::uint64_t i = 0; i < 10; ++i) REQUIRE(pub->publish(Tick{i}).has_value());
    REQUIRE(eventually([&] { return bus->stats().filtered_out == 5 && handled == 5; }));
    CHECK(sum == 0 + 2 + 4 + 6 + 8);
}

TEST_CASE("a Critical event on one topic is handled before Low events waiting on others") {
    auto sys = embedded();
    // One handler call in flight at a time: while the gate's handler blocks, the others wait in the rings.
    Blocker gate;
    std::mutex m;
    std::vector<std::string> order;
    auto bus = make_bus(sys, {.max_concurrent_dispatches = 1, .worker_threads = 2});
    REQUIRE(bus->subscribe<Gate>(std::ref(gate)).has_value());
    REQUIRE(bus->subscribe<Tick>([&](const Tick& t) { record(m, order, "low" + std::to_string(t.n)); }).has_value());
    REQUIRE(bus->subscribe<Alarm>([&](const Alarm&) { record(m, order, "critical"); }).has_value());
    auto gp = sys.publisher<Gate>();
    auto tp = sys.publisher<Tick>();
    auto ap = sys.publisher<Alarm>();
    REQUIRE((gp && tp && ap));
    REQUIRE(gp->publish(Gate{0}).has_value());
    REQUIRE(eventually([&] { return gate.entered == 1; }));
    for (std::uint64_t i = 0; i < 3; ++i) REQUIRE(tp->publish(Tick{i}, Priority::low).has_value());
    REQUIRE(ap->publish(Alarm{1}).has_value());  // Critical, published last
    std::this_thread::sleep_for(20ms);
    CHECK(bus->stats().in_flight == 1);
    gate.open.count_down();
    REQUIRE(eventually([&] {
        std::lock_guard lk(m);
        return order.size() == 4;
    }));
    CHECK(order == std::vector<std::string>{"critical", "low0", "low1", "low2"});
    CHECK(bus->stats().overload_waits >= 1);
}

TEST_CASE("never more than max_concurrent_dispatches handler calls are in flight") {
    auto sys = embedded();
    std::atomic<int> running{0}, most{0}, done{0};
    auto bus = make_bus(sys, {.max_concurrent_dispatches = 2, .batch_size = 8, .worker_threads = 4});
    REQUIRE(bus->subscribe<Tick>([&](const Tick&) {
                    const int now = ++running;
                    int m = most.load();
                    while (now > m && !most.compare_exchange_weak(m, now)) {
                    }
                    std::this_thread::sleep_for(3ms);
                    --running;
                    ++done;
                })
                .has_value());
    auto pub = sys.publisher<Tick>();
    REQUIRE(pub.has_value());
    for (std::uint64_t i = 0; i < 30; ++i) REQUIRE(pub->publish(Tick{i}).has_value());
    std::uint64_t seen_in_flight = 0;
    REQUIRE(eventually([&] {
        seen_in_flight = std::max(seen_in_flight, bus->stats().in_flight);
        return done == 30;
    }));
    CHECK(most.load() <= 2);
    CHECK(most.load() == 2);  // and the limit was used
    CHECK(seen_in_flight <= 2);
    CHECK(bus->stats().overload_waits >= 1);
}

TEST_CASE("a handler running longer than default_timeout is counted, while it runs and once it returns") {
    auto sys = embedded();
    std::atomic<int> done{0};
    auto bus = make_bus(sys, {.default_timeout = 30ms});
    REQUIRE(bus->subscribe<Tick>([&](const Tick& t) {
                    if (t.n == 1) std::this_thread::sleep_for(150ms);
                    ++done;
                })
                .has_value());
    auto pub = sys.publisher<Tick>();
    REQUIRE(pub.has_value());
    REQUIRE(pub->publish(Tick{0}).has_value());
    REQUIRE(pub->publish(Tick{1}).has_value());
    REQUIRE(pub->publish(Tick{2}).has_value());
    CHECK(eventually([&] { return bus->stats().overdue_now == 1; }));
    REQUIRE(eventually([&] { return done == 3; }));
    const auto s = bus->stats();
    CHECK(s.handler_timeouts == 1);
    CHECK(s.overdue_now == 0);
    CHECK(s.longest_handler_ns >= 150'000'000);
}

TEST_CASE("a Critical handler runs while all workers but one are stuck in Low handlers") {
    auto sys = embedded();
    std::latch open{1};
    std::atomic<int> started{0};
    std::atomic<bool> critical_ran{false};
    auto bus = make_bus(sys, {.worker_threads = 3});
    REQUIRE(bus->subscribe<Tick>([&](const Tick&) {
                    ++started;
                    open.wait();
                })
                .has_value());
    REQUIRE(bus->subscribe<Alarm>([&](const Alarm&) { critical_ran = true; }).has_value());
    auto tp = sys.publisher<Tick>();
    auto ap = sys.publisher<Alarm>();
    REQUIRE((tp && ap));
    for (std::uint64_t i = 0; i < 3; ++i) REQUIRE(tp->publish(Tick{i}, Priority::low).has_value());
    REQUIRE(eventually([&] { return started == 2 && bus->stats().in_flight == 3; }));
    std::this_thread::sleep_for(20ms);
    CHECK(started == 2);  // the third Low waits: the last worker is kept for Critical
    REQUIRE(ap->publish(Alarm{1}).has_value());
    CHECK(eventually([&] { return critical_ran.load(); }, 10s));
    CHECK(started == 2);
    open.count_down();
    CHECK(eventually([&] { return started == 3 && bus->stats().in_flight == 0; }));
}

TEST_CASE("with one worker, priority decides what runs next among queued handlers, unless enable_priority is off") {
    for (bool priority : {true, false}) {
        CAPTURE(priority);
        auto sys = embedded();
        Blocker gate;
        std::mutex m;
        std::vector<std::string> order;
        auto bus = make_bus(sys, {.enable_priority = priority, .worker_threads = 1});
        REQUIRE(bus->subscribe<Gate>(std::ref(gate)).has_value());
        REQUIRE(bus->subscribe<Tick>([&](const Tick&) { record(m, order, "low"); }).has_value());
        REQUIRE(bus->subscribe<Alarm>([&](const Alarm&) { record(m, order, "critical"); }).has_value());
        auto gp = sys.publisher<Gate>();
        auto tp = sys.publisher<Tick>();
        auto ap = sys.publisher<Alarm>();
        REQUIRE((gp && tp && ap));
        REQUIRE(gp->publish(Gate{0}).has_value());
        REQUIRE(eventually([&] { return gate.entered == 1; }));
        REQUIRE(tp->publish(Tick{0}, Priority::low).has_value());
        REQUIRE(eventually([&] { return bus->stats().in_flight == 2; }));  // handed out, queued behind the gate
        REQUIRE(ap->publish(Alarm{0}).has_value());
        REQUIRE(eventually([&] { return bus->stats().in_flight == 3; }));
        gate.open.count_down();
        REQUIRE(eventually([&] {
            std::lock_guard lk(m);
            return order.size() == 2;
        }));
        CHECK(order == (priority ? std::vector<std::string>{"critical", "low"} : std::vector<std::string>{"low", "critical"}));
    }
}

TEST_CASE("in copy mode a handler's record is released at once; in zero-copy mode it is held until the handler returns") {
    for (bool zero_copy : {true, false}) {
        CAPTURE(zero_copy);
        auto sys = embedded();
        PublisherOptions popt;
        popt.topic.capacity(Priority::normal, 4096).max_event(Priority::normal, 1024).overflow(Priority::normal, Overflow::fail);
        auto pub = sys.publisher<Big>(popt);  // creates the topic: four records fill the lane
        REQUIRE_MESSAGE(pub.has_value(), pub.error().what());
        std::latch open{1};
        std::atomic<int> entered{0};
        auto bus = make_bus(sys, {.max_concurrent_dispatches = 2, .enable_zero_copy = zero_copy, .worker_threads = 2});
        REQUIRE(bus->subscribe<Big>([&](const Big&) {
                        ++entered;
                        open.wait();
                    })
                    .has_value());
        REQUIRE(pub->publish(Big{.n = 0, .pad = {}}).has_value());
        REQUIRE(eventually([&] { return entered == 1; }));
        int published = 0;
        for (std::uint64_t i = 1; i <= 4; ++i) published += pub->publish(Big{.n = i, .pad = {}}).has_value();
        // Zero-copy: records 0 and 1 are held by handlers, so only three more fit. Copy: 0 went at once.
        CHECK(published == (zero_copy ? 3 : 4));
        open.count_down();
        REQUIRE(eventually([&] { return bus->stats().completed == std::uint64_t(1 + published); }));
    }
}

TEST_CASE("unsubscribe waits for the subscription's handlers in flight, then no more of its events are handled") {
    auto sys = embedded();
    std::atomic<int> started{0}, finished{0};
    std::atomic<int> calls{0};
    SubscriptionId self{};
    std::atomic<bool> ready{false};
    auto bus = make_bus(sys);
    auto id = bus->subscribe<Tick>([&](const Tick&) {
        ++started;
        std::this_thread::sleep_for(100ms);
        ++finished;
    });
    REQUIRE(id.has_value());
    auto pub = sys.publisher<Tick>();
    REQUIRE(pub.has_value());
    REQUIRE(pub->publish(Tick{1}).has_value());
    REQUIRE(eventually([&] { return started == 1; }));
    REQUIRE(bus->unsubscribe(*id).has_value());
    CHECK(finished == 1);  // it waited
    REQUIRE(pub->publish(Tick{2}).has_value());
    std::this_thread::sleep_for(50ms);
    CHECK(started == 1);
    auto again = bus->unsubscribe(*id);
    REQUIRE_FALSE(again.has_value());
    CHECK(again.error().code == Errc::invalid_argument);
    CHECK(bus->unsubscribe(SubscriptionId{12345}).error().code == Errc::invalid_argument);
    // A handler may unsubscribe its own subscription: that does not wait for itself.
    auto own = bus->subscribe<Alarm>([&](const Alarm&) {
        while (!ready) std::this_thread::yield();
        ++calls;
        CHECK(bus->unsubscribe(self).has_value());
    });
    REQUIRE(own.has_value());
    self = *own;
    ready = true;
    auto ap = sys.publisher<Alarm>();
    REQUIRE(ap.has_value());
    REQUIRE(ap->publish(Alarm{1}).has_value());
    REQUIRE(eventually([&] { return calls == 1; }));
    CHECK(eventually([&] { return bus->unsubscribe(self).error().code == Errc::invalid_argument; }));
}

TEST_CASE("shutdown drains handlers within its deadline and reports the ones still running") {
    auto sys = embedded();
    std::latch open{1};
    std::atomic<int> quick{0};
    auto bus = make_bus(sys, {.worker_threads = 2});
    REQUIRE(bus->subscribe<Gate>([&](const Gate&) { open.wait(); }).has_value());
    REQUIRE(bus->subscribe<Alarm>([&](const Alarm&) {
                    std::this_thread::sleep_for(20ms);
                    ++quick;
                })
                .has_value());
    auto gp = sys.publisher<Gate>();
    auto ap = sys.publisher<Alarm>();
    REQUIRE((gp && ap));
    REQUIRE(gp->publish(Gate{0}).has_value());
    for (std::uint64_t i = 0; i < 3; ++i) REQUIRE(ap->publish(Alarm{i}).has_value());
    REQUIRE(eventually([&] { return bus->stats().dispatched[0] == 3 && bus->stats().dispatched[2] == 1; }));
    const auto t0 = std::chrono::steady_clock::now();
    auto report = bus->shutdown(300ms);
    const auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE(report.has_value());
    CHECK(took >= 290ms);
    CHECK(took < 5s);
    CHECK(report->still_running == 1);  // the gate
    CHECK(report->abandoned == 0);
    CHECK_FALSE(report->clean());
    CHECK(quick == 3);  // the quick ones were drained
    auto late = bus->subscribe<Tick>([](const Tick&) {});
    REQUIRE_FALSE(late.has_value());
    CHECK(late.error().code == Errc::closed);
    CHECK(bus->shutdown(1s).error().code == Errc::closed);
    open.count_down();  // the destructor waits for it
}

TEST_CASE("shutdown of an idle bus is clean") {
    auto sys = embedded();
    std::atomic<int> n{0};
    auto bus = make_bus(sys);
    REQUIRE(bus->subscribe<Tick>([&](const Tick&) { ++n; }).has_value());
    auto pub = sys.publisher<Tick>();
    REQUIRE(pub.has_value());
    REQUIRE(pub->publish(Tick{1}).has_value());
    REQUIRE(eventually([&] { return n == 1; }));
    auto report = bus->shutdown(1s);
    REQUIRE(report.has_value());
    CHECK(report->clean());
}

TEST_CASE("a handler that throws is counted and the bus goes on") {
    auto sys = embedded();
    std::atomic<int> ok{0};
    auto bus = make_bus(sys);
    REQUIRE(bus->subscribe<Tick>([&](const Tick& t) {
                    if (t.n == 0) throw std::runtime_error("bad event");
                    ++ok;
                })
                .has_value());
    auto pub = sys.publisher<Tick>();
    REQUIRE(pub.has_value());
    for (std::uint64_t i = 0; i < 3; ++i) REQUIRE(pub->publish(Tick{i}).has_value());
    REQUIRE(eventually([&] { return ok == 2; }));
    CHECK(eventually([&] { return bus->stats().handler_exceptions == 1 && bus->stats().completed == 3; }));
}

TEST_CASE("bad input is refused with a clear error: a wrong schema, a 129th subscription, a bad configuration") {
    auto sys = embedded();
    auto bus = make_bus(sys);
    REQUIRE(bus->subscribe<Tick>([](const Tick&) {}).has_value());
    auto wrong = bus->subscribe<NotTick>([](const NotTick&) {});
    REQUIRE_FALSE(wrong.has_value());
    CHECK(wrong.error().code == Errc::schema_mismatch);
    CHECK(wrong.error().message.find("bus.tick") != std::string::npos);

    for (int i = 1; i < 128; ++i) {
        auto s = bus->subscribe_raw("bus.many." + std::to_string(i), [](std::span<const std::byte>) {});
        REQUIRE_MESSAGE(s.has_value(), s.error().what());
    }
    auto extra = bus->subscribe_raw("bus.many.128", [](std::span<const std::byte>) {});
    REQUIRE_FALSE(extra.has_value());
    CHECK(extra.error().code == Errc::limit_reached);
    CHECK(extra.error().message.find("128") != std::string::npos);

    for (auto cfg : {EventBusConfig{.worker_threads = 0}, EventBusConfig{.max_concurrent_dispatches = 0},
                     EventBusConfig{.broadcast_capacity = 5000}, EventBusConfig{.batch_size = 0}}) {
        auto b = EventBus::create(sys, cfg);
        REQUIRE_FALSE(b.has_value());
        CHECK(b.error().code == Errc::invalid_argument);
        CHECK(b.error().message.starts_with("EventBusConfig"));
    }
}

// ------------------------------------------------------------------------------------------------------
// Consumer groups.

namespace {

// What a bus's group handler saw: (key, seq) -> partition, and per key the seqs in the order handled.
struct GroupLog {
    std::mutex m;
    std::map<std::uint64_t, std::uint32_t> got;
    std::map<std::uint32_t, std::vector<std::uint32_t>> order;
    std::size_t twice = 0, redelivered = 0, bad_partition = 0;
    std::atomic<std::size_t> n{0};
    std::uint32_t partitions = 0;  // to check each event's partition (set before any event comes)

    auto handler() {
        return [this](const Keyed& k, const EventContext& ctx) {
            std::lock_guard lk(m);
            if (!got.emplace(std::uint64_t(k.key) << 32 | k.seq, ctx.partition).second) ++twice;
            order[k.key].push_back(k.seq);
            redelivered += ctx.redelivered;
            // KeyedPublisher::partition_of's rule (the test checks they agree)
            if (ctx.partition != key_hash(k.key) % partitions || ctx.topic != "bus.keyed.p" + std::to_string(ctx.partition))
                ++bad_partition;
            ++n;
        };
    }
    bool in_order() {
        std::lock_guard lk(m);
        for (auto& [key, seqs] : order)
            if (!std::ranges::is_sorted(seqs)) return false;
        return true;
    }
};

KeyedPublisher<Keyed> keyed_publisher(EventSystem& sys, std::uint32_t partitions) {
    PartitionOptions po;
    po.partitions = partitions;
    auto pub = sys.keyed_publisher<Keyed>(key_of, po);
    REQUIRE_MESSAGE(pub.has_value(), pub.error().what());
    return std::move(*pub);
}

void publish_keyed(KeyedPublisher<Keyed>& pub, std::uint32_t keys, std::uint32_t first_seq, std::uint32_t seqs) {
    for (std::uint32_t seq = first_seq; seq < first_seq + seqs; ++seq)
        for (std::uint32_t k = 0; k < keys; ++k) REQUIRE(pub.publish(Keyed{k, seq}).has_value());
}

}  // namespace

TEST_CASE("a bus's consumer group gets every event of a keyed publisher once, in order per key, with its partition") {
    for (bool zero_copy : {true, false}) {
        CAPTURE(zero_copy);
        auto sys = embedded();
        GroupLog log;  // before the bus: it outlives the handlers
        log.partitions = 8;
        auto bus = make_bus(sys, {.broadcast_capacity = 1 << 16, .enable_zero_copy = zero_copy, .shard_count = 8, .worker_threads = 4});
        auto id = bus->subscribe_group<Keyed>("workers", key_of, log.handler());
        REQUIRE_MESSAGE(id.has_value(), id.error().what());
        auto pub = keyed_publisher(sys, 8);
        for (std::uint32_t k = 0; k < 100; ++k) CHECK(pub.partition_of(Keyed{k, 0}) == key_hash(k) % 8);
        CHECK(pub.partition(0).topic().lanes[2].capacity == 1 << 16);  // the bus created the partitions with broadcast_capacity
        constexpr std::uint32_t kKeys = 64, kSeqs = 40;
        publish_keyed(pub, kKeys, 0, kSeqs);
        REQUIRE(eventually([&] { return log.n == kKeys * kSeqs; }));
        std::this_thread::sleep_for(20ms);
        std::lock_guard lk(log.m);
        CHECK(log.got.size() == kKeys * kSeqs);
        CHECK(log.twice == 0);
        CHECK(log.redelivered == 0);
        CHECK(log.bad_partition == 0);
        for (auto& [key, seqs] : log.order) CHECK_MESSAGE(std::ranges::is_sorted(seqs), "key " << key);
        std::set<std::uint32_t> partitions;
        for (auto& [ks, p] : log.got) partitions.insert(p);
        CHECK(partitions.size() == 8);  // alone in the group: every partition is this bus's
        const auto s = bus->stats();
        CHECK(s.misrouted == 0);
        CHECK(s.group_errors == 0);
        CHECK(s.completed == kKeys * kSeqs);
    }
}

TEST_CASE("a second bus joining the group takes partitions over, nothing twice or lost; unsubscribe leaves the group") {
    auto sys = embedded();
    const EventBusConfig cfg{.broadcast_capacity = 1 << 16, .shard_count = 8, .worker_threads = 3};
    GroupLog log1, log2;
    log1.partitions = log2.partitions = 8;
    auto bus1 = make_bus(sys, cfg);
    auto bus2 = make_bus(sys, cfg);
    // A plain subscription beside the group: both are dispatched.
    std::atomic<int> ticks{0};
    REQUIRE(bus1->subscribe<Tick>([&](const Tick&) { ++ticks; }).has_value());
    REQUIRE(bus1->subscribe_group<Keyed>("workers", key_of, log1.handler()).has_value());
    auto pub = keyed_publisher(sys, 8);
    auto tp = sys.publisher<Tick>();
    REQUIRE(tp.has_value());
    constexpr std::uint32_t kKeys = 32;
    std::uint32_t seq = 0;
    publish_keyed(pub, kKeys, seq, 10);
    seq += 10;
    REQUIRE(tp->publish(Tick{1}).has_value());
    REQUIRE(eventually([&] { return log1.n == kKeys * seq && ticks == 1; }));

    auto id2 = bus2->subscribe_group<Keyed>("workers", key_of, log2.handler());
    REQUIRE_MESSAGE(id2.has_value(), id2.error().what());
    // Publishing on while the partitions move: bus2 gets some of them (half, by the broker's dealing).
    const auto until = std::chrono::steady_clock::now() + 60s;
    while (log2.n == 0) {
        REQUIRE_MESSAGE(std::chrono::steady_clock::now() < until, "the second bus never got a partition");
        publish_keyed(pub, kKeys, seq++, 1);
        REQUIRE(eventually([&] { return log1.n + log2.n == kKeys * seq; }));
    }
    publish_keyed(pub, kKeys, seq, 10);
    seq += 10;
    REQUIRE(eventually([&] { return log1.n + log2.n == kKeys * seq; }));
    {
        std::scoped_lock lk(log1.m, log2.m);
        CHECK(log1.twice + log2.twice == 0);
        std::set<std::uint32_t> p2;
        for (auto& [ks, p] : log2.got) {
            CHECK_MESSAGE(!log1.got.contains(ks), "event (" << (ks >> 32) << ", " << (ks & 0xffffffff) << ") handled by both buses");
            p2.insert(p);
        }
        CHECK(p2.size() == 4);  // two members: four partitions each
        // Each key at one bus at a time: once bus2 had a key's events, bus1 had none after them.
        for (auto& [key, seqs] : log2.order) {
            auto it = log1.order.find(key);
            if (it != log1.order.end() && !seqs.empty()) CHECK(it->second.back() < seqs.front());
        }
        CHECK(log1.redelivered + log2.redelivered == 0);
        CHECK(log1.bad_partition + log2.bad_partition == 0);
    }
    CHECK(log1.in_order());
    CHECK(log2.in_order());

    REQUIRE(bus2->unsubscribe(*id2).has_value());  // leaves: bus1 gets all eight partitions back
    const std::size_t bus2_had = log2.n;
    const std::size_t bus1_had = log1.n;
    publish_keyed(pub, kKeys, seq, 10);
    seq += 10;
    REQUIRE(eventually([&] { return log1.n + log2.n == kKeys * seq; }));
    std::this_thread::sleep_for(20ms);
    CHECK(log2.n == bus2_had);
    CHECK(log1.n == bus1_had + kKeys * 10);
    {
        std::lock_guard lk(log1.m);
        CHECK(log1.twice == 0);
    }
    CHECK(log1.in_order());
    CHECK(bus2->unsubscribe(*id2).error().code == Errc::invalid_argument);
    CHECK(bus1->stats().group_errors == 0);
}

TEST_CASE("shutdown leaves the group: another bus then gets every partition") {
    auto sys = embedded();
    const EventBusConfig cfg{.shard_count = 4, .worker_threads = 2};
    GroupLog log1, log2;
    log1.partitions = log2.partitions = 4;
    auto bus1 = make_bus(sys, cfg);
    auto bus2 = make_bus(sys, cfg);
    REQUIRE(bus1->subscribe_group<Keyed>("workers", key_of, log1.handler()).has_value());
    REQUIRE(bus2->subscribe_group<Keyed>("workers", key_of, log2.handler()).has_value());
    auto pub = keyed_publisher(sys, 4);
    std::uint32_t seq = 0;
    const auto until = std::chrono::steady_clock::now() + 60s;
    while (log1.n == 0 || log2.n == 0) {  // until both hold partitions
        REQUIRE_MESSAGE(std::chrono::steady_clock::now() < until, "the two buses never shared the partitions");
        publish_keyed(pub, 16, seq++, 1);
        REQUIRE(eventually([&] { return log1.n + log2.n == 16 * seq; }));
    }
    auto report = bus2->shutdown(5s);
    REQUIRE(report.has_value());
    CHECK(report->clean());
    const std::size_t bus1_had = log1.n;
    publish_keyed(pub, 16, seq, 5);
    REQUIRE(eventually([&] { return log1.n == bus1_had + 16 * 5; }));
    std::lock_guard lk(log1.m);
    CHECK(log1.twice == 0);
}

TEST_CASE("shard_count out of 1-128 is refused with an error naming it") {
    auto sys = embedded();
    for (std::size_t n : {std::size_t(0), std::size_t(129)}) {
        CAPTURE(n);
        auto b = EventBus::create(sys, {.shard_count = n});
        REQUIRE_FALSE(b.has_value());
        CHECK(b.error().code == Errc::invalid_argument);
        CHECK(b.error().message.find("shard_count") != std::string::npos);
        CHECK(b.error().message.find(std::to_string(n)) != std::string::npos);
    }
    auto b = EventBus::create(sys, {.shard_count = 128});
    REQUIRE(b.has_value());
}
