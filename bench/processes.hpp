// rvoip-bench's process plumbing: the broker it starts for itself and the role processes (publisher,
// subscriber, pinger, echoer, ...) it runs as separate programs, so that every benchmark crosses a real
// process boundary through a real rvoip-eventd. Also the harness every scenario's parent side shares
// (Session, spawn_role, Fields, Json) and readings of other processes' CPU time and memory from /proc.
//
// Children are fork+exec'ed (not posix_spawn) so that each can ask the kernel for a parent-death signal
// before exec: if rvoip-bench itself is killed, nothing it started stays behind. Every Child and
// BrokerProcess reaps its process in its destructor, on success and on every error path.
#pragma once

#include "bench/roles.hpp"

#include <chrono>
#include <cstdint>
#include <expected>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/types.h>

namespace rvoip::bench {

// Errors of the bench itself are messages for a human; the library's typed errors are turned into text.
template <class T>
using Expected = std::expected<T, std::string>;
using Done = std::expected<void, std::string>;

inline std::unexpected<std::string> failure(std::string msg) { return std::unexpected(std::move(msg)); }

// Directory of the running binary (/proc/self/exe): rvoip-eventd is looked up next to it.
Expected<std::string> self_exe();
std::string dirname_of(const std::string& path);

// Installs SIGINT/SIGTERM handlers that only raise a flag (so waits return and everything is reaped), and
// ignores SIGPIPE (a child that died must not kill us when we write to it).
void install_signal_handlers();
bool interrupted() noexcept;

// A child process whose stdin and stdout are pipes to us (when `piped`), or inherited. Line protocol on the
// pipes: the child prints "ready" once it is attached, waits for "go" on stdin, prints "result k=v ...".
class Child {
public:
    struct Spec {
        std::vector<std::string> argv;  // argv[0] is the program (PATH is searched if it has no '/')
        std::string label;              // for messages: "publisher 1"
        bool piped = true;
        int death_signal = 9;           // sent to the child by the kernel if we die (SIGKILL)
    };

    static Expected<Child> spawn(Spec spec);

    Child() = default;
    Child(Child&& o) noexcept;
    Child& operator=(Child&& o) noexcept;  // reaps the process this one held first
    Child(const Child&) = delete;
    ~Child();

    pid_t pid() const noexcept { return pid_; }
    const std::string& label() const noexcept { return label_; }
    bool running() const noexcept { return pid_ > 0; }

    Done send_line(std::string_view line);
    // The next complete line from the child's stdout, or an error on EOF, deadline or interruption.
    Expected<std::string> read_line(std::chrono::steady_clock::time_point deadline);
    int out_fd() const noexcept { return out_; }
    // Reads what is available into the line buffer (after poll said so); false on EOF.
    bool fill();
    bool has_line() const noexcept;
    std::string take_line();

    // Waits for the child to exit by itself, up to `grace`; then SIGTERM, then SIGKILL. Returns a description
    // of how it ended ("" for exit status 0).
    std::string reap(std::chrono::milliseconds grace);
    // Sends `sig` now (no reaping).
    void signal(int sig) noexcept;

private:
    pid_t pid_ = -1;
    int in_ = -1;   // write end of the child's stdin
    int out_ = -1;  // read end of the child's stdout
    std::string label_;
    std::string buf_;
    bool eof_ = false;
};

// Waits until every child in `children` has printed a line starting with `prefix`; returns those lines in
// order. Fails as soon as one child closes its stdout without it (it crashed or reported an error), so the
// caller does not wait for the others' timeouts.
Expected<std::vector<std::string>> wait_for_lines(std::vector<Child*> children, std::string_view prefix,
                                                  std::chrono::steady_clock::time_point deadline);

// An rvoip-eventd started for one bench run on a private socket and shm prefix, stopped (SIGTERM, reaped)
// by stop() or the destructor. Its segments are removed by the broker's --cleanup, and by us if it had to be
// killed.
class BrokerProcess {
public:
    static Expected<BrokerProcess> start(const std::string& eventd_path);

    BrokerProcess() = default;
    BrokerProcess(BrokerProcess&& o) noexcept;
    BrokerProcess& operator=(BrokerProcess&&) = delete;
    ~BrokerProcess() { (void)stop(); }

    const std::string& socket_path() const noexcept { return socket_; }
    pid_t pid() const noexcept { return child_.pid(); }
    // Its segments are /dev/shm/<prefix>.doorbells, <prefix>.<topic>.data and <prefix>.<topic>.cursors.
    const std::string& shm_prefix() const noexcept { return shm_prefix_; }
    // Stops the broker and removes its directory; an error if it did not stop cleanly.
    Done stop();

private:
    Child child_;
    std::string dir_;
    std::string socket_;
    std::string shm_prefix_;
};

// ------------------------------------------------------------------------------------------------------
// Other processes, as /proc shows them.

// CPU time (user + system) a process has used so far, all its threads, or -1 if it cannot be read. From the
// threads' /proc/<pid>/task/*/schedstat (nanoseconds) when the kernel has it, else /proc/<pid>/stat (ticks
// of 10 ms, too coarse for an idle process).
std::int64_t cpu_ns_of(pid_t pid);
// This process's own CPU time, all threads (getrusage), in nanoseconds.
std::int64_t own_cpu_ns();

struct Memory {
    std::int64_t rss = -1;        // VmRSS bytes
    std::int64_t rss_anon = -1;   // RssAnon: heap, stacks
    std::int64_t rss_shmem = -1;  // RssShmem: pages of shared-memory segments it has touched
};
Memory memory_of(pid_t pid);  // from /proc/<pid>/status; -1 fields when it cannot be read

// The pid of the process listening on a Unix socket (SO_PEERCRED of a connection), or -1.
pid_t listener_pid(const std::string& socket_path);

// ------------------------------------------------------------------------------------------------------
// The harness shared by every scenario's parent side.

// Options every subcommand takes.
struct Common {
    std::string socket;   // an existing broker; empty: start our own
    std::string eventd;   // our own broker's binary; empty: next to this one
    std::string wrap;     // command put in front of the publisher / pinger (perf stat, valgrind)
    std::string wrap_subscriber;  // command put in front of the first subscriber (throughput)
    std::uint32_t size = 64;
    std::string mode = "spin";
    bool json = false;
    bool verbose = false;
};

// Prints "rvoip-bench: msg" on stderr; returns the exit status 1.
int fail(const std::string& msg);
// CPUs we may run on (the affinity mask, which a container or taskset may narrow), not the machine's count.
int usable_cores();
// "<pid>.<hex time>": topics of one run never meet those of an earlier run on a long-lived broker.
std::string unique_suffix();
std::vector<std::string> split_words(const std::string& s);

// The broker of one run and how to start role processes against it.
struct Session {
    std::string exe;                      // this binary, run again for each role
    std::optional<BrokerProcess> broker;  // ours, when no --socket was given
    std::string socket;
    pid_t broker_pid = -1;                // ours, or the one listening on --socket (-1: unknown)
};
Expected<Session> open_session(const Common& c);

// Starts `r` as a `_child` process; `wrapped` puts --wrap-publisher's command in front of it, and
// --wrap-subscriber's goes in front of subscriber 1.
Expected<Child> spawn_role(const Session& s, const Common& c, const RoleOptions& r, bool wrapped = false);

// Reaps every child (they exit by themselves after their result), then stops our broker; any unclean end
// is an error, since it may have spoiled the figures.
Done finish(std::vector<Child>& children, Session& s);

class Fields;
// One-way latency by ping-pong between two processes (echoer, pinger) against the session's broker:
// `spin` both sides busy-poll, else both park at once (block). The children are reaped; the broker keeps
// running. `interval_ns` > 0 paces the pings (one per interval). Returns the echoer's one-way figures and
// the pinger's round trips.
Expected<std::pair<Fields, Fields>> ping_pong(const Session& s, const Common& c, std::uint32_t size, bool spin, std::uint64_t count,
                                              std::uint64_t warmup, std::int64_t interval_ns = 0);

// "result a=1 b=2" -> {a: 1, b: 2}
class Fields {
public:
    static Expected<Fields> parse(const std::string& line, const std::string& who);
    // A missing key is a bug between parent and child, not a run-time condition: report it as 0 loudly.
    std::int64_t operator[](const std::string& key) const;
    bool has(const std::string& key) const { return values_.contains(key); }

private:
    std::map<std::string, std::int64_t> values_;
    std::string who_;
};

// Waits for "ready" from every child, sends "go" to those in need_go, waits for every "result" line.
Expected<std::vector<Fields>> run_children(std::vector<Child>& children, const std::vector<std::size_t>& need_go,
                                           std::chrono::steady_clock::duration run_time);

// The next line of one child, parsed; it must start with `prefix` ("result", "step", ...).
Expected<Fields> read_fields(Child& c, std::string_view prefix, std::chrono::steady_clock::duration timeout);

std::string json_escape(std::string_view s);

// A JSON object, keys in insertion order; objects nest with obj() and objs().
class Json {
public:
    Json& num(std::string_view k, std::int64_t v) { return raw(k, std::to_string(v)); }
    Json& real(std::string_view k, double v, int decimals = 0);
    Json& str(std::string_view k, std::string_view v) { return raw(k, "\"" + json_escape(v) + "\""); }
    Json& boolean(std::string_view k, bool v) { return raw(k, v ? "true" : "false"); }
    Json& null(std::string_view k) { return raw(k, "null"); }
    Json& reals(std::string_view k, const std::vector<double>& v, int decimals = 0);
    Json& nums(std::string_view k, const std::vector<std::int64_t>& v);
    Json& obj(std::string_view k, const Json& v) { return raw(k, v.text()); }
    Json& objs(std::string_view k, const std::vector<Json>& v);
    // Appends the keys of `other` (which must not repeat ours).
    Json& merge(const Json& other) {
        if (!other.body_.empty()) body_ += (body_.empty() ? "" : ",") + other.body_;
        return *this;
    }
    // A non-negative figure, or null when it could not be measured (reported as -1).
    Json& num_or_null(std::string_view k, std::int64_t v) { return v < 0 ? null(k) : num(k, v); }
    std::string text() const { return "{" + body_ + "}"; }

private:
    Json& raw(std::string_view k, const std::string& v);
    std::string body_;
};

// Spinning processes beyond the usable cores time-share them: the figures then measure the scheduler.
void add_load_notes(Json& j, int spinning);

// Nearest-rank percentile of sorted values.
std::int64_t percentile(const std::vector<std::int64_t>& sorted, double q);

}  // namespace rvoip::bench
