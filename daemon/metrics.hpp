// Prometheus metrics from the broker's reports (the JSON of daemon/inspect.cpp): the families both the
// daemon's HTTP endpoint (--metrics-listen) and `rvoip-eventctl metrics` serve, named by Prometheus
// conventions (base units, counters ending in _total, labels for topic and lane).
#pragma once

#include "proto/errc.hpp"

#include <nlohmann/json.hpp>
#include <prometheus/metric_family.h>

#include <memory>
#include <string>
#include <vector>

namespace rvoip::events::daemon {

std::vector<prometheus::MetricFamily> metric_families(const nlohmann::json& status, const nlohmann::json& topics);
// The text exposition format (version 0.0.4).
std::string metrics_text(const std::vector<prometheus::MetricFamily>& families);

// The HTTP endpoint: /metrics and /health on `listen` ("127.0.0.1:9464"; port 0 picks a free one),
// served by prometheus-cpp's own threads from the latest reports the broker's loop handed over. The
// loop is never blocked by a scrape, and a scrape never touches the broker's state.
class MetricsEndpoint {
public:
    static Result<std::unique_ptr<MetricsEndpoint>> start(const std::string& listen, std::chrono::milliseconds interval);
    ~MetricsEndpoint();
    // From the broker's loop (ServiceHooks::report).
    void update(std::string status, std::string topics);
    int port() const;

private:
    struct Impl;
    explicit MetricsEndpoint(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace rvoip::events::daemon
