#include "bench/roles.hpp"

#include "bench/processes.hpp"
#include "rvoip/events.hpp"

#include <algorithm>
#include <array>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <span>
#include <vector>

namespace rvoip::bench {
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
enum Kind : std::uint32_t { kWarmup = 1, kData = 2, kEnd = 3, kPing = 4, kPong = 5 };
struct PayloadHead {
    std::uint32_t magic = kMagic;
    std::uint32_t kind = 0;
    std::uint64_t seq = 0;
};
static_assert(sizeof(PayloadHead) == 16);

std::string g_label = "child";  // "publisher 1": prefixes our messages on stderr

int report_error(const std::string& msg) {
    std::fprintf(stderr, "rvoip-bench[%s]: %s\n", g_label.c_str(), msg.c_str());
    return 1;
}

// One protocol line to the parent.
void say(const std::string& line) {
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

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

// spin: never park (one core per such process); block: park on the futex at once, to measure the wake-up.
WaitOptions wait_options(bool spin) {
    return spin ? WaitOptions{.spin = 4000, .busy_poll = true} : WaitOptions{.spin = 0, .busy_poll = false};
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
    auto sub = bus.raw_subscriber(topic, SubscriberOptions{topic_options(o), wait_options(o.spin)});
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
Done publish_retrying(RawPublisher& pub, std::span<const std::span<const std::byte>> batch, std::uint64_t& timeouts) {
    for (unsigned in_a_row = 0;;) {
        auto st = batch.size() == 1 ? pub.publish(batch[0]) : pub.publish_batch(batch);
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

// Nearest-rank percentiles of the kept samples, as one result line.
std::string summarize(std::vector<std::int64_t>& v) {
    if (v.empty()) return "result samples=0";
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
        auto rank = static_cast<std::size_t>(q * double(v.size()) + 0.999999);  // ceil, robust to rounding
        return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
    };
    long double sum = 0;
    for (auto x : v) sum += x;
    char line[320];
    std::snprintf(line, sizeof line,
                  "result samples=%zu min=%" PRId64 " p50=%" PRId64 " p90=%" PRId64 " p99=%" PRId64 " p999=%" PRId64 " max=%" PRId64
                  " mean=%" PRId64,
                  v.size(), v.front(), at(0.50), at(0.90), at(0.99), at(0.999), v.back(), static_cast<std::int64_t>(sum / v.size()));
    return line;
}

Done expect(const Expected<PayloadHead>& h, Kind kind, std::uint64_t seq) {
    if (!h) return failure(h.error());
    if (h->kind != kind || h->seq != seq)
        return failure("got event kind " + std::to_string(h->kind) + " #" + std::to_string(h->seq) + ", expected kind " +
                       std::to_string(kind) + " #" + std::to_string(seq));
    return {};
}

// Sends a ping, waits for its pong: one sample of round-trip time per ping.
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

    for (std::uint64_t i = 0; i < o.warmup + o.count; ++i) {
        set_seq(ping, i);
        const std::int64_t t0 = now_ns();
        if (auto st = pub->publish(std::span<const std::byte>(ping)); !st) return report_error("publish ping: " + st.error().what());
        auto s = sub->receive_for(kReceiveTimeout);
        const std::int64_t t1 = now_ns();
        if (!s) return report_error(receive_error(s.error()));
        if (auto ok = expect(head_of(*s, o.size), kPong, i); !ok) return report_error(ok.error());
        if (i >= o.warmup) rtt.push_back(t1 - t0);
    }
    say(summarize(rtt));
    return 0;
}

// Receives a ping, records now minus its publish timestamp (one-way latency), answers. Both readings come
// from the bus's clock (the broker-calibrated TSC), the timebase of Sample::timestamp_ns().
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

    for (std::uint64_t i = 0; i < o.warmup + o.count; ++i) {
        auto s = sub->receive_for(kReceiveTimeout);
        const std::int64_t t = bus->now_ns();
        if (!s) return report_error(receive_error(s.error()));
        const std::int64_t latency = t - s->timestamp_ns();
        if (auto ok = expect(head_of(*s, o.size), kPing, i); !ok) return report_error(ok.error());
        s->reset();  // release the ping before answering, as a real consumer would
        set_seq(pong, i);
        if (auto st = pub->publish(std::span<const std::byte>(pong)); !st) return report_error("publish pong: " + st.error().what());
        if (i >= o.warmup) one_way.push_back(latency);
    }
    say(summarize(one_way));
    return 0;
}

}  // namespace

int run_role(const RoleOptions& o) {
    g_label = o.role + " " + std::to_string(o.id);
    if (o.size < sizeof(PayloadHead)) return report_error("--size must be at least " + std::to_string(sizeof(PayloadHead)));
    if (o.role == "publisher") return run_publisher(o);
    if (o.role == "subscriber") return run_subscriber(o);
    if (o.role == "pinger") return run_pinger(o);
    if (o.role == "echoer") return run_echoer(o);
    return report_error("unknown role '" + o.role + "'");
}

}  // namespace rvoip::bench
