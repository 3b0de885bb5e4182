// rvoip-eventctl's subcommands. Each prints to stdout and returns the process's exit code.
#pragma once

#include "rvoip/events.hpp"

#include <nlohmann/json.hpp>

#include <string>

namespace rvoip::events::ctl {

// Exit codes: what went wrong, for scripts (also in --help).
enum Exit : int {
    kOk = 0,
    kFailed = 1,       // anything else (the message says what)
    kUsage = 2,        // bad arguments
    kUnreachable = 3,  // no broker on the socket, or it went away
    kNoSuchTopic = 4,
    kDenied = 5,       // the broker's access rules refuse it
    kLeft = 6,         // `tail` left rather than hold publishers back
};

// Prints "rvoip-eventctl: <what>" to stderr; the exit code that goes with the error.
int report_error(const Error& e);

Result<nlohmann::json> fetch(EventSystem& bus, proto::InspectWhat what, std::string_view topic = {});

// Adds "rate_per_s" to each topic of `now`, from the events published since `before` (same topic name).
void add_rates(nlohmann::json& now, const nlohmann::json& before);

int status(EventSystem& bus, bool json);
int topics(EventSystem& bus, bool json, double interval_s);
int topic(EventSystem& bus, const std::string& name, bool json);
int clients(EventSystem& bus, bool json);
int metrics(EventSystem& bus);

// live.cpp
int top(EventSystem& bus, int iterations);
int tail(EventSystem& bus, const std::string& name, const std::string& lane, std::uint64_t count);
int publish(EventSystem& bus, const std::string& name, const std::string& lane, const std::string& data);

// The user name of a uid ("uid N" if it has none).
std::string user_name(std::uint32_t uid);
// Topics' one-line rows, shared by `topics` and `top`.
std::string topics_table(const nlohmann::json& topics, std::size_t max_rows, std::size_t max_width);

}  // namespace rvoip::events::ctl
