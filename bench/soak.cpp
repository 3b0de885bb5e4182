// rvoip-bench soak, the parent: starts the broker, the board and the first processes, kills and replaces
// processes at random for --seconds, stops the publishers, lets the subscribers drain and check, and
// reports. See soak.hpp; definitions of every figure: bench/README.md, "soak".
#include "bench/soak.hpp"

#include "bench/processes.hpp"
#include "bench/soak_board.hpp"
#include "rvoip/events.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <optional>
#include <regex>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

namespace rvoip::bench {
namespace {

using namespace rvoip::bench::soak;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct SoakOptions {
    Common common;  // --socket, --eventd, --json, --verbose
    double seconds = 30;
    std::uint64_t seed = 0;  // 0: from the clock (reported, so a run can be repeated)
    int publishers = 3;
    int subscribers = 2;
    int spared = 1;  // subscribers never killed
    int kill_interval_ms = 500;
    int max_recovery_ms = 1000;
    int max_stall_ms = 2000;
    std::uint32_t hold_us = 2000;
    std::vector<std::string> kinds = {"publish", "batch", "loan", "raw-loan"};
    std::uint32_t kind_mask = 0xf;
};

// Our stderr, and through it the broker's and every child's, passes through a pipe we read: lines go on to
// the real stderr, and the broker's error/critical log lines are counted, so they fail the run's exit
// status and not only a ctest regex. Started before the broker, so the broker inherits the pipe.
class StderrScan {
public:
    Done start() {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) return failure("pipe: " + std::string(std::strerror(errno)));
        saved_ = ::fcntl(2, F_DUPFD_CLOEXEC, 3);
        ::dup2(p[1], 2);  // fd 2 is not close-on-exec: children write into the pipe
        ::close(p[1]);
        rd_ = p[0];
        thread_ = std::thread([this] { pump(); });
        return {};
    }
    // Puts the real stderr back and waits (up to 2 s) for what the children wrote.
    void stop() {
        if (rd_ < 0) return;
        ::dup2(saved_, 2);
        stopping_ = true;
        thread_.join();
        ::close(rd_), ::close(saved_);
        rd_ = saved_ = -1;
    }
    ~StderrScan() { stop(); }
    int broker_errors() const { return broker_errors_.load(); }
    std::string first_error() const { return first_; }

private:
    void pump() {
        static const std::regex broker_error(R"(^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (error|critical) )");
        std::string buf;
        auto quiet_since = steady::now();
        for (;;) {
            pollfd p{rd_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) {
                if (stopping_ && steady::now() - quiet_since > 2s) return;  // a straggler still holds the pipe
                continue;
            }
            char chunk[4096];
            const ssize_t n = ::read(rd_, chunk, sizeof chunk);
            if (n <= 0 && !(n < 0 && errno == EINTR)) return;  // EOF: every writer is gone
            if (n <= 0) continue;
            (void)!::write(saved_, chunk, std::size_t(n));
            buf.append(chunk, std::size_t(n));
            for (std::size_t nl; (nl = buf.find('\n')) != std::string::npos; buf.erase(0, nl + 1)) {
                const std::string line = buf.substr(0, nl);
                if (std::regex_search(line, broker_error) && broker_errors_.fetch_add(1) == 0) first_ = line;
            }
            if (stopping_) quiet_since = steady::now();
        }
    }
    int saved_ = -1, rd_ = -1;
    std::thread thread_;
    std::atomic<bool> stopping_{false};
    std::atomic<int> broker_errors_{0};
    std::string first_;
};

// The board: a memfd every child inherits (not close-on-exec) and maps.
class BoardFile {
public:
    static Expected<BoardFile> create() {
        BoardFile f;
        f.fd_ = ::memfd_create("rvoip-soak-board", 0);
        if (f.fd_ < 0 || ::ftruncate(f.fd_, kBoardBytes) != 0) return failure("cannot create the soak board: " + std::string(std::strerror(errno)));
        f.base_ = ::mmap(nullptr, kBoardBytes, PROT_READ | PROT_WRITE, MAP_SHARED, f.fd_, 0);
        if (f.base_ == MAP_FAILED) return f.base_ = nullptr, failure("cannot map the soak board");
        f.board().header->magic = kBoardMagic;
        return f;
    }
    BoardFile() = default;
    BoardFile(BoardFile&& o) noexcept : fd_(std::exchange(o.fd_, -1)), base_(std::exchange(o.base_, nullptr)) {}
    ~BoardFile() {
        if (base_) ::munmap(base_, kBoardBytes);
        if (fd_ >= 0) ::close(fd_);
    }
    Board board() const noexcept { return Board::view(base_); }
    int fd() const noexcept { return fd_; }

private:
    int fd_ = -1;
    void* base_ = nullptr;
};

struct Proc {
    Child child;
    std::uint32_t slot = 0;
    bool publisher = false;
};

// True once the process has exited (it is left for reap() to collect).
bool exited(const Child& c) {
    siginfo_t info{};
    return ::waitid(P_PID, id_t(c.pid()), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == c.pid();
}

class Soak {
public:
    Soak(const SoakOptions& o, const Session& s, const BoardFile& f)
        : o_(o), s_(s), fd_(f.fd()), b_(f.board()), rng_{o.seed ^ 0x6b696c6c}, topic_("soak." + unique_suffix()) {}

    Done start();
    Done run();
    Done stop();
    int report(int broker_errors);

private:
    Expected<Proc> spawn(bool publisher);
    Done kill_one();
    Done watch(bool exits = true);
    Expected<std::vector<Fields>> collect(std::vector<Proc>& procs, steady::duration timeout);
    std::string state() const;
    double since_start(std::int64_t ns) const { return double(ns - start_ns_) / 1e9; }
    std::string recent_kills() const;
    std::string describe(const Kill& k) const;

    const SoakOptions& o_;
    const Session& s_;
    int fd_;
    Board b_;
    SplitMix rng_;
    std::string topic_;
    std::vector<Proc> pubs_, subs_;
    std::uint32_t next_kind_ = 0;
    std::int64_t start_ns_ = 0, end_ns_ = 0;
    struct DeadPublisher {
        std::uint32_t slot;
        std::int64_t retire_at_ns;
    };
    std::vector<DeadPublisher> unretired_;
    std::vector<Fields> sub_results_;
    std::vector<std::string> sub_labels_;
    int kills_[2] = {0, 0};
    int kills_in_loan_ = 0;
};

Expected<Proc> Soak::spawn(bool publisher) {
    auto& count = publisher ? b_.header->pub_slots : b_.header->sub_slots;
    const std::uint32_t slot = count.load();
    if (slot >= (publisher ? kMaxPubSlots : kMaxSubSlots)) return failure("the soak board has no free slot left (too many kills for its size)");
    std::uint32_t kind = 0;
    if (publisher) {
        do kind = next_kind_++ % kKinds;
        while (!(o_.kind_mask & (1u << kind)));
        b_.pubs[slot].kind.store(kind);
        b_.pubs[slot].state.store(kSpawned);
    } else {
        b_.subs[slot].state.store(kSpawned);
    }
    count.store(slot + 1);  // before the process exists: a subscriber that reads a smaller count joined before it
    const std::string role = publisher ? "soak-publisher" : "soak-subscriber";
    auto c = Child::spawn({.argv = {s_.exe, "_soak_child", "--role", role, "--socket", s_.socket, "--topic", topic_, "--board-fd",
                                    std::to_string(fd_), "--slot", std::to_string(slot), "--seed", std::to_string(o_.seed), "--kind",
                                    std::to_string(kind), "--kinds", std::to_string(o_.kind_mask), "--hold-us", std::to_string(o_.hold_us)},
                           .label = role + " " + std::to_string(slot)});
    if (!c) return failure(c.error());
    if (o_.common.verbose)
        std::fprintf(stderr, "rvoip-bench: soak: %s is pid %d%s%s\n", c->label().c_str(), int(c->pid()), publisher ? ", kind " : "",
                     publisher ? kind_name(kind) : "");
    return Proc{std::move(*c), slot, publisher};
}

Done Soak::start() {
    for (int i = 0; i < o_.subscribers + o_.publishers; ++i) {
        auto p = spawn(i >= o_.subscribers);
        if (!p) return failure(p.error());
        (p->publisher ? pubs_ : subs_).push_back(std::move(*p));
    }
    std::vector<Child*> all;
    for (auto* v : {&subs_, &pubs_})
        for (auto& p : *v) all.push_back(&p.child);
    if (auto r = wait_for_lines(all, "ready", steady::now() + 30s); !r) return failure(r.error());
    start_ns_ = now_ns();
    b_.header->phase.store(kRunning);
    return {};
}

// Fails when a process we did not kill has exited, or a subscriber received nothing for a long while
// (bounded: a lane that never recovers must end the run, not hang it). Retires dead publishers' slots.
Done Soak::watch(bool exits) {
    const std::int64_t t = now_ns();
    for (auto* v : {&pubs_, &subs_})
        for (auto& p : *v)
            if (exits && exited(p.child))
                return failure(p.child.label() + " (pid " + std::to_string(p.child.pid()) + ") ended during the run: " +
                               [&] { auto how = p.child.reap(0ms); return how.empty() ? std::string("exit status 0") : how; }());
    const std::int64_t hang_ns = std::max<std::int64_t>(10'000, 5 * std::int64_t(o_.max_stall_ms)) * 1'000'000;
    for (auto& p : subs_) {
        const SubSlot& s = b_.subs[p.slot];
        const std::int64_t since = std::max({s.last_event_ns.load(), s.ready_ns.load(), start_ns_});
        if (s.ready_ns.load() && t - since > hang_ns)
            return failure(p.child.label() + " received nothing for " + std::to_string((t - since) / 1'000'000) +
                           " ms while publishers were publishing (last delivery at t=" + std::to_string(since_start(since)) +
                           " s); " + recent_kills());
        if (const std::int64_t stuck = s.stuck_since_ns.load(); stuck && t - stuck > hang_ns) {
            std::string which = "the kill at t=" + std::to_string(since_start(stuck)) + " s";
            for (std::uint32_t k = 0; k < std::min(b_.header->kills.load(), kMaxKills); ++k)
                if (b_.kills[k].at_ns == stuck) which = "kill #" + std::to_string(k) + " (" + describe(b_.kills[k]) + ")";
            return failure(p.child.label() + ": a lane has not recovered from " + which + " for " + std::to_string((t - stuck) / 1'000'000) +
                           " ms although other publishers published in it since");
        }
    }
    std::erase_if(unretired_, [&](const DeadPublisher& d) {
        if (t < d.retire_at_ns) return false;
        b_.pubs[d.slot].retired.store(1);
        return true;
    });
    return {};
}

// "t=3.142 s soak-publisher 4 (kind loan) publishing in the high lane, holding a loan on the high lane"
std::string Soak::describe(const Kill& k) const {
    char buf[64];
    std::snprintf(buf, sizeof buf, "t=%.3f s ", since_start(k.at_ns));
    std::string s = buf;
    if (k.victim_kind == kSubscriberVictim) return s + "soak-subscriber " + std::to_string(k.victim_slot);
    s += "soak-publisher " + std::to_string(k.victim_slot) + " (kind " + kind_name(b_.pubs[k.victim_slot].kind.load()) + ")";
    if (k.op_lane) s += std::string(" publishing in the ") + lane_name(k.op_lane - 1) + " lane";
    if (k.in_loan) s += std::string(", in a loan on the ") + lane_name(k.in_loan - 1) + " lane";
    return s;
}

std::string Soak::recent_kills() const {
    const std::uint32_t n = std::min(b_.header->kills.load(), kMaxKills);
    if (!n) return "no kill so far";
    std::string s = "last kills:";
    for (std::uint32_t i = n > 3 ? n - 3 : 0; i < n; ++i) {
        const Kill& k = b_.kills[i];
        s += " #" + std::to_string(i) + " " + describe(k) + ";";
    }
    return s;
}

// SIGKILLs one random publisher or subscriber and starts its replacement. Two kills in five aimed at a
// publisher wait (up to 50 ms) for it to hold a loan, so some kills land between claim and commit.
Done Soak::kill_one() {
    const bool publisher = o_.spared >= int(subs_.size()) || rng_.chance(0.5);
    auto& v = publisher ? pubs_ : subs_;
    // The first --spared-subscribers subscribers are never killed: their checks span the whole run.
    const std::size_t i = rng_.between(publisher ? 0 : std::size_t(o_.spared), v.size() - 1);
    Proc& victim = v[i];
    if (publisher && rng_.chance(0.4)) {
        const auto until = steady::now() + 50ms;
        while (!b_.pubs[victim.slot].in_loan.load() && steady::now() < until) std::this_thread::sleep_for(50us);
    }
    const std::uint32_t k = b_.header->kills.load();
    if (k >= kMaxKills) return {};  // the log is full: no more kills (reported as the kill count)
    const std::uint32_t in_loan = publisher ? b_.pubs[victim.slot].in_loan.load() : 0;
    const std::uint32_t op_lane = publisher ? b_.pubs[victim.slot].op_lane.load() : 0;
    b_.kills[k] = Kill{now_ns(), publisher ? kPublisherVictim : kSubscriberVictim, victim.slot, in_loan, op_lane};
    b_.header->kills.store(k + 1);
    const pid_t pid = victim.child.pid();
    victim.child.signal(SIGKILL);
    (void)victim.child.reap(0ms);
    ++kills_[publisher ? 0 : 1];
    kills_in_loan_ += in_loan != 0;
    if (publisher) {
        PubSlot& dead = b_.pubs[victim.slot];
        dead.state.store(kKilled);
        // A claim it left open may block a lane until the broker pads it: within the recovery bound.
        if (dead.crit_open.load()) unretired_.push_back({victim.slot, b_.kills[k].at_ns + std::int64_t(o_.max_recovery_ms) * 1'000'000});
        else dead.retired.store(1);
    } else {
        b_.subs[victim.slot].state.store(kKilled);
    }
    if (o_.common.verbose)
        std::fprintf(stderr, "rvoip-bench: soak: kill #%u: %s, pid %d\n", k, describe(b_.kills[k]).c_str(), int(pid));
    auto p = spawn(publisher);
    if (!p) return failure(p.error());
    if (auto r = p->child.read_line(steady::now() + 15s); !r || *r != "ready")
        return failure(p->child.label() + " did not start: " + (r ? "said '" + *r + "'" : r.error()));
    v[i] = std::move(*p);
    return {};
}

Done Soak::run() {
    const auto interval = [&] { return std::int64_t(o_.kill_interval_ms) * 1'000'000 * std::int64_t(rng_.between(500, 1500)) / 1000; };
    end_ns_ = start_ns_ + std::int64_t(o_.seconds * 1e9);
    std::int64_t next_kill = start_ns_ + interval();
    for (std::int64_t t = now_ns(); t < end_ns_; t = now_ns()) {
        if (interrupted()) return failure("interrupted");
        if (auto st = watch(); !st) return failure(st.error() + state());
        if (o_.kill_interval_ms > 0 && t >= next_kill) {
            if (auto st = kill_one(); !st) return st;
            next_kill = now_ns() + interval();
        }
        std::this_thread::sleep_for(5ms);
    }
    return {};
}

// Publishers finish their operation and report; then the subscribers drain, check and report.
// Every process's "result" line, watching (with publishers) for stuck lanes meanwhile.
Expected<std::vector<Fields>> Soak::collect(std::vector<Proc>& procs, steady::duration timeout) {
    std::vector<std::optional<Fields>> got(procs.size());
    const auto deadline = steady::now() + timeout;
    for (;;) {
        std::vector<pollfd> fds;
        for (std::size_t i = 0; i < procs.size(); ++i) {
            Child& c = procs[i].child;
            if (!got[i] && c.has_line()) {
                const std::string line = c.take_line();
                if (!line.starts_with("result")) return failure(c.label() + " said '" + line + "', expected 'result ...'");
                auto f = Fields::parse(line, c.label());
                if (!f) return failure(f.error());
                got[i] = std::move(*f);
            }
            if (!got[i]) fds.push_back(pollfd{c.out_fd(), POLLIN, 0});
        }
        if (fds.empty()) break;
        if (interrupted()) return failure("interrupted");
        if (steady::now() >= deadline) return failure("timed out waiting for the results" + state());
        if (b_.phase() == kStopping)
            if (auto st = watch(false); !st) return failure(st.error() + state());
        if (::poll(fds.data(), fds.size(), 100) <= 0) continue;
        for (std::size_t i = 0, k = 0; i < procs.size(); ++i) {
            if (got[i]) continue;
            if (fds[k++].revents && !procs[i].child.fill() && !procs[i].child.has_line()) {
                auto how = procs[i].child.reap(1000ms);
                return failure(procs[i].child.label() + " stopped before reporting its result" + (how.empty() ? "" : " (" + how + ")") + state());
            }
        }
    }
    std::vector<Fields> out;
    for (auto& f : got) out.push_back(std::move(*f));
    return out;
}

// What every process and the broker say, for a failure message.
std::string Soak::state() const {
    std::string s = "\n  " + recent_kills();
    const std::int64_t t = now_ns();
    auto ago = [&](std::int64_t ns) { return ns ? std::to_string((t - ns) / 1'000'000) + " ms ago" : std::string("never"); };
    for (auto& p : subs_) {
        const SubSlot& x = b_.subs[p.slot];
        s += "\n  " + p.child.label() + ": delivered " + std::to_string(x.delivered.load()) + "; last delivery per lane:";
        for (std::uint32_t l = 0; l < kLanes; ++l) s += std::string(" ") + lane_name(l) + " " + ago(x.lane_last_ns[l].load());
        if (const auto stuck = x.stuck_since_ns.load()) s += "; a lane stuck since the kill at t=" + std::to_string(since_start(stuck)) + " s";
    }
    for (auto& p : pubs_) {
        const PubSlot& x = b_.pubs[p.slot];
        s += "\n  " + p.child.label() + " (kind " + kind_name(x.kind.load()) + "): published";
        for (std::uint32_t l = 0; l < kLanes; ++l) s += " " + std::to_string(x.published[l].load());
        if (x.op_lane.load()) s += std::string(", in an operation on the ") + lane_name(x.op_lane.load() - 1) + " lane";
        if (x.in_loan.load()) s += std::string(", in a loan on the ") + lane_name(x.in_loan.load() - 1) + " lane";
        s += ", " + std::to_string(x.timeouts.load()) + " timeouts";
    }
    auto bus = rvoip::events::EventSystemBuilder().socket_path(s_.socket).client_name("soak-stats").build();
    auto stats = bus ? bus->stats() : std::unexpected(bus.error());
    if (!stats) return s + "\n  broker stats: " + stats.error().what();
    for (auto& topic : stats->topics) {
        if (topic.topic != topic_) continue;
        s += "\n  broker: topic " + topic.topic + " has " + std::to_string(topic.publishers) + " publisher(s) (" +
             std::to_string(pubs_.size()) + " alive) and " + std::to_string(topic.subscribers) + " subscriber(s) (" +
             std::to_string(subs_.size()) + " alive); lane tails";
        for (auto tail : topic.tails) s += " " + std::to_string(tail);
    }
    return s;
}

Done Soak::stop() {
    b_.header->phase.store(kStopping);
    auto results = collect(pubs_, 60s);
    if (!results) return failure(results.error());
    for (std::size_t i = 0; i < pubs_.size(); ++i) {
        const Fields* f = &(*results)[i];
        const PubSlot& slot = b_.pubs[pubs_[i].slot];
        int l = 0;
        for (auto lane : {"critical", "high", "normal", "low"})
            if (std::uint64_t((*f)[lane]) != slot.published[l++].load())
                return failure(pubs_[i].child.label() + " reported other counts than its board slot holds");
        if (auto how = pubs_[i].child.reap(5s); !how.empty()) return failure(pubs_[i].child.label() + " " + how);
    }
    b_.header->phase.store(kDraining);
    auto subs = collect(subs_, 90s);
    if (!subs) return failure(subs.error());
    for (std::size_t i = 0; i < subs_.size(); ++i) {
        sub_results_.push_back(std::move((*subs)[i]));
        sub_labels_.push_back(subs_[i].child.label());
        if (auto how = subs_[i].child.reap(5s); !how.empty()) return failure(subs_[i].child.label() + " " + how);
    }
    return {};
}

std::int64_t ms_or_none(std::int64_t ns) { return ns < 0 ? -1 : (ns + 999'999) / 1'000'000; }

int Soak::report(int broker_errors) {
    std::uint64_t lanes[kLanes] = {}, timeouts = 0;
    const std::uint32_t npub = b_.header->pub_slots.load();
    for (std::uint32_t s = 0; s < npub; ++s) {
        for (std::uint32_t l = 0; l < kLanes; ++l) lanes[l] += b_.pubs[s].published[l].load();
        timeouts += b_.pubs[s].timeouts.load();
    }
    const std::int64_t published = std::int64_t(lanes[0] + lanes[1] + lanes[2] + lanes[3]);
    auto sum = [&](const char* k) {
        std::int64_t n = 0;
        for (auto& f : sub_results_) n += f[k];
        return n;
    };
    auto max_of = [&](const char* k) {
        std::int64_t m = -1;
        for (auto& f : sub_results_) m = std::max(m, f[k]);
        return m;
    };
    std::vector<std::int64_t> delivered;
    for (auto& f : sub_results_) delivered.push_back(f["delivered"]);
    const std::int64_t lost = sum("lost"), dup = sum("duplicated"), ooo = sum("out_of_order"), corrupt = sum("corrupt");
    const std::int64_t violations = sum("critical_order_violations");
    const std::int64_t recovery = ms_or_none(max_of("max_recovery_pub_ns")), sub_recovery = ms_or_none(max_of("max_recovery_sub_ns"));
    const std::int64_t stall = ms_or_none(max_of("max_stall_ns"));

    std::vector<std::string> why;
    auto must_be_zero = [&](std::int64_t v, const char* what) {
        if (v) why.push_back(std::to_string(v) + " " + what);
    };
    must_be_zero(lost, "event(s) lost");
    must_be_zero(dup, "event(s) duplicated");
    must_be_zero(ooo, "event(s) out of order");
    must_be_zero(corrupt, "corrupt event(s)");
    must_be_zero(violations, "Critical order violation(s)");
    must_be_zero(broker_errors, "error/critical line(s) in the broker's log");
    must_be_zero(sum("unrecovered"), "lane(s) that never recovered from a kill");
    if (recovery > o_.max_recovery_ms) why.push_back("a recovery after a publisher kill took " + std::to_string(recovery) + " ms");
    if (sub_recovery > o_.max_recovery_ms) why.push_back("a recovery after a subscriber kill took " + std::to_string(sub_recovery) + " ms");
    if (stall > o_.max_stall_ms) why.push_back("a subscriber went " + std::to_string(stall) + " ms without an event while publishers published");
    if (published == 0) why.push_back("nothing was published");

    if (o_.common.json) {
        Json j;
        j.str("scenario", "soak").real("seconds", o_.seconds, 1).num("seed", std::int64_t(o_.seed));
        j.num("publishers", o_.publishers).num("subscribers", o_.subscribers).num("spared_subscribers", std::min(o_.spared, o_.subscribers));
        j.num("kill_interval_ms", o_.kill_interval_ms);
        {
            std::string kinds;
            for (std::uint32_t i = 0; i < kKinds; ++i)
                if (o_.kind_mask & (1u << i)) kinds += (kinds.empty() ? "" : ",") + std::string(kind_name(i));
            j.str("kinds", kinds);
        }
        j.num("published", published).obj("published_per_lane", Json().num("critical", std::int64_t(lanes[0])).num("high", std::int64_t(lanes[1]))
                                                                     .num("normal", std::int64_t(lanes[2])).num("low", std::int64_t(lanes[3])));
        j.num("delivered", sum("delivered")).nums("delivered_per_subscriber", delivered);
        j.num("lost", lost).num("duplicated", dup).num("out_of_order", ooo).num("corrupt", corrupt).num("critical_order_violations", violations);
        j.num("critical_checks", sum("critical_checks")).num("critical_unchecked", sum("critical_skipped"));
        j.num("violations_then_critical", sum("violations_then_critical"));
        j.num("kills", kills_[0] + kills_[1]).num("publisher_kills", kills_[0]).num("subscriber_kills", kills_[1]).num("kills_in_loan", kills_in_loan_);
        j.num_or_null("max_recovery_ms", recovery).num_or_null("max_recovery_after_subscriber_kill_ms", sub_recovery);
        j.num("recovery_measurements", sum("recoveries")).num("unrecovered", sum("unrecovered")).num_or_null("max_stall_ms", stall);
        j.num("publish_timeouts", std::int64_t(timeouts)).num("unconfirmed", sum("unconfirmed"));
        j.num("publisher_instances", npub).num("subscriber_instances", b_.header->sub_slots.load()).num("broker_errors", broker_errors);
        j.str("broker", s_.broker ? "private" : "external").boolean("ok", why.empty());
        std::printf("%s\n", j.text().c_str());
    } else {
        std::printf("soak: %.1f s, seed %" PRIu64 ", %d publishers, %d subscribers, a kill every ~%d ms\n", o_.seconds, o_.seed, o_.publishers,
                    o_.subscribers, o_.kill_interval_ms);
        std::printf("  %-22s %" PRId64 " (critical %" PRIu64 ", high %" PRIu64 ", normal %" PRIu64 ", low %" PRIu64 ")\n", "published", published,
                    lanes[0], lanes[1], lanes[2], lanes[3]);
        for (std::size_t i = 0; i < sub_results_.size(); ++i)
            std::printf("  %-22s %" PRId64 " (%s)\n", i ? "" : "delivered", delivered[i], sub_labels_[i].c_str());
        std::printf("  %-22s %" PRId64 "\n  %-22s %" PRId64 "\n  %-22s %" PRId64 "\n  %-22s %" PRId64 "\n", "lost", lost, "duplicated", dup,
                    "out of order", ooo, "corrupt", corrupt);
        std::printf("  %-22s %" PRId64 " in %" PRId64 " checked receives (%" PRId64 " unchecked: a Critical claim was open); after %" PRId64
                    " of them the next try_receive was Critical\n",
                    "critical order", violations, sum("critical_checks"), sum("critical_skipped"), sum("violations_then_critical"));
        std::printf("  %-22s %d (%d publishers, %d of them holding a loan; %d subscribers)\n", "kills", kills_[0] + kills_[1], kills_[0],
                    kills_in_loan_, kills_[1]);
        std::printf("  %-22s %" PRId64 " ms after a publisher kill, %" PRId64 " ms after a subscriber kill (-1: none measured)\n",
                    "max recovery", recovery, sub_recovery);
        std::printf("  %-22s %" PRId64 " ms\n  %-22s %" PRIu64 "\n  %-22s %s\n", "max stall", stall, "publish timeouts", timeouts,
                    "broker errors", std::to_string(broker_errors).c_str());
        std::printf("  %-22s %s\n", "result", why.empty() ? "PASS" : "FAIL");
    }
    if (why.empty()) return 0;
    std::string msg = "soak failed:";
    for (auto& w : why) msg += " " + w + ";";
    return fail(msg + " seed " + std::to_string(o_.seed));
}

int run_soak(SoakOptions o) {
    o.kind_mask = 0;
    for (auto& k : o.kinds)
        for (std::uint32_t i = 0; i < kKinds; ++i)
            if (k == kind_name(i)) o.kind_mask |= 1u << i;
    if (!o.seed) o.seed = std::uint64_t(now_ns()) & 0x7fff'ffff'ffffull;  // positive in JSON; repeat with --seed
    StderrScan scan;  // declared first: destroyed after the children and the broker
    if (auto st = scan.start(); !st) return fail(st.error());
    auto s = open_session(o.common);
    if (!s) return fail(s.error());
    auto board = BoardFile::create();
    if (!board) return fail(board.error());
    int status = 1;
    {
        Soak soak(o, *s, *board);  // its children are reaped before the broker stops
        Done st = soak.start();
        if (st) st = soak.run();
        if (st) st = soak.stop();
        if (!st) return fail(st.error());
        std::vector<Child> none;  // every child is reaped already: this stops the broker
        if (auto f = finish(none, *s); !f) return fail(f.error());
        scan.stop();
        status = soak.report(scan.broker_errors());
    }
    return status;
}

}  // namespace

struct SoakCommand::Impl {
    SoakOptions options;
    SoakRoleOptions role;
    CLI::App* cmd = nullptr;
    CLI::App* child = nullptr;
};

SoakCommand::SoakCommand(CLI::App& app) : impl_(std::make_unique<Impl>()) {
    auto& o = impl_->options;
    auto* cmd = impl_->cmd = app.add_subcommand("soak", "publishers and subscribers SIGKILLed and replaced at random; checks nothing is lost, "
                                                        "duplicated, reordered or corrupted, Critical first, and how fast each kill is recovered");
    cmd->add_option("--seconds", o.seconds, "how long publishers publish and kills happen")->check(CLI::Range(1.0, 86400.0))->capture_default_str();
    cmd->add_option("--seed", o.seed, "seed of every random choice (default: from the clock; the run reports it)");
    cmd->add_option("--publishers", o.publishers, "publisher processes alive at any time")->check(CLI::Range(1, 32))->capture_default_str();
    cmd->add_option("--subscribers", o.subscribers, "subscriber processes alive at any time")->check(CLI::Range(1, 32))->capture_default_str();
    cmd->add_option("--spared-subscribers", o.spared, "of the subscribers, how many are never killed (their checks span the whole run)")
        ->check(CLI::Range(0, 32))
        ->capture_default_str();
    cmd->add_option("--kill-interval-ms", o.kill_interval_ms, "mean time between kills, jittered +-50 % (0: no kills)")
        ->check(CLI::Range(0, 3'600'000))
        ->capture_default_str();
    cmd->add_option("--max-recovery-ms", o.max_recovery_ms, "a longer recovery after a kill fails the run")->check(CLI::Range(1, 3'600'000))->capture_default_str();
    cmd->add_option("--max-stall-ms", o.max_stall_ms, "a longer time without an event while publishers publish fails the run")
        ->check(CLI::Range(1, 3'600'000))
        ->capture_default_str();
    cmd->add_option("--hold-us", o.hold_us, "longest time a publisher holds a loan open on purpose")->check(CLI::Range(20u, 1'000'000u))->capture_default_str();
    cmd->add_option("--kinds", o.kinds, "publisher kinds to run (each process has one, mostly: publish, batch, loan, raw-loan)")
        ->delimiter(',')
        ->check(CLI::IsMember({"publish", "batch", "loan", "raw-loan"}))
        ->capture_default_str();
    cmd->add_flag("--json", o.common.json, "print one JSON object instead of a table");
    cmd->add_option("--socket", o.common.socket, "use the rvoip-eventd at this socket instead of starting one");
    cmd->add_option("--eventd", o.common.eventd, "rvoip-eventd to start (default: next to rvoip-bench)");
    cmd->add_flag("--verbose", o.common.verbose, "log every process started and every kill on stderr");

    auto& r = impl_->role;
    auto* child = impl_->child = app.add_subcommand("_soak_child", "a soak process started by rvoip-bench itself")->group("");  // hidden
    child->add_option("--role", r.role)->required();
    child->add_option("--socket", r.socket)->required();
    child->add_option("--topic", r.topic)->required();
    child->add_option("--board-fd", r.board_fd)->required();
    child->add_option("--slot", r.slot)->required();
    child->add_option("--seed", r.seed);
    child->add_option("--kind", r.kind);
    child->add_option("--hold-us", r.hold_us);
    child->add_option("--kinds", r.kinds);
}

SoakCommand::~SoakCommand() = default;
bool SoakCommand::child_parsed() const { return impl_->child->parsed(); }
int SoakCommand::run_child() const { return run_soak_role(impl_->role); }
bool SoakCommand::parsed() const { return impl_->cmd->parsed(); }
int SoakCommand::run() const { return run_soak(impl_->options); }

}  // namespace rvoip::bench
