// Internal to the protocol codec: the little-endian field writer and the checking reader that
// proto/messages.cpp and proto/group_messages.cpp encode and decode bodies with.
#pragma once

#include "proto/messages.hpp"

#include <bit>
#include <cstring>
#include <type_traits>

namespace rvoip::events::proto::codec {

// Little-endian field writer. The machines we run on are little endian; memcpy keeps it alignment-safe.
static_assert(std::endian::native == std::endian::little, "the wire format is little endian");

class Writer {
public:
    template <class T>
        requires std::is_arithmetic_v<T>
    void put(T v) {
        auto at = buf_.size();
        buf_.resize(at + sizeof v);
        std::memcpy(buf_.data() + at, &v, sizeof v);
    }
    void put_fixed(std::string_view s, std::size_t field) {  // NUL-padded fixed field
        auto at = buf_.size();
        buf_.resize(at + field);
        std::memcpy(buf_.data() + at, s.data(), std::min(s.size(), field));
    }
    void put_string(std::string_view s) {  // u16 length + bytes
        put<std::uint16_t>(static_cast<std::uint16_t>(std::min<std::size_t>(s.size(), 0xffff)));
        auto at = buf_.size();
        buf_.resize(at + std::min<std::size_t>(s.size(), 0xffff));
        std::memcpy(buf_.data() + at, s.data(), buf_.size() - at);
    }
    void put_fingerprint(const layout::Fingerprint& f) {
        put_fixed(f.name(), sizeof f.type_name);
        put(f.size);
        put(f.align);
        put(f.schema_version);
        put(static_cast<std::uint32_t>(f.kind));
    }
    void put_lanes(const std::array<layout::LaneSettings, layout::kLanes>& lanes) {
        for (auto& l : lanes) {
            put(l.capacity);
            put(l.max_event);
            put(static_cast<std::uint8_t>(l.overflow));
            put(l.evict);
            put(l.block_timeout_ms);
            put(l.evict_after_ms);
        }
    }
    std::vector<std::byte>& bytes() { return buf_; }

private:
    std::vector<std::byte> buf_;
};

class Reader {
public:
    explicit Reader(std::span<const std::byte> b) : b_(b) {}

    template <class T>
        requires std::is_arithmetic_v<T>
    Result<T> get(const char* field) {
        if (b_.size() - at_ < sizeof(T)) return fail(Errc::malformed, std::string("frame ends inside field '") + field + "'");
        T v;
        std::memcpy(&v, b_.data() + at_, sizeof v);
        at_ += sizeof v;
        return v;
    }
    Result<std::string> get_fixed(std::size_t field, const char* name) {
        if (b_.size() - at_ < field) return fail(Errc::malformed, std::string("frame ends inside field '") + name + "'");
        auto p = reinterpret_cast<const char*>(b_.data() + at_);
        auto len = ::strnlen(p, field);
        if (len == field) return fail(Errc::malformed, std::string("field '") + name + "' is not NUL-terminated");
        for (std::size_t i = len; i < field; ++i)
            if (p[i] != 0) return fail(Errc::malformed, std::string("field '") + name + "' has bytes after its NUL");
        at_ += field;
        return std::string(p, len);
    }
    Result<std::string> get_string(std::size_t max, const char* name) {
        auto n = get<std::uint16_t>(name);
        if (!n) return std::unexpected(n.error());
        if (*n > max) return fail(Errc::malformed, std::string("field '") + name + "' longer than " + std::to_string(max));
        if (b_.size() - at_ < *n) return fail(Errc::malformed, std::string("frame ends inside field '") + name + "'");
        std::string s(reinterpret_cast<const char*>(b_.data() + at_), *n);
        at_ += *n;
        return s;
    }
    Result<layout::Fingerprint> get_fingerprint() {
        layout::Fingerprint f;
        auto name = get_fixed(sizeof f.type_name, "fingerprint.type_name");
        if (!name) return std::unexpected(name.error());
        std::memcpy(f.type_name, name->data(), name->size());
        auto size = get<std::uint32_t>("fingerprint.size");
        auto align = get<std::uint32_t>("fingerprint.align");
        auto ver = get<std::uint32_t>("fingerprint.schema_version");
        auto kind = get<std::uint32_t>("fingerprint.kind");
        if (!size || !align || !ver || !kind) return fail(Errc::malformed, "frame ends inside the fingerprint");
        if (*kind != 1 && *kind != 2) return fail(Errc::malformed, "fingerprint.kind " + std::to_string(*kind) + " is not typed(1) or raw(2)");
        if (name->empty()) return fail(Errc::malformed, "fingerprint.type_name is empty");
        if (!printable(*name)) return fail(Errc::malformed, "fingerprint.type_name must be printable ASCII");
        if (*align != 0 && !layout::is_pow2(*align)) return fail(Errc::malformed, "fingerprint.align is not a power of two");
        f.size = *size;
        f.align = *align;
        f.schema_version = *ver;
        f.kind = static_cast<layout::Kind>(*kind);
        return f;
    }
    Result<std::array<layout::LaneSettings, layout::kLanes>> get_lanes() {
        std::array<layout::LaneSettings, layout::kLanes> lanes{};
        for (auto& l : lanes) {
            auto cap = get<std::uint64_t>("lane.capacity");
            auto max = get<std::uint32_t>("lane.max_event");
            auto ovf = get<std::uint8_t>("lane.overflow");
            auto ev = get<std::uint8_t>("lane.evict");
            auto to = get<std::uint32_t>("lane.block_timeout_ms");
            auto ea = get<std::uint32_t>("lane.evict_after_ms");
            if (!cap || !max || !ovf || !ev || !to || !ea) return fail(Errc::malformed, "frame ends inside lane settings");
            if (*ovf > 1) return fail(Errc::malformed, "lane.overflow " + std::to_string(*ovf) + " is not block(0) or fail(1)");
            l.capacity = *cap;
            l.max_event = *max;
            l.overflow = static_cast<Overflow>(*ovf);
            l.evict = *ev;
            l.block_timeout_ms = *to;
            l.evict_after_ms = *ea;
        }
        return lanes;
    }
    std::size_t remaining() const { return b_.size() - at_; }

private:
    std::span<const std::byte> b_;
    std::size_t at_ = 0;
};

template <class... R>
Status all_ok(const R&... r) {
    Status s;
    ((s = r ? s : Status(std::unexpected(r.error()))), ...);
    return s;
}

// The consumer-group messages (proto/group_messages.cpp).
void encode_body(Writer& w, const JoinGroup& m);
void encode_body(Writer& w, const GroupOk& m);
void encode_body(Writer& w, const LeaveGroup& m);
void encode_body(Writer& w, const GroupAssign& m);
void encode_body(Writer& w, const GroupRevoke& m);
void encode_body(Writer& w, const GroupRelease& m);
Result<Body> decode_group_body(MsgType t, Reader& r);

}  // namespace rvoip::events::proto::codec
