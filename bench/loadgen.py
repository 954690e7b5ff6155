"""A feed load generator: many `/feed` sessions in one process, run by the harness.

    python -m bench.loadgen --url ws://127.0.0.1:PORT/feed --sessions 500 --seconds 600 \
        --topics opportunities,quotes:BTC/USDT,spreads:ETH/USDT --out result.json \
        [--slow 50 --slow-read-s 0.5] [--never 25] [--no-batch]

Each session subscribes to ``--topics``, answers pings, and measures every data frame
it reads: delivery latency (its arrival time minus the frame's ``ts``, both wall-clock
ms on one machine), sequence gaps, snapshots (resyncs after the first), and the close
code when the server ends it. Sessions come in three kinds: ``fast`` ones read at once,
``slow`` ones wait ``--slow-read-s`` before every read, ``never`` ones subscribe and then
never read again (nor answer pings). A ``quotes:<SYMBOL>`` delta also gives the age of
its newest quote: arrival time minus the newest ``recv_ms`` among its venues (venue
receipt on the server to receipt here), and the part of it spent in the server (the
frame's ``ts`` minus that ``recv_ms``). A closed session reconnects only when
``--reconnect`` is given (the soak keeps its 1,000 sessions up that way). Sessions ask
for batched messages (``/feed?batch=1``: several frames per WebSocket message, as the
bundled UI does) unless ``--no-batch`` is given. With ``--window-signals`` the figures
cover only a measured window: SIGUSR1 starts it (every count so far is reset), SIGUSR2
ends it and the run (the figures are frozen then and written out).

The process stops by itself after ``--seconds``, writes one JSON document with the
figures per kind to ``--out``, and exits 0. Latency is kept as a histogram in 0.1 ms
steps up to 1 s and 10 ms steps up to 60 s, so memory stays flat however long it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgpack
import trio
import trio_websocket

KINDS = ("fast", "slow", "never")
#: the latency histograms of KindStats (merged by bench.harness.collect)
HISTOGRAMS = ("latency", "quote_age", "quote_server")
#: socket receive buffer of slow and never-reading sessions (bytes; Linux doubles it)
SLOW_RCVBUF = 16_384


@dataclass
class Histogram:
    """Latency counts in ms: 0.1 ms buckets below 1 s, 10 ms buckets up to 60 s."""

    fine: list[int] = field(default_factory=lambda: [0] * 10_000)
    coarse: list[int] = field(default_factory=lambda: [0] * 6_000)
    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0

    def add(self, ms: float) -> None:
        ms = max(0.0, ms)
        self.count += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)
        if ms < 1000.0:
            self.fine[int(ms * 10)] += 1
        else:
            self.coarse[min(len(self.coarse) - 1, int(ms / 10))] += 1

    def merge(self, other: Histogram) -> None:
        self.fine = [a + b for a, b in zip(self.fine, other.fine, strict=True)]
        self.coarse = [a + b for a, b in zip(self.coarse, other.coarse, strict=True)]
        self.count += other.count
        self.total_ms += other.total_ms
        self.max_ms = max(self.max_ms, other.max_ms)

    def quantile(self, q: float) -> float | None:
        """The upper edge of the bucket holding quantile ``q`` (ms), None when empty."""
        if not self.count:
            return None
        rank = math.ceil(q * self.count)
        seen = 0
        for i, n in enumerate(self.fine):
            seen += n
            if seen >= rank:
                return (i + 1) / 10
        for i, n in enumerate(self.coarse):
            seen += n
            if seen >= rank:
                return float((i + 1) * 10)
        return self.max_ms

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "total_ms": self.total_ms, "max_ms": self.max_ms,
                "fine": _sparse(self.fine), "coarse": _sparse(self.coarse)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Histogram:
        h = cls(count=doc["count"], total_ms=doc["total_ms"], max_ms=doc["max_ms"])
        for i, n in doc["fine"].items():
            h.fine[int(i)] = n
        for i, n in doc["coarse"].items():
            h.coarse[int(i)] = n
        return h


def _sparse(counts: list[int]) -> dict[str, int]:
    return {str(i): n for i, n in enumerate(counts) if n}


@dataclass
class KindStats:
    """What the sessions of one kind saw."""

    sessions: int = 0
    connects: int = 0
    frames: int = 0
    messages: int = 0
    bytes: int = 0
    snapshots: int = 0
    resyncs: int = 0
    gaps: int = 0
    errors: int = 0
    refused: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)
    #: latency of quotes from venue receipt (``recv_ms``) to this client, ms
    quote_age: Histogram = field(default_factory=Histogram)
    #: the server's share of it: venue receipt to the frame being built (its ``ts``), ms
    quote_server: Histogram = field(default_factory=Histogram)

    def to_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if k not in HISTOGRAMS}
        for name in HISTOGRAMS:
            doc[name] = getattr(self, name).to_json()
        return doc

    def reset(self) -> None:
        """Zero every figure but the session count (a measured window starts)."""
        sessions = self.sessions
        for f in dataclasses.fields(self):
            setattr(self, f.name, f.default_factory() if f.default_factory is not dataclasses.MISSING
                    else f.default)
        self.sessions = sessions


async def run_session(url: str, topics: list[str], kind: str, stats: KindStats,
                      slow_read_s: float, reconnect: bool, stop_at: float) -> None:
    """One session (reconnecting when asked to) until ``stop_at`` (trio time)."""
    while trio.current_time() < stop_at:
        stats.connects += 1
        try:
            await _one_connection(url, topics, kind, stats, slow_read_s)
        except trio_websocket.ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else 1006
            stats.closes[str(code)] = stats.closes.get(str(code), 0) + 1
            if code == 1013:
                stats.refused += 1
        except (trio_websocket.HandshakeError, OSError) as exc:
            # trio-websocket wraps the socket's OSError: name both (HandshakeError:ConnectionResetError)
            name = type(exc).__name__ + (f":{_os_error(exc.__cause__)}" if exc.__cause__ else "")
            stats.closes[name] = stats.closes.get(name, 0) + 1
        if not reconnect:
            return
        await trio.sleep(1.0 + random.random())


def _os_error(exc: BaseException) -> str:
    """The errno name under a failed connect (trio wraps it: OSError from an exception group)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return errno.errorcode.get(seen.errno, str(seen.errno))
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[0]
        else:
            seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


async def _one_connection(url: str, topics: list[str], kind: str, stats: KindStats,
                          slow_read_s: float) -> None:
    if kind == "fast":
        async with trio_websocket.open_websocket_url(url, message_queue_size=256) as ws:
            await _read(ws, topics, kind, stats, slow_read_s)
        return
    # A slow session is slow all the way down: a one-message client queue and a small
    # socket receive buffer (set before connecting, so loopback's autotuned megabytes of
    # buffer do not hide the slowness), as a browser on a slow link would be.
    parts = urlsplit(url)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, SLOW_RCVBUF)
    await sock.connect((parts.hostname, parts.port))
    stream = trio.SocketStream(sock)
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, f"{parts.hostname}:{parts.port}",
            (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            message_queue_size=1)
        try:
            await _read(ws, topics, kind, stats, slow_read_s)
        finally:
            nursery.cancel_scope.cancel()
            await trio.aclose_forcefully(stream)


async def _read(ws: trio_websocket.WebSocketConnection, topics: list[str], kind: str,
                stats: KindStats, slow_read_s: float) -> None:
    for topic in topics:
        await ws.send_message(msgpack.packb({"op": "subscribe", "topic": topic}))
    if kind == "never":
        await trio.sleep_forever()
    seqs: dict[str, int] = {}
    seen: set[str] = set()
    unpacker = msgpack.Unpacker()  # a batched message holds several values back to back
    while True:
        if kind == "slow":
            await trio.sleep(slow_read_s)
        message = await ws.get_message()
        now_ms = time.time() * 1000.0
        stats.messages += 1
        stats.bytes += len(message)
        unpacker.feed(message)
        while (frame := _next_frame(unpacker)) is not None:
            await _frame(ws, frame, now_ms, stats, seqs, seen)


def _next_frame(unpacker: msgpack.Unpacker) -> dict[str, Any] | None:
    """The next frame of a message, its ``data`` decoded only where it is read (pings and
    quote deltas; None otherwise): decoding every spreads payload into Python objects
    cost the load generators more CPU than the server spent sending them."""
    try:
        keys = unpacker.read_map_header()
    except msgpack.OutOfData:
        return None
    frame: dict[str, Any] = {}
    for _ in range(keys):
        key = unpacker.unpack()
        if key == "data" and "kind" in frame and not (
                frame.get("topic") == "_" or (frame["kind"] == "delta" and str(frame.get("topic")).startswith("quotes:"))):
            unpacker.skip()
            frame["data"] = None
        else:
            frame[key] = unpacker.unpack()
    return frame


async def _frame(ws: trio_websocket.WebSocketConnection, frame: Any, now_ms: float, stats: KindStats,
                 seqs: dict[str, int], seen: set[str]) -> None:
    stats.frames += 1
    topic, frame_kind = frame.get("topic"), frame.get("kind")
    if frame_kind == "ping":
        await ws.send_message(msgpack.packb({"op": "pong", "ts": frame["data"]["ts"]}))
        return
    if frame_kind == "error":
        stats.errors += 1
        return
    if topic == "_":
        return
    seq = frame.get("seq", 0)
    if frame_kind == "snapshot":
        stats.snapshots += 1
        if topic in seen:
            stats.resyncs += 1
        seen.add(topic)
    else:
        stats.latency.add(now_ms - frame["ts"])
        last = seqs.get(topic)
        if last is not None and seq > last + 1:
            stats.gaps += 1
        if str(topic).startswith("quotes:"):
            venues = frame["data"].get("venues") or {}
            newest = max((v.get("recv_ms") or 0 for v in venues.values()), default=0)
            if newest:
                stats.quote_age.add(now_ms - newest)
                stats.quote_server.add(frame["ts"] - newest)
    seqs[topic] = seq


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    topics = [t for t in args.topics.split(",") if t]
    kinds = ["slow"] * args.slow + ["never"] * args.never
    kinds += ["fast"] * (args.sessions - len(kinds))
    stats = {kind: KindStats() for kind in KINDS}
    started = time.time()
    stop_at = trio.current_time() + args.seconds
    url = args.url + ("&" if "?" in args.url else "?") + "batch=1" if args.batch else args.url
    window: dict[str, Any] = {}
    with trio.move_on_at(stop_at + 2.0):
        async with trio.open_nursery() as nursery:
            if args.window_signals:
                nursery.start_soon(_measured_window, stats, window, nursery.cancel_scope)
            for i, kind in enumerate(kinds):
                stats[kind].sessions += 1
                nursery.start_soon(_bounded, stop_at, run_session, url, topics, kind, stats[kind],
                                   args.slow_read_s, args.reconnect, stop_at)
                if args.ramp_s and i % 50 == 49:
                    await trio.sleep(args.ramp_s)  # do not open a thousand handshakes at once
    if "kinds" in window:  # the window's figures, frozen when it ended
        return {"started": window["started"], "ended": window["ended"], "topics": topics,
                "kinds": window["kinds"], "window": True}
    return {"started": window.get("started", started), "ended": time.time(), "topics": topics,
            "kinds": {kind: s.to_json() for kind, s in stats.items()}, "window": "started" in window}


async def _measured_window(stats: dict[str, KindStats], window: dict[str, Any],
                           run: trio.CancelScope) -> None:
    """SIGUSR1: reset every figure (the window starts); SIGUSR2: freeze them and stop."""
    with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
        async for signum in signals:
            if signum == signal.SIGUSR1:
                for s in stats.values():
                    s.reset()
                window.clear()
                window["started"] = time.time()
            elif "started" in window and "kinds" not in window:
                window["ended"] = time.time()
                window["kinds"] = {kind: s.to_json() for kind, s in stats.items()}
                run.cancel()


async def _bounded(stop_at: float, fn: Any, *args: Any) -> None:
    with trio.move_on_at(stop_at):
        await fn(*args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--topics", default="opportunities,quotes:BTC/USDT,spreads:ETH/USDT")
    parser.add_argument("--slow", type=int, default=0, help="sessions that read slowly")
    parser.add_argument("--slow-read-s", type=float, default=0.5)
    parser.add_argument("--never", type=int, default=0, help="sessions that never read")
    parser.add_argument("--reconnect", action="store_true", help="reopen a closed session")
    parser.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True,
                        help="ask for several frames per message (/feed?batch=1)")
    parser.add_argument("--ramp-s", type=float, default=0.2, help="pause after every 50 opened")
    parser.add_argument("--window-signals", action="store_true",
                        help="measure only between SIGUSR1 and SIGUSR2 (which also ends the run)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.slow + args.never > args.sessions:
        parser.error("--slow + --never exceed --sessions")
    doc = trio.run(main_async, args)
    with open(args.out, "w") as f:
        json.dump(doc, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
