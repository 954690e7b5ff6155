"""Issue 8, figure 4: memory per idle session, per window series, per buffered recorder row.

    python -m bench.perf_memory [--steps 0,250,500,1000] [--settle-s 3] [--no-trace] [--tiny]

**Sessions** (the real program, out of process). ``python -m app.cli run`` against the
simulated venues (``python -m app.sim --venues binance,bybit``, as ``bench/harness.py``
starts them; the configuration needs at least one venue), recorder off so its flushes
do not move RSS. A client process (``python -m bench.perf_memory client``, trio-websocket)
opens ``/feed?batch=1`` sessions in steps (N = 0, 250, 500, 1000) and holds them open,
answering pings. Two kinds, each on a fresh server:

* ``idle``: connected and subscribed to nothing (the server still pings it every
  ``heartbeat_interval_s``);
* ``subscribed``: ``opportunities`` plus ``quotes:`` and ``spreads:`` of BTC/USDT and
  ETH/USDT, each session waiting for those snapshots before the step counts.

At each step, after ``--settle-s``, the server's ``/debug/memory`` (``app/memprobe.py``,
installed only when ``SPREADWATCH_MEMPROBE`` is set) collects garbage and trims the
heap; then RSS is read with psutil. Bytes per session is the slope of a least-squares
line through (N, RSS). A third server runs with ``SPREADWATCH_MEMPROBE=trace``
(tracemalloc from app creation, 12 frames) and dumps a snapshot per step; its slope of
traced bytes and the largest N's difference from N = 0, grouped by allocating line and
by the first frame in our code or the web stack, say where the bytes go.

**Window series** (in process, tracemalloc): a :class:`~actors.windows.SeriesStore` built
as a shard builds it (bid/ask per (symbol, venue), width 2; best net spread per symbol,
width 1, max mode), every slot of the configured hour written; bytes per series against
``capacity * width * 8 + SERIES_OVERHEAD_BYTES`` from ``actors/budget.py``.

**Recorder rows** (in process, tracemalloc): ``actors.recorder._Recorder.add`` with N
quotes, trades (a distinct ``trade_id`` string each, as venues send) and opportunity
events, the records dropped as they are added (only what the buffers keep counts);
bytes per row against ``RECORDER_ROW_BYTES``.

Writes ``bench/results/perf-memory.json`` (``--results``), prints a table. Working files
go under ``bench/out/perf-memory/``. The whole run takes about 3 minutes; the parts can
be run apart and merged into one file (``--runs ... --no-in-process --merge``).

Before/after (idle RSS slope; subscribed in brackets): 58.2 (73.0) KiB and 8 tasks a
session with ``/feed`` through Quart's websocket wrapper; 41.4 KiB on plain ASGI (6
tasks); 36.2 without hypercorn's WebSocket ping task (5); 34.0 with the session's
reader in its own task and the heartbeat in the writer (3); 32.5 with the Outbox's
slots, list and single waiter and no dispatch frame; 30.8 without hypercorn's idle read
scope; 29.5-30.0 (35.6) with the read loop waiting on the socket itself.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import itertools
import json
import math
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "perf-memory.json"
WORK = ROOT / "bench" / "out" / "perf-memory"
TITLE = "Memory: bytes per idle session, per window series, per buffered recorder row"
GOAL_SESSION_BYTES = 30 * 1024
#: the session measurements, each on a fresh server: kind (idle, subscribed) / mode (rss, trace)
SESSION_RUNS = ("idle/rss", "subscribed/rss", "idle/trace")
SIM_VENUES = ("binance", "bybit")
SIM_SYMBOLS = 12  # the simulator's first symbols (BTC/USDT, ETH/USDT among them): a light pipeline
SUBSCRIBED_TOPICS = ("opportunities", "quotes:BTC/USDT", "spreads:BTC/USDT", "quotes:ETH/USDT",
                     "spreads:ETH/USDT")
#: the packages a traced allocation is attributed to (its innermost frame in one of them)
OWNERS = ("actors", "app", "hypercorn", "wsproto", "h11", "quart_trio", "quart", "werkzeug",
          "trio", "msgpack", "asyncio", "contextlib", "dataclasses")


# -- fits ----------------------------------------------------------------------------------


def linear_fit(points: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Least squares ``y = slope * x + intercept`` with r²."""
    n = len(points)
    if n < 2:
        return {"slope": math.nan, "intercept": math.nan, "r2": math.nan}
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    syy = sum((y - my) ** 2 for _, y in points)
    slope = sxy / sxx if sxx else math.nan
    r2 = (sxy * sxy / (sxx * syy)) if sxx and syy else 1.0
    return {"slope": slope, "intercept": my - slope * mx, "r2": r2}


# -- in process: window series --------------------------------------------------------------


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@contextlib.contextmanager
def _tracing() -> Iterator[None]:
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start(1)
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


def _rss_settled() -> int:
    from app.memprobe import settled_rss

    return settled_rss()


def measure_windows(*, series: int, capacity: int, filled: int = 10) -> dict[str, Any]:
    """Bytes per bid/ask series and per best-spread series at ``capacity`` slots.

    Two passes per store, each on a fresh store of ``series`` series keyed as a shard
    keys them: tracemalloc's count (the Python-level allocations), then RSS without
    tracing (adds the allocator's own overhead). A ring's memory is allocated whole at
    creation (``array * capacity``), so writing a slot moves nothing; to show it, the
    first ``filled`` series of the traced pass get every slot written."""
    from actors.budget import SERIES_OVERHEAD_BYTES
    from actors.windows import BYTES_PER_VALUE, SeriesStore

    symbols = [f"S{i}/USDT" for i in range(series)]
    venue = "binance"
    t0 = 1_800_000_000
    out: dict[str, Any] = {"series": series, "capacity": capacity, "filled_series": min(filled, series)}

    def build(width: int, mode_max: bool, fill: int) -> Any:
        store: Any = SeriesStore(series, capacity, width, mode_max=mode_max)
        values = (100.0,) * width
        for i, symbol in enumerate(symbols):
            key = (symbol, venue) if width == 2 else symbol
            last = t0 + capacity if i < fill else t0 + 1
            for slot in range(t0, last):
                store.record(key, slot, values, slot * 1_000_000_000 + i)
        assert len(store) == series
        return store

    for name, width, mode_max in (("quotes", 2, False), ("spreads", 1, True)):
        with _tracing():
            before = _traced()
            store = build(width, mode_max, filled)
            per = (_traced() - before) / series
            del store
        rss_before = _rss_settled()
        store = build(width, mode_max, 0)
        per_rss = (_rss_settled() - rss_before) / series
        del store
        ring = capacity * width * BYTES_PER_VALUE
        budget = ring + SERIES_OVERHEAD_BYTES
        out[name] = {
            "width": width,
            "bytes_per_series": round(per, 1),
            "bytes_per_series_rss": round(per_rss, 1),
            "ring_bytes": ring,
            "overhead_bytes": round(per - ring, 1),
            "overhead_bytes_rss": round(per_rss - ring, 1),
            "budget_bytes": budget,
            "budget_overhead_bytes": SERIES_OVERHEAD_BYTES,
            "within_budget": max(per, per_rss) <= budget,
        }
    return out


# -- in process: recorder rows --------------------------------------------------------------


class _NoWriter:
    def write(self, path: Path, table: Any, metadata: Any) -> int:  # pragma: no cover - never flushed
        raise AssertionError("the measurement never flushes")


def measure_recorder(*, rows: int) -> dict[str, Any]:
    """Bytes per buffered row of each stream; records are dropped as they are added."""
    from actors.budget import RECORDER_ROW_BYTES
    from actors.recorder import RecorderStatus, _Recorder
    from actors.records import Opportunity, OpportunityState, Quote, Side, Trade

    venues = ("binance", "bybit", "okx")
    symbols = [f"S{i}/USDT" for i in range(50)]
    t0 = 1_800_000_000 * 1_000_000_000  # one hour: one partition per stream

    def quotes() -> Iterator[object]:
        for i in range(rows):
            yield Quote(venues[i % 3], symbols[i % 50], 100.0 + i, 1.5, 100.01 + i, 2.5,
                        1_800_000_000_000 + i, t0 + i, i)

    def trades() -> Iterator[object]:
        for i in range(rows):
            yield Trade(venues[i % 3], symbols[i % 50], 100.0 + i, 0.25, Side.BUY if i % 2 else Side.SELL,
                        1_800_000_000_000 + i, t0 + i, f"{0x5C24C5DA03AA673885CD0000 + i:024x}")

    def opportunities() -> Iterator[object]:
        for i in range(rows):
            yield Opportunity(symbols[i % 50], venues[i % 3], venues[(i + 1) % 3], OpportunityState.CLOSE,
                              12.0, 2.0, 3.0, 2.5, 100.0, 1.0, 100.1, 1.0, t0 + i, t0 + i + 10)

    out: dict[str, Any] = {"rows": rows, "budget_bytes": RECORDER_ROW_BYTES}

    def fill(make: Any) -> Any:
        recorder = _Recorder(data_dir=Path("unused"), max_buffered_rows=rows, clock_ns=time.time_ns,
                             writer=_NoWriter(), status=RecorderStatus())
        records = make()  # built on the fly, dropped after add(): only the buffers' share stays
        for _ in range(0, rows, 1024):  # as the recorder takes its inbox: in batches
            recorder.add(itertools.islice(records, 1024))
        assert recorder.buffered == rows, (recorder.buffered, recorder.status.rows_rejected)
        return recorder

    for stream, make in (("quotes", quotes), ("trades", trades), ("opportunities", opportunities)):
        with _tracing():
            before = _traced()
            recorder = fill(make)
            per = (_traced() - before) / rows
            del recorder
        rss_before = _rss_settled()
        recorder = fill(make)
        per_rss = (_rss_settled() - rss_before) / rows
        del recorder
        out[stream] = {"bytes_per_row": round(per, 1), "bytes_per_row_rss": round(per_rss, 1),
                       "within_budget": max(per, per_rss) <= RECORDER_ROW_BYTES}
    out["max_bytes_per_row"] = max(max(out[s]["bytes_per_row"], out[s]["bytes_per_row_rss"])
                                   for s in ("quotes", "trades", "opportunities"))
    return out


# -- out of process: sessions ---------------------------------------------------------------


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _probe(base: str, dump: str | None = None) -> dict[str, Any]:
    url = base + "/debug/memory" + (f"?dump={dump}" if dump else "")
    doc: dict[str, Any] = _get(url)
    return doc


def _get(url: str, tries: int = 3) -> Any:
    """GET a JSON document; retried (a loaded 2-core machine can drop one)."""
    for attempt in range(tries):
        try:
            r = httpx.get(url, timeout=120)
            r.raise_for_status()
            return r.json()
        except httpx.HTTPError:
            if attempt == tries - 1:
                raise
            time.sleep(2.0)
    raise AssertionError("unreachable")


def _wait_quiet(base: str, *, timeout: float = 45.0, every: float = 2.0) -> dict[str, Any]:
    """Wait until the pipeline stops creating window series and hub topics (they are
    allocated as the simulated symbols first quote): memory that grows with time, not
    with sessions, would otherwise land in the per-session slope."""
    started = time.monotonic()
    last: tuple[int, int] | None = None
    while True:
        doc = _get(base + "/health")
        now = (doc["windows"]["series"], doc["hub"]["topics"])
        waited = time.monotonic() - started
        if now == last or waited > timeout:
            return {"series": now[0], "hub_topics": now[1], "seconds": round(waited, 1), "quiet": now == last}
        last = now
        time.sleep(every)


def _client_line(child: Any, timeout: float) -> str:
    assert child.proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = child.proc.stdout.readline()
        if line:
            return str(line.decode().strip())
        if child.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"the feed client did not answer; see {child.log}")


def measure_sessions(work: Path, *, kind: str, mode: str, steps: Sequence[int], settle_s: float,
                     symbols: int | None = SIM_SYMBOLS, keep_snapshots: bool = False) -> dict[str, Any]:
    """One fresh server, sessions of ``kind`` opened in ``steps``; RSS (and traced) per step."""
    from bench.harness import Run, free_port, wait_healthy
    from bench.scenarios import sections

    topics = "" if kind == "idle" else ",".join(SUBSCRIBED_TOPICS)
    directory = work / f"{mode}-{kind}"
    points: list[dict[str, Any]] = []
    with Run(directory) as run:
        _, endpoints = run.start_sim(venues=SIM_VENUES, symbols=symbols)
        port = free_port()
        conf = sections(endpoints, directory / "data", recorder={"enabled": False})
        with _env(SPREADWATCH_MEMPROBE=mode, SPREADWATCH_MEMPROBE_DIR=str(directory)):
            server = run.start_server(conf, port=port)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, timeout=90)
        warmup = _wait_quiet(base)
        process = psutil.Process(server.proc.pid)
        client = run.spawn("client", ["-m", "bench.perf_memory", "client", "--url",
                                      f"ws://127.0.0.1:{port}/feed?batch=1", "--topics", topics,
                                      "--steps", ",".join(map(str, steps))],
                           stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        assert client.proc.stdin is not None
        for n in steps:
            line = _client_line(client, timeout=120)
            _, opened, failed = line.split()
            time.sleep(settle_s)
            doc = _probe(base, dump=f"n{n}" if mode == "trace" else None)
            health = _get(base + "/health")
            point = {"n": n, "opened": int(opened), "failed": int(failed),
                     "sessions": health["sessions"]["count"], "series": health["windows"]["series"],
                     "hub_topics": health["hub"]["topics"], "rss": process.memory_info().rss,
                     "tasks": doc["tasks"], "gc_objects": doc["gc_objects"]}
            if mode == "trace":
                point["traced"] = doc["traced"]
                point["snapshot"] = doc["snapshot"]
            points.append(point)
            print(f"  {mode}/{kind}: N={n:5d} sessions={point['sessions']:5d} rss={point['rss'] / 2**20:7.1f} MB"
                  + (f" traced={point['traced'] / 2**20:7.1f} MB" if mode == "trace" else "")
                  + f" tasks={point['tasks']}", flush=True)
            client.proc.stdin.write(b"next\n")
            client.proc.stdin.flush()
        client.proc.wait(timeout=30)
    result: dict[str, Any] = {"kind": kind, "mode": mode, "topics": topics.split(",") if topics else [],
                              "warmup": warmup, "points": points}
    rss_fit = linear_fit([(p["sessions"], p["rss"]) for p in points])
    result["rss_fit"] = rss_fit
    result["bytes_per_session_rss"] = round(rss_fit["slope"])
    result["tasks_per_session"] = round(linear_fit([(p["sessions"], p["tasks"]) for p in points])["slope"], 2)
    result["gc_objects_per_session"] = round(
        linear_fit([(p["sessions"], p["gc_objects"]) for p in points])["slope"], 1)
    if mode == "trace":
        traced_fit = linear_fit([(p["sessions"], p["traced"]) for p in points])
        result["traced_fit"] = traced_fit
        result["bytes_per_session_traced"] = round(traced_fit["slope"])
        first, last = points[0], points[-1]
        result["breakdown"] = breakdown(Path(first["snapshot"]), Path(last["snapshot"]),
                                        last["sessions"] - first["sessions"])
        for p in points:
            snapshot = Path(p.pop("snapshot"))
            if not keep_snapshots:
                snapshot.unlink(missing_ok=True)
    return result


def _owner(frames: Sequence[tracemalloc.Frame]) -> str:
    """The package of the innermost frame that is ours or the web stack's (else its file)."""
    for frame in frames:
        name = _package(frame.filename)
        if name in ("actors", "app", "hypercorn", "wsproto", "h11", "quart_trio", "quart", "werkzeug"):
            return name
    return _package(frames[0].filename) if frames else "?"


def _package(filename: str) -> str:
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for i, part in enumerate(parts):
        if part in ("actors", "app", "bench") and str(ROOT) in filename:
            return parts[i]
    if "python3" in filename or "lib/python" in filename:
        return "stdlib:" + Path(filename).stem
    return Path(filename).stem


def _short(filename: str) -> str:
    parts = Path(filename).parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1:])
    with contextlib.suppress(ValueError):
        return str(Path(filename).relative_to(ROOT))
    return "/".join(parts[-2:])


def breakdown(before: Path, after: Path, sessions: int, top: int = 25) -> dict[str, Any]:
    """Where the traced bytes between two snapshots go, per session: by owner package
    (innermost frame in our code or the web stack) and by allocating line."""
    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    per = max(1, sessions)
    by_owner: dict[str, int] = {}
    by_chain: dict[str, int] = {}
    by_site: dict[str, int] = {}
    for stat in new.compare_to(old, "traceback"):
        if not stat.size_diff:
            continue
        frames = list(reversed(stat.traceback))  # innermost (the allocating line) first
        owner = _owner(frames)
        by_owner[owner] = by_owner.get(owner, 0) + stat.size_diff
        # the innermost line, with the innermost frame of ours / the web stack's if different
        inner = f"{_short(frames[0].filename)}:{frames[0].lineno}"
        mine = next((f for f in frames if _package(f.filename) == owner), frames[0])
        chain = inner if mine is frames[0] else f"{inner} <- {_short(mine.filename)}:{mine.lineno}"
        by_chain[chain] = by_chain.get(chain, 0) + stat.size_diff
        site = f"{_short(mine.filename)}:{mine.lineno}"
        by_site[site] = by_site.get(site, 0) + stat.size_diff
    lines = sorted(by_chain.items(), key=lambda kv: -kv[1])[:top]
    return {
        "sessions": sessions,
        "by_owner": {k: round(v / per) for k, v in sorted(by_owner.items(), key=lambda kv: -kv[1])},
        "by_line": [{"where": k, "bytes_per_session": round(v / per)} for k, v in lines],
        "by_site": [{"where": k, "bytes_per_session": round(v / per)}
                    for k, v in sorted(by_site.items(), key=lambda kv: -kv[1])[:top]],
    }


# -- the client process ---------------------------------------------------------------------


async def _client(url: str, topics: list[str], steps: list[int]) -> None:
    import msgpack
    import trio
    import trio_websocket

    opened = failed = 0
    stdin = trio.wrap_file(sys.stdin)

    async def session(ready: trio.Event) -> None:
        nonlocal opened, failed
        try:
            async with trio_websocket.open_websocket_url(url, message_queue_size=64) as ws:
                for topic in topics:
                    await ws.send_message(msgpack.packb({"op": "subscribe", "topic": topic}))
                wanted = set(topics)
                unpacker = msgpack.Unpacker()
                while True:
                    if not wanted and not ready.is_set():
                        opened += 1
                        ready.set()
                    message = await ws.get_message()
                    unpacker.feed(message)
                    for frame in unpacker:
                        if frame.get("kind") == "ping":
                            await ws.send_message(msgpack.packb({"op": "pong", "ts": frame["data"]["ts"]}))
                        elif frame.get("kind") == "snapshot":
                            wanted.discard(frame.get("topic"))
        except (trio_websocket.ConnectionClosed, trio_websocket.HandshakeError, OSError):
            if not ready.is_set():
                failed += 1
                ready.set()

    async with trio.open_nursery() as nursery:
        total = 0
        for n in steps:
            while total < n:
                chunk = min(50, n - total)
                events = [trio.Event() for _ in range(chunk)]
                for event in events:
                    nursery.start_soon(session, event)
                with trio.move_on_after(60):
                    for event in events:
                        await event.wait()
                total += chunk
            print(f"ready {opened} {failed}", flush=True)
            await stdin.readline()
        nursery.cancel_scope.cancel()


def client_main(argv: list[str]) -> int:
    import trio

    parser = argparse.ArgumentParser(prog="python -m bench.perf_memory client")
    parser.add_argument("--url", required=True)
    parser.add_argument("--topics", default="")
    parser.add_argument("--steps", required=True)
    args = parser.parse_args(argv)
    trio.run(_client, args.url, [t for t in args.topics.split(",") if t],
             [int(s) for s in args.steps.split(",")])
    return 0


# -- the run --------------------------------------------------------------------------------


def run(out: Path, **opts: Any) -> dict[str, Any]:
    """Every part; ``out`` is the working directory. Options: ``steps`` (list of N),
    ``settle_s``, ``runs`` (session runs, ``kind/mode``), ``trace`` (bool), ``sessions``
    (bool), ``in_process`` (bool), ``tiny`` (small in-process parts), ``results`` (JSON
    path, None to write none), ``merge`` (start from the results file: keep its parts
    and session runs that this call does not measure, so the parts can be run apart)."""
    tiny = bool(opts.get("tiny", False))
    steps = list(opts.get("steps") or [0, 250, 500, 1000])
    settle_s = float(opts.get("settle_s", 3.0))
    from actors.config import parse_config
    from bench.harness import machine

    config = parse_config({})
    capacity = max(1, config.windows.length_s // config.windows.resolution_s)
    started = time.monotonic()
    result: dict[str, Any] = {"name": "perf-memory", "title": TITLE,
                              "command": str(opts.get("command") or "python -m bench.perf_memory"),
                              "goal_session_bytes": GOAL_SESSION_BYTES, "tiny": tiny}
    results = opts.get("results", RESULTS)
    previous: dict[str, Any] = {}
    if opts.get("merge") and results is not None and Path(results).exists():
        previous = json.loads(Path(results).read_text())
    if opts.get("in_process", True) or "windows" not in previous:
        per_shard = math.ceil(config.windows.max_series / config.windows.shards)  # a shard's store at its cap
        result["windows"] = measure_windows(series=20 if tiny else per_shard,
                                            capacity=60 if tiny else capacity)
        result["recorder"] = measure_recorder(rows=2_000 if tiny else 200_000)
    else:
        result["windows"], result["recorder"] = previous["windows"], previous["recorder"]
    sessions: list[dict[str, Any]] = []
    runs = list(opts.get("runs") or SESSION_RUNS)
    if not opts.get("trace", True):
        runs = [r for r in runs if not r.endswith("/trace")]
    if not opts.get("sessions", True):
        runs = []
    for name in runs:
        kind, mode = name.split("/")
        sessions.append(measure_sessions(out, kind=kind, mode=mode, steps=steps, settle_s=settle_s,
                                         keep_snapshots=bool(opts.get("keep_snapshots", False))))
    measured = {(s["kind"], s["mode"]) for s in sessions}
    kept = [s for s in previous.get("sessions", []) if (s["kind"], s["mode"]) not in measured]
    order = {name: i for i, name in enumerate(SESSION_RUNS)}
    result["sessions"] = sorted(kept + sessions, key=lambda s: order.get(f"{s['kind']}/{s['mode']}", 99))
    if kept:
        result["command"] = "; ".join(c for c in (previous.get("command"), result["command"]) if c)
    result["criteria"] = criteria(result)
    idle = next((s for s in sessions if s["kind"] == "idle" and s["mode"] == "rss"), None)
    if idle is not None:
        result["bytes_per_idle_session"] = idle["bytes_per_session_rss"]
        result["goal_met"] = idle["bytes_per_session_rss"] <= GOAL_SESSION_BYTES
    result["seconds"] = round(time.monotonic() - started, 1)
    result["when"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    result["machine"] = machine()
    if results is not None:
        Path(results).parent.mkdir(parents=True, exist_ok=True)
        Path(results).write_text(json.dumps(result, indent=1) + "\n")
    return result


def criteria(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 8's goal for idle sessions, and budget.py's per-item figures as upper bounds."""
    out: list[dict[str, Any]] = []
    for s in result["sessions"]:
        if s["kind"] == "idle" and s["mode"] == "rss":
            per = s["bytes_per_session_rss"]
            out.append({"text": f"bytes per idle session <= {GOAL_SESSION_BYTES // 1024} KiB (RSS slope over "
                                f"{', '.join(str(p['sessions']) for p in s['points'])} sessions)",
                        "measured": f"{per / 1024:.1f} KiB (r2 {s['rss_fit']['r2']:.3f}; "
                                    f"{s['tasks_per_session']:g} tasks a session)",
                        "passed": per <= GOAL_SESSION_BYTES})
    w = result["windows"]
    for name in ("quotes", "spreads"):
        f = w[name]
        # a tiny run's RSS moves by whole pages: its traced figure only
        worst = f["bytes_per_series"] if result.get("tiny") else max(f["bytes_per_series"],
                                                                     f["bytes_per_series_rss"])
        out.append({"text": f"a window series ({name}, {w['capacity']} slots) within budget.py's "
                            f"{f['budget_bytes']} B",
                    "measured": f"{f['bytes_per_series']:.0f} B traced, {f['bytes_per_series_rss']:.0f} B RSS",
                    "passed": worst <= f["budget_bytes"]})
    r = result["recorder"]
    out.append({"text": f"a buffered recorder row within budget.py's {r['budget_bytes']} B",
                "measured": ", ".join(f"{k} {r[k]['bytes_per_row']:.0f} B" for k in ("quotes", "trades",
                                                                                     "opportunities")),
                "passed": (max(r[k]["bytes_per_row"] for k in ("quotes", "trades", "opportunities"))
                           if result.get("tiny") else r["max_bytes_per_row"]) <= r["budget_bytes"]})
    return out


def table(result: dict[str, Any]) -> str:
    kib = 1024
    rows = [("figure", "measured", "budget / goal")]
    for s in result["sessions"]:
        per = s["bytes_per_session_rss"]
        if s["mode"] == "trace":  # tracemalloc's own tables grow with every traced block
            rows.append((f"session {s['kind']} (trace run), RSS slope", f"{per / kib:.1f} KiB",
                         "not a figure: tracing's overhead"))
        else:
            rows.append((f"session {s['kind']}, RSS slope", f"{per / kib:.1f} KiB (r2 {s['rss_fit']['r2']:.3f})",
                         f"goal {GOAL_SESSION_BYTES / kib:.0f} KiB" if s["kind"] == "idle" else ""))
        if "bytes_per_session_traced" in s:
            rows.append((f"session {s['kind']}, tracemalloc slope",
                         f"{s['bytes_per_session_traced'] / kib:.1f} KiB", ""))
        rows.append((f"session {s['kind']}: tasks / GC objects", f"{s['tasks_per_session']} / "
                     f"{s['gc_objects_per_session']}", ""))
    w = result["windows"]
    for name in ("quotes", "spreads"):
        f = w[name]
        rows.append((f"window series {name} (width {f['width']}, {w['capacity']} slots)",
                     f"{f['bytes_per_series']:.0f} B traced, {f['bytes_per_series_rss']:.0f} B RSS "
                     f"(overhead {f['overhead_bytes']:.0f} / {f['overhead_bytes_rss']:.0f} B)",
                     f"{f['budget_bytes']} B (overhead {f['budget_overhead_bytes']} B)"))
    r = result["recorder"]
    for name in ("quotes", "trades", "opportunities"):
        rows.append((f"recorder row {name}", f"{r[name]['bytes_per_row']:.1f} B traced, "
                     f"{r[name]['bytes_per_row_rss']:.1f} B RSS", f"{r['budget_bytes']} B"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = "\n".join(lines)
    for s in result["sessions"]:
        pts = ", ".join(f"{p['sessions']}:{p['rss'] / 2**20:.1f}" for p in s["points"])
        out += f"\n{s['mode']}/{s['kind']} points (sessions: RSS MB): {pts}"
        if "breakdown" in s:
            b = s["breakdown"]
            out += "\n  traced bytes per session by owner: " + ", ".join(
                f"{k} {v}" for k, v in b["by_owner"].items() if abs(v) >= 16)
            out += "\n  top lines:\n" + "\n".join(
                f"    {x['bytes_per_session']:7d}  {x['where']}" for x in b["by_line"][:15])
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "client":
        return client_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.perf_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="0,250,500,1000")
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--runs", default=",".join(SESSION_RUNS),
                        help="session runs, each kind/mode: idle|subscribed / rss|trace")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc server")
    parser.add_argument("--no-sessions", action="store_true", help="only the in-process parts")
    parser.add_argument("--no-in-process", action="store_true",
                        help="skip the in-process parts (with --merge: keep the file's)")
    parser.add_argument("--merge", action="store_true",
                        help="keep what the results file holds and this run does not measure")
    parser.add_argument("--tiny", action="store_true", help="small in-process parts")
    parser.add_argument("--keep-snapshots", action="store_true", help="keep the tracemalloc dumps")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=WORK)
    args = parser.parse_args(argv)
    command = "python -m bench.perf_memory" + "".join(f" {a}" for a in argv)
    result = run(args.out, command=command, steps=[int(s) for s in args.steps.split(",")], settle_s=args.settle_s,
                 runs=[r for r in args.runs.split(",") if r], keep_snapshots=args.keep_snapshots,
                 merge=args.merge, in_process=not args.no_in_process, trace=not args.no_trace, sessions=not args.no_sessions, tiny=args.tiny,
                 results=args.results)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
