// Publish timestamps from the TSC, in CLOCK_MONOTONIC nanoseconds.
//
// clock_gettime costs ~25 ns under a hypervisor's clock source (kvm-clock here) — half of a whole
// publish. The TSC is read in a few ns, and on CPUs with an invariant TSC (constant_tsc + nonstop_tsc)
// it ticks at one rate on every core. The broker calibrates it once against CLOCK_MONOTONIC and writes
// the conversion into the doorbell segment, so every client converts the same way: timestamps taken in
// different processes are comparable to the nanosecond with each other, and follow CLOCK_MONOTONIC
// within the calibration's error (a few ppm). Without an invariant TSC, records carry clock_gettime.
#pragma once

#include <cstdint>
#include <ctime>
#include <x86intrin.h>

namespace rvoip::events::shm {

enum class ClockKind : std::uint32_t { monotonic = 0, tsc = 1 };

// The conversion, as it lies in the doorbell segment's header (written once, before any client maps it).
struct ClockCalibration {
    ClockKind kind = ClockKind::monotonic;
    std::uint32_t shift = 0;
    std::uint64_t mult = 0;      // ns = mono_ref + ((tsc - tsc_ref) * mult) >> shift
    std::uint64_t tsc_ref = 0;
    std::int64_t mono_ref = 0;
};
static_assert(sizeof(ClockCalibration) == 32);

inline std::int64_t monotonic_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

class Clock {
public:
    Clock() = default;
    explicit Clock(const ClockCalibration& c) noexcept : c_(c) {
        if (c_.kind != ClockKind::tsc || c_.mult == 0 || c_.shift > 40) c_.kind = ClockKind::monotonic;  // never trust shm
    }

    // What a publisher stores in a record: TSC ticks or monotonic ns, per the calibration.
    std::int64_t raw() const noexcept {
        return c_.kind == ClockKind::tsc ? static_cast<std::int64_t>(__rdtsc()) : monotonic_ns();
    }
    std::int64_t to_ns(std::int64_t raw) const noexcept {
        if (c_.kind != ClockKind::tsc) return raw;
        // Both the timestamp and the calibration come from shared memory: any pair must convert without
        // undefined behaviour. |d| and mult are below 2^64, so their product fits an unsigned __int128;
        // the sign and the offset are applied modulo 2^64 (a garbage input gives a garbage time, no trap).
        const std::uint64_t r = static_cast<std::uint64_t>(raw);
        const bool behind = r < c_.tsc_ref;
        const std::uint64_t d = behind ? c_.tsc_ref - r : r - c_.tsc_ref;
        const auto scaled = static_cast<std::uint64_t>((static_cast<unsigned __int128>(d) * c_.mult) >> c_.shift);
        const std::uint64_t ns = static_cast<std::uint64_t>(c_.mono_ref) + (behind ? 0 - scaled : scaled);
        return static_cast<std::int64_t>(ns);
    }
    // Nanoseconds from raw timestamp `from` to raw timestamp `to` (negative when `to` is earlier),
    // defined for any pair: `from` may be a peer's garbage; a span past 2^63 ns saturates.
    std::int64_t span_ns(std::int64_t from, std::int64_t to) const noexcept {
        const bool back = to < from;
        std::uint64_t d = back ? std::uint64_t(from) - std::uint64_t(to) : std::uint64_t(to) - std::uint64_t(from);
        if (c_.kind == ClockKind::tsc) {
            const auto scaled = (static_cast<unsigned __int128>(d) * c_.mult) >> c_.shift;
            d = scaled > std::uint64_t(INT64_MAX) ? std::uint64_t(INT64_MAX) : std::uint64_t(scaled);
        } else if (d > std::uint64_t(INT64_MAX)) {
            d = std::uint64_t(INT64_MAX);
        }
        return back ? -std::int64_t(d) : std::int64_t(d);
    }
    // Raw clock units in `ns` nanoseconds (ns >= 0), at least 1.
    std::int64_t raw_units(std::int64_t ns) const noexcept {
        if (c_.kind != ClockKind::tsc) return ns > 0 ? ns : 1;
        const auto units = (static_cast<unsigned __int128>(std::uint64_t(ns)) << c_.shift) / c_.mult;
        return units == 0 ? 1 : units > std::uint64_t(INT64_MAX) ? INT64_MAX : std::int64_t(units);
    }
    // Now, in the timestamps' timebase: compare Sample::timestamp_ns() with this.
    std::int64_t now_ns() const noexcept { return to_ns(raw()); }
    ClockKind kind() const noexcept { return c_.kind; }
    const ClockCalibration& calibration() const noexcept { return c_; }

private:
    ClockCalibration c_{};
};

// Broker: measures the TSC rate against CLOCK_MONOTONIC over `window_ns` (blocking), or returns a
// monotonic calibration when the CPU lacks an invariant TSC.
ClockCalibration calibrate_clock(std::int64_t window_ns = 20'000'000) noexcept;

}  // namespace rvoip::events::shm
