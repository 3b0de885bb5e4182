// An installed librvoip-events from another project: subscribe, publish one event through the broker on
// the socket given, receive it. Prints "received call 42 ref <ref>" and exits 0, or says what failed.
//   consumer SOCKET REF
#include <rvoip/events.hpp>

#include <chrono>
#include <cstdio>
#include <string_view>

using namespace rvoip::events;

struct CallState {
    static constexpr std::string_view event_type = "install.call.state";
    static constexpr Priority default_priority = Priority::high;
    std::uint64_t call_id;
    FixedString<64> call_ref;
};

static int fail(const char* what, const Error& e) {
    std::fprintf(stderr, "consumer: %s: %s\n", what, e.what().c_str());
    return 1;
}

int main(int argc, char** argv) {
    if (argc != 3) return std::fprintf(stderr, "usage: consumer SOCKET REF\n"), 2;
    auto bus = EventSystemBuilder().client_name("install-consumer").socket_path(argv[1]).build();
    if (!bus) return fail("connect", bus.error());
    // The subscriber first: it receives what is published after it joined.
    auto sub = bus->subscriber<CallState>();
    if (!sub) return fail("subscriber", sub.error());
    auto pub = bus->publisher<CallState>();
    if (!pub) return fail("publisher", pub.error());
    if (auto st = pub->publish(CallState{42, {argv[2]}}, Priority::critical); !st) return fail("publish", st.error());
    auto ev = sub->receive_for(std::chrono::seconds(5));
    if (!ev) return fail("receive", ev.error());
    std::printf("received call %llu ref %.*s\n", static_cast<unsigned long long>((*ev)->call_id),
                int((*ev)->call_ref.view().size()), (*ev)->call_ref.view().data());
    return 0;
}
