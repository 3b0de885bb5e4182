// rvoip-bench scale: many topics on the broker's defaults. One publisher process publishes on every one
// of --topics topics and --subscribers processes subscribe to all of them, with no lane options from any
// client, so the broker's default lanes make every topic (a bus of many event types). Reports how long
// the setup took (every process started, every topic created and every slot held), the broker's
// descriptors and the shared memory its segments reserve (from its status report, what
// `rvoip-eventctl status` shows), and whether every subscription received every event published to it.
//
//   rvoip-bench scale --topics 1000 --subscribers 8 --json     (make bench)
//
// Its processes run under a hidden subcommand of their own, `_scale_child`, with the line protocol of the
// other roles: "ready fds=N" once every topic is held, the publisher then waits for "go", and each ends
// with "result k=v ...". Subscribers take the topics in order and park on the one they wait for.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace CLI {
class App;
}

namespace rvoip::bench {

struct ScaleRoleOptions {
    std::string role;  // scale-publisher | scale-subscriber
    std::string socket;
    std::string topic;  // base name: the topics are <topic>.0 .. <topic>.<topics-1>
    std::uint32_t topics = 0;
    std::uint32_t events = 0;  // per topic
    std::uint32_t size = 64;
    std::string wait = "spin-park";
    int id = 0;
    double timeout_s = 300;  // a subscriber gives up on the events it still waits for after this long
};

int run_scale_role(const ScaleRoleOptions& o);

// Registers `scale` and the hidden `_scale_child` on `app`.
class ScaleCommand {
public:
    explicit ScaleCommand(CLI::App& app);
    ~ScaleCommand();
    ScaleCommand(const ScaleCommand&) = delete;
    ScaleCommand& operator=(const ScaleCommand&) = delete;

    bool child_parsed() const;
    int run_child() const;
    bool parsed() const;
    int run() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace rvoip::bench
