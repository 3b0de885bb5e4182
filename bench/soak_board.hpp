// The soak's shared state: one "board" (a memfd the parent creates and every soak process maps) and the
// header every soak event carries. The board is the soak's own bookkeeping, not the library's: it is what
// survives a SIGKILL, so the parent can count what a killed publisher had published.
//
//   board (memfd, MAP_SHARED, zero-filled by ftruncate)
//   +--------------------+ 0
//   | BoardHeader        |  phase, slots handed out, kill count, Critical publishes done
//   +--------------------+ kPubOffset
//   | PubSlot x 4096     |  one per publisher incarnation (never reused): intents, published-through
//   +--------------------+ kSubOffset
//   | SubSlot x 1024     |  one per subscriber incarnation: ready time, last delivery, delivered
//   +--------------------+ kKillOffset
//   | Kill x 8192        |  the parent's log of SIGKILLs, appended in order
//   +--------------------+ kBoardBytes
//
// Writers: a PubSlot by its publisher (the parent sets `retired`, `state` and, before spawning, `kind`); a
// SubSlot by its subscriber; the header and the kill log by the parent, except `crit_done` (publishers).
// Every access is seq_cst: the soak's checks reason about orders across processes (see soak_roles.cpp),
// and these are a few stores per publish, not the library's hot path.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace rvoip::bench::soak {

constexpr std::uint32_t kLanes = 4;
constexpr std::uint64_t kBoardMagic = 0x31424b4f53505652;  // "RVPSOKB1"
constexpr std::uint32_t kMaxPubSlots = 4096;
constexpr std::uint32_t kMaxSubSlots = 1024;
constexpr std::uint32_t kMaxKills = 8192;

enum Phase : std::uint32_t {
    kStarting = 0,  // the first processes are joining
    kRunning = 1,   // publishers publish; kills happen
    kStopping = 2,  // publishers finish the operation they are in, report and exit
    kDraining = 3,  // every publisher is gone: subscribers receive what is left, check, report
};

enum SlotState : std::uint32_t { kFree = 0, kSpawned = 1, kReady = 2, kStopped = 3, kKilled = 4 };

struct BoardHeader {
    std::uint64_t magic;
    std::atomic<std::uint32_t> phase;
    std::atomic<std::uint32_t> pub_slots;  // PubSlots handed out so far: [0, pub_slots)
    std::atomic<std::uint32_t> sub_slots;
    std::atomic<std::uint32_t> kills;      // Kill records written so far
    std::atomic<std::uint64_t> crit_done;  // bumped by a publisher after it stored a Critical published-through
    std::uint8_t pad[128 - 32];
};
static_assert(sizeof(BoardHeader) == 128);

struct PubSlot {
    std::atomic<std::uint64_t> instance;  // random per incarnation; 0 until the process attached
    std::atomic<std::int32_t> pid;
    std::atomic<std::uint32_t> kind;      // PublisherKind, set by the parent
    std::atomic<std::uint32_t> state;     // SlotState
    // 1 from before a claim that may land in the Critical lane until the commit returned: while it is set,
    // a Critical record of another publisher may sit behind this one's open claim.
    std::atomic<std::uint32_t> crit_open;
    std::atomic<std::uint32_t> in_loan;   // lane + 1 from loan() until the commit returned (the parent aims some kills at it)
    // Set by the parent once the process is dead and its claims can no longer block a lane: at once when
    // crit_open was 0 at its death, else after the recovery bound (soak.cpp).
    std::atomic<std::uint32_t> retired;
    // Per lane: the last sequence of the operation about to claim (stored before the claim), and the
    // last sequence whose publish returned success (stored after it). intent >= published.
    std::atomic<std::uint64_t> intent[kLanes];
    std::atomic<std::uint64_t> published[kLanes];
    std::atomic<std::uint64_t> timeouts;  // publishes that met Errc::timeout and were retried
    std::atomic<std::uint32_t> op_lane;   // lane + 1 of the operation in flight (its target lane), 0 between
    std::uint8_t pad[128 - 108];
};
static_assert(sizeof(PubSlot) == 128);
static_assert(offsetof(PubSlot, intent) == 32);

struct SubSlot {
    std::atomic<std::uint64_t> instance;
    std::atomic<std::int32_t> pid;
    std::atomic<std::uint32_t> state;
    std::atomic<std::int64_t> ready_ns;       // CLOCK_MONOTONIC when it had joined and taken its snapshot
    std::atomic<std::int64_t> last_event_ns;  // its latest delivery (the parent watches it for hangs)
    std::atomic<std::uint64_t> delivered;
    // The time of the oldest kill after which a lane has not recovered although other publishers have
    // published in it since (0: none): the parent ends a run whose lane stays stuck.
    std::atomic<std::int64_t> stuck_since_ns;
    std::atomic<std::int64_t> lane_last_ns[kLanes];  // its latest delivery per lane
    std::uint8_t pad[128 - 80];
};
static_assert(sizeof(SubSlot) == 128);

enum VictimKind : std::uint32_t { kPublisherVictim = 0, kSubscriberVictim = 1 };

struct Kill {
    std::int64_t at_ns;        // CLOCK_MONOTONIC just before kill(2)
    std::uint32_t victim_kind;
    std::uint32_t victim_slot;
    std::uint32_t in_loan;     // the victim's in_loan when it was killed
    std::uint32_t op_lane;     // the victim's op_lane when it was killed
};
static_assert(sizeof(Kill) == 24);

constexpr std::size_t kPubOffset = sizeof(BoardHeader);
constexpr std::size_t kSubOffset = kPubOffset + kMaxPubSlots * sizeof(PubSlot);
constexpr std::size_t kKillOffset = kSubOffset + kMaxSubSlots * sizeof(SubSlot);
constexpr std::size_t kBoardBytes = kKillOffset + kMaxKills * sizeof(Kill);

// A mapped board (views into one mapping; the owner unmaps it).
struct Board {
    BoardHeader* header = nullptr;
    PubSlot* pubs = nullptr;
    SubSlot* subs = nullptr;
    Kill* kills = nullptr;

    static Board view(void* base) noexcept {
        auto* b = static_cast<std::byte*>(base);
        return {reinterpret_cast<BoardHeader*>(b), reinterpret_cast<PubSlot*>(b + kPubOffset),
                reinterpret_cast<SubSlot*>(b + kSubOffset), reinterpret_cast<Kill*>(b + kKillOffset)};
    }
    std::uint32_t phase() const noexcept { return header->phase.load(); }
};

// ------------------------------------------------------------------------------------------------------
// Events.

// The first 48 bytes of every soak payload; the rest is filler derived from (instance, seq). `seq` counts
// per publisher instance and lane, from 1, with no gap: the n-th event a publisher publishes on a lane has
// seq n. `checksum` covers every other byte of the payload.
struct EventHead {
    std::uint64_t instance;
    std::uint64_t seq;
    std::int64_t intent_ns;  // CLOCK_MONOTONIC taken before the claim
    std::uint32_t slot;      // the publisher's PubSlot
    std::uint32_t length;    // the whole payload's bytes
    std::uint8_t lane;       // the lane it was published in (commit may move a loan to another lane)
    std::uint8_t op;         // Op
    std::uint16_t zero16;
    std::uint32_t zero32;
    std::uint64_t checksum;
};
static_assert(sizeof(EventHead) == 48);
static_assert(offsetof(EventHead, checksum) == 40);
constexpr std::uint32_t kMinEvent = sizeof(EventHead);

enum Op : std::uint8_t { kPublish = 0, kBatch = 1, kLoan = 2, kRawLoan = 3, kLoanMoved = 4 };
constexpr std::uint32_t kKinds = 4;  // publisher kinds: kPublish, kBatch, kLoan, kRawLoan
constexpr const char* kind_name(std::uint32_t k) noexcept {
    constexpr const char* names[] = {"publish", "batch", "loan", "raw-loan", "loan-moved"};
    return k < 5 ? names[k] : "?";
}

constexpr const char* lane_name(std::uint32_t l) noexcept {
    constexpr const char* names[] = {"critical", "high", "normal", "low"};
    return l < kLanes ? names[l] : "?";
}

// FNV-1a over 8-byte little-endian words (then the tail bytes), skipping the checksum field.
inline std::uint64_t checksum(std::span<const std::byte> p) noexcept {
    constexpr std::uint64_t kPrime = 0x100000001b3;
    std::uint64_t h = 0xcbf29ce484222325;
    std::size_t i = 0;
    for (; i + 8 <= p.size(); i += 8) {
        if (i == offsetof(EventHead, checksum)) continue;
        std::uint64_t w;
        std::memcpy(&w, p.data() + i, 8);
        h = (h ^ w) * kPrime;
    }
    for (; i < p.size(); ++i) h = (h ^ std::uint64_t(p[i])) * kPrime;
    return h;
}

struct SplitMix {
    std::uint64_t s;
    std::uint64_t next() noexcept {
        std::uint64_t z = (s += 0x9e3779b97f4a7c15);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
        z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
        return z ^ (z >> 31);
    }
    // Uniform in [lo, hi].
    std::uint64_t between(std::uint64_t lo, std::uint64_t hi) noexcept { return lo + next() % (hi - lo + 1); }
    bool chance(double p) noexcept { return double(next() >> 11) * 0x1.0p-53 < p; }
};

// Writes a complete event of `len` bytes (>= kMinEvent) into `dst`.
inline void fill_event(std::byte* dst, std::uint32_t len, const EventHead& head) noexcept {
    EventHead h = head;
    h.length = len;
    h.zero16 = 0, h.zero32 = 0, h.checksum = 0;
    std::memcpy(dst, &h, sizeof h);
    SplitMix filler{h.instance ^ (h.seq * 0x9e3779b97f4a7c15) ^ h.lane};
    std::uint32_t i = sizeof h;
    for (; i + 8 <= len; i += 8) {
        const std::uint64_t w = filler.next();
        std::memcpy(dst + i, &w, 8);
    }
    for (; i < len; ++i) dst[i] = std::byte(filler.next());
    const std::uint64_t sum = checksum({dst, len});
    std::memcpy(dst + offsetof(EventHead, checksum), &sum, sizeof sum);
}

// CLOCK_MONOTONIC nanoseconds: the soak's one clock across its processes.
std::int64_t now_ns() noexcept;

}  // namespace rvoip::bench::soak
