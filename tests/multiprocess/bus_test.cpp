// EventBus across processes: an rvoip-test-bus-peer process runs a bus over six topics; this test
// publishes. Each burst is published while the peer is stopped (SIGSTOP) with its dispatcher parked, so
// "Critical first" and "one wake-up per burst" do not depend on how fast either side runs: Low events on
// five topics, then a Critical one on the sixth; the peer's handlers must run the Critical one first,
// and its dispatcher must have woken once for the whole burst.
//
// Consumer groups: two peers, each an EventBus with four workers in the same group; this test is the
// keyed publisher. Every event is handled once across the two, each key at one process, in order.
#include "rvoip/events.hpp"
#include "tests/multiprocess/harness.hpp"

#include <dirent.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

// True once a thread of the process sleeps in epoll_wait or epoll_pwait (x86-64 syscalls 232, 281):
// the bus's dispatcher parked on its WaitSet's descriptor.
bool dispatcher_parked(pid_t pid) {
    const std::string dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = ::opendir(dir.c_str());
    if (!d) return false;
    bool parked = false;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::ifstream f(dir + "/" + e->d_name + "/syscall");
        std::string nr;
        if (f >> nr && (nr == "232" || nr == "281")) parked = true;
    }
    ::closedir(d);
    return parked;
}

// Parked and staying parked for 30 ms: in zero-copy mode the last handler's return wakes the dispatcher
// once more (to release the records) just after the peer reported the burst, and a burst published
// while it is up would need no wake-up at all.
void wait_until_parked(pid_t pid) {
    for (int i = 0, stable = 0; i < 6000; ++i) {  // 60 s: a liveness bound
        stable = dispatcher_parked(pid) ? stable + 1 : 0;
        if (stable == 4) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL("the bus's dispatcher (pid " << pid << ") never parked in epoll_wait");
}

// SIGSTOP, then wait until every thread of the process has stopped: kill() returns before they do, and a
// thread a doorbell woke meanwhile could still run (the WaitSet test's peer has one thread; a bus has more).
void stop(Process& p) {
    p.kill(SIGSTOP);
    const std::string dir = "/proc/" + std::to_string(p.pid()) + "/task";
    for (int i = 0; i < 60000; ++i) {  // 60 s: a liveness bound
        bool all = true;
        DIR* d = ::opendir(dir.c_str());
        REQUIRE(d != nullptr);
        while (dirent* e = ::readdir(d)) {
            if (e->d_name[0] == '.') continue;
            std::ifstream f(dir + "/" + e->d_name + "/stat");
            std::string line;
            std::getline(f, line);
            const auto paren = line.rfind(')');  // "pid (comm) S ...": comm may hold spaces
            if (paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'T') all = false;
        }
        ::closedir(d);
        if (all) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    FAIL("pid " << p.pid() << " did not stop");
}

void bursts(std::vector<std::string> extra) {
    constexpr int kTopics = 6, kBursts = 20;
    Broker b;
    std::vector<std::string> argv{RVOIP_BUS_PEER_PATH, "--socket", b.socket(), "--topic", "bus", "--topics", std::to_string(kTopics),
                                  "--count", std::to_string(kTopics * kBursts), "--burst", std::to_string(kTopics)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    Process consumer(argv);
    consumer.expect_ready();

    auto sys = EventSystemBuilder().socket_path(b.socket()).client_name("bus-test").build();
    REQUIRE(sys.has_value());
    auto pubs = raw_publishers(*sys, "bus", kTopics);
    for (int burst = 1; burst <= kBursts; ++burst) {
        wait_until_parked(consumer.pid());
        stop(consumer);
        publish_burst(pubs);  // Low on topics 0..4, then Critical on topic 5: the Critical handler runs first
        consumer.kill(SIGCONT);
        auto line = consumer.read_line(std::chrono::seconds(120));
        REQUIRE(line.has_value());
        check_burst(*line, "handled", kTopics, burst);  // one wake-up of the whole bus per burst
    }
    auto last = consumer.read_line(std::chrono::seconds(60));
    REQUIRE(last.has_value());
    CHECK(*last == "shutdown clean 1");
    CHECK(consumer.exit_code() == 0);
}

}  // namespace

TEST_CASE("an EventBus in another process runs the Critical handler first across six topics and wakes once per burst") {
    bursts({});
}

TEST_CASE("the same in copy mode: the records are released at once, the order and the wake-ups do not change") {
    bursts({"--copy"});
}

namespace {

struct KeyedCall {  // bus_peer.cpp's
    static constexpr std::string_view event_type = "bus.keyed";
    std::uint32_t key;
    std::uint32_t seq;
};

struct Handled {
    std::uint32_t key, seq, partition;
    bool redelivered;
};

std::vector<Handled> read_handled(const std::string& path) {
    std::vector<Handled> v;
    std::ifstream f(path);
    std::string line;
    while (std::getline(f, line)) {
        std::istringstream in(line);
        Handled h{};
        int r = 0;
        if (in >> h.key >> h.seq >> h.partition >> r) {
            h.redelivered = r != 0;
            v.push_back(h);
        }
    }
    return v;
}

}  // namespace

TEST_CASE("two processes' EventBuses in one consumer group: each keyed event handled once, each key at one process, in order") {
    constexpr std::uint32_t kShards = 8, kKeys = 200, kSeqs = 50, kWarmKey = 1'000'000;
    Broker b;
    const auto dir = std::filesystem::temp_directory_path() / ("rvoip-bus-group-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string files[2] = {(dir / "a").string(), (dir / "b").string()};
    auto peer = [&](const std::string& out) {
        return std::vector<std::string>{RVOIP_BUS_PEER_PATH, "--socket", b.socket(), "--group", "session-workers",
                                        "--out",             out,  "--shards", std::to_string(kShards), "--workers", "4"};
    };
    Process a(peer(files[0]));
    a.expect_ready();
    Process c(peer(files[1]));
    c.expect_ready();

    auto sys = EventSystemBuilder().socket_path(b.socket()).client_name("bus-group-test").build();
    REQUIRE(sys.has_value());
    PartitionOptions po;
    po.partitions = kShards;
    auto pub = sys->keyed_publisher<KeyedCall>([](const KeyedCall& k) { return k.key; }, po);
    REQUIRE_MESSAGE(pub.has_value(), pub.error().what());

    // Warm-up until the partitions have settled between the two: one event per partition per round (keys
    // from kWarmKey up, one hashing to each partition), until a round finds each partition handled by
    // one process, four partitions each (the broker deals them alternately).
    std::vector<std::uint32_t> warm_key(kShards, 0);
    for (std::uint32_t k = kWarmKey, found = 0; found < kShards; ++k)
        if (auto p = pub->partition_of(KeyedCall{k, 0}); warm_key[p] == 0) warm_key[p] = k, ++found;
    std::uint32_t warm_seq = 0;
    const auto bound = std::chrono::steady_clock::now() + std::chrono::seconds(120);  // liveness only
    for (bool settled = false; !settled;) {
        REQUIRE_MESSAGE(std::chrono::steady_clock::now() < bound, "the group's partitions never settled between the two processes");
        for (auto k : warm_key) REQUIRE(pub->publish(KeyedCall{k, warm_seq}).has_value());
        std::map<std::uint32_t, int> owner;  // partition -> process that handled this round's event
        for (int i = 0; i < 200 && owner.size() < kShards; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
            owner.clear();
            for (int f = 0; f < 2; ++f)
                for (auto& h : read_handled(files[f]))
                    if (h.key >= kWarmKey && h.seq == warm_seq) owner[h.partition] = f;
        }
        int at_a = 0;
        for (auto& [p, f] : owner) at_a += f == 0;
        settled = owner.size() == kShards && at_a == int(kShards / 2);
        ++warm_seq;
    }

    for (std::uint32_t seq = 0; seq < kSeqs; ++seq)
        for (std::uint32_t k = 0; k < kKeys; ++k) REQUIRE(pub->publish(KeyedCall{k, seq}).has_value());
    std::size_t total = 0;
    while (total < std::size_t(kKeys) * kSeqs) {
        REQUIRE_MESSAGE(std::chrono::steady_clock::now() < bound, "only " << total << " of " << kKeys * kSeqs << " events handled");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        total = 0;
        for (auto& f : files)
            for (auto& h : read_handled(f)) total += h.key < kWarmKey;
    }
    for (Process* p : {&a, &c}) {
        p->write_line("stop");
        auto last = p->read_line(std::chrono::seconds(60));
        REQUIRE(last.has_value());
        CHECK(*last == "shutdown clean 1");
        CHECK(p->exit_code() == 0);
    }

    std::map<std::uint64_t, int> times;           // (key, seq) -> handled, both processes
    std::map<std::uint32_t, std::set<int>> where;  // key -> processes
    std::size_t per_process[2] = {0, 0};
    for (int f = 0; f < 2; ++f) {
        std::map<std::uint32_t, std::uint32_t> last_seq;
        for (auto& h : read_handled(files[f])) {
            ++times[std::uint64_t(h.key) << 32 | h.seq];
            CHECK_FALSE(h.redelivered);
            CHECK(h.partition == pub->partition_of(KeyedCall{h.key, h.seq}));
            if (h.key >= kWarmKey) continue;
            where[h.key].insert(f);
            ++per_process[f];
            if (auto it = last_seq.find(h.key); it != last_seq.end())
                CHECK_MESSAGE(h.seq == it->second + 1, "process " << f << " key " << h.key << ": seq " << h.seq << " after " << it->second);
            else
                CHECK_MESSAGE(h.seq == 0, "process " << f << " key " << h.key << " began at seq " << h.seq);
            last_seq[h.key] = h.seq;
        }
    }
    CHECK(times.size() == std::size_t(kKeys) * kSeqs + std::size_t(kShards) * warm_seq);  // none lost
    for (auto& [ks, n] : times) CHECK_MESSAGE(n == 1, "event (" << (ks >> 32) << ", " << (ks & 0xffffffff) << ") handled " << n << " times");
    CHECK(where.size() == kKeys);
    for (auto& [key, procs] : where) CHECK_MESSAGE(procs.size() == 1, "key " << key << " at both processes");
    CHECK(per_process[0] > 0);
    CHECK(per_process[1] > 0);
    MESSAGE("handled: " << per_process[0] << " + " << per_process[1] << ", warm-up rounds " << warm_seq);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}
