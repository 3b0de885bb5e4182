// One error vocabulary for the broker, the client library and the CLI.
//
// Outcomes that are part of normal life (full, timeout, lagged, broker away) are values, never exceptions.
// The numeric values travel on the wire (ErrorReply.code) and must never be renumbered: append only.
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace rvoip::events {

enum class Errc : std::uint16_t {
    ok = 0,
    // data plane outcomes
    full = 1,               // lane full and overflow policy is `fail`
    timeout = 2,            // blocked for longer than the timeout (publish `block` policy, receive_for)
    would_block = 3,        // try_receive found nothing
    lagged = 4,             // subscriber was evicted; it resumes at the tail
    event_too_large = 5,    // payload larger than the lane's max event size
    corrupt = 6,            // shared memory failed a bounds or magic check
    loan_outstanding = 7,   // a publisher holds one loan at a time
    // control plane outcomes
    broker_unavailable = 20,  // cannot connect, or the broker went away
    invalid_topic_name = 21,
    schema_mismatch = 22,
    malformed = 23,           // a control frame failed validation
    version_mismatch = 24,
    permission_denied = 25,
    no_such_topic = 26,
    limit_reached = 27,       // no free publisher/subscriber/doorbell slot
    invalid_argument = 28,
    not_connected = 29,
    internal = 30,
    closed = 31,              // the object was closed or moved from
    unsupported = 32,         // the running kernel lacks what the call needs
    lane_taken = 33,          // a lane another publisher holds alone, or one that cannot be had alone now
};

constexpr std::string_view to_string(Errc e) noexcept {
    switch (e) {
    case Errc::ok: return "ok";
    case Errc::full: return "full";
    case Errc::timeout: return "timeout";
    case Errc::would_block: return "would_block";
    case Errc::lagged: return "lagged";
    case Errc::event_too_large: return "event_too_large";
    case Errc::corrupt: return "corrupt";
    case Errc::loan_outstanding: return "loan_outstanding";
    case Errc::broker_unavailable: return "broker_unavailable";
    case Errc::invalid_topic_name: return "invalid_topic_name";
    case Errc::schema_mismatch: return "schema_mismatch";
    case Errc::malformed: return "malformed";
    case Errc::version_mismatch: return "version_mismatch";
    case Errc::permission_denied: return "permission_denied";
    case Errc::no_such_topic: return "no_such_topic";
    case Errc::limit_reached: return "limit_reached";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::not_connected: return "not_connected";
    case Errc::internal: return "internal";
    case Errc::closed: return "closed";
    case Errc::unsupported: return "unsupported";
    case Errc::lane_taken: return "lane_taken";
    }
    return "unknown";
}

constexpr bool is_known(std::uint16_t v) noexcept {
    return to_string(static_cast<Errc>(v)) != "unknown";
}

// A code plus a human message. Hot-path errors (full, timeout, would_block) carry an empty message, which
// std::string holds without allocating.
struct Error {
    Errc code = Errc::internal;
    std::string message;

    Error() = default;
    Error(Errc c) noexcept : code(c) {}  // NOLINT(google-explicit-constructor): `return Errc::full;`
    Error(Errc c, std::string m) : code(c), message(std::move(m)) {}

    // "schema_mismatch: topic 'call.state' carries ..." — context is prepended as errors move up.
    std::string what() const {
        std::string s(to_string(code));
        if (!message.empty()) {
            s += ": ";
            s += message;
        }
        return s;
    }
    Error context(std::string_view ctx) const {
        return Error(code, std::string(ctx) + (message.empty() ? "" : ": ") + message);
    }
    friend bool operator==(const Error& a, Errc b) noexcept { return a.code == b; }
};

template <class T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

inline std::unexpected<Error> fail(Errc c, std::string m = {}) { return std::unexpected<Error>(Error(c, std::move(m))); }

}  // namespace rvoip::events
