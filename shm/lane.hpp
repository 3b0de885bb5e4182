// The multicast, multi-producer record ring of one topic lane (DESIGN §4): the publisher's view
// (LaneWriter) and the subscriber's view (LaneReader) of the same shared bytes.
//
// Written by hand: no library offers a variable-length, multicast, cursor-gated byte ring in shared memory
// (Boost.Lockfree's queues are fixed-size-slot and single-consumer-per-element).
//
//   claim:   intent = (t, bytes); tail.CAS(t, t + bytes) after checking t + bytes against a cached gate
//            (min cursor + capacity); intent.won = t. On an exclusive lane (one publisher, the broker
//            sees to it) the CAS is a plain release store of the tail.
//   commit:  payload and header fields, then header.position = p ^ key with release; intent cleared
//   read:    header.position == p ^ key (acquire) means committed; payload read in place; cursor = p' (release)
//
// Ownership: a LaneWriter belongs to one thread of one publisher; a LaneReader to one thread of one
// subscriber. Neither allocates, locks or makes a syscall, except LaneWriter::wake_parked, which runs
// only when some consumer sleeps.
//
// The protocol is modelled in tests/model/ring.pml (checked by spin in `make test`): a change to the
// claim, commit, read, padding or parking steps here must change the model with it, and the other way round.
//
// Nothing read from shared memory is trusted: a position that is not 64-byte aligned, a header whose
// flags, length or publisher index is out of range, a padding chain longer than the ring, are reported as
// corrupt (Errc::corrupt) and never used to index the ring.
#pragma once

#include "proto/errc.hpp"
#include "proto/layout.hpp"
#include "shm/doorbell.hpp"
#include "shm/membarrier.hpp"
#include "shm/topic_map.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

namespace rvoip::events::shm {

// Test hooks: points where a test parks a publisher (here) or the broker's recovery (topic_map.cpp) to
// force an interleaving. The claim hook exists only in test builds that define RVOIP_TEST_HOOKS before
// including this header; the hot path of the library never sees it.
namespace test_hooks {
inline void (*before_claim_cas)(void* ctx, std::uint32_t lane) = nullptr;
inline void* before_claim_cas_ctx = nullptr;
inline void (*after_commit)(void* ctx) = nullptr;  // PublisherCore::publish_n, before notify()
inline void* after_commit_ctx = nullptr;
inline void (*at_recovery_hole)(void* ctx, std::uint64_t position) = nullptr;
inline void* at_recovery_hole_ctx = nullptr;
inline void (*inside_join)(void* ctx, std::uint32_t slot) = nullptr;  // join_subscriber, between its two steps
inline void* inside_join_ctx = nullptr;
}  // namespace test_hooks

// Lowest position any active subscriber of `lane` still needs; the tail when there are none. Loads are
// seq_cst so that a subscriber joining concurrently is either seen here or starts at or after the tail we
// read (see join_subscriber). Off the hot path: publishers call it only when their cached gate says full.
inline std::uint64_t min_cursor(const layout::LaneControl& lane_ctl, const layout::CursorHeader* ch,
                                const layout::SubscriberSlot* slots, std::uint32_t max_slots, std::size_t lane) noexcept {
    const std::uint64_t tail = lane_ctl.position();
    if (!ch) return tail;
    std::uint64_t m = tail;
    const std::uint32_t n = std::min(ch->slot_limit.load(), max_slots);
    for (std::uint32_t i = 0; i < n; ++i) {
        if (slots[i].state.load() != static_cast<std::uint32_t>(layout::SlotState::active)) continue;
        std::uint64_t p = slots[i].position[lane].load();
        m = std::min(m, std::min(p, tail));  // a cursor beyond the tail is corrupt: it cannot hold us back
    }
    return m;
}

// The gate: the lowest position anyone may still need on `lane`. That is min_cursor, and also the start
// of every other publisher's claim in flight (its intent): a subscriber that joined at the tail after
// such a claim is past it, and without this a later claim could lap the open one's ring bytes, which
// its owner (or the broker's recovery) then writes over a newer record. Found by the model
// (tests/model, SPEC_GATE_NO_INTENTS). The tail is read first, then the intents, so any claim below the
// tail read has its intent seen. `self` (our own slot) is skipped: our intent is about to be rewritten.
inline std::uint64_t gate_position(const layout::LaneControl& lane_ctl, const layout::CursorHeader* ch,
                                   const layout::SubscriberSlot* slots, std::uint32_t max_slots,
                                   const layout::PublisherEntry* publishers, std::uint32_t max_publishers,
                                   std::uint32_t self, std::size_t lane) noexcept {
    std::uint64_t m = min_cursor(lane_ctl, ch, slots, max_slots, lane);
    for (std::uint32_t i = 0; i < max_publishers; ++i) {
        if (i == self) continue;
        const auto& in = publishers[i].intent[lane];
        if (in.length.load(std::memory_order_acquire) == 0) continue;  // acquire: pairs with try_claim's release of length
        m = std::min(m, in.position.load(std::memory_order_relaxed));  // relaxed: ordered by the acquire above
    }
    return m;
}

class LaneWriter {
public:
    struct Claim {
        std::uint64_t position = 0;  // first byte claimed (maybe a padding record)
        std::uint64_t end = 0;       // one past the last byte claimed
    };

    LaneWriter() = default;
    // `exclusive`: this publisher holds the lane alone (the broker granted it; LaneControl::exclusive).
    LaneWriter(const TopicMap& t, const DoorbellMap& bells, std::size_t lane, std::uint16_t publisher_slot, bool exclusive = false) noexcept
        : tail_(&t.lanes[lane].tail),
          lane_ctl_(&t.lanes[lane]),
          ring_(t.rings[lane]),
          capacity_(t.settings[lane].capacity),
          mask_(t.settings[lane].capacity - 1),
          max_event_(t.settings[lane].max_event),
          cursor_header_(t.cursor_header),
          slots_(t.slots),
          max_slots_(t.max_subscribers),
          publishers_(t.publishers),
          max_publishers_(t.max_publishers),
          self_(&t.publishers[publisher_slot]),
          intent_(&t.publishers[publisher_slot].intent[lane]),
          bells_(bells),
          key_(t.record_key),
          lane_(static_cast<std::uint32_t>(lane)),
          publisher_(publisher_slot),
          exclusive_(exclusive),
          fenced_(exclusive && !membarrier_registered()) {
        limit_ = gate() + capacity_;
        sequence_ = self_->published[lane_].load(std::memory_order_relaxed);  // relaxed: our own counter
    }

    std::uint32_t max_event() const noexcept { return max_event_; }
    std::uint64_t capacity() const noexcept { return capacity_; }

    // Claims room for `n` records whose payload sizes are size_of(0..n-1), with one CAS. Padding is
    // inserted where a record would straddle the ring's end. Returns full when the slowest subscriber
    // has not made room, event_too_large when a record exceeds max_event or the batch can never fit,
    // corrupt when the lane's tail is not a record boundary. The claim intent is written only once the
    // gate passes and is cleared on every return but success, so a live publisher's intent never names a
    // position it is not about to take (recovery would wait on it for good).
    template <class SizeOf>
    [[gnu::always_inline]] Result<Claim> try_claim(std::uint32_t n, SizeOf&& size_of) noexcept {
        std::uint64_t word = tail_->load(std::memory_order_relaxed);  // relaxed: the CAS below validates it
        for (;;) {
            const std::uint64_t t = word & ~layout::kJoinBit;  // our claim clears a join's bit: see commit_in_place
            if (t % layout::kLine != 0) [[unlikely]]
                return refuse(Error(Errc::corrupt, "lane tail " + std::to_string(t) + " is not 64-byte aligned"));
            const std::uint64_t end = layout_end(t, n, size_of);
            if (end - t > capacity_) return refuse(Error(Errc::event_too_large));
            if (end > limit_) {
                limit_ = gate() + capacity_;
                if (end > limit_) return refuse(Error(Errc::full));
            }
            intent_->position.store(t, std::memory_order_relaxed);  // relaxed: published by the release below
            // release: pairs with the acquire in read_intent (broker recovery): position before length.
            intent_->length.store(std::uint32_t(end - t), std::memory_order_release);
#ifdef RVOIP_TEST_HOOKS
            if (test_hooks::before_claim_cas) test_hooks::before_claim_cas(test_hooks::before_claim_cas_ctx, lane_);
#endif
            if (exclusive_) {
                // Nobody else claims here. A join's fetch_or may land between our load and this store
                // and lose its bit: the joiner then starts at or before this claim and reads it, and
                // the bit only guards a shrink of the claim it was set on (commit_in_place).
                // release: the intent is visible to whoever sees the new tail (recover_lane's load).
                tail_->store(end, std::memory_order_release);
                intent_->won.store(t, std::memory_order_release);  // release: pairs with read_intent
                return Claim{t, end};
            }
            // seq_cst: the intent stores above become visible no later than the new tail, and a failed CAS
            // acquires the winner's intent (recover_publisher relies on both).
            if (tail_->compare_exchange_weak(word, end, std::memory_order_seq_cst, std::memory_order_seq_cst)) {
                intent_->won.store(t, std::memory_order_release);  // release: pairs with read_intent
                return Claim{t, end};
            }
        }
    }

    // Payload area of the record that starts at or after `pos` (after padding if the record wraps).
    std::byte* payload_at(std::uint64_t pos, std::uint32_t len) noexcept {
        pos = skip_padding(pos, len);
        return ring_ + (pos & mask_) + sizeof(layout::RecordHeader);
    }

    // Writes the records of a claim in order: padding where needed, then each record's header, whose
    // position is stored last with release. fill(i, dst) writes payload i.
    template <class SizeOf, class Fill>
    void commit(const Claim& c, std::uint32_t n, SizeOf&& size_of, Fill&& fill, std::int64_t ts) noexcept {
        // The writer's fields in locals: a store into the ring may alias any member, so the compiler
        // would read them again after each record's stores.
        std::byte* const ring = ring_;
        const std::uint64_t mask = mask_, capacity = capacity_, key = key_;
        const std::uint16_t publisher = publisher_;
        std::uint64_t sequence = sequence_;
        std::uint64_t pos = c.position;
        for (std::uint32_t i = 0; i < n; ++i) {
            const std::uint32_t len = size_of(i);
            const std::uint64_t size = layout::record_size(len);
            std::uint64_t at = pos;
            if ((at & mask) + size > capacity) [[unlikely]] {  // skip_padding: the record wraps
                at = skip_padding(pos, len);
                write_padding(pos, at - pos);
            }
            auto* h = reinterpret_cast<layout::RecordHeader*>(ring + (at & mask));
            fill(i, reinterpret_cast<std::byte*>(h + 1));
            write_header(h, at ^ key, len, layout::kRecordData, publisher, sequence++, ts);
            pos = at + size;
        }
        sequence_ = sequence;
        finish(n);
    }

    // Commit of one record whose payload the caller already wrote in place (a loan claimed for
    // `claimed` bytes). A shorter `len` gives the rest of the claim back when nobody claimed after it
    // (tail CAS from exactly our claim's end; a subscriber started at that tail since, or any later claim,
    // makes it fail) and otherwise turns it into padding, written before the record is published so that
    // the claim is whole the moment a reader can reach its end. `shrink_to`, stored first, tells the
    // broker's recovery how far the claim is surely ours if we die in between.
    void commit_in_place(const Claim& c, std::uint32_t claimed, std::uint32_t len, std::int64_t ts) noexcept {
        const std::uint64_t at = skip_padding(c.position, claimed);
        if (at != c.position) write_padding(c.position, at - c.position);
        const std::uint64_t end = at + layout::record_size(len);
        if (end < c.end) {
            intent_->shrink_to.store(end, std::memory_order_release);  // release: pairs with read_intent's acquire
            std::uint64_t expected = c.end;  // without the join bit
            // seq_cst: ordered with join_subscriber's fetch_or and with every claim, like the claim CAS.
            if (!tail_->compare_exchange_strong(expected, end, std::memory_order_seq_cst, std::memory_order_relaxed))
                write_padding(end, c.end - end);
        }
        publish_header(header_at(at), at, len, ts);
        finish(1);
    }

    // Counters of refused or delayed publishes. Single writer: plain load and store, no shared RMW.
    void count_full() noexcept { bump(self_->full[lane_]); }
    void count_timeout() noexcept { bump(self_->timeouts[lane_]); }

    // Turns a whole claim into padding (a loan dropped without commit, or moved to another lane).
    void abandon(const Claim& c) noexcept {
        std::uint64_t pos = c.position;
        while (pos < c.end) {
            const std::uint64_t room = capacity_ - (pos & mask_);
            const std::uint64_t len = std::min(room, c.end - pos);
            write_padding(pos, len);
            pos += len;
        }
        intent_->length.store(0, std::memory_order_release);  // release: pairs with read_intent's acquire
    }

    // Dekker handshake, publisher side (the other half is Parking::wait, client/parking.hpp): after the
    // commit, look for parked consumers. The seq_cst claim CAS already ordered this load after our
    // claim became visible, so no fence is needed here: one load when nobody sleeps.
    //
    // An exclusive lane has no CAS. Its barrier is the parking consumer's membarrier (shm/membarrier.hpp):
    // here only the compiler must keep the load after the commit's stores, and the load is a plain one.
    // Without a registered membarrier (a kernel or seccomp filter refusing it) a full fence takes its
    // place: one per publish call, so one per batch.
    void notify() noexcept {
        if (!cursor_header_) return;
        std::uint64_t parked;
        if (exclusive_) {
            if (fenced_) std::atomic_thread_fence(std::memory_order_seq_cst);
            else std::atomic_signal_fence(std::memory_order_seq_cst);
            parked = cursor_header_->parked[lane_].load(std::memory_order_relaxed);  // relaxed: ordered by the consumer's membarrier (or the fence above)
        } else {
            parked = cursor_header_->parked[lane_].load();  // seq_cst: after the claim CAS
        }
        if (parked != 0) wake_parked(parked);
    }

    std::uint32_t lane() const noexcept { return lane_; }

private:
    template <class SizeOf>
    std::uint64_t layout_end(std::uint64_t pos, std::uint32_t n, SizeOf& size_of) const noexcept {
        const std::uint64_t start = pos;
        for (std::uint32_t i = 0; i < n; ++i) {
            const std::uint32_t len = size_of(i);
            if (len > max_event_) [[unlikely]]
                return start + capacity_ + 1;  // reported as event_too_large, like a batch that can never fit
            pos = skip_padding(pos, len) + layout::record_size(len);
        }
        return pos;
    }
    std::uint64_t skip_padding(std::uint64_t pos, std::uint32_t len) const noexcept {
        const std::uint64_t idx = pos & mask_;
        return idx + layout::record_size(len) > capacity_ ? pos + (capacity_ - idx) : pos;
    }
    layout::RecordHeader* header_at(std::uint64_t pos) noexcept {
        return reinterpret_cast<layout::RecordHeader*>(ring_ + (pos & mask_));
    }
    void write_padding(std::uint64_t pos, std::uint64_t bytes) noexcept {
        write_header(header_at(pos), pos ^ key_, static_cast<std::uint32_t>(bytes), layout::kRecordPadding, publisher_, 0, 0);
    }
    void publish_header(layout::RecordHeader* h, std::uint64_t pos, std::uint32_t len, std::int64_t ts) noexcept {
        write_header(h, pos ^ key_, len, layout::kRecordData, publisher_, sequence_++, ts);
    }
    // The fields first, the keyed position marker last: a reader takes the record once the marker matches.
    static void write_header(layout::RecordHeader* h, std::uint64_t marker, std::uint32_t len, std::uint16_t flags,
                             std::uint16_t publisher, std::uint64_t sequence, std::int64_t ts) noexcept {
        h->length = len;
        h->flags = flags;
        h->publisher = publisher;
        h->sequence = sequence;
        h->timestamp_ns = ts;
        h->position.store(marker, std::memory_order_release);  // release: pairs with the acquire in LaneReader::peek
    }
    // A claim that did not happen: no intent may stay behind (see try_claim).
    Result<Claim> refuse(Error e) noexcept {
        intent_->length.store(0, std::memory_order_release);  // release: pairs with read_intent's acquire
        return std::unexpected(std::move(e));
    }
    void finish(std::uint32_t) noexcept {
        intent_->length.store(0, std::memory_order_release);  // release: pairs with read_intent's acquire
        // Single writer: a plain store, never a shared read-modify-write (DESIGN §4, stats).
        self_->published[lane_].store(sequence_, std::memory_order_relaxed);  // relaxed: read by the CLI only
    }
    void wake_parked(std::uint64_t parked) noexcept;
    std::uint64_t gate() const noexcept {
        // An exclusive publisher's last tail store may still sit in its store buffer: without a fence, a
        // subscriber joining now could start below that tail while we miss its slot (gate_position's
        // reasoning needs the tail published first). Only on a gate refresh, not per claim.
        if (exclusive_) std::atomic_thread_fence(std::memory_order_seq_cst);
        return gate_position(*lane_ctl_, cursor_header_, slots_, max_slots_, publishers_, max_publishers_, publisher_, lane_);
    }
    static void bump(std::atomic<std::uint32_t>& c) noexcept {
        c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // relaxed: read by the CLI only
    }

    std::atomic<std::uint64_t>* tail_ = nullptr;
    const layout::LaneControl* lane_ctl_ = nullptr;
    std::byte* ring_ = nullptr;
    std::uint64_t capacity_ = 0;
    std::uint64_t mask_ = 0;
    std::uint32_t max_event_ = 0;
    const layout::CursorHeader* cursor_header_ = nullptr;
    const layout::SubscriberSlot* slots_ = nullptr;
    std::uint32_t max_slots_ = 0;
    const layout::PublisherEntry* publishers_ = nullptr;
    std::uint32_t max_publishers_ = 0;
    layout::PublisherEntry* self_ = nullptr;
    layout::ClaimIntent* intent_ = nullptr;
    DoorbellMap bells_{};
    std::uint64_t key_ = 0;
    std::uint64_t limit_ = 0;  // cached gate: claims may end at or before this position
    std::uint64_t sequence_ = 0;
    std::uint32_t lane_ = 0;
    std::uint16_t publisher_ = 0;
    bool exclusive_ = false;  // claims by plain store (the broker granted the lane to us alone)
    bool fenced_ = false;     // exclusive, and no membarrier to lean on: notify fences itself
};

// Rings the doorbell of every parked subscriber slot in `parked` (the mask read after the commit). Bell i
// of the topic's own doorbell segment is subscriber slot i's: no index is read from memory a subscriber
// can write, and no other topic's doorbells are within reach.
inline void LaneWriter::wake_parked(std::uint64_t parked) noexcept {
    while (parked != 0) {
        const auto i = static_cast<std::uint32_t>(std::countr_zero(parked));
        parked &= parked - 1;
        if (i >= max_slots_ || i >= bells_.count) break;  // bits past the segment's slots: nothing to ring
        const auto& s = slots_[i];
        if (s.state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(layout::SlotState::active)) continue;  // acquire: pairs with join_subscriber
        ring(&bells_.bells[i].word);
    }
}

class LaneReader {
public:
    LaneReader() = default;
    // `exact_size`: the payload size every data record of a typed topic has (0 for raw topics).
    LaneReader(const TopicMap& t, std::size_t lane, std::uint32_t slot, std::uint64_t start, std::uint32_t exact_size = 0) noexcept
        : ring_(t.rings[lane]),
          tail_(&t.lanes[lane].tail),
          capacity_(t.settings[lane].capacity),
          mask_((t.settings[lane].capacity - 1) & ~std::uint64_t(layout::kLine - 1)),
          key_(t.record_key),
          max_event_(t.settings[lane].max_event),
          min_len_(exact_size),
          len_span_(exact_size ? 0 : t.settings[lane].max_event),
          max_publishers_(t.max_publishers),
          cursor_(&t.slots[slot].position[lane]),
          position_(start),
          published_(start) {}

    enum class Fault : std::uint8_t { none, padding_length, data_length, flags, publisher, padding_loop };

    struct Peek {
        const layout::RecordHeader* record = nullptr;  // the committed record at the read position, or none
        std::uint32_t length = 0;                       // its payload length, validated (never re-read)
        Fault fault = Fault::none;                      // a committed header failed its checks
        bool corrupt() const noexcept { return fault != Fault::none; }
    };

    // The committed record at the read position, skipping any number of padding records (an abandoned
    // wrapping claim, a short raw commit, the broker's recovery may leave several in a row), bounded by
    // the ring's size. A corrupt header leaves the reader where it is: describe() says what was wrong,
    // resync() moves on. No allocation, no syscall.
    //
    // The read position only ever moves by validated multiples of 64 from a start the client checked
    // (SubscriberCore::open), and the ring index is masked to a line boundary as well, so even a wrong
    // start can never make a header read cross the ring's end: its marker would simply never match.
    [[gnu::always_inline]] Peek peek() noexcept {
        for (std::uint64_t hops = 0; hops <= capacity_ / layout::kLine; ++hops) {
            const std::uint64_t idx = position_ & mask_;
            auto* h = reinterpret_cast<const layout::RecordHeader*>(ring_ + idx);
            // acquire: pairs with the release in LaneWriter::publish_header / write_padding. Anything but
            // our exact position (keyed) is an earlier lap's bytes or a payload: not ready.
            if (h->position.load(std::memory_order_acquire) != (position_ ^ key_)) return {};
            const std::uint32_t len = h->length;
            const std::uint16_t flags = h->flags;
            if (flags == layout::kRecordPadding) {
                if (len < layout::kLine || len % layout::kLine != 0 || idx + len > capacity_) [[unlikely]]
                    return fault(Fault::padding_length, len);
                position_ += len;
                continue;
            }
            if (flags != layout::kRecordData) [[unlikely]]
                return fault(Fault::flags, flags);
            // One compare for "max_event at most" on raw topics and "exactly sizeof(T)" on typed ones.
            if (len - min_len_ > len_span_ || idx + layout::record_size(len) > capacity_) [[unlikely]]
                return fault(Fault::data_length, len);
            if (h->publisher >= max_publishers_) [[unlikely]]
                return fault(Fault::publisher, h->publisher);
            return {h, len, Fault::none};
        }
        return fault(Fault::padding_loop);
    }

    // What peek() found wrong, for the error the subscriber reports.
    std::string describe(const Peek& p) const {
        const std::string at = " at ring offset " + std::to_string(position_ & mask_) + " (position " + std::to_string(position_) + ")";
        const std::string v = std::to_string(fault_value_);
        switch (p.fault) {
        case Fault::padding_length: return "padding record of " + v + " bytes exceeds its bounds" + at;
        case Fault::data_length:
            return "record of " + v + " bytes" + at + (min_len_ ? " where every event has " + std::to_string(min_len_) + " bytes"
                                                                  : " exceeds the max event of " + std::to_string(max_event_) + " bytes or the ring");
        case Fault::flags: return "record header has unknown flags " + v + at;
        case Fault::publisher: return "record names publisher slot " + v + ", out of range" + at;
        case Fault::padding_loop: return "padding records cover more than the whole ring" + at;
        case Fault::none: break;
        }
        return "no fault";
    }

    // After a corrupt record: jump to the lane's tail (records claimed from then on are read as usual)
    // and return how many ring bytes were skipped. The lane's events in between are lost to this reader.
    std::uint64_t resync() noexcept {
        const std::uint64_t t = tail_->load(std::memory_order_acquire) & ~layout::kJoinBit & ~std::uint64_t(layout::kLine - 1);  // acquire: pairs with the claim CAS
        if (t <= position_) {  // the tail itself is behind us (corrupt): step over one line at least
            const std::uint64_t next = (position_ | (layout::kLine - 1)) + 1;
            const std::uint64_t skipped = next - position_;
            position_ = next;
            return skipped;
        }
        const std::uint64_t skipped = t - position_;
        position_ = t;
        return skipped;
    }

    // Moves past the record last returned by peek(), by the length peek() validated.
    void consume(const Peek& p) noexcept {
        position_ += layout::record_size(p.length);
        ++consumed_;
    }

    // Lets publishers reuse everything before `pos` (a position previously reached by consume()). A CAS
    // from the value we stored last, not a store: the broker may have moved the cursor forward (it
    // evicted us, shm::evict_subscriber), and then it stays where the broker put it until
    // follow_eviction() takes it up. Its cost is paid once per sixteenth of the ring or empty lane.
    void release(std::uint64_t pos) noexcept {
        if (pos == published_) return;
        std::uint64_t expected = published_;
        // release: pairs with the seq_cst loads in min_cursor; relaxed on failure: the broker's cursor is
        // read again, ordered, by follow_eviction.
        if (!cursor_->compare_exchange_strong(expected, pos, std::memory_order_release, std::memory_order_relaxed)) return;
        published_ = pos;
        consumed_at_store_ = consumed_;
    }
    void release() noexcept { release(position_); }
    // release(), but only once a sixteenth of the ring has been read since the last one: the cursor's
    // line is read by publishers of a full lane, and a store per record would bounce it between cores.
    // Callers release() fully whenever the lane runs empty, so an idle reader never holds space back.
    void release_some() noexcept {
        if (position_ - published_ >= (capacity_ >> 4)) release(position_);
    }

    std::uint64_t position() const noexcept { return position_; }
    // The cursor value this reader stored last (any other value in the slot was put there by the broker).
    std::uint64_t stored() const noexcept { return published_; }

    // After the broker moved our cursor from stored() to `cursor` (an eviction): returns how many of the
    // data records it counted as skipped this reader had delivered already, and resumes from `cursor`.
    // Normally the reader had stopped before `cursor` and jumps there. If it read on past `cursor` while
    // the broker walked, it stays where it is: the records in [cursor, position) are counted here (our
    // cursor at `cursor` still protects them), and the rest of what it delivered is what the broker skipped.
    std::uint64_t follow_eviction(std::uint64_t cursor) noexcept {
        const std::uint64_t delivered = consumed_ - consumed_at_store_;
        std::uint64_t beyond = 0;
        if (position_ <= cursor) position_ = cursor;
        else beyond = std::min(delivered, count_data(cursor, position_));
        published_ = cursor;
        consumed_at_store_ = consumed_ - beyond;
        return delivered - beyond;
    }

    // True when a record (or padding) is committed at the read position. One acquire load.
    bool ready() const noexcept {
        auto* h = reinterpret_cast<const layout::RecordHeader*>(ring_ + (position_ & mask_));
        return h->position.load(std::memory_order_acquire) == (position_ ^ key_);  // acquire: pairs with publish_header
    }

private:
    // Data records in [from, to), all committed and read by us already; stops at anything else.
    [[gnu::cold, gnu::noinline]] std::uint64_t count_data(std::uint64_t from, std::uint64_t to) const noexcept {
        std::uint64_t n = 0;
        for (std::uint64_t hops = 0; from < to && hops <= capacity_ / layout::kLine; ++hops) {
            const std::uint64_t idx = from & mask_;
            auto* h = reinterpret_cast<const layout::RecordHeader*>(ring_ + idx);
            if (h->position.load(std::memory_order_acquire) != (from ^ key_)) break;  // acquire: pairs with publish_header
            const std::uint32_t len = h->length;
            const bool padding = h->flags == layout::kRecordPadding;
            const std::uint64_t step = padding ? len : layout::record_size(len);
            if (step < layout::kLine || step % layout::kLine != 0 || idx + step > capacity_) break;
            n += !padding;
            from += step;
        }
        return n;
    }
    [[gnu::cold, gnu::noinline]] Peek fault(Fault f, std::uint64_t value = 0) noexcept {
        fault_value_ = value;
        return {nullptr, 0, f};
    }

    const std::byte* ring_ = nullptr;
    const std::atomic<std::uint64_t>* tail_ = nullptr;
    std::uint64_t capacity_ = 0;
    std::uint64_t mask_ = 0;
    std::uint64_t key_ = 0;
    std::uint32_t max_event_ = 0;
    // Payload length check in one compare: len - min_len_ <= len_span_ (unsigned). Typed topics: min_len_ is
    // sizeof(T) and the span 0; raw topics: 0 and max_event.
    std::uint32_t min_len_ = 0;
    std::uint32_t len_span_ = 0;
    std::uint32_t max_publishers_ = 0;
    std::atomic<std::uint64_t>* cursor_ = nullptr;
    std::uint64_t position_ = 0;   // next record to read
    std::uint64_t published_ = 0;  // last value stored to *cursor_
    std::uint64_t consumed_ = 0;           // data records consumed, ever
    std::uint64_t consumed_at_store_ = 0;  // ... when published_ was stored: those since lie past it
    std::uint64_t fault_value_ = 0;
};

}  // namespace rvoip::events::shm
