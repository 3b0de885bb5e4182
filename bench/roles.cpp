#include "bench/role_kit.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include <sys/prctl.h>

namespace rvoip::bench {

std::string g_child_label = "child";

int report_error(const std::string& msg) {
    std::fprintf(stderr, "rvoip-bench[%s]: %s\n", g_child_label.c_str(), msg.c_str());
    return 1;
}

void say(const std::string& line) {
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

namespace {
using namespace rvoip::events;
using namespace kit;

// ------------------------------------------------------------------------------------------------------
// Throughput.

int run_publisher(const RoleOptions& o) {
    auto bus = connect(o);
    if (!bus) return report_error(bus.error());
    auto pub = open_publisher(*bus, o, o.topic);
    if (!pub) return report_error(pub.error());
    const auto warm = make_payload(o.size, kWarmup), data = make_payload(o.size, kData), end = make_payload(o.size, kEnd);
    const std::vector<std::span<const std::byte>> warm_batch(o.batch, std::span(warm)), data_batch(o.batch, std::span(data));
    say("ready");
    if (auto go = wait_for_go(); !go) return report_error(go.error());

    std::uint64_t timeouts = 0;
    // Warm-up: two laps of the ring, so the first touch of its pages is not measured.
    const std::uint64_t warm_calls = std::max<std::uint64_t>(1, 2 * (o.capacity / layout::record_size(o.size)) / o.batch);
    for (std::uint64_t i = 0; i < warm_calls; ++i)
        if (auto st = publish_retrying(*pub, warm_batch, timeouts); !st) return report_error(st.error());

    // Measured phase. The clock is read about once per 4 KiB of payload, so it costs little per event.
    const std::uint64_t check_every = std::max<std::uint64_t>(1, 4096 / (std::uint64_t(o.size) * o.batch));
    const std::int64_t start = now_ns();
    const std::int64_t deadline = start + static_cast<std::int64_t>(o.seconds * 1e9);
    std::int64_t stop = start;
    std::uint64_t calls = 0;
    for (std::uint64_t countdown = check_every;;) {
        if (auto st = publish_retrying(*pub, data_batch, timeouts); !st) [[unlikely]]
            return report_error(st.error());
        ++calls;
        if (--countdown == 0) {
            countdown = check_every;
            if ((stop = now_ns()) >= deadline) break;
        }
    }
    const std::span<const std::byte> end_one[] = {end};
    if (auto st = publish_retrying(*pub, end_one, timeouts); !st) return report_error(st.error());

    char line[256];
    std::snprintf(line, sizeof line, "result events=%" PRIu64 " warmup=%" PRIu64 " timeouts=%" PRIu64 " start_ns=%" PRId64 " end_ns=%" PRId64,
                  calls * o.batch, warm_calls * o.batch, timeouts, start, stop);
    say(line);
    return 0;
}

// Every record carries its publisher's slot and that publisher's own sequence on the lane: consecutive
// records of one publisher must have consecutive numbers, or something was lost or duplicated.
class SequenceCheck {
public:
    Done check(std::uint16_t publisher, std::uint64_t seq) {
        if (publisher >= next_.size()) return failure("record from publisher slot " + std::to_string(publisher) + ", out of range");
        if (seen_[publisher] && seq != next_[publisher])
            return failure("publisher slot " + std::to_string(publisher) + ": sequence " + std::to_string(seq) + " where " +
                           std::to_string(next_[publisher]) + " was due: events lost or duplicated");
        seen_[publisher] = true;
        next_[publisher] = seq + 1;
        return {};
    }

private:
    std::array<std::uint64_t, layout::kMaxPublishers> next_{};
    std::array<bool, layout::kMaxPublishers> seen_{};
};

int run_subscriber(const RoleOptions& o) {
    auto bus = connect(o);
    if (!bus) return report_error(bus.error());
    auto sub = open_subscriber(*bus, o, o.topic);
    if (!sub) return report_error(sub.error());
    say("ready");

    SequenceCheck seqs;
    std::vector<RawSample> samples(256);  // batched receive: the lane cursor moves once per batch
    std::uint64_t events = 0, warm = 0, first_batch = 0, checksum = 0;
    std::int64_t first_ns = 0, last_ns = 0;
    for (int ends = 0; ends < o.publishers;) {
        auto n = sub->receive_batch(std::span(samples), kReceiveTimeout);
        if (!n) return report_error(receive_error(n.error()));
        const std::int64_t now = now_ns();
        for (std::size_t i = 0; i < *n; ++i) {
            auto& s = samples[i];
            auto h = head_of(s, o.size);
            if (!h) return report_error(h.error());
            if (auto ok = seqs.check(s.publisher(), s.sequence()); !ok) return report_error(ok.error());
            if (o.touch) checksum += touch(s.bytes());
            switch (h->kind) {
            case kWarmup: ++warm; break;
            case kData:
                if (events == 0) first_ns = now;
                if (now == first_ns) ++first_batch;  // seen at the start instant: not part of the timed interval
                ++events;
                last_ns = now;
                break;
            case kEnd: ++ends; break;
            default: return report_error("received an event of unexpected kind " + std::to_string(h->kind));
            }
            s.reset();
        }
    }
    char line[256];
    std::snprintf(line, sizeof line,
                  "result events=%" PRIu64 " warmup=%" PRIu64 " first_batch=%" PRIu64 " first_ns=%" PRId64 " last_ns=%" PRId64 " checksum=%" PRId64,
                  events, warm, first_batch, first_ns, last_ns, std::int64_t(checksum & 0x7fff'ffff'ffff'ffff));
    say(line);
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// Latency.

std::string summarize(std::vector<std::int64_t>& v) { return "result" + percentile_fields(v, ""); }

Done expect(const Expected<PayloadHead>& h, Kind kind, std::uint64_t seq) {
    if (!h) return failure(h.error());
    if (h->kind != kind || h->seq != seq)
        return failure("got event kind " + std::to_string(h->kind) + " #" + std::to_string(h->seq) + ", expected kind " +
                       std::to_string(kind) + " #" + std::to_string(seq));
    return {};
}

// Sends a ping, waits for its pong: one sample of round-trip time per ping. The ping carries the time read just
// before the publish call (in `seq`), the same way the peers' pingers stamp their messages, so the echoer's
// one-way figure includes the whole publish call (claim, copy, commit, wake-up) like theirs.
int run_pinger(const RoleOptions& o) {
    auto bus = connect(o);
    if (!bus) return report_error(bus.error());
    auto pub = open_publisher(*bus, o, o.topic);
    if (!pub) return report_error(pub.error());
    auto sub = open_subscriber(*bus, o, o.topic2);
    if (!sub) return report_error(sub.error());
    auto ping = make_payload(o.size, kPing);
    std::vector<std::int64_t> rtt;
    rtt.reserve(o.count);
    say("ready");
    if (auto go = wait_for_go(); !go) return report_error(go.error());

    // Paced (interval_ns > 0): one ping per interval, so the echoer parks and its core idles between
    // them, as a consumer of a paced stream does; otherwise back to back.
    const std::int64_t start = now_ns();
    for (std::uint64_t i = 0; i < o.warmup + o.count; ++i) {
        if (o.interval_ns > 0) {
            const std::int64_t at = start + std::int64_t(i + 1) * o.interval_ns;
            const timespec ts{static_cast<time_t>(at / 1'000'000'000), static_cast<long>(at % 1'000'000'000)};
            while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
            }
        }
        const std::int64_t t0 = now_ns();
        set_seq(ping, std::uint64_t(t0));
        if (auto st = pub->publish(std::span<const std::byte>(ping)); !st) return report_error("publish ping: " + st.error().what());
        auto s = sub->receive_for(kReceiveTimeout);
        const std::int64_t t1 = now_ns();
        if (!s) return report_error(receive_error(s.error()));
        // The pong echoes the ping's stamp: it answers this ping and no other.
        if (auto ok = expect(head_of(*s, o.size), kPong, std::uint64_t(t0)); !ok) return report_error(ok.error());
        if (i >= o.warmup) rtt.push_back(t1 - t0);
    }
    say(summarize(rtt));
    return 0;
}

// Receives a ping, records its one-way latency (now minus the stamp the pinger took before publishing it; both
// CLOCK_MONOTONIC, one clock for all processes, and the clock the peers use), answers with the stamp.
int run_echoer(const RoleOptions& o) {
    auto bus = connect(o);
    if (!bus) return report_error(bus.error());
    auto sub = open_subscriber(*bus, o, o.topic);
    if (!sub) return report_error(sub.error());
    auto pub = open_publisher(*bus, o, o.topic2);
    if (!pub) return report_error(pub.error());
    auto pong = make_payload(o.size, kPong);
    std::vector<std::int64_t> one_way;
    one_way.reserve(o.count);
    say("ready");

    std::int64_t last_stamp = 0;
    for (std::uint64_t i = 0; i < o.warmup + o.count; ++i) {
        auto s = sub->receive_for(kReceiveTimeout);
        const std::int64_t t = now_ns();
        if (!s) return report_error(receive_error(s.error()));
        auto h = head_of(*s, o.size);
        if (!h) return report_error(h.error());
        if (h->kind != kPing) return report_error("got event kind " + std::to_string(h->kind) + ", expected a ping");
        const auto stamp = std::int64_t(h->seq);
        // Stamps only grow: a smaller or equal one is a ping duplicated or out of order.
        if (stamp <= last_stamp) return report_error("ping #" + std::to_string(i) + " is stamped no later than the one before it");
        last_stamp = stamp;
        s->reset();  // release the ping before answering, as a real consumer would
        set_seq(pong, std::uint64_t(stamp));
        if (auto st = pub->publish(std::span<const std::byte>(pong)); !st) return report_error("publish pong: " + st.error().what());
        if (i >= o.warmup) one_way.push_back(t - stamp);
    }
    say(summarize(one_way));
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// Flood: Critical pings and a Low flood on one topic; the echoer's receive must take the pings first.
//
// Parent to pinger: "go idle" / "go flood" (a phase of `seconds` each; the pinger answers "done ..."), then
// "end" (the pinger publishes its end marker and its result). Flooder: "go", answers "flooding" once the
// flood runs, and publishes until "stop".

// Pings are few and must never wait for room; the flood lane is deep so the flooder rarely waits.
TopicOptions flood_topic_options(const RoleOptions& o) {
    return TopicOptions()
        .capacity(Priority::critical, 1u << 20)
        .max_event(Priority::critical, o.size)
        .overflow(Priority::critical, Overflow::block, kBlockTimeout)
        .capacity(Priority::low, o.capacity)
        .max_event(Priority::low, o.size)
        .overflow(Priority::low, Overflow::block, kBlockTimeout);
}

Expected<RawPublisher> open_flood_publisher(EventSystem& bus, const RoleOptions& o) {
    auto pub = bus.raw_publisher(o.topic, PublisherOptions{flood_topic_options(o)});
    if (!pub) return failure("cannot publish on '" + o.topic + "': " + pub.error().what());
    return std::move(*pub);
}

// One phase of pings, one every interval. A ping whose slot passed while we slept too long is skipped
// rather than sent late in a burst: the pace stays steady, and each ping's latency is measured from its
// own publish timestamp anyway.
struct PingCounts {
    std::uint64_t sent = 0, skipped = 0;
    std::uint64_t slow = 0;  // publish calls that took over 50 us: we were preempted inside publish
};

Done ping_phase(RawPublisher& pub, const RoleOptions& o, Kind kind, PingCounts& n) {
    auto ping = make_payload(o.size, kind);
    Pacer pacer(o.interval_ns, o.interval_ns);
    const auto slots = static_cast<std::uint64_t>(o.seconds * 1e9 / double(o.interval_ns));
    for (std::uint64_t k = 0; k < slots;) {
        pacer.wait(k);
        set_seq(ping, n.sent);
        const std::int64_t t0 = now_ns();
        if (auto st = pub.publish(std::span<const std::byte>(ping), Priority::critical); !st) return failure("publish ping: " + st.error().what());
        const std::int64_t t1 = now_ns();
        n.slow += t1 - t0 > 50'000;
        ++n.sent;
        const auto next = static_cast<std::uint64_t>((t1 - pacer.start()) / o.interval_ns) + 1;
        n.skipped += next > k + 1 ? next - k - 1 : 0;
        k = std::max(k + 1, next);
    }
    return {};
}

int run_flood_pinger(const RoleOptions& o) {
    auto bus = connect(o);
    if (!bus) return report_error(bus.error());
    auto pub = open_flood_publisher(*bus, o);
    if (!pub) return report_error(pub.error());
    say("ready");
    std::uint64_t total = 0;
    for (auto [command, kind] : {std::pair{"go idle", kIdlePing}, std::pair{"go flood", kFloodPing}}) {
        if (auto line = read_command(); line != command) return report_error("expected '" + std::string(command) + "', got '" + line + "'");
        PingCounts n;
        if (auto st = ping_phase(*pub, o, kind, n); !st) return report_error(st.error());
        total += n.sent;
        say(Line("done")("sent", std::int64_t(n.sent))("skipped", std::int64_t(n.skipped))("slow_publishes", std::int64_t(n.slow)).str());
    }
    if (auto line = read_command(); line != "end") return report_error("expected 'end', got '" + line + "'");
    const auto end = make_payload(o.size, kEnd);
    if (auto st = pub->publish(std::span<const std::byte>(end), Priority::critical); !st) return report_error("publish end: " + st.error().what());
    say(Line("result")("pings", std::int64_t(total))("full", full_count(*pub, Priority::critical)).str());
    return 0;
}

int run_flooder(const RoleOptions& o) {
    auto bus = connect(o);
    if (!bus) return report_error(bus.error());
    auto pub = open_flood_publisher(*bus, o);
    if (!pub) return report_error(pub.error());
    const auto flood = make_payload(o.size, kFlood);
    const std::vector<std::span<const std::byte>> batch(64, std::span(flood));
    say("ready");
    if (auto go = wait_for_go(); !go) return report_error(go.error());
    watch_for_stop();

    std::uint64_t batches = 0, timeouts = 0;
    const std::int64_t start = now_ns();
    for (; batches == 0 || !g_stop.load(std::memory_order_relaxed); ++batches) {  // relaxed: a flag, no data
        if (auto st = publish_retrying(*pub, batch, timeouts, Priority::low); !st) return report_error(st.error());
        if (batches == 0) say("flooding");
    }
    const std::int64_t end = now_ns();
    const auto end_payload = make_payload(o.size, kEnd);
    const std::span<const std::byte> end_marker[] = {end_payload};
    if (auto st = publish_retrying(*pub, end_marker, timeouts, Priority::low); !st) return report_error(st.error());
    say(Line("result")("events", std::int64_t(batches * batch.size()))("timeouts", std::int64_t(timeouts))("start_ns", start)("end_ns", end).str());
    return 0;
}

// Receives everything the topic carries; a Critical ping's latency is its receive time minus its publish
// timestamp, both on the bus's clock. Low events are only counted and released at once.
int run_flood_echoer(const RoleOptions& o) {
    auto bus = connect(o);
    if (!bus) return report_error(bus.error());
    auto sub = bus->raw_subscriber(o.topic, SubscriberOptions{flood_topic_options(o), wait_options(o.wait)});
    if (!sub) return report_error("cannot subscribe to '" + o.topic + "': " + sub.error().what());
    std::vector<std::int64_t> idle, flood;
    idle.reserve(1 << 20);
    flood.reserve(1 << 20);
    std::uint64_t lows = 0;
    // Why a ping under the flood was late (over 100 us): either it was published before this process last
    // got the CPU back after a stall (50 us or more between two receives: the scheduler ran something else),
    // or we were running and receiving while it waited (the library, or a pinger preempted inside publish:
    // see its slow_publishes).
    std::uint64_t late = 0, late_stalled = 0;
    std::int64_t last = bus->now_ns(), resumed = 0;
    bool pings_ended = false, flood_ended = false;
    say("ready");

    while (!(pings_ended && flood_ended)) {
        auto s = sub->receive_for(kReceiveTimeout);
        const std::int64_t t = bus->now_ns();
        if (t - last > 50'000) resumed = t;
        last = t;
        if (!s) return report_error(receive_error(s.error()));
        auto h = head_of(*s, o.size);
        if (!h) return report_error(h.error());
        const bool critical = s->priority() == Priority::critical;
        if (critical && (h->kind == kIdlePing || h->kind == kFloodPing)) {
            const std::int64_t latency = t - s->timestamp_ns();
            if (h->seq >= o.warmup) (h->kind == kIdlePing ? idle : flood).push_back(latency);
            if (h->seq >= o.warmup && h->kind == kFloodPing && latency > 100'000) ++late, late_stalled += s->timestamp_ns() < resumed;
        } else if (critical && h->kind == kEnd) {
            pings_ended = true;
        } else if (s->priority() == Priority::low && (h->kind == kFlood || h->kind == kEnd)) {
            if (h->kind == kFlood) ++lows;
            else flood_ended = true;
        } else {
            return report_error("event of kind " + std::to_string(h->kind) + " on the " + std::string(to_string(s->priority())) + " lane");
        }
    }
    say(Line("result")("lows", std::int64_t(lows))("flood_late", std::int64_t(late))("flood_late_stalled", std::int64_t(late_stalled)).fields(percentile_fields(idle, "idle_") + percentile_fields(flood, "flood_")).str());
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// Idle: `threads` subscribers, each blocked in receive() on its own empty topic, until the parent says
// "stop"; then one end marker per topic wakes them. What they cost while parked is measured by the parent.

std::string idle_topic(const RoleOptions& o, int i) { return o.topic + "." + std::to_string(o.id) + "." + std::to_string(i); }

int run_idler(const RoleOptions& o) {
    auto bus = connect(o);
    if (!bus) return report_error(bus.error());
    const auto options = TopicOptions().all(layout::kMinCapacity, o.size);  // the topics stay empty: the smallest lanes
    std::vector<RawSubscriber> subs;
    std::vector<RawPublisher> pubs;  // for the end markers; a publisher that does not publish costs nothing
    for (int i = 0; i < o.threads; ++i) {
        auto sub = bus->raw_subscriber(idle_topic(o, i), SubscriberOptions{options, wait_options(o.wait)});
        if (!sub) return report_error("cannot subscribe to '" + idle_topic(o, i) + "': " + sub.error().what());
        auto pub = bus->raw_publisher(idle_topic(o, i), PublisherOptions{options});
        if (!pub) return report_error("cannot publish on '" + idle_topic(o, i) + "': " + pub.error().what());
        subs.push_back(std::move(*sub));
        pubs.push_back(std::move(*pub));
    }
    std::atomic<int> ended{0};
    std::vector<std::jthread> threads;
    for (auto& sub : subs)
        threads.emplace_back([&sub, &ended, &o] {
            auto s = sub.receive();  // no timeout: a lost wake-up shows as the parent's time-out
            if (!s) return (void)report_error(receive_error(s.error()));
            if (auto h = head_of(*s, o.size); h && h->kind == kEnd) ended.fetch_add(1);
            else report_error("an idle subscriber received something other than its end marker");
        });
    say("ready");
    if (auto line = read_command(); line != "stop") return report_error("expected 'stop', got '" + line + "'");
    auto end = make_payload(o.size, kEnd);
    for (auto& pub : pubs)
        if (auto st = pub.publish(std::span<const std::byte>(end)); !st) return report_error("publish end: " + st.error().what());
    threads.clear();  // joins
    if (ended.load() != o.threads) return report_error(std::to_string(o.threads - ended.load()) + " subscriber(s) did not end cleanly");
    say(Line("result")("ended", ended.load()).str());
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// Memory: "open K" makes this process hold publishers on K topics (created with the broker's default
// lanes, as a deployment's would be); it answers "opened topics=K lane_bytes=<ring bytes of one topic>".

int run_opener(const RoleOptions& o) {
    auto bus = connect(o);
    if (!bus) return report_error(bus.error());
    std::vector<RawPublisher> pubs;
    say("ready");
    for (std::string line = read_command(); line.starts_with("open "); line = read_command()) {
        const auto want = std::strtoull(line.c_str() + 5, nullptr, 10);
        while (pubs.size() < want) {
            const auto name = o.topic + "." + std::to_string(pubs.size());
            auto pub = bus->raw_publisher(name);
            if (!pub) return report_error("cannot publish on '" + name + "': " + pub.error().what());
            pubs.push_back(std::move(*pub));
        }
        std::int64_t lane_bytes = 0;
        if (!pubs.empty())
            for (auto& l : pubs.front().topic().lanes) lane_bytes += std::int64_t(l.capacity);
        say(Line("opened")("topics", std::int64_t(pubs.size()))("lane_bytes", lane_bytes).str());
    }
    say(Line("result")("topics", std::int64_t(pubs.size())).str());
    return 0;
}

}  // namespace

std::string_view valid_wait_modes() { return "spin, block, spin-park"; }
bool is_wait_mode(std::string_view mode) { return mode == "spin" || mode == "block" || mode == "spin-park" || mode == "batch"; }

int run_role(const RoleOptions& o) {
    g_child_label = o.role + " " + std::to_string(o.id);
    if (!is_wait_mode(o.wait)) return report_error("--mode must be one of " + std::string(valid_wait_modes()));
    if (o.size < sizeof(PayloadHead)) return report_error("--size must be at least " + std::to_string(sizeof(PayloadHead)));
    if (o.role == "publisher") return run_publisher(o);
    if (o.role == "subscriber") return run_subscriber(o);
    if (o.role == "pinger") return run_pinger(o);
    if (o.role == "echoer") return run_echoer(o);
    if (o.role == "flood-pinger") return run_flood_pinger(o);
    if (o.role == "flood-echoer") return run_flood_echoer(o);
    if (o.role == "flooder") return run_flooder(o);
    if (o.role == "idler") return run_idler(o);
    if (o.role == "opener") return run_opener(o);
    if (o.role == "transport") return run_transport(o);
    if (o.role == "session") return run_session(o);
    if (o.role == "media") return run_media(o);
    if (o.role == "rtp-sender") return run_rtp_sender(o);
    if (o.role == "rtp-receiver") return run_rtp_receiver(o);
    return report_error("unknown role '" + o.role + "'");
}

}  // namespace rvoip::bench
