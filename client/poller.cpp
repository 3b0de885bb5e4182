// Poller: a WaitSet's pollable descriptor (client/poller.hpp), on liburing.
#include "client/poller.hpp"

#include <liburing.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace rvoip::events::detail {
namespace {
// io_uring opcodes of Linux 6.7 that liburing 2.3's headers do not name yet.
constexpr std::uint8_t kOpFutexWaitv = 53;  // IORING_OP_FUTEX_WAITV
constexpr std::uint64_t kWait = 1, kTimeout = 2, kCancel = 3;  // user_data of our requests
}  // namespace

struct Poller::Ring {
    io_uring ring{};
    std::array<futex_waitv, shm::kMaxWaitv> waitv{};
    __kernel_timespec nap{};
};

Result<std::unique_ptr<Poller>> Poller::open() {
    auto p = std::unique_ptr<Poller>(new Poller());
    p->ring_ = std::make_unique<Ring>();
    if (const int rc = io_uring_queue_init(8, &p->ring_->ring, 0); rc < 0) {
        p->ring_.reset();
        return fail(rc == -ENOSYS || rc == -EPERM ? Errc::unsupported : Errc::internal,
                    std::string("a WaitSet descriptor needs io_uring: ") + std::strerror(-rc));
    }
    io_uring_probe* probe = io_uring_get_probe_ring(&p->ring_->ring);
    const bool futex = probe && io_uring_opcode_supported(probe, kOpFutexWaitv);
    if (probe) io_uring_free_probe(probe);
    if (!futex) return fail(Errc::unsupported, "a WaitSet descriptor needs io_uring's FUTEX_WAITV (Linux 6.7 or later)");
    return p;
}

Poller::~Poller() {
    if (!ring_) return;
    // Reap what is still in flight before the ring goes (io_uring_queue_exit cancels it anyway).
    io_uring_queue_exit(&ring_->ring);
}

int Poller::descriptor() const noexcept { return ring_->ring.ring_fd; }

Result<bool> Poller::arm(std::span<SubscriberCore* const> subs) noexcept {
    if (armed()) return true;
    const std::size_t n = std::min(subs.size(), shm::kMaxWaitv);
    if (n == 0) return fail(Errc::invalid_argument, "the WaitSet has no subscriptions to wait on");
    const bool claimed = Parking::announce(subs.first(n), bells_);
    parked_ = n;
    if (std::ranges::any_of(subs.first(n), [](const SubscriberCore* s) { return Parking::has_news(*s); }) || !Parking::quiet(bells_, n)) {
        Parking::unpark(subs.first(n));
        parked_ = 0;
        nap_ns_ = Parking::kFirstNapNs;
        return false;
    }
    auto& r = *ring_;
    for (std::size_t k = 0; k < n; ++k) {
        r.waitv[k] = futex_waitv{};
        r.waitv[k].val = bells_.seen[k];
        r.waitv[k].uaddr = reinterpret_cast<std::uintptr_t>(bells_.words[k]);
        r.waitv[k].flags = FUTEX_32;  // shared: the wakers are other processes
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&r.ring);
    io_uring_prep_rw(kOpFutexWaitv, sqe, 0, r.waitv.data(), static_cast<unsigned>(n), 0);
    io_uring_sqe_set_data64(sqe, kWait);
    inflight_ = 1;
    if (claimed) {  // a record is on its way without a ring: wake up after a nap, growing like the blocking wait's
        sqe->flags |= IOSQE_IO_LINK;
        r.nap.tv_sec = nap_ns_ / 1'000'000'000;
        r.nap.tv_nsec = nap_ns_ % 1'000'000'000;
        nap_ns_ = std::min<std::int64_t>(nap_ns_ * 2, Parking::kLastNapNs);
        io_uring_sqe* t = io_uring_get_sqe(&r.ring);
        io_uring_prep_link_timeout(t, &r.nap, 0);
        io_uring_sqe_set_data64(t, kTimeout);
        inflight_ = 2;
    } else {
        nap_ns_ = Parking::kFirstNapNs;
    }
    if (const int rc = io_uring_submit(&r.ring); rc < 0) {
        inflight_ = 0;
        Parking::unpark(subs.first(n));
        parked_ = 0;
        return fail(Errc::internal, std::string("io_uring_submit: ") + std::strerror(-rc));
    }
    return true;
}

bool Poller::disarm(std::span<SubscriberCore* const> subs) noexcept {
    if (!armed()) return false;
    auto& r = ring_->ring;
    bool rang = false, cancel_sent = false;
    while (inflight_ > 0) {
        io_uring_cqe* cqe = nullptr;
        if (io_uring_peek_cqe(&r, &cqe) != 0 || !cqe) {
            // The wait has not fired: cancel it, then wait for what is left to complete.
            if (!cancel_sent) {
                io_uring_sqe* c = io_uring_get_sqe(&r);
                io_uring_prep_cancel64(c, kWait, 0);
                io_uring_sqe_set_data64(c, kCancel);
                ++inflight_;
                cancel_sent = true;
                io_uring_submit(&r);
            }
            if (io_uring_wait_cqe(&r, &cqe) != 0 || !cqe) continue;
        }
        const auto what = io_uring_cqe_get_data64(cqe);
        // The wait's result: the index of the doorbell that rang, or -EAGAIN (one rang before it slept),
        // -ECANCELED (our cancel or the nap's timeout), -ETIME.
        if (what == kWait) rang = cqe->res >= 0 || cqe->res == -EAGAIN;
        io_uring_cqe_seen(&r, cqe);
        --inflight_;
    }
    const std::size_t n = std::min(parked_, subs.size());
    if (rang) Parking::count_rings(subs.first(n), bells_);
    Parking::unpark(subs.first(n));
    parked_ = 0;
    return rang;
}

}  // namespace rvoip::events::detail
