// rvoip-eventd: the broker daemon. Its settings come from built-in defaults, then its configuration file
// (daemon/config.hpp), then the flags given: a flag overrides the file, at start and at every SIGHUP.
#include "daemon/broker.hpp"
#include "daemon/config.hpp"
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
#include <filesystem>
#include <functional>
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

using rvoip::events::Result;
using rvoip::events::daemon::DaemonConfig;

// The command line. Each option binds into a scratch configuration holding the built-in defaults (what
// --help shows) and remembers how to copy its value onto another configuration if it was given: that is
// how flags outrank the file, at start and at every reload.
class Flags {
public:
    explicit Flags(CLI::App& app) : app_(app) { given_.broker.socket_path = rvoip::events::proto::default_socket_path(); }

    // `field(config)` is the setting's reference in a DaemonConfig.
    template <class Field>
    CLI::Option* option(const std::string& name, Field field, const std::string& help) {
        auto* o = app_.add_option(name, field(given_), help);
        overlays_.push_back([o, field, this](DaemonConfig& c) {
            if (o->count()) field(c) = field(given_);
        });
        return o;
    }
    // An option whose value is not a setting as it stands: `apply` turns it into one when given.
    void on_given(CLI::Option* o, std::function<void(DaemonConfig&)> apply) {
        overlays_.push_back([o, apply = std::move(apply)](DaemonConfig& c) {
            if (o->count()) apply(c);
        });
    }
    void apply(DaemonConfig& c) const {
        for (const auto& overlay : overlays_) overlay(c);
    }

private:
    CLI::App& app_;
    DaemonConfig given_;
    std::vector<std::function<void(DaemonConfig&)>> overlays_;
};

// Where the configuration comes from. Re-read at every SIGHUP, so that an edited file takes effect.
struct Sources {
    std::string config_path = rvoip::events::daemon::kDefaultConfigPath;
    bool config_given = false;  // --config: a missing file is an error; the default path may be absent
    std::string acl_path;       // --acl: replaces the file's [[access]] entries
    bool cleanup = false;
    bool service_manager = false;

    bool reads_file() const { return config_given || std::filesystem::exists(config_path); }

    // Built-in defaults, the file over them, the flags given over that; validated.
    Result<DaemonConfig> configure(const Flags& flags) const {
        using namespace rvoip::events;
        DaemonConfig c;
        c.broker.socket_path = proto::default_socket_path();
        if (reads_file()) {
            auto file = daemon::read_config(config_path, std::move(c));
            if (!file.ok()) return std::unexpected(file.error());
            c = std::move(file.config);
        }
        flags.apply(c);
        if (!acl_path.empty()) {
            auto rules = daemon::AccessRules::load(acl_path);
            if (!rules) return std::unexpected(rules.error());
            c.broker.access = std::move(*rules);
        }
        c.broker.cleanup_on_exit = cleanup;
        // Sealed segments have no name to be found by after a restart: the service manager keeps them.
        c.broker.segments = c.segments == "named" || (c.segments == "auto" && !service_manager) ? shm::Backing::named
                                                                                                 : shm::Backing::sealed;
        if (auto ok = daemon::validate(c.broker); !ok) return std::unexpected(ok.error());
        return c;
    }
};

}  // namespace

int main(int argc, char** argv) {
    using namespace rvoip::events;
    Sources sources;
    bool foreground = false;
    std::string check_path;

    CLI::App app{"rvoip-eventd: shared-memory event broker for the RVOIP stack"};
    app.footer("Settings come from the built-in defaults shown here, then the configuration file, then the flags given:\n"
               "a flag overrides the file, also when SIGHUP reloads it. SIGHUP re-reads the file (and --acl) and applies\n"
               "what can change live: access rules, limits, lane defaults and [[topic]] settings for topics created later.");
    Flags flags(app);
    app.add_option("--config", sources.config_path,
                   "configuration file (TOML; a missing default file means none, a missing --config file is an error)")
        ->capture_default_str();
    app.add_option("--check-config", check_path, "validate FILE, explain every error with its line, and exit (0: valid)");
    flags.option("--socket", [](DaemonConfig& c) -> auto& { return c.broker.socket_path; }, "control socket path (env RVOIP_EVENTS_SOCKET)")
        ->capture_default_str();
    flags.option("--shm-prefix", [](DaemonConfig& c) -> auto& { return c.broker.shm_prefix; }, "prefix of the shared-memory segment names")
        ->capture_default_str();
    flags.option("--log-level", [](DaemonConfig& c) -> auto& { return c.log_level; }, "trace, debug, info, warn, error, off")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
        ->capture_default_str();
    app.add_flag("--foreground", foreground, "stay in the foreground (systemd, containers, make run)");
    flags.option("--doorbells", [](DaemonConfig& c) -> auto& { return c.broker.doorbells; }, "number of futex doorbells (parked consumers)")
        ->check(CLI::Range(1u, layout::kMaxDoorbells))
        ->capture_default_str();
    flags.option("--evict-grace-ms", [](DaemonConfig& c) -> auto& { return c.broker.evict_grace_ms; },
                 "no subscriber is evicted within this many ms of joining")
        ->check(CLI::Range(0u, layout::kMaxEvictAfterMs))
        ->capture_default_str();
    app.add_flag("--cleanup", sources.cleanup, "remove the shared-memory segments on exit (default: keep them)");
    app.add_option("--acl", sources.acl_path,
                   "access rules file: who may publish, subscribe, use Critical, create (docs/security.md); replaces the "
                   "configuration file's [[access]] entries")
        ->check(CLI::ExistingFile);
    flags.option("--metrics-listen", [](DaemonConfig& c) -> auto& { return c.metrics_listen; },
                 "serve Prometheus metrics (/metrics) and /health over HTTP on ADDRESS:PORT, e.g. 127.0.0.1:9464 "
                 "(default: off; `rvoip-eventctl metrics` prints the same)");
    flags.option("--segments", [](DaemonConfig& c) -> auto& { return c.segments; },
                 "sealed (memfds no client can truncate, kept across restarts by systemd's fd store), named "
                 "(/dev/shm files, kept by name), or auto: sealed under a service manager, named otherwise")
        ->check(CLI::IsMember({"auto", "sealed", "named"}))
        ->capture_default_str();
    std::string socket_mode = "0660";
    auto* mode = app.add_option("--socket-mode", socket_mode, "mode of the control socket (octal)")
                     ->check([](const std::string& s) { return daemon::parse_mode(s) ? "" : "'" + s + "' is not an octal mode such as 0660"; })
                     ->capture_default_str();
    flags.on_given(mode, [&](DaemonConfig& c) { c.broker.socket_mode = *daemon::parse_mode(socket_mode); });
    flags.option("--socket-group", [](DaemonConfig& c) -> auto& { return c.broker.socket_group; },
                 "group of the control socket (default: rvoip-events if it exists)");
    flags.option("--reclaim-grace-ms", [](DaemonConfig& c) -> auto& { return c.broker.reclaim_grace_ms; },
                 "after a restart, how long live clients have to reclaim their adopted slots")
        ->capture_default_str();
    // Limits (daemon/limits.hpp): a request that reaches one is refused with limit_reached naming the flag.
    flags.option("--max-connections", [](DaemonConfig& c) -> auto& { return c.broker.limits.max_connections; }, "connected clients at once")
        ->check(CLI::Range(1u, daemon::kMaxConnectionsCeiling))
        ->capture_default_str();
    flags.option("--max-topics", [](DaemonConfig& c) -> auto& { return c.broker.limits.max_topics; }, "topics the broker holds")
        ->check(CLI::Range(1u, daemon::kMaxTopicsCeiling))
        ->capture_default_str();
    flags.option("--max-topics-per-client", [](DaemonConfig& c) -> auto& { return c.broker.limits.max_topics_per_client; },
                 "topics one client may create")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    flags.option("--max-publishers-per-client", [](DaemonConfig& c) -> auto& { return c.broker.limits.max_publishers_per_client; },
                 "publisher slots one client may hold")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    flags.option("--max-subscribers-per-client", [](DaemonConfig& c) -> auto& { return c.broker.limits.max_subscribers_per_client; },
                 "subscriber slots one client may hold")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    flags.option("--max-shm-bytes", [](DaemonConfig& c) -> auto& { return c.broker.limits.max_shm_bytes; },
                 "bytes of /dev/shm the broker's segments may take (0: 4 GiB or half of /dev/shm, the smaller)")
        ->capture_default_str();
    flags.option("--max-lane-bytes", [](DaemonConfig& c) -> auto& { return c.broker.limits.max_lane_capacity; },
                 "largest lane capacity a client may ask for")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    flags.option("--max-event-bytes", [](DaemonConfig& c) -> auto& { return c.broker.limits.max_event; }, "largest max_event a client may ask for")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    flags.option("--max-fds", [](DaemonConfig& c) -> auto& { return c.max_fds; },
                 "descriptor limit (RLIMIT_NOFILE soft); 0: raise the soft limit to the hard one")
        ->capture_default_str();
    flags.option("--test-slot-reply-delay-ms", [](DaemonConfig& c) -> auto& { return c.broker.test_slot_reply_delay_ms; },
                 "tests only: delay slot replies")
        ->group("");  // hidden: a broker too slow for its clients, for the late-reply tests
    CLI11_PARSE(app, argc, argv);

    if (!check_path.empty()) {
        DaemonConfig defaults;
        defaults.broker.socket_path = proto::default_socket_path();
        const auto file = daemon::read_config(check_path, std::move(defaults));
        if (!file.ok()) {
            std::fputs(file.explain().c_str(), stderr);
            std::fprintf(stderr, "%s: %zu error(s)\n", check_path.c_str(), file.errors.size());
            return 1;
        }
        std::printf("%s: valid\n", check_path.c_str());
        return 0;
    }
    sources.config_given = app.count("--config") > 0;
    // Re-read at every SIGHUP, after daemonize() moved us to /: the paths must not depend on where we started.
    std::error_code ec;
    sources.config_path = std::filesystem::absolute(sources.config_path, ec).string();
    if (!sources.acl_path.empty()) sources.acl_path = std::filesystem::absolute(sources.acl_path, ec).string();
    sources.service_manager = daemon::FdStore::available();
    auto configured = sources.configure(flags);
    if (!configured) {
        std::fprintf(stderr, "rvoip-eventd: cannot start: %s\n", configured.error().what().c_str());
        return 2;
    }
    DaemonConfig& config = *configured;
    daemon::BrokerConfig& cfg = config.broker;

    auto logger = spdlog::stderr_color_mt("eventd");
    logger->set_level(spdlog::level::from_str(config.log_level));
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
    spdlog::set_default_logger(logger);
    if (sources.reads_file()) logger->info("configuration from {}", sources.config_path);
    else logger->info("no configuration file ({} does not exist): built-in defaults and flags", sources.config_path);

    // Block SIGINT/SIGTERM/SIGHUP before the socket exists: a stop request that arrives while we start up
    // stays pending until run() reads it from its signalfd, so it still takes the clean path (segments
    // removed with --cleanup, socket unlinked) instead of killing us half-way; an early SIGHUP reloads.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGHUP);
    ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    // Every client costs two descriptors (socket, pidfd) and every topic holds two segments: the soft
    // limit (often 1024) is a default for programs that select(), which we do not.
    auto fds = daemon::set_fd_limit(config.max_fds);
    if (!fds) {
        logger->critical("cannot start: {}", fds.error().what());
        return 2;
    }
    if (*fds < 2ull * cfg.limits.max_connections + 64)
        logger->warn("{} descriptors allow fewer than --max-connections {} clients (two each): connections beyond "
                     "that wait until a client leaves",
                     *fds, cfg.limits.max_connections);

    if (cfg.segments == shm::Backing::sealed && sources.service_manager) cfg.keeper = std::make_shared<daemon::FdStore>();
    if (cfg.segments == shm::Backing::sealed && !sources.service_manager)
        logger->warn("--segments sealed without a service manager ($NOTIFY_SOCKET): topics do not survive a restart "
                     "of this broker (its clients will find their rings gone)");

    // Type=notify: READY=1 below, then from the broker's loop a STATUS= line when what it serves changed,
    // WATCHDOG=1 at half the unit's WatchdogSec=, and STOPPING=1 as a stop begins.
    if (sources.service_manager) {
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
    if (!config.metrics_listen.empty()) {
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
    // SIGHUP: the file and --acl again, the flags over them. The log level and the descriptor limit are
    // the daemon's own: the level changes here, the limit needs a restart.
    broker.on_hangup([&]() -> Result<daemon::BrokerConfig> {
        auto next = sources.configure(flags);
        if (!next) return std::unexpected(next.error());
        if (next->log_level != config.log_level) {
            logger->info("reload: broker.log_level: {} -> {}", config.log_level, next->log_level);
            logger->set_level(spdlog::level::from_str(next->log_level));
            config.log_level = next->log_level;
        }
        if (next->metrics_listen != config.metrics_listen)
            logger->warn("reload: broker.metrics_listen: '{}' -> '{}' needs a restart; '{}' stays", config.metrics_listen,
                         next->metrics_listen, config.metrics_listen);
        if (next->max_fds != config.max_fds)
            logger->warn("reload: limits.max_fds: {} -> {} needs a restart; {} stays", config.max_fds, next->max_fds, config.max_fds);
        return std::move(next->broker);
    });
    if (!foreground && !daemonize()) {
        logger->critical("cannot daemonize: {}", std::strerror(errno));
        return 2;
    }
    if (!config.metrics_listen.empty()) {
        auto m = daemon::MetricsEndpoint::start(config.metrics_listen, kReportEvery);
        if (!m) {
            logger->critical("cannot start: {}", m.error().what());
            return 2;
        }
        metrics = std::move(*m);
        logger->info("metrics on http://{}/metrics (port {})", config.metrics_listen, metrics->port());
    }
    // Now the socket listens and the previous broker's segments are adopted: clients may come.
    daemon::notify_service_manager("READY=1\nSTATUS=" + broker.status());
    int rc = broker.run(true);
    logger->info("stopped");
    return rc;
}
