// Topics and slots: the requests that create, grant, reclaim and release them.
#include "daemon/broker_impl.hpp"

#include <thread>

#include <sys/epoll.h>

namespace rvoip::events::daemon {

Status Broker::Impl::on_open_topic(Session& s, std::uint64_t corr, const proto::OpenTopic& o) {
    if (auto ok = proto::validate_topic_name(o.topic); !ok) return ok;
    const auto& fp = o.fingerprint;
    if (fp.kind == layout::Kind::typed && (fp.size == 0 || fp.align == 0))
        return fail(Errc::invalid_argument, "typed fingerprint " + describe(fp) + " has no size or alignment");
    const std::uint8_t rights = cfg.access.rights(s.peer, o.topic);
    if (!(rights & (kPublish | kSubscribe)))
        return fail(Errc::permission_denied, "topic '" + o.topic + "': " + describe(s.peer) + " may neither publish nor subscribe");
    if (auto it = topic_ids.find(o.topic); it != topic_ids.end()) {
        Topic& t = *topics[it->second - 1];
        if (!(t.fingerprint == fp))
            return fail(Errc::schema_mismatch, "topic '" + t.name + "' carries " + describe(t.fingerprint) +
                                                   "; this client offered " + describe(fp));
        reply(s, corr, proto::TopicOk{t.id, false, t.lanes});
        return {};
    }
    if (auto ok = allowed(s, o.topic, kCreate, "create it"); !ok) return ok;
    if (auto ok = admit_topic(s, o); !ok) return ok;
    // The operator's settings for this name outrank its creator's: the configuration file's [[topic]]
    // entries first, then the access rules' `lanes` lines.
    const TopicLanes* fixed = find_topic_lanes(cfg.topics, o.topic);
    if (!fixed) fixed = cfg.access.lanes(o.topic);
    const auto lanes = decide_lanes(cfg.defaults, o.lanes, fixed);
    for (std::size_t l = 0; l < layout::kLanes; ++l) {
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
    const std::uint64_t bytes = shm::topic_data_size(lanes) + layout::cursors_size(layout::kMaxSubscribers) +
                                layout::doorbells_size(layout::kMaxSubscribers);
    if (auto ok = admit_shm(o.topic, bytes); !ok) return ok;
    auto data = create_segment(o.topic + ".data", shm::topic_data_size(lanes));
    if (!data) return std::unexpected(data.error());
    auto cursors = create_segment(o.topic + ".cursors", layout::cursors_size(layout::kMaxSubscribers));
    if (!cursors) return std::unexpected(cursors.error());
    auto bells = create_segment(o.topic + ".bells", layout::doorbells_size(layout::kMaxSubscribers));
    if (!bells) return std::unexpected(bells.error());
    account_shm(bytes);
    ++s.topics_created;
    t->data = std::move(*data);
    t->cursors = std::move(*cursors);
    t->bell_segment = std::move(*bells);
    shm::format_topic(t->data.bytes(), o.topic, t->id, fp, lanes);
    shm::format_cursors(t->cursors.bytes(), t->id);
    shm::format_doorbells(t->bell_segment.bytes(), layout::kMaxSubscribers, doorbells.clock.calibration());
    auto map = shm::attach(t->data.bytes(), t->cursors.bytes());
    if (!map) return std::unexpected(map.error().context("freshly created topic"));
    auto bell_map = shm::attach_doorbells(t->bell_segment.bytes());
    if (!bell_map) return std::unexpected(bell_map.error().context("freshly created topic"));
    t->map = *map;
    t->bells = *bell_map;
    keep({&t->data, &t->cursors, &t->bell_segment});  // formatted: a restarted broker finds them whole
    log->info("topic '{}' created by client {} '{}': {}, lanes {}/{}/{}/{} bytes", o.topic, s.id, s.name, describe(fp),
              lanes[0].capacity, lanes[1].capacity, lanes[2].capacity, lanes[3].capacity);
    reply(s, corr, proto::TopicOk{t->id, true, lanes});
    topic_ids.emplace(o.topic, t->id);
    topics.push_back(std::move(t));
    return {};
}

Result<Topic*> Broker::Impl::find_topic(std::uint32_t id) {
    if (id == 0 || id > topics.size()) return fail(Errc::no_such_topic, "no topic with id " + std::to_string(id));
    return topics[id - 1].get();
}

// The topic `id` for a client about to join it in a role that needs `right`: it exists, the client
// may, and its segments are whole.
Result<Topic*> Broker::Impl::topic_to_join(const Session& s, std::uint32_t id, Right right, std::string_view operation) {
    auto t = find_topic(id);
    if (!t) return t;
    if (auto ok = allowed(s, (*t)->name, right, operation); !ok) return std::unexpected(ok.error());
    if (!intact(**t))
        return fail(Errc::corrupt, "topic '" + (*t)->name + "' is damaged (a segment was truncated): nothing more is served on it");
    return t;
}

// New descriptors of the topic's data, cursors and doorbells, with the access `role` is allowed: a
// publisher writes the data and reads the cursors, a subscriber the other way round; both ring.
Result<std::array<int, 3>> Broker::Impl::topic_fds(const Topic& t, proto::Role role) {
    const bool pub = role == proto::Role::publisher;
    std::array<int, 3> fds{-1, -1, -1};
    const std::array<std::pair<const shm::Segment*, shm::Access>, 3> want{
        {{&t.data, pub ? shm::Access::read_write : shm::Access::read_only},
         {&t.cursors, pub ? shm::Access::read_only : shm::Access::read_write},
         {&t.bell_segment, shm::Access::read_write}}};
    for (std::size_t i = 0; i < want.size(); ++i) {
        auto fd = want[i].first->dup_fd(want[i].second);
        if (!fd) {
            for (std::size_t j = 0; j < i; ++j) ::close(fds[j]);
            return std::unexpected(fd.error());
        }
        fds[i] = *fd;
    }
    return fds;
}

Status Broker::Impl::on_add_publisher(Session& s, std::uint64_t corr, const proto::AddPublisher& a) {
    auto t = topic_to_join(s, a.topic_id, kPublish, "publish");
    if (!t) return std::unexpected(t.error());
    Topic& topic = **t;
    if (auto ok = admit_publisher(s); !ok) return ok;
    // The Critical lane needs its own right. The library keeps to it; the ring itself cannot (one
    // mapping holds every lane): docs/security.md says what that leaves.
    std::uint8_t lanes = (cfg.access.rights(s.peer, topic.name) & kCritical) ? 0xf : 0xe;
    auto taken = exclusive_conflict(topic, a.exclusive, lanes);
    if (!taken) return std::unexpected(taken.error());
    lanes &= std::uint8_t(~*taken);
    auto it = std::find(topic.publisher_owner.begin(), topic.publisher_owner.end(), kNoOwner);
    if (it == topic.publisher_owner.end())
        return fail(Errc::limit_reached, "topic '" + topic.name + "' already has 64 publishers");
    auto slot = std::uint32_t(it - topic.publisher_owner.begin());
    auto fds = topic_fds(topic, proto::Role::publisher);
    if (!fds) return std::unexpected(fds.error());
    *it = s.id;
    shm::claim_publisher(topic.map, slot, std::uint32_t(s.pid));
    topic.publisher_lanes[slot] = lanes;
    // Marked before the reply: the publisher's first plain-store claim comes after every parking
    // consumer can see that the lane needs its membarrier.
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        if (a.exclusive & (1u << l)) {
            topic.exclusive[l] = slot + 1;
            topic.map.lanes[l].exclusive.store(slot + 1);
        }
    test_delay();
    s.publishers.push_back({topic.id, slot});
    log->debug("client {} publishes on '{}' (slot {}, lanes {:#x}, alone on {:#x})", s.id, topic.name, slot, lanes, a.exclusive);
    reply(s, corr, proto::PublisherOk{topic.id, slot, lanes, *taken}, std::vector<int>(fds->begin(), fds->end()));
    return {};
}

// Exclusive lanes (proto::AddPublisher::exclusive): the lanes among `granted` another publisher holds
// alone (withheld from a new publisher), or why `wanted` cannot be held alone: not granted, held
// already, or another publisher of the topic may publish there.
Result<std::uint8_t> Broker::Impl::exclusive_conflict(const Topic& t, std::uint8_t wanted, std::uint8_t granted) const {
    auto lane_name = [&](std::size_t l) { return "topic '" + t.name + "' " + std::string(to_string(Priority(l))) + " lane"; };
    std::uint8_t held = 0;
    for (std::size_t l = 0; l < layout::kLanes; ++l) {
        if (t.exclusive[l] == 0) continue;
        held |= std::uint8_t(1u << l);
        if (wanted & (1u << l)) {
            const std::uint32_t holder = t.exclusive[l] - 1;
            return fail(Errc::lane_taken, lane_name(l) + ": publisher slot " + std::to_string(holder) + " (pid " +
                                              std::to_string(t.map.publishers[holder].pid) + ") holds it alone");
        }
    }
    for (std::size_t l = 0; l < layout::kLanes; ++l) {
        if (!(wanted & (1u << l))) continue;
        if (!(granted & (1u << l)))
            return fail(Errc::permission_denied, lane_name(l) + ": this client may not publish on it, so cannot hold it alone");
        std::uint32_t others = 0, first = 0;
        for (std::uint32_t i = 0; i < t.map.max_publishers; ++i)
            if (t.publisher_owner[i] != kNoOwner && (t.publisher_lanes[i] & (1u << l)) && others++ == 0) first = i;
        if (others)
            return fail(Errc::lane_taken, lane_name(l) + ": " + std::to_string(others) + " other publisher(s) may publish on it (slot " +
                                              std::to_string(first) + ", pid " + std::to_string(t.map.publishers[first].pid) +
                                              "): an exclusive publisher needs it alone");
    }
    return std::uint8_t(granted & held);
}

Status Broker::Impl::on_add_subscriber(Session& s, std::uint64_t corr, const proto::AddSubscriber& a) {
    auto t = topic_to_join(s, a.topic_id, kSubscribe, "subscribe");
    if (!t) return std::unexpected(t.error());
    Topic& topic = **t;
    if (auto ok = admit_subscriber(s); !ok) return ok;
    auto it = std::find(topic.subscriber_owner.begin(), topic.subscriber_owner.end(), kNoOwner);
    if (it == topic.subscriber_owner.end())
        return fail(Errc::limit_reached, "topic '" + topic.name + "' already has 64 subscribers");
    if (a.doorbell != layout::kNoDoorbell)
        return fail(Errc::invalid_argument, "add_subscriber: a subscriber's doorbell is its slot's in the topic's doorbell segment; ask for none");
    auto fds = topic_fds(topic, proto::Role::subscriber);
    if (!fds) return std::unexpected(fds.error());
    auto slot = std::uint32_t(it - topic.subscriber_owner.begin());
    const std::uint32_t bell = slot;  // bell i of the topic's doorbell segment is slot i's
    *it = s.id;
    topic.subscriber_doorbell[slot] = bell;
    auto start = shm::join_subscriber(topic.map, slot, bell, std::uint32_t(s.pid));
    monitor.joined(topic.id, topic.map, slot, shm::monotonic_ns());
    test_delay();
    s.subscribers.push_back({topic.id, slot});
    log->debug("client {} subscribes to '{}' (slot {}, doorbell {})", s.id, topic.name, slot, bell);
    reply(s, corr, proto::SubscriberOk{topic.id, slot, bell, start}, std::vector<int>(fds->begin(), fds->end()));
    return {};
}

void Broker::Impl::test_delay() const {
    if (cfg.test_slot_reply_delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(cfg.test_slot_reply_delay_ms));
}

Status Broker::Impl::on_reclaim(Session& s, std::uint64_t corr, const proto::Reclaim& r) {
    const bool pub = r.role == proto::Role::publisher;
    const std::string what = std::string(pub ? "publisher" : "subscriber") + " slot " + std::to_string(r.slot) + " of topic '" + r.topic + "'";
    auto it = topic_ids.find(r.topic);
    if (it == topic_ids.end()) return fail(Errc::no_such_topic, "cannot reclaim " + what + ": this broker holds no such topic (its segments were not adopted)");
    Topic& t = *topics[it->second - 1];
    if (auto ok = allowed(s, t.name, pub ? kPublish : kSubscribe, pub ? "publish" : "subscribe"); !ok) return ok;
    if (t.map.record_key != r.record_key)  // the key read at creation or adoption: the header is publishers' to write
        return fail(Errc::no_such_topic, "cannot reclaim " + what + ": the topic was created anew since this client mapped it");
    if (r.slot >= (pub ? t.map.max_publishers : t.map.max_subscribers))
        return fail(Errc::invalid_argument, "cannot reclaim " + what + ": no such slot");
    auto& owners = pub ? t.publisher_owner : t.subscriber_owner;
    if (owners[r.slot] == s.id) {  // already ours: a repeated reclaim
        reply(s, corr, proto::ReclaimOk{t.id});
        return {};
    }
    auto from_it = std::find_if(orphans.begin(), orphans.end(), [&](auto& o) { return o->id == owners[r.slot]; });
    if (from_it == orphans.end() || (*from_it)->exited || !valid_pid(s.pid) || (*from_it)->pid != s.pid)
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
    log->info("client {} '{}' (pid {}) reclaimed {} (topic id {})", s.id, s.name, s.pid, what, t.id);
    if (from.publishers.empty() && from.subscribers.empty()) {
        if (from.pidfd >= 0) ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, from.pidfd, nullptr);
        close_session_fds(from);
        orphans.erase(from_it);
        arm_timer(timer_needed());
    }
    reply(s, corr, proto::ReclaimOk{t.id});
    return {};
}

Status Broker::Impl::on_remove_publisher(Session& s, std::uint64_t corr, const proto::RemovePublisher& r) {
    if (!take_slot(s.publishers, r.topic_id, r.slot))
        return fail(Errc::permission_denied, "publisher slot " + std::to_string(r.slot) + " of topic " +
                                                 std::to_string(r.topic_id) + " does not belong to this client");
    release_publisher_slot(*topics[r.topic_id - 1], r.slot);
    reply(s, corr, proto::Ok{});
    return {};
}

Status Broker::Impl::on_remove_subscriber(Session& s, std::uint64_t corr, const proto::RemoveSubscriber& r) {
    if (is_group_slot(r.topic_id, r.slot))
        return fail(Errc::invalid_argument, "subscriber slot " + std::to_string(r.slot) + " of topic " + std::to_string(r.topic_id) +
                                                " is a consumer group's cursor: leave the group instead");
    if (!take_slot(s.subscribers, r.topic_id, r.slot))
        return fail(Errc::permission_denied, "subscriber slot " + std::to_string(r.slot) + " of topic " +
                                                 std::to_string(r.topic_id) + " does not belong to this client");
    release_subscriber_slot(*topics[r.topic_id - 1], r.slot);
    reply(s, corr, proto::Ok{});
    return {};
}

Status Broker::Impl::allowed(const Session& s, std::string_view topic, Right right, std::string_view operation) const {
    if (cfg.access.rights(s.peer, topic) & right) return {};
    return fail(Errc::permission_denied, "topic '" + std::string(topic) + "': " + describe(s.peer) + " may not " + std::string(operation));
}

Status Broker::Impl::on_stats(Session& s, std::uint64_t corr) {
    proto::StatsReply r;
    r.clients = std::uint32_t(sessions.size());
    for (auto& t : topics) {
        if (r.topics.size() >= proto::kMaxStatsEntries) break;
        if (!(cfg.access.rights(s.peer, t->name) & (kPublish | kSubscribe))) continue;  // not even its name
        proto::TopicStats ts;
        ts.topic = t->name;
        ts.topic_id = t->id;
        ts.publishers = t->publishers_held();
        ts.subscribers = t->subscribers_held();
        if (intact(*t))
            for (std::size_t l = 0; l < layout::kLanes; ++l) ts.tails[l] = t->map.lanes[l].position(std::memory_order_relaxed);  // relaxed: a report
        ts.evictions = monitor.evictions(t->id);
        r.topics.push_back(std::move(ts));
    }
    reply(s, corr, std::move(r));
    return {};
}

bool Broker::Impl::intact(Topic& t) {
    if (t.damaged) return false;
    if (t.data.intact() && t.cursors.intact() && t.bell_segment.intact()) return true;
    t.damaged = true;
    log->error("topic '{}': a segment was truncated by a client holding a writable descriptor; the broker no longer touches "
               "its rings and serves nothing more on it (its clients may fault; other topics are not affected)",
               t.name);
    return false;
}

void Broker::Impl::release_publisher_slot(Topic& t, std::uint32_t slot) {
    if (intact(t)) {
        for (std::size_t l = 0; l < layout::kLanes; ++l)  // relaxed: its owner's counters, for reports
            t.published_retired[l] += t.map.publishers[slot].published[l].load(std::memory_order_relaxed);
        shm::release_publisher(t.map, slot);
    }
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        if (t.exclusive[l] == slot + 1) {
            t.exclusive[l] = 0;
            if (intact(t)) t.map.lanes[l].exclusive.store(0);
        }
    t.publisher_lanes[slot] = 0;
    t.publisher_owner[slot] = kNoOwner;
}

void Broker::Impl::release_subscriber_slot(Topic& t, std::uint32_t slot) {
    if (intact(t)) shm::leave_subscriber(t.map, slot);
    t.subscriber_owner[slot] = kNoOwner;
    monitor.left(t.id, slot);
}

}  // namespace rvoip::events::daemon
