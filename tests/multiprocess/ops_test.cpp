// Operating rvoip-eventd: starting, refusing a second instance, stopping cleanly, bad flags.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

#include <filesystem>

#include <sys/mman.h>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {
struct Tick {
    static constexpr std::string_view event_type = "ops.tick";
    std::uint64_t n;
};

bool shm_exists(const std::string& name) { return std::filesystem::exists("/dev/shm/" + name); }

bool stored(Broker& b, const std::string& name) {
    auto v = b.manager().stored();
    return std::find(v.begin(), v.end(), b.prefix() + "." + name) != v.end();
}
}  // namespace

TEST_CASE("sealed segments: the service manager keeps every one; --cleanup drops them, a plain stop keeps them") {
    for (bool cleanup : {true, false}) {
        CAPTURE(cleanup);
        Broker b({}, cleanup);
        {
            auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("ops").build();
            REQUIRE(bus.has_value());
            REQUIRE(bus->publisher<Tick>().has_value());
            for (auto name : {"ops.tick.data", "ops.tick.cursors", "ops.tick.bells", "doorbells"}) CHECK(stored(b, name));
            CHECK_FALSE(shm_exists(b.prefix() + ".ops.tick.data"));  // no name in /dev/shm to open or truncate
        }
        CHECK(b.stop() == 0);
        for (auto name : {"ops.tick.data", "ops.tick.cursors", "ops.tick.bells", "doorbells"}) CHECK(stored(b, name) == !cleanup);
    }
}

namespace {
const std::vector<std::string> kNamed{"--segments", "named"};
}  // namespace

TEST_CASE("SIGTERM stops the broker with status 0; --cleanup removes its socket and segments") {
    Broker b(kNamed);
    {
        auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("ops").build();
        REQUIRE(bus.has_value());
        auto p = bus->publisher<Tick>();
        REQUIRE(p.has_value());
        CHECK(shm_exists(b.prefix() + ".ops.tick.data"));
        CHECK(shm_exists(b.prefix() + ".ops.tick.cursors"));
        CHECK(shm_exists(b.prefix() + ".doorbells"));
    }
    CHECK(b.stop() == 0);
    CHECK_FALSE(std::filesystem::exists(b.socket()));
    CHECK_FALSE(shm_exists(b.prefix() + ".ops.tick.data"));
    CHECK_FALSE(shm_exists(b.prefix() + ".ops.tick.bells"));
    CHECK_FALSE(shm_exists(b.prefix() + ".doorbells"));
}

TEST_CASE("without --cleanup a stopped broker keeps the segments, so a restart loses nothing in them") {
    const std::string prefix = "rvoip-test-keep-" + std::to_string(::getpid());
    const std::string dir = std::filesystem::temp_directory_path() / ("rvoip-keep-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string sock = dir + "/broker.sock";
    {
        Process d({RVOIP_EVENTD_PATH, "--foreground", "--socket", sock, "--shm-prefix", prefix, "--log-level", "warn"});
        for (int i = 0; i < 3000 && !std::filesystem::exists(sock); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        {
            auto bus = EventSystemBuilder().socket_path(sock).client_name("ops").build();
            REQUIRE(bus.has_value());
            REQUIRE(bus->publisher<Tick>().has_value());
        }
        d.kill(SIGTERM);
        CHECK(d.exit_code() == 0);
    }
    CHECK(shm_exists(prefix + ".ops.tick.data"));
    CHECK(shm_exists(prefix + ".ops.tick.bells"));
    for (auto suffix : {".ops.tick.data", ".ops.tick.cursors", ".ops.tick.bells", ".doorbells"}) std::filesystem::remove("/dev/shm/" + prefix + suffix);
    std::filesystem::remove_all(dir);
}

TEST_CASE("the socket path appears only once the broker serves: a client connecting the moment it appears is never refused") {
    const std::string prefix = "rvoip-test-appear-" + std::to_string(::getpid());
    const std::string dir = std::filesystem::temp_directory_path() / ("rvoip-appear-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string sock = dir + "/broker.sock";
    for (int round = 0; round < 10; ++round) {
        CAPTURE(round);
        Process d({RVOIP_EVENTD_PATH, "--foreground", "--socket", sock, "--shm-prefix", prefix, "--cleanup", "--log-level", "warn"});
        for (int i = 0; i < 3000 && !std::filesystem::exists(sock); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        {
            auto bus = EventSystemBuilder().socket_path(sock).client_name("ops").build();
            REQUIRE_MESSAGE(bus.has_value(), (bus ? std::string() : bus.error().what()));
        }
        d.kill(SIGTERM);
        CHECK(d.exit_code() == 0);
        CHECK_FALSE(std::filesystem::exists(sock));
    }
    CHECK(std::filesystem::is_empty(dir));  // no staging name left behind
    std::filesystem::remove_all(dir);
}

TEST_CASE("a second broker on the same socket is refused and the first keeps serving") {
    Broker b;
    Process second({RVOIP_EVENTD_PATH, "--foreground", "--socket", b.socket(), "--shm-prefix", b.prefix() + "-2"});
    CHECK(second.exit_code() == 2);
    auto bus = EventSystemBuilder().socket_path(b.socket()).client_name("ops").build();
    REQUIRE(bus.has_value());
    CHECK(bus->publisher<Tick>().has_value());
}

TEST_CASE("a stale socket file left by a dead broker is replaced on start") {
    Broker first;
    const std::string sock = first.socket();
    first.process().kill(SIGKILL);  // dies without removing its socket
    first.process().wait();
    REQUIRE(std::filesystem::exists(sock));
    Process again({RVOIP_EVENTD_PATH, "--foreground", "--socket", sock, "--shm-prefix", first.prefix() + "-again", "--cleanup",
                   "--log-level", "warn"});
    bool up = false;
    for (int i = 0; i < 3000 && !up; ++i) {
        auto bus = EventSystemBuilder().socket_path(sock).client_name("ops").build();
        up = bus.has_value();
        if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(up);
    again.kill(SIGTERM);
    CHECK(again.exit_code() == 0);
    for (auto suffix : {".doorbells"}) std::filesystem::remove("/dev/shm/" + first.prefix() + suffix);
}

TEST_CASE("bad flags are refused with a message and a non-zero status") {
    Process bad_level({RVOIP_EVENTD_PATH, "--foreground", "--log-level", "chatty"});
    CHECK(bad_level.exit_code() != 0);
    Process bad_prefix({RVOIP_EVENTD_PATH, "--foreground", "--socket", "/tmp/rvoip-badprefix.sock", "--shm-prefix", "a/b"});
    CHECK(bad_prefix.exit_code() == 2);
    Process bad_doorbells({RVOIP_EVENTD_PATH, "--foreground", "--doorbells", "0"});
    CHECK(bad_doorbells.exit_code() != 0);
    Process long_path({RVOIP_EVENTD_PATH, "--foreground", "--socket", "/tmp/" + std::string(200, 'x')});
    CHECK(long_path.exit_code() == 2);
}

TEST_CASE("a broker restarted after a crash adopts the rings: a subscriber started afterwards gets an old publisher's events") {
    Broker b;
    Process old_pub(peer(b, {"--topic", "call.state", "--size", "64", "--seed", "5", "publish", "--count", "1000", "--wait-go"}));
    old_pub.expect_ready();
    b.restart(SIGKILL);
    Process new_sub(peer(b, {"--topic", "call.state", "--size", "64", "--seed", "5", "subscribe", "--count", "1000", "--timeout", "60"}));
    new_sub.expect_ready();
    old_pub.write_line("go");  // publishes through the ring it mapped before the restart
    auto r = new_sub.read_line(std::chrono::minutes(2));
    REQUIRE(r.has_value());
    INFO(*r);
    CHECK(field(*r, "received") == "1000");
    CHECK(field(*r, "errors") == "0");
    CHECK(old_pub.exit_code() == 0);
}

namespace {
// A subscriber process and a publisher process of `topic` exchange one event through `b`.
void carries_an_event(const Broker& b, const std::string& topic) {
    Process sub(peer(b, {"--topic", topic, "--size", "64", "subscribe", "--count", "1", "--timeout", "60"}));
    sub.expect_ready();
    Process pub(peer(b, {"--topic", topic, "--size", "64", "publish", "--count", "1"}));
    auto r = sub.read_line(std::chrono::minutes(1));
    REQUIRE(r.has_value());
    CHECK(field(*r, "received") == "1");
}
}  // namespace

TEST_CASE("a corrupt segment left by an earlier broker is moved aside with a clear log line, not adopted") {
    Broker b(kNamed);
    {
        Process pub(peer(b, {"--topic", "media.quality", "--size", "64", "publish", "--count", "1"}));
        CHECK(pub.exit_code() == 0);
    }
    const std::string data = "/dev/shm/" + b.prefix() + ".media.quality.data";
    REQUIRE(std::filesystem::exists(data));
    b.restart(SIGKILL);  // the new broker adopted the topic; now break it and restart once more
    {
        std::fstream f(data, std::ios::in | std::ios::out | std::ios::binary);
        const std::uint32_t bad_abi = 999;
        f.seekp(8);
        f.write(reinterpret_cast<const char*>(&bad_abi), 4);
    }
    b.restart(SIGKILL);
    CHECK_FALSE(std::filesystem::exists(data));  // moved aside, not replaced in place
    bool aside = false;
    for (auto& e : std::filesystem::directory_iterator("/dev/shm"))
        if (e.path().filename().string().starts_with(b.prefix() + ".media.quality.data.rejected-")) {
            aside = true;
            std::filesystem::remove(e.path());
        }
    CHECK(aside);
    carries_an_event(b, "media.quality");  // again, on fresh segments
    for (auto& e : std::filesystem::directory_iterator("/dev/shm"))
        if (e.path().filename().string().starts_with(b.prefix() + ".media.quality.cursors.rejected-")) std::filesystem::remove(e.path());
}

TEST_CASE("sealed segments handed back corrupt, or not sealed, are dropped from the store, not adopted") {
    Broker b;
    {
        Process pub(peer(b, {"--topic", "media.quality", "--size", "64", "publish", "--count", "1"}));
        CHECK(pub.exit_code() == 0);
    }
    {  // damage the data segment's header through the store's copy, as only a writer could
        const int fd = b.manager().copy(b.prefix() + ".media.quality.data");
        REQUIRE(fd >= 0);
        void* m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        REQUIRE(m != MAP_FAILED);
        const std::uint32_t bad_abi = 999;
        std::memcpy(static_cast<char*>(m) + 8, &bad_abi, 4);
        ::munmap(m, 4096);
        ::close(fd);
    }
    const int planted = ::memfd_create("planted", MFD_CLOEXEC);  // writable, but nothing stops a truncation
    REQUIRE(planted >= 0);
    REQUIRE(::ftruncate(planted, 1 << 20) == 0);
    b.manager().put(b.prefix() + ".planted.data", planted);
    b.restart(SIGKILL);
    for (auto name : {"media.quality.data", "media.quality.cursors", "media.quality.bells", "planted.data"}) {
        CAPTURE(name);
        CHECK_FALSE(stored(b, name));
    }
    CHECK(stored(b, "doorbells"));
    carries_an_event(b, "media.quality");  // again, on fresh segments, kept like any
    CHECK(stored(b, "media.quality.data"));
}

TEST_CASE("a publisher killed mid-claim while the broker was down is recovered when the broker returns") {
    Broker b;
    Process sub(peer(b, {"--topic", "call.control", "--size", "64", "--seed", "6", "subscribe", "--count", "300", "--timeout", "120"}));
    sub.expect_ready();
    Process dying(peer(b, {"--topic", "call.control", "--size", "64", "loan-and-hang"}));
    dying.expect_ready();  // an open claim at the head of the lane
    Process pub(peer(b, {"--topic", "call.control", "--size", "64", "--seed", "6", "publish", "--count", "300", "--wait-go"}));
    pub.expect_ready();
    b.process().kill(SIGKILL);
    b.process().wait();
    dying.kill(SIGKILL);  // dies while no broker watches
    CHECK(dying.exit_code() == 128 + SIGKILL);
    pub.write_line("go");  // its events queue behind the dead claim
    b.restart(SIGKILL);    // (already dead) a new broker adopts the topic and recovers the dead claim
    auto r = sub.read_line(std::chrono::minutes(2));
    REQUIRE(r.has_value());
    INFO(*r);
    CHECK(field(*r, "received") == "300");
    CHECK(field(*r, "errors") == "0");
    CHECK(pub.exit_code() == 0);
}
