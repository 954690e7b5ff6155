"""Issue 8, figure 3: the fan-out's cost and latency with N browser-like feed sessions.

    python -m bench.perf_fanout [--sessions 1000 --loadgens 2 --window-s 60 --baseline-s 20
                                 --profile-s 0 --no-batch --results bench/results/perf-fanout.json]

It runs the real program (``python -m app.cli run``) against the eight simulated venues
(``python -m app.sim``), then:

1. **baseline**: no session; the server's CPU seconds (psutil, user + system, every
   thread) over ``--baseline-s``: what ingest, shards, recorder and the hub's tick cost;
2. **loaded**: ``--sessions`` feed sessions from ``--loadgens`` load-generator processes
   (``bench/loadgen.py``, batched ``/feed?batch=1`` as the UI asks), each subscribed as
   the UI is with two symbols open (:data:`TOPICS`). Once every session is admitted and
   ``--warm-s`` has passed, the load generators are told to start a measured window
   (SIGUSR1) and, ``--window-s`` later, to end it (SIGUSR2); the server's CPU seconds and
   its hub counters are read at the same two instants. A session that is refused or
   closed reconnects (a second apart); when not all are admitted within
   ``--admit-timeout-s`` the window starts anyway and the result says how many were held.

Figures: the server's CPU share in each phase (100 % = one core) and their difference
(the fan-out's own share); frames, messages and bytes per second delivered to the
clients; and, per ``quotes:<SYMBOL>`` delta a client reads, three latencies in ms:

* ``quote_age``: the client's wall-clock receipt time (when its websocket library hands
  it the message) minus the newest ``recv_ms`` among the frame's venues, i.e. from the
  server's receipt of the newest venue frame that the quote frame carries to the client
  reading it. Both clocks are the same machine's, on loopback.
* ``quote_server``: the frame's ``ts`` (when the hub built it) minus that ``recv_ms``:
  the part spent in the server before fan-out (connector batch, shard tick, hub tick).
* ``delivery``: receipt minus the frame's ``ts``, over every delta frame of every topic:
  the fan-out itself (outbox, session writer, web stack, socket, client's loop).

Each figure includes the contention of the machine: the load generators decode every
frame in Python on the same cores as the server and the simulator.
``--profile-s S`` also records the server with py-spy for S seconds inside the window
(``<work>/perf-fanout/profile.txt``, py-spy's raw collapsed stacks) and adds the top
functions to the result.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.harness import (
    Child,
    Run,
    collect,
    free_port,
    save_perf,
    terminate,
    venue_sections,
    wait_healthy,
)

BENCH = Path(__file__).resolve().parent
RESULT = BENCH / "results" / "perf-fanout.json"
#: what the bundled UI subscribes to with two symbols open
TOPICS = "opportunities,venues,quotes:BTC/USDT,spreads:BTC/USDT,quotes:ETH/USDT,spreads:ETH/USDT"
GOAL_CPU_PCT = 25.0
#: a profile sample whose stack holds one of these is the fan-out's: the hub's tick after
#: the shards' payloads are absorbed, the sessions, and the web server's connections
FANOUT_FRAMES = ("Hub.broadcast", "Hub.events", "Hub.maintain", "Hub._fan_out", "_Session.", "run_session",
                 "serve.<locals>.handle", "TCPServer.")
GOAL_P99_MS = 50.0


@dataclass
class Reading:
    """The server's and the load generators' CPU seconds and the hub's counters at one instant."""

    at: float
    cpu_s: float
    others_cpu_s: dict[str, float]
    #: None when /health did not answer within a minute (a saturated loop)
    health: dict[str, Any] | None


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _health(base: str) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(base + "/health", timeout=60).json()
    return doc


def _read(base: str, server: psutil.Process, others: dict[str, psutil.Process]) -> Reading:
    """CPU seconds now; then /health (its counters lag the instant by its response time)."""
    at = time.monotonic()
    cpu = _cpu_s(server)
    others_cpu: dict[str, float] = {}
    for name, process in others.items():
        try:
            others_cpu[name] = _cpu_s(process)
        except psutil.Error:
            others_cpu[name] = float("nan")
    try:
        health: dict[str, Any] | None = _health(base)
    except (httpx.TransportError, ValueError):
        health = None
    return Reading(at, cpu, others_cpu, health)


def _phase(a: Reading, b: Reading) -> dict[str, Any]:
    """What happened between two readings: CPU shares and per-second rates."""
    wall = b.at - a.at
    out: dict[str, Any] = {
        "wall_s": round(wall, 2),
        "server_cpu_s": round(b.cpu_s - a.cpu_s, 2),
        "server_cpu_pct": round(100.0 * (b.cpu_s - a.cpu_s) / wall, 1),
        "others_cpu_pct": {name: round(100.0 * (b.others_cpu_s[name] - a.others_cpu_s[name]) / wall, 1)
                           for name in b.others_cpu_s if name in a.others_cpu_s},
        "health_answered": a.health is not None and b.health is not None,
    }
    if a.health is None or b.health is None:
        return out
    ha, hb = a.health, b.health

    def venues(key: str, h: dict[str, Any]) -> int:
        return int(sum(v[key] for v in h["venues"].values()))

    return {
        **out,
        "quotes_per_s": round((venues("quotes", hb) - venues("quotes", ha)) / wall, 1),
        "venue_messages_per_s": round((venues("messages", hb) - venues("messages", ha)) / wall, 1),
        "hub_frames_encoded_per_s": round((hb["hub"]["frames_encoded"] - ha["hub"]["frames_encoded"]) / wall, 1),
        "hub_frames_offered_per_s": round((hb["hub"]["frames_offered"] - ha["hub"]["frames_offered"]) / wall, 1),
        "hub_frames_dropped": hb["hub"]["frames_dropped"] - ha["hub"]["frames_dropped"],
        "resyncs": hb["hub"]["resyncs"] - ha["hub"]["resyncs"],
        "sessions": hb["sessions"]["count"],
        "loop_lag_ms": hb["process"]["loop_lag"],
        "rss_mb": hb["process"]["rss_mb"],
        "reconnects": venues("reconnects", hb) - venues("reconnects", ha),
    }


def _wait_sessions(base: str, n: int, timeout: float, loadgens: list[tuple[Child, Path]]) -> tuple[float, int]:
    """Seconds until the hub holds ``n`` sessions (or ``timeout``), and how many it holds."""
    started = time.monotonic()
    held = 0
    while time.monotonic() - started < timeout:
        try:
            held = _health(base)["sessions"]["count"]
        except httpx.TransportError:  # a thousand handshakes at once can hold /health up
            continue
        if held >= n:
            return time.monotonic() - started, held
        if any(child.proc.poll() is not None for child, _ in loadgens):
            raise RuntimeError("a load generator exited early; see its log under bench/out/perf-fanout")
        time.sleep(0.5)
    return time.monotonic() - started, held


def _profile(pid: int, seconds: float, path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50",
                             "-f", "raw", "-o", str(path), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_functions(raw: Path, n: int = 25) -> dict[str, Any]:
    """From py-spy's collapsed stacks: each function's share of samples, inclusive (on the
    stack) and exclusive (innermost frame), the ``n`` largest of each, and the share of
    samples in the fan-out's code (:data:`FANOUT_FRAMES`)."""
    inclusive: collections.Counter[str] = collections.Counter()
    exclusive: collections.Counter[str] = collections.Counter()
    total = fanout = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        total += k
        if any(mark in stack for mark in FANOUT_FRAMES):
            fanout += k
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += k
        exclusive[frames[-1]] += k
    if not total:
        return {"samples": 0, "fanout_pct": None, "inclusive_pct": {}, "exclusive_pct": {}}
    return {"samples": total, "fanout_pct": round(100.0 * fanout / total, 1),
            "inclusive_pct": {f: round(100.0 * c / total, 1) for f, c in inclusive.most_common(n)},
            "exclusive_pct": {f: round(100.0 * c / total, 1) for f, c in exclusive.most_common(n)}}


def run(out: Path, *, sessions: int = 1000, loadgens: int = 2, baseline_s: float = 20.0,
        window_s: float = 60.0, warm_s: float = 5.0, admit_timeout_s: float = 60.0,
        profile_s: float = 0.0, batch: bool = True, topics: str = TOPICS,
        symbols: int | None = None) -> dict[str, Any]:
    """Run the measurement (working files under ``out/perf-fanout``); return the result."""
    with Run(out / "perf-fanout") as run:
        sim, endpoints = run.start_sim(symbols=symbols)
        port = free_port()
        config = {"recorder": {"data_dir": str(run.directory / "data")}, **venue_sections(endpoints),
                  "feed": {"max_sessions": max(sessions, 1000)}}
        server = run.start_server(config, port=port)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, timeout=90)
        proc = psutil.Process(server.proc.pid)
        others = {"sim": psutil.Process(sim.proc.pid)}
        time.sleep(2.0)  # discovery's first snapshots and the first subscriptions settle

        b0 = _read(base, proc, others)
        time.sleep(baseline_s)
        b1 = _read(base, proc, others)
        baseline = _phase(b0, b1)

        # a refused or broken session comes back, as a browser would (counted in connects)
        extra = ["--window-signals", "--reconnect", *([] if batch else ["--no-batch"])]
        gens = run.start_loadgens(base.replace("http", "ws") + "/feed", sessions=sessions,
                                  processes=loadgens, seconds=admit_timeout_s + warm_s + window_s + 60,
                                  topics=topics, extra=extra, tag="fanout")
        admit_s, held = _wait_sessions(base, sessions, admit_timeout_s, gens)
        time.sleep(warm_s)
        for child, _ in gens:
            others[child.name] = psutil.Process(child.proc.pid)
            child.proc.send_signal(signal.SIGUSR1)
        l0 = _read(base, proc, others)
        spy = None
        raw = run.directory / "profile.txt"
        if profile_s > 0:
            spy = _profile(server.proc.pid, min(profile_s, window_s), raw)
        time.sleep(window_s)
        l1 = _read(base, proc, others)
        for child, _ in gens:
            child.proc.send_signal(signal.SIGUSR2)
        loaded = _phase(l0, l1)
        for child, _ in gens:
            child.proc.wait(timeout=60)
        clients = collect(path for _, path in gens if path.exists())
        if spy is not None:
            spy.wait(timeout=60)
        terminate(server)
        profile = top_functions(raw) if spy is not None and raw.exists() else None
    return _result(sessions, held, loadgens, batch, topics, baseline, loaded, clients, admit_s, profile,
                   {"baseline_s": baseline_s, "window_s": window_s, "warm_s": warm_s})


def _result(sessions: int, held: int, loadgens: int, batch: bool, topics: str, baseline: dict[str, Any],
            loaded: dict[str, Any], clients: dict[str, Any], admit_s: float,
            profile: dict[str, Any] | None, timing: dict[str, float]) -> dict[str, Any]:
    fast = clients.get("fast", {})
    window = loaded["wall_s"]
    diff_pct = round(loaded["server_cpu_pct"] - baseline["server_cpu_pct"], 1)
    # On a shared machine the server may get less CPU than it wants (its ingest then falls
    # behind, so the difference understates the fan-out): the profile's share of samples
    # in the fan-out's code, times the CPU the server got, is the direct figure.
    profiled = profile.get("fanout_pct") if profile else None
    fanout_pct = round(loaded["server_cpu_pct"] * profiled / 100.0, 1) if profiled is not None else diff_pct
    messages = fast.get("messages", 0)
    us_per_message = round(fanout_pct / 100.0 * window / messages * 1e6, 1) if messages else None
    # nominal: every session gets one (batched) message per 250 ms tick
    nominal_pct = round(us_per_message * sessions * 4 / 1e4, 1) if us_per_message is not None else None
    age = fast.get("quote_age_ms") or {}
    p99 = age.get("p99")
    delivered = {
        "frames_per_s": round(fast.get("frames", 0) / window, 1),
        "messages_per_s": round(fast.get("messages", 0) / window, 1),
        "bytes_per_s": round(fast.get("bytes", 0) / window, 1),
        "frames_per_message": round(fast.get("frames", 0) / max(1, fast.get("messages", 0)), 2),
        "gaps": fast.get("gaps", 0), "resyncs": fast.get("resyncs", 0), "closes": fast.get("closes", {}),
        "connects_in_window": fast.get("connects", 0),
    }
    latency = {"quote_age": age, "quote_server": fast.get("quote_server_ms"),
               "delivery": fast.get("latency_ms")}
    return {
        "name": "perf-fanout",
        "title": f"Fan-out: {sessions} feed sessions at a 250 ms tick, 8 simulated venues",
        "params": {"sessions": sessions, "loadgens": loadgens, "batch": batch, "topics": topics, **timing},
        "criteria": [
            {"text": f"the fan-out's CPU share <= {GOAL_CPU_PCT:g} % of a core "
                     f"({'profiled' if profiled is not None else 'loaded minus baseline'})",
             "measured": f"{fanout_pct} % ({loaded['server_cpu_pct']} % loaded, "
                         f"{baseline['server_cpu_pct']} % baseline)", "passed": fanout_pct <= GOAL_CPU_PCT},
            {"text": f"the same at nominal load ({sessions} sessions x 4 messages/s), from the cost "
                     "per delivered message", "measured": f"{nominal_pct} % ({us_per_message} us/message)",
             "passed": nominal_pct is not None and nominal_pct <= GOAL_CPU_PCT},
            {"text": f"p99 venue receipt -> client receipt of the quote frame < {GOAL_P99_MS:g} ms",
             "measured": f"p50 {age.get('p50')} ms, p99 {p99} ms",
             "passed": p99 is not None and p99 < GOAL_P99_MS},
        ],
        "figures": {"baseline": baseline, "loaded": loaded, "fanout_cpu_pct": fanout_pct,
                    "fanout_cpu_pct_difference": diff_pct, "fanout_cpu_pct_profiled": fanout_pct
                    if profiled is not None else None, "fanout_us_per_message": us_per_message,
                    "fanout_cpu_pct_at_nominal": nominal_pct,
                    "delivered": delivered, "latency_ms": latency, "admit_s": round(admit_s, 1),
                    "sessions_held": held,
                    "clients": clients, "profile": profile},
        "samples": [],
    }


def table(result: dict[str, Any]) -> str:
    f = result["figures"]
    b, lo, d, lat = f["baseline"], f["loaded"], f["delivered"], f["latency_ms"]

    def ms(h: dict[str, Any] | None) -> str:
        return f"p50 {h.get('p50')} / p99 {h.get('p99')} ms ({h.get('count')} frames)" if h else "-"

    b, lo = collections.defaultdict(lambda: "?", b), collections.defaultdict(lambda: "?", lo)
    lag = lo["loop_lag_ms"].get("p99_ms") if isinstance(lo["loop_lag_ms"], dict) else "?"
    rows = [
        ("server CPU, baseline (no session)", f"{b['server_cpu_pct']} % of a core ({b['quotes_per_s']} quotes/s)"),
        (f"server CPU, {f['sessions_held']} sessions", f"{lo['server_cpu_pct']} % of a core "
                                                        f"({lo['quotes_per_s']} quotes/s)"),
        ("fan-out's share: difference", f"{f['fanout_cpu_pct_difference']} % of a core"),
        ("fan-out's share: profiled", f"{f['fanout_cpu_pct_profiled']} % of a core"),
        ("fan-out CPU per delivered message", f"{f['fanout_us_per_message']} us"),
        ("  -> at nominal (sessions x 4/s)", f"{f['fanout_cpu_pct_at_nominal']} % of a core"),
        ("load generators + simulator CPU", ", ".join(f"{k} {v} %" for k, v in lo["others_cpu_pct"].items())),
        ("delivered frames/s", f"{d['frames_per_s']:,} ({d['frames_per_message']} per message)"),
        ("delivered messages/s", f"{d['messages_per_s']:,}"),
        ("delivered MB/s", f"{d['bytes_per_s'] / 1e6:.2f}"),
        ("hub frames offered/s", f"{lo['hub_frames_offered_per_s']}"),
        ("drops / resyncs / gaps / connects", f"{lo['hub_frames_dropped']} / {lo['resyncs']} / {d['gaps']} / "
                                              f"{d['connects_in_window']}"),
        ("venue reconnects in the window", f"{lo['reconnects']}"),
        ("quote age (venue recv -> client)", ms(lat["quote_age"])),
        ("  of which in the server", ms(lat["quote_server"])),
        ("delivery (frame ts -> client)", ms(lat["delivery"])),
        ("server loop lag p99", f"{lag} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [result["title"], *(f"  {k:<{width}}  {v}" for k, v in rows)]
    lines += [f"  {'PASS' if c['passed'] else 'FAIL'}  {c['text']}: {c['measured']}" for c in result["criteria"]]
    profile = f.get("profile")
    if profile:
        lines.append(f"  profile ({profile['samples']} samples), inclusive:")
        lines += [f"    {pct:5.1f} %  {name}" for name, pct in list(profile["inclusive_pct"].items())[:15]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.perf_fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--loadgens", type=int, default=2)
    parser.add_argument("--baseline-s", type=float, default=20.0)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--warm-s", type=float, default=5.0)
    parser.add_argument("--admit-timeout-s", type=float, default=60.0)
    parser.add_argument("--profile-s", type=float, default=0.0)
    parser.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--topics", default=TOPICS)
    parser.add_argument("--work", type=Path, default=BENCH / "out")
    parser.add_argument("--results", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    if args.profile_s > 0 and shutil.which("py-spy") is None:
        parser.error("--profile-s needs py-spy on PATH (`.venv/bin/pip install py-spy`, then "
                     "PATH=.venv/bin:$PATH), or --profile-s 0")
    result = run(args.work, sessions=args.sessions, loadgens=args.loadgens, baseline_s=args.baseline_s,
                 window_s=args.window_s, warm_s=args.warm_s,
                 admit_timeout_s=args.admit_timeout_s, profile_s=args.profile_s, batch=args.batch,
                 topics=args.topics)
    save_perf(result, "bench.perf_fanout", argv, args.results, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
