// What the service manager is told from the loop (ServiceHooks): a heartbeat on a timer of the loop's
// own, so that a loop that hangs goes silent and the watchdog fires; and a status line when what the
// broker serves changed. Neither is ever sent per request: a change is noted by comparing a few counters
// once per loop turn, and reported a second after the previous report at the earliest.
#include "daemon/broker_impl.hpp"

#include <cstring>

#include <sys/timerfd.h>

namespace rvoip::events::daemon {

namespace {

constexpr std::int64_t kStatusEveryNs = 1'000'000'000;

timespec to_timespec(std::int64_t ns) { return {time_t(ns / 1'000'000'000), long(ns % 1'000'000'000)}; }

std::string count(std::size_t n, const char* one, const char* many) {
    return std::to_string(n) + " " + (n == 1 ? one : many);
}

}  // namespace

Status Broker::Impl::open_service_timers() {
    const auto& hooks = cfg.service;
    if (hooks.heartbeat && hooks.heartbeat_interval.count() > 0) {
        heartbeat_fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (heartbeat_fd < 0) return fail(Errc::internal, std::string("heartbeat timer: ") + std::strerror(errno));
        itimerspec its{};
        its.it_value = its.it_interval = to_timespec(std::int64_t(hooks.heartbeat_interval.count()) * 1000);
        ::timerfd_settime(heartbeat_fd, 0, &its, nullptr);
        watch(heartbeat_fd);
    }
    if (hooks.report && hooks.report_interval.count() > 0) {
        report_fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (report_fd < 0) return fail(Errc::internal, std::string("report timer: ") + std::strerror(errno));
        itimerspec its{};
        its.it_value = to_timespec(1);  // the first at once: an exporter has something to serve from the start
        its.it_interval = to_timespec(std::int64_t(hooks.report_interval.count()) * 1'000'000);
        ::timerfd_settime(report_fd, 0, &its, nullptr);
        watch(report_fd);
    }
    if (hooks.status) {
        status_fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (status_fd < 0) return fail(Errc::internal, std::string("status timer: ") + std::strerror(errno));
        watch(status_fd);
    }
    return {};
}

void Broker::Impl::send_reports() {
    std::uint64_t expirations;
    while (::read(report_fd, &expirations, sizeof expirations) > 0) {
    }
    auto status = render(nullptr, proto::Inspect{proto::InspectWhat::status, {}, 0});
    auto topics = render(nullptr, proto::Inspect{proto::InspectWhat::topics, {}, 0});
    if (status && topics) cfg.service.report(std::move(*status), std::move(*topics));
}

void Broker::Impl::heartbeat() {
    std::uint64_t expirations;
    while (::read(heartbeat_fd, &expirations, sizeof expirations) > 0) {
    }
    // One ping however many intervals passed: a late one says the loop runs again, which it does.
    cfg.service.heartbeat();
}

Broker::Impl::Census Broker::Impl::census() const {
    return {topics.size(), adopted_topics, sessions.size(), orphans.size(), out_of_fds};
}

std::string Broker::Impl::status_line(const Census& c) {
    std::string s = "serving " + count(c.topics, "topic", "topics") + " (" + std::to_string(c.adopted) + " adopted), " +
                    count(c.clients, "client", "clients");
    if (c.away) s += ", " + count(c.away, "process", "processes") + " holding slots without a connection";
    if (c.out_of_fds) s += "; not accepting connections: out of descriptors";
    return s;
}

void Broker::Impl::note_changes() {
    if (status_fd < 0 || status_pending || census() == reported) return;
    // The first change after a quiet second is reported at once (1 ns: a zero it_value disarms).
    const std::int64_t wait = std::max<std::int64_t>(reported_ns + kStatusEveryNs - shm::monotonic_ns(), 1);
    itimerspec its{};
    its.it_value = to_timespec(wait);
    ::timerfd_settime(status_fd, 0, &its, nullptr);
    status_pending = true;
}

void Broker::Impl::report_status() {
    std::uint64_t expirations;
    while (::read(status_fd, &expirations, sizeof expirations) > 0) {
    }
    status_pending = false;
    const Census now = census();
    if (now == reported) return;  // changed and changed back: nothing to say
    reported = now;
    reported_ns = shm::monotonic_ns();
    cfg.service.status(status_line(now));
}

std::string Broker::status() const { return Impl::status_line(impl_->census()); }

}  // namespace rvoip::events::daemon
