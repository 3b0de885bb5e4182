// EventBus (rvoip/bus.hpp): the front, and the engine's life and control side: start, commands from
// other threads, shutdown, stats. The dispatcher and worker threads are in bus_dispatcher.cpp.
#include "client/bus_core.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <bit>
#include <string>

namespace rvoip::events {

// ------------------------------------------------------------------------------------------------------
// The front.

namespace {
constexpr std::uint64_t kDefaultMaxEvent = 64 * 1024;  // the broker's default max_event (DESIGN §3)
}

EventBus::EventBus(const EventSystem& system) : system_(system) {}
EventBus::~EventBus() = default;

Result<std::unique_ptr<EventBus>> EventBus::create(EventSystem& system, const EventBusConfig& config) {
    auto core = detail::BusCore::start(config);
    if (!core) return std::unexpected(std::move(core.error()));
    auto bus = std::unique_ptr<EventBus>(new EventBus(system));
    bus->core_ = std::move(*core);
    return bus;
}

Status EventBus::accepting() const { return core_->accepting(); }

SubscriberOptions EventBus::subscriber_options() const {
    SubscriberOptions o;
    if (const auto cap = core_->config().broadcast_capacity) {
        for (auto p : {Priority::critical, Priority::high, Priority::normal, Priority::low}) {
            o.topic.capacity(p, cap);
            // A lane holds two records of its largest event: below 128 KiB, less than the default 64 KiB.
            if (cap < 2 * kDefaultMaxEvent) o.topic.max_event(p, static_cast<std::uint32_t>(cap / 2 - sizeof(layout::RecordHeader)));
        }
    }
    return o;
}

Result<SubscriptionId> EventBus::add(std::unique_ptr<detail::SubscriberCore> core, detail::BusHandler handler) {
    return core_->add(std::move(core), std::move(handler));
}
Result<SubscriptionId> EventBus::add_group(std::unique_ptr<detail::GroupCore> group, detail::BusHandler handler) {
    return core_->add_group(std::move(group), std::move(handler));
}
Status EventBus::unsubscribe(SubscriptionId id) { return core_->remove(id); }
Result<ShutdownReport> EventBus::shutdown(std::chrono::milliseconds deadline) { return core_->shutdown(deadline); }
EventBusStats EventBus::stats() const { return core_->stats(); }
const EventBusConfig& EventBus::config() const noexcept { return core_->config(); }

namespace detail {

namespace {
std::unique_ptr<boost::lockfree::spsc_queue<std::uint32_t>> make_queue(std::size_t n) {
    return std::make_unique<boost::lockfree::spsc_queue<std::uint32_t>>(n);
}
}  // namespace

// ------------------------------------------------------------------------------------------------------
// Life.

BusCore::BusCore(const EventBusConfig& cfg)
    : cfg_(cfg), non_critical_cap_(cfg.enable_priority ? std::max<std::size_t>(1, cfg.worker_threads - 1) : cfg.worker_threads),
      set_(WaitOptions{}) {}

Result<std::unique_ptr<BusCore>> BusCore::start(const EventBusConfig& cfg) {
    auto bad = [](std::string what) { return fail(Errc::invalid_argument, "EventBusConfig: " + what); };
    if (cfg.worker_threads < 1 || cfg.worker_threads > 256) return bad("worker_threads must be 1 to 256");
    if (cfg.max_concurrent_dispatches < 1 || cfg.max_concurrent_dispatches > 65535)
        return bad("max_concurrent_dispatches must be 1 to 65535");
    if (cfg.batch_size < 1) return bad("batch_size must be at least 1");
    if (cfg.shard_count < 1 || cfg.shard_count > proto::kMaxPartitions)
        return bad("shard_count (partitions of a consumer group's topic) must be 1 to " + std::to_string(proto::kMaxPartitions) + ", not " +
                   std::to_string(cfg.shard_count));
    if (cfg.default_timeout.count() < 0) return bad("default_timeout must not be negative");
    if (cfg.broadcast_capacity && (cfg.broadcast_capacity < layout::kMinCapacity || !std::has_single_bit(cfg.broadcast_capacity)))
        return bad("broadcast_capacity must be 0 (the broker's default) or a power of two of at least " +
                   std::to_string(layout::kMinCapacity) + " bytes, not " + std::to_string(cfg.broadcast_capacity));

    auto b = std::unique_ptr<BusCore>(new BusCore(cfg));
    const std::size_t n = cfg.max_concurrent_dispatches;
    b->slots_ = std::make_unique<Work[]>(n);
    b->free_.reserve(n);
    for (std::size_t i = n; i-- > 0;) b->free_.push_back(static_cast<std::uint32_t>(i));
    b->batch_.reserve(cfg.batch_size);
    b->unblocked_.reserve(n);
    for (auto& q : b->ready_) q = make_queue(n);
    b->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    b->epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (b->wake_fd_ < 0 || b->epoll_ < 0) return fail(Errc::internal, std::string("EventBus: eventfd/epoll: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ::epoll_ctl(b->epoll_, EPOLL_CTL_ADD, b->wake_fd_, &ev);
    // The set's descriptor (Linux 6.7): one epoll wait covers events and the workers' wake-ups. Before
    // that, the dispatcher waits on the set with a bounded timeout instead (see park).
    if (auto fd = b->set_.descriptor()) {
        ev.data.u32 = 1;
        b->poll_ = ::epoll_ctl(b->epoll_, EPOLL_CTL_ADD, *fd, &ev) == 0;
    }
    for (std::size_t i = 0; i < cfg.worker_threads; ++i) b->workers_.push_back(std::make_unique<Worker>(n));
    for (auto& w : b->workers_) w->thread = std::thread([core = b.get(), w = w.get()] { core->work(*w); });
    b->dispatcher_ = std::thread([core = b.get()] { core->dispatch(); });
    return b;
}

BusCore::~BusCore() {
    bool shut;
    {
        std::lock_guard lk(cmd_mutex_);
        shut = shut_;
    }
    if (!shut && dispatcher_.joinable()) (void)shutdown(cfg_.default_timeout.count() > 0 ? cfg_.default_timeout : std::chrono::milliseconds(1000));
    exit_.store(true);
    wake();
    if (dispatcher_.joinable()) dispatcher_.join();  // after every handler in flight returned
    workers_stop_.store(true);
    work_epoch_.fetch_add(1);
    work_epoch_.notify_all();
    for (auto& w : workers_)
        if (w->thread.joinable()) w->thread.join();
    subs_.clear();  // handlers and subscriptions, now that no thread uses them
    groups_.clear();  // (left already when the dispatcher drained; before wake_fd_ closes: their inboxes write it)
    if (epoll_ >= 0) ::close(epoll_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
}

BusCore::Work::~Work() {
    if (copy) ::operator delete(copy, std::align_val_t(64));
}

void BusCore::wake() const noexcept {
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
}

// ------------------------------------------------------------------------------------------------------
// Commands.

Status BusCore::accepting() const {
    std::lock_guard lk(cmd_mutex_);
    if (shut_) return fail(Errc::closed, "the EventBus is shut down");
    return {};
}

Status BusCore::post(Command c) {
    {
        std::lock_guard lk(cmd_mutex_);
        if (shut_ && c.kind != Command::Kind::stop) return fail(Errc::closed, "the EventBus is shut down");
        if (c.kind == Command::Kind::add || c.kind == Command::Kind::add_group) c.id = SubscriptionId{next_id_++};
        commands_.push_back(std::move(c));
        // release: pairs with the acquire in apply_commands (which then takes the mutex anyway).
        commands_pending_.store(true, std::memory_order_release);
    }
    wake();
    return {};
}

Result<SubscriptionId> BusCore::add(std::unique_ptr<SubscriberCore> core, BusHandler handler) {
    Command c;
    c.kind = Command::Kind::add;
    c.max_payload = handler.min_size;
    if (!c.max_payload)  // raw: as large as the topic's largest event
        for (const auto& l : core->info().lanes) c.max_payload = std::max<std::size_t>(c.max_payload, l.max_event);
    c.core = std::move(core);
    c.handler = std::move(handler);
    auto answer = c.added.get_future();
    if (auto st = post(std::move(c)); !st) return std::unexpected(std::move(st.error()));
    return answer.get();
}

Result<SubscriptionId> BusCore::add_group(std::unique_ptr<GroupCore> group, BusHandler handler) {
    Command c;
    c.kind = Command::Kind::add_group;
    c.max_payload = handler.min_size;
    c.group = std::move(group);
    c.handler = std::move(handler);
    auto answer = c.added.get_future();
    if (auto st = post(std::move(c)); !st) return std::unexpected(std::move(st.error()));
    return answer.get();
}

Status BusCore::remove(SubscriptionId id) {
    Command c;
    c.kind = Command::Kind::remove;
    c.id = id;
    c.wait_handlers = bus_worker_of != this;  // a handler of ours would wait for itself
    auto answer = c.removed.get_future();
    if (auto st = post(std::move(c)); !st) return st;
    return answer.get();
}

Result<ShutdownReport> BusCore::shutdown(std::chrono::milliseconds deadline) {
    if (bus_worker_of == this)
        return fail(Errc::invalid_argument, "EventBus::shutdown from inside one of its handlers would wait for itself");
    const auto until = std::chrono::steady_clock::now() + deadline;
    auto completed = [this] {
        std::uint64_t n = 0;
        for (auto& w : workers_) n += w->completed.load(std::memory_order_relaxed);  // relaxed: a count
        return n;
    };
    const std::uint64_t before = completed();
    {
        std::lock_guard lk(cmd_mutex_);
        if (shut_) return fail(Errc::closed, "the EventBus is shut down already");
        shut_ = true;
    }
    Command stop;
    stop.kind = Command::Kind::stop;
    (void)post(std::move(stop));
    bool drained;
    {
        std::unique_lock lk(cmd_mutex_);
        drained = drained_cv_.wait_until(lk, until, [this] { return drained_; });
    }
    ShutdownReport r;
    if (!drained) {
        abandon_.store(true);  // what a worker pops from now on is not run
        for (auto& w : workers_) r.still_running += w->started_ns.load(std::memory_order_relaxed) != 0;  // relaxed: a snapshot
        const auto in_flight = stats().in_flight;
        r.abandoned = in_flight > r.still_running ? in_flight - r.still_running : 0;
    }
    r.drained = completed() - before;
    return r;
}

EventBusStats BusCore::stats() const {
    // relaxed throughout: single-writer counters, each exact, read without a common snapshot.
    constexpr auto rx = std::memory_order_relaxed;
    EventBusStats s;
    std::uint64_t skipped = 0;
    const std::int64_t now = shm::monotonic_ns();
    const std::int64_t limit = std::chrono::nanoseconds(cfg_.default_timeout).count();
    for (auto& w : workers_) {  // completions first: then dispatched (read after) is never behind them
        s.completed += w->completed.load(rx);
        s.handler_timeouts += w->timeouts.load(rx);
        s.handler_exceptions += w->exceptions.load(rx);
        skipped += w->skipped.load(rx);
        s.completion_wakeups += w->wakes.load(rx);
        s.longest_handler_ns = std::max(s.longest_handler_ns, w->longest_ns.load(rx));
        const auto started = w->started_ns.load(rx);
        if (started && limit > 0 && now - started > limit) ++s.overdue_now;
    }
    std::uint64_t dispatched = 0;
    for (std::size_t l = 0; l < layout::kLanes; ++l) dispatched += s.dispatched[l] = counters_.dispatched[l].load(rx);
    s.in_flight = dispatched > s.completed + skipped ? dispatched - s.completed - skipped : 0;
    s.handler_exceptions += counters_.filter_exceptions.load(rx);
    s.filtered_out = counters_.filtered_out.load(rx);
    s.overload_waits = counters_.overload_waits.load(rx);
    s.dispatcher_wakeups = counters_.wakeups.load(rx);
    s.lagged = counters_.lagged.load(rx);
    s.corrupt = counters_.corrupt.load(rx);
    s.malformed = counters_.malformed.load(rx);
    s.discarded = counters_.discarded.load(rx) + skipped;
    s.misrouted = counters_.misrouted.load(rx);
    s.group_errors = counters_.group_errors.load(rx);
    return s;
}

}  // namespace detail
}  // namespace rvoip::events
