"""A venue that floods: Binance's wire format at a rate the harness sets, for the overload run.

    python -m bench.flood --profile 60:2000,120:200000,120:2000 --out flood.json [--symbols 60]

REST discovery is the simulator's own Binance (``app.sim``, same market), so discovery
sees the usual symbols. The WebSocket is a minimal server of its own: it answers
``SUBSCRIBE`` like Binance (``{"result":null,"id":N}``) and answers pings, and pushes
``<symbol>@bookTicker`` payloads for the subscribed symbols, round robin, at the rate of
the current phase (frames a second across all connections). Prices stay within a few
basis points of the simulated market so the pipeline computes real spreads.

Frames are built with orjson and framed by hand (a server frame is unmasked), in
batches every 5 ms, because the simulator's per-frame path tops out far below the
rates an overload needs. A venue cannot push faster than its client reads: when the
previous batch is still being written, the due frames are counted as ``not_sent``
rather than queued (a real venue would conflate or cut such a client), so memory here
stays flat too. ``offered`` counts every frame the phase asked for.

Prints one JSON line of endpoints (as ``python -m app.sim`` does) once listening;
writes per-phase counters to ``--out`` when the last phase ends, then keeps serving at
that phase's rate until it is stopped.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import trio
import wsproto
import wsproto.events as ev

from app.sim.market import Market
from app.sim.server import SimVenueControl, run_market, run_sim_venue

BATCH_S = 0.005


@dataclass
class Phase:
    seconds: float
    rate: float
    offered: int = 0
    sent: int = 0
    not_sent: int = 0
    started: float = 0.0


@dataclass
class Flood:
    market: Market
    phases: list[Phase]
    phase: Phase
    connections: int = 0
    subscriptions: int = 0
    open_connections: int = 0


def ws_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return b"\x81" + bytes([n]) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class Book:
    """A symbol's book as the flood moves it: near the simulated market's price."""

    __slots__ = ("bid", "symbol", "u")

    def __init__(self, symbol: str, bid: float) -> None:
        self.symbol = symbol
        self.bid = bid
        self.u = 1

    def frame(self, rng: random.Random) -> bytes:
        self.u += 1
        bid = self.bid * (1.0 + rng.uniform(-3e-4, 3e-4))
        ask = bid * 1.0001
        return ws_frame(orjson.dumps({"u": self.u, "s": self.symbol, "b": f"{bid:.8f}", "B": "1.5",
                                      "a": f"{ask:.8f}", "A": "2.5"}))


class Counters(Protocol):
    """What a paced connection counts into: the rate it is offered (frames a second, shared
    by the open connections) and what became of the frames due."""

    rate: float
    offered: int
    sent: int
    not_sent: int


@dataclass
class Pacer:
    """A connection's share of a rate, sent in batches every ``BATCH_S``.

    Each batch adds the connection's share (``counters().rate`` over
    ``open_connections()``) times the time since the last to its credit; the whole frames
    of it are due, ``frames(due, out)`` appends them to ``out`` after whatever the reader
    queued in ``pending_out``, and they are counted ``offered`` and, once written,
    ``sent``. A venue cannot push faster than its client reads: the frames due while a
    batch was still being written are counted ``offered`` and ``not_sent`` rather than
    queued, and the credit starts again from nothing. ``counters()`` is read once a batch,
    so a batch counts into the counters its rate came from.

    While nothing is ``subscribed`` no frames are built. With ``hold_credit`` the credit
    then keeps growing, to be sent at once when something is subscribed, and a rate of 0
    clears it; without, the credit is spent every batch (the frames due are neither sent
    nor counted) and a rate of 0 keeps what is left of it.
    """

    counters: Callable[[], Counters]
    open_connections: Callable[[], int]
    subscribed: Sized
    frames: Callable[[int, list[bytes]], None]
    hold_credit: bool = False

    async def run(self, stream: trio.abc.SendStream, pending_out: list[bytes]) -> None:
        credit = 0.0
        last = trio.current_time()
        while True:
            await trio.sleep(BATCH_S)
            now = trio.current_time()
            counters = self.counters()
            share = counters.rate / max(1, self.open_connections())
            if self.hold_credit:
                credit = credit + share * (now - last) if share else 0.0
                due = int(credit) if len(self.subscribed) else 0
                credit -= due
            else:
                credit += share * (now - last)
                due = int(credit)
                credit -= due
                if not len(self.subscribed):
                    due = 0
            last = now
            out = pending_out[:]
            pending_out.clear()
            if due:
                counters.offered += due
                self.frames(due, out)
            if not out:
                continue
            # Sending takes as long as the client reads; frames due meanwhile are counted,
            # not queued.
            started = trio.current_time()
            await stream.send_all(b"".join(out))
            counters.sent += due
            behind = (trio.current_time() - started) * share
            if behind >= 1.0:
                skipped = int(behind)
                counters.offered += skipped
                counters.not_sent += skipped
                last = trio.current_time()
                credit = 0.0


async def read_ws(stream: trio.SocketStream, conn: wsproto.WSConnection, pending_out: list[bytes],
                  on_event: Callable[[ev.Event], None], accepted: trio.Event,
                  cancel_scope: trio.CancelScope) -> None:
    """A server connection's reader: accepts the handshake (then sets ``accepted``), answers
    pings and the close (flushing ``pending_out``), and hands the handshake's request and
    every other event to ``on_event``, which may queue replies on ``pending_out``. Cancels
    ``cancel_scope`` when the client closes or goes away."""
    while True:
        data = await stream.receive_some(65536)
        if not data:
            cancel_scope.cancel()
            return
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, ev.Request):
                pending_out.append(conn.send(ev.AcceptConnection()))
                on_event(event)
                accepted.set()
            elif isinstance(event, ev.Ping):
                pending_out.append(conn.send(event.response()))
            elif isinstance(event, ev.CloseConnection):
                pending_out.append(conn.send(event.response()))
                await stream.send_all(b"".join(pending_out))
                cancel_scope.cancel()
                return
            else:
                on_event(event)


async def serve_paced(stream: trio.SocketStream, conn: wsproto.WSConnection, pending_out: list[bytes],
                      on_event: Callable[[ev.Event], None], pacer: Pacer) -> None:
    """Serve one WebSocket client: :func:`read_ws` in the background and, once the handshake
    is in, ``pacer``'s batches, until the client goes. The nursery's errors (a client gone
    mid-write: ``trio.BrokenResourceError``...) come out as exception groups."""
    async with trio.open_nursery() as nursery:
        accepted = trio.Event()
        nursery.start_soon(read_ws, stream, conn, pending_out, on_event, accepted, nursery.cancel_scope)
        await accepted.wait()
        await pacer.run(stream, pending_out)


async def serve_connection(stream: trio.SocketStream, flood: Flood) -> None:
    conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    books: list[Book] = []
    rng = random.Random(7)
    flood.connections += 1
    flood.open_connections += 1
    pending_out: list[bytes] = []
    cursor = 0

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.TextMessage):
            pending_out.append(ws_frame(_answer(event.data, books, flood)))

    def frames(due: int, out: list[bytes]) -> None:
        nonlocal cursor
        for _ in range(due):
            out.append(books[cursor % len(books)].frame(rng))
            cursor += 1

    pacer = Pacer(lambda: flood.phase, lambda: flood.open_connections, books, frames)
    try:
        await serve_paced(stream, conn, pending_out, on_event, pacer)
    except* (trio.BrokenResourceError, trio.ClosedResourceError):  # (raised in the nursery)
        pass
    finally:
        flood.open_connections -= 1


def _answer(text: str, books: list[Book], flood: Flood) -> bytes:
    try:
        request = json.loads(text)
    except ValueError:
        return orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
    if request.get("method") == "SUBSCRIBE":
        prices = flood.market.snapshot.books
        for stream_name in request.get("params", []):
            native, _, kind = stream_name.partition("@")
            if kind != "bookTicker":
                continue
            symbol = native.upper()
            book = next((b for key, b in prices.items() if key[0] == "binance" and
                         key[1].replace("/", "") == symbol), None)
            books.append(Book(symbol, book.bid if book is not None else 100.0))
            flood.subscriptions += 1
    return orjson.dumps({"result": None, "id": request.get("id")})


async def run_phases(flood: Flood) -> None:
    for phase in flood.phases:
        flood.phase = phase
        phase.started = time.time()
        await trio.sleep(phase.seconds)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    phases = []
    for part in args.profile.split(","):
        seconds, rate = part.split(":")
        phases.append(Phase(float(seconds), float(rate)))
    market = Market.synthetic(args.symbols, ("binance",), args.seed,
                              start_ms=time.time_ns() // 1_000_000) if args.symbols else Market(
        venues=("binance",), seed=args.seed, start_ms=time.time_ns() // 1_000_000)
    flood = Flood(market, phases, phases[0])
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(run_market, market, interval_s=0.05))
        rest = await nursery.start(functools.partial(run_sim_venue, "binance", market,
                                                     control=SimVenueControl()))
        listeners = await nursery.start(functools.partial(
            trio.serve_tcp, functools.partial(serve_connection, flood=flood), 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        sys.stdout.write(json.dumps({"binance": {"rest_url": rest.rest_url,
                                                 "ws_url": f"ws://127.0.0.1:{port}"}}) + "\n")
        sys.stdout.flush()
        await run_phases(flood)
        # The figures are written when the last phase ends; the venue stays up (at the
        # last phase's rate) until it is stopped, so its going away is not a fault.
        doc = {"connections": flood.connections, "subscriptions": flood.subscriptions,
               "phases": [p.__dict__ for p in phases]}
        await trio.Path(args.out).write_text(json.dumps(doc))
        await trio.sleep_forever()
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help="SECONDS:FRAMES_PER_S,... phases in order")
    parser.add_argument("--symbols", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    trio.run(main_async, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())


async def stdin_control(command: Callable[[list[str]], None], stats: Callable[[], dict[str, Any]],
                        cancel: trio.CancelScope) -> None:
    """A flood process's control from its parent: each line on stdin is split into words
    and handed to ``command`` (e.g. ``rate ...``), then answered on stdout with one JSON
    line, ``{"cpu_s": <this process's CPU seconds>, **stats()}``. The parent closing stdin
    (it is gone) cancels ``cancel``."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    while True:
        data = await stdin.receive_some(4096)
        if not data:
            cancel.cancel()
            return
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            command(line.decode().split())
            sys.stdout.write(json.dumps({"cpu_s": time.process_time(), **stats()}) + "\n")
            sys.stdout.flush()
