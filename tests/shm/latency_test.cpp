// The sampled latency histogram of a subscriber slot: its buckets and the percentiles read from them.
#include "shm/latency.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <random>

using namespace rvoip::events;
using namespace rvoip::events::shm;

TEST_CASE("every latency lies below its bucket's end and at or above the previous bucket's end") {
    std::mt19937_64 rng(7);
    for (int i = 0; i < 100000; ++i) {
        const auto ns = std::int64_t(rng() >> (1 + rng() % 63));  // 0 .. 2^63 - 1
        const std::size_t b = latency_bucket(ns);
        REQUIRE(b < layout::kLatencyBuckets);
        if (b + 1 < layout::kLatencyBuckets) CHECK(std::uint64_t(ns) < latency_bucket_end_ns(b));
        if (b > 0) CHECK(std::uint64_t(ns) >= latency_bucket_end_ns(b - 1));
        // A bucket spans at most a quarter of its lower bound: the percentile error bound.
        if (b > 0 && b + 1 < layout::kLatencyBuckets)
            CHECK(latency_bucket_end_ns(b) - latency_bucket_end_ns(b - 1) <= latency_bucket_end_ns(b - 1) / 4);
    }
    CHECK(latency_bucket(-5) == 0);
    CHECK(latency_bucket(INT64_MAX) == layout::kLatencyBuckets - 1);
}

TEST_CASE("percentiles are the ends of the buckets holding those ranks") {
    LatencyHistogram h;
    CHECK(h.percentile_ns(0.5) == 0);  // no samples
    // 900 samples at 1 us, 99 at 100 us, 1 at 10 ms.
    h.counts[latency_bucket(1'000)] += 900;
    h.counts[latency_bucket(100'000)] += 99;
    h.counts[latency_bucket(10'000'000)] += 1;
    CHECK(h.samples() == 1000);
    const auto within = [](std::uint64_t got, std::uint64_t truth) { return got > truth && got <= truth + truth / 4 + 1; };
    CHECK(within(h.percentile_ns(0.5), 1'000));
    CHECK(within(h.percentile_ns(0.9), 1'000));
    CHECK(within(h.percentile_ns(0.95), 100'000));
    CHECK(within(h.percentile_ns(0.999), 100'000));
    CHECK(within(h.percentile_ns(1.0), 10'000'000));
}
