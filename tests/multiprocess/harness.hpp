// Real processes for multi-process tests: a broker (rvoip-eventd) on a private socket and shm prefix, and
// client processes (rvoip-test-peer) whose stdin/stdout the test holds. Every process started is stopped
// by its pid when its owner goes out of scope.
#pragma once

#include "rvoip/events.hpp"
#include "tests/multiprocess/service_manager.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace rvoip::events::test {

class Process {
public:
    // `env`: variables added to ours. `pass`: descriptors the child gets as 3, 4, ... (the caller closes its
    // own); with them, LISTEN_PID names the child, as sd_listen_fds(3) expects. `pid_vars`: more variables
    // set to the child's own pid (WATCHDOG_PID, for sd_watchdog_enabled(3)).
    explicit Process(std::vector<std::string> argv, std::vector<std::string> env = {}, std::vector<int> pass = {},
                     std::vector<std::string> pid_vars = {}) {
        int in[2], out[2];
        REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
        REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        std::vector<int> high;  // out of the way of 3.., so that no dup2 overwrites a source still to come
        for (int fd : pass) {
            high.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 1000));
            REQUIRE(high.back() >= 0);
        }
        for (std::size_t i = 0; i < high.size(); ++i) posix_spawn_file_actions_adddup2(&fa, high[i], int(3 + i));
        if (!pass.empty()) pid_vars.push_back("LISTEN_PID");
        if (!pid_vars.empty()) {  // the shell's pid is the service's: exec keeps it
            std::string script;
            for (const auto& v : pid_vars) script += v + "=$$ ";
            argv.insert(argv.begin(), {"/bin/sh", "-c", script + "exec \"$0\" \"$@\""});
        }
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        std::vector<std::string> vars;
        for (char** e = environ; *e; ++e) vars.emplace_back(*e);
        vars.insert(vars.end(), env.begin(), env.end());
        std::vector<char*> envp;
        for (auto& v : vars) envp.push_back(v.data());
        envp.push_back(nullptr);
        int rc = ::posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), envp.data());
        for (int fd : high) ::close(fd);
        posix_spawn_file_actions_destroy(&fa);
        ::close(in[0]);
        ::close(out[1]);
        REQUIRE_MESSAGE(rc == 0, "cannot start " << argv[0] << ": " << std::strerror(rc));
        stdin_ = in[1];
        stdout_ = out[0];
    }
    Process(const Process&) = delete;
    ~Process() {
        if (pid_ > 0 && !status_) {
            ::kill(pid_, SIGKILL);
            wait();
        }
        if (stdin_ >= 0) ::close(stdin_);
        if (stdout_ >= 0) ::close(stdout_);
    }

    pid_t pid() const { return pid_; }

    // Next line of the child's stdout, waiting up to `timeout`; nullopt on timeout or EOF.
    std::optional<std::string> read_line(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            if (auto nl = buf_.find('\n'); nl != std::string::npos) {
                auto line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                return line;
            }
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{stdout_, POLLIN, 0};
            if (::poll(&p, 1, int(left.count())) <= 0) continue;
            char tmp[4096];
            ssize_t n = ::read(stdout_, tmp, sizeof tmp);
            if (n <= 0) return std::nullopt;
            buf_.append(tmp, std::size_t(n));
        }
    }
    void expect_ready() {
        auto l = read_line();
        REQUIRE_MESSAGE(l.has_value(), "process " << pid_ << " did not get ready");
        REQUIRE(*l == "READY");
    }
    void write_line(const std::string& s) {
        std::string l = s + "\n";
        REQUIRE(::write(stdin_, l.data(), l.size()) == ssize_t(l.size()));
    }
    void close_stdin() {
        ::close(stdin_);
        stdin_ = -1;
    }
    // Waits for exit (generous bound); returns the exit status as from waitpid.
    int wait(std::chrono::seconds timeout = std::chrono::seconds(300)) {
        if (status_) return *status_;
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        int st = 0;
        for (;;) {
            pid_t r = ::waitpid(pid_, &st, WNOHANG);
            if (r == pid_) break;
            if (std::chrono::steady_clock::now() > deadline) {
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, &st, 0);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        status_ = st;
        return st;
    }
    int exit_code(std::chrono::seconds timeout = std::chrono::seconds(300)) {
        int st = wait(timeout);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    void kill(int sig) {
        if (!status_) ::kill(pid_, sig);  // never signal a pid that was already reaped (it may be reused)
    }

    // utime + stime of the process in clock ticks (/proc/<pid>/stat).
    long cpu_ticks() const {
        std::ifstream f("/proc/" + std::to_string(pid_) + "/stat");
        std::string all((std::istreambuf_iterator<char>(f)), {});
        auto rp = all.rfind(')');
        std::istringstream rest(all.substr(rp + 2));
        std::string field;
        long utime = 0, stime = 0;
        for (int i = 3; i <= 15 && rest >> field; ++i) {
            if (i == 14) utime = std::stol(field);
            if (i == 15) stime = std::stol(field);
        }
        return utime + stime;
    }

private:
    pid_t pid_ = -1;
    int stdin_ = -1;
    int stdout_ = -1;
    std::string buf_;
    std::optional<int> status_;
};

// A real rvoip-eventd on a socket and shm prefix of its own, run as systemd runs the service: with a
// service manager (service_manager.hpp) that keeps its sealed segments across restarts. With
// `--segments named` among the flags it keeps named /dev/shm segments instead.
class Broker {
public:
    // `extra`: more rvoip-eventd flags. `cleanup`: --cleanup, so a SIGTERM removes the segments; without
    // it a stopped broker leaves them for the next one to adopt (the destructor removes them).
    // `before_start`: called once the socket path and the service manager exist, before the first start
    // (to set a watchdog, or watch the notifications from the first one on).
    explicit Broker(std::vector<std::string> extra = {}, bool cleanup = true,
                    const std::function<void(Broker&)>& before_start = {})
        : dir_(make_dir()), socket_((dir_ / "broker.sock").string()), extra_(std::move(extra)), cleanup_(cleanup),
          manager_(dir_ / "notify.sock") {
        static int n = 0;
        prefix_ = "rvoip-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
        if (before_start) before_start(*this);
        start();
    }
    // Stops the broker with `sig` (SIGKILL: a crash, which keeps its segments) and starts a new one on the
    // same socket and shm prefix.
    void restart(int sig) {
        proc_->kill(sig);
        proc_->wait(std::chrono::seconds(30));
        proc_.reset();
        start();
    }
    ~Broker() {
        if (proc_) {
            proc_->kill(SIGTERM);
            proc_->wait(std::chrono::seconds(30));
        }
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
        for (auto& e : std::filesystem::directory_iterator("/dev/shm", ec))
            if (e.path().filename().string().starts_with(prefix_ + ".")) std::filesystem::remove(e.path(), ec);
    }
    const std::string& socket() const { return socket_; }
    const std::string& prefix() const { return prefix_; }
    Process& process() { return *proc_; }
    ServiceManager& manager() { return manager_; }
    int stop() {
        proc_->kill(SIGTERM);
        return proc_->exit_code(std::chrono::seconds(30));
    }

    bool accepts() const {
        int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, socket_.c_str(), sizeof a.sun_path - 1);
        bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        ::close(fd);
        return ok;
    }

private:
    void start() {
        std::vector<std::string> argv{RVOIP_EVENTD_PATH, "--foreground", "--socket", socket_, "--shm-prefix", prefix_, "--log-level", "warn"};
        // An empty configuration unless the test brings one: a host's /etc/rvoip-events/eventd.toml must
        // never change what a test sees.
        if (std::find(extra_.begin(), extra_.end(), "--config") == extra_.end()) argv.insert(argv.end(), {"--config", "/dev/null"});
        if (cleanup_) argv.push_back("--cleanup");
        argv.insert(argv.end(), extra_.begin(), extra_.end());
        auto a = manager_.activation();
        proc_.emplace(std::move(argv), std::move(a.env), a.fds, std::move(a.pid_vars));
        for (int fd : a.fds) ::close(fd);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (!accepts()) {
            REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline, "rvoip-eventd did not start");
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    static std::filesystem::path make_dir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "rvoip-test-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        return tmpl;
    }
    std::filesystem::path dir_;
    std::string socket_;
    std::string prefix_;
    std::vector<std::string> extra_;
    bool cleanup_ = true;
    ServiceManager manager_;
    std::optional<Process> proc_;
};

// Raw publishers on "<base>.0" .. "<base>.<n-1>" (the multi-topic burst tests).
inline std::vector<RawPublisher> raw_publishers(EventSystem& bus, const std::string& base, int n) {
    std::vector<RawPublisher> pubs;
    for (int i = 0; i < n; ++i) {
        auto p = bus.raw_publisher(base + "." + std::to_string(i));
        REQUIRE(p.has_value());
        pubs.push_back(std::move(*p));
    }
    return pubs;
}

// argv for rvoip-test-peer against `b`.
inline std::vector<std::string> peer(const Broker& b, std::vector<std::string> args) {
    std::vector<std::string> v{RVOIP_PEER_PATH, "--socket", b.socket()};
    v.insert(v.end(), args.begin(), args.end());
    return v;
}

// Parses "key value key value ..." result lines.
inline std::string field(const std::string& line, const std::string& key) {
    std::istringstream in(line);
    std::string k, v;
    while (in >> k >> v)
        if (k == key) return v;
    return {};
}

// One burst of the multi-topic tests: Low on every topic but the last, then Critical on the last, all
// committed before the (stopped) consumer resumes.
inline void publish_burst(std::vector<RawPublisher>& pubs) {
    for (std::size_t i = 0; i + 1 < pubs.size(); ++i) REQUIRE(pubs[i].publish("low", Priority::low).has_value());
    REQUIRE(pubs.back().publish("critical", Priority::critical).has_value());
}

// The consumer's report after burst `burst` of publish_burst over `topics` topics: `count_key` says how
// many events it took in all, one return from parking per burst although every topic's doorbell rang,
// the Critical event (lane 0) of the last topic first and the Low one (lane 3) of every other topic.
inline void check_burst(const std::string& line, const std::string& count_key, int topics, int burst) {
    INFO("burst " << burst << ": " << line);
    CHECK(std::stoi(field(line, count_key)) == topics * burst);
    CHECK(std::stoi(field(line, "wakeups")) == burst);
    const std::string order = field(line, "order");
    CHECK(order.rfind("0:" + std::to_string(topics - 1) + ",", 0) == 0);
    for (int i = 0; i + 1 < topics; ++i) CHECK(order.find("3:" + std::to_string(i)) != std::string::npos);
}

}  // namespace rvoip::events::test
