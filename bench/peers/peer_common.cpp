#include "bench/peers/peer_common.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

#include <sched.h>
#include <unistd.h>

namespace rvoip::bench::peers {

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

std::int64_t now_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Done wait_until(const std::function<bool()>& ready, std::chrono::milliseconds timeout, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!ready()) {
        if (std::chrono::steady_clock::now() >= deadline)
            return failure("timed out after " + std::to_string(timeout.count() / 1000) + " s waiting for " + what);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return {};
}

std::size_t framed_size(std::span<const Message> msgs) noexcept {
    std::size_t n = 0;
    for (auto m : msgs) n += kFrameHeader + m.size();
    return n;
}

std::byte* write_frames(std::span<const Message> msgs, std::byte* out) noexcept {
    for (auto m : msgs) {
        const auto len = std::uint32_t(m.size());
        std::memcpy(out, &len, kFrameHeader);
        std::memcpy(out + kFrameHeader, m.data(), m.size());
        out += kFrameHeader + m.size();
    }
    return out;
}

Expected<std::optional<Message>> FrameReader::next() {
    const auto left = bytes_.size() - pos_;
    if (left < kFrameHeader) return std::optional<Message>();
    std::uint32_t len;
    std::memcpy(&len, bytes_.data() + pos_, kFrameHeader);
    if (len > max_) return failure("a frame says " + std::to_string(len) + " bytes, more than a message (" + std::to_string(max_) + ")");
    if (left < kFrameHeader + len) return std::optional<Message>();
    const Message m(bytes_.data() + pos_ + kFrameHeader, len);
    pos_ += kFrameHeader + len;
    return std::optional<Message>(m);
}

namespace {

using steady = std::chrono::steady_clock;

// A receive that waits this long for anything means the peer is gone (as in rvoip-bench).
constexpr std::chrono::milliseconds kReceiveTimeout{30'000};
// Published before the measured phase, so first-touch costs (page faults, socket buffer growth) are not timed.
constexpr double kWarmupSeconds = 0.1;

// First 16 bytes of every message (hence --size >= 16). `word` is the throughput sequence number, or the
// ping's send stamp; `seq32` numbers pings and pongs. The rest of the message is filler.
constexpr std::uint32_t kMagic = 0x50565200;  // "\0RVP", low byte = kind
enum Kind : std::uint32_t { kWarmup = 1, kData = 2, kEnd = 3, kPing = 4, kPong = 5 };
struct Head {
    std::uint32_t tag = 0;
    std::uint32_t seq32 = 0;
    std::uint64_t word = 0;
};
static_assert(sizeof(Head) == 16);

void put_head(std::vector<std::byte>& buf, Kind kind, std::uint32_t seq32, std::uint64_t word) noexcept {
    const Head h{kMagic | kind, seq32, word};
    std::memcpy(buf.data(), &h, sizeof h);
}

Expected<Head> head_of(Message m, std::uint32_t size) {
    if (m.size() != size) return failure("received a message of " + std::to_string(m.size()) + " bytes, expected " + std::to_string(size));
    Head h;
    std::memcpy(&h, m.data(), sizeof h);
    if ((h.tag & ~0xffu) != kMagic) return failure("received a message without the bench's header");
    return h;
}

// ------------------------------------------------------------------------------------------------------
// Role processes. Protocol with the parent, as in rvoip-bench: "ready" on stdout once attached; the client
// side waits for "go" on stdin; one "result k=v ..." line at the end. Errors: stderr, exit status 1.

struct ChildOptions {
    std::string role;  // subscriber, publisher (throughput); echoer, pinger (latency)
    LinkSpec link;
    std::uint32_t batch = 1;
    double seconds = 2;
    std::uint64_t count = 0, warmup = 0;
};

std::string g_prefix = "rvoip-peer";

int report_error(const std::string& msg) {
    std::fprintf(stderr, "%s: %s\n", g_prefix.c_str(), msg.c_str());
    return 1;
}

void say(const std::string& line) {
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

Done wait_for_go() {
    char buf[16] = {};
    if (!std::fgets(buf, sizeof buf, stdin)) return failure("the parent went away before saying 'go'");
    if (std::string_view(buf) != "go\n") return failure("expected 'go' from the parent, got '" + std::string(buf) + "'");
    return {};
}

// spin: poll without blocking, one core busy; block: sleep in the system's own wait.
Expected<Message> receive(Link& link, bool spin) {
    if (!spin) {
        auto m = link.wait_receive(kReceiveTimeout);
        if (!m) return failure(m.error());
        if (!*m) return failure("nothing received for 30 s: the peer is gone");
        return **m;
    }
    // The clock is read only after many empty polls, so a busy stream pays nothing for the timeout.
    std::int64_t deadline = 0;
    for (std::uint32_t polls = 1;; ++polls) {
        auto m = link.try_receive();
        if (!m) [[unlikely]]
            return failure(m.error());
        if (*m) [[likely]]
            return **m;
        if (polls % 65536 == 0) {
            const auto now = now_ns();
            if (deadline == 0) deadline = now + std::int64_t(kReceiveTimeout.count()) * 1'000'000;
            else if (now > deadline) return failure("nothing received for 30 s: the peer is gone");
        }
    }
}

int run_publisher(Link& link, const ChildOptions& o) {
    std::vector<std::vector<std::byte>> bufs(o.batch, std::vector<std::byte>(o.link.size, std::byte{0x5a}));
    std::vector<Message> views(bufs.begin(), bufs.end());
    say("ready");
    if (auto go = wait_for_go(); !go) return report_error(go.error());

    // One sequence over warm-up, measured and end messages: the subscriber checks every number.
    std::uint64_t seq = 0;
    auto send_one_batch = [&](Kind kind) {
        for (auto& b : bufs) put_head(b, kind, 0, seq++);
        return o.batch == 1 ? link.send(views[0]) : link.send_batch(views);
    };
    // Sends batches until `seconds` have passed; the clock is read about once per 4 KiB of payload.
    const std::uint64_t check_every = std::max<std::uint64_t>(1, 4096 / (std::uint64_t(o.link.size) * o.batch));
    auto send_for = [&](Kind kind, double seconds, std::int64_t& stop) -> Expected<std::uint64_t> {
        const std::int64_t deadline = now_ns() + std::int64_t(seconds * 1e9);
        std::uint64_t calls = 0;
        for (std::uint64_t countdown = check_every;;) {
            if (auto st = send_one_batch(kind); !st) [[unlikely]]
                return failure("send: " + st.error());
            ++calls;
            if (--countdown == 0) {
                countdown = check_every;
                if ((stop = now_ns()) >= deadline) return calls * o.batch;
            }
        }
    };
    std::int64_t stop = 0;
    auto warm = send_for(kWarmup, kWarmupSeconds, stop);
    if (!warm) return report_error(warm.error());
    const std::int64_t start = now_ns();
    auto events = send_for(kData, o.seconds, stop);
    if (!events) return report_error(events.error());
    put_head(bufs[0], kEnd, 0, seq++);
    if (auto st = link.send(views[0]); !st) return report_error("send: " + st.error());

    char line[256];
    std::snprintf(line, sizeof line, "result events=%" PRIu64 " warmup=%" PRIu64 " start_ns=%" PRId64 " end_ns=%" PRId64, *events, *warm,
                  start, stop);
    say(line);
    // Stay connected until the parent has the subscriber's result and closes our stdin: some systems drop
    // what is still in flight when the sender closes (zmq's engine discards its unwritten batch).
    for (char buf[64]; std::fgets(buf, sizeof buf, stdin);) {
    }
    return 0;
}

int run_subscriber(Link& link, const ChildOptions& o) {
    say("ready");
    if (auto st = link.established(); !st) return report_error(st.error());
    std::uint64_t next = 0, events = 0, warm = 0;
    std::int64_t first_ns = 0, end_ns = 0;
    for (bool end = false; !end;) {
        auto m = receive(link, o.link.spin);
        if (!m) return report_error(m.error());
        auto h = head_of(*m, o.link.size);
        link.release();
        if (!h) return report_error(h.error());
        if (h->word != next)
            return report_error("sequence " + std::to_string(h->word) + " where " + std::to_string(next) + " was due: messages lost, duplicated or reordered");
        ++next;
        switch (h->tag & 0xff) {
        case kWarmup: ++warm; break;
        case kData:
            if (events++ == 0) first_ns = now_ns();
            break;
        case kEnd:
            end_ns = now_ns();
            end = true;
            break;
        default: return report_error("received a message of unexpected kind " + std::to_string(h->tag & 0xff));
        }
    }
    char line[256];
    std::snprintf(line, sizeof line, "result events=%" PRIu64 " warmup=%" PRIu64 " first_ns=%" PRId64 " end_ns=%" PRId64, events, warm,
                  first_ns, end_ns);
    say(line);
    return 0;
}

// Nearest-rank percentiles, as one result line (the same statistics as rvoip-bench).
std::string summarize(std::vector<std::int64_t>& v) {
    if (v.empty()) return "result samples=0";
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
        auto rank = static_cast<std::size_t>(q * double(v.size()) + 0.999999);  // ceil, robust to rounding
        return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
    };
    long double sum = 0;
    for (auto x : v) sum += x;
    char line[320];
    std::snprintf(line, sizeof line,
                  "result samples=%zu min=%" PRId64 " p50=%" PRId64 " p90=%" PRId64 " p99=%" PRId64 " p999=%" PRId64 " max=%" PRId64
                  " mean=%" PRId64,
                  v.size(), v.front(), at(0.50), at(0.90), at(0.99), at(0.999), v.back(), static_cast<std::int64_t>(sum / v.size()));
    return line;
}

Expected<Head> expect(Message m, std::uint32_t size, Kind kind, std::uint64_t i) {
    auto h = head_of(m, size);
    if (!h) return h;
    if ((h->tag & 0xff) != kind || h->seq32 != std::uint32_t(i))
        return failure("got message kind " + std::to_string(h->tag & 0xff) + " #" + std::to_string(h->seq32) + ", expected kind " +
                       std::to_string(kind) + " #" + std::to_string(std::uint32_t(i)));
    return h;
}

int run_pinger(Link& link, const ChildOptions& o) {
    std::vector<std::byte> ping(o.link.size, std::byte{0x5a});
    std::vector<std::int64_t> rtt;
    rtt.reserve(o.count);
    say("ready");
    if (auto go = wait_for_go(); !go) return report_error(go.error());
    for (std::uint64_t i = 0; i < o.warmup + o.count; ++i) {
        const std::int64_t t0 = now_ns();
        put_head(ping, kPing, std::uint32_t(i), std::uint64_t(t0));  // the echoer's one-way reference
        if (auto st = link.send(ping); !st) return report_error("send ping: " + st.error());
        auto m = receive(link, o.link.spin);
        const std::int64_t t1 = now_ns();
        if (!m) return report_error(m.error());
        auto h = expect(*m, o.link.size, kPong, i);
        link.release();
        if (!h) return report_error(h.error());
        if (i >= o.warmup) rtt.push_back(t1 - t0);
    }
    say(summarize(rtt));
    return 0;
}

int run_echoer(Link& link, const ChildOptions& o) {
    std::vector<std::byte> pong(o.link.size, std::byte{0x5a});
    std::vector<std::int64_t> one_way;
    one_way.reserve(o.count);
    say("ready");
    if (auto st = link.established(); !st) return report_error(st.error());
    for (std::uint64_t i = 0; i < o.warmup + o.count; ++i) {
        auto m = receive(link, o.link.spin);
        const std::int64_t t = now_ns();
        if (!m) return report_error(m.error());
        auto h = expect(*m, o.link.size, kPing, i);
        link.release();  // give the ping back before answering, as a real consumer would
        if (!h) return report_error(h.error());
        put_head(pong, kPong, std::uint32_t(i), 0);
        if (auto st = link.send(pong); !st) return report_error("send pong: " + st.error());
        if (i >= o.warmup) one_way.push_back(t - std::int64_t(h->word));
    }
    say(summarize(one_way));
    return 0;
}

int run_role(const System& sys, ChildOptions& o) {
    g_prefix = "rvoip-peer-" + sys.name + "[" + o.role + "]";
    const bool server = o.role == "subscriber" || o.role == "echoer";
    if (!server && o.role != "publisher" && o.role != "pinger") return report_error("unknown role '" + o.role + "'");
    o.link.side = server ? Side::server : Side::client;
    o.link.duplex = o.role == "echoer" || o.role == "pinger";
    o.link.batch = o.link.duplex ? 1 : o.batch;
    auto link = sys.open(o.link);
    if (!link) return report_error(link.error());
    if (o.role == "publisher") return run_publisher(**link, o);
    if (o.role == "subscriber") return run_subscriber(**link, o);
    if (o.role == "pinger") return run_pinger(**link, o);
    return run_echoer(**link, o);
}

// ------------------------------------------------------------------------------------------------------
// The parent.

struct Options {
    std::uint32_t size = 64;
    std::string mode = "spin";
    std::uint32_t depth = 0;
    bool json = false;
    bool verbose = false;
    // throughput
    std::uint32_t batch = 1;
    double seconds = 3;  // rvoip-bench's defaults throughout
    // latency
    std::uint64_t count = 0, warmup = 0;
};

int usable_cores() {
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    return static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
}

// A polling thread holds a core whether or not there is work. When polling threads and the threads that work
// (the publisher, a receiver while data flows, a system's helper threads such as zmq's I/O threads) outnumber
// the cores, the pollers take turns with the very threads they wait for, and the figures measure the
// scheduler: `distorted`. Without a polling thread, threads beyond the cores each do the system's own work and
// share the cores as they would in use, so the figure is what the system costs on this machine.
void add_load_notes(Json& j, int polling, int busy) {
    const int cores = usable_cores();
    const bool distorted = polling > 0 && busy > cores;
    j.num("cores", cores).num("polling_threads", polling).num("busy_threads", busy).boolean("distorted", distorted);
    if (distorted)
        j.str("note", std::to_string(polling) + " polling thread(s) among " + std::to_string(busy) + " busy threads on " +
                          std::to_string(cores) + " cores: the pollers time-share the cores with the threads they wait for, so "
                          "these figures are distorted");
}

std::vector<std::string> split_words(const std::string& s) {
    std::istringstream in(s);
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    return words;
}

// "result a=1 b=2" -> {a: 1, b: 2}; a missing key is an error, not a zero.
class Fields {
public:
    static Expected<Fields> parse(const std::string& line, const std::string& who) {
        Fields f;
        f.who_ = who;
        for (auto& word : split_words(line)) {
            if (word == "result") continue;
            auto eq = word.find('=');
            std::int64_t v = 0;
            if (eq == std::string::npos || std::from_chars(word.data() + eq + 1, word.data() + word.size(), v).ec != std::errc{})
                return failure(who + " reported a malformed result: '" + line + "'");
            f.values_[word.substr(0, eq)] = v;
        }
        return f;
    }
    Expected<std::int64_t> get(const std::string& key) const {
        auto it = values_.find(key);
        if (it == values_.end()) return failure(who_ + " did not report '" + key + "'");
        return it->second;
    }

private:
    std::map<std::string, std::int64_t> values_;
    std::string who_;
};

// Our private directory; removed (with whatever a run left in it) when the run ends.
class TempDir {
public:
    ~TempDir() {
        std::error_code ec;
        if (!path.empty()) std::filesystem::remove_all(path, ec);
    }
    std::string path;
};

// A run that was SIGKILLed could not remove its directory: remove those of dead processes. Ours are named
// "rvoip-peer-<system>-<pid>-XXXXXX" (mkdtemp's suffix has no dash).
void remove_stale_dirs(const std::string& base) {
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(base, ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        const auto name = it->path().filename().string();
        std::error_code ignored;
        if (!name.starts_with("rvoip-peer-") || !it->is_directory(ignored)) continue;
        const auto dash = name.rfind('-'), dash2 = name.rfind('-', dash - 1);
        int pid = 0;
        auto [end, err] = std::from_chars(name.data() + dash2 + 1, name.data() + dash, pid);
        if (err != std::errc{} || end != name.data() + dash || pid <= 0) continue;
        if (::kill(pid, 0) == 0 || errno != ESRCH) continue;
        std::filesystem::remove_all(it->path(), ignored);
    }
}

class Parent {
public:
    Parent(const System& sys, const Options& o) : sys_(sys), o_(o) {}

    int fail(const std::string& msg) const {
        std::fprintf(stderr, "rvoip-peer-%s: %s\n", sys_.name.c_str(), msg.c_str());
        return 1;
    }

    // Runs the two roles; fills `server_result` and `client_result`.
    Done run(bool latency, Fields& server_result, Fields& client_result, Json& extra) {
        auto exe = self_exe();
        if (!exe) return failure(exe.error());
        const char* tmp = std::getenv("TMPDIR");
        const std::string base = tmp && *tmp ? tmp : "/tmp";
        remove_stale_dirs(base);
        std::string templ = base + "/rvoip-peer-" + sys_.name + "-" + std::to_string(::getpid()) + "-XXXXXX";
        if (!::mkdtemp(templ.data())) return failure(errno_text("cannot create a directory from '" + templ + "'"));
        TempDir dir;  // destroyed last: after the resources and the children
        dir.path = templ;

        timespec ts;
        ::clock_gettime(CLOCK_REALTIME, &ts);
        char name[64];
        std::snprintf(name, sizeof name, "rvoip-peer-%d-%" PRIx64, int(::getpid()),
                      (std::uint64_t(ts.tv_sec) * 1'000'000'000u + std::uint64_t(ts.tv_nsec)) & 0xff'ffff'ffffu);
        RunSpec spec{.name = name,
                     .dir = dir.path,
                     .size = o_.size,
                     .depth = o_.depth ? o_.depth : sys_.default_depth,
                     .depth_given = o_.depth != 0,
                     .batch = latency ? 1u : o_.batch,
                     .duplex = latency};

        std::unique_ptr<Resources> resources;  // destroyed before `dir`
        if (sys_.prepare) {
            auto r = sys_.prepare(spec, extra);
            if (!r) return failure(r.error());
            resources = std::move(*r);
        }
        depth_ = spec.depth;
        auto st = run_roles(*exe, spec, latency, server_result, client_result);
        // Always, also after an error: a system's daemon must be stopped and what it left removed.
        if (resources) {
            auto fin = resources->finish();
            resources.reset();
            if (!fin) st = st ? fin : failure(st.error() + "; " + fin.error());
        }
        return st;
    }

    // Starts the server role, then the client role; both are reaped (killed on error) before this returns.
    Done run_roles(const std::string& exe, const RunSpec& spec, bool latency, Fields& server_result, Fields& client_result) {
        std::vector<Child> children;
        auto spawn = [&](const std::string& role) -> Done {
            std::vector<std::string> argv{exe, "_child", "--role", role, "--name", spec.name, "--dir", spec.dir, "--size",
                                          std::to_string(spec.size), "--depth", std::to_string(spec.depth), "--mode", o_.mode,
                                          "--batch", std::to_string(o_.batch), "--seconds", std::to_string(o_.seconds), "--count",
                                          std::to_string(o_.count), "--warmup", std::to_string(o_.warmup)};
            auto c = Child::spawn({.argv = std::move(argv), .label = role});
            if (!c) return failure(c.error());
            if (o_.verbose) std::fprintf(stderr, "rvoip-peer-%s: %s is pid %d\n", sys_.name.c_str(), role.c_str(), int(c->pid()));
            children.push_back(std::move(*c));
            // The server side must be listening (or subscribed) before the client side starts.
            auto ready = wait_for_lines({&children.back()}, "ready", steady::now() + std::chrono::seconds(30));
            if (!ready) return failure(ready.error());
            return {};
        };
        children.reserve(2);
        if (auto st = spawn(latency ? "echoer" : "subscriber"); !st) return st;
        if (auto st = spawn(latency ? "pinger" : "publisher"); !st) return st;
        if (auto st = children[1].send_line("go"); !st) return st;
        // Run time: the measured seconds plus a generous allowance; the children time out by themselves
        // after 30 s without a message, so this only catches one that is stuck elsewhere.
        const auto run_time = latency ? steady::duration(std::chrono::minutes(10))
                                      : std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o_.seconds)) +
                                            std::chrono::seconds(120);
        auto results = wait_for_lines({&children[0], &children[1]}, "result", steady::now() + run_time);
        if (!results) return failure(results.error());
        // The server first: the publisher stays connected until its stdin closes (here), see run_publisher.
        for (auto& c : children) {
            auto how = c.reap(std::chrono::seconds(5));
            if (!how.empty()) return failure(c.label() + " " + how);
        }
        auto s = Fields::parse((*results)[0], children[0].label());
        auto c = Fields::parse((*results)[1], children[1].label());
        if (!s) return failure(s.error());
        if (!c) return failure(c.error());
        server_result = std::move(*s);
        client_result = std::move(*c);
        return {};
    }

    void describe(Json& j, const char* scenario) const {
        j.str("system", sys_.name).str("scenario", scenario).str("benchmark", scenario);
        j.num("size", o_.size);
    }

    int throughput() {
        Fields sub, pub;
        Json extra;
        if (auto st = run(false, sub, pub, extra); !st) return fail(st.error());
        std::int64_t events, warm, first_ns, end_ns, pub_events, pub_warm, start_ns, stop_ns;
        if (auto st = read(sub, {{"events", &events}, {"warmup", &warm}, {"first_ns", &first_ns}, {"end_ns", &end_ns}}); !st) return fail(st.error());
        if (auto st = read(pub, {{"events", &pub_events}, {"warmup", &pub_warm}, {"start_ns", &start_ns}, {"end_ns", &stop_ns}}); !st)
            return fail(st.error());
        if (events != pub_events || warm != pub_warm)
            return fail("subscriber received " + std::to_string(events) + " + " + std::to_string(warm) + " warm-up messages of " +
                        std::to_string(pub_events) + " + " + std::to_string(pub_warm) + " sent: messages were lost");
        // From the first measured message to the end marker, the subscriber received `events` more messages
        // (the other data messages and the marker): that many message intervals in that time.
        const double rate = end_ns > first_ns ? double(events) * 1e9 / double(end_ns - first_ns) : 0.0;
        const double pub_rate = stop_ns > start_ns ? double(pub_events) * 1e9 / double(stop_ns - start_ns) : 0.0;
        const int polling = o_.mode == "spin" ? 1 : 0;  // the subscriber; the publisher works, it never polls
        const int busy = 2 + helpers();
        const std::string batching = o_.batch == 1 ? "none" : sys_.batching;
        if (o_.json) {
            Json j;
            describe(j, "throughput");
            j.num("batch", o_.batch).real("seconds", o_.seconds, 3).str("mode", o_.mode);
            j.num("events", events).num("warmup_events", warm);
            j.real("events_per_sec", rate).real("bytes_per_sec", rate * o_.size).real("publisher_events_per_sec", pub_rate);
            j.boolean("lossless", true).str("batching", batching);
            j.str("transport", sys_.transport).num("depth", depth_);
            j.num("threads_per_process", sys_.threads_per_process).num("helper_threads", helpers());
            j.merge(extra);
            add_load_notes(j, polling, busy);
            std::printf("%s\n", j.text().c_str());
        } else {
            std::printf("%s throughput: %u-byte messages, batch %u (%s), %s: %.2f M events/s (%.1f MB/s); %" PRId64
                        " messages in %.2f s, none lost%s\n",
                        sys_.name.c_str(), o_.size, o_.batch, batching.c_str(), o_.mode.c_str(), rate / 1e6, rate * o_.size / 1e6, events,
                        o_.seconds, polling && busy > usable_cores() ? " (a polling thread among more busy threads than cores: distorted)" : "");
        }
        return 0;
    }

    int latency() {
        const bool spin = o_.mode == "spin";
        if (!o_.count) o_.count = spin ? 100'000 : 20'000;
        if (!o_.warmup) o_.warmup = std::clamp<std::uint64_t>(o_.count / 10, 100, 10'000);
        Fields one_way, rtt;
        Json extra;
        if (auto st = run(true, one_way, rtt, extra); !st) return fail(st.error());
        std::map<std::string, std::int64_t> v;
        for (auto k : {"samples", "p50", "p90", "p99", "p999", "max", "min", "mean"}) {
            auto a = one_way.get(k);
            if (!a) return fail(a.error());
            v[k] = *a;
        }
        for (auto k : {"p50", "p90", "p99", "p999", "max"}) {
            auto a = rtt.get(k);
            if (!a) return fail(a.error());
            v[std::string("rtt_") + k] = *a;
        }
        if (std::uint64_t(v["samples"]) != o_.count) return fail("the echoer kept " + std::to_string(v["samples"]) + " samples, not " + std::to_string(o_.count));
        if (o_.json) {
            Json j;
            describe(j, "latency");
            j.str("mode", o_.mode).num("samples", v["samples"]).num("warmup", std::int64_t(o_.warmup));
            for (auto k : {"p50", "p90", "p99", "p999", "max", "min", "mean"}) j.num(std::string(k) + "_ns", v[k]);
            for (auto k : {"p50", "p90", "p99", "p999", "max"}) j.num(std::string("rtt_") + k + "_ns", v[std::string("rtt_") + k]);
            j.str("method", "one-way = receive time in the echo process minus the send stamp the pinger wrote into the message just "
                            "before sending (CLOCK_MONOTONIC, one clock for all processes); rtt = send to reply received, in the pinger");
            j.str("transport", sys_.transport).num("depth", depth_);
            j.num("threads_per_process", sys_.threads_per_process).num("helper_threads", helpers());
            j.merge(extra);
            add_load_notes(j, spin ? 2 : 0, 2 + helpers());
            std::printf("%s\n", j.text().c_str());
        } else {
            std::printf("%s latency: %u-byte messages, %s, %" PRId64 " samples: one-way p50 %" PRId64 " ns, p90 %" PRId64 " ns, p99 %" PRId64
                        " ns, p99.9 %" PRId64 " ns, max %" PRId64 " ns; round trip p50 %" PRId64 " ns\n",
                        sys_.name.c_str(), o_.size, o_.mode.c_str(), v["samples"], v["p50"], v["p90"], v["p99"], v["p999"], v["max"],
                        v["rtt_p50"]);
        }
        return 0;
    }

private:
    int helpers() const { return 2 * (sys_.threads_per_process - 1); }

    static Done read(const Fields& f, std::initializer_list<std::pair<const char*, std::int64_t*>> keys) {
        for (auto [k, out] : keys) {
            auto v = f.get(k);
            if (!v) return failure(v.error());
            *out = *v;
        }
        return {};
    }

    const System& sys_;
    Options o_;
    std::uint32_t depth_ = 0;  // as used: the system may lower its default (see System::prepare)
};

void add_common(CLI::App* cmd, Options& o, const System& sys) {
    cmd->add_option("--size", o.size, "payload bytes per message")->check(CLI::Range(16u, 65536u))->capture_default_str();
    cmd->add_option("--mode", o.mode, "receivers poll without blocking (spin) or block in the system's wait (block)")
        ->check(CLI::IsMember({"spin", "block"}))
        ->capture_default_str();
    cmd->add_option("--depth", o.depth, "queue depth, in the system's own unit (default " + std::to_string(sys.default_depth) + "; see README)");
    cmd->add_flag("--json", o.json, "print one JSON object instead of a summary line");
    cmd->add_flag("--verbose", o.verbose, "print the pids of the processes started");
}

}  // namespace

int peer_main(int argc, char** argv, const System& sys) {
    CLI::App app{"rvoip-peer-" + sys.name + ": throughput and latency of " + sys.transport + " between two processes, measured like rvoip-bench"};
    app.require_subcommand(1);

    Options tp;
    auto* throughput = app.add_subcommand("throughput", "publisher process -> subscriber process, messages/s as received");
    add_common(throughput, tp, sys);
    if (sys.batching.empty())
        throughput->add_option("--batch", tp.batch, "1: " + sys.name + " has no batch form (README)")->check(CLI::Range(1u, 1u))->capture_default_str();
    else
        throughput->add_option("--batch", tp.batch, "messages per send call (" + sys.batching + " when > 1)")
            ->check(CLI::Range(1u, 65536u))
            ->capture_default_str();
    throughput->add_option("--seconds", tp.seconds, "how long the publisher sends")->check(CLI::Range(0.05, 3600.0))->capture_default_str();

    Options lt;
    auto* latency = app.add_subcommand("latency", "ping-pong between two processes, one-way latency percentiles");
    add_common(latency, lt, sys);
    latency->add_option("--count", lt.count, "samples kept (default 100000 for spin, 20000 for block)")->check(CLI::Range(1, 100'000'000));
    latency->add_option("--warmup", lt.warmup, "samples thrown away first (default: count/10, 100..10000)")->check(CLI::Range(1, 10'000'000));

    ChildOptions role;
    std::string role_mode = "spin";
    auto* child = app.add_subcommand("_child", "a process started by the benchmark itself")->group("");  // hidden
    child->add_option("--role", role.role)->required();
    child->add_option("--name", role.link.name)->required();
    child->add_option("--dir", role.link.dir)->required();
    child->add_option("--size", role.link.size);
    child->add_option("--depth", role.link.depth);
    child->add_option("--mode", role_mode);
    child->add_option("--batch", role.batch);
    child->add_option("--seconds", role.seconds);
    child->add_option("--count", role.count);
    child->add_option("--warmup", role.warmup);

    CLI11_PARSE(app, argc, argv);

    try {
        if (child->parsed()) {
            role.link.spin = role_mode == "spin";
            return run_role(sys, role);
        }
        install_signal_handlers();
        if (throughput->parsed()) return Parent(sys, tp).throughput();
        return Parent(sys, lt).latency();
    } catch (const std::exception& e) {
        // The systems' libraries may throw (boost.interprocess does); say what, never abort.
        std::fprintf(stderr, "%s: %s\n", child->parsed() ? g_prefix.c_str() : ("rvoip-peer-" + sys.name).c_str(), e.what());
        return 1;
    }
}

}  // namespace rvoip::bench::peers
