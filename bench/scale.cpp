#include "bench/scale.hpp"

#include "bench/processes.hpp"
#include "bench/roles.hpp"
#include "bench/scenarios.hpp"
#include "rvoip/events.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>

#include <sys/stat.h>

namespace rvoip::bench {
namespace {

using namespace rvoip::events;
using steady = std::chrono::steady_clock;

// ------------------------------------------------------------------------------------------------------
// The processes.

std::string topic_name(const ScaleRoleOptions& o, std::uint32_t i) { return o.topic + "." + std::to_string(i); }

// Descriptors this process holds (/proc/self/fd, without the one that lists it).
std::int64_t open_fds() {
    std::int64_t n = 0;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) ++n;
    return n - 1;
}

// Each event says which topic and which of its events it is, so a subscriber checks both.
struct ScaleHead {
    std::uint64_t topic;
    std::uint64_t seq;
};

Expected<EventSystem> connect_as(const ScaleRoleOptions& o) {
    auto bus = EventSystemBuilder().socket_path(o.socket).client_name("bench-" + g_child_label.substr(0, 24)).build();
    if (!bus) return failure("cannot connect to the broker: " + bus.error().what());
    return std::move(*bus);
}

std::string say_fields(std::string line, std::initializer_list<std::pair<const char*, std::int64_t>> fields) {
    for (const auto& [k, v] : fields) line.append(" ").append(k).append("=").append(std::to_string(v));
    return line;
}

// Opens a publisher on every topic (no lane options: the broker's defaults), says "ready", waits for "go",
// then publishes `events` events on each topic in turn. A publish that times out is tried again.
int run_publisher(const ScaleRoleOptions& o) {
    auto bus = connect_as(o);
    if (!bus) return report_error(bus.error());
    std::vector<RawPublisher> pubs;
    pubs.reserve(o.topics);
    for (std::uint32_t i = 0; i < o.topics; ++i) {
        auto p = bus->raw_publisher(topic_name(o, i));
        if (!p) return report_error("cannot publish on '" + topic_name(o, i) + "': " + p.error().what());
        pubs.push_back(std::move(*p));
    }
    std::int64_t lane_bytes = 0;
    for (const auto& l : pubs.front().topic().lanes) lane_bytes += std::int64_t(l.capacity);
    say(say_fields("ready", {{"fds", open_fds()}, {"lane_bytes", lane_bytes}}));
    std::string line;
    if (!std::getline(std::cin, line) || line != "go") return report_error("expected 'go', got '" + line + "'");
    std::vector<std::byte> payload(o.size);
    std::int64_t sent = 0, retries = 0;
    for (std::uint32_t i = 0; i < o.topics; ++i)
        for (std::uint32_t seq = 0; seq < o.events;) {
            const ScaleHead h{i, seq};
            std::memcpy(payload.data(), &h, sizeof h);
            auto st = pubs[i].publish(payload);
            if (!st && st.error().code != Errc::timeout) return report_error("publish on '" + topic_name(o, i) + "': " + st.error().what());
            if (!st) {
                ++retries;
                continue;
            }
            ++seq, ++sent;
        }
    say(say_fields("result", {{"sent", sent}, {"retries", retries}}));
    return 0;
}

// Subscribes to every topic, says "ready", then takes the topics in order: waits (parked, after the
// library's short spin) for each one's events, checking which topic and event each is. Reports what it
// received; a topic whose events did not all come within the time-out counts as incomplete.
int run_subscriber(const ScaleRoleOptions& o) {
    auto bus = connect_as(o);
    if (!bus) return report_error(bus.error());
    const WaitOptions wait = o.wait == "block" ? WaitOptions{.spin = 0, .busy_poll = false} : WaitOptions{};
    std::vector<RawSubscriber> subs;
    subs.reserve(o.topics);
    for (std::uint32_t i = 0; i < o.topics; ++i) {
        auto s = bus->raw_subscriber(topic_name(o, i), SubscriberOptions{TopicOptions{}, wait});
        if (!s) return report_error("cannot subscribe to '" + topic_name(o, i) + "': " + s.error().what());
        subs.push_back(std::move(*s));
    }
    say(say_fields("ready", {{"fds", open_fds()}}));
    const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.timeout_s));
    std::int64_t received = 0, complete = 0, wrong = 0;
    for (std::uint32_t i = 0; i < o.topics; ++i) {
        std::uint32_t seq = 0;
        while (seq < o.events && steady::now() < deadline) {
            auto ev = subs[i].receive_for(std::chrono::seconds(1));
            if (!ev) {
                if (ev.error().code == Errc::timeout) continue;
                return report_error("receive on '" + topic_name(o, i) + "': " + ev.error().what());
            }
            ScaleHead h{};
            const auto bytes = ev->bytes();
            if (bytes.size() >= sizeof h) std::memcpy(&h, bytes.data(), sizeof h);
            if (bytes.size() != o.size || h.topic != i || h.seq != seq || ev->sequence() != seq) ++wrong;
            ++seq, ++received;
        }
        complete += seq == o.events ? 1 : 0;
    }
    say(say_fields("result", {{"received", received}, {"complete", complete}, {"wrong", wrong}}));
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// The parent.

struct ScaleOptions {
    Common common;
    std::uint32_t topics = 1000;
    int subscribers = 8;
    std::uint32_t events = 4;
    double timeout_s = 300;
};

// Bytes of the /dev/shm files under `prefix` (named segments: the bench's own broker), or -1 if none.
std::int64_t dev_shm_bytes(const std::string& prefix) {
    if (prefix.empty()) return -1;
    std::int64_t total = 0;
    int files = 0;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/dev/shm", ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        if (!it->path().filename().string().starts_with(prefix + ".")) continue;
        struct stat st{};
        if (::stat(it->path().c_str(), &st) == 0) total += st.st_size, ++files;
    }
    return files ? total : -1;
}

// The broker's status report, as `rvoip-eventctl status --json` prints it.
Expected<nlohmann::json> broker_status(const std::string& socket) {
    auto bus = EventSystemBuilder().socket_path(socket).client_name("bench-scale").build();
    if (!bus) return failure("cannot connect to the broker: " + bus.error().what());
    auto doc = bus->inspect(proto::InspectWhat::status);
    if (!doc) return failure("status report: " + doc.error().what());
    auto j = nlohmann::json::parse(*doc, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return failure("the broker's status report is not JSON");
    return j;
}

std::int64_t get(const nlohmann::json& j, std::initializer_list<const char*> path) {
    const nlohmann::json* v = &j;
    for (const char* k : path) {
        if (!v->contains(k)) return -1;
        v = &(*v)[k];
    }
    return v->is_number() ? v->get<std::int64_t>() : -1;
}

int run_scale(const ScaleOptions& o) {
    auto s = open_session(o.common);
    if (!s) return fail(s.error());
    const std::string base = "bench.scale." + unique_suffix();
    std::vector<Child> children;  // declared after the session: reaped before its broker stops
    const auto spawn = [&](const std::string& role, int id) -> Done {
        auto c = Child::spawn({.argv = {s->exe, "_scale_child", "--role", role, "--socket", s->socket, "--topic", base, "--topics",
                                        std::to_string(o.topics), "--events", std::to_string(o.events), "--size", std::to_string(o.common.size),
                                        "--mode", o.common.mode, "--id", std::to_string(id), "--timeout", std::to_string(o.timeout_s)},
                               .label = role + " " + std::to_string(id)});
        if (!c) return failure(c.error());
        if (o.common.verbose) std::fprintf(stderr, "rvoip-bench: %s is pid %d\n", c->label().c_str(), int(c->pid()));
        children.push_back(std::move(*c));
        return {};
    };
    // Setup: from the first process started to every topic created and every slot held.
    const auto t0 = steady::now();
    for (int i = 0; i < o.subscribers; ++i)
        if (auto st = spawn("scale-subscriber", i + 1); !st) return fail(st.error());
    if (auto st = spawn("scale-publisher", 1); !st) return fail(st.error());
    std::vector<Child*> all;
    for (auto& c : children) all.push_back(&c);
    auto ready = wait_for_lines(all, "ready", steady::now() + std::chrono::seconds(300));
    if (!ready) return fail(ready.error());
    const double setup_s = std::chrono::duration<double>(steady::now() - t0).count();

    auto status = broker_status(s->socket);
    if (!status) return fail(status.error());
    const std::int64_t shm_files = dev_shm_bytes(s->broker ? s->broker->shm_prefix() : "");
    const Memory broker_memory = memory_of(s->broker_pid);
    std::int64_t client_fds = 0, lane_bytes = 0;
    for (std::size_t i = 0; i < children.size(); ++i) {
        auto f = Fields::parse((*ready)[i], children[i].label());
        if (!f) return fail(f.error());
        client_fds = std::max(client_fds, (*f)["fds"]);
        if (f->has("lane_bytes")) lane_bytes = (*f)["lane_bytes"];
    }

    const auto t1 = steady::now();
    if (auto st = children.back().send_line("go"); !st) return fail(st.error());
    auto results = wait_for_lines(all, "result", steady::now() + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.timeout_s + 60)));
    if (!results) return fail(results.error());
    const double delivery_s = std::chrono::duration<double>(steady::now() - t1).count();
    if (auto st = finish(children, *s); !st) return fail(st.error());

    std::int64_t received = 0, complete = 0, wrong = 0, sent = 0, retries = 0;
    for (std::size_t i = 0; i < children.size(); ++i) {
        auto f = Fields::parse((*results)[i], children[i].label());
        if (!f) return fail(f.error());
        if (f->has("sent")) {
            sent = (*f)["sent"];
            retries = (*f)["retries"];
            continue;
        }
        received += (*f)["received"];
        complete += (*f)["complete"];
        wrong += (*f)["wrong"];
    }
    const std::int64_t subscriptions = std::int64_t(o.topics) * o.subscribers;
    const bool all_delivered = complete == subscriptions && wrong == 0 && received == subscriptions * o.events &&
                               sent == std::int64_t(o.topics) * o.events;
    const std::int64_t fds = get(*status, {"descriptors", "open"}), fd_limit = get(*status, {"descriptors", "limit"});
    const std::int64_t shm = get(*status, {"shm_bytes"}), shm_limit = get(*status, {"shm_limit_bytes"});

    if (o.common.json) {
        Json j;
        j.str("scenario", "scale").num("topics", o.topics).num("publisher_processes", 1).num("subscriber_processes", o.subscribers);
        j.num("events_per_topic", o.events).num("size", o.common.size).str("wait_mode", o.common.mode).num("subscriptions", subscriptions);
        j.real("setup_seconds", setup_s, 3).real("delivery_seconds", delivery_s, 3);
        j.num("events_published", sent).num("publish_retries", retries).num("events_received", received);
        j.num("subscriptions_complete", complete).num("wrong_events", wrong).boolean("all_delivered", all_delivered);
        j.num_or_null("broker_open_fds", fds).num_or_null("broker_fd_limit", fd_limit);
        j.num_or_null("shm_reserved_bytes", shm).num_or_null("shm_limit_bytes", shm_limit);
        j.num_or_null("shm_reserved_bytes_per_topic", shm < 0 ? -1 : shm / o.topics).num("lane_bytes_per_topic", lane_bytes);
        j.num_or_null("dev_shm_bytes", shm_files).num_or_null("broker_rss_bytes", broker_memory.rss);
        j.num("client_fds_max", client_fds).str("segments", (*status)["broker"].value("segments", std::string("?")));
        j.str("method", "1 publisher and N subscriber processes started at once, each opening every topic with no lane options (the "
                        "broker's defaults); setup = first process started to every process ready; descriptors and shared memory from the "
                        "broker's status report once ready; then the publisher publishes each topic's events in turn and every subscriber "
                        "takes the topics in order, parked on the one it waits for");
        j.str("broker", s->broker ? "private" : "external");
        std::printf("%s\n", j.text().c_str());
    } else {
        std::printf("scale: %" PRIu32 " topics x (1 publisher + %d subscriber processes), default lanes: setup %.2f s, delivery %.2f s; "
                    "broker %" PRId64 " descriptors of %" PRId64 ", %.1f MiB of shared memory reserved (%.2f MiB per topic); "
                    "%" PRId64 " of %" PRId64 " subscriptions got all %" PRIu32 " events%s\n",
                    o.topics, o.subscribers, setup_s, delivery_s, fds, fd_limit, double(shm) / 1048576, double(shm) / o.topics / 1048576,
                    complete, subscriptions, o.events, all_delivered ? "" : " (NOT every event arrived)");
    }
    return all_delivered ? 0 : fail("not every subscription received its events");
}

}  // namespace

int run_scale_role(const ScaleRoleOptions& o) {
    g_child_label = o.role + " " + std::to_string(o.id);
    if (o.size < sizeof(ScaleHead)) return report_error("--size must be at least " + std::to_string(sizeof(ScaleHead)));
    if (o.role == "scale-publisher") return run_publisher(o);
    if (o.role == "scale-subscriber") return run_subscriber(o);
    return report_error("unknown role '" + o.role + "'");
}

struct ScaleCommand::Impl {
    ScaleOptions options;
    ScaleRoleOptions role;
    CLI::App* cmd = nullptr;
    CLI::App* child = nullptr;
};

ScaleCommand::ScaleCommand(CLI::App& app) : impl_(std::make_unique<Impl>()) {
    auto& o = impl_->options;
    o.common.mode = "spin-park";
    auto* cmd = impl_->cmd = app.add_subcommand("scale", "many topics on the broker's defaults: a publisher and N subscriber processes on "
                                                         "every one; setup time, descriptors, shared memory, every event delivered");
    add_common(cmd, o.common, {"spin-park", "block"}, "how subscribers wait: spin then park (spin-park, the library's default) or park at once (block)");
    cmd->add_option("--topics", o.topics, "topics, each published by the publisher and followed by every subscriber")
        ->check(CLI::Range(1u, 4096u))
        ->capture_default_str();
    cmd->add_option("--subscribers", o.subscribers, "subscriber processes")->check(CLI::Range(1, 63))->capture_default_str();
    cmd->add_option("--events", o.events, "events published on each topic")->check(CLI::Range(1u, 1'000'000u))->capture_default_str();
    cmd->add_option("--timeout", o.timeout_s, "how long a subscriber waits for the events it still misses")->check(CLI::Range(1.0, 3600.0))->capture_default_str();

    auto& r = impl_->role;
    auto* child = impl_->child = app.add_subcommand("_scale_child", "a scale process started by rvoip-bench itself")->group("");  // hidden
    child->add_option("--role", r.role)->required();
    child->add_option("--socket", r.socket)->required();
    child->add_option("--topic", r.topic)->required();
    child->add_option("--topics", r.topics)->required();
    child->add_option("--events", r.events)->required();
    child->add_option("--size", r.size);
    child->add_option("--mode", r.wait);
    child->add_option("--id", r.id);
    child->add_option("--timeout", r.timeout_s);
}

ScaleCommand::~ScaleCommand() = default;
bool ScaleCommand::child_parsed() const { return impl_->child->parsed(); }
int ScaleCommand::run_child() const { return run_scale_role(impl_->role); }
bool ScaleCommand::parsed() const { return impl_->cmd->parsed(); }
int ScaleCommand::run() const { return run_scale(impl_->options); }

}  // namespace rvoip::bench
