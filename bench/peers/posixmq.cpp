// rvoip-peer-posixmq: POSIX message queues (mq_open). The parent creates the queues (client->server, and
// server->client for latency) with mq_maxmsg = --depth and mq_msgsize = --size, and unlinks them at the end.
// Without CAP_SYS_RESOURCE the kernel caps these at /proc/sys/fs/mqueue/msg_max and msgsize_max, so the
// default depth is msg_max as read there (often 10). Senders block in mq_send while the queue is full.
// spin: the receiving descriptor is O_NONBLOCK and mq_receive is polled; block: mq_timedreceive.
#include "bench/peers/peer_common.hpp"

#include <cerrno>
#include <ctime>
#include <fstream>

#include <fcntl.h>
#include <mqueue.h>

namespace rvoip::bench::peers {
namespace {

long read_limit(const char* name) {
    long v = 0;
    std::ifstream(std::string("/proc/sys/fs/mqueue/") + name) >> v;
    return v;
}

std::string queue_name(const std::string& run, const char* dir) { return "/" + run + "-" + dir; }

// The queues of one run; unlinked when the run ends, whatever happened.
class Queues final : public Resources {
public:
    std::vector<std::string> names;
    ~Queues() override {
        for (auto& n : names) ::mq_unlink(n.c_str());
    }
    Done finish() override {
        Done result;
        for (auto& n : names)
            if (::mq_unlink(n.c_str()) != 0 && result) result = failure(errno_text("mq_unlink " + n));
        names.clear();
        return result;
    }
};

Expected<std::unique_ptr<Resources>> prepare(const RunSpec& spec, Json& extra) {
    const long msg_max = read_limit("msg_max"), msgsize_max = read_limit("msgsize_max");
    extra.num("msg_max", msg_max).num("msgsize_max", msgsize_max).str("limits", "/proc/sys/fs/mqueue");
    const long depth = spec.depth ? spec.depth : msg_max;
    auto queues = std::make_unique<Queues>();
    for (const char* dir : {"c2s", "s2c"}) {
        if (!spec.duplex && std::string_view(dir) == "s2c") break;
        auto name = queue_name(spec.name, dir);
        mq_attr attr{};
        attr.mq_maxmsg = depth;
        attr.mq_msgsize = spec.size;
        const mqd_t q = ::mq_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600, &attr);
        if (q == mqd_t(-1)) {
            const int e = errno;
            std::string hint;
            if (e == EINVAL)
                hint = " (depth " + std::to_string(depth) + " / size " + std::to_string(spec.size) + " must stay within msg_max " +
                       std::to_string(msg_max) + " / msgsize_max " + std::to_string(msgsize_max) + " without CAP_SYS_RESOURCE)";
            if (e == EMFILE) hint = " (depth x size exceeds RLIMIT_MSGQUEUE, see ulimit -q)";
            errno = e;
            return failure(errno_text("mq_open " + name) + hint);
        }
        ::mq_close(q);
        queues->names.push_back(name);
    }
    return std::unique_ptr<Resources>(std::move(queues));
}

class MqLink final : public Link {
public:
    static Expected<std::unique_ptr<Link>> open(const LinkSpec& s) {
        auto link = std::unique_ptr<MqLink>(new MqLink(s.size));
        const bool server = s.side == Side::server;
        // Only the receiving descriptor is non-blocking in spin mode: senders always block while full.
        const int rflags = O_RDONLY | O_CLOEXEC | (s.spin ? O_NONBLOCK : 0);
        const char* in = server ? "c2s" : "s2c";
        const char* out = server ? "s2c" : "c2s";
        if (server || s.duplex) {
            link->in_ = ::mq_open(queue_name(s.name, in).c_str(), rflags);
            if (link->in_ == mqd_t(-1)) return failure(errno_text("mq_open " + queue_name(s.name, in)));
        }
        if (!server || s.duplex) {
            link->out_ = ::mq_open(queue_name(s.name, out).c_str(), O_WRONLY | O_CLOEXEC);
            if (link->out_ == mqd_t(-1)) return failure(errno_text("mq_open " + queue_name(s.name, out)));
        }
        return std::unique_ptr<Link>(std::move(link));
    }

    ~MqLink() override {
        if (in_ != mqd_t(-1)) ::mq_close(in_);
        if (out_ != mqd_t(-1)) ::mq_close(out_);
    }

    Done send(Message m) override {
        while (::mq_send(out_, reinterpret_cast<const char*>(m.data()), m.size(), 0) != 0)
            if (errno != EINTR) return failure(errno_text("mq_send"));
        return {};
    }

    Expected<std::optional<Message>> try_receive() override {
        ssize_t n;
        do n = ::mq_receive(in_, reinterpret_cast<char*>(buf_.data()), buf_.size(), nullptr);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == EAGAIN) return std::optional<Message>();
            return failure(errno_text("mq_receive"));
        }
        return std::optional<Message>(Message(buf_.data(), std::size_t(n)));
    }

    Expected<std::optional<Message>> wait_receive(std::chrono::milliseconds timeout) override {
        timespec deadline;
        ::clock_gettime(CLOCK_REALTIME, &deadline);  // mq_timedreceive takes a CLOCK_REALTIME deadline
        deadline.tv_sec += timeout.count() / 1000;
        deadline.tv_nsec += (timeout.count() % 1000) * 1'000'000;
        if (deadline.tv_nsec >= 1'000'000'000) deadline.tv_sec += 1, deadline.tv_nsec -= 1'000'000'000;
        ssize_t n;
        do n = ::mq_timedreceive(in_, reinterpret_cast<char*>(buf_.data()), buf_.size(), nullptr, &deadline);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == ETIMEDOUT) return std::optional<Message>();
            return failure(errno_text("mq_timedreceive"));
        }
        return std::optional<Message>(Message(buf_.data(), std::size_t(n)));
    }

private:
    // mq_receive needs a buffer of at least mq_msgsize, which is the message size.
    explicit MqLink(std::uint32_t size) : buf_(size) {}

    mqd_t in_ = mqd_t(-1), out_ = mqd_t(-1);
    std::vector<std::byte> buf_;
};

}  // namespace
}  // namespace rvoip::bench::peers

int main(int argc, char** argv) {
    using namespace rvoip::bench::peers;
    System sys{.name = "posixmq",
               .transport = "POSIX message queue (mq_send / mq_receive), one queue per direction, priority 0",
               .default_depth = std::uint32_t(read_limit("msg_max")),
               .prepare = prepare,
               .open = MqLink::open};
    return peer_main(argc, argv, sys);
}
