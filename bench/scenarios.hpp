// rvoip-bench's VoIP-shaped scenarios (the parent side; their processes are roles in roles.cpp):
//
//   flood      Critical ping latency on a topic, without and then with a Low flood on the same topic
//   idle       CPU used by N subscribers blocked on empty topics, and by the broker, over an interval
//   memory     the broker's RSS and the topic segments' bytes as topics are created
//   callstorm  100,000 concurrent calls' signalling and media control across three processes
//   rtp        the largest number of calls whose RTP packets (100 per call per second) one sender and
//              one receiver keep up with, optionally on top of the callstorm
//
// Each starts its own rvoip-eventd unless --socket is given, like throughput and latency. Methodology and
// JSON keys: bench/README.md.
#pragma once

#include "bench/processes.hpp"

#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace rvoip::bench {

// The options every subcommand takes: --size, --mode (one of `modes`; c.mode holds the default), --json,
// --socket, --eventd, --wrap-publisher, --verbose.
void add_common(CLI::App* cmd, Common& c, const std::vector<std::string>& modes, const std::string& mode_help);

// Registers the scenarios' subcommands on `app`; run_parsed() runs the one the command line named.
class ScenarioCommands {
public:
    explicit ScenarioCommands(CLI::App& app);
    ~ScenarioCommands();
    ScenarioCommands(const ScenarioCommands&) = delete;
    ScenarioCommands& operator=(const ScenarioCommands&) = delete;

    int run_parsed() const;

    struct Impl;  // the options and runners, in scenarios.cpp

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace rvoip::bench
