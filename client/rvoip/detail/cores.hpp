// Internal to librvoip-events: the untyped cores behind Publisher, Subscriber and their raw forms (the
// ring's writers and readers, loans, parking, evictions). Not an API: included by rvoip/events.hpp for
// the inline hot paths, and free to change with any release.
#pragma once

#include "proto/errc.hpp"
#include "proto/layout.hpp"
#include "proto/messages.hpp"
#include "rvoip/options.hpp"
#include "shm/lane.hpp"
#include "shm/segment.hpp"
#include "shm/topic_map.hpp"

#include <array>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace rvoip::events {

namespace detail {

class Connection;
class Poller;
struct Mapped;  // a topic's segments, mapped (client/connection.hpp)

class PublisherCore {
public:
    static Result<std::unique_ptr<PublisherCore>> open(std::shared_ptr<Connection> conn, std::string_view topic,
                                                       const layout::Fingerprint& fp, const PublisherOptions& opt);
    ~PublisherCore();

    // Publishes n records with one claim. size_of(i) is record i's payload size; fill(i, dst) writes it.
    // A publish on the lane of the loan in flight is refused (loan_outstanding): the loan's claim is
    // open there, and the loan's record would have to come first.
    template <class SizeOf, class Fill>
    Status publish_n(std::uint32_t n, SizeOf&& size_of, Fill&& fill, Priority p) noexcept {
        const auto lane = static_cast<std::size_t>(p) & 3;
        auto& w = writers_[lane];
        if (closed_lanes_ & (1u << lane)) [[unlikely]]  // one test: the loan's lane, or a lane not granted
            return std::unexpected(refused(std::uint32_t(lane)));
        auto c = w.try_claim(n, size_of);
        if (!c) [[unlikely]] {
            auto slow = claim_slow(w, n, size_of, c.error().code);
            if (!slow) return std::unexpected(std::move(slow.error()));
            c = *slow;
        }
        w.commit(*c, n, size_of, fill, clock_.raw());
#ifdef RVOIP_TEST_HOOKS
        if (shm::test_hooks::after_commit) shm::test_hooks::after_commit(shm::test_hooks::after_commit_ctx);
#endif
        w.notify();
        return {};
    }

    // Loans: one at a time per publisher. Returns the payload area of a claimed record.
    Result<std::byte*> loan(std::uint32_t len, Priority p) noexcept;
    Status commit_loan(std::uint32_t len, Priority p) noexcept;
    void abandon_loan() noexcept;

    const TopicInfo& info() const noexcept { return info_; }
    LaneCounters counters(Priority p) const noexcept {
        const auto& e = map_.publishers[slot_];
        const auto l = static_cast<std::size_t>(p) & 3;
        // relaxed: our own single-writer counters
        return {e.published[l].load(std::memory_order_relaxed), e.full[l].load(std::memory_order_relaxed),
                e.timeouts[l].load(std::memory_order_relaxed)};
    }
    std::uint32_t max_event(Priority p) const noexcept { return writers_[static_cast<std::size_t>(p) & 3].max_event(); }
    // publish_n over `count` records in chunks whose records fill at most a quarter of the lane, one
    // claim per chunk. size_of(i) / fill(i, dst) index the whole batch. On failure `*published` (if
    // given) tells how many went out before the error.
    template <class SizeOf, class Fill>
    Status publish_chunked(std::size_t count, SizeOf&& size_of, Fill&& fill, Priority p, std::size_t* published) noexcept {
        const std::uint64_t budget = map_.settings[static_cast<std::size_t>(p) & 3].capacity / 4;
        std::size_t done = 0;
        while (done < count) {
            std::size_t n = 1;
            for (std::uint64_t bytes = layout::record_size(size_of(done)); done + n < count; ++n) {
                bytes += layout::record_size(size_of(done + n));
                if (bytes > budget) break;
            }
            // By value: closures the compiler can keep in registers across the ring stores, which may
            // alias anything reached through a reference.
            const std::size_t first = done;
            auto st = publish_n(
                static_cast<std::uint32_t>(n), [size_of, first](std::uint32_t i) { return size_of(first + i); },
                [fill, first](std::uint32_t i, std::byte* dst) { fill(first + i, dst); }, p);
            if (!st) {
                if (published) *published = done;
                return st;
            }
            done += n;
        }
        if (published) *published = done;
        return {};
    }

private:
    PublisherCore() = default;
    template <class SizeOf>
    Result<shm::LaneWriter::Claim> claim_slow(shm::LaneWriter& w, std::uint32_t n, SizeOf& size_of, Errc first) noexcept;
    Error too_large(std::uint32_t bytes, std::uint32_t records, std::uint32_t lane) const;
    Error refused(std::uint32_t lane) const;  // why closed_lanes_ has `lane`'s bit
    static bool wait_for_room(std::int64_t deadline_ns, std::uint32_t& round) noexcept;

    std::shared_ptr<Connection> conn_;
    shm::Segment data_;
    shm::Segment cursors_;
    shm::Segment bells_segment_;  // the topic's doorbells: bell i is subscriber slot i's
    shm::TopicMap map_;
    std::array<shm::LaneWriter, layout::kLanes> writers_;
    shm::Clock clock_;
    TopicInfo info_;
    std::uint32_t slot_ = 0;
    std::uint64_t held_ = 0;  // Connection::hold handle: reclaimed after a reconnection, released at the end
    // the loan in flight
    // Bit per lane a publish must not use now: lanes the broker did not grant (Critical needs its own
    // right), and the lane of the loan in flight.
    std::uint8_t closed_lanes_ = 0;
    std::uint8_t granted_lanes_ = 0xf;
    std::uint8_t taken_lanes_ = 0;  // withheld: another publisher holds them alone
    bool loaned_ = false;
    std::uint32_t loan_lane_ = 0;
    std::uint32_t loan_len_ = 0;
    shm::LaneWriter::Claim loan_claim_{};
};

struct Record {
    const layout::RecordHeader* header = nullptr;  // nullptr: nothing ready
    std::uint32_t lane = 0;
    std::uint32_t length = 0;  // payload bytes, as validated when the record was read
    explicit operator bool() const noexcept { return header != nullptr; }
};

// What a consumer's waits learn and the next wait uses (Parking::wait, client/parking.hpp).
struct WaitState {
    std::uint32_t spin = 0;  // the next wait's spin (WaitOptions::adaptive_spin)
    bool streaming = false;  // the last wait was ended by a record: nap before parking (WaitOptions::batch_delay)
};

class SubscriberCore {
public:
    static Result<std::unique_ptr<SubscriberCore>> open(std::shared_ptr<Connection> conn, std::string_view topic,
                                                        const layout::Fingerprint& fp, const SubscriberOptions& opt);
    ~SubscriberCore();

    // The next record of the highest non-empty lane, or Record{nullptr} when every lane is empty. A
    // corrupt record is reported once (Errc::corrupt, naming the lane and ring offset); the lane then
    // resumes at its tail, and what it skipped is counted in the slot's corrupt and skipped_bytes. An
    // eviction by the broker is reported once (Errc::lagged, last_missed() events lost).
    Result<Record> try_next() noexcept { return next_of_lanes(0, layout::kLanes); }
    // Like try_next, on lane `lane` only (a WaitSet takes lane by lane across its subscriptions).
    Result<Record> try_lane(std::uint32_t lane) noexcept { return next_of_lanes(lane, lane + 1); }

    // Like try_next, but waits up to `timeout` (negative: forever) for a record: spin, then park.
    Result<Record> next_for(std::chrono::nanoseconds timeout) noexcept;

    // A consumer group's partition cursor the broker assigned to this process (GroupCore): the slot is
    // the group's, so closing this core does not give it back to the broker.
    static Result<std::unique_ptr<SubscriberCore>> attach_group(std::shared_ptr<Connection> conn, std::string topic,
                                                                const proto::GroupAssign& a, std::vector<int> fds,
                                                                const layout::Fingerprint& fp, const WaitOptions& wait);
    // Moves every lane's cursor to what was read, on lanes with no sample held (a partition handed back).
    void settle() noexcept;
    // Where `lane` is read up to: the end of the record it returned last.
    std::uint64_t read_position(std::uint32_t lane) const noexcept { return readers_[lane].position(); }

    // A sample of `lane` was released; when none is outstanding the lane's cursor may move on (in steps
    // of a sixteenth of the ring while records keep coming; fully once the lane runs empty).
    void release(std::uint32_t lane) noexcept {
        if (--outstanding_[lane] == 0) readers_[lane].release_some();
    }

    const TopicInfo& info() const noexcept { return info_; }
    const layout::Fingerprint& fingerprint() const noexcept { return fingerprint_; }  // the topic's, as joined
    std::uint32_t samples_held() const noexcept {
        std::uint32_t n = 0;
        for (auto o : outstanding_) n += o;
        return n;
    }
    const shm::Clock& clock() const noexcept { return clock_; }
    std::uint64_t last_missed() const noexcept { return last_missed_; }
    // A lagged report that a batch receive could not hand out: the next try_next reports it again.
    void report_lag_again() noexcept {
        unreported_ += last_missed_;
        seen_evictions_ = kRecheck;
    }

private:
    friend class Parking;
    SubscriberCore() = default;
    static Result<std::unique_ptr<SubscriberCore>> from(std::shared_ptr<Connection> conn, Mapped&& m, TopicInfo info, std::uint32_t slot,
                                                        const std::array<std::uint64_t, layout::kLanes>& start, const WaitOptions& wait,
                                                        bool hold);
    // The next record of the highest non-empty lane in [first, last), or Record{nullptr}. Written once
    // for try_next and try_lane, inlined into both: with constant bounds it is the loop it always was
    // (callgrind: building a Result per lane in a helper cost 22 more instructions per receive).
    [[gnu::always_inline]] Result<Record> next_of_lanes(std::uint32_t first, std::uint32_t last) noexcept {
        // acquire: pairs with the broker's closing store of evictions in shm::evict_subscriber.
        if (slot_->evictions.load(std::memory_order_acquire) != seen_evictions_) [[unlikely]] {
            if (auto st = follow_eviction(); !st) return std::unexpected(std::move(st.error()));
            if (slot_->evictions.load() != seen_evictions_) return Record{};  // one under way: nothing until it is done
        }
        for (std::uint32_t l = first; l < last; ++l) {
            auto& r = readers_[l];
            const auto p = r.peek();
            if (p.record) {
                // Re-checked after the peek (seq_cst, ordered after the header's acquire): an eviction
                // whose cursor CAS came before this load is seen here, and the record, in the range it
                // skipped, may be being overwritten: it is not handed out. One whose CAS comes later
                // lets publishers in only after this point (the Sample caveat above). Found by the
                // model (tests/model: evict_no_recheck).
                if (slot_->evictions.load() != seen_evictions_) [[unlikely]]
                    return try_next_after_eviction();
                r.consume(p);
                ++outstanding_[l];
                auto& c = slot_->received[l];
                c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // relaxed: single writer, read by the CLI
                if (p.record->timestamp_ns >= next_sample_) [[unlikely]]
                    sample_latency(p.record->timestamp_ns);
                return Record{p.record, l, p.length};
            }
            if (p.corrupt()) [[unlikely]]
                return std::unexpected(corrupt(l, p));
            if (outstanding_[l] == 0) r.release();  // publish skipped padding, so no publisher waits on it
        }
        return Record{};
    }
    // try_next once more, after an eviction that came in between its check and its peek.
    [[gnu::noinline, gnu::cold]] Result<Record> try_next_after_eviction() noexcept {
        if (auto st = follow_eviction(); !st) return std::unexpected(std::move(st.error()));
        if (slot_->evictions.load() != seen_evictions_) return Record{};  // still under way
        return try_next();
    }
    // Counts the latency of a record published at `published` (raw) in the slot's histogram and
    // schedules the next sample (shm/latency.hpp).
    [[gnu::noinline]] void sample_latency(std::int64_t published) noexcept;
    bool any_ready() const noexcept;
    Error corrupt(std::uint32_t lane, const shm::LaneReader::Peek& p) noexcept;
    [[gnu::cold, gnu::noinline]] Status follow_eviction() noexcept;

    static constexpr std::uint32_t kRecheck = 0xffffffffu;  // odd: never a finished evictions value

    std::shared_ptr<Connection> conn_;
    shm::Segment data_;
    shm::Segment cursors_;
    shm::Segment bells_segment_;  // the topic's doorbells: bell i is subscriber slot i's
    shm::TopicMap map_;
    std::array<shm::LaneReader, layout::kLanes> readers_;
    std::array<std::uint32_t, layout::kLanes> outstanding_{};
    layout::SubscriberSlot* slot_ = nullptr;
    std::atomic<std::uint32_t>* bell_ = nullptr;
    WaitOptions wait_;
    WaitState waiting_;  // what the last waits learnt (Parking::wait)
    shm::Clock clock_;
    // Latency sampling: the first record published at or after next_sample_ is sampled, and the next
    // one sample_every_ later (both raw clock units: kLatencySampleNs converted at open).
    std::int64_t next_sample_ = INT64_MIN;
    std::int64_t sample_every_ = 0;
    TopicInfo info_;
    layout::Fingerprint fingerprint_{};
    std::uint32_t slot_index_ = 0;
    std::uint64_t held_ = 0;  // Connection::hold handle
    // Evictions (follow_eviction): the slot's evictions value try_next compares with, the last one
    // taken up, the slot's `missed` then, events missed but not yet reported, and the last report.
    std::uint32_t seen_evictions_ = 0;
    std::uint32_t handled_evictions_ = 0;
    std::uint64_t missed_seen_ = 0;
    std::uint64_t unreported_ = 0;
    std::uint64_t last_missed_ = 0;
    std::uint32_t lagged_lanes_ = 0;  // bit per lane moved since the last report
};

// Several subscriptions with one waiting point (WaitSet): the next record is the highest-lane one across
// all of them (Critical-first across topics, round robin among topics within a lane), and a blocking
// wait parks once on all of their doorbells (futex_waitv), so a burst over many topics wakes the
// process once.
class WaitSetCore {
public:
    static constexpr std::size_t kMaxSubscriptions = 128;  // FUTEX_WAITV_MAX: one wait covers them all

    struct Taken : Record {
        std::size_t index = 0;            // the subscription's index in the set
        SubscriberCore* core = nullptr;
    };

    explicit WaitSetCore(const WaitOptions& w) noexcept;
    ~WaitSetCore();
    WaitSetCore(const WaitSetCore&) = delete;
    WaitSetCore& operator=(const WaitSetCore&) = delete;
    // Takes the subscription over; its index stays its own until it is removed.
    Result<std::size_t> add(std::unique_ptr<SubscriberCore> s);
    // Drops (closes) the subscription at `index`: refused when there is none, or while samples of it
    // are held (they point into it).
    Status remove(std::size_t index);
    std::size_t size() const noexcept { return live_.size(); }
    SubscriberCore* at(std::size_t index) const noexcept { return index < subs_.size() ? subs_[index].get() : nullptr; }

    // Never blocks: the next record across the set, or Taken{nullptr}. An error (lagged, corrupt) is
    // that of subscription last_error_index().
    Result<Taken> try_next() noexcept;
    // The same on one lane only (a caller merging several sets lane by lane: EventBus with groups).
    Result<Taken> try_lane(std::uint32_t lane) noexcept;
    // Waits up to `timeout` (negative: forever): spin, then park on every subscription's doorbell at once.
    Result<Taken> next_for(std::chrono::nanoseconds timeout) noexcept;

    std::size_t last_error_index() const noexcept { return last_error_; }
    std::uint64_t wakeups() const noexcept { return wakeups_; }
    // Takes the subscription at `index` out of the set and hands it over, samples held or not (a group
    // partition given back: its samples keep pointing into it until released).
    std::unique_ptr<SubscriberCore> detach(std::size_t index);

    // The pollable descriptor (made on first use; Errc::unsupported before Linux 6.7), and arming it:
    // true when armed (it turns readable when an event may be waiting), false when one may be waiting
    // already. Any receive ends an armed wait.
    Result<int> descriptor();
    Result<bool> prepare_poll();

private:
    void end_poll() noexcept;  // ends an armed wait, if any
    std::vector<std::unique_ptr<SubscriberCore>> subs_;  // by index; null where one was removed
    std::vector<std::size_t> live_;                      // indices of the non-null ones, in order
    std::size_t next_first_ = 0;  // round robin within a lane
    std::size_t last_error_ = 0;
    std::uint64_t wakeups_ = 0;
    WaitOptions wait_;
    WaitState waiting_;  // what the last waits learnt (Parking::wait)
    std::unique_ptr<Poller> poller_;
    std::vector<SubscriberCore*> polled_;  // what the armed wait parked
};

template <class SizeOf>
Result<shm::LaneWriter::Claim> PublisherCore::claim_slow(shm::LaneWriter& w, std::uint32_t n, SizeOf& size_of, Errc first) noexcept {
    const std::uint32_t lane = w.lane();
    if (first == Errc::event_too_large) {
        for (std::uint32_t i = 0; i < n; ++i)
            if (size_of(i) > w.max_event()) return std::unexpected(too_large(size_of(i), 1, lane));
        return std::unexpected(too_large(0, n, lane));
    }
    w.count_full();
    const auto& s = map_.settings[lane];
    if (s.overflow == Overflow::fail) return std::unexpected(Error(Errc::full));
    const std::int64_t deadline = shm::monotonic_ns() + std::int64_t(s.block_timeout_ms) * 1'000'000;
    std::uint32_t round = 0;
    for (;;) {
        auto c = w.try_claim(n, size_of);
        if (c) return *c;
        if (c.error().code != Errc::full) return std::unexpected(std::move(c.error()));
        if (!wait_for_room(deadline, round)) {
            w.count_timeout();
            return std::unexpected(Error(Errc::timeout));
        }
    }
}

}  // namespace detail

}  // namespace rvoip::events
