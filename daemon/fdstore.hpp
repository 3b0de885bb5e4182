// systemd's side of the daemon: notifications (readiness, status, watchdog) and the file descriptor store
// that keeps sealed segments across broker restarts (sd_notify(3), sd_watchdog_enabled(3),
// sd_listen_fds(3); Type=notify, WatchdogSec= and FileDescriptorStoreMax= in the unit).
#pragma once

#include "daemon/broker.hpp"

#include <chrono>
#include <string>

namespace rvoip::events::daemon {

// sd_notify(3) when $NOTIFY_SOCKET names a service manager; nothing otherwise.
void notify_service_manager(const std::string& state);

// The watchdog timeout the service manager set for this very process (WATCHDOG_USEC, and WATCHDOG_PID
// naming us); zero when there is none. The variables are removed from the environment.
std::chrono::microseconds watchdog_timeout();

// The service manager's file descriptor store as the broker's SegmentKeeper. Descriptors stored there
// are passed back to the next broker of the unit (LISTEN_FDS, LISTEN_FDNAMES) after a crash or a
// restart; a stop of the unit empties the store.
class FdStore final : public SegmentKeeper {
public:
    // Whether a service manager that may hold descriptors for us is there ($NOTIFY_SOCKET).
    static bool available();
    std::vector<std::pair<std::string, int>> take() override;
    bool keep(const std::string& name, int fd) override;
    void forget(const std::string& name) override;
};

}  // namespace rvoip::events::daemon
