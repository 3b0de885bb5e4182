// EventBus's threads (client/bus_core.hpp): the dispatcher, which takes events Critical first across all
// of the bus's subscriptions and hands them out, and the workers, which run handlers. Nothing here
// allocates once the subscriptions are in place (copy buffers grow only after a subscribe that brings a
// larger event type).
#include "client/bus_core.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace rvoip::events::detail {

namespace {
// relaxed: single-writer counters, read by stats().
void bump(std::atomic<std::uint64_t>& c, std::uint64_t by = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}
constexpr auto kFallbackNap = std::chrono::milliseconds(10);        // commands' latency without a descriptor
constexpr auto kFallbackShortNap = std::chrono::microseconds(200);  // ... while completions are awaited
}  // namespace

// ------------------------------------------------------------------------------------------------------
// The dispatcher.

void BusCore::dispatch() noexcept {
    for (;;) {
        apply_commands();
        reap();
        maintain_groups();
        if (stopping_ && in_flight_ == 0) {
            note_drained();
            if (exit_.load()) return;
        }
        if (!stopping_ && take_round()) continue;  // more may be ready: take again before parking
        park();
    }
}

void BusCore::apply_commands() {
    // acquire: pairs with the release in post (the mutex below orders the deque itself).
    if (!commands_pending_.load(std::memory_order_acquire)) return;
    std::deque<Command> cmds;
    {
        std::lock_guard lk(cmd_mutex_);
        cmds.swap(commands_);
        commands_pending_.store(false, std::memory_order_relaxed);  // relaxed: under the mutex that post takes too
    }
    for (auto& c : cmds) {
        switch (c.kind) {
        case Command::Kind::add: {
            if (stopping_) {
                c.added.set_value(fail(Errc::closed, "the EventBus is shut down"));
                break;
            }
            if (set_.size() >= WaitSetCore::kMaxSubscriptions) {
                c.added.set_value(fail(Errc::limit_reached, "an EventBus has at most " + std::to_string(WaitSetCore::kMaxSubscriptions) +
                                                                " subscriptions (one WaitSet); topic '" + c.core->info().name +
                                                                "' would be one more: use another EventBus"));
                break;
            }
            auto index = set_.add(std::move(c.core));
            if (!index) {
                c.added.set_value(std::unexpected(std::move(index.error())));
                break;
            }
            if (subs_.size() <= *index) subs_.resize(*index + 1);
            auto sub = std::make_unique<Subscription>();
            sub->id = c.id;
            sub->index = *index;
            sub->handler = std::move(c.handler);
            subs_[*index] = std::move(sub);
            if (!cfg_.enable_zero_copy && c.max_payload > copy_size_) {
                copy_size_ = (c.max_payload + 63) & ~std::size_t(63);
                for (auto slot : free_) fit_copy(slots_[slot]);  // in-flight ones when they come back
            }
            c.added.set_value(c.id);
            break;
        }
        case Command::Kind::add_group:
            add_group_now(c);
            break;
        case Command::Kind::remove: {
            auto is = [&](const auto& s) { return s && s->id == c.id && !s->closing; };
            Subscription* found = nullptr;
            if (auto it = std::ranges::find_if(subs_, is); it != subs_.end()) found = it->get();
            else if (auto g = std::ranges::find_if(groups_, is); g != groups_.end()) found = g->get();
            if (!found) {
                c.removed.set_value(fail(Errc::invalid_argument, "EventBus::unsubscribe: no subscription " + std::to_string(c.id.value) +
                                                                     " (ended already, or not this bus's)"));
                break;
            }
            Subscription& sub = *found;
            sub.closing = true;
            ++closing_;
            if (sub.group) unwatch(sub);  // not read any more: its partitions wait for the next member
            if (c.wait_handlers) sub.closed.emplace(std::move(c.removed));
            else c.removed.set_value({});
            if (sub.in_flight == 0) finish_unsubscribe(sub);
            break;
        }
        case Command::Kind::stop:
            stopping_ = true;
            break;
        }
    }
}

void BusCore::add_group_now(Command& c) {
    if (stopping_) {  // c.group goes with the command: it leaves the group
        c.added.set_value(fail(Errc::closed, "the EventBus is shut down"));
        return;
    }
    auto sub = std::make_unique<Subscription>();
    sub->id = c.id;
    sub->handler = std::move(c.handler);
    sub->parts.resize(c.group->partitions());
    sub->group = std::move(c.group);
    // Its mail wakes us from now on; what came before is `pending` already, which maintain_groups sees.
    sub->group->notify(wake_fd_);
    if (poll_) {
        auto fd = sub->group->descriptor();
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u32 = 2;
        if (!fd || ::epoll_ctl(epoll_, EPOLL_CTL_ADD, *fd, &ev) != 0) poll_ = false;  // wait the fallback way
    }
    if (!cfg_.enable_zero_copy && c.max_payload > copy_size_) {
        copy_size_ = (c.max_payload + 63) & ~std::size_t(63);
        for (auto slot : free_) fit_copy(slots_[slot]);
    }
    groups_.push_back(std::move(sub));
    c.added.set_value(c.id);
}

void BusCore::unwatch(Subscription& group) noexcept {
    if (!poll_) return;
    if (auto fd = group.group->descriptor()) (void)::epoll_ctl(epoll_, EPOLL_CTL_DEL, *fd, nullptr);  // ENOENT the second time
}

// The dispatcher is each group's receiving thread: the broker's assignments and revocations are applied
// here, and revoked partitions whose records were all released (their handlers returned) given back.
void BusCore::maintain_groups() noexcept {
    for (auto& g : groups_)
        if (auto st = g->group->maintain(); !st) bump(counters_.group_errors);
}

std::uint64_t BusCore::wakeups() const noexcept {
    std::uint64_t n = set_.wakeups() + retired_wakeups_;
    for (const auto& g : groups_) n += g->group->wakeups();
    return n;
}

// The order across sources: lane by lane, so a Critical event of any plain subscription or any group
// partition comes before every High one, and so on (exact at the moment of taking). Within a lane the
// sources take turns, one record at a time: set_ (the plain subscriptions, round robin among them) is
// source 0, groups_[i] source i + 1, each turn starting after the source that gave the last record; a
// group's set round-robins among its partitions likewise. Closing groups are not read: what is left in
// their partitions belongs to the member that takes them over.
Result<WaitSetCore::Taken> BusCore::take_next(Subscription*& from, GroupCore::Taken& g) noexcept {
    const std::size_t sources = 1 + groups_.size();
    for (std::uint32_t l = 0; l < layout::kLanes; ++l) {
        for (std::size_t i = 0; i < sources; ++i) {
            const std::size_t k = (next_source_ + i) % sources;
            if (k == 0) {
                from = nullptr;
                auto r = set_.try_lane(l);
                if (!r) return r;
                if (*r) {
                    next_source_ = 1;
                    return r;
                }
                continue;
            }
            Subscription& s = *groups_[k - 1];
            if (s.closing) continue;
            from = &s;
            auto r = s.group->try_lane(l);
            if (!r) return std::unexpected(std::move(r.error()));
            if (*r) {
                next_source_ = k + 1;
                g = *r;
                return static_cast<const WaitSetCore::Taken&>(g);
            }
        }
    }
    from = nullptr;
    return WaitSetCore::Taken{};
}

// Takes up to batch_size events, Critical first across the set and the groups, and hands them out. True
// when it took any (handed out, held back, filtered or discarded): the caller tries again before parking.
bool BusCore::take_round() noexcept {
    batch_.clear();
    bool took = false, limited = false;
    for (std::size_t n = 0; n < cfg_.batch_size; ++n) {
        if (in_flight_ >= cfg_.max_concurrent_dispatches) {
            limited = true;
            break;
        }
        Subscription* from = nullptr;
        GroupCore::Taken g;
        Result<WaitSetCore::Taken> r = first_ ? Result<WaitSetCore::Taken>(*std::exchange(first_, std::nullopt)) : take_next(from, g);
        if (!r) {
            if (r.error().code == Errc::lagged) {
                const SubscriberCore* s = from ? from->group->last_error_core() : set_.at(set_.last_error_index());
                bump(counters_.lagged, s ? s->last_missed() : 0);
            } else if (r.error().code == Errc::corrupt) {
                bump(counters_.corrupt);
            } else {
                break;  // no subscriptions
            }
            took = true;
            continue;
        }
        if (!*r) break;  // every lane of every subscription is empty
        took = true;
        accept(*r, from, from ? &g : nullptr);
    }
    if (limited) bump(counters_.overload_waits);
    // Before the handlers run: what they see in stats() already counts the wake-up that brought them.
    counters_.wakeups.store(wakeups(), std::memory_order_relaxed);  // relaxed: single writer, read by stats()
    hand_out(batch_);
    return took;
}

// `group`: the group membership it came from (g: its partition), or null for set_'s.
void BusCore::accept(const WaitSetCore::Taken& t, Subscription* group, const GroupCore::Taken* g) noexcept {
    Subscription* sub = group ? group : t.index < subs_.size() ? subs_[t.index].get() : nullptr;
    auto release = [&] { t.core->release(t.lane); };
    if (!sub || sub->closing) {
        release();
        bump(counters_.discarded);
        return;
    }
    if (t.length < sub->handler.min_size) {
        release();
        bump(counters_.malformed);
        return;
    }
    std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(t.header + 1), t.length);
    EventContext ctx{t.core->info().name,        static_cast<Priority>(t.lane), t.header->sequence, t.header->publisher,
                     t.core->clock().to_ns(t.header->timestamp_ns), sub->id};
    if (group) {
        ctx.partition = g->partition;
        ctx.redelivered = g->redelivered;
        if (sub->handler.key) {
            try {
                if (sub->handler.key(sub->handler.state, bytes) % sub->parts.size() != g->partition) bump(counters_.misrouted);
            } catch (...) {
                bump(counters_.filter_exceptions);
            }
        }
    }
    if (sub->handler.filter) {
        bool pass = false;
        try {
            pass = sub->handler.filter(sub->handler.state, bytes, ctx);
        } catch (...) {
            bump(counters_.filter_exceptions);
        }
        if (!pass) {
            release();
            bump(counters_.filtered_out);
            return;
        }
    }
    const std::uint32_t slot = free_.back();
    free_.pop_back();
    Work& w = slots_[slot];
    w.sub = sub;
    w.ctx = ctx;
    w.lane = t.lane;
    w.queue = cfg_.enable_priority ? t.lane : 0;
    w.next = kNoSlot;
    if (cfg_.enable_zero_copy) {
        w.data = bytes.data();
        w.length = t.length;
    } else {
        if (w.copy_capacity < t.length) [[unlikely]]  // a record beyond the topic's announced size: cannot be
            fit_copy(w);
        const std::uint32_t n = static_cast<std::uint32_t>(std::min<std::size_t>(t.length, w.copy_capacity));
        std::memcpy(w.copy, bytes.data(), n);
        w.data = w.copy;
        w.length = n;
    }
    // Zero-copy: held until the handler returned (complete()). Copy mode: released at once, so the
    // lane's publishers need not wait for the handler; except a group's, held in both modes: released
    // means done for the group (a member that dies has it redelivered, a handover starts after it).
    if (cfg_.enable_zero_copy || group) {
        w.core = t.core;
        w.held = true;
        ++held_;
    } else {
        w.held = false;
        release();
    }
    ++in_flight_;
    ++sub->in_flight;
    bump(counters_.dispatched[t.lane & 3]);
    if (group) {  // one handler of a partition at a time: the others wait for it, in the order taken
        auto& p = sub->parts[g->partition];
        if (p.busy) {
            if (p.tail == kNoSlot) p.head = slot;
            else slots_[p.tail].next = slot;
            p.tail = slot;
            return;
        }
        p.busy = true;
    }
    batch_.push_back(slot);
}

void BusCore::hand_out(std::vector<std::uint32_t>& slots) noexcept {
    if (slots.empty()) return;
    if (!cfg_.enable_priority) {  // one lane: the round in publish order, whatever lane each came on
        // Insertion sort, stable and allocation-free; a round is at most batch_size and mostly in order.
        for (std::size_t i = 1; i < slots.size(); ++i)
            for (std::size_t j = i; j > 0 && slots_[slots[j]].ctx.timestamp_ns < slots_[slots[j - 1]].ctx.timestamp_ns; --j)
                std::swap(slots[j], slots[j - 1]);
    }
    for (auto slot : slots) (void)ready_[slots_[slot].queue]->push(slot);  // never full: as many places as slots
    // Dekker with the worker's idle wait (work): it counts itself idle, then reads the epoch, then looks
    // at the queues; we push, bump the epoch, then read the idle count (all seq_cst). Either it sees our
    // slots, or we see it idle and wake it.
    work_epoch_.fetch_add(1);
    if (const auto idle = idle_workers_.load()) {
        if (slots.size() > 1 && idle > 1) work_epoch_.notify_all();
        else work_epoch_.notify_one();
    }
}

void BusCore::reap() noexcept {
    std::uint32_t slot;
    for (auto& w : workers_)
        while (w->done.pop(slot)) complete(slot);  // acquire inside: pairs with the worker's push
    hand_out(unblocked_);  // group partitions' next events, now that the previous one's handler returned
    unblocked_.clear();
}

bool BusCore::completions_waiting() const noexcept {
    return std::ranges::any_of(workers_, [](const auto& w) { return w->done.read_available() > 0; });
}

void BusCore::complete(std::uint32_t slot) noexcept {
    Work& w = slots_[slot];
    if (w.held) {
        w.core->release(w.lane);  // here, on the thread that took it: SubscriberCore is not thread-safe
        --held_;
    }
    w.held = false;
    Subscription& sub = *w.sub;
    w.sub = nullptr;
    if (sub.group) {  // the partition's next event, if one waits, goes out now
        auto& p = sub.parts[w.ctx.partition];
        if (p.head != kNoSlot) {
            const std::uint32_t next = p.head;
            p.head = slots_[next].next;
            if (p.head == kNoSlot) p.tail = kNoSlot;
            slots_[next].next = kNoSlot;
            unblocked_.push_back(next);
        } else {
            p.busy = false;
        }
    }
    --in_flight_;
    if (--sub.in_flight == 0 && sub.closing) finish_unsubscribe(sub);
    if (!cfg_.enable_zero_copy && w.copy_capacity < copy_size_) fit_copy(w);
    free_.push_back(slot);
}

void BusCore::finish_unsubscribe(Subscription& sub) noexcept {
    if (sub.group) {
        unwatch(sub);
        retired_wakeups_ += sub.group->wakeups();
        sub.group.reset();  // leaves the group: the broker passes its partitions, settled, to the others
        if (sub.closed) sub.closed->set_value({});
        --closing_;
        std::erase_if(groups_, [&](const auto& g) { return g.get() == &sub; });
        next_source_ = 0;
        return;
    }
    const std::size_t index = sub.index;
    auto st = set_.remove(index);  // nothing of it is held now
    if (sub.closed) sub.closed->set_value(std::move(st));
    --closing_;
    subs_[index].reset();  // its handler goes, on this thread
}

void BusCore::note_drained() {
    if (drained_noted_) return;
    drained_noted_ = true;
    // Stopped and nothing in flight: close the subscriptions, so that the rings no longer wait for this bus.
    for (auto& s : subs_)
        if (s) {
            (void)set_.remove(s->index);
            if (s->closed) s->closed->set_value({});
            s.reset();
        }
    for (auto& g : groups_) {  // and leave the groups: the other members take the partitions over
        unwatch(*g);
        retired_wakeups_ += g->group->wakeups();
        g->group.reset();
        if (g->closed) g->closed->set_value({});
    }
    groups_.clear();
    {
        std::lock_guard lk(cmd_mutex_);
        drained_ = true;
    }
    drained_cv_.notify_all();
}

void BusCore::fit_copy(Work& w) {
    if (w.copy_capacity >= copy_size_) return;
    if (w.copy) ::operator delete(w.copy, std::align_val_t(64));
    w.copy = static_cast<std::byte*>(::operator new(copy_size_, std::align_val_t(64)));  // typed views need alignof(T) <= 32
    w.copy_capacity = copy_size_;
}

// Sleeps until events come (not while at the limit or stopping: they stay in the rings), a command
// comes, or — when it matters — a handler returns: at the limit, while draining (unsubscribe,
// shutdown), and in zero-copy mode, where a return gives ring space back.
void BusCore::park() noexcept {
    const bool at_limit = in_flight_ >= cfg_.max_concurrent_dispatches;
    // held_: a return gives a ring record back (zero-copy; groups' always), and lets a group
    // partition's next event out.
    const bool want = in_flight_ > 0 && (held_ > 0 || at_limit || stopping_ || closing_ > 0);
    const bool groups = std::ranges::any_of(groups_, [](const auto& g) { return !g->closing; });
    const bool events = !at_limit && !stopping_ && (set_.size() > 0 || groups);
    if (events && poll_ && set_.size() > 0) {
        auto armed = set_.prepare_poll();
        if (!armed) poll_ = false;  // the descriptor failed: wait the fallback way from now on
        else if (!*armed) return;   // an event is waiting already
    }
    // Each group's descriptor, armed over the partitions it holds now (its mail comes on wake_fd_).
    for (auto& g : groups_) {
        if (!events || !poll_) break;
        if (g->closing) continue;
        auto armed = g->group->prepare_poll();
        if (!armed) poll_ = false;
        else if (!*armed) return;
    }
    if (want) {
        parked_.store(true);
        // Dekker with the worker (run): it pushes its completion, fence, reads parked_; we store parked_,
        // fence, look at the completion queues. Either it sees us parked and wakes us, or we see its slot.
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (completions_waiting()) {
            parked_.store(false);
            return;
        }
    }
    if (events && !poll_) {
        // No descriptor (before Linux 6.7): wait on the set, a bounded time so that commands, completions
        // and groups' events (looked at once per nap) are seen.
        const auto nap = want ? std::chrono::nanoseconds(kFallbackShortNap) : std::chrono::nanoseconds(kFallbackNap);
        if (set_.size() > 0) {
            auto r = set_.next_for(nap);
            if (r && *r) first_ = *r;
            else if (!r && r.error().code == Errc::lagged) bump(counters_.lagged, set_.at(set_.last_error_index())->last_missed());
            else if (!r && r.error().code == Errc::corrupt) bump(counters_.corrupt);
        } else {
            pollfd p{wake_fd_, POLLIN, 0};
            (void)::poll(&p, 1, int(std::max<std::int64_t>(1, std::chrono::duration_cast<std::chrono::milliseconds>(nap).count())));
        }
    } else if (events) {  // the descriptors armed (set_'s, the groups'), and wake_fd_
        epoll_event evs[8];
        while (::epoll_wait(epoll_, evs, 8, -1) < 0 && errno == EINTR) {
        }
    } else {  // not the set's descriptor: it may still be armed from before, and would not let us sleep
        pollfd p{wake_fd_, POLLIN, 0};
        while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
        }
    }
    parked_.store(false);
    std::uint64_t v;
    (void)!::read(wake_fd_, &v, sizeof v);  // non-blocking: resets the eventfd
    counters_.wakeups.store(wakeups(), std::memory_order_relaxed);  // relaxed: single writer, read by stats()
}

// ------------------------------------------------------------------------------------------------------
// Workers.

void BusCore::work(Worker& me) noexcept {
    bus_worker_of = this;
    std::uint32_t slot;
    bool non_critical = false;  // the last one run was: take() gives its place back
    for (;;) {
        if (take(slot, non_critical)) {
            run(me, slot);
            continue;
        }
        // Idle. Dekker with hand_out: count ourselves idle, read the epoch, look again, then wait for
        // the epoch to move.
        idle_workers_.fetch_add(1);
        const auto epoch = work_epoch_.load();
        if (take(slot, non_critical)) {
            idle_workers_.fetch_sub(1);
            run(me, slot);
            continue;
        }
        if (workers_stop_.load()) {
            idle_workers_.fetch_sub(1);
            return;
        }
        work_epoch_.wait(epoch);
        idle_workers_.fetch_sub(1);
    }
}

// The next work item: Critical whenever there is one; other lanes, highest first, only while fewer than
// non_critical_cap_ workers run non-Critical handlers (so one worker is always free for Critical).
bool BusCore::take(std::uint32_t& slot, bool& ran_non_critical) noexcept {
    std::lock_guard lk(take_mutex_);
    if (ran_non_critical) {
        --non_critical_running_;
        ran_non_critical = false;
    }
    if (ready_[0]->pop(slot)) return true;  // acquire inside: pairs with the dispatcher's push
    if (non_critical_running_ >= non_critical_cap_) return false;
    for (std::size_t q = 1; q < ready_.size(); ++q) {
        if (ready_[q]->pop(slot)) {
            ++non_critical_running_;
            ran_non_critical = true;
            return true;
        }
    }
    return false;
}

void BusCore::run(Worker& me, std::uint32_t slot) noexcept {
    constexpr auto rx = std::memory_order_relaxed;  // our own single-writer counters, read by stats()
    const Work& w = slots_[slot];
    const std::int64_t start = shm::monotonic_ns();
    me.started_ns.store(start, rx);
    if (abandon_.load()) {
        me.skipped.store(me.skipped.load(rx) + 1, rx);
    } else {
        try {
            w.sub->handler.call(w.sub->handler.state, std::span<const std::byte>(w.data, w.length), w.ctx);
        } catch (...) {
            me.exceptions.store(me.exceptions.load(rx) + 1, rx);
        }
        const std::int64_t took = shm::monotonic_ns() - start;
        if (cfg_.default_timeout.count() > 0 && took > std::chrono::nanoseconds(cfg_.default_timeout).count())
            me.timeouts.store(me.timeouts.load(rx) + 1, rx);
        if (took > me.longest_ns.load(rx)) me.longest_ns.store(took, rx);
        me.completed.store(me.completed.load(rx) + 1, rx);
    }
    me.started_ns.store(0, rx);
    while (!me.done.push(slot)) {  // release inside: pairs with reap's pop. Never full (one place per slot).
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);  // Dekker with park(): see there
    if (parked_.load(rx) && parked_.exchange(false)) {   // relaxed: the fence above orders it; the exchange decides
        me.wakes.store(me.wakes.load(rx) + 1, rx);
        wake();
    }
}

}  // namespace rvoip::events::detail
