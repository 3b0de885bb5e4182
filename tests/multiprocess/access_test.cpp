// Access control against a real rvoip-eventd, with clients running as other users: each case forks a
// child that drops to a test uid (the tests run as root) and reports what it could and could not do.
#include "proto/channel.hpp"
#include "rvoip/events.hpp"
#include "tests/multiprocess/as_user.hpp"
#include "tests/multiprocess/harness.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <functional>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

constexpr uid_t kPublisher = 20001, kSubscriber = 20002, kNoCritical = 20003, kStranger = 20004;
constexpr gid_t kGroup = 20010;

std::string code(const Error& e) { return std::string(to_string(e.code)); }

// A broker with access rules, its socket reachable by every user (mode 0666 in a 0755 directory): the
// rules alone decide.
struct Secured {
    std::string acl_path;
    std::optional<Broker> broker;
    Secured() {
        REQUIRE_MESSAGE(::geteuid() == 0, "these tests switch to other users: run them as root (CI does)");
        char tmpl[] = "/tmp/rvoip-acl-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        acl_path = std::string(tmpl) + "/rules.acl";
        std::ofstream(acl_path) << "sec.*     publish,critical,create  uid:20001\n"
                                   "sec.*     subscribe                uid:20002\n"
                                   "sec.open  publish                  uid:20003\n"
                                   "sec.open  subscribe                gid:20010\n";
        broker.emplace(std::vector<std::string>{"--acl", acl_path, "--socket-mode", "0666"});
        ::chmod(std::filesystem::path(broker->socket()).parent_path().c_str(), 0755);
    }
    ~Secured() { std::filesystem::remove_all(std::filesystem::path(acl_path).parent_path()); }
    std::string socket() const { return broker->socket(); }
};

Result<EventSystem> connect(const std::string& socket) { return EventSystemBuilder().socket_path(socket).client_name("acl-test").build(); }

}  // namespace

TEST_CASE("an unauthorised uid is refused at hello and cannot open any segment") {
    Secured s;
    auto root = connect(s.socket());
    REQUIRE(root.has_value());
    auto held = root->raw_publisher("sec.a");  // root may do everything: the topic exists now
    REQUIRE(held.has_value());
    // The segments are sealed memfds: no name in /dev/shm, and the broker's descriptors are out of reach
    // through /proc. A named one (--segments named, tested below) is mode 0600.
    const std::string seg = "/dev/shm/" + s.broker->prefix() + ".sec.a.data";
    const std::string fds = "/proc/" + std::to_string(s.broker->process().pid()) + "/fd/";
    auto o = as_user(kStranger, kStranger, {}, [&] {
        auto bus = connect(s.socket());
        std::string r = bus ? "connected" : code(bus.error()) + " " + bus.error().message;
        int fd = ::open(seg.c_str(), O_RDONLY);
        r += fd < 0 && errno == ENOENT ? "|segment:none" : "|segment:open";
        for (int n = 3; n < 64; ++n)
            if (int f = ::open((fds + std::to_string(n)).c_str(), O_RDONLY); f >= 0 || errno != EACCES)
                return r + "|broker fd " + std::to_string(n) + ": " + (f >= 0 ? "opened" : std::strerror(errno));
        return r + "|broker fds:EACCES";
    });
    INFO(o.said);
    CHECK(o.exit_code == 0);
    CHECK(o.said.starts_with("permission_denied"));
    CHECK(o.said.find("uid 20004") != std::string::npos);
    CHECK(o.said.ends_with("|segment:none|broker fds:EACCES"));

    Broker named({"--segments", "named", "--acl", s.acl_path});
    auto root2 = connect(named.socket());
    REQUIRE(root2.has_value());
    REQUIRE(root2->raw_publisher("sec.a").has_value());
    const std::string named_seg = "/dev/shm/" + named.prefix() + ".sec.a.data";
    auto n = as_user(kStranger, kStranger, {}, [&] {
        int fd = ::open(named_seg.c_str(), O_RDONLY);
        return std::string(fd < 0 && errno == EACCES ? "segment:EACCES" : "segment:open");
    });
    CHECK(n.said == "segment:EACCES");
}

TEST_CASE("no descriptor a client holds can be truncated, grown, or reopened writable") {
    Secured s;
    auto root = connect(s.socket());
    REQUIRE(root.has_value());
    REQUIRE(root->raw_publisher("sec.a").has_value());  // the topic exists (uid 20002 may not create)
    auto o = as_user(kSubscriber, kSubscriber, {}, [&] {
        // A raw client, so that it keeps the descriptors the library would map and close.
        int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, s.socket().c_str(), sizeof a.sun_path - 1);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return std::string("connect failed");
        std::vector<int> held;
        std::uint64_t corr = 0;
        auto call = [&](proto::Body body) -> std::optional<proto::Body> {
            if (!proto::send_message(fd, proto::Message{++corr, std::move(body)})) return std::nullopt;
            auto f = proto::recv_frame(fd);
            if (!f) return std::nullopt;
            held.insert(held.end(), f->fds.begin(), f->fds.end());
            auto m = proto::decode(f->bytes);
            if (!m) return std::nullopt;
            return std::move(m->body);
        };
        call(proto::Hello{proto::kMinProtocolVersion, proto::kProtocolVersion, std::uint32_t(::getpid()), "holder"});
        proto::OpenTopic ot;
        ot.topic = "sec.a";
        ot.fingerprint = raw_fingerprint();
        auto topic = call(ot);
        if (!topic || !std::holds_alternative<proto::TopicOk>(*topic)) return std::string("open_topic refused");
        auto sub = call(proto::AddSubscriber{std::get<proto::TopicOk>(*topic).topic_id, layout::kNoDoorbell, proto::StartAt::tail});
        if (!sub || !std::holds_alternative<proto::SubscriberOk>(*sub)) return std::string("add_subscriber refused");
        std::string r = std::to_string(held.size()) + " descriptors";
        for (int d : held) {
            struct stat st{};
            ::fstat(d, &st);
            const std::string reopen = "/proc/self/fd/" + std::to_string(d);
            int w = ::open(reopen.c_str(), O_RDWR);
            if (w >= 0 || errno != EACCES) r += "|" + std::to_string(d) + " reopened writable";
            if (::ftruncate(d, 0) == 0 || ::ftruncate(d, st.st_size * 2) == 0) r += "|" + std::to_string(d) + " resized";
            if (::fallocate(d, 0, st.st_size, 4096) == 0) r += "|" + std::to_string(d) + " grown";
        }
        return r;
    });
    INFO(o.said);
    CHECK(o.exit_code == 0);
    CHECK(o.said == "4 descriptors");  // the broker segment, the data (read-only), the cursors, the doorbells
}

TEST_CASE("a subscribe-only uid cannot publish; a publisher without the Critical right is refused on that lane only") {
    Secured s;
    auto creator = as_user(kNoCritical, kNoCritical, {}, [&] {
        auto bus = connect(s.socket());
        if (!bus) return "connect: " + bus.error().what();
        auto p = bus->raw_publisher("sec.open");  // may publish, may not create
        return p ? std::string("created") : code(p.error()) + " " + p.error().message;
    });
    INFO(creator.said);
    CHECK(creator.said.starts_with("permission_denied"));
    CHECK(creator.said.find("may not create") != std::string::npos);

    auto root = connect(s.socket());
    REQUIRE(root.has_value());
    auto topic = root->raw_publisher("sec.open");  // created by an authorised party
    REQUIRE(topic.has_value());
    auto other = root->raw_publisher("sec.a");
    REQUIRE(other.has_value());

    auto sub_only = as_user(kSubscriber, kSubscriber, {}, [&] {
        auto bus = connect(s.socket());
        if (!bus) return "connect: " + bus.error().what();
        auto p = bus->raw_publisher("sec.a");
        auto q = bus->raw_subscriber("sec.a");
        return (p ? std::string("published") : code(p.error())) + "|" + (q ? std::string("subscribed") : code(q.error()));
    });
    CHECK(sub_only.said == "permission_denied|subscribed");

    auto no_critical = as_user(kNoCritical, kNoCritical, {}, [&] {
        auto bus = connect(s.socket());
        if (!bus) return "connect: " + bus.error().what();
        auto p = bus->raw_publisher("sec.open");
        if (!p) return "publisher: " + p.error().what();
        std::array<std::byte, 8> ev{};
        auto normal = p->publish(ev, Priority::normal);
        auto critical = p->publish(ev, Priority::critical);
        auto loan = p->loan(8, Priority::critical);
        return (normal ? std::string("normal ok") : code(normal.error())) + "|" + (critical ? std::string("critical ok") : critical.error().what()) +
               "|" + (loan ? std::string("loan ok") : code(loan.error()));
    });
    INFO(no_critical.said);
    CHECK(no_critical.said.starts_with("normal ok|permission_denied"));
    CHECK(no_critical.said.find("critical lane") != std::string::npos);
    CHECK(no_critical.said.ends_with("|permission_denied"));

    auto by_group = as_user(29999, 29999, {kGroup}, [&] {  // granted through a supplementary group
        auto bus = connect(s.socket());
        if (!bus) return "connect: " + bus.error().what();
        auto q = bus->raw_subscriber("sec.open");
        auto p = bus->raw_publisher("sec.open");
        return (q ? std::string("subscribed") : code(q.error())) + "|" + (p ? std::string("published") : code(p.error()));
    });
    CHECK(by_group.said == "subscribed|permission_denied");

    // The broker's view for such a client lists only topics it may use.
    auto listed = as_user(kNoCritical, kNoCritical, {}, [&] {
        auto bus = connect(s.socket());
        if (!bus) return "connect: " + bus.error().what();
        auto st = bus->stats();
        if (!st) return "stats: " + st.error().what();
        std::string names;
        for (auto& t : st->topics) names += t.topic + ";";
        return names;
    });
    CHECK(listed.said == "sec.open;");
}

TEST_CASE("a subscriber cannot write the ring it reads: a write attempt kills only itself") {
    Secured s;
    auto root = connect(s.socket());
    REQUIRE(root.has_value());
    auto pub = root->raw_publisher("sec.a");
    REQUIRE(pub.has_value());
    auto sub = root->raw_subscriber("sec.a");
    REQUIRE(sub.has_value());
    const std::string name = s.broker->prefix() + ".sec.a.data";
    auto o = as_user(kSubscriber, kSubscriber, {}, [&] {
        auto bus = connect(s.socket());
        if (!bus) return "connect: " + bus.error().what();
        auto q = bus->raw_subscriber("sec.a");
        if (!q) return "subscriber: " + q.error().what();
        std::ifstream maps("/proc/self/maps");
        for (std::string line; std::getline(maps, line);) {
            if (line.find(name) == std::string::npos) continue;
            auto* at = reinterpret_cast<volatile std::uint64_t*>(std::stoull(line.substr(0, line.find('-')), nullptr, 16));
            const std::string perms = line.substr(line.find(' ') + 1, 4);
            if (perms[1] == 'w') return "mapped writable: " + line;
            if (::mprotect(const_cast<std::uint64_t*>(at), 4096, PROT_READ | PROT_WRITE) == 0) return std::string("mprotect allowed");
            *at = 0xdeadbeef;  // the header's magic: must fault
            return std::string("wrote");
        }
        return std::string("no mapping found");
    });
    INFO(o.said);
    CHECK(o.signal == SIGSEGV);
    // Nobody else noticed: the ring still works for root's publisher and subscriber.
    std::array<std::byte, 8> ev{};
    REQUIRE(pub->publish(ev).has_value());
    auto got = sub->receive_for(std::chrono::seconds(30));
    CHECK(got.has_value());
    CHECK(root->stats().has_value());
}
