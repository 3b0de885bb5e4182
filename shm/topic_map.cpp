#include "shm/topic_map.hpp"

#include "shm/lane.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <x86intrin.h>
#include <ctime>
#include <string>

#include <sys/random.h>
#include <unistd.h>

namespace rvoip::events::shm {

using namespace layout;

std::uint64_t new_record_key() noexcept {
    std::uint64_t k = 0;
    if (::getrandom(&k, sizeof k, 0) != sizeof k) {  // no entropy source: still unpredictable enough to stop accidents
        timespec ts;
        ::clock_gettime(CLOCK_REALTIME, &ts);
        k = (std::uint64_t(ts.tv_nsec) << 32) ^ std::uint64_t(ts.tv_sec) ^ (std::uint64_t(::getpid()) << 48) ^ __rdtsc();
        k *= 0x9e3779b97f4a7c15ull;
    }
    if ((k & (kLine - 1)) == 0) k |= 1;
    return k;
}

std::uint64_t topic_data_size(const std::array<LaneSettings, kLanes>& lanes, std::uint32_t max_publishers) noexcept {
    std::uint64_t size = rings_offset(max_publishers);
    for (auto& l : lanes) size += l.capacity;
    return size;
}

void format_topic(std::span<std::byte> data, std::string_view name, std::uint32_t topic_id, const Fingerprint& fp,
                  const std::array<LaneSettings, kLanes>& lanes, std::uint32_t max_publishers) noexcept {
    auto* h = new (data.data()) TopicHeader{};
    h->magic = kTopicDataMagic;
    h->abi_version = kAbiVersion;
    h->header_size = sizeof(TopicHeader);
    h->segment_size = data.size();
    h->rings_offset = rings_offset(max_publishers);
    h->max_publishers = max_publishers;
    h->topic_id = topic_id;
    timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    h->created_ns = std::uint64_t(ts.tv_sec) * 1'000'000'000 + std::uint64_t(ts.tv_nsec);
    std::memcpy(h->name, name.data(), std::min(name.size(), kTopicNameMax));
    h->fingerprint = fp;
    std::uint64_t off = h->rings_offset;
    for (std::size_t l = 0; l < kLanes; ++l) {
        h->lanes[l] = lanes[l];
        h->ring_offset[l] = off;
        off += lanes[l].capacity;
    }
    // The rings start zero-filled (a fresh segment). The key's low six bits are never zero, so no
    // aligned position's marker is zero and an unwritten header never matches.
    h->record_key = new_record_key();
}

void format_cursors(std::span<std::byte> cursors, std::uint32_t topic_id, std::uint32_t max_subscribers) noexcept {
    auto* h = new (cursors.data()) CursorHeader{};
    h->magic = kCursorsMagic;
    h->abi_version = kAbiVersion;
    h->header_size = sizeof(CursorHeader);
    h->segment_size = cursors.size();
    h->max_subscribers = max_subscribers;
    h->topic_id = topic_id;
}

void format_doorbells(std::span<std::byte> bells, std::uint32_t count, const ClockCalibration& clock) noexcept {
    auto* h = new (bells.data()) DoorbellHeader{};
    h->magic = kDoorbellMagic;
    h->abi_version = kAbiVersion;
    h->count = count;
    h->segment_size = bells.size();
    h->clock_kind = static_cast<std::uint32_t>(clock.kind);
    h->clock_shift = clock.shift;
    h->clock_mult = clock.mult;
    h->clock_tsc_ref = clock.tsc_ref;
    h->clock_mono_ref = clock.mono_ref;
}

ClockCalibration calibrate_clock(std::int64_t window_ns) noexcept {
    ClockCalibration c;
    // Only an invariant TSC ticks at one rate on every core, in every power state.
    if (FILE* f = std::fopen("/proc/cpuinfo", "r")) {
        char line[4096];
        bool constant = false, nonstop = false;
        while (std::fgets(line, sizeof line, f)) {
            if (std::strncmp(line, "flags", 5) != 0) continue;
            constant = std::strstr(line, " constant_tsc") != nullptr;
            nonstop = std::strstr(line, " nonstop_tsc") != nullptr;
            break;
        }
        std::fclose(f);
        if (!constant || !nonstop) return c;
    } else {
        return c;
    }
    // A (tsc, ns) pair read as close together as we can: the TSC read on both sides of clock_gettime,
    // keeping the tightest of a few tries.
    auto pair = [](std::uint64_t& tsc, std::int64_t& ns) {
        std::uint64_t best = ~0ull;
        for (int i = 0; i < 16; ++i) {
            const std::uint64_t a = __rdtsc();
            const std::int64_t t = monotonic_ns();
            const std::uint64_t b = __rdtsc();
            if (b - a < best) {
                best = b - a;
                tsc = a + (b - a) / 2;
                ns = t;
            }
        }
    };
    std::uint64_t t0 = 0, t1 = 0;
    std::int64_t n0 = 0, n1 = 0;
    pair(t0, n0);
    timespec req{0, static_cast<long>(window_ns)};
    ::nanosleep(&req, nullptr);
    pair(t1, n1);
    if (t1 <= t0 || n1 <= n0) return c;
    c.shift = 32;
    c.mult = static_cast<std::uint64_t>((static_cast<unsigned __int128>(n1 - n0) << c.shift) / (t1 - t0));
    c.tsc_ref = t1;
    c.mono_ref = n1;
    c.kind = c.mult ? ClockKind::tsc : ClockKind::monotonic;
    return c;
}

Status validate_lane(const LaneSettings& s, std::size_t lane) {
    auto bad = [&](std::string why) {
        return fail(Errc::invalid_argument, std::string(to_string(static_cast<Priority>(lane))) + " lane: " + why);
    };
    if (!is_pow2(s.capacity) || s.capacity < kMinCapacity || s.capacity > kMaxCapacity)
        return bad("capacity " + std::to_string(s.capacity) + " is not a power of two in [4 KiB, 1 GiB]");
    if (s.max_event == 0 || s.max_event > kMaxEventLimit) return bad("max_event " + std::to_string(s.max_event) + " is not in [1, 16 MiB]");
    // The worst case claim is a record plus the padding before it: 2 * record - 64 bytes.
    if (2 * record_size(s.max_event) > s.capacity)
        return bad("capacity " + std::to_string(s.capacity) + " cannot hold two records of max_event " + std::to_string(s.max_event));
    if (s.overflow != Overflow::block && s.overflow != Overflow::fail) return bad("unknown overflow policy");
    if (s.evict_after_ms > kMaxEvictAfterMs) return bad("evict_after " + std::to_string(s.evict_after_ms) + " ms exceeds an hour");
    return {};
}

Result<TopicMap> attach(std::span<std::byte> data, std::span<std::byte> cursors) {
    TopicMap t;
    if (!data.empty()) {
        if (data.size() < sizeof(TopicHeader)) return fail(Errc::corrupt, "topic data segment smaller than its header");
        auto* h = reinterpret_cast<TopicHeader*>(data.data());
        if (h->magic != kTopicDataMagic) return fail(Errc::corrupt, "topic data segment has a bad magic number");
        if (h->abi_version != kAbiVersion)
            return fail(Errc::version_mismatch, "topic data segment has ABI version " + std::to_string(h->abi_version) +
                                                    ", this build speaks " + std::to_string(kAbiVersion));
        const std::uint32_t maxp = h->max_publishers;
        if (h->header_size != sizeof(TopicHeader) || h->segment_size != data.size() || maxp == 0 ||
            maxp > kMaxPublishers || h->rings_offset != rings_offset(maxp))
            return fail(Errc::corrupt, "topic data segment header disagrees with its size or layout");
        std::uint64_t off = h->rings_offset;
        for (std::size_t l = 0; l < kLanes; ++l) {
            const LaneSettings s = h->lanes[l];
            if (auto ok = validate_lane(s, l); !ok) return std::unexpected(ok.error().context("topic data segment"));
            if (h->ring_offset[l] != off || off + s.capacity > data.size())
                return fail(Errc::corrupt, "topic data segment: ring " + std::to_string(l) + " lies outside the segment");
            t.settings[l] = s;
            t.rings[l] = data.data() + off;
            off += s.capacity;
        }
        if ((h->record_key & (kLine - 1)) == 0) return fail(Errc::corrupt, "topic data segment has an invalid record key");
        t.record_key = h->record_key;
        t.header = h;
        t.lanes = reinterpret_cast<LaneControl*>(data.data() + kLaneControlOffset);
        t.publishers = reinterpret_cast<PublisherEntry*>(data.data() + kPublisherTableOffset);
        t.max_publishers = maxp;
    }
    if (!cursors.empty()) {
        if (cursors.size() < sizeof(CursorHeader)) return fail(Errc::corrupt, "cursor segment smaller than its header");
        auto* c = reinterpret_cast<CursorHeader*>(cursors.data());
        if (c->magic != kCursorsMagic) return fail(Errc::corrupt, "cursor segment has a bad magic number");
        if (c->abi_version != kAbiVersion)
            return fail(Errc::version_mismatch, "cursor segment has ABI version " + std::to_string(c->abi_version));
        const std::uint32_t maxs = c->max_subscribers;
        if (c->header_size != sizeof(CursorHeader) || maxs == 0 || maxs > kMaxSubscribers ||
            c->segment_size != cursors.size() || cursors_size(maxs) > cursors.size())
            return fail(Errc::corrupt, "cursor segment header disagrees with its size");
        if (t.header && t.header->topic_id != c->topic_id)
            return fail(Errc::corrupt, "cursor segment belongs to another topic");
        t.cursor_header = c;
        t.slots = reinterpret_cast<SubscriberSlot*>(cursors.data() + sizeof(CursorHeader));
        t.max_subscribers = maxs;
    }
    return t;
}

Result<DoorbellMap> attach_doorbells(std::span<std::byte> bells) {
    if (bells.size() < sizeof(DoorbellHeader)) return fail(Errc::corrupt, "doorbell segment smaller than its header");
    auto* h = reinterpret_cast<DoorbellHeader*>(bells.data());
    if (h->magic != kDoorbellMagic) return fail(Errc::corrupt, "doorbell segment has a bad magic number");
    if (h->abi_version != kAbiVersion) return fail(Errc::version_mismatch, "doorbell segment has another ABI version");
    const std::uint32_t n = h->count;
    if (n == 0 || n > kMaxDoorbells || doorbells_size(n) > bells.size() || h->segment_size != bells.size())
        return fail(Errc::corrupt, "doorbell segment header disagrees with its size");
    ClockCalibration c;
    c.kind = static_cast<ClockKind>(h->clock_kind);
    c.shift = h->clock_shift;
    c.mult = h->clock_mult;
    c.tsc_ref = h->clock_tsc_ref;
    c.mono_ref = h->clock_mono_ref;
    return DoorbellMap{reinterpret_cast<Doorbell*>(bells.data() + sizeof(DoorbellHeader)), n, Clock(c)};
}

std::array<std::uint64_t, kLanes> join_subscriber(TopicMap& t, std::uint32_t slot, std::uint32_t doorbell,
                                                  std::uint32_t pid) noexcept {
    auto& s = t.slots[slot];
    s.doorbell = doorbell;
    s.pid = pid;
    for (auto& m : t.cursor_header->parked) m.fetch_and(~(std::uint64_t(1) << slot));  // a previous owner's bit, if any
    for (auto& r : s.received) r.store(0, std::memory_order_relaxed);  // relaxed: the slot is not active yet
    s.lagged.store(0, std::memory_order_relaxed);
    s.wakeups.store(0, std::memory_order_relaxed);
    s.corrupt.store(0, std::memory_order_relaxed);
    s.skipped_bytes.store(0, std::memory_order_relaxed);
    s.evictions.store(0, std::memory_order_relaxed);
    s.missed.store(0, std::memory_order_relaxed);
    for (auto& b : s.latency) b.store(0, std::memory_order_relaxed);
    // 1. Hold the gate at the current tails and make the slot visible (seq_cst stores)... The tail is
    // taken with the join bit set: a short commit's give-back fails from here on, so the tail never
    // drops below the position held. (A plain read here let a give-back between it and step 2 leave
    // this first cursor above the start, and a gate refreshed in between lapped the joiner: found by
    // the model, JOIN_LONG.)
    for (std::size_t l = 0; l < kLanes; ++l) s.position[l].store(t.lanes[l].tail.fetch_or(kJoinBit) & ~kJoinBit);
    if (t.cursor_header->slot_limit.load() <= slot) t.cursor_header->slot_limit.store(slot + 1);
    s.state.store(static_cast<std::uint32_t>(SlotState::active));
    if (test_hooks::inside_join) test_hooks::inside_join(test_hooks::inside_join_ctx, slot);
    // 2. ...then choose the start. A publisher that scanned before the slot became active read its tail
    // before our store above, so its gate is at most the tail we read now: it cannot lap `start`. The
    // join bit (set again: a claim since cleared it) makes a short commit's give-back fail from now on,
    // so the tail never goes below `start`, which is at or past the first position held.
    std::array<std::uint64_t, kLanes> start{};
    for (std::size_t l = 0; l < kLanes; ++l) {
        start[l] = t.lanes[l].tail.fetch_or(kJoinBit) & ~kJoinBit;
        s.position[l].store(start[l]);
    }
    return start;
}

void leave_subscriber(TopicMap& t, std::uint32_t slot) noexcept {
    auto& s = t.slots[slot];
    s.state.store(static_cast<std::uint32_t>(SlotState::free));
    // Idempotent: a subscriber that died inside its park window leaves no sleeper count behind.
    for (auto& m : t.cursor_header->parked) m.fetch_and(~(std::uint64_t(1) << slot));
}

void claim_publisher(TopicMap& t, std::uint32_t slot, std::uint32_t pid) noexcept {
    auto& p = t.publishers[slot];
    p.pid = pid;
    for (auto& in : p.intent) {
        in.length.store(0);
        in.position.store(0);
        in.won.store(kNoPosition);
        in.shrink_to.store(0);
    }
    for (std::size_t l = 0; l < kLanes; ++l) {
        p.published[l].store(0, std::memory_order_relaxed);  // relaxed: published by the state store below
        p.full[l].store(0, std::memory_order_relaxed);
        p.timeouts[l].store(0, std::memory_order_relaxed);
    }
    p.state.store(static_cast<std::uint32_t>(SlotState::active));
}

void release_publisher(TopicMap& t, std::uint32_t slot) noexcept {
    t.publishers[slot].state.store(static_cast<std::uint32_t>(SlotState::free));
}

Intent read_intent(const ClaimIntent& in) noexcept {
    Intent r;
    const std::uint32_t len = in.length.load(std::memory_order_acquire);  // acquire: pairs with try_claim's release
    if (len == 0) return r;
    r.position = in.position.load(std::memory_order_acquire);
    r.won = in.won.load(std::memory_order_acquire);              // acquire: pairs with the release after the CAS
    r.shrink_to = in.shrink_to.load(std::memory_order_acquire);  // acquire: pairs with commit_in_place's release
    // Positions of one publisher never repeat and grow: the same length around an unchanged position is
    // one intent, not halves of two.
    if (in.length.load(std::memory_order_acquire) != len || in.position.load(std::memory_order_acquire) != r.position) {
        r.consistent = false;
        return r;
    }
    r.length = len;
    return r;
}

namespace {

const RecordHeader* header_at(const TopicMap& t, std::size_t lane, std::uint64_t pos) noexcept {
    return reinterpret_cast<const RecordHeader*>(t.rings[lane] + (pos & (t.settings[lane].capacity - 1)));
}

bool committed_at(const TopicMap& t, std::size_t lane, std::uint64_t pos) noexcept {
    return header_at(t, lane, pos)->position.load(std::memory_order_acquire) == (pos ^ t.record_key);  // acquire: pairs with the commit
}

void pad(TopicMap& t, std::size_t lane, std::uint64_t pos, std::uint64_t bytes) noexcept {
    auto* h = reinterpret_cast<RecordHeader*>(t.rings[lane] + (pos & (t.settings[lane].capacity - 1)));
    h->length = static_cast<std::uint32_t>(bytes);
    h->flags = kRecordPadding;
    h->publisher = kBrokerPublisher;
    h->sequence = 0;
    h->timestamp_ns = 0;
    h->position.store(pos ^ t.record_key, std::memory_order_release);  // release: pairs with the acquire in LaneReader::peek
}

// An intent is the publisher's to write: its position, length and shrink point must be line-aligned
// (every padding the broker writes starts and ends on a line, inside the ring) and its length within one
// lap, before any of them steps through the ring.
bool valid_intent(const Intent& in, std::uint64_t capacity) noexcept {
    return in.position % kLine == 0 && in.length % kLine == 0 && in.length <= capacity &&
           (!in.shrunk() || in.shrink_to % kLine == 0);
}

// One lane of recover_publisher.
Recovery recover_lane(TopicMap& t, std::uint32_t dead, std::size_t lane, RecoveryReport& r) {
    auto& own = t.publishers[dead].intent[lane];
    const Intent mine = read_intent(own);
    auto finish = [&] {
        own.length.store(0);
        return Recovery::done;
    };
    if (mine.length == 0) return finish();  // no claim in flight (a dead slot's intent no longer changes)
    const std::uint64_t cap = t.settings[lane].capacity;
    auto where = [lane] { return std::string(to_string(static_cast<Priority>(lane))) + " lane: "; };  // only on corruption
    if (!valid_intent(mine, cap)) {
        r.corrupt = where() + "claim intent (" + std::to_string(mine.position) + ", " + std::to_string(mine.length) +
                    (mine.shrunk() ? ", shrunk to " + std::to_string(mine.shrink_to) : std::string()) + ") is not aligned or exceeds the ring";
        return finish();
    }
    // seq_cst: every claim below this tail happened before this load, and so did its claimant's intent.
    const std::uint64_t tail = t.lanes[lane].position();
    if (tail % kLine != 0) {
        r.corrupt = where() + "tail " + std::to_string(tail) + " is not 64-byte aligned";
        return finish();
    }
    if (tail <= mine.position) return finish();  // its CAS never happened, and never will
    // Readers cannot pass a hole, so the lowest active cursor is at or before any hole a reader waits at.
    // Below it the bytes may already hold a later lap: never write there.
    // Cursors are the subscribers' to write: rounded down to a line, an unaligned one can never make us
    // read or pad off a record boundary (and no later lap can start in the line it points into, since a
    // record is at least a line long).
    const std::uint64_t waiting =
        min_cursor(t.lanes[lane], t.cursor_header, t.slots, t.max_subscribers, lane) & ~std::uint64_t(kLine - 1);
    const std::uint64_t stop = std::min(mine.end(), tail);
    std::uint64_t y = mine.position;
    while (y < stop) {
        if (committed_at(t, lane, y)) {
            const RecordHeader* h = header_at(t, lane, y);
            const std::uint64_t step = h->flags == kRecordPadding ? std::uint64_t(h->length) : record_size(h->length);
            if (step == 0 || step % kLine != 0 || step > cap) {
                r.corrupt = where() + "committed record at position " + std::to_string(y) + " has an impossible length";
                return finish();
            }
            y += step;
            continue;
        }
        if (waiting > y) {
            // Every subscriber is past y (no subscriber, or all joined later): its bytes may be a later
            // lap's. Go on where the first of them waits, if that is inside the range (tests/model).
            if (waiting >= stop) return finish();
            y = waiting;
            continue;
        }
        if (test_hooks::at_recovery_hole) test_hooks::at_recovery_hole(test_hooks::at_recovery_hole_ctx, y);
        // A hole at y. Who claimed it? Intents are read before committed_at is tested again: a live
        // publisher clears its intent only after its commit, so either we see its intent or its commit.
        bool live = false, proven = false;
        std::uint64_t hole_end = mine.end();
        for (std::uint32_t i = 0; i < t.max_publishers; ++i) {
            const auto st = static_cast<SlotState>(t.publishers[i].state.load());
            if (st != SlotState::active && st != SlotState::dead) continue;
            const Intent o = i == dead ? mine : read_intent(t.publishers[i].intent[lane]);
            if (st == SlotState::active && !o.consistent) {
                live = true;  // changing under us: decide later
                continue;
            }
            if (!o.covers(y) || !valid_intent(o, cap)) continue;
            if (st == SlotState::active) {
                live = true;
            } else {
                hole_end = std::min(hole_end, o.piece_end(y));
                // Claims never overlap: a dead claimant whose CAS is proven owns its range outright, and a
                // live intent over it can only be a stale, failed one (up to `shrink_to` after a give-back).
                if (o.proven_at(y)) proven = true;
            }
        }
        if (live && !proven) return Recovery::retry;
        if (committed_at(t, lane, y)) continue;  // a live publisher committed meanwhile
        hole_end = std::min(hole_end, tail);
        if (hole_end % kLine != 0) {  // unreachable with the checks above: never write off a line
            r.corrupt = where() + "hole end " + std::to_string(hole_end) + " is not 64-byte aligned";
            return finish();
        }
        while (y < hole_end) {
            const std::uint64_t n = std::min(cap - (y & (cap - 1)), hole_end - y);
            pad(t, lane, y, n);
            r.padded_bytes += n;
            y += n;
        }
    }
    return finish();
}

// The ring bytes of the committed record at `pos` (0: none, or one a reader would refuse); `data` tells
// whether it is an event or padding. The checks are LaneReader::peek's.
std::uint64_t committed_step(const TopicMap& t, std::size_t lane, std::uint64_t pos, bool& data) noexcept {
    if (!committed_at(t, lane, pos)) return 0;
    const RecordHeader* h = header_at(t, lane, pos);
    const std::uint64_t cap = t.settings[lane].capacity, idx = pos & (cap - 1);
    const std::uint32_t len = h->length;
    const std::uint16_t flags = h->flags;
    data = flags == kRecordData;
    if (flags == kRecordPadding) return len >= kLine && len % kLine == 0 && idx + len <= cap ? len : 0;
    if (!data || len > t.settings[lane].max_event || idx + record_size(len) > cap) return 0;
    return record_size(len);
}

}  // namespace

EvictReport evict_subscriber(TopicMap& t, std::uint32_t slot, std::size_t lane, std::uint64_t expected) noexcept {
    EvictReport r;
    if (slot >= t.max_subscribers || lane >= kLanes || expected % kLine != 0) return r;
    auto& s = t.slots[slot];
    const std::uint64_t cap = t.settings[lane].capacity;
    const std::uint64_t tail = t.lanes[lane].position();
    std::uint64_t q = expected;
    for (std::uint64_t hops = 0; hops < cap / kLine && q < tail; ++hops) {
        bool data = false;
        const std::uint64_t step = committed_step(t, lane, q, data);
        if (step == 0 || q + step > tail) break;
        q += step;
        r.missed += data;
    }
    if (q == expected) return r;  // nothing committed there: whatever holds the lane, it is not this reader
    // seq_cst throughout: the subscriber's reads (SubscriberCore::follow_eviction) are a seqlock over
    // evictions, and its own cursor CAS is ordered with ours.
    const std::uint32_t seq = s.evictions.load() | 1;
    s.evictions.store(seq);
    s.missed.store(s.missed.load() + r.missed);
    std::uint64_t from = expected;
    r.evicted = s.position[lane].compare_exchange_strong(from, q);
    if (!r.evicted) s.missed.store(s.missed.load() - r.missed);
    s.evictions.store(seq + 1);  // the subscriber's acquire load in try_next pairs with this store
    if (!r.evicted) return EvictReport{};
    r.bytes = q - expected;
    r.to = q;
    return r;
}

RecoveryReport recover_publisher(TopicMap& t, std::uint32_t slot) {
    RecoveryReport r;
    for (std::size_t lane = 0; lane < kLanes; ++lane)
        if (recover_lane(t, slot, lane, r) == Recovery::retry) r.outcome = Recovery::retry;
    return r;
}

}  // namespace rvoip::events::shm
