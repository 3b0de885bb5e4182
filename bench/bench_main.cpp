// rvoip-bench: throughput and latency of rvoip-events between real processes, through a real rvoip-eventd.
//
//   rvoip-bench throughput --size 64 --batch 1 --seconds 3 --json
//   rvoip-bench latency --size 64 --mode spin --json
//
// The benchmark runs its peers as separate processes (this binary again, under the hidden `_child`
// subcommand; see roles.hpp), never as threads, because the product's whole point is crossing processes.
// Without --socket it starts a private rvoip-eventd and stops it afterwards. Methodology: bench/README.md.
#include "bench/processes.hpp"
#include "bench/roles.hpp"
#include "proto/layout.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <optional>
#include <sstream>

#include <sched.h>
#include <unistd.h>

namespace rvoip::bench {
namespace {

namespace layout = rvoip::events::layout;
using steady = std::chrono::steady_clock;

struct Common {
    std::string socket;   // an existing broker; empty: start our own
    std::string eventd;   // our own broker's binary; empty: next to this one
    std::string wrap;     // command put in front of the publisher / pinger (perf stat, valgrind)
    std::uint32_t size = 64;
    std::string mode = "spin";
    bool json = false;
    bool verbose = false;
};

struct ThroughputOptions {
    Common common;
    std::uint32_t batch = 1;
    double seconds = 3;
    int publishers = 1;
    int subscribers = 1;
    std::uint64_t capacity = 0;  // 0: 8 MiB, or more when a batch needs it
    bool touch = false;
};

struct LatencyOptions {
    Common common;
    std::uint64_t count = 0;   // 0: 100000 for spin, 20000 for block
    std::uint64_t warmup = 0;  // 0: a tenth of count, between 100 and 10000
};

int fail(const std::string& msg) {
    std::fprintf(stderr, "rvoip-bench: %s\n", msg.c_str());
    return 1;
}

// CPUs we may run on (the affinity mask, which a container or taskset may narrow), not the machine's count.
int usable_cores() {
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    return static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
}

// "<pid>.<hex time>": topics of one run never meet those of an earlier run on a long-lived broker.
std::string unique_suffix() {
    timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    const auto stamp = (std::uint64_t(ts.tv_sec) * 1'000'000'000u + std::uint64_t(ts.tv_nsec)) & 0xff'ffff'ffffu;
    char buf[48];
    std::snprintf(buf, sizeof buf, "%d.%" PRIx64, int(::getpid()), stamp);
    return buf;
}

// ------------------------------------------------------------------------------------------------------
// The broker of one run and how to start role processes against it.

struct Session {
    std::string exe;                     // this binary, run again for each role
    std::optional<BrokerProcess> broker;  // ours, when no --socket was given
    std::string socket;
};

Expected<Session> open_session(const Common& c) {
    Session s;
    auto exe = self_exe();
    if (!exe) return failure(exe.error());
    s.exe = *exe;
    if (!c.socket.empty()) {
        s.socket = c.socket;
        return s;
    }
    auto b = BrokerProcess::start(c.eventd.empty() ? dirname_of(s.exe) + "/rvoip-eventd" : c.eventd);
    if (!b) return failure(b.error());
    s.socket = b->socket_path();
    s.broker.emplace(std::move(*b));
    return s;
}

std::vector<std::string> split_words(const std::string& s) {
    std::istringstream in(s);
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    return words;
}

Expected<Child> spawn_role(const Session& s, const Common& c, const RoleOptions& r, bool wrapped) {
    std::vector<std::string> argv = wrapped ? split_words(c.wrap) : std::vector<std::string>{};
    argv.insert(argv.end(), {s.exe, "_child", "--role", r.role, "--socket", r.socket, "--topic", r.topic, "--size",
                             std::to_string(r.size), "--batch", std::to_string(r.batch), "--seconds", std::to_string(r.seconds),
                             "--count", std::to_string(r.count), "--warmup", std::to_string(r.warmup), "--mode",
                             r.spin ? "spin" : "block", "--capacity", std::to_string(r.capacity), "--id", std::to_string(r.id),
                             "--publishers", std::to_string(r.publishers)});
    if (!r.topic2.empty()) argv.insert(argv.end(), {"--topic2", r.topic2});
    if (r.touch) argv.push_back("--touch");
    auto child = Child::spawn({.argv = std::move(argv), .label = r.role + " " + std::to_string(r.id)});
    if (child && c.verbose) std::fprintf(stderr, "rvoip-bench: %s is pid %d\n", child->label().c_str(), int(child->pid()));
    return child;
}

// Reaps every child (they exit by themselves after their result), then stops our broker; any unclean end
// is an error, since it may have spoiled the figures.
Done finish(std::vector<Child>& children, Session& s) {
    Done result;
    for (auto& c : children) {
        auto how = c.reap(std::chrono::seconds(5));
        if (!how.empty() && result) result = failure(c.label() + " " + how);
    }
    if (s.broker) {
        auto st = s.broker->stop();
        if (!st && result) result = st;
    }
    return result;
}

// "result a=1 b=2" -> {a: 1, b: 2}
class Fields {
public:
    static Expected<Fields> parse(const std::string& line, const std::string& who) {
        Fields f;
        for (auto& word : split_words(line)) {
            if (word == "result") continue;
            auto eq = word.find('=');
            std::int64_t v = 0;
            if (eq == std::string::npos ||
                std::from_chars(word.data() + eq + 1, word.data() + word.size(), v).ec != std::errc{})
                return failure(who + " reported a malformed result: '" + line + "'");
            f.values_[word.substr(0, eq)] = v;
        }
        f.who_ = who;
        return f;
    }
    // A missing key is a bug between parent and child, not a run-time condition: report it as 0 loudly.
    std::int64_t operator[](const std::string& key) const {
        auto it = values_.find(key);
        if (it != values_.end()) return it->second;
        std::fprintf(stderr, "rvoip-bench: %s did not report '%s'\n", who_.c_str(), key.c_str());
        return 0;
    }

private:
    std::map<std::string, std::int64_t> values_;
    std::string who_;
};

Expected<std::vector<Fields>> run_children(std::vector<Child>& children, const std::vector<std::size_t>& need_go,
                                           steady::duration run_time) {
    std::vector<Child*> all;
    for (auto& c : children) all.push_back(&c);
    // Start-up includes connecting and opening topics: seconds at most, unless the machine is swamped.
    auto ready = wait_for_lines(all, "ready", steady::now() + std::chrono::seconds(30));
    if (!ready) return failure(ready.error());
    for (auto i : need_go)
        if (auto st = children[i].send_line("go"); !st) return failure(st.error());
    auto results = wait_for_lines(all, "result", steady::now() + run_time);
    if (!results) return failure(results.error());
    std::vector<Fields> fields;
    for (std::size_t i = 0; i < children.size(); ++i) {
        auto f = Fields::parse((*results)[i], children[i].label());
        if (!f) return failure(f.error());
        fields.push_back(std::move(*f));
    }
    return fields;
}

// ------------------------------------------------------------------------------------------------------
// Output.

std::string json_escape(std::string_view s) {
    std::string out;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') out += '\\', out += ch;
        else if (static_cast<unsigned char>(ch) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", ch);
            out += buf;
        } else out += ch;
    }
    return out;
}

// One flat JSON object, keys in insertion order.
class Json {
public:
    Json& num(std::string_view k, std::int64_t v) { return raw(k, std::to_string(v)); }
    Json& real(std::string_view k, double v, int decimals = 0) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
        return raw(k, buf);
    }
    Json& str(std::string_view k, std::string_view v) { return raw(k, "\"" + json_escape(v) + "\""); }
    Json& boolean(std::string_view k, bool v) { return raw(k, v ? "true" : "false"); }
    Json& reals(std::string_view k, const std::vector<double>& v) {
        std::string a = "[";
        for (std::size_t i = 0; i < v.size(); ++i) {
            char buf[64];
            std::snprintf(buf, sizeof buf, "%s%.0f", i ? "," : "", v[i]);
            a += buf;
        }
        return raw(k, a + "]");
    }
    std::string text() const { return "{" + body_ + "}"; }

private:
    Json& raw(std::string_view k, const std::string& v) {
        if (!body_.empty()) body_ += ',';
        body_ += "\"" + json_escape(k) + "\":" + v;
        return *this;
    }
    std::string body_;
};

// Spinning processes beyond the usable cores time-share them: the figures then measure the scheduler.
void add_load_notes(Json& j, int spinning) {
    const int cores = usable_cores();
    j.num("cores", cores).num("spinning_processes", spinning).boolean("distorted", spinning > cores);
    if (spinning > cores)
        j.str("note", std::to_string(spinning) + " spinning processes on " + std::to_string(cores) +
                          " cores: they time-share the cores, so these figures are distorted");
}

// ------------------------------------------------------------------------------------------------------
// throughput

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
    base.spin = t.common.mode == "spin";
    base.capacity = *capacity;
    base.publishers = t.publishers;
    base.touch = t.touch;

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
    const int spinning = t.publishers + (base.spin ? t.subscribers : 0);

    if (t.common.json) {
        Json j;
        j.str("benchmark", "throughput").num("size", t.common.size).num("batch", t.batch).real("seconds", t.seconds, 3);
        j.str("mode", t.common.mode).num("publishers", t.publishers).num("subscribers", t.subscribers);
        j.num("events", std::int64_t(events)).num("warmup_events", std::int64_t(warm));
        j.real("events_per_sec", rate).real("bytes_per_sec", rate * t.common.size);
        j.reals("subscriber_events_per_sec", sub_rates).real("publisher_events_per_sec", pub_rate);
        j.num("full_retries", std::int64_t(timeouts)).boolean("lossless", true).num("lane_capacity", std::int64_t(*capacity));
        j.boolean("touch_payload", t.touch);
        j.str("broker", s->broker ? "private" : "external");
        add_load_notes(j, spinning);
        std::printf("%s\n", j.text().c_str());
    } else {
        std::printf("throughput: %u-byte events, batch %u, %d publisher(s) -> %d subscriber(s), %s: %.2f M events/s (%.1f MB/s); "
                    "%" PRIu64 " events in %.2f s, %" PRIu64 " full retries, none lost%s\n",
                    t.common.size, t.batch, t.publishers, t.subscribers, t.common.mode.c_str(), rate / 1e6, rate * t.common.size / 1e6,
                    events, t.seconds, timeouts, spinning > usable_cores() ? " (more spinning processes than cores: distorted)" : "");
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

    RoleOptions base;
    base.socket = s->socket;
    const auto suffix = unique_suffix();
    base.topic = "bench.ping." + suffix;
    base.topic2 = "bench.pong." + suffix;
    base.size = l.common.size;
    base.spin = spin;
    base.count = count;
    base.warmup = warmup;
    base.capacity = 1u << 20;  // one event in flight at a time: the lane size does not matter

    std::vector<Child> children;  // declared after the session: destroyed (killed, reaped) before its broker stops
    for (auto role : {"echoer", "pinger"}) {
        RoleOptions r = base;
        r.role = role;
        r.id = 1;
        auto c = spawn_role(*s, l.common, r, r.role == "pinger");
        if (!c) return fail(c.error());
        children.push_back(std::move(*c));
    }
    // The children give up after 30 s without an event; this only catches a child stuck elsewhere.
    auto fields = run_children(children, {1}, std::chrono::minutes(10));
    if (!fields) return fail(fields.error());
    if (auto st = finish(children, *s); !st) return fail(st.error());
    const Fields& one_way = (*fields)[0];
    const Fields& rtt = (*fields)[1];

    if (l.common.json) {
        Json j;
        j.str("benchmark", "latency").str("mode", l.common.mode).num("size", l.common.size);
        j.num("samples", one_way["samples"]).num("warmup", std::int64_t(warmup));
        for (auto k : {"p50", "p90", "p99", "p999", "max", "min", "mean"}) j.num(std::string(k) + "_ns", one_way[k]);
        for (auto k : {"p50", "p90", "p99", "p999", "max"}) j.num(std::string("rtt_") + k + "_ns", rtt[k]);
        j.str("method", "one-way = receive time in the echo process minus the record's publish timestamp (CLOCK_MONOTONIC, one clock "
                        "for all processes); rtt = ping publish to pong receive in the pinging process");
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

// ------------------------------------------------------------------------------------------------------
// Command line.

void add_common(CLI::App* cmd, Common& c) {
    cmd->add_option("--size", c.size, "payload bytes per event")->check(CLI::Range(16u, 65536u))->capture_default_str();
    cmd->add_option("--mode", c.mode, "subscribers busy-poll (spin) or park on the futex at once (block)")
        ->check(CLI::IsMember({"spin", "block"}))
        ->capture_default_str();
    cmd->add_flag("--json", c.json, "print one JSON object instead of a summary line");
    cmd->add_option("--socket", c.socket, "use the rvoip-eventd at this socket instead of starting one");
    cmd->add_option("--eventd", c.eventd, "rvoip-eventd to start (default: next to rvoip-bench)");
    cmd->add_option("--wrap-publisher", c.wrap, "command put in front of the publishing process, e.g. 'perf stat -e cycles --'");
    cmd->add_flag("--verbose", c.verbose, "print the pids of the processes started");
}

}  // namespace
}  // namespace rvoip::bench

int main(int argc, char** argv) {
    using namespace rvoip::bench;
    CLI::App app{"rvoip-bench: throughput and latency of rvoip-events between processes, through rvoip-eventd"};
    app.require_subcommand(1);

    ThroughputOptions tp;
    auto* throughput = app.add_subcommand("throughput", "publisher process(es) -> subscriber process(es), events/s as received");
    add_common(throughput, tp.common);
    throughput->add_option("--batch", tp.batch, "events per publish call (publish_batch when > 1)")->check(CLI::Range(1u, 65536u))->capture_default_str();
    throughput->add_option("--seconds", tp.seconds, "how long the publishers publish")->check(CLI::Range(0.05, 3600.0))->capture_default_str();
    throughput->add_option("--publishers", tp.publishers, "publisher processes (each spins on a core)")->check(CLI::Range(1, 64))->capture_default_str();
    throughput->add_option("--subscribers", tp.subscribers, "subscriber processes")->check(CLI::Range(1, 64))->capture_default_str();
    throughput->add_option("--capacity", tp.capacity, "lane bytes, a power of two (default: 8 MiB or four batches)");
    throughput->add_flag("--touch-payload", tp.touch, "subscribers read every payload byte (default: only the bench's 16-byte header)");

    LatencyOptions lt;
    auto* latency = app.add_subcommand("latency", "ping-pong between two processes, one-way latency percentiles");
    add_common(latency, lt.common);
    latency->add_option("--count", lt.count, "samples kept (default 100000 for spin, 20000 for block)")->check(CLI::Range(1, 100'000'000));
    latency->add_option("--warmup", lt.warmup, "samples thrown away first (default: count/10, 100..10000)")->check(CLI::Range(1, 10'000'000));

    RoleOptions role;
    std::string role_mode = "spin";
    auto* child = app.add_subcommand("_child", "a process started by rvoip-bench itself")->group("");  // hidden
    child->add_option("--role", role.role)->required();
    child->add_option("--socket", role.socket)->required();
    child->add_option("--topic", role.topic)->required();
    child->add_option("--topic2", role.topic2);
    child->add_option("--size", role.size);
    child->add_option("--batch", role.batch);
    child->add_option("--seconds", role.seconds);
    child->add_option("--count", role.count);
    child->add_option("--warmup", role.warmup);
    child->add_option("--mode", role_mode);
    child->add_option("--capacity", role.capacity);
    child->add_option("--id", role.id);
    child->add_option("--publishers", role.publishers);
    child->add_flag("--touch", role.touch);

    CLI11_PARSE(app, argc, argv);

    if (child->parsed()) {
        role.spin = role_mode == "spin";
        return run_role(role);
    }
    install_signal_handlers();
    if (throughput->parsed()) return run_throughput(tp);
    return run_latency(lt);
}
