// Who may do what on which topic: the broker's access rules (DESIGN §5).
//
// Identity comes from the control socket's peer credentials (SO_PEERCRED, SO_PEERGROUPS) only, never
// from anything a client says. Without a rules file every client that can reach the socket may do
// everything (the socket's mode and group are then the only gate). With one, nothing is allowed but
// what a rule grants; root and the broker's own user are always allowed (they can read the segments
// in /dev/shm anyway).
//
// The file (`rvoip-eventd --acl FILE`), one rule per line, `#` starts a comment:
//
//   # topic pattern   rights                         who
//   sip.*             publish,critical,create        user:sip-transport
//   sip.*             subscribe                      group:rvoip-media uid:1002
//   call.*            publish,subscribe              *
//   lanes sip.message capacity=1M,2M,4M,4M max_event=64K
//
// Patterns are fnmatch(3) globs over topic names. Rights: publish (High, Normal, Low), critical (the
// Critical lane as well), subscribe, create (be the first to open a topic: its schema and, unless a
// `lanes` line fixes them, its lane sizes). Who: user:NAME, group:NAME (primary or supplementary),
// uid:N, gid:N, or * (anyone who can connect). A `lanes` line fixes the ring sizes of matching topics:
// what their creator asks for is ignored (daemon/topic_lanes.hpp). Names are resolved when the file is
// loaded; an unknown name, right or setting refuses the whole file, naming the line.
//
// The configuration file's [[access]] entries (daemon/config.hpp) build the same rules through
// enforcing(), right() and principal(); its [[topic]] entries are the `lanes` lines' equivalent.
#pragma once

#include "daemon/topic_lanes.hpp"
#include "proto/errc.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

namespace rvoip::events::daemon {

enum Right : std::uint8_t { kPublish = 1, kCritical = 2, kSubscribe = 4, kCreate = 8, kAll = 15 };

// Who a client is, as the kernel tells it.
struct Peer {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary
};

class AccessRules {
public:
    struct Principal {
        enum Kind : std::uint8_t { anyone, uid, gid } kind = anyone;
        std::uint32_t id = 0;
        std::string text;  // as written ("user:sip-transport"), for logs
    };

    // Everything allowed to everyone (no rules file).
    AccessRules() = default;
    static Result<AccessRules> load(const std::string& path);
    static Result<AccessRules> parse(std::string_view text, const std::string& origin);
    // Enforced rules that grant nothing yet; add() grants. `origin` names where they come from, for logs.
    static AccessRules enforcing(std::string origin);
    void add(std::string pattern, std::uint8_t rights, std::vector<Principal> who);
    // One right by name (publish, critical, subscribe, create); critical implies publish. 0: no such right.
    static std::uint8_t right(std::string_view name);
    // "user:NAME", "group:NAME", "uid:N", "gid:N" or "*"; names resolved now. The error says what is wrong.
    static Result<Principal> principal(std::string_view who);

    bool enforced() const noexcept { return enforced_; }
    // The rights `who` has on `topic` (a union over matching rules).
    std::uint8_t rights(const Peer& who, std::string_view topic) const;
    // Whether `who` appears in any rule at all: a peer in none may not even say hello.
    bool known(const Peer& who) const;
    // Ring sizes fixed for `topic` by the first matching `lanes` line, if any.
    const TopicLanes* lanes(std::string_view topic) const { return find_topic_lanes(lanes_, topic); }

    std::size_t rule_count() const noexcept { return rules_.size(); }
    const std::string& origin() const noexcept { return origin_; }
    // Each rule and `lanes` line as one canonical line ("sip.* publish,critical user:sip-transport"): what a
    // reload compares to log the rules it added and removed.
    std::vector<std::string> describe_rules() const;

private:
    struct Rule {
        std::string pattern;
        std::uint8_t rights = 0;
        std::vector<Principal> who;
    };
    bool matches(const Principal& p, const Peer& who) const;
    bool privileged(const Peer& who) const;

    bool enforced_ = false;
    uid_t self_ = 0;
    std::string origin_;
    std::vector<Rule> rules_;
    std::vector<TopicLanes> lanes_;
};

// Text for logs and errors: "uid 1002 (media)".
std::string describe(const Peer& who);
std::string describe_rights(std::uint8_t rights);

}  // namespace rvoip::events::daemon
