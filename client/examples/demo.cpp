// rvoip-demo: two processes exchanging call-state events through rvoip-eventd.
//   rvoip-demo sub            # prints every CallState event, Critical first
//   rvoip-demo pub --count 5  # publishes five events; the last one Critical
#include "rvoip/events.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>

using namespace rvoip::events;

struct CallState {
    static constexpr std::string_view event_type = "call.state";
    static constexpr Priority default_priority = Priority::high;
    std::uint64_t call_id;
    std::uint32_t state;  // 0 trying, 1 ringing, 2 answered, 3 ended
    FixedString<64> call_ref;
};

int main(int argc, char** argv) {
    CLI::App app{"rvoip-demo: publish and receive call.state events"};
    std::string socket;
    int count = 5;
    app.add_option("--socket", socket, "broker socket (default: $RVOIP_EVENTS_SOCKET or the platform default)");
    auto* pub = app.add_subcommand("pub", "publish --count events, the last one Critical");
    pub->add_option("--count", count)->check(CLI::Range(1, 1'000'000));
    app.add_subcommand("sub", "receive and print events until interrupted");
    app.require_subcommand(1);
    CLI11_PARSE(app, argc, argv);

    EventSystemBuilder b;
    b.client_name(pub->parsed() ? "demo-pub" : "demo-sub");
    if (!socket.empty()) b.socket_path(socket);
    auto bus = b.build();
    if (!bus) {
        std::fprintf(stderr, "rvoip-demo: %s\n", bus.error().what().c_str());
        return 1;
    }
    if (pub->parsed()) {
        auto p = bus->publisher<CallState>();
        if (!p) return std::fprintf(stderr, "rvoip-demo: %s\n", p.error().what().c_str()), 1;
        for (int i = 0; i < count; ++i) {
            CallState ev{std::uint64_t(i), std::uint32_t(i % 3), {}};
            ev.call_ref.assign("call-" + std::to_string(i) + "@demo");
            auto prio = i == count - 1 ? Priority::critical : CallState::default_priority;
            if (auto st = p->publish(ev, prio); !st) return std::fprintf(stderr, "rvoip-demo: %s\n", st.error().what().c_str()), 1;
        }
        std::printf("published %d call.state events\n", count);
        return 0;
    }
    auto s = bus->subscriber<CallState>();
    if (!s) return std::fprintf(stderr, "rvoip-demo: %s\n", s.error().what().c_str()), 1;
    std::printf("waiting for call.state events (Ctrl-C to stop)\n");
    for (;;) {
        auto ev = s->receive();
        if (!ev) return std::fprintf(stderr, "rvoip-demo: %s\n", ev.error().what().c_str()), 1;
        std::printf("%-8s call %llu state %u ref %.*s\n", std::string(to_string(ev->priority())).c_str(),
                    static_cast<unsigned long long>((*ev)->call_id), (*ev)->state, int((*ev)->call_ref.view().size()),
                    (*ev)->call_ref.view().data());
        std::fflush(stdout);
    }
}
