// The soak's subscriber process: receives and checks every event and, at the end, compares what it
// received with what the board says was published (lost, duplicated, out of order, corrupt), checks
// Critical-first on every receive and times each lane's recovery from each kill. Definitions:
// bench/README.md, "soak".
#include "bench/soak_child.hpp"

#include <algorithm>
#include <array>
#include <cinttypes>
#include <cstdio>
#include <vector>

#include <unistd.h>

namespace rvoip::bench::soak {
namespace {

using namespace rvoip::events;
using namespace std::chrono_literals;

// ------------------------------------------------------------------------------------------------------
// Subscriber.

// One publisher instance's events on one lane, as this subscriber saw them.
struct Stream {
    std::uint64_t start = 0;  // the publisher's intent on this lane when we had joined (later slots: 0)
    std::uint64_t first = 0, last = 0, count = 0;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> gaps;  // [a, b] not received between first and last

    // Events in (start', end] not received, where start' = min(start, first - 1): after our join every
    // event must arrive, and once one arrived every later one must too.
    std::uint64_t missing(std::uint64_t end) const {
        const std::uint64_t from = count ? std::min(start, first - 1) : start;
        if (end <= from) return 0;
        if (!count) return end - from;
        std::uint64_t n = 0;
        if (first - 1 > from) n += std::min(first - 1, end) - from;
        for (auto [a, b] : gaps)
            if (std::min(b, end) >= std::max(a, from + 1)) n += std::min(b, end) - std::max(a, from + 1) + 1;
        if (end > last) n += end - std::max(last, from);
        return n;
    }
};

// One kill, until this subscriber has seen every lane recover from it.
struct PendingRecovery {
    std::int64_t at_ns;
    std::uint32_t kill, victim_kind, victim_slot;
    std::array<std::int64_t, kLanes> lane_ns{-1, -1, -1, -1};  // first post-kill delivery, after the kill
    std::array<bool, kLanes> owed{};   // another publisher has published there an event it began after the kill
    std::vector<std::uint64_t> intents;  // every publisher's intents (slot * kLanes + lane), read after the kill
    bool stuck(std::uint32_t l) const { return owed[l] && lane_ns[l] < 0; }
};

class SoakSubscriber {
public:
    SoakSubscriber(Board b, const SoakRoleOptions& o, RawSubscriber sub)
        : b_(b), me_(b.subs[o.slot]), sub_(std::move(sub)), rng_{o.seed ^ (0x5b5b'0000'0000ull + o.slot)},
          streams_(std::size_t(kMaxPubSlots) * kLanes), snap_crit_(kMaxPubSlots, 0) {}

    // Right after joining: every known publisher's intents are where our required range starts.
    void snapshot() {
        const std::uint32_t n = b_.header->pub_slots.load();
        for (std::uint32_t s = 0; s < n; ++s)
            for (std::uint32_t l = 0; l < kLanes; ++l) streams_[s * kLanes + l].start = b_.pubs[s].intent[l].load();
        next_kill_ = b_.header->kills.load();
        ready_ns_ = last_event_ns_ = now_ns();
        me_.ready_ns.store(ready_ns_);
    }

    Done run();
    std::string result() const;

private:
    std::uint64_t owed(std::uint32_t slot) const {
        const auto& st = streams_[slot * kLanes];
        const std::uint64_t base = std::max(st.last, st.start);
        return snap_crit_[slot] > base ? snap_crit_[slot] - base : 0;
    }
    // Critical events committed (published-through on the board) after our join and not received yet.
    void refresh_pending() {
        const std::uint64_t g = b_.header->crit_done.load();
        if (g == crit_done_seen_) return;
        crit_done_seen_ = g;
        pending_ = 0;
        const std::uint32_t n = b_.header->pub_slots.load();
        for (std::uint32_t s = 0; s < n; ++s) snap_crit_[s] = b_.pubs[s].published[0].load(), pending_ += owed(s);
    }
    bool critical_claim_open() const {
        const std::uint32_t n = b_.header->pub_slots.load();
        for (std::uint32_t s = 0; s < n; ++s)
            if (b_.pubs[s].crit_open.load() && !b_.pubs[s].retired.load()) return true;
        return false;
    }
    void ingest_kills() {
        for (const std::uint32_t kills = std::min(b_.header->kills.load(), kMaxKills); next_kill_ < kills; ++next_kill_) {
            const Kill& k = b_.kills[next_kill_];
            if (k.at_ns <= ready_ns_) continue;
            PendingRecovery r{k.at_ns, next_kill_, k.victim_kind, k.victim_slot};
            const std::uint32_t n = b_.header->pub_slots.load();
            for (std::uint32_t s = 0; s < n; ++s)
                for (std::uint32_t l = 0; l < kLanes; ++l) r.intents.push_back(b_.pubs[s].intent[l].load());
            recoveries_.push_back(std::move(r));
        }
    }
    // A lane is owed a recovery once another publisher's published-through passed its intent at the kill
    // (that event began after the kill), or a publisher started after it published there.
    void update_owed(PendingRecovery& r) const {
        const std::uint32_t n = b_.header->pub_slots.load();
        for (std::uint32_t l = 0; l < kLanes; ++l)
            for (std::uint32_t s = 0; s < n && !r.owed[l] && r.lane_ns[l] < 0; ++s) {
                if (r.victim_kind == kPublisherVictim && s == r.victim_slot) continue;
                const std::size_t i = std::size_t(s) * kLanes + l;
                r.owed[l] = b_.pubs[s].published[l].load() > (i < r.intents.size() ? r.intents[i] : 0);
            }
    }
    void settle_recoveries(std::int64_t t, bool all);
    bool check(const RawSample& s, std::int64_t t, bool order_checked);
    std::uint64_t missing_total(std::uint64_t* unconfirmed, bool report);
    void note(const std::string& msg) {
        if (++notes_ <= 8) report_error(msg);
    }

    Board b_;
    SubSlot& me_;
    RawSubscriber sub_;
    SplitMix rng_;
    std::vector<Stream> streams_;
    std::vector<std::uint64_t> snap_crit_;
    std::uint64_t crit_done_seen_ = ~0ull;
    std::uint64_t pending_ = 0;
    std::uint32_t next_kill_ = 0;
    std::vector<PendingRecovery> recoveries_;
    std::int64_t ready_ns_ = 0, last_event_ns_ = 0, not_running_ns_ = 0;
    std::uint64_t delivered_ = 0, duplicated_ = 0, out_of_order_ = 0, corrupt_ = 0, lost_ = 0, unconfirmed_ = 0;
    std::uint64_t checks_ = 0, skipped_ = 0, violations_ = 0, probe_critical_ = 0, notes_ = 0;
    std::int64_t max_stall_ns_ = 0, stall_end_ns_ = 0, drain_ms_ = 0;
    std::array<std::int64_t, 2> max_recovery_ns_{-1, -1};
    std::array<std::int64_t, 2> recovery_kill_{-1, -1};
    std::uint64_t recoveries_measured_ = 0, unrecovered_ = 0;
    std::int64_t last_owed_check_ns_ = 0;
    std::array<std::int64_t, kLanes> lane_last_{};
    bool drained_ = false;
};

// Verifies one event and books it. `order_checked`: a Critical event was owed when the receive began and
// no Critical claim could have been open ahead of it, so this event must be Critical.
bool SoakSubscriber::check(const RawSample& s, std::int64_t t, bool order_checked) {
    const auto bytes = s.bytes();
    const std::uint32_t lane = std::uint32_t(s.priority());
    EventHead h{};
    if (bytes.size() >= sizeof h) std::memcpy(&h, bytes.data(), sizeof h);
    const char* bad = bytes.size() < sizeof h                    ? "shorter than the soak header"
                      : h.length != bytes.size()                 ? "length differs from the header's"
                      : h.checksum != checksum(bytes)            ? "checksum mismatch"
                      : h.lane != lane                           ? "received in another lane than the header's"
                      : h.slot >= b_.header->pub_slots.load()    ? "publisher slot out of range"
                      : h.instance != b_.pubs[h.slot].instance.load() ? "publisher instance does not match its slot"
                                                                 : nullptr;
    if (bad) {
        ++corrupt_;
        note("corrupt event in the " + std::string(lane_name(lane)) + " lane (" + std::to_string(bytes.size()) + " bytes): " + bad);
        return false;
    }
    ++delivered_;
    lane_last_[lane] = t;
    Stream& st = streams_[h.slot * kLanes + lane];
    const std::uint64_t owed_before = lane == 0 ? owed(h.slot) : 0;
    if (!st.count) {
        st.first = st.last = h.seq, st.count = 1;
    } else if (h.seq == st.last + 1) {
        st.last = h.seq, ++st.count;
    } else if (h.seq > st.last) {
        st.gaps.emplace_back(st.last + 1, h.seq - 1);
        st.last = h.seq, ++st.count;
    } else if (h.seq < st.first) {
        if (++out_of_order_ <= 3)
            note("out of order: publisher slot " + std::to_string(h.slot) + " " + lane_name(lane) + " seq " + std::to_string(h.seq) +
                 " after " + std::to_string(st.first) + ".." + std::to_string(st.last));
        if (h.seq + 1 < st.first) st.gaps.emplace_back(h.seq + 1, st.first - 1);
        st.first = h.seq, ++st.count;
    } else {
        auto g = std::find_if(st.gaps.begin(), st.gaps.end(), [&](auto& ab) { return ab.first <= h.seq && h.seq <= ab.second; });
        if (g == st.gaps.end()) {
            if (++duplicated_ <= 3) note("duplicate: publisher slot " + std::to_string(h.slot) + " " + lane_name(lane) + " seq " + std::to_string(h.seq));
        } else {
            if (++out_of_order_ <= 3)
                note("out of order: publisher slot " + std::to_string(h.slot) + " " + lane_name(lane) + " seq " + std::to_string(h.seq) +
                     " after " + std::to_string(st.last));
            const auto [a, b] = *g;
            st.gaps.erase(g);
            if (a < h.seq) st.gaps.emplace_back(a, h.seq - 1);
            if (h.seq < b) st.gaps.emplace_back(h.seq + 1, b);
            ++st.count;
        }
    }
    if (lane == 0) {
        pending_ = pending_ - owed_before + owed(h.slot);
    } else if (order_checked) {
        ++checks_;
        if (pending_ > 0 && ++violations_ <= 5) {
            std::uint32_t who = 0;
            for (std::uint32_t p = 0; p < b_.header->pub_slots.load(); ++p)
                if (owed(p)) who = p;
            note("Critical order: a receive returned a " + std::string(lane_name(lane)) + " event while " + std::to_string(pending_) +
                 " committed Critical event(s) waited (e.g. publisher slot " + std::to_string(who) + " published Critical through " +
                 std::to_string(snap_crit_[who]) + ", received through " + std::to_string(streams_[who * kLanes].last) + ")");
        }
    }
    for (auto& r : recoveries_)
        if (r.lane_ns[lane] < 0 && h.intent_ns > r.at_ns && !(r.victim_kind == kPublisherVictim && r.victim_slot == h.slot))
            r.lane_ns[lane] = t - r.at_ns;
    return true;
}

// A kill's recovery, for this subscriber, is the longest of its lanes' first post-kill deliveries (an event
// another publisher began after the kill); it is settled when every lane has one, 10 s after the kill, or
// at the end (lanes without such an event are not counted).
//
// A lane owed a recovery (update_owed) that has none is stuck: such a kill stays pending past 10 s, and
// at the end its stuck lanes count as recovered at the end (the time is then a lower bound) and as
// `unrecovered`.
void SoakSubscriber::settle_recoveries(std::int64_t t, bool all) {
    const bool look = all || t - last_owed_check_ns_ > 100'000'000;  // the scan costs a few µs: every 100 ms
    if (look) last_owed_check_ns_ = t;
    std::int64_t stuck_since = 0;
    std::erase_if(recoveries_, [&](PendingRecovery& r) {
        const bool complete = std::all_of(r.lane_ns.begin(), r.lane_ns.end(), [](auto ns) { return ns >= 0; });
        if (!complete && look) update_owed(r);
        bool stuck = false;
        for (std::uint32_t l = 0; l < kLanes; ++l) stuck |= r.stuck(l);
        if (!complete && !all && (stuck || t - r.at_ns < 10'000'000'000)) {
            if (stuck && (!stuck_since || r.at_ns < stuck_since)) stuck_since = r.at_ns;
            return false;
        }
        for (std::uint32_t l = 0; l < kLanes; ++l)
            if (r.stuck(l)) {
                r.lane_ns[l] = t - r.at_ns, ++unrecovered_;
                note("the " + std::string(lane_name(l)) + " lane did not recover from kill #" + std::to_string(r.kill) + " (" +
                     (r.victim_kind == kPublisherVictim ? "publisher" : "subscriber") + " slot " + std::to_string(r.victim_slot) + ") in " +
                     std::to_string((t - r.at_ns) / 1'000'000) + " ms although other publishers published there after it");
            }
        const std::int64_t worst = *std::max_element(r.lane_ns.begin(), r.lane_ns.end());
        if (worst < 0) return true;
        recoveries_measured_ += std::count_if(r.lane_ns.begin(), r.lane_ns.end(), [](auto ns) { return ns >= 0; });
        if (worst > max_recovery_ns_[r.victim_kind]) max_recovery_ns_[r.victim_kind] = worst, recovery_kill_[r.victim_kind] = r.kill;
        return true;
    });
    if (look) me_.stuck_since_ns.store(stuck_since);
}

// Events published (board: published-through) that this subscriber was owed and has not received.
std::uint64_t SoakSubscriber::missing_total(std::uint64_t* unconfirmed, bool report) {
    std::uint64_t total = 0;
    const std::uint32_t n = b_.header->pub_slots.load();
    for (std::uint32_t s = 0; s < n; ++s)
        for (std::uint32_t l = 0; l < kLanes; ++l) {
            const Stream& st = streams_[s * kLanes + l];
            const std::uint64_t end = b_.pubs[s].published[l].load();
            const std::uint64_t m = st.missing(end);
            total += m;
            if (unconfirmed && st.count && st.last > end) *unconfirmed += st.last - std::max(end, st.first - 1);
            if (m && report)
                note("lost " + std::to_string(m) + " event(s) of publisher slot " + std::to_string(s) + " (" +
                     (b_.pubs[s].state.load() == kKilled ? "killed" : "stopped") + ", kind " + kind_name(b_.pubs[s].kind.load()) + ") in the " +
                     lane_name(l) + " lane: published through " + std::to_string(end) + ", received " +
                     (st.count ? std::to_string(st.first) + ".." + std::to_string(st.last) + " with " + std::to_string(st.gaps.size()) + " gap(s)"
                               : std::string("none")) +
                     ", owed after " + std::to_string(st.start));
        }
    return total;
}

Done SoakSubscriber::run() {
    std::array<RawSample, 64> batch;
    std::int64_t drain_start = 0, idle_since = 0;
    for (;;) {
        const std::uint32_t phase = b_.phase();
        if (phase == kDraining && !drain_start) drain_start = idle_since = now_ns();
        refresh_pending();
        const bool owed_critical = pending_ > 0;
        const bool open = owed_critical && critical_claim_open();
        skipped_ += open;
        ingest_kills();

        std::size_t n = 0;
        Error err(Errc::ok);
        if (rng_.chance(0.5)) {
            auto r = sub_.receive_for(20ms);
            if (r) batch[0] = std::move(*r), n = 1;
            else err = std::move(r.error());
        } else {
            auto r = sub_.receive_batch(std::span(batch).first(rng_.between(1, batch.size())), 20ms);
            if (r) n = *r;
            else err = std::move(r.error());
        }
        const std::int64_t t = now_ns();
        if (!n && err.code != Errc::timeout) {
            if (err.code == Errc::corrupt) ++corrupt_;
            return failure("receive: " + err.what());
        }
        // Stalls: only while publishers publish (phase running), from our last delivery or the run's start.
        if (phase != kRunning) not_running_ns_ = t;
        else if (const std::int64_t gap = t - std::max(last_event_ns_, not_running_ns_); gap > max_stall_ns_)
            max_stall_ns_ = gap, stall_end_ns_ = t;
        const std::uint64_t violations_before = violations_;
        for (std::size_t i = 0; i < n; ++i) {
            check(batch[i], t, owed_critical && !open);
            batch[i].reset();
        }
        // After a violation, one try_receive tells whether the owed Critical event was readable at once
        // (the reader had passed over it) or not yet (something held the lane).
        if (violations_ != violations_before) {
            auto next = sub_.try_receive();
            if (next) {
                probe_critical_ += next->priority() == Priority::critical;
                check(*next, now_ns(), false);
            }
        }
        if (n) {
            last_event_ns_ = idle_since = t;
            me_.last_event_ns.store(t);
            me_.delivered.store(delivered_);
            for (std::uint32_t l = 0; l < kLanes; ++l) me_.lane_last_ns[l].store(lane_last_[l]);
        }
        settle_recoveries(t, false);
        if (!drain_start) continue;
        // Draining: done when a receive found nothing and nothing we are owed is missing; a lane that
        // stays silent for 3 s (or 30 s in all) with events missing ends it too, and they count as lost.
        if (!n && missing_total(nullptr, false) == 0) break;
        if (t - idle_since > 3'000'000'000 || t - drain_start > 30'000'000'000) {
            note("gave up draining after " + std::to_string((t - drain_start) / 1'000'000) + " ms with events missing");
            break;
        }
    }
    drain_ms_ = (now_ns() - drain_start) / 1'000'000;
    settle_recoveries(now_ns(), true);
    lost_ = missing_total(&unconfirmed_, true);
    return {};
}

std::string SoakSubscriber::result() const {
    char line[768];
    std::snprintf(line, sizeof line,
                  "result delivered=%" PRIu64 " lost=%" PRIu64 " duplicated=%" PRIu64 " out_of_order=%" PRIu64 " corrupt=%" PRIu64
                  " unconfirmed=%" PRIu64 " critical_checks=%" PRIu64 " critical_skipped=%" PRIu64 " critical_order_violations=%" PRIu64
                  " violations_then_critical=%" PRIu64 " max_stall_ns=%" PRId64 " stall_end_ns=%" PRId64 " max_recovery_pub_ns=%" PRId64 " recovery_pub_kill=%" PRId64
                  " max_recovery_sub_ns=%" PRId64 " recovery_sub_kill=%" PRId64 " recoveries=%" PRIu64 " unrecovered=%" PRIu64 " drain_ms=%" PRId64 " ready_ns=%" PRId64,
                  delivered_, lost_, duplicated_, out_of_order_, corrupt_, unconfirmed_, checks_, skipped_, violations_, probe_critical_, max_stall_ns_,
                  stall_end_ns_, max_recovery_ns_[0], recovery_kill_[0], max_recovery_ns_[1], recovery_kill_[1], recoveries_measured_,
                  unrecovered_, drain_ms_, ready_ns_);
    return line;
}

}  // namespace

int run_subscriber(const SoakRoleOptions& o) {
    auto mapped = MappedBoard::map(o.board_fd);
    if (!mapped) return report_error(mapped.error());
    const Board b = mapped->board();
    if (o.slot >= kMaxSubSlots) return report_error("subscriber slot out of range");
    SubSlot& me = b.subs[o.slot];
    me.pid.store(::getpid());
    auto bus = connect(o);
    if (!bus) return report_error(bus.error());
    // Half of the subscribers spin a little before parking (the library's default), half park at once.
    SplitMix r{o.seed ^ (0x3c3c'0000'0000ull + o.slot)};
    const WaitOptions wait = r.chance(0.5) ? WaitOptions{} : WaitOptions{.spin = 0};
    auto sub = bus->raw_subscriber(o.topic, SubscriberOptions{topic_options(), wait});
    if (!sub) return report_error("cannot subscribe to '" + o.topic + "': " + sub.error().what());
    auto s = std::make_unique<SoakSubscriber>(b, o, std::move(*sub));
    s->snapshot();
    me.state.store(kReady);
    say("ready");
    auto st = s->run();
    say(s->result());
    if (!st) return report_error(st.error());
    me.state.store(kStopped);
    return 0;
}

}  // namespace rvoip::bench::soak
