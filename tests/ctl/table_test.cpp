// rvoip-eventctl's tables: alignment, and a width limit that leaves out whole columns, never half a value.
#include "ctl/table.hpp"

#include <doctest/doctest.h>

using namespace rvoip::events::ctl;

TEST_CASE("columns are as wide as their widest cell, numbers aligned right") {
    Table t({"NAME", ">COUNT"});
    t.add({"a", "1"});
    t.add({"longer", "12345"});
    CHECK(t.render() == "NAME    COUNT\na           1\nlonger  12345\n");
}

TEST_CASE("a width limit leaves out the columns that do not fit whole") {
    Table t({"TOPIC", ">RATE", "LANES (C/H/N/L)"});
    t.add({"call.state", "140k/s", "256K/256K/512K/512K"});
    const std::string all = t.render();
    CHECK(all.find("512K/512K") != std::string::npos);
    const std::string cut = t.render(30);  // TOPIC and RATE take 18; the lanes would end at 39
    CHECK(cut == "TOPIC         RATE\ncall.state  140k/s\n");
    CHECK(t.render(39) == all);  // exactly wide enough
    CHECK(t.render(5) == "TOPIC\ncall.\n");  // a first column wider than the limit is cut
}

TEST_CASE("latencies and sizes in human units") {
    CHECK(latency(640) == "640ns");
    CHECK(latency(12'300) == "12.3us");
    CHECK(latency(4'560'000) == "4.56ms");
    CHECK(bytes(512) == "512 B");
    CHECK(bytes(64 * 1024) == "64.0 KiB");
}
