// Publish timestamps: the conversion from TSC ticks to CLOCK_MONOTONIC nanoseconds, whose calibration and
// inputs both come from segments every client maps read-write, so any pair must convert without a trap.
#include "shm/clock.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <initializer_list>
#include <limits>

using namespace rvoip::events::shm;

namespace {
volatile std::int64_t sink;  // the conversions below are computed, not optimised away

ClockCalibration tsc(std::uint64_t mult, std::uint32_t shift, std::uint64_t tsc_ref, std::int64_t mono_ref) {
    ClockCalibration c;
    c.kind = ClockKind::tsc;
    c.mult = mult;
    c.shift = shift;
    c.tsc_ref = tsc_ref;
    c.mono_ref = mono_ref;
    return c;
}
}  // namespace

TEST_CASE("a TSC calibration converts ticks to nanoseconds on both sides of its reference") {
    // 2 ticks per ns: mult / 2^shift = 0.5.
    const Clock c(tsc(1u << 19, 20, 1'000'000, 5'000'000'000));
    CHECK(c.kind() == ClockKind::tsc);
    CHECK(c.to_ns(1'000'000) == 5'000'000'000);
    CHECK(c.to_ns(3'000'000) == 5'001'000'000);
    CHECK(c.to_ns(0) == 4'999'500'000);  // a tick before the reference (another core's TSC, a hostile writer)
}

TEST_CASE("a monotonic or implausible calibration passes timestamps through unchanged") {
    CHECK(Clock().to_ns(123) == 123);
    CHECK(Clock(tsc(0, 20, 0, 0)).kind() == ClockKind::monotonic);   // no rate
    CHECK(Clock(tsc(1, 41, 0, 0)).kind() == ClockKind::monotonic);   // a shift no calibration makes
    CHECK(Clock(tsc(0, 41, 0, 0)).to_ns(-7) == -7);
}

TEST_CASE("extreme timestamps and calibrations convert without undefined behaviour") {
    // The fuzzer's find: a huge rate times a tick far from the reference overflowed a signed product.
    constexpr auto max64 = std::numeric_limits<std::int64_t>::max();
    constexpr auto min64 = std::numeric_limits<std::int64_t>::min();
    const Clock big(tsc(0xe500080000000000ull, 0, 0x1a1a1a1a1a1a1a1aull, max64));
    // Whatever these return is garbage in, garbage out; UBSan (the ASan tree halts on it) checks that
    // computing it is defined.
    for (std::int64_t raw : {std::int64_t(0), std::int64_t(-1), max64, min64}) sink = big.to_ns(raw);
    CHECK(big.to_ns(0x1a1a1a1a1a1a1a1a) == max64);  // at the reference: exactly its time
    const Clock wide(tsc(std::numeric_limits<std::uint64_t>::max(), 40, std::numeric_limits<std::uint64_t>::max(), min64));
    sink = wide.to_ns(0);  // far behind the reference
    sink = wide.to_ns(-1);
    CHECK(wide.to_ns(-1) == min64);  // at the reference
}
