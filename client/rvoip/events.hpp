// librvoip-events: publish and receive events between processes through shared memory, Critical first.
//
//   auto bus = rvoip::events::EventSystemBuilder().client_name("session").build();      // Result<EventSystem>
//   auto pub = bus->publisher<CallState>();                                              // Result<Publisher<CallState>>
//   pub->publish(CallState{...}, Priority::critical);
//   auto sub = bus->subscriber<CallState>();
//   if (auto ev = sub->receive()) use(ev->call_id);                                      // zero-copy view
//
// Thread model: an EventSystem may be shared by threads (control calls are serialised); each Publisher,
// Subscriber, Loan and Sample belongs to one thread at a time. A Sample or Loan must not outlive the
// Subscriber or Publisher it came from.
#pragma once

#include "proto/errc.hpp"
#include "proto/layout.hpp"
#include "proto/messages.hpp"
#include "shm/lane.hpp"
#include "shm/segment.hpp"
#include "shm/topic_map.hpp"
#include "rvoip/options.hpp"
#include "rvoip/detail/cores.hpp"  // internal: the untyped cores behind the fronts

#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

namespace rvoip::events {

// ------------------------------------------------------------------------------------------------------
// Event types.

// Fixed-capacity string for SIP fields (Call-ID, tags, URIs) inside trivially copyable events.
template <std::size_t N>
struct FixedString {
    std::uint32_t len = 0;
    char chars[N] = {};

    FixedString() = default;
    FixedString(std::string_view s) noexcept { assign(s); }  // NOLINT: truncates at N, see assign
    // Copies up to N characters; returns false if `s` was truncated.
    bool assign(std::string_view s) noexcept {
        len = static_cast<std::uint32_t>(s.size() < N ? s.size() : N);
        std::memcpy(chars, s.data(), len);
        return s.size() <= N;
    }
    std::string_view view() const noexcept { return {chars, len <= N ? len : N}; }  // bounded: may come from shm
    static constexpr std::size_t capacity() noexcept { return N; }
    friend bool operator==(const FixedString& a, std::string_view b) noexcept { return a.view() == b; }
};

// Fixed-capacity array (e.g. codecs of an SDP offer).
template <class T, std::size_t N>
struct FixedArray {
    static_assert(std::is_trivially_copyable_v<T>);
    std::uint32_t count = 0;
    T items[N] = {};

    bool push_back(const T& v) noexcept {
        if (count >= N) return false;
        items[count++] = v;
        return true;
    }
    std::span<const T> view() const noexcept { return {items, count <= N ? count : N}; }
    static constexpr std::size_t capacity() noexcept { return N; }
};

// A typed event: trivially copyable, names its topic, optionally a default priority and schema version.
//   struct CallState { static constexpr std::string_view event_type = "call.state";
//                      static constexpr Priority default_priority = Priority::high; ... };
template <class T>
concept Event = std::is_trivially_copyable_v<T> && alignof(T) <= 32 && requires {
    { T::event_type } -> std::convertible_to<std::string_view>;
};

template <Event T>
constexpr Priority default_priority_of() noexcept {
    if constexpr (requires { { T::default_priority } -> std::convertible_to<Priority>; }) return T::default_priority;
    else return Priority::normal;
}

namespace detail {
template <class T>
constexpr std::string_view type_name_of() noexcept {
    if constexpr (requires { { T::schema_name } -> std::convertible_to<std::string_view>; }) {
        return T::schema_name;
    } else {
        std::string_view p = __PRETTY_FUNCTION__;  // "... type_name_of() [with T = ns::Type; ...]"
        auto b = p.find("T = ") + 4;
        auto e = p.find_first_of(";]", b);
        return p.substr(b, e - b);
    }
}
}  // namespace detail

template <Event T>
layout::Fingerprint fingerprint_of() noexcept {
    layout::Fingerprint f;
    auto name = detail::type_name_of<T>().substr(0, layout::kTypeNameMax);
    std::memcpy(f.type_name, name.data(), name.size());
    f.size = sizeof(T);
    f.align = alignof(T);
    if constexpr (requires { { T::schema_version } -> std::convertible_to<std::uint32_t>; }) f.schema_version = T::schema_version;
    f.kind = layout::Kind::typed;
    return f;
}

// Raw-bytes topics carry variable-size payloads (a whole SIP message). `schema` names the payload format.
layout::Fingerprint raw_fingerprint(std::string_view schema = "raw-bytes", std::uint32_t version = 0) noexcept;


// ------------------------------------------------------------------------------------------------------
// Typed fronts.

template <Event T>
class Publisher;
template <Event T>
class KeyedPublisher;
template <Event T>
class GroupSubscriber;

namespace detail {
// A caller's timeout in nanoseconds without overflow: <= 0 (or NaN) is 0, beyond a century is -1
// (forever), whatever the duration's type.
template <class Rep, class Period>
std::chrono::nanoseconds clamp_timeout(std::chrono::duration<Rep, Period> timeout) noexcept {
    const double s = std::chrono::duration<double>(timeout).count();
    if (!(s > 0)) return std::chrono::nanoseconds(0);
    if (s >= 100.0 * 365 * 24 * 3600) return std::chrono::nanoseconds(-1);
    return std::chrono::nanoseconds(static_cast<std::int64_t>(s * 1e9));
}
}  // namespace detail

// A record claimed in the ring for building an event in place. Publishes by consuming itself; dropping it
// uncommitted turns the claim into padding.
template <Event T>
class Loan {
public:
    Loan(Loan&& o) noexcept : core_(std::exchange(o.core_, nullptr)), value_(o.value_), priority_(o.priority_) {}
    Loan& operator=(Loan&&) = delete;
    ~Loan() {
        if (core_) core_->abandon_loan();
    }
    T* operator->() noexcept { return value_; }
    T& operator*() noexcept { return *value_; }

    Status commit() && noexcept { return std::move(*this).commit(priority_); }
    // A priority other than the loan's copies the event into that lane.
    Status commit(Priority p) && noexcept {
        auto* c = std::exchange(core_, nullptr);
        if (!c) return std::unexpected(Error(Errc::closed, "loan already committed"));
        return c->commit_loan(sizeof(T), p);
    }

private:
    friend class Publisher<T>;
    Loan(detail::PublisherCore* c, T* v, Priority p) noexcept : core_(c), value_(v), priority_(p) {}
    detail::PublisherCore* core_;
    T* value_;
    Priority priority_;
};

template <Event T>
class Publisher {
public:
    static constexpr Priority default_priority = default_priority_of<T>();

    Status publish(const T& ev, Priority p = default_priority) noexcept {
        return core_->publish_n(
            1, [](std::uint32_t) { return std::uint32_t(sizeof(T)); },
            [src = &ev](std::uint32_t, std::byte* dst) { std::memcpy(dst, src, sizeof(T)); }, p);
    }

    // Claims room for many events with one CAS per chunk (chunks keep a claim within a quarter of the
    // lane). On failure `*published` (if given) tells how many went out before the error.
    Status publish_batch(std::span<const T> evs, Priority p = default_priority, std::size_t* published = nullptr) noexcept {
        return core_->publish_chunked(
            evs.size(), [](std::size_t) { return std::uint32_t(sizeof(T)); },
            [src = evs.data()](std::size_t i, std::byte* dst) { std::memcpy(dst, src + i, sizeof(T)); }, p, published);
    }

    // A value-initialised T in the ring, to fill in place and commit.
    Result<Loan<T>> loan(Priority p = default_priority) noexcept {
        auto mem = core_->loan(sizeof(T), p);
        if (!mem) return std::unexpected(std::move(mem.error()));
        return Loan<T>(core_.get(), ::new (*mem) T{}, p);
    }

    const TopicInfo& topic() const noexcept { return core_->info(); }
    LaneCounters counters(Priority p) const noexcept { return core_->counters(p); }

private:
    friend class EventSystem;
    explicit Publisher(std::unique_ptr<detail::PublisherCore> c) noexcept : core_(std::move(c)) {}
    std::unique_ptr<detail::PublisherCore> core_;
};

// A zero-copy view of one received event, valid until the Sample is destroyed. Its record is not
// overwritten while the Sample lives: holding Samples holds back publishers of that lane.
template <class View>
class BasicSample {
public:
    BasicSample() = default;
    BasicSample(BasicSample&& o) noexcept : core_(std::exchange(o.core_, nullptr)), rec_(o.rec_) {}
    BasicSample& operator=(BasicSample&& o) noexcept {
        if (this != &o) {
            reset();
            core_ = std::exchange(o.core_, nullptr);
            rec_ = o.rec_;
        }
        return *this;
    }
    ~BasicSample() { reset(); }

    Priority priority() const noexcept { return static_cast<Priority>(rec_.lane); }
    std::uint64_t sequence() const noexcept { return rec_.header->sequence; }   // the publisher's own, per lane
    std::uint16_t publisher() const noexcept { return rec_.header->publisher; }  // publisher slot on this topic
    // Publish time in CLOCK_MONOTONIC nanoseconds (TSC-based, see EventSystem::now_ns).
    std::int64_t timestamp_ns() const noexcept { return core_->clock().to_ns(rec_.header->timestamp_ns); }
    std::span<const std::byte> bytes() const noexcept {
        return {reinterpret_cast<const std::byte*>(rec_.header + 1), rec_.length};  // the validated length, not a re-read
    }
    explicit operator bool() const noexcept { return core_ != nullptr; }

    void reset() noexcept {
        if (core_) std::exchange(core_, nullptr)->release(rec_.lane);
    }

protected:
    friend class EventSystem;
    template <class>
    friend class BasicSubscriber;
    BasicSample(detail::SubscriberCore* c, detail::Record r) noexcept : core_(c), rec_(r) {}
    detail::SubscriberCore* core_ = nullptr;
    detail::Record rec_{};
};

template <Event T>
class Sample : public BasicSample<T> {
public:
    using BasicSample<T>::BasicSample;
    Sample(BasicSample<T>&& b) noexcept : BasicSample<T>(std::move(b)) {}  // NOLINT
    const T& operator*() const noexcept { return *get(); }
    const T* operator->() const noexcept { return get(); }
    const T* get() const noexcept { return std::launder(reinterpret_cast<const T*>(this->rec_.header + 1)); }
};

using RawSample = BasicSample<std::byte>;

// Receive calls shared by typed and raw subscribers; S is Sample<T> or RawSample.
template <class S>
class BasicSubscriber {
public:
    // Waits for the next event, Critical first.
    Result<S> receive() noexcept { return wrap(core_->next_for(std::chrono::nanoseconds(-1))); }
    // Waits at most `timeout`; Errc::timeout when nothing came. A zero or negative timeout checks once;
    // one beyond a century waits forever.
    template <class Rep, class Period>
    Result<S> receive_for(std::chrono::duration<Rep, Period> timeout) noexcept {
        return wrap(core_->next_for(detail::clamp_timeout(timeout)));
    }
    // Never blocks; Errc::would_block when every lane is empty.
    Result<S> try_receive() noexcept { return wrap(core_->try_next()); }

    // Fills `out` with up to out.size() events without blocking, Critical first; returns how many.
    // The lanes' cursors advance once, when the batch's samples are released.
    Result<std::size_t> try_receive_batch(std::span<S> out) noexcept {
        std::size_t n = 0;
        while (n < out.size()) {
            auto r = core_->try_next();
            if (!r) {
                if (n && r.error().code == Errc::lagged) core_->report_lag_again();  // after the events we hand out
                return n ? Result<std::size_t>(n) : std::unexpected(std::move(r.error()));
            }
            if (!r->header) break;
            out[n++] = S(BasicSample<typename ViewOf<S>::type>(core_.get(), *r));
        }
        return n;
    }
    // Waits up to `timeout` for the first event, then takes what else is ready.
    template <class Rep, class Period>
    Result<std::size_t> receive_batch(std::span<S> out, std::chrono::duration<Rep, Period> timeout) noexcept {
        if (out.empty()) return std::size_t(0);
        auto first = receive_for(timeout);
        if (!first) return std::unexpected(std::move(first.error()));
        out[0] = std::move(*first);
        auto rest = try_receive_batch(out.subspan(1));
        if (!rest && rest.error().code == Errc::lagged) core_->report_lag_again();
        return 1 + (rest ? *rest : 0);
    }

    // After Errc::lagged: how many events this subscriber lost, exactly. The broker evicts a subscriber
    // that held a lane's publishers back for the lane's evict_after (TopicOptions::evict_after; never
    // within a grace period after it joined): it moves the subscriber's cursor past what it had not read
    // and counts it. The subscriber then goes on from there, with every later event. Samples still held
    // when that happens may be overwritten: eviction is for subscribers that stopped, not for ones that
    // hold on to samples.
    std::uint64_t last_missed() const noexcept { return core_->last_missed(); }

    const TopicInfo& topic() const noexcept { return core_->info(); }

protected:
    template <class X>
    struct ViewOf;
    template <class X>
    struct ViewOf<Sample<X>> {
        using type = X;
    };
    template <class X>
    struct ViewOf<BasicSample<X>> {
        using type = X;
    };

    friend class EventSystem;
    friend class WaitSet;
    friend class EventBus;
    explicit BasicSubscriber(std::unique_ptr<detail::SubscriberCore> c) noexcept : core_(std::move(c)) {}
    Result<S> wrap(Result<detail::Record> r) noexcept {
        if (!r) return std::unexpected(std::move(r.error()));
        if (!r->header) return std::unexpected(Error(Errc::would_block));
        return S(BasicSample<typename ViewOf<S>::type>(core_.get(), *r));
    }
    std::unique_ptr<detail::SubscriberCore> core_;
};

template <Event T>
class Subscriber : public BasicSubscriber<Sample<T>> {
    friend class EventSystem;
    using BasicSubscriber<Sample<T>>::BasicSubscriber;
};

class RawSubscriber : public BasicSubscriber<RawSample> {
    friend class EventSystem;
    using BasicSubscriber<RawSample>::BasicSubscriber;
};

// A raw record being built in place; commit(n) publishes its first n bytes (n <= the loaned size).
class RawLoan {
public:
    RawLoan(RawLoan&& o) noexcept : core_(std::exchange(o.core_, nullptr)), bytes_(o.bytes_), priority_(o.priority_) {}
    RawLoan& operator=(RawLoan&&) = delete;
    ~RawLoan() {
        if (core_) core_->abandon_loan();
    }
    std::span<std::byte> bytes() noexcept { return bytes_; }
    Status commit(std::size_t n) && noexcept;
    Status commit(std::size_t n, Priority p) && noexcept;

private:
    friend class RawPublisher;
    RawLoan(detail::PublisherCore* c, std::span<std::byte> b, Priority p) noexcept : core_(c), bytes_(b), priority_(p) {}
    detail::PublisherCore* core_;
    std::span<std::byte> bytes_;
    Priority priority_;
};

class RawPublisher {
public:
    Status publish(std::span<const std::byte> payload, Priority p = Priority::normal) noexcept {
        if (payload.size() > 0xffffffffu) return std::unexpected(Error(Errc::event_too_large));
        const auto len = static_cast<std::uint32_t>(payload.size());
        return core_->publish_n(
            1, [len](std::uint32_t) { return len; },
            [src = payload.data(), len](std::uint32_t, std::byte* dst) { std::memcpy(dst, src, len); }, p);
    }
    Status publish(std::string_view text, Priority p = Priority::normal) noexcept {
        return publish(std::as_bytes(std::span(text.data(), text.size())), p);
    }
    // One claim (one CAS) per chunk of payloads whose records fill at most a quarter of the lane. On
    // failure `*published` (if given) tells how many went out before the error.
    Status publish_batch(std::span<const std::span<const std::byte>> payloads, Priority p = Priority::normal,
                         std::size_t* published = nullptr) noexcept {
        return core_->publish_chunked(
            payloads.size(),
            [src = payloads.data()](std::size_t i) { return static_cast<std::uint32_t>(std::min<std::size_t>(src[i].size(), 0xffffffffu)); },
            [src = payloads.data()](std::size_t i, std::byte* dst) { std::memcpy(dst, src[i].data(), src[i].size()); }, p, published);
    }
    Result<RawLoan> loan(std::size_t max_size, Priority p = Priority::normal) noexcept;

    std::uint32_t max_event(Priority p = Priority::normal) const noexcept { return core_->max_event(p); }
    const TopicInfo& topic() const noexcept { return core_->info(); }
    LaneCounters counters(Priority p) const noexcept { return core_->counters(p); }

private:
    friend class EventSystem;
    explicit RawPublisher(std::unique_ptr<detail::PublisherCore> c) noexcept : core_(std::move(c)) {}
    std::unique_ptr<detail::PublisherCore> core_;
};

// ------------------------------------------------------------------------------------------------------
// The system: one control connection to a broker (or an embedded broker), from which publishers and
// subscribers are made.
class EventSystem {
public:
    template <Event T>
    Result<Publisher<T>> publisher(const PublisherOptions& opt = {}) {
        return front<Publisher<T>>(detail::PublisherCore::open(conn_, T::event_type, fingerprint_of<T>(), opt));
    }
    template <Event T>
    Result<Subscriber<T>> subscriber(const SubscriberOptions& opt = {}) {
        return front<Subscriber<T>>(detail::SubscriberCore::open(conn_, T::event_type, fingerprint_of<T>(), opt));
    }
    // Consumer groups (rvoip/group.hpp): a publisher that writes each event to the partition of its key,
    // and a member of `group` that gets its share of the partitions.
    template <Event T, class KeyFn>
    Result<KeyedPublisher<T>> keyed_publisher(KeyFn key, const PartitionOptions& opt = {});
    template <Event T, class KeyFn>
    Result<GroupSubscriber<T>> subscribe_group(std::string_view group, KeyFn key, const PartitionOptions& opt = {});
    Result<RawPublisher> raw_publisher(std::string_view topic, const PublisherOptions& opt = {},
                                       const layout::Fingerprint& fp = raw_fingerprint());
    Result<RawSubscriber> raw_subscriber(std::string_view topic, const SubscriberOptions& opt = {},
                                         const layout::Fingerprint& fp = raw_fingerprint());

    // The broker's view: clients, topics, publishers, subscribers, lane tails.
    Result<proto::StatsReply> stats();
    // The broker's JSON report of what this client may see (what rvoip-eventctl shows): the broker's
    // status, every topic in one line each, one topic in full (`topic`), or the clients. One consistent
    // snapshot, fetched in as many control calls as its size needs.
    Result<std::string> inspect(proto::InspectWhat what, std::string_view topic = {});
    const std::string& socket_path() const noexcept;
    // Now, in the timebase of Sample::timestamp_ns(): CLOCK_MONOTONIC nanoseconds read from the TSC with
    // the broker's calibration, so it is comparable across processes and costs a few ns.
    std::int64_t now_ns() const noexcept;
    // True once the broker said it is stopping (the data plane keeps working), until it is back.
    bool broker_stopping() const noexcept;
    // Whether the broker is reachable now; the library reconnects by itself, with back-off.
    ConnectionState connection() const;

private:
    friend class EventSystemBuilder;
    explicit EventSystem(std::shared_ptr<detail::Connection> c) noexcept : conn_(std::move(c)) {}
    // Wraps an opened core in its typed or raw front (whose constructors only we may call).
    template <class Front, class Core>
    static Result<Front> front(Result<std::unique_ptr<Core>> core) {
        if (!core) return std::unexpected(std::move(core.error()));
        return Front(std::move(*core));
    }
    std::shared_ptr<detail::Connection> conn_;
};

class EventSystemBuilder {
public:
    // Control socket of the broker; default: $RVOIP_EVENTS_SOCKET or the platform default (see README).
    EventSystemBuilder& socket_path(std::string p) { socket_ = std::move(p), embedded_ = false; return *this; }
    // Runs a private broker on a thread of this process (tests, single-process programs).
    EventSystemBuilder& embedded(bool on = true) { embedded_ = on; return *this; }
    // Name shown in the broker's logs and the CLI (1-31 printable characters).
    EventSystemBuilder& client_name(std::string n) { name_ = std::move(n); return *this; }
    // How long a control call waits for the broker's reply.
    EventSystemBuilder& control_timeout(std::chrono::milliseconds t) { timeout_ = t; return *this; }

    Result<EventSystem> build() const;

private:
    std::string socket_;
    std::string name_ = "client";
    bool embedded_ = false;
    std::chrono::milliseconds timeout_{5000};
};

}  // namespace rvoip::events

#include "rvoip/waitset.hpp"  // IWYU pragma: export
#include "rvoip/group.hpp"    // IWYU pragma: export
#include "rvoip/bus.hpp"      // IWYU pragma: export
