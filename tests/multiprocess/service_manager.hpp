// A stand-in for systemd's side of a Type=notify service, for brokers the tests start: it receives the
// broker's notifications on $NOTIFY_SOCKET, keeps the descriptors it stores (FDSTORE=1, FDNAME=,
// FDSTOREREMOVE=1) and passes them to the next broker the way systemd passes its fd store to a restarted
// service (descriptors from 3 on, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID; sd_listen_fds(3)).
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
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

    // The environment and descriptors a service started now gets. The descriptors are copies the caller
    // closes once the service has them.
    std::pair<std::vector<std::string>, std::vector<int>> activation() {
        drain();
        std::lock_guard lock(mu_);
        std::vector<std::string> env{"NOTIFY_SOCKET=" + path_.string()};
        std::vector<int> fds;
        std::string names;
        for (auto& [name, fd] : store_) {
            fds.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
            names += (names.empty() ? "" : ":") + name;
        }
        if (!fds.empty()) {
            env.push_back("LISTEN_FDS=" + std::to_string(fds.size()));
            env.push_back("LISTEN_FDNAMES=" + names);
        }
        return {env, fds};
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
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> drain_requests_{0}, drained_{0};
    std::thread thread_;
};

}  // namespace rvoip::events::test
