// A topic's mapped segments seen through validated pointers, plus the broker's operations on them.
//
// Who calls what:
//   format_topic / format_cursors / format_doorbells   broker, once, on freshly created segments
//   attach                                           anyone, after mapping; validates before any use
//   join_subscriber / leave_subscriber               broker only (the owner of slot states)
//   claim_publisher / release_publisher              broker only
//   recover_publisher                                broker only, contract: the publisher's process is gone
//                                                    and every slot of that process is marked dead first
//   evict_subscriber                                 broker only (its eviction monitor)
//
// join_subscriber, leave_subscriber and recover_publisher are modelled in tests/model/ring.pml: change
// them together with the model.
#pragma once

#include "proto/errc.hpp"
#include "proto/layout.hpp"
#include "shm/clock.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace rvoip::events::shm {

// Pointers into one topic's segments, each checked against the segment's size by attach(). Settings that
// sizes depend on are copied out, so a peer that scribbles on the header later cannot move our bounds.
struct TopicMap {
    layout::TopicHeader* header = nullptr;
    layout::LaneControl* lanes = nullptr;
    layout::PublisherEntry* publishers = nullptr;
    std::array<std::byte*, layout::kLanes> rings{};
    std::array<layout::LaneSettings, layout::kLanes> settings{};
    std::uint32_t max_publishers = 0;
    std::uint64_t record_key = 0;  // copied at attach, like the settings

    layout::CursorHeader* cursor_header = nullptr;
    layout::SubscriberSlot* slots = nullptr;
    std::uint32_t max_subscribers = 0;
};

struct DoorbellMap {
    layout::Doorbell* bells = nullptr;
    std::uint32_t count = 0;
    Clock clock;
};

// A random record key for a new topic (layout.hpp: never zero in its low six bits).
std::uint64_t new_record_key() noexcept;

// Broker: writes headers into zero-filled segments of the sizes returned by *_size().
std::uint64_t topic_data_size(const std::array<layout::LaneSettings, layout::kLanes>& lanes,
                              std::uint32_t max_publishers = layout::kMaxPublishers) noexcept;
void format_topic(std::span<std::byte> data, std::string_view name, std::uint32_t topic_id,
                  const layout::Fingerprint& fp, const std::array<layout::LaneSettings, layout::kLanes>& lanes,
                  std::uint32_t max_publishers = layout::kMaxPublishers) noexcept;
void format_cursors(std::span<std::byte> cursors, std::uint32_t topic_id,
                    std::uint32_t max_subscribers = layout::kMaxSubscribers) noexcept;
void format_doorbells(std::span<std::byte> bells, std::uint32_t count, const ClockCalibration& clock = {}) noexcept;

// Lane settings a topic may be created with; the message names the lane and the field.
Status validate_lane(const layout::LaneSettings& s, std::size_t lane);

// Validates magic, ABI version and every size and offset, then returns the view. Either span may be empty
// (the CLI maps only what it needs).
Result<TopicMap> attach(std::span<std::byte> data, std::span<std::byte> cursors);
Result<DoorbellMap> attach_doorbells(std::span<std::byte> bells);

// Broker: activates subscriber slot `slot` and returns its start positions (the lanes' tails). The slot's
// positions are made visible to publishers before its start is chosen, so no publisher can lap it.
std::array<std::uint64_t, layout::kLanes> join_subscriber(TopicMap& t, std::uint32_t slot, std::uint32_t doorbell,
                                                          std::uint32_t pid) noexcept;
void leave_subscriber(TopicMap& t, std::uint32_t slot) noexcept;

void claim_publisher(TopicMap& t, std::uint32_t slot, std::uint32_t pid) noexcept;
void release_publisher(TopicMap& t, std::uint32_t slot) noexcept;

// A claim intent read consistently from shared memory (length, position, won, then length and position
// again); length 0 when there is none or it was changing under us.
struct Intent {
    std::uint64_t position = 0;
    std::uint64_t won = 0;
    std::uint64_t shrink_to = 0;
    std::uint32_t length = 0;
    bool consistent = true;  // false: a live publisher was rewriting it
    std::uint64_t end() const noexcept { return position + length; }
    bool covers(std::uint64_t pos) const noexcept { return length != 0 && position <= pos && pos < end(); }
    // True when the CAS of this claim is proven (won == position) and `pos` lies in the part that stays
    // ours even if a short commit gave the rest back.
    bool shrunk() const noexcept { return shrink_to > position && shrink_to < end(); }
    bool proven_at(std::uint64_t pos) const noexcept {
        if (won != position || !covers(pos)) return false;
        return !shrunk() || pos < shrink_to;
    }
    // The end of the piece of this intent that holds `pos`: a short commit may have given back
    // [shrink_to, end), so the intent is two pieces then, and padding never crosses from one to the other.
    std::uint64_t piece_end(std::uint64_t pos) const noexcept { return shrunk() && pos < shrink_to ? shrink_to : end(); }
};
Intent read_intent(const layout::ClaimIntent& in) noexcept;

// Broker, after the publisher's process is gone and every slot of that process is marked `dead`: turns
// the claimed-but-uncommitted parts of its claims into padding so subscribers move on. For each lane it
// walks the dead slot's intent [position, end): committed records are stepped over; at a hole, if a live
// publisher's intent covers it the decision is left for later (`retry`: a live, merely slow publisher is
// never acted against), unless a dead claimant proved with `won` that the range is its own; otherwise the
// hole is padded up to the nearest end among the dead intents covering it. Nothing is written where no
// active subscriber waits (the bytes may already hold a later lap). Returns `done` when the slot may be
// reused; `corrupt` names what it refused to act on.
enum class Recovery { done, retry };
struct RecoveryReport {
    Recovery outcome = Recovery::done;
    std::uint64_t padded_bytes = 0;
    std::string corrupt;  // non-empty: an intent or lane value from shared memory that was refused
};
RecoveryReport recover_publisher(TopicMap& t, std::uint32_t slot);

// Broker: evicts subscriber `slot` from `lane` (DESIGN §4, slow subscribers) by moving its cursor forward
// over the committed records from `expected`, the stuck cursor it read, counting the data records among
// them exactly. The walk stops at the first record that is not committed (or fails the checks a reader
// makes), at the tail, and after at most capacity / 64 records. The records walked cannot be overwritten
// meanwhile: the stuck cursor itself holds every publisher back from them.
//
// Writes, in this order: evictions made odd; missed += M; cursor CAS expected -> Q; evictions made even.
// A failed CAS (the subscriber moved by itself) takes M back off before evictions turns even, so the
// subscriber, which reads missed and its cursors only between two equal, even evictions values, never
// counts it. The slot stays active: from Q its cursor gates publishers as before, and no rejoin is needed.
struct EvictReport {
    bool evicted = false;
    std::uint64_t missed = 0;  // data records skipped (M)
    std::uint64_t bytes = 0;   // ring bytes skipped (Q - expected), padding included
    std::uint64_t to = 0;      // the new cursor (Q)
};
EvictReport evict_subscriber(TopicMap& t, std::uint32_t slot, std::size_t lane, std::uint64_t expected) noexcept;

}  // namespace rvoip::events::shm
