// rvoip-peer-uds: Unix domain sockets. One connected socket per run: the server side (subscriber / echoer) listens
// on <dir>/uds.sock and accepts, the client side connects. Sends block while the peer's receive queue is full
// (socket buffer backpressure). spin: MSG_DONTWAIT; block: blocking with SO_RCVTIMEO.
//   one message per send   SOCK_SEQPACKET (the kernel keeps message boundaries, so no framing); receives use
//                          recvmmsg, up to 64 messages per call in throughput (like rvoip-bench's subscriber,
//                          which receives in batches)
//   --batch N              SOCK_STREAM, the whole batch framed (length + message, back to back) in one write, as
//                          users batch over a stream socket; the receiver reads as much as is there and splits it.
//                          sendmmsg on SOCK_SEQPACKET would still queue one kernel buffer per message.
#include "bench/peers/peer_common.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace rvoip::bench::peers {
namespace {

class UdsLink final : public Link {
public:
    static Expected<std::unique_ptr<Link>> open(const LinkSpec& s) {
        auto link = std::unique_ptr<UdsLink>(new UdsLink(s));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        if (link->path_.size() >= sizeof addr.sun_path) return failure("socket path '" + link->path_ + "' is too long; set a shorter TMPDIR");
        std::strcpy(addr.sun_path, link->path_.c_str());
        const int fd = ::socket(AF_UNIX, (link->stream_ ? SOCK_STREAM : SOCK_SEQPACKET) | SOCK_CLOEXEC, 0);
        if (fd < 0) return failure(errno_text("socket"));
        if (s.side == Side::server) {
            link->listener_ = fd;
            if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return failure(errno_text("bind " + link->path_));
            if (::listen(fd, 1) != 0) return failure(errno_text("listen"));
        } else {
            link->fd_ = fd;
            // The server listens before we are started, so the connection is there at once.
            if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return failure(errno_text("connect " + link->path_));
            if (auto st = link->configure(); !st) return failure(st.error());
        }
        return std::unique_ptr<Link>(std::move(link));
    }

    ~UdsLink() override {
        if (fd_ >= 0) ::close(fd_);
        if (listener_ >= 0) {
            ::close(listener_);
            ::unlink(path_.c_str());
        }
    }

    Done established() override {
        pollfd p{listener_, POLLIN, 0};
        if (::poll(&p, 1, 30'000) != 1) return failure("no connection from the client within 30 s");
        fd_ = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd_ < 0) return failure(errno_text("accept"));
        ::close(listener_);  // one peer per run: nothing else may connect
        listener_ = -1;
        ::unlink(path_.c_str());
        return configure();
    }

    Done send(Message m) override {
        if (stream_) return send_batch({&m, 1});
        for (;;) {
            if (::send(fd_, m.data(), m.size(), MSG_NOSIGNAL) == ssize_t(m.size())) [[likely]]
                return {};
            if (errno != EINTR) return failure(errno_text("send"));
        }
    }

    // The whole batch framed into one buffer and written with one call (more only if the kernel takes part of it).
    Done send_batch(std::span<const Message> msgs) override {
        out_.resize(framed_size(msgs));
        write_frames(msgs, out_.data());
        for (std::size_t done = 0; done < out_.size();) {
            const ssize_t n = ::send(fd_, out_.data() + done, out_.size() - done, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return failure(errno_text("send"));
            done += std::size_t(n);
        }
        return {};
    }

    Expected<std::optional<Message>> try_receive() override { return stream_ ? next_frame(MSG_DONTWAIT) : next(MSG_DONTWAIT); }

    // The timeout is the socket's SO_RCVTIMEO (set in configure to the role's fixed 30 s).
    Expected<std::optional<Message>> wait_receive(std::chrono::milliseconds) override {
        return stream_ ? next_frame(0) : next(MSG_WAITFORONE);
    }

private:
    explicit UdsLink(const LinkSpec& s)
        : path_(s.dir + "/uds.sock"), size_(s.size), depth_(s.depth), vlen_(s.duplex ? 1 : 64), stream_(s.batch > 1), frames_(s.size) {
        // Room for several batches per read: the receiver takes whatever the socket holds.
        if (stream_) in_.resize(std::max<std::size_t>(256 * 1024, 4 * std::size_t(s.batch) * (kFrameHeader + s.size)));
    }

    Done configure() {
        const timeval tv{30, 0};
        if (::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) return failure(errno_text("SO_RCVTIMEO"));
        // --depth: the send buffer in bytes, which bounds what is in flight (the kernel doubles it for overhead).
        const int sndbuf = int(depth_);
        if (depth_ && ::setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) != 0) return failure(errno_text("SO_SNDBUF"));
        if (stream_) return {};
        // One byte more than a message, so a longer message shows as a wrong size instead of being cut silently.
        bufs_.assign(vlen_, std::vector<std::byte>(size_ + 1));
        riov_.resize(vlen_);
        rhdrs_.resize(vlen_);
        for (unsigned i = 0; i < vlen_; ++i) {
            riov_[i] = {bufs_[i].data(), bufs_[i].size()};
            rhdrs_[i] = {};
            rhdrs_[i].msg_hdr.msg_iov = &riov_[i];
            rhdrs_[i].msg_hdr.msg_iovlen = 1;
        }
        return {};
    }

    // SOCK_SEQPACKET: the next message from the last recvmmsg, or a new recvmmsg when those are used up.
    Expected<std::optional<Message>> next(int flags) {
        if (pos_ == count_) {
            int n;
            do n = ::recvmmsg(fd_, rhdrs_.data(), vlen_, flags, nullptr);
            while (n < 0 && errno == EINTR);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) return std::optional<Message>();
                return failure(errno_text("recvmmsg"));
            }
            if (n == 0) return failure("the peer closed the connection");
            pos_ = 0;
            count_ = unsigned(n);
        }
        const auto& h = rhdrs_[pos_];
        return std::optional<Message>(Message(bufs_[pos_++].data(), h.msg_len));
    }

    // SOCK_STREAM: the next whole frame of what was read; when none is left, the partial frame moves to the front of
    // the buffer and reads append what the socket holds until a frame is whole (nothing only when a read finds
    // nothing: MSG_DONTWAIT, or SO_RCVTIMEO passed).
    Expected<std::optional<Message>> next_frame(int flags) {
        for (;;) {
            auto m = frames_.next();
            if (!m || *m) return m;
            const auto rest = frames_.rest();
            if (rest.size() == in_.size()) return failure("a frame longer than the receive buffer");
            std::memmove(in_.data(), rest.data(), rest.size());
            ssize_t n;
            do n = ::recv(fd_, in_.data() + rest.size(), in_.size() - rest.size(), flags);
            while (n < 0 && errno == EINTR);
            if (n < 0) {
                frames_.reset({in_.data(), rest.size()});
                if (errno == EAGAIN || errno == EWOULDBLOCK) return std::optional<Message>();
                return failure(errno_text("recv"));
            }
            if (n == 0) return failure("the peer closed the connection");
            frames_.reset({in_.data(), rest.size() + std::size_t(n)});
        }
    }

    std::string path_;
    std::uint32_t size_, depth_;
    unsigned vlen_;
    bool stream_;
    int fd_ = -1, listener_ = -1;
    // SOCK_SEQPACKET receives
    std::vector<std::vector<std::byte>> bufs_;
    std::vector<iovec> riov_;
    std::vector<mmsghdr> rhdrs_;
    unsigned pos_ = 0, count_ = 0;
    // SOCK_STREAM
    std::vector<std::byte> out_, in_;
    FrameReader frames_;
};

// The send buffer bounds what is in flight: the kernel's default unless --depth gives one; reported either way.
Expected<std::unique_ptr<Resources>> prepare(const RunSpec& spec, Json& extra) {
    long wmem = spec.depth;
    if (!wmem) std::ifstream("/proc/sys/net/core/wmem_default") >> wmem;
    extra.str("socket", spec.batch > 1 ? "SOCK_STREAM" : "SOCK_SEQPACKET").num("sndbuf_bytes", wmem);
    return std::unique_ptr<Resources>();
}

}  // namespace
}  // namespace rvoip::bench::peers

int main(int argc, char** argv) {
    using namespace rvoip::bench::peers;
    System sys{.name = "uds",
               .transport = "Unix domain socket, one connection: SOCK_SEQPACKET, or SOCK_STREAM for batches",
               .default_depth = 0,
               .batching = "one framed write per batch (SOCK_STREAM)",
               .prepare = prepare,
               .open = UdsLink::open};
    return peer_main(argc, argv, sys);
}
