// What one broker allows, so that no client can take it down (issue 8): connections, topics, what one
// client may hold, the shared memory the broker allocates, and the lane sizes a client may ask for.
// Every limit has a daemon flag; a request that reaches one is refused with Errc::limit_reached and a
// message that names the limit, its value and the flag that raises it.
#pragma once

#include "proto/errc.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace rvoip::events::daemon {

struct Limits {
    // Connected clients (sessions with an open socket). Each costs two descriptors (socket, pidfd).
    std::uint32_t max_connections = 1024;
    std::uint32_t max_topics = 4096;
    // Per client (one connection): topics it created, publisher and subscriber slots it holds. As many as
    // the broker's topics by default: one process may well publish or follow every event type of a node
    // (a recorder, a bridge), and what protects the broker is max_topics, max_connections and
    // max_shm_bytes; an operator who does not trust every client lowers these.
    std::uint32_t max_topics_per_client = 4096;
    std::uint32_t max_publishers_per_client = 4096;
    std::uint32_t max_subscribers_per_client = 4096;
    // Bytes of /dev/shm the broker allocates across its segments (topics and doorbells). 0: automatic,
    // 4 GiB or half of /dev/shm's size, whichever is smaller: /dev/shm is a tmpfs that shares the host's
    // memory with every other program. A topic with the default lanes takes about 1.53 MiB, so 4 GiB is
    // ~2,600 default topics; topics given big rings count for more.
    std::uint64_t max_shm_bytes = 0;
    // What a client may ask for when it creates a topic (the broker's own defaults are the operator's).
    std::uint64_t max_lane_capacity = 64ull << 20;
    std::uint32_t max_event = 1u << 20;
};

// Every limit under its configuration key, which is also its flag with dashes (--max-topics): one list
// for the configuration file's [limits] table and the reload's log of what changed. `L` is Limits or
// const Limits; `f(key, field)` sees a std::uint32_t or std::uint64_t field.
template <class L, class F>
void for_each_limit(L& l, F&& f) {
    f("max_connections", l.max_connections);
    f("max_topics", l.max_topics);
    f("max_topics_per_client", l.max_topics_per_client);
    f("max_publishers_per_client", l.max_publishers_per_client);
    f("max_subscribers_per_client", l.max_subscribers_per_client);
    f("max_shm_bytes", l.max_shm_bytes);
    f("max_lane_bytes", l.max_lane_capacity);
    f("max_event_bytes", l.max_event);
}

constexpr std::uint32_t kMaxConnectionsCeiling = 65536;
constexpr std::uint32_t kMaxTopicsCeiling = 4096;  // topic ids index a vector; adoption stops here too
constexpr std::uint64_t kAutoShmCap = 4ull << 30;

// The limit in force for max_shm_bytes: the configured value, or the automatic one (see Limits).
std::uint64_t effective_shm_limit(const Limits& l);

Status validate(const Limits& l);

// "<what>: the limit is <value> (--<flag> raises it)", as Errc::limit_reached.
Error limit_reached(std::string_view what, std::uint64_t value, std::string_view flag);

// Raises this process's RLIMIT_NOFILE soft limit to its hard limit, or sets it to `max_fds` when that
// is non-zero (tests: a broker that runs out of descriptors early). Returns the soft limit in force.
Result<std::uint64_t> set_fd_limit(std::uint64_t max_fds);

// Descriptors this process has open (/proc/self/fd; an embedded broker counts its host process's), and
// its RLIMIT_NOFILE soft limit (0: unlimited or unknown). For the status report.
std::uint64_t open_fds();
std::uint64_t fd_limit();

// At most a few log lines per window for one source (a client), so that a client that repeats a
// refused request cannot flood the log; what was dropped is counted and reported with the next line.
class LogBudget {
public:
    static constexpr std::uint32_t kBurst = 5;
    static constexpr std::int64_t kWindowNs = 10'000'000'000;
    // True when a line may be written now; then `dropped` holds how many were dropped before it.
    bool allow(std::int64_t now_ns, std::uint64_t& dropped) noexcept {
        if (now_ns - window_start_ >= kWindowNs) {
            window_start_ = now_ns;
            used_ = 0;
        }
        if (used_ >= kBurst) {
            ++dropped_;
            return false;
        }
        ++used_;
        dropped = dropped_;
        dropped_ = 0;
        return true;
    }

private:
    std::int64_t window_start_ = INT64_MIN / 2;
    std::uint32_t used_ = 0;
    std::uint64_t dropped_ = 0;
};

}  // namespace rvoip::events::daemon
