#!/usr/bin/env python3
"""The benchmark suite: rvoip-events next to its peers, by one harness, in one run.

    python3 bench/suite.py                  # full suite: ours and every peer that was built, 3 runs each
    python3 bench/suite.py --quick          # a first look, ~1 min: every system, one short run per case
    python3 bench/suite.py --smoke          # ~30 s: ours only, short runs (part of `make test`)

Every measurement is a separate process tree started by rvoip-bench or a peer program (bench/peers/),
each printing one JSON object. Runs are interleaved (run 1 of every case, then run 2, ...) so a slow phase
of the machine hits every system alike; each figure is the median of the runs, shown with their minimum and
maximum. Each peer runs the way its authors run it (PEER_MODES, BATCHING_PEERS; bench/README.md says why),
and a run marked distorted (a polling thread among more busy threads than cores) is kept in the results
file but never enters a table, a plot or a ratio. Output: a table per scenario on the terminal, each with
the machine it was measured on, bench/results/<date>.json, PNG plots (gnuplot), and the README's
performance section between its markers.
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
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = ["iceoryx", "uds", "posixmq", "boostmq", "zmq"]
SIZES = [16, 64, 256, 1024, 4096]
LATENCY_KEYS = ["p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns"]
RTT_KEYS = ["rtt_p50_ns", "rtt_p90_ns", "rtt_p99_ns", "rtt_p999_ns", "rtt_max_ns"]
# How each peer's receiver waits, per measurement: the mode its authors use (zmq's perf/local_thr and
# local_lat block in zmq_recvmsg). Where its authors name none, both are run and the throughput table shows
# the better, saying which; latency has a table per mode, so there a system appears in each mode it runs in.
PEER_MODES = {
    "throughput": {"iceoryx": ["spin", "block"], "uds": ["spin", "block"], "posixmq": ["spin", "block"],
                   "boostmq": ["spin", "block"], "zmq": ["block"]},
    "latency": {"iceoryx": ["spin", "block"], "uds": ["spin", "block"], "posixmq": ["spin", "block"],
                "boostmq": ["spin", "block"], "zmq": ["block"]},
}
# Peers with a batch form of their own (bench/peers/README.md); the others show "no batching", with no ratio.
BATCHING_PEERS = {"iceoryx", "uds", "zmq"}
PEER_BATCH = 64
# The system name of `rvoip-bench limit` runs: no product, the fastest transfer between two processes here.
LIMIT = "spsc-ring"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Harness:
    def __init__(self, bindir, smoke, runs, peers, quick=False, verbose=False):
        self.bindir = bindir
        self.smoke = smoke
        self.quick = quick
        self.verbose = verbose
        self.runs = runs
        self.peers = [p for p in peers if os.access(self.peer_bin(p), os.X_OK)]
        self.failures = []

    def peer_bin(self, name):
        return os.path.join(self.bindir, "rvoip-peer-" + name)

    def ours(self):
        return os.path.join(self.bindir, "rvoip-bench")

    def run(self, argv, timeout):
        """Runs one measurement; returns its JSON object or None (the failure is recorded)."""
        if self.verbose:
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


def spread_of(values):
    """[min, median, max] of the numbers among values, or None."""
    vals = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [min(vals), statistics.median(vals), max(vals)] if vals else None


def rejected(run):
    """Why a run may not enter a table or a ratio, or None. Distorted: a polling thread among more busy threads than
    cores. Not a batch: a loop of single sends (results files from before the peers batched)."""
    if run.get("distorted"):
        return "distorted"
    if run.get("batching") in ("loop", "sendmmsg"):
        return "not a batch"
    return None


def plan(h):
    """The cases: (scenario, system, params, argv, timeout). Ours always; peers where built. Short runs for --smoke
    (ours only) and --quick (every system, fewer sizes, no RTP search)."""
    s = h.smoke or h.quick
    secs = "1" if s else "2"
    cases = []
    sizes = [64, 1024] if s else SIZES
    batches = [1, 64] if s else [1, 16, 64]
    for size in sizes:
        # The ceiling at this size (a minimal SPSC ring between two processes), among the throughput cases it is
        # read against, so a slow phase of the machine hits both.
        cases.append(("limit", LIMIT, {"size": size}, [h.ours(), "limit", "--size", str(size), "--seconds", secs, "--json"], 120))
        for batch in batches:
            cases.append(("throughput", "rvoip-events", {"size": size, "batch": batch},
                          [h.ours(), "throughput", "--size", str(size), "--batch", str(batch), "--seconds", secs, "--json"], 120))
            for peer in h.peers:
                if batch != 1 and (batch != PEER_BATCH or peer not in BATCHING_PEERS):
                    continue
                for mode in PEER_MODES["throughput"][peer]:
                    cases.append(("throughput", peer, {"size": size, "batch": batch, "mode": mode},
                                  [h.peer_bin(peer), "throughput", "--size", str(size), "--batch", str(batch), "--mode", mode,
                                   "--seconds", secs, "--json"], 120))
    # One publisher holding its lane alone (PublisherOptions::exclusive_lanes): plain-store claims.
    for size in sizes:
        for batch in [1, 64]:
            cases.append(("exclusive", "rvoip-events", {"size": size, "batch": batch},
                          [h.ours(), "throughput", "--exclusive", "--size", str(size), "--batch", str(batch), "--seconds", secs, "--json"], 120))
    # Fan-out runs more processes than cores, so its subscribers park: once with the library's default
    # wait (woken per event or few) and once with WaitOptions::batch_delay (woken once per batch). 1 -> 1
    # is the rate each fan-out subscriber is compared with, measured in the same run.
    for pubs, subs in [(1, 1), (4, 1), (1, 2), (1, 4)]:
        for wait in (["auto"] if subs == 1 else ["spin-park", "batch"]):
            cases.append(("fanout", "rvoip-events", {"publishers": pubs, "subscribers": subs, "wait": wait},
                          [h.ours(), "throughput", "--size", "64", "--publishers", str(pubs), "--subscribers", str(subs),
                           "--mode", wait, "--seconds", secs, "--json"], 120))
    for mode in ["spin", "block"]:
        for size in ([64] if s else [64, 1024]):
            count = str(2000 if h.smoke else (100000 if mode == "spin" else 20000) // (5 if h.quick else 1))
            cases.append(("latency", "rvoip-events", {"size": size, "mode": mode},
                          [h.ours(), "latency", "--size", str(size), "--mode", mode, "--count", count, "--json"], 300))
            for peer in h.peers:
                if mode in PEER_MODES["latency"][peer]:
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


def guess_seconds(case):
    """A case's wall time before it has run once, for the estimate of the time left (scaled by how the cases
    that ran compare with their guesses)."""
    argv = case[3]

    def opt(name, default):
        return float(argv[argv.index(name) + 1]) if name in argv else default
    if case[0] == "latency":
        return 0.5 + opt("--count", 20000) * (40e-6 if "block" in argv else 5e-6) * 1.1
    if case[0] in ("rtp", "rtp_with_signalling"):
        return 90
    return {"flood": 2, "idle": 1.5}.get(case[0], 1) * opt("--seconds", 8) + 0.5


def describe(case):
    """'uds throughput, 64 B, batch 1, block' for the progress lines."""
    p = case[2]
    words = [case[1], case[0]]
    if "size" in p:
        words.append("%d B" % p["size"])
    if "batch" in p:
        words.append("batch %d" % p["batch"])
    if "publishers" in p:
        words.append("%d -> %d" % (p["publishers"], p["subscribers"]))
    words += [str(v) for k, v in sorted(p.items()) if k not in ("size", "batch", "publishers", "subscribers", "mode")]
    if "mode" in p:
        words.append(p["mode"])
    return words[0] + " " + words[1] + (", " + ", ".join(words[2:]) if words[2:] else "")


def headline(r):
    """One figure of a finished run, for its progress line."""
    if r is None:
        return "FAILED (see the end)"
    mark = " (distorted: left out of the tables)" if r.get("distorted") else ""
    if r.get("events_per_sec") is not None:
        return "%.2f M events/s%s" % (r["events_per_sec"] / 1e6, mark)
    if r.get("p50_ns") is not None and r.get("rtt_p50_ns") is not None:
        return "p50 one-way %s, RTT/2 %s%s" % (fmt_ns(r["p50_ns"]), fmt_ns(r["rtt_p50_ns"] / 2), mark)
    return "done" + mark


def clock(seconds):
    seconds = int(seconds + 0.5)
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60) if seconds >= 3600 else "%d:%02d" % (seconds // 60, seconds % 60)


def measure(h):
    cases = plan(h)
    results = {key_of(c): [] for c in cases}
    # One-shot scenarios (memory, idle, rtp search) are run once even when --runs asks for more.
    once = {"memory", "idle", "rtp", "rtp_with_signalling", "scale"}
    schedule = [(run, c) for run in range(h.runs) for c in cases if run == 0 or c[0] not in once]
    took = {}  # case -> seconds of its first run: the estimate for its later runs
    guessed = spent = 0.0  # over first runs: how this machine compares with the guesses
    start = time.monotonic()
    width = len(str(len(schedule)))
    for i, (run, c) in enumerate(schedule):
        pace = spent / guessed if guessed else 1.0
        left = sum(took.get(key_of(x), guess_seconds(x) * pace) for _, x in schedule[i:])
        sys.stderr.write("[%*d/%d  %s elapsed, about %s left]  run %d of %d: %s ... " % (
            width, i + 1, len(schedule), clock(time.monotonic() - start), clock(left), run + 1, h.runs, describe(c)))
        sys.stderr.flush()
        t0 = time.monotonic()
        r = h.run(c[3], c[4])
        results[key_of(c)].append(r)
        dt = time.monotonic() - t0
        if key_of(c) not in took:
            took[key_of(c)] = dt
            guessed += guess_seconds(c)
            spent += dt
        log("%s (%.1f s)" % (headline(r), dt))
    log("measured %d runs of %d cases in %s" % (len(schedule), len(cases), clock(time.monotonic() - start)))
    return cases, results


def summarize_entry(scenario, system, params, raw):
    """One case's figures from its runs: medians (the keys tables read), spreads, and what was left out."""
    rs = [r for r in raw if r is not None]
    ok = [r for r in rs if not rejected(r)]
    left_out = {}
    for why in filter(None, map(rejected, rs)):
        left_out[why] = left_out.get(why, 0) + 1
    entry = {"scenario": scenario, "system": system, "params": params, "runs": len(ok), "left_out": left_out, "raw": rs}
    spread = {}
    if scenario in ("throughput", "fanout", "exclusive", "limit"):
        keys = ["events_per_sec", "aggregate_events_per_sec"]
    elif scenario == "latency":
        keys = LATENCY_KEYS + RTT_KEYS
    else:
        keys = []
    for k in keys:
        sp = spread_of([r.get(k) for r in ok])
        if sp:
            spread[k] = sp
            entry[k] = sp[1]
    if scenario == "flood" and ok:
        for phase in ("idle", "flood"):
            entry[phase] = {}
            for k in LATENCY_KEYS:
                sp = spread_of([r[phase].get(k) for r in ok if isinstance(r.get(phase), dict)])
                if sp:
                    entry[phase][k] = sp[1]
                    spread[phase + "." + k] = sp
        sp = spread_of([r.get("flood_events_per_sec") for r in ok])
        if sp:
            entry["flood_events_per_sec"] = sp[1]
    elif not keys and ok:
        entry.update({k: v for k, v in ok[-1].items() if k not in ("scenario", "system")})
    entry["spread"] = spread
    # A peer that could not have what the others have (posixmq's depth) says so; the tables print it.
    limited = next((r for r in ok if r.get("depth_wanted")), None)
    if limited:
        entry["handicap"] = {k: limited.get(k) for k in ("depth", "depth_wanted", "depth_limited_by")}
    return entry


def summarize(cases, results):
    return [summarize_entry(c[0], c[1], c[2], results[key_of(c)]) for c in cases]


def fmt_rate(v):
    return "-" if v is None else "%.2f M/s" % (v / 1e6)


def fmt_ratio(r):
    """'0.23x'; three decimals below 0.1, so a small ratio keeps two figures."""
    return ("%.2fx" if r >= 0.1 else "%.3fx") % r


def fmt_ns(v):
    if v is None:
        return "-"
    return "%.0f ns" % v if v < 10000 else "%.1f us" % (v / 1000)


def machine_line(mach):
    vm = " (virtual machine)" if mach.get("vm") else ""
    return "%s, %s cores%s, Linux %s" % (mach.get("cpu"), mach.get("cores"), vm, mach.get("kernel"))


def fmt_spread(sp, scale, unit, digits=2):
    """'median (min–max) unit' of one figure's runs; only the median when there was one run."""
    if not sp:
        return "-"
    f = "%%.%df" % digits
    if sp[0] == sp[2]:
        return ((f + " %s") % (sp[1] / scale, unit)).strip()
    return ((f + " (" + f + "–" + f + ") %s") % (sp[1] / scale, sp[0] / scale, sp[2] / scale, unit)).strip()


def fmt_ns_spread(sp, half=False):
    if not sp:
        return "-"
    sp = [v / 2 for v in sp] if half else sp
    return fmt_spread(sp, 1, "ns", 0) if sp[1] < 10000 else fmt_spread(sp, 1000, "us", 1)


def mode_of(e):
    return e["params"].get("mode") or next((r.get("mode") for r in e["raw"] if r.get("mode")), None)


class Index:
    """The summary's entries by (scenario, system, params); for throughput without the peer's receive mode, so one
    key holds an entry per mode."""

    def __init__(self, summary):
        self.by = {}
        for e in summary:
            p = {k: v for k, v in e["params"].items() if k != "mode" or e["scenario"] != "throughput"}
            self.by.setdefault((e["scenario"], e["system"], json.dumps(p, sort_keys=True)), []).append(e)

    def all(self, scenario, system, params):
        return self.by.get((scenario, system, json.dumps(params, sort_keys=True)), [])

    def best(self, scenario, system, params, key):
        """The entry whose median `key` is highest (the better mode), among those with accepted runs."""
        es = [e for e in self.all(scenario, system, params) if e.get(key) is not None]
        return max(es, key=lambda e: e[key]) if es else None


def tables(summary, peers, mach):
    lines = []
    idx = Index(summary)
    where = "Measured on %s." % machine_line(mach)
    runs = max([e["runs"] + sum(e["left_out"].values()) for e in summary] or [1])
    left_out = {}  # (why, system, scenario) -> runs
    for e in summary:
        for why, n in e["left_out"].items():
            what = "%d -> %d fan-in/out" % (e["params"]["publishers"], e["params"]["subscribers"]) if e["scenario"] == "fanout" else e["scenario"]
            left_out[(why, e["system"], what)] = left_out.get((why, e["system"], what), 0) + n

    systems = ["rvoip-events"] + peers
    # Throughput
    lines.append("### Throughput, 1 publisher -> 1 subscriber (M events/s as received)")
    lines.append("")
    spread_said = " Median of %d interleaved runs (min–max)." % runs if runs > 1 else " One run per case."
    lines.append(where + spread_said)
    lines.append("")
    ratios = (["iceoryx"] if "iceoryx" in peers else []) + (["best peer"] if peers else [])
    header = "| size | batch | " + " | ".join(systems) + "".join(" | ours / %s" % r for r in ratios) + " | limit | ours / limit |"
    lines.append(header)
    lines.append("|" + "---|" * (len(systems) + 2 + len(ratios) + 2))
    params = sorted({(e["params"]["size"], e["params"]["batch"]) for e in summary if e["scenario"] == "throughput"})
    handicaps = {}
    limits = False  # whether any row has a limit figure (results files from before it have none)
    for size, batch in params:
        p = {"size": size, "batch": batch}
        ours = idx.best("throughput", "rvoip-events", p, "events_per_sec")
        row = [str(size), str(batch), fmt_spread(ours and ours["spread"].get("events_per_sec"), 1e6, "")]
        best = {}  # peer -> median rate, for the ratios
        for peer in peers:
            es = idx.all("throughput", peer, p)
            e = idx.best("throughput", peer, p, "events_per_sec")
            if e:
                cell = fmt_spread(e["spread"]["events_per_sec"], 1e6, "") + ", " + (mode_of(e) or "?")
                hc = e.get("handicap")
                if hc:
                    cell += ", depth %s ¹" % hc["depth"]
                    handicaps.setdefault(hc["depth_limited_by"], set()).add((peer, hc["depth_wanted"]))
                best[peer] = e["events_per_sec"]
            elif batch > 1 and peer not in BATCHING_PEERS:
                cell = "no batching"
            elif es and all(x["left_out"] and not x["runs"] for x in es):
                cell = " / ".join(sorted({w for x in es for w in x["left_out"]}))
            elif es:
                cell = "failed"
            else:
                cell = "-"
            row.append(cell)
        o = ours and ours.get("events_per_sec")
        if "iceoryx" in peers:
            row.append("%.1fx" % (o / best["iceoryx"]) if o and best.get("iceoryx") else "-")
        if peers:
            top = max(best, key=best.get) if best else None
            row.append("%.1fx (%s)" % (o / best[top], top) if o and top else "-")
        # The limit is a per-record rate, so a batch row is divided by the same figure as batch 1.
        lim = next(iter(idx.all("limit", LIMIT, {"size": size})), None)
        lim_rate = lim and lim.get("events_per_sec")
        row.append(fmt_spread(lim["spread"]["events_per_sec"], 1e6, "") if lim_rate else "-")
        row.append(fmt_ratio(o / lim_rate) if o and lim_rate else "-")
        limits = limits or bool(lim_rate)
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Peers: each cell names how the receiver waited (spin: it polls; block: it sleeps in the system's own wait). "
                 "Where a peer's authors name no mode, both were run and the better is shown; zmq receives blocking, as its "
                 "perf/local_thr does. Batches: one claim for us; one framed write over SOCK_STREAM for uds, one chunk for "
                 "iceoryx, one message for zmq; posixmq and boostmq have no batch form, so no batch figure and no ratio. "
                 "Peers run at batch 1 and %d only." % PEER_BATCH)
    for why, who in sorted(handicaps.items()):
        lines.append("")
        lines.append("¹ Handicap: %s ran with a shallower queue than its default of %s messages, as deep as %s allows "
                     "(bench/peers/README.md)." % (" and ".join(sorted({p for p, _ in who})), " / ".join(sorted({str(w) for _, w in who})), why))
    if limits:
        lines.append("")
        lines.append("limit: `rvoip-bench limit`, records of the same size through a minimal single-producer single-consumer ring "
                     "in shared memory between two processes, both busy-polling, no broker and no library (bench/README.md, limit): "
                     "the fastest transfer this machine allows. ours / limit is our median over its median; it is a per-record rate, "
                     "so batch rows are divided by the same figure.")
    if peers:
        lines.append("")
        lines.append("Ratios: our median over the peer's, measured on %s; they hold for that machine only (on two "
                     "2-vCPU VMs of the same kind they have differed by 1.6x)." % machine_line(mach))
    lines.append("")
    # Exclusive publisher
    excl = [e for e in summary if e["scenario"] == "exclusive" and e["runs"]]
    if excl:
        lines.append("### One publisher holding its lane alone (exclusive), 1 -> 1 (M events/s as received)")
        lines.append("")
        lines.append(where + spread_said)
        lines.append("")
        lines.append("| size | batch | shared lane (CAS claim) | exclusive lane (plain store) | exclusive / shared | limit | exclusive / limit |")
        lines.append("|---|---|---|---|---|---|---|")
        for e in sorted(excl, key=lambda x: (x["params"]["size"], x["params"]["batch"])):
            shared = idx.best("throughput", "rvoip-events", e["params"], "events_per_sec")
            sp, ss = e["spread"].get("events_per_sec"), shared and shared["spread"].get("events_per_sec")
            lim = next(iter(idx.all("limit", LIMIT, {"size": e["params"]["size"]})), None)
            lp = lim and lim["spread"].get("events_per_sec")
            lines.append("| %d | %d | %s | %s | %s | %s | %s |" % (
                e["params"]["size"], e["params"]["batch"], fmt_spread(ss, 1e6, ""), fmt_spread(sp, 1e6, ""),
                "%.2fx" % (sp[1] / ss[1]) if sp and ss else "-", fmt_spread(lp, 1e6, "") if lp else "-",
                fmt_ratio(sp[1] / lp[1]) if sp and lp else "-"))
        lines.append("")
        lines.append("An exclusive publisher (`PublisherOptions::exclusive_lanes`) claims with a plain store of the "
                     "lane's tail instead of a CAS, and its wake-up check costs no barrier: a consumer parking on the "
                     "lane issues a membarrier for it (docs/architecture.md). Shared: the throughput table's figure, "
                     "measured in the same run.")
        lines.append("")
    # Fan-in / fan-out
    fan = [e for e in summary if e["scenario"] == "fanout"]
    if fan:
        lines.append("### Fan-in and fan-out, 64 B (M events/s)")
        lines.append("")
        lines.append(where + spread_said)
        lines.append("")
        one = next((e for e in fan if e["params"]["publishers"] == 1 and e["params"]["subscribers"] == 1 and e["runs"]), None)
        one_rate = one["spread"]["events_per_sec"][1] if one and one["spread"].get("events_per_sec") else None
        lines.append("| publishers | subscribers | subscribers wait | per subscriber (slowest) | per subscriber / 1:1 | deliveries, all subscribers |")
        lines.append("|---|---|---|---|---|---|")
        for e in fan:
            if not e["runs"]:
                continue
            sp = e["spread"].get("events_per_sec")
            ratio = "%.2fx" % (sp[1] / one_rate) if sp and one_rate and e["params"]["subscribers"] > 1 else "-"
            wait = e["raw"][0].get("wait_mode", "?") if e["raw"] else "?"
            lines.append("| %d | %d | %s | %s | %s | %s |" % (e["params"]["publishers"], e["params"]["subscribers"], wait,
                                                           fmt_spread(sp, 1e6, ""), ratio,
                                                           fmt_spread(e["spread"].get("aggregate_events_per_sec"), 1e6, "")))
        lines.append("")
        lines.append("1:1 is the first row: one publisher to one subscriber, measured with the others, interleaved. "
                     "spin-park is the library's default wait: a subscriber that drained its lanes parks and is rung by "
                     "the next event, so with more processes than cores each wake-up carries a few events. batch is "
                     "WaitOptions::batch_delay = 100 us: a subscriber in a stream naps between looks instead of being "
                     "rung, one wake-up per batch of events (a non-Critical event may wait up to 100 us longer).")
        lines.append("")
    # Latency
    lines.append("### Latency by ping-pong: one-way, and half the round trip")
    lines.append("")
    lines.append(where + spread_said + " One-way: from a stamp the pinger takes just before its "
                 "publish or send call, for every system, to the echoer's receive; RTT/2: half the pinger's round trip, "
                 "which needs no shared clock.")
    lines.append("")
    lines.append("| mode | size | system | measure | p50 | p90 | p99 | p99.9 | max |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    lat = sorted({(e["params"]["mode"], e["params"]["size"]) for e in summary if e["scenario"] == "latency"})
    for mode, size in lat:
        for sys_ in systems:
            es = idx.all("latency", sys_, {"size": size, "mode": mode})
            e = es[0] if es and es[0].get("p50_ns") is not None else None
            if not e:
                continue
            lines.append("| %s | %d | %s | one-way | %s |" % (mode, size, sys_, " | ".join(fmt_ns_spread(e["spread"].get(k)) for k in LATENCY_KEYS)))
            lines.append("| %s | %d | %s | RTT/2 | %s |" % (mode, size, sys_, " | ".join(fmt_ns_spread(e["spread"].get(k), half=True) for k in RTT_KEYS)))
    lines.append("")
    if "zmq" in peers and "spin" not in PEER_MODES["latency"]["zmq"]:
        lines.append("zmq runs in block mode only: its own perf/local_lat receives blocking, and its I/O thread moves the data, "
                     "so a polling receiver would only take that thread's core.")
        lines.append("")
    flood = next((e for e in summary if e["scenario"] == "flood" and e["system"] == "rvoip-events"), {})
    if flood.get("idle"):
        lines.append("### Critical latency under a Low-lane flood")
        lines.append("")
        lines.append(where + spread_said)
        lines.append("")
        lines.append("| phase | p50 | p99 | p99.9 | max |")
        lines.append("|---|---|---|---|---|")
        for phase in ("idle", "flood"):
            lines.append("| %s | %s |" % (phase, " | ".join(fmt_ns_spread(flood["spread"].get(phase + "." + k))
                                                          for k in ("p50_ns", "p99_ns", "p999_ns", "max_ns"))))
        if flood.get("flood_events_per_sec"):
            lines.append("")
            lines.append("Flood rate: %s Low events." % fmt_rate(flood["flood_events_per_sec"]))
        lines.append("")
    if left_out:
        said = {"distorted": "as distorted (a polling thread among more busy threads than cores)",
                "not a batch": "as not a batch (a loop of single sends)"}
        for why in sorted({w for w, _, _ in left_out}):
            lines.append("Left out %s, kept in the results file: %s." % (said.get(why, why), ", ".join(
                "%s %s (%d run%s)" % (sys_, what, n, "s" if n > 1 else "") for (w, sys_, what), n in sorted(left_out.items()) if w == why)))
            lines.append("")
    scen = system_scenarios({e["scenario"]: e for e in summary if e["runs"] and e["system"] == "rvoip-events"})
    lines += scen
    if any(scen):
        lines.append("The call storm and the lines above: rvoip-events alone, its last run. " + where)
        lines.append("")
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
        if cs.get("session_consumers") != "a thread per subscription":
            lines.append("")
            lines.append("How each topic is read: transport and media are one thread each, which takes call.state and media.command "
                         "at its next 1 ms tick (hence ~1 ms); the session waits on one WaitSet, woken by call.control and sip.message, "
                         "and takes the Low reports (media.quality, rtp.stats) when it wakes for those, at the latest 5 ms after it parked.")
        if cs.get("paced_block_ping_pong_p99_ns"):
            lines.append("")
            lines.append("Critical p99 against a blocking ping-pong in the same run: %.2fx its p99 when paced like the ticks (%s), %.2fx back to back (%s). "
                         "Ticks late by more than 10 ms: %s by the bus's work, %s by the scheduler (the pacer woke late)." % (
                             cs.get("critical_p99_over_paced_block_ping_pong_p99", 0), fmt_ns(cs.get("paced_block_ping_pong_p99_ns")),
                             cs.get("critical_p99_over_block_ping_pong_p99", 0), fmt_ns(cs.get("block_ping_pong_p99_ns")),
                             cs.get("late_ticks_bus", 0), cs.get("late_ticks_scheduler", 0)))
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
    model, vm = "unknown CPU", False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    vm = vm or "hypervisor" in line.split()
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = "%.0f GiB" % (int(f.readline().split()[1]) / 1024 / 1024)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "vm": vm, "memory": mem, "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def plot(summary, peers, outdir, mach):
    if not shutil.which("gnuplot"):
        log("gnuplot not found: no plots")
        return []
    made = []
    idx = Index(summary)
    systems = ["rvoip-events"] + peers
    where = machine_line(mach).replace("'", "")
    tmp = tempfile.mkdtemp(prefix="rvoip-plot-")
    # Throughput vs size, batch 1, per system: each peer in its better mode, distorted runs left out.
    series = []
    sizes = sorted({e["params"]["size"] for e in summary if e["scenario"] == "throughput"})
    for s in systems:
        pts = []
        for size in sizes:
            e = idx.best("throughput", s, {"size": size, "batch": 1}, "events_per_sec")
            if e:
                pts.append((size,) + tuple(v / 1e6 for v in e["spread"]["events_per_sec"]))
        if pts:
            path = os.path.join(tmp, "tp-%s.dat" % s)
            with open(path, "w") as f:
                f.writelines("%d %f %f %f\n" % p for p in pts)  # size, min, median, max
            series.append("'%s' using 1:3:2:4 with yerrorlines title '%s'" % (path, s))
    if series:
        png = os.path.join(outdir, "throughput.png")
        gp = ("set terminal png size 900,540; set output '%s'; set logscale xy; set xlabel 'event size (bytes)';"
              "set ylabel 'million events/s (median, min-max)'; set title \"Throughput, 1 publisher -> 1 subscriber, per-event publish\\n%s\";"
              "set key outside; plot %s\n" % (png, where, ", ".join(series)))
        if subprocess.run(["gnuplot"], input=gp, text=True).returncode == 0:
            made.append(png)
    # Latency percentile curves, spin and block, 64 B: one-way (solid) and RTT/2 (dashed), medians of the runs.
    for mode in ("spin", "block"):
        series = []
        for n, s in enumerate(systems):
            e = next(iter(idx.all("latency", s, {"size": 64, "mode": mode})), None)
            if not e or e.get("p50_ns") is None:
                continue
            path = os.path.join(tmp, "lat-%s-%s.dat" % (mode, s))
            with open(path, "w") as f:
                for i, (k, r, label) in enumerate(zip(LATENCY_KEYS, RTT_KEYS, ["p50", "p90", "p99", "p99.9", "max"])):
                    f.write("%d %s %f %f\n" % (i, label, e[k] / 1000, e.get(r, 0) / 2000))
            series.append("'%s' using 1:3:xtic(2) with linespoints lc %d lw 2 title '%s one-way'" % (path, n + 1, s))
            series.append("'%s' using 1:4 with linespoints lc %d dt 2 title '%s RTT/2'" % (path, n + 1, s))
        if series:
            png = os.path.join(outdir, "latency-%s.png" % mode)
            gp = ("set terminal png size 900,540; set output '%s'; set logscale y; set ylabel 'latency (us)';"
                  "set title \"Latency, 64 B, %s mode: one-way and RTT/2\\n%s\"; set key outside; plot %s\n" % (png, mode, where, ", ".join(series)))
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
              "set ylabel 'Critical one-way latency (us)'; set title \"Critical latency: idle vs Low-lane flood\\n%s\";"
              "plot '%s' using 2:xtic(1) title 'idle', '' using 3 title 'flood'\n" % (png, where, path))
        if subprocess.run(["gnuplot"], input=gp, text=True).returncode == 0:
            made.append(png)
    shutil.rmtree(tmp, ignore_errors=True)
    return made


def update_readme(text, plots, mach, quick):
    readme = os.path.join(ROOT, "README.md")
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    with open(readme) as f:
        content = f.read()
    if begin not in content or end not in content:
        log("README has no benchmark markers: not updated")
        return
    rel = [os.path.relpath(p, ROOT) for p in plots]
    section = [begin, "",
               ("**A quick run: one short run per case, a first look, not figures to quote.** " if quick else "") +
               "Measured by `make bench%s` on %s, %s, %s. Each figure is the median of interleaved runs, with their "
               "minimum and maximum; every run crosses real processes (through a real `rvoip-eventd` for us). Each peer "
               "runs the way its authors run it, and runs distorted by the machine are left out: `bench/README.md`, "
               "\"How each peer is run, and why\"." % ("-quick" if quick else "", machine_line(mach), mach.get("memory"), mach.get("date")),
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
    ap.add_argument("--quick", action="store_true", help="a first look: every system, 64 B and 1 KiB, one short run per case (about a minute)")
    ap.add_argument("--verbose", action="store_true", help="print each command line")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite the README's performance section")
    ap.add_argument("--from", dest="from_file", help="no measuring: tables, plots and README from this results file")
    a = ap.parse_args()
    if a.from_file:
        with open(a.from_file) as f:
            saved = json.load(f)
        # Summarized again from the raw runs, so a file written before a rule changed is read by today's rules.
        summary = [summarize_entry(e["scenario"], e["system"], e["params"], e.get("raw", [])) for e in saved["results"]]
        built = [p for p in PEERS if p in {e["system"] for e in summary}]
        text = tables(summary, built, saved["machine"])
        print(text)
        plots = plot(summary, built, os.path.dirname(os.path.abspath(a.from_file)), saved["machine"])
        if not a.no_readme:
            update_readme(text, plots, saved["machine"], saved.get("quick", False))
        return 0
    peers = [] if (a.no_peers or a.smoke) else PEERS
    h = Harness(a.bindir, a.smoke, 1 if (a.smoke or a.quick) else a.runs, peers, quick=a.quick, verbose=a.verbose)
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
    name = ("smoke-" if a.smoke else "quick-" if a.quick else "") + stamp + ".json"
    with open(os.path.join(a.out, name), "w") as f:
        json.dump({"machine": mach, "runs": h.runs, "quick": a.quick, "results": summary,
                   "failures": [[" ".join(x), y] for x, y in h.failures]}, f, indent=1)
    text = tables(summary, h.peers, mach)
    print(text)
    plots = [] if a.smoke else plot(summary, h.peers, a.out, mach)
    if not a.smoke and not a.no_readme:
        update_readme(text, plots, mach, a.quick)
    print("results: %s" % os.path.join(a.out, name))
    if h.failures:
        for argv, why in h.failures:
            log("FAILED: %s\n  %s" % (" ".join(argv), why))
        return 1
    print("suite: %d cases, all completed" % len(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
