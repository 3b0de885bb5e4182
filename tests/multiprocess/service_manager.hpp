// A stand-in for systemd's side of a Type=notify service, for brokers the tests start: it receives the
// broker's notifications on $NOTIFY_SOCKET and records each one (READY=1, STATUS=, WATCHDOG=1, ...),
// keeps the descriptors it stores (FDSTORE=1, FDNAME=, FDSTOREREMOVE=1) and passes them to the next
// broker the way systemd passes its fd store to a restarted service (descriptors from 3 on, LISTEN_FDS,
// LISTEN_FDNAMES, LISTEN_PID; sd_listen_fds(3)). With a watchdog set it asks for pings as WatchdogSec=
// does (WATCHDOG_USEC, WATCHDOG_PID; sd_watchdog_enabled(3)).
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace rvoip::events::test {

// One datagram a service sent, as received (its lines joined by '\n'), and when.
struct Notification {
    std::string text;
    std::chrono::steady_clock::time_point at;
    // Whether `line` is one of its lines ("READY=1"), or the start of one ("STATUS=").
    bool has(std::string_view line) const {
        std::istringstream lines(text);
        for (std::string l; std::getline(lines, l);)
            if (line.ends_with('=') ? l.starts_with(line) : l == line) return true;
        return false;
    }
};

// What a service started now gets: variables added to the environment, descriptors (as 3, 4, ...) and the
// variables that must name the service's own pid (LISTEN_PID, WATCHDOG_PID).
struct Activation {
    std::vector<std::string> env;
    std::vector<int> fds;
    std::vector<std::string> pid_vars;
};

class ServiceManager {
public:
    explicit ServiceManager(std::filesystem::path socket) : path_(std::move(socket)) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd_ >= 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
        REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        thread_ = std::thread([this] { serve(); });
    }
    ServiceManager(const ServiceManager&) = delete;
    ~ServiceManager() {
        stop_ = true;
        thread_.join();
        ::close(fd_);
        for (auto& [name, fd] : store_) ::close(fd);
    }

    const std::filesystem::path& socket() const { return path_; }

    // What a service started now gets. The descriptors are copies the caller closes once the service has them.
    Activation activation() {
        drain();
        std::lock_guard lock(mu_);
        Activation a;
        a.env.push_back("NOTIFY_SOCKET=" + path_.string());
        std::string names;
        for (auto& [name, fd] : store_) {
            a.fds.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
            names += (names.empty() ? "" : ":") + name;
        }
        if (!a.fds.empty()) {
            a.env.push_back("LISTEN_FDS=" + std::to_string(a.fds.size()));
            a.env.push_back("LISTEN_FDNAMES=" + names);
        }
        if (watchdog_.count() > 0) {
            a.env.push_back("WATCHDOG_USEC=" + std::to_string(watchdog_.count()));
            a.pid_vars.push_back("WATCHDOG_PID");
        }
        return a;
    }
    // WatchdogSec= for the services started from now on (zero: none).
    void watchdog(std::chrono::microseconds timeout) {
        std::lock_guard lock(mu_);
        watchdog_ = timeout;
    }
    // Called with each notification's text as it arrives, on the manager's thread (it must not call the
    // manager): for a check that must happen at that very moment.
    void on_notification(std::function<void(const std::string&)> f) {
        std::lock_guard lock(mu_);
        hook_ = std::move(f);
    }
    // Every notification received so far, oldest first.
    std::vector<Notification> notifications() {
        drain();
        std::lock_guard lock(mu_);
        return received_;
    }
    // Waits up to `timeout` until `done(notifications())`; returns the notifications then.
    std::vector<Notification> wait_for(const std::function<bool(const std::vector<Notification>&)>& done,
                                       std::chrono::seconds timeout = std::chrono::seconds(60)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            auto v = notifications();
            if (done(v) || std::chrono::steady_clock::now() > deadline) return v;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    std::vector<std::string> stored() {
        drain();
        std::lock_guard lock(mu_);
        std::vector<std::string> v;
        for (auto& [name, fd] : store_) v.push_back(name);
        return v;
    }
    // A copy of the descriptor stored under `name` (-1 if none), for a test to inspect or damage.
    int copy(const std::string& name) {
        drain();
        std::lock_guard lock(mu_);
        for (auto& [n, fd] : store_)
            if (n == name) return ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
        return -1;
    }
    // Stores `fd` as if the service had (a test planting what a broker must refuse). Takes ownership.
    void put(const std::string& name, int fd) {
        std::lock_guard lock(mu_);
        store_.emplace_back(name, fd);
    }
    // What a service manager does when the unit stops for good: the store is emptied.
    void flush() {
        drain();
        std::lock_guard lock(mu_);
        for (auto& [name, fd] : store_) ::close(fd);
        store_.clear();
    }

private:
    // Everything sent before this call has been taken in.
    void drain() {
        const auto target = ++drain_requests_;
        while (drained_.load() < target) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    void serve() {
        while (!stop_) {
            pollfd p{fd_, POLLIN, 0};
            const std::uint64_t asked = drain_requests_.load();
            if (::poll(&p, 1, 5) > 0) receive();
            else drained_.store(asked);  // nothing queued: every request made before the poll is served
        }
    }
    void receive() {
        char text[4096];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 64)];
        iovec iov{text, sizeof text - 1};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        const ssize_t n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0) return;
        text[n] = '\0';
        const auto at = std::chrono::steady_clock::now();
        std::vector<int> fds;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
                for (std::size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++i)
                    fds.push_back(reinterpret_cast<int*>(CMSG_DATA(c))[i]);
        bool store = false, remove = false;
        std::string name = "stored";  // systemd's default FDNAME
        std::istringstream lines(text);
        for (std::string l; std::getline(lines, l);) {
            if (l == "FDSTORE=1") store = true;
            if (l == "FDSTOREREMOVE=1") remove = true;
            if (l.starts_with("FDNAME=")) name = l.substr(7);
        }
        std::lock_guard lock(mu_);
        received_.push_back({text, at});
        if (hook_) hook_(text);
        if (remove) {
            for (auto it = store_.begin(); it != store_.end();) {
                if (it->first == name) {
                    ::close(it->second);
                    it = store_.erase(it);
                } else {
                    ++it;
                }
            }
        }
        for (int fd : fds) {
            if (store) store_.emplace_back(name, fd);
            else ::close(fd);
        }
    }

    std::filesystem::path path_;
    int fd_ = -1;
    std::mutex mu_;
    std::vector<std::pair<std::string, int>> store_;
    std::vector<Notification> received_;
    std::function<void(const std::string&)> hook_;
    std::chrono::microseconds watchdog_{0};
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> drain_requests_{0}, drained_{0};
    std::thread thread_;
};

}  // namespace rvoip::events::test
