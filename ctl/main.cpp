// rvoip-eventctl: inspects a running rvoip-eventd (topics, clients, lag, rates, drops), follows a topic,
// publishes to one, and prints Prometheus metrics.
#include "ctl/reports.hpp"
#include "proto/channel.hpp"

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>

using namespace rvoip::events;

int main(int argc, char** argv) {
    CLI::App app{"rvoip-eventctl: inspect and drive a running rvoip-eventd"};
    app.footer("Exit codes: 0 ok, 1 failed, 2 bad arguments, 3 no broker on the socket, 4 no such topic, 5 refused by the\n"
               "broker's access rules, 6 tail left rather than hold publishers back.");
    app.require_subcommand(1);
    std::string socket;
    app.add_option("--socket", socket, "the broker's control socket (default: $RVOIP_EVENTS_SOCKET, else the broker's default)");
    bool json = false;
    std::string name, lane, data, file;
    std::uint64_t count = 0;
    double interval = 1.0;
    int iterations = 0;

    auto* status = app.add_subcommand("status", "the broker: up, version, uptime, topics, clients, shared memory");
    status->add_flag("--json", json, "JSON instead of a table");
    auto* topics = app.add_subcommand("topics", "one line per topic: publishers, subscribers, rate, fill, worst lag, lanes");
    topics->add_flag("--json", json, "JSON instead of a table");
    topics->add_option("--interval", interval, "seconds between the two reports the rates come from (0: no rates)")
        ->check(CLI::Range(0.0, 60.0))
        ->capture_default_str();
    auto* topic = app.add_subcommand("topic", "one topic in full: lanes, each publisher and each subscriber");
    topic->add_option("NAME", name, "topic name")->required();
    topic->add_flag("--json", json, "JSON instead of tables");
    auto* clients = app.add_subcommand("clients", "connected clients: pid, user, name, what each publishes and subscribes");
    clients->add_flag("--json", json, "JSON instead of a table");
    auto* top = app.add_subcommand("top", "a live view of the topics, refreshed every second, busiest first (q quits)");
    top->add_option("--iterations", iterations, "stop after this many refreshes (0: until q or Ctrl-C)")->capture_default_str();
    auto* tail = app.add_subcommand("tail", "print a topic's events as they come (typed events as hex, raw text as text)");
    tail->add_option("NAME", name, "topic name")->required();
    tail->add_option("--lane", lane, "only this lane: critical, high, normal, low");
    tail->add_option("--count", count, "stop after this many events (0: until Ctrl-C)")->capture_default_str();
    auto* publish = app.add_subcommand("publish", "publish one event on a topic");
    publish->add_option("NAME", name, "topic name")->required();
    publish->add_option("--lane", lane, "critical, high, normal or low")->required();
    auto* source = publish->add_option_group("data", "what to publish");
    source->add_option("--data", data, "the event's bytes, as given");
    source->add_option("--file", file, "read the event's bytes from this file")->check(CLI::ExistingFile);
    source->require_option(1);
    app.add_subcommand("metrics", "the broker's metrics in Prometheus text format");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int rc = app.exit(e);
        return rc == 0 ? 0 : ctl::kUsage;
    }

    if (socket.empty()) {
        const char* env = std::getenv("RVOIP_EVENTS_SOCKET");
        socket = env && *env ? env : proto::default_socket_path();
    }
    auto bus = EventSystemBuilder().socket_path(socket).client_name("rvoip-eventctl").build();
    if (!bus) return ctl::report_error(bus.error());

    auto* sub = app.get_subcommands().front();
    const std::string which = sub->get_name();
    if (which == "status") return ctl::status(*bus, json);
    if (which == "topics") return ctl::topics(*bus, json, interval);
    if (which == "topic") return ctl::topic(*bus, name, json);
    if (which == "clients") return ctl::clients(*bus, json);
    if (which == "metrics") return ctl::metrics(*bus);
    if (which == "top") return ctl::top(*bus, iterations);
    if (which == "tail") return ctl::tail(*bus, name, lane, count);
    if (which == "publish") {
        if (!file.empty()) {
            std::ifstream in(file, std::ios::binary);
            std::ostringstream all;
            all << in.rdbuf();
            data = all.str();
        }
        return ctl::publish(*bus, name, lane, data);
    }
    return ctl::kUsage;
}
