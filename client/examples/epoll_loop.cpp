// One thread, one epoll loop, a UDP socket and the bus: each datagram that arrives is published on the
// raw topic `udp.in`, and every event of `udp.in` and `call.control` (any process may publish on them) is
// printed, Critical first. The bus needs no thread of its own: a WaitSet's descriptor sits in the epoll
// set beside the socket.
//
//   rvoip-epoll-example --socket <broker socket> --port 5060
//   echo hello | nc -u -q0 127.0.0.1 5060
//   rvoip-eventctl --socket <broker socket> publish call.control --lane critical --data BYE
#include "rvoip/events.hpp"

#include <CLI/CLI.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

using namespace rvoip::events;

int main(int argc, char** argv) {
    CLI::App app{"rvoip-epoll-example: a UDP socket and the bus in one epoll loop"};
    std::string socket;
    std::uint16_t port = 5060;
    std::uint64_t count = 0;
    app.add_option("--socket", socket, "broker socket (default: $RVOIP_EVENTS_SOCKET or the platform default)");
    app.add_option("--port", port, "UDP port on 127.0.0.1")->capture_default_str();
    app.add_option("--count", count, "stop after this many bus events (0: never)");
    CLI11_PARSE(app, argc, argv);

    auto bus = (socket.empty() ? EventSystemBuilder() : EventSystemBuilder().socket_path(socket)).client_name("epoll-example").build();
    if (!bus) return std::fprintf(stderr, "%s\n", bus.error().what().c_str()), 1;
    auto out = bus->raw_publisher("udp.in");
    auto in = bus->raw_subscriber("udp.in");
    auto control = bus->raw_subscriber("call.control");
    if (!out || !in || !control) return std::fprintf(stderr, "cannot open the topics\n"), 1;
    WaitSet set;
    if (!set.add(std::move(*in)) || !set.add(std::move(*control))) return 1;
    auto bus_fd = set.descriptor();
    if (!bus_fd) return std::fprintf(stderr, "%s\n", bus_fd.error().what().c_str()), 1;

    const int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (udp < 0 || ::bind(udp, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return std::perror("udp"), 1;
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    for (int fd : {*bus_fd, udp}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    std::printf("READY udp 127.0.0.1:%u\n", unsigned(port));
    std::fflush(stdout);

    std::uint64_t seen = 0;
    for (;;) {
        // Take everything waiting on the bus, then arm its descriptor and sleep with the socket.
        while (auto ev = set.try_receive_any()) {
            const auto b = ev->bytes();
            std::printf("%s %s: %.*s\n", ev->topic().name.c_str(), std::string(to_string(ev->priority())).c_str(), int(b.size()),
                        reinterpret_cast<const char*>(b.data()));
            std::fflush(stdout);
            ++seen;
        }
        if (count && seen >= count) break;
        auto armed = set.prepare_poll();
        if (!armed) return std::fprintf(stderr, "%s\n", armed.error().what().c_str()), 1;
        if (!*armed) continue;  // an event came in meanwhile
        epoll_event evs[2];
        const int n = ::epoll_wait(ep, evs, 2, -1);
        if (n < 0 && errno != EINTR) return std::perror("epoll_wait"), 1;
        for (int i = 0; i < n; ++i) {
            if (evs[i].data.fd != udp) continue;  // the bus: taken at the top of the loop
            char buf[2048];
            const auto len = ::recv(udp, buf, sizeof buf, 0);
            if (len > 0) (void)out->publish(std::string_view(buf, std::size_t(len)));
        }
    }
    ::close(ep);
    ::close(udp);
    return 0;
}
