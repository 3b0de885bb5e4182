// EventBus: handlers for events, run by a pool of worker threads, fed by one dispatcher that takes the
// most urgent event across every topic the bus subscribes to. Included by <rvoip/events.hpp>; include that.
//
//   auto bus = rvoip::events::EventBus::create(system, {.worker_threads = 4});       // Result<unique_ptr<EventBus>>
//   (*bus)->subscribe<CallControl>([](const CallControl& c, const EventContext& ctx) { ... });
//   (*bus)->subscribe<CallState>([](const CallState& s) { return s.state == 3; },      // filter, on the dispatcher
//                                [](const CallState& s) { ... });                      // handler, on a worker
//   (*bus)->shutdown(std::chrono::seconds(2));                                           // drains in-flight handlers
//
// How it runs. One dispatcher thread owns a WaitSet over all of the bus's subscriptions: a burst of
// events over many topics wakes it once, and it takes them Critical first across all topics, up to
// batch_size per round. It applies the filters, then hands the events to worker_threads workers
// through lock-free queues, one per priority. Workers take the Critical queue first, and at most
// worker_threads - 1 of them run non-Critical handlers at once: one worker is always free for Critical
// work, so a Critical handler never waits behind Low ones (with a single worker it waits for the
// handler running, never for queued ones). At most max_concurrent_dispatches handler calls are in
// flight (queued or running); at the limit the dispatcher stops taking events, which stay in their
// rings, where each lane's overflow policy applies to publishers: that is the back-pressure, counted
// in stats().overload_waits, never a silent drop.
//
// Consumer groups: subscribe_group<T>(group, key_fn, handler) makes the bus a member of a consumer
// group on T's topic (rvoip/group.hpp), over shard_count partitions: each event goes to one member of
// the group, all events of a key to the same one. Its events are dispatched like a plain subscription's,
// Critical first across the bus's plain subscriptions and groups alike, with EventContext::partition and
// ::redelivered set; a partition's events run one at a time, in order (a key's events never overlap,
// whatever worker_threads is). A group's record is released only once its handler returned, in copy
// mode too: a handover or a crash never loses or reorders an event.
//
// Thread model: the bus's methods may be called from any thread, including from inside a handler
// (except shutdown). Handlers run on the worker threads, several at once (for different events of one
// subscription too): they must be thread-safe. A handler's event reference is valid until it returns.
#pragma once

#include "rvoip/events.hpp"

#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

namespace rvoip::events {

struct EventBusConfig {
    // Handler calls in flight at once (handed out, queued or running); at the limit the dispatcher stops
    // taking events (back-pressure through the rings). At most 65535. In copy mode each one has a
    // preallocated buffer the size of the largest event of the bus's topics.
    std::size_t max_concurrent_dispatches = 256;
    // A handler that runs longer is counted (stats().handler_timeouts once it returns, overdue_now while
    // it runs). Zero: no limit. It is also how long the destructor's shutdown waits before it stops
    // starting queued handlers (1 s when zero); it then waits for the running ones regardless.
    std::chrono::milliseconds default_timeout{1000};
    // Bytes per lane requested for the topics this bus creates (TopicOptions::capacity on all four
    // lanes; a power of two, at least 4096). Below 128 KiB the bus also asks for a max_event of half
    // a lane less a record header (a lane holds two of its largest records). Zero: the broker's
    // defaults. A topic that exists already keeps its own.
    std::size_t broadcast_capacity = 1 << 20;
    // True: Critical first (four lanes). False: priority is ignored at dispatch, everything is one lane:
    // the events of each round are handed out in the order they were published (their timestamps),
    // whatever their lane, through one queue that all workers serve (no worker kept for Critical).
    // EventContext::priority still tells the lane an event came in; the rings keep four lanes, since
    // other processes may publish on any of them.
    bool enable_priority = true;
    // True: a handler gets a view into the ring; its record is held (holding back that lane's
    // publishers) until the handler returns and the dispatcher thread releases it. False: the
    // dispatcher copies the event into a preallocated buffer and releases the record at once.
    bool enable_zero_copy = true;
    // Events the dispatcher takes per round (after one wake-up) before handing them out.
    std::size_t batch_size = 64;
    // Partitions of keyed topics (1 to 128): a consumer group (subscribe_group, by Call-ID) splits its
    // topic into this many partitions, "<topic>.p0" ... "<topic>.p<N-1>", that the broker deals out to
    // the group's members. Every member and keyed publisher of a topic must use the same count (the
    // broker refuses another). Plain subscriptions do not use it.
    std::size_t shard_count = 32;
    // Threads that run handlers. At least 1; one of them is kept for Critical handlers when there are two
    // or more (see above).
    std::size_t worker_threads = 4;
};

struct SubscriptionId {
    std::uint64_t value = 0;
    friend bool operator==(SubscriptionId, SubscriptionId) = default;
};

// What a handler learns about its event besides the payload.
struct EventContext {
    std::string_view topic;
    Priority priority = Priority::normal;  // the lane it was published on
    std::uint64_t sequence = 0;            // the publisher's own, per lane
    std::uint16_t publisher = 0;           // publisher slot on the topic
    std::int64_t timestamp_ns = 0;         // publish time, CLOCK_MONOTONIC ns (EventSystem::now_ns's timebase)
    SubscriptionId subscription;
    // Consumer groups (subscribe_group): the partition it came on (KeyedPublisher::partition_of; `topic`
    // is that partition's, "<topic>.p<i>"), and whether it was published before the partition's previous
    // owner died: that member may have handled it already. Plain subscriptions: no_partition, false.
    static constexpr std::uint32_t no_partition = ~std::uint32_t(0);
    std::uint32_t partition = no_partition;
    bool redelivered = false;
};

// Counters since the bus was created. Read from any thread; each is exact, the set is not one snapshot.
struct EventBusStats {
    std::array<std::uint64_t, layout::kLanes> dispatched{};  // handler calls handed out, by lane (Priority)
    std::uint64_t completed = 0;           // handler calls that returned (or threw)
    std::uint64_t handler_timeouts = 0;    // handler calls that ran longer than default_timeout
    std::uint64_t handler_exceptions = 0;  // handler calls that threw (caught; the bus goes on)
    std::uint64_t filtered_out = 0;        // events a filter refused (not handed out)
    std::uint64_t overload_waits = 0;      // times the dispatcher stopped at max_concurrent_dispatches
    std::uint64_t in_flight = 0;           // handler calls handed out and not yet returned
    std::uint64_t overdue_now = 0;         // handlers running right now for longer than default_timeout
    std::uint64_t dispatcher_wakeups = 0;  // returns of the dispatcher from parking because events came
    std::uint64_t completion_wakeups = 0;  // wake-ups of the dispatcher by workers (a limit, a release, a drain)
    std::uint64_t lagged = 0;              // events lost to evictions by the broker (a stuck bus)
    std::uint64_t corrupt = 0;             // corrupt records reported by the rings (skipped)
    std::uint64_t malformed = 0;           // records shorter than their topic's type (not handed out)
    std::uint64_t discarded = 0;           // taken but not handled: after unsubscribe, or queued at a shutdown deadline
    std::uint64_t misrouted = 0;           // group events whose key hashes to another partition (handled all the same)
    std::uint64_t group_errors = 0;        // broker assignments a group member could not apply (that partition is not read)
    std::int64_t longest_handler_ns = 0;   // the longest handler call so far
};

// What shutdown found at its deadline.
struct ShutdownReport {
    std::uint64_t drained = 0;        // handler calls that completed while shutdown waited
    std::uint64_t still_running = 0;  // handlers still running at the deadline (the destructor waits for them)
    std::uint64_t abandoned = 0;      // handed out but not started by the deadline: not run (stats().discarded)
    bool clean() const noexcept { return still_running == 0 && abandoned == 0; }
};

namespace detail {
class BusCore;

// A subscription's filter and handler, type-erased into function pointers over one heap object (one
// indirect call per event, no std::function). Move-only; made by make_handler.
struct BusHandler {
    using Call = void (*)(void*, std::span<const std::byte>, const EventContext&);
    using Filter = bool (*)(void*, std::span<const std::byte>, const EventContext&);
    using Destroy = void (*)(void*) noexcept;
    using Key = std::uint64_t (*)(void*, std::span<const std::byte>);
    void* state = nullptr;
    Call call = nullptr;
    Filter filter = nullptr;     // null: every event passes
    Destroy destroy = nullptr;
    Key key = nullptr;           // consumer groups: key_hash of the event's key
    std::uint32_t min_size = 0;  // typed topics: sizeof(T); a shorter record is not handed out

    BusHandler() = default;
    BusHandler(BusHandler&& o) noexcept
        : state(std::exchange(o.state, nullptr)), call(o.call), filter(o.filter), destroy(o.destroy), key(o.key), min_size(o.min_size) {}
    BusHandler& operator=(BusHandler&& o) noexcept {
        if (this != &o) {
            reset();
            state = std::exchange(o.state, nullptr);
            call = o.call, filter = o.filter, destroy = o.destroy, key = o.key, min_size = o.min_size;
        }
        return *this;
    }
    ~BusHandler() { reset(); }
    void reset() noexcept {
        if (state) destroy(std::exchange(state, nullptr));
    }
};

struct NoFilter {};

template <class F, class H>
struct Callables {
    [[no_unique_address]] F filter;
    H handler;
};
template <class F, class H, class K>
struct KeyedCallables {
    [[no_unique_address]] F filter;
    H handler;
    [[no_unique_address]] K key;
};

// Calls f with (v, ctx) or (v), whichever it takes.
template <class F, class V>
decltype(auto) invoke_with(F& f, const V& v, const EventContext& ctx) {
    if constexpr (std::invocable<F&, const V&, const EventContext&>) return f(v, ctx);
    else return f(v);
}

template <class T>
const T& typed_view(std::span<const std::byte> b) noexcept {
    return *std::launder(reinterpret_cast<const T*>(b.data()));  // aligned: a ring record or a 64-byte-aligned copy
}

// V is the event type, or std::span<const std::byte> for raw topics. State has .filter and .handler.
template <class V, class State>
BusHandler make_handler_for(State* state) {
    BusHandler h;
    h.state = state;
    h.destroy = [](void* s) noexcept { delete static_cast<State*>(s); };
    using F = decltype(state->filter);
    if constexpr (std::is_same_v<V, std::span<const std::byte>>) {
        h.call = [](void* s, std::span<const std::byte> b, const EventContext& ctx) { invoke_with(static_cast<State*>(s)->handler, b, ctx); };
        if constexpr (!std::is_same_v<F, NoFilter>)
            h.filter = [](void* s, std::span<const std::byte> b, const EventContext& ctx) -> bool {
                return invoke_with(static_cast<State*>(s)->filter, b, ctx);
            };
    } else {
        h.min_size = sizeof(V);
        h.call = [](void* s, std::span<const std::byte> b, const EventContext& ctx) {
            invoke_with(static_cast<State*>(s)->handler, typed_view<V>(b), ctx);
        };
        if constexpr (!std::is_same_v<F, NoFilter>)
            h.filter = [](void* s, std::span<const std::byte> b, const EventContext& ctx) -> bool {
                return invoke_with(static_cast<State*>(s)->filter, typed_view<V>(b), ctx);
            };
    }
    return h;
}
template <class V, class F, class H>
BusHandler make_handler(F filter, H handler) {
    return make_handler_for<V>(new Callables<F, H>{std::move(filter), std::move(handler)});
}
// A group member's: the same, and its key function for checking the partition each event came on.
template <class V, class F, class H, class K>
BusHandler make_group_handler(F filter, H handler, K key) {
    using State = KeyedCallables<F, H, K>;
    BusHandler h = make_handler_for<V>(new State{std::move(filter), std::move(handler), std::move(key)});
    h.key = [](void* s, std::span<const std::byte> b) -> std::uint64_t {
        const auto& k = static_cast<State*>(s)->key(typed_view<V>(b));
        if constexpr (std::integral<std::decay_t<decltype(k)>>) return key_hash(k);
        else return key_hash(std::string_view(k));
    };
    return h;
}
}  // namespace detail

// A handler of events V (a typed event, or std::span<const std::byte> for raw topics): void(const V&,
// const EventContext&) or void(const V&). A filter: bool(const V&, const EventContext&) or bool(const V&).
template <class H, class V>
concept BusHandlerOf = std::move_constructible<H> &&
                       (std::invocable<H&, const V&, const EventContext&> || std::invocable<H&, const V&>);
template <class F, class V>
concept BusFilterOf = std::move_constructible<F> && (std::predicate<F&, const V&, const EventContext&> || std::predicate<F&, const V&>);

class EventBus {
public:
    // Starts the dispatcher and the workers. The bus shares `system`'s connection (it may outlive the
    // EventSystem object). Errc::invalid_argument for a configuration out of range.
    static Result<std::unique_ptr<EventBus>> create(EventSystem& system, const EventBusConfig& config = {});
    // Shuts down (waiting up to default_timeout), then waits for handlers still running: a handler
    // that never returns keeps the destructor waiting.
    ~EventBus();
    EventBus(const EventBus&) = delete;
    EventBus& operator=(const EventBus&) = delete;

    // Subscribes to T's topic: `handler` runs on a worker for each event published from now on, and
    // `filter` (if given) first, on the dispatcher thread: it must be quick. The topic's schema must be
    // T's (Errc::schema_mismatch names both). At most 128 subscriptions per bus (Errc::limit_reached).
    template <Event T, BusHandlerOf<T> H>
    Result<SubscriptionId> subscribe(H handler) {
        return subscribe<T>(detail::NoFilter{}, std::move(handler));
    }
    template <Event T, class F, BusHandlerOf<T> H>
        requires(std::is_same_v<F, detail::NoFilter> || BusFilterOf<F, T>)
    Result<SubscriptionId> subscribe(F filter, H handler) {
        if (auto st = accepting(); !st) return std::unexpected(std::move(st.error()));
        auto s = system_.subscriber<T>(subscriber_options());
        if (!s) return std::unexpected(s.error().context("EventBus::subscribe to '" + std::string(T::event_type) + "'"));
        return add(std::move(s->core_), detail::make_handler<T>(std::move(filter), std::move(handler)));
    }
    // A raw-bytes topic: the handler gets std::span<const std::byte>.
    template <BusHandlerOf<std::span<const std::byte>> H>
    Result<SubscriptionId> subscribe_raw(std::string_view topic, H handler, const layout::Fingerprint& fp = raw_fingerprint()) {
        return subscribe_raw(topic, detail::NoFilter{}, std::move(handler), fp);
    }
    template <class F, BusHandlerOf<std::span<const std::byte>> H>
        requires(std::is_same_v<F, detail::NoFilter> || BusFilterOf<F, std::span<const std::byte>>)
    Result<SubscriptionId> subscribe_raw(std::string_view topic, F filter, H handler, const layout::Fingerprint& fp = raw_fingerprint()) {
        if (auto st = accepting(); !st) return std::unexpected(std::move(st.error()));
        auto s = system_.raw_subscriber(topic, subscriber_options(), fp);
        if (!s) return std::unexpected(s.error().context("EventBus::subscribe_raw to '" + std::string(topic) + "'"));
        return add(std::move(s->core_), detail::make_handler<std::span<const std::byte>>(std::move(filter), std::move(handler)));
    }

    // Joins consumer group `group` on T's topic (rvoip/group.hpp) with shard_count partitions, creating
    // the partition topics "<topic>.p<i>" with broadcast_capacity if need be: `handler` runs for each
    // event of the partitions the broker assigns to this bus, which change as members join, leave or
    // die. `key` (a KeyFunction: the Call-ID) is the keyed publishers'; an event whose key hashes to
    // another partition is counted in stats().misrouted and handled all the same. A partition's events
    // are handled one at a time, in order; EventContext::partition and ::redelivered tell where each
    // came from. unsubscribe (and shutdown) leave the group once the handlers in flight returned, and
    // the other members take the partitions over from there. The same limits and errors as subscribe,
    // plus those of EventSystem::subscribe_group (a group name, a partition count the topic does not have).
    template <Event T, class KeyFn, BusHandlerOf<T> H>
        requires KeyFunction<KeyFn, T>
    Result<SubscriptionId> subscribe_group(std::string_view group, KeyFn key, H handler) {
        return subscribe_group<T>(group, std::move(key), detail::NoFilter{}, std::move(handler));
    }
    template <Event T, class KeyFn, class F, BusHandlerOf<T> H>
        requires(KeyFunction<KeyFn, T> && (std::is_same_v<F, detail::NoFilter> || BusFilterOf<F, T>))
    Result<SubscriptionId> subscribe_group(std::string_view group, KeyFn key, F filter, H handler) {
        if (auto st = accepting(); !st) return std::unexpected(std::move(st.error()));
        PartitionOptions po;
        po.partitions = static_cast<std::uint32_t>(config().shard_count);
        po.topic = subscriber_options().topic;
        // The member's own key check is the bus's (make_group_handler): the subscriber's is not used.
        auto g = system_.subscribe_group<T>(group, [](const T&) { return std::uint64_t(0); }, po);
        if (!g) return std::unexpected(g.error().context("EventBus::subscribe_group '" + std::string(group) + "' on '" +
                                                         std::string(T::event_type) + "'"));
        return add_group(std::move(g->core_), detail::make_group_handler<T>(std::move(filter), std::move(handler), std::move(key)));
    }

    // Ends a subscription: no handler of it starts afterwards; waits until its handlers in flight have
    // returned (called from inside a handler, it does not wait). Errc::invalid_argument for an id this
    // bus does not have (any more).
    Status unsubscribe(SubscriptionId id);

    // Stops taking events and waits up to `deadline` for the handler calls in flight to return. Calls
    // handed out but not started by then are not run (ShutdownReport::abandoned, counted in
    // stats().discarded); handlers still running are reported and waited for by the destructor.
    // Subscribing afterwards is refused (Errc::closed); so is a second shutdown, and one from inside a
    // handler (Errc::invalid_argument: it would wait for itself).
    Result<ShutdownReport> shutdown(std::chrono::milliseconds deadline);

    EventBusStats stats() const;
    const EventBusConfig& config() const noexcept;

private:
    explicit EventBus(const EventSystem& system);
    Status accepting() const;
    SubscriberOptions subscriber_options() const;
    Result<SubscriptionId> add(std::unique_ptr<detail::SubscriberCore> core, detail::BusHandler handler);
    Result<SubscriptionId> add_group(std::unique_ptr<detail::GroupCore> group, detail::BusHandler handler);

    EventSystem system_;
    std::unique_ptr<detail::BusCore> core_;
};

}  // namespace rvoip::events
