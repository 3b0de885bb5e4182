// WaitSetCore: several subscriptions, one waiting point, Critical-first across them (rvoip/waitset.hpp).
#include "client/parking.hpp"
#include "client/poller.hpp"
#include "rvoip/events.hpp"

#include <string>

namespace rvoip::events::detail {

WaitSetCore::WaitSetCore(const WaitOptions& w) noexcept : wait_(w), waiting_{.spin = w.spin} {}
WaitSetCore::~WaitSetCore() { end_poll(); }

Result<std::size_t> WaitSetCore::add(std::unique_ptr<SubscriberCore> s) {
    end_poll();
    if (!s) return fail(Errc::invalid_argument, "WaitSet::add: no subscriber (moved from already?)");
    if (live_.size() >= kMaxSubscriptions)
        return fail(Errc::limit_reached, "a WaitSet covers at most " + std::to_string(kMaxSubscriptions) +
                                             " subscriptions (one futex_waitv); use another WaitSet for topic '" + s->info().name + "'");
    subs_.push_back(std::move(s));
    live_.push_back(subs_.size() - 1);
    return subs_.size() - 1;
}

Status WaitSetCore::remove(std::size_t index) {
    end_poll();
    if (index >= subs_.size() || !subs_[index])
        return fail(Errc::invalid_argument, "the WaitSet has no subscription " + std::to_string(index));
    if (const auto held = subs_[index]->samples_held())
        return fail(Errc::invalid_argument, "subscription " + std::to_string(index) + " (topic '" + subs_[index]->info().name + "') still has " +
                                                std::to_string(held) + " sample(s) held: release them before removing it");
    subs_[index].reset();
    std::erase(live_, index);
    return {};
}

std::unique_ptr<SubscriberCore> WaitSetCore::detach(std::size_t index) {
    end_poll();
    if (index >= subs_.size()) return nullptr;
    std::erase(live_, index);
    return std::move(subs_[index]);
}

Result<WaitSetCore::Taken> WaitSetCore::try_next() noexcept {
    for (std::uint32_t l = 0; l < layout::kLanes; ++l) {
        auto r = try_lane(l);
        if (!r || *r) return r;
    }
    return Taken{};
}

Result<WaitSetCore::Taken> WaitSetCore::try_lane(std::uint32_t l) noexcept {
    if (poller_ && poller_->armed()) [[unlikely]]
        end_poll();
    const std::size_t n = live_.size();
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t k = (next_first_ + i) % n;
        SubscriberCore* s = subs_[live_[k]].get();
        auto r = s->try_lane(l);
        if (!r) {
            last_error_ = live_[k];
            return std::unexpected(std::move(r.error()));
        }
        if (*r) {
            next_first_ = k + 1;  // the others first next time on this lane
            Taken t;
            static_cast<Record&>(t) = *r;
            t.index = live_[k];
            t.core = s;
            return t;
        }
    }
    return Taken{};
}

Result<WaitSetCore::Taken> WaitSetCore::next_for(std::chrono::nanoseconds timeout) noexcept {
    std::array<SubscriberCore*, kMaxSubscriptions> cores{};
    const std::size_t n = live_.size();
    if (n == 0) return fail(Errc::invalid_argument, "the WaitSet has no subscriptions to wait on");
    for (std::size_t k = 0; k < n; ++k) cores[k] = subs_[live_[k]].get();
    end_poll();
    return Parking::wait<Taken>(std::span<SubscriberCore* const>(cores.data(), n), wait_, waiting_, timeout, wakeups_,
                                [this] { return try_next(); });
}

Result<int> WaitSetCore::descriptor() {
    if (!poller_) {
        auto p = Poller::open();
        if (!p) return std::unexpected(std::move(p.error()));
        poller_ = std::move(*p);
    }
    return poller_->descriptor();
}

Result<bool> WaitSetCore::prepare_poll() {
    if (auto fd = descriptor(); !fd) return std::unexpected(std::move(fd.error()));
    if (poller_->armed()) return true;
    polled_.clear();
    for (std::size_t i : live_) polled_.push_back(subs_[i].get());
    return poller_->arm(polled_);
}

void WaitSetCore::end_poll() noexcept {
    if (poller_ && poller_->armed() && poller_->disarm(polled_)) ++wakeups_;
}

}  // namespace rvoip::events::detail
