// Every way a user or another process can get it wrong gets a clear error naming what was wrong, and
// nothing is lost or crashed. Clients here run in the test process against a real rvoip-eventd.
#include "proto/channel.hpp"
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

#include <fstream>

#include <fcntl.h>
#include <sys/stat.h>

#include <sys/mman.h>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

struct Small {
    static constexpr std::string_view event_type = "test.small";
    std::uint64_t v;
};

EventSystem connect(const Broker& b) {
    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("bad-input").build();
    REQUIRE_MESSAGE(bus.has_value(), bus.error().what());
    return std::move(*bus);
}

int raw_connect(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    timeval tv{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

proto::ErrorReply expect_error(int fd) {
    auto f = proto::recv_frame(fd);
    REQUIRE_MESSAGE(f.has_value(), "no reply from the broker");
    auto m = proto::decode(f->bytes);
    REQUIRE(m.has_value());
    auto* e = std::get_if<proto::ErrorReply>(&m->body);
    REQUIRE(e != nullptr);
    return *e;
}

}  // namespace

TEST_CASE("an invalid topic name is refused with the name and the rule") {
    Broker b;
    auto bus = connect(b);
    for (std::string bad : std::vector<std::string>{"Call.State", "", ".x", "a b", std::string(64, 'a'), "sip/message"}) {
        auto p = bus.raw_publisher(bad);
        REQUIRE_FALSE(p.has_value());
        CHECK(p.error().code == Errc::invalid_topic_name);
        CHECK(p.error().message.find("[a-z0-9]") != std::string::npos);
    }
}

TEST_CASE("an event larger than the lane's maximum is refused and nothing else is lost") {
    Broker b;
    auto bus = connect(b);
    PublisherOptions opt;
    opt.topic.max_event(Priority::normal, 1024);
    auto p = bus.raw_publisher("test.oversize", opt);
    REQUIRE(p.has_value());
    auto s = bus.raw_subscriber("test.oversize");
    REQUIRE(s.has_value());
    std::vector<std::byte> ok(1024, std::byte{1}), big(1025, std::byte{2});
    REQUIRE(p->publish(ok).has_value());
    auto e = p->publish(big);
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error().code == Errc::event_too_large);
    CHECK(e.error().message.find("1025") != std::string::npos);
    CHECK(e.error().message.find("test.oversize") != std::string::npos);
    auto l = p->loan(4096);
    REQUIRE_FALSE(l.has_value());
    CHECK(l.error().code == Errc::event_too_large);
    REQUIRE(p->publish(ok).has_value());
    for (int i = 0; i < 2; ++i) {
        auto ev = s->try_receive();
        REQUIRE(ev.has_value());
        CHECK(ev->bytes().size() == 1024);
    }
    CHECK(s->try_receive().error().code == Errc::would_block);
}

TEST_CASE("a missing broker or socket path is reported, not crashed on") {
    SUBCASE("the path does not exist") {
        auto bus = EventSystemBuilder().socket_path("/nonexistent/dir/broker.sock").build();
        REQUIRE_FALSE(bus.has_value());
        CHECK(bus.error().code == Errc::broker_unavailable);
        CHECK(bus.error().message.find("/nonexistent/dir/broker.sock") != std::string::npos);
        CHECK(bus.error().message.find("does not exist") != std::string::npos);
    }
    SUBCASE("a socket file with no broker behind it") {
        std::string path;
        {
            Broker b;
            path = b.socket() + ".stale";
            int fd = ::socket(AF_UNIX, SOCK_SEQPACKET, 0);
            sockaddr_un a{};
            a.sun_family = AF_UNIX;
            std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
            REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
            ::close(fd);  // bound, never listening: a broker that died and left its socket
            auto bus = EventSystemBuilder().socket_path(path).build();
            REQUIRE_FALSE(bus.has_value());
            CHECK(bus.error().code == Errc::broker_unavailable);
            CHECK(bus.error().message.find("cannot connect") != std::string::npos);
        }
    }
    SUBCASE("the broker stops: control calls fail with broker_unavailable, the data plane keeps working") {
        Broker b;
        auto bus = connect(b);
        auto p = bus.publisher<Small>();
        auto s = bus.subscriber<Small>();
        REQUIRE(p.has_value());
        REQUIRE(s.has_value());
        CHECK(b.stop() == 0);
        REQUIRE(p->publish(Small{42}).has_value());
        auto ev = s->receive_for(std::chrono::seconds(30));
        REQUIRE(ev.has_value());
        CHECK((*ev)->v == 42);
        auto more = bus.publisher<Small>();
        REQUIRE_FALSE(more.has_value());
        CHECK(more.error().code == Errc::broker_unavailable);
    }
}

TEST_CASE("malformed control frames sent by hand get typed errors and the broker keeps serving") {
    Broker b;
    int fd = raw_connect(b.socket());
    SUBCASE("garbage") {
        const char junk[] = "this is not a frame at all";
        REQUIRE(::send(fd, junk, sizeof junk, 0) == ssize_t(sizeof junk));
        auto e = expect_error(fd);
        CHECK(e.code == Errc::malformed);
        CHECK(e.message.find("length field") != std::string::npos);
    }
    SUBCASE("a short frame") {
        REQUIRE(::send(fd, "abc", 3, 0) == 3);
        CHECK(expect_error(fd).code == Errc::malformed);
    }
    SUBCASE("a request before hello") {
        REQUIRE(proto::send_message(fd, proto::Message{5, proto::Stats{}}).has_value());
        auto e = expect_error(fd);
        CHECK(e.code == Errc::malformed);
        CHECK(e.message.find("before hello") != std::string::npos);
    }
    SUBCASE("an unsupported protocol version") {
        proto::Hello h{7, 9, 1, "future-client"};
        REQUIRE(proto::send_message(fd, proto::Message{6, h}).has_value());
        auto e = expect_error(fd);
        CHECK(e.code == Errc::version_mismatch);
    }
    SUBCASE("descriptors attached by a client are refused, not kept") {
        int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        std::vector<int> fds{devnull};
        REQUIRE(proto::send_frame(fd, std::vector<std::byte>(3), fds).has_value());
        ::close(devnull);
        CHECK(expect_error(fd).code == Errc::malformed);
    }
    SUBCASE("an oversize frame") {
        std::vector<char> big(70000, 'x');
        // SEQPACKET may refuse a datagram this large outright; either way the broker must survive.
        if (::send(fd, big.data(), big.size(), 0) > 0) CHECK(expect_error(fd).code == Errc::malformed);
    }
    ::close(fd);
    // Still serving real clients.
    auto bus = connect(b);
    auto p = bus.publisher<Small>();
    REQUIRE(p.has_value());
    CHECK(p->publish(Small{1}).has_value());
}

TEST_CASE("a client cannot remove another client's publisher or pick a doorbell") {
    Broker b;
    auto owner = connect(b);
    auto p = owner.publisher<Small>();
    REQUIRE(p.has_value());
    int fd = raw_connect(b.socket());
    REQUIRE(proto::send_message(fd, proto::Message{1, proto::Hello{proto::kMinProtocolVersion, proto::kProtocolVersion, 1, "intruder"}}).has_value());
    auto hello = proto::recv_frame(fd);
    REQUIRE(hello.has_value());
    proto::close_fds(hello->fds);
    REQUIRE(proto::send_message(fd, proto::Message{2, proto::RemovePublisher{p->topic().id, 0}}).has_value());
    auto e = expect_error(fd);
    CHECK(e.code == Errc::permission_denied);
    REQUIRE(proto::send_message(fd, proto::Message{3, proto::AddSubscriber{p->topic().id, 0, proto::StartAt::tail}}).has_value());
    e = expect_error(fd);
    CHECK(e.code == Errc::invalid_argument);  // a subscriber's doorbell is its slot's, in its topic's segment
    CHECK(e.message.find("doorbell") != std::string::npos);
    ::close(fd);
    CHECK(p->publish(Small{7}).has_value());
}

TEST_CASE("a full lane: `fail` returns full at once, `block` times out; both counted; nothing published is lost") {
    Broker b;
    auto bus = connect(b);
    PublisherOptions opt;
    opt.topic.capacity(Priority::low, 4096).max_event(Priority::low, 64).overflow(Priority::low, Overflow::fail);
    opt.topic.capacity(Priority::high, 4096).max_event(Priority::high, 64).overflow(Priority::high, Overflow::block,
                                                                                    std::chrono::milliseconds(200));
    auto p = bus.publisher<Small>(opt);
    REQUIRE(p.has_value());
    auto s = bus.subscriber<Small>();  // joins, then stays away
    REQUIRE(s.has_value());
    CHECK(p->topic().lanes[3].overflow == Overflow::fail);
    CHECK(p->topic().lanes[1].overflow == Overflow::block);

    std::uint64_t low = 0;
    while (p->publish(Small{low}, Priority::low)) ++low;
    CHECK(low == 4096 / 64);
    auto e = p->publish(Small{999}, Priority::low);
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error().code == Errc::full);
    CHECK(p->counters(Priority::low).full == 2);  // the one that ended the loop and this one
    CHECK(p->counters(Priority::low).published == low);

    std::uint64_t high = 0;
    for (;; ++high) {
        auto st = p->publish(Small{high}, Priority::high);
        if (!st) {
            CHECK(st.error().code == Errc::timeout);
            break;
        }
    }
    CHECK(high == 4096 / 64);
    CHECK(p->counters(Priority::high).timeouts == 1);
    CHECK(p->counters(Priority::high).full == 1);

    // Everything that was accepted is delivered, High before Low, each lane in order.
    for (std::uint64_t i = 0; i < high; ++i) {
        auto ev = s->try_receive();
        REQUIRE(ev.has_value());
        CHECK(ev->priority() == Priority::high);
        CHECK((*ev)->v == i);
    }
    for (std::uint64_t i = 0; i < low; ++i) {
        auto ev = s->try_receive();
        REQUIRE(ev.has_value());
        CHECK(ev->priority() == Priority::low);
        CHECK((*ev)->v == i);
    }
    CHECK(s->try_receive().error().code == Errc::would_block);
}

TEST_CASE("a blocked publisher proceeds as soon as the subscriber makes room") {
    Broker b;
    auto bus = connect(b);
    PublisherOptions opt;
    opt.topic.capacity(Priority::normal, 4096).max_event(Priority::normal, 64).overflow(Priority::normal, Overflow::block,
                                                                                        std::chrono::seconds(60));
    auto p = bus.publisher<Small>(opt);
    auto s = bus.subscriber<Small>();
    REQUIRE(p.has_value());
    REQUIRE(s.has_value());
    std::thread consumer([&] {
        for (std::uint64_t i = 0; i < 10'000; ++i) {
            auto ev = s->receive_for(std::chrono::seconds(60));
            REQUIRE(ev.has_value());
            REQUIRE((*ev)->v == i);
        }
    });
    for (std::uint64_t i = 0; i < 10'000; ++i) REQUIRE(p->publish(Small{i}).has_value());
    consumer.join();
    CHECK(p->counters(Priority::normal).timeouts == 0);
}

TEST_CASE("a reclaim is refused for a slot held for another process, and for a ring the broker did not adopt") {
    Broker b({"--segments", "named"}, /*cleanup=*/false);  // named: the test reads the ring's key by name
    Process holder(peer(b, {"hold"}));  // a publisher of test.schema, slot 0, in another process
    holder.expect_ready();
    b.restart(SIGKILL);  // the new broker holds slot 0 for the holder's pid until it reclaims it
    std::uint64_t key = 0;
    {
        std::ifstream f("/dev/shm/" + b.prefix() + ".test.schema.data", std::ios::binary);
        f.seekg(offsetof(layout::TopicHeader, record_key));
        f.read(reinterpret_cast<char*>(&key), sizeof key);
        REQUIRE(f.good());
    }
    int fd = raw_connect(b.socket());
    REQUIRE(proto::send_message(fd, proto::Message{1, proto::Hello{proto::kMinProtocolVersion, proto::kProtocolVersion, 1, "intruder"}}).has_value());
    auto hello = proto::recv_frame(fd);
    REQUIRE(hello.has_value());
    proto::close_fds(hello->fds);
    REQUIRE(proto::send_message(fd, proto::Message{2, proto::Reclaim{proto::Role::publisher, "test.schema", key, 0, layout::kNoDoorbell}}).has_value());
    auto e = expect_error(fd);
    CHECK(e.code == Errc::permission_denied);  // the broker goes by the socket's peer pid, not by anything in the message
    CHECK(e.message.find("not held for pid") != std::string::npos);
    REQUIRE(proto::send_message(fd, proto::Message{3, proto::Reclaim{proto::Role::publisher, "test.schema", key ^ 1, 0, layout::kNoDoorbell}}).has_value());
    e = expect_error(fd);
    CHECK(e.code == Errc::no_such_topic);
    CHECK(e.message.find("created anew") != std::string::npos);
    REQUIRE(proto::send_message(fd, proto::Message{4, proto::Reclaim{proto::Role::subscriber, "no.such", key, 0, 0}}).has_value());
    CHECK(expect_error(fd).code == Errc::no_such_topic);
    REQUIRE(proto::send_message(fd, proto::Message{5, proto::Reclaim{proto::Role::publisher, "test.schema", key, 999, 0}}).has_value());
    CHECK(expect_error(fd).code == Errc::invalid_argument);
    ::close(fd);
    holder.close_stdin();
    CHECK(holder.exit_code() == 0);
}

TEST_CASE("named segments: a client that truncates a segment it was handed cannot take the broker down; other topics go on") {
    Broker b({"--segments", "named"});  // sealed ones cannot be truncated at all (next test)
    auto bus = connect(b);
    auto pub = bus.raw_publisher("safe.topic");
    REQUIRE(pub.has_value());
    auto sub = bus.raw_subscriber("safe.topic");
    REQUIRE(sub.has_value());

    // A raw client joins "trunc.me" as subscriber (so the eviction monitor watches it) and publisher,
    // keeps the descriptors, and truncates the data segment it may write.
    int fd = raw_connect(b.socket());
    auto call = [&](std::uint64_t corr, proto::Body body) {
        REQUIRE(proto::send_message(fd, proto::Message{corr, std::move(body)}).has_value());
        auto f = proto::recv_frame(fd);
        REQUIRE(f.has_value());
        auto m = proto::decode(f->bytes);
        REQUIRE(m.has_value());
        return std::make_pair(std::move(m->body), std::move(f->fds));
    };
    auto [hello, hello_fds] = call(1, proto::Hello{proto::kMinProtocolVersion, proto::kProtocolVersion, std::uint32_t(::getpid()), "truncator"});
    proto::close_fds(hello_fds);
    proto::OpenTopic o;
    o.topic = "trunc.me";
    o.fingerprint = raw_fingerprint();
    auto [topic, topic_fds] = call(2, o);
    const auto id = std::get<proto::TopicOk>(topic).topic_id;
    auto [subok, sub_fds] = call(3, proto::AddSubscriber{id, layout::kNoDoorbell, proto::StartAt::tail});
    REQUIRE(std::holds_alternative<proto::SubscriberOk>(subok));
    auto [pubok, pub_fds] = call(4, proto::AddPublisher{id});
    REQUIRE(std::holds_alternative<proto::PublisherOk>(pubok));
    REQUIRE(pub_fds.size() == 3);
    REQUIRE(::ftruncate(pub_fds[0], 0) == 0);  // a named segment is not sealed: see docs/security.md

    // The broker notices before it touches those rings again: the monitor's ticks, stats, new slots.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto [again, again_fds] = call(5, proto::AddSubscriber{id, layout::kNoDoorbell, proto::StartAt::tail});
    auto* e = std::get_if<proto::ErrorReply>(&again);
    REQUIRE(e != nullptr);
    CHECK(e->code == Errc::corrupt);
    CHECK(e->message.find("damaged") != std::string::npos);
    auto st = bus.stats();
    REQUIRE(st.has_value());
    std::array<std::byte, 8> ev{};
    REQUIRE(pub->publish(ev).has_value());
    CHECK(sub->receive_for(std::chrono::seconds(30)).has_value());
    ::close(fd);  // its slots on the damaged topic are released without touching its rings
    proto::close_fds(sub_fds);
    proto::close_fds(pub_fds);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    CHECK(bus.stats().has_value());
    CHECK(b.stop() == 0);  // alive to the end, and stops cleanly
}

TEST_CASE("a client of topic A cannot affect a subscriber of topic B by any write it can make; no descriptor it holds can be truncated") {
    Broker b;
    auto bus = connect(b);
    auto pub_b = bus.raw_publisher("topic.b");
    REQUIRE(pub_b.has_value());
    SubscriberOptions parked;
    parked.wait.spin = 0;  // parks at once: its wake-ups depend on its doorbell
    auto sub_b = bus.raw_subscriber("topic.b", parked);
    REQUIRE(sub_b.has_value());

    // A raw client publishes and subscribes on topic.a, so it holds every descriptor a client of A can
    // get, plus the broker segment every client gets at hello.
    int fd = raw_connect(b.socket());
    std::vector<int> held;
    std::uint64_t corr = 0;
    auto call = [&](proto::Body body) {
        REQUIRE(proto::send_message(fd, proto::Message{++corr, std::move(body)}).has_value());
        auto f = proto::recv_frame(fd);
        REQUIRE(f.has_value());
        held.insert(held.end(), f->fds.begin(), f->fds.end());
        auto m = proto::decode(f->bytes);
        REQUIRE(m.has_value());
        return std::move(m->body);
    };
    call(proto::Hello{proto::kMinProtocolVersion, proto::kProtocolVersion, std::uint32_t(::getpid()), "scribbler"});
    REQUIRE(held.size() == 1);
    const int broker_segment = held[0];
    proto::OpenTopic o;
    o.topic = "topic.a";
    o.fingerprint = raw_fingerprint();
    const auto id = std::get<proto::TopicOk>(call(o)).topic_id;
    REQUIRE(std::holds_alternative<proto::PublisherOk>(call(proto::AddPublisher{id})));
    REQUIRE(std::holds_alternative<proto::SubscriberOk>(call(proto::AddSubscriber{id, layout::kNoDoorbell, proto::StartAt::tail})));
    REQUIRE(held.size() == 7);

    // Every write it can make: try to shrink and grow every descriptor (all sealed, or read-only), then
    // fill every segment it may map writable with 0xff.
    int writable = 0;
    for (int d : held) {
        struct stat st{};
        REQUIRE(::fstat(d, &st) == 0);
        const bool rw = (::fcntl(d, F_GETFL) & O_ACCMODE) == O_RDWR;
        CAPTURE(rw);
        CHECK(::ftruncate(d, 0) != 0);
        CHECK(errno == (rw ? EPERM : EINVAL));  // EPERM: the seals; EINVAL: not open for writing
        CHECK(::ftruncate(d, st.st_size + 4096) != 0);
        CHECK(::fallocate(d, 0, st.st_size, 4096) != 0);
        CHECK(::fcntl(d, F_ADD_SEALS, F_SEAL_WRITE) != 0);  // nor sealed further (F_SEAL_SEAL)
        struct stat after{};
        REQUIRE(::fstat(d, &after) == 0);
        CHECK(after.st_size == st.st_size);
        void* m = ::mmap(nullptr, std::size_t(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, d, 0);
        if (!rw) {
            CHECK(m == MAP_FAILED);  // read-only: cannot be mapped writable
            continue;
        }
        REQUIRE(m != MAP_FAILED);
        ++writable;
        std::memset(m, 0xff, std::size_t(st.st_size));
        ::munmap(m, std::size_t(st.st_size));
    }
    CHECK(writable == 4);  // A's data (as publisher), A's cursors (as subscriber), A's doorbells twice
    void* m = ::mmap(nullptr, 64, PROT_READ | PROT_WRITE, MAP_SHARED, broker_segment, 0);
    CHECK(m == MAP_FAILED);  // the segment every client gets is read-only

    // Topic B never noticed: a parked subscriber is woken for every event.
    for (std::uint64_t i = 0; i < 200; ++i) {
        std::array<std::byte, 8> ev{};
        std::memcpy(ev.data(), &i, sizeof i);
        REQUIRE(pub_b->publish(ev).has_value());
        auto got = sub_b->receive_for(std::chrono::seconds(30));
        REQUIRE(got.has_value());
        std::uint64_t v = 0;
        std::memcpy(&v, got->bytes().data(), sizeof v);
        CHECK(v == i);
    }
    proto::close_fds(held);
    ::close(fd);
    CHECK(bus.stats().has_value());
}
