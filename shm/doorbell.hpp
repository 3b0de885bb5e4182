// Futex doorbells on shared memory.
//
// Written by hand because no Debian-packaged library exposes a process-shared futex on a word we place
// ourselves: Boost.Interprocess condition variables need a mutex, which a lock-free publisher must not
// take, and std::atomic::wait is process-private and cannot time out.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <span>

#include "shm/clock.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace rvoip::events::shm {

// Sleeps while *word == expected, at most `timeout` (negative: forever). Returns false on timeout.
// Spurious returns are allowed; the caller re-checks its condition.
inline bool futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected, std::chrono::nanoseconds timeout) noexcept {
    timespec ts{};
    timespec* tsp = nullptr;
    if (timeout.count() >= 0) {
        ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
        ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
        tsp = &ts;
    }
    // Shared (not FUTEX_PRIVATE_FLAG): waiter and waker live in different processes.
    long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, expected, tsp, nullptr, 0);
    return !(r == -1 && errno == ETIMEDOUT);
}

// Sleeps while every words[i] == expected[i] (one wait on all of them: futex_waitv, Linux 5.16), at
// most `timeout` (negative: forever). Spurious returns are allowed. Returns 0, ETIMEDOUT, or ENOSYS
// when the kernel has no futex_waitv.
constexpr std::size_t kMaxWaitv = 128;  // FUTEX_WAITV_MAX
inline int futex_wait_all(std::span<std::atomic<std::uint32_t>* const> words, std::span<const std::uint32_t> expected,
                          std::chrono::nanoseconds timeout) noexcept {
    std::array<futex_waitv, kMaxWaitv> w{};
    const std::size_t n = std::min(words.size(), kMaxWaitv);
    for (std::size_t i = 0; i < n; ++i) {
        w[i].val = expected[i];
        w[i].uaddr = reinterpret_cast<std::uintptr_t>(words[i]);
        w[i].flags = FUTEX_32;  // shared (no FUTEX_PRIVATE_FLAG): the wakers are other processes
    }
    timespec ts{};
    timespec* tsp = nullptr;
    if (timeout.count() >= 0) {  // futex_waitv takes an absolute time
        const std::int64_t at = monotonic_ns() + timeout.count();
        ts.tv_sec = static_cast<time_t>(at / 1'000'000'000);
        ts.tv_nsec = static_cast<long>(at % 1'000'000'000);
        tsp = &ts;
    }
    const long r = ::syscall(SYS_futex_waitv, w.data(), static_cast<unsigned>(n), 0u, tsp, CLOCK_MONOTONIC);
    if (r == -1 && errno == ENOSYS) return ENOSYS;
    return r == -1 && errno == ETIMEDOUT ? ETIMEDOUT : 0;
}

inline void futex_wake_all(std::atomic<std::uint32_t>* word) noexcept {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, 0x7fffffff, nullptr, nullptr, 0);
}

// A doorbell word is a ring counter (bits 1..31) plus a "sleeping" flag (bit 0) that its consumer sets,
// by CAS from the value it last saw, just before FUTEX_WAIT on the flagged value.
constexpr std::uint32_t kSleeping = 1;

// Rings a doorbell: bump the counter and clear the flag in one CAS, so a consumer that is about to sleep
// sees a changed word (its CAS or its FUTEX_WAIT fails) and one that sleeps is woken. The wake syscall is
// made only when the flag was set: further publishes before the consumer runs again cost one CAS, not a
// syscall each.
inline void ring(std::atomic<std::uint32_t>* word) noexcept {
    std::uint32_t old = word->load(std::memory_order_relaxed);  // relaxed: the CAS below validates it
    // release: pairs with the acquire load of the consumer's park (Parking::wait, client/parking.hpp)
    while (!word->compare_exchange_weak(old, (old + 2) & ~kSleeping, std::memory_order_release, std::memory_order_relaxed)) {
    }
    if (old & kSleeping) futex_wake_all(word);
}

// Consumer: marks itself sleeping if the word still holds `seen` (the value read before announcing
// itself parked). False when a ring came in between: do not sleep.
inline bool mark_sleeping(std::atomic<std::uint32_t>* word, std::uint32_t seen) noexcept {
    std::uint32_t expected = seen;
    return word->compare_exchange_strong(expected, seen | kSleeping, std::memory_order_acq_rel, std::memory_order_acquire);
}

}  // namespace rvoip::events::shm
