// proto::decode of arbitrary bytes. A frame that decodes must encode back to exactly its own bytes: the
// codec has one spelling per message, so nothing a peer sends is read differently from what it meant.
#include "proto/messages.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace rvoip::events;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::byte> frame(reinterpret_cast<const std::byte*>(data), size);
    const auto corr = proto::peek_correlation(frame);
    auto m = proto::decode(frame);
    if (!m) {
        const auto& e = m.error();
        if (e.code != Errc::malformed && e.code != Errc::version_mismatch) std::abort();
        if (e.message.empty()) std::abort();  // every refusal names what was wrong
        return 0;
    }
    if (m->correlation != corr) std::abort();
    const auto again = proto::encode(*m);
    if (again.size() != size || std::memcmp(again.data(), data, size) != 0) {
        std::fprintf(stderr, "%s: re-encoded frame differs (%zu bytes, was %zu)\n",
                     std::string(proto::to_string(proto::type_of(m->body))).c_str(), again.size(), size);
        std::abort();
    }
    return 0;
}
