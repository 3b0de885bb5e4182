// WaitSet: one waiting point for many subscriptions, Critical-first across all of them. Included by
// <rvoip/events.hpp>; include that.
//
//   rvoip::events::WaitSet set;
//   auto control = set.add(*bus.subscriber<CallControl>());   // the set owns the subscription now
//   auto state = set.add(*bus.subscriber<CallState>());
//   while (auto ev = set.receive_any()) {
//       if (auto* c = ev->as<CallControl>()) ...               // or ev->index() == *control
//   }
//
// A receive takes the most urgent event across every subscription in the set: any Critical event of
// any of its topics before any High one, and so on (round robin among topics within a lane). A
// blocking receive spins, then parks once on the doorbells of all of its subscriptions (futex_waitv):
// a burst of events over several topics wakes the waiting thread once, not once per topic. One thread
// receives from a set at a time, like from a Subscriber.
#pragma once

#include "rvoip/events.hpp"

#include <chrono>
#include <cstddef>
#include <memory>

namespace rvoip::events {

// A received event of one of a WaitSet's subscriptions: the raw view of its bytes, which subscription
// it came from, and its typed view when the topic carries T.
class AnySample : public RawSample {
public:
    AnySample() = default;
    std::size_t index() const noexcept { return index_; }  // WaitSet::add's answer for its subscription
    const TopicInfo& topic() const noexcept { return core_->info(); }
    // The event as a T, or nullptr when the topic's schema is not T's.
    template <Event T>
    const T* as() const noexcept {
        if (!core_ || !(core_->fingerprint() == fingerprint_of<T>())) return nullptr;
        return std::launder(reinterpret_cast<const T*>(rec_.header + 1));
    }

private:
    friend class WaitSet;
    template <Event>
    friend class GroupSubscriber;
    AnySample(detail::SubscriberCore* c, detail::Record r, std::size_t index) noexcept : RawSample(c, r), index_(index) {}
    std::size_t index_ = 0;
};

class WaitSet {
public:
    explicit WaitSet(const WaitOptions& wait = {}) : core_(std::make_unique<detail::WaitSetCore>(wait)) {}

    // Takes a subscriber over (typed or raw) and returns its index in the set, which AnySample::index()
    // and last_error_index() report. At most 128 subscriptions (Errc::limit_reached).
    template <class S>
    Result<std::size_t> add(BasicSubscriber<S>&& s) {
        return core_->add(std::move(s.core_));
    }
    // Closes the subscription at `index`. Other indices do not change. Errc::invalid_argument when there
    // is none, or while samples of it are still held (release them first).
    Status remove(std::size_t index) { return core_->remove(index); }
    std::size_t size() const noexcept { return core_->size(); }

    // Waits for the most urgent event across the set.
    Result<AnySample> receive_any() noexcept { return wrap(core_->next_for(std::chrono::nanoseconds(-1))); }
    // Waits at most `timeout`; Errc::timeout when nothing came.
    template <class Rep, class Period>
    Result<AnySample> receive_any_for(std::chrono::duration<Rep, Period> timeout) noexcept {
        return wrap(core_->next_for(detail::clamp_timeout(timeout)));
    }
    // Never blocks; Errc::would_block when every lane of every subscription is empty.
    Result<AnySample> try_receive_any() noexcept { return wrap(core_->try_next()); }

    // After an error (Errc::lagged, Errc::corrupt): the subscription it concerns, and after lagged, how
    // many events that subscription lost.
    std::size_t last_error_index() const noexcept { return core_->last_error_index(); }
    std::uint64_t last_missed(std::size_t index) const noexcept {
        const auto* s = core_->at(index);
        return s ? s->last_missed() : 0;
    }
    const TopicInfo* topic(std::size_t index) const noexcept {
        const auto* s = core_->at(index);
        return s ? &s->info() : nullptr;
    }
    // A descriptor for event loops (epoll, Boost.Asio, libuv): it turns readable when an event may be
    // waiting, once prepare_poll() armed it. The loop, with no thread of its own:
    //
    //     for (;;) {
    //         while (auto ev = set.try_receive_any()) handle(*ev);   // until Errc::would_block
    //         if (*set.prepare_poll()) epoll_wait(...);              // the set's descriptor among others
    //     }
    //
    // An io_uring waiting on every subscription's doorbell (Linux 6.7; Errc::unsupported before).
    Result<int> descriptor() { return core_->descriptor(); }
    // Arms the descriptor: true when armed (poll it), false when an event may be waiting already
    // (receive first). Any receive ends the armed wait; arming again is cheap.
    Result<bool> prepare_poll() { return core_->prepare_poll(); }

    // Times the receiving thread returned from parking (one per burst of events, however many topics
    // it spans; tools and tests read it).
    std::uint64_t wakeups() const noexcept { return core_->wakeups(); }

private:
    static Result<AnySample> wrap(Result<detail::WaitSetCore::Taken> r) noexcept {
        if (!r) return std::unexpected(std::move(r.error()));
        if (!*r) return std::unexpected(Error(Errc::would_block));
        return AnySample(r->core, *r, r->index);
    }
    std::unique_ptr<detail::WaitSetCore> core_;
};

}  // namespace rvoip::events
