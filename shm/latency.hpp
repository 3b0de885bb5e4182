// Internal: the sampled one-way latency histogram of a subscriber slot (layout::SubscriberSlot::latency).
//
// A subscriber takes a record's latency (its receive time minus the publish timestamp in the record)
// at most once per kLatencySampleNs of publish time: every record of a topic slower than ~100k events/s,
// and a steady 100k samples/s of a faster one, at one TSC read each, so the hot path of a busy
// subscriber pays a compare per record and nothing else. Samples land in log-linear buckets: four per
// power of two (each bucket spans a quarter of its octave, so a percentile read from them is within
// 25% of the truth, and reported as its bucket's upper bound: never optimistic).
#pragma once

#include "proto/layout.hpp"

#include <array>
#include <bit>
#include <cstdint>

namespace rvoip::events::shm {

constexpr std::int64_t kLatencySampleNs = 10'000;

// The bucket of a latency: 0 holds everything below 20 ns (and negative spans, from clocks that
// disagree), 127 everything from 2^36 ns (~69 s) on.
constexpr std::size_t latency_bucket(std::int64_t ns) noexcept {
    if (ns < 16) return 0;
    const unsigned e = 63u - unsigned(std::countl_zero(std::uint64_t(ns)));  // ns in [2^e, 2^(e+1)), e >= 4
    const std::size_t b = std::size_t(e - 4) * 4 + ((std::uint64_t(ns) >> (e - 2)) & 3);
    return b < layout::kLatencyBuckets ? b : layout::kLatencyBuckets - 1;
}

// The smallest latency bucket b + 1 holds: every latency counted in b is below it.
constexpr std::uint64_t latency_bucket_end_ns(std::size_t b) noexcept {
    const std::size_t n = b + 1;
    return std::uint64_t(4 + (n & 3)) << (n / 4 + 2);
}

static_assert(latency_bucket(16) == 0 && latency_bucket(19) == 0 && latency_bucket(20) == 1 && latency_bucket(32) == 4);
static_assert(latency_bucket_end_ns(0) == 20 && latency_bucket_end_ns(3) == 32 && latency_bucket_end_ns(4) == 40);
static_assert(latency_bucket(std::int64_t(1) << 40) == layout::kLatencyBuckets - 1);

// Counts copied out of a slot, and the percentiles read from them.
struct LatencyHistogram {
    std::array<std::uint64_t, layout::kLatencyBuckets> counts{};

    std::uint64_t samples() const noexcept {
        std::uint64_t n = 0;
        for (auto c : counts) n += c;
        return n;
    }
    // The upper bound of the bucket holding the q-quantile (0 < q <= 1); 0 when there are no samples.
    std::uint64_t percentile_ns(double q) const noexcept {
        const std::uint64_t n = samples();
        if (n == 0) return 0;
        auto rank = std::uint64_t(q * double(n) + 0.999999);  // the ceil(q n)-th smallest sample
        if (rank == 0) rank = 1;
        std::uint64_t seen = 0;
        for (std::size_t b = 0; b < counts.size(); ++b)
            if ((seen += counts[b]) >= rank) return latency_bucket_end_ns(b);
        return latency_bucket_end_ns(counts.size() - 1);
    }
};

// relaxed: the subscriber's single-writer counters; a report may see some buckets a sample older.
inline LatencyHistogram read_latency(const layout::SubscriberSlot& s) noexcept {
    LatencyHistogram h;
    for (std::size_t b = 0; b < h.counts.size(); ++b) h.counts[b] = s.latency[b].load(std::memory_order_relaxed);
    return h;
}

}  // namespace rvoip::events::shm
