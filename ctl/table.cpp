#include "ctl/table.hpp"

#include <algorithm>
#include <cstdio>

namespace rvoip::events::ctl {

Table::Table(std::vector<std::string> headers) {
    for (auto& h : headers) {
        right_.push_back(!h.empty() && h[0] == '>');
        headers_.push_back(right_.back() ? h.substr(1) : h);
    }
}

void Table::add(std::vector<std::string> row) {
    row.resize(headers_.size());
    rows_.push_back(std::move(row));
}

std::string Table::render(std::size_t max_width) const {
    std::vector<std::size_t> width(headers_.size());
    for (std::size_t c = 0; c < headers_.size(); ++c) {
        width[c] = headers_[c].size();
        for (auto& r : rows_) width[c] = std::max(width[c], r[c].size());
    }
    // Within max_width, the columns that fit whole: a value cut in the middle would read as another.
    std::size_t shown = headers_.size();
    if (max_width) {
        std::size_t used = width.empty() ? 0 : width[0];
        for (shown = 1; shown < width.size() && used + 2 + width[shown] <= max_width; ++shown) used += 2 + width[shown];
    }
    std::string out;
    auto line = [&](const std::vector<std::string>& cells) {
        std::string l;
        for (std::size_t c = 0; c < shown; ++c) {
            const std::string pad(width[c] - cells[c].size(), ' ');
            l += right_[c] ? pad + cells[c] : cells[c] + (c + 1 < shown ? pad : "");
            if (c + 1 < shown) l += "  ";
        }
        while (!l.empty() && l.back() == ' ') l.pop_back();
        if (max_width && l.size() > max_width) l.resize(max_width);
        out += l + "\n";
    };
    line(headers_);
    for (auto& r : rows_) line(r);
    return out;
}

namespace {
std::string scaled(double v, const char* const* units, int n, double step, const char* fmt_small) {
    int u = 0;
    while (v >= step && u + 1 < n) {
        v /= step;
        ++u;
    }
    char buf[32];
    if (u == 0) std::snprintf(buf, sizeof buf, fmt_small, v, units[0]);
    else std::snprintf(buf, sizeof buf, v < 10 ? "%.2f%s" : v < 100 ? "%.1f%s" : "%.0f%s", v, units[u]);
    return buf;
}
}  // namespace

std::string bytes(std::uint64_t n) {
    static const char* const kUnits[] = {" B", " KiB", " MiB", " GiB", " TiB"};
    return scaled(double(n), kUnits, 5, 1024, "%.0f%s");
}

std::string size_short(std::uint64_t n) {
    static const char* const kUnits[] = {"", "K", "M", "G", "T"};
    int u = 0;
    while (n >= 1024 && n % 1024 == 0 && u < 4) {
        n /= 1024;
        ++u;
    }
    return std::to_string(n) + kUnits[u];
}

std::string count(std::uint64_t n) {
    static const char* const kUnits[] = {"", "k", "M", "G", "T"};
    return scaled(double(n), kUnits, 5, 1000, "%.0f%s");
}

std::string rate(double per_second) {
    if (per_second < 0) return "-";
    static const char* const kUnits[] = {"/s", "k/s", "M/s", "G/s"};
    return scaled(per_second, kUnits, 4, 1000, "%.0f%s");
}

std::string percent(double p) {
    char buf[16];
    std::snprintf(buf, sizeof buf, p < 10 ? "%.1f%%" : "%.0f%%", p);
    return buf;
}

std::string duration(double seconds) {
    auto s = std::uint64_t(seconds);
    char buf[32];
    if (s < 60) std::snprintf(buf, sizeof buf, "%llus", (unsigned long long)s);
    else if (s < 3600) std::snprintf(buf, sizeof buf, "%llum%02llus", (unsigned long long)(s / 60), (unsigned long long)(s % 60));
    else if (s < 86400) std::snprintf(buf, sizeof buf, "%lluh%02llum", (unsigned long long)(s / 3600), (unsigned long long)(s % 3600 / 60));
    else std::snprintf(buf, sizeof buf, "%llud%02lluh", (unsigned long long)(s / 86400), (unsigned long long)(s % 86400 / 3600));
    return buf;
}

std::string latency(std::uint64_t ns) {
    char buf[32];
    if (ns < 1000) std::snprintf(buf, sizeof buf, "%lluns", (unsigned long long)ns);
    else if (ns < 1'000'000) std::snprintf(buf, sizeof buf, "%.3gus", double(ns) / 1e3);
    else if (ns < 1'000'000'000) std::snprintf(buf, sizeof buf, "%.3gms", double(ns) / 1e6);
    else std::snprintf(buf, sizeof buf, "%.3gs", double(ns) / 1e9);
    return buf;
}

}  // namespace rvoip::events::ctl
