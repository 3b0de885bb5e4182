#include "daemon/access.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

#include <fnmatch.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

namespace rvoip::events::daemon {
namespace {

std::vector<std::string> words(std::string_view line) {
    std::vector<std::string> out;
    std::istringstream in{std::string(line)};
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
    std::vector<std::string> out;
    for (std::size_t at = 0;;) {
        auto next = s.find(sep, at);
        out.emplace_back(s.substr(at, next == std::string_view::npos ? std::string_view::npos : next - at));
        if (next == std::string_view::npos) return out;
        at = next + 1;
    }
}

std::optional<std::uint32_t> number(std::string_view s) {
    std::uint32_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
    return v;
}

}  // namespace

Result<AccessRules> AccessRules::load(const std::string& path) {
    std::ifstream f(path);
    if (!f) return fail(Errc::invalid_argument, "cannot read access rules '" + path + "'");
    std::stringstream text;
    text << f.rdbuf();
    return parse(text.str(), path);
}

AccessRules AccessRules::enforcing(std::string origin) {
    AccessRules r;
    r.enforced_ = true;
    r.self_ = ::geteuid();
    r.origin_ = std::move(origin);
    return r;
}

void AccessRules::add(std::string pattern, std::uint8_t rights, std::vector<Principal> who) {
    rules_.push_back(Rule{std::move(pattern), rights, std::move(who)});
}

std::uint8_t AccessRules::right(std::string_view name) {
    if (name == "publish") return kPublish;
    if (name == "critical") return kPublish | kCritical;
    if (name == "subscribe") return kSubscribe;
    if (name == "create") return kCreate;
    return 0;
}

Result<AccessRules::Principal> AccessRules::principal(std::string_view who) {
    const auto colon = who.find(':');
    const std::string kind(who.substr(0, colon)), name(colon == std::string_view::npos ? std::string_view() : who.substr(colon + 1));
    Principal p;
    p.text = std::string(who);
    if (who == "*") {
        p.kind = Principal::anyone;
    } else if (kind == "uid" || kind == "gid") {
        auto v = number(name);
        if (!v) return fail(Errc::invalid_argument, "'" + p.text + "' is not a number");
        p.kind = kind == "uid" ? Principal::uid : Principal::gid;
        p.id = *v;
    } else if (kind == "user") {
        const passwd* pw = ::getpwnam(name.c_str());
        if (!pw) return fail(Errc::invalid_argument, "no user named '" + name + "'");
        p.kind = Principal::uid;
        p.id = pw->pw_uid;
    } else if (kind == "group") {
        const group* gr = ::getgrnam(name.c_str());
        if (!gr) return fail(Errc::invalid_argument, "no group named '" + name + "'");
        p.kind = Principal::gid;
        p.id = gr->gr_gid;
    } else {
        return fail(Errc::invalid_argument, "'" + p.text + "' is not user:NAME, group:NAME, uid:N, gid:N or *");
    }
    return p;
}

Result<AccessRules> AccessRules::parse(std::string_view text, const std::string& origin) {
    AccessRules r = enforcing(origin);
    std::size_t n = 0;
    for (const auto& raw : split(text, '\n')) {
        ++n;
        auto line = std::string_view(raw).substr(0, raw.find('#'));
        auto w = words(line);
        if (w.empty()) continue;
        auto bad = [&](const std::string& why) { return fail(Errc::invalid_argument, origin + ":" + std::to_string(n) + ": " + why); };
        if (w[0] == "lanes") {
            if (w.size() < 3) return bad("expected: lanes PATTERN capacity=C[,C,C,C] [max_event=M]");
            TopicLanes l;
            l.pattern = w[1];
            for (std::size_t i = 2; i < w.size(); ++i) {
                auto eq = w[i].find('=');
                auto key = w[i].substr(0, eq), value = eq == std::string::npos ? std::string() : w[i].substr(eq + 1);
                auto parts = split(value, ',');
                if (key != "capacity" && key != "max_event") return bad("unknown lane setting '" + key + "'");
                if (parts.size() != 1 && parts.size() != layout::kLanes) return bad(key + " takes one value or four");
                for (std::size_t lane = 0; lane < layout::kLanes; ++lane) {
                    auto v = parse_size(parts[parts.size() == 1 ? 0 : lane]);
                    if (!v) return bad("'" + w[i] + "' is not a size (4096, 64K, 4M, 1G)");
                    if (key == "capacity") l.lanes[lane].capacity = *v;
                    else if (*v > layout::kMaxEventLimit) return bad("max_event above 16M");
                    else l.lanes[lane].max_event = std::uint32_t(*v);
                }
            }
            r.lanes_.push_back(std::move(l));
            continue;
        }
        if (w.size() < 3) return bad("expected: PATTERN RIGHTS WHO... (or a lanes line)");
        std::uint8_t rights = 0;
        for (const auto& name : split(w[1], ',')) {
            const auto bit = right(name);
            if (!bit) return bad("unknown right '" + name + "' (publish, critical, subscribe, create)");
            rights |= bit;
        }
        std::vector<Principal> who;
        for (std::size_t i = 2; i < w.size(); ++i) {
            auto p = principal(w[i]);
            if (!p) return bad(p.error().message);
            who.push_back(std::move(*p));
        }
        r.add(w[0], rights, std::move(who));
    }
    return r;
}

bool AccessRules::matches(const Principal& p, const Peer& who) const {
    switch (p.kind) {
    case Principal::anyone: return true;
    case Principal::uid: return who.uid == p.id;
    case Principal::gid: return who.gid == p.id || std::find(who.groups.begin(), who.groups.end(), gid_t(p.id)) != who.groups.end();
    }
    return false;
}

bool AccessRules::privileged(const Peer& who) const { return who.uid == 0 || who.uid == self_; }

std::uint8_t AccessRules::rights(const Peer& who, std::string_view topic) const {
    if (!enforced_ || privileged(who)) return kAll;
    const std::string name(topic);
    std::uint8_t granted = 0;
    for (const auto& rule : rules_)
        if (::fnmatch(rule.pattern.c_str(), name.c_str(), 0) == 0 &&
            std::any_of(rule.who.begin(), rule.who.end(), [&](const Principal& p) { return matches(p, who); }))
            granted |= rule.rights;
    return granted;
}

bool AccessRules::known(const Peer& who) const {
    if (!enforced_ || privileged(who)) return true;
    return std::any_of(rules_.begin(), rules_.end(), [&](const Rule& rule) {
        return std::any_of(rule.who.begin(), rule.who.end(), [&](const Principal& p) { return matches(p, who); });
    });
}

std::vector<std::string> AccessRules::describe_rules() const {
    std::vector<std::string> out;
    for (const auto& rule : rules_) {
        std::string line = rule.pattern + " " + describe_rights(rule.rights);
        for (const auto& p : rule.who) line += " " + p.text;
        out.push_back(std::move(line));
    }
    for (const auto& l : lanes_) {
        std::string line = "lanes " + l.pattern;
        for (std::size_t lane = 0; lane < layout::kLanes; ++lane)
            line += std::string(" ") + std::string(to_string(Priority(lane))) + ":" + describe(l.lanes[lane]);
        out.push_back(std::move(line));
    }
    return out;
}

std::string describe(const Peer& who) {
    std::string s = "uid " + std::to_string(who.uid);
    if (const passwd* pw = ::getpwuid(who.uid)) s += std::string(" (") + pw->pw_name + ")";
    return s;
}

std::string describe_rights(std::uint8_t rights) {
    std::string s;
    for (auto [bit, name] : {std::pair{kPublish, "publish"}, {kCritical, "critical"}, {kSubscribe, "subscribe"}, {kCreate, "create"}})
        if (rights & bit) s += (s.empty() ? "" : ",") + std::string(name);
    return s.empty() ? "none" : s;
}

}  // namespace rvoip::events::daemon
