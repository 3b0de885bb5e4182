// rvoip-eventd's configuration file: TOML (Debian's toml11), /etc/rvoip-events/eventd.toml unless
// --config names another; systemd/eventd.toml is the commented example with every key at its default.
//
//   [broker]   socket, socket_mode, socket_group, shm_prefix, segments, log_level, doorbells,
//              reclaim_grace_ms, evict_grace_ms
//   [limits]   max_connections, max_topics, max_{topics,publishers,subscribers}_per_client,
//              max_shm_bytes, max_lane_bytes, max_event_bytes, max_fds
//   [lanes.critical|high|normal|low]   capacity, max_event, overflow, block_timeout_ms, evict_after_ms
//   [[topic]]  pattern, lanes.<lane>.<same keys>: settings fixed for the topics the pattern matches
//   [[access]] pattern, rights, who: the access rules (daemon/access.hpp); `access = []` enforces none
//
// Precedence: built-in defaults < this file < command-line flags. read_config() starts from the
// defaults it is given and replaces what the file sets; main.cpp then applies the flags it was given,
// at start and at every SIGHUP. Every key is known: an unknown one (a typo) is an error, as is a value
// of the wrong type or out of range, each with its line. A syntax error ends the reading at its line
// (TOML cannot be read past one); every other error is collected, so one --check-config lists them all.
#pragma once

#include "daemon/broker.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rvoip::events::daemon {

inline constexpr const char* kDefaultConfigPath = "/etc/rvoip-events/eventd.toml";

// Everything the daemon reads: the broker's settings and the daemon process's own.
struct DaemonConfig {
    BrokerConfig broker;
    std::string log_level = "info";  // trace, debug, info, warn, error, off
    std::string segments = "auto";   // auto, sealed, named: main.cpp decides BrokerConfig::segments from it
    std::uint64_t max_fds = 0;       // RLIMIT_NOFILE soft limit; 0: raise it to the hard limit
    std::string metrics_listen;      // ADDRESS:PORT of the metrics endpoint (daemon/metrics.hpp); empty: none
};

struct ConfigError {
    std::uint32_t line = 0;  // 1-based; 0: the file as a whole (it cannot be read)
    std::string message;
};

struct ConfigFile {
    std::string origin;  // the path, in messages
    std::string text;
    DaemonConfig config;              // the defaults with what the file sets; meaningless with errors
    std::vector<ConfigError> errors;  // in line order
    bool ok() const noexcept { return errors.empty(); }
    // "origin:line: message" per error, each followed by its line of the file, quoted.
    std::string explain() const;
    // All errors as one Errc::invalid_argument, "origin:line: message" per line (for the log: no quotes).
    Error error() const;
};

ConfigFile parse_config(std::string text, std::string origin, DaemonConfig defaults);
// A file that cannot be read is one error at line 0.
ConfigFile read_config(const std::string& path, DaemonConfig defaults);

// "0660" -> 0660; nullopt for anything but an octal mode up to 0777.
std::optional<unsigned> parse_mode(std::string_view s);

}  // namespace rvoip::events::daemon
