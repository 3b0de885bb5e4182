// The asymmetric fence of exclusive lanes: the parking handshake (client/parking.hpp) is a Dekker
// pattern, store-then-load on both sides. A shared lane's publisher gets its full barrier for free from
// the claim CAS; an exclusive publisher claims with a plain store and has none. Rather than pay an
// mfence per event, it leaves the barrier to the rare side: a consumer about to sleep on an exclusive
// lane calls membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), which makes every running thread of every
// registered process execute a full barrier before it returns (a thread that is not running passed one
// when it was switched out). Either the publisher's commit is then visible to the consumer's re-read of
// the lane, or the publisher's later look at the parked mask comes after the consumer's bit was set.
//
// Written by hand: no Debian-packaged library wraps membarrier(2) (liburcu uses it privately).
#pragma once

#include <atomic>
#include <cerrno>

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace rvoip::events::shm {

// Registers this process for global expedited membarriers, once. False when the kernel (or a seccomp
// filter) refuses: the exclusive publishers of this process then fence every publish themselves.
inline bool membarrier_registered() noexcept {
    static const bool registered = [] {
        const long cmds = ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
        if (cmds < 0 || !(cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) || !(cmds & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)) return false;
        return ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
    }();
    return registered;
}

// A full barrier on every running thread of every registered process. False when the kernel refuses:
// the caller must not sleep for good on an exclusive lane then (it naps and looks again).
inline bool membarrier_global() noexcept {
    return ::syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0;
}

}  // namespace rvoip::events::shm
