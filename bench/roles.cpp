#include "bench/roles.hpp"

#include "bench/processes.hpp"
#include "rvoip/events.hpp"

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

// A receive that waits this long for anything means a peer is gone; the parent reports which.
constexpr auto kReceiveTimeout = std::chrono::seconds(30);
// Publishes that met a full lane for this many block timeouts (1 s each) in a row mean the subscriber is gone.
constexpr unsigned kMaxTimeoutsInARow = 30;
constexpr std::chrono::milliseconds kBlockTimeout{1000};

// First 16 bytes of every payload (hence --size >= 16): tells warm-up, measured and end-of-stream events
// apart and carries the ping number. The rest of the payload is filler.
constexpr std::uint32_t kMagic = 0x4e425652;  // "RVBN"
enum Kind : std::uint32_t {
    kWarmup = 1, kData = 2, kEnd = 3, kPing = 4, kPong = 5,
    kIdlePing = 6, kFloodPing = 7, kFlood = 8,  // flood
    kStop = 9,                                  // rtp: the sender is done with all steps
    kSetup = 10, kTeardown = 11, kSip = 12, kState = 13, kMediaStart = 14, kMediaStop = 15, kQuality = 16, kRtpStats = 17,
    kRtp = 18,
};
struct PayloadHead {
    std::uint32_t magic = kMagic;
    std::uint32_t kind = 0;
    std::uint64_t seq = 0;
};
static_assert(sizeof(PayloadHead) == 16);


Done wait_for_go() {
    char buf[16] = {};
    if (!std::fgets(buf, sizeof buf, stdin)) return failure("rvoip-bench went away before saying 'go'");
    if (std::string_view(buf) != "go\n") return failure("expected 'go' from rvoip-bench, got '" + std::string(buf) + "'");
    return {};
}

// CLOCK_MONOTONIC, the clock of the records' publish timestamps: comparable across processes.
std::int64_t now_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::vector<std::byte> make_payload(std::uint32_t size, Kind kind) {
    std::vector<std::byte> p(size, std::byte{0x5a});
    PayloadHead h{kMagic, kind, 0};
    std::memcpy(p.data(), &h, sizeof h);
    return p;
}

void set_seq(std::vector<std::byte>& payload, std::uint64_t seq) noexcept {
    std::memcpy(payload.data() + offsetof(PayloadHead, seq), &seq, sizeof seq);
}

Expected<PayloadHead> head_of(const RawSample& s, std::uint32_t size) {
    auto b = s.bytes();
    if (b.size() != size) return failure("received an event of " + std::to_string(b.size()) + " bytes, expected " + std::to_string(size));
    PayloadHead h;
    std::memcpy(&h, b.data(), sizeof h);
    if (h.magic != kMagic) return failure("received an event without the bench's header");
    return h;
}

// Lossless by default: the lane blocks a publisher that meets it full (up to 1 s per attempt) rather than
// dropping. Both sides pass the same options, so whichever opens the topic first creates it the same way.
// max_event is the bench's exact event size, which lets small lanes (--capacity) be tested too.
TopicOptions topic_options(const RoleOptions& o) {
    return TopicOptions()
        .capacity(Priority::normal, o.capacity)
        .max_event(Priority::normal, o.size)
        .overflow(Priority::normal, Overflow::block, kBlockTimeout);
}

// spin: never park (one core per such process); block: park on the futex at once, to measure the wake-up;
// spin-park: the library's default, spin a little and then park (what a deployment would use).
WaitOptions wait_options(const std::string& mode) {
    if (mode == "spin") return WaitOptions{.spin = 4000, .busy_poll = true};
    if (mode == "block") return WaitOptions{.spin = 0, .busy_poll = false};
    return WaitOptions{};
}

Expected<EventSystem> connect(const RoleOptions& o) {
    auto bus = EventSystemBuilder().socket_path(o.socket).client_name("bench-" + o.role + "-" + std::to_string(o.id)).build();
    if (!bus) return failure("cannot connect to the broker: " + bus.error().what());
    return std::move(*bus);
}

Expected<RawPublisher> open_publisher(EventSystem& bus, const RoleOptions& o, const std::string& topic) {
    auto pub = bus.raw_publisher(topic, PublisherOptions{topic_options(o)});
    if (!pub) return failure("cannot publish on '" + topic + "': " + pub.error().what());
    if (pub->max_event() < o.size)
        return failure("topic '" + topic + "' takes events of at most " + std::to_string(pub->max_event()) + " bytes");
    return std::move(*pub);
}

Expected<RawSubscriber> open_subscriber(EventSystem& bus, const RoleOptions& o, const std::string& topic) {
    auto sub = bus.raw_subscriber(topic, SubscriberOptions{topic_options(o), wait_options(o.wait)});
    if (!sub) return failure("cannot subscribe to '" + topic + "': " + sub.error().what());
    return std::move(*sub);
}

std::string receive_error(const Error& e) {
    if (e.code == Errc::timeout) return "nothing received for " + std::to_string(kReceiveTimeout.count()) + " s: the peer is gone";
    return "receive: " + e.what();
}

// ------------------------------------------------------------------------------------------------------
// Throughput.

// Publishes one batch (publish() for one event, publish_batch() for more). A timeout means the lane stayed
// full for a whole block timeout: count it and try again, never drop an event.
Done publish_retrying(RawPublisher& pub, std::span<const std::span<const std::byte>> batch, std::uint64_t& timeouts,
                      Priority p = Priority::normal) {
    for (unsigned in_a_row = 0;;) {
        auto st = batch.size() == 1 ? pub.publish(batch[0], p) : pub.publish_batch(batch, p);
        if (st) [[likely]]
            return {};
        if (st.error().code != Errc::timeout) return failure("publish: " + st.error().what());
        ++timeouts;
        if (++in_a_row == kMaxTimeoutsInARow)
            return failure("the lane stayed full for " + std::to_string(kMaxTimeoutsInARow) + " s: the subscriber is gone or stuck");
    }
}

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

// Reads every byte of a payload, as a consumer that parses it would (--touch-payload). The sum is reported
// so the compiler cannot drop the reads.
std::uint64_t touch(std::span<const std::byte> b) noexcept {
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i + 8 <= b.size(); i += 8) {
        std::uint64_t w;
        std::memcpy(&w, b.data() + i, sizeof w);
        sum += w;
    }
    return sum;
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

// Nearest-rank percentiles of the samples as " <prefix>samples=N <prefix>min=..." fields of a result line.
std::string percentile_fields(std::vector<std::int64_t>& v, const std::string& prefix) {
    if (v.empty()) return " " + prefix + "samples=0";
    std::sort(v.begin(), v.end());
    long double sum = 0;
    for (auto x : v) sum += x;
    const char* k = prefix.c_str();
    char line[400];
    std::snprintf(line, sizeof line,
                  " %ssamples=%zu %smin=%" PRId64 " %sp50=%" PRId64 " %sp90=%" PRId64 " %sp99=%" PRId64 " %sp999=%" PRId64
                  " %smax=%" PRId64 " %smean=%" PRId64,
                  k, v.size(), k, v.front(), k, percentile(v, 0.50), k, percentile(v, 0.90), k, percentile(v, 0.99), k,
                  percentile(v, 0.999), k, v.back(), k, static_cast<std::int64_t>(sum / v.size()));
    return line;
}

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
// Shared by the scenario roles below.

// Builds a protocol line: Line("result")("events", 5).str() == "result events=5".
class Line {
public:
    explicit Line(std::string head) : text_(std::move(head)) {}
    Line& operator()(std::string_view key, std::int64_t value) {
        text_ += ' ';
        text_ += key;
        text_ += '=';
        text_ += std::to_string(value);
        return *this;
    }
    Line& fields(const std::string& more) {
        text_ += more;
        return *this;
    }
    const std::string& str() const { return text_; }

private:
    std::string text_;
};

// One line from the parent ("go idle", "step 1000 3", "stop"), without its newline; empty at EOF.
std::string read_command() {
    char buf[128] = {};
    if (!std::fgets(buf, sizeof buf, stdin)) return {};
    std::string line(buf);
    if (!line.empty() && line.back() == '\n') line.pop_back();
    return line;
}

// Set once the parent says "stop" or goes away. A thread waits on stdin so that a paced loop checks a flag
// instead of making a syscall per tick.
std::atomic<bool> g_stop{false};

void watch_for_stop() {
    std::thread([] {
        for (std::string line = read_command(); !line.empty() && line != "stop"; line = read_command()) {
        }
        g_stop.store(true);
    }).detach();
}

// Ticks at fixed CLOCK_MONOTONIC times start + k * period, slept to with absolute deadlines so that errors
// do not accumulate. done() records how late a tick's work finished (its lag): a producer that keeps up
// finishes each tick well before the next one is due.
class Pacer {
public:
    explicit Pacer(std::int64_t period_ns, std::int64_t late_after_ns) : period_(period_ns), late_after_(late_after_ns) {
        // The default timer slack (50 us) would make every wake-up late by up to that much.
        ::prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(std::clamp<std::int64_t>(period_ns / 20, 1, 50'000)));
        start_ = now_ns();
    }
    std::int64_t start() const noexcept { return start_; }
    std::int64_t due(std::uint64_t k) const noexcept { return start_ + static_cast<std::int64_t>(k) * period_; }

    // Sleeps until tick k is due (returns at once when it is already past); returns its due time.
    std::int64_t wait(std::uint64_t k) noexcept {
        const std::int64_t at = due(k);
        const timespec ts{static_cast<time_t>(at / 1'000'000'000), static_cast<long>(at % 1'000'000'000)};
        while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
        }
        woke_ = now_ns();
        return at;
    }
    // The work of the tick due at `at` is done; returns its lag. A late tick is the scheduler's when the
    // pacer woke late by more than the tick's work took (the wake-up came late: nothing of the bus ran
    // yet), the bus's otherwise (its publishing, or the receiving done in the tick, took the time).
    std::int64_t done(std::int64_t at) noexcept {
        const std::int64_t end = now_ns();
        const std::int64_t lag = end - at, wake = std::max<std::int64_t>(0, woke_ - at), work = end - woke_;
        max_lag_ = std::max(max_lag_, lag);
        max_wake_ = std::max(max_wake_, wake);
        max_work_ = std::max(max_work_, work);
        if (lag > late_after_) ++(wake > work ? late_sched_ : late_bus_);
        ++ticks_;
        return lag;
    }
    Line& report(Line& l) const {
        return l("ticks", std::int64_t(ticks_))("late_ticks", std::int64_t(late_sched_ + late_bus_))("late_ticks_sched", std::int64_t(late_sched_))(
            "late_ticks_bus", std::int64_t(late_bus_))("max_lag_ns", max_lag_)("max_wake_late_ns", max_wake_)("max_work_ns", max_work_);
    }

private:
    std::int64_t period_;
    std::int64_t late_after_;
    std::int64_t start_ = 0;
    std::int64_t woke_ = 0;
    std::int64_t max_lag_ = 0, max_wake_ = 0, max_work_ = 0;
    std::uint64_t late_sched_ = 0, late_bus_ = 0;
    std::uint64_t ticks_ = 0;
};

// The first 16 bytes of a received payload: every bench payload starts with a PayloadHead.
Expected<PayloadHead> head_of(const RawSample& s) {
    auto b = s.bytes();
    PayloadHead h;
    if (b.size() < sizeof h) return failure("received an event of " + std::to_string(b.size()) + " bytes, too short for the bench's header");
    std::memcpy(&h, b.data(), sizeof h);
    if (h.magic != kMagic) return failure("received an event without the bench's header");
    return h;
}

// Publishes each struct of `events` as one raw record, all with one publish_batch.
template <class T>
Done publish_structs(RawPublisher& pub, std::span<const T> events, Priority p, std::uint64_t& timeouts) {
    if (events.empty()) return {};
    thread_local std::vector<std::span<const std::byte>> spans;
    spans.clear();
    for (const auto& e : events) spans.push_back(std::as_bytes(std::span(&e, 1)));
    return publish_retrying(pub, spans, timeouts, p);
}

template <class T>
Done publish_struct(RawPublisher& pub, const T& event, Priority p, std::uint64_t& timeouts) {
    return publish_structs(pub, std::span<const T>(&event, 1), p, timeouts);
}

Done publish_end(RawPublisher& pub, Priority p, std::uint64_t& timeouts) {
    return publish_struct(pub, PayloadHead{kMagic, kEnd, 0}, p, timeouts);
}

// Refusals and delays a publisher met on one lane: any of them means a consumer did not keep up.
std::int64_t full_count(const RawPublisher& pub, Priority p) {
    auto c = pub.counters(p);
    return std::int64_t(c.full) + std::int64_t(c.timeouts);
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

// ------------------------------------------------------------------------------------------------------
// Callstorm: the signalling and media control of a node with `calls` concurrent calls of 180 s on average,
// so calls/180 new calls and as many call ends per second. Three processes:
//   transport  per 1 ms tick: 10 SIP messages (300 B - 2 KB) per call setup and 4 per teardown on
//              sip.message (Normal), one call.control event (Critical) per setup or teardown; consumes
//              call.state
//   session    consumes sip.message and call.control; per setup or teardown publishes call.state (High)
//              and media.command (Normal); consumes media.quality and rtp.stats
//   media      consumes media.command (keeps the count of active calls); per 1 ms tick publishes
//              media.quality and rtp.stats (Low), one of each per active call every 5 s
// Every topic has a consumer, so the CPU figures include what reading the events costs. A Subscriber
// serves one topic, so each consumer is a thread of its own that parks on its own doorbell when idle.
// Each topic ends with an end marker from its publisher: transport and media stop after `seconds` (or at
// "stop" when seconds is 0), session forwards the end once call.control has ended.

namespace storm {

constexpr double kMeanCallSeconds = 180;
constexpr double kReportSeconds = 5;  // media.quality and rtp.stats: one of each per active call every 5 s
constexpr std::int64_t kTickNs = 1'000'000;
constexpr std::int64_t kLateNs = 10'000'000;  // a tick whose events went out 10 ms late: the producer fell behind
constexpr std::uint32_t kSipPerSetup = 10, kSipPerTeardown = 4;
constexpr std::uint32_t kSipMin = 300, kSipMax = 2000;

struct CallControl {
    PayloadHead head;
    char call_id[48];
    char from_tag[16];
    char to_tag[16];
    std::uint32_t codec;
    std::uint32_t ptime_ms;
};
struct CallState {
    PayloadHead head;
    std::uint32_t state;  // 1 established, 2 terminated
    std::uint32_t cause;
};
struct MediaCommand {
    PayloadHead head;
    char remote_addr[48];
    std::uint32_t remote_port;
    std::uint32_t codec;
};
struct MediaQuality {
    PayloadHead head;
    float mos, jitter_ms, loss_percent;
    std::uint32_t rtt_ms;
};
struct RtpStats {
    PayloadHead head;
    std::uint64_t packets_sent, packets_received, octets_sent, octets_received;
    std::uint32_t lost, jitter;
};

// With a shared broker (--socket) the parent passes a suffix in o.topic, so a run never meets a
// deployment's topics of the same name.
std::string topic(const RoleOptions& o, std::string_view base) { return std::string(base) + o.topic; }

// Errors in a process with consumer threads: report and leave at once, since joining threads that wait
// for end markers would hang. The broker releases our slots when it sees the process gone.
[[noreturn]] void die(const std::string& msg) {
    report_error(msg);
    std::fflush(stderr);
    std::_Exit(1);
}

template <class T>
T must(Expected<T> v) {
    if (!v) die(v.error());
    return std::move(*v);
}
void must(const Done& d) {
    if (!d) die(d.error());
}

// These are a node's hot topics: a deployment gives them big rings by [[topic]] pattern. They ask for the
// rings every topic had by default until the defaults were sized for many quiet topics (1, 2, 4 and 4 MiB;
// the other settings stay the broker's), so that figures stay comparable with earlier runs.
TopicOptions storm_lanes() {
    TopicOptions t;
    const std::uint64_t capacity[layout::kLanes] = {1u << 20, 2u << 20, 4u << 20, 4u << 20};
    for (std::size_t l = 0; l < layout::kLanes; ++l) t.capacity(Priority(l), capacity[l]);
    return t;
}
Expected<RawPublisher> open_pub(EventSystem& bus, const std::string& name) {
    auto pub = bus.raw_publisher(name, PublisherOptions{storm_lanes()});
    if (!pub) return failure("cannot publish on '" + name + "': " + pub.error().what());
    return std::move(*pub);
}
Expected<RawSubscriber> open_sub(EventSystem& bus, const std::string& name, const RoleOptions& o) {
    auto sub = bus.raw_subscriber(name, SubscriberOptions{storm_lanes(), wait_options(o.wait)});
    if (!sub) return failure("cannot subscribe to '" + name + "': " + sub.error().what());
    return std::move(*sub);
}

// What one consumer thread saw of its topic.
struct Drained {
    std::uint64_t events = 0;
    std::vector<std::int64_t> latency;  // receive time minus publish timestamp, per event
    std::int64_t end_latency = -1;      // the same for the end marker: how far behind the consumer was at the end

    // Counts a received sample: the latency of an event, whose head it returns, or at the end marker
    // (nullopt) how far behind the consumer was.
    std::optional<PayloadHead> take(const EventSystem& bus, const RawSample& s) {
        const std::int64_t lat = bus.now_ns() - s.timestamp_ns();
        const auto h = must(head_of(s));
        if (h.kind == kEnd) {
            end_latency = lat;
            return std::nullopt;
        }
        ++events;
        latency.push_back(lat);
        return h;
    }

    std::string fields(const std::string& prefix) {
        return Line("")(prefix + "received", std::int64_t(events))(prefix + "end_ns", end_latency).str() + percentile_fields(latency, prefix);
    }
};

// Receives until the end marker; on_event(sample, head) handles each event.
template <class OnEvent>
void drain(const EventSystem& bus, RawSubscriber& sub, Drained& d, OnEvent&& on_event) {
    std::vector<RawSample> batch(64);
    d.latency.reserve(1 << 16);
    for (;;) {
        auto n = sub.receive_batch(std::span(batch), kReceiveTimeout);
        if (!n) die("'" + sub.topic().name + "': " + receive_error(n.error()));
        for (std::size_t i = 0; i < *n; ++i) {
            auto& s = batch[i];
            const auto h = d.take(bus, s);
            if (!h) return;  // the end marker
            on_event(s, *h);
            s.reset();  // release at once: a held sample holds back the topic's publishers
        }
    }
}

// Takes what `sub` has ready, without waiting (a tick loop's consumer: what came since the last tick);
// true once the end marker came.
template <class OnEvent>
bool drain_ready(const EventSystem& bus, RawSubscriber& sub, Drained& d, OnEvent&& on_event) {
    for (;;) {
        auto s = sub.try_receive();
        if (!s) {
            if (s.error().code == Errc::would_block) return false;
            die("'" + sub.topic().name + "': " + receive_error(s.error()));
        }
        const auto h = d.take(bus, *s);
        if (!h) return true;
        on_event(*s, *h);
    }
}

// Receives from every subscription of `set` until each has had its end marker (then it leaves the set
// and on_end(index) runs); on_event(index, sample, head) handles each event; d[index] counts for
// subscription `index`.
template <class OnEvent, class OnEnd>
void drain_set(const EventSystem& bus, WaitSet& set, std::span<Drained* const> d, OnEvent&& on_event, OnEnd&& on_end) {
    for (auto* x : d) x->latency.reserve(1 << 16);
    while (set.size() > 0) {
        auto s = set.receive_any_for(kReceiveTimeout);
        if (!s) {
            const auto* t = set.topic(set.last_error_index());
            die("'" + (t ? t->name : std::string("?")) + "': " + receive_error(s.error()));
        }
        const std::size_t i = s->index();
        const auto h = d[i]->take(bus, *s);
        if (!h) {  // the end marker
            s->reset();  // a subscription leaves the set only with no sample of it held
            if (auto st = set.remove(i); !st) die(st.error().what());
            on_end(i);
            continue;
        }
        on_event(i, *s, *h);
    }
}

// How many events of a rate of `per_tick` fall in tick k >= 1: the whole count up to k minus that up to
// k - 1, so fractions carry over from tick to tick.
std::uint64_t due_in_tick(double per_tick, std::uint64_t k) {
    return static_cast<std::uint64_t>(std::floor(double(k) * per_tick) - std::floor(double(k - 1) * per_tick));
}

// The tick loop's end: `seconds` after the start, or the parent's "stop" when seconds is 0.
bool finished(const RoleOptions& o, const Pacer& pacer, std::int64_t due) {
    return g_stop.load(std::memory_order_relaxed) || (o.seconds > 0 && due - pacer.start() > std::int64_t(o.seconds * 1e9));  // relaxed: a flag
}

// SIP-looking payloads of 300 B to 2 KB. One publish_batch carries a tick's messages, so each message of a
// tick has a buffer of its own.
class SipMessages {
public:
    std::span<const std::byte> make(std::size_t i, std::uint64_t call) {
        while (pool_.size() <= i) pool_.push_back(filler());
        auto& buf = pool_[i];
        const PayloadHead h{kMagic, kSip, call};
        std::memcpy(buf.data(), &h, sizeof h);
        return std::span<const std::byte>(buf.data(), kSipMin + next() % (kSipMax - kSipMin + 1));
    }

private:
    static std::vector<std::byte> filler() {
        static constexpr std::string_view text =
            "INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
            "Max-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.example.com>\r\nFrom: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n";
        std::vector<std::byte> b(kSipMax);
        for (std::size_t i = sizeof(PayloadHead); i < b.size(); ++i) b[i] = std::byte(text[i % text.size()]);
        return b;
    }
    std::uint64_t next() noexcept {  // xorshift64: sizes vary, the same way on every run
        rng_ ^= rng_ << 13, rng_ ^= rng_ >> 7, rng_ ^= rng_ << 17;
        return rng_;
    }
    std::vector<std::vector<std::byte>> pool_;
    std::uint64_t rng_ = 0x9e3779b97f4a7c15ull;
};

CallControl call_control(std::uint64_t call, Kind kind) {
    CallControl c{};
    c.head = PayloadHead{kMagic, kind, call};
    std::snprintf(c.call_id, sizeof c.call_id, "a84b4c76e66710-%" PRIu64 "@pc33.atlanta.example.com", call);
    std::snprintf(c.from_tag, sizeof c.from_tag, "%" PRIx64, call * 2654435761u);
    std::snprintf(c.to_tag, sizeof c.to_tag, "%" PRIx64, call * 40503u);
    c.codec = 8;  // PCMA
    c.ptime_ms = 20;
    return c;
}

struct TransportCounts {
    std::uint64_t sip = 0, control = 0, timeouts = 0;
};

// Calls 0..calls-1 are up when the run starts (steady state); each tick ends the oldest ones and starts
// new ones, at the same rate, so the number of calls stays put.
template <class EachTick>
void transport_ticks(const RoleOptions& o, RawPublisher& sip, RawPublisher& control, Pacer& pacer, TransportCounts& n, EachTick&& each_tick) {
    const double per_tick = double(o.calls) / kMeanCallSeconds * (double(kTickNs) / 1e9);
    SipMessages messages;
    std::vector<std::span<const std::byte>> sip_batch;
    std::vector<CallControl> controls;
    std::uint64_t next_new = o.calls, next_ended = 0;
    auto add_call = [&](std::uint64_t call, Kind kind, std::uint32_t sip_messages) {
        for (std::uint32_t j = 0; j < sip_messages; ++j) sip_batch.push_back(messages.make(sip_batch.size(), call));
        controls.push_back(call_control(call, kind));
    };
    for (std::uint64_t k = 1;; ++k) {
        const std::int64_t due = pacer.wait(k);
        if (finished(o, pacer, due)) break;
        each_tick();
        sip_batch.clear();
        controls.clear();
        for (auto i = due_in_tick(per_tick, k); i > 0; --i) add_call(next_ended++, kTeardown, kSipPerTeardown);
        for (auto i = due_in_tick(per_tick, k); i > 0; --i) add_call(next_new++, kSetup, kSipPerSetup);
        if (!sip_batch.empty()) must(publish_retrying(sip, sip_batch, n.timeouts, Priority::normal));
        must(publish_structs(control, std::span<const CallControl>(controls), Priority::critical, n.timeouts));
        n.sip += sip_batch.size();
        n.control += controls.size();
        pacer.done(due);
    }
}

}  // namespace storm

int run_transport(const RoleOptions& o) {
    using namespace storm;
    auto bus = must(connect(o));
    auto sip = must(open_pub(bus, topic(o, "sip.message")));
    auto control = must(open_pub(bus, topic(o, "call.control")));
    auto state_sub = must(open_sub(bus, topic(o, "call.state"), o));
    say("ready");
    must(wait_for_go());
    watch_for_stop();
    const std::int64_t cpu0 = own_cpu_ns();

    Drained state;
    auto ignore = [](const RawSample&, const PayloadHead&) {};
    Pacer pacer(kTickNs, kLateNs);
    TransportCounts n;
    bool state_ended = false;
    if (o.per_subscription) {  // a consumer thread of its own, parked on call.state's doorbell
        std::jthread consumer([&] { drain(bus, state_sub, state, ignore); });
        transport_ticks(o, sip, control, pacer, n, [] {});
        must(publish_end(sip, Priority::normal, n.timeouts));
        must(publish_end(control, Priority::critical, n.timeouts));
        consumer.join();  // call.state ends once session has seen the end of call.control
        state_ended = true;
    } else {  // one thread: each tick first takes the call states that came since the last one
        transport_ticks(o, sip, control, pacer, n, [&] { state_ended |= drain_ready(bus, state_sub, state, ignore); });
    }
    const std::int64_t end = now_ns();
    if (!state_ended) {
        must(publish_end(sip, Priority::normal, n.timeouts));
        must(publish_end(control, Priority::critical, n.timeouts));
        drain(bus, state_sub, state, ignore);  // until call.state's end, once session has seen call.control's
    }

    Line line("result");
    line("start_ns", pacer.start())("end_ns", end)("sip_published", std::int64_t(n.sip))("control_published", std::int64_t(n.control));
    line("full", full_count(sip, Priority::normal) + full_count(control, Priority::critical))("cpu_ns", own_cpu_ns() - cpu0);
    pacer.report(line).fields(state.fields("state_"));
    say(line.str());
    return 0;
}

int run_session(const RoleOptions& o) {
    using namespace storm;
    auto bus = must(connect(o));
    auto sip_sub = must(open_sub(bus, topic(o, "sip.message"), o));
    auto control_sub = must(open_sub(bus, topic(o, "call.control"), o));
    auto quality_sub = must(open_sub(bus, topic(o, "media.quality"), o));
    auto stats_sub = must(open_sub(bus, topic(o, "rtp.stats"), o));
    auto state_pub = must(open_pub(bus, topic(o, "call.state")));
    auto command_pub = must(open_pub(bus, topic(o, "media.command")));
    say("ready");
    must(wait_for_go());
    const std::int64_t cpu0 = own_cpu_ns();

    Drained sip, control, quality, stats;
    std::uint64_t sip_checksum = 0;
    // Each call.control setup or teardown becomes a call state and a media command.
    std::uint64_t published = 0, timeouts = 0;
    auto on_control = [&](const PayloadHead& h) {
        const bool setup = h.kind == kSetup;
        const CallState st{{kMagic, kState, h.seq}, setup ? 1u : 2u, setup ? 0u : 16u};
        MediaCommand mc{{kMagic, setup ? kMediaStart : kMediaStop, h.seq}, "198.51.100.7", std::uint32_t(20000 + 2 * (h.seq % 10000)), 8};
        must(publish_struct(state_pub, st, Priority::high, timeouts));
        must(publish_struct(command_pub, mc, Priority::normal, timeouts));
        ++published;
    };
    if (o.per_subscription) {  // a thread per subscription, each parked on its own doorbell
        auto ignore = [](const RawSample&, const PayloadHead&) {};
        std::jthread sip_thread([&] { drain(bus, sip_sub, sip, [&](const RawSample& s, const PayloadHead&) { sip_checksum += touch(s.bytes()); }); });
        std::jthread quality_thread([&] { drain(bus, quality_sub, quality, ignore); });
        std::jthread stats_thread([&] { drain(bus, stats_sub, stats, ignore); });
        drain(bus, control_sub, control, [&](const RawSample&, const PayloadHead& h) { on_control(h); });
        must(publish_end(state_pub, Priority::high, timeouts));
        must(publish_end(command_pub, Priority::normal, timeouts));
        for (auto* t : {&sip_thread, &quality_thread, &stats_thread}) t->join();
    } else {  // one thread, one WaitSet: Critical call.control first across the four topics, one wake per tick
        // Low reports (media.quality, rtp.stats) do not wake it: they are taken when SIP or call control
        // does, every tick, and within 5 ms otherwise.
        WaitOptions wait = wait_options(o.wait);
        wait.wake_lanes = 0b0111;
        wait.deferred_delay = std::chrono::milliseconds(5);
        WaitSet set(wait);
        std::array<Drained*, 4> drained{};
        using Entry = std::pair<RawSubscriber*, Drained*>;
        for (auto [sub, d] : {Entry{&control_sub, &control}, Entry{&sip_sub, &sip}, Entry{&quality_sub, &quality}, Entry{&stats_sub, &stats}})
        {
            auto index = set.add(std::move(*sub));
            if (!index) die(index.error().what());
            drained[*index] = d;
        }
        auto on_event = [&](std::size_t i, const RawSample& s, const PayloadHead& h) {
            if (drained[i] == &control) on_control(h);
            else if (drained[i] == &sip) sip_checksum += touch(s.bytes());
        };
        drain_set(bus, set, drained, on_event, [&](std::size_t i) {
            if (drained[i] != &control) return;
            must(publish_end(state_pub, Priority::high, timeouts));  // as soon as call.control ended, as above
            must(publish_end(command_pub, Priority::normal, timeouts));
        });
    }

    Line line("result");
    line("state_published", std::int64_t(published))("command_published", std::int64_t(published));
    line("full", full_count(state_pub, Priority::high) + full_count(command_pub, Priority::normal))("cpu_ns", own_cpu_ns() - cpu0);
    line("sip_checksum", std::int64_t(sip_checksum & 0xffff));
    line.fields(sip.fields("sip_") + control.fields("control_") + quality.fields("quality_") + stats.fields("rtpstats_"));
    say(line.str());
    return 0;
}

namespace storm {

struct MediaCounts {
    std::uint64_t quality = 0, stats = 0, timeouts = 0;
};

// Per tick, the reports due for the calls active now (one of each per call every 5 s), round robin.
template <class EachTick>
void media_ticks(const RoleOptions& o, RawPublisher& quality, RawPublisher& stats, const std::atomic<std::int64_t>& active,
                 Pacer& pacer, MediaCounts& n, EachTick&& each_tick) {
    double owed = 0;  // reports due but not sent yet: fractions carry over
    std::uint64_t next_call = 0;
    std::vector<MediaQuality> qs;
    std::vector<RtpStats> rs;
    for (std::uint64_t k = 1;; ++k) {
        const std::int64_t due = pacer.wait(k);
        if (finished(o, pacer, due)) break;
        each_tick();
        owed += double(std::max<std::int64_t>(0, active.load(std::memory_order_relaxed))) * (double(kTickNs) / 1e9) / kReportSeconds;  // relaxed: a count
        const auto count = static_cast<std::size_t>(owed);
        owed -= double(count);
        qs.resize(count);
        rs.resize(count);
        for (std::size_t i = 0; i < count; ++i, ++next_call) {
            qs[i] = MediaQuality{{kMagic, kQuality, next_call}, 4.2f, 3.5f, 0.1f, 42};
            rs[i] = RtpStats{{kMagic, kRtpStats, next_call}, 250, 250, 43000, 43000, 0, 28};
        }
        must(publish_structs(quality, std::span<const MediaQuality>(qs), Priority::low, n.timeouts));
        must(publish_structs(stats, std::span<const RtpStats>(rs), Priority::low, n.timeouts));
        n.quality += count;
        n.stats += count;
        pacer.done(due);
    }
}

}  // namespace storm

int run_media(const RoleOptions& o) {
    using namespace storm;
    auto bus = must(connect(o));
    auto command_sub = must(open_sub(bus, topic(o, "media.command"), o));
    auto quality = must(open_pub(bus, topic(o, "media.quality")));
    auto stats = must(open_pub(bus, topic(o, "rtp.stats")));
    say("ready");
    must(wait_for_go());
    watch_for_stop();
    const std::int64_t cpu0 = own_cpu_ns();

    std::atomic<std::int64_t> active{std::int64_t(o.calls)};
    Drained commands;
    auto on_command = [&](const RawSample&, const PayloadHead& h) {
        active.fetch_add(h.kind == kMediaStart ? 1 : -1, std::memory_order_relaxed);  // relaxed: a count
    };
    Pacer pacer(kTickNs, kLateNs);
    MediaCounts n;
    std::int64_t end = 0;
    if (o.per_subscription) {  // a consumer thread of its own, parked on media.command's doorbell
        std::jthread consumer([&] { drain(bus, command_sub, commands, on_command); });
        media_ticks(o, quality, stats, active, pacer, n, [] {});
        end = now_ns();
        must(publish_end(quality, Priority::low, n.timeouts));
        must(publish_end(stats, Priority::low, n.timeouts));
        consumer.join();  // media.command ends once session has seen the end of call.control
    } else {  // one thread: each tick first takes the media commands that came since the last one
        bool ended = false;
        media_ticks(o, quality, stats, active, pacer, n, [&] { ended |= drain_ready(bus, command_sub, commands, on_command); });
        end = now_ns();
        must(publish_end(quality, Priority::low, n.timeouts));
        must(publish_end(stats, Priority::low, n.timeouts));
        if (!ended) drain(bus, command_sub, commands, on_command);
    }

    Line line("result");
    line("start_ns", pacer.start())("end_ns", end)("quality_published", std::int64_t(n.quality))("rtpstats_published", std::int64_t(n.stats));
    line("full", full_count(quality, Priority::low) + full_count(stats, Priority::low))("cpu_ns", own_cpu_ns() - cpu0);
    line("active_calls", active.load());
    pacer.report(line).fields(commands.fields("command_"));
    say(line.str());
    return 0;
}

// ------------------------------------------------------------------------------------------------------
// RTP: the sender publishes two packets of `size` (172) bytes per call per 20 ms tick (50 packets/s each
// way), all of a tick with one publish_batch; the receiver drains them. Parent to sender: "warmup" (it
// answers "warm ..."), then "step C S L" (C calls for S seconds, ending early after more than L late
// ticks; it answers "step ..."), then "stop". The receiver answers "step ..." at each step's end marker
// (and the warm-up's) and ends at the stop marker.

namespace rtp {

constexpr std::int64_t kTickNs = 20'000'000;
constexpr std::uint64_t kPacketsPerCallTick = 2;

// The first 32 bytes of each packet, where its RTP header and the start of its audio would be.
struct Head {
    std::uint32_t magic;
    std::uint32_t kind;  // kRtp, kWarmup, kEnd (end of a step or of the warm-up), kStop
    std::uint32_t tick;
    std::uint32_t index;  // within the tick
    std::uint32_t count;  // packets in the tick
    std::uint32_t step;
    std::int64_t next_tick_ns;  // CLOCK_MONOTONIC time the next tick is due: this tick must be drained by then
};
static_assert(sizeof(Head) == 32);

TopicOptions topic_options(const RoleOptions& o) {
    return TopicOptions()
        .capacity(Priority::normal, o.capacity)
        .max_event(Priority::normal, o.size)
        .overflow(Priority::normal, Overflow::block, kBlockTimeout);
}

Done publish_marker(RawPublisher& pub, const RoleOptions& o, Head h, std::uint64_t& timeouts) {
    std::vector<std::byte> packet(o.size);
    std::memcpy(packet.data(), &h, sizeof h);
    const std::span<const std::byte> one[] = {packet};
    return publish_retrying(pub, one, timeouts);
}

// One step: `calls` calls for `seconds`. It ends early once more than `allowed_late` ticks were late: the
// step has failed then, and a larger load would only take longer to say so.
std::string step(RawPublisher& pub, const RoleOptions& o, std::uint64_t calls, double seconds, std::uint64_t allowed_late,
                 std::uint32_t number) {
    const std::size_t n = calls * kPacketsPerCallTick;
    std::vector<std::byte> packets(n * o.size, std::byte{0xd5});  // 0xd5: G.711 A-law silence
    std::vector<std::span<const std::byte>> batch(n);
    for (std::size_t i = 0; i < n; ++i) batch[i] = std::span<const std::byte>(packets.data() + i * o.size, o.size);
    const auto ticks = std::max<std::int64_t>(1, std::llround(seconds * 1e9 / double(kTickNs)));
    std::uint64_t timeouts = 0, late = 0;
    // One unmeasured tick first (packets the receiver throws away), then a pause of two ticks for it to
    // drain: the step's new buffers and the caches are warm when its first measured tick is due.
    const Head warm{kMagic, kWarmup, 0, 0, 0, number, 0};
    for (std::size_t i = 0; i < n; ++i) std::memcpy(packets.data() + i * o.size, &warm, sizeof warm);
    storm::must(publish_retrying(pub, batch, timeouts));
    std::this_thread::sleep_for(std::chrono::nanoseconds(2 * kTickNs));
    const std::int64_t cpu0 = own_cpu_ns();
    Pacer pacer(kTickNs, kTickNs);  // late: not all published within the tick's own 20 ms
    std::int64_t sent = 0;
    while (sent < ticks) {
        const std::int64_t due = pacer.wait(std::uint64_t(sent));
        for (std::size_t i = 0; i < n; ++i) {  // what a packetizer does: a new header on every packet
            const Head h{kMagic, kRtp, std::uint32_t(sent), std::uint32_t(i), std::uint32_t(n), number, due + kTickNs};
            std::memcpy(packets.data() + i * o.size, &h, sizeof h);
        }
        storm::must(publish_retrying(pub, batch, timeouts));
        ++sent;
        if (pacer.done(due) > kTickNs && ++late > allowed_late) break;
    }
    storm::must(publish_marker(pub, o, Head{kMagic, kEnd, std::uint32_t(sent), 0, 0, number, 0}, timeouts));
    Line line("step");
    line("calls", std::int64_t(calls))("events", sent * std::int64_t(n))("timeouts", std::int64_t(timeouts))("cpu_ns", own_cpu_ns() - cpu0);
    return pacer.report(line).str();
}

// Two laps of the ring before the first step, so that no step pays for the first touch of the ring's
// pages (a page fault per 16 packets, in both processes).
std::string warm_up(RawPublisher& pub, const RoleOptions& o) {
    const std::uint64_t records = 2 * o.capacity / layout::record_size(o.size);
    std::vector<std::byte> packet(o.size);
    const Head h{kMagic, kWarmup, 0, 0, 0, 0, 0};
    std::memcpy(packet.data(), &h, sizeof h);
    const std::vector<std::span<const std::byte>> batch(1024, std::span<const std::byte>(packet));
    std::uint64_t timeouts = 0;
    for (std::uint64_t done = 0; done < records; done += batch.size()) storm::must(publish_retrying(pub, batch, timeouts));
    storm::must(publish_marker(pub, o, Head{kMagic, kEnd, 0, 0, 0, 0, 0}, timeouts));
    return Line("warm")("events", std::int64_t(records)).str();
}

// The receiver's view of one step.
struct Tally {
    std::uint64_t events = 0, ticks = 0, late = 0;
    std::int64_t max_drain = 0;  // from a tick's due time to its last packet received
    std::uint32_t tick = 0, next_index = 0;
    std::int64_t cpu0 = own_cpu_ns();

    Done packet(const Head& h, std::int64_t now) {
        if (h.index != next_index || (h.index > 0 && h.tick != tick))
            return failure("packet " + std::to_string(h.index) + " of tick " + std::to_string(h.tick) + " where " +
                           std::to_string(next_index) + " of tick " + std::to_string(tick) + " was due: lost or out of order");
        tick = h.tick;
        ++events;
        next_index = h.index + 1;
        if (next_index < h.count) return {};
        next_index = 0;  // the tick's last packet: the tick is drained
        ++ticks;
        max_drain = std::max(max_drain, now - (h.next_tick_ns - kTickNs));
        if (now > h.next_tick_ns) ++late;
        return {};
    }
    std::string report() const {
        return Line("step")("events", std::int64_t(events))("ticks", std::int64_t(ticks))("late_ticks", std::int64_t(late))(
                   "max_drain_ns", max_drain)("cpu_ns", own_cpu_ns() - cpu0)
            .str();
    }
};

}  // namespace rtp

int run_rtp_sender(const RoleOptions& o) {
    auto bus = storm::must(connect(o));
    auto pub = bus.raw_publisher(o.topic, PublisherOptions{rtp::topic_options(o)});
    if (!pub) return report_error("cannot publish on '" + o.topic + "': " + pub.error().what());
    say("ready");
    std::uint32_t number = 0;
    for (std::string line = read_command(); line.starts_with("step ") || line == "warmup"; line = read_command()) {
        if (line == "warmup") {
            say(rtp::warm_up(*pub, o));
            continue;
        }
        unsigned long long calls = 0, allowed_late = 0;
        double seconds = 0;
        if (std::sscanf(line.c_str(), "step %llu %lf %llu", &calls, &seconds, &allowed_late) != 3 || calls == 0)
            return report_error("expected 'step CALLS SECONDS ALLOWED_LATE_TICKS', got '" + line + "'");
        say(rtp::step(*pub, o, calls, seconds, allowed_late, number++));
    }
    std::uint64_t timeouts = 0;
    storm::must(rtp::publish_marker(*pub, o, rtp::Head{kMagic, kStop, 0, 0, 0, number, 0}, timeouts));
    say(Line("result")("steps", number).str());
    return 0;
}

int run_rtp_receiver(const RoleOptions& o) {
    auto bus = storm::must(connect(o));
    auto sub = bus.raw_subscriber(o.topic, SubscriberOptions{rtp::topic_options(o), wait_options(o.wait)});
    if (!sub) return report_error("cannot subscribe to '" + o.topic + "': " + sub.error().what());
    say("ready");
    std::vector<RawSample> batch(256);
    rtp::Tally tally;
    for (;;) {
        auto n = sub->receive_batch(std::span(batch), kReceiveTimeout);
        if (!n) return report_error(receive_error(n.error()));
        const std::int64_t now = now_ns();  // CLOCK_MONOTONIC, the sender's pacing clock
        for (std::size_t i = 0; i < *n; ++i) {
            auto b = batch[i].bytes();
            rtp::Head h;
            if (b.size() != o.size) return report_error("received a packet of " + std::to_string(b.size()) + " bytes");
            std::memcpy(&h, b.data(), sizeof h);
            batch[i].reset();  // release at once: a held sample holds back the sender
            if (h.magic != kMagic) return report_error("received a packet without the bench's header");
            if (h.kind == kStop) {
                say(Line("result")("steps", h.step).str());
                return 0;
            }
            if (h.kind == kWarmup) continue;
            if (h.kind == kEnd) {
                say(tally.report());
                tally = rtp::Tally{};
            } else if (auto st = tally.packet(h, now); !st) {
                return report_error(st.error());
            }
        }
    }
}

}  // namespace

std::string_view valid_wait_modes() { return "spin, block, spin-park"; }
bool is_wait_mode(std::string_view mode) { return mode == "spin" || mode == "block" || mode == "spin-park"; }

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
