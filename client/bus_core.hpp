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
#pragma once

#include "rvoip/events.hpp"

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
    Status remove(SubscriptionId id);
    Result<ShutdownReport> shutdown(std::chrono::milliseconds deadline);
    Status accepting() const;

    EventBusStats stats() const;
    const EventBusConfig& config() const noexcept { return cfg_; }

private:
    struct Subscription {
        SubscriptionId id;
        std::size_t index = 0;  // in set_
        BusHandler handler;
        std::uint32_t in_flight = 0;  // handed out, not completed
        bool closing = false;         // unsubscribed: its events are discarded, it goes when in_flight is 0
        std::optional<std::promise<Status>> closed;  // the unsubscribe waiting for that
    };
    struct Work {
        Subscription* sub = nullptr;
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
        enum class Kind { add, remove, stop } kind = Kind::stop;
        std::unique_ptr<SubscriberCore> core;
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
            discarded{0}, filter_exceptions{0};
    };

    explicit BusCore(const EventBusConfig& cfg);
    Status post(Command c);

    // The dispatcher thread (bus_dispatcher.cpp).
    void dispatch() noexcept;
    void apply_commands();
    bool take_round() noexcept;
    void accept(const WaitSetCore::Taken& t) noexcept;
    void hand_out() noexcept;
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
