// What every peer benchmark shares: the command line, the parent that runs the two role processes, the role
// loops, and the JSON output. A peer only supplies a `System`: how to open one connection (`Link`) between the
// two processes, and how to create and remove whatever must exist before either process starts.
//
// The methodology is rvoip-bench's (bench/README.md), so the figures can be put side by side:
//   throughput  a publisher process sends `size`-byte messages for `seconds`; a subscriber process checks every
//               sequence number and times first to last message. The parent verifies the counts match.
//   latency     ping-pong between a pinger and an echoer; the echoer records one-way latency from the ping's
//               CLOCK_MONOTONIC send stamp, the pinger the round trip.
// Roles run as this binary again (fork+exec, hidden `_child` subcommand), never as threads.
#pragma once

#include "bench/processes.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace rvoip::bench::peers {

// The server side starts first (subscriber, echoer); the client side (publisher, pinger) starts once the
// server has said "ready", so a client may connect to what the server created.
enum class Side { server, client };

// What one run needs to know, in the parent and in both role processes.
struct RunSpec {
    std::string name;   // unique per run, for named IPC objects: "rvoip-peer-<pid>-<time>"
    std::string dir;    // private temporary directory for filesystem endpoints (removed after the run)
    std::uint32_t size = 64;
    std::uint32_t depth = 0;  // queue depth of the system (its meaning is the system's; 0 = its default)
    bool depth_given = false; // --depth was given: a system must not lower it (it may lower its own default)
    std::uint32_t batch = 1;  // messages per send_batch call (throughput); above 1 the link uses its batch form
    bool duplex = false;      // latency: both directions; throughput: client -> server only
};

struct LinkSpec : RunSpec {
    Side side = Side::server;
    bool spin = true;  // receive by polling without blocking (spin) or by blocking in the system's wait
};

// A received message: valid until the next receive on the same Link.
using Message = std::span<const std::byte>;

// One connection between the two role processes. Sends block while the system is full: backpressure, never a
// drop. Receives return nothing when no message is there (try) or the timeout passed (wait).
class Link {
public:
    virtual ~Link() = default;
    // Server side, after it said "ready": completes the connection (accept); most systems need nothing.
    virtual Done established() { return {}; }
    virtual Done send(Message msg) = 0;
    // One batch in the system's batch form (System::batching); only systems that have one override it.
    virtual Done send_batch(std::span<const Message>) { return failure("this system has no batch form"); }
    virtual Expected<std::optional<Message>> try_receive() = 0;
    virtual Expected<std::optional<Message>> wait_receive(std::chrono::milliseconds timeout) = 0;
    // The role is done with the last message received (zero-copy systems give its buffer back).
    virtual void release() {}
};

// Keeps the run's IPC objects alive in the parent; its destructor removes them. `finish` is called once the
// role processes are reaped and reports what could not be cleaned up (the run then fails).
class Resources {
public:
    virtual ~Resources() = default;
    virtual Done finish() { return {}; }
};

// The JSON output of rvoip-bench (bench/processes.hpp), so both print their figures the same way.
using Json = rvoip::bench::Json;

struct System {
    std::string name;              // "uds": the JSON's "system", and the prefix of our messages
    std::string transport;         // one line for the JSON: what exactly is measured
    std::uint32_t default_depth = 0;
    // How --batch N is sent, the way the system's users batch (see README); empty: the system has no batch form,
    // and --batch must be 1.
    std::string batching;
    int threads_per_process = 1;    // threads that do the work in each role process (zmq adds an I/O thread)
    // Parent: creates the run's shared objects (queues, a daemon) before any role process starts; may add
    // facts to the JSON (limits it read) and lower a default depth the machine cannot give (saying why in the
    // JSON). Null when a system needs nothing.
    std::function<Expected<std::unique_ptr<Resources>>(RunSpec&, Json&)> prepare;
    std::function<Expected<std::unique_ptr<Link>>(const LinkSpec&)> open;
};

// The whole program: parses the command line, then runs as the parent or as a role process.
int peer_main(int argc, char** argv, const System& system);

// The batch form of systems that carry whole buffers (a zmq frame, an iceoryx chunk, a stream socket's bytes):
// the messages back to back, each after its length as a 4-byte native integer, the way a user packs events of
// any size into one buffer.
constexpr std::size_t kFrameHeader = sizeof(std::uint32_t);
std::size_t framed_size(std::span<const Message> msgs) noexcept;
std::byte* write_frames(std::span<const Message> msgs, std::byte* out) noexcept;  // returns the end

// Reads such frames back out of a buffer; the views stay valid as long as the buffer does.
class FrameReader {
public:
    explicit FrameReader(std::size_t max_message) : max_(max_message) {}
    void reset(std::span<const std::byte> bytes) noexcept {
        bytes_ = bytes;
        pos_ = 0;
    }
    // The next whole frame; nothing when the rest is shorter than one (a stream's partial frame); an error when a
    // length exceeds the largest message.
    Expected<std::optional<Message>> next();
    std::span<const std::byte> rest() const noexcept { return bytes_.subspan(pos_); }

private:
    std::size_t max_;
    std::span<const std::byte> bytes_;
    std::size_t pos_ = 0;
};

// For the systems' code.
std::string errno_text(const std::string& what);  // "what: strerror(errno)"
std::int64_t now_ns() noexcept;                    // CLOCK_MONOTONIC: one clock for all processes
// Waits until `ready()` holds, polling every millisecond, up to `timeout`: for systems that connect
// asynchronously.
Done wait_until(const std::function<bool()>& ready, std::chrono::milliseconds timeout, const std::string& what);

}  // namespace rvoip::bench::peers
