// Aligned text tables and human units for rvoip-eventctl's listings.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rvoip::events::ctl {

class Table {
public:
    // Columns whose header starts with '>' are right-aligned (numbers); the '>' is not printed.
    explicit Table(std::vector<std::string> headers);
    void add(std::vector<std::string> row);
    // Every column as wide as its widest cell, two spaces apart. With `max_width` (0: no limit), only
    // the columns that fit whole in that many characters, so a table fits a terminal (a first column
    // wider than that is cut).
    std::string render(std::size_t max_width = 0) const;
    std::size_t rows() const { return rows_.size(); }

private:
    std::vector<std::string> headers_;
    std::vector<bool> right_;
    std::vector<std::vector<std::string>> rows_;
};

std::string bytes(std::uint64_t n);          // 512 B, 64.0 KiB, 4.0 MiB, 1.5 GiB
std::string size_short(std::uint64_t n);     // 512, 64K, 4M, 1G (powers of two, for lane sizes in a column)
std::string count(std::uint64_t n);          // 999, 12.3k, 4.56M, 7.89G
std::string rate(double per_second);         // "12.3k/s"; "-" when unknown (negative)
std::string percent(double p);               // "12.5%"
std::string duration(double seconds);        // 45s, 12m03s, 5h02m, 3d04h
std::string latency(std::uint64_t ns);       // 640ns, 12.3us, 4.56ms, 1.2s

}  // namespace rvoip::events::ctl
