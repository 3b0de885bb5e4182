#include "daemon/limits.hpp"

#include "daemon/broker_impl.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <dirent.h>
#include <sys/resource.h>
#include <sys/statvfs.h>

namespace rvoip::events::daemon {

std::uint64_t effective_shm_limit(const Limits& l) {
    if (l.max_shm_bytes) return l.max_shm_bytes;
    struct statvfs vfs{};
    if (::statvfs("/dev/shm", &vfs) != 0 || vfs.f_blocks == 0) return kAutoShmCap;
    return std::min(kAutoShmCap, std::uint64_t(vfs.f_blocks) * vfs.f_frsize / 2);
}

Status validate(const Limits& l) {
    auto bad = [](std::string what) { return fail(Errc::invalid_argument, "limits: " + what); };
    if (l.max_connections == 0 || l.max_connections > kMaxConnectionsCeiling)
        return bad("max connections must be 1.." + std::to_string(kMaxConnectionsCeiling));
    if (l.max_topics == 0 || l.max_topics > kMaxTopicsCeiling) return bad("max topics must be 1.." + std::to_string(kMaxTopicsCeiling));
    if (l.max_topics_per_client == 0 || l.max_publishers_per_client == 0 || l.max_subscribers_per_client == 0)
        return bad("per-client limits must be at least 1");
    if (l.max_lane_capacity == 0 || l.max_event == 0) return bad("lane limits must be at least 1");
    return {};
}

Error limit_reached(std::string_view what, std::uint64_t value, std::string_view flag) {
    return Error(Errc::limit_reached,
                 std::string(what) + ": the limit is " + std::to_string(value) + " (--" + std::string(flag) + " raises it)");
}

Result<std::uint64_t> set_fd_limit(std::uint64_t max_fds) {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return fail(Errc::internal, std::string("getrlimit: ") + std::strerror(errno));
    if (max_fds) {
        if (rl.rlim_max != RLIM_INFINITY && max_fds > rl.rlim_max)
            return fail(Errc::invalid_argument, "--max-fds " + std::to_string(max_fds) + " exceeds the hard limit of " +
                                                    std::to_string(rl.rlim_max) + " descriptors");
        rl.rlim_cur = max_fds;
    } else {
        rl.rlim_cur = rl.rlim_max;  // the soft limit is a default for programs that select(); we epoll
    }
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return fail(Errc::internal, std::string("setrlimit: ") + std::strerror(errno));
    return std::uint64_t(rl.rlim_cur);
}

std::uint64_t open_fds() {
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return 0;
    std::uint64_t n = 0;
    const std::string own = std::to_string(::dirfd(d));
    while (const dirent* e = ::readdir(d))
        if (e->d_name[0] != '.' && e->d_name != own) ++n;
    ::closedir(d);
    return n;
}

std::uint64_t fd_limit() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 0;
    return std::uint64_t(rl.rlim_cur);
}

Status Broker::Impl::admit_topic(const Session& s, const proto::OpenTopic& o) const {
    const auto& l = cfg.limits;
    if (topics.size() >= l.max_topics) return std::unexpected(limit_reached("the broker holds its maximum of topics", l.max_topics, "max-topics"));
    if (s.topics_created >= l.max_topics_per_client)
        return std::unexpected(limit_reached("this client created its maximum of topics", l.max_topics_per_client, "max-topics-per-client"));
    for (std::size_t i = 0; i < layout::kLanes; ++i) {
        const auto lane = std::string(to_string(Priority(i)));
        if (o.lanes[i].capacity > l.max_lane_capacity)
            return std::unexpected(limit_reached("the " + lane + " lane's capacity of " + std::to_string(o.lanes[i].capacity) +
                                                     " bytes is more than a client may ask for",
                                                 l.max_lane_capacity, "max-lane-bytes"));
        if (o.lanes[i].max_event > l.max_event)
            return std::unexpected(limit_reached("the " + lane + " lane's max event of " + std::to_string(o.lanes[i].max_event) +
                                                     " bytes is more than a client may ask for",
                                                 l.max_event, "max-event-bytes"));
    }
    return {};
}

Status Broker::Impl::admit_shm(const std::string& topic, std::uint64_t bytes) const {
    if (bytes <= shm_limit && shm_bytes <= shm_limit - bytes) return {};
    return std::unexpected(limit_reached("topic '" + topic + "' needs " + std::to_string(bytes) + " bytes of /dev/shm and the broker's segments hold " +
                                             std::to_string(shm_bytes) + " bytes already",
                                         shm_limit, "max-shm-bytes"));
}

Status Broker::Impl::admit_publisher(const Session& s) const {
    if (s.publishers.size() < cfg.limits.max_publishers_per_client) return {};
    return std::unexpected(limit_reached("this client holds its maximum of publishers", cfg.limits.max_publishers_per_client,
                                         "max-publishers-per-client"));
}

Status Broker::Impl::admit_subscriber(const Session& s) const {
    if (s.subscribers.size() < cfg.limits.max_subscribers_per_client) return {};
    return std::unexpected(limit_reached("this client holds its maximum of subscribers", cfg.limits.max_subscribers_per_client,
                                         "max-subscribers-per-client"));
}

}  // namespace rvoip::events::daemon
