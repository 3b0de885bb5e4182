// A broker no client can take down (issue 8): every limit reached is a clear limit_reached naming the
// limit and its flag, nothing a client sends reaches the log unescaped, thousands of connections and a
// request flood leave it responsive, and running out of descriptors does not make it spin.
#include "proto/channel.hpp"
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

#include <algorithm>

#include <sys/prctl.h>
#include <sys/resource.h>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

EventSystem connect(const Broker& b, std::string name = "limits") {
    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name(std::move(name)).control_timeout(std::chrono::seconds(60)).build();
    REQUIRE_MESSAGE(bus.has_value(), bus.error().what());
    return std::move(*bus);
}

void check_limit(const Error& e, const std::string& flag) {
    CHECK(e.code == Errc::limit_reached);
    CHECK_MESSAGE(e.message.find("(--" + flag + " raises it)") != std::string::npos, e.message);
}

// A raw control socket (no library): -1 when connect fails.
int dial(const std::string& path, bool nonblocking = false) {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return -1;
    }
    timeval tv{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

// One request and its reply on a raw socket (nullopt: no reply). Descriptors that come with it are closed.
std::optional<proto::Message> call(int fd, std::uint64_t corr, proto::Body body) {
    if (!proto::send_message(fd, proto::Message{corr, std::move(body)})) return std::nullopt;
    auto f = proto::recv_frame(fd);
    if (!f) return std::nullopt;
    proto::close_fds(f->fds);
    auto m = proto::decode(f->bytes);
    if (!m) return std::nullopt;
    return std::move(*m);
}

bool hello(int fd, const std::string& name) {
    proto::Hello h;
    h.pid = std::uint32_t(::getpid());
    h.name = name;
    auto m = call(fd, 1, h);
    return m && std::holds_alternative<proto::HelloOk>(m->body);
}

void raise_fd_limit() {
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
}

}  // namespace

TEST_CASE("a broker at its maximum of topics refuses another, naming --max-topics") {
    Broker b({"--max-topics", "2"});
    auto bus = connect(b);
    REQUIRE(bus.raw_publisher("limits.a").has_value());
    REQUIRE(bus.raw_publisher("limits.b").has_value());
    auto other = connect(b, "other");
    auto p = other.raw_publisher("limits.c");
    REQUIRE_FALSE(p.has_value());
    check_limit(p.error(), "max-topics");
    CHECK(p.error().message.find("is 2 ") != std::string::npos);
    CHECK(other.raw_publisher("limits.a").has_value());  // existing topics stay open to everyone
}

TEST_CASE("a client at its maximum of topics, publishers or subscribers is refused one more, naming the flag") {
    Broker b({"--max-topics-per-client", "2", "--max-publishers-per-client", "3", "--max-subscribers-per-client", "2"});
    auto bus = connect(b);
    // Slots count while they are held: a publisher or subscriber that goes out of scope gives its back.
    auto a1 = bus.raw_publisher("limits.a");
    auto b1 = bus.raw_publisher("limits.b");
    REQUIRE(a1.has_value());
    REQUIRE(b1.has_value());
    auto t = bus.raw_publisher("limits.c");
    REQUIRE_FALSE(t.has_value());
    check_limit(t.error(), "max-topics-per-client");

    auto a2 = bus.raw_publisher("limits.a");  // a third publisher, on an existing topic
    REQUIRE(a2.has_value());
    auto p = bus.raw_publisher("limits.b");
    REQUIRE_FALSE(p.has_value());
    check_limit(p.error(), "max-publishers-per-client");
    a2 = std::unexpected(Error(Errc::closed));  // gives one back
    CHECK(bus.raw_publisher("limits.b").has_value());

    auto sa = bus.raw_subscriber("limits.a");
    auto sb = bus.raw_subscriber("limits.b");
    REQUIRE(sa.has_value());
    REQUIRE(sb.has_value());
    auto s = bus.raw_subscriber("limits.a");
    REQUIRE_FALSE(s.has_value());
    check_limit(s.error(), "max-subscribers-per-client");

    auto other = connect(b, "other");  // the limits are per client
    CHECK(other.raw_publisher("limits.c").has_value());
    CHECK(other.raw_subscriber("limits.c").has_value());
}

TEST_CASE("on the default limits one client creates, publishes and subscribes 1,000 topics") {
    Broker b;
    auto bus = connect(b);
    const auto small = TopicOptions().all(layout::kMinCapacity, 64);  // the per-client limits are the point, not memory
    std::vector<RawPublisher> pubs;
    std::vector<RawSubscriber> subs;
    for (int i = 0; i < 1000; ++i) {
        const std::string name = "limits.many." + std::to_string(i);
        auto p = bus.raw_publisher(name, PublisherOptions{small});
        REQUIRE_MESSAGE(p.has_value(), p.error().what());
        auto s = bus.raw_subscriber(name, SubscriberOptions{small});
        REQUIRE_MESSAGE(s.has_value(), s.error().what());
        pubs.push_back(std::move(*p));
        subs.push_back(std::move(*s));
    }
    const std::array<std::byte, 8> ev{};
    REQUIRE(pubs.back().publish(ev).has_value());
    CHECK(subs.back().try_receive().has_value());
}

TEST_CASE("lanes larger than a client may ask for are refused, naming --max-lane-bytes and --max-event-bytes") {
    Broker b({"--max-lane-bytes", "1048576", "--max-event-bytes", "4096"});
    auto bus = connect(b);
    PublisherOptions big;
    big.topic.capacity(Priority::low, 2u << 20);
    auto p = bus.raw_publisher("limits.big", big);
    REQUIRE_FALSE(p.has_value());
    check_limit(p.error(), "max-lane-bytes");
    CHECK(p.error().message.find("low lane") != std::string::npos);

    PublisherOptions wide;
    wide.topic.max_event(Priority::high, 8192);
    auto w = bus.raw_publisher("limits.wide", wide);
    REQUIRE_FALSE(w.has_value());
    check_limit(w.error(), "max-event-bytes");

    PublisherOptions fits;
    fits.topic.capacity(Priority::low, 1u << 20).max_event(Priority::high, 4096);
    CHECK(bus.raw_publisher("limits.fits", fits).has_value());
}

TEST_CASE("a topic beyond the broker's shared-memory budget is refused, naming --max-shm-bytes") {
    // Topics of four 4 MiB lanes take a little over 16 MiB each: room for one, not two.
    Broker b({"--max-shm-bytes", "24000000"});
    auto bus = connect(b);
    PublisherOptions big;
    for (auto pr : {Priority::critical, Priority::high, Priority::normal, Priority::low}) big.topic.capacity(pr, 4u << 20);
    REQUIRE(bus.raw_publisher("limits.first", big).has_value());
    auto p = bus.raw_publisher("limits.second", big);
    REQUIRE_FALSE(p.has_value());
    check_limit(p.error(), "max-shm-bytes");
    CHECK(p.error().message.find("limits.second") != std::string::npos);
    PublisherOptions small;
    for (auto pr : {Priority::critical, Priority::high, Priority::normal, Priority::low}) small.topic.capacity(pr, 64 * 1024).max_event(pr, 1024);
    CHECK(bus.raw_publisher("limits.small", small).has_value());
}

TEST_CASE("a connection beyond --max-connections is told so and closed") {
    Broker b({"--max-connections", "2"});
    auto one = connect(b, "one");
    auto two = connect(b, "two");
    int fd = dial(b.socket());
    REQUIRE(fd >= 0);
    auto f = proto::recv_frame(fd);
    REQUIRE(f.has_value());
    auto m = proto::decode(f->bytes);
    REQUIRE(m.has_value());
    auto* e = std::get_if<proto::ErrorReply>(&m->body);
    REQUIRE(e != nullptr);
    CHECK(e->code == Errc::limit_reached);
    CHECK(e->message.find("--max-connections") != std::string::npos);
    CHECK_FALSE(proto::recv_frame(fd).has_value());  // then closed
    ::close(fd);
    CHECK(one.stats().has_value());
}

TEST_CASE("a type name or topic name that is not printable never reaches the log: refused, escaped") {
    Broker b;
    int fd = dial(b.socket());
    REQUIRE(fd >= 0);
    REQUIRE(hello(fd, "raw"));
    proto::OpenTopic o;
    o.topic = "limits.raw";
    std::strcpy(o.fingerprint.type_name, "evil\n2026-01-01 INFO forged");
    o.fingerprint.kind = layout::Kind::raw;
    auto m = call(fd, 7, o);
    REQUIRE(m.has_value());
    auto* e = std::get_if<proto::ErrorReply>(&m->body);
    REQUIRE(e != nullptr);
    CHECK(m->correlation == 7);
    CHECK(e->code == Errc::malformed);
    CHECK(e->message.find("printable") != std::string::npos);

    o.topic = "x\ny";
    std::strcpy(o.fingerprint.type_name, "fine");
    m = call(fd, 8, o);
    REQUIRE(m.has_value());
    e = std::get_if<proto::ErrorReply>(&m->body);
    REQUIRE(e != nullptr);
    CHECK(e->code == Errc::invalid_topic_name);
    CHECK(e->message.find('\n') == std::string::npos);
    CHECK(e->message.find("x\\x0ay") != std::string::npos);

    proto::Reclaim r;
    r.topic = "a\rb";
    m = call(fd, 9, r);
    REQUIRE(m.has_value());
    e = std::get_if<proto::ErrorReply>(&m->body);
    REQUIRE(e != nullptr);
    CHECK(e->code == Errc::malformed);
    ::close(fd);
}

namespace {

// A child process that holds `conns` greeted connections and, if `flood`, sends stats and open_topic
// requests on them in a tight loop without ever reading a reply, reconnecting when the broker drops one.
// Writes one byte to `ready` once its connections are up. Only raw system calls: it runs after fork().
[[noreturn]] void connection_holder(const std::string& path, int conns, bool flood, int ready) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    auto open_one = [&] {
        for (;;) {
            int fd = dial(path);
            if (fd >= 0 && hello(fd, flood ? "flooder" : "idle")) return fd;
            if (fd >= 0) ::close(fd);
            ::usleep(10'000);
        }
    };
    std::vector<int> fds;
    for (int i = 0; i < conns; ++i) fds.push_back(open_one());
    (void)!::write(ready, "R", 1);
    if (!flood) {
        for (;;) ::pause();
    }
    proto::OpenTopic o;
    o.topic = "limits.flood";
    std::strcpy(o.fingerprint.type_name, "flood");
    o.fingerprint.kind = layout::Kind::raw;
    const auto stats = proto::encode(proto::Message{2, proto::Stats{}});
    const auto open = proto::encode(proto::Message{3, o});
    for (std::uint64_t n = 0;; ++n) {
        for (auto& fd : fds) {
            const auto& frame = n % 4 == 0 ? open : stats;
            ssize_t r = ::send(fd, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {  // dropped: it did not read its replies
                ::close(fd);
                fd = open_one();
            }
        }
    }
}

}  // namespace

TEST_CASE("2000 connections and a request flood leave the broker responsive to a well-behaved client") {
    raise_fd_limit();
    Broker b({"--max-connections", "2100"});
    constexpr int kChildren = 4, kPerChild = 500, kFlooders = 2;
    int ready[2];
    REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    std::vector<pid_t> children;
    // Forked before this process has any thread (no EventSystem yet).
    for (int c = 0; c < kChildren; ++c) {
        pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) connection_holder(b.socket(), kPerChild, c < kFlooders, ready[1]);
        children.push_back(pid);
    }
    ::close(ready[1]);
    struct Reap {
        std::vector<pid_t>& pids;
        ~Reap() {
            for (pid_t p : pids) ::kill(p, SIGKILL);
            for (pid_t p : pids) ::waitpid(p, nullptr, 0);
        }
    } reap{children};
    int up = 0;
    while (up < kChildren) {
        pollfd p{ready[0], POLLIN, 0};
        REQUIRE_MESSAGE(::poll(&p, 1, 300'000) == 1, "the connections did not come up");
        char c;
        REQUIRE(::read(ready[0], &c, 1) == 1);
        ++up;
    }
    ::close(ready[0]);
    std::this_thread::sleep_for(std::chrono::seconds(1));  // the flood is on

    auto bus = connect(b, "well-behaved");
    std::vector<double> ms;
    std::uint32_t most_clients = 0;
    for (int i = 0; i < 200; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        auto st = bus.stats();
        const auto t1 = std::chrono::steady_clock::now();
        REQUIRE_MESSAGE(st.has_value(), st.error().what());
        most_clients = std::max(most_clients, st->clients);
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    MESSAGE("stats() under a flood from " << kFlooders * kPerChild << " of " << kChildren * kPerChild
                                          << " connections (up to " << most_clients << " clients): p50 " << ms[ms.size() / 2]
                                          << " ms, p99 " << ms[ms.size() * 99 / 100] << " ms, max " << ms.back() << " ms");
    CHECK(most_clients >= kChildren * kPerChild / 2);  // the idle connections at least, and us
    CHECK(ms.back() < 5000.0);                          // generous: a starved client waits for ever
}

TEST_CASE("a broker out of descriptors neither spins nor stops serving, and accepts again once some are back") {
    raise_fd_limit();
    Broker b({"--max-fds", "48"});
    auto bus = connect(b, "first");
    // More connections than its descriptors allow: the surplus waits in the listen backlog.
    std::vector<int> fds;
    for (int i = 0; i < 100; ++i) {
        int fd = dial(b.socket(), true);
        if (fd >= 0) fds.push_back(fd);
    }
    CHECK(fds.size() >= 40);
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const long hz = ::sysconf(_SC_CLK_TCK);
    const long before = b.process().cpu_ticks();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    const long used = b.process().cpu_ticks() - before;
    MESSAGE("broker CPU over 2 s while out of descriptors: " << used * 1000 / hz << " ms");
    CHECK(used < hz / 2);  // a spinning loop takes close to the whole 2 s
    CHECK(bus.stats().has_value());  // clients already connected are served throughout

    for (int fd : fds) ::close(fd);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::optional<EventSystem> later;
    while (!later && std::chrono::steady_clock::now() < deadline) {
        auto e = EventSystemBuilder().socket_path(b.socket()).client_name("later").build();
        if (e) later.emplace(std::move(*e));
        else std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    REQUIRE(later.has_value());
    CHECK(later->stats().has_value());
}
