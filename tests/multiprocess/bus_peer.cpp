// rvoip-test-bus-peer: an EventBus in a process of its own (tests/multiprocess/bus_test.cpp). It
// subscribes a raw handler to each of --topics topics <topic>.<i>, prints READY, and after every --burst
// handled events prints how many its handlers handled, the dispatcher's wake-ups, and the order the
// handlers ran in as lane:topic-index pairs. Then it shuts the bus down and reports whether that was clean.
#include "rvoip/events.hpp"

#include <CLI/CLI.hpp>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>

using namespace rvoip::events;

int main(int argc, char** argv) {
    CLI::App app{"rvoip-test-bus-peer"};
    std::string socket, topic = "bus";
    std::uint32_t topics = 1;
    std::uint64_t count = 1, burst = 1;
    std::size_t workers = 1;
    bool copy = false;
    double timeout_s = 120;
    app.add_option("--socket", socket)->required();
    app.add_option("--topic", topic);
    app.add_option("--topics", topics)->check(CLI::Range(1, 128));
    app.add_option("--count", count);
    app.add_option("--burst", burst)->check(CLI::PositiveNumber);
    app.add_option("--workers", workers, "worker_threads (1: handlers run one at a time, in the order they were taken)");
    app.add_flag("--copy", copy, "enable_zero_copy = false");
    app.add_option("--timeout", timeout_s, "seconds to wait for each burst");
    CLI11_PARSE(app, argc, argv);

    auto sys = EventSystemBuilder().socket_path(socket).client_name("bus-peer").build();
    if (!sys) return std::fprintf(stderr, "bus-peer: %s\n", sys.error().what().c_str()), 2;
    auto bus = EventBus::create(*sys, {.enable_zero_copy = !copy, .worker_threads = workers});
    if (!bus) return std::fprintf(stderr, "bus-peer: %s\n", bus.error().what().c_str()), 2;

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
