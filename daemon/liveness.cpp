// Clients that leave or exit: recovery of what they had claimed, release of their slots, the reclaim
// grace period after a restart, and the eviction ticks.
#include "daemon/broker_impl.hpp"

#include <bit>

#include <sys/epoll.h>
#include <sys/timerfd.h>

namespace rvoip::events::daemon {

void Broker::Impl::ring_parked(Topic& t) {
    if (!intact(t)) return;
    std::uint64_t parked = 0;
    for (auto& m : t.map.cursor_header->parked) parked |= m.load();
    while (parked != 0) {
        const auto i = static_cast<std::uint32_t>(std::countr_zero(parked));
        parked &= parked - 1;
        if (i < t.bells.count && t.subscriber_owner[i] != kNoOwner) shm::ring(&t.bells.bells[i].word);
    }
}

void Broker::Impl::evict_stuck() {
    monitor.drain();
    for (auto& t : topics) {
        if (!intact(*t)) continue;
        for (const auto& e : monitor.scan(t->id, t->map, shm::monotonic_ns())) {
            const Session* owner = session_of(t->subscriber_owner[e.slot]);
            if (e.returned) {
                log->info("topic '{}' {} lane: evicted subscriber slot {} (client {} '{}', pid {}) reads again; {} more event(s) "
                          "were skipped for it while it was away",
                          t->name, to_string(Priority(e.lane)), e.slot, t->subscriber_owner[e.slot], owner ? owner->name : "?",
                          owner ? owner->pid : 0, e.missed);
                continue;
            }
            if (e.slot < t->bells.count) shm::ring(&t->bells.bells[e.slot].word);
            log->warn("topic '{}' {} lane: evicted subscriber slot {} (client {} '{}', pid {}): it held the lane's publishers for "
                      "{} ms without reading; {} event(s) ({} bytes) skipped",
                      t->name, to_string(Priority(e.lane)), e.slot, t->subscriber_owner[e.slot], owner ? owner->name : "?",
                      owner ? owner->pid : 0, e.held_ns / 1'000'000, e.missed, e.bytes);
        }
    }
}

const Session* Broker::Impl::session_of(std::uint32_t client) const {
    for (auto& [fd, s] : sessions)
        if (s->id == client) return s.get();
    for (auto& s : orphans)
        if (s->id == client) return s.get();
    return nullptr;
}

void Broker::Impl::disconnect(int fd) {
    auto it = sessions.find(fd);
    if (it == sessions.end()) return;
    auto s = std::move(it->second);
    sessions.erase(it);
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    s->fd = -1;
    if (!accepting) resume_accepting();  // out of descriptors until now: one came back
    log->log(s->greeted ? spdlog::level::info : spdlog::level::debug,
             "client {} '{}' (pid {}) disconnected holding {} publisher(s), {} subscriber(s)", s->id, s->name, s->pid,
             s->publishers.size(), s->subscribers.size());
    group_session_closed(*s);
    if (s->publishers.empty() && s->subscribers.empty()) {
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

void Broker::Impl::reap() {
    const std::int64_t now = shm::monotonic_ns();
    for (auto& s : orphans) {
        if (s->adopted_ns && !s->grace_over && !s->exited && now - s->adopted_ns >= std::int64_t(cfg.reclaim_grace_ms) * 1'000'000 &&
            !process_gone(s->pidfd, s->pid))
            end_grace(*s);
        if (s->exited || !process_gone(s->pidfd, s->pid)) continue;
        s->exited = true;
        if (s->pidfd >= 0) ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s->pidfd, nullptr);
        for (const Slot& p : s->publishers)
            if (intact(*topics[p.topic - 1]))
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
            if (!intact(t)) {  // nothing to recover on rings nobody can use any more
                release_publisher_slot(t, p.slot);
                return true;
            }
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
        group_session_exited(*s);  // its group partitions pass on instead of being released
        for (auto& sub : s->subscribers) release_subscriber_slot(*topics[sub.topic - 1], sub.slot);
        s->subscribers.clear();
        if (!s->publishers.empty()) return false;  // a recovery must be retried
        log->info("released the slots of exited client {} '{}' (pid {})", s->id, s->name, s->pid);
        close_session_fds(*s);
        return true;
    });
    arm_timer(timer_needed());
}

void Broker::Impl::end_grace(Session& s) {
    s.grace_over = true;
    for (auto& sub : s.subscribers) release_subscriber_slot(*topics[sub.topic - 1], sub.slot);
    if (!s.subscribers.empty())
        log->warn("pid {} did not reclaim {} adopted subscriber slot(s) within {} ms: released", s.pid, s.subscribers.size(),
                  cfg.reclaim_grace_ms);
    s.subscribers.clear();
    if (!s.publishers.empty())
        log->warn("pid {} did not reclaim {} adopted publisher slot(s) within {} ms: held until it exits", s.pid,
                  s.publishers.size(), cfg.reclaim_grace_ms);
}

bool Broker::Impl::timer_needed() const {
    return std::any_of(orphans.begin(), orphans.end(),
                       [](auto& s) { return s->exited || s->pidfd < 0 || (s->adopted_ns && !s->grace_over); });
}

void Broker::Impl::tick() {
    std::uint64_t expirations;
    while (::read(timer_fd, &expirations, sizeof expirations) > 0) {
    }
    reap();
}

void Broker::Impl::arm_timer(bool on) {
    if (on == timer_armed) return;
    itimerspec its{};
    if (on) its.it_interval.tv_nsec = its.it_value.tv_nsec = 50'000'000;  // 50 ms: exit notice latency
    ::timerfd_settime(timer_fd, 0, &its, nullptr);
    timer_armed = on;
}

}  // namespace rvoip::events::daemon
