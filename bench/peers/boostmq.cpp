// rvoip-peer-boostmq: boost::interprocess::message_queue, a queue in POSIX shared memory guarded by a
// process-shared pthread mutex and condition variables. The parent creates the queues (client->server, and
// server->client for latency) with --depth messages of --size bytes, and removes them at the end. Senders
// block in send() while the queue is full. spin: try_receive() polled; block: timed_receive().
#include "bench/peers/peer_common.hpp"

#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>

namespace rvoip::bench::peers {
namespace {

namespace bip = boost::interprocess;

std::string queue_name(const std::string& run, const char* dir) { return run + "-" + dir; }

// The queues of one run; removed when the run ends, whatever happened.
class Queues final : public Resources {
public:
    std::vector<std::string> names;
    ~Queues() override {
        for (auto& n : names) bip::message_queue::remove(n.c_str());
    }
    Done finish() override {
        Done result;
        for (auto& n : names)
            if (!bip::message_queue::remove(n.c_str()) && result) result = failure("cannot remove message queue " + n);
        names.clear();
        return result;
    }
};

Expected<std::unique_ptr<Resources>> prepare(const RunSpec& spec, Json&) {
    auto queues = std::make_unique<Queues>();
    for (const char* dir : {"c2s", "s2c"}) {
        if (!spec.duplex && std::string_view(dir) == "s2c") break;
        auto name = queue_name(spec.name, dir);
        try {
            bip::message_queue q(bip::create_only, name.c_str(), spec.depth, spec.size);
        } catch (const bip::interprocess_exception& e) {
            return failure("cannot create message queue " + name + ": " + e.what());
        }
        queues->names.push_back(name);
    }
    return std::unique_ptr<Resources>(std::move(queues));
}

class BoostLink final : public Link {
public:
    static Expected<std::unique_ptr<Link>> open(const LinkSpec& s) {
        auto link = std::unique_ptr<BoostLink>(new BoostLink(s.size));
        const bool server = s.side == Side::server;
        const char* in = server ? "c2s" : "s2c";
        const char* out = server ? "s2c" : "c2s";
        try {
            if (server || s.duplex) link->in_.emplace(bip::open_only, queue_name(s.name, in).c_str());
            if (!server || s.duplex) link->out_.emplace(bip::open_only, queue_name(s.name, out).c_str());
        } catch (const bip::interprocess_exception& e) {
            return failure(std::string("cannot open the message queues: ") + e.what());
        }
        return std::unique_ptr<Link>(std::move(link));
    }

    Done send(Message m) override {
        try {
            out_->send(m.data(), m.size(), 0);
        } catch (const bip::interprocess_exception& e) {
            return failure(e.what());
        }
        return {};
    }

    Expected<std::optional<Message>> try_receive() override {
        std::size_t n = 0;
        unsigned prio = 0;
        try {
            if (!in_->try_receive(buf_.data(), buf_.size(), n, prio)) return std::optional<Message>();
        } catch (const bip::interprocess_exception& e) {
            return failure(e.what());
        }
        return std::optional<Message>(Message(buf_.data(), n));
    }

    Expected<std::optional<Message>> wait_receive(std::chrono::milliseconds timeout) override {
        std::size_t n = 0;
        unsigned prio = 0;
        // Boost 1.74 takes an absolute UTC ptime.
        const auto deadline = boost::posix_time::microsec_clock::universal_time() + boost::posix_time::milliseconds(timeout.count());
        try {
            if (!in_->timed_receive(buf_.data(), buf_.size(), n, prio, deadline)) return std::optional<Message>();
        } catch (const bip::interprocess_exception& e) {
            return failure(e.what());
        }
        return std::optional<Message>(Message(buf_.data(), n));
    }

private:
    explicit BoostLink(std::uint32_t size) : buf_(size) {}

    std::optional<bip::message_queue> in_, out_;
    std::vector<std::byte> buf_;
};

}  // namespace
}  // namespace rvoip::bench::peers

int main(int argc, char** argv) {
    using namespace rvoip::bench::peers;
    System sys{.name = "boostmq",
               .transport = "boost::interprocess::message_queue (shared memory, process-shared mutex and condition variables), "
                            "one queue per direction, priority 0",
               .default_depth = 1024,
               .prepare = prepare,
               .open = BoostLink::open};
    return peer_main(argc, argv, sys);
}
