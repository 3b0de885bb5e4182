// rvoip-eventd's core: a single-threaded epoll control server. It owns the topics' segments, arbitrates
// publisher and subscriber slots, hands out descriptors and cleans up after clients. It is never on the
// data path: events flow between clients through the segments it created.
//
// Used by the daemon binary and, embedded on a private socket, by EventSystemBuilder::embedded().
#pragma once

#include "daemon/access.hpp"
#include "daemon/limits.hpp"
#include "daemon/topic_lanes.hpp"
#include "proto/errc.hpp"
#include "proto/layout.hpp"
#include "shm/segment.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rvoip::events::daemon {

// Holds sealed segments across broker restarts: a memfd has no name a new broker could find it by. The
// daemon's keeper is systemd's file descriptor store (daemon/fdstore.cpp); an embedded broker has none,
// since it never outlives its process.
class SegmentKeeper {
public:
    virtual ~SegmentKeeper() = default;
    // What a previous broker left, as (name, descriptor) pairs; the descriptors are the caller's now.
    virtual std::vector<std::pair<std::string, int>> take() = 0;
    // Keeps a copy of `fd` under `name` (the caller keeps its own); false if the keeper refused it.
    virtual bool keep(const std::string& name, int fd) = 0;
    virtual void forget(const std::string& name) = 0;
};

// What the broker tells a service manager. The daemon fills these in with sd_notify(3) calls
// (daemon/main.cpp); an embedded broker leaves them empty, so the client library never needs libsystemd.
// Each is called on the loop's thread, from the loop itself, never per request.
struct ServiceHooks {
    // Called every `heartbeat_interval` by a timer in the event loop (WATCHDOG=1): a loop that hangs
    // stops calling it, which is what a watchdog is for. Zero or empty: no timer.
    std::chrono::microseconds heartbeat_interval{0};
    std::function<void()> heartbeat;
    // A line saying what the broker serves (STATUS=) after a change, at most once a second. The first
    // line, at start, is the caller's to send (Broker::status(), with READY=1).
    std::function<void(const std::string&)> status;
    // The stop has begun (STOPPING=1), before clients are told and anything is torn down; `why` says
    // what asked for it.
    std::function<void(const std::string& why)> stopping;
    // Every `report_interval`: the status and topics reports (rvoip-eventctl's JSON, every topic
    // included), rendered on the loop for an exporter that serves them from its own threads (the
    // metrics endpoint). Zero or empty: none.
    std::chrono::milliseconds report_interval{0};
    std::function<void(std::string status, std::string topics)> report;
};

struct BrokerConfig {
    std::string socket_path;
    std::string shm_prefix = "rvoip-events";
    std::uint32_t doorbells = 1024;
    bool cleanup_on_exit = false;  // remove the segments on a graceful stop (default: keep them)
    // Sealed segments (memfds: no client can truncate one) need a keeper to survive a restart; named ones
    // (/dev/shm files) survive by name but can be truncated by a client holding a writable descriptor.
    shm::Backing segments = shm::Backing::sealed;
    std::shared_ptr<SegmentKeeper> keeper;
    // Who may do what (daemon/access.hpp), from an --acl file or the configuration file's [[access]]
    // entries; default-constructed: everyone who can reach the socket may do everything.
    AccessRules access;
    // The control socket: its mode, and its group (empty: the group `rvoip-events` if it exists, else
    // the broker's own). The directory the broker creates for it gets the same group, mode 0750 (0700
    // under /tmp or $XDG_RUNTIME_DIR, where a broker serves its own user only).
    unsigned socket_mode = 0660;
    std::string socket_group;
    // After a restart, how long a live process whose slots were adopted has to reconnect and reclaim
    // them. Its subscriber slots are released after that (publishers stop waiting on them); its
    // publisher slots stay held until it exits, since it may still be publishing through them.
    std::uint32_t reclaim_grace_ms = 10'000;
    // Tests only: hold add_publisher/add_subscriber replies this long (a broker too slow for its client).
    std::uint32_t test_slot_reply_delay_ms = 0;
    // No subscriber is evicted within this long of joining (or of its adoption by a restarted broker): a
    // consumer that is still warming up is not a stuck one.
    std::uint32_t evict_grace_ms = 5000;
    Limits limits;  // daemon/limits.hpp
    ServiceHooks service;
    // Lane settings for topics created without explicit ones: [critical, high, normal, low].
    std::array<layout::LaneSettings, layout::kLanes> defaults = default_lanes();

    static std::array<layout::LaneSettings, layout::kLanes> default_lanes() {
        std::array<layout::LaneSettings, layout::kLanes> l{};
        // Lossless first: every lane makes a publisher wait up to a second for a slow subscriber. Topics
        // where a refusal is better than a stall ask for `fail` when they are created.
        // Eviction: never on Critical (its subscribers must see everything; a stuck one blocks its
        // publishers, counted). On the others a subscriber that held publishers for 500 ms is evicted:
        // shorter than the block timeout, so a stopped subscriber costs publishers one stall and never a
        // failed publish, and ten times a bad scheduling hiccup on a loaded host.
        // Sizes: for a bus of many event types (one topic each, most of them quiet), 1.5 MiB of rings per
        // topic, reserved at creation: 1,000 topics take 1.5 GiB of /dev/shm. Each ring still holds three
        // of the largest events (64 KiB), over a hundred 2 KiB SIP messages or thousands of small events.
        // The few hot topics (sip.message, rtp.*) get big rings from a [[topic]] pattern in the
        // configuration (systemd/eventd.toml shows how) or from what their creator asks for.
        l[0] = {256u << 10, 64 * 1024, Overflow::block, 0, 0, 1000, 0};
        l[1] = {256u << 10, 64 * 1024, Overflow::block, 0, 0, 1000, 500};
        l[2] = {512u << 10, 64 * 1024, Overflow::block, 0, 0, 1000, 500};
        l[3] = {512u << 10, 64 * 1024, Overflow::block, 0, 0, 1000, 500};
        return l;
    }
    // Lane settings fixed for topics by name pattern (the configuration file's [[topic]] entries): the
    // first match applies, before the access rules' `lanes` lines (daemon/topic_lanes.hpp).
    std::vector<TopicLanes> topics;
};

// What open() and reload() refuse: a prefix or doorbell count out of range, invalid default lanes or
// limits. The socket itself (its path, directory and group) is checked when it is bound.
Status validate(const BrokerConfig& cfg);

class Broker {
public:
    explicit Broker(BrokerConfig cfg);
    ~Broker();
    Broker(const Broker&) = delete;
    Broker& operator=(const Broker&) = delete;

    // Binds the socket and creates the doorbell segment. Fails if another broker listens on the path.
    Status open();
    // Serves until stop() is called or SIGINT/SIGTERM arrives (when handle_signals; SIGHUP then reloads,
    // see on_hangup). Returns the exit code.
    int run(bool handle_signals);
    // Thread-safe and async-signal-safe: asks run() to return.
    void stop() noexcept;
    // What the broker serves, in a line ("serving 3 topics (2 adopted), 5 clients"): after open(), for
    // the service manager's STATUS= at READY=1. Not thread-safe: before run(), or from its hooks.
    std::string status() const;

    // Applies what can change while clients are connected (daemon/reload.cpp): the access rules, the
    // limits, the default lanes and the per-topic ones (for topics created from then on), the grace
    // periods. Settings that need a restart (socket, its mode and group, shm prefix, segments,
    // doorbells) keep their running values; a change to one is logged as such. Every change is logged.
    // An invalid `next` changes nothing and is returned. Thread-safe: while run() serves, the change is
    // made on its thread and this call waits for it.
    Status reload(BrokerConfig next);
    // What SIGHUP does when run(true) handles signals: `reread` gives the next configuration (the
    // daemon re-reads its file), which is reloaded; a failure is logged and the running configuration
    // stays. Without it SIGHUP is logged and ignored. Call before run().
    void on_hangup(std::function<Result<BrokerConfig>()> reread);

    // The loop thread's view. From another thread, read only what a reload never changes (socket path,
    // shm prefix).
    const BrokerConfig& config() const noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace rvoip::events::daemon
