// Futex doorbells on shared memory.
//
// Written by hand because no Debian-packaged library exposes a process-shared futex on a word we place
// ourselves: Boost.Interprocess condition variables need a mutex, which a lock-free publisher must not
// take, and std::atomic::wait is process-private and cannot time out.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>

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

inline void futex_wake_all(std::atomic<std::uint32_t>* word) noexcept {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, 0x7fffffff, nullptr, nullptr, 0);
}

// Rings a doorbell: bump the word so a consumer that read the old value before parking does not sleep,
// then wake whoever already sleeps on it.
inline void ring(std::atomic<std::uint32_t>* word) noexcept {
    word->fetch_add(1, std::memory_order_release);  // release: pairs with the acquire load in Subscriber's park
    futex_wake_all(word);
}

}  // namespace rvoip::events::shm
