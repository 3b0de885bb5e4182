#include "proto/messages.hpp"

#include <doctest/doctest.h>

#include <cstring>

using namespace rvoip::events;
using namespace rvoip::events::proto;

namespace {
std::vector<std::byte> bytes_of(std::initializer_list<int> v) {
    std::vector<std::byte> out;
    for (int x : v) out.push_back(std::byte(x));
    return out;
}
}  // namespace

TEST_CASE("every message survives an encode/decode round trip with its correlation id") {
    OpenTopic o;
    o.topic = "call.state";
    std::strcpy(o.fingerprint.type_name, "demo::CallState");
    o.fingerprint.size = 48;
    o.fingerprint.align = 8;
    o.fingerprint.kind = layout::Kind::typed;
    o.lanes[0].capacity = 1 << 20;
    o.lanes[0].max_event = 4096;
    o.lanes[0].overflow = Overflow::fail;
    o.lanes[1].evict_after_ms = kEvictNever;
    o.lanes[2].evict_after_ms = 300;
    auto frame = encode(Message{42, o});
    auto m = decode(frame);
    REQUIRE(m.has_value());
    CHECK(m->correlation == 42);
    auto* got = std::get_if<OpenTopic>(&m->body);
    REQUIRE(got);
    CHECK(got->topic == "call.state");
    CHECK(got->fingerprint == o.fingerprint);
    CHECK(got->lanes[0].capacity == 1u << 20);
    CHECK(got->lanes[0].overflow == Overflow::fail);
    CHECK(got->lanes[0].evict_after_ms == 0);
    CHECK(got->lanes[1].evict_after_ms == kEvictNever);
    CHECK(got->lanes[2].evict_after_ms == 300);

    StatsReply s;
    s.clients = 3;
    s.topics.push_back(TopicStats{"sip.message", 1, 2, 3, {1, 2, 3, 4}, 5});
    auto sm = decode(encode(Message{7, s}));
    REQUIRE(sm.has_value());
    auto* sr = std::get_if<StatsReply>(&sm->body);
    REQUIRE(sr);
    CHECK(sr->topics.at(0).topic == "sip.message");
    CHECK(sr->topics.at(0).tails[3] == 4);
    CHECK(sr->topics.at(0).evictions == 5);

    auto em = decode(encode(Message{9, ErrorReply{Errc::schema_mismatch, "topic 'x' carries A, you offered B"}}));
    REQUIRE(em.has_value());
    CHECK(std::get<ErrorReply>(em->body).code == Errc::schema_mismatch);
    CHECK(std::get<ErrorReply>(em->body).message == "topic 'x' carries A, you offered B");

    for (Body b : {Body{Hello{1, 1, 99, "sip-transport"}}, Body{HelloOk{}}, Body{TopicOk{}}, Body{AddPublisher{3}},
                   Body{PublisherOk{3, 4}}, Body{AddSubscriber{3, 9, StartAt::tail}}, Body{SubscriberOk{3, 4, 5, {1, 2, 3, 4}}},
                   Body{RemovePublisher{1, 2}}, Body{RemoveSubscriber{1, 2}}, Body{Ok{}}, Body{Stats{}}, Body{ShutdownNotice{}},
                   Body{ReclaimOk{6}}}) {
        auto r = decode(encode(Message{5, b}));
        REQUIRE(r.has_value());
        CHECK(r->body.index() == b.index());
    }
}

TEST_CASE("malformed frames are refused with a message naming what was wrong") {
    SUBCASE("shorter than a header") {
        auto r = decode(bytes_of({1, 2, 3}));
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().code == Errc::malformed);
        CHECK(r.error().message.find("16-byte header") != std::string::npos);
    }
    SUBCASE("length field disagrees with the frame") {
        auto f = encode(Message{1, Stats{}});
        f[0] = std::byte(99);
        auto r = decode(f);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().message.find("length field") != std::string::npos);
    }
    SUBCASE("unknown type") {
        auto f = encode(Message{1, Stats{}});
        f[4] = std::byte(200);
        auto r = decode(f);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().message.find("unknown message type") != std::string::npos);
    }
    SUBCASE("future version") {
        auto f = encode(Message{1, Stats{}});
        f[6] = std::byte(9);
        auto r = decode(f);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().code == Errc::version_mismatch);
    }
    SUBCASE("truncated body") {
        auto f = encode(Message{1, AddSubscriber{1, 2, StartAt::tail}});
        f.pop_back();
        std::uint32_t len = std::uint32_t(f.size());
        std::memcpy(f.data(), &len, 4);
        auto r = decode(f);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().message.find("start") != std::string::npos);
    }
    SUBCASE("trailing bytes") {
        auto f = encode(Message{1, AddPublisher{1}});
        f.push_back(std::byte{0});
        std::uint32_t len = std::uint32_t(f.size());
        std::memcpy(f.data(), &len, 4);
        auto r = decode(f);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().message.find("trailing") != std::string::npos);
    }
    SUBCASE("name not NUL-terminated") {
        Hello h{1, 1, 1, "x"};
        auto f = encode(Message{1, h});
        std::memset(f.data() + 16 + 8, 'a', 32);
        auto r = decode(f);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().message.find("name") != std::string::npos);
    }
    SUBCASE("bad enum in lane settings") {
        OpenTopic o;
        o.topic = "a";
        std::strcpy(o.fingerprint.type_name, "t");
        o.fingerprint.kind = layout::Kind::raw;
        auto f = encode(Message{1, o});
        // lane 0's overflow byte: header 16 + name 64 + fingerprint 112 + capacity 8 + max_event 4
        f[16 + 64 + 112 + 12] = std::byte(7);
        auto r = decode(f);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().message.find("overflow") != std::string::npos);
    }
    SUBCASE("a topic_ok whose created flag is neither 0 nor 1 (found by fuzz_decode)") {
        auto f = encode(Message{4, TopicOk{1, true, {}}});
        f[16 + 4] = std::byte(0x10);  // created: after the header and topic_id
        auto r = decode(f);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().message.find("created") != std::string::npos);
    }
    SUBCASE("exclusive lanes beyond the four, or taken lanes that were also granted") {
        auto f = encode(Message{1, AddPublisher{3, 0x10}});
        auto r = decode(f);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().message.find("exclusive lanes 16") != std::string::npos);
        auto g = decode(encode(Message{1, PublisherOk{3, 4, 0xb, 0x4}}));
        REQUIRE(g.has_value());
        CHECK(std::get<PublisherOk>(g->body).taken == 0x4);
        auto h = decode(encode(Message{1, PublisherOk{3, 4, 0xf, 0x4}}));
        REQUIRE_FALSE(h.has_value());
        CHECK(h.error().message.find("taken lanes 4") != std::string::npos);
        auto a = decode(encode(Message{1, AddPublisher{3, 0x4}}));
        REQUIRE(a.has_value());
        CHECK(std::get<AddPublisher>(a->body).exclusive == 0x4);
    }
    SUBCASE("unknown error code in an error reply") {
        auto f = encode(Message{1, ErrorReply{Errc::internal, "x"}});
        f[16] = std::byte(250);
        auto r = decode(f);
        REQUIRE_FALSE(r.has_value());
    }
}

TEST_CASE("a reclaim names the topic, its ring's key, the slot and the doorbell; a bad role is refused") {
    auto m = decode(encode(Message{11, Reclaim{Role::subscriber, "call.control", 0x1234'5678'9abc'def1ull, 7, 12}}));
    REQUIRE(m.has_value());
    auto& r = std::get<Reclaim>(m->body);
    CHECK(r.role == Role::subscriber);
    CHECK(r.topic == "call.control");
    CHECK(r.record_key == 0x1234'5678'9abc'def1ull);
    CHECK(r.slot == 7);
    CHECK(r.doorbell == 12);
    auto f = encode(Message{1, Reclaim{Role::publisher, "a", 1, 0, layout::kNoDoorbell}});
    f[16] = std::byte(9);
    auto bad = decode(f);
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.error().message.find("role") != std::string::npos);
    for (std::size_t n = 16; n < f.size(); ++n) {  // every truncation refused
        std::vector<std::byte> cut(f.begin(), f.begin() + std::ptrdiff_t(n));
        std::uint32_t len = std::uint32_t(cut.size());
        std::memcpy(cut.data(), &len, 4);
        CHECK_FALSE(decode(cut).has_value());
    }
}

TEST_CASE("every truncation of every valid frame is refused, never read past its end") {
    OpenTopic o;
    o.topic = "media.quality";
    std::strcpy(o.fingerprint.type_name, "q");
    o.fingerprint.kind = layout::Kind::raw;
    for (Body b : {Body{o}, Body{SubscriberOk{1, 2, 3, {}}}, Body{StatsReply{1, {TopicStats{"a", 1, 1, 1, {}}}}},
                   Body{ErrorReply{Errc::full, "m"}}}) {
        auto f = encode(Message{3, b});
        for (std::size_t n = 0; n < f.size(); ++n) {
            std::vector<std::byte> cut(f.begin(), f.begin() + std::ptrdiff_t(n));
            if (cut.size() >= 4) {
                std::uint32_t len = std::uint32_t(cut.size());
                std::memcpy(cut.data(), &len, 4);
            }
            CHECK_FALSE(decode(cut).has_value());
        }
    }
}

TEST_CASE("topic names follow [a-z0-9][a-z0-9_.-]{0,62}") {
    CHECK(validate_topic_name("sip.message").has_value());
    CHECK(validate_topic_name("0abc_d-e.f").has_value());
    CHECK(validate_topic_name(std::string(63, 'a')).has_value());
    CHECK_FALSE(validate_topic_name("").has_value());
    CHECK_FALSE(validate_topic_name(std::string(64, 'a')).has_value());
    CHECK_FALSE(validate_topic_name("Call.State").has_value());
    CHECK_FALSE(validate_topic_name(".hidden").has_value());
    CHECK_FALSE(validate_topic_name("a/b").has_value());
    auto e = validate_topic_name("bad name");
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error().code == Errc::invalid_topic_name);
    CHECK(e.error().message.find("bad name") != std::string::npos);
}

TEST_CASE("consumer-group messages round-trip; bad partitions, slots and positions are refused") {
    GroupAssign a{7, 3, 12, 5, {64, 128, 0, 0}, {640, 0, 0, 64}};
    auto am = decode(encode(Message{0, a}));
    REQUIRE(am.has_value());
    const auto& ga = std::get<GroupAssign>(am->body);
    CHECK(ga.member == 7);
    CHECK(ga.partition == 3);
    CHECK(ga.topic_id == 12);
    CHECK(ga.slot == 5);
    CHECK(ga.start[1] == 128);
    CHECK(ga.redeliver_until[0] == 640);
    CHECK(ga.redeliver_until[3] == 64);
    auto jm = decode(encode(Message{4, JoinGroup{"call.control", "session-workers", 32}}));
    REQUIRE(jm.has_value());
    CHECK(std::get<JoinGroup>(jm->body).group == "session-workers");
    CHECK(std::get<JoinGroup>(jm->body).partitions == 32);
    for (Body b : {Body{GroupOk{1, 8}}, Body{LeaveGroup{2}}, Body{GroupRevoke{2, 5}}, Body{GroupRelease{2, 5}}}) {
        auto r = decode(encode(Message{5, b}));
        REQUIRE(r.has_value());
        CHECK(r->body.index() == b.index());
        CHECK(type_of(r->body) == type_of(b));
    }

    auto refused = [](Body b, std::string_view says) {
        auto r = decode(encode(Message{1, b}));
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().code == Errc::malformed);
        CHECK_MESSAGE(r.error().message.find(says) != std::string::npos, r.error().message);
    };
    refused(GroupRevoke{1, kMaxPartitions}, "partition 128");
    refused(GroupAssign{1, 0, 1, layout::kMaxSubscribers, {}, {}}, "slot 64");
    refused(GroupAssign{1, 0, 1, 0, {8, 0, 0, 0}, {}}, "not 64-byte aligned");
    refused(GroupOk{1, 0}, "partitions 0");

    auto f = encode(Message{3, a});
    for (std::size_t n = kFrameHeaderSize; n < f.size(); ++n) {
        std::vector<std::byte> cut(f.begin(), f.begin() + std::ptrdiff_t(n));
        std::uint32_t len = std::uint32_t(cut.size());
        std::memcpy(cut.data(), &len, 4);
        CHECK_FALSE(decode(cut).has_value());
    }
}

TEST_CASE("group names follow [a-z0-9][a-z0-9_.-]{0,30}; partitions are named after their topic") {
    CHECK(validate_group_name("session-workers").has_value());
    CHECK_FALSE(validate_group_name("").has_value());
    CHECK_FALSE(validate_group_name(std::string(32, 'a')).has_value());
    auto e = validate_group_name("Workers");
    REQUIRE_FALSE(e.has_value());
    CHECK(e.error().message.find("group name 'Workers'") != std::string::npos);
    CHECK(partition_topic("call.control", 7) == "call.control.p7");
}
