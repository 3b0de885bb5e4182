// Consumer groups: members join a group on a partitioned topic; the broker deals the partitions over
// them and moves a partition's cursor slot from member to member as they join, leave and die.
//
// A partition has exactly one reader at any time. A live member gives a partition back only when asked
// (group_revoke) and only once it has released every event of it (group_release): the next member
// starts exactly where it stopped, nothing read twice. A member whose process exited cannot answer: its
// partitions pass on at once from their cursors, its last released positions, and everything published
// before that moment is flagged as possibly delivered (redeliver_until = the lanes' tails then).
#include "daemon/broker_impl.hpp"

namespace rvoip::events::daemon {

Session* Broker::Impl::live_session(std::uint32_t client) {
    for (auto& [fd, s] : sessions)
        if (s->id == client) return s.get();
    return nullptr;
}

std::pair<Group*, GroupMember*> Broker::Impl::find_member(std::uint32_t member) {
    for (auto& g : groups)
        for (auto& m : g->members)
            if (m.id == member) return {g.get(), &m};
    return {nullptr, nullptr};
}

bool Broker::Impl::is_group_slot(std::uint32_t topic, std::uint32_t slot) const {
    for (auto& g : groups)
        for (auto& p : g->parts)
            if (p.topic_id == topic && p.slot == slot) return true;
    return false;
}

Status Broker::Impl::on_join_group(Session& s, std::uint64_t corr, const proto::JoinGroup& j) {
    if (auto ok = proto::validate_topic_name(j.topic); !ok) return ok;
    if (j.partitions == 0 || j.partitions > proto::kMaxPartitions)
        return fail(Errc::invalid_argument, "topic '" + j.topic + "': " + std::to_string(j.partitions) + " partitions (1-" +
                                                std::to_string(proto::kMaxPartitions) + ")");
    if (proto::partition_topic(j.topic, j.partitions - 1).size() > layout::kTopicNameMax)
        return fail(Errc::invalid_topic_name, "topic '" + j.topic + "' is too long to be partitioned: its partitions' names ('" +
                                                  proto::partition_topic(j.topic, j.partitions - 1) + "') exceed 63 characters");
    const bool declare = j.group.empty();
    if (!declare)
        if (auto ok = proto::validate_group_name(j.group); !ok) return ok;
    if (auto ok = allowed(s, j.topic, declare ? kPublish : kSubscribe, declare ? "publish" : "subscribe"); !ok) return ok;
    if (auto it = partitioned.find(j.topic); it != partitioned.end() && it->second != j.partitions)
        return fail(Errc::invalid_argument, "topic '" + j.topic + "' is partitioned into " + std::to_string(it->second) +
                                                " partitions; this client asked for " + std::to_string(j.partitions));
    // The partitions are ordinary topics the client opened first (fingerprint and access checked there).
    std::vector<std::uint32_t> ids;
    for (std::uint32_t p = 0; p < j.partitions; ++p) {
        const auto name = proto::partition_topic(j.topic, p);
        auto it = topic_ids.find(name);
        if (it == topic_ids.end()) return fail(Errc::no_such_topic, "topic '" + j.topic + "': partition topic '" + name + "' is not open");
        Topic& t = *topics[it->second - 1];
        if (p > 0 && !(t.fingerprint == topics[ids[0] - 1]->fingerprint))
            return fail(Errc::schema_mismatch, "topic '" + j.topic + "': partition '" + name + "' carries " + describe(t.fingerprint) +
                                                   ", partition 0 " + describe(topics[ids[0] - 1]->fingerprint));
        ids.push_back(t.id);
    }
    partitioned.emplace(j.topic, j.partitions);
    if (declare) {
        reply(s, corr, proto::GroupOk{0, j.partitions});
        return {};
    }
    auto git = std::find_if(groups.begin(), groups.end(), [&](auto& g) { return g->topic == j.topic && g->name == j.group; });
    if (git == groups.end()) {
        auto g = std::make_unique<Group>();
        g->topic = j.topic;
        g->name = j.group;
        for (auto id : ids) g->parts.push_back(GroupPartition{id});
        groups.push_back(std::move(g));
        git = std::prev(groups.end());
    }
    Group& g = **git;
    const std::uint32_t id = next_member_id++;
    g.members.push_back({id, s.id});
    log->info("client {} '{}' (pid {}) joined group '{}' on '{}' as member {} ({} member(s))", s.id, s.name, s.pid, g.name, g.topic,
              id, g.members.size());
    // Assignments first: a new group's cursors exist before the joiner hears back, so that whatever it
    // publishes once joined reaches it. They arrive ahead of the reply, and the library keeps them for
    // the member id the reply names.
    rebalance(g);
    reply(s, corr, proto::GroupOk{id, j.partitions});
    return {};
}

void Broker::Impl::rebalance(Group& g) {
    std::vector<const GroupMember*> live;
    for (auto& m : g.members)
        if (!m.gone) live.push_back(&m);
    if (live.empty()) return;
    for (std::uint32_t p = 0; p < g.parts.size(); ++p) {
        auto& part = g.parts[p];
        const GroupMember& want = *live[p % live.size()];
        if (part.owner == 0) {
            if (!assign(g, p, want)) return;  // want's session is gone: assign() rebalanced without it
            continue;
        }
        if (part.owner == want.id || part.revoking) continue;
        auto [og, owner] = find_member(part.owner);
        Session* os = owner && !owner->gone ? live_session(owner->client) : nullptr;
        if (!os) continue;  // its process is exiting: the partition passes on when it is gone
        part.revoking = true;
        reply(*os, 0, proto::GroupRevoke{part.owner, p});
    }
}

bool Broker::Impl::assign(Group& g, std::uint32_t p, const GroupMember& member) {
    auto& part = g.parts[p];
    Session* ms = live_session(member.client);
    if (!ms) {  // its connection is gone (group_session_closed missed it): give it nothing more
        if (auto [mg, m] = find_member(member.id); m) m->gone = true;
        rebalance(g);
        return false;
    }
    Topic& t = *topics[part.topic_id - 1];
    if (!intact(t)) return true;
    std::array<std::uint64_t, layout::kLanes> start{};
    if (part.slot == kNoSlot) {
        auto it = std::find(t.subscriber_owner.begin(), t.subscriber_owner.end(), kNoOwner);
        if (it == t.subscriber_owner.end()) {
            log->error("group '{}' on '{}': partition topic '{}' has no free subscriber slot; partition {} stays unassigned", g.name,
                       g.topic, t.name, p);
            return true;
        }
        part.slot = std::uint32_t(it - t.subscriber_owner.begin());
        t.subscriber_doorbell[part.slot] = part.slot;
        start = shm::join_subscriber(t.map, part.slot, part.slot, std::uint32_t(ms->pid));
        monitor.joined(t.id, t.map, part.slot, shm::monotonic_ns());
    } else {
        auto& slot = t.map.slots[part.slot];
        for (std::size_t l = 0; l < layout::kLanes; ++l) start[l] = slot.position[l].load();
        slot.pid = std::uint32_t(ms->pid);  // for tools; the slot's counters carry on
        for (auto& m : t.map.cursor_header->parked) m.fetch_and(~(std::uint64_t(1) << part.slot));  // the previous owner's, if it died parked
    }
    auto fds = topic_fds(t, proto::Role::subscriber);
    if (!fds) {
        log->error("group '{}' on '{}': partition {}: {}", g.name, g.topic, p, fds.error().what());
        return true;
    }
    t.subscriber_owner[part.slot] = ms->id;
    ms->subscribers.push_back({t.id, part.slot});
    part.owner = member.id;
    part.revoking = false;
    proto::GroupAssign a{member.id, p, t.id, part.slot, start, part.redeliver_until};
    part.redeliver_until = {};
    log->debug("group '{}' on '{}': partition {} (slot {}) to member {}", g.name, g.topic, p, part.slot, member.id);
    reply(*ms, 0, a, std::vector<int>(fds->begin(), fds->end()));
    return true;
}

void Broker::Impl::drop_member(Group& g, std::uint32_t member, bool died) {
    auto it = std::find_if(g.members.begin(), g.members.end(), [&](auto& m) { return m.id == member; });
    if (it == g.members.end()) return;
    const std::uint32_t client = it->client;
    g.members.erase(it);
    Session* holder = nullptr;
    for (auto& [fd, s] : sessions)
        if (s->id == client) holder = s.get();
    for (auto& o : orphans)
        if (o->id == client) holder = o.get();
    const bool last = std::none_of(g.members.begin(), g.members.end(), [](auto& m) { return !m.gone; });
    for (std::uint32_t p = 0; p < g.parts.size(); ++p) {
        auto& part = g.parts[p];
        if (part.owner != member) continue;
        Topic& t = *topics[part.topic_id - 1];
        if (holder) take_slot(holder->subscribers, t.id, part.slot);
        t.subscriber_owner[part.slot] = kGroupHeld;
        part.owner = 0;
        part.revoking = false;
        if (died && intact(t))
            for (std::size_t l = 0; l < layout::kLanes; ++l) part.redeliver_until[l] = t.map.lanes[l].position();
        if (last) {  // nobody to hand it to: the group's cursor goes, and with it the hold on publishers
            release_subscriber_slot(t, part.slot);
            part.slot = kNoSlot;
            part.redeliver_until = {};
        }
    }
    log->info("group '{}' on '{}': member {} {} ({} member(s) left)", g.name, g.topic, member, died ? "died" : "left", g.members.size());
    if (g.members.empty()) {
        for (auto& part : g.parts)  // a cursor between two owners when the last member went: it goes too
            if (part.slot != kNoSlot && part.owner == 0) release_subscriber_slot(*topics[part.topic_id - 1], part.slot);
        std::erase_if(groups, [&](auto& x) { return x.get() == &g; });
        return;
    }
    rebalance(g);
}

Status Broker::Impl::on_leave_group(Session& s, std::uint64_t corr, const proto::LeaveGroup& l) {
    auto [g, m] = find_member(l.member);
    if (!g || m->client != s.id) return fail(Errc::invalid_argument, "member " + std::to_string(l.member) + " is not this client's");
    reply(s, corr, proto::Ok{});
    drop_member(*g, l.member, false);
    return {};
}

Status Broker::Impl::on_group_release(Session& s, std::uint64_t corr, const proto::GroupRelease& r) {
    auto [g, m] = find_member(r.member);
    if (!g || m->client != s.id) return fail(Errc::invalid_argument, "member " + std::to_string(r.member) + " is not this client's");
    if (r.partition >= g->parts.size() || g->parts[r.partition].owner != r.member || !g->parts[r.partition].revoking)
        return fail(Errc::invalid_argument, "group '" + g->name + "': partition " + std::to_string(r.partition) +
                                                " was not asked back from member " + std::to_string(r.member));
    auto& part = g->parts[r.partition];
    take_slot(s.subscribers, part.topic_id, part.slot);
    topics[part.topic_id - 1]->subscriber_owner[part.slot] = kGroupHeld;
    part.owner = 0;
    part.revoking = false;
    reply(s, corr, proto::Ok{});
    rebalance(*g);
    return {};
}

void Broker::Impl::group_session_closed(const Session& s) {
    std::vector<Group*> touched;
    for (auto& g : groups)
        for (auto& m : g->members)
            if (m.client == s.id && !m.gone) {
                m.gone = true;
                touched.push_back(g.get());
            }
    // Partitions that were on their way to it, or unowned, go elsewhere; its own stay until it exits.
    for (auto* g : touched)
        if (std::any_of(groups.begin(), groups.end(), [&](auto& x) { return x.get() == g; })) rebalance(*g);
}

void Broker::Impl::group_session_exited(Session& s) {
    for (;;) {
        Group* g = nullptr;
        std::uint32_t member = 0;
        for (auto& x : groups)
            for (auto& m : x->members)
                if (m.client == s.id) g = x.get(), member = m.id;
        if (!g) return;
        drop_member(*g, member, true);
    }
}

}  // namespace rvoip::events::daemon
