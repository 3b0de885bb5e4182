// rvoip-bench: throughput, latency and VoIP-shaped load of rvoip-events between real processes, through a
// real rvoip-eventd.
//
//   rvoip-bench throughput --size 64 --batch 1 --seconds 3 --json
//   rvoip-bench latency --size 64 --mode spin --json
//   rvoip-bench flood | idle | memory | callstorm | rtp    (scenarios.hpp)
//   rvoip-bench soak --seconds 60 --json                   (soak.hpp: kills and replaces processes, checks)
//   rvoip-bench scale --topics 1000 --subscribers 8 --json (scale.hpp: many topics on the broker's defaults)
//   rvoip-bench limit --size 64 --seconds 2 --json         (limit.hpp: the fastest transfer between two processes)
//
// The benchmark runs its peers as separate processes (this binary again, under the hidden `_child`
// subcommand; see roles.hpp), never as threads, because the product's whole point is crossing processes.
// Without --socket it starts a private rvoip-eventd and stops it afterwards. Methodology: bench/README.md.
#include "bench/limit.hpp"
#include "bench/processes.hpp"
#include "bench/roles.hpp"
#include "bench/scale.hpp"
#include "bench/scenarios.hpp"
#include "bench/soak.hpp"
#include "proto/layout.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cstdio>
#include <numeric>

namespace rvoip::bench {
namespace {

namespace layout = rvoip::events::layout;
using steady = std::chrono::steady_clock;

struct ThroughputOptions {
    Common common;
    std::uint32_t batch = 1;
    double seconds = 3;
    int publishers = 1;
    int subscribers = 1;
    std::uint64_t capacity = 0;  // 0: 8 MiB, or more when a batch needs it
    bool touch = false;
    bool exclusive = false;
};

struct LatencyOptions {
    Common common;
    std::uint64_t count = 0;   // 0: 100000 for spin, 20000 for block
    std::uint64_t warmup = 0;  // 0: a tenth of count, between 100 and 10000
};

// ------------------------------------------------------------------------------------------------------
// throughput

// `auto`: busy-poll while every process has a core of its own; with more processes than cores, spinning
// subscribers would take turns with the publishers they wait for, and the figure would measure the
// scheduler, so they spin briefly and then park (the library's default).
std::string throughput_wait_mode(const ThroughputOptions& t) {
    if (t.common.mode != "auto") return t.common.mode;
    return t.publishers + t.subscribers <= usable_cores() ? "spin" : "spin-park";
}

// The lane is at least 8 MiB and at least four batches, so a publisher never waits for the whole ring to
// drain before its one-CAS batch claim fits.
Expected<std::uint64_t> lane_capacity(const ThroughputOptions& t) {
    if (t.capacity) {
        if (!layout::is_pow2(t.capacity) || t.capacity < layout::kMinCapacity || t.capacity > layout::kMaxCapacity)
            return failure("--capacity must be a power of two from 4096 to 1 GiB");
        // A batch claim may need padding of up to one record before it, and a lane holds two records at least.
        if (t.capacity < std::max<std::uint64_t>(2, t.batch + 1) * layout::record_size(t.common.size))
            return failure("--capacity must hold one batch plus one record (and at least two records) of --size");
        return t.capacity;
    }
    const std::uint64_t need = std::bit_ceil(4 * std::uint64_t(t.batch) * layout::record_size(t.common.size));
    if (need > layout::kMaxCapacity) return failure("--batch x --size is too large for a lane (max 1 GiB, a quarter per batch)");
    return std::max<std::uint64_t>(8u << 20, need);
}

int run_throughput(const ThroughputOptions& t) {
    if (t.exclusive && t.publishers != 1) return fail("--exclusive needs --publishers 1: a lane held alone has one publisher");
    const auto capacity = lane_capacity(t);
    if (!capacity) return fail(capacity.error());
    auto s = open_session(t.common);
    if (!s) return fail(s.error());

    RoleOptions base;
    base.socket = s->socket;
    base.topic = "bench.tput." + unique_suffix();
    base.size = t.common.size;
    base.batch = t.batch;
    base.seconds = t.seconds;
    base.wait = throughput_wait_mode(t);
    base.capacity = *capacity;
    base.publishers = t.publishers;
    base.touch = t.touch;
    base.exclusive = t.exclusive;

    std::vector<Child> children;  // declared after the session: destroyed (killed, reaped) before its broker stops
    children.reserve(std::size_t(t.subscribers + t.publishers));
    std::vector<std::size_t> publishers;
    for (int i = 0; i < t.subscribers + t.publishers; ++i) {
        RoleOptions r = base;
        const bool pub = i >= t.subscribers;
        r.role = pub ? "publisher" : "subscriber";
        r.id = pub ? i - t.subscribers + 1 : i + 1;
        auto c = spawn_role(*s, t.common, r, pub);
        if (!c) return fail(c.error());
        if (pub) publishers.push_back(children.size());
        children.push_back(std::move(*c));
    }
    // Run time: the measured seconds plus a generous allowance for the warm-up laps and a slow machine.
    const auto run_time = std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(t.seconds)) + std::chrono::seconds(120);
    auto fields = run_children(children, publishers, run_time);
    if (!fields) return fail(fields.error());
    if (auto st = finish(children, *s); !st) return fail(st.error());

    // Publishers' totals; every subscriber must have seen exactly these (lossless).
    std::uint64_t events = 0, warm = 0, timeouts = 0;
    double pub_rate = 0;
    for (auto i : publishers) {
        const auto& f = (*fields)[i];
        events += std::uint64_t(f["events"]);
        warm += std::uint64_t(f["warmup"]);
        timeouts += std::uint64_t(f["timeouts"]);
        const auto ns = f["end_ns"] - f["start_ns"];
        if (ns > 0) pub_rate += double(f["events"]) * 1e9 / double(ns);
    }
    std::vector<double> sub_rates;
    for (int i = 0; i < t.subscribers; ++i) {
        const auto& f = (*fields)[std::size_t(i)];
        if (std::uint64_t(f["events"]) != events || std::uint64_t(f["warmup"]) != warm)
            return fail(children[std::size_t(i)].label() + " received " + std::to_string(f["events"]) + " + " + std::to_string(f["warmup"]) +
                        " warm-up events of " + std::to_string(events) + " + " + std::to_string(warm) + " published: events were lost");
        const auto ns = f["last_ns"] - f["first_ns"];
        sub_rates.push_back(ns > 0 ? double(f["events"] - f["first_batch"]) * 1e9 / double(ns) : 0.0);
    }
    // Every subscriber receives every event, so the slowest one is the rate the system sustains.
    const double rate = *std::min_element(sub_rates.begin(), sub_rates.end());
    // Deliveries per second, all subscribers together (fan-out multiplies what one publish achieves).
    const double aggregate = std::accumulate(sub_rates.begin(), sub_rates.end(), 0.0);
    const int spinning = t.publishers + (base.wait == "spin" ? t.subscribers : 0);

    if (t.common.json) {
        Json j;
        j.str("benchmark", "throughput").num("size", t.common.size).num("batch", t.batch).real("seconds", t.seconds, 3);
        j.str("mode", t.common.mode).str("wait_mode", base.wait).num("publishers", t.publishers).num("subscribers", t.subscribers);
        j.num("events", std::int64_t(events)).num("warmup_events", std::int64_t(warm));
        j.real("events_per_sec", rate).real("bytes_per_sec", rate * t.common.size);
        j.reals("per_subscriber_events_per_sec", sub_rates).real("aggregate_events_per_sec", aggregate);
        j.reals("subscriber_events_per_sec", sub_rates);  // the earlier name of per_subscriber_events_per_sec
        j.real("publisher_events_per_sec", pub_rate);
        j.num("full_retries", std::int64_t(timeouts)).boolean("lossless", true).num("lane_capacity", std::int64_t(*capacity));
        j.boolean("touch_payload", t.touch).boolean("exclusive", t.exclusive);
        j.str("broker", s->broker ? "private" : "external");
        add_load_notes(j, spinning);
        std::printf("%s\n", j.text().c_str());
    } else {
        char fan_out[64] = "";
        if (t.subscribers > 1) std::snprintf(fan_out, sizeof fan_out, " each, %.2f M deliveries/s in all", aggregate / 1e6);
        std::printf("throughput: %u-byte events, batch %u, %d %spublisher(s) -> %d subscriber(s), %s: %.2f M events/s (%.1f MB/s)"
                    "%s; %" PRIu64 " events in %.2f s, %" PRIu64 " full retries, none lost%s\n",
                    t.common.size, t.batch, t.publishers, t.exclusive ? "exclusive " : "", t.subscribers, base.wait.c_str(), rate / 1e6, rate * t.common.size / 1e6,
                    fan_out, events, t.seconds, timeouts, spinning > usable_cores() ? " (more spinning processes than cores: distorted)" : "");
    }
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// latency

int run_latency(const LatencyOptions& l) {
    const bool spin = l.common.mode == "spin";
    const std::uint64_t count = l.count ? l.count : (spin ? 100'000 : 20'000);
    const std::uint64_t warmup = l.warmup ? l.warmup : std::clamp<std::uint64_t>(count / 10, 100, 10'000);
    auto s = open_session(l.common);
    if (!s) return fail(s.error());
    auto fields = ping_pong(*s, l.common, l.common.size, spin, count, warmup);
    if (!fields) return fail(fields.error());
    std::vector<Child> none;
    if (auto st = finish(none, *s); !st) return fail(st.error());
    const Fields& one_way = fields->first;
    const Fields& rtt = fields->second;

    if (l.common.json) {
        Json j;
        j.str("benchmark", "latency").str("mode", l.common.mode).num("size", l.common.size);
        j.num("samples", one_way["samples"]).num("warmup", std::int64_t(warmup));
        for (auto k : {"p50", "p90", "p99", "p999", "max", "min", "mean"}) j.num(std::string(k) + "_ns", one_way[k]);
        for (auto k : {"p50", "p90", "p99", "p999", "max"}) j.num(std::string("rtt_") + k + "_ns", rtt[k]);
        j.str("method", "one-way = receive time in the echo process minus the stamp the pinger wrote into the ping just before the "
                        "publish call (CLOCK_MONOTONIC, one clock for all processes); rtt = that stamp to pong received, in the pinger");
        j.str("broker", s->broker ? "private" : "external");
        add_load_notes(j, spin ? 2 : 0);
        std::printf("%s\n", j.text().c_str());
    } else {
        std::printf("latency: %u-byte events, %s, %" PRId64 " samples: one-way p50 %" PRId64 " ns, p90 %" PRId64 " ns, p99 %" PRId64
                    " ns, p99.9 %" PRId64 " ns, max %" PRId64 " ns; round trip p50 %" PRId64 " ns\n",
                    l.common.size, l.common.mode.c_str(), one_way["samples"], one_way["p50"], one_way["p90"], one_way["p99"],
                    one_way["p999"], one_way["max"], rtt["p50"]);
    }
    return 0;
}

}  // namespace
}  // namespace rvoip::bench

int main(int argc, char** argv) {
    using namespace rvoip::bench;
    CLI::App app{"rvoip-bench: throughput, latency and VoIP-shaped load of rvoip-events between processes, through rvoip-eventd"};
    app.require_subcommand(1);

    ThroughputOptions tp;
    tp.common.mode = "auto";
    auto* throughput = app.add_subcommand("throughput", "publisher process(es) -> subscriber process(es), events/s as received");
    add_common(throughput, tp.common, {"auto", "spin", "spin-park", "block", "batch"},
               "how subscribers wait: busy-poll (spin), spin then park (spin-park), park at once (block); auto: spin when "
               "every process has a core, else spin-park");
    throughput->add_option("--batch", tp.batch, "events per publish call (publish_batch when > 1)")->check(CLI::Range(1u, 65536u))->capture_default_str();
    throughput->add_option("--seconds", tp.seconds, "how long the publishers publish")->check(CLI::Range(0.05, 3600.0))->capture_default_str();
    throughput->add_option("--publishers", tp.publishers, "publisher processes (each spins on a core)")->check(CLI::Range(1, 64))->capture_default_str();
    throughput->add_option("--subscribers", tp.subscribers, "subscriber processes")->check(CLI::Range(1, 64))->capture_default_str();
    throughput->add_option("--capacity", tp.capacity, "lane bytes, a power of two (default: 8 MiB or four batches)");
    throughput->add_flag("--touch-payload", tp.touch, "subscribers read every payload byte (default: only the bench's 16-byte header)");
    throughput->add_flag("--exclusive", tp.exclusive, "the publisher holds its lane alone: claims by plain store, no CAS (one publisher only)");

    LatencyOptions lt;
    auto* latency = app.add_subcommand("latency", "ping-pong between two processes, one-way latency percentiles");
    add_common(latency, lt.common, {"spin", "block"}, "both sides busy-poll (spin) or park on the futex at once (block)");
    latency->add_option("--count", lt.count, "samples kept (default 100000 for spin, 20000 for block)")->check(CLI::Range(1, 100'000'000));
    latency->add_option("--warmup", lt.warmup, "samples thrown away first (default: count/10, 100..10000)")->check(CLI::Range(1, 10'000'000));

    ScenarioCommands scenarios(app);
    SoakCommand soak(app);
    ScaleCommand scale(app);
    LimitCommand limit(app);

    // The hidden subcommand of the role processes; spawn_role (processes.cpp) writes these arguments.
    RoleOptions role;
    auto* child = app.add_subcommand("_child", "a process started by rvoip-bench itself")->group("");  // hidden
    child->add_option("--role", role.role)->required();
    child->add_option("--socket", role.socket)->required();
    child->add_option("--topic", role.topic);
    child->add_option("--topic2", role.topic2);
    child->add_option("--size", role.size);
    child->add_option("--batch", role.batch);
    child->add_option("--seconds", role.seconds);
    child->add_option("--count", role.count);
    child->add_option("--warmup", role.warmup);
    child->add_option("--mode", role.wait);
    child->add_option("--capacity", role.capacity);
    child->add_option("--id", role.id);
    child->add_option("--publishers", role.publishers);
    child->add_option("--interval-ns", role.interval_ns);
    child->add_option("--threads", role.threads);
    child->add_option("--calls", role.calls);
    child->add_flag("--touch", role.touch);
    child->add_flag("--exclusive", role.exclusive);
    child->add_flag("--per-subscription", role.per_subscription);

    CLI11_PARSE(app, argc, argv);

    if (child->parsed()) return run_role(role);
    if (soak.child_parsed()) return soak.run_child();
    if (scale.child_parsed()) return scale.run_child();
    install_signal_handlers();
    if (soak.parsed()) return soak.run();
    if (scale.parsed()) return scale.run();
    if (limit.parsed()) return limit.run();
    if (throughput->parsed()) return run_throughput(tp);
    if (latency->parsed()) return run_latency(lt);
    return scenarios.run_parsed();
}
