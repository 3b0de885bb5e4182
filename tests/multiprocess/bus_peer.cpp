// rvoip-test-bus-peer: an EventBus in a process of its own (tests/multiprocess/bus_test.cpp). It
// subscribes a raw handler to each of --topics topics <topic>.<i>, prints READY, and after every --burst
// handled events prints how many its handlers handled, the dispatcher's wake-ups, and the order the
// handlers ran in as lane:topic-index pairs. Then it shuts the bus down and reports whether that was clean.
//
// With --group G --out FILE it is instead a member of consumer group G on topic "bus.keyed" (KeyedCall
// below, keyed by `key`, over --shards partitions): each handler call writes one line "key seq partition
// redelivered" to FILE (write(2), O_APPEND) as it runs; READY once joined; on a line on stdin (or its
// end) it shuts the bus down and reports as above.
#include "rvoip/events.hpp"

#include <CLI/CLI.hpp>

#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>

#include <fcntl.h>
#include <unistd.h>

using namespace rvoip::events;

namespace {

struct KeyedCall {
    static constexpr std::string_view event_type = "bus.keyed";
    std::uint32_t key;
    std::uint32_t seq;
};

int group_member(EventBus& bus, const std::string& group, const std::string& out) {
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return std::fprintf(stderr, "bus-peer: cannot open %s\n", out.c_str()), 2;
    std::atomic<bool> failed{false};
    auto id = bus.subscribe_group<KeyedCall>(group, [](const KeyedCall& c) { return c.key; }, [&](const KeyedCall& c, const EventContext& ctx) {
        char buf[96];
        const int n = std::snprintf(buf, sizeof buf, "%u %u %u %d\n", c.key, c.seq, ctx.partition, ctx.redelivered ? 1 : 0);
        if (::write(fd, buf, std::size_t(n)) != n) failed = true;
    });
    if (!id) return std::fprintf(stderr, "bus-peer: %s\n", id.error().what().c_str()), 2;
    std::printf("READY\n");
    std::fflush(stdout);
    std::string line;
    std::getline(std::cin, line);
    auto report = bus.shutdown(std::chrono::seconds(10));
    const bool clean = report && report->clean() && !failed && bus.stats().misrouted == 0 && bus.stats().group_errors == 0;
    std::printf("shutdown clean %d\n", clean ? 1 : 0);
    std::fflush(stdout);
    ::close(fd);
    return clean ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"rvoip-test-bus-peer"};
    std::string socket, topic = "bus";
    std::uint32_t topics = 1;
    std::uint64_t count = 1, burst = 1;
    std::size_t workers = 1;
    bool copy = false;
    double timeout_s = 120;
    std::string group, out;
    std::size_t shards = 8;
    app.add_option("--socket", socket)->required();
    app.add_option("--topic", topic);
    app.add_option("--topics", topics)->check(CLI::Range(1, 128));
    app.add_option("--count", count);
    app.add_option("--burst", burst)->check(CLI::PositiveNumber);
    app.add_option("--workers", workers, "worker_threads (1: handlers run one at a time, in the order they were taken)");
    app.add_flag("--copy", copy, "enable_zero_copy = false");
    app.add_option("--timeout", timeout_s, "seconds to wait for each burst");
    app.add_option("--group", group, "be a member of this consumer group on bus.keyed instead");
    app.add_option("--out", out, "--group: the file of handled events");
    app.add_option("--shards", shards, "--group: shard_count");
    CLI11_PARSE(app, argc, argv);

    auto sys = EventSystemBuilder().socket_path(socket).client_name("bus-peer").build();
    if (!sys) return std::fprintf(stderr, "bus-peer: %s\n", sys.error().what().c_str()), 2;
    const std::size_t capacity = group.empty() ? std::size_t(1) << 20 : std::size_t(1) << 18;
    auto bus = EventBus::create(*sys, {.broadcast_capacity = capacity, .enable_zero_copy = !copy, .shard_count = shards, .worker_threads = workers});
    if (!bus) return std::fprintf(stderr, "bus-peer: %s\n", bus.error().what().c_str()), 2;
    if (!group.empty()) return group_member(**bus, group, out);

    std::mutex m;
    std::condition_variable cv;
    std::string order;
    std::uint64_t handled = 0;
    for (std::uint32_t i = 0; i < topics; ++i) {
        auto id = (*bus)->subscribe_raw(topic + "." + std::to_string(i), [&, i](std::span<const std::byte>, const EventContext& ctx) {
            std::lock_guard lk(m);
            order += (order.empty() ? "" : ",") + std::to_string(int(ctx.priority)) + ":" + std::to_string(i);
            ++handled;
            cv.notify_all();
        });
        if (!id) return std::fprintf(stderr, "bus-peer: %s\n", id.error().what().c_str()), 2;
    }
    std::printf("READY\n");
    std::fflush(stdout);

    for (std::uint64_t target = burst; target <= count; target += burst) {
        std::unique_lock lk(m);
        if (!cv.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return handled >= target; })) {
            std::fprintf(stderr, "bus-peer: handled %llu of %llu\n", (unsigned long long)handled, (unsigned long long)target);
            return 3;
        }
        const auto s = (*bus)->stats();
        std::printf("handled %llu wakeups %llu completion_wakeups %llu order %s\n", (unsigned long long)handled,
                    (unsigned long long)s.dispatcher_wakeups, (unsigned long long)s.completion_wakeups, order.c_str());
        std::fflush(stdout);
        order.clear();
    }
    auto report = (*bus)->shutdown(std::chrono::seconds(10));
    std::printf("shutdown clean %d\n", report && report->clean() ? 1 : 0);
    return report && report->clean() ? 0 : 3;
}
