// rvoip-eventctl's live subcommands: top (a refreshing view), tail (a subscriber that prints), publish.
#include "ctl/reports.hpp"
#include "ctl/table.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <mutex>
#include <thread>

#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

namespace rvoip::events::ctl {

using nlohmann::json;

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_stop(int) { g_stop = true; }

void catch_stop() {
    struct sigaction sa{};
    sa.sa_handler = on_stop;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
}

std::optional<Priority> lane_of(const std::string& s) {
    for (std::size_t l = 0; l < layout::kLanes; ++l)
        if (s == to_string(Priority(l))) return Priority(l);
    return std::nullopt;
}

// The topic's fingerprint as the broker reports it: a tool joins any topic it may, whatever its type.
Result<std::pair<layout::Fingerprint, json>> topic_fingerprint(EventSystem& bus, const std::string& name) {
    auto j = fetch(bus, proto::InspectWhat::topic, name);
    if (!j) return std::unexpected(j.error());
    const auto& f = (*j)["topic"]["fingerprint"];
    layout::Fingerprint fp;
    const auto type = f["type_name"].get<std::string>();
    if (type.size() >= sizeof fp.type_name) return fail(Errc::malformed, "the topic's type name is too long");
    std::copy(type.begin(), type.end(), fp.type_name);
    fp.size = f["size"].get<std::uint32_t>();
    fp.align = f["align"].get<std::uint32_t>();
    fp.schema_version = f["schema_version"].get<std::uint32_t>();
    fp.kind = f["raw"].get<bool>() ? layout::Kind::raw : layout::Kind::typed;
    return std::make_pair(fp, (*j)["topic"]);
}

bool printable_text(std::span<const std::byte> b) {
    return std::all_of(b.begin(), b.end(), [](std::byte x) {
        auto c = static_cast<unsigned char>(x);
        return (c >= 0x20 && c < 0x7f) || c == '\n' || c == '\t' || c == '\r';
    });
}

std::string hex(std::span<const std::byte> b, std::size_t max = 256) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s;
    for (std::size_t i = 0; i < std::min(b.size(), max); ++i) {
        if (i) s += (i % 16 == 0) ? "\n    " : " ";
        auto c = static_cast<unsigned char>(b[i]);
        s += kHex[c >> 4];
        s += kHex[c & 15];
    }
    if (b.size() > max) s += " ...";
    return s;
}

struct Printed {
    Priority lane;
    std::uint64_t sequence;
    std::uint16_t publisher;
    std::int64_t latency_ns;
    std::vector<std::byte> bytes;
};

}  // namespace

int top(EventSystem& bus, int iterations) {
    catch_stop();
    const bool tty = ::isatty(STDOUT_FILENO) && ::isatty(STDIN_FILENO);
    termios saved{};
    if (tty && ::tcgetattr(STDIN_FILENO, &saved) == 0) {  // keys without Enter: q quits
        termios raw = saved;
        raw.c_lflag &= tcflag_t(~(ICANON | ECHO));
        ::tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    }
    auto before = fetch(bus, proto::InspectWhat::topics);
    int rc = before ? int(kOk) : report_error(before.error());
    for (int i = 0; rc == kOk && !g_stop && (iterations <= 0 || i < iterations); ++i) {
        pollfd p{STDIN_FILENO, POLLIN, 0};
        if (::poll(&p, tty ? 1 : 0, 1000) > 0) {  // waits the refresh second, or a key
            char c = 0;
            if (::read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q')) break;
        }
        auto st = fetch(bus, proto::InspectWhat::status);
        auto now = fetch(bus, proto::InspectWhat::topics);
        if (!st || !now) {
            rc = report_error(!st ? st.error() : now.error());
            break;
        }
        add_rates(*now, *before);
        auto& list = (*now)["topics"];
        std::sort(list.begin(), list.end(), [](const json& a, const json& b) {
            return a["rate_per_s"].get<double>() > b["rate_per_s"].get<double>() ||
                   (a["rate_per_s"] == b["rate_per_s"] && a["name"].get<std::string>() < b["name"].get<std::string>());
        });
        double total = 0;
        for (auto& t : list) total += std::max(0.0, t["rate_per_s"].get<double>());
        winsize ws{};
        const std::size_t rows = ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row ? ws.ws_row : 24;
        const std::size_t cols = ws.ws_col ? ws.ws_col : 80;
        std::string head = "rvoip-eventctl top  broker pid " + std::to_string((*st)["broker"]["pid"].get<long>()) + "  up " +
                           duration((*st)["broker"]["uptime_s"].get<double>()) + "  topics " +
                           std::to_string((*st)["topics"].get<std::uint64_t>()) + "  clients " +
                           std::to_string((*st)["clients"].get<std::uint64_t>()) + "  total " + rate(total) + "  shm " +
                           bytes((*st)["shm_bytes"].get<std::uint64_t>());
        if (head.size() > cols) head.resize(cols);
        std::string screen = (tty ? "\x1b[H\x1b[2J" : "") + head + "\n";
        screen += "(q quits; sorted by rate)\n";
        screen += topics_table(list, rows > 4 ? rows - 4 : 1, cols);  // header lines, table header, a spare line
        std::cout << screen << std::flush;
        before = std::move(now);
    }
    if (tty) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    return rc;
}

int tail(EventSystem& bus, const std::string& name, const std::string& lane, std::uint64_t count_max) {
    std::optional<Priority> only;
    if (!lane.empty() && !(only = lane_of(lane))) return report_error(Error(Errc::invalid_argument, "--lane: '" + lane + "' is not critical, high, normal or low"));
    auto fp = topic_fingerprint(bus, name);
    if (!fp) return report_error(fp.error());
    auto opened = bus.raw_subscriber(name, {}, fp->first);
    if (!opened) return report_error(opened.error());
    std::optional<RawSubscriber> sub(std::move(*opened));  // the reader thread's alone; it releases the slot when it stops
    catch_stop();
    // The subscriber copies each event out at once and a second thread prints: a terminal or a pipe that
    // is slower than the publishers never holds the ring. If the printer falls this far behind, tail
    // leaves (its slot released) rather than make publishers wait.
    constexpr std::size_t kMaxQueued = 100'000;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Printed> queue;
    bool done = false, overflowed = false;
    std::string error;
    const bool raw = fp->first.kind == layout::Kind::raw;
    std::thread reader([&] {
        std::uint64_t taken = 0;
        while (!g_stop && (count_max == 0 || taken < count_max)) {
            auto s = sub->receive_for(std::chrono::milliseconds(200));
            if (!s) {
                if (s.error().code == Errc::timeout) continue;
                if (s.error().code == Errc::lagged) continue;  // counted by the library; the next events follow
                std::lock_guard lock(mu);
                error = s.error().what();
                break;
            }
            if (only && s->priority() != *only) continue;
            Printed p{s->priority(), s->sequence(), s->publisher(), bus.now_ns() - s->timestamp_ns(),
                      std::vector<std::byte>(s->bytes().begin(), s->bytes().end())};
            s->reset();  // the record is released before anything slow happens
            std::lock_guard lock(mu);
            if (queue.size() >= kMaxQueued) {
                overflowed = true;
                break;
            }
            queue.push_back(std::move(p));
            ++taken;
            cv.notify_one();
        }
        sub.reset();  // leaves the topic now, not once the printer has caught up
        std::lock_guard lock(mu);
        done = true;
        cv.notify_one();
    });
    for (;;) {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return done || !queue.empty(); });
        if (queue.empty() && done) break;
        Printed p = std::move(queue.front());
        queue.pop_front();
        lock.unlock();
        std::string line = std::string(to_string(p.lane)) + " pub " + std::to_string(p.publisher) + " seq " + std::to_string(p.sequence) +
                           " " + std::to_string(p.bytes.size()) + " B " + std::to_string(p.latency_ns / 1000) + " us: ";
        if (raw && printable_text(p.bytes)) line.append(reinterpret_cast<const char*>(p.bytes.data()), p.bytes.size());
        else line += hex(p.bytes);
        std::cout << line << "\n";
        if (::isatty(STDOUT_FILENO)) std::cout << std::flush;
    }
    reader.join();
    std::cout << std::flush;
    if (overflowed) {
        std::fprintf(stderr, "rvoip-eventctl: tail left '%s': output fell %zu events behind, and a subscriber that far behind would hold "
                             "its publishers back\n", name.c_str(), kMaxQueued);
        return kLeft;
    }
    if (!error.empty()) {
        std::fprintf(stderr, "rvoip-eventctl: %s\n", error.c_str());
        return kFailed;
    }
    return kOk;
}

int publish(EventSystem& bus, const std::string& name, const std::string& lane, const std::string& data) {
    auto p = lane_of(lane);
    if (!p) return report_error(Error(Errc::invalid_argument, "--lane: '" + lane + "' is not critical, high, normal or low"));
    auto fp = topic_fingerprint(bus, name);
    if (!fp) return report_error(fp.error());
    if (fp->first.kind == layout::Kind::typed && data.size() != fp->first.size)
        return report_error(Error(Errc::invalid_argument, "topic '" + name + "' carries " + std::string(fp->first.name()) + " of " +
                                                              std::to_string(fp->first.size) + " bytes; the data has " + std::to_string(data.size())));
    auto pub = bus.raw_publisher(name, {}, fp->first);
    if (!pub) return report_error(pub.error());
    if (auto ok = pub->publish(std::as_bytes(std::span(data.data(), data.size())), *p); !ok) return report_error(ok.error());
    return kOk;
}

}  // namespace rvoip::events::ctl
