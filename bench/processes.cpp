#include "bench/processes.hpp"

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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

// ------------------------------------------------------------------------------------------------------
// /proc

namespace {

// First field of /proc/<pid>/task/<tid>/schedstat: nanoseconds on the CPU.
std::int64_t schedstat_ns(const std::filesystem::path& task) {
    std::ifstream in(task / "schedstat");
    std::int64_t ns = -1;
    if (!(in >> ns)) return -1;
    return ns;
}

// utime + stime (fields 14 and 15 of /proc/<pid>/stat), all threads, dead ones included.
std::int64_t stat_ns(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto paren = text.rfind(')');  // the command name may hold spaces and parentheses
    if (paren == std::string::npos) return -1;
    std::istringstream rest(text.substr(paren + 2));
    std::string field;
    std::int64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {  // field 3 is the state
        if (i == 14) utime = std::stoll(field);
        if (i == 15) stime = std::stoll(field);
    }
    return (utime + stime) * (1'000'000'000 / ::sysconf(_SC_CLK_TCK));
}

}  // namespace

std::int64_t cpu_ns_of(pid_t pid) {
    if (pid <= 0) return -1;
    std::error_code ec;
    std::int64_t sum = 0;
    bool any = false;
    const std::filesystem::path tasks = "/proc/" + std::to_string(pid) + "/task";
    for (auto it = std::filesystem::directory_iterator(tasks, ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        const auto ns = schedstat_ns(it->path());
        if (ns < 0) return stat_ns(pid);  // no schedstat in this kernel
        sum += ns, any = true;
    }
    return any ? sum : stat_ns(pid);
}

std::int64_t own_cpu_ns() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto ns = [](const timeval& t) { return std::int64_t(t.tv_sec) * 1'000'000'000 + std::int64_t(t.tv_usec) * 1000; };
    return ns(ru.ru_utime) + ns(ru.ru_stime);
}

Memory memory_of(pid_t pid) {
    Memory m;
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
        std::int64_t* field = line.starts_with("VmRSS:") ? &m.rss : line.starts_with("RssAnon:") ? &m.rss_anon
                              : line.starts_with("RssShmem:")                                 ? &m.rss_shmem
                                                                                              : nullptr;
        if (!field) continue;
        std::int64_t kb = 0;
        if (std::sscanf(line.c_str() + line.find(':') + 1, "%" SCNd64, &kb) == 1) *field = kb * 1024;
    }
    return m;
}

pid_t listener_pid(const std::string& socket_path) {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    pid_t pid = -1;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
        pid = cred.pid;
    ::close(fd);
    return pid;
}

// ------------------------------------------------------------------------------------------------------
// Harness

int fail(const std::string& msg) {
    std::fprintf(stderr, "rvoip-bench: %s\n", msg.c_str());
    return 1;
}

int usable_cores() {
    cpu_set_t set;
    if (::sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    return static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
}

std::string unique_suffix() {
    timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    const auto stamp = (std::uint64_t(ts.tv_sec) * 1'000'000'000u + std::uint64_t(ts.tv_nsec)) & 0xff'ffff'ffffu;
    char buf[48];
    std::snprintf(buf, sizeof buf, "%d.%" PRIx64, int(::getpid()), stamp);
    return buf;
}

std::vector<std::string> split_words(const std::string& s) {
    std::istringstream in(s);
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    return words;
}

Expected<Session> open_session(const Common& c) {
    Session s;
    auto exe = self_exe();
    if (!exe) return failure(exe.error());
    s.exe = *exe;
    if (!c.socket.empty()) {
        s.socket = c.socket;
        s.broker_pid = listener_pid(c.socket);
        return s;
    }
    auto b = BrokerProcess::start(c.eventd.empty() ? dirname_of(s.exe) + "/rvoip-eventd" : c.eventd);
    if (!b) return failure(b.error());
    s.socket = b->socket_path();
    s.broker_pid = b->pid();
    s.broker.emplace(std::move(*b));
    return s;
}

Expected<Child> spawn_role(const Session& s, const Common& c, const RoleOptions& r, bool wrapped) {
    std::vector<std::string> argv = wrapped ? split_words(c.wrap)
                                    : r.role == "subscriber" && r.id == 1 ? split_words(c.wrap_subscriber)
                                                                          : std::vector<std::string>{};
    auto num = [](auto v) { return std::to_string(v); };
    argv.insert(argv.end(), {s.exe, "_child", "--role", r.role, "--socket", r.socket, "--size", num(r.size), "--batch", num(r.batch),
                             "--seconds", num(r.seconds), "--count", num(r.count), "--warmup", num(r.warmup), "--mode", r.wait,
                             "--capacity", num(r.capacity), "--id", num(r.id), "--publishers", num(r.publishers), "--interval-ns",
                             num(r.interval_ns), "--threads", num(r.threads), "--calls", num(r.calls)});
    if (!r.topic.empty()) argv.insert(argv.end(), {"--topic", r.topic});
    if (!r.topic2.empty()) argv.insert(argv.end(), {"--topic2", r.topic2});
    if (r.touch) argv.push_back("--touch");
    if (r.exclusive) argv.push_back("--exclusive");
    if (r.per_subscription) argv.push_back("--per-subscription");
    auto child = Child::spawn({.argv = std::move(argv), .label = r.role + " " + std::to_string(r.id)});
    if (child && c.verbose) std::fprintf(stderr, "rvoip-bench: %s is pid %d\n", child->label().c_str(), int(child->pid()));
    return child;
}

Expected<std::pair<Fields, Fields>> ping_pong(const Session& s, const Common& c, std::uint32_t size, bool spin, std::uint64_t count,
                                              std::uint64_t warmup, std::int64_t interval_ns) {
    RoleOptions base;
    base.socket = s.socket;
    const auto suffix = unique_suffix();
    base.topic = "bench.ping." + suffix;
    base.topic2 = "bench.pong." + suffix;
    base.size = size;
    base.wait = spin ? "spin" : "block";
    base.count = count;
    base.warmup = warmup;
    base.capacity = 1u << 20;  // one event in flight at a time: the lane size does not matter
    base.interval_ns = interval_ns;
    std::vector<Child> children;
    for (auto role : {"echoer", "pinger"}) {
        RoleOptions r = base;
        r.role = role;
        r.id = 1;
        auto child = spawn_role(s, c, r, r.role == "pinger");
        if (!child) return std::unexpected(child.error());
        children.push_back(std::move(*child));
    }
    // The children give up after 30 s without an event; this only catches a child stuck elsewhere.
    auto fields = run_children(children, {1}, std::chrono::minutes(10));
    if (!fields) return std::unexpected(fields.error());
    for (auto& child : children)
        if (auto how = child.reap(std::chrono::seconds(5)); !how.empty()) return failure(child.label() + " " + how);
    return std::pair<Fields, Fields>((*fields)[0], (*fields)[1]);
}

Done finish(std::vector<Child>& children, Session& s) {
    Done result;
    for (auto& c : children) {
        auto how = c.reap(std::chrono::seconds(5));
        if (!how.empty() && result) result = failure(c.label() + " " + how);
    }
    if (s.broker) {
        auto st = s.broker->stop();
        if (!st && result) result = st;
    }
    return result;
}

Expected<Fields> Fields::parse(const std::string& line, const std::string& who) {
    Fields f;
    auto words = split_words(line);
    for (std::size_t i = 1; i < words.size(); ++i) {  // words[0] says what the line is ("result", "step", ...)
        const auto& word = words[i];
        auto eq = word.find('=');
        std::int64_t v = 0;
        if (eq == std::string::npos || std::from_chars(word.data() + eq + 1, word.data() + word.size(), v).ec != std::errc{})
            return failure(who + " reported a malformed result: '" + line + "'");
        f.values_[word.substr(0, eq)] = v;
    }
    f.who_ = who;
    return f;
}

std::int64_t Fields::operator[](const std::string& key) const {
    auto it = values_.find(key);
    if (it != values_.end()) return it->second;
    std::fprintf(stderr, "rvoip-bench: %s did not report '%s'\n", who_.c_str(), key.c_str());
    return 0;
}

Expected<std::vector<Fields>> run_children(std::vector<Child>& children, const std::vector<std::size_t>& need_go,
                                           std::chrono::steady_clock::duration run_time) {
    using steady = std::chrono::steady_clock;
    std::vector<Child*> all;
    for (auto& c : children) all.push_back(&c);
    // Start-up includes connecting and opening topics: seconds at most, unless the machine is swamped.
    auto ready = wait_for_lines(all, "ready", steady::now() + std::chrono::seconds(30));
    if (!ready) return failure(ready.error());
    for (auto i : need_go)
        if (auto st = children[i].send_line("go"); !st) return failure(st.error());
    auto results = wait_for_lines(all, "result", steady::now() + run_time);
    if (!results) return failure(results.error());
    std::vector<Fields> fields;
    for (std::size_t i = 0; i < children.size(); ++i) {
        auto f = Fields::parse((*results)[i], children[i].label());
        if (!f) return failure(f.error());
        fields.push_back(std::move(*f));
    }
    return fields;
}

Expected<Fields> read_fields(Child& c, std::string_view prefix, std::chrono::steady_clock::duration timeout) {
    auto line = c.read_line(std::chrono::steady_clock::now() + timeout);
    if (!line) return failure(line.error());
    if (!line->starts_with(prefix)) return failure(c.label() + " said '" + *line + "', expected '" + std::string(prefix) + "...'");
    return Fields::parse(*line, c.label());
}

std::string json_escape(std::string_view s) {
    std::string out;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') out += '\\', out += ch;
        else if (static_cast<unsigned char>(ch) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", ch);
            out += buf;
        } else out += ch;
    }
    return out;
}

Json& Json::real(std::string_view k, double v, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return raw(k, buf);
}

Json& Json::reals(std::string_view k, const std::vector<double>& v, int decimals) {
    std::string a = "[";
    for (std::size_t i = 0; i < v.size(); ++i) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s%.*f", i ? "," : "", decimals, v[i]);
        a += buf;
    }
    return raw(k, a + "]");
}

Json& Json::nums(std::string_view k, const std::vector<std::int64_t>& v) {
    std::string a = "[";
    for (std::size_t i = 0; i < v.size(); ++i) a += (i ? "," : "") + std::to_string(v[i]);
    return raw(k, a + "]");
}

Json& Json::objs(std::string_view k, const std::vector<Json>& v) {
    std::string a = "[";
    for (std::size_t i = 0; i < v.size(); ++i) a += (i ? "," : "") + v[i].text();
    return raw(k, a + "]");
}

Json& Json::raw(std::string_view k, const std::string& v) {
    if (!body_.empty()) body_ += ',';
    body_ += "\"" + json_escape(k) + "\":" + v;
    return *this;
}

void add_load_notes(Json& j, int spinning) {
    const int cores = usable_cores();
    j.num("cores", cores).num("spinning_processes", spinning).boolean("distorted", spinning > cores);
    if (spinning > cores)
        j.str("note", std::to_string(spinning) + " spinning processes on " + std::to_string(cores) +
                          " cores: they time-share the cores, so these figures are distorted");
}

std::int64_t percentile(const std::vector<std::int64_t>& sorted, double q) {
    if (sorted.empty()) return 0;
    auto rank = static_cast<std::size_t>(q * double(sorted.size()) + 0.999999);  // ceil, robust to rounding
    return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace rvoip::bench
