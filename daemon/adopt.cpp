// Re-adoption: a starting broker takes over the segments a previous one left under its prefix.
#include "daemon/broker_impl.hpp"

#include <cstring>
#include <filesystem>

namespace rvoip::events::daemon {

void Broker::Impl::move_aside(const std::string& name, const std::string& why) {
    const std::string to = name + ".rejected-" + std::to_string(::time(nullptr));
    std::error_code ec;
    std::filesystem::rename(shm_path(name), shm_path(to), ec);
    log->error("cannot adopt segment '{}': {}; moved aside to '{}'{}", name, why, to, ec ? " (failed: " + ec.message() + ")" : "");
}

bool Broker::Impl::adopt_doorbells() {
    const std::string name = segment_name("doorbells");
    if (!std::filesystem::exists(shm_path(name))) return false;
    auto seg = shm::Segment::open(name, shm::Access::read_write);
    if (!seg) {
        move_aside(name, seg.error().what());
        return false;
    }
    auto map = shm::attach_doorbells(seg->bytes());
    if (!map) {
        move_aside(name, map.error().what());
        return false;
    }
    doorbell_segment = std::move(*seg);
    doorbells = *map;
    if (doorbells.count != cfg.doorbells)
        log->warn("adopted doorbell segment '{}' has {} doorbells (configured: {}); keeping {}", name, doorbells.count,
                  cfg.doorbells, doorbells.count);
    cfg.doorbells = doorbells.count;
    log->info("adopted doorbell segment '{}' ({} doorbells)", name, doorbells.count);
    return true;
}

Session& Broker::Impl::adopted_session(pid_t pid, std::unordered_map<pid_t, Session*>& by_pid) {
    if (auto it = by_pid.find(pid); it != by_pid.end()) return *it->second;
    auto s = std::make_unique<Session>();
    s->id = next_client_id++;
    s->pid = pid;
    s->pidfd = pidfd_open(pid);
    s->name = "adopted";
    s->greeted = true;
    s->adopted_ns = shm::monotonic_ns();
    if (s->pidfd >= 0) watch(s->pidfd);
    by_pid[pid] = s.get();
    orphans.push_back(std::move(s));
    return *orphans.back();
}

void Broker::Impl::adopt_topics() {
    std::vector<std::string> names;
    std::error_code ec;
    const std::string head = cfg.shm_prefix + ".", tail = ".data";
    for (auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) {
        const std::string f = e.path().filename().string();
        if (f.size() > head.size() + tail.size() && f.starts_with(head) && f.ends_with(tail))
            names.push_back(f.substr(head.size(), f.size() - head.size() - tail.size()));
    }
    std::sort(names.begin(), names.end());
    std::unordered_map<pid_t, Session*> by_pid;
    for (const auto& topic : names) adopt_topic(topic, by_pid);
    reap();  // recovers and releases what dead processes held
}

void Broker::Impl::adopt_topic(const std::string& topic, std::unordered_map<pid_t, Session*>& by_pid) {
    const std::string data_name = segment_name(topic + ".data"), cursors_name = segment_name(topic + ".cursors"),
                      bells_name = segment_name(topic + ".bells");
    if (!proto::validate_topic_name(topic)) return move_aside(data_name, "'" + topic + "' is not a valid topic name");
    // The ceiling, not the configured max_topics: a lowered limit refuses new topics, never moves aside
    // rings that clients are using.
    if (topics.size() >= kMaxTopicsCeiling)
        return move_aside(data_name, "the broker holds its maximum of " + std::to_string(kMaxTopicsCeiling) + " topics");
    auto data = shm::Segment::open(data_name, shm::Access::read_write);
    if (!data) return move_aside(data_name, data.error().what());
    auto cursors = shm::Segment::open(cursors_name, shm::Access::read_write);
    if (!cursors) return move_aside(data_name, "its cursor segment: " + cursors.error().what());
    auto map = shm::attach(data->bytes(), cursors->bytes());
    if (!map) {
        move_aside(cursors_name, map.error().what());
        return move_aside(data_name, map.error().what());
    }
    // Its doorbells: adopted like the rings (clients parked on them keep them); one that does not
    // validate makes the whole topic unadoptable, since its parties would ring and wait on two.
    auto bells = shm::Segment::open(bells_name, shm::Access::read_write);
    auto bell_map = bells ? shm::attach_doorbells(bells->bytes()) : Result<shm::DoorbellMap>(std::unexpected(bells.error()));
    if (bell_map && bell_map->count < map->max_subscribers)
        bell_map = fail(Errc::corrupt, "it has " + std::to_string(bell_map->count) + " doorbells for " +
                                           std::to_string(map->max_subscribers) + " subscriber slots");
    if (!bell_map) {
        if (bells) move_aside(bells_name, bell_map.error().what());
        move_aside(cursors_name, "its doorbell segment: " + bell_map.error().what());
        return move_aside(data_name, "its doorbell segment: " + bell_map.error().what());
    }
    if (map->header->name != topic) {
        move_aside(bells_name, "its topic's header names another topic");
        move_aside(cursors_name, "it belongs to topic '" +
                                     proto::printable_excerpt({map->header->name, ::strnlen(map->header->name, sizeof map->header->name)}) + "'");
        return move_aside(data_name, "its header names another topic");
    }
    auto t = std::make_unique<Topic>();
    t->id = std::uint32_t(topics.size() + 1);
    // The ids are the broker's numbering of its topics: renumbered here, in both headers alike.
    map->header->topic_id = t->id;
    map->cursor_header->topic_id = t->id;
    t->name = topic;
    t->fingerprint = map->header->fingerprint;
    t->lanes = map->settings;
    account_shm(data->bytes().size() + cursors->bytes().size() + bells->bytes().size());
    t->data = std::move(*data);
    t->cursors = std::move(*cursors);
    t->bell_segment = std::move(*bells);
    t->map = *map;
    t->bells = *bell_map;
    std::uint32_t live_pubs = 0, live_subs = 0, dead = 0;
    for (std::uint32_t i = 0; i < t->map.max_publishers; ++i) {
        auto& e = t->map.publishers[i];
        const auto st = static_cast<layout::SlotState>(e.state.load());
        if (st != layout::SlotState::active && st != layout::SlotState::dead) continue;
        // Any pid may be written there (0, negative, another process's): adopted_session watches it
        // through a pidfd only, and a pid that names no process counts as gone (valid_pid).
        const pid_t pid = pid_t(e.pid);
        Session& s = adopted_session(pid, by_pid);
        t->publisher_owner[i] = s.id;
        s.publishers.push_back({t->id, i});
        if (st == layout::SlotState::dead || process_gone(s.pidfd, pid)) ++dead;
        else ++live_pubs;
    }
    for (std::uint32_t i = 0; i < t->map.max_subscribers; ++i) {
        auto& sl = t->map.slots[i];
        if (sl.state.load() != static_cast<std::uint32_t>(layout::SlotState::active)) continue;
        const pid_t pid = pid_t(sl.pid);
        Session& s = adopted_session(pid, by_pid);
        t->subscriber_owner[i] = s.id;
        t->subscriber_doorbell[i] = i;  // bell i of the topic's own doorbell segment
        s.subscribers.push_back({t->id, i});
        monitor.joined(t->id, t->map, i, shm::monotonic_ns());  // the grace period counts from adoption
        if (const auto e = sl.evictions.load(); e & 1) {  // odd: the previous broker died inside an eviction
            sl.evictions.store(e + 1);
            log->warn("topic '{}': subscriber slot {} (pid {}) was being evicted when the previous broker stopped; "
                      "its next lagged report may be off by that eviction's count", topic, i, pid);
        }
        if (process_gone(s.pidfd, pid)) ++dead;
        else ++live_subs;
    }
    log->info("adopted topic '{}' (id {}): {}, {} live publisher(s), {} live subscriber(s), {} slot(s) of exited processes",
              topic, t->id, describe(t->fingerprint), live_pubs, live_subs, dead);
    topic_ids.emplace(topic, t->id);
    topics.push_back(std::move(t));
}

}  // namespace rvoip::events::daemon
