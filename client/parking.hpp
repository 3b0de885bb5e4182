// Internal: how a consumer waits for records, one subscription (Subscriber::receive) or many at once
// (WaitSet). The consumer side of the parking handshake; the publisher side is LaneWriter::notify
// (shm/lane.hpp) and the doorbell word's protocol is shm/doorbell.hpp. Modelled in tests/model/ring.pml:
// change them together.
#pragma once

#include "rvoip/detail/cores.hpp"
#include "shm/doorbell.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <span>

namespace rvoip::events::detail {

class Parking {
public:
    // Waits up to `timeout` (negative: forever) until `take` (the caller's non-blocking try over `subs`,
    // which returns Result<X> with X testing true when it got a record) gives a record or an error.
    // Spins wait.spin rounds (forever with busy_poll) re-checking, then parks on every subscription's
    // doorbell at once. `wakeups` counts the returns from a park.
    template <class X, class Take>
    static Result<X> wait(std::span<SubscriberCore* const> subs, const WaitOptions& wait, std::chrono::nanoseconds timeout,
                          std::uint64_t& wakeups, Take&& take) noexcept {
        auto r = take();
        if (!r || *r) return r;
        const bool forever = timeout.count() < 0;
        const std::int64_t deadline = forever ? 0 : shm::monotonic_ns() + timeout.count();
        auto expired = [&] { return !forever && shm::monotonic_ns() >= deadline; };

        // Spin phase (or pure busy-poll).
        for (std::uint32_t i = 0; wait.busy_poll || i < wait.spin; ++i) {
            if (std::ranges::any_of(subs, [](const SubscriberCore* s) { return s->any_ready(); })) {
                r = take();
                if (!r || *r) return r;
            }
            if ((i & 1023) == 1023 && expired()) return std::unexpected(Error(Errc::timeout));
            __builtin_ia32_pause();
        }
        // Park. Dekker handshake on (tail, parked mask) with LaneWriter, per subscription: we announce
        // (our bit, by a seq_cst RMW), then read the lanes' tails; a publisher claims (tail CAS), then
        // reads the mask after its commit. Both sides are seq_cst read-modify-writes followed by seq_cst
        // loads, so either the publisher sees our bit and rings, or we see its claim and do not sleep
        // past it. The publisher pays no fence of its own: its claim CAS is one. A claim we see but that
        // is not committed yet (a loan being built, a publisher between CAS and commit, a dead publisher
        // awaiting recovery) gets short, growing sleeps instead. With several subscriptions we announce
        // on all, then sleep only if no doorbell rang since: one futex_waitv covers them all.
        const std::size_t n = std::min(subs.size(), shm::kMaxWaitv);
        std::array<std::atomic<std::uint32_t>*, shm::kMaxWaitv> bells{};
        std::array<std::uint32_t, shm::kMaxWaitv> seen{};
        auto unpark = [&] {
            for (std::size_t k = 0; k < n; ++k) subs[k]->map_.cursor_header->parked.fetch_and(~bit(*subs[k]));
        };
        std::int64_t nap_ns = 20'000;
        for (;;) {
            bool claimed = false;
            for (std::size_t k = 0; k < n; ++k) {
                SubscriberCore& s = *subs[k];
                bells[k] = s.bell_;
                // acquire: pairs with ring()'s release. The flag bit is ours: a stale one (a wait that
                // timed out) is cleared from what we expect to see.
                seen[k] = s.bell_->load(std::memory_order_acquire) & ~shm::kSleeping;
                s.map_.cursor_header->parked.fetch_or(bit(s));
            }
            for (std::size_t k = 0; k < n; ++k)
                for (std::size_t l = 0; l < layout::kLanes; ++l)
                    claimed |= subs[k]->map_.lanes[l].position() != subs[k]->readers_[l].position();
            r = take();
            if (!r || *r) {
                unpark();
                return r;
            }
            std::chrono::nanoseconds left(-1);
            if (claimed) {
                left = std::chrono::nanoseconds(nap_ns);
                nap_ns = std::min<std::int64_t>(nap_ns * 2, 2'000'000);
            }
            if (!forever) {
                const auto until = std::chrono::nanoseconds(deadline - shm::monotonic_ns());
                if (until.count() <= 0) {
                    unpark();
                    return std::unexpected(Error(Errc::timeout));
                }
                left = left.count() < 0 ? until : std::min(left, until);
            }
            // Sleep only if no doorbell rang since we read it: each is marked sleeping (or still is).
            bool quiet = true;
            for (std::size_t k = 0; k < n && quiet; ++k) {
                quiet = shm::mark_sleeping(bells[k], seen[k]) || bells[k]->load(std::memory_order_acquire) == (seen[k] | shm::kSleeping);
                seen[k] |= shm::kSleeping;
            }
            if (quiet) {
                bool rung = false;  // a return that is not a timeout
                if (n == 1) {
                    rung = shm::futex_wait(bells[0], seen[0], left);
                } else if (const int rc = shm::futex_wait_all({bells.data(), n}, {seen.data(), n}, left); rc != ENOSYS) {
                    rung = rc != ETIMEDOUT;
                } else {  // a kernel before 5.16: nap on the first doorbell and look at all again
                    const auto nap = std::chrono::nanoseconds(1'000'000);
                    rung = shm::futex_wait(bells[0], seen[0], left.count() < 0 ? nap : std::min(left, nap));
                }
                if (rung) ++wakeups;
                for (std::size_t k = 0; k < n; ++k) {
                    auto& w = subs[k]->slot_->wakeups;
                    if (bells[k]->load(std::memory_order_relaxed) != seen[k])  // relaxed: a statistic
                        w.store(w.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // relaxed: single writer, CLI reads
                }
            }
            unpark();
            r = take();
            if (!r || *r) return r;
            if (expired()) return std::unexpected(Error(Errc::timeout));
        }
    }

private:
    static std::uint64_t bit(const SubscriberCore& s) noexcept { return std::uint64_t(1) << s.slot_index_; }
};

}  // namespace rvoip::events::detail
