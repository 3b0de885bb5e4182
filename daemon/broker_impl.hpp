// Internal to rvoip-eventd: the broker's state and the rooms it is served from.
//
//   broker.cpp    start-up, the epoll loop, sessions and their requests' dispatch (the server)
//   registry.cpp  topics and slots: open, add, remove, reclaim, stats
//   adopt.cpp     re-adoption of a previous broker's segments at start
//   inspect.cpp   the JSON reports of rvoip-eventctl
//   liveness.cpp  clients that leave or exit: recovery of their claims, release of their slots, the
//                 reclaim grace period, eviction ticks (the eviction rule itself: monitor.hpp)
//   service.cpp   what the service manager is told from the loop: heartbeats and status lines
//   reload.cpp    a new configuration while serving (reload(), SIGHUP): applied on the loop thread, logged
//   groups.cpp    consumer groups: members, the partitions' cursor slots, rebalancing and hand-over
#pragma once

#include "daemon/access.hpp"
#include "daemon/broker.hpp"
#include "daemon/monitor.hpp"
#include "proto/messages.hpp"
#include "shm/doorbell.hpp"
#include "shm/segment.hpp"
#include "shm/topic_map.hpp"

#include <nlohmann/json_fwd.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace rvoip::events::daemon {

using proto::Message;

constexpr std::uint32_t kNoOwner = 0;

// A fingerprint for the log and for error messages. Its type name may come from shared memory (an
// adopted topic), so it is escaped like anything else a client could have written.
inline std::string describe(const layout::Fingerprint& f) {
    const std::string name = proto::printable_excerpt(f.name());
    if (f.kind == layout::Kind::raw) return name + " (raw bytes, schema v" + std::to_string(f.schema_version) + ")";
    return name + " (" + std::to_string(f.size) + " bytes, align " + std::to_string(f.align) + ", schema v" +
           std::to_string(f.schema_version) + ")";
}

// A pid that can name a process: pids read from shared memory are anyone's writing, and 0 or a negative
// pid given to kill() means a process group, or every process. 4194304 is the kernel's PID_MAX_LIMIT.
inline bool valid_pid(pid_t pid) noexcept { return pid > 0 && pid <= 4'194'304; }

inline int pidfd_open(pid_t pid) noexcept {
    if (!valid_pid(pid)) {
        errno = EINVAL;
        return -1;
    }
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

// True once the process behind `pidfd` (or `pid` when no pidfd could be had) has terminated. A pid
// that names no process (0, negative, beyond pid_max) counts as gone.
inline bool process_gone(int pidfd, pid_t pid) noexcept {
    if (pidfd >= 0) {
        pollfd p{pidfd, POLLIN, 0};
        return ::poll(&p, 1, 0) == 1;
    }
    if (!valid_pid(pid)) return true;
    return ::kill(pid, 0) != 0 && errno == ESRCH;
}

struct Topic {
    std::uint32_t id = 0;
    std::string name;
    layout::Fingerprint fingerprint;
    std::array<layout::LaneSettings, layout::kLanes> lanes{};
    shm::Segment data;
    shm::Segment cursors;
    shm::Segment bell_segment;  // the topic's doorbells: bell i is subscriber slot i's
    shm::TopicMap map;
    shm::DoorbellMap bells;
    std::array<std::uint32_t, layout::kMaxPublishers> publisher_owner{};   // client id, 0 = free
    std::array<std::uint32_t, layout::kMaxSubscribers> subscriber_owner{};
    // Lanes each held publisher slot was granted, and per lane 1 + the slot that holds it alone (0:
    // none; mirrored in the lane's LaneControl::exclusive for consumers and a restarted broker).
    std::array<std::uint8_t, layout::kMaxPublishers> publisher_lanes{};
    std::array<std::uint32_t, layout::kLanes> exclusive{};
    // The doorbell each subscriber slot was given: the broker's own record, never read back from the
    // cursor segment, which subscribers can write.
    std::array<std::uint32_t, layout::kMaxSubscribers> subscriber_doorbell{};
    // A client truncated one of its segments: the broker touches its memory no more (that would raise
    // SIGBUS) and serves nothing more on it; its parties may fault, nobody else.
    bool damaged = false;
    // Events published per lane by publisher slots since released: with the live slots' counters, what
    // the topic has carried since this broker started.
    std::array<std::uint64_t, layout::kLanes> published_retired{};

    std::uint32_t publishers_held() const { return held(publisher_owner); }
    std::uint32_t subscribers_held() const { return held(subscriber_owner); }
    template <class Owners>
    static std::uint32_t held(const Owners& owners) {
        return std::uint32_t(std::count_if(owners.begin(), owners.end(), [](auto o) { return o != 0; }));  // 0: kNoOwner
    }
};

struct Slot {
    std::uint32_t topic = 0;
    std::uint32_t slot = 0;
};

// A consumer group on a partitioned topic (proto/messages.hpp, "Consumer groups"). Each partition has one
// cursor slot on its partition topic, held (in Session::subscribers) by the session of the member that
// owns the partition, or by nobody between owners.
constexpr std::uint32_t kNoSlot = 0xffffffffu;
constexpr std::uint32_t kGroupHeld = 0xffffffffu;  // a subscriber slot's owner between two members: taken, by nobody's session
struct GroupMember {
    std::uint32_t id = 0;
    std::uint32_t client = 0;  // its session's id
    bool gone = false;         // its connection closed: given nothing more; what it owns passes on when its process exits
};
struct GroupPartition {
    std::uint32_t topic_id = 0;
    std::uint32_t slot = kNoSlot;
    std::uint32_t owner = 0;      // member id; 0: nobody (the slot, if any, is held by no session)
    bool revoking = false;        // a group_revoke is out to the owner
    std::array<std::uint64_t, layout::kLanes> redeliver_until{};  // its previous owner died: sent with the next assignment
};
struct Group {
    std::string topic;
    std::string name;
    std::vector<GroupMember> members;  // in join order: the assignment deals partitions round robin over them
    std::vector<GroupPartition> parts;
};

// What a client holds. A session outlives its connection while its process is alive: a process whose
// control socket closed may still be publishing and reading through the segments.
struct Session {
    int fd = -1;
    std::uint32_t id = 0;
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    Peer peer;  // uid, gid and supplementary groups from the socket: what access rules go by
    int pidfd = -1;
    std::string name = "?";
    bool greeted = false;
    bool exited = false;  // its process is gone: its publisher slots are marked dead
    std::int64_t adopted_ns = 0;  // adopted from segments at start (CLOCK_MONOTONIC); 0: a connection's
    bool grace_over = false;      // adopted and not reclaimed within the grace period
    std::vector<Slot> publishers;
    std::vector<Slot> subscribers;
    std::uint32_t topics_created = 0;  // counted against Limits::max_topics_per_client
    bool unreachable = false;          // a reply could not be sent (it does not read them): disconnect it
    LogBudget log_budget;              // its refusals and malformed frames, in the log
    std::string report;                // an inspection report being sent in chunks (inspect.cpp)
};

struct Broker::Impl {
    BrokerConfig cfg;
    std::shared_ptr<spdlog::logger> log;
    int listen_fd = -1;
    std::string bound_path;    // where listen_fd is bound: unlinked at exit
    int epoll_fd = -1;
    int stop_fd = -1;
    int signal_fd = -1;
    int timer_fd = -1;
    int accept_timer_fd = -1;  // one-shot: retry accept() after running out of descriptors
    bool accepting = true;     // listen_fd is in the epoll set
    bool out_of_fds = false;   // an EMFILE episode is on (logged once, at its start)
    LogBudget refusal_log;     // connections refused at max_connections
    std::uint64_t shm_bytes = 0;  // bytes of /dev/shm in the broker's segments, against shm_limit
    std::uint64_t shm_limit = 0;
    shm::Segment doorbell_segment;
    shm::DoorbellMap doorbells;
    std::vector<std::unique_ptr<Topic>> topics;  // index = topic id - 1
    std::map<std::string, std::uint32_t, std::less<>> topic_ids;
    std::unordered_map<int, std::unique_ptr<Session>> sessions;  // by socket fd
    std::vector<std::unique_ptr<Session>> orphans;               // connection closed, process maybe alive
    std::uint32_t next_client_id = 1;
    bool timer_armed = false;
    // The service manager's side (ServiceHooks): both timers exist only when their hook is set.
    int heartbeat_fd = -1;  // periodic, every heartbeat_interval
    int status_fd = -1;     // one-shot: the next status line, a second after the previous one at the earliest
    int report_fd = -1;     // periodic, every report_interval
    std::size_t adopted_topics = 0;
    // What a status line says, in numbers: compared on every loop turn (cheap), formatted only when sent.
    struct Census {
        std::size_t topics = 0, adopted = 0, clients = 0, away = 0;
        bool out_of_fds = false;
        bool operator==(const Census&) const = default;
    };
    Census reported;              // what the last status line said
    std::int64_t reported_ns = 0;  // when it was sent (CLOCK_MONOTONIC)
    bool status_pending = false;   // status_fd is armed
    EvictionMonitor monitor;  // slow subscribers (daemon/monitor.hpp)
    std::int64_t started_ns = shm::monotonic_ns();
    // Reloads (reload.cpp). A reload() from another thread queues its request, wakes the loop through
    // reload_fd and waits until the loop thread has applied it: everything else the loop owns stays
    // single-threaded. The mutex guards `reloads` and `loop_thread` only.
    struct ReloadRequest {
        BrokerConfig next;
        std::optional<Status> done;
    };
    int reload_fd = -1;
    std::mutex reload_mutex;
    std::condition_variable reload_done;
    std::vector<ReloadRequest*> reloads;
    std::thread::id loop_thread;  // run()'s, while it serves; default: nobody serves
    std::function<Result<BrokerConfig>()> reread;  // on SIGHUP (Broker::on_hangup)
    std::map<std::string, int, std::less<>> kept;  // sealed segments the keeper handed back, not yet adopted
    std::map<std::string, std::uint32_t, std::less<>> partitioned;  // partitioned topics and their partition counts
    std::vector<std::unique_ptr<Group>> groups;
    std::uint32_t next_member_id = 1;
    std::string segment_name(std::string_view what) const { return cfg.shm_prefix + "." + std::string(what); }
    static std::string shm_path(const std::string& name) { return "/dev/shm/" + name; }
    static void close_session_fds(Session& s) {
        if (s.fd >= 0) ::close(s.fd);
        if (s.pidfd >= 0) ::close(s.pidfd);
        s.fd = s.pidfd = -1;
    }
    template <class Vec>
    static bool take_slot(Vec& v, std::uint32_t topic, std::uint32_t slot) {
        auto it = std::find_if(v.begin(), v.end(), [&](const Slot& x) { return x.topic == topic && x.slot == slot; });
        if (it == v.end()) return false;
        v.erase(it);
        return true;
    }

    // broker.cpp: start-up, the loop, sessions.
    explicit Impl(BrokerConfig c);
    ~Impl();
    Status open();
    Status bind_error();
    void watch(int fd);
    int run(bool handle_signals);  // serve() between marking this thread the loop's and failing leftover reloads
    int serve_until_stopped(bool handle_signals);
    // Drains the signalfd: returns why to stop (SIGINT, SIGTERM), or null after reloading for a SIGHUP.
    const char* take_signals();
    int shutdown(const char* why);
    void accept_clients();
    // Out of descriptors: the listening socket leaves the epoll set (level-triggered, it would report
    // the pending connection again at once, for ever) until a session closes or a short timer fires.
    void pause_accepting(int err);
    void resume_accepting();
    void refuse_connection(int fd);
    // At most one request per call: the loop calls it once per ready client per turn.
    void serve(int fd);
    // A log line about what a client did wrong, within its LogBudget.
    void note(Session& s, spdlog::level::level_enum level, const std::string& what);
    void reply(Session& s, std::uint64_t corr, proto::Body body, std::vector<int> fds = {});
    void reply_error(Session& s, std::uint64_t corr, const Error& e);
    void handle(Session& s, const Message& m);
    Status on_hello(Session& s, std::uint64_t corr, const proto::Hello& h);
    Status prepare_socket_dir();
    Status secure_socket(const std::string& path);
    std::string staging_socket_path() const;

    // adopt.cpp: the segments' lifecycle (sealed or named) and the re-adoption of a previous broker's
    // segments (same prefix).
    Result<shm::Segment> create_segment(std::string_view what, std::size_t size) const;
    // Hands sealed segments to the keeper, so that a restarted broker gets them back. Named ones keep by name.
    void keep(std::initializer_list<const shm::Segment*> segments) const;
    // On a stop with --cleanup: named segments are removed, sealed ones dropped from the keeper.
    void discard(const shm::Segment& segment) const;
    bool left_behind(const std::string& name) const;
    Result<shm::Segment> open_left(const std::string& name);
    // A segment that cannot be adopted: a named one is renamed out of the way, so that nothing replaces it
    // silently and an operator can inspect it; a sealed one is dropped from the keeper. Logged either way.
    void move_aside(const std::string& name, const std::string& why);
    bool adopt_doorbells();
    // The session that holds an adopted slot of process `pid`: one per pid, like a client whose
    // connection is gone. Its slots are released when the process exits (pidfd), as for any client.
    Session& adopted_session(pid_t pid, std::unordered_map<pid_t, Session*>& by_pid);
    void adopt_topics();
    void adopt_topic(const std::string& topic, std::unordered_map<pid_t, Session*>& by_pid);

    // limits.cpp: what a request may still take (Limits); limit_reached naming the limit otherwise.
    // Before a topic is created: the topic count, the client's own count and the lanes it asks for.
    Status admit_topic(const Session& s, const proto::OpenTopic& o) const;
    // Before its segments are created: the /dev/shm bytes they take. Counted by account_shm.
    Status admit_shm(const std::string& topic, std::uint64_t bytes) const;
    void account_shm(std::uint64_t bytes) { shm_bytes += bytes; }
    Status admit_publisher(const Session& s) const;
    Status admit_subscriber(const Session& s) const;

    // registry.cpp: topics and slots.
    Status on_open_topic(Session& s, std::uint64_t corr, const proto::OpenTopic& o);
    Result<Topic*> find_topic(std::uint32_t id);
    Result<Topic*> topic_to_join(const Session& s, std::uint32_t id, Right right, std::string_view operation);
    static Result<std::array<int, 3>> topic_fds(const Topic& t, proto::Role role);
    Status on_add_publisher(Session& s, std::uint64_t corr, const proto::AddPublisher& a);
    Result<std::uint8_t> exclusive_conflict(const Topic& t, std::uint8_t wanted, std::uint8_t granted) const;
    Status on_add_subscriber(Session& s, std::uint64_t corr, const proto::AddSubscriber& a);
    void test_delay() const;
    // A reconnecting client takes back a slot it held: same topic ring (record key), slot held for its
    // very pid (peer credentials) by a session whose connection is gone (adopted at start, or dropped).
    Status on_reclaim(Session& s, std::uint64_t corr, const proto::Reclaim& r);
    Status on_remove_publisher(Session& s, std::uint64_t corr, const proto::RemovePublisher& r);
    Status on_remove_subscriber(Session& s, std::uint64_t corr, const proto::RemoveSubscriber& r);
    Status on_stats(Session& s, std::uint64_t corr);
    // permission_denied naming the topic and the operation, unless `s` holds `right` on `topic`.
    Status allowed(const Session& s, std::string_view topic, Right right, std::string_view operation) const;
    void release_publisher_slot(Topic& t, std::uint32_t slot);
    void release_subscriber_slot(Topic& t, std::uint32_t slot);
    // False (and the topic marked damaged, logged once) when a segment of `t` was truncated: call before
    // touching the topic's shared memory.
    bool intact(Topic& t);

    // inspect.cpp: reports for rvoip-eventctl, of what the asking client may see (the topics it may
    // publish or subscribe; with access rules, only its own user's clients unless it is root or ours).
    Status on_inspect(Session& s, std::uint64_t corr, const proto::Inspect& q);
    // `s` null: everything, for the broker's own exporter.
    Result<std::string> render(const Session* s, const proto::Inspect& q);
    void send_reports();
    bool sees_all_clients(const Session& s) const;
    std::array<std::uint64_t, layout::kLanes> published(Topic& t);
    void lane_report(Topic& t, nlohmann::json& lanes, bool settings);
    nlohmann::json topic_summary(Topic& t, bool settings = false);  // settings: each lane's too
    nlohmann::json topic_detail(Topic& t);

    // liveness.cpp: clients that leave or exit, the reclaim grace period, eviction ticks.
    // Rings the doorbell of every parked subscriber of `t`, by the broker's own record of their doorbells.
    void ring_parked(Topic& t);
    // A monitor tick: evicts subscribers that held a lane's publishers back for its evict_after, rings
    // their doorbells (by the broker's own record, like ring_parked) so a parked one wakes to see it.
    void evict_stuck();
    const Session* session_of(std::uint32_t client) const;
    void disconnect(int fd);
    // Releases what exited processes held; pads their unfinished claims. Every publisher slot of an
    // exited process is marked dead before any is recovered, so that recovery of one slot sees the
    // process's other claims as dead claimants, not live ones.
    void reap();
    // A live process that did not reclaim its adopted slots in time: its subscriber slots are released,
    // so that publishers stop waiting on cursors nobody may be moving. Its publisher slots stay held
    // until it exits: it may still publish through them, and a slot given to another publisher while
    // this one claims would share one claim-intent table between two writers.
    void end_grace(Session& s);
    // The timer ticks while something must be polled: a recovery to retry, a process without a pidfd
    // to watch, an adopted client within its grace period. Processes with a pidfd wake us by themselves
    // (an idle broker never wakes up).
    bool timer_needed() const;
    void tick();
    void arm_timer(bool on);

    // groups.cpp: consumer groups.
    Status on_join_group(Session& s, std::uint64_t corr, const proto::JoinGroup& j);
    Status on_leave_group(Session& s, std::uint64_t corr, const proto::LeaveGroup& l);
    Status on_group_release(Session& s, std::uint64_t corr, const proto::GroupRelease& r);
    // Deals the partitions over the live members: unowned ones are assigned, ones owned by the wrong
    // member are revoked (they move once released).
    void rebalance(Group& g);
    // Hands partition `p` to `member` (a live one): its slot passes to the member's session, created at
    // the tail if the partition has none. False if the member's session is gone.
    bool assign(Group& g, std::uint32_t p, const GroupMember& member);
    // Takes every partition `member` owns away from its session (dead: flagged for redelivery), then
    // removes it from the group; a group left without members gives its slots up.
    void drop_member(Group& g, std::uint32_t member, bool died);
    // A session's connection closed (its members get nothing more), or its process exited (what they
    // own passes on, to be redelivered).
    void group_session_closed(const Session& s);
    void group_session_exited(Session& s);
    bool is_group_slot(std::uint32_t topic, std::uint32_t slot) const;
    Session* live_session(std::uint32_t client);
    std::pair<Group*, GroupMember*> find_member(std::uint32_t member);

    // service.cpp: heartbeats and status lines (ServiceHooks).
    Status open_service_timers();
    void heartbeat();
    Census census() const;
    static std::string status_line(const Census& c);
    // Called once per loop turn: arms status_fd when the census changed since the last line.
    void note_changes();
    void report_status();
    // reload.cpp: a new configuration while serving.
    Status post_reload(BrokerConfig next);  // any thread, `next` validated
    void serve_reloads();                   // the loop thread: reload_fd is readable
    void end_reloads();                     // run() returns: requests still queued fail
    void hangup();                          // SIGHUP: reread, validate, apply; or log why not
    void apply(BrokerConfig next);          // the loop thread (or before run): the live settings, logged
};

}  // namespace rvoip::events::daemon
