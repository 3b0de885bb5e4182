// rvoip-bench soak: publishers and subscribers on one raw topic, all four lanes, for --seconds, while
// random publishers and subscribers are SIGKILLed and replaced; then every surviving subscriber's
// deliveries are checked against what was published (lost, duplicated, out of order, corrupt, Critical
// first) and the time to recover from each kill is reported. Definitions: bench/README.md, "soak".
//
//   soak.cpp        the parent: command line, broker, spawning, kills, the final accounting
//   soak_roles.cpp  the soak's child processes (soak-publisher, soak-subscriber)
//   soak_board.hpp  the shared board they keep their progress on (it survives SIGKILL) and the event header
//
// The children run under their own hidden subcommand, `_soak_child` (they need options the other roles
// do not: the board's descriptor, their slot, the seed, the publisher kind), with the same line protocol
// as the other roles: "ready" once attached, "result k=v ..." at the end.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace CLI {
class App;
}

namespace rvoip::bench {

struct SoakRoleOptions {
    std::string role;    // soak-publisher | soak-subscriber
    std::string socket;
    std::string topic;
    int board_fd = -1;   // the board's memfd, inherited
    std::uint32_t slot = 0;
    std::uint64_t seed = 0;
    std::uint32_t kind = 0;  // publisher kind (soak_board.hpp: Op)
    std::uint32_t kinds = 0xf;  // kinds it may mix in: bit k for kind k
    std::uint32_t hold_us = 2000;  // longest time a publisher holds a loan open on purpose
};

int run_soak_role(const SoakRoleOptions& o);

// Registers `soak` and the hidden `_soak_child` on `app`.
class SoakCommand {
public:
    explicit SoakCommand(CLI::App& app);
    ~SoakCommand();
    SoakCommand(const SoakCommand&) = delete;
    SoakCommand& operator=(const SoakCommand&) = delete;

    bool child_parsed() const;
    int run_child() const;
    bool parsed() const;
    int run() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace rvoip::bench
