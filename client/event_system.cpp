#include "rvoip/events.hpp"

#include "client/connection.hpp"
#include "client/parking.hpp"
#include "proto/channel.hpp"
#include "shm/latency.hpp"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace rvoip::events {

layout::Fingerprint raw_fingerprint(std::string_view schema, std::uint32_t version) noexcept {
    layout::Fingerprint f;
    auto name = schema.substr(0, layout::kTypeNameMax);
    std::memcpy(f.type_name, name.data(), name.size());
    f.size = 0;
    f.align = 1;
    f.schema_version = version;
    f.kind = layout::Kind::raw;
    return f;
}

namespace detail {

// The three descriptors of a topic (data, cursors, doorbells) mapped with the access of a publisher or
// a subscriber, and checked to agree with each other. map_fd closes each descriptor once mapped: a
// process holds no descriptor per topic (1,000 topics would need 3,000), and nothing needs them later:
// a reconnection reclaims the slot by pid and ring key.
Result<Mapped> map_topic(const std::string& name, std::vector<int> fds, bool pub) {
    if (fds.size() != 3) {
        proto::close_fds(fds);
        return fail(Errc::malformed, "broker sent " + std::to_string(fds.size()) + " descriptors, expected 3");
    }
    auto data = shm::Segment::map_fd(fds[0], pub ? shm::Access::read_write : shm::Access::read_only, "topic '" + name + "' data");
    auto cursors = shm::Segment::map_fd(fds[1], pub ? shm::Access::read_only : shm::Access::read_write, "topic '" + name + "' cursors");
    auto bells = shm::Segment::map_fd(fds[2], shm::Access::read_write, "topic '" + name + "' doorbells");
    if (!data) return std::unexpected(data.error());
    if (!cursors) return std::unexpected(cursors.error());
    if (!bells) return std::unexpected(bells.error());
    auto map = shm::attach(data->bytes(), cursors->bytes());
    if (!map) return std::unexpected(map.error().context("topic '" + name + "'"));
    auto bell_map = shm::attach_doorbells(bells->bytes());
    if (!bell_map) return std::unexpected(bell_map.error().context("topic '" + name + "' doorbells"));
    if (bell_map->count < map->max_subscribers)
        return fail(Errc::corrupt, "topic '" + name + "': " + std::to_string(bell_map->count) + " doorbells for " +
                                       std::to_string(map->max_subscribers) + " subscriber slots");
    Mapped m;
    m.data = std::move(*data);
    m.cursors = std::move(*cursors);
    m.bells = std::move(*bells);
    m.map = *map;
    m.bell_map = *bell_map;
    return m;
}

namespace {

struct Opened : Mapped {
    TopicInfo info;
    std::uint32_t slot = 0;
    proto::Body reply;
};

// open_topic, then add_publisher or add_subscriber; maps the descriptors and checks that the segments
// agree with what the broker said.
Result<Opened> open_topic(Connection& conn, std::string_view topic, const layout::Fingerprint& fp, const TopicOptions& opt,
                          proto::Role role, std::uint32_t doorbell = layout::kNoDoorbell, std::uint8_t exclusive = 0) {
    if (auto ok = proto::validate_topic_name(topic); !ok) return std::unexpected(ok.error());
    proto::OpenTopic req;
    req.topic = std::string(topic);
    req.fingerprint = fp;
    req.lanes = opt.lanes;
    auto t = conn.call(req);
    if (!t) return std::unexpected(t.error());
    auto* tok = std::get_if<proto::TopicOk>(&t->body);
    if (!tok) return fail(Errc::malformed, "broker answered open_topic with an unexpected reply");
    Opened o;
    o.info = TopicInfo{std::string(topic), tok->topic_id, tok->lanes};
    const bool pub = role == proto::Role::publisher;
    auto r = pub ? conn.call(proto::AddPublisher{tok->topic_id, exclusive}) : conn.call(proto::AddSubscriber{tok->topic_id, doorbell, proto::StartAt::tail});
    if (!r) return std::unexpected(r.error().context("topic '" + o.info.name + "'"));
    // Until the slot is ours for good, any failure below hands it back to the broker.
    struct GiveBack {
        Connection& conn;
        std::optional<proto::Body> remove;
        ~GiveBack() {
            if (remove) (void)conn.call(std::move(*remove));
        }
    } give_back{conn, {}};
    if (auto* p = std::get_if<proto::PublisherOk>(&r->body)) give_back.remove = proto::RemovePublisher{tok->topic_id, p->slot};
    if (auto* q = std::get_if<proto::SubscriberOk>(&r->body)) give_back.remove = proto::RemoveSubscriber{tok->topic_id, q->slot};
    auto mapped = map_topic(o.info.name, std::exchange(r->fds, {}), pub);
    if (!mapped) return std::unexpected(mapped.error());
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        if (mapped->map.settings[l].capacity != tok->lanes[l].capacity || mapped->map.settings[l].max_event != tok->lanes[l].max_event)
            return fail(Errc::corrupt, "topic '" + o.info.name + "': segment settings disagree with the broker's reply");
    if (!(mapped->map.header->fingerprint == fp)) return fail(Errc::corrupt, "topic '" + o.info.name + "': segment fingerprint disagrees");
    static_cast<Mapped&>(o) = std::move(*mapped);
    o.reply = std::move(r->body);
    give_back.remove.reset();
    return o;
}

}  // namespace

// ------------------------------------------------------------------------------------------------------
// PublisherCore

Result<std::unique_ptr<PublisherCore>> PublisherCore::open(std::shared_ptr<Connection> conn, std::string_view topic,
                                                           const layout::Fingerprint& fp, const PublisherOptions& opt) {
    if (opt.exclusive_lanes > 0xf)
        return fail(Errc::invalid_argument, "exclusive_lanes " + std::to_string(opt.exclusive_lanes) + " has bits beyond the four lanes");
    auto o = open_topic(*conn, topic, fp, opt.topic, proto::Role::publisher, layout::kNoDoorbell, opt.exclusive_lanes);
    if (!o) return std::unexpected(o.error());
    auto* ok = std::get_if<proto::PublisherOk>(&o->reply);
    if (!ok || ok->slot >= o->map.max_publishers) return fail(Errc::malformed, "broker answered add_publisher with an unexpected reply");
    auto p = std::unique_ptr<PublisherCore>(new PublisherCore());
    p->conn_ = std::move(conn);
    p->data_ = std::move(o->data);
    p->cursors_ = std::move(o->cursors);
    p->bells_segment_ = std::move(o->bells);
    p->map_ = o->map;
    p->info_ = std::move(o->info);
    p->slot_ = ok->slot;
    p->granted_lanes_ = ok->lanes & 0xf;
    p->taken_lanes_ = ok->taken & 0xf;
    p->closed_lanes_ = std::uint8_t(~p->granted_lanes_ & 0xf);
    p->held_ = p->conn_->hold({proto::Role::publisher, p->info_.name, p->map_.record_key, p->info_.id, ok->slot, layout::kNoDoorbell});
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        p->writers_[l] = shm::LaneWriter(p->map_, o->bell_map, l, static_cast<std::uint16_t>(ok->slot), (opt.exclusive_lanes >> l) & 1);
    p->clock_ = p->conn_->doorbells().clock;
    return p;
}

PublisherCore::~PublisherCore() {
    if (loaned_) abandon_loan();
    if (conn_) conn_->release(held_);
}

Error PublisherCore::too_large(std::uint32_t bytes, std::uint32_t records, std::uint32_t lane) const {
    const auto& s = map_.settings[lane];
    const std::string where = "topic '" + info_.name + "' " + std::string(to_string(Priority(lane))) + " lane";
    if (records == 1)
        return Error(Errc::event_too_large, "event of " + std::to_string(bytes) + " bytes exceeds the " + where +
                                                "'s max event of " + std::to_string(s.max_event) + " bytes");
    return Error(Errc::event_too_large, "batch of " + std::to_string(records) + " records does not fit the " + where +
                                            "'s ring of " + std::to_string(s.capacity) + " bytes: publish it in parts");
}

Error PublisherCore::refused(std::uint32_t lane) const {
    const std::string where = "topic '" + info_.name + "' " + std::string(to_string(Priority(lane))) + " lane";
    if (taken_lanes_ & (1u << lane))
        return Error(Errc::lane_taken, where + ": another publisher held it alone when this one was opened (reopen once it is gone)");
    if (!(granted_lanes_ & (1u << lane)))
        return Error(Errc::permission_denied, where + ": this process may not publish on it (the broker's access rules)");
    return Error(Errc::loan_outstanding, where + ": a loan is open on this lane; commit or drop it before publishing here");
}

// Phased back-off while a lane is full: spin, then yield, then sleep in growing steps up to 1 ms. The
// subscriber does not ring publishers when it frees room (that would put a syscall on every read).
bool PublisherCore::wait_for_room(std::int64_t deadline_ns, std::uint32_t& round) noexcept {
    const std::int64_t now = shm::monotonic_ns();
    if (now >= deadline_ns) return false;
    ++round;
    if (round < 64) {
        __builtin_ia32_pause();
    } else if (round < 128) {
        std::this_thread::yield();
    } else {
        const std::int64_t step = std::min<std::int64_t>(1'000'000, 10'000LL << std::min<std::uint32_t>(round - 128, 7));
        std::this_thread::sleep_for(std::chrono::nanoseconds(std::min(step, deadline_ns - now)));
    }
    return true;
}

Result<std::byte*> PublisherCore::loan(std::uint32_t len, Priority p) noexcept {
    if (loaned_) return std::unexpected(Error(Errc::loan_outstanding, "topic '" + info_.name + "': commit or drop the loan in flight first"));
    if (!(granted_lanes_ & (1u << (static_cast<std::uint32_t>(p) & 3)))) return std::unexpected(refused(static_cast<std::uint32_t>(p) & 3));
    auto& w = writers_[static_cast<std::size_t>(p) & 3];
    auto size_of = [len](std::uint32_t) { return len; };
    auto c = w.try_claim(1, size_of);
    if (!c) {
        auto slow = claim_slow(w, 1, size_of, c.error().code);
        if (!slow) return std::unexpected(std::move(slow.error()));
        c = *slow;
    }
    loaned_ = true;
    loan_lane_ = w.lane();
    closed_lanes_ |= std::uint8_t(1u << loan_lane_);
    loan_len_ = len;
    loan_claim_ = *c;
    return w.payload_at(c->position, len);
}

Status PublisherCore::commit_loan(std::uint32_t len, Priority p) noexcept {
    if (!loaned_) return std::unexpected(Error(Errc::closed, "no loan in flight"));
    if (len > loan_len_) return std::unexpected(Error(Errc::event_too_large, "commit of " + std::to_string(len) +
                                                                                 " bytes exceeds the loan of " + std::to_string(loan_len_)));
    auto& w = writers_[loan_lane_];
    loaned_ = false;
    closed_lanes_ = std::uint8_t(~granted_lanes_ & 0xf);
    if ((static_cast<std::uint32_t>(p) & 3) == loan_lane_) {
        w.commit_in_place(loan_claim_, loan_len_, len, clock_.raw());
        w.notify();
        return {};
    }
    // Another lane: copy the built event there, then turn the loaned claim into padding.
    const std::byte* src = w.payload_at(loan_claim_.position, loan_len_);
    auto st = publish_n(
        1, [len](std::uint32_t) { return len; }, [&](std::uint32_t, std::byte* dst) { std::memcpy(dst, src, len); }, p);
    w.abandon(loan_claim_);
    w.notify();
    return st;
}

void PublisherCore::abandon_loan() noexcept {
    if (!loaned_) return;
    loaned_ = false;
    closed_lanes_ = std::uint8_t(~granted_lanes_ & 0xf);
    writers_[loan_lane_].abandon(loan_claim_);
    writers_[loan_lane_].notify();
}

// ------------------------------------------------------------------------------------------------------
// SubscriberCore

Result<std::unique_ptr<SubscriberCore>> SubscriberCore::open(std::shared_ptr<Connection> conn, std::string_view topic,
                                                             const layout::Fingerprint& fp, const SubscriberOptions& opt) {
    auto o = open_topic(*conn, topic, fp, opt.topic, proto::Role::subscriber);
    if (!o) return std::unexpected(o.error());
    auto* ok = std::get_if<proto::SubscriberOk>(&o->reply);
    if (!ok || ok->slot >= o->map.max_subscribers || ok->doorbell != ok->slot)
        return fail(Errc::malformed, "broker answered add_subscriber with an unexpected reply");
    return from(std::move(conn), std::move(*o), std::move(o->info), ok->slot, ok->start, opt.wait, true);
}

Result<std::unique_ptr<SubscriberCore>> SubscriberCore::attach_group(std::shared_ptr<Connection> conn, std::string topic,
                                                                     const proto::GroupAssign& a, std::vector<int> fds,
                                                                     const layout::Fingerprint& fp, const WaitOptions& wait) {
    auto m = map_topic(topic, std::move(fds), false);
    if (!m) return std::unexpected(m.error());
    if (a.slot >= m->map.max_subscribers) return fail(Errc::malformed, "broker assigned subscriber slot " + std::to_string(a.slot) + " of '" + topic + "'");
    if (!(m->map.header->fingerprint == fp)) return fail(Errc::schema_mismatch, "partition topic '" + topic + "': segment fingerprint disagrees");
    TopicInfo info{std::move(topic), a.topic_id, {}};
    for (std::size_t l = 0; l < layout::kLanes; ++l) info.lanes[l] = m->map.settings[l];
    return from(std::move(conn), std::move(*m), std::move(info), a.slot, a.start, wait, false);
}

Result<std::unique_ptr<SubscriberCore>> SubscriberCore::from(std::shared_ptr<Connection> conn, Mapped&& o, TopicInfo info,
                                                             std::uint32_t slot, const std::array<std::uint64_t, layout::kLanes>& start,
                                                             const WaitOptions& wait, bool hold) {
    auto s = std::unique_ptr<SubscriberCore>(new SubscriberCore());
    s->conn_ = std::move(conn);
    s->data_ = std::move(o.data);
    s->cursors_ = std::move(o.cursors);
    s->bells_segment_ = std::move(o.bells);
    s->map_ = o.map;
    s->info_ = std::move(info);
    s->slot_index_ = slot;
    s->slot_ = &s->map_.slots[slot];
    if (hold) s->held_ = s->conn_->hold({proto::Role::subscriber, s->info_.name, s->map_.record_key, s->info_.id, slot, slot});
    s->bell_ = &o.bell_map.bells[slot].word;  // bell i of the topic's doorbells is slot i's
    s->wait_ = wait;
    s->waiting_.spin = wait.spin;
    s->clock_ = s->conn_->doorbells().clock;
    s->sample_every_ = s->clock_.raw_units(shm::kLatencySampleNs);
    s->fingerprint_ = s->map_.header->fingerprint;
    const auto& fp_in_force = s->fingerprint_;
    const std::uint32_t exact = fp_in_force.kind == layout::Kind::typed ? fp_in_force.size : 0;
    for (std::size_t l = 0; l < layout::kLanes; ++l) {
        if (start[l] % layout::kLine != 0) return fail(Errc::malformed, "broker gave a start position that is not 64-byte aligned");
        s->readers_[l] = shm::LaneReader(s->map_, l, slot, start[l], exact);
    }
    // Zeroed by the broker at join; read anyway (acquire: pairs with evict_subscriber's closing store).
    s->seen_evictions_ = s->handled_evictions_ = s->slot_->evictions.load(std::memory_order_acquire) & ~1u;
    s->missed_seen_ = s->slot_->missed.load();
    return s;
}

void SubscriberCore::settle() noexcept {
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        if (outstanding_[l] == 0) readers_[l].release();
}

void SubscriberCore::sample_latency(std::int64_t published) noexcept {
    const std::int64_t now = clock_.raw();
    // From the earlier of the two: a timestamp from the future (a peer's clock, or garbage) must not
    // stop the sampling until that future comes.
    const std::int64_t from = published < now ? published : now;
    next_sample_ = from > INT64_MAX - sample_every_ ? INT64_MAX : from + sample_every_;
    auto& c = slot_->latency[shm::latency_bucket(clock_.span_ns(published, now))];
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // relaxed: single writer, read by reports
}

SubscriberCore::~SubscriberCore() {
    if (conn_ && held_) conn_->release(held_);
}

Error SubscriberCore::corrupt(std::uint32_t lane, const shm::LaneReader::Peek& p) noexcept {
    auto& r = readers_[lane];
    std::string what;
    try {
        what = "topic '" + info_.name + "' " + std::string(to_string(Priority(lane))) + " lane: " + r.describe(p);
    } catch (...) {  // no memory for the message: the code says enough
    }
    const std::uint64_t skipped = r.resync();
    if (outstanding_[lane] == 0) r.release();
    // relaxed: single-writer counters, read by the CLI
    slot_->corrupt.store(slot_->corrupt.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    slot_->skipped_bytes.store(slot_->skipped_bytes.load(std::memory_order_relaxed) + skipped, std::memory_order_relaxed);
    try {
        what += "; resumed at the lane's tail, " + std::to_string(skipped) + " ring bytes skipped";
    } catch (...) {
    }
    return Error(Errc::corrupt, std::move(what));
}

// The broker evicted us (shm::evict_subscriber) or is doing so. Reads the slot's missed count and cursors
// between two equal, even evictions values (a seqlock: the broker makes it odd while it writes them; all
// loads seq_cst), takes up every lane whose cursor the broker moved, and reports what was missed once.
// An odd or changing value means the broker is in the middle of an eviction: seen_evictions_ is left
// stale so that the next try_next looks again, and this one reads on as usual meanwhile.
Status SubscriberCore::follow_eviction() noexcept {
    const std::uint32_t e = slot_->evictions.load();
    if (e != handled_evictions_) {
        if (e & 1) return {};
        const std::uint64_t missed = slot_->missed.load();
        std::array<std::uint64_t, layout::kLanes> cursor{};
        for (std::size_t l = 0; l < layout::kLanes; ++l) cursor[l] = slot_->position[l].load();
        if (slot_->evictions.load() != e) return {};
        // The broker counted every data record between our stored cursor and the new one, also those we
        // had delivered already: they are not missed.
        std::uint64_t delivered = 0;
        for (std::size_t l = 0; l < layout::kLanes; ++l) {
            if (cursor[l] == readers_[l].stored()) continue;
            delivered += readers_[l].follow_eviction(cursor[l]);
            lagged_lanes_ |= 1u << l;
        }
        const std::uint64_t counted = missed - missed_seen_;
        const std::uint64_t lost = counted > delivered ? counted - delivered : 0;
        unreported_ += lost;
        // relaxed: single-writer counter, read by the CLI
        slot_->lagged.store(slot_->lagged.load(std::memory_order_relaxed) + lost, std::memory_order_relaxed);
        missed_seen_ = missed;
        handled_evictions_ = e;
    }
    seen_evictions_ = handled_evictions_;
    if (unreported_ == 0) {
        lagged_lanes_ = 0;
        return {};
    }
    last_missed_ = std::exchange(unreported_, 0);
    std::string what;
    try {
        what = "topic '" + info_.name + "':";
        for (std::uint32_t l = 0; l < layout::kLanes; ++l)
            if (lagged_lanes_ & (1u << l)) what += " " + std::string(to_string(Priority(l)));
        what += " lane(s): evicted by the broker for holding publishers back; " + std::to_string(last_missed_) +
                " event(s) missed; resumed where the broker moved the cursor";
    } catch (...) {  // no memory for the message: last_missed() still tells the count
    }
    lagged_lanes_ = 0;
    return std::unexpected(Error(Errc::lagged, std::move(what)));
}

bool SubscriberCore::any_ready() const noexcept {
    for (auto& r : readers_)
        if (r.ready()) return true;
    return false;
}

Result<Record> SubscriberCore::next_for(std::chrono::nanoseconds timeout) noexcept {
    SubscriberCore* self = this;
    std::uint64_t wakeups = 0;
    return Parking::wait<Record>(std::span<SubscriberCore* const>(&self, 1), wait_, waiting_, timeout, wakeups, [this] { return try_next(); });
}

}  // namespace detail

// ------------------------------------------------------------------------------------------------------
// Raw fronts, EventSystem, builder.

Status RawLoan::commit(std::size_t n) && noexcept { return std::move(*this).commit(n, priority_); }

Status RawLoan::commit(std::size_t n, Priority p) && noexcept {
    auto* c = std::exchange(core_, nullptr);
    if (!c) return std::unexpected(Error(Errc::closed, "loan already committed"));
    if (n > bytes_.size()) {
        c->abandon_loan();
        return std::unexpected(Error(Errc::event_too_large, "commit of " + std::to_string(n) + " bytes exceeds the loan of " +
                                                                std::to_string(bytes_.size())));
    }
    return c->commit_loan(static_cast<std::uint32_t>(n), p);
}

Result<RawLoan> RawPublisher::loan(std::size_t max_size, Priority p) noexcept {
    if (max_size > core_->max_event(p))
        return std::unexpected(Error(Errc::event_too_large, "loan of " + std::to_string(max_size) + " bytes exceeds topic '" +
                                                                core_->info().name + "' max event of " +
                                                                std::to_string(core_->max_event(p))));
    auto mem = core_->loan(static_cast<std::uint32_t>(max_size), p);
    if (!mem) return std::unexpected(std::move(mem.error()));
    return RawLoan(core_.get(), std::span<std::byte>(*mem, max_size), p);
}

Result<RawPublisher> EventSystem::raw_publisher(std::string_view topic, const PublisherOptions& opt, const layout::Fingerprint& fp) {
    return front<RawPublisher>(detail::PublisherCore::open(conn_, topic, fp, opt));
}

Result<RawSubscriber> EventSystem::raw_subscriber(std::string_view topic, const SubscriberOptions& opt, const layout::Fingerprint& fp) {
    return front<RawSubscriber>(detail::SubscriberCore::open(conn_, topic, fp, opt));
}

Result<proto::StatsReply> EventSystem::stats() {
    auto r = conn_->call(proto::Stats{});
    if (!r) return std::unexpected(r.error());
    auto* s = std::get_if<proto::StatsReply>(&r->body);
    if (!s) return fail(Errc::malformed, "broker answered stats with an unexpected reply");
    return std::move(*s);
}

Result<std::string> EventSystem::inspect(proto::InspectWhat what, std::string_view topic) {
    std::string doc;
    for (;;) {
        auto r = conn_->call(proto::Inspect{what, std::string(topic), std::uint32_t(doc.size())});
        if (!r) return std::unexpected(r.error());
        auto* part = std::get_if<proto::InspectReply>(&r->body);
        if (!part) return fail(Errc::malformed, "broker answered inspect with an unexpected reply");
        // The broker renders anew at offset 0 only: a chunk of another rendering (a reconnect in between
        // landed on a new broker) would not fit this one.
        if (part->offset != doc.size() || (doc.empty() ? false : part->total < doc.size()))
            return fail(Errc::malformed, "inspect: chunk at " + std::to_string(part->offset) + " does not follow " +
                                             std::to_string(doc.size()) + " bytes received");
        doc += part->chunk;
        if (doc.size() >= part->total) return doc;
        if (part->chunk.empty()) return fail(Errc::malformed, "inspect: empty chunk before the report's end");
    }
}

const std::string& EventSystem::socket_path() const noexcept { return conn_->path(); }
bool EventSystem::broker_stopping() const noexcept { return conn_->stopping(); }
ConnectionState EventSystem::connection() const { return conn_->state(); }
std::int64_t EventSystem::now_ns() const noexcept { return conn_->doorbells().clock.now_ns(); }

Result<EventSystem> EventSystemBuilder::build() const {
    if (name_.empty() || name_.size() > proto::kClientNameMax)
        return fail(Errc::invalid_argument, "client name '" + name_ + "' must be 1-31 printable characters");
    auto c = embedded_ ? detail::Connection::open_embedded(name_, timeout_)
                       : detail::Connection::open(socket_.empty() ? proto::default_socket_path() : socket_, name_, timeout_);
    if (!c) return std::unexpected(c.error());
    return EventSystem(std::move(*c));
}

}  // namespace rvoip::events
