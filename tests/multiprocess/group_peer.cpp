// rvoip-test-group: the processes of the consumer-group tests (tests/multiprocess/group_test.cpp).
//
//   publish  --keys K --events E   a keyed publisher: E rounds over K calls, event (key, seq) with a
//                                  Call-ID key; the first half, "HALF" on stdout, a line on stdin, the rest
//   member   --group G --out FILE  a group member: "MEMBER <id>" once joined, then one line per event,
//                                  "key seq partition redelivered", written (write(2)) before the event
//                                  is released, until killed
#include "rvoip/events.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <string>

#include <fcntl.h>
#include <unistd.h>

namespace {

using namespace rvoip::events;

struct KeyedCall {
    static constexpr std::string_view event_type = "test.calls";
    std::uint32_t key = 0;
    std::uint32_t seq = 0;
    FixedString<24> call_id;
};

std::string_view call_id_of(const KeyedCall& c) { return c.call_id.view(); }

PartitionOptions partition_options(std::uint32_t partitions) {
    PartitionOptions o;
    o.partitions = partitions;
    // Lossless for the test: publishers wait (up to a minute) for a stopped member, and nobody is evicted.
    o.topic.overflow(Priority::normal, Overflow::block, std::chrono::seconds(60)).evict_after(Priority::normal, std::chrono::milliseconds(0));
    o.topic.capacity(Priority::normal, 1 << 18);
    return o;
}

int publish(EventSystem& bus, std::uint32_t keys, std::uint32_t events, std::uint32_t partitions) {
    auto pub = bus.keyed_publisher<KeyedCall>(call_id_of, partition_options(partitions));
    if (!pub) {
        std::cerr << "keyed_publisher: " << pub.error().what() << "\n";
        return 1;
    }
    std::cout << "READY" << std::endl;
    std::string line;
    const std::uint32_t half = events / 2;
    for (std::uint32_t seq = 0; seq < events; ++seq) {
        if (seq == half) {
            std::cout << "HALF" << std::endl;
            if (!std::getline(std::cin, line)) return 1;
        }
        for (std::uint32_t k = 0; k < keys; ++k) {
            KeyedCall c;
            c.key = k;
            c.seq = seq;
            c.call_id.assign("call-" + std::to_string(k) + "@host");
            if (auto st = pub->publish(c); !st) {
                std::cerr << "publish (" << k << ", " << seq << "): " << st.error().what() << "\n";
                return 1;
            }
        }
    }
    std::cout << "DONE" << std::endl;
    std::getline(std::cin, line);  // held open until the test is done: the publisher slots stay
    return 0;
}

int member(EventSystem& bus, const std::string& group, const std::string& out, std::uint32_t partitions) {
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return 1;
    auto sub = bus.subscribe_group<KeyedCall>(group, call_id_of, partition_options(partitions));
    if (!sub) {
        std::cerr << "subscribe_group: " << sub.error().what() << "\n";
        return 1;
    }
    std::cout << "MEMBER " << sub->member() << std::endl;
    char buf[96];
    for (;;) {
        auto ev = sub->receive_for(std::chrono::seconds(1));
        if (!ev) {
            if (ev.error().code != Errc::timeout) std::cerr << "receive: " << ev.error().what() << "\n";
            continue;
        }
        const int n = std::snprintf(buf, sizeof buf, "%u %u %u %d\n", (*ev)->key, (*ev)->seq, ev->partition(), ev->redelivered() ? 1 : 0);
        if (::write(fd, buf, std::size_t(n)) != n) return 1;
        if (sub->misrouted()) {
            std::cerr << "misrouted event\n";
            return 1;
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"rvoip-test-group: consumer-group test processes"};
    std::string socket, group = "workers", out;
    std::uint32_t keys = 1000, events = 2, partitions = 16;
    app.add_option("--socket", socket)->required();
    app.add_option("--partitions", partitions);
    auto* pub = app.add_subcommand("publish", "a keyed publisher");
    pub->add_option("--keys", keys);
    pub->add_option("--events", events);
    auto* mem = app.add_subcommand("member", "a group member");
    mem->add_option("--group", group);
    mem->add_option("--out", out)->required();
    app.require_subcommand(1);
    CLI11_PARSE(app, argc, argv);
    auto bus = EventSystemBuilder().socket_path(socket).client_name(pub->parsed() ? "keyed-pub" : "group-member").build();
    if (!bus) {
        std::cerr << "connect: " << bus.error().what() << "\n";
        return 1;
    }
    if (pub->parsed()) return publish(*bus, keys, events, partitions);
    return member(*bus, group, out, partitions);
}
