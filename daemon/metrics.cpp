#include "daemon/metrics.hpp"

#include "shm/clock.hpp"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>

#include <mutex>
#include <sstream>

namespace rvoip::events::daemon {

using nlohmann::json;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {

ClientMetric value(MetricType type, double v, std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric m;
    m.label = std::move(labels);
    if (type == MetricType::Counter) m.counter.value = v;
    else m.gauge.value = v;
    return m;
}

}  // namespace

std::vector<MetricFamily> metric_families(const json& status, const json& topics) {
    std::vector<MetricFamily> out;
    auto family = [&](const char* name, MetricType type, const char* help) -> MetricFamily& {
        out.push_back(MetricFamily{name, help, type, {}});
        return out.back();
    };
    auto num = [](const json& v) { return v.is_number() ? v.get<double>() : 0.0; };
    family("rvoip_events_up", MetricType::Gauge, "Whether the broker answered.").metric.push_back(value(MetricType::Gauge, 1));
    family("rvoip_events_uptime_seconds", MetricType::Gauge, "Seconds since the broker started.")
        .metric.push_back(value(MetricType::Gauge, num(status["broker"]["uptime_s"])));
    family("rvoip_events_clients", MetricType::Gauge, "Connected clients.").metric.push_back(value(MetricType::Gauge, num(status["clients"])));
    family("rvoip_events_topics", MetricType::Gauge, "Topics the broker holds.").metric.push_back(value(MetricType::Gauge, num(status["topics"])));
    family("rvoip_events_shm_bytes", MetricType::Gauge, "Bytes of shared memory in the broker's segments.")
        .metric.push_back(value(MetricType::Gauge, num(status["shm_bytes"])));
    // Topic names are [a-z0-9_.-] and lanes four words: nothing to escape in a label value.
    auto per_topic = [&](const char* name, MetricType type, const char* help, const char* key) {
        auto& f = family(name, type, help);
        for (const auto& t : topics["topics"]) f.metric.push_back(value(type, num(t[key]), {{"topic", t["name"].get<std::string>()}}));
    };
    auto per_lane = [&](const char* name, MetricType type, const char* help, const char* key) {
        auto& f = family(name, type, help);
        for (const auto& t : topics["topics"])
            for (const auto& l : t["lanes"])
                f.metric.push_back(value(type, num(l[key]), {{"topic", t["name"].get<std::string>()}, {"lane", l["lane"].get<std::string>()}}));
    };
    per_topic("rvoip_events_publishers", MetricType::Gauge, "Publisher slots in use.", "publishers");
    per_topic("rvoip_events_subscribers", MetricType::Gauge, "Subscriber slots in use.", "subscribers");
    per_topic("rvoip_events_evictions_total", MetricType::Counter, "Subscribers evicted for holding publishers back.", "evictions");
    per_lane("rvoip_events_published_events_total", MetricType::Counter, "Events published on the lane since the broker started.",
             "published_events");
    per_lane("rvoip_events_lane_capacity_bytes", MetricType::Gauge, "Ring size of the lane.", "capacity_bytes");
    per_lane("rvoip_events_lane_fill_bytes", MetricType::Gauge, "Bytes the slowest subscriber has yet to read.", "fill_bytes");
    per_lane("rvoip_events_lane_tail_bytes_total", MetricType::Counter, "Bytes ever claimed on the lane.", "tail_bytes");
    return out;
}

std::string metrics_text(const std::vector<MetricFamily>& families) {
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, families);
    return out.str();
}

namespace {

// What a scrape reads: the latest reports, parsed when asked (on prometheus-cpp's thread).
class Latest : public prometheus::Collectable {
public:
    void set(std::string status, std::string topics) {
        std::lock_guard lock(mu_);
        status_ = std::move(status);
        topics_ = std::move(topics);
        at_ns_ = shm::monotonic_ns();
    }
    std::vector<MetricFamily> Collect() const override {
        std::string status, topics;
        {
            std::lock_guard lock(mu_);
            status = status_;
            topics = topics_;
        }
        auto s = json::parse(status, nullptr, false), t = json::parse(topics, nullptr, false);
        if (s.is_discarded() || t.is_discarded()) return {};
        return metric_families(s, t);
    }
    // Nanoseconds since the loop last handed reports over (a stuck loop stops handing them).
    std::int64_t age_ns() const {
        std::lock_guard lock(mu_);
        return at_ns_ ? shm::monotonic_ns() - at_ns_ : INT64_MAX;
    }

private:
    mutable std::mutex mu_;
    std::string status_, topics_;
    std::int64_t at_ns_ = 0;
};

// /health: prometheus-cpp serves collectables only, so health is a gauge too: 1 while the broker's loop
// hands over reports on time (within three intervals), 0 once it has stopped doing so.
class Health : public prometheus::Collectable {
public:
    Health(const Latest& latest, std::chrono::milliseconds interval) : latest_(latest), interval_(interval) {}
    std::vector<MetricFamily> Collect() const override {
        const bool ok = latest_.age_ns() <= 3 * std::chrono::nanoseconds(interval_).count();
        MetricFamily f{"rvoip_events_healthy", "1 while the broker's loop reports on time.", MetricType::Gauge, {}};
        f.metric.push_back(value(MetricType::Gauge, ok ? 1 : 0));
        return {f};
    }

private:
    const Latest& latest_;
    std::chrono::milliseconds interval_;
};

}  // namespace

struct MetricsEndpoint::Impl {
    std::shared_ptr<Latest> latest = std::make_shared<Latest>();
    std::shared_ptr<Health> health;
    std::unique_ptr<prometheus::Exposer> exposer;
};

MetricsEndpoint::MetricsEndpoint(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsEndpoint::~MetricsEndpoint() = default;

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::start(const std::string& listen, std::chrono::milliseconds interval) {
    auto impl = std::make_unique<Impl>();
    impl->health = std::make_shared<Health>(*impl->latest, interval);
    try {
        impl->exposer = std::make_unique<prometheus::Exposer>(listen, 1);
    } catch (const std::exception& e) {
        return fail(Errc::invalid_argument, "--metrics-listen '" + listen + "': cannot listen: " + e.what());
    }
    impl->exposer->RegisterCollectable(impl->latest, "/metrics");
    impl->exposer->RegisterCollectable(impl->health, "/health");
    return std::unique_ptr<MetricsEndpoint>(new MetricsEndpoint(std::move(impl)));
}

void MetricsEndpoint::update(std::string status, std::string topics) { impl_->latest->set(std::move(status), std::move(topics)); }

int MetricsEndpoint::port() const {
    auto ports = impl_->exposer->GetListeningPorts();
    return ports.empty() ? 0 : ports.front();
}

}  // namespace rvoip::events::daemon
