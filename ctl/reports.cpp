#include "ctl/reports.hpp"

#include "ctl/table.hpp"
#include "daemon/metrics.hpp"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <thread>

#include <pwd.h>

namespace rvoip::events::ctl {

using nlohmann::json;

int report_error(const Error& e) {
    std::fprintf(stderr, "rvoip-eventctl: %s\n", e.what().c_str());
    switch (e.code) {
    case Errc::broker_unavailable: return kUnreachable;
    case Errc::no_such_topic: return kNoSuchTopic;
    case Errc::permission_denied: return kDenied;
    case Errc::invalid_argument:
    case Errc::invalid_topic_name: return kUsage;
    default: return kFailed;
    }
}

Result<json> fetch(EventSystem& bus, proto::InspectWhat what, std::string_view topic) {
    auto doc = bus.inspect(what, topic);
    if (!doc) return std::unexpected(doc.error());
    auto j = json::parse(*doc, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return fail(Errc::malformed, "the broker's report is not valid JSON");
    return j;
}

std::string user_name(std::uint32_t uid) {
    passwd pw{}, *found = nullptr;
    char buf[4096];
    if (::getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found) return found->pw_name;
    return "uid " + std::to_string(uid);
}

void add_rates(json& now, const json& before) {
    const double dt = double(now["time_ns"].get<std::int64_t>() - before["time_ns"].get<std::int64_t>()) / 1e9;
    for (auto& t : now["topics"]) {
        double r = -1;
        for (auto& b : before["topics"])
            if (b["name"] == t["name"] && dt > 0) {
                const auto a = b["published_events"].get<std::uint64_t>(), z = t["published_events"].get<std::uint64_t>();
                r = z >= a ? double(z - a) / dt : -1;  // fewer than before: the broker restarted
            }
        t["rate_per_s"] = r;
    }
}

int status(EventSystem& bus, bool as_json) {
    auto j = fetch(bus, proto::InspectWhat::status);
    if (!j) return report_error(j.error());
    if (as_json) {
        std::cout << j->dump(2) << "\n";
        return kOk;
    }
    const auto& b = (*j)["broker"];
    Table t({"", ""});
    t.add({"broker", "up, pid " + std::to_string(b["pid"].get<long>()) + ", version " + b["version"].get<std::string>()});
    t.add({"uptime", duration(b["uptime_s"].get<double>())});
    t.add({"socket", b["socket"].get<std::string>()});
    t.add({"segments", b["segments"].get<std::string>() + " (prefix " + b["shm_prefix"].get<std::string>() + ")"});
    t.add({"access rules", b["access_rules"].get<bool>() ? "enforced" : "none (everyone who reaches the socket)"});
    t.add({"topics", std::to_string((*j)["topics"].get<std::uint64_t>()) + " of at most " +
                         std::to_string((*j)["limits"]["max_topics"].get<std::uint64_t>())});
    t.add({"clients", std::to_string((*j)["clients"].get<std::uint64_t>()) + " connected of at most " +
                          std::to_string((*j)["limits"]["max_connections"].get<std::uint64_t>()) + ", " +
                          std::to_string((*j)["held_for_exited_connections"].get<std::uint64_t>()) + " held for processes without a connection"});
    t.add({"slots", std::to_string((*j)["publishers"].get<std::uint64_t>()) + " publishers, " +
                        std::to_string((*j)["subscribers"].get<std::uint64_t>()) + " subscribers"});
    t.add({"shared memory", bytes((*j)["shm_bytes"].get<std::uint64_t>()) + " reserved by segments, of at most " +
                                bytes((*j)["shm_limit_bytes"].get<std::uint64_t>())});
    if (j->contains("descriptors")) {  // a broker from before they were reported has none
        const auto& d = (*j)["descriptors"];
        std::string fds = std::to_string(d["open"].get<std::uint64_t>()) + " open";
        if (const auto limit = d["limit"].get<std::uint64_t>()) fds.append(" of at most ").append(std::to_string(limit));
        t.add({"descriptors", fds});
    }
    const std::string out = t.render();
    std::cout << out.substr(out.find('\n') + 1);  // no header row: a list of facts
    return kOk;
}

std::string topics_table(const json& topics, std::size_t max_rows, std::size_t max_width) {
    Table t({"TOPIC", ">PUBS", ">SUBS", ">RATE", ">EVENTS", ">FILL", ">WORST LAG", ">EVICT", "LANES (C/H/N/L)"});
    for (const auto& x : topics) {
        if (max_rows && t.rows() >= max_rows) break;
        std::string lanes;
        for (const auto& l : x["lanes"]) lanes += (lanes.empty() ? "" : "/") + size_short(l["capacity_bytes"].get<std::uint64_t>());
        const double r = x.contains("rate_per_s") ? x["rate_per_s"].get<double>() : -1;
        t.add({x["name"].get<std::string>() + (x["damaged"].get<bool>() ? " (damaged)" : ""),
               std::to_string(x["publishers"].get<std::uint64_t>()), std::to_string(x["subscribers"].get<std::uint64_t>()), rate(r),
               count(x["published_events"].get<std::uint64_t>()), percent(x["fill_percent"].get<double>()),
               bytes(x["worst_lag_bytes"].get<std::uint64_t>()), std::to_string(x["evictions"].get<std::uint64_t>()), lanes});
    }
    return t.render(max_width);
}

int topics(EventSystem& bus, bool as_json, double interval_s) {
    auto j = fetch(bus, proto::InspectWhat::topics);
    if (!j) return report_error(j.error());
    if (interval_s > 0) {  // rates: events published between two reports
        std::this_thread::sleep_for(std::chrono::duration<double>(interval_s));
        auto later = fetch(bus, proto::InspectWhat::topics);
        if (!later) return report_error(later.error());
        add_rates(*later, *j);
        j = std::move(later);
    }
    if (as_json) std::cout << j->dump(2) << "\n";
    else std::cout << topics_table((*j)["topics"], 0, 0);
    return kOk;
}

int topic(EventSystem& bus, const std::string& name, bool as_json) {
    auto j = fetch(bus, proto::InspectWhat::topic, name);
    if (!j) return report_error(j.error());
    if (as_json) {
        std::cout << j->dump(2) << "\n";
        return kOk;
    }
    const auto& t = (*j)["topic"];
    std::cout << "topic " << t["name"].get<std::string>() << " (id " << t["id"].get<std::uint64_t>() << "): "
              << t["type"].get<std::string>() << (t["damaged"].get<bool>() ? ", DAMAGED" : "") << "\n\n";
    Table lanes({"LANE", ">CAPACITY", ">MAX EVENT", "OVERFLOW", ">FILL", ">TAIL", ">EVENTS", ">EVICT AFTER"});
    for (const auto& l : t["lanes"])
        lanes.add({l["lane"].get<std::string>(), bytes(l["capacity_bytes"].get<std::uint64_t>()), bytes(l["max_event_bytes"].get<std::uint64_t>()),
                   l["overflow"].get<std::string>() + (l["overflow"] == "block" ? " " + std::to_string(l["block_timeout_ms"].get<std::uint64_t>()) + " ms" : ""),
                   percent(l["fill_percent"].get<double>()), bytes(l["tail_bytes"].get<std::uint64_t>()),
                   count(l["published_events"].get<std::uint64_t>()),
                   l["evict_after_ms"].get<std::uint64_t>() ? std::to_string(l["evict_after_ms"].get<std::uint64_t>()) + " ms" : "never"});
    std::cout << lanes.render() << "\n";
    auto per_lane = [&](const json& v, auto fmt) {
        std::string s;
        for (std::size_t l = 0; l < layout::kLanes; ++l)
            s += (s.empty() ? "" : "/") + fmt(v[std::string(to_string(Priority(l)))].template get<std::uint64_t>());
        return s;
    };
    auto plain = [](std::uint64_t n) { return count(n); };
    Table pubs({">SLOT", ">PID", "CLIENT", "STATE", "PUBLISHED C/H/N/L", "FULL C/H/N/L", "TIMEOUTS C/H/N/L", "ALONE ON"});
    auto alone = [](const json& p) {
        std::string s;
        if (p.contains("exclusive_lanes"))
            for (const auto& l : p["exclusive_lanes"]) s += (s.empty() ? "" : ",") + l.get<std::string>();
        return s.empty() ? std::string("-") : s;
    };
    for (const auto& p : t["publisher_slots"])
        pubs.add({std::to_string(p["slot"].get<std::uint64_t>()), p.contains("pid") ? std::to_string(p["pid"].get<std::uint64_t>()) : "?",
                  p["client_name"].get<std::string>() + (p["connected"].get<bool>() ? "" : " (no connection)"),
                  p.value("state", std::string("?")), p.contains("published") ? per_lane(p["published"], plain) : "?",
                  p.contains("full") ? per_lane(p["full"], plain) : "?", p.contains("timeouts") ? per_lane(p["timeouts"], plain) : "?", alone(p)});
    std::cout << "publishers: " << pubs.rows() << "\n" << (pubs.rows() ? pubs.render() : "") << "\n";
    Table subs({">SLOT", ">PID", "CLIENT", "STATE", "LAG C/H/N/L", "~LAG EVENTS", "RECEIVED C/H/N/L", ">LAGGED", ">EVICTED", ">CORRUPT",
                "LATENCY P50/P99/P99.9"});
    auto latencies = [](const json& s) {
        if (!s.contains("latency_ns") || s["latency_ns"]["samples"].get<std::uint64_t>() == 0) return std::string("-");
        const auto& l = s["latency_ns"];
        return latency(l["p50"].get<std::uint64_t>()) + "/" + latency(l["p99"].get<std::uint64_t>()) + "/" +
               latency(l["p99_9"].get<std::uint64_t>());
    };
    for (const auto& s : t["subscriber_slots"]) {
        if (!s.contains("lag_bytes")) {
            subs.add({std::to_string(s["slot"].get<std::uint64_t>()), "?", s["client_name"].get<std::string>()});
            continue;
        }
        subs.add({std::to_string(s["slot"].get<std::uint64_t>()), std::to_string(s["pid"].get<std::uint64_t>()),
                  s["client_name"].get<std::string>() + (s["connected"].get<bool>() ? "" : " (no connection)"),
                  s["state"].get<std::string>(), per_lane(s["lag_bytes"], [](std::uint64_t n) { return bytes(n); }),
                  per_lane(s["lag_events_estimate"], plain), per_lane(s["received"], plain),
                  count(s["lagged"].get<std::uint64_t>()), std::to_string(s["evictions"].get<std::uint64_t>()),
                  std::to_string(s["corrupt"].get<std::uint64_t>()), latencies(s)});
    }
    std::cout << "subscribers: " << subs.rows() << "\n" << (subs.rows() ? subs.render() : "");
    if (subs.rows()) std::cout << "(latency: publish to receive, sampled, each an upper bound within 25%)\n";
    return kOk;
}

int clients(EventSystem& bus, bool as_json) {
    auto j = fetch(bus, proto::InspectWhat::clients);
    if (!j) return report_error(j.error());
    for (auto& c : (*j)["clients"]) c["user"] = user_name(c["uid"].get<std::uint32_t>());
    if (as_json) {
        std::cout << j->dump(2) << "\n";
        return kOk;
    }
    Table t({">ID", ">PID", "USER", "NAME", "PUBLISHES", "SUBSCRIBES"});
    auto list = [](const json& v) {
        std::string s;
        for (auto& x : v) s += (s.empty() ? "" : ",") + x.get<std::string>();
        return s.empty() ? std::string("-") : s;
    };
    for (const auto& c : (*j)["clients"])
        t.add({std::to_string(c["client"].get<std::uint64_t>()), std::to_string(c["pid"].get<std::uint64_t>()), c["user"].get<std::string>(),
               c["name"].get<std::string>() + (c["connected"].get<bool>() ? "" : " (no connection)"), list(c["publishes"]), list(c["subscribes"])});
    std::cout << t.render();
    return kOk;
}

// The same families the daemon's endpoint serves (daemon/metrics.cpp), in the text format.
int metrics(EventSystem& bus) {
    auto st = fetch(bus, proto::InspectWhat::status);
    if (!st) return report_error(st.error());
    auto tp = fetch(bus, proto::InspectWhat::topics);
    if (!tp) return report_error(tp.error());
    std::cout << daemon::metrics_text(daemon::metric_families(*st, *tp));
    return kOk;
}

}  // namespace rvoip::events::ctl
