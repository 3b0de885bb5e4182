// Control-plane messages and their codec: the single definition of the wire format.
//
// Transport: a Unix SOCK_SEQPACKET socket, one frame per datagram, file descriptors attached with
// SCM_RIGHTS. Every frame starts with a 16-byte header:
//
//    0          4        6         8                 16
//   +----------+--------+---------+-----------------+---------------------+
//   | length   | type   | version | correlation id  | body (little endian) |
//   +----------+--------+---------+-----------------+---------------------+
//
// `length` counts the whole frame and must equal the datagram's size. Every reply carries the
// correlation id of its request; an ErrorReply carries that id, a code and a message. Strings are
// fixed-size, NUL-padded fields (names) or length-prefixed (messages); decode() checks every field and
// answers `malformed` with what was wrong.
#pragma once

#include "proto/errc.hpp"
#include "proto/layout.hpp"

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace rvoip::events::proto {

// 2: lane settings carry evict_after_ms; topic stats carry evictions
// 3: topic replies carry the topic's doorbell segment
// 4: consumer groups (join_group .. group_release)
constexpr std::uint16_t kProtocolVersion = 5;  // 5: exclusive publishers (add_publisher's exclusive lanes)
// 5 as well: an older client maps segments of the old layout (ABI 6: no exclusive lanes, whose
// publishers need a parking consumer's membarrier), so it is refused at its first frame rather than
// trusted with rings it would misread.
constexpr std::uint16_t kMinProtocolVersion = 5;
constexpr std::size_t kFrameHeaderSize = 16;
constexpr std::size_t kMaxFrame = 64 * 1024;
constexpr std::size_t kMaxErrorMessage = 1024;
constexpr std::size_t kClientNameMax = 31;
constexpr std::size_t kMaxStatsEntries = 256;

enum class MsgType : std::uint16_t {
    hello = 1,
    hello_ok = 2,
    open_topic = 3,
    topic_ok = 4,
    add_publisher = 5,
    publisher_ok = 6,
    add_subscriber = 7,
    subscriber_ok = 8,
    remove_publisher = 9,
    remove_subscriber = 10,
    ok = 11,
    stats = 12,
    stats_reply = 13,
    error_reply = 14,
    shutdown_notice = 15,  // broker -> client, unsolicited (correlation 0): the broker is stopping
    reclaim = 16,          // a reconnecting client takes back a slot it held before the connection dropped
    reclaim_ok = 17,
    inspect = 18,        // a tool asks for a report (rvoip-eventctl)
    inspect_reply = 19,  // one chunk of it
    join_group = 20,     // a consumer joins a group on a partitioned topic (or a keyed publisher declares it)
    group_ok = 21,
    leave_group = 22,
    group_assign = 23,   // broker -> member, unsolicited: a partition's cursor slot is the member's now
    group_revoke = 24,   // broker -> member, unsolicited: finish with a partition and give it back
    group_release = 25,  // member -> broker: the revoked partition, settled
};

enum class Role : std::uint8_t { publisher = 1, subscriber = 2 };
enum class StartAt : std::uint8_t { tail = 1 };

struct Hello {
    std::uint16_t version_min = kMinProtocolVersion;
    std::uint16_t version_max = kProtocolVersion;
    std::uint32_t pid = 0;
    std::string name;  // client name for logs and the CLI, [1, 31] printable chars
};
struct HelloOk {
    std::uint16_t version = kProtocolVersion;
    std::uint32_t client_id = 0;
    std::uint32_t broker_pid = 0;
    std::uint32_t abi_version = layout::kAbiVersion;
    // fds: [0] the broker segment (read-only): the clock calibration
};
struct OpenTopic {
    std::string topic;
    layout::Fingerprint fingerprint;
    // Settings to use if this open creates the topic; zero fields take the broker's defaults. `overflow`
    // counts only when block_timeout_ms is non-zero (the client chose a policy). `evict_after_ms`: 0 takes
    // the broker's default, kEvictNever asks for no eviction (stored as 0, which in the settings in force,
    // TopicOk's, means never), anything else is the value.
    std::array<layout::LaneSettings, layout::kLanes> lanes{};
};
constexpr std::uint32_t kEvictNever = 0xffffffffu;
struct TopicOk {
    std::uint32_t topic_id = 0;
    bool created = false;
    std::array<layout::LaneSettings, layout::kLanes> lanes{};
};
struct AddPublisher {
    std::uint32_t topic_id = 0;
    // Bit per lane this publisher asks to hold alone (an exclusive publisher claims with a plain store,
    // no CAS): granted only when no other publisher of the topic may publish there, and then refused
    // to every other publisher until this one goes.
    std::uint8_t exclusive = 0;
};
struct PublisherOk {
    std::uint32_t topic_id = 0;
    std::uint32_t slot = 0;
    std::uint8_t lanes = 0xf;  // bit per lane this client may publish on (Critical needs its own right)
    std::uint8_t taken = 0;    // bit per lane withheld because another publisher holds it alone
    // fds: [0] topic data (read-write), [1] topic cursors (read-only), [2] topic doorbells (read-write)
};
struct AddSubscriber {
    std::uint32_t topic_id = 0;
    std::uint32_t doorbell = layout::kNoDoorbell;  // must be kNoDoorbell: a subscriber's bell is its slot's
    StartAt start = StartAt::tail;
};
struct SubscriberOk {
    std::uint32_t topic_id = 0;
    std::uint32_t slot = 0;
    std::uint32_t doorbell = 0;
    std::array<std::uint64_t, layout::kLanes> start{};
    // fds: [0] topic data (read-only), [1] topic cursors (read-write), [2] topic doorbells (read-write)
};
struct RemovePublisher {
    std::uint32_t topic_id = 0;
    std::uint32_t slot = 0;
};
struct RemoveSubscriber {
    std::uint32_t topic_id = 0;
    std::uint32_t slot = 0;
};
struct Ok {};
struct Stats {};
struct TopicStats {
    std::string topic;
    std::uint32_t topic_id = 0;
    std::uint32_t publishers = 0;
    std::uint32_t subscribers = 0;
    std::array<std::uint64_t, layout::kLanes> tails{};
    std::uint64_t evictions = 0;  // subscribers the broker evicted from this topic's lanes since it started
};
struct StatsReply {
    std::uint32_t clients = 0;
    std::vector<TopicStats> topics;
};
struct ErrorReply {
    Errc code = Errc::internal;
    std::string message;
};
struct ShutdownNotice {};
// After a broker restart (or any lost connection) a client takes back the slots it still uses. The
// broker checks them against what it adopted: the topic by name and by its segment's record key (the
// same ring, not a namesake made since), the slot held for exactly the connecting process (its pid from
// the socket's peer credentials, never from the message) and, for a subscriber, its doorbell.
struct Reclaim {
    Role role = Role::publisher;
    std::string topic;
    std::uint64_t record_key = 0;
    std::uint32_t slot = 0;
    std::uint32_t doorbell = layout::kNoDoorbell;  // subscribers: the doorbell the slot was given
};
struct ReclaimOk {
    std::uint32_t topic_id = 0;  // the restarted broker's id of the topic (ids are renumbered)
};

// Inspection (rvoip-eventctl): the broker renders a JSON report of what the asking client may see and
// sends it in chunks of at most kInspectChunk bytes; the client asks for the next offset until it has
// `total`. The report is rendered once, when offset 0 is asked, and the later chunks come from that same
// rendering, so a report is one consistent snapshot however many frames it takes.
enum class InspectWhat : std::uint8_t { status = 1, topics = 2, topic = 3, clients = 4 };
constexpr std::size_t kInspectChunk = 60'000;
constexpr std::uint32_t kMaxInspectReport = 64u << 20;  // what a client accepts: ample for 4096 topics
struct Inspect {
    InspectWhat what = InspectWhat::status;
    std::string topic;        // InspectWhat::topic: its name
    std::uint32_t offset = 0;  // 0: render anew
};
struct InspectReply {
    std::uint32_t total = 0;  // bytes in the whole report
    std::uint32_t offset = 0;
    std::string chunk;
};

// Consumer groups (DESIGN §4, keyed shards). A partitioned topic `t` of N partitions is N ordinary
// topics named partition_topic(t, i); a keyed publisher writes each event to the partition its key
// hashes to. Each partition has one cursor slot per group, held by the member the broker assigned the
// partition to; when members join, leave or die the broker moves slots between them: a live member is
// asked to give one back (group_revoke, answered by group_release once its samples are released), a
// dead member's slots pass on at once from their last released position, with `redeliver_until` set
// to the lanes' tails then (events below it may have reached the dead member: flagged redelivered).
constexpr std::uint32_t kMaxPartitions = 128;  // a member may hold them all: one WaitSet (futex_waitv) covers them
constexpr std::size_t kGroupNameMax = 31;
// The partition topics' names: "<topic>.p<i>"; so a partitioned topic's name is at most 58 characters.
std::string partition_topic(std::string_view topic, std::uint32_t partition);
struct JoinGroup {
    std::string topic;  // the partitioned topic's name (its partitions must have been opened)
    std::string group;  // [a-z0-9][a-z0-9_.-]{0,30}; empty: only declare the topic's partition count
    std::uint32_t partitions = 0;
};
struct GroupOk {
    std::uint32_t member = 0;  // 0 when only declared
    std::uint32_t partitions = 0;
};
struct LeaveGroup {
    std::uint32_t member = 0;
};
struct GroupAssign {
    std::uint32_t member = 0;
    std::uint32_t partition = 0;
    std::uint32_t topic_id = 0;  // the partition topic
    std::uint32_t slot = 0;      // its subscriber slot (and doorbell) that is the group's cursor
    std::array<std::uint64_t, layout::kLanes> start{};            // the slot's positions when it was handed over
    std::array<std::uint64_t, layout::kLanes> redeliver_until{};  // records ending at or below: flag redelivered
    // fds: [0] topic data (read-only), [1] topic cursors (read-write), [2] topic doorbells (read-write)
};
struct GroupRevoke {
    std::uint32_t member = 0;
    std::uint32_t partition = 0;
};
struct GroupRelease {
    std::uint32_t member = 0;
    std::uint32_t partition = 0;
};

using Body = std::variant<Hello, HelloOk, OpenTopic, TopicOk, AddPublisher, PublisherOk, AddSubscriber, SubscriberOk,
                          RemovePublisher, RemoveSubscriber, Ok, Stats, StatsReply, ErrorReply, ShutdownNotice, Reclaim,
                          ReclaimOk, Inspect, InspectReply, JoinGroup, GroupOk, LeaveGroup, GroupAssign, GroupRevoke,
                          GroupRelease>;

struct Message {
    std::uint64_t correlation = 0;
    Body body;
};

MsgType type_of(const Body& b) noexcept;
std::string_view to_string(MsgType t) noexcept;

// Encodes a message into a frame. Throws nothing; a message whose fields are out of range (a name too
// long) encodes as given and is refused by the peer's decode, so validation lives in one place.
std::vector<std::byte> encode(const Message& m);

// Decodes one frame (one datagram). Every field is checked; anything malformed yields Errc::malformed or
// Errc::version_mismatch with a message that names the field.
Result<Message> decode(std::span<const std::byte> frame);

// Reads the correlation id of a frame that may be malformed, so an error reply can still carry it.
std::uint64_t peek_correlation(std::span<const std::byte> frame) noexcept;

// Topic names: [a-z0-9][a-z0-9_.-]{0,62}
Status validate_topic_name(std::string_view name);
// Group names: [a-z0-9][a-z0-9_.-]{0,30}
Status validate_group_name(std::string_view name);

// True when every byte is printable ASCII (0x20-0x7e): what decode() accepts in names and type names.
bool printable(std::string_view s) noexcept;
// Up to `max` bytes of `s` for a log line or an error message, every byte outside printable ASCII (and
// the backslash) written as \xNN: nothing a client or a segment holds can forge a log line.
std::string printable_excerpt(std::string_view s, std::size_t max = 80);

}  // namespace rvoip::events::proto
