#include "proto/channel.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace rvoip::events::proto {

Status send_frame(int sock, std::span<const std::byte> frame, std::span<const int> fds) {
    if (fds.size() > kMaxFds) return fail(Errc::internal, "too many descriptors for one frame");
    iovec iov{const_cast<std::byte*>(frame.data()), frame.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
    if (!fds.empty()) {
        msg.msg_control = ctrl;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    for (;;) {
        ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n == static_cast<ssize_t>(frame.size())) return {};
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return fail(Errc::closed, "peer closed the control socket");
        return fail(Errc::broker_unavailable, std::string("cannot send a control frame: ") + std::strerror(errno));
    }
}

Status send_message(int sock, const Message& m, std::span<const int> fds) { return send_frame(sock, encode(m), fds); }

void close_fds(std::vector<int>& fds) noexcept {
    for (int fd : fds) ::close(fd);
    fds.clear();
}

Result<Frame> recv_frame(int sock, int flags) {
    Frame f;
    f.bytes.resize(kMaxFrame + 1);  // one spare byte detects oversize datagrams (MSG_TRUNC)
    iovec iov{f.bytes.data(), f.bytes.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
    msg.msg_control = ctrl;
    msg.msg_controllen = sizeof ctrl;
    ssize_t n;
    do n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == ECONNRESET) return fail(Errc::closed, "peer reset the control socket");
        if (errno == EAGAIN || errno == EWOULDBLOCK) return fail(Errc::would_block);
        return fail(Errc::broker_unavailable, std::string("cannot read the control socket: ") + std::strerror(errno));
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < count; ++i) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                f.fds.push_back(fd);
            }
        }
    }
    if (n == 0) {
        close_fds(f.fds);
        return fail(Errc::closed, "peer closed the control socket");
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        close_fds(f.fds);
        return fail(Errc::malformed, "control frame larger than 64 KiB or with too many descriptors");
    }
    f.bytes.resize(static_cast<std::size_t>(n));
    return f;
}

std::string default_socket_path() {
    if (const char* s = std::getenv("RVOIP_EVENTS_SOCKET"); s && *s) return s;
    if (::geteuid() == 0) return "/run/rvoip-events/broker.sock";
    if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/rvoip-events/broker.sock";
    return "/tmp/rvoip-events-" + std::to_string(::geteuid()) + "/broker.sock";
}

bool private_socket_dir(const std::string& socket_path) {
    const std::string dir = socket_path.substr(0, socket_path.rfind('/'));
    if (dir == "/tmp/rvoip-events-" + std::to_string(::geteuid())) return true;
    const char* x = std::getenv("XDG_RUNTIME_DIR");
    return x && *x && socket_path.starts_with(std::string(x) + "/");
}

Status check_private_dir(const std::string& dir) {
    struct stat st{};
    if (::lstat(dir.c_str(), &st) != 0) return fail(Errc::broker_unavailable, "socket directory '" + dir + "' does not exist");
    if (!S_ISDIR(st.st_mode)) return fail(Errc::permission_denied, "socket directory '" + dir + "' is not a directory");
    if (st.st_uid != ::geteuid())
        return fail(Errc::permission_denied, "socket directory '" + dir + "' belongs to uid " + std::to_string(st.st_uid) +
                                                 ", not to this user: another user may have made it; refusing it");
    if (st.st_mode & 077) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
        return fail(Errc::permission_denied, "socket directory '" + dir + "' has mode " + mode + "; it must be 0700");
    }
    return {};
}

}  // namespace rvoip::events::proto
