// The soak's publisher process, the helpers both soak processes share, and their dispatch. A
// soak-publisher publishes random events on one raw topic, all four lanes, keeping its progress on the
// board (soak_board.hpp); the subscriber is in soak_subscriber.cpp. See soak.hpp and bench/README.md.
#include "bench/soak_child.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace rvoip::bench::soak {

using namespace rvoip::events;

std::int64_t now_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

TopicOptions topic_options() {
    TopicOptions t;
    for (std::uint32_t l = 0; l < kLanes; ++l)
        t.capacity(Priority(l), kCapacity[l]).max_event(Priority(l), kMaxEvent).overflow(Priority(l), Overflow::block, kBlockTimeout);
    return t;
}

Expected<EventSystem> connect(const SoakRoleOptions& o) {
    auto bus = EventSystemBuilder().socket_path(o.socket).client_name("soak-" + std::to_string(o.slot)).build();
    if (!bus) return failure("cannot connect to the broker: " + bus.error().what());
    return std::move(*bus);
}

Expected<MappedBoard> MappedBoard::map(int fd) {
    struct stat st{};
    if (::fstat(fd, &st) != 0 || std::size_t(st.st_size) < kBoardBytes) return failure("the board descriptor is not a soak board");
    void* p = ::mmap(nullptr, kBoardBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return failure("cannot map the soak board");
    MappedBoard m;
    m.base_ = p;
    if (Board::view(p).header->magic != kBoardMagic) return failure("the soak board has a bad magic number");
    return m;
}

MappedBoard::~MappedBoard() {
    if (base_) ::munmap(base_, kBoardBytes);
}

namespace {

using namespace std::chrono_literals;

constexpr unsigned kMaxTimeoutsInARow = 15;  // 30 s of a full lane: a subscriber or a recovery is stuck
constexpr std::uint32_t kMaxBatch = 32;

// Critical is the rare lane: 4 % Critical, 26 % High, 40 % Normal, 30 % Low.
std::uint32_t pick_lane(SplitMix& r) {
    const auto x = r.between(0, 99);
    return x < 4 ? 0 : x < 30 ? 1 : x < 70 ? 2 : 3;
}

// 65 % from the header's 48 B to 256 B, 30 % up to 4 KiB, 5 % within 256 B of max_event.
std::uint32_t pick_size(SplitMix& r) {
    const auto x = r.between(0, 99);
    if (x < 65) return std::uint32_t(r.between(kMinEvent, 256));
    if (x < 95) return std::uint32_t(r.between(257, 4096));
    return std::uint32_t(r.between(kMaxEvent - 256, kMaxEvent));
}

// ------------------------------------------------------------------------------------------------------
// Publisher.

class SoakPublisher {
public:
    SoakPublisher(Board b, const SoakRoleOptions& o, RawPublisher pub, std::uint64_t instance)
        : b_(b), me_(b.pubs[o.slot]), pub_(std::move(pub)), rng_{o.seed ^ (0xa5a5'0000'0000ull + o.slot)}, instance_(instance),
          slot_(o.slot), kind_(o.kind), kinds_(o.kinds), hold_us_(std::max<std::uint32_t>(o.hold_us, 20)), buf_(std::size_t(kMaxBatch) * kMaxEvent) {}

    Done run() {
        while (b_.phase() < kStopping) {
            // Mostly this publisher's kind; one operation in seven of any allowed kind.
            std::uint32_t op = kind_;
            if (rng_.chance(1.0 / 7))
                for (std::uint32_t k = std::uint32_t(rng_.between(0, kKinds - 1)), i = 0; i < kKinds; ++i)
                    if (kinds_ & (1u << ((k + i) % kKinds))) {
                        op = (k + i) % kKinds;
                        break;
                    }
            auto st = op == kPublish || op == kBatch ? publish_op(op) : loan_op(op == kRawLoan);
            if (!st) return st;
        }
        return {};
    }

    std::string result() const {
        char line[512];
        std::snprintf(line, sizeof line,
                      "result instance=%" PRIu64 " slot=%u kind=%u critical=%" PRIu64 " high=%" PRIu64 " normal=%" PRIu64 " low=%" PRIu64
                      " ops=%" PRIu64 " timeouts=%" PRIu64 " holds=%" PRIu64 " abandoned=%" PRIu64 " moved=%" PRIu64,
                      instance_, slot_, kind_, seq_[0], seq_[1], seq_[2], seq_[3], ops_, timeouts_, holds_, abandoned_, moved_);
        return line;
    }

private:
    // publish() one event, or publish_batch() of 1 to 32, on one lane; a timeout retries what is left.
    Done publish_op(std::uint32_t op) {
        const std::uint32_t lane = pick_lane(rng_);
        const std::uint32_t n = op == kPublish ? 1 : std::uint32_t(rng_.between(1, kMaxBatch));
        const std::uint64_t first = seq_[lane] + 1, last = first + n - 1;
        spans_.clear();
        std::size_t off = 0;
        const std::int64_t t = now_ns();
        for (std::uint32_t i = 0; i < n; ++i) {
            const std::uint32_t len = pick_size(rng_);
            fill_event(buf_.data() + off, len, head(first + i, lane, op, t));
            spans_.emplace_back(buf_.data() + off, len);
            off += len;
        }
        begin(lane, last, lane == 0);
        for (std::size_t done = 0; done < n;) {
            std::size_t k = 0;
            auto st = op == kPublish ? pub_.publish(spans_[0], Priority(lane))
                                     : pub_.publish_batch(std::span(spans_).subspan(done), Priority(lane), &k);
            if (st) break;
            if (k) me_.published[lane].store(first + done + k - 1), seq_[lane] = first + done + k - 1;
            done += k;
            if (auto r = retry_or_fail(st.error(), "publish"); !r) return r;
        }
        end(lane, last, lane == 0 ? n : 0);
        return {};
    }

    // loan + commit. Typed-like (raw == false): a loan of exactly the event's size, one in ten committed
    // to another lane (the library copies it there and pads the loan). Raw: a loan of up to max_event,
    // committing a shorter prefix (often much shorter). Now and then the loan is held open a while (so
    // kills land between claim and commit) or dropped uncommitted (padding; the event is then loaned again).
    Done loan_op(bool raw) {
        const std::uint32_t lane = pick_lane(rng_);
        std::uint32_t target = lane;
        if (!raw && rng_.chance(0.1)) target = std::uint32_t(lane + rng_.between(1, kLanes - 1)) % kLanes;
        const std::uint32_t len = pick_size(rng_);
        const std::uint32_t max = raw ? std::uint32_t(rng_.chance(0.5) ? kMaxEvent : rng_.between(len, kMaxEvent)) : len;
        const std::uint64_t seq = seq_[target] + 1;
        const std::uint8_t op = target != lane ? kLoanMoved : raw ? kRawLoan : kLoan;
        begin(target, seq, lane == 0 || target == 0);
        for (;;) {
            me_.in_loan.store(lane + 1);
            auto loan = pub_.loan(max, Priority(lane));
            if (!loan) {
                me_.in_loan.store(0);
                if (auto r = retry_or_fail(loan.error(), "loan"); !r) return r;
                continue;
            }
            fill_event(loan->bytes().data(), len, head(seq, target, op, now_ns()));
            if (rng_.chance(0.002)) {
                ++holds_;
                std::this_thread::sleep_for(std::chrono::microseconds(rng_.between(20, hold_us_)));
            }
            if (rng_.chance(0.01)) {
                { auto dropped = std::move(*loan); }  // its destructor turns the claim into padding
                me_.in_loan.store(0);
                ++abandoned_;
                continue;
            }
            auto st = std::move(*loan).commit(len, Priority(target));
            me_.in_loan.store(0);
            if (st) break;
            if (auto r = retry_or_fail(st.error(), "commit"); !r) return r;
        }
        moved_ += target != lane;
        end(target, seq, target == 0 ? 1 : 0);
        return {};
    }

    EventHead head(std::uint64_t seq, std::uint32_t lane, std::uint32_t op, std::int64_t t) const {
        return EventHead{.instance = instance_, .seq = seq, .intent_ns = t, .slot = slot_, .length = 0, .lane = std::uint8_t(lane),
                         .op = std::uint8_t(op), .zero16 = 0, .zero32 = 0, .checksum = 0};
    }

    // Before the claim: the operation's last sequence as intent, and crit_open if it may touch Critical.
    void begin(std::uint32_t lane, std::uint64_t last, bool critical) {
        me_.op_lane.store(lane + 1);
        if (critical) me_.crit_open.store(1);
        me_.intent[lane].store(last);
    }
    // After success: published-through, then (Critical) the board's counter that makes subscribers rescan.
    void end(std::uint32_t lane, std::uint64_t last, std::uint64_t criticals) {
        me_.published[lane].store(last);
        seq_[lane] = last;
        me_.crit_open.store(0);
        me_.op_lane.store(0);
        if (criticals) b_.header->crit_done.fetch_add(criticals);
        ++ops_;
        in_a_row_ = 0;
    }

    Done retry_or_fail(const Error& e, const char* what) {
        if (e.code != Errc::timeout) return failure(std::string(what) + ": " + e.what());
        ++timeouts_;
        me_.timeouts.store(timeouts_);
        if (++in_a_row_ == kMaxTimeoutsInARow)
            return failure(std::string(what) + " in the " + lane_name(me_.in_loan.load() ? me_.in_loan.load() - 1 : me_.op_lane.load() - 1) +
                           " lane timed out " + std::to_string(kMaxTimeoutsInARow) + " times in a row (" +
                           std::to_string(kMaxTimeoutsInARow * kBlockTimeout.count() / 1000) +
                           " s of a full lane): a subscriber or a dead publisher's claim holds the lane");
        return {};
    }

    Board b_;
    PubSlot& me_;
    RawPublisher pub_;
    SplitMix rng_;
    std::uint64_t instance_;
    std::uint32_t slot_, kind_, kinds_, hold_us_;
    std::vector<std::byte> buf_;
    std::vector<std::span<const std::byte>> spans_;
    std::array<std::uint64_t, kLanes> seq_{};  // published through, per lane
    std::uint64_t ops_ = 0, timeouts_ = 0, holds_ = 0, abandoned_ = 0, moved_ = 0;
    unsigned in_a_row_ = 0;
};

int run_publisher(const SoakRoleOptions& o) {
    auto mapped = MappedBoard::map(o.board_fd);
    if (!mapped) return report_error(mapped.error());
    const Board b = mapped->board();
    if (o.slot >= kMaxPubSlots) return report_error("publisher slot out of range");
    PubSlot& me = b.pubs[o.slot];
    // Unique per incarnation and repeatable from the seed; 63 bits, so result lines parse as int64.
    const std::uint64_t instance = (SplitMix{o.seed ^ (0x5eed'0000'0000ull + o.slot)}.next() >> 1) | 1;
    me.instance.store(instance);
    me.pid.store(::getpid());
    auto bus = connect(o);
    if (!bus) return report_error(bus.error());
    auto pub = bus->raw_publisher(o.topic, PublisherOptions{topic_options()});
    if (!pub) return report_error("cannot publish on '" + o.topic + "': " + pub.error().what());
    SoakPublisher p(b, o, std::move(*pub), instance);
    me.state.store(kReady);
    say("ready");
    if (auto st = p.run(); !st) return report_error(st.error());
    me.state.store(kStopped);
    say(p.result());
    return 0;
}

}  // namespace
}  // namespace rvoip::bench::soak

namespace rvoip::bench {

int run_soak_role(const SoakRoleOptions& o) {
    using namespace soak;
    g_child_label = o.role + " " + std::to_string(o.slot);
    if (o.role == "soak-publisher") return run_publisher(o);
    if (o.role == "soak-subscriber") return run_subscriber(o);
    return report_error("unknown soak role '" + o.role + "'");
}

}  // namespace rvoip::bench
