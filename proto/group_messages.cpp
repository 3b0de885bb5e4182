// The consumer-group messages of the control protocol (proto/messages.hpp): their encoding, and their
// decoding with every field checked.
#include "proto/codec.hpp"

namespace rvoip::events::proto {
namespace codec {

namespace {
template <class M>
Result<M> member_partition(Reader& r, const char* what) {
    auto m = r.get<std::uint32_t>("member");
    auto p = r.get<std::uint32_t>("partition");
    if (auto st = all_ok(m, p); !st) return std::unexpected(st.error());
    if (*p >= kMaxPartitions) return fail(Errc::malformed, std::string(what) + ": partition " + std::to_string(*p) + " is beyond the limit");
    return M{*m, *p};
}
}  // namespace

void encode_body(Writer& w, const JoinGroup& m) {
    w.put_fixed(m.topic, layout::kTopicNameMax + 1);
    w.put_fixed(m.group, kGroupNameMax + 1);
    w.put(m.partitions);
}
void encode_body(Writer& w, const GroupOk& m) {
    w.put(m.member);
    w.put(m.partitions);
}
void encode_body(Writer& w, const LeaveGroup& m) { w.put(m.member); }
void encode_body(Writer& w, const GroupAssign& m) {
    w.put(m.member);
    w.put(m.partition);
    w.put(m.topic_id);
    w.put(m.slot);
    for (auto x : m.start) w.put(x);
    for (auto x : m.redeliver_until) w.put(x);
}
// group_revoke and group_release: the same two fields.
template <class M>
void encode_member_partition(Writer& w, const M& m) {
    w.put(m.member);
    w.put(m.partition);
}
void encode_body(Writer& w, const GroupRevoke& m) { encode_member_partition(w, m); }
void encode_body(Writer& w, const GroupRelease& m) { encode_member_partition(w, m); }

Result<Body> decode_group_body(MsgType t, Reader& r) {
    switch (t) {
    case MsgType::join_group: {
        JoinGroup m;
        auto topic = r.get_fixed(layout::kTopicNameMax + 1, "topic");
        auto group = r.get_fixed(kGroupNameMax + 1, "group");
        auto n = r.get<std::uint32_t>("partitions");
        if (auto st = all_ok(topic, group, n); !st) return std::unexpected(st.error());
        if (!printable(*topic) || !printable(*group)) return fail(Errc::malformed, "join_group: names must be printable ASCII");
        m.topic = std::move(*topic);
        m.group = std::move(*group);
        m.partitions = *n;
        return m;
    }
    case MsgType::group_ok: {
        auto m = r.get<std::uint32_t>("member");
        auto n = r.get<std::uint32_t>("partitions");
        if (auto st = all_ok(m, n); !st) return std::unexpected(st.error());
        if (*n == 0 || *n > kMaxPartitions) return fail(Errc::malformed, "group_ok: partitions " + std::to_string(*n) + " is out of range");
        return GroupOk{*m, *n};
    }
    case MsgType::leave_group: {
        auto m = r.get<std::uint32_t>("member");
        if (!m) return std::unexpected(m.error());
        return LeaveGroup{*m};
    }
    case MsgType::group_assign: {
        auto head = member_partition<GroupRevoke>(r, "group_assign");
        if (!head) return std::unexpected(head.error());
        GroupAssign m;
        m.member = head->member;
        m.partition = head->partition;
        auto id = r.get<std::uint32_t>("topic_id");
        auto s = r.get<std::uint32_t>("slot");
        if (auto st = all_ok(id, s); !st) return std::unexpected(st.error());
        if (*s >= layout::kMaxSubscribers) return fail(Errc::malformed, "group_assign: slot " + std::to_string(*s) + " is beyond the limit");
        m.topic_id = *id;
        m.slot = *s;
        for (auto* positions : {&m.start, &m.redeliver_until})
            for (auto& x : *positions) {
                auto v = r.get<std::uint64_t>("position");
                if (!v) return std::unexpected(v.error());
                if (*v % layout::kLine != 0) return fail(Errc::malformed, "group_assign: position " + std::to_string(*v) + " is not 64-byte aligned");
                x = *v;
            }
        return m;
    }
    case MsgType::group_revoke: {
        auto m = member_partition<GroupRevoke>(r, "group_revoke");
        if (!m) return std::unexpected(m.error());
        return *m;
    }
    case MsgType::group_release: {
        auto m = member_partition<GroupRevoke>(r, "group_release");
        if (!m) return std::unexpected(m.error());
        return GroupRelease{m->member, m->partition};
    }
    default: break;
    }
    return fail(Errc::malformed, "not a group message: type " + std::to_string(static_cast<unsigned>(t)));
}

}  // namespace codec
}  // namespace rvoip::events::proto
