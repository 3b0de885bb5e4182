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
        const auto d = static_cast<__int128>(raw) - static_cast<__int128>(c_.tsc_ref);
        return c_.mono_ref + static_cast<std::int64_t>((d * static_cast<__int128>(c_.mult)) >> c_.shift);
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
