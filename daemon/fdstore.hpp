// systemd's side of the daemon: readiness notifications and the file descriptor store that keeps sealed
// segments across broker restarts (sd_notify(3), sd_listen_fds(3), FileDescriptorStoreMax= in the unit).
#pragma once

#include "daemon/broker.hpp"

#include <string>

namespace rvoip::events::daemon {

// sd_notify(3) when $NOTIFY_SOCKET names a service manager; nothing otherwise.
void notify_service_manager(const std::string& state);

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
