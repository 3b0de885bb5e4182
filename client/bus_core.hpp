// Internal: the engine behind EventBus (rvoip/bus.hpp). One dispatcher thread owns a WaitSetCore over
// all of the bus's subscriptions and every sample it takes; workers run handlers. Who touches what:
//
//   caller threads --commands_ (mutex), wake_fd_-->  dispatcher  --ready_[queue] (spsc, one per priority)--> workers
//                                                     dispatcher <--done (spsc, one per worker), wake_fd_--  workers
//
// The dispatcher is the only producer of each ready_ queue; workers are its consumers one at a time
// (take_mutex_, held for one pop): boost::lockfree::queue would let them pop concurrently, but its pop
// reads a node's payload before its CAS, which ThreadSanitizer reports (boostorg/lockfree#78). The
// dispatcher never blocks on workers. Work slots are preallocated (max_concurrent_dispatches of them):
// the queues carry slot numbers, and a slot is written by the dispatcher before its push (release) and
// read by a worker after its pop (acquire); it comes back through the worker's `done` queue.
//
// Consumer groups (subscribe_group): each membership is a GroupCore with a WaitSetCore of its own over
// the partitions the broker assigned to it, beside set_ (the plain subscriptions). The dispatcher is the
// group's receiving thread: it applies the broker's mail (maintain) on every turn of its loop, and
// parks in epoll on set_'s descriptor, each group's descriptor (armed over its partitions of the
// moment) and wake_fd_, which the group's inbox also writes when mail comes. A partition's events go to
// one worker at a time: while its handler runs, the partition's next events wait, taken, in a list of
// their slots (Subscription::Partition), so a key's events are handled in order with any worker count.
#pragma once

#include "rvoip/events.hpp"
#include "rvoip/detail/group_core.hpp"

#include <boost/lockfree/spsc_queue.hpp>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace rvoip::events::detail {

class BusCore;
// The bus whose worker this thread is (remove() and shutdown() from inside a handler must not wait).
inline thread_local const BusCore* bus_worker_of = nullptr;

class BusCore {
public:
    static Result<std::unique_ptr<BusCore>> start(const EventBusConfig& cfg);
    // Shuts down if that was not done, then waits for the dispatcher and every worker.
    ~BusCore();
    BusCore(const BusCore&) = delete;
    BusCore& operator=(const BusCore&) = delete;

    // Any thread (the dispatcher's excepted): these post a command and wait for the dispatcher's answer.
    Result<SubscriptionId> add(std::unique_ptr<SubscriberCore> core, BusHandler handler);
    Result<SubscriptionId> add_group(std::unique_ptr<GroupCore> group, BusHandler handler);
    Status remove(SubscriptionId id);
    Result<ShutdownReport> shutdown(std::chrono::milliseconds deadline);
    Status accepting() const;

    EventBusStats stats() const;
    const EventBusConfig& config() const noexcept { return cfg_; }

private:
    static constexpr std::uint32_t kNoSlot = ~std::uint32_t(0);
    struct Subscription {
        SubscriptionId id;
        std::size_t index = 0;  // in set_ (plain subscriptions)
        BusHandler handler;
        std::uint32_t in_flight = 0;  // handed out, not completed
        bool closing = false;         // unsubscribed: its events are discarded, it goes when in_flight is 0
        std::optional<std::promise<Status>> closed;  // the unsubscribe waiting for that
        // A consumer group membership (not in set_): the member, and by partition whether a handler of
        // it is out and the slots of its events taken meanwhile (a list through Work::next, in order).
        struct Partition {
            bool busy = false;
            std::uint32_t head = kNoSlot, tail = kNoSlot;
        };
        std::unique_ptr<GroupCore> group;
        std::vector<Partition> parts;
    };
    struct Work {
        Subscription* sub = nullptr;
        std::uint32_t next = kNoSlot;  // a group partition's list of held-back slots
        SubscriberCore* core = nullptr;  // zero-copy: whose record is held until the handler returned
        std::uint32_t lane = 0;
        bool held = false;
        std::uint32_t queue = 0;  // ready_ index
        const std::byte* data = nullptr;
        std::uint32_t length = 0;
        EventContext ctx;
        std::byte* copy = nullptr;  // copy mode: this slot's buffer, 64-byte aligned
        std::size_t copy_capacity = 0;
        ~Work();
    };
    struct alignas(64) Worker {
        explicit Worker(std::size_t capacity) : done(capacity) {}
        boost::lockfree::spsc_queue<std::uint32_t> done;  // completed slots: this worker -> the dispatcher
        // Single writer (this worker), read by stats() and shutdown(): relaxed.
        std::atomic<std::uint64_t> completed{0}, timeouts{0}, exceptions{0}, skipped{0}, wakes{0};
        std::atomic<std::int64_t> longest_ns{0};
        std::atomic<std::int64_t> started_ns{0};  // the running handler's start; 0 when none runs
        std::thread thread;
    };
    struct Command {
        enum class Kind { add, add_group, remove, stop } kind = Kind::stop;
        std::unique_ptr<SubscriberCore> core;
        std::unique_ptr<GroupCore> group;
        BusHandler handler;
        std::size_t max_payload = 0;
        SubscriptionId id;
        bool wait_handlers = true;  // remove: answer once its handlers in flight returned
        std::promise<Result<SubscriptionId>> added;
        std::promise<Status> removed;
    };
    // Written by the dispatcher only (single writer), read by stats(): relaxed.
    struct alignas(64) DispatcherCounters {
        std::array<std::atomic<std::uint64_t>, layout::kLanes> dispatched{};
        std::atomic<std::uint64_t> filtered_out{0}, overload_waits{0}, wakeups{0}, lagged{0}, corrupt{0}, malformed{0},
            discarded{0}, filter_exceptions{0}, misrouted{0}, group_errors{0};
    };

    explicit BusCore(const EventBusConfig& cfg);
    Status post(Command c);

    // The dispatcher thread (bus_dispatcher.cpp).
    void dispatch() noexcept;
    void apply_commands();
    void add_group_now(Command& c);
    void maintain_groups() noexcept;
    bool take_round() noexcept;
    // The most urgent record across set_ and the groups (`from`: the group it came from, or null).
    Result<WaitSetCore::Taken> take_next(Subscription*& from, GroupCore::Taken& g) noexcept;
    void accept(const WaitSetCore::Taken& t, Subscription* group, const GroupCore::Taken* g) noexcept;
    void hand_out(std::vector<std::uint32_t>& slots) noexcept;
    void unwatch(Subscription& group) noexcept;
    std::uint64_t wakeups() const noexcept;
    void reap() noexcept;
    void complete(std::uint32_t slot) noexcept;
    void park() noexcept;
    void finish_unsubscribe(Subscription& sub) noexcept;
    void note_drained();
    void fit_copy(Work& w);
    bool completions_waiting() const noexcept;
    // A worker thread.
    void work(Worker& me) noexcept;
    bool take(std::uint32_t& slot, bool& ran_non_critical) noexcept;
    void run(Worker& me, std::uint32_t slot) noexcept;
    void wake() const noexcept;

    const EventBusConfig cfg_;
    const std::size_t non_critical_cap_;  // workers that may run non-Critical handlers at once

    // ---- the dispatcher's own (only its thread touches them while it runs) ----
    WaitSetCore set_;
    std::vector<std::unique_ptr<Subscription>> subs_;  // by set_ index; null where none
    std::vector<std::unique_ptr<Subscription>> groups_;  // consumer group memberships, in subscription order
    std::size_t next_source_ = 0;  // round robin within a lane between set_ (0) and the groups (1..)
    std::uint64_t retired_wakeups_ = 0;  // wake-ups of groups that are gone
    std::vector<std::uint32_t> unblocked_;  // slots whose partition's previous handler returned (reap)
    std::size_t held_ = 0;       // slots in flight holding a ring record
    std::unique_ptr<Work[]> slots_;
    std::vector<std::uint32_t> free_;   // free slots (a stack)
    std::vector<std::uint32_t> batch_;  // this round's slots
    std::size_t in_flight_ = 0;
    std::size_t closing_ = 0;    // subscriptions unsubscribed and not gone yet
    std::size_t copy_size_ = 0;  // copy mode: each slot's buffer size
    bool stopping_ = false;
    bool drained_noted_ = false;
    bool poll_ = false;  // the set's descriptor works: park in epoll on it and wake_fd_
    std::optional<WaitSetCore::Taken> first_;  // fallback park: what a timed receive returned
    int epoll_ = -1;

    // ---- between the dispatcher and the workers ----
    std::array<std::unique_ptr<boost::lockfree::spsc_queue<std::uint32_t>>, layout::kLanes> ready_;
    std::mutex take_mutex_;                // one worker at a time at the consumer end of ready_
    std::size_t non_critical_running_ = 0;  // under take_mutex_
    std::atomic<std::uint32_t> work_epoch_{0};    // bumped after pushes; idle workers wait on it
    std::atomic<std::uint32_t> idle_workers_{0};  // workers about to wait on work_epoch_
    std::vector<std::unique_ptr<Worker>> workers_;
    std::atomic<bool> parked_{false};   // the dispatcher sleeps and wants to hear of completions
    std::atomic<bool> abandon_{false};  // past a shutdown's deadline: queued work is not run
    std::atomic<bool> workers_stop_{false};
    int wake_fd_ = -1;  // eventfd: commands and completions wake the dispatcher
    DispatcherCounters counters_;

    // ---- commands from other threads ----
    mutable std::mutex cmd_mutex_;
    std::deque<Command> commands_;             // under cmd_mutex_
    std::atomic<bool> commands_pending_{false};
    std::uint64_t next_id_ = 1;                // under cmd_mutex_
    bool shut_ = false;                        // under cmd_mutex_: shutdown was called
    bool drained_ = false;                     // under cmd_mutex_: stopped and nothing in flight
    std::condition_variable drained_cv_;
    std::atomic<bool> exit_{false};
    std::thread dispatcher_;
};

}  // namespace rvoip::events::detail
