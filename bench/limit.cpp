// rvoip-bench limit: how fast N-byte records can cross from one process to another on this machine.
//
// One shared anonymous mapping holds a single-producer single-consumer ring; the parent forks a producer
// and a consumer, both busy-poll (one core each), and the consumer reports what it received. No broker,
// no library, no record header beyond one commit word: the figure is what any transport between two
// processes of this machine could reach, the ceiling `throughput` is read against.
//
// What each side touches per record, as in `throughput` (whose publisher copies the whole payload and
// whose subscriber reads the record header and the bench's 16-byte payload head):
//   producer: memcpy of the whole N-byte payload from a template, then a release store of the commit word;
//   consumer: an acquire load of the commit word (the record's sequence) and the first 16 bytes of the
//             payload (magic and kind), checked.
//
// Layout of the mapping (kLine = 64):
//
//   0      +--------------------------------------------------+
//          | consumer position (u64), alone on its line        |  consumer stores, producer loads
//   64     | reports of the two sides (read after reaping)     |
//   kRing  +--------------------------------------------------+
//          | slot 0: commit u64 | payload N bytes | pad to 8   |  stride = round_up(8 + N, 8)
//          | slot 1: ...              (records packed, not line-aligned)
//          | ... slots = ring bytes / stride (1 MiB default)   |
//          +--------------------------------------------------+
//
// commit = position + 1 of the record the slot holds (0: never written), stored last by the producer. The
// consumer of position p polls the commit word of slot p % slots, never a producer index: one line brings
// the signal and the data. It stores its own position once per 4 KiB of records; the producer keeps a copy
// and loads the shared one only when its copy says full. A consumer that finds the next record not yet
// committed waits kBackoffPauses pauses before it looks again, instead of pulling the line back from the
// producer in the middle of its copy.
//
// Why this layout: what costs is cache lines moving between the two cores, so no per-record store to a
// shared index line, as few bytes per record as the commit word allows, and a consumer that stays off the
// line the producer is writing. Variants, in M records/s: medians of 5 or more interleaved runs of 2 s of a
// standalone copy of this loop with each choice a parameter (a run that something else preempted, 600
// involuntary switches or more, was run again). Runs of one variant spread by 10-20% on this 2-vCPU VM, so
// only differences beyond that count. A row starting "..." changes one thing in the last row without.
//
//                                                                                       64 B    1 KiB
//   shared head and tail indices, each side loads the other's every record               18      8.2
//   the same, each side caching the other's index, reloaded when empty / full             71      9.9
//   commit word per record (stride 16-aligned), consumer position every record           124     10.1
//   the same, consumer position every 64 records (1 KiB: 4), about 4 KiB                 145     11.5
//   ... position every 8 / 256 records (1 KiB: 16 / 64)                            126 / 138   9.9 / 9.8
//   ... stride 8-aligned (72 B at 64 B)                                                  147     10.4
//   ... stride 32- / 64-aligned (96 / 128 B at 64 B)                               128 / 103   - / 11.2
//   ... commit word at the end of the record                                             141      6.4
//   ... ring 256 KiB / 512 KiB / 2 MiB / 4 MiB (64 B: 8-aligned at 512 KiB, 2 MiB)  93 / 117 / 133 / 108  8.5 / 10.3 / 10.4 / 8.9
//   ... consumer prefetch 4 lines ahead (1 KiB: 16)                                      135     10.0
//   ... producer prefetch-for-write 4 lines ahead                                         17     10.2
//   ... producer cldemote of each record's lines                                           5      3.7
//   ... no pause in the spins / both pinned to a core                              135 / 142  9.0 / 9.5
//   ... 32-bit commit word (stride 68 B, 4-aligned; 1032 B)                             109     18.0
//   stride 8-aligned, position every 4 KiB, back-off of 256 pauses when caught up: KEPT   147     28.5
//   ... back-off 16 / 64 pauses                                                    142 / 145  15.5 / 20.9
//   ... back-off 1024 / 4096 pauses                                                139 / 135  23.4 / 22.4
//   ... instead of back-off, wait at most 1024 pauses for the record 64 (1 KiB: 16) ahead 146     19.7
//   ... ring 256 KiB / 4 MiB                                                       115 / 127      -
//   ... the commit's line written last / commit word at the end                    118 / 151  27.5 / 26.6
//   ... both pinned / consumer prefetch 8 (1 KiB: 32) lines ahead                  160 / 162  28.4 / 26.5
//   ... 32-bit commit word (stride 68 B; 1028 B)                                         105     16.2
//
// The back-off also took 16 B from 85-106 to 161 and 4 KiB from 6.2 to 8.1 (a 4 MiB ring: 5.7). The pinned
// and prefetching runs were 10% up in one batch and down in the next, within the spread, so the simpler
// form stays. The 32-bit commit word won at 1 KiB only without back-off (its slower consumer polled less).
// This file's loop, the kept layout (medians of 3 runs of `rvoip-bench limit`): 142 at 64 B, 25.8 at 1 KiB.
#include "bench/limit.hpp"

#include "bench/processes.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <new>
#include <vector>

#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace rvoip::bench {
namespace {

using u64 = std::uint64_t;

constexpr u64 kLine = 64;
constexpr u64 kRing = 4 * kLine;  // offset of slot 0: the control lines before it
constexpr std::uint32_t kMinSize = 8;  // the payload head's magic and kind
constexpr std::uint32_t kMaxSize = 65536;
constexpr u64 kStrideAlign = 8;  // the commit word's alignment: records are packed, not line-aligned
// Pauses the consumer waits, when it has caught up, before it looks at the producer's line again (about
// 3 us here, at 13 ns a pause): the longest a record can wait for the consumer to look.
constexpr int kBackoffPauses = 256;
constexpr std::uint32_t kMagic = 0x7e57'4c31;

enum Kind : std::uint32_t { kWarmup = 1, kData = 2, kEnd = 3 };

// The first 16 bytes of every payload (8 when N is 8): what the consumer reads and checks.
struct PayloadHead {
    std::uint32_t magic = kMagic;
    std::uint32_t kind = 0;
    u64 filler = 0x5a5a'5a5a'5a5a'5a5a;
};

struct Report {
    u64 events = 0;             // data records: produced, or received
    u64 waits = 0;              // times the producer found the ring full, or the consumer found it empty
    std::int64_t first_ns = 0;  // consumer: arrival of the first data record
    std::int64_t end_ns = 0;    // consumer: arrival of the end record
};

struct Control {
    alignas(kLine) std::atomic<u64> consumer_position;  // records the consumer is done with
    alignas(kLine) Report producer;  // each written by its own side before it exits, read by the parent after
    alignas(kLine) Report consumer;  //   waitpid: the reaping orders them
};
static_assert(offsetof(Control, producer) == kLine && sizeof(Control) <= kRing);
static_assert(std::atomic<u64>::is_always_lock_free);

struct LimitOptions {
    std::uint32_t size = 64;
    double seconds = 2;
    u64 ring_bytes = 1u << 20;
    u64 position_every = 0;  // 0: one 4 KiB page of records (at least 1)
    bool json = false;
};

struct Geometry {
    u64 stride, slots, position_every, warmup;
};

Geometry geometry_of(const LimitOptions& o) {
    Geometry g{};
    g.stride = (sizeof(u64) + o.size + kStrideAlign - 1) / kStrideAlign * kStrideAlign;
    g.slots = std::max<u64>(o.ring_bytes / g.stride, 4);
    g.position_every = o.position_every ? o.position_every : std::max<u64>(1, 4096 / g.stride);
    g.position_every = std::min(g.position_every, g.slots / 4);
    g.warmup = 2 * g.slots;  // two laps: every page of the ring touched before the clock starts
    return g;
}

std::int64_t now_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::atomic<u64>& commit_of(std::byte* slot) noexcept { return *std::launder(reinterpret_cast<std::atomic<u64>*>(slot)); }

[[noreturn]] void die(const char* side, const std::string& msg) {
    std::fprintf(stderr, "rvoip-bench[limit %s]: %s\n", side, msg.c_str());
    std::_Exit(1);
}

// ------------------------------------------------------------------------------------------------------
// The two sides. fork gives each its own copy of one Ring; each side runs in its own process and leaves with
// _exit, so no destructor or stdio buffer of the parent runs twice.

class Ring {
public:
    Ring(std::byte* base, const Geometry& g) noexcept
        : control_(*std::launder(reinterpret_cast<Control*>(base))), slots_(base + kRing), g_(g) {}

    // Producer: warm-up laps, data records until `seconds` have passed, one end record.
    void produce(std::uint32_t size, double seconds) {
        std::vector<std::byte> warm = payload(size, kWarmup), data = payload(size, kData), end = payload(size, kEnd);
        u64 p = 0;
        while (p < g_.warmup) put(p++, warm.data(), size);
        // The clock is read once per 64 KiB of payload: at 64 B that is one read per 1024 records.
        const u64 check_every = std::max<u64>(1, 65536 / size);
        const std::int64_t deadline = now_ns() + std::int64_t(seconds * 1e9);
        u64 events = 0;
        do {
            for (u64 i = 0; i < check_every; ++i) put(p++, data.data(), size);
            events += check_every;
        } while (now_ns() < deadline);
        put(p, end.data(), size);
        control_.producer.events = events;
        control_.producer.waits = full_waits_;
    }

    // Consumer: takes every record in order, checks its sequence and head; returns at the end record.
    void consume(std::uint32_t size) noexcept {
        const std::size_t head_bytes = std::min<std::size_t>(size, sizeof(PayloadHead));
        u64 events = 0, empty = 0, publish_at = g_.position_every;
        std::int64_t first_ns = 0;
        std::byte* slot = slots_;
        u64 index = 0;
        for (u64 p = 0;; ++p) {
            const u64 due = p + 1;
            // acquire: pairs with the release store of the commit word in put(); the payload is then complete.
            u64 seen = commit_of(slot).load(std::memory_order_acquire);
            if (std::int64_t(seen - due) < 0) [[unlikely]] {
                // Caught up: the producer is writing this line now. Each look would take the line from it
                // in the middle of its copy, so stay away for a while and let a batch build up.
                ++empty;
                do {
                    for (int i = 0; i < kBackoffPauses; ++i) __builtin_ia32_pause();
                    seen = commit_of(slot).load(std::memory_order_acquire);  // acquire: as above
                } while (std::int64_t(seen - due) < 0);
            }
            if (seen != due) [[unlikely]]
                die("consumer", "position " + std::to_string(p) + " holds the record of position " + std::to_string(seen - 1) +
                                    ": records lost (overwritten before they were read)");
            PayloadHead h;
            std::memcpy(&h, slot + sizeof(u64), head_bytes);
            const bool kind_ok = p < g_.warmup ? h.kind == kWarmup : h.kind == kData || h.kind == kEnd;
            if (h.magic != kMagic || !kind_ok) [[unlikely]]
                die("consumer", "position " + std::to_string(p) + ": bad record head (magic " + std::to_string(h.magic) + ", kind " +
                                    std::to_string(h.kind) + ")");
            if (due == publish_at) {
                // release: pairs with the acquire load in put(); our reads of these slots are done before it
                // may overwrite them.
                control_.consumer_position.store(due, std::memory_order_release);
                publish_at += g_.position_every;
            }
            if (h.kind == kData) {
                if (events++ == 0) first_ns = now_ns();
            } else if (h.kind == kEnd) {
                control_.consumer = Report{events, empty, first_ns, now_ns()};
                return;
            }
            if (++index == g_.slots) index = 0, slot = slots_;
            else slot += g_.stride;
        }
    }

private:
    static std::vector<std::byte> payload(std::uint32_t size, Kind kind) {
        std::vector<std::byte> b(size, std::byte{0x5a});
        const PayloadHead h{kMagic, kind};
        std::memcpy(b.data(), &h, std::min<std::size_t>(size, sizeof h));
        return b;
    }

    void put(u64 p, const std::byte* src, std::uint32_t size) noexcept {
        if (p - cached_position_ >= g_.slots) [[unlikely]] {
            ++full_waits_;
            // acquire: pairs with the release store of consumer_position in consume(); the consumer's reads of
            // the slot we are about to overwrite are over.
            while (p - (cached_position_ = control_.consumer_position.load(std::memory_order_acquire)) >= g_.slots)
                __builtin_ia32_pause();
        }
        std::byte* slot = slots_ + next_index_ * g_.stride;
        std::memcpy(slot + sizeof(u64), src, size);
        // release: pairs with the acquire loads in consume(); the payload is visible before the commit.
        commit_of(slot).store(p + 1, std::memory_order_release);
        if (++next_index_ == g_.slots) next_index_ = 0;
    }

    Control& control_;
    std::byte* slots_;
    Geometry g_;
    u64 cached_position_ = 0;  // producer's copy of consumer_position
    u64 next_index_ = 0;       // producer: slot of the next position
    u64 full_waits_ = 0;
};

// ------------------------------------------------------------------------------------------------------
// The parent.

// The shared mapping; unmapped by the parent once both children are reaped.
class Mapping {
public:
    explicit Mapping(u64 bytes) : bytes_(bytes) {
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        base_ = p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
    }
    ~Mapping() {
        if (base_) ::munmap(base_, bytes_);
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    std::byte* base() const noexcept { return base_; }

private:
    std::byte* base_ = nullptr;
    u64 bytes_;
};

// The forked sides, killed and reaped by pid on every path that does not reap them first.
struct Side {
    const char* name;
    pid_t pid = -1;
    int pidfd = -1;  // readable once the process has exited
    int status = 0;
    rusage usage{};
    ~Side() {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            while (::wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
            }
        }
        if (pidfd >= 0) ::close(pidfd);
    }
};

template <class F>
Done fork_side(Side& side, F&& body) {
    const pid_t parent = ::getpid();
    side.pid = ::fork();
    if (side.pid < 0) return failure(std::string("fork of the ") + side.name + ": " + std::strerror(errno));
    if (side.pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the parent, even a SIGKILLed one
        if (::getppid() != parent) std::_Exit(1);
        body();
        std::_Exit(0);
    }
    // syscall: Debian 12's <sys/pidfd.h> declares pidfd_open without C linkage.
    if ((side.pidfd = int(::syscall(SYS_pidfd_open, side.pid, 0))) < 0) return failure(std::string("pidfd_open: ") + std::strerror(errno));
    return {};
}

// Waits for both sides to exit by themselves, asleep in poll on their pidfds: a parent that woke on a timer
// would take a core from one of them each time. The first failure, the deadline or an interruption kills the
// other (the Side destructor). Returns an error naming what went wrong.
Done reap(Side (&sides)[2], std::chrono::steady_clock::time_point deadline) {
    for (int left = 2; left > 0;) {
        pollfd fds[2];
        nfds_t n = 0;
        for (auto& s : sides)
            if (s.pid > 0) fds[n++] = pollfd{s.pidfd, POLLIN, 0};
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        if (ms <= 0) return failure("timed out: the ring made no progress");
        if (::poll(fds, n, int(std::min<long long>(ms, 1 << 30))) < 0 && errno != EINTR) return failure(std::string("poll: ") + std::strerror(errno));
        if (interrupted()) return failure("interrupted");
        for (auto& s : sides) {
            if (s.pid <= 0 || ::wait4(s.pid, &s.status, WNOHANG, &s.usage) != s.pid) continue;
            s.pid = -1;
            --left;
            if (!WIFEXITED(s.status) || WEXITSTATUS(s.status) != 0)
                return failure(std::string("the ") + s.name +
                               (WIFSIGNALED(s.status) ? " was killed by signal " + std::to_string(WTERMSIG(s.status)) : std::string(" failed")));
        }
    }
    return {};
}

int run_limit(const LimitOptions& o) {
    if (o.size < kMinSize || o.size > kMaxSize)
        return fail("--size " + std::to_string(o.size) + ": records must be from " + std::to_string(kMinSize) + " to " +
                    std::to_string(kMaxSize) + " bytes");
    const Geometry g = geometry_of(o);
    Mapping map(kRing + g.slots * g.stride);
    if (!map.base()) return fail(std::string("cannot map the ring: ") + std::strerror(errno));
    new (map.base()) Control{};
    for (u64 i = 0; i < g.slots; ++i) new (map.base() + kRing + i * g.stride) std::atomic<u64>(0);  // the commit words
    Ring ring(map.base(), g);
    auto& control = *std::launder(reinterpret_cast<Control*>(map.base()));

    Side sides[2] = {{"producer"}, {"consumer"}};
    std::fflush(nullptr);  // nothing buffered is written twice
    if (auto st = fork_side(sides[1], [&] { ring.consume(o.size); }); !st) return fail(st.error());
    if (auto st = fork_side(sides[0], [&] { ring.produce(o.size, o.seconds); }); !st) return fail(st.error());
    const auto run_time = std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(o.seconds));
    if (auto st = reap(sides, std::chrono::steady_clock::now() + run_time + std::chrono::seconds(60)); !st) return fail(st.error());

    const Report& prod = control.producer;
    const Report& cons = control.consumer;
    if (cons.events != prod.events)
        return fail("the consumer received " + std::to_string(cons.events) + " data records of " + std::to_string(prod.events) + " produced");
    const double measured = double(cons.end_ns - cons.first_ns) / 1e9;
    const double rate = measured > 0 ? double(cons.events) / measured : 0;
    const long switches = sides[0].usage.ru_nivcsw + sides[1].usage.ru_nivcsw;

    if (o.json) {
        Json j;
        j.str("benchmark", "limit").num("size", o.size).real("seconds", o.seconds, 3).real("measured_seconds", measured, 3);
        j.num("events", std::int64_t(cons.events)).num("warmup_events", std::int64_t(g.warmup));
        j.real("events_per_sec", rate).real("bytes_per_sec", rate * o.size);
        j.num("stride", std::int64_t(g.stride)).str("commit_word", "start").num("slots", std::int64_t(g.slots)).num("backoff_pauses", kBackoffPauses);
        j.num("ring_bytes", std::int64_t(g.slots * g.stride)).num("position_every", std::int64_t(g.position_every));
        j.num("producer_full_waits", std::int64_t(prod.waits)).num("consumer_empty_waits", std::int64_t(cons.waits));
        j.num("involuntary_switches", switches).boolean("lossless", true);
        add_load_notes(j, 2);
        std::printf("%s\n", j.text().c_str());
    } else {
        std::printf("limit: %u-byte records, SPSC ring between 2 processes, both spinning: %.2f M events/s (%.1f MB/s); stride %" PRIu64
                    " B, consumer position every %" PRIu64 " records, ring %.2f MiB; %" PRIu64 " events in %.2f s, none lost%s\n",
                    o.size, rate / 1e6, rate * o.size / 1e6, g.stride, g.position_every, double(g.slots * g.stride) / 1048576, cons.events,
                    measured, usable_cores() < 2 ? " (fewer than 2 cores: distorted)" : "");
    }
    return 0;
}

}  // namespace

struct LimitCommand::Impl {
    LimitOptions options;
    CLI::App* cmd = nullptr;
};

LimitCommand::LimitCommand(CLI::App& app) : impl_(std::make_unique<Impl>()) {
    auto& o = impl_->options;
    auto* cmd = impl_->cmd = app.add_subcommand("limit", "the fastest transfer between two processes here: a minimal SPSC ring in shared "
                                                         "memory, both sides spinning, no broker (the ceiling for throughput)");
    cmd->add_option("--size", o.size, "record payload bytes, 8 to 65536")->capture_default_str();
    cmd->add_option("--seconds", o.seconds, "how long the producer produces")->check(CLI::Range(0.05, 3600.0))->capture_default_str();
    cmd->add_option("--ring", o.ring_bytes, "ring bytes (slots = ring / stride, at least 4)")->check(CLI::Range(4096ull, 1ull << 30))->capture_default_str();
    cmd->add_option("--position-every", o.position_every, "records between the consumer's position stores (default: 4 KiB of records)")
        ->check(CLI::Range(1ull, 1ull << 20));
    cmd->add_flag("--json", o.json, "one JSON object on one line");
}

LimitCommand::~LimitCommand() = default;
bool LimitCommand::parsed() const { return impl_->cmd->parsed(); }
int LimitCommand::run() const { return run_limit(impl_->options); }

}  // namespace rvoip::bench
