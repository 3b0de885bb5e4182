// Internal: how a consumer waits for records, one subscription (Subscriber::receive) or many at once
// (WaitSet). The consumer side of the parking handshake; the publisher side is LaneWriter::notify
// (shm/lane.hpp) and the doorbell word's protocol is shm/doorbell.hpp. Modelled in tests/model/ring.pml:
// change them together.
#pragma once

#include "rvoip/detail/cores.hpp"
#include "shm/doorbell.hpp"
#include "shm/membarrier.hpp"

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
    // doorbell at once. `wakeups` counts the returns from a park. `state` is the caller's, kept
    // between waits.
    //
    // With wait.adaptive_spin, state.spin is how long this wait spins: halved when the spin ends in a
    // park anyway, doubled (up to wait.spin) when it catches an event or a park is rung within what a
    // full spin would have covered. A consumer fed in bursts spins; one woken now and then stops paying
    // a spin per wake-up.
    //
    // With wait.batch_delay, a consumer whose last wait ended with a record (it is in a stream) first
    // naps that long without announcing its non-Critical lanes, so their publishers do not ring it,
    // and looks again; it parks only when a nap found nothing. A steady stream then costs one
    // wake-up per nap, not one per event (or per few events).
    template <class X, class Take>
    static Result<X> wait(std::span<SubscriberCore* const> subs, const WaitOptions& wait, WaitState& state,
                          std::chrono::nanoseconds timeout, std::uint64_t& wakeups, Take&& take) noexcept {
        auto r = take();
        if (!r || *r) return r;
        const bool forever = timeout.count() < 0;
        const std::int64_t deadline = forever ? 0 : shm::monotonic_ns() + timeout.count();
        auto expired = [&] { return !forever && shm::monotonic_ns() >= deadline; };
        auto until_deadline = [&](std::chrono::nanoseconds left) {  // `left` (negative: none) capped by the deadline
            if (forever) return left;
            const auto until = std::chrono::nanoseconds(std::max<std::int64_t>(0, deadline - shm::monotonic_ns()));
            return left.count() < 0 ? until : std::min(left, until);
        };
        auto grow = [&] {
            if (wait.adaptive_spin) state.spin = wait.spin;
        };
        auto got = [&](Result<X>& res) {  // a wait below ended with res: a record, an error, or nothing yet
            if (res && *res) state.streaming = true;
            return !res || *res;
        };

        // Spin phase (or pure busy-poll).
        const std::uint32_t rounds = wait.adaptive_spin ? std::min(state.spin, wait.spin) : wait.spin;
        for (std::uint32_t i = 0; wait.busy_poll || i < rounds; ++i) {
            if (std::ranges::any_of(subs, [](const SubscriberCore* s) { return s->any_ready(); })) {
                r = take();
                if (got(r)) {
                    if (r) grow();
                    return r;
                }
            }
            if ((i & 1023) == 1023 && expired()) return std::unexpected(Error(Errc::timeout));
            __builtin_ia32_pause();
        }
        if (wait.adaptive_spin) state.spin /= 2;
        const std::size_t n = std::min(subs.size(), shm::kMaxWaitv);
        const std::uint8_t lanes = wait.wake_lanes & 0xf;
        Bells b;

        // Nap (batch_delay, in a stream): only the Critical lane is announced, so a Critical event still
        // rings at once; the others are looked at when the nap ends.
        if (state.streaming && wait.batch_delay.count() > 0) {
            state.streaming = false;
            const std::uint8_t urgent = lanes & (1u << std::size_t(Priority::critical));
            announce(subs.first(n), b, urgent);
            r = take();
            if (!got(r)) {
                if (const auto left = until_deadline(wait.batch_delay); left.count() > 0 && quiet(b, n) && sleep_on(b, n, left)) {
                    ++wakeups;  // a Critical ring
                    count_rings(subs.first(n), b);
                }
                unpark(subs.first(n), urgent);
                r = take();
                if (got(r)) return r;
                if (expired()) return std::unexpected(Error(Errc::timeout));
            } else {
                unpark(subs.first(n), urgent);
                return r;
            }
        }

        const std::int64_t parked_at = wait.adaptive_spin ? shm::monotonic_ns() : 0;
        // Park. Dekker handshake on (tail, parked mask) with LaneWriter, per subscription: we announce
        // (our bit, by a seq_cst RMW), then read the lanes' tails; a publisher claims (tail CAS), then
        // reads the mask after its commit. Both sides are seq_cst read-modify-writes followed by seq_cst
        // loads, so either the publisher sees our bit and rings, or we see its claim and do not sleep
        // past it. The publisher pays no fence of its own: its claim CAS is one. A claim we see but that
        // is not committed yet (a loan being built, a publisher between CAS and commit, a dead publisher
        // awaiting recovery) gets short, growing sleeps instead. With several subscriptions we announce
        // on all, then sleep only if no doorbell rang since: one futex_waitv covers them all.
        // Lanes outside wait.wake_lanes are not announced: their publishers do not ring us, and their
        // events wait for the next wake-up, at the latest wait.deferred_delay after we parked.
        const bool deferring = lanes != 0xf;
        std::int64_t nap_ns = kFirstNapNs;
        for (;;) {
            const bool claimed = announce(subs.first(n), b, lanes);
            r = take();
            if (got(r)) {
                unpark(subs.first(n), lanes);
                return r;
            }
            std::chrono::nanoseconds left(-1);
            if (claimed) {
                left = std::chrono::nanoseconds(nap_ns);
                nap_ns = std::min<std::int64_t>(nap_ns * 2, kLastNapNs);
            }
            if (deferring) left = left.count() < 0 ? wait.deferred_delay : std::min<std::chrono::nanoseconds>(left, wait.deferred_delay);
            if (!forever && shm::monotonic_ns() >= deadline) {
                unpark(subs.first(n), lanes);
                return std::unexpected(Error(Errc::timeout));
            }
            left = until_deadline(left);
            if (quiet(b, n) && sleep_on(b, n, left)) {
                ++wakeups;
                count_rings(subs.first(n), b);
                if (wait.adaptive_spin && shm::monotonic_ns() - parked_at < std::int64_t(wait.spin) * kSpinRoundNs) grow();
            }
            unpark(subs.first(n), lanes);
            r = take();
            if (got(r)) return r;
            if (expired()) return std::unexpected(Error(Errc::timeout));
        }
    }

    // Adaptive spin: the least a spin that caught something grows to, and about what one round (a
    // pause and a look at the lanes) takes on current x86, to tell a park a full spin would have saved.
    static constexpr std::uint32_t kMinSpin = 16;
    static constexpr std::int64_t kSpinRoundNs = 40;

    // The pieces of the park, for waits that sleep elsewhere (Poller: an io_uring descriptor).
    static constexpr std::int64_t kFirstNapNs = 20'000;
    static constexpr std::int64_t kLastNapNs = 2'000'000;
    struct Bells {
        std::array<std::atomic<std::uint32_t>*, shm::kMaxWaitv> words{};
        std::array<std::uint32_t, shm::kMaxWaitv> seen{};  // after quiet(): the values to sleep on
    };
    // Reads each subscription's doorbell, then announces it parked on `lanes` (a bit per lane); true when
    // a claim is in flight on any of those lanes (its record may come without a ring: nap, do not sleep
    // for good). On an exclusive lane the publisher pays no barrier of its own: the membarrier here is
    // the other half of the handshake (shm/membarrier.hpp), and where the kernel refuses one we nap.
    static bool announce(std::span<SubscriberCore* const> subs, Bells& b, std::uint8_t lanes = 0xf) noexcept {
        bool exclusive = false;
        for (std::size_t k = 0; k < subs.size(); ++k) {
            SubscriberCore& s = *subs[k];
            b.words[k] = s.bell_;
            // acquire: pairs with ring()'s release. The flag bit is ours: a stale one (a wait that
            // timed out) is cleared from what we expect to see.
            b.seen[k] = s.bell_->load(std::memory_order_acquire) & ~shm::kSleeping;
            for (std::size_t l = 0; l < layout::kLanes; ++l)
                if (lanes & (1u << l)) {
                    s.map_.cursor_header->parked[l].fetch_or(bit(s));
                    exclusive |= s.map_.lanes[l].exclusive.load() != 0;  // seq_cst: after our bit (the broker marks it before the publisher starts)
                }
        }
        bool claimed = exclusive && !shm::membarrier_global();
        for (auto* s : subs)
            for (std::size_t l = 0; l < layout::kLanes; ++l)
                claimed |= (lanes & (1u << l)) && s->map_.lanes[l].position() != s->readers_[l].position();
        return claimed;
    }
    // After announce() and a look at the lanes: true when no doorbell rang since (each is now marked
    // sleeping, or still was), so sleeping on b.seen is safe.
    static bool quiet(Bells& b, std::size_t n) noexcept {
        for (std::size_t k = 0; k < n; ++k) {
            if (!shm::mark_sleeping(b.words[k], b.seen[k]) && b.words[k]->load(std::memory_order_acquire) != (b.seen[k] | shm::kSleeping))
                return false;
            b.seen[k] |= shm::kSleeping;
        }
        return true;
    }
    // After quiet(): sleeps on the doorbells until one rings, at most `left` (negative: forever). True
    // when a doorbell rang (not a timeout; spurious returns count as rung, the caller looks anyway).
    static bool sleep_on(const Bells& b, std::size_t n, std::chrono::nanoseconds left) noexcept {
        if (n == 1) return shm::futex_wait(b.words[0], b.seen[0], left);
        if (const int rc = shm::futex_wait_all({b.words.data(), n}, {b.seen.data(), n}, left); rc != ENOSYS) return rc != ETIMEDOUT;
        // A kernel before 5.16: nap on the first doorbell; the caller looks at all again.
        const auto nap = std::chrono::nanoseconds(1'000'000);
        return shm::futex_wait(b.words[0], b.seen[0], left.count() < 0 ? nap : std::min(left, nap));
    }
    static void unpark(std::span<SubscriberCore* const> subs, std::uint8_t lanes = 0xf) noexcept {
        for (auto* s : subs)
            for (std::size_t l = 0; l < layout::kLanes; ++l)
                if (lanes & (1u << l)) s->map_.cursor_header->parked[l].fetch_and(~bit(*s));
    }
    // Counts a wake-up on each subscription whose doorbell rang during the sleep.
    static void count_rings(std::span<SubscriberCore* const> subs, const Bells& b) noexcept {
        for (std::size_t k = 0; k < subs.size(); ++k) {
            auto& w = subs[k]->slot_->wakeups;
            if (b.words[k]->load(std::memory_order_relaxed) != b.seen[k])  // relaxed: a statistic
                w.store(w.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // relaxed: single writer, CLI reads
        }
    }
    // A record ready, or an eviction to report: a receive would not block.
    static bool has_news(const SubscriberCore& s) noexcept {
        // acquire: pairs with the broker's closing store of evictions in shm::evict_subscriber.
        return s.any_ready() || s.slot_->evictions.load(std::memory_order_acquire) != s.seen_evictions_;
    }

private:
    static std::uint64_t bit(const SubscriberCore& s) noexcept { return std::uint64_t(1) << s.slot_index_; }
};

}  // namespace rvoip::events::detail
