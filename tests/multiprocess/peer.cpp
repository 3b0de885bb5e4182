// rvoip-test-peer: the client processes of the multi-process tests. Each mode does one job, prints
// READY once it holds its publisher or subscriber, and reports a result line the test checks.
#define RVOIP_TEST_HOOKS 1  // publish-and-hang stops between a commit and its wake-up call
#include "rvoip/events.hpp"
#include "tests/multiprocess/payload.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

struct TypeA {
    static constexpr std::string_view event_type = "test.schema";
    std::uint64_t call_id;
};
struct TypeB {
    static constexpr std::string_view event_type = "test.schema";
    std::uint32_t other;
    char tag[12];
};

Priority parse_priority(const std::string& s) {
    if (s == "critical") return Priority::critical;
    if (s == "high") return Priority::high;
    if (s == "low") return Priority::low;
    return Priority::normal;
}

void ready() {
    std::printf("READY\n");
    std::fflush(stdout);
}

int die(const Error& e) {
    std::fprintf(stderr, "peer: %s\n", e.what().c_str());
    return 2;
}

// Reconnections so far, once the connection is up again (a broker restarted moments ago may still be
// coming back): waits up to 60 s for it.
std::uint64_t settled_reconnects(const EventSystem& bus) {
    for (int i = 0; i < 6000 && !bus.connection().connected; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return bus.connection().reconnects;
}

// ---- eviction modes (tests/multiprocess/evict_test.cpp) ------------------------------------------------
struct EvictArgs {
    std::string topic;
    Priority priority = Priority::normal;
    std::uint64_t count = 0;
    std::uint64_t mark = 0;  // subscriber: print GOT after this many events; publisher: PAUSED, wait for a line
    std::uint32_t size = 0, max_size = 0;
    std::uint64_t seed = 1;
    double timeout_s = 120;
};

// Receives until every one of `count` events was either received or reported missed. Checks that events
// come in order without gaps or repeats, except right after a lagged report of k: then the next event is
// exactly the previous + k + 1. Prints "reported-missed k" per report, then
// "received r missed m lagged n errors e".
int subscribe_lagged(EventSystem& bus, const SubscriberOptions& opt, const EvictArgs& a) {
    auto s = bus.raw_subscriber(a.topic, opt);
    if (!s) return die(s.error());
    ready();
    std::uint64_t got = 0, missed = 0, reports = 0, errors = 0, next = 0;
    std::vector<std::byte> expect;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(a.timeout_s);
    while (got + missed < a.count && std::chrono::steady_clock::now() < deadline) {
        auto ev = s->receive_for(std::chrono::milliseconds(200));
        if (!ev) {
            if (ev.error().code == Errc::timeout) continue;
            if (ev.error().code != Errc::lagged) return die(ev.error());
            ++reports;
            missed += s->last_missed();
            next += s->last_missed();
            std::printf("reported-missed %llu\n", (unsigned long long)s->last_missed());
            std::fflush(stdout);
            std::fprintf(stderr, "peer: %s\n", ev.error().what().c_str());
            continue;
        }
        const std::uint64_t seq = ev->sequence();
        expect.resize(payload_size(a.size, a.max_size, a.seed, next));
        fill_payload(expect, a.seed, next);
        const auto bytes = ev->bytes();
        if (seq != next || bytes.size() != expect.size() || std::memcmp(bytes.data(), expect.data(), expect.size()) != 0) {
            if (errors++ < 5) std::fprintf(stderr, "peer: sequence %llu, expected %llu\n", (unsigned long long)seq, (unsigned long long)next);
        }
        next = seq + 1;
        if (++got == a.mark) {
            std::printf("GOT %llu\n", (unsigned long long)got);
            std::fflush(stdout);
        }
    }
    std::printf("received %llu missed %llu lagged %llu errors %llu\n", (unsigned long long)got, (unsigned long long)missed,
                (unsigned long long)reports, (unsigned long long)errors);
    return got + missed == a.count && errors == 0 ? 0 : 3;
}

// Publishes `count` events on one lane, retrying a publish that timed out (lossless); after `mark`
// events prints PAUSED and waits for a line on stdin. Prints "sent n full f timeouts t" from its counters.
int publish_paused(EventSystem& bus, const PublisherOptions& opt, const EvictArgs& a) {
    auto p = bus.raw_publisher(a.topic, opt);
    if (!p) return die(p.error());
    ready();
    std::string line;
    std::vector<std::byte> b;
    for (std::uint64_t seq = 0; seq < a.count;) {
        if (seq == a.mark && a.mark) {
            std::printf("PAUSED\n");
            std::fflush(stdout);
            std::getline(std::cin, line);
        }
        b.resize(payload_size(a.size, a.max_size, a.seed, seq));
        fill_payload(b, a.seed, seq);
        auto st = p->publish(b, a.priority);
        if (!st && st.error().code != Errc::timeout) return die(st.error());
        if (st) ++seq;
    }
    const auto c = p->counters(a.priority);
    std::printf("sent %llu full %u timeouts %u\n", (unsigned long long)a.count, c.full, c.timeouts);
    return 0;
}

// ---- many topics (tests/multiprocess/scale_test.cpp) ----------------------------------------------------
// Topics <base>.0 .. <base>.<n-1>, opened with no lane options: the broker's defaults (or its [[topic]]
// settings) make them.
std::string many_topic(const std::string& base, std::uint32_t i) { return base + "." + std::to_string(i); }

// Descriptors this process holds now: what it costs to hold many topics.
std::size_t open_fds() {
    std::size_t n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd"); it != std::filesystem::directory_iterator(); ++it) ++n;
    return n - 1;  // the directory iterator's own
}

// Publishes `count` events on each of `topics` topics, topic by topic, after a line on stdin. Lossless: a
// publish that timed out is tried again. Prints "sent n fds d".
int publish_many(EventSystem& bus, const std::string& base, std::uint32_t topics, std::uint64_t count, std::uint32_t size,
                 std::uint64_t seed) {
    std::vector<RawPublisher> pubs;
    pubs.reserve(topics);
    for (std::uint32_t i = 0; i < topics; ++i) {
        auto p = bus.raw_publisher(many_topic(base, i));
        if (!p) return die(p.error());
        pubs.push_back(std::move(*p));
    }
    const std::size_t fds = open_fds();
    ready();
    std::string line;
    std::getline(std::cin, line);
    std::vector<std::byte> b(size);
    std::uint64_t sent = 0;
    for (auto& p : pubs)
        for (std::uint64_t seq = 0; seq < count;) {
            fill_payload(b, seed, seq);
            auto st = p.publish(b, Priority::normal);
            if (!st && st.error().code != Errc::timeout) return die(st.error());
            if (st) ++seq, ++sent;
        }
    std::printf("sent %llu fds %zu\n", (unsigned long long)sent, fds);
    return 0;
}

// Subscribes to each of `topics` topics, then receives `count` events from each, topic by topic: it parks
// on the topic it waits for, never polls the others. Checks each topic's sequence and payloads. Prints
// "received n complete t errors e fds d" (t: topics that delivered all their events; d: descriptors
// held once subscribed).
int subscribe_many(EventSystem& bus, const std::string& base, std::uint32_t topics, std::uint64_t count, std::uint32_t size,
                   std::uint64_t seed, double timeout_s) {
    std::vector<RawSubscriber> subs;
    subs.reserve(topics);
    for (std::uint32_t i = 0; i < topics; ++i) {
        auto s = bus.raw_subscriber(many_topic(base, i));
        if (!s) return die(s.error());
        subs.push_back(std::move(*s));
    }
    const std::size_t fds = open_fds();
    ready();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    std::uint64_t got = 0, errors = 0, complete = 0;
    std::vector<std::byte> expect(size);
    for (auto& s : subs) {
        std::uint64_t seq = 0;
        while (seq < count) {
            auto ev = s.receive_for(std::chrono::seconds(1));
            if (!ev) {
                if (ev.error().code == Errc::timeout && std::chrono::steady_clock::now() < deadline) continue;
                std::fprintf(stderr, "peer: topic '%s' after %llu events: %s\n", s.topic().name.c_str(), (unsigned long long)seq,
                             ev.error().what().c_str());
                break;
            }
            fill_payload(expect, seed, seq);
            const auto bytes = ev->bytes();
            if (ev->sequence() != seq || bytes.size() != expect.size() || std::memcmp(bytes.data(), expect.data(), expect.size()) != 0) {
                if (errors++ < 5)
                    std::fprintf(stderr, "peer: topic '%s': sequence %llu, expected %llu\n", s.topic().name.c_str(),
                                 (unsigned long long)ev->sequence(), (unsigned long long)seq);
            }
            ++seq, ++got;
        }
        complete += seq == count ? 1 : 0;
        if (std::chrono::steady_clock::now() >= deadline) break;
    }
    std::printf("received %llu complete %llu errors %llu fds %zu\n", (unsigned long long)got, (unsigned long long)complete,
                (unsigned long long)errors, fds);
    return complete == topics && errors == 0 ? 0 : 3;
}

// One WaitSet over --topics topics <topic>.<i>: receives --count events, and after every --burst of
// them prints how many it received, how many times it returned from parking, and the order it took
// them in as lane:topic-index pairs (tests/multiprocess/waitset_test.cpp).
int waitset_receive(EventSystem& bus, const std::string& base, std::uint32_t topics, std::uint64_t count, std::uint64_t burst,
                    double timeout_s) {
    WaitSet set;
    for (std::uint32_t i = 0; i < topics; ++i) {
        auto s = bus.raw_subscriber(many_topic(base, i));
        if (!s) return die(s.error());
        auto index = set.add(std::move(*s));
        if (!index) return die(index.error());
        if (*index != i) return die(Error(Errc::internal, "WaitSet::add gave index " + std::to_string(*index)));
    }
    ready();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    std::uint64_t got = 0;
    std::string order;
    while (got < count) {
        auto ev = set.receive_any_for(std::chrono::seconds(1));
        if (!ev) {
            if (ev.error().code == Errc::timeout && std::chrono::steady_clock::now() < deadline) continue;
            std::fprintf(stderr, "peer: after %llu events: %s\n", (unsigned long long)got, ev.error().what().c_str());
            return 3;
        }
        order += (order.empty() ? "" : ",") + std::to_string(int(ev->priority())) + ":" + std::to_string(ev->index());
        if (++got % burst == 0) {
            std::printf("received %llu wakeups %llu order %s\n", (unsigned long long)got, (unsigned long long)set.wakeups(), order.c_str());
            std::fflush(stdout);
            order.clear();
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"rvoip-test-peer"};
    std::string socket, topic = "test.stream", priority = "normal", mix;
    std::uint64_t count = 1000, seed = 1;
    std::uint32_t size = 64, max_size = 1024, batch = 1, publishers = 1;
    std::uint64_t capacity = 0;
    double timeout_s = 120;
    bool wait_go = false, typed_b = false, forever = false, exclusive = false;
    double open_retry_s = 0;
    app.add_option("--socket", socket)->required();
    app.add_option("--topic", topic);
    app.add_option("--capacity", capacity, "lane capacity for every lane if this process creates the topic");
    app.add_option("--seed", seed);
    app.add_option("--size", size, "payload size; 0 varies from 1 to --max-size");
    app.add_option("--max-size", max_size);
    app.add_flag("--exclusive", exclusive, "publishers hold the --priority lane alone");
    app.add_option("--open-retry-s", open_retry_s, "publishers: retry opening while the lane is another's alone, this long");
    app.require_subcommand(1);

    auto* pub = app.add_subcommand("publish", "publish --count deterministic payloads");
    pub->add_option("--count", count);
    pub->add_option("--priority", priority);
    app.add_option("--mix", mix, "'lanes': cycle High, Normal, Low, then one Critical at the end");
    pub->add_option("--batch", batch);
    pub->add_flag("--wait-go", wait_go, "after READY, wait for a line on stdin before publishing");
    std::uint32_t phases = 1;
    double rate = 0;
    pub->add_option("--phases", phases, "publish --count events this many times, each after a line on stdin (with --wait-go)");
    pub->add_option("--rate", rate, "events per second (0: as fast as the lane takes them)");

    auto* sub = app.add_subcommand("subscribe", "receive --count payloads and verify them");
    sub->add_option("--count", count);
    sub->add_option("--publishers", publishers);
    sub->add_option("--timeout", timeout_s);
    sub->add_flag("--wait-go", wait_go, "after READY, wait for a line on stdin before receiving");
    bool join_late = false;
    std::uint64_t latency_first = ~0ull;
    sub->add_option("--latency-first", latency_first, "measure maxlat_us over the first N events only");
    sub->add_flag("--join-late", join_late, "publishers may be mid-stream: each one's first event sets its expected sequence");

    auto* hold = app.add_subcommand("hold", "open a typed publisher and hold it until stdin closes");
    hold->add_flag("--type-b", typed_b);

    sub->add_flag("--forever", forever, "receive() without a timeout (a lost wake-up then hangs)");
    auto* commit_die = app.add_subcommand("publish-and-hang", "publish event 0, stop before waking anyone, wait to be killed");
    auto* loan_die = app.add_subcommand("loan-and-hang", "claim a loan, never commit, wait to be killed");
    loan_die->add_option("--priority", priority);

    EvictArgs ev;
    std::int64_t evict_after_ms = -1, block_timeout_ms = 0;
    app.add_option("--evict-after-ms", evict_after_ms, "the --priority lane's evict_after if this process creates the topic");
    app.add_option("--block-timeout-ms", block_timeout_ms, "the --priority lane's block timeout if this process creates the topic");
    auto* sub_lag = app.add_subcommand("subscribe-lagged", "receive, report evictions, check the events after them");
    sub_lag->add_option("--count", ev.count)->required();
    sub_lag->add_option("--report-after", ev.mark);
    sub_lag->add_option("--timeout", ev.timeout_s);
    sub_lag->add_option("--priority", priority);
    std::uint32_t topics = 1;
    auto* pub_many = app.add_subcommand("publish-many", "publish --count events on each of --topics topics <topic>.<i>, after a line on stdin");
    pub_many->add_option("--topics", topics)->required();
    pub_many->add_option("--count", count);
    auto* sub_many = app.add_subcommand("subscribe-many", "subscribe to --topics topics <topic>.<i>, receive --count events from each");
    sub_many->add_option("--topics", topics)->required();
    sub_many->add_option("--count", count);
    sub_many->add_option("--timeout", timeout_s);
    std::uint64_t burst = 1;
    auto* waitset = app.add_subcommand("waitset", "one WaitSet over --topics topics <topic>.<i>: receive --count events, report every --burst");
    waitset->add_option("--topics", topics)->required();
    waitset->add_option("--count", count);
    waitset->add_option("--burst", burst)->check(CLI::PositiveNumber);
    waitset->add_option("--timeout", timeout_s);
    auto* pub_pause = app.add_subcommand("publish-paused", "publish --count events, pause after --pause-after");
    pub_pause->add_option("--count", ev.count)->required();
    pub_pause->add_option("--pause-after", ev.mark);
    pub_pause->add_option("--priority", priority);
    CLI11_PARSE(app, argc, argv);

    auto bus = EventSystemBuilder().socket_path(socket).client_name("test-peer").build();
    if (!bus) return die(bus.error());
    PublisherOptions popt;
    SubscriberOptions sopt;
    if (capacity) {
        for (auto p : {Priority::critical, Priority::high, Priority::normal, Priority::low}) {
            popt.topic.capacity(p, capacity).max_event(p, std::max<std::uint32_t>(max_size, size));
            sopt.topic.capacity(p, capacity).max_event(p, std::max<std::uint32_t>(max_size, size));
        }
    }

    if (exclusive) popt.exclusive_lanes = std::uint8_t(1u << static_cast<unsigned>(parse_priority(priority)));
    // Opens the publisher; a lane held alone by another is retried for --open-retry-s. A refusal is told on
    // stdout ("REFUSED <code>: <message>") for tests to read.
    auto open_publisher = [&]() -> Result<RawPublisher> {
        const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(open_retry_s);
        for (;;) {
            auto p = bus->raw_publisher(topic, popt);
            if (p || p.error().code != Errc::lane_taken || std::chrono::steady_clock::now() >= until) {
                if (!p) {
                    std::printf("REFUSED %s: %s\n", std::string(to_string(p.error().code)).c_str(), p.error().what().c_str());
                    std::fflush(stdout);
                }
                return p;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    };

    if (sub_lag->parsed() || pub_pause->parsed()) {
        const Priority pr = parse_priority(priority);
        for (auto* t : {&popt.topic, &sopt.topic}) {
            if (evict_after_ms >= 0) t->evict_after(pr, std::chrono::milliseconds(evict_after_ms));
            if (block_timeout_ms > 0) t->overflow(pr, Overflow::block, std::chrono::milliseconds(block_timeout_ms));
        }
        ev.topic = topic;
        ev.priority = pr;
        ev.size = size;
        ev.max_size = max_size;
        ev.seed = seed;
        return sub_lag->parsed() ? subscribe_lagged(*bus, sopt, ev) : publish_paused(*bus, popt, ev);
    }

    if (pub_many->parsed()) return publish_many(*bus, topic, topics, count, size, seed);
    if (sub_many->parsed()) return subscribe_many(*bus, topic, topics, count, size, seed, timeout_s);
    if (waitset->parsed()) return waitset_receive(*bus, topic, topics, count, burst, timeout_s);

    if (hold->parsed()) {
        std::optional<Publisher<TypeA>> a;
        std::optional<Publisher<TypeB>> b;
        if (typed_b) {
            auto r = bus->publisher<TypeB>();
            if (!r) return die(r.error());
            b.emplace(std::move(*r));
        } else {
            auto r = bus->publisher<TypeA>();
            if (!r) return die(r.error());
            a.emplace(std::move(*r));
        }
        ready();
        std::string line;
        std::getline(std::cin, line);
        return 0;
    }

    if (commit_die->parsed()) {
        auto p = open_publisher();
        if (!p) return die(p.error());
        ready();
        shm::test_hooks::after_commit = [](void*) {
            std::printf("COMMITTED\n");
            std::fflush(stdout);
            for (;;) ::pause();
        };
        std::vector<std::byte> b(payload_size(size, max_size, seed, 0));
        fill_payload(b, seed, 0);
        (void)p->publish(b, parse_priority(priority));
        return 1;  // not reached
    }

    if (loan_die->parsed()) {
        auto p = open_publisher();
        if (!p) return die(p.error());
        auto l = p->loan(size, parse_priority(priority));
        if (!l) return die(l.error());
        std::memset(l->bytes().data(), 0xee, l->bytes().size());
        ready();
        for (;;) ::pause();
    }

    if (pub->parsed()) {
        auto p = open_publisher();
        if (!p) return die(p.error());
        ready();
        std::vector<std::byte> buf;
        std::vector<std::vector<std::byte>> batch_bufs(batch);
        std::vector<std::span<const std::byte>> spans(batch);
        std::uint64_t digest = 0;
        const Priority fixed = parse_priority(priority);
        const std::uint64_t total = count * phases;
        std::uint64_t phase_end = 0;
        auto started = std::chrono::steady_clock::now();
        for (std::uint64_t seq = 0; seq < total;) {
            if (seq == phase_end) {  // next phase: after a line on stdin
                if (seq) {
                    std::printf("phase %llu sent\n", (unsigned long long)(seq / count));
                    std::fflush(stdout);
                }
                if (wait_go) {
                    std::string line;
                    std::getline(std::cin, line);
                }
                phase_end += count;
                started = std::chrono::steady_clock::now();
            }
            if (rate > 0)  // paced: never ahead of the schedule of this phase
                while (std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() * rate < double(seq + count - phase_end))
                    __builtin_ia32_pause();
            Priority pr = fixed;
            if (mix == "lanes") pr = seq + 1 == total ? Priority::critical : Priority(1 + seq % 3);
            std::uint32_t n = std::uint32_t(std::min<std::uint64_t>(batch, phase_end - seq));
            if (mix == "lanes") n = 1;
            for (std::uint32_t i = 0; i < n; ++i) {
                auto& b = batch_bufs[i];
                b.resize(payload_size(size, max_size, seed, seq + i));
                fill_payload(b, seed, seq + i);
                spans[i] = b;
            }
            auto st = n == 1 ? p->publish(spans[0], pr) : p->publish_batch(std::span(spans.data(), n), pr);
            if (!st) {
                if (st.error().code == Errc::timeout) continue;  // lossless: try again
                return die(st.error());
            }
            for (std::uint32_t i = 0; i < n; ++i) digest += record_hash(spans[i]);
            seq += n;
        }
        std::printf("sent %llu digest %llu reconnects %llu\n", (unsigned long long)total, (unsigned long long)digest,
                    (unsigned long long)settled_reconnects(*bus));
        return 0;
    }

    // subscribe
    auto s = bus->raw_subscriber(topic, sopt);
    if (!s) return die(s.error());
    ready();
    if (wait_go) {
        std::string line;
        std::getline(std::cin, line);
    }
    std::vector<std::uint64_t> next_seq(64, 0);  // per publisher slot, per lane collapsed: one lane in use
    std::vector<std::array<std::uint64_t, 4>> next_lane_seq(64, std::array<std::uint64_t, 4>{});
    std::uint64_t digest = 0, errors = 0, got = 0;
    std::vector<bool> seen(64, false);
    std::int64_t max_latency = 0;  // publish to receive, ns: a pause of the data path shows here
    int first_lane = -1, last_lane = -1;
    bool monotone = true;
    std::vector<std::byte> expect;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (got < count) {
        auto ev = forever ? s->receive() : s->receive_for(std::chrono::milliseconds(200));
        if (!ev) {
            if (ev.error().code == Errc::timeout && std::chrono::steady_clock::now() < deadline) continue;
            std::fprintf(stderr, "peer: after %llu events: %s\n", (unsigned long long)got, ev.error().what().c_str());
            break;
        }
        const int lane = int(ev->priority());
        if (first_lane < 0) first_lane = lane;
        if (last_lane > lane) monotone = false;
        last_lane = lane;
        auto bytes = ev->bytes();
        const std::uint16_t slot = ev->publisher();
        std::uint64_t seq = ev->sequence();
        if (join_late && slot < 64 && !seen[slot]) next_lane_seq[slot][std::size_t(lane)] = seq;
        if (slot < 64) seen[slot] = true;
        if (got < latency_first) max_latency = std::max(max_latency, bus->now_ns() - ev->timestamp_ns());
        if (slot >= 64 || seq != next_lane_seq[slot][std::size_t(lane)]) {
            if (errors++ < 5) std::fprintf(stderr, "peer: publisher %u lane %d: sequence %llu, expected %llu\n", slot, lane,
                                           (unsigned long long)seq, (unsigned long long)(slot < 64 ? next_lane_seq[slot][std::size_t(lane)] : 0));
        }
        if (slot < 64) next_lane_seq[slot][std::size_t(lane)] = seq + 1;
        // Payloads are numbered per publisher across lanes in `lanes` mix; verify by the publisher-wide index
        // in the plain case (one lane).
        std::uint64_t index = seq;
        if (mix.empty()) {
            expect.resize(payload_size(size, max_size, seed, index));
            fill_payload(expect, seed, index);
            if (bytes.size() != expect.size() || std::memcmp(bytes.data(), expect.data(), expect.size()) != 0) {
                if (errors++ < 5) std::fprintf(stderr, "peer: publisher %u seq %llu: payload of %zu bytes differs\n", slot,
                                               (unsigned long long)seq, bytes.size());
            }
        }
        digest += record_hash(bytes);
        ++got;
    }
    std::printf("received %llu digest %llu errors %llu first %d monotone %d maxlat_us %lld reconnects %llu\n", (unsigned long long)got,
                (unsigned long long)digest, (unsigned long long)errors, first_lane, monotone ? 1 : 0, (long long)(max_latency / 1000),
                (unsigned long long)settled_reconnects(*bus));
    return got == count && errors == 0 ? 0 : 3;
}
