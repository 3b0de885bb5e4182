// The call storm's three processes (rvoip-bench callstorm): transport, session and media.
#include "bench/role_kit.hpp"

#include <array>
#include <cmath>
#include <optional>

namespace rvoip::bench {

using namespace kit;

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


}  // namespace rvoip::bench
