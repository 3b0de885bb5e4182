#include "proto/messages.hpp"
#include "proto/codec.hpp"

#include <cstring>
#include <type_traits>
#include <bit>

namespace rvoip::events::proto {

bool printable(std::string_view s) noexcept {
    for (unsigned char c : s)
        if (c < 0x20 || c > 0x7e) return false;
    return true;
}

std::string printable_excerpt(std::string_view s, std::size_t max) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s.substr(0, max)) {
        if (c >= 0x20 && c <= 0x7e && c != '\\') {
            out += char(c);
            continue;
        }
        out += "\\x";
        out += kHex[c >> 4];
        out += kHex[c & 15];
    }
    if (s.size() > max) out += "...";
    return out;
}

namespace {

using codec::Writer;
using codec::Reader;
using codec::all_ok;
using codec::encode_body;

void encode_body(Writer& w, const Hello& m) {
    w.put(m.version_min);
    w.put(m.version_max);
    w.put(m.pid);
    w.put_fixed(m.name, kClientNameMax + 1);
}
void encode_body(Writer& w, const HelloOk& m) {
    w.put(m.version);
    w.put(m.client_id);
    w.put(m.broker_pid);
    w.put(m.abi_version);
}
void encode_body(Writer& w, const OpenTopic& m) {
    w.put_fixed(m.topic, layout::kTopicNameMax + 1);
    w.put_fingerprint(m.fingerprint);
    w.put_lanes(m.lanes);
}
void encode_body(Writer& w, const TopicOk& m) {
    w.put(m.topic_id);
    w.put<std::uint8_t>(m.created ? 1 : 0);
    w.put_lanes(m.lanes);
}
void encode_body(Writer& w, const AddPublisher& m) {
    w.put(m.topic_id);
    w.put(m.exclusive);
}
void encode_body(Writer& w, const PublisherOk& m) {
    w.put(m.topic_id);
    w.put(m.slot);
    w.put(m.lanes);
    w.put(m.taken);
}
void encode_body(Writer& w, const AddSubscriber& m) {
    w.put(m.topic_id);
    w.put(m.doorbell);
    w.put(static_cast<std::uint8_t>(m.start));
}
void encode_body(Writer& w, const SubscriberOk& m) {
    w.put(m.topic_id);
    w.put(m.slot);
    w.put(m.doorbell);
    for (auto s : m.start) w.put(s);
}
void encode_body(Writer& w, const RemovePublisher& m) {
    w.put(m.topic_id);
    w.put(m.slot);
}
void encode_body(Writer& w, const RemoveSubscriber& m) {
    w.put(m.topic_id);
    w.put(m.slot);
}
void encode_body(Writer&, const Ok&) {}
void encode_body(Writer&, const Stats&) {}
void encode_body(Writer& w, const StatsReply& m) {
    w.put(m.clients);
    auto n = static_cast<std::uint32_t>(std::min(m.topics.size(), kMaxStatsEntries));
    w.put(n);
    for (std::uint32_t i = 0; i < n; ++i) {
        auto& t = m.topics[i];
        w.put_fixed(t.topic, layout::kTopicNameMax + 1);
        w.put(t.topic_id);
        w.put(t.publishers);
        w.put(t.subscribers);
        for (auto x : t.tails) w.put(x);
        w.put(t.evictions);
    }
}
void encode_body(Writer& w, const ErrorReply& m) {
    w.put(static_cast<std::uint16_t>(m.code));
    w.put_string(std::string_view(m.message).substr(0, kMaxErrorMessage));
}
void encode_body(Writer&, const ShutdownNotice&) {}
void encode_body(Writer& w, const Reclaim& m) {
    w.put(static_cast<std::uint8_t>(m.role));
    w.put_fixed(m.topic, layout::kTopicNameMax + 1);
    w.put(m.record_key);
    w.put(m.slot);
    w.put(m.doorbell);
}
void encode_body(Writer& w, const ReclaimOk& m) { w.put(m.topic_id); }
void encode_body(Writer& w, const Inspect& m) {
    w.put(static_cast<std::uint8_t>(m.what));
    w.put_fixed(m.topic, layout::kTopicNameMax + 1);
    w.put(m.offset);
}
void encode_body(Writer& w, const InspectReply& m) {
    w.put(m.total);
    w.put(m.offset);
    w.put_string(std::string_view(m.chunk).substr(0, kInspectChunk));
}

Result<Body> decode_body(MsgType t, Reader& r) {
    switch (t) {
    case MsgType::hello: {
        Hello m;
        auto a = r.get<std::uint16_t>("version_min");
        auto b = r.get<std::uint16_t>("version_max");
        auto p = r.get<std::uint32_t>("pid");
        auto n = r.get_fixed(kClientNameMax + 1, "name");
        if (auto s = all_ok(a, b, p, n); !s) return std::unexpected(s.error());
        if (*a > *b) return fail(Errc::malformed, "hello: version_min > version_max");
        if (n->empty() || !printable(*n)) return fail(Errc::malformed, "hello: client name must be 1-31 printable characters");
        m.version_min = *a;
        m.version_max = *b;
        m.pid = *p;
        m.name = *n;
        return m;
    }
    case MsgType::hello_ok: {
        HelloOk m;
        auto v = r.get<std::uint16_t>("version");
        auto c = r.get<std::uint32_t>("client_id");
        auto p = r.get<std::uint32_t>("broker_pid");
        auto a = r.get<std::uint32_t>("abi_version");
        if (auto s = all_ok(v, c, p, a); !s) return std::unexpected(s.error());
        m.version = *v;
        m.client_id = *c;
        m.broker_pid = *p;
        m.abi_version = *a;
        return m;
    }
    case MsgType::open_topic: {
        OpenTopic m;
        auto n = r.get_fixed(layout::kTopicNameMax + 1, "topic");
        if (!n) return std::unexpected(n.error());
        auto f = r.get_fingerprint();
        if (!f) return std::unexpected(f.error());
        auto l = r.get_lanes();
        if (!l) return std::unexpected(l.error());
        m.topic = *n;
        m.fingerprint = *f;
        m.lanes = *l;
        return m;
    }
    case MsgType::topic_ok: {
        TopicOk m;
        auto id = r.get<std::uint32_t>("topic_id");
        auto c = r.get<std::uint8_t>("created");
        if (auto s = all_ok(id, c); !s) return std::unexpected(s.error());
        // One spelling per message: a flag byte is 0 or 1, as encode writes it.
        if (*c > 1) return fail(Errc::malformed, "topic_ok: created " + std::to_string(*c) + " is not 0 or 1");
        auto l = r.get_lanes();
        if (!l) return std::unexpected(l.error());
        m.topic_id = *id;
        m.created = *c == 1;
        m.lanes = *l;
        return m;
    }
    case MsgType::add_publisher: {
        auto id = r.get<std::uint32_t>("topic_id");
        auto x = r.get<std::uint8_t>("exclusive");
        if (auto st = all_ok(id, x); !st) return std::unexpected(st.error());
        if (*x > 0xf) return fail(Errc::malformed, "add_publisher: exclusive lanes " + std::to_string(*x) + " has bits beyond the four lanes");
        return AddPublisher{*id, *x};
    }
    case MsgType::publisher_ok: {
        auto id = r.get<std::uint32_t>("topic_id");
        auto s = r.get<std::uint32_t>("slot");
        auto l = r.get<std::uint8_t>("lanes");
        auto x = r.get<std::uint8_t>("taken");
        if (auto st = all_ok(id, s, l, x); !st) return std::unexpected(st.error());
        if (*l > 0xf) return fail(Errc::malformed, "publisher_ok: lanes " + std::to_string(*l) + " has bits beyond the four lanes");
        if (*x > 0xf || (*x & *l)) return fail(Errc::malformed, "publisher_ok: taken lanes " + std::to_string(*x) + " are beyond the four lanes or granted");
        return PublisherOk{*id, *s, *l, *x};
    }
    case MsgType::add_subscriber: {
        auto id = r.get<std::uint32_t>("topic_id");
        auto d = r.get<std::uint32_t>("doorbell");
        auto st = r.get<std::uint8_t>("start");
        if (auto s = all_ok(id, d, st); !s) return std::unexpected(s.error());
        if (*st != static_cast<std::uint8_t>(StartAt::tail))
            return fail(Errc::malformed, "add_subscriber: start " + std::to_string(*st) + " is not tail(1)");
        return AddSubscriber{*id, *d, StartAt::tail};
    }
    case MsgType::subscriber_ok: {
        SubscriberOk m;
        auto id = r.get<std::uint32_t>("topic_id");
        auto s = r.get<std::uint32_t>("slot");
        auto d = r.get<std::uint32_t>("doorbell");
        if (auto st = all_ok(id, s, d); !st) return std::unexpected(st.error());
        m.topic_id = *id;
        m.slot = *s;
        m.doorbell = *d;
        for (auto& x : m.start) {
            auto v = r.get<std::uint64_t>("start");
            if (!v) return std::unexpected(v.error());
            x = *v;
        }
        return m;
    }
    case MsgType::remove_publisher:
    case MsgType::remove_subscriber: {
        auto id = r.get<std::uint32_t>("topic_id");
        auto s = r.get<std::uint32_t>("slot");
        if (auto st = all_ok(id, s); !st) return std::unexpected(st.error());
        if (t == MsgType::remove_publisher) return RemovePublisher{*id, *s};
        return RemoveSubscriber{*id, *s};
    }
    case MsgType::ok: return Ok{};
    case MsgType::stats: return Stats{};
    case MsgType::stats_reply: {
        StatsReply m;
        auto c = r.get<std::uint32_t>("clients");
        auto n = r.get<std::uint32_t>("count");
        if (auto s = all_ok(c, n); !s) return std::unexpected(s.error());
        if (*n > kMaxStatsEntries) return fail(Errc::malformed, "stats_reply: count " + std::to_string(*n) + " exceeds the limit");
        m.clients = *c;
        for (std::uint32_t i = 0; i < *n; ++i) {
            TopicStats t;
            auto name = r.get_fixed(layout::kTopicNameMax + 1, "topic");
            auto id = r.get<std::uint32_t>("topic_id");
            auto p = r.get<std::uint32_t>("publishers");
            auto s = r.get<std::uint32_t>("subscribers");
            if (auto st = all_ok(name, id, p, s); !st) return std::unexpected(st.error());
            t.topic = *name;
            t.topic_id = *id;
            t.publishers = *p;
            t.subscribers = *s;
            for (auto& x : t.tails) {
                auto v = r.get<std::uint64_t>("tails");
                if (!v) return std::unexpected(v.error());
                x = *v;
            }
            auto ev = r.get<std::uint64_t>("evictions");
            if (!ev) return std::unexpected(ev.error());
            t.evictions = *ev;
            m.topics.push_back(std::move(t));
        }
        return m;
    }
    case MsgType::error_reply: {
        ErrorReply m;
        auto c = r.get<std::uint16_t>("code");
        if (!c) return std::unexpected(c.error());
        if (!is_known(*c) || *c == 0) return fail(Errc::malformed, "error_reply: unknown error code " + std::to_string(*c));
        auto s = r.get_string(kMaxErrorMessage, "message");
        if (!s) return std::unexpected(s.error());
        m.code = static_cast<Errc>(*c);
        m.message = *s;
        return m;
    }
    case MsgType::shutdown_notice: return ShutdownNotice{};
    case MsgType::reclaim: {
        Reclaim m;
        auto role = r.get<std::uint8_t>("role");
        auto n = r.get_fixed(layout::kTopicNameMax + 1, "topic");
        auto k = r.get<std::uint64_t>("record_key");
        auto s = r.get<std::uint32_t>("slot");
        auto d = r.get<std::uint32_t>("doorbell");
        if (auto st = all_ok(role, n, k, s, d); !st) return std::unexpected(st.error());
        if (*role != 1 && *role != 2) return fail(Errc::malformed, "reclaim: role " + std::to_string(*role) + " is not publisher(1) or subscriber(2)");
        if (!printable(*n)) return fail(Errc::malformed, "topic must be printable ASCII");
        m.role = static_cast<Role>(*role);
        m.topic = *n;
        m.record_key = *k;
        m.slot = *s;
        m.doorbell = *d;
        return m;
    }
    case MsgType::reclaim_ok: {
        auto id = r.get<std::uint32_t>("topic_id");
        if (!id) return std::unexpected(id.error());
        return ReclaimOk{*id};
    }
    case MsgType::inspect: {
        Inspect m;
        auto what = r.get<std::uint8_t>("what");
        auto n = r.get_fixed(layout::kTopicNameMax + 1, "topic");
        auto o = r.get<std::uint32_t>("offset");
        if (auto st = all_ok(what, n, o); !st) return std::unexpected(st.error());
        if (*what < 1 || *what > 4) return fail(Errc::malformed, "inspect: what " + std::to_string(*what) + " is not 1-4");
        if (!printable(*n)) return fail(Errc::malformed, "topic must be printable ASCII");
        m.what = static_cast<InspectWhat>(*what);
        m.topic = *n;
        m.offset = *o;
        return m;
    }
    case MsgType::join_group:
    case MsgType::group_ok:
    case MsgType::leave_group:
    case MsgType::group_assign:
    case MsgType::group_revoke:
    case MsgType::group_release: return codec::decode_group_body(t, r);
    case MsgType::inspect_reply: {
        InspectReply m;
        auto total = r.get<std::uint32_t>("total");
        auto o = r.get<std::uint32_t>("offset");
        auto c = r.get_string(kInspectChunk, "chunk");
        if (auto st = all_ok(total, o, c); !st) return std::unexpected(st.error());
        if (*total > kMaxInspectReport) return fail(Errc::malformed, "inspect_reply: report of " + std::to_string(*total) + " bytes exceeds the limit");
        if (std::uint64_t(*o) + c->size() > *total) return fail(Errc::malformed, "inspect_reply: chunk runs past the report's end");
        m.total = *total;
        m.offset = *o;
        m.chunk = std::move(*c);
        return m;
    }
    }
    return fail(Errc::malformed, "unknown message type " + std::to_string(static_cast<unsigned>(t)));
}

}  // namespace

MsgType type_of(const Body& b) noexcept {
    return static_cast<MsgType>(b.index() + 1);  // Body's alternatives are listed in MsgType order
}

std::string_view to_string(MsgType t) noexcept {
    switch (t) {
    case MsgType::hello: return "hello";
    case MsgType::hello_ok: return "hello_ok";
    case MsgType::open_topic: return "open_topic";
    case MsgType::topic_ok: return "topic_ok";
    case MsgType::add_publisher: return "add_publisher";
    case MsgType::publisher_ok: return "publisher_ok";
    case MsgType::add_subscriber: return "add_subscriber";
    case MsgType::subscriber_ok: return "subscriber_ok";
    case MsgType::remove_publisher: return "remove_publisher";
    case MsgType::remove_subscriber: return "remove_subscriber";
    case MsgType::ok: return "ok";
    case MsgType::stats: return "stats";
    case MsgType::stats_reply: return "stats_reply";
    case MsgType::error_reply: return "error_reply";
    case MsgType::shutdown_notice: return "shutdown_notice";
    case MsgType::reclaim: return "reclaim";
    case MsgType::reclaim_ok: return "reclaim_ok";
    case MsgType::inspect: return "inspect";
    case MsgType::inspect_reply: return "inspect_reply";
    case MsgType::join_group: return "join_group";
    case MsgType::group_ok: return "group_ok";
    case MsgType::leave_group: return "leave_group";
    case MsgType::group_assign: return "group_assign";
    case MsgType::group_revoke: return "group_revoke";
    case MsgType::group_release: return "group_release";
    }
    return "unknown";
}

std::vector<std::byte> encode(const Message& m) {
    Writer w;
    w.put<std::uint32_t>(0);  // length, patched below
    w.put(static_cast<std::uint16_t>(type_of(m.body)));
    w.put(kProtocolVersion);
    w.put(m.correlation);
    std::visit([&](const auto& b) { encode_body(w, b); }, m.body);
    auto& bytes = w.bytes();
    auto len = static_cast<std::uint32_t>(bytes.size());
    std::memcpy(bytes.data(), &len, sizeof len);
    return std::move(bytes);
}

std::uint64_t peek_correlation(std::span<const std::byte> frame) noexcept {
    std::uint64_t c = 0;
    if (frame.size() >= kFrameHeaderSize) std::memcpy(&c, frame.data() + 8, sizeof c);
    return c;
}

Result<Message> decode(std::span<const std::byte> frame) {
    if (frame.size() < kFrameHeaderSize)
        return fail(Errc::malformed, "frame of " + std::to_string(frame.size()) + " bytes is shorter than the 16-byte header");
    if (frame.size() > kMaxFrame) return fail(Errc::malformed, "frame of " + std::to_string(frame.size()) + " bytes exceeds 64 KiB");
    Reader r(frame);
    auto len = r.get<std::uint32_t>("length");
    auto type = r.get<std::uint16_t>("type");
    auto ver = r.get<std::uint16_t>("version");
    auto corr = r.get<std::uint64_t>("correlation");
    if (auto s = all_ok(len, type, ver, corr); !s) return std::unexpected(s.error());
    if (*len != frame.size())
        return fail(Errc::malformed, "frame length field says " + std::to_string(*len) + " but the frame has " +
                                         std::to_string(frame.size()) + " bytes");
    if (*ver < kMinProtocolVersion || *ver > kProtocolVersion)
        return fail(Errc::version_mismatch, "frame version " + std::to_string(*ver) + " is outside the supported " +
                                                std::to_string(kMinProtocolVersion) + ".." + std::to_string(kProtocolVersion));
    if (*type < 1 || *type > static_cast<std::uint16_t>(MsgType::group_release))
        return fail(Errc::malformed, "unknown message type " + std::to_string(*type));
    auto t = static_cast<MsgType>(*type);
    auto body = decode_body(t, r);
    if (!body) return std::unexpected(body.error().context(std::string(to_string(t))));
    if (r.remaining() != 0)
        return fail(Errc::malformed, std::string(to_string(t)) + ": " + std::to_string(r.remaining()) + " trailing bytes");
    return Message{*corr, std::move(*body)};
}

namespace {
// [a-z0-9][a-z0-9_.-]{0,max-1}: topic and group names.
Status validate_name(std::string_view what, std::string_view name, std::size_t max, Errc code) {
    auto bad = [&](std::string why) {
        return fail(code, std::string(what) + " name '" + printable_excerpt(name) + "' " + why + " (expected [a-z0-9][a-z0-9_.-]{0," +
                              std::to_string(max - 1) + "})");
    };
    if (name.empty()) return bad("is empty");
    if (name.size() > max) return bad("is longer than " + std::to_string(max) + " characters");
    auto head = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (!head(name[0])) return bad("must start with a lowercase letter or digit");
    for (char c : name)
        if (!head(c) && c != '_' && c != '.' && c != '-') return bad("contains an invalid character");
    return {};
}
}  // namespace

Status validate_topic_name(std::string_view name) {
    return validate_name("topic", name, layout::kTopicNameMax, Errc::invalid_topic_name);
}

Status validate_group_name(std::string_view name) { return validate_name("group", name, kGroupNameMax, Errc::invalid_argument); }

std::string partition_topic(std::string_view topic, std::uint32_t partition) {
    return std::string(topic) + ".p" + std::to_string(partition);
}

}  // namespace rvoip::events::proto
