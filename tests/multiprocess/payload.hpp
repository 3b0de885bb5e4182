// Deterministic test payloads: a record's size and every byte follow from (seed, sequence), so a
// subscriber in another process can verify what it received byte for byte without being told.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace rvoip::events::test {

inline std::uint64_t splitmix(std::uint64_t x) noexcept {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// size 0 means "vary": 1 byte to max_size, with both extremes hit regularly.
inline std::uint32_t payload_size(std::uint32_t size, std::uint32_t max_size, std::uint64_t seed, std::uint64_t seq) noexcept {
    if (size) return size;
    switch (seq % 16) {
    case 0: return 1;
    case 1: return max_size;
    default: return 1 + std::uint32_t(splitmix(seed ^ (seq * 31)) % max_size);
    }
}

inline void fill_payload(std::span<std::byte> out, std::uint64_t seed, std::uint64_t seq) noexcept {
    std::uint64_t state = splitmix(seed + seq);
    for (std::size_t i = 0; i < out.size(); i += 8) {
        state = splitmix(state);
        for (std::size_t k = 0; k < 8 && i + k < out.size(); ++k) out[i + k] = std::byte(state >> (8 * k));
    }
}

// Order-independent digest of a stream: the sum of each record's FNV-1a hash.
inline std::uint64_t record_hash(std::span<const std::byte> p) noexcept {
    std::uint64_t h = 1469598103934665603ull;
    for (auto b : p) h = (h ^ std::uint64_t(b)) * 1099511628211ull;
    return h;
}

}  // namespace rvoip::events::test
