// The processes rvoip-bench runs under its hidden `_child` subcommand, one role each:
//
//   publisher     throughput: publishes `size`-byte raw events in batches of `batch` for `seconds`
//   subscriber    throughput: receives everything, checks nothing was lost, times first to last event
//   pinger        latency: publishes a ping, waits for its pong, records the round trip
//   echoer        latency: receives a ping, records its one-way latency, answers with a pong
//   flood-pinger  flood: paced Critical pings, one phase without and one with a Low flood
//   flood-echoer  flood: receives pings (Critical) and flood (Low) from one topic, records ping latency
//   flooder       flood: publishes Low events in batches of 64 as fast as it can until told to stop
//   idler         idle: `threads` subscribers, each blocked in receive() on its own empty topic
//   opener        memory: opens publishers on more and more topics when told to
//   transport     callstorm: SIP messages and call setup/teardown, paced per 1 ms tick
//   session       callstorm: consumes those, publishes call states and media commands
//   media         callstorm: consumes media commands, publishes quality updates and RTP statistics
//   rtp-sender    rtp: 172-byte RTP packets for `calls` calls, one batch per 20 ms tick, step by step
//   rtp-receiver  rtp: drains them, checks each tick was drained before the next began
//
// Protocol with the parent (stdout/stdin pipes): print "ready" once attached; publishers and the pinger then
// wait for "go" on stdin (so nothing is published before every subscriber has joined: subscribers start at
// the tail); at the end print one "result key=value ..." line. Roles with phases or steps exchange more
// lines (see each role in roles.cpp). Errors go to stderr, exit status 1.
#pragma once

#include <cstdint>
#include <string>

namespace rvoip::bench {

// How a subscriber waits when nothing is ready (rvoip::events::WaitOptions):
//   spin       busy-poll, never park: one core per such process, the lowest latency
//   block      park on the futex at once: every event after a pause costs a wake-up
//   spin-park  the library's default: spin a little, then park, so idle consumers use no CPU
std::string_view valid_wait_modes();  // "spin, block, spin-park"
bool is_wait_mode(std::string_view mode);

// Every option of every role; each role reads the ones it needs. spawn_role (processes.cpp) turns these
// into `_child` arguments and main() (bench_main.cpp) parses them back: keep the three in step.
struct RoleOptions {
    std::string role;       // one of the roles above
    std::string socket;     // broker control socket
    std::string topic;      // throughput topic, the ping topic, a topic base name, or (callstorm) a name suffix
    std::string topic2;     // the pong topic
    std::uint32_t size = 64;
    std::uint32_t batch = 1;
    double seconds = 3;        // 0 for callstorm roles: run until the parent says "stop"
    std::uint64_t count = 0;   // latency samples kept
    std::uint64_t warmup = 0;  // latency samples thrown away first (flood: per phase)
    std::string wait = "spin";  // see valid_wait_modes()
    bool touch = false;         // subscribers read every payload byte, not only the bench's 16-byte header
    bool exclusive = false;     // the publisher holds its lane alone (PublisherOptions::exclusive_lanes)
    std::uint64_t capacity = 8u << 20;
    int id = 0;
    int publishers = 1;            // how many end markers a subscriber waits for
    std::int64_t interval_ns = 0;  // flood-pinger: time between pings
    int threads = 1;               // idler: subscribers (one thread each) in this process
    std::uint64_t calls = 0;       // callstorm: concurrent calls modelled
    bool per_subscription = false;  // callstorm session: a thread per subscription instead of one WaitSet
};

// What every child process (these roles, the soak's) says: its label prefixes its messages on stderr
// ("rvoip-bench[publisher 1]: ..."), protocol lines go to the parent on stdout.
extern std::string g_child_label;
int report_error(const std::string& msg);  // returns 1, the exit status of a failed role
void say(const std::string& line);

// Runs the role; returns the process exit status.
int run_role(const RoleOptions& o);

}  // namespace rvoip::bench
