// Writes the seed corpora of tests/fuzz/corpus/ (committed; run again after a change to the wire format
// or a shared layout): `fuzz_make_seeds <tests/fuzz/corpus>`.
#include "proto/messages.hpp"
#include "shm/topic_map.hpp"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

using namespace rvoip::events;

namespace {

std::string g_root;

void write(const std::string& target, const std::string& name, const std::vector<std::byte>& bytes) {
    std::ofstream f(g_root + "/" + target + "/" + name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

template <class T>
void put(std::vector<std::byte>& out, T v) {
    auto at = out.size();
    out.resize(at + sizeof v);
    std::memcpy(out.data() + at, &v, sizeof v);
}

layout::Fingerprint raw_fingerprint() {
    layout::Fingerprint fp;
    std::strcpy(fp.type_name, "bytes");
    fp.kind = layout::Kind::raw;
    return fp;
}

std::vector<proto::Message> one_of_each() {
    proto::OpenTopic o;
    o.topic = "calls";
    o.fingerprint = raw_fingerprint();
    o.lanes[2].capacity = 8192;
    o.lanes[2].max_event = 512;
    o.lanes[1].block_timeout_ms = 10;
    o.lanes[1].overflow = Overflow::fail;
    proto::TopicOk ok{1, true, {}};
    ok.lanes[0].capacity = 4096;
    proto::StatsReply sr;
    sr.clients = 2;
    sr.topics.push_back({"calls", 1, 1, 1, {64, 0, 128, 0}, 3});
    return {
        {1, proto::Hello{proto::kMinProtocolVersion, proto::kProtocolVersion, 42, "seed"}},
        {2, proto::HelloOk{}},
        {3, o},
        {4, ok},
        {5, proto::AddPublisher{1}},
        {6, proto::PublisherOk{1, 0, 0xb, 0x4}},
        {5, proto::AddPublisher{1, 0x4}},
        {7, proto::AddSubscriber{1, layout::kNoDoorbell, proto::StartAt::tail}},
        {8, proto::SubscriberOk{1, 0, 0, {0, 64, 0, 0}}},
        {9, proto::RemovePublisher{1, 0}},
        {10, proto::RemoveSubscriber{1, 0}},
        {11, proto::Ok{}},
        {12, proto::Stats{}},
        {13, sr},
        {14, proto::ErrorReply{Errc::no_such_topic, "no topic with id 9"}},
        {15, proto::ShutdownNotice{}},
        {16, proto::Reclaim{proto::Role::subscriber, "calls", 0x1234'5678'9abc'def1ull, 0, 3}},
        {17, proto::ReclaimOk{1}},
        {18, proto::Inspect{proto::InspectWhat::topic, "calls", 0}},
        {19, proto::InspectReply{12, 4, "\"a\":1}"}},
        {20, proto::JoinGroup{"calls", "workers", 2}},
        {21, proto::GroupOk{1, 2}},
        {22, proto::LeaveGroup{1}},
        {0, proto::GroupAssign{1, 1, 2, 0, {0, 64, 0, 0}, {128, 0, 0, 0}}},
        {0, proto::GroupRevoke{1, 1}},
        {23, proto::GroupRelease{1, 1}},
    };
}

void decode_seeds() {
    for (const auto& m : one_of_each())
        write("fuzz_decode", std::string(proto::to_string(proto::type_of(m.body))), proto::encode(m));
}

// [flags][u16 size][frame]...
void broker_seed(const std::string& name, std::uint8_t flags, const std::vector<proto::Message>& frames) {
    std::vector<std::byte> out{std::byte(flags)};
    for (const auto& m : frames) {
        auto f = proto::encode(m);
        put(out, std::uint16_t(f.size()));
        out.insert(out.end(), f.begin(), f.end());
    }
    write("fuzz_broker", name, out);
}

void broker_seeds() {
    proto::OpenTopic o;
    o.topic = "calls";
    o.fingerprint = raw_fingerprint();
    o.lanes[3].capacity = 1 << 20;  // cut to 16 KiB by the harness
    o.lanes[3].evict_after_ms = proto::kEvictNever;
    broker_seed("pub-sub-remove", 3,
                {{1, o}, {2, proto::AddPublisher{1}}, {3, proto::AddSubscriber{1, layout::kNoDoorbell, proto::StartAt::tail}},
                 {4, proto::AddSubscriber{1, 0, proto::StartAt::tail}}, {5, proto::Stats{}}, {6, proto::RemovePublisher{1, 0}},
                 {7, proto::RemoveSubscriber{1, 0}}});
    broker_seed("hello-then-reclaim", 2,
                {{1, proto::Hello{proto::kMinProtocolVersion, proto::kProtocolVersion, 1, "seed"}}, {2, o}, {3, proto::Reclaim{proto::Role::publisher, "calls", 5, 0, layout::kNoDoorbell}},
                 {4, proto::Hello{proto::kMinProtocolVersion, proto::kProtocolVersion, 1, "again"}}});
    broker_seed("inspect", 3,
                {{1, o}, {2, proto::AddPublisher{1}}, {3, proto::AddSubscriber{1, layout::kNoDoorbell, proto::StartAt::tail}},
                 {4, proto::Inspect{proto::InspectWhat::status, "", 0}}, {5, proto::Inspect{proto::InspectWhat::topics, "", 0}},
                 {6, proto::Inspect{proto::InspectWhat::topic, "calls", 0}}, {7, proto::Inspect{proto::InspectWhat::clients, "", 0}},
                 {8, proto::Inspect{proto::InspectWhat::topics, "", 100}}});
    proto::OpenTopic p0 = o, p1 = o;
    p0.topic = "calls.p0";
    p1.topic = "calls.p1";
    broker_seed("group", 3,
                {{1, p0}, {2, p1}, {3, proto::JoinGroup{"calls", "", 2}}, {4, proto::JoinGroup{"calls", "workers", 2}},
                 {5, proto::JoinGroup{"calls", "workers", 2}}, {6, proto::GroupRelease{1, 1}}, {7, proto::RemoveSubscriber{1, 0}},
                 {8, proto::LeaveGroup{2}}, {9, proto::JoinGroup{"calls", "workers", 3}}, {10, proto::LeaveGroup{1}}});
    broker_seed("exclusive", 3,
                {{1, o}, {2, proto::AddPublisher{1, 0x4}}, {3, proto::AddPublisher{1, 0x4}}, {4, proto::AddPublisher{1}},
                 {5, proto::AddPublisher{1, 0x2}}, {6, proto::Inspect{proto::InspectWhat::topic, "calls", 0}},
                 {7, proto::RemovePublisher{1, 0}}, {8, proto::AddPublisher{1, 0x1}}});
    broker_seed("no-hello", 0, {{1, proto::Stats{}}, {2, proto::AddPublisher{1}}, {3, proto::Ok{}}});
    broker_seed("replies-as-requests", 1, {{1, proto::TopicOk{}}, {2, proto::ErrorReply{Errc::internal, "x"}}, {3, proto::ShutdownNotice{}}});
}

// Ring program (fuzz_records.cpp, fuzz_ring_program): byte 0 < 0x80, then settings, key, starts, ops.
void records_seeds() {
    std::vector<std::byte> p{std::byte(0)};
    put<std::uint16_t>(p, 200);         // max_event
    put<std::uint8_t>(p, 1);            // publishers - 1
    put<std::uint8_t>(p, 1);            // subscribers - 1
    put<std::uint64_t>(p, 0x9e3779b97f4a7c15ull);  // record key
    for (int l = 0; l < 4; ++l) put<std::uint32_t>(p, std::uint32_t(l * 4096 + 3 * 64));  // starts
    put<std::uint8_t>(p, 0);            // raw topic
    for (int l = 0; l < 4; ++l) {
        for (int i = 0; i < 3; ++i) {   // three data records of 40 bytes
            put<std::uint8_t>(p, std::uint8_t(l | 0 << 2));
            put<std::uint16_t>(p, 40);
            put<std::uint8_t>(p, 1);
        }
        put<std::uint8_t>(p, std::uint8_t(l | 1 << 2));  // padding of 128
        put<std::uint16_t>(p, 128);
        put<std::uint8_t>(p, std::uint8_t(l | 0 << 2));  // and one more record
        put<std::uint16_t>(p, 100);
        put<std::uint8_t>(p, 0);
        put<std::uint8_t>(p, std::uint8_t(l | 4 << 2));  // a hole of two lines
        put<std::uint8_t>(p, 1);
        put<std::uint8_t>(p, std::uint8_t(l | 7 << 2));  // a dead publisher's intent over the hole
        put<std::uint8_t>(p, 0x40);
        put<std::uint8_t>(p, 2);
        put<std::uint16_t>(p, 5 * 128 + 3 * 64 - 3 * 64);
        put<std::uint16_t>(p, 128);
    }
    write("fuzz_records", "ring-records-padding-hole", p);

    // attach(): a formatted topic's and cursor segment's headers, all fix-ups on.
    std::array<layout::LaneSettings, layout::kLanes> lanes{};
    for (auto& l : lanes) l = {4096, 1024, Overflow::block, 0, 0, 0, 0};
    const auto dsize = shm::topic_data_size(lanes, 4);
    std::vector<std::byte> data(dsize), cursors(layout::cursors_size(8)), bells(layout::doorbells_size(4));
    shm::format_topic(data, "calls", 1, raw_fingerprint(), lanes, 4);
    shm::format_cursors(cursors, 1, 8);
    shm::format_doorbells(bells, 4);
    std::vector<std::byte> a{std::byte(0x80)};
    put<std::uint16_t>(a, 0x01ff);
    put<std::uint32_t>(a, std::uint32_t(dsize));
    put<std::uint16_t>(a, std::uint16_t(cursors.size()));
    put<std::uint16_t>(a, std::uint16_t(bells.size()));
    for (auto* seg : {&data, &cursors, &bells}) {
        std::vector<std::byte> chunk(512);
        std::memcpy(chunk.data(), seg->data(), std::min<std::size_t>(512, seg->size()));
        a.insert(a.end(), chunk.begin(), chunk.end());
    }
    put<std::int64_t>(a, 123456789);
    write("fuzz_records", "attach-formatted", a);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <tests/fuzz/corpus>\n", argv[0]);
        return 2;
    }
    g_root = argv[1];
    decode_seeds();
    broker_seeds();
    records_seeds();
    return 0;
}
