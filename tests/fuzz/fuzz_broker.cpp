// The broker's request handling, through a real session: an in-process daemon::Broker on its own thread
// (private socket and shm prefix, as EmbeddedBroker runs one), and per input one connection that sends
// the input's frames one by one and waits for each answer.
//
// Input: byte 0 holds flags (bit 0: send a valid hello first; bit 1: patch each frame's length and
// version fields, so the fuzzer spends its time on bodies), then frames as [u16 size][bytes].
//
// Promises checked: every frame gets exactly one reply within 30 s (later than 5 s is logged), the reply decodes and carries the
// frame's correlation id (0 for one too short to hold it); the broker survives (ASan, UBSan, no abort);
// after the input, on a second connection greeted once at start, it still answers `stats`.
//
// Cheap and bounded: one broker for the whole run; topic names that are valid are mapped onto eight
// names and ring capacities above 16 KiB are cut to 16 KiB, so the fuzzer can make at most eight small
// topics; every slot an input was granted is removed before its connection closes (the process stays
// alive, so the broker would otherwise hold them for it).
#include "daemon/broker.hpp"
#include "proto/channel.hpp"
#include "proto/messages.hpp"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

using namespace rvoip::events;

namespace {

constexpr int kSlowReplyMs = 5000;
constexpr int kReplyTimeoutMs = 30000;
constexpr std::uint64_t kMaxFuzzCapacity = 16 << 10;
constexpr std::size_t kMaxFrames = 32;

[[noreturn]] void broken(const std::string& what) {
    std::fprintf(stderr, "fuzz_broker: %s\n", what.c_str());
    std::abort();
}

int dial(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) broken("cannot connect to the broker");
    return fd;
}

// The one reply to a request; aborts when none comes in time or it does not decode.
proto::Message await_reply(int fd, std::uint64_t corr, const char* after) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, kSlowReplyMs) != 1) {
        // A loaded machine (two cores, shared) can stall a reply for seconds: only no reply at all fails.
        std::fprintf(stderr, "fuzz_broker: no reply within %d ms after %s; waiting up to %d ms\n", kSlowReplyMs, after, kReplyTimeoutMs);
        if (::poll(&p, 1, kReplyTimeoutMs - kSlowReplyMs) != 1) broken(std::string("no reply within 30 s after ") + after);
    }
    auto f = proto::recv_frame(fd);
    if (!f) broken(std::string("reply after ") + after + " not received: " + f.error().what());
    proto::close_fds(f->fds);
    auto m = proto::decode(f->bytes);
    if (!m) broken(std::string("reply after ") + after + " does not decode: " + m.error().what());
    if (std::holds_alternative<proto::ShutdownNotice>(m->body)) broken("the broker is shutting down");
    if (m->correlation != corr)
        broken(std::string("reply after ") + after + " carries correlation " + std::to_string(m->correlation) +
               ", expected " + std::to_string(corr));
    return std::move(*m);
}

proto::Message request(int fd, const proto::Message& m) {
    auto st = proto::send_message(fd, m);
    if (!st) broken("send: " + st.error().what());
    return await_reply(fd, m.correlation, "a request of the harness");
}

proto::Hello hello() {
    proto::Hello h;
    h.name = "fuzz";
    h.pid = std::uint32_t(::getpid());
    return h;
}

struct FuzzBroker {
    std::filesystem::path dir;
    std::unique_ptr<daemon::Broker> broker;
    std::thread thread;
    int monitor = -1;  // greeted once; asks for stats after every input

    FuzzBroker() {
        const auto id = std::to_string(::getpid());
        dir = std::filesystem::temp_directory_path() / ("rvoip-fuzz-" + id);
        daemon::BrokerConfig cfg;
        cfg.socket_path = (dir / "broker.sock").string();
        cfg.shm_prefix = "rvoip-fuzz-" + id;
        cfg.cleanup_on_exit = true;
        cfg.doorbells = 256;
        for (auto& l : cfg.defaults) l.capacity = 4096, l.max_event = 1024;
        spdlog::register_logger(std::make_shared<spdlog::logger>("eventd", std::make_shared<spdlog::sinks::null_sink_mt>()));
        broker = std::make_unique<daemon::Broker>(cfg);
        if (auto ok = broker->open(); !ok) broken("broker: " + ok.error().what());
        thread = std::thread([b = broker.get()] { b->run(false); });
        monitor = dial(cfg.socket_path);
        if (!std::holds_alternative<proto::HelloOk>(request(monitor, {1, hello()}).body)) broken("monitor hello refused");
    }
    ~FuzzBroker() {
        ::close(monitor);
        broker->stop();
        thread.join();
        broker.reset();
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
};

FuzzBroker* g_broker = nullptr;

// Keeps what the fuzzer creates small: see the top of the file.
std::vector<std::byte> bounded(std::vector<std::byte> frame) {
    auto m = proto::decode(frame);
    if (!m) return frame;
    auto rename = [](std::string& topic) {
        if (proto::validate_topic_name(topic)) topic = "fz" + std::to_string(std::hash<std::string>{}(topic) % 8);
    };
    if (auto* o = std::get_if<proto::OpenTopic>(&m->body)) {
        rename(o->topic);
        for (auto& l : o->lanes)
            if (l.capacity > kMaxFuzzCapacity && layout::is_pow2(l.capacity)) l.capacity = kMaxFuzzCapacity;
    } else if (auto* r = std::get_if<proto::Reclaim>(&m->body)) {
        rename(r->topic);
    } else {
        return frame;
    }
    return proto::encode(*m);
}

struct Grant {
    bool publisher;
    std::uint32_t topic;
    std::uint32_t slot;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    g_broker = new FuzzBroker();
    std::atexit([] { delete g_broker; });
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::uint8_t flags = data[0];
    std::size_t at = 1;
    const int fd = dial((g_broker->dir / "broker.sock").string());
    std::vector<Grant> grants;
    if (flags & 1)
        if (!std::holds_alternative<proto::HelloOk>(request(fd, {7, hello()}).body)) broken("valid hello refused");
    for (std::size_t n = 0, sent = 0; n < kMaxFrames && at + 2 <= size; ++n) {
        std::uint16_t len;
        std::memcpy(&len, data + at, 2);
        at += 2;
        const std::size_t take = std::min<std::size_t>(len, size - at);
        std::vector<std::byte> frame(reinterpret_cast<const std::byte*>(data + at), reinterpret_cast<const std::byte*>(data + at + take));
        at += take;
        if (frame.empty()) continue;  // a zero-length datagram reads as the peer's orderly close
        if ((flags & 2) && frame.size() >= proto::kFrameHeaderSize) {
            const auto n32 = std::uint32_t(frame.size());
            std::memcpy(frame.data(), &n32, 4);
            std::memcpy(frame.data() + 6, &proto::kProtocolVersion, 2);
        }
        frame = bounded(std::move(frame));
        if (::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL) != ssize_t(frame.size())) broken("send of a fuzzed frame failed");
        const std::string what = "fuzzed frame " + std::to_string(sent++) + " (" + std::to_string(frame.size()) + " bytes, " +
                                 (proto::decode(frame) ? "valid" : "malformed") + ")";
        auto reply = await_reply(fd, proto::peek_correlation(frame), what.c_str());
        if (auto* p = std::get_if<proto::PublisherOk>(&reply.body)) grants.push_back({true, p->topic_id, p->slot});
        if (auto* s = std::get_if<proto::SubscriberOk>(&reply.body)) grants.push_back({false, s->topic_id, s->slot});
        if (auto* r = std::get_if<proto::ReclaimOk>(&reply.body)) {
            auto req = proto::decode(frame);
            const auto& rc = std::get<proto::Reclaim>(req->body);
            grants.push_back({rc.role == proto::Role::publisher, r->topic_id, rc.slot});
        }
    }
    for (const auto& g : grants) {  // already removed by the input: an error reply, as good as any
        if (g.publisher) (void)request(fd, {9, proto::RemovePublisher{g.topic, g.slot}});
        else (void)request(fd, {9, proto::RemoveSubscriber{g.topic, g.slot}});
    }
    ::close(fd);
    if (!std::holds_alternative<proto::StatsReply>(request(g_broker->monitor, {3, proto::Stats{}}).body))
        broken("the broker no longer answers stats");
    return 0;
}
