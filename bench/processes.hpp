// rvoip-bench's process plumbing: the broker it starts for itself and the role processes (publisher,
// subscriber, pinger, echoer) it runs as separate programs, so that every benchmark crosses a real process
// boundary through a real rvoip-eventd.
//
// Children are fork+exec'ed (not posix_spawn) so that each can ask the kernel for a parent-death signal
// before exec: if rvoip-bench itself is killed, nothing it started stays behind. Every Child and
// BrokerProcess reaps its process in its destructor, on success and on every error path.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
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
    // Stops the broker and removes its directory; an error if it did not stop cleanly.
    Done stop();

private:
    Child child_;
    std::string dir_;
    std::string socket_;
    std::string shm_prefix_;
};

}  // namespace rvoip::bench
