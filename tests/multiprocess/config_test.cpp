// rvoip-eventd's configuration file against the real daemon: --check-config, flags over the file, and
// SIGHUP reloads (new defaults for later topics, access rules added and removed, per-topic settings, an
// invalid file refused). The daemon's log is read by the test: what a reload says is part of the contract.
#include "daemon/broker.hpp"
#include "rvoip/events.hpp"
#include "tests/multiprocess/as_user.hpp"
#include "tests/multiprocess/harness.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

using namespace rvoip::events;
using namespace rvoip::events::test;

namespace {

constexpr std::size_t kNormal = std::size_t(Priority::normal);
constexpr std::size_t kLow = std::size_t(Priority::low);
constexpr uid_t kFirst = 20001, kSecond = 20002;

std::filesystem::path make_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "rvoip-cfg-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    ::chmod(tmpl.c_str(), 0755);  // other users reach the socket: the access rules alone decide
    return tmpl;
}

// rvoip-eventd with stdout and stderr in one pipe: what it says, until it exits.
std::vector<std::string> run_to_end(std::vector<std::string> args, int& exit_code) {
    args.insert(args.begin(), {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", RVOIP_EVENTD_PATH});
    Process p(std::move(args));
    std::vector<std::string> lines;
    while (auto l = p.read_line(std::chrono::seconds(30))) lines.push_back(*l);
    exit_code = p.exit_code();
    return lines;
}

std::string text(const std::vector<std::string>& lines) {
    std::string s;
    for (const auto& l : lines) s += l + "\n";
    return s;
}

bool any_has(const std::vector<std::string>& lines, std::string_view text) {
    return std::any_of(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(text) != std::string::npos; });
}

// A daemon started with --config FILE in a directory of its own; its log (stderr) is the test's to read.
class Daemon {
public:
    explicit Daemon(const std::string& config, std::vector<std::string> flags = {}) : dir_(make_dir()) {
        static int n = 0;
        config_ = (dir_ / "eventd.toml").string();
        socket_ = (dir_ / "broker.sock").string();
        prefix_ = "rvoip-cfg-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
        write(config);
        std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", RVOIP_EVENTD_PATH, "--foreground",
                                      "--config", config_, "--socket", socket_, "--shm-prefix", prefix_, "--cleanup",
                                      "--socket-mode", "0666"};
        argv.insert(argv.end(), flags.begin(), flags.end());
        proc_.emplace(std::move(argv));
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (!connectable()) {
            REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline, "rvoip-eventd did not start");
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    ~Daemon() {
        proc_->kill(SIGTERM);
        proc_->wait(std::chrono::seconds(30));
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
        for (auto& e : std::filesystem::directory_iterator("/dev/shm", ec))
            if (e.path().filename().string().starts_with(prefix_ + ".")) std::filesystem::remove(e.path(), ec);
    }
    void write(const std::string& config) { std::ofstream(config_, std::ios::trunc) << config; }
    const std::string& socket() const { return socket_; }
    const std::string& config_path() const { return config_; }

    // SIGHUP, then what the daemon logged up to the line that ends the reload (applied or refused).
    std::vector<std::string> reload() {
        proc_->kill(SIGHUP);
        std::vector<std::string> lines;
        for (;;) {
            auto l = proc_->read_line(std::chrono::seconds(30));
            REQUIRE_MESSAGE(l.has_value(), "no end of the reload in the log");
            lines.push_back(*l);
            if (l->find("configuration reloaded") != std::string::npos || l->find("configuration not reloaded") != std::string::npos)
                return lines;
        }
    }

private:
    bool connectable() const {
        auto bus = EventSystemBuilder().socket_path(socket_).client_name("cfg-probe").control_timeout(std::chrono::milliseconds(200)).build();
        return bus.has_value();
    }
    std::filesystem::path dir_;
    std::string config_, socket_, prefix_;
    std::optional<Process> proc_;
};

Result<EventSystem> connect(const std::string& socket) { return EventSystemBuilder().socket_path(socket).client_name("cfg-test").build(); }

// The lanes a topic got, opened (and created if new) by root, asking for `ask`.
std::array<layout::LaneSettings, layout::kLanes> lanes_of(const std::string& socket, const std::string& topic, TopicOptions ask = {}) {
    auto bus = connect(socket);
    REQUIRE(bus.has_value());
    auto pub = bus->raw_publisher(topic, PublisherOptions{ask});
    REQUIRE_MESSAGE(pub.has_value(), pub.error().what());
    return pub->topic().lanes;
}

// What `uid` gets when it connects and publishes on `topic`: "ok", or the error code.
std::string try_as(uid_t uid, const std::string& socket, const std::string& topic) {
    return as_user(uid, uid, {}, [&] {
               auto bus = connect(socket);
               if (!bus) return std::string(to_string(bus.error().code));
               auto pub = bus->raw_publisher(topic);
               return pub ? std::string("ok") : std::string(to_string(pub.error().code));
           })
        .said;
}

}  // namespace

TEST_CASE("--check-config explains every error with its line; a valid file passes") {
    const auto dir = make_dir();
    const auto bad = (dir / "bad.toml").string();
    std::ofstream(bad) << "[lanes.high]\n"
                          "capacity = \"2M\"\n"
                          "capcity = \"4M\"\n"
                          "\n"
                          "[limits]\n"
                          "max_topics = -1\n";
    int rc = -1;
    auto out = run_to_end({"--check-config", bad}, rc);
    INFO(text(out));
    CHECK(rc == 1);
    CHECK(any_has(out, bad + ":3: unknown key 'capcity' in [lanes.high]"));
    CHECK(any_has(out, "    3 | capcity = \"4M\""));
    CHECK(any_has(out, bad + ":6: limits.max_topics: -1 is outside 1..4096"));
    CHECK(any_has(out, "2 error(s)"));

    const auto good = (dir / "good.toml").string();
    std::ofstream(good) << "[lanes.normal]\ncapacity = \"8M\"\n";
    out = run_to_end({"--check-config", good}, rc);
    CHECK(rc == 0);
    CHECK(any_has(out, good + ": valid"));
    std::filesystem::remove_all(dir);
}

TEST_CASE("a missing --config file is an error, with its name") {
    int rc = -1;
    auto out = run_to_end({"--foreground", "--config", "/nonexistent/rvoip/eventd.toml", "--socket", "/tmp/rvoip-cfg-never.sock"}, rc);
    INFO(text(out));
    CHECK(rc == 2);
    CHECK(any_has(out, "/nonexistent/rvoip/eventd.toml: cannot read the configuration file: No such file or directory"));
}

TEST_CASE("command-line flags override the file, also after a reload, and --help says so") {
    int rc = -1;
    auto help = run_to_end({"--help"}, rc);
    CHECK(rc == 0);
    CHECK(any_has(help, "a flag overrides the file, also when SIGHUP reloads it"));

    Daemon d("[limits]\nmax_topics_per_client = 1\n", {"--max-topics-per-client", "2"});
    auto third_refused = [&](const std::string& round) {
        auto bus = connect(d.socket());
        REQUIRE(bus.has_value());
        REQUIRE(bus->raw_publisher(round + ".a").has_value());
        REQUIRE(bus->raw_publisher(round + ".b").has_value());  // the flag's 2, not the file's 1
        auto third = bus->raw_publisher(round + ".c");
        REQUIRE_FALSE(third.has_value());
        CHECK(third.error().code == Errc::limit_reached);
        CHECK(third.error().message.find("the limit is 2") != std::string::npos);
    };
    third_refused("first");
    d.write("[limits]\nmax_topics_per_client = 3\n");
    auto log = d.reload();
    INFO(text(log));
    CHECK(any_has(log, "configuration reloaded: 0 change(s)"));
    third_refused("second");
}

TEST_CASE("SIGHUP: a topic created after a reload gets the new defaults, and the log says what changed") {
    Daemon d("[lanes.normal]\ncapacity = \"8M\"\n");
    CHECK(lanes_of(d.socket(), "cfg.before")[kNormal].capacity == 8u << 20);
    d.write("[lanes.normal]\ncapacity = \"16M\"\n\n[limits]\nmax_topics = 100\n");
    auto log = d.reload();
    INFO(text(log));
    CHECK(any_has(log, "reload: lanes.normal.capacity: 8M -> 16M"));
    CHECK(any_has(log, "reload: limits.max_topics: 4096 -> 100"));
    CHECK(any_has(log, "configuration reloaded: 2 change(s)"));
    CHECK(lanes_of(d.socket(), "cfg.after")[kNormal].capacity == 16u << 20);
    CHECK(lanes_of(d.socket(), "cfg.before")[kNormal].capacity == 8u << 20);  // its rings stay as they were made
}

TEST_CASE("SIGHUP: an access rule added lets a uid in, one removed refuses it, an invalid file changes nothing") {
    REQUIRE_MESSAGE(::geteuid() == 0, "these tests switch to other users: run them as root (CI does)");
    auto rules = [](uid_t uid) {
        return "[lanes.normal]\ncapacity = \"8M\"\n\n[[access]]\npattern = \"cfg.*\"\nrights = [\"publish\", \"create\"]\nwho = [\"uid:" +
               std::to_string(uid) + "\"]\n";
    };
    Daemon d(rules(kFirst));
    CHECK(try_as(kFirst, d.socket(), "cfg.one") == "ok");
    CHECK(try_as(kSecond, d.socket(), "cfg.one") == "permission_denied");

    d.write(rules(kSecond));
    auto log = d.reload();
    INFO(text(log));
    CHECK(any_has(log, "reload: access rule added: cfg.* publish,create uid:20002"));
    CHECK(any_has(log, "reload: access rule removed: cfg.* publish,create uid:20001"));
    CHECK(try_as(kSecond, d.socket(), "cfg.two") == "ok");
    CHECK(try_as(kFirst, d.socket(), "cfg.two") == "permission_denied");

    // Errors on lines 3 and 9: refused whole, each error logged with its line; the rules and lanes stay.
    d.write("[lanes.normal]\ncapacity = \"32M\"\ncapcity = \"1M\"\n\n[[access]]\npattern = \"cfg.*\"\nrights = [\"publish\", \"create\"]\n"
            "who = [\"uid:20001\"]\nwho_else = 1\n");
    log = d.reload();
    INFO(text(log));
    CHECK(any_has(log, "configuration not reloaded, the running one stays"));
    CHECK(any_has(log, d.config_path() + ":3: unknown key 'capcity' in [lanes.normal]"));
    CHECK(any_has(log, d.config_path() + ":9: unknown key 'who_else' in access[1]"));
    CHECK(try_as(kSecond, d.socket(), "cfg.three") == "ok");
    CHECK(try_as(kFirst, d.socket(), "cfg.three") == "permission_denied");
    CHECK(lanes_of(d.socket(), "cfg.four")[kNormal].capacity == 8u << 20);

    std::filesystem::remove(d.config_path());  // --config named it: gone is an error, not "no file"
    log = d.reload();
    CHECK(any_has(log, "cannot read the configuration file"));
    CHECK(try_as(kFirst, d.socket(), "cfg.five") == "permission_denied");
}

TEST_CASE("per-topic settings go by pattern, outrank the creator's request, and a reload adds them") {
    Daemon d(R"([[topic]]
pattern = "big.*"
lanes.normal = { capacity = "16M" }
lanes.low = { overflow = "fail" }
)");
    const auto ask = TopicOptions().capacity(Priority::normal, 1u << 20);
    auto big = lanes_of(d.socket(), "big.one", ask);
    CHECK(big[kNormal].capacity == 16u << 20);
    CHECK(big[kLow].overflow == Overflow::fail);
    auto small = lanes_of(d.socket(), "small.one", ask);
    CHECK(small[kNormal].capacity == 1u << 20);
    CHECK(small[kLow].overflow == Overflow::block);

    d.write(R"([[topic]]
pattern = "big.*"
lanes.normal = { capacity = "16M" }
lanes.low = { overflow = "fail" }

[[topic]]
pattern = "small.*"
lanes.normal = { capacity = "8M" }
)");
    auto log = d.reload();
    INFO(text(log));
    CHECK(any_has(log, "reload: topic added: small.* normal:capacity=8M"));
    CHECK(lanes_of(d.socket(), "small.two", ask)[kNormal].capacity == 8u << 20);
    CHECK(lanes_of(d.socket(), "other.one")[kNormal].capacity == daemon::BrokerConfig::default_lanes()[kNormal].capacity);
}
