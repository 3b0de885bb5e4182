// A new configuration while the broker serves: Broker::reload() and SIGHUP.
//
// Live: the access rules, the limits, the default lanes and the per-topic ones, the grace periods. They
// are read afresh by every request, so a change applies from the next one: a topic created after a
// reload gets the new lanes (existing rings keep theirs: they cannot be resized under their clients), a
// client dropped from the access rules is refused at its next request (slots it already holds stay: a
// mapping cannot be taken back), and a limit lowered below what is held refuses new requests only.
// Not live: what was bound or created at start (socket, its mode and group, shm prefix, segments,
// doorbells); a change there is logged as needing a restart and the running value stays.
#include "daemon/broker_impl.hpp"

#include <set>

#include <sys/eventfd.h>

namespace rvoip::events::daemon {
namespace {

std::string overflow_name(Overflow o) { return o == Overflow::block ? "block" : "fail"; }

// Lines of `from` that `to` lacks, and the other way round: "- line" and "+ line".
void diff_lines(const std::vector<std::string>& from, const std::vector<std::string>& to, std::string_view what,
                std::vector<std::string>& out) {
    const std::set<std::string> a(from.begin(), from.end()), b(to.begin(), to.end());
    for (const auto& l : a)
        if (!b.count(l)) out.push_back(std::string(what) + " removed: " + l);
    for (const auto& l : b)
        if (!a.count(l)) out.push_back(std::string(what) + " added: " + l);
}

std::vector<std::string> describe_topics(const std::vector<TopicLanes>& topics) {
    std::vector<std::string> out;
    for (const auto& t : topics) {
        std::string line = t.pattern;
        for (std::size_t l = 0; l < layout::kLanes; ++l)
            if (!t.lanes[l].empty()) line += " " + std::string(to_string(Priority(l))) + ":" + describe(t.lanes[l]);
        out.push_back(std::move(line));
    }
    return out;
}

// What differs between the live settings of `a` and `b`, one line each, named by configuration key.
std::vector<std::string> live_changes(const BrokerConfig& a, const BrokerConfig& b) {
    std::vector<std::string> out;
    auto changed = [&](std::string key, const std::string& from, const std::string& to) {
        if (from != to) out.push_back(key + ": " + from + " -> " + to);
    };
    if (a.access.enforced() != b.access.enforced())
        out.push_back(b.access.enforced() ? "access rules now enforced (" + b.access.origin() + ")"
                                          : "access rules no longer enforced: everyone who can reach the socket may do everything");
    diff_lines(a.access.describe_rules(), b.access.describe_rules(), "access rule", out);
    std::vector<std::pair<std::string_view, std::uint64_t>> before;
    for_each_limit(a.limits, [&](std::string_view key, auto v) { before.emplace_back(key, v); });
    std::size_t i = 0;
    for_each_limit(b.limits, [&](std::string_view key, auto v) {
        changed("limits." + std::string(key), std::to_string(before[i++].second), std::to_string(v));
    });
    for (std::size_t l = 0; l < layout::kLanes; ++l) {
        const auto& x = a.defaults[l];
        const auto& y = b.defaults[l];
        const std::string lane = "lanes." + std::string(to_string(Priority(l))) + ".";
        changed(lane + "capacity", format_size(x.capacity), format_size(y.capacity));
        changed(lane + "max_event", format_size(x.max_event), format_size(y.max_event));
        changed(lane + "overflow", overflow_name(x.overflow), overflow_name(y.overflow));
        changed(lane + "block_timeout_ms", std::to_string(x.block_timeout_ms), std::to_string(y.block_timeout_ms));
        changed(lane + "evict_after_ms", std::to_string(x.evict_after_ms), std::to_string(y.evict_after_ms));
    }
    diff_lines(describe_topics(a.topics), describe_topics(b.topics), "topic", out);
    changed("broker.reclaim_grace_ms", std::to_string(a.reclaim_grace_ms), std::to_string(b.reclaim_grace_ms));
    changed("broker.evict_grace_ms", std::to_string(a.evict_grace_ms), std::to_string(b.evict_grace_ms));
    changed("test_slot_reply_delay_ms", std::to_string(a.test_slot_reply_delay_ms), std::to_string(b.test_slot_reply_delay_ms));
    return out;
}

std::string mode_name(unsigned mode) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", mode);
    return buf;
}

// The settings a running broker cannot change: what differs, one line each.
std::vector<std::string> restart_changes(const BrokerConfig& a, const BrokerConfig& b) {
    std::vector<std::string> out;
    auto changed = [&](std::string_view key, const std::string& from, const std::string& to) {
        if (from != to) out.push_back(std::string(key) + ": " + from + " -> " + to + " needs a restart; " + from + " stays");
    };
    changed("broker.socket", a.socket_path, b.socket_path);
    changed("broker.socket_mode", mode_name(a.socket_mode), mode_name(b.socket_mode));
    changed("broker.socket_group", a.socket_group, b.socket_group);
    changed("broker.shm_prefix", a.shm_prefix, b.shm_prefix);
    auto backing = [](shm::Backing s) { return std::string(s == shm::Backing::sealed ? "sealed" : "named"); };
    changed("broker.segments", backing(a.segments), backing(b.segments));
    changed("broker.doorbells", std::to_string(a.doorbells), std::to_string(b.doorbells));
    changed("cleanup", a.cleanup_on_exit ? "yes" : "no", b.cleanup_on_exit ? "yes" : "no");
    return out;
}

}  // namespace

Status Broker::reload(BrokerConfig next) {
    if (auto ok = validate(next); !ok) return ok;
    return impl_->post_reload(std::move(next));
}

void Broker::on_hangup(std::function<Result<BrokerConfig>()> reread) { impl_->reread = std::move(reread); }

Status Broker::Impl::post_reload(BrokerConfig next) {
    std::unique_lock lock(reload_mutex);
    // Nobody serves (before run(), after it returned), or we are the loop: nothing runs concurrently.
    // run() takes the mutex to become the loop, so it waits for this apply.
    if (loop_thread == std::thread::id() || loop_thread == std::this_thread::get_id()) {
        apply(std::move(next));
        return {};
    }
    ReloadRequest request{std::move(next), std::nullopt};
    reloads.push_back(&request);
    std::uint64_t one = 1;
    (void)!::write(reload_fd, &one, sizeof one);
    reload_done.wait(lock, [&] { return request.done.has_value(); });
    return *request.done;
}

void Broker::Impl::serve_reloads() {
    std::uint64_t count;
    (void)!::read(reload_fd, &count, sizeof count);
    std::lock_guard lock(reload_mutex);
    for (ReloadRequest* r : reloads) {
        apply(std::move(r->next));
        r->done = Status{};
    }
    reloads.clear();
    reload_done.notify_all();
}

void Broker::Impl::end_reloads() {
    std::lock_guard lock(reload_mutex);
    loop_thread = std::thread::id();
    for (ReloadRequest* r : reloads) r->done = fail(Errc::broker_unavailable, "the broker stopped before it could reload");
    reloads.clear();
    reload_done.notify_all();
}

void Broker::Impl::hangup() {
    if (!reread) {
        log->warn("SIGHUP: this broker has no configuration to re-read; ignored");
        return;
    }
    log->info("SIGHUP: reloading the configuration");
    auto next = reread();
    if (next) {
        if (auto ok = validate(*next); !ok) next = std::unexpected(ok.error());
    }
    if (!next) {
        // A line per error (a configuration file's errors come one per line, each naming its line), then
        // the verdict: what a reader of the log greps for.
        const auto& why = next.error().message;
        for (std::size_t at = 0; at < why.size();) {
            const auto nl = std::min(why.find('\n', at), why.size());
            log->error("reload: {}", why.substr(at, nl - at));
            at = nl + 1;
        }
        log->error("configuration not reloaded, the running one stays");
        return;
    }
    apply(std::move(*next));
}

void Broker::Impl::apply(BrokerConfig next) {
    for (const auto& line : restart_changes(cfg, next)) log->warn("reload: {}", line);
    const auto changes = live_changes(cfg, next);
    cfg.access = std::move(next.access);
    cfg.limits = next.limits;
    cfg.defaults = next.defaults;
    cfg.topics = std::move(next.topics);
    cfg.reclaim_grace_ms = next.reclaim_grace_ms;
    cfg.evict_grace_ms = next.evict_grace_ms;
    cfg.test_slot_reply_delay_ms = next.test_slot_reply_delay_ms;
    shm_limit = effective_shm_limit(cfg.limits);
    monitor.set_grace(std::chrono::milliseconds(cfg.evict_grace_ms));
    for (const auto& line : changes) log->info("reload: {}", line);
    log->info("configuration reloaded: {} change(s)", changes.size());
}

}  // namespace rvoip::events::daemon
