// Consumer groups and keyed publishing: several processes share a topic's events so that each event
// goes to exactly one of them, and all events with the same key (a Call-ID) to the same one, in order.
// Included by <rvoip/events.hpp>; include that.
//
//   // the transport: events keyed by Call-ID land on one of 16 partitions
//   auto pub = *bus.keyed_publisher<CallControl>([](const CallControl& c) { return c.call_id.view(); });
//   pub.publish(ev);
//   // each session worker process:
//   auto sub = *bus.subscribe_group<CallControl>("session-workers", [](const CallControl& c) { return c.call_id.view(); });
//   while (auto ev = sub.receive()) handle(*ev, ev->redelivered());
//   // or, with handlers on an EventBus (rvoip/bus.hpp), over its shard_count partitions:
//   bus->subscribe_group<CallControl>("session-workers", call_id_of, [](const CallControl& c, const EventContext& ctx) { ... });
//
// A partitioned topic of N partitions is N topics, "<topic>.p0" .. "<topic>.p<N-1>" (access rules name
// them so); a keyed publisher writes each event to partition hash(key) % N. The broker deals the
// partitions over the group's members and moves them as members join, leave or die:
//  - join or leave: a member gives a partition back only once it has released every event of it that
//    it took, and the next member starts exactly there: nothing is read twice, nothing skipped;
//  - a member's process dies: its partitions pass on at once from its last released position, so the
//    events it had taken but not released are delivered again, with redelivered() true (as are any
//    others published before it died that are still unread: "may have been delivered");
//  - no member left: the group's cursors go, and events published until a member joins are not kept.
// Within a partition, events are delivered in order per lane, Critical first across all the member's
// partitions. A membership does not survive its connection: after a broker restart (or anything that
// drops the connection) the member's receives return Errc::broker_unavailable, and it joins again.
#pragma once

#include "rvoip/events.hpp"
#include "rvoip/detail/group_core.hpp"

#include <concepts>
#include <functional>
#include <string_view>
#include <vector>

namespace rvoip::events {

// The stable hash of a key that picks its partition: FNV-1a over the key's bytes (an integer's eight
// little-endian bytes), then a 64-bit finaliser (every bit of the key reaches the low bits that the
// modulo keeps). The same in every process and every build: publishers and members must agree.
constexpr std::uint64_t key_hash(std::string_view key) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (char c : key) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}
template <std::integral K>
constexpr std::uint64_t key_hash(K key) noexcept {
    char bytes[8] = {};
    const auto v = static_cast<std::uint64_t>(key);
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(v >> (8 * i));
    return key_hash(std::string_view(bytes, 8));
}
// A key function's result: anything convertible to std::string_view (a Call-ID), or an integer.
template <class F, class T>
concept KeyFunction = std::invocable<const F&, const T&> &&
                      (std::convertible_to<std::invoke_result_t<const F&, const T&>, std::string_view> ||
                       std::integral<std::invoke_result_t<const F&, const T&>>);

namespace detail {
template <class T, class F>
std::function<std::uint64_t(const T&)> hasher(F key) {
    return [key = std::move(key)](const T& ev) -> std::uint64_t {
        const auto& k = key(ev);
        if constexpr (std::integral<std::decay_t<decltype(k)>>) return key_hash(k);
        else return key_hash(std::string_view(k));
    };
}
}  // namespace detail

// One event of a group member, a zero-copy view like Sample<T>.
template <Event T>
class GroupSample : public AnySample {
public:
    GroupSample() = default;
    const T& operator*() const noexcept { return *get(); }
    const T* operator->() const noexcept { return get(); }
    const T* get() const noexcept { return std::launder(reinterpret_cast<const T*>(rec_.header + 1)); }
    std::uint32_t partition() const noexcept { return partition_; }
    // Published before this partition's previous owner died: that member may have handled it already.
    bool redelivered() const noexcept { return redelivered_; }

private:
    template <Event>
    friend class GroupSubscriber;
    GroupSample(AnySample&& a, std::uint32_t partition, bool redelivered) noexcept
        : AnySample(std::move(a)), partition_(partition), redelivered_(redelivered) {}
    std::uint32_t partition_ = 0;
    bool redelivered_ = false;
};

template <Event T>
class GroupSubscriber {
public:
    // Waits for the next event of this member's partitions, Critical first across them.
    Result<GroupSample<T>> receive() noexcept { return wrap(core_->next_for(std::chrono::nanoseconds(-1))); }
    template <class Rep, class Period>
    Result<GroupSample<T>> receive_for(std::chrono::duration<Rep, Period> timeout) noexcept {
        return wrap(core_->next_for(detail::clamp_timeout(timeout)));
    }
    Result<GroupSample<T>> try_receive() noexcept { return wrap(core_->try_next()); }

    std::uint32_t partitions() const noexcept { return core_->partitions(); }
    std::vector<std::uint32_t> assigned() const { return core_->assigned(); }  // changes at receives
    std::uint32_t member() const noexcept { return core_->member(); }
    std::uint64_t handovers() const noexcept { return core_->handovers(); }
    std::uint64_t redelivered() const noexcept { return core_->redelivered(); }
    // Events whose key hashes to another partition than the one they came on: a publisher with another
    // key function or partition count (they are delivered all the same).
    std::uint64_t misrouted() const noexcept { return misrouted_; }

private:
    friend class EventSystem;
    friend class EventBus;
    GroupSubscriber(std::unique_ptr<detail::GroupCore> c, std::function<std::uint64_t(const T&)> h) noexcept
        : core_(std::move(c)), hash_(std::move(h)) {}
    Result<GroupSample<T>> wrap(Result<detail::GroupCore::Taken> r) noexcept {
        if (!r) return std::unexpected(std::move(r.error()));
        if (!*r) return std::unexpected(Error(Errc::would_block));
        GroupSample<T> s(AnySample(r->core, *r, r->index), r->partition, r->redelivered);
        if (hash_(*s) % core_->partitions() != r->partition) [[unlikely]] ++misrouted_;
        return s;
    }
    std::unique_ptr<detail::GroupCore> core_;
    std::function<std::uint64_t(const T&)> hash_;
    std::uint64_t misrouted_ = 0;
};

// Publishes each event on the partition its key hashes to (one Publisher per partition).
template <Event T>
class KeyedPublisher {
public:
    static constexpr Priority default_priority = default_priority_of<T>();

    Status publish(const T& ev, Priority p = default_priority) noexcept { return parts_[partition_of(ev)].publish(ev, p); }
    // Runs of consecutive events bound for the same partition go out as one batch each.
    Status publish_batch(std::span<const T> evs, Priority p = default_priority, std::size_t* published = nullptr) noexcept {
        std::size_t done = 0;
        while (done < evs.size()) {
            const std::uint32_t part = partition_of(evs[done]);
            std::size_t end = done + 1;
            while (end < evs.size() && partition_of(evs[end]) == part) ++end;
            std::size_t n = 0;
            auto st = parts_[part].publish_batch(evs.subspan(done, end - done), p, &n);
            done += n;
            if (!st) {
                if (published) *published = done;
                return st;
            }
        }
        if (published) *published = done;
        return {};
    }
    std::uint32_t partition_of(const T& ev) const noexcept { return std::uint32_t(hash_(ev) % parts_.size()); }
    std::uint32_t partitions() const noexcept { return std::uint32_t(parts_.size()); }
    Publisher<T>& partition(std::uint32_t i) noexcept { return parts_[i]; }

private:
    friend class EventSystem;
    KeyedPublisher(std::vector<Publisher<T>> parts, std::function<std::uint64_t(const T&)> h) noexcept
        : parts_(std::move(parts)), hash_(std::move(h)) {}
    std::vector<Publisher<T>> parts_;
    std::function<std::uint64_t(const T&)> hash_;
};

template <Event T, class KeyFn>
Result<KeyedPublisher<T>> EventSystem::keyed_publisher(KeyFn key, const PartitionOptions& opt) {
    static_assert(KeyFunction<KeyFn, T>, "the key function takes a const T& and returns a string (view) or an integer");
    std::vector<Publisher<T>> parts;
    parts.reserve(opt.partitions);
    PublisherOptions po;
    po.topic = opt.topic;
    for (std::uint32_t p = 0; p < opt.partitions && p < proto::kMaxPartitions; ++p) {
        auto core = detail::PublisherCore::open(conn_, proto::partition_topic(T::event_type, p), fingerprint_of<T>(), po);
        if (!core) return std::unexpected(std::move(core.error()));
        parts.push_back(Publisher<T>(std::move(*core)));
    }
    if (auto ok = detail::declare_partitions(*conn_, T::event_type, opt.partitions); !ok) return std::unexpected(std::move(ok.error()));
    return KeyedPublisher<T>(std::move(parts), detail::hasher<T>(std::move(key)));
}

template <Event T, class KeyFn>
Result<GroupSubscriber<T>> EventSystem::subscribe_group(std::string_view group, KeyFn key, const PartitionOptions& opt) {
    static_assert(KeyFunction<KeyFn, T>, "the key function takes a const T& and returns a string (view) or an integer");
    auto core = detail::GroupCore::join(conn_, T::event_type, group, fingerprint_of<T>(), opt.partitions, opt.topic, opt.wait);
    if (!core) return std::unexpected(std::move(core.error()));
    return GroupSubscriber<T>(std::move(*core), detail::hasher<T>(std::move(key)));
}

}  // namespace rvoip::events
