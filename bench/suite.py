#!/usr/bin/env python3
"""The benchmark suite: rvoip-events next to its peers, by one harness, in one run.

    python3 bench/suite.py                  # full suite: ours and every peer that was built, 3 runs each
    python3 bench/suite.py --smoke          # ~30 s: ours only, short runs (part of `make test`)

Every measurement is a separate process tree started by rvoip-bench or a peer program (bench/peers/),
each printing one JSON object. Runs are interleaved (run 1 of every case, then run 2, ...) so a slow phase
of the machine hits every system alike, and each figure is the median of the runs. Output: a table per
scenario on the terminal, bench/results/<date>.json, PNG plots (gnuplot), and the README's performance
section between its markers.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = ["iceoryx", "uds", "posixmq", "boostmq", "zmq"]
SIZES = [16, 64, 256, 1024, 4096]
LATENCY_KEYS = ["p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Harness:
    def __init__(self, bindir, smoke, runs, peers):
        self.bindir = bindir
        self.smoke = smoke
        self.runs = runs
        self.peers = [p for p in peers if os.access(self.peer_bin(p), os.X_OK)]
        self.failures = []

    def peer_bin(self, name):
        return os.path.join(self.bindir, "rvoip-peer-" + name)

    def ours(self):
        return os.path.join(self.bindir, "rvoip-bench")

    def run(self, argv, timeout):
        """Runs one measurement; returns its JSON object or None (the failure is recorded)."""
        log("  $ " + " ".join(os.path.basename(argv[0]) if i == 0 else a for i, a in enumerate(argv)))
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.failures.append((argv, "timed out after %ss" % timeout))
            return None
        if p.returncode != 0:
            self.failures.append((argv, (p.stderr or p.stdout).strip()[-400:]))
            return None
        for line in reversed(p.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    break
        self.failures.append((argv, "no JSON object in its output"))
        return None


def median_of(results, key):
    vals = [r[key] for r in results if r is not None and isinstance(r.get(key), (int, float))]
    return statistics.median(vals) if vals else None


def nested_median(results, outer, key):
    vals = [r[outer][key] for r in results if r is not None and isinstance(r.get(outer), dict) and key in r[outer]]
    return statistics.median(vals) if vals else None


def plan(h):
    """The cases: (scenario, system, params, argv, timeout). Ours always; peers where built."""
    s = h.smoke
    secs = "1" if s else "2"
    cases = []
    sizes = [64, 1024] if s else SIZES
    batches = [1, 64] if s else [1, 16, 64]
    for size in sizes:
        for batch in batches:
            cases.append(("throughput", "rvoip-events", {"size": size, "batch": batch},
                          [h.ours(), "throughput", "--size", str(size), "--batch", str(batch), "--seconds", secs, "--json"], 120))
            for peer in h.peers:
                if batch == 1 or batch == 64:
                    cases.append(("throughput", peer, {"size": size, "batch": batch},
                                  [h.peer_bin(peer), "throughput", "--size", str(size), "--batch", str(batch), "--seconds", secs, "--json"], 120))
    for pubs, subs in ([(4, 1), (1, 2)] if s else [(4, 1), (1, 2), (1, 4)]):
        cases.append(("fanout", "rvoip-events", {"publishers": pubs, "subscribers": subs},
                      [h.ours(), "throughput", "--size", "64", "--publishers", str(pubs), "--subscribers", str(subs),
                       "--seconds", secs, "--json"], 120))
    for mode in ["spin", "block"]:
        for size in ([64] if s else [64, 1024]):
            count = "2000" if s else ("100000" if mode == "spin" else "20000")
            cases.append(("latency", "rvoip-events", {"size": size, "mode": mode},
                          [h.ours(), "latency", "--size", str(size), "--mode", mode, "--count", count, "--json"], 300))
            for peer in h.peers:
                cases.append(("latency", peer, {"size": size, "mode": mode},
                              [h.peer_bin(peer), "latency", "--size", str(size), "--mode", mode, "--count", count, "--json"], 300))
    cases.append(("flood", "rvoip-events", {}, [h.ours(), "flood", "--seconds", "1" if s else "5", "--json"], 180))
    cases.append(("callstorm", "rvoip-events", {"calls": 2000 if s else 100000},
                  [h.ours(), "callstorm", "--calls", "2000" if s else "100000", "--seconds", "2" if s else "10", "--json"], 300))
    if not s:
        cases.append(("rtp", "rvoip-events", {}, [h.ours(), "rtp", "--json"], 600))
        cases.append(("rtp_with_signalling", "rvoip-events", {}, [h.ours(), "rtp", "--with-signalling", "--json"], 600))
    cases.append(("idle", "rvoip-events", {"subscribers": 8 if s else 100},
                  [h.ours(), "idle", "--subscribers", "8" if s else "100", "--seconds", "1" if s else "10", "--json"], 120))
    cases.append(("memory", "rvoip-events", {}, [h.ours(), "memory", "--json"], 120))
    # Many topics on the broker's defaults: 1,000 topics, each with a publisher and 8 subscriber processes.
    topics, subs = ("50", "2") if s else ("1000", "8")
    cases.append(("scale", "rvoip-events", {"topics": int(topics), "subscribers": int(subs)},
                  [h.ours(), "scale", "--topics", topics, "--subscribers", subs, "--json"], 600))
    return cases


def key_of(case):
    scenario, system, params = case[0], case[1], case[2]
    return scenario, system, json.dumps(params, sort_keys=True)


def measure(h):
    cases = plan(h)
    results = {key_of(c): [] for c in cases}
    # One-shot scenarios (memory, idle, rtp search) are run once even when --runs asks for more.
    once = {"memory", "idle", "rtp", "rtp_with_signalling", "scale"}
    for run in range(h.runs):
        log("run %d of %d" % (run + 1, h.runs))
        for c in cases:
            if run > 0 and c[0] in once:
                continue
            results[key_of(c)].append(h.run(c[3], c[4]))
    return cases, results


def summarize(cases, results):
    out = []
    for c in cases:
        rs = [r for r in results[key_of(c)] if r is not None]
        entry = {"scenario": c[0], "system": c[1], "params": c[2], "runs": len(rs), "raw": rs}
        if rs:
            if c[0] in ("throughput", "fanout"):
                entry["events_per_sec"] = median_of(rs, "events_per_sec")
                entry["aggregate_events_per_sec"] = median_of(rs, "aggregate_events_per_sec")
            elif c[0] == "latency":
                for k in LATENCY_KEYS:
                    entry[k] = median_of(rs, k)
            elif c[0] == "flood":
                for phase in ("idle", "flood"):
                    entry[phase] = {k: nested_median(rs, phase, k) for k in LATENCY_KEYS if nested_median(rs, phase, k) is not None}
                entry["flood_events_per_sec"] = median_of(rs, "flood_events_per_sec")
            else:
                entry.update({k: v for k, v in rs[-1].items() if k not in ("scenario", "system")})
        out.append(entry)
    return out


def fmt_rate(v):
    return "-" if v is None else "%.2f M/s" % (v / 1e6)


def fmt_ns(v):
    if v is None:
        return "-"
    return "%.0f ns" % v if v < 10000 else "%.1f us" % (v / 1000)


def tables(summary, peers):
    lines = []
    by = {(e["scenario"], e["system"], json.dumps(e["params"], sort_keys=True)): e for e in summary}

    def get(scenario, system, params):
        return by.get((scenario, system, json.dumps(params, sort_keys=True)), {})

    systems = ["rvoip-events"] + peers
    # Throughput
    lines.append("### Throughput, 1 publisher -> 1 subscriber (events/s, median)")
    lines.append("")
    ratios = (["iceoryx"] if "iceoryx" in peers else []) + (["best peer"] if peers else [])
    header = "| size | batch | " + " | ".join(systems) + "".join(" | ours / %s" % r for r in ratios) + " |"
    lines.append(header)
    lines.append("|" + "---|" * (len(systems) + 2 + len(ratios)))
    params = sorted({(e["params"]["size"], e["params"]["batch"]) for e in summary if e["scenario"] == "throughput"})
    for size, batch in params:
        p = {"size": size, "batch": batch}
        ours = get("throughput", "rvoip-events", p).get("events_per_sec")
        row = [str(size), str(batch)] + [fmt_rate(get("throughput", s, p).get("events_per_sec")) for s in systems]
        if "iceoryx" in peers:
            ice = get("throughput", "iceoryx", p).get("events_per_sec")
            row.append("%.1fx" % (ours / ice) if ours and ice else "-")
        if peers:
            best = max([v for v in (get("throughput", s, p).get("events_per_sec") for s in peers) if v] or [0])
            row.append("%.1fx" % (ours / best) if ours and best else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    # Fan-in / fan-out
    fan = [e for e in summary if e["scenario"] == "fanout"]
    if fan:
        lines.append("### Fan-in and fan-out, 64 B (events/s per subscriber, median)")
        lines.append("")
        lines.append("| publishers | subscribers | per subscriber | aggregate |")
        lines.append("|---|---|---|---|")
        for e in fan:
            lines.append("| %d | %d | %s | %s |" % (e["params"]["publishers"], e["params"]["subscribers"],
                                                  fmt_rate(e.get("events_per_sec")), fmt_rate(e.get("aggregate_events_per_sec"))))
        lines.append("")
    # Latency
    lines.append("### One-way latency by ping-pong (median of runs)")
    lines.append("")
    lines.append("| mode | size | system | p50 | p90 | p99 | p99.9 | max |")
    lines.append("|---|---|---|---|---|---|---|---|")
    lat = sorted({(e["params"]["mode"], e["params"]["size"]) for e in summary if e["scenario"] == "latency"})
    for mode, size in lat:
        for s in systems:
            e = get("latency", s, {"size": size, "mode": mode})
            if e.get("p50_ns") is None:
                continue
            lines.append("| %s | %d | %s | %s |" % (mode, size, s, " | ".join(fmt_ns(e.get(k)) for k in LATENCY_KEYS)))
    lines.append("")
    flood = get("flood", "rvoip-events", {})
    if flood.get("idle"):
        lines.append("### Critical latency under a Low-lane flood")
        lines.append("")
        lines.append("| phase | p50 | p99 | p99.9 | max |")
        lines.append("|---|---|---|---|---|")
        for phase in ("idle", "flood"):
            ph = flood.get(phase, {})
            lines.append("| %s | %s |" % (phase, " | ".join(fmt_ns(ph.get(k)) for k in ("p50_ns", "p99_ns", "p999_ns", "max_ns"))))
        if flood.get("flood_events_per_sec"):
            lines.append("")
            lines.append("Flood rate: %s Low events." % fmt_rate(flood["flood_events_per_sec"]))
        lines.append("")
    lines += system_scenarios({e["scenario"]: e for e in summary if e["runs"] and e["system"] == "rvoip-events"})
    return "\n".join(lines)


def mib(v):
    return "-" if v is None else "%.1f MiB" % (v / 1048576)


def system_scenarios(by):
    """Compact lines for the whole-system scenarios (their full JSON is in the results file)."""
    lines = []
    cs = by.get("callstorm")
    if cs:
        lat = cs.get("critical_latency", {})
        lines.append("### Call storm: %s concurrent calls, %s new calls/s" % (cs.get("calls"), cs.get("call_setups_per_sec")))
        lines.append("")
        lines.append("| topic | lane | events/s | p50 | p99 |")
        lines.append("|---|---|---|---|---|")
        for name, t in sorted(cs.get("topics", {}).items()):
            lines.append("| %s | %s | %s | %s | %s |" % (name, t.get("lane"), t.get("events_per_sec"), fmt_ns(t.get("p50_ns")), fmt_ns(t.get("p99_ns"))))
        lines.append("")
        cpu = cs.get("cpu_seconds", {})
        lines.append("Bus work: %s%% of one core in all (%s over %.0f s). Critical one-way p50 %s, p99 %s, p99.9 %s. Kept up: %s%s." % (
            cs.get("cpu_percent_of_one_core_total"), ", ".join("%s %.2f s" % kv for kv in sorted(cpu.items())), cs.get("seconds", 0),
            fmt_ns(lat.get("p50_ns")), fmt_ns(lat.get("p99_ns")), fmt_ns(lat.get("p999_ns")),
            "yes" if cs.get("kept_up") else "no", "" if cs.get("kept_up") else " (%s)" % cs.get("not_kept_up_because", "")))
        lines.append("")
    for key, label in (("rtp", "RTP alone"), ("rtp_with_signalling", "RTP on top of the call storm's signalling")):
        r = by.get(key)
        if r:
            lines.append("- %s: %s calls (172-byte packets, 50/s each way per call, batched per 20 ms tick): %s packets." % (
                label, r.get("max_calls"), fmt_rate(r.get("events_per_sec_at_max"))))
    idle = by.get("idle")
    if idle:
        lines.append("- Idle: %s subscribers parked on empty topics for %.0f s used %.3f CPU seconds (broker %.3f s)." % (
            idle.get("subscribers"), idle.get("seconds", 0), idle.get("cpu_seconds_total", 0), idle.get("broker_cpu_seconds", 0)))
    mem = by.get("memory")
    if mem:
        rss = mem.get("broker_rss_bytes", {})
        lines.append("- Memory: broker RSS %s with no topic, %s with 100 (%.0f KiB per topic); each topic's segments take %s "
                     "with the default lanes (reserved when the topic is created); doorbells %s." % (
                         mib(rss.get("0")), mib(rss.get("100")), mem.get("broker_rss_bytes_per_topic", 0) / 1024,
                         mib(mem.get("bytes_per_topic")), mib(mem.get("doorbell_segment_bytes"))))
    sc = by.get("scale")
    if sc:
        lines.append("- Scale: %s topics on the default lanes, each with a publisher and %s subscriber processes: set up in %.2f s; "
                     "the broker held %s descriptors (limit %s) and its segments reserved %s of shared memory (%s per topic); "
                     "%s of %s subscriptions received every event." % (
                         sc.get("topics"), sc.get("subscriber_processes"), sc.get("setup_seconds", 0), sc.get("broker_open_fds"),
                         sc.get("broker_fd_limit"), gib(sc.get("shm_reserved_bytes")), mib(sc.get("shm_reserved_bytes_per_topic")),
                         sc.get("subscriptions_complete"), sc.get("subscriptions")))
    lines.append("")
    return lines


def gib(v):
    return "-" if v is None else "%.2f GiB" % (v / 1073741824)


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = "%.0f GiB" % (int(f.readline().split()[1]) / 1024 / 1024)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def plot(summary, peers, outdir):
    if not shutil.which("gnuplot"):
        log("gnuplot not found: no plots")
        return []
    made = []
    systems = ["rvoip-events"] + peers
    tmp = tempfile.mkdtemp(prefix="rvoip-plot-")
    # Throughput vs size, batch 1, per system.
    series = []
    for s in systems:
        pts = sorted((e["params"]["size"], e.get("events_per_sec")) for e in summary
                     if e["scenario"] == "throughput" and e["system"] == s and e["params"]["batch"] == 1 and e.get("events_per_sec"))
        if pts:
            path = os.path.join(tmp, "tp-%s.dat" % s)
            with open(path, "w") as f:
                f.writelines("%d %f\n" % (x, y / 1e6) for x, y in pts)
            series.append("'%s' using 1:2 with linespoints title '%s'" % (path, s))
    if series:
        png = os.path.join(outdir, "throughput.png")
        gp = ("set terminal png size 900,540; set output '%s'; set logscale xy; set xlabel 'event size (bytes)';"
              "set ylabel 'million events/s'; set title 'Throughput, 1 publisher -> 1 subscriber, per-event publish';"
              "set key outside; plot %s\n" % (png, ", ".join(series)))
        if subprocess.run(["gnuplot"], input=gp, text=True).returncode == 0:
            made.append(png)
    # Latency percentile curves, spin and block, 64 B.
    for mode in ("spin", "block"):
        series = []
        for s in systems:
            e = next((e for e in summary if e["scenario"] == "latency" and e["system"] == s
                      and e["params"] == {"size": 64, "mode": mode} and e.get("p50_ns")), None)
            if not e:
                continue
            path = os.path.join(tmp, "lat-%s-%s.dat" % (mode, s))
            with open(path, "w") as f:
                for i, (k, label) in enumerate(zip(LATENCY_KEYS, ["p50", "p90", "p99", "p99.9", "max"])):
                    f.write("%d %s %f\n" % (i, label, e[k] / 1000))
            series.append("'%s' using 1:3:xtic(2) with linespoints title '%s'" % (path, s))
        if series:
            png = os.path.join(outdir, "latency-%s.png" % mode)
            gp = ("set terminal png size 900,540; set output '%s'; set logscale y; set ylabel 'one-way latency (us)';"
                  "set title 'One-way latency, 64 B, %s mode'; set key outside; plot %s\n" % (png, mode, ", ".join(series)))
            if subprocess.run(["gnuplot"], input=gp, text=True).returncode == 0:
                made.append(png)
    flood = next((e for e in summary if e["scenario"] == "flood" and e.get("idle")), None)
    if flood:
        path = os.path.join(tmp, "flood.dat")
        with open(path, "w") as f:
            for k, label in zip(("p50_ns", "p99_ns", "p999_ns"), ("p50", "p99", "p99.9")):
                f.write("%s %f %f\n" % (label, flood["idle"].get(k, 0) / 1000, flood["flood"].get(k, 0) / 1000))
        png = os.path.join(outdir, "critical-under-flood.png")
        gp = ("set terminal png size 900,540; set output '%s'; set style data histograms; set style fill solid 0.6;"
              "set ylabel 'Critical one-way latency (us)'; set title 'Critical latency: idle vs Low-lane flood';"
              "plot '%s' using 2:xtic(1) title 'idle', '' using 3 title 'flood'\n" % (png, path))
        if subprocess.run(["gnuplot"], input=gp, text=True).returncode == 0:
            made.append(png)
    shutil.rmtree(tmp, ignore_errors=True)
    return made


def update_readme(text, plots, mach):
    readme = os.path.join(ROOT, "README.md")
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    with open(readme) as f:
        content = f.read()
    if begin not in content or end not in content:
        log("README has no benchmark markers: not updated")
        return
    rel = [os.path.relpath(p, ROOT) for p in plots]
    section = [begin, "",
               "Measured by `make bench` on %s, %s cores, %s, Linux %s, %s. Figures are medians of interleaved runs; "
               "every run crosses real processes through a real `rvoip-eventd`." % (mach["cpu"], mach["cores"], mach["memory"], mach["kernel"], mach["date"]),
               "", text, ""]
    section += ["![%s](%s)" % (os.path.basename(p), p) for p in rel]
    section += ["", end]
    content = content[:content.index(begin)] + "\n".join(section) + content[content.index(end) + len(end):]
    with open(readme, "w") as f:
        f.write(content)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bindir", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="ours only, short runs, one run (about 30 s)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite the README's performance section")
    ap.add_argument("--from", dest="from_file", help="no measuring: tables, plots and README from this results file")
    a = ap.parse_args()
    if a.from_file:
        with open(a.from_file) as f:
            saved = json.load(f)
        built = sorted({e["system"] for e in saved["results"]} - {"rvoip-events"}, key=PEERS.index)
        text = tables(saved["results"], built)
        print(text)
        plots = plot(saved["results"], built, os.path.dirname(os.path.abspath(a.from_file)))
        if not a.no_readme:
            update_readme(text, plots, saved["machine"])
        return 0
    peers = [] if (a.no_peers or a.smoke) else PEERS
    h = Harness(a.bindir, a.smoke, 1 if a.smoke else a.runs, peers)
    if not os.access(h.ours(), os.X_OK):
        log("no %s: build first (make build)" % h.ours())
        return 2
    if not a.smoke:
        missing = [p for p in peers if p not in h.peers]
        if missing:
            log("peers not built (their packages are missing): " + ", ".join(missing))
    cases, results = measure(h)
    summary = summarize(cases, results)
    mach = machine()
    os.makedirs(a.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    name = ("smoke-" if a.smoke else "") + stamp + ".json"
    with open(os.path.join(a.out, name), "w") as f:
        json.dump({"machine": mach, "runs": h.runs, "results": summary, "failures": [[" ".join(x), y] for x, y in h.failures]}, f, indent=1)
    text = tables(summary, h.peers)
    print(text)
    plots = [] if a.smoke else plot(summary, h.peers, a.out)
    if not a.smoke and not a.no_readme:
        update_readme(text, plots, mach)
    print("results: %s" % os.path.join(a.out, name))
    if h.failures:
        for argv, why in h.failures:
            log("FAILED: %s\n  %s" % (" ".join(argv), why))
        return 1
    print("suite: %d cases, all completed" % len(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
