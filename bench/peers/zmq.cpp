// rvoip-peer-zmq: ZeroMQ over ipc:// (a Unix stream socket underneath, driven by one zmq I/O thread in each
// process). Throughput: PUSH (client, connects) -> PULL (server, binds). Latency: PAIR <-> PAIR. The high
// water marks are --depth messages on each side (zmq's default, 1000); PUSH and PAIR block at the high water
// mark rather than drop, and the subscriber's sequence check proves it. spin: zmq_recv(ZMQ_DONTWAIT) polled;
// block: zmq_recv with ZMQ_RCVTIMEO, as zmq's own perf/local_thr and local_lat receive. --batch N: the batch
// framed (length + message, back to back) into one zmq message, which the receiver splits.
#include "bench/peers/peer_common.hpp"

#include <algorithm>
#include <cerrno>

#include <zmq.h>

namespace rvoip::bench::peers {
namespace {

std::string zmq_text(const std::string& what) { return what + ": " + zmq_strerror(zmq_errno()); }

class ZmqLink final : public Link {
public:
    static Expected<std::unique_ptr<Link>> open(const LinkSpec& s) {
        auto link = std::unique_ptr<ZmqLink>(new ZmqLink(s));
        link->ctx_ = zmq_ctx_new();
        if (!link->ctx_) return failure(zmq_text("zmq_ctx_new"));
        const bool server = s.side == Side::server;
        const int type = s.duplex ? ZMQ_PAIR : server ? ZMQ_PULL : ZMQ_PUSH;
        link->sock_ = zmq_socket(link->ctx_, type);
        if (!link->sock_) return failure(zmq_text("zmq_socket"));
        const int hwm = int(s.depth), timeout_ms = 30'000;
        // A sender that cannot deliver within 30 s at the end gives up instead of hanging in zmq_ctx_term.
        for (auto [opt, v] : {std::pair{ZMQ_SNDHWM, hwm}, {ZMQ_RCVHWM, hwm}, {ZMQ_RCVTIMEO, timeout_ms}, {ZMQ_LINGER, timeout_ms}})
            if (zmq_setsockopt(link->sock_, opt, &v, sizeof v) != 0) return failure(zmq_text("zmq_setsockopt"));
        const std::string endpoint = "ipc://" + s.dir + "/zmq.sock";
        // The server binds before the client is started; the client's connect then finds it at once.
        if ((server ? zmq_bind(link->sock_, endpoint.c_str()) : zmq_connect(link->sock_, endpoint.c_str())) != 0)
            return failure(zmq_text((server ? "zmq_bind " : "zmq_connect ") + endpoint));
        return std::unique_ptr<Link>(std::move(link));
    }

    ~ZmqLink() override {
        if (sock_) zmq_close(sock_);
        if (ctx_) zmq_ctx_term(ctx_);  // waits (up to the linger time) until queued messages are delivered
    }

    Done send(Message m) override {
        if (framed_) return send_batch({&m, 1});
        return send_bytes(m);
    }

    // One zmq message per batch.
    Done send_batch(std::span<const Message> msgs) override {
        out_.resize(framed_size(msgs));
        write_frames(msgs, out_.data());
        return send_bytes(out_);
    }

    Expected<std::optional<Message>> try_receive() override { return receive(ZMQ_DONTWAIT); }
    // The timeout is the socket's ZMQ_RCVTIMEO (the role's fixed 30 s).
    Expected<std::optional<Message>> wait_receive(std::chrono::milliseconds) override { return receive(0); }

private:
    // One byte more than a message (or a framed batch), so a longer one shows as a wrong size (zmq_recv returns the
    // full size).
    explicit ZmqLink(const LinkSpec& s)
        : framed_(s.batch > 1), buf_((framed_ ? std::size_t(s.batch) * (kFrameHeader + s.size) : s.size) + 1), frames_(s.size) {}

    Done send_bytes(std::span<const std::byte> bytes) {
        while (zmq_send(sock_, bytes.data(), bytes.size(), 0) < 0)
            if (zmq_errno() != EINTR) return failure(zmq_text("zmq_send"));
        return {};
    }

    Expected<std::optional<Message>> receive(int flags) {
        if (framed_) {
            auto m = frames_.next();
            if (!m || *m) return m;
            if (!frames_.rest().empty()) return failure("a zmq message ends inside a frame");
        }
        int n;
        while ((n = zmq_recv(sock_, buf_.data(), buf_.size(), flags)) < 0) {
            if (zmq_errno() == EAGAIN) return std::optional<Message>();
            if (zmq_errno() != EINTR) return failure(zmq_text("zmq_recv"));
        }
        const Message got(buf_.data(), std::min<std::size_t>(std::size_t(n), buf_.size()));
        if (!framed_) return std::optional<Message>(got);
        if (got.size() == buf_.size()) return failure("a zmq message longer than a batch");
        frames_.reset(got);
        auto m = frames_.next();
        if (m && !*m) return failure("a zmq message without a whole frame");
        return m;
    }

    void* ctx_ = nullptr;
    void* sock_ = nullptr;
    bool framed_;
    std::vector<std::byte> buf_, out_;
    FrameReader frames_;
};

Expected<std::unique_ptr<Resources>> prepare(const RunSpec& spec, Json& extra) {
    int major = 0, minor = 0, patch = 0;
    zmq_version(&major, &minor, &patch);
    extra.str("zmq_version", std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch));
    extra.str("sockets", spec.duplex ? "PAIR/PAIR" : "PUSH/PULL").num("hwm", spec.depth);
    return std::unique_ptr<Resources>();
}

}  // namespace
}  // namespace rvoip::bench::peers

int main(int argc, char** argv) {
    using namespace rvoip::bench::peers;
    System sys{.name = "zmq",
               .transport = "ZeroMQ ipc:// (PUSH/PULL for throughput, PAIR for latency), one I/O thread per process",
               .default_depth = 1000,
               .batching = "one zmq message per batch",
               .threads_per_process = 2,
               .prepare = prepare,
               .open = ZmqLink::open};
    return peer_main(argc, argv, sys);
}
