// The processes rvoip-bench runs under its hidden `_child` subcommand, one role each:
//
//   publisher   throughput: publishes `size`-byte raw events in batches of `batch` for `seconds`
//   subscriber  throughput: receives everything, checks nothing was lost, times first to last event
//   pinger      latency: publishes a ping, waits for its pong, records the round trip
//   echoer      latency: receives a ping, records its one-way latency, answers with a pong
//
// Protocol with the parent (stdout/stdin pipes): print "ready" once attached; publishers and the pinger then
// wait for "go" on stdin (so nothing is published before every subscriber has joined: subscribers start at
// the tail); at the end print one "result key=value ..." line. Errors go to stderr, exit status 1.
#pragma once

#include <cstdint>
#include <string>

namespace rvoip::bench {

struct RoleOptions {
    std::string role;       // publisher, subscriber, pinger, echoer
    std::string socket;     // broker control socket
    std::string topic;      // throughput topic, or the ping topic
    std::string topic2;     // the pong topic
    std::uint32_t size = 64;
    std::uint32_t batch = 1;
    double seconds = 3;
    std::uint64_t count = 0;   // latency samples kept
    std::uint64_t warmup = 0;  // latency samples thrown away first
    bool spin = true;          // subscribers busy-poll (true) or park on the futex at once (false)
    bool touch = false;        // subscribers read every payload byte, not only the bench's 16-byte header
    std::uint64_t capacity = 8u << 20;
    int id = 0;
    int publishers = 1;  // how many end markers a subscriber waits for
};

// Runs the role; returns the process exit status.
int run_role(const RoleOptions& o);

}  // namespace rvoip::bench
