// Inspection: the JSON reports rvoip-eventctl shows (status, topics, one topic, clients). Everything
// here is read from the broker's own records and from the topics' counters in shared memory, which
// their owners write without ever a shared read-modify-write (layout.hpp): reading them costs the data
// path nothing. Numbers read from shared memory are anyone's writing; they are reported, never used.
#include "daemon/broker_impl.hpp"
#include "shm/latency.hpp"

#include <nlohmann/json.hpp>

namespace rvoip::events::daemon {
namespace {

using nlohmann::json;

const char* overflow_name(Overflow o) {
    switch (o) {
    case Overflow::block: return "block";
    case Overflow::fail: return "fail";
    }
    return "unknown";
}

const char* state_name(std::uint32_t s) {
    switch (static_cast<layout::SlotState>(s)) {
    case layout::SlotState::free: return "free";
    case layout::SlotState::active: return "active";
    case layout::SlotState::dead: return "dead";
    case layout::SlotState::evicted: return "evicted";
    }
    return "unknown";
}

}  // namespace

bool Broker::Impl::sees_all_clients(const Session& s) const {  // (render: a null session sees all)
    return !cfg.access.enforced() || s.peer.uid == 0 || s.peer.uid == ::geteuid();
}

std::array<std::uint64_t, layout::kLanes> Broker::Impl::published(Topic& t) {
    auto sum = t.published_retired;
    if (!intact(t)) return sum;
    for (std::uint32_t i = 0; i < t.map.max_publishers; ++i)
        if (t.publisher_owner[i] != kNoOwner)
            for (std::size_t l = 0; l < layout::kLanes; ++l)
                sum[l] += t.map.publishers[i].published[l].load(std::memory_order_relaxed);  // relaxed: a report
    return sum;
}

// Per lane: the tail and, over the topic's active subscribers, the smallest position (what publishers
// wait for) and the largest lag in bytes.
void Broker::Impl::lane_report(Topic& t, json& lanes, bool settings) {
    const auto pub = published(t);
    const bool whole = intact(t);
    for (std::size_t l = 0; l < layout::kLanes; ++l) {
        const auto& cfg_l = t.lanes[l];
        const std::uint64_t tail = whole ? t.map.lanes[l].position(std::memory_order_relaxed) : 0;  // relaxed: a report
        std::uint64_t worst = 0;
        for (std::uint32_t i = 0; whole && i < t.map.max_subscribers; ++i) {
            if (t.subscriber_owner[i] == kNoOwner) continue;
            const std::uint64_t pos = t.map.slots[i].position[l].load(std::memory_order_relaxed);
            if (pos <= tail) worst = std::max(worst, tail - pos);
        }
        json lane{{"lane", to_string(Priority(l))},
                  {"capacity_bytes", cfg_l.capacity},
                  {"tail_bytes", tail},
                  {"published_events", pub[l]},
                  {"fill_bytes", std::min(worst, cfg_l.capacity)},
                  {"fill_percent", cfg_l.capacity ? 100.0 * double(std::min(worst, cfg_l.capacity)) / double(cfg_l.capacity) : 0.0}};
        // The publisher slot holding the lane alone (PublisherOptions::exclusive_lanes), or null.
        lane["exclusive_slot"] = t.exclusive[l] ? json(t.exclusive[l] - 1) : json(nullptr);
        if (settings) {
            lane["max_event_bytes"] = cfg_l.max_event;
            lane["overflow"] = overflow_name(cfg_l.overflow);
            lane["block_timeout_ms"] = cfg_l.block_timeout_ms;
            lane["evict_after_ms"] = cfg_l.evict_after_ms;
        }
        lanes.push_back(std::move(lane));
    }
}

json Broker::Impl::topic_summary(Topic& t, bool settings) {
    json lanes = json::array();
    lane_report(t, lanes, settings);
    std::uint64_t events = 0, worst = 0;
    double fill = 0;
    for (auto& l : lanes) {
        events += l["published_events"].get<std::uint64_t>();
        worst = std::max(worst, l["fill_bytes"].get<std::uint64_t>());
        fill = std::max(fill, l["fill_percent"].get<double>());
    }
    return json{{"name", t.name},
                {"id", t.id},
                {"type", describe(t.fingerprint)},
                {"raw", t.fingerprint.kind == layout::Kind::raw},
                {"publishers", t.publishers_held()},
                {"subscribers", t.subscribers_held()},
                {"published_events", events},
                {"worst_lag_bytes", worst},
                {"fill_percent", fill},
                {"evictions", monitor.evictions(t.id)},
                {"damaged", t.damaged},
                {"lanes", std::move(lanes)}};
}

json Broker::Impl::topic_detail(Topic& t) {
    json j = topic_summary(t, /*settings=*/true);
    // Events in a subscriber's lag: bytes over the lane's mean record stride so far (records differ in
    // size, so it is an estimate; exact counts would cost the publisher a shared counter).
    std::array<double, layout::kLanes> stride{};
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        if (const auto n = j["lanes"][l]["published_events"].get<std::uint64_t>())
            stride[l] = double(j["lanes"][l]["tail_bytes"].get<std::uint64_t>()) / double(n);
    json pubs = json::array(), subs = json::array();
    const bool whole = intact(t);
    auto who = [&](std::uint32_t owner, json& e) {
        const Session* s = session_of(owner);
        e["client"] = owner;
        e["client_name"] = s ? s->name : "?";
        e["connected"] = s && s->fd >= 0;
    };
    for (std::uint32_t i = 0; i < t.map.max_publishers; ++i) {
        if (t.publisher_owner[i] == kNoOwner) continue;
        json e{{"slot", i}};
        who(t.publisher_owner[i], e);
        json alone = json::array();  // lanes it holds alone
        for (std::size_t l = 0; l < layout::kLanes; ++l)
            if (t.exclusive[l] == i + 1) alone.push_back(to_string(Priority(l)));
        e["exclusive_lanes"] = std::move(alone);
        if (whole) {
            const auto& p = t.map.publishers[i];
            e["pid"] = p.pid;
            e["state"] = state_name(p.state.load(std::memory_order_relaxed));
            for (std::size_t l = 0; l < layout::kLanes; ++l) {  // relaxed: single-writer counters, a report
                const std::string lane(to_string(Priority(l)));
                e["published"][lane] = p.published[l].load(std::memory_order_relaxed);
                e["full"][lane] = p.full[l].load(std::memory_order_relaxed);
                e["timeouts"][lane] = p.timeouts[l].load(std::memory_order_relaxed);
            }
        }
        pubs.push_back(std::move(e));
    }
    for (std::uint32_t i = 0; i < t.map.max_subscribers; ++i) {
        if (t.subscriber_owner[i] == kNoOwner) continue;
        json e{{"slot", i}};
        who(t.subscriber_owner[i], e);
        if (whole) {
            const auto& sl = t.map.slots[i];
            e["pid"] = sl.pid;
            e["state"] = state_name(sl.state.load(std::memory_order_relaxed));
            for (std::size_t l = 0; l < layout::kLanes; ++l) {  // relaxed: a report
                const std::string lane(to_string(Priority(l)));
                const std::uint64_t tail = t.map.lanes[l].position(std::memory_order_relaxed);
                const std::uint64_t pos = sl.position[l].load(std::memory_order_relaxed);
                const std::uint64_t lag = pos <= tail ? tail - pos : 0;
                e["position_bytes"][lane] = pos;
                e["lag_bytes"][lane] = lag;
                e["received"][lane] = sl.received[l].load(std::memory_order_relaxed);
                e["lag_events_estimate"][lane] = stride[l] > 0 ? std::uint64_t(double(lag) / stride[l] + 0.5) : 0;
            }
            e["lagged"] = sl.lagged.load(std::memory_order_relaxed);
            e["missed"] = sl.missed.load(std::memory_order_relaxed);
            e["evictions"] = sl.evictions.load(std::memory_order_relaxed) / 2;
            e["corrupt"] = sl.corrupt.load(std::memory_order_relaxed);
            e["wakeups"] = sl.wakeups.load(std::memory_order_relaxed);
            // Sampled since the slot was joined; each figure is its bucket's upper bound (shm/latency.hpp).
            const auto h = shm::read_latency(sl);
            e["latency_ns"] = json{{"samples", h.samples()},
                                   {"p50", h.percentile_ns(0.50)},
                                   {"p99", h.percentile_ns(0.99)},
                                   {"p99_9", h.percentile_ns(0.999)},
                                   {"max", h.percentile_ns(1.0)}};
        }
        subs.push_back(std::move(e));
    }
    const auto& f = t.fingerprint;  // whole, so that a tool can publish or subscribe to any topic it may
    j["fingerprint"] = json{{"type_name", std::string(f.name())},
                            {"size", f.size},
                            {"align", f.align},
                            {"schema_version", f.schema_version},
                            {"raw", f.kind == layout::Kind::raw}};
    j["publisher_slots"] = std::move(pubs);
    j["subscriber_slots"] = std::move(subs);
    return j;
}

Result<std::string> Broker::Impl::render(const Session* s, const proto::Inspect& q) {
    auto visible = [&](const Topic& t) { return !s || (cfg.access.rights(s->peer, t.name) & (kPublish | kSubscribe)) != 0; };
    json j{{"time_ns", shm::monotonic_ns()}};
    switch (q.what) {
    case proto::InspectWhat::status: {
        std::size_t n_topics = 0, pubs = 0, subs = 0;
        for (auto& t : topics) {
            if (!visible(*t)) continue;
            ++n_topics;
            pubs += t->publishers_held();
            subs += t->subscribers_held();
        }
        j["broker"] = json{{"version", RVOIP_EVENTS_VERSION},
                           {"pid", ::getpid()},
                           {"uptime_s", double(shm::monotonic_ns() - started_ns) / 1e9},
                           {"socket", cfg.socket_path},
                           {"shm_prefix", cfg.shm_prefix},
                           {"segments", cfg.segments == shm::Backing::sealed ? "sealed" : "named"},
                           {"access_rules", cfg.access.enforced()}};
        j["topics"] = n_topics;
        j["clients"] = sessions.size();
        j["held_for_exited_connections"] = orphans.size();
        j["publishers"] = pubs;
        j["subscribers"] = subs;
        j["shm_bytes"] = shm_bytes;  // reserved by the segments at creation, whether or not touched yet
        j["shm_limit_bytes"] = shm_limit;
        // Three per topic and two per connection, mostly (the unit's LimitNOFILE says the arithmetic).
        j["descriptors"] = json{{"open", open_fds()}, {"limit", fd_limit()}};
        j["limits"] = json{{"max_connections", cfg.limits.max_connections}, {"max_topics", cfg.limits.max_topics}};
        break;
    }
    case proto::InspectWhat::topics: {
        j["topics"] = json::array();
        for (auto& t : topics)
            if (visible(*t)) j["topics"].push_back(topic_summary(*t));
        break;
    }
    case proto::InspectWhat::topic: {
        auto it = topic_ids.find(q.topic);
        // A topic the client may not see is reported as absent, like one that does not exist.
        if (it == topic_ids.end() || !visible(*topics[it->second - 1]))
            return fail(Errc::no_such_topic, "no topic '" + proto::printable_excerpt(q.topic) + "'");
        j["topic"] = topic_detail(*topics[it->second - 1]);
        break;
    }
    case proto::InspectWhat::clients: {
        j["clients"] = json::array();
        auto add = [&](const Session& c) {
            if (s && !sees_all_clients(*s) && c.peer.uid != s->peer.uid) return;
            json e{{"client", c.id}, {"pid", c.pid}, {"uid", c.uid}, {"name", c.name}, {"connected", c.fd >= 0}};
            e["publishes"] = json::array();
            e["subscribes"] = json::array();
            for (const auto& p : c.publishers) e["publishes"].push_back(topics[p.topic - 1]->name);
            for (const auto& p : c.subscribers) e["subscribes"].push_back(topics[p.topic - 1]->name);
            j["clients"].push_back(std::move(e));
        };
        for (auto& [fd, c] : sessions)
            if (c->greeted) add(*c);
        for (auto& c : orphans) add(*c);
        break;
    }
    }
    // error_handler::replace: names from shared memory (type names) are not trusted to be UTF-8.
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Status Broker::Impl::on_inspect(Session& s, std::uint64_t corr, const proto::Inspect& q) {
    if (q.offset == 0) {
        auto doc = render(&s, q);
        if (!doc) return std::unexpected(doc.error());
        if (doc->size() > proto::kMaxInspectReport)
            return fail(Errc::limit_reached, "the report is " + std::to_string(doc->size()) + " bytes, more than a client accepts");
        s.report = std::move(*doc);
    } else if (q.offset >= s.report.size()) {
        return fail(Errc::invalid_argument, "inspect offset " + std::to_string(q.offset) + " is past the report's end");
    }
    proto::InspectReply r;
    r.total = std::uint32_t(s.report.size());
    r.offset = q.offset;
    r.chunk = s.report.substr(q.offset, proto::kInspectChunk);
    if (q.offset + r.chunk.size() >= s.report.size()) s.report.clear();  // sent in full: free it
    reply(s, corr, std::move(r));
    return {};
}

}  // namespace rvoip::events::daemon
