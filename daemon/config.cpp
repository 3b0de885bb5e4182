// The configuration file: TOML through toml11 (3.7 in Debian 12), which gives every value its line.
#include "daemon/config.hpp"

#include "shm/topic_map.hpp"

#include <toml.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include <grp.h>
#include <sys/un.h>

namespace rvoip::events::daemon {
namespace {

constexpr std::uint32_t kHourMs = 3'600'000;
constexpr std::array<std::string_view, layout::kLanes> kLaneNames{"critical", "high", "normal", "low"};
const std::initializer_list<std::string_view> kLaneKeys{"capacity", "max_event", "overflow", "block_timeout_ms", "evict_after_ms"};

std::string joined(std::initializer_list<std::string_view> words) {
    std::string s;
    for (auto w : words) s += (s.empty() ? "" : ", ") + std::string(w);
    return s;
}

std::string type_name(const toml::value& v) {
    switch (v.type()) {
    case toml::value_t::integer: return "an integer";
    case toml::value_t::string: return "a string";
    case toml::value_t::table: return "a table";
    case toml::value_t::array: return "an array";
    case toml::value_t::boolean: return "a boolean";
    case toml::value_t::floating: return "a floating-point number";
    default: return "a date or time";
    }
}

// Reads values into settings and collects what is wrong with them, each at its line. A value in error
// leaves its setting as it was, so reading goes on and finds the next error.
class Reader {
public:
    std::vector<ConfigError> errors;

    void error(const toml::value& at, std::string message) { errors.push_back({at.location().line(), std::move(message)}); }

    // `v` as a table whose keys are all in `known` (each unknown one is an error); null if it is no table.
    const toml::table* table(const toml::value& v, const std::string& name, std::initializer_list<std::string_view> known) {
        if (!v.is_table()) {
            error(v, name + ": expected a table, found " + type_name(v));
            return nullptr;
        }
        for (const auto& [key, value] : v.as_table())
            if (std::find(known.begin(), known.end(), key) == known.end())
                error(value, "unknown key '" + key + "'" + (name.empty() ? "" : name.ends_with("]") ? " in " + name : " in [" + name + "]") +
                                " (known: " + joined(known) + ")");
        return &v.as_table();
    }

    // An integer in [min, max].
    std::optional<std::uint64_t> integer(const toml::value& v, const std::string& name, std::uint64_t min, std::uint64_t max) {
        if (!v.is_integer()) {
            error(v, name + ": expected an integer, found " + type_name(v));
            return std::nullopt;
        }
        const std::int64_t x = v.as_integer();
        if (x < 0 || std::uint64_t(x) < min || std::uint64_t(x) > max) {
            error(v, name + ": " + std::to_string(x) + " is outside " + std::to_string(min) + ".." + std::to_string(max));
            return std::nullopt;
        }
        return std::uint64_t(x);
    }

    // Bytes: an integer, or a string such as "64K", "4M", "1G", in [min, max].
    std::optional<std::uint64_t> size(const toml::value& v, const std::string& name, std::uint64_t min, std::uint64_t max) {
        if (v.is_integer()) return integer(v, name, min, max);
        std::optional<std::uint64_t> bytes;
        if (v.is_string()) bytes = parse_size(v.as_string().str);
        if (!bytes) {
            error(v, name + ": expected a size in bytes (4096, \"64K\", \"4M\", \"1G\"), found " +
                         (v.is_string() ? "\"" + v.as_string().str + "\"" : type_name(v)));
            return std::nullopt;
        }
        if (*bytes < min || *bytes > max) {
            error(v, name + ": " + format_size(*bytes) + " is outside " + format_size(min) + ".." + format_size(max));
            return std::nullopt;
        }
        return bytes;
    }

    std::optional<std::string> string(const toml::value& v, const std::string& name) {
        if (v.is_string()) return v.as_string().str;
        error(v, name + ": expected a string, found " + type_name(v));
        return std::nullopt;
    }

    std::optional<std::string> choice(const toml::value& v, const std::string& name, std::initializer_list<std::string_view> allowed) {
        auto s = string(v, name);
        if (s && std::find(allowed.begin(), allowed.end(), *s) == allowed.end()) {
            error(v, name + ": '" + *s + "' is not one of " + joined(allowed));
            return std::nullopt;
        }
        return s;
    }

    template <class T>
    void set(std::optional<std::uint64_t> v, T& out) {
        if (v) out = T(*v);
    }

    void broker(const toml::value& v, DaemonConfig& c);
    void limits(const toml::value& v, DaemonConfig& c);
    void lane(const toml::value& v, const std::string& name, LaneOverride& out);
    void lanes(const toml::value& v, DaemonConfig& c);
    void topic(const toml::value& v, const std::string& name, DaemonConfig& c);
    void access(const toml::value& v, const std::string& name, AccessRules& rules);
};

void Reader::broker(const toml::value& v, DaemonConfig& c) {
    const auto* t = table(v, "broker", {"socket", "socket_mode", "socket_group", "shm_prefix", "segments", "log_level",
                                        "doorbells", "reclaim_grace_ms", "evict_grace_ms", "metrics_listen"});
    if (!t) return;
    auto& b = c.broker;
    for (const auto& [key, x] : *t) {
        const std::string name = "broker." + key;
        if (key == "socket") {
            auto s = string(x, name);
            if (s && (s->empty() || s->size() >= sizeof(sockaddr_un::sun_path)))
                error(x, name + ": a socket path is 1 to " + std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes");
            else if (s) b.socket_path = *s;
        } else if (key == "socket_mode") {
            // A string ("0660"): a TOML integer 0660 would be decimal 660; 0o660 is accepted too.
            std::optional<unsigned> mode;
            if (x.is_string()) mode = parse_mode(x.as_string().str);
            else if (x.is_integer() && x.as_integer() >= 0 && x.as_integer() <= 0777) mode = unsigned(x.as_integer());
            if (mode) b.socket_mode = *mode;
            else error(x, name + ": expected an octal mode as a string, such as \"0660\"");
        } else if (key == "socket_group") {
            auto s = string(x, name);
            if (s && !s->empty() && !::getgrnam(s->c_str())) error(x, name + ": no group named '" + *s + "'");
            else if (s) b.socket_group = *s;
        } else if (key == "shm_prefix") {
            auto s = string(x, name);
            const bool valid = s && !s->empty() && s->size() <= 100 && std::all_of(s->begin(), s->end(), [](char ch) {
                return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.';
            });
            if (s && !valid) error(x, name + ": '" + *s + "' is not 1-100 characters of [A-Za-z0-9_.-]");
            else if (s) b.shm_prefix = *s;
        } else if (key == "segments") {
            if (auto s = choice(x, name, {"auto", "sealed", "named"})) c.segments = *s;
        } else if (key == "log_level") {
            if (auto s = choice(x, name, {"trace", "debug", "info", "warn", "error", "off"})) c.log_level = *s;
        } else if (key == "doorbells") {
            set(integer(x, name, 1, layout::kMaxDoorbells), b.doorbells);
        } else if (key == "reclaim_grace_ms") {
            set(integer(x, name, 0, UINT32_MAX), b.reclaim_grace_ms);
        } else if (key == "metrics_listen") {
            // ADDRESS:PORT; whether it can be bound is known when the daemon starts.
            auto s = string(x, name);
            if (s && !s->empty() && s->find(':') == std::string::npos) error(x, name + ": expected ADDRESS:PORT, such as \"127.0.0.1:9464\"");
            else if (s) c.metrics_listen = *s;
        } else if (key == "evict_grace_ms") {
            set(integer(x, name, 0, layout::kMaxEvictAfterMs), b.evict_grace_ms);
        }
    }
}

void Reader::limits(const toml::value& v, DaemonConfig& c) {
    const auto* t = table(v, "limits", {"max_connections", "max_topics", "max_topics_per_client", "max_publishers_per_client",
                                        "max_subscribers_per_client", "max_shm_bytes", "max_lane_bytes", "max_event_bytes", "max_fds"});
    if (!t) return;
    for (const auto& [key, x] : *t) {
        const std::string name = "limits." + key;
        if (key == "max_fds") {
            set(integer(x, name, 0, UINT32_MAX), c.max_fds);
            continue;
        }
        for_each_limit(c.broker.limits, [&](std::string_view k, auto& field) {
            if (k != key) return;
            using T = std::remove_reference_t<decltype(field)>;
            std::uint64_t min = 1, max = std::numeric_limits<T>::max();
            if (k == "max_connections") max = kMaxConnectionsCeiling;
            if (k == "max_topics") max = kMaxTopicsCeiling;
            if (k == "max_shm_bytes") min = 0;  // 0: automatic
            if (k == "max_event_bytes") max = layout::kMaxEventLimit;
            const bool bytes = k.ends_with("_bytes");
            set(bytes ? size(x, name, min, max) : integer(x, name, min, max), field);
        });
    }
}

void Reader::lane(const toml::value& v, const std::string& name, LaneOverride& out) {
    const auto* t = table(v, name, kLaneKeys);
    if (!t) return;
    for (const auto& [key, x] : *t) {
        const std::string field = name + "." + key;
        if (key == "capacity") {
            if (auto s = size(x, field, layout::kMinCapacity, layout::kMaxCapacity)) {
                if (std::has_single_bit(*s)) out.capacity = *s;
                else error(x, field + ": " + format_size(*s) + " is not a power of two");
            }
        } else if (key == "max_event") {
            if (auto s = size(x, field, 1, layout::kMaxEventLimit)) out.max_event = std::uint32_t(*s);
        } else if (key == "overflow") {
            if (auto s = choice(x, field, {"block", "fail"})) out.overflow = *s == "block" ? Overflow::block : Overflow::fail;
        } else if (key == "block_timeout_ms") {
            if (auto ms = integer(x, field, 1, kHourMs)) out.block_timeout_ms = std::uint32_t(*ms);
        } else if (key == "evict_after_ms") {
            if (auto ms = integer(x, field, 0, layout::kMaxEvictAfterMs)) out.evict_after_ms = std::uint32_t(*ms);
        }
    }
}

void Reader::lanes(const toml::value& v, DaemonConfig& c) {
    const auto* t = table(v, "lanes", {kLaneNames[0], kLaneNames[1], kLaneNames[2], kLaneNames[3]});
    if (!t) return;
    TopicLanes file;
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        if (auto it = t->find(std::string(kLaneNames[l])); it != t->end()) lane(it->second, "lanes." + std::string(kLaneNames[l]), file.lanes[l]);
    c.broker.defaults = decide_lanes(c.broker.defaults, {}, &file);
    // The defaults are settings like any topic's: each lane must hold two of its largest records.
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        if (auto ok = shm::validate_lane(c.broker.defaults[l], l); !ok && t->count(std::string(kLaneNames[l])))
            error(t->at(std::string(kLaneNames[l])), ok.error().message);
}

void Reader::topic(const toml::value& v, const std::string& name, DaemonConfig& c) {
    const auto* t = table(v, name, {"pattern", "lanes"});
    if (!t) return;
    TopicLanes entry;
    if (auto it = t->find("pattern"); it == t->end()) error(v, name + ": no pattern (the topic names it applies to, as a glob)");
    else if (auto s = string(it->second, name + ".pattern")) entry.pattern = *s;
    if (auto it = t->find("lanes"); it != t->end()) {
        if (const auto* lt = table(it->second, name + ".lanes", {kLaneNames[0], kLaneNames[1], kLaneNames[2], kLaneNames[3]})) {
            for (std::size_t l = 0; l < layout::kLanes; ++l)
                if (auto x = lt->find(std::string(kLaneNames[l])); x != lt->end())
                    lane(x->second, name + ".lanes." + std::string(kLaneNames[l]), entry.lanes[l]);
        }
    }
    if (entry.pattern.empty()) return;
    // With the defaults ([lanes] is read before [[topic]]): settings that cannot make a ring would refuse
    // every topic the pattern names. Only the lanes it sets: the defaults' own errors are reported there.
    const auto lanes = decide_lanes(c.broker.defaults, {}, &entry);
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        if (auto ok = shm::validate_lane(lanes[l], l); !ok && !entry.lanes[l].empty())
            error(v, name + " '" + entry.pattern + "': " + ok.error().message);
    c.broker.topics.push_back(std::move(entry));
}

void Reader::access(const toml::value& v, const std::string& name, AccessRules& rules) {
    const auto* t = table(v, name, {"pattern", "rights", "who"});
    if (!t) return;
    auto strings = [&](const char* key) -> std::vector<std::pair<const toml::value*, std::string>> {
        auto it = t->find(key);
        if (it == t->end()) {
            error(v, name + ": no " + key);
            return {};
        }
        if (!it->second.is_array() || it->second.as_array().empty()) {
            error(it->second, name + "." + key + ": expected a non-empty array of strings");
            return {};
        }
        std::vector<std::pair<const toml::value*, std::string>> out;
        for (const auto& x : it->second.as_array())
            if (auto s = string(x, name + "." + key)) out.emplace_back(&x, *s);
        return out;
    };
    std::string pattern;
    if (auto it = t->find("pattern"); it == t->end()) error(v, name + ": no pattern (the topic names it applies to, as a glob)");
    else if (auto s = string(it->second, name + ".pattern")) pattern = *s;
    std::uint8_t rights = 0;
    for (const auto& [at, right] : strings("rights")) {
        const auto bit = AccessRules::right(right);
        if (!bit) error(*at, name + ".rights: unknown right '" + right + "' (publish, critical, subscribe, create)");
        rights |= bit;
    }
    std::vector<AccessRules::Principal> who;
    for (const auto& [at, text] : strings("who")) {
        auto p = AccessRules::principal(text);
        if (!p) error(*at, name + ".who: " + p.error().message);
        else who.push_back(std::move(*p));
    }
    if (!pattern.empty() && rights && !who.empty()) rules.add(pattern, rights, std::move(who));
}

// What toml11 says of a syntax error, without its own function names: "missing value after key-value
// separator '=' (expected value, but got nothing)". Its full report (with the underlined line) follows.
std::string syntax_message(const std::string& what) {
    std::string first = what.substr(0, what.find('\n'));
    if (first.starts_with("[error] ")) first.erase(0, 8);
    if (first.starts_with("toml::")) first.erase(0, first.find(": ") == std::string::npos ? 0 : first.find(": ") + 2);
    return "syntax error: " + first;
}

}  // namespace

std::optional<unsigned> parse_mode(std::string_view s) {
    unsigned mode = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), mode, 8);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size() || mode > 0777) return std::nullopt;
    return mode;
}

ConfigFile parse_config(std::string text, std::string origin, DaemonConfig defaults) {
    ConfigFile f{std::move(origin), std::move(text), std::move(defaults), {}};
    toml::value root;
    try {
        std::istringstream in(f.text);
        root = toml::parse(in, f.origin);
    } catch (const toml::syntax_error& e) {
        f.errors.push_back({e.location().line(), syntax_message(e.what())});
        return f;
    }
    Reader r;
    const auto* top = r.table(root, "", {"broker", "limits", "lanes", "topic", "access"});
    if (!top) {  // toml11 always returns a table; a guard, not a case
        f.errors = std::move(r.errors);
        return f;
    }
    auto& c = f.config;
    // [broker] and [limits] first, then [lanes], whose defaults [[topic]] entries are checked against.
    for (const char* key : {"broker", "limits", "lanes", "topic", "access"}) {
        auto it = top->find(key);
        if (it == top->end()) continue;
        const toml::value& v = it->second;
        if (v.is_table() && std::string_view(key) == "broker") r.broker(v, c);
        else if (v.is_table() && std::string_view(key) == "limits") r.limits(v, c);
        else if (v.is_table() && std::string_view(key) == "lanes") r.lanes(v, c);
        else if (std::string_view(key) == "topic" || std::string_view(key) == "access") {
            if (!v.is_array()) {
                r.error(v, std::string(key) + ": expected [[" + key + "]] entries, found " + type_name(v));
                continue;
            }
            // Present, even empty (`access = []`): the rules are enforced and grant only what they say.
            AccessRules rules = AccessRules::enforcing(f.origin);
            std::size_t n = 0;
            for (const auto& entry : v.as_array()) {
                const std::string name = std::string(key) + "[" + std::to_string(++n) + "]";
                if (std::string_view(key) == "topic") r.topic(entry, name, c);
                else r.access(entry, name, rules);
            }
            if (std::string_view(key) == "access") c.broker.access = std::move(rules);
        } else {
            r.error(v, std::string(key) + ": expected a table, found " + type_name(v));
        }
    }
    if (auto ok = validate(c.broker.limits); !ok && top->count("limits")) r.error(top->at("limits"), ok.error().message);
    f.errors = std::move(r.errors);
    std::stable_sort(f.errors.begin(), f.errors.end(), [](const auto& a, const auto& b) { return a.line < b.line; });
    return f;
}

ConfigFile read_config(const std::string& path, DaemonConfig defaults) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        const int e = errno;
        ConfigFile f{path, {}, std::move(defaults), {}};
        f.errors.push_back({0, "cannot read the configuration file: " + std::string(std::strerror(e))});
        return f;
    }
    std::stringstream text;
    text << in.rdbuf();
    return parse_config(text.str(), path, std::move(defaults));
}

std::string ConfigFile::explain() const {
    std::vector<std::string_view> lines;
    for (std::size_t at = 0; at <= text.size();) {
        const auto nl = text.find('\n', at);
        lines.push_back(std::string_view(text).substr(at, nl == std::string::npos ? std::string::npos : nl - at));
        if (nl == std::string::npos) break;
        at = nl + 1;
    }
    std::string out;
    for (const auto& e : errors) {
        out += origin + (e.line ? ":" + std::to_string(e.line) : "") + ": " + e.message + "\n";
        if (e.line && e.line <= lines.size()) out += "    " + std::to_string(e.line) + " | " + std::string(lines[e.line - 1]) + "\n";
    }
    return out;
}

Error ConfigFile::error() const {
    std::string text;
    for (const auto& e : errors) text += (text.empty() ? "" : "\n") + origin + (e.line ? ":" + std::to_string(e.line) : "") + ": " + e.message;
    return Error(Errc::invalid_argument, text);
}

}  // namespace rvoip::events::daemon
