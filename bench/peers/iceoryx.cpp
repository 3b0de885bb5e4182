// rvoip-peer-iceoryx: Eclipse iceoryx 2.0 (shared-memory publish/subscribe with a central daemon, RouDi).
// The parent starts a private iox-roudi with a config of one mempool sized for --size, waits until it says it is
// ready, and stops it (SIGTERM, reaped) at the end. The roles use the untyped C++ API: the sender loans a chunk,
// copies the message in and publishes it (a copy, as rvoip-bench's publish() does); the receiver take()s a
// chunk and releases it when done. Lossless: the publisher waits for the consumer
// (ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER) and the subscriber's queue blocks the producer
// (QueueFullPolicy::BLOCK_PRODUCER); --depth is the subscriber's queue capacity (at most 256 in this build).
// spin: take() polled, as iceoryx's own iceperf receives; block: a WaitSet waits on the subscriber's HAS_DATA
// state, as iceperf's WaitSet variant does. --batch N: one chunk per batch, the messages framed (length +
// message, back to back) in it; the receiver splits the chunk and releases it after its last message.
#include "bench/peers/peer_common.hpp"

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/mepoo/chunk_header.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/popo/wait_set.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fcntl.h>
#include <pwd.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace rvoip::bench::peers {
namespace {

// RouDi's fixed names (iceoryx_posh_types.hpp, platform_settings.hpp): one RouDi per machine.
constexpr const char* kRoudiSocket = "/tmp/roudi";
constexpr const char* kRoudiShm = "/dev/shm/iceoryx_mgmt";
constexpr std::uint32_t kMaxQueue = iox::MAX_SUBSCRIBER_QUEUE_CAPACITY;
// Chunks in the mempool: a full subscriber queue per direction plus the chunks loaned and held, with room.
constexpr std::uint32_t kChunks = 4 * kMaxQueue;
// With batches, one direction: a full queue, the chunk the publisher has loaned and the one the subscriber holds.
constexpr std::uint32_t kBatchChunks = kMaxQueue + 16;

// Only warnings and errors from the runtime: its debug chatter would bury the benchmark's messages. The call
// announces the new level on stderr itself, so stderr points to /dev/null during it.
void quiet_logs() {
    std::fflush(stderr);
    std::clog.flush();
    const int saved = ::dup(2), null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (saved >= 0 && null >= 0) ::dup2(null, 2);
    iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn);
    std::clog.flush();
    if (saved >= 0) ::dup2(saved, 2), ::close(saved);
    if (null >= 0) ::close(null);
}

iox::capro::ServiceDescription service(const std::string& run, const char* dir) {
    return {"rvoip-peer", iox::capro::IdString_t(iox::cxx::TruncateToCapacity, run.c_str()),
            iox::capro::IdString_t(iox::cxx::TruncateToCapacity, dir)};
}

class IceoryxLink final : public Link {
public:
    static Expected<std::unique_ptr<Link>> open(const LinkSpec& s) {
        if (s.depth == 0 || s.depth > kMaxQueue) return failure("--depth must be 1.." + std::to_string(kMaxQueue) + " for iceoryx");
        quiet_logs();
        const std::string app = s.name + (s.side == Side::server ? "-server" : "-client");  // see Roudi::remove_leftovers
        iox::runtime::PoshRuntime::initRuntime(iox::RuntimeName_t(iox::cxx::TruncateToCapacity, app.c_str()));

        auto link = std::unique_ptr<IceoryxLink>(new IceoryxLink(s));
        const bool server = s.side == Side::server;
        iox::popo::PublisherOptions po;
        po.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
        iox::popo::SubscriberOptions so;
        so.queueCapacity = s.depth;
        so.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
        const char* in = server ? "c2s" : "s2c";
        const char* out = server ? "s2c" : "c2s";
        if (server || s.duplex) link->sub_.emplace(service(s.name, in), so);
        if (!server || s.duplex) link->pub_.emplace(service(s.name, out), po);
        link->duplex_ = s.duplex;
        // Discovery runs in RouDi every 100 ms. The client says "ready" only once its publisher has the server's
        // subscriber (and, for latency, its own subscriber is connected), so nothing sent after "go" is lost.
        if (!server) {
            if (auto st = wait_until([&] { return link->pub_->hasSubscribers(); }, std::chrono::seconds(30), "the subscriber to connect"); !st)
                return failure(st.error());
            if (s.duplex)
                if (auto st = wait_until([&] { return link->sub_->getSubscriptionState() == iox::SubscribeState::SUBSCRIBED; },
                                         std::chrono::seconds(30), "the subscription to the echoer");
                    !st)
                    return failure(st.error());
        }
        if (!s.spin && link->sub_) {
            link->waitset_.emplace();
            if (link->waitset_->attachState(*link->sub_, iox::popo::SubscriberState::HAS_DATA).has_error())
                return failure("cannot attach the subscriber to a WaitSet");
        }
        return std::unique_ptr<Link>(std::move(link));
    }

    ~IceoryxLink() override { release_chunk(); }

    Done established() override {
        if (!duplex_) return {};
        return wait_until([&] { return pub_->hasSubscribers(); }, std::chrono::seconds(30), "the pinger to subscribe");
    }

    Done send(Message m) override {
        if (framed_) return send_batch({&m, 1});
        auto chunk = pub_->loan(std::uint32_t(m.size()));
        if (chunk.has_error()) return failure(std::string("loan: ") + iox::popo::asStringLiteral(chunk.get_error()));
        std::memcpy(chunk.value(), m.data(), m.size());
        pub_->publish(chunk.value());  // waits while the subscriber's queue is full (WAIT_FOR_CONSUMER)
        return {};
    }

    // One chunk per batch: loan it, frame the messages into it, publish it.
    Done send_batch(std::span<const Message> msgs) override {
        auto chunk = pub_->loan(std::uint32_t(framed_size(msgs)));
        if (chunk.has_error()) return failure(std::string("loan: ") + iox::popo::asStringLiteral(chunk.get_error()));
        write_frames(msgs, static_cast<std::byte*>(chunk.value()));
        pub_->publish(chunk.value());
        return {};
    }

    Expected<std::optional<Message>> try_receive() override {
        if (framed_) {
            auto m = frames_.next();
            if (!m || *m) return m;
            if (!frames_.rest().empty()) return failure("a chunk ends inside a frame");
        }
        release_chunk();
        auto chunk = sub_->take();
        if (chunk.has_error()) {
            if (chunk.get_error() == iox::popo::ChunkReceiveResult::NO_CHUNK_AVAILABLE) return std::optional<Message>();
            return failure(std::string("take: ") + iox::popo::asStringLiteral(chunk.get_error()));
        }
        held_ = chunk.value();
        const auto size = iox::mepoo::ChunkHeader::fromUserPayload(held_)->userPayloadSize();
        const Message got(static_cast<const std::byte*>(held_), size);
        if (!framed_) return std::optional<Message>(got);
        frames_.reset(got);
        auto m = frames_.next();
        if (m && !*m) return failure("a chunk without a whole frame");
        return m;
    }

    Expected<std::optional<Message>> wait_receive(std::chrono::milliseconds timeout) override {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            auto m = try_receive();
            if (!m || *m) return m;
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::optional<Message>();
            // Returns when the subscriber has data (its state, so no wake-up is lost between take() and here).
            (void)waitset_->timedWait(iox::units::Duration::fromMilliseconds(left.count()));
        }
    }

    // A batch's chunk goes back once its last message is done with.
    void release() override {
        if (!framed_ || frames_.rest().empty()) release_chunk();
    }

private:
    explicit IceoryxLink(const LinkSpec& s) : framed_(s.batch > 1), frames_(s.size) {}

    void release_chunk() {
        if (held_) sub_->release(held_);
        held_ = nullptr;
        frames_.reset({});
    }

    std::optional<iox::popo::UntypedPublisher> pub_;
    std::optional<iox::popo::UntypedSubscriber> sub_;
    std::optional<iox::popo::WaitSet<>> waitset_;  // declared after sub_: detached and destroyed first
    const void* held_ = nullptr;
    bool duplex_ = false;
    bool framed_;
    FrameReader frames_;  // the rest of a batch's chunk
};

// True when a RouDi answers on its socket (a datagram socket: connect succeeds only if one is bound).
bool roudi_answers() {
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, kRoudiSocket);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

std::string find_roudi() {
    if (const char* env = std::getenv("IOX_ROUDI"); env && *env) return env;  // an explicit choice wins
    if (const char* path = std::getenv("PATH")) {
        std::string p = path;
        for (std::size_t b = 0; b <= p.size();) {
            auto e = p.find(':', b);
            if (e == std::string::npos) e = p.size();
            auto candidate = p.substr(b, e - b) + "/iox-roudi";
            if (e > b && ::access(candidate.c_str(), X_OK) == 0) return candidate;
            b = e + 1;
        }
    }
    return "/usr/bin/iox-roudi";
}

// RouDi's stderr (start-up notes, warnings) goes to a log in our directory; quoted in our errors.
std::string log_tail(const std::string& log) {
    std::ifstream in(log);
    std::stringstream all;
    all << in.rdbuf();
    auto text = all.str();
    while (!text.empty() && text.back() == '\n') text.pop_back();
    if (text.size() > 1500) text = "..." + text.substr(text.size() - 1500);
    return text.empty() ? "" : "; its log:\n" + text;
}

// Our private RouDi: SIGTERM and reaped when the run ends, whatever happened.
class Roudi final : public Resources {
public:
    Child child;
    std::string log;
    std::string run;  // the run's name: the roles' runtime names start with it
    ~Roudi() override { (void)finish(); }

    Done finish() override {
        if (!child.running()) return {};
        child.signal(SIGTERM);
        const auto how = child.reap(std::chrono::seconds(10));
        // iceoryx 2.0 RouDi aborts at shutdown if a registered process died without deregistering (a role that
        // was killed), leaving its shared memory and sockets behind. No other RouDi ran when ours started (the
        // names are fixed), so whatever is left under those names is ours: remove it, and say so.
        const auto left = remove_leftovers();
        if (!how.empty()) return failure("iox-roudi " + how + (left.empty() ? "" : "; removed what it left: " + left) + log_tail(log));
        if (!left.empty()) return failure("iox-roudi stopped but left " + left + " (removed)");
        return {};
    }

private:
    std::string remove_leftovers() const {
        const passwd* pw = ::getpwuid(::geteuid());  // RouDi names the payload segment after the user
        std::vector<std::string> paths{kRoudiShm, "/tmp/roudi", "/tmp/roudi.lock", "/tmp/iox-unique-roudi.lock"};
        if (pw) paths.push_back(std::string("/dev/shm/") + pw->pw_name);
        for (auto side : {"-server", "-client"})
            for (auto ext : {"", ".lock"}) paths.push_back("/tmp/" + run + side + ext);
        std::string removed;
        for (auto& p : paths)
            if (::unlink(p.c_str()) == 0) removed += (removed.empty() ? "" : ", ") + p;
        return removed;
    }
};

Expected<std::unique_ptr<Resources>> prepare(const RunSpec& spec, Json& extra) {
    const auto roudi_path = find_roudi();
    if (::access(roudi_path.c_str(), X_OK) != 0) return failure("iox-roudi not found (PATH, /usr/bin; or set IOX_ROUDI)");
    // RouDi's names are fixed, so a second one cannot run beside another's.
    if (roudi_answers()) return failure(std::string("an iox-roudi is already running (") + kRoudiSocket + " answers); stop it first");

    // One mempool that fits our messages, or our framed batches (sizes are user payload bytes, a multiple of 8;
    // RouDi adds the header).
    const bool framed = spec.batch > 1;
    const std::uint32_t payload = framed ? spec.batch * std::uint32_t(kFrameHeader + spec.size) : spec.size;
    const std::uint32_t chunk = (payload + 7) / 8 * 8, chunks = framed ? kBatchChunks : kChunks;
    const std::string config = spec.dir + "/roudi.toml";
    std::ofstream(config) << "[general]\nversion = 1\n\n[[segment]]\n\n[[segment.mempool]]\nsize = " << chunk << "\ncount = " << chunks << "\n";
    extra.str("roudi", roudi_path).num("mempool_chunk_payload", chunk).num("mempool_chunks", chunks);
    extra.str("policies", "WAIT_FOR_CONSUMER / BLOCK_PRODUCER");

    auto roudi = std::make_unique<Roudi>();
    roudi->log = spec.dir + "/roudi.log";
    roudi->run = spec.name;
    // Its stdout is a pipe to us: it prints "RouDi is ready for clients" there, which must not reach our stdout
    // (the JSON). The shell only redirects stderr and execs, so the pid is RouDi's. Monitoring is off: RouDi
    // would otherwise kill a role whose keep-alive thread starves behind two spinning processes on two cores;
    // we reap the roles ourselves.
    auto c = Child::spawn({.argv = {"/bin/sh", "-c", "log=$1; shift; exec \"$@\" 2>\"$log\"", "sh", roudi->log, roudi_path, "-c", config,
                                    "-m", "off", "-l", "warning"},
                           .label = "iox-roudi",
                           .death_signal = SIGTERM});  // SIGTERM, not SIGKILL: it then removes its shared memory
    if (!c) return failure(c.error());
    roudi->child = std::move(*c);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
        auto line = roudi->child.read_line(deadline);
        if (!line) {
            roudi->child.reap(std::chrono::milliseconds(0));
            return failure("iox-roudi did not start: " + line.error() + log_tail(roudi->log));
        }
        if (line->find("ready for clients") != std::string::npos) break;
    }
    if (!roudi_answers()) return failure(std::string("iox-roudi said it is ready but ") + kRoudiSocket + " does not answer");
    return std::unique_ptr<Resources>(std::move(roudi));
}

}  // namespace
}  // namespace rvoip::bench::peers

int main(int argc, char** argv) {
    using namespace rvoip::bench::peers;
    System sys{.name = "iceoryx",
               .transport = "iceoryx 2.0 untyped publisher/subscriber through a private iox-roudi; loan + copy + publish, take + release",
               .default_depth = kMaxQueue,
               .batching = "one chunk per batch",
               .prepare = prepare,
               .open = IceoryxLink::open};
    return peer_main(argc, argv, sys);
}
