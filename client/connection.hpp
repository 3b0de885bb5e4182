// Internal to librvoip-events: the control connection to rvoip-eventd, which survives the broker.
//
// Never on the data path: publishers and subscribers use the rings they mapped, with or without a
// broker. When the connection drops (the broker crashed, or was restarted), a background thread
// reconnects with back-off and reclaims every slot this EventSystem still holds (Reclaim: topic, ring
// key, slot, doorbell), so that the restarted broker, which adopted the rings, knows them as ours again.
// Calls that need the broker meanwhile wait up to the control timeout, then return broker_unavailable.
//
// A reply that arrives after its call gave up (the broker was slow) is not lost either: a slot it
// granted is handed back at once (remove_publisher / remove_subscriber), so no slot stays active for
// a publisher or subscriber nobody holds.
#pragma once

#include "proto/channel.hpp"
#include "proto/messages.hpp"
#include "rvoip/events.hpp"
#include "shm/doorbell.hpp"
#include "shm/segment.hpp"

#include <unistd.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace rvoip::events::detail {

class EmbeddedBroker;

// A topic's three segments mapped for a publisher or a subscriber (map_topic).
struct Mapped {
    shm::Segment data;
    shm::Segment cursors;
    shm::Segment bells;
    shm::TopicMap map;
    shm::DoorbellMap bell_map;
};
// Maps the descriptors the broker sent with a slot (data, cursors, doorbells; closed once mapped) with a
// publisher's access (`pub`) or a subscriber's, and checks that they agree with each other.
Result<Mapped> map_topic(const std::string& name, std::vector<int> fds, bool pub);

// What the broker sends a consumer group member by itself (group_assign, group_revoke): queued by the
// connection's thread, taken by the member's receiving thread.
struct GroupInbox {
    std::mutex mu;
    std::condition_variable arrived;
    std::vector<std::pair<proto::Body, std::vector<int>>> mail;  // guarded by mu
    // Set under mu with mail; read without it on every receive (acquire: pairs with the release store in post).
    std::atomic<bool> pending{false};
    // Optional, guarded by mu: an eventfd that post() also writes (an EventBus's dispatcher waits on it
    // in epoll). Whoever sets it clears it, under mu, before closing it: post never writes a closed fd.
    int notify_fd = -1;
    void post(proto::Body body, std::vector<int> fds) {
        {
            std::lock_guard lock(mu);
            mail.emplace_back(std::move(body), std::move(fds));
            pending.store(true, std::memory_order_release);
            if (notify_fd >= 0) {
                const std::uint64_t one = 1;
                (void)!::write(notify_fd, &one, sizeof one);  // an eventfd: never blocks (a counter), never short
            }
        }
        arrived.notify_all();
    }
    ~GroupInbox() {
        for (auto& m : mail) proto::close_fds(m.second);
    }
};

class Connection {
public:
    static Result<std::shared_ptr<Connection>> open(const std::string& path, const std::string& name, std::chrono::milliseconds timeout);
    // The same, with a private broker on a thread of this process.
    static Result<std::shared_ptr<Connection>> open_embedded(const std::string& name, std::chrono::milliseconds timeout);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    struct Reply {
        proto::Body body;
        std::vector<int> fds;
        ~Reply() { proto::close_fds(fds); }
        Reply(proto::Body b, std::vector<int> f) : body(std::move(b)), fds(std::move(f)) {}
        Reply(Reply&& o) noexcept : body(std::move(o.body)), fds(std::exchange(o.fds, {})) {}
    };

    // Sends a request and waits for its reply; an ErrorReply becomes the error value. While the broker
    // is away it first waits for the reconnection, up to the control timeout in all.
    Result<Reply> call(proto::Body request);

    // A slot this EventSystem holds, for reclaiming after a reconnection and releasing at the end.
    struct Slot {
        proto::Role role = proto::Role::publisher;
        std::string topic;
        std::uint64_t record_key = 0;
        std::uint32_t topic_id = 0;  // the current broker's id (renumbered by a restarted broker)
        std::uint32_t slot = 0;
        std::uint32_t doorbell = layout::kNoDoorbell;
    };
    std::uint64_t hold(Slot s);
    // Gives the slot back to the broker (now, or after the reconnection if it is away).
    void release(std::uint64_t handle) noexcept;

    // A group member's mailbox: messages for `member` that came before it was attached are handed over.
    void attach_group(std::uint32_t member, std::shared_ptr<GroupInbox> inbox);
    void detach_group(std::uint32_t member);

    ConnectionState state() const;
    // Times the connection dropped: what the broker held for this connection alone (group memberships)
    // ended each time. Cheap enough for every receive.
    std::uint64_t drops() const noexcept { return drops_.load(std::memory_order_acquire); }  // acquire: pairs with lost()
    const std::string& path() const noexcept { return path_; }
    const shm::DoorbellMap& doorbells() const noexcept { return doorbells_; }
    bool stopping() const noexcept { return stopping_; }

private:
    Connection();
    static Result<std::shared_ptr<Connection>> connect(const std::string& path, const std::string& name, std::chrono::milliseconds timeout,
                                                       std::unique_ptr<EmbeddedBroker> embedded);
    using Lock = std::unique_lock<std::mutex>;

    // One request and its reply on `fd`, with `mu_` held. Frames for other correlations (replies to
    // calls that gave up, the shutdown notice) are dealt with on the way.
    // `sent`, if given, says whether the request left (the broker may have handled it) when this fails.
    Result<Reply> round_trip(Lock& lock, int fd, proto::Body request, bool* sent = nullptr);
    void unsolicited(int fd, std::uint64_t correlation, proto::Body& body, std::vector<int>& fds);
    // Connects and says hello; on success the doorbell segment is checked or mapped.
    Status handshake(Lock& lock, int fd);
    Status reconnect(Lock& lock);
    void lost(const std::string& why);
    Error gone(int fd, const Error& e);  // a broken socket: lost() if it is ours, and the error to return
    void watch();  // the background thread

    std::unique_ptr<EmbeddedBroker> embedded_;  // destroyed last: the broker sees us leave first
    mutable std::mutex mu_;
    std::condition_variable up_;
    int fd_ = -1;
    bool connected_ = false;
    int wake_fd_ = -1;  // eventfd: stops the background thread
    bool closing_ = false;
    std::thread watcher_;
    std::string path_;
    std::string name_;
    std::chrono::milliseconds timeout_{5000};
    std::uint64_t next_correlation_ = 0;
    // Calls that gave up waiting: a slot their late reply grants is handed back.
    std::map<std::uint64_t, proto::MsgType> abandoned_;
    std::map<std::uint64_t, Slot> slots_;
    std::map<std::uint32_t, std::shared_ptr<GroupInbox>> groups_;  // by member id
    std::map<std::uint32_t, std::vector<std::pair<proto::Body, std::vector<int>>>> early_;  // member not attached yet
    std::set<std::uint32_t> left_;  // members that left: what the broker sent them before it knew is dropped
    std::vector<Slot> to_release_;  // released while the broker was away
    std::uint64_t next_handle_ = 0;
    shm::Segment doorbell_segment_;
    shm::DoorbellMap doorbells_{};
    dev_t doorbell_dev_ = 0;
    ino_t doorbell_ino_ = 0;
    std::atomic<bool> stopping_{false};
    std::atomic<std::uint64_t> drops_{0};
    ConnectionState state_;
};

}  // namespace rvoip::events::detail
