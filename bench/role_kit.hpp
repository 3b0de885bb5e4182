// Internal to rvoip-bench: what the role processes (roles.cpp, storm_roles.cpp, rtp_roles.cpp) share:
// the payload head, opening publishers and subscribers the way the parent asked, protocol lines to the
// parent, the tick pacer, and publishing that counts full lanes instead of dropping.
#pragma once

#include "bench/processes.hpp"
#include "bench/roles.hpp"
#include "rvoip/events.hpp"

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <sys/prctl.h>

namespace rvoip::bench {

// The scenario roles of their own files.
int run_transport(const RoleOptions& o);
int run_session(const RoleOptions& o);
int run_media(const RoleOptions& o);
int run_rtp_sender(const RoleOptions& o);
int run_rtp_receiver(const RoleOptions& o);

namespace kit {

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


inline Done wait_for_go() {
    char buf[16] = {};
    if (!std::fgets(buf, sizeof buf, stdin)) return failure("rvoip-bench went away before saying 'go'");
    if (std::string_view(buf) != "go\n") return failure("expected 'go' from rvoip-bench, got '" + std::string(buf) + "'");
    return {};
}

// CLOCK_MONOTONIC, the clock of the records' publish timestamps: comparable across processes.
inline std::int64_t now_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

inline std::vector<std::byte> make_payload(std::uint32_t size, Kind kind) {
    std::vector<std::byte> p(size, std::byte{0x5a});
    PayloadHead h{kMagic, kind, 0};
    std::memcpy(p.data(), &h, sizeof h);
    return p;
}

inline void set_seq(std::vector<std::byte>& payload, std::uint64_t seq) noexcept {
    std::memcpy(payload.data() + offsetof(PayloadHead, seq), &seq, sizeof seq);
}

inline Expected<PayloadHead> head_of(const RawSample& s, std::uint32_t size) {
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
inline TopicOptions topic_options(const RoleOptions& o) {
    return TopicOptions()
        .capacity(Priority::normal, o.capacity)
        .max_event(Priority::normal, o.size)
        .overflow(Priority::normal, Overflow::block, kBlockTimeout);
}

// spin: never park (one core per such process); block: park on the futex at once, to measure the wake-up;
// spin-park: the library's default, spin a little and then park (what a deployment would use); batch:
// spin-park, but a consumer in a stream naps 100 µs between looks instead of being rung per event
// (WaitOptions::batch_delay: what a throughput-minded consumer would use).
inline WaitOptions wait_options(const std::string& mode) {
    if (mode == "spin") return WaitOptions{.spin = 4000, .busy_poll = true};
    if (mode == "block") return WaitOptions{.spin = 0, .busy_poll = false};
    if (mode == "batch") return WaitOptions{.batch_delay = std::chrono::microseconds(100)};
    return WaitOptions{};
}

inline Expected<EventSystem> connect(const RoleOptions& o) {
    auto bus = EventSystemBuilder().socket_path(o.socket).client_name("bench-" + o.role + "-" + std::to_string(o.id)).build();
    if (!bus) return failure("cannot connect to the broker: " + bus.error().what());
    return std::move(*bus);
}

inline Expected<RawPublisher> open_publisher(EventSystem& bus, const RoleOptions& o, const std::string& topic) {
    const auto alone = std::uint8_t(o.exclusive ? 1u << static_cast<unsigned>(Priority::normal) : 0u);
    auto pub = bus.raw_publisher(topic, PublisherOptions{topic_options(o), alone});
    if (!pub) return failure("cannot publish on '" + topic + "': " + pub.error().what());
    if (pub->max_event() < o.size)
        return failure("topic '" + topic + "' takes events of at most " + std::to_string(pub->max_event()) + " bytes");
    return std::move(*pub);
}

inline Expected<RawSubscriber> open_subscriber(EventSystem& bus, const RoleOptions& o, const std::string& topic) {
    auto sub = bus.raw_subscriber(topic, SubscriberOptions{topic_options(o), wait_options(o.wait)});
    if (!sub) return failure("cannot subscribe to '" + topic + "': " + sub.error().what());
    return std::move(*sub);
}

inline std::string receive_error(const Error& e) {
    if (e.code == Errc::timeout) return "nothing received for " + std::to_string(kReceiveTimeout.count()) + " s: the peer is gone";
    return "receive: " + e.what();
}

// publish_batch() out of line: inlined into publish_retrying, its set-up would be paid by every
// single-event publish too (about 30 instructions per call, by callgrind).
[[gnu::noinline]] inline Status publish_many(RawPublisher& pub, std::span<const std::span<const std::byte>> batch, Priority p) {
    return pub.publish_batch(batch, p);
}

// Publishes one batch (publish() for one event, publish_batch() for more). A timeout means the lane stayed
// full for a whole block timeout: count it and try again, never drop an event.
inline Done publish_retrying(RawPublisher& pub, std::span<const std::span<const std::byte>> batch, std::uint64_t& timeouts,
                      Priority p = Priority::normal) {
    for (unsigned in_a_row = 0;;) {
        auto st = batch.size() == 1 ? pub.publish(batch[0], p) : publish_many(pub, batch, p);
        if (st) [[likely]]
            return {};
        if (st.error().code != Errc::timeout) return failure("publish: " + st.error().what());
        ++timeouts;
        if (++in_a_row == kMaxTimeoutsInARow)
            return failure("the lane stayed full for " + std::to_string(kMaxTimeoutsInARow) + " s: the subscriber is gone or stuck");
    }
}

// Nearest-rank percentiles of the samples as " <prefix>samples=N <prefix>min=..." fields of a result line.
inline std::string percentile_fields(std::vector<std::int64_t>& v, const std::string& prefix) {
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
inline std::string read_command() {
    char buf[128] = {};
    if (!std::fgets(buf, sizeof buf, stdin)) return {};
    std::string line(buf);
    if (!line.empty() && line.back() == '\n') line.pop_back();
    return line;
}

// Set once the parent says "stop" or goes away. A thread waits on stdin so that a paced loop checks a flag
// instead of making a syscall per tick.
inline std::atomic<bool> g_stop{false};

inline void watch_for_stop() {
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
inline Expected<PayloadHead> head_of(const RawSample& s) {
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

inline Done publish_end(RawPublisher& pub, Priority p, std::uint64_t& timeouts) {
    return publish_struct(pub, PayloadHead{kMagic, kEnd, 0}, p, timeouts);
}

// Refusals and delays a publisher met on one lane: any of them means a consumer did not keep up.
inline std::int64_t full_count(const RawPublisher& pub, Priority p) {
    auto c = pub.counters(p);
    return std::int64_t(c.full) + std::int64_t(c.timeouts);
}


// Reads every byte of a payload, as a consumer that parses it would (--touch-payload). The sum is reported
// so the compiler cannot drop the reads.
inline std::uint64_t touch(std::span<const std::byte> b) noexcept {
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i + 8 <= b.size(); i += 8) {
        std::uint64_t w;
        std::memcpy(&w, b.data() + i, sizeof w);
        sum += w;
    }
    return sum;
}

// Errors in a process with consumer threads: report and leave at once, since joining threads that wait
// for end markers would hang. The broker releases our slots when it sees the process gone.
[[noreturn]] inline void die(const std::string& msg) {
    report_error(msg);
    std::fflush(stderr);
    std::_Exit(1);
}

template <class T>
T must(Expected<T> v) {
    if (!v) die(v.error());
    return std::move(*v);
}
inline void must(const Done& d) {
    if (!d) die(d.error());
}

}  // namespace kit
}  // namespace rvoip::bench
