// A consumer group member (rvoip/detail/group_core.hpp): joining, the broker's assignments and
// revocations, and receiving across the partitions it holds.
#include "rvoip/detail/group_core.hpp"

#include "client/connection.hpp"

#include <algorithm>

namespace rvoip::events::detail {

namespace {
Status check_partitioned(std::string_view topic, std::uint32_t partitions) {
    if (auto ok = proto::validate_topic_name(topic); !ok) return ok;
    if (partitions == 0 || partitions > proto::kMaxPartitions)
        return fail(Errc::invalid_argument, "topic '" + std::string(topic) + "': " + std::to_string(partitions) + " partitions (1-" +
                                                std::to_string(proto::kMaxPartitions) + ")");
    if (auto ok = proto::validate_topic_name(proto::partition_topic(topic, partitions - 1)); !ok)
        return std::unexpected(ok.error().context("topic '" + std::string(topic) + "' cannot be partitioned"));
    return {};
}
}  // namespace

Status declare_partitions(Connection& conn, std::string_view topic, std::uint32_t partitions) {
    if (auto ok = check_partitioned(topic, partitions); !ok) return ok;
    auto r = conn.call(proto::JoinGroup{std::string(topic), "", partitions});
    if (!r) return std::unexpected(r.error());
    if (!std::holds_alternative<proto::GroupOk>(r->body)) return fail(Errc::malformed, "broker answered join_group with an unexpected reply");
    return {};
}

Result<std::unique_ptr<GroupCore>> GroupCore::join(std::shared_ptr<Connection> conn, std::string_view topic, std::string_view group,
                                                   const layout::Fingerprint& fp, std::uint32_t partitions,
                                                   const TopicOptions& topic_opt, const WaitOptions& wait) {
    if (auto ok = check_partitioned(topic, partitions); !ok) return std::unexpected(ok.error());
    if (auto ok = proto::validate_group_name(group); !ok) return std::unexpected(ok.error());
    for (std::uint32_t p = 0; p < partitions; ++p) {  // exist, with our schema: the broker checks both
        proto::OpenTopic o;
        o.topic = proto::partition_topic(topic, p);
        o.fingerprint = fp;
        o.lanes = topic_opt.lanes;
        auto r = conn->call(o);
        if (!r) return std::unexpected(r.error());
    }
    auto r = conn->call(proto::JoinGroup{std::string(topic), std::string(group), partitions});
    if (!r) return std::unexpected(r.error());
    auto* ok = std::get_if<proto::GroupOk>(&r->body);
    if (!ok || ok->member == 0 || ok->partitions != partitions)
        return fail(Errc::malformed, "broker answered join_group with an unexpected reply");
    auto g = std::unique_ptr<GroupCore>(new GroupCore());
    g->conn_ = std::move(conn);
    g->topic_ = std::string(topic);
    g->group_ = std::string(group);
    g->fp_ = fp;
    g->wait_ = wait;
    g->member_ = ok->member;
    g->partitions_ = partitions;
    g->set_ = std::make_unique<WaitSetCore>(wait);
    g->index_of_.assign(partitions, kNone);
    g->redeliver_.assign(partitions, {});
    g->inbox_ = std::make_shared<GroupInbox>();
    g->conn_->attach_group(g->member_, g->inbox_);  // with what came before this line
    g->drops_at_join_ = g->conn_->drops();
    return g;
}

GroupCore::~GroupCore() {
    notify(-1);  // the owner of the eventfd may close it once we are gone
    if (ended_ || conn_->drops() != drops_at_join_) {  // nothing of ours left at the broker
        conn_->detach_group(member_);
        return;
    }
    for (std::uint32_t p = 0; p < partitions_; ++p)
        if (index_of_[p] != kNone) revoked_.push_back({p, set_->detach(index_of_[p])});
    for (auto& r : revoked_) r.core->settle();  // the samples were released: a Sample must not outlive its subscriber
    revoked_.clear();
    (void)conn_->call(proto::LeaveGroup{member_});  // the broker takes our partitions, settled, from our session
    conn_->detach_group(member_);
}

std::vector<std::uint32_t> GroupCore::assigned() const {
    std::vector<std::uint32_t> v;
    for (std::uint32_t p = 0; p < partitions_; ++p)
        if (index_of_[p] != kNone) v.push_back(p);
    return v;
}

Status GroupCore::apply_mail() {
    std::vector<std::pair<proto::Body, std::vector<int>>> mail;
    {
        std::lock_guard lock(inbox_->mu);
        mail.swap(inbox_->mail);
        inbox_->pending.store(false, std::memory_order_relaxed);  // relaxed: under mu, which post's store also holds
    }
    Status result;
    for (auto& [body, fds] : mail) {
        if (auto* a = std::get_if<proto::GroupAssign>(&body)) {
            if (a->partition >= partitions_ || index_of_[a->partition] != kNone) {
                proto::close_fds(fds);
                result = fail(Errc::malformed, "group '" + group_ + "': broker assigned partition " + std::to_string(a->partition) + " twice");
                continue;
            }
            auto core = SubscriberCore::attach_group(conn_, proto::partition_topic(topic_, a->partition), *a, std::move(fds), fp_, wait_);
            if (!core) {
                result = std::unexpected(core.error().context("group '" + group_ + "' partition " + std::to_string(a->partition)));
                continue;
            }
            auto index = set_->add(std::move(*core));
            if (!index) {
                result = std::unexpected(index.error());
                continue;
            }
            index_of_[a->partition] = *index;
            if (partition_at_.size() <= *index) partition_at_.resize(*index + 1);
            partition_at_[*index] = a->partition;
            redeliver_[a->partition] = a->redeliver_until;
            ++handovers_;
        } else if (auto* v = std::get_if<proto::GroupRevoke>(&body)) {
            proto::close_fds(fds);
            if (v->partition >= partitions_ || index_of_[v->partition] == kNone) continue;  // not ours (any more)
            revoked_.push_back({v->partition, set_->detach(index_of_[v->partition])});
            index_of_[v->partition] = kNone;
        } else {
            proto::close_fds(fds);
        }
    }
    if (!revoked_.empty()) give_back_settled();
    return result;
}

void GroupCore::give_back_settled() {
    std::erase_if(revoked_, [&](Revoked& r) {
        if (r.core->samples_held() != 0) return false;
        r.core->settle();
        r.core.reset();
        ++handovers_;
        // The broker moves the slot on only after this: the next member starts where we settled.
        (void)conn_->call(proto::GroupRelease{member_, r.partition});
        return true;
    });
}

GroupCore::Taken GroupCore::taken(const WaitSetCore::Taken& t) noexcept {
    Taken g;
    static_cast<WaitSetCore::Taken&>(g) = t;
    g.partition = partition_at_[t.index];
    const std::uint64_t until = redeliver_[g.partition][t.lane];
    if (until != 0 && t.core->read_position(t.lane) <= until) [[unlikely]] {
        g.redelivered = true;
        ++redelivered_;
    }
    return g;
}

// The broker ends a member's membership when its connection closes (and a restarted broker knows no
// groups): the partitions are someone else's now, or nobody's. Reads stop at once.
Error GroupCore::membership_ended() {
    if (!ended_) {
        ended_ = true;
        for (std::uint32_t p = 0; p < partitions_; ++p)
            if (index_of_[p] != kNone) {
                revoked_.push_back({p, set_->detach(index_of_[p])});
                index_of_[p] = kNone;
            }
    }
    std::erase_if(revoked_, [](Revoked& r) { return r.core->samples_held() == 0; });  // no settle: the cursors are not ours
    return Error(Errc::broker_unavailable, "group '" + group_ + "' on '" + topic_ +
                                               "': the connection to the broker dropped, which ended this membership; join again");
}

Status GroupCore::maintain() noexcept {
    if (conn_->drops() != drops_at_join_) [[unlikely]] {
        try {
            return std::unexpected(membership_ended());
        } catch (...) {
            return std::unexpected(Error(Errc::broker_unavailable));
        }
    }
    if (inbox_->pending.load(std::memory_order_acquire) || !revoked_.empty()) [[unlikely]] {
        try {
            return apply_mail();
        } catch (const std::exception& e) {  // no memory for a new partition's bookkeeping
            return fail(Errc::internal, std::string("group '") + group_ + "': " + e.what());
        }
    }
    return {};
}

Result<GroupCore::Taken> GroupCore::try_next() noexcept {
    if (auto st = maintain(); !st) return std::unexpected(std::move(st.error()));
    auto r = set_->try_next();
    if (!r) return std::unexpected(std::move(r.error()));
    if (!*r) return Taken{};
    return taken(*r);
}

Result<GroupCore::Taken> GroupCore::try_lane(std::uint32_t lane) noexcept {
    auto r = set_->try_lane(lane);
    if (!r) return std::unexpected(std::move(r.error()));
    if (!*r) return Taken{};
    return taken(*r);
}

void GroupCore::notify(int fd) {
    std::lock_guard lock(inbox_->mu);
    inbox_->notify_fd = fd;
}

Result<bool> GroupCore::prepare_poll() {
    if (set_->size() == 0) return true;  // nothing to park on: only the inbox's mail can come
    return set_->prepare_poll();
}

Result<GroupCore::Taken> GroupCore::next_for(std::chrono::nanoseconds timeout) noexcept {
    // The set parks on the partitions' doorbells, which no assignment rings: it waits in slices, so a
    // revocation is answered within one (and a member with no partition waits for its mail).
    constexpr std::chrono::nanoseconds kSlice = std::chrono::milliseconds(50);
    const bool forever = timeout.count() < 0;
    const auto deadline = std::chrono::steady_clock::now() + (forever ? std::chrono::nanoseconds(0) : timeout);
    for (;;) {
        auto r = try_next();
        if (!r || *r) return r;
        auto slice = kSlice;
        if (!forever) {
            const auto left = deadline - std::chrono::steady_clock::now();
            if (left <= std::chrono::nanoseconds(0)) return std::unexpected(Error(Errc::timeout));
            slice = std::min<std::chrono::nanoseconds>(slice, left);
        }
        if (set_->size() == 0) {
            std::unique_lock lock(inbox_->mu);
            inbox_->arrived.wait_for(lock, slice, [&] { return inbox_->pending.load(std::memory_order_relaxed); });  // relaxed: under mu
            continue;
        }
        auto w = set_->next_for(slice);
        if (w) {
            if (*w) return taken(*w);
            continue;
        }
        if (w.error().code != Errc::timeout) return std::unexpected(std::move(w.error()));
    }
}

}  // namespace rvoip::events::detail
