#include "client/connection.hpp"

#include "daemon/broker.hpp"
#include "proto/channel.hpp"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>

#include <poll.h>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace rvoip::events::detail {

// A broker on a thread of this process, on a private socket and shm prefix.
class EmbeddedBroker {
public:
    static Result<std::unique_ptr<EmbeddedBroker>> start() {
        static std::atomic<unsigned> counter{0};
        auto e = std::unique_ptr<EmbeddedBroker>(new EmbeddedBroker());
        const auto id = std::to_string(::getpid()) + "-" + std::to_string(counter++);
        e->dir_ = std::filesystem::temp_directory_path() / ("rvoip-events-embedded-" + id);
        daemon::BrokerConfig cfg;
        cfg.socket_path = (e->dir_ / "broker.sock").string();
        cfg.shm_prefix = "rvoip-events-embedded-" + id;
        cfg.cleanup_on_exit = true;
        cfg.doorbells = 256;
        cfg.socket_mode = 0600;  // private to this process's user, in a directory of its own (0700)
        if (::mkdir(e->dir_.c_str(), 0700) != 0)
            return fail(Errc::internal, "cannot create '" + e->dir_.string() + "': " + std::strerror(errno));
        if (!spdlog::get("eventd")) {
            // Quiet by default inside a user's process; RVOIP_EVENTS_EMBEDDED_LOG=1 shows the broker's log.
            auto quiet = std::getenv("RVOIP_EVENTS_EMBEDDED_LOG") == nullptr;
            auto logger = quiet ? std::make_shared<spdlog::logger>("eventd", std::make_shared<spdlog::sinks::null_sink_mt>())
                                : spdlog::default_logger()->clone("eventd");
            spdlog::register_logger(logger);
        }
        e->broker_ = std::make_unique<daemon::Broker>(cfg);
        if (auto ok = e->broker_->open(); !ok) return std::unexpected(ok.error().context("embedded broker"));
        e->thread_ = std::thread([b = e->broker_.get()] { b->run(false); });
        return e;
    }
    ~EmbeddedBroker() {
        broker_->stop();
        if (thread_.joinable()) thread_.join();
        broker_.reset();
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    std::string socket_path() const { return broker_->config().socket_path; }

private:
    EmbeddedBroker() = default;
    std::filesystem::path dir_;
    std::unique_ptr<daemon::Broker> broker_;
    std::thread thread_;
};

namespace {

// The broker hands us descriptors we map and trust: it must run as root, as the service user
// (`rvoip-events`, or $RVOIP_EVENTS_BROKER_USER), or as ourselves. The kernel says who is behind the
// socket (SO_PEERCRED); a process of another user that took the socket's path is refused.
Status trusted_broker(int fd, const std::string& path) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return fail(Errc::internal, std::string("SO_PEERCRED: ") + std::strerror(errno));
    if (cred.uid == 0 || cred.uid == ::geteuid()) return {};
    const char* env = std::getenv("RVOIP_EVENTS_BROKER_USER");
    const std::string service = env && *env ? env : "rvoip-events";
    if (const passwd* pw = ::getpwnam(service.c_str()); pw && pw->pw_uid == cred.uid) return {};
    if (service.find_first_not_of("0123456789") == std::string::npos && std::to_string(cred.uid) == service) return {};
    return fail(Errc::permission_denied, "the process behind '" + path + "' (pid " + std::to_string(cred.pid) + ") runs as uid " +
                                             std::to_string(cred.uid) + ", not as root, the service user '" + service +
                                             "' or this user: not trusting it");
}

// A connected control socket, or an error naming why not (errno of connect).
Result<int> dial(const std::string& path, std::chrono::milliseconds timeout) {
    if (proto::private_socket_dir(path))  // user mode: a directory another user made is not ours to trust
        if (auto ok = proto::check_private_dir(path.substr(0, path.rfind('/'))); !ok && ok.error().code == Errc::permission_denied)
            return std::unexpected(ok.error());
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0)
        return fail(Errc::broker_unavailable, "no rvoip-eventd: socket path '" + path + "' does not exist (is the broker running?)");
    if (!S_ISSOCK(st.st_mode)) return fail(Errc::broker_unavailable, "'" + path + "' is not a socket");
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(Errc::internal, std::string("socket: ") + std::strerror(errno));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        auto e = errno;
        ::close(fd);
        return fail(e == EACCES ? Errc::permission_denied : Errc::broker_unavailable,
                    "cannot connect to rvoip-eventd at '" + path + "': " + std::strerror(e));
    }
    if (auto ok = trusted_broker(fd, path); !ok) {
        ::close(fd);
        return std::unexpected(ok.error());
    }
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

}  // namespace

Connection::Connection() = default;

Result<std::shared_ptr<Connection>> Connection::open(const std::string& path, const std::string& name, std::chrono::milliseconds timeout) {
    return connect(path, name, timeout, nullptr);
}

Result<std::shared_ptr<Connection>> Connection::connect(const std::string& path, const std::string& name, std::chrono::milliseconds timeout,
                                                        std::unique_ptr<EmbeddedBroker> embedded) {
    if (path.size() >= sizeof(sockaddr_un::sun_path))
        return fail(Errc::invalid_argument, "socket path '" + path + "' is longer than 107 bytes");
    auto c = std::shared_ptr<Connection>(new Connection());
    c->path_ = path;
    c->name_ = name;
    c->timeout_ = timeout;
    c->embedded_ = std::move(embedded);
    auto fd = dial(path, timeout);
    if (!fd) return std::unexpected(fd.error());
    Lock lock(c->mu_);
    if (auto ok = c->handshake(lock, *fd); !ok) {
        ::close(*fd);
        return std::unexpected(ok.error());
    }
    c->fd_ = *fd;
    c->connected_ = true;
    c->state_.connected = true;
    c->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->wake_fd_ < 0) return fail(Errc::internal, std::string("eventfd: ") + std::strerror(errno));
    lock.unlock();
    // The watcher holds no reference: the Connection ends when its last user lets go, and stops it.
    c->watcher_ = std::thread([raw = c.get()] { raw->watch(); });
    return c;
}

Connection::~Connection() {
    {
        Lock lock(mu_);
        closing_ = true;
    }
    up_.notify_all();
    if (wake_fd_ >= 0) {
        std::uint64_t one = 1;
        (void)!::write(wake_fd_, &one, sizeof one);
    }
    if (watcher_.joinable()) watcher_.join();
    if (fd_ >= 0) ::close(fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    // embedded_ (if any) stops after our socket is closed: the broker sees us leave first.
}

Status Connection::handshake(Lock& lock, int fd) {
    auto r = round_trip(lock, fd, proto::Hello{proto::kMinProtocolVersion, proto::kProtocolVersion, std::uint32_t(::getpid()), name_});
    if (!r) return std::unexpected(r.error().context("hello"));
    auto* ok = std::get_if<proto::HelloOk>(&r->body);
    if (!ok || r->fds.size() != 1) return fail(Errc::malformed, "broker answered hello with an unexpected reply");
    if (ok->abi_version != layout::kAbiVersion)
        return fail(Errc::version_mismatch, "broker's shared-memory ABI is " + std::to_string(ok->abi_version) +
                                                ", this library's is " + std::to_string(layout::kAbiVersion));
    struct stat st{};
    if (::fstat(r->fds[0], &st) != 0) return fail(Errc::internal, std::string("fstat of the doorbell segment: ") + std::strerror(errno));
    if (doorbell_segment_) {
        // Reconnected: the broker must have adopted the doorbells our subscribers park on.
        if (st.st_dev != doorbell_dev_ || st.st_ino != doorbell_ino_)
            return fail(Errc::corrupt, "the restarted broker replaced the doorbell segment this client's subscribers park on");
        return {};
    }
    auto seg = shm::Segment::map_fd(std::exchange(r->fds[0], -1), shm::Access::read_only, "broker segment (clock calibration)");
    r->fds.clear();
    if (!seg) return std::unexpected(seg.error());
    auto bells = shm::attach_doorbells(seg->bytes());
    if (!bells) return std::unexpected(bells.error());
    doorbell_segment_ = std::move(*seg);
    doorbells_ = *bells;
    doorbell_dev_ = st.st_dev;
    doorbell_ino_ = st.st_ino;
    return {};
}

Error Connection::gone(int fd, const Error& e) {
    Error out(Errc::broker_unavailable, "rvoip-eventd at '" + path_ + "' is gone: " + e.what());
    if (fd == fd_) lost(out.message);
    return out;
}

Result<Connection::Reply> Connection::round_trip(Lock&, int fd, proto::Body request, bool* sent) {
    const std::uint64_t corr = ++next_correlation_;
    const auto type = proto::type_of(request);
    if (sent) *sent = false;
    if (auto st = proto::send_message(fd, proto::Message{corr, std::move(request)}); !st) return std::unexpected(gone(fd, st.error()));
    if (sent) *sent = true;
    for (;;) {
        auto f = proto::recv_frame(fd);
        if (!f) {
            if (f.error().code == Errc::would_block) {
                abandoned_.emplace(corr, type);  // a late reply is dealt with when it comes
                return fail(Errc::broker_unavailable, "rvoip-eventd at '" + path_ + "' did not answer " +
                                                          std::string(proto::to_string(type)) + " within " +
                                                          std::to_string(timeout_.count()) + " ms");
            }
            return std::unexpected(gone(fd, f.error()));
        }
        auto m = proto::decode(f->bytes);
        if (!m) {
            proto::close_fds(f->fds);
            return std::unexpected(m.error().context("reply from the broker"));
        }
        if (m->correlation != corr) {
            unsolicited(fd, m->correlation, m->body, f->fds);
            continue;
        }
        if (auto* e = std::get_if<proto::ErrorReply>(&m->body)) {
            proto::close_fds(f->fds);
            return fail(e->code, e->message);
        }
        return Reply(std::move(m->body), std::move(f->fds));
    }
}

void Connection::attach_group(std::uint32_t member, std::shared_ptr<GroupInbox> inbox) {
    Lock lock(mu_);
    if (auto it = early_.find(member); it != early_.end()) {
        for (auto& [body, fds] : it->second) inbox->post(std::move(body), std::move(fds));
        early_.erase(it);
    }
    groups_[member] = std::move(inbox);
}

void Connection::detach_group(std::uint32_t member) {
    Lock lock(mu_);
    groups_.erase(member);
    left_.insert(member);
    if (auto it = early_.find(member); it != early_.end()) {
        for (auto& m : it->second) proto::close_fds(m.second);
        early_.erase(it);
    }
}

void Connection::unsolicited(int fd, std::uint64_t correlation, proto::Body& body, std::vector<int>& fds) {
    if (correlation == 0 && (std::holds_alternative<proto::GroupAssign>(body) || std::holds_alternative<proto::GroupRevoke>(body))) {
        const std::uint32_t member = std::visit(
            [](const auto& b) -> std::uint32_t {
                if constexpr (requires { b.member; }) return b.member;
                else return 0;
            },
            body);
        if (auto it = groups_.find(member); it != groups_.end()) {
            it->second->post(std::move(body), std::exchange(fds, {}));
        } else if (!left_.contains(member) && early_.size() < 64 && early_[member].size() < proto::kMaxPartitions * 2) {  // its join reply is being read
            early_[member].emplace_back(std::move(body), std::exchange(fds, {}));
        }
        proto::close_fds(fds);
        return;
    }
    proto::close_fds(fds);
    if (std::holds_alternative<proto::ShutdownNotice>(body)) {
        stopping_ = true;
        return;
    }
    auto it = abandoned_.find(correlation);
    if (it == abandoned_.end()) return;  // the reply to a hand-back below, or to a call long gone
    abandoned_.erase(it);
    // The broker granted a slot to a call that had given up: nobody will use it, so hand it back.
    if (auto* p = std::get_if<proto::PublisherOk>(&body))
        (void)proto::send_message(fd, proto::Message{++next_correlation_, proto::RemovePublisher{p->topic_id, p->slot}});
    else if (auto* s = std::get_if<proto::SubscriberOk>(&body))
        (void)proto::send_message(fd, proto::Message{++next_correlation_, proto::RemoveSubscriber{s->topic_id, s->slot}});
}

Result<Connection::Reply> Connection::call(proto::Body request) {
    Lock lock(mu_);
    const auto type = proto::type_of(request);
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    // Asking again is harmless for these: they change nothing, or what they change is the same the
    // second time (open_topic names its topic). A slot request the broker may have granted is not asked
    // again: a second slot would be held for this process beside the first.
    const bool repeatable = type == proto::MsgType::stats || type == proto::MsgType::inspect || type == proto::MsgType::open_topic;
    for (int attempt = 0;; ++attempt) {
        if (!connected_ && (!up_.wait_until(lock, deadline, [&] { return connected_ || closing_; }) || closing_))
            return fail(Errc::broker_unavailable, "rvoip-eventd at '" + path_ + "' is away (reconnecting): " +
                                                      std::string(proto::to_string(type)) + " gave up after " +
                                                      std::to_string(timeout_.count()) + " ms");
        bool sent = false;
        auto r = round_trip(lock, fd_, request, &sent);
        // The connection broke under this call (the broker went away before the watcher noticed): like
        // a call made while it is away, wait for it within the same timeout and ask the broker that
        // comes back, when the request never left or may be asked twice.
        if (r || connected_ || attempt > 0 || (sent && !repeatable)) return r;
    }
}

// The connection dropped: the watcher reconnects. Only the watcher closes the socket, so it never
// polls a descriptor number that was closed and reused under it.
void Connection::lost(const std::string& why) {
    if (!connected_) return;
    connected_ = false;
    state_.connected = false;
    state_.last_error = why;
    drops_.fetch_add(1, std::memory_order_release);  // release: pairs with the acquire load in drops()
    abandoned_.clear();  // a broker that went away answers none of them
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

std::uint64_t Connection::hold(Slot s) {
    Lock lock(mu_);
    slots_.emplace(++next_handle_, std::move(s));
    return next_handle_;
}

void Connection::release(std::uint64_t handle) noexcept {
    try {
        Lock lock(mu_);
        auto it = slots_.find(handle);
        if (it == slots_.end()) return;
        Slot s = std::move(it->second);
        slots_.erase(it);
        if (!connected_) {  // given back once the broker is back
            to_release_.push_back(std::move(s));
            return;
        }
        proto::Body req = s.role == proto::Role::publisher ? proto::Body{proto::RemovePublisher{s.topic_id, s.slot}}
                                                           : proto::Body{proto::RemoveSubscriber{s.topic_id, s.slot}};
        (void)round_trip(lock, fd_, std::move(req));
    } catch (...) {  // out of memory: the broker releases the slot when this process exits
    }
}

ConnectionState Connection::state() const {
    Lock lock(mu_);
    ConnectionState s = state_;
    if (s.connected && fd_ >= 0) {  // the broker may be gone before the watcher has run since (a stopped process)
        pollfd p{fd_, POLLRDHUP, 0};
        if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR))) s.connected = false;
    }
    return s;
}

// Reconnects and reclaims, with mu_ held (calls wait meanwhile: they need the broker anyway).
Status Connection::reconnect(Lock& lock) {
    auto fd = dial(path_, timeout_);
    if (!fd) return std::unexpected(fd.error());
    auto give_up = [&](Error e) {
        ::close(*fd);
        return std::unexpected(std::move(e));
    };
    if (auto ok = handshake(lock, *fd); !ok) return give_up(ok.error());
    for (auto it = slots_.begin(); it != slots_.end();) {
        Slot& s = it->second;
        auto r = round_trip(lock, *fd, proto::Reclaim{s.role, s.topic, s.record_key, s.slot, s.doorbell});
        if (!r && r.error().code == Errc::broker_unavailable) return give_up(r.error());
        auto* ok = r ? std::get_if<proto::ReclaimOk>(&r->body) : nullptr;
        if (ok) {
            s.topic_id = ok->topic_id;
            ++it;
            continue;
        }
        // Refused: the broker does not hold this ring for us (it was moved aside, or recreated). The
        // publisher or subscriber goes on with the ring it mapped, which nobody new will join.
        ++state_.slots_lost;
        state_.last_error = r ? "reclaim refused: an unexpected reply" : r.error().what();
        it = slots_.erase(it);
    }
    for (auto& s : to_release_) {  // released while the broker was away: take back, then give back
        auto r = round_trip(lock, *fd, proto::Reclaim{s.role, s.topic, s.record_key, s.slot, s.doorbell});
        if (!r && r.error().code == Errc::broker_unavailable) return give_up(r.error());
        auto* ok = r ? std::get_if<proto::ReclaimOk>(&r->body) : nullptr;
        if (!ok) continue;
        proto::Body req = s.role == proto::Role::publisher ? proto::Body{proto::RemovePublisher{ok->topic_id, s.slot}}
                                                           : proto::Body{proto::RemoveSubscriber{ok->topic_id, s.slot}};
        if (auto rr = round_trip(lock, *fd, std::move(req)); !rr && rr.error().code == Errc::broker_unavailable)
            return give_up(rr.error());
    }
    to_release_.clear();
    fd_ = *fd;
    connected_ = true;
    stopping_ = false;
    state_.connected = true;
    ++state_.reconnects;
    return {};
}

void Connection::watch() {
    std::chrono::milliseconds backoff{10};
    for (;;) {
        Lock lock(mu_);
        if (closing_) return;
        if (connected_) {
            const int fd = fd_;
            lock.unlock();
            // Wakes on the broker's unsolicited frames, a late reply, the socket closing, or our stop.
            pollfd p[2] = {{fd, POLLIN | POLLRDHUP, 0}, {wake_fd_, POLLIN, 0}};
            if (::poll(p, 2, -1) < 0 && errno != EINTR) continue;
            if (p[1].revents) return;
            lock.lock();  // a call in flight reads its own reply; we take what is left after it
            if (closing_) return;
            for (;;) {
                auto f = proto::recv_frame(fd_, MSG_DONTWAIT);
                if (!f) {
                    if (f.error().code != Errc::would_block) lost("rvoip-eventd at '" + path_ + "' is gone: " + f.error().what());
                    break;
                }
                auto m = proto::decode(f->bytes);
                if (!m) {
                    proto::close_fds(f->fds);
                    continue;
                }
                unsolicited(fd_, m->correlation, m->body, f->fds);
            }
            if (connected_) continue;
            ::close(fd_);
            fd_ = -1;
            backoff = std::chrono::milliseconds(10);
            continue;
        }
        // Away: try again after a growing pause (10 ms doubling to 1 s), waking early only to stop.
        lock.unlock();
        pollfd p{wake_fd_, POLLIN, 0};
        if (::poll(&p, 1, int(backoff.count())) > 0) return;
        backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
        lock.lock();
        if (closing_) return;
        if (auto ok = reconnect(lock); !ok) {
            state_.last_error = ok.error().what();
            continue;
        }
        backoff = std::chrono::milliseconds(10);
        lock.unlock();
        up_.notify_all();
    }
}

Result<std::shared_ptr<Connection>> Connection::open_embedded(const std::string& name, std::chrono::milliseconds timeout) {
    auto e = EmbeddedBroker::start();
    if (!e) return std::unexpected(e.error());
    const std::string path = (*e)->socket_path();
    return connect(path, name, timeout, std::move(*e));
}

}  // namespace rvoip::events::detail
