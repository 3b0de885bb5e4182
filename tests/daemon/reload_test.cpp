// Broker::reload on a broker serving on a thread of this process (as the embedded one does): applied on
// the loop thread while the caller waits, refused whole when invalid, and never touching what needs a
// restart. Clients here speak the protocol directly.
#include "daemon/broker.hpp"
#include "proto/channel.hpp"
#include "proto/messages.hpp"

#include <doctest/doctest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

using namespace rvoip::events;
using namespace rvoip::events::daemon;

namespace {

constexpr std::size_t kNormal = std::size_t(Priority::normal);
const std::uint64_t kDefaultNormal = BrokerConfig::default_lanes()[kNormal].capacity;

struct Serving {
    std::filesystem::path dir;
    std::unique_ptr<Broker> broker;
    std::thread thread;

    explicit Serving(BrokerConfig cfg, bool run = true) {
        static int n = 0;
        if (!spdlog::get("eventd"))  // the broker's log, quiet: what it says of reloads is tested against the daemon
            spdlog::register_logger(std::make_shared<spdlog::logger>("eventd", std::make_shared<spdlog::sinks::null_sink_mt>()));
        std::string tmpl = (std::filesystem::temp_directory_path() / "rvoip-reload-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        dir = tmpl;
        cfg.socket_path = (dir / "broker.sock").string();
        cfg.shm_prefix = "rvoip-reload-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
        cfg.cleanup_on_exit = true;
        cfg.socket_mode = 0600;
        cfg.doorbells = 16;
        broker = std::make_unique<Broker>(cfg);
        REQUIRE(broker->open().has_value());
        if (run) start();
    }
    void start() {
        thread = std::thread([b = broker.get()] { b->run(false); });
    }
    ~Serving() {
        broker->stop();
        if (thread.joinable()) thread.join();
        broker.reset();
        std::filesystem::remove_all(dir);
    }
    // The configuration as main would build it anew: the same socket and prefix.
    BrokerConfig next() const { return broker->config(); }
};

// Opens `topic` as a new client: the lanes in force, or the broker's refusal.
Result<LaneArray> open_topic(const std::string& socket, const std::string& topic, LaneArray ask = {}) {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, socket.c_str(), sizeof a.sun_path - 1);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    auto call = [&](proto::Body body) -> proto::Body {
        REQUIRE(proto::send_message(fd, proto::Message{1, std::move(body)}).has_value());
        auto f = proto::recv_frame(fd);
        REQUIRE(f.has_value());
        proto::close_fds(f->fds);
        auto m = proto::decode(f->bytes);
        REQUIRE(m.has_value());
        return m->body;
    };
    proto::Hello hello;
    hello.pid = std::uint32_t(::getpid());
    hello.name = "reload-test";
    auto greeted = call(hello);
    REQUIRE(std::holds_alternative<proto::HelloOk>(greeted));
    proto::OpenTopic open;
    open.topic = topic;
    std::strcpy(open.fingerprint.type_name, "raw-bytes");
    open.fingerprint.kind = layout::Kind::raw;
    open.fingerprint.align = 1;
    open.lanes = ask;
    auto reply = call(open);
    ::close(fd);
    if (auto* e = std::get_if<proto::ErrorReply>(&reply)) return fail(e->code, e->message);
    REQUIRE(std::holds_alternative<proto::TopicOk>(reply));
    return std::get<proto::TopicOk>(reply).lanes;
}

}  // namespace

TEST_CASE("a topic created after a reload gets the new defaults; one created before keeps its rings") {
    Serving s(BrokerConfig{});
    const auto socket = s.broker->config().socket_path;
    auto before = open_topic(socket, "reload.before");
    REQUIRE(before.has_value());
    CHECK(before->at(kNormal).capacity == kDefaultNormal);

    auto next = s.next();
    next.defaults[kNormal].capacity = 8u << 20;
    REQUIRE(s.broker->reload(next).has_value());  // from this thread: the loop applies it, we wait

    auto after = open_topic(socket, "reload.after");
    REQUIRE(after.has_value());
    CHECK(after->at(kNormal).capacity == 8u << 20);
    auto again = open_topic(socket, "reload.before");
    REQUIRE(again.has_value());
    CHECK(again->at(kNormal).capacity == kDefaultNormal);
}

TEST_CASE("per-topic settings and limits change by reload") {
    Serving s(BrokerConfig{});
    const auto socket = s.broker->config().socket_path;
    auto next = s.next();
    TopicLanes big{"big.*", {}};
    big.lanes[kNormal].capacity = 16u << 20;
    next.topics.push_back(big);
    next.limits.max_topics = 2;
    REQUIRE(s.broker->reload(next).has_value());
    LaneArray ask{};
    ask[kNormal].capacity = 1u << 20;
    auto fixed = open_topic(socket, "big.one", ask);
    REQUIRE(fixed.has_value());
    CHECK(fixed->at(kNormal).capacity == 16u << 20);  // the operator's setting outranks the creator's
    auto open = open_topic(socket, "small.one", ask);
    REQUIRE(open.has_value());
    CHECK(open->at(kNormal).capacity == 1u << 20);
    auto third = open_topic(socket, "small.two");
    REQUIRE_FALSE(third.has_value());
    CHECK(third.error().code == Errc::limit_reached);
    CHECK(third.error().message.find("--max-topics raises it") != std::string::npos);
}

TEST_CASE("an invalid configuration is refused whole and the running one stays") {
    Serving s(BrokerConfig{});
    const auto socket = s.broker->config().socket_path;
    auto next = s.next();
    next.defaults[kNormal].capacity = 8u << 20;
    next.limits.max_topics = 0;  // invalid
    auto refused = s.broker->reload(next);
    REQUIRE_FALSE(refused.has_value());
    CHECK(refused.error().code == Errc::invalid_argument);
    auto lanes = open_topic(socket, "reload.kept");
    REQUIRE(lanes.has_value());
    CHECK(lanes->at(kNormal).capacity == kDefaultNormal);
}

TEST_CASE("what needs a restart keeps its running value") {
    Serving s(BrokerConfig{});
    const auto socket = s.broker->config().socket_path;
    auto next = s.next();
    next.shm_prefix = "rvoip-reload-elsewhere";
    next.socket_path = (s.dir / "other.sock").string();
    next.limits.max_topics = 7;
    REQUIRE(s.broker->reload(next).has_value());
    s.broker->stop();
    s.thread.join();  // the loop's view is ours to read now
    CHECK(s.broker->config().socket_path == socket);
    CHECK(s.broker->config().shm_prefix != "rvoip-reload-elsewhere");
    CHECK(s.broker->config().limits.max_topics == 7);
}

TEST_CASE("a reload before the broker serves applies at once") {
    Serving s(BrokerConfig{}, false);
    auto next = s.next();
    next.defaults[kNormal].capacity = 8u << 20;
    REQUIRE(s.broker->reload(next).has_value());
    s.start();
    auto lanes = open_topic(s.broker->config().socket_path, "reload.early");
    REQUIRE(lanes.has_value());
    CHECK(lanes->at(kNormal).capacity == 8u << 20);
}
