// rvoip-eventd's server: start-up, the epoll loop, client sessions and the dispatch of their requests.
#include "daemon/broker_impl.hpp"

#include "proto/channel.hpp"

#include <cstring>
#include <filesystem>
#include <optional>

#include <grp.h>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>

namespace rvoip::events::daemon {

Broker::Impl::Impl(BrokerConfig c) : cfg(std::move(c)), monitor(std::chrono::milliseconds(cfg.evict_grace_ms)) {
    log = spdlog::get("eventd");
    if (!log) log = spdlog::default_logger();
}

Broker::Impl::~Impl() {
    for (auto& [fd, s] : sessions) close_session_fds(*s);
    for (auto& s : orphans) close_session_fds(*s);
    for (int fd : {listen_fd, epoll_fd, stop_fd, signal_fd, timer_fd, accept_timer_fd, heartbeat_fd, status_fd, report_fd, reload_fd})
        if (fd >= 0) ::close(fd);
    if (!bound_path.empty()) ::unlink(bound_path.c_str());
    for (auto& [name, fd] : kept) ::close(fd);
    if (cfg.cleanup_on_exit) {
        for (auto& t : topics) {
            discard(t->data);
            discard(t->cursors);
            discard(t->bell_segment);
        }
        discard(doorbell_segment);
    }
}

Status validate(const BrokerConfig& cfg) {
    if (cfg.socket_path.empty()) return fail(Errc::invalid_argument, "no socket path");
    if (cfg.socket_path.size() >= sizeof(sockaddr_un::sun_path))
        return fail(Errc::invalid_argument, "socket path '" + cfg.socket_path + "' is longer than 107 bytes");
    for (char c : cfg.shm_prefix)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.')
            return fail(Errc::invalid_argument, "shm prefix '" + cfg.shm_prefix + "' may hold only [A-Za-z0-9_.-]");
    if (cfg.shm_prefix.empty() || cfg.shm_prefix.size() > 100) return fail(Errc::invalid_argument, "shm prefix must be 1-100 characters");
    if (cfg.doorbells == 0 || cfg.doorbells > layout::kMaxDoorbells)
        return fail(Errc::invalid_argument, "doorbell count must be 1.." + std::to_string(layout::kMaxDoorbells));
    if (cfg.socket_mode > 0777) return fail(Errc::invalid_argument, "socket mode above 0777");
    if (cfg.evict_grace_ms > layout::kMaxEvictAfterMs) return fail(Errc::invalid_argument, "evict grace above an hour");
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        if (auto ok = shm::validate_lane(cfg.defaults[l], l); !ok) return std::unexpected(ok.error().context("default lane settings"));
    return validate(cfg.limits);
}

Status Broker::Impl::open() {
    if (auto ok = validate(cfg); !ok) return ok;
    shm_limit = effective_shm_limit(cfg.limits);
    if (auto ok = prepare_socket_dir(); !ok) return ok;

    // The socket appears at its path only once the broker serves: it is bound, secured and listening
    // under a staging name in the same directory, and renamed into place at the end of open(). A client
    // (or a script) that sees the path can connect at once, never into the refusal window between
    // bind() and listen(), nor into a broker still adopting segments.
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, cfg.socket_path.c_str(), sizeof addr.sun_path - 1);
    {
        // A socket file already there: a live broker answers, a stale file refuses and is replaced.
        int probe = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        const bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
        ::close(probe);
        if (live) return fail(Errc::limit_reached, "another rvoip-eventd is already listening on '" + cfg.socket_path + "'");
    }
    listen_fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd < 0) return fail(Errc::internal, std::string("socket: ") + std::strerror(errno));
    bound_path = staging_socket_path();
    sockaddr_un staged{};
    staged.sun_family = AF_UNIX;
    std::strncpy(staged.sun_path, bound_path.c_str(), sizeof staged.sun_path - 1);
    ::unlink(bound_path.c_str());  // a staging file left by a crashed broker that had our pid
    if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&staged), sizeof staged) != 0) {
        bound_path.clear();
        return bind_error();
    }
    if (auto ok = secure_socket(bound_path); !ok) return ok;
    if (::listen(listen_fd, 128) != 0) return fail(Errc::internal, std::string("listen: ") + std::strerror(errno));

    // A previous broker's segments are adopted, never replaced while their headers validate: clients
    // started before a restart keep using them, and clients started after must meet them there.
    if (cfg.segments == shm::Backing::sealed && cfg.keeper)
        for (auto& [name, fd] : cfg.keeper->take())
            if (!kept.emplace(name, fd).second) ::close(fd);
    shm::ClockCalibration clock;
    if (!adopt_doorbells()) {
        auto bells = create_segment("doorbells", layout::doorbells_size(cfg.doorbells));
        if (!bells) return std::unexpected(bells.error());
        doorbell_segment = std::move(*bells);
        keep({&doorbell_segment});
        clock = shm::calibrate_clock();
        shm::format_doorbells(doorbell_segment.bytes(), cfg.doorbells, clock);
        doorbells = *shm::attach_doorbells(doorbell_segment.bytes());
    } else {
        clock = doorbells.clock.calibration();
    }
    shm_bytes = doorbell_segment.bytes().size();

    epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    reload_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    timer_fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    accept_timer_fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (epoll_fd < 0 || stop_fd < 0 || reload_fd < 0 || timer_fd < 0 || accept_timer_fd < 0 || monitor.fd() < 0)
        return fail(Errc::internal, std::string("epoll setup: ") + std::strerror(errno));
    watch(listen_fd);
    watch(monitor.fd());
    watch(stop_fd);
    watch(reload_fd);
    watch(timer_fd);
    watch(accept_timer_fd);
    adopt_topics();  // after the epoll set and the timer: adopted clients' pidfds go into them
    adopted_topics = topics.size();
    if (auto ok = open_service_timers(); !ok) return ok;
    if (cfg.access.enforced()) log->info("access rules from {}: {} rule(s)", cfg.access.origin(), cfg.access.rule_count());
    if (!cfg.topics.empty()) log->info("lane settings fixed for {} topic pattern(s)", cfg.topics.size());
    if (bound_path != cfg.socket_path) {
        if (::rename(bound_path.c_str(), cfg.socket_path.c_str()) != 0)
            return fail(Errc::internal, "cannot move the socket into place at '" + cfg.socket_path + "': " + std::strerror(errno));
        bound_path = cfg.socket_path;
    }
    log->info("listening on {} (shm prefix '{}', {} segments{}, {} doorbells, timestamps from {})", cfg.socket_path,
              cfg.shm_prefix, cfg.segments == shm::Backing::sealed ? "sealed" : "named",
              cfg.segments == shm::Backing::sealed && !cfg.keeper ? " not kept across restarts" : "", cfg.doorbells,
              clock.kind == shm::ClockKind::tsc ? "the TSC" : "CLOCK_MONOTONIC");
    const auto& l = cfg.limits;
    log->info("limits: {} connections, {} topics, per client {} topics / {} publishers / {} subscribers, {} bytes of "
              "/dev/shm ({} in use), lanes up to {} bytes and events up to {} bytes",
              l.max_connections, l.max_topics, l.max_topics_per_client, l.max_publishers_per_client,
              l.max_subscribers_per_client, shm_limit, shm_bytes, l.max_lane_capacity, l.max_event);
    return {};
}

Status Broker::Impl::bind_error() {
    auto e = errno;
    return fail(e == EACCES ? Errc::permission_denied : Errc::internal,
                "cannot bind '" + cfg.socket_path + "': " + std::strerror(e));
}

void Broker::Impl::watch(int fd) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
}

int Broker::Impl::run(bool handle_signals) {
    {
        std::lock_guard lock(reload_mutex);
        loop_thread = std::this_thread::get_id();
    }
    const int rc = serve_until_stopped(handle_signals);
    end_reloads();
    return rc;
}

int Broker::Impl::serve_until_stopped(bool handle_signals) {
    if (handle_signals) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGHUP);
        ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
        signal_fd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
        watch(signal_fd);
    }
    // The caller announced the broker as it is now (Broker::status(), with READY=1): only changes follow.
    reported = census();
    reported_ns = shm::monotonic_ns();
    std::array<epoll_event, 64> events;
    for (;;) {
        int n = ::epoll_wait(epoll_fd, events.data(), int(events.size()), -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            log->error("epoll_wait: {}", std::strerror(errno));
            return 1;
        }
        for (int i = 0; i < n; ++i) {
            int fd = events[i].data.fd;
            if (fd == stop_fd) return shutdown("stop requested");
            if (fd == signal_fd) {
                if (const char* why = take_signals()) return shutdown(why);
                continue;
            }
            if (fd == reload_fd) serve_reloads();
            else if (fd == listen_fd) accept_clients();
            else if (fd == accept_timer_fd) resume_accepting();
            else if (fd == timer_fd) tick();
            else if (fd == monitor.fd()) evict_stuck();
            else if (fd == heartbeat_fd) heartbeat();
            else if (fd == status_fd) report_status();
            else if (fd == report_fd) send_reports();
            else if (sessions.count(fd)) serve(fd);
            else reap();  // an orphan's pidfd: its process exited
        }
        note_changes();
    }
}

const char* Broker::Impl::take_signals() {
    const char* stop = nullptr;
    bool hup = false;
    signalfd_siginfo si{};
    while (::read(signal_fd, &si, sizeof si) == ssize_t(sizeof si)) {
        if (si.ssi_signo == SIGHUP) hup = true;
        else stop = si.ssi_signo == SIGINT ? "SIGINT received" : "SIGTERM received";
    }
    if (stop) return stop;  // a stop outranks a reload that came with it
    if (hup) hangup();
    return nullptr;
}

namespace {
// The peer's supplementary groups (SO_PEERGROUPS), for group rules.
std::vector<gid_t> peer_groups(int fd) {
    std::vector<gid_t> groups(64);
    socklen_t len = socklen_t(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) {
        if (errno != ERANGE) return {};
        groups.resize(len / sizeof(gid_t));
        if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) return {};
    }
    groups.resize(len / sizeof(gid_t));
    return groups;
}
}  // namespace

int Broker::Impl::shutdown(const char* why) {
    if (cfg.service.stopping) cfg.service.stopping(why);
    log->info("stopping: {}; telling {} client(s)", why, sessions.size());
    for (auto& [fd, s] : sessions) (void)proto::send_message(fd, Message{0, proto::ShutdownNotice{}});
    return 0;
}

void Broker::Impl::accept_clients() {
    // A bounded batch per turn: a storm of connections must not hold up the clients already connected
    // (level-triggered, the listening socket is reported again next turn if more wait).
    for (int batch = 0; batch < 64; ++batch) {
        int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) return pause_accepting(errno);
            if ((errno == EAGAIN || errno == EWOULDBLOCK) && out_of_fds) {  // the backlog is drained: the episode is over
                out_of_fds = false;
                log->info("accepting connections again ({} connected)", sessions.size());
            }
            return;  // EAGAIN, or a transient failure: epoll tells us again
        }
        if (sessions.size() >= cfg.limits.max_connections) {
            refuse_connection(fd);
            continue;
        }
        auto s = std::make_unique<Session>();
        s->fd = fd;
        s->id = next_client_id++;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
            s->pid = cred.pid;
            s->uid = cred.uid;
            s->gid = cred.gid;
            s->pidfd = pidfd_open(cred.pid);
        }
        s->peer = Peer{s->uid, s->gid, peer_groups(fd)};
        watch(fd);
        log->debug("client {} connected (pid {}, uid {})", s->id, s->pid, s->uid);
        sessions.emplace(fd, std::move(s));
    }
}

void Broker::Impl::refuse_connection(int fd) {
    const auto e = limit_reached("the broker serves its maximum of clients", cfg.limits.max_connections, "max-connections");
    // The refusal is a single datagram on a fresh socket: it never blocks (non-blocking socket) and a
    // client that does not read it loses nothing but the reason.
    (void)proto::send_message(fd, Message{0, proto::ErrorReply{e.code, e.message}});
    ::close(fd);
    std::uint64_t dropped = 0;
    if (refusal_log.allow(shm::monotonic_ns(), dropped))
        log->warn("connection refused: {}{}", e.message, dropped ? " (" + std::to_string(dropped) + " more refused before)" : "");
}

void Broker::Impl::pause_accepting(int err) {
    if (accepting) {
        ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, listen_fd, nullptr);
        accepting = false;
    }
    // Retry after 100 ms, or sooner when a session closes and gives a descriptor back. Pending clients
    // wait in the listen backlog meanwhile; the ones already connected are served as usual.
    itimerspec its{};
    its.it_value.tv_nsec = 100'000'000;
    ::timerfd_settime(accept_timer_fd, 0, &its, nullptr);
    if (!out_of_fds) {
        out_of_fds = true;
        log->warn("cannot accept connections: {} ({} clients connected); retrying every 100 ms and whenever a client "
                  "leaves (rvoip-eventd raises its soft RLIMIT_NOFILE to the hard limit at start: raise LimitNOFILE)",
                  std::strerror(err), sessions.size());
    }
}

void Broker::Impl::resume_accepting() {
    std::uint64_t expirations;
    while (::read(accept_timer_fd, &expirations, sizeof expirations) > 0) {
    }
    if (accepting || listen_fd < 0) return;
    watch(listen_fd);
    accepting = true;
}

void Broker::Impl::serve(int fd) {
    auto it = sessions.find(fd);
    if (it == sessions.end()) return;
    Session& s = *it->second;
    // One request, not all of them: level-triggered epoll reports this socket again next turn while it
    // holds more, so a client that floods gets a turn like any other and the timers, pidfds and other
    // clients are served between its requests.
    auto frame = proto::recv_frame(fd, MSG_DONTWAIT);
    if (!frame) {
        if (frame.error().code == Errc::would_block) return;
        if (frame.error().code != Errc::malformed) return disconnect(fd);
        reply_error(s, 0, frame.error());  // oversize: answer and go on
    } else {
        // We never accept descriptors from clients.
        proto::close_fds(frame->fds);
        auto msg = proto::decode(frame->bytes);
        if (!msg) {
            note(s, spdlog::level::warn, msg.error().what());
            reply_error(s, proto::peek_correlation(frame->bytes), msg.error());
        } else {
            handle(s, *msg);
        }
    }
    if (s.unreachable) {
        note(s, spdlog::level::warn, "does not read its replies (its socket buffer is full): disconnected");
        disconnect(fd);
    }
}

void Broker::Impl::note(Session& s, spdlog::level::level_enum level, const std::string& what) {
    std::uint64_t dropped = 0;
    if (!log->should_log(level) || !s.log_budget.allow(shm::monotonic_ns(), dropped)) return;
    log->log(level, "client {} '{}' (pid {}): {}{}", s.id, s.name, s.pid, what,
             dropped ? " (" + std::to_string(dropped) + " similar line(s) dropped)" : "");
}

void Broker::Impl::reply(Session& s, std::uint64_t corr, proto::Body body, std::vector<int> fds) {
    // Non-blocking (accepted with SOCK_NONBLOCK): a client whose socket buffer is full does not read its
    // replies. It is disconnected (serve) rather than waited for, and a reply is never dropped silently.
    auto st = proto::send_message(s.fd, Message{corr, std::move(body)}, fds);
    proto::close_fds(fds);
    if (!st) {
        log->debug("client {}: reply not delivered: {}", s.id, st.error().what());
        s.unreachable = true;
    }
}

void Broker::Impl::reply_error(Session& s, std::uint64_t corr, const Error& e) {
    reply(s, corr, proto::ErrorReply{e.code, e.message.substr(0, proto::kMaxErrorMessage)});
}

void Broker::Impl::handle(Session& s, const Message& m) {
    const auto corr = m.correlation;
    auto type = proto::type_of(m.body);
    if (!s.greeted && type != proto::MsgType::hello)
        return reply_error(s, corr, Error(Errc::malformed, std::string(proto::to_string(type)) + " before hello"));
    Status st = std::visit(
        [&](const auto& body) -> Status {
            using B = std::decay_t<decltype(body)>;
            if constexpr (std::is_same_v<B, proto::Hello>) return on_hello(s, corr, body);
            else if constexpr (std::is_same_v<B, proto::OpenTopic>) return on_open_topic(s, corr, body);
            else if constexpr (std::is_same_v<B, proto::AddPublisher>) return on_add_publisher(s, corr, body);
            else if constexpr (std::is_same_v<B, proto::AddSubscriber>) return on_add_subscriber(s, corr, body);
            else if constexpr (std::is_same_v<B, proto::RemovePublisher>) return on_remove_publisher(s, corr, body);
            else if constexpr (std::is_same_v<B, proto::RemoveSubscriber>) return on_remove_subscriber(s, corr, body);
            else if constexpr (std::is_same_v<B, proto::Stats>) return on_stats(s, corr);
            else if constexpr (std::is_same_v<B, proto::Reclaim>) return on_reclaim(s, corr, body);
            else if constexpr (std::is_same_v<B, proto::Inspect>) return on_inspect(s, corr, body);
            else if constexpr (std::is_same_v<B, proto::JoinGroup>) return on_join_group(s, corr, body);
            else if constexpr (std::is_same_v<B, proto::LeaveGroup>) return on_leave_group(s, corr, body);
            else if constexpr (std::is_same_v<B, proto::GroupRelease>) return on_group_release(s, corr, body);
            else return fail(Errc::malformed, std::string(proto::to_string(type)) + " is not a request");
        },
        m.body);
    if (!st) {
        note(s, spdlog::level::info, std::string(proto::to_string(type)) + " refused: " + st.error().what());
        reply_error(s, corr, st.error());
    }
}

namespace {
// The group the socket and its directory belong to: the configured one, else `rvoip-events` if that
// group exists (the sysusers file creates it), else none (the broker's own).
std::optional<gid_t> socket_gid(const std::string& configured, std::string& error) {
    const std::string name = configured.empty() ? "rvoip-events" : configured;
    if (const group* g = ::getgrnam(name.c_str())) return g->gr_gid;
    if (!configured.empty()) error = "no group named '" + configured + "' for the socket";
    return std::nullopt;
}
}  // namespace

// The socket's directory: a private one (user mode) must be ours and 0700, made so if missing; a
// system one is made 0750 with the socket's group, and must not be writable by others (unless sticky,
// like /tmp).
Status Broker::Impl::prepare_socket_dir() {
    const auto dir = std::filesystem::path(cfg.socket_path).parent_path().string();
    if (dir.empty()) return {};
    const bool priv = proto::private_socket_dir(cfg.socket_path);
    struct stat st{};
    if (::lstat(dir.c_str(), &st) != 0) {
        std::error_code ec;
        std::filesystem::create_directories(std::filesystem::path(dir).parent_path(), ec);
        if (::mkdir(dir.c_str(), priv ? 0700 : 0750) != 0 && errno != EEXIST)
            return fail(Errc::permission_denied, "cannot create socket directory '" + dir + "': " + std::strerror(errno));
        if (!priv) {
            std::string error;
            if (auto g = socket_gid(cfg.socket_group, error)) (void)!::chown(dir.c_str(), uid_t(-1), *g);
            ::chmod(dir.c_str(), 0750);
        }
    }
    if (priv) return proto::check_private_dir(dir);
    if (::stat(dir.c_str(), &st) != 0) return fail(Errc::permission_denied, "socket directory '" + dir + "': " + std::strerror(errno));
    if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX))
        return fail(Errc::permission_denied, "socket directory '" + dir + "' is writable by every user: anyone could replace the socket");
    return {};
}

// Where the socket is bound before it is renamed into place: next to it, so the rename is atomic. A
// path too long for a suffix is bound in place (the refusal window before listen() stays for it).
std::string Broker::Impl::staging_socket_path() const {
    auto staged = cfg.socket_path + ".starting-" + std::to_string(::getpid());
    return staged.size() < sizeof(sockaddr_un::sun_path) ? staged : cfg.socket_path;
}

// The socket's mode and group (set on `path`, where it is bound): who may connect at all. What they may
// then do, the access rules say.
Status Broker::Impl::secure_socket(const std::string& path) {
    std::string error;
    const auto g = socket_gid(cfg.socket_group, error);
    if (!error.empty()) return fail(Errc::invalid_argument, error);
    if (g && ::chown(path.c_str(), uid_t(-1), *g) != 0 && !cfg.socket_group.empty())
        return fail(Errc::permission_denied, "cannot give socket '" + cfg.socket_path + "' to group '" + cfg.socket_group + "': " + std::strerror(errno));
    if (::chmod(path.c_str(), cfg.socket_mode & 0777) != 0)
        return fail(Errc::internal, "chmod of socket '" + cfg.socket_path + "': " + std::strerror(errno));
    return {};
}

Status Broker::Impl::on_hello(Session& s, std::uint64_t corr, const proto::Hello& h) {
    if (s.greeted) return fail(Errc::malformed, "hello sent twice");
    const auto version = std::min(h.version_max, proto::kProtocolVersion);
    if (version < std::max(h.version_min, proto::kMinProtocolVersion))
        return fail(Errc::version_mismatch, "client speaks protocol " + std::to_string(h.version_min) + ".." +
                                                std::to_string(h.version_max) + ", broker speaks " +
                                                std::to_string(proto::kMinProtocolVersion) + ".." +
                                                std::to_string(proto::kProtocolVersion));
    if (!cfg.access.known(s.peer))
        return fail(Errc::permission_denied, describe(s.peer) + " is not in this broker's access rules: it may use no topic");
    // Read-only: clients read the clock calibration in it; their doorbells are in each topic's own
    // segment, so no client can write anything here that another could depend on.
    auto fd = doorbell_segment.dup_fd(shm::Access::read_only);
    if (!fd) return std::unexpected(fd.error());
    s.greeted = true;
    s.name = h.name;
    log->info("client {} '{}' hello (pid {}, uid {})", s.id, s.name, s.pid, s.uid);
    reply(s, corr, proto::HelloOk{version, s.id, std::uint32_t(::getpid()), layout::kAbiVersion}, {*fd});
    return {};
}

Broker::Broker(BrokerConfig cfg) : impl_(std::make_unique<Impl>(std::move(cfg))) {}
Broker::~Broker() = default;
Status Broker::open() { return impl_->open(); }
int Broker::run(bool handle_signals) { return impl_->run(handle_signals); }
void Broker::stop() noexcept {
    std::uint64_t one = 1;
    if (impl_->stop_fd >= 0) (void)!::write(impl_->stop_fd, &one, sizeof one);
}
const BrokerConfig& Broker::config() const noexcept { return impl_->cfg; }

}  // namespace rvoip::events::daemon
