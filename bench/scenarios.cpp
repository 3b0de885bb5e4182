#include "bench/scenarios.hpp"

#include "bench/roles.hpp"
#include "proto/layout.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <sstream>
#include <thread>

#include <sys/stat.h>

namespace rvoip::bench {
namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ------------------------------------------------------------------------------------------------------
// Helpers.

steady::duration seconds_from(double s) { return std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(s)); }

// Waits until every child printed a line starting with `prefix`; returns them parsed.
Expected<std::vector<Fields>> collect(std::vector<Child>& children, std::string_view prefix, steady::duration timeout) {
    std::vector<Child*> all;
    for (auto& c : children) all.push_back(&c);
    auto lines = wait_for_lines(all, prefix, steady::now() + timeout);
    if (!lines) return failure(lines.error());
    std::vector<Fields> fields;
    for (std::size_t i = 0; i < children.size(); ++i) {
        auto f = Fields::parse((*lines)[i], children[i].label());
        if (!f) return failure(f.error());
        fields.push_back(std::move(*f));
    }
    return fields;
}

Done send(Child& c, const std::string& line) { return c.send_line(line); }

// Sleeps, but returns early (with an error) when the bench is interrupted, so everything is still reaped.
Done pause(steady::duration d) {
    const auto until = steady::now() + d;
    while (steady::now() < until) {
        if (interrupted()) return failure("interrupted");
        std::this_thread::sleep_for(std::min<steady::duration>(50ms, until - steady::now()));
    }
    return {};
}

Expected<Child> spawn(const Session& s, const Common& c, RoleOptions r, std::string role, int id, bool wrapped = false) {
    r.role = std::move(role);
    r.id = id;
    return spawn_role(s, c, r, wrapped);
}

// {"samples":..,"p50_ns":..,...} from the "<prefix>samples", "<prefix>p50", ... fields of a role's result.
Json latency_json(const Fields& f, const std::string& prefix) {
    Json j;
    j.num("samples", f[prefix + "samples"]);
    if (f[prefix + "samples"] == 0) return j;
    for (auto k : {"p50", "p90", "p99", "p999", "max"}) j.num(std::string(k) + "_ns", f[prefix + k]);
    return j;
}

double ratio(std::int64_t a, std::int64_t b) { return b > 0 ? double(a) / double(b) : 0.0; }

void print_json(const Json& j) { std::printf("%s\n", j.text().c_str()); }

// ------------------------------------------------------------------------------------------------------
// flood

struct FloodOptions {
    Common common;
    double seconds = 3;  // per phase
    double interval_us = 20;
};

// The phases, in order: pings alone, then the flood, then pings under the flood; then the flood stops and
// the pinger and the echoer report.
Expected<std::vector<Fields>> flood_phases(std::vector<Child>& ch, const FloodOptions& f) {
    Child &echoer = ch[0], &flooder = ch[1], &pinger = ch[2];
    const auto phase_time = seconds_from(f.seconds) + 60s;  // a generous allowance for a swamped machine
    if (auto r = collect(ch, "ready", 30s); !r) return failure(r.error());
    if (auto st = send(pinger, "go idle"); !st) return failure(st.error());
    auto idle = read_fields(pinger, "done", phase_time);
    if (!idle) return failure(idle.error());
    if (auto st = send(flooder, "go"); !st) return failure(st.error());
    if (auto l = flooder.read_line(steady::now() + 30s); !l || *l != "flooding") return failure("flooder did not start: " + (l ? *l : l.error()));
    if (auto st = pause(100ms); !st) return failure(st.error());  // let the flood fill the Low lane
    if (auto st = send(pinger, "go flood"); !st) return failure(st.error());
    auto flood = read_fields(pinger, "done", phase_time);
    if (!flood) return failure(flood.error());
    if (auto st = send(flooder, "stop"); !st) return failure(st.error());
    auto flooded = read_fields(flooder, "result", 60s);
    if (!flooded) return failure(flooded.error());
    if (auto st = send(pinger, "end"); !st) return failure(st.error());
    auto pinged = read_fields(pinger, "result", 60s);
    if (!pinged) return failure(pinged.error());
    auto echoed = read_fields(echoer, "result", 60s);
    if (!echoed) return failure(echoed.error());
    return std::vector<Fields>{*idle, *flood, *flooded, *pinged, *echoed};
}

int run_flood(const FloodOptions& f) {
    auto s = open_session(f.common);
    if (!s) return fail(s.error());
    RoleOptions base;
    base.socket = s->socket;
    base.topic = "bench.flood." + unique_suffix();
    base.size = f.common.size;
    base.seconds = f.seconds;
    base.wait = f.common.mode;
    base.capacity = 4u << 20;  // the Low lane: deep, so the flooder seldom waits for the echoer
    base.interval_ns = std::llround(f.interval_us * 1000);
    // Per phase, the first 5 % of the pings (10 to 10000) warm caches and page tables and are not kept.
    base.warmup = std::clamp<std::uint64_t>(std::uint64_t(f.seconds * 1e9 / double(base.interval_ns)) / 20, 10, 10'000);

    std::vector<Child> children;  // declared after the session: destroyed (killed, reaped) before its broker stops
    for (auto role : {"flood-echoer", "flooder", "flood-pinger"}) {
        auto c = spawn(*s, f.common, base, role, 1, std::string_view(role) == "flood-pinger");
        if (!c) return fail(c.error());
        children.push_back(std::move(*c));
    }
    auto r = flood_phases(children, f);
    if (!r) return fail(r.error());
    if (auto st = finish(children, *s); !st) return fail(st.error());
    const auto &idle = (*r)[0], &flood = (*r)[1], &flooder = (*r)[2], &echo = (*r)[4];
    if (echo["lows"] != flooder["events"])
        return fail("the echoer received " + std::to_string(echo["lows"]) + " flood events of " + std::to_string(flooder["events"]) + ": events were lost");
    const double flood_rate = ratio(flooder["events"], flooder["end_ns"] - flooder["start_ns"]) * 1e9;
    const double ratio_p99 = ratio(echo["flood_p99"], echo["idle_p99"]);

    if (f.common.json) {
        Json j;
        j.str("scenario", "flood").str("mode", f.common.mode).num("size", f.common.size).real("interval_us", f.interval_us, 1);
        j.real("seconds_per_phase", f.seconds, 2).num("warmup_pings_per_phase", std::int64_t(base.warmup));
        j.obj("idle", latency_json(echo, "idle_")).obj("flood", latency_json(echo, "flood_"));
        j.real("flood_events_per_sec", flood_rate).real("ratio_p99", ratio_p99, 2).real("ratio_p50", ratio(echo["flood_p50"], echo["idle_p50"]), 2);
        j.obj("pings_skipped", Json().num("idle", idle["skipped"]).num("flood", flood["skipped"]));
        j.obj("pinger_slow_publishes", Json().num("idle", idle["slow_publishes"]).num("flood", flood["slow_publishes"]));
        j.num("flood_pings_over_100us", echo["flood_late"]).num("of_which_published_while_echoer_stalled", echo["flood_late_stalled"]);
        j.num("flood_full_retries", flooder["timeouts"]).boolean("lossless", true);
        j.str("method", "one topic, Critical pings and Low flood; one-way latency = the echoer's receive time minus the ping's publish "
                        "timestamp (EventSystem::now_ns, the records' timebase); idle phase first, then the same pings under the flood");
        j.str("broker", s->broker ? "private" : "external");
        add_load_notes(j, 1 + (f.common.mode == "spin" ? 1 : 0));
        print_json(j);
    } else {
        std::printf("flood: Critical pings every %.1f us, echoer %s: one-way p50/p99/p99.9/max %" PRId64 "/%" PRId64 "/%" PRId64 "/%" PRId64
                    " ns alone, %" PRId64 "/%" PRId64 "/%" PRId64 "/%" PRId64 " ns under a Low flood of %.2f M events/s (p99 x%.2f)\n",
                    f.interval_us, f.common.mode.c_str(), echo["idle_p50"], echo["idle_p99"], echo["idle_p999"], echo["idle_max"],
                    echo["flood_p50"], echo["flood_p99"], echo["flood_p999"], echo["flood_max"], flood_rate / 1e6, ratio_p99);
    }
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// idle

struct IdleOptions {
    Common common;
    int subscribers = 100;
    int processes = 0;  // 0: one per 25 subscribers
    double seconds = 10;
};

struct CpuSample {
    std::vector<std::int64_t> children;
    std::int64_t broker = -1;
};

CpuSample sample_cpu(const std::vector<Child>& children, pid_t broker) {
    CpuSample c;
    for (auto& child : children) c.children.push_back(cpu_ns_of(child.pid()));
    c.broker = cpu_ns_of(broker);
    return c;
}

std::int64_t cpu_delta(std::int64_t before, std::int64_t after) { return before < 0 || after < 0 ? -1 : after - before; }

int run_idle(const IdleOptions& o) {
    const int procs = o.processes ? std::min(o.processes, o.subscribers) : std::min(o.subscribers, (o.subscribers + 24) / 25);
    auto s = open_session(o.common);
    if (!s) return fail(s.error());
    RoleOptions base;
    base.socket = s->socket;
    base.topic = "bench.idle." + unique_suffix();
    base.size = o.common.size;
    base.wait = o.common.mode;

    std::vector<Child> children;
    for (int i = 0; i < procs; ++i) {
        base.threads = o.subscribers / procs + (i < o.subscribers % procs ? 1 : 0);
        auto c = spawn(*s, o.common, base, "idler", i + 1);
        if (!c) return fail(c.error());
        children.push_back(std::move(*c));
    }
    if (auto r = collect(children, "ready", 60s); !r) return fail(r.error());
    // Half a second for every subscriber to end its spin phase and park: we measure the parked state.
    if (auto st = pause(500ms); !st) return fail(st.error());
    const auto before = sample_cpu(children, s->broker_pid);
    const auto t0 = steady::now();
    if (auto st = pause(seconds_from(o.seconds)); !st) return fail(st.error());
    const auto after = sample_cpu(children, s->broker_pid);
    const double measured = std::chrono::duration<double>(steady::now() - t0).count();

    for (auto& c : children)
        if (auto st = send(c, "stop"); !st) return fail(st.error());
    if (auto r = collect(children, "result", 60s); !r) return fail(r.error());
    if (auto st = finish(children, *s); !st) return fail(st.error());

    std::vector<double> per_process;
    std::int64_t subscribers_ns = 0;
    for (std::size_t i = 0; i < children.size(); ++i) {
        const auto d = cpu_delta(before.children[i], after.children[i]);
        if (d < 0) return fail("cannot read the CPU time of " + children[i].label() + " from /proc");
        subscribers_ns += d;
        per_process.push_back(double(d) / 1e9);
    }
    const auto broker_ns = cpu_delta(before.broker, after.broker);
    const std::int64_t total_ns = subscribers_ns + std::max<std::int64_t>(0, broker_ns);

    if (o.common.json) {
        Json j;
        j.str("scenario", "idle").num("subscribers", o.subscribers).num("processes", procs).real("seconds", o.seconds, 2);
        j.real("measured_seconds", measured, 3).str("wait_mode", o.common.mode);
        j.real("cpu_seconds_total", double(total_ns) / 1e9, 6).real("subscriber_cpu_seconds", double(subscribers_ns) / 1e9, 6);
        if (broker_ns < 0) j.null("broker_cpu_seconds");
        else j.real("broker_cpu_seconds", double(broker_ns) / 1e9, 6);
        j.reals("per_process_cpu_seconds", per_process, 6).real("cpu_percent_of_one_core", double(total_ns) / 1e9 / measured * 100, 4);
        j.str("method", "each subscriber is a thread blocked in receive() on its own empty topic; CPU = the processes' and the broker's "
                        "on-CPU time (/proc/<pid>/task/*/schedstat) over the interval, after a 0.5 s settle");
        j.str("broker", s->broker ? "private" : "external");
        print_json(j);
    } else {
        std::printf("idle: %d subscribers in %d process(es), %s, %.1f s: %.6f CPU s in the subscribers, %s CPU s in the broker (%.4f %% of a core)\n",
                    o.subscribers, procs, o.common.mode.c_str(), measured, double(subscribers_ns) / 1e9,
                    broker_ns < 0 ? "?" : std::to_string(double(broker_ns) / 1e9).c_str(), double(total_ns) / 1e9 / measured * 100);
    }
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// memory

struct MemoryOptions {
    Common common;
    std::string topics = "1,10,100";
};

// Bytes of shared-memory files: their sizes, and what tmpfs has allocated for them (touched pages).
struct ShmBytes {
    std::int64_t size = 0;
    std::int64_t allocated = 0;
    int files = 0;
};

void add_file(ShmBytes& b, const std::filesystem::path& p) {
    struct stat st{};
    if (::stat(p.c_str(), &st) != 0) return;
    b.size += st.st_size;
    b.allocated += std::int64_t(st.st_blocks) * 512;
    ++b.files;
}

// The data and cursors segments of our topics, named <prefix>.<topic>.data and <prefix>.<topic>.cursors.
ShmBytes topic_segments(const std::string& prefix, const std::string& topic_base) {
    ShmBytes b;
    const std::string start = prefix + "." + topic_base + ".";
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/dev/shm", ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        const auto name = it->path().filename().string();
        if (name.starts_with(start) && (name.ends_with(".data") || name.ends_with(".cursors"))) add_file(b, it->path());
    }
    return b;
}

// A broker we did not start: its prefix is whatever precedes our first topic's data segment.
std::string find_prefix(const std::string& topic_base) {
    const std::string end = "." + topic_base + ".0.data";
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/dev/shm", ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        const auto name = it->path().filename().string();
        if (name.ends_with(end)) return name.substr(0, name.size() - end.size());
    }
    return {};
}

Expected<std::vector<std::int64_t>> parse_counts(const std::string& text) {
    std::vector<std::int64_t> counts;
    std::string item;
    for (std::istringstream in(text); std::getline(in, item, ',');) {
        std::int64_t n = 0;
        if (std::sscanf(item.c_str(), "%" SCNd64, &n) != 1 || n < 1 || n > 4000 || (!counts.empty() && n <= counts.back()))
            return failure("--topics must be increasing counts from 1 to 4000, e.g. 1,10,100");
        counts.push_back(n);
    }
    if (counts.empty()) return failure("--topics is empty");
    return counts;
}

struct MemoryStep {
    std::int64_t topics = 0;
    Memory broker;
    ShmBytes segments;
};

int run_memory(const MemoryOptions& o) {
    auto counts = parse_counts(o.topics);
    if (!counts) return fail(counts.error());
    auto s = open_session(o.common);
    if (!s) return fail(s.error());
    RoleOptions base;
    base.socket = s->socket;
    base.topic = "bench.mem." + unique_suffix();
    std::vector<Child> children;
    auto c = spawn(*s, o.common, base, "opener", 1);
    if (!c) return fail(c.error());
    children.push_back(std::move(*c));
    if (auto r = collect(children, "ready", 30s); !r) return fail(r.error());

    std::string prefix = s->broker ? s->broker->shm_prefix() : "";
    std::vector<MemoryStep> steps{{0, memory_of(s->broker_pid), {}}};
    std::int64_t lane_bytes = 0;
    for (auto n : *counts) {
        if (auto st = send(children[0], "open " + std::to_string(n)); !st) return fail(st.error());
        auto opened = read_fields(children[0], "opened", 120s);
        if (!opened) return fail(opened.error());
        lane_bytes = (*opened)["lane_bytes"];
        if (prefix.empty()) prefix = find_prefix(base.topic);
        steps.push_back({n, memory_of(s->broker_pid), topic_segments(prefix, base.topic)});
    }
    ShmBytes doorbells;
    add_file(doorbells, "/dev/shm/" + prefix + ".doorbells");
    if (auto st = send(children[0], "stop"); !st) return fail(st.error());
    if (auto r = collect(children, "result", 60s); !r) return fail(r.error());
    if (auto st = finish(children, *s); !st) return fail(st.error());
    if (prefix.empty() || steps.back().segments.files != 2 * steps.back().topics)
        return fail("found " + std::to_string(steps.back().segments.files) + " segment files of our topics in /dev/shm, expected " +
                    std::to_string(2 * steps.back().topics));

    const auto& last = steps.back();
    auto by_step = [&](auto value) {
        Json j;
        for (auto& st : steps) j.num_or_null(std::to_string(st.topics), value(st));
        return j;
    };
    if (o.common.json) {
        Json j;
        std::vector<std::int64_t> topic_counts;
        for (auto& st : steps) topic_counts.push_back(st.topics);
        j.str("scenario", "memory").nums("topic_counts", topic_counts);
        j.obj("broker_rss_bytes", by_step([](const MemoryStep& m) { return m.broker.rss; }));
        j.obj("broker_rss_anon_bytes", by_step([](const MemoryStep& m) { return m.broker.rss_anon; }));
        j.obj("broker_rss_shmem_bytes", by_step([](const MemoryStep& m) { return m.broker.rss_shmem; }));
        j.obj("segment_bytes", by_step([](const MemoryStep& m) { return m.segments.size; }));
        j.obj("segment_resident_bytes", by_step([](const MemoryStep& m) { return m.segments.allocated; }));
        j.num("bytes_per_topic", last.segments.size / last.topics).num("resident_bytes_per_topic", last.segments.allocated / last.topics);
        if (last.broker.rss < 0 || steps.front().broker.rss < 0) j.null("broker_rss_bytes_per_topic");
        else j.num("broker_rss_bytes_per_topic", (last.broker.rss - steps.front().broker.rss) / last.topics);
        j.num("lane_bytes_per_topic", lane_bytes).num("doorbell_segment_bytes", doorbells.size).num("doorbell_segment_resident_bytes", doorbells.allocated);
        j.str("method", "topics opened by a client process with the broker's default lanes, none published to; segment bytes are the "
                        "/dev/shm files' sizes (what the rings take once used), resident bytes what tmpfs has allocated so far");
        j.str("broker", s->broker ? "private" : "external");
        print_json(j);
    } else {
        std::printf("memory: %" PRId64 " topics: broker RSS %.1f MiB (%.1f MiB with none); segments %.1f MiB (%.2f MiB per topic), "
                    "%.2f MiB resident; doorbells %.1f KiB\n",
                    last.topics, double(last.broker.rss) / 1048576, double(steps.front().broker.rss) / 1048576, double(last.segments.size) / 1048576,
                    double(last.segments.size) / double(last.topics) / 1048576, double(last.segments.allocated) / 1048576,
                    double(doorbells.size) / 1024);
    }
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// callstorm (also the signalling under rtp --with-signalling)

constexpr std::int64_t kStormLagLimitNs = 10'000'000;  // behind by more than 10 ms: did not keep up

// The callstorm processes, in the order they are spawned.
enum StormRole { kTransport = 0, kSession = 1, kMedia = 2 };
constexpr const char* kStormRoles[] = {"transport", "session", "media"};

struct StormTopic {
    const char* name;
    const char* lane;
    StormRole publisher;
    const char* published;  // the publisher's result key
    StormRole consumer;
    const char* prefix;  // the consumer's result keys: <prefix>received, <prefix>end_ns, <prefix>p99, ...
};
constexpr StormTopic kStormTopics[] = {
    {"sip.message", "normal", kTransport, "sip_published", kSession, "sip_"},
    {"call.control", "critical", kTransport, "control_published", kSession, "control_"},
    {"call.state", "high", kSession, "state_published", kTransport, "state_"},
    {"media.command", "normal", kSession, "command_published", kMedia, "command_"},
    {"media.quality", "low", kMedia, "quality_published", kSession, "quality_"},
    {"rtp.stats", "low", kMedia, "rtpstats_published", kSession, "rtpstats_"},
};

Expected<std::vector<Child>> spawn_storm(const Session& s, const Common& c, std::uint64_t calls, double seconds,
                                         bool per_subscription = false) {
    RoleOptions base;
    base.per_subscription = per_subscription;
    base.socket = s.socket;
    base.topic = s.broker ? "" : "." + unique_suffix();  // a shared broker's topics get a suffix of ours
    base.calls = calls;
    base.seconds = seconds;
    base.wait = c.mode;
    std::vector<Child> children;
    for (int i = 0; i < 3; ++i) {
        auto child = spawn(s, c, base, kStormRoles[i], 1, i == kTransport);
        if (!child) return failure(child.error());
        children.push_back(std::move(*child));
    }
    return children;
}

// The callstorm's figures and whether it kept up, from the three processes' results.
struct StormReport {
    Json json;  // the figures, without "scenario"
    bool kept_up = true;
    std::vector<std::string> why_not;
    std::vector<std::string> lost;  // events published but never received: a bug, not a figure
    double seconds = 0;
    double cpu_percent = 0;
    std::int64_t late_sched = 0;
};

Json storm_topics(const std::vector<Fields>& f, StormReport& r) {
    Json topics;
    for (const auto& t : kStormTopics) {
        const Fields &pub = f[t.publisher], &con = f[t.consumer];
        const std::string p = t.prefix;
        const auto published = pub[t.published], received = con[p + "received"], end_lag = con[p + "end_ns"];
        Json j;
        j.real("events_per_sec", double(received) / r.seconds).str("lane", t.lane).num("published", published).num("received", received);
        j.num("p50_ns", con[p + "p50"]).num("p99_ns", con[p + "p99"]).num("max_ns", con[p + "max"]).num("end_lag_ns", end_lag);
        topics.obj(t.name, j);
        if (received != published) r.lost.push_back(std::string(t.name) + ": " + std::to_string(received) + " of " + std::to_string(published) + " received");
        if (end_lag > kStormLagLimitNs)
            r.why_not.push_back(std::string(t.name) + ": the consumer was " + std::to_string(end_lag / 1'000'000) + " ms behind at the end");
    }
    return topics;
}

StormReport evaluate_storm(const std::vector<Fields>& f, std::uint64_t calls, std::int64_t broker_cpu_ns) {
    StormReport r;
    r.seconds = double(f[kTransport]["end_ns"] - f[kTransport]["start_ns"]) / 1e9;
    const Json topics = storm_topics(f, r);
    Json cpu;
    std::int64_t cpu_total = 0, full = 0, late = 0, max_lag = 0;
    for (int i = 0; i < 3; ++i) {
        cpu.real(kStormRoles[i], double(f[i]["cpu_ns"]) / 1e9, 3);
        cpu_total += f[i]["cpu_ns"];
        full += f[i]["full"];
    }
    std::int64_t late_sched = 0, max_work = 0, max_wake = 0;
    for (auto i : {kTransport, kMedia}) {
        late += f[i]["late_ticks_bus"];
        late_sched += f[i]["late_ticks_sched"];
        max_lag = std::max(max_lag, f[i]["max_lag_ns"]);
        max_work = std::max(max_work, f[i]["max_work_ns"]);
        max_wake = std::max(max_wake, f[i]["max_wake_late_ns"]);
    }
    r.late_sched = late_sched;
    // A tick the pacer itself woke late for (the scheduler) says nothing of the bus: reported, not held against it.
    if (late) r.why_not.push_back(std::to_string(late) + " tick(s) published more than 10 ms late by the bus's work");
    if (full) r.why_not.push_back(std::to_string(full) + " publish(es) met a full lane");
    r.kept_up = r.why_not.empty();
    r.cpu_percent = double(cpu_total) / 1e9 / r.seconds * 100;

    Json& j = r.json;
    j.num("calls", std::int64_t(calls)).real("seconds", r.seconds, 3).real("call_setups_per_sec", double(calls) / 180, 1);
    j.obj("topics", topics).obj("cpu_seconds", cpu);
    if (broker_cpu_ns < 0) j.null("broker_cpu_seconds");
    else j.real("broker_cpu_seconds", double(broker_cpu_ns) / 1e9, 3);
    j.real("cpu_percent_of_one_core_total", r.cpu_percent, 1).obj("critical_latency", latency_json(f[kSession], "control_"));
    j.num("max_tick_lag_ns", max_lag).num("late_ticks_bus", late).num("late_ticks_scheduler", late_sched);
    j.num("max_tick_work_ns", max_work).num("max_tick_wake_late_ns", max_wake).num("full_or_timeouts", full).boolean("kept_up", r.kept_up);
    if (!r.kept_up) {
        std::string why;
        for (auto& w : r.why_not) why += (why.empty() ? "" : "; ") + w;
        j.str("not_kept_up_because", why);
    }
    return r;
}

struct CallstormOptions {
    Common common;
    std::uint64_t calls = 100'000;
    double seconds = 10;
    bool per_subscription = false;
};

int run_callstorm(const CallstormOptions& o) {
    auto s = open_session(o.common);
    if (!s) return fail(s.error());
    auto children = spawn_storm(*s, o.common, o.calls, o.seconds, o.per_subscription);
    if (!children) return fail(children.error());
    if (auto r = collect(*children, "ready", 30s); !r) return fail(r.error());
    const auto broker0 = cpu_ns_of(s->broker_pid);
    for (auto& c : *children)
        if (auto st = send(c, "go"); !st) return fail(st.error());
    auto results = collect(*children, "result", seconds_from(o.seconds) + 120s);
    if (!results) return fail(results.error());
    const auto broker_ns = cpu_delta(broker0, cpu_ns_of(s->broker_pid));
    for (auto& c : *children)
        if (auto how = c.reap(std::chrono::seconds(5)); !how.empty()) return fail(c.label() + " " + how);
    // The yardsticks of the Critical latency, in the same run on the same broker: blocking ping-pongs
    // (both sides park at once), back to back and paced like the storm's ticks (one ping per 1 ms, so
    // the echoer's core idles between them as the session's does). Their one-way p99 is what waking a
    // parked process costs here now, from a busy core and from an idle one.
    auto pp = ping_pong(*s, o.common, 64, false, 5000, 500);
    if (!pp) return fail(pp.error());
    auto paced = ping_pong(*s, o.common, 64, false, 2000, 200, 1'000'000);
    if (!paced) return fail(paced.error());
    if (auto st = finish(*children, *s); !st) return fail(st.error());
    auto r = evaluate_storm(*results, o.calls, broker_ns);
    if (!r.lost.empty()) return fail("events were lost: " + r.lost.front());
    const std::int64_t block_p99 = pp->first["p99"], paced_p99 = paced->first["p99"], critical_p99 = (*results)[kSession]["control_p99"];
    const double ratio = paced_p99 > 0 ? double(critical_p99) / double(paced_p99) : 0;
    r.json.num("block_ping_pong_p99_ns", block_p99).num("paced_block_ping_pong_p99_ns", paced_p99);
    r.json.real("critical_p99_over_block_ping_pong_p99", block_p99 > 0 ? double(critical_p99) / double(block_p99) : 0, 2);
    r.json.real("critical_p99_over_paced_block_ping_pong_p99", ratio, 2);

    if (o.common.json) {
        Json j;
        j.str("scenario", "callstorm").str("wait_mode", o.common.mode).merge(r.json);
        j.str("session_consumers", o.per_subscription ? "a thread per subscription" : "one WaitSet");
        j.str("method", "three processes (transport, session, media) paced per 1 ms tick; every topic has a consumer; latency = receive "
                        "time minus publish timestamp; kept_up: no tick 10 ms late, no full lane, everything received, no consumer "
                        "10 ms behind at the end");
        j.str("broker", s->broker ? "private" : "external");
        print_json(j);
    } else {
        const auto& f = *results;
        const std::string verdict = r.kept_up ? "kept up" : "did NOT keep up: " + r.why_not.front();
        std::printf("callstorm (%s): %" PRIu64 " calls, %.1f s: %.0f SIP messages/s, %.0f call events/s, %.0f media reports/s; CPU transport %.2f s, "
                    "session %.2f s, media %.2f s (%.1f %% of a core); Critical p50/p99/max %" PRId64 "/%" PRId64 "/%" PRId64
                    " ns, p99 %.2fx a paced blocking ping-pong's (%" PRId64 " ns; back to back %" PRId64 " ns); %" PRId64
                    " tick(s) late by the scheduler; %s\n",
                    o.per_subscription ? "session: a thread per subscription" : "session: one WaitSet", o.calls, r.seconds,
                    double(f[kSession]["sip_received"]) / r.seconds, double(f[kSession]["control_received"]) / r.seconds,
                    double(f[kSession]["quality_received"] + f[kSession]["rtpstats_received"]) / r.seconds, double(f[kTransport]["cpu_ns"]) / 1e9,
                    double(f[kSession]["cpu_ns"]) / 1e9, double(f[kMedia]["cpu_ns"]) / 1e9, r.cpu_percent, f[kSession]["control_p50"],
                    f[kSession]["control_p99"], f[kSession]["control_max"], ratio, paced_p99, block_p99, r.late_sched, verdict.c_str());
    }
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// rtp

struct RtpOptions {
    Common common;
    std::uint64_t start_calls = 1000;
    std::uint64_t max_calls = 1'024'000;
    int max_steps = 16;
    int bisect_steps = 3;
    int retries = 1;
    double late_tolerance = 0.02;  // fraction of a step's ticks that may be late (one stall by a neighbour)
    double step_seconds = 3;
    std::uint64_t capacity = 64u << 20;
    bool with_signalling = false;
    std::uint64_t signalling_calls = 100'000;
};

// Doubles the calls from the start until a step fails, then bisects between the best pass and the first
// failure, a few times or until they are within 2 % (and 100 calls) of each other.
class Search {
public:
    explicit Search(const RtpOptions& o) : o_(o), next_(o.start_calls) {}
    std::optional<std::uint64_t> next() const {
        if (steps_ >= o_.max_steps || next_ == 0) return std::nullopt;
        return next_;
    }
    void record(std::uint64_t calls, bool ok) {
        ++steps_;
        (ok ? pass_ : fail_) = calls;
        if (fail_ == 0) {  // still doubling
            next_ = calls * 2 <= o_.max_calls ? calls * 2 : 0;
            return;
        }
        const std::uint64_t gap = fail_ - pass_;
        if (bisected_++ >= o_.bisect_steps || gap <= std::max<std::uint64_t>(100, pass_ / 50)) {
            next_ = 0;
            return;
        }
        const std::uint64_t grain = gap >= 1000 ? 100 : 1;  // round figures where they mean something
        next_ = std::max<std::uint64_t>(pass_ + grain, (pass_ + gap / 2) / grain * grain);
        if (next_ >= fail_) next_ = 0;
    }
    std::uint64_t best() const { return pass_; }

private:
    const RtpOptions& o_;
    std::uint64_t next_;
    std::uint64_t pass_ = 0, fail_ = 0;
    int steps_ = 0, bisected_ = 0;
};

struct StepOutcome {
    bool ok = false;
    double events_per_sec = 0;  // as received
    Json json;
};

// One step, run by sender and receiver; ok when every tick (but the tolerated few) went out within its 20 ms
// and was drained before the next one was due, and nothing had to wait for room.
Expected<StepOutcome> rtp_step(Child& sender, Child& receiver, std::uint64_t calls, const RtpOptions& o) {
    const double seconds = o.step_seconds;
    const auto allowed = static_cast<std::int64_t>(o.late_tolerance * seconds / 0.020);
    if (auto st = send(sender, "step " + std::to_string(calls) + " " + std::to_string(seconds) + " " + std::to_string(allowed)); !st)
        return failure(st.error());
    const auto timeout = seconds_from(seconds) + 120s;
    auto out = read_fields(sender, "step", timeout);
    if (!out) return failure(out.error());
    auto in = read_fields(receiver, "step", timeout);
    if (!in) return failure(in.error());
    if ((*in)["events"] != (*out)["events"])
        return failure("the RTP receiver got " + std::to_string((*in)["events"]) + " packets of " + std::to_string((*out)["events"]) + ": packets were lost");
    StepOutcome r;
    r.ok = (*out)["late_ticks"] <= allowed && (*out)["timeouts"] == 0 && (*in)["late_ticks"] <= allowed;
    const double span = double((*out)["ticks"]) * 0.020;  // seconds of ticks
    auto per_span = [&](double v) { return span > 0 ? v / span : 0.0; };
    r.events_per_sec = per_span(double((*in)["events"]));
    Json& j = r.json;
    j.num("calls", std::int64_t(calls)).boolean("ok", r.ok).real("events_per_sec", r.events_per_sec);
    j.num("ticks", (*out)["ticks"]).num("sender_late_ticks", (*out)["late_ticks"]).num("receiver_late_ticks", (*in)["late_ticks"]);
    j.num("max_publish_lag_ns", (*out)["max_lag_ns"]).num("max_drain_ns", (*in)["max_drain_ns"]).num("full_retries", (*out)["timeouts"]);
    j.real("sender_cpu_percent", per_span(double((*out)["cpu_ns"]) / 1e9) * 100, 1);
    j.real("receiver_cpu_percent", per_span(double((*in)["cpu_ns"]) / 1e9) * 100, 1);
    return r;
}

struct RtpRun {
    std::uint64_t max_calls = 0;
    double events_per_sec_at_max = 0;  // as received in the best passing step
    std::vector<Json> steps;
    std::optional<StormReport> signalling;
};

// Stops the callstorm processes (transport and media on "stop"; session ends after them) and evaluates them.
Expected<StormReport> stop_signalling(std::span<Child> storm, const RtpOptions& o, std::int64_t broker_cpu_ns) {
    for (auto i : {kTransport, kMedia})
        if (auto st = send(storm[i], "stop"); !st) return failure(st.error());
    std::vector<Fields> results;
    for (auto& c : storm) {
        auto r = read_fields(c, "result", 120s);
        if (!r) return failure(r.error());
        results.push_back(std::move(*r));
    }
    auto report = evaluate_storm(results, o.signalling_calls, broker_cpu_ns);
    if (!report.lost.empty()) return failure("signalling events were lost: " + report.lost.front());
    return report;
}

// children: rtp-receiver, rtp-sender, then (with signalling) transport, session, media.
Expected<RtpRun> rtp_search(std::vector<Child>& children, const RtpOptions& o, const Session& s) {
    if (auto r = collect(children, "ready", 60s); !r) return failure(r.error());
    // Warm-up: two laps of the ring, received and thrown away, before anything is measured (and before the
    // signalling starts, which would not keep up while the warm-up takes both cores).
    if (auto st = send(children[1], "warmup"); !st) return failure(st.error());
    if (auto w = read_fields(children[1], "warm", 300s); !w) return failure(w.error());
    if (auto w = read_fields(children[0], "step", 60s); !w) return failure(w.error());
    const auto broker0 = cpu_ns_of(s.broker_pid);
    for (std::size_t i = 2; i < children.size(); ++i)
        if (auto st = send(children[i], "go"); !st) return failure(st.error());
    RtpRun run;
    Search search(o);
    while (auto calls = search.next()) {
        // A failed step is run once more: one tick stalled by a neighbour on a shared machine is not the
        // capacity. It fails only if the retry fails too (a failing step ends at its first late tick, so
        // the retry is quick).
        auto step = rtp_step(children[1], children[0], *calls, o);
        for (int retry = 0; step && !step->ok && retry < o.retries; ++retry) {
            run.steps.push_back(std::move(step->json.boolean("retried", true)));
            step = rtp_step(children[1], children[0], *calls, o);
        }
        if (!step) return failure(step.error());
        if (step->ok && *calls > run.max_calls) run.max_calls = *calls, run.events_per_sec_at_max = step->events_per_sec;
        run.steps.push_back(std::move(step->json));
        search.record(*calls, step->ok);
        if (interrupted()) return failure("interrupted");
    }
    if (auto st = send(children[1], "stop"); !st) return failure(st.error());
    for (std::size_t i : {1u, 0u})  // the sender publishes the stop marker that ends the receiver
        if (auto r = read_fields(children[i], "result", 60s); !r) return failure(r.error());
    if (children.size() > 2) {
        auto report = stop_signalling(std::span(children).subspan(2), o, cpu_delta(broker0, cpu_ns_of(s.broker_pid)));
        if (!report) return failure(report.error());
        run.signalling = std::move(*report);
    }
    return run;
}

void print_rtp(const RtpOptions& o, const RtpRun& run, const Session& s) {
    if (o.common.json) {
        Json j;
        j.str("scenario", "rtp").num("max_calls", std::int64_t(run.max_calls)).real("events_per_sec_at_max", run.events_per_sec_at_max);
        j.num("packet_bytes", o.common.size).num("packets_per_call_per_sec", 100).num("tick_ms", 20).real("step_seconds", o.step_seconds, 2);
        j.str("wait_mode", o.common.mode).num("lane_capacity", std::int64_t(o.capacity)).boolean("with_signalling", o.with_signalling);
        j.real("late_tolerance", o.late_tolerance, 3).num("retries", o.retries);
        j.objs("steps", run.steps);
        if (run.signalling) j.obj("signalling", run.signalling->json);
        j.str("method", "one sender publishes 2 packets per call per 20 ms tick with one publish_batch, one receiver drains them; a step "
                        "passes when every tick was published within its 20 ms and fully received before the next tick was due; the "
                        "calls double from --start-calls until a step fails, then bisect");
        j.str("broker", s.broker ? "private" : "external");
        print_json(j);
        return;
    }
    std::printf("rtp: %" PRIu64 " calls kept up (%.2f M packets/s of %u bytes)%s; steps:", run.max_calls, run.events_per_sec_at_max / 1e6,
                o.common.size, o.with_signalling ? " on top of the callstorm signalling" : "");
    for (auto& st : run.steps) std::printf(" %s", st.text().c_str());
    std::printf("\n");
    if (run.signalling)
        std::printf("rtp: signalling of %" PRIu64 " calls %s\n", o.signalling_calls,
                    run.signalling->kept_up ? "kept up" : ("did NOT keep up: " + run.signalling->why_not.front()).c_str());
}

int run_rtp(const RtpOptions& o) {
    if (o.start_calls == 0 || o.start_calls > o.max_calls) return fail("--start-calls must be from 1 to --max-calls");
    if (o.common.size < 32) return fail("--size must be at least 32 (the bench's packet header)");
    namespace layout = rvoip::events::layout;
    if (!layout::is_pow2(o.capacity) || o.capacity < layout::kMinCapacity || o.capacity > layout::kMaxCapacity ||
        o.capacity < 8 * layout::record_size(o.common.size))
        return fail("--capacity must be a power of two from 4096 to 1 GiB, and hold 8 packets at least");
    auto s = open_session(o.common);
    if (!s) return fail(s.error());
    RoleOptions base;
    base.socket = s->socket;
    base.topic = "bench.rtp." + unique_suffix();
    base.size = o.common.size;
    base.wait = o.common.mode;
    base.capacity = o.capacity;
    std::vector<Child> children;
    for (auto role : {"rtp-receiver", "rtp-sender"}) {
        auto c = spawn(*s, o.common, base, role, 1, std::string_view(role) == "rtp-sender");
        if (!c) return fail(c.error());
        children.push_back(std::move(*c));
    }
    if (o.with_signalling) {
        Common storm_common = o.common;
        storm_common.mode = "spin-park";
        storm_common.wrap.clear();
        auto storm = spawn_storm(*s, storm_common, o.signalling_calls, 0);  // 0 s: until we say "stop"
        if (!storm) return fail(storm.error());
        for (auto& c : *storm) children.push_back(std::move(c));
    }
    auto run = rtp_search(children, o, *s);
    if (!run) return fail(run.error());
    if (auto st = finish(children, *s); !st) return fail(st.error());
    print_rtp(o, *run, *s);
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// Command line.

}  // namespace

void add_common(CLI::App* cmd, Common& c, const std::vector<std::string>& modes, const std::string& mode_help) {
    cmd->add_option("--size", c.size, "payload bytes per event")->check(CLI::Range(16u, 65536u))->capture_default_str();
    cmd->add_option("--mode", c.mode, mode_help)->check(CLI::IsMember(modes))->capture_default_str();
    cmd->add_flag("--json", c.json, "print one JSON object instead of a summary line");
    cmd->add_option("--socket", c.socket, "use the rvoip-eventd at this socket instead of starting one");
    cmd->add_option("--eventd", c.eventd, "rvoip-eventd to start (default: next to rvoip-bench)");
    cmd->add_option("--wrap-publisher", c.wrap, "command put in front of the publishing process, e.g. 'perf stat -e cycles --'");
    cmd->add_option("--wrap-subscriber", c.wrap_subscriber, "command put in front of the first subscribing process (throughput)");
    cmd->add_flag("--verbose", c.verbose, "print the pids of the processes started");
}

struct ScenarioCommands::Impl {
    FloodOptions flood;
    IdleOptions idle;
    MemoryOptions memory;
    CallstormOptions callstorm;
    RtpOptions rtp;
    std::vector<std::pair<CLI::App*, std::function<int()>>> commands;

    void add(CLI::App* cmd, std::function<int()> run) { commands.emplace_back(cmd, std::move(run)); }
};

namespace {

const std::string kParkModes = "how consumers wait: spin then park (spin-park, the library's default) or park at once (block)";

void add_flood(CLI::App& app, ScenarioCommands::Impl& impl) {
    auto& o = impl.flood;
    o.common.mode = "block";
    auto* cmd = app.add_subcommand("flood", "Critical ping latency on one topic, alone and under a Low flood on the same topic");
    add_common(cmd, o.common, {"block", "spin"}, "how the echoer waits: park at once (block) or busy-poll (spin)");
    cmd->add_option("--seconds", o.seconds, "length of each phase (without, then with the flood)")->check(CLI::Range(0.1, 3600.0))->capture_default_str();
    cmd->add_option("--interval-us", o.interval_us, "time between Critical pings")->check(CLI::Range(1.0, 1e6))->capture_default_str();
    impl.add(cmd, [&o] { return run_flood(o); });
}

void add_idle(CLI::App& app, ScenarioCommands::Impl& impl) {
    auto& o = impl.idle;
    o.common.mode = "spin-park";
    auto* cmd = app.add_subcommand("idle", "CPU used by subscribers blocked on empty topics, and by the broker");
    add_common(cmd, o.common, {"spin-park", "block"}, kParkModes);
    cmd->add_option("--subscribers", o.subscribers, "subscribers, one thread and one topic each")->check(CLI::Range(1, 1000))->capture_default_str();
    cmd->add_option("--processes", o.processes, "processes they are spread over (default: one per 25)")->check(CLI::Range(1, 100));
    cmd->add_option("--seconds", o.seconds, "measured interval")->check(CLI::Range(0.1, 3600.0))->capture_default_str();
    impl.add(cmd, [&o] { return run_idle(o); });
}

void add_memory(CLI::App& app, ScenarioCommands::Impl& impl) {
    auto& o = impl.memory;
    o.common.mode = "spin-park";
    auto* cmd = app.add_subcommand("memory", "the broker's RSS and the topic segments' bytes as topics are created");
    add_common(cmd, o.common, {"spin-park"}, "unused");
    cmd->add_option("--topics", o.topics, "topic counts to measure at, increasing")->capture_default_str();
    impl.add(cmd, [&o] { return run_memory(o); });
}

void add_callstorm(CLI::App& app, ScenarioCommands::Impl& impl) {
    auto& o = impl.callstorm;
    o.common.mode = "spin-park";
    auto* cmd = app.add_subcommand("callstorm", "signalling and media control of N concurrent calls (180 s each) across three processes");
    add_common(cmd, o.common, {"spin-park", "block"}, kParkModes);
    cmd->add_option("--calls", o.calls, "concurrent calls")->check(CLI::Range(std::uint64_t(1), std::uint64_t(100'000'000)))->capture_default_str();
    cmd->add_option("--seconds", o.seconds, "how long the load runs")->check(CLI::Range(0.1, 3600.0))->capture_default_str();
    cmd->add_flag("--per-subscription", o.per_subscription,
                  "the session process receives with a thread per subscription, each parked on its own doorbell, instead of one WaitSet "
                  "(for comparison)");
    impl.add(cmd, [&o] { return run_callstorm(o); });
}

void add_rtp(CLI::App& app, ScenarioCommands::Impl& impl) {
    auto& o = impl.rtp;
    o.common.mode = "spin-park";
    o.common.size = 172;
    auto* cmd = app.add_subcommand("rtp", "the most calls whose RTP packets (100 per call per second) one sender and receiver keep up with");
    add_common(cmd, o.common, {"spin-park", "block", "spin"}, "how the receiver waits: spin-park, block or spin (busy-poll)");
    cmd->add_option("--start-calls", o.start_calls, "calls of the first step")->capture_default_str();
    cmd->add_option("--max-calls", o.max_calls, "no step goes beyond this")->capture_default_str();
    cmd->add_option("--max-steps", o.max_steps, "steps in all (doubling and bisecting)")->check(CLI::Range(1, 100))->capture_default_str();
    cmd->add_option("--bisect-steps", o.bisect_steps, "steps between the last pass and the first failure")->check(CLI::Range(0, 20))->capture_default_str();
    cmd->add_option("--retries", o.retries, "runs again of a failed step before it counts as failed")->check(CLI::Range(0, 10))->capture_default_str();
    cmd->add_option("--late-tolerance", o.late_tolerance, "fraction of a step's ticks that may be late (0: every tick on time)")
        ->check(CLI::Range(0.0, 0.5))
        ->capture_default_str();
    cmd->add_option("--step-seconds", o.step_seconds, "length of each step")->check(CLI::Range(0.1, 600.0))->capture_default_str();
    cmd->add_option("--capacity", o.capacity, "the RTP lane's bytes, a power of two")->capture_default_str();
    cmd->add_flag("--with-signalling", o.with_signalling, "run the callstorm processes at the same time");
    cmd->add_option("--signalling-calls", o.signalling_calls, "calls of that callstorm")->capture_default_str();
    impl.add(cmd, [&o] { return run_rtp(o); });
}

}  // namespace

ScenarioCommands::ScenarioCommands(CLI::App& app) : impl_(std::make_unique<Impl>()) {
    add_flood(app, *impl_);
    add_idle(app, *impl_);
    add_memory(app, *impl_);
    add_callstorm(app, *impl_);
    add_rtp(app, *impl_);
}

ScenarioCommands::~ScenarioCommands() = default;

int ScenarioCommands::run_parsed() const {
    for (auto& [cmd, run] : impl_->commands)
        if (cmd->parsed()) return run();
    return fail("no subcommand");
}

}  // namespace rvoip::bench
