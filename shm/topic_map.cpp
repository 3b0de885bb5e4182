#include "shm/topic_map.hpp"

#include "shm/lane.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <x86intrin.h>
#include <ctime>
#include <string>

namespace rvoip::events::shm {

using namespace layout;

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
    // The rings start zero-filled (a fresh segment). A zero header never matches a reader's position
    // except position 0, so write a non-matching marker at offset 0 of each ring.
    for (std::size_t l = 0; l < kLanes; ++l) {
        auto* first = reinterpret_cast<RecordHeader*>(data.data() + h->ring_offset[l]);
        first->position.store(~std::uint64_t(0), std::memory_order_relaxed);  // relaxed: published by fd hand-off
    }
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
    s.parked.store(0);
    for (auto& r : s.received) r.store(0, std::memory_order_relaxed);  // relaxed: the slot is not active yet
    s.lagged.store(0, std::memory_order_relaxed);
    s.wakeups.store(0, std::memory_order_relaxed);
    // 1. Hold the gate at the current tails and make the slot visible (seq_cst stores)...
    for (std::size_t l = 0; l < kLanes; ++l) s.position[l].store(t.lanes[l].tail.load());
    if (t.cursor_header->slot_limit.load() <= slot) t.cursor_header->slot_limit.store(slot + 1);
    s.state.store(static_cast<std::uint32_t>(SlotState::active));
    // 2. ...then choose the start. A publisher that scanned before the slot became active read its tail
    // before our store above, so its gate is at most the tail we read now: it cannot lap `start`.
    std::array<std::uint64_t, kLanes> start{};
    for (std::size_t l = 0; l < kLanes; ++l) {
        start[l] = t.lanes[l].tail.load();
        s.position[l].store(start[l]);
    }
    return start;
}

void leave_subscriber(TopicMap& t, std::uint32_t slot) noexcept {
    auto& s = t.slots[slot];
    if (s.parked.exchange(0) != 0) t.cursor_header->waiters.fetch_sub(1);
    s.state.store(static_cast<std::uint32_t>(SlotState::free));
}

void claim_publisher(TopicMap& t, std::uint32_t slot, std::uint32_t pid) noexcept {
    auto& p = t.publishers[slot];
    p.pid = pid;
    p.intent_length.store(0);
    p.intent_position.store(0);
    p.intent_lane.store(0);
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

namespace {

bool committed_at(const TopicMap& t, std::size_t lane, std::uint64_t pos) noexcept {
    auto* h = reinterpret_cast<const RecordHeader*>(t.rings[lane] + (pos & (t.settings[lane].capacity - 1)));
    return h->position.load(std::memory_order_acquire) == pos;  // acquire: pairs with the publisher's commit
}

void pad(TopicMap& t, std::size_t lane, std::uint64_t pos, std::uint64_t bytes) noexcept {
    auto* h = reinterpret_cast<RecordHeader*>(t.rings[lane] + (pos & (t.settings[lane].capacity - 1)));
    h->length = static_cast<std::uint32_t>(bytes);
    h->flags = kRecordPadding;
    h->publisher = kBrokerPublisher;
    h->sequence = 0;
    h->timestamp_ns = 0;
    h->position.store(pos, std::memory_order_release);  // release: pairs with the acquire in LaneReader::peek
}

}  // namespace

RecoveryReport recover_publisher(TopicMap& t, std::uint32_t slot) noexcept {
    auto& p = t.publishers[slot];
    RecoveryReport r;
    const std::uint32_t len = p.intent_length.load(std::memory_order_acquire);  // acquire: pairs with finish()
    const std::uint32_t lane = p.intent_lane.load();
    const std::uint64_t start = p.intent_position.load();
    auto clear = [&] {
        p.intent_length.store(0);
        return r;
    };
    // No claim in flight, or values we must not act on.
    if (len == 0 || lane >= kLanes || len > t.settings[lane].capacity || len % kLine != 0) return clear();
    const std::uint64_t cap = t.settings[lane].capacity;
    if (t.lanes[lane].tail.load() <= start) return clear();  // its CAS never happened

    // Did the dead publisher win the CAS at `start`? If another publisher won there, the winner's intent
    // names `start` until it commits, and once it commits the header at `start` is committed with the
    // winner's id. Readers never pass an uncommitted record, so a claim that every subscriber is past
    // needs nothing from us (and its bytes may already carry a later lap).
    if (committed_at(t, lane, start)) {
        auto* h = reinterpret_cast<const RecordHeader*>(t.rings[lane] + (start & (cap - 1)));
        if (h->publisher != slot) return clear();
    } else {
        if (min_cursor(t.lanes[lane], t.cursor_header, t.slots, t.max_subscribers, lane) > start) return clear();
        for (std::uint32_t i = 0; i < t.max_publishers; ++i) {
            auto& o = t.publishers[i];
            if (i == slot || o.state.load() != static_cast<std::uint32_t>(SlotState::active)) continue;
            if (o.intent_length.load() != 0 && o.intent_lane.load() == lane && o.intent_position.load() == start) {
                r.outcome = Recovery::retry;  // a live publisher may own this claim: decide later
                return r;
            }
        }
    }
    // The claim [start, start+len) is ours. Skip what we committed, pad from the first gap to the end.
    std::uint64_t pos = start;
    const std::uint64_t end = start + len;
    while (pos < end && committed_at(t, lane, pos)) {
        auto* h = reinterpret_cast<const RecordHeader*>(t.rings[lane] + (pos & (cap - 1)));
        const std::uint64_t step = h->flags == kRecordPadding ? h->length : record_size(h->length);
        if (step == 0 || step % kLine != 0 || pos + step > end) break;  // nonsense: pad from here
        pos += step;
    }
    // Nobody waits at the gap: every subscriber is past it or there are none. Leave the bytes alone.
    if (pos < end && min_cursor(t.lanes[lane], t.cursor_header, t.slots, t.max_subscribers, lane) > pos) return clear();
    while (pos < end) {
        const std::uint64_t n = std::min(cap - (pos & (cap - 1)), end - pos);
        pad(t, lane, pos, n);
        r.padded_bytes += n;
        pos += n;
    }
    return clear();
}

}  // namespace rvoip::events::shm
