#include "bench/processes.hpp"

#include <algorithm>
#include <cstdio>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

namespace rvoip::bench {

namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void on_stop_signal(int) { g_interrupted.store(true); }

void close_fd(int& fd) noexcept {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status) == 0 ? "" : "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("killed by signal ") + ::strsignal(WTERMSIG(status));
    return "ended with wait status " + std::to_string(status);
}

// Milliseconds from now to `deadline`, clamped for poll(2).
int poll_timeout(std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left, 0, 1000));  // wake at least every second to check the flag
}

}  // namespace

Expected<std::string> self_exe() {
    std::error_code ec;
    auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) return failure("cannot read /proc/self/exe: " + ec.message());
    return p.string();
}

std::string dirname_of(const std::string& path) { return std::filesystem::path(path).parent_path().string(); }

void install_signal_handlers() {
    struct sigaction sa{};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a blocking poll or waitpid returns EINTR and we notice the flag
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
}

bool interrupted() noexcept { return g_interrupted.load(); }

// ------------------------------------------------------------------------------------------------------
// Child

Expected<Child> Child::spawn(Spec spec) {
    if (spec.argv.empty()) return failure("nothing to run for " + spec.label);
    int in[2] = {-1, -1}, out[2] = {-1, -1}, report[2] = {-1, -1};
    auto close_all = [&] {
        for (int* p : {in, out, report}) close_fd(p[0]), close_fd(p[1]);
    };
    // All pipes are close-on-exec, so no child inherits another's pipe ends and EOF means "that child is done".
    if ((spec.piped && (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0)) || ::pipe2(report, O_CLOEXEC) != 0) {
        auto e = errno;
        close_all();
        return failure("pipe: " + std::string(std::strerror(e)));
    }
    std::vector<char*> argv;
    for (auto& a : spec.argv) argv.push_back(a.data());
    argv.push_back(nullptr);

    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
        auto e = errno;
        close_all();
        return failure("fork: " + std::string(std::strerror(e)));
    }
    if (pid == 0) {
        // Child, between fork and exec: async-signal-safe calls only.
        ::prctl(PR_SET_PDEATHSIG, spec.death_signal);  // survives exec: dies with us
        if (::getppid() != parent) ::_exit(127);       // we died before prctl took effect
        ::signal(SIGPIPE, SIG_DFL);                    // an ignored signal would stay ignored across exec
        if (spec.piped && (::dup2(in[0], 0) < 0 || ::dup2(out[1], 1) < 0)) ::_exit(127);
        ::execvp(argv[0], argv.data());
        int e = errno;
        (void)!::write(report[1], &e, sizeof e);
        ::_exit(127);
    }
    close_fd(in[0]);
    close_fd(out[1]);
    close_fd(report[1]);
    // The report pipe closes on a successful exec; an errno arrives if exec failed.
    int exec_errno = 0;
    ssize_t n;
    do n = ::read(report[0], &exec_errno, sizeof exec_errno);
    while (n < 0 && errno == EINTR);
    close_fd(report[0]);

    Child c;
    c.pid_ = pid;
    c.in_ = in[1];
    c.out_ = out[0];
    c.label_ = std::move(spec.label);
    if (n == sizeof exec_errno) {
        c.reap(std::chrono::milliseconds(0));
        return failure("cannot run '" + spec.argv[0] + "' for " + c.label_ + ": " + std::strerror(exec_errno));
    }
    return c;
}

Child::Child(Child&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)),
      in_(std::exchange(o.in_, -1)),
      out_(std::exchange(o.out_, -1)),
      label_(std::move(o.label_)),
      buf_(std::move(o.buf_)),
      eof_(o.eof_) {}

Child& Child::operator=(Child&& o) noexcept {
    if (this != &o) {
        (void)reap(std::chrono::milliseconds(0));
        pid_ = std::exchange(o.pid_, -1);
        in_ = std::exchange(o.in_, -1);
        out_ = std::exchange(o.out_, -1);
        label_ = std::move(o.label_);
        buf_ = std::move(o.buf_);
        eof_ = o.eof_;
    }
    return *this;
}

Child::~Child() {
    // Error paths land here with the child still running: stop it at once, never leave it behind.
    (void)reap(std::chrono::milliseconds(0));
}

Done Child::send_line(std::string_view line) {
    std::string s(line);
    s += '\n';
    std::size_t done = 0;
    while (done < s.size()) {
        ssize_t n = ::write(in_, s.data() + done, s.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return failure("cannot write to " + label_ + ": " + std::strerror(errno));
        done += std::size_t(n);
    }
    return {};
}

bool Child::fill() {
    char chunk[4096];
    ssize_t n = ::read(out_, chunk, sizeof chunk);
    if (n > 0) buf_.append(chunk, std::size_t(n));
    else if (n == 0 || (errno != EINTR && errno != EAGAIN)) eof_ = true;
    return !eof_;
}

bool Child::has_line() const noexcept { return buf_.find('\n') != std::string::npos; }

std::string Child::take_line() {
    auto nl = buf_.find('\n');
    std::string line = buf_.substr(0, nl);
    buf_.erase(0, nl + 1);
    return line;
}

Expected<std::string> Child::read_line(std::chrono::steady_clock::time_point deadline) {
    for (;;) {
        if (has_line()) return take_line();
        if (eof_) return failure(label_ + " closed its output");
        if (interrupted()) return failure("interrupted");
        if (std::chrono::steady_clock::now() >= deadline) return failure("timed out waiting for " + label_);
        pollfd p{out_, POLLIN, 0};
        if (::poll(&p, 1, poll_timeout(deadline)) > 0) fill();
    }
}

void Child::signal(int sig) noexcept {
    if (pid_ > 0) ::kill(pid_, sig);
}

std::string Child::reap(std::chrono::milliseconds grace) {
    if (pid_ <= 0) return "";
    close_fd(in_);  // a child waiting for "go" sees EOF and exits
    using clock = std::chrono::steady_clock;
    // Phases: wait `grace` for a clean exit, then SIGTERM and 2 s, then SIGKILL (which cannot be refused).
    const auto term_at = clock::now() + grace;
    const auto kill_at = term_at + std::chrono::seconds(2);
    bool termed = false, killed = false;
    int status = 0;
    for (;;) {
        pid_t r = ::waitpid(pid_, &status, WNOHANG);
        if (r == pid_ || (r < 0 && errno == ECHILD)) break;
        auto now = clock::now();
        if (!termed && now >= term_at) termed = true, ::kill(pid_, SIGTERM);
        if (!killed && now >= kill_at) {
            killed = true;
            ::kill(pid_, SIGKILL);
            while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
            }
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    pid_ = -1;
    close_fd(out_);
    return describe_status(status);
}

Expected<std::vector<std::string>> wait_for_lines(std::vector<Child*> children, std::string_view prefix,
                                                  std::chrono::steady_clock::time_point deadline) {
    std::vector<std::string> lines(children.size());
    std::vector<bool> done(children.size(), false);
    std::size_t left = children.size();
    while (left > 0) {
        std::vector<pollfd> fds;
        std::vector<std::size_t> index;
        for (std::size_t i = 0; i < children.size(); ++i) {
            if (done[i]) continue;
            Child& c = *children[i];
            while (!done[i] && c.has_line()) {
                std::string line = c.take_line();
                if (!line.starts_with(prefix)) return failure(c.label() + " said '" + line + "', expected '" + std::string(prefix) + "...'");
                lines[i] = std::move(line);
                done[i] = true;
                --left;
            }
            if (done[i]) continue;
            fds.push_back(pollfd{c.out_fd(), POLLIN, 0});
            index.push_back(i);
        }
        if (left == 0) break;
        if (interrupted()) return failure("interrupted");
        if (std::chrono::steady_clock::now() >= deadline)
            return failure("timed out waiting for '" + std::string(prefix) + "' from " + children[index[0]]->label());
        if (::poll(fds.data(), fds.size(), poll_timeout(deadline)) <= 0) continue;
        for (std::size_t k = 0; k < fds.size(); ++k) {
            if (!fds[k].revents) continue;
            Child& c = *children[index[k]];
            if (!c.fill() && !c.has_line()) {
                // It closed its output without the line: it failed (its own message is on stderr).
                auto how = c.reap(std::chrono::milliseconds(1000));
                return failure(c.label() + " stopped before reporting '" + std::string(prefix) + "'" + (how.empty() ? "" : " (" + how + ")"));
            }
        }
    }
    return lines;
}

// ------------------------------------------------------------------------------------------------------
// BrokerProcess

namespace {

// True when something accepts connections on the broker's socket.
bool socket_accepts(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

// Shared-memory segments the broker left under our prefix (it should leave none with --cleanup).
std::vector<std::string> leftover_segments(const std::string& prefix) {
    std::vector<std::string> names;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/dev/shm", ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        auto name = it->path().filename().string();
        if (name.starts_with(prefix + ".")) names.push_back(name);
    }
    return names;
}

// A bench that was SIGKILLed could not remove its directory (its broker, stopped by the parent-death
// signal, did remove the socket inside). Removes such directories: empty, and named after a dead pid.
void remove_stale_dirs(const std::string& base) {
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(base, ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        auto name = it->path().filename().string();
        int pid = 0;
        if (std::sscanf(name.c_str(), "rvoip-bench-%d-", &pid) != 1 || pid <= 0) continue;
        if (::kill(pid, 0) == 0 || errno != ESRCH) continue;
        ::rmdir(it->path().c_str());  // fails, harmlessly, unless it is empty
    }
}

}  // namespace

Expected<BrokerProcess> BrokerProcess::start(const std::string& eventd_path) {
    if (::access(eventd_path.c_str(), X_OK) != 0)
        return failure("rvoip-eventd not found at '" + eventd_path + "' (build the rvoip-eventd target, pass --eventd, or use --socket)");
    const char* tmp = std::getenv("TMPDIR");
    const std::string base = tmp && *tmp ? tmp : "/tmp";
    remove_stale_dirs(base);
    std::string templ = base + "/rvoip-bench-" + std::to_string(::getpid()) + "-XXXXXX";
    if (!::mkdtemp(templ.data())) return failure("cannot create a directory from '" + templ + "': " + std::strerror(errno));

    BrokerProcess b;  // from here on, its destructor stops whatever we started and removes the directory
    b.dir_ = templ;
    b.socket_ = b.dir_ + "/broker.sock";
    b.shm_prefix_ = "rvoip-bench-" + std::to_string(::getpid());
    if (b.socket_.size() >= sizeof(sockaddr_un::sun_path)) return failure("socket path '" + b.socket_ + "' is too long; set a shorter TMPDIR");

    auto c = Child::spawn({.argv = {eventd_path, "--foreground", "--socket", b.socket_, "--shm-prefix", b.shm_prefix_, "--cleanup",
                                    "--log-level", "warn"},
                           .label = "rvoip-eventd",
                           .piped = false,
                           .death_signal = SIGTERM});  // SIGTERM, not SIGKILL: it then removes its segments
    if (!c) return failure(c.error());
    b.child_ = std::move(*c);

    // Ready when the socket accepts; give up if the broker exits or takes more than 10 s.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
        if (socket_accepts(b.socket_)) return b;
        int status = 0;
        if (::waitpid(b.child_.pid(), &status, WNOHANG) == b.child_.pid()) {
            b.child_ = Child();  // already reaped
            return failure("rvoip-eventd exited during start-up (" + describe_status(status) + "); see its message above");
        }
        if (interrupted()) return failure("interrupted");
        if (std::chrono::steady_clock::now() >= deadline) return failure("rvoip-eventd did not accept connections on '" + b.socket_ + "' within 10 s");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

BrokerProcess::BrokerProcess(BrokerProcess&& o) noexcept
    : child_(std::move(o.child_)),
      dir_(std::exchange(o.dir_, {})),
      socket_(std::exchange(o.socket_, {})),
      shm_prefix_(std::exchange(o.shm_prefix_, {})) {}

Done BrokerProcess::stop() {
    Done result;
    if (child_.running()) {
        child_.signal(SIGTERM);
        auto how = child_.reap(std::chrono::seconds(5));
        if (!how.empty()) result = failure("rvoip-eventd " + how);
    }
    if (!shm_prefix_.empty()) {
        auto left = leftover_segments(shm_prefix_);
        for (auto& name : left) ::unlink(("/dev/shm/" + name).c_str());
        if (!left.empty() && result)
            result = failure("rvoip-eventd left " + std::to_string(left.size()) + " shared-memory segment(s) despite --cleanup (e.g. " + left[0] + "); removed them");
        shm_prefix_.clear();
    }
    if (!dir_.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
        dir_.clear();
    }
    return result;
}

}  // namespace rvoip::bench
