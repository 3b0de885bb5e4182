// Shared-memory ABI: every segment's layout, magic and version. A change here is an ABI change: bump
// kAbiVersion and say so in the commit.
//
// Segments of one topic (DESIGN §5):
//
//   topic data  "<prefix>.<topic>.data"      written by publishers and the broker, mapped read-only by subscribers
//   +-------------------------------+  0
//   | TopicHeader       (6 lines)   |  broker writes once at creation: magic, sizes, fingerprint, lane settings
//   +-------------------------------+  384
//   | LaneControl x 4   (1 line ea) |  byte tail per lane (the claim CAS target)
//   +-------------------------------+  640
//   | PublisherEntry x kMaxPublishers (4 lines each): state; one claim intent per lane; per-lane counters
//   +-------------------------------+  rings_offset (page aligned)
//   | ring Critical | ring High | ring Normal | ring Low |   each `capacity` bytes, power of two
//   +-------------------------------+
//
//   topic cursors "<prefix>.<topic>.cursors"  written by subscribers and the broker, mapped read-only by publishers
//   +-------------------------------+  0
//   | CursorHeader      (2 lines)   |  magic, sizes, slot high-water, mask of parked slots
//   +-------------------------------+  128
//   | SubscriberSlot x kMaxSubscribers (10 lines each): positions per lane, state, doorbell, stats,
//   |                                                    sampled one-way latency histogram
//   +-------------------------------+
//
//   topic doorbells "<prefix>.<topic>.bells"  written by the topic's publishers and subscribers only:
//   a DoorbellHeader, then one futex word per line; bell i is subscriber slot i's
//
//   broker "<prefix>.doorbells"  written by the broker only (clients map it read-only): the clock
//   calibration in its DoorbellHeader (its doorbells are unused)
//
// A ring holds records aligned to 64 bytes:
//
//    0               8         12      14        16                24                32
//   +---------------+---------+-------+---------+-----------------+-----------------+----------------+
//   | position (u64)| length  | flags | pub id  | sequence (u64)  | timestamp (i64) | payload ...    |
//   +---------------+---------+-------+---------+-----------------+-----------------+----------------+
//
// `position` is the record's own byte position XOR the topic's record key, written last with release: a
// reader at position p accepts the record only when it reads exactly p ^ key, so bytes of an earlier lap
// are never taken for a record and nobody zeroes the ring behind the readers. The key is random per topic
// and never leaves shared memory: a payload (a SIP message from the network, a counter in a benchmark)
// cannot hold the marker of a future record except by a 2^-64 chance, unless its author maps the topic.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace rvoip::events {

enum class Priority : std::uint8_t { critical = 0, high = 1, normal = 2, low = 3 };

constexpr std::string_view to_string(Priority p) noexcept {
    switch (p) {
    case Priority::critical: return "critical";
    case Priority::high: return "high";
    case Priority::normal: return "normal";
    case Priority::low: return "low";
    }
    return "?";
}

enum class Overflow : std::uint8_t { block = 0, fail = 1 };

}  // namespace rvoip::events

namespace rvoip::events::layout {

constexpr std::size_t kLine = 64;  // fixed, not hardware_destructive_interference_size: this is an ABI
// 2: record key, per-lane claim intents, parked mask; 6: a parked mask per lane
// 3: eviction: evict_after_ms, per-slot evictions and missed
// 4: a doorbell segment per topic, bell i = subscriber slot i; the broker's segment is read-only to clients
// 5: a sampled one-way latency histogram per subscriber slot
// 7: exclusive lanes (LaneControl::exclusive): their publisher claims with a plain store, and a consumer
//    parking on such a lane issues a membarrier for it
constexpr std::uint32_t kAbiVersion = 7;
constexpr std::size_t kLanes = 4;
constexpr std::uint32_t kMaxPublishers = 64;    // per topic
constexpr std::uint32_t kMaxSubscribers = 64;   // per topic: one bit each in CursorHeader::parked
constexpr std::uint32_t kMaxDoorbells = 4096;   // per broker
constexpr std::uint32_t kNoDoorbell = 0xffffffffu;
constexpr std::size_t kLatencyBuckets = 128;    // per subscriber slot, see shm/latency.hpp
constexpr std::size_t kTopicNameMax = 63;
constexpr std::size_t kTypeNameMax = 95;

constexpr std::uint64_t kTopicDataMagic = 0x5256'4f49'5044'4154ull;  // "RVOIPDAT"
constexpr std::uint64_t kCursorsMagic = 0x5256'4f49'5043'5552ull;    // "RVOIPCUR"
constexpr std::uint64_t kDoorbellMagic = 0x5256'4f49'5044'4f4full;   // "RVOIPDOO"

constexpr std::uint64_t kMinCapacity = 4096;
constexpr std::uint64_t kMaxCapacity = 1ull << 30;
constexpr std::uint32_t kMaxEventLimit = 16u << 20;  // no lane may allow more than 16 MiB per event

constexpr std::uint64_t align_line(std::uint64_t n) noexcept { return (n + kLine - 1) & ~std::uint64_t(kLine - 1); }
constexpr bool is_pow2(std::uint64_t v) noexcept { return v && !(v & (v - 1)); }

// ---------------------------------------------------------------------------------------------------
// Schema fingerprint: a publisher or subscriber whose fingerprint differs from the topic's is refused.
enum class Kind : std::uint32_t { typed = 1, raw = 2 };

struct Fingerprint {
    char type_name[kTypeNameMax + 1] = {};  // NUL-terminated
    std::uint32_t size = 0;                 // sizeof(T); 0 for raw bytes
    std::uint32_t align = 0;
    std::uint32_t schema_version = 0;
    Kind kind = Kind::raw;

    std::string_view name() const noexcept { return {type_name, ::strnlen(type_name, sizeof type_name)}; }
    friend bool operator==(const Fingerprint& a, const Fingerprint& b) noexcept {
        return a.name() == b.name() && a.size == b.size && a.align == b.align && a.schema_version == b.schema_version &&
               a.kind == b.kind;
    }
};
static_assert(sizeof(Fingerprint) == 112);

// Per-lane settings, fixed when the topic is created.
struct LaneSettings {
    std::uint64_t capacity = 0;          // ring bytes, power of two
    std::uint32_t max_event = 0;         // max payload bytes
    Overflow overflow = Overflow::block;
    std::uint8_t evict = 0;              // reserved
    std::uint16_t reserved = 0;
    std::uint32_t block_timeout_ms = 0;  // `block` policy: how long a publish waits for space
    std::uint32_t evict_after_ms = 0;    // the broker evicts a subscriber that held publishers this long; 0 = never
};
static_assert(sizeof(LaneSettings) == 24);
static_assert(offsetof(LaneSettings, evict_after_ms) == 20);
constexpr std::uint32_t kMaxEvictAfterMs = 3'600'000;  // an hour: anything longer is a typo

// ---------------------------------------------------------------------------------------------------
// Records.
enum RecordFlags : std::uint16_t { kRecordData = 0, kRecordPadding = 1 };

struct RecordHeader {
    std::atomic<std::uint64_t> position;  // written last (release); == own position when committed
    std::uint32_t length;                 // payload bytes; for padding: total bytes the padding covers
    std::uint16_t flags;
    std::uint16_t publisher;              // publisher slot index; 0xffff when written by the broker
    std::uint64_t sequence;               // the publisher's own sequence on this lane, from 0
    std::int64_t timestamp_ns;            // at publish, raw: TSC ticks or CLOCK_MONOTONIC ns (see DoorbellHeader)
};
static_assert(sizeof(RecordHeader) == 32);
static_assert(offsetof(RecordHeader, length) == 8);
static_assert(offsetof(RecordHeader, timestamp_ns) == 24);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

constexpr std::uint16_t kBrokerPublisher = 0xffff;
constexpr std::uint64_t record_size(std::uint64_t payload) noexcept { return align_line(sizeof(RecordHeader) + payload); }

// ---------------------------------------------------------------------------------------------------
// Topic data segment.
struct alignas(kLine) TopicHeader {
    std::uint64_t magic;
    std::uint32_t abi_version;
    std::uint32_t header_size;     // sizeof(TopicHeader)
    std::uint64_t segment_size;
    std::uint64_t rings_offset;
    std::uint32_t max_publishers;
    std::uint32_t topic_id;
    std::uint64_t created_ns;      // CLOCK_REALTIME, informational
    char name[kTopicNameMax + 1];
    Fingerprint fingerprint;
    LaneSettings lanes[kLanes];
    std::uint64_t ring_offset[kLanes];
    std::uint64_t record_key;      // XORed into every record's position marker; random, never 0 in its low bits
};
static_assert(sizeof(TopicHeader) == 6 * kLine);
static_assert(offsetof(TopicHeader, name) == 48);
static_assert(offsetof(TopicHeader, record_key) == 352);

// Bit 63 of a lane's tail word: set by the broker when it starts a subscriber at the tail (join), cleared
// by the next claim. A raw loan committed short gives its unused bytes back by CAS from exactly its own
// claim end without this bit, so it can never move the tail below a position a subscriber was started at.
constexpr std::uint64_t kJoinBit = std::uint64_t(1) << 63;

struct alignas(kLine) LaneControl {
    std::atomic<std::uint64_t> tail;  // next byte position to claim (| kJoinBit); never wraps
    // 1 + the publisher slot that holds this lane alone (it claims with a plain store of the tail and
    // reads the parked mask without a fence of its own, so a consumer that parks on the lane issues
    // a membarrier: shm/membarrier.hpp); 0 when none. Written by the broker, on the tail's line so a
    // parking consumer reads it with the tail.
    std::atomic<std::uint32_t> exclusive;
    std::uint8_t pad[kLine - 12];

    // The tail position without the join bit; seq_cst by default like every reader of the tail.
    std::uint64_t position(std::memory_order o = std::memory_order_seq_cst) const noexcept { return tail.load(o) & ~kJoinBit; }
};
static_assert(sizeof(LaneControl) == kLine);

enum class SlotState : std::uint32_t { free = 0, active = 1, dead = 2, evicted = 3 };

// Claim intent (DESIGN §4), one per lane so that a loan open on one lane and a publish on another never
// share one: the (position, length) a publisher is about to claim, written before its tail CAS and
// cleared after its commit (or on any claim that does not succeed), then `won` = position right after a
// successful CAS. Positions never repeat on a lane, so `won == position` proves the claim was this
// publisher's even when several dead publishers' intents name the same position. length 0 = none;
// won starts as kNoPosition, which no claim has.
//
// `shrink_to`: a raw loan committed short stores where its record ends before it tries to give the rest
// of its claim back (LaneWriter::commit_in_place); recovery then trusts `won` only up to there. Stale
// values from earlier claims lie below `position` and mean nothing.
struct ClaimIntent {
    std::atomic<std::uint64_t> position;
    std::atomic<std::uint64_t> won;
    std::atomic<std::uint32_t> length;
    std::uint32_t reserved;
    std::atomic<std::uint64_t> shrink_to;
};
static_assert(sizeof(ClaimIntent) == 32);
constexpr std::uint64_t kNoPosition = ~std::uint64_t(0);

struct alignas(kLine) PublisherEntry {
    // line 0: written by the broker
    std::atomic<std::uint32_t> state;            // SlotState
    std::uint32_t pid;
    std::uint8_t pad0[kLine - 8];
    // lines 1-2: written by the owning publisher, read by the broker's recovery
    ClaimIntent intent[kLanes];
    // line 3: counters, written only by the owner (single writer: relaxed load + store, never an RMW)
    std::atomic<std::uint64_t> published[kLanes];
    std::atomic<std::uint32_t> full[kLanes];      // publishes refused or delayed by a full lane
    std::atomic<std::uint32_t> timeouts[kLanes];  // `block` publishes that gave up
};
static_assert(sizeof(PublisherEntry) == 4 * kLine);
static_assert(offsetof(PublisherEntry, intent) == kLine);
static_assert(offsetof(PublisherEntry, published) == 3 * kLine);

constexpr std::uint64_t kLaneControlOffset = sizeof(TopicHeader);
constexpr std::uint64_t kPublisherTableOffset = kLaneControlOffset + kLanes * sizeof(LaneControl);
constexpr std::uint64_t kPage = 4096;

constexpr std::uint64_t rings_offset(std::uint32_t max_publishers) noexcept {
    return (kPublisherTableOffset + std::uint64_t(max_publishers) * sizeof(PublisherEntry) + kPage - 1) & ~(kPage - 1);
}

// ---------------------------------------------------------------------------------------------------
// Topic cursors segment.
struct alignas(kLine) CursorHeader {
    std::uint64_t magic;
    std::uint32_t abi_version;
    std::uint32_t header_size;
    std::uint64_t segment_size;
    std::uint32_t max_subscribers;
    std::uint32_t topic_id;
    std::uint8_t pad0[kLine - 32];
    // line 1
    std::atomic<std::uint32_t> slot_limit;  // broker: 1 + highest slot index ever used; scans stop here
    std::uint32_t reserved;
    // Per lane, bit i set while subscriber slot i is parked (or about to park) waiting for that lane: its
    // owner sets and clears it, the broker clears it on every lane when the slot is released (idempotent,
    // unlike a counter a dead consumer would leave unbalanced). A publisher rings exactly the set bits of
    // the lane it wrote: a consumer that does not wait for a lane (WaitOptions::wake_lanes) is not woken
    // by it.
    std::atomic<std::uint64_t> parked[kLanes];
    std::uint8_t pad1[kLine - 8 - 8 * kLanes];
};
static_assert(kMaxSubscribers <= 64, "one bit per subscriber slot in CursorHeader::parked");
static_assert(sizeof(CursorHeader) == 2 * kLine);

struct alignas(kLine) SubscriberSlot {
    // line 0: positions are written by the subscriber (CAS from the value it last stored: the broker may
    // have moved them, see evict_subscriber) and read by publishers on a gate refresh
    std::atomic<std::uint64_t> position[kLanes];
    std::atomic<std::uint32_t> state;     // SlotState, written by the broker
    std::uint32_t doorbell;               // the slot's bell in the topic's doorbell segment (= the slot), for tools
    std::uint32_t pid;
    // Eviction (DESIGN §4, slow subscribers), written by the broker only. `missed`: data records the
    // broker skipped over when it moved this slot's cursors forward. `evictions`: a sequence count, odd
    // while an eviction is being written (missed, then the cursor CAS), even once done, so that the
    // subscriber reads missed and cursors as one consistent pair; evictions / 2 is how many happened.
    std::atomic<std::uint32_t> evictions;
    std::atomic<std::uint64_t> missed;
    std::uint8_t pad0[kLine - 56];
    // line 1: counters, single writer (the subscriber)
    std::atomic<std::uint64_t> received[kLanes];
    std::atomic<std::uint64_t> lagged;
    std::atomic<std::uint64_t> wakeups;
    std::atomic<std::uint64_t> corrupt;        // corrupt records met (each reported once, then skipped)
    std::atomic<std::uint64_t> skipped_bytes;  // ring bytes jumped over to resynchronise after them
    // lines 2-9: one-way latency (receive time minus the record's publish timestamp) of sampled records,
    // counted per bucket (shm/latency.hpp: four buckets per power of two, up to 69 s); single
    // writer (the subscriber), read by the broker's reports.
    std::atomic<std::uint32_t> latency[kLatencyBuckets];
};
static_assert(sizeof(SubscriberSlot) == 10 * kLine);
static_assert(offsetof(SubscriberSlot, latency) == 2 * kLine);
static_assert(offsetof(SubscriberSlot, state) == 32);
static_assert(offsetof(SubscriberSlot, evictions) == 44);
static_assert(offsetof(SubscriberSlot, missed) == 48);
static_assert(offsetof(SubscriberSlot, received) == kLine);

constexpr std::uint64_t cursors_size(std::uint32_t max_subscribers) noexcept {
    return sizeof(CursorHeader) + std::uint64_t(max_subscribers) * sizeof(SubscriberSlot);
}

// ---------------------------------------------------------------------------------------------------
// Doorbell segment: one futex word per parked consumer, each alone on its line.
struct alignas(kLine) DoorbellHeader {
    std::uint64_t magic;
    std::uint32_t abi_version;
    std::uint32_t count;
    std::uint64_t segment_size;
    // The broker's timestamp calibration (shm::ClockCalibration): records' timestamps are converted
    // with it by every client alike.
    std::uint32_t clock_kind;   // 0 CLOCK_MONOTONIC ns, 1 TSC ticks
    std::uint32_t clock_shift;
    std::uint64_t clock_mult;
    std::uint64_t clock_tsc_ref;
    std::int64_t clock_mono_ref;
    std::uint8_t pad[kLine - 56];
};
static_assert(sizeof(DoorbellHeader) == kLine);
static_assert(offsetof(DoorbellHeader, clock_kind) == 24);
struct alignas(kLine) Doorbell {
    std::atomic<std::uint32_t> word;  // a wake-up counter; futex waits on its value
    std::uint8_t pad[kLine - 4];
};
static_assert(sizeof(Doorbell) == kLine);

constexpr std::uint64_t doorbells_size(std::uint32_t count) noexcept {
    return sizeof(DoorbellHeader) + std::uint64_t(count) * sizeof(Doorbell);
}

}  // namespace rvoip::events::layout
