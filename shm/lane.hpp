// The multicast, multi-producer record ring of one topic lane (DESIGN §4): the publisher's view
// (LaneWriter) and the subscriber's view (LaneReader) of the same shared bytes.
//
// Written by hand: no library offers a variable-length, multicast, cursor-gated byte ring in shared memory
// (Boost.Lockfree's queues are fixed-size-slot and single-consumer-per-element).
//
//   claim:   tail.CAS(t, t + bytes) after checking t + bytes against a cached gate (min cursor + capacity)
//   commit:  payload and header fields, then header.position = p with release
//   read:    header.position == p (acquire) means committed; payload read in place; cursor = p' (release)
//
// Ownership: a LaneWriter belongs to one thread of one publisher; a LaneReader to one thread of one
// subscriber. Neither allocates, locks or makes a syscall, except LaneWriter::wake_parked, which runs
// only when some consumer sleeps.
#pragma once

#include "proto/errc.hpp"
#include "proto/layout.hpp"
#include "shm/doorbell.hpp"
#include "shm/topic_map.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>

namespace rvoip::events::shm {

// Lowest position any active subscriber of `lane` still needs; the tail when there are none. Loads are
// seq_cst so that a subscriber joining concurrently is either seen here or starts at or after the tail we
// read (see join_subscriber). Off the hot path: publishers call it only when their cached gate says full.
inline std::uint64_t min_cursor(const layout::LaneControl& lane_ctl, const layout::CursorHeader* ch,
                                const layout::SubscriberSlot* slots, std::uint32_t max_slots, std::size_t lane) noexcept {
    const std::uint64_t tail = lane_ctl.tail.load();
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

class LaneWriter {
public:
    struct Claim {
        std::uint64_t position = 0;  // first byte claimed (maybe a padding record)
        std::uint64_t end = 0;       // one past the last byte claimed
    };

    LaneWriter() = default;
    LaneWriter(const TopicMap& t, const DoorbellMap& bells, std::size_t lane, std::uint16_t publisher_slot) noexcept
        : tail_(&t.lanes[lane].tail),
          lane_ctl_(&t.lanes[lane]),
          ring_(t.rings[lane]),
          capacity_(t.settings[lane].capacity),
          mask_(t.settings[lane].capacity - 1),
          max_event_(t.settings[lane].max_event),
          cursor_header_(t.cursor_header),
          slots_(t.slots),
          max_slots_(t.max_subscribers),
          self_(&t.publishers[publisher_slot]),
          bells_(bells),
          lane_(static_cast<std::uint32_t>(lane)),
          publisher_(publisher_slot) {
        limit_ = min_cursor(*lane_ctl_, cursor_header_, slots_, max_slots_, lane_) + capacity_;
        sequence_ = self_->published[lane_].load(std::memory_order_relaxed);  // relaxed: our own counter
    }

    std::uint32_t max_event() const noexcept { return max_event_; }
    std::uint64_t capacity() const noexcept { return capacity_; }

    // Claims room for `n` records whose payload sizes are size_of(0..n-1), with one CAS. Padding is
    // inserted where a record would straddle the ring's end. Returns full when the slowest subscriber
    // has not made room, event_too_large when a record exceeds max_event or the batch can never fit.
    template <class SizeOf>
    Result<Claim> try_claim(std::uint32_t n, SizeOf&& size_of) noexcept {
        std::uint64_t t = tail_->load(std::memory_order_relaxed);  // relaxed: the CAS below validates it
        for (;;) {
            const std::uint64_t end = layout_end(t, n, size_of);
            if (end - t > capacity_) return std::unexpected(Error(Errc::event_too_large));
            if (end > limit_) {
                limit_ = min_cursor(*lane_ctl_, cursor_header_, slots_, max_slots_, lane_) + capacity_;
                if (end > limit_) return std::unexpected(Error(Errc::full));
            }
            // Claim intent: lets the broker pad this claim if we die between the CAS and the commit.
            self_->intent_lane.store(lane_, std::memory_order_relaxed);       // ordered by the CAS below
            self_->intent_position.store(t, std::memory_order_relaxed);       // ordered by the CAS below
            self_->intent_length.store(std::uint32_t(end - t), std::memory_order_relaxed);
            // seq_cst: the intent stores above become visible no later than the new tail, and a failed CAS
            // acquires the winner's intent (recover_publisher relies on both).
            if (tail_->compare_exchange_weak(t, end, std::memory_order_seq_cst, std::memory_order_seq_cst))
                return Claim{t, end};
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
        std::uint64_t pos = c.position;
        for (std::uint32_t i = 0; i < n; ++i) {
            const std::uint32_t len = size_of(i);
            const std::uint64_t at = skip_padding(pos, len);
            if (at != pos) write_padding(pos, at - pos);
            auto* h = header_at(at);
            fill(i, reinterpret_cast<std::byte*>(h + 1));
            publish_header(h, at, len, ts);
            pos = at + layout::record_size(len);
        }
        finish(n);
    }

    // Commit of one record whose payload the caller already wrote in place (a loan claimed for
    // `claimed` bytes). A shorter `len` leaves the rest of the claim as padding after the record.
    void commit_in_place(const Claim& c, std::uint32_t claimed, std::uint32_t len, std::int64_t ts) noexcept {
        const std::uint64_t at = skip_padding(c.position, claimed);
        if (at != c.position) write_padding(c.position, at - c.position);
        publish_header(header_at(at), at, len, ts);
        const std::uint64_t end = at + layout::record_size(len);
        if (end < c.end) write_padding(end, c.end - end);
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
        self_->intent_length.store(0, std::memory_order_release);  // release: pairs with recover_publisher's acquire
    }

    // Dekker handshake, publisher side (the other half is in SubscriberCore::next_for): after the
    // commit, look for parked consumers. The seq_cst claim CAS already ordered this load after our
    // claim became visible, so no fence is needed here: one load when nobody sleeps.
    void notify() noexcept {
        if (cursor_header_ && cursor_header_->waiters.load() != 0) wake_parked();  // seq_cst: after the claim CAS
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
        auto* h = header_at(pos);
        h->length = static_cast<std::uint32_t>(bytes);
        h->flags = layout::kRecordPadding;
        h->publisher = publisher_;
        h->sequence = 0;
        h->timestamp_ns = 0;
        h->position.store(pos, std::memory_order_release);  // release: pairs with the acquire in LaneReader::peek
    }
    void publish_header(layout::RecordHeader* h, std::uint64_t pos, std::uint32_t len, std::int64_t ts) noexcept {
        h->length = len;
        h->flags = layout::kRecordData;
        h->publisher = publisher_;
        h->sequence = sequence_++;
        h->timestamp_ns = ts;
        h->position.store(pos, std::memory_order_release);  // release: pairs with the acquire in LaneReader::peek
    }
    void finish(std::uint32_t) noexcept {
        self_->intent_length.store(0, std::memory_order_release);  // release: pairs with recover_publisher's acquire
        // Single writer: a plain store, never a shared read-modify-write (DESIGN §4, stats).
        self_->published[lane_].store(sequence_, std::memory_order_relaxed);  // relaxed: read by the CLI only
    }
    void wake_parked() noexcept;
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
    layout::PublisherEntry* self_ = nullptr;
    DoorbellMap bells_{};
    std::uint64_t limit_ = 0;  // cached gate: claims may end at or before this position
    std::uint64_t sequence_ = 0;
    std::uint32_t lane_ = 0;
    std::uint16_t publisher_ = 0;
};

inline void LaneWriter::wake_parked() noexcept {
    const std::uint32_t n = std::min(cursor_header_->slot_limit.load(std::memory_order_acquire), max_slots_);
    for (std::uint32_t i = 0; i < n; ++i) {
        const auto& s = slots_[i];
        // acquire: pairs with the release of `parked` (via the waiters RMW) in Subscriber's park
        if (s.parked.load(std::memory_order_acquire) == 0) continue;
        if (s.state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(layout::SlotState::active)) continue;
        const std::uint32_t d = s.doorbell;
        if (d < bells_.count) ring(&bells_.bells[d].word);  // bounds-checked: the index lives in shared memory
    }
}

class LaneReader {
public:
    LaneReader() = default;
    LaneReader(const TopicMap& t, std::size_t lane, std::uint32_t slot, std::uint64_t start) noexcept
        : ring_(t.rings[lane]),
          capacity_(t.settings[lane].capacity),
          mask_(t.settings[lane].capacity - 1),
          max_event_(t.settings[lane].max_event),
          cursor_(&t.slots[slot].position[lane]),
          position_(start),
          published_(start) {}

    struct Peek {
        const layout::RecordHeader* record = nullptr;  // the committed record at the read position, or none
        bool corrupt = false;                           // a committed header failed its bounds checks
    };

    // The committed record at the read position, skipping padding. A corrupt header leaves the reader
    // where it is (corruption() says what was wrong). No allocation, no syscall.
    Peek peek() noexcept {
        for (int hops = 0; hops < 2; ++hops) {  // at most one padding record precedes a data record
            const std::uint64_t idx = position_ & mask_;
            auto* h = reinterpret_cast<const layout::RecordHeader*>(ring_ + idx);
            // acquire: pairs with the release in LaneWriter::publish_header / write_padding. Anything but
            // our exact position is an earlier lap's bytes: not ready.
            if (h->position.load(std::memory_order_acquire) != position_) return {};
            const std::uint32_t len = h->length;
            if (h->flags == layout::kRecordPadding) {
                if (len < layout::kLine || len % layout::kLine != 0 || idx + len > capacity_) [[unlikely]]
                    return {nullptr, true};
                position_ += len;
                continue;
            }
            if (len > max_event_ || idx + layout::record_size(len) > capacity_) [[unlikely]]
                return {nullptr, true};
            return {h, false};
        }
        return {};
    }

    // What is wrong with the header at the read position (after peek() said corrupt).
    std::string corruption() const {
        const std::uint64_t idx = position_ & mask_;
        auto* h = reinterpret_cast<const layout::RecordHeader*>(ring_ + idx);
        return std::string(h->flags == layout::kRecordPadding ? "padding record of " : "record of ") +
               std::to_string(h->length) + " bytes at ring offset " + std::to_string(idx) + " exceeds its bounds";
    }

    // Moves past the record last returned by peek(). The cursor is not published yet: see release().
    void consume(const layout::RecordHeader* h) noexcept { position_ += layout::record_size(h->length); }

    // Lets publishers reuse everything before `pos` (a position previously reached by consume()).
    void release(std::uint64_t pos) noexcept {
        if (pos == published_) return;
        published_ = pos;
        cursor_->store(pos, std::memory_order_release);  // release: pairs with the seq_cst loads in min_cursor
    }
    void release() noexcept { release(position_); }
    // release(), but only once a sixteenth of the ring has been read since the last one: the cursor's
    // line is read by publishers of a full lane, and a store per record would bounce it between cores.
    // Callers release() fully whenever the lane runs empty, so an idle reader never holds space back.
    void release_some() noexcept {
        if (position_ - published_ >= (capacity_ >> 4)) release(position_);
    }

    std::uint64_t position() const noexcept { return position_; }

    // True when a record (or padding) is committed at the read position. One acquire load.
    bool ready() const noexcept {
        auto* h = reinterpret_cast<const layout::RecordHeader*>(ring_ + (position_ & mask_));
        return h->position.load(std::memory_order_acquire) == position_;  // acquire: pairs with publish_header
    }

private:
    const std::byte* ring_ = nullptr;
    std::uint64_t capacity_ = 0;
    std::uint64_t mask_ = 0;
    std::uint32_t max_event_ = 0;
    std::atomic<std::uint64_t>* cursor_ = nullptr;
    std::uint64_t position_ = 0;   // next record to read
    std::uint64_t published_ = 0;  // last value stored to *cursor_
};

}  // namespace rvoip::events::shm
