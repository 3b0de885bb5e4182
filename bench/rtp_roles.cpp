// The RTP scenario's processes (rvoip-bench rtp): the sender and the receiver.
#include "bench/role_kit.hpp"

#include <array>
#include <cmath>
#include <optional>

namespace rvoip::bench {

using namespace kit;

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
    must(publish_retrying(pub, batch, timeouts));
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
        must(publish_retrying(pub, batch, timeouts));
        ++sent;
        if (pacer.done(due) > kTickNs && ++late > allowed_late) break;
    }
    must(publish_marker(pub, o, Head{kMagic, kEnd, std::uint32_t(sent), 0, 0, number, 0}, timeouts));
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
    for (std::uint64_t done = 0; done < records; done += batch.size()) must(publish_retrying(pub, batch, timeouts));
    must(publish_marker(pub, o, Head{kMagic, kEnd, 0, 0, 0, 0, 0}, timeouts));
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
    auto bus = must(connect(o));
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
    must(rtp::publish_marker(*pub, o, rtp::Head{kMagic, kStop, 0, 0, 0, number, 0}, timeouts));
    say(Line("result")("steps", number).str());
    return 0;
}

int run_rtp_receiver(const RoleOptions& o) {
    auto bus = must(connect(o));
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


}  // namespace rvoip::bench
