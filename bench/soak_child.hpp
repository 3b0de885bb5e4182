// What the soak's two child processes share (soak_roles.cpp: the publisher and these helpers;
// soak_subscriber.cpp: the subscriber).
#pragma once

#include "bench/processes.hpp"
#include "bench/roles.hpp"
#include "bench/soak.hpp"
#include "bench/soak_board.hpp"
#include "rvoip/events.hpp"

#include <array>
#include <string>

namespace rvoip::bench::soak {

// Small lanes, so they wrap often and publishers meet them full; `block` with a generous timeout, so the
// topic is lossless and a timeout (retried) means a lane stayed full for 2 s.
constexpr std::array<std::uint64_t, kLanes> kCapacity = {64u << 10, 128u << 10, 256u << 10, 128u << 10};
constexpr std::uint32_t kMaxEvent = 8000;
constexpr std::chrono::milliseconds kBlockTimeout{2000};

rvoip::events::TopicOptions topic_options();
Expected<rvoip::events::EventSystem> connect(const SoakRoleOptions& o);

// report_error, say and the child's label: bench/roles.hpp.

// The board's memfd, inherited from the parent, mapped for the life of the process.
class MappedBoard {
public:
    static Expected<MappedBoard> map(int fd);
    MappedBoard() = default;
    MappedBoard(MappedBoard&& o) noexcept : base_(std::exchange(o.base_, nullptr)) {}
    ~MappedBoard();
    Board board() const noexcept { return Board::view(base_); }

private:
    void* base_ = nullptr;
};

int run_subscriber(const SoakRoleOptions& o);

}  // namespace rvoip::bench::soak
