// rvoip-bench limit: the fastest transfer of N-byte records between two processes on this machine, the
// ceiling that `throughput` is read against. A minimal single-producer single-consumer ring in a shared
// anonymous mapping, a forked producer and a forked consumer, both busy-polling; no broker, no library.
//
//   rvoip-bench limit --size 64 --seconds 2 --json
//
// The layout, what each side touches and the variants measured before it was chosen: limit.cpp.
#pragma once

#include <memory>

namespace CLI {
class App;
}

namespace rvoip::bench {

// Registers `limit` on `app`.
class LimitCommand {
public:
    explicit LimitCommand(CLI::App& app);
    ~LimitCommand();
    LimitCommand(const LimitCommand&) = delete;
    LimitCommand& operator=(const LimitCommand&) = delete;

    bool parsed() const;
    int run() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace rvoip::bench
