#include "daemon/broker.hpp"

#include "daemon/monitor.hpp"
#include "proto/channel.hpp"
#include "proto/messages.hpp"
#include "shm/doorbell.hpp"
#include "shm/segment.hpp"
#include "shm/topic_map.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>
#include <unordered_map>
#include <vector>

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

namespace rvoip::events::daemon {
namespace {

using proto::Message;

constexpr std::uint32_t kMaxTopics = 4096;
constexpr std::uint32_t kMaxClients = 4096;
constexpr std::uint32_t kNoOwner = 0;

std::string describe(const layout::Fingerprint& f) {
    if (f.kind == layout::Kind::raw) return std::string(f.name()) + " (raw bytes, schema v" + std::to_string(f.schema_version) + ")";
    return std::string(f.name()) + " (" + std::to_string(f.size) + " bytes, align " + std::to_string(f.align) +
           ", schema v" + std::to_string(f.schema_version) + ")";
}

int pidfd_open(pid_t pid) noexcept { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// True once the process behind `pidfd` (or `pid` when no pidfd could be had) has terminated.
bool process_gone(int pidfd, pid_t pid) noexcept {
    if (pidfd >= 0) {
        pollfd p{pidfd, POLLIN, 0};
        return ::poll(&p, 1, 0) == 1;
    }
    return ::kill(pid, 0) != 0 && errno == ESRCH;
}

struct Topic {
    std::uint32_t id = 0;
    std::string name;
    layout::Fingerprint fingerprint;
    std::array<layout::LaneSettings, layout::kLanes> lanes{};
    shm::Segment data;
    shm::Segment cursors;
    shm::TopicMap map;
    std::array<std::uint32_t, layout::kMaxPublishers> publisher_owner{};   // client id, 0 = free
    std::array<std::uint32_t, layout::kMaxSubscribers> subscriber_owner{};
    // The doorbell each subscriber slot was given: the broker's own record, never read back from the
    // cursor segment, which subscribers can write.
    std::array<std::uint32_t, layout::kMaxSubscribers> subscriber_doorbell{};
};

struct Slot {
    std::uint32_t topic = 0;
    std::uint32_t slot = 0;
};

// What a client holds. A session outlives its connection while its process is alive: a process whose
// control socket closed may still be publishing and reading through the segments.
struct Session {
    int fd = -1;
    std::uint32_t id = 0;
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    int pidfd = -1;
    std::string name = "?";
    bool greeted = false;
    bool exited = false;  // its process is gone: its publisher slots are marked dead
    std::int64_t adopted_ns = 0;  // adopted from segments at start (CLOCK_MONOTONIC); 0: a connection's
    bool grace_over = false;      // adopted and not reclaimed within the grace period
    std::vector<Slot> publishers;
    std::vector<Slot> subscribers;
    std::vector<std::uint32_t> doorbells;
};

}  // namespace

struct Broker::Impl {
    BrokerConfig cfg;
    std::shared_ptr<spdlog::logger> log;
    int listen_fd = -1;
    int epoll_fd = -1;
    int stop_fd = -1;
    int signal_fd = -1;
    int timer_fd = -1;
    shm::Segment doorbell_segment;
    shm::DoorbellMap doorbells;
    std::vector<std::uint32_t> free_doorbells;
    std::vector<std::unique_ptr<Topic>> topics;  // index = topic id - 1
    std::map<std::string, std::uint32_t, std::less<>> topic_ids;
    std::unordered_map<int, std::unique_ptr<Session>> sessions;  // by socket fd
    std::vector<std::unique_ptr<Session>> orphans;               // connection closed, process maybe alive
    std::uint32_t next_client_id = 1;
    bool timer_armed = false;
    EvictionMonitor monitor;  // slow subscribers (daemon/monitor.hpp)

    explicit Impl(BrokerConfig c) : cfg(std::move(c)), monitor(std::chrono::milliseconds(cfg.evict_grace_ms)) {
        log = spdlog::get("eventd");
        if (!log) log = spdlog::default_logger();
    }

    ~Impl() {
        for (auto& [fd, s] : sessions) close_session_fds(*s);
        for (auto& s : orphans) close_session_fds(*s);
        for (int fd : {listen_fd, epoll_fd, stop_fd, signal_fd, timer_fd})
            if (fd >= 0) ::close(fd);
        if (listen_fd >= 0) ::unlink(cfg.socket_path.c_str());
        if (cfg.cleanup_on_exit) {
            for (auto& t : topics) {
                shm::Segment::remove(t->data.name());
                shm::Segment::remove(t->cursors.name());
            }
            if (doorbell_segment) shm::Segment::remove(doorbell_segment.name());
        }
    }

    static void close_session_fds(Session& s) {
        if (s.fd >= 0) ::close(s.fd);
        if (s.pidfd >= 0) ::close(s.pidfd);
        s.fd = s.pidfd = -1;
    }

    std::string segment_name(std::string_view what) const { return cfg.shm_prefix + "." + std::string(what); }

    // ---------------------------------------------------------------------------------------------
    // Start-up.
    Status open() {
        if (cfg.socket_path.empty()) return fail(Errc::invalid_argument, "no socket path");
        if (cfg.socket_path.size() >= sizeof(sockaddr_un::sun_path))
            return fail(Errc::invalid_argument, "socket path '" + cfg.socket_path + "' is longer than 107 bytes");
        for (char c : cfg.shm_prefix)
            if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.')
                return fail(Errc::invalid_argument, "shm prefix '" + cfg.shm_prefix + "' may hold only [A-Za-z0-9_.-]");
        if (cfg.shm_prefix.empty() || cfg.shm_prefix.size() > 100) return fail(Errc::invalid_argument, "shm prefix must be 1-100 characters");
        if (cfg.doorbells == 0 || cfg.doorbells > layout::kMaxDoorbells)
            return fail(Errc::invalid_argument, "doorbell count must be 1.." + std::to_string(layout::kMaxDoorbells));
        for (std::size_t l = 0; l < layout::kLanes; ++l)
            if (auto ok = shm::validate_lane(cfg.defaults[l], l); !ok) return std::unexpected(ok.error().context("default lane settings"));

        std::error_code ec;
        auto dir = std::filesystem::path(cfg.socket_path).parent_path();
        if (!dir.empty()) std::filesystem::create_directories(dir, ec);
        if (ec) return fail(Errc::permission_denied, "cannot create socket directory '" + dir.string() + "': " + ec.message());

        listen_fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (listen_fd < 0) return fail(Errc::internal, std::string("socket: ") + std::strerror(errno));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, cfg.socket_path.c_str(), sizeof addr.sun_path - 1);
        if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            if (errno != EADDRINUSE) return bind_error();
            // A socket file is there: a live broker answers, a stale file refuses.
            int probe = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
            bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
            ::close(probe);
            if (live) {
                ::close(listen_fd);
                listen_fd = -1;
                return fail(Errc::limit_reached, "another rvoip-eventd is already listening on '" + cfg.socket_path + "'");
            }
            ::unlink(cfg.socket_path.c_str());
            if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return bind_error();
        }
        // Anyone who can reach the socket may connect; what they may do is decided per request.
        ::chmod(cfg.socket_path.c_str(), 0666);
        if (::listen(listen_fd, 128) != 0) return fail(Errc::internal, std::string("listen: ") + std::strerror(errno));

        // A previous broker's segments are adopted, never replaced while their headers validate: clients
        // started before a restart keep using them, and clients started after must meet them there.
        shm::ClockCalibration clock;
        if (!adopt_doorbells()) {
            auto bells = shm::Segment::create(segment_name("doorbells"), layout::doorbells_size(cfg.doorbells));
            if (!bells) return std::unexpected(bells.error());
            doorbell_segment = std::move(*bells);
            clock = shm::calibrate_clock();
            shm::format_doorbells(doorbell_segment.bytes(), cfg.doorbells, clock);
            doorbells = *shm::attach_doorbells(doorbell_segment.bytes());
        } else {
            clock = doorbells.clock.calibration();
        }
        free_doorbells.clear();
        for (std::uint32_t i = doorbells.count; i-- > 0;) free_doorbells.push_back(i);

        epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
        stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        timer_fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (epoll_fd < 0 || stop_fd < 0 || timer_fd < 0 || monitor.fd() < 0)
            return fail(Errc::internal, std::string("epoll setup: ") + std::strerror(errno));
        watch(listen_fd);
        watch(monitor.fd());
        watch(stop_fd);
        watch(timer_fd);
        adopt_topics();  // after the epoll set and the timer: adopted clients' pidfds go into them
        log->info("listening on {} (shm prefix '{}', {} doorbells, timestamps from {})", cfg.socket_path, cfg.shm_prefix,
                  cfg.doorbells, clock.kind == shm::ClockKind::tsc ? "the TSC" : "CLOCK_MONOTONIC");
        return {};
    }

    // ---------------------------------------------------------------------------------------------
    // Re-adoption of a previous broker's segments (same prefix).
    static std::string shm_path(const std::string& name) { return "/dev/shm/" + name; }

    // Renames a segment that cannot be adopted out of the way, so that nothing replaces it silently and
    // an operator can inspect it.
    void move_aside(const std::string& name, const std::string& why) {
        const std::string to = name + ".rejected-" + std::to_string(::time(nullptr));
        std::error_code ec;
        std::filesystem::rename(shm_path(name), shm_path(to), ec);
        log->error("cannot adopt segment '{}': {}; moved aside to '{}'{}", name, why, to, ec ? " (failed: " + ec.message() + ")" : "");
    }

    bool adopt_doorbells() {
        const std::string name = segment_name("doorbells");
        if (!std::filesystem::exists(shm_path(name))) return false;
        auto seg = shm::Segment::open(name, shm::Access::read_write);
        if (!seg) {
            move_aside(name, seg.error().what());
            return false;
        }
        auto map = shm::attach_doorbells(seg->bytes());
        if (!map) {
            move_aside(name, map.error().what());
            return false;
        }
        doorbell_segment = std::move(*seg);
        doorbells = *map;
        if (doorbells.count != cfg.doorbells)
            log->warn("adopted doorbell segment '{}' has {} doorbells (configured: {}); keeping {}", name, doorbells.count,
                      cfg.doorbells, doorbells.count);
        cfg.doorbells = doorbells.count;
        log->info("adopted doorbell segment '{}' ({} doorbells)", name, doorbells.count);
        return true;
    }

    // The session that holds an adopted slot of process `pid`: one per pid, like a client whose
    // connection is gone. Its slots are released when the process exits (pidfd), as for any client.
    Session& adopted_session(pid_t pid, std::unordered_map<pid_t, Session*>& by_pid) {
        if (auto it = by_pid.find(pid); it != by_pid.end()) return *it->second;
        auto s = std::make_unique<Session>();
        s->id = next_client_id++;
        s->pid = pid;
        s->pidfd = pidfd_open(pid);
        s->name = "adopted";
        s->greeted = true;
        s->adopted_ns = shm::monotonic_ns();
        if (s->pidfd >= 0) watch(s->pidfd);
        by_pid[pid] = s.get();
        orphans.push_back(std::move(s));
        return *orphans.back();
    }

    void adopt_topics() {
        std::vector<std::string> names;
        std::error_code ec;
        const std::string head = cfg.shm_prefix + ".", tail = ".data";
        for (auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) {
            const std::string f = e.path().filename().string();
            if (f.size() > head.size() + tail.size() && f.starts_with(head) && f.ends_with(tail))
                names.push_back(f.substr(head.size(), f.size() - head.size() - tail.size()));
        }
        std::sort(names.begin(), names.end());
        std::unordered_map<pid_t, Session*> by_pid;
        for (const auto& topic : names) adopt_topic(topic, by_pid);
        reap();  // recovers and releases what dead processes held
    }

    void adopt_topic(const std::string& topic, std::unordered_map<pid_t, Session*>& by_pid) {
        const std::string data_name = segment_name(topic + ".data"), cursors_name = segment_name(topic + ".cursors");
        if (!proto::validate_topic_name(topic)) return move_aside(data_name, "'" + topic + "' is not a valid topic name");
        if (topics.size() >= kMaxTopics) return move_aside(data_name, "the broker holds its maximum of 4096 topics");
        auto data = shm::Segment::open(data_name, shm::Access::read_write);
        if (!data) return move_aside(data_name, data.error().what());
        auto cursors = shm::Segment::open(cursors_name, shm::Access::read_write);
        if (!cursors) return move_aside(data_name, "its cursor segment: " + cursors.error().what());
        auto map = shm::attach(data->bytes(), cursors->bytes());
        if (!map) {
            move_aside(cursors_name, map.error().what());
            return move_aside(data_name, map.error().what());
        }
        if (map->header->name != topic) {
            move_aside(cursors_name, "it belongs to topic '" + std::string(map->header->name, ::strnlen(map->header->name, sizeof map->header->name)) + "'");
            return move_aside(data_name, "its header names another topic");
        }
        auto t = std::make_unique<Topic>();
        t->id = std::uint32_t(topics.size() + 1);
        // The ids are the broker's numbering of its topics: renumbered here, in both headers alike.
        map->header->topic_id = t->id;
        map->cursor_header->topic_id = t->id;
        t->name = topic;
        t->fingerprint = map->header->fingerprint;
        t->lanes = map->settings;
        t->data = std::move(*data);
        t->cursors = std::move(*cursors);
        t->map = *map;
        std::uint32_t live_pubs = 0, live_subs = 0, dead = 0;
        for (std::uint32_t i = 0; i < t->map.max_publishers; ++i) {
            auto& e = t->map.publishers[i];
            const auto st = static_cast<layout::SlotState>(e.state.load());
            if (st != layout::SlotState::active && st != layout::SlotState::dead) continue;
            const pid_t pid = pid_t(e.pid);
            Session& s = adopted_session(pid, by_pid);
            t->publisher_owner[i] = s.id;
            s.publishers.push_back({t->id, i});
            if (st == layout::SlotState::dead || process_gone(s.pidfd, pid)) ++dead;
            else ++live_pubs;
        }
        for (std::uint32_t i = 0; i < t->map.max_subscribers; ++i) {
            auto& sl = t->map.slots[i];
            if (sl.state.load() != static_cast<std::uint32_t>(layout::SlotState::active)) continue;
            const pid_t pid = pid_t(sl.pid);
            const std::uint32_t bell = sl.doorbell;
            Session& s = adopted_session(pid, by_pid);
            t->subscriber_owner[i] = s.id;
            t->subscriber_doorbell[i] = bell < doorbells.count ? bell : layout::kNoDoorbell;
            s.subscribers.push_back({t->id, i});
            monitor.joined(t->id, t->map, i, shm::monotonic_ns());  // the grace period counts from adoption
            if (const auto e = sl.evictions.load(); e & 1) {  // odd: the previous broker died inside an eviction
                sl.evictions.store(e + 1);
                log->warn("topic '{}': subscriber slot {} (pid {}) was being evicted when the previous broker stopped; "
                          "its next lagged report may be off by that eviction's count", topic, i, pid);
            }
            if (bell < doorbells.count && std::find(s.doorbells.begin(), s.doorbells.end(), bell) == s.doorbells.end()) {
                s.doorbells.push_back(bell);
                std::erase(free_doorbells, bell);
            }
            if (process_gone(s.pidfd, pid)) ++dead;
            else ++live_subs;
        }
        log->info("adopted topic '{}' (id {}): {}, {} live publisher(s), {} live subscriber(s), {} slot(s) of exited processes",
                  topic, t->id, describe(t->fingerprint), live_pubs, live_subs, dead);
        topic_ids.emplace(topic, t->id);
        topics.push_back(std::move(t));
    }

    Status bind_error() {
        auto e = errno;
        return fail(e == EACCES ? Errc::permission_denied : Errc::internal,
                    "cannot bind '" + cfg.socket_path + "': " + std::strerror(e));
    }

    void watch(int fd) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
    }

    // ---------------------------------------------------------------------------------------------
    // The loop.
    int run(bool handle_signals) {
        if (handle_signals) {
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, SIGINT);
            sigaddset(&set, SIGTERM);
            ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
            signal_fd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
            watch(signal_fd);
        }
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
                if (fd == signal_fd) return shutdown("signal received");
                if (fd == listen_fd) accept_clients();
                else if (fd == timer_fd) tick();
                else if (fd == monitor.fd()) evict_stuck();
                else if (sessions.count(fd)) serve(fd);
                else reap();  // an orphan's pidfd: its process exited
            }
        }
    }

    int shutdown(const char* why) {
        log->info("stopping: {}; telling {} client(s)", why, sessions.size());
        for (auto& [fd, s] : sessions) (void)proto::send_message(fd, Message{0, proto::ShutdownNotice{}});
        return 0;
    }

    void accept_clients() {
        for (;;) {
            int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) return;  // EAGAIN, or a transient failure: epoll tells us again
            if (sessions.size() >= kMaxClients) {
                (void)proto::send_message(fd, Message{0, proto::ErrorReply{Errc::limit_reached, "too many clients"}});
                ::close(fd);
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
            watch(fd);
            log->debug("client {} connected (pid {}, uid {})", s->id, s->pid, s->uid);
            sessions.emplace(fd, std::move(s));
        }
    }

    void serve(int fd) {
        auto it = sessions.find(fd);
        if (it == sessions.end()) return;
        Session& s = *it->second;
        for (;;) {
            auto frame = proto::recv_frame(fd);
            if (!frame) {
                if (frame.error().code == Errc::would_block) return;
                if (frame.error().code == Errc::malformed) {  // oversize: answer and go on
                    reply_error(s, 0, frame.error());
                    continue;
                }
                return disconnect(fd);
            }
            // We never accept descriptors from clients.
            proto::close_fds(frame->fds);
            auto msg = proto::decode(frame->bytes);
            if (!msg) {
                log->warn("client {} (pid {}): {}", s.id, s.pid, msg.error().what());
                reply_error(s, proto::peek_correlation(frame->bytes), msg.error());
                continue;
            }
            handle(s, *msg);
        }
    }

    void reply(Session& s, std::uint64_t corr, proto::Body body, std::vector<int> fds = {}) {
        auto st = proto::send_message(s.fd, Message{corr, std::move(body)}, fds);
        proto::close_fds(fds);
        if (!st) log->debug("client {}: reply not delivered: {}", s.id, st.error().what());
    }
    void reply_error(Session& s, std::uint64_t corr, const Error& e) {
        reply(s, corr, proto::ErrorReply{e.code, e.message.substr(0, proto::kMaxErrorMessage)});
    }

    void handle(Session& s, const Message& m) {
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
                else return fail(Errc::malformed, std::string(proto::to_string(type)) + " is not a request");
            },
            m.body);
        if (!st) {
            log->info("client {} '{}' (pid {}): {} refused: {}", s.id, s.name, s.pid, proto::to_string(type), st.error().what());
            reply_error(s, corr, st.error());
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Requests.
    Status on_hello(Session& s, std::uint64_t corr, const proto::Hello& h) {
        if (s.greeted) return fail(Errc::malformed, "hello sent twice");
        const auto version = std::min(h.version_max, proto::kProtocolVersion);
        if (version < std::max(h.version_min, proto::kMinProtocolVersion))
            return fail(Errc::version_mismatch, "client speaks protocol " + std::to_string(h.version_min) + ".." +
                                                    std::to_string(h.version_max) + ", broker speaks " +
                                                    std::to_string(proto::kMinProtocolVersion) + ".." +
                                                    std::to_string(proto::kProtocolVersion));
        auto fd = doorbell_segment.dup_fd(shm::Access::read_write);
        if (!fd) return std::unexpected(fd.error());
        s.greeted = true;
        s.name = h.name;
        log->info("client {} '{}' hello (pid {}, uid {})", s.id, s.name, s.pid, s.uid);
        reply(s, corr, proto::HelloOk{version, s.id, std::uint32_t(::getpid()), layout::kAbiVersion}, {*fd});
        return {};
    }

    Status on_open_topic(Session& s, std::uint64_t corr, const proto::OpenTopic& o) {
        if (auto ok = proto::validate_topic_name(o.topic); !ok) return ok;
        const auto& fp = o.fingerprint;
        if (fp.kind == layout::Kind::typed && (fp.size == 0 || fp.align == 0))
            return fail(Errc::invalid_argument, "typed fingerprint " + describe(fp) + " has no size or alignment");
        if (auto it = topic_ids.find(o.topic); it != topic_ids.end()) {
            Topic& t = *topics[it->second - 1];
            if (!(t.fingerprint == fp))
                return fail(Errc::schema_mismatch, "topic '" + t.name + "' carries " + describe(t.fingerprint) +
                                                       "; this client offered " + describe(fp));
            reply(s, corr, proto::TopicOk{t.id, false, t.lanes});
            return {};
        }
        if (topics.size() >= kMaxTopics) return fail(Errc::limit_reached, "the broker holds its maximum of 4096 topics");
        auto lanes = cfg.defaults;
        for (std::size_t l = 0; l < layout::kLanes; ++l) {
            const auto& r = o.lanes[l];
            if (r.capacity) lanes[l].capacity = r.capacity;
            if (r.max_event) lanes[l].max_event = r.max_event;
            if (r.block_timeout_ms) {  // the policy was chosen (see OpenTopic): otherwise keep the default's
                lanes[l].overflow = r.overflow;
                lanes[l].block_timeout_ms = r.block_timeout_ms;
            }
            if (r.evict_after_ms) lanes[l].evict_after_ms = r.evict_after_ms == proto::kEvictNever ? 0 : r.evict_after_ms;
            if (fp.kind == layout::Kind::typed && fp.size > lanes[l].max_event)
                return fail(Errc::event_too_large, describe(fp) + " is larger than the " +
                                                       std::string(to_string(Priority(l))) + " lane's max event of " +
                                                       std::to_string(lanes[l].max_event) + " bytes");
            if (auto ok = shm::validate_lane(lanes[l], l); !ok) return std::unexpected(ok.error().context("topic '" + o.topic + "'"));
        }
        auto t = std::make_unique<Topic>();
        t->id = std::uint32_t(topics.size() + 1);
        t->name = o.topic;
        t->fingerprint = fp;
        t->lanes = lanes;
        auto data = shm::Segment::create(segment_name(o.topic + ".data"), shm::topic_data_size(lanes));
        if (!data) return std::unexpected(data.error());
        auto cursors = shm::Segment::create(segment_name(o.topic + ".cursors"), layout::cursors_size(layout::kMaxSubscribers));
        if (!cursors) return std::unexpected(cursors.error());
        t->data = std::move(*data);
        t->cursors = std::move(*cursors);
        shm::format_topic(t->data.bytes(), o.topic, t->id, fp, lanes);
        shm::format_cursors(t->cursors.bytes(), t->id);
        auto map = shm::attach(t->data.bytes(), t->cursors.bytes());
        if (!map) return std::unexpected(map.error().context("freshly created topic"));
        t->map = *map;
        log->info("topic '{}' created by client {} '{}': {}, lanes {}/{}/{}/{} bytes", o.topic, s.id, s.name, describe(fp),
                  lanes[0].capacity, lanes[1].capacity, lanes[2].capacity, lanes[3].capacity);
        reply(s, corr, proto::TopicOk{t->id, true, lanes});
        topic_ids.emplace(o.topic, t->id);
        topics.push_back(std::move(t));
        return {};
    }

    Result<Topic*> find_topic(std::uint32_t id) {
        if (id == 0 || id > topics.size()) return fail(Errc::no_such_topic, "no topic with id " + std::to_string(id));
        return topics[id - 1].get();
    }

    Status on_add_publisher(Session& s, std::uint64_t corr, const proto::AddPublisher& a) {
        auto t = find_topic(a.topic_id);
        if (!t) return std::unexpected(t.error());
        Topic& topic = **t;
        auto it = std::find(topic.publisher_owner.begin(), topic.publisher_owner.end(), kNoOwner);
        if (it == topic.publisher_owner.end())
            return fail(Errc::limit_reached, "topic '" + topic.name + "' already has 64 publishers");
        auto slot = std::uint32_t(it - topic.publisher_owner.begin());
        auto data = topic.data.dup_fd(shm::Access::read_write);
        if (!data) return std::unexpected(data.error());
        auto cursors = topic.cursors.dup_fd(shm::Access::read_only);
        if (!cursors) {
            ::close(*data);
            return std::unexpected(cursors.error());
        }
        *it = s.id;
        shm::claim_publisher(topic.map, slot, std::uint32_t(s.pid));
        test_delay();
        s.publishers.push_back({topic.id, slot});
        log->debug("client {} publishes on '{}' (slot {})", s.id, topic.name, slot);
        reply(s, corr, proto::PublisherOk{topic.id, slot}, {*data, *cursors});
        return {};
    }

    Status on_add_subscriber(Session& s, std::uint64_t corr, const proto::AddSubscriber& a) {
        auto t = find_topic(a.topic_id);
        if (!t) return std::unexpected(t.error());
        Topic& topic = **t;
        auto it = std::find(topic.subscriber_owner.begin(), topic.subscriber_owner.end(), kNoOwner);
        if (it == topic.subscriber_owner.end())
            return fail(Errc::limit_reached, "topic '" + topic.name + "' already has 64 subscribers");
        std::uint32_t bell = a.doorbell;
        bool new_bell = bell == layout::kNoDoorbell;
        if (new_bell) {
            if (free_doorbells.empty()) return fail(Errc::limit_reached, "all " + std::to_string(cfg.doorbells) + " doorbells are in use");
            bell = free_doorbells.back();
        } else if (std::find(s.doorbells.begin(), s.doorbells.end(), bell) == s.doorbells.end()) {
            return fail(Errc::permission_denied, "doorbell " + std::to_string(bell) + " does not belong to this client");
        }
        auto data = topic.data.dup_fd(shm::Access::read_only);
        if (!data) return std::unexpected(data.error());
        auto cursors = topic.cursors.dup_fd(shm::Access::read_write);
        if (!cursors) {
            ::close(*data);
            return std::unexpected(cursors.error());
        }
        if (new_bell) {
            free_doorbells.pop_back();
            s.doorbells.push_back(bell);
        }
        auto slot = std::uint32_t(it - topic.subscriber_owner.begin());
        *it = s.id;
        topic.subscriber_doorbell[slot] = bell;
        auto start = shm::join_subscriber(topic.map, slot, bell, std::uint32_t(s.pid));
        monitor.joined(topic.id, topic.map, slot, shm::monotonic_ns());
        test_delay();
        s.subscribers.push_back({topic.id, slot});
        log->debug("client {} subscribes to '{}' (slot {}, doorbell {})", s.id, topic.name, slot, bell);
        reply(s, corr, proto::SubscriberOk{topic.id, slot, bell, start}, {*data, *cursors});
        return {};
    }

    void test_delay() const {
        if (cfg.test_slot_reply_delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(cfg.test_slot_reply_delay_ms));
    }

    // A reconnecting client takes back a slot it held: same topic ring (record key), slot held for its
    // very pid (peer credentials) by a session whose connection is gone (adopted at start, or dropped).
    Status on_reclaim(Session& s, std::uint64_t corr, const proto::Reclaim& r) {
        const bool pub = r.role == proto::Role::publisher;
        const std::string what = std::string(pub ? "publisher" : "subscriber") + " slot " + std::to_string(r.slot) + " of topic '" + r.topic + "'";
        auto it = topic_ids.find(r.topic);
        if (it == topic_ids.end()) return fail(Errc::no_such_topic, "cannot reclaim " + what + ": this broker holds no such topic (its segments were not adopted)");
        Topic& t = *topics[it->second - 1];
        if (t.map.header->record_key != r.record_key)
            return fail(Errc::no_such_topic, "cannot reclaim " + what + ": the topic was created anew since this client mapped it");
        if (r.slot >= (pub ? t.map.max_publishers : t.map.max_subscribers))
            return fail(Errc::invalid_argument, "cannot reclaim " + what + ": no such slot");
        auto& owners = pub ? t.publisher_owner : t.subscriber_owner;
        if (owners[r.slot] == s.id) {  // already ours: a repeated reclaim
            reply(s, corr, proto::ReclaimOk{t.id});
            return {};
        }
        auto from_it = std::find_if(orphans.begin(), orphans.end(), [&](auto& o) { return o->id == owners[r.slot]; });
        if (from_it == orphans.end() || (*from_it)->exited || (*from_it)->pid != s.pid)
            return fail(Errc::permission_denied, "cannot reclaim " + what + ": it is not held for pid " + std::to_string(s.pid));
        Session& from = **from_it;
        const std::uint32_t bell = pub ? layout::kNoDoorbell : t.subscriber_doorbell[r.slot];
        if (!pub && bell != r.doorbell)
            return fail(Errc::permission_denied, "cannot reclaim " + what + ": it was given doorbell " + std::to_string(bell) +
                                                     ", not " + std::to_string(r.doorbell));
        if (!take_slot(pub ? from.publishers : from.subscribers, t.id, r.slot))
            return fail(Errc::internal, "cannot reclaim " + what + ": the broker's records disagree");
        (pub ? s.publishers : s.subscribers).push_back({t.id, r.slot});
        owners[r.slot] = s.id;
        if (!pub) {  // the doorbell moves with its subscriber
            const bool still_used = std::any_of(from.subscribers.begin(), from.subscribers.end(),
                                                [&](const Slot& x) { return topics[x.topic - 1]->subscriber_doorbell[x.slot] == bell; });
            if (!still_used) std::erase(from.doorbells, bell);
            if (std::find(s.doorbells.begin(), s.doorbells.end(), bell) == s.doorbells.end()) s.doorbells.push_back(bell);
        }
        log->info("client {} '{}' (pid {}) reclaimed {} (topic id {})", s.id, s.name, s.pid, what, t.id);
        if (from.publishers.empty() && from.subscribers.empty()) {
            release_unused_doorbells(from);
            if (from.pidfd >= 0) ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, from.pidfd, nullptr);
            close_session_fds(from);
            orphans.erase(from_it);
            arm_timer(timer_needed());
        }
        reply(s, corr, proto::ReclaimOk{t.id});
        return {};
    }

    template <class Vec>
    static bool take_slot(Vec& v, std::uint32_t topic, std::uint32_t slot) {
        auto it = std::find_if(v.begin(), v.end(), [&](const Slot& x) { return x.topic == topic && x.slot == slot; });
        if (it == v.end()) return false;
        v.erase(it);
        return true;
    }

    Status on_remove_publisher(Session& s, std::uint64_t corr, const proto::RemovePublisher& r) {
        if (!take_slot(s.publishers, r.topic_id, r.slot))
            return fail(Errc::permission_denied, "publisher slot " + std::to_string(r.slot) + " of topic " +
                                                     std::to_string(r.topic_id) + " does not belong to this client");
        release_publisher_slot(*topics[r.topic_id - 1], r.slot);
        reply(s, corr, proto::Ok{});
        return {};
    }

    Status on_remove_subscriber(Session& s, std::uint64_t corr, const proto::RemoveSubscriber& r) {
        if (!take_slot(s.subscribers, r.topic_id, r.slot))
            return fail(Errc::permission_denied, "subscriber slot " + std::to_string(r.slot) + " of topic " +
                                                     std::to_string(r.topic_id) + " does not belong to this client");
        release_subscriber_slot(*topics[r.topic_id - 1], r.slot);
        release_unused_doorbells(s);
        reply(s, corr, proto::Ok{});
        return {};
    }

    Status on_stats(Session& s, std::uint64_t corr) {
        proto::StatsReply r;
        r.clients = std::uint32_t(sessions.size());
        for (auto& t : topics) {
            if (r.topics.size() >= proto::kMaxStatsEntries) break;
            proto::TopicStats ts;
            ts.topic = t->name;
            ts.topic_id = t->id;
            ts.publishers = std::uint32_t(std::count_if(t->publisher_owner.begin(), t->publisher_owner.end(), [](auto o) { return o != kNoOwner; }));
            ts.subscribers = std::uint32_t(std::count_if(t->subscriber_owner.begin(), t->subscriber_owner.end(), [](auto o) { return o != kNoOwner; }));
            for (std::size_t l = 0; l < layout::kLanes; ++l) ts.tails[l] = t->map.lanes[l].position(std::memory_order_relaxed);  // relaxed: a report
            ts.evictions = monitor.evictions(t->id);
            r.topics.push_back(std::move(ts));
        }
        reply(s, corr, std::move(r));
        return {};
    }

    // ---------------------------------------------------------------------------------------------
    // Clean-up.
    void release_publisher_slot(Topic& t, std::uint32_t slot) {
        shm::release_publisher(t.map, slot);
        t.publisher_owner[slot] = kNoOwner;
    }
    void release_subscriber_slot(Topic& t, std::uint32_t slot) {
        shm::leave_subscriber(t.map, slot);
        t.subscriber_owner[slot] = kNoOwner;
        monitor.left(t.id, slot);
    }
    void release_unused_doorbells(Session& s) {
        std::erase_if(s.doorbells, [&](std::uint32_t bell) {
            for (auto& sub : s.subscribers)
                if (topics[sub.topic - 1]->subscriber_doorbell[sub.slot] == bell) return false;
            free_doorbells.push_back(bell);
            return true;
        });
    }

    // Rings the doorbell of every parked subscriber of `t`, by the broker's own record of their doorbells.
    void ring_parked(Topic& t) {
        std::uint64_t parked = t.map.cursor_header->parked.load();
        while (parked != 0) {
            const auto i = static_cast<std::uint32_t>(std::countr_zero(parked));
            parked &= parked - 1;
            if (i < layout::kMaxSubscribers && t.subscriber_owner[i] != kNoOwner && t.subscriber_doorbell[i] < doorbells.count)
                shm::ring(&doorbells.bells[t.subscriber_doorbell[i]].word);
        }
    }

    // A monitor tick: evicts subscribers that held a lane's publishers back for its evict_after, rings
    // their doorbells (by the broker's own record, like ring_parked) so a parked one wakes to see it.
    void evict_stuck() {
        monitor.drain();
        for (auto& t : topics) {
            for (const auto& e : monitor.scan(t->id, t->map, shm::monotonic_ns())) {
                if (t->subscriber_doorbell[e.slot] < doorbells.count) shm::ring(&doorbells.bells[t->subscriber_doorbell[e.slot]].word);
                const Session* owner = session_of(t->subscriber_owner[e.slot]);
                log->warn("topic '{}' {} lane: evicted subscriber slot {} (client {} '{}', pid {}): it held the lane's publishers for "
                          "{} ms without reading; {} event(s) ({} bytes) skipped",
                          t->name, to_string(Priority(e.lane)), e.slot, t->subscriber_owner[e.slot], owner ? owner->name : "?",
                          owner ? owner->pid : 0, e.held_ns / 1'000'000, e.missed, e.bytes);
            }
        }
    }
    const Session* session_of(std::uint32_t client) const {
        for (auto& [fd, s] : sessions)
            if (s->id == client) return s.get();
        for (auto& s : orphans)
            if (s->id == client) return s.get();
        return nullptr;
    }

    void disconnect(int fd) {
        auto it = sessions.find(fd);
        if (it == sessions.end()) return;
        auto s = std::move(it->second);
        sessions.erase(it);
        ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
        s->fd = -1;
        log->log(s->greeted ? spdlog::level::info : spdlog::level::debug,
                 "client {} '{}' (pid {}) disconnected holding {} publisher(s), {} subscriber(s)", s->id, s->name, s->pid,
                 s->publishers.size(), s->subscribers.size());
        if (s->publishers.empty() && s->subscribers.empty()) {
            release_unused_doorbells(*s);
            close_session_fds(*s);
            return;
        }
        // Its process may still be running and using the segments: release its slots once it is gone.
        // Its pidfd turns readable when it exits, so a dead publisher's claim is padded at once rather
        // than at the next timer tick (a Critical claim holds back every Critical event behind it).
        if (s->pidfd >= 0) watch(s->pidfd);
        orphans.push_back(std::move(s));
        reap();
    }

    // Releases what exited processes held; pads their unfinished claims. Every publisher slot of an
    // exited process is marked dead before any is recovered, so that recovery of one slot sees the
    // process's other claims as dead claimants, not live ones. Rearms the timer while any orphan remains
    // (an idle broker with no orphans never wakes up).
    void reap() {
        const std::int64_t now = shm::monotonic_ns();
        for (auto& s : orphans) {
            if (s->adopted_ns && !s->grace_over && !s->exited && now - s->adopted_ns >= std::int64_t(cfg.reclaim_grace_ms) * 1'000'000 &&
                !process_gone(s->pidfd, s->pid))
                end_grace(*s);
            if (s->exited || !process_gone(s->pidfd, s->pid)) continue;
            s->exited = true;
            if (s->pidfd >= 0) ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s->pidfd, nullptr);
            for (const Slot& p : s->publishers)
                topics[p.topic - 1]->map.publishers[p.slot].state.store(static_cast<std::uint32_t>(layout::SlotState::dead));
        }
        std::erase_if(orphans, [&](std::unique_ptr<Session>& s) {
            if (!s->exited) {
                if (!s->grace_over || !s->publishers.empty() || !s->subscribers.empty()) return false;
                if (s->pidfd >= 0) ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s->pidfd, nullptr);
                close_session_fds(*s);
                return true;
            }
            std::erase_if(s->publishers, [&](const Slot& p) {
                Topic& t = *topics[p.topic - 1];
                auto rep = shm::recover_publisher(t.map, p.slot);
                if (!rep.corrupt.empty())
                    log->error("topic '{}': recovery of dead publisher pid {} (slot {}) refused a corrupt value: {}", t.name, s->pid,
                               p.slot, rep.corrupt);
                if (rep.padded_bytes)
                    log->warn("topic '{}': padded {} bytes claimed by dead publisher pid {}", t.name, rep.padded_bytes, s->pid);
                // It may have died between a commit and its wake-up call, or parked subscribers wait at
                // what was just padded: wake them all (found by the model, SPEC_NO_RING). A retry that
                // padded nothing changed nothing a subscriber could read: no ring on every timer tick.
                if (rep.padded_bytes || rep.outcome == shm::Recovery::done) ring_parked(t);
                if (rep.outcome == shm::Recovery::retry) return false;
                release_publisher_slot(t, p.slot);
                return true;
            });
            for (auto& sub : s->subscribers) release_subscriber_slot(*topics[sub.topic - 1], sub.slot);
            s->subscribers.clear();
            release_unused_doorbells(*s);
            if (!s->publishers.empty()) return false;  // a recovery must be retried
            log->info("released the slots of exited client {} '{}' (pid {})", s->id, s->name, s->pid);
            close_session_fds(*s);
            return true;
        });
        arm_timer(timer_needed());
    }

    // A live process that did not reclaim its adopted slots in time: its subscriber slots are released,
    // so that publishers stop waiting on cursors nobody may be moving. Its publisher slots stay held
    // until it exits: it may still publish through them, and a slot given to another publisher while
    // this one claims would share one claim-intent table between two writers.
    void end_grace(Session& s) {
        s.grace_over = true;
        for (auto& sub : s.subscribers) release_subscriber_slot(*topics[sub.topic - 1], sub.slot);
        if (!s.subscribers.empty())
            log->warn("pid {} did not reclaim {} adopted subscriber slot(s) within {} ms: released", s.pid, s.subscribers.size(),
                      cfg.reclaim_grace_ms);
        s.subscribers.clear();
        release_unused_doorbells(s);
        if (!s.publishers.empty())
            log->warn("pid {} did not reclaim {} adopted publisher slot(s) within {} ms: held until it exits", s.pid,
                      s.publishers.size(), cfg.reclaim_grace_ms);
    }

    // The timer ticks while something must be polled: a recovery to retry, a process without a pidfd
    // to watch, an adopted client within its grace period. Processes with a pidfd wake us by themselves.
    bool timer_needed() const {
        return std::any_of(orphans.begin(), orphans.end(),
                           [](auto& s) { return s->exited || s->pidfd < 0 || (s->adopted_ns && !s->grace_over); });
    }

    void tick() {
        std::uint64_t expirations;
        while (::read(timer_fd, &expirations, sizeof expirations) > 0) {
        }
        reap();
    }

    void arm_timer(bool on) {
        if (on == timer_armed) return;
        itimerspec its{};
        if (on) its.it_interval.tv_nsec = its.it_value.tv_nsec = 50'000'000;  // 50 ms: exit notice latency
        ::timerfd_settime(timer_fd, 0, &its, nullptr);
        timer_armed = on;
    }
};

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
