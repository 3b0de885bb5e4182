#include "daemon/fdstore.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace rvoip::events::daemon {

void notify_service_manager(const std::string& state) { (void)::sd_notify(0, state.c_str()); }

std::chrono::microseconds watchdog_timeout() {
    std::uint64_t usec = 0;
    // unset_environment: they describe this process; a child we started must not think it is watched.
    const int r = ::sd_watchdog_enabled(1, &usec);
    if (r < 0) spdlog::warn("WATCHDOG_USEC or WATCHDOG_PID cannot be read ({}): no watchdog pings", std::strerror(-r));
    return std::chrono::microseconds(r > 0 ? usec : 0);
}

bool FdStore::available() {
    const char* s = std::getenv("NOTIFY_SOCKET");
    return s && *s;
}

std::vector<std::pair<std::string, int>> FdStore::take() {
    std::vector<std::pair<std::string, int>> out;
    char** names = nullptr;
    // unset_environment: the variables describe this process's start only, not a child's.
    const int n = ::sd_listen_fds_with_names(1, &names);
    if (n < 0) spdlog::warn("descriptors passed by the service manager cannot be read: {}", std::strerror(-n));
    for (int i = 0; i < n; ++i) {
        const int fd = SD_LISTEN_FDS_START + i;
        (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);  // passed without it: a child we start must not inherit them
        out.emplace_back(names && names[i] ? names[i] : "unknown", fd);
    }
    if (names) {
        for (int i = 0; names[i]; ++i) std::free(names[i]);
        std::free(names);
    }
    return out;
}

bool FdStore::keep(const std::string& name, int fd) {
    // FDPOLL=0: a memfd is not pollable, and there is nothing to watch it for.
    const std::string state = "FDSTORE=1\nFDPOLL=0\nFDNAME=" + name;
    return ::sd_pid_notify_with_fds(0, 0, state.c_str(), &fd, 1) > 0;
}

void FdStore::forget(const std::string& name) { notify_service_manager("FDSTOREREMOVE=1\nFDNAME=" + name); }

}  // namespace rvoip::events::daemon
