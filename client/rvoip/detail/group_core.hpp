// Internal to librvoip-events (installed because rvoip/group.hpp's inline fronts use it; not an API):
// a consumer group member, the untyped core behind GroupSubscriber.
#pragma once

#include "rvoip/detail/cores.hpp"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace rvoip::events::detail {

struct GroupInbox;

// One member of a consumer group: the partitions the broker assigned to it, read through one WaitSet
// (Critical first across them, one park for all). Assignments and revocations come from the broker by
// themselves (GroupInbox) and are applied by the receiving thread at its next receive: a revoked
// partition is read no more, and given back (group_release) once its samples are released and its
// cursors moved to what was read, so the next member starts exactly there.
class GroupCore {
public:
    struct Taken : WaitSetCore::Taken {
        std::uint32_t partition = 0;
        bool redelivered = false;  // published before its previous owner died, which may have had it
    };

    // Opens the partition topics (creating them with `topic_opt` if need be), then joins the group.
    static Result<std::unique_ptr<GroupCore>> join(std::shared_ptr<Connection> conn, std::string_view topic, std::string_view group,
                                                   const layout::Fingerprint& fp, std::uint32_t partitions,
                                                   const TopicOptions& topic_opt, const WaitOptions& wait);
    // Leaves the group: the partitions, settled, pass to the other members. Samples must be released.
    ~GroupCore();
    GroupCore(const GroupCore&) = delete;
    GroupCore& operator=(const GroupCore&) = delete;

    Result<Taken> try_next() noexcept;
    Result<Taken> next_for(std::chrono::nanoseconds timeout) noexcept;

    // For a thread that waits on its own (EventBus's dispatcher, which merges this member's partitions
    // with other sets lane by lane). Everything here is the receiving thread's, like try_next:
    //  - maintain(): applies the broker's mail (assignments, revocations) and gives back revoked
    //    partitions whose samples were all released; try_next does it by itself, try_lane does not;
    //  - try_lane(): the next record of one lane across the partitions held now;
    //  - notify(fd): an eventfd the inbox writes on every mail from now on (-1: none), so a thread
    //    parked in epoll hears of assignment changes; set it to -1 before closing the fd;
    //  - descriptor()/prepare_poll(): the partitions' WaitSet descriptor and arming it over the
    //    partitions held now (call prepare_poll again after maintain(): a change of partitions disarms
    //    it). With no partition held, prepare_poll arms nothing and answers true: only mail can come.
    Status maintain() noexcept;
    Result<Taken> try_lane(std::uint32_t lane) noexcept;
    void notify(int fd);
    Result<int> descriptor() { return set_->descriptor(); }
    Result<bool> prepare_poll();
    std::size_t held() const noexcept { return set_->size(); }  // partitions read now
    std::uint64_t wakeups() const noexcept { return set_->wakeups(); }
    // After a lagged or corrupt error of try_lane: that partition's subscription.
    const SubscriberCore* last_error_core() const noexcept { return set_->at(set_->last_error_index()); }

    std::uint32_t member() const noexcept { return member_; }
    std::uint32_t partitions() const noexcept { return partitions_; }
    std::vector<std::uint32_t> assigned() const;  // the partitions read now, ascending
    std::uint64_t handovers() const noexcept { return handovers_; }  // partitions received and given back since joining
    std::uint64_t redelivered() const noexcept { return redelivered_; }
    const std::string& topic() const noexcept { return topic_; }
    const std::string& group() const noexcept { return group_; }

private:
    GroupCore() = default;
    Status apply_mail();
    void give_back_settled();
    Taken taken(const WaitSetCore::Taken& t) noexcept;

    static constexpr std::size_t kNone = ~std::size_t(0);
    std::shared_ptr<Connection> conn_;
    std::shared_ptr<GroupInbox> inbox_;
    std::string topic_;
    std::string group_;
    layout::Fingerprint fp_{};
    WaitOptions wait_;
    std::uint32_t member_ = 0;
    std::uint32_t partitions_ = 0;
    std::unique_ptr<WaitSetCore> set_;
    std::vector<std::size_t> index_of_;                                   // by partition: its index in set_, or kNone
    std::vector<std::uint32_t> partition_at_;                             // by set index
    std::vector<std::array<std::uint64_t, layout::kLanes>> redeliver_;  // by partition (GroupAssign::redeliver_until)
    struct Revoked {
        std::uint32_t partition;
        std::unique_ptr<SubscriberCore> core;
    };
    std::vector<Revoked> revoked_;  // out of the set, to be given back once their samples are released
    std::uint64_t handovers_ = 0;
    std::uint64_t redelivered_ = 0;
    std::uint64_t drops_at_join_ = 0;  // Connection::drops() when joining: a later drop ended the membership
    bool ended_ = false;
    [[gnu::cold]] Error membership_ended();
};

// A keyed publisher's declaration of the topic's partition count, checked against the broker's record.
Status declare_partitions(Connection& conn, std::string_view topic, std::uint32_t partitions);

}  // namespace rvoip::events::detail
