// The validators of what clients write into shared memory: LaneReader::peek and its neighbours
// (consume, resync, follow_eviction), the broker's walks over the same rings (evict_subscriber,
// recover_publisher), and attach() / attach_doorbells() over segments made from the input.
//
// Input, first byte bit 7 clear: a topic of four 4 KiB lanes, formatted as the broker does, whose rings,
// tails, claim intents and subscriber slots a small program from the input writes. Records are written
// with the right keyed marker unless the program asks otherwise, so the fuzzer reaches past the marker
// check to the length, flags, publisher and padding checks. Bit 7 set: raw segments for attach(), with
// the fields the input chooses patched to consistent values (magic, sizes, offsets) so it gets past them.
//
// Promises checked: every record peek() returns lies inside its ring, carries its position's marker,
// is data, names a publisher slot in range and has a length the reader allows; evict_subscriber moves a
// cursor only forward, to a line boundary at or below the tail; attach() returns only views inside the
// segments. Reads or writes outside the segments are ASan's to find; misaligned header access UBSan's.
#include "shm/lane.hpp"
#include "shm/topic_map.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

using namespace rvoip::events;
using namespace rvoip::events::layout;

namespace {

// The input as a stream of little-endian fields; zeros once it runs out.
class Input {
public:
    Input(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
    template <class T>
    T take() {
        T v{};
        const std::size_t k = std::min(sizeof v, n_ - at_);
        if (k) std::memcpy(&v, d_ + at_, k);
        at_ += k;
        return v;
    }
    bool empty() const { return at_ >= n_; }
    std::span<const std::uint8_t> rest() const { return {d_ + at_, n_ - at_}; }

private:
    const std::uint8_t* d_;
    std::size_t n_;
    std::size_t at_ = 0;
};

// A zero-filled, line-aligned heap block of exactly `size` bytes: ASan reports any byte past it.
struct Block {
    explicit Block(std::size_t size) : size(size), p(static_cast<std::byte*>(::operator new(size ? size : 1, std::align_val_t(kLine)))) {
        std::memset(p, 0, size);
    }
    ~Block() { ::operator delete(p, std::align_val_t(kLine)); }
    Block(const Block&) = delete;
    Block& operator=(const Block&) = delete;
    std::span<std::byte> bytes() const { return {p, size}; }
    std::size_t size;
    std::byte* p;
};

[[noreturn]] void broken(const char* what) {
    std::fprintf(stderr, "fuzz_records: %s\n", what);
    std::abort();
}
void check(bool ok, const char* what) {
    if (!ok) broken(what);
}

volatile std::uint64_t sink;  // payload bytes are read, so ASan sees every byte a record claims

// Reads `lane` from `start` as a subscriber of slot 0 would, checking every record it is given.
void read_lane(const shm::TopicMap& t, std::size_t lane, std::uint64_t start, std::uint32_t exact, Input& in) {
    shm::LaneReader r(t, lane, 0, start, exact);
    const std::byte* ring = t.rings[lane];
    const std::uint64_t cap = t.settings[lane].capacity;
    const std::uint32_t max_event = t.settings[lane].max_event;
    for (int step = 0; step < 96; ++step) {
        const std::uint64_t at = r.position();
        const bool ready = r.ready();
        const auto p = r.peek();
        if (p.record) {
            const auto* b = reinterpret_cast<const std::byte*>(p.record);
            check(b >= ring && b + record_size(p.length) <= ring + cap, "peek returned a record outside its ring");
            check(std::uint64_t(b - ring) % kLine == 0, "peek returned a record off a line boundary");
            check(p.record->position.load() == (r.position() ^ t.record_key), "peek returned a record without its marker");
            check(p.record->flags == kRecordData, "peek returned a record that is not data");
            check(p.record->publisher < t.max_publishers, "peek returned a record of a publisher out of range");
            check(p.length == p.record->length, "peek's length differs from the header's");
            check(exact ? p.length == exact : p.length <= max_event, "peek returned a record of a length the lane forbids");
            std::uint64_t sum = 0;
            for (std::uint32_t i = 0; i < p.length; ++i) sum += std::uint8_t(b[sizeof(RecordHeader) + i]);
            sink = sum;
            r.consume(p);
            r.release_some();
        } else if (p.corrupt()) {
            check(ready, "peek found a corrupt record where none was ready");
            check(!r.describe(p).empty(), "describe said nothing");
            const std::uint64_t before = r.position();
            const std::uint64_t skipped = r.resync();
            check(r.position() > before && r.position() - before == skipped, "resync did not move forward");
        } else {
            check(r.position() >= at, "peek moved the reader backwards");
            if (in.take<std::uint8_t>() & 1) break;
            // A broker eviction moved our cursor (or not): follow it and go on.
            const std::uint64_t to = r.position() + std::uint64_t(in.take<std::uint8_t>()) * kLine;
            r.follow_eviction(to);
            check(r.position() >= std::min(to, at), "follow_eviction moved the reader backwards");
        }
    }
    r.release();
}

void fuzz_ring_program(Input& in) {
    std::array<LaneSettings, kLanes> lanes{};
    for (auto& l : lanes) {
        l.capacity = kMinCapacity;
        l.max_event = 1 + in.take<std::uint16_t>() % 2016;  // two records of it fit in 4 KiB
        l.overflow = Overflow::block;
    }
    const std::uint32_t maxp = 1 + in.take<std::uint8_t>() % 4;
    const std::uint32_t maxs = 1 + in.take<std::uint8_t>() % 4;
    Block data(shm::topic_data_size(lanes, maxp));
    Block cursors(cursors_size(maxs));
    Fingerprint fp;
    std::memcpy(fp.type_name, "fuzz", 4);
    shm::format_topic(data.bytes(), "fuzz", 1, fp, lanes, maxp);
    shm::format_cursors(cursors.bytes(), 1, maxs);
    std::uint64_t key = in.take<std::uint64_t>();
    if ((key & (kLine - 1)) == 0) key |= 1;
    reinterpret_cast<TopicHeader*>(data.p)->record_key = key;
    auto m = shm::attach(data.bytes(), cursors.bytes());
    check(m.has_value(), "attach refused a freshly formatted topic");
    shm::TopicMap t = *m;

    std::array<std::uint64_t, kLanes> start{}, w{};
    std::array<bool, kLanes> tail_set{};
    for (std::size_t l = 0; l < kLanes; ++l) start[l] = w[l] = std::uint64_t(in.take<std::uint32_t>()) & ~std::uint64_t(kLine - 1);
    for (std::uint32_t s = 0; s < maxs; ++s)
        for (std::size_t l = 0; l < kLanes; ++l) t.slots[s].position[l] = start[l];
    t.slots[0].state = std::uint32_t(SlotState::active);
    t.cursor_header->slot_limit = maxs;
    const std::uint32_t exact = in.take<std::uint8_t>() & 1 ? 1 + in.take<std::uint16_t>() % 2016 : 0;

    auto header = [&](std::size_t l, std::uint64_t pos) {
        return reinterpret_cast<RecordHeader*>(t.rings[l] + (pos & (kMinCapacity - 1)));
    };
    for (int ops = 0; ops < 256 && !in.empty(); ++ops) {
        const auto op = in.take<std::uint8_t>();
        const std::size_t l = op & 3;
        RecordHeader* h = header(l, w[l]);
        switch ((op >> 2) & 7) {
        case 0: {  // a data record, as a publisher writes it
            const std::uint32_t len = in.take<std::uint16_t>();
            h->length = len;
            h->flags = kRecordData;
            h->publisher = in.take<std::uint8_t>();
            h->position = w[l] ^ key;
            w[l] += record_size(len);
            break;
        }
        case 1: {  // padding of any length
            const std::uint32_t len = in.take<std::uint16_t>();
            h->length = len;
            h->flags = kRecordPadding;
            h->publisher = kBrokerPublisher;
            h->position = w[l] ^ key;
            w[l] += std::max<std::uint64_t>(kLine, align_line(len));
            break;
        }
        case 2: {  // any header fields under a valid marker
            h->length = in.take<std::uint32_t>();
            h->flags = in.take<std::uint16_t>();
            h->publisher = in.take<std::uint16_t>();
            h->position = w[l] ^ key;
            w[l] += kLine * (1 + in.take<std::uint8_t>() % 64);
            break;
        }
        case 3:  // an earlier lap's record: not ready
            h->length = in.take<std::uint16_t>();
            h->flags = kRecordData;
            h->position = (w[l] - kMinCapacity) ^ key;
            w[l] += kLine;
            break;
        case 4:  // a hole: claimed, never committed
            w[l] += kLine * (1 + in.take<std::uint8_t>() % 64);
            break;
        case 5:  // a marker that is off by a few bits
            h->length = in.take<std::uint16_t>();
            h->flags = kRecordData;
            h->position = w[l] ^ key ^ in.take<std::uint64_t>();
            w[l] += kLine;
            break;
        case 6: {  // the lane's tail, maybe with the join bit, maybe not on a record boundary
            const auto d = in.take<std::uint16_t>();
            t.lanes[l].tail = (w[l] + (d >> 1)) | (d & 1 ? kJoinBit : 0);
            tail_set[l] = true;
            break;
        }
        case 7: {  // a claim intent or a subscriber slot, as a (dead, or hostile) peer left it
            const auto who = in.take<std::uint8_t>();
            const auto state = in.take<std::uint8_t>() % 4;
            const std::uint64_t pos = start[l] + std::uint64_t(in.take<std::uint16_t>());  // maybe unaligned
            if ((who & 0x80) == 0) {
                auto& p = t.publishers[who % maxp];
                p.state = state;
                auto& ci = p.intent[l];
                ci.position = pos;
                ci.length = in.take<std::uint16_t>();
                ci.won = who & 0x40 ? pos : kNoPosition;
                ci.shrink_to = who & 0x20 ? pos + in.take<std::uint16_t>() : 0;
            } else {
                auto& s = t.slots[who % maxs];
                s.state = state;
                s.position[l] = pos;
            }
            break;
        }
        }
    }
    for (std::size_t l = 0; l < kLanes; ++l)
        if (!tail_set[l]) t.lanes[l].tail = w[l];

    for (std::size_t l = 0; l < kLanes; ++l) read_lane(t, l, start[l], exact, in);

    // The broker's eviction walk, from where each slot's cursor is now.
    for (std::uint32_t s = 0; s < maxs; ++s) {
        for (std::size_t l = 0; l < kLanes; ++l) {
            const std::uint64_t from = t.slots[s].position[l].load();
            const std::uint64_t tail = t.lanes[l].position();
            const auto e = shm::evict_subscriber(t, s, l, from);
            if (!e.evicted) continue;
            check(e.to > from && e.to - from == e.bytes, "eviction moved a cursor backwards or miscounted");
            check(e.to <= tail && e.to % kLine == 0, "eviction moved a cursor past the tail or off a line");
            check(e.missed <= e.bytes / kLine, "eviction counted more records than lines");
            check(t.slots[s].position[l].load() == e.to, "eviction reported a cursor it did not store");
        }
    }
    // Recovery of every publisher slot the program marked dead; then the lanes must still read safely.
    for (std::uint32_t p = 0; p < maxp; ++p)
        if (t.publishers[p].state.load() == std::uint32_t(SlotState::dead)) (void)shm::recover_publisher(t, p);
    for (std::size_t l = 0; l < kLanes; ++l) read_lane(t, l, start[l], exact, in);
}

// attach() on a data and a cursor segment made from the input, attach_doorbells() on a doorbell segment.
void fuzz_attach(Input& in) {
    const auto fix = in.take<std::uint16_t>();
    const std::size_t dsize = fix & 0x8000 ? 0 : in.take<std::uint32_t>() % (256 << 10);
    const std::size_t csize = fix & 0x4000 ? 0 : in.take<std::uint16_t>() % (cursors_size(kMaxSubscribers) + kLine);
    const std::size_t bsize = in.take<std::uint16_t>() % (doorbells_size(1024) + kLine);
    Block data(dsize), cursors(csize), bells(bsize);
    for (Block* b : {&data, &cursors, &bells}) {
        auto src = in.rest();
        const std::size_t n = std::min<std::size_t>(src.size(), std::min<std::size_t>(b->size, 512));
        std::memcpy(b->p, src.data(), n);
        (void)in.take<std::array<std::uint8_t, 512>>();  // the next segment's bytes follow 512 on
    }
    if (dsize >= sizeof(TopicHeader)) {
        auto* h = reinterpret_cast<TopicHeader*>(data.p);
        if (fix & 1) h->magic = kTopicDataMagic, h->abi_version = kAbiVersion;
        if (fix & 2) h->header_size = sizeof(TopicHeader), h->segment_size = dsize;
        if (fix & 4) {
            h->max_publishers = 1 + h->max_publishers % kMaxPublishers;
            h->rings_offset = rings_offset(h->max_publishers);
            std::uint64_t off = h->rings_offset;
            for (std::size_t l = 0; l < kLanes; ++l) h->ring_offset[l] = off, off += h->lanes[l].capacity;
        }
        if (fix & 8)
            for (auto& l : h->lanes) l.capacity = std::uint64_t(1) << (12 + l.capacity % 4);
    }
    if (csize >= sizeof(CursorHeader)) {
        auto* c = reinterpret_cast<CursorHeader*>(cursors.p);
        if (fix & 16) c->magic = kCursorsMagic, c->abi_version = kAbiVersion;
        if (fix & 32) c->header_size = sizeof(CursorHeader), c->segment_size = csize;
        if (fix & 64 && dsize >= sizeof(TopicHeader)) c->topic_id = reinterpret_cast<TopicHeader*>(data.p)->topic_id;
    }
    if (bsize >= sizeof(DoorbellHeader)) {
        auto* h = reinterpret_cast<DoorbellHeader*>(bells.p);
        if (fix & 128) h->magic = kDoorbellMagic, h->abi_version = kAbiVersion;
        if (fix & 256) h->segment_size = bsize;
    }

    if (auto m = shm::attach(data.bytes(), cursors.bytes())) {
        const shm::TopicMap& t = *m;
        if (dsize) {
            check(t.header && t.max_publishers >= 1 && t.max_publishers <= kMaxPublishers, "attach: publisher count");
            const auto* end = data.p + dsize;
            check(reinterpret_cast<const std::byte*>(t.publishers + t.max_publishers) <= end, "attach: publisher table outside");
            for (std::size_t l = 0; l < kLanes; ++l) {
                check(shm::validate_lane(t.settings[l], l).has_value(), "attach: invalid lane settings");
                check(t.rings[l] >= data.p + sizeof(TopicHeader) && t.rings[l] + t.settings[l].capacity <= end, "attach: ring outside");
                check(t.rings[l] >= reinterpret_cast<const std::byte*>(t.publishers + t.max_publishers), "attach: ring over the table");
                sink = std::uint8_t(t.rings[l][t.settings[l].capacity - 1]);
            }
            check((t.record_key & (kLine - 1)) != 0, "attach: record key");
            sink = t.publishers[t.max_publishers - 1].state.load();
            for (std::size_t l = 0; l < kLanes; ++l) sink = t.lanes[l].tail.load();
        }
        if (csize) {
            check(t.cursor_header && t.max_subscribers >= 1 && t.max_subscribers <= kMaxSubscribers, "attach: slot count");
            check(reinterpret_cast<const std::byte*>(t.slots + t.max_subscribers) <= cursors.p + csize, "attach: slots outside");
            sink = t.slots[t.max_subscribers - 1].state.load();
        }
        if (dsize && csize) {
            Input none(nullptr, 0);
            for (std::size_t l = 0; l < kLanes; ++l) read_lane(t, l, 0, 0, none);
        }
    }
    if (auto b = shm::attach_doorbells(bells.bytes())) {
        check(b->count >= 1 && b->count <= kMaxDoorbells && doorbells_size(b->count) <= bsize, "attach_doorbells: count");
        shm::ring(&b->bells[b->count - 1].word);
        // A record's timestamp is the publisher's to write and the calibration lies in a segment every
        // client maps read-write: converting any pair must be defined.
        sink = std::uint64_t(b->clock.to_ns(in.take<std::int64_t>()));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Input in(data, size);
    if (in.take<std::uint8_t>() & 0x80) fuzz_attach(in);
    else fuzz_ring_program(in);
    return 0;
}
