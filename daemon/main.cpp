// rvoip-eventd: the broker daemon.
#include "daemon/broker.hpp"
#include "daemon/fdstore.hpp"
#include "daemon/metrics.hpp"
#include "proto/channel.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace {

bool daemonize() {
    pid_t pid = ::fork();
    if (pid < 0) return false;
    if (pid > 0) std::_Exit(0);
    ::setsid();
    if (::fork() > 0) std::_Exit(0);
    if (::chdir("/") != 0) return false;
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
        ::dup2(null, 0);
        ::dup2(null, 1);
        ::dup2(null, 2);
        if (null > 2) ::close(null);
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    using namespace rvoip::events;
    daemon::BrokerConfig cfg;
    cfg.socket_path = proto::default_socket_path();
    std::string level = "info";
    bool foreground = false;
    std::uint64_t max_fds = 0;

    CLI::App app{"rvoip-eventd: shared-memory event broker for the RVOIP stack"};
    app.add_option("--socket", cfg.socket_path, "control socket path (env RVOIP_EVENTS_SOCKET)")->capture_default_str();
    app.add_option("--shm-prefix", cfg.shm_prefix, "prefix of the shared-memory segment names")->capture_default_str();
    app.add_option("--log-level", level, "trace, debug, info, warn, error, off")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
        ->capture_default_str();
    app.add_flag("--foreground", foreground, "stay in the foreground (systemd, containers, make run)");
    app.add_option("--doorbells", cfg.doorbells, "number of futex doorbells (parked consumers)")
        ->check(CLI::Range(1u, rvoip::events::layout::kMaxDoorbells))
        ->capture_default_str();
    app.add_option("--evict-grace-ms", cfg.evict_grace_ms, "no subscriber is evicted within this many ms of joining")
        ->check(CLI::Range(0u, rvoip::events::layout::kMaxEvictAfterMs))
        ->capture_default_str();
    app.add_flag("--cleanup", cfg.cleanup_on_exit, "remove the shared-memory segments on exit (default: keep them)");
    app.add_option("--acl", cfg.acl_path, "access rules: who may publish, subscribe, use Critical, create (docs/security.md)")
        ->check(CLI::ExistingFile);
    std::string metrics_listen;
    app.add_option("--metrics-listen", metrics_listen,
                   "serve Prometheus metrics (/metrics) and /health over HTTP on ADDRESS:PORT, e.g. 127.0.0.1:9464 "
                   "(default: off; `rvoip-eventctl metrics` prints the same)");
    std::string segments = "auto";
    app.add_option("--segments", segments,
                   "sealed (memfds no client can truncate, kept across restarts by systemd's fd store), named "
                   "(/dev/shm files, kept by name), or auto: sealed under a service manager, named otherwise")
        ->check(CLI::IsMember({"auto", "sealed", "named"}))
        ->capture_default_str();
    std::string socket_mode = "0660";
    app.add_option("--socket-mode", socket_mode, "mode of the control socket (octal)")->capture_default_str();
    app.add_option("--socket-group", cfg.socket_group, "group of the control socket (default: rvoip-events if it exists)");
    app.add_option("--reclaim-grace-ms", cfg.reclaim_grace_ms,
                   "after a restart, how long live clients have to reclaim their adopted slots")
        ->capture_default_str();
    // Limits (daemon/limits.hpp): a request that reaches one is refused with limit_reached naming the flag.
    auto& lim = cfg.limits;
    app.add_option("--max-connections", lim.max_connections, "connected clients at once")
        ->check(CLI::Range(1u, daemon::kMaxConnectionsCeiling))
        ->capture_default_str();
    app.add_option("--max-topics", lim.max_topics, "topics the broker holds")
        ->check(CLI::Range(1u, daemon::kMaxTopicsCeiling))
        ->capture_default_str();
    app.add_option("--max-topics-per-client", lim.max_topics_per_client, "topics one client may create")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--max-publishers-per-client", lim.max_publishers_per_client, "publisher slots one client may hold")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--max-subscribers-per-client", lim.max_subscribers_per_client, "subscriber slots one client may hold")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--max-shm-bytes", lim.max_shm_bytes,
                   "bytes of /dev/shm the broker's segments may take (0: 4 GiB or half of /dev/shm, the smaller)")
        ->capture_default_str();
    app.add_option("--max-lane-bytes", lim.max_lane_capacity, "largest lane capacity a client may ask for")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--max-event-bytes", lim.max_event, "largest max_event a client may ask for")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app.add_option("--max-fds", max_fds,
                   "descriptor limit (RLIMIT_NOFILE soft); 0: raise the soft limit to the hard one")
        ->capture_default_str();
    app.add_option("--test-slot-reply-delay-ms", cfg.test_slot_reply_delay_ms, "tests only: delay slot replies")
        ->group("");  // hidden: a broker too slow for its clients, for the late-reply tests
    CLI11_PARSE(app, argc, argv);
    try {
        std::size_t used = 0;
        cfg.socket_mode = unsigned(std::stoul(socket_mode, &used, 8));
        if (used != socket_mode.size() || cfg.socket_mode > 0777) throw std::invalid_argument(socket_mode);
    } catch (const std::exception&) {
        std::fprintf(stderr, "--socket-mode: '%s' is not an octal mode such as 0660\n", socket_mode.c_str());
        return 2;
    }

    auto logger = spdlog::stderr_color_mt("eventd");
    logger->set_level(spdlog::level::from_str(level));
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
    spdlog::set_default_logger(logger);

    // Block SIGINT/SIGTERM before the socket exists: a stop request that arrives while we start up stays
    // pending until run() reads it from its signalfd, so it still takes the clean path (segments removed
    // with --cleanup, socket unlinked) instead of killing us half-way.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    // Every client costs two descriptors (socket, pidfd) and every topic holds two segments: the soft
    // limit (often 1024) is a default for programs that select(), which we do not.
    auto fds = daemon::set_fd_limit(max_fds);
    if (!fds) {
        logger->critical("cannot start: {}", fds.error().what());
        return 2;
    }
    if (*fds < 2ull * cfg.limits.max_connections + 64)
        logger->warn("{} descriptors allow fewer than --max-connections {} clients (two each): connections beyond "
                     "that wait until a client leaves",
                     *fds, cfg.limits.max_connections);

    // Sealed segments have no name to be found by after a restart: the service manager keeps them.
    const bool manager = daemon::FdStore::available();
    cfg.segments = segments == "named" || (segments == "auto" && !manager) ? shm::Backing::named : shm::Backing::sealed;
    if (cfg.segments == shm::Backing::sealed && manager) cfg.keeper = std::make_shared<daemon::FdStore>();
    if (cfg.segments == shm::Backing::sealed && !manager)
        logger->warn("--segments sealed without a service manager ($NOTIFY_SOCKET): topics do not survive a restart "
                     "of this broker (its clients will find their rings gone)");

    // Type=notify: READY=1 below, then from the broker's loop a STATUS= line when what it serves changed,
    // WATCHDOG=1 at half the unit's WatchdogSec=, and STOPPING=1 as a stop begins.
    if (manager) {
        cfg.service.status = [](const std::string& line) { daemon::notify_service_manager("STATUS=" + line); };
        cfg.service.stopping = [](const std::string& why) {
            daemon::notify_service_manager("STOPPING=1\nSTATUS=stopping: " + why);
        };
    }
    if (const auto timeout = daemon::watchdog_timeout(); timeout.count() > 0) {
        // Half the timeout, as sd_watchdog_enabled(3) advises: one late ping is not yet a missed one.
        if (foreground) {
            cfg.service.heartbeat = [] { daemon::notify_service_manager("WATCHDOG=1"); };
            cfg.service.heartbeat_interval = std::max(timeout / 2, std::chrono::microseconds(1000));
        } else {
            logger->warn("the service manager asks for watchdog pings from this process, and it is about to detach "
                         "(another pid): no pings; run it with --foreground");
        }
    }

    // The endpoint's threads start after the detach below (threads do not survive a fork); the loop hands
    // it the reports every second.
    std::unique_ptr<daemon::MetricsEndpoint> metrics;
    constexpr std::chrono::milliseconds kReportEvery{1000};
    if (!metrics_listen.empty()) {
        cfg.service.report_interval = kReportEvery;
        cfg.service.report = [&metrics](std::string status, std::string topics) {
            if (metrics) metrics->update(std::move(status), std::move(topics));
        };
    }

    daemon::Broker broker(cfg);
    if (auto ok = broker.open(); !ok) {
        logger->critical("cannot start: {}", ok.error().what());
        return 2;
    }
    if (!foreground && !daemonize()) {
        logger->critical("cannot daemonize: {}", std::strerror(errno));
        return 2;
    }
    if (!metrics_listen.empty()) {
        auto m = daemon::MetricsEndpoint::start(metrics_listen, kReportEvery);
        if (!m) {
            logger->critical("cannot start: {}", m.error().what());
            return 2;
        }
        metrics = std::move(*m);
        logger->info("metrics on http://{}/metrics (port {})", metrics_listen, metrics->port());
    }
    // Now the socket listens and the previous broker's segments are adopted: clients may come.
    daemon::notify_service_manager("READY=1\nSTATUS=" + broker.status());
    int rc = broker.run(true);
    logger->info("stopped");
    return rc;
}
