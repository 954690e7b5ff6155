"""Issue 8, figure 2: ingest end to end, spreadwatch against cryptofeed, per CPU-second.

    python -m bench.perf_ingest [--seconds 10 --rounds 2 --warmup 2 --rate 300000 --symbols 100
                                 --wire same --profile-s 0 --results bench/results/perf-ingest.json]

One run starts three processes on loopback and keeps them up throughout:

* **the flooding venue** (``python -m bench.perf_ingest flood``, this module): Binance's
  REST discovery from the simulator (``app.sim``) and a WebSocket server of its own that
  speaks Binance's two subscription styles: ``/ws`` plus ``SUBSCRIBE`` messages (what
  spreadwatch's connector sends) and ``/stream?streams=a@bookTicker/...`` (what
  cryptofeed's Binance feed opens). With ``--wire same`` (the default) both get the
  *same bytes*: combined-stream ``bookTicker`` frames (``{"stream": "<sym>@bookTicker",
  "data": {...}}``, which both codecs accept); with ``--wire native`` each gets what
  Binance sends its kind of connection: spreadwatch's ``/ws`` the bare ``data`` payload,
  cryptofeed's ``/stream`` the combined frame. Frames go round robin over the
  subscribed symbols, with a rising update id and
  prices from a small per-symbol ring (built once, so the flood spends little CPU per
  frame). The rate is set per side over the flood's stdin; frames a slow reader could
  not take while the previous batch was still being written are counted ``not_sent``
  (as in ``bench/flood.py``), never queued;
* **spreadwatch**: the real program (``python -m app.cli run``), its only venue the
  flood's Binance (bookTicker only, the symbols of the flood), recorder on into the
  working directory, four shards, the hub, the web server; no feed session;
* **cryptofeed** (``python -m bench.perf_ingest cryptofeed``): cryptofeed's ``Binance``
  feed, ``TICKER`` channel, its default config (uvloop), a no-op callback that counts.
  There is no internet: its symbol table is seeded from the flood's symbols
  (``Symbols.set``) and its WebSocket endpoint overridden; cryptofeed refuses a non-TLS
  address, so the feed is given ``wss://`` and the connect call it imports rewrites
  that to ``ws://`` (both sides read plain WebSocket on loopback).

Only one side is flooded at a time, alternating in rounds (A B, then B A, ...): the
active side is offered ``--rate`` frames/s (far above what either takes, so the
consumer is the bottleneck, ``not_sent`` > 0), the other none. After ``--warmup``
seconds each window measures, for the active process: frames it processed (spreadwatch:
the venue's ``messages`` counter on ``/health``; cryptofeed: the callback's count, which
the child prints every 50 ms when its loop is free, about once a second under flood since
websockets hands over queued messages without yielding) and its CPU seconds (psutil,
user + system, all threads, read right after the count arrives; the child's own
``process_time`` is kept beside it as a check). The figure is frames per CPU-second; its
wall-clock rate,
the flood's offered/sent/not_sent, and spreadwatch's own drops and conflations per edge
over the same windows are reported beside it, so a side that fell behind cannot pass for
a faster one.

``sent - processed`` (the flood's frames sent in the windows minus those processed) is
what sat in socket buffers and library queues at the window edges; it may be slightly
negative, since a frame counts as sent only once its batch's write has returned.

``--profile-s S`` then floods spreadwatch for S more seconds under py-spy
(``--nonblocking``, outside the measured windows) and adds its top functions, by trio
task and inclusive.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
RESULT = BENCH / "results" / "perf-ingest.json"
SIDES = ("spreadwatch", "cryptofeed")
WIRES = ("same", "native")
GOAL = 1.5
#: price variants per symbol in the flood's ring
RING = 16
#: how often the cryptofeed child prints its count
REPORT_S = 0.05


# -- the flooding venue (child process) --------------------------------------------------


@dataclass
class SideStats:
    rate: float = 0.0
    offered: int = 0
    sent: int = 0
    not_sent: int = 0
    connections: int = 0
    open_connections: int = 0
    subscriptions: int = 0


@dataclass
class Venue:
    """The flood's state: per-symbol frame parts and per-side counters."""

    #: native lower -> (prefix up to the update id, ring of suffixes): combined-stream frames
    combined: dict[str, tuple[bytes, list[bytes]]]
    #: the same payloads unwrapped, as Binance sends them on ``/ws`` after ``SUBSCRIBE``
    raw: dict[str, tuple[bytes, list[bytes]]]
    #: "same": every client gets combined-stream frames; "native": ``/ws`` clients get raw ones
    wire: str = "same"
    sides: dict[str, SideStats] = field(default_factory=lambda: {s: SideStats() for s in SIDES})


Parts = tuple[bytes, list[bytes]]


def frame_parts(native: str, price: float, rng: random.Random) -> tuple[Parts, Parts]:
    """(combined, raw) frame parts: a prefix up to the update id, and a ring of suffixes
    with prices near ``price``; the raw payload is the combined frame's ``data``."""
    inner = []
    for _ in range(RING):
        bid = price * (1.0 + rng.uniform(-3e-4, 3e-4))
        ask = bid * 1.0001
        inner.append(b',"s":"%s","b":"%.8f","B":"%.8f","a":"%.8f","A":"%.8f"}' % (
            native.encode(), bid, rng.uniform(0.1, 50.0), ask, rng.uniform(0.1, 50.0)))
    combined = (b'{"stream":"%s@bookTicker","data":{"u":' % native.lower().encode(), [x + b"}" for x in inner])
    return combined, (b'{"u":', inner)


def ws_header(n: int) -> bytes:
    if n < 126:
        return b"\x81" + bytes([n])
    return b"\x81\x7e" + n.to_bytes(2, "big")


async def serve_ws(stream: Any, venue: Venue) -> None:
    import trio
    import wsproto
    import wsproto.events as ev

    from bench.flood import Pacer, serve_paced

    conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    subscribed: list[Parts] = []
    pending_out: list[bytes] = []
    side: SideStats | None = None
    u = 4_000_000_000
    cursor = 0

    def the_side() -> SideStats:
        assert side is not None
        return side

    def subscribe(names: list[str]) -> None:
        stats = the_side()
        table = venue.raw if venue.wire == "native" and stats is venue.sides["spreadwatch"] else venue.combined
        for name in names:
            native, _, kind = name.partition("@")
            parts = table.get(native.lower())
            if kind == "bookTicker" and parts is not None:
                subscribed.append(parts)
                stats.subscriptions += 1

    def on_event(event: ev.Event) -> None:
        nonlocal side
        if isinstance(event, ev.Request):
            path, _, query = event.target.partition("?")
            side = venue.sides["cryptofeed" if path.startswith("/stream") else "spreadwatch"]
            side.connections += 1
            side.open_connections += 1
            if query.startswith("streams="):
                subscribe(query[len("streams="):].split("/"))
        elif isinstance(event, ev.TextMessage):
            request = json.loads(event.data)
            if request.get("method") == "SUBSCRIBE":
                subscribe(list(request.get("params", [])))
            pending_out.append(conn.send(ev.Message(data=json.dumps({"result": None, "id": request.get("id")}))))

    def frames(due: int, out: list[bytes]) -> None:
        nonlocal u, cursor
        n = len(subscribed)
        for _ in range(due):
            prefix, ring = subscribed[cursor % n]
            u += 1
            payload = prefix + b"%d" % u + ring[(cursor // n) % RING]
            out.append(ws_header(len(payload)))
            out.append(payload)
            cursor += 1

    pacer = Pacer(the_side, lambda: the_side().open_connections, subscribed, frames, hold_credit=True)
    try:
        await serve_paced(stream, conn, pending_out, on_event, pacer)
    except* (trio.BrokenResourceError, trio.ClosedResourceError):  # (raised in the nursery)
        pass
    finally:
        if side is not None:
            side.open_connections -= 1


async def flood_control(venue: Venue, cancel: Any) -> None:
    """stdin lines ``rate <side> <frames/s>`` or ``stats``; every line is answered with stats."""
    from bench.flood import stdin_control

    def command(words: list[str]) -> None:
        if len(words) == 3 and words[0] == "rate":
            venue.sides[words[1]].rate = float(words[2])

    await stdin_control(command, lambda: {"sides": {k: dict(v.__dict__) for k, v in venue.sides.items()}},
                        cancel)


async def flood_main(symbols: int, seed: int, wire: str) -> None:
    import trio

    from app.sim.market import Market
    from app.sim.server import SimVenueControl, run_market, run_sim_venue

    market = Market.synthetic(symbols * 3, ("binance",), seed, start_ms=time.time_ns() // 1_000_000)
    chosen = [s for s in market.symbols if s.quote == "USDT" and s.trading_on("binance")][:symbols]
    rng = random.Random(seed)
    parts = {s.native.lower(): frame_parts(s.native, s.price, rng) for s in chosen}
    venue = Venue({k: v[0] for k, v in parts.items()}, {k: v[1] for k, v in parts.items()}, wire)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(run_market, market, interval_s=1.0))
        rest = await nursery.start(functools.partial(run_sim_venue, "binance", market,
                                                     control=SimVenueControl()))
        listeners = await nursery.start(functools.partial(
            trio.serve_tcp, functools.partial(serve_ws, venue=venue), 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        sys.stdout.write(json.dumps({
            "binance": {"rest_url": rest.rest_url, "ws_url": f"ws://127.0.0.1:{port}"},
            "symbols": [[s.native, s.symbol] for s in chosen]}) + "\n")
        sys.stdout.flush()
        nursery.start_soon(flood_control, venue, nursery.cancel_scope)


# -- cryptofeed (child process) ----------------------------------------------------------


def cryptofeed_main(ws_url: str, symbols: list[tuple[str, str]], log: Path) -> None:
    """cryptofeed's Binance TICKER feed on ``ws_url``; prints ``<frames> <cpu_s> <backlog>`` every 50 ms."""
    import asyncio

    import cryptofeed.connection as cf_connection
    from cryptofeed import FeedHandler
    from cryptofeed.defines import TICKER
    from cryptofeed.exchanges import Binance
    from cryptofeed.symbols import Symbols

    # The symbol table cryptofeed would read from /api/v3/exchangeInfo.
    info = {"symbols": [{"symbol": native, "baseAsset": normalized.split("/")[0],
                         "quoteAsset": normalized.split("/")[1], "status": "TRADING",
                         "filters": [{"tickSize": "0.00000001"}]} for native, normalized in symbols]}
    mapping, extra = Binance._parse_symbol_data(info)
    Symbols.set(Binance.id, mapping, extra)

    secure_connect = cf_connection.connect
    connections: list[Any] = []

    async def plain_connect(address: str, **kwargs: Any) -> Any:
        connection = await secure_connect(address.replace("wss://", "ws://", 1), **kwargs)
        connections.append(connection)
        return connection

    cf_connection.connect = plain_connect

    class LoopbackBinance(Binance):  # type: ignore[misc]
        websocket_endpoints = [cf_connection.WebsocketEndpoint(ws_url.replace("ws://", "wss://", 1))]

    frames = 0

    async def noop(ticker: Any, receipt_timestamp: float) -> None:
        nonlocal frames
        frames += 1

    async def report() -> None:
        while True:
            await asyncio.sleep(REPORT_S)
            # frames websockets has read and parsed but the feed has not handled yet
            # (cryptofeed sets max_queue=None: its reader never pauses)
            backlog = sum(len(c.recv_messages.frames) for c in connections)
            sys.stdout.write(f"{frames} {time.process_time()} {backlog}\n")
            sys.stdout.flush()

    handler = FeedHandler(config={"uvloop": True, "log": {"filename": str(log), "level": "WARNING"}})
    handler.add_feed(LoopbackBinance(
        symbols=[n.replace("/", "-") for _, n in symbols], channels=[TICKER], callbacks={TICKER: noop}))
    # FeedHandler installed uvloop's policy, whose get_event_loop() no longer makes a loop
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler.run(start_loop=False, install_signal_handlers=False)
    reporter = loop.create_task(report())
    loop.run_forever()
    reporter.cancel()


# -- the parent ----------------------------------------------------------------------------


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


class Flood:
    """The flood child's control channel (its stdin and stdout)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin: IO[bytes] = proc.stdin
        self.stdout: IO[bytes] = proc.stdout

    def command(self, line: str) -> dict[str, Any]:
        self.stdin.write(line.encode() + b"\n")
        self.stdin.flush()
        doc: dict[str, Any] = json.loads(self.stdout.readline())
        return doc

    def rate(self, side: str, rate: float) -> dict[str, Any]:
        return self.command(f"rate {side} {rate:g}")


class LineCounter:
    """Reads the cryptofeed child's count lines; samples its CPU (psutil) as each arrives."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.stdout = proc.stdout
        self.process = psutil.Process(proc.pid)
        self.cond = threading.Condition()
        self.seq = 0
        self.latest: dict[str, float] = {"frames": 0, "self_cpu_s": 0.0, "backlog": 0, "cpu_s": 0.0}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for line in self.stdout:
            words = line.split()
            if len(words) != 3:
                continue
            try:
                cpu = cpu_s(self.process)
            except psutil.Error:
                return
            with self.cond:
                self.latest = {"frames": int(words[0]), "self_cpu_s": float(words[1]),
                               "backlog": int(words[2]), "cpu_s": cpu, "t": time.monotonic()}
                self.seq += 1
                self.cond.notify_all()

    def sample(self, timeout: float = 30.0) -> dict[str, float]:
        """The next line (so never older than the call), with the CPU read just after it."""
        with self.cond:
            seen = self.seq
            if not self.cond.wait_for(lambda: self.seq > seen, timeout):
                raise RuntimeError("the cryptofeed child stopped reporting")
            return dict(self.latest)


def spreadwatch_sample(base: str, proc: psutil.Process) -> dict[str, Any]:
    doc = httpx.get(base + "/health", timeout=10).json()
    cpu = cpu_s(proc)
    venues = doc["venues"].values()
    edges: dict[str, dict[str, int]] = {}
    for edge in doc["channels"]:
        agg = edges.setdefault(edge["name"], {"delivered": 0, "dropped": 0, "conflated": 0})
        for key in agg:
            agg[key] += edge[key]
    recorder = doc.get("recorder") or {}
    return {"t": time.monotonic(), "cpu_s": cpu,
            "frames": sum(v["messages"] for v in venues),
            "quotes": sum(v["quotes"] for v in venues),
            "bad_frames": sum(v["bad_frames"] for v in venues),
            "reconnects": sum(v["reconnects"] for v in venues),
            "rows_written": sum((recorder.get("rows_written") or {}).values()),
            "recorder_inbox_dropped": recorder.get("inbox_dropped", 0),
            "edges": edges}


def _delta(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: b[k] - a[k] for k in keys}


def _wait_subscribed(flood: Flood, side: str, symbols: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if flood.command("stats")["sides"][side]["subscriptions"] >= symbols:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{side} did not subscribe to the flood's {symbols} symbols in {timeout:.0f} s")


def _profile(pid: int, seconds: float, path: Path) -> dict[str, Any] | None:
    """py-spy's collapsed stacks of ``pid`` for ``seconds``, summarized; None without py-spy."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        return None
    proc = subprocess.run([exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
                           "--rate", "200", "--nonblocking", "--threads", "--format", "raw", "--output", str(path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not path.exists():
        return {"error": (proc.stderr or proc.stdout)[-500:]}
    return summarize_profile(path)


def summarize_profile(path: Path) -> dict[str, Any]:
    """Shares of py-spy's raw (collapsed) samples: by trio task, inclusive, exclusive, by file."""
    inclusive: collections.Counter[str] = collections.Counter()
    exclusive: collections.Counter[str] = collections.Counter()
    modules: collections.Counter[str] = collections.Counter()
    tasks: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread = stack.split(";", 1)[0].split(": ", 1)[-1]
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")[1:]]  # drop the thread frame
        if not frames:
            continue
        total += count
        exclusive[frames[-1]] += count
        names = [f.split(" (")[0] for f in frames]
        # inclusive shares below the scheduler (the entry frames above it are in every sample)
        for f in set(frames[names.index("unrolled_run") + 1:] if "unrolled_run" in names else frames):
            inclusive[f] += count
        leaf_file = frames[-1].rsplit("(", 1)[-1].rstrip(")")
        modules[leaf_file] += count
        # the trio task a sample ran in: the frame the scheduler called; worker threads apart
        # (trio's worker threads do the recorder's file work); py-spy --nonblocking sometimes
        # reads a main-thread stack cut short, without the scheduler's frames
        if thread != "MainThread":
            tasks[f"thread {thread.rstrip('0123456789 ')} (file work)"] += count
        elif "unrolled_run" in names:
            below = names[names.index("unrolled_run") + 1:]
            tasks[below[0] if below else "trio scheduler"] += count
        else:
            tasks["main thread, stack cut short"] += count
    if not total:
        return {"samples": 0}

    def pct(counter: collections.Counter[str]) -> dict[str, float]:
        return {k: round(100.0 * v / total, 1) for k, v in counter.most_common(30)}

    return {"samples": total, "by_task_pct": pct(tasks), "inclusive_pct": pct(inclusive),
            "exclusive_pct": pct(exclusive), "by_leaf_file_pct": pct(modules)}


def run(out: Path, *, seconds: float = 10.0, rounds: int = 2, warmup: float = 2.0, rate: float = 300_000.0,
        symbols: int = 100, shards: int = 4, profile_s: float = 0.0, wire: str = "same") -> dict[str, Any]:
    """Run the measurement (working files under ``out/perf-ingest``); return the result."""
    from bench.harness import Run, free_port, terminate, venue_sections, wait_healthy

    with Run(out / "perf-ingest") as work:
        flood_child = work.spawn("flood", ["-m", "bench.perf_ingest", "flood", "--symbols", str(symbols),
                                           "--wire", wire],
                                 stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        assert flood_child.proc.stdout is not None
        hello = json.loads(flood_child.proc.stdout.readline() or b"null")
        if not hello:
            raise RuntimeError(f"the flood did not start; see {flood_child.log}")
        flood = Flood(flood_child.proc)
        pairs: list[tuple[str, str]] = [(a, b) for a, b in hello["symbols"]]
        endpoints = {"binance": hello["binance"]}
        port = free_port()
        config: dict[str, dict[str, Any]] = {
            "recorder": {"data_dir": str(work.directory / "data")},
            "windows": {"shards": shards},
            "discovery": {"symbols": [n for _, n in pairs], "min_venues": 1, "max_symbols": max(200, symbols)},
            **venue_sections(endpoints, extra={"subscribe_trades": False, "min_quote_volume": 0.0,
                                               "silence_reconnect_s": 600.0}),
        }
        server = work.start_server(config, port=port, name="spreadwatch")
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, timeout=90)
        _wait_subscribed(flood, "spreadwatch", len(pairs))
        cf_child = work.spawn("cryptofeed", ["-m", "bench.perf_ingest", "cryptofeed", "--ws-url",
                                             endpoints["binance"]["ws_url"], "--symbols",
                                             ",".join(f"{a}:{b}" for a, b in pairs),
                                             "--log", str(work.directory / "cryptofeed-handler.log")],
                              stdout=subprocess.PIPE)
        counter = LineCounter(cf_child.proc)
        _wait_subscribed(flood, "cryptofeed", len(pairs))
        processes = {"spreadwatch": psutil.Process(server.proc.pid),
                     "cryptofeed": psutil.Process(cf_child.proc.pid)}
        flood_proc = psutil.Process(flood_child.proc.pid)

        def sample(side: str) -> dict[str, Any]:
            if side == "spreadwatch":
                return spreadwatch_sample(base, processes[side])
            return counter.sample()

        windows: list[dict[str, Any]] = []
        for r in range(rounds):
            for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
                other = SIDES[1 - SIDES.index(side)]
                flood.rate(other, 0)
                flood.rate(side, rate)
                time.sleep(warmup)
                f0, fl0 = flood.command("stats"), cpu_s(flood_proc)
                idle0 = cpu_s(processes[other])
                s0 = sample(side)
                time.sleep(seconds)
                s1 = sample(side)
                f1, fl1 = flood.command("stats"), cpu_s(flood_proc)
                idle1 = cpu_s(processes[other])
                w: dict[str, Any] = {"side": side, "round": r,
                                     "wall_s": s1["t"] - s0["t"], "cpu_s": s1["cpu_s"] - s0["cpu_s"],
                                     "frames": s1["frames"] - s0["frames"],
                                     "flood": _delta(f0["sides"][side], f1["sides"][side],
                                                     ("offered", "sent", "not_sent")),
                                     "flood_cpu_s": fl1 - fl0, "idle_side_cpu_s": idle1 - idle0}
                if side == "spreadwatch":
                    w.update(_delta(s0, s1, ("quotes", "bad_frames", "reconnects",
                                             "rows_written", "recorder_inbox_dropped")))
                    w["edges"] = {name: {k: e[k] - s0["edges"].get(name, {}).get(k, 0) for k in e}
                                  for name, e in s1["edges"].items()}
                else:
                    w["self_cpu_s"] = s1["self_cpu_s"] - s0["self_cpu_s"]
                    w["backlog_start"], w["backlog_end"] = s0["backlog"], s1["backlog"]
                    # frames read and decoded into websocket messages in the window,
                    # whether or not the feed handled them yet
                    w["frames_read"] = w["frames"] + s1["backlog"] - s0["backlog"]
                w["frames_per_cpu_s"] = w["frames"] / w["cpu_s"] if w["cpu_s"] > 0 else 0.0
                windows.append(w)
                print(f"  round {r} {side:11s} {w['frames']:9,d} frames in {w['cpu_s']:6.2f} CPU-s "
                      f"({w['wall_s']:5.2f} s wall): {w['frames_per_cpu_s']:9,.0f} frames/CPU-s; "
                      f"flood sent {w['flood']['sent']:,}, not sent {w['flood']['not_sent']:,}", flush=True)
        flood.rate("cryptofeed", 0)
        profile = None
        if profile_s > 0:
            flood.rate("spreadwatch", rate)
            time.sleep(warmup)
            profile = _profile(server.proc.pid, profile_s, work.directory / "profile.txt")
        flood.rate("spreadwatch", 0)
        code, _ = terminate(server)
    return summarize(windows, profile, params={"seconds": seconds, "rounds": rounds, "warmup": warmup,
                                              "rate": rate, "symbols": len(pairs), "shards": shards,
                                              "wire": wire,
                                              "exit_code": code, "versions": versions(),
                                              "code": code_version()})


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("cryptofeed", "websockets", "uvloop", "trio", "trio-websocket", "wsproto", "msgspec"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def code_version() -> dict[str, Any]:
    """The commit measured, and whether actors/ or app/ had uncommitted changes."""
    from bench.harness import ROOT

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return proc.stdout.rstrip("\n")

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": [line[3:] for line in git("status", "--porcelain", "--", "actors", "app").splitlines()]}


def summarize(windows: list[dict[str, Any]], profile: dict[str, Any] | None,
              params: dict[str, Any]) -> dict[str, Any]:
    sides: dict[str, dict[str, Any]] = {}
    for side in SIDES:
        ws = [w for w in windows if w["side"] == side]
        frames = sum(w["frames"] for w in ws)
        cpu = sum(w["cpu_s"] for w in ws)
        wall = sum(w["wall_s"] for w in ws)
        s: dict[str, Any] = {
            "frames": frames, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
            "frames_per_cpu_s": frames / cpu if cpu else 0.0,
            "frames_per_wall_s": frames / wall if wall else 0.0,
            "cpu_share": cpu / wall if wall else 0.0,
            "per_window_frames_per_cpu_s": [round(w["frames_per_cpu_s"]) for w in ws],
            "flood": {k: sum(w["flood"][k] for w in ws) for k in ("offered", "sent", "not_sent")},
            "flood_cpu_s": round(sum(w["flood_cpu_s"] for w in ws), 3),
        }
        # frames the flood wrote that the consumer has not (yet) processed: socket buffers
        # and, for spreadwatch, trio-websocket's queue; they are not lost, only late
        s["sent_minus_processed"] = s["flood"]["sent"] - frames
        if side == "spreadwatch":
            for key in ("quotes", "bad_frames", "reconnects", "rows_written",
                        "recorder_inbox_dropped"):
                s[key] = sum(w[key] for w in ws)
            edges: dict[str, dict[str, int]] = {}
            for w in ws:
                for name, e in w["edges"].items():
                    into = edges.setdefault(name, dict.fromkeys(e, 0))
                    for k, v in e.items():
                        into[k] += v
            s["edges"] = edges
        else:
            read = sum(w["frames_read"] for w in ws)
            s["frames_read"] = read
            s["frames_read_per_cpu_s"] = read / cpu if cpu else 0.0
            s["backlog_end"] = [w["backlog_end"] for w in ws]
        sides[side] = s
    sw, cf = sides["spreadwatch"], sides["cryptofeed"]
    ratio = sw["frames_per_cpu_s"] / cf["frames_per_cpu_s"] if cf["frames_per_cpu_s"] else 0.0
    # the stricter ratio: cryptofeed credited with every frame it read, handled or queued
    ratio_read = sw["frames_per_cpu_s"] / cf["frames_read_per_cpu_s"] if cf["frames_read_per_cpu_s"] else 0.0
    saturated = all(w["flood"]["not_sent"] > 0 for w in windows)
    return {
        "name": "perf-ingest",
        "title": "Ingest end to end: spreadwatch's pipeline vs cryptofeed, frames per CPU-second",
        "params": params,
        "criteria": [
            {"text": f"spreadwatch >= {GOAL}x cryptofeed in frames per CPU-second",
             "measured": f"{sw['frames_per_cpu_s']:,.0f} vs {cf['frames_per_cpu_s']:,.0f} (x{ratio:.2f})",
             "passed": ratio >= GOAL},
            {"text": "both sides saturated (the flood had frames not sent in every window)",
             "measured": ", ".join(f"{w['side']}: {w['flood']['not_sent']:,}" for w in windows),
             "passed": saturated},
        ],
        "figures": {"ratio": ratio, "ratio_vs_frames_read": ratio_read, "goal": GOAL, "saturated": saturated, "sides": sides},
        "windows": windows,
        "profile": profile,
    }


def table(result: dict[str, Any]) -> str:
    sides = result["figures"]["sides"]
    lines = [result["title"],
             f"{'':12s} {'frames':>10s} {'CPU s':>7s} {'frames/CPU-s':>13s} {'frames/s':>10s} "
             f"{'CPU %':>6s} {'not sent':>10s} {'sent-proc':>10s}"]
    for side in SIDES:
        s = sides[side]
        lines.append(f"{side:12s} {s['frames']:10,d} {s['cpu_s']:7.2f} {s['frames_per_cpu_s']:13,.0f} "
                     f"{s['frames_per_wall_s']:10,.0f} {100 * s['cpu_share']:6.1f} "
                     f"{s['flood']['not_sent']:10,d} {s['sent_minus_processed']:10,d}")
    sw = sides["spreadwatch"]
    cf = sides["cryptofeed"]
    lines.append(f"ratio spreadwatch / cryptofeed: x{result['figures']['ratio']:.2f} (goal >= {GOAL}); "
                 f"x{result['figures']['ratio_vs_frames_read']:.2f} crediting cryptofeed with the "
                 f"{cf['frames_read'] - cf['frames']:,} frames it read but had not handled "
                 f"(its queue at window ends: {cf['backlog_end']})")
    drops = {k: v for k, v in sw["edges"].items() if v["dropped"] or v["conflated"]}
    lines.append(f"spreadwatch: {sw['quotes']:,} quotes, {sw['rows_written']:,} rows recorded, "
                 f"recorder inbox dropped {sw['recorder_inbox_dropped']:,}, bad frames {sw['bad_frames']}, "
                 f"reconnects {sw['reconnects']}; edges with drops/conflation: "
                 + (", ".join(f"{k} dropped {v['dropped']:,} conflated {v['conflated']:,}"
                              for k, v in drops.items()) or "none"))
    for c in result["criteria"]:
        lines.append(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['text']}: {c['measured']}")
    profile = result.get("profile")
    if profile and profile.get("samples"):
        lines.append(f"spreadwatch profile ({profile['samples']} samples), by trio task:")
        lines += [f"  {pct:5.1f} %  {name}" for name, pct in list(profile["by_task_pct"].items())[:8]]
        lines.append("inclusive:")
        lines += [f"  {pct:5.1f} %  {name}" for name, pct in list(profile["inclusive_pct"].items())[:25]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "flood":
        import trio

        p = argparse.ArgumentParser(prog="python -m bench.perf_ingest flood")
        p.add_argument("--symbols", type=int, default=100)
        p.add_argument("--seed", type=int, default=7)
        p.add_argument("--wire", choices=WIRES, default="same")
        a = p.parse_args(argv[1:])
        trio.run(flood_main, a.symbols, a.seed, a.wire)
        return 0
    if argv and argv[0] == "cryptofeed":
        p = argparse.ArgumentParser(prog="python -m bench.perf_ingest cryptofeed")
        p.add_argument("--ws-url", required=True)
        p.add_argument("--symbols", required=True, help="NATIVE:BASE/QUOTE,...")
        p.add_argument("--log", type=Path, required=True)
        a = p.parse_args(argv[1:])
        pairs = [(x.split(":")[0], x.split(":")[1]) for x in a.symbols.split(",")]
        cryptofeed_main(a.ws_url, pairs, a.log)
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.perf_ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per window")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of one window per side")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=300_000.0, help="frames/s offered to the active side")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--profile-s", type=float, default=0.0)
    parser.add_argument("--wire", choices=WIRES, default="same",
                        help="same: both sides get combined-stream frames; native: spreadwatch gets "
                             "Binance's /ws payloads unwrapped")
    parser.add_argument("--work", type=Path, default=BENCH / "out")
    parser.add_argument("--results", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    from bench.harness import save_perf

    result = run(args.work, seconds=args.seconds, rounds=args.rounds, warmup=args.warmup, rate=args.rate,
                 symbols=args.symbols, shards=args.shards, profile_s=args.profile_s, wire=args.wire)
    save_perf(result, "bench.perf_ingest", argv, args.results, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
