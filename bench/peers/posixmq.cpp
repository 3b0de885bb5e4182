// rvoip-peer-posixmq: POSIX message queues (mq_open). The parent creates the queues (client->server, and
// server->client for latency) with mq_maxmsg = the depth and mq_msgsize = --size, and unlinks them at the end.
// Senders block in mq_send while the queue is full. spin: the receiving descriptor is O_NONBLOCK and mq_receive
// is polled; block: mq_timedreceive, as users (and iceoryx's iceperf, which measures POSIX queues too) receive.
//
// Depth: 1024 messages by default, like boostmq's queue (zmq's high-water mark is 1000). The kernel caps
// mq_maxmsg at /proc/sys/fs/mqueue/msg_max (10 by default) without CAP_SYS_RESOURCE, which root in a container
// often lacks. Those limits belong to the IPC namespace, so the parent moves itself, and with it the roles it
// starts, into a private one (unshare(CLONE_NEWIPC), root only) and raises them there, for this run alone. The
// bytes of all of a user's queues are also capped by RLIMIT_MSGQUEUE; a default depth that does not fit is
// lowered to the largest that does, and the JSON says so (depth_wanted, depth_limited_by).
#include "bench/peers/peer_common.hpp"

#include <cerrno>
#include <ctime>
#include <fstream>

#include <fcntl.h>
#include <mqueue.h>
#include <sched.h>
#include <sys/resource.h>

namespace rvoip::bench::peers {
namespace {

constexpr std::uint32_t kDepth = 1024;

long read_limit(const char* name) {
    long v = 0;
    std::ifstream(std::string("/proc/sys/fs/mqueue/") + name) >> v;
    return v;
}

bool write_limit(const char* name, long value) {
    std::ofstream out(std::string("/proc/sys/fs/mqueue/") + name);
    out << value << '\n';
    out.flush();
    return bool(out);
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

// Creates the run's queues with `depth`; 0 on success, else the errno of the mq_open that failed (and none is
// left behind).
int create_queues(const RunSpec& spec, long depth, Queues& queues) {
    for (const char* dir : {"c2s", "s2c"}) {
        if (!spec.duplex && std::string_view(dir) == "s2c") break;
        auto name = queue_name(spec.name, dir);
        mq_attr attr{};
        attr.mq_maxmsg = depth;
        attr.mq_msgsize = spec.size;
        const mqd_t q = ::mq_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600, &attr);
        if (q == mqd_t(-1)) {
            const int e = errno;
            (void)queues.finish();
            return e;
        }
        ::mq_close(q);
        queues.names.push_back(name);
    }
    return 0;
}

// Raises the namespace's limits to what the run needs, in a private IPC namespace; says in `why_not` why it could
// not (not root, no CAP_SYS_ADMIN).
bool raise_limits(const RunSpec& spec, std::string& why_not) {
    if (::unshare(CLONE_NEWIPC) != 0) {
        why_not = errno_text("no private IPC namespace: unshare(CLONE_NEWIPC)");
        return false;
    }
    if (spec.depth > read_limit("msg_max") && !write_limit("msg_max", spec.depth)) {
        why_not = errno_text("cannot raise msg_max in the private IPC namespace");
        return false;
    }
    if (spec.size > read_limit("msgsize_max") && !write_limit("msgsize_max", spec.size)) {
        why_not = errno_text("cannot raise msgsize_max in the private IPC namespace");
        return false;
    }
    return true;
}

Expected<std::unique_ptr<Resources>> prepare(RunSpec& spec, Json& extra) {
    std::string why_not;
    bool private_ns = false;
    if (spec.depth > read_limit("msg_max") || spec.size > read_limit("msgsize_max")) private_ns = raise_limits(spec, why_not);
    const long msg_max = read_limit("msg_max"), msgsize_max = read_limit("msgsize_max");
    extra.str("ipc_namespace", private_ns ? "private" : "the host's").num("msg_max", msg_max).num("msgsize_max", msgsize_max);
    extra.str("limits", "/proc/sys/fs/mqueue");

    // A soft RLIMIT_MSGQUEUE below the hard one is ours to raise.
    rlimit rl{};
    if (::getrlimit(RLIMIT_MSGQUEUE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)::setrlimit(RLIMIT_MSGQUEUE, &rl);
    }
    if (::getrlimit(RLIMIT_MSGQUEUE, &rl) == 0) extra.num("rlimit_msgqueue_bytes", rl.rlim_cur == RLIM_INFINITY ? -1 : std::int64_t(rl.rlim_cur));

    const long wanted = spec.depth;
    long depth = wanted;
    std::string limited_by;
    if (!spec.depth_given && depth > msg_max) {
        depth = msg_max;
        limited_by = "msg_max " + std::to_string(msg_max) + " (" + why_not + ")";
    }
    auto queues = std::make_unique<Queues>();
    int e = create_queues(spec, depth, *queues);
    if (e == EMFILE && !spec.depth_given) {
        // Over RLIMIT_MSGQUEUE: the largest depth that fits, by bisection (each try creates and removes the queues).
        long fits = 0, fails = depth;
        while (fails - fits > 1) {
            const long mid = (fits + fails) / 2;
            if (create_queues(spec, mid, *queues) == 0) {
                fits = mid;
                (void)queues->finish();
            } else {
                fails = mid;
            }
        }
        if (fits > 0) {
            depth = fits;
            limited_by = "RLIMIT_MSGQUEUE " + std::to_string(rl.rlim_cur) + " bytes";
            e = create_queues(spec, depth, *queues);
        }
    }
    if (e != 0) {
        std::string hint;
        if (e == EINVAL)
            hint = " (depth " + std::to_string(depth) + " / size " + std::to_string(spec.size) + " must stay within msg_max " +
                   std::to_string(msg_max) + " / msgsize_max " + std::to_string(msgsize_max) +
                   (why_not.empty() ? std::string() : "; " + why_not) + ")";
        if (e == EMFILE) hint = " (depth x size exceeds RLIMIT_MSGQUEUE, see ulimit -q)";
        errno = e;
        return failure(errno_text("mq_open " + queue_name(spec.name, "c2s")) + hint);
    }
    spec.depth = std::uint32_t(depth);
    if (depth < wanted) extra.num("depth_wanted", wanted).str("depth_limited_by", limited_by);
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
               .default_depth = kDepth,
               .prepare = prepare,
               .open = MqLink::open};
    return peer_main(argc, argv, sys);
}
