// Internal: a WaitSet's pollable descriptor. An io_uring whose one request is a FUTEX_WAITV on the
// doorbells of every subscription (Linux 6.7): its descriptor turns readable when a publisher rings one,
// so the set fits epoll, Boost.Asio or libuv loops with no thread of its own. The park handshake is
// Parking's (client/parking.hpp), the same as a blocking receive's.
#pragma once

#include "client/parking.hpp"

#include <memory>
#include <span>

namespace rvoip::events::detail {

class Poller {
public:
    // Errc::unsupported when the kernel cannot wait on futexes through io_uring.
    static Result<std::unique_ptr<Poller>> open();
    ~Poller();
    Poller(const Poller&) = delete;
    Poller& operator=(const Poller&) = delete;

    int descriptor() const noexcept;
    bool armed() const noexcept { return inflight_ != 0; }
    // Parks `subs` and arms the wait: true when armed (the descriptor turns readable on a ring, or after a
    // short nap while a claim is in flight); false when a receive would not block (do that first).
    Result<bool> arm(std::span<SubscriberCore* const> subs) noexcept;
    // Ends the armed wait, fired or not, and unparks `subs` (the same ones arm() had); true when a
    // doorbell rang. The descriptor is no longer readable afterwards.
    bool disarm(std::span<SubscriberCore* const> subs) noexcept;

private:
    struct Ring;
    Poller() = default;
    std::unique_ptr<Ring> ring_;
    Parking::Bells bells_;
    std::size_t parked_ = 0;  // subscriptions announced by the last arm
    int inflight_ = 0;        // requests submitted whose completions were not reaped yet
    std::int64_t nap_ns_ = Parking::kFirstNapNs;
};

}  // namespace rvoip::events::detail
