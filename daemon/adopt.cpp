// Re-adoption: a starting broker takes over the segments a previous one left under its prefix.
#include "daemon/broker_impl.hpp"

#include <cstring>
#include <filesystem>

namespace rvoip::events::daemon {

Result<shm::Segment> Broker::Impl::create_segment(std::string_view what, std::size_t size) const {
    return shm::Segment::create(segment_name(what), size, cfg.segments);
}

void Broker::Impl::keep(std::initializer_list<const shm::Segment*> segments) const {
    if (!cfg.keeper) return;
    for (const auto* s : segments)
        if (s->sealed() && !cfg.keeper->keep(s->name(), s->fd()))
            log->warn("segment '{}' could not be handed to the keeper: a restarted broker will not find it", s->name());
}

void Broker::Impl::discard(const shm::Segment& segment) const {
    if (!segment) return;
    if (!segment.sealed()) shm::Segment::remove(segment.name());
    else if (cfg.keeper) cfg.keeper->forget(segment.name());
}

bool Broker::Impl::left_behind(const std::string& name) const {
    if (cfg.segments == shm::Backing::sealed) return kept.contains(name);
    return std::filesystem::exists(shm_path(name));
}

Result<shm::Segment> Broker::Impl::open_left(const std::string& name) {
    if (cfg.segments == shm::Backing::named) return shm::Segment::open(name, shm::Access::read_write);
    auto it = kept.find(name);
    if (it == kept.end()) return fail(Errc::no_such_topic, "segment '" + name + "' was not handed back by the keeper");
    const int fd = it->second;
    kept.erase(it);
    return shm::Segment::adopt_fd(fd, name);
}

void Broker::Impl::move_aside(const std::string& name, const std::string& why) {
    if (cfg.segments == shm::Backing::sealed) {
        if (auto it = kept.find(name); it != kept.end()) {
            ::close(it->second);
            kept.erase(it);
        }
        if (cfg.keeper) cfg.keeper->forget(name);
        log->error("cannot adopt segment '{}': {}; dropped (its memory is freed once its last client unmaps it)", name, why);
        return;
    }
    const std::string to = name + ".rejected-" + std::to_string(::time(nullptr));
    std::error_code ec;
    std::filesystem::rename(shm_path(name), shm_path(to), ec);
    log->error("cannot adopt segment '{}': {}; moved aside to '{}'{}", name, why, to, ec ? " (failed: " + ec.message() + ")" : "");
}

bool Broker::Impl::adopt_doorbells() {
    const std::string name = segment_name("doorbells");
    if (!left_behind(name)) return false;
    auto seg = open_left(name);
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
    const std::string head = cfg.shm_prefix + ".", tail = ".data";
    auto consider = [&](const std::string& f) {
        if (f.size() > head.size() + tail.size() && f.starts_with(head) && f.ends_with(tail))
            names.push_back(f.substr(head.size(), f.size() - head.size() - tail.size()));
    };
    if (cfg.segments == shm::Backing::sealed) {
        for (const auto& [name, fd] : kept) consider(name);
    } else {
        std::error_code ec;
        for (auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) consider(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    std::unordered_map<pid_t, Session*> by_pid;
    for (const auto& topic : names) adopt_topic(topic, by_pid);
    // Whatever the keeper still holds belongs to no topic we could adopt (a cursor segment whose data
    // segment is gone, another prefix's): it would otherwise be held for ever.
    for (auto it = kept.begin(); it != kept.end();) {
        const std::string name = it->first;
        ++it;
        move_aside(name, "it belongs to no adoptable topic of prefix '" + cfg.shm_prefix + "'");
    }
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
    auto data = open_left(data_name);
    if (!data) return move_aside(data_name, data.error().what());
    auto cursors = open_left(cursors_name);
    if (!cursors) return move_aside(data_name, "its cursor segment: " + cursors.error().what());
    auto map = shm::attach(data->bytes(), cursors->bytes());
    if (!map) {
        move_aside(cursors_name, map.error().what());
        return move_aside(data_name, map.error().what());
    }
    // Its doorbells: adopted like the rings (clients parked on them keep them); one that does not
    // validate makes the whole topic unadoptable, since its parties would ring and wait on two.
    auto bells = open_left(bells_name);
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
        t->publisher_lanes[i] = 0xf;  // what it was granted is not in the segment: it may have any lane
        s.publishers.push_back({t->id, i});
        if (st == layout::SlotState::dead || process_gone(s.pidfd, pid)) ++dead;
        else ++live_pubs;
    }
    // Exclusive lanes: kept for a slot still held (its publisher reclaims it and goes on claiming with
    // plain stores), cleared otherwise. Publishers can write this word: a forged one makes its slot the
    // lane's holder, which only withholds the lane from publishers that come later.
    for (std::size_t l = 0; l < layout::kLanes; ++l) {
        const std::uint32_t x = t->map.lanes[l].exclusive.load();
        if (x != 0 && x <= t->map.max_publishers && t->publisher_owner[x - 1] != kNoOwner) {
            t->exclusive[l] = x;
            for (std::uint32_t i = 0; i < t->map.max_publishers; ++i)
                if (i != x - 1) t->publisher_lanes[i] &= std::uint8_t(~(1u << l));
        } else if (x != 0) {
            t->map.lanes[l].exclusive.store(0);
        }
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
